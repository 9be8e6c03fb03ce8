// The --feed_* flags of labshare-notify (calendar feeds).
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/time_zone.h"
#include "services/notify/feed_module.h"

ABSL_FLAG(absl::Duration, feed_past_window, absl::Hours(24 * 90),
          "Calendar feeds keep and show entries whose busy time ended at most this long ago (and everything "
          "ahead)");
ABSL_FLAG(int, feed_max_events, 2000, "At most this many events per calendar feed document (the latest)");
ABSL_FLAG(int, feed_max_per_user, 20, "Live calendar feeds per user");
ABSL_FLAG(absl::Duration, feed_refresh, absl::Minutes(15),
          "Refresh interval suggested to calendar applications (REFRESH-INTERVAL, X-PUBLISHED-TTL)");
ABSL_FLAG(std::string, feed_default_time_zone, "Asia/Shanghai",
          "IANA zone of facilities that name none");

namespace labshare::notify {

absl::StatusOr<FeedOptions> FeedOptionsFromFlags() {
  FeedOptions o;
  o.past_window = absl::GetFlag(FLAGS_feed_past_window);
  o.max_events = absl::GetFlag(FLAGS_feed_max_events);
  o.max_feeds_per_user = absl::GetFlag(FLAGS_feed_max_per_user);
  o.refresh = absl::GetFlag(FLAGS_feed_refresh);
  o.default_time_zone = absl::GetFlag(FLAGS_feed_default_time_zone);
  absl::TimeZone zone;
  if (!LoadIanaTimeZone(o.default_time_zone, &zone)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--feed_default_time_zone: not an IANA time zone name: ", o.default_time_zone));
  }
  return o;
}

}  // namespace labshare::notify
