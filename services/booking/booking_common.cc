#include "services/booking/booking_common.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/booking/redis_booking_store.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::booking {

v1::BusyInterval::Reason BusyReasonFor(int state, int mode) {
  if (state == v1::Booking::PENDING_APPROVAL) return v1::BusyInterval::AWAITING_APPROVAL;
  if (mode == labshare::type::v1::LEASE) return v1::BusyInterval::LEASED;
  if (state == v1::Booking::CHECKED_IN) return v1::BusyInterval::IN_USE;
  return v1::BusyInterval::BOOKED;
}

bool ScopeNeedsInventory(const char* method, const Principal& p, const ScopeFacts& facts) {
  const std::string full = BookingMethod(method);
  const MethodPolicy& policy = BookingPolicy();
  const unsigned scopes = policy.ScopesOf(full, p);
  return (scopes & kScopeOwner) && !(scopes & kScopeAny) && !policy.CheckScope(full, p, facts).ok();
}

absl::Status CheckScopeOn(const char* method, const Principal& p, InventoryClient& inventory,
                          const std::string& instrument, ScopeFacts facts) {
  const std::string full = BookingMethod(method);
  const MethodPolicy& policy = BookingPolicy();
  const unsigned scopes = policy.ScopesOf(full, p);
  if ((scopes & kScopeOwner) && !(scopes & kScopeAny) && !policy.CheckScope(full, p, facts).ok()) {
    LS_ASSIGN_OR_RETURN(auto in, inventory.Instrument(instrument));
    facts.owners.push_back(in->owner_organization());
    if (!in->operator_organization().empty()) facts.owners.push_back(in->operator_organization());
  }
  return policy.CheckScope(full, p, facts);
}

absl::Status CheckScopeNamed(const char* method, const Principal& p, InventoryClient& inventory,
                             const std::string& instrument, absl::string_view field, const ScopeFacts& facts) {
  if (!ScopeNeedsInventory(method, p, facts)) return CheckScope(method, p, facts);
  LS_RETURN_IF_ERROR(labshare::inventory::ParseName(instrument, "instruments", field).status());
  return CheckScopeOn(method, p, inventory, instrument, facts);
}

ScopeFacts BookingFacts(const v1::Booking& b) {
  ScopeFacts facts;
  facts.user = b.user();
  facts.parties.push_back(b.payer_organization());
  for (const auto& share : b.cost_shares()) facts.parties.push_back(share.organization());
  return facts;
}

absl::Status CheckOwnOrganization(const Principal& p, const std::string& named, absl::string_view what) {
  if (named.empty() || p.HasAnyRole({Role::kConsortiumAdmin, Role::kFacilityStaff}) ||
      named == ActorOrganization(p)) {
    return absl::OkStatus();
  }
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   absl::StrCat("you may name only your own organisation as ", what));
}

absl::Status CheckIdPattern(const std::string& field, absl::string_view id) {
  // The contract's pattern, [a-z][a-z0-9-]{3,62}: a letter first and at
  // least 4 characters (ValidId alone admits "7" or "ab").
  if (!labshare::inventory::ValidId(id) || id.size() < 4 || id[0] < 'a' || id[0] > 'z') {
    return InvalidField(field, "must match [a-z][a-z0-9-]{3,62}");
  }
  return absl::OkStatus();
}

absl::Status CheckChosenId(const std::string& field, absl::string_view id) {
  LS_RETURN_IF_ERROR(CheckIdPattern(field, id));
  // The form, whatever the two digits (not only the partitions there are).
  const bool digits = id.size() > 3 && id[0] == 'p' && absl::ascii_isdigit(id[1]) && absl::ascii_isdigit(id[2]);
  if (digits && IsGeneratedId(absl::StrCat("p00", id.substr(3)))) {
    return InvalidField(field, "ids of the form pNN- and 12 or 16 hex digits are the service's own; choose another");
  }
  return absl::OkStatus();
}

void AttachSnapshot(v1::BookingEvent& event, const std::string& request_id, const v1::Booking& booking,
                    const google::protobuf::Message* other) {
  // A step without an idempotency key keeps the request_id its events were
  // made with (ApplyMaintenanceWindow's steps carry the window request's).
  if (!request_id.empty()) event.mutable_header()->set_request_id(request_id);
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

std::string EventBytesWithBooking(const v1::BookingEvent& header_only, int payload_field,
                                  absl::string_view booking_bytes) {
  using google::protobuf::internal::WireFormatLite;
  using google::protobuf::io::CodedOutputStream;
  const uint32_t booking_tag = WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const uint32_t payload_tag =
      WireFormatLite::MakeTag(payload_field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const size_t payload_size = CodedOutputStream::VarintSize32(booking_tag) +
                              CodedOutputStream::VarintSize64(booking_bytes.size()) + booking_bytes.size();
  std::string out;
  header_only.AppendToString(&out);
  {
    google::protobuf::io::StringOutputStream raw(&out);
    CodedOutputStream coded(&raw);
    coded.WriteTag(payload_tag);
    coded.WriteVarint64(payload_size);
    coded.WriteTag(booking_tag);
    coded.WriteVarint64(booking_bytes.size());
    coded.WriteRaw(booking_bytes.data(), static_cast<int>(booking_bytes.size()));
  }
  return out;
}

}  // namespace labshare::booking
