// ListedFromBytes reads off the wire exactly what ListedOf reads from the
// parsed booking (the fields ListBookings filters on), and refuses what the
// parser refuses.
#include "services/booking/listed_booking.h"

#include <gtest/gtest.h>

#include <random>

#include <google/protobuf/stubs/logging.h>

#include "common/proto_util.h"

namespace labshare::booking {
namespace {

v1::Booking Sample(const std::string& id, int hour) {
  v1::Booking b;
  b.set_name("bookings/" + id);
  b.set_instrument("instruments/tem-" + id);
  b.set_instrument_owner("organizations/owner");
  b.set_mode(labshare::type::v1::JOINT_RESEARCH);
  b.set_user("users/ana");
  b.set_payer_organization("organizations/lab");
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(absl::FromUnixSeconds(1800000000 + hour * 3600));
  b.mutable_reserved_interval()->mutable_end_time()->set_seconds(1800000000 + hour * 3600 + 3600);
  b.mutable_reserved_interval()->mutable_end_time()->set_nanos(250);
  b.set_state(v1::Booking::CONFIRMED);
  b.set_project("projects/p-" + id);
  b.add_cost_shares()->set_organization("organizations/lab");
  b.add_cost_shares()->set_share_bps(10);  // no organization
  b.add_cost_shares()->set_organization("organizations/" + id);
  b.set_lease("leases/" + id);
  b.set_service_order("serviceOrders/" + id);
  b.set_purpose("purpose");
  b.mutable_decision()->set_note("n");
  return b;
}

void ExpectSame(const ListedBooking& a, const ListedBooking& b) {
  EXPECT_EQ(a.instrument, b.instrument);
  EXPECT_EQ(a.instrument_owner, b.instrument_owner);
  EXPECT_EQ(a.user, b.user);
  EXPECT_EQ(a.payer_organization, b.payer_organization);
  EXPECT_EQ(a.project, b.project);
  EXPECT_EQ(a.lease, b.lease);
  EXPECT_EQ(a.service_order, b.service_order);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.start, b.start);
  EXPECT_EQ(a.end, b.end);
  EXPECT_EQ(std::vector<absl::string_view>(a.cost_share_orgs.begin(), a.cost_share_orgs.end()),
            std::vector<absl::string_view>(b.cost_share_orgs.begin(), b.cost_share_orgs.end()));
}

TEST(ListedBooking, BytesReadAsTheParsedBooking) {
  const v1::Booking b = Sample("x", 3);
  const std::string bytes = b.SerializeAsString();
  ListedBooking from_bytes;
  ASSERT_TRUE(ListedFromBytes(bytes, &from_bytes));
  ExpectSame(from_bytes, ListedOf(b));
  EXPECT_EQ(from_bytes.cost_share_orgs.size(), 3u);
  ListedBooking empty;
  ASSERT_TRUE(ListedFromBytes("", &empty));
  ExpectSame(empty, ListedOf(v1::Booking()));
}

// Two serialized bookings one after the other parse as the second merged
// into the first: the last scalar wins, the intervals merge field by field,
// the cost shares add up.
TEST(ListedBooking, RepeatedFieldsMergeAsTheParserMergesThem) {
  v1::Booking second = Sample("y", 5);
  second.mutable_reserved_interval()->clear_end_time();
  second.set_mode(labshare::type::v1::ON_SITE);
  second.clear_lease();
  const std::string bytes = Sample("x", 3).SerializeAsString() + second.SerializeAsString();
  v1::Booking parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  ASSERT_EQ(parsed.cost_shares_size(), 6);
  ASSERT_EQ(parsed.reserved_interval().end_time().nanos(), 250);  // the first one's
  ListedBooking from_bytes;
  ASSERT_TRUE(ListedFromBytes(bytes, &from_bytes));
  ExpectSame(from_bytes, ListedOf(parsed));
}

TEST(ListedBooking, DamagedBytesAsTheParserReadsThem) {
  const std::string good = Sample("x", 3).SerializeAsString() + Sample("y", 4).SerializeAsString();
  std::mt19937 rng(41);
  google::protobuf::LogSilencer quiet;
  for (int i = 0; i < 10000; ++i) {
    std::string bad = good;
    const size_t at = rng() % bad.size();
    switch (rng() % 3) {
      case 0: bad[at] = static_cast<char>(rng()); break;
      case 1: bad.resize(at); break;
      default: bad.erase(at, 1 + rng() % 3); break;
    }
    v1::Booking parsed;
    const bool parses = parsed.ParseFromString(bad);
    ListedBooking from_bytes;
    ASSERT_EQ(ListedFromBytes(bad, &from_bytes), parses) << "case " << i;
    if (parses) ExpectSame(from_bytes, ListedOf(parsed));
  }
}

}  // namespace
}  // namespace labshare::booking
