// Time zone names as the contracts take them: IANA tz database names.
#ifndef LABSHARE_COMMON_TIME_ZONE_H_
#define LABSHARE_COMMON_TIME_ZONE_H_

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace labshare {

// Loads `name` into *zone when it names a zone of the IANA tz database (a
// Zone or Link name: "Asia/Shanghai", "UTC", "Etc/GMT-8"): components of
// letters, digits, '_', '-' and '+' separated by '/'. Names the zone
// library accepts but that are no such zone are refused: "localtime" (the
// host's zone), fixed offsets ("Fixed/UTC+08:00:00"), paths ("/usr/...",
// "file:...", "../..."), the "posix/" and "right/" trees, "posixrules" and
// "Factory".
bool LoadIanaTimeZone(absl::string_view name, absl::TimeZone* zone);

}  // namespace labshare

#endif  // LABSHARE_COMMON_TIME_ZONE_H_
