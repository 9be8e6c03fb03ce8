// RFC 5545 building blocks of the calendar feeds: escaping, folding (UTF-8
// safe), date-times and VTIMEZONE components from the zone database.
#include "services/notify/feed_ical.h"

#include <gtest/gtest.h>

#include <vector>

#include "absl/strings/str_split.h"

namespace labshare::notify::ical {
namespace {

absl::Time Utc(int y, int mo, int d, int h, int mi) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, 0), absl::UTCTimeZone());
}

std::vector<std::string> Lines(const std::string& folded) {
  std::vector<std::string> out = absl::StrSplit(folded, "\r\n");
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

TEST(FeedIcal, EscapesBackslashSemicolonCommaAndLineBreaks) {
  EXPECT_EQ(EscapeText("a\\b;c,d\ne\r\nf\rg"), "a\\\\b\\;c\\,d\\ne\\nf\\ng");
  EXPECT_EQ(EscapeText("tab\tbell\x07"), "tab\tbell ");
  EXPECT_EQ(EscapeText("冷冻电镜, 样品;检测"), "冷冻电镜\\, 样品\\;检测");
}

TEST(FeedIcal, ShortLineIsNotFolded) {
  EXPECT_EQ(FoldLine("SUMMARY:short"), "SUMMARY:short\r\n");
  const std::string exact(75, 'x');
  EXPECT_EQ(FoldLine(exact), exact + "\r\n");
}

TEST(FeedIcal, FoldsAsciiAt75Octets) {
  const std::string line(160, 'a');
  const auto lines = Lines(FoldLine(line));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], std::string(75, 'a'));
  EXPECT_EQ(lines[1], " " + std::string(74, 'a'));
  EXPECT_EQ(lines[2], " " + std::string(11, 'a'));
}

TEST(FeedIcal, FoldsChineseTextWithoutSplittingCharacters) {
  // "SUMMARY:" (8 octets) then 40 characters of 3 octets each.
  std::string text;
  for (int i = 0; i < 40; ++i) text += "电";
  const std::string line = "SUMMARY:" + text;
  const auto lines = Lines(FoldLine(line));
  ASSERT_EQ(lines.size(), 2u);
  // 8 + 22 x 3 = 74 octets fit in 75; the 23rd character would end at 77.
  EXPECT_EQ(lines[0].size(), 74u);
  EXPECT_EQ(lines[1].size(), 1u + 18 * 3);
  std::string joined = lines[0] + lines[1].substr(1);
  EXPECT_EQ(joined, line);
  for (const auto& l : lines) EXPECT_LE(l.size(), 75u);
}

TEST(FeedIcal, FoldingKeepsEscapesWhole) {
  // The 75th octet would be the backslash of "\n".
  const std::string line = std::string(74, 'a') + "\\nb";
  const auto lines = Lines(FoldLine(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], std::string(74, 'a'));
  EXPECT_EQ(lines[1], " \\nb");
  // An escaped backslash before the cut is complete: cut as usual.
  const std::string pair = std::string(73, 'a') + "\\\\" + "x";
  const auto two = Lines(FoldLine(pair));
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0], std::string(73, 'a') + "\\\\");
  EXPECT_EQ(two[1], " x");
}

TEST(FeedIcal, DateTimesInZoneAndUtc) {
  absl::TimeZone shanghai;
  ASSERT_TRUE(absl::LoadTimeZone("Asia/Shanghai", &shanghai));
  EXPECT_EQ(LocalDateTime(Utc(2026, 12, 10, 1, 0), shanghai), "20261210T090000");
  EXPECT_EQ(UtcDateTime(Utc(2026, 12, 10, 1, 0)), "20261210T010000Z");
}

TEST(FeedIcal, ZoneWithoutDstGetsOneStandard) {
  absl::TimeZone shanghai;
  ASSERT_TRUE(absl::LoadTimeZone("Asia/Shanghai", &shanghai));
  EXPECT_EQ(VTimezone("Asia/Shanghai", shanghai, Utc(2026, 1, 1, 0, 0), Utc(2026, 12, 31, 0, 0)),
            "BEGIN:VTIMEZONE\r\n"
            "TZID:Asia/Shanghai\r\n"
            "BEGIN:STANDARD\r\n"
            "DTSTART:19700101T000000\r\n"
            "TZOFFSETFROM:+0800\r\n"
            "TZOFFSETTO:+0800\r\n"
            "TZNAME:CST\r\n"
            "END:STANDARD\r\n"
            "END:VTIMEZONE\r\n");
}

TEST(FeedIcal, ZoneWithDstGetsEveryChangeOfTheSpan) {
  absl::TimeZone berlin;
  ASSERT_TRUE(absl::LoadTimeZone("Europe/Berlin", &berlin));
  // 20 Oct to 5 Nov 2026: summer time ends 25 Oct 03:00 local.
  EXPECT_EQ(VTimezone("Europe/Berlin", berlin, Utc(2026, 10, 20, 8, 0), Utc(2026, 11, 5, 8, 0)),
            "BEGIN:VTIMEZONE\r\n"
            "TZID:Europe/Berlin\r\n"
            "BEGIN:DAYLIGHT\r\n"
            "DTSTART:20260329T020000\r\n"
            "TZOFFSETFROM:+0100\r\n"
            "TZOFFSETTO:+0200\r\n"
            "TZNAME:CEST\r\n"
            "END:DAYLIGHT\r\n"
            "BEGIN:STANDARD\r\n"
            "DTSTART:20261025T030000\r\n"
            "TZOFFSETFROM:+0200\r\n"
            "TZOFFSETTO:+0100\r\n"
            "TZNAME:CET\r\n"
            "END:STANDARD\r\n"
            "END:VTIMEZONE\r\n");
}

TEST(FeedIcal, RendersACalendarWithCrlfAndFoldedLines) {
  absl::TimeZone shanghai;
  ASSERT_TRUE(absl::LoadTimeZone("Asia/Shanghai", &shanghai));
  Calendar cal;
  cal.name = "LabShare: li-wei";
  cal.zones.push_back({"Asia/Shanghai", shanghai});
  Event e;
  e.uid = "booking-b1@labshare.example.org";
  e.sequence = 2;
  e.stamp = Utc(2026, 12, 1, 0, 0);
  e.start = Utc(2026, 12, 10, 1, 0);
  e.end = Utc(2026, 12, 10, 3, 0);
  e.tzid = "Asia/Shanghai";
  e.status = Status::kCancelled;
  e.transparent = true;
  e.summary = "冷冻电镜: booking (cancelled)";
  e.description = std::string(100, 'd');
  cal.events.push_back(e);
  const std::string doc = Render(cal);
  for (const auto& line : Lines(doc)) EXPECT_LE(line.size(), 75u) << line;
  EXPECT_EQ(doc.find('\n'), doc.find("\r\n") + 1);  // the first line ends with CRLF
  EXPECT_NE(doc.find("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//LabShare//Calendar feeds 1.0//EN\r\n"
                     "CALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\nX-WR-CALNAME:LabShare: li-wei\r\n"),
            std::string::npos);
  EXPECT_NE(doc.find("DTSTART;TZID=Asia/Shanghai:20261210T090000\r\n"), std::string::npos);
  EXPECT_NE(doc.find("DTEND;TZID=Asia/Shanghai:20261210T110000\r\n"), std::string::npos);
  EXPECT_NE(doc.find("DTSTAMP:20261201T000000Z\r\n"), std::string::npos);
  EXPECT_NE(doc.find("SEQUENCE:2\r\nDTSTART"), std::string::npos);
  EXPECT_NE(doc.find("STATUS:CANCELLED\r\n"), std::string::npos);
  EXPECT_NE(doc.find("TRANSP:TRANSPARENT\r\n"), std::string::npos);
  EXPECT_EQ(doc.substr(doc.size() - 15), "END:VCALENDAR\r\n");
}

}  // namespace
}  // namespace labshare::notify::ical
