#include "services/booking/booking_common.h"

#include "services/booking/redis_booking_store.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::booking {

absl::Status CheckChosenId(const std::string& field, absl::string_view id) {
  if (!labshare::inventory::ValidId(id)) return InvalidField(field, "must match [a-z0-9][a-z0-9-]{0,62}");
  if (IsGeneratedId(id)) {
    return InvalidField(field, "ids of the form pNN- and 12 or 16 hex digits are the service's own; choose another");
  }
  return absl::OkStatus();
}

void AttachSnapshot(v1::BookingEvent& event, const std::string& request_id, const v1::Booking& booking,
                    const google::protobuf::Message* other) {
  event.mutable_header()->set_request_id(request_id);
  const auto* payload_field = event.GetDescriptor()->FindFieldByNumber(event.payload_case());
  if (payload_field == nullptr) return;
  google::protobuf::Message* payload = event.GetReflection()->MutableMessage(&event, payload_field);
  const auto* d = payload->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->type() != google::protobuf::FieldDescriptor::TYPE_MESSAGE || f->is_repeated()) continue;
    if (f->message_type() == v1::Booking::descriptor()) {
      payload->GetReflection()->MutableMessage(payload, f)->CopyFrom(booking);
    } else if (other != nullptr && f->message_type() == other->GetDescriptor()) {
      payload->GetReflection()->MutableMessage(payload, f)->CopyFrom(*other);
    }
  }
}

namespace {

void AppendVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

constexpr uint32_t kLengthDelimited = 2;

}  // namespace

std::string EventBytesWithBooking(const v1::BookingEvent& header_only, int payload_field,
                                  absl::string_view booking_bytes) {
  const uint64_t booking_tag = (1u << 3) | kLengthDelimited;
  const uint64_t payload_tag = (static_cast<uint64_t>(payload_field) << 3) | kLengthDelimited;
  const size_t payload_size = VarintSize(booking_tag) + VarintSize(booking_bytes.size()) + booking_bytes.size();
  std::string out;
  header_only.AppendToString(&out);
  out.reserve(out.size() + VarintSize(payload_tag) + VarintSize(payload_size) + payload_size);
  AppendVarint(out, payload_tag);
  AppendVarint(out, payload_size);
  AppendVarint(out, booking_tag);
  AppendVarint(out, booking_bytes.size());
  out.append(booking_bytes.data(), booking_bytes.size());
  return out;
}

}  // namespace labshare::booking
