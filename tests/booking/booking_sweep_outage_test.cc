// The sweep and the outage paths against booking.proto (review of 2026-12-06):
// a confirmed booking is judged on its instrument's state as check-in closed,
// not as the sweep finds it later; one booking the sweep cannot settle no
// longer stops the round; ApplyMaintenanceWindow takes a run or a lease that
// moved meanwhile as it is then (a run checked in is checked out, a lease
// handed over is left alone) instead of failing or cancelling a running
// session; a lease request still REQUESTED when its block begins expires; a
// finished booking's block cut by a window is rewritten with its event.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/events.h"
#include "common/grpc_status.h"
#include "services/booking/booking_common.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

// While armed, runs `interfere` once, at the first reading: the manager
// reads its clock right before it decides a transition, so another change
// can be slipped in exactly between what ApplyMaintenanceWindow read and
// the step it takes.
class InterferingClock final : public Clock {
 public:
  explicit InterferingClock(const Clock* base) : base_(base) {}
  absl::Time Now() const override {
    if (armed_.exchange(false)) interfere_();
    return base_->Now();
  }
  void Arm(std::function<void()> interfere) {
    interfere_ = std::move(interfere);
    armed_.store(true);
  }

 private:
  const Clock* base_;
  mutable std::atomic<bool> armed_{false};
  std::function<void()> interfere_;
};

class SweepOutageTest : public BookingFlowsTest {
 protected:
  void SetUp() override {
    BookingFlowsTest::SetUp();
    if (HasFatalFailure()) return;
    admin_p_ = Principal{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(24 * 400)};
    staff_p_ = Principal{"sam", "owner", {Role::kFacilityStaff}, clock_.Now() + absl::Hours(24 * 400)};
    // A second replica of the manager on the interfering clock; the
    // fixture's manager makes the concurrent changes.
    racing_ = std::make_unique<BookingManager>(store_.get(), inv_client_.get(), &racing_clock_,
                                               testing::TestPageTokens());
    ConsumerOptions options;
    options.stream = "{inventory}:outbox";
    options.group = kInventoryEventsGroup;
    options.consumer = "test";
    options.block = absl::ZeroDuration();
    options.retry_initial = absl::ZeroDuration();  // a failed change is delivered again in the next round
    consumer_ = std::make_unique<EventConsumer>(pool_.get(), options);
    ASSERT_TRUE(consumer_->EnsureGroup().ok());
  }

  // Every inventory event not yet handled, through booking's handler (as
  // the binary's consumer does).
  void Deliver() {
    for (int round = 0; round < 20; ++round) {
      auto n = consumer_->PollOnce(InventoryEventHandler(manager_.get()));
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) return;
    }
  }
  // As Deliver, but the InstrumentChanged of version (etag) `failing` fails
  // to be recorded (a replica's Redis call failed): it stays pending, the
  // changes after it are recorded.
  void DeliverFailing(const std::string& failing) {
    const auto handler = InventoryEventHandler(manager_.get());
    for (int round = 0; round < 20; ++round) {
      auto n = consumer_->PollOnce([&](const StreamEvent& e) -> absl::Status {
        iv::InventoryEvent event;
        if (event.ParseFromString(e.payload) && event.has_instrument_changed() &&
            event.instrument_changed().instrument().etag() == failing) {
          return absl::UnavailableError("the change could not be recorded");
        }
        return handler(e);
      });
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) return;
    }
  }
  // The instrument's state set; returns its etag after the change.
  std::string SetState(const std::string& id, iv::InstrumentState state) {
    iv::SetInstrumentStateRequest st;
    st.set_name("instruments/" + id);
    st.set_state(state);
    st.set_reason("vacuum pump service");
    iv::Instrument changed;
    grpc::Status s = Call(inventory_.get(), &iv::InventoryService::Stub::SetInstrumentState, st, &changed, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return changed.etag();
  }
  void RenameTem() {
    iv::UpdateInstrumentRequest u;
    u.mutable_instrument()->set_name("instruments/tem");
    u.mutable_instrument()->set_display_name("TEM renamed");
    u.mutable_update_mask()->add_paths("display_name");
    Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  }
  iv::MaintenanceWindow Window(const std::string& instrument, absl::Time from, absl::Time to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/" + instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(to);
    mw.mutable_maintenance_window()->set_reason("alignment");
    iv::MaintenanceWindow window;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    return window;
  }
  v1::ApplyMaintenanceWindowRequest ApplyRequest(const iv::MaintenanceWindow& window) {
    v1::ApplyMaintenanceWindowRequest r;
    r.set_maintenance_window(window.name());
    return r;
  }
  grpc::Status CheckIn(const std::string& name, const std::string& token) {
    v1::CheckInRequest in;
    in.set_name(name);
    v1::Booking out;
    return Call(stub_.get(), &Stub::CheckIn, in, &out, token);
  }
  grpc::Status CheckOut(const std::string& name, const std::string& token) {
    v1::CheckOutRequest r;
    r.set_name(name);
    v1::Booking out;
    return Call(stub_.get(), &Stub::CheckOut, r, &out, token);
  }
  v1::Lease GetLease(const std::string& name) {
    v1::GetLeaseRequest g;
    g.set_name(name);
    v1::Lease out;
    EXPECT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &out, admin_).ok());
    return out;
  }
  v1::ServiceOrder GetOrder(const std::string& name) {
    v1::GetServiceOrderRequest g;
    g.set_name(name);
    v1::ServiceOrder out;
    EXPECT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &out, admin_).ok());
    return out;
  }
  // The booking or lease an event's payload carries, if any.
  static std::string SubjectOf(const v1::BookingEvent& e) {
    const auto* payload_field = e.GetDescriptor()->FindFieldByNumber(e.payload_case());
    if (payload_field == nullptr) return "";
    const auto& payload = e.GetReflection()->GetMessage(e, payload_field);
    for (const char* f : {"booking", "lease"}) {
      const auto* field = payload.GetDescriptor()->FindFieldByName(f);
      if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_MESSAGE) continue;
      const auto& m = payload.GetReflection()->GetMessage(payload, field);
      const auto* name = m.GetDescriptor()->FindFieldByName("name");
      if (name != nullptr) return m.GetReflection()->GetString(m, name);
    }
    return "";
  }
  // The events about booking or lease `name`, oldest first.
  std::vector<v1::BookingEvent> EventsOf(const std::string& name) {
    std::vector<v1::BookingEvent> out;
    for (auto& e : Events()) {
      if (SubjectOf(e) == name) out.push_back(std::move(e));
    }
    return out;
  }
  static absl::Duration Days(int d) { return absl::Hours(24 * d); }

  InterferingClock racing_clock_{&clock_};
  std::unique_ptr<BookingManager> racing_;
  std::unique_ptr<EventConsumer> consumer_;
  Principal admin_p_, staff_p_;
};

// ================================================================ the instrument's state as check-in closes

// Booking.CANCELLED: out of service as check-in closed (9:15), back in
// service before the sweep runs (9:30): still an outage, never charged (the
// sweep used to take the state it found and mark it MISSED).
TEST_F(SweepOutageTest, OutOfServiceAsCheckInClosedIsAnOutageEvenWhenBackBeforeTheSweep) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(8));
  SetState("tem", iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  SetState("tem", iv::ACTIVE);
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  // CancelBooking names what the sweep makes of it.
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  v1::Booking out;
  grpc::Status refused = Call(stub_.get(), &Stub::CancelBooking, c, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(refused), "BOOKING_STATE");
  EXPECT_NE(refused.error_message().find("cancelled as an outage"), std::string::npos) << refused.error_message();
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Booking swept = Get(b.name());
  EXPECT_EQ(swept.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(swept.cancelled_by_outage());
  EXPECT_EQ(swept.cancellation().initiator(), v1::Booking::MAINTENANCE_OUTAGE);
  EXPECT_EQ(swept.cancellation().reason(), "the instrument was out of service when check-in closed");
  const auto events = EventsOf(b.name());
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.back().has_booking_cancelled());
  EXPECT_TRUE(events.back().booking_cancelled().cancelled_by_outage());
}

// Booking.CANCELLED: the state as check-in closes is the state of the
// window's last instant. Out of service until 9:15:00 exactly, CheckIn's
// window [9:00, 9:15) closing then: an outage, not MISSED (a change at the
// close itself was taken as in force during the window).
TEST_F(SweepOutageTest, BackInServiceExactlyAsCheckInClosesIsAnOutage) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(8));
  SetState("tem", iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  SetState("tem", iv::ACTIVE);
  Deliver();
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Booking swept = Get(b.name());
  EXPECT_EQ(swept.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(swept.cancelled_by_outage());
}

// Booking.MISSED: in service as check-in closed, out of service only after
// (9:30): MISSED, as a sweep on time would have found it (it used to be
// cancelled as an outage, without the missed fee).
TEST_F(SweepOutageTest, InServiceAsCheckInClosedIsMissedEvenWhenOutOfServiceAtTheSweep) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  SetState("tem", iv::MAINTENANCE);
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  v1::Booking out;
  grpc::Status refused = Call(stub_.get(), &Stub::CancelBooking, c, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(refused), "BOOKING_STATE");
  EXPECT_NE(refused.error_message().find("it is MISSED"), std::string::npos) << refused.error_message();
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
  const auto events = EventsOf(b.name());
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.back().has_booking_missed());
}

// Another change after check-in closed (a new display name) that booking
// has read: the state is known to have stayed ACTIVE: MISSED.
TEST_F(SweepOutageTest, AnotherChangeAfterTheCloseKeepsTheStateItHad) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  RenameTem();
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
}

// A change after the close that booking has not read yet: its state then
// is not known, and a booking is never charged on a guess: cancelled as an
// outage, saying why (it used to be MISSED on the state found).
TEST_F(SweepOutageTest, AChangeAfterTheCloseNotReadYetIsNeverCharged) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  RenameTem();  // not delivered
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Booking swept = Get(b.name());
  EXPECT_EQ(swept.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(swept.cancelled_by_outage());
  EXPECT_EQ(swept.cancellation().reason(), "the instrument changed after check-in closed and its state then is not known");
}

// The consumer of inventory's events may record a later change before an
// earlier one (the earlier one's record failed and stays pending, retried
// later, while a replica records the next). Here the instrument went into
// MAINTENANCE at 8:00, back to ACTIVE at 9:30 and into MAINTENANCE again at
// 9:40; check-in closed at 9:15, in MAINTENANCE. The 9:30 change is
// missing when the sweep runs: the state at 9:15 is not known (the sweep
// used to take the 9:40 change, "from ACTIVE", as the first after the close
// and mark the booking MISSED, charging it).
TEST_F(SweepOutageTest, AnEarlierChangeStillPendingLeavesTheStateAtTheCloseUnknown) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(8));
  SetState("tem", iv::MAINTENANCE);
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  const std::string back = SetState("tem", iv::ACTIVE);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(40));
  SetState("tem", iv::MAINTENANCE);
  DeliverFailing(back);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Booking swept = Get(b.name());
  EXPECT_EQ(swept.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(swept.cancelled_by_outage());
  EXPECT_EQ(swept.cancellation().reason(), "the instrument changed after check-in closed and its state then is not known");
  const auto events = EventsOf(b.name());
  ASSERT_FALSE(events.empty());
  EXPECT_FALSE(events.back().has_booking_missed());
  EXPECT_TRUE(events.back().booking_cancelled().cancelled_by_outage());
}

// The same gap, then the missing change recorded: the state at the close
// is known (MAINTENANCE, from the 9:30 change's state before) and the sweep
// judges on it. While the gap lasts, CancelBooking's answer (the sweep's
// verdict) no longer says MISSED.
TEST_F(SweepOutageTest, TheMissingChangeRecordedTheSweepJudgesOnTheStateAtTheClose) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(8));
  SetState("tem", iv::MAINTENANCE);
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  const std::string back = SetState("tem", iv::ACTIVE);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(40));
  SetState("tem", iv::MAINTENANCE);
  DeliverFailing(back);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  v1::Booking out;
  grpc::Status refused = Call(stub_.get(), &Stub::CancelBooking, c, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(refused), "BOOKING_STATE");
  EXPECT_NE(refused.error_message().find("cancelled as an outage"), std::string::npos) << refused.error_message();
  Deliver();  // the pending change, retried
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Booking swept = Get(b.name());
  EXPECT_EQ(swept.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(swept.cancelled_by_outage());
  EXPECT_EQ(swept.cancellation().reason(), "the instrument was out of service when check-in closed");
}

// ACTIVE as check-in closed (9:15), MAINTENANCE from 9:30 (its record
// pending), ACTIVE again at 9:40 (recorded): unknown while the 9:30 change
// is missing (the sweep used to read "from MAINTENANCE" off the 9:40
// change); once it is recorded, MISSED.
TEST_F(SweepOutageTest, InServiceAtTheCloseIsMissedOnceTheGapIsFilled) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  const std::string out_of_service = SetState("tem", iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(40));
  SetState("tem", iv::ACTIVE);
  DeliverFailing(out_of_service);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  v1::Booking out;
  grpc::Status refused = Call(stub_.get(), &Stub::CancelBooking, c, &out, ana_);
  EXPECT_NE(refused.error_message().find("cancelled as an outage"), std::string::npos) << refused.error_message();
  Deliver();
  refused = Call(stub_.get(), &Stub::CancelBooking, c, &out, ana_);
  EXPECT_NE(refused.error_message().find("it is MISSED"), std::string::npos) << refused.error_message();
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
}

// Changes recorded by the version before versions were kept (an upgrade):
// no versioned change before the close to pair with, so the state is
// judged as that version did (the latest change recorded: the state before
// the first state change after the close). In service at 9:15, out of
// service at 9:30 (recorded with its version): MISSED. It was taken as
// unknown and cancelled as an outage, never charged.
TEST_F(SweepOutageTest, ChangesRecordedWithoutVersionsAreJudgedAsBefore) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  Deliver();
  auto recorded = store_->InstrumentChanges("tem");
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  ASSERT_FALSE(recorded->empty());
  ASSERT_TRUE(pool_->Command({"DEL", keys::InstrumentChanges(keys::Partition("tem"), "tem")}).ok());
  for (auto c : *recorded) {
    c.version = 0;
    ASSERT_TRUE(store_->RecordInstrumentChange("tem", c).ok());
  }
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  SetState("tem", iv::MAINTENANCE);
  Deliver();
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(45));
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
}

// The 30-day retention keeps the change in force 30 days before the
// latest: a change 45 days after the one before it still has its
// predecessor, so the state between them stays known; older ones go.
TEST_F(SweepOutageTest, TheRetentionKeepsTheChangeInForceAtItsStart) {
  BookingStore::InstrumentChange c;
  c.kind = iv::UPDATED;
  c.state_before = c.state_after = iv::ACTIVE;
  const absl::Time t0 = day_ - absl::Hours(24 * 60);
  for (int v = 1; v <= 3; ++v) {
    c.time = t0 + absl::Hours(24 * (v - 1));  // days 0, 1, 2
    c.version = v;
    ASSERT_TRUE(store_->RecordInstrumentChange("tem", c).ok());
  }
  c.time = t0 + absl::Hours(24 * 47);
  c.version = 4;
  ASSERT_TRUE(store_->RecordInstrumentChange("tem", c).ok());
  auto kept = store_->InstrumentChanges("tem");
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->size(), 2u);
  EXPECT_EQ((*kept)[0].version, 3);
  EXPECT_EQ((*kept)[0].time, t0 + absl::Hours(48));
  EXPECT_EQ((*kept)[1].version, 4);
}

// ================================================================ one booking does not stop the round

// An unreadable booking in the sweep's due set is logged and skipped; the
// others are swept (the round used to stop there with CORRUPT_DOCUMENT).
TEST_F(SweepOutageTest, AnUnreadableBookingDoesNotStopTheRound) {
  v1::Booking bad, good;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &bad).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &good).ok());
  const int p = keys::Partition("tem");
  const std::string bad_id = bad.name().substr(std::string("bookings/").size());
  ASSERT_TRUE(pool_->Command({"HSET", keys::Booking(p, bad_id), "d", "\xff\xff not a booking"}).ok());
  ASSERT_TRUE(store_->RememberDue(p, bad_id, 1).ok());
  clock_.Set(day_ + absl::Hours(11) + absl::Minutes(15));
  auto swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 1);
  EXPECT_EQ(Get(good.name()).state(), v1::Booking::MISSED);
  // It stays in the due set, looked at again in the next round.
  auto due = store_->Due(p, absl::ToUnixMillis(clock_.Now()), 0, 10);
  ASSERT_TRUE(due.ok());
  EXPECT_EQ(*due, std::vector<std::string>{bad_id});
  swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 0);
}

// ================================================================ what moved meanwhile

// ApplyMaintenanceWindow: a lease handed over between the window's read and
// its cancel step is left alone and reported as a conflict (the whole call
// used to fail with LEASE_STATE).
TEST_F(SweepOutageTest, ALeaseHandedOverMeanwhileIsReportedNotFailed) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  ASSERT_TRUE(Approve(lease.name(), &lease).ok());
  clock_.Set(day_ + Days(1));
  const iv::MaintenanceWindow window = Window("afm", day_ + Days(3), day_ + Days(3) + absl::Hours(1));
  racing_clock_.Arm([&] {
    v1::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("complete");
    auto handed = manager_->RecordHandover(staff_p_, h);
    EXPECT_TRUE(handed.ok()) << handed.status();
  });
  auto applied = racing_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->cancelled_leases_size(), 0);
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  ASSERT_EQ(applied->conflicting_leases_size(), 1);
  EXPECT_EQ(applied->conflicting_leases(0), lease.name());
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::HANDED_OVER);
}

// ApplyMaintenanceWindow: a scheduled run checked in between the window's
// read and its unschedule step is a CHECKED_IN session like any other:
// checked out at the window start (interrupted_by_outage), its order left
// as it is (it used to be cancelled as a run not started, the order back in
// SAMPLES_RECEIVED).
TEST_F(SweepOutageTest, ARunCheckedInMeanwhileIsCheckedOutNotCancelled) {
  const v1::ServiceOrder order = Scheduled();
  clock_.Set(day_ + absl::Hours(9));
  const iv::MaintenanceWindow window = Window("tem", day_ + absl::Hours(9) + absl::Minutes(30),
                                              day_ + absl::Hours(10) + absl::Minutes(30));
  racing_clock_.Arm([&] {
    v1::CheckInRequest in;
    in.set_name(order.booking());
    auto checked_in = manager_->CheckIn(staff_p_, in);
    EXPECT_TRUE(checked_in.ok()) << checked_in.status();
  });
  auto applied = racing_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->unscheduled_orders_size(), 0);
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  ASSERT_EQ(applied->interrupted_bookings_size(), 1);
  EXPECT_EQ(applied->interrupted_bookings(0), order.booking());
  const v1::Booking run = Get(order.booking());
  EXPECT_EQ(run.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(run.interrupted_by_outage());
  EXPECT_FALSE(run.cancelled_by_outage());
  EXPECT_EQ(FromProto(run.session().end_time()), day_ + absl::Hours(9) + absl::Minutes(30));
  const v1::ServiceOrder after = GetOrder(order.name());
  EXPECT_EQ(after.state(), v1::ServiceOrder::SCHEDULED);
  EXPECT_EQ(after.booking(), order.booking());
}

// The same with the run started (StartService: the order IN_PROGRESS): the
// call used to fail with ORDER_STATE; the order stays IN_PROGRESS.
TEST_F(SweepOutageTest, ARunStartedMeanwhileIsCheckedOutAndTheCallSucceeds) {
  const v1::ServiceOrder order = Scheduled();
  clock_.Set(day_ + absl::Hours(9));
  const iv::MaintenanceWindow window = Window("tem", day_ + absl::Hours(9) + absl::Minutes(30),
                                              day_ + absl::Hours(10) + absl::Minutes(30));
  racing_clock_.Arm([&] {
    v1::StartServiceRequest st;
    st.set_name(order.name());
    auto started = manager_->StartService(staff_p_, st);
    EXPECT_TRUE(started.ok()) << started.status();
  });
  auto applied = racing_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->unscheduled_orders_size(), 0);
  ASSERT_EQ(applied->interrupted_bookings_size(), 1);
  const v1::Booking run = Get(order.booking());
  EXPECT_EQ(run.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(run.interrupted_by_outage());
  EXPECT_EQ(GetOrder(order.name()).state(), v1::ServiceOrder::IN_PROGRESS);
}

// ================================================================ a run its order no longer schedules

// A CONFIRMED run under the window that is not its order's SCHEDULED run
// cannot be unscheduled (BOOKING_STATE); it used to stay CONFIRMED under the
// applied window after every round, reported nowhere. It is cancelled
// without charge like any CONFIRMED booking (its event, the window's
// reason), reported in cancelled_bookings, and its order is left as it is.
class OrphanRunTest : public SweepOutageTest {
 protected:
  // Rewrites the stored order as `edit` says (as an older version left it).
  void RewriteOrder(const std::string& name, const std::function<void(v1::ServiceOrder&)>& edit) {
    const std::string key = keys::Order(keys::Partition("tem"), IdOf(name));
    auto stored = pool_->Command({"HMGET", key, "d", "v"});
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(stored->elements.size(), 2u);
    v1::ServiceOrder o;
    ASSERT_TRUE(o.ParseFromString(stored->elements[0].str));
    edit(o);
    int64_t v = 0;
    ASSERT_TRUE(absl::SimpleAtoi(stored->elements[1].str, &v));
    o.set_etag(std::to_string(v + 1));
    ASSERT_FALSE(pool_->Command({"HSET", key, "d", o.SerializeAsString(), "v", std::to_string(v + 1)})->is_error());
  }
  void ExpectCancelledByTheWindow(const std::string& run_name, const iv::MaintenanceWindow& window,
                                  const v1::ApplyMaintenanceWindowResponse& applied) {
    EXPECT_EQ(applied.unscheduled_orders_size(), 0);
    ASSERT_EQ(applied.cancelled_bookings_size(), 1);
    EXPECT_EQ(applied.cancelled_bookings(0), run_name);
    const v1::Booking run = Get(run_name);
    EXPECT_EQ(run.state(), v1::Booking::CANCELLED);
    EXPECT_TRUE(run.cancelled_by_outage());
    EXPECT_FALSE(run.late_cancellation());
    EXPECT_EQ(run.cancellation().initiator(), v1::Booking::MAINTENANCE_OUTAGE);
    EXPECT_EQ(run.cancellation().reason(), "alignment");
    EXPECT_EQ(run.cancellation().maintenance_window(), window.name());
    const auto events = EventsOf(run_name);
    ASSERT_FALSE(events.empty());
    ASSERT_TRUE(events.back().has_booking_cancelled());
    EXPECT_EQ(events.back().booking_cancelled().previous_state(), v1::Booking::CONFIRMED);
    EXPECT_TRUE(events.back().booking_cancelled().cancelled_by_outage());
    EXPECT_EQ(events.back().booking_cancelled().initiator(), v1::Booking::MAINTENANCE_OUTAGE);
    EXPECT_EQ(events.back().booking_cancelled().maintenance_window(), window.name());
    // Applied again: nothing more to do, no further event.
    const size_t n = events.size();
    auto again = manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->cancelled_bookings_size(), 0);
    EXPECT_EQ(EventsOf(run_name).size(), n);
  }
};

TEST_F(OrphanRunTest, ARunWhoseOrderIsNotScheduledIsCancelledAndTheOrderLeftAlone) {
  const v1::ServiceOrder order = Scheduled();
  RewriteOrder(order.name(), [](v1::ServiceOrder& o) {
    o.set_state(v1::ServiceOrder::SAMPLES_RECEIVED);
    o.clear_booking();
    o.clear_scheduled_interval();
    o.clear_operator_user();
  });
  const v1::ServiceOrder before = GetOrder(order.name());
  const iv::MaintenanceWindow window = Window("tem", day_ + absl::Hours(9) + absl::Minutes(30),
                                              day_ + absl::Hours(10) + absl::Minutes(30));
  auto applied = manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  ExpectCancelledByTheWindow(order.booking(), window, *applied);
  const v1::ServiceOrder after = GetOrder(order.name());
  EXPECT_EQ(after.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_EQ(after.etag(), before.etag());
}

TEST_F(OrphanRunTest, ARunWhoseOrderPointsAtAnotherRunIsCancelledAndTheOrderLeftAlone) {
  const v1::ServiceOrder order = Scheduled();
  RewriteOrder(order.name(), [](v1::ServiceOrder& o) { o.set_booking("bookings/another-run"); });
  const v1::ServiceOrder before = GetOrder(order.name());
  const iv::MaintenanceWindow window = Window("tem", day_ + absl::Hours(9) + absl::Minutes(30),
                                              day_ + absl::Hours(10) + absl::Minutes(30));
  auto applied = manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  ExpectCancelledByTheWindow(order.booking(), window, *applied);
  const v1::ServiceOrder after = GetOrder(order.name());
  EXPECT_EQ(after.state(), v1::ServiceOrder::SCHEDULED);
  EXPECT_EQ(after.booking(), "bookings/another-run");
  EXPECT_EQ(after.etag(), before.etag());
}

// ================================================================ lease requests past their start

// A lease still REQUESTED when its block begins (the moment ApproveLease
// answers LEASE_STARTED) is expired by the sweep: the lease CANCELLED, its
// booking EXPIRED, in one step with LeaseCancelled and BookingExpired; its
// slot is free again (it used to hold it until someone rejected it).
TEST_F(SweepOutageTest, ALeaseRequestStillPendingAtItsBlockStartExpires) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  const absl::Time blocked_start = FromProto(lease.blocked_interval().start_time());
  ASSERT_EQ(blocked_start, day_);
  clock_.Set(blocked_start - absl::Milliseconds(1));
  ASSERT_EQ(*manager_->Sweep(), 0);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::REQUESTED);
  clock_.Set(blocked_start);
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Lease expired = GetLease(lease.name());
  EXPECT_EQ(expired.state(), v1::Lease::CANCELLED);
  EXPECT_FALSE(expired.cancelled_by_outage());
  EXPECT_EQ(expired.end_reason(), "not approved before its term (handover buffer included) began");
  const v1::Booking booking = Get(lease.booking());
  EXPECT_EQ(booking.state(), v1::Booking::EXPIRED);
  const auto events = EventsOf(lease.name());
  ASSERT_EQ(events.size(), 2u);  // requested, cancelled
  ASSERT_TRUE(events[1].has_lease_cancelled());
  EXPECT_EQ(events[1].lease_cancelled().previous_state(), v1::Lease::REQUESTED);
  EXPECT_EQ(events[1].header().actor(), "services/booking");
  const auto booking_events = EventsOf(lease.booking());
  ASSERT_EQ(booking_events.size(), 2u);  // created, expired
  ASSERT_TRUE(booking_events[1].has_booking_expired());
  EXPECT_EQ(booking_events[1].booking_expired().booking().state(), v1::Booking::EXPIRED);
  EXPECT_EQ(FromProto(booking_events[1].header().event_time()), FromProto(events[1].header().event_time()));
  // Nothing left to do; the slot is free for another request.
  EXPECT_EQ(*manager_->Sweep(), 0);
  v1::Lease again;
  grpc::Status s = Request(2, 10, &again);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// Without its due entry (a write that failed after the request's step), the
// sweep still meets the request on the instrument's cursor at its term
// start.
TEST_F(SweepOutageTest, ALeaseRequestWithoutItsDueEntryExpiresAtItsTermStart) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  const int p = keys::Partition("afm");
  ASSERT_TRUE(store_->ForgetDue(p, lease.booking().substr(std::string("bookings/").size())).ok());
  clock_.Set(day_ + absl::Hours(12));
  ASSERT_EQ(*manager_->Sweep(), 0);
  clock_.Set(FromProto(lease.term().start_time()));
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::CANCELLED);
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::EXPIRED);
}

// A lease request the sweep reads before it is due moves to its deadline
// (RequestDeadline) in the due set, as a running session moves to its
// checkout: it is not read again every round until then (it used to stay
// at its old moment). A lease an older version stored without a blocked
// interval is due at its term start, a day after its due entry at the
// handover buffer's start; a sweep at that moment still expires it.
TEST_F(SweepOutageTest, ALeaseRequestNotDueYetMovesToItsDeadlineInTheDueSet) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  const int p = keys::Partition("afm");
  const std::string id = IdOf(lease.booking());
  const std::string key = keys::Lease(p, IdOf(lease.name()));
  v1::Lease stored;
  ASSERT_TRUE(stored.ParseFromString(pool_->Command({"HGET", key, "d"})->str));
  stored.clear_blocked_interval();
  ASSERT_TRUE(pool_->Command({"HSET", key, "d", stored.SerializeAsString()}).ok());
  const auto due_score = [&] {
    auto score = pool_->Command({"ZSCORE", keys::Due(p), id});
    EXPECT_TRUE(score.ok());
    return score.ok() ? score->str : std::string("?");
  };
  ASSERT_EQ(due_score(), std::to_string(Ms(day_)));  // the block's start, as RequestLease put it
  const absl::Time term_start = FromProto(lease.term().start_time());
  clock_.Set(day_ + absl::Hours(12));
  ASSERT_EQ(*manager_->Sweep(), 0);
  EXPECT_EQ(due_score(), std::to_string(Ms(term_start)));
  clock_.Set(term_start - absl::Milliseconds(1));
  ASSERT_EQ(*manager_->Sweep(), 0);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::REQUESTED);
  EXPECT_EQ(due_score(), std::to_string(Ms(term_start)));
  clock_.Set(term_start);
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::CANCELLED);
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::EXPIRED);
  EXPECT_TRUE(pool_->Command({"ZSCORE", keys::Due(p), id})->is_nil());  // settled: off the due set
}

// The same for a request whose due entry lies before its block start (a
// round that skipped it put it back at that round's moment): moved to its
// block start, expired there.
TEST_F(SweepOutageTest, ALeaseRequestDueEarlyMovesToItsBlockStart) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  const int p = keys::Partition("afm");
  const std::string id = IdOf(lease.booking());
  const absl::Time blocked_start = FromProto(lease.blocked_interval().start_time());
  const absl::Time early = blocked_start - absl::Hours(6);
  ASSERT_TRUE(store_->RememberDue(p, id, Ms(early)).ok());
  clock_.Set(early);
  ASSERT_EQ(*manager_->Sweep(), 0);
  auto score = pool_->Command({"ZSCORE", keys::Due(p), id});
  ASSERT_TRUE(score.ok());
  EXPECT_EQ(score->str, std::to_string(Ms(blocked_start)));
  clock_.Set(blocked_start);
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::CANCELLED);
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::EXPIRED);
}

// A request an older version stored (before the expiry: no due entry) whose
// term start that version's sweep cursor had passed is never met by the
// sweep again; the start-up migration puts it on the due set at its block
// start, and the next sweep expires it as any other (it used to stay
// REQUESTED for ever, holding its slot).
TEST_F(SweepOutageTest, AnOlderRequestBehindTheCursorExpiresAfterTheStartUpMigration) {
  v1::Lease old_request, approved;
  ASSERT_TRUE(Request(1, 10, &old_request).ok());
  grpc::Status second = Request(13, 20, &approved);
  ASSERT_TRUE(second.ok()) << GrpcErrorReason(second) << ": " << second.error_message();
  ASSERT_TRUE(Approve(approved.name(), &approved).ok());
  const int p = keys::Partition("afm");
  const std::string id = IdOf(old_request.booking());
  // As the older version left it: no due entry, the cursor past its term.
  ASSERT_TRUE(store_->ForgetDue(p, id).ok());
  ASSERT_TRUE(store_->ForgetDue(p, IdOf(approved.booking())).ok());
  const absl::Time term_start = FromProto(old_request.term().start_time());
  ASSERT_TRUE(store_->SetSweepCursor(p, "afm", Ms(term_start) + 1).ok());
  clock_.Set(term_start + Days(2));
  ASSERT_EQ(*manager_->Sweep(), 0);
  ASSERT_EQ(GetLease(old_request.name()).state(), v1::Lease::REQUESTED);
  // Start-up: the request (not the approved lease) goes on the due set at
  // its block start; a second start finds the marker.
  auto migrated = manager_->MigrateLeaseRequestsDue();
  ASSERT_TRUE(migrated.ok()) << migrated.status();
  EXPECT_EQ(*migrated, 1);
  auto score = pool_->Command({"ZSCORE", keys::Due(p), id});
  ASSERT_TRUE(score.ok());
  EXPECT_EQ(score->str, std::to_string(Ms(FromProto(old_request.blocked_interval().start_time()))));
  EXPECT_TRUE(pool_->Command({"ZSCORE", keys::Due(p), IdOf(approved.booking())})->is_nil());
  EXPECT_EQ(manager_->MigrateLeaseRequestsDue().value_or(-1), 0);
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Lease expired = GetLease(old_request.name());
  EXPECT_EQ(expired.state(), v1::Lease::CANCELLED);
  EXPECT_EQ(expired.end_reason(), "not approved before its term (handover buffer included) began");
  EXPECT_EQ(Get(old_request.booking()).state(), v1::Booking::EXPIRED);
  const auto events = EventsOf(old_request.name());
  ASSERT_EQ(events.size(), 2u);  // requested, cancelled
  EXPECT_TRUE(events[1].has_lease_cancelled());
  const auto booking_events = EventsOf(old_request.booking());
  ASSERT_EQ(booking_events.size(), 2u);  // created, expired
  EXPECT_TRUE(booking_events[1].has_booking_expired());
  EXPECT_EQ(GetLease(approved.name()).state(), v1::Lease::APPROVED);
  EXPECT_TRUE(pool_->Command({"ZSCORE", keys::Due(p), id})->is_nil());  // settled: off the due set
}

// The migration run before the request's block begins: expired at its block
// start (the moment ApproveLease answers LEASE_STARTED), not at its term
// start, nor before.
TEST_F(SweepOutageTest, AnOlderRequestMigratedEarlyExpiresAtItsBlockStart) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  const int p = keys::Partition("afm");
  ASSERT_TRUE(store_->ForgetDue(p, IdOf(lease.booking())).ok());
  ASSERT_EQ(manager_->MigrateLeaseRequestsDue().value_or(-1), 1);
  const absl::Time blocked_start = FromProto(lease.blocked_interval().start_time());
  ASSERT_LT(blocked_start, FromProto(lease.term().start_time()));
  clock_.Set(blocked_start - absl::Milliseconds(1));
  ASSERT_EQ(*manager_->Sweep(), 0);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::REQUESTED);
  clock_.Set(blocked_start);
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::CANCELLED);
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::EXPIRED);
}

// The answer RejectLease and CancelLease give a request whose block has
// begun: the one a cancelled lease gets (Lease.CANCELLED).
void ExpectAnsweredAsCancelled(const grpc::Status& s, const std::string& what) {
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << what << ": " << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "LEASE_STATE") << what;
  const ErrorMetadata metadata = ErrorMetadataOf(FromGrpcStatus(s));
  EXPECT_EQ(metadata.count("state") ? metadata.at("state") : "", "CANCELLED") << what;
}

// RejectLease: a request still REQUESTED when its block began "has been
// cancelled by the sweep from then on (Lease.CANCELLED): it can no longer be
// rejected", also before the sweep has run (it used to be REJECTED in that
// gap, with the caller's reason). The call changes nothing; the sweep then
// cancels it with its own end_reason and actor, and a later rejection gets
// the same answer. A stale etag is still answered first.
TEST_F(SweepOutageTest, ALeaseRequestPastItsBlockStartCannotBeRejectedBeforeTheSweep) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  clock_.Set(FromProto(lease.blocked_interval().start_time()));
  v1::RejectLeaseRequest rej;
  rej.set_name(lease.name());
  rej.set_reason("too late to decide");
  rej.set_etag("7");
  v1::Lease out;
  grpc::Status s = Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
  rej.set_etag(lease.etag());
  rej.set_request_id("reject-late");
  ExpectAnsweredAsCancelled(Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_), "rejected at its block start");
  rej.clear_etag();
  rej.set_request_id("reject-late-admin");
  ExpectAnsweredAsCancelled(Call(stub_.get(), &Stub::RejectLease, rej, &out, admin_), "rejected by an administrator");
  const v1::Lease unchanged = GetLease(lease.name());
  EXPECT_EQ(unchanged.state(), v1::Lease::REQUESTED);
  EXPECT_EQ(unchanged.etag(), lease.etag());
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::PENDING_APPROVAL);
  EXPECT_EQ(EventsOf(lease.name()).size(), 1u);     // requested
  EXPECT_EQ(EventsOf(lease.booking()).size(), 1u);  // created
  // The sweep cancels it as Lease.CANCELLED says.
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Lease expired = GetLease(lease.name());
  EXPECT_EQ(expired.state(), v1::Lease::CANCELLED);
  EXPECT_EQ(expired.end_reason(), "not approved before its term (handover buffer included) began");
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::EXPIRED);
  const auto events = EventsOf(lease.name());
  ASSERT_EQ(events.size(), 2u);
  ASSERT_TRUE(events[1].has_lease_cancelled());
  EXPECT_EQ(events[1].header().actor(), "services/booking");
  rej.set_request_id("reject-after-sweep");
  ExpectAnsweredAsCancelled(Call(stub_.get(), &Stub::RejectLease, rej, &out, staff_), "rejected after the sweep");
}

// CancelLease: the same moment. A request whose block has begun is refused
// as a cancelled lease before the sweep too (it used to be CANCELLED with
// the caller's reason, its booking CANCELLED with a user's
// LeaseCancelled/BookingCancelled); the sweep then cancels it as its own
// (end_reason, EXPIRED booking, actor "services/booking"). An APPROVED lease
// past its block start is still cancelled (before handover).
TEST_F(SweepOutageTest, ALeaseRequestPastItsBlockStartCannotBeCancelledBeforeTheSweep) {
  v1::Lease requested, approved;
  ASSERT_TRUE(Request(1, 10, &requested).ok());
  grpc::Status second = Request(13, 20, &approved);
  ASSERT_TRUE(second.ok()) << GrpcErrorReason(second) << ": " << second.error_message();
  ASSERT_TRUE(Approve(approved.name(), &approved).ok());
  clock_.Set(FromProto(approved.blocked_interval().start_time()));
  v1::CancelLeaseRequest c;
  c.set_name(requested.name());
  c.set_reason("plans changed");
  v1::Lease out;
  ExpectAnsweredAsCancelled(Call(stub_.get(), &Stub::CancelLease, c, &out, ana_), "cancelled by the lessee");
  ExpectAnsweredAsCancelled(Call(stub_.get(), &Stub::CancelLease, c, &out, staff_), "cancelled by owner staff");
  const v1::Lease unchanged = GetLease(requested.name());
  EXPECT_EQ(unchanged.state(), v1::Lease::REQUESTED);
  EXPECT_EQ(unchanged.etag(), requested.etag());
  EXPECT_EQ(Get(requested.booking()).state(), v1::Booking::PENDING_APPROVAL);
  EXPECT_EQ(EventsOf(requested.name()).size(), 1u);
  EXPECT_EQ(EventsOf(requested.booking()).size(), 1u);
  // The approved one is the lessee's to cancel until its handover.
  c.set_name(approved.name());
  grpc::Status cancelled = Call(stub_.get(), &Stub::CancelLease, c, &out, ana_);
  ASSERT_TRUE(cancelled.ok()) << GrpcErrorReason(cancelled) << ": " << cancelled.error_message();
  EXPECT_EQ(out.state(), v1::Lease::CANCELLED);
  EXPECT_EQ(out.end_reason(), "plans changed");
  // The sweep cancels the request as its own.
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Lease expired = GetLease(requested.name());
  EXPECT_EQ(expired.state(), v1::Lease::CANCELLED);
  EXPECT_EQ(expired.end_reason(), "not approved before its term (handover buffer included) began");
  EXPECT_EQ(Get(requested.booking()).state(), v1::Booking::EXPIRED);
  const auto events = EventsOf(requested.name());
  ASSERT_EQ(events.size(), 2u);
  ASSERT_TRUE(events[1].has_lease_cancelled());
  EXPECT_EQ(events[1].header().actor(), "services/booking");
  const auto booking_events = EventsOf(requested.booking());
  ASSERT_EQ(booking_events.size(), 2u);
  EXPECT_TRUE(booking_events[1].has_booking_expired());
  c.set_name(requested.name());
  ExpectAnsweredAsCancelled(Call(stub_.get(), &Stub::CancelLease, c, &out, ana_), "cancelled after the sweep");
}

// An approved lease is not the sweep's: it stays APPROVED past its start.
TEST_F(SweepOutageTest, AnApprovedLeaseIsLeftAlone) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  ASSERT_TRUE(Approve(lease.name(), &lease).ok());
  clock_.Set(day_ + Days(2));
  ASSERT_EQ(*manager_->Sweep(), 0);
  EXPECT_EQ(GetLease(lease.name()).state(), v1::Lease::APPROVED);
  EXPECT_EQ(Get(lease.booking()).state(), v1::Booking::CONFIRMED);
}

// ================================================================ a finished booking's block cut by a window

// A session checked out early keeps its block to the reserved end plus its
// buffer (12:30); a window from 11:00 cuts that block at its start: the
// booking's blocked_interval says so and BookingIntervalChanged
// (MAINTENANCE_CUT) announces it, in the step that cuts the calendar (the
// calendar used to be cut alone: no record, no event).
TEST_F(SweepOutageTest, AFinishedBookingsBlockCutByAWindowIsRecordedWithItsEvent) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &b).ok());
  clock_.Set(day_ + absl::Hours(9));
  ASSERT_TRUE(CheckIn(b.name(), ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  ASSERT_TRUE(CheckOut(b.name(), ana_).ok());
  const v1::Booking before = Get(b.name());
  ASSERT_EQ(before.state(), v1::Booking::COMPLETED);
  ASSERT_EQ(FromProto(before.blocked_interval().end_time()), day_ + absl::Hours(12) + absl::Minutes(30));
  const iv::MaintenanceWindow window = Window("tem", day_ + absl::Hours(11), day_ + absl::Hours(11) + absl::Minutes(30));
  auto applied = manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  EXPECT_EQ(applied->interrupted_bookings_size(), 0);
  const v1::Booking after = Get(b.name());
  EXPECT_EQ(after.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(after.blocked_interval().start_time()), day_ + absl::Hours(9));
  EXPECT_EQ(FromProto(after.blocked_interval().end_time()), day_ + absl::Hours(11));
  EXPECT_NE(after.etag(), before.etag());
  const auto events = EventsOf(b.name());
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_booking_interval_changed());
  const auto& changed = events.back().booking_interval_changed();
  EXPECT_EQ(changed.cause(), v1::BookingIntervalChanged::MAINTENANCE_CUT);
  EXPECT_EQ(FromProto(changed.previous_blocked_interval().end_time()), day_ + absl::Hours(12) + absl::Minutes(30));
  EXPECT_EQ(FromProto(changed.booking().blocked_interval().end_time()), day_ + absl::Hours(11));
  EXPECT_EQ(changed.booking().state(), v1::Booking::COMPLETED);
  // Applied again: nothing more to cut, no further event.
  const size_t n = events.size();
  ASSERT_TRUE(manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window)).ok());
  EXPECT_EQ(EventsOf(b.name()).size(), n);
}

// A returned lease's block cut by a window: the lease's own
// blocked_interval is rewritten in the step that rewrites its booking's
// (it used to keep the old end: GetLease and ListLeases said the lease
// still blocked the instrument past the window start, the booking did not).
// ListLeases filters on the term, as ListBookings on the reserved interval
// (a cut changes neither): both list the two for the same ranges.
TEST_F(SweepOutageTest, AReturnedLeasesBlockCutByAWindowIsRewrittenOnTheLeaseToo) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 10, &lease).ok());
  ASSERT_TRUE(Approve(lease.name(), &lease).ok());
  clock_.Set(day_ + Days(1));
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("complete");
  ASSERT_TRUE(manager_->RecordHandover(staff_p_, h).ok());
  // With the lessee: left alone.
  const iv::MaintenanceWindow window = Window("afm", day_ + Days(3), day_ + Days(4));
  auto first = manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->conflicting_leases_size(), 1);
  // Back early (day 5): term [day 1, day 5), block [day 0, day 7).
  clock_.Set(day_ + Days(5));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  auto returned = manager_->RecordReturn(staff_p_, ret);
  ASSERT_TRUE(returned.ok()) << returned.status();
  ASSERT_EQ(FromProto(returned->blocked_interval().end_time()), day_ + Days(7));
  const v1::Lease before = GetLease(lease.name());
  const size_t lease_events = EventsOf(lease.name()).size();
  const size_t booking_events = EventsOf(lease.booking()).size();
  // Applied again: the block is cut at the window start, on both.
  auto applied = manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  EXPECT_EQ(applied->conflicting_leases_size(), 0);
  const v1::Lease after = GetLease(lease.name());
  const v1::Booking booking = Get(lease.booking());
  EXPECT_EQ(after.state(), v1::Lease::RETURNED);
  EXPECT_EQ(booking.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(booking.blocked_interval().end_time()), day_ + Days(3));
  EXPECT_EQ(FromProto(after.blocked_interval().start_time()), day_);
  EXPECT_EQ(FromProto(after.blocked_interval().end_time()), day_ + Days(3));
  EXPECT_NE(after.etag(), before.etag());
  EXPECT_EQ(FromProto(after.term().end_time()), day_ + Days(5));  // the term stays
  const auto events = EventsOf(lease.booking());
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_booking_interval_changed());
  EXPECT_EQ(events.back().booking_interval_changed().cause(), v1::BookingIntervalChanged::MAINTENANCE_CUT);
  EXPECT_EQ(FromProto(events.back().booking_interval_changed().previous_blocked_interval().end_time()),
            day_ + Days(7));
  EXPECT_EQ(FromProto(events.back().booking_interval_changed().booking().blocked_interval().end_time()),
            day_ + Days(3));
  // The cut's only event is the booking's, which names the lease: no lease
  // event announces a changed block (ApplyMaintenanceWindow,
  // MAINTENANCE_CUT).
  EXPECT_EQ(events.size(), booking_events + 1);
  EXPECT_EQ(events.back().booking_interval_changed().booking().lease(), lease.name());
  EXPECT_EQ(EventsOf(lease.name()).size(), lease_events);
  // ListLeases and ListBookings, one range each way.
  auto lists = [&](absl::Time from, absl::Time to) {
    v1::ListLeasesRequest ll;
    *ll.mutable_time_range()->mutable_start_time() = ToProto(from);
    *ll.mutable_time_range()->mutable_end_time() = ToProto(to);
    v1::ListLeasesResponse leases;
    EXPECT_TRUE(Call(stub_.get(), &Stub::ListLeases, ll, &leases, admin_).ok());
    v1::ListBookingsRequest lb;
    lb.set_instrument("instruments/afm");
    *lb.mutable_time_range() = ll.time_range();
    v1::ListBookingsResponse bookings;
    EXPECT_TRUE(Call(stub_.get(), &Stub::ListBookings, lb, &bookings, admin_).ok());
    EXPECT_EQ(leases.leases_size(), bookings.bookings_size());
    return leases;
  };
  const v1::ListLeasesResponse in_term = lists(day_ + Days(3), day_ + Days(4));
  ASSERT_EQ(in_term.leases_size(), 1);
  EXPECT_EQ(FromProto(in_term.leases(0).blocked_interval().end_time()), day_ + Days(3));
  EXPECT_EQ(in_term.leases(0).etag(), after.etag());
  EXPECT_EQ(lists(day_ + Days(5), day_ + Days(7)).leases_size(), 0);
  // Once more: nothing left to cut, no further event.
  const size_t n = events.size();
  ASSERT_TRUE(manager_->ApplyMaintenanceWindow(admin_p_, ApplyRequest(window)).ok());
  EXPECT_EQ(EventsOf(lease.booking()).size(), n);
  EXPECT_EQ(GetLease(lease.name()).etag(), after.etag());
}

}  // namespace
}  // namespace labshare::booking
