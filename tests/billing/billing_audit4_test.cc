// Billing against the fourth contract audit of 2026-12-06 (billing.proto as
// the contract):
// 1. PostCorrection: REVERSE of a PAYMENT posting, or of the CHARGE posting
//    of a DEPOSIT charge, is NOT_CORRECTABLE and writes nothing (the
//    payment, its invoice and the deposit would no longer match the
//    ledger).
// 2. ListPostings: a member's counterparty filter matches only its own
//    entries (those it is shown), never another pair's in the same posting.
// 3. ListDeposits, ListPayments and ListSubsidyPools refuse a malformed
//    filter (INVALID_FIELD) instead of answering an empty list.
// 4. Check order: a request wrong in two ways gets the error its RPC's
//    Errors list names first (INVALID_ARGUMENT before NOT_FOUND before
//    FAILED_PRECONDITION, the list's order within one code, ETAG_MISMATCH
//    after the checks listed before it): RecordPayment, TopUpSubsidyPool,
//    UpdateSubsidyPool, PostCorrection ADJUST.
// 5. GetAccountBalance / ListBalances as_of_time: "Entries created strictly
//    before this time count", to the nanosecond.
// 7. A pool's cap usage is kept per cap period of its kind: a new
//    cap_period_kind starts it afresh (a month and a quarter starting alike
//    no longer share a counter); usage of the old form counts for the kind
//    the pool had.
// 8. ListBalances and ListSubsidyPools page after the last row's key, and
//    ListBalances without as_of_time keeps the first page's time.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock).
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";
constexpr char kThird[] = "organizations/third";

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& reason) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorReason(s), reason) << s;
}

class BillingAudit4Test : public testing::BillingLedgerTest {
 protected:
  // lab owes owner 100.00 and owner lab 30.00, both invoiced: January's
  // settlement has one transfer, lab to owner.
  void OweEachOther() {
    Owe(kLab, kOwner, 10000);
    Owe(kOwner, kLab, 3000);
    Issue(kLab);
    Issue(kOwner);
  }

  int CorrectionsPosted() {
    v1::ListPostingsRequest lp;
    lp.set_kind(v1::CORRECTION);
    lp.set_page_size(1000);
    auto got = billing_->ListPostings(root_, lp);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->postings_size() : -1;
  }
};

// ================================================================ 1. not correctable

// PostCorrection NOT_CORRECTABLE: "REVERSE of a PAYMENT posting is refused
// (its Payment, and the invoice or settlement transfer it paid, stand)".
// The invoice stays PAID with its payment, the ledger as it was.
TEST_F(BillingAudit4Test, APaymentPostingIsNotReversed) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice issued = Issue(kLab);
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kLab);
  pay.mutable_payment()->set_payee(kOwner);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 10000);
  pay.mutable_payment()->set_invoice(issued.name());
  auto paid = billing_->RecordPayment(root_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  const int corrections = CorrectionsPosted();
  clock_.Advance(absl::Hours(1));

  ExpectError(Reverse(paid->posting(), "paid twice").status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
  EXPECT_EQ(CorrectionsPosted(), corrections);
  EXPECT_TRUE(GetPosting(paid->posting()).corrected_by().empty());
  const v1::Invoice now = GetInvoice(issued.name());
  EXPECT_EQ(now.state(), v1::Invoice::PAID);
  EXPECT_EQ(now.amount_paid().amount_minor(), 10000);
  EXPECT_EQ(SubLedger(kLab, "payable", kOwner), 0);
  EXPECT_EQ(SubLedger(kOwner, "receivable", kLab), 0);
}

// ... nor one paying a settlement's transfer (the settlement stays CLEARED).
TEST_F(BillingAudit4Test, ATransfersPaymentPostingIsNotReversed) {
  OweEachOther();
  auto settlement = ComputeJanuary();
  ASSERT_TRUE(settlement.ok()) << settlement.status();
  ASSERT_EQ(settlement->transfers_size(), 1);
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kLab);
  pay.mutable_payment()->set_payee(kOwner);
  pay.mutable_payment()->set_settlement(settlement->name());
  pay.mutable_payment()->set_transfer_index(0);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 7000);
  auto paid = billing_->RecordPayment(root_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  const int corrections = CorrectionsPosted();

  ExpectError(Reverse(paid->posting(), "wrong transfer").status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
  EXPECT_EQ(CorrectionsPosted(), corrections);
  v1::GetSettlementRequest gs;
  gs.set_name(settlement->name());
  auto stored = billing_->GetSettlement(root_, gs);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state(), v1::Settlement::CLEARED);
}

// "... and so is REVERSE of the CHARGE posting of a DEPOSIT charge (the
// deposit hold, undone only by its release or application when the lease
// is closed)": the charge stays POSTED, the deposit HELD, the lessee's
// DEPOSIT_LODGED as the hold left it; an ADJUST touching the deposit accounts is refused too (billing_audit_test).
TEST_F(BillingAudit4Test, ADepositHoldIsNotReversed) {
  const bk::Lease lease = ApprovedLease(19);
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip new");
  bk::Lease out;
  clock_.Set(day_ + absl::Hours(24));
  grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Bill();
  v1::ListChargesRequest lc;
  lc.set_reference(lease.name());
  auto charges = billing_->ListCharges(root_, lc);
  ASSERT_TRUE(charges.ok()) << charges.status();
  v1::Charge hold;
  for (const auto& c : charges->charges()) {
    if (c.fee_kind() == v1::DEPOSIT) hold = c;
  }
  ASSERT_FALSE(hold.posting().empty());
  const int corrections = CorrectionsPosted();
  clock_.Advance(absl::Hours(1));

  ExpectError(Reverse(hold.posting(), "deposit waived").status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
  EXPECT_EQ(CorrectionsPosted(), corrections);
  v1::GetChargeRequest gc;
  gc.set_name(hold.name());
  auto charge = billing_->GetCharge(root_, gc);
  ASSERT_TRUE(charge.ok()) << charge.status();
  EXPECT_EQ(charge->state(), v1::Charge::POSTED);
  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().find('/') + 1));
  auto deposit = billing_->GetDeposit(root_, gd);
  ASSERT_TRUE(deposit.ok()) << deposit.status();
  EXPECT_EQ(deposit->state(), v1::Deposit::HELD);
  EXPECT_EQ(SubLedger(kLab, "deposit-lodged", ""), 100000);
}

// ================================================================ 2. counterparty on own entries

// ListPostings: a member is shown "only that organisation's entries" of a
// posting; its counterparty filter is evaluated on those. One ADJUST puts
// lab -> owner and third -> owner on the ledger: lab filtering by third
// finds nothing (it would learn that third owes owner in the same
// posting), by owner finds the posting; the admin finds it by third.
TEST_F(BillingAudit4Test, AMembersCounterpartyFilterSeesOnlyItsOwnEntries) {
  v1::PostCorrectionRequest fix;
  fix.set_posting(top_up_);
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("two services outside the booking system");
  auto entry = [&](const std::string& owner, const char* kind, const std::string& cp, bool debit, int64_t amount) {
    v1::Entry* e = fix.add_entries();
    e->set_account(owner + "/accounts/" + kind);
    e->set_counterparty(cp);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", amount);
  };
  for (const auto& [payer, amount] : std::vector<std::pair<std::string, int64_t>>{{kLab, 1000}, {kThird, 2000}}) {
    entry(payer, "expense", kOwner, true, amount);
    entry(payer, "payable", kOwner, false, amount);
    entry(kOwner, "receivable", payer, true, amount);
    entry(kOwner, "income", payer, false, amount);
  }
  auto posted = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(posted.ok()) << posted.status();
  const std::string name = posted->correction().name();

  auto list = [&](const Principal& who, const std::string& counterparty) {
    v1::ListPostingsRequest lp;
    lp.set_kind(v1::CORRECTION);
    lp.set_counterparty(counterparty);
    auto got = billing_->ListPostings(who, lp);
    EXPECT_TRUE(got.ok()) << got.status();
    std::vector<std::string> names;
    if (got.ok()) {
      for (const auto& posting : got->postings()) names.push_back(posting.name());
    }
    return names;
  };
  EXPECT_EQ(list(Member("lab"), kThird), std::vector<std::string>{});
  EXPECT_EQ(list(Member("lab"), kOwner), std::vector<std::string>{name});
  EXPECT_EQ(list(Member("third"), kLab), std::vector<std::string>{});
  EXPECT_EQ(list(root_, kThird), std::vector<std::string>{name});
  // The owner, on both pairs, finds it by either.
  EXPECT_EQ(list(Member("owner"), kLab), std::vector<std::string>{name});
  EXPECT_EQ(list(Member("owner"), kThird), std::vector<std::string>{name});
}

// ================================================================ 3. malformed filters

// ListDeposits, ListPayments, ListSubsidyPools: "INVALID_ARGUMENT
// (INVALID_FIELD, ...)": a filter of the wrong form is refused, naming the
// field, as ListCharges does; a member's filter naming another
// organisation is still ORGANIZATION_SCOPE first.
TEST_F(BillingAudit4Test, MalformedListFiltersAreInvalidFields) {
  auto expect_field = [](const absl::Status& s, const std::string& field) {
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    auto v = FieldViolationsOf(s);
    ASSERT_FALSE(v.empty()) << s;
    EXPECT_EQ(v.front().field, field) << s;
  };
  auto deposits = [&](const Principal& who, auto set) {
    v1::ListDepositsRequest r;
    set(r);
    return billing_->ListDeposits(who, r).status();
  };
  expect_field(deposits(root_, [](auto& r) { r.set_owner_organization("owner"); }), "owner_organization");
  expect_field(deposits(root_, [](auto& r) { r.set_lessee_organization("users/ana"); }), "lessee_organization");
  expect_field(deposits(root_, [](auto& r) { r.set_instrument("afm"); }), "instrument");
  expect_field(deposits(root_, [](auto& r) { r.set_lease("instruments/afm"); }), "lease");
  EXPECT_TRUE(deposits(root_, [](auto& r) { r.set_lease("leases/none"); }).ok());
  ExpectError(deposits(Member("lab"), [](auto& r) { r.set_owner_organization("owner"); }),
              absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");

  auto payments = [&](const Principal& who, auto set) {
    v1::ListPaymentsRequest r;
    set(r);
    return billing_->ListPayments(who, r).status();
  };
  expect_field(payments(root_, [](auto& r) { r.set_payer("lab"); }), "payer");
  expect_field(payments(root_, [](auto& r) { r.set_payee("subsidyPools/voucher"); }), "payee");
  expect_field(payments(root_, [](auto& r) { r.set_organization("lab"); }), "organization");
  expect_field(payments(root_, [](auto& r) { r.set_invoice("INV-2027-000001"); }), "invoice");
  expect_field(payments(root_, [](auto& r) { r.set_settlement("2027-01"); }), "settlement");
  EXPECT_TRUE(payments(root_, [](auto& r) { r.set_payer("subsidyPools/voucher"); }).ok());
  expect_field(payments(Member("lab"), [](auto& r) {
                 r.set_payer(kLab);
                 r.set_invoice("INV-2027-000001");
               }),
               "invoice");

  auto pools = [&](auto set) {
    v1::ListSubsidyPoolsRequest r;
    set(r);
    return billing_->ListSubsidyPools(root_, r).status();
  };
  expect_field(pools([](auto& r) { r.set_funder_organization("lab"); }), "funder_organization");
  expect_field(pools([](auto& r) { r.set_currency_code("RMB"); }), "currency_code");
  EXPECT_TRUE(pools([](auto& r) { r.set_currency_code("USD"); }).ok());
}

// ================================================================ 4. check order

// RecordPayment against an invoice: "INVALID_ARGUMENT (... an invoice whose
// payer is neither the payer nor the payee; CURRENCY_MISMATCH ...)" come
// before "FAILED_PRECONDITION (INVOICE_NOT_ISSUED ...; PAYEE_NOT_ON_INVOICE;
// INVOICE_IN_SETTLEMENT ...)", which come in that order.
TEST_F(BillingAudit4Test, RecordPaymentOnAnInvoiceChecksTheRequestBeforeTheInvoicesState) {
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 3000);
  const v1::Invoice lab = Issue(kLab);
  Issue(kOwner);
  auto payment = [&](const std::string& payer, const std::string& payee, const char* currency, int64_t amount) {
    v1::RecordPaymentRequest pay;
    pay.mutable_payment()->set_payer(payer);
    pay.mutable_payment()->set_payee(payee);
    *pay.mutable_payment()->mutable_amount() = MakeMoney(currency, amount);
    pay.mutable_payment()->set_invoice(lab.name());
    return pay;
  };
  // Held by a settlement: a payee not on the invoice is PAYEE_NOT_ON_INVOICE.
  auto settlement = ComputeJanuary();
  ASSERT_TRUE(settlement.ok()) << settlement.status();
  ExpectError(billing_->RecordPayment(root_, payment(kLab, kThird, "CNY", 100)).status(),
              absl::StatusCode::kFailedPrecondition, "PAYEE_NOT_ON_INVOICE");
  ExpectError(billing_->RecordPayment(root_, payment(kLab, kOwner, "CNY", 100)).status(),
              absl::StatusCode::kFailedPrecondition, "INVOICE_IN_SETTLEMENT");
  // Paid (by its settlement): the request's own faults first.
  for (int i = 0; i < settlement->transfers_size(); ++i) {
    const v1::SettlementTransfer& t = settlement->transfers(i);
    v1::RecordPaymentRequest pay;
    pay.mutable_payment()->set_payer(t.from_organization());
    pay.mutable_payment()->set_payee(t.to_organization());
    *pay.mutable_payment()->mutable_amount() = t.amount();
    pay.mutable_payment()->set_settlement(settlement->name());
    pay.mutable_payment()->set_transfer_index(i);
    ASSERT_TRUE(billing_->RecordPayment(root_, pay).ok());
  }
  ASSERT_EQ(GetInvoice(lab.name()).state(), v1::Invoice::PAID);
  const absl::Status currency = billing_->RecordPayment(root_, payment(kLab, kOwner, "USD", 100)).status();
  ExpectError(currency, absl::StatusCode::kInvalidArgument, "CURRENCY_MISMATCH");
  const absl::Status payer = billing_->RecordPayment(root_, payment(kThird, kOwner, "CNY", 100)).status();
  ExpectError(payer, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ASSERT_FALSE(FieldViolationsOf(payer).empty());
  EXPECT_EQ(FieldViolationsOf(payer).front().field, "payment.payer");
  ExpectError(billing_->RecordPayment(root_, payment(kLab, kOwner, "CNY", 100)).status(),
              absl::StatusCode::kFailedPrecondition, "INVOICE_NOT_ISSUED");
}

// RecordPayment against a transfer: NOT_FOUND (TRANSFER_NOT_FOUND), then
// CURRENCY_MISMATCH, then FAILED_PRECONDITION (SETTLEMENT_SUPERSEDED,
// TRANSFER_MISMATCH), then ALREADY_EXISTS (TRANSFER_ALREADY_PAID).
TEST_F(BillingAudit4Test, RecordPaymentOnATransferFollowsTheErrorsList) {
  OweEachOther();
  auto first = ComputeJanuary();
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ComputeJanuary();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->supersedes(), first->name());
  ASSERT_EQ(second->transfers_size(), 1);
  auto transfer = [&](const v1::Settlement& s, int index, const char* currency, int64_t amount) {
    v1::RecordPaymentRequest pay;
    pay.mutable_payment()->set_payer(kLab);
    pay.mutable_payment()->set_payee(kOwner);
    *pay.mutable_payment()->mutable_amount() = MakeMoney(currency, amount);
    pay.mutable_payment()->set_settlement(s.name());
    pay.mutable_payment()->set_transfer_index(index);
    return billing_->RecordPayment(root_, pay).status();
  };
  // Superseded and no such transfer: NOT_FOUND first.
  ExpectError(transfer(*first, 5, "CNY", 7000), absl::StatusCode::kNotFound, "TRANSFER_NOT_FOUND");
  // Superseded and in another currency: INVALID_ARGUMENT first.
  ExpectError(transfer(*first, 0, "USD", 7000), absl::StatusCode::kInvalidArgument, "CURRENCY_MISMATCH");
  ExpectError(transfer(*first, 0, "CNY", 6000), absl::StatusCode::kFailedPrecondition, "SETTLEMENT_SUPERSEDED");
  ASSERT_TRUE(transfer(*second, 0, "CNY", 7000).ok());
  // Paid (CLEARED) and in another currency, or of another amount.
  ExpectError(transfer(*second, 0, "USD", 7000), absl::StatusCode::kInvalidArgument, "CURRENCY_MISMATCH");
  ExpectError(transfer(*second, 0, "CNY", 6000), absl::StatusCode::kFailedPrecondition, "TRANSFER_MISMATCH");
  ExpectError(transfer(*second, 0, "CNY", 7000), absl::StatusCode::kAlreadyExists, "TRANSFER_ALREADY_PAID");

  // PostCorrection ADJUST of its SETTLEMENT_NETTING posting with entries
  // wrong on their own: INVALID_ARGUMENT before NOT_CORRECTABLE.
  const std::string netting = GetSettlement(second->name()).netting_posting();
  ASSERT_FALSE(netting.empty());
  v1::PostCorrectionRequest fix;
  fix.set_posting(netting);
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("netting");
  v1::Entry* e = fix.add_entries();
  e->set_account("organizations/lab/accounts/nowhere");
  *e->mutable_debit() = MakeMoney("CNY", 10);
  e = fix.add_entries();
  e->set_account("organizations/lab/accounts/expense");
  *e->mutable_credit() = MakeMoney("CNY", 10);
  ExpectError(billing_->PostCorrection(root_, fix).status(), absl::StatusCode::kInvalidArgument, "INVALID_ACCOUNT");
  fix.mutable_entries(0)->set_account("organizations/lab/accounts/income");
  fix.mutable_entries(0)->set_counterparty(kOwner);
  ExpectError(billing_->PostCorrection(root_, fix).status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
}

// PostCorrection ADJUST: UNBALANCED_POSTING, INVALID_ACCOUNT and
// INVALID_AMOUNT need nothing stored and come before POSTING_NOT_FOUND.
TEST_F(BillingAudit4Test, AdjustEntriesAreCheckedBeforeThePosting) {
  v1::PostCorrectionRequest fix;
  fix.set_posting("postings/none");
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("typo");
  v1::Entry* debit = fix.add_entries();
  debit->set_account("organizations/lab/accounts/expense");
  *debit->mutable_debit() = MakeMoney("CNY", 10);
  v1::Entry* credit = fix.add_entries();
  credit->set_account("organizations/lab/accounts/payable");
  credit->set_counterparty(kOwner);
  *credit->mutable_credit() = MakeMoney("CNY", 9);
  ExpectError(billing_->PostCorrection(root_, fix).status(), absl::StatusCode::kInvalidArgument,
              "UNBALANCED_POSTING");
  *credit->mutable_credit() = MakeMoney("CNY", 10);
  credit->clear_counterparty();
  ExpectError(billing_->PostCorrection(root_, fix).status(), absl::StatusCode::kInvalidArgument, "INVALID_ACCOUNT");
  credit->set_counterparty(kOwner);
  *credit->mutable_debit() = MakeMoney("CNY", 10);
  ExpectError(billing_->PostCorrection(root_, fix).status(), absl::StatusCode::kInvalidArgument, "INVALID_AMOUNT");
  credit->clear_debit();
  ExpectError(billing_->PostCorrection(root_, fix).status(), absl::StatusCode::kNotFound, "POSTING_NOT_FOUND");
}

// TopUpSubsidyPool: "INVALID_ARGUMENT (INVALID_FIELD: ... taking the pool's
// total of top-ups beyond 10^15 ...); NOT_FOUND; FAILED_PRECONDITION
// (POOL_ENDED); ABORTED (ETAG_MISMATCH)", in that order.
TEST_F(BillingAudit4Test, TopUpChecksTheTotalThenTheValidityThenTheEtag) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("short");
  cp.mutable_subsidy_pool()->set_display_name("Short");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(500);
  *cp.mutable_subsidy_pool()->mutable_validity()->mutable_start_time() = ToProto(clock_.Now());
  *cp.mutable_subsidy_pool()->mutable_validity()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(24));
  ASSERT_TRUE(billing_->CreateSubsidyPool(root_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/short");
  *top.mutable_amount() = MakeMoney("CNY", 100);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(root_, top).ok());
  clock_.Advance(absl::Hours(48));

  top.set_etag("stale");
  ExpectError(billing_->TopUpSubsidyPool(root_, top).status(), absl::StatusCode::kFailedPrecondition, "POOL_ENDED");
  *top.mutable_amount() = MakeMoney("CNY", kMaxAmountMinor);
  const absl::Status beyond = billing_->TopUpSubsidyPool(root_, top).status();
  ExpectError(beyond, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ASSERT_FALSE(FieldViolationsOf(beyond).empty());
  EXPECT_EQ(FieldViolationsOf(beyond).front().field, "amount.amount_minor");
}

// UpdateSubsidyPool: "INVALID_ARGUMENT (INVALID_FIELD ...); NOT_FOUND
// (SUBSIDY_POOL_NOT_FOUND); ABORTED (ETAG_MISMATCH)": a value wrong on its
// own is INVALID_FIELD for a pool that does not exist or with a stale etag;
// a cap wrong only against the stored pool (another currency) is
// INVALID_FIELD before the stale etag.
TEST_F(BillingAudit4Test, UpdateSubsidyPoolChecksTheValuesFirst) {
  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/none");
  up.mutable_subsidy_pool()->set_percentage_bps(0);
  up.mutable_update_mask()->add_paths("percentage_bps");
  auto expect_field = [](const absl::Status& s, const std::string& field) {
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    ASSERT_FALSE(FieldViolationsOf(s).empty()) << s;
    EXPECT_EQ(FieldViolationsOf(s).front().field, field);
  };
  expect_field(billing_->UpdateSubsidyPool(root_, up).status(), "subsidy_pool.percentage_bps");
  up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
  up.mutable_subsidy_pool()->set_etag("stale");
  expect_field(billing_->UpdateSubsidyPool(root_, up).status(), "subsidy_pool.percentage_bps");
  // Inverted validity, on its own.
  up.mutable_update_mask()->Clear();
  up.mutable_update_mask()->add_paths("validity");
  *up.mutable_subsidy_pool()->mutable_validity()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(2));
  *up.mutable_subsidy_pool()->mutable_validity()->mutable_end_time() = ToProto(clock_.Now());
  up.mutable_subsidy_pool()->set_name("subsidyPools/none");
  expect_field(billing_->UpdateSubsidyPool(root_, up).status(), "subsidy_pool.validity");
  // A cap in USD on a CNY pool: against the stored pool, before the etag.
  up.mutable_update_mask()->Clear();
  up.mutable_update_mask()->add_paths("cap_per_organization");
  up.mutable_update_mask()->add_paths("cap_period_kind");
  *up.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("USD", 100);
  up.mutable_subsidy_pool()->set_cap_period_kind(v1::MONTHLY);
  up.mutable_subsidy_pool()->set_name("subsidyPools/none");
  ExpectError(billing_->UpdateSubsidyPool(root_, up).status(), absl::StatusCode::kNotFound,
              "SUBSIDY_POOL_NOT_FOUND");
  up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
  expect_field(billing_->UpdateSubsidyPool(root_, up).status(), "subsidy_pool.cap_per_organization.currency_code");
  *up.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("CNY", 100);
  ExpectError(billing_->UpdateSubsidyPool(root_, up).status(), absl::StatusCode::kAborted, "ETAG_MISMATCH");
}

// ================================================================ 5. as_of_time exact

// A posting created at 10:00:00.000400 counts at as_of 10:00:00.000900 and
// at 10:00:00.001, not at 10:00:00.000400 itself nor before it.
TEST_F(BillingAudit4Test, AsOfTimeCountsPostingsToTheNanosecond) {
  const absl::Time base = absl::FromCivil(absl::CivilSecond(2027, 1, 20, 10, 0, 0), absl::UTCTimeZone());
  clock_.Set(base + absl::Microseconds(400));
  Owe(kLab, kOwner, 2500);
  clock_.Set(base + absl::Seconds(1));
  auto balance_at = [&](absl::Duration after) {
    v1::GetAccountBalanceRequest r;
    r.set_name(std::string(kLab) + "/accounts/payable");
    *r.mutable_as_of_time() = ToProto(base + after);
    auto got = billing_->GetAccountBalance(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->balance().amount_minor() : -1;
  };
  EXPECT_EQ(balance_at(absl::Microseconds(900)), 2500);
  EXPECT_EQ(balance_at(absl::Milliseconds(1)), 2500);
  EXPECT_EQ(balance_at(absl::Microseconds(401)), 2500);
  EXPECT_EQ(balance_at(absl::Microseconds(400)), 0);
  EXPECT_EQ(balance_at(absl::Microseconds(300)), 0);
  EXPECT_EQ(balance_at(absl::ZeroDuration()), 0);

  v1::ListBalancesRequest lb;
  lb.set_parent(kLab);
  lb.add_account_kinds(v1::PAYABLE);
  *lb.mutable_as_of_time() = ToProto(base + absl::Microseconds(900));
  auto listed = billing_->ListBalances(root_, lb);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->balances_size(), 1);
  EXPECT_EQ(listed->balances(0).balance().amount_minor(), 2500);
}

// ================================================================ 7. cap usage per kind

// UpdateSubsidyPool: "a new cap_period_kind starts every organisation's
// usage afresh ... back to a kind used before, what was granted in its
// period counts again". January 2027 and its first quarter both start on
// 1 January (Asia/Shanghai): lab's subsidy under MONTHLY is not the
// quarter's usage. A counter of the old form ("<org>|<start ms>", 700
// here, as billing kept it before) counts for MONTHLY, the kind the pool
// had before its first change.
TEST_F(BillingAudit4Test, ANewCapPeriodKindCountsItsUsageAfresh) {
  const absl::Time january = absl::FromCivil(absl::CivilDay(2027, 1, 1), *LoadBillingTimeZone("Asia/Shanghai"));
  ASSERT_TRUE(pool_->Command({"HSET", "{billing}:cap:voucher", absl::StrCat(kLab, "|", absl::ToUnixMillis(january)),
                              "700"})
                  .ok());
  auto set_kind = [&](v1::PeriodKind kind) {
    v1::UpdateSubsidyPoolRequest up;
    up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
    *up.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("CNY", 100000000);
    up.mutable_subsidy_pool()->set_cap_period_kind(kind);
    up.mutable_update_mask()->add_paths("cap_per_organization");
    up.mutable_update_mask()->add_paths("cap_period_kind");
    auto got = billing_->UpdateSubsidyPool(root_, up);
    ASSERT_TRUE(got.ok()) << got.status();
  };
  auto used = [&]() {
    v1::GetSubsidyAllowanceRequest r;
    r.set_name(std::string("subsidyPools/voucher/allowances/lab"));
    *r.mutable_time() = ToProto(day_ + absl::Hours(12));
    auto got = billing_->GetSubsidyAllowance(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->used().amount_minor() : -1;
  };
  set_kind(v1::MONTHLY);
  EXPECT_EQ(used(), 700);
  bk::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  Use(b, ana_);
  const v1::Charge charge = ChargeOf(b.name());
  ASSERT_EQ(charge.subsidy_lines_size(), 1);
  const int64_t granted = charge.subsidy_lines(0).amount().amount_minor();
  ASSERT_GT(granted, 0);
  EXPECT_EQ(used(), 700 + granted);

  set_kind(v1::QUARTERLY);
  EXPECT_EQ(used(), 0);
  set_kind(v1::MONTHLY);
  EXPECT_EQ(used(), 700 + granted);
  set_kind(v1::YEARLY);
  EXPECT_EQ(used(), 0);
}

// ================================================================ 8. key paging

// ListBalances without as_of_time: every page is as of the first page's
// time, and a page starts after the previous page's last (account,
// counterparty): rows that appear before it meanwhile (lab's income and
// receivable from third, posted after the first page) neither repeat a row
// nor show on the later pages.
TEST_F(BillingAudit4Test, ListBalancesPagesAfterTheLastRowAtTheFirstPagesTime) {
  Owe(kLab, kOwner, 1000);
  Owe(kLab, kThird, 500);
  clock_.Advance(absl::Hours(1));
  v1::ListBalancesRequest lb;
  lb.set_parent(kLab);
  lb.set_group_by_counterparty(true);
  lb.set_skip_empty(true);
  lb.set_page_size(2);
  auto first = billing_->ListBalances(root_, lb);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->balances_size(), 2);
  EXPECT_EQ(first->balances(0).account(), std::string(kLab) + "/accounts/expense");
  EXPECT_EQ(first->balances(1).account(), std::string(kLab) + "/accounts/expense");
  ASSERT_FALSE(first->next_page_token().empty());
  const absl::Time at = clock_.Now();

  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(OweBy(top_up_, kThird, kLab, 700).ok());
  Owe(kLab, kOwner, 50);  // after the first page's time: not counted
  clock_.Advance(absl::Hours(1));
  lb.set_page_token(first->next_page_token());
  auto second = billing_->ListBalances(root_, lb);
  ASSERT_TRUE(second.ok()) << second.status();
  std::vector<std::string> rows;
  for (const auto& b : second->balances()) {
    rows.push_back(absl::StrCat(b.account(), " ", b.counterparty(), " ", b.balance().amount_minor()));
    EXPECT_EQ(FromProto(b.as_of_time()), at);
  }
  EXPECT_EQ(rows, (std::vector<std::string>{std::string(kLab) + "/accounts/payable " + kOwner + " 1000",
                                            std::string(kLab) + "/accounts/payable " + kThird + " 500"}));
  EXPECT_TRUE(second->next_page_token().empty());
  // A replica whose clock is behind the first page's (here: the clock set
  // back) answers the same page: the token's time is no as_of_time of the
  // caller's, never "in the future".
  clock_.Set(at - absl::Milliseconds(5));
  auto behind = billing_->ListBalances(root_, lb);
  ASSERT_TRUE(behind.ok()) << behind.status();
  EXPECT_EQ(behind->balances_size(), 2);
}

// ListSubsidyPools "ordered by priority then name": a page starts after
// the previous page's last pool, so a pool created before it meanwhile
// does not repeat one.
TEST_F(BillingAudit4Test, ListSubsidyPoolsPagesAfterTheLastPool) {
  auto create = [&](const std::string& id, int priority) {
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id(id);
    cp.mutable_subsidy_pool()->set_display_name(id);
    cp.mutable_subsidy_pool()->set_currency_code("CNY");
    cp.mutable_subsidy_pool()->set_percentage_bps(100);
    cp.mutable_subsidy_pool()->set_priority(priority);
    auto got = billing_->CreateSubsidyPool(root_, cp);
    ASSERT_TRUE(got.ok()) << got.status();
  };
  create("p1", 1);
  create("p2", 2);
  v1::ListSubsidyPoolsRequest r;
  r.set_page_size(1);
  std::vector<std::string> seen;
  for (int page = 0; page < 10; ++page) {
    auto got = billing_->ListSubsidyPools(root_, r);
    ASSERT_TRUE(got.ok()) << got.status();
    for (const auto& pool : got->subsidy_pools()) seen.push_back(pool.name());
    if (page == 0) create("p0", -1);  // before the first page's last pool
    if (got->next_page_token().empty()) break;
    r.set_page_token(got->next_page_token());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"subsidyPools/voucher", "subsidyPools/p1", "subsidyPools/p2"}));
}

}  // namespace
}  // namespace labshare::billing
