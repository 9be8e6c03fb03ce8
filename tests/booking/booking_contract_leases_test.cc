// Leases and joint-research projects held to the words of their proto
// comments (proto/labshare/booking/v1/booking.proto, "leases" and "joint
// research", and booking_events.proto), second reading: what the earlier
// audits and booking_lease_order_contract_test do not prove. Every answer
// also passes the strict error-contract check when ctest runs it
// (LABSHARE_STRICT_REASONS=1).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "services/booking/booking_common.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

class LeaseContractTest : public BookingFlowsTest {
 protected:
  // A second instrument offered for lease like afm, named `id`, with afm's
  // member rate unless `rate` is false; its lease terms end within
  // `horizon` from now when one is given.
  void AddLeasedInstrument(const std::string& id, bool rate = true,
                           absl::Duration horizon = absl::ZeroDuration()) {
    const iv::Instrument afm = InventoryInstrument("afm");
    iv::CreateInstrumentRequest i;
    i.set_instrument_id(id);
    *i.mutable_instrument() = afm;
    i.mutable_instrument()->clear_name();
    i.mutable_instrument()->clear_etag();
    if (horizon > absl::ZeroDuration()) {
      *i.mutable_instrument()->mutable_modes(0)->mutable_lease_rules()->mutable_horizon() = ToProto(horizon);
    }
    Inv(&iv::InventoryService::Stub::CreateInstrument, i);
    if (!rate) return;
    iv::CreateRateRequest line;
    line.set_parent("instruments/" + id);
    line.mutable_rate()->set_mode(labshare::type::v1::LEASE);
    line.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    line.mutable_rate()->set_unit(iv::RATE_PER_DAY);
    line.mutable_rate()->mutable_price()->set_currency_code("CNY");
    line.mutable_rate()->mutable_price()->set_amount_minor(300000);
    Inv(&iv::InventoryService::Stub::CreateRate, line);
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

  // A maintenance window [day + from, day + to) on `instrument`, scheduled
  // in inventory only (the calendar has not received it).
  iv::MaintenanceWindow WindowInInventory(const std::string& instrument, absl::Duration from, absl::Duration to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent(instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("stage alignment");
    iv::MaintenanceWindow window;
    grpc::Status s = Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return window;
  }

  // The same, applied to the calendar.
  iv::MaintenanceWindow ApplyWindowOn(const std::string& instrument, absl::Duration from, absl::Duration to) {
    iv::MaintenanceWindow window = WindowInInventory(instrument, from, to);
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window.name());
    v1::ApplyMaintenanceWindowResponse result;
    grpc::Status s = Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &result, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return window;
  }

  // A person of `org` known to inventory.
  void AddUser(const std::string& id, const std::string& org, labshare::type::v1::Role role) {
    iv::CreateUserRequest cu;
    cu.set_user_id(id);
    cu.mutable_user()->set_display_name(id);
    cu.mutable_user()->set_organization(org);
    cu.mutable_user()->add_roles(role);
    Inv(&iv::InventoryService::Stub::CreateUser, cu);
  }

  // ana's lease of afm over [day + 1 d, day + 11 d), approved unless
  // `approve` is false.
  v1::Lease LeaseOfAfm(bool approve = true) {
    v1::Lease lease, approved;
    grpc::Status s = Request(1, 11, &lease);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    if (!approve) return lease;
    s = Approve(lease.name(), &approved);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return approved;
  }

  // As an older version stored it: the lease document without a blocked
  // interval (its booking keeps its own).
  void StoreWithoutBlockedInterval(const v1::Lease& lease) {
    auto part = store_->PartitionOf(IdOf(lease.name()));
    ASSERT_TRUE(part.ok() && part->has_value());
    const std::string key = keys::Lease(**part, IdOf(lease.name()));
    v1::Lease stored;
    ASSERT_TRUE(stored.ParseFromString(pool_->Command({"HGET", key, "d"})->str));
    stored.clear_blocked_interval();
    ASSERT_TRUE(pool_->Command({"HSET", key, "d", stored.SerializeAsString()}).ok());
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
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/spm", 1, 11, "lr"), &other, ana_),
                  grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED", "RequestLease of spm with afm's request_id");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_requested), 1);
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 11, "lr"), &again, ana_).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());  // the retry gets the first answer

  // The lease transitions alike: one approval per request_id.
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/spm", 1, 11, "ls"), &other, ana_).ok());
  v1::Lease approved, out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, Approval(first.name(), "ap"), &approved, staff_).ok());
  ExpectGrpcError(Call(stub_.get(), &Stub::ApproveLease, Approval(other.name(), "ap"), &out, staff_),
                  grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED", "approving spm's lease with afm's request_id");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_approved), 1);
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, Approval(first.name(), "ap"), &out, staff_).ok());
  EXPECT_EQ(out.SerializeAsString(), approved.SerializeAsString());
  v1::CancelLeaseRequest cancel;
  cancel.set_name(first.name());
  cancel.set_request_id("cl");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelLease, cancel, &out, ana_).ok());
  cancel.set_name(other.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelLease, cancel, &out, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "cancelling spm's lease with the request_id that cancelled afm's");
  v1::GetLeaseRequest g;
  g.set_name(other.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Lease::REQUESTED);

  // A refused request keeps nothing: its request_id is free again.
  ExpectGrpcError(Call(stub_.get(), &Stub::ApproveLease, Approval(first.name(), "free"), &out, staff_),
                  grpc::StatusCode::FAILED_PRECONDITION, "LEASE_STATE", "approving a cancelled lease");
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, Approval(other.name(), "free"), &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::APPROVED);
}

// The same window held by inventory only (the calendar has not received
// it): RequestLease's access check compares it with the whole block, term
// with handover and return buffers, as the calendar would (MAINTENANCE_CONFLICT,
// denials "DURING_MAINTENANCE"), validate_only alike; nothing is written.
TEST_F(LeaseContractTest, AWindowInInventoryOverABufferIsAMaintenanceConflict) {
  iv::MaintenanceWindow window = WindowInInventory("instruments/afm", absl::Hours(2), absl::Hours(4));
  v1::Lease lease;
  auto request = LeaseRequest("instruments/afm", 1, 11, "");  // handover buffer 1 d: the block starts at day
  for (const bool validate_only : {true, false}) {
    request.set_validate_only(validate_only);
    grpc::Status s = Call(stub_.get(), &Stub::RequestLease, request, &lease, ana_);
    ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "MAINTENANCE_CONFLICT",
                    validate_only ? "previewing a lease whose handover buffer meets a window in inventory"
                                  : "requesting it");
    EXPECT_EQ(ErrorMetadataOf(FromGrpcStatus(s))["denials"], "DURING_MAINTENANCE");
  }
  // The return buffer (2 d) alike: a term ending a day before the window.
  iv::CancelMaintenanceWindowRequest cancel;
  cancel.set_name(window.name());
  cancel.set_reason("moved");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  window = WindowInInventory("instruments/afm", absl::Hours(24 * 12), absl::Hours(24 * 12 + 2));
  request.set_validate_only(false);
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, request, &lease, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MAINTENANCE_CONFLICT", "a lease whose return buffer meets a window in inventory");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_requested), 0);
  // A block ending exactly at the window start: [day + 1 d, day + 10 d) + 2 d.
  request = LeaseRequest("instruments/afm", 2, 10, "");
  grpc::Status s = Call(stub_.get(), &Stub::RequestLease, request, &lease, ana_);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
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
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, preview, &lease, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MAINTENANCE_CONFLICT", "previewing a lease whose handover buffer meets a window");
  v1::CreateBookingRequest b;
  b.mutable_booking()->set_instrument("instruments/afm");
  b.mutable_booking()->set_mode(labshare::type::v1::LEASE);
  *b.mutable_booking()->mutable_reserved_interval() = preview.lease().term();
  b.mutable_lease_terms();
  b.set_validate_only(true);
  v1::Booking booking;
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, b, &booking, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MAINTENANCE_CONFLICT", "previewing the same lease through CreateBooking");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_requested), 0);
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 11, ""), &lease, ana_),
                  grpc::StatusCode::FAILED_PRECONDITION, "MAINTENANCE_CONFLICT", "the request itself");
  // A lease clear of the window previews and is requested.
  preview = LeaseRequest("instruments/afm", 2, 12, "");
  preview.set_validate_only(true);
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, preview, &lease, ana_).ok());
  EXPECT_TRUE(lease.name().empty());
}

// With a window on the calendar in the handover buffer and a lease later in
// the term, the request's step names the last entry in its way (the lease:
// SLOT_TAKEN); the preview answers the same. (The window is cancelled in
// inventory, its cancellation not applied yet: a window still scheduled in
// inventory is the access check's MAINTENANCE_CONFLICT, before the step.)
TEST_F(LeaseContractTest, ValidateOnlyNamesTheLastEntryInTheWayAsTheRequestDoes) {
  // In the handover buffer of a term from day + 1 d.
  const iv::MaintenanceWindow window = ApplyWindowOn("instruments/afm", absl::Hours(2), absl::Hours(4));
  iv::CancelMaintenanceWindowRequest cancel;  // off inventory, still on the calendar
  cancel.set_name(window.name());
  cancel.set_reason("engineer rescheduled");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  v1::Lease lease;
  const grpc::Status later = Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 5, 12, ""), &lease, ana_);
  ASSERT_TRUE(later.ok()) << GrpcErrorReason(later) << ": " << later.error_message();
  auto preview = LeaseRequest("instruments/afm", 1, 20, "");
  preview.set_validate_only(true);
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, preview, &lease, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "SLOT_TAKEN", "previewing a lease in the way of a window and, later, a lease");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 20, ""), &lease, ana_),
                  grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN", "the request itself");
}

// A chosen id already taken is answered before the access check's denial,
// by the request (its id is reserved before the step) and by its preview
// alike ("With validate_only, every check runs"): LEASE_EXISTS, not the
// MAINTENANCE_CONFLICT of a window scheduled in inventory over the
// handover buffer; CreateBooking of mode LEASE alike (BOOKING_EXISTS).
TEST_F(LeaseContractTest, ValidateOnlyAnswersATakenIdBeforeAnAccessDenial) {
  auto first = LeaseRequest("instruments/afm", 20, 30, "");
  first.mutable_lease()->set_purpose("first");
  first.set_lease_id("lease-one");
  v1::Lease lease;
  const grpc::Status made = Call(stub_.get(), &Stub::RequestLease, first, &lease, ana_);
  ASSERT_TRUE(made.ok()) << GrpcErrorReason(made) << ": " << made.error_message();
  WindowInInventory("instruments/afm", absl::Hours(2), absl::Hours(4));  // the handover buffer of a term from day + 1 d
  auto r = LeaseRequest("instruments/afm", 1, 11, "");
  r.set_lease_id("lease-one");
  v1::CreateBookingRequest b;
  b.set_booking_id("lease-one");
  b.mutable_booking()->set_instrument("instruments/afm");
  b.mutable_booking()->set_mode(labshare::type::v1::LEASE);
  *b.mutable_booking()->mutable_reserved_interval() = r.lease().term();
  b.mutable_lease_terms();
  v1::Booking booking;
  for (const bool validate_only : {true, false}) {
    r.set_validate_only(validate_only);
    ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &lease, ana_), grpc::StatusCode::ALREADY_EXISTS,
                    "LEASE_EXISTS", validate_only ? "previewing a lease with a taken id" : "requesting it");
    b.set_validate_only(validate_only);
    ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, b, &booking, ana_), grpc::StatusCode::ALREADY_EXISTS,
                    "BOOKING_EXISTS", validate_only ? "previewing it through CreateBooking" : "booking it");
  }
  // A free id: the window.
  r.set_lease_id("lease-two");
  r.set_validate_only(true);
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &lease, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MAINTENANCE_CONFLICT", "previewing the lease with a free id");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_requested), 1);
}

// ExtendLease: a window scheduled in inventory over the extension of the
// block, [old blocked end, new blocked end) with the return buffer, is
// MAINTENANCE_CONFLICT also before the calendar has received it; one
// starting exactly at the new blocked end, or lying inside the old block,
// is not in the way.
TEST_F(LeaseContractTest, ExtendLeaseMeetsAWindowScheduledInInventory) {
  const v1::Lease lease = LeaseOfAfm();  // term [day + 1 d, day + 11 d), return buffer 2 d: blocked to day + 13 d
  ASSERT_EQ(FromProto(lease.blocked_interval().end_time()), day_ + absl::Hours(24 * 13));
  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 15));  // blocked to day + 17 d
  v1::Lease out;
  // In the return buffer of the new term.
  iv::MaintenanceWindow window = WindowInInventory("instruments/afm", absl::Hours(24 * 16), absl::Hours(24 * 16 + 2));
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MAINTENANCE_CONFLICT", "an extension whose return buffer meets a window in inventory");
  iv::CancelMaintenanceWindowRequest cancel;
  cancel.set_name(window.name());
  cancel.set_reason("moved");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  // Right after the old blocked end.
  window = WindowInInventory("instruments/afm", absl::Hours(24 * 13), absl::Hours(24 * 13 + 1));
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MAINTENANCE_CONFLICT", "an extension meeting a window at the old blocked end");
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_extended), 0);
  cancel.set_name(window.name());
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  // Half-open: from the new blocked end on, and inside the old block.
  WindowInInventory("instruments/afm", absl::Hours(24 * 17), absl::Hours(24 * 17 + 2));
  WindowInInventory("instruments/afm", absl::Hours(24 * 12), absl::Hours(24 * 13));
  const grpc::Status s = Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(24 * 17));
}

// ExtendLease: "Checked in this order once the lease is read: the etag
// (ETAG_MISMATCH), the state (LEASE_STATE), new_end_time against the
// current term end (INVALID_FIELD), MODE_NOT_OFFERED, LEASE_TERM_TOO_LONG,
// then the extension's time: a window scheduled in inventory
// (MAINTENANCE_CONFLICT), then the calendar (SLOT_TAKEN ...)".
TEST_F(LeaseContractTest, ExtendLeaseChecksInTheOrderOfItsComment) {
  const v1::Lease lease = LeaseOfAfm();  // term [day + 1 d, day + 11 d), blocked to day + 13 d, etag 2
  v1::Lease later;  // blocked from day + 15 d
  grpc::Status s = Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 16, 23, ""), &later, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  iv::MaintenanceWindow window = WindowInInventory("instruments/afm", absl::Hours(24 * 13), absl::Hours(24 * 13 + 1));
  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  v1::Lease out;
  const auto extend_to = [&](int day, const std::string& etag) {
    *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * day));
    ext.set_etag(etag);
    return Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_);
  };
  ExpectGrpcError(extend_to(11, "1"), grpc::StatusCode::ABORTED, "ETAG_MISMATCH", "a stale etag and the same end");
  ExpectGrpcError(extend_to(11, ""), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "the same end");
  ExpectGrpcError(extend_to(62, ""), grpc::StatusCode::FAILED_PRECONDITION, "LEASE_TERM_TOO_LONG",
                  "past 60 days, over the window and the next lease");
  ExpectGrpcError(extend_to(15, ""), grpc::StatusCode::FAILED_PRECONDITION, "MAINTENANCE_CONFLICT",
                  "over the window in inventory and the next lease's block");
  iv::CancelMaintenanceWindowRequest cancel;
  cancel.set_name(window.name());
  cancel.set_reason("moved");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  ExpectGrpcError(extend_to(15, ""), grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN", "into the next lease's block");
  // Returned early: the state comes before new_end_time.
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("complete");
  clock_.Set(day_);
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_).ok());
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  clock_.Set(day_ + absl::Hours(24 * 5));
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  ExpectGrpcError(extend_to(5, ""), grpc::StatusCode::FAILED_PRECONDITION, "LEASE_STATE", "a returned lease, the same end");
}

// The sweep expires a lease request at the moment ApproveLease starts
// answering LEASE_STARTED (RequestDeadline): for a lease an older version
// stored without a blocked interval, its term's start, not at once.
TEST_F(LeaseContractTest, TheSweepExpiresALeaseWithoutABlockedIntervalAtItsTermStart) {
  const v1::Lease lease = LeaseOfAfm(/*approve=*/false);  // term from day + 1 d, blocked from day
  StoreWithoutBlockedInterval(lease);
  v1::GetLeaseRequest g;
  g.set_name(lease.name());
  v1::Lease out;
  // Past the handover buffer's start (its due entry), before the term.
  clock_.Set(day_ + absl::Hours(12));
  auto swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 0);
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &out, admin_).ok());
  EXPECT_EQ(out.state(), v1::Lease::REQUESTED);
  // From the term start on.
  clock_.Set(day_ + absl::Hours(24));
  swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 1);
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &out, admin_).ok());
  EXPECT_EQ(out.state(), v1::Lease::CANCELLED);
  EXPECT_EQ(BookingOf(lease).state(), v1::Booking::EXPIRED);
}

// ExtendLease on a lease an older version stored without a blocked
// interval: the block it grows is the one RequestLease would have stored,
// [term start - handover buffer, term end + return buffer). Only its
// extension must be free (an earlier booking on the instrument is not in
// the way: it used to be SLOT_TAKEN, the step's guard starting at 1970),
// and the lease gets that block's start back, not 1970.
TEST_F(LeaseContractTest, ExtendLeaseOfALeaseWithoutABlockedIntervalGrowsItsBlockAtItsEnd) {
  const v1::Lease earlier = LeaseOfAfm();  // blocked [day, day + 13 d), its booking CONFIRMED
  ASSERT_EQ(BookingOf(earlier).state(), v1::Booking::CONFIRMED);
  v1::Lease lease, approved;
  grpc::Status s = Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 20, 30, ""), &lease, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_TRUE(Approve(lease.name(), &approved).ok());  // blocked [day + 19 d, day + 32 d)
  StoreWithoutBlockedInterval(lease);
  // A third request after it: blocked from day + 35 d.
  v1::Lease later;
  s = Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 36, 43, ""), &later, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  v1::Lease out;
  // The extension runs into the next block: still refused.
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 34));  // blocked to day + 36 d
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "SLOT_TAKEN", "an extension into the next lease's block");
  // Up to the next block, half-open.
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 33));  // blocked to day + 35 d
  s = Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(out.term().end_time()), day_ + absl::Hours(24 * 33));
  EXPECT_EQ(FromProto(out.blocked_interval().start_time()), day_ + absl::Hours(24 * 19));
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(24 * 35));
  v1::GetLeaseRequest g;
  g.set_name(lease.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &out, admin_).ok());
  EXPECT_EQ(FromProto(out.blocked_interval().start_time()), day_ + absl::Hours(24 * 19));
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(24 * 35));
  const v1::Booking booking = BookingOf(lease);
  EXPECT_EQ(FromProto(booking.blocked_interval().start_time()), day_ + absl::Hours(24 * 19));
  EXPECT_EQ(FromProto(booking.blocked_interval().end_time()), day_ + absl::Hours(24 * 35));
  EXPECT_EQ(FromProto(booking.reserved_interval().end_time()), day_ + absl::Hours(24 * 33));
  EXPECT_EQ(BookingOf(earlier).state(), v1::Booking::CONFIRMED);
}

// RecordHandover: "handover_time ... must lie in [term start -
// handover_buffer, term end)", also for a lease stored without a blocked
// interval (its lower bound read as 1970: any earlier time was taken); an
// early return of such a lease gives it the block start RequestLease would
// have stored (it kept none: [1970, return + return buffer)).
TEST_F(LeaseContractTest, AHandoverAndEarlyReturnOfALeaseWithoutABlockedInterval) {
  const v1::Lease lease = LeaseOfAfm();  // term [day + 1 d, day + 11 d), handover buffer 24 h, return 48 h
  StoreWithoutBlockedInterval(lease);
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("complete");
  v1::Lease out;
  clock_.Set(day_ - absl::Milliseconds(1));  // just before the handover buffer begins
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "HANDOVER_WINDOW", "a handover before the handover buffer");
  clock_.Set(day_);
  grpc::Status s = Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  clock_.Set(day_ + absl::Hours(24 * 5));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  s = Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_TRUE(out.return_record().early_return());
  EXPECT_EQ(FromProto(out.blocked_interval().start_time()), day_);
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(24 * 7));
}

// RequestLease: each FAILED_PRECONDITION, NOT_FOUND and PERMISSION_DENIED
// reason of its comment, in the situation the comment describes.
TEST_F(LeaseContractTest, RequestLeaseRefusesAsItsCommentSays) {
  AddLeasedInstrument("xrd", /*rate=*/false);
  AddLeasedInstrument("spm", /*rate=*/true, absl::Hours(24 * 30));
  v1::Lease out;
  const auto request = [&](v1::RequestLeaseRequest r, const std::string& token) {
    return Call(stub_.get(), &Stub::RequestLease, r, &out, token);
  };
  auto r = LeaseRequest("instruments/afm", 1, 11, "");
  *r.mutable_lease()->mutable_handover_buffer() = ToProto(absl::Hours(12));  // afm's rules: 24 h
  ExpectGrpcError(request(r, ana_), grpc::StatusCode::FAILED_PRECONDITION, "BUFFER_TOO_SHORT", "a handover buffer below afm's");
  r = LeaseRequest("instruments/afm", 1, 11, "");
  *r.mutable_lease()->mutable_return_buffer() = ToProto(absl::Hours(47));  // afm's rules: 48 h
  ExpectGrpcError(request(r, ana_), grpc::StatusCode::FAILED_PRECONDITION, "BUFFER_TOO_SHORT", "a return buffer below afm's");
  // "INSUFFICIENT_NOTICE: the term starts less than the lease's handover
  // buffer from now (the requested one when longer than the instrument's)".
  // (A longer requested buffer once needed only the instrument's notice: the
  // block then started in the past and ApproveLease answered LEASE_STARTED.)
  r = LeaseRequest("instruments/afm", 1, 11, "");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(23));
  ExpectGrpcError(request(r, ana_), grpc::StatusCode::FAILED_PRECONDITION, "INSUFFICIENT_NOTICE", "a term 23 h ahead");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(24));
  *r.mutable_lease()->mutable_handover_buffer() = ToProto(absl::Hours(30));
  ExpectGrpcError(request(r, ana_), grpc::StatusCode::FAILED_PRECONDITION, "INSUFFICIENT_NOTICE",
                  "a term 24 h ahead with a 30 h handover buffer");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(30));
  ASSERT_TRUE(request(r, ana_).ok()) << "a term the requested handover buffer ahead";
  // "BEYOND_HORIZON: the term starts after now + the lease rules' horizon"
  // (LeaseRules.horizon: how far ahead a lease may start); a term starting
  // inside it may run on past it.
  ExpectGrpcError(request(LeaseRequest("instruments/spm", 31, 41, ""), ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "BEYOND_HORIZON", "a term starting past spm's 30-day horizon");
  ASSERT_TRUE(request(LeaseRequest("instruments/spm", 25, 35, ""), ana_).ok()) << "a term running past the horizon";
  // "NO_RATE: no LEASE rate line for the lessee's class"; the owner's own
  // lease needs none.
  ExpectGrpcError(request(LeaseRequest("instruments/xrd", 1, 11, ""), ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "NO_RATE", "a member lessee of an instrument without a member rate");
  ASSERT_TRUE(request(LeaseRequest("instruments/xrd", 1, 11, ""), staff_).ok()) << "the owner's own lease";
  EXPECT_EQ(out.lessee_organization(), "organizations/owner");
  EXPECT_EQ(out.payer_class(), labshare::type::v1::OWNER);
  // "PERMISSION_DENIED (USER_SCOPE: a LAB_USER naming another contact)";
  // owner staff request for any lessee and contact.
  r = LeaseRequest("instruments/spm", 1, 11, "");
  r.mutable_lease()->set_contact_user("users/bob");
  ExpectGrpcError(request(r, ana_), grpc::StatusCode::PERMISSION_DENIED, "USER_SCOPE", "ana naming bob");
  ASSERT_TRUE(request(r, staff_).ok()) << "owner staff naming bob";
  EXPECT_EQ(out.contact_user(), "users/bob");
  EXPECT_EQ(out.lessee_organization(), "organizations/lab");
  // NOT_FOUND: the instrument, the contact, the lessee.
  r = LeaseRequest("instruments/nope", 1, 11, "");
  ExpectGrpcError(request(r, ana_), grpc::StatusCode::NOT_FOUND, "INSTRUMENT_NOT_FOUND", "an unknown instrument");
  r = LeaseRequest("instruments/spm", 12, 22, "");
  r.mutable_lease()->set_contact_user("users/nobody");
  ExpectGrpcError(request(r, staff_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND", "an unknown contact");
  r.mutable_lease()->set_contact_user("users/ana");
  r.mutable_lease()->set_lessee_organization("organizations/nowhere");
  ExpectGrpcError(request(r, staff_), grpc::StatusCode::NOT_FOUND, "ORGANIZATION_NOT_FOUND", "an unknown lessee");
}

// ApproveLease and RejectLease: the fields, the etag, the state and the
// start, as their comments list them; a rejection frees the slot.
TEST_F(LeaseContractTest, ApproveAndRejectLeaseAsTheirCommentsSay) {
  const v1::Lease lease = LeaseOfAfm(/*approve=*/false);
  v1::Lease out;
  const auto approve = [&](const v1::ApproveLeaseRequest& a) {
    return Call(stub_.get(), &Stub::ApproveLease, a, &out, staff_);
  };
  auto a = Approval(lease.name(), "");
  a.mutable_contract()->set_rate_basis(v1::LeaseContract::RATE_BASIS_UNSPECIFIED);
  ExpectGrpcError(approve(a), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "no rate basis");
  a = Approval(lease.name(), "");
  a.mutable_contract()->mutable_rate()->set_amount_minor(0);
  ExpectGrpcError(approve(a), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "a rate of zero");
  a = Approval(lease.name(), "");
  a.mutable_contract()->mutable_deposit()->set_amount_minor(-1);
  ExpectGrpcError(approve(a), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "a negative deposit");
  a = Approval(lease.name(), "");
  a.mutable_contract()->mutable_deposit()->set_currency_code("USD");
  ExpectGrpcError(approve(a), grpc::StatusCode::INVALID_ARGUMENT, "CURRENCY_MISMATCH", "a deposit in another currency");
  a = Approval(lease.name(), "");
  a.set_etag("7");
  ExpectGrpcError(approve(a), grpc::StatusCode::ABORTED, "ETAG_MISMATCH", "a stale etag");
  // "LEASE_STARTED: the term (handover buffer included) has begun".
  clock_.Set(FromProto(lease.blocked_interval().start_time()));
  ExpectGrpcError(approve(Approval(lease.name(), "")), grpc::StatusCode::FAILED_PRECONDITION, "LEASE_STARTED",
                  "approving at the start of the handover buffer");
  clock_.Set(FromProto(lease.blocked_interval().start_time()) - absl::Milliseconds(1));

  v1::RejectLeaseRequest rej;
  rej.set_name(lease.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a rejection without a reason");
  rej.set_reason("the instrument is needed in house that month");
  rej.set_etag("7");
  ExpectGrpcError(Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_), grpc::StatusCode::ABORTED, "ETAG_MISMATCH",
                  "a rejection with a stale etag");
  rej.set_etag(lease.etag());
  ASSERT_TRUE(Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::REJECTED);
  EXPECT_EQ(out.end_reason(), rej.reason());
  const v1::Booking booking = BookingOf(lease);
  EXPECT_EQ(booking.state(), v1::Booking::REJECTED);
  EXPECT_EQ(booking.decision().note(), rej.reason());
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_lease_rejected), 1);
  EXPECT_EQ(CountEvents(&v1::BookingEvent::has_booking_rejected), 1);
  rej.clear_etag();
  rej.set_reason("again");
  ExpectGrpcError(Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "rejecting a rejected lease");
  ExpectGrpcError(approve(Approval(lease.name(), "")), grpc::StatusCode::FAILED_PRECONDITION, "LEASE_STATE",
                  "approving a rejected lease");
  // The slot is free: the same term is requested again (an hour before its
  // handover buffer begins, so with enough notice).
  clock_.Set(FromProto(lease.blocked_interval().start_time()) - absl::Hours(1));
  v1::Lease again;
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 2, 11, ""), &again, ana_).ok());
}

// RecordHandover, RecordReturn, ExtendLease, CancelLease and CloseLease:
// the INVALID_FIELD cases of their comments, their states, a late return
// and the settlement of a lease returned without damage.
TEST_F(LeaseContractTest, HandoverReturnExtendAndCloseAsTheirCommentsSay) {
  const v1::Lease lease = LeaseOfAfm();
  v1::Lease out;
  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  *ext.mutable_new_end_time() = lease.term().end_time();
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "an extension to the current end");
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 62));  // 61 days from day + 1 d
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_TERM_TOO_LONG", "an extension past afm's 60 days");
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 12));
  ext.set_etag("1");  // approval made it 2
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::ABORTED, "ETAG_MISMATCH",
                  "an extension with a stale etag");

  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  clock_.Set(day_);  // the handover buffer begins
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a handover without condition notes");
  h.set_condition_notes("probe holder complete");
  *h.mutable_handover_time() = ToProto(day_ + absl::Minutes(1));
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a handover time still to come");
  h.clear_handover_time();
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_).ok());
  EXPECT_EQ(FromProto(out.handover().handover_time()), day_);
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "a second handover");
  v1::CancelLeaseRequest cancel;
  cancel.set_name(lease.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelLease, cancel, &out, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "cancelling after the handover");
  v1::CloseLeaseRequest close;
  close.set_name(lease.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::CloseLease, close, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "closing a lease not returned");

  // A late return: recorded, the term and the block kept.
  clock_.Set(day_ + absl::Hours(24 * 12));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a return without condition notes");
  ret.set_condition_notes("as handed over");
  ret.mutable_damage_amount()->set_currency_code("CNY");
  ret.mutable_damage_amount()->set_amount_minor(-1);
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a negative damage amount");
  ret.mutable_damage_amount()->set_currency_code("USD");
  ret.mutable_damage_amount()->set_amount_minor(100);
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "CURRENCY_MISMATCH", "damage in another currency than the contract's");
  ret.clear_damage_amount();
  *ret.mutable_return_time() = ToProto(day_ - absl::Minutes(1));
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a return before the handover");
  *ret.mutable_return_time() = ToProto(clock_.Now() + absl::Minutes(1));
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a return still to come");
  ret.clear_return_time();
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::RETURNED);
  EXPECT_TRUE(out.return_record().late_return());
  EXPECT_FALSE(out.return_record().early_return());
  EXPECT_EQ(out.term().SerializeAsString(), lease.term().SerializeAsString());
  EXPECT_EQ(out.blocked_interval().SerializeAsString(), lease.blocked_interval().SerializeAsString());
  EXPECT_EQ(out.return_record().damage_amount().currency_code(), "CNY");
  EXPECT_EQ(out.return_record().damage_amount().amount_minor(), 0);
  const v1::Booking booking = BookingOf(lease);
  EXPECT_EQ(booking.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(booking.session().end_time()), day_ + absl::Hours(24 * 12));
  ext.clear_etag();
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "extending a returned lease");

  // No damage: the whole deposit is released.
  ASSERT_TRUE(Call(stub_.get(), &Stub::CloseLease, close, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::CLOSED);
  const auto& settled = out.settlement();
  EXPECT_EQ(settled.deposit_applied().amount_minor(), 0);
  EXPECT_EQ(settled.deposit_released().amount_minor(), 100000);
  EXPECT_EQ(settled.deposit_released().currency_code(), "CNY");
  EXPECT_EQ(settled.damage_outstanding().amount_minor(), 0);
  EXPECT_EQ(settled.damage_outstanding().currency_code(), "CNY");
  EXPECT_EQ(settled.closed_by(), "users/sam");
  ExpectGrpcError(Call(stub_.get(), &Stub::CloseLease, close, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "closing a closed lease");
}

// RecordHandover: "must lie in [term start - handover_buffer, term end)":
// at the term end the window has closed.
TEST_F(LeaseContractTest, TheHandoverWindowClosesAtTheTermEnd) {
  const v1::Lease lease = LeaseOfAfm();
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("complete");
  clock_.Set(FromProto(lease.term().end_time()));
  v1::Lease out;
  ExpectGrpcError(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "HANDOVER_WINDOW", "a handover at the term end");
  *h.mutable_handover_time() = ToProto(FromProto(lease.term().end_time()) - absl::Milliseconds(1));
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::HANDED_OVER);
}

// CancelLease: "LAB_USER and MEMBER_BILLING_ADMIN of the lessee
// organisation; owner staff; CONSORTIUM_ADMIN", "PERMISSION_DENIED
// (ORGANIZATION_SCOPE)"; the booking is cancelled with the lease, nothing
// charged.
TEST_F(LeaseContractTest, CancelLeaseServesTheLesseeOrganisation) {
  AddUser("cy", "organizations/outsider", labshare::type::v1::LAB_USER);
  const v1::Lease lease = LeaseOfAfm();
  v1::CancelLeaseRequest cancel;
  cancel.set_name(lease.name());
  cancel.set_reason("project postponed");
  v1::Lease out;
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelLease, cancel, &out, Token("cy", "outsider", {Role::kLabUser})),
                  grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "a LAB_USER of another organisation");
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelLease, cancel, &out,
                   Token("cy", "outsider", {Role::kMemberBillingAdmin})),
                  grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "a billing admin of another organisation");
  // bob is of the lessee organisation, not the lease's contact.
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelLease, cancel, &out, Token("bob", "lab", {Role::kLabUser})).ok());
  EXPECT_EQ(out.state(), v1::Lease::CANCELLED);
  EXPECT_EQ(out.end_reason(), "project postponed");
  const v1::Booking booking = BookingOf(lease);
  EXPECT_EQ(booking.state(), v1::Booking::CANCELLED);
  EXPECT_FALSE(booking.late_cancellation());
  int cancelled = 0;
  for (const auto& e : Events()) {
    if (!e.has_lease_cancelled()) continue;
    ++cancelled;
    EXPECT_EQ(e.lease_cancelled().previous_state(), v1::Lease::APPROVED);
    EXPECT_EQ(e.lease_cancelled().reason(), "project postponed");
  }
  EXPECT_EQ(cancelled, 1);
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelLease, cancel, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "LEASE_STATE", "cancelling a cancelled lease");
}

// CheckIn on a LEASE booking: "(USE_LEASE_METHODS, answered once the
// booking is read, before the caller's scope)"; CheckOut and CancelBooking
// say the same. A caller outside the booking's scope (a LAB_USER of the
// lessee who is not its user, staff or a billing admin of another
// organisation) hears USE_LEASE_METHODS too (CheckIn and CheckOut used to
// answer USER_SCOPE or ORGANIZATION_SCOPE first, CancelBooking as well).
TEST_F(LeaseContractTest, LeaseBookingMethodsAnswerUseLeaseMethodsBeforeTheScope) {
  const v1::Lease lease = LeaseOfAfm();
  const std::string bob = Token("bob", "lab", {Role::kLabUser});
  const std::string other_staff = Token("olga", "outsider", {Role::kFacilityStaff});
  const std::string other_billing = Token("cy", "outsider", {Role::kMemberBillingAdmin});
  v1::Booking out;
  v1::CheckInRequest in;
  in.set_name(lease.booking());
  v1::CheckOutRequest check_out;
  check_out.set_name(lease.booking());
  v1::CancelBookingRequest cancel;
  cancel.set_name(lease.booking());
  for (const auto& [token, who] : std::vector<std::pair<std::string, std::string>>{
           {ana_, "the booking's user"}, {bob, "a LAB_USER of the lessee, not its user"},
           {staff_, "owner staff"}, {other_staff, "staff of another organisation"}}) {
    ExpectGrpcError(Call(stub_.get(), &Stub::CheckIn, in, &out, token), grpc::StatusCode::FAILED_PRECONDITION,
                    "USE_LEASE_METHODS", "CheckIn by " + who);
    ExpectGrpcError(Call(stub_.get(), &Stub::CheckOut, check_out, &out, token), grpc::StatusCode::FAILED_PRECONDITION,
                    "USE_LEASE_METHODS", "CheckOut by " + who);
    ExpectGrpcError(Call(stub_.get(), &Stub::CancelBooking, cancel, &out, token),
                    grpc::StatusCode::FAILED_PRECONDITION, "USE_LEASE_METHODS", "CancelBooking by " + who);
  }
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelBooking, cancel, &out, other_billing),
                  grpc::StatusCode::FAILED_PRECONDITION, "USE_LEASE_METHODS",
                  "CancelBooking by a billing admin of another organisation");
  // The booking is read first: an unknown one is BOOKING_NOT_FOUND.
  in.set_name("bookings/nowhere");
  ExpectGrpcError(Call(stub_.get(), &Stub::CheckIn, in, &out, bob), grpc::StatusCode::NOT_FOUND,
                  "BOOKING_NOT_FOUND", "CheckIn of an unknown booking");
  EXPECT_EQ(BookingOf(lease).state(), v1::Booking::CONFIRMED);
}

// ListLeases: "Leases whose term overlaps this range" with the term as it
// is now: grown by ExtendLease, cut by an early return.
TEST_F(LeaseContractTest, ListLeasesFiltersByTheTermAsExtendedOrCut) {
  const v1::Lease lease = LeaseOfAfm();
  v1::Lease out;
  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 55));
  ASSERT_TRUE(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_).ok());
  const auto listed = [&](int from_days, int to_days) {
    v1::ListLeasesRequest r;
    *r.mutable_time_range()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * from_days));
    *r.mutable_time_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * to_days));
    v1::ListLeasesResponse resp;
    grpc::Status s = Call(stub_.get(), &Stub::ListLeases, r, &resp, ana_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return resp.leases_size();
  };
  EXPECT_EQ(listed(50, 51), 1) << "inside the extension";
  EXPECT_EQ(listed(55, 56), 0) << "from the new end on";
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("complete");
  clock_.Set(day_ + absl::Hours(24));
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(24 * 6));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  ASSERT_TRUE(out.return_record().early_return());
  EXPECT_EQ(listed(5, 7), 1) << "around the return";
  EXPECT_EQ(listed(6, 7), 0) << "from the return on";
}

// ---------------------------------------------------------------- projects

class ProjectContractTest : public LeaseContractTest {
 protected:
  // A CUSTOM project `id` of `orgs` (5000 each) budgeting 40 h of tem over
  // [from, to); by default owner and lab over [day, day + 30 d).
  v1::Project MakeProject(const std::string& id = "proj",
                          std::pair<std::string, std::string> orgs = {"organizations/owner", "organizations/lab"},
                          absl::Time from = absl::InfinitePast(), absl::Time to = absl::InfinitePast()) {
    v1::Project out;
    grpc::Status s = Call(stub_.get(), &Stub::CreateProject, ProjectRequest(id, orgs, from, to), &out, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return out;
  }
  v1::CreateProjectRequest ProjectRequest(const std::string& id, std::pair<std::string, std::string> orgs,
                                          absl::Time from, absl::Time to) {
    if (from == absl::InfinitePast()) from = day_;
    if (to == absl::InfinitePast()) to = day_ + absl::Hours(24 * 30);
    v1::CreateProjectRequest r;
    r.set_project_id(id);
    auto* p = r.mutable_project();
    p->set_title("thin films");
    for (const std::string& org : {orgs.first, orgs.second}) {
      auto* part = p->add_participants();
      part->set_organization(org);
      part->set_share_bps(5000);
    }
    *p->mutable_period()->mutable_start_time() = ToProto(from);
    *p->mutable_period()->mutable_end_time() = ToProto(to);
    auto* b = p->add_instrument_budgets();
    b->set_instrument("instruments/tem");
    *b->mutable_budget() = ToProto(absl::Hours(40));
    return r;
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

// CreateProjectRequest.project_id: "Optional id: [a-z][a-z0-9-]{3,62}
// (INVALID_FIELD otherwise)": a letter first, at least 4 characters.
TEST_F(ProjectContractTest, ChosenProjectIdFollowsItsPattern) {
  const std::pair<std::string, std::string> orgs = {"organizations/owner", "organizations/lab"};
  for (const std::string& id : std::vector<std::string>{"prj", "ab", "1abc", "-abc", "Abcd", std::string(64, 'a')}) {
    v1::Project out;
    ExpectGrpcError(Call(stub_.get(), &Stub::CreateProject,
                         ProjectRequest(id, orgs, absl::InfinitePast(), absl::InfinitePast()), &out, admin_),
                    grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", id);
  }
  EXPECT_EQ(MakeProject("abcd").name(), "projects/abcd");
  EXPECT_EQ(MakeProject(std::string(63, 'b')).name(), "projects/" + std::string(63, 'b'));
}

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

// ListProjects: "Projects matching every filter, ordered by name; scoped as
// GetProject" (participants' users and billing admins, staff of a budgeted
// instrument's owner, the wider roles), page by page; a page token is bound
// to its filters; a `participant` filter naming a partner organisation
// narrows the caller's own projects to those it shares with that partner
// (never refused). GetProject refuses anyone else with ORGANIZATION_SCOPE.
TEST_F(ProjectContractTest, ListProjectsOrdersByNameWithinTheCallersScope) {
  const absl::Time now = clock_.Now();
  MakeProject("proj-c", {"organizations/lab", "organizations/outsider"}, now - absl::Hours(24), now + absl::Hours(240));
  MakeProject("proj-a", {"organizations/owner", "organizations/outsider"}, now - absl::Hours(240), now - absl::Hours(24));
  MakeProject("proj-b");  // owner and lab, from day (ahead)
  using Names = std::vector<std::string>;
  const auto list = [&](v1::ListProjectsRequest r, const std::string& token) {
    Names names;
    for (int page = 0; page < 10; ++page) {
      v1::ListProjectsResponse resp;
      grpc::Status s = Call(stub_.get(), &Stub::ListProjects, r, &resp, token);
      EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
      for (const auto& p : resp.projects()) names.push_back(p.name().substr(p.name().rfind('/') + 1));
      if (!s.ok() || resp.next_page_token().empty()) break;
      r.set_page_token(resp.next_page_token());
    }
    return names;
  };
  v1::ListProjectsRequest r;
  r.set_page_size(1);
  const std::string outsider = Token("cy", "outsider", {Role::kLabUser});
  const std::string other_staff = Token("sue", "outsider", {Role::kFacilityStaff});
  EXPECT_EQ(list(r, admin_), (Names{"proj-a", "proj-b", "proj-c"}));
  EXPECT_EQ(list(r, Token("aud", "", {Role::kAuditor})), (Names{"proj-a", "proj-b", "proj-c"}));
  EXPECT_EQ(list(r, staff_), (Names{"proj-a", "proj-b", "proj-c"}));  // tem's owner
  EXPECT_EQ(list(r, ana_), (Names{"proj-b", "proj-c"}));
  EXPECT_EQ(list(r, Token("lb", "lab", {Role::kMemberBillingAdmin})), (Names{"proj-b", "proj-c"}));
  EXPECT_EQ(list(r, outsider), (Names{"proj-a", "proj-c"}));
  EXPECT_EQ(list(r, other_staff), Names{});  // a participant's staff, not an owner's
  // Filters.
  r.add_states(v1::Project::ACTIVE);
  EXPECT_EQ(list(r, admin_), Names{"proj-c"});
  r.clear_states();
  r.add_states(v1::Project::PLANNED);
  r.add_states(v1::Project::ENDED);
  EXPECT_EQ(list(r, admin_), (Names{"proj-a", "proj-b"}));
  r.clear_states();
  // A partner organisation narrows the caller's projects to those shared
  // with it: ana and lab's billing admin see proj-c only; staff, the admin
  // and the outsider's own user every project outsider takes part in.
  r.set_participant("organizations/outsider");
  EXPECT_EQ(list(r, ana_), Names{"proj-c"});
  EXPECT_EQ(list(r, Token("lb", "lab", {Role::kMemberBillingAdmin})), Names{"proj-c"});
  EXPECT_EQ(list(r, admin_), (Names{"proj-a", "proj-c"}));
  EXPECT_EQ(list(r, staff_), (Names{"proj-a", "proj-c"}));
  EXPECT_EQ(list(r, outsider), (Names{"proj-a", "proj-c"}));
  r.set_participant("organizations/lab");
  EXPECT_EQ(list(r, ana_), (Names{"proj-b", "proj-c"}));
  r.clear_participant();
  *r.mutable_time_range()->mutable_start_time() = ToProto(now - absl::Hours(24));  // p-a ends there
  *r.mutable_time_range()->mutable_end_time() = ToProto(day_);                    // p-b starts there
  EXPECT_EQ(list(r, admin_), Names{"proj-c"});
  r.clear_time_range();
  r.set_instrument("instruments/afm");
  EXPECT_EQ(list(r, admin_), Names{});
  r.clear_instrument();
  // A token of one filter presented with another.
  v1::ListProjectsResponse first, next;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListProjects, r, &first, admin_).ok());
  ASSERT_FALSE(first.next_page_token().empty());
  r.set_page_token(first.next_page_token());
  r.set_participant("organizations/lab");
  ExpectGrpcError(Call(stub_.get(), &Stub::ListProjects, r, &next, admin_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_PAGE_TOKEN", "a page token under another participant filter");
  // GetProject: the same scope.
  v1::GetProjectRequest g;
  g.set_name("projects/proj-b");
  v1::Project got;
  ExpectGrpcError(Call(stub_.get(), &Stub::GetProject, g, &got, outsider), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "a LAB_USER of no participant");
  ExpectGrpcError(Call(stub_.get(), &Stub::GetProject, g, &got, other_staff), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "staff of no budgeted instrument's owner");
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetProject, g, &got, ana_).ok());
  EXPECT_EQ(got.state(), v1::Project::PLANNED);
}

// ExtendLease on an instrument that no longer offers LEASE: its lease rules
// (the longest term) went with the mode, so MODE_NOT_OFFERED, not
// LEASE_TERM_TOO_LONG "at most 0 days".
TEST_F(LeaseContractTest, ExtendingALeaseAfterTheModeWasWithdrawnIsModeNotOffered) {
  const v1::Lease lease = LeaseOfAfm();
  // afm offers only LEASE: it is offered for on-site use as tem is instead.
  const iv::Instrument tem = InventoryInstrument("tem");
  ASSERT_EQ(tem.modes(0).mode(), labshare::type::v1::ON_SITE);
  OfferModes("afm", {tem.modes(0)}, "afm-no-lease");
  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  *ext.mutable_new_end_time() = ToProto(FromProto(lease.term().end_time()) + absl::Hours(24));
  v1::Lease out;
  ExpectGrpcError(Call(stub_.get(), &Stub::ExtendLease, ext, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MODE_NOT_OFFERED", "extending after LEASE was withdrawn");
}

// types.proto: a role or organisation that may not call "checked before
// validation", and CreateBooking and CreateServiceOrder check the
// organisation a LAB_USER names before her request_id: RequestLease too. A
// LAB_USER's request naming another lessee under the request_id of her
// earlier lease heard REQUEST_ID_REUSED (the lessee was checked only once
// the request_id was claimed), not ORGANIZATION_SCOPE.
TEST_F(LeaseContractTest, ALabUserNamingAnotherLesseeIsRefusedBeforeHerRequestIdIsLookedAt) {
  v1::Lease first, out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, LeaseRequest("instruments/afm", 1, 11, "lease-r1"), &first, ana_)
                  .ok());
  v1::RequestLeaseRequest other = LeaseRequest("instruments/afm", 1, 11, "lease-r1");
  other.mutable_lease()->set_lessee_organization("organizations/outsider");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, other, &out, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "ana naming outsider under her lease's request_id");
  other.mutable_lease()->set_instrument("not a name");  // before validation too
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, other, &out, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "the same on a malformed instrument");
  // Another contact user on a malformed or missing instrument: USER_SCOPE
  // (her scope needs no instrument; it was INVALID_NAME lease.instrument).
  v1::RequestLeaseRequest someone = LeaseRequest("instruments/afm", 1, 11, "lease-r2");
  someone.mutable_lease()->set_contact_user("users/bob");
  someone.mutable_lease()->set_instrument("not a name");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, someone, &out, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "USER_SCOPE", "for bob, on a malformed instrument");
  someone.mutable_lease()->clear_instrument();
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, someone, &out, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "USER_SCOPE", "for bob, without an instrument");
  // Her own organisation named: the first answer.
  v1::RequestLeaseRequest again = LeaseRequest("instruments/afm", 1, 11, "lease-r1");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, again, &out, ana_).ok());
  EXPECT_EQ(out.SerializeAsString(), first.SerializeAsString());
  again.mutable_lease()->set_lessee_organization("organizations/lab");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, again, &out, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "other content (her organisation named) under the request_id");
}

// RecordReturnRequest.damage_amount: "Unset means no damage" -- an empty
// amount (0, no currency) means so too (it was refused INVALID_FIELD
// damage_amount.currency_code); an amount given carries its currency
// (without one: INVALID_FIELD).
TEST_F(LeaseContractTest, AnEmptyDamageAmountIsNoDamage) {
  const v1::Lease lease = LeaseOfAfm();
  v1::Lease out;
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("probe holder complete");
  clock_.Set(day_ + absl::Hours(24));
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(24 * 11));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  ret.mutable_damage_amount()->set_amount_minor(5000);
  const grpc::Status s = Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "damage without its currency");
  EXPECT_NE(s.error_message().find("damage_amount.currency_code"), std::string::npos) << s.error_message();
  ret.mutable_damage_amount()->set_amount_minor(0);
  ASSERT_TRUE(ret.has_damage_amount());
  grpc::Status empty = Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_);
  ASSERT_TRUE(empty.ok()) << GrpcErrorReason(empty) << ": " << empty.error_message();
  EXPECT_EQ(out.state(), v1::Lease::RETURNED);
  EXPECT_EQ(out.return_record().damage_amount().amount_minor(), 0);
  EXPECT_EQ(out.return_record().damage_amount().currency_code(), "CNY");
  v1::CloseLeaseRequest close;
  close.set_name(lease.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CloseLease, close, &out, staff_).ok());
  EXPECT_EQ(out.settlement().deposit_released().amount_minor(), 100000);
  EXPECT_EQ(out.settlement().damage_outstanding().amount_minor(), 0);
}

// LeaseContract.deposit: "unset (or 0 without a currency) is 0 in the
// rate's currency. An amount given carries its currency (without one:
// INVALID_FIELD)".
TEST_F(LeaseContractTest, ADepositCarriesItsCurrency) {
  const v1::Lease lease = LeaseOfAfm(/*approve=*/false);
  v1::ApproveLeaseRequest a = Approval(lease.name());
  a.mutable_contract()->mutable_deposit()->clear_currency_code();
  v1::Lease out;
  grpc::Status s = Call(stub_.get(), &Stub::ApproveLease, a, &out, staff_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "a deposit without its currency");
  EXPECT_NE(s.error_message().find("contract.deposit.currency_code"), std::string::npos) << s.error_message();
  a.mutable_contract()->mutable_deposit()->set_amount_minor(0);
  s = Call(stub_.get(), &Stub::ApproveLease, a, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.contract().deposit().currency_code(), "CNY");
  EXPECT_EQ(out.contract().deposit().amount_minor(), 0);
}

}  // namespace
}  // namespace labshare::booking
