// Archival of a closed year (services/archive) on a real redis-server: the
// export verifies (here and with deploy/verify_audit.py), Redis shrinks by
// exactly the archived items, the remaining trail verifies from the anchor
// recorded at the cut (signed head included), a crash midway resumes, a
// rerun is a no-op, an open year / an unfinished booking / a consumer behind
// is refused, and a tampered archive is detected before anything is removed.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/token.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/archive/archive.h"
#include "services/booking/booking_lists.h"
#include "services/booking/redis_booking_store.h"
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
  std::string Book(absl::Time start, bv1::Booking::State state, const std::string& instrument = "i1",
                   const std::string& operator_org = "") {
    const int p = bk::keys::Partition(instrument);
    const std::string id = bk::NewBookingId(p);
    bv1::Booking b;
    b.set_name("bookings/" + id);
    b.set_instrument("instruments/" + instrument);
    b.set_instrument_owner("organizations/owner");
    b.set_mode(labshare::type::v1::ON_SITE);
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
  EXPECT_EQ(pool_->Command({"ZCARD", bk::keys::Calendar(p, "i1")})->integer, 4);  // ids_[5] and later_
  EXPECT_EQ(pool_->Command({"HLEN", bk::keys::CalendarEnds(p, "i1")})->integer, 4);
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

}  // namespace
}  // namespace labshare::archive
