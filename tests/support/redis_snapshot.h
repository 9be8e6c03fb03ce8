// Every key of a Redis database as DUMP bytes, for tests that check that a
// rejected step wrote nothing: snapshot before, drive the step into a
// failure, snapshot after, compare.
#ifndef LABSHARE_TESTS_SUPPORT_REDIS_SNAPSHOT_H_
#define LABSHARE_TESTS_SUPPORT_REDIS_SNAPSHOT_H_

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/redis.h"

namespace labshare::testing {

// key -> DUMP serialization (type, value, and for streams the last id).
inline std::map<std::string, std::string> Snapshot(RedisPool& pool) {
  std::map<std::string, std::string> out;
  auto keys = pool.Command({"KEYS", "*"});
  EXPECT_TRUE(keys.ok()) << keys.status();
  if (!keys.ok()) return out;
  for (const auto& k : keys->elements) {
    auto dump = pool.Command({"DUMP", k.str});
    EXPECT_TRUE(dump.ok()) << dump.status();
    if (dump.ok()) out[k.str] = dump->str;
  }
  return out;
}

// Names the keys that differ, for a readable failure.
inline std::string SnapshotDiff(const std::map<std::string, std::string>& before,
                                const std::map<std::string, std::string>& after) {
  std::string out;
  for (const auto& [k, v] : before) {
    auto it = after.find(k);
    if (it == after.end()) out += "removed " + k + "\n";
    else if (it->second != v) out += "changed " + k + "\n";
  }
  for (const auto& [k, v] : after) {
    if (before.count(k) == 0) out += "added " + k + "\n";
  }
  return out;
}

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_REDIS_SNAPSHOT_H_
