// The audit trail on a real Redis: exactly-once appends, a gapless linked
// chain under concurrent replicas, the AUDIT_V1 hash, verification of
// tampering, listing, and the JSONL export checked by deploy/verify_audit.py.
#include "services/usage/audit_chain.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "labshare/usage/v1/usage_events.pb.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

namespace labshare::usage {
namespace {

namespace v1 = labshare::usage::v1;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

// ------------------------------------------------------------ events

labshare::type::v1::EventHeader Header(const std::string& event_id, const std::string& actor = "users/u1",
                                      const std::string& request_id = "") {
  labshare::type::v1::EventHeader h;
  h.set_event_id(event_id);
  *h.mutable_event_time() = ToProto(absl::FromUnixSeconds(1790000000) + absl::Milliseconds(250));
  h.set_actor(actor);
  h.set_actor_organization("organizations/o1");
  h.set_request_id(request_id);
  return h;
}

StreamEvent BookingCreated(const std::string& event_id, const std::string& booking = "bookings/b1",
                           const std::string& actor = "users/u1", const std::string& request_id = "") {
  labshare::booking::v1::BookingEvent e;
  *e.mutable_header() = Header(event_id, actor, request_id);
  auto* b = e.mutable_booking_created()->mutable_booking();
  b->set_name(booking);
  b->set_instrument("instruments/i7");
  b->set_user("users/u1");
  b->set_payer_organization("organizations/o1");
  return {"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
}

StreamEvent InstrumentChanged(const std::string& event_id, const std::string& instrument = "instruments/i7") {
  labshare::inventory::v1::InventoryEvent e;
  *e.mutable_header() = Header(event_id, "users/admin");
  auto* c = e.mutable_instrument_changed();
  c->set_kind(labshare::inventory::v1::CREATED);
  c->mutable_instrument()->set_name(instrument);
  c->mutable_instrument()->set_owner_organization("organizations/o2");
  c->mutable_instrument()->set_display_name("NMR 600 MHz / cryoprobe");  // not a resource name
  return {"1-0", "labshare.inventory.v1.InventoryEvent", e.SerializeAsString()};
}

StreamEvent ChargePosted(const std::string& event_id) {
  labshare::billing::v1::BillingEvent e;
  *e.mutable_header() = Header(event_id, "services/billing");
  e.mutable_charge_posted()->mutable_charge()->set_name("charges/c1");
  return {"1-0", "labshare.billing.v1.BillingEvent", e.SerializeAsString()};
}

StreamEvent ThresholdsChanged(const std::string& event_id, const std::string& actor = "users/admin",
                              const std::string& request_id = "r-1") {
  v1::UsageEvent e;
  *e.mutable_header() = Header(event_id, actor, request_id);
  e.mutable_thresholds_changed();
  return {"1-0", "labshare.usage.v1.UsageEvent", e.SerializeAsString()};
}

StreamEvent SettingsChanged(const std::string& event_id, const std::string& settings) {
  labshare::notify::v1::NotifyEvent e;
  *e.mutable_header() = Header(event_id, "services/notify");
  auto* c = e.mutable_notification_settings_changed();
  c->mutable_settings()->set_name(settings);
  c->mutable_settings()->set_language("en");
  c->mutable_previous()->set_name(settings);
  return {"1-0", "labshare.notify.v1.NotifyEvent", e.SerializeAsString()};
}

std::string Sha256Bytes(const std::string& in) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(in.data()), in.size(), d);
  return std::string(reinterpret_cast<const char*>(d), sizeof(d));
}

std::string Hex(const std::string& b) { return absl::BytesToHexString(b); }

// ------------------------------------------------------------ the verifier

std::string RepoRoot() {
  std::string file = __FILE__;
  const std::string suffix = "tests/usage/audit_chain_test.cc";
  if (absl::EndsWith(file, suffix)) return file.substr(0, file.size() - suffix.size());
  return "./";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult RunVerifier(const std::string& file, const std::string& extra = "") {
  const std::string cmd = absl::StrCat("/usr/bin/python3 '", RepoRoot(), "deploy/verify_audit.py' '", file,
                                       "' ", extra, " 2>&1");
  CommandResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

class AuditChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::SharedRedisServer();
    ASSERT_NE(server_, nullptr);
    testing::FlushAll(*server_);
    pool_ = std::make_unique<RedisPool>(server_->options());
    chain_ = NewChain(pool_.get());
  }

  std::unique_ptr<AuditChain> NewChain(RedisPool* pool, std::function<void()> hook = nullptr) {
    AuditChainOptions o;
    o.clock = &clock_;
    o.batch_size = 4;  // several round trips even for short chains
    o.before_commit_for_testing = std::move(hook);
    return std::make_unique<AuditChain>(pool, testing::TestPageTokens(), std::move(o));
  }

  // As labshare-archive: the base (at entries[upto - 1]) first, then the
  // entries after *archived up to `upto` (their index members left behind,
  // as after a crash midway).
  void ArchiveTo(const std::vector<v1::AuditEntry>& entries, int64_t* archived, int64_t upto) {
    ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Base(), "seq", std::to_string(upto), "hash",
                                entries[static_cast<size_t>(upto - 1)].hash()})
                    .ok());
    for (int64_t s = *archived + 1; s <= upto; ++s) ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(s)}).ok());
    *archived = upto;
  }

  // Seven entries with entry 1 archived, and a chain (export batches of 2)
  // whose calls, right after they read the base, archive up to `next` when
  // it is set (once): labshare-archive running during the call.
  struct Racing {
    std::vector<v1::AuditEntry> entries;
    int64_t archived = 0;
    int64_t next = 0;
    std::unique_ptr<AuditChain> chain;
  };
  std::unique_ptr<Racing> SevenEntriesArchivedDuringCalls(std::optional<int> batch_size) {
    auto r = std::make_unique<Racing>();
    r->entries = AppendFive();
    r->entries.push_back(MustAppend("inventory", InstrumentChanged("inv-6")));
    r->entries.push_back(MustAppend("inventory", InstrumentChanged("inv-7")));
    ArchiveTo(r->entries, &r->archived, 1);
    AuditChainOptions o;
    o.clock = &clock_;
    if (batch_size) o.batch_size = *batch_size;
    o.export_batch_size = 2;
    o.after_base_for_testing = [this, racing = r.get()] {
      if (racing->next > 0) ArchiveTo(racing->entries, &racing->archived, std::exchange(racing->next, 0));
    };
    r->chain = std::make_unique<AuditChain>(pool_.get(), testing::TestPageTokens(), std::move(o));
    return r;
  }

  v1::AuditEntry MustAppend(const std::string& source, const StreamEvent& e) {
    absl::StatusOr<AppendResult> r = chain_->Append(source, e);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    EXPECT_TRUE(r->appended);
    clock_.Advance(absl::Seconds(1));
    return r->entry;
  }

  // Five events of four services.
  std::vector<v1::AuditEntry> AppendFive() {
    return {MustAppend("inventory", InstrumentChanged("inv-1")),
            MustAppend("booking", BookingCreated("bk-1", "bookings/b1", "users/u1", "req-1")),
            MustAppend("billing", ChargePosted("bl-1")),
            MustAppend("booking", BookingCreated("bk-2", "bookings/b2", "users/u2", "req-2")),
            MustAppend("usage", ThresholdsChanged("us-1"))};
  }

  std::string StoredBytes(int64_t seq) {
    auto v = pool_->Command({"GET", audit_keys::Entry(seq)});
    EXPECT_TRUE(v.ok());
    return v.ok() ? v->str : "";
  }
  void Store(int64_t seq, const std::string& bytes) {
    ASSERT_TRUE(pool_->Command({"SET", audit_keys::Entry(seq), bytes}).ok());
  }
  v1::AuditEntry Stored(int64_t seq) {
    v1::AuditEntry e;
    EXPECT_TRUE(e.ParseFromString(StoredBytes(seq)));
    return e;
  }

  std::string WriteFile(const std::string& name, const std::string& content) {
    const std::string path = absl::StrCat(::testing::TempDir(), "/audit_", getpid(), "_", name);
    std::ofstream(path, std::ios::binary) << content;
    files_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const auto& f : files_) std::remove(f.c_str());
  }

  testing::RedisServer* server_ = nullptr;
  FakeClock clock_{absl::FromUnixSeconds(1798761600)};
  Principal auditor_{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<AuditChain> chain_;
  std::vector<std::string> files_;
};

// ------------------------------------------------------------ appending

TEST_F(AuditChainTest, EventsOfSeveralServicesFormAGaplessLinkedChain) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  ASSERT_EQ(entries.size(), 5u);
  std::string prev(32, '\0');
  for (size_t i = 0; i < entries.size(); ++i) {
    const v1::AuditEntry& e = entries[i];
    EXPECT_EQ(e.sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(e.name(), absl::StrCat("auditEntries/", i + 1));
    EXPECT_EQ(e.previous_hash(), prev);
    EXPECT_EQ(e.hash().size(), 32u);
    EXPECT_EQ(e.hash(), AuditHashV1(e));
    EXPECT_EQ(e.algorithm(), v1::HASH_ALGORITHM_SHA256);
    // What is stored is what Append returned.
    EXPECT_EQ(Stored(e.sequence()).SerializeAsString(), e.SerializeAsString());
    prev = e.hash();
  }
  EXPECT_EQ(entries[0].source_service(), "inventory");
  EXPECT_EQ(entries[0].event_type(), "labshare.inventory.v1.InstrumentChanged");
  EXPECT_EQ(entries[0].payload_type(), "labshare.inventory.v1.InventoryEvent");
  EXPECT_THAT(entries[0].resources(), ElementsAre("instruments/i7", "organizations/o2"));
  EXPECT_EQ(entries[1].event_type(), "labshare.booking.v1.BookingCreated");
  EXPECT_EQ(entries[1].event_id(), "bk-1");
  EXPECT_EQ(entries[1].request_id(), "req-1");
  EXPECT_EQ(entries[1].actor(), "users/u1");
  EXPECT_EQ(entries[1].actor_organization(), "organizations/o1");
  EXPECT_EQ(entries[1].payload(), BookingCreated("bk-1", "bookings/b1", "users/u1", "req-1").payload);
  EXPECT_EQ(FromProto(entries[1].event_time()), absl::FromUnixSeconds(1790000000) + absl::Milliseconds(250));
  EXPECT_EQ(FromProto(entries[1].append_time()), absl::FromUnixSeconds(1798761601));
  EXPECT_THAT(entries[1].resources(),
              UnorderedElementsAre("bookings/b1", "instruments/i7", "users/u1", "organizations/o1"));
  EXPECT_EQ(entries[2].event_type(), "labshare.billing.v1.ChargePosted");
  EXPECT_THAT(entries[2].resources(), ElementsAre("charges/c1"));
  EXPECT_EQ(entries[4].event_type(), "labshare.usage.v1.ThresholdsChanged");

  auto head = chain_->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence(), 5);
  EXPECT_EQ(head->hash(), entries[4].hash());
  EXPECT_EQ(FromProto(head->append_time()), FromProto(entries[4].append_time()));

  auto verified = chain_->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->result(), v1::VERIFIED);
  EXPECT_EQ(verified->entries_checked(), 5);
  EXPECT_EQ(verified->start_sequence(), 1);
  EXPECT_EQ(verified->end_sequence(), 6);
  EXPECT_EQ(verified->head().hash(), entries[4].hash());
  EXPECT_FALSE(verified->has_first_break());
  EXPECT_EQ(FromProto(verified->verify_time()), clock_.Now());
}

// The batch committed, then the stored entry of an event appended before
// cannot be read: only that event answers the error; the appended one is OK
// (it is in the chain).
TEST_F(AuditChainTest, BatchCommittedAnswersItsNewEntriesEvenWhenAnOldEntryCannotBeRead) {
  const v1::AuditEntry old = MustAppend("booking", BookingCreated("e1"));
  auto chain = NewChain(pool_.get(), [&] {
    ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(old.sequence())}).ok());
  });
  auto out = chain->AppendBatch("booking", {BookingCreated("e1"), BookingCreated("e2", "bookings/b2")});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[0].ok());
  ASSERT_TRUE(out[1].ok()) << out[1].status();
  EXPECT_TRUE(out[1]->appended);
  EXPECT_EQ(out[1]->entry.sequence(), old.sequence() + 1);
}

TEST_F(AuditChainTest, RedeliveredEventIsStoredOnce) {
  const v1::AuditEntry first = MustAppend("booking", BookingCreated("bk-1"));
  MustAppend("billing", ChargePosted("bl-1"));

  auto again = chain_->Append("booking", BookingCreated("bk-1"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->appended);
  EXPECT_EQ(again->entry.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(chain_->Head()->sequence(), 2);

  // The key is (source service, event id): another service's event with the
  // same id is another event.
  auto other = chain_->Append("inventory", InstrumentChanged("bk-1"));
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->appended);
  EXPECT_EQ(other->entry.sequence(), 3);
  EXPECT_EQ(pool_->Command({"HLEN", audit_keys::Applied()})->integer, 3);
}

TEST_F(AuditChainTest, LostCompareAndSetIsRetriedOnTheNewHead) {
  // Replica B appends between A's read of the head and A's commit.
  RedisPool pool_b(server_->options());
  std::unique_ptr<AuditChain> b = NewChain(&pool_b);
  int calls = 0;
  std::unique_ptr<AuditChain> a = NewChain(pool_.get(), [&] {
    if (calls++ == 0) {
      ASSERT_TRUE(b->Append("billing", ChargePosted("bl-1"))->appended);
    }
  });
  auto r = a->Append("booking", BookingCreated("bk-1"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->appended);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(r->entry.sequence(), 2);
  EXPECT_EQ(r->entry.previous_hash(), Stored(1).hash());
  EXPECT_EQ(Stored(1).event_id(), "bl-1");
  EXPECT_EQ(chain_->Verify(0, 0, {})->result(), v1::VERIFIED);
}

TEST_F(AuditChainTest, SameEventAppendedByAnotherReplicaMeanwhileIsNotAppendedAgain) {
  RedisPool pool_b(server_->options());
  std::unique_ptr<AuditChain> b = NewChain(&pool_b);
  std::unique_ptr<AuditChain> a = NewChain(pool_.get(), [&] {
    ASSERT_TRUE(b->Append("booking", BookingCreated("bk-1"))->appended);
  });
  auto r = a->Append("booking", BookingCreated("bk-1"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->appended);
  EXPECT_EQ(r->entry.sequence(), 1);
  EXPECT_EQ(chain_->Head()->sequence(), 1);
}

TEST_F(AuditChainTest, ConcurrentAppendsFromTwoReplicasGiveOneGaplessChain) {
  RedisPool pool_b(server_->options());
  std::unique_ptr<AuditChain> replicas[2] = {NewChain(pool_.get()), NewChain(&pool_b)};
  constexpr int kThreads = 8;
  constexpr int kEventsPerGroup = 30;
  // Threads t and t + 4 (one on each replica) get the same events, like a
  // redelivery to another consumer: each event must be stored once.
  std::atomic<int> appended{0}, duplicates{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      AuditChain* chain = replicas[t / 4].get();
      const int group = t % 4;
      for (int i = 0; i < kEventsPerGroup; ++i) {
        const std::string id = absl::StrCat("g", group, "-e", i);
        absl::StatusOr<AppendResult> r =
            group % 2 == 0 ? chain->Append("booking", BookingCreated(id, absl::StrCat("bookings/", id)))
                           : chain->Append("inventory", InstrumentChanged(id));
        if (!r.ok()) {
          ++failures;
        } else if (r->appended) {
          ++appended;
        } else {
          ++duplicates;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  constexpr int kDistinct = 4 * kEventsPerGroup;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(appended.load(), kDistinct);
  EXPECT_EQ(duplicates.load(), kDistinct);
  ASSERT_EQ(chain_->Head()->sequence(), kDistinct);

  std::multiset<std::string> seen;
  std::string prev(32, '\0');
  for (int64_t s = 1; s <= kDistinct; ++s) {
    v1::AuditEntry e = Stored(s);
    EXPECT_EQ(e.sequence(), s);
    EXPECT_EQ(e.previous_hash(), prev);
    prev = e.hash();
    seen.insert(absl::StrCat(e.source_service(), "|", e.event_id()));
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kDistinct));
  for (int g = 0; g < 4; ++g) {
    for (int i = 0; i < kEventsPerGroup; ++i) {
      EXPECT_EQ(seen.count(absl::StrCat(g % 2 == 0 ? "booking" : "inventory", "|g", g, "-e", i)), 1u);
    }
  }
  EXPECT_FALSE(pool_->Command({"EXISTS", audit_keys::Entry(kDistinct + 1)})->integer);
  auto verified = chain_->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->result(), v1::VERIFIED);
  EXPECT_EQ(verified->entries_checked(), kDistinct);
}

TEST_F(AuditChainTest, UndecodableEventsAndBadSourcesAreRejected) {
  StreamEvent unknown{"1-0", "labshare.nope.v1.Event", "x"};
  EXPECT_EQ(ErrorReason(chain_->Append("booking", unknown).status()), "UNDECODABLE_EVENT");
  StreamEvent garbage{"1-0", "labshare.booking.v1.BookingEvent", "\xff\xff\xff"};
  EXPECT_EQ(ErrorReason(chain_->Append("booking", garbage).status()), "UNDECODABLE_EVENT");
  StreamEvent no_id = BookingCreated("");
  EXPECT_EQ(ErrorReason(chain_->Append("booking", no_id).status()), "UNDECODABLE_EVENT");
  StreamEvent no_header{"1-0", "labshare.type.v1.Money", ""};
  EXPECT_EQ(ErrorReason(chain_->Append("booking", no_header).status()), "UNDECODABLE_EVENT");
  auto bad_source = chain_->Append("Booking|x", BookingCreated("bk-1"));
  EXPECT_EQ(bad_source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(chain_->Head()->sequence(), 0);
}

TEST(AuditSourceTest, StreamsMapToTheirServices) {
  EXPECT_EQ(AuditSourceForStream("{inventory}:outbox"), "inventory");
  EXPECT_EQ(AuditSourceForStream("{bk:0}:outbox"), "booking");
  EXPECT_EQ(AuditSourceForStream("{bk:15}:outbox"), "booking");
  EXPECT_EQ(AuditSourceForStream("{booking}:outbox"), "booking");
  EXPECT_EQ(AuditSourceForStream("{billing}:outbox"), "billing");
  EXPECT_EQ(AuditSourceForStream("{usage}:outbox"), "usage");
  EXPECT_EQ(AuditSourceForStream("{notify}:outbox"), "notify");
  EXPECT_EQ(AuditSourceForStream("{bk:x}:outbox"), "");
  EXPECT_EQ(AuditSourceForStream("other"), "");
}

// ------------------------------------------------------------ the hash

// hash(1) built by hand from the AUDIT_V1 comment, for a payload encoded by
// hand; the hex constant was computed independently with Python's hashlib.
TEST_F(AuditChainTest, KnownAnswerForTheFirstEntry) {
  // BookingEvent{header{event_id:"evt-1", event_time{seconds:1700000000,
  // nanos:5}}, booking_created{}}.
  const std::string payload = absl::HexStringToBytes("0a110a056576742d3112080880e2cfaa0610051200");
  clock_.Set(absl::FromUnixSeconds(1798761600) + absl::Nanoseconds(123456789));
  auto r = chain_->Append("booking", {"1-0", "labshare.booking.v1.BookingEvent", payload});
  ASSERT_TRUE(r.ok()) << r.status();

  auto be32 = [](uint32_t v) {
    std::string s;
    for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return s;
  };
  auto be64 = [](uint64_t v) {
    std::string s;
    for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return s;
  };
  auto str = [&](const std::string& s) { return be32(static_cast<uint32_t>(s.size())) + s; };
  const std::string input = std::string("LABSHARE-AUDIT-V1") + be64(1) + str("booking") + str("evt-1") +
                            str("labshare.booking.v1.BookingCreated") + str("labshare.booking.v1.BookingEvent") +
                            be64(1700000000) + be32(5) + be64(1798761600) + be32(123456789) + str(payload) +
                            std::string(32, '\0');
  EXPECT_EQ(AuditHashInput(r->entry), input);
  EXPECT_EQ(r->entry.hash(), Sha256Bytes(input));
  EXPECT_EQ(Hex(r->entry.hash()), "2f96fb342fe18b75756400630d5cdc01098cc26869d8855346a8385970cb1941");
  EXPECT_EQ(r->entry.payload(), payload);  // stored as received, not re-serialized
}

// ------------------------------------------------------------ verification

TEST_F(AuditChainTest, RewrittenPayloadBytesAreAHashMismatchAtThatEntry) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  std::string raw = StoredBytes(3);
  const size_t at = raw.find(entries[2].payload());
  ASSERT_NE(at, std::string::npos);
  char& last = raw[at + entries[2].payload().size() - 1];  // last payload byte, in place
  last = static_cast<char>(last ^ 0x01);
  Store(3, raw);

  auto r = chain_->Verify(0, 0, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->result(), v1::BROKEN);
  EXPECT_EQ(r->first_break().kind(), v1::HASH_MISMATCH);
  EXPECT_EQ(r->first_break().sequence(), 3);
  EXPECT_EQ(r->first_break().expected_hash(), AuditHashV1(Stored(3)));
  EXPECT_EQ(r->first_break().actual_hash(), entries[2].hash());
  EXPECT_NE(r->first_break().expected_hash(), r->first_break().actual_hash());
  EXPECT_EQ(r->entries_checked(), 2);

  // A range that starts after it trusts the stored hash before it.
  EXPECT_EQ(chain_->Verify(4, 0, {})->result(), v1::VERIFIED);
  EXPECT_EQ(chain_->Verify(1, 3, {})->result(), v1::VERIFIED);
}

TEST_F(AuditChainTest, ReplacedEntryWithConsistentHashIsALinkMismatchAtTheNext) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  v1::AuditEntry forged = Stored(3);
  forged.set_payload(ChargePosted("bl-forged").payload);
  forged.set_event_id("bl-forged");
  forged.set_hash(AuditHashV1(forged));
  Store(3, forged.SerializeAsString());

  auto r = chain_->Verify(0, 0, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->result(), v1::BROKEN);
  EXPECT_EQ(r->first_break().kind(), v1::LINK_MISMATCH);
  EXPECT_EQ(r->first_break().sequence(), 4);
  EXPECT_EQ(r->first_break().expected_hash(), forged.hash());
  EXPECT_EQ(r->first_break().actual_hash(), entries[2].hash());
  EXPECT_EQ(r->entries_checked(), 3);

  // Rewriting every later entry consistently too: the head still holds the
  // old last hash; moved as well, the rewrite is caught only by an anchor
  // (on this unsigned chain; a signed one by the head's signature too).
  std::string prev = forged.hash();
  for (int64_t s = 4; s <= 5; ++s) {
    v1::AuditEntry e = Stored(s);
    e.set_previous_hash(prev);
    e.set_hash(AuditHashV1(e));
    Store(s, e.SerializeAsString());
    prev = e.hash();
  }
  EXPECT_EQ(chain_->Verify(0, 0, {})->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Head(), "hash", prev}).ok());
  EXPECT_EQ(chain_->Verify(0, 0, {})->result(), v1::VERIFIED);
  v1::AuditAnchor kept;
  kept.set_sequence(5);
  kept.set_hash(entries[4].hash());
  auto anchored = chain_->Verify(0, 0, {kept});
  ASSERT_TRUE(anchored.ok());
  EXPECT_EQ(anchored->first_break().kind(), v1::ANCHOR_MISMATCH);
  EXPECT_EQ(anchored->first_break().sequence(), 5);
}

TEST_F(AuditChainTest, AnchorsAreCheckedAgainstStoredHashes) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  v1::AuditAnchor good;
  good.set_sequence(2);
  good.set_hash(entries[1].hash());
  v1::AuditAnchor wrong;
  wrong.set_sequence(4);
  wrong.set_hash(std::string(32, 'x'));

  auto ok = chain_->Verify(3, 5, {good});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->result(), v1::VERIFIED);
  EXPECT_EQ(ok->anchors_checked(), 1);
  EXPECT_EQ(ok->entries_checked(), 2);

  auto broken = chain_->Verify(0, 0, {wrong, good});
  ASSERT_TRUE(broken.ok()) << broken.status();
  EXPECT_EQ(broken->result(), v1::BROKEN);
  EXPECT_EQ(broken->first_break().kind(), v1::ANCHOR_MISMATCH);
  EXPECT_EQ(broken->first_break().sequence(), 4);
  EXPECT_EQ(broken->first_break().expected_hash(), wrong.hash());
  EXPECT_EQ(broken->first_break().actual_hash(), entries[3].hash());
  EXPECT_EQ(broken->anchors_checked(), 1);  // anchor 2 passed, in sequence order
  EXPECT_EQ(broken->entries_checked(), 5);

  v1::AuditAnchor short_hash = good;
  short_hash.set_hash("abc");
  EXPECT_EQ(chain_->Verify(0, 0, {short_hash}).status().code(), absl::StatusCode::kInvalidArgument);
  v1::AuditAnchor beyond = good;
  beyond.set_sequence(6);
  EXPECT_EQ(ErrorReason(chain_->Verify(0, 0, {beyond}).status()), "SEQUENCE_OUT_OF_RANGE");
}

TEST_F(AuditChainTest, MissingEntriesAndUnknownAlgorithmsAreBreaks) {
  AppendFive();
  v1::AuditEntry e = Stored(4);
  e.set_algorithm(v1::HASH_ALGORITHM_UNSPECIFIED);
  Store(4, e.SerializeAsString());
  ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(2)}).ok());

  auto r = chain_->Verify(0, 0, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first_break().kind(), v1::SEQUENCE_GAP);
  EXPECT_EQ(r->first_break().sequence(), 2);
  EXPECT_TRUE(r->first_break().expected_hash().empty());
  auto later = chain_->Verify(3, 0, {});
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->first_break().kind(), v1::UNKNOWN_ALGORITHM);
  EXPECT_EQ(later->first_break().sequence(), 4);
  EXPECT_EQ(later->entries_checked(), 1);
}

// usage.proto, VerifyAuditChainResponse: entries_checked counts the entries
// that passed before the first break (not the broken one); anchors are
// checked only after the range, and anchors_checked counts those that
// matched before a mismatching one (a single mismatching anchor: 0);
// BreakKind SEQUENCE_GAP covers an entry stored as bytes that do not parse.
TEST_F(AuditChainTest, VerifyCountsWhatPassedBeforeTheFirstBreak) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  v1::AuditAnchor good;
  good.set_sequence(2);
  good.set_hash(entries[1].hash());
  v1::AuditAnchor bad;
  bad.set_sequence(3);
  bad.set_hash(std::string(32, 'x'));

  auto single = chain_->Verify(0, 0, {bad});
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->first_break().kind(), v1::ANCHOR_MISMATCH);
  EXPECT_EQ(single->anchors_checked(), 0);
  EXPECT_EQ(single->entries_checked(), 5);

  const std::string original = StoredBytes(4);
  Store(4, "\xff\xff\xff");
  auto unreadable = chain_->Verify(2, 0, {good});
  ASSERT_TRUE(unreadable.ok()) << unreadable.status();
  EXPECT_EQ(unreadable->result(), v1::BROKEN);
  EXPECT_EQ(unreadable->first_break().kind(), v1::SEQUENCE_GAP);
  EXPECT_EQ(unreadable->first_break().sequence(), 4);
  EXPECT_TRUE(unreadable->first_break().expected_hash().empty());
  EXPECT_TRUE(unreadable->first_break().actual_hash().empty());
  EXPECT_EQ(unreadable->entries_checked(), 2);  // 2 and 3; not 4
  EXPECT_EQ(unreadable->anchors_checked(), 0);  // the good anchor is not reached

  v1::AuditEntry tampered = entries[3];
  tampered.set_event_type("labshare.booking.v1.BookingCancelled");
  Store(4, tampered.SerializeAsString());
  auto mismatch = chain_->Verify(1, 6, {good});
  ASSERT_TRUE(mismatch.ok()) << mismatch.status();
  EXPECT_EQ(mismatch->first_break().kind(), v1::HASH_MISMATCH);
  EXPECT_EQ(mismatch->entries_checked(), 3);
  EXPECT_EQ(mismatch->anchors_checked(), 0);
  Store(4, original);
}

// An empty chain has no first entry: start 0 is beyond the head (0), as
// usage.proto says for VerifyAuditChain and ExportAuditTrail.
TEST_F(AuditChainTest, StartZeroOnAnEmptyChainIsOutOfRange) {
  EXPECT_EQ(ErrorReason(chain_->Verify(0, 0, {}).status()), "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(0, 0).status()), "SEQUENCE_OUT_OF_RANGE");
}

TEST_F(AuditChainTest, VerifyRangeValidation) {
  AppendFive();
  EXPECT_EQ(chain_->Verify(3, 3, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(chain_->Verify(-1, 0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(chain_->Verify(6, 0, {}).status().code(), absl::StatusCode::kOutOfRange);
  auto clamped = chain_->Verify(2, 100, {});
  ASSERT_TRUE(clamped.ok());
  EXPECT_EQ(clamped->end_sequence(), 6);
  EXPECT_EQ(clamped->entries_checked(), 4);
  v1::VerifyAuditChainRequest req;
  req.set_start_sequence(2);
  req.set_end_sequence(4);
  EXPECT_EQ(chain_->Verify(req)->entries_checked(), 2);
}

// usage.proto, VerifyAuditChain / ExportAuditTrail: "Errors, in this order":
// end <= start on the request's own values (both nonzero) before the
// archived-start OUT_OF_RANGE; start 0 on a chain with nothing after the
// archived entries is OUT_OF_RANGE whatever the end; start 0 with an end at
// or before the first stored entry is INVALID_FIELD after that.
TEST_F(AuditChainTest, RangeErrorsComeInTheDocumentedOrder) {
  // Start 0 on an empty chain, with an end: no first entry to start at.
  EXPECT_EQ(ErrorReason(chain_->Verify(0, 1, {}).status()), "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(0, 1).status()), "SEQUENCE_OUT_OF_RANGE");
  // The request's own end <= start, even on an empty chain.
  EXPECT_EQ(ErrorReason(chain_->Verify(4, 2, {}).status()), "INVALID_FIELD");

  std::vector<v1::AuditEntry> entries = AppendFive();
  // Entries up to 2 archived (labshare-archive's base).
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Base(), "seq", "2", "hash", entries[1].hash()}).ok());
  for (auto [start, end] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 1}, {2, 2}}) {
    SCOPED_TRACE(absl::StrCat(start, "..", end));
    absl::Status v = chain_->Verify(start, end, {}).status();
    EXPECT_EQ(v.code(), absl::StatusCode::kInvalidArgument) << v;
    EXPECT_EQ(ErrorReason(v), "INVALID_FIELD");
    EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(start, end).status()), "INVALID_FIELD");
  }
  // A valid range starting in the archived part.
  EXPECT_EQ(ErrorReason(chain_->Verify(1, 4, {}).status()), "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(2, 0).status()), "SEQUENCE_OUT_OF_RANGE");
  // Start 0 is 3: an end at or before it.
  EXPECT_EQ(ErrorReason(chain_->Verify(0, 3, {}).status()), "INVALID_FIELD");
  EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(0, 2).status()), "INVALID_FIELD");
  auto ok = chain_->Verify(0, 4, {});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->start_sequence(), 3);
  EXPECT_EQ(ok->entries_checked(), 1);

  // Everything archived: start 0 is beyond the head whatever the end.
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Base(), "seq", "5", "hash", entries[4].hash()}).ok());
  EXPECT_EQ(ErrorReason(chain_->Verify(0, 3, {}).status()), "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(0, 6).status()), "SEQUENCE_OUT_OF_RANGE");
}

// VerifyAuditChain: "INVALID_FIELD: a negative sequence, an anchor sequence
// below 1 or hash not 32 bytes, end <= start when both are nonzero", in
// that order (the field violation names the first).
TEST_F(AuditChainTest, VerifyNamesANegativeSequenceBeforeAnAnchorBeforeTheRange) {
  AppendFive();
  v1::AuditAnchor zero;
  zero.set_sequence(0);
  zero.set_hash(std::string(32, 'x'));
  v1::AuditAnchor short_hash;
  short_hash.set_sequence(2);
  short_hash.set_hash("abc");
  auto field = [](const absl::Status& s) {
    const auto violations = FieldViolationsOf(s);
    return violations.empty() ? std::string("(none)") : violations[0].field;
  };
  for (const auto& anchor : {zero, short_hash}) {
    absl::Status s = chain_->Verify(-1, 0, {anchor}).status();
    EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << s;
    EXPECT_EQ(field(s), "start_sequence");
    EXPECT_EQ(field(chain_->Verify(0, -1, {anchor}).status()), "end_sequence");
  }
  EXPECT_EQ(field(chain_->Verify(4, 2, {zero}).status()), "anchors[0].sequence");
  EXPECT_EQ(field(chain_->Verify(4, 2, {short_hash}).status()), "anchors[0].hash");
  EXPECT_EQ(field(chain_->Verify(4, 2, {}).status()), "end_sequence");
}

// BreakKind HEAD_SIGNATURE_INVALID: "the head's hash is not the hash of the
// last entry" needs no key, so an unsigned chain (--audit_unsigned) reports
// it too; only the signature is not checked.
TEST_F(AuditChainTest, AnUnsignedHeadWhoseHashIsNotTheLastEntrysIsABreak) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  const std::string moved(32, 'x');
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Head(), "hash", moved}).ok());
  auto r = chain_->Verify(0, 0, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->result(), v1::BROKEN);
  EXPECT_EQ(r->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  EXPECT_EQ(r->first_break().sequence(), 5);
  EXPECT_EQ(r->first_break().expected_hash(), entries[4].hash());
  EXPECT_EQ(r->first_break().actual_hash(), moved);
  EXPECT_EQ(r->entries_checked(), 5);
  // Any end at or beyond head + 1 ends at the head; a range that stops
  // before it is not tied to the head.
  EXPECT_EQ(chain_->Verify(3, 100, {})->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  EXPECT_EQ(chain_->Verify(0, 5, {})->result(), v1::VERIFIED);
  // The head back on the last entry: verified, with no signature to check.
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Head(), "hash", entries[4].hash()}).ok());
  auto fine = chain_->Verify(0, 0, {});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->result(), v1::VERIFIED);
  EXPECT_TRUE(fine->head().signature().empty());
}

// VerifyAuditChain: "DEADLINE_EXCEEDED if the caller's deadline is too
// short for the range" (reason DEADLINE_EXCEEDED, types.proto), checked
// before each batch is read, after the request's own values and the range.
TEST_F(AuditChainTest, VerifyEndsWithDeadlineExceededOnceTheCallersDeadlinePassed) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  const absl::Time passed = absl::InfinitePast();
  absl::Status late = chain_->Verify(0, 0, {}, passed).status();
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  EXPECT_EQ(ErrorReason(late), "DEADLINE_EXCEEDED");
  v1::VerifyAuditChainRequest req;
  req.set_start_sequence(2);
  EXPECT_EQ(ErrorReason(chain_->Verify(req, passed).status()), "DEADLINE_EXCEEDED");
  EXPECT_EQ(ErrorReason(chain_->Verify(-1, 0, {}, passed).status()), "INVALID_FIELD");
  EXPECT_EQ(ErrorReason(chain_->Verify(9, 0, {}, passed).status()), "SEQUENCE_OUT_OF_RANGE");
  // A deadline not reached (or none): the answer as before.
  v1::AuditAnchor good;
  good.set_sequence(2);
  good.set_hash(entries[1].hash());
  auto in_time = chain_->Verify(0, 0, {good}, absl::InfiniteFuture());
  ASSERT_TRUE(in_time.ok()) << in_time.status();
  EXPECT_EQ(in_time->result(), v1::VERIFIED);
  EXPECT_EQ(in_time->entries_checked(), 5);
  EXPECT_EQ(in_time->anchors_checked(), 1);
}

// AuditEntry.event_time: a header time that is no valid Timestamp (here a
// negative nanos) is stored and hashed as (0, 0), so the entry verifies
// online and offline (deploy/verify_audit.py packs nanos as u32).
TEST_F(AuditChainTest, AnInvalidEventTimeIsTakenAsMissing) {
  MustAppend("inventory", InstrumentChanged("inv-1"));
  for (auto [seconds, nanos] : std::vector<std::pair<int64_t, int32_t>>{
           {1790000000, -5}, {1790000000, 1000000000}, {-62135596801, 0}, {253402300800, 0}}) {
    SCOPED_TRACE(absl::StrCat(seconds, "/", nanos));
    labshare::billing::v1::BillingEvent e;
    *e.mutable_header() = Header(absl::StrCat("bad-time-", seconds, "-", nanos), "services/billing");
    e.mutable_header()->mutable_event_time()->set_seconds(seconds);
    e.mutable_header()->mutable_event_time()->set_nanos(nanos);
    e.mutable_charge_posted()->mutable_charge()->set_name("charges/c1");
    v1::AuditEntry entry = MustAppend("billing", {"1-0", "labshare.billing.v1.BillingEvent", e.SerializeAsString()});
    EXPECT_FALSE(entry.has_event_time());
    EXPECT_FALSE(Stored(entry.sequence()).has_event_time());
  }
  // A valid one is kept.
  EXPECT_EQ(Stored(1).event_time().nanos(), 250000000);
  auto v = chain_->Verify(0, 0, {});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->result(), v1::VERIFIED);
  EXPECT_EQ(v->entries_checked(), 5);
  auto file = chain_->ExportJsonlString(0, 0);
  ASSERT_TRUE(file.ok()) << file.status();
  CommandResult r = RunVerifier(WriteFile("bad_time.jsonl", *file));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// ------------------------------------------------------------ listing

std::vector<int64_t> Sequences(const v1::ListAuditEntriesResponse& r) {
  std::vector<int64_t> out;
  for (const auto& e : r.entries()) out.push_back(e.sequence());
  return out;
}

TEST_F(AuditChainTest, ListFiltersAndViews) {
  AppendFive();
  auto list = [&](const v1::ListAuditEntriesRequest& q) {
    auto r = chain_->List(auditor_, q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::ListAuditEntriesResponse();
  };
  v1::ListAuditEntriesRequest q;
  auto all = list(q);
  EXPECT_THAT(Sequences(all), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(all.head().sequence(), 5);
  EXPECT_TRUE(all.next_page_token().empty());
  for (const auto& e : all.entries()) EXPECT_TRUE(e.payload().empty());  // BASIC by default
  q.set_view(v1::AUDIT_ENTRY_VIEW_FULL);
  const v1::ListAuditEntriesResponse full = list(q);
  EXPECT_EQ(full.entries_size(), 5);
  for (const auto& e : full.entries()) EXPECT_FALSE(e.payload().empty());

  v1::ListAuditEntriesRequest by_source;
  by_source.add_source_services("booking");
  by_source.add_source_services("usage");
  EXPECT_THAT(Sequences(list(by_source)), ElementsAre(2, 4, 5));
  v1::ListAuditEntriesRequest by_type;
  by_type.add_event_types("labshare.billing.v1.ChargePosted");
  EXPECT_THAT(Sequences(list(by_type)), ElementsAre(3));
  v1::ListAuditEntriesRequest by_resource;
  by_resource.set_resource("instruments/i7");
  EXPECT_THAT(Sequences(list(by_resource)), ElementsAre(1, 2, 4));
  by_resource.set_descending(true);
  EXPECT_THAT(Sequences(list(by_resource)), ElementsAre(4, 2, 1));
  v1::ListAuditEntriesRequest by_actor;
  by_actor.set_actor("users/u2");
  EXPECT_THAT(Sequences(list(by_actor)), ElementsAre(4));
  v1::ListAuditEntriesRequest by_request;
  by_request.set_request_id("req-1");
  EXPECT_THAT(Sequences(list(by_request)), ElementsAre(2));
  v1::ListAuditEntriesRequest by_event;
  by_event.set_event_id("bl-1");
  EXPECT_THAT(Sequences(list(by_event)), ElementsAre(3));
  by_event.add_source_services("booking");
  EXPECT_TRUE(list(by_event).entries().empty());
  v1::ListAuditEntriesRequest by_org;
  by_org.set_actor_organization("organizations/o1");
  EXPECT_EQ(list(by_org).entries_size(), 5);
  v1::ListAuditEntriesRequest range;
  range.set_start_sequence(2);
  range.set_end_sequence(4);
  EXPECT_THAT(Sequences(list(range)), ElementsAre(2, 3));
  v1::ListAuditEntriesRequest appended;
  *appended.mutable_append_interval()->mutable_start_time() = ToProto(absl::FromUnixSeconds(1798761601));
  *appended.mutable_append_interval()->mutable_end_time() = ToProto(absl::FromUnixSeconds(1798761603));
  EXPECT_THAT(Sequences(list(appended)), ElementsAre(2, 3));

  v1::ListAuditEntriesRequest bad;
  bad.set_start_sequence(4);
  bad.set_end_sequence(4);
  EXPECT_EQ(chain_->List(auditor_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  v1::ListAuditEntriesRequest empty_interval;
  *empty_interval.mutable_event_interval()->mutable_start_time() = ToProto(absl::FromUnixSeconds(5));
  *empty_interval.mutable_event_interval()->mutable_end_time() = ToProto(absl::FromUnixSeconds(5));
  EXPECT_EQ(chain_->List(auditor_, empty_interval).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuditChainTest, ListPagesBySequenceBothWays) {
  for (int i = 0; i < 7; ++i) MustAppend("booking", BookingCreated(absl::StrCat("bk-", i)));
  MustAppend("billing", ChargePosted("bl-1"));
  for (bool descending : {false, true}) {
    for (bool indexed : {false, true}) {
      v1::ListAuditEntriesRequest q;
      q.set_page_size(3);
      q.set_descending(descending);
      if (indexed) q.set_resource("bookings/b1");  // the seven bookings
      std::vector<int64_t> got;
      int pages = 0;
      do {
        auto r = chain_->List(auditor_, q);
        ASSERT_TRUE(r.ok()) << r.status();
        for (int64_t s : Sequences(*r)) got.push_back(s);
        q.set_page_token(r->next_page_token());
        ++pages;
      } while (!q.page_token().empty() && pages < 10);
      std::vector<int64_t> want = indexed ? std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7}
                                          : std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8};
      if (descending) std::reverse(want.begin(), want.end());
      EXPECT_EQ(got, want) << "descending=" << descending << " indexed=" << indexed;
      EXPECT_EQ(pages, 3);
    }
  }
  v1::ListAuditEntriesRequest q;
  q.set_page_size(3);
  auto first = chain_->List(auditor_, q);
  ASSERT_TRUE(first.ok());
  q.set_page_token(first->next_page_token());
  q.set_actor("users/u1");  // other filters: the token is rejected
  EXPECT_EQ(ErrorReason(chain_->List(auditor_, q).status()), "INVALID_PAGE_TOKEN");
  q.clear_actor();  // another caller: rejected
  const Principal admin{"adam", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(chain_->List(admin, q).status()), "INVALID_PAGE_TOKEN");
  EXPECT_TRUE(chain_->List(auditor_, q).ok());
  // a token edited to point elsewhere: rejected
  q.set_page_token(testing::ForgePageToken(first->next_page_token()));
  ASSERT_FALSE(q.page_token().empty());
  EXPECT_EQ(ErrorReason(chain_->List(auditor_, q).status()), "INVALID_PAGE_TOKEN");
  q.clear_page_token();
  q.set_page_size(-1);
  EXPECT_EQ(ErrorReason(chain_->List(auditor_, q).status()), "INVALID_FIELD");
}

// A page of a filter without an index (here source_services) that fills up
// with the last match carries no next_page_token, although entries that do
// not match remain after it; a page followed by another match does.
TEST_F(AuditChainTest, AFullLastPageOfAFilteredListCarriesNoToken) {
  MustAppend("inventory", InstrumentChanged("inv-1"));
  MustAppend("inventory", InstrumentChanged("inv-2"));
  for (int i = 0; i < 3; ++i) MustAppend("usage", ThresholdsChanged(absl::StrCat("us-", i)));
  v1::ListAuditEntriesRequest q;
  q.add_source_services("inventory");
  q.set_page_size(2);
  auto r = chain_->List(auditor_, q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Sequences(*r), ElementsAre(1, 2));
  EXPECT_TRUE(r->next_page_token().empty());

  // A third inventory event (6): the first page has a token, the second
  // holds 6 alone and none.
  MustAppend("inventory", InstrumentChanged("inv-3"));
  r = chain_->List(auditor_, q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Sequences(*r), ElementsAre(1, 2));
  ASSERT_FALSE(r->next_page_token().empty());
  q.set_page_token(r->next_page_token());
  r = chain_->List(auditor_, q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Sequences(*r), ElementsAre(6));
  EXPECT_TRUE(r->next_page_token().empty());
}

// usage.proto, AuditEntry.resources: a singleton's name
// ("users/{id}/notificationSettings") is listed and indexed with its parent,
// so an auditor finds a person's settings changes with either; resources are
// not hashed; a malformed one is recorded but not indexed.
TEST_F(AuditChainTest, ASingletonIsIndexedUnderItsNameAndItsParent) {
  MustAppend("booking", BookingCreated("bk-1"));  // user users/u1
  const v1::AuditEntry settings = MustAppend("notify", SettingsChanged("nt-1", "users/u1/notificationSettings"));
  EXPECT_THAT(settings.resources(), ElementsAre("users/u1/notificationSettings", "users/u1"));
  EXPECT_THAT(Stored(2).resources(), ElementsAre("users/u1/notificationSettings", "users/u1"));
  EXPECT_EQ(AuditHashV1(settings), settings.hash());
  v1::AuditEntry unindexed = settings;
  unindexed.clear_resources();
  EXPECT_EQ(AuditHashV1(unindexed), settings.hash());

  const v1::AuditEntry malformed = MustAppend("notify", SettingsChanged("nt-2", "users/U1!/notificationSettings"));
  EXPECT_TRUE(malformed.resources().empty());

  v1::ListAuditEntriesRequest q;
  q.set_resource("users/u1/notificationSettings");
  auto by_name = chain_->List(auditor_, q);
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  EXPECT_THAT(Sequences(*by_name), ElementsAre(2));
  q.set_resource("users/u1");  // the booking's user, and the settings' owner
  auto by_parent = chain_->List(auditor_, q);
  ASSERT_TRUE(by_parent.ok()) << by_parent.status();
  EXPECT_THAT(Sequences(*by_parent), ElementsAre(1, 2));
  q.add_event_types("labshare.notify.v1.NotificationSettingsChanged");
  auto changes = chain_->List(auditor_, q);
  ASSERT_TRUE(changes.ok()) << changes.status();
  EXPECT_THAT(Sequences(*changes), ElementsAre(2));

  for (const char* bad : {"users/u1/NotificationSettings", "users/../notificationSettings", "users/u1/",
                          "notificationSettings", "users/u1/notification-settings"}) {
    v1::ListAuditEntriesRequest r;
    r.set_resource(bad);
    EXPECT_EQ(ErrorReason(chain_->List(auditor_, r).status()), "INVALID_NAME") << bad;
  }
  auto verified = chain_->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->result(), v1::VERIFIED);
}

// A sequence between the archived ones and the head with no readable entry
// is damage (usage.proto: no gaps; INTERNAL AUDIT_CORRUPTED, as
// ExportAuditTrail answers), never a silent gap in the list: from a range
// scan, from an index hit, and whatever the filters.
TEST_F(AuditChainTest, ListAnswersAuditCorruptedForAnEntryThatCannotBeRead) {
  AppendFive();  // 3: billing's ChargePosted of charges/c1
  const std::string original = StoredBytes(3);
  v1::AuditEntry other = Stored(3);
  other.set_sequence(7);
  for (const std::string& damage : {std::string(), std::string("\xff\xff\xff"), other.SerializeAsString()}) {
    if (damage.empty()) {
      ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(3)}).ok());
    } else {
      Store(3, damage);
    }
    std::vector<v1::ListAuditEntriesRequest> queries(6);
    queries[0].set_start_sequence(2);
    queries[0].set_end_sequence(5);
    queries[1].set_descending(true);
    queries[2].add_source_services("booking");     // would not match 3 anyway
    queries[3].set_resource("charges/c1");          // the index hit
    queries[4].set_actor("services/billing");       // the index hit
    queries[5].set_event_id("bl-1");                // the index hit
    for (const auto& q : queries) {
      absl::Status s = chain_->List(auditor_, q).status();
      EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << q.ShortDebugString() << " " << damage.size();
      EXPECT_EQ(ErrorReason(s), "AUDIT_CORRUPTED") << q.ShortDebugString();
      EXPECT_EQ(ErrorReason(chain_->ExportJsonlString(2, 5).status()), "AUDIT_CORRUPTED");
    }
    // A page that fills up before it is answered, with a token; the next
    // page starts at the damaged entry.
    v1::ListAuditEntriesRequest paged;
    paged.set_page_size(2);
    auto first = chain_->List(auditor_, paged);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_THAT(Sequences(*first), ElementsAre(1, 2));
    ASSERT_FALSE(first->next_page_token().empty());
    paged.set_page_token(first->next_page_token());
    EXPECT_EQ(ErrorReason(chain_->List(auditor_, paged).status()), "AUDIT_CORRUPTED");
    // A range that does not reach it is answered.
    v1::ListAuditEntriesRequest after;
    after.set_start_sequence(4);
    auto rest = chain_->List(auditor_, after);
    ASSERT_TRUE(rest.ok()) << rest.status();
    EXPECT_THAT(Sequences(*rest), ElementsAre(4, 5));
  }
  Store(3, original);
  v1::ListAuditEntriesRequest all;
  auto ok = chain_->List(auditor_, all);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(Sequences(*ok), ElementsAre(1, 2, 3, 4, 5));
}

// Entries labshare-archive removed are not damage: neither those archived
// before the call nor those it removes while the call runs (the base has
// moved past them since List read it).
TEST_F(AuditChainTest, ListDoesNotTakeArchivedEntriesForDamage) {
  std::vector<v1::AuditEntry> entries = AppendFive();  // 3: charges/c1
  entries.push_back(MustAppend("inventory", InstrumentChanged("inv-6")));
  entries.push_back(MustAppend("inventory", InstrumentChanged("inv-7")));
  // As labshare-archive: the base first, then the entries (their index
  // members are left behind here, as after a crash midway).
  int64_t archived = 0;
  auto archive_to = [&](int64_t upto) { ArchiveTo(entries, &archived, upto); };
  archive_to(1);
  v1::ListAuditEntriesRequest q;
  auto before = chain_->List(auditor_, q);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_THAT(Sequences(*before), ElementsAre(2, 3, 4, 5, 6, 7));

  // Each call below: one more year archived after List read the base.
  AuditChainOptions o;
  o.clock = &clock_;
  o.batch_size = 4;
  o.after_base_for_testing = [&] { archive_to(archived == 1 ? 3 : archived + 1); };
  AuditChain racing(pool_.get(), testing::TestPageTokens(), std::move(o));
  v1::ListAuditEntriesRequest indexed;  // base 1 read, 2 and 3 archived meanwhile
  indexed.set_resource("charges/c1");
  auto r = racing.List(auditor_, indexed);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->entries().empty());
  EXPECT_TRUE(r->next_page_token().empty());
  r = racing.List(auditor_, q);  // base 3 read, 4 archived meanwhile
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Sequences(*r), ElementsAre(5, 6, 7));
  q.set_descending(true);
  r = racing.List(auditor_, q);  // base 4 read, 5 archived meanwhile
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Sequences(*r), ElementsAre(7, 6));
}

// Nor for Verify and the export: entries labshare-archive removes while they
// run (after they read the base) are no SEQUENCE_GAP and no AUDIT_CORRUPTED.
// The check starts again on what is stored then; an export that already sent
// a piece stops with SEQUENCE_OUT_OF_RANGE, as one started then would.
TEST_F(AuditChainTest, VerifyAndExportDoNotTakeEntriesArchivedMeanwhileForDamage) {
  // The next year archived once, after the call's first read of the base.
  std::unique_ptr<Racing> run = SevenEntriesArchivedDuringCalls(2);
  const std::vector<v1::AuditEntry>& entries = run->entries;
  int64_t& next = run->next;
  auto archive_to = [&](int64_t upto) { ArchiveTo(run->entries, &run->archived, upto); };
  AuditChain& racing = *run->chain;

  next = 3;  // base 1 read, 2 and 3 archived meanwhile
  auto v = racing.Verify(0, 0, {});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->result(), v1::VERIFIED);
  EXPECT_EQ(v->start_sequence(), 4);
  EXPECT_EQ(v->end_sequence(), 8);
  EXPECT_EQ(v->entries_checked(), 4);

  // An explicit start now archived: as for a call made after the archive.
  next = 4;
  absl::Status out = racing.Verify(4, 0, {}).status();
  EXPECT_EQ(out.code(), absl::StatusCode::kOutOfRange) << out;
  EXPECT_EQ(ErrorReason(out), "SEQUENCE_OUT_OF_RANGE");

  // An export from 0: nothing sent yet, so the file starts after the new
  // base and links to its hash.
  next = 5;
  auto text = racing.ExportJsonlString(0, 0);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<std::string> lines = absl::StrSplit(*text, '\n');
  ASSERT_EQ(lines.size(), 5u);  // header, entries 6 and 7, trailer, ""
  EXPECT_THAT(lines[0], ::testing::HasSubstr(absl::StrCat("\"start_sequence\":6,\"end_sequence\":8,\"previous_hash\":\"",
                                                         Hex(entries[4].hash()), "\"")));

  // An export whose header already went out when the entries went.
  std::string got;
  int pieces = 0;
  auto sent = racing.ExportJsonl(
      0, 0,
      [&](absl::string_view piece) {
        if (pieces++ == 0) archive_to(6);
        got.append(piece.data(), piece.size());
        return absl::OkStatus();
      },
      1);
  EXPECT_EQ(sent.status().code(), absl::StatusCode::kOutOfRange) << sent.status();
  EXPECT_EQ(ErrorReason(sent.status()), "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(ErrorMetadataOf(sent.status())["first_sequence"], "7");
  EXPECT_EQ(ErrorMetadataOf(sent.status())["head_sequence"], "7");
  EXPECT_EQ(pieces, 1);  // the header only

  // A gap the base does not explain is still damage.
  ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(7)}).ok());
  auto broken = racing.Verify(0, 0, {});
  ASSERT_TRUE(broken.ok()) << broken.status();
  EXPECT_EQ(broken->result(), v1::BROKEN);
  EXPECT_EQ(broken->first_break().kind(), v1::SEQUENCE_GAP);
  EXPECT_EQ(broken->first_break().sequence(), 7);
  EXPECT_EQ(ErrorReason(racing.ExportJsonlString(0, 0).status()), "AUDIT_CORRUPTED");
}

// ExportAuditTrail holds each piece back until the next one (the last
// message carries the trailer), so a piece flushed is not yet a message the
// client has. usage.proto: "Before the first message the export simply
// starts again on what is stored": entries archived after the header was
// flushed but before any message was sent make the export start again (it
// ended with SEQUENCE_OUT_OF_RANGE); once a message was sent, it still ends
// so.
TEST_F(AuditChainTest, ExportAuditTrailStartsAgainWhileNoMessageWasSent) {
  std::unique_ptr<Racing> run = SevenEntriesArchivedDuringCalls(std::nullopt);
  const std::vector<v1::AuditEntry>& entries = run->entries;
  int64_t& next = run->next;
  auto archive_to = [&](int64_t upto) { ArchiveTo(run->entries, &run->archived, upto); };
  AuditChain& racing = *run->chain;
  v1::ExportAuditTrailRequest req;
  req.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);

  // Base 1 read, 2 and 3 archived meanwhile; with one line a piece the
  // header is flushed (held back, not sent) before entry 2 is read.
  next = 3;
  std::vector<v1::ExportAuditTrailResponse> sent;
  int validated = 0;  // the service's export slot: once per export, not per pass
  absl::Status s = racing.ExportAuditTrail(
      req,
      [&](const v1::ExportAuditTrailResponse& m) {
        sent.push_back(m);
        return absl::OkStatus();
      },
      /*chunk_bytes=*/1, nullptr, [&] {
        ++validated;
        return absl::OkStatus();
      });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(validated, 1);
  ASSERT_EQ(sent.size(), 6u);  // header, entries 4 to 7, trailer: one line each
  std::string joined;
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(sent[i].offset(), static_cast<int64_t>(joined.size())) << i;
    EXPECT_EQ(sent[i].has_trailer(), i + 1 == sent.size()) << i;
    joined += sent[i].data();
  }
  auto expected = racing.ExportJsonlString(4, 0);
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(joined, *expected);
  EXPECT_THAT(sent[0].data(), ::testing::HasSubstr(absl::StrCat(
                                  "\"start_sequence\":4,\"end_sequence\":8,\"previous_hash\":\"",
                                  Hex(entries[2].hash()), "\"")));
  EXPECT_EQ(sent.back().trailer().row_count(), 4);
  EXPECT_EQ(sent.back().trailer().total_bytes(), static_cast<int64_t>(expected->size()));
  EXPECT_EQ(sent.back().trailer().sha256_hex(), Hex(Sha256Bytes(*expected)));
  EXPECT_EQ(sent.back().last_entry().sequence(), 7);

  // The header was sent (when entry 4's line came) before 5 and 6 were
  // archived: the file cannot be completed.
  sent.clear();
  s = racing.ExportAuditTrail(
      req,
      [&](const v1::ExportAuditTrailResponse& m) {
        if (sent.empty()) archive_to(6);
        sent.push_back(m);
        return absl::OkStatus();
      },
      /*chunk_bytes=*/1);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_EQ(ErrorReason(s), "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(ErrorMetadataOf(s)["first_sequence"], "7");
  EXPECT_EQ(ErrorMetadataOf(s)["head_sequence"], "7");
  ASSERT_EQ(sent.size(), 2u);  // the header and entry 4, read before 6 was archived
  EXPECT_EQ(sent[0].offset(), 0);
  EXPECT_FALSE(sent[1].has_trailer());

  // `validated` answers before any entry is read, even a damaged one, and
  // its error ends the export before any message; an invalid request or
  // range never reaches it.
  ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(7)}).ok());
  sent.clear();
  validated = 0;
  auto refuse = [&] {
    ++validated;
    return absl::ResourceExhaustedError("no slot");
  };
  auto keep = [&](const v1::ExportAuditTrailResponse& m) {
    sent.push_back(m);
    return absl::OkStatus();
  };
  s = racing.ExportAuditTrail(req, keep, 1, nullptr, refuse);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(validated, 1);
  EXPECT_TRUE(sent.empty());
  EXPECT_EQ(ErrorReason(racing.ExportAuditTrail(req, keep, 1, nullptr, nullptr)), "AUDIT_CORRUPTED");
  req.set_start_sequence(9);
  EXPECT_EQ(ErrorReason(racing.ExportAuditTrail(req, keep, 1, nullptr, refuse)), "SEQUENCE_OUT_OF_RANGE");
  req.set_start_sequence(0);
  req.set_format(v1::AUDIT_EXPORT_FORMAT_UNSPECIFIED);
  EXPECT_EQ(ErrorReason(racing.ExportAuditTrail(req, keep, 1, nullptr, refuse)), "INVALID_FIELD");
  EXPECT_EQ(validated, 1);
}

// ------------------------------------------------------------ export

TEST_F(AuditChainTest, ExportFollowsTheDocumentedFormat) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  auto text = chain_->ExportJsonlString(2, 4);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<std::string> lines = absl::StrSplit(*text, '\n');
  ASSERT_EQ(lines.size(), 5u);  // header, 2 entries, trailer, "" after the last "\n"
  EXPECT_EQ(lines[4], "");
  EXPECT_EQ(lines[0], absl::StrCat("{\"format\":\"labshare-audit-jsonl\",\"version\":1,\"algorithm\":\"SHA-256\","
                                   "\"start_sequence\":2,\"end_sequence\":4,\"previous_hash\":\"",
                                   Hex(entries[0].hash()), "\",\"exported_at\":\"2027-01-01T00:00:05Z\"}"));
  const v1::AuditEntry& e = entries[1];
  EXPECT_EQ(lines[1],
            absl::StrCat("{\"sequence\":2,\"source_service\":\"booking\",\"event_id\":\"bk-1\","
                         "\"event_type\":\"labshare.booking.v1.BookingCreated\","
                         "\"payload_type\":\"labshare.booking.v1.BookingEvent\","
                         "\"event_time\":{\"seconds\":1790000000,\"nanos\":250000000},"
                         "\"append_time\":{\"seconds\":1798761601,\"nanos\":0},\"payload\":\"",
                         absl::Base64Escape(e.payload()), "\",\"previous_hash\":\"", Hex(e.previous_hash()),
                         "\",\"hash\":\"", Hex(e.hash()),
                         "\",\"actor\":\"users/u1\",\"actor_organization\":\"organizations/o1\"}"));
  EXPECT_EQ(lines[3], absl::StrCat("{\"trailer\":true,\"entries\":2,\"last_sequence\":3,\"last_hash\":\"",
                                   Hex(entries[2].hash()), "\"}"));

  // The streamed form: whole lines, consecutive offsets, trailer last.
  v1::ExportAuditTrailRequest req;
  req.set_start_sequence(2);
  req.set_end_sequence(4);
  EXPECT_EQ(chain_->ExportAuditTrail(req, [](const v1::ExportAuditTrailResponse&) { return absl::OkStatus(); })
                .code(),
            absl::StatusCode::kInvalidArgument);  // format unspecified
  req.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
  std::vector<v1::ExportAuditTrailResponse> sent;
  ASSERT_TRUE(chain_
                  ->ExportAuditTrail(
                      req,
                      [&](const v1::ExportAuditTrailResponse& m) {
                        sent.push_back(m);
                        return absl::OkStatus();
                      },
                      /*chunk_bytes=*/1)
                  .ok());
  ASSERT_EQ(sent.size(), 4u);  // one line each
  std::string joined;
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(sent[i].offset(), static_cast<int64_t>(joined.size()));
    EXPECT_TRUE(absl::EndsWith(sent[i].data(), "\n"));
    EXPECT_EQ(sent[i].has_trailer(), i + 1 == sent.size());
    joined += sent[i].data();
  }
  EXPECT_EQ(joined, *text);
  EXPECT_EQ(sent.back().trailer().row_count(), 2);
  EXPECT_EQ(sent.back().trailer().total_bytes(), static_cast<int64_t>(text->size()));
  EXPECT_EQ(sent.back().trailer().sha256_hex(), Hex(Sha256Bytes(*text)));
  EXPECT_EQ(sent.back().last_entry().sequence(), 3);
  EXPECT_EQ(sent.back().last_entry().hash(), entries[2].hash());

  EXPECT_EQ(chain_->ExportJsonlString(9, 0).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(chain_->ExportJsonlString(3, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuditChainTest, PythonVerifierAcceptsAnIntactExport) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  // Strings that need JSON escaping and non-ASCII UTF-8 must hash the same.
  entries.push_back(MustAppend("usage", ThresholdsChanged("us-\"2\"\\", "users/zhang\xE5\xBC\xA0", "r\te")));
  auto text = chain_->ExportJsonlString(0, 0);
  ASSERT_TRUE(text.ok()) << text.status();
  const std::string path = WriteFile("intact.jsonl", *text);

  CommandResult r = RunVerifier(path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, absl::StrCat("OK 6 entries, head 6 ", Hex(entries[5].hash()), "\n"));

  // A later piece of the trail, tied to the earlier one by an anchor.
  auto tail = chain_->ExportJsonlString(4, 0);
  ASSERT_TRUE(tail.ok());
  const std::string tail_path = WriteFile("tail.jsonl", *tail);
  r = RunVerifier(tail_path, absl::StrCat("--anchor 3:", Hex(entries[2].hash())));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, absl::StrCat("OK 3 entries, head 6 ", Hex(entries[5].hash()), "\n"));
  r = RunVerifier(tail_path, absl::StrCat("--anchor 3:", Hex(entries[1].hash())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output, "BROKEN at 3: ANCHOR_MISMATCH\n");
}

TEST_F(AuditChainTest, PythonVerifierFindsTheFirstBreakOfATamperedExport) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  auto text = chain_->ExportJsonlString(0, 0);
  ASSERT_TRUE(text.ok());
  std::vector<std::string> lines = absl::StrSplit(*text, '\n');
  ASSERT_EQ(lines.size(), 8u);  // header, 5 entries, trailer, ""

  // Entry 4's payload changed in the file.
  {
    std::vector<std::string> t = lines;
    const std::string old_b64 = absl::Base64Escape(entries[3].payload());
    std::string changed = entries[3].payload();
    changed.back() = static_cast<char>(changed.back() ^ 0x01);
    ASSERT_TRUE(absl::StrContains(t[4], old_b64));
    t[4] = absl::StrReplaceAll(t[4], {{old_b64, absl::Base64Escape(changed)}});
    CommandResult r = RunVerifier(WriteFile("payload.jsonl", absl::StrJoin(t, "\n")));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output, "BROKEN at 4: HASH_MISMATCH\n");
  }
  // Entry 3 dropped from the file.
  {
    std::vector<std::string> t = lines;
    t.erase(t.begin() + 3);
    CommandResult r = RunVerifier(WriteFile("gap.jsonl", absl::StrJoin(t, "\n")));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output, "BROKEN at 3: SEQUENCE_GAP\n");
  }
  // The stored entry 2 rewritten in Redis with a consistent hash: the export
  // carries it as stored, and the file breaks at the link into entry 3.
  {
    v1::AuditEntry forged = Stored(2);
    forged.set_payload(BookingCreated("bk-1", "bookings/b9").payload);
    forged.set_hash(AuditHashV1(forged));
    Store(2, forged.SerializeAsString());
    auto exported = chain_->ExportJsonlString(0, 0);
    ASSERT_TRUE(exported.ok());
    CommandResult r = RunVerifier(WriteFile("forged.jsonl", *exported));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output, "BROKEN at 3: LINK_MISMATCH\n");
    auto server_side = chain_->Verify(0, 0, {});
    ASSERT_TRUE(server_side.ok());
    EXPECT_EQ(server_side->first_break().kind(), v1::LINK_MISMATCH);
    EXPECT_EQ(server_side->first_break().sequence(), 3);
  }
  // A truncated file.
  {
    std::vector<std::string> t(lines.begin(), lines.begin() + 4);
    CommandResult r = RunVerifier(WriteFile("truncated.jsonl", absl::StrJoin(t, "\n") + "\n"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output, "BROKEN at 4: NO_TRAILER\n");
  }
}

// ------------------------------------------------------------ the signed head

// A key made the way the README says (openssl genpkey), mode 0600; "" and a
// test failure when openssl fails.
std::string MakeKey(const std::string& path, const std::string& algorithm_args) {
  const std::string cmd = absl::StrCat("openssl genpkey ", algorithm_args, " -out '", path,
                                       "' 2>/dev/null && chmod 600 '", path, "' && openssl pkey -in '", path,
                                       "' -pubout -out '", path, ".pub' 2>/dev/null");
  if (system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "failed: " << cmd;
    return "";
  }
  return path;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class SignedAuditChainTest : public AuditChainTest {
 protected:
  void SetUp() override {
    AuditChainTest::SetUp();
    key_path_ = MakeKey(KeyPath("ed25519.pem"), "-algorithm ed25519");
    auto key = AuditSigningKey::FromPrivateKeyFile(key_path_);
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = *key;
    chain_ = NewSignedChain(key_);
  }
  std::string KeyPath(const std::string& name) {
    const std::string path = absl::StrCat(::testing::TempDir(), "/audit_key_", getpid(), "_", name);
    files_.push_back(path);
    files_.push_back(path + ".pub");
    return path;
  }
  std::unique_ptr<AuditChain> NewSignedChain(std::shared_ptr<const AuditSigningKey> key) {
    AuditChainOptions o;
    o.clock = &clock_;
    o.batch_size = 4;
    o.signing_key = std::move(key);
    return std::make_unique<AuditChain>(pool_.get(), testing::TestPageTokens(), std::move(o));
  }
  // What someone with write access to Redis (and no key) can do: replace
  // entry `from`'s payload, recompute that entry's hash and every later
  // hash and link, and move the head to the new last hash.
  void RewriteConsistently(int64_t from, int64_t head) {
    std::string prev = Stored(from - 1).hash();
    if (from == 1) prev.assign(32, '\0');
    for (int64_t s = from; s <= head; ++s) {
      v1::AuditEntry e = Stored(s);
      if (s == from) e.set_payload(BookingCreated("bk-1", "bookings/b-forged").payload);
      e.set_previous_hash(prev);
      e.set_hash(AuditHashV1(e));
      Store(s, e.SerializeAsString());
      prev = e.hash();
    }
    ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Head(), "hash", prev}).ok());
  }

  std::string key_path_;
  std::shared_ptr<const AuditSigningKey> key_;
};

TEST_F(SignedAuditChainTest, EveryAppendSignsTheHeadAndTheUntouchedChainVerifies) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  auto head = chain_->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence(), 5);
  EXPECT_EQ(head->signature().size(), 64u);  // Ed25519
  EXPECT_EQ(head->key_id(), key_->key_id());
  EXPECT_EQ(head->key_id().size(), 64u);
  EXPECT_TRUE(key_->VerifyHead(5, entries[4].hash(), head->signature()));
  EXPECT_FALSE(key_->VerifyHead(4, entries[4].hash(), head->signature()));
  EXPECT_FALSE(key_->VerifyHead(5, entries[3].hash(), head->signature()));
  // Checked with the public key alone, too.
  auto public_key = AuditSigningKey::FromPublicKeyPem(ReadAll(key_path_ + ".pub"));
  ASSERT_TRUE(public_key.ok()) << public_key.status();
  EXPECT_FALSE((*public_key)->can_sign());
  EXPECT_EQ((*public_key)->key_id(), key_->key_id());
  EXPECT_TRUE((*public_key)->VerifyHead(5, entries[4].hash(), head->signature()));
  EXPECT_EQ((*public_key)->SignHead(5, entries[4].hash()).status().code(), absl::StatusCode::kInternal);

  auto verified = chain_->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->result(), v1::VERIFIED);
  EXPECT_EQ(verified->entries_checked(), 5);
  EXPECT_EQ(verified->head().signature(), head->signature());

  // The export carries the signed head, and the offline verifier checks it.
  auto text = chain_->ExportJsonlString(0, 0);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(absl::StrContains(*text, absl::StrCat("\"head_signature\":\"", absl::Base64Escape(head->signature()),
                                                    "\",\"key_id\":\"", key_->key_id(), "\"}\n")));
  const std::string path = WriteFile("signed.jsonl", *text);
  CommandResult r = RunVerifier(path, absl::StrCat("--public_key='", key_path_, ".pub'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, absl::StrCat("OK 5 entries, head 5 ", Hex(entries[4].hash()), ", head signature valid\n"));
  // An export that stops before the head carries no signature: the verifier
  // with a key refuses it, without one it checks the links as before.
  auto part = chain_->ExportJsonlString(0, 4);
  ASSERT_TRUE(part.ok());
  EXPECT_FALSE(absl::StrContains(*part, "head_signature"));
  const std::string part_path = WriteFile("part.jsonl", *part);
  r = RunVerifier(part_path, absl::StrCat("--public_key='", key_path_, ".pub'"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "BROKEN at 3: HEAD_SIGNATURE_INVALID\n")) << r.output;
  EXPECT_EQ(RunVerifier(part_path).exit_code, 0);
}

TEST_F(SignedAuditChainTest, AConsistentRewriteInRedisIsDetectedByVerifyAndTheOfflineVerifier) {
  std::vector<v1::AuditEntry> entries = AppendFive();
  const std::string signature = chain_->Head()->signature();
  RewriteConsistently(2, 5);
  // Every hash and link is consistent: without the signature nothing shows.
  auto unsigned_view = NewChain(pool_.get());
  EXPECT_EQ(unsigned_view->Verify(0, 0, {})->result(), v1::VERIFIED);
  EXPECT_EQ(RunVerifier(WriteFile("rewritten-nokey.jsonl", *chain_->ExportJsonlString(0, 0))).exit_code, 0);

  auto r = chain_->Verify(0, 0, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->result(), v1::BROKEN);
  EXPECT_EQ(r->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  EXPECT_EQ(r->first_break().sequence(), 5);
  EXPECT_EQ(r->first_break().expected_hash(), Stored(5).hash());
  EXPECT_EQ(r->first_break().actual_hash(), Stored(5).hash());
  EXPECT_EQ(r->entries_checked(), 5);
  // Offline: the old signature does not cover the new head.
  CommandResult offline =
      RunVerifier(WriteFile("rewritten.jsonl", *chain_->ExportJsonlString(0, 0)),
                  absl::StrCat("--public_key='", key_path_, ".pub'"));
  EXPECT_EQ(offline.exit_code, 1) << offline.output;
  EXPECT_EQ(offline.output, "BROKEN at 5: HEAD_SIGNATURE_INVALID\n");

  // Re-signed with another key (the writer's own): still refused.
  auto other = AuditSigningKey::FromPrivateKeyFile(MakeKey(KeyPath("other.pem"), "-algorithm ed25519"));
  ASSERT_TRUE(other.ok());
  auto forged_sig = (*other)->SignHead(5, Stored(5).hash());
  ASSERT_TRUE(forged_sig.ok());
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Head(), "sig", *forged_sig, "kid", key_->key_id()}).ok());
  EXPECT_EQ(chain_->Verify(0, 0, {})->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  offline = RunVerifier(WriteFile("resigned.jsonl", *chain_->ExportJsonlString(0, 0)),
                        absl::StrCat("--public_key='", key_path_, ".pub'"));
  EXPECT_EQ(offline.output, "BROKEN at 5: HEAD_SIGNATURE_INVALID\n");
  // ...and the signature removed.
  ASSERT_TRUE(pool_->Command({"HDEL", audit_keys::Head(), "sig", "kid"}).ok());
  EXPECT_EQ(chain_->Verify(0, 0, {})->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);

  // A head moved back to entry 4 under entry 5's signature: the head no
  // longer is the range's last entry, and the signature is for another head.
  ASSERT_TRUE(pool_->Command({"HSET", audit_keys::Head(), "seq", "4", "hash", Stored(4).hash(), "sig", signature}).ok());
  r = chain_->Verify(0, 0, {});
  EXPECT_EQ(r->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  EXPECT_EQ(r->first_break().sequence(), 4);
}

TEST_F(SignedAuditChainTest, AHeadSignedByAnotherKeyFails) {
  AppendFive();
  auto other = AuditSigningKey::FromPrivateKeyFile(MakeKey(KeyPath("p256.pem"), "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE((*other)->key_id(), key_->key_id());
  auto verifier = NewSignedChain(*other);
  auto r = verifier->Verify(0, 0, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->result(), v1::BROKEN);
  EXPECT_EQ(r->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  CommandResult offline = RunVerifier(WriteFile("otherkey.jsonl", *chain_->ExportJsonlString(0, 0)),
                                      absl::StrCat("--public_key='", KeyPath("p256.pem"), ".pub'"));
  EXPECT_EQ(offline.exit_code, 1) << offline.output;
  EXPECT_EQ(offline.output, "BROKEN at 5: HEAD_SIGNATURE_INVALID\n");

  // ECDSA P-256 keys sign too (DER signatures), online and offline; a
  // chain continued under a new key verifies under that key.
  verifier->Append("booking", BookingCreated("bk-p256")).IgnoreError();
  auto head = verifier->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence(), 6);
  EXPECT_EQ(head->key_id(), (*other)->key_id());
  EXPECT_EQ(verifier->Verify(0, 0, {})->result(), v1::VERIFIED);
  EXPECT_EQ(chain_->Verify(0, 0, {})->first_break().kind(), v1::HEAD_SIGNATURE_INVALID);
  offline = RunVerifier(WriteFile("p256.jsonl", *verifier->ExportJsonlString(0, 0)),
                        absl::StrCat("--public_key='", KeyPath("p256.pem"), ".pub'"));
  EXPECT_EQ(offline.exit_code, 0) << offline.output;
}

TEST_F(SignedAuditChainTest, KeysOtherThanEd25519OrP256AndExposedFilesAreRefused) {
  auto rsa = AuditSigningKey::FromPrivateKeyFile(MakeKey(KeyPath("rsa.pem"), "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"));
  EXPECT_EQ(rsa.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(rsa.status()), "INVALID_AUDIT_KEY");
  auto p384 = AuditSigningKey::FromPrivateKeyFile(MakeKey(KeyPath("p384.pem"), "-algorithm EC -pkeyopt ec_paramgen_curve:P-384"));
  EXPECT_EQ(ErrorReason(p384.status()), "INVALID_AUDIT_KEY");
  EXPECT_EQ(ErrorReason(AuditSigningKey::FromPrivateKeyPem("not a key").status()), "INVALID_AUDIT_KEY");
  ASSERT_EQ(chmod(key_path_.c_str(), 0644), 0);
  auto exposed = AuditSigningKey::FromPrivateKeyFile(key_path_);
  EXPECT_EQ(ErrorReason(exposed.status()), "SECRET_FILE_EXPOSED");
  CommandResult bad = RunVerifier(WriteFile("empty.jsonl", ""), absl::StrCat("--public_key='", KeyPath("rsa.pem"), ".pub'"));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
}

}  // namespace
}  // namespace labshare::usage
