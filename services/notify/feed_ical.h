// iCalendar (RFC 5545) output for the calendar feeds: text escaping, line
// folding, date-times with TZID, VTIMEZONE components generated from the
// zone's transitions (absl::TimeZone), and whole VCALENDAR documents.
// Pure functions; no I/O.
#ifndef LABSHARE_SERVICES_NOTIFY_FEED_ICAL_H_
#define LABSHARE_SERVICES_NOTIFY_FEED_ICAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace labshare::notify::ical {

// A TEXT value (RFC 5545 3.3.11): backslash, semicolon and comma escaped,
// every line break (CRLF, CR or LF) as "\n"; other control characters
// (which TEXT may not hold) become spaces.
std::string EscapeText(absl::string_view text);

// One content line, folded (3.1): at most 75 octets per physical line
// (continuations start with one space, which counts), never splitting a
// UTF-8 sequence; every physical line ends with CRLF.
std::string FoldLine(absl::string_view line);

// "20261203T093000" in `zone` (for DTSTART;TZID=...).
std::string LocalDateTime(absl::Time t, const absl::TimeZone& zone);
// "20261203T013000Z".
std::string UtcDateTime(absl::Time t);

// A VTIMEZONE for `tzid` (an IANA name `zone` was loaded from) good for
// every time in [from, to]: one STANDARD/DAYLIGHT sub-component per offset
// change in that span plus the one in force at `from`; a zone without
// changes there (no DST) gets a single STANDARD. Folded lines, CRLF.
std::string VTimezone(absl::string_view tzid, const absl::TimeZone& zone, absl::Time from, absl::Time to);

enum class Status { kConfirmed, kTentative, kCancelled };

struct Event {
  std::string uid;
  int64_t sequence = 0;
  absl::Time stamp;  // DTSTAMP
  absl::Time start;
  absl::Time end;
  std::string tzid;  // IANA name; the calendar must carry its zone
  Status status = Status::kConfirmed;
  std::string summary;      // plain text, escaped here
  std::string location;     // plain text; empty: none
  std::string description;  // plain text with '\n'; empty: none
  std::string url;          // empty: none
  bool transparent = false;  // TRANSP:TRANSPARENT (cancelled time is free)
};

struct Zone {
  std::string tzid;
  absl::TimeZone zone;
};

struct Calendar {
  std::string name;  // X-WR-CALNAME
  // Refresh hint (REFRESH-INTERVAL, X-PUBLISHED-TTL).
  absl::Duration refresh = absl::Minutes(15);
  // Every zone the events name, once each.
  std::vector<Zone> zones;
  std::vector<Event> events;
};

// The whole document: VCALENDAR with PRODID, VERSION, CALSCALE,
// METHOD:PUBLISH, X-WR-CALNAME, a VTIMEZONE per zone (spanning its events)
// and the VEVENTs in the order given.
std::string Render(const Calendar& calendar);

}  // namespace labshare::notify::ical

#endif  // LABSHARE_SERVICES_NOTIFY_FEED_ICAL_H_
