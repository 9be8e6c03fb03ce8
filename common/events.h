// Events on Redis Streams.
//
// Publishing happens inside the Lua step that makes the state change (see
// DocStore::Commit): an outbox stream entry has fields "type" (full protobuf
// message name) and "payload" (serialized message, whose EventHeader carries
// the event id).
//
// EventConsumer reads a stream with a consumer group. Delivery is
// at-least-once: an entry is acknowledged only after the handler succeeded,
// entries left pending by a consumer that died are reclaimed (XAUTOCLAIM)
// once idle for `reclaim_idle`, and a restarted consumer first re-reads its
// own pending entries. Handlers therefore must apply idempotently, keyed by
// the event id, in the same atomic step as their effect (ApplyOnceLua helps).
#ifndef LABSHARE_COMMON_EVENTS_H_
#define LABSHARE_COMMON_EVENTS_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/redis.h"

namespace labshare {

// 32 hex characters, random.
std::string NewEventId();

struct StreamEvent {
  std::string stream_id;  // Redis entry id, e.g. "1700000000000-0"
  std::string type;
  std::string payload;
};

struct ConsumerOptions {
  std::string stream;
  std::string group;
  std::string consumer;  // unique per process, stable across its restarts
  int batch = 100;
  absl::Duration block = absl::Milliseconds(500);  // 0: do not block
  absl::Duration reclaim_idle = absl::Seconds(30);
};

class EventConsumer {
 public:
  using Handler = std::function<absl::Status(const StreamEvent&)>;

  // pool must outlive the consumer. Not thread-safe: one thread polls.
  EventConsumer(RedisPool* pool, ConsumerOptions options);

  // Creates the group at the start of the stream if it does not exist.
  absl::Status EnsureGroup();

  // One round: this consumer's own pending entries, then entries other
  // consumers left idle, then new ones. Each entry whose handler succeeds is
  // acknowledged; a failing handler leaves it pending for a later round.
  // Returns how many entries were acknowledged.
  absl::StatusOr<int> PollOnce(const Handler& handler);

  const ConsumerOptions& options() const { return options_; }

 private:
  absl::StatusOr<int> Apply(const RedisValue& entries, const Handler& handler);

  RedisPool* pool_;
  ConsumerOptions options_;
};

// A Lua prelude for consumer scripts: apply_once(marker_key, ttl_seconds)
// returns true the first time it is called for a marker key, false after.
// Consumers name the marker after the event id in their own hash tag.
extern const char kApplyOnceLua[];

}  // namespace labshare

#endif  // LABSHARE_COMMON_EVENTS_H_
