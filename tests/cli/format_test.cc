// services/cli/format.h: display width, tables, zones, error JSON.
#include "services/cli/format.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <limits>

#include "common/error.h"
#include "common/grpc_status.h"
#include "labshare/billing/v1/billing.pb.h"
#include "labshare/usage/v1/usage.pb.h"

namespace labshare::cli {
namespace {

TEST(DisplayWidth, CountsTerminalColumns) {
  EXPECT_EQ(DisplayWidth(""), 0u);
  EXPECT_EQ(DisplayWidth("sem-1"), 5u);
  EXPECT_EQ(DisplayWidth("李伟"), 4u);                   // CJK ideographs: wide
  EXPECT_EQ(DisplayWidth("浙江大学 ZJU"), 12u);
  EXPECT_EQ(DisplayWidth("ＢｉｏＴｅｋ"), 12u);           // fullwidth forms
  EXPECT_EQ(DisplayWidth("，。「」"), 8u);               // CJK punctuation
  EXPECT_EQ(DisplayWidth("カタカナ한국"), 12u);           // kana, Hangul syllables
  EXPECT_EQ(DisplayWidth("Zoe\xCC\x88"), 3u);            // e + combining diaeresis
  EXPECT_EQ(DisplayWidth("Zo\xC3\xAB"), 3u);             // precomposed ë
  EXPECT_EQ(DisplayWidth("a\xE2\x80\x8B" "b"), 2u);      // zero-width space
  EXPECT_EQ(DisplayWidth("\xF0\x9F\x94\xAC"), 2u);       // U+1F52C microscope
  EXPECT_EQ(DisplayWidth("\xF0\xA0\x80\x80"), 2u);       // U+20000, plane 2
  EXPECT_EQ(DisplayWidth("\xE9\x99"), 2u);               // truncated: one per byte
  EXPECT_EQ(DisplayWidth("\xFF" "a"), 2u);
  EXPECT_EQ(CodepointWidth(U'\u00E9'), 1);
  EXPECT_EQ(CodepointWidth(U'\u0301'), 0);
  EXPECT_EQ(CodepointWidth(U'\u302A'), 0);  // ideographic tone mark
  EXPECT_EQ(CodepointWidth(U'\u3099'), 0);  // combining kana voiced mark
  EXPECT_EQ(CodepointWidth(U'\u1160'), 0);  // Hangul medial vowel
  EXPECT_EQ(CodepointWidth(U'\u303F'), 1);  // half fill space: narrow
  EXPECT_EQ(CodepointWidth(U'\uFF61'), 1);  // halfwidth katakana punctuation
  EXPECT_EQ(CodepointWidth(U'\uFFE5'), 2);  // fullwidth yen
}

TEST(RenderTable, PadsByDisplayWidth) {
  EXPECT_EQ(RenderTable({{"NAME", "DISPLAY_NAME", "ORG"},
                         {"users/li-wei", "李伟", "nanocraft"},
                         {"users/zoe", "Zoe\xCC\x88 Smith", "zju"},
                         {"users/x", "", ""}}),
            "NAME          DISPLAY_NAME  ORG\n"
            "users/li-wei  李伟          nanocraft\n"
            "users/zoe     Zoe\xCC\x88 Smith     zju\n"
            "users/x\n");
}

TEST(Zones, CallerZoneFollowsTz) {
  const char* old = getenv("TZ");
  const std::string saved = old ? old : "";
  setenv("TZ", "Asia/Shanghai", 1);
  EXPECT_EQ(CallerZone().name, "Asia/Shanghai");
  setenv("TZ", ":Europe/Berlin", 1);
  EXPECT_EQ(CallerZone().name, "Europe/Berlin");
  setenv("TZ", "No/Such_Zone", 1);
  EXPECT_EQ(CallerZone().name, "UTC");
  // Only IANA names: not the host's zone or a fixed offset by name...
  for (const char* other : {"localtime", "Fixed/UTC+08:00:00", "posix/Europe/Berlin"}) {
    setenv("TZ", other, 1);
    EXPECT_EQ(CallerZone().name, "UTC") << other;
  }
  // ...but a zone file's path is the zone it holds.
  setenv("TZ", ":/usr/share/zoneinfo/Europe/Berlin", 1);
  EXPECT_EQ(CallerZone().name, "Europe/Berlin");
  // The posix/ and right/ trees' files hold the same zones.
  for (const char* tree : {"/usr/share/zoneinfo/posix/Europe/Berlin", "/usr/share/zoneinfo/right/Europe/Berlin"}) {
    setenv("TZ", tree, 1);
    EXPECT_EQ(CallerZone().name, "Europe/Berlin") << tree;
  }
  if (old) setenv("TZ", saved.c_str(), 1); else unsetenv("TZ");
  const absl::Time t = absl::FromUnixSeconds(1803862800);  // 2027-03-01T01:00:00Z
  EXPECT_EQ(FormatTimeIn(t, LoadZone("Asia/Shanghai")->zone), "2027-03-01T09:00:00+08:00");
  EXPECT_EQ(FormatTimeIn(t, LoadZone("America/New_York")->zone), "2027-02-28T20:00:00-05:00");
  EXPECT_FALSE(LoadZone("Mars/Olympus").has_value());
  for (const char* other : {"", "localtime", "Fixed/UTC+08:00:00", "/usr/share/zoneinfo/Asia/Shanghai", "Factory"}) {
    EXPECT_FALSE(LoadZone(other).has_value()) << other;
  }
}

TEST(ErrorJson, CarriesCodeReasonMetadataViolationsAndRetry) {
  absl::Status s = MakeError(absl::StatusCode::kFailedPrecondition, "SLOT_TAKEN", "the slot is \"taken\"\n",
                             {{"instrument", "instruments/sem-1"}, {"booking", "bookings/b1"}});
  EXPECT_EQ(StatusJson(ToGrpcStatus(s, "booking"), 19),
            R"({"code":"FAILED_PRECONDITION","code_number":9,"reason":"SLOT_TAKEN","domain":"booking",)"
            R"("message":"the slot is \"taken\"\n","metadata":{"booking":"bookings/b1","instrument":)"
            R"("instruments/sem-1"},"field_violations":[],"exit_code":19})");
  s = InvalidFields({{"booking.instrument", "required"}, {"booking.mode", "choose one"}});
  const std::string json = StatusJson(ToGrpcStatus(s, "booking"), 13);
  EXPECT_NE(json.find(R"("field_violations":[{"field":"booking.instrument","description":"required"},)"
                      R"({"field":"booking.mode","description":"choose one"}])"),
            std::string::npos)
      << json;
  s = WithRetryDelay(MakeError(absl::StatusCode::kUnavailable, "STORAGE_UNAVAILABLE", "later"), absl::Milliseconds(1500));
  EXPECT_NE(StatusJson(ToGrpcStatus(s, "booking"), 24).find(R"("retry_delay":"1.5s","exit_code":24})"),
            std::string::npos);
  EXPECT_EQ(StatusJson(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"), 24),
            R"({"code":"UNAVAILABLE","code_number":14,"reason":"","domain":"","message":"down","metadata":{},)"
            R"("field_violations":[],"exit_code":24})");
  EXPECT_EQ(LocalErrorJson("USAGE", "bad \x01", 2),
            R"({"code":"USAGE","reason":"","domain":"labshare-cli","message":"bad \u0001","metadata":{},)"
            R"("field_violations":[],"exit_code":2})");
}

// Money prints with its currency's ISO 4217 digits (common/currency.h), not
// always two: 1500 minor units of JPY are 1500 yen, of KWD 1.500 dinars.
TEST(Money, PrintsWithTheCurrencysDigits) {
  EXPECT_EQ(FormatMoney(150000, "CNY"), "1500.00 CNY");
  EXPECT_EQ(FormatMoney(1500, "JPY"), "1500 JPY");
  EXPECT_EQ(FormatMoney(1500, "KWD"), "1.500 KWD");
  EXPECT_EQ(FormatMoney(5, "KWD"), "0.005 KWD");
  EXPECT_EQ(FormatMoney(-5, "CNY"), "-0.05 CNY");
  EXPECT_EQ(FormatMoney(-7, "JPY"), "-7 JPY");
  EXPECT_EQ(FormatMoney(0, "EUR"), "0.00 EUR");
  EXPECT_EQ(FormatMoney(std::numeric_limits<int64_t>::min(), "CNY"), "-92233720368547758.08 CNY");
  // Through an answer's field, as the client prints it.
  labshare::type::v1::Money m;
  m.set_currency_code("JPY");
  m.set_amount_minor(1500);
  labshare::billing::v1::TopUpSubsidyPoolRequest r;
  *r.mutable_amount() = m;
  EXPECT_EQ(Scalar(r, r.GetDescriptor()->FindFieldByName("amount"), 0, absl::UTCTimeZone()), "1500 JPY");
  r.mutable_amount()->set_currency_code("KWD");
  EXPECT_EQ(Scalar(r, r.GetDescriptor()->FindFieldByName("amount"), 0, absl::UTCTimeZone()), "1.500 KWD");
}

// Money is typed in major units: a bare number too ("500 CNY" is 500.00
// CNY), scaled by the currency's digits; more decimals than it has refused.
TEST(Money, ParsesMajorUnitsWithTheCurrencysDigits) {
  struct Case {
    const char* text;
    int64_t minor;
    const char* currency;
  };
  for (const Case& c : {Case{"500.00 CNY", 50000, "CNY"}, Case{"500 CNY", 50000, "CNY"}, Case{"500.5 CNY", 50050, "CNY"},
                        Case{"500", 50000, "CNY"}, Case{"-1.25 EUR", -125, "EUR"}, Case{"1500 JPY", 1500, "JPY"},
                        Case{"1.500 KWD", 1500, "KWD"}, Case{"1.5 KWD", 1500, "KWD"}, Case{"2 KWD", 2000, "KWD"},
                        Case{" 0.001 BHD ", 1, "BHD"}, Case{"92233720368547758.07 CNY", INT64_MAX, "CNY"}}) {
    int64_t minor = 0;
    std::string currency, error;
    ASSERT_TRUE(ParseMoney(c.text, &minor, &currency, &error)) << c.text << ": " << error;
    EXPECT_EQ(minor, c.minor) << c.text;
    EXPECT_EQ(currency, c.currency) << c.text;
  }
  for (const char* bad : {"500.001 CNY", "1.5 JPY", "1.0 JPY", "1.5000 KWD", "", "12a CNY", "1.2.3 CNY", ".5 CNY",
                          "5. CNY", "+5 CNY", "1 2 CNY", "92233720368547758.08 CNY", "99999999999999999999 JPY"}) {
    int64_t minor = 0;
    std::string currency, error;
    EXPECT_FALSE(ParseMoney(bad, &minor, &currency, &error)) << bad << " -> " << minor;
    EXPECT_FALSE(error.empty()) << bad;
  }
  int64_t minor = 0;
  std::string currency, error;
  ASSERT_FALSE(ParseMoney("1.5 JPY", &minor, &currency, &error));
  EXPECT_EQ(error, "JPY has no minor unit: a whole amount like \"500 JPY\"");
  ASSERT_FALSE(ParseMoney("1.0001 KWD", &minor, &currency, &error));
  EXPECT_EQ(error, "KWD has 3 decimals, not 4");
}

// Files in answers: written raw, not as hex (the documents and the CSV and
// JSONL streams); hashes and signatures stay hex.
TEST(Files, TheContentFieldsOfDocumentsAndStreamsAreRaw) {
  const auto* doc = labshare::billing::v1::InvoiceDocument::descriptor();
  ASSERT_NE(RawContentField(doc), nullptr);
  EXPECT_EQ(RawContentField(doc)->name(), "content");
  const auto* usage = labshare::usage::v1::ExportUsageResponse::descriptor();
  ASSERT_NE(RawContentField(usage), nullptr);
  EXPECT_EQ(RawContentField(usage)->name(), "csv");
  EXPECT_EQ(RawContentField(labshare::usage::v1::CsvChunk::descriptor())->name(), "data");
  EXPECT_EQ(RawContentField(labshare::usage::v1::ExportAuditTrailResponse::descriptor())->name(), "data");
  EXPECT_EQ(RawContentField(labshare::usage::v1::AuditChainHead::descriptor()), nullptr);
  EXPECT_EQ(RawContentField(labshare::usage::v1::AuditEntry::descriptor()), nullptr);
  // ExportUsage's row batches print as answers; its CSV pieces, and the
  // trailer-only last message, do not.
  labshare::usage::v1::ExportUsageResponse m;
  const auto* csv = RawContentField(usage);
  m.set_csv("a,b\r\n");
  EXPECT_FALSE(OtherOneofMemberSet(m, csv));
  m.mutable_rows();
  EXPECT_TRUE(OtherOneofMemberSet(m, csv));
  m.Clear();
  EXPECT_FALSE(OtherOneofMemberSet(m, csv));
  labshare::billing::v1::InvoiceDocument d;
  d.set_content(std::string("%PDF\0\xff", 6));
  EXPECT_FALSE(OtherOneofMemberSet(d, RawContentField(doc)));
}

}  // namespace
}  // namespace labshare::cli
