// SearchAvailableInstruments on the callback API (issue 17) answers exactly
// as its synchronous form (BookingManager::SearchAvailableInstruments, one
// QueryAvailability per instrument): the same instruments, free intervals,
// order, page tokens and errors, on a mixed calendar; with an inventory
// cache that misses every time (the fixture's: the plan runs on blocking_)
// and with a warm one (the plan runs on the calling thread).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <pthread.h>

#include <future>

#include "google/protobuf/util/message_differencer.h"
#include "services/booking/booking_service.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::booking {
namespace {

class SearchTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    // A second facility, open to nobody but its owner (outsider).
    iv::CreateFacilityRequest f;
    f.set_facility_id("closed");
    f.mutable_facility()->set_display_name("closed");
    f.mutable_facility()->set_owner_organization("organizations/outsider");
    Inv(&iv::InventoryService::Stub::CreateFacility, f);
    // Electron microscopes besides tem (and afm, LEASE only): sem and fib
    // in fac, ebl in closed; xrd in fac of another category; old retired.
    AddInstrument("sem", "facilities/fac", "electron-microscopy", "organizations/owner");
    AddInstrument("fib", "facilities/fac", "electron-microscopy", "organizations/owner");
    AddInstrument("ebl", "facilities/closed", "electron-microscopy", "organizations/outsider");
    AddInstrument("xrd", "facilities/fac", "materials", "organizations/owner");
    AddInstrument("old", "facilities/fac", "electron-microscopy", "organizations/owner");
    iv::SetInstrumentStateRequest st;
    st.set_name("instruments/old");
    st.set_state(iv::RETIRED);
    st.set_reason("replaced");
    Inv(&iv::InventoryService::Stub::SetInstrumentState, st);
    // The mixed calendar (day_ + hours; ON_SITE buffer 30 min): tem 9-17;
    // sem 8-10 and 13-23 (above 8 h: awaiting approval) and a maintenance
    // window 11-11:30 not applied (only in inventory); fib 12-13 and a
    // window 15-18 applied to the calendar; xrd 9-11; ebl nothing; afm
    // leased on days 3..10 (awaiting approval; blocks days 2..12).
    ASSERT_TRUE(BookOn("tem", absl::Hours(9), absl::Hours(17)));
    ASSERT_TRUE(BookOn("sem", absl::Hours(8), absl::Hours(10)));
    ASSERT_TRUE(BookOn("sem", absl::Hours(13), absl::Hours(23)));
    ASSERT_TRUE(BookOn("fib", absl::Hours(12), absl::Hours(13)));
    ASSERT_TRUE(BookOn("xrd", absl::Hours(9), absl::Hours(11)));
    const std::string fib_window = Window("fib", absl::Hours(15), absl::Hours(18));
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(fib_window);
    v1::ApplyMaintenanceWindowResponse applied;
    ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ApplyMaintenanceWindow, apply, &applied, admin_).ok());
    Window("sem", absl::Hours(11), absl::Hours(11) + absl::Minutes(30));
    v1::RequestLeaseRequest lease;
    lease.mutable_lease()->set_instrument("instruments/afm");
    *lease.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 3));
    *lease.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 10));
    lease.set_request_id("search-lease");
    v1::Lease leased;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::RequestLease, lease, &leased, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // A copy of tem (ON_SITE, JOINT_RESEARCH, TECHNICAL_SERVICE; no
  // qualification needed) with its own facility, category and owner.
  void AddInstrument(const std::string& id, const std::string& facility, const std::string& category,
                     const std::string& owner) {
    iv::GetInstrumentRequest g;
    g.set_name("instruments/tem");
    iv::Instrument tem;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
    iv::CreateInstrumentRequest r;
    r.set_instrument_id(id);
    iv::Instrument* in = r.mutable_instrument();
    *in = tem;
    for (const char* f : {"name", "operator_organization", "state", "create_time", "update_time", "etag"}) {
      in->GetReflection()->ClearField(in, in->GetDescriptor()->FindFieldByName(f));
    }
    in->set_display_name(id);
    in->set_facility(facility);
    in->set_category(category);
    in->set_owner_organization(owner);
    for (auto& m : *in->mutable_modes()) m.mutable_slot_rules()->set_qualification_validity_days(0);
    Inv(&iv::InventoryService::Stub::CreateInstrument, r);
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/" + id);
    rate.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
    rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    rate.mutable_rate()->set_unit(iv::PER_HOUR);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(50000);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
  }

  bool BookOn(const std::string& instrument, absl::Duration from, absl::Duration to) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/" + instrument);
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/ana");  // qualified on tem; the copies ask for nothing
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_request_id("search-" + instrument + "-" + absl::FormatDuration(from));
    v1::Booking b;
    grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
    EXPECT_TRUE(s.ok()) << instrument << ": " << s.error_message();
    return s.ok();
  }

  std::string Window(const std::string& instrument, absl::Duration from, absl::Duration to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/" + instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("service");
    iv::MaintenanceWindow window;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    return window.name();
  }

  static Principal Who(const std::string& user, const std::string& org, std::vector<Role> roles) {
    return Principal{user, org, std::move(roles), absl::InfiniteFuture()};
  }

  v1::SearchAvailableInstrumentsRequest Query(absl::Duration from, absl::Duration to,
                                              const std::string& category = "electron-microscopy") {
    v1::SearchAvailableInstrumentsRequest q;
    q.set_category(category);
    *q.mutable_range()->mutable_start_time() = ToProto(day_ + from);
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + to);
    return q;
  }

  // The answer through `manager`'s asynchronous form, waited for.
  static absl::StatusOr<v1::SearchAvailableInstrumentsResponse> Async(BookingManager& manager, const Principal& p,
                                                                      const v1::SearchAvailableInstrumentsRequest& q) {
    std::promise<absl::StatusOr<v1::SearchAvailableInstrumentsResponse>> answer;
    manager.SearchAvailableInstrumentsAsync(
        p, q, [&](absl::StatusOr<v1::SearchAvailableInstrumentsResponse> r) { answer.set_value(std::move(r)); });
    return answer.get_future().get();
  }

  // Every page of q as the synchronous form answers it and as the
  // asynchronous one does (through gRPC with the fixture's cold cache, and
  // through `warm` directly): the same pages, tokens included, or the same
  // error. Returns the instruments of every page with their free intervals.
  std::string Compare(const Principal& p, const std::string& token, v1::SearchAvailableInstrumentsRequest q,
                      BookingManager* warm = nullptr) {
    std::string seen;
    for (int page = 0; page < 20; ++page) {
      SCOPED_TRACE(absl::StrCat("page ", page, " of ", q.ShortDebugString()));
      auto before = manager_->SearchAvailableInstruments(p, q);
      v1::SearchAvailableInstrumentsResponse after;
      grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, q, &after, token);
      EXPECT_EQ(static_cast<int>(s.error_code()), static_cast<int>(before.status().code())) << s.error_message();
      if (!before.ok()) {
        EXPECT_EQ(GrpcErrorReason(s), ErrorReason(before.status()));
      }
      if (warm != nullptr) {
        auto direct = Async(*warm, p, q);
        EXPECT_EQ(direct.status().code(), before.status().code()) << direct.status();
        if (!before.ok()) {
          EXPECT_EQ(ErrorReason(direct.status()), ErrorReason(before.status()));
        }
        if (direct.ok() && before.ok()) {
          EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*direct, *before))
              << "warm: " << direct->ShortDebugString() << "\nsync: " << before->ShortDebugString();
        }
      }
      if (!before.ok()) return absl::StrCat(seen, "error ", ErrorReason(before.status()));
      if (!s.ok()) return "error";
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(after, *before))
          << "async: " << after.ShortDebugString() << "\nsync: " << before->ShortDebugString();
      for (const auto& in : before->instruments()) {
        absl::StrAppend(&seen, in.instrument().substr(12), "[");
        for (const auto& f : in.free_intervals()) {
          absl::StrAppend(&seen, " ", absl::FormatDuration(FromProto(f.start_time()) - day_), "-",
                          absl::FormatDuration(FromProto(f.end_time()) - day_));
        }
        absl::StrAppend(&seen, " ] ");
      }
      if (before->next_page_token().empty()) return seen;
      absl::StrAppend(&seen, "| ");
      q.set_page_token(before->next_page_token());
    }
    ADD_FAILURE() << "more than 20 pages";
    return seen;
  }
};

TEST_F(SearchTest, MixedCalendarAnswersAsTheSynchronousForm) {
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  // Free all day 8-20: nothing (each has something in the way).
  EXPECT_EQ(Compare(ana, ana_, Query(absl::Hours(8), absl::Hours(20))), "");
  // At least 2 h inside 8-20: fib before 11:30 (its booking at 12 less the
  // buffer) and after its window; tem after 17:30; not sem (10:30-10:30
  // before its window, 11:30-12:30 after it). ebl is closed to lab, xrd of
  // another category, old retired, afm offers no ON_SITE.
  auto q = Query(absl::Hours(8), absl::Hours(20));
  *q.mutable_min_duration() = ToProto(absl::Hours(2));
  EXPECT_EQ(Compare(ana, ana_, q), "fib[ 8h-11h30m 18h-20h ] tem[ 17h30m-20h ] ");
  *q.mutable_min_duration() = ToProto(absl::Hours(1));
  // With 1 h: also fib between its booking's buffer and its window, and sem.
  EXPECT_EQ(Compare(ana, ana_, q),
            "fib[ 8h-11h30m 13h30m-14h30m 18h-20h ] sem[ 11h30m-12h30m ] tem[ 17h30m-20h ] ");
  // Free for the whole range 18:00-19:30: fib and tem.
  EXPECT_EQ(Compare(ana, ana_, Query(absl::Hours(18), absl::Hours(19) + absl::Minutes(30))),
            "fib[ 18h-19h30m ] tem[ 18h-19h30m ] ");
  // After sem's long booking and its buffer, all three.
  EXPECT_EQ(Compare(ana, ana_, Query(absl::Hours(23) + absl::Minutes(30), absl::Hours(26))),
            "fib[ 23h30m-26h ] sem[ 23h30m-26h ] tem[ 23h30m-26h ] ");
}

TEST_F(SearchTest, FiltersByCategoryFacilityModeAndOrganization) {
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  const Principal admin = Who("admin", "", {Role::kConsortiumAdmin});
  auto q = Query(absl::Hours(10), absl::Hours(11) + absl::Minutes(30));
  *q.mutable_min_duration() = ToProto(absl::Minutes(30));
  // ebl is free all day but closed to lab; admin (no organisation) sees it.
  EXPECT_EQ(Compare(ana, ana_, q), "fib[ 10h-11h30m ] ");
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 10h-11h30m ] fib[ 10h-11h30m ] ");
  q.set_facility("facilities/closed");
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 10h-11h30m ] ");
  EXPECT_EQ(Compare(ana, ana_, q), "");
  // For outsider: ebl is its own; fac admits members.
  q.set_organization("organizations/outsider");
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 10h-11h30m ] ");
  q.clear_facility();
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 10h-11h30m ] fib[ 10h-11h30m ] ");
  // Another category.
  q = Query(absl::Hours(10), absl::Hours(12) + absl::Minutes(30), "materials");
  *q.mutable_min_duration() = ToProto(absl::Minutes(30));
  EXPECT_EQ(Compare(ana, ana_, q), "xrd[ 11h30m-12h30m ] ");
  q.set_category("nothing-like-this");
  EXPECT_EQ(Compare(ana, ana_, q), "");
  // LEASE: afm only, blocked on days 2..12 (handover 1 day before the
  // term, return 2 days after); a new lease starts a day after that.
  auto lease = Query(absl::Hours(24 * 2), absl::Hours(24 * 20));
  lease.set_mode(labshare::type::v1::LEASE);
  *lease.mutable_min_duration() = ToProto(absl::Hours(24 * 5));
  EXPECT_EQ(Compare(ana, ana_, lease), "afm[ 312h-480h ] ");
  // TECHNICAL_SERVICE: the copies of tem offer it too.
  q = Query(absl::Hours(18), absl::Hours(19));
  q.set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 18h-19h ] fib[ 18h-19h ] tem[ 18h-19h ] ");
}

TEST_F(SearchTest, PagesAsTheSynchronousForm) {
  const Principal admin = Who("admin", "", {Role::kConsortiumAdmin});
  auto q = Query(absl::Hours(18), absl::Hours(19));
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 18h-19h ] fib[ 18h-19h ] tem[ 18h-19h ] ");
  // Inventory's order (afm ebl fib old sem tem xrd): after tem nothing
  // else matches inventory's filter (xrd is of another category), so
  // inventory's page that ends with tem carries no token and neither does
  // this one (it once did, and a last page came back empty).
  q.set_page_size(1);
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 18h-19h ] | fib[ 18h-19h ] | tem[ 18h-19h ] ");
  q.set_page_size(2);
  // The second page skips sem (busy) and goes on to tem and to the end.
  EXPECT_EQ(Compare(admin, admin_, q), "ebl[ 18h-19h ] fib[ 18h-19h ] | tem[ 18h-19h ] ");
  // Nothing free in fac at 13:00-13:20: inventory's pages are walked to
  // the end for one empty answer.
  q = Query(absl::Hours(13), absl::Hours(13) + absl::Minutes(20));
  q.set_facility("facilities/fac");
  q.set_page_size(1);
  EXPECT_EQ(Compare(admin, admin_, q), "");
}

TEST_F(SearchTest, ErrorsAsTheSynchronousForm) {
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  const Principal admin = Who("admin", "", {Role::kConsortiumAdmin});
  auto q = Query(absl::Hours(8), absl::Hours(20));
  q.clear_category();
  EXPECT_EQ(Compare(ana, ana_, q), "error INVALID_FIELD");
  q = Query(absl::Hours(20), absl::Hours(8));
  EXPECT_EQ(Compare(ana, ana_, q), "error INVALID_INTERVAL");
  q = Query(absl::Hours(8), absl::Hours(24 * 370));
  EXPECT_EQ(Compare(ana, ana_, q), "error RANGE_TOO_LONG");
  // Checked before any candidate: also where the category has none.
  q = Query(absl::Hours(8), absl::Hours(24 * 400), "nothing-like-this");
  EXPECT_EQ(Compare(ana, ana_, q), "error RANGE_TOO_LONG");
  q = Query(absl::Hours(8), absl::Hours(20));
  q.set_page_token("not-a-token");
  EXPECT_EQ(Compare(ana, ana_, q), "error INVALID_PAGE_TOKEN");
  q = Query(absl::Hours(8), absl::Hours(20));
  q.set_organization("organizations/owner");
  EXPECT_EQ(Compare(ana, ana_, q), "error ORGANIZATION_SCOPE");
  q.set_organization("organizations/nobody");
  EXPECT_EQ(Compare(admin, admin_, q), "error ORGANIZATION_NOT_FOUND");
  q = Query(absl::Hours(8), absl::Hours(20));
  q.set_page_size(-1);
  EXPECT_EQ(Compare(ana, ana_, q), "error INVALID_FIELD");
  // Filters over 200 bytes (the cached pages' keys stay small).
  q = Query(absl::Hours(8), absl::Hours(20), std::string(201, 'e'));
  EXPECT_EQ(Compare(ana, ana_, q), "error INVALID_FIELD");
  q = Query(absl::Hours(8), absl::Hours(20), std::string(200, 'e'));
  EXPECT_EQ(Compare(ana, ana_, q), "");
  q.set_facility("facilities/" + std::string(190, 'f'));
  EXPECT_EQ(Compare(ana, ana_, q), "error INVALID_FIELD");
}

TEST_F(SearchTest, WarmCacheAnswersOnTheCallingThreadAsTheSynchronousForm) {
  // A cache that keeps what it read (as deployed): once warm, every fact
  // is cached and the plan runs without blocking_.
  InventoryClient warm_client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  BookingManager warm(store_.get(), &warm_client, &clock_, testing::TestPageTokens());
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  auto q = Query(absl::Hours(8), absl::Hours(20));
  *q.mutable_min_duration() = ToProto(absl::Hours(2));
  const std::string want = "fib[ 8h-11h30m 18h-20h ] tem[ 17h30m-20h ] ";
  EXPECT_EQ(Compare(ana, ana_, q, &warm), want);
  EXPECT_EQ(Compare(ana, ana_, q, &warm), want);
  {
    // Planned from the cache alone: no miss on this thread.
    InventoryClient::CacheOnly cached;
    auto direct = Async(warm, ana, q);
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(direct->instruments_size(), 2);
    EXPECT_FALSE(cached.missed());
  }
  q.set_page_size(1);
  EXPECT_EQ(Compare(ana, ana_, q, &warm), "fib[ 8h-11h30m 18h-20h ] | tem[ 17h30m-20h ] ");
  {
    // A page not read yet: a miss, then planned on blocking_; same answer.
    InventoryClient::CacheOnly cached;
    q.set_page_size(3);
    auto direct = Async(warm, ana, q);
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(direct->instruments_size(), 2);
    EXPECT_TRUE(cached.missed());
  }
  EXPECT_EQ(Compare(ana, ana_, Query(absl::Hours(20), absl::Hours(8)), &warm), "error INVALID_INTERVAL");
}

TEST_F(SearchTest, ManyExcludedInstrumentsAreWalkedInOneFrame) {
  // 300 instruments lab may not use (facility closed), then tem's copies:
  // with page_size 1 every inventory page but the last has no candidate.
  // Warm, the walk must not recurse per page: it runs on a thread with a
  // 256 KiB stack (ASan's frames overflow it at a few frames per page).
  for (int i = 0; i < 300; ++i) {
    AddInstrument(absl::StrCat("c", 1000 + i), "facilities/closed", "blocked", "organizations/outsider");
  }
  AddInstrument("zz", "facilities/fac", "blocked", "organizations/owner");
  InventoryClient warm_client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  BookingManager warm(store_.get(), &warm_client, &clock_, testing::TestPageTokens());
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  auto q = Query(absl::Hours(18), absl::Hours(19), "blocked");
  q.set_page_size(1);
  EXPECT_EQ(Compare(ana, ana_, q, &warm), "zz[ 18h-19h ] ");  // warms the cache
  struct Run {
    BookingManager* manager;
    Principal p;
    v1::SearchAvailableInstrumentsRequest q;
    absl::StatusOr<v1::SearchAvailableInstrumentsResponse> answer;
    bool missed = false;
  } run{&warm, ana, q, absl::UnknownError("not run")};
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
  pthread_t thread;
  ASSERT_EQ(pthread_create(
                &thread, &attr,
                [](void* arg) -> void* {
                  auto* r = static_cast<Run*>(arg);
                  InventoryClient::CacheOnly cached;
                  r->answer = Async(*r->manager, r->p, r->q);
                  r->missed = cached.missed();
                  return nullptr;
                },
                &run),
            0);
  ASSERT_EQ(pthread_join(thread, nullptr), 0);
  pthread_attr_destroy(&attr);
  ASSERT_TRUE(run.answer.ok()) << run.answer.status();
  EXPECT_FALSE(run.missed);  // planned on that thread, from the cache
  ASSERT_EQ(run.answer->instruments_size(), 1);
  EXPECT_EQ(run.answer->instruments(0).instrument(), "instruments/zz");
  EXPECT_EQ(run.answer->next_page_token(), "");
}

TEST_F(SearchTest, ACachedPageListingAnInstrumentThatLostTheModeSkipsIt) {
  // The page is cached (as listed), the instrument read afresh: sem no
  // longer offers ON_SITE. Not a candidate, not FAILED_PRECONDITION.
  InventoryClient warm_client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  BookingManager warm(store_.get(), &warm_client, &clock_, testing::TestPageTokens());
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  auto q = Query(absl::Hours(23) + absl::Minutes(30), absl::Hours(26));
  q.set_page_size(10);
  inv::ListInstrumentsRequest list;
  list.set_category("electron-microscopy");
  list.set_mode(labshare::type::v1::ON_SITE);
  list.set_state(inv::ACTIVE);
  list.set_page_size(10);
  auto page = warm_client.Instruments(list);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ((*page)->instruments_size(), 4);  // ebl fib sem tem
  iv::GetInstrumentRequest g;
  g.set_name("instruments/sem");
  iv::Instrument sem;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &sem, admin_).ok());
  iv::UpdateInstrumentRequest u;
  *u.mutable_instrument() = sem;
  u.mutable_instrument()->clear_modes();
  for (const auto& m : sem.modes()) {
    if (m.mode() != labshare::type::v1::ON_SITE) *u.mutable_instrument()->add_modes() = m;
  }
  u.mutable_update_mask()->add_paths("modes");
  u.set_request_id("sem-no-on-site");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  auto direct = Async(warm, ana, q);
  ASSERT_TRUE(direct.ok()) << direct.status();
  std::string names;
  for (const auto& in : direct->instruments()) absl::StrAppend(&names, in.instrument(), " ");
  EXPECT_EQ(names, "instruments/fib instruments/tem ");
  // The synchronous form lists live: the same.
  EXPECT_EQ(Compare(ana, ana_, q), "fib[ 23h30m-26h ] tem[ 23h30m-26h ] ");
}

TEST_F(SearchTest, OversizedPageRequestsAreAnsweredNotCached) {
  InventoryClient client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  inv::ListInstrumentsRequest list;
  list.set_category("electron-microscopy");
  list.set_page_size(10);
  ASSERT_TRUE(client.Instruments(list).ok());
  {
    InventoryClient::CacheOnly cached;
    auto again = client.Instruments(list);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ((*again)->instruments_size(), 6);  // afm ebl fib old sem tem (any state)
    EXPECT_FALSE(cached.missed());
  }
  list.set_page_token(std::string(InventoryClient::kMaxPageKeyBytes, 't'));
  (void)client.Instruments(list);  // inventory's answer (a bad token) is not what matters
  list.set_category(std::string(InventoryClient::kMaxPageKeyBytes, 'c'));
  list.clear_page_token();
  auto big = client.Instruments(list);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ((*big)->instruments_size(), 0);
  {
    InventoryClient::CacheOnly cached;
    EXPECT_FALSE(client.Instruments(list).ok());
    EXPECT_TRUE(cached.missed());
  }
}

TEST_F(SearchTest, PagesExpireSoonerThanTheOtherFacts) {
  // ttl 1 h, pages 5 s (the default): a new instrument shows within 5 s.
  InventoryClient client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  inv::ListInstrumentsRequest list;
  list.set_category("materials");
  list.set_page_size(10);
  auto first = client.Instruments(list);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->instruments_size(), 1);  // xrd
  ASSERT_TRUE(client.Instrument("instruments/xrd").ok());
  AddInstrument("xrf", "facilities/fac", "materials", "organizations/owner");  // no event reaches this client
  clock_.Advance(absl::Seconds(4));
  {
    InventoryClient::CacheOnly cached;
    auto again = client.Instruments(list);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ((*again)->instruments_size(), 1);
    EXPECT_FALSE(cached.missed());
  }
  clock_.Advance(absl::Seconds(1));
  {
    InventoryClient::CacheOnly cached;
    EXPECT_FALSE(client.Instruments(list).ok());
    EXPECT_TRUE(cached.missed());
  }
  {
    InventoryClient::CacheOnly cached;
    EXPECT_TRUE(client.Instrument("instruments/xrd").ok());  // still within its hour
    EXPECT_FALSE(cached.missed());
  }
  auto later = client.Instruments(list);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ((*later)->instruments_size(), 2);
}

TEST_F(SearchTest, LargePagesArePlannedAndAnsweredOnBlocking) {
  // 10 instruments free all day: a page of more than 8 is planned and
  // answered on blocking_, a page of up to 8 where the calendars came back.
  for (int i = 0; i < 10; ++i) AddInstrument(absl::StrCat("m", i), "facilities/fac", "many", "organizations/owner");
  InventoryClient warm_client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  BookingManager warm(store_.get(), &warm_client, &clock_, testing::TestPageTokens());
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  for (int size : {10, 8}) {
    SCOPED_TRACE(size);
    auto q = Query(absl::Hours(18), absl::Hours(19), "many");
    q.set_page_size(size);
    (void)Compare(ana, ana_, q, &warm);  // warm
    std::promise<std::pair<bool, int>> answer;
    warm.SearchAvailableInstrumentsAsync(ana, q, [&](absl::StatusOr<v1::SearchAvailableInstrumentsResponse> r) {
      answer.set_value({BookingManager::OnBlockingThread(), r.ok() ? r->instruments_size() : -1});
    });
    auto [on_blocking, found] = answer.get_future().get();
    EXPECT_EQ(found, size);
    EXPECT_EQ(on_blocking, size > 8);
  }
}

TEST_F(SearchTest, CachedPagesFollowInventoryEventsAndCallers) {
  InventoryClient warm_client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  BookingManager warm(store_.get(), &warm_client, &clock_, testing::TestPageTokens());
  const Principal ana = Who("ana", "lab", {Role::kLabUser});
  const Principal admin = Who("admin", "", {Role::kConsortiumAdmin});
  auto q = Query(absl::Hours(18), absl::Hours(19));
  q.set_page_size(8);  // planned on the calling thread when cached
  auto names = [&](const Principal& p, const v1::SearchAvailableInstrumentsRequest& r) {
    InventoryClient::CacheOnly cached;
    auto found = Async(warm, p, r);
    std::string out = found.ok() ? "" : "error";
    if (found.ok()) {
      for (const auto& in : found->instruments()) absl::StrAppend(&out, in.instrument().substr(12), " ");
    }
    return std::make_pair(out, cached.missed());
  };
  // Warm as admin, then as lab with the same filters: the cached page is
  // the same, what lab may not use (ebl) is not shown.
  EXPECT_EQ(Compare(admin, admin_, q, &warm), "ebl[ 18h-19h ] fib[ 18h-19h ] tem[ 18h-19h ] ");
  EXPECT_EQ(Compare(ana, ana_, q, &warm), "fib[ 18h-19h ] tem[ 18h-19h ] ");
  EXPECT_EQ(names(ana, q), std::make_pair(std::string("fib tem "), false));
  // Two categories warm at once.
  auto m = Query(absl::Hours(18), absl::Hours(19), "materials");
  m.set_page_size(8);
  EXPECT_EQ(Compare(ana, ana_, m, &warm), "xrd[ 18h-19h ] ");
  EXPECT_EQ(names(ana, m), std::make_pair(std::string("xrd "), false));
  EXPECT_EQ(names(ana, q), std::make_pair(std::string("fib tem "), false));
  // fib retired in inventory: still listed from the cache until its event
  // is applied, then gone (a miss: the pages were forgotten).
  iv::SetInstrumentStateRequest st;
  st.set_name("instruments/fib");
  st.set_state(iv::RETIRED);
  st.set_reason("gone");
  Inv(&iv::InventoryService::Stub::SetInstrumentState, st);
  EXPECT_EQ(names(ana, q), std::make_pair(std::string("fib tem "), false));
  inv::InventoryEvent event;
  event.mutable_instrument_changed()->mutable_instrument()->set_name("instruments/fib");
  EXPECT_GE(warm_client.Invalidate(event), 3u);  // both categories' pages and fib
  EXPECT_EQ(names(ana, q), std::make_pair(std::string("tem "), true));  // read again on blocking_
  EXPECT_EQ(names(ana, q), std::make_pair(std::string("tem "), false));
  EXPECT_EQ(names(ana, m), std::make_pair(std::string("xrd "), true));
}

TEST_F(SearchTest, UncachedInventoryCallsMissUnderCacheOnly) {
  InventoryClient client(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  {
    InventoryClient::CacheOnly cached;
    inv::ListInstrumentsRequest list;
    list.set_category("materials");
    auto raw = client.ListInstruments(list);
    EXPECT_EQ(raw.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(ErrorReason(raw.status()), "INVENTORY_UNAVAILABLE");
    EXPECT_TRUE(cached.missed());
  }
  {
    InventoryClient::CacheOnly cached;
    EXPECT_EQ(client.GetMaintenanceWindow("instruments/fib/maintenanceWindows/x").status().code(),
              absl::StatusCode::kUnavailable);
    EXPECT_TRUE(cached.missed());
  }
  {
    InventoryClient::CacheOnly cached;
    absl::Status used = client.RecordQualificationUse("instruments/tem", "users/ana", day_, day_, "use-1");
    EXPECT_EQ(ErrorReason(used), "INVENTORY_UNAVAILABLE");
    EXPECT_TRUE(cached.missed());
  }
  // Outside a scope they call inventory.
  inv::ListInstrumentsRequest list;
  list.set_category("materials");
  auto raw = client.ListInstruments(list);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->instruments_size(), 1);
}

TEST_F(SearchTest, CalendarsOfSeveralInstrumentsAsEachAlone) {
  // BookingStore::CalendarsAsync against CalendarRange, instrument by
  // instrument (one with nothing in range).
  std::vector<BookingStore::CalendarRead> reads;
  for (const char* id : {"tem", "sem", "fib", "xrd", "afm", "old"}) {
    reads.push_back({keys::Partition(id), id, absl::ToUnixMillis(day_ + absl::Hours(9) + absl::Minutes(30)),
                     absl::ToUnixMillis(day_ + absl::Hours(16))});
  }
  std::promise<absl::StatusOr<std::vector<std::vector<CalendarEntry>>>> answer;
  store_->CalendarsAsync(reads, [&](auto r) { answer.set_value(std::move(r)); });
  auto all = answer.get_future().get();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), reads.size());
  size_t entries = 0;
  for (size_t i = 0; i < reads.size(); ++i) {
    auto alone = store_->CalendarRange(reads[i].partition, reads[i].instrument_id, reads[i].from_ms, reads[i].to_ms);
    ASSERT_TRUE(alone.ok());
    ASSERT_EQ((*all)[i].size(), alone->size()) << reads[i].instrument_id;
    for (size_t k = 0; k < alone->size(); ++k) {
      EXPECT_EQ((*all)[i][k].booking_id, (*alone)[k].booking_id);
      EXPECT_EQ((*all)[i][k].start_ms, (*alone)[k].start_ms);
      EXPECT_EQ((*all)[i][k].end_ms, (*alone)[k].end_ms);
    }
    entries += alone->size();
  }
  // tem 9-17, sem 8-10 and 13-23, fib 12-13 and its window, xrd 9-11.
  EXPECT_EQ(entries, 6u);
  EXPECT_TRUE((*all)[4].empty());
  EXPECT_TRUE((*all)[5].empty());
}

}  // namespace
}  // namespace labshare::booking
