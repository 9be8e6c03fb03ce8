// BookingService (ON_SITE) through real gRPC channels against a real
// redis-server, with a real inventory service in the same process; both
// share one fake clock.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <functional>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/archive/archive.h"
#include "services/booking/booking_service.h"
#include "services/booking/inventory_events.h"
#include "services/inventory/inventory_service.h"
#include "tests/booking/booking_fixture.h"
#include "tests/booking/booking_flows.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

namespace labshare::booking {
namespace {

TEST_F(BookingServiceTest, CreatesConfirmedBookingWithBufferAndEvents) {
  v1::Booking b;
  auto s = Book(absl::Hours(9), absl::Hours(11), &b, "r1");
  ASSERT_TRUE(s.ok()) << s.error_message() << " " << GrpcErrorReason(s);
  EXPECT_EQ(b.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(b.instrument_owner(), "organizations/owner");
  EXPECT_EQ(b.payer_organization(), "organizations/lab");
  EXPECT_EQ(b.payer_class(), labshare::type::v1::MEMBER);
  EXPECT_EQ(b.payer_tier(), "GENERAL");
  EXPECT_EQ(FromProto(b.blocked_interval().end_time()), day_ + absl::Hours(11) + absl::Minutes(30));
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);  // created straight into CONFIRMED: one event says both
  ASSERT_TRUE(events[0].has_booking_created());
  EXPECT_EQ(events[0].booking_created().booking().SerializeAsString(), b.SerializeAsString());
  EXPECT_EQ(events[0].header().request_id(), "r1");
  EXPECT_EQ(events[0].header().actor(), "users/ana");
}

// Booking.billing_terms: CreateBooking pins the billing rules of the mode's
// offering in force at creation (tem ON_SITE: ACTUAL_TIME, 15 min unit, no
// minimum, fees 5000 and 2500 bps); BookingCreated carries them; a later
// change of the rules, or the mode's withdrawal, leaves them as they were.
TEST_F(BookingServiceTest, CreateBookingPinsTheModesBillingTerms) {
  v1::Booking b;
  auto s = Book(absl::Hours(9), absl::Hours(11), &b, "pin-1");
  ASSERT_TRUE(s.ok()) << s.error_message() << " " << GrpcErrorReason(s);
  ASSERT_TRUE(b.has_billing_terms());
  EXPECT_EQ(b.billing_terms().billing_basis(), v1::BillingTerms::ACTUAL_TIME);
  EXPECT_EQ(FromProto(b.billing_terms().billing_unit()), absl::Minutes(15));
  EXPECT_EQ(FromProto(b.billing_terms().minimum_charge()), absl::ZeroDuration());
  EXPECT_EQ(b.billing_terms().missed_fee_bps(), 5000);
  EXPECT_EQ(b.billing_terms().late_cancel_fee_bps(), 2500);
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].booking_created().booking().billing_terms().SerializeAsString(),
            b.billing_terms().SerializeAsString());
  // validate_only answers them too.
  v1::CreateBookingRequest preview;
  preview.mutable_booking()->set_instrument("instruments/tem");
  preview.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *preview.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(13));
  *preview.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(14));
  preview.set_validate_only(true);
  v1::Booking previewed;
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, preview, &previewed, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(previewed.billing_terms().SerializeAsString(), b.billing_terms().SerializeAsString());
  // The rules change, then ON_SITE is withdrawn: the booking keeps its terms.
  const iv::Instrument tem = InventoryInstrument("tem");
  std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
  for (auto& m : modes) {
    if (m.mode() != labshare::type::v1::ON_SITE) continue;
    m.mutable_slot_rules()->set_billing_basis(iv::RESERVED_TIME);
    m.mutable_slot_rules()->set_missed_fee_bps(0);
    *m.mutable_slot_rules()->mutable_minimum_charge() = ToProto(absl::Hours(2));
  }
  OfferModes("tem", modes, "pin-rules-changed");
  v1::Booking later;
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(14), &later, "pin-2").ok());
  EXPECT_EQ(later.billing_terms().billing_basis(), v1::BillingTerms::RESERVED_TIME);
  EXPECT_EQ(later.billing_terms().missed_fee_bps(), 0);
  EXPECT_EQ(FromProto(later.billing_terms().minimum_charge()), absl::Hours(2));
  modes.erase(std::remove_if(modes.begin(), modes.end(),
                             [](const iv::ModeOffering& m) { return m.mode() == labshare::type::v1::ON_SITE; }),
              modes.end());
  OfferModes("tem", modes, "pin-no-on-site");
  v1::GetBookingRequest g;
  g.set_name(b.name());
  v1::Booking got;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &got, ana_).ok());
  EXPECT_EQ(got.billing_terms().SerializeAsString(), b.billing_terms().SerializeAsString());
}

// EventHeader.trace_id (types.proto: "Trace id of the request, for
// correlating logs"): every event carries the trace id of the call that
// made its change, the one the call's x-trace-id trailer names: a W3C
// traceparent's trace id, else the caller's x-trace-id, else one the server
// made up. A later call on the same booking publishes its own.
TEST_F(BookingServiceTest, EventsCarryTheTraceIdOfTheCallThatMadeThem) {
  auto trailer_of = [](const grpc::ClientContext& ctx) {
    const auto& md = ctx.GetServerTrailingMetadata();
    auto it = md.find("x-trace-id");
    return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
  };
  // Books [from, from + 1 h) sending `header: value` (none when empty).
  auto book = [&](absl::Duration from, const std::string& header, const std::string& value, std::string* trailer) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/ana");
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + from + absl::Hours(1));
    auto ctx = Ctx(ana_);
    if (!header.empty()) ctx->AddMetadata(header, value);
    v1::Booking b;
    grpc::Status s = stub_->CreateBooking(ctx.get(), r, &b);
    EXPECT_TRUE(s.ok()) << s.error_message();
    *trailer = trailer_of(*ctx);
    return b;
  };
  std::string w3c, own, made_up, zero_trace, odd;
  const v1::Booking a = book(absl::Hours(9), "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &w3c);
  const v1::Booking b = book(absl::Hours(11), "x-trace-id", "lab-script-42", &own);
  const v1::Booking c = book(absl::Hours(13), "", "", &made_up);
  // Unusable headers are ignored (the id travels to other organisations in
  // webhook payloads): an all-zero W3C trace id, an x-trace-id with spaces.
  book(absl::Hours(15), "traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", &zero_trace);
  book(absl::Hours(17), "x-trace-id", "a b\"c", &odd);
  EXPECT_EQ(w3c, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(own, "lab-script-42");
  for (const std::string* fresh : {&made_up, &zero_trace, &odd}) {
    ASSERT_EQ(fresh->size(), 32u) << *fresh;
    EXPECT_EQ(fresh->find_first_not_of("0123456789abcdef"), std::string::npos) << *fresh;
  }
  EXPECT_NE(zero_trace, std::string(32, '0'));

  v1::CancelBookingRequest cancel;
  cancel.set_name(a.name());
  auto ctx = Ctx(ana_);
  ctx->AddMetadata("x-trace-id", "cancel-from-console");
  v1::Booking cancelled;
  ASSERT_TRUE(stub_->CancelBooking(ctx.get(), cancel, &cancelled).ok());
  EXPECT_EQ(trailer_of(*ctx), "cancel-from-console");

  std::map<std::string, std::string> created, cancels;  // booking -> trace id
  for (const auto& e : Events()) {
    if (e.has_booking_created()) created[e.booking_created().booking().name()] = e.header().trace_id();
    if (e.has_booking_cancelled()) cancels[e.booking_cancelled().booking().name()] = e.header().trace_id();
  }
  EXPECT_EQ(created.size(), 5u);
  EXPECT_EQ(created[a.name()], w3c);
  EXPECT_EQ(created[b.name()], own);
  EXPECT_EQ(created[c.name()], made_up);
  EXPECT_EQ(cancels, (std::map<std::string, std::string>{{a.name(), "cancel-from-console"}}));
}

// A request_id belongs to its caller (types.proto): bob sending ana's
// request_id with the very same content (the user left to default to the
// caller) is REQUEST_ID_REUSED; he is never told of ana's booking, and
// nothing is booked for him.
TEST_F(BookingServiceTest, AnotherCallersSameRequestIsReused) {
  iv::GrantQualificationRequest g;
  g.set_instrument("instruments/tem");
  g.set_user("users/bob");
  Inv(&iv::InventoryService::Stub::GrantQualification, g);
  const std::string bob = Token("bob", "lab", {Role::kLabUser});
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
  r.set_request_id("shared-id");
  v1::Booking first, second;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &first, ana_).ok());
  EXPECT_EQ(first.user(), "users/ana");
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &second, bob);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  EXPECT_TRUE(second.name().empty());
  EXPECT_EQ(Events().size(), 1u);  // ana's booking only
  // ana's retry still gets her answer.
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &second, ana_).ok());
  EXPECT_EQ(second.SerializeAsString(), first.SerializeAsString());
}

TEST_F(BookingServiceTest, OverlapIsRejectedButTouchingAfterBufferFits) {
  v1::Booking a, b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &a).ok());
  auto s = Book(absl::Hours(11), absl::Hours(12), &b);  // inside a's 30 min buffer
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "SLOT_TAKEN");
  s = Book(absl::Hours(8), absl::Hours(9) + absl::Minutes(1), &b);  // its buffer reaches into a
  EXPECT_EQ(GrpcErrorReason(s), "SLOT_TAKEN");
  ASSERT_TRUE(Book(absl::Hours(11) + absl::Minutes(30), absl::Hours(12), &b).ok());  // [11:30, 12) touches
  ASSERT_TRUE(Book(absl::Hours(8), absl::Hours(8) + absl::Minutes(30), &b).ok());    // blocked to 9:00
  EXPECT_EQ(Events().size(), 3u);  // one per booking; rejected requests published nothing
}

TEST_F(BookingServiceTest, RetryReturnsFirstAnswerAndReuseIsRejected) {
  v1::Booking first, again;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &first, "same").ok());
  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &again, "same").ok());
  EXPECT_EQ(first.SerializeAsString(), again.SerializeAsString());
  auto s = Book(absl::Hours(13), absl::Hours(14), &again, "same");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  EXPECT_EQ(Events().size(), 1u);

  // The request id names the booking, and the booking holds the request's
  // record: no separate key, nothing that expires before the booking.
  const int p = keys::Partition("tem");
  EXPECT_EQ(first.name(), "bookings/" + DerivedBookingId(p, "CreateBooking", "same"));
  EXPECT_TRUE(pool_->Command({"KEYS", keys::Tag(p) + ":idem:*"})->elements.empty());

  // Once the booking has moved on, a retry still gets the first answer.
  v1::CancelBookingRequest c;
  c.set_name(first.name());
  v1::Booking cancelled;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &cancelled, ana_).ok());
  EXPECT_EQ(cancelled.state(), v1::Booking::CANCELLED);
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &again, "same").ok());
  EXPECT_EQ(first.SerializeAsString(), again.SerializeAsString());
  v1::GetBookingRequest g;
  g.set_name(first.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &again, ana_).ok());
  EXPECT_EQ(again.state(), v1::Booking::CANCELLED);  // reads see the booking as it is
  EXPECT_EQ(Events().size(), 2u);

  // Without a request id every call is a new booking with a random id.
  v1::Booking x, y;
  ASSERT_TRUE(Book(absl::Hours(15), absl::Hours(16), &x).ok());
  ASSERT_TRUE(Book(absl::Hours(17), absl::Hours(18), &y).ok());
  EXPECT_NE(x.name(), y.name());
}

TEST_F(BookingServiceTest, ClientsMayNotChooseIdsShapedLikeGeneratedOnes) {
  // The form whatever the two digits: p42 and p99 too (not partitions today).
  for (const std::string id : {"p03-0123456789ab", "p00-0123456789abcdef", "p42-0123456789ab", "p99-0123456789abcdef"}) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
    r.set_booking_id(id);
    v1::Booking b;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << id;
    EXPECT_NE(s.error_message().find("booking_id"), std::string::npos) << s.error_message();
  }
  // Other chosen ids are fine: the same shape without the "p" ...
  for (const std::string id : {"a12-0123456789ab", "x00-0123456789abcdef"}) {
    v1::CreateBookingRequest other;
    other.mutable_booking()->set_instrument("instruments/tem");
    other.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    *other.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
    *other.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
    other.set_booking_id(id);
    other.set_validate_only(true);
    v1::Booking previewed;
    grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, other, &previewed, ana_);
    EXPECT_TRUE(s.ok()) << id << ": " << GrpcErrorReason(s) << " " << s.error_message();
  }
  // ... and the "p03-" prefix.
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
  r.set_booking_id("p03-my-session");
  r.set_request_id("chosen");
  v1::Booking b;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_).ok());
  EXPECT_EQ(b.name(), "bookings/p03-my-session");
  v1::GetBookingRequest g;
  g.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &b, ana_).ok());
}

TEST_F(BookingServiceTest, ListingIsByStartThenIdAcrossPagesAndSurvivesTheIndexMigration) {
  // Every page of ListBookings(instrument) with page_size 1: names in order.
  auto list_all = [&] {
    std::vector<std::string> names;
    v1::ListBookingsRequest r;
    r.set_instrument("instruments/tem");
    r.set_page_size(1);
    for (int page = 0; page < 50; ++page) {
      v1::ListBookingsResponse resp;
      auto s = Call(stub_.get(), &v1::BookingService::Stub::ListBookings, r, &resp, admin_);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const auto& b : resp.bookings()) names.push_back(b.name());
      if (resp.next_page_token().empty()) break;
      r.set_page_token(resp.next_page_token());
    }
    return names;
  };
  // Three bookings at 9:00 (two cancelled, so the slot could be taken
  // again), one at 8:00 and one at 13:00.
  std::vector<std::string> at9;
  for (int i = 0; i < 3; ++i) {
    v1::Booking b;
    ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b, absl::StrCat("nine-", i)).ok());
    at9.push_back(b.name());
    if (i < 2) {
      v1::CancelBookingRequest c;
      c.set_name(b.name());
      ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &b, ana_).ok());
    }
  }
  v1::Booking early, late;
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(14), &late, "late").ok());
  ASSERT_TRUE(Book(absl::Hours(8), absl::Hours(8) + absl::Minutes(30), &early, "early").ok());
  std::sort(at9.begin(), at9.end());  // one start: by id
  std::vector<std::string> want = {early.name()};
  want.insert(want.end(), at9.begin(), at9.end());
  want.push_back(late.name());
  EXPECT_EQ(list_all(), want);

  // The same bookings in the older index layout move to the current one.
  const int p = keys::Partition("tem");
  auto entries = pool_->Command({"ZRANGE", keys::ByInstrument(p, "tem"), "0", "-1", "WITHSCORES"});
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->elements.size(), 10u);
  for (size_t i = 0; i < entries->elements.size(); i += 2) {
    const int64_t start = std::stoll(entries->elements[i + 1].str);
    ASSERT_TRUE(pool_->Command({"ZADD", keys::LegacyByInstrument(p, "tem"), "0",
                                keys::IndexMember(start, entries->elements[i].str)}).ok());
  }
  ASSERT_TRUE(pool_->Command({"DEL", keys::ByInstrument(p, "tem")}).ok());
  EXPECT_TRUE(list_all().empty());
  auto moved = store_->MigrateIndexes();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 5);
  EXPECT_EQ(list_all(), want);
  EXPECT_EQ(pool_->Command({"EXISTS", keys::LegacyByInstrument(p, "tem")})->integer, 0);
  moved = store_->MigrateIndexes();  // nothing left to move
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, 0);
}

TEST_F(BookingServiceTest, InventoryChangesReachTheCacheWhenPublishedNotWhenItExpires) {
  // A replica's cache whose entries would live an hour (the fixture's own
  // client caches nothing).
  InventoryClient cached(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  InventoryCacheWatcher watcher(pool_.get(), &cached);
  ASSERT_TRUE(watcher.Poll(absl::ZeroDuration()).ok());  // at the end of inventory's outbox
  auto q = cached.Qualification("instruments/tem", "users/ana");
  ASSERT_TRUE(q.ok() && *q != nullptr);
  EXPECT_FALSE((*q)->revoked());
  iv::RevokeQualificationRequest revoke;
  revoke.set_name("instruments/tem/qualifications/ana");
  revoke.set_reason("safety training lapsed");
  Inv(&iv::InventoryService::Stub::RevokeQualification, revoke);
  // The clock stands still, so nothing expires: until the watcher reads the
  // event the cache answers as before...
  q = cached.Qualification("instruments/tem", "users/ana");
  ASSERT_TRUE(q.ok() && *q != nullptr);
  EXPECT_FALSE((*q)->revoked());
  auto read = watcher.Poll(absl::ZeroDuration());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, 1);
  // ...and right after, it has the revocation.
  q = cached.Qualification("instruments/tem", "users/ana");
  ASSERT_TRUE(q.ok() && *q != nullptr);
  EXPECT_TRUE((*q)->revoked());
  read = watcher.Poll(absl::ZeroDuration());  // nothing new
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, 0);
  // Other events drop only what they name; one it cannot name empties the cache.
  ASSERT_TRUE(cached.Instrument("instruments/tem").ok());
  labshare::inventory::v1::InventoryEvent rate;
  rate.mutable_rate_created()->set_instrument("instruments/other");
  EXPECT_EQ(cached.Invalidate(rate), 0u);
  EXPECT_EQ(cached.Invalidate(labshare::inventory::v1::InventoryEvent()), 2u);  // instrument, qualification
  EXPECT_EQ(cached.Invalidate(labshare::inventory::v1::InventoryEvent()), 0u);
}

TEST_F(BookingServiceTest, AFacilitysNewOperatorApprovesItsInstrumentsBookingsAndCachesFollow) {
  InventoryClient cached(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  InventoryCacheWatcher watcher(pool_.get(), &cached);
  ASSERT_TRUE(watcher.Poll(absl::ZeroDuration()).ok());
  auto in = cached.Instrument("instruments/tem");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->operator_organization(), "organizations/owner");
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(24 + 9), &b).ok());
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);

  iv::CreateOrganizationRequest org;
  org.set_organization_id("runner");
  org.mutable_organization()->set_display_name("runner");
  org.mutable_organization()->set_type(iv::UNIVERSITY);
  org.mutable_organization()->set_membership_state(iv::MEMBER);
  org.mutable_organization()->set_tier("CORE");
  Inv(&iv::InventoryService::Stub::CreateOrganization, org);
  iv::CreateUserRequest rita;
  rita.set_user_id("rita");
  rita.mutable_user()->set_display_name("rita");
  rita.mutable_user()->set_organization("organizations/runner");
  rita.mutable_user()->add_roles(labshare::type::v1::FACILITY_STAFF);
  Inv(&iv::InventoryService::Stub::CreateUser, rita);
  const std::string runner_staff = Token("rita", "runner", {Role::kFacilityStaff});
  v1::ApproveBookingRequest approve;
  approve.set_name(b.name());
  v1::Booking out;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, runner_staff);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);  // not yet its operator

  iv::UpdateFacilityRequest hand_over;
  hand_over.mutable_facility()->set_name("facilities/fac");
  hand_over.mutable_facility()->set_operator_organization("organizations/runner");
  hand_over.mutable_update_mask()->add_paths("operator_organization");
  hand_over.set_request_id("hand-over-1");
  Inv(&iv::InventoryService::Stub::UpdateFacility, hand_over);
  // The replica's cache learns it from the outbox (org, user, facility,
  // and one event per instrument of the facility: tem and afm)...
  auto read = watcher.Poll(absl::ZeroDuration());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, 5);
  in = cached.Instrument("instruments/tem");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->operator_organization(), "organizations/runner");
  // ...and booking's scope checks use the new operator.
  s = Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, runner_staff);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(out.decision().decided_by(), "users/rita");
}

TEST_F(BookingServiceTest, AccessRulesAreCheckedBeforeTheSlot) {
  v1::Booking b;
  auto s = Book(absl::Hours(9), absl::Hours(10), &b, "", "users/bob");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "QUALIFICATION_MISSING");
  s = Book(absl::Hours(-47), absl::Hours(-46), &b);  // an hour from now: less than 2 h notice
  EXPECT_EQ(GrpcErrorReason(s), "INSUFFICIENT_NOTICE");
  s = Book(absl::Hours(9), absl::Hours(9) + absl::Minutes(10), &b);
  EXPECT_EQ(GrpcErrorReason(s), "BLOCK_TOO_SHORT");
  s = Book(absl::Hours(24 * 70), absl::Hours(24 * 70 + 1), &b);
  EXPECT_EQ(GrpcErrorReason(s), "BEYOND_HORIZON");
  EXPECT_EQ(Events().size(), 0u);
}

TEST_F(BookingServiceTest, LabUserBooksOnlyForThemselves) {
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  r.mutable_booking()->set_user("users/bob");
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
  v1::Booking b;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "USER_SCOPE");
}

TEST_F(BookingServiceTest, LongResidencyWaitsForOwnerApproval) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(24 + 9), &b).ok());
  EXPECT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  EXPECT_EQ(b.approval_reason(), v1::Booking::LONG_RESIDENCY);
  v1::Booking other;
  EXPECT_EQ(GrpcErrorReason(Book(absl::Hours(12), absl::Hours(13), &other)), "SLOT_TAKEN");  // held

  v1::ApproveBookingRequest approve;
  approve.set_name(b.name());
  v1::Booking out;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(out.decision().decided_by(), "users/sam");
  EXPECT_EQ(out.etag(), "2");
  s = Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_STATE");
  auto events = Events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_TRUE(events[1].has_booking_approved());
  EXPECT_TRUE(events[2].booking_confirmed().via_approval());
  // Events carry the booking as it is after the change.
  EXPECT_EQ(events[1].booking_approved().booking().etag(), "2");
  EXPECT_EQ(events[2].booking_confirmed().booking().state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(events[2].booking_confirmed().booking().decision().decided_by(), "users/sam");
}

TEST_F(BookingServiceTest, LateCancellationIsMarkedAndFreesTheSlot) {
  v1::Booking early, late, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &early).ok());
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &late).ok());
  v1::CancelBookingRequest c;
  c.set_name(early.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, ana_).ok());
  EXPECT_FALSE(out.late_cancellation());  // 33 h before start, notice is 24 h
  EXPECT_EQ(out.cancellation().initiator(), v1::Booking::BOOKER);
  clock_.Set(day_ + absl::Hours(12) - absl::Hours(23));
  c.set_name(late.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, ana_).ok());
  EXPECT_TRUE(out.late_cancellation());
  EXPECT_EQ(out.state(), v1::Booking::CANCELLED);
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_STATE");
  v1::Booking again;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &again).ok());  // slot free again
  auto events = Events();
  EXPECT_EQ(events.back().booking_created().booking().state(), v1::Booking::CONFIRMED);
  EXPECT_TRUE(events[events.size() - 2].booking_cancelled().late_cancellation());
}

TEST_F(BookingServiceTest, SessionRunsPastReservationOnlyUpToNextBooking) {
  v1::Booking first, next, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &first).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &next).ok());
  v1::CheckInRequest in;
  in.set_name(first.name());
  clock_.Set(day_ + absl::Hours(8));
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "CHECK_IN_TOO_EARLY");
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(5));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);
  EXPECT_EQ(FromProto(out.session().start_time()), day_ + absl::Hours(9) + absl::Minutes(5));
  clock_.Set(day_ + absl::Hours(11) + absl::Minutes(20));  // overran into the next booking
  v1::CheckOutRequest o;
  o.set_name(first.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckOut, o, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(out.session().end_time()), day_ + absl::Hours(11));
  EXPECT_TRUE(out.session().end_clamped());
  EXPECT_TRUE(Events().back().has_booking_checked_out());
}

TEST_F(BookingServiceTest, EarlyCheckOutCanReleaseTheRest) {
  v1::Booking b, out, later;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(13), &b).ok());
  v1::CheckInRequest in;
  in.set_name(b.name());
  clock_.Set(day_ + absl::Hours(9));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  v1::CheckOutRequest o;
  o.set_name(b.name());
  o.set_release_remaining(true);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckOut, o, &out, ana_).ok());
  EXPECT_TRUE(out.session().remaining_released());
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(10) + absl::Minutes(30));
  clock_.Set(day_ + absl::Hours(8));  // back before, to book the freed time with enough notice
  ASSERT_TRUE(Book(absl::Hours(10) + absl::Minutes(30), absl::Hours(12), &later).ok());
}

TEST_F(BookingServiceTest, AvailabilityShowsGapsWithBuffersTakenOff) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  ASSERT_TRUE(Book(absl::Hours(14), absl::Hours(15), &b).ok());
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(8));
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(18));
  v1::QueryAvailabilityResponse resp;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, ana_).ok());
  std::vector<std::pair<absl::Duration, absl::Duration>> free;
  for (const auto& f : resp.free_intervals()) {
    free.emplace_back(FromProto(f.start_time()) - day_, FromProto(f.end_time()) - day_);
  }
  using P = std::pair<absl::Duration, absl::Duration>;
  EXPECT_EQ(free, (std::vector<P>{{absl::Hours(8), absl::Hours(8) + absl::Minutes(30)},
                                  {absl::Hours(10) + absl::Minutes(30), absl::Hours(13) + absl::Minutes(30)},
                                  {absl::Hours(15) + absl::Minutes(30), absl::Hours(18)}}));
  EXPECT_EQ(resp.busy_intervals_size(), 2);
  EXPECT_TRUE(resp.busy_intervals(0).resource().empty());  // a lab user sees no names
}

TEST_F(BookingServiceTest, SweepMarksMissedAndExpiredBookings) {
  v1::Booking confirmed, pending, checked, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &confirmed).ok());
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(12 + 24), &pending).ok());  // residency: pending
  ASSERT_TRUE(Book(absl::Hours(40), absl::Hours(41), &checked).ok());
  ASSERT_EQ(pending.state(), v1::Booking::PENDING_APPROVAL);
  // The window is [opens, start + grace): a moment before its end still
  // open, at exactly start + grace closed and MISSED.
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15) - absl::Milliseconds(1));
  EXPECT_EQ(*manager_->Sweep(), 0);
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  EXPECT_EQ(*manager_->Sweep(), 1);
  v1::GetBookingRequest get;
  get.set_name(confirmed.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::MISSED);
  clock_.Set(day_ + absl::Hours(40));
  v1::CheckInRequest in;
  in.set_name(checked.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(48));
  EXPECT_EQ(*manager_->Sweep(), 1);  // the pending one; the checked-in one is not due
  get.set_name(pending.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::EXPIRED);
  EXPECT_EQ(*manager_->Sweep(), 0);
  int missed = 0, expired = 0;
  for (const auto& e : Events()) {
    missed += e.has_booking_missed();
    expired += e.has_booking_expired();
    if (e.has_booking_missed()) {
      EXPECT_EQ(e.header().actor(), "services/booking");
    }
  }
  EXPECT_EQ(missed, 1);
  EXPECT_EQ(expired, 1);
}

TEST_F(BookingServiceTest, SweepReadsEachInstrumentFromItsCursorAndStillDrainsTheOlderDueSet) {
  v1::Booking approved, older, out;
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(12 + 24), &approved).ok());  // residency: pending
  ASSERT_EQ(approved.state(), v1::Booking::PENDING_APPROVAL);
  v1::ApproveBookingRequest approve;
  approve.set_name(approved.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApproveBooking, approve, &out, staff_).ok());
  ASSERT_TRUE(Book(absl::Hours(40), absl::Hours(41), &older).ok());
  const int p = keys::Partition("tem");
  // Approved, it is due at start + grace like any confirmed booking (not a
  // moment before).
  clock_.Set(day_ + absl::Hours(12) + absl::Minutes(15) - absl::Milliseconds(1));
  EXPECT_EQ(*manager_->Sweep(), 0);
  // The cursor stays at or before the open booking (here: the look-back).
  EXPECT_EQ(pool_->Command({"HGET", keys::SweepCursors(p), "tem"})->str,
            std::to_string(absl::ToUnixMillis(clock_.Now() - absl::Hours(1))));
  clock_.Set(day_ + absl::Hours(12) + absl::Minutes(15));
  EXPECT_EQ(*manager_->Sweep(), 1);
  v1::GetBookingRequest get;
  get.set_name(approved.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::MISSED);
  // Nothing open: the cursor still trails the clock by the look-back.
  EXPECT_EQ(pool_->Command({"HGET", keys::SweepCursors(p), "tem"})->str,
            std::to_string(absl::ToUnixMillis(clock_.Now() - absl::Hours(1))));

  // A booking as an older version left it: in the due set only.
  ASSERT_TRUE(pool_->Command({"SREM", keys::SweepInstruments(p), "tem"}).ok());
  ASSERT_TRUE(pool_->Command({"ZADD", keys::Due(p),
                              std::to_string(absl::ToUnixMillis(day_ + absl::Hours(40) + absl::Minutes(15))),
                              older.name().substr(older.name().find('/') + 1)}).ok());
  clock_.Set(day_ + absl::Hours(40) + absl::Minutes(16));
  EXPECT_EQ(*manager_->Sweep(), 1);
  get.set_name(older.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::MISSED);
  EXPECT_EQ(pool_->Command({"ZCARD", keys::Due(p)})->integer, 0);
  EXPECT_EQ(*manager_->Sweep(), 0);
}

TEST_F(BookingServiceTest, MaintenanceWindowCancelsHitBookingsWithoutCharge) {
  v1::Booking hit, running, spared, out;
  ASSERT_TRUE(Book(absl::Hours(14), absl::Hours(15), &hit).ok());
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &running).ok());
  ASSERT_TRUE(Book(absl::Hours(16), absl::Hours(17), &spared).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(running.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  // An outage [11:00, 15:30) declared in inventory reaches booking as an event.
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15) + absl::Minutes(30));
  mw.mutable_maintenance_window()->set_reason("vacuum leak");
  mw.mutable_maintenance_window()->set_outage(true);
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  ConsumerOptions options;
  options.stream = "{inventory}:outbox";
  options.group = kInventoryEventsGroup;
  options.consumer = "test";
  options.block = absl::ZeroDuration();
  EventConsumer consumer(pool_.get(), options);
  ASSERT_TRUE(consumer.EnsureGroup().ok());
  auto handled = consumer.PollOnce(InventoryEventHandler(manager_.get()));
  ASSERT_TRUE(handled.ok()) << handled.status();
  EXPECT_GE(*handled, 1);

  v1::GetBookingRequest get;
  get.set_name(hit.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(out.cancelled_by_outage());
  EXPECT_FALSE(out.late_cancellation());
  EXPECT_EQ(out.cancellation().maintenance_window(), window.name());
  // The running session is checked out at the window start (see
  // booking_sessions_test.cc for the details).
  get.set_name(running.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(out.interrupted_by_outage());
  EXPECT_EQ(FromProto(out.session().end_time()), day_ + absl::Hours(11));
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(11));
  get.set_name(spared.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::CONFIRMED);

  v1::Booking blocked;
  auto s = Book(absl::Hours(13), absl::Hours(14), &blocked);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "MAINTENANCE_CONFLICT");

  // Applying again touches nothing.
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  EXPECT_EQ(result.cancelled_bookings_size(), 0);
  auto cancel = Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, ana_);
  EXPECT_EQ(cancel.error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // Once cancelled in inventory, the window leaves the calendar.
  iv::CancelMaintenanceWindowRequest cmw;
  cmw.set_name(window.name());
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CancelMaintenanceWindow, cmw, &window, admin_).ok());
  ASSERT_TRUE(consumer.PollOnce(InventoryEventHandler(manager_.get())).ok());
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(14), &blocked).ok());
  int outage_cancels = 0;
  for (const auto& e : Events()) outage_cancels += e.booking_cancelled().cancelled_by_outage();
  EXPECT_EQ(outage_cancels, 1);
}

class JointResearchTest : public BookingServiceTest {
 protected:
  // lab and owner share "proj" one third / two thirds, 3 h (`budget`) on tem
  // over days 2..4.
  v1::Project MakeProject(v1::Project::CostShareTemplate tmpl, std::vector<int> shares, grpc::Status* status,
                          const std::string& request_id = "", absl::Duration budget_hours = absl::Hours(3)) {
    v1::CreateProjectRequest r;
    r.set_project_id("proj");
    r.set_request_id(request_id);
    auto* pr = r.mutable_project();
    pr->set_title("Cryo-EM of membrane proteins");
    pr->set_cost_share_template(tmpl);
    const char* orgs[] = {"organizations/lab", "organizations/owner"};
    for (size_t i = 0; i < 2; ++i) {
      auto* part = pr->add_participants();
      part->set_organization(orgs[i]);
      part->set_share_bps(shares[i]);
    }
    *pr->mutable_period()->mutable_start_time() = ToProto(day_);
    *pr->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
    auto* budget = pr->add_instrument_budgets();
    budget->set_instrument("instruments/tem");
    *budget->mutable_budget() = ToProto(budget_hours);
    v1::Project out;
    *status = Call(stub_.get(), &v1::BookingService::Stub::CreateProject, r, &out, admin_);
    return out;
  }
  // labshare-archive of the year the project's period ends in, run on the
  // 2nd of January after it.
  absl::StatusOr<archive::ArchiveResult> ArchiveTheProjectsYear() {
    const int year = static_cast<int>(
        absl::ToCivilYear(day_ + absl::Hours(48) - absl::Milliseconds(1), absl::UTCTimeZone()).year());
    clock_.Set(absl::FromCivil(absl::CivilDay(year + 1, 1, 2), absl::UTCTimeZone()));
    archive::ArchiveOptions o;
    o.year = year;
    o.dir = absl::StrCat(::testing::TempDir(), "/booking_archive_", getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(o.dir);
    std::filesystem::create_directories(o.dir);
    o.clock = &clock_;
    auto r = archive::ArchiveYear(pool_.get(), o);
    std::filesystem::remove_all(o.dir);
    return r;
  }
  bool Exists(const std::string& key) { return pool_->Command({"EXISTS", key})->integer == 1; }
  // An UpdateProject of prj's budget on tem.
  v1::UpdateProjectRequest BudgetUpdate(const std::string& request_id, absl::Duration hours) {
    v1::UpdateProjectRequest r;
    r.set_request_id(request_id);
    r.mutable_project()->set_name("projects/proj");
    auto* budget = r.mutable_project()->add_instrument_budgets();
    budget->set_instrument("instruments/tem");
    *budget->mutable_budget() = ToProto(hours);
    r.mutable_update_mask()->add_paths("instrument_budgets");
    return r;
  }
  // The template project "proj" created (request "create-1"), then `update`
  // applied to it.
  void CreateThenUpdate(const v1::UpdateProjectRequest& update, v1::Project* updated) {
    grpc::Status s;
    MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, update, updated, admin_).ok());
  }
  grpc::Status BookJoint(absl::Duration from, absl::Duration to, v1::Booking* out,
                         const std::string& payer = "") {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    r.mutable_booking()->set_project("projects/proj");
    r.mutable_booking()->set_user("users/ana");
    r.mutable_booking()->set_payer_organization(payer);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    return Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, out, payer.empty() ? ana_ : admin_);
  }
  grpc::Status GetPrj(v1::Project* out, const std::string& caller) {
    v1::GetProjectRequest g;
    g.set_name("projects/proj");
    return Call(stub_.get(), &v1::BookingService::Stub::GetProject, g, out, caller);
  }
  v1::InstrumentBudget Budget() {
    v1::Project pr;
    EXPECT_TRUE(GetPrj(&pr, ana_).ok());
    return pr.instrument_budgets(0);
  }
};

// The index of the only call that succeeded (-1: none; two are a
// failure); `loser` checks each of the others.
int OnlyWinner(const std::vector<grpc::Status>& statuses, const std::function<void(int)>& loser) {
  int winner = -1;
  for (int i = 0; i < static_cast<int>(statuses.size()); ++i) {
    if (statuses[i].ok()) {
      EXPECT_EQ(winner, -1) << "calls " << winner << " and " << i << " both succeeded";
      winner = i;
    } else {
      loser(i);
    }
  }
  return winner;
}

TEST_F(JointResearchTest, SharesMustSumToExactlyTenThousand) {
  grpc::Status s;
  MakeProject(v1::Project::CUSTOM, {6000, 3000}, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "SHARES_NOT_10000");
  v1::Project p = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(p.participants(0).share_bps(), 3333);
  EXPECT_EQ(p.participants(1).share_bps(), 6667);
  EXPECT_EQ(p.instrument_budgets(0).instrument_owner(), "organizations/owner");
  EXPECT_EQ(p.state(), v1::Project::PLANNED);
}

TEST_F(JointResearchTest, EqualSplitOfTwo) {
  grpc::Status s;
  v1::Project p = MakeProject(v1::Project::EQUAL_SPLIT, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(p.participants(0).share_bps(), 5000);
  EXPECT_EQ(p.participants(1).share_bps(), 5000);
}

// A template project's stored shares are computed: an update that does not
// send participants keeps them computed (title alone), or computes them with
// the new template; participants sent with shares are still refused.
TEST_F(JointResearchTest, UpdatingATemplateProjectComputesItsSharesAgain) {
  grpc::Status s;
  const v1::Project created = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::UpdateProjectRequest r;
  r.mutable_project()->set_name(created.name());
  r.mutable_project()->set_title("Renamed");
  r.mutable_update_mask()->add_paths("title");
  v1::Project out;
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &out, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.title(), "Renamed");
  ASSERT_EQ(out.participants_size(), 2);
  EXPECT_EQ(out.participants(0).share_bps(), 3333);
  EXPECT_EQ(out.participants(1).share_bps(), 6667);

  r.Clear();
  r.mutable_project()->set_name(created.name());
  r.mutable_project()->set_cost_share_template(v1::Project::EQUAL_SPLIT);
  r.mutable_update_mask()->add_paths("cost_share_template");
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &out, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.cost_share_template(), v1::Project::EQUAL_SPLIT);
  EXPECT_EQ(out.participants(0).share_bps(), 5000);
  EXPECT_EQ(out.participants(1).share_bps(), 5000);

  r.Clear();
  r.mutable_project()->set_name(created.name());
  *r.mutable_project()->mutable_participants() = out.participants();  // shares 5000, 5000
  r.mutable_update_mask()->add_paths("participants");
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}

// UpdateProject names what it updates: an empty mask and a path that is not
// listed are INVALID_UPDATE_MASK, and the project stays as it was.
TEST_F(JointResearchTest, UpdateProjectRefusesAnEmptyOrUnknownMask) {
  grpc::Status s;
  const v1::Project created = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::UpdateProjectRequest r;
  r.mutable_project()->set_name(created.name());
  r.mutable_project()->set_title("Renamed");
  v1::Project out;
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_UPDATE_MASK");
  r.mutable_update_mask()->add_paths("name");
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_UPDATE_MASK");
  v1::GetProjectRequest g;
  g.set_name(created.name());
  s = Call(stub_.get(), &v1::BookingService::Stub::GetProject, g, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.title(), created.title());
  EXPECT_EQ(out.etag(), created.etag());
}

TEST_F(JointResearchTest, BookingsStayWithinPeriodParticipantsAndBudget) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Booking a, b, c, out;
  ASSERT_TRUE(BookJoint(absl::Hours(9), absl::Hours(11), &a).ok());
  EXPECT_EQ(a.cost_shares_size(), 2);
  EXPECT_EQ(a.billing_terms().billing_basis(), v1::BillingTerms::ACTUAL_TIME);  // the JOINT_RESEARCH rules
  EXPECT_EQ(a.billing_terms().missed_fee_bps(), 5000);
  EXPECT_EQ(a.cost_shares(1).organization(), "organizations/owner");
  EXPECT_EQ(a.cost_shares(1).share_bps(), 6667);
  EXPECT_EQ(GrpcErrorReason(BookJoint(absl::Hours(12), absl::Hours(14), &b)), "PROJECT_BUDGET_EXCEEDED");
  ASSERT_TRUE(BookJoint(absl::Hours(12), absl::Hours(13), &b).ok());  // exactly the 3 h
  EXPECT_EQ(GrpcErrorReason(BookJoint(absl::Hours(14), absl::Hours(14) + absl::Minutes(30), &c)),
            "PROJECT_BUDGET_EXCEEDED");
  EXPECT_EQ(GrpcErrorReason(BookJoint(absl::Hours(49), absl::Hours(50), &c)), "OUTSIDE_PROJECT_PERIOD");
  EXPECT_EQ(GrpcErrorReason(BookJoint(absl::Hours(15), absl::Hours(16), &c, "organizations/outsider")),
            "NOT_PROJECT_PARTICIPANT");
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(3));

  v1::CancelBookingRequest cancel;
  cancel.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, cancel, &out, ana_).ok());
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(2));

  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(a.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  v1::CheckOutRequest o;
  o.set_name(a.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckOut, o, &out, ana_).ok());
  auto budget = Budget();
  EXPECT_EQ(FromProto(budget.committed()), absl::ZeroDuration());
  EXPECT_EQ(FromProto(budget.used()), absl::Minutes(90));
}

// A project id is reserved in the step that creates the project, for good:
// a retry replays, any other request for the id is PROJECT_EXISTS (and
// leaves the project's counters alone), also once labshare-archive has
// removed the project's document.
TEST_F(JointResearchTest, AProjectIdIsReservedForGoodArchivedOrNot) {
  grpc::Status s;
  const v1::Project created = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  const auto reservation = pool_->Command({"HMGET", keys::ProjectIdReservation("proj"), "d", "v"});
  ASSERT_TRUE(reservation.ok());
  EXPECT_EQ(reservation->elements[0].str, "projects/proj");
  EXPECT_EQ(reservation->elements[1].str, "2");  // claimed (1), then written with the document
  clock_.Advance(absl::Minutes(1));
  v1::Project again = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), created.SerializeAsString());
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-2", absl::Hours(5));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  EXPECT_EQ(FromProto(Budget().budget()), absl::Hours(3));  // the refused create wrote no counter

  auto archived = ArchiveTheProjectsYear();
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_EQ(archived->projects, 1);
  EXPECT_FALSE(Exists(keys::Project("proj")));
  EXPECT_FALSE(Exists(keys::Budget(keys::Partition("tem"), "proj")));
  v1::Project gone;
  const grpc::Status not_found = GetPrj(&gone, admin_);
  EXPECT_EQ(GrpcErrorReason(not_found), "PROJECT_NOT_FOUND");
  EXPECT_NE(not_found.error_message().find("was archived"), std::string::npos) << not_found.error_message();
  v1::Booking booking;
  const grpc::Status booked = BookJoint(absl::Hours(30), absl::Hours(31), &booking);
  EXPECT_EQ(GrpcErrorReason(booked), "PROJECT_NOT_FOUND");
  EXPECT_NE(booked.error_message().find("was archived"), std::string::npos) << booked.error_message();
  // The id stays taken: no document, no counters for it.
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-3", absl::Hours(5));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);  // without a request id
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  EXPECT_FALSE(Exists(keys::Project("proj")));
  EXPECT_FALSE(Exists(keys::Budget(keys::Partition("tem"), "proj")));
  // The first request's retry still gets its answer.
  again = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), created.SerializeAsString());
}

// Concurrent creates of one new id with different budgets: one wins, and
// only the winner writes budget counters (a loser claimed nothing, so it
// cannot overwrite them); the losers write no event and no idempotency
// record.
TEST_F(JointResearchTest, ConcurrentCreatesOfOneIdLeaveTheWinnersBudget) {
  constexpr int kCreates = 8;
  std::vector<grpc::Status> statuses(kCreates);
  std::vector<v1::Project> created(kCreates);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCreates; ++i) {
    threads.emplace_back([&, i] {
      created[i] = MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &statuses[i],
                               absl::StrCat("race-", i), absl::Hours(i + 1));
    });
  }
  for (auto& t : threads) t.join();
  const int winner = OnlyWinner(statuses, [&](int i) {
    EXPECT_EQ(GrpcErrorReason(statuses[i]), "PROJECT_EXISTS") << statuses[i].error_message();
    EXPECT_FALSE(Exists(keys::ProjectIdempotency("CreateProject", absl::StrCat("race-", i))));
  });
  ASSERT_NE(winner, -1);
  EXPECT_EQ(FromProto(created[winner].instrument_budgets(0).budget()), absl::Hours(winner + 1));
  const auto counter = pool_->Command({"HGET", keys::Budget(keys::Partition("tem"), "proj"), "tem:budget"});
  ASSERT_TRUE(counter.ok());
  EXPECT_EQ(counter->str, std::to_string(absl::ToInt64Milliseconds(absl::Hours(winner + 1))));
  EXPECT_EQ(FromProto(Budget().budget()), absl::Hours(winner + 1));
  EXPECT_EQ(pool_->Command({"XLEN", keys::ProjectOutbox()})->integer, 1);
  EXPECT_TRUE(Exists(keys::ProjectIdempotency("CreateProject", absl::StrCat("race-", winner))));
}

// Concurrent updates of one project version with different budgets: one
// wins, the counters hold its budget (a conflicted update writes none, and
// no late write of an older version overwrites a newer one).
TEST_F(JointResearchTest, ConcurrentUpdatesLeaveTheWinnersBudget) {
  grpc::Status s;
  const v1::Project created = MakeProject(v1::Project::CUSTOM, {5000, 5000}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  constexpr int kUpdates = 8;
  std::vector<grpc::Status> statuses(kUpdates);
  std::vector<v1::Project> updated(kUpdates);
  std::vector<std::thread> threads;
  for (int i = 0; i < kUpdates; ++i) {
    threads.emplace_back([&, i] {
      v1::UpdateProjectRequest r;
      r.set_request_id(absl::StrCat("update-", i));
      r.mutable_project()->set_name(created.name());
      r.mutable_project()->set_etag(created.etag());
      auto* budget = r.mutable_project()->add_instrument_budgets();
      budget->set_instrument("instruments/tem");
      *budget->mutable_budget() = ToProto(absl::Hours(10 + i));
      r.mutable_update_mask()->add_paths("instrument_budgets");
      statuses[i] = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &updated[i], admin_);
    });
  }
  for (auto& t : threads) t.join();
  const int winner = OnlyWinner(statuses, [&](int i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::ABORTED) << statuses[i].error_message();
    const std::string reason = GrpcErrorReason(statuses[i]);
    EXPECT_TRUE(reason == "CONCURRENT_MODIFICATION" || reason == "ETAG_MISMATCH") << reason;
  });
  ASSERT_NE(winner, -1);
  EXPECT_EQ(updated[winner].etag(), "2");
  EXPECT_EQ(FromProto(Budget().budget()), absl::Hours(10 + winner));
  const auto version =
      pool_->Command({"HGET", keys::Budget(keys::Partition("tem"), "proj"), "tem:budget_version"});
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(version->str, "2");
}

// A create that crashed after claiming the id (its claim holds the
// reservation, no document): only the same request_id resumes it.
TEST_F(JointResearchTest, AClaimedIdResumesOnlyForItsRequest) {
  ASSERT_TRUE(pool_->Command({"HSET", keys::ProjectIdReservation("proj"), "v", "1", "d",
                              "claim:" + keys::ProjectIdempotency("CreateProject", "create-1")})
                  .ok());
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-2", absl::Hours(5));
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  // Only a claim holds the id: the message does not speak of a project.
  EXPECT_NE(s.error_message().find("another request is creating a project with this id, or a create of it failed"),
            std::string::npos)
      << s.error_message();
  EXPECT_EQ(s.error_message().find("has or had"), std::string::npos) << s.error_message();
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  EXPECT_FALSE(Exists(keys::Budget(keys::Partition("tem"), "proj")));
  v1::Project none;
  const grpc::Status missing = GetPrj(&none, admin_);
  EXPECT_EQ(GrpcErrorReason(missing), "PROJECT_NOT_FOUND");
  EXPECT_EQ(missing.error_message().find("archived"), std::string::npos) << missing.error_message();
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(FromProto(Budget().budget()), absl::Hours(3));
  EXPECT_EQ(pool_->Command({"HGET", keys::ProjectIdReservation("proj"), "d"})->str, "projects/proj");
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-2", absl::Hours(5));
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  EXPECT_NE(s.error_message().find("a project has or had this id"), std::string::npos) << s.error_message();
}

// A claim resumed by its request_id (after a crash past the budget write,
// here with another budget, as after the record's window) writes its own
// budget over the crashed attempt's: the counters follow the document.
TEST_F(JointResearchTest, AResumedClaimReplacesTheBudgetOfItsCrashedAttempt) {
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  ASSERT_TRUE(pool_->Command({"HSET", keys::ProjectIdReservation("proj"), "v", "1", "d",
                              "claim:" + keys::ProjectIdempotency("CreateProject", "create-1")})
                  .ok());
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:budget", std::to_string(absl::ToInt64Milliseconds(absl::Hours(3))),
                              "tem:budget_version", "1"})
                  .ok());
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1", absl::Hours(5));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(FromProto(Budget().budget()), absl::Hours(5));
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget"})->str,
            std::to_string(absl::ToInt64Milliseconds(absl::Hours(5))));
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget_version"})->str, "1");
  v1::Booking b;
  EXPECT_TRUE(BookJoint(absl::Hours(9), absl::Hours(13), &b).ok());
}

// An UpdateProject whose counters never followed its commit (the process
// died in between and nobody retried): the next booking of the project
// writes them from the document, at its version, and is held to the new
// budget.
TEST_F(JointResearchTest, ABookingBringsCountersBehindTheDocumentUpToDate) {
  const v1::UpdateProjectRequest r = BudgetUpdate("update-1", absl::Hours(5));
  v1::Project updated;
  ASSERT_NO_FATAL_FAILURE(CreateThenUpdate(r, &updated));
  EXPECT_EQ(updated.etag(), "2");
  // The counters as the crash left them: version 1's budget.
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:budget", std::to_string(absl::ToInt64Milliseconds(absl::Hours(3))),
                              "tem:budget_version", "1"})
                  .ok());
  v1::Booking b, c;
  ASSERT_TRUE(BookJoint(absl::Hours(9), absl::Hours(13), &b).ok());  // 4 h of the new 5 h
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget"})->str,
            std::to_string(absl::ToInt64Milliseconds(absl::Hours(5))));
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget_version"})->str, "2");
  EXPECT_EQ(GrpcErrorReason(BookJoint(absl::Hours(14), absl::Hours(16), &c)), "PROJECT_BUDGET_EXCEEDED");
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(4));
}

// A preview (validate_only) of a booking whose project's counters lag its
// document (an UpdateProject whose counter write never landed) writes
// nothing, and judges the budget as the request does once it has brought
// the counters up to the document: a raised budget admits what the stale
// counters would refuse, a lowered one refuses what they would admit.
TEST_F(JointResearchTest, APreviewJudgesCountersBehindTheDocumentByTheDocument) {
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  const auto preview = [&](absl::Duration from, absl::Duration to) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    r.mutable_booking()->set_project("projects/proj");
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_validate_only(true);
    v1::Booking out;
    return Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &out, ana_);
  };
  const auto stale = [&](absl::Duration budget) {  // the counters as version 1 left them
    ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:budget", std::to_string(absl::ToInt64Milliseconds(budget)),
                                "tem:budget_version", "1"})
                    .ok());
  };
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1", absl::Hours(10));
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Booking b;
  ASSERT_TRUE(BookJoint(absl::Hours(1), absl::Hours(9), &b).ok());  // 8 h committed
  // Raised 10 h -> 40 h; the counters still say 10 h.
  v1::Project updated;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, BudgetUpdate("raise", absl::Hours(40)),
                   &updated, admin_)
                  .ok());
  ASSERT_NO_FATAL_FAILURE(stale(absl::Hours(10)));
  s = preview(absl::Hours(10), absl::Hours(15));  // 5 h: over the stale 2 h left, within the 32 h
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget_version"})->str, "1");  // nothing written
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget"})->str,
            std::to_string(absl::ToInt64Milliseconds(absl::Hours(10))));
  // Lowered 40 h -> 10 h (version 3); the counters still say 40 h.
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, BudgetUpdate("lower", absl::Hours(10)),
                   &updated, admin_)
                  .ok());
  ASSERT_EQ(updated.etag(), "3");
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:budget", std::to_string(absl::ToInt64Milliseconds(absl::Hours(40))),
                              "tem:budget_version", "2"})
                  .ok());
  s = preview(absl::Hours(10), absl::Hours(15));  // 5 h: within the stale 32 h left, over the 2 h
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_BUDGET_EXCEEDED");
  // The request itself answers as its preview did.
  v1::Booking c;
  s = BookJoint(absl::Hours(10), absl::Hours(15), &c);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_BUDGET_EXCEEDED");
  EXPECT_EQ(pool_->Command({"HGET", counters, "tem:budget_version"})->str, "3");
  // And, raised again with the counters behind, the preview and the request admit it.
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, BudgetUpdate("raise-2", absl::Hours(40)),
                   &updated, admin_)
                  .ok());
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:budget", std::to_string(absl::ToInt64Milliseconds(absl::Hours(10))),
                              "tem:budget_version", "3"})
                  .ok());
  s = preview(absl::Hours(10), absl::Hours(15));
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  s = BookJoint(absl::Hours(10), absl::Hours(15), &c);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(13));
}

// A retry of an UpdateProject after the project was archived answers the
// update it recorded but writes no counters: the archived project's went
// with it.
TEST_F(JointResearchTest, AnUpdateRetriedAfterTheArchivalWritesNoCounters) {
  const v1::UpdateProjectRequest r = BudgetUpdate("update-1", absl::Hours(5));
  v1::Project updated;
  ASSERT_NO_FATAL_FAILURE(CreateThenUpdate(r, &updated));
  auto archived = ArchiveTheProjectsYear();
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_EQ(archived->projects, 1);
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  EXPECT_FALSE(Exists(counters));
  v1::Project again;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, &again, admin_).ok());
  EXPECT_EQ(again.etag(), "2");
  EXPECT_FALSE(Exists(counters));
}

// A project created before reservations (its document alone holds the id):
// CreateProject refuses the id, and labshare-archive writes the reservation
// in the step that removes the document.
TEST_F(JointResearchTest, AProjectOfAnOlderVersionKeepsItsIdThroughItsArchival) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(pool_->Command({"DEL", keys::ProjectIdReservation("proj")})->integer, 1);
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-2", absl::Hours(5));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  EXPECT_EQ(FromProto(Budget().budget()), absl::Hours(3));
  EXPECT_FALSE(Exists(keys::ProjectIdReservation("proj")));

  auto archived = ArchiveTheProjectsYear();
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_EQ(archived->projects, 1);
  EXPECT_FALSE(Exists(keys::Project("proj")));
  EXPECT_TRUE(Exists(keys::ProjectIdReservation("proj")));
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-3");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
}

// A reservation still holding a claim next to the committed document (the
// retry of a crashed claim committed by a replica of the previous version):
// labshare-archive writes it in its committed form, so that the claim's
// owner retrying with its request_id (its record expired) cannot claim the
// id again once the document is gone.
TEST_F(JointResearchTest, ArchivalCommitsAReservationLeftAsAClaim) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string idem = keys::ProjectIdempotency("CreateProject", "create-1");
  ASSERT_TRUE(pool_->Command({"HSET", keys::ProjectIdReservation("proj"), "v", "1", "d", "claim:" + idem}).ok());
  ASSERT_EQ(pool_->Command({"DEL", idem})->integer, 1);

  auto archived = ArchiveTheProjectsYear();
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_EQ(archived->projects, 1);
  EXPECT_FALSE(Exists(keys::Project("proj")));
  EXPECT_EQ(pool_->Command({"HGET", keys::ProjectIdReservation("proj"), "d"})->str, "projects/proj");
  EXPECT_EQ(pool_->Command({"HGET", keys::ProjectIdReservation("proj"), "v"})->str, "2");
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s, "create-1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_EXISTS");
  EXPECT_FALSE(Exists(keys::Project("proj")));
}

class LeaseTest : public BookingFlowsTest {};

TEST_F(LeaseTest, WholeLifecycleWithEarlyReturnAndDamageBeyondDeposit) {
  v1::Lease lease, out;
  ASSERT_TRUE(Request(1, 11, &lease).ok());
  EXPECT_EQ(lease.state(), v1::Lease::REQUESTED);
  EXPECT_EQ(lease.lessee_organization(), "organizations/lab");
  EXPECT_EQ(FromProto(lease.blocked_interval().start_time()), day_);  // 1 day handover
  EXPECT_EQ(FromProto(lease.blocked_interval().end_time()), day_ + absl::Hours(24 * 13));  // 2 days return
  v1::Booking b = BookingOf(lease);
  EXPECT_EQ(b.mode(), labshare::type::v1::LEASE);
  EXPECT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  EXPECT_EQ(b.approval_reason(), v1::Booking::LEASE_CONTRACT);
  EXPECT_EQ(b.lease(), lease.name());
  EXPECT_FALSE(b.has_billing_terms());  // priced from the lease contract

  v1::CancelBookingRequest cb;
  cb.set_name(b.name());
  v1::Booking bo;
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, cb, &bo, ana_)),
            "USE_LEASE_METHODS");
  v1::ApproveLeaseRequest self;
  self.set_name(lease.name());
  EXPECT_EQ(Call(stub_.get(), &v1::BookingService::Stub::ApproveLease, self, &out, ana_).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Approve(lease.name(), &out).ok());
  EXPECT_EQ(out.state(), v1::Lease::APPROVED);
  EXPECT_EQ(out.contract().approved_by(), "users/sam");
  EXPECT_EQ(BookingOf(lease).state(), v1::Booking::CONFIRMED);

  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip set new, no scratches");
  clock_.Set(day_ - absl::Hours(1));
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::RecordHandover, h, &out, staff_)),
            "HANDOVER_WINDOW");
  clock_.Set(day_ + absl::Hours(24 * 1));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::HANDED_OVER);
  EXPECT_EQ(BookingOf(lease).state(), v1::Booking::CHECKED_IN);

  clock_.Set(day_ + absl::Hours(24 * 6));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("stage scratched");
  ret.mutable_damage_amount()->set_currency_code("CNY");
  ret.mutable_damage_amount()->set_amount_minor(150000);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::RETURNED);
  EXPECT_TRUE(out.return_record().early_return());
  EXPECT_EQ(FromProto(out.term().end_time()), day_ + absl::Hours(24 * 6));
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(24 * 8));
  v1::Booking done = BookingOf(lease);
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(done.session().end_time()), day_ + absl::Hours(24 * 6));

  v1::CloseLeaseRequest close;
  close.set_name(lease.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CloseLease, close, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::CLOSED);
  EXPECT_EQ(out.settlement().deposit_applied().amount_minor(), 100000);
  EXPECT_EQ(out.settlement().deposit_released().amount_minor(), 0);
  EXPECT_EQ(out.settlement().damage_outstanding().amount_minor(), 50000);

  std::vector<std::string> kinds;
  for (const auto& e : Events()) {
    if (e.has_lease_requested()) kinds.push_back("requested");
    if (e.has_lease_approved()) kinds.push_back("approved");
    if (e.has_lease_handed_over()) kinds.push_back("handed_over");
    if (e.has_lease_returned()) kinds.push_back("returned");
    if (e.has_lease_closed()) {
      kinds.push_back("closed");
      EXPECT_EQ(e.lease_closed().lease().settlement().damage_outstanding().amount_minor(), 50000);
    }
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"requested", "approved", "handed_over", "returned", "closed"}));
}

TEST_F(LeaseTest, TermRulesAndCalendarAreEnforced) {
  v1::Lease a, b, out;
  EXPECT_EQ(GrpcErrorReason(Request(1, 4, &a)), "LEASE_TERM_TOO_SHORT");
  EXPECT_EQ(GrpcErrorReason(Request(1, 70, &a)), "LEASE_TERM_TOO_LONG");
  ASSERT_TRUE(Request(1, 11, &a).ok());
  EXPECT_EQ(GrpcErrorReason(Request(12, 20, &b)), "SLOT_TAKEN");  // handover buffer hits a's return buffer
  ASSERT_TRUE(Request(14, 22, &b).ok());                           // [13, 24) after a's [0, 13)
  ASSERT_TRUE(Approve(a.name(), &out).ok());
  v1::ExtendLeaseRequest ext;
  ext.set_name(a.name());
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 12));
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::ExtendLease, ext, &out, staff_)),
            "SLOT_TAKEN");
  v1::CancelLeaseRequest cancel;
  cancel.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelLease, cancel, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Lease::CANCELLED);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ExtendLease, ext, &out, staff_).ok());
  EXPECT_EQ(out.extensions_size(), 1);
  EXPECT_EQ(FromProto(out.term().end_time()), day_ + absl::Hours(24 * 12));
  EXPECT_EQ(FromProto(BookingOf(a).blocked_interval().end_time()), day_ + absl::Hours(24 * 14));
}

TEST_F(LeaseTest, OutageCancelsLeaseNotYetHandedOver) {
  v1::Lease a, out;
  ASSERT_TRUE(Request(1, 11, &a).ok());
  ASSERT_TRUE(Approve(a.name(), &out).ok());
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/afm");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 3));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 4));
  mw.mutable_maintenance_window()->set_reason("recalibration");
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  EXPECT_EQ(result.cancelled_leases_size(), 1);
  v1::GetLeaseRequest g;
  g.set_name(a.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetLease, g, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Lease::CANCELLED);
  EXPECT_TRUE(out.cancelled_by_outage());
  EXPECT_TRUE(BookingOf(a).cancelled_by_outage());
}

TEST_F(BookingServiceTest, SearchFindsInstrumentsOfACategoryWithFreeTime) {
  // tem (electron-microscopy, ON_SITE) is busy 9:00-17:00; afm offers no ON_SITE.
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(17), &b).ok());
  v1::SearchAvailableInstrumentsRequest q;
  q.set_category("electron-microscopy");
  *q.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(10));
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(20));
  v1::SearchAvailableInstrumentsResponse resp;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, q, &resp, ana_).ok());
  EXPECT_EQ(resp.instruments_size(), 0);  // not free for the whole range
  *q.mutable_min_duration() = ToProto(absl::Hours(2));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, q, &resp, ana_).ok());
  ASSERT_EQ(resp.instruments_size(), 1);
  EXPECT_EQ(resp.instruments(0).instrument(), "instruments/tem");
  EXPECT_EQ(resp.instruments(0).owner_organization(), "organizations/owner");
  ASSERT_EQ(resp.instruments(0).free_intervals_size(), 1);
  EXPECT_EQ(FromProto(resp.instruments(0).free_intervals(0).start_time()), day_ + absl::Hours(17) + absl::Minutes(30));
  EXPECT_EQ(FromProto(resp.instruments(0).free_intervals(0).end_time()), day_ + absl::Hours(20));
  *q.mutable_min_duration() = ToProto(absl::Hours(3));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, q, &resp, ana_).ok());
  EXPECT_EQ(resp.instruments_size(), 0);  // only 2.5 h left
  q.clear_category();
  EXPECT_EQ(Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, q, &resp, ana_).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BookingServiceTest, TechnicalServiceRunsAreBookedThroughTheirOrder) {
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  v1::Booking b;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, staff_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "MODE_FIELDS_MISMATCH");
}

class ServiceOrderTest : public BookingFlowsTest {};

TEST_F(ServiceOrderTest, QuoteIsComputedAndMustBeAcceptedAsSeen) {
  v1::ServiceOrder o = Order3(), out;
  EXPECT_EQ(o.state(), v1::ServiceOrder::REQUESTED);
  EXPECT_EQ(o.client_organization(), "organizations/lab");
  EXPECT_EQ(o.payer_class(), labshare::type::v1::MEMBER);
  EXPECT_EQ(Quote(o.name(), &out, ana_).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Quote(o.name(), &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::QUOTED);
  EXPECT_EQ(out.quote().total().amount_minor(), 3 * 20000 + 30000 + 5000);
  v1::AcceptQuoteRequest a;
  a.set_name(o.name());
  a.set_quote_etag("not-the-quote");
  EXPECT_EQ(Call(stub_.get(), &v1::BookingService::Stub::AcceptQuote, a, &out, ana_).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Quote(o.name(), &out, staff_).ok());  // re-quote: a new quote etag
  a.set_quote_etag(out.quote().quote_etag());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::AcceptQuote, a, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::QUOTE_ACCEPTED);
  v1::ReceiveSamplesRequest rs;
  rs.set_name(o.name());
  rs.set_received_sample_count(2);
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::ReceiveSamples, rs, &out, staff_)),
            "SAMPLE_COUNT_MISMATCH");
}

TEST_F(ServiceOrderTest, RunReportDisputeAndAcceptance) {
  v1::ServiceOrder o = Scheduled(), out;
  ASSERT_EQ(o.state(), v1::ServiceOrder::SCHEDULED);
  v1::GetBookingRequest g;
  g.set_name(o.booking());
  v1::Booking run;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &run, admin_).ok());
  EXPECT_EQ(run.mode(), labshare::type::v1::TECHNICAL_SERVICE);
  EXPECT_EQ(run.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(run.operator_user(), "users/sam");
  EXPECT_EQ(run.payer_organization(), "organizations/lab");
  EXPECT_EQ(run.sample_count(), 3);
  v1::Booking clash;
  EXPECT_EQ(GrpcErrorReason(Book(absl::Hours(10), absl::Hours(12), &clash)), "SLOT_TAKEN");

  clock_.Set(day_ + absl::Hours(9));
  v1::StartServiceRequest start;
  start.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  v1::DeliverReportRequest d;
  d.set_name(o.name());
  d.mutable_report()->set_uri("dms://reports/1");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::DeliverReport, d, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::REPORT_DELIVERED);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &run, admin_).ok());
  EXPECT_EQ(run.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(run.session().end_time()) - FromProto(run.session().start_time()), absl::Minutes(90));

  v1::DisputeReportRequest dispute;
  dispute.set_name(o.name());
  dispute.set_reason("grid 2 missing");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::DisputeReport, dispute, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::DISPUTED);
  d.mutable_report()->set_uri("dms://reports/2");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::DeliverReport, d, &out, staff_).ok());
  EXPECT_EQ(out.reports_size(), 2);
  v1::AcceptReportRequest accept;
  accept.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::AcceptReport, accept, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::COMPLETED);
  int accepted = 0;
  for (const auto& e : Events()) {
    if (e.has_service_order_report_accepted()) {
      ++accepted;
      EXPECT_EQ(e.service_order_report_accepted().service_order().quote().total().amount_minor(), 95000);
    }
  }
  EXPECT_EQ(accepted, 1);
}

TEST_F(ServiceOrderTest, OutageUnschedulesTheRun) {
  v1::ServiceOrder o = Scheduled(), out;
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(10));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  mw.mutable_maintenance_window()->set_reason("power cut");
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  ASSERT_EQ(result.unscheduled_orders_size(), 1);
  v1::GetServiceOrderRequest g;
  g.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetServiceOrder, g, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_TRUE(out.booking().empty());
  v1::GetBookingRequest gb;
  gb.set_name(o.booking());
  v1::Booking run;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, gb, &run, admin_).ok());
  EXPECT_EQ(run.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(run.cancelled_by_outage());
}

TEST_F(ServiceOrderTest, LateCancellationOfAScheduledRunFreesTheSlot) {
  v1::ServiceOrder o = Scheduled(), out;
  clock_.Set(day_ + absl::Hours(9) - absl::Hours(2));  // inside the 24 h notice
  v1::CancelOrderRequest c;
  c.set_name(o.name());
  c.set_reason("project stopped");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelOrder, c, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::CANCELLED);
  EXPECT_EQ(out.cancelled_in_state(), v1::ServiceOrder::SCHEDULED);
  EXPECT_TRUE(out.late_cancellation());
  v1::Booking again;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &again).ok());
}

TEST_F(ServiceOrderTest, RescheduleMovesTheRunInOneStepAndCreateBookingBooksRuns) {
  v1::ServiceOrder o = Scheduled(), out;
  const std::string first = o.booking();
  // Move [9:00, 11:00) to [10:00, 12:00): overlaps its own old slot only.
  v1::ScheduleServiceRequest sch;
  sch.set_name(o.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(10));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  sch.set_booking_id("run-two");
  sch.set_request_id("move");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ScheduleService, sch, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::SCHEDULED);
  EXPECT_EQ(out.booking(), "bookings/run-two");
  EXPECT_EQ(FromProto(out.scheduled_interval().start_time()), day_ + absl::Hours(10));
  v1::ServiceOrder again;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ScheduleService, sch, &again, staff_).ok());
  EXPECT_EQ(again.SerializeAsString(), out.SerializeAsString());  // a retry moves nothing more
  v1::GetBookingRequest get;
  get.set_name(first);
  v1::Booking old;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &old, staff_).ok());
  EXPECT_EQ(old.state(), v1::Booking::CANCELLED);
  EXPECT_EQ(old.cancellation().initiator(), v1::Booking::PARENT_RESOURCE);  // its order was rescheduled
  EXPECT_FALSE(old.late_cancellation());
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(8), absl::Hours(9) + absl::Minutes(30), &b).ok());  // the old slot is free
  EXPECT_EQ(GrpcErrorReason(Book(absl::Hours(11), absl::Hours(13), &b)), "SLOT_TAKEN");  // the new one is not
  int cancelled = 0;
  std::string previous;
  for (const auto& e : Events()) {
    cancelled += e.has_booking_cancelled() && e.booking_cancelled().booking().name() == first;
    if (e.has_service_order_scheduled()) previous = e.service_order_scheduled().previous_booking();
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_EQ(previous, first);

  // CreateBooking with mode TECHNICAL_SERVICE is ScheduleService for an
  // order in SAMPLES_RECEIVED; a scheduled one is not moved by it
  // (ORDER_STATE), its run is cancelled first.
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  r.mutable_booking()->set_service_order(o.name());
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(14));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, staff_)),
            "ORDER_STATE");
  v1::CancelBookingRequest unschedule;
  unschedule.set_name(out.booking());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, unschedule, &b, staff_).ok());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, staff_).ok());
  EXPECT_EQ(b.mode(), labshare::type::v1::TECHNICAL_SERVICE);
  EXPECT_EQ(b.service_order(), o.name());
  EXPECT_EQ(b.operator_user(), "users/sam");
  EXPECT_FALSE(b.has_billing_terms());  // priced from the order's quote
  EXPECT_EQ(b.payer_organization(), "organizations/lab");
  EXPECT_EQ(b.state(), v1::Booking::CONFIRMED);
  v1::StartServiceRequest start;
  start.set_name(o.name());
  clock_.Set(day_ + absl::Hours(14));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::StartService, start, &out, staff_).ok());
  // A running service is not moved.
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(20));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(21));
  sch.clear_booking_id();
  sch.set_request_id("late-move");
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::ScheduleService, sch, &out, staff_)),
            "ORDER_STATE");
}


// ================================================================ quotas

class QuotaTest : public BookingServiceTest {
 protected:
  grpc::Status SetQuota(v1::Quota::Period period, absl::Duration allowance, v1::Quota::Enforcement e,
                        v1::Quota* out, const std::string& request_id = "", const std::string& etag = "") {
    v1::SetQuotaRequest r;
    r.mutable_quota()->set_organization("organizations/lab");
    r.mutable_quota()->set_instrument("instruments/tem");
    r.mutable_quota()->set_period(period);
    *r.mutable_quota()->mutable_allowance() = ToProto(allowance);
    r.mutable_quota()->set_enforcement(e);
    r.mutable_quota()->set_etag(etag);
    r.set_request_id(request_id);
    return Call(stub_.get(), &v1::BookingService::Stub::SetQuota, r, out, admin_);
  }
  v1::QuotaUsage Usage(const std::string& quota, absl::Time at, const std::string& token = "") {
    v1::GetQuotaUsageRequest r;
    r.set_quota(quota);
    *r.mutable_time() = ToProto(at);
    v1::QuotaUsage out;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::GetQuotaUsage, r, &out, token.empty() ? ana_ : token);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  grpc::Status Cancel(const std::string& name) {
    v1::CancelBookingRequest c;
    c.set_name(name);
    v1::Booking out;
    return Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, ana_);
  }
};

// day_ is Sunday 2027-01-03 00:00Z. Asia/Shanghai weeks run Monday 00:00
// +08:00, so this week ends at day_ + 16 h and the next starts there.
TEST_F(QuotaTest, HardLimitCountsPerWeekInItsTimeZoneAndFreesOnCancel) {
  v1::Quota q;
  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(3), v1::Quota::HARD_LIMIT, &q).ok());
  EXPECT_EQ(q.name(), "quotas/tem.lab.week");
  EXPECT_EQ(q.time_zone(), "Asia/Shanghai");
  EXPECT_EQ(q.etag(), "1");
  v1::Booking a, b, c, next;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &a).ok());
  ASSERT_EQ(a.quota_charges_size(), 1);
  EXPECT_EQ(a.quota_charges(0).quota(), "quotas/tem.lab.week");
  EXPECT_EQ(FromProto(a.quota_charges(0).period_interval().start_time()), day_ - absl::Hours(24 * 6 + 8));
  EXPECT_EQ(FromProto(a.quota_charges(0).period_interval().end_time()), day_ + absl::Hours(16));
  const size_t events = Events().size();
  auto s = Book(absl::Hours(12), absl::Hours(14), &b);  // 2 h + 2 h > 3 h
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "QUOTA_EXCEEDED");
  EXPECT_EQ(Events().size(), events);  // nothing written
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &b).ok());  // exactly 3 h
  ASSERT_TRUE(Book(absl::Hours(16), absl::Hours(18), &next).ok());  // Monday in Shanghai: a new week
  EXPECT_EQ(FromProto(next.quota_charges(0).period_interval().start_time()), day_ + absl::Hours(16));
  EXPECT_EQ(GrpcErrorReason(Book(absl::Hours(14), absl::Hours(15), &c)), "QUOTA_EXCEEDED");

  v1::QuotaUsage u = Usage(q.name(), day_);
  EXPECT_EQ(FromProto(u.committed()), absl::Hours(3));
  EXPECT_EQ(FromProto(u.used()), absl::ZeroDuration());
  EXPECT_EQ(FromProto(u.remaining()), absl::ZeroDuration());
  EXPECT_EQ(FromProto(Usage(q.name(), day_ + absl::Hours(16)).committed()), absl::Hours(2));
  ASSERT_TRUE(Cancel(b.name()).ok());
  EXPECT_EQ(FromProto(Usage(q.name(), day_).remaining()), absl::Hours(1));
  ASSERT_TRUE(Book(absl::Hours(14), absl::Hours(15), &c).ok());
}

TEST_F(QuotaTest, RequireApprovalMakesTheOverrunWaitForTheOwner) {
  v1::Quota q;
  ASSERT_TRUE(SetQuota(v1::Quota::MONTH, absl::Hours(1), v1::Quota::REQUIRE_APPROVAL, &q).ok());
  v1::Booking within, over, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &within).ok());
  EXPECT_EQ(within.state(), v1::Booking::CONFIRMED);
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(14), &over, "over").ok());
  EXPECT_EQ(over.state(), v1::Booking::PENDING_APPROVAL);
  EXPECT_EQ(over.approval_reason(), v1::Booking::OVER_QUOTA);
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(14), &out, "over").ok());  // a retry: the first answer
  EXPECT_EQ(out.SerializeAsString(), over.SerializeAsString());
  v1::QuotaUsage u = Usage(q.name(), day_);
  EXPECT_EQ(FromProto(u.committed()), absl::Hours(3));
  EXPECT_EQ(FromProto(u.remaining()), -absl::Hours(2));
  EXPECT_EQ(u.enforcement(), v1::Quota::REQUIRE_APPROVAL);
  v1::RejectBookingRequest reject;
  reject.set_name(over.name());
  reject.set_reason("over the allocation");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::RejectBooking, reject, &out, staff_).ok());
  EXPECT_EQ(FromProto(Usage(q.name(), day_).committed()), absl::Hours(1));
  int created = 0, created_confirmed = 0, confirmed = 0;
  for (const auto& e : Events()) {
    created += e.has_booking_created();
    created_confirmed += e.booking_created().booking().state() == v1::Booking::CONFIRMED;
    confirmed += e.has_booking_confirmed();
  }
  EXPECT_EQ(created, 2);
  EXPECT_EQ(created_confirmed, 1);  // the over-quota booking was never confirmed
  EXPECT_EQ(confirmed, 0);
}

TEST_F(QuotaTest, CompletedAndMissedBookingsCountAsUsed) {
  v1::Quota q;
  ASSERT_TRUE(SetQuota(v1::Quota::YEAR, absl::Hours(100), v1::Quota::HARD_LIMIT, &q).ok());
  v1::Booking done, missed, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &done).ok());
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(14), &missed).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(done.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  v1::CheckOutRequest co;
  co.set_name(done.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckOut, co, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::COMPLETED);
  clock_.Set(day_ + absl::Hours(15));
  EXPECT_EQ(*manager_->Sweep(), 1);
  v1::QuotaUsage u = Usage(q.name(), day_);
  EXPECT_EQ(FromProto(u.used()), absl::Hours(3));  // reserved time: 2 h completed + 1 h missed
  EXPECT_EQ(FromProto(u.committed()), absl::ZeroDuration());
  EXPECT_EQ(FromProto(u.remaining()), absl::Hours(97));
  EXPECT_EQ(FromProto(u.period_interval().start_time()), absl::FromCivil(absl::CivilYear(2027), absl::FixedTimeZone(8 * 3600)));
}

TEST_F(QuotaTest, AnotherReplicaSeesANewQuotaAtOnce) {
  // A second manager on the same Redis caches "no quotas" first.
  BookingManager other(store_.get(), inv_client_.get(), &clock_, testing::TestPageTokens());
  Principal ana;
  ana.user_id = "ana";
  ana.organization_id = "lab";
  ana.roles = {Role::kLabUser};
  auto request = [&](absl::Duration from, absl::Duration to) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    return r;
  };
  ASSERT_TRUE(other.CreateBooking(ana, request(absl::Hours(6), absl::Hours(7))).ok());
  v1::Quota q;
  // The hour booked before counts (SetQuota charges it): one hour is left.
  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(2), v1::Quota::HARD_LIMIT, &q).ok());
  auto b = other.CreateBooking(ana, request(absl::Hours(9), absl::Hours(10)));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->quota_charges_size(), 1);
  auto refused = other.CreateBooking(ana, request(absl::Hours(12), absl::Hours(13)));
  EXPECT_EQ(ErrorReason(refused.status()), "QUOTA_EXCEEDED");
  // Deleted: the other replica stops counting at once too.
  v1::DeleteQuotaRequest del;
  del.set_name(q.name());
  google::protobuf::Empty none;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::DeleteQuota, del, &none, admin_).ok());
  auto free = other.CreateBooking(ana, request(absl::Hours(12), absl::Hours(13)));
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_EQ(free->quota_charges_size(), 0);
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::DeleteQuota, del, &none, admin_)),
            "QUOTA_NOT_FOUND");
}

TEST_F(QuotaTest, SettingQuotasIsValidatedIdempotentAndForAdminsOnly) {
  v1::Quota q, again;
  v1::SetQuotaRequest r;
  r.mutable_quota()->set_organization("organizations/lab");
  r.mutable_quota()->set_instrument("instruments/tem");
  r.mutable_quota()->set_period(v1::Quota::WEEK);
  *r.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(1));
  r.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  auto s = Call(stub_.get(), &v1::BookingService::Stub::SetQuota, r, &q, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ROLE_NOT_ALLOWED");
  auto bad = r;
  *bad.mutable_quota()->mutable_allowance() = ToProto(-absl::Hours(1));
  s = Call(stub_.get(), &v1::BookingService::Stub::SetQuota, bad, &q, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  bad = r;
  bad.mutable_quota()->set_time_zone("Mars/Olympus");
  EXPECT_EQ(Call(stub_.get(), &v1::BookingService::Stub::SetQuota, bad, &q, admin_).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Quota.time_zone: IANA names only (the zone library also takes these).
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00", "/usr/share/zoneinfo/Asia/Shanghai"}) {
    bad = r;
    bad.mutable_quota()->set_time_zone(zone);
    s = Call(stub_.get(), &v1::BookingService::Stub::SetQuota, bad, &q, admin_);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << zone;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << zone;
  }
  bad = r;
  bad.mutable_quota()->set_enforcement(v1::Quota::ENFORCEMENT_UNSPECIFIED);
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::SetQuota, bad, &q, admin_)), "INVALID_FIELD");
  bad = r;
  bad.mutable_quota()->set_instrument("instruments/nope");
  s = Call(stub_.get(), &v1::BookingService::Stub::SetQuota, bad, &q, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GrpcErrorReason(s), "INSTRUMENT_NOT_FOUND");

  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(1), v1::Quota::HARD_LIMIT, &q, "set-1").ok());
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(1), v1::Quota::HARD_LIMIT, &again, "set-1").ok());
  EXPECT_EQ(again.SerializeAsString(), q.SerializeAsString());
  EXPECT_EQ(GrpcErrorReason(SetQuota(v1::Quota::WEEK, absl::Hours(5), v1::Quota::HARD_LIMIT, &again, "set-1")),
            "REQUEST_ID_REUSED");
  s = SetQuota(v1::Quota::WEEK, absl::Hours(5), v1::Quota::HARD_LIMIT, &again, "", "7");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(5), v1::Quota::HARD_LIMIT, &again, "", "1").ok());
  EXPECT_EQ(again.etag(), "2");
  EXPECT_EQ(again.create_time().seconds(), q.create_time().seconds());
  EXPECT_EQ(FromProto(again.allowance()), absl::Hours(5));
  ASSERT_TRUE(SetQuota(v1::Quota::MONTH, absl::Hours(9), v1::Quota::REQUIRE_APPROVAL, &q).ok());

  v1::ListQuotasRequest list;
  v1::ListQuotasResponse listed;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, ana_).ok());
  ASSERT_EQ(listed.quotas_size(), 2);
  EXPECT_EQ(listed.quotas(0).name(), "quotas/tem.lab.week");
  EXPECT_EQ(listed.quotas(1).name(), "quotas/tem.lab.month");
  list.set_page_size(1);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_).ok());
  ASSERT_EQ(listed.quotas_size(), 1);
  ASSERT_FALSE(listed.next_page_token().empty());
  list.set_page_token(listed.next_page_token());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_).ok());
  ASSERT_EQ(listed.quotas_size(), 1);
  EXPECT_EQ(listed.quotas(0).name(), "quotas/tem.lab.month");
  EXPECT_TRUE(listed.next_page_token().empty());
  // Another organisation's member sees none of them, and may not ask.
  const std::string outsider = Token("olga", "owner", {Role::kLabUser});
  v1::ListQuotasRequest all;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, all, &listed, outsider).ok());
  EXPECT_EQ(listed.quotas_size(), 0);
  all.set_organization("organizations/lab");
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, all, &listed, outsider)),
            "ORGANIZATION_SCOPE");
  v1::GetQuotaUsageRequest usage;
  usage.set_quota("quotas/tem.lab.week");
  v1::QuotaUsage u;
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::GetQuotaUsage, usage, &u, outsider)),
            "ORGANIZATION_SCOPE");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetQuotaUsage, usage, &u, staff_).ok());  // owner staff
  usage.set_quota("quotas/tem.lab.fortnight");
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::GetQuotaUsage, usage, &u, admin_)),
            "INVALID_NAME");
  int set = 0;
  for (const auto& e : Events()) set += e.has_quota_set();
  EXPECT_EQ(set, 3);
}

// A page token is good only for the list, the filters and the caller it was
// issued to, and only as issued; a negative page size is refused.
TEST_F(QuotaTest, PageTokenRefusedOnAnotherListForgedOrFromAnotherCaller) {
  v1::Quota q;
  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(5), v1::Quota::HARD_LIMIT, &q).ok());
  ASSERT_TRUE(SetQuota(v1::Quota::MONTH, absl::Hours(9), v1::Quota::HARD_LIMIT, &q).ok());
  v1::ListQuotasRequest list;
  list.set_page_size(1);
  v1::ListQuotasResponse first, listed;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &first, admin_).ok());
  ASSERT_FALSE(first.next_page_token().empty());
  auto expect_refused = [](const grpc::Status& s) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_PAGE_TOKEN");
    EXPECT_NE(s.error_message().find("without page_token"), std::string::npos) << s.error_message();
  };
  // Another list with the same (empty) filters.
  v1::ListProjectsRequest projects;
  projects.set_page_token(first.next_page_token());
  v1::ListProjectsResponse none;
  expect_refused(Call(stub_.get(), &v1::BookingService::Stub::ListProjects, projects, &none, admin_));
  // Edited by the client, or made up.
  list.set_page_token(testing::ForgePageToken(first.next_page_token()));
  ASSERT_FALSE(list.page_token().empty());
  expect_refused(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_));
  list.set_page_token("bm90LWEtdG9rZW4");
  expect_refused(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_));
  // Another caller with the administrator's token.
  list.set_page_token(first.next_page_token());
  expect_refused(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed,
                      Token("audra", "", {Role::kAuditor})));
  // The token's own caller continues.
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_).ok());
  ASSERT_EQ(listed.quotas_size(), 1);
  EXPECT_EQ(listed.quotas(0).name(), "quotas/tem.lab.month");

  list.clear_page_token();
  list.set_page_size(-1);
  const grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}

// ================================================================ contract audit (bookings, projects, quotas)

// UpdateProject: a participant that pays for a holding booking of the
// project stays (PARTICIPANT_HAS_BOOKINGS), and the period stays around the
// holding bookings (BOOKINGS_OUTSIDE_PERIOD); nothing is written. Once the
// booking is cancelled, both updates go through.
TEST_F(JointResearchTest, UpdatesKeepTheHoldingBookingsPayerAndPeriod) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Booking held, out;
  ASSERT_TRUE(BookJoint(absl::Hours(9), absl::Hours(11), &held).ok());  // paid by lab
  v1::UpdateProjectRequest drop;
  drop.mutable_project()->set_name("projects/proj");
  for (const char* org : {"organizations/outsider", "organizations/owner"}) {
    drop.mutable_project()->add_participants()->set_organization(org);
  }
  drop.mutable_update_mask()->add_paths("participants");
  v1::UpdateProjectRequest shrink;
  shrink.mutable_project()->set_name("projects/proj");
  *shrink.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_ + absl::Hours(12));
  *shrink.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
  shrink.mutable_update_mask()->add_paths("period");
  v1::Project pr;
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, drop, &pr, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "PARTICIPANT_HAS_BOOKINGS");
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, shrink, &pr, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKINGS_OUTSIDE_PERIOD");
  ASSERT_TRUE(GetPrj(&pr, admin_).ok());
  EXPECT_EQ(pr.etag(), "1");
  EXPECT_EQ(pr.participants(0).organization(), "organizations/lab");
  EXPECT_EQ(FromProto(pr.period().start_time()), day_);

  v1::CancelBookingRequest cancel;
  cancel.set_name(held.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, cancel, &out, ana_).ok());
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, drop, &pr, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(pr.participants(0).organization(), "organizations/outsider");
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, shrink, &pr, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(pr.period().start_time()), day_ + absl::Hours(12));
}

// CreateProject with fewer than two participants is
// TEMPLATE_PARTICIPANT_COUNT; ListProjects refuses an inverted time_range
// (INVALID_INTERVAL), an unspecified state (INVALID_FIELD) and a
// participant that is not an organisation's name (INVALID_NAME).
TEST_F(JointResearchTest, ProjectRequestsFailWithTheContractsReasons) {
  v1::CreateProjectRequest r;
  r.set_project_id("solo");
  r.mutable_project()->set_title("Alone");
  auto* part = r.mutable_project()->add_participants();
  part->set_organization("organizations/lab");
  part->set_share_bps(10000);
  *r.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
  *r.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
  r.mutable_project()->add_instrument_budgets()->set_instrument("instruments/tem");
  *r.mutable_project()->mutable_instrument_budgets(0)->mutable_budget() = ToProto(absl::Hours(3));
  v1::Project pr;
  grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CreateProject, r, &pr, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "TEMPLATE_PARTICIPANT_COUNT");

  v1::ListProjectsRequest list;
  v1::ListProjectsResponse listed;
  *list.mutable_time_range()->mutable_start_time() = ToProto(day_ + absl::Hours(1));
  *list.mutable_time_range()->mutable_end_time() = ToProto(day_);
  s = Call(stub_.get(), &v1::BookingService::Stub::ListProjects, list, &listed, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_INTERVAL");
  list.clear_time_range();
  list.add_states(v1::Project::STATE_UNSPECIFIED);
  s = Call(stub_.get(), &v1::BookingService::Stub::ListProjects, list, &listed, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  list.clear_states();
  list.set_participant("lab");
  s = Call(stub_.get(), &v1::BookingService::Stub::ListProjects, list, &listed, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_NAME");
}

// CancelBooking of a technical-service run is for owner staff only (the
// client cancels the order); it unschedules the run: the booking is
// CANCELLED, its slot free, and the order back in SAMPLES_RECEIVED, ready to
// be scheduled again. A retry answers the same.
TEST_F(ServiceOrderTest, CancellingTheRunUnschedulesItsOrder) {
  v1::ServiceOrder o = Scheduled(), out;
  v1::CancelBookingRequest c;
  c.set_name(o.booking());
  c.set_reason("the operator is ill");
  c.set_request_id("cancel-run");
  v1::Booking run, again;
  grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &run, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  s = Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &run, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(run.state(), v1::Booking::CANCELLED);
  EXPECT_EQ(run.cancellation().initiator(), v1::Booking::OWNER_STAFF);
  EXPECT_FALSE(run.late_cancellation());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &again, staff_).ok());
  EXPECT_EQ(again.state(), v1::Booking::CANCELLED);
  v1::GetServiceOrderRequest g;
  g.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetServiceOrder, g, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_TRUE(out.booking().empty());
  int unscheduled = 0;
  for (const auto& e : Events()) {
    unscheduled += e.has_service_order_unscheduled() && e.service_order_unscheduled().cancelled_booking() == run.name();
  }
  EXPECT_EQ(unscheduled, 1);
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());  // the run's slot is free
  v1::ScheduleServiceRequest sch;
  sch.set_name(o.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(12));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(13));
  s = Call(stub_.get(), &v1::BookingService::Stub::ScheduleService, sch, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::ServiceOrder::SCHEDULED);
  // An administrator acts for the owner.
  c.set_name(out.booking());
  c.set_request_id("");
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &run, admin_).ok());
  EXPECT_EQ(run.cancellation().initiator(), v1::Booking::PLATFORM_ADMIN);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetServiceOrder, g, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
}

// CheckIn admits the booking's user for ON_SITE and JOINT_RESEARCH only: the
// client of a technical-service run may not check it in (USER_SCOPE).
TEST_F(ServiceOrderTest, TheClientDoesNotCheckTheRunIn) {
  v1::ServiceOrder o = Scheduled();
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(o.booking());
  v1::Booking b;
  const grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &b, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "USER_SCOPE");
  v1::GetBookingRequest g;
  g.set_name(o.booking());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &b, staff_).ok());
  EXPECT_EQ(b.state(), v1::Booking::CONFIRMED);
}

// Check-in opens at the later of (reserved start - buffer) and the end of
// the previous booking's blocked interval.
TEST_F(BookingServiceTest, CheckInOpensAfterThePreviousBookingsBlockedInterval) {
  v1::Booking first, second, out;
  ASSERT_TRUE(Book(absl::Hours(6), absl::Hours(8) + absl::Minutes(45), &first).ok());  // blocked until 9:15
  ASSERT_TRUE(Book(absl::Hours(9) + absl::Minutes(15), absl::Hours(11), &second).ok());
  v1::CheckInRequest in;
  in.set_name(second.name());
  clock_.Set(day_ + absl::Hours(9));  // start - buffer has passed, the first booking's buffer has not
  const grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "CHECK_IN_TOO_EARLY");
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);
}

// ListQuotas is ordered by organisation name, then instrument, then period,
// also where one id is a prefix of another ("lab" before "lab-two"), and
// pages follow that order.
TEST_F(QuotaTest, ListedByOrganisationThenInstrumentAcrossPages) {
  iv::CreateOrganizationRequest org;
  org.set_organization_id("lab-two");
  org.mutable_organization()->set_display_name("lab-two");
  org.mutable_organization()->set_type(iv::UNIVERSITY);
  org.mutable_organization()->set_membership_state(iv::MEMBER);
  org.mutable_organization()->set_tier("GENERAL");
  Inv(&iv::InventoryService::Stub::CreateOrganization, org);
  v1::Quota q;
  v1::SetQuotaRequest r;
  r.mutable_quota()->set_organization("organizations/lab-two");
  r.mutable_quota()->set_instrument("instruments/tem");
  r.mutable_quota()->set_period(v1::Quota::WEEK);
  *r.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(2));
  r.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::SetQuota, r, &q, admin_).ok());
  ASSERT_TRUE(SetQuota(v1::Quota::WEEK, absl::Hours(5), v1::Quota::HARD_LIMIT, &q).ok());
  // The names on one page of `list` (as the administrator); its next page.
  v1::ListQuotasRequest list;
  auto page = [&]() {
    v1::ListQuotasResponse listed;
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, list, &listed, admin_).ok());
    std::vector<std::string> names;
    for (const auto& quota : listed.quotas()) names.push_back(quota.name());
    list.set_page_token(listed.next_page_token());
    return names;
  };
  using Names = std::vector<std::string>;
  EXPECT_EQ(page(), (Names{"quotas/tem.lab.week", "quotas/tem.lab-two.week"}));
  list.set_page_size(1);
  EXPECT_EQ(page(), (Names{"quotas/tem.lab.week"}));
  EXPECT_EQ(page(), (Names{"quotas/tem.lab-two.week"}));
  EXPECT_TRUE(list.page_token().empty());
}

// CreateBooking with validate_only runs every check of a create: a taken
// booking_id is BOOKING_EXISTS and hours beyond the project's remaining
// budget are PROJECT_BUDGET_EXCEEDED, as without validate_only; nothing is
// written either way.
TEST_F(JointResearchTest, ValidateOnlyChecksTheIdAndTheBudget) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::CreateBookingRequest r;
  r.set_booking_id("joint-slot");
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
  r.mutable_booking()->set_project("projects/proj");
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(13));  // 4 h > 3 h
  r.set_validate_only(true);
  v1::Booking b;
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "PROJECT_BUDGET_EXCEEDED");
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_TRUE(b.name().empty());
  r.set_validate_only(false);
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_).ok());
  EXPECT_EQ(b.name(), "bookings/joint-slot");
  // The same id at another time: taken.
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(14));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  r.set_validate_only(true);
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_EXISTS");
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(2));
}

// A maintenance window [from, to) after day_ on tem, applied by `caller`.
class MaintenanceAuditTest : public BookingServiceTest {
 protected:
  iv::MaintenanceWindow ApplyWindow(absl::Duration from, absl::Duration to, bool outage,
                                    const std::string& caller, v1::ApplyMaintenanceWindowResponse* result) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/tem");
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason(outage ? "chiller failure" : "alignment");
    mw.mutable_maintenance_window()->set_outage(outage);
    iv::MaintenanceWindow window;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window.name());
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, result, caller).ok());
    return window;
  }
};

// ApplyMaintenanceWindow checks a running session out at the window start
// with interrupted_by_outage; session.auto_checked_out is the sweep's mark
// ("the sweep checked the session out because nobody did") and stays unset.
TEST_F(MaintenanceAuditTest, AnOutageInterruptsASessionWithoutTheSweepsMark) {
  v1::Booking running, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &running).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(running.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  v1::ApplyMaintenanceWindowResponse result;
  ApplyWindow(absl::Hours(11), absl::Hours(13), true, staff_, &result);
  ASSERT_EQ(result.interrupted_bookings_size(), 1);
  v1::GetBookingRequest get;
  get.set_name(running.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, get, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(out.interrupted_by_outage());
  EXPECT_EQ(FromProto(out.session().end_time()), day_ + absl::Hours(11));
  EXPECT_FALSE(out.session().auto_checked_out());
}

// A mode that is no sharing mode is INVALID_FIELD for QueryAvailability (it
// was MODE_NOT_OFFERED, which is about an instrument) as for
// SearchAvailableInstruments.
TEST_F(BookingServiceTest, AvailabilityRefusesAModeThatIsNoSharingMode) {
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(8));
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(18));
  q.set_mode(static_cast<labshare::type::v1::SharingMode>(42));
  v1::QueryAvailabilityResponse free;
  grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &free, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  v1::SearchAvailableInstrumentsRequest search;
  search.set_category("electron-microscopy");
  *search.mutable_range() = q.range();
  search.set_mode(q.mode());
  v1::SearchAvailableInstrumentsResponse found;
  s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, search, &found, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}


// ================================================================ second audit (CreateBooking)

// Item 6: "A retry with the same request_id and the same content returns the
// first answer", also once the project has moved on (here: the paying
// organisation left it), with and without a chosen booking_id.
TEST_F(JointResearchTest, ARetryGetsItsFirstAnswerWhateverBecameOfTheProject) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto joint = [&](int from, const std::string& request_id, const std::string& booking_id) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    r.mutable_booking()->set_project("projects/proj");
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(from));
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(from + 1));
    r.set_request_id(request_id);
    r.set_booking_id(booking_id);
    return r;
  };
  v1::Booking derived, chosen, again, out;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, joint(9, "jr-1", ""), &derived, ana_).ok());
  ASSERT_TRUE(
      Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, joint(11, "jr-2", "joint-b"), &chosen, ana_).ok());
  for (const auto* b : {&derived, &chosen}) {
    v1::CancelBookingRequest cancel;
    cancel.set_name(b->name());
    ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, cancel, &out, ana_).ok());
  }
  v1::UpdateProjectRequest drop;
  drop.mutable_project()->set_name("projects/proj");
  for (const char* org : {"organizations/outsider", "organizations/owner"}) {
    drop.mutable_project()->add_participants()->set_organization(org);
  }
  drop.mutable_update_mask()->add_paths("participants");
  v1::Project pr;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, drop, &pr, admin_).ok());
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, joint(9, "jr-1", ""), &again, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), derived.SerializeAsString());
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, joint(11, "jr-2", "joint-b"), &again, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), chosen.SerializeAsString());
  // A new request is held to the project as it is now.
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, joint(13, "jr-3", ""), &out,
                                 ana_)),
            "NOT_PROJECT_PARTICIPANT");
}

// Item 7: a role's organisation scope is "checked before validation"
// (types.proto): a LAB_USER naming another paying organisation is
// ORGANIZATION_SCOPE even when the request is invalid too.
TEST_F(BookingServiceTest, ALabUsersOtherPayerIsRefusedBeforeValidation) {
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  r.mutable_booking()->set_payer_organization("organizations/owner");
  v1::Booking b;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  r.set_booking_id("Not An Id");
  s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  // Before the mode is validated too (it got INVALID_FIELD, MODE_FIELDS_MISMATCH
  // or INSTRUMENT_NOT_FOUND first), ON_SITE and JOINT_RESEARCH alike.
  r.clear_booking_id();
  const auto refused = [&](const v1::CreateBookingRequest& req, const std::string& what) {
    grpc::Status refusal = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, req, &b, ana_);
    ExpectGrpcError(refusal, grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", what);
  };
  v1::CreateBookingRequest no_mode = r;
  no_mode.mutable_booking()->clear_mode();
  refused(no_mode, "no mode");
  v1::CreateBookingRequest mismatch = r;
  mismatch.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);  // without its project
  refused(mismatch, "JOINT_RESEARCH without a project");
  v1::CreateBookingRequest missing = r;
  missing.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
  missing.mutable_booking()->set_project("projects/prj");
  missing.mutable_booking()->set_instrument("instruments/ghost");
  refused(missing, "an instrument that does not exist");
  // Nor is the instrument's name looked at first: a LAB_USER's scope does
  // not depend on it (it was INVALID_NAME booking.instrument).
  v1::CreateBookingRequest unnamed = r;
  unnamed.mutable_booking()->set_instrument("Not A Name");
  refused(unnamed, "a malformed instrument");
  unnamed.mutable_booking()->clear_instrument();
  refused(unnamed, "no instrument");
  unnamed.mutable_booking()->clear_payer_organization();
  unnamed.mutable_booking()->set_user("users/bo");  // someone else
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, unnamed, &b, ana_),
                  grpc::StatusCode::PERMISSION_DENIED, "USER_SCOPE", "another user, no instrument");
  // A technical service's run is owner staff's (ScheduleService's roles):
  // a LAB_USER hears ROLE_NOT_ALLOWED before the run's fields are checked.
  v1::CreateBookingRequest run = r;
  run.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, run, &b, ana_),
                  grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "a run without its order");
  // With her own organisation named and a malformed instrument: validation.
  unnamed.mutable_booking()->clear_user();
  unnamed.mutable_booking()->set_instrument("Not A Name");
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, unnamed, &b, ana_),
                  grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "her own booking, a malformed instrument");
  // Her own organisation, named: past the scope, to validation.
  missing.mutable_booking()->set_payer_organization("organizations/lab");
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, missing, &b, ana_),
                  grpc::StatusCode::NOT_FOUND, "INSTRUMENT_NOT_FOUND", "her own organisation as payer");
  EXPECT_TRUE(Events().empty());
}

// Item 8: CancelBooking's roles name "MEMBER_BILLING_ADMIN of the paying
// organisation" only (GetBooking's add "or a cost-sharing participant"):
// owner shares the cost of lab's joint booking, its billing admin reads it
// but may not cancel it; lab's may.
TEST_F(JointResearchTest, OnlyThePayersBillingAdminCancels) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Booking b, out;
  ASSERT_TRUE(BookJoint(absl::Hours(9), absl::Hours(10), &b).ok());
  ASSERT_EQ(b.cost_shares(1).organization(), "organizations/owner");
  const std::string sharer = Token("olga", "owner", {Role::kMemberBillingAdmin});
  const std::string payer = Token("lena", "lab", {Role::kMemberBillingAdmin});
  v1::GetBookingRequest g;
  g.set_name(b.name());
  EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &out, sharer).ok());
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  s = Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, sharer);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  s = Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, payer);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CANCELLED);
}


// Item 9: UpdateProject answers the Project as GetProject does, with each
// InstrumentBudget's used and committed hours: in its answer, its event and
// a retry's answer.
TEST_F(JointResearchTest, UpdateProjectAnswersTheBudgetsUse) {
  v1::Project updated, again, got;
  v1::UpdateProjectRequest retitle;
  retitle.set_request_id("retitle");
  retitle.mutable_project()->set_name("projects/proj");
  retitle.mutable_project()->set_title("Cryo-EM, second year");
  retitle.mutable_update_mask()->add_paths("title");
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Booking b;
  ASSERT_TRUE(BookJoint(absl::Hours(9), absl::Hours(11), &b).ok());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, retitle, &updated, admin_).ok());
  ASSERT_TRUE(GetPrj(&got, admin_).ok());
  ASSERT_EQ(updated.instrument_budgets_size(), 1);
  EXPECT_TRUE(updated.instrument_budgets(0).has_used());
  EXPECT_EQ(FromProto(updated.instrument_budgets(0).committed()), absl::Hours(2));
  EXPECT_EQ(updated.SerializeAsString(), got.SerializeAsString());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, retitle, &again, admin_).ok());
  EXPECT_EQ(again.SerializeAsString(), updated.SerializeAsString());
  int seen = 0;
  const auto outbox = pool_->Command({"XRANGE", keys::ProjectOutbox(), "-", "+"});
  ASSERT_TRUE(outbox.ok());
  for (const auto& entry : outbox->elements) {
    v1::BookingEvent e;
    ASSERT_TRUE(e.ParseFromString(entry.elements[1].elements[3].str));
    if (!e.has_project_updated()) continue;
    ++seen;
    EXPECT_EQ(FromProto(e.project_updated().project().instrument_budgets(0).committed()), absl::Hours(2));
  }
  EXPECT_EQ(seen, 1);
}

// Item 10: BUDGET_BELOW_COMMITTED is for "a removed instrument with holding
// bookings": one whose bookings are all done (used hours only) may go.
TEST_F(JointResearchTest, AnInstrumentWithUsedHoursOnlyMayLeaveTheProject) {
  grpc::Status s;
  MakeProject(v1::Project::ONE_THIRD_TWO_THIRDS, {0, 0}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  AddTemCopy("sem");
  v1::Booking done, held, out;
  ASSERT_TRUE(BookJoint(absl::Hours(9), absl::Hours(11), &done).ok());
  ASSERT_TRUE(BookJoint(absl::Hours(13), absl::Hours(14), &held).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(done.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  v1::CheckOutRequest co;
  co.set_name(done.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CheckOut, co, &out, ana_).ok());
  v1::UpdateProjectRequest move;
  move.mutable_project()->set_name("projects/proj");
  auto* budget = move.mutable_project()->add_instrument_budgets();
  budget->set_instrument("instruments/sem");
  *budget->mutable_budget() = ToProto(absl::Hours(3));
  move.mutable_update_mask()->add_paths("instrument_budgets");
  v1::Project pr;
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, move, &pr, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "BUDGET_BELOW_COMMITTED");  // tem still holds a booking
  v1::CancelBookingRequest cancel;
  cancel.set_name(held.name());
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, cancel, &out, ana_).ok());
  s = Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, move, &pr, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(pr.instrument_budgets_size(), 1);
  EXPECT_EQ(pr.instrument_budgets(0).instrument(), "instruments/sem");
}


// Item 11: ListQuotas and GetQuotaUsage check the caller's organisation
// scope before validation and lookup (types.proto); SetQuota takes an unset
// allowance as zero ("Zero forbids counted bookings"; only a negative one is
// INVALID_FIELD).
TEST_F(QuotaTest, ScopeComesFirstAndAnUnsetAllowanceIsZero) {
  v1::Quota q;
  v1::SetQuotaRequest r;
  r.mutable_quota()->set_organization("organizations/lab");
  r.mutable_quota()->set_instrument("instruments/tem");
  r.mutable_quota()->set_period(v1::Quota::WEEK);
  r.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  auto s = Call(stub_.get(), &v1::BookingService::Stub::SetQuota, r, &q, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(q.allowance()), absl::ZeroDuration());
  v1::Booking b;
  EXPECT_EQ(GrpcErrorReason(Book(absl::Hours(9), absl::Hours(10), &b)), "QUOTA_EXCEEDED");

  v1::ListQuotasRequest l;
  l.set_organization("organizations/owner");
  l.set_instrument("not-a-name");
  v1::ListQuotasResponse listed;
  s = Call(stub_.get(), &v1::BookingService::Stub::ListQuotas, l, &listed, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");

  v1::GetQuotaUsageRequest u;
  u.set_quota(absl::StrReplaceAll(q.name(), {{".lab.", ".owner."}}));
  ASSERT_NE(u.quota(), q.name());
  v1::QuotaUsage usage;
  s = Call(stub_.get(), &v1::BookingService::Stub::GetQuotaUsage, u, &usage, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  s = Call(stub_.get(), &v1::BookingService::Stub::GetQuotaUsage, u, &usage, admin_);
  EXPECT_EQ(GrpcErrorReason(s), "QUOTA_NOT_FOUND");
}

// ============================================================ UpdateProject vs JOINT_RESEARCH CreateBooking
//
// A booking is checked against the project document (participant, period)
// before its create step, and UpdateProject checks the project's holding
// bookings and counters before its commit. Each side must not act on a
// state the other one is changing: the tests run one side between the
// other's checks and its write (InterleaveProjectForTest) and expect the
// second writer refused (ABORTED CONCURRENT_MODIFICATION), and a retry with
// the same request_id answered against the project as it is then.
class ProjectRaceTest : public JointResearchTest {
 protected:
  // "proj": lab, owner and outsider, equal split, 3 h (`budget`) on tem over
  // days 2..4.
  void MakeTrio(absl::Duration budget_hours = absl::Hours(3)) {
    v1::CreateProjectRequest r;
    r.set_project_id("proj");
    auto* pr = r.mutable_project();
    pr->set_title("Shared lithography");
    pr->set_cost_share_template(v1::Project::EQUAL_SPLIT);
    for (const char* org : {"organizations/lab", "organizations/owner", "organizations/outsider"}) {
      pr->add_participants()->set_organization(org);
    }
    *pr->mutable_period()->mutable_start_time() = ToProto(day_);
    *pr->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
    auto* budget = pr->add_instrument_budgets();
    budget->set_instrument("instruments/tem");
    *budget->mutable_budget() = ToProto(budget_hours);
    v1::Project out;
    grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CreateProject, r, &out, admin_);
    ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  }
  // A JOINT_RESEARCH booking of tem in proj paid by `payer`, booked by an
  // administrator.
  v1::CreateBookingRequest JointRequest(absl::Duration from, absl::Duration to, const std::string& payer,
                                        const std::string& request_id) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    r.mutable_booking()->set_project("projects/proj");
    r.mutable_booking()->set_user("users/ana");
    r.mutable_booking()->set_payer_organization(payer);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_request_id(request_id);
    return r;
  }
  grpc::Status CreateJoint(const v1::CreateBookingRequest& r, v1::Booking* out) {
    return Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, out, admin_);
  }
  grpc::Status Update(const v1::UpdateProjectRequest& r, v1::Project* out) {
    return Call(stub_.get(), &v1::BookingService::Stub::UpdateProject, r, out, admin_);
  }
  // proj without outsider.
  static v1::UpdateProjectRequest WithoutOutsider(const std::string& request_id) {
    v1::UpdateProjectRequest r;
    r.set_request_id(request_id);
    r.mutable_project()->set_name("projects/proj");
    r.mutable_project()->add_participants()->set_organization("organizations/lab");
    r.mutable_project()->add_participants()->set_organization("organizations/owner");
    r.mutable_update_mask()->add_paths("participants");
    return r;
  }
  // proj's period cut to day 2 alone.
  v1::UpdateProjectRequest FirstDayOnly(const std::string& request_id) {
    v1::UpdateProjectRequest r;
    r.set_request_id(request_id);
    r.mutable_project()->set_name("projects/proj");
    *r.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
    *r.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(24));
    r.mutable_update_mask()->add_paths("period");
    return r;
  }
  Principal Admin() { return Principal{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(1)}; }
  // UpdateProject `u` (it must succeed) with the booking `r` made between
  // its checks and its commit: the booking's answer in `created`.
  void CreateDuringUpdate(const v1::CreateBookingRequest& r, const v1::UpdateProjectRequest& u, v1::Project* updated,
                          absl::Status* created) {
    *created = absl::UnknownError("not run");
    Between("update:", [&] { *created = manager_->CreateBooking(Admin(), r).status(); });
    grpc::Status s = Update(u, updated);
    ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  }
  // Runs `f` once, at the first interleaving point whose name starts with
  // `point` ("create:" or "update:").
  void Between(const std::string& point, std::function<void()> f) {
    auto fired = std::make_shared<bool>(false);
    manager_->InterleaveProjectForTest([point, fired, f = std::move(f)](const std::string& at) {
      if (*fired || at.rfind(point, 0) != 0) return;
      *fired = true;
      f();
    });
  }
  // The project's holding bookings of tem, as stored: (payer, start hour).
  std::vector<std::pair<std::string, int64_t>> Holding() {
    std::vector<std::pair<std::string, int64_t>> out;
    v1::ListBookingsRequest l;
    l.set_instrument("instruments/tem");
    l.set_page_size(100);
    v1::ListBookingsResponse resp;
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ListBookings, l, &resp, admin_).ok());
    for (const auto& b : resp.bookings()) {
      if (b.project() != "projects/proj" || b.state() != v1::Booking::CONFIRMED) continue;
      out.emplace_back(b.payer_organization(),
                       (FromProto(b.reserved_interval().start_time()) - day_) / absl::Hours(1));
    }
    return out;
  }
  int64_t Field(const std::string& field) {
    auto v = pool_->Command({"HGET", keys::Budget(keys::Partition("tem"), "proj"), field});
    int64_t out = 0;
    if (v.ok() && !v->is_nil()) {
      EXPECT_TRUE(absl::SimpleAtoi(v->str, &out)) << v->str;
    }
    return out;
  }
  bool HasField(const std::string& field) {
    auto v = pool_->Command({"HEXISTS", keys::Budget(keys::Partition("tem"), "proj"), field});
    return v.ok() && v->integer == 1;
  }
};

// (a) The booking was checked while outsider was a participant; the update
// that removes outsider commits before the booking's step: the step
// refuses, and the retry hears that outsider no longer participates.
TEST_F(ProjectRaceTest, ABookingCheckedBeforeItsPayerWasRemovedIsRefused) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  absl::Status update = absl::UnknownError("not run");
  Between("create:", [&] { update = manager_->UpdateProject(Admin(), WithoutOutsider("drop-1")).status(); });
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(10), "organizations/outsider", "book-1");
  v1::Booking b;
  grpc::Status s = CreateJoint(r, &b);
  ASSERT_TRUE(update.ok()) << update;
  ExpectGrpcError(s, grpc::StatusCode::ABORTED, "CONCURRENT_MODIFICATION", "the create step after the update");
  s = CreateJoint(r, &b);
  ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "NOT_PROJECT_PARTICIPANT", "the retry");
  EXPECT_TRUE(Holding().empty());
  EXPECT_EQ(FromProto(Budget().committed()), absl::ZeroDuration());
}

// (a) The update checked that outsider holds no booking; a booking paid by
// outsider comes before its commit: it is refused (the update's fence),
// the update commits, and the retry hears NOT_PROJECT_PARTICIPANT.
TEST_F(ProjectRaceTest, AnUpdateRemovingAPayerHoldsItsNewBookingsOff) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(10), "organizations/outsider", "book-1");
  absl::Status created;
  v1::Project updated;
  ASSERT_NO_FATAL_FAILURE(CreateDuringUpdate(r, WithoutOutsider("drop-1"), &updated, &created));
  EXPECT_EQ(created.code(), absl::StatusCode::kAborted) << created;
  EXPECT_EQ(ErrorReason(created), "CONCURRENT_MODIFICATION") << created;
  EXPECT_EQ(updated.participants_size(), 2);
  v1::Booking b;
  ExpectGrpcError(CreateJoint(r, &b), grpc::StatusCode::FAILED_PRECONDITION, "NOT_PROJECT_PARTICIPANT", "the retry");
  EXPECT_TRUE(Holding().empty());
  EXPECT_EQ(FromProto(Budget().committed()), absl::ZeroDuration());
}

// (b) The booking (day 3) was checked against the two-day period; the
// update that cuts the period to day 2 commits before the booking's step.
TEST_F(ProjectRaceTest, ABookingCheckedBeforeThePeriodWasShortenedIsRefused) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  absl::Status update = absl::UnknownError("not run");
  Between("create:", [&] { update = manager_->UpdateProject(Admin(), FirstDayOnly("cut-1")).status(); });
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(30), absl::Hours(31), "", "book-1");
  v1::Booking b;
  grpc::Status s = CreateJoint(r, &b);
  ASSERT_TRUE(update.ok()) << update;
  ExpectGrpcError(s, grpc::StatusCode::ABORTED, "CONCURRENT_MODIFICATION", "the create step after the update");
  ExpectGrpcError(CreateJoint(r, &b), grpc::StatusCode::FAILED_PRECONDITION, "OUTSIDE_PROJECT_PERIOD", "the retry");
  EXPECT_TRUE(Holding().empty());
}

// (b) The update checked that no booking lies on day 3; one comes before
// its commit: refused, the period is cut, the retry is outside it.
TEST_F(ProjectRaceTest, AnUpdateShorteningThePeriodHoldsNewBookingsOff) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(30), absl::Hours(31), "", "book-1");
  absl::Status created;
  v1::Project updated;
  ASSERT_NO_FATAL_FAILURE(CreateDuringUpdate(r, FirstDayOnly("cut-1"), &updated, &created));
  EXPECT_EQ(created.code(), absl::StatusCode::kAborted) << created;
  EXPECT_EQ(ErrorReason(created), "CONCURRENT_MODIFICATION") << created;
  v1::Booking b;
  ExpectGrpcError(CreateJoint(r, &b), grpc::StatusCode::FAILED_PRECONDITION, "OUTSIDE_PROJECT_PERIOD", "the retry");
  EXPECT_TRUE(Holding().empty());
  EXPECT_EQ(FromProto(Budget().committed()), absl::ZeroDuration());
}

// (c) The update checked that nothing is committed and lowers the budget
// from 3 h to 1 h; a 2 h booking comes before its commit: refused, and the
// retry meets the new budget. The budget never drops below committed.
TEST_F(ProjectRaceTest, AnUpdateLoweringTheBudgetHoldsNewBookingsOff) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(11), "", "book-1");
  absl::Status created;
  v1::Project updated;
  ASSERT_NO_FATAL_FAILURE(CreateDuringUpdate(r, BudgetUpdate("lower-1", absl::Hours(1)), &updated, &created));
  EXPECT_EQ(created.code(), absl::StatusCode::kAborted) << created;
  EXPECT_EQ(ErrorReason(created), "CONCURRENT_MODIFICATION") << created;
  v1::Booking b;
  ExpectGrpcError(CreateJoint(r, &b), grpc::StatusCode::FAILED_PRECONDITION, "PROJECT_BUDGET_EXCEEDED", "the retry");
  const v1::InstrumentBudget budget = Budget();
  EXPECT_EQ(FromProto(budget.budget()), absl::Hours(1));
  EXPECT_EQ(FromProto(budget.committed()), absl::ZeroDuration());
  EXPECT_EQ(Field("tem:budget"), absl::ToInt64Milliseconds(absl::Hours(1)));
}

// A booking refused because the project moved on (here only its title)
// succeeds on the retry with the same request_id, once: one booking, its
// hours committed once, one BookingCreated; a further retry replays it.
TEST_F(ProjectRaceTest, ARetryAfterTheProjectMovedBooksOnce) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  absl::Status update = absl::UnknownError("not run");
  Between("create:", [&] {
    v1::UpdateProjectRequest u;
    u.set_request_id("title-1");
    u.mutable_project()->set_name("projects/proj");
    u.mutable_project()->set_title("Renamed");
    u.mutable_update_mask()->add_paths("title");
    update = manager_->UpdateProject(Admin(), u).status();
  });
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(11), "", "book-1");
  v1::Booking first, again, replay;
  ExpectGrpcError(CreateJoint(r, &first), grpc::StatusCode::ABORTED, "CONCURRENT_MODIFICATION", "the first attempt");
  ASSERT_TRUE(update.ok()) << update;
  grpc::Status s = CreateJoint(r, &again);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  s = CreateJoint(r, &replay);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(replay.name(), again.name());
  EXPECT_EQ(replay.etag(), again.etag());
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(2));
  int created = 0;
  for (const auto& e : Events()) created += e.has_booking_created();
  EXPECT_EQ(created, 1);
  EXPECT_EQ(Holding().size(), 1u);
}

// An update that is refused lifts its fences and leaves the counters as
// they were: the next booking goes through.
TEST_F(ProjectRaceTest, ARefusedUpdateLiftsItsFences) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  v1::Booking b, c;
  grpc::Status s = CreateJoint(JointRequest(absl::Hours(9), absl::Hours(10), "organizations/outsider", "book-1"), &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  v1::Project updated;
  ExpectGrpcError(Update(WithoutOutsider("drop-1"), &updated), grpc::StatusCode::FAILED_PRECONDITION,
                  "PARTICIPANT_HAS_BOOKINGS", "outsider pays for a booking");
  EXPECT_FALSE(HasField("tem:fence"));
  EXPECT_FALSE(HasField("tem:fence_until"));
  EXPECT_EQ(Field("tem:budget_version"), 1);
  s = CreateJoint(JointRequest(absl::Hours(12), absl::Hours(13), "", "book-2"), &c);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(2));
}

// The fence of an updater that died: while it holds (not lapsed on Redis's
// clock) bookings of the project and other updates are refused
// (CONCURRENT_MODIFICATION, nothing written); once it has lapsed, the next
// booking brings the counters to the document (here version 2, which the
// dead updater committed) and lifts it.
TEST_F(ProjectRaceTest, ADeadUpdatersFenceHoldsUntilItLapses) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  v1::Project updated;
  grpc::Status s = Update(BudgetUpdate("raise-1", absl::Hours(5)), &updated);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  // As the updater left them: committed version 2, counters of version 1,
  // its fence in place.
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:budget", std::to_string(absl::ToInt64Milliseconds(absl::Hours(3))),
                              "tem:budget_version", "1", "tem:fence", "77", "tem:fence_until", "99999999999999"})
                  .ok());
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(13), "", "book-1");  // 4 h
  v1::Booking b;
  ExpectGrpcError(CreateJoint(r, &b), grpc::StatusCode::ABORTED, "CONCURRENT_MODIFICATION", "a live fence");
  v1::UpdateProjectRequest title;
  title.mutable_project()->set_name("projects/proj");
  title.mutable_project()->set_title("Renamed");
  title.mutable_update_mask()->add_paths("title");
  ExpectGrpcError(Update(title, &updated), grpc::StatusCode::ABORTED, "CONCURRENT_MODIFICATION",
                  "another update's live fence");
  EXPECT_EQ(Field("tem:fence"), 77);
  EXPECT_EQ(FromProto(Budget().committed()), absl::ZeroDuration());
  // Lapsed (Redis's clock is past it).
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:fence_until", "1"}).ok());
  s = CreateJoint(r, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_FALSE(HasField("tem:fence"));
  EXPECT_EQ(Field("tem:budget_version"), 2);
  EXPECT_EQ(Field("tem:budget"), absl::ToInt64Milliseconds(absl::Hours(5)));
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(4));
  s = Update(title, &updated);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_FALSE(HasField("tem:fence"));
  EXPECT_EQ(Field("tem:budget_version"), 3);
}

// The create step itself refuses a fenced budget: a fence set after the
// booking's project check (the version unchanged) holds its step off
// (CONCURRENT_MODIFICATION, nothing written); once lifted, the retry books.
TEST_F(ProjectRaceTest, TheCreateStepRefusesAFenceSetAfterTheCheck) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  Between("create:", [&] {
    ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:fence", "5", "tem:fence_until", "99999999999999"}).ok());
  });
  const v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(10), "", "book-1");
  v1::Booking b;
  ExpectGrpcError(CreateJoint(r, &b), grpc::StatusCode::ABORTED, "CONCURRENT_MODIFICATION", "the fenced step");
  EXPECT_TRUE(Holding().empty());
  EXPECT_EQ(FromProto(Budget().committed()), absl::ZeroDuration());
  EXPECT_EQ(Field("tem:budget_version"), 1);
  ASSERT_TRUE(pool_->Command({"HDEL", counters, "tem:fence", "tem:fence_until"}).ok());
  grpc::Status s = CreateJoint(r, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(Budget().committed()), absl::Hours(1));
}

// validate_only writes nothing, a dead updater's lapsed fence included: it
// stays for the real request to lift.
TEST_F(ProjectRaceTest, APreviewLeavesALapsedFence) {
  ASSERT_NO_FATAL_FAILURE(MakeTrio());
  const std::string counters = keys::Budget(keys::Partition("tem"), "proj");
  ASSERT_TRUE(pool_->Command({"HSET", counters, "tem:fence", "77", "tem:fence_until", "1"}).ok());
  v1::CreateBookingRequest r = JointRequest(absl::Hours(9), absl::Hours(10), "", "");
  r.set_validate_only(true);
  v1::Booking b;
  grpc::Status s = CreateJoint(r, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(Field("tem:fence"), 77);
  EXPECT_EQ(Field("tem:fence_until"), 1);
  r.set_validate_only(false);
  r.set_request_id("book-1");
  s = CreateJoint(r, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_FALSE(HasField("tem:fence"));
}

}  // namespace
}  // namespace labshare::booking
