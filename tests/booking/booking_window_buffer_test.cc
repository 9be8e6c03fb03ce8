// booking.proto against services/booking (read-only audit of 2026-12-06,
// second pass), each against the comment that settles it: the check-in
// window is half-open [opens, closes) (CheckIn, StartService and the
// sweep), UpdateProject asks inventory only about what its mask changes,
// CreateBooking's project checks tell an outsider nothing about the
// project, and a booking keeps its own buffer (the one in force when it was
// created) for check-in and release_remaining.
#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using grpc::StatusCode;

class WindowBufferTest : public BookingFlowsTest {
 protected:
  grpc::Status CheckIn(const std::string& name, const std::string& token, v1::Booking* out,
                       std::optional<absl::Time> at = std::nullopt) {
    v1::CheckInRequest in;
    in.set_name(name);
    if (at) *in.mutable_check_in_time() = ToProto(*at);
    return Call(stub_.get(), &Stub::CheckIn, in, out, token);
  }
  // tem's buffer in every slot mode (ON_SITE, JOINT_RESEARCH,
  // TECHNICAL_SERVICE) from now on.
  void SetBuffer(absl::Duration buffer) {
    iv::Instrument tem = InventoryInstrument("tem");
    iv::UpdateInstrumentRequest u;
    *u.mutable_instrument() = tem;
    for (auto& m : *u.mutable_instrument()->mutable_modes()) {
      if (m.has_slot_rules()) *m.mutable_slot_rules()->mutable_buffer() = ToProto(buffer);
    }
    u.mutable_update_mask()->add_paths("modes");
    Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  }
  // lab and owner share "proj" (equal split), 3 h on tem over [day, day + 2 days).
  void MakeProject() {
    v1::CreateProjectRequest r;
    r.set_project_id("proj");
    auto* p = r.mutable_project();
    p->set_title("thin films");
    p->set_cost_share_template(v1::Project::EQUAL_SPLIT);
    for (const std::string org : {"organizations/lab", "organizations/owner"}) {
      p->add_participants()->set_organization(org);
    }
    *p->mutable_period()->mutable_start_time() = ToProto(day_);
    *p->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
    auto* budget = p->add_instrument_budgets();
    budget->set_instrument("instruments/tem");
    *budget->mutable_budget() = ToProto(absl::Hours(3));
    v1::Project out;
    grpc::Status s = Call(stub_.get(), &Stub::CreateProject, r, &out, admin_);
    ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  }
  grpc::Status UpdateProject(const v1::Project& fields, const std::vector<std::string>& paths, v1::Project* out) {
    v1::UpdateProjectRequest u;
    *u.mutable_project() = fields;
    u.mutable_project()->set_name("projects/proj");
    for (const auto& path : paths) u.mutable_update_mask()->add_paths(path);
    return Call(stub_.get(), &Stub::UpdateProject, u, out, admin_);
  }
  // A JOINT_RESEARCH booking of proj on `instrument` over [day + from, day +
  // to), paid by `payer` (booked by the administrator).
  grpc::Status BookJoint(absl::Duration from, absl::Duration to, const std::string& payer, v1::Booking* out,
                         const std::string& instrument = "instruments/tem") {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument(instrument);
    r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    r.mutable_booking()->set_project("projects/proj");
    r.mutable_booking()->set_user("users/ana");
    r.mutable_booking()->set_payer_organization(payer);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    return Call(stub_.get(), &Stub::CreateBooking, r, out, admin_);
  }
};

// ================================================================ check-in window

// CheckIn's window is [opens, closes), closes = reserved start +
// no_show_grace (15 min for tem): at exactly 9:15 check-in is
// CHECK_IN_WINDOW_CLOSED (it was still allowed), a check-in recorded by staff
// at 9:14:59.999 is inside it. The sweep marks a booking MISSED at exactly
// its start + grace (it waited a moment longer, so that at 9:15 a booking
// could be neither checked in nor MISSED).
TEST_F(WindowBufferTest, CheckInClosesAtExactlyStartPlusGrace) {
  v1::Booking a, b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &a).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &b).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  ExpectGrpcError(CheckIn(a.name(), ana_, &out), StatusCode::FAILED_PRECONDITION, "CHECK_IN_WINDOW_CLOSED",
                  "at exactly start + grace");
  ExpectGrpcError(CheckIn(a.name(), staff_, &out, day_ + absl::Hours(9) + absl::Minutes(15)),
                  StatusCode::FAILED_PRECONDITION, "CHECK_IN_WINDOW_CLOSED", "check_in_time at start + grace");
  grpc::Status s = CheckIn(a.name(), staff_, &out, day_ + absl::Hours(9) + absl::Minutes(15) - absl::Milliseconds(1));
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);

  // (The sweep also checks the first session out at its auto-checkout time.)
  clock_.Set(day_ + absl::Hours(11) + absl::Minutes(15) - absl::Milliseconds(1));
  ASSERT_TRUE(manager_->Sweep().ok());
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::CONFIRMED);
  clock_.Set(day_ + absl::Hours(11) + absl::Minutes(15));
  EXPECT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
}

// Without a grace the window closes at the reserved end: the sweep marks
// the booking MISSED at exactly the end, when CheckIn already refuses.
TEST_F(WindowBufferTest, WithoutAGraceMissedAtExactlyTheReservedEnd) {
  iv::Instrument tem = InventoryInstrument("tem");
  iv::UpdateInstrumentRequest u;
  *u.mutable_instrument() = tem;
  for (auto& m : *u.mutable_instrument()->mutable_modes()) m.mutable_slot_rules()->clear_no_show_grace();
  u.mutable_update_mask()->add_paths("modes");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(10));
  ExpectGrpcError(CheckIn(b.name(), ana_, &out), StatusCode::FAILED_PRECONDITION, "CHECK_IN_WINDOW_CLOSED",
                  "at the reserved end");
  EXPECT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
}

// ================================================================ the booking's buffer

// Inventory's SlotRules.buffer: a booking blocks [start, end + buffer) "with
// the buffer in force when it is created"; its check-in opens up to that
// buffer before its start and release_remaining moves the block's end to
// check-out + that buffer. Booked with 30 min, the instrument's buffer set
// to 0 since: check-in 20 min before the start is allowed (it was
// CHECK_IN_TOO_EARLY), and an early check-out with release_remaining at
// 10:30 leaves the block to 11:00 (it was cut at 10:30), on the calendar
// too.
TEST_F(WindowBufferTest, CheckInAndReleaseUseTheBookingsOwnBuffer) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(12), &b).ok());
  ASSERT_EQ(FromProto(b.blocked_interval().end_time()), day_ + absl::Hours(12) + absl::Minutes(30));
  SetBuffer(absl::ZeroDuration());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(40));
  grpc::Status s = CheckIn(b.name(), ana_, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);

  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  v1::CheckOutRequest co;
  co.set_name(b.name());
  co.set_release_remaining(true);
  s = Call(stub_.get(), &Stub::CheckOut, co, &out, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_TRUE(out.session().remaining_released());
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(11));
  EXPECT_EQ(FromProto(Get(b.name()).blocked_interval().end_time()), day_ + absl::Hours(11));
  // The calendar: busy until 11:00, free after it.
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(10) + absl::Minutes(30));
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(14));
  v1::QueryAvailabilityResponse resp;
  s = Call(stub_.get(), &Stub::QueryAvailability, q, &resp, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(resp.busy_intervals_size(), 1);
  EXPECT_EQ(FromProto(resp.busy_intervals(0).interval().end_time()), day_ + absl::Hours(11));
}

// StartService opens "the same window as CheckIn": with the run's buffer
// (30 min when it was scheduled), not the instrument's current one (0).
TEST_F(WindowBufferTest, StartServiceOpensWithTheRunsOwnBuffer) {
  v1::ServiceOrder o = Scheduled(), out;  // run [9:00, 11:00)
  SetBuffer(absl::ZeroDuration());
  v1::StartServiceRequest start;
  start.set_name(o.name());
  clock_.Set(day_ + absl::Hours(8) + absl::Minutes(40));
  grpc::Status s = Call(stub_.get(), &Stub::StartService, start, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
}

// ================================================================ projects

// UpdateProject: "project.etag, when set, must match" (ABORTED ETAG_MISMATCH).
// Updates racing with the same etag: one applies, every other hears
// ETAG_MISMATCH (a lost compare-and-set answered CONCURRENT_MODIFICATION);
// racing without an etag: every one applies, one after the other (five
// racers: each loses at most four times, and an update reads the project
// again up to five times).
TEST_F(WindowBufferTest, RacingProjectUpdatesApplyOrHearEtagMismatch) {
  MakeProject();
  constexpr int kThreads = 5, kEach = 1;
  std::atomic<int> applied{0}, mismatched{0};
  std::vector<std::string> other;
  absl::Mutex mu;
  auto race = [&](bool with_etag) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < (with_etag ? 1 : kEach); ++i) {
          v1::Project fields, out;
          fields.set_title(absl::StrCat("title ", t, ".", i));
          if (with_etag) fields.set_etag(std::to_string(1 + kThreads * kEach));
          grpc::Status s = UpdateProject(fields, {"title"}, &out);
          if (s.ok()) {
            ++applied;
          } else if (GrpcErrorReason(s) == "ETAG_MISMATCH") {
            ++mismatched;
          } else {
            absl::MutexLock lock(&mu);
            other.push_back(GrpcErrorReason(s) + ": " + s.error_message());
          }
        }
      });
    }
    for (auto& th : threads) th.join();
  };
  race(false);
  EXPECT_EQ(applied.load(), kThreads * kEach);
  EXPECT_EQ(mismatched.load(), 0);
  EXPECT_EQ(other, std::vector<std::string>{});
  applied = 0;
  race(true);
  EXPECT_EQ(applied.load(), 1);
  EXPECT_EQ(mismatched.load(), kThreads - 1);
  EXPECT_EQ(other, std::vector<std::string>{});
}

// UpdateProject asks inventory only about what the mask changes: a title
// change on a project whose instrument no longer offers JOINT_RESEARCH
// succeeds (it was MODE_NOT_OFFERED), keeping the budget and its
// instrument_owner; an update of instrument_budgets is still checked.
TEST_F(WindowBufferTest, UpdateProjectChecksTheInstrumentsOnlyWhenTheBudgetsChange) {
  MakeProject();
  const iv::Instrument tem = InventoryInstrument("tem");
  std::vector<iv::ModeOffering> modes;
  for (const auto& m : tem.modes()) {
    if (m.mode() != labshare::type::v1::JOINT_RESEARCH) modes.push_back(m);
  }
  ASSERT_LT(modes.size(), static_cast<size_t>(tem.modes_size()));
  OfferModes("tem", modes, "tem-no-joint");
  v1::Project fields, out;
  fields.set_title("thin films, second year");
  grpc::Status s = UpdateProject(fields, {"title"}, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.title(), "thin films, second year");
  ASSERT_EQ(out.instrument_budgets_size(), 1);
  EXPECT_EQ(out.instrument_budgets(0).instrument_owner(), "organizations/owner");
  EXPECT_EQ(FromProto(out.instrument_budgets(0).budget()), absl::Hours(3));
  // The period and the template too: nothing asked of inventory.
  *fields.mutable_period()->mutable_start_time() = ToProto(day_);
  *fields.mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(72));
  fields.set_cost_share_template(v1::Project::ONE_THIRD_TWO_THIRDS);
  s = UpdateProject(fields, {"period", "cost_share_template"}, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  // The budgets in the mask: checked again.
  auto* budget = fields.add_instrument_budgets();
  budget->set_instrument("instruments/tem");
  *budget->mutable_budget() = ToProto(absl::Hours(4));
  ExpectGrpcError(UpdateProject(fields, {"instrument_budgets"}, &out), StatusCode::FAILED_PRECONDITION,
                  "MODE_NOT_OFFERED", "budgets in the mask");
}

// ... and the organisations only when participants are in the mask: an
// unknown organisation sent without "participants" in the mask is ignored
// (the stored participants stay), with it NOT_FOUND.
TEST_F(WindowBufferTest, UpdateProjectChecksTheOrganisationsOnlyWhenTheParticipantsChange) {
  MakeProject();
  v1::Project fields, out;
  fields.set_title("renamed");
  for (const std::string org : {"organizations/lab", "organizations/nobody"}) {
    fields.add_participants()->set_organization(org);
  }
  grpc::Status s = UpdateProject(fields, {"title"}, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(out.participants_size(), 2);
  EXPECT_EQ(out.participants(1).organization(), "organizations/owner");
  ExpectGrpcError(UpdateProject(fields, {"participants"}, &out), StatusCode::NOT_FOUND, "ORGANIZATION_NOT_FOUND",
                  "participants in the mask");
}

// CreateBooking JOINT_RESEARCH: participation is checked first, so a payer
// outside the project learns neither that the project has ended, nor its
// period, nor its instruments (it was told PROJECT_NOT_ACTIVE and
// OUTSIDE_PROJECT_PERIOD). A participant still gets those reasons.
TEST_F(WindowBufferTest, AnOutsiderIsToldOnlyThatItIsNoParticipant) {
  MakeProject();
  AddTemCopy("tem2");
  v1::Booking b;
  ExpectGrpcError(BookJoint(absl::Hours(49), absl::Hours(50), "organizations/outsider", &b),
                  StatusCode::FAILED_PRECONDITION, "NOT_PROJECT_PARTICIPANT", "outsider, outside the period");
  ExpectGrpcError(BookJoint(absl::Hours(9), absl::Hours(10), "organizations/outsider", &b, "instruments/tem2"),
                  StatusCode::FAILED_PRECONDITION, "NOT_PROJECT_PARTICIPANT", "outsider, instrument not budgeted");
  ExpectGrpcError(BookJoint(absl::Hours(49), absl::Hours(50), "organizations/lab", &b),
                  StatusCode::FAILED_PRECONDITION, "OUTSIDE_PROJECT_PERIOD", "participant, outside the period");
  ExpectGrpcError(BookJoint(absl::Hours(49), absl::Hours(50), "organizations/lab", &b, "instruments/tem2"),
                  StatusCode::FAILED_PRECONDITION, "INSTRUMENT_NOT_IN_PROJECT",
                  "participant, instrument not budgeted (before the period)");
  clock_.Set(day_ + absl::Hours(48));  // the period's end: the project has ended
  ExpectGrpcError(BookJoint(absl::Hours(51), absl::Hours(52), "organizations/outsider", &b),
                  StatusCode::FAILED_PRECONDITION, "NOT_PROJECT_PARTICIPANT", "outsider, project ended");
  ExpectGrpcError(BookJoint(absl::Hours(51), absl::Hours(52), "organizations/lab", &b),
                  StatusCode::FAILED_PRECONDITION, "PROJECT_NOT_ACTIVE", "participant, project ended");
}

}  // namespace
}  // namespace labshare::booking
