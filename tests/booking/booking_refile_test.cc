// An instrument's operator changes (inventory's UpdateFacility moves every
// instrument of the facility; booking reads one InstrumentChanged each):
// the bookings, leases and service orders made before the change are
// listed by the new operator's staff (ListBookings, ListLeases,
// ListServiceOrders: FACILITY_STAFF see those on instruments their
// organisation owns or operates), no longer by the old operator's; the same
// event twice, or a change of something else, moves nothing.
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/log.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/booking/booking_common.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

using Names = std::vector<std::string>;

class RefileTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    AddOrganization("ops");
    outsider_staff_ = Token("olga", "outsider", {Role::kFacilityStaff});
    ops_staff_ = Token("otto", "ops", {Role::kFacilityStaff});
    ConsumerOptions options;
    options.stream = "{inventory}:outbox";
    options.group = kInventoryEventsGroup;
    options.consumer = "test";
    options.block = absl::ZeroDuration();
    options.retry_initial = absl::ZeroDuration();  // a stopped event is retried in the next round
    consumer_ = std::make_unique<EventConsumer>(pool_.get(), options);
    ASSERT_TRUE(consumer_->EnsureGroup().ok());
    Deliver();  // the seed's events
  }

  void AddOrganization(const std::string& id) {
    iv::CreateOrganizationRequest o;
    o.set_organization_id(id);
    o.mutable_organization()->set_display_name(id);
    o.mutable_organization()->set_type(iv::UNIVERSITY);
    o.mutable_organization()->set_membership_state(iv::MEMBER);
    o.mutable_organization()->set_tier("GENERAL");
    Inv(&iv::InventoryService::Stub::CreateOrganization, o);
  }

  // ana's booking on tem (and `more` after it), her lease of afm and her
  // service order on tem (all paid by lab, on instruments owner owns, in
  // facility fac).
  void SeedDocs(int more = 0) {
    for (int i = 0; i <= more; ++i) {
      v1::Booking b;
      ASSERT_TRUE(Book(absl::Hours(10 + 2 * i), absl::Hours(11 + 2 * i), &b).ok());
      bookings_.push_back(IdOf(b.name()));
    }
    v1::RequestLeaseRequest lr;
    lr.mutable_lease()->set_instrument("instruments/afm");
    *lr.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 3));
    *lr.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 13));
    v1::Lease l;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::RequestLease, lr, &l, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    lease_ = IdOf(l.name());
    bookings_.push_back(lease_);  // its booking starts days after the others
    v1::CreateServiceOrderRequest orq;
    orq.set_service_order_id("ord-ana-1");
    orq.mutable_service_order()->set_instrument("instruments/tem");
    orq.mutable_service_order()->set_service_entry_id("imaging");
    orq.mutable_service_order()->set_sample_count(2);
    v1::ServiceOrder o;
    s = Call(stub_.get(), &v1::BookingService::Stub::CreateServiceOrder, orq, &o, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // UpdateFacility: fac's operator (and so tem's and afm's) becomes `org`.
  void Operate(const std::string& org) {
    iv::UpdateFacilityRequest r;
    r.mutable_facility()->set_name("facilities/fac");
    r.mutable_facility()->set_operator_organization("organizations/" + org);
    r.mutable_update_mask()->add_paths("operator_organization");
    Inv(&iv::InventoryService::Stub::UpdateFacility, r);
  }

  // Something else of tem changes (its etag moves, its operator does not),
  // and booking handles it.
  void RenameTem() {
    iv::UpdateInstrumentRequest u;
    u.mutable_instrument()->set_name("instruments/tem");
    u.mutable_instrument()->set_display_name("TEM renamed");
    u.mutable_update_mask()->add_paths("display_name");
    Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
    Deliver();
  }

  // Every inventory event not yet handled, through booking's handler;
  // how many were acknowledged.
  int Deliver() {
    int handled = 0;
    for (int round = 0; round < 10; ++round) {
      auto n = consumer_->PollOnce(InventoryEventHandler(manager_.get()));
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok() || *n == 0) break;
      handled += *n;
    }
    return handled;
  }

  // Every page of a List call (one item a page), following tokens; the ids
  // of what `items` takes from each answer, in order.
  template <typename Req, typename Resp, typename Items>
  Names AllPages(grpc::Status (v1::BookingService::Stub::*list)(grpc::ClientContext*, const Req&, Resp*),
                 const std::string& token, Items items) {
    Names out;
    Req r;
    r.set_page_size(1);
    for (int page = 0; page < 100; ++page) {
      Resp resp;
      auto s = Call(stub_.get(), list, r, &resp, token);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const auto& item : items(resp)) out.push_back(IdOf(item.name()));
      if (resp.next_page_token().empty()) break;
      r.set_page_token(resp.next_page_token());
    }
    return out;
  }
  Names Bookings(const std::string& token) {
    return AllPages(&v1::BookingService::Stub::ListBookings, token,
                    [](const v1::ListBookingsResponse& r) -> const auto& { return r.bookings(); });
  }
  Names Leases(const std::string& token) {
    return AllPages(&v1::BookingService::Stub::ListLeases, token,
                    [](const v1::ListLeasesResponse& r) -> const auto& { return r.leases(); });
  }
  Names Orders(const std::string& token) {
    return AllPages(&v1::BookingService::Stub::ListServiceOrders, token,
                    [](const v1::ListServiceOrdersResponse& r) -> const auto& { return r.service_orders(); });
  }

  // Bookings, leases and orders a staff token lists.
  void ExpectSeesAll(const std::string& token, const std::string& who) {
    EXPECT_EQ(Bookings(token), bookings_) << who;
    EXPECT_EQ(Leases(token), Names{lease_}) << who;
    EXPECT_EQ(Orders(token), Names{"ord-ana-1"}) << who;
  }
  void ExpectSeesNone(const std::string& token, const std::string& who) {
    EXPECT_EQ(Bookings(token), Names{}) << who;
    EXPECT_EQ(Leases(token), Names{}) << who;
    EXPECT_EQ(Orders(token), Names{}) << who;
  }

  // Every listing index of every partition: key -> [(member, score)].
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> Indexes() {
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> out;
    std::string cursor = "0";
    do {
      auto v = pool_->Command({"SCAN", cursor, "MATCH", "{bk:*}:ls:*", "COUNT", "1000"});
      EXPECT_TRUE(v.ok());
      if (!v.ok()) break;
      cursor = v->elements[0].str;
      for (const auto& k : v->elements[1].elements) {
        auto type = pool_->Command({"TYPE", k.str});
        if (type->str != "zset") continue;
        auto members = pool_->Command({"ZRANGE", k.str, "0", "-1", "WITHSCORES"});
        auto& entries = out[k.str];
        for (size_t i = 0; i + 1 < members->elements.size(); i += 2) {
          entries.push_back({members->elements[i].str, members->elements[i + 1].str});
        }
      }
    } while (cursor != "0");
    return out;
  }
  // Entries of one organisation's indexes, over all partitions and kinds.
  int64_t OrgEntries(const std::string& org) {
    int64_t n = 0;
    for (int p = 0; p < kPartitions; ++p) {
      for (char kind : {'b', 'l', 'o'}) n += pool_->Command({"ZCARD", keys::ListBy(p, kind, "org", org)})->integer;
    }
    return n;
  }

  // tem's and afm's ListOperator records gone, as a version before them
  // left the instruments.
  void DropRecords() {
    for (const char* in : {"tem", "afm"}) {
      ASSERT_TRUE(pool_->Command({"DEL", keys::ListOperator(keys::Partition(in), in)}).ok());
    }
  }
  // Documents an older version (no re-filing, no records) filed under
  // outsider, then did not follow the change of operator to ops.
  void SeedAsAnOlderVersionLeftThem() {
    Operate("outsider");
    Deliver();
    SeedDocs();
    DropRecords();
    Operate("ops");  // its events stay unread, as the older version left them
  }
  void ExpectFiledUnderOps() {
    ExpectSeesAll(ops_staff_, "ops staff");
    ExpectSeesNone(outsider_staff_, "outsider staff");
    EXPECT_EQ(OrgEntries("outsider"), 0);
    EXPECT_EQ(OrgEntries("ops"), 4);  // the booking, the lease's booking, the lease, the order
    EXPECT_EQ(OrgEntries("lab"), 4);
    for (const char* in : {"tem", "afm"}) {
      EXPECT_EQ(pool_->Command({"HGET", keys::ListOperator(keys::Partition(in), in), "org"})->str,
                "organizations/ops")
          << in;
    }
  }

  std::unique_ptr<EventConsumer> consumer_;
  std::string outsider_staff_, ops_staff_;
  Names bookings_;  // by reserved start
  std::string lease_;
};

TEST_F(RefileTest, NewOperatorsStaffListEarlierBookingsLeasesAndOrders) {
  SeedDocs();
  ExpectSeesAll(staff_, "owner staff");
  ExpectSeesNone(outsider_staff_, "outsider staff, before");

  Operate("outsider");
  Deliver();
  ExpectSeesAll(outsider_staff_, "outsider staff, operator");
  ExpectSeesAll(staff_, "owner staff, still the owner");

  Operate("ops");
  Deliver();
  ExpectSeesAll(ops_staff_, "ops staff, operator");
  ExpectSeesNone(outsider_staff_, "outsider staff, operator no more");
  ExpectSeesAll(staff_, "owner staff, still the owner");
  // Off the old operator's indexes, not only filtered out.
  EXPECT_EQ(OrgEntries("outsider"), 0);
  EXPECT_EQ(OrgEntries("ops"), 4);  // the booking, the lease's booking, the lease, the order
  // lab pays: its entries stay whoever operates.
  EXPECT_EQ(OrgEntries("lab"), 4);

  // Back to the owner: the owner's entries stay, ops's go.
  Operate("owner");
  Deliver();
  ExpectSeesNone(ops_staff_, "ops staff, operator no more");
  ExpectSeesAll(staff_, "owner staff");
  EXPECT_EQ(OrgEntries("ops"), 0);
  EXPECT_EQ(OrgEntries("owner"), 4);
}

TEST_F(RefileTest, RedeliveredOrUnrelatedEventsMoveNothing) {
  SeedDocs();
  Operate("outsider");
  Deliver();
  ExpectSeesAll(outsider_staff_, "outsider staff");
  const auto before = Indexes();
  ASSERT_FALSE(before.empty());

  // Every inventory event once more (the group read again from the
  // start, as after acknowledgements lost).
  ASSERT_TRUE(pool_->Command({"XGROUP", "SETID", "{inventory}:outbox", kInventoryEventsGroup, "0"}).ok());
  EXPECT_EQ(Deliver(), pool_->Command({"XLEN", "{inventory}:outbox"})->integer);
  EXPECT_EQ(Indexes(), before);
  ExpectSeesAll(outsider_staff_, "outsider staff, after the redelivery");

  RenameTem();
  EXPECT_EQ(Indexes(), before);
  ExpectSeesAll(outsider_staff_, "outsider staff, after another change");
  ExpectSeesAll(staff_, "owner staff, after another change");
}

// An InventoryEvent that does not parse can never be applied: acknowledged,
// with a warning naming its entry (as usage and notify's feeds do), not
// silently.
TEST_F(RefileTest, AnUndecodableInventoryEventIsAcknowledgedWithAWarning) {
  auto added = pool_->Command({"XADD", "{inventory}:outbox", "*", "type", "labshare.inventory.v1.InventoryEvent",
                               "payload", std::string("\xff\xff\xff\xff", 4)});
  ASSERT_TRUE(added.ok() && !added->is_error());
  SetQuietLogging(false);  // the fixture silences warnings
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Deliver(), 1);
  FlushLogs();
  SetQuietLogging(true);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("undecodable inventory event"), std::string::npos) << log;
  EXPECT_NE(log.find(added->str), std::string::npos) << log;
  auto pending = pool_->Command({"XPENDING", "{inventory}:outbox", kInventoryEventsGroup});
  EXPECT_EQ(pending->elements[0].integer, 0);
}

TEST_F(RefileTest, AStopBetweenStepsLeavesTheEventPendingAndItsRetryCompletes) {
  SeedDocs(3);  // four bookings on tem
  Operate("outsider");
  Deliver();
  ExpectSeesAll(outsider_staff_, "outsider staff");

  Operate("ops");
  // Batches of one document, and a stop after the third step: afm (the
  // announcement, its one booking with its lease, the record) completes,
  // tem does not.
  RefileOptions stop;
  stop.batch = 1;
  stop.max_steps = 3;
  auto handled = consumer_->PollOnce(InventoryEventHandler(manager_.get(), stop));
  ASSERT_TRUE(handled.ok()) << handled.status();
  auto pending = pool_->Command({"XPENDING", "{inventory}:outbox", kInventoryEventsGroup});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements[0].integer, 1);  // tem's InstrumentChanged, not acknowledged
  const int tem = keys::Partition("tem");
  EXPECT_EQ(pool_->Command({"HGET", keys::ListOperator(tem, "tem"), "org"})->str, "organizations/outsider");
  EXPECT_EQ(pool_->Command({"HGET", keys::ListOperator(keys::Partition("afm"), "afm"), "org"})->str,
            "organizations/ops");
  // Half way: two of tem's bookings moved, the lease's too.
  EXPECT_EQ(Bookings(ops_staff_), (Names{bookings_[0], bookings_[1], lease_}));
  EXPECT_EQ(Bookings(outsider_staff_), Names{});  // filtered out per document meanwhile

  // The consumer comes back: its pending event first, from the start.
  Deliver();
  pending = pool_->Command({"XPENDING", "{inventory}:outbox", kInventoryEventsGroup});
  EXPECT_EQ(pending->elements[0].integer, 0);
  ExpectSeesAll(ops_staff_, "ops staff");
  ExpectSeesNone(outsider_staff_, "outsider staff");
  EXPECT_EQ(OrgEntries("outsider"), 0);
  EXPECT_EQ(OrgEntries("ops"), 7);  // four bookings, the lease's booking, the lease, the order
  EXPECT_EQ(pool_->Command({"HGET", keys::ListOperator(tem, "tem"), "org"})->str, "organizations/ops");
}

// A change reverted while the first re-filing stopped part-way, the revert
// handled first (by another replica: the stopped event stays pending with
// the first): the entries the first one moved come back, none stays behind.
TEST_F(RefileTest, ARevertHandledBeforeAStoppedRefilingRestoresEveryEntry) {
  SeedDocs(3);
  Operate("outsider");
  Deliver();
  Operate("ops");
  RefileOptions stop;
  stop.batch = 1;
  stop.max_steps = 3;
  ASSERT_TRUE(consumer_->PollOnce(InventoryEventHandler(manager_.get(), stop)).ok());
  EXPECT_EQ(Bookings(ops_staff_), (Names{bookings_[0], bookings_[1], lease_}));  // half way
  Operate("outsider");  // reverted
  ConsumerOptions other;
  other.stream = "{inventory}:outbox";
  other.group = kInventoryEventsGroup;
  other.consumer = "another-replica";
  EventConsumer replica(pool_.get(), other);
  auto handled = replica.PollOnce(InventoryEventHandler(manager_.get()));
  ASSERT_TRUE(handled.ok()) << handled.status();
  ExpectSeesAll(outsider_staff_, "outsider staff, after the revert");
  ExpectSeesNone(ops_staff_, "ops staff, after the revert");
  EXPECT_EQ(OrgEntries("ops"), 0);
  EXPECT_EQ(OrgEntries("outsider"), 7);
  // The stopped event, retried: older than the record, it moves nothing.
  Deliver();
  ExpectSeesAll(outsider_staff_, "outsider staff, after the retry");
  EXPECT_EQ(OrgEntries("ops"), 0);
  EXPECT_EQ(OrgEntries("outsider"), 7);
}

// As if booking had never handled an event of tem and afm (documents of a
// version before the records): the old operator is not in a record, it is
// found in the partition's "org" indexes.
TEST_F(RefileTest, WithoutARecordTheOldOperatorIsFoundInItsIndexes) {
  SeedDocs();
  Operate("outsider");
  Deliver();
  DropRecords();
  Operate("ops");
  Deliver();
  ExpectSeesAll(ops_staff_, "ops staff");
  ExpectSeesNone(outsider_staff_, "outsider staff");
  EXPECT_EQ(OrgEntries("outsider"), 0);
  EXPECT_EQ(OrgEntries("ops"), 4);
  EXPECT_EQ(OrgEntries("lab"), 4);  // the payer's stay
  EXPECT_EQ(OrgEntries("owner"), 4);
  // Known from then on.
  Operate("lab");
  Deliver();
  EXPECT_EQ(OrgEntries("ops"), 0);
}

// Booking starts on data an older version left: the instruments whose
// entries are filed under a former operator are re-filed to inventory's
// operator by the start-up pass, before any event is read.
TEST_F(RefileTest, TheStartUpPassRefilesEntriesAnOlderVersionLeftUnderAFormerOperator) {
  SeedAsAnOlderVersionLeftThem();
  ExpectSeesNone(ops_staff_, "ops staff, before");
  auto refiled = manager_->RefileStaleOperators();
  ASSERT_TRUE(refiled.ok()) << refiled.status();
  EXPECT_EQ(*refiled, 2);  // tem and afm
  ExpectFiledUnderOps();
  // Once: another start does nothing.
  const auto after = Indexes();
  refiled = manager_->RefileStaleOperators();
  ASSERT_TRUE(refiled.ok()) << refiled.status();
  EXPECT_EQ(*refiled, 0);
  // The events the older version left unread move nothing.
  Deliver();
  EXPECT_EQ(Indexes(), after);
}

// Two replicas start at once, while a third follows the events: one of
// them from an inventory read before a later change (late operates now).
// Whatever the interleaving (batches of one document), every entry ends
// under the latest operator and none under a former one.
TEST_F(RefileTest, StartUpPassesBesideEachOtherAndAnEventEndUnderTheLatestOperator) {
  SeedAsAnOlderVersionLeftThem();
  std::map<std::string, CurrentOperator> before_lab;
  for (const char* in : {"tem", "afm"}) {
    iv::GetInstrumentRequest g;
    g.set_name(absl::StrCat("instruments/", in));
    iv::Instrument got;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &got, admin_).ok());
    before_lab[in] = {got.operator_organization(), std::stoll(got.etag())};
  }
  AddOrganization("late");
  Operate("late");
  RefileOptions small;
  small.batch = 1;
  std::vector<std::thread> threads;
  std::vector<absl::Status> passes(2);
  threads.emplace_back([&] {
    passes[0] = RefileStaleOperators(
        *store_,
        [&](const std::string& id) -> absl::StatusOr<std::optional<CurrentOperator>> { return before_lab.at(id); },
        small).status();
  });
  threads.emplace_back([&] { passes[1] = manager_->RefileStaleOperators(small).status(); });
  threads.emplace_back([&] { Deliver(); });
  for (auto& t : threads) t.join();
  for (const auto& s : passes) EXPECT_TRUE(s.ok()) << s;
  Deliver();  // an event refused meanwhile (CONCURRENT_MODIFICATION) is retried
  ExpectSeesAll(Token("lena", "late", {Role::kFacilityStaff}), "late staff");
  ExpectSeesAll(staff_, "owner staff");
  ExpectSeesNone(outsider_staff_, "outsider staff");
  ExpectSeesNone(ops_staff_, "ops staff");
  EXPECT_EQ(OrgEntries("outsider"), 0);
  EXPECT_EQ(OrgEntries("ops"), 0);
  EXPECT_EQ(OrgEntries("late"), 4);
  EXPECT_EQ(OrgEntries("lab"), 4);
  for (const char* in : {"tem", "afm"}) {
    EXPECT_EQ(pool_->Command({"HGET", keys::ListOperator(keys::Partition(in), in), "org"})->str,
              "organizations/late")
        << in;
  }
}

// A replica whose inventory cache still holds the instrument from before
// the change (up to its TTL, or until its outbox watcher drops it) would
// file a new booking under the old operator once the instrument was
// re-filed, or behind the re-filing's scan: its create step answers
// ABORTED instead, forgets the instrument, and the retry files it right.
TEST_F(RefileTest, ACreateFromAnOperatorCachedBeforeTheChangeIsRefusedUntilReadAgain) {
  SeedDocs();
  InventoryClient cached(ServiceChannel(*inv_server_, "booking"), &clock_, absl::Hours(1));
  BookingManager replica(store_.get(), &cached, &clock_, testing::TestPageTokens());
  const Principal ana{"ana", "lab", {Role::kLabUser}, clock_.Now() + absl::Hours(24)};
  auto request = [&](int from) {
    v1::CreateBookingRequest r;
    r.set_request_id(absl::StrCat("stale-", from));
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/ana");
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(from));
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(from + 1));
    return r;
  };
  ASSERT_TRUE(cached.Instrument("instruments/tem").ok());  // owner operates, as cached

  // While the change is re-filed (announced, stopped before any batch).
  Operate("outsider");
  RefileOptions stop;
  stop.max_steps = 1;
  ASSERT_TRUE(consumer_->PollOnce(InventoryEventHandler(manager_.get(), stop)).ok());
  auto refused = replica.CreateBooking(ana, request(14));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAborted) << refused.status();
  EXPECT_EQ(ErrorReason(refused.status()), "CONCURRENT_MODIFICATION");
  auto again = replica.CreateBooking(ana, request(14));  // the instrument read anew
  ASSERT_TRUE(again.ok()) << again.status();
  Deliver();
  bookings_.insert(bookings_.begin() + 1, IdOf(again->name()));
  ExpectSeesAll(outsider_staff_, "outsider staff");

  // After the change was re-filed.
  ASSERT_TRUE(cached.Instrument("instruments/tem").ok());  // outsider operates, as cached
  Operate("ops");
  Deliver();
  refused = replica.CreateBooking(ana, request(16));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAborted) << refused.status();
  again = replica.CreateBooking(ana, request(16));
  ASSERT_TRUE(again.ok()) << again.status();
  bookings_.insert(bookings_.begin() + 2, IdOf(again->name()));
  ExpectSeesAll(ops_staff_, "ops staff");
  ExpectSeesNone(outsider_staff_, "outsider staff");
  EXPECT_EQ(OrgEntries("outsider"), 0);

  // Another change of tem (not its operator): the cached operator is still
  // right, nothing is refused.
  RenameTem();
  auto kept = replica.CreateBooking(ana, request(18));
  EXPECT_TRUE(kept.ok()) << kept.status();

  // A service order (no create step of its own: a guarded commit) alike.
  ASSERT_TRUE(cached.Instrument("instruments/tem").ok());  // ops operates, as cached
  Operate("outsider");
  Deliver();
  v1::CreateServiceOrderRequest order;
  order.set_service_order_id("ord-ana-2");
  order.set_request_id("stale-order");
  order.mutable_service_order()->set_instrument("instruments/tem");
  order.mutable_service_order()->set_service_entry_id("imaging");
  order.mutable_service_order()->set_sample_count(1);
  auto refused_order = replica.CreateServiceOrder(ana, order);
  EXPECT_EQ(refused_order.status().code(), absl::StatusCode::kAborted) << refused_order.status();
  EXPECT_EQ(ErrorReason(refused_order.status()), "CONCURRENT_MODIFICATION");
  auto placed = replica.CreateServiceOrder(ana, order);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(Orders(outsider_staff_), (Names{"ord-ana-2", "ord-ana-1"}));
  // Its retry, from a cache that is stale again: the first answer.
  ASSERT_TRUE(cached.Instrument("instruments/tem").ok());
  Operate("ops");
  Deliver();
  auto replayed = replica.CreateServiceOrder(ana, order);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->SerializeAsString(), placed->SerializeAsString());
}

// A window's cuts follow the request that scheduled it
// (EventHeader.trace_id): inventory's MaintenanceWindowChanged carries the
// CreateMaintenanceWindow call's trace id, and the booking events of the
// step booking runs when it reads that event (the booking it cancelled,
// MaintenanceApplied) carry the same one, under booking's own name.
TEST_F(RefileTest, AnOutagesEventsCarryTheTraceIdOfTheWindowsRequest) {
  v1::Booking booked;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(11), &booked).ok());
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  mw.mutable_maintenance_window()->set_reason("cooling failure");
  mw.mutable_maintenance_window()->set_outage(true);
  auto ctx = Ctx(admin_);
  ctx->AddMetadata("x-trace-id", "outage-7");
  iv::MaintenanceWindow window;
  grpc::Status created = inventory_->CreateMaintenanceWindow(ctx.get(), mw, &window);
  ASSERT_TRUE(created.ok()) << created.error_message();

  auto raw = pool_->Command({"XRANGE", "{inventory}:outbox", "-", "+"});
  ASSERT_TRUE(raw.ok()) << raw.status();
  int windows = 0;
  for (const auto& entry : raw->elements) {
    const auto& fields = entry.elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      iv::InventoryEvent e;
      if (fields[i].str != "payload" || !e.ParseFromString(fields[i + 1].str)) continue;
      if (!e.has_maintenance_window_changed()) continue;
      ++windows;
      EXPECT_EQ(e.header().trace_id(), "outage-7");
      EXPECT_EQ(e.header().actor(), "users/admin");
    }
  }
  EXPECT_EQ(windows, 1);

  EXPECT_GT(Deliver(), 0);
  int cancelled = 0, applied = 0;
  for (const auto& e : Events()) {
    if (e.has_booking_cancelled() && e.booking_cancelled().booking().name() == booked.name()) {
      ++cancelled;
      EXPECT_TRUE(e.booking_cancelled().booking().cancelled_by_outage());
      EXPECT_EQ(e.header().trace_id(), "outage-7");
      EXPECT_EQ(e.header().actor(), "services/booking");
    }
    if (e.has_maintenance_applied()) {
      ++applied;
      EXPECT_EQ(e.header().trace_id(), "outage-7");
    }
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_EQ(applied, 1);
}

}  // namespace
}  // namespace labshare::booking
