// Test helpers that read and write an instrument's calendar directly
// (keys::Calendar: members "<entry id>!<end - start><reason>" at score
// start), and write an older version's two-key calendar (keys::
// LegacyCalendar, LegacyCalendarEnds) the way that version did.
#ifndef LABSHARE_TESTS_BOOKING_CALENDAR_KEYS_H_
#define LABSHARE_TESTS_BOOKING_CALENDAR_KEYS_H_

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/redis.h"
#include "services/booking/redis_booking_store.h"

namespace labshare::testing {
using booking::CalendarEntry;
namespace keys = booking::keys;

// Every entry of the calendar, by start (then member).
inline std::vector<CalendarEntry> CalendarEntries(RedisPool& pool, int p, const std::string& instrument) {
  std::vector<CalendarEntry> out;
  auto v = pool.Command({"ZRANGE", keys::Calendar(p, instrument), "0", "-1", "WITHSCORES"});
  EXPECT_TRUE(v.ok() && !v->is_error()) << (v.ok() ? v->str : v.status().ToString());
  if (!v.ok()) return out;
  for (size_t i = 0; i + 1 < v->elements.size(); i += 2) {
    CalendarEntry e;
    EXPECT_TRUE(booking::ParseCalendarMember(v->elements[i].str, std::stoll(v->elements[i + 1].str), &e))
        << v->elements[i].str;
    out.push_back(e);
  }
  return out;
}

// The raw member of `entry` and its score, if on the calendar.
inline std::optional<std::pair<std::string, std::string>> CalendarMemberOf(RedisPool& pool, int p,
                                                                           const std::string& instrument,
                                                                           const std::string& entry) {
  auto v = pool.Command({"ZRANGE", keys::Calendar(p, instrument), "0", "-1", "WITHSCORES"});
  EXPECT_TRUE(v.ok() && !v->is_error());
  if (!v.ok()) return std::nullopt;
  for (size_t i = 0; i + 1 < v->elements.size(); i += 2) {
    if (absl::StartsWith(v->elements[i].str, absl::StrCat(entry, "!"))) {
      return std::make_pair(v->elements[i].str, v->elements[i + 1].str);
    }
  }
  return std::nullopt;
}

// The entry's end and reason as CalendarEndValue writes them (absolute end).
inline std::optional<std::string> StoredCalendarEnd(RedisPool& pool, int p, const std::string& instrument,
                                                    const std::string& entry) {
  auto m = CalendarMemberOf(pool, p, instrument, entry);
  if (!m) return std::nullopt;
  CalendarEntry e;
  EXPECT_TRUE(booking::ParseCalendarMember(m->first, std::stoll(m->second), &e)) << m->first;
  return booking::CalendarEndValue(e.end_ms, e.busy_reason);
}

// Replaces the entry's member by one with the given end and reason (0:
// none, as an older version's end alone), at the same start.
inline void RewriteCalendarEnd(RedisPool& pool, int p, const std::string& instrument, const std::string& entry,
                               int64_t end_ms, int busy_reason) {
  auto m = CalendarMemberOf(pool, p, instrument, entry);
  ASSERT_TRUE(m.has_value()) << entry << " is not on the calendar";
  const std::string key = keys::Calendar(p, instrument);
  ASSERT_FALSE(pool.Command({"ZREM", key, m->first})->is_error());
  const std::string member = booking::CalendarMember(entry, std::stoll(m->second), end_ms, busy_reason);
  ASSERT_FALSE(pool.Command({"ZADD", key, m->second, member})->is_error());
}

// An older version's calendar entry: id -> start, id -> end value.
inline void WriteLegacyEntry(RedisPool& pool, int p, const std::string& instrument, const std::string& entry,
                             int64_t start_ms, const std::string& end_value) {
  auto a = pool.Command({"ZADD", keys::LegacyCalendar(p, instrument), std::to_string(start_ms), entry});
  ASSERT_TRUE(a.ok() && !a->is_error()) << (a.ok() ? a->str : a.status().ToString());
  auto b = pool.Command({"HSET", keys::LegacyCalendarEnds(p, instrument), entry, end_value});
  ASSERT_TRUE(b.ok() && !b->is_error()) << (b.ok() ? b->str : b.status().ToString());
}

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_BOOKING_CALENDAR_KEYS_H_
