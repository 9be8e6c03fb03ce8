// What the calendar feeds show, projected from the booking events.
//
// Every booking event carries the whole booking after the change, and every
// lease and technical-service run has its own booking (mode LEASE: the lease
// term; TECHNICAL_SERVICE: the run), so bookings are the unit: one entry per
// booking, "{notify}:feed:e:<booking id>", a hash with the booking snapshot
// (b), its instrument's display name, location, operator organisation and
// facility time zone (looked up once through inventory), the event time of
// the last change (ev, the VEVENT's DTSTAMP), the snapshot's update_time
// (ut), a digest of what a calendar shows (sig) and SEQUENCE (seq, +1 each
// time sig changes). Lease and service-order events add nothing their
// bookings' events do not already say and are only marked as seen.
//
// Indexes (sorted sets, member = booking id, score = the end of the
// blocked interval in seconds): "{notify}:feed:u:<user id>" for the
// booking's user and its run's operator, "{notify}:feed:i:<instrument id>".
//
// The operator organisation an instrument feed's details depend on: each
// entry records its instrument's operator when its booking's event is
// applied; "{notify}:feed:op:<instrument id>" (hash: op, etag) holds the
// operator of the latest InstrumentChanged applied (inventory's outbox is
// one of the streams; an event with an etag not above the stored one
// changes nothing) and, when present, is the operator of every entry of the
// instrument as read (InstrumentEntries): a change of operator shows the
// earlier entries to the new operator's feeds at once, and no longer to
// the old one's (and a feed's shows_details follows, FeedManager).
//
// Each event is applied once, in one Lua step with its marker
// "{notify}:feed:done:<event id>" (kept 30 days). A snapshot older than the
// stored one (update_time) changes nothing, so events applied out of order
// by several replicas end at the latest state. The window: each step also
// drops up to 100 entries of the indexes it touches whose blocked interval
// ended more than FeedOptions::past_window before the domain clock's now,
// and reads skip them, so Redis holds about 90 days of the past plus
// everything ahead.
#ifndef LABSHARE_SERVICES_NOTIFY_FEED_PROJECTION_H_
#define LABSHARE_SERVICES_NOTIFY_FEED_PROJECTION_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/redis.h"
#include "labshare/booking/v1/booking.pb.h"

namespace grpc {
class Channel;
}

namespace labshare::notify {

struct FeedOptions {
  // Entries whose blocked interval ended longer ago than this are dropped.
  absl::Duration past_window = absl::Hours(24 * 90);
  // At most this many events per feed document (the latest ones).
  int max_events = 2000;
  // Live feeds per user.
  int max_feeds_per_user = 20;
  // Refresh hint written into the documents.
  absl::Duration refresh = absl::Minutes(15);
  // Inventory lookups: deadline per call and how long an answer is kept.
  absl::Duration inventory_timeout = absl::Seconds(5);
  absl::Duration instrument_cache_ttl = absl::Minutes(10);
  // The zone of a facility that names none (records from before the field).
  std::string default_time_zone = "Asia/Shanghai";
  // The language (zh-CN or en) of the feed text of owners whose
  // notification settings name none; labshare-notify passes its
  // --default_language.
  std::string default_language = "en";
  // Consumer tuning.
  absl::Duration reclaim_idle = absl::Seconds(30);
  // A failed entry's first retry delay (common/events.h; 0: the next round).
  absl::Duration retry_initial = absl::Seconds(1);
};

// Lowercase hex SHA-256 (entry digests, token hashes, ETags).
std::string Sha256Hex(absl::string_view data);

// What the feeds need to know about an instrument.
struct InstrumentInfo {
  std::string name;  // "instruments/{id}"
  std::string display_name;
  std::string owner_organization;
  std::string operator_organization;
  std::string time_zone;  // IANA
  std::string location;   // "<facility display name>, <address>"
};

// An instrument's owner and operator as of the latest InstrumentChanged
// the projection applied.
struct InstrumentParties {
  std::string owner;
  std::string op;
};

// A feed owner as inventory knows them now.
struct FeedUserInfo {
  std::string organization;  // "organizations/{id}"
  bool disabled = false;
};

// Inventory reads with a cache. Thread-safe.
class InstrumentDirectory {
 public:
  virtual ~InstrumentDirectory() = default;
  // NOT_FOUND (INSTRUMENT_NOT_FOUND) for an unknown instrument; UNAVAILABLE
  // (INVENTORY_UNAVAILABLE) when inventory cannot be reached.
  virtual absl::StatusOr<InstrumentInfo> Lookup(const std::string& instrument) = 0;
  // "users/{id}": NOT_FOUND (USER_NOT_FOUND) for a user inventory no longer
  // has; UNAVAILABLE (INVENTORY_UNAVAILABLE) when it cannot be reached.
  virtual absl::StatusOr<FeedUserInfo> LookupUser(const std::string& user) = 0;
};

// Over labshare-inventory's GetInstrument and GetFacility (the channel
// proves notify's identity; no bearer token). `wall` times the cache.
std::unique_ptr<InstrumentDirectory> NewInventoryDirectory(std::shared_ptr<grpc::Channel> channel,
                                                           const Clock* wall, const FeedOptions& options);

// One stored entry, as read back for a document.
struct FeedEntry {
  labshare::booking::v1::Booking booking;
  int64_t sequence = 0;
  absl::Time stamp;
  std::string instrument_display_name;
  std::string location;
  std::string operator_organization;
  std::string time_zone;
};

class FeedProjection {
 public:
  // All pointers must outlive the projection. Thread-safe.
  FeedProjection(RedisPool* redis, const Clock* clock, InstrumentDirectory* instruments, FeedOptions options);

  // The handler of group "notify-feeds" on every stream. An inventory
  // InstrumentChanged sets the instrument's operator (see above); other
  // events that are not booking events, or name no valid booking, are
  // acknowledged as they are. An error (Redis, inventory unreachable)
  // leaves the entry pending.
  absl::Status Apply(const StreamEvent& event);

  // The entries of a user's or an instrument's index inside the window,
  // latest max_events, ordered by start time then booking name; an
  // instrument's with the operator of its latest InstrumentChanged.
  absl::StatusOr<std::vector<FeedEntry>> UserEntries(const std::string& user_id) const;
  absl::StatusOr<std::vector<FeedEntry>> InstrumentEntries(const std::string& instrument_id) const;

  // Nullopt until an InstrumentChanged of the instrument was applied.
  absl::StatusOr<std::optional<InstrumentParties>> LatestParties(const std::string& instrument_id) const;

  const FeedOptions& options() const { return options_; }

 private:
  absl::StatusOr<std::vector<FeedEntry>> Entries(const std::string& index) const;
  // An InventoryEvent: an InstrumentChanged sets the instrument's operator.
  absl::Status FollowOperator(const StreamEvent& event);
  static std::string OperatorKey(const std::string& instrument_id);

  RedisPool* redis_;
  const Clock* clock_;
  InstrumentDirectory* instruments_;
  FeedOptions options_;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_FEED_PROJECTION_H_
