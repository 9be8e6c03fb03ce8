// Issue 17's merged calendar: an instrument's calendar is one sorted set
// (keys::Calendar, members "<id>!<end - start><reason>"), and a Redis that
// still holds an older version's two keys (keys::LegacyCalendar: id ->
// start; keys::LegacyCalendarEnds: id -> end value) keeps working. Each
// test writes the older form as that version did, then runs the current
// steps and reads: the older entries are folded in once (the step or read
// that meets them, or MigrateCalendars), no overlap is ever written, and
// the older keys are left as string sentinels on which every command an
// older version's step or read sends fails before it writes. Also: entries
// are found by id wherever they start (a document and its entry that
// disagree), and the busy reasons survive the fold.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "common/error.h"
#include "common/log.h"
#include "common/lua_guards.h"
#include "common/redis_pipeline.h"
#include "services/booking/redis_booking_store.h"
#include "tests/booking/calendar_keys.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_snapshot.h"

namespace labshare::booking {
namespace {

class CalendarMigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = labshare::testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    labshare::testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    store_ = std::make_unique<BookingStore>(pool_.get());
  }
  void TearDown() override { SetQuietLogging(false); }

  CreateStep Create(const std::string& instrument, const std::string& id, int64_t start, int64_t end) {
    CreateStep s;
    s.partition = keys::Partition(instrument);
    s.instrument_id = instrument;
    s.booking_id = id;
    s.booking = "doc-" + id;
    s.blocked_start_ms = start;
    s.blocked_end_ms = end;
    s.reserved_start_ms = start;
    s.busy_reason = 1;
    s.events = {"event-" + id};
    return s;
  }
  UpdateStep Update(const std::string& instrument, const std::string& id, int64_t version,
                    UpdateStep::Calendar op, int64_t start_ms, int64_t new_end_ms = 0) {
    UpdateStep u;
    u.blocked_start_ms = start_ms;
    u.new_end_ms = new_end_ms;
    u.partition = keys::Partition(instrument);
    u.instrument_id = instrument;
    u.booking_id = id;
    u.booking = "doc-" + id + "-" + std::to_string(version + 1);
    u.expected_version = version;
    u.calendar = op;
    u.busy_reason = 2;
    u.events = {"event-u-" + id};
    return u;
  }
  // A booking document at version 1, as an older version's create left it.
  void Document(const std::string& instrument, const std::string& id) {
    ASSERT_FALSE(pool_->Command({"HSET", keys::Booking(keys::Partition(instrument), id), "v", "1", "d", "doc-" + id})
                     ->is_error());
  }
  std::string Type(const std::string& key) { return pool_->Command({"TYPE", key})->str; }
  // Both older keys are sentinels (strings), the calendar a sorted set or gone.
  void ExpectFolded(const std::string& instrument) {
    const int p = keys::Partition(instrument);
    EXPECT_EQ(Type(keys::LegacyCalendar(p, instrument)), "string");
    EXPECT_EQ(Type(keys::LegacyCalendarEnds(p, instrument)), "string");
  }
  std::vector<CalendarEntry> Range(const std::string& instrument, int64_t from, int64_t to) {
    auto r = store_->CalendarRange(keys::Partition(instrument), instrument, from, to);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<CalendarEntry>();
  }
  // The older calendar of "i1": two bookings (one end with a reason, one
  // without), a window, and an id with a start but no end (on no older
  // reader's calendar: not folded).
  void OlderCalendar() {
    const int p = keys::Partition("i1");
    labshare::testing::WriteLegacyEntry(*pool_, p, "i1", "b1", 1'000, CalendarEndValue(2'000, 2));
    labshare::testing::WriteLegacyEntry(*pool_, p, "i1", "b2", 3'000, "4000");
    labshare::testing::WriteLegacyEntry(*pool_, p, "i1", WindowEntry("w1"), 6'000, CalendarEndValue(8'000, 5));
    ASSERT_FALSE(pool_->Command({"ZADD", keys::LegacyCalendar(p, "i1"), "9000", "lost"})->is_error());
    Document("i1", "b1");
    Document("i1", "b2");
  }

  labshare::testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<BookingStore> store_;
};

TEST_F(CalendarMigrationTest, MembersCarryEndAndReasonAndRankAsTheirIds) {
  EXPECT_EQ(CalendarMember("p07-00ff", 1'000, 4'600, 2), "p07-00ff!3600\t");
  EXPECT_EQ(CalendarMember("mw:w1", 0, 5, 0), "mw:w1!5");
  CalendarEntry e;
  ASSERT_TRUE(ParseCalendarMember("ab-c!3600\t", 1'000, &e));
  EXPECT_EQ(e.booking_id, "ab-c");
  EXPECT_EQ(e.start_ms, 1'000);
  EXPECT_EQ(e.end_ms, 4'600);
  EXPECT_EQ(e.busy_reason, 2);
  EXPECT_FALSE(ParseCalendarMember("ab-c", 0, &e));
  EXPECT_FALSE(ParseCalendarMember("ab!x", 0, &e));
  // Ties of one start rank by id, as the older calendar's members did:
  // '!' sorts below every id character ([a-z0-9-], ':' of "mw:").
  for (char c : std::string("abz09-:")) EXPECT_LT(kCalendarSeparator, c);
  for (const char* id : {"abc", "abc-d", "abc0", "mw:abc"}) {
    ASSERT_TRUE(store_->BlockWindow(keys::Partition("i9"), "i9", id, 1'000, 2'000, 5).ok());
  }
  std::vector<std::string> ids;
  for (const auto& x : labshare::testing::CalendarEntries(*pool_, keys::Partition("i9"), "i9")) {
    ids.push_back(x.booking_id);
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"mw:abc", "mw:abc-d", "mw:abc0", "mw:mw:abc"}));
}

TEST_F(CalendarMigrationTest, AReadFoldsTheOlderCalendarWithItsReasons) {
  OlderCalendar();
  auto cal = Range("i1", 0, 100'000);
  ASSERT_EQ(cal.size(), 3u);
  EXPECT_EQ(cal[0].booking_id, "b1");
  EXPECT_EQ(cal[0].end_ms, 2'000);
  EXPECT_EQ(cal[0].busy_reason, 2);
  EXPECT_EQ(cal[1].booking_id, "b2");
  EXPECT_EQ(cal[1].start_ms, 3'000);
  EXPECT_EQ(cal[1].end_ms, 4'000);
  EXPECT_EQ(cal[1].busy_reason, 0);  // the end alone: readers use the document
  EXPECT_EQ(cal[2].booking_id, "mw:w1");
  EXPECT_EQ(cal[2].end_ms, 8'000);
  EXPECT_EQ(cal[2].busy_reason, 5);
  ExpectFolded("i1");
  auto docs = store_->ReadCalendarWithDocs(keys::Partition("i1"), "i1", 0, 100'000);
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->docs.size(), 3u);
  EXPECT_FALSE(docs->docs[0].has_value());
  ASSERT_TRUE(docs->docs[1].has_value());
  EXPECT_EQ(docs->docs[1]->data, "doc-b2");
}

TEST_F(CalendarMigrationTest, ACreateFoldsFirstAndNeverOverlapsAnOlderEntry) {
  OlderCalendar();
  auto taken = store_->Create(Create("i1", "n1", 3'500, 5'000));
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->kind, StepOutcome::Kind::kSlotTaken);
  EXPECT_EQ(taken->conflicting, "b2");
  ExpectFolded("i1");
  auto window = store_->Create(Create("i1", "n2", 4'000, 6'001));
  ASSERT_TRUE(window.ok());
  EXPECT_EQ(window->kind, StepOutcome::Kind::kSlotTaken);
  EXPECT_EQ(window->conflicting, "mw:w1");
  auto fits = store_->Create(Create("i1", "n3", 4'000, 6'000));  // half-open on both sides
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(fits->kind, StepOutcome::Kind::kApplied);
  EXPECT_EQ(Range("i1", 0, 100'000).size(), 4u);
}

TEST_F(CalendarMigrationTest, UpdatesFindOlderEntriesAfterTheFold) {
  OlderCalendar();
  // Cancel b1 (its entry goes), shorten b2, then another step keeps w1.
  ASSERT_EQ(store_->Update(Update("i1", "b1", 1, UpdateStep::Calendar::kRemove, 1'000))->kind,
            StepOutcome::Kind::kApplied);
  ASSERT_EQ(store_->Update(Update("i1", "b2", 1, UpdateStep::Calendar::kSetEnd, 3'000, 3'500))->kind,
            StepOutcome::Kind::kApplied);
  auto cal = Range("i1", 0, 100'000);
  ASSERT_EQ(cal.size(), 2u);
  EXPECT_EQ(cal[0].booking_id, "b2");
  EXPECT_EQ(cal[0].end_ms, 3'500);
  EXPECT_EQ(cal[0].busy_reason, 2);
  // b1's time is free again, and stays so: nothing folds twice.
  EXPECT_EQ(store_->Create(Create("i1", "n1", 1'000, 2'000))->kind, StepOutcome::Kind::kApplied);
  EXPECT_EQ(store_->FoldCalendar(keys::Partition("i1"), "i1").value_or(-1), 0);
  EXPECT_EQ(Range("i1", 0, 100'000).size(), 3u);
}

TEST_F(CalendarMigrationTest, WindowStepsFoldAndMoveAWindowWhereverItStarts) {
  OlderCalendar();
  const int p = keys::Partition("i1");
  ASSERT_TRUE(store_->BlockWindow(p, "i1", "w1", 5'000, 7'000, 5).ok());  // moved earlier
  auto cal = Range("i1", 0, 100'000);
  ASSERT_EQ(cal.size(), 3u);
  EXPECT_EQ(cal[2].booking_id, "mw:w1");
  EXPECT_EQ(cal[2].start_ms, 5'000);
  EXPECT_EQ(cal[2].end_ms, 7'000);
  ASSERT_TRUE(store_->RemoveCalendarEntry(p, "i1", WindowEntry("w1")).ok());
  ASSERT_TRUE(store_->RemoveCalendarEntry(p, "i1", "b2", 3'000).ok());
  cal = Range("i1", 0, 100'000);
  ASSERT_EQ(cal.size(), 1u);
  EXPECT_EQ(cal[0].booking_id, "b1");
}

// A document and its entry that disagree (an entry left where an older
// step put it): removing and moving the end find it by id all the same;
// keeping it (a change of reason) leaves an entry not at the given start.
TEST_F(CalendarMigrationTest, EntriesAreFoundByIdWhenNotAtTheGivenStart) {
  ASSERT_EQ(store_->Create(Create("i1", "b1", 1'000, 2'000))->kind, StepOutcome::Kind::kApplied);
  ASSERT_EQ(store_->Update(Update("i1", "b1", 1, UpdateStep::Calendar::kKeep, 1'500))->kind,
            StepOutcome::Kind::kApplied);
  EXPECT_EQ(Range("i1", 0, 10'000).at(0).busy_reason, 1);
  ASSERT_EQ(store_->Update(Update("i1", "b1", 2, UpdateStep::Calendar::kSetEnd, 1'500, 1'800))->kind,
            StepOutcome::Kind::kApplied);
  auto cal = Range("i1", 0, 10'000);
  ASSERT_EQ(cal.size(), 1u);
  EXPECT_EQ(cal[0].start_ms, 1'000);
  EXPECT_EQ(cal[0].end_ms, 1'800);
  EXPECT_EQ(cal[0].busy_reason, 2);
  ASSERT_EQ(store_->Update(Update("i1", "b1", 3, UpdateStep::Calendar::kRemove, 1'500))->kind,
            StepOutcome::Kind::kApplied);
  EXPECT_TRUE(Range("i1", 0, 10'000).empty());
}

TEST_F(CalendarMigrationTest, MigrateCalendarsFoldsEveryInstrumentOnce) {
  OlderCalendar();
  for (const char* instr : {"i2", "i3", "x-7"}) {
    labshare::testing::WriteLegacyEntry(*pool_, keys::Partition(instr), instr, "b-" + std::string(instr), 10,
                                        CalendarEndValue(20, 1));
  }
  ASSERT_FALSE(pool_->Command({"ZADD", "{bk:3}:cal:", "1", "not-ours"})->is_error());  // no instrument: left alone
  auto moved = store_->MigrateCalendars();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 4 + 3);  // what the older sets held ("lost" went nowhere)
  for (const char* instr : {"i1", "i2", "i3", "x-7"}) ExpectFolded(instr);
  EXPECT_EQ(Range("x-7", 0, 100).at(0).booking_id, "b-x-7");
  EXPECT_EQ(pool_->Command({"EXISTS", "{booking}:migrated:calendar"})->integer, 1);
  EXPECT_EQ(store_->MigrateCalendars().value_or(-1), 0);
}

// The first step that writes a calendar leaves the sentinels even where no
// older calendar was; every command an older version's steps and reads send
// to its two keys then fails (WRONGTYPE), so an older replica of a rolling
// upgrade can neither book past entries it cannot see nor answer from an
// empty calendar.
TEST_F(CalendarMigrationTest, OlderVersionsFailOnTheSentinelsBeforeWriting) {
  ASSERT_EQ(store_->Create(Create("i1", "b1", 1'000, 2'000))->kind, StepOutcome::Kind::kApplied);
  ExpectFolded("i1");
  const int p = keys::Partition("i1");
  const std::string cal = keys::LegacyCalendar(p, "i1"), ends = keys::LegacyCalendarEnds(p, "i1");
  const auto before = labshare::testing::Snapshot(*pool_);
  // What the older create, update, window and read paths send first to
  // these keys (redis_booking_store.cc of the previous version).
  const std::vector<std::vector<std::string>> older = {
      {"ZREVRANGEBYSCORE", cal, "(3000", "-inf", "LIMIT", "0", "2"},
      {"ZREVRANGEBYSCORE", cal, "(3000", "-inf", "WITHSCORES", "LIMIT", "0", "1"},
      {"ZRANGEBYSCORE", cal, "0", "(3000", "WITHSCORES"},
      {"ZRANGEBYSCORE", cal, "(0", "+inf", "WITHSCORES", "LIMIT", "0", "2"},
      {"HGET", ends, "b1"},
      {"HMGET", ends, "b1"},
      {"ZREM", cal, "b1"},
      {"HDEL", ends, "b1"},
  };
  for (const auto& c : older) {
    auto v = pool_->Command(c);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_TRUE(v->is_error() && absl::StartsWith(v->str, "WRONGTYPE")) << c[0] << ": " << v->DebugString();
  }
  // The older steps' type guard (common/lua_guards.h) refuses them too.
  for (const auto& [key, want] : {std::pair{cal, "zset"}, std::pair{ends, "hash"}}) {
    auto v = pool_->Command({"EVAL", std::string(kLuaGuards) + "return ls_type_is(KEYS[1], ARGV[1]) and 1 or 0",
                             "1", key, want});
    ASSERT_TRUE(v.ok() && !v->is_error());
    EXPECT_EQ(v->integer, 0) << key;
  }
  EXPECT_EQ(labshare::testing::SnapshotDiff(before, labshare::testing::Snapshot(*pool_)), "");
}

// The pipelined reads (QueryAvailability, SearchAvailableInstruments,
// check-in's next start) fold what they meet too.
TEST_F(CalendarMigrationTest, PipelinedReadsFold) {
  OlderCalendar();
  labshare::testing::WriteLegacyEntry(*pool_, keys::Partition("i2"), "i2", "c1", 100, CalendarEndValue(200, 3));
  RedisPipeline pipeline(redis_->options(), 1, 16);
  BookingStore store(pool_.get(), &pipeline);
  absl::Notification one;
  absl::StatusOr<BookingStore::CalendarWithDocs> with_docs;
  store.CalendarWithDocsAsync(keys::Partition("i1"), "i1", 0, 100'000, [&](auto r) {
    with_docs = std::move(r);
    one.Notify();
  });
  one.WaitForNotification();
  ASSERT_TRUE(with_docs.ok()) << with_docs.status();
  ASSERT_EQ(with_docs->entries.size(), 3u);
  ASSERT_TRUE(with_docs->docs[1].has_value());
  EXPECT_EQ(with_docs->docs[1]->data, "doc-b2");
  ExpectFolded("i1");
  labshare::testing::WriteLegacyEntry(*pool_, keys::Partition("i3"), "i3", "c3", 100, CalendarEndValue(200, 1));
  absl::Notification two;
  absl::StatusOr<std::vector<std::vector<CalendarEntry>>> lists;
  store.CalendarsAsync({{keys::Partition("i1"), "i1", 0, 100'000},
                        {keys::Partition("i2"), "i2", 0, 1'000},
                        {keys::Partition("i3"), "i3", 150, 1'000},
                        {keys::Partition("i4"), "i4", 0, 1'000}},
                       [&](auto r) {
                         lists = std::move(r);
                         two.Notify();
                       });
  two.WaitForNotification();
  ASSERT_TRUE(lists.ok()) << lists.status();
  ASSERT_EQ(lists->size(), 4u);
  EXPECT_EQ((*lists)[0].size(), 3u);
  ASSERT_EQ((*lists)[1].size(), 1u);
  EXPECT_EQ((*lists)[1][0].busy_reason, 3);
  ASSERT_EQ((*lists)[2].size(), 1u);  // starts before 150, ends after
  EXPECT_EQ((*lists)[2][0].booking_id, "c3");
  EXPECT_TRUE((*lists)[3].empty());
  ExpectFolded("i2");
  ExpectFolded("i3");
  labshare::testing::WriteLegacyEntry(*pool_, keys::Partition("i5"), "i5", "d1", 100, "200");
  auto next = store.NextCalendarStart(keys::Partition("i5"), "i5", 0, "");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->value_or(-1), 100);
  ExpectFolded("i5");
}

}  // namespace
}  // namespace labshare::booking
