#include "services/cli/facility_zones.h"

#include <iostream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"

namespace labshare::cli {

namespace pb = google::protobuf;
namespace iv1 = labshare::inventory::v1;

namespace {

std::string StringField(const pb::Message& m, const char* name) {
  const pb::FieldDescriptor* f = m.GetDescriptor()->FindFieldByName(name);
  if (f == nullptr || f->is_repeated() || f->type() != pb::FieldDescriptor::TYPE_STRING) return "";
  return m.GetReflection()->GetString(m, f);
}

// "instruments/{id}" from "instruments/{id}[/...]", else "".
std::string InstrumentPrefix(const std::string& name) {
  if (!absl::StartsWith(name, "instruments/")) return "";
  std::vector<std::string> parts = absl::StrSplit(name, '/');
  if (parts.size() < 2 || parts[1].empty()) return "";
  return parts[0] + "/" + parts[1];
}

}  // namespace

std::optional<std::string> FacilityZones::InstrumentOf(const pb::Message& row) {
  for (const char* field : {"instrument", "name", "parent"}) {
    const std::string instrument = InstrumentPrefix(StringField(row, field));
    if (!instrument.empty()) return instrument;
  }
  return std::nullopt;
}

std::optional<NamedZone> FacilityZones::ForRow(const pb::Message& row) {
  if (row.GetDescriptor() == iv1::Facility::descriptor()) {
    // A facility row: its own zone.
    const std::string zone = StringField(row, "time_zone");
    return LoadZone(zone.empty() ? kDefaultFacilityZone : zone);
  }
  std::optional<std::string> facility;
  if (row.GetDescriptor() == iv1::Instrument::descriptor()) {
    // An instrument row names its facility itself.
    const std::string f = StringField(row, "facility");
    if (!f.empty()) facility = f;
  } else if (const auto instrument = InstrumentOf(row)) {
    facility = FacilityOf(*instrument);
  }
  if (!facility) return std::nullopt;
  return ZoneOf(*facility);
}

std::unique_ptr<grpc::ClientContext> FacilityZones::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  return ctx;
}

void FacilityZones::Note(const std::string& what, const grpc::Status& status) {
  if (noted_) return;
  noted_ = true;
  std::cerr << "note: cannot read the time zone of " << what << " (" << CodeName(status.error_code()) << " "
            << GrpcErrorReason(status) << "); its times are in your zone\n";
}

std::optional<std::string> FacilityZones::FacilityOf(const std::string& instrument) {
  if (auto it = facility_of_.find(instrument); it != facility_of_.end()) return it->second;
  if (stub_ == nullptr) stub_ = iv1::InventoryService::NewStub(make_channel_());
  iv1::GetInstrumentRequest request;
  request.set_name(instrument);
  iv1::Instrument answer;
  const grpc::Status status = stub_->GetInstrument(Context().get(), request, &answer);
  std::optional<std::string> facility;
  if (status.ok() && !answer.facility().empty()) facility = answer.facility();
  if (!status.ok()) Note(instrument, status);
  facility_of_[instrument] = facility;
  return facility;
}

std::optional<NamedZone> FacilityZones::ZoneOf(const std::string& facility) {
  if (auto it = zone_of_.find(facility); it != zone_of_.end()) return it->second;
  if (stub_ == nullptr) stub_ = iv1::InventoryService::NewStub(make_channel_());
  iv1::GetFacilityRequest request;
  request.set_name(facility);
  iv1::Facility answer;
  const grpc::Status status = stub_->GetFacility(Context().get(), request, &answer);
  std::optional<NamedZone> zone;
  if (status.ok()) {
    zone = LoadZone(answer.time_zone().empty() ? kDefaultFacilityZone : answer.time_zone());
  } else {
    Note(facility, status);
  }
  zone_of_[facility] = zone;
  return zone;
}

}  // namespace labshare::cli
