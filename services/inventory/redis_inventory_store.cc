#include "services/inventory/redis_inventory_store.h"

#include "absl/strings/str_cat.h"

namespace labshare::inventory::keys {

constexpr char kTag[] = "{inventory}:";

std::string Org(absl::string_view id) { return absl::StrCat(kTag, "org:", id); }
std::string Orgs() { return absl::StrCat(kTag, "orgs"); }
std::string Membership(absl::string_view org_id) { return absl::StrCat(kTag, "org:", org_id, ":membership"); }
std::string User(absl::string_view id) { return absl::StrCat(kTag, "user:", id); }
std::string Users() { return absl::StrCat(kTag, "users"); }
std::string UsersBySubject() { return absl::StrCat(kTag, "users:by_subject"); }
std::string UsersByEmail() { return absl::StrCat(kTag, "users:by_email"); }
std::string LookupMember(absl::string_view value, absl::string_view user_id) {
  return absl::StrCat(value, "\n", user_id);
}
std::string Facility(absl::string_view id) { return absl::StrCat(kTag, "facility:", id); }
std::string Facilities() { return absl::StrCat(kTag, "facilities"); }
std::string FacilityInstruments(absl::string_view id) { return absl::StrCat(kTag, "facility:", id, ":instruments"); }
std::string Instrument(absl::string_view id) { return absl::StrCat(kTag, "instr:", id); }
std::string Instruments() { return absl::StrCat(kTag, "instruments"); }
std::string Rate(absl::string_view i, absl::string_view r) { return absl::StrCat(kTag, "rate:", i, ":", r); }
std::string Rates(absl::string_view i) { return absl::StrCat(kTag, "instr:", i, ":rates"); }
std::string Qualification(absl::string_view i, absl::string_view u) {
  return absl::StrCat(kTag, "qual:", i, ":", u);
}
std::string InstrumentQualifications(absl::string_view i) { return absl::StrCat(kTag, "instr:", i, ":quals"); }
std::string UserQualifications(absl::string_view u) { return absl::StrCat(kTag, "user:", u, ":quals"); }
std::string Window(absl::string_view i, absl::string_view w) { return absl::StrCat(kTag, "mw:", i, ":", w); }
std::string Windows(absl::string_view i) { return absl::StrCat(kTag, "instr:", i, ":windows"); }
std::string Idempotency(absl::string_view method, absl::string_view request_id) {
  return absl::StrCat(kTag, "idem:", method, ":", request_id);
}
std::string Outbox() { return absl::StrCat(kTag, "outbox"); }

}  // namespace labshare::inventory::keys
