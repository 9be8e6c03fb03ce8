// The error reasons of billing.proto that no test named, each in the
// situation its RPC's comment describes: RecordPayment (a payee not on the
// invoice, an unknown settlement or transfer, a pool paying its
// POOL_PAYABLE, an unknown invoice), PostCorrection (an unknown posting, a
// SETTLEMENT_NETTING posting not correctable, ADJUST entries with a
// malformed account or counterparty, or unbalanced; the reversal of an
// ADJUST balanced only overall), MarkInvoicePaid (an unknown invoice),
// VoidInvoice (an invoice with payments, one in a
// cleared settlement), IssueInvoice (a draft changed since its preview),
// ComputeSettlement (nothing to settle), TopUpSubsidyPool (a pool that
// ended) and the NOT_FOUNDs of the Get methods. Each refusal is checked
// for its code and reason and for what it must not have written.
//
// Runs on the payments fixture (tests/billing/billing_payments_fixture.h:
// billing in process over real Redis, amounts owed put on the ledger by
// ADJUST corrections of the pool's top-up, clock at 2027-01-01Z).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/match.h"
#include "tests/billing/billing_payments_fixture.h"

namespace labshare::billing {
namespace {

namespace iv = labshare::inventory::v1;

constexpr char kThird[] = "organizations/third";

class BillingReasonsTest : public BillingPaymentsContractTest {
 protected:
  static Principal Member(const std::string& org) {
    return Principal{"member-of-" + org, org, {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  }

  // A third member organisation, known to inventory (the fixture has lab
  // and owner).
  void AddThird() {
    iv::CreateOrganizationRequest r;
    r.set_organization_id("third");
    r.mutable_organization()->set_display_name("third");
    r.mutable_organization()->set_type(iv::UNIVERSITY);
    r.mutable_organization()->set_membership_state(iv::MEMBER);
    r.mutable_organization()->set_tier("GENERAL");
    Inv(&iv::InventoryService::Stub::CreateOrganization, r);
  }

  absl::StatusOr<v1::Invoice> Void(const std::string& name) {
    v1::VoidInvoiceRequest r;
    r.set_name(name);
    r.set_reason("issued by mistake");
    return billing_->VoidInvoice(admin_, r);
  }

  v1::Invoice Invoice(const std::string& name) {
    v1::GetInvoiceRequest get;
    get.set_name(name);
    auto inv = billing_->GetInvoice(admin_, get);
    EXPECT_TRUE(inv.ok()) << inv.status();
    return inv.ok() ? *inv : v1::Invoice();
  }

  v1::Settlement Settlement(const std::string& name) {
    v1::GetSettlementRequest get;
    get.set_name(name);
    auto s = billing_->GetSettlement(admin_, get);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::Settlement();
  }

  // Events billing published so far.
  int64_t Events() {
    auto n = pool_->Command({"XLEN", keys::Outbox()});
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? n->integer : -1;
  }

  int Postings(v1::PostingKind kind) {
    v1::ListPostingsRequest list;
    list.set_kind(kind);
    list.set_page_size(1000);
    auto postings = billing_->ListPostings(admin_, list);
    EXPECT_TRUE(postings.ok()) << postings.status();
    return postings.ok() ? postings->postings_size() : -1;
  }

  // An ADJUST correction of the pool's top-up with `entries` (account,
  // counterparty, signed amount: positive debits); its answer.
  absl::StatusOr<v1::PostCorrectionResponse> TryAdjust(
      const std::vector<std::tuple<std::string, std::string, int64_t>>& entries) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(top_up_);
    fix.set_mode(v1::PostCorrectionRequest::ADJUST);
    fix.set_reason("mis-keyed transfer");
    for (const auto& [account, counterparty, amount] : entries) {
      v1::Entry* e = fix.add_entries();
      e->set_account(account);
      e->set_counterparty(counterparty);
      *(amount > 0 ? e->mutable_debit() : e->mutable_credit()) = Cny(std::abs(amount));
    }
    return billing_->PostCorrection(admin_, fix);
  }

  // What a refused correction of the top-up must leave as it was.
  struct Ledger {
    int corrections;
    int64_t events;
    int64_t lab_payable;
    int64_t lab_expense;
    int64_t pool_cash;
    std::string top_up;  // the posting, serialized
  };
  Ledger LedgerNow() {
    v1::GetPostingRequest get;
    get.set_name(top_up_);
    auto top_up = billing_->GetPosting(admin_, get);
    EXPECT_TRUE(top_up.ok()) << top_up.status();
    return Ledger{Postings(v1::CORRECTION),
                  Events(),
                  Balance("organizations/lab/accounts/payable", kOwner),
                  Balance("organizations/lab/accounts/expense", kOwner),
                  Balance(std::string(kVoucher) + "/accounts/pool-cash", ""),
                  top_up.ok() ? top_up->SerializeAsString() : ""};
  }
  void ExpectLedger(const Ledger& before) {
    const Ledger now = LedgerNow();
    EXPECT_EQ(now.corrections, before.corrections);
    EXPECT_EQ(now.events, before.events);
    EXPECT_EQ(now.lab_payable, before.lab_payable);
    EXPECT_EQ(now.lab_expense, before.lab_expense);
    EXPECT_EQ(now.pool_cash, before.pool_cash);
    EXPECT_EQ(now.top_up, before.top_up);  // no corrected_by
  }

  // A CLEARED settlement of January 2027: lab owes the owner 10000 and the
  // owner owes lab 4000 on their invoices; one transfer of 6000 from lab to
  // the owner paid, so a SETTLEMENT_NETTING posting nets the 4000 both ways.
  v1::Settlement ClearedJanuary() {
    Owe(kLab, kOwner, 10000);
    Owe(kOwner, kLab, 4000);
    IssueJanuary(kLab);
    IssueJanuary(kOwner);
    auto s = ComputeJanuary();
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return v1::Settlement();
    EXPECT_EQ(s->transfers_size(), 1);
    auto paid = PayTransfer(*s, 0);
    EXPECT_TRUE(paid.ok()) << paid.status();
    v1::Settlement cleared = Settlement(s->name());
    EXPECT_EQ(cleared.state(), v1::Settlement::CLEARED);
    EXPECT_FALSE(cleared.netting_posting().empty());
    return cleared;
  }
};

// ================================================================ RecordPayment

// RecordPayment "FAILED_PRECONDITION (PAYEE_NOT_ON_INVOICE)": Payment.invoice
// "payer is the invoice's payer, payee one of its payees; the reverse when a
// payee refunds". Lab's January invoice is owed to the owner only; lab owes
// a third organisation too (in February, so not on that invoice). Paying
// the third one against the invoice, and the third one refunding lab on
// it, are refused and write nothing.
TEST_F(BillingReasonsTest, APaymentToAnOrganisationNotOnTheInvoiceIsPayeeNotOnInvoice) {
  AddThird();
  Owe(kLab, kOwner, 1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_EQ(inv.payees_size(), 1);
  Owe(kLab, kThird, 500);
  Owe(kThird, kLab, 300);
  const int64_t events = Events();

  ExpectError(Pay(kLab, kThird, 500, inv.name()).status(), absl::StatusCode::kFailedPrecondition,
              "PAYEE_NOT_ON_INVOICE");
  ExpectError(Pay(kThird, kLab, 300, inv.name()).status(), absl::StatusCode::kFailedPrecondition,
              "PAYEE_NOT_ON_INVOICE");
  EXPECT_EQ(PaymentCount(), 0);
  EXPECT_EQ(Events(), events);
  EXPECT_EQ(Invoice(inv.name()).etag(), inv.etag());
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kThird), -500);
  EXPECT_EQ(Balance("organizations/third/accounts/payable", kLab), -300);

  // The open balance is paid without the invoice: what lab owes the third
  // one net of what it owes lab back.
  ASSERT_TRUE(Pay(kLab, kThird, 200).ok());
}

// RecordPayment "NOT_FOUND (SETTLEMENT_NOT_FOUND)": a well-formed settlement
// name that no computation stored. Nothing is posted.
TEST_F(BillingReasonsTest, APaymentOfAnUnknownSettlementIsSettlementNotFound) {
  Owe(kLab, kOwner, 10000);
  IssueJanuary(kLab);
  auto s = ComputeJanuary();
  ASSERT_TRUE(s.ok()) << s.status();
  const int64_t events = Events();
  v1::Payment pay;
  pay.set_payer(kLab);
  pay.set_payee(kOwner);
  *pay.mutable_amount() = Cny(10000);
  pay.set_settlement("settlements/2027-01-cny-1-0001");
  ExpectError(Record(pay).status(), absl::StatusCode::kNotFound, "SETTLEMENT_NOT_FOUND");
  pay.set_transfer_index(3);
  ExpectError(Record(pay).status(), absl::StatusCode::kNotFound, "SETTLEMENT_NOT_FOUND");
  EXPECT_EQ(PaymentCount(), 0);
  EXPECT_EQ(Events(), events);
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), -10000);
  EXPECT_EQ(Settlement(s->name()).state(), v1::Settlement::COMPUTED);
}

// RecordPayment "NOT_FOUND (TRANSFER_NOT_FOUND)": the settlement exists but
// has no transfer at that index (SettlementTransfer.index is 0-based).
// Nothing is posted and the settlement stays as computed; its one transfer
// then clears it.
TEST_F(BillingReasonsTest, APaymentOfATransferTheSettlementDoesNotHaveIsTransferNotFound) {
  Owe(kLab, kOwner, 10000);
  IssueJanuary(kLab);
  auto s = ComputeJanuary();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->transfers_size(), 1);
  const int64_t events = Events();
  v1::Payment pay;
  pay.set_settlement(s->name());
  pay.set_payer(kLab);
  pay.set_payee(kOwner);
  *pay.mutable_amount() = Cny(10000);
  for (int index : {1, 2, -1}) {
    pay.set_transfer_index(index);
    ExpectError(Record(pay).status(), absl::StatusCode::kNotFound, "TRANSFER_NOT_FOUND");
  }
  EXPECT_EQ(PaymentCount(), 0);
  EXPECT_EQ(Events(), events);
  const v1::Settlement same = Settlement(s->name());
  EXPECT_EQ(same.state(), v1::Settlement::COMPUTED);
  EXPECT_TRUE(same.transfers(0).payment().empty());
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), -10000);

  ASSERT_TRUE(PayTransfer(*s, 0).ok());
  EXPECT_EQ(Settlement(s->name()).state(), v1::Settlement::CLEARED);
}

// RecordPayment, "a pool paying an owner its granted subsidies": at most
// what the pool's "POOL_PAYABLE" (an account kind, not a reason) owes the
// owner ("pool pays O: Dr F.POOL_PAYABLE(cp O), Cr F.POOL_CASH; Dr
// O.CASH(cp F), Cr O.RECEIVABLE(cp F)"), and recorded by CONSORTIUM_ADMIN
// only ("not for pool payments": the owner's billing admin confirming it is
// ORGANIZATION_SCOPE).
TEST_F(BillingReasonsTest, APoolPaysItsPoolPayableToTheOwner) {
  Adjust({{std::string(kVoucher) + "/accounts/pool-funds", "", 700},
          {std::string(kVoucher) + "/accounts/pool-payable", kOwner, -700},
          {"organizations/owner/accounts/receivable", kVoucher, 700},
          {"organizations/owner/accounts/income", kVoucher, -700}});
  const Principal owner_admin = Member("owner");
  ExpectError(Pay(kVoucher, kOwner, 700, "", &owner_admin).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  ExpectError(Pay(kVoucher, kOwner, 701).status(), absl::StatusCode::kFailedPrecondition, "OVERPAYMENT");
  EXPECT_EQ(PaymentCount(), 0);

  auto paid = Pay(kVoucher, kOwner, 700);
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(Balance(std::string(kVoucher) + "/accounts/pool-payable", kOwner), 0);
  EXPECT_EQ(Balance(std::string(kVoucher) + "/accounts/pool-cash", ""), 1000000 - 700);
  EXPECT_EQ(Balance("organizations/owner/accounts/cash", kVoucher), 700);
  EXPECT_EQ(Balance("organizations/owner/accounts/receivable", kVoucher), 0);
}

// ================================================================ PostCorrection

// PostCorrection "NOT_FOUND (POSTING_NOT_FOUND)" for a posting never
// written, in either mode; nothing is posted.
TEST_F(BillingReasonsTest, CorrectingAnUnknownPostingIsPostingNotFound) {
  const int64_t events = Events();
  v1::PostCorrectionRequest fix;
  fix.set_posting("postings/never-written");
  fix.set_mode(v1::PostCorrectionRequest::REVERSE);
  fix.set_reason("typo");
  ExpectError(billing_->PostCorrection(admin_, fix).status(), absl::StatusCode::kNotFound, "POSTING_NOT_FOUND");
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  v1::Entry* debit = fix.add_entries();
  debit->set_account(std::string(kVoucher) + "/accounts/pool-cash");
  *debit->mutable_debit() = Cny(5);
  v1::Entry* credit = fix.add_entries();
  credit->set_account(std::string(kVoucher) + "/accounts/pool-funds");
  *credit->mutable_credit() = Cny(5);
  ExpectError(billing_->PostCorrection(admin_, fix).status(), absl::StatusCode::kNotFound, "POSTING_NOT_FOUND");
  EXPECT_EQ(Postings(v1::CORRECTION), 0);
  EXPECT_EQ(Events(), events);
}

// PostCorrection's posting is "postings/{posting}": another name is
// INVALID_FIELD `posting` (the list's INVALID_FIELD), not the posting its
// last segment happens to name (it corrected the pool's top-up).
TEST_F(BillingReasonsTest, ACorrectionsPostingNameIsCheckedWhole) {
  const std::string id = top_up_.substr(top_up_.rfind('/') + 1);
  const std::vector<std::string> names = {"organizations/lab/" + top_up_, "payments/" + id, "postings/", ""};
  for (const std::string& name : names) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(name);
    fix.set_mode(v1::PostCorrectionRequest::REVERSE);
    fix.set_reason("typo");
    SCOPED_TRACE(name);
    const absl::Status answer = billing_->PostCorrection(admin_, fix).status();
    ExpectError(answer, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    const auto violations = FieldViolationsOf(answer);
    ASSERT_EQ(violations.size(), 1u);
    EXPECT_EQ(violations[0].field, "posting");
  }
  EXPECT_EQ(Postings(v1::CORRECTION), 0);
  EXPECT_EQ(Balance(std::string(kVoucher) + "/accounts/pool-cash", ""), 1000000);
}

// PostCorrection "FAILED_PRECONDITION (NOT_CORRECTABLE: SETTLEMENT_NETTING
// postings are corrected by voiding)": the netting posting (kind
// "SETTLEMENT_NETTING", a posting kind, not a reason) of a cleared
// settlement is neither reversed nor adjusted; nothing is posted, the
// posting has no correction and the netted balances stay.
TEST_F(BillingReasonsTest, ASettlementNettingPostingIsNotCorrectable) {
  const v1::Settlement s = ClearedJanuary();
  ASSERT_FALSE(s.netting_posting().empty());
  v1::GetPostingRequest get;
  get.set_name(s.netting_posting());
  auto netting = billing_->GetPosting(admin_, get);
  ASSERT_TRUE(netting.ok()) << netting.status();
  ASSERT_EQ(netting->kind(), v1::SETTLEMENT_NETTING);
  const int corrections = Postings(v1::CORRECTION);
  const int64_t events = Events();
  const int64_t payable = Balance("organizations/lab/accounts/payable", kOwner);
  const int64_t receivable = Balance("organizations/lab/accounts/receivable", kOwner);

  v1::PostCorrectionRequest fix;
  fix.set_posting(s.netting_posting());
  fix.set_mode(v1::PostCorrectionRequest::REVERSE);
  fix.set_reason("netted twice");
  ExpectError(billing_->PostCorrection(admin_, fix).status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  for (const auto& e : netting->entries()) *fix.add_entries() = e;
  ExpectError(billing_->PostCorrection(admin_, fix).status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");

  EXPECT_EQ(Postings(v1::CORRECTION), corrections);
  EXPECT_EQ(Events(), events);
  auto again = billing_->GetPosting(admin_, get);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->corrected_by().empty());
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), payable);
  EXPECT_EQ(Balance("organizations/lab/accounts/receivable", kOwner), receivable);
}

// PostCorrection "INVALID_ARGUMENT (INVALID_ACCOUNT: malformed account,
// counterparty missing where required)": ADJUST entries naming an account
// that is not "{organizations|subsidyPools}/{id}/accounts/{kind}" (no such
// kind, no owner collection, a pool's kind on an organisation and the
// reverse), a PAYABLE entry without its counterparty, a counterparty that
// is neither an organisation nor a pool, or the account's own owner. The
// field violation names the entry. Nothing is posted: no correction, no
// event, the top-up without corrected_by, the balances as they were.
TEST_F(BillingReasonsTest, AnAdjustmentWithAMalformedAccountIsInvalidAccount) {
  const Ledger before = LedgerNow();
  struct Case {
    std::string account;
    std::string counterparty;
    std::string field;  // of the violation
  };
  const std::vector<Case> cases = {
      {"organizations/lab/accounts/nope", kOwner, "entries[1].account"},
      {"lab/accounts/payable", kOwner, "entries[1].account"},
      {"organizations/lab/payable", kOwner, "entries[1].account"},
      {"organizations/lab/accounts/pool-cash", kOwner, "entries[1].account"},
      {std::string(kVoucher) + "/accounts/payable", kOwner, "entries[1].account"},
      {"users/ana/accounts/payable", kOwner, "entries[1].account"},
      {"organizations/lab/accounts/payable", "", "entries[1].counterparty"},
      {"organizations/lab/accounts/payable", "owner", "entries[1].counterparty"},
      {"organizations/lab/accounts/payable", "users/ana", "entries[1].counterparty"},
      {"organizations/lab/accounts/payable", kLab, "entries[1].counterparty"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.account + " cp " + c.counterparty);
    const absl::Status answer =
        TryAdjust({{"organizations/lab/accounts/expense", kOwner, 100}, {c.account, c.counterparty, -100}}).status();
    ExpectError(answer, absl::StatusCode::kInvalidArgument, "INVALID_ACCOUNT");
    const auto violations = FieldViolationsOf(answer);
    ASSERT_EQ(violations.size(), 1u);
    EXPECT_EQ(violations[0].field, c.field);
  }
  ExpectLedger(before);
  // The well-formed entries post.
  auto posted = TryAdjust({{"organizations/lab/accounts/expense", kOwner, 100},
                           {"organizations/lab/accounts/payable", kOwner, -100}});
  ASSERT_TRUE(posted.ok()) << posted.status();
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), before.lab_payable - 100);
}

// PostCorrection "INVALID_ARGUMENT (UNBALANCED_POSTING)": ADJUST entries
// whose debits and credits differ, or a single entry. Nothing is posted.
TEST_F(BillingReasonsTest, AnAdjustmentWhoseDebitsAndCreditsDifferIsUnbalancedPosting) {
  const Ledger before = LedgerNow();
  const std::string expense = "organizations/lab/accounts/expense";
  const std::string payable = "organizations/lab/accounts/payable";
  const std::vector<std::vector<std::tuple<std::string, std::string, int64_t>>> cases = {
      {{expense, kOwner, 100}, {payable, kOwner, -99}},
      {{expense, kOwner, 100}, {payable, kOwner, -101}},
      {{expense, kOwner, 100}, {payable, kOwner, -60}, {payable, kOwner, -30}},
      {{expense, kOwner, 100}},
      {{payable, kOwner, -100}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    ExpectError(TryAdjust(cases[i]).status(), absl::StatusCode::kInvalidArgument, "UNBALANCED_POSTING");
  }
  ExpectLedger(before);
}

// An ADJUST needs only the overall balance ("caller ADJUST corrections may
// need only the overall balance"): one moving 5 from lab's cash with the
// owner to the owner's cash with lab posts. REVERSE "writes the exact
// mirror of the corrected posting", so that adjustment is reversed too (it
// was UNBALANCED_POSTING: the mirror was held to balance per owner, which
// an accepted adjustment need not), and both balances come back.
TEST_F(BillingReasonsTest, AnAdjustmentBalancedOnlyOverallIsReversed) {
  auto moved = TryAdjust({{"organizations/lab/accounts/cash", kOwner, -5},
                          {"organizations/owner/accounts/cash", kLab, 5}});
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(Balance("organizations/lab/accounts/cash", kOwner), -5);
  EXPECT_EQ(Balance("organizations/owner/accounts/cash", kLab), 5);
  v1::PostCorrectionRequest undo;
  undo.set_posting(moved->correction().name());
  undo.set_mode(v1::PostCorrectionRequest::REVERSE);
  undo.set_reason("moved the wrong way");
  auto reversed = billing_->PostCorrection(admin_, undo);
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(reversed->correction().corrects(), moved->correction().name());
  EXPECT_EQ(Balance("organizations/lab/accounts/cash", kOwner), 0);
  EXPECT_EQ(Balance("organizations/owner/accounts/cash", kLab), 0);
  ExpectError(billing_->PostCorrection(admin_, undo).status(), absl::StatusCode::kFailedPrecondition,
              "ALREADY_REVERSED");
}

// ================================================================ invoices not found

// RecordPayment "NOT_FOUND (INVOICE_NOT_FOUND)": a well-formed invoice name
// no issue stored (also the id of a stored posting), from the admin and
// from the payee's billing admin. No payment, no event, the balance owed
// as it was; the invoice issued later is paid.
TEST_F(BillingReasonsTest, APaymentOfAnUnknownInvoiceIsInvoiceNotFound) {
  Owe(kLab, kOwner, 1000);
  const int64_t events = Events();
  const Principal owner_admin = Member("owner");
  const std::string stored = top_up_.substr(top_up_.rfind('/') + 1);
  for (const std::string& name : {std::string("invoices/never-issued"), "invoices/" + stored}) {
    SCOPED_TRACE(name);
    ExpectError(Pay(kLab, kOwner, 1000, name).status(), absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND");
    ExpectError(Pay(kLab, kOwner, 1000, name, &owner_admin).status(), absl::StatusCode::kNotFound,
                "INVOICE_NOT_FOUND");
  }
  EXPECT_EQ(PaymentCount(), 0);
  EXPECT_EQ(Events(), events);
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), -1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_TRUE(Pay(kLab, kOwner, 1000, inv.name()).ok());
}

// MarkInvoicePaid "NOT_FOUND (INVOICE_NOT_FOUND)": a well-formed name no
// issue stored (with an etag and a request_id too); no payment, no event,
// lab's issued invoice untouched.
TEST_F(BillingReasonsTest, MarkingAnUnknownInvoicePaidIsInvoiceNotFound) {
  Owe(kLab, kOwner, 1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  const int64_t events = Events();
  const std::string stored = top_up_.substr(top_up_.rfind('/') + 1);
  v1::MarkInvoicePaidRequest r;
  for (const std::string& name : {std::string("invoices/never-issued"), "invoices/" + stored}) {
    SCOPED_TRACE(name);
    r.set_name(name);
    r.clear_etag();
    r.clear_request_id();
    ExpectError(billing_->MarkInvoicePaid(admin_, r).status(), absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND");
    r.set_etag(inv.etag());
    r.set_request_id("paid-" + name);
    ExpectError(billing_->MarkInvoicePaid(admin_, r).status(), absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND");
  }
  EXPECT_EQ(PaymentCount(), 0);
  EXPECT_EQ(Events(), events);
  const v1::Invoice same = Invoice(inv.name());
  EXPECT_EQ(same.state(), v1::Invoice::ISSUED);
  EXPECT_EQ(same.etag(), inv.etag());
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), -1000);
}

// ================================================================ VoidInvoice

// VoidInvoice "INVOICE_HAS_PAYMENTS: payments were recorded against it": an
// invoice partly paid (still ISSUED) is not voided: it stays as it was, no
// InvoiceVoided, and its slot stays taken (INVOICE_ALREADY_ISSUED).
TEST_F(BillingReasonsTest, AnInvoiceWithPaymentsIsNotVoided) {
  Owe(kLab, kOwner, 1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  ASSERT_TRUE(Pay(kLab, kOwner, 400, inv.name()).ok());
  const v1::Invoice part = Invoice(inv.name());
  ASSERT_EQ(part.state(), v1::Invoice::ISSUED);
  const int64_t events = Events();

  ExpectError(Void(inv.name()).status(), absl::StatusCode::kFailedPrecondition, "INVOICE_HAS_PAYMENTS");
  const v1::Invoice same = Invoice(inv.name());
  EXPECT_EQ(same.state(), v1::Invoice::ISSUED);
  EXPECT_EQ(same.etag(), part.etag());
  EXPECT_EQ(same.amount_outstanding().amount_minor(), 600);
  EXPECT_EQ(Events(), events);
  v1::IssueInvoiceRequest again;
  again.set_payer_organization(kLab);
  again.set_period("2027-01");
  ExpectError(billing_->IssueInvoice(admin_, again).status(), absl::StatusCode::kAlreadyExists,
              "INVOICE_ALREADY_ISSUED");
}

// VoidInvoice "INVOICE_IN_CLEARED_SETTLEMENT": an invoice paid through its
// settlement's transfers is not voided, and says so (it answered
// INVOICE_ALREADY_PAID, which left INVOICE_IN_CLEARED_SETTLEMENT unreachable:
// clearing makes every invoice still in the settlement PAID). The invoice,
// the settlement and the events stay as they were; an invoice paid by a
// payment stays INVOICE_ALREADY_PAID.
TEST_F(BillingReasonsTest, AnInvoiceOfAClearedSettlementIsNotVoided) {
  const v1::Settlement s = ClearedJanuary();
  ASSERT_EQ(s.invoices_size(), 2);
  const int64_t events = Events();
  for (const auto& name : s.invoices()) {
    const v1::Invoice before = Invoice(name);
    ASSERT_EQ(before.state(), v1::Invoice::PAID);
    ASSERT_EQ(before.settlement(), s.name());
    auto voided = Void(name);
    ExpectError(voided.status(), absl::StatusCode::kFailedPrecondition, "INVOICE_IN_CLEARED_SETTLEMENT");
    EXPECT_TRUE(absl::StrContains(voided.status().message(), s.name())) << voided.status();
    const v1::Invoice after = Invoice(name);
    EXPECT_EQ(after.state(), v1::Invoice::PAID);
    EXPECT_EQ(after.etag(), before.etag());
  }
  EXPECT_EQ(Settlement(s.name()).state(), v1::Settlement::CLEARED);
  EXPECT_EQ(Events(), events);

  // February: paid by a payment, not through a settlement.
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 10), absl::UTCTimeZone()));
  Owe(kLab, kOwner, 700);
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 3, 2), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest feb;
  feb.set_payer_organization(kLab);
  feb.set_period("2027-02");
  auto inv = billing_->IssueInvoice(admin_, feb);
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_TRUE(Pay(kLab, kOwner, 700, inv->name()).ok());
  ExpectError(Void(inv->name()).status(), absl::StatusCode::kFailedPrecondition, "INVOICE_ALREADY_PAID");
}

// ================================================================ IssueInvoice

// IssueInvoice "ABORTED (INVOICE_CHANGED: expected_etag no longer matches
// the draft; preview again)": lab's January draft previewed mid-month, then
// charged more before the month ended. Issuing with the old etag issues
// nothing (no number taken, no event); the new preview's etag issues it,
// as number 1 of the series.
TEST_F(BillingReasonsTest, AnInvoiceWhoseDraftChangedSinceItsPreviewIsNotIssued) {
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 1, 15), absl::UTCTimeZone()));
  Owe(kLab, kOwner, 1000);
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization(kLab);
  preview.set_period("2027-01");
  auto seen = billing_->PreviewInvoice(admin_, preview);
  ASSERT_TRUE(seen.ok()) << seen.status();
  Owe(kLab, kOwner, 500);

  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  const int64_t events = Events();
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization(kLab);
  issue.set_period("2027-01");
  issue.set_expected_etag(seen->etag());
  ExpectError(billing_->IssueInvoice(admin_, issue).status(), absl::StatusCode::kAborted, "INVOICE_CHANGED");
  auto listed = billing_->ListInvoices(admin_, v1::ListInvoicesRequest());
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->invoices_size(), 0);
  EXPECT_EQ(Events(), events);

  auto now = billing_->PreviewInvoice(admin_, preview);
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_NE(now->etag(), seen->etag());
  EXPECT_EQ(now->amount_due().amount_minor(), 1500);
  issue.set_expected_etag(now->etag());
  auto issued = billing_->IssueInvoice(admin_, issue);
  ASSERT_TRUE(issued.ok()) << issued.status();
  EXPECT_EQ(issued->sequence(), 1);
  EXPECT_EQ(issued->amount_due().amount_minor(), 1500);
}

// IssueInvoice's and PreviewInvoice's currency_code ("Default: the
// consortium currency") is an ISO 4217 code: another is their INVALID_FIELD
// `currency_code` (IssueInvoice answered NOTHING_TO_INVOICE, PreviewInvoice
// an empty draft), not an invoice of nothing.
TEST_F(BillingReasonsTest, AnInvoicesCurrencyIsAnIsoCode) {
  Owe(kLab, kOwner, 1000);
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  for (const char* code : {"cny", "YUAN", "C1Y"}) {
    SCOPED_TRACE(code);
    v1::PreviewInvoiceRequest preview;
    preview.set_payer_organization(kLab);
    preview.set_period("2027-01");
    preview.set_currency_code(code);
    const absl::Status previewed = billing_->PreviewInvoice(admin_, preview).status();
    ExpectError(previewed, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    v1::IssueInvoiceRequest issue;
    issue.set_payer_organization(kLab);
    issue.set_period("2027-01");
    issue.set_currency_code(code);
    const absl::Status issued = billing_->IssueInvoice(admin_, issue).status();
    ExpectError(issued, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    for (const absl::Status& s : {previewed, issued}) {
      const auto violations = FieldViolationsOf(s);
      ASSERT_EQ(violations.size(), 1u);
      EXPECT_EQ(violations[0].field, "currency_code");
    }
  }
  EXPECT_EQ(IssueJanuary(kLab).currency_code(), "CNY");
}

// PreviewInvoice by a member's billing admin: another organisation's payer
// is ORGANIZATION_SCOPE before the name's form is checked (types.proto:
// authorization before validation), so "lab" (no organizations/) is a
// scope answer too; its own payer malformed is not possible, an empty
// payer is INVALID_FIELD (missing).
TEST_F(BillingReasonsTest, AMembersPreviewOfAnotherPayerIsScopedBeforeItsFormIsChecked) {
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  const Principal member = Member("owner");
  for (const char* payer : {"organizations/lab", "lab", "organizations/"}) {
    SCOPED_TRACE(payer);
    v1::PreviewInvoiceRequest preview;
    preview.set_payer_organization(payer);
    preview.set_period("2027-01");
    ExpectError(billing_->PreviewInvoice(member, preview).status(), absl::StatusCode::kPermissionDenied,
                "ORGANIZATION_SCOPE");
  }
  v1::PreviewInvoiceRequest missing;
  missing.set_period("2027-01");
  const absl::Status s = billing_->PreviewInvoice(member, missing).status();
  ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ASSERT_EQ(FieldViolationsOf(s).size(), 1u);
  EXPECT_EQ(FieldViolationsOf(s)[0].field, "payer_organization");
  v1::PreviewInvoiceRequest own;
  own.set_payer_organization(kOwner);
  own.set_period("2027-01");
  EXPECT_TRUE(billing_->PreviewInvoice(member, own).ok());
}

// ================================================================ ComputeSettlement

// ComputeSettlement "FAILED_PRECONDITION (NOTHING_TO_SETTLE)": no ISSUED
// invoice of the period and currency has an open amount: none issued, one
// paid and one voided, another currency, or all cleared by a settlement.
// Nothing is stored or announced, and a cleared settlement stays CLEARED.
TEST_F(BillingReasonsTest, APeriodWithNoOpenInvoiceHasNothingToSettle) {
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  ExpectError(ComputeJanuary().status(), absl::StatusCode::kFailedPrecondition, "NOTHING_TO_SETTLE");

  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 1, 20), absl::UTCTimeZone()));
  Owe(kLab, kOwner, 1000);
  Owe(kOwner, kLab, 300);
  const v1::Invoice paid = IssueJanuary(kLab);
  const v1::Invoice voided = IssueJanuary(kOwner);
  ASSERT_TRUE(Pay(kLab, kOwner, 1000, paid.name()).ok());
  ASSERT_TRUE(Void(voided.name()).ok());
  const int64_t events = Events();
  ExpectError(ComputeJanuary().status(), absl::StatusCode::kFailedPrecondition, "NOTHING_TO_SETTLE");
  v1::ComputeSettlementRequest usd;
  usd.set_period("2027-01");
  usd.set_currency_code("USD");
  ExpectError(billing_->ComputeSettlement(admin_, usd).status(), absl::StatusCode::kFailedPrecondition,
              "NOTHING_TO_SETTLE");
  v1::ListSettlementsRequest list;
  list.set_period("2027-01");
  auto listed = billing_->ListSettlements(admin_, list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->settlements_size(), 0);
  EXPECT_EQ(Events(), events);
}

// Settlement CLEARED: "Every transfer paid; netting posted; its invoices
// PAID". Lab and the owner owe each other 10000 in January: their positions
// net to zero, so the settlement has no transfer and clears as it is
// computed (it stayed COMPUTED with nothing to pay: its invoices ISSUED for
// good, each payment of them INVOICE_IN_SETTLEMENT and every transfer
// TRANSFER_NOT_FOUND). The netting posting closes both sides of the pair;
// the invoices are PAID through it and announced; the period then has
// nothing to settle.
TEST_F(BillingReasonsTest, ASettlementWithNothingToTransferClearsAsItIsComputed) {
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 10000);
  const v1::Invoice lab = IssueJanuary(kLab);
  const v1::Invoice owner = IssueJanuary(kOwner);
  v1::ComputeSettlementRequest compute;
  compute.set_period("2027-01");
  compute.set_request_id("net-1");
  auto s = billing_->ComputeSettlement(admin_, compute);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->transfers_size(), 0);
  EXPECT_EQ(s->gross_total().amount_minor(), 20000);
  EXPECT_EQ(s->state(), v1::Settlement::CLEARED);
  EXPECT_FALSE(s->netting_posting().empty());
  const v1::Settlement stored = Settlement(s->name());
  EXPECT_EQ(stored.state(), v1::Settlement::CLEARED);
  EXPECT_EQ(stored.netting_posting(), s->netting_posting());
  for (const v1::Invoice* inv : {&lab, &owner}) {
    const v1::Invoice now = Invoice(inv->name());
    EXPECT_EQ(now.state(), v1::Invoice::PAID) << inv->name();
    EXPECT_EQ(now.settlement(), s->name());
    EXPECT_EQ(now.amount_outstanding().amount_minor(), 0);
  }
  EXPECT_EQ(Balance("organizations/lab/accounts/payable", kOwner), 0);
  EXPECT_EQ(Balance("organizations/lab/accounts/receivable", kOwner), 0);
  EXPECT_EQ(Balance("organizations/owner/accounts/payable", kLab), 0);
  EXPECT_EQ(Balance("organizations/owner/accounts/receivable", kLab), 0);
  // In order: computed, each invoice paid, then cleared.
  std::string order;
  auto raw = pool_->Command({"XRANGE", keys::Outbox(), "-", "+"});
  ASSERT_TRUE(raw.ok()) << raw.status();
  for (const auto& entry : raw->elements) {
    v1::BillingEvent e;
    ASSERT_TRUE(e.ParseFromString(entry.elements[1].elements[3].str));
    if (e.has_settlement_computed()) order += "computed ";
    if (e.has_invoice_paid() && e.invoice_paid().paid_by() == v1::InvoicePaid::SETTLEMENT) order += "paid ";
    if (e.has_settlement_cleared() && e.settlement_cleared().paid_invoices_size() == 2) order += "cleared ";
  }
  EXPECT_EQ(order, "computed paid paid cleared ");
  // The retry answers the first answer (CLEARED), writing nothing.
  const int64_t events = Events();
  auto again = billing_->ComputeSettlement(admin_, compute);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), s->SerializeAsString());
  EXPECT_EQ(Events(), events);
  ExpectError(Pay(kLab, kOwner, 1, lab.name()).status(), absl::StatusCode::kFailedPrecondition, "INVOICE_NOT_ISSUED");
  ExpectError(ComputeJanuary().status(), absl::StatusCode::kFailedPrecondition, "NOTHING_TO_SETTLE");
  EXPECT_EQ(PaymentCount(), 0);
}

TEST_F(BillingReasonsTest, AClearedPeriodHasNothingToSettle) {
  const v1::Settlement s = ClearedJanuary();
  const int64_t events = Events();
  ExpectError(ComputeJanuary().status(), absl::StatusCode::kFailedPrecondition, "NOTHING_TO_SETTLE");
  const v1::Settlement same = Settlement(s.name());
  EXPECT_EQ(same.state(), v1::Settlement::CLEARED);
  EXPECT_TRUE(same.superseded_by().empty());
  EXPECT_EQ(Events(), events);
}

// ================================================================ TopUpSubsidyPool

// TopUpSubsidyPool "FAILED_PRECONDITION (POOL_ENDED: validity over)": a pool
// valid for January 2027 (validity half-open) takes a top-up on 15 January,
// none from 1 February 00:00Z on: no POOL_TOP_UP posting, its balance and
// top-ups total unchanged. The January top-up retried with its request_id
// is answered as first.
TEST_F(BillingReasonsTest, APoolWhoseValidityIsOverTakesNoTopUp) {
  const absl::Time end = absl::FromCivil(absl::CivilDay(2027, 2, 1), absl::UTCTimeZone());
  v1::CreateSubsidyPoolRequest create;
  create.set_subsidy_pool_id("january");
  create.mutable_subsidy_pool()->set_display_name("January");
  create.mutable_subsidy_pool()->set_currency_code("CNY");
  create.mutable_subsidy_pool()->set_percentage_bps(500);
  *create.mutable_subsidy_pool()->mutable_validity()->mutable_start_time() = ToProto(clock_.Now());
  *create.mutable_subsidy_pool()->mutable_validity()->mutable_end_time() = ToProto(end);
  ASSERT_TRUE(billing_->CreateSubsidyPool(admin_, create).ok());
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 1, 15), absl::UTCTimeZone()));
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/january");
  *top.mutable_amount() = Cny(5000);
  top.set_request_id("top-up-january");
  auto first = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(first.ok()) << first.status();
  const int top_ups = Postings(v1::POOL_TOP_UP);

  for (absl::Time at : {end, end + absl::Hours(24 * 30)}) {
    clock_.Set(at);
    const int64_t events = Events();
    v1::TopUpSubsidyPoolRequest late = top;
    late.set_request_id("");
    ExpectError(billing_->TopUpSubsidyPool(admin_, late).status(), absl::StatusCode::kFailedPrecondition,
                "POOL_ENDED");
    late.set_request_id("top-up-february");
    ExpectError(billing_->TopUpSubsidyPool(admin_, late).status(), absl::StatusCode::kFailedPrecondition,
                "POOL_ENDED");
    EXPECT_EQ(Events(), events);
  }
  EXPECT_EQ(Postings(v1::POOL_TOP_UP), top_ups);
  v1::GetSubsidyPoolRequest get;
  get.set_name("subsidyPools/january");
  auto pool = billing_->GetSubsidyPool(admin_, get);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->balance().amount_minor(), 5000);
  EXPECT_EQ(pool->topped_up_total().amount_minor(), 5000);
  EXPECT_EQ(pool->state(), v1::SubsidyPool::ENDED);

  auto retry = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->etag(), first->etag());
}

// ================================================================ GetInvoiceDocument

// GetInvoiceDocument "INTERNAL (DOCUMENT_RENDER_FAILED: ... no installed
// font has Chinese characters)": fontconfig pointed (FONTCONFIG_FILE) at a
// configuration without any font directory, as on a host without
// fonts-noto-cjk. The PDF is refused rather than printed with empty boxes
// for every Chinese name and label; the CSV needs no font and is served.
// Fontconfig reads its configuration once per process: this must be the
// first test of the binary to lay out text (no other test here renders).
TEST_F(BillingReasonsTest, APdfWithoutAChineseFontIsDocumentRenderFailed) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/billing_reasons_fonts_", getpid());
  std::filesystem::create_directories(dir + "/none");
  const std::string conf = dir + "/fonts.conf";
  {
    std::ofstream out(conf);
    out << "<?xml version=\"1.0\"?>\n<!DOCTYPE fontconfig SYSTEM \"fonts.dtd\">\n<fontconfig><dir>" << dir
        << "/none</dir><cachedir>" << dir << "/cache</cachedir></fontconfig>\n";
  }
  ASSERT_EQ(setenv("FONTCONFIG_FILE", conf.c_str(), 1), 0);
  Owe(kLab, kOwner, 1000);
  const v1::Invoice inv = IssueJanuary(kLab);
  v1::GetInvoiceDocumentRequest r;
  r.set_name(inv.name());
  r.set_format(v1::GetInvoiceDocumentRequest::PDF);
  auto pdf = billing_->GetInvoiceDocument(admin_, r);
  ExpectError(pdf.status(), absl::StatusCode::kInternal, "DOCUMENT_RENDER_FAILED");
  EXPECT_TRUE(absl::StrContains(pdf.status().message(), "Chinese")) << pdf.status();
  r.set_format(v1::GetInvoiceDocumentRequest::CSV);
  auto csv = billing_->GetInvoiceDocument(admin_, r);
  EXPECT_TRUE(csv.ok()) << csv.status();
  unsetenv("FONTCONFIG_FILE");
  std::filesystem::remove_all(dir);
}

// ================================================================ the Get methods

// NOT_FOUND with each Get's own reason for a well-formed name never stored
// (also an id stored under another kind: the top-up posting's id as a
// charge, payment, deposit or settlement), to every role that may call it:
// a member learns nothing more than the admin.
TEST_F(BillingReasonsTest, EachGetAnswersItsNotFoundReason) {
  const std::string stored = top_up_.substr(top_up_.rfind('/') + 1);
  struct Case {
    const char* collection;
    const char* reason;
    std::function<absl::Status(const Principal&, const std::string&)> get;
  };
  const std::vector<Case> cases = {
      {"charges", "CHARGE_NOT_FOUND",
       [&](const Principal& p, const std::string& name) {
         v1::GetChargeRequest r;
         r.set_name(name);
         return billing_->GetCharge(p, r).status();
       }},
      {"postings", "POSTING_NOT_FOUND",
       [&](const Principal& p, const std::string& name) {
         v1::GetPostingRequest r;
         r.set_name(name);
         return billing_->GetPosting(p, r).status();
       }},
      {"payments", "PAYMENT_NOT_FOUND",
       [&](const Principal& p, const std::string& name) {
         v1::GetPaymentRequest r;
         r.set_name(name);
         return billing_->GetPayment(p, r).status();
       }},
      {"deposits", "DEPOSIT_NOT_FOUND",
       [&](const Principal& p, const std::string& name) {
         v1::GetDepositRequest r;
         r.set_name(name);
         return billing_->GetDeposit(p, r).status();
       }},
      {"settlements", "SETTLEMENT_NOT_FOUND",
       [&](const Principal& p, const std::string& name) {
         v1::GetSettlementRequest r;
         r.set_name(name);
         return billing_->GetSettlement(p, r).status();
       }},
  };
  const Principal auditor{"auditor", "", {Role::kAuditor}, absl::InfiniteFuture()};
  const Principal service{"booking", "", {Role::kService}, absl::InfiniteFuture()};
  const Principal member = Member("lab");
  for (const Case& c : cases) {
    std::vector<std::string> names = {absl::StrCat(c.collection, "/never-stored")};
    if (std::string(c.collection) != "postings") names.push_back(absl::StrCat(c.collection, "/", stored));
    for (const std::string& name : names) {
      for (const Principal* p : std::vector<const Principal*>{&admin_, &auditor, &service, &member}) {
        SCOPED_TRACE(name + " as " + p->user_id);
        ExpectError(c.get(*p, name), absl::StatusCode::kNotFound, c.reason);
      }
    }
  }
  // The stored posting itself is found.
  v1::GetPostingRequest get;
  get.set_name(top_up_);
  EXPECT_TRUE(billing_->GetPosting(admin_, get).ok());
}

}  // namespace
}  // namespace labshare::billing
