// labshare-demo-seed: loads a demo consortium into a running inventory
// service: a dozen organisations of every type and tier, facilities,
// instruments in all four sharing modes, rate cards, users, qualifications
// and a maintenance window. Idempotent: every call carries a request_id,
// so running it twice changes nothing. It calls as a consortium admin whose
// token it takes from LABSHARE_TOKEN (the launcher mints a short-lived one
// with labshare-token --signing_key_file for this bootstrap), over the
// channel the common TLS flags describe (--tls_ca).
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory.");
// --clock_file and the TLS flags are common flags.

namespace {

namespace v1 = labshare::inventory::v1;
namespace t = labshare::type::v1;
using labshare::ToProto;

class Seeder {
 public:
  Seeder(std::shared_ptr<grpc::Channel> channel, std::string token)
      : stub_(v1::InventoryService::NewStub(std::move(channel))), token_(std::move(token)) {}

  template <typename Req, typename Resp>
  void Call(const char* what,
            grpc::Status (v1::InventoryService::Stub::*method)(grpc::ClientContext*, const Req&,
                                                                Resp*),
            Req req, const std::string& id) {
    req.set_request_id(absl::StrCat("demo-seed-", what, "-", id));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    Resp resp;
    grpc::Status s = (stub_.get()->*method)(&ctx, req, &resp);
    // ALREADY_EXISTS: an earlier run (with other request ids) made it.
    if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      std::cerr << "seed " << what << " " << id << ": " << s.error_message() << " ("
                << labshare::GrpcErrorReason(s) << ")\n";
      ++failures_;
      return;
    }
    ++done_;
  }

  void Org(const std::string& id, const std::string& name, v1::OrganizationType type,
           v1::SizeClass size, v1::MembershipState state, const std::string& tier,
           const std::string& sector, bool state_owned = false, bool foreign = false) {
    v1::CreateOrganizationRequest r;
    r.set_organization_id(id);
    auto* o = r.mutable_organization();
    o->set_display_name(name);
    o->set_type(type);
    o->set_size_class(size);
    o->set_membership_state(state);
    o->set_tier(tier);
    o->set_sector(sector);
    o->set_state_owned(state_owned);
    o->set_foreign(foreign);
    Call("org", &v1::InventoryService::Stub::CreateOrganization, r, id);
  }

  // The fapiao details of an organisation (inventory InvoicingDetails), set
  // as its billing admin would (UpdateOrganization, path invoicing_details).
  void Invoicing(const std::string& id, const std::string& legal_name, const std::string& taxpayer_id,
                 const std::string& address, const std::string& phone, const std::string& bank,
                 const std::string& account) {
    v1::UpdateOrganizationRequest r;
    r.mutable_organization()->set_name("organizations/" + id);
    auto* d = r.mutable_organization()->mutable_invoicing_details();
    d->set_legal_name(legal_name);
    d->set_taxpayer_id(taxpayer_id);
    d->set_registered_address(address);
    d->set_phone(phone);
    d->set_bank_name(bank);
    d->set_bank_account(account);
    r.mutable_update_mask()->add_paths("invoicing_details");
    Call("invoicing", &v1::InventoryService::Stub::UpdateOrganization, r, id);
  }

  void Facility(const std::string& id, const std::string& name, const std::string& owner,
                const std::string& funder, bool non_members, bool foreign) {
    v1::CreateFacilityRequest r;
    r.set_facility_id(id);
    auto* f = r.mutable_facility();
    f->set_display_name(name);
    f->set_owner_organization("organizations/" + owner);
    f->set_funder(funder);
    f->mutable_access_policy()->set_allow_members(true);
    f->mutable_access_policy()->set_allow_non_members(non_members);
    f->mutable_access_policy()->set_allow_foreign(foreign);
    Call("facility", &v1::InventoryService::Stub::CreateFacility, r, id);
  }

  static v1::SlotRules Slots(int min_h, int max_h, bool qualification) {
    v1::SlotRules s;
    *s.mutable_min_block() = ToProto(absl::Hours(min_h));
    *s.mutable_max_block() = ToProto(absl::Hours(max_h));
    *s.mutable_member_horizon() = ToProto(absl::Hours(24 * 60));
    *s.mutable_non_member_horizon() = ToProto(absl::Hours(24 * 14));
    *s.mutable_min_notice() = ToProto(absl::Hours(2));
    *s.mutable_buffer() = ToProto(absl::Minutes(30));
    *s.mutable_approval_threshold() = ToProto(absl::Hours(24 * 7));
    *s.mutable_no_show_grace() = ToProto(absl::Minutes(30));
    *s.mutable_late_cancel_notice() = ToProto(absl::Hours(24));
    s.set_billing_basis(v1::GREATER_OF_RESERVED_AND_ACTUAL);
    *s.mutable_billing_unit() = ToProto(absl::Minutes(15));
    *s.mutable_minimum_charge() = ToProto(absl::Hours(1));
    s.set_missed_fee_bps(5000);
    s.set_late_cancel_fee_bps(2500);
    s.set_qualification_validity_days(qualification ? 90 : 0);
    return s;
  }

  // Offers ON_SITE and JOINT_RESEARCH always; LEASE and TECHNICAL_SERVICE
  // when asked. Adds member, CORE, non-member and owner rates per mode.
  void Instrument(const std::string& id, const std::string& name, const std::string& owner,
                  const std::string& facility, const std::string& category,
                  int64_t value_yuan, int64_t hourly_yuan, bool lease, bool service,
                  int daily_hours = 8) {
    v1::CreateInstrumentRequest r;
    r.set_instrument_id(id);
    auto* in = r.mutable_instrument();
    in->set_display_name(name);
    in->set_owner_organization("organizations/" + owner);
    in->set_facility("facilities/" + facility);
    in->set_category(category);
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(value_yuan * 100);
    in->set_daily_available_hours(daily_hours);
    auto* onsite = in->add_modes();
    onsite->set_mode(t::ON_SITE);
    *onsite->mutable_slot_rules() = Slots(1, 12, true);
    auto* joint = in->add_modes();
    joint->set_mode(t::JOINT_RESEARCH);
    *joint->mutable_slot_rules() = Slots(1, 24, false);
    if (lease) {
      auto* m = in->add_modes();
      m->set_mode(t::LEASE);
      m->set_approval_required(true);
      auto* l = m->mutable_lease_rules();
      l->set_min_term_days(7);
      l->set_max_term_days(180);
      *l->mutable_handover_buffer() = ToProto(absl::Hours(24));
      *l->mutable_return_buffer() = ToProto(absl::Hours(48));
      l->mutable_deposit()->set_currency_code("CNY");
      l->mutable_deposit()->set_amount_minor(value_yuan * 100 / 20);
      l->set_rate_basis(v1::PER_DAY);
      l->set_counted_hours_per_day(8);
      *l->mutable_horizon() = ToProto(absl::Hours(24 * 180));
    }
    if (service) {
      auto* m = in->add_modes();
      m->set_mode(t::TECHNICAL_SERVICE);
      *m->mutable_slot_rules() = Slots(1, 12, false);
      auto* e = in->add_service_catalogue();
      e->set_entry_id("analysis");
      e->set_display_name(name + " analysis, per sample");
      e->set_unit(v1::PER_SAMPLE);
      *e->mutable_instrument_time_per_unit() = ToProto(absl::Minutes(45));
    }
    Call("instrument", &v1::InventoryService::Stub::CreateInstrument, r, id);

    const int64_t hour = hourly_yuan * 100;
    // Instrument time and technical services carry 6 % VAT (included in the
    // price); joint research and leases state none.
    Rate(id, t::ON_SITE, t::MEMBER, "CORE", v1::PER_HOUR, hour * 6 / 10, "", 600);
    Rate(id, t::ON_SITE, t::MEMBER, "", v1::PER_HOUR, hour * 8 / 10, "", 600);
    Rate(id, t::ON_SITE, t::NON_MEMBER, "", v1::PER_HOUR, hour, "", 600);
    Rate(id, t::ON_SITE, t::OWNER, "", v1::PER_HOUR, hour * 3 / 10, "", 600);
    Rate(id, t::JOINT_RESEARCH, t::MEMBER, "", v1::PER_HOUR, hour * 5 / 10, "");
    Rate(id, t::JOINT_RESEARCH, t::NON_MEMBER, "", v1::PER_HOUR, hour * 8 / 10, "");
    if (lease) {
      Rate(id, t::LEASE, t::MEMBER, "", v1::RATE_PER_DAY, hour * 6, "");
      Rate(id, t::LEASE, t::NON_MEMBER, "", v1::RATE_PER_DAY, hour * 8, "");
    }
    if (service) {
      Rate(id, t::TECHNICAL_SERVICE, t::MEMBER, "", v1::RATE_PER_SAMPLE, hour / 2, "analysis", 600);
      Rate(id, t::TECHNICAL_SERVICE, t::NON_MEMBER, "", v1::RATE_PER_SAMPLE, hour * 7 / 10, "analysis", 600);
      Rate(id, t::TECHNICAL_SERVICE, t::MEMBER, "", v1::PER_HOUR, 30000, "", 600);
      Rate(id, t::TECHNICAL_SERVICE, t::NON_MEMBER, "", v1::PER_HOUR, 45000, "", 600);
    }
  }

  // tax_bps: the VAT included in the price (600 = 6 %, the rate of modern
  // services such as testing and R&D services); negative: none stated.
  void Rate(const std::string& instrument, t::SharingMode mode, t::PayerClass cls,
            const std::string& tier, v1::RateUnit unit, int64_t minor, const std::string& entry,
            int32_t tax_bps = -1) {
    v1::CreateRateRequest r;
    r.set_parent("instruments/" + instrument);
    auto* rate = r.mutable_rate();
    rate->set_mode(mode);
    rate->set_payer_class(cls);
    rate->set_tier(tier);
    rate->set_unit(unit);
    rate->set_service_entry_id(entry);
    rate->mutable_price()->set_currency_code("CNY");
    rate->mutable_price()->set_amount_minor(minor);
    if (tax_bps >= 0) rate->set_tax_rate_bps(tax_bps);
    // Whole days from a fixed date keep reruns identical (same request).
    *rate->mutable_effective_time() = ToProto(effective_);
    Call("rate", &v1::InventoryService::Stub::CreateRate, r,
         absl::StrCat(instrument, "-", mode, "-", cls, "-", tier, "-", unit, "-", entry, "-",
                      absl::ToUnixSeconds(effective_)));
  }

  void User(const std::string& id, const std::string& name, const std::string& org,
            std::vector<t::Role> roles) {
    v1::CreateUserRequest r;
    r.set_user_id(id);
    r.mutable_user()->set_display_name(name);
    r.mutable_user()->set_email(id + "@example.org");
    // The subject deploy/oidc/demo-accounts.json gives this person.
    r.mutable_user()->set_external_subject("acct-" + id);
    r.mutable_user()->set_organization("organizations/" + org);
    for (auto role : roles) r.mutable_user()->add_roles(role);
    Call("user", &v1::InventoryService::Stub::CreateUser, r, id);
  }

  void Qualify(const std::string& instrument, const std::string& user) {
    v1::GrantQualificationRequest r;
    r.set_instrument("instruments/" + instrument);
    r.set_user("users/" + user);
    r.set_note("induction completed");
    Call("qualification", &v1::InventoryService::Stub::GrantQualification, r, instrument + "-" + user);
  }

  void Maintenance(const std::string& instrument, absl::Time start, absl::Duration length,
                   const std::string& reason) {
    v1::CreateMaintenanceWindowRequest r;
    r.set_parent("instruments/" + instrument);
    *r.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(start);
    *r.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(start + length);
    r.mutable_maintenance_window()->set_reason(reason);
    Call("maintenance", &v1::InventoryService::Stub::CreateMaintenanceWindow, r,
         absl::StrCat(instrument, "-", absl::ToUnixSeconds(start)));
  }

  void set_effective(absl::Time t) { effective_ = t; }
  int failures() const { return failures_; }
  int done() const { return done_; }

 private:
  std::unique_ptr<v1::InventoryService::Stub> stub_;
  std::string token_;
  absl::Time effective_;
  int failures_ = 0;
  int done_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "labshare-demo-seed: loads the demo consortium into labshare-inventory.\n"
      "Usage: LABSHARE_TOKEN=... labshare-demo-seed --inventory=HOST:PORT [--tls_ca=FILE]");
  absl::ParseCommandLine(argc, argv);
  const char* token = std::getenv("LABSHARE_TOKEN");
  if (token == nullptr || *token == '\0') {
    std::cerr << "set LABSHARE_TOKEN to a consortium admin's token\n";
    return 2;
  }
  // The platform's time: the wall clock, or the demo's --clock_file.
  const absl::Time now = labshare::ClockFromFlags()->Now();
  auto channel = labshare::MakeChannel(absl::GetFlag(FLAGS_inventory));
  if (!channel.ok()) {
    std::cerr << channel.status().message() << "\n";
    return 2;
  }
  if (!(*channel)->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::cerr << "cannot reach inventory at " << absl::GetFlag(FLAGS_inventory) << "\n";
    return 1;
  }
  Seeder s(*channel, token);
  // The demo's rate card starts a minute from now (a line may also be
  // back-dated; the demo keeps no earlier price history).
  s.set_effective(absl::FromUnixSeconds(absl::ToUnixSeconds(now) + 60));

  using namespace labshare::inventory::v1;  // NOLINT: enum values read better
  s.Org("zju", "Zhejiang University", UNIVERSITY, SIZE_CLASS_UNSPECIFIED, MEMBER, "CORE", "new materials", true);
  s.Org("sjtu", "Shanghai Jiao Tong University", UNIVERSITY, SIZE_CLASS_UNSPECIFIED, MEMBER, "CORE", "biomedicine and health", true);
  s.Org("cas-sim", "CAS Institute of Microsystems", RESEARCH_INSTITUTE, SIZE_CLASS_UNSPECIFIED, MEMBER, "CORE", "semiconductors and integrated circuits", true);
  s.Org("smic-lab", "Leading Foundry Research Lab", ENTERPRISE, LEADING, MEMBER, "CORE", "semiconductors and integrated circuits", true);
  s.Org("biotek", "BioTek Pharma", ENTERPRISE, LARGE, MEMBER, "GENERAL", "biomedicine and health");
  s.Org("nanocraft", "NanoCraft Materials", ENTERPRISE, SME, MEMBER, "GENERAL", "new materials");
  s.Org("agrisense", "AgriSense", ENTERPRISE, START_UP, MEMBER, "GENERAL", "agriculture");
  s.Org("precimach", "PreciMach Tools", ENTERPRISE, SME, APPLICANT, "", "intelligent manufacturing");
  s.Org("ecowater", "EcoWater Testing", ENTERPRISE, SME, NON_MEMBER, "", "environment");
  s.Org("softlab", "SoftLab Analytics", ENTERPRISE, START_UP, NON_MEMBER, "", "software");
  s.Org("metrology", "Provincial Metrology Institute", GOVERNMENT_AGENCY, SIZE_CLASS_UNSPECIFIED, MEMBER, "GENERAL", "intelligent manufacturing", true);
  s.Org("euro-photonics", "EuroPhotonics GmbH", ENTERPRISE, LARGE, NON_MEMBER, "", "semiconductors and integrated circuits", false, true);
  // Fapiao details (fictitious codes with valid check characters).
  s.Invoicing("zju", "浙江大学", "12330000470003281H", "浙江省杭州市西湖区余杭塘路866号", "0571-8795 1111",
              "中国银行杭州浙大支行", "3731 5832 5823");
  s.Invoicing("sjtu", "上海交通大学", "12310000425006010X", "上海市闵行区东川路800号", "021-5474 0000",
              "中国工商银行上海交大支行", "1001 2444 0901 4450 999");
  s.Invoicing("cas-sim", "中国科学院上海微系统与信息技术研究所", "121000004250103739", "上海市长宁区长宁路865号",
              "021-6251 1070", "中国银行上海长宁支行", "4374 5823 1102");
  s.Invoicing("smic-lab", "领航晶圆研究实验室（上海）有限公司", "91310000MA1K8NQ32L", "上海市浦东新区张江路18号",
              "021-3861 0000", "招商银行上海张江支行", "1219 0876 5410 801");
  s.Invoicing("biotek", "百奥泰克制药（上海）有限公司", "91310000MA1FL3HD6W", "上海市浦东新区蔡伦路1号",
              "021-5080 1234", "中国建设银行上海张江支行", "3105 0161 3600 0000 1234");
  s.Invoicing("nanocraft", "纳米工坊材料科技（杭州）有限公司", "91330110MA2H3K5L7B", "浙江省杭州市余杭区文一西路1818号",
              "0571-8888 1234", "中国工商银行杭州余杭支行", "1202 0215 0910 0123 456");
  s.Invoicing("agrisense", "农感科技（杭州）有限公司", "91330106MA2GQ9XA1M", "浙江省杭州市西湖区学院路77号",
              "0571-8666 5678", "杭州银行西湖支行", "3301 0401 6000 1234 5");
  s.Invoicing("metrology", "浙江省计量科学研究院", "12330000470109826T", "浙江省杭州市下城区和睦路222号",
              "0571-8505 0000", "中国农业银行杭州和睦支行", "1903 0101 0400 0123 4");

  s.Facility("zju-nano", "ZJU Micro-Nano Fabrication Centre", "zju", "Provincial Science and Technology Department", true, false);
  s.Facility("sjtu-bio", "SJTU Bio-Imaging Platform", "sjtu", "National Natural Science Foundation", true, true);
  s.Facility("sim-cleanroom", "SIM 8-inch Clean Room", "cas-sim", "Chinese Academy of Sciences", false, false);
  s.Facility("foundry-pilot", "Foundry Pilot Line", "smic-lab", "Municipal Industrial Fund", true, false);
  s.Facility("metrology-lab", "Metrology and Testing Hall", "metrology", "Provincial Market Regulation Bureau", true, true);

  struct I { const char* id; const char* name; const char* owner; const char* fac; const char* cat; int64_t value; int64_t hour; bool lease; bool service; int daily; };
  const I instruments[] = {
      {"ebl-1", "Electron-beam lithography system", "zju", "zju-nano", "lithography", 32000000, 1500, false, true, 16},
      {"ebl-2", "Electron-beam lithography system (2nd)", "zju", "zju-nano", "lithography", 28000000, 1400, false, true, 16},
      {"sem-1", "Field-emission SEM", "zju", "zju-nano", "electron-microscopy", 4500000, 600, true, true, 12},
      {"afm-1", "Atomic force microscope", "zju", "zju-nano", "surface-analysis", 2200000, 300, true, true, 8},
      {"xrd-1", "X-ray diffractometer", "zju", "zju-nano", "materials-characterisation", 3800000, 400, false, true, 8},
      {"ald-1", "Atomic layer deposition tool", "zju", "zju-nano", "deposition", 6000000, 700, false, false, 24},
      {"cryo-tem", "Cryo-TEM 300 kV", "sjtu", "sjtu-bio", "electron-microscopy", 45000000, 2500, false, true, 24},
      {"nmr-600", "600 MHz NMR spectrometer", "sjtu", "sjtu-bio", "nmr", 12000000, 800, false, true, 24},
      {"confocal", "Confocal microscope", "sjtu", "sjtu-bio", "optical-microscopy", 3000000, 350, true, true, 12},
      {"flow-cyt", "Flow cytometer", "sjtu", "sjtu-bio", "cell-analysis", 2800000, 300, true, true, 10},
      {"lcms-1", "LC-MS/MS system", "sjtu", "sjtu-bio", "mass-spectrometry", 5500000, 500, false, true, 16},
      {"seq-1", "Next-generation sequencer", "sjtu", "sjtu-bio", "genomics", 9000000, 900, false, true, 24},
      {"cleanroom-a", "Clean-room bay A (ISO 5)", "cas-sim", "sim-cleanroom", "clean-room", 60000000, 3000, false, false, 24},
      {"cleanroom-b", "Clean-room bay B (ISO 6)", "cas-sim", "sim-cleanroom", "clean-room", 40000000, 2200, false, false, 24},
      {"stepper", "i-line stepper", "cas-sim", "sim-cleanroom", "lithography", 25000000, 1800, false, true, 24},
      {"rie-1", "Reactive ion etcher", "cas-sim", "sim-cleanroom", "etching", 7000000, 650, false, true, 24},
      {"pecvd-1", "PECVD system", "cas-sim", "sim-cleanroom", "deposition", 6500000, 600, false, true, 24},
      {"fib-1", "Focused ion beam", "cas-sim", "sim-cleanroom", "electron-microscopy", 18000000, 1600, false, true, 16},
      {"pilot-line", "200 mm pilot line", "smic-lab", "foundry-pilot", "pilot-line", 120000000, 8000, false, false, 24},
      {"prober", "Wafer prober", "smic-lab", "foundry-pilot", "electrical-test", 8000000, 700, true, true, 16},
      {"sims-1", "Secondary-ion mass spectrometer", "smic-lab", "foundry-pilot", "mass-spectrometry", 22000000, 1700, false, true, 16},
      {"tem-fab", "Analytical TEM", "smic-lab", "foundry-pilot", "electron-microscopy", 26000000, 2000, false, true, 16},
      {"icp-ms", "ICP-MS", "metrology", "metrology-lab", "mass-spectrometry", 3500000, 450, false, true, 8},
      {"cmm-1", "Coordinate measuring machine", "metrology", "metrology-lab", "precision-machining", 4200000, 400, true, true, 8},
      {"laser-int", "Laser interferometer", "metrology", "metrology-lab", "precision-machining", 1800000, 250, true, true, 8},
      {"climate", "Climate test chamber", "metrology", "metrology-lab", "environmental-test", 1500000, 200, true, true, 24},
      {"emc-lab", "EMC anechoic chamber", "metrology", "metrology-lab", "electrical-test", 16000000, 1200, false, true, 12},
      {"gcms-1", "GC-MS system", "metrology", "metrology-lab", "mass-spectrometry", 2600000, 350, false, true, 8},
      {"micro-ct", "Micro-CT scanner", "sjtu", "sjtu-bio", "imaging", 11000000, 900, false, true, 12},
      {"raman-1", "Raman spectrometer", "zju", "zju-nano", "spectroscopy", 1900000, 250, true, true, 8},
  };
  for (const I& i : instruments) {
    s.Instrument(i.id, i.name, i.owner, i.fac, i.cat, i.value, i.hour, i.lease, i.service, i.daily);
  }

  s.User("li-wei", "Li Wei", "nanocraft", {labshare::type::v1::LAB_USER});
  s.User("chen-jing", "Chen Jing", "biotek", {labshare::type::v1::LAB_USER});
  s.User("wang-fang", "Wang Fang", "zju", {labshare::type::v1::FACILITY_STAFF, labshare::type::v1::LAB_USER});
  s.User("zhao-lei", "Zhao Lei", "sjtu", {labshare::type::v1::FACILITY_STAFF});
  s.User("sun-mei", "Sun Mei", "nanocraft", {labshare::type::v1::MEMBER_BILLING_ADMIN});
  s.User("liu-yang", "Liu Yang", "ecowater", {labshare::type::v1::LAB_USER});
  s.User("admin", "Consortium Office", "zju", {labshare::type::v1::CONSORTIUM_ADMIN});
  s.User("auditor", "Funder Liaison", "metrology", {labshare::type::v1::AUDITOR});
  s.Qualify("sem-1", "li-wei");
  s.Qualify("ebl-1", "li-wei");
  s.Qualify("confocal", "chen-jing");
  s.Qualify("cryo-tem", "chen-jing");
  s.Maintenance("cryo-tem", absl::FromUnixSeconds((absl::ToUnixSeconds(now) / 86400 + 7) * 86400),
                absl::Hours(48), "annual service and cryo-holder exchange");

  std::cout << "demo seed: " << s.done() << " calls applied, " << s.failures() << " failed\n";
  return s.failures() == 0 ? 0 : 1;
}
