// The rules of the calendar feeds (feeds.proto): who may manage which feed,
// secret tokens, and the documents. absl::Status only; no gRPC.
//
// Keys (all "{notify}:feed:*", one hash tag, so each change is one DocStore
// commit together with its NotifyEvent on "{notify}:outbox"):
//   f:<user>/<feed>   the CalendarFeed (never its secret URL)
//   s:<user>/<feed>   hex SHA-256 of its current token
//   t:<sha256>        the feed name a token hash belongs to ("" once rotated
//                     away or deleted)
//   n:<user>          the number of live feeds (compare-and-set bound)
//   l:<user>          index of live feeds: "<create µs, 20 digits>|<feed>"
//   req:<method>:<sha256(actor, request_id)>  idempotency records
// A token is 32 random bytes (RAND_bytes), URL-safe base64 without
// padding; only its hash is stored, and the stored hash of the feed is
// compared with the presented one in constant time.
#ifndef LABSHARE_SERVICES_NOTIFY_FEED_MANAGER_H_
#define LABSHARE_SERVICES_NOTIFY_FEED_MANAGER_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/doc_store.h"
#include "common/page_token.h"
#include "common/redis.h"
#include "labshare/notify/v1/feeds.pb.h"
#include "services/notify/feed_projection.h"

namespace labshare::notify {

namespace fv1 = labshare::notify::v1;

// The roles table of CalendarFeedService (feeds.proto "Roles:" lines).
const MethodPolicy& FeedPolicy();

class FeedManager {
 public:
  // Every pointer must outlive the manager. Thread-safe.
  FeedManager(RedisPool* redis, const Clock* clock, InstrumentDirectory* instruments,
              const FeedProjection* projection, std::string console_url, FeedOptions options);

  absl::StatusOr<fv1::CalendarFeed> Create(const Principal& p, const fv1::CreateCalendarFeedRequest& r);
  absl::StatusOr<fv1::ListCalendarFeedsResponse> List(const Principal& p, const fv1::ListCalendarFeedsRequest& r);
  absl::StatusOr<fv1::CalendarFeed> Rotate(const Principal& p, const fv1::RotateCalendarFeedRequest& r);
  absl::StatusOr<fv1::CalendarFeed> Delete(const Principal& p, const fv1::DeleteCalendarFeedRequest& r);
  absl::StatusOr<fv1::CalendarFeedContent> Content(const fv1::GetCalendarFeedContentRequest& r);

  // The document of a feed (tests render without a token).
  absl::StatusOr<std::string> Render(const fv1::CalendarFeed& feed) const;

 private:
  absl::StatusOr<std::string> CheckParent(const Principal& p, const std::string& method,
                                          const std::string& parent, const char* field) const;
  // user id, feed id of "users/{user}/calendarFeeds/{feed}" (INVALID_NAME).
  absl::StatusOr<std::pair<std::string, std::string>> ParseFeedName(const std::string& name) const;
  absl::StatusOr<PageTokenCodec> Codec();
  std::string Url(const std::string& token) const;
  absl::Status Publish(Mutation* m, const Principal& p, const std::string& request_id,
                       const fv1::CalendarFeed& feed, int kind) const;
  // An INSTRUMENT feed's shows_details as of the instrument's latest
  // InstrumentChanged (FeedProjection::LatestParties), when there is one.
  absl::Status Freshen(fv1::CalendarFeed* feed) const;

  RedisPool* redis_;
  DocStore docs_;
  const Clock* clock_;
  InstrumentDirectory* instruments_;
  const FeedProjection* projection_;
  std::string console_url_;
  FeedOptions options_;
  std::mutex codec_mu_;
  std::optional<PageTokenCodec> codec_;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_FEED_MANAGER_H_
