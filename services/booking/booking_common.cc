#include "services/booking/booking_common.h"

namespace labshare::booking {

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

}  // namespace labshare::booking
