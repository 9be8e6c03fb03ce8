// Billing against the second contract audit of 2026-12-06 (billing.proto,
// billing_events.proto and types.proto as the contract):
// 1. SubsidyPoolChanged (UPDATED).previous is the pool as GetSubsidyPool
//    showed it just before the update (balance, granted_total, state, etag
//    read then, not the values stored at creation);
// 2. the billing events a booking event causes carry its request_id (the
//    rent the period-end sweep posts carries none);
// 3. a list's last page carries no next_page_token, also when the page is
//    full and only entries the caller may not see, or that the filter
//    excludes, follow in the index;
// 4. a member billing admin (or facility staff) whose token names no
//    organisation sees nothing: PERMISSION_DENIED ORGANIZATION_SCOPE, never
//    every organisation's postings, payments or settlements;
// 5. UpdateSubsidyPool with an empty update_mask is INVALID_UPDATE_MASK.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock).
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using booking::BookingServiceTest;

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";
constexpr char kThird[] = "organizations/third";

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& reason) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorReason(s), reason) << s;
}

std::string FieldOf(const absl::Status& status) {
  auto v = FieldViolationsOf(status);
  return v.empty() ? "" : v.front().field;
}

class BillingAudit2Test : public testing::BillingLedgerTest {
 protected:
  const Principal& admin_p_ = root_;
};

// ================================================================ 1. UPDATED's previous

// billing_events.proto SubsidyPoolChanged: "UPDATED: the pool before". Its
// balance, granted_total, state and etag are computed on read (billing.proto
// SubsidyPool): the pool before is what GetSubsidyPool answered just before
// the update, not the record stored at creation (balance 0, etag "1").
TEST_F(BillingAudit2Test, UpdatedEventsPreviousIsThePoolAsReadJustBefore) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("fund");
  cp.mutable_subsidy_pool()->set_display_name("Fund");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(2000);
  ASSERT_TRUE(billing_->CreateSubsidyPool(admin_p_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/fund");
  *top.mutable_amount() = MakeMoney("CNY", 100000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(admin_p_, top).ok());
  const v1::SubsidyPool before = Pool("subsidyPools/fund");
  ASSERT_EQ(before.balance().amount_minor(), 100000);
  ASSERT_EQ(before.etag(), "2");
  ASSERT_EQ(before.state(), v1::SubsidyPool::ACTIVE);

  clock_.Set(clock_.Now() + absl::Minutes(5));
  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/fund");
  up.mutable_subsidy_pool()->set_display_name("Fund 2027");
  up.mutable_subsidy_pool()->set_etag(before.etag());
  up.mutable_update_mask()->add_paths("display_name");
  up.set_request_id("rename-fund");
  auto updated = billing_->UpdateSubsidyPool(admin_p_, up);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->etag(), "3");
  EXPECT_EQ(updated->balance().amount_minor(), 100000);

  std::vector<v1::SubsidyPoolChanged> changes;
  for (const auto& e : Published()) {
    if (e.has_subsidy_pool_changed() && e.subsidy_pool_changed().kind() == v1::SubsidyPoolChanged::UPDATED) {
      changes.push_back(e.subsidy_pool_changed());
    }
  }
  ASSERT_EQ(changes.size(), 1u);
  const v1::SubsidyPool& previous = changes[0].previous();
  EXPECT_EQ(previous.display_name(), "Fund");
  EXPECT_EQ(previous.balance().amount_minor(), 100000);
  EXPECT_EQ(previous.balance().currency_code(), "CNY");
  EXPECT_EQ(previous.granted_total().amount_minor(), 0);
  EXPECT_EQ(previous.state(), v1::SubsidyPool::ACTIVE);
  EXPECT_EQ(previous.etag(), "2");
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(previous, before))
      << previous.DebugString() << "\nvs GetSubsidyPool before:\n" << before.DebugString();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(changes[0].subsidy_pool(), *updated));
  // After the update GetSubsidyPool answers what the event says the pool is.
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Pool("subsidyPools/fund"), *updated));
}

// ================================================================ 2. request_id of caused events

// types.proto EventHeader.request_id: "The request_id of the mutation that
// caused it, if any". A charge, its subsidy lines and a deposit come from a
// booking event: they carry that event's request_id (its mutation's).
TEST_F(BillingAudit2Test, EventsCausedByABookingEventCarryItsRequestId) {
  bk::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b, "book-ana-1").ok());
  Use(b, ana_, "check-in-ana-1", "check-out-ana-1");

  std::map<std::string, std::string> request_of;  // booking event id -> its request_id
  for (const auto& e : Events()) request_of[e.header().event_id()] = e.header().request_id();
  std::map<std::string, std::string> charge_request;  // charge -> its ChargePosted's request_id
  int subsidies = 0;
  for (const auto& e : Published()) {
    if (e.has_charge_posted()) {
      const v1::Charge& c = e.charge_posted().charge();
      ASSERT_TRUE(request_of.count(c.source_event_id())) << c.source_event_id();
      const std::string& cause = request_of[c.source_event_id()];
      EXPECT_FALSE(cause.empty()) << "the booking event of " << c.name() << " has no request_id";
      EXPECT_EQ(e.header().request_id(), cause) << c.name();
      EXPECT_EQ(e.header().actor(), "services/billing");
      charge_request[c.name()] = e.header().request_id();
    }
  }
  ASSERT_EQ(charge_request.size(), 1u);
  EXPECT_EQ(charge_request.begin()->second, "check-out-ana-1");  // CheckOut completed the session
  for (const auto& e : Published()) {
    if (!e.has_subsidy_applied()) continue;
    ++subsidies;
    ASSERT_TRUE(charge_request.count(e.subsidy_applied().charge()));
    EXPECT_EQ(e.header().request_id(), charge_request[e.subsidy_applied().charge()]);
  }
  EXPECT_EQ(subsidies, 1);  // voucher paid 10 %
}

// The deposit taken at handover (DepositChanged HELD and its DEPOSIT
// charge) carries the handover's request_id; the rent the period-end sweep
// posts was caused by no request: "".
TEST_F(BillingAudit2Test, ADepositCarriesTheHandoversRequestIdAndSweptRentNone) {
  const bk::Lease lease = ApprovedLease(39);
  bk::Lease out;
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip new");
  h.set_request_id("handover-afm-1");
  clock_.Set(day_ + absl::Hours(24));
  grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Bill();

  int held = 0, deposit_charges = 0;
  for (const auto& e : Published()) {
    if (e.has_deposit_changed() && e.deposit_changed().kind() == v1::DepositChanged::HELD) {
      ++held;
      EXPECT_EQ(e.header().request_id(), "handover-afm-1");
    }
    if (e.has_charge_posted() && e.charge_posted().charge().fee_kind() == v1::DEPOSIT) {
      ++deposit_charges;
      EXPECT_EQ(e.header().request_id(), "handover-afm-1");
    }
  }
  EXPECT_EQ(held, 1);
  EXPECT_EQ(deposit_charges, 1);

  // The month after the handover has ended: its rent, posted by the sweep.
  clock_.Set(FromProto(lease.term().start_time()) + absl::Hours(24 * 35));
  auto swept = billing_->ChargeEndedLeasePeriods();
  ASSERT_TRUE(swept.ok()) << swept.status();
  ASSERT_GE(*swept, 1);
  int rent = 0;
  for (const auto& e : Published()) {
    if (e.has_charge_posted() && e.charge_posted().charge().fee_kind() == v1::LEASE_PERIOD) {
      ++rent;
      EXPECT_EQ(e.header().request_id(), "");
    }
    if (e.has_subsidy_applied() && e.subsidy_applied().fee_kind() == v1::LEASE_PERIOD) {
      EXPECT_EQ(e.header().request_id(), "");
    }
  }
  EXPECT_EQ(rent, *swept);
}

// ================================================================ 3. no token after the last page

// types.proto pagination: exactly two invoices, one a page: the second
// page is the last and carries no next_page_token.
TEST_F(BillingAudit2Test, TheLastFullPageOfInvoicesCarriesNoToken) {
  Owe(kLab, kOwner, 10000);
  Owe(kThird, kOwner, 4000);
  Issue(kLab);
  Issue(kThird);
  v1::ListInvoicesRequest r;
  r.set_page_size(1);
  auto first = billing_->ListInvoices(admin_p_, r);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->invoices_size(), 1);
  ASSERT_FALSE(first->next_page_token().empty());
  r.set_page_token(first->next_page_token());
  auto second = billing_->ListInvoices(admin_p_, r);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->invoices_size(), 1);
  EXPECT_NE(second->invoices(0).name(), first->invoices(0).name());
  EXPECT_EQ(second->next_page_token(), "");

  // Filtered: lab's one invoice fills its page, third's follows in the index.
  v1::ListInvoicesRequest lab;
  lab.set_payer_organization(kLab);
  lab.set_page_size(1);
  auto only = billing_->ListInvoices(admin_p_, lab);
  ASSERT_TRUE(only.ok()) << only.status();
  ASSERT_EQ(only->invoices_size(), 1);
  EXPECT_EQ(only->next_page_token(), "");
  // A member's list: lab sees its own invoice only.
  v1::ListInvoicesRequest mine;
  mine.set_page_size(1);
  auto member = billing_->ListInvoices(Member("lab"), mine);
  ASSERT_TRUE(member.ok()) << member.status();
  ASSERT_EQ(member->invoices_size(), 1);
  EXPECT_EQ(member->invoices(0).payer_organization(), kLab);
  EXPECT_EQ(member->next_page_token(), "");
}

// The other scans share the look-ahead: the only top-up is the last of
// its filtered list, payments too.
TEST_F(BillingAudit2Test, TheLastFullPageOfPostingsAndPaymentsCarriesNoToken) {
  Owe(kLab, kOwner, 10000);  // a posting after the top-up
  v1::ListPostingsRequest lp;
  lp.set_kind(v1::POOL_TOP_UP);
  lp.set_page_size(1);
  auto postings = billing_->ListPostings(admin_p_, lp);
  ASSERT_TRUE(postings.ok()) << postings.status();
  ASSERT_EQ(postings->postings_size(), 1);
  EXPECT_EQ(postings->next_page_token(), "");

  const v1::Invoice inv = Issue(kLab);
  ASSERT_EQ(inv.payees_size(), 1);
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kLab);
  pay.mutable_payment()->set_payee(kOwner);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 4000);
  pay.mutable_payment()->set_invoice(inv.name());
  ASSERT_TRUE(billing_->RecordPayment(admin_p_, pay).ok());
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 6000);
  ASSERT_TRUE(billing_->RecordPayment(admin_p_, pay).ok());
  v1::ListPaymentsRequest r;
  r.set_page_size(1);
  auto first = billing_->ListPayments(admin_p_, r);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->payments_size(), 1);
  ASSERT_FALSE(first->next_page_token().empty());
  r.set_page_token(first->next_page_token());
  auto second = billing_->ListPayments(admin_p_, r);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->payments_size(), 1);
  EXPECT_EQ(second->next_page_token(), "");
}

// ListCharges: a member's own charges, then another organisation's in the
// index. The page of its own charges is its last: no token, though index
// entries follow.
TEST_F(BillingAudit2Test, AMembersLastPageOfChargesCarriesNoTokenBeforeOthersCharges) {
  const std::string olga = AddOwnerUser();
  bk::Booking lab_session, owner_session;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &lab_session).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &owner_session, "", "users/olga").ok());
  Use(lab_session, ana_);      // billed first: first in the index
  Use(owner_session, olga);  // owner's internal use: not lab's

  v1::ListChargesRequest all;
  all.set_page_size(100);
  auto everything = billing_->ListCharges(admin_p_, all);
  ASSERT_TRUE(everything.ok()) << everything.status();
  ASSERT_EQ(everything->charges_size(), 2);
  EXPECT_EQ(everything->charges(0).payer_organization(), kLab);
  EXPECT_EQ(everything->charges(1).payer_organization(), kOwner);

  const Principal lab = Member("lab");
  v1::ListChargesRequest r;
  r.set_page_size(1);
  auto own = billing_->ListCharges(lab, r);
  ASSERT_TRUE(own.ok()) << own.status();
  ASSERT_EQ(own->charges_size(), 1);
  EXPECT_EQ(own->charges(0).payer_organization(), kLab);
  EXPECT_EQ(own->next_page_token(), "");
  // The admin's filter to lab, the same.
  r.set_payer_organization(kLab);
  auto filtered = billing_->ListCharges(admin_p_, r);
  ASSERT_TRUE(filtered.ok()) << filtered.status();
  ASSERT_EQ(filtered->charges_size(), 1);
  EXPECT_EQ(filtered->next_page_token(), "");
  // Unfiltered, the admin's first page does have a next one.
  r.clear_payer_organization();
  auto first = billing_->ListCharges(admin_p_, r);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->next_page_token().empty());
}

// ================================================================ 4. a member without an organisation

// billing.proto Authorization: a member billing admin "sees only its own
// organisation"; an unset filter "is narrowed to its own organisation". A
// token that names none has nothing to see: ORGANIZATION_SCOPE on every
// method that narrows by the caller's organisation, not every
// organisation's resources.
TEST_F(BillingAudit2Test, AMemberWithoutAnOrganizationSeesNothing) {
  // third pays its invoice; lab's is left to the settlement.
  Owe(kLab, kOwner, 10000);
  Owe(kThird, kOwner, 4000);
  const v1::Invoice inv = Issue(kLab);
  const v1::Invoice third = Issue(kThird);
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kThird);
  pay.mutable_payment()->set_payee(kOwner);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 4000);
  pay.mutable_payment()->set_invoice(third.name());
  auto paid = billing_->RecordPayment(admin_p_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  v1::ComputeSettlementRequest cs;
  cs.set_period("2027-01");
  auto settlement = billing_->ComputeSettlement(admin_p_, cs);
  ASSERT_TRUE(settlement.ok()) << settlement.status();

  const Principal nobody{"nobody", "", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  const auto denied = absl::StatusCode::kPermissionDenied;
  ExpectError(billing_->ListPayments(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListPostings(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListSettlements(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListInvoices(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListCharges(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListDeposits(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  v1::GetSettlementRequest gs;
  gs.set_name(settlement->name());
  ExpectError(billing_->GetSettlement(nobody, gs).status(), denied, "ORGANIZATION_SCOPE");
  v1::GetInvoiceRequest gi;
  gi.set_name(inv.name());
  ExpectError(billing_->GetInvoice(nobody, gi).status(), denied, "ORGANIZATION_SCOPE");
  v1::GetPaymentRequest gp;
  gp.set_name(paid->name());
  ExpectError(billing_->GetPayment(nobody, gp).status(), denied, "ORGANIZATION_SCOPE");
  v1::GetOrganizationStatementRequest st;  // naming no organisation either
  *st.mutable_interval()->mutable_start_time() = ToProto(day_);
  *st.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 60));
  ExpectError(billing_->GetOrganizationStatement(nobody, st).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListBalances(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  v1::GetOwnerIncomeReportRequest income;
  *income.mutable_interval() = st.interval();
  ExpectError(billing_->GetOwnerIncomeReport(nobody, income).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->PreviewInvoice(nobody, {}).status(), denied, "ORGANIZATION_SCOPE");
  // The payment recorded by a member is one its organisation received.
  ExpectError(billing_->RecordPayment(nobody, v1::RecordPaymentRequest()).status(), denied, "ORGANIZATION_SCOPE");

  // Facility staff without an organisation: the same for the owner side.
  const Principal staff{"staffless", "", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  ExpectError(billing_->ListCharges(staff, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListDeposits(staff, {}).status(), denied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->GetOwnerIncomeReport(staff, income).status(), denied, "ORGANIZATION_SCOPE");

  // With an organisation the same calls are narrowed to it, as before.
  auto lab_payments = billing_->ListPayments(Member("lab"), {});
  ASSERT_TRUE(lab_payments.ok()) << lab_payments.status();
  EXPECT_EQ(lab_payments->payments_size(), 0);
  auto third_payments = billing_->ListPayments(Member("third"), {});
  ASSERT_TRUE(third_payments.ok()) << third_payments.status();
  EXPECT_EQ(third_payments->payments_size(), 1);
  auto outsider = billing_->ListPostings(Member("outsider"), {});
  ASSERT_TRUE(outsider.ok()) << outsider.status();
  EXPECT_EQ(outsider->postings_size(), 0);
}

// ================================================================ 5. an empty update_mask

// billing.proto UpdateSubsidyPool: "An empty mask is INVALID_UPDATE_MASK"
// (no implied mask): nothing changes.
TEST_F(BillingAudit2Test, UpdateSubsidyPoolWithAnEmptyMaskIsInvalidUpdateMask) {
  const v1::SubsidyPool before = Pool("subsidyPools/voucher");
  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
  up.mutable_subsidy_pool()->set_display_name("Renamed");
  up.mutable_subsidy_pool()->set_percentage_bps(5000);
  const absl::Status s = billing_->UpdateSubsidyPool(admin_p_, up).status();
  ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_UPDATE_MASK");
  EXPECT_EQ(FieldOf(s), "update_mask");
  const v1::SubsidyPool after = Pool("subsidyPools/voucher");
  EXPECT_EQ(after.display_name(), "Voucher");
  EXPECT_EQ(after.percentage_bps(), 1000);
  EXPECT_EQ(after.etag(), before.etag());
}

}  // namespace
}  // namespace labshare::billing
