// Outbox retention and consumer-lag figures (issue 17).
//
// Retention. An outbox stream entry may go once every consumer group of the
// stream has acknowledged it (the group's last-delivered id is at or past
// it and nothing of the group is pending at or below it) and it is older
// than the safety window (--outbox_retention, measured inside the Lua step
// on Redis's own clock, TIME, against the entry id's milliseconds: the ids
// come from that clock (XADD '*'), never from the platform clock, which may
// be a demo clock far from real time; 0: never trimmed). One Lua
// step per stream reads every group (XINFO GROUPS, XPENDING) and trims
// (XTRIM MINID, exact) atomically, so replicas running it side by side, and
// a consumer reading, acknowledging or creating its group meanwhile, never
// see an entry go that a group still needs. Not trimmed at all: a stream
// without groups, and a stream lacking one of its required groups: those
// its owning service declares per stream (OutboxStream: every group that
// consumes it, e.g. billing's on {bk:P}:outbox, so booking events are never
// trimmed unbilled while billing's group is missing) plus
// --outbox_retention_require_groups (default "usage"). The maintenance
// thread logs, at most once per pass, which group holds trimming back.
//
// Groups are created by their consumers at start (EventConsumer::EnsureGroup:
// XGROUP CREATE ... 0 MKSTREAM), so a new group reads from the first entry
// the stream still holds. Entries trimmed before it existed had been
// acknowledged by every group there was and were older than the window: a
// consumer added later starts from the retained history, as one created
// after an archive cut (labshare-archive trims below its cut too) does; it
// never skips an entry still held. The usage audit trail, not the outbox,
// is the record of everything that happened.
//
// Lag. Per stream and group: entries not yet delivered (after the group's
// last-delivered id), entries delivered but not acknowledged (the pending
// list), and their sum, the lag. The undelivered figure is XINFO GROUPS'
// own `lag` (entries-added - entries-read) when Redis knows it: one command
// per stream at scrape time. After an AOF reload Redis no longer knows
// entries-read (nil, see outbox_trim_test): then they are counted with
// XRANGE from the last-delivered id, at most 10,000 per group and scrape
// (labshare_outbox_undelivered_at_least says the figure is a lower bound).
#ifndef LABSHARE_COMMON_OUTBOX_TRIM_H_
#define LABSHARE_COMMON_OUTBOX_TRIM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/redis.h"

namespace labshare {

struct OutboxTrimResult {
  int64_t trimmed = 0;
  // Why nothing may go ("" when the cut was computed): "no stream",
  // "no group", "missing group <name>".
  std::string skipped;
  std::string min_id;  // the MINID used ("" when skipped)
  // The group whose oldest unacknowledged entry set min_id, below the
  // window's bound ("" when the window set it).
  std::string held_by;
};

class OutboxTrimmer {
 public:
  // pool must outlive the trimmer. retention <= 0: never trims.
  OutboxTrimmer(RedisPool* pool, absl::Duration retention, std::vector<std::string> required_groups = {});
  // One atomic pass over one stream; also_required: groups the stream must
  // have besides the trimmer's own.
  absl::StatusOr<OutboxTrimResult> Trim(const std::string& stream,
                                        const std::vector<std::string>& also_required = {}) const;
  // Every stream; returns the entries trimmed in all.
  absl::StatusOr<int64_t> TrimAll(const std::vector<std::string>& streams) const;

 private:
  RedisPool* pool_;
  absl::Duration retention_;
  std::vector<std::string> required_groups_;
};

struct GroupLag {
  std::string group;
  std::string last_delivered_id;
  int64_t undelivered = 0;  // entries after last_delivered_id
  bool at_least = false;    // undelivered was counted and reached the cap: a lower bound
  int64_t pending = 0;      // delivered, not acknowledged
  int64_t lag() const { return undelivered + pending; }
};
struct StreamLag {
  std::string stream;
  bool exists = false;
  int64_t length = 0;
  std::vector<GroupLag> groups;
};

// Cheap: XLEN, XINFO GROUPS. The undelivered figure is Redis's own
// (XINFO GROUPS lag: entries-added - entries-read, exact) when Redis knows
// it; when it does not (nil: entries-read lost, e.g. after an AOF reload;
// or Redis < 7.0) the entries after last-delivered-id are counted (XRANGE,
// `page` at a time), at most `cap` (then at_least is set).
absl::StatusOr<StreamLag> ReadStreamLag(RedisPool* pool, const std::string& stream, int64_t cap = 10000,
                                        int page = 1000);

// Prometheus text lines for the streams: labshare_outbox_length{stream},
// labshare_outbox_undelivered / _pending / _lag{stream,group}. Streams that
// cannot be read are left out (labshare_outbox_scrape_errors counts them).
std::string RenderOutboxMetrics(RedisPool* pool, const std::vector<std::string>& streams);

// The consumer groups of the platform's outboxes. Each consumer's own
// constant is checked against these at compile time in its main.cc
// (billing::kBookingEventsGroup, usage::kEventsGroup,
// booking::kInventoryEventsGroup, booking::kSessionUsesGroup,
// notify::kMailGroup / kWebhooksGroup /
// kFeedsGroup).
inline constexpr char kOutboxGroupUsage[] = "usage";        // every outbox
inline constexpr char kOutboxGroupBilling[] = "billing";    // {bk:P}:outbox
inline constexpr char kOutboxGroupBooking[] = "booking";    // {inventory}:outbox
inline constexpr char kOutboxGroupBookingUses[] = "booking-uses";  // {bk:P}:outbox (session uses)
inline constexpr char kOutboxGroupNotifyMail[] = "notify-mail";          // every outbox
inline constexpr char kOutboxGroupNotifyWebhooks[] = "notify-webhooks";  // every outbox
inline constexpr char kOutboxGroupNotifyFeeds[] = "notify-feeds";        // every outbox
// The groups reading every outbox: usage and notify's three.
std::vector<std::string> OutboxEveryStreamGroups();

// An owned outbox and the groups that must exist on it before anything of
// it is trimmed (every group that consumes it: a group not yet created, e.g.
// its service not started yet, must not find its entries gone).
struct OutboxStream {
  std::string stream;
  std::vector<std::string> required_groups;
};

// What a service that owns outboxes runs: the trimmer every
// --outbox_trim_interval when --outbox_retention > 0 (on a thread of its
// own, stopped by the destructor), and the lag figures of its streams on
// its /metrics endpoint (registered with RegisterMetricsCollector).
class OutboxMaintenance {
 public:
  // From the flags (--outbox_retention_require_groups: required of every
  // stream besides its own groups). pool must outlive the object.
  OutboxMaintenance(RedisPool* pool, std::vector<OutboxStream> streams);
  ~OutboxMaintenance();
  OutboxMaintenance(const OutboxMaintenance&) = delete;
  OutboxMaintenance& operator=(const OutboxMaintenance&) = delete;

 private:
  RedisPool* pool_;
  std::vector<OutboxStream> streams_;
  std::unique_ptr<OutboxTrimmer> trimmer_;
  absl::Duration interval_;
  absl::Notification stop_;
  std::thread thread_;
  int collector_ = -1;
};

// The consumer figures of a process's consumers (RenderConsumerMetrics,
// common/events.h: failed and parked entries, parking streams' lengths,
// the oldest pending entry's age, per stream and group consumed) on its
// /metrics endpoint, from construction to destruction. pool and the
// consumers must outlive the object.
class ConsumerMetrics {
 public:
  ConsumerMetrics(RedisPool* pool, std::vector<const EventConsumer*> consumers);
  ~ConsumerMetrics();
  ConsumerMetrics(const ConsumerMetrics&) = delete;
  ConsumerMetrics& operator=(const ConsumerMetrics&) = delete;

 private:
  int collector_ = -1;
};

// Parses a stream id "ms-seq" ("ms" alone: seq 0). False when malformed.
bool ParseStreamId(const std::string& id, uint64_t* ms, uint64_t* seq);

}  // namespace labshare

#endif  // LABSHARE_COMMON_OUTBOX_TRIM_H_
