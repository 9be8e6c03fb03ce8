// The audit trail stored in segments (services/usage/audit_chain.h, layout)
// on a real Redis, with S = 3 entries per segment so that every test crosses
// several: the chain is the same chain (same sequences, hashes, signed head,
// export bytes as one stored unsegmented), batches split at a segment's end,
// redeliveries segments later append nothing, two replicas racing across
// boundaries leave no duplicate and no gap, a crash between the steps of a
// segment change is repaired, filtered listing goes through each segment's
// indexes, a chain shorter than S has exactly the keys of before, and on a
// Redis Cluster the segments spread over the masters.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/usage/audit_chain.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_cluster.h"
#include "tests/support/redis_server.h"

namespace labshare::usage {
namespace {

namespace v1 = labshare::usage::v1;

constexpr int64_t kS = 3;  // entries per segment
const absl::Time kStart = absl::FromUnixSeconds(1798761600);

// A BookingCreated of booking b<i % 4> by users/u<i % 3>, request req-<i % 5>,
// event e<i>, its header time `at`.
StreamEvent Event(int i, absl::Time at) {
  labshare::booking::v1::BookingEvent e;
  auto* h = e.mutable_header();
  h->set_event_id(absl::StrCat("e", i));
  *h->mutable_event_time() = ToProto(at);
  h->set_actor(absl::StrCat("users/u", i % 3));
  h->set_actor_organization("organizations/o1");
  h->set_request_id(absl::StrCat("req-", i % 5));
  auto* b = e.mutable_booking_created()->mutable_booking();
  b->set_name(absl::StrCat("bookings/b", i % 4));
  b->set_instrument("instruments/i7");
  b->set_user(absl::StrCat("users/u", i % 3));
  return {"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
}

std::shared_ptr<const AuditSigningKey> NewKey() {
  EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  const std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  auto key = AuditSigningKey::FromPrivateKeyPem(pem);
  return key.ok() ? *key : nullptr;
}

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

CommandResult RunVerifier(const std::string& file, const std::string& extra) {
  const std::string cmd = absl::StrCat("/usr/bin/python3 '", LABSHARE_SOURCE_DIR, "/deploy/verify_audit.py' '", file,
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

// One answer of an append, comparable across layouts.
struct Answer {
  absl::StatusCode code = absl::StatusCode::kOk;
  int64_t sequence = 0;
  bool appended = false;
  std::string hash;
  bool operator==(const Answer& o) const {
    return code == o.code && sequence == o.sequence && appended == o.appended && hash == o.hash;
  }
};

Answer Of(const absl::StatusOr<AppendResult>& r) {
  Answer a;
  a.code = r.status().code();
  if (r.ok()) {
    a.sequence = r->entry.sequence();
    a.appended = r->appended;
    a.hash = r->entry.hash();
  }
  return a;
}

class AuditSegmentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::SharedRedisServer();
    ASSERT_NE(server_, nullptr);
    testing::FlushAll(*server_);
    pool_ = std::make_unique<RedisPool>(server_->options());
    key_ = NewKey();
    ASSERT_NE(key_, nullptr);
  }
  void TearDown() override {
    for (const auto& f : files_) std::remove(f.c_str());
  }

  AuditChainOptions Options(int64_t segment_entries) {
    AuditChainOptions o;
    o.clock = &clock_;
    o.batch_size = 2;  // several round trips, several segments per batch
    o.export_batch_size = 2;
    o.list_scan_budget = 5;
    o.segment_entries = segment_entries;
    o.signing_key = key_;
    return o;
  }
  std::unique_ptr<AuditChain> NewChain(AuditChainOptions o, RedisPool* pool = nullptr) {
    return std::make_unique<AuditChain>(pool != nullptr ? pool : pool_.get(), testing::TestPageTokens(),
                                        std::move(o));
  }

  // 14 distinct events through single appends and batches, with
  // redeliveries (one two segments later), a repeat inside a batch and an
  // undecodable event; the clock moves a second per call.
  std::vector<Answer> Script(AuditChain& chain) {
    std::vector<Answer> out;
    auto one = [&](int i) {
      out.push_back(Of(chain.Append("booking", Event(i, clock_.Now()))));
      clock_.Advance(absl::Seconds(1));
    };
    auto batch = [&](const std::vector<int>& is) {
      std::vector<StreamEvent> events;
      for (int i : is) {
        events.push_back(i < 0 ? StreamEvent{"1-0", "labshare.booking.v1.BookingEvent", "\xff\xff"}
                               : Event(i, clock_.Now()));
      }
      for (const auto& r : chain.AppendBatch("booking", events)) out.push_back(Of(r));
      clock_.Advance(absl::Seconds(1));
    };
    one(0);
    one(1);
    batch({2, 3, 4, 5, 6});  // 3 | 4 5 6 | 7: two boundaries in one batch
    one(0);                  // appended two segments earlier
    batch({7, 1, 8, 7, -1, 9, 10, 11});
    one(12);
    batch({13});
    return out;
  }

  std::vector<std::string> Keys() {
    auto v = pool_->Command({"KEYS", "*"});
    std::vector<std::string> out;
    for (const auto& e : v->elements) out.push_back(e.str);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string WriteFile(const std::string& name, const std::string& content) {
    const std::string path = absl::StrCat(::testing::TempDir(), "/audit_segments_", getpid(), "_", name);
    std::ofstream(path, std::ios::binary) << content;
    files_.push_back(path);
    return path;
  }

  testing::RedisServer* server_ = nullptr;
  FakeClock clock_{kStart};
  Principal auditor_{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
  std::unique_ptr<RedisPool> pool_;
  std::shared_ptr<const AuditSigningKey> key_;
  std::vector<std::string> files_;
};

TEST_F(AuditSegmentsTest, AChainShorterThanASegmentHasExactlyTheKeysOfBefore) {
  auto chain = NewChain(Options(4));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(chain->Append("booking", Event(i, clock_.Now())).ok());
  // e0..e2: users/u0..u2, req-0..2, bookings/b0..b2 (and users/u0..u2 as
  // the booking's user, the same names).
  std::vector<std::string> want = {"{usage}:audit:applied", "{usage}:audit:head"};
  for (int i = 0; i < 3; ++i) {
    want.push_back(absl::StrCat("{usage}:audit:entry:", i + 1));
    want.push_back(absl::StrCat("{usage}:audit:idx:event:e", i));
    want.push_back(absl::StrCat("{usage}:audit:idx:actor:users/u", i));
    want.push_back(absl::StrCat("{usage}:audit:idx:request:req-", i));
    want.push_back(absl::StrCat("{usage}:audit:idx:resource:bookings/b", i));
    want.push_back(absl::StrCat("{usage}:audit:idx:resource:users/u", i));
  }
  want.push_back("{usage}:audit:idx:resource:instruments/i7");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Keys(), want);
  auto fields = pool_->Command({"HKEYS", audit_keys::Head()});
  std::set<std::string> head_fields;
  for (const auto& f : fields->elements) head_fields.insert(f.str);
  EXPECT_EQ(head_fields, (std::set<std::string>{"seq", "hash", "at_s", "at_n", "sig", "kid"}));
}

TEST_F(AuditSegmentsTest, SegmentsAreStorageTheChainAndItsExportAreTheUnsegmentedOnes) {
  // The same events into one unsegmented chain...
  std::vector<Answer> plain_answers = Script(*NewChain(Options(int64_t{1} << 20)));
  clock_.Set(kStart + absl::Hours(1));
  auto plain_export = NewChain(Options(int64_t{1} << 20))->ExportJsonlString(0, 0);
  ASSERT_TRUE(plain_export.ok()) << plain_export.status();
  auto plain_head = NewChain(Options(int64_t{1} << 20))->Head();
  ASSERT_TRUE(plain_head.ok());
  EXPECT_EQ(plain_head->sequence(), 14);
  EXPECT_EQ(pool_->Command({"EXISTS", audit_keys::Segments()})->integer, 0);

  // ...and into segments of 3.
  testing::FlushAll(*server_);
  clock_.Set(kStart);
  auto chain = NewChain(Options(kS));
  std::vector<Answer> answers = Script(*chain);
  ASSERT_EQ(answers.size(), plain_answers.size());
  for (size_t i = 0; i < answers.size(); ++i) {
    EXPECT_TRUE(answers[i] == plain_answers[i]) << i << ": " << answers[i].sequence << " "
                                                << plain_answers[i].sequence;
  }
  // The redeliveries: e0 (segment 0) when the head was in segment 2, e1 and
  // the repeat of e7 in the batch; the undecodable event.
  EXPECT_FALSE(answers[7].appended);
  EXPECT_EQ(answers[7].sequence, 1);
  EXPECT_EQ(answers[9].sequence, 2);
  EXPECT_FALSE(answers[9].appended);
  EXPECT_EQ(answers[11].sequence, answers[8].sequence);
  EXPECT_EQ(answers[12].code, absl::StatusCode::kInvalidArgument);

  clock_.Set(kStart + absl::Hours(1));
  auto segmented_export = chain->ExportJsonlString(0, 0);
  ASSERT_TRUE(segmented_export.ok()) << segmented_export.status();
  EXPECT_EQ(*segmented_export, *plain_export);
  auto head = chain->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->SerializeAsString(), plain_head->SerializeAsString());  // signature included (Ed25519)
  auto verified = chain->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->result(), v1::VERIFIED) << verified->ShortDebugString();
  EXPECT_EQ(verified->entries_checked(), 14);
  // From inside a segment, with an anchor in another.
  auto entry5 = chain->Get(5);
  ASSERT_TRUE(entry5.ok() && entry5->has_value());
  v1::AuditAnchor anchor;
  anchor.set_sequence(5);
  anchor.set_hash((*entry5)->hash());
  auto middle = chain->Verify(5, 12, {anchor});
  ASSERT_TRUE(middle.ok());
  EXPECT_EQ(middle->result(), v1::VERIFIED);
  EXPECT_EQ(middle->anchors_checked(), 1);
  const std::string pub = WriteFile("key.pub", key_->PublicKeyPem());
  CommandResult py = RunVerifier(WriteFile("segmented.jsonl", *segmented_export), "--public_key='" + pub + "'");
  EXPECT_EQ(py.exit_code, 0) << py.output;

  // Where it is stored: 1-3 in {usage}, 4-6 in {au:1}, 7-9 in {au:2},
  // 10-12 in {au:3}, 13-14 in {au:4}; the directory; the closed heads.
  auto dir = pool_->Command({"ZRANGE", audit_keys::Segments(), "0", "-1", "WITHSCORES"});
  ASSERT_TRUE(dir.ok());
  std::vector<std::string> members;
  for (const auto& e : dir->elements) members.push_back(e.str);
  EXPECT_EQ(members, (std::vector<std::string>{"1", "4", "2", "7", "3", "10", "4", "13"}));
  for (int64_t seq = 1; seq <= 14; ++seq) {
    const int64_t segment = seq <= 3 ? 0 : (seq - 1) / 3;
    EXPECT_EQ(chain->Segments()->SegmentOf(seq), segment) << seq;
    auto stored = pool_->Command({"GET", audit_keys::Entry(segment, seq)});
    v1::AuditEntry e;
    ASSERT_TRUE(stored.ok() && e.ParseFromString(stored->str)) << seq;
    EXPECT_EQ(e.sequence(), seq);
    EXPECT_EQ(pool_->Command({"HGET", audit_keys::Applied(segment), absl::StrCat("booking|", e.event_id())})->str,
              std::to_string(seq));
    EXPECT_EQ(pool_->Command({"ZSCORE", audit_keys::Index(segment, "event", e.event_id()), std::to_string(seq)})->str,
              std::to_string(seq));
  }
  EXPECT_EQ(pool_->Command({"HLEN", audit_keys::Applied()})->integer, 3);
  EXPECT_EQ(pool_->Command({"HLEN", audit_keys::Applied(2)})->integer, 3);
  for (int64_t k = 0; k < 4; ++k) EXPECT_EQ(pool_->Command({"HGET", audit_keys::Head(k), "closed"})->str, "1");
  EXPECT_TRUE(pool_->Command({"HGET", audit_keys::Head(4), "closed"})->is_nil());
  EXPECT_EQ(pool_->Command({"HGET", audit_keys::Head(4), "first"})->str, "13");
  // Segment 0 closed at 3: its entry key 4 stops a replica without segments.
  EXPECT_EQ(pool_->Command({"GET", audit_keys::Entry(4)})->str, "closed");
  EXPECT_EQ(audit_keys::Head(2), "{au:2}:audit:head");
  EXPECT_EQ(audit_keys::Index(3, "actor", "users/u1"), "{au:3}:audit:idx:actor:users/u1");
}

// A redelivery finds its marker in whichever earlier segment holds it (the
// previous one always, older ones by their last append_time), by Append and
// by AppendBatch; outside the skew allowance an older segment is not read.
TEST_F(AuditSegmentsTest, RedeliveriesSegmentsLaterAppendNothing) {
  auto chain = NewChain(Options(kS));
  for (int i = 0; i < 11; ++i) {
    ASSERT_TRUE(chain->Append("booking", Event(i, clock_.Now())).ok());
    clock_.Advance(absl::Minutes(10));
  }
  // Head 11 in segment 3: e0 (segment 0), e4 (segment 1), e7 (segment 2).
  const int64_t keys = pool_->Command({"DBSIZE"})->integer;
  auto fresh = NewChain(Options(kS));  // another replica, nothing cached
  for (auto* replica : {chain.get(), fresh.get()}) {
    for (int i : {0, 4, 7, 10}) {
      auto again = replica->Append("booking", Event(i, kStart + absl::Minutes(10 * i)));
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_FALSE(again->appended) << i;
      EXPECT_EQ(again->entry.sequence(), i + 1);
    }
    std::vector<StreamEvent> batch = {Event(1, kStart + absl::Minutes(10)), Event(5, kStart + absl::Minutes(50)),
                                      Event(9, kStart + absl::Minutes(90))};
    for (const auto& r : replica->AppendBatch("booking", batch)) {
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_FALSE(r->appended);
    }
  }
  EXPECT_EQ(chain->Head()->sequence(), 11);
  EXPECT_EQ(pool_->Command({"DBSIZE"})->integer, keys);

  // Outside the guarantee (audit_chain.h): an event whose first append came
  // more than the skew allowance before its own event_time (the source's
  // clock 5 h ahead), redelivered two segments later, is not looked for in
  // its segment: the older segments are chosen by time, not all read.
  auto ahead = chain->Append("booking", Event(20, clock_.Now() + absl::Hours(5)));  // seq 12, segment 3
  ASSERT_TRUE(ahead.ok() && ahead->appended);
  EXPECT_EQ(ahead->entry.sequence(), 12);
  for (int i = 21; i < 27; ++i) ASSERT_TRUE(chain->Append("booking", Event(i, clock_.Now())).ok());
  ASSERT_EQ(chain->Segments()->SegmentOf(chain->Head()->sequence()), 5);
  auto late = chain->Append("booking", Event(20, clock_.Now() + absl::Hours(5)));
  ASSERT_TRUE(late.ok());
  EXPECT_TRUE(late->appended);
  EXPECT_EQ(late->entry.sequence(), 19);
  // Within it, an event three segments back (e10, sequence 11, segment 3)
  // is found: its segment's last append_time is recent enough.
  auto found = chain->Append("booking", Event(10, kStart + absl::Minutes(100)));
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->appended);
  EXPECT_EQ(found->entry.sequence(), 11);
}

// Two replicas (separate pools and caches) append concurrently across
// segment boundaries, interleaved deterministically: the other replica
// appends (and sometimes takes this one's event first) between reading the
// head and the compare-and-set, and closes and opens segments meanwhile.
TEST_F(AuditSegmentsTest, TwoReplicasAcrossBoundariesLeaveNoDuplicateAndNoGap) {
  RedisPool pool_b(server_->options());
  auto b = NewChain(Options(kS), &pool_b);
  int calls = 0;
  int b_next = 100;
  std::string current;  // the event A is appending
  AuditChainOptions a_options = Options(kS);
  a_options.before_commit_for_testing = [&] {
    ++calls;
    if (calls % 2 == 0) return;  // every other attempt goes through
    if (calls % 3 == 0 && !current.empty()) {
      // B gets A's own event first (a redelivery to another consumer).
      int i = 0;
      ASSERT_TRUE(absl::SimpleAtoi(current.substr(1), &i));
      ASSERT_TRUE(b->Append("booking", Event(i, kStart)).ok());
    } else {
      ASSERT_TRUE(b->Append("booking", Event(b_next++, kStart)).ok());
    }
  };
  auto a = NewChain(std::move(a_options));
  int a_appended = 0;
  for (int i = 0; i < 12; ++i) {
    current = absl::StrCat("e", i);
    auto r = a->Append("booking", Event(i, kStart));
    ASSERT_TRUE(r.ok()) << r.status();
    a_appended += r->appended ? 1 : 0;
  }
  std::vector<StreamEvent> batch;
  for (int i = 12; i < 20; ++i) batch.push_back(Event(i, kStart));
  current.clear();
  for (const auto& r : a->AppendBatch("booking", batch)) {
    ASSERT_TRUE(r.ok()) << r.status();
    a_appended += r->appended ? 1 : 0;
  }
  // B's own events and the events of A (20, each once).
  const int64_t distinct = 20 + (b_next - 100);
  auto head = a->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence(), distinct);
  EXPECT_LT(a_appended, 20);  // B took some of A's events first
  EXPECT_GT(head->sequence() / kS, 5);
  std::set<std::string> seen;
  for (auto* replica : {a.get(), b.get()}) {
    auto verified = replica->Verify(0, 0, {});
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_EQ(verified->result(), v1::VERIFIED) << verified->ShortDebugString();
    EXPECT_EQ(verified->entries_checked(), distinct);
  }
  for (int64_t s = 1; s <= distinct; ++s) {
    auto e = a->Get(s);
    ASSERT_TRUE(e.ok() && e->has_value()) << s;
    EXPECT_TRUE(seen.insert((*e)->event_id()).second) << "twice: " << (*e)->event_id();
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), distinct);
}

// Two replicas opening the same segment: the one that loses finds it opened
// and appends after the other.
TEST_F(AuditSegmentsTest, TwoReplicasOpeningTheSameSegmentOneWins) {
  RedisPool pool_b(server_->options());
  auto b = NewChain(Options(kS), &pool_b);
  AuditChainOptions o = Options(kS);
  bool raced = false;
  o.segment_step_for_testing = [&](absl::string_view step, int64_t segment) {
    if (step == "open" && segment == 1 && !raced) {
      raced = true;
      EXPECT_TRUE(b->Append("booking", Event(50, kStart)).ok());  // B opens segment 1 and appends 4
    }
    return absl::OkStatus();
  };
  auto a = NewChain(std::move(o));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a->Append("booking", Event(i, kStart)).ok());
  EXPECT_TRUE(raced);
  EXPECT_EQ(a->Get(4)->value().event_id(), "e50");
  EXPECT_EQ(a->Get(5)->value().event_id(), "e3");
  EXPECT_EQ(a->Verify(0, 0, {})->result(), v1::VERIFIED);
  EXPECT_EQ(pool_->Command({"ZSCORE", audit_keys::Segments(), "1"})->str, "4");
}

// A crash between the steps of a segment change (closed but not opened;
// opened but not in the directory) is repaired by the next append, of this
// replica or another; reads in between find the head by probing.
TEST_F(AuditSegmentsTest, ACrashBetweenTheStepsOfASegmentChangeIsRepaired) {
  std::string crash_at;  // "open" or "opened"
  AuditChainOptions o = Options(kS);
  o.segment_step_for_testing = [&](absl::string_view step, int64_t) {
    return step == crash_at ? absl::UnavailableError("crash") : absl::OkStatus();
  };
  auto a = NewChain(std::move(o));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Append("booking", Event(i, kStart)).ok());

  // Closed, not opened.
  crash_at = "open";
  EXPECT_EQ(a->Append("booking", Event(3, kStart)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(pool_->Command({"HGET", audit_keys::Head(0), "closed"})->str, "1");
  EXPECT_EQ(pool_->Command({"EXISTS", audit_keys::Head(1)})->integer, 0);
  EXPECT_EQ(NewChain(Options(kS))->Head()->sequence(), 3);
  crash_at.clear();
  auto r = a->Append("booking", Event(3, kStart));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->appended);
  EXPECT_EQ(r->entry.sequence(), 4);
  EXPECT_EQ(pool_->Command({"ZSCORE", audit_keys::Segments(), "1"})->str, "4");
  for (int i = 4; i < 6; ++i) ASSERT_TRUE(a->Append("booking", Event(i, kStart)).ok());

  // Opened, not in the directory.
  crash_at = "opened";
  EXPECT_EQ(a->Append("booking", Event(6, kStart)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(pool_->Command({"HGET", audit_keys::Head(2), "first"})->str, "7");
  EXPECT_TRUE(pool_->Command({"ZSCORE", audit_keys::Segments(), "2"})->is_nil());
  // A reader starting from the directory probes its way to the head (the
  // new segment's copy of the closed one's, signature included).
  auto reader = NewChain(Options(kS));
  auto head = reader->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence(), 6);
  EXPECT_EQ(reader->Verify(0, 0, {})->result(), v1::VERIFIED);
  // Another replica appends the redelivered event; the directory is repaired.
  crash_at.clear();
  auto other = NewChain(Options(kS));
  r = other->Append("booking", Event(6, kStart));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->entry.sequence(), 7);
  EXPECT_EQ(pool_->Command({"ZSCORE", audit_keys::Segments(), "2"})->str, "7");
  r = a->Append("booking", Event(6, kStart));  // the crashed replica's retry
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->appended);
  EXPECT_EQ(r->entry.sequence(), 7);
  for (int i = 7; i < 11; ++i) ASSERT_TRUE(a->Append("booking", Event(i, kStart)).ok());
  auto verified = reader->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->result(), v1::VERIFIED);
  EXPECT_EQ(verified->entries_checked(), 11);
}

// Filters through each segment's indexes, in sequence order either way, page
// tokens as cursors across segments, the scan budget: every page equal to
// the unsegmented chain's.
TEST_F(AuditSegmentsTest, ListGoesThroughEachSegmentsIndexesPageByPage) {
  std::vector<v1::ListAuditEntriesRequest> queries;
  for (int page_size : {1, 2, 4}) {
    for (bool descending : {false, true}) {
      v1::ListAuditEntriesRequest q;
      q.set_page_size(page_size);
      q.set_descending(descending);
      queries.push_back(q);  // no filter
      q.set_actor("users/u1");
      queries.push_back(q);
      q.clear_actor();
      q.set_resource("bookings/b2");
      queries.push_back(q);
      q.clear_resource();
      q.set_request_id("req-3");
      queries.push_back(q);
      q.clear_request_id();
      q.set_event_id("e11");
      queries.push_back(q);
      q.clear_event_id();
      q.set_actor("users/u0");
      q.set_start_sequence(2);
      q.set_end_sequence(13);
      queries.push_back(q);
      q.clear_actor();
      q.add_event_types("labshare.booking.v1.BookingCreated");
      queries.push_back(q);
    }
  }
  // Every page of every query: its sequences, and whether a token follows.
  auto pages = [&](AuditChain& chain) {
    std::vector<std::vector<int64_t>> out;
    for (const auto& query : queries) {
      v1::ListAuditEntriesRequest q = query;
      for (int page = 0; page < 40; ++page) {
        auto r = chain.List(auditor_, q);
        EXPECT_TRUE(r.ok()) << r.status() << " " << q.ShortDebugString();
        if (!r.ok()) break;
        std::vector<int64_t> seqs;
        for (const auto& e : r->entries()) seqs.push_back(e.sequence());
        seqs.push_back(r->next_page_token().empty() ? 0 : -1);
        out.push_back(seqs);
        if (r->next_page_token().empty()) break;
        q.set_page_token(r->next_page_token());
      }
    }
    return out;
  };
  Script(*NewChain(Options(int64_t{1} << 20)));
  const auto plain = pages(*NewChain(Options(int64_t{1} << 20)));
  testing::FlushAll(*server_);
  clock_.Set(kStart);
  auto chain = NewChain(Options(kS));
  Script(*chain);
  ASSERT_EQ(chain->Segments()->segments.size(), 5u);
  const auto segmented = pages(*chain);
  EXPECT_EQ(segmented, plain);
  // A query crossing every segment found what it should: users/u1 is the
  // actor of e1, e4, e7, e10, e13 (sequences 2, 5, 8, 11, 14).
  v1::ListAuditEntriesRequest q;
  q.set_actor("users/u1");
  q.set_page_size(10);
  auto r = chain->List(auditor_, q);
  ASSERT_TRUE(r.ok());
  std::vector<int64_t> seqs;
  for (const auto& e : r->entries()) seqs.push_back(e.sequence());
  EXPECT_EQ(seqs, (std::vector<int64_t>{2, 5, 8, 11, 14}));
}

// On a Redis Cluster of three masters: the segments' slots spread over the
// masters, no step mixes slots (each is one EVAL, refused CROSSSLOT
// otherwise), reads pipeline across nodes, and the chain is the same.
TEST_F(AuditSegmentsTest, OnARedisClusterTheSegmentsSpreadOverTheMasters) {
  Script(*NewChain(Options(int64_t{1} << 20)));
  clock_.Set(kStart + absl::Hours(1));
  auto plain_export = NewChain(Options(int64_t{1} << 20))->ExportJsonlString(0, 0);
  ASSERT_TRUE(plain_export.ok());

  testing::RedisCluster::StartOptions so;
  so.replicas_per_master = 0;
  auto cluster = testing::RedisCluster::Start(so);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RedisPool pool((*cluster)->options());
  clock_.Set(kStart);
  auto chain = NewChain(Options(kS), &pool);
  Script(*chain);
  clock_.Set(kStart + absl::Hours(1));
  auto exported = chain->ExportJsonlString(0, 0);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(*exported, *plain_export);
  auto verified = chain->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->result(), v1::VERIFIED);
  v1::ListAuditEntriesRequest q;
  q.set_actor("users/u1");
  auto listed = chain->List(auditor_, q);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->entries_size(), 5);
  std::set<int> masters;
  for (int64_t k = 0; k <= 4; ++k) {
    auto m = (*cluster)->MasterOfKey(audit_keys::Head(k));
    ASSERT_TRUE(m.ok());
    masters.insert(*m);
  }
  EXPECT_GE(masters.size(), 2u);
}

}  // namespace
}  // namespace labshare::usage
