// Booking's multi-write Lua steps (create, update, maintenance window on and
// off the calendar) check every precondition, overflow included, before
// their first write: Redis does not roll a script back. Each test seeds a
// store, drives one step into a failure that only shows after the step's
// checks (a counter near the int64 limit, a key of the wrong type, a
// conflict on a later document), and finds every key unchanged (DUMP).
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/log.h"
#include "services/booking/redis_booking_store.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_snapshot.h"

namespace labshare::booking {
namespace {

constexpr char kInstrument[] = "i1";
constexpr char kNearMax[] = "9223372036854775507";  // INT64_MAX - 300

class BookingLuaAtomicityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    store_ = std::make_unique<BookingStore>(pool_.get());
    p_ = keys::Partition(kInstrument);
    // An earlier booking b0 with counters, for steps to damage.
    CreateStep first = Step("b0", 1'000, 2'000);
    ASSERT_EQ(store_->Create(first)->kind, StepOutcome::Kind::kApplied);
  }
  void TearDown() override { SetQuietLogging(false); }

  CreateStep Step(const std::string& id, int64_t start, int64_t end) {
    CreateStep s;
    s.partition = p_;
    s.instrument_id = kInstrument;
    s.booking_id = id;
    s.idempotency_key = keys::Idempotency(p_, "CreateBooking", "req-" + id);
    s.fingerprint = "fp-" + id;
    s.booking = "doc-" + id;
    s.blocked_start_ms = start;
    s.blocked_end_ms = end;
    s.reserved_start_ms = start;
    s.swept = true;
    s.counters.push_back(Counter("q1", end - start, CounterCharge::OnOver::kAllow));
    s.counters.push_back(Counter("q2", end - start, CounterCharge::OnOver::kAllow));
    s.events = {"event-" + id};
    return s;
  }
  CounterCharge Counter(const std::string& field, int64_t ms, CounterCharge::OnOver on_over) {
    CounterCharge c;
    c.key = keys::QuotaCounters(p_, kInstrument, "o1");
    c.field = field;
    c.ms = ms;
    c.limit_ms = 1'000'000'000;
    c.on_over = on_over;
    c.over_reason = "QUOTA";
    return c;
  }
  UpdateStep Update(const std::string& id, int64_t version) {
    UpdateStep u;
    u.partition = p_;
    u.instrument_id = kInstrument;
    u.booking_id = id;
    u.idempotency_key = keys::Idempotency(p_, "CheckOut", "req-u-" + id);
    u.fingerprint = "fp-u";
    u.booking = "doc-updated";
    u.expected_version = version;
    u.calendar = UpdateStep::Calendar::kSetEnd;
    u.new_end_ms = 1'500;
    u.due = UpdateStep::Due::kRemove;
    CounterMove m;
    m.key = keys::QuotaCounters(p_, kInstrument, "o1");
    m.field = "q1";
    m.committed_delta_ms = -500;
    m.used_delta_ms = 500;
    u.counters.push_back(m);
    u.events = {"event-updated"};
    return u;
  }

  void Redis(const std::vector<std::string>& cmd) {
    auto v = pool_->Command(cmd);
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_FALSE(v->is_error()) << v->DebugString();
  }
  // Replaces `key` by a value of another type.
  void Spoil(const std::string& key) {
    Redis({"DEL", key});
    Redis({"SET", key, "not what the step writes"});
  }

  template <typename Fn>
  void ExpectFailsUnchanged(Fn&& step) {
    const auto before = testing::Snapshot(*pool_);
    absl::Status status = step();
    EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
    EXPECT_EQ(ErrorReason(status), "STORAGE_ERROR");
    EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
  }
  absl::Status CreateStatus(const CreateStep& s) { return store_->Create(s).status(); }
  absl::Status UpdateStatus(const UpdateStep& u) { return store_->Update(u).status(); }

  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<BookingStore> store_;
  int p_ = 0;
};

TEST_F(BookingLuaAtomicityTest, CreateAndUpdateApplyWhenNothingIsWrong) {
  auto created = store_->Create(Step("b1", 3'000, 4'000));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->kind, StepOutcome::Kind::kApplied);
  auto updated = store_->Update(Update("b1", 1));
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->kind, StepOutcome::Kind::kApplied);
}

// ---------------------------------------------------------------- create

TEST_F(BookingLuaAtomicityTest, CreateWithTheSecondCounterNearOverflow) {
  Redis({"HSET", keys::QuotaCounters(p_, kInstrument, "o1"), "q2:committed", kNearMax});
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

TEST_F(BookingLuaAtomicityTest, CreateReplacingABookingWithACounterNearOverflow) {
  Redis({"HSET", keys::QuotaCounters(p_, kInstrument, "o1"), "q1:committed", kNearMax});
  CreateStep s = Step("b1", 1'000, 2'000);
  s.replaces_booking_id = "b0";  // its calendar entry would go first
  ExpectFailsUnchanged([&] { return CreateStatus(s); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithACounterThatIsNotAnInteger) {
  Redis({"HSET", keys::QuotaCounters(p_, kInstrument, "o1"), "q2:committed", "1.5"});
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithTheListingIndexOfTheWrongType) {
  Spoil(keys::ByInstrument(p_, kInstrument));
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

// The cross-instrument listing indexes (ListBookings) and their span key.
TEST_F(BookingLuaAtomicityTest, CreateWithAUserListingIndexOfTheWrongType) {
  CreateStep s = Step("b1", 3'000, 4'000);
  s.listing_keys = {keys::ListAll(p_, 'b'), keys::ListBy(p_, 'b', "user", "u1")};
  Spoil(keys::ListBy(p_, 'b', "user", "u1"));
  ExpectFailsUnchanged([&] { return CreateStatus(s); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithTheListingSpanOfTheWrongType) {
  CreateStep s = Step("b1", 3'000, 4'000);
  s.listing_keys = {keys::ListAll(p_, 'b')};
  Redis({"HSET", keys::ListSpan(p_), "f", "1"});
  ExpectFailsUnchanged([&] { return CreateStatus(s); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithAListingSpanThatIsNotANumber) {
  CreateStep s = Step("b1", 3'000, 4'000);
  s.listing_keys = {keys::ListAll(p_, 'b')};
  Redis({"SET", keys::ListSpan(p_), "many"});
  ExpectFailsUnchanged([&] { return CreateStatus(s); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithTheCalendarOfTheWrongType) {
  Spoil(keys::Calendar(p_, kInstrument));
  CreateStep s = Step("b1", 3'000, 4'000);
  ExpectFailsUnchanged([&] { return CreateStatus(s); });
}

// An older version's calendar that is neither its two keys nor the
// sentinels a fold leaves: nothing folded, nothing written.
TEST_F(BookingLuaAtomicityTest, CreateWithAnOlderCalendarOfTheWrongType) {
  Redis({"DEL", keys::LegacyCalendarEnds(p_, kInstrument)});
  Redis({"RPUSH", keys::LegacyCalendarEnds(p_, kInstrument), "x"});
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

// On an instrument without any calendar, a failing step leaves no sentinel.
TEST_F(BookingLuaAtomicityTest, CreateOnAFreshInstrumentThatFailsPlantsNothing) {
  Redis({"HSET", keys::QuotaCounters(p_, kInstrument, "o1"), "q2:committed", kNearMax});
  Redis({"DEL", keys::LegacyCalendar(p_, kInstrument), keys::LegacyCalendarEnds(p_, kInstrument),
         keys::Calendar(p_, kInstrument)});
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

// The calendar's spans (keys::CalendarSpan), which the step reads to bound
// its look back and raises with the new entry.
TEST_F(BookingLuaAtomicityTest, CreateWithTheCalendarSpansOfTheWrongType) {
  Spoil(keys::CalendarSpan(p_, kInstrument));
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

// An older version's calendar to fold, beside spans of the wrong type:
// nothing folded, nothing written.
TEST_F(BookingLuaAtomicityTest, CreateFoldingAnOlderCalendarBesideSpansOfTheWrongType) {
  const std::string other = "i2";
  const int p = keys::Partition(other);
  Redis({"ZADD", keys::LegacyCalendar(p, other), "1000", "old"});
  Redis({"HSET", keys::LegacyCalendarEnds(p, other), "old", "2000"});
  Redis({"SET", keys::CalendarSpan(p, other), "long"});
  CreateStep s = Step("b1", 3'000, 4'000);
  s.partition = p;
  s.instrument_id = other;
  s.idempotency_key = keys::Idempotency(p, "CreateBooking", "req-b1");
  s.counters.clear();
  ExpectFailsUnchanged([&] { return CreateStatus(s); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithTheSweepSetOfTheWrongType) {
  Spoil(keys::SweepInstruments(p_));
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithTheOutboxOfTheWrongType) {
  Spoil(keys::Outbox(p_));
  ExpectFailsUnchanged([&] { return CreateStatus(Step("b1", 3'000, 4'000)); });
}

TEST_F(BookingLuaAtomicityTest, CreateWithAConflictOnTheSecondExtraDocument) {
  Redis({"HSET", "{bk:" + std::to_string(p_) + "}:lease:x2", "v", "3", "d", "other"});
  CreateStep s = Step("b1", 3'000, 4'000);
  s.extra_docs = {{keys::Lease(p_, "x1"), "lease-1", 0}, {keys::Lease(p_, "x2"), "lease-2", 0}};
  const auto before = testing::Snapshot(*pool_);
  auto out = store_->Create(s);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, StepOutcome::Kind::kExists);
  EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
}

// ---------------------------------------------------------------- update

TEST_F(BookingLuaAtomicityTest, UpdateWithTheUsedCounterNearOverflow) {
  Redis({"HSET", keys::QuotaCounters(p_, kInstrument, "o1"), "q1:used", kNearMax});
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithTheCommittedCounterNearTheLowerLimit) {
  Redis({"HSET", keys::QuotaCounters(p_, kInstrument, "o1"), "q1:committed", "-9223372036854775800"});
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithTheCalendarOfTheWrongType) {
  Spoil(keys::Calendar(p_, kInstrument));
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithAnOlderCalendarOfTheWrongType) {
  Redis({"DEL", keys::LegacyCalendarEnds(p_, kInstrument)});
  Redis({"SADD", keys::LegacyCalendarEnds(p_, kInstrument), "x"});
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithTheCalendarSpansOfTheWrongType) {
  Spoil(keys::CalendarSpan(p_, kInstrument));
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateForAWindowWithTheWithdrawnWindowsOfTheWrongType) {
  Spoil(keys::WithdrawnWindows(p_, kInstrument));
  UpdateStep u = Update("b0", 1);
  u.window_guard = "w1";
  ExpectFailsUnchanged([&] { return UpdateStatus(u); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithTheDueSetOfTheWrongType) {
  Spoil(keys::Due(p_));
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateRemovingFromACalendarOfTheWrongType) {
  Spoil(keys::Calendar(p_, kInstrument));
  UpdateStep u = Update("b0", 1);
  u.calendar = UpdateStep::Calendar::kRemove;
  ExpectFailsUnchanged([&] { return UpdateStatus(u); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithTheOutboxOfTheWrongType) {
  Spoil(keys::Outbox(p_));
  ExpectFailsUnchanged([&] { return UpdateStatus(Update("b0", 1)); });
}

TEST_F(BookingLuaAtomicityTest, UpdateWithAConflictOnTheSecondExtraDocument) {
  Redis({"HSET", keys::Lease(p_, "x1"), "v", "1", "d", "lease-1"});
  Redis({"HSET", keys::Lease(p_, "x2"), "v", "5", "d", "lease-2"});
  UpdateStep u = Update("b0", 1);
  u.extra_docs = {{keys::Lease(p_, "x1"), "lease-1b", 1}, {keys::Lease(p_, "x2"), "lease-2b", 4}};
  const auto before = testing::Snapshot(*pool_);
  auto out = store_->Update(u);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, StepOutcome::Kind::kConflict);
  EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
}

// ------------------------------------------------ maintenance window steps

TEST_F(BookingLuaAtomicityTest, BlockWindowWithTheCalendarOfTheWrongType) {
  Spoil(keys::Calendar(p_, kInstrument));
  ExpectFailsUnchanged([&] { return store_->BlockWindow(p_, kInstrument, "w1", 5'000, 6'000, 5).status(); });
}

TEST_F(BookingLuaAtomicityTest, RemoveCalendarEntryWithTheCalendarOfTheWrongType) {
  Spoil(keys::Calendar(p_, kInstrument));
  ExpectFailsUnchanged([&] { return store_->RemoveCalendarEntry(p_, kInstrument, "b0"); });
}

TEST_F(BookingLuaAtomicityTest, BlockWindowWithTheCalendarSpansOfTheWrongType) {
  Spoil(keys::CalendarSpan(p_, kInstrument));
  ExpectFailsUnchanged([&] { return store_->BlockWindow(p_, kInstrument, "w1", 5'000, 6'000, 5).status(); });
}

TEST_F(BookingLuaAtomicityTest, UnblockWindowWithTheWithdrawnWindowsOfTheWrongType) {
  ASSERT_TRUE(store_->BlockWindow(p_, kInstrument, "w1", 5'000, 6'000, 5).ok());
  Spoil(keys::WithdrawnWindows(p_, kInstrument));
  ExpectFailsUnchanged([&] { return store_->UnblockWindow(p_, kInstrument, "w1", 5'000); });
}

TEST_F(BookingLuaAtomicityTest, BlockWindowWithAnOlderCalendarOfTheWrongType) {
  Redis({"DEL", keys::LegacyCalendar(p_, kInstrument)});
  Redis({"HSET", keys::LegacyCalendar(p_, kInstrument), "b0", "1"});
  Redis({"DEL", keys::LegacyCalendarEnds(p_, kInstrument)});
  ExpectFailsUnchanged([&] { return store_->BlockWindow(p_, kInstrument, "w1", 5'000, 6'000, 5).status(); });
}

}  // namespace
}  // namespace labshare::booking
