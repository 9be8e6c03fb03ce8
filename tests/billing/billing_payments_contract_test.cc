// Payments, settlements and pools against the comments of billing.proto
// (second contract audit): a payee refunding what it owes back on an
// invoice, OVERPAYMENT for open-balance and pool payments (also when
// payments race), TRANSFER_ALREADY_PAID for a cleared settlement, two
// computations in one millisecond, CreateSubsidyPool's retry during an
// inventory outage and its funder's name, and the pool top-up limit.
//
// The fixture (tests/billing/billing_payments_fixture.h) runs billing in
// process over the booking fixture; amounts owed are put on the ledger by
// ADJUST corrections of the pool's top-up, without any booking.
#include <thread>

#include <gmock/gmock.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "tests/billing/billing_payments_fixture.h"

namespace labshare::billing {
namespace {

// ================================================================ refunds on an invoice

// Payment.invoice: "payer is the invoice's payer, payee one of its payees;
// the reverse when a payee refunds a negative amount"; PayeeBalance
// amount_paid "signed by direction"; OVERPAYMENT "more than the open amount
// from payer to payee". The owner owes lab 30.00 back on lab's invoice: the
// owner refunds it (confirmed by lab, the payee of the refund), the invoice
// becomes PAID with the payee's amount_paid -3000.
TEST_F(BillingPaymentsContractTest, APayeeRefundsWhatItOwesBackOnTheInvoice) {
  Owe(kLab, kOwner, -3000);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_EQ(inv.payees_size(), 1);
  ASSERT_EQ(inv.payees(0).organization(), kOwner);
  ASSERT_EQ(inv.payees(0).amount_due().amount_minor(), -3000);
  ASSERT_EQ(inv.amount_outstanding().amount_minor(), -3000);

  // Nothing is open from lab to the owner; the owner refunds at most 3000;
  // someone who is not the invoice's payer is paid nothing on it.
  ExpectError(Pay(kLab, kOwner, 100, inv.name()).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  ExpectError(Pay(kOwner, kLab, 3001, inv.name()).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  ExpectError(Pay(kVoucher, kOwner, 100, inv.name()).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_EQ(PaymentCount(), 0);

  const Principal lab_admin{"member-of-lab", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  auto first = Pay(kOwner, kLab, 1000, inv.name(), &lab_admin);
  ASSERT_TRUE(first.ok()) << first.status();
  v1::GetInvoiceRequest get;
  get.set_name(inv.name());
  auto part = billing_->GetInvoice(admin_, get);
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(part->state(), v1::Invoice::ISSUED);
  EXPECT_EQ(part->payees(0).amount_paid().amount_minor(), -1000);
  EXPECT_EQ(part->payees(0).amount_outstanding().amount_minor(), -2000);
  EXPECT_EQ(part->amount_outstanding().amount_minor(), -2000);

  auto rest = Pay(kOwner, kLab, 2000, inv.name(), &lab_admin);
  ASSERT_TRUE(rest.ok()) << rest.status();
  auto paid = billing_->GetInvoice(admin_, get);
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(paid->state(), v1::Invoice::PAID);
  EXPECT_EQ(paid->payees(0).amount_paid().amount_minor(), -3000);
  EXPECT_EQ(paid->payees(0).amount_outstanding().amount_minor(), 0);
  EXPECT_EQ(paid->amount_paid().amount_minor(), -3000);
  EXPECT_EQ(paid->amount_outstanding().amount_minor(), 0);
  EXPECT_EQ(paid->payments_size(), 2);
  // The money went from the owner to lab: "payment O -> P".
  EXPECT_EQ(Balance("organizations/owner/accounts/cash", kLab), -3000);
  EXPECT_EQ(Balance("organizations/lab/accounts/cash", kOwner), 3000);
  ExpectError(Pay(kOwner, kLab, 1, inv.name()).status(), absl::StatusCode::kFailedPrecondition,
              "INVOICE_NOT_ISSUED");
}

// ================================================================ open balances and pools

// RecordPayment "OVERPAYMENT: more than the open amount from payer to
// payee" for a payment against an open balance (neither invoice nor
// settlement): what the payer's PAYABLE owes the payee. Nothing is posted.
TEST_F(BillingPaymentsContractTest, AnOpenBalancePaymentIsAtMostWhatThePayerOwes) {
  ExpectError(Pay(kLab, kOwner, 250).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  ExpectError(Pay(kOwner, kLab, 250).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), 0);
  EXPECT_EQ(PaymentCount(), 0);

  Owe(kLab, kOwner, 1000);
  ASSERT_TRUE(Pay(kLab, kOwner, 600).ok());
  ExpectError(Pay(kLab, kOwner, 401).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  ExpectError(Pay(kOwner, kLab, 1).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  auto rest = Pay(kLab, kOwner, 400);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), 0);
  EXPECT_EQ(Balance("organizations/owner/accounts/receivable", kLab), 0);
  EXPECT_EQ(PaymentCount(), 2);
}

// What a payer owes on an open balance is net of what the payee owes it
// back: a refund on an invoice clears through the payer's RECEIVABLE, so a
// later debt sits beside that credit. Lab is refunded 3000, then owes 3000
// anew: it may pay exactly 3000 (it was refused, "owes only 0").
TEST_F(BillingPaymentsContractTest, AnOpenBalanceNetsWhatWasRefunded) {
  Owe(kLab, kOwner, -3000);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_TRUE(Pay(kOwner, kLab, 3000, inv.name()).ok());
  Owe(kLab, kOwner, 3000);
  auto pay = Pay(kLab, kOwner, 3000);
  ASSERT_TRUE(pay.ok()) << pay.status();
  ExpectError(Pay(kLab, kOwner, 1).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  ExpectError(Pay(kOwner, kLab, 1).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  EXPECT_EQ(PaymentCount(), 2);
}

// "a pool paying an owner its granted subsidies": at most what its
// POOL_PAYABLE owes that owner.
TEST_F(BillingPaymentsContractTest, APoolPaysAnOwnerAtMostWhatItGranted) {
  ExpectError(Pay(kVoucher, kOwner, 1000000000000).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  // A grant of 500 to the owner (the subsidy pattern's pool side).
  Adjust({{std::string(kVoucher) + "/accounts/pool-funds", "", 500},
          {std::string(kVoucher) + "/accounts/pool-payable", kOwner, -500}});
  ExpectError(Pay(kVoucher, kOwner, 501).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  ExpectError(Pay(kVoucher, kLab, 1).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  auto paid = Pay(kVoucher, kOwner, 500);
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(Balance(std::string(kVoucher) + "/accounts/pool-payable", kOwner), 0);
  ExpectError(Pay(kVoucher, kOwner, 1).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  EXPECT_EQ(PaymentCount(), 1);
}

// The open amount holds when payments race: four payments of 300 against
// 1000 owed, at once; each is checked in the step that posts it, so three
// are recorded and the fourth is OVERPAYMENT (never the ledger overpaid).
TEST_F(BillingPaymentsContractTest, RacingPaymentsNeverPayMoreThanIsOwed) {
  Owe(kLab, kOwner, 1000);
  std::vector<absl::Status> results(4);
  std::vector<std::thread> payers;
  for (size_t i = 0; i < results.size(); ++i) {
    payers.emplace_back([&, i] { results[i] = Pay(kLab, kOwner, 300).status(); });
  }
  for (auto& t : payers) t.join();
  int recorded = 0;
  for (const auto& s : results) {
    if (s.ok()) {
      ++recorded;
    } else {
      ExpectError(s, absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
    }
  }
  EXPECT_EQ(recorded, 3);
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), -100);
  EXPECT_EQ(PaymentCount(), 3);
}

// ================================================================ settlements

// RecordPayment: "ALREADY_EXISTS (TRANSFER_ALREADY_PAID)" for a transfer of
// a CLEARED settlement (naming the payment that paid it); a SUPERSEDED
// settlement's transfer stays SETTLEMENT_SUPERSEDED.
TEST_F(BillingPaymentsContractTest, PayingATransferOfAClearedSettlementIsTransferAlreadyPaid) {
  Owe(kLab, kOwner, 10000);
  IssueJanuary(kLab);
  auto first = ComputeJanuary();
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Set(clock_.Now() + absl::Seconds(1));
  auto second = ComputeJanuary();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->transfers_size(), 1);
  ExpectError(PayTransfer(*first, 0).status(), absl::StatusCode::kFailedPrecondition, "SETTLEMENT_SUPERSEDED");
  auto paid = PayTransfer(*second, 0);
  ASSERT_TRUE(paid.ok()) << paid.status();
  v1::GetSettlementRequest get;
  get.set_name(second->name());
  auto cleared = billing_->GetSettlement(admin_, get);
  ASSERT_TRUE(cleared.ok()) << cleared.status();
  ASSERT_EQ(cleared->state(), v1::Settlement::CLEARED);
  auto again = PayTransfer(*second, 0);
  ExpectError(again.status(), absl::StatusCode::kAlreadyExists, "TRANSFER_ALREADY_PAID");
  EXPECT_TRUE(absl::StrContains(again.status().message(), paid->name())) << again.status();
  EXPECT_EQ(PaymentCount(), 1);
}

// ComputeSettlement recomputed in the same millisecond stores a new
// settlement (it answered ABORTED CONCURRENT_MODIFICATION: the name was the
// period, currency and millisecond), superseding the first; ListSettlements
// keeps them in compute order.
TEST_F(BillingPaymentsContractTest, ARecomputationInTheSameMillisecondIsANewSettlement) {
  Owe(kLab, kOwner, 10000);
  IssueJanuary(kLab);
  auto first = ComputeJanuary();
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ComputeJanuary();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(second->name(), first->name());
  EXPECT_EQ(second->supersedes(), first->name());
  auto third = ComputeJanuary();
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->supersedes(), second->name());
  v1::ListSettlementsRequest list;
  list.set_period("2027-01");
  auto listed = billing_->ListSettlements(admin_, list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->settlements_size(), 3);
  EXPECT_EQ(listed->settlements(0).name(), first->name());
  EXPECT_EQ(listed->settlements(0).state(), v1::Settlement::SUPERSEDED);
  EXPECT_EQ(listed->settlements(1).name(), second->name());
  EXPECT_EQ(listed->settlements(2).name(), third->name());
  EXPECT_EQ(listed->settlements(2).state(), v1::Settlement::COMPUTED);
}

// ComputeSettlement "Nets the open amounts of all ISSUED invoices of an
// ended period and currency", however many invoices were ever issued: it
// read the first 100,000 members of the index of every invoice (series
// then number) and nothing after, so once that many were issued the later
// series (another currency, a later year) were never seen. Here with an
// index page of one member: the two CNY invoices of January across pages,
// and the USD one, whose series sorts after every CNY invoice (it was
// NOTHING_TO_SETTLE, and the CNY settlement netted the first invoice only).
class SettlementIndexTest : public BillingPaymentsContractTest {
 protected:
  void SetUp() override {
    BillingPaymentsContractTest::SetUp();
    v1::CreateSubsidyPoolRequest create;
    create.set_subsidy_pool_id("dollar");
    create.mutable_subsidy_pool()->set_display_name("Dollar fund");
    create.mutable_subsidy_pool()->set_currency_code("USD");
    create.mutable_subsidy_pool()->set_percentage_bps(1000);
    ASSERT_TRUE(billing_->CreateSubsidyPool(admin_, create).ok());
    v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/dollar");
    *top.mutable_amount() = MakeMoney("USD", 1000000);
    ASSERT_TRUE(billing_->TopUpSubsidyPool(admin_, top).ok());
    v1::ListPostingsRequest list;
    list.set_kind(v1::POOL_TOP_UP);
    list.set_subsidy_pool("subsidyPools/dollar");
    auto postings = billing_->ListPostings(admin_, list);
    ASSERT_TRUE(postings.ok() && postings->postings_size() == 1);
    dollar_top_up_ = postings->postings(0).name();
  }

  // `payer` owes `payee` `amount` USD (Owe's pattern, correcting the USD
  // pool's top-up).
  void OweDollars(const std::string& payer, const std::string& payee, int64_t amount) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(dollar_top_up_);
    fix.set_mode(v1::PostCorrectionRequest::ADJUST);
    fix.set_reason("settled outside the booking system");
    auto entry = [&](const std::string& account, const std::string& counterparty, bool debit) {
      v1::Entry* e = fix.add_entries();
      e->set_account(account);
      e->set_counterparty(counterparty);
      *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("USD", amount);
    };
    entry(payer + "/accounts/expense", payee, true);
    entry(payer + "/accounts/payable", payee, false);
    entry(payee + "/accounts/receivable", payer, true);
    entry(payee + "/accounts/income", payer, false);
    auto posted = billing_->PostCorrection(admin_, fix);
    ASSERT_TRUE(posted.ok()) << posted.status();
  }

  v1::Invoice IssueJanuaryIn(const std::string& payer, const std::string& currency) {
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
    v1::IssueInvoiceRequest r;
    r.set_payer_organization(payer);
    r.set_period("2027-01");
    r.set_currency_code(currency);
    auto inv = billing_->IssueInvoice(admin_, r);
    EXPECT_TRUE(inv.ok()) << inv.status();
    return inv.ok() ? *inv : v1::Invoice();
  }

  absl::StatusOr<v1::Settlement> ComputeJanuaryIn(const std::string& currency) {
    v1::ComputeSettlementRequest r;
    r.set_period("2027-01");
    r.set_currency_code(currency);
    return billing_->ComputeSettlement(admin_, r);
  }

  // lab owes the owner 100.00 and the owner lab 40.00 in CNY, lab the
  // owner 25.00 in USD: three January invoices, issued.
  void IssueThree() {
    Owe(kLab, kOwner, 10000);
    Owe(kOwner, kLab, 4000);
    ASSERT_NO_FATAL_FAILURE(OweDollars(kLab, kOwner, 2500));
    lab_cny_ = IssueJanuaryIn(kLab, "CNY").name();
    owner_cny_ = IssueJanuaryIn(kOwner, "CNY").name();
    lab_usd_ = IssueJanuaryIn(kLab, "USD").name();
  }

  // Both January settlements net every invoice of their currency.
  void ExpectBothSettled() {
    auto cny = ComputeJanuaryIn("CNY");
    ASSERT_TRUE(cny.ok()) << cny.status();
    EXPECT_THAT(std::vector<std::string>(cny->invoices().begin(), cny->invoices().end()),
                ::testing::ElementsAre(lab_cny_, owner_cny_));
    ASSERT_EQ(cny->transfers_size(), 1);
    EXPECT_EQ(cny->transfers(0).from_organization(), kLab);
    EXPECT_EQ(cny->transfers(0).to_organization(), kOwner);
    EXPECT_EQ(cny->transfers(0).amount().amount_minor(), 6000);
    EXPECT_EQ(cny->gross_total().amount_minor(), 14000);
    auto usd = ComputeJanuaryIn("USD");
    ASSERT_TRUE(usd.ok()) << usd.status();
    EXPECT_THAT(std::vector<std::string>(usd->invoices().begin(), usd->invoices().end()),
                ::testing::ElementsAre(lab_usd_));
    ASSERT_EQ(usd->transfers_size(), 1);
    EXPECT_EQ(usd->transfers(0).amount().amount_minor(), 2500);
    EXPECT_EQ(usd->transfers(0).amount().currency_code(), "USD");
  }

  int64_t Count(const std::vector<std::string>& command) {
    auto v = pool_->Command(command);
    EXPECT_TRUE(v.ok()) << v.status();
    if (!v.ok()) return -1;
    if (v->type == RedisValue::Type::kInteger) return v->integer;
    int64_t n = 0;
    return v->is_nil() ? 0 : (absl::SimpleAtoi(v->str, &n) ? n : -1);
  }

  std::string dollar_top_up_, lab_cny_, owner_cny_, lab_usd_;
};

TEST_F(SettlementIndexTest, EveryInvoiceOfThePeriodAndCurrencyIsNettedWhateverTheIndexSize) {
  billing_->set_index_page(1);
  ASSERT_NO_FATAL_FAILURE(IssueThree());
  ASSERT_NO_FATAL_FAILURE(ExpectBothSettled());
  // Kept per period and currency as each invoice is issued, and counted.
  EXPECT_EQ(Count({"ZCARD", keys::PeriodInvoices("2027-01", "CNY")}), 2);
  EXPECT_EQ(Count({"ZCARD", keys::PeriodInvoices("2027-01", "USD")}), 1);
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "n"}), 3);
}

// Invoices issued before the per-period sets existed (or by a replica that
// wrote none) are found: ComputeSettlement adds them to their sets, once,
// before it reads (here across pages of two members of the index of every
// invoice), and the count says when nothing is missing any more.
TEST_F(SettlementIndexTest, InvoicesIssuedBeforeThePeriodSetsAreAddedOnce) {
  billing_->set_index_page(2);
  ASSERT_NO_FATAL_FAILURE(IssueThree());
  // As a store written before the sets: no set, no count.
  ASSERT_TRUE(pool_->Command({"DEL", keys::PeriodInvoices("2027-01", "CNY"), keys::PeriodInvoices("2027-01", "USD"),
                              keys::PeriodInvoiceCount()})
                  .ok());
  ASSERT_NO_FATAL_FAILURE(ExpectBothSettled());
  EXPECT_EQ(Count({"ZCARD", keys::PeriodInvoices("2027-01", "CNY")}), 2);
  EXPECT_EQ(Count({"ZCARD", keys::PeriodInvoices("2027-01", "USD")}), 1);
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "n"}), 3);
  auto again = billing_->IndexPeriodInvoices();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, 0);
  // One issued by a replica that did not write its set: added (and
  // counted) by the next computation.
  auto members = pool_->Command({"ZRANGE", keys::PeriodInvoices("2027-01", "CNY"), "0", "0"});
  ASSERT_TRUE(members.ok() && members->elements.size() == 1);
  ASSERT_TRUE(pool_->Command({"ZREM", keys::PeriodInvoices("2027-01", "CNY"), members->elements[0].str}).ok());
  ASSERT_TRUE(pool_->Command({"HINCRBY", keys::PeriodInvoiceCount(), "n", "-1"}).ok());
  ASSERT_NO_FATAL_FAILURE(ExpectBothSettled());
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "n"}), 3);
}

// Damaged data (an index member whose document is unreadable, one with no
// document at all) must not fail every settlement nor make every call walk
// the whole invoice index again: a retry is answered from its replay before
// any walk, the walk skips (and logs) what it cannot read, and counts it so
// that the next call finds the sets complete. Before: every
// ComputeSettlement, replays included, was INTERNAL CORRUPT_DOCUMENT.
TEST_F(SettlementIndexTest, UnreadableInvoicesNeitherFailSettlementsNorForceAWalkOnEveryCall) {
  billing_->set_index_page(2);
  ASSERT_NO_FATAL_FAILURE(IssueThree());
  v1::ComputeSettlementRequest r;
  r.set_period("2027-01");
  r.set_currency_code("CNY");
  r.set_request_id("settle-cny-once");
  auto first = billing_->ComputeSettlement(admin_, r);
  ASSERT_TRUE(first.ok()) << first.status();
  // Two members no walk can place: one unreadable, one without a document.
  ASSERT_TRUE(pool_->Command({"ZADD", keys::Index("invoice"), "0", "LS-CNY-2027|0000000077"}).ok());
  ASSERT_TRUE(pool_->Command({"HSET", keys::Doc("invoice", "ls-cny-2027-000077"), "d", "\xff\xff\xff", "v", "1"}).ok());
  ASSERT_TRUE(pool_->Command({"ZADD", keys::Index("invoice"), "0", "LS-CNY-2027|0000000078"}).ok());
  // The retry: its first answer, and no walk yet.
  auto again = billing_->ComputeSettlement(admin_, r);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->name(), first->name());
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "unreadable"}), 0);
  // A new computation walks once, skips both, and still nets the three.
  ASSERT_NO_FATAL_FAILURE(ExpectBothSettled());
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "n"}), 3);
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "unreadable"}), 2);
  // Complete now: nothing more to walk (a walk would rewrite the field).
  ASSERT_TRUE(pool_->Command({"HSET", keys::PeriodInvoiceCount(), "unreadable", "5"}).ok());
  auto walked = billing_->IndexPeriodInvoices();
  ASSERT_TRUE(walked.ok()) << walked.status();
  EXPECT_EQ(*walked, 0);
  EXPECT_EQ(Count({"HGET", keys::PeriodInvoiceCount(), "unreadable"}), 5);
}

// ComputeSettlement: "AMOUNT_OUT_OF_RANGE: ... or a transfer would be above
// 10^15 minor units, more than one payment may pay (nothing is stored)".
// Lab owes the owner 10^15 + 1 on its January invoice: the one transfer
// could never be paid (RecordPayment takes at most 10^15) and the
// settlement stayed COMPUTED for ever. Once the owner's invoice, owing lab
// 1, is issued too the transfer is exactly 10^15, which a payment may pay.
TEST_F(BillingPaymentsContractTest, ATransferAboveTheMoneyLimitIsAmountOutOfRange) {
  Owe(kLab, kOwner, kMaxAmountMinor);
  Owe(kLab, kOwner, 1);
  Owe(kOwner, kLab, 1);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_EQ(inv.amount_outstanding().amount_minor(), kMaxAmountMinor + 1);
  auto over = ComputeJanuary();
  ExpectError(over.status(), absl::StatusCode::kInvalidArgument, "AMOUNT_OUT_OF_RANGE");
  const auto violations = FieldViolationsOf(over.status());
  ASSERT_EQ(violations.size(), 1u) << over.status();
  EXPECT_EQ(violations[0].field, "transfers[0].amount");
  auto listed = billing_->ListSettlements(admin_, v1::ListSettlementsRequest());
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->settlements_size(), 0);
  v1::GetInvoiceRequest get;
  get.set_name(inv.name());
  auto stored = billing_->GetInvoice(admin_, get);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->settlement(), "");
  EXPECT_EQ(stored->state(), v1::Invoice::ISSUED);

  IssueJanuary(kOwner);
  auto settled = ComputeJanuary();
  ASSERT_TRUE(settled.ok()) << settled.status();
  ASSERT_EQ(settled->transfers_size(), 1);
  EXPECT_EQ(settled->transfers(0).amount().amount_minor(), kMaxAmountMinor);
  auto paid = PayTransfer(*settled, 0);
  ASSERT_TRUE(paid.ok()) << paid.status();
}

// ================================================================ corrections

// PostCorrection: "INVALID_ACCOUNT: ... a PAYABLE or POOL_PAYABLE entry
// whose counterparty is a subsidy pool". Lab's PAYABLE owed to the pool
// was accepted: from then on lab's draft named the pool as a payee, every
// IssueInvoice for lab failed (inventory's INVALID_NAME for the pool) and
// nothing could clear the line. The pool relations of the standard
// postings (an owner's RECEIVABLE from a pool, the pool's POOL_PAYABLE to
// an owner) stay allowed.
TEST_F(BillingPaymentsContractTest, AnAdjustOwingAPoolIsInvalidAccount) {
  const std::string pool_cash = std::string(kVoucher) + "/accounts/pool-cash";
  const std::string pool_payable = std::string(kVoucher) + "/accounts/pool-payable";
  const int64_t cash_before = Balance(pool_cash, "");
  auto refused = [&](const std::vector<std::tuple<std::string, std::string, int64_t>>& entries,
                     const std::string& field) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(top_up_);
    fix.set_mode(v1::PostCorrectionRequest::ADJUST);
    fix.set_reason("voucher paid through lab");
    for (const auto& [account, counterparty, amount] : entries) {
      v1::Entry* e = fix.add_entries();
      e->set_account(account);
      e->set_counterparty(counterparty);
      *(amount > 0 ? e->mutable_debit() : e->mutable_credit()) = Cny(std::abs(amount));
    }
    auto posted = billing_->PostCorrection(admin_, fix);
    ExpectError(posted.status(), absl::StatusCode::kInvalidArgument, "INVALID_ACCOUNT");
    const auto violations = FieldViolationsOf(posted.status());
    ASSERT_EQ(violations.size(), 1u) << posted.status();
    EXPECT_EQ(violations[0].field, field);
  };
  refused({{"organizations/lab/accounts/payable", kVoucher, -500}, {pool_cash, "", 500}}, "entries[0].counterparty");
  refused({{pool_cash, "", 500}, {pool_payable, "subsidyPools/other", -500}}, "entries[1].counterparty");
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kVoucher), 0);
  EXPECT_EQ(Balance(pool_cash, ""), cash_before);
  // The standard pool relations: the owner is owed by the pool.
  Adjust({{"organizations/owner/accounts/receivable", kVoucher, 500}, {pool_payable, kOwner, -500}});
  EXPECT_EQ(Balance("organizations/owner/accounts/receivable", kVoucher), 500);
  // Lab's invoice has the owner as its one payee, and is issued.
  Owe(kLab, kOwner, 1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_EQ(inv.payees_size(), 1);
  EXPECT_EQ(inv.payees(0).organization(), kOwner);
  EXPECT_EQ(inv.amount_due().amount_minor(), 1000);
}

// ================================================================ pools

// CreateSubsidyPool retried with its request_id answers the first pool
// before inventory is asked about the funder (it answered UNAVAILABLE
// INVENTORY_UNAVAILABLE during an outage); a new request still asks.
TEST_F(BillingPaymentsContractTest, CreateSubsidyPoolRetryIsAnsweredWithoutInventory) {
  v1::CreateSubsidyPoolRequest create;
  create.set_request_id("create-funded");
  create.mutable_subsidy_pool()->set_display_name("Funded");
  create.mutable_subsidy_pool()->set_currency_code("CNY");
  create.mutable_subsidy_pool()->set_percentage_bps(500);
  create.mutable_subsidy_pool()->set_funder_organization(kLab);
  auto first = billing_->CreateSubsidyPool(admin_, create);
  ASSERT_TRUE(first.ok()) << first.status();
  auto cut_off = CutOff();
  auto retry = cut_off->CreateSubsidyPool(admin_, create);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->name(), first->name());
  EXPECT_EQ(retry->create_time().seconds(), first->create_time().seconds());
  create.set_request_id("create-other");
  ExpectError(cut_off->CreateSubsidyPool(admin_, create).status(), absl::StatusCode::kUnavailable,
              "INVENTORY_UNAVAILABLE");
}

// CreateSubsidyPool: a funder_organization that is not
// "organizations/{organization}" is INVALID_FIELD naming it (inventory's
// INVALID_NAME came through, which the method does not list), whether or
// not inventory answers.
TEST_F(BillingPaymentsContractTest, AMalformedFunderIsAnInvalidField) {
  v1::CreateSubsidyPoolRequest create;
  create.mutable_subsidy_pool()->set_display_name("Funded");
  create.mutable_subsidy_pool()->set_currency_code("CNY");
  create.mutable_subsidy_pool()->set_percentage_bps(500);
  create.mutable_subsidy_pool()->set_funder_organization("third");
  auto cut_off = CutOff();
  for (BillingManager* billing : {billing_.get(), cut_off.get()}) {
    auto created = billing->CreateSubsidyPool(admin_, create);
    ExpectError(created.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    const auto violations = FieldViolationsOf(created.status());
    ASSERT_EQ(violations.size(), 1u) << created.status();
    EXPECT_EQ(violations[0].field, "subsidy_pool.funder_organization");
  }
}

// A pool or document a mutation names is "{collection}/{id}" exactly
// (INVALID_FIELD naming the field, as these methods list it): the last
// segment alone found subsidyPools/voucher under "subsidyPools/x/voucher"
// and topped it up.
TEST_F(BillingPaymentsContractTest, NamesInMutationsAreCheckedWhole) {
  auto field_of = [](const absl::Status& s) {
    const auto violations = FieldViolationsOf(s);
    return violations.size() == 1 ? violations[0].field : "(" + std::to_string(violations.size()) + " violations)";
  };
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/x/voucher");
  *top.mutable_amount() = Cny(100);
  auto topped = billing_->TopUpSubsidyPool(admin_, top);
  ExpectError(topped.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_EQ(field_of(topped.status()), "name");
  v1::UpdateSubsidyPoolRequest update;
  update.mutable_subsidy_pool()->set_name("voucher");
  update.mutable_subsidy_pool()->set_display_name("Renamed");
  update.mutable_update_mask()->add_paths("display_name");
  auto updated = billing_->UpdateSubsidyPool(admin_, update);
  ExpectError(updated.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_EQ(field_of(updated.status()), "subsidy_pool.name");
  Owe(kLab, kOwner, 1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  auto paid = Pay(kLab, kOwner, 100, "invoices/x/" + inv.name().substr(inv.name().rfind('/') + 1));
  ExpectError(paid.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_EQ(field_of(paid.status()), "payment.invoice");
  v1::Payment to_settlement;
  to_settlement.set_payer(kLab);
  to_settlement.set_payee(kOwner);
  *to_settlement.mutable_amount() = Cny(100);
  to_settlement.set_settlement("settlements/");
  auto transferred = Record(to_settlement);
  ExpectError(transferred.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_EQ(field_of(transferred.status()), "payment.settlement");
  v1::GetSubsidyPoolRequest get;
  get.set_name(kVoucher);
  auto pool = billing_->GetSubsidyPool(admin_, get);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->balance().amount_minor(), 1000000);
  EXPECT_EQ(pool->display_name(), "Voucher");
  EXPECT_EQ(PaymentCount(), 0);
}

// "a pool's total of top-ups" is at most 10^15 minor units (the money
// limit), and the refusal says so.
TEST_F(BillingPaymentsContractTest, APoolsTopUpsTotalAtMostTheMoneyLimit) {
  v1::TopUpSubsidyPoolRequest top;
  top.set_name(kVoucher);
  *top.mutable_amount() = Cny(kMaxAmountMinor - 1000000);
  auto full = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->topped_up_total().amount_minor(), kMaxAmountMinor);
  *top.mutable_amount() = Cny(1);
  auto over = billing_->TopUpSubsidyPool(admin_, top);
  ExpectError(over.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(over.status().message(), "at most 10^15")) << over.status();
}

}  // namespace
}  // namespace labshare::billing
