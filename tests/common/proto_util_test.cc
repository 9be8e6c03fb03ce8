#include "common/proto_util.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "labshare/inventory/v1/inventory.pb.h"

namespace labshare {
namespace {

using labshare::inventory::v1::ListInstrumentsRequest;

TEST(ProtoTime, RoundTripsToTheNanosecond) {
  const absl::Time t = absl::FromUnixNanos(1798761600123456789);
  EXPECT_EQ(FromProto(ToProto(t)), t);
  EXPECT_EQ(ToProto(t).nanos(), 123456789);
  const absl::Duration d = absl::Seconds(90) + absl::Nanoseconds(5);
  EXPECT_EQ(FromProto(ToProto(d)), d);
}

TEST(PageRequest, DefaultsAndClampsSize) {
  ListInstrumentsRequest r;
  EXPECT_EQ(ParsePageRequest(r)->page_size, kDefaultPageSize);
  r.set_page_size(100000);
  EXPECT_EQ(ParsePageRequest(r)->page_size, kMaxPageSize);
  r.set_page_size(-1);
  EXPECT_EQ(ErrorReason(ParsePageRequest(r).status()), "INVALID_FIELD");
}

TEST(PageToken, RoundTripsWithSameFiltersAndAnyPageSize) {
  ListInstrumentsRequest r;
  r.set_category("nmr");
  r.set_page_size(10);
  const std::string token = MakePageToken(r, "i042");
  r.set_page_token(token);
  r.set_page_size(20);
  auto page = ParsePageRequest(r);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->after, "i042");
  EXPECT_EQ(page->page_size, 20);
}

TEST(PageToken, RejectedWithOtherFiltersOrGarbage) {
  ListInstrumentsRequest r;
  r.set_category("nmr");
  const std::string token = MakePageToken(r, "i042");
  r.set_category("sem");
  r.set_page_token(token);
  EXPECT_EQ(ErrorReason(ParsePageRequest(r).status()), "INVALID_PAGE_TOKEN");
  r.set_page_token("%%%not-base64");
  EXPECT_EQ(ParsePageRequest(r).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestFingerprint, DependsOnMethodAndContent) {
  ListInstrumentsRequest a, b;
  a.set_category("nmr");
  b.set_category("nmr");
  EXPECT_EQ(RequestFingerprint("M", a), RequestFingerprint("M", b));
  EXPECT_NE(RequestFingerprint("M", a), RequestFingerprint("N", a));
  b.set_category("sem");
  EXPECT_NE(RequestFingerprint("M", a), RequestFingerprint("M", b));
  EXPECT_EQ(RequestFingerprint("M", a).size(), 64u);
}

}  // namespace
}  // namespace labshare
