#include "services/notify/notify_mail_people.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"

namespace labshare::notify {
namespace {

namespace iv = labshare::inventory::v1;
namespace tv = labshare::type::v1;

constexpr absl::Duration kRpcTimeout = absl::Seconds(10);

tv::Role ToProtoRole(Role r) {
  switch (r) {
    case Role::kLabUser: return tv::LAB_USER;
    case Role::kFacilityStaff: return tv::FACILITY_STAFF;
    case Role::kMemberBillingAdmin: return tv::MEMBER_BILLING_ADMIN;
    case Role::kConsortiumAdmin: return tv::CONSORTIUM_ADMIN;
    case Role::kAuditor: return tv::AUDITOR;
    case Role::kService: return tv::SERVICE;
  }
  return tv::ROLE_UNSPECIFIED;
}

Person FromUser(const iv::User& u) {
  Person p{u.name(), u.display_name(), u.email(), u.organization(), u.disabled(), {}};
  for (int r : u.roles()) {
    switch (static_cast<tv::Role>(r)) {
      case tv::LAB_USER: p.roles.push_back(Role::kLabUser); break;
      case tv::FACILITY_STAFF: p.roles.push_back(Role::kFacilityStaff); break;
      case tv::MEMBER_BILLING_ADMIN: p.roles.push_back(Role::kMemberBillingAdmin); break;
      case tv::CONSORTIUM_ADMIN: p.roles.push_back(Role::kConsortiumAdmin); break;
      case tv::AUDITOR: p.roles.push_back(Role::kAuditor); break;
      case tv::SERVICE: p.roles.push_back(Role::kService); break;
      default: break;
    }
  }
  return p;
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat("inventory: ", s.error_message()));
}

class GrpcPeople final : public People {
 public:
  GrpcPeople(std::shared_ptr<grpc::Channel> channel, const Clock* wall, absl::Duration ttl)
      : stub_(iv::InventoryService::NewStub(channel)), wall_(wall), ttl_(ttl) {}

  absl::StatusOr<Person> User(const std::string& name) override { return UserWithin(name, absl::InfiniteFuture()); }

  absl::StatusOr<Person> UserWithin(const std::string& name, absl::Time deadline) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = users_.find(name);
      if (it != users_.end() && it->second.second > wall_->Now()) return it->second.first;
    }
    // The RPC's own timeout, or the caller's deadline when that is sooner
    // (real time: a transport deadline, not the domain clock).
    const absl::Time now = absl::Now();
    if (deadline <= now) return absl::DeadlineExceededError("inventory: no time left to ask");
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(std::min(now + kRpcTimeout, deadline)));
    iv::GetUserRequest req;
    req.set_name(name);
    iv::User u;
    grpc::Status s = stub_->GetUser(&ctx, req, &u);
    if (!s.ok()) return FromGrpc(s);
    Person p = FromUser(u);
    std::lock_guard<std::mutex> lock(mu_);
    users_[name] = {p, wall_->Now() + ttl_};
    return p;
  }

  absl::StatusOr<std::vector<Person>> WithRole(const std::string& organization, Role role) override {
    const std::string key = absl::StrCat(organization, "|", RoleName(role));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = roles_.find(key);
      if (it != roles_.end() && it->second.second > wall_->Now()) return it->second.first;
    }
    std::vector<Person> out;
    std::string page;
    do {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
      iv::ListUsersRequest req;
      req.set_organization(organization);
      req.set_role(ToProtoRole(role));
      req.set_page_size(500);
      req.set_page_token(page);
      iv::ListUsersResponse resp;
      grpc::Status s = stub_->ListUsers(&ctx, req, &resp);
      if (!s.ok()) return FromGrpc(s);
      for (const auto& u : resp.users()) out.push_back(FromUser(u));
      page = resp.next_page_token();
    } while (!page.empty());
    std::lock_guard<std::mutex> lock(mu_);
    roles_[key] = {out, wall_->Now() + ttl_};
    return out;
  }

  std::string InstrumentName(const std::string& name) override {
    const Instrument in = LoadInstrument(name);
    return in.display_name.empty() ? name : in.display_name;
  }

  std::string InstrumentZone(const std::string& name) override { return LoadInstrument(name).zone; }

  std::string ServiceEntryName(const std::string& instrument, const std::string& entry_id) override {
    const Instrument in = LoadInstrument(instrument);
    auto it = in.services.find(entry_id);
    return it == in.services.end() || it->second.empty() ? entry_id : it->second;
  }

  std::string OrganizationName(const std::string& name) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = organizations_.find(name);
      if (it != organizations_.end() && it->second.second > wall_->Now()) return it->second.first;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    iv::GetOrganizationRequest req;
    req.set_name(name);
    iv::Organization o;
    // Not cached when inventory does not answer: asked again next time.
    if (!stub_->GetOrganization(&ctx, req, &o).ok() || o.display_name().empty()) {
      return People::OrganizationName(name);
    }
    std::lock_guard<std::mutex> lock(mu_);
    organizations_[name] = {o.display_name(), wall_->Now() + ttl_};
    return o.display_name();
  }

  absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string& name) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    iv::GetMaintenanceWindowRequest req;
    req.set_name(name);
    iv::MaintenanceWindow w;
    grpc::Status s = stub_->GetMaintenanceWindow(&ctx, req, &w);
    if (!s.ok()) return FromGrpc(s);
    return std::make_pair(FromProto(w.interval().start_time()), FromProto(w.interval().end_time()));
  }

 private:
  struct Instrument {
    std::string display_name;
    std::string zone;  // of its facility
    std::map<std::string, std::string> services;  // catalogue entry id -> display name
    absl::Time expires;
  };

  // Display name and facility zone, cached like people.
  Instrument LoadInstrument(const std::string& name) {
    if (name.empty()) return {};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = instruments_.find(name);
      if (it != instruments_.end() && it->second.expires > wall_->Now()) return it->second;
    }
    Instrument out;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    iv::GetInstrumentRequest req;
    req.set_name(name);
    iv::Instrument in;
    if (!stub_->GetInstrument(&ctx, req, &in).ok()) return out;  // not cached: asked again next time
    out.display_name = in.display_name();
    for (const auto& e : in.service_catalogue()) out.services[e.entry_id()] = e.display_name();
    if (!in.facility().empty()) {
      grpc::ClientContext fctx;
      fctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
      iv::GetFacilityRequest freq;
      freq.set_name(in.facility());
      iv::Facility f;
      if (stub_->GetFacility(&fctx, freq, &f).ok()) out.zone = f.time_zone();
    }
    out.expires = wall_->Now() + ttl_;
    std::lock_guard<std::mutex> lock(mu_);
    instruments_[name] = out;
    return out;
  }

  std::unique_ptr<iv::InventoryService::Stub> stub_;
  const Clock* wall_;
  absl::Duration ttl_;
  std::mutex mu_;
  std::map<std::string, std::pair<Person, absl::Time>> users_;
  std::map<std::string, std::pair<std::vector<Person>, absl::Time>> roles_;
  std::map<std::string, Instrument> instruments_;
  std::map<std::string, std::pair<std::string, absl::Time>> organizations_;  // display names
};

}  // namespace

std::unique_ptr<People> InventoryPeople(std::shared_ptr<grpc::Channel> inventory, const Clock* wall,
                                        absl::Duration ttl) {
  return std::make_unique<GrpcPeople>(std::move(inventory), wall, ttl);
}

}  // namespace labshare::notify
