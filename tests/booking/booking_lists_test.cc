// Lists across instruments (issue 12): ListBookings, ListLeases and
// ListServiceOrders without an instrument, scoped per role, filtered,
// ordered both ways and paged; the startup migration of older data; and
// CreateServiceOrder with a client-chosen id.
#include <gtest/gtest.h>

#include "services/booking/booking_common.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

using Names = std::vector<std::string>;

class ListsTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    // "nmr": owned and run by outsider, ON_SITE without qualification, in another
    // partition than "tem".
    ASSERT_NE(keys::Partition("nmr"), keys::Partition("tem"));
    iv::GetInstrumentRequest g;
    g.set_name("instruments/tem");
    iv::Instrument tem;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
    iv::CreateFacilityRequest f;  // run by outsider (an instrument's operator is its facility's)
    f.set_facility_id("fac2");
    f.mutable_facility()->set_display_name("fac2");
    f.mutable_facility()->set_owner_organization("organizations/outsider");
    f.mutable_facility()->mutable_access_policy()->set_allow_members(true);
    Inv(&iv::InventoryService::Stub::CreateFacility, f);
    iv::CreateInstrumentRequest i;
    i.set_instrument_id("nmr");
    *i.mutable_instrument() = tem;
    i.mutable_instrument()->clear_name();
    i.mutable_instrument()->set_display_name("NMR");
    i.mutable_instrument()->set_owner_organization("organizations/outsider");
    i.mutable_instrument()->set_facility("facilities/fac2");
    i.mutable_instrument()->clear_modes();
    i.mutable_instrument()->clear_service_catalogue();
    auto* m = i.mutable_instrument()->add_modes();
    *m = tem.modes(0);
    m->mutable_slot_rules()->set_qualification_validity_days(0);
    Inv(&iv::InventoryService::Stub::CreateInstrument, i);
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/nmr");
    rate.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
    rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    rate.mutable_rate()->set_unit(iv::PER_HOUR);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(40000);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
    iv::CreateUserRequest cu;
    cu.set_user_id("cy");
    cu.mutable_user()->set_display_name("cy");
    cu.mutable_user()->set_organization("organizations/outsider");
    cu.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
    Inv(&iv::InventoryService::Stub::CreateUser, cu);
    iv::GrantQualificationRequest q;
    q.set_instrument("instruments/tem");
    q.set_user("users/cy");
    Inv(&iv::InventoryService::Stub::GrantQualification, q);
    cy_ = Token("cy", "outsider", {Role::kLabUser});
    lab_billing_ = Token("fin", "lab", {Role::kMemberBillingAdmin});
    outsider_staff_ = Token("olga", "outsider", {Role::kFacilityStaff});
    auditor_ = Token("aud", "", {Role::kAuditor});
  }

  // A booking named `id` by the admin for `user` on `instrument` over
  // [day + from h, day + to h).
  void BookAs(const std::string& id, const std::string& instrument, const std::string& user, int from, int to) {
    v1::CreateBookingRequest r;
    r.set_booking_id(id);
    r.mutable_booking()->set_instrument("instruments/" + instrument);
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/" + user);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(from));
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(to));
    v1::Booking b;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, admin_);
    ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
  }

  // ana-nmr-1 and ana-tem-1 start at the same time (ordered by name).
  void SeedBookings() {
    BookAs("cy-nmr-1", "nmr", "cy", 8, 9);
    BookAs("ana-tem-1", "tem", "ana", 10, 11);
    BookAs("ana-nmr-1", "nmr", "ana", 10, 11);
    BookAs("bob-nmr-1", "nmr", "bob", 12, 13);
    BookAs("cy-tem-1", "tem", "cy", 14, 15);
    BookAs("ana-tem-2", "tem", "ana", 20, 21);
    v1::CancelBookingRequest c;
    c.set_name("bookings/ana-tem-2");
    v1::Booking out;
    ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::CancelBooking, c, &out, admin_).ok());
  }

  // Every page, following tokens; the ids in order.
  Names AllPages(v1::ListBookingsRequest r, const std::string& token, int* pages = nullptr) {
    Names out;
    for (int page = 0; page < 100; ++page) {
      v1::ListBookingsResponse resp;
      auto s = Call(stub_.get(), &v1::BookingService::Stub::ListBookings, r, &resp, token);
      EXPECT_TRUE(s.ok()) << s.error_message() << " " << GrpcErrorReason(s);
      if (!s.ok()) break;
      if (pages) ++*pages;
      for (const auto& b : resp.bookings()) out.push_back(IdOf(b.name()));
      if (resp.next_page_token().empty()) break;
      r.set_page_token(resp.next_page_token());
    }
    return out;
  }
  Names List(const std::string& token, int page_size = 0, const std::string& order_by = "") {
    v1::ListBookingsRequest r;
    r.set_page_size(page_size);
    r.set_order_by(order_by);
    return AllPages(r, token);
  }
  grpc::Status ListError(const v1::ListBookingsRequest& r, const std::string& token) {
    v1::ListBookingsResponse resp;
    return Call(stub_.get(), &v1::BookingService::Stub::ListBookings, r, &resp, token);
  }
  labshare::type::v1::Interval Hours(int from, int to) {
    labshare::type::v1::Interval i;
    *i.mutable_start_time() = ToProto(day_ + absl::Hours(from));
    *i.mutable_end_time() = ToProto(day_ + absl::Hours(to));
    return i;
  }

  std::string cy_, lab_billing_, outsider_staff_, auditor_;
};

const Names kAll = {"cy-nmr-1", "ana-nmr-1", "ana-tem-1", "bob-nmr-1", "cy-tem-1", "ana-tem-2"};

TEST_F(ListsTest, EachRoleSeesExactlyItsScopeAcrossInstruments) {
  SeedBookings();
  EXPECT_EQ(List(admin_), kAll);
  EXPECT_EQ(List(auditor_), kAll);
  EXPECT_EQ(List(ana_), (Names{"ana-nmr-1", "ana-tem-1", "ana-tem-2"}));
  EXPECT_EQ(List(cy_), (Names{"cy-nmr-1", "cy-tem-1"}));
  // lab pays for ana's and bob's.
  EXPECT_EQ(List(lab_billing_), (Names{"ana-nmr-1", "ana-tem-1", "bob-nmr-1", "ana-tem-2"}));
  // owner's staff: everything on tem (owner's nothing else).
  EXPECT_EQ(List(staff_), (Names{"ana-tem-1", "cy-tem-1", "ana-tem-2"}));
  // outsider's staff: everything on nmr, plus what outsider pays on tem.
  EXPECT_EQ(List(outsider_staff_), (Names{"cy-nmr-1", "ana-nmr-1", "bob-nmr-1", "cy-tem-1"}));
}

TEST_F(ListsTest, PagesInBothOrdersWithTiesOnStartTime) {
  SeedBookings();
  Names reversed(kAll.rbegin(), kAll.rend());
  for (int size : {1, 2, 4}) {
    EXPECT_EQ(List(admin_, size), kAll) << size;
    EXPECT_EQ(List(admin_, size, "start_time asc"), kAll) << size;
    EXPECT_EQ(List(admin_, size, "start_time desc"), reversed) << size;
    EXPECT_EQ(List(ana_, size, "start_time desc"), (Names{"ana-tem-2", "ana-tem-1", "ana-nmr-1"})) << size;
  }
  // Page by page: exactly page_size each, no repeats.
  v1::ListBookingsRequest r;
  r.set_page_size(2);
  int pages = 0;
  EXPECT_EQ(AllPages(r, admin_, &pages), kAll);
  EXPECT_LE(pages, 4);
  v1::ListBookingsRequest bad;
  bad.set_order_by("end_time");
  auto s = ListError(bad, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  bad.set_order_by("");
  bad.set_page_size(-1);
  s = ListError(bad, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}

TEST_F(ListsTest, FiltersByStateTimeRangeAndNames) {
  SeedBookings();
  v1::ListBookingsRequest r;
  r.add_states(v1::Booking::CONFIRMED);
  EXPECT_EQ(AllPages(r, admin_), (Names{"cy-nmr-1", "ana-nmr-1", "ana-tem-1", "bob-nmr-1", "cy-tem-1"}));
  r.clear_states();
  r.add_states(v1::Booking::CANCELLED);
  EXPECT_EQ(AllPages(r, ana_), (Names{"ana-tem-2"}));
  r.clear_states();
  // Overlap, half-open: [10:30, 12:00) meets the 10-11 bookings, not 12-13.
  *r.mutable_time_range() = Hours(10, 12);
  *r.mutable_time_range()->mutable_start_time() = ToProto(day_ + absl::Minutes(630));
  EXPECT_EQ(AllPages(r, admin_), (Names{"ana-nmr-1", "ana-tem-1"}));
  *r.mutable_time_range() = Hours(9, 10);
  EXPECT_EQ(AllPages(r, admin_), Names{});
  *r.mutable_time_range() = Hours(0, 9);
  r.set_page_size(1);
  EXPECT_EQ(AllPages(r, admin_), (Names{"cy-nmr-1"}));
  r.Clear();
  r.set_instrument("instruments/nmr");
  EXPECT_EQ(AllPages(r, admin_), (Names{"cy-nmr-1", "ana-nmr-1", "bob-nmr-1"}));
  EXPECT_EQ(AllPages(r, ana_), (Names{"ana-nmr-1"}));
  r.Clear();
  r.set_instrument_owner("organizations/outsider");
  EXPECT_EQ(AllPages(r, admin_), (Names{"cy-nmr-1", "ana-nmr-1", "bob-nmr-1"}));
  r.Clear();
  r.set_user("users/bob");
  EXPECT_EQ(AllPages(r, lab_billing_), (Names{"bob-nmr-1"}));
  EXPECT_EQ(AllPages(r, outsider_staff_), (Names{"bob-nmr-1"}));
  EXPECT_EQ(AllPages(r, staff_), Names{});
  r.Clear();
  r.set_payer_organization("organizations/outsider");
  EXPECT_EQ(AllPages(r, staff_), (Names{"cy-tem-1"}));
  EXPECT_EQ(AllPages(r, admin_), (Names{"cy-nmr-1", "cy-tem-1"}));
  r.Clear();
  r.set_mode(labshare::type::v1::LEASE);
  EXPECT_EQ(AllPages(r, admin_), Names{});
}

// The callback path passes the stored bytes of each booking through
// (BookingsListing::raw, filtered off the wire by ListedFromBytes); the
// synchronous one parses them. Every page, token included, is the same
// for every scope and filter.
TEST_F(ListsTest, PassedThroughPagesEqualParsedOnes) {
  SeedBookings();
  struct Caller {
    std::string token;
    Principal p;
  };
  auto as = [&](const std::string& user, const std::string& org, std::vector<Role> roles) {
    return Caller{Token(user, org, roles), Principal{user, org, roles, clock_.Now() + absl::Hours(24 * 400)}};
  };
  const std::vector<Caller> callers = {
      as("admin", "", {Role::kConsortiumAdmin}), as("aud", "", {Role::kAuditor}),
      as("ana", "lab", {Role::kLabUser}),        as("cy", "outsider", {Role::kLabUser}),
      as("fin", "lab", {Role::kMemberBillingAdmin}), as("sam", "owner", {Role::kFacilityStaff}),
      as("olga", "outsider", {Role::kFacilityStaff})};
  std::vector<v1::ListBookingsRequest> requests(11);
  requests[1].set_page_size(2);
  requests[2].set_order_by("start_time desc");
  requests[2].set_page_size(1);
  requests[3].add_states(v1::Booking::CONFIRMED);
  requests[4].add_states(v1::Booking::CANCELLED);
  requests[4].add_states(v1::Booking::CONFIRMED);
  *requests[5].mutable_time_range() = Hours(10, 13);
  requests[5].set_page_size(1);
  requests[6].set_instrument("instruments/nmr");
  requests[7].set_instrument_owner("organizations/outsider");
  requests[8].set_payer_organization("organizations/outsider");
  requests[9].set_mode(labshare::type::v1::ON_SITE);
  requests[10].set_user("users/ana");
  int compared = 0;
  for (const Caller& c : callers) {
    for (v1::ListBookingsRequest r : requests) {
      for (int page = 0; page < 20; ++page) {
        v1::ListBookingsResponse passed;
        const grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::ListBookings, r, &passed, c.token);
        const absl::StatusOr<v1::ListBookingsResponse> parsed = manager_->ListBookings(c.p, r);
        ASSERT_EQ(s.ok(), parsed.ok()) << c.p.user_id << " " << r.ShortDebugString();
        if (!s.ok()) break;  // a filter outside this caller's scope (the same error both ways)
        EXPECT_EQ(passed.SerializeAsString(), parsed->SerializeAsString())
            << c.p.user_id << " " << r.ShortDebugString() << "\n"
            << passed.DebugString() << "\n" << parsed->DebugString();
        ++compared;
        if (passed.next_page_token().empty()) break;
        r.set_page_token(passed.next_page_token());
      }
    }
  }
  EXPECT_GT(compared, 100);
}

TEST_F(ListsTest, FiltersOutsideTheScopeFailWithTheirReason) {
  SeedBookings();
  v1::ListBookingsRequest r;
  r.set_user("users/bob");
  auto s = ListError(r, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "USER_SCOPE");
  r.set_user("users/ana");
  EXPECT_TRUE(ListError(r, ana_).ok());
  r.Clear();
  r.set_payer_organization("organizations/outsider");
  s = ListError(r, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  s = ListError(r, lab_billing_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  r.set_payer_organization("organizations/lab");
  EXPECT_TRUE(ListError(r, lab_billing_).ok());
}

TEST_F(ListsTest, MigrationIndexesBookingsWrittenBeforeTheIndexes) {
  SeedBookings();
  // Older data: no listing index at all, no marker.
  for (int p = 0; p < kPartitions; ++p) {
    std::string cursor = "0";
    do {
      auto step = store_->ScanKeys(cursor, keys::Tag(p) + ":ls:*");
      ASSERT_TRUE(step.ok());
      cursor = step->first;
      for (const auto& k : step->second) ASSERT_TRUE(pool_->Command({"DEL", k}).ok());
    } while (cursor != "0");
  }
  ASSERT_TRUE(pool_->Command({"DEL", "{booking}:migrated:lists"}).ok());
  EXPECT_EQ(List(ana_), Names{});
  v1::ListBookingsRequest ranged;
  *ranged.mutable_time_range() = Hours(10, 11);
  auto migrated = manager_->MigrateListings();
  ASSERT_TRUE(migrated.ok()) << migrated.status();
  EXPECT_EQ(*migrated, 6);
  EXPECT_EQ(List(admin_), kAll);
  EXPECT_EQ(List(ana_), (Names{"ana-nmr-1", "ana-tem-1", "ana-tem-2"}));
  EXPECT_EQ(List(outsider_staff_), (Names{"cy-nmr-1", "ana-nmr-1", "bob-nmr-1", "cy-tem-1"}));
  EXPECT_EQ(AllPages(ranged, admin_), (Names{"ana-nmr-1", "ana-tem-1"}));
  // Then the marker: nothing to do.
  auto again = manager_->MigrateListings();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0);
  EXPECT_EQ(List(admin_), kAll);
}

TEST_F(ListsTest, ListsAfterRedisForgotItsScripts) {
  SeedBookings();
  ASSERT_TRUE(pool_->Command({"SCRIPT", "FLUSH"}).ok());
  EXPECT_EQ(List(admin_, 2), kAll);
}

// ---------------------------------------------------------------- leases

class LeaseListsTest : public ListsTest {
 protected:
  void Lease(int from_days, int to_days, const std::string& token) {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * from_days));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * to_days));
    v1::Lease out;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::RequestLease, r, &out, token);
    ASSERT_TRUE(s.ok()) << s.error_message();
    names_.push_back(IdOf(out.name()));
  }
  Names Leases(v1::ListLeasesRequest r, const std::string& token) {
    Names out;
    for (int page = 0; page < 100; ++page) {
      v1::ListLeasesResponse resp;
      auto s = Call(stub_.get(), &v1::BookingService::Stub::ListLeases, r, &resp, token);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const auto& l : resp.leases()) out.push_back(IdOf(l.name()));
      if (resp.next_page_token().empty()) break;
      r.set_page_token(resp.next_page_token());
    }
    return out;
  }
  Names names_;
};

TEST_F(LeaseListsTest, ScopedOrderedFilteredAndPaged) {
  Lease(3, 13, ana_);   // lab
  Lease(20, 30, cy_);   // outsider
  ASSERT_EQ(names_.size(), 2u);
  v1::ListLeasesRequest r;
  r.set_page_size(1);
  EXPECT_EQ(Leases(r, admin_), names_);
  EXPECT_EQ(Leases(r, staff_), names_);  // owner of afm
  EXPECT_EQ(Leases(r, ana_), Names{names_[0]});
  EXPECT_EQ(Leases(r, lab_billing_), Names{names_[0]});
  EXPECT_EQ(Leases(r, cy_), Names{names_[1]});
  EXPECT_EQ(Leases(r, outsider_staff_), Names{names_[1]});  // its own organisation's lease
  r.set_order_by("start_time desc");
  EXPECT_EQ(Leases(r, admin_), (Names{names_[1], names_[0]}));
  r.clear_order_by();
  r.add_states(v1::Lease::REQUESTED);
  EXPECT_EQ(Leases(r, admin_), names_);
  r.clear_states();
  r.add_states(v1::Lease::APPROVED);
  EXPECT_EQ(Leases(r, admin_), Names{});
  r.clear_states();
  // A term of 10 days overlaps a range starting 9 days after it began.
  *r.mutable_time_range()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 12));
  *r.mutable_time_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 14));
  EXPECT_EQ(Leases(r, admin_), Names{names_[0]});
  r.clear_time_range();
  r.set_lessee_organization("organizations/outsider");
  EXPECT_EQ(Leases(r, staff_), Names{names_[1]});
  v1::ListLeasesResponse resp;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::ListLeases, r, &resp, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  // Leases are bookings too.
  v1::ListBookingsRequest b;
  b.set_mode(labshare::type::v1::LEASE);
  EXPECT_EQ(AllPages(b, admin_), names_);
  b.set_lease("leases/" + names_[1]);
  EXPECT_EQ(AllPages(b, admin_), Names{names_[1]});
}

// ---------------------------------------------------------------- orders

class OrderListsTest : public ListsTest {
 protected:
  grpc::Status Order(const std::string& id, const std::string& token, v1::ServiceOrder* out,
                     const std::string& request_id = "", int samples = 2) {
    v1::CreateServiceOrderRequest r;
    r.set_service_order_id(id);
    r.set_request_id(request_id);
    r.mutable_service_order()->set_instrument("instruments/tem");
    r.mutable_service_order()->set_service_entry_id("imaging");
    r.mutable_service_order()->set_sample_count(samples);
    return Call(stub_.get(), &v1::BookingService::Stub::CreateServiceOrder, r, out, token);
  }
  Names Orders(v1::ListServiceOrdersRequest r, const std::string& token) {
    Names out;
    for (int page = 0; page < 100; ++page) {
      v1::ListServiceOrdersResponse resp;
      auto s = Call(stub_.get(), &v1::BookingService::Stub::ListServiceOrders, r, &resp, token);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const auto& o : resp.service_orders()) out.push_back(IdOf(o.name()));
      if (resp.next_page_token().empty()) break;
      r.set_page_token(resp.next_page_token());
    }
    return out;
  }
};

TEST_F(OrderListsTest, CreateServiceOrderTakesAClientChosenId) {
  v1::ServiceOrder first, retry, other;
  auto s = Order("sem-run-7", ana_, &first, "req-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(first.name(), "serviceOrders/sem-run-7");
  v1::GetServiceOrderRequest g;
  g.set_name("serviceOrders/sem-run-7");
  v1::ServiceOrder got;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetServiceOrder, g, &got, ana_).ok());
  EXPECT_EQ(got.sample_count(), 2);
  // The same request again: the first answer.
  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(Order("sem-run-7", ana_, &retry, "req-1").ok());
  EXPECT_EQ(retry.SerializeAsString(), first.SerializeAsString());
  // Another request for the id: taken.
  s = Order("sem-run-7", ana_, &other, "req-2");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "SERVICE_ORDER_EXISTS");
  s = Order("sem-run-7", ana_, &other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "SERVICE_ORDER_EXISTS");
  // Ids are checked like booking ids.
  for (const char* bad : {"Sem_Run", "p03-0123456789ab", "-x"}) {
    s = Order(bad, ana_, &other);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << bad;
  }
  // One order, one event.
  int created = 0;
  for (const auto& e : Events()) created += e.has_service_order_created() ? 1 : 0;
  EXPECT_EQ(created, 1);
}

TEST_F(OrderListsTest, NewestFirstScopedAndFiltered) {
  v1::ServiceOrder o;
  ASSERT_TRUE(Order("ord-ana-1", ana_, &o).ok());
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(Order("ord-cy-1", cy_, &o).ok());
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(Order("ord-ana-2", ana_, &o).ok());
  v1::ListServiceOrdersRequest r;
  r.set_page_size(1);
  EXPECT_EQ(Orders(r, admin_), (Names{"ord-ana-2", "ord-cy-1", "ord-ana-1"}));
  EXPECT_EQ(Orders(r, staff_), (Names{"ord-ana-2", "ord-cy-1", "ord-ana-1"}));
  EXPECT_EQ(Orders(r, ana_), (Names{"ord-ana-2", "ord-ana-1"}));
  EXPECT_EQ(Orders(r, lab_billing_), (Names{"ord-ana-2", "ord-ana-1"}));
  EXPECT_EQ(Orders(r, cy_), (Names{"ord-cy-1"}));
  EXPECT_EQ(Orders(r, outsider_staff_), (Names{"ord-cy-1"}));
  r.set_order_by("create_time");
  EXPECT_EQ(Orders(r, admin_), (Names{"ord-ana-1", "ord-cy-1", "ord-ana-2"}));
  r.clear_order_by();
  *r.mutable_create_time_range()->mutable_start_time() = ToProto(clock_.Now() - absl::Minutes(5));
  *r.mutable_create_time_range()->mutable_end_time() = ToProto(clock_.Now());
  EXPECT_EQ(Orders(r, admin_), (Names{"ord-cy-1"}));
  r.clear_create_time_range();
  r.set_client_organization("organizations/outsider");
  EXPECT_EQ(Orders(r, staff_), (Names{"ord-cy-1"}));
  v1::ListServiceOrdersResponse resp;
  auto s = Call(stub_.get(), &v1::BookingService::Stub::ListServiceOrders, r, &resp, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  r.clear_client_organization();
  r.add_states(v1::ServiceOrder::QUOTED);
  EXPECT_EQ(Orders(r, admin_), Names{});
}

}  // namespace
}  // namespace labshare::booking
