#include "services/booking/listed_booking.h"

#include "common/proto_util.h"
#include "common/proto_wire.h"

namespace labshare::booking {
namespace {

using google::protobuf::Timestamp;
using labshare::type::v1::Interval;
using v1::Booking;
using v1::CostShare;

constexpr uint32_t kVarint = 0, kLength = 2;  // wire types

// Skips a field of any wire type (the bytes are known to be well-formed).
bool SkipField(const char** p, const char* end, uint32_t tag) {
  switch (tag & 7) {
    case 0: {
      uint64_t v = 0;
      return wire::Varint(p, end, &v);
    }
    case 1:
      return wire::Fixed(p, end, 8);
    case 2: {
      absl::string_view s;
      return wire::Length(p, end, &s);
    }
    case 3:
      while (true) {  // a group, to its end tag
        uint32_t inner = 0;
        if (!wire::Tag(p, end, &inner)) return false;
        if ((inner & 7) == 4) return true;
        if (!SkipField(p, end, inner)) return false;
      }
    case 5:
      return wire::Fixed(p, end, 4);
    default:
      return false;
  }
}

// What a field reader did with a field: left it (skipped here), read it,
// or met bytes it could not read.
enum Read { kLeft, kRead, kBad };

// Calls field(number, wire_type, &p, end) for each field of a message body.
template <typename F>
bool Fields(absl::string_view body, F&& field) {
  const char* p = body.data();
  const char* end = p + body.size();
  while (p != end) {
    uint32_t tag = 0;
    if (!wire::Tag(&p, end, &tag)) return false;
    const Read r = field(tag >> 3, tag & 7, &p, end);
    if (r == kBad || (r == kLeft && !SkipField(&p, end, tag))) return false;
  }
  return true;
}

// A Timestamp occurrence merged into t.
bool MergeTimestamp(absl::string_view body, Timestamp* t) {
  return Fields(body, [t](uint32_t n, uint32_t wt, const char** p, const char* end) {
    if (wt != kVarint || (n != Timestamp::kSecondsFieldNumber && n != Timestamp::kNanosFieldNumber)) return kLeft;
    uint64_t v = 0;
    if (!wire::Varint(p, end, &v)) return kBad;
    if (n == Timestamp::kSecondsFieldNumber) {
      t->set_seconds(static_cast<int64_t>(v));
    } else {
      t->set_nanos(static_cast<int32_t>(v));
    }
    return kRead;
  });
}

}  // namespace

ListedBooking ListedOf(const Booking& b) {
  ListedBooking l;
  l.instrument = b.instrument();
  l.instrument_owner = b.instrument_owner();
  l.user = b.user();
  l.payer_organization = b.payer_organization();
  l.project = b.project();
  l.lease = b.lease();
  l.service_order = b.service_order();
  l.mode = b.mode();
  l.state = b.state();
  l.start = FromProto(b.reserved_interval().start_time());
  l.end = FromProto(b.reserved_interval().end_time());
  for (const auto& share : b.cost_shares()) l.cost_share_orgs.push_back(share.organization());
  return l;
}

bool ListedFromBytes(absl::string_view data, ListedBooking* out) {
  static const WireChecker* const kBooking = new WireChecker(Booking::descriptor());
  constexpr uint64_t kWanted =
      uint64_t{1} << Booking::kInstrumentFieldNumber | uint64_t{1} << Booking::kInstrumentOwnerFieldNumber |
      uint64_t{1} << Booking::kModeFieldNumber | uint64_t{1} << Booking::kUserFieldNumber |
      uint64_t{1} << Booking::kPayerOrganizationFieldNumber | uint64_t{1} << Booking::kReservedIntervalFieldNumber |
      uint64_t{1} << Booking::kStateFieldNumber | uint64_t{1} << Booking::kProjectFieldNumber |
      uint64_t{1} << Booking::kCostSharesFieldNumber | uint64_t{1} << Booking::kLeaseFieldNumber |
      uint64_t{1} << Booking::kServiceOrderFieldNumber;
  static_assert(Booking::kServiceOrderFieldNumber < 64 && Booking::kCostSharesFieldNumber < 64);
  // One pass checks the whole document and hands back these fields'
  // occurrences in order (each on its own wire type; the parser keeps any
  // other as unknown).
  WireFields fields;
  if (!kBooking->Valid(data, kWanted, &fields)) return false;
  ListedBooking l;
  Timestamp start, end;
  for (const WireField& f : fields) {
    switch (f.number) {
      case Booking::kInstrumentFieldNumber: l.instrument = f.bytes; break;
      case Booking::kInstrumentOwnerFieldNumber: l.instrument_owner = f.bytes; break;
      case Booking::kUserFieldNumber: l.user = f.bytes; break;
      case Booking::kPayerOrganizationFieldNumber: l.payer_organization = f.bytes; break;
      case Booking::kProjectFieldNumber: l.project = f.bytes; break;
      case Booking::kLeaseFieldNumber: l.lease = f.bytes; break;
      case Booking::kServiceOrderFieldNumber: l.service_order = f.bytes; break;
      case Booking::kModeFieldNumber: l.mode = static_cast<int32_t>(f.varint); break;
      case Booking::kStateFieldNumber: l.state = static_cast<int32_t>(f.varint); break;
      case Booking::kReservedIntervalFieldNumber: {
        // Occurrences merge: each start_time / end_time seen merges into one.
        const bool ok = Fields(f.bytes, [&](uint32_t n, uint32_t wt, const char** p, const char* e) -> Read {
          if (wt != kLength || (n != Interval::kStartTimeFieldNumber && n != Interval::kEndTimeFieldNumber)) {
            return kLeft;
          }
          absl::string_view ts;
          if (!wire::Length(p, e, &ts)) return kBad;
          return MergeTimestamp(ts, n == Interval::kStartTimeFieldNumber ? &start : &end) ? kRead : kBad;
        });
        if (!ok) return false;
        break;
      }
      case Booking::kCostSharesFieldNumber: {
        absl::string_view org;  // a new element
        const bool ok = Fields(f.bytes, [&](uint32_t n, uint32_t wt, const char** p, const char* e) -> Read {
          if (wt != kLength || n != CostShare::kOrganizationFieldNumber) return kLeft;
          return wire::Length(p, e, &org) ? kRead : kBad;
        });
        if (!ok) return false;
        l.cost_share_orgs.push_back(org);
        break;
      }
      default:
        break;
    }
  }
  l.start = FromProto(start);
  l.end = FromProto(end);
  *out = std::move(l);
  return true;
}

}  // namespace labshare::booking
