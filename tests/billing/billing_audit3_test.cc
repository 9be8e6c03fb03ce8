// Billing against the third contract audit of 2026-12-06 (billing.proto and
// billing_events.proto as the contract):
// 1. InvoiceLine: a DEPOSIT (or DAMAGE) charge has no service interval, so
//    its line has none and comes after the lines that have one;
// 2. InvoicePaid carries "the invoice after the change" (its new etag and
//    update_time), SettlementCleared "the settlement after the change";
// 3. RecordPayment: a transfer paid in another currency is INVALID_ARGUMENT
//    CURRENCY_MISMATCH (as for an invoice or a pool), not TRANSFER_MISMATCH;
// 4. a REVERSED charge stays REVERSED when an ADJUST follows, and that
//    ADJUST's income delta is its own entries, not the charge once more;
//    its reversal (and its subsidies' reversals made with it) cannot be
//    undone: NOT_CORRECTABLE;
// 5. a PAYMENT posting links the settlement whose transfer it pays and the
//    pool that pays it;
// 6. a posting never stands reversed twice: reversing the undoing of a
//    subsidy's reversal after the subsidy was reversed again is
//    ALREADY_REVERSED; and a subsidy reversed on its own is not given back
//    once its charge was reversed in full (NOT_CORRECTABLE);
// 7. a stored invoice's etag changes with its state and payments, not when
//    a settlement comes to net it or goes: the etag read at issue still
//    voids an invoice a COMPUTED settlement holds (superseding it);
// 8. SETTLEMENT_NETTING nets an invoice's credit (a payee owing the payer
//    back) on the accounts where it sits: every pairwise sub-ledger closes;
// 9. SettlementComputed of a settlement cleared as it is computed carries
//    it as stored (CLEARED, its netting posting and clear_time);
// 10. GetInvoiceDocument checks the format before the invoice's existence.
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

class BillingAudit3Test : public testing::BillingLedgerTest {
 protected:
  // ana's session on tem, 09:00-10:00 of day_, used and billed: its charge.
  v1::Charge UsedSession() {
    bk::Booking b;
    EXPECT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
    Use(b, ana_);
    return ChargeOf(b.name());
  }
};

// ================================================================ 1. deposit lines last

// InvoiceLine.line_number: "by service interval (start, then end) ...;
// lines without a service interval ... last". The DEPOSIT charge taken at a
// lease's handover has no service interval (Charge.service_interval is the
// session, lease days or service run): its line has none either and follows
// the session's line, although the deposit was posted later in the month
// and its empty interval would sort first.
TEST_F(BillingAudit3Test, ADepositLineHasNoServiceIntervalAndComesAfterTheSessions) {
  const bk::Lease lease = ApprovedLease(19);
  bk::Lease out;
  const v1::Charge session = UsedSession();
  ASSERT_TRUE(session.has_service_interval());
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip new");
  clock_.Set(day_ + absl::Hours(24));
  grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Bill();

  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::PreviewInvoiceRequest pr;
  pr.set_payer_organization(kLab);
  pr.set_period("2027-01");
  auto inv = billing_->PreviewInvoice(root_, pr);
  ASSERT_TRUE(inv.ok()) << inv.status();
  int deposit_line = 0, session_line = 0;
  for (const auto& line : inv->lines()) {
    if (line.charge() == session.name() && line.kind() == v1::InvoiceLine::CHARGE) {
      session_line = line.line_number();
      EXPECT_TRUE(line.has_service_interval());
    }
    if (line.fee_kind() == v1::DEPOSIT) {
      deposit_line = line.line_number();
      EXPECT_FALSE(line.has_service_interval()) << line.ShortDebugString();
      EXPECT_EQ(line.amount().amount_minor(), 100000);
    }
  }
  ASSERT_GT(session_line, 0);
  ASSERT_GT(deposit_line, 0);
  EXPECT_LT(session_line, deposit_line);
  // Every line with an interval comes before every line without one.
  bool seen_without = false;
  for (const auto& line : inv->lines()) {
    if (!line.has_service_interval()) seen_without = true;
    EXPECT_FALSE(seen_without && line.has_service_interval()) << line.ShortDebugString();
  }
}

// ================================================================ 2. events carry the state after

// billing_events.proto InvoicePaid.invoice: "The invoice after the change":
// the payment that leaves nothing open announces the invoice with the etag
// and update_time GetInvoice shows afterwards.
TEST_F(BillingAudit3Test, InvoicePaidCarriesTheInvoiceAfterThePayment) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice issued = Issue(kLab);
  clock_.Advance(absl::Hours(5));
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kLab);
  pay.mutable_payment()->set_payee(kOwner);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 10000);
  pay.mutable_payment()->set_invoice(issued.name());
  auto paid = billing_->RecordPayment(root_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  const v1::Invoice now = GetInvoice(issued.name());
  ASSERT_EQ(now.state(), v1::Invoice::PAID);
  ASSERT_NE(now.etag(), issued.etag());
  int announced = 0;
  for (const auto& e : Published()) {
    if (!e.has_invoice_paid()) continue;
    ++announced;
    const v1::Invoice& inv = e.invoice_paid().invoice();
    EXPECT_EQ(inv.etag(), now.etag());
    EXPECT_EQ(FromProto(inv.update_time()), clock_.Now());
    EXPECT_EQ(FromProto(inv.paid_time()), clock_.Now());
    EXPECT_EQ(inv.state(), v1::Invoice::PAID);
    EXPECT_EQ(e.invoice_paid().paid_by(), v1::InvoicePaid::PAYMENTS);
  }
  EXPECT_EQ(announced, 1);
}

// SettlementCleared.settlement: "The settlement after the change
// (CLEARED)": its update_time is the time of the payment that cleared it,
// as GetSettlement shows. The transfer's PAYMENT posting names the
// settlement (Posting: "The links that apply"); a payment in another
// currency than the transfer's is CURRENCY_MISMATCH, as for an invoice.
TEST_F(BillingAudit3Test, ATransfersPaymentClearsTheSettlementAsStoredAndLinksIt) {
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 3000);
  Issue(kLab);
  Issue(kOwner);
  v1::ComputeSettlementRequest cs;
  cs.set_period("2027-01");
  auto settlement = billing_->ComputeSettlement(root_, cs);
  ASSERT_TRUE(settlement.ok()) << settlement.status();
  ASSERT_EQ(settlement->transfers_size(), 1);
  const v1::SettlementTransfer& t = settlement->transfers(0);
  EXPECT_EQ(t.from_organization(), kLab);
  EXPECT_EQ(t.to_organization(), kOwner);
  EXPECT_EQ(t.amount().amount_minor(), 7000);

  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kLab);
  pay.mutable_payment()->set_payee(kOwner);
  pay.mutable_payment()->set_settlement(settlement->name());
  pay.mutable_payment()->set_transfer_index(0);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("USD", 7000);
  const absl::Status wrong = billing_->RecordPayment(root_, pay).status();
  ExpectError(wrong, absl::StatusCode::kInvalidArgument, "CURRENCY_MISMATCH");
  auto v = FieldViolationsOf(wrong);
  ASSERT_FALSE(v.empty());
  EXPECT_EQ(v.front().field, "payment.amount.currency_code");

  clock_.Advance(absl::Hours(7));
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 7000);
  auto paid = billing_->RecordPayment(root_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  v1::GetSettlementRequest gs;
  gs.set_name(settlement->name());
  auto stored = billing_->GetSettlement(root_, gs);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->state(), v1::Settlement::CLEARED);
  EXPECT_EQ(FromProto(stored->update_time()), clock_.Now());
  int cleared = 0;
  for (const auto& e : Published()) {
    if (!e.has_settlement_cleared()) continue;
    ++cleared;
    EXPECT_EQ(FromProto(e.settlement_cleared().settlement().update_time()), clock_.Now());
    EXPECT_EQ(e.settlement_cleared().settlement().state(), v1::Settlement::CLEARED);
    EXPECT_EQ(e.settlement_cleared().settlement().transfers(0).payment(), paid->name());
  }
  EXPECT_EQ(cleared, 1);
  const v1::Posting posting = GetPosting(paid->posting());
  EXPECT_EQ(posting.kind(), v1::PAYMENT);
  EXPECT_EQ(posting.payment(), paid->name());
  EXPECT_EQ(posting.settlement(), settlement->name());
  EXPECT_EQ(posting.subsidy_pool(), "");
}

// ================================================================ 4. REVERSED stays

// Charge.State REVERSED: "Reversed in full"; an ADJUST of its CHARGE
// posting afterwards leaves it REVERSED (another REVERSE is still
// ALREADY_REVERSED), and the ADJUST's CorrectionPosted counts only its own
// entries on the owner's income (not the whole charge negated once more).
TEST_F(BillingAudit3Test, AReversedChargeStaysReversedAfterAnAdjust) {
  const v1::Charge charge = UsedSession();
  ASSERT_EQ(charge.state(), v1::Charge::POSTED);
  v1::PostCorrectionRequest rev;
  rev.set_posting(charge.posting());
  rev.set_mode(v1::PostCorrectionRequest::REVERSE);
  rev.set_reason("booked by mistake");
  auto reversed = billing_->PostCorrection(root_, rev);
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  ASSERT_EQ(reversed->charge().state(), v1::Charge::REVERSED);
  ASSERT_EQ(reversed->related_corrections_size(), 1);  // the voucher's subsidy, with its charge

  // The charge's reversal is final: undoing it, or the subsidy's reversal
  // made with it, is NOT_CORRECTABLE and writes nothing (it would bill the
  // charge again while it reads REVERSED, or pay a subsidy towards it).
  const size_t events_before = Published().size();
  for (const std::string& undo : {reversed->correction().name(), reversed->related_corrections(0).name()}) {
    v1::PostCorrectionRequest back;
    back.set_posting(undo);
    back.set_mode(v1::PostCorrectionRequest::REVERSE);
    back.set_reason("reversed by mistake");
    ExpectError(billing_->PostCorrection(root_, back).status(), absl::StatusCode::kFailedPrecondition,
                "NOT_CORRECTABLE");
  }
  EXPECT_EQ(Published().size(), events_before);
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), 1000000);

  auto adjusted = OweBy(charge.posting(), kLab, kOwner, 1000);
  ASSERT_TRUE(adjusted.ok()) << adjusted.status();
  EXPECT_EQ(adjusted->charge().state(), v1::Charge::REVERSED);
  EXPECT_EQ(adjusted->charge().corrections_size(), reversed->charge().corrections_size() + 1);
  v1::GetChargeRequest gc;
  gc.set_name(charge.name());
  auto stored = billing_->GetCharge(root_, gc);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state(), v1::Charge::REVERSED);
  rev.set_reason("again");
  ExpectError(billing_->PostCorrection(root_, rev).status(), absl::StatusCode::kFailedPrecondition,
              "ALREADY_REVERSED");

  // The reversal took the charge's income back once; the ADJUST adds its
  // own 10.00 of the owner's income, nothing else.
  int64_t reversal_income = 0, adjust_income = 0;
  for (const auto& e : Published()) {
    if (!e.has_correction_posted()) continue;
    int64_t sum = 0;
    for (const auto& f : e.correction_posted().income_deltas()) sum += f.service_income().amount_minor();
    if (e.correction_posted().correction().name() == reversed->correction().name()) reversal_income = sum;
    if (e.correction_posted().correction().name() == adjusted->correction().name()) adjust_income = sum;
  }
  EXPECT_EQ(reversal_income, -charge.service_income().amount_minor());
  EXPECT_EQ(adjust_income, 1000);
}

// ================================================================ 6. reversed once, for good

// PostCorrection: "reversing it again is ALREADY_REVERSED, and so is
// reversing a reversal's undoing while the posting stands reversed by
// another reversal since". The voucher's subsidy reversed (R1), R1 undone
// (U1: the subsidy back), the subsidy reversed again (R2): reversing U1
// would make R1 stand beside R2, the pool refunded twice.
TEST_F(BillingAudit3Test, ASubsidyNeverStandsReversedTwice) {
  const v1::Charge charge = UsedSession();
  ASSERT_EQ(charge.subsidy_lines_size(), 1);
  const std::string subsidy = charge.subsidy_lines(0).posting();
  const int64_t granted = charge.subsidy_lines(0).amount().amount_minor();
  ASSERT_GT(granted, 0);
  const int64_t full = Pool("subsidyPools/voucher").balance().amount_minor();
  auto r1 = Reverse(subsidy, "not eligible");
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full + granted);
  auto u1 = Reverse(r1->correction().name(), "eligible after all");
  ASSERT_TRUE(u1.ok()) << u1.status();
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full);
  auto r2 = Reverse(subsidy, "not eligible, again");
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full + granted);
  const size_t events = Published().size();
  ExpectError(Reverse(u1->correction().name(), "undo the undo").status(), absl::StatusCode::kFailedPrecondition,
              "ALREADY_REVERSED");
  EXPECT_EQ(Published().size(), events);
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full + granted);
  // Undoing R2 first gives the subsidy back; then U1's undoing may stand.
  ASSERT_TRUE(Reverse(r2->correction().name(), "eligible").ok());
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full);
  ASSERT_TRUE(Reverse(u1->correction().name(), "undo the undo").ok());
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full + granted);
}

// PostCorrection: "a charge reversed in full is final: REVERSE ... of a
// reversal that would give back one of its SUBSIDY postings reversed on its
// own before, is refused". The subsidy reversed, then the charge: the
// charge's reversal leaves the subsidy (reversed already) alone; giving the
// subsidy back would make the pool pay towards a REVERSED charge.
TEST_F(BillingAudit3Test, ASubsidyReversedBeforeItsChargeIsNotGivenBack) {
  const v1::Charge charge = UsedSession();
  ASSERT_EQ(charge.subsidy_lines_size(), 1);
  const int64_t full = Pool("subsidyPools/voucher").balance().amount_minor();
  const int64_t granted = charge.subsidy_lines(0).amount().amount_minor();
  auto r1 = Reverse(charge.subsidy_lines(0).posting(), "not eligible");
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto whole = Reverse(charge.posting(), "booked by mistake");
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->charge().state(), v1::Charge::REVERSED);
  EXPECT_EQ(whole->related_corrections_size(), 0);  // the subsidy stood reversed
  const size_t events = Published().size();
  ExpectError(Reverse(r1->correction().name(), "eligible after all").status(),
              absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE");
  EXPECT_EQ(Published().size(), events);
  EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), full + granted);
}

// ================================================================ 5. a pool's payment links it

// Posting: "The links that apply ("subsidyPools/{subsidy_pool}", ...)":
// the PAYMENT posting of a pool paying the subsidies it granted names the
// pool.
TEST_F(BillingAudit3Test, APoolsPaymentPostingNamesThePool) {
  const v1::Charge charge = UsedSession();
  int64_t granted = 0;
  for (const auto& l : charge.subsidy_lines()) granted += l.amount().amount_minor();
  ASSERT_EQ(granted, charge.amount().amount_minor() / 10);  // voucher pays 10 %
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer("subsidyPools/voucher");
  pay.mutable_payment()->set_payee(kOwner);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", granted);
  auto paid = billing_->RecordPayment(root_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  const v1::Posting posting = GetPosting(paid->posting());
  EXPECT_EQ(posting.kind(), v1::PAYMENT);
  EXPECT_EQ(posting.subsidy_pool(), "subsidyPools/voucher");
  EXPECT_EQ(posting.settlement(), "");
}

// ================================================================ 7. the etag and the settlement

// Invoice.etag: "Stored invoice: changes with state and payments". A
// settlement computed over an issued invoice (Invoice.settlement) is
// neither: the etag read at issue still voids it, which supersedes the
// settlement (VoidInvoice: "A COMPUTED settlement containing it becomes
// SUPERSEDED") and leaves the settlement's other invoice in none, its etag
// unchanged too. A payment does move the etag: the etag read before it is
// ETAG_MISMATCH.
TEST_F(BillingAudit3Test, AnInvoicesEtagMovesWithItsStateAndPaymentsOnly) {
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 3000);
  const v1::Invoice lab = Issue(kLab);
  const v1::Invoice owner = Issue(kOwner);
  auto s = ComputeJanuary();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->state(), v1::Settlement::COMPUTED);
  const v1::Invoice held = GetInvoice(lab.name());
  ASSERT_EQ(held.settlement(), s->name());
  EXPECT_EQ(held.etag(), lab.etag());
  EXPECT_EQ(GetInvoice(owner.name()).etag(), owner.etag());

  v1::VoidInvoiceRequest v;
  v.set_name(lab.name());
  v.set_reason("wrong payer contact");
  v.set_etag(lab.etag());
  auto voided = billing_->VoidInvoice(root_, v);
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(voided->state(), v1::Invoice::VOID);
  EXPECT_NE(voided->etag(), lab.etag());
  EXPECT_EQ(GetInvoice(lab.name()).etag(), voided->etag());
  EXPECT_EQ(GetSettlement(s->name()).state(), v1::Settlement::SUPERSEDED);
  const v1::Invoice freed = GetInvoice(owner.name());
  EXPECT_EQ(freed.settlement(), "");
  EXPECT_EQ(freed.etag(), owner.etag());

  // A payment changes it: the etag of before is refused, the new one not.
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kOwner);
  pay.mutable_payment()->set_payee(kLab);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 1000);
  pay.mutable_payment()->set_invoice(owner.name());
  ASSERT_TRUE(billing_->RecordPayment(root_, pay).ok());
  const v1::Invoice part = GetInvoice(owner.name());
  EXPECT_NE(part.etag(), owner.etag());
  v1::MarkInvoicePaidRequest mark;
  mark.set_name(owner.name());
  mark.set_etag(owner.etag());
  ExpectError(billing_->MarkInvoicePaid(root_, mark).status(), absl::StatusCode::kAborted, "ETAG_MISMATCH");
  mark.set_etag(part.etag());
  auto paid = billing_->MarkInvoicePaid(root_, mark);
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(paid->state(), v1::Invoice::PAID);
  EXPECT_NE(paid->etag(), part.etag());
}

// ================================================================ 8. a credit nets where it sits

// PostingKind SETTLEMENT_NETTING "moves the open receivable/payable
// balances of its invoices from the original counterparties to the
// transfer counterparties so that every pairwise sub-ledger closes". Lab's
// invoice owes the owner 100.00 and has third owing lab 50.00 back (a
// credit: debit on lab's PAYABLE towards third, credit on third's
// RECEIVABLE from lab). Netted, third pays the owner 50.00 and lab the
// other 50.00; once both transfers are paid every PAYABLE and RECEIVABLE
// sub-ledger between the three is zero.
TEST_F(BillingAudit3Test, TheNettingClosesEveryPairwiseSubLedgerOfAnInvoicesCredit) {
  Owe(kLab, kOwner, 10000);
  Owe(kLab, kThird, -5000);
  const v1::Invoice lab = Issue(kLab);
  ASSERT_EQ(lab.payees_size(), 2);
  EXPECT_EQ(lab.payees(0).organization(), kOwner);
  EXPECT_EQ(lab.payees(0).amount_due().amount_minor(), 10000);
  EXPECT_EQ(lab.payees(1).organization(), kThird);
  EXPECT_EQ(lab.payees(1).amount_due().amount_minor(), -5000);
  EXPECT_EQ(SubLedger(kLab, "payable", kThird), -5000);
  auto s = ComputeJanuary();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->transfers_size(), 2);
  for (const auto& t : s->transfers()) {
    EXPECT_EQ(t.to_organization(), kOwner);
    EXPECT_EQ(t.amount().amount_minor(), 5000);
    v1::RecordPaymentRequest pay;
    pay.mutable_payment()->set_payer(t.from_organization());
    pay.mutable_payment()->set_payee(t.to_organization());
    pay.mutable_payment()->set_settlement(s->name());
    pay.mutable_payment()->set_transfer_index(t.index());
    *pay.mutable_payment()->mutable_amount() = t.amount();
    auto paid = billing_->RecordPayment(root_, pay);
    ASSERT_TRUE(paid.ok()) << paid.status();
  }
  const v1::Settlement cleared = GetSettlement(s->name());
  ASSERT_EQ(cleared.state(), v1::Settlement::CLEARED);
  ASSERT_FALSE(cleared.netting_posting().empty());
  EXPECT_EQ(GetInvoice(lab.name()).state(), v1::Invoice::PAID);
  clock_.Advance(absl::Seconds(1));
  for (const char* org : {kLab, kOwner, kThird}) {
    for (const char* other : {kLab, kOwner, kThird}) {
      if (std::string(org) == other) continue;
      EXPECT_EQ(SubLedger(org, "payable", other), 0) << org << " payable to " << other;
      EXPECT_EQ(SubLedger(org, "receivable", other), 0) << org << " receivable from " << other;
    }
  }
  // The netting stays on RECEIVABLE and PAYABLE and nets to zero per
  // organisation.
  const v1::Posting net = GetPosting(cleared.netting_posting());
  EXPECT_EQ(net.kind(), v1::SETTLEMENT_NETTING);
  std::map<std::string, int64_t> per_org;
  for (const auto& e : net.entries()) {
    EXPECT_TRUE(absl::EndsWith(e.account(), "/accounts/payable") || absl::EndsWith(e.account(), "/accounts/receivable"))
        << e.account();
    const std::string owner = e.account().substr(0, e.account().find("/accounts/"));
    per_org[owner] += e.debit().amount_minor() - e.credit().amount_minor();
  }
  for (const auto& [owner, sum] : per_org) EXPECT_EQ(sum, 0) << owner;
}

// ================================================================ 9. computed and cleared at once

// ComputeSettlement: "When every position nets to zero ... the settlement
// is stored CLEARED in the same step". Its SettlementComputed announces the
// settlement it stored (CLEARED, with its netting posting and clear_time,
// as GetSettlement shows it), as SettlementCleared does beside it.
TEST_F(BillingAudit3Test, SettlementComputedCarriesASettlementClearedAsItIsComputed) {
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 10000);
  Issue(kLab);
  Issue(kOwner);
  clock_.Advance(absl::Hours(3));
  auto s = ComputeJanuary();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->state(), v1::Settlement::CLEARED);
  const v1::Settlement stored = GetSettlement(s->name());
  ASSERT_FALSE(stored.netting_posting().empty());
  int computed = 0;
  for (const auto& e : Published()) {
    if (!e.has_settlement_computed()) continue;
    ++computed;
    const v1::Settlement& announced = e.settlement_computed().settlement();
    EXPECT_EQ(announced.state(), v1::Settlement::CLEARED);
    EXPECT_EQ(announced.netting_posting(), stored.netting_posting());
    EXPECT_EQ(FromProto(announced.clear_time()), clock_.Now());
    EXPECT_EQ(announced.SerializeAsString(), stored.SerializeAsString());
  }
  EXPECT_EQ(computed, 1);
}

// ================================================================ 10. the document's format first

// GetInvoiceDocument: "INVALID_FIELD: format unspecified", checked before
// the invoice is read (after the scope, which for a member is the stored
// invoice's parties): an unknown invoice asked without a format is
// INVALID_FIELD, not INVOICE_NOT_FOUND; a member of neither party is still
// ORGANIZATION_SCOPE first.
TEST_F(BillingAudit3Test, GetInvoiceDocumentChecksTheFormatBeforeTheInvoice) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice lab = Issue(kLab);
  v1::GetInvoiceDocumentRequest doc;
  doc.set_name("invoices/ls-cny-2027-000099");  // format unspecified
  for (const Principal& who : {root_, Member("lab")}) {
    const absl::Status s = billing_->GetInvoiceDocument(who, doc).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    auto v = FieldViolationsOf(s);
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v.front().field, "format");
  }
  doc.set_name(lab.name());
  ExpectError(billing_->GetInvoiceDocument(Member("third"), doc).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  ExpectError(billing_->GetInvoiceDocument(Member("owner"), doc).status(), absl::StatusCode::kInvalidArgument,
              "INVALID_FIELD");
  doc.set_format(v1::GetInvoiceDocumentRequest::CSV);
  EXPECT_TRUE(billing_->GetInvoiceDocument(Member("owner"), doc).ok());
  doc.set_name("invoices/ls-cny-2027-000099");
  ExpectError(billing_->GetInvoiceDocument(root_, doc).status(), absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND");
}

}  // namespace
}  // namespace labshare::billing
