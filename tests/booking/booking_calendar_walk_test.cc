// The walk back over a calendar (redis_booking_store.h): whatever reads the
// entries before a moment (the create step, an update's overlap guard,
// CalendarRange on the pool and on the pipeline) goes back past window
// entries, which may lie around or inside a booking's block, to find every
// entry that reaches past that moment; and no further back than the longest
// entry put on the calendar could reach (keys::CalendarSpan), so years of
// windows before a read are not read. Each test writes through the store's
// own steps, then reads at the bound: an entry exactly as long as the
// longest is still found at its last millisecond and not at its end
// (half-open).
#include <gtest/gtest.h>

#include <future>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "common/redis_pipeline.h"
#include "services/booking/redis_booking_store.h"
#include "tests/booking/calendar_keys.h"
#include "tests/support/redis_server.h"

namespace labshare::booking {
namespace {

constexpr char kInstrument[] = "i1";
constexpr int64_t kHour = 3'600'000;
constexpr int64_t kDay = 24 * kHour;
constexpr int64_t kT0 = 1'800'000'000'000;  // an instant in 2027

class CalendarWalkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = labshare::testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    labshare::testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    pipeline_ = std::make_unique<RedisPipeline>(redis_->options());
    store_ = std::make_unique<BookingStore>(pool_.get(), pipeline_.get());
    p_ = keys::Partition(kInstrument);
  }
  void TearDown() override { SetQuietLogging(false); }

  CreateStep Step(const std::string& id, int64_t start, int64_t end) {
    CreateStep s;
    s.partition = p_;
    s.instrument_id = kInstrument;
    s.booking_id = id;
    s.booking = "doc-" + id;
    s.blocked_start_ms = start;
    s.blocked_end_ms = end;
    s.reserved_start_ms = start;
    s.busy_reason = 1;
    s.events = {"event-" + id};
    return s;
  }
  // The create step's answer: "" applied, else the entry in the way.
  std::string TryBook(const std::string& id, int64_t start, int64_t end) {
    auto out = store_->Create(Step(id, start, end));
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return "error";
    if (out->kind == StepOutcome::Kind::kApplied) return "";
    EXPECT_EQ(out->kind, StepOutcome::Kind::kSlotTaken);
    return out->conflicting;
  }
  void Book(const std::string& id, int64_t start, int64_t end) { ASSERT_EQ(TryBook(id, start, end), ""); }
  void Window(const std::string& id, int64_t start, int64_t end) {
    auto blocked = store_->BlockWindow(p_, kInstrument, id, start, end, 5);
    ASSERT_TRUE(blocked.ok()) << blocked.status();
    ASSERT_TRUE(*blocked);
  }
  // The ids CalendarRange answers for [from, to), on the pool and (the
  // same, asked) through the pipeline's CalendarsAsync.
  std::vector<std::string> Range(int64_t from, int64_t to) {
    std::vector<std::string> ids, async_ids;
    BookingStore pooled(pool_.get());
    auto r = pooled.CalendarRange(p_, kInstrument, from, to);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      for (const auto& e : *r) ids.push_back(e.booking_id);
    }
    std::promise<absl::StatusOr<std::vector<std::vector<CalendarEntry>>>> answer;
    store_->CalendarsAsync({{p_, kInstrument, from, to}}, [&](auto a) { answer.set_value(std::move(a)); });
    auto a = answer.get_future().get();
    EXPECT_TRUE(a.ok()) << a.status();
    if (a.ok() && a->size() == 1) {
      for (const auto& e : (*a)[0]) async_ids.push_back(e.booking_id);
    }
    EXPECT_EQ(ids, async_ids) << "CalendarsAsync answers what CalendarRange does";
    return ids;
  }
  // How many ZREVRANGEBYSCORE Redis ran (scripts' calls included) since the
  // last ResetStats.
  void ResetStats() { ASSERT_FALSE(pool_->Command({"CONFIG", "RESETSTAT"})->is_error()); }
  int64_t WalkCalls() {
    auto v = pool_->Command({"INFO", "commandstats"});
    EXPECT_TRUE(v.ok() && !v->is_error());
    for (absl::string_view line : absl::StrSplit(v->str, '\n')) {
      if (!absl::ConsumePrefix(&line, "cmdstat_zrevrangebyscore:calls=")) continue;
      int64_t n = 0;
      EXPECT_TRUE(absl::SimpleAtoi(line.substr(0, line.find(',')), &n)) << line;
      return n;
    }
    return 0;
  }

  labshare::testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<RedisPipeline> pipeline_;
  std::unique_ptr<BookingStore> store_;
  int p_ = 0;
};

// A 40-day block (a lease with the lessee) with windows inside it, more
// than any first page of a look back: the block is the longest entry, and
// at its last millisecond every reader still finds it; at its end (half-
// open) nobody does.
TEST_F(CalendarWalkTest, TheLongestBookingIsFoundAtItsLastMillisecondPastTheWindowsInsideIt) {
  const int64_t length = 40 * kDay;
  Book("lease", kT0, kT0 + length);
  for (int k = 0; k < 10; ++k) Window("w" + std::to_string(k), kT0 + kDay + k * kHour, kT0 + kDay + k * kHour + 1);
  const int64_t last = kT0 + length - 1;
  EXPECT_EQ(Range(last, last + kHour), std::vector<std::string>{"lease"});
  EXPECT_EQ(TryBook("b1", last, last + kHour), "lease");
  EXPECT_EQ(Range(last + 1, last + kHour), std::vector<std::string>{});
  EXPECT_EQ(TryBook("b2", last + 1, last + kHour), "");
}

// A window as long as the bound, around a booking it left alone: the
// booking is the nearest entry before a read after it, and the window
// still covers that read. The walk goes on past the booking over windows
// (it stopped at the booking: the window was hidden, QueryAvailability
// showed free time there and a booking could be made inside the window).
TEST_F(CalendarWalkTest, AWindowAroundABookingItLeftAloneIsFoundPastThatBooking) {
  Book("lease", kT0 + kDay, kT0 + 3 * kDay);
  const int64_t length = 10 * kDay;
  Window("long", kT0, kT0 + length);
  const int64_t last = kT0 + length - 1;
  EXPECT_EQ(Range(kT0 + 5 * kDay, kT0 + 6 * kDay), std::vector<std::string>{"mw:long"});
  EXPECT_EQ(Range(last, last + kHour), std::vector<std::string>{"mw:long"});
  EXPECT_EQ(TryBook("inside", kT0 + 5 * kDay, kT0 + 6 * kDay), "mw:long");
  EXPECT_EQ(TryBook("at-the-end", last, last + kHour), "mw:long");
  EXPECT_EQ(Range(last + 1, last + kHour), std::vector<std::string>{});
  EXPECT_EQ(TryBook("after", last + 1, last + kHour), "");
}

// The same with several bookings (made before the window) and shorter
// windows between the long window's start and the read.
TEST_F(CalendarWalkTest, AWindowAroundSeveralBookingsIsFoundPastThemAll) {
  Book("lease", kT0 + kDay, kT0 + 3 * kDay);
  Book("b1", kT0 + 6 * kDay, kT0 + 6 * kDay + kHour);
  Book("b2", kT0 + 8 * kDay, kT0 + 8 * kDay + kHour);
  for (int k = 0; k < 6; ++k) {
    Window("s" + std::to_string(k), kT0 + 7 * kDay + 2 * k * kHour, kT0 + 7 * kDay + (2 * k + 1) * kHour);
  }
  Window("long", kT0, kT0 + 10 * kDay);
  EXPECT_EQ(Range(kT0 + 9 * kDay, kT0 + 9 * kDay + kHour), std::vector<std::string>{"mw:long"});
  EXPECT_EQ(TryBook("late", kT0 + 9 * kDay, kT0 + 9 * kDay + kHour), "mw:long");
}

// Two years of short windows before a read, and nothing else: the create
// step and CalendarRange read back no further than the longest entry (one
// hour) reaches: one ZREVRANGEBYSCORE each, not one per page of windows.
TEST_F(CalendarWalkTest, YearsOfWindowsBeforeAReadAreNotWalked) {
  const int windows = 2 * 365;
  for (int k = 0; k < windows; ++k) {
    Window("d" + std::to_string(k), kT0 + k * kDay, kT0 + k * kDay + kHour);
  }
  const int64_t at = kT0 + windows * kDay;
  ResetStats();
  EXPECT_EQ(TryBook("b", at, at + kHour), "");
  EXPECT_LE(WalkCalls(), 1);
  ResetStats();
  BookingStore pooled(pool_.get());
  auto r = pooled.CalendarRange(p_, kInstrument, at + 2 * kHour, at + 3 * kHour);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->empty());
  EXPECT_LE(WalkCalls(), 1);
  // A window one hour long (the longest) still covers its last millisecond.
  const int64_t last = kT0 + (windows - 1) * kDay + kHour - 1;
  EXPECT_EQ(Range(last, last + 1), std::vector<std::string>{"mw:d" + std::to_string(windows - 1)});
  EXPECT_EQ(TryBook("c", last, last + 1), "mw:d" + std::to_string(windows - 1));
}

// A year-long window long ago (the longest entry by far), then many
// bookings: a walk back stops at the nearest booking and reads the windows
// by end, not every booking made since that window.
TEST_F(CalendarWalkTest, AYearLongWindowLongAgoDoesNotLengthenEveryWalk) {
  Book("leased", kT0 + 300 * kDay, kT0 + 301 * kDay);  // left alone by the window
  Window("year", kT0, kT0 + 365 * kDay);
  const int64_t after = kT0 + 366 * kDay;
  for (int k = 0; k < 300; ++k) Book("b" + std::to_string(k), after + k * kHour, after + k * kHour + kHour / 2);
  const int64_t at = after + 300 * kHour;
  ResetStats();
  EXPECT_EQ(TryBook("next", at, at + kHour), "");
  EXPECT_LE(WalkCalls(), 1);
  ResetStats();
  BookingStore pooled(pool_.get());
  auto r = pooled.CalendarRange(p_, kInstrument, at + 2 * kHour, at + 3 * kHour);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->empty());
  EXPECT_LE(WalkCalls(), 1);
  // The year-long window still covers its last millisecond, past the
  // booking it left alone.
  const int64_t last = kT0 + 365 * kDay - 1;
  EXPECT_EQ(Range(last, last + 1), std::vector<std::string>{"mw:year"});
  EXPECT_EQ(TryBook("inside", last, last + 1), "mw:year");
}

// A block grown at its end (UpdateStep kSetEnd: an extended lease) raises
// the bound: the grown block is found at its new last millisecond past
// windows inside it.
TEST_F(CalendarWalkTest, ABlockGrownAtItsEndIsFoundAtItsNewEnd) {
  Book("lease", kT0, kT0 + kDay);
  UpdateStep u;
  u.partition = p_;
  u.instrument_id = kInstrument;
  u.booking_id = "lease";
  u.booking = "doc-lease-2";
  u.expected_version = 1;
  u.calendar = UpdateStep::Calendar::kSetEnd;
  u.blocked_start_ms = kT0;
  u.new_end_ms = kT0 + 30 * kDay;
  u.busy_reason = 4;
  auto out = store_->Update(u);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->kind, StepOutcome::Kind::kApplied);
  for (int k = 0; k < 8; ++k) Window("w" + std::to_string(k), kT0 + 2 * kDay + k * kHour, kT0 + 2 * kDay + k * kHour + 1);
  const int64_t last = kT0 + 30 * kDay - 1;
  EXPECT_EQ(Range(last, last + kHour), std::vector<std::string>{"lease"});
  EXPECT_EQ(TryBook("b", last, last + kHour), "lease");
  EXPECT_EQ(TryBook("c", last + 1, last + kHour), "");
}

// A calendar an earlier version wrote has no spans: readers walk back
// without a bound (as that version did) and find its longest entry;
// MigrateCalendarSpans gives it spans from every entry, once.
TEST_F(CalendarWalkTest, ACalendarWithoutSpansIsWalkedWithoutABoundUntilMigrated) {
  Book("lease", kT0, kT0 + 20 * kDay);
  for (int k = 0; k < 8; ++k) Window("w" + std::to_string(k), kT0 + kDay + k * kHour, kT0 + kDay + k * kHour + 1);
  // As an earlier version left it: no spans, no windows by end.
  ASSERT_EQ(pool_->Command({"DEL", keys::CalendarSpan(p_, kInstrument), keys::CalendarWindows(p_, kInstrument)})
                ->integer,
            2);
  const int64_t last = kT0 + 20 * kDay - 1;
  EXPECT_EQ(Range(last, last + kHour), std::vector<std::string>{"lease"});
  EXPECT_EQ(TryBook("b", last, last + kHour), "lease");
  // Steps of this version leave unknown spans unknown (they cannot know
  // the entries before them).
  Window("x", kT0 + 25 * kDay, kT0 + 25 * kDay + kHour);
  EXPECT_EQ(pool_->Command({"EXISTS", keys::CalendarSpan(p_, kInstrument)})->integer, 0);
  auto migrated = store_->MigrateCalendarSpans();
  ASSERT_TRUE(migrated.ok()) << migrated.status();
  EXPECT_EQ(*migrated, 1);
  auto spans = pool_->Command({"HMGET", keys::CalendarSpan(p_, kInstrument), "b", "w"});
  ASSERT_EQ(spans->elements.size(), 2u);
  EXPECT_EQ(spans->elements[0].str, std::to_string(20 * kDay));
  EXPECT_EQ(spans->elements[1].str, std::to_string(kHour));
  EXPECT_EQ(pool_->Command({"ZCARD", keys::CalendarWindows(p_, kInstrument)})->integer, 9);
  EXPECT_EQ(Range(last, last + kHour), std::vector<std::string>{"lease"});
  EXPECT_EQ(TryBook("c", last, last + kHour), "lease");
  EXPECT_EQ(store_->MigrateCalendarSpans().value_or(-1), 0);  // the marker
}

// An older version's two-key calendar folded in: the spans count its
// entries.
TEST_F(CalendarWalkTest, AFoldedOlderCalendarRaisesTheSpans) {
  labshare::testing::WriteLegacyEntry(*pool_, p_, kInstrument, "old", kT0, CalendarEndValue(kT0 + 15 * kDay, 4));
  labshare::testing::WriteLegacyEntry(*pool_, p_, kInstrument, WindowEntry("ow"), kT0 + kDay,
                                      CalendarEndValue(kT0 + kDay + 2 * kHour, 5));
  for (int k = 0; k < 8; ++k) Window("w" + std::to_string(k), kT0 + 2 * kDay + k * kHour, kT0 + 2 * kDay + k * kHour + 1);
  const int64_t last = kT0 + 15 * kDay - 1;
  EXPECT_EQ(Range(last, last + kHour), std::vector<std::string>{"old"});
  EXPECT_EQ(TryBook("b", last, last + kHour), "old");
  auto spans = pool_->Command({"HMGET", keys::CalendarSpan(p_, kInstrument), "b", "w"});
  ASSERT_EQ(spans->elements.size(), 2u);
  EXPECT_EQ(spans->elements[0].str, std::to_string(15 * kDay));
  EXPECT_EQ(spans->elements[1].str, std::to_string(2 * kHour));
}

// UpdateStep::guard_overlap: a block grown at its end is checked over the
// extension [old end, new end) only, an entry starting before it that
// reaches into it included; what lies inside the old block (a window that
// left the lease alone) is not in the way.
TEST_F(CalendarWalkTest, AnOverlapGuardLooksAtTheExtensionOnly) {
  Book("lease", kT0, kT0 + 10 * kDay);
  Window("inside", kT0 + 3 * kDay, kT0 + 4 * kDay);
  Window("across", kT0 + 9 * kDay, kT0 + 11 * kDay);
  Book("next", kT0 + 15 * kDay, kT0 + 16 * kDay);
  auto grow = [&](int64_t from, int64_t to, int64_t version) {
    UpdateStep u;
    u.partition = p_;
    u.instrument_id = kInstrument;
    u.booking_id = "lease";
    u.booking = "doc-lease-" + std::to_string(version + 1);
    u.expected_version = version;
    u.calendar = UpdateStep::Calendar::kSetEnd;
    u.blocked_start_ms = kT0;
    u.new_end_ms = to;
    u.guard_from_ms = from;
    u.guard_to_ms = to;
    u.guard_overlap = true;
    auto out = store_->Update(u);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : StepOutcome();
  };
  StepOutcome o = grow(kT0 + 10 * kDay, kT0 + 12 * kDay, 1);
  EXPECT_EQ(o.kind, StepOutcome::Kind::kSlotTaken);
  EXPECT_EQ(o.conflicting, "mw:across");
  ASSERT_TRUE(store_->UnblockWindow(p_, kInstrument, "across", kT0 + 9 * kDay).ok());
  o = grow(kT0 + 10 * kDay, kT0 + 15 * kDay + 1, 1);
  EXPECT_EQ(o.kind, StepOutcome::Kind::kSlotTaken);
  EXPECT_EQ(o.conflicting, "next");
  o = grow(kT0 + 10 * kDay, kT0 + 15 * kDay, 1);  // up to the next block's start: free
  EXPECT_EQ(o.kind, StepOutcome::Kind::kApplied);
  EXPECT_EQ(Range(kT0 + 15 * kDay - 1, kT0 + 15 * kDay), std::vector<std::string>{"lease"});
}

// A withdrawn window (UnblockWindow: seen cancelled) is never blocked again,
// and a step made for it (UpdateStep::window_guard) writes nothing.
TEST_F(CalendarWalkTest, AWithdrawnWindowIsNotBlockedAgainAndGuardsItsSteps) {
  Book("b", kT0, kT0 + kHour);
  Window("w", kT0 + kHour, kT0 + 3 * kHour);
  Window("w", kT0, kT0 + 2 * kHour);  // applied again, moved: one entry, here and by end
  auto ends = pool_->Command({"ZRANGE", keys::CalendarWindows(p_, kInstrument), "0", "-1", "WITHSCORES"});
  ASSERT_EQ(ends->elements.size(), 2u);
  EXPECT_EQ(ends->elements[1].str, std::to_string(kT0 + 2 * kHour));
  ASSERT_TRUE(store_->UnblockWindow(p_, kInstrument, "w", kT0).ok());
  EXPECT_EQ(pool_->Command({"ZCARD", keys::CalendarWindows(p_, kInstrument)})->integer, 0);
  auto blocked = store_->BlockWindow(p_, kInstrument, "w", kT0, kT0 + 2 * kHour, 5);
  ASSERT_TRUE(blocked.ok()) << blocked.status();
  EXPECT_FALSE(*blocked);
  EXPECT_EQ(Range(kT0, kT0 + 3 * kHour), std::vector<std::string>{"b"});
  UpdateStep u;
  u.partition = p_;
  u.instrument_id = kInstrument;
  u.booking_id = "b";
  u.booking = "doc-b-cancelled";
  u.expected_version = 1;
  u.calendar = UpdateStep::Calendar::kRemove;
  u.blocked_start_ms = kT0;
  u.window_guard = "w";
  u.events = {"cancelled"};
  auto out = store_->Update(u);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, StepOutcome::Kind::kWindowWithdrawn);
  EXPECT_EQ(Range(kT0, kT0 + 3 * kHour), std::vector<std::string>{"b"});
  EXPECT_EQ(pool_->Command({"HGET", keys::Booking(p_, "b"), "d"})->str, "doc-b");
  u.window_guard = "another";
  out = store_->Update(u);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, StepOutcome::Kind::kApplied);
}

}  // namespace
}  // namespace labshare::booking
