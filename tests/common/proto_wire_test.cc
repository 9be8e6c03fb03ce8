// WireChecker answers exactly what ParseFromString answers: on a booking
// with every kind of field, on thousands of damaged copies of it, and on
// the wire's corner cases (groups, packed fields, nesting depth, UTF-8).
#include "common/proto_wire.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/stubs/logging.h>

#include "absl/strings/escaping.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.pb.h"

namespace labshare {
namespace {

using labshare::booking::v1::Booking;

Booking FullBooking() {
  Booking b;
  b.set_name("bookings/b-1");
  b.set_instrument("instruments/tem");
  b.set_instrument_owner("organizations/owner");
  b.set_mode(labshare::type::v1::JOINT_RESEARCH);
  b.set_user("users/ana");
  b.set_payer_organization("organizations/lab");
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(absl::FromUnixSeconds(1800000000));
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(absl::FromUnixSeconds(1800003600));
  *b.mutable_blocked_interval() = b.reserved_interval();
  b.set_state(Booking::CHECKED_IN);
  b.set_project("projects/p");
  for (const char* org : {"organizations/lab", "organizations/other"}) {
    auto* share = b.add_cost_shares();
    share->set_organization(org);
    share->set_share_bps(5000);
  }
  b.set_sample_count(-3);  // a ten-byte varint
  b.set_purpose("d\xc3\xa9j\xc3\xa0 vu");
  b.mutable_decision()->set_decided_by("users/sam");
  b.mutable_decision()->mutable_decide_time()->set_nanos(5);
  b.mutable_session()->mutable_start_time()->set_seconds(7);
  b.mutable_cancellation()->set_reason("r");
  b.set_late_cancellation(true);
  b.set_etag("9");
  b.add_quota_charges();
  return b;
}

// What the parser says, without its log lines about bad UTF-8.
bool Parses(const google::protobuf::Message& prototype, const std::string& bytes) {
  google::protobuf::LogSilencer quiet;
  std::unique_ptr<google::protobuf::Message> m(prototype.New());
  return m->ParseFromString(bytes);
}

TEST(WireChecker, AgreesWithTheParserOnDamagedBookings) {
  const WireChecker checker(Booking::descriptor());
  const std::string good = FullBooking().SerializeAsString();
  ASSERT_TRUE(checker.Valid(good));
  ASSERT_TRUE(checker.Valid(""));
  std::mt19937 rng(17);
  int refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bad = good;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !bad.empty(); ++e) {
      const size_t at = rng() % bad.size();
      switch (rng() % 5) {
        case 0: bad.resize(at); break;                                           // truncated
        case 1: bad[at] = static_cast<char>(rng()); break;                       // a byte changed
        case 2: bad[at] = static_cast<char>(bad[at] ^ (1 << (rng() % 8))); break;  // a bit flipped
        case 3: bad.insert(at, 1, static_cast<char>(rng())); break;              // a byte inserted
        default: bad.erase(at, 1 + rng() % 4); break;                            // bytes lost
      }
    }
    const bool parses = Parses(Booking(), bad);
    refused += parses ? 0 : 1;
    ASSERT_EQ(checker.Valid(bad), parses) << "case " << i << ": " << absl::CHexEscape(bad);
  }
  EXPECT_GT(refused, 1000);  // the damage reached the checks
}

TEST(WireChecker, CornerCasesOfTheWire) {
  const WireChecker checker(Booking::descriptor());
  const std::string name = "\x0a\x03" "abc";  // field 1 (name), 3 bytes
  const std::vector<std::string> cases = {
      name,
      std::string("\x0a\x02\xc3\x28", 4),              // name not UTF-8 (proto3: refused)
      std::string("\x00", 1),                          // tag 0
      "\x0e",                                          // field 1, wire type 6
      "\x0f",                                          // field 1, wire type 7
      "\xfb\x0f\xfc\x0f",                              // an unknown group (field 255), closed
      "\xfb\x0f\xfc\x0e",                              // closed by another field's end tag
      "\xfb\x0f",                                      // never closed
      "\xfc\x0f",                                      // an end tag alone
      "\xfb\x0f\x08\x01\xfb\x0e\xfc\x0e\xfc\x0f",      // groups nested in an unknown group
      "\x08\x01",                                      // name as a varint: unknown, kept
      "\x3a\x00",                                      // reserved_interval, empty
      "\x3a\x02\x0a\x00",                              // its start_time, empty
      "\x3a\x03\x0a\x01\x08",                          // a truncated varint inside it
      "\x3b\x3c",                                      // reserved_interval as a (known-type) group
      "\x48\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  // state: a ten-byte varint
      "\x48\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  // eleven bytes
      "\x80\x80\x80\x80\x10",                          // a five-byte tag, field 0 once cut to 32 bits
      "\x8a\x80\x80\x80\x00\x00",                      // a five-byte tag for field 1
      "\x8a\x80\x80\x80\x80\x00\x00",                  // a six-byte tag
      "\x0a\x05" "abc",                                // a length past the end
      "\x11\x01\x02\x03\x04\x05\x06\x07",              // fixed64 cut short
      "\x15\x01\x02\x03\x04",                          // fixed32
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(checker.Valid(cases[i]), Parses(Booking(), cases[i])) << "case " << i;
  }
}

TEST(WireChecker, NestingDepthAsTheParserCountsIt) {
  const WireChecker checker(google::protobuf::Value::descriptor());
  for (int levels = 40; levels < 60; ++levels) {  // two nestings a level: 80 to 118
    google::protobuf::Value v;
    v.set_string_value("x");
    for (int i = 0; i < levels; ++i) {
      google::protobuf::Value outer;
      *outer.mutable_list_value()->add_values() = v;
      v = outer;
    }
    const std::string bytes = v.SerializeAsString();
    EXPECT_EQ(checker.Valid(bytes), Parses(google::protobuf::Value(), bytes)) << levels;
  }
}

TEST(WireChecker, PackedAndUnpackedRepeatedScalars) {
  // SourceCodeInfo.Location: packed repeated int32 (path, span), proto2
  // strings (not checked for UTF-8), a repeated string.
  using Location = google::protobuf::SourceCodeInfo::Location;
  const WireChecker checker(Location::descriptor());
  Location l;
  for (int v : {1, -1, 300, 0}) l.add_path(v);
  l.add_span(7);
  l.set_leading_comments("\xff not UTF-8");
  l.add_leading_detached_comments("c");
  std::string good = l.SerializeAsString();
  good += std::string("\x10\x05", 2);  // one more span, unpacked
  ASSERT_TRUE(checker.Valid(good));
  ASSERT_TRUE(Parses(Location(), good));
  std::mt19937 rng(29);
  for (int i = 0; i < 5000; ++i) {
    std::string bad = good;
    const size_t at = rng() % bad.size();
    if (rng() % 2 == 0) {
      bad[at] = static_cast<char>(rng());
    } else {
      bad.resize(at);
    }
    ASSERT_EQ(checker.Valid(bad), Parses(Location(), bad)) << "case " << i << ": " << absl::CHexEscape(bad);
  }
}

}  // namespace
}  // namespace labshare
