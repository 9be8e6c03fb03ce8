// Usage's multi-write Lua steps (the figures fold and the audit append)
// check every precondition, overflow included, before their first write:
// Redis does not roll a script back. Each test drives a step into a failure
// that only shows after its checks and finds every key unchanged (DUMP).
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_snapshot.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;

class UsageLuaAtomicityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    figures_ = std::make_unique<UsageFigures>(pool_.get(), &clock_, absl::UTCTimeZone(), labshare::testing::TestPageTokens());
    AuditChainOptions options;
    options.clock = &clock_;
    audit_ = std::make_unique<AuditChain>(pool_.get(), labshare::testing::TestPageTokens(), options);
    // Something already folded and appended, for a failed step to damage.
    ASSERT_TRUE(figures_->Fold("booking", Created("e0")).ok());
    ASSERT_TRUE(audit_->Append("booking", Created("e0")).ok());
  }
  void TearDown() override { SetQuietLogging(false); }

  // A confirmed booking of i1 on 2026-03-02 (UTC): counts "bk" in the day,
  // the month and the year of i1.
  StreamEvent Created(const std::string& event_id, const std::string& instrument = "i1") {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    e.mutable_header()->set_actor("users/u1");
    *e.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
    bk::Booking* b = e.mutable_booking_created()->mutable_booking();
    b->set_name("bookings/b-" + event_id);
    b->set_instrument("instruments/" + instrument);
    b->set_user("users/u1");
    b->set_payer_organization("organizations/o1");
    b->set_mode(labshare::type::v1::ON_SITE);
    b->set_state(bk::Booking::CONFIRMED);
    const absl::Time start = absl::FromCivil(absl::CivilSecond(2026, 3, 2, 10, 0, 0), absl::UTCTimeZone());
    *b->mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b->mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(1));
    StreamEvent out;
    out.stream_id = "1-0";
    out.type = "labshare.booking.v1.BookingEvent";
    out.payload = e.SerializeAsString();
    return out;
  }

  // Service order o-<event id> of `instrument`, its quote accepted on
  // 2026-03-01 (UTC).
  StreamEvent QuoteAccepted(const std::string& event_id, const std::string& instrument) {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    bk::ServiceOrder* o = e.mutable_service_order_quote_accepted()->mutable_service_order();
    o->set_name("serviceOrders/o-" + event_id);
    o->set_instrument("instruments/" + instrument);
    o->set_client_organization("organizations/o1");
    o->set_state(bk::ServiceOrder::QUOTE_ACCEPTED);
    *o->mutable_quote_accept_time() =
        ToProto(absl::FromCivil(absl::CivilSecond(2026, 3, 1, 10, 0, 0), absl::UTCTimeZone()));
    StreamEvent out;
    out.payload = e.SerializeAsString();
    return out;
  }
  // The run of service order `order` on `instrument`, 2026-04-02 10:00-11:00
  // (UTC), checked out.
  StreamEvent RunCheckedOut(const std::string& event_id, const std::string& order, const std::string& instrument) {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    bk::Booking* b = e.mutable_booking_checked_out()->mutable_booking();
    b->set_name("bookings/run-" + event_id);
    b->set_instrument("instruments/" + instrument);
    b->set_user("users/u1");
    b->set_payer_organization("organizations/o1");
    b->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
    b->set_service_order(order);
    b->set_state(bk::Booking::COMPLETED);
    const absl::Time start = absl::FromCivil(absl::CivilSecond(2026, 4, 2, 10, 0, 0), absl::UTCTimeZone());
    *b->mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b->mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(1));
    *b->mutable_session()->mutable_start_time() = ToProto(start);
    *b->mutable_session()->mutable_end_time() = ToProto(start + absl::Hours(1));
    StreamEvent out;
    out.payload = e.SerializeAsString();
    return out;
  }

  void Redis(const std::vector<std::string>& cmd) {
    auto v = pool_->Command(cmd);
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_FALSE(v->is_error()) << v->DebugString();
  }
  void Spoil(const std::string& key) {
    Redis({"DEL", key});
    Redis({"SET", key, "not what the step writes"});
  }
  // The field the fold counts confirmed bookings of o1 in.
  static std::string BookedField() { return "bk|1|organizations/o1"; }

  template <typename Fn>
  void ExpectFailsUnchanged(Fn&& step) {
    const auto before = testing::Snapshot(*pool_);
    absl::Status status = step();
    EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
    EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
  }

  testing::RedisServer* redis_ = nullptr;
  FakeClock clock_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<UsageFigures> figures_;
  std::unique_ptr<AuditChain> audit_;
};

TEST_F(UsageLuaAtomicityTest, TheSeedCountedOnceInDayMonthAndYear) {
  for (const char* key : {"{usage}:d:i1:20260302", "{usage}:m:i1:202603", "{usage}:y:i1:2026"}) {
    auto v = pool_->Command({"HGET", key, BookedField()});
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->str, "1") << key;
  }
}

// ---------------------------------------------------------------- fold

TEST_F(UsageLuaAtomicityTest, FoldWithTheYearCounterAtTheLimit) {
  Redis({"HSET", "{usage}:y:i1:2026", BookedField(), "9223372036854775807"});
  ExpectFailsUnchanged([&] { return figures_->Fold("booking", Created("e1")); });
}

TEST_F(UsageLuaAtomicityTest, FoldWithTheYearCounterNotAnInteger) {
  Redis({"HSET", "{usage}:y:i1:2026", BookedField(), "twelve"});
  ExpectFailsUnchanged([&] { return figures_->Fold("booking", Created("e1")); });
}

TEST_F(UsageLuaAtomicityTest, FoldWithTheYearKeyOfTheWrongType) {
  Spoil("{usage}:y:i1:2026");
  ExpectFailsUnchanged([&] { return figures_->Fold("booking", Created("e1")); });
}

// A batch folds in one step: the event whose key is spoiled fails alone,
// nothing of it written; the events before and after it count, once each
// (a redelivery in the same batch counts nothing).
TEST_F(UsageLuaAtomicityTest, FoldBatchFailsOnlyTheEventWithTheBadKey) {
  Spoil("{usage}:y:i2:2026");
  const auto before = testing::Snapshot(*pool_);
  auto st = figures_->FoldBatch("booking", {Created("e1"), Created("e2", "i2"), Created("e3"), Created("e1")});
  ASSERT_EQ(st.size(), 4u);
  EXPECT_TRUE(st[0].ok()) << st[0];
  EXPECT_EQ(st[1].code(), absl::StatusCode::kInternal) << st[1];
  EXPECT_TRUE(st[2].ok()) << st[2];
  EXPECT_TRUE(st[3].ok()) << st[3];
  for (const char* key : {"{usage}:d:i1:20260302", "{usage}:m:i1:202603", "{usage}:y:i1:2026"}) {
    auto v = pool_->Command({"HGET", key, BookedField()});
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->str, "3") << key;  // e0, e1, e3
  }
  auto a = pool_->Command({"HGET", "{usage}:a:i1:y2026", "bk|1"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->str, "3");
  auto applied = pool_->Command({"HMGET", "{usage}:applied", "booking|e1", "booking|e2", "booking|e3"});
  ASSERT_TRUE(applied.ok());
  ASSERT_EQ(applied->elements.size(), 3u);
  EXPECT_EQ(applied->elements[0].str, "1");
  EXPECT_TRUE(applied->elements[1].is_nil());
  EXPECT_EQ(applied->elements[2].str, "1");
  // Nothing of i2 anywhere: only i1's keys and the markers changed.
  const auto after = testing::Snapshot(*pool_);
  for (const auto& [k, v] : after) {
    auto it = before.find(k);
    if (it != before.end() && it->second == v) continue;
    EXPECT_EQ(k.find("i2"), std::string::npos) << k;
  }
  EXPECT_EQ(after.at("{usage}:y:i2:2026"), before.at("{usage}:y:i2:2026"));
  EXPECT_EQ(after.count("{usage}:d:i2:20260302"), 0u);
  EXPECT_EQ(after.count("{usage}:m:i2:202603"), 0u);
}

// The closed markers and the confirmation times are checked with the
// counters, before the first write.
TEST_F(UsageLuaAtomicityTest, FoldWithTheClosedMarkersOfTheWrongType) {
  Spoil("{usage}:closed");
  ExpectFailsUnchanged([&] { return figures_->Fold("booking", RunCheckedOut("e1", "serviceOrders/x", "i1")); });
}

TEST_F(UsageLuaAtomicityTest, FoldWithTheConfirmationTimesOfTheWrongType) {
  Spoil("{usage}:tsorder");
  ExpectFailsUnchanged([&] { return figures_->Fold("booking", QuoteAccepted("e1", "i1")); });
}

// A batch event prepared from what an earlier one of the batch writes (a
// run's completion from its order's acceptance) is prepared after that one
// is folded; when that fold failed, the dependent event fails too (nothing
// written, left for redelivery) while the others fold. Redelivered once the
// key is repaired, the run's completion counts in the acceptance's month.
TEST_F(UsageLuaAtomicityTest, ABatchEventDependingOnAFailedOneFailsToo) {
  // Written by the acceptance only (the run's own keys are fine).
  Spoil("{usage}:d:i2:20260301");
  const std::vector<StreamEvent> batch = {QuoteAccepted("e1", "i2"), RunCheckedOut("e2", "serviceOrders/o-e1", "i2"),
                                          Created("e3")};
  auto st = figures_->FoldBatch("booking", batch);
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[0].code(), absl::StatusCode::kInternal) << st[0];
  EXPECT_EQ(st[1].code(), absl::StatusCode::kInternal) << st[1];
  EXPECT_TRUE(st[2].ok()) << st[2];
  auto applied = pool_->Command({"HMGET", "{usage}:applied", "booking|e1", "booking|e2", "booking|e3"});
  ASSERT_TRUE(applied.ok());
  ASSERT_EQ(applied->elements.size(), 3u);
  EXPECT_TRUE(applied->elements[0].is_nil());
  EXPECT_TRUE(applied->elements[1].is_nil());
  EXPECT_EQ(applied->elements[2].str, "1");
  EXPECT_EQ(pool_->Command({"EXISTS", "{usage}:m:i2:202604", "{usage}:m:i2:202603"})->integer, 0);

  Redis({"DEL", "{usage}:d:i2:20260301"});
  for (const absl::Status& s : figures_->FoldBatch("booking", batch)) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:m:i2:202603", "done|4|organizations/o1"})->str, "1");
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:m:i2:202603", "bk|4|organizations/o1"})->str, "1");
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:m:i2:202604", "eff|4|organizations/o1"})->str, "3600");
  EXPECT_EQ(pool_->Command({"HEXISTS", "{usage}:m:i2:202604", "done|4|organizations/o1"})->integer, 0);
}

// ApplyEvents folds only what the audit append took: an append that fails
// (an index of the wrong type) leaves the batch unfolded, nothing of it
// anywhere. Once the index is repaired the redelivered batch counts once.
TEST_F(UsageLuaAtomicityTest, ApplyEventsFoldsNothingWhenTheAuditAppendFails) {
  Spoil(audit_keys::Index("actor", "users/u1"));
  const std::vector<StreamEvent> batch = {Created("e1"), Created("e2", "i2"), Created("e3")};
  const auto before = testing::Snapshot(*pool_);
  for (const absl::Status& s : ApplyEvents(audit_.get(), figures_.get(), "booking", batch)) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  }
  EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");

  Redis({"DEL", audit_keys::Index("actor", "users/u1")});
  for (int round = 0; round < 2; ++round) {
    for (const absl::Status& s : ApplyEvents(audit_.get(), figures_.get(), "booking", batch)) {
      EXPECT_TRUE(s.ok()) << s;
    }
  }
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:y:i1:2026", BookedField()})->str, "3");  // e0, e1, e3
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:y:i2:2026", BookedField()})->str, "1");
  EXPECT_EQ(audit_->Head()->sequence(), 4);
}

// ---------------------------------------------------------------- audit

TEST_F(UsageLuaAtomicityTest, AppendWithAnIndexOfTheWrongType) {
  Spoil(audit_keys::Index("actor", "users/u1"));
  ExpectFailsUnchanged([&] { return audit_->Append("booking", Created("e1")).status(); });
}

TEST_F(UsageLuaAtomicityTest, AppendAfterAHeadAtTheLastSequence) {
  // A well-formed head (32-byte hash) whose sequence has no successor.
  Redis({"HSET", audit_keys::Head(), "seq", "9223372036854775807", "hash", std::string(32, 'h')});
  ExpectFailsUnchanged([&] { return audit_->Append("booking", Created("e1")).status(); });
}

}  // namespace
}  // namespace labshare::usage
