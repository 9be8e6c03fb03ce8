// Leases and joint-research projects held to the words of their proto
// comments (proto/labshare/booking/v1/booking.proto, "leases" and "joint
// research", and booking_events.proto), second reading: what the earlier
// audits and booking_lease_order_contract_test do not prove. Every answer
// also passes the strict error-contract check when ctest runs it
// (LABSHARE_STRICT_REASONS=1).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

class LeaseContractTest : public BookingFlowsTest {
 protected:
  static void ExpectError(const grpc::Status& s, grpc::StatusCode code, const std::string& reason,
                          const std::string& what) {
    EXPECT_EQ(s.error_code(), code) << what << ": " << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), reason) << what << ": " << s.error_message();
  }

  // A second instrument offered for lease like afm, named `id`, with afm's
  // member rate.
  void AddLeasedInstrument(const std::string& id) {
    iv::GetInstrumentRequest g;
    g.set_name("instruments/afm");
    iv::Instrument afm;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &afm, admin_).ok());
    iv::CreateInstrumentRequest i;
    i.set_instrument_id(id);
    *i.mutable_instrument() = afm;
    i.mutable_instrument()->clear_name();
    i.mutable_instrument()->clear_etag();
    Inv(&iv::InventoryService::Stub::CreateInstrument, i);
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/" + id);
    rate.mutable_rate()->set_mode(labshare::type::v1::LEASE);
    rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    rate.mutable_rate()->set_unit(iv::RATE_PER_DAY);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(300000);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
  }

  // ana's request for a lease of `instrument` over [day + from d, day + to d).
  v1::RequestLeaseRequest LeaseRequest(const std::string& instrument, int from_days, int to_days,
                                       const std::string& request_id) const {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument(instrument);
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * from_days));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * to_days));
    r.set_request_id(request_id);
    return r;
  }

  // The approval of Approve() (daily 3000.00, deposit 1000.00) with a request_id.
  static v1::ApproveLeaseRequest Approval(const std::string& name, const std::string& request_id) {
    v1::ApproveLeaseRequest a;
    a.set_name(name);
    a.mutable_contract()->set_rate_basis(v1::LeaseContract::DAILY);
    a.mutable_contract()->mutable_rate()->set_currency_code("CNY");
    a.mutable_contract()->mutable_rate()->set_amount_minor(300000);
    a.mutable_contract()->mutable_deposit()->set_currency_code("CNY");
    a.mutable_contract()->mutable_deposit()->set_amount_minor(100000);
    a.set_request_id(request_id);
    return a;
  }

  // A maintenance window [day + from, day + to) on `instrument`, applied to
  // the calendar.
  void ApplyWindowOn(const std::string& instrument, absl::Duration from, absl::Duration to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent(instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("stage alignment");
    iv::MaintenanceWindow window;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window.name());
    v1::ApplyMaintenanceWindowResponse result;
    ASSERT_TRUE(Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  }

  int CountEvents(bool (v1::BookingEvent::*has)() const) {
    int n = 0;
    for (const auto& e : Events()) n += (e.*has)();
    return n;
  }
};

// types.proto: "the same request_id with different content fails with
// FAILED_PRECONDITION, reason REQUEST_ID_REUSED": also when the other
// request's lease is on an instrument of another partition (its record
// lived in the instrument's partition only, so the second request was
// carried out: a second lease, a second approval).
TEST_F(LeaseContractTest, ARequestIdIsOneRequestAcrossPartitions) {
  ASSERT_NE(keys::Partition("spm"), keys::Partition("afm"));
  AddLeasedInstrument("spm");
  v1::Lease first, other, again;
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 11, "lr"), &first, ana_).ok());
  ExpectError(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/spm", 1, 11, "lr"), &other, ana_),
              grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED", "RequestLease of spm with afm's request_id");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_requested), 1);
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 11, "lr"), &again, ana_).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());  // the retry gets the first answer

  // The lease transitions alike: one approval per request_id.
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/spm", 1, 11, "ls"), &other, ana_).ok());
  v1::Lease approved, out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, Approval(first.name(), "ap"), &approved, staff_).ok());
  ExpectError(Call(stub_.get(), &Stub::ApproveLease, Approval(other.name(), "ap"), &out, staff_),
              grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED", "approving spm's lease with afm's request_id");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_approved), 1);
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, Approval(first.name(), "ap"), &out, staff_).ok());
  EXPECT_EQ(out.SerializeAsString(), approved.SerializeAsString());
  v1::CancelLeaseRequest cancel;
  cancel.set_name(first.name());
  cancel.set_request_id("cl");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelLease, cancel, &out, ana_).ok());
  cancel.set_name(other.name());
  ExpectError(Call(stub_.get(), &Stub::CancelLease, cancel, &out, ana_), grpc::StatusCode::FAILED_PRECONDITION,
              "REQUEST_ID_REUSED", "cancelling spm's lease with the request_id that cancelled afm's");
  v1::GetLeaseRequest g;
  g.set_name(other.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Lease::REQUESTED);

  // A refused request keeps nothing: its request_id is free again.
  ExpectError(Call(stub_.get(), &Stub::ApproveLease, Approval(first.name(), "free"), &out, staff_),
              grpc::StatusCode::FAILED_PRECONDITION, "LEASE_STATE", "approving a cancelled lease");
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, Approval(other.name(), "free"), &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::APPROVED);
}

// RequestLease's validate_only checks everything and writes nothing: a
// maintenance window on the calendar in the handover buffer (outside the
// term) is MAINTENANCE_CONFLICT, as the request itself answers, not
// SLOT_TAKEN; CreateBooking of mode LEASE alike.
TEST_F(LeaseContractTest, ValidateOnlyNamesAMaintenanceWindowInTheBuffers) {
  ApplyWindowOn("instruments/afm", absl::Hours(2), absl::Hours(4));  // term from day + 1 d, handover buffer 1 d
  v1::Lease lease;
  auto preview = LeaseRequest("instruments/afm", 1, 11, "");
  preview.set_validate_only(true);
  ExpectError(Call(stub_.get(), &Stub::RequestLease, preview, &lease, ana_), grpc::StatusCode::FAILED_PRECONDITION,
              "MAINTENANCE_CONFLICT", "previewing a lease whose handover buffer meets a window");
  v1::CreateBookingRequest b;
  b.mutable_booking()->set_instrument("instruments/afm");
  b.mutable_booking()->set_mode(labshare::type::v1::LEASE);
  *b.mutable_booking()->mutable_reserved_interval() = preview.lease().term();
  b.mutable_lease_terms();
  b.set_validate_only(true);
  v1::Booking booking;
  ExpectError(Call(stub_.get(), &Stub::CreateBooking, b, &booking, ana_), grpc::StatusCode::FAILED_PRECONDITION,
              "MAINTENANCE_CONFLICT", "previewing the same lease through CreateBooking");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_requested), 0);
  ExpectError(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 11, ""), &lease, ana_),
              grpc::StatusCode::FAILED_PRECONDITION, "MAINTENANCE_CONFLICT", "the request itself");
  // A lease clear of the window previews and is requested.
  preview = LeaseRequest("instruments/afm", 2, 12, "");
  preview.set_validate_only(true);
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, preview, &lease, ana_).ok());
  EXPECT_TRUE(lease.name().empty());
}

// ---------------------------------------------------------------- projects

class ProjectContractTest : public LeaseContractTest {
 protected:
  // A CUSTOM project of owner and lab (5000 each) budgeting 40 h of tem over
  // [day, day + 30 d).
  v1::Project MakeProject() {
    v1::CreateProjectRequest r;
    r.set_project_id("prj");
    auto* p = r.mutable_project();
    p->set_title("thin films");
    for (const char* org : {"organizations/owner", "organizations/lab"}) {
      auto* part = p->add_participants();
      part->set_organization(org);
      part->set_share_bps(5000);
    }
    *p->mutable_period()->mutable_start_time() = ToProto(day_);
    *p->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
    auto* b = p->add_instrument_budgets();
    b->set_instrument("instruments/tem");
    *b->mutable_budget() = ToProto(absl::Hours(40));
    v1::Project out;
    grpc::Status s = Call(stub_.get(), &Stub::CreateProject, r, &out, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return out;
  }
  grpc::Status Update(const v1::Project& project, std::vector<std::string> paths, v1::Project* out) {
    v1::UpdateProjectRequest u;
    *u.mutable_project() = project;
    for (auto& path : paths) u.mutable_update_mask()->add_paths(std::move(path));
    return Call(stub_.get(), &Stub::UpdateProject, u, out, admin_);
  }
  std::vector<v1::ProjectUpdated> Updates() {
    std::vector<v1::ProjectUpdated> out;
    auto v = pool_->Command({"XRANGE", keys::ProjectOutbox(), "-", "+"});
    for (const auto& entry : v->elements) {
      v1::BookingEvent e;
      e.ParseFromString(entry.elements[1].elements[3].str);
      if (e.has_project_updated()) out.push_back(e.project_updated());
    }
    return out;
  }
};

// ProjectUpdated.previous_participants: "Participants and shares before the
// change (set when participants or cost_share_template was in the mask)":
// a title-only update announces none.
TEST_F(ProjectContractTest, ProjectUpdatedCarriesPreviousParticipantsOnlyWhenTheyMayHaveChanged) {
  v1::Project project = MakeProject(), out;
  project.set_title("thin films II");
  ASSERT_TRUE(Update(project, {"title"}, &out).ok());
  project = out;
  project.mutable_participants(0)->set_share_bps(4000);
  project.mutable_participants(1)->set_share_bps(6000);
  ASSERT_TRUE(Update(project, {"participants"}, &out).ok());
  project = out;
  project.set_cost_share_template(v1::Project::EQUAL_SPLIT);
  ASSERT_TRUE(Update(project, {"cost_share_template"}, &out).ok());
  EXPECT_EQ(out.participants(0).share_bps(), 5000);
  const auto updates = Updates();
  ASSERT_EQ(updates.size(), 3u);
  EXPECT_EQ(updates[0].previous_participants_size(), 0) << "title only";
  ASSERT_EQ(updates[1].previous_participants_size(), 2);
  EXPECT_EQ(updates[1].previous_participants(0).share_bps(), 5000);
  ASSERT_EQ(updates[2].previous_participants_size(), 2);
  EXPECT_EQ(updates[2].previous_participants(0).share_bps(), 4000);
}

}  // namespace
}  // namespace labshare::booking
