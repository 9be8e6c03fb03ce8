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

TEST(RequestFingerprint, OfACallerDependsOnTheCaller) {
  ListInstrumentsRequest a;
  a.set_category("nmr");
  EXPECT_EQ(RequestFingerprint("M", a, "users/ana"), RequestFingerprint("M", a, "users/ana"));
  EXPECT_NE(RequestFingerprint("M", a, "users/ana"), RequestFingerprint("M", a, "users/bob"));
  EXPECT_NE(RequestFingerprint("M", a, "users/ana"), RequestFingerprint("M", a));
  EXPECT_NE(RequestFingerprint("M", a, "users/ana"), RequestFingerprint("N", a, "users/ana"));
}

}  // namespace
}  // namespace labshare
