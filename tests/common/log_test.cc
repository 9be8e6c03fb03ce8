#include "common/log.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace labshare {
namespace {

using ::testing::MatchesRegex;

std::vector<std::string> Lines(const std::string& captured) {
  std::vector<std::string> lines = absl::StrSplit(captured, '\n', absl::SkipEmpty());
  return lines;
}

TEST(JsonEscape, EscapesQuotesBackslashesAndControlBytesOnly) {
  EXPECT_EQ(JsonEscape("plain text / é"), "plain text / é");
  EXPECT_EQ(JsonEscape("a\"b\\c"), "a\\\"b\\\\c");
  EXPECT_EQ(JsonEscape("l1\nl2\r\tx"), "l1\\nl2\\r\\tx");
  EXPECT_EQ(JsonEscape(std::string("\x01z\x1f", 3)), "\\u0001z\\u001f");
  EXPECT_EQ(JsonEscape(""), "");
  std::string out = "{";
  AppendJsonEscaped(&out, "\"q\"");
  EXPECT_EQ(out, "{\\\"q\\\"");
}

TEST(LogJson, OneObjectPerLineWithMillisecondUtcTimestamp) {
  ::testing::internal::CaptureStderr();
  LogInfo("hello \"world\"", {{"method", "/x.Y/Z"}, {"note", "two\nlines"}});
  FlushLogs();
  const std::vector<std::string> lines = Lines(::testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], MatchesRegex(R"(\{"ts":"20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\.[0-9][0-9][0-9]Z",.*)"));
  EXPECT_NE(lines[0].find(R"("level":"info","msg":"hello \"world\"","method":"/x.Y/Z","note":"two\nlines"})"),
            std::string::npos)
      << lines[0];
}

TEST(LogJson, BatchedLinesKeepTheirOrderAndErrorsAreWrittenAtOnce) {
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 500; ++i) LogInfo("line", {{"i", absl::StrCat(i)}});
  LogError("boom");  // written before LogError returns, after everything before it
  const std::vector<std::string> lines = Lines(::testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 501u);
  for (int i = 0; i < 500; ++i) {
    EXPECT_NE(lines[i].find(absl::StrCat("\"i\":\"", i, "\"}")), std::string::npos) << lines[i];
  }
  EXPECT_NE(lines[500].find(R"("level":"error","msg":"boom"})"), std::string::npos) << lines[500];
}

TEST(LogSampler, KeepsOneInEveryPerKeyAndEveryErrorAndSlowCall) {
  LogSampler sampler(4, absl::Milliseconds(100));
  std::vector<int> kept;
  for (int i = 0; i < 10; ++i) {
    if (sampler.Keep("/a", true, absl::Milliseconds(1))) kept.push_back(i);
  }
  EXPECT_EQ(kept, (std::vector<int>{0, 4, 8}));
  // Errors and slow calls: always, and they do not move the count.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(sampler.Keep("/a", false, absl::Milliseconds(1)));
    EXPECT_TRUE(sampler.Keep("/a", true, absl::Milliseconds(100)));
  }
  EXPECT_FALSE(sampler.Keep("/a", true, absl::Milliseconds(1)));  // the 11th success
  EXPECT_FALSE(sampler.Keep("/a", true, absl::Milliseconds(1)));  // the 12th
  EXPECT_TRUE(sampler.Keep("/a", true, absl::Milliseconds(1)));   // the 13th
  LogSampler all(1, absl::InfiniteDuration());
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(all.Keep("/a", true, absl::ZeroDuration()));
  LogSampler nonsense(-3, absl::InfiniteDuration());
  EXPECT_EQ(nonsense.every(), 1);
}

}  // namespace
}  // namespace labshare
