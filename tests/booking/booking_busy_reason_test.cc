// QueryAvailability's busy reasons come from the calendar alone (issue 17):
// every step that puts a booking on the calendar or changes the state of
// one that stays there stores the reason beside its end (in its member of
// {bk:P}:cl:<instr>, CalendarMember), and the answer reads no document for it. An
// end without a reason (written by an older version) still answers the
// document's reason. Each test drives the real service (gRPC, inventory,
// Redis) through one booking's transitions and checks, after each, the
// reason QueryAvailability gives (as BusyInterval.Reason documents it) and
// the reason stored beside the end.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>

#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "services/booking/booking_common.h"
#include "tests/booking/booking_flows.h"
#include "tests/booking/calendar_keys.h"
#include "tests/support/redis_snapshot.h"

namespace labshare::booking {
namespace {

using Reason = v1::BusyInterval::Reason;

class BusyReasonTest : public BookingFlowsTest {
 protected:
  // QueryAvailability of `instrument` over [day_ - 1 day, day_ + 30 days),
  // as the consortium admin (who sees each interval's resource): the busy
  // intervals by resource.
  std::map<std::string, v1::BusyInterval> Busy(const std::string& instrument = "tem",
                                               labshare::type::v1::SharingMode mode = labshare::type::v1::ON_SITE) {
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/" + instrument);
    q.set_mode(mode);
    *q.mutable_range()->mutable_start_time() = ToProto(day_ - absl::Hours(24));
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
    v1::QueryAvailabilityResponse resp;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::map<std::string, v1::BusyInterval> out;
    for (const auto& b : resp.busy_intervals()) out[b.resource()] = b;
    return out;
  }
  // The same through BookingManager::QueryAvailability (the synchronous
  // read, ReadCalendarWithDocs): the reason of `resource`'s interval.
  Reason SyncReason(const std::string& resource, const std::string& instrument = "tem") {
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/" + instrument);
    *q.mutable_range()->mutable_start_time() = ToProto(day_ - absl::Hours(24));
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
    Principal admin{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(24)};
    auto resp = manager_->QueryAvailability(admin, q);
    EXPECT_TRUE(resp.ok()) << resp.status();
    if (!resp.ok()) return v1::BusyInterval::REASON_UNSPECIFIED;
    for (const auto& b : resp->busy_intervals()) {
      if (b.resource() == resource) return b.reason();
    }
    return v1::BusyInterval::REASON_UNSPECIFIED;
  }
  // The end and reason stored for `entry` (a booking id or "mw:<id>") in
  // its calendar member, as CalendarEndValue writes them.
  std::optional<std::string> StoredEnd(const std::string& instrument, const std::string& entry) {
    return testing::StoredCalendarEnd(*pool_, keys::Partition(instrument), instrument, entry);
  }
  // QueryAvailability shows `resource` busy for `want`, and that reason is
  // the one stored beside its end on the calendar (entry: its calendar id).
  void ExpectBusy(const std::string& resource, const std::string& entry, Reason want,
                  const std::string& instrument = "tem",
                  labshare::type::v1::SharingMode mode = labshare::type::v1::ON_SITE) {
    auto busy = Busy(instrument, mode);
    ASSERT_EQ(busy.count(resource), 1u) << resource << " is not busy";
    EXPECT_EQ(busy[resource].reason(), want) << resource;
    auto stored = StoredEnd(instrument, entry);
    ASSERT_TRUE(stored.has_value()) << entry << " has no calendar end";
    int64_t end_ms = 0;
    int reason = 0;
    ASSERT_TRUE(ParseCalendarEnd(*stored, &end_ms, &reason)) << *stored;
    EXPECT_EQ(reason, want) << entry;
    EXPECT_EQ(end_ms, Ms(FromProto(busy[resource].interval().end_time())));
  }
  void ExpectBooking(const v1::Booking& b, Reason want) { ExpectBusy(b.name(), IdOf(b.name()), want); }
  void ExpectFree(const std::string& resource, const std::string& entry, const std::string& instrument = "tem",
                  labshare::type::v1::SharingMode mode = labshare::type::v1::ON_SITE) {
    EXPECT_EQ(Busy(instrument, mode).count(resource), 0u) << resource;
    EXPECT_FALSE(StoredEnd(instrument, entry).has_value()) << entry;
  }
  // Checks b out now (release: the rest of its reservation).
  v1::Booking CheckOut(const v1::Booking& b, bool release) {
    v1::CheckOutRequest o;
    o.set_name(b.name());
    o.set_release_remaining(release);
    v1::Booking out;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::CheckOut, o, &out, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.state(), v1::Booking::COMPLETED);
    return out;
  }
  void CheckIn(const v1::Booking& b) {
    v1::CheckInRequest in;
    in.set_name(b.name());
    v1::Booking out;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(out.state(), v1::Booking::CHECKED_IN);
  }
};

TEST_F(BusyReasonTest, ConfirmedIsBookedAndCancelledLeavesTheCalendar) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  ASSERT_EQ(b.state(), v1::Booking::CONFIRMED);
  ExpectBooking(b, v1::BusyInterval::BOOKED);
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, ana_).ok());
  ExpectFree(b.name(), IdOf(b.name()));
}

TEST_F(BusyReasonTest, PendingApprovedCheckedInAndCheckedOut) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(24 + 9), &b).ok());  // above the 8 h approval threshold
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  ExpectBooking(b, v1::BusyInterval::AWAITING_APPROVAL);
  v1::ApproveBookingRequest approve;
  approve.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, staff_).ok());
  ASSERT_EQ(out.state(), v1::Booking::CONFIRMED);
  ExpectBooking(b, v1::BusyInterval::BOOKED);
  clock_.Set(day_ + absl::Hours(9));
  CheckIn(b);
  ExpectBooking(b, v1::BusyInterval::IN_USE);
  // Checked out early, the rest released: the end moves and the entry
  // stays (a finished booking), BOOKED as its document would say.
  clock_.Set(day_ + absl::Hours(12));
  out = CheckOut(b, true);
  ASSERT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(12) + absl::Minutes(30));
  ExpectBooking(b, v1::BusyInterval::BOOKED);
  EXPECT_EQ(SyncReason(b.name()), v1::BusyInterval::BOOKED);
}

TEST_F(BusyReasonTest, CheckOutKeepingTheCalendarEntryIsBookedAgain) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(13), &b).ok());
  clock_.Set(day_ + absl::Hours(9));
  CheckIn(b);
  ExpectBooking(b, v1::BusyInterval::IN_USE);
  clock_.Set(day_ + absl::Hours(10));
  CheckOut(b, false);
  ExpectBooking(b, v1::BusyInterval::BOOKED);  // same end, the reason rewritten
}

TEST_F(BusyReasonTest, LeaseRequestedApprovedHandedOverExtendedAndCancelled) {
  const auto lease_mode = labshare::type::v1::LEASE;
  auto expect = [&](const v1::Lease& l, Reason want) {
    ExpectBusy(l.booking(), IdOf(l.booking()), want, "afm", lease_mode);
  };
  v1::Lease lease, other, out;
  ASSERT_TRUE(Request(1, 11, &lease).ok());
  ASSERT_TRUE(Request(16, 24, &other).ok());
  expect(lease, v1::BusyInterval::AWAITING_APPROVAL);
  expect(other, v1::BusyInterval::AWAITING_APPROVAL);
  ASSERT_TRUE(Approve(lease.name(), &out).ok());
  expect(lease, v1::BusyInterval::LEASED);

  clock_.Set(day_ + absl::Hours(24));
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip new");
  auto handed = Call(stub_.get(), &v1::BookingService::Stub::RecordHandover, h, &out, staff_);
  ASSERT_TRUE(handed.ok()) << handed.error_message();
  ASSERT_EQ(out.state(), v1::Lease::HANDED_OVER);
  expect(lease, v1::BusyInterval::LEASED);  // checked in, still a lease

  v1::ExtendLeaseRequest ext;
  ext.set_name(lease.name());
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 12));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ExtendLease, ext, &out, staff_).ok());
  expect(lease, v1::BusyInterval::LEASED);
  EXPECT_EQ(FromProto(Busy("afm", lease_mode)[lease.booking()].interval().end_time()), day_ + absl::Hours(24 * 14));

  v1::CancelLeaseRequest cancel;
  cancel.set_name(other.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelLease, cancel, &out, ana_).ok());
  ExpectFree(other.booking(), IdOf(other.booking()), "afm", lease_mode);
  expect(lease, v1::BusyInterval::LEASED);
}

TEST_F(BusyReasonTest, ServiceRunScheduledRescheduledAndStarted) {
  v1::ServiceOrder out = Scheduled();
  const std::string run = out.booking();
  ASSERT_FALSE(run.empty());
  ExpectBusy(run, IdOf(run), v1::BusyInterval::BOOKED);
  v1::ScheduleServiceRequest sch;
  sch.set_name(out.name());
  // Rescheduled: the old run leaves the calendar, the new one is BOOKED.
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(13));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  auto s = Call(stub_.get(), &v1::BookingService::Stub::ScheduleService, sch, &out, staff_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_NE(out.booking(), run);
  ExpectFree(run, IdOf(run));
  ExpectBusy(out.booking(), IdOf(out.booking()), v1::BusyInterval::BOOKED);
  clock_.Set(day_ + absl::Hours(13));
  v1::StartServiceRequest start;
  start.set_name(out.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::StartService, start, &out, staff_).ok());
  ExpectBusy(out.booking(), IdOf(out.booking()), v1::BusyInterval::IN_USE);
}

TEST_F(BusyReasonTest, MaintenanceWindowOnTheCalendar) {
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  mw.mutable_maintenance_window()->set_reason("column bake-out");
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  // The calendar's entry for the window, named as inventory names it (the
  // admin sees names), once: not the inventory's copy too.
  ExpectBusy(window.name(), WindowEntry(IdOf(window.name())), v1::BusyInterval::MAINTENANCE);
  EXPECT_EQ(Busy().size(), 1u);
}

// An end an older version wrote (the end alone): the reason comes from the
// booking's document, on the pipelined read and on the synchronous one.
// The next step that writes the booking stores the reason beside it.
TEST_F(BusyReasonTest, AnEndWithoutAReasonFallsBackToTheDocument) {
  v1::Booking pending, confirmed, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(24 + 9), &pending).ok());
  ASSERT_EQ(pending.state(), v1::Booking::PENDING_APPROVAL);
  ASSERT_TRUE(Book(absl::Hours(24 + 12), absl::Hours(24 + 13), &confirmed).ok());
  for (const v1::Booking* b : {&pending, &confirmed}) {
    const int64_t end = Ms(FromProto(b->blocked_interval().end_time()));
    testing::RewriteCalendarEnd(*pool_, keys::Partition("tem"), "tem", IdOf(b->name()), end, 0);
  }
  auto busy = Busy();
  EXPECT_EQ(busy[pending.name()].reason(), v1::BusyInterval::AWAITING_APPROVAL);
  EXPECT_EQ(busy[confirmed.name()].reason(), v1::BusyInterval::BOOKED);
  EXPECT_EQ(FromProto(busy[pending.name()].interval().end_time()), day_ + absl::Hours(24 + 9) + absl::Minutes(30));
  EXPECT_EQ(SyncReason(pending.name()), v1::BusyInterval::AWAITING_APPROVAL);
  EXPECT_EQ(SyncReason(confirmed.name()), v1::BusyInterval::BOOKED);

  v1::ApproveBookingRequest approve;
  approve.set_name(pending.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, staff_).ok());
  ExpectBooking(pending, v1::BusyInterval::BOOKED);
}

// With the reason beside the end no document is read: QueryAvailability
// answers the stored reason even with the document gone.
TEST_F(BusyReasonTest, AStoredReasonNeedsNoDocument) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(24 + 9), &b).ok());
  ASSERT_FALSE(pool_->Command({"HDEL", keys::Booking(keys::Partition("tem"), IdOf(b.name())), "d"})->is_error());
  EXPECT_EQ(Busy()[b.name()].reason(), v1::BusyInterval::AWAITING_APPROVAL);
  EXPECT_EQ(SyncReason(b.name()), v1::BusyInterval::AWAITING_APPROVAL);
}

// QueryAvailabilityAsync (the RPC's path) writes its answer as the bytes
// of the message, as unknown fields (BookingManager::AnswerAvailabilityWire):
// byte for byte what the synchronous QueryAvailability's message serializes
// to, for callers who see names and who do not, slot and lease modes,
// min_duration, ranges off whole milliseconds, reasons from the calendar
// and from a document, windows on the calendar and in inventory only; and
// what a client parses equals that message.
TEST_F(BusyReasonTest, TheAnswerOnTheWireIsTheMessagesBytes) {
  v1::Booking pending, confirmed, old, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(24 + 9), &pending).ok());
  ASSERT_TRUE(Book(absl::Hours(24 + 12), absl::Hours(24 + 13), &confirmed).ok());
  ASSERT_TRUE(Book(absl::Hours(48 + 10), absl::Hours(48 + 11), &old).ok());
  testing::RewriteCalendarEnd(*pool_, keys::Partition("tem"), "tem", IdOf(old.name()),
                              Ms(FromProto(old.blocked_interval().end_time())), 0);
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 11, &lease).ok());
  std::vector<iv::MaintenanceWindow> windows;
  for (int h : {72 + 11, 96 + 11}) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/tem");
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(h));
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(h + 4));
    mw.mutable_maintenance_window()->set_reason("column bake-out");
    iv::MaintenanceWindow window;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    windows.push_back(window);
  }
  v1::ApplyMaintenanceWindowRequest apply;  // the first on the calendar, the second in inventory only
  apply.set_maintenance_window(windows[0].name());
  v1::ApplyMaintenanceWindowResponse applied;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &applied, admin_).ok());

  const absl::Time exp = clock_.Now() + absl::Hours(24);
  const Principal admin{"admin", "", {Role::kConsortiumAdmin}, exp};
  const Principal service{"svc", "", {Role::kService}, exp};  // sees no names
  struct Case {
    std::string instrument;
    labshare::type::v1::SharingMode mode;
    absl::Time from, to;
    absl::Duration min;
  };
  const std::vector<Case> cases = {
      {"tem", labshare::type::v1::ON_SITE, day_ - absl::Hours(24), day_ + absl::Hours(24 * 30), absl::ZeroDuration()},
      {"tem", labshare::type::v1::ON_SITE, day_, day_ + absl::Hours(24 * 7), absl::Minutes(90)},
      {"tem", labshare::type::v1::SHARING_MODE_UNSPECIFIED, day_ + absl::Nanoseconds(123456789),
       day_ + absl::Hours(50) + absl::Nanoseconds(987654321), absl::ZeroDuration()},
      {"tem", labshare::type::v1::ON_SITE, day_ + absl::Hours(24 * 20), day_ + absl::Hours(24 * 21),
       absl::ZeroDuration()},
      {"afm", labshare::type::v1::LEASE, day_ - absl::Hours(24), day_ + absl::Hours(24 * 30), absl::ZeroDuration()},
  };
  int busy_seen = 0;
  for (const Principal* p : {&admin, &service}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(c.instrument + " " + p->user_id + " from " + absl::FormatTime(c.from));
      v1::QueryAvailabilityRequest q;
      q.set_instrument("instruments/" + c.instrument);
      q.set_mode(c.mode);
      *q.mutable_range()->mutable_start_time() = ToProto(c.from);
      *q.mutable_range()->mutable_end_time() = ToProto(c.to);
      if (c.min > absl::ZeroDuration()) *q.mutable_min_duration() = ToProto(c.min);
      auto sync = manager_->QueryAvailability(*p, q);
      ASSERT_TRUE(sync.ok()) << sync.status();
      busy_seen += sync->busy_intervals_size();
      v1::QueryAvailabilityResponse wire;
      absl::Notification answered;
      absl::Status status;
      manager_->QueryAvailabilityAsync(*p, q, &wire, [&](absl::Status s) {
        status = s;
        answered.Notify();
      });
      answered.WaitForNotification();
      ASSERT_TRUE(status.ok()) << status;
      EXPECT_EQ(wire.SerializeAsString(), sync->SerializeAsString());
      v1::QueryAvailabilityResponse parsed;
      ASSERT_TRUE(parsed.ParseFromString(wire.SerializeAsString()));
      EXPECT_EQ(parsed.DebugString(), sync->DebugString());
    }
  }
  EXPECT_GT(busy_seen, 8);  // the cases do show busy time
  // Over gRPC (the service's path): what the client parses.
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(day_ - absl::Hours(24));
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  v1::QueryAvailabilityResponse got;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &got, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto sync = manager_->QueryAvailability(admin, q);
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(got.DebugString(), sync->DebugString());
  EXPECT_GE(got.busy_intervals_size(), 4);  // 3 bookings and the window on the calendar at least
}

TEST_F(BusyReasonTest, EndValuesRoundTripAndOlderReadersParseThem) {
  const int64_t end = 1'764'806'400'123;
  int64_t got = 0;
  int reason = -1;
  ASSERT_TRUE(ParseCalendarEnd("1764806400123", &got, &reason));  // an older version's value
  EXPECT_EQ(got, end);
  EXPECT_EQ(reason, 0);
  EXPECT_EQ(CalendarEndValue(end, 0), "1764806400123");
  for (int r = 1; r <= kMaxBusyReason; ++r) {
    const std::string v = CalendarEndValue(end, r);
    EXPECT_EQ(v.size(), 14u);  // one byte more than the end alone
    ASSERT_TRUE(ParseCalendarEnd(v, &got, &reason)) << r;
    EXPECT_EQ(got, end);
    EXPECT_EQ(reason, r);
    // What the previous version's readers do with it: absl::SimpleAtoi
    // (CalendarRange) and Lua's tonumber (the create step's overlap check).
    int64_t old_cc = 0;
    EXPECT_TRUE(absl::SimpleAtoi(v, &old_cc)) << r;
    EXPECT_EQ(old_cc, end);
    auto lua = pool_->Command({"EVAL", "return string.format('%d', tonumber(ARGV[1]))", "0", v});
    ASSERT_TRUE(lua.ok()) << lua.status();
    EXPECT_EQ(lua->str, "1764806400123") << r;
  }
  for (const char* bad : {"", " ", "12x", "x12", "12  ", " 12"}) {
    EXPECT_FALSE(ParseCalendarEnd(bad, &got, &reason)) << '"' << bad << '"';
  }
}

// The store's steps on their own: the overlap check reads ends that carry
// a reason; an update that keeps the entry rewrites the reason beside the
// unchanged end (none given: the end alone, never a stale reason); one that
// keeps a booking that is not on the calendar writes no end.
class BusyReasonStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    store_ = std::make_unique<BookingStore>(pool_.get());
  }
  void TearDown() override { SetQuietLogging(false); }
  CreateStep Create(const std::string& id, int64_t start, int64_t end, int reason) {
    CreateStep s;
    s.partition = p_;
    s.instrument_id = "i1";
    s.booking_id = id;
    s.booking = "doc-" + id;
    s.blocked_start_ms = start;
    s.blocked_end_ms = end;
    s.reserved_start_ms = start;
    s.busy_reason = reason;
    s.events = {"event-" + id};
    return s;
  }
  UpdateStep Keep(const std::string& id, int64_t version, int reason) {
    UpdateStep u;
    u.partition = p_;
    u.instrument_id = "i1";
    u.booking_id = id;
    u.booking = "doc-" + id + "-" + std::to_string(version + 1);
    u.expected_version = version;
    u.busy_reason = reason;
    u.events = {"event-u-" + id};
    return u;
  }
  std::string End(const std::string& id) {
    return testing::StoredCalendarEnd(*pool_, p_, "i1", id).value_or("(nil)");
  }
  StepOutcome::Kind Kind(absl::StatusOr<StepOutcome> o) {
    EXPECT_TRUE(o.ok()) << o.status();
    return o.ok() ? o->kind : StepOutcome::Kind::kConflict;
  }

  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<BookingStore> store_;
  const int p_ = keys::Partition("i1");
};

TEST_F(BusyReasonStoreTest, OverlapIsCheckedAgainstEndsWithAReason) {
  ASSERT_EQ(Kind(store_->Create(Create("b1", 1'000, 2'000, 2))), StepOutcome::Kind::kApplied);
  EXPECT_EQ(End("b1"), CalendarEndValue(2'000, 2));
  auto taken = store_->Create(Create("b2", 1'500, 2'500, 1));
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->kind, StepOutcome::Kind::kSlotTaken);
  EXPECT_EQ(taken->conflicting, "b1");
  EXPECT_EQ(Kind(store_->Create(Create("b3", 2'000, 3'000, 1))), StepOutcome::Kind::kApplied);  // half-open
  auto cal = store_->CalendarRange(p_, "i1", 0, 10'000);
  ASSERT_TRUE(cal.ok()) << cal.status();
  ASSERT_EQ(cal->size(), 2u);
  EXPECT_EQ((*cal)[0].end_ms, 2'000);
  EXPECT_EQ((*cal)[0].busy_reason, 2);
  EXPECT_EQ((*cal)[1].end_ms, 3'000);
  EXPECT_EQ((*cal)[1].busy_reason, 1);
}

TEST_F(BusyReasonStoreTest, UpdatesKeepTheEndAndRewriteTheReason) {
  ASSERT_EQ(Kind(store_->Create(Create("b1", 1'000, 2'000, 2))), StepOutcome::Kind::kApplied);
  ASSERT_EQ(Kind(store_->Update(Keep("b1", 1, 1))), StepOutcome::Kind::kApplied);
  EXPECT_EQ(End("b1"), CalendarEndValue(2'000, 1));
  // An older version's end alone: kept, the reason added.
  testing::RewriteCalendarEnd(*pool_, p_, "i1", "b1", 2'000, 0);
  ASSERT_EQ(Kind(store_->Update(Keep("b1", 2, 3))), StepOutcome::Kind::kApplied);
  EXPECT_EQ(End("b1"), CalendarEndValue(2'000, 3));
  UpdateStep end = Keep("b1", 3, 1);
  end.calendar = UpdateStep::Calendar::kSetEnd;
  end.new_end_ms = 1'700;
  ASSERT_EQ(Kind(store_->Update(end)), StepOutcome::Kind::kApplied);
  EXPECT_EQ(End("b1"), CalendarEndValue(1'700, 1));
  // No reason given: the end alone (readers then read the document).
  ASSERT_EQ(Kind(store_->Update(Keep("b1", 4, 0))), StepOutcome::Kind::kApplied);
  EXPECT_EQ(End("b1"), "1700");
  UpdateStep off = Keep("b1", 5, 1);
  off.calendar = UpdateStep::Calendar::kRemove;
  ASSERT_EQ(Kind(store_->Update(off)), StepOutcome::Kind::kApplied);
  EXPECT_EQ(End("b1"), "(nil)");
  ASSERT_EQ(Kind(store_->Update(Keep("b1", 6, 1))), StepOutcome::Kind::kApplied);  // off the calendar: stays off
  EXPECT_EQ(End("b1"), "(nil)");
  EXPECT_EQ(pool_->Command({"ZCARD", keys::Calendar(p_, "i1")})->integer, 0);
}

TEST_F(BusyReasonStoreTest, AKeepingUpdateWithTheCalendarOfTheWrongTypeWritesNothing) {
  ASSERT_EQ(Kind(store_->Create(Create("b1", 1'000, 2'000, 2))), StepOutcome::Kind::kApplied);
  ASSERT_FALSE(pool_->Command({"DEL", keys::Calendar(p_, "i1")})->is_error());
  ASSERT_FALSE(pool_->Command({"SET", keys::Calendar(p_, "i1"), "not a sorted set"})->is_error());
  const auto before = testing::Snapshot(*pool_);
  absl::Status status = store_->Update(Keep("b1", 1, 1)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_EQ(ErrorReason(status), "STORAGE_ERROR");
  EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
}

}  // namespace
}  // namespace labshare::booking
