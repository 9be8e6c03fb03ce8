// Sessions and availability (issue 12): the sweep checks forgotten sessions
// out, an outage ends a running session at its start, LEASE availability,
// and one booking horizon shared by CreateBooking and QueryAvailability.
#include <atomic>
#include <thread>

#include "common/error.h"
#include "common/events.h"
#include "common/grpc_status.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/booking/session_uses.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

using Free = std::vector<std::pair<absl::Time, absl::Time>>;

class SessionsTest : public BookingServiceTest {
 protected:
  v1::Booking Get(const std::string& name) {
    v1::GetBookingRequest g;
    g.set_name(name);
    v1::Booking b;
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &b, admin_).ok());
    return b;
  }
  void CheckInAt(const v1::Booking& b, absl::Time at) {
    clock_.Set(at);
    v1::CheckInRequest in;
    in.set_name(b.name());
    v1::Booking out;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(out.state(), v1::Booking::CHECKED_IN);
  }
  // The BookingCheckedOut events of one booking, oldest first.
  std::vector<v1::BookingEvent> CheckedOut(const std::string& name) {
    std::vector<v1::BookingEvent> out;
    for (auto& e : Events()) {
      if (e.has_booking_checked_out() && e.booking_checked_out().booking().name() == name) out.push_back(e);
    }
    return out;
  }
  absl::Time LastUse() {
    iv::GetQualificationRequest g;
    g.set_name("instruments/tem/qualifications/ana");
    iv::Qualification q;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetQualification, g, &q, admin_).ok());
    return q.has_last_use_time() ? FromProto(q.last_use_time()) : absl::InfinitePast();
  }
  static Free FreeOf(const google::protobuf::RepeatedPtrField<labshare::type::v1::Interval>& in) {
    Free out;
    for (const auto& f : in) out.emplace_back(FromProto(f.start_time()), FromProto(f.end_time()));
    return out;
  }
  // tem's free time on day_ from 08:00 to 16:00, asked a day before (so
  // that the notice hides nothing).
  Free FreeOnTemFrom8To16() {
    clock_.Set(day_ - absl::Hours(24));
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/tem");
    *q.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(8));
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(16));
    v1::QueryAvailabilityResponse free;
    grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &free, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return FreeOf(free.free_intervals());
  }
  int Sweep() {
    auto n = manager_->Sweep();
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : -1;
  }
};

// ---------------------------------------------------------------- item 1

TEST_F(SessionsTest, SweepChecksAForgottenSessionOutAtTheNextBookingsStartLongAfterTheLookBack) {
  v1::Booking a, b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &a).ok());
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &b).ok());
  CheckInAt(a, day_ + absl::Hours(9));
  // Swept again and again while the session runs on: the sweep's cursor
  // trails the clock by an hour, and moves past the session's start.
  for (absl::Duration at : {absl::Hours(9) + absl::Minutes(30), absl::Hours(10) + absl::Minutes(30),
                            absl::Hours(11) + absl::Minutes(30), absl::Hours(12)}) {
    clock_.Set(day_ + at);
    EXPECT_EQ(Sweep(), 0) << at;  // due once 12:00 (the next booking's start) has passed
  }
  EXPECT_EQ(Get(a.name()).state(), v1::Booking::CHECKED_IN);
  clock_.Set(day_ + absl::Hours(12) + absl::Seconds(1));
  EXPECT_EQ(Sweep(), 1);
  const v1::Booking done = Get(a.name());
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(done.session().end_time()), day_ + absl::Hours(12));
  EXPECT_TRUE(done.session().auto_checked_out());
  EXPECT_FALSE(done.session().end_clamped());
  EXPECT_EQ(done.session().checked_out_by(), "services/booking");
  // CheckOut's event, so that billing and usage see the session...
  auto events = CheckedOut(a.name());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].header().actor(), "services/booking");
  EXPECT_EQ(events[0].booking_checked_out().booking().state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(events[0].booking_checked_out().booking().session().end_time()), day_ + absl::Hours(12));
  // ...and the use renews the qualification, as CheckOut does.
  EXPECT_EQ(LastUse(), day_ + absl::Hours(12));
  // Once only; the next booking is left alone (not due before 12:15).
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(CheckedOut(a.name()).size(), 1u);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::CONFIRMED);
}

TEST_F(SessionsTest, SweepChecksASessionOutAtCheckInPlusMaxBlockWhenNothingFollows) {
  v1::Booking a;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &a).ok());
  const absl::Time in = day_ + absl::Hours(9) + absl::Minutes(5);
  CheckInAt(a, in);
  for (absl::Duration later : {absl::Hours(2), absl::Hours(24), absl::Hours(24 * 29), absl::Hours(24 * 30)}) {
    clock_.Set(in + later);
    EXPECT_EQ(Sweep(), 0) << later;  // max_block is 30 days
  }
  clock_.Set(in + absl::Hours(24 * 30) + absl::Milliseconds(1));
  EXPECT_EQ(Sweep(), 1);
  const v1::Booking done = Get(a.name());
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(done.session().end_time()), in + absl::Hours(24 * 30));
  EXPECT_TRUE(done.session().auto_checked_out());
  EXPECT_EQ(CheckedOut(a.name()).size(), 1u);
  // The sweep keeps nothing about it any more.
  EXPECT_EQ(pool_->Command({"ZCARD", keys::Due(keys::Partition("tem"))})->integer, 0);
}

// The mode withdrawn while the session runs: no max_block any more (it was
// read as 0: the session closed at its check-in, zero hours long); the
// reserved end stands in for check-in + max_block.
TEST_F(SessionsTest, ASessionOfAWithdrawnModeIsCheckedOutAtItsReservedEnd) {
  v1::Booking a;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &a).ok());
  const absl::Time in = day_ + absl::Hours(9) + absl::Minutes(5);
  CheckInAt(a, in);
  std::vector<iv::ModeOffering> others;
  const iv::Instrument tem = InventoryInstrument("tem");
  for (const auto& m : tem.modes()) {
    if (m.mode() != labshare::type::v1::ON_SITE) others.push_back(m);
  }
  OfferModes("tem", others, "no-on-site");
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(Get(a.name()).state(), v1::Booking::CHECKED_IN);
  clock_.Set(day_ + absl::Hours(10) + absl::Milliseconds(1));
  EXPECT_EQ(Sweep(), 1);
  const v1::Booking done = Get(a.name());
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(done.session().end_time()), day_ + absl::Hours(10));
  EXPECT_TRUE(done.session().auto_checked_out());
}

TEST_F(SessionsTest, ReplicasSweepingAtOnceCheckTheSessionOutOnce) {
  v1::Booking a, b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &a).ok());
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &b).ok());
  CheckInAt(a, day_ + absl::Hours(9));
  clock_.Set(day_ + absl::Hours(12) + absl::Minutes(1));
  // Another replica: its own connections, the same Redis.
  RedisPool pool(redis_->options());
  BookingStore store(&pool);
  BookingManager other(&store, inv_client_.get(), &clock_, labshare::testing::TestPageTokens());
  absl::StatusOr<int> mine = 0, theirs = 0;
  std::thread t([&] { theirs = other.Sweep(); });
  mine = manager_->Sweep();
  t.join();
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_TRUE(theirs.ok()) << theirs.status();
  EXPECT_EQ(*mine + *theirs, 1);
  EXPECT_EQ(CheckedOut(a.name()).size(), 1u);
  EXPECT_EQ(*other.Sweep(), 0);
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(CheckedOut(a.name()).size(), 1u);
  EXPECT_EQ(FromProto(Get(a.name()).session().end_time()), day_ + absl::Hours(12));
}

// ---------------------------------------------------------------- session uses

// Inventory as booking reaches it: RecordQualificationUse answers
// UNAVAILABLE while `down` (inventory restarting); every other call, and
// RecordQualificationUse otherwise, goes to the real service.
class FlakyInventory final : public iv::InventoryService::CallbackService {
 public:
  explicit FlakyInventory(labshare::inventory::InventoryService* real) : real_(real) {}
#define LABSHARE_INVENTORY_RPC(Method, Req, Resp)                                                    \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* ctx, const iv::Req* req, iv::Resp* resp) \
      override {                                                                                      \
    if (down.load() && absl::string_view(#Method) == "RecordQualificationUse") {                     \
      ++refused;                                                                                     \
      grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();                                     \
      reactor->Finish(ToGrpcStatus(MakeError(absl::StatusCode::kUnavailable, "STORAGE_UNAVAILABLE",  \
                                             "inventory is restarting"),                             \
                                   "inventory.labshare"));                                           \
      return reactor;                                                                                \
    }                                                                                                \
    return real_->Method(ctx, req, resp);                                                            \
  }
#include "services/inventory/inventory_methods.inc"
#undef LABSHARE_INVENTORY_RPC
  std::atomic<bool> down{false};
  std::atomic<int> refused{0};

 private:
  labshare::inventory::InventoryService* real_;
};

class SessionUseTest : public SessionsTest {
 protected:
  void SetUp() override {
    SessionsTest::SetUp();
    if (HasFatalFailure()) return;
    flaky_ = std::make_unique<FlakyInventory>(inv_service_.get());
    flaky_server_ = Start("inventory", inv_auth_.get(), flaky_.get());
    // Booking calls inventory through it.
    server_.reset();
    service_.reset();
    manager_.reset();
    inv_client_ = std::make_unique<InventoryClient>(ServiceChannel(*flaky_server_, "booking"), &clock_,
                                                    absl::ZeroDuration());
    manager_ = std::make_unique<BookingManager>(store_.get(), inv_client_.get(), &clock_, testing::TestPageTokens());
    service_ = std::make_unique<BookingService>(manager_.get(), auth_.get());
    server_ = Start("booking", auth_.get(), service_.get());
    stub_ = v1::BookingService::NewStub(Channel(*server_));
    // Booking's own consumer of tem's partition outbox, as the binary runs it.
    ConsumerOptions o;
    o.stream = keys::Outbox(keys::Partition("tem"));
    o.group = kSessionUsesGroup;
    o.consumer = "test";
    o.block = absl::ZeroDuration();
    o.retry_initial = absl::ZeroDuration();  // a use not delivered is tried again in the next poll
    uses_ = std::make_unique<EventConsumer>(pool_.get(), o);
    poll_ = SessionUsePoll(uses_.get(), manager_.get());
  }
  void TearDown() override {
    server_.reset();
    service_.reset();
    manager_.reset();
    inv_client_.reset();
    flaky_server_.reset();
  }
  grpc::Status CheckOutAt(const v1::Booking& b, absl::Time at) {
    clock_.Set(at);
    v1::CheckOutRequest o;
    o.set_name(b.name());
    v1::Booking out;
    return Call(stub_.get(), &v1::BookingService::Stub::CheckOut, o, &out, ana_);
  }
  // The uses inventory recorded of ana's qualification on tem: its
  // QualificationChanged UPDATED events (a grant is CREATED).
  int UsesRecorded() {
    int n = 0;
    auto v = pool_->Command({"XRANGE", "{inventory}:outbox", "-", "+"});
    for (const auto& entry : v->elements) {
      const auto& fields = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < fields.size(); i += 2) {
        iv::InventoryEvent e;
        if (fields[i].str != "payload" || !e.ParseFromString(fields[i + 1].str)) continue;
        if (e.has_qualification_changed() && e.qualification_changed().kind() == iv::UPDATED &&
            e.qualification_changed().qualification().name() == "instruments/tem/qualifications/ana") {
          ++n;
        }
      }
    }
    return n;
  }

  std::unique_ptr<FlakyInventory> flaky_;
  std::unique_ptr<Server> flaky_server_;
  std::unique_ptr<EventConsumer> uses_;
  ConsumerLoop::Poll poll_;
};

// CheckOut (booking.proto: "Records the use of the user's qualification in
// inventory"): inventory unavailable at check-out, the check-out stands and
// the use is delivered from its BookingCheckedOut once inventory is back,
// at the check-out's time, once (it used to be logged and lost).
TEST_F(SessionUseTest, ACheckOutWhileInventoryIsDownRenewsTheQualificationOnceItIsBack) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  CheckInAt(b, day_ + absl::Hours(9));
  flaky_->down = true;
  const absl::Time out_at = day_ + absl::Hours(9) + absl::Minutes(40);
  grpc::Status s = CheckOutAt(b, out_at);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::COMPLETED);
  EXPECT_EQ(flaky_->refused.load(), 1);
  EXPECT_EQ(LastUse(), absl::InfinitePast());
  // Still down: the delivery fails (the loop backs off), the use waits.
  auto polled = poll_();
  EXPECT_FALSE(polled.ok());
  EXPECT_EQ(flaky_->refused.load(), 2);
  EXPECT_EQ(LastUse(), absl::InfinitePast());
  // Back, later: the use at the check-out's time, not at the delivery's.
  flaky_->down = false;
  clock_.Set(day_ + absl::Hours(11));
  polled = poll_();
  ASSERT_TRUE(polled.ok()) << polled.status();
  EXPECT_EQ(LastUse(), out_at);
  EXPECT_EQ(UsesRecorded(), 1);
  // Nothing left to deliver; a redelivery of the event changes nothing.
  polled = poll_();
  ASSERT_TRUE(polled.ok()) << polled.status();
  EXPECT_EQ(*polled, 0);
  auto events = CheckedOut(b.name());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(manager_->DeliverSessionUse(events[0]).ok());
  EXPECT_EQ(LastUse(), out_at);
  EXPECT_EQ(UsesRecorded(), 1);
}

// Inventory up: CheckOut records the use right away; the delivery from the
// event is the same request (request_id "checkout-<booking id>"): no second
// use.
TEST_F(SessionUseTest, ACheckOutWithInventoryUpRecordsTheUseOnce) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  CheckInAt(b, day_ + absl::Hours(9));
  const absl::Time out_at = day_ + absl::Hours(9) + absl::Minutes(40);
  ASSERT_TRUE(CheckOutAt(b, out_at).ok());
  EXPECT_EQ(LastUse(), out_at);
  auto polled = poll_();
  ASSERT_TRUE(polled.ok()) << polled.status();
  EXPECT_EQ(LastUse(), out_at);
  EXPECT_EQ(UsesRecorded(), 1);
  EXPECT_EQ(flaky_->refused.load(), 0);
}

// A session that began while the qualification was valid and ended after
// it lapsed renews it from the check-out (inventory's use_start_time): the
// use at the check-out alone, after the lapse, changed nothing and the
// qualification stayed lapsed although it was in use.
TEST_F(SessionUseTest, ASessionAcrossTheLapseRenewsTheQualification) {
  // One day of validity, granted again at day_ - 1 day + 09:30: it lapses
  // at day_ + 09:30, during the session 09:00-09:40.
  iv::GetInstrumentRequest g;
  g.set_name("instruments/tem");
  iv::Instrument tem;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
  iv::UpdateInstrumentRequest u;
  *u.mutable_instrument() = tem;
  for (auto& m : *u.mutable_instrument()->mutable_modes()) {
    if (m.mode() == labshare::type::v1::ON_SITE) m.mutable_slot_rules()->set_qualification_validity_days(1);
  }
  u.mutable_update_mask()->add_paths("modes");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  clock_.Set(day_ - absl::Hours(24) + absl::Hours(9) + absl::Minutes(30));
  iv::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  Inv(&iv::InventoryService::Stub::GrantQualification, grant);
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  CheckInAt(b, day_ + absl::Hours(9));
  const int before = UsesRecorded();  // the grant again is an UPDATED too
  const absl::Time out_at = day_ + absl::Hours(9) + absl::Minutes(40);
  ASSERT_TRUE(CheckOutAt(b, out_at).ok());
  EXPECT_EQ(LastUse(), out_at);
  EXPECT_EQ(UsesRecorded(), before + 1);
  iv::GetQualificationRequest q;
  q.set_name("instruments/tem/qualifications/ana");
  iv::Qualification now;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetQualification, q, &now, admin_).ok());
  EXPECT_EQ(now.state(), iv::VALID);
  EXPECT_EQ(FromProto(now.expire_time()), out_at + absl::Hours(24));
}

// The sweep's auto check-out while inventory is down: the same delivery.
TEST_F(SessionUseTest, AnAutoCheckOutWhileInventoryIsDownRenewsTheQualificationOnceItIsBack) {
  v1::Booking a, next;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &a).ok());
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &next).ok());
  CheckInAt(a, day_ + absl::Hours(9));
  flaky_->down = true;
  clock_.Set(day_ + absl::Hours(12) + absl::Seconds(1));
  EXPECT_EQ(Sweep(), 1);
  EXPECT_EQ(Get(a.name()).state(), v1::Booking::COMPLETED);
  EXPECT_EQ(LastUse(), absl::InfinitePast());
  flaky_->down = false;
  auto polled = poll_();
  ASSERT_TRUE(polled.ok()) << polled.status();
  EXPECT_EQ(LastUse(), day_ + absl::Hours(12));
  EXPECT_EQ(UsesRecorded(), 1);
}

// ---------------------------------------------------------------- item 2

TEST_F(SessionsTest, OutageDeclaredDuringASessionChecksItOutAtTheWindowStart) {
  v1::Booking running;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &running).ok());
  CheckInAt(running, day_ + absl::Hours(9));
  clock_.Set(day_ + absl::Hours(10));
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  mw.mutable_maintenance_window()->set_reason("vacuum leak");
  mw.mutable_maintenance_window()->set_outage(true);
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  ASSERT_EQ(result.interrupted_bookings_size(), 1);
  EXPECT_EQ(result.interrupted_bookings(0), running.name());
  EXPECT_EQ(result.cancelled_bookings_size(), 0);

  const v1::Booking done = Get(running.name());
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(done.interrupted_by_outage());
  EXPECT_FALSE(done.cancelled_by_outage());
  EXPECT_EQ(FromProto(done.session().end_time()), day_ + absl::Hours(11));
  EXPECT_EQ(done.session().checked_out_by(), "users/admin");
  EXPECT_EQ(FromProto(done.blocked_interval().end_time()), day_ + absl::Hours(11));
  // CheckOut's event, in the same step; nothing else about this booking.
  auto events = CheckedOut(running.name());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].booking_checked_out().booking().interrupted_by_outage());
  for (const auto& e : Events()) EXPECT_FALSE(e.has_booking_interval_changed());
  // A check-out afterwards finds it completed; applying again changes nothing.
  v1::CheckOutRequest o;
  o.set_name(running.name());
  v1::Booking out;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CheckOut, o, &out, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_STATE");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  EXPECT_EQ(result.interrupted_bookings_size(), 0);
  EXPECT_EQ(CheckedOut(running.name()).size(), 1u);
  // The session's time before the window stays taken; nothing else is.
  EXPECT_EQ(FreeOnTemFrom8To16(),
            (Free{{day_ + absl::Hours(8), day_ + absl::Hours(8) + absl::Minutes(30)},
                  {day_ + absl::Hours(15), day_ + absl::Hours(16)}}));
}

// Booking.blocked_interval "Shrinks ... when a maintenance window cuts it":
// a window starting at or before the session's blocked start leaves nothing
// of the block; it becomes empty, [start, start), and leaves the calendar.
// The session checked in after the window start ends at its check-in (an
// empty session). CheckOut's event only, no BookingIntervalChanged.
TEST_F(SessionsTest, AWindowFromTheBlockStartLeavesAnEmptyBlockAndAnEmptySession) {
  v1::Booking running;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &running).ok());
  CheckInAt(running, day_ + absl::Minutes(9 * 60 + 10));
  clock_.Set(day_ + absl::Minutes(9 * 60 + 30));
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
  mw.mutable_maintenance_window()->set_reason("vacuum leak");
  mw.mutable_maintenance_window()->set_outage(true);
  iv::MaintenanceWindow window;
  grpc::Status created = Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_);
  ASSERT_TRUE(created.ok()) << GrpcErrorReason(created) << ": " << created.error_message();
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  ASSERT_EQ(result.interrupted_bookings_size(), 1);
  EXPECT_EQ(result.interrupted_bookings(0), running.name());

  const v1::Booking done = Get(running.name());
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(done.interrupted_by_outage());
  EXPECT_EQ(FromProto(done.session().start_time()), day_ + absl::Minutes(9 * 60 + 10));
  EXPECT_EQ(FromProto(done.session().end_time()), day_ + absl::Minutes(9 * 60 + 10));
  EXPECT_EQ(FromProto(done.blocked_interval().start_time()), day_ + absl::Hours(9));
  EXPECT_EQ(FromProto(done.blocked_interval().end_time()), day_ + absl::Hours(9));
  EXPECT_EQ(FromProto(done.reserved_interval().end_time()), day_ + absl::Hours(12));  // unchanged
  auto events = CheckedOut(running.name());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(FromProto(events[0].booking_checked_out().booking().blocked_interval().end_time()), day_ + absl::Hours(9));
  for (const auto& e : Events()) EXPECT_FALSE(e.has_booking_interval_changed());
  // Nothing of it stays on the calendar: tem is free around the window (a
  // booking before it ends its buffer, 30 min, by the window start).
  EXPECT_EQ(FreeOnTemFrom8To16(),
            (Free{{day_ + absl::Hours(8), day_ + absl::Minutes(8 * 60 + 30)}, {day_ + absl::Hours(10), day_ + absl::Hours(16)}}));
}

// ---------------------------------------------------------------- item 3

TEST_F(SessionsTest, LeaseAvailabilityTakesTheDefaultHandoverAndReturnBuffersOff) {
  // afm: handover buffer 1 day, return buffer 2 days, terms of 7..60 days.
  auto request = [&](absl::Time from, absl::Time to, bool validate_only, v1::Lease* out) {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(from);
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(to);
    r.set_validate_only(validate_only);
    return Call(stub_.get(), &v1::BookingService::Stub::RequestLease, r, out, ana_);
  };
  const absl::Duration d = absl::Hours(24);
  v1::Lease lease;
  ASSERT_TRUE(request(day_ + 10 * d, day_ + 17 * d, false, &lease).ok());  // blocks [day 9, day 19)

  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/afm");
  q.set_mode(labshare::type::v1::LEASE);
  *q.mutable_range()->mutable_start_time() = ToProto(clock_.Now());
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + 30 * d);
  v1::QueryAvailabilityResponse resp;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // A term starts a handover buffer from now at the earliest; afm sets no horizon.
  EXPECT_EQ(FromProto(resp.earliest_start()), clock_.Now() + d);
  EXPECT_FALSE(resp.has_horizon_end());
  const Free expected{{clock_.Now() + d, day_ + 7 * d}, {day_ + 20 * d, day_ + 30 * d}};
  EXPECT_EQ(FreeOf(resp.free_intervals()), expected);
  ASSERT_EQ(resp.busy_intervals_size(), 1);
  EXPECT_EQ(resp.busy_intervals(0).reason(), v1::BusyInterval::AWAITING_APPROVAL);
  EXPECT_EQ(FromProto(resp.busy_intervals(0).interval().start_time()), day_ + 9 * d);
  EXPECT_EQ(FromProto(resp.busy_intervals(0).interval().end_time()), day_ + 19 * d);

  // Each free interval takes a term at its edges; a millisecond beyond does not.
  v1::Lease preview;
  EXPECT_TRUE(request(clock_.Now() + d, clock_.Now() + 8 * d, true, &preview).ok());
  s = request(clock_.Now() + d - absl::Milliseconds(1), clock_.Now() + 8 * d, true, &preview);
  EXPECT_EQ(GrpcErrorReason(s), "INSUFFICIENT_NOTICE");
  EXPECT_TRUE(request(day_, day_ + 7 * d, true, &preview).ok());
  s = request(day_ + absl::Milliseconds(1), day_ + 7 * d + absl::Milliseconds(1), true, &preview);
  EXPECT_EQ(GrpcErrorReason(s), "SLOT_TAKEN");
  EXPECT_TRUE(request(day_ + 20 * d, day_ + 27 * d, true, &preview).ok());
  s = request(day_ + 20 * d - absl::Milliseconds(1), day_ + 27 * d, true, &preview);
  EXPECT_EQ(GrpcErrorReason(s), "SLOT_TAKEN");

  // Search answers the same in mode LEASE; a stretch of 9 days is only at the end.
  v1::SearchAvailableInstrumentsRequest search;
  search.set_category("electron-microscopy");
  search.set_mode(labshare::type::v1::LEASE);
  *search.mutable_range() = q.range();
  *search.mutable_min_duration() = ToProto(9 * d);
  v1::SearchAvailableInstrumentsResponse found;
  s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, search, &found, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(found.instruments_size(), 1);
  EXPECT_EQ(found.instruments(0).instrument(), "instruments/afm");
  EXPECT_EQ(FreeOf(found.instruments(0).free_intervals()), (Free{{day_ + 20 * d, day_ + 30 * d}}));
}

// ---------------------------------------------------------------- item 4

TEST_F(SessionsTest, EveryFreeIntervalCanBeBookedAtItsEdgesAndNotBeyond) {
  clock_.Set(day_ - absl::Hours(24));
  const absl::Time now = clock_.Now();
  const absl::Time horizon = now + absl::Hours(24 * 60);  // lab is a member
  v1::Booking x, y;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &x).ok());
  ASSERT_TRUE(Book(horizon - day_ - absl::Hours(5), horizon - day_ - absl::Hours(4), &y).ok());
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(now);
  *q.mutable_range()->mutable_end_time() = ToProto(now + absl::Hours(24 * 61));
  v1::QueryAvailabilityResponse resp;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, ana_).ok());
  EXPECT_EQ(FromProto(resp.earliest_start()), now + absl::Hours(2));
  EXPECT_EQ(FromProto(resp.horizon_end()), horizon);
  const absl::Duration buffer = absl::Minutes(30);
  const Free free = FreeOf(resp.free_intervals());
  ASSERT_EQ(free, (Free{{now + absl::Hours(2), day_ + absl::Hours(9) - buffer},
                        {day_ + absl::Hours(10) + buffer, horizon - absl::Hours(5) - buffer},
                        {horizon - absl::Hours(4) + buffer, horizon}}));
  // Why the time just outside each free interval is refused.
  const std::vector<std::pair<std::string, std::string>> beyond = {
      {"INSUFFICIENT_NOTICE", "SLOT_TAKEN"}, {"SLOT_TAKEN", "SLOT_TAKEN"}, {"SLOT_TAKEN", "BEYOND_HORIZON"}};
  auto validate = [&](absl::Time s, absl::Time e) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(s);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(e);
    r.set_validate_only(true);
    v1::Booking out;
    return Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &out, ana_);
  };
  const absl::Duration block = absl::Minutes(30), ms = absl::Milliseconds(1);
  for (size_t i = 0; i < free.size(); ++i) {
    const auto [s, e] = free[i];
    EXPECT_TRUE(validate(s, s + block).ok()) << i;
    EXPECT_TRUE(validate(e - block, e).ok()) << i;
    EXPECT_EQ(GrpcErrorReason(validate(s - ms, s - ms + block)), beyond[i].first) << i;
    EXPECT_EQ(GrpcErrorReason(validate(e - block + ms, e + ms)), beyond[i].second) << i;
  }
  // What starts inside the horizon but ends beyond it is refused, and the
  // contract's error says so; booking up to the horizon end works.
  auto s = validate(horizon - absl::Hours(1), horizon + absl::Hours(1));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "BEYOND_HORIZON");
  v1::Booking last;
  ASSERT_TRUE(Book(horizon - day_ - absl::Hours(1), horizon - day_, &last).ok());
  EXPECT_EQ(last.state(), v1::Booking::CONFIRMED);

  // A non-member's horizon is its own (7 days).
  iv::CreateOrganizationRequest guest;
  guest.set_organization_id("guest");
  guest.mutable_organization()->set_display_name("guest");
  guest.mutable_organization()->set_type(iv::UNIVERSITY);
  guest.mutable_organization()->set_membership_state(iv::NON_MEMBER);
  Inv(&iv::InventoryService::Stub::CreateOrganization, guest);
  q.set_organization("organizations/guest");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, admin_).ok());
  EXPECT_EQ(FromProto(resp.horizon_end()), now + absl::Hours(24 * 7));
  EXPECT_EQ(FromProto(resp.free_intervals(resp.free_intervals_size() - 1).end_time()), now + absl::Hours(24 * 7));
}

}  // namespace
}  // namespace labshare::booking
