// The time zone a table row of an instrument-bound resource is shown in: the
// zone of the instrument's facility (inventory's Facility.time_zone), looked
// up through inventory once per instrument and facility for one run of the
// client.
#ifndef LABSHARE_SERVICES_CLI_FACILITY_ZONES_H_
#define LABSHARE_SERVICES_CLI_FACILITY_ZONES_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/cli/format.h"

namespace labshare::cli {

// The zone of a facility whose time_zone is empty (records from before the
// field existed): the consortium's.
inline constexpr char kDefaultFacilityZone[] = "Asia/Shanghai";

class FacilityZones {
 public:
  // `channel` is called at most once, on the first lookup.
  FacilityZones(std::function<std::shared_ptr<grpc::Channel>()> channel, std::string token, absl::Duration timeout)
      : make_channel_(std::move(channel)), token_(std::move(token)), timeout_(timeout) {}

  // "instruments/{id}" a row is bound to: its `instrument` field, its
  // `name` or `parent` under an instrument; for an Instrument its own name.
  static std::optional<std::string> InstrumentOf(const google::protobuf::Message& row);

  // The facility's zone of a row's instrument; nullopt when the row is not
  // bound to one or the lookup failed (a note on stderr, once).
  std::optional<NamedZone> ForRow(const google::protobuf::Message& row);

 private:
  std::optional<std::string> FacilityOf(const std::string& instrument);
  std::optional<NamedZone> ZoneOf(const std::string& facility);
  std::unique_ptr<grpc::ClientContext> Context() const;
  void Note(const std::string& what, const grpc::Status& status);

  std::function<std::shared_ptr<grpc::Channel>()> make_channel_;
  std::string token_;
  absl::Duration timeout_;
  std::unique_ptr<labshare::inventory::v1::InventoryService::Stub> stub_;
  std::map<std::string, std::optional<std::string>> facility_of_;  // by instrument
  std::map<std::string, std::optional<NamedZone>> zone_of_;         // by facility
  bool noted_ = false;
};

}  // namespace labshare::cli

#endif  // LABSHARE_SERVICES_CLI_FACILITY_ZONES_H_
