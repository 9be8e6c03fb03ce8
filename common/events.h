// Events on Redis Streams.
//
// Publishing happens inside the Lua step that makes the state change (see
// DocStore::Commit): an outbox stream entry has fields "type" (full protobuf
// message name) and "payload" (serialized message, whose EventHeader carries
// the event id).
//
// EventConsumer reads a stream with a consumer group. Delivery is
// at-least-once: an entry is acknowledged only after the handler succeeded,
// entries left pending by a consumer that died are claimed (XCLAIM)
// once idle for `reclaim_idle`, and a restarted consumer first re-reads its
// own pending entries. Handlers therefore must apply idempotently, keyed by
// the event id, in the same atomic step as their effect (ApplyOnceLua helps).
//
// A failed entry stays pending and is handed to the handler again only once
// it has been idle (since its last delivery) for its retry delay:
// retry_initial x 2^(deliveries - 1), at most retry_max, where deliveries is
// Redis's delivery count of the entry (XPENDING). Meanwhile the other
// entries of the stream go on: a failed entry does not hold back later ones
// (handlers that need an order check it themselves, e.g. by version). An
// entry not due yet is not read at all, so its idle time keeps growing and,
// once past reclaim_idle and due, another consumer of the group may claim it.
//
// A handler that knows an entry can never be applied (it cannot be decoded,
// say) answers PermanentEventFailure(cause): the entry is then parked, in
// one Lua step: appended to the parking stream ParkingStream(stream, group)
// = "<stream>:parked:<group>" (same hash tag as the stream) with its own
// fields plus "id" (its id in the stream), "group", "consumer", "reason"
// (the cause: "<CODE> <REASON>: <message>", e.g. "DATA_LOSS CORRUPT_EVENT:
// unreadable booking event 1-0") and "time" (Redis's clock, ms since the epoch), and
// acknowledged, so that it no longer holds the group's pending list nor the
// outbox's trimming back. Parked entries are logged and counted
// (labshare_consumer_parked_entries{stream,group}); operators read, replay
// (XADD back to the outbox) or delete them by hand.
#ifndef LABSHARE_COMMON_EVENTS_H_
#define LABSHARE_COMMON_EVENTS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/log.h"
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
  // The retry delays of a failed entry (see the header comment). 0: retried
  // in the next round (tests).
  absl::Duration retry_initial = absl::Seconds(1);
  absl::Duration retry_max = absl::Seconds(30);
  // Pending entries examined per round and list (this consumer's own, the
  // group's idle ones); the scan of a list goes on from where the previous
  // round stopped.
  int scan = 1000;
};

// The stream parked entries of `group` on `stream` go to.
std::string ParkingStream(const std::string& stream, const std::string& group);

// A handler's answer for an entry that can never be applied: the entry is
// parked (see above) with the cause's code, reason and message. Any other failing
// status leaves the entry pending for a retry.
absl::Status PermanentEventFailure(absl::Status cause);
bool IsPermanentEventFailure(const absl::Status& status);

class EventConsumer {
 public:
  using Handler = std::function<absl::Status(const StreamEvent&)>;
  // Applies a batch of entries (in stream order) and answers one status per
  // entry, in the same order: OK entries are acknowledged (one XACK for the
  // batch), the others stay pending for a later round.
  using BatchHandler = std::function<std::vector<absl::Status>(const std::vector<StreamEvent>& events)>;

  // pool must outlive the consumer. Not thread-safe: one thread polls.
  EventConsumer(RedisPool* pool, ConsumerOptions options);

  // Creates the group at the start of the stream if it does not exist.
  absl::Status EnsureGroup();
  // Whether EnsureGroup succeeded and no read found the group missing
  // (NOGROUP: deleted, or the stream itself deleted) since.
  bool group_ready() const { return group_ready_; }

  // One round: this consumer's own pending entries that are due again, then
  // entries the group left idle (at least reclaim_idle, and due), then new
  // ones. Each entry whose handler succeeds is acknowledged; a failing
  // handler leaves it pending for a later round (after its retry delay); a
  // permanent failure parks it. Returns how many entries were acknowledged
  // (parked ones included).
  // Built on PollBatch (the handler runs once per entry, in order).
  absl::StatusOr<int> PollOnce(const Handler& handler);

  // The same three rounds as PollOnce, each handed to `handler` as one batch
  // (up to options.batch entries) and acknowledged with one XACK listing the
  // entries whose status is OK. Entries the stream no longer holds (deleted
  // or trimmed while pending: nil body) are acknowledged without the
  // handler, since nothing can ever apply them; entries the handler answers
  // PermanentEventFailure for are parked. A handler answering a
  // number of statuses other than the number of entries acknowledges
  // nothing and fails the poll (INTERNAL). Returns how many entries were
  // acknowledged.
  absl::StatusOr<int> PollBatch(const BatchHandler& handler);

  const ConsumerOptions& options() const { return options_; }
  // Entries of this process whose handler failed (parked ones included),
  // and entries it parked. Thread-safe (read by the metrics scrape).
  int64_t failed_entries() const { return failed_.load(std::memory_order_relaxed); }
  int64_t parked_entries() const { return parked_.load(std::memory_order_relaxed); }

 private:
  absl::StatusOr<int> ApplyBatch(const RedisValue& entries, const BatchHandler& handler);
  // The due pending entries of this consumer (own) or of the whole group
  // idle for reclaim_idle (!own), claimed by this consumer; deleted ones are
  // acknowledged (and logged). Answers the entries, XREADGROUP-shaped.
  absl::StatusOr<RedisValue> ClaimDue(bool own, bool* none_pending);
  absl::Status Park(const std::string& id, const std::vector<std::string>& fields, const absl::Status& cause);

  RedisPool* pool_;
  ConsumerOptions options_;
  // Whether this consumer may have entries of its own pending (true until a
  // read of its pending list came back empty; true again once an entry
  // fails or is claimed). Saves the round-1 read while nothing fails.
  bool own_pending_ = true;
  // Where the scans of the pending lists go on ("-": from the start).
  std::string own_cursor_ = "-";
  std::string group_cursor_ = "-";
  // Whether the group is known to exist (EnsureGroup ran, no NOGROUP since).
  bool group_ready_ = false;
  std::atomic<int64_t> failed_{0};
  std::atomic<int64_t> parked_{0};
};

// Prometheus text lines for the consumers' groups (each stream and group
// once): labshare_consumer_failed_entries_total and
// labshare_consumer_parked_entries_total (this process's counters),
// labshare_consumer_parked_entries (the parking stream's length) and
// labshare_consumer_oldest_pending_age_seconds (Redis's clock minus the time
// of the smallest id the group has pending; 0 when none) {stream,group}.
// Streams that cannot be read are left out
// (labshare_consumer_scrape_errors counts them).
std::string RenderConsumerMetrics(RedisPool* pool, const std::vector<const EventConsumer*>& consumers);

// Delays between the attempts of something that keeps failing: exponential
// (initial, initial x multiplier, ...) up to `max`, each drawn uniformly from
// [delay x (1 - jitter), delay] so that replicas and streams that failed
// together do not retry in lockstep.
struct BackoffOptions {
  absl::Duration initial = absl::Milliseconds(200);
  absl::Duration max = absl::Seconds(30);
  double multiplier = 2.0;
  double jitter = 0.5;  // 0..1
};

class Backoff {
 public:
  // seed 0: a random seed.
  explicit Backoff(BackoffOptions options = {}, uint64_t seed = 0);
  // The delay before the next attempt, after one more failure.
  absl::Duration Next();
  // After a success: the next failure waits `initial` again.
  void Reset() { failures_ = 0; }
  int failures() const { return failures_; }

 private:
  BackoffOptions options_;
  std::mt19937_64 rng_;
  int failures_ = 0;
};

struct ConsumerLoopOptions {
  std::string name = "events";  // in log lines, e.g. "booking events"
  // Pause between rounds while nothing fails.
  absl::Duration idle = absl::Milliseconds(50);
  // Per stream: a stream whose poll fails is polled again only after its
  // backoff delay; others go on at the idle pace.
  BackoffOptions backoff;
  uint64_t seed = 0;  // of the jitter; 0: random
  // nullptr: the system clock. Tests pass a FakeClock with `sleep`.
  const Clock* clock = nullptr;
  // Waits `d` (or until Stop()). Empty: waits on the stop notification with
  // a timeout. Tests inject one that advances a fake clock.
  std::function<void(absl::Duration d)> sleep;
  // Where warnings go (tests count them). Empty: LogWarning.
  std::function<void(absl::string_view msg, const LogFields& fields)> warn;
};

// Polls a set of streams until Stop(), retrying a failing poll with capped
// exponential backoff and jitter (never in a tight loop), and stopping
// quietly: once Stop() was called, nothing more is polled or logged, even
// for a poll that was failing at that moment (its failure is most likely the
// shutdown itself). A poll failing with UNAVAILABLE (Redis unreachable or
// refusing writes) pauses the whole loop, with one warning per attempt,
// since every other stream would fail the same way; other failures back off
// that stream only. Thread-safe Stop(); Run() on one thread.
class ConsumerLoop {
 public:
  using Poll = std::function<absl::StatusOr<int>()>;

  explicit ConsumerLoop(ConsumerLoopOptions options = {});
  ConsumerLoop(const ConsumerLoop&) = delete;
  ConsumerLoop& operator=(const ConsumerLoop&) = delete;

  // A stream polled by `poll` (named `stream` in logs).
  void Add(std::string stream, Poll poll);
  // PollOnce(handler) (EnsureGroup first, then again only after the group
  // was found missing). consumer must outlive the loop.
  void Add(EventConsumer* consumer, EventConsumer::Handler handler);
  // The same with PollBatch(handler).
  void Add(EventConsumer* consumer, EventConsumer::BatchHandler handler);
  // The consumers added (for RenderConsumerMetrics).
  const std::vector<const EventConsumer*>& consumers() const { return consumers_; }

  // Rounds until Stop().
  void Run();
  // One round: polls every stream that is due. Returns how long to wait
  // before the next round (the idle pause, or until the first failing
  // stream is due again when every stream is failing).
  absl::Duration RunOnce();
  void Stop() {
    if (!stop_.HasBeenNotified()) stop_.Notify();
  }
  bool stopped() const { return stop_.HasBeenNotified(); }

 private:
  struct Stream {
    std::string name;
    Poll poll;
    Backoff backoff;
    absl::Time next_due = absl::InfinitePast();
  };
  void Warn(absl::string_view msg, const LogFields& fields);

  ConsumerLoopOptions options_;
  SystemClock system_clock_;
  const Clock* clock_;
  std::vector<Stream> streams_;
  std::vector<const EventConsumer*> consumers_;
  Backoff unavailable_;  // the whole loop, while the store is unreachable
  absl::Time paused_until_ = absl::InfinitePast();
  absl::Notification stop_;
};

// A Lua prelude for consumer scripts: apply_once(marker_key, ttl_seconds)
// returns true the first time it is called for a marker key, false after.
// Consumers name the marker after the event id in their own hash tag.
extern const char kApplyOnceLua[];

}  // namespace labshare

#endif  // LABSHARE_COMMON_EVENTS_H_
