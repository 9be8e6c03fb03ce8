// Billing driven by real booking events: the booking fixture (inventory and
// booking in process on a real Redis, fake clock) produces bookings, leases
// and orders; billing consumes the booking outboxes with its consumer group
// and is checked to the minor unit. After every test the ledger must balance:
// debits equal credits overall, per posting and per organisation.
#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/outbox_trim.h"

#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using booking::BookingServiceTest;

class BillingTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    reader_ = std::make_unique<testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<BillingStore>(pool_.get());
    billing_ = std::make_unique<BillingManager>(bstore_.get(), reader_.get(), &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                                                labshare::testing::TestPageTokens());
    for (int p = 0; p < booking::kPartitions; ++p) {
      ConsumerOptions o;
      o.stream = booking::keys::Outbox(p);
      o.group = kBookingEventsGroup;
      o.consumer = "billing-test";
      o.block = absl::ZeroDuration();
      consumers_.push_back(std::make_unique<EventConsumer>(pool_.get(), o));
      ASSERT_TRUE(consumers_.back()->EnsureGroup().ok());
    }
    billing_admin_.user_id = "root";
    billing_admin_.roles = {Role::kConsortiumAdmin};
  }

  void TearDown() override {
    if (billing_) CheckLedger();
    BookingServiceTest::TearDown();
  }

  // Consumes every pending booking event; returns how many were acknowledged.
  int Drain() {
    int total = 0;
    for (int round = 0; round < 10; ++round) {
      int n = 0;
      for (auto& c : consumers_) {
        // The service's path: a batch per read (ApplyBookingEvents).
        auto applied = c->PollBatch([&](const std::vector<StreamEvent>& events) {
          return billing_->ApplyBookingEvents(events);
        });
        EXPECT_TRUE(applied.ok()) << applied.status();
        n += applied.ok() ? *applied : 0;
      }
      total += n;
      if (n == 0) break;
    }
    return total;
  }

  // Every posting balances (overall and per owner), and so does the ledger.
  void CheckLedger() {
    auto members = bstore_->docs().IndexRange(keys::Index("posting"), "", 100000);
    ASSERT_TRUE(members.ok());
    for (const auto& m : *members) {
      auto doc = bstore_->docs().Get(keys::Doc("posting", m.substr(m.find('|') + 1)));
      ASSERT_TRUE(doc.ok() && doc->has_value());
      v1::Posting posting;
      ASSERT_TRUE(posting.ParseFromString((*doc)->data));
      std::vector<v1::Entry> entries(posting.entries().begin(), posting.entries().end());
      EXPECT_TRUE(CheckBalanced(entries).ok()) << posting.name() << " " << CheckBalanced(entries);
    }
    auto balances = billing_->AllBalances();
    ASSERT_TRUE(balances.ok());
    int64_t sum = 0;
    for (const auto& [field, v] : *balances) sum += v;
    EXPECT_EQ(sum, 0) << "sum of debits minus credits over every account";
  }

  std::vector<v1::Charge> Charges(const std::string& payer = "") {
    v1::ListChargesRequest r;
    r.set_payer_organization(payer);
    r.set_page_size(500);
    auto out = billing_->ListCharges(billing_admin_, r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::vector<v1::Charge>(out->charges().begin(), out->charges().end())
                    : std::vector<v1::Charge>();
  }

  // Ana's ten-day lease of the AFM (3,000.00 CNY a day, deposit 1,000.00),
  // approved and handed over at day_ + 24 h (the clock set there); billing
  // has drained the handover.
  void HandOverLease(bk::Lease* lease) {
    bk::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
    bk::Lease out;
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, lease, ana_).ok());
    bk::ApproveLeaseRequest a;
    a.set_name(lease->name());
    a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
    *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 100000);
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_).ok());
    bk::RecordHandoverRequest h;
    h.set_name(lease->name());
    h.set_condition_notes("tip new");
    clock_.Set(day_ + absl::Hours(24));
    auto handed = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
    ASSERT_TRUE(handed.ok()) << handed.error_code() << " " << GrpcErrorReason(handed) << " " << handed.error_message();
    Drain();
  }

  // Every event in billing's outbox, in order.
  std::vector<v1::BillingEvent> OutboxEvents() {
    auto raw = pool_->Command({"XRANGE", keys::Outbox(), "-", "+"});
    EXPECT_TRUE(raw.ok()) << raw.status();
    std::vector<v1::BillingEvent> events;
    if (!raw.ok()) return events;
    for (const auto& entry : raw->elements) {
      v1::BillingEvent e;
      EXPECT_TRUE(e.ParseFromString(entry.elements[1].elements[3].str));
      events.push_back(std::move(e));
    }
    return events;
  }

  std::vector<v1::CorrectionPosted> CorrectionsPosted() {
    std::vector<v1::CorrectionPosted> out;
    for (const auto& e : OutboxEvents()) {
      if (e.has_correction_posted()) out.push_back(e.correction_posted());
    }
    return out;
  }

  // An ADJUST of the charge's posting, entries to be added (AddEntry).
  static v1::PostCorrectionRequest Adjustment(const v1::Charge& charge) {
    v1::PostCorrectionRequest r;
    r.set_posting(charge.posting());
    r.set_mode(v1::PostCorrectionRequest::ADJUST);
    r.set_reason("priced at the old rate");
    return r;
  }

  // subsidyPools/voucher (CNY, `bps` of each charge, no cap), created and
  // topped up with `amount` by `by`.
  void FundVoucher(const Principal& by, const std::string& display_name, int32_t bps, int64_t amount) {
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id("voucher");
    cp.mutable_subsidy_pool()->set_display_name(display_name);
    cp.mutable_subsidy_pool()->set_currency_code("CNY");
    cp.mutable_subsidy_pool()->set_percentage_bps(bps);
    ASSERT_TRUE(billing_->CreateSubsidyPool(by, cp).ok());
    v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/voucher");
    *top.mutable_amount() = MakeMoney("CNY", amount);
    ASSERT_TRUE(billing_->TopUpSubsidyPool(by, top).ok());
  }

  // One entry of an ADJUST: `amount` CNY on the debit or credit side.
  static void AddEntry(v1::PostCorrectionRequest& r, const std::string& account, const std::string& counterparty,
                       bool debit, int64_t amount) {
    v1::Entry* e = r.add_entries();
    e->set_account(account);
    e->set_counterparty(counterparty);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", amount);
  }

  int64_t AccountBalance(const std::string& account, const std::string& counterparty = "") {
    v1::GetAccountBalanceRequest r;
    r.set_name(account);
    r.set_counterparty(counterparty);
    auto b = billing_->GetAccountBalance(billing_admin_, r);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? b->balance().amount_minor() : -1;
  }

  // Books [from, to) on tem for ana, checks in and out at the given offsets
  // (the check-out with `traceparent` when given).
  bk::Booking Session(absl::Duration from, absl::Duration to, absl::Duration in, absl::Duration out,
                      const std::string& traceparent = "") {
    bk::Booking b, done;
    EXPECT_TRUE(Book(from, to, &b).ok());
    clock_.Set(day_ + in);
    bk::CheckInRequest ci;
    ci.set_name(b.name());
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_).ok());
    clock_.Set(day_ + out);
    bk::CheckOutRequest co;
    co.set_name(b.name());
    auto ctx = Ctx(ana_);
    if (!traceparent.empty()) ctx->AddMetadata("traceparent", traceparent);
    EXPECT_TRUE(stub_->CheckOut(ctx.get(), co, &done).ok());
    return done;
  }

  // Defined below (a service order whose report the client accepted).
  void ServiceOrderToAcceptedReport();
  // The same order up to its delivered report (at day + 11:00), not accepted
  // yet: its name.
  std::string ServiceOrderToDeliveredReport();

  std::unique_ptr<testing::DirectInventory> reader_;
  std::unique_ptr<BillingStore> bstore_;
  std::unique_ptr<BillingManager> billing_;
  std::vector<std::unique_ptr<EventConsumer>> consumers_;
  Principal billing_admin_;
};

// EventHeader.trace_id: billing's events carry the trace id of the call
// that caused them: a billing call's own (the principal's, set per call by
// the server), and for what billing posts from a booking event (the charge,
// its subsidy lines) the trace id that event carries, so one id follows a
// check-out from booking's log to its charge.
TEST_F(BillingTest, EventsCarryTheTraceIdOfTheCallThatCausedThem) {
  Principal traced = billing_admin_;
  traced.trace_id = "fund-voucher-trace";
  FundVoucher(traced, "Innovation voucher", 5000, 50000);

  const bk::Booking done = Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10),
                                   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  ASSERT_EQ(done.state(), bk::Booking::COMPLETED);
  EXPECT_GT(Drain(), 0);

  std::map<std::string, std::vector<std::string>> traces;  // payload -> trace ids, in order
  for (const auto& e : OutboxEvents()) {
    const auto* field = e.GetDescriptor()->FindFieldByNumber(e.payload_case());
    ASSERT_NE(field, nullptr);
    traces[field->name()].push_back(e.header().trace_id());
  }
  const std::string checkout = "0af7651916cd43dd8448eb211c80319c";
  EXPECT_EQ(traces, (std::map<std::string, std::vector<std::string>>{
                        {"subsidy_pool_changed", {"fund-voucher-trace", "fund-voucher-trace"}},  // created, topped up
                        {"subsidy_applied", {checkout}},
                        {"charge_posted", {checkout}},
                    }));
}

// A booking event billing can never read (CORRUPT_EVENT) is parked, not
// retried for ever: it goes to "{bk:P}:outbox:parked:billing" with its
// fields and the reason, billing's group has nothing pending, and the
// outbox can be trimmed past it (common/events.h).
TEST_F(BillingTest, AnUnreadableBookingEventIsParkedAndNoLongerHoldsTheOutbox) {
  const std::string stream = booking::keys::Outbox(3);
  // An hour old on Redis's clock: past the trimmer's safety window.
  auto t = pool_->Command({"TIME"});
  ASSERT_TRUE(t.ok() && t->is_array());
  const std::string id = absl::StrCat(std::stoll(t->elements[0].str) * 1000 - 3600 * 1000, "-0");
  const std::string garbage("\xff\xff\xff\xff", 4);  // not a protobuf message
  auto added = pool_->Command({"XADD", stream, id, "type", "labshare.booking.v1.BookingEvent", "payload", garbage});
  ASSERT_TRUE(added.ok() && !added->is_error()) << (added.ok() ? added->str : added.status().ToString());
  EXPECT_EQ(Drain(), 1);  // acknowledged by parking
  auto pending = pool_->Command({"XPENDING", stream, kBookingEventsGroup});
  ASSERT_TRUE(pending.ok() && pending->is_array());
  EXPECT_EQ(pending->elements[0].integer, 0);
  auto parked = pool_->Command({"XRANGE", stream + ":parked:billing", "-", "+"});
  ASSERT_TRUE(parked.ok() && parked->is_array());
  ASSERT_EQ(parked->elements.size(), 1u);
  std::map<std::string, std::string> fields;
  const auto& kv = parked->elements[0].elements[1].elements;
  for (size_t i = 0; i + 1 < kv.size(); i += 2) fields[kv[i].str] = kv[i + 1].str;
  EXPECT_EQ(fields["type"], "labshare.booking.v1.BookingEvent");
  EXPECT_EQ(fields["payload"], garbage);
  EXPECT_EQ(fields["id"], id);
  EXPECT_EQ(fields["group"], "billing");
  EXPECT_EQ(fields["consumer"], "billing-test");
  EXPECT_EQ(fields["reason"], "DATA_LOSS CORRUPT_EVENT: unreadable booking event " + id);
  // Not handed again.
  EXPECT_EQ(Drain(), 0);
  // Nothing of billing's holds the outbox back.
  auto trimmed = OutboxTrimmer(pool_.get(), absl::Minutes(1)).Trim(stream, {kBookingEventsGroup});
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(trimmed->skipped, "");
  EXPECT_EQ(trimmed->held_by, "");
  EXPECT_EQ(trimmed->trimmed, 1);
}

// tem: 500.00 CNY per hour for members, billed on actual time in 15-minute
// steps; missed fee 50 %, late cancellation fee 25 % of the reserved time.
// A request_id belongs to its caller (types.proto): another administrator
// sending the same request_id with the same content is REQUEST_ID_REUSED,
// never the first administrator's pool; one pool exists.
TEST_F(BillingTest, AnotherCallersSameRequestIsReused) {
  Principal other = billing_admin_;
  other.user_id = "root-2";
  v1::CreateSubsidyPoolRequest cp;
  cp.mutable_subsidy_pool()->set_display_name("Shared voucher");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(5000);
  cp.set_request_id("pool-1");
  auto first = billing_->CreateSubsidyPool(billing_admin_, cp);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = billing_->CreateSubsidyPool(other, cp);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorReason(second.status()), "REQUEST_ID_REUSED");
  auto again = billing_->CreateSubsidyPool(billing_admin_, cp);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  v1::ListSubsidyPoolsRequest list;
  auto pools = billing_->ListSubsidyPools(billing_admin_, list);
  ASSERT_TRUE(pools.ok()) << pools.status();
  EXPECT_EQ(pools->subsidy_pools_size(), 1);
}

TEST_F(BillingTest, OnSiteSessionIsChargedOnActualTimeRoundedUpOnce) {
  Session(absl::Hours(9), absl::Hours(11), absl::Hours(9) + absl::Minutes(5), absl::Hours(10) + absl::Minutes(19));
  EXPECT_GT(Drain(), 0);
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  const v1::Charge& c = charges[0];
  EXPECT_EQ(c.fee_kind(), v1::USAGE);
  EXPECT_EQ(c.basis(), v1::ACTUAL_TIME);
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Minutes(75));  // 74 min rounded up to 75
  EXPECT_EQ(c.amount().amount_minor(), 62500);                    // 1.25 h x 500.00
  EXPECT_EQ(c.amount().currency_code(), "CNY");
  EXPECT_EQ(c.payer_organization(), "organizations/lab");
  EXPECT_EQ(c.owner_organization(), "organizations/owner");
  EXPECT_EQ(c.instrument_category(), "electron-microscopy");
  EXPECT_EQ(c.payable_amount().amount_minor(), 62500);
  EXPECT_EQ(c.service_income().amount_minor(), 62500);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/payable", "organizations/owner"), 62500);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/receivable", "organizations/lab"), 62500);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 62500);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/expense"), 62500);

  // Every event delivered again (a redelivery after a crash): nothing new.
  auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(booking::keys::Partition("tem")), "-", "+"});
  ASSERT_TRUE(raw.ok());
  for (const auto& entry : raw->elements) {
    StreamEvent e;
    e.stream_id = entry.elements[0].str;
    e.type = entry.elements[1].elements[1].str;
    e.payload = entry.elements[1].elements[3].str;
    ASSERT_TRUE(billing_->ApplyBookingEvent(e).ok());
  }
  EXPECT_EQ(Charges().size(), 1u);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 62500);
}

// Every {billing}: key, each in a canonical text form (the outbox by its
// length only: its event ids are random).
std::map<std::string, std::string> LedgerDump(RedisPool& pool) {
  std::map<std::string, std::string> out;
  auto keys = pool.Command({"KEYS", "{billing}:*"});
  for (const auto& k : keys->elements) {
    const std::string type = pool.Command({"TYPE", k.str})->str;
    std::string text = type + ":";
    if (type == "hash") {
      auto v = pool.Command({"HGETALL", k.str});
      std::map<std::string, std::string> fields;
      for (size_t i = 0; i + 1 < v->elements.size(); i += 2) fields[v->elements[i].str] = v->elements[i + 1].str;
      for (const auto& [f, x] : fields) text += f + "=" + x + ";";
    } else if (type == "list") {
      auto v = pool.Command({"LRANGE", k.str, "0", "-1"});
      for (const auto& e : v->elements) text += e.str + ";";
    } else if (type == "zset") {
      auto v = pool.Command({"ZRANGE", k.str, "0", "-1"});
      for (const auto& e : v->elements) text += e.str + ";";
    } else if (type == "stream") {
      text += std::to_string(pool.Command({"XLEN", k.str})->integer);
    } else {
      text += pool.Command({"GET", k.str})->str;
    }
    out[k.str] = text;
  }
  return out;
}

// The batch path (ApplyBookingEvents) leaves exactly the ledger the
// per-event path leaves, from the same outbox: charges with subsidies that
// run into the pool's cap within one batch, missed and late-cancellation
// fees, a lease deposit, and every event delivered twice.
TEST_F(BillingTest, BatchIngestLeavesTheSameLedgerAsPerEventIngest) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  auto* pool = cp.mutable_subsidy_pool();
  pool->set_display_name("Innovation voucher");
  pool->set_currency_code("CNY");
  pool->set_percentage_bps(5000);
  *pool->mutable_cap_per_organization() = MakeMoney("CNY", 40000);
  pool->set_cap_period_kind(v1::MONTHLY);
  ASSERT_TRUE(billing_->CreateSubsidyPool(billing_admin_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("fund-1");
  *top.mutable_amount() = MakeMoney("CNY", 50000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(billing_admin_, top).ok());
  // A lease (handed over below: a deposit).
  bk::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
  bk::Lease lease, lout;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_).ok());
  bk::ApproveLeaseRequest a;
  a.set_name(lease.name());
  a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
  *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
  *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 100000);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &lout, staff_).ok());
  // Sessions (subsidised until the cap), a missed booking, a late cancellation.
  bk::Booking s1, s2, s3, s4, missed, late, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &s1).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &s2).ok());
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(15), &s3).ok());
  ASSERT_TRUE(Book(absl::Hours(16), absl::Hours(17), &missed).ok());
  ASSERT_TRUE(Book(absl::Hours(30), absl::Hours(31), &s4).ok());
  ASSERT_TRUE(Book(absl::Hours(40), absl::Hours(41), &late).ok());
  auto visit = [&](const bk::Booking& b, absl::Duration in, absl::Duration leave) {
    clock_.Set(day_ + in);
    bk::CheckInRequest ci;
    ci.set_name(b.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
    clock_.Set(day_ + leave);
    bk::CheckOutRequest co;
    co.set_name(b.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &out, ana_).ok());
  };
  visit(s1, absl::Hours(9), absl::Hours(10));
  visit(s2, absl::Hours(11), absl::Hours(12) - absl::Minutes(20));
  visit(s3, absl::Hours(13), absl::Hours(15));
  clock_.Set(day_ + absl::Hours(17));
  ASSERT_EQ(*manager_->Sweep(), 1);
  bk::CancelBookingRequest c;
  c.set_name(late.name());
  clock_.Set(day_ + absl::Hours(20));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CancelBooking, c, &out, ana_).ok());
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip new");
  clock_.Set(day_ + absl::Hours(24));
  auto handed = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &lout, staff_);
  ASSERT_TRUE(handed.ok()) << GrpcErrorReason(handed) << " " << handed.error_message();
  visit(s4, absl::Hours(30), absl::Hours(31));

  // Every outbox entry, twice (a redelivery), per partition in stream order.
  std::vector<std::vector<StreamEvent>> partitions;
  size_t total = 0;
  for (int p = 0; p < booking::kPartitions; ++p) {
    auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(p), "-", "+"});
    ASSERT_TRUE(raw.ok());
    std::vector<StreamEvent> events;
    for (const auto& entry : raw->elements) {
      StreamEvent e;
      e.stream_id = entry.elements[0].str;
      const auto& f = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < f.size(); i += 2) {
        if (f[i].str == "type") e.type = f[i + 1].str;
        if (f[i].str == "payload") e.payload = f[i + 1].str;
      }
      events.push_back(e);
    }
    const size_t n = events.size();
    for (size_t i = 0; i < n; ++i) events.push_back(events[i]);
    total += events.size();
    if (!events.empty()) partitions.push_back(std::move(events));
  }
  ASSERT_GT(total, 20u);

  // The ledger before ingest, to start again from it.
  std::map<std::string, std::string> dumps;
  auto before = pool_->Command({"KEYS", "{billing}:*"});
  for (const auto& k : before->elements) dumps[k.str] = pool_->Command({"DUMP", k.str})->str;
  auto restore = [&] {
    auto now = pool_->Command({"KEYS", "{billing}:*"});
    for (const auto& k : now->elements) ASSERT_TRUE(pool_->Command({"DEL", k.str}).ok());
    for (const auto& [k, v] : dumps) ASSERT_EQ(pool_->Command({"RESTORE", k, "0", v})->str, "OK");
  };

  for (const auto& events : partitions) {
    const std::vector<absl::Status> st = billing_->ApplyBookingEvents(events);
    ASSERT_EQ(st.size(), events.size());
    for (const auto& s : st) EXPECT_TRUE(s.ok()) << s;
  }
  const auto batch = LedgerDump(*pool_);
  const auto charges = Charges();
  ASSERT_EQ(charges.size(), 7u);  // 4 sessions, missed, late cancellation, deposit
  int subsidised = 0;
  for (const auto& ch : charges) subsidised += ch.subsidy_lines_size();
  EXPECT_EQ(subsidised, 2);  // the cap (40000) runs out on the third session

  restore();
  for (const auto& events : partitions) {
    for (const auto& e : events) EXPECT_TRUE(billing_->ApplyBookingEvent(e).ok());
  }
  const auto per_event = LedgerDump(*pool_);
  ASSERT_EQ(batch.size(), per_event.size());
  for (const auto& [k, v] : batch) {
    auto it = per_event.find(k);
    ASSERT_NE(it, per_event.end()) << k;
    EXPECT_EQ(v, it->second) << k;
  }
}

// Inventory as the fixture's, with a hook run before the n-th LookupRate.
class HookedInventory final : public InventoryReader {
 public:
  HookedInventory(InventoryReader* next, int at, std::function<void()> hook)
      : next_(next), at_(at), hook_(std::move(hook)) {}
  absl::StatusOr<inv::LookupRateResponse> LookupRate(const inv::LookupRateRequest& r) override {
    if (++calls_ == at_) hook_();
    return next_->LookupRate(r);
  }
  absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name) override {
    return next_->GetInstrument(name);
  }
  absl::StatusOr<inv::Organization> GetOrganization(const std::string& name) override {
    return next_->GetOrganization(name);
  }
  int calls() const { return calls_; }

 private:
  InventoryReader* next_;
  int at_;
  std::function<void()> hook_;
  int calls_ = 0;
};

// A subsidy pool topped up while a batch is being built: the first step's
// check of the pool's funds fails in the Lua call, nothing of the batch is
// written by it, and every event takes the per-event path: each charge
// subsidised once, from the funds as they are.
TEST_F(BillingTest, BatchWhosePoolMovesMeanwhileFallsBackToThePerEventPath) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  auto* pool = cp.mutable_subsidy_pool();
  pool->set_display_name("Innovation voucher");
  pool->set_currency_code("CNY");
  pool->set_percentage_bps(5000);
  ASSERT_TRUE(billing_->CreateSubsidyPool(billing_admin_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("fund-1");
  *top.mutable_amount() = MakeMoney("CNY", 50000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(billing_admin_, top).ok());
  bk::Booking s1, s2, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &s1).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &s2).ok());
  for (const auto* b : {&s1, &s2}) {
    const absl::Duration at = b == &s1 ? absl::Hours(9) : absl::Hours(11);
    clock_.Set(day_ + at);
    bk::CheckInRequest ci;
    ci.set_name(b->name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
    clock_.Set(day_ + at + absl::Hours(1));
    bk::CheckOutRequest co;
    co.set_name(b->name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &out, ana_).ok());
  }
  auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(booking::keys::Partition("tem")), "-", "+"});
  ASSERT_TRUE(raw.ok());
  std::vector<StreamEvent> events;
  for (const auto& entry : raw->elements) {
    StreamEvent e;
    e.stream_id = entry.elements[0].str;
    e.type = entry.elements[1].elements[1].str;
    e.payload = entry.elements[1].elements[3].str;
    events.push_back(e);
  }
  // The second charged event's rate lookup (batch building) tops the pool up.
  bool topped = false;
  HookedInventory hooked(reader_.get(), 2, [&] {
    v1::TopUpSubsidyPoolRequest more = top;
    more.set_request_id("fund-2");
    *more.mutable_amount() = MakeMoney("CNY", 100000);
    topped = billing_->TopUpSubsidyPool(billing_admin_, more).ok();
  });
  BillingManager batch_manager(bstore_.get(), &hooked, &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                               labshare::testing::TestPageTokens());
  const std::vector<absl::Status> st = batch_manager.ApplyBookingEvents(events);
  ASSERT_EQ(st.size(), events.size());
  for (const auto& x : st) EXPECT_TRUE(x.ok()) << x;
  EXPECT_TRUE(topped);
  EXPECT_EQ(hooked.calls(), 4);  // 2 building the batch, 2 more on the per-event path
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 2u);
  for (const auto& c : charges) {
    ASSERT_EQ(c.subsidy_lines_size(), 1) << c.name();
    EXPECT_EQ(c.subsidy_lines(0).amount().amount_minor(), 25000);
  }
  v1::GetSubsidyPoolRequest gp;
  gp.set_name("subsidyPools/voucher");
  auto after = billing_->GetSubsidyPool(billing_admin_, gp);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->balance().amount_minor(), 150000 - 50000);
  // Delivered again: nothing changes.
  for (const auto& x : batch_manager.ApplyBookingEvents(events)) EXPECT_TRUE(x.ok()) << x;
  EXPECT_EQ(Charges().size(), 2u);
  EXPECT_EQ(hooked.calls(), 4);  // the applied markers, read first: nothing priced again
}

// A subsidy pool's terms changed while a batch is being built (a cap set on
// it): the steps priced with the old terms are stale (the pool-set
// generation and the pool document's version moved), nothing of the batch
// is written by them, and every event is priced again from the new terms.
TEST_F(BillingTest, BatchWhosePoolTermsChangeMeanwhileUsesTheNewTerms) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  auto* pool = cp.mutable_subsidy_pool();
  pool->set_display_name("Innovation voucher");
  pool->set_currency_code("CNY");
  pool->set_percentage_bps(5000);
  ASSERT_TRUE(billing_->CreateSubsidyPool(billing_admin_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("fund-1");
  *top.mutable_amount() = MakeMoney("CNY", 200000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(billing_admin_, top).ok());
  bk::Booking s1, s2, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &s1).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &s2).ok());
  for (const auto* b : {&s1, &s2}) {
    const absl::Duration at = b == &s1 ? absl::Hours(9) : absl::Hours(11);
    clock_.Set(day_ + at);
    bk::CheckInRequest ci;
    ci.set_name(b->name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
    clock_.Set(day_ + at + absl::Hours(1));
    bk::CheckOutRequest co;
    co.set_name(b->name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &out, ana_).ok());
  }
  auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(booking::keys::Partition("tem")), "-", "+"});
  ASSERT_TRUE(raw.ok());
  std::vector<StreamEvent> events;
  for (const auto& entry : raw->elements) {
    StreamEvent e;
    e.stream_id = entry.elements[0].str;
    e.type = entry.elements[1].elements[1].str;
    e.payload = entry.elements[1].elements[3].str;
    events.push_back(e);
  }
  // The second charged event's rate lookup (batch building) sets a cap of
  // 30000 per organisation and month.
  bool capped = false;
  HookedInventory hooked(reader_.get(), 2, [&] {
    v1::UpdateSubsidyPoolRequest up;
    up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
    *up.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("CNY", 30000);
    up.mutable_subsidy_pool()->set_cap_period_kind(v1::MONTHLY);
    up.mutable_update_mask()->add_paths("cap_per_organization");
    up.mutable_update_mask()->add_paths("cap_period_kind");
    capped = billing_->UpdateSubsidyPool(billing_admin_, up).ok();
  });
  BillingManager batch_manager(bstore_.get(), &hooked, &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                               labshare::testing::TestPageTokens());
  const std::vector<absl::Status> st = batch_manager.ApplyBookingEvents(events);
  ASSERT_EQ(st.size(), events.size());
  for (const auto& x : st) EXPECT_TRUE(x.ok()) << x;
  EXPECT_TRUE(capped);
  EXPECT_EQ(hooked.calls(), 4);  // 2 building the batch, 2 more on the per-event path
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 2u);
  ASSERT_EQ(charges[0].subsidy_lines_size(), 1);
  ASSERT_EQ(charges[1].subsidy_lines_size(), 1);
  // Listed by id (same posting time): the larger subsidy first.
  std::sort(charges.begin(), charges.end(), [](const v1::Charge& a, const v1::Charge& b) {
    return a.subsidy_lines(0).amount().amount_minor() > b.subsidy_lines(0).amount().amount_minor();
  });
  EXPECT_EQ(charges[0].subsidy_lines(0).amount().amount_minor(), 25000);
  EXPECT_EQ(charges[0].subsidy_lines(0).limited_by(), v1::SubsidyLine::NOT_LIMITED);
  EXPECT_EQ(charges[1].subsidy_lines(0).amount().amount_minor(), 5000);
  EXPECT_EQ(charges[1].subsidy_lines(0).limited_by(), v1::SubsidyLine::ORGANIZATION_CAP);
  v1::GetSubsidyPoolRequest gp;
  gp.set_name("subsidyPools/voucher");
  auto after = billing_->GetSubsidyPool(billing_admin_, gp);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->granted_total().amount_minor(), 30000);
  EXPECT_EQ(after->balance().amount_minor(), 200000 - 30000);
}

TEST_F(BillingTest, MissedBookingAndLateCancellationFees) {
  bk::Booking missed, late, early, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10) + absl::Minutes(30), &missed).ok());
  ASSERT_TRUE(Book(absl::Hours(40), absl::Hours(41), &late).ok());
  ASSERT_TRUE(Book(absl::Hours(44), absl::Hours(45), &early).ok());
  bk::CancelBookingRequest c;
  c.set_name(early.name());  // 44 h ahead: not late, no fee
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CancelBooking, c, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  ASSERT_EQ(*manager_->Sweep(), 1);  // missed
  c.set_name(late.name());           // 30 h ahead of start, notice is 24 h
  clock_.Set(day_ + absl::Hours(40) - absl::Hours(20));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CancelBooking, c, &out, ana_).ok());
  ASSERT_TRUE(out.late_cancellation());
  Drain();
  std::map<v1::FeeKind, int64_t> by_kind;
  for (const auto& ch : Charges()) by_kind[ch.fee_kind()] += ch.amount().amount_minor();
  ASSERT_EQ(by_kind.size(), 2u);
  EXPECT_EQ(by_kind[v1::MISSED_BOOKING_FEE], 37500);       // 50 % of 1.5 h x 500.00
  EXPECT_EQ(by_kind[v1::LATE_CANCELLATION_FEE], 12500);    // 25 % of 1 h x 500.00
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 50000);
}

TEST_F(BillingTest, JointResearchSplitsAnAwkwardAmountByLargestRemainder) {
  bk::CreateProjectRequest r;
  r.set_project_id("proj");
  r.mutable_project()->set_title("three-way");
  r.mutable_project()->set_cost_share_template(bk::Project::CUSTOM);
  const std::pair<const char*, int> parts[] = {
      {"organizations/owner", 3334}, {"organizations/lab", 3333}, {"organizations/outsider", 3333}};
  for (const auto& [org, bps] : parts) {
    auto* p = r.mutable_project()->add_participants();
    p->set_organization(org);
    p->set_share_bps(bps);
  }
  *r.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
  *r.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
  auto* budget = r.mutable_project()->add_instrument_budgets();
  budget->set_instrument("instruments/tem");
  *budget->mutable_budget() = ToProto(absl::Hours(10));
  bk::Project project;
  auto s = Call(stub_.get(), &bk::BookingService::Stub::CreateProject, r, &project, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  bk::CreateBookingRequest jr;
  jr.mutable_booking()->set_instrument("instruments/tem");
  jr.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
  jr.mutable_booking()->set_project("projects/proj");
  *jr.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *jr.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
  bk::Booking b, done;
  s = Call(stub_.get(), &bk::BookingService::Stub::CreateBooking, jr, &b, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  clock_.Set(day_ + absl::Hours(9));
  bk::CheckInRequest ci;
  ci.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(14));
  bk::CheckOutRequest co;
  co.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &done, ana_).ok());
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  const v1::Charge& c = charges[0];
  EXPECT_EQ(c.amount().amount_minor(), 12500);  // 15 min x 500.00
  ASSERT_EQ(c.splits_size(), 3);
  // floor: 4167 (.5), 4166 (.25), 4166 (.25); the 1 left goes to the largest remainder.
  EXPECT_EQ(c.splits(0).amount().amount_minor(), 4168);
  EXPECT_TRUE(c.splits(0).in_kind());  // the owner's own share
  EXPECT_EQ(c.splits(1).amount().amount_minor(), 4166);
  EXPECT_EQ(c.splits(2).amount().amount_minor(), 4166);
  EXPECT_EQ(c.service_income().amount_minor(), 8332);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/in-kind-contribution"), 4168);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 8332);
  EXPECT_EQ(AccountBalance("organizations/outsider/accounts/payable", "organizations/owner"), 4166);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/payable", "organizations/owner"), 4166);
}

TEST_F(BillingTest, SubsidyPoolPaysItsShareUpToTheCapThenRunsDry) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  auto* pool = cp.mutable_subsidy_pool();
  pool->set_display_name("Innovation voucher");
  pool->set_currency_code("CNY");
  pool->set_percentage_bps(5000);
  *pool->mutable_cap_per_organization() = MakeMoney("CNY", 40000);
  pool->set_cap_period_kind(v1::MONTHLY);
  auto created = billing_->CreateSubsidyPool(billing_admin_, cp);
  ASSERT_TRUE(created.ok()) << created.status();
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("fund-1");
  *top.mutable_amount() = MakeMoney("CNY", 50000);
  auto topped = billing_->TopUpSubsidyPool(billing_admin_, top);
  ASSERT_TRUE(topped.ok()) << topped.status();
  EXPECT_EQ(topped->balance().amount_minor(), 50000);
  auto again = billing_->TopUpSubsidyPool(billing_admin_, top);  // same request: once
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->balance().amount_minor(), 50000);
  *top.mutable_amount() = MakeMoney("EUR", 10);
  top.set_request_id("fund-2");
  EXPECT_EQ(ErrorReason(billing_->TopUpSubsidyPool(billing_admin_, top).status()), "CURRENCY_MISMATCH");

  // 1 h (50000): 50 % = 25000. 2 h (100000): 50000, but the cap leaves 15000.
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  Session(absl::Hours(12), absl::Hours(14), absl::Hours(12), absl::Hours(14));
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 2u);
  ASSERT_EQ(charges[0].subsidy_lines_size(), 1);
  EXPECT_EQ(charges[0].subsidy_lines(0).amount().amount_minor(), 25000);
  EXPECT_EQ(charges[0].subsidy_lines(0).limited_by(), v1::SubsidyLine::NOT_LIMITED);
  EXPECT_EQ(charges[0].payable_amount().amount_minor(), 25000);
  ASSERT_EQ(charges[1].subsidy_lines_size(), 1);
  EXPECT_EQ(charges[1].subsidy_lines(0).amount().amount_minor(), 15000);
  EXPECT_EQ(charges[1].subsidy_lines(0).limited_by(), v1::SubsidyLine::ORGANIZATION_CAP);
  EXPECT_EQ(charges[1].payable_amount().amount_minor(), 85000);
  v1::GetSubsidyPoolRequest get;
  get.set_name("subsidyPools/voucher");
  auto after = billing_->GetSubsidyPool(billing_admin_, get);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->balance().amount_minor(), 10000);
  EXPECT_EQ(after->granted_total().amount_minor(), 40000);
  // The owner is still owed everything: 110000 by lab, 40000 by the pool.
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/receivable", "organizations/lab"), 110000);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/receivable", "subsidyPools/voucher"), 40000);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 150000);

  // New terms apply from now on: 25 % (the etag must be the current one).
  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
  up.mutable_subsidy_pool()->set_percentage_bps(2500);
  up.mutable_subsidy_pool()->set_etag("1");
  up.mutable_update_mask()->add_paths("percentage_bps");
  EXPECT_EQ(ErrorReason(billing_->UpdateSubsidyPool(billing_admin_, up).status()), "ETAG_MISMATCH");
  up.mutable_subsidy_pool()->set_etag(after->etag());
  auto updated = billing_->UpdateSubsidyPool(billing_admin_, up);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->percentage_bps(), 2500);
  EXPECT_EQ(updated->balance().amount_minor(), 10000);
  up.mutable_update_mask()->add_paths("balance");
  EXPECT_EQ(ErrorReason(billing_->UpdateSubsidyPool(billing_admin_, up).status()), "INVALID_UPDATE_MASK");

  // February: a new cap period, but only 10000 left in the pool.
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 10), absl::UTCTimeZone()));
  const absl::Time feb = clock_.Now() + absl::Hours(48);
  day_ = feb - absl::Hours(9);  // Book() is relative to day_
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  charges = Charges();
  ASSERT_EQ(charges.size(), 3u);
  ASSERT_EQ(charges[2].subsidy_lines_size(), 1);
  EXPECT_EQ(charges[2].subsidy_lines(0).amount().amount_minor(), 10000);
  EXPECT_EQ(charges[2].subsidy_lines(0).limited_by(), v1::SubsidyLine::POOL_BALANCE);
  after = billing_->GetSubsidyPool(billing_admin_, get);
  EXPECT_EQ(after->balance().amount_minor(), 0);
}

TEST_F(BillingTest, InvoicesAreIssuedOnceNumberedWithoutGapsAndNeverChange) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Session(absl::Hours(12), absl::Hours(13), absl::Hours(12), absl::Hours(12) + absl::Minutes(30));
  Drain();
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("inv-1");
  EXPECT_EQ(ErrorReason(billing_->IssueInvoice(billing_admin_, issue).status()), "PERIOD_NOT_ENDED");

  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto draft = billing_->PreviewInvoice(billing_admin_, preview);
  ASSERT_TRUE(draft.ok()) << draft.status();
  EXPECT_EQ(draft->state(), v1::Invoice::DRAFT);
  ASSERT_EQ(draft->lines_size(), 2);
  EXPECT_EQ(draft->amount_due().amount_minor(), 75000);  // 50000 + 25000
  ASSERT_EQ(draft->payees_size(), 1);
  EXPECT_EQ(draft->payees(0).organization(), "organizations/owner");

  issue.set_expected_etag(draft->etag());
  auto first = billing_->IssueInvoice(billing_admin_, issue);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->state(), v1::Invoice::ISSUED);
  EXPECT_EQ(first->number(), "LS-CNY-2027-000001");
  EXPECT_EQ(first->amount_due().amount_minor(), 75000);
  clock_.Advance(absl::Minutes(3));
  auto replay = billing_->IssueInvoice(billing_admin_, issue);
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->SerializeAsString(), first->SerializeAsString());
  issue.set_request_id("inv-2");
  auto twice = billing_->IssueInvoice(billing_admin_, issue);
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ErrorReason(twice.status()), "INVOICE_ALREADY_ISSUED");

  // Later activity goes on the next invoice; the issued one stays as it was.
  day_ = clock_.Now();
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  v1::GetInvoiceRequest get;
  get.set_name(first->name());
  auto stored = billing_->GetInvoice(billing_admin_, get);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->SerializeAsString(), first->SerializeAsString());
  draft = billing_->PreviewInvoice(billing_admin_, preview);
  ASSERT_TRUE(draft.ok());
  EXPECT_EQ(draft->lines_size(), 0);  // January is invoiced
  preview.set_period("2027-02");
  draft = billing_->PreviewInvoice(billing_admin_, preview);
  ASSERT_TRUE(draft.ok());
  ASSERT_EQ(draft->lines_size(), 1);
  EXPECT_EQ(draft->amount_due().amount_minor(), 50000);

  // The owner has nothing to pay: nothing to invoice.
  v1::IssueInvoiceRequest none;
  none.set_payer_organization("organizations/owner");
  none.set_period("2027-01");
  EXPECT_EQ(ErrorReason(billing_->IssueInvoice(billing_admin_, none).status()), "NOTHING_TO_INVOICE");

  // A member billing admin sees its own organisation's invoices only.
  Principal lab_admin{"lena", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  Principal other{"otto", "outsider", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  EXPECT_TRUE(billing_->GetInvoice(lab_admin, get).ok());
  EXPECT_EQ(ErrorReason(billing_->GetInvoice(other, get).status()), "ORGANIZATION_SCOPE");
  preview.set_period("2027-01");
  EXPECT_EQ(ErrorReason(billing_->PreviewInvoice(other, preview).status()), "ORGANIZATION_SCOPE");

  // Settlement of January: lab pays owner once.
  v1::ComputeSettlementRequest settle;
  settle.set_period("2027-01");
  auto s = billing_->ComputeSettlement(billing_admin_, settle);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->transfers_size(), 1);
  EXPECT_EQ(s->transfers(0).from_organization(), "organizations/lab");
  EXPECT_EQ(s->transfers(0).to_organization(), "organizations/owner");
  EXPECT_EQ(s->transfers(0).amount().amount_minor(), 75000);
}

TEST_F(BillingTest, LeaseDepositIsHeldThenAppliedToDamageAndRentIsCharged) {
  bk::Lease lease, out;
  ASSERT_NO_FATAL_FAILURE(HandOverLease(&lease));
  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().rfind('/') + 1));
  auto held = billing_->GetDeposit(billing_admin_, gd);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->state(), v1::Deposit::HELD);
  EXPECT_EQ(held->held_amount().amount_minor(), 100000);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/deposit-held"), 100000);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/deposit-lodged"), 100000);

  clock_.Set(day_ + absl::Hours(24 * 6));  // returned early, damaged
  bk::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("stage scratched");
  *ret.mutable_damage_amount() = MakeMoney("CNY", 150000);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
  bk::CloseLeaseRequest close;
  close.set_name(lease.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CloseLease, close, &out, staff_).ok());
  Drain();
  std::map<v1::FeeKind, int64_t> by_kind;
  for (const auto& ch : Charges()) by_kind[ch.fee_kind()] += ch.amount().amount_minor();
  EXPECT_EQ(by_kind[v1::DEPOSIT], 100000);
  EXPECT_EQ(by_kind[v1::DAMAGE], 50000);  // beyond the deposit
  // Handed over 2027-01-04 08:00 and returned 2027-01-09 08:00 Shanghai time:
  // six calendar days touched at 3000.00.
  EXPECT_EQ(by_kind[v1::LEASE_PERIOD], 1800000);
  auto settled = billing_->GetDeposit(billing_admin_, gd);
  ASSERT_TRUE(settled.ok());
  EXPECT_EQ(settled->state(), v1::Deposit::APPLIED);
  EXPECT_EQ(settled->applied_amount().amount_minor(), 100000);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/deposit-held"), 0);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/deposit-lodged"), 0);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/compensation"), 150000);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 1800000);
}

TEST_F(BillingTest, LeaseRentIsChargedAtEachPeriodEndAndTheRestOnReturn) {
  // Out from 2027-01-29 08:00 to 2027-02-05 08:00 Shanghai time.
  bk::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 26));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 36));
  bk::Lease lease, out;
  auto s = Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  bk::ApproveLeaseRequest a;
  a.set_name(lease.name());
  a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
  *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
  *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 100000);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_).ok());
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("ok");
  clock_.Set(day_ + absl::Hours(24 * 26));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
  Drain();
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);  // January has not ended
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);  // January: 29, 30, 31
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);  // once
  int64_t rent = 0;
  for (const auto& c : Charges()) rent += c.fee_kind() == v1::LEASE_PERIOD ? c.amount().amount_minor() : 0;
  EXPECT_EQ(rent, 900000);
  clock_.Set(day_ + absl::Hours(24 * 33));
  bk::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("fine");
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
  Drain();
  std::map<std::string, int64_t> by_period;
  for (const auto& c : Charges()) {
    if (c.fee_kind() == v1::LEASE_PERIOD) by_period[c.source_key()] += c.amount().amount_minor();
  }
  ASSERT_EQ(by_period.size(), 2u);
  EXPECT_EQ(by_period["lease-period/2027-01"], 900000);
  EXPECT_EQ(by_period["lease-period/2027-02"], 1500000);  // 1..5 February
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);     // returned: nothing more
}

TEST_F(BillingTest, TechnicalServiceIsChargedFromTheAcceptedQuote) {
  ServiceOrderToAcceptedReport();
  Drain();
  std::map<v1::FeeKind, int64_t> by_kind;
  for (const auto& ch : Charges()) by_kind[ch.fee_kind()] += ch.amount().amount_minor();
  ASSERT_EQ(by_kind.size(), 3u);
  EXPECT_EQ(by_kind[v1::TECHNICAL_SERVICE], 60000);
  EXPECT_EQ(by_kind[v1::STAFF_TIME], 30000);
  EXPECT_EQ(by_kind[v1::CONSUMABLES], 5001);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 95001);
}

// A report accepted automatically (tem's TECHNICAL_SERVICE
// report_acceptance_period, booking's sweep at the deadline) is charged as
// one the client accepted: exactly the accepted quote, once.
TEST_F(BillingTest, AnAutomaticallyAcceptedReportIsChargedTheAcceptedQuote) {
  iv::GetInstrumentRequest g;
  g.set_name("instruments/tem");
  iv::Instrument tem;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
  std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
  for (auto& m : modes) {
    if (m.mode() == labshare::type::v1::TECHNICAL_SERVICE) {
      *m.mutable_slot_rules()->mutable_report_acceptance_period() = ToProto(absl::Hours(72));
    }
  }
  OfferModes("tem", modes, "auto-accept-72h");
  const std::string name = ServiceOrderToDeliveredReport();
  ASSERT_FALSE(name.empty());
  clock_.Set(day_ + absl::Hours(11 + 72));
  ASSERT_EQ(*manager_->Sweep(), 1);
  Drain();
  std::map<v1::FeeKind, int64_t> by_kind;
  for (const auto& ch : Charges()) {
    EXPECT_EQ(ch.service_order(), name);
    by_kind[ch.fee_kind()] += ch.amount().amount_minor();
  }
  ASSERT_EQ(by_kind.size(), 3u);
  EXPECT_EQ(by_kind[v1::TECHNICAL_SERVICE], 60000);
  EXPECT_EQ(by_kind[v1::STAFF_TIME], 30000);
  EXPECT_EQ(by_kind[v1::CONSUMABLES], 5001);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 95001);
  // A later round publishes nothing more: charged once.
  clock_.Set(day_ + absl::Hours(24 * 10));
  ASSERT_EQ(*manager_->Sweep(), 0);
  Drain();
  int64_t total = 0;
  for (const auto& ch : Charges()) total += ch.amount().amount_minor();
  EXPECT_EQ(total, 95001);
}

// A service order whose report was accepted: three charges in one event,
// TECHNICAL_SERVICE 60000, STAFF_TIME 30000, CONSUMABLES 5001, for lab.
void BillingTest::ServiceOrderToAcceptedReport() {
  const std::string name = ServiceOrderToDeliveredReport();
  ASSERT_FALSE(name.empty());
  bk::ServiceOrder out;
  bk::AcceptReportRequest ar;
  ar.set_name(name);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::AcceptReport, ar, &out, ana_).ok());
}

std::string BillingTest::ServiceOrderToDeliveredReport() {
  const auto ok = [](const grpc::Status& st) {
    EXPECT_TRUE(st.ok()) << st.error_message();
    return st.ok();
  };
  bk::CreateServiceOrderRequest co;
  co.mutable_service_order()->set_instrument("instruments/tem");
  co.mutable_service_order()->set_service_entry_id("imaging");
  co.mutable_service_order()->set_sample_count(3);
  bk::ServiceOrder o, out;
  if (!ok(Call(stub_.get(), &bk::BookingService::Stub::CreateServiceOrder, co, &o, ana_))) return "";
  bk::IssueQuoteRequest q;
  q.set_name(o.name());
  *q.mutable_quote()->mutable_per_sample_fee() = MakeMoney("CNY", 20000);
  *q.mutable_quote()->mutable_staff_time_fee() = MakeMoney("CNY", 30000);
  *q.mutable_quote()->mutable_consumables() = MakeMoney("CNY", 5001);
  *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
  if (!ok(Call(stub_.get(), &bk::BookingService::Stub::IssueQuote, q, &out, staff_))) return "";
  bk::AcceptQuoteRequest aq;
  aq.set_name(o.name());
  aq.set_quote_etag(out.quote().quote_etag());
  if (!ok(Call(stub_.get(), &bk::BookingService::Stub::AcceptQuote, aq, &out, ana_))) return "";
  bk::ReceiveSamplesRequest rs;
  rs.set_name(o.name());
  rs.set_received_sample_count(3);
  if (!ok(Call(stub_.get(), &bk::BookingService::Stub::ReceiveSamples, rs, &out, staff_))) return "";
  bk::ScheduleServiceRequest sch;
  sch.set_name(o.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
  if (!ok(Call(stub_.get(), &bk::BookingService::Stub::ScheduleService, sch, &out, staff_))) return "";
  clock_.Set(day_ + absl::Hours(9));
  bk::StartServiceRequest st;
  st.set_name(o.name());
  if (!ok(Call(stub_.get(), &bk::BookingService::Stub::StartService, st, &out, staff_))) return "";
  bk::DeliverReportRequest dr;
  dr.set_name(o.name());
  dr.mutable_report()->set_uri("s3://reports/1.pdf");
  dr.mutable_report()->set_sha256(std::string(64, 'a'));
  dr.mutable_report()->set_summary("3 grids imaged");
  clock_.Set(day_ + absl::Hours(11));
  auto s = Call(stub_.get(), &bk::BookingService::Stub::DeliverReport, dr, &out, staff_);
  EXPECT_TRUE(s.ok()) << s.error_message();
  if (!s.ok()) return "";
  Drain();
  EXPECT_TRUE(Charges().empty());  // nothing before the client accepts
  return o.name();
}

// Three subsidisable charges of one event (a service order) against one
// pool: each charge is subsidised from what the charges before it left of
// the pool's balance and of lab's cap, on the per-event and the batch path
// alike (both leave the same ledger). 50 % of 60000, 30000, 5001.
struct ThreeChargeCase {
  int64_t cap;      // 0: none
  int64_t balance;  // topped up
  std::vector<int64_t> subsidies;  // per charge, in pricing order
  std::vector<v1::SubsidyLine::Limit> limits;
  int64_t balance_after;
};

class ServiceOrderSubsidyTest : public BillingTest {
 protected:
  void Run(const ThreeChargeCase& c) {
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id("voucher");
    auto* pool = cp.mutable_subsidy_pool();
    pool->set_display_name("Innovation voucher");
    pool->set_currency_code("CNY");
    pool->set_percentage_bps(5000);
    if (c.cap > 0) {
      *pool->mutable_cap_per_organization() = MakeMoney("CNY", c.cap);
      pool->set_cap_period_kind(v1::MONTHLY);
    }
    ASSERT_TRUE(billing_->CreateSubsidyPool(billing_admin_, cp).ok());
    v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/voucher");
    top.set_request_id("fund-1");
    *top.mutable_amount() = MakeMoney("CNY", c.balance);
    ASSERT_TRUE(billing_->TopUpSubsidyPool(billing_admin_, top).ok());
    ServiceOrderToAcceptedReport();
    auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(booking::keys::Partition("tem")), "-", "+"});
    ASSERT_TRUE(raw.ok());
    std::vector<StreamEvent> events;
    for (const auto& entry : raw->elements) {
      StreamEvent e;
      e.stream_id = entry.elements[0].str;
      const auto& f = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < f.size(); i += 2) {
        if (f[i].str == "type") e.type = f[i + 1].str;
        if (f[i].str == "payload") e.payload = f[i + 1].str;
      }
      events.push_back(e);
    }
    std::map<std::string, std::string> dumps;
    auto before = pool_->Command({"KEYS", "{billing}:*"});
    for (const auto& k : before->elements) dumps[k.str] = pool_->Command({"DUMP", k.str})->str;

    auto check = [&](const char* path) {
      SCOPED_TRACE(path);
      std::map<v1::FeeKind, v1::Charge> by_kind;
      for (const auto& ch : Charges()) by_kind[ch.fee_kind()] = ch;
      ASSERT_EQ(by_kind.size(), 3u);
      const v1::FeeKind order[] = {v1::TECHNICAL_SERVICE, v1::STAFF_TIME, v1::CONSUMABLES};
      int64_t granted = 0;
      for (int i = 0; i < 3; ++i) {
        const v1::Charge& ch = by_kind[order[i]];
        if (c.subsidies[i] == 0) {
          EXPECT_EQ(ch.subsidy_lines_size(), 0) << ch.fee_kind();
          continue;
        }
        ASSERT_EQ(ch.subsidy_lines_size(), 1) << ch.fee_kind();
        EXPECT_EQ(ch.subsidy_lines(0).amount().amount_minor(), c.subsidies[i]) << ch.fee_kind();
        EXPECT_EQ(ch.subsidy_lines(0).limited_by(), c.limits[i]) << ch.fee_kind();
        granted += c.subsidies[i];
      }
      v1::GetSubsidyPoolRequest gp;
      gp.set_name("subsidyPools/voucher");
      auto after = billing_->GetSubsidyPool(billing_admin_, gp);
      ASSERT_TRUE(after.ok()) << after.status();
      EXPECT_EQ(after->balance().amount_minor(), c.balance_after);
      EXPECT_GE(after->balance().amount_minor(), 0);
      EXPECT_EQ(after->granted_total().amount_minor(), granted);
      if (c.cap > 0) {
        EXPECT_LE(granted, c.cap);
      }
    };
    // The batch path.
    const std::vector<absl::Status> st = billing_->ApplyBookingEvents(events);
    for (const auto& x : st) EXPECT_TRUE(x.ok()) << x;
    check("batch");
    const auto batch = LedgerDump(*pool_);
    // The per-event path, from the same ledger.
    auto now = pool_->Command({"KEYS", "{billing}:*"});
    for (const auto& k : now->elements) ASSERT_TRUE(pool_->Command({"DEL", k.str}).ok());
    for (const auto& [k, v] : dumps) ASSERT_EQ(pool_->Command({"RESTORE", k, "0", v})->str, "OK");
    for (const auto& e : events) EXPECT_TRUE(billing_->ApplyBookingEvent(e).ok());
    check("per event");
    EXPECT_EQ(LedgerDump(*pool_).size(), batch.size());
  }
};

TEST_F(ServiceOrderSubsidyTest, ChargesOfOneEventDrawOnThePoolBalanceInTurn) {
  // 30000, then the 10000 left, then nothing: never below zero.
  Run({0, 40000, {30000, 10000, 0}, {v1::SubsidyLine::NOT_LIMITED, v1::SubsidyLine::POOL_BALANCE, {}}, 0});
}

TEST_F(ServiceOrderSubsidyTest, ChargesOfOneEventDrawOnTheOrganizationCapInTurn) {
  // Cap 35000: 30000, then the 5000 left of the cap, then nothing.
  Run({35000, 1000000, {30000, 5000, 0}, {v1::SubsidyLine::NOT_LIMITED, v1::SubsidyLine::ORGANIZATION_CAP, {}},
       1000000 - 35000});
}

TEST_F(BillingTest, RolesAndScopes) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  const std::string name = Charges()[0].name();
  v1::GetChargeRequest g;
  g.set_name(name);
  Principal lab_admin{"lena", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  Principal other{"otto", "outsider", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  EXPECT_TRUE(billing_->GetCharge(lab_admin, g).ok());
  EXPECT_EQ(ErrorReason(billing_->GetCharge(other, g).status()), "ORGANIZATION_SCOPE");
  v1::ListChargesRequest l;
  auto mine = billing_->ListCharges(other, l);
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->charges_size(), 0);
  l.set_payer_organization("organizations/lab");
  EXPECT_EQ(ErrorReason(billing_->ListCharges(other, l).status()), "ORGANIZATION_SCOPE");
  g.set_name("charges/nope");
  EXPECT_EQ(billing_->GetCharge(billing_admin_, g).status().code(), absl::StatusCode::kNotFound);
  v1::GetAccountBalanceRequest b;
  b.set_name("organizations/lab/accounts/payable");
  EXPECT_EQ(ErrorReason(billing_->GetAccountBalance(other, b).status()), "ORGANIZATION_SCOPE");
  b.set_name("organizations/lab/accounts/pocket");
  EXPECT_EQ(billing_->GetAccountBalance(billing_admin_, b).status().code(), absl::StatusCode::kInvalidArgument);
  // Through the gRPC policy: a lab user has no access to billing at all.
  MethodPolicy policy = BillingPolicy();
  Principal user{"ana", "lab", {Role::kLabUser}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(policy.Check("/labshare.billing.v1.BillingService/GetCharge", user)), "ROLE_NOT_ALLOWED");
  EXPECT_EQ(ErrorReason(policy.Check("/labshare.billing.v1.BillingService/IssueInvoice", lab_admin)),
            "ROLE_NOT_ALLOWED");
  EXPECT_TRUE(policy.Check("/labshare.billing.v1.BillingService/GetCharge", lab_admin).ok());
}

// A page token is good only for the list, the filters and the caller it was
// issued to, and only as issued.
TEST_F(BillingTest, PageTokenRefusedOnAnotherListForgedOrFromAnotherCaller) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Session(absl::Hours(13), absl::Hours(14), absl::Hours(13), absl::Hours(14));
  Drain();
  v1::ListChargesRequest charges;
  charges.set_page_size(1);
  auto first = billing_->ListCharges(billing_admin_, charges);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->next_page_token().empty());
  auto expect_refused = [](const absl::Status& s) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(s), "INVALID_PAGE_TOKEN");
    EXPECT_TRUE(absl::StrContains(s.message(), "without page_token")) << s.message();
  };
  // Another list with the same (empty) filters.
  v1::ListPostingsRequest postings;
  postings.set_page_token(first->next_page_token());
  expect_refused(billing_->ListPostings(billing_admin_, postings).status());
  // Edited by the client, or made up.
  charges.set_page_token(labshare::testing::ForgePageToken(first->next_page_token()));
  ASSERT_FALSE(charges.page_token().empty());
  expect_refused(billing_->ListCharges(billing_admin_, charges).status());
  charges.set_page_token("bm90LWEtdG9rZW4");
  expect_refused(billing_->ListCharges(billing_admin_, charges).status());
  // Another caller presenting the administrator's token.
  charges.set_page_token(first->next_page_token());
  Principal auditor{"audra", "", {Role::kAuditor}, absl::InfiniteFuture()};
  expect_refused(billing_->ListCharges(auditor, charges).status());
  // Its own caller continues.
  auto second = billing_->ListCharges(billing_admin_, charges);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->charges_size(), 1);
  EXPECT_NE(second->charges(0).name(), first->charges(0).name());
}

// Every method with page fields refuses a negative page size, and a token it
// never issued.
TEST_F(BillingTest, NegativePageSizeAndUnknownTokensAreRefusedByEveryPagedMethod) {
  auto expect_invalid = [](const absl::Status& s, const std::string& reason) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(ErrorReason(s), reason) << s;
  };
  labshare::type::v1::Interval interval;
  *interval.mutable_start_time() = ToProto(day_ - absl::Hours(24));
  *interval.mutable_end_time() = ToProto(day_ + absl::Hours(24));
  v1::ListBalancesRequest balances;
  balances.set_parent("organizations/lab");
  v1::ListSubsidyPoolsRequest pools;
  v1::GetOrganizationStatementRequest statement;
  statement.set_organization("organizations/lab");
  *statement.mutable_interval() = interval;
  v1::GetOwnerIncomeReportRequest income;
  income.set_owner_organization("organizations/owner");
  *income.mutable_interval() = interval;
  v1::ListChargesRequest charges;
  v1::ListInvoicesRequest invoices;
  for (int32_t size : {-1, -500}) {
    SCOPED_TRACE(size);
    balances.set_page_size(size);
    pools.set_page_size(size);
    statement.set_page_size(size);
    income.set_page_size(size);
    charges.set_page_size(size);
    invoices.set_page_size(size);
    expect_invalid(billing_->ListBalances(billing_admin_, balances).status(), "INVALID_FIELD");
    expect_invalid(billing_->ListSubsidyPools(billing_admin_, pools).status(), "INVALID_FIELD");
    expect_invalid(billing_->GetOrganizationStatement(billing_admin_, statement).status(), "INVALID_FIELD");
    expect_invalid(billing_->GetOwnerIncomeReport(billing_admin_, income).status(), "INVALID_FIELD");
    expect_invalid(billing_->ListCharges(billing_admin_, charges).status(), "INVALID_FIELD");
    expect_invalid(billing_->ListInvoices(billing_admin_, invoices).status(), "INVALID_FIELD");
  }
  balances.set_page_size(0);
  pools.set_page_size(0);
  statement.set_page_size(0);
  income.set_page_size(0);
  for (const char* token : {"bm90LWEtdG9rZW4", "!!"}) {
    SCOPED_TRACE(token);
    balances.set_page_token(token);
    pools.set_page_token(token);
    statement.set_page_token(token);
    income.set_page_token(token);
    expect_invalid(billing_->ListBalances(billing_admin_, balances).status(), "INVALID_PAGE_TOKEN");
    expect_invalid(billing_->ListSubsidyPools(billing_admin_, pools).status(), "INVALID_PAGE_TOKEN");
    expect_invalid(billing_->GetOrganizationStatement(billing_admin_, statement).status(), "INVALID_PAGE_TOKEN");
    expect_invalid(billing_->GetOwnerIncomeReport(billing_admin_, income).status(), "INVALID_PAGE_TOKEN");
  }
}

// Lists and reports computed whole are paged like the others: every item
// once, in order; report totals cover the whole interval on every page.
TEST_F(BillingTest, BalancesStatementsIncomeAndPoolsArePaged) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Session(absl::Hours(13), absl::Hours(14), absl::Hours(13), absl::Hours(14));
  Session(absl::Hours(17), absl::Hours(18), absl::Hours(17), absl::Hours(18));
  Drain();
  auto pages = [&](auto list, auto request, auto items) {
    std::vector<std::string> out;
    request.set_page_size(1);
    for (int guard = 0; guard < 100; ++guard) {
      auto page = list(request);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      const auto& got = items(*page);
      EXPECT_LE(got.size(), 1);
      for (const auto& item : got) out.push_back(item.SerializeAsString());
      if (page->next_page_token().empty()) break;
      request.set_page_token(page->next_page_token());
    }
    return out;
  };
  auto whole = [&](auto list, auto request, auto items) {
    std::vector<std::string> out;
    request.set_page_size(500);
    auto page = list(request);
    EXPECT_TRUE(page.ok()) << page.status();
    if (page.ok()) {
      EXPECT_TRUE(page->next_page_token().empty());
      for (const auto& item : items(*page)) out.push_back(item.SerializeAsString());
    }
    return out;
  };

  v1::ListBalancesRequest balances;
  balances.set_parent("organizations/-");
  auto list_balances = [&](const v1::ListBalancesRequest& r) { return billing_->ListBalances(billing_admin_, r); };
  auto balance_items = [](const v1::ListBalancesResponse& r) -> const auto& { return r.balances(); };
  const auto all_balances = whole(list_balances, balances, balance_items);
  EXPECT_GE(all_balances.size(), 4u);
  EXPECT_EQ(pages(list_balances, balances, balance_items), all_balances);

  v1::GetOrganizationStatementRequest statement;
  statement.set_organization("organizations/lab");
  *statement.mutable_interval()->mutable_start_time() = ToProto(day_ - absl::Hours(24));
  *statement.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
  auto get_statement = [&](const v1::GetOrganizationStatementRequest& r) {
    return billing_->GetOrganizationStatement(billing_admin_, r);
  };
  auto lines = [](const v1::OrganizationStatement& s) -> const auto& { return s.lines(); };
  const auto all_lines = whole(get_statement, statement, lines);
  EXPECT_EQ(all_lines.size(), 3u);
  EXPECT_EQ(pages(get_statement, statement, lines), all_lines);
  statement.set_page_size(1);
  auto first = billing_->GetOrganizationStatement(billing_admin_, statement);
  ASSERT_TRUE(first.ok());
  statement.set_page_token(first->next_page_token());
  auto second = billing_->GetOrganizationStatement(billing_admin_, statement);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->closing_balance().amount_minor(), first->closing_balance().amount_minor());
  EXPECT_EQ(second->total_credits().amount_minor(), first->total_credits().amount_minor());
  EXPECT_EQ(second->opening_balance().amount_minor(), first->opening_balance().amount_minor());

  v1::GetOwnerIncomeReportRequest income;
  income.set_owner_organization("organizations/owner");
  *income.mutable_interval() = statement.interval();
  auto get_income = [&](const v1::GetOwnerIncomeReportRequest& r) {
    return billing_->GetOwnerIncomeReport(billing_admin_, r);
  };
  auto rows = [](const v1::OwnerIncomeReport& r) -> const auto& { return r.rows(); };
  const auto all_rows = whole(get_income, income, rows);
  EXPECT_GE(all_rows.size(), 1u);
  EXPECT_EQ(pages(get_income, income, rows), all_rows);
}

TEST_F(BillingTest, TheRateInForceAtTheTimeOfUseIsApplied) {
  // From day_ + 12 h, members pay 600.00; the morning session keeps 500.00.
  iv::CreateRateRequest rate;
  rate.set_parent("instruments/tem");
  rate.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
  rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
  rate.mutable_rate()->set_unit(iv::PER_HOUR);
  *rate.mutable_rate()->mutable_price() = MakeMoney("CNY", 60000);
  *rate.mutable_rate()->mutable_effective_time() = ToProto(day_ + absl::Hours(12));
  Inv(&iv::InventoryService::Stub::CreateRate, rate);
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Session(absl::Hours(12), absl::Hours(13), absl::Hours(12), absl::Hours(13));
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 2u);
  std::map<int64_t, int64_t> by_price;
  for (const auto& c : charges) by_price[c.rate().unit_price().amount_minor()] += c.amount().amount_minor();
  EXPECT_EQ(by_price[50000], 50000);
  EXPECT_EQ(by_price[60000], 60000);
}

TEST_F(BillingTest, PaymentsVoidsCorrectionsStatementsAndSettlementClearing) {
  FundVoucher(billing_admin_, "Voucher", 1000, 1000000);
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));  // 50000, pool 5000
  Drain();
  Session(absl::Hours(12), absl::Hours(14), absl::Hours(12), absl::Hours(14));  // 100000, pool 10000
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 2u);
  const v1::Charge second = charges[1].amount().amount_minor() == 100000 ? charges[1] : charges[0];

  // Reverse the 2 h charge: its subsidy is reversed with it.
  v1::PostCorrectionRequest fix;
  fix.set_posting(second.posting());
  fix.set_mode(v1::PostCorrectionRequest::REVERSE);
  fix.set_reason("instrument fault during the session");
  fix.set_request_id("fix-1");
  auto fixed = billing_->PostCorrection(billing_admin_, fix);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->charge().state(), v1::Charge::REVERSED);
  EXPECT_EQ(fixed->related_corrections_size(), 1);
  auto again = billing_->PostCorrection(billing_admin_, fix);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->correction().name(), fixed->correction().name());
  fix.set_request_id("fix-2");
  EXPECT_EQ(ErrorReason(billing_->PostCorrection(billing_admin_, fix).status()), "ALREADY_REVERSED");
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/income"), 50000);
  v1::GetSubsidyPoolRequest gp;
  gp.set_name("subsidyPools/voucher");
  EXPECT_EQ(billing_->GetSubsidyPool(billing_admin_, gp)->balance().amount_minor(), 995000);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/payable", "organizations/owner"), 45000);

  // January's invoice: 50000 - 5000 + (100000 - 10000) - (100000 - 10000) = 45000.
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 1), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  auto inv = billing_->IssueInvoice(billing_admin_, issue);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->amount_due().amount_minor(), 45000);
  EXPECT_EQ(inv->charges_total().amount_minor(), 150000);
  EXPECT_EQ(inv->subsidy_total().amount_minor(), -15000);
  EXPECT_EQ(inv->adjustments_total().amount_minor(), -90000);

  // Voided, re-issued with the next number; the void one keeps its number.
  v1::VoidInvoiceRequest v;
  v.set_name(inv->name());
  EXPECT_EQ(ErrorReason(billing_->VoidInvoice(billing_admin_, v).status()), "INVALID_FIELD");
  v.set_reason("wrong contact on the invoice");
  auto voided = billing_->VoidInvoice(billing_admin_, v);
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(voided->state(), v1::Invoice::VOID);
  auto reissued = billing_->IssueInvoice(billing_admin_, issue);
  ASSERT_TRUE(reissued.ok()) << reissued.status();
  EXPECT_EQ(reissued->number(), "LS-CNY-2027-000002");
  EXPECT_EQ(reissued->amount_due().amount_minor(), 45000);

  // Overpayment refused; the settlement transfer pays and clears it.
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer("organizations/lab");
  pay.mutable_payment()->set_payee("organizations/owner");
  pay.mutable_payment()->set_invoice(reissued->name());
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 45001);
  EXPECT_EQ(ErrorReason(billing_->RecordPayment(billing_admin_, pay).status()), "OVERPAYMENT");
  v1::ComputeSettlementRequest cs;
  cs.set_period("2027-01");
  auto settlement = billing_->ComputeSettlement(billing_admin_, cs);
  ASSERT_TRUE(settlement.ok()) << settlement.status();
  ASSERT_EQ(settlement->transfers_size(), 1);
  pay.mutable_payment()->clear_invoice();
  pay.mutable_payment()->set_settlement(settlement->name());
  pay.mutable_payment()->set_transfer_index(0);
  EXPECT_EQ(ErrorReason(billing_->RecordPayment(billing_admin_, pay).status()), "TRANSFER_MISMATCH");
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 45000);
  pay.set_request_id("pay-1");
  auto paid = billing_->RecordPayment(billing_admin_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  v1::GetSettlementRequest gs;
  gs.set_name(settlement->name());
  EXPECT_EQ(billing_->GetSettlement(billing_admin_, gs)->state(), v1::Settlement::CLEARED);
  v1::GetInvoiceRequest gi;
  gi.set_name(reissued->name());
  EXPECT_EQ(billing_->GetInvoice(billing_admin_, gi)->state(), v1::Invoice::PAID);
  EXPECT_EQ(AccountBalance("organizations/lab/accounts/payable", "organizations/owner"), 0);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/cash", "organizations/lab"), 45000);
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/receivable", "organizations/lab"), 0);

  // The pool pays the owner what it granted.
  v1::RecordPaymentRequest pool_pays;
  pool_pays.mutable_payment()->set_payer("subsidyPools/voucher");
  pool_pays.mutable_payment()->set_payee("organizations/owner");
  *pool_pays.mutable_payment()->mutable_amount() = MakeMoney("CNY", 5000);
  ASSERT_TRUE(billing_->RecordPayment(billing_admin_, pool_pays).ok());
  EXPECT_EQ(AccountBalance("organizations/owner/accounts/receivable", "subsidyPools/voucher"), 0);

  // The lab's statement for January and February.
  v1::GetOrganizationStatementRequest st;
  st.set_organization("organizations/lab");
  *st.mutable_interval()->mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), absl::UTCTimeZone()));
  *st.mutable_interval()->mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 3, 1), absl::UTCTimeZone()));
  auto statement = billing_->GetOrganizationStatement(billing_admin_, st);
  ASSERT_TRUE(statement.ok()) << statement.status();
  EXPECT_EQ(statement->opening_balance().amount_minor(), 0);
  EXPECT_EQ(statement->closing_balance().amount_minor(), 0);  // all paid
  EXPECT_EQ(statement->total_credits().amount_minor() - statement->total_debits().amount_minor(), 0);
  Principal other{"otto", "outsider", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(billing_->GetOrganizationStatement(other, st).status()), "ORGANIZATION_SCOPE");

  // The owner's income report: 50000 kept, the reversed 100000 corrected out.
  // service_income is the net credit to INCOME (IncomeRow): the reversal,
  // posted in the interval, takes the 100000 back out (it was 150000, the
  // gross of the charges, before the report followed its contract); so do
  // its subsidy (15000 - 10000) and its charge (2 posted, 1 reversed).
  v1::GetOwnerIncomeReportRequest ir;
  ir.set_owner_organization("organizations/owner");
  *ir.mutable_interval() = st.interval();
  auto income = billing_->GetOwnerIncomeReport(billing_admin_, ir);
  ASSERT_TRUE(income.ok()) << income.status();
  EXPECT_EQ(income->totals().service_income().amount_minor(), 50000);
  EXPECT_EQ(income->totals().corrections_amount().amount_minor(), -100000);
  EXPECT_EQ(income->totals().subsidised_amount().amount_minor(), 5000);
  EXPECT_EQ(income->totals().charge_count(), 1);

  v1::ListBalancesRequest lb;
  lb.set_parent("organizations/-");
  lb.set_skip_empty(true);
  auto balances = billing_->ListBalances(billing_admin_, lb);
  ASSERT_TRUE(balances.ok()) << balances.status();
  int64_t debits = 0, credits = 0;
  for (const auto& b : balances->balances()) {
    debits += b.debit_total().amount_minor();
    credits += b.credit_total().amount_minor();
  }
  lb.set_parent("subsidyPools/-");
  balances = billing_->ListBalances(billing_admin_, lb);
  ASSERT_TRUE(balances.ok());
  for (const auto& b : balances->balances()) {
    debits += b.debit_total().amount_minor();
    credits += b.credit_total().amount_minor();
  }
  EXPECT_EQ(debits, credits);
  EXPECT_GT(debits, 0);

  // Listings: the void and the re-issued invoice; a member sees its own.
  v1::ListInvoicesRequest li;
  auto invoices = billing_->ListInvoices(billing_admin_, li);
  ASSERT_TRUE(invoices.ok()) << invoices.status();
  ASSERT_EQ(invoices->invoices_size(), 2);
  EXPECT_EQ(invoices->invoices(0).sequence(), 1);
  EXPECT_EQ(invoices->invoices(0).state(), v1::Invoice::VOID);
  EXPECT_EQ(invoices->invoices(1).state(), v1::Invoice::PAID);
  EXPECT_EQ(billing_->ListInvoices(other, li)->invoices_size(), 0);
  li.set_page_size(1);
  invoices = billing_->ListInvoices(billing_admin_, li);
  ASSERT_EQ(invoices->invoices_size(), 1);
  li.set_page_token(invoices->next_page_token());
  EXPECT_EQ(billing_->ListInvoices(billing_admin_, li)->invoices(0).sequence(), 2);
  v1::ListPaymentsRequest lp;
  lp.set_payee("organizations/owner");
  EXPECT_EQ(billing_->ListPayments(billing_admin_, lp)->payments_size(), 2);
  v1::ListPostingsRequest lpo;
  lpo.set_kind(v1::CORRECTION);
  EXPECT_EQ(billing_->ListPostings(billing_admin_, lpo)->postings_size(), 2);
  Principal lab_admin{"lena", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  lpo.set_kind(v1::PAYMENT);
  auto mine = billing_->ListPostings(lab_admin, lpo);
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->postings_size(), 1);  // the pool's payment is not the lab's
  for (const auto& e : mine->postings(0).entries()) EXPECT_TRUE(absl::StartsWith(e.account(), "organizations/lab/"));
  v1::GetSubsidyAllowanceRequest ga;
  ga.set_name("subsidyPools/voucher/allowances/lab");
  auto allowance = billing_->GetSubsidyAllowance(lab_admin, ga);
  ASSERT_TRUE(allowance.ok()) << allowance.status();
  EXPECT_TRUE(allowance->eligible());
  EXPECT_EQ(allowance->remaining().amount_minor(), 995000);  // uncapped: the balance
  ga.set_name("subsidyPools/voucher/allowances/outsider");
  EXPECT_EQ(ErrorReason(billing_->GetSubsidyAllowance(lab_admin, ga).status()), "ORGANIZATION_SCOPE");
}

// Charge.invoices: "Issued invoices carrying its lines (one per paying
// participant; more after a void and re-issue)", and update_time: "Last
// change of state, corrections or invoices". Issuing names the invoice on
// each charge it carries; voiding keeps it; the re-issue adds the new one.
TEST_F(BillingTest, AChargeNamesTheIssuedInvoicesCarryingItsLines) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].invoices_size(), 0);
  v1::GetChargeRequest gc;
  gc.set_name(charges[0].name());

  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  auto first = billing_->IssueInvoice(billing_admin_, issue);
  ASSERT_TRUE(first.ok()) << first.status();
  auto charge = billing_->GetCharge(billing_admin_, gc);
  ASSERT_TRUE(charge.ok()) << charge.status();
  ASSERT_EQ(charge->invoices_size(), 1);
  EXPECT_EQ(charge->invoices(0), first->name());
  EXPECT_EQ(FromProto(charge->update_time()), FromProto(first->issue_time()));
  EXPECT_EQ(charge->state(), v1::Charge::POSTED);

  clock_.Advance(absl::Minutes(5));
  v1::VoidInvoiceRequest v;
  v.set_name(first->name());
  v.set_reason("wrong contact on the invoice");
  ASSERT_TRUE(billing_->VoidInvoice(billing_admin_, v).ok());
  clock_.Advance(absl::Minutes(5));
  auto second = billing_->IssueInvoice(billing_admin_, issue);
  ASSERT_TRUE(second.ok()) << second.status();
  charge = billing_->GetCharge(billing_admin_, gc);
  ASSERT_TRUE(charge.ok());
  ASSERT_EQ(charge->invoices_size(), 2);
  EXPECT_EQ(charge->invoices(0), first->name());
  EXPECT_EQ(charge->invoices(1), second->name());
  EXPECT_EQ(FromProto(charge->update_time()), FromProto(second->issue_time()));
  // ListCharges shows the same.
  charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].invoices_size(), 2);
}

// SubsidyApplied (billing_events.proto): "pool_balance: The pool's balance
// after it" and "allowance_used: The beneficiary's use of its cap in
// line.cap_period after it" (notify's SUBSIDY_POOL_LOW mail reads the
// balance). 50 % up to 40000 a month from a pool of 50000: 25000, then
// 15000 (the cap).
TEST_F(BillingTest, SubsidyAppliedCarriesThePoolBalanceAndTheCapUseAfterIt) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  auto* pool = cp.mutable_subsidy_pool();
  pool->set_display_name("Innovation voucher");
  pool->set_currency_code("CNY");
  pool->set_percentage_bps(5000);
  *pool->mutable_cap_per_organization() = MakeMoney("CNY", 40000);
  pool->set_cap_period_kind(v1::MONTHLY);
  ASSERT_TRUE(billing_->CreateSubsidyPool(billing_admin_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  *top.mutable_amount() = MakeMoney("CNY", 50000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(billing_admin_, top).ok());
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  Session(absl::Hours(12), absl::Hours(14), absl::Hours(12), absl::Hours(14));
  Drain();
  std::vector<v1::SubsidyApplied> applied;
  for (const auto& e : OutboxEvents()) {
    if (e.has_subsidy_applied()) applied.push_back(e.subsidy_applied());
  }
  ASSERT_EQ(applied.size(), 2u);
  EXPECT_EQ(applied[0].line().amount().amount_minor(), 25000);
  EXPECT_EQ(applied[0].pool_balance().currency_code(), "CNY");
  EXPECT_EQ(applied[0].pool_balance().amount_minor(), 25000);
  EXPECT_EQ(applied[0].allowance_used().amount_minor(), 25000);
  EXPECT_EQ(applied[1].line().amount().amount_minor(), 15000);
  EXPECT_EQ(applied[1].pool_balance().amount_minor(), 10000);
  EXPECT_EQ(applied[1].allowance_used().currency_code(), "CNY");
  EXPECT_EQ(applied[1].allowance_used().amount_minor(), 40000);
}

// CorrectionPosted (billing_events.proto): "income_deltas: Signed changes to
// each owner's figures, one per owner organisation whose income accounts the
// corrections touch" (an ADJUST of a mis-priced charge too, not only a
// reversal: usage's service income reads them) and "pool_balances: Pools
// whose balance the corrections changed, with the balance after".
TEST_F(BillingTest, CorrectionPostedCarriesIncomeDeltasAndPoolBalances) {
  FundVoucher(billing_admin_, "Voucher", 1000, 1000000);
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));  // 50000, pool 5000
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  const v1::Charge charge = charges[0];

  // ADJUST: the charge should have been 10000 more (the owner earns it).
  v1::PostCorrectionRequest adjust = Adjustment(charge);
  AddEntry(adjust, "organizations/lab/accounts/expense", "organizations/owner", true, 10000);
  AddEntry(adjust, "organizations/lab/accounts/payable", "organizations/owner", false, 10000);
  AddEntry(adjust, "organizations/owner/accounts/receivable", "organizations/lab", true, 10000);
  AddEntry(adjust, "organizations/owner/accounts/income", "organizations/lab", false, 10000);
  ASSERT_TRUE(billing_->PostCorrection(billing_admin_, adjust).ok());
  // REVERSE the charge: its subsidy goes back to the pool.
  v1::PostCorrectionRequest reverse;
  reverse.set_posting(charge.posting());
  reverse.set_mode(v1::PostCorrectionRequest::REVERSE);
  reverse.set_reason("instrument fault");
  ASSERT_TRUE(billing_->PostCorrection(billing_admin_, reverse).ok());

  const std::vector<v1::CorrectionPosted> posted = CorrectionsPosted();
  ASSERT_EQ(posted.size(), 2u);
  ASSERT_EQ(posted[0].income_deltas_size(), 1);
  const v1::IncomeFigures& delta = posted[0].income_deltas(0);
  EXPECT_EQ(delta.owner_organization(), "organizations/owner");
  EXPECT_EQ(delta.instrument(), charge.instrument());
  EXPECT_EQ(delta.mode(), charge.mode());
  EXPECT_EQ(delta.fee_kind(), v1::USAGE);
  EXPECT_EQ(delta.charge(), charge.name());
  EXPECT_EQ(delta.currency_code(), "CNY");
  EXPECT_EQ(delta.service_income().amount_minor(), 10000);
  ASSERT_EQ(delta.shares_size(), 1);
  EXPECT_EQ(delta.shares(0).payer_organization(), "organizations/lab");
  EXPECT_EQ(delta.shares(0).service_income().amount_minor(), 10000);
  EXPECT_EQ(posted[0].pool_balances_size(), 0);  // no pool touched

  ASSERT_EQ(posted[1].income_deltas_size(), 1);
  EXPECT_EQ(posted[1].income_deltas(0).service_income().amount_minor(), -50000);
  ASSERT_EQ(posted[1].pool_balances_size(), 1);
  EXPECT_EQ(posted[1].pool_balances(0).subsidy_pool(), "subsidyPools/voucher");
  EXPECT_EQ(posted[1].pool_balances(0).balance().currency_code(), "CNY");
  EXPECT_EQ(posted[1].pool_balances(0).balance().amount_minor(), 1000000);
}

// An ADJUST may credit the owner's income without a counterparty (or with a
// pool): the delta is the corrected charge's payer's, so usage counts it
// under an organisation (it counts income per payer share only).
TEST_F(BillingTest, AnAdjustedIncomeWithoutCounterpartyIsThePayersIncome) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  const v1::Charge charge = charges[0];
  v1::PostCorrectionRequest adjust = Adjustment(charge);
  AddEntry(adjust, "organizations/owner/accounts/receivable", "organizations/lab", true, 7000);
  AddEntry(adjust, "organizations/owner/accounts/income", "", false, 7000);
  ASSERT_TRUE(billing_->PostCorrection(billing_admin_, adjust).ok());
  const std::vector<v1::CorrectionPosted> posted = CorrectionsPosted();
  ASSERT_EQ(posted.size(), 1u);
  ASSERT_EQ(posted[0].income_deltas_size(), 1);
  const v1::IncomeFigures& delta = posted[0].income_deltas(0);
  EXPECT_EQ(delta.service_income().amount_minor(), 7000);
  ASSERT_EQ(delta.shares_size(), 1);
  EXPECT_EQ(delta.shares(0).payer_organization(), charge.payer_organization());
  EXPECT_EQ(delta.shares(0).service_income().amount_minor(), 7000);
}

// DepositChanged (billing_events.proto): "A deposit was taken or settled":
// HELD with the DEPOSIT charge at handover; SETTLED at close with the
// DAMAGE charge for the damage beyond the deposit, the application (and
// release) postings and the owner's compensation from the deposit applied.
// Each after the ChargePosted of its charge.
TEST_F(BillingTest, DepositsAreAnnouncedWhenHeldAndWhenSettled) {
  bk::Lease lease, out;
  ASSERT_NO_FATAL_FAILURE(HandOverLease(&lease));
  clock_.Set(day_ + absl::Hours(24 * 6));
  bk::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("stage scratched");
  *ret.mutable_damage_amount() = MakeMoney("CNY", 150000);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
  bk::CloseLeaseRequest close;
  close.set_name(lease.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CloseLease, close, &out, staff_).ok());
  Drain();

  const std::vector<v1::BillingEvent> events = OutboxEvents();
  std::vector<size_t> at;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].has_deposit_changed()) at.push_back(i);
  }
  ASSERT_EQ(at.size(), 2u);
  const v1::DepositChanged& held = events[at[0]].deposit_changed();
  EXPECT_EQ(held.kind(), v1::DepositChanged::HELD);
  EXPECT_EQ(held.deposit().state(), v1::Deposit::HELD);
  EXPECT_EQ(held.deposit().held_amount().amount_minor(), 100000);
  EXPECT_EQ(held.charge().fee_kind(), v1::DEPOSIT);
  EXPECT_EQ(held.charge().name(), held.deposit().hold_charge());
  ASSERT_GT(at[0], 0u);
  EXPECT_EQ(events[at[0] - 1].charge_posted().charge().name(), held.charge().name());

  const v1::DepositChanged& settled = events[at[1]].deposit_changed();
  EXPECT_EQ(settled.kind(), v1::DepositChanged::SETTLED);
  EXPECT_EQ(settled.deposit().state(), v1::Deposit::APPLIED);
  EXPECT_EQ(settled.deposit().held_amount().amount_minor(), 0);
  EXPECT_EQ(settled.charge().fee_kind(), v1::DAMAGE);
  EXPECT_EQ(settled.charge().amount().amount_minor(), 50000);
  EXPECT_EQ(settled.charge().name(), settled.deposit().excess_damage_charge());
  ASSERT_EQ(settled.postings_size(), 1);  // all of it applied, nothing released
  EXPECT_EQ(settled.postings(0).kind(), v1::DEPOSIT_APPLICATION);
  EXPECT_EQ(settled.income().owner_organization(), "organizations/owner");
  EXPECT_EQ(settled.income().compensation().amount_minor(), 100000);
  EXPECT_EQ(settled.income().service_income().amount_minor(), 0);
  bool damage_announced_before = false;
  for (size_t i = at[0] + 1; i < at[1]; ++i) {
    damage_announced_before |= events[i].charge_posted().charge().name() == settled.charge().name();
  }
  EXPECT_TRUE(damage_announced_before);
}

// Charge.description: "Output only. Free text for invoices": every charge
// billing prices says what it is (fee kind, mode, instrument, service time),
// and its CHARGE posting and invoice line carry that text.
TEST_F(BillingTest, AChargeDescribesItselfForInvoices) {
  Session(absl::Hours(9), absl::Hours(10), absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = Charges();
  ASSERT_EQ(charges.size(), 1u);
  const v1::Charge& c = charges[0];
  EXPECT_TRUE(absl::StrContains(c.description(), "Instrument time")) << c.description();
  EXPECT_TRUE(absl::StrContains(c.description(), "tem")) << c.description();
  v1::GetPostingRequest gp;
  gp.set_name(c.posting());
  auto posting = billing_->GetPosting(billing_admin_, gp);
  ASSERT_TRUE(posting.ok()) << posting.status();
  EXPECT_EQ(posting->description(), c.description());
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto draft = billing_->PreviewInvoice(billing_admin_, preview);
  ASSERT_TRUE(draft.ok()) << draft.status();
  ASSERT_EQ(draft->lines_size(), 1);
  EXPECT_EQ(draft->lines(0).description(), c.description());
}

}  // namespace
}  // namespace labshare::billing
