// Archival of a closed year (services/archive) on a real redis-server: the
// export verifies (here and with deploy/verify_audit.py), Redis shrinks by
// exactly the archived items, the remaining trail verifies from the anchor
// recorded at the cut (signed head included), a crash midway resumes, a
// rerun is a no-op, an open year / an unfinished booking / a consumer behind
// is refused, and a tampered archive is detected before anything is removed;
// finished projects go, their ids staying reserved, the others stay (also
// one whose charge is corrected between the export and the removal, and
// one named only by a booking kept with its lease); forged projects files
// and a corrupt budget counter are refused.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/token.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/archive/archive.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_store.h"
#include "services/booking/booking_lists.h"
#include "services/booking/redis_booking_store.h"
#include "common/doc_store.h"
#include "services/usage/audit_chain.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

namespace labshare::archive {
namespace {

namespace bk = labshare::booking;
namespace bv1 = labshare::booking::v1;
namespace uv1 = labshare::usage::v1;

// The archived year Y: next year by the real clock, so that the outbox
// stream ids Redis assigns now (real time) lie before its end, as the ids of
// a closed year's events do in production.
const int kY = static_cast<int>(absl::ToCivilYear(absl::Now(), absl::UTCTimeZone()).year()) + 1;

absl::Time At(int y, int m, int d) { return absl::FromCivil(absl::CivilDay(y, m, d), absl::UTCTimeZone()); }

std::string RepoRoot() { return std::string(LABSHARE_SOURCE_DIR) + "/"; }

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

CommandResult Shell(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

CommandResult VerifyAudit(const std::string& file, const std::string& extra = "") {
  return Shell(absl::StrCat("/usr/bin/python3 '", RepoRoot(), "deploy/verify_audit.py' '", file, "' ", extra));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    store_ = std::make_unique<bk::BookingStore>(pool_.get());
    dir_ = absl::StrCat(::testing::TempDir(), "/archive_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    const std::string key = dir_ + "/audit.pem";
    ASSERT_EQ(Shell(absl::StrCat("openssl genpkey -algorithm ed25519 -out '", key, "' && chmod 600 '", key,
                               "' && openssl pkey -in '", key, "' -pubout -out '", key, ".pub'"))
                  .exit_code,
              0);
    auto k = usage::AuditSigningKey::FromPrivateKeyFile(key);
    ASSERT_TRUE(k.ok()) << k.status();
    usage::AuditChainOptions o;
    o.clock = &clock_;
    o.signing_key = *k;
    chain_ = std::make_unique<usage::AuditChain>(pool_.get(), testing::TestPageTokens(), o);
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // A booking of instrument i1 (partition p) from `start` for one hour,
  // through the real create step (listing indexes, outbox event); its
  // BookingCreated event is appended to the audit trail at the clock's time.
  // With a project: a JOINT_RESEARCH booking within it.
  std::string Book(absl::Time start, bv1::Booking::State state, const std::string& instrument = "i1",
                   const std::string& operator_org = "", const std::string& project = "") {
    const int p = bk::keys::Partition(instrument);
    const std::string id = bk::NewBookingId(p);
    bv1::Booking b;
    b.set_name("bookings/" + id);
    b.set_instrument("instruments/" + instrument);
    b.set_instrument_owner("organizations/owner");
    b.set_mode(project.empty() ? labshare::type::v1::ON_SITE : labshare::type::v1::JOINT_RESEARCH);
    if (!project.empty()) b.set_project("projects/" + project);
    b.set_user("users/ana");
    b.set_payer_organization("organizations/lab");
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(1));
    *b.mutable_blocked_interval() = b.reserved_interval();
    b.set_state(state);
    *b.mutable_create_time() = ToProto(clock_.Now());
    *b.mutable_update_time() = ToProto(clock_.Now());
    bv1::BookingEvent e;
    e.mutable_header()->set_event_id("ev-" + id);
    *e.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
    e.mutable_header()->set_actor("users/ana");
    e.mutable_header()->set_request_id("req-" + id);
    *e.mutable_booking_created()->mutable_booking() = b;
    bk::CreateStep step;
    step.partition = p;
    step.instrument_id = instrument;
    step.booking_id = id;
    step.booking = SerializeDeterministic(b);
    step.blocked_start_ms = absl::ToUnixMillis(start);
    step.blocked_end_ms = absl::ToUnixMillis(start + absl::Hours(1));
    step.reserved_start_ms = step.blocked_start_ms;
    step.events = {e.SerializeAsString()};
    step.listing_keys = bk::BookingListingKeys(p, b, operator_org);
    auto outcome = store_->Create(step);
    EXPECT_TRUE(outcome.ok() && outcome->kind == bk::StepOutcome::Kind::kApplied) << outcome.status();
    auto appended = chain_->Append("booking", {"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()});
    EXPECT_TRUE(appended.ok() && appended->appended) << appended.status();
    return id;
  }

  void SetState(const std::string& id, bv1::Booking::State state) {
    const int p = bk::keys::Partition("i1");
    auto d = pool_->Command({"HGET", bk::keys::Booking(p, id), "d"});
    ASSERT_TRUE(d.ok());
    bv1::Booking b;
    ASSERT_TRUE(b.ParseFromString(d->str));
    b.set_state(state);
    ASSERT_TRUE(pool_->Command({"HSET", bk::keys::Booking(p, id), "d", SerializeDeterministic(b)}).ok());
  }

  int64_t DbSize() { return pool_->Command({"DBSIZE"})->integer; }
  bool Exists(const std::string& key) { return pool_->Command({"EXISTS", key})->integer == 1; }
  int64_t UsedMemory() {
    const std::string s = pool_->Command({"INFO", "memory"})->str;
    return std::stoll(s.substr(s.find("used_memory:") + 12));
  }

  ArchiveOptions Options(int year) {
    ArchiveOptions o;
    o.year = year;
    o.dir = dir_;
    o.clock = &clock_;
    o.batch = 2;
    return o;
  }

  // Year Y: five bookings (one still CONFIRMED) and one that ends in Y + 1,
  // all made (and audited) in Y; then three more audit entries in Y + 1.
  void Seed() {
    clock_.Set(At(kY, 3, 1));
    for (int k = 0; k < 5; ++k) {
      clock_.Advance(absl::Hours(1));
      ids_.push_back(Book(At(kY, 3, 10) + absl::Hours(24 * k), k == 4 ? bv1::Booking::CONFIRMED
                                                                           : bv1::Booking::COMPLETED));
    }
    clock_.Advance(absl::Hours(1));
    ids_.push_back(Book(At(kY + 1, 1, 10), bv1::Booking::CONFIRMED));  // stays: ends in Y + 1
    clock_.Set(At(kY + 1, 1, 5));
    for (int k = 0; k < 3; ++k) {
      clock_.Advance(absl::Hours(1));
      later_.push_back(Book(At(kY + 1, 2, 1) + absl::Hours(24 * k), bv1::Booking::CONFIRMED));
    }
  }

  FakeClock clock_;
  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<bk::BookingStore> store_;
  std::unique_ptr<usage::AuditChain> chain_;
  std::string dir_;
  std::vector<std::string> ids_, later_;
};

TEST_F(ArchiveTest, RefusesAnOpenYearAnUnfinishedBookingAndAConsumerBehind) {
  Seed();
  const int64_t keys = DbSize();
  clock_.Set(At(kY, 12, 31) + absl::Hours(23));
  auto open = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition) << open.status();
  EXPECT_TRUE(absl::StrContains(open.status().message(), "open")) << open.status();

  clock_.Set(At(kY + 1, 2, 1));
  auto unfinished = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(unfinished.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(unfinished.status().message(), ids_[4])) << unfinished.status();
  EXPECT_TRUE(absl::StrContains(unfinished.status().message(), "CONFIRMED")) << unfinished.status();
  SetState(ids_[4], bv1::Booking::CANCELLED);

  // A consumer group (billing) that has not read the outbox yet.
  const std::string outbox = bk::keys::Outbox(bk::keys::Partition("i1"));
  ASSERT_EQ(pool_->Command({"XGROUP", "CREATE", outbox, "billing", "0"})->str, "OK");
  auto behind = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(behind.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(behind.status().message(), "group billing")) << behind.status();
  // Read but not acknowledged: still behind.
  auto read = pool_->Command({"XREADGROUP", "GROUP", "billing", "c1", "COUNT", "100", "STREAMS", outbox, ">"});
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(ArchiveYear(pool_.get(), Options(kY)).status().code(), absl::StatusCode::kFailedPrecondition);

  // --billing_time_zone is an IANA name, not the host's zone or an offset.
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00"}) {
    ArchiveOptions o = Options(kY);
    o.billing_time_zone = zone;
    auto refused = ArchiveYear(pool_.get(), o);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << zone << ": " << refused.status();
    EXPECT_TRUE(absl::StrContains(refused.status().message(), "billing_time_zone")) << refused.status();
  }

  // Nothing written by any refusal: no file, no key.
  EXPECT_EQ(DbSize(), keys);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/audit-" + std::to_string(kY) + ".jsonl"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/bookings-" + std::to_string(kY) + ".jsonl"));

  // Acknowledged: accepted.
  for (const auto& e : read->elements[0].elements[1].elements) {
    ASSERT_EQ(pool_->Command({"XACK", outbox, "billing", e.elements[0].str})->integer, 1);
  }
  auto ok = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->bookings, 5);
}

TEST_F(ArchiveTest, ExportsVerifiesRemovesResumesAndRerunsAsANoOp) {
  Seed();
  SetState(ids_[4], bv1::Booking::MISSED);
  clock_.Set(At(kY + 1, 2, 1));
  const int p = bk::keys::Partition("i1");
  // Usage's closed markers of the sessions (usage_figures.h): an archived
  // booking's goes with it.
  for (size_t k = 0; k < 6; ++k) {
    ASSERT_TRUE(pool_->Command({"HSET", "{usage}:closed", "bookings/" + ids_[k], "1"}).ok());
  }
  const int64_t keys_before = DbSize();
  const int64_t memory_before = UsedMemory();
  auto head_before = chain_->Head();
  ASSERT_TRUE(head_before.ok());
  ASSERT_EQ(head_before->sequence(), 9);
  auto entry6 = chain_->Get(6);
  ASSERT_TRUE(entry6.ok() && entry6->has_value());
  const std::string hash6 = (*entry6)->hash();

  // A crash after the first removal batch (batch 2: entries 1 and 2 gone).
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "removed_batch" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  auto crashed = ArchiveYear(pool_.get(), crash);
  ASSERT_EQ(crashed.status().code(), absl::StatusCode::kAborted) << crashed.status();
  EXPECT_FALSE(Exists(usage::audit_keys::Entry(1)));
  EXPECT_TRUE(Exists(usage::audit_keys::Entry(3)));
  // Midway, what is in Redis already verifies from the recorded anchor.
  auto mid = chain_->Verify(0, 0, {});
  ASSERT_TRUE(mid.ok()) << mid.status();
  EXPECT_EQ(mid->result(), uv1::VERIFIED);
  EXPECT_EQ(mid->start_sequence(), 7);

  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(done->already_done);
  EXPECT_EQ(done->audit_start, 1);
  EXPECT_EQ(done->audit_end, 7);
  EXPECT_EQ(done->audit_last_hash, absl::BytesToHexString(hash6));
  EXPECT_EQ(done->bookings, 5);
  EXPECT_EQ(done->outbox_entries_trimmed, 9);  // every outbox event was before the cut (real clock)

  // The export: the C++ check and deploy/verify_audit.py.
  const std::string audit_file = ReadAll(dir_ + "/audit-" + std::to_string(kY) + ".jsonl");
  FileVerdict v = VerifyAuditExport(audit_file);
  EXPECT_TRUE(v.ok) << v.kind << " at " << v.broken_at;
  EXPECT_EQ(v.entries, 6);
  EXPECT_EQ(v.last_hash_hex, absl::BytesToHexString(hash6));
  CommandResult py = VerifyAudit(dir_ + "/audit-" + std::to_string(kY) + ".jsonl");
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_EQ(py.output, absl::StrCat("OK 6 entries, head 6 ", absl::BytesToHexString(hash6), "\n"));
  EXPECT_TRUE(VerifyBookingsExport(ReadAll(dir_ + "/bookings-" + std::to_string(kY) + ".jsonl")).ok);

  // Redis shrank by exactly the archived items: per audit entry its entry
  // key and its own event, request and booking-resource indexes (4 x 6);
  // per booking its document (5); the manifest and the base came (+2).
  EXPECT_EQ(keys_before - DbSize(), 4 * 6 + 5 - 2);
  EXPECT_LT(UsedMemory(), memory_before);
  for (int s = 1; s <= 6; ++s) EXPECT_FALSE(Exists(usage::audit_keys::Entry(s))) << s;
  for (int s = 7; s <= 9; ++s) EXPECT_TRUE(Exists(usage::audit_keys::Entry(s))) << s;
  EXPECT_EQ(pool_->Command({"HLEN", usage::audit_keys::Applied()})->integer, 3);
  for (int k = 0; k < 5; ++k) {
    EXPECT_FALSE(Exists(bk::keys::Booking(p, ids_[static_cast<size_t>(k)])));
    EXPECT_FALSE(Exists(usage::audit_keys::Index("resource", "bookings/" + ids_[static_cast<size_t>(k)])));
  }
  EXPECT_TRUE(Exists(bk::keys::Booking(p, ids_[5])));
  EXPECT_EQ(pool_->Command({"HLEN", "{usage}:closed"})->integer, 1);
  EXPECT_EQ(pool_->Command({"HEXISTS", "{usage}:closed", "bookings/" + ids_[5]})->integer, 1);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::Calendar(p, "i1")})->integer, 4);  // ids_[5] and later_
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ByInstrument(p, "i1")})->integer, 4);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListAll(p, 'b')})->integer, 4);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListBy(p, 'b', "user", "ana")})->integer, 4);
  EXPECT_EQ(pool_->Command({"ZCARD", usage::audit_keys::Index("actor", "users/ana")})->integer, 3);
  EXPECT_EQ(pool_->Command({"XLEN", bk::keys::Outbox(p)})->integer, 0);

  // What remains verifies (signed head) from the anchor; listing starts there.
  auto rest = chain_->Verify(0, 0, {});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->result(), uv1::VERIFIED);
  EXPECT_EQ(rest->start_sequence(), 7);
  EXPECT_EQ(rest->entries_checked(), 3);
  auto early = chain_->Verify(3, 0, {});
  EXPECT_EQ(early.status().code(), absl::StatusCode::kOutOfRange);
  uv1::ListAuditEntriesRequest list;
  list.set_page_size(50);
  auto listed = chain_->List(Principal{"auditor", "", {Role::kAuditor}, clock_.Now() + absl::Hours(1)}, list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->entries_size(), 3);
  EXPECT_EQ(listed->entries(0).sequence(), 7);
  // The trail goes on: a new entry links to 9 and everything verifies.
  clock_.Advance(absl::Hours(1));
  later_.push_back(Book(At(kY + 1, 3, 1), bv1::Booking::CONFIRMED));
  auto after = chain_->Verify(0, 0, {});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->result(), uv1::VERIFIED);
  EXPECT_EQ(after->entries_checked(), 4);

  // Rerun: nothing to do, nothing changes.
  const int64_t keys_done = DbSize();
  auto again = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_done);
  EXPECT_EQ(again->audit_end, 7);
  EXPECT_EQ(again->bookings, 5);
  EXPECT_EQ(DbSize(), keys_done);
  EXPECT_EQ(ReadAll(dir_ + "/audit-" + std::to_string(kY) + ".jsonl"), audit_file);

  // The next year continues the chain: its file links to year Y's archive.
  for (const auto& id : {ids_[5], later_[0], later_[1], later_[2], later_[3]}) SetState(id, bv1::Booking::COMPLETED);
  clock_.Set(At(kY + 2, 1, 2));
  auto next_year = ArchiveYear(pool_.get(), Options(kY + 1));
  ASSERT_TRUE(next_year.ok()) << next_year.status();
  EXPECT_EQ(next_year->audit_start, 7);
  EXPECT_EQ(next_year->audit_end, 11);
  EXPECT_EQ(next_year->bookings, 5);
  CommandResult chained = VerifyAudit(dir_ + "/audit-" + std::to_string(kY + 1) + ".jsonl", "--anchor 6:" + absl::BytesToHexString(hash6));
  EXPECT_EQ(chained.exit_code, 0) << chained.output;
  EXPECT_TRUE(absl::StartsWith(chained.output, "OK 4 entries, head 10 ")) << chained.output;
  std::string wrong = absl::BytesToHexString(hash6);
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  CommandResult unchained = VerifyAudit(dir_ + "/audit-" + std::to_string(kY + 1) + ".jsonl", "--anchor 6:" + wrong);
  EXPECT_EQ(unchained.exit_code, 1);
  EXPECT_EQ(unchained.output, "BROKEN at 6: ANCHOR_MISMATCH\n");
  // Everything archived: nothing left in Redis of the trail but head, base, manifests.
  EXPECT_FALSE(Exists(usage::audit_keys::Entry(10)));
  EXPECT_EQ(pool_->Command({"HLEN", usage::audit_keys::Applied()})->integer, 0);
}

// The audit trail in segments of 4 entries (services/usage/audit_chain.h):
// entries 1-4 in segment 0 ({usage}), 5-8 in segment 1 ({au:1}), 9 and
// later in segment 2 ({au:2}). Year Y ends at entry 6, inside segment 1:
// segment 0 goes whole, segment 1 in part, each entry with its marker and
// index members from its own segment's keys; what remains verifies from the
// anchor, lists, takes new entries; the next year's archive continues.
TEST_F(ArchiveTest, ArchivesAcrossAuditSegments) {
  auto key = usage::AuditSigningKey::FromPrivateKeyFile(dir_ + "/audit.pem");
  ASSERT_TRUE(key.ok()) << key.status();
  usage::AuditChainOptions o;
  o.clock = &clock_;
  o.signing_key = *key;
  o.segment_entries = 4;
  chain_ = std::make_unique<usage::AuditChain>(pool_.get(), testing::TestPageTokens(), o);
  Seed();
  SetState(ids_[4], bv1::Booking::MISSED);
  clock_.Set(At(kY + 1, 2, 1));
  auto segment_of = [](int64_t seq) -> int64_t { return seq <= 4 ? 0 : seq <= 8 ? 1 : 2; };
  ASSERT_EQ(chain_->Head()->sequence(), 9);
  for (int64_t s = 1; s <= 9; ++s) {
    ASSERT_EQ(chain_->Segments()->SegmentOf(s), segment_of(s)) << s;
    ASSERT_TRUE(Exists(usage::audit_keys::Entry(segment_of(s), s))) << s;
  }
  const std::string hash6 = chain_->Get(6)->value().hash();

  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->audit_start, 1);
  EXPECT_EQ(done->audit_end, 7);
  EXPECT_EQ(done->audit_last_hash, absl::BytesToHexString(hash6));
  CommandResult py = VerifyAudit(dir_ + "/audit-" + std::to_string(kY) + ".jsonl");
  EXPECT_EQ(py.output, absl::StrCat("OK 6 entries, head 6 ", absl::BytesToHexString(hash6), "\n"));
  for (int64_t s = 1; s <= 6; ++s) EXPECT_FALSE(Exists(usage::audit_keys::Entry(segment_of(s), s))) << s;
  for (int64_t s = 7; s <= 9; ++s) EXPECT_TRUE(Exists(usage::audit_keys::Entry(segment_of(s), s))) << s;
  EXPECT_EQ(pool_->Command({"HLEN", usage::audit_keys::Applied(0)})->integer, 0);
  EXPECT_EQ(pool_->Command({"HLEN", usage::audit_keys::Applied(1)})->integer, 2);
  EXPECT_EQ(pool_->Command({"HLEN", usage::audit_keys::Applied(2)})->integer, 1);
  EXPECT_FALSE(Exists(usage::audit_keys::Index(0, "actor", "users/ana")));
  EXPECT_EQ(pool_->Command({"ZCARD", usage::audit_keys::Index(1, "actor", "users/ana")})->integer, 2);
  EXPECT_EQ(pool_->Command({"ZCARD", usage::audit_keys::Index(2, "actor", "users/ana")})->integer, 1);
  for (int64_t k = 0; k < 6; ++k) {
    const std::string& id = ids_[static_cast<size_t>(k)];
    EXPECT_FALSE(Exists(usage::audit_keys::Index(segment_of(k + 1), "resource", "bookings/" + id))) << k;
    EXPECT_FALSE(Exists(usage::audit_keys::Index(segment_of(k + 1), "event", "ev-" + id))) << k;
  }

  auto rest = chain_->Verify(0, 0, {});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->result(), uv1::VERIFIED);
  EXPECT_EQ(rest->start_sequence(), 7);
  EXPECT_EQ(rest->entries_checked(), 3);
  uv1::ListAuditEntriesRequest list;
  list.set_page_size(50);
  list.set_actor("users/ana");
  auto listed = chain_->List(Principal{"auditor", "", {Role::kAuditor}, clock_.Now() + absl::Hours(1)}, list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->entries_size(), 3);
  EXPECT_EQ(listed->entries(0).sequence(), 7);
  EXPECT_EQ(listed->entries(2).sequence(), 9);
  clock_.Advance(absl::Hours(1));
  later_.push_back(Book(At(kY + 1, 3, 1), bv1::Booking::CONFIRMED));  // entry 10, segment 2
  EXPECT_EQ(chain_->Verify(0, 0, {})->entries_checked(), 4);

  // The next year: the rest of segment 1 and segment 2 up to 10.
  for (const auto& id : {ids_[5], later_[0], later_[1], later_[2], later_[3]}) SetState(id, bv1::Booking::COMPLETED);
  clock_.Set(At(kY + 2, 1, 2));
  auto next_year = ArchiveYear(pool_.get(), Options(kY + 1));
  ASSERT_TRUE(next_year.ok()) << next_year.status();
  EXPECT_EQ(next_year->audit_start, 7);
  EXPECT_EQ(next_year->audit_end, 11);
  CommandResult chained = VerifyAudit(dir_ + "/audit-" + std::to_string(kY + 1) + ".jsonl",
                                      "--anchor 6:" + absl::BytesToHexString(hash6));
  EXPECT_EQ(chained.exit_code, 0) << chained.output;
  for (int64_t s = 7; s <= 10; ++s) EXPECT_FALSE(Exists(usage::audit_keys::Entry(segment_of(s), s))) << s;
  for (int64_t k : {0, 1, 2}) EXPECT_EQ(pool_->Command({"HLEN", usage::audit_keys::Applied(k)})->integer, 0) << k;
  EXPECT_FALSE(Exists(usage::audit_keys::Index(2, "actor", "users/ana")));
}

// VerifyAuditChain's anchors after entries 1..6 were archived: an anchor at
// 6 (the last archived entry) is checked against the hash recorded at the
// cut (VERIFIED, or ANCHOR_MISMATCH), not reported as a gap; an anchor at 3
// is no longer held: OUT_OF_RANGE SEQUENCE_OUT_OF_RANGE, as a start there.
TEST_F(ArchiveTest, AnAnchorAtTheArchivedBaseIsCheckedAndOlderOnesAreOutOfRange) {
  Seed();
  SetState(ids_[4], bv1::Booking::MISSED);
  clock_.Set(At(kY + 1, 2, 1));
  auto entry6 = chain_->Get(6);
  ASSERT_TRUE(entry6.ok() && entry6->has_value());
  const std::string hash6 = (*entry6)->hash();
  auto entry3 = chain_->Get(3);
  ASSERT_TRUE(entry3.ok() && entry3->has_value());
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->audit_end, 7);
  ASSERT_FALSE(Exists(usage::audit_keys::Entry(6)));
  auto anchor = [](int64_t sequence, const std::string& hash) {
    uv1::AuditAnchor a;
    a.set_sequence(sequence);
    a.set_hash(hash);
    return a;
  };
  auto at_base = chain_->Verify(0, 0, {anchor(6, hash6)});
  ASSERT_TRUE(at_base.ok()) << at_base.status();
  EXPECT_EQ(at_base->result(), uv1::VERIFIED) << at_base->first_break().ShortDebugString();
  EXPECT_EQ(at_base->anchors_checked(), 1);
  EXPECT_EQ(at_base->start_sequence(), 7);
  std::string wrong = hash6;
  wrong[0] = static_cast<char>(wrong[0] ^ 1);
  auto mismatch = chain_->Verify(0, 0, {anchor(6, wrong)});
  ASSERT_TRUE(mismatch.ok()) << mismatch.status();
  EXPECT_EQ(mismatch->result(), uv1::BROKEN);
  EXPECT_EQ(mismatch->first_break().sequence(), 6);
  EXPECT_EQ(mismatch->first_break().kind(), uv1::ANCHOR_MISMATCH);
  EXPECT_EQ(mismatch->first_break().expected_hash(), wrong);
  EXPECT_EQ(mismatch->first_break().actual_hash(), hash6);
  auto archived = chain_->Verify(0, 0, {anchor(3, (*entry3)->hash())});
  EXPECT_EQ(archived.status().code(), absl::StatusCode::kOutOfRange) << archived.status();
  EXPECT_EQ(ErrorReason(archived.status()), "SEQUENCE_OUT_OF_RANGE");
}

TEST_F(ArchiveTest, ATamperedArchiveIsDetectedBeforeAnythingIsRemoved) {
  Seed();
  SetState(ids_[4], bv1::Booking::COMPLETED);
  clock_.Set(At(kY + 1, 2, 1));
  // Exported, verified and recorded; then the crash, and someone edits the file.
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  const std::string path = dir_ + "/audit-" + std::to_string(kY) + ".jsonl";
  std::string data = ReadAll(path);
  // An entry's event_id changed (its line keeps its stored hash).
  const size_t ev = data.find("\"event_id\":\"ev-");
  ASSERT_NE(ev, std::string::npos);
  data[ev + 15] = data[ev + 15] == 'x' ? 'y' : 'x';
  WriteAll(path, data);
  const int64_t keys = DbSize();

  auto refused = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
  EXPECT_EQ(DbSize(), keys);
  EXPECT_TRUE(Exists(usage::audit_keys::Entry(1)));
  FileVerdict v = VerifyAuditExport(data);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.kind, "hash_mismatch");
  EXPECT_EQ(v.broken_at, 1);
  CommandResult py = VerifyAudit(path);
  EXPECT_EQ(py.exit_code, 1);
  EXPECT_EQ(py.output, "BROKEN at 1: HASH_MISMATCH\n");

  // The bookings file edited too (a line added): its own checksums refuse
  // it, and the manifest's SHA-256 as well; still nothing removed.
  const std::string bookings_path = dir_ + "/bookings-" + std::to_string(kY) + ".jsonl";
  std::string bookings = ReadAll(bookings_path);
  bookings.insert(bookings.find('\n') + 1, "{}\n");
  WriteAll(bookings_path, bookings);
  EXPECT_FALSE(VerifyBookingsExport(bookings).ok);
  EXPECT_EQ(ArchiveYear(pool_.get(), Options(kY)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DbSize(), keys);
}

TEST_F(ArchiveTest, BookingsStartingAtTheSameMomentAreAllTakenAcrossBatches) {
  // Five instruments of i1's partition, one booking each, all at the same
  // start: the listing index holds five equal scores; batches of two.
  const int p = bk::keys::Partition("i1");
  std::vector<std::string> instruments;
  for (int k = 0; instruments.size() < 5; ++k) {
    const std::string id = absl::StrCat("x", k);
    if (bk::keys::Partition(id) == p) instruments.push_back(id);
  }
  clock_.Set(At(kY, 3, 1));
  std::vector<std::string> ids;
  // Operated by another organisation (not named in the document).
  for (const auto& instrument : instruments) {
    ids.push_back(Book(At(kY, 5, 1), bv1::Booking::COMPLETED, instrument, "organizations/operator"));
  }
  // One that spans the cut keeps its member in the operator's index.
  const std::string spanning = Book(At(kY, 12, 31) + absl::Minutes(30 + 23 * 60), bv1::Booking::CONFIRMED,
                                    instruments[0], "organizations/operator");
  const std::string operator_index = bk::keys::ListBy(p, 'b', "org", "operator");
  ASSERT_EQ(pool_->Command({"ZCARD", operator_index})->integer, 6);
  clock_.Set(At(kY + 1, 1, 2));
  auto r = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bookings, 5);
  EXPECT_EQ(r->audit_end, 7);
  for (const auto& id : ids) EXPECT_FALSE(Exists(bk::keys::Booking(p, id))) << id;
  auto left = pool_->Command({"ZRANGE", operator_index, "0", "-1"});
  ASSERT_EQ(left->elements.size(), 1u);
  EXPECT_EQ(left->elements[0].str, spanning);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListAll(p, 'b')})->integer, 1);
  const std::string file = ReadAll(dir_ + "/bookings-" + std::to_string(kY) + ".jsonl");
  for (const auto& id : ids) EXPECT_TRUE(absl::StrContains(file, "\"bookings/" + id + "\"")) << id;
}


// ============================================================ leases and orders

// A lease of i1 paid by lab and operated by "operator" over [start, +30 days),
// written through the real create step with its booking (as RequestLease
// does), then set to `state` at the clock's time; its booking COMPLETED.
std::string LeaseOf(ArchiveTest& t, bk::BookingStore& store, FakeClock& clock, absl::Time start,
                    bv1::Lease::State state, const std::string& project = "") {
  const int p = bk::keys::Partition("i1");
  const std::string id = bk::NewBookingId(p);
  bv1::Booking b;
  b.set_name("bookings/" + id);
  b.set_instrument("instruments/i1");
  b.set_instrument_owner("organizations/owner");
  b.set_mode(labshare::type::v1::LEASE);
  b.set_project(project);  // (only to name a project through a kept booking)
  b.set_user("users/ana");
  b.set_payer_organization("organizations/lab");
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(24 * 30));
  *b.mutable_blocked_interval() = b.reserved_interval();
  b.set_state(bv1::Booking::COMPLETED);
  *b.mutable_create_time() = ToProto(clock.Now());
  *b.mutable_update_time() = ToProto(clock.Now());
  bv1::Lease l;
  l.set_name("leases/" + id);
  l.set_booking("bookings/" + id);
  l.set_instrument("instruments/i1");
  l.set_instrument_owner("organizations/owner");
  l.set_lessee_organization("organizations/lab");
  *l.mutable_term() = b.reserved_interval();
  l.set_state(state);
  *l.mutable_create_time() = ToProto(clock.Now());
  *l.mutable_update_time() = ToProto(clock.Now());
  bk::CreateStep step;
  step.partition = p;
  step.instrument_id = "i1";
  step.booking_id = id;
  step.booking = SerializeDeterministic(b);
  step.blocked_start_ms = absl::ToUnixMillis(start);
  step.blocked_end_ms = absl::ToUnixMillis(start + absl::Hours(24 * 30));
  step.reserved_start_ms = step.blocked_start_ms;
  step.extra_docs.push_back({bk::keys::Lease(p, id), l.SerializeAsString(), 0});
  step.listing_keys = bk::BookingListingKeys(p, b, "organizations/operator");
  for (auto& k : bk::LeaseListingKeys(p, l, "organizations/operator")) step.listing_keys.push_back(k);
  auto outcome = store.Create(step);
  EXPECT_TRUE(outcome.ok() && outcome->kind == bk::StepOutcome::Kind::kApplied) << outcome.status();
  (void)t;
  return id;
}

// A service order of i1 for lab created now, in `state`, through DocStore's
// commit with its listing index entries (as CreateServiceOrder does).
std::string OrderOf(bk::BookingStore& store, FakeClock& clock, bv1::ServiceOrder::State state) {
  const int p = bk::keys::Partition("i1");
  const std::string id = bk::NewBookingId(p);
  bv1::ServiceOrder o;
  o.set_name("serviceOrders/" + id);
  o.set_instrument("instruments/i1");
  o.set_instrument_owner("organizations/owner");
  o.set_client_organization("organizations/lab");
  o.set_state(state);
  *o.mutable_create_time() = ToProto(clock.Now());
  *o.mutable_update_time() = ToProto(clock.Now());
  Mutation m;
  m.writes.push_back({bk::keys::Order(p, id), o.SerializeAsString(), 0});
  m.index_ops = bk::OrderListingOps(p, o, "organizations/operator");
  auto committed = store.docs().Commit(m);
  EXPECT_TRUE(committed.ok() && committed->kind == CommitOutcome::Kind::kApplied) << committed.status();
  return id;
}

TEST_F(ArchiveTest, FinalLeasesAndServiceOrdersOfTheYearGoTheOthersStay) {
  const int p = bk::keys::Partition("i1");
  clock_.Set(At(kY, 3, 1));
  const std::string closed = LeaseOf(*this, *store_, clock_, At(kY, 4, 1), bv1::Lease::CLOSED);
  const std::string returned = LeaseOf(*this, *store_, clock_, At(kY, 6, 1), bv1::Lease::RETURNED);
  const std::string next = LeaseOf(*this, *store_, clock_, At(kY + 1, 3, 1), bv1::Lease::APPROVED);
  const std::string done = OrderOf(*store_, clock_, bv1::ServiceOrder::COMPLETED);
  const std::string cancelled = OrderOf(*store_, clock_, bv1::ServiceOrder::CANCELLED);
  const std::string disputed = OrderOf(*store_, clock_, bv1::ServiceOrder::DISPUTED);
  clock_.Set(At(kY + 1, 1, 5));
  const std::string later = OrderOf(*store_, clock_, bv1::ServiceOrder::COMPLETED);  // of Y + 1
  clock_.Set(At(kY + 1, 2, 1));
  // Usage's markers of the orders (usage_figures.h): first acceptance and
  // outage count; an archived order's go with it.
  for (const auto& id : {done, cancelled, disputed, later}) {
    ASSERT_TRUE(pool_->Command({"HSET", "{usage}:tsorder", "serviceOrders/" + id, "1"}).ok());
    ASSERT_TRUE(pool_->Command({"HSET", "{usage}:tsout", "serviceOrders/" + id, "1"}).ok());
  }
  const int64_t keys_before = DbSize();

  auto r = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->leases, 1);
  EXPECT_EQ(r->leases_kept, 1);  // RETURNED: its deposit is not settled yet
  EXPECT_EQ(r->orders, 2);
  EXPECT_EQ(r->orders_kept, 1);  // DISPUTED
  // The CLOSED lease's booking goes; the RETURNED one's stays with its
  // lease (CloseLease loads it), though it is COMPLETED and ended in Y.
  EXPECT_EQ(r->bookings, 1);
  EXPECT_EQ(r->bookings_kept, 1);
  EXPECT_FALSE(Exists(bk::keys::Booking(p, closed)));
  EXPECT_TRUE(Exists(bk::keys::Booking(p, returned)));
  // Gone: the CLOSED lease, its booking and the two orders; came: the
  // manifest.
  EXPECT_EQ(keys_before - DbSize(), 4 - 1);
  EXPECT_FALSE(Exists(bk::keys::Lease(p, closed)));
  EXPECT_TRUE(Exists(bk::keys::Lease(p, returned)));
  EXPECT_TRUE(Exists(bk::keys::Lease(p, next)));
  for (const auto& id : {done, cancelled}) EXPECT_FALSE(Exists(bk::keys::Order(p, id))) << id;
  for (const auto& id : {disputed, later}) EXPECT_TRUE(Exists(bk::keys::Order(p, id))) << id;
  for (const char* marker : {"{usage}:tsorder", "{usage}:tsout"}) {
    EXPECT_EQ(pool_->Command({"HLEN", marker})->integer, 2) << marker;
    for (const auto& id : {disputed, later}) {
      EXPECT_EQ(pool_->Command({"HEXISTS", marker, "serviceOrders/" + id})->integer, 1) << marker << " " << id;
    }
  }
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListAll(p, 'l')})->integer, 2);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListBy(p, 'l', "org", "lab")})->integer, 2);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListBy(p, 'l', "org", "operator")})->integer, 2);  // swept
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListAll(p, 'o')})->integer, 2);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListBy(p, 'o', "instr", "i1")})->integer, 2);
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::ListBy(p, 'o', "org", "operator")})->integer, 2);  // swept

  for (const auto& [kind, n] : std::vector<std::pair<std::string, int>>{{"leases", 1}, {"orders", 2}}) {
    const std::string path = absl::StrCat(dir_, "/", kind, "-", kY, ".jsonl");
    auto v = VerifyRecordsExportFile(path, kind);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_TRUE(v->ok) << v->kind;
    EXPECT_EQ(v->entries, n);
    CommandResult py = Shell(absl::StrCat("/usr/bin/python3 '", RepoRoot(), "deploy/verify_archive.py' '", path, "'"));
    EXPECT_EQ(py.exit_code, 0) << py.output;
    EXPECT_EQ(py.output, absl::StrCat("OK ", kind, " ", kY, ": ", n, " ", kind, "\n"));
  }
  EXPECT_TRUE(absl::StrContains(ReadAll(absl::StrCat(dir_, "/leases-", kY, ".jsonl")), "\"leases/" + closed + "\""));

  // Rerun: nothing changes.
  const int64_t keys_done = DbSize();
  auto again = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_done);
  EXPECT_EQ(again->leases, 1);
  EXPECT_EQ(again->orders, 2);
  EXPECT_EQ(DbSize(), keys_done);
}

// ============================================================ projects

// A joint-research project "projects/<id>" of lab and owner over [from, to)
// with 3 h on i1, created at the clock's time as CreateProject writes it
// (document, listing index, event, id reservation, budget counters);
// without `reserved`, as a version before reservations wrote it.
void ProjectOf(bk::BookingStore& store, FakeClock& clock, const std::string& id, absl::Time from, absl::Time to,
               bool reserved = true) {
  bv1::Project pr;
  pr.set_name("projects/" + id);
  pr.set_title("Cryo-EM of membrane proteins");
  for (const char* org : {"organizations/lab", "organizations/owner"}) {
    auto* part = pr.add_participants();
    part->set_organization(org);
    part->set_share_bps(5000);
  }
  pr.set_cost_share_template(bv1::Project::EQUAL_SPLIT);
  *pr.mutable_period()->mutable_start_time() = ToProto(from);
  *pr.mutable_period()->mutable_end_time() = ToProto(to);
  auto* budget = pr.add_instrument_budgets();
  budget->set_instrument("instruments/i1");
  budget->set_instrument_owner("organizations/owner");
  *budget->mutable_budget() = ToProto(absl::Hours(3));
  *pr.mutable_create_time() = ToProto(clock.Now());
  *pr.mutable_update_time() = ToProto(clock.Now());
  pr.set_etag("1");
  ASSERT_TRUE(store.SetBudget(id, "i1", absl::ToInt64Milliseconds(absl::Hours(3))).ok());
  bv1::BookingEvent e;
  e.mutable_header()->set_event_id("ev-" + id);
  *e.mutable_project_created()->mutable_project() = pr;
  Mutation m;
  m.writes.push_back({bk::keys::Project(id), pr.SerializeAsString(), 0});
  if (reserved) m.writes.push_back({bk::keys::ProjectIdReservation(id), pr.name(), 0});
  m.index_ops.push_back({bk::keys::Projects(), id});
  m.outbox_key = bk::keys::ProjectOutbox();
  m.event_type = bv1::BookingEvent::descriptor()->full_name();
  m.event_payload = e.SerializeAsString();
  auto committed = store.docs().Commit(m);
  ASSERT_TRUE(committed.ok() && committed->kind == CommitOutcome::Kind::kApplied) << committed.status();
}

// An UpdateProject at the clock's time (the title changes).
void TouchProject(bk::BookingStore& store, FakeClock& clock, const std::string& id) {
  auto doc = store.docs().Get(bk::keys::Project(id));
  ASSERT_TRUE(doc.ok() && doc->has_value()) << doc.status();
  bv1::Project pr;
  ASSERT_TRUE(pr.ParseFromString((*doc)->data));
  pr.set_title(pr.title() + " (extended)");
  *pr.mutable_update_time() = ToProto(clock.Now());
  pr.set_etag(std::to_string((*doc)->version + 1));
  Mutation m;
  m.writes.push_back({bk::keys::Project(id), pr.SerializeAsString(), (*doc)->version});
  auto committed = store.docs().Commit(m);
  ASSERT_TRUE(committed.ok() && committed->kind == CommitOutcome::Kind::kApplied) << committed.status();
}

TEST_F(ArchiveTest, FinishedProjectsGoTheirIdsStayReservedTheOthersStay) {
  const int p = bk::keys::Partition("i1");
  clock_.Set(At(kY, 2, 1));
  ProjectOf(*store_, clock_, "p-cut", At(kY, 3, 1), At(kY + 1, 1, 1));  // ends at the cut: final
  ProjectOf(*store_, clock_, "p-done", At(kY, 3, 1), At(kY, 6, 1));
  ProjectOf(*store_, clock_, "p-old", At(kY, 3, 1), At(kY, 7, 1), /*reserved=*/false);  // an older version's
  ProjectOf(*store_, clock_, "p-open", At(kY, 6, 1), At(kY + 1, 6, 1));  // not ended
  ProjectOf(*store_, clock_, "p-later", At(kY, 3, 1), At(kY, 9, 1));     // a booking after the cut names it
  ProjectOf(*store_, clock_, "p-spans", At(kY, 3, 1), At(kY, 9, 1));     // a booking across the cut names it
  ProjectOf(*store_, clock_, "p-late", At(kY, 3, 1), At(kY, 5, 1));      // changed after the cut
  ProjectOf(*store_, clock_, "p-held", At(kY, 3, 1), At(kY, 5, 1));      // an hour still committed
  ASSERT_TRUE(pool_->Command({"HINCRBY", bk::keys::Budget(p, "p-old"), "i1:used", "5400000"}).ok());
  ASSERT_TRUE(pool_->Command({"HINCRBY", bk::keys::Budget(p, "p-held"), "i1:committed", "3600000"}).ok());
  clock_.Set(At(kY, 3, 5));
  const std::string used = Book(At(kY, 3, 10), bv1::Booking::COMPLETED, "i1", "", "p-done");  // goes with Y
  const std::string later = Book(At(kY + 1, 1, 10), bv1::Booking::CANCELLED, "i1", "", "p-later");
  const std::string spans = Book(At(kY, 12, 31) + absl::Minutes(23 * 60 + 30), bv1::Booking::CONFIRMED, "i1", "",
                                 "p-spans");
  clock_.Set(At(kY + 1, 1, 5));
  TouchProject(*store_, clock_, "p-late");
  clock_.Set(At(kY + 1, 2, 1));

  // Exported and recorded; then the crash, and p-done is updated (its
  // document moves on: it stays, whole, for a later year).
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  TouchProject(*store_, clock_, "p-done");
  // A crash after the first project's step, before its counters go: p-cut
  // is gone but its counters stay (the rerun finds it gone and removes
  // them), p-old not yet.
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "project_step" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  EXPECT_FALSE(Exists(bk::keys::Project("p-cut")));
  EXPECT_TRUE(Exists(bk::keys::Budget(p, "p-cut")));
  EXPECT_TRUE(Exists(bk::keys::Project("p-old")));
  EXPECT_FALSE(Exists(bk::keys::ProjectIdReservation("p-old")));

  auto r = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->projects, 3);  // in the file: p-cut, p-done, p-old
  EXPECT_EQ(r->projects_kept, 5);
  EXPECT_EQ(r->projects_changed_kept, 1);  // p-done
  EXPECT_EQ(r->bookings, 1);               // p-done's booking
  EXPECT_FALSE(Exists(bk::keys::Booking(p, used)));
  for (const std::string id : {"p-cut", "p-old"}) {
    EXPECT_FALSE(Exists(bk::keys::Project(id))) << id;
    EXPECT_TRUE(pool_->Command({"ZSCORE", bk::keys::Projects(), id})->is_nil()) << id;
    EXPECT_FALSE(Exists(bk::keys::Budget(p, id))) << id;
    // The id stays reserved (p-old's reservation written by the removal).
    auto reservation = store_->docs().Get(bk::keys::ProjectIdReservation(id));
    ASSERT_TRUE(reservation.ok() && reservation->has_value()) << id;
    EXPECT_EQ((*reservation)->data, "projects/" + id);
  }
  for (const std::string id : {"p-done", "p-open", "p-later", "p-spans", "p-late", "p-held"}) {
    EXPECT_TRUE(Exists(bk::keys::Project(id))) << id;
    EXPECT_FALSE(pool_->Command({"ZSCORE", bk::keys::Projects(), id})->is_nil()) << id;
    EXPECT_TRUE(Exists(bk::keys::Budget(p, id))) << id;
  }
  EXPECT_EQ(store_->docs().Get(bk::keys::Project("p-done"))->value().version, 2);
  EXPECT_TRUE(Exists(bk::keys::Booking(p, later)));
  EXPECT_TRUE(Exists(bk::keys::Booking(p, spans)));

  const std::string path = absl::StrCat(dir_, "/projects-", kY, ".jsonl");
  auto v = VerifyRecordsExportFile(path, "projects");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->ok) << v->kind << " at " << v->broken_at;
  EXPECT_EQ(v->entries, 3);
  CommandResult py = Shell(absl::StrCat("/usr/bin/python3 '", RepoRoot(), "deploy/verify_archive.py' '", path, "'"));
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_EQ(py.output, absl::StrCat("OK projects ", kY, ": 3 projects\n"));
  const std::string file = ReadAll(path);
  for (const std::string id : {"p-cut", "p-done", "p-old"}) {
    EXPECT_TRUE(absl::StrContains(file, "\"project\":\"projects/" + id + "\"")) << id;
  }
  EXPECT_TRUE(absl::StrContains(file, "\"budget_counters\":{\"i1:budget\":10800000,\"i1:used\":5400000}")) << file;

  // Forged files, checksums made consistent again: both verifiers refuse
  // them. A record's counters rewritten to hold committed time; the
  // "project" and "version" the removal acts on (not covered by the
  // document's SHA-256) changed; a record twice.
  const std::vector<std::string> exported = absl::StrSplit(file, '\n', absl::SkipEmpty());
  ASSERT_EQ(exported.size(), 5u);
  auto forge = [&](const std::string& from, const std::string& to, bool twice, const char* kind,
                   const std::string& py_kind, int line) {
    SCOPED_TRACE(from + " -> " + to);
    std::vector<std::string> lines = exported;
    if (twice) lines.insert(lines.begin() + 2, lines[1]);
    const size_t at = lines[1].find(from);
    ASSERT_NE(at, std::string::npos);
    lines[1].replace(at, from.size(), to);
    if (twice) {
      const size_t n = lines.back().find("\"projects\":3");
      ASSERT_NE(n, std::string::npos);
      lines.back().replace(n, 12, "\"projects\":4");
    }
    usage::Sha256 body;
    for (size_t i = 0; i + 1 < lines.size(); ++i) body.Update(lines[i] + "\n");
    const size_t ts = lines.back().find("\"sha256\":\"") + 10;
    lines.back() = absl::StrCat(lines.back().substr(0, ts), body.HexDigest(), lines.back().substr(ts + 64));
    const std::string forged_path = absl::StrCat(dir_, "/forged/projects-", kY, ".jsonl");
    std::filesystem::create_directories(dir_ + "/forged");
    WriteAll(forged_path, absl::StrCat(absl::StrJoin(lines, "\n"), "\n"));
    auto fv = VerifyRecordsExportFile(forged_path, "projects");
    ASSERT_TRUE(fv.ok());
    EXPECT_FALSE(fv->ok);
    EXPECT_EQ(fv->kind, kind);
    EXPECT_EQ(fv->broken_at, line);
    CommandResult forged = Shell(absl::StrCat("/usr/bin/python3 '", RepoRoot(), "deploy/verify_archive.py' '",
                                              forged_path, "'"));
    EXPECT_EQ(forged.exit_code, 1) << forged.output;
    EXPECT_EQ(forged.output, absl::StrCat("BROKEN at line ", line, ": ", py_kind, "\n"));
  };
  forge("\"i1:budget\"", "\"i1:committed\":60000,\"i1:budget\"", false, "malformed", "MALFORMED", 2);
  const std::string first = exported[1].substr(0, exported[1].find("\",\"version\""));  // {"project":"projects/..."
  forge(first, "{\"project\":\"projects/p-open\"", false, "malformed", "MALFORMED", 2);
  const std::string version = exported[1].substr(exported[1].find("\"version\":"), 12);
  forge(version, "\"version\":0,", false, "malformed", "MALFORMED", 2);
  forge(version, "\"version\":\"1\",", false, "malformed", "MALFORMED", 2);
  forge("\"budget_counters\"", "\"budget_counters\"", true, "duplicate", "DUPLICATE", 3);

  // Rerun: nothing changes.
  const int64_t keys_done = DbSize();
  auto again = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_done);
  EXPECT_EQ(again->projects, 3);
  EXPECT_EQ(again->projects_kept, 5);
  EXPECT_EQ(again->projects_changed_kept, 1);
  EXPECT_EQ(DbSize(), keys_done);
}

// A project that only a booking kept with its lease names (the lease is
// RETURNED, its deposit not settled) stays; a corrupt counter of a project
// that would go stops the run (DATA_LOSS naming the key), nothing removed.
TEST_F(ArchiveTest, AProjectABookingKeptWithItsLeaseNamesStaysACorruptCounterStops) {
  const int p = bk::keys::Partition("i1");
  clock_.Set(At(kY, 2, 1));
  ProjectOf(*store_, clock_, "p-leased", At(kY, 3, 1), At(kY, 6, 1));
  ProjectOf(*store_, clock_, "p-corrupt", At(kY, 3, 1), At(kY, 6, 1));
  const std::string lease = LeaseOf(*this, *store_, clock_, At(kY, 4, 1), bv1::Lease::RETURNED, "projects/p-leased");
  ASSERT_TRUE(pool_->Command({"HSET", bk::keys::Budget(p, "p-corrupt"), "i1:used", "5400000x"}).ok());
  clock_.Set(At(kY + 1, 2, 1));
  const int64_t keys_before = DbSize();
  auto stopped = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(stopped.status().message(), bk::keys::Budget(p, "p-corrupt"))) << stopped.status();
  EXPECT_EQ(DbSize(), keys_before);

  ASSERT_TRUE(pool_->Command({"HSET", bk::keys::Budget(p, "p-corrupt"), "i1:used", "5400000"}).ok());
  auto r = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->leases_kept, 1);
  EXPECT_EQ(r->bookings_kept, 1);
  EXPECT_EQ(r->projects, 1);  // p-corrupt, its counters now readable
  EXPECT_EQ(r->projects_kept, 1);
  EXPECT_TRUE(Exists(bk::keys::Booking(p, lease)));
  EXPECT_TRUE(Exists(bk::keys::Project("p-leased")));
  EXPECT_TRUE(Exists(bk::keys::Budget(p, "p-leased")));
  EXPECT_FALSE(Exists(bk::keys::Project("p-corrupt")));
}

// ============================================================ billing

namespace bl = labshare::billing;
namespace blv1 = labshare::billing::v1;
namespace iv = labshare::inventory::v1;

// Billing's view of inventory for these tests: one instrument i1 of
// organizations/owner, ON_SITE (and JOINT_RESEARCH alike), billed on
// reserved time in 15-minute units, the missed fee the full price; 100.00
// CNY an hour for everybody.
std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

class FakeInventory final : public bl::InventoryReader {
 public:
  absl::StatusOr<iv::LookupRateResponse> LookupRate(const iv::LookupRateRequest&) override {
    iv::LookupRateResponse r;
    r.mutable_rate()->set_name("instruments/i1/rates/r1");
    r.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    r.mutable_rate()->set_unit(iv::PER_HOUR);
    r.mutable_rate()->mutable_price()->set_currency_code("CNY");
    r.mutable_rate()->mutable_price()->set_amount_minor(10000);
    return r;
  }
  absl::StatusOr<iv::Instrument> GetInstrument(const std::string& name) override {
    iv::Instrument i;
    i.set_name(name);
    i.set_owner_organization("organizations/owner");
    i.set_category("microscopy");
    auto* m = i.add_modes();
    m->set_mode(labshare::type::v1::ON_SITE);
    m->mutable_slot_rules()->set_billing_basis(iv::RESERVED_TIME);
    *m->mutable_slot_rules()->mutable_billing_unit() = ToProto(absl::Minutes(15));
    m->mutable_slot_rules()->set_missed_fee_bps(10000);
    *i.add_modes() = i.modes(0);  // JOINT_RESEARCH alike (a project's bookings)
    i.mutable_modes(1)->set_mode(labshare::type::v1::JOINT_RESEARCH);
    return i;
  }
  absl::StatusOr<iv::Organization> GetOrganization(const std::string& name) override {
    iv::Organization o;
    o.set_name(name);
    o.set_display_name(name.substr(name.find('/') + 1));
    return o;
  }
};

class BillingArchiveTest : public ArchiveTest {
 protected:
  void SetUp() override {
    ArchiveTest::SetUp();
    billing_store_ = std::make_unique<bl::BillingStore>(pool_.get());
    billing_ = std::make_unique<bl::BillingManager>(billing_store_.get(), &inventory_, &clock_, Zone(),
                                                    testing::TestPageTokens());
  }
  static absl::TimeZone Zone() {
    absl::TimeZone z;
    EXPECT_TRUE(absl::LoadTimeZone("Asia/Shanghai", &z));
    return z;
  }
  // A moment in the consortium's zone.
  static absl::Time Local(int y, int m, int d, int h = 12) {
    return absl::FromCivil(absl::CivilHour(y, m, d, h), Zone());
  }
  Principal Admin() { return Principal{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(1)}; }

  // A one-hour booking of i1 paid by `payer`, missed: billing charges the
  // full price (10000) when it applies the event, at the clock's time.
  // With a project: a JOINT_RESEARCH booking of it, payer and lab2 sharing.
  std::string Missed(const std::string& payer, absl::Time start, const std::string& project = "") {
    const std::string id = absl::StrCat("b", ++bookings_);
    bv1::Booking b;
    b.set_name("bookings/" + id);
    b.set_instrument("instruments/i1");
    b.set_instrument_owner("organizations/owner");
    b.set_mode(labshare::type::v1::ON_SITE);
    if (!project.empty()) {
      b.set_mode(labshare::type::v1::JOINT_RESEARCH);
      b.set_project(project);
      for (const std::string& org : {payer, std::string("organizations/lab2")}) {
        auto* share = b.add_cost_shares();
        share->set_organization(org);
        share->set_share_bps(5000);
      }
    }
    b.set_user("users/ana");
    b.set_payer_organization(payer);
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(1));
    *b.mutable_blocked_interval() = b.reserved_interval();
    b.set_state(bv1::Booking::MISSED);
    bv1::BookingEvent e;
    e.mutable_header()->set_event_id("ev-" + id);
    *e.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
    *e.mutable_booking_missed()->mutable_booking() = b;
    StreamEvent ev{absl::StrCat(absl::ToUnixMillis(clock_.Now()), "-0"), "labshare.booking.v1.BookingEvent",
                   e.SerializeAsString()};
    events_.push_back(ev);
    absl::Status s = billing_->ApplyBookingEvent(ev);
    EXPECT_TRUE(s.ok()) << s;
    blv1::ListChargesRequest l;
    l.set_source_event_id("ev-" + id);
    auto listed = billing_->ListCharges(Admin(), l);
    EXPECT_TRUE(listed.ok() && listed->charges_size() == 1) << listed.status();
    return listed.ok() && listed->charges_size() == 1 ? listed->charges(0).name() : "";
  }

  blv1::Invoice Issue(const std::string& payer, const std::string& period, const std::string& request) {
    blv1::IssueInvoiceRequest r;
    r.set_payer_organization(payer);
    r.set_period(period);
    r.set_request_id(request);
    auto inv = billing_->IssueInvoice(Admin(), r);
    EXPECT_TRUE(inv.ok()) << inv.status();
    return inv.ok() ? *inv : blv1::Invoice();
  }
  absl::StatusOr<blv1::Invoice> MarkPaid(const std::string& name, const std::string& request) {
    blv1::MarkInvoicePaidRequest r;
    r.set_name(name);
    r.set_request_id(request);
    return billing_->MarkInvoicePaid(Admin(), r);
  }

  // Everything the platform answers about money that must not change:
  // every account's balance (with and without counterparty), the balances
  // listing, statements of the open year, the invoices, drafts of open
  // periods and the leftover of a closed one.
  std::string Answers() {
    std::string out;
    auto add = [&](const std::string& what, const absl::StatusOr<std::string>& v) {
      EXPECT_TRUE(v.ok()) << what << ": " << v.status();
      absl::StrAppend(&out, what, "=", v.ok() ? absl::BytesToHexString(*v) : v.status().ToString(), "\n");
    };
    auto ser = [](const auto& s) -> absl::StatusOr<std::string> {
      if (!s.ok()) return s.status();
      return SerializeDeterministic(*s);
    };
    // The accounts that exist (read from Redis only to know which to ask):
    // every answer below is billing's own.
    auto all = billing_->AllBalances();
    EXPECT_TRUE(all.ok());
    for (const auto& [field, unused] : *all) {
      const std::vector<std::string> f = absl::StrSplit(field, '|');
      if (!absl::StartsWith(f[0], "organizations/")) continue;
      for (const std::string& cp : {f[1], std::string()}) {
        blv1::GetAccountBalanceRequest r;
        r.set_name(f[0]);
        r.set_counterparty(cp);
        r.set_currency_code(f[2]);
        add("balance " + field + " cp " + cp, ser(billing_->GetAccountBalance(Admin(), r)));
        // As of the cut and of moments after it (the carried-forward lines
        // are dated before the cut).
        for (absl::Time t : {Local(kY + 1, 1, 1, 0), Local(kY + 1, 1, 9), Local(kY + 1, 1, 20), Local(kY + 1, 1, 31)}) {
          *r.mutable_as_of_time() = ToProto(t);
          add(absl::StrCat("balance as of ", absl::FormatTime(t), " ", field, " cp ", cp),
              ser(billing_->GetAccountBalance(Admin(), r)));
        }
      }
    }
    // Subsidy pools (balance, cap) and every organisation's allowance now
    // and in the new year's first month.
    {
      blv1::ListSubsidyPoolsRequest r;
      r.set_page_size(1000);
      auto pools = billing_->ListSubsidyPools(Admin(), r);
      add("pools", ser(pools));
      if (pools.ok()) {
        for (const auto& pool : pools->subsidy_pools()) {
          blv1::GetSubsidyPoolRequest g;
          g.set_name(pool.name());
          add("pool " + pool.name(), ser(billing_->GetSubsidyPool(Admin(), g)));
          for (const std::string org : {"lab", "lab2", "lab3"}) {
            for (absl::Time t : {absl::Time(), Local(kY + 1, 1, 15)}) {
              blv1::GetSubsidyAllowanceRequest a;
              a.set_name(pool.name() + "/allowances/" + org);
              if (t != absl::Time()) *a.mutable_time() = ToProto(t);
              add(absl::StrCat("allowance ", a.name(), " ", absl::FormatTime(t)),
                  ser(billing_->GetSubsidyAllowance(Admin(), a)));
            }
          }
        }
      }
    }
    {
      blv1::ListDepositsRequest r;
      r.set_page_size(1000);
      add("deposits", ser(billing_->ListDeposits(Admin(), r)));
      blv1::ListSettlementsRequest s;
      s.set_page_size(1000);
      add("settlements", ser(billing_->ListSettlements(Admin(), s)));
      blv1::ListPaymentsRequest pr;
      pr.set_page_size(1000);
      add("payments", ser(billing_->ListPayments(Admin(), pr)));
    }
    for (const std::string parent : {"organizations/-", "organizations/lab", "organizations/owner"}) {
      blv1::ListBalancesRequest r;
      r.set_parent(parent);
      r.set_group_by_counterparty(true);
      r.set_page_size(1000);
      add("list " + parent, ser(billing_->ListBalances(Admin(), r)));
    }
    for (const std::string org : {"organizations/lab", "organizations/lab2", "organizations/lab3",
                                  "organizations/owner"}) {
      for (const auto& [from, to] : std::vector<std::pair<absl::Time, absl::Time>>{
               {Local(kY + 1, 1, 1, 0), Local(kY + 1, 2, 1, 0)}, {Local(kY + 1, 1, 1, 0), Local(kY + 1, 3, 1, 0)}}) {
        blv1::GetOrganizationStatementRequest r;
        r.set_organization(org);
        *r.mutable_interval()->mutable_start_time() = ToProto(from);
        *r.mutable_interval()->mutable_end_time() = ToProto(to);
        r.add_account_kinds(blv1::RECEIVABLE);
        r.add_account_kinds(blv1::PAYABLE);
        r.add_account_kinds(blv1::CASH);
        r.add_account_kinds(blv1::EXPENSE);
        r.add_account_kinds(blv1::INCOME);
        r.set_page_size(1000);
        add("statement " + org, ser(billing_->GetOrganizationStatement(Admin(), r)));
      }
    }
    blv1::ListInvoicesRequest li;
    li.set_page_size(1000);
    add("invoices", ser(billing_->ListInvoices(Admin(), li)));
    for (const auto& [payer, period] : std::vector<std::pair<std::string, std::string>>{
             {"organizations/lab", absl::StrCat(kY + 1, "-01")},
             {"organizations/lab", absl::StrCat(kY + 1, "-02")},
             {"organizations/lab3", absl::StrCat(kY, "-11")}}) {
      blv1::PreviewInvoiceRequest r;
      r.set_payer_organization(payer);
      r.set_period(period);
      add("draft " + payer + " " + period, ser(billing_->PreviewInvoice(Admin(), r)));
    }
    return out;
  }

  // Year Y in billing: lab's March and June charges on paid invoices (one
  // marked paid, one paid by a recorded payment), lab2's June charge on an
  // invoice voided, re-issued and paid, lab's December charge invoiced and
  // paid in January; kept: lab's June charge (reversed in Y + 1), lab3's
  // November charge (never invoiced), lab's January charge of Y + 1.
  void SeedBilling() {
    clock_.Set(Local(kY, 3, 5));
    c_march_ = Missed("organizations/lab", Local(kY, 3, 2));
    clock_.Set(Local(kY, 4, 2));
    inv_march_ = Issue("organizations/lab", absl::StrCat(kY, "-03"), "issue-march");
    auto paid = MarkPaid(inv_march_.name(), "pay-march");
    ASSERT_TRUE(paid.ok()) << paid.status();
    paid_march_ = *paid;

    clock_.Set(Local(kY, 6, 5));
    c_june_ = Missed("organizations/lab", Local(kY, 6, 2));
    c_june2_ = Missed("organizations/lab2", Local(kY, 6, 3));
    clock_.Set(Local(kY, 7, 2));
    inv_june_ = Issue("organizations/lab", absl::StrCat(kY, "-06"), "issue-june");
    blv1::RecordPaymentRequest pay;
    pay.set_request_id("pay-june");
    pay.mutable_payment()->set_payer("organizations/lab");
    pay.mutable_payment()->set_payee("organizations/owner");
    *pay.mutable_payment()->mutable_amount() = bl::MakeMoney("CNY", 10000);
    pay.mutable_payment()->set_invoice(inv_june_.name());
    auto recorded = billing_->RecordPayment(Admin(), pay);
    ASSERT_TRUE(recorded.ok()) << recorded.status();
    payment_june_ = *recorded;
    const blv1::Invoice voided = Issue("organizations/lab2", absl::StrCat(kY, "-06"), "issue-june2");
    blv1::VoidInvoiceRequest v;
    v.set_name(voided.name());
    v.set_reason("wrong address");
    ASSERT_TRUE(billing_->VoidInvoice(Admin(), v).ok());
    const blv1::Invoice reissued = Issue("organizations/lab2", absl::StrCat(kY, "-06"), "reissue-june2");
    ASSERT_TRUE(MarkPaid(reissued.name(), "pay-june2").ok());

    clock_.Set(Local(kY, 11, 10));
    c_nov_ = Missed("organizations/lab3", Local(kY, 11, 2));
    clock_.Set(Local(kY, 12, 20));
    c_dec_ = Missed("organizations/lab", Local(kY, 12, 2));

    clock_.Set(Local(kY + 1, 1, 3));
    inv_dec_ = Issue("organizations/lab", absl::StrCat(kY, "-12"), "issue-dec");
    clock_.Set(Local(kY + 1, 1, 10));
    c_jan_ = Missed("organizations/lab", Local(kY + 1, 1, 8));
    // The June charge reversed in the new year: its correction is not of
    // the closed year, so the charge and its postings stay.
    auto charge = billing_->GetCharge(Admin(), [&] {
      blv1::GetChargeRequest g;
      g.set_name(c_june_);
      return g;
    }());
    ASSERT_TRUE(charge.ok()) << charge.status();
    blv1::PostCorrectionRequest c;
    c.set_request_id("reverse-june");
    c.set_posting(charge->posting());
    c.set_mode(blv1::PostCorrectionRequest::REVERSE);
    c.set_reason("instrument was down");
    ASSERT_TRUE(billing_->PostCorrection(Admin(), c).ok());
    clock_.Set(Local(kY + 1, 2, 1));
  }

  // Every charge of the seed: its document, its CHARGE posting and every
  // correction of either are all in Redis or all gone, and a posting that
  // is gone has no ledger line left that is not carried forward... unless
  // the lists are not folded yet: then its lines are all still there.
  void ExpectGroupsWholeOrGone() {
    for (const auto& c : {c_march_, c_june_, c_june2_, c_nov_, c_dec_, c_jan_}) {
      if (c.empty()) continue;
      std::vector<std::string> names = {c};
      const auto a = pool_->Command({"EXISTS", bl::keys::Doc("charge", IdOf(c))});
      ASSERT_TRUE(a.ok());
      const bool present = a->integer == 1;
      auto listed = pool_->Command({"ZRANGE", bl::keys::Index("charge"), "0", "-1"});
      bool indexed = false;
      for (const auto& m : listed->elements) indexed |= absl::EndsWith(m.str, "|" + IdOf(c));
      EXPECT_EQ(indexed, present) << c;
      if (!present) continue;
      auto d = pool_->Command({"HGET", bl::keys::Doc("charge", IdOf(c)), "d"});
      blv1::Charge ch;
      ASSERT_TRUE(ch.ParseFromString(d->str));
      std::vector<std::string> members = {ch.posting()};
      for (const auto& x : ch.corrections()) members.push_back(x);
      for (const auto& x : ch.subsidy_postings()) members.push_back(x);
      for (const auto& m : members) EXPECT_TRUE(Exists(bl::keys::Doc("posting", IdOf(m)))) << c << " " << m;
    }
  }

  // Money as billing answers it now (no statements: those of an archived
  // year change): every balance field, every organisation account's
  // balance with and without counterparty, now and as of a few moments
  // after the cuts, the balances listing.
  std::string Money(const std::vector<absl::Time>& as_of) {
    std::string out;
    auto ser = [](const auto& s) -> std::string {
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? absl::BytesToHexString(SerializeDeterministic(*s)) : s.status().ToString();
    };
    auto all = billing_->AllBalances();
    EXPECT_TRUE(all.ok());
    for (const auto& [field, value] : *all) {
      const std::vector<std::string> f = absl::StrSplit(field, '|');
      if (!absl::StartsWith(f[0], "organizations/")) continue;
      for (const std::string& cp : {f[1], std::string()}) {
        blv1::GetAccountBalanceRequest r;
        r.set_name(f[0]);
        r.set_counterparty(cp);
        r.set_currency_code(f[2]);
        absl::StrAppend(&out, "balance ", field, " cp ", cp, "=", ser(billing_->GetAccountBalance(Admin(), r)), "\n");
        for (absl::Time t : as_of) {
          *r.mutable_as_of_time() = ToProto(t);
          absl::StrAppend(&out, "as of ", absl::FormatTime(t), " ", field, " cp ", cp, "=",
                          ser(billing_->GetAccountBalance(Admin(), r)), "\n");
        }
      }
    }
    for (const std::string parent : {"organizations/-", "organizations/lab", "organizations/owner"}) {
      blv1::ListBalancesRequest r;
      r.set_parent(parent);
      r.set_group_by_counterparty(true);
      r.set_page_size(1000);
      absl::StrAppend(&out, "list ", parent, "=", ser(billing_->ListBalances(Admin(), r)), "\n");
    }
    return out;
  }

  absl::StatusOr<blv1::PostCorrectionResponse> Reverse(const std::string& charge, const std::string& request) {
    blv1::GetChargeRequest g;
    g.set_name(charge);
    auto c = billing_->GetCharge(Admin(), g);
    if (!c.ok()) return c.status();
    blv1::PostCorrectionRequest r;
    r.set_request_id(request);
    r.set_posting(c->posting());
    r.set_mode(blv1::PostCorrectionRequest::REVERSE);
    r.set_reason("instrument was down");
    return billing_->PostCorrection(Admin(), r);
  }

  // The lines of a ledger list naming a posting (by id).
  int LinesOf(const std::string& account, const std::string& posting) {
    auto l = pool_->Command({"LRANGE", bl::keys::Account(account), "0", "-1"});
    int n = 0;
    for (const auto& e : l->elements) n += absl::StrContains(e.str, "|" + IdOf(posting) + "|") ? 1 : 0;
    return n;
  }

  FakeInventory inventory_;
  std::unique_ptr<bl::BillingStore> billing_store_;
  std::unique_ptr<bl::BillingManager> billing_;
  int bookings_ = 0;
  std::vector<StreamEvent> events_;
  std::string c_march_, c_june_, c_june2_, c_nov_, c_dec_, c_jan_;
  blv1::Invoice inv_march_, inv_june_, inv_dec_, paid_march_;
  blv1::Payment payment_june_;
};

CommandResult VerifyArchive(const std::string& file) {
  return Shell(absl::StrCat("/usr/bin/python3 '", RepoRoot(), "deploy/verify_archive.py' '", file, "'"));
}

TEST_F(BillingArchiveTest, RefusesAnUnpaidInvoiceOfTheYear) {
  SeedBilling();
  const int64_t keys = DbSize();
  auto refused = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(refused.status().message(),
            absl::StrCat(inv_dec_.name(), " (", kY,
                         "-12) is issued and not paid: record its payment, mark it paid or void it first"));
  EXPECT_EQ(DbSize(), keys);
  for (const char* f : {"audit", "bookings", "billing"}) {
    EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/", f, "-", kY, ".jsonl"))) << f;
    EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/", f, "-", kY, ".jsonl.tmp"))) << f;
  }
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  auto ok = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->billing_charges, 3);
}

TEST_F(BillingArchiveTest, RefusesASettlementNotClearedOfTheYear) {
  clock_.Set(Local(kY, 9, 5));
  Missed("organizations/lab", Local(kY, 9, 2));
  clock_.Set(Local(kY, 10, 2));
  Issue("organizations/lab", absl::StrCat(kY, "-09"), "issue-sep");
  blv1::ComputeSettlementRequest r;
  r.set_period(absl::StrCat(kY, "-09"));
  r.set_request_id("settle-sep");
  auto s = billing_->ComputeSettlement(Admin(), r);
  ASSERT_TRUE(s.ok()) << s.status();
  clock_.Set(Local(kY + 1, 2, 1));
  // The invoice is issued (and in the settlement): that refusal comes first.
  auto invoice = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(invoice.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(invoice.status().message(), "is issued and not paid")) << invoice.status();
  // Marked paid behind the settlement's back (as an operator fixing data
  // would): the settlement still blocks.
  auto key = bl::keys::Doc("invoice", IdOf(s->invoices(0)));
  auto d = pool_->Command({"HGET", key, "d"});
  blv1::Invoice inv;
  ASSERT_TRUE(inv.ParseFromString(d->str));
  inv.set_state(blv1::Invoice::PAID);
  ASSERT_TRUE(pool_->Command({"HSET", key, "d", inv.SerializeAsString()}).ok());
  const int64_t keys = DbSize();
  auto refused = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message(), absl::StrCat(s->name(), " (", kY,
                                                     "-09) is computed and not cleared: pay its transfers first"));
  EXPECT_EQ(DbSize(), keys);
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/billing-", kY, ".jsonl")));
}

TEST_F(BillingArchiveTest, ArchivesClosedBillingKeepsEveryAnswerResumesAndReruns) {
  SeedBilling();
  auto paid_dec = MarkPaid(inv_dec_.name(), "pay-dec");  // in Y + 1: its payment stays
  ASSERT_TRUE(paid_dec.ok()) << paid_dec.status();
  const std::string before = Answers();
  const int64_t keys_before = DbSize();
  const int64_t charges_before = pool_->Command({"ZCARD", bl::keys::Index("charge")})->integer;
  const int64_t postings_before = pool_->Command({"ZCARD", bl::keys::Index("posting")})->integer;
  ASSERT_EQ(charges_before, 6);

  // A crash after the first group went, then one after every group went
  // and before any list was folded: every answer is already the same, and
  // every group is whole or gone.
  for (const char* at : {"billing_removed_group", "billing_removed"}) {
    ArchiveOptions crash = Options(kY);
    crash.stop_for_testing = [at](absl::string_view stage) {
      return stage == at ? absl::AbortedError("crash") : absl::OkStatus();
    };
    auto crashed = ArchiveYear(pool_.get(), crash);
    ASSERT_EQ(crashed.status().code(), absl::StatusCode::kAborted) << crashed.status();
    EXPECT_EQ(Answers(), before) << at;
    ExpectGroupsWholeOrGone();
  }
  EXPECT_FALSE(Exists(bl::keys::Doc("charge", IdOf(c_march_))));

  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(done->already_done);
  // March, lab2's June and December charges; their CHARGE postings and the
  // three payments of the year (March marked paid, June recorded, lab2's
  // re-issue marked paid); four ledger lines each.
  EXPECT_EQ(done->billing_charges, 3);
  EXPECT_EQ(done->billing_postings, 6);
  EXPECT_EQ(done->billing_ledger_lines, 24);
  EXPECT_EQ(done->billing_changed_kept, 0);
  // Kept: June's charge (reversed in Y + 1) and lab3's (never invoiced),
  // with their CHARGE postings.
  EXPECT_EQ(done->billing_charges_kept, 2);
  EXPECT_EQ(done->billing_postings_kept, 2);
  // The account lists that got carried-forward lines (counted over the
  // crashed run and the rerun): lab's and lab2's expense, payable and cash,
  // owner's receivable, income and cash.
  EXPECT_EQ(done->billing_lists_folded, 9);
  EXPECT_EQ(Answers(), before);

  for (const auto& c : {c_march_, c_june2_, c_dec_}) {
    EXPECT_FALSE(Exists(bl::keys::Doc("charge", IdOf(c)))) << c;
  }
  for (const auto& c : {c_june_, c_nov_, c_jan_}) EXPECT_TRUE(Exists(bl::keys::Doc("charge", IdOf(c)))) << c;
  EXPECT_EQ(pool_->Command({"ZCARD", bl::keys::Index("charge")})->integer, charges_before - 3);
  EXPECT_EQ(pool_->Command({"ZCARD", bl::keys::Index("posting")})->integer, postings_before - 6);
  // Nine documents went, the manifest and the removal's record came.
  EXPECT_EQ(keys_before - DbSize(), 9 - 2);

  // lab's expense account: March and December folded into one carried-forward
  // debit dated at December's line; June (reversed in Y + 1) and the new
  // year's lines stay as they were, in time order.
  const std::string expense = bl::keys::Account("organizations/lab/accounts/expense");
  auto list = pool_->Command({"LRANGE", expense, "0", "-1"});
  ASSERT_TRUE(list.ok());
  std::vector<std::string> got;
  for (const auto& e : list->elements) got.push_back(e.str.substr(e.str.find('|') + 1));
  ASSERT_EQ(got.size(), 4u) << absl::StrJoin(got, "\n");
  EXPECT_TRUE(absl::StartsWith(got[0], "c")) << got[0];  // June's CHARGE posting
  EXPECT_EQ(got[1], absl::StrCat("carried-forward-", kY, "||CNY|20000"));  // expense has no counterparty
  EXPECT_EQ(list->elements[1].str.substr(0, list->elements[1].str.find('|')),
            std::to_string(absl::ToUnixMillis(Local(kY, 12, 20))));

  // The file: its own checks and deploy/verify_archive.py.
  const std::string path = absl::StrCat(dir_, "/billing-", kY, ".jsonl");
  FileVerdict v = VerifyBillingExport(ReadAll(path));
  EXPECT_TRUE(v.ok) << v.kind << " at " << v.broken_at;
  EXPECT_EQ(v.charges, 3);
  EXPECT_EQ(v.postings, 6);
  EXPECT_EQ(v.ledger_lines, 24);
  CommandResult py = VerifyArchive(path);
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_EQ(py.output, absl::StrCat("OK billing ", kY, ": 3 charges, 6 postings, 24 ledger lines\n"));
  CommandResult bookings = VerifyArchive(absl::StrCat(dir_, "/bookings-", kY, ".jsonl"));
  EXPECT_EQ(bookings.output, absl::StrCat("OK bookings ", kY, ": 0 bookings\n"));

  // Retried requests still answer as the first time, and a redelivered
  // booking event of the year is not charged again.
  auto again_paid = MarkPaid(inv_march_.name(), "pay-march");
  ASSERT_TRUE(again_paid.ok()) << again_paid.status();
  EXPECT_EQ(SerializeDeterministic(*again_paid), SerializeDeterministic(paid_march_));
  blv1::RecordPaymentRequest pay;
  pay.set_request_id("pay-june");
  pay.mutable_payment()->set_payer("organizations/lab");
  pay.mutable_payment()->set_payee("organizations/owner");
  *pay.mutable_payment()->mutable_amount() = bl::MakeMoney("CNY", 10000);
  pay.mutable_payment()->set_invoice(inv_june_.name());
  auto again_payment = billing_->RecordPayment(Admin(), pay);
  ASSERT_TRUE(again_payment.ok()) << again_payment.status();
  EXPECT_EQ(SerializeDeterministic(*again_payment), SerializeDeterministic(payment_june_));
  ASSERT_TRUE(billing_->ApplyBookingEvent(events_[0]).ok());
  EXPECT_EQ(pool_->Command({"ZCARD", bl::keys::Index("charge")})->integer, charges_before - 3);
  EXPECT_EQ(Answers(), before);

  // Rerun: nothing to do.
  const int64_t keys_done = DbSize();
  auto rerun = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(rerun.ok()) << rerun.status();
  EXPECT_TRUE(rerun->already_done);
  EXPECT_EQ(rerun->billing_postings, 6);
  EXPECT_EQ(DbSize(), keys_done);

  // Billing goes on: a new charge, invoiced with the new year.
  clock_.Set(Local(kY + 1, 2, 10));
  Missed("organizations/lab", Local(kY + 1, 2, 5));
  clock_.Set(Local(kY + 1, 3, 2));
  const blv1::Invoice feb = Issue("organizations/lab", absl::StrCat(kY + 1, "-02"), "issue-feb");
  // January's and February's charges, less June's reversal (a late line).
  EXPECT_EQ(feb.amount_due().amount_minor(), 10000 + 10000 - 10000);
  EXPECT_EQ(feb.lines_size(), 3);
}

TEST_F(BillingArchiveTest, AChangedBillingFileIsRefusedBeforeAnythingIsRemoved) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  const std::string before = Answers();
  const int64_t keys = DbSize();
  const std::string path = absl::StrCat(dir_, "/billing-", kY, ".jsonl");
  std::string data = ReadAll(path);
  // A ledger line's amount changed (its record keeps the old checksum).
  const size_t at = data.find("\"kind\":\"ledger_line\"");
  ASSERT_NE(at, std::string::npos);
  const size_t doc = data.find("\"document\":\"", at) + 12;
  data[doc] = data[doc] == 'M' ? 'N' : 'M';
  WriteAll(path, data);
  auto refused = ArchiveYear(pool_.get(), Options(kY));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
  EXPECT_EQ(refused.status().message(),
            absl::StrCat("the billing archive of ", kY,
                         " changed since it was verified (SHA-256 differs from the manifest); nothing removed"));
  EXPECT_EQ(DbSize(), keys);
  EXPECT_EQ(Answers(), before);
  CommandResult py = VerifyArchive(path);
  EXPECT_EQ(py.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(py.output, "BROKEN at line ")) << py.output;
  EXPECT_TRUE(absl::EndsWith(py.output, ": HASH_MISMATCH\n")) << py.output;
}


TEST_F(BillingArchiveTest, ADocumentChangedAfterTheExportKeepsItsWholeGroup) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  const std::string before = Answers();
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  // December's charge written again meanwhile (its version moves on; it is
  // at 2 already: issuing December's invoice named it on the charge).
  const std::string key = bl::keys::Doc("charge", IdOf(c_dec_));
  ASSERT_EQ(pool_->Command({"HINCRBY", key, "v", "1"})->integer, 3);
  auto charge = billing_->GetCharge(Admin(), [&] {
    blv1::GetChargeRequest g;
    g.set_name(c_dec_);
    return g;
  }());
  ASSERT_TRUE(charge.ok());
  const std::string dec_posting = charge->posting();
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->billing_charges, 3);       // in the file
  EXPECT_EQ(done->billing_changed_kept, 2);  // but left in Redis: the charge and its posting
  EXPECT_TRUE(Exists(key));
  EXPECT_TRUE(Exists(bl::keys::Doc("posting", IdOf(dec_posting))));
  EXPECT_FALSE(Exists(bl::keys::Doc("charge", IdOf(c_march_))));
  ExpectGroupsWholeOrGone();
  auto listed = pool_->Command({"ZRANGE", bl::keys::Index("charge"), "0", "-1"});
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->elements.size(), 4u);  // December, June, November, January
  // Its lines are not folded and its invoice marker stays.
  EXPECT_EQ(LinesOf("organizations/lab/accounts/expense", dec_posting), 1);
  EXPECT_EQ(LinesOf("organizations/lab/accounts/payable", dec_posting), 1);
  auto marker = pool_->Command({"HGET", "{billing}:invoicedpost", IdOf(dec_posting) + "|organizations/lab"});
  ASSERT_TRUE(marker.ok());
  EXPECT_EQ(marker->str, IdOf(inv_dec_.name()));
  EXPECT_EQ(Answers(), before);
}

// A real correction between the export and the removal: the group it
// corrects stays whole, and the correction's money is right (the charge
// REVERSED, the payer's payable back to what the reversal says).
TEST_F(BillingArchiveTest, ACorrectionBetweenTheExportAndTheRemovalKeepsItsGroupWhole) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  const std::string money_before = Money({});
  auto reversed = Reverse(c_march_, "reverse-march");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  const std::string after_correction = Answers();
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->billing_changed_kept, 2);  // March's charge and CHARGE posting
  ExpectGroupsWholeOrGone();
  EXPECT_TRUE(Exists(bl::keys::Doc("charge", IdOf(c_march_))));
  EXPECT_EQ(Answers(), after_correction);
  // The reversal did all of its work: the charge is REVERSED and the payer
  // owes 100.00 less than before it.
  auto c = billing_->GetCharge(Admin(), [&] {
    blv1::GetChargeRequest g;
    g.set_name(c_march_);
    return g;
  }());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state(), blv1::Charge::REVERSED);
  blv1::GetAccountBalanceRequest r;
  r.set_name("organizations/lab/accounts/payable");
  r.set_currency_code("CNY");
  auto payable = billing_->GetAccountBalance(Admin(), r);
  ASSERT_TRUE(payable.ok());
  EXPECT_NE(Money({}), money_before);
  // March's posting and its reversal keep their lines in lab's payable list.
  EXPECT_EQ(LinesOf("organizations/lab/accounts/payable", c->posting()), 1);
  EXPECT_EQ(LinesOf("organizations/lab/accounts/payable", reversed->correction().name()), 1);
}

// A real correction between two groups' removal steps: every group is
// whole or gone at every step, and the corrected one stays whole.
TEST_F(BillingArchiveTest, ACorrectionBetweenRemovalStepsKeepsItsGroupWhole) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  std::string corrected;
  int steps = 0;
  ArchiveOptions o = Options(kY);
  o.stop_for_testing = [&](absl::string_view stage) {
    if (stage != "billing_removed_group") return absl::OkStatus();
    ++steps;
    ExpectGroupsWholeOrGone();
    if (!corrected.empty()) return absl::OkStatus();
    // The first charge of the archived ones still in Redis.
    for (const auto& c : {c_march_, c_june2_, c_dec_}) {
      if (!Exists(bl::keys::Doc("charge", IdOf(c)))) continue;
      auto r = Reverse(c, "reverse-between");
      EXPECT_TRUE(r.ok()) << r.status();
      corrected = c;
      break;
    }
    return absl::OkStatus();
  };
  auto done = ArchiveYear(pool_.get(), o);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_FALSE(corrected.empty());
  EXPECT_EQ(steps, 6);  // three charges' groups, three payments
  EXPECT_EQ(done->billing_changed_kept, 2);
  EXPECT_TRUE(Exists(bl::keys::Doc("charge", IdOf(corrected))));
  ExpectGroupsWholeOrGone();
  auto c = billing_->GetCharge(Admin(), [&] {
    blv1::GetChargeRequest g;
    g.set_name(corrected);
    return g;
  }());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state(), blv1::Charge::REVERSED);
  // Its lines were not folded.
  EXPECT_EQ(LinesOf("organizations/" + std::string(corrected == c_june2_ ? "lab2" : "lab") + "/accounts/expense",
                    c->posting()),
            1);
}

// Year N keeps a group corrected after its export; year N + 1 archives it
// (its lines then folded with year N's carried-forward lines before them),
// and every balance answer stays.
TEST_F(BillingArchiveTest, AGroupKeptOneYearIsArchivedTheNext) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  auto reversed = Reverse(c_march_, "reverse-march");  // on 1 February of N + 1
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  auto first = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->billing_changed_kept, 2);
  // Year N + 1: January's invoice (January's charge, June's reversal) and
  // February's (March's reversal), both paid.
  clock_.Set(Local(kY + 1, 3, 2));
  const blv1::Invoice jan = Issue("organizations/lab", absl::StrCat(kY + 1, "-01"), "issue-jan");
  // The charge and its reversal net to zero: nothing outstanding, PAID at issue.
  EXPECT_EQ(jan.amount_due().amount_minor(), 0);
  ASSERT_EQ(jan.state(), blv1::Invoice::PAID);
  const blv1::Invoice feb = Issue("organizations/lab", absl::StrCat(kY + 1, "-02"), "issue-feb");
  EXPECT_EQ(feb.amount_due().amount_minor(), -10000);
  ASSERT_TRUE(MarkPaid(feb.name(), "pay-feb").ok());
  clock_.Set(Local(kY + 2, 2, 1));
  const std::vector<absl::Time> as_of = {Local(kY + 2, 1, 1, 0), Local(kY + 2, 1, 20)};
  const std::string money = Money(as_of);
  auto second = ArchiveYear(pool_.get(), Options(kY + 1));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->billing_changed_kept, 0);
  EXPECT_FALSE(Exists(bl::keys::Doc("charge", IdOf(c_march_))));
  EXPECT_FALSE(Exists(bl::keys::Doc("charge", IdOf(c_june_))));
  EXPECT_TRUE(Exists(bl::keys::Doc("charge", IdOf(c_nov_))));  // never invoiced
  EXPECT_EQ(Money(as_of), money);
  // lab's expense list: one carried-forward debit and one credit of N + 1
  // (N's folded into them), nothing of N left.
  auto list = pool_->Command({"LRANGE", bl::keys::Account("organizations/lab/accounts/expense"), "0", "-1"});
  ASSERT_TRUE(list.ok());
  std::vector<std::string> got;
  for (const auto& e : list->elements) got.push_back(e.str.substr(e.str.find('|') + 1));
  // (the debit dated at January's charge, the credit at March's reversal)
  EXPECT_EQ(got, (std::vector<std::string>{absl::StrCat("carried-forward-", kY + 1, "||CNY|40000"),
                                           absl::StrCat("carried-forward-", kY + 1, "||CNY|-20000")}))
      << absl::StrJoin(got, "\n");
  const std::string path = absl::StrCat(dir_, "/billing-", kY + 1, ".jsonl");
  CommandResult py = VerifyArchive(path);
  EXPECT_EQ(py.exit_code, 0) << py.output;
  FileVerdict v = VerifyBillingExport(ReadAll(path));
  EXPECT_TRUE(v.ok) << v.kind;
  // The file ties Redis's carried-forward lines: lab's expense list had
  // N's December debit carried forward (March stayed in N), and after the
  // fold what the list now holds.
  const std::string cf = absl::StrCat("{\"kind\":\"carried_forward\",\"key\":\"",
                                      bl::keys::Account("organizations/lab/accounts/expense"), "\",");
  const std::string file = ReadAll(path);
  const size_t at = file.find(cf);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(file.substr(at, file.find('\n', at) - at),
            absl::StrCat(cf, "\"before\":[{\"counterparty\":\"\",\"currency\":\"CNY\",\"debit\":10000,\"credit\":0}],",
                         "\"after\":[{\"counterparty\":\"\",\"currency\":\"CNY\",\"debit\":40000,\"credit\":20000}]}"));
  // The header carries the audit anchor, as the bookings file's.
  EXPECT_TRUE(absl::StrContains(file.substr(0, file.find('\n')), "\"audit_last_hash\":\"")) << file.substr(0, 300);
}

// Both verifiers: a charge record twice, a ledger line record naming
// another posting than its line, an item at or after the header's cut, a
// file whose name's year is not its header's (Python), a charge whose
// posting is not in the file.
TEST_F(BillingArchiveTest, TheVerifiersCheckDuplicatesPostingsCutAndName) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  const std::string path = absl::StrCat(dir_, "/billing-", kY, ".jsonl");
  const std::vector<std::string> lines = absl::StrSplit(ReadAll(path), '\n', absl::SkipEmpty());
  auto check = [&](std::vector<std::string> forged, const std::string& name, const char* kind, size_t line) {
    const std::string f = absl::StrCat(dir_, "/", name);
    const std::string data = absl::StrCat(absl::StrJoin(forged, "\n"), "\n");
    WriteAll(f, data);
    CommandResult py = VerifyArchive(f);
    EXPECT_EQ(py.output, absl::StrCat("BROKEN at line ", line, ": ", kind, "\n")) << name;
    if (absl::StartsWith(name, "x-")) {
      FileVerdict v = VerifyBillingExport(data);
      EXPECT_FALSE(v.ok);
      EXPECT_EQ(v.kind, absl::AsciiStrToLower(kind)) << name;
      EXPECT_EQ(v.broken_at, static_cast<int64_t>(line)) << name;
    }
  };
  {
    std::vector<std::string> f = lines;
    f.insert(f.begin() + 2, f[1]);  // the first charge twice
    check(f, "x-dup.jsonl", "DUPLICATE", 3);
  }
  {
    std::vector<std::string> f = lines;
    size_t i = 1;
    while (!absl::StrContains(f[i], "\"kind\":\"ledger_line\"")) ++i;
    const size_t p = f[i].find("\"posting\":\"") + 11;
    f[i] = absl::StrCat(f[i].substr(0, p), "zz", f[i].substr(p));
    check(f, "x-posting.jsonl", "LEDGER_MISMATCH", i + 1);
  }
  {
    std::vector<std::string> f = lines;
    const size_t c = f[0].find("\"cut_ms\":") + 9;
    const size_t e = f[0].find(',', c);
    f[0] = absl::StrCat(f[0].substr(0, c), absl::ToUnixMillis(Local(kY, 1, 1, 0)), f[0].substr(e));
    check(f, "x-cut.jsonl", "AFTER_CUT", 2);  // the first charge is after 1 January
  }
  check(lines, absl::StrCat("billing-", kY + 5, ".jsonl"), "MALFORMED", 1);
  {
    // A charge record naming a posting the file lacks, its record and the
    // trailer rehashed consistently.
    std::vector<std::string> f = lines;
    const size_t d = f[1].find("\"document\":\"") + 12;
    const size_t e = f[1].find('"', d);
    std::string doc;
    ASSERT_TRUE(absl::Base64Unescape(f[1].substr(d, e - d), &doc));
    blv1::Charge c;
    ASSERT_TRUE(c.ParseFromString(doc));
    c.set_posting("postings/nowhere");
    doc = c.SerializeAsString();
    usage::Sha256 h;
    h.Update(doc);
    const size_t sd = f[1].find("\"sha256\":\"") + 10;
    f[1] = absl::StrCat(f[1].substr(0, d), absl::Base64Escape(doc), f[1].substr(e, sd - e), h.HexDigest(),
                        f[1].substr(sd + 64));
    usage::Sha256 body;
    for (size_t i = 0; i + 1 < f.size(); ++i) body.Update(f[i] + "\n");
    const size_t ts = f.back().find("\"sha256\":\"") + 10;
    f.back() = absl::StrCat(f.back().substr(0, ts), body.HexDigest(), f.back().substr(ts + 64));
    check(f, "x-missing.jsonl", "MISSING_POSTING", f.size());
  }
}

TEST_F(BillingArchiveTest, AHeldDepositAndTheRentOfALeaseStillOutStay) {
  // lab leases i1 from May of Y: a 500.00 deposit, 1,000.00 a month.
  bv1::Lease lease;
  lease.set_name("leases/l1");
  lease.set_instrument("instruments/i1");
  lease.set_instrument_owner("organizations/owner");
  lease.set_lessee_organization("organizations/lab");
  lease.set_contact_user("users/ana");
  lease.set_state(bv1::Lease::HANDED_OVER);
  lease.set_payer_class(labshare::type::v1::MEMBER);
  *lease.mutable_term()->mutable_start_time() = ToProto(Local(kY, 5, 1, 0));
  *lease.mutable_term()->mutable_end_time() = ToProto(Local(kY + 1, 5, 1, 0));
  lease.mutable_contract()->set_rate_basis(bv1::LeaseContract::MONTHLY);
  *lease.mutable_contract()->mutable_rate() = bl::MakeMoney("CNY", 100000);
  *lease.mutable_contract()->mutable_deposit() = bl::MakeMoney("CNY", 50000);
  *lease.mutable_handover()->mutable_handover_time() = ToProto(Local(kY, 5, 1, 0));
  clock_.Set(Local(kY, 5, 1, 1));
  bv1::BookingEvent e;
  e.mutable_header()->set_event_id("ev-lease-l1");
  *e.mutable_lease_handed_over()->mutable_lease() = lease;
  ASSERT_TRUE(billing_
                  ->ApplyBookingEvent(StreamEvent{absl::StrCat(absl::ToUnixMillis(clock_.Now()), "-0"),
                                                  "labshare.booking.v1.BookingEvent", e.SerializeAsString()})
                  .ok());
  clock_.Set(Local(kY, 7, 1, 1));
  auto rent = billing_->ChargeEndedLeasePeriods();
  ASSERT_TRUE(rent.ok()) << rent.status();
  EXPECT_EQ(*rent, 2);  // May and June
  // July's invoice carries the deposit (payable on handover) and both
  // months' rent (posted on 1 July).
  clock_.Set(Local(kY, 8, 2));
  const blv1::Invoice july = Issue("organizations/lab", absl::StrCat(kY, "-07"), "issue-july");
  ASSERT_EQ(july.lines_size(), 3);
  ASSERT_TRUE(MarkPaid(july.name(), "pay-july").ok());
  clock_.Set(Local(kY + 1, 2, 1));
  const std::string before = Answers();
  const int64_t keys = DbSize();
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  // The deposit is held and the lease is out: its DEPOSIT charge and the
  // rent of May and June (all paid) stay with their postings; the payment of
  // the paid invoice goes.
  EXPECT_EQ(done->billing_charges, 0);
  EXPECT_EQ(done->billing_charges_kept, 3);
  EXPECT_EQ(done->billing_postings, 1);
  EXPECT_EQ(done->billing_postings_kept, 3);
  EXPECT_EQ(keys - DbSize(), 1 - 2);  // the payment's posting went, the manifest and the record came
  EXPECT_EQ(Answers(), before);
  // The lease's rent is not charged again.
  clock_.Set(Local(kY + 1, 2, 2));
  auto again = billing_->ChargeEndedLeasePeriods();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 7);  // July of Y to January of Y + 1, none of May and June
}


// Subsidies (a pool with a monthly cap), a settlement cleared by its
// transfers (payments and netting), a lease deposit lodged and released:
// every answer (balances now and as of several moments after the cut, the
// pool, allowances, deposits, settlements, payments, statements, invoices,
// drafts) equal before and after, and the year's billing all archived.
TEST_F(BillingArchiveTest, SubsidiesASettlementAndADepositKeepEveryAnswer) {
  clock_.Set(Local(kY, 2, 1));
  blv1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  cp.mutable_subsidy_pool()->set_display_name("Voucher");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(5000);
  *cp.mutable_subsidy_pool()->mutable_cap_per_organization() = bl::MakeMoney("CNY", 8000);
  cp.mutable_subsidy_pool()->set_cap_period_kind(blv1::MONTHLY);
  ASSERT_TRUE(billing_->CreateSubsidyPool(Admin(), cp).ok());
  blv1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("fund");
  *top.mutable_amount() = bl::MakeMoney("CNY", 100000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(Admin(), top).ok());
  // March: two missed hours of lab; the pool pays half, up to 80.00 a month.
  clock_.Set(Local(kY, 3, 5));
  Missed("organizations/lab", Local(kY, 3, 2));
  Missed("organizations/lab", Local(kY, 3, 3));
  // Invoiced, settled and cleared by the settlement's transfers.
  clock_.Set(Local(kY, 4, 2));
  const blv1::Invoice march = Issue("organizations/lab", absl::StrCat(kY, "-03"), "issue-march");
  EXPECT_EQ(march.amount_due().amount_minor(), 20000 - 8000);
  blv1::ComputeSettlementRequest cs;
  cs.set_period(absl::StrCat(kY, "-03"));
  cs.set_request_id("settle-march");
  auto settlement = billing_->ComputeSettlement(Admin(), cs);
  ASSERT_TRUE(settlement.ok()) << settlement.status();
  for (int i = 0; i < settlement->transfers_size(); ++i) {
    const auto& t = settlement->transfers(i);
    blv1::RecordPaymentRequest pay;
    pay.set_request_id(absl::StrCat("transfer-", i));
    pay.mutable_payment()->set_payer(t.from_organization());
    pay.mutable_payment()->set_payee(t.to_organization());
    *pay.mutable_payment()->mutable_amount() = t.amount();
    pay.mutable_payment()->set_settlement(settlement->name());
    pay.mutable_payment()->set_transfer_index(t.index());
    auto paid = billing_->RecordPayment(Admin(), pay);
    ASSERT_TRUE(paid.ok()) << paid.status();
  }
  blv1::GetSettlementRequest gs;
  gs.set_name(settlement->name());
  ASSERT_EQ(billing_->GetSettlement(Admin(), gs)->state(), blv1::Settlement::CLEARED);
  // May: lab leases i1 for the month (deposit 500.00, released at the
  // close); invoiced in June and paid.
  bv1::Lease lease;
  lease.set_name("leases/l9");
  lease.set_booking("bookings/l9");
  lease.set_instrument("instruments/i1");
  lease.set_instrument_owner("organizations/owner");
  lease.set_lessee_organization("organizations/lab");
  lease.set_contact_user("users/ana");
  lease.set_payer_class(labshare::type::v1::MEMBER);
  *lease.mutable_term()->mutable_start_time() = ToProto(Local(kY, 5, 1, 0));
  *lease.mutable_term()->mutable_end_time() = ToProto(Local(kY, 5, 20, 0));
  lease.mutable_contract()->set_rate_basis(bv1::LeaseContract::MONTHLY);
  *lease.mutable_contract()->mutable_rate() = bl::MakeMoney("CNY", 100000);
  *lease.mutable_contract()->mutable_deposit() = bl::MakeMoney("CNY", 50000);
  *lease.mutable_handover()->mutable_handover_time() = ToProto(Local(kY, 5, 1, 0));
  auto apply = [&](const std::string& event_id, auto set) {
    bv1::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    set(e);
    absl::Status st = billing_->ApplyBookingEvent(StreamEvent{absl::StrCat(absl::ToUnixMillis(clock_.Now()), "-0"),
                                                              "labshare.booking.v1.BookingEvent",
                                                              e.SerializeAsString()});
    EXPECT_TRUE(st.ok()) << st;
  };
  clock_.Set(Local(kY, 5, 1, 1));
  lease.set_state(bv1::Lease::HANDED_OVER);
  apply("ev-l9-handover", [&](bv1::BookingEvent& e) { *e.mutable_lease_handed_over()->mutable_lease() = lease; });
  clock_.Set(Local(kY, 5, 20, 1));
  *lease.mutable_return_record()->mutable_return_time() = ToProto(Local(kY, 5, 20, 0));
  lease.set_state(bv1::Lease::RETURNED);
  apply("ev-l9-returned", [&](bv1::BookingEvent& e) { *e.mutable_lease_returned()->mutable_lease() = lease; });
  clock_.Set(Local(kY, 5, 21));
  lease.set_state(bv1::Lease::CLOSED);
  apply("ev-l9-closed", [&](bv1::BookingEvent& e) { *e.mutable_lease_closed()->mutable_lease() = lease; });
  clock_.Set(Local(kY, 6, 2));
  const blv1::Invoice may = Issue("organizations/lab", absl::StrCat(kY, "-05"), "issue-may");
  ASSERT_TRUE(MarkPaid(may.name(), "pay-may").ok());
  // The release is owed by the owner (its PAYABLE): on the owner's invoice.
  const blv1::Invoice owner_may = Issue("organizations/owner", absl::StrCat(kY, "-05"), "issue-owner-may");
  EXPECT_EQ(owner_may.amount_due().amount_minor(), 50000);  // the deposit, back to lab
  ASSERT_TRUE(MarkPaid(owner_may.name(), "pay-owner-may").ok());
  // January of Y + 1: one more hour, subsidised under January's cap.
  clock_.Set(Local(kY + 1, 1, 10));
  Missed("organizations/lab", Local(kY + 1, 1, 8));
  clock_.Set(Local(kY + 1, 2, 1));

  const std::string before = Answers();
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->billing_charges_kept, 0);
  EXPECT_EQ(done->billing_postings_kept, 0);
  EXPECT_EQ(done->billing_changed_kept, 0);
  // March's two hours, the deposit and May's rent; their CHARGE postings,
  // three SUBSIDY postings, the pool's top-up, the settlement's transfer
  // payment, the release and the two May payments.
  EXPECT_EQ(done->billing_charges, 4);
  EXPECT_EQ(done->billing_postings, 12);
  EXPECT_EQ(done->billing_ledger_lines, 52);
  EXPECT_EQ(settlement->transfers_size(), 1);
  EXPECT_EQ(Answers(), before);
  // The pool and the caps answer as before: 80.00 of March's cap and of
  // May's (the lease's rent) used, January's 50.00 of its own.
  blv1::GetSubsidyPoolRequest gp;
  gp.set_name("subsidyPools/voucher");
  auto pool = billing_->GetSubsidyPool(Admin(), gp);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(pool->balance().amount_minor(), 100000 - 8000 - 8000 - 5000);  // March, May's rent, January
  blv1::GetSubsidyAllowanceRequest ga;
  ga.set_name("subsidyPools/voucher/allowances/lab");
  *ga.mutable_time() = ToProto(Local(kY + 1, 1, 15));
  auto allowance = billing_->GetSubsidyAllowance(Admin(), ga);
  ASSERT_TRUE(allowance.ok()) << allowance.status();
  EXPECT_EQ(allowance->remaining().amount_minor(), 8000 - 5000);
  CommandResult py = VerifyArchive(absl::StrCat(dir_, "/billing-", kY, ".jsonl"));
  EXPECT_EQ(py.exit_code, 0) << py.output;
}

// A subsidised charge reversed between two groups' removal steps (the
// window where a charge could be gone and its posting not): its group
// stays whole, so the reversal reverses the subsidy too and gives the cap
// back, and the money is what it would be without the archive running.
TEST_F(BillingArchiveTest, ASubsidisedChargeReversedDuringTheRemovalGetsItsSubsidyBack) {
  clock_.Set(Local(kY, 2, 1));
  blv1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  cp.mutable_subsidy_pool()->set_display_name("Voucher");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(3000);
  *cp.mutable_subsidy_pool()->mutable_cap_per_organization() = bl::MakeMoney("CNY", 50000);
  cp.mutable_subsidy_pool()->set_cap_period_kind(blv1::YEARLY);
  ASSERT_TRUE(billing_->CreateSubsidyPool(Admin(), cp).ok());
  blv1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("fund");
  *top.mutable_amount() = bl::MakeMoney("CNY", 100000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(Admin(), top).ok());
  clock_.Set(Local(kY, 3, 5));
  const std::string a = Missed("organizations/lab", Local(kY, 3, 2));
  const std::string b = Missed("organizations/lab", Local(kY, 3, 3));
  clock_.Set(Local(kY, 4, 2));
  const blv1::Invoice march = Issue("organizations/lab", absl::StrCat(kY, "-03"), "issue-march");
  EXPECT_EQ(march.amount_due().amount_minor(), 2 * (10000 - 3000));
  ASSERT_TRUE(MarkPaid(march.name(), "pay-march").ok());
  clock_.Set(Local(kY + 1, 2, 1));
  blv1::GetAccountBalanceRequest payable;
  payable.set_name("organizations/lab/accounts/payable");
  payable.set_currency_code("CNY");
  ASSERT_EQ(billing_->GetAccountBalance(Admin(), payable)->balance().amount_minor(), 0);

  std::string reversed;
  ArchiveOptions o = Options(kY);
  o.stop_for_testing = [&](absl::string_view stage) {
    if (stage != "billing_removed_group" || !reversed.empty()) return absl::OkStatus();
    for (const auto& c : {a, b}) {
      if (!Exists(bl::keys::Doc("charge", IdOf(c)))) continue;
      auto r = Reverse(c, "reverse-during");
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) {
        EXPECT_EQ(r->related_corrections_size(), 1);  // the subsidy's reversal
        EXPECT_EQ(r->charge().state(), blv1::Charge::REVERSED);
      }
      reversed = c;
      break;
    }
    return absl::OkStatus();
  };
  auto done = ArchiveYear(pool_.get(), o);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_FALSE(reversed.empty());
  EXPECT_EQ(done->billing_changed_kept, 3);  // the charge, its CHARGE and SUBSIDY postings
  EXPECT_TRUE(Exists(bl::keys::Doc("charge", IdOf(reversed))));
  // The payer is owed back what it paid for the reversed hour (70.00, a
  // debit of its payable), not the full price; the pool has its 30.00
  // back, and the cap too.
  EXPECT_EQ(billing_->GetAccountBalance(Admin(), payable)->balance().amount_minor(), -(10000 - 3000));
  blv1::GetSubsidyPoolRequest gp;
  gp.set_name("subsidyPools/voucher");
  EXPECT_EQ(billing_->GetSubsidyPool(Admin(), gp)->balance().amount_minor(), 100000 - 3000);
  blv1::GetSubsidyAllowanceRequest ga;
  ga.set_name("subsidyPools/voucher/allowances/lab");
  *ga.mutable_time() = ToProto(Local(kY, 12, 1));
  auto allowance = billing_->GetSubsidyAllowance(Admin(), ga);
  ASSERT_TRUE(allowance.ok()) << allowance.status();
  EXPECT_EQ(allowance->remaining().amount_minor(), 50000 - 3000);
}

// A CLOSED lease of the year whose billing stays (its deposit charged,
// released, never invoiced): the lease stays, and its booking, so the
// staying charge and postings never name a lease that is gone.
TEST_F(BillingArchiveTest, ALeaseAStayingChargeNamesStaysWithItsBooking) {
  const int p = bk::keys::Partition("i1");
  clock_.Set(Local(kY, 3, 1));
  const std::string id = LeaseOf(*this, *store_, clock_, Local(kY, 4, 1, 0), bv1::Lease::CLOSED);
  bv1::Lease lease;
  lease.set_name("leases/" + id);
  lease.set_booking("bookings/" + id);
  lease.set_instrument("instruments/i1");
  lease.set_instrument_owner("organizations/owner");
  lease.set_lessee_organization("organizations/lab");
  lease.set_contact_user("users/ana");
  lease.set_payer_class(labshare::type::v1::MEMBER);
  *lease.mutable_term()->mutable_start_time() = ToProto(Local(kY, 4, 1, 0));
  *lease.mutable_term()->mutable_end_time() = ToProto(Local(kY, 5, 1, 0));
  lease.mutable_contract()->set_rate_basis(bv1::LeaseContract::MONTHLY);
  *lease.mutable_contract()->mutable_rate() = bl::MakeMoney("CNY", 100000);
  *lease.mutable_contract()->mutable_deposit() = bl::MakeMoney("CNY", 50000);
  *lease.mutable_handover()->mutable_handover_time() = ToProto(Local(kY, 4, 1, 0));
  auto apply = [&](const std::string& event_id, auto set) {
    bv1::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    set(e);
    absl::Status st = billing_->ApplyBookingEvent(StreamEvent{absl::StrCat(absl::ToUnixMillis(clock_.Now()), "-0"),
                                                              "labshare.booking.v1.BookingEvent",
                                                              e.SerializeAsString()});
    EXPECT_TRUE(st.ok()) << st;
  };
  clock_.Set(Local(kY, 4, 1, 1));
  lease.set_state(bv1::Lease::HANDED_OVER);
  apply("ev-handover", [&](bv1::BookingEvent& e) { *e.mutable_lease_handed_over()->mutable_lease() = lease; });
  clock_.Set(Local(kY, 5, 2));
  lease.set_state(bv1::Lease::CLOSED);
  *lease.mutable_return_record()->mutable_return_time() = ToProto(Local(kY, 5, 1, 0));
  apply("ev-closed", [&](bv1::BookingEvent& e) { *e.mutable_lease_closed()->mutable_lease() = lease; });
  clock_.Set(Local(kY + 1, 2, 1));
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->billing_charges, 0);
  EXPECT_EQ(done->billing_charges_kept, 1);  // the deposit: its line never invoiced
  EXPECT_EQ(done->leases, 0);
  EXPECT_EQ(done->leases_kept, 1);
  EXPECT_EQ(done->bookings, 0);
  EXPECT_EQ(done->bookings_kept, 1);
  EXPECT_TRUE(Exists(bk::keys::Lease(p, id)));
  EXPECT_TRUE(Exists(bk::keys::Booking(p, id)));
}

TEST_F(BillingArchiveTest, AProjectAStayingChargeNamesStays) {
  clock_.Set(Local(kY, 2, 1));
  ProjectOf(*store_, clock_, "p-billed", Local(kY, 3, 1, 0), Local(kY, 4, 1, 0));
  ProjectOf(*store_, clock_, "p-quiet", Local(kY, 3, 1, 0), Local(kY, 4, 1, 0));
  // A missed booking of p-billed in March: its charge is never invoiced,
  // so it stays in billing, and names the project.
  clock_.Set(Local(kY, 3, 5));
  const std::string charge = Missed("organizations/lab", Local(kY, 3, 2), "projects/p-billed");
  ASSERT_FALSE(charge.empty());
  clock_.Set(Local(kY + 1, 2, 1));
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->billing_charges, 0);
  EXPECT_EQ(done->billing_charges_kept, 1);
  EXPECT_EQ(done->projects, 1);
  EXPECT_EQ(done->projects_kept, 1);
  EXPECT_TRUE(Exists(bk::keys::Project("p-billed")));
  EXPECT_FALSE(Exists(bk::keys::Project("p-quiet")));
  EXPECT_TRUE(Exists(bk::keys::ProjectIdReservation("p-quiet")));
  blv1::GetChargeRequest g;
  g.set_name(charge);
  auto c = billing_->GetCharge(Admin(), g);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->project(), "projects/p-billed");
}

// A project's charge archived with it, then corrected between the export
// and the removal: billing keeps the charge's group whole, so the project
// it names stays too (counted as changed), also on a rerun.
TEST_F(BillingArchiveTest, AProjectWhoseChargeIsCorrectedAfterTheExportStays) {
  clock_.Set(Local(kY, 2, 1));
  ProjectOf(*store_, clock_, "p-billed", Local(kY, 3, 1, 0), Local(kY, 4, 1, 0));
  clock_.Set(Local(kY, 3, 5));
  const std::string charge = Missed("organizations/lab", Local(kY, 3, 2), "projects/p-billed");
  ASSERT_FALSE(charge.empty());
  clock_.Set(Local(kY, 4, 2));
  for (const std::string org : {"lab", "lab2"}) {
    const blv1::Invoice inv = Issue("organizations/" + org, absl::StrCat(kY, "-03"), "issue-" + org);
    ASSERT_TRUE(MarkPaid(inv.name(), "pay-" + org).ok());
  }
  clock_.Set(Local(kY + 1, 2, 1));
  ArchiveOptions crash = Options(kY);
  crash.stop_for_testing = [](absl::string_view stage) {
    return stage == "manifest" ? absl::AbortedError("crash") : absl::OkStatus();
  };
  ASSERT_EQ(ArchiveYear(pool_.get(), crash).status().code(), absl::StatusCode::kAborted);
  auto reversed = Reverse(charge, "reverse-project");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->billing_charges, 1);  // exported, then kept whole
  EXPECT_GT(done->billing_changed_kept, 0);
  EXPECT_EQ(done->projects, 1);
  EXPECT_EQ(done->projects_changed_kept, 1);
  EXPECT_TRUE(Exists(bl::keys::Doc("charge", IdOf(charge))));
  EXPECT_TRUE(Exists(bk::keys::Project("p-billed")));
  EXPECT_TRUE(Exists(bk::keys::Budget(bk::keys::Partition("i1"), "p-billed")));
  auto again = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->projects_changed_kept, 1);
  EXPECT_TRUE(Exists(bk::keys::Project("p-billed")));
}

// A file rewritten with consistent checksums but a ledger line's amount
// changed: the checksums pass, the list's carried-forward totals do not
// (both verifiers).
TEST_F(BillingArchiveTest, AConsistentlyRehashedButUnbalancedFileIsBroken) {
  SeedBilling();
  ASSERT_TRUE(MarkPaid(inv_dec_.name(), "pay-dec").ok());
  auto done = ArchiveYear(pool_.get(), Options(kY));
  ASSERT_TRUE(done.ok()) << done.status();
  const std::string path = absl::StrCat(dir_, "/billing-", kY, ".jsonl");
  std::vector<std::string> lines = absl::StrSplit(ReadAll(path), '\n', absl::SkipEmpty());
  ASSERT_GT(lines.size(), 2u);
  size_t changed_at = 0;
  for (size_t i = 1; i + 1 < lines.size(); ++i) {
    if (!absl::StrContains(lines[i], "\"kind\":\"ledger_line\"")) continue;
    const size_t d = lines[i].find("\"document\":\"") + 12;
    const size_t e = lines[i].find('"', d);
    std::string doc;
    ASSERT_TRUE(absl::Base64Unescape(lines[i].substr(d, e - d), &doc));
    doc += "0";  // the amount times ten
    usage::Sha256 h;
    h.Update(doc);
    const size_t sd = lines[i].find("\"sha256\":\"") + 10;
    lines[i] = absl::StrCat(lines[i].substr(0, d), absl::Base64Escape(doc), lines[i].substr(e, sd - e), h.HexDigest(),
                            lines[i].substr(sd + 64));
    changed_at = i;
    break;
  }
  ASSERT_NE(changed_at, 0u);
  usage::Sha256 body;
  for (size_t i = 0; i + 1 < lines.size(); ++i) body.Update(lines[i] + "\n");
  const std::string& trailer = lines.back();
  const size_t ts = trailer.find("\"sha256\":\"") + 10;
  lines.back() = absl::StrCat(trailer.substr(0, ts), body.HexDigest(), trailer.substr(ts + 64));
  const std::string forged = absl::StrCat(absl::StrJoin(lines, "\n"), "\n");
  WriteAll(path, forged);
  // The list's carried_forward record (after its lines) no longer adds up.
  size_t cf = changed_at + 1;
  while (cf < lines.size() && !absl::StrContains(lines[cf], "\"kind\":\"carried_forward\"")) ++cf;
  ASSERT_LT(cf + 1, lines.size());
  FileVerdict v = VerifyBillingExport(forged);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.kind, "carried_forward_mismatch");
  EXPECT_EQ(v.broken_at, static_cast<int64_t>(cf + 1));
  CommandResult py = VerifyArchive(path);
  EXPECT_EQ(py.exit_code, 1) << py.output;
  EXPECT_EQ(py.output, absl::StrCat("BROKEN at line ", cf + 1, ": CARRIED_FORWARD_MISMATCH\n"));
}

}  // namespace
}  // namespace labshare::archive
