#include "services/notify/feed_ical.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace labshare::notify::ical {
namespace {

// "+0800", "-0330", "+053028" (seconds only when present).
std::string Offset(int seconds) {
  const char sign = seconds < 0 ? '-' : '+';
  const int a = std::abs(seconds);
  if (a % 60 != 0) return absl::StrFormat("%c%02d%02d%02d", sign, a / 3600, a / 60 % 60, a % 60);
  return absl::StrFormat("%c%02d%02d", sign, a / 3600, a / 60 % 60);
}

std::string Civil(const absl::CivilSecond& cs) {
  return absl::StrFormat("%04d%02d%02dT%02d%02d%02d", cs.year(), cs.month(), cs.day(), cs.hour(), cs.minute(),
                         cs.second());
}

void Line(std::string* out, absl::string_view line) { out->append(FoldLine(line)); }

// One STANDARD or DAYLIGHT sub-component: from `onset` (local time in the
// offset before), offsets `before` -> the zone's state at `at`.
void Observance(std::string* out, const absl::TimeZone& zone, absl::Time at, const absl::CivilSecond& onset,
                int before) {
  const absl::TimeZone::CivilInfo info = zone.At(at);
  const char* kind = info.is_dst ? "DAYLIGHT" : "STANDARD";
  Line(out, absl::StrCat("BEGIN:", kind));
  Line(out, absl::StrCat("DTSTART:", Civil(onset)));
  Line(out, absl::StrCat("TZOFFSETFROM:", Offset(before)));
  Line(out, absl::StrCat("TZOFFSETTO:", Offset(info.offset)));
  if (info.zone_abbr != nullptr && info.zone_abbr[0] != '\0') {
    Line(out, absl::StrCat("TZNAME:", EscapeText(info.zone_abbr)));
  }
  Line(out, absl::StrCat("END:", kind));
}

const char* StatusName(Status s) {
  switch (s) {
    case Status::kTentative: return "TENTATIVE";
    case Status::kCancelled: return "CANCELLED";
    case Status::kConfirmed: break;
  }
  return "CONFIRMED";
}

// "PT15M" style durations for REFRESH-INTERVAL (whole minutes, at least 1).
std::string Duration(absl::Duration d) {
  int64_t minutes = absl::ToInt64Minutes(d);
  if (minutes < 1) minutes = 1;
  return absl::StrCat("PT", minutes, "M");
}

}  // namespace

std::string EscapeText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    switch (c) {
      case '\\': out += "\\\\"; break;
      case ';': out += "\\;"; break;
      case ',': out += "\\,"; break;
      case '\r':
        if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
        out += "\\n";
        break;
      case '\n': out += "\\n"; break;
      default:
        if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string FoldLine(absl::string_view line) {
  constexpr size_t kMax = 75;
  std::string out;
  out.reserve(line.size() + line.size() / 70 * 3 + 2);
  size_t pos = 0;
  bool first = true;
  while (true) {
    const size_t room = first ? kMax : kMax - 1;  // a continuation's space counts
    if (line.size() - pos <= room) {
      if (!first) out += ' ';
      out.append(line.data() + pos, line.size() - pos);
      out += "\r\n";
      return out;
    }
    size_t cut = pos + room;
    // Back up to the start of a UTF-8 sequence (never past `pos`).
    while (cut > pos && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
    if (cut == pos) cut = pos + room;  // not UTF-8 at all: cut anyway
    // Keep an escape ("\n", "\,") on one line: RFC 5545 allows splitting
    // it, but some calendar clients unfold badly.
    size_t backslashes = 0;
    while (cut - backslashes > pos && line[cut - backslashes - 1] == '\\') ++backslashes;
    if (backslashes % 2 == 1 && cut - 1 > pos) --cut;
    if (!first) out += ' ';
    out.append(line.data() + pos, cut - pos);
    out += "\r\n";
    pos = cut;
    first = false;
  }
}

std::string LocalDateTime(absl::Time t, const absl::TimeZone& zone) { return Civil(absl::ToCivilSecond(t, zone)); }

std::string UtcDateTime(absl::Time t) { return Civil(absl::ToCivilSecond(t, absl::UTCTimeZone())) + "Z"; }

std::string VTimezone(absl::string_view tzid, const absl::TimeZone& zone, absl::Time from, absl::Time to) {
  std::string out;
  Line(&out, "BEGIN:VTIMEZONE");
  Line(&out, absl::StrCat("TZID:", tzid));
  // The offset changes that matter: the last one at or before `from` and
  // every one up to `to`.
  struct Change {
    absl::CivilSecond onset;
    absl::Time at;
    int before;
  };
  std::vector<Change> changes;
  absl::TimeZone::CivilTransition tr;
  absl::Time cursor = from;
  bool have_previous = false;
  if (zone.PrevTransition(from + absl::Seconds(1), &tr)) {
    const absl::Time at = zone.At(tr.to).trans;
    changes.push_back({tr.from, at, zone.At(at - absl::Seconds(1)).offset});
    have_previous = true;
    cursor = at;
  }
  // A zone whose last change lies long before the span and none inside it
  // (no DST): one STANDARD with its offset.
  while (cursor <= to && changes.size() < 400 && zone.NextTransition(cursor, &tr)) {
    const absl::Time at = zone.At(tr.to).trans;
    if (at > to || at <= cursor) break;
    changes.push_back({tr.from, at, zone.At(at - absl::Seconds(1)).offset});
    cursor = at;
  }
  const bool single = changes.empty() || (have_previous && changes.size() == 1);
  if (single) {
    const absl::TimeZone::CivilInfo info = zone.At(from);
    const bool dst = info.is_dst;
    const char* kind = dst ? "DAYLIGHT" : "STANDARD";
    Line(&out, absl::StrCat("BEGIN:", kind));
    Line(&out, "DTSTART:19700101T000000");
    Line(&out, absl::StrCat("TZOFFSETFROM:", Offset(info.offset)));
    Line(&out, absl::StrCat("TZOFFSETTO:", Offset(info.offset)));
    if (info.zone_abbr != nullptr && info.zone_abbr[0] != '\0') {
      Line(&out, absl::StrCat("TZNAME:", EscapeText(info.zone_abbr)));
    }
    Line(&out, absl::StrCat("END:", kind));
  } else {
    for (const Change& c : changes) Observance(&out, zone, c.at, c.onset, c.before);
  }
  Line(&out, "END:VTIMEZONE");
  return out;
}

std::string Render(const Calendar& calendar) {
  std::string out;
  Line(&out, "BEGIN:VCALENDAR");
  Line(&out, "VERSION:2.0");
  Line(&out, "PRODID:-//LabShare//Calendar feeds 1.0//EN");
  Line(&out, "CALSCALE:GREGORIAN");
  Line(&out, "METHOD:PUBLISH");
  Line(&out, absl::StrCat("X-WR-CALNAME:", EscapeText(calendar.name)));
  Line(&out, absl::StrCat("REFRESH-INTERVAL;VALUE=DURATION:", Duration(calendar.refresh)));
  Line(&out, absl::StrCat("X-PUBLISHED-TTL:", Duration(calendar.refresh)));
  for (const Zone& z : calendar.zones) {
    absl::Time from = absl::InfiniteFuture(), to = absl::InfinitePast();
    for (const Event& e : calendar.events) {
      if (e.tzid != z.tzid) continue;
      from = std::min(from, e.start);
      to = std::max(to, e.end);
    }
    if (from > to) continue;  // no event uses it
    out += VTimezone(z.tzid, z.zone, from, to);
  }
  for (const Event& e : calendar.events) {
    Line(&out, "BEGIN:VEVENT");
    Line(&out, absl::StrCat("UID:", e.uid));
    Line(&out, absl::StrCat("DTSTAMP:", UtcDateTime(e.stamp)));
    Line(&out, absl::StrCat("SEQUENCE:", e.sequence));
    const absl::TimeZone* zone = nullptr;
    for (const Zone& z : calendar.zones) {
      if (z.tzid == e.tzid) zone = &z.zone;
    }
    if (zone != nullptr) {
      Line(&out, absl::StrCat("DTSTART;TZID=", e.tzid, ":", LocalDateTime(e.start, *zone)));
      Line(&out, absl::StrCat("DTEND;TZID=", e.tzid, ":", LocalDateTime(e.end, *zone)));
    } else {
      Line(&out, absl::StrCat("DTSTART:", UtcDateTime(e.start)));
      Line(&out, absl::StrCat("DTEND:", UtcDateTime(e.end)));
    }
    Line(&out, absl::StrCat("STATUS:", StatusName(e.status)));
    Line(&out, absl::StrCat("SUMMARY:", EscapeText(e.summary)));
    if (!e.location.empty()) Line(&out, absl::StrCat("LOCATION:", EscapeText(e.location)));
    if (!e.description.empty()) Line(&out, absl::StrCat("DESCRIPTION:", EscapeText(e.description)));
    if (!e.url.empty()) Line(&out, absl::StrCat("URL:", e.url));
    Line(&out, e.transparent ? "TRANSP:TRANSPARENT" : "TRANSP:OPAQUE");
    Line(&out, "END:VEVENT");
  }
  Line(&out, "END:VCALENDAR");
  return out;
}

}  // namespace labshare::notify::ical
