// Billing against the comments of billing.proto (contract audit): who may
// see which invoices and settlements, the settlement life cycle (an invoice
// in a COMPUTED settlement is paid through its transfers, a newer
// computation or a void supersedes it), payments and pool amounts refused
// with the reasons the contract lists, list filters, and inventory
// unreachable answered as INVENTORY_UNAVAILABLE.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// over real gRPC, fake clock). Invoices are made from ADJUST corrections of a
// pool top-up, which put exactly the amounts wanted on the payers' PAYABLE
// accounts without any booking.
#include <grpcpp/grpcpp.h>

#include <functional>
#include <initializer_list>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "tests/billing/billing_ledger_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::billing {
namespace {

namespace iv = labshare::inventory::v1;
using booking::BookingServiceTest;

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";
constexpr char kThird[] = "organizations/third";

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& reason);

class BillingContractTest : public testing::BillingLedgerTest {
 protected:
  const Principal& admin_ = root_;

  // lab's invoice (10000 to owner) and third's (4000 to owner) of January.
  std::pair<v1::Invoice, v1::Invoice> IssueLabAndThird() {
    Owe(kLab, kOwner, 10000);
    Owe(kThird, kOwner, 4000);
    v1::Invoice lab = Issue(kLab);
    return {std::move(lab), Issue(kThird)};
  }

  // An invoice held by a settlement is paid only through its transfers:
  // neither a payment against it nor MarkInvoicePaid (INVOICE_IN_SETTLEMENT).
  void ExpectHeldBySettlement(const v1::Invoice& inv) {
    const v1::PayeeBalance& owed = inv.payees(0);
    ExpectError(billing_->RecordPayment(admin_, Payment(inv.payer_organization(), owed.organization(),
                                                        owed.amount_outstanding(), inv.name()))
                    .status(),
                absl::StatusCode::kFailedPrecondition, "INVOICE_IN_SETTLEMENT");
    v1::MarkInvoicePaidRequest mark;
    mark.set_name(inv.name());
    ExpectError(billing_->MarkInvoicePaid(admin_, mark).status(), absl::StatusCode::kFailedPrecondition,
                "INVOICE_IN_SETTLEMENT");
  }

  // One resource by name through the manager's Get method, as the admin.
  template <typename Resp, typename Req>
  Resp Got(absl::StatusOr<Resp> (BillingManager::*get)(const Principal&, const Req&), const std::string& name) {
    Req r;
    r.set_name(name);
    auto got = (billing_.get()->*get)(admin_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : Resp();
  }
  v1::Invoice GetInvoice(const std::string& name) { return Got(&BillingManager::GetInvoice, name); }
  v1::Settlement GetSettlement(const std::string& name) { return Got(&BillingManager::GetSettlement, name); }

  absl::StatusOr<v1::Settlement> Compute() {
    clock_.Set(clock_.Now() + absl::Seconds(1));  // a new computation, a new name
    v1::ComputeSettlementRequest r;
    r.set_period("2027-01");
    return billing_->ComputeSettlement(admin_, r);
  }

  absl::StatusOr<v1::Payment> PayTransfer(const v1::Settlement& s, int index) {
    v1::RecordPaymentRequest r;
    const v1::SettlementTransfer& t = s.transfers(index);
    r.mutable_payment()->set_payer(t.from_organization());
    r.mutable_payment()->set_payee(t.to_organization());
    *r.mutable_payment()->mutable_amount() = t.amount();
    r.mutable_payment()->set_settlement(s.name());
    r.mutable_payment()->set_transfer_index(index);
    return billing_->RecordPayment(admin_, r);
  }

  static v1::RecordPaymentRequest Payment(const std::string& payer, const std::string& payee,
                                          const labshare::type::v1::Money& amount, const std::string& invoice = "") {
    v1::RecordPaymentRequest r;
    r.mutable_payment()->set_payer(payer);
    r.mutable_payment()->set_payee(payee);
    *r.mutable_payment()->mutable_amount() = amount;
    r.mutable_payment()->set_invoice(invoice);
    return r;
  }

  // Rewrites the stored document `name` ("invoices/x": kind "invoice") as
  // `edit` leaves it, keeping its version: how a document written by an
  // earlier release looks.
  template <typename T>
  void Rewrite(const std::string& kind, const std::string& name, const std::function<void(T&)>& edit) {
    const std::string key = keys::Doc(kind, name.substr(name.rfind('/') + 1));
    auto doc = bstore_->docs().Get(key);
    ASSERT_TRUE(doc.ok() && doc->has_value()) << name;
    T stored;
    ASSERT_TRUE(stored.ParseFromString((*doc)->data));
    edit(stored);
    ASSERT_TRUE(pool_->Command({"HSET", key, "d", stored.SerializeAsString()}).ok());
  }
  // A settlement computed before the settlement life cycle: its invoices
  // do not name it (Invoice.settlement empty).
  void Unlock(const std::string& invoice) {
    Rewrite<v1::Invoice>("invoice", invoice, [](v1::Invoice& inv) { inv.clear_settlement(); });
  }

};

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& reason) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorReason(s), reason) << s;
}

// ================================================================ visibility

// "MEMBER_BILLING_ADMIN ... never sees another organisation's invoices ...
// a filter naming another organisation fails with PERMISSION_DENIED
// (ORGANIZATION_SCOPE)": a payee filter naming someone else's payee is no
// way around it.
TEST_F(BillingContractTest, AMemberNeverListsInvoicesOfOtherOrganisations) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice inv = Issue(kLab);
  v1::ListInvoicesRequest r;
  r.set_payee_organization(kOwner);
  auto listed = billing_->ListInvoices(Member("third"), r);
  ExpectError(listed.status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  r.clear_payee_organization();
  r.set_payer_organization(kLab);
  ExpectError(billing_->ListInvoices(Member("third"), r).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  r.clear_payer_organization();
  listed = billing_->ListInvoices(Member("third"), r);  // narrowed to its own: none
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->invoices_size(), 0);
  // The payee names the payer beside itself; the payer, its own payee.
  r.set_payer_organization(kLab);
  r.set_payee_organization(kOwner);
  for (const char* org : {"owner", "lab"}) {
    listed = billing_->ListInvoices(Member(org), r);
    ASSERT_TRUE(listed.ok()) << org << " " << listed.status();
    ASSERT_EQ(listed->invoices_size(), 1) << org;
    EXPECT_EQ(listed->invoices(0).name(), inv.name());
  }
}

// ================================================================ settlement life cycle

// ComputeSettlement: the invoices it nets are in it (Invoice.settlement) and
// are paid through its transfers (INVOICE_IN_SETTLEMENT otherwise); a new
// computation supersedes a COMPUTED one without paid transfers (both linked)
// and is refused (SETTLEMENT_IN_PROGRESS) once one has paid transfers; the
// last transfer clears it and each invoice is announced PAID.
TEST_F(BillingContractTest, AComputedSettlementHoldsItsInvoicesUntilSupersededOrCleared) {
  const auto [lab, third] = IssueLabAndThird();
  auto first = Compute();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->invoices_size(), 2);
  EXPECT_EQ(GetInvoice(lab.name()).settlement(), first->name());
  EXPECT_EQ(GetInvoice(third.name()).settlement(), first->name());
  ExpectHeldBySettlement(lab);

  auto second = Compute();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->supersedes(), first->name());
  const v1::Settlement old = GetSettlement(first->name());
  EXPECT_EQ(old.state(), v1::Settlement::SUPERSEDED);
  EXPECT_EQ(old.superseded_by(), second->name());
  EXPECT_EQ(GetInvoice(lab.name()).settlement(), second->name());
  ExpectError(PayTransfer(*first, 0).status(), absl::StatusCode::kFailedPrecondition, "SETTLEMENT_SUPERSEDED");

  // lab -> owner 10000, third -> owner 4000 (by payer).
  ASSERT_EQ(second->transfers_size(), 2);
  EXPECT_EQ(second->transfers(0).from_organization(), kLab);
  EXPECT_EQ(second->transfers(0).amount().amount_minor(), 10000);
  EXPECT_EQ(second->transfers(1).from_organization(), kThird);
  EXPECT_EQ(second->transfers(1).amount().amount_minor(), 4000);
  ASSERT_TRUE(PayTransfer(*second, 0).ok());
  ExpectError(Compute().status(), absl::StatusCode::kFailedPrecondition, "SETTLEMENT_IN_PROGRESS");
  EXPECT_EQ(GetSettlement(second->name()).state(), v1::Settlement::COMPUTED);

  ASSERT_TRUE(PayTransfer(*second, 1).ok());
  EXPECT_EQ(GetSettlement(second->name()).state(), v1::Settlement::CLEARED);
  int announced = 0;
  for (const auto& e : Published()) {
    if (e.has_invoice_paid() && e.invoice_paid().paid_by() == v1::InvoicePaid::SETTLEMENT) {
      ++announced;
      EXPECT_EQ(e.invoice_paid().invoice().state(), v1::Invoice::PAID);
      EXPECT_EQ(e.invoice_paid().invoice().settlement(), second->name());
    }
  }
  EXPECT_EQ(announced, 2);
  for (const auto& name : {lab.name(), third.name()}) {
    const v1::Invoice paid = GetInvoice(name);
    EXPECT_EQ(paid.state(), v1::Invoice::PAID);
    EXPECT_EQ(paid.amount_outstanding().amount_minor(), 0);
  }
}

// VoidInvoice: "A COMPUTED settlement containing it becomes SUPERSEDED"; its
// other invoices are then in no settlement and are paid directly.
TEST_F(BillingContractTest, VoidingAnInvoiceSupersedesItsComputedSettlement) {
  Owe(kLab, kOwner, 10000);
  Owe(kThird, kOwner, 4000);
  const v1::Invoice lab = Issue(kLab);
  const v1::Invoice third = Issue(kThird);
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  v1::VoidInvoiceRequest v;
  v.set_name(lab.name());
  v.set_reason("wrong payer contact");
  auto voided = billing_->VoidInvoice(admin_, v);
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(voided->settlement(), "");
  EXPECT_EQ(GetSettlement(s->name()).state(), v1::Settlement::SUPERSEDED);
  EXPECT_EQ(GetInvoice(third.name()).settlement(), "");
  bool announced = false;
  for (const auto& e : Published()) {
    if (e.has_invoice_voided()) {
      ASSERT_EQ(e.invoice_voided().superseded_settlements_size(), 1);
      EXPECT_EQ(e.invoice_voided().superseded_settlements(0), s->name());
      announced = true;
    }
  }
  EXPECT_TRUE(announced);
  ExpectError(PayTransfer(*s, 1).status(), absl::StatusCode::kFailedPrecondition, "SETTLEMENT_SUPERSEDED");
  auto paid = billing_->RecordPayment(admin_, Payment(kThird, kOwner, MakeMoney("CNY", 4000), third.name()));
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(GetInvoice(third.name()).state(), v1::Invoice::PAID);
  v.set_name("invoice-without-collection");
  ExpectError(billing_->VoidInvoice(admin_, v).status(), absl::StatusCode::kInvalidArgument, "INVALID_NAME");
}

// VoidInvoice: a COMPUTED settlement with a paid transfer is not superseded
// (its paid transfers settle its invoices only when it clears):
// SETTLEMENT_IN_PROGRESS, nothing changed; paying the rest clears it.
TEST_F(BillingContractTest, AnInvoiceOfASettlementWithPaidTransfersIsNotVoided) {
  Owe(kLab, kOwner, 10000);
  Owe(kThird, kOwner, 4000);
  const v1::Invoice lab = Issue(kLab);
  const v1::Invoice third = Issue(kThird);
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->transfers_size(), 2);
  ASSERT_TRUE(PayTransfer(*s, 0).ok());
  for (const v1::Invoice& inv : {lab, third}) {
    v1::VoidInvoiceRequest v;
    v.set_name(inv.name());
    v.set_reason("wrong payer contact");
    ExpectError(billing_->VoidInvoice(admin_, v).status(), absl::StatusCode::kFailedPrecondition,
                "SETTLEMENT_IN_PROGRESS");
    EXPECT_EQ(GetInvoice(inv.name()).state(), v1::Invoice::ISSUED);
    EXPECT_EQ(GetInvoice(inv.name()).settlement(), s->name());
  }
  EXPECT_EQ(GetSettlement(s->name()).state(), v1::Settlement::COMPUTED);
  ASSERT_TRUE(PayTransfer(*s, 1).ok());
  EXPECT_EQ(GetSettlement(s->name()).state(), v1::Settlement::CLEARED);
  EXPECT_EQ(GetInvoice(lab.name()).state(), v1::Invoice::PAID);
  EXPECT_EQ(GetInvoice(third.name()).state(), v1::Invoice::PAID);
}

// A settlement computed before the life cycle (its invoices do not name
// it) holds its invoices as a current one does: no direct payment
// (INVOICE_IN_SETTLEMENT), the invoice reads as in it, and voiding one
// supersedes the settlement.
TEST_F(BillingContractTest, ASettlementComputedBeforeTheLifeCycleHoldsItsInvoices) {
  const auto [lab, third] = IssueLabAndThird();
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  Unlock(lab.name());
  Unlock(third.name());
  ExpectHeldBySettlement(lab);
  ExpectHeldBySettlement(third);
  EXPECT_EQ(GetInvoice(lab.name()).state(), v1::Invoice::ISSUED);
  EXPECT_EQ(GetInvoice(lab.name()).settlement(), s->name());  // "The COMPUTED ... settlement it is in"
  v1::ListInvoicesRequest li;
  li.set_payer_organization(kThird);
  auto listed = billing_->ListInvoices(admin_, li);
  ASSERT_TRUE(listed.ok() && listed->invoices_size() == 1) << listed.status();
  EXPECT_EQ(listed->invoices(0).settlement(), s->name());

  v1::VoidInvoiceRequest v;
  v.set_name(third.name());
  v.set_reason("wrong payer contact");
  auto voided = billing_->VoidInvoice(admin_, v);
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(voided->settlement(), "");
  EXPECT_EQ(GetSettlement(s->name()).state(), v1::Settlement::SUPERSEDED);
  ExpectError(PayTransfer(*s, 0).status(), absl::StatusCode::kFailedPrecondition, "SETTLEMENT_SUPERSEDED");
  EXPECT_EQ(GetInvoice(lab.name()).settlement(), "");
  auto paid = billing_->RecordPayment(admin_, Payment(kLab, kOwner, MakeMoney("CNY", 10000), lab.name()));
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(GetInvoice(lab.name()).state(), v1::Invoice::PAID);
}

// RecordPayment: "when every transfer of a settlement is paid the settlement
// becomes CLEARED ... and its invoices PAID" -- the invoices still ISSUED
// in it. One voided or paid directly meanwhile (stored so by an earlier
// release, which did not hold a settlement's invoices) keeps its state and
// is not announced again; the rest are paid and announced once.
TEST_F(BillingContractTest, ClearingPaysOnlyTheInvoicesStillIssuedInTheSettlement) {
  Owe(kOwner, kLab, 3000);
  const auto [lab, third] = IssueLabAndThird();
  const v1::Invoice owner = Issue(kOwner);
  // third pays 1000 of its 4000 before the computation.
  ASSERT_TRUE(billing_->RecordPayment(admin_, Payment(kThird, kOwner, MakeMoney("CNY", 1000), third.name())).ok());
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->invoices_size(), 3);
  ASSERT_EQ(s->transfers_size(), 2);  // lab -> owner 7000, third -> owner 3000
  EXPECT_EQ(s->transfers(1).amount().amount_minor(), 3000);
  for (const auto& name : {lab.name(), third.name(), owner.name()}) Unlock(name);
  // lab's invoice voided and owner's paid directly, as the earlier release
  // let them be (the settlement hides them meanwhile).
  Rewrite<v1::Settlement>("settlement", s->name(), [&](v1::Settlement& x) {
    x.clear_invoices();
    x.add_invoices(third.name());
  });
  clock_.Set(clock_.Now() + absl::Seconds(1));
  v1::VoidInvoiceRequest v;
  v.set_name(lab.name());
  v.set_reason("wrong payer contact");
  ASSERT_TRUE(billing_->VoidInvoice(admin_, v).ok());
  v1::MarkInvoicePaidRequest mark;
  mark.set_name(owner.name());
  ASSERT_TRUE(billing_->MarkInvoicePaid(admin_, mark).ok());
  Rewrite<v1::Settlement>("settlement", s->name(), [&](v1::Settlement& x) { *x.mutable_invoices() = s->invoices(); });
  const v1::Invoice owner_paid = GetInvoice(owner.name());
  ASSERT_EQ(owner_paid.state(), v1::Invoice::PAID);
  const size_t published_before = Published().size();

  ASSERT_TRUE(PayTransfer(*s, 0).ok());
  auto last = PayTransfer(*s, 1);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(GetSettlement(s->name()).state(), v1::Settlement::CLEARED);
  const v1::Invoice lab_after = GetInvoice(lab.name());
  EXPECT_EQ(lab_after.state(), v1::Invoice::VOID);
  EXPECT_EQ(lab_after.settlement(), "");
  EXPECT_EQ(GetInvoice(owner.name()).SerializeAsString(), owner_paid.SerializeAsString());
  const v1::Invoice third_after = GetInvoice(third.name());
  EXPECT_EQ(third_after.state(), v1::Invoice::PAID);
  EXPECT_EQ(third_after.settlement(), s->name());
  EXPECT_EQ(third_after.amount_outstanding().amount_minor(), 0);

  std::vector<std::string> announced, cleared;
  const std::vector<v1::BillingEvent> events = Published();
  for (size_t i = published_before; i < events.size(); ++i) {
    if (events[i].has_invoice_paid()) announced.push_back(events[i].invoice_paid().invoice().name());
    if (events[i].has_settlement_cleared()) {
      for (const auto& name : events[i].settlement_cleared().paid_invoices()) cleared.push_back(name);
    }
  }
  EXPECT_EQ(announced, std::vector<std::string>{third.name()});
  EXPECT_EQ(cleared, std::vector<std::string>{third.name()});
  // The netting is over what the transfers paid for: lab's debt is cleared
  // by its transfer; owner, having paid lab directly as well, is owed 3000
  // back by lab (its payable to lab is 3000 on the debit side).
  auto payable = [&](const std::string& org, const std::string& counterparty) {
    v1::GetAccountBalanceRequest r;
    r.set_name(org + "/accounts/payable");
    r.set_counterparty(counterparty);
    auto got = billing_->GetAccountBalance(admin_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->balance().amount_minor() : -1;
  };
  EXPECT_EQ(payable(kLab, kOwner), 0);
  EXPECT_EQ(payable(kThird, kOwner), 0);
  EXPECT_EQ(payable(kOwner, kLab), -3000);
}

// ================================================================ amounts and currencies

// RecordPayment: "INVALID_FIELD: amount not positive, ..., transfer_index
// without settlement; CURRENCY_MISMATCH"; NOT_FOUND SUBSIDY_POOL_NOT_FOUND.
// Nothing is posted for any of them.
TEST_F(BillingContractTest, PaymentsAreRefusedWithTheListedReasons) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice inv = Issue(kLab);
  ExpectError(billing_->RecordPayment(admin_, Payment(kLab, kOwner, MakeMoney("USD", 10000), inv.name())).status(),
              absl::StatusCode::kInvalidArgument, "CURRENCY_MISMATCH");
  ExpectError(billing_->RecordPayment(admin_, Payment(kLab, kOwner, MakeMoney("CNY", 0), inv.name())).status(),
              absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ExpectError(billing_->RecordPayment(admin_, Payment(kLab, kOwner, MakeMoney("CNY", -5))).status(),
              absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  v1::RecordPaymentRequest indexed = Payment(kLab, kOwner, MakeMoney("CNY", 100));
  indexed.mutable_payment()->set_transfer_index(1);
  ExpectError(billing_->RecordPayment(admin_, indexed).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ExpectError(billing_->RecordPayment(admin_, Payment("subsidyPools/nope", kOwner, MakeMoney("CNY", 100))).status(),
              absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND");
  ExpectError(billing_->RecordPayment(admin_, Payment("subsidyPools/voucher", kOwner, MakeMoney("USD", 100))).status(),
              absl::StatusCode::kInvalidArgument, "CURRENCY_MISMATCH");
  v1::ListPaymentsRequest lp;
  auto payments = billing_->ListPayments(admin_, lp);
  ASSERT_TRUE(payments.ok());
  EXPECT_EQ(payments->payments_size(), 0);
  const v1::Invoice after = GetInvoice(inv.name());
  EXPECT_EQ(after.state(), v1::Invoice::ISSUED);
  EXPECT_EQ(after.amount_outstanding().amount_minor(), 10000);
}

// TopUpSubsidyPool "INVALID_FIELD: amount not positive"; CreateSubsidyPool
// "INVALID_FIELD: ... negative cap" (and a cap in another currency is a bad
// field too: the method lists no other reason).
TEST_F(BillingContractTest, PoolAmountsAreInvalidFields) {
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  for (int64_t amount : {0, -100}) {
    *top.mutable_amount() = MakeMoney("CNY", amount);
    ExpectError(billing_->TopUpSubsidyPool(admin_, top).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  }
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("capped");
  cp.mutable_subsidy_pool()->set_display_name("Capped");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(1000);
  cp.mutable_subsidy_pool()->set_cap_period_kind(v1::YEARLY);
  for (const auto& cap : {MakeMoney("CNY", -1), MakeMoney("USD", 1000)}) {
    *cp.mutable_subsidy_pool()->mutable_cap_per_organization() = cap;
    ExpectError(billing_->CreateSubsidyPool(admin_, cp).status(), absl::StatusCode::kInvalidArgument,
                "INVALID_FIELD");
  }
  // "INVALID_FIELD: ... currency_code empty or not ISO 4217".
  cp.mutable_subsidy_pool()->clear_cap_per_organization();
  cp.mutable_subsidy_pool()->clear_cap_period_kind();
  for (const char* code : {"", "cny", "CNYX"}) {
    cp.mutable_subsidy_pool()->set_currency_code(code);
    ExpectError(billing_->CreateSubsidyPool(admin_, cp).status(), absl::StatusCode::kInvalidArgument,
                "INVALID_FIELD");
  }
  v1::GetSubsidyPoolRequest get;
  get.set_name("subsidyPools/voucher");
  EXPECT_EQ(billing_->GetSubsidyPool(admin_, get)->balance().amount_minor(), 1000000);
}

// SubsidyPool.State "Derived at read time from validity, the service clock
// and balance": SCHEDULED before validity, ACTIVE with a positive balance,
// EXHAUSTED with none, ENDED after validity; ListSubsidyPools filters on it.
// CreateSubsidyPool's id is optional ("generated when empty").
TEST_F(BillingContractTest, PoolStateIsDerivedFromValidityClockAndBalance) {
  const absl::Time now = clock_.Now();
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("later");
  cp.mutable_subsidy_pool()->set_display_name("Later");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(2000);
  *cp.mutable_subsidy_pool()->mutable_validity()->mutable_start_time() = ToProto(now + absl::Hours(24));
  *cp.mutable_subsidy_pool()->mutable_validity()->mutable_end_time() = ToProto(now + absl::Hours(48));
  auto later = billing_->CreateSubsidyPool(admin_, cp);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->state(), v1::SubsidyPool::SCHEDULED);
  EXPECT_EQ(later->currency_code(), "CNY");
  cp.set_subsidy_pool_id("");
  cp.mutable_subsidy_pool()->clear_validity();
  auto unnamed = billing_->CreateSubsidyPool(admin_, cp);
  ASSERT_TRUE(unnamed.ok()) << unnamed.status();
  EXPECT_TRUE(absl::StartsWith(unnamed->name(), "subsidyPools/pool-")) << unnamed->name();
  EXPECT_EQ(unnamed->state(), v1::SubsidyPool::EXHAUSTED);  // within validity, balance zero

  auto state = [&](const std::string& name) {
    v1::GetSubsidyPoolRequest get;
    get.set_name(name);
    auto pool = billing_->GetSubsidyPool(admin_, get);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? pool->state() : v1::SubsidyPool::STATE_UNSPECIFIED;
  };
  EXPECT_EQ(state("subsidyPools/voucher"), v1::SubsidyPool::ACTIVE);
  EXPECT_EQ(state("subsidyPools/later"), v1::SubsidyPool::SCHEDULED);
  EXPECT_EQ(state(unnamed->name()), v1::SubsidyPool::EXHAUSTED);
  clock_.Set(now + absl::Hours(30));
  EXPECT_EQ(state("subsidyPools/later"), v1::SubsidyPool::EXHAUSTED);
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/later");
  *top.mutable_amount() = MakeMoney("CNY", 500);
  auto topped = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(topped.ok()) << topped.status();
  EXPECT_EQ(topped->state(), v1::SubsidyPool::ACTIVE);
  EXPECT_EQ(topped->balance().amount_minor(), 500);
  clock_.Set(now + absl::Hours(48));
  EXPECT_EQ(state("subsidyPools/later"), v1::SubsidyPool::ENDED);
  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/later");
  up.mutable_subsidy_pool()->set_display_name("Later, renamed");
  up.mutable_update_mask()->add_paths("display_name");
  auto updated = billing_->UpdateSubsidyPool(admin_, up);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->state(), v1::SubsidyPool::ENDED);
  EXPECT_EQ(updated->granted_total().amount_minor(), 0);
  EXPECT_EQ(updated->balance().amount_minor(), 500);

  v1::ListSubsidyPoolsRequest lp;
  lp.set_state(v1::SubsidyPool::ENDED);
  auto ended = billing_->ListSubsidyPools(admin_, lp);
  ASSERT_TRUE(ended.ok()) << ended.status();
  ASSERT_EQ(ended->subsidy_pools_size(), 1);
  EXPECT_EQ(ended->subsidy_pools(0).name(), "subsidyPools/later");
  lp.set_state(v1::SubsidyPool::SCHEDULED);
  EXPECT_EQ(billing_->ListSubsidyPools(admin_, lp)->subsidy_pools_size(), 0);
}

// TopUpSubsidyPool and UpdateSubsidyPool are idempotent through request_id
// like every mutation: a retry of a call that succeeded gets its first
// answer, although the etag it carries no longer matches (the call itself
// moved it), and changes nothing twice.
TEST_F(BillingContractTest, APoolCallRetriedAfterItMovedTheEtagGetsTheFirstAnswer) {
  const v1::SubsidyPool before = Pool("subsidyPools/voucher");
  v1::TopUpSubsidyPoolRequest top;
  top.set_name(before.name());
  *top.mutable_amount() = MakeMoney("CNY", 500);
  top.set_etag(before.etag());
  top.set_request_id("top-up-once");
  auto first = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_NE(first->etag(), before.etag());
  auto again = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(Pool(before.name()).balance().amount_minor(), 1000500);

  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name(before.name());
  up.mutable_subsidy_pool()->set_display_name("Voucher, renamed");
  up.mutable_subsidy_pool()->set_etag(first->etag());
  up.mutable_update_mask()->add_paths("display_name");
  up.set_request_id("rename-once");
  auto renamed = billing_->UpdateSubsidyPool(admin_, up);
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  auto renamed_again = billing_->UpdateSubsidyPool(admin_, up);
  ASSERT_TRUE(renamed_again.ok()) << renamed_again.status();
  EXPECT_EQ(renamed_again->SerializeAsString(), renamed->SerializeAsString());
  EXPECT_EQ(Pool(before.name()).etag(), renamed->etag());
  // Without the request_id the stale etag is refused, as documented.
  up.clear_request_id();
  ExpectError(billing_->UpdateSubsidyPool(admin_, up).status(), absl::StatusCode::kAborted, "ETAG_MISMATCH");
}

// ListSubsidyPools: "Ordered by priority then name" -- numerically, negative
// priorities included, also after UpdateSubsidyPool changes one, and
// across pages.
TEST_F(BillingContractTest, PoolsAreListedByPriorityThenName) {
  const std::vector<std::pair<std::string, int>> made = {
      {"minus-one", -1}, {"minus-five-b", -5}, {"minus-five-a", -5}, {"plus-three", 3}, {"minus-twelve", -12},
      {"zero-a", 0}};
  for (const auto& [id, priority] : made) {
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id(id);
    cp.mutable_subsidy_pool()->set_display_name(id);
    cp.mutable_subsidy_pool()->set_currency_code("CNY");
    cp.mutable_subsidy_pool()->set_percentage_bps(1000);
    cp.mutable_subsidy_pool()->set_priority(priority);
    ASSERT_TRUE(billing_->CreateSubsidyPool(admin_, cp).ok()) << id;
  }
  v1::UpdateSubsidyPoolRequest up;  // -12 -> -2
  up.mutable_subsidy_pool()->set_name("subsidyPools/minus-twelve");
  up.mutable_subsidy_pool()->set_priority(-2);
  up.mutable_update_mask()->add_paths("priority");
  ASSERT_TRUE(billing_->UpdateSubsidyPool(admin_, up).ok());
  std::vector<std::string> listed;
  v1::ListSubsidyPoolsRequest lp;
  lp.set_page_size(3);
  do {
    auto page = billing_->ListSubsidyPools(admin_, lp);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& pool : page->subsidy_pools()) listed.push_back(pool.name());
    lp.set_page_token(page->next_page_token());
  } while (!lp.page_token().empty());
  const std::vector<std::string> want = {
      "subsidyPools/minus-five-a", "subsidyPools/minus-five-b", "subsidyPools/minus-twelve",
      "subsidyPools/minus-one",    "subsidyPools/voucher",      "subsidyPools/zero-a",
      "subsidyPools/plus-three"};
  EXPECT_EQ(listed, want);
}

// The voucher pool capped at 10,000.00 a year per organisation, and lab's
// ana's session on tem 09:00-10:00 of day_ used and billed: its charge
// (50000; the voucher pays 5000, lab's cap usage 5000).
class SubsidyReversalTest : public BillingContractTest {
 protected:
  v1::Charge CappedSession() {
    v1::UpdateSubsidyPoolRequest cap;
    cap.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
    *cap.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("CNY", 1000000);
    cap.mutable_subsidy_pool()->set_cap_period_kind(v1::YEARLY);
    cap.mutable_update_mask()->add_paths("cap_per_organization");
    cap.mutable_update_mask()->add_paths("cap_period_kind");
    EXPECT_TRUE(billing_->UpdateSubsidyPool(admin_, cap).ok());
    booking::v1::Booking booking;
    EXPECT_TRUE(Book(absl::Hours(9), absl::Hours(10), &booking).ok());
    Use(booking, ana_);
    return ChargeOf(booking.name());
  }
  int64_t PoolBalance() { return Pool("subsidyPools/voucher").balance().amount_minor(); }
  int64_t LabCapUsed() {
    v1::GetSubsidyAllowanceRequest get;
    get.set_name("subsidyPools/voucher/allowances/lab");
    return billing_->GetSubsidyAllowance(admin_, get)->used().amount_minor();
  }
  int64_t LabOwes() {
    v1::GetAccountBalanceRequest payable;
    payable.set_name("organizations/lab/accounts/payable");
    payable.set_counterparty(kOwner);
    return billing_->GetAccountBalance(admin_, payable)->balance().amount_minor();
  }
  absl::StatusOr<v1::PostCorrectionResponse> Reverse(const std::string& posting) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(posting);
    fix.set_mode(v1::PostCorrectionRequest::REVERSE);
    fix.set_reason("not eligible after all");
    return billing_->PostCorrection(admin_, fix);
  }
};

// PostCorrection REVERSE of a CHARGE posting "also reverses ... each SUBSIDY
// posting of that charge that does not stand reversed already (restoring
// pool balance and cap usage)": a subsidy posting already reversed on its
// own is not reversed a second time (the pool would get back more than it
// granted).
TEST_F(SubsidyReversalTest, ReversingAChargeDoesNotReverseAnAlreadyReversedSubsidyAgain) {
  const v1::Charge charge = CappedSession();
  ASSERT_EQ(charge.amount().amount_minor(), 50000);  // 1 h at 500.00
  ASSERT_EQ(charge.subsidy_total().amount_minor(), 5000);  // 10 %
  EXPECT_EQ(PoolBalance(), 995000);
  EXPECT_EQ(LabCapUsed(), 5000);
  ASSERT_TRUE(Reverse(charge.subsidy_postings(0)).ok());
  EXPECT_EQ(PoolBalance(), 1000000);
  EXPECT_EQ(LabCapUsed(), 0);  // "restoring pool balance and cap usage"
  EXPECT_EQ(LabOwes(), 50000);
  auto reversed = Reverse(charge.posting());
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(reversed->charge().state(), v1::Charge::REVERSED);
  EXPECT_EQ(reversed->related_corrections_size(), 0);
  EXPECT_EQ(PoolBalance(), 1000000);
  EXPECT_EQ(LabCapUsed(), 0);
  EXPECT_EQ(LabOwes(), 0);
}

// "reversing the reversal gives the posting back (a SUBSIDY posting's cap
// usage too), to be reversed again later": the subsidy stands again (pool
// and cap as granted), its reversal now stands reversed (ALREADY_REVERSED),
// and the charge's reversal takes the subsidy with it, so that nobody owes
// anything and the pool and cap are whole. Before, the charge's reversal
// left the reinstated subsidy standing: the pool paid 50.00 towards a
// reversed charge and lab was owed it.
TEST_F(SubsidyReversalTest, ASubsidyGivenBackByReversingItsReversalGoesWithItsCharge) {
  const v1::Charge charge = CappedSession();
  auto reversal = Reverse(charge.subsidy_postings(0));
  ASSERT_TRUE(reversal.ok()) << reversal.status();
  EXPECT_EQ(reversal->charge().state(), v1::Charge::ADJUSTED);
  auto undone = Reverse(reversal->correction().name());
  ASSERT_TRUE(undone.ok()) << undone.status();
  EXPECT_EQ(PoolBalance(), 995000);
  EXPECT_EQ(LabCapUsed(), 5000);
  EXPECT_EQ(LabOwes(), 45000);
  ExpectError(Reverse(reversal->correction().name()).status(), absl::StatusCode::kFailedPrecondition,
              "ALREADY_REVERSED");
  auto reversed = Reverse(charge.posting());
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(reversed->charge().state(), v1::Charge::REVERSED);
  ASSERT_EQ(reversed->related_corrections_size(), 1);
  EXPECT_EQ(reversed->related_corrections(0).corrects(), charge.subsidy_postings(0));
  EXPECT_EQ(PoolBalance(), 1000000);
  EXPECT_EQ(LabCapUsed(), 0);
  EXPECT_EQ(LabOwes(), 0);
  ExpectError(Reverse(charge.subsidy_postings(0)).status(), absl::StatusCode::kFailedPrecondition,
              "ALREADY_REVERSED");
}

// ================================================================ list filters and balances

TEST_F(BillingContractTest, ListFiltersAndBalancesFollowTheContract) {
  // "INVALID_FIELD" for an inverted interval.
  v1::ListPostingsRequest lp;
  *lp.mutable_interval()->mutable_start_time() = ToProto(clock_.Now());
  *lp.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() - absl::Hours(1));
  ExpectError(billing_->ListPostings(admin_, lp).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  v1::ListPaymentsRequest lpay;
  *lpay.mutable_interval() = lp.interval();
  ExpectError(billing_->ListPayments(admin_, lpay).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  // A member's account filter naming another organisation's account.
  v1::ListPostingsRequest by_account;
  by_account.set_account("organizations/owner/accounts/income");
  ExpectError(billing_->ListPostings(Member("lab"), by_account).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  by_account.set_account("organizations/lab/accounts/payable");
  EXPECT_TRUE(billing_->ListPostings(Member("lab"), by_account).ok());

  // ListSettlements: "Settlements with a position of this organisation";
  // a member is narrowed to its own and may not name another.
  Owe(kLab, kOwner, 10000);
  Issue(kLab);
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  // ComputeSettlement: a currency that is not ISO 4217 is INVALID_FIELD
  // (empty is the consortium currency).
  v1::ComputeSettlementRequest cs;
  cs.set_period("2027-01");
  cs.set_currency_code("yuan");
  ExpectError(billing_->ComputeSettlement(admin_, cs).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  v1::ListSettlementsRequest ls;
  ls.set_organization(kThird);
  auto listed = billing_->ListSettlements(admin_, ls);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->settlements_size(), 0);
  ls.set_organization(kLab);
  listed = billing_->ListSettlements(admin_, ls);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->settlements_size(), 1);
  ls.set_organization(kOwner);
  ExpectError(billing_->ListSettlements(Member("lab"), ls).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  ls.clear_organization();
  listed = billing_->ListSettlements(Member("third"), ls);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->settlements_size(), 0);
  listed = billing_->ListSettlements(Member("lab"), ls);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->settlements_size(), 1);
  ASSERT_EQ(listed->settlements(0).positions_size(), 1);  // reduced to its own position
  EXPECT_EQ(listed->settlements(0).positions(0).net().amount_minor(), -10000);

  // ListBalances "Roles: as GetAccountBalance": a member reads its own
  // organisation's accounts, not a pool's (nor its per-owner sub-ledgers).
  v1::ListBalancesRequest lb;
  lb.set_parent("subsidyPools/voucher");
  lb.set_group_by_counterparty(true);
  ExpectError(billing_->ListBalances(Member("lab"), lb).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  auto pool_balances = billing_->ListBalances(admin_, lb);
  ASSERT_TRUE(pool_balances.ok()) << pool_balances.status();
  EXPECT_GT(pool_balances->balances_size(), 0);
  // NOT_FOUND (SUBSIDY_POOL_NOT_FOUND) for a pool that does not exist.
  lb.set_parent("subsidyPools/nope");
  ExpectError(billing_->ListBalances(admin_, lb).status(), absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND");
  v1::GetAccountBalanceRequest gb;
  gb.set_name("subsidyPools/nope/accounts/pool-funds");
  ExpectError(billing_->GetAccountBalance(admin_, gb).status(), absl::StatusCode::kNotFound,
              "SUBSIDY_POOL_NOT_FOUND");
  gb.set_name("subsidyPools/voucher/accounts/pool-funds");
  auto funds = billing_->GetAccountBalance(admin_, gb);
  ASSERT_TRUE(funds.ok()) << funds.status();
  EXPECT_EQ(funds->balance().amount_minor(), 1000000);
}

// ================================================================ inventory unreachable

// CreateSubsidyPool "UNAVAILABLE (INVENTORY_UNAVAILABLE)" when the funder
// cannot be looked up because inventory does not answer.
TEST_F(BillingContractTest, InventoryUnreachableIsInventoryUnavailable) {
  GrpcInventoryReader unreachable(
      grpc::CreateChannel("unix:/nonexistent/labshare-inventory.sock", grpc::InsecureChannelCredentials()));
  BillingManager billing(bstore_.get(), &unreachable, &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                         labshare::testing::TestPageTokens());
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("funded");
  cp.mutable_subsidy_pool()->set_display_name("Funded");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(1000);
  cp.mutable_subsidy_pool()->set_funder_organization(kThird);
  ExpectError(billing.CreateSubsidyPool(admin_, cp).status(), absl::StatusCode::kUnavailable,
              "INVENTORY_UNAVAILABLE");
}

// "NOT_FOUND (ORGANIZATION_NOT_FOUND)" (and SUBSIDY_POOL_NOT_FOUND) where
// the methods list it, for an organisation inventory does not know:
// GetOwnerIncomeReport, GetOrganizationStatement, GetAccountBalance,
// ListBalances, PreviewInvoice, RecordPayment (payer or payee) and
// PostCorrection (an ADJUST entry's account or counterparty); nothing is
// posted. UNAVAILABLE (INVENTORY_UNAVAILABLE) when inventory cannot answer.
TEST_F(BillingContractTest, UnknownOrganisationsAreOrganizationNotFound) {
  GrpcInventoryReader unreachable(
      grpc::CreateChannel("unix:/nonexistent/labshare-inventory.sock", grpc::InsecureChannelCredentials()));
  BillingManager cut_off(bstore_.get(), &unreachable, &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                         labshare::testing::TestPageTokens());
  v1::GetOwnerIncomeReportRequest income;
  *income.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() - absl::Hours(24));
  *income.mutable_interval()->mutable_end_time() = ToProto(clock_.Now());
  v1::GetOrganizationStatementRequest statement;
  *statement.mutable_interval() = income.interval();
  income.set_owner_organization("organizations/nobody");
  statement.set_organization("organizations/nobody");
  ExpectError(billing_->GetOwnerIncomeReport(admin_, income).status(), absl::StatusCode::kNotFound,
              "ORGANIZATION_NOT_FOUND");
  ExpectError(billing_->GetOrganizationStatement(admin_, statement).status(), absl::StatusCode::kNotFound,
              "ORGANIZATION_NOT_FOUND");
  income.set_owner_organization(kOwner);
  statement.set_organization(kOwner);
  EXPECT_TRUE(billing_->GetOwnerIncomeReport(admin_, income).ok());
  EXPECT_TRUE(billing_->GetOrganizationStatement(admin_, statement).ok());
  ExpectError(cut_off.GetOwnerIncomeReport(admin_, income).status(), absl::StatusCode::kUnavailable,
              "INVENTORY_UNAVAILABLE");
  ExpectError(cut_off.GetOrganizationStatement(admin_, statement).status(), absl::StatusCode::kUnavailable,
              "INVENTORY_UNAVAILABLE");

  constexpr char kGhost[] = "organizations/ghost";
  v1::GetAccountBalanceRequest balance;
  balance.set_name(std::string(kGhost) + "/accounts/receivable");
  ExpectError(billing_->GetAccountBalance(admin_, balance).status(), absl::StatusCode::kNotFound,
              "ORGANIZATION_NOT_FOUND");
  v1::ListBalancesRequest balances;
  balances.set_parent(kGhost);
  ExpectError(billing_->ListBalances(admin_, balances).status(), absl::StatusCode::kNotFound,
              "ORGANIZATION_NOT_FOUND");
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization(kGhost);
  preview.set_period("2027-01");
  ExpectError(billing_->PreviewInvoice(admin_, preview).status(), absl::StatusCode::kNotFound,
              "ORGANIZATION_NOT_FOUND");
  preview.set_payer_organization(kLab);
  ExpectError(cut_off.PreviewInvoice(admin_, preview).status(), absl::StatusCode::kUnavailable,
              "INVENTORY_UNAVAILABLE");
  for (const auto& [payer, payee] : {std::pair<std::string, std::string>{kLab, kGhost}, {kGhost, kOwner}}) {
    ExpectError(billing_->RecordPayment(admin_, Payment(payer, payee, MakeMoney("CNY", 100))).status(),
                absl::StatusCode::kNotFound, "ORGANIZATION_NOT_FOUND");
  }
  v1::PostCorrectionRequest fix;
  fix.set_posting(top_up_);
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("booked to the wrong party");
  auto entry = [&](const std::string& account, const std::string& cp, bool debit) {
    v1::Entry* e = fix.add_entries();
    e->set_account(account);
    e->set_counterparty(cp);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", 100);
  };
  entry(std::string(kGhost) + "/accounts/expense", "", true);
  entry(std::string(kGhost) + "/accounts/payable", kOwner, false);
  ExpectError(billing_->PostCorrection(admin_, fix).status(), absl::StatusCode::kNotFound, "ORGANIZATION_NOT_FOUND");
  fix.clear_entries();
  entry("organizations/owner/accounts/receivable", "subsidyPools/nope", true);
  entry("organizations/owner/accounts/income", "", false);
  ExpectError(billing_->PostCorrection(admin_, fix).status(), absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND");
  v1::ListPostingsRequest corrections;
  corrections.set_kind(v1::CORRECTION);
  auto posted = billing_->ListPostings(admin_, corrections);
  ASSERT_TRUE(posted.ok()) << posted.status();
  EXPECT_EQ(posted->postings_size(), 0);
  auto payments = billing_->ListPayments(admin_, v1::ListPaymentsRequest());
  ASSERT_TRUE(payments.ok()) << payments.status();
  EXPECT_EQ(payments->payments_size(), 0);
}

// RecordPayment retried with its request_id answers the recorded payment
// before inventory is asked whether the parties exist: the retry of an
// acknowledged payment succeeds during an inventory outage (it answered
// UNAVAILABLE INVENTORY_UNAVAILABLE), and records nothing more.
TEST_F(BillingContractTest, RecordPaymentRetryIsAnsweredWithoutInventory) {
  GrpcInventoryReader unreachable(
      grpc::CreateChannel("unix:/nonexistent/labshare-inventory.sock", grpc::InsecureChannelCredentials()));
  BillingManager cut_off(bstore_.get(), &unreachable, &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                         labshare::testing::TestPageTokens());
  Owe(kLab, kOwner, 250);  // an open balance to pay (OVERPAYMENT otherwise)
  v1::RecordPaymentRequest pay = Payment(kLab, kOwner, MakeMoney("CNY", 250));
  pay.set_request_id("pay-once");
  auto first = billing_->RecordPayment(admin_, pay);
  ASSERT_TRUE(first.ok()) << first.status();
  auto retry = cut_off.RecordPayment(admin_, pay);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->name(), first->name());
  EXPECT_EQ(retry->posting(), first->posting());
  pay.set_request_id("pay-other");  // a new request still needs inventory
  ExpectError(cut_off.RecordPayment(admin_, pay).status(), absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE");
  auto payments = billing_->ListPayments(admin_, v1::ListPaymentsRequest());
  ASSERT_TRUE(payments.ok()) << payments.status();
  EXPECT_EQ(payments->payments_size(), 1);
}

// ================================================================ owner income report

// GetOwnerIncomeReport: "An instrument owner's income over an interval (by
// posting time), grouped by instrument, mode, payer organisation and fee
// kind" from the owner's ledger accounts (IncomeRow: net credits to INCOME,
// IN_KIND_CONTRIBUTION, INTERNAL_USE, COMPENSATION; corrections counted in
// the interval of their posting). tem: 500.00 per hour for members, billed
// on actual time; the voucher pool pays 10 % of every non-owner part.
class OwnerIncomeReportTest : public BillingContractTest {
 protected:
  booking::v1::Booking Booked(absl::Duration from, absl::Duration to) {
    booking::v1::Booking b;
    EXPECT_TRUE(Book(from, to, &b).ok());
    return b;
  }

  // ana's JOINT_RESEARCH session on tem, 09:00-10:00 of day_, in a new
  // project `id` whose participants bear `shares` (basis points), used and
  // billed: its charge.
  v1::Charge JointResearchCharge(const std::string& id,
                                 std::initializer_list<std::pair<const char*, int>> shares) {
    namespace bk = labshare::booking::v1;
    bk::CreateProjectRequest r;
    r.set_project_id(id);
    r.mutable_project()->set_title("joint research " + id);
    r.mutable_project()->set_cost_share_template(bk::Project::CUSTOM);
    for (const auto& [org, bps] : shares) {
      auto* part = r.mutable_project()->add_participants();
      part->set_organization(org);
      part->set_share_bps(bps);
    }
    *r.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
    *r.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
    auto* budget = r.mutable_project()->add_instrument_budgets();
    budget->set_instrument("instruments/tem");
    *budget->mutable_budget() = ToProto(absl::Hours(10));
    bk::Project project;
    auto s = Call(stub_.get(), &bk::BookingService::Stub::CreateProject, r, &project, BookingServiceTest::admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::CreateBookingRequest jr;
    jr.mutable_booking()->set_instrument("instruments/tem");
    jr.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    jr.mutable_booking()->set_project("projects/" + id);
    *jr.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
    *jr.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
    bk::Booking b;
    s = Call(stub_.get(), &bk::BookingService::Stub::CreateBooking, jr, &b, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) return v1::Charge();
    Use(b, ana_);
    return ChargeOf(b.name());
  }

  // afm leased to lab from day_ + 1 to day_ + 11 days at 3000.00 a day,
  // deposit 1000.00, approved by the owner's staff: the lease's name.
  std::string ApprovedAfmLease() {
    namespace bk = labshare::booking::v1;
    bk::RequestLeaseRequest lr;
    lr.mutable_lease()->set_instrument("instruments/afm");
    *lr.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *lr.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
    bk::Lease lease, out;
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, lr, &lease, ana_).ok());
    bk::ApproveLeaseRequest a;
    a.set_name(lease.name());
    a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
    *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 100000);
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_).ok());
    return lease.name();
  }

  // The owner's staff hands the lease over, takes it back with `damage`
  // (CNY minor units) assessed, closes it: each at the current clock.
  void HandOver(const std::string& lease) {
    namespace bk = labshare::booking::v1;
    bk::RecordHandoverRequest h;
    h.set_name(lease);
    h.set_condition_notes("tip new");
    bk::Lease out;
    auto s = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  void TakeBack(const std::string& lease, int64_t damage) {
    namespace bk = labshare::booking::v1;
    bk::RecordReturnRequest ret;
    ret.set_name(lease);
    ret.set_condition_notes("stage scratched");
    *ret.mutable_damage_amount() = MakeMoney("CNY", damage);
    bk::Lease out;
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
  }
  void CloseLease(const std::string& lease) {
    namespace bk = labshare::booking::v1;
    bk::CloseLeaseRequest close;
    close.set_name(lease);
    bk::Lease out;
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CloseLease, close, &out, staff_).ok());
  }

  // Reverses a charge (with its subsidies) now.
  void Reverse(const v1::Charge& c) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(c.posting());
    fix.set_mode(v1::PostCorrectionRequest::REVERSE);
    fix.set_reason("instrument fault during the session");
    auto reversed = billing_->PostCorrection(admin_, fix);
    ASSERT_TRUE(reversed.ok()) << reversed.status();
  }

  absl::StatusOr<v1::OwnerIncomeReport> Report(absl::Duration from, absl::Duration to, int page_size = 0,
                                               const Principal* who = nullptr) {
    v1::GetOwnerIncomeReportRequest r;
    r.set_owner_organization(kOwner);
    *r.mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_page_size(page_size);
    return billing_->GetOwnerIncomeReport(who != nullptr ? *who : admin_, r);
  }

  struct Want {
    std::string instrument;
    labshare::type::v1::SharingMode mode;
    std::string payer;
    v1::FeeKind fee_kind;
    int32_t charge_count;
    int64_t quantity_milli;
    int64_t service_income, subsidised, in_kind, internal, compensation, corrections;
  };
  static void ExpectRow(const v1::IncomeRow& got, const Want& want, const std::string& currency = "CNY") {
    SCOPED_TRACE(got.ShortDebugString());
    EXPECT_EQ(got.instrument(), want.instrument);
    EXPECT_EQ(got.mode(), want.mode);
    EXPECT_EQ(got.payer_organization(), want.payer);
    EXPECT_EQ(got.fee_kind(), want.fee_kind);
    EXPECT_EQ(got.charge_count(), want.charge_count);
    EXPECT_EQ(got.quantity_milli(), want.quantity_milli);
    const std::pair<const labshare::type::v1::Money*, int64_t> money[] = {
        {&got.service_income(), want.service_income}, {&got.subsidised_amount(), want.subsidised},
        {&got.in_kind_amount(), want.in_kind},        {&got.internal_amount(), want.internal},
        {&got.compensation_amount(), want.compensation}, {&got.corrections_amount(), want.corrections}};
    for (const auto& [m, amount] : money) {
      EXPECT_EQ(m->currency_code(), currency);
      EXPECT_EQ(m->amount_minor(), amount);
    }
  }
  // Totals: key fields empty.
  static Want Totals(int32_t count, int64_t quantity, int64_t income, int64_t subsidised, int64_t in_kind,
                     int64_t internal, int64_t compensation, int64_t corrections) {
    return {"", labshare::type::v1::SHARING_MODE_UNSPECIFIED, "", v1::FEE_KIND_UNSPECIFIED, count, quantity,
            income, subsidised, in_kind, internal, compensation, corrections};
  }
};

// SubsidyPool.etag "Changes on every update, top-up and subsidy": a grant
// and its reversal each move it (as read by GetSubsidyPool and
// ListSubsidyPools), so an etag read before either no longer passes
// UpdateSubsidyPool or TopUpSubsidyPool.
using PoolGrantTest = OwnerIncomeReportTest;
TEST_F(PoolGrantTest, APoolsEtagChangesWithEveryGrantAndReversal) {
  const v1::SubsidyPool before = Pool("subsidyPools/voucher");
  const auto session = Booked(absl::Hours(9), absl::Hours(10));
  Use(session, ana_);
  const v1::Charge charge = ChargeOf(session.name());
  ASSERT_EQ(charge.subsidy_total().amount_minor(), 5000);
  const v1::SubsidyPool granted = Pool(before.name());
  EXPECT_EQ(granted.balance().amount_minor(), before.balance().amount_minor() - 5000);
  EXPECT_NE(granted.etag(), before.etag());
  auto listed = billing_->ListSubsidyPools(admin_, v1::ListSubsidyPoolsRequest());
  ASSERT_TRUE(listed.ok() && listed->subsidy_pools_size() == 1) << listed.status();
  EXPECT_EQ(listed->subsidy_pools(0).etag(), granted.etag());

  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name(before.name());
  up.mutable_subsidy_pool()->set_description("terms reviewed");
  up.mutable_subsidy_pool()->set_etag(before.etag());
  up.mutable_update_mask()->add_paths("description");
  ExpectError(billing_->UpdateSubsidyPool(admin_, up).status(), absl::StatusCode::kAborted, "ETAG_MISMATCH");
  v1::TopUpSubsidyPoolRequest top;
  top.set_name(before.name());
  *top.mutable_amount() = MakeMoney("CNY", 100);
  top.set_etag(before.etag());
  ExpectError(billing_->TopUpSubsidyPool(admin_, top).status(), absl::StatusCode::kAborted, "ETAG_MISMATCH");

  Reverse(charge);
  const v1::SubsidyPool reversed = Pool(before.name());
  EXPECT_EQ(reversed.balance().amount_minor(), before.balance().amount_minor());
  EXPECT_NE(reversed.etag(), granted.etag());
  EXPECT_NE(reversed.etag(), before.etag());
  up.mutable_subsidy_pool()->set_etag(granted.etag());
  ExpectError(billing_->UpdateSubsidyPool(admin_, up).status(), absl::StatusCode::kAborted, "ETAG_MISMATCH");
  up.mutable_subsidy_pool()->set_etag(reversed.etag());
  auto updated = billing_->UpdateSubsidyPool(admin_, up);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_NE(updated->etag(), reversed.etag());
  EXPECT_EQ(Pool(before.name()).etag(), updated->etag());
  top.set_etag(updated->etag());
  auto topped = billing_->TopUpSubsidyPool(admin_, top);
  ASSERT_TRUE(topped.ok()) << topped.status();
  EXPECT_EQ(Pool(before.name()).etag(), topped->etag());
}

constexpr char kTem[] = "instruments/tem";
constexpr char kAfm[] = "instruments/afm";
constexpr char kOutsider[] = "organizations/outsider";

// "a charge of 150000 reversed and re-charged at 50000 within the interval
// nets to 50000": the reversal (posted in the interval) takes the charge and
// its subsidy back out; the row counts one charge. Another currency has no
// rows and zero totals in that currency.
TEST_F(OwnerIncomeReportTest, AChargeReversedAndRechargedInTheIntervalNetsToTheNewCharge) {
  const auto wrong = Booked(absl::Hours(11), absl::Hours(14));
  const auto again = Booked(absl::Hours(15), absl::Hours(16));
  Use(wrong, ana_);
  const v1::Charge first = ChargeOf(wrong.name());
  ASSERT_EQ(first.amount().amount_minor(), 150000);
  ASSERT_EQ(first.subsidy_total().amount_minor(), 15000);
  clock_.Set(day_ + absl::Hours(14) + absl::Minutes(30));
  Reverse(first);
  Use(again, ana_);
  ASSERT_EQ(ChargeOf(again.name()).amount().amount_minor(), 50000);

  auto report = Report(absl::ZeroDuration(), absl::Hours(24));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->owner_organization(), kOwner);
  EXPECT_EQ(report->currency_code(), "CNY");
  ASSERT_EQ(report->rows_size(), 1);
  ExpectRow(report->rows(0), {kTem, labshare::type::v1::ON_SITE, kLab, v1::USAGE, 1, 1000, 50000, 5000, 0, 0, 0,
                              -150000});
  EXPECT_EQ(report->rows(0).unit(), v1::UNIT_HOUR);
  ExpectRow(report->totals(), Totals(1, 1000, 50000, 5000, 0, 0, 0, -150000));

  v1::GetOwnerIncomeReportRequest usd;
  usd.set_owner_organization(kOwner);
  *usd.mutable_interval()->mutable_start_time() = ToProto(day_);
  *usd.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24));
  usd.set_currency_code("USD");
  auto none = billing_->GetOwnerIncomeReport(admin_, usd);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->rows_size(), 0);
  ExpectRow(none->totals(), Totals(0, 0, 0, 0, 0, 0, 0, 0), "USD");
}

// "by posting time": a charge reversed after the interval's end counts in
// full in its own interval, and its reversal (subsidy included, one charge
// less) in the interval where the reversal was posted.
TEST_F(OwnerIncomeReportTest, PostingTimeDecidesTheIntervalOfAReversal) {
  const auto session = Booked(absl::Hours(9), absl::Hours(10));
  Use(session, ana_);
  clock_.Set(day_ + absl::Hours(30));  // the next day
  Reverse(ChargeOf(session.name()));

  auto day0 = Report(absl::ZeroDuration(), absl::Hours(24));
  ASSERT_TRUE(day0.ok()) << day0.status();
  ASSERT_EQ(day0->rows_size(), 1);
  ExpectRow(day0->rows(0), {kTem, labshare::type::v1::ON_SITE, kLab, v1::USAGE, 1, 1000, 50000, 5000, 0, 0, 0, 0});
  ExpectRow(day0->totals(), Totals(1, 1000, 50000, 5000, 0, 0, 0, 0));

  auto day1 = Report(absl::Hours(24), absl::Hours(48));
  ASSERT_TRUE(day1.ok()) << day1.status();
  ASSERT_EQ(day1->rows_size(), 1);
  ExpectRow(day1->rows(0),
            {kTem, labshare::type::v1::ON_SITE, kLab, v1::USAGE, -1, -1000, -50000, -5000, 0, 0, 0, -50000});
  ExpectRow(day1->totals(), Totals(-1, -1000, -50000, -5000, 0, 0, 0, -50000));

  auto both = Report(absl::ZeroDuration(), absl::Hours(48));
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(both->rows_size(), 1);
  ExpectRow(both->rows(0), {kTem, labshare::type::v1::ON_SITE, kLab, v1::USAGE, 0, 0, 0, 0, 0, 0, 0, -50000});
}

// An ADJUST correction counts with the keys of its charge in the interval
// of its posting; one without a charge (here of a pool top-up) has
// instrument empty and fee kind unspecified.
TEST_F(OwnerIncomeReportTest, AnAdjustmentCountsWithItsChargeInTheIntervalOfItsPosting) {
  const auto session = Booked(absl::Hours(9), absl::Hours(11));
  Use(session, ana_);
  const v1::Charge charge = ChargeOf(session.name());
  ASSERT_EQ(charge.amount().amount_minor(), 100000);
  clock_.Set(day_ + absl::Hours(12));
  v1::PostCorrectionRequest fix;  // 200.00 too much
  fix.set_posting(charge.posting());
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("rate card error");
  auto entry = [&](const std::string& account, const std::string& cp, bool debit) {
    v1::Entry* e = fix.add_entries();
    e->set_account(account);
    e->set_counterparty(cp);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", 20000);
  };
  entry("organizations/owner/accounts/income", kLab, true);
  entry("organizations/owner/accounts/receivable", kLab, false);
  entry("organizations/lab/accounts/payable", kOwner, true);
  entry("organizations/lab/accounts/expense", "", false);
  auto adjusted = billing_->PostCorrection(admin_, fix);
  ASSERT_TRUE(adjusted.ok()) << adjusted.status();
  clock_.Set(day_ + absl::Hours(13));
  Owe(kLab, kOwner, 7000);

  auto report = Report(absl::ZeroDuration(), absl::Hours(24));
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->rows_size(), 2);
  ExpectRow(report->rows(0), {"", labshare::type::v1::SHARING_MODE_UNSPECIFIED, kLab, v1::FEE_KIND_UNSPECIFIED, 0, 0,
                              7000, 0, 0, 0, 0, 7000});
  ExpectRow(report->rows(1), {kTem, labshare::type::v1::ON_SITE, kLab, v1::USAGE, 1, 2000, 80000, 10000, 0, 0, 0,
                              -20000});
  ExpectRow(report->totals(), Totals(1, 2000, 87000, 10000, 0, 0, 0, -13000));
  // Before the adjustment was posted: the charge as charged.
  auto morning = Report(absl::ZeroDuration(), absl::Hours(12));
  ASSERT_TRUE(morning.ok()) << morning.status();
  ASSERT_EQ(morning->rows_size(), 1);
  ExpectRow(morning->rows(0), {kTem, labshare::type::v1::ON_SITE, kLab, v1::USAGE, 1, 2000, 100000, 10000, 0, 0, 0,
                               0});
}

// Joint research: "each participant a payer row of its own share"; the
// owner's share is its in-kind contribution (payer: the owner). Every page
// carries the whole report's totals and the pages give the same rows.
TEST_F(OwnerIncomeReportTest, JointResearchParticipantsArePayerRowsOfTheirShares) {
  const v1::Charge charge = JointResearchCharge("proj", {{kOwner, 2000}, {kLab, 5000}, {kOutsider, 3000}});
  ASSERT_EQ(charge.amount().amount_minor(), 50000);
  ASSERT_EQ(charge.payer_organization(), kLab);

  auto whole = Report(absl::ZeroDuration(), absl::Hours(24));
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->rows_size(), 3);
  const auto jrm = labshare::type::v1::JOINT_RESEARCH;
  ExpectRow(whole->rows(0), {kTem, jrm, kLab, v1::USAGE, 1, 1000, 25000, 2500, 0, 0, 0, 0});
  ExpectRow(whole->rows(1), {kTem, jrm, kOutsider, v1::USAGE, 1, 1000, 15000, 1500, 0, 0, 0, 0});
  ExpectRow(whole->rows(2), {kTem, jrm, kOwner, v1::USAGE, 1, 1000, 0, 0, 10000, 0, 0, 0});
  ExpectRow(whole->totals(), Totals(3, 3000, 40000, 4000, 10000, 0, 0, 0));

  v1::GetOwnerIncomeReportRequest paged;
  paged.set_owner_organization(kOwner);
  *paged.mutable_interval()->mutable_start_time() = ToProto(day_);
  *paged.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24));
  paged.set_page_size(1);
  std::vector<std::string> rows;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = billing_->GetOwnerIncomeReport(admin_, paged);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_EQ(page->rows_size(), 1);
    rows.push_back(page->rows(0).SerializeAsString());
    EXPECT_EQ(page->totals().SerializeAsString(), whole->totals().SerializeAsString());
    if (page->next_page_token().empty()) break;
    paged.set_page_token(page->next_page_token());
  }
  ASSERT_EQ(rows.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rows[i], whole->rows(i).SerializeAsString()) << i;
}

// Internal use (the owner's own organisation pays) and damage compensation
// (the deposit applied and the damage beyond it) are kept apart from the
// service income; the optional narrowing by instrument and mode; the roles.
TEST_F(OwnerIncomeReportTest, InternalUseAndDamageCompensationAreKeptApart) {
  namespace bk = labshare::booking::v1;
  const std::string olga = AddOwnerUser();  // internal use of tem: 200.00 per hour
  // afm leased to lab: deposit 1000.00, returned with 1500.00 of damage.
  const std::string lease = ApprovedAfmLease();
  bk::Booking own;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &own, "", "users/olga").ok());
  Use(own, olga);
  ASSERT_EQ(ChargeOf(own.name()).amount().amount_minor(), 20000);

  clock_.Set(day_ + absl::Hours(24));
  HandOver(lease);
  Bill();
  clock_.Set(day_ + absl::Hours(24 * 6));
  TakeBack(lease, 150000);
  CloseLease(lease);
  Bill();

  auto report = Report(absl::ZeroDuration(), absl::Hours(24 * 30));
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->rows_size(), 4);
  const auto lease_mode = labshare::type::v1::LEASE;
  // Six calendar days of rent at 3000.00, 10 % from the pool.
  ExpectRow(report->rows(0), {kAfm, lease_mode, kLab, v1::LEASE_PERIOD, 1, 6000, 1800000, 180000, 0, 0, 0, 0});
  // The deposit applied to the damage: compensation, no charge of its own.
  ExpectRow(report->rows(1), {kAfm, lease_mode, kLab, v1::DEPOSIT, 0, 0, 0, 0, 0, 0, 100000, 0});
  // The damage beyond the deposit.
  ExpectRow(report->rows(2), {kAfm, lease_mode, kLab, v1::DAMAGE, 1, 1000, 0, 0, 0, 0, 50000, 0});
  ExpectRow(report->rows(3), {kTem, labshare::type::v1::ON_SITE, kOwner, v1::USAGE, 1, 1000, 0, 0, 0, 20000, 0, 0});
  ExpectRow(report->totals(), Totals(3, 8000, 1800000, 180000, 0, 20000, 150000, 0));

  v1::GetOwnerIncomeReportRequest narrow;
  narrow.set_owner_organization(kOwner);
  *narrow.mutable_interval()->mutable_start_time() = ToProto(day_);
  *narrow.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  narrow.set_instrument(kTem);
  auto tem = billing_->GetOwnerIncomeReport(admin_, narrow);
  ASSERT_TRUE(tem.ok()) << tem.status();
  ASSERT_EQ(tem->rows_size(), 1);
  EXPECT_EQ(tem->rows(0).SerializeAsString(), report->rows(3).SerializeAsString());
  ExpectRow(tem->totals(), Totals(1, 1000, 0, 0, 0, 20000, 0, 0));
  narrow.clear_instrument();
  narrow.set_mode(lease_mode);
  auto leases = billing_->GetOwnerIncomeReport(admin_, narrow);
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->rows_size(), 3);
  ExpectRow(leases->totals(), Totals(2, 7000, 1800000, 180000, 0, 0, 150000, 0));

  // Roles: the owner's billing admin and staff; another member never.
  const Principal owner_admin = Member("owner");
  const Principal staff{"sam", "owner", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  const Principal lab_admin = Member("lab");
  for (const Principal* who : {&owner_admin, &staff}) {
    auto theirs = Report(absl::ZeroDuration(), absl::Hours(24 * 30), 0, who);
    ASSERT_TRUE(theirs.ok()) << theirs.status();
    EXPECT_EQ(theirs->totals().SerializeAsString(), report->totals().SerializeAsString());
  }
  ExpectError(Report(absl::ZeroDuration(), absl::Hours(24 * 30), 0, &lab_admin).status(),
              absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
}

// ================================================================ contract audit, round 3b
//
// Each test below failed on the code before its fix (see the commit that
// added it).

// ListChargesRequest.payer_organization: "Charges this organisation pays or
// bears a split part of": a joint-research participant finds the charge it
// bears a part of, as the admin and as its own billing admin.
TEST_F(OwnerIncomeReportTest, ThePayerFilterFindsChargesASplitParticipantBearsAPartOf) {
  const v1::Charge charge = JointResearchCharge("pair", {{kLab, 6000}, {kThird, 4000}});
  ASSERT_EQ(charge.payer_organization(), kLab);
  ASSERT_EQ(charge.splits_size(), 2);

  v1::ListChargesRequest byThird;
  byThird.set_payer_organization(kThird);
  for (const Principal& who : {admin_, Member("third")}) {
    auto listed = billing_->ListCharges(who, byThird);
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->charges_size(), 1) << who.user_id;
    EXPECT_EQ(listed->charges(0).name(), charge.name());
  }
  v1::ListChargesRequest byLab;  // the payer itself, as before
  byLab.set_payer_organization(kLab);
  auto listed = billing_->ListCharges(admin_, byLab);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->charges_size(), 1);
  v1::ListChargesRequest byOutsider;  // no part of it
  byOutsider.set_payer_organization(kOutsider);
  listed = billing_->ListCharges(admin_, byOutsider);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->charges_size(), 0);
}

// ListPostings: "INVALID_FIELD: ... account name malformed" (not
// INVALID_NAME, which the method does not list); GetAccountBalance's
// violation names its request field `name`.
TEST_F(BillingContractTest, AMalformedAccountIsAnInvalidFieldOfListPostingsAndNamesTheField) {
  v1::ListPostingsRequest lp;
  lp.set_account("organizations/lab/accounts/nothing");
  auto listed = billing_->ListPostings(admin_, lp);
  ExpectError(listed.status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ASSERT_EQ(FieldViolationsOf(listed.status()).size(), 1u);
  EXPECT_EQ(FieldViolationsOf(listed.status())[0].field, "account");
  v1::GetAccountBalanceRequest get;
  get.set_name("organizations/lab/accounts/pool-funds");
  auto balance = billing_->GetAccountBalance(admin_, get);
  ExpectError(balance.status(), absl::StatusCode::kInvalidArgument, "INVALID_NAME");
  ASSERT_EQ(FieldViolationsOf(balance.status()).size(), 1u);
  EXPECT_EQ(FieldViolationsOf(balance.status())[0].field, "name");
}

// types.proto: PERMISSION_DENIED (ORGANIZATION_SCOPE) is "checked before
// validation": a member naming another organisation is refused whatever
// else is wrong with the request.
TEST_F(BillingContractTest, ScopeIsCheckedBeforeValidation) {
  Owe(kThird, kOwner, 4000);
  const v1::Invoice third = Issue(kThird);
  const Principal lab = Member("lab");
  v1::ListInvoicesRequest li;
  li.set_payer_organization(kThird);
  li.set_period("2027-13");
  ExpectError(billing_->ListInvoices(lab, li).status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  li.clear_payer_organization();  // its own: the period is checked
  ExpectError(billing_->ListInvoices(lab, li).status(), absl::StatusCode::kInvalidArgument, "INVALID_PERIOD");
  v1::ListChargesRequest lc;
  lc.set_payer_organization(kThird);
  lc.set_page_token("not-a-token");
  ExpectError(billing_->ListCharges(lab, lc).status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  lc.clear_payer_organization();
  ExpectError(billing_->ListCharges(lab, lc).status(), absl::StatusCode::kInvalidArgument, "INVALID_PAGE_TOKEN");
  v1::GetInvoiceDocumentRequest doc;
  doc.set_name(third.name());  // format unspecified
  ExpectError(billing_->GetInvoiceDocument(lab, doc).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  ExpectError(billing_->GetInvoiceDocument(Member("third"), doc).status(), absl::StatusCode::kInvalidArgument,
              "INVALID_FIELD");
  // A statement or balances of anything but its own organisation, malformed
  // names included.
  v1::GetOrganizationStatementRequest st;
  st.set_organization("third");
  ExpectError(billing_->GetOrganizationStatement(lab, st).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  ExpectError(billing_->GetOrganizationStatement(admin_, st).status(), absl::StatusCode::kInvalidArgument,
              "INVALID_FIELD");
  v1::ListBalancesRequest lb;
  lb.set_parent("organizations/Third");
  ExpectError(billing_->ListBalances(lab, lb).status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  ExpectError(billing_->ListBalances(admin_, lb).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
}

// File header: "a filter ... naming another organisation fails with
// PERMISSION_DENIED (ORGANIZATION_SCOPE)": ListPayments' payer and payee
// filters too; another organisation is named only beside the member's own.
TEST_F(BillingContractTest, AMembersPaymentFiltersNameAnotherOrganisationOnlyBesideItsOwn) {
  Owe(kLab, kOwner, 10000);
  Owe(kThird, kOwner, 4000);
  ASSERT_TRUE(billing_->RecordPayment(admin_, Payment(kLab, kOwner, MakeMoney("CNY", 1000))).ok());
  ASSERT_TRUE(billing_->RecordPayment(admin_, Payment(kThird, kOwner, MakeMoney("CNY", 400))).ok());
  const Principal lab = Member("lab");
  auto refused = [&](const std::string& payer, const std::string& payee) {
    v1::ListPaymentsRequest r;
    r.set_payer(payer);
    r.set_payee(payee);
    ExpectError(billing_->ListPayments(lab, r).status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  };
  refused(kThird, "");
  refused("", kOwner);
  refused(kThird, kOwner);
  v1::ListPaymentsRequest r;
  r.set_payer(kLab);
  r.set_payee(kOwner);  // beside its own
  auto listed = billing_->ListPayments(lab, r);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->payments_size(), 1);
  EXPECT_EQ(listed->payments(0).payer(), kLab);
  r.clear_payer();
  r.set_organization(kLab);
  listed = billing_->ListPayments(lab, r);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->payments_size(), 1);
  listed = billing_->ListPayments(Member("owner"), v1::ListPaymentsRequest());
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->payments_size(), 2);
}

// ListBalances: "Accounts exist implicitly", account_kinds "Empty = every
// kind of the parent", skip_empty leaves out "accounts ... with no entries":
// an organisation without entries has every account at zero; a future
// as_of_time is INVALID_FIELD even then.
TEST_F(BillingContractTest, ListBalancesListsAccountsThatNeverHadAnEntry) {
  v1::ListBalancesRequest r;
  r.set_parent(kThird);
  auto listed = billing_->ListBalances(admin_, r);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->balances_size(), 11);  // RECEIVABLE .. CASH
  std::string previous;
  for (const auto& b : listed->balances()) {
    EXPECT_TRUE(absl::StartsWith(b.account(), std::string(kThird) + "/accounts/")) << b.account();
    EXPECT_GT(b.account(), previous);
    previous = b.account();
    EXPECT_EQ(b.balance().amount_minor(), 0);
    EXPECT_EQ(b.currency_code(), "CNY");
  }
  r.add_account_kinds(v1::CASH);
  r.add_account_kinds(v1::PAYABLE);
  listed = billing_->ListBalances(Member("third"), r);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->balances_size(), 2);
  EXPECT_EQ(listed->balances(0).account(), std::string(kThird) + "/accounts/cash");
  EXPECT_EQ(listed->balances(1).account(), std::string(kThird) + "/accounts/payable");
  r.set_skip_empty(true);
  listed = billing_->ListBalances(admin_, r);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->balances_size(), 0);
  // The pool: its three accounts, pool-payable at zero (no grant yet).
  v1::ListBalancesRequest pool;
  pool.set_parent("subsidyPools/voucher");
  listed = billing_->ListBalances(admin_, pool);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->balances_size(), 3);
  EXPECT_EQ(listed->balances(1).account(), "subsidyPools/voucher/accounts/pool-funds");
  EXPECT_EQ(listed->balances(1).balance().amount_minor(), 1000000);
  EXPECT_EQ(listed->balances(2).account(), "subsidyPools/voucher/accounts/pool-payable");
  EXPECT_EQ(listed->balances(2).balance().amount_minor(), 0);
  r.set_skip_empty(false);
  *r.mutable_as_of_time() = ToProto(clock_.Now() + absl::Hours(1));
  ExpectError(billing_->ListBalances(admin_, r).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
}

// GetOrganizationStatement: a kind asked for twice is one account, counted
// once.
TEST_F(BillingContractTest, AStatementCountsAnAccountKindAskedForTwiceOnce) {
  const absl::Time from = clock_.Now();
  Owe(kLab, kOwner, 10000);
  v1::GetOrganizationStatementRequest r;
  r.set_organization(kLab);
  *r.mutable_interval()->mutable_start_time() = ToProto(from);
  *r.mutable_interval()->mutable_end_time() = ToProto(from + absl::Hours(1));
  r.add_account_kinds(v1::PAYABLE);
  auto once = billing_->GetOrganizationStatement(admin_, r);
  ASSERT_TRUE(once.ok()) << once.status();
  r.add_account_kinds(v1::PAYABLE);
  auto twice = billing_->GetOrganizationStatement(admin_, r);
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_EQ(once->lines_size(), 1);
  EXPECT_EQ(twice->lines_size(), 1);
  EXPECT_EQ(twice->closing_balance().amount_minor(), -10000);
  EXPECT_EQ(twice->account_kinds_size(), 1);
}

// Resource names: "{collection}/{id}" exactly, with a valid id (INVALID_NAME
// otherwise, never another resource found by its last segment); a stored
// document that cannot be read is CORRUPT_DOCUMENT, on a Get and in a list.
TEST_F(BillingContractTest, ResourceNamesAreParsedStrictlyAndUnreadableDocumentsAreCorrupt) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice inv = Issue(kLab);
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  auto invalid = [&](const absl::Status& status, const std::string& what) {
    SCOPED_TRACE(what);
    ExpectError(status, absl::StatusCode::kInvalidArgument, "INVALID_NAME");
  };
  const std::string inv_id = inv.name().substr(inv.name().rfind('/') + 1);
  const std::string s_id = s->name().substr(s->name().rfind('/') + 1);
  for (const std::string& name : {std::string("invoices/"), "invoices/x/" + inv_id, "invoices/" + inv_id + "/"}) {
    v1::GetInvoiceRequest get;
    get.set_name(name);
    invalid(billing_->GetInvoice(admin_, get).status(), name);
    v1::VoidInvoiceRequest v;
    v.set_name(name);
    v.set_reason("wrong");
    invalid(billing_->VoidInvoice(admin_, v).status(), name);
  }
  for (const std::string& name : {std::string("settlements/"), "settlements/x/" + s_id}) {
    v1::GetSettlementRequest get;
    get.set_name(name);
    invalid(billing_->GetSettlement(admin_, get).status(), name);
  }
  for (const char* name : {"subsidyPools/", "subsidyPools/x/voucher", "subsidyPools/Voucher"}) {
    v1::GetSubsidyPoolRequest get;
    get.set_name(name);
    invalid(billing_->GetSubsidyPool(admin_, get).status(), name);
  }
  v1::ListPostingsRequest lp;
  lp.set_kind(v1::CORRECTION);
  auto postings = billing_->ListPostings(admin_, lp);
  ASSERT_TRUE(postings.ok() && postings->postings_size() == 1) << postings.status();
  v1::GetPostingRequest gp;
  gp.set_name("postings/x/" + postings->postings(0).name().substr(9));
  invalid(billing_->GetPosting(admin_, gp).status(), gp.name());
  v1::GetChargeRequest gc;
  gc.set_name("charges/a/b");
  invalid(billing_->GetCharge(admin_, gc).status(), gc.name());
  v1::GetDepositRequest gd;
  gd.set_name("deposits/x/y");
  invalid(billing_->GetDeposit(admin_, gd).status(), gd.name());

  // A payment stored unreadable: CORRUPT_DOCUMENT from GetPayment and
  // ListPayments, not an empty payment or a shorter list.
  Owe(kThird, kOwner, 4000);
  auto pay = billing_->RecordPayment(admin_, Payment(kThird, kOwner, MakeMoney("CNY", 400)));
  ASSERT_TRUE(pay.ok()) << pay.status();
  v1::GetPaymentRequest get;
  for (const char* name : {"payments/", "payments/a/b"}) {
    get.set_name(name);
    invalid(billing_->GetPayment(admin_, get).status(), name);
  }
  const std::string key = keys::Doc("payment", pay->name().substr(pay->name().rfind('/') + 1));
  ASSERT_TRUE(pool_->Command({"HSET", key, "d", std::string("\x0a\xff", 2)}).ok());
  get.set_name(pay->name());
  ExpectError(billing_->GetPayment(admin_, get).status(), absl::StatusCode::kInternal, "CORRUPT_DOCUMENT");
  ExpectError(billing_->ListPayments(admin_, v1::ListPaymentsRequest()).status(), absl::StatusCode::kInternal,
              "CORRUPT_DOCUMENT");
}

// Invoice.due_time: "issue_time plus the configured payment term".
TEST_F(BillingContractTest, TheDueTimeIsTheConfiguredPaymentTermAfterIssue) {
  BillingManager billing(bstore_.get(), reader_.get(), &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                         labshare::testing::TestPageTokens(), 45);
  Owe(kLab, kOwner, 10000);
  Owe(kThird, kOwner, 4000);
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest r;
  r.set_payer_organization(kLab);
  r.set_period("2027-01");
  auto inv = billing.IssueInvoice(admin_, r);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(FromProto(inv->due_time()), FromProto(inv->issue_time()) + absl::Hours(24 * 45));
  const v1::Invoice third = Issue(kThird);  // the default term: 30 days
  EXPECT_EQ(FromProto(third.due_time()), FromProto(third.issue_time()) + absl::Hours(24 * 30));
}

// A member's settlement: "reduced to the positions, pairs and transfers that
// involve its own organisation", and it "never sees another organisation's
// invoices": its invoices only, the totals over what remains.
TEST_F(BillingContractTest, AMembersSettlementKeepsOnlyItsInvoicesAndTotals) {
  const auto [lab, third] = IssueLabAndThird();
  auto s = Compute();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->invoices_size(), 2);
  EXPECT_EQ(s->gross_total().amount_minor(), 14000);
  EXPECT_EQ(s->transfer_total().amount_minor(), 14000);
  v1::GetSettlementRequest get;
  get.set_name(s->name());
  auto mine = billing_->GetSettlement(Member("lab"), get);
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_EQ(mine->invoices_size(), 1);
  EXPECT_EQ(mine->invoices(0), lab.name());
  ASSERT_EQ(mine->transfers_size(), 1);
  EXPECT_EQ(mine->gross_total().amount_minor(), 10000);
  EXPECT_EQ(mine->transfer_total().amount_minor(), 10000);
  auto listed = billing_->ListSettlements(Member("third"), v1::ListSettlementsRequest());
  ASSERT_TRUE(listed.ok() && listed->settlements_size() == 1) << listed.status();
  ASSERT_EQ(listed->settlements(0).invoices_size(), 1);
  EXPECT_EQ(listed->settlements(0).invoices(0), third.name());
  EXPECT_EQ(listed->settlements(0).gross_total().amount_minor(), 4000);
  EXPECT_EQ(listed->settlements(0).transfer_total().amount_minor(), 4000);
  auto owner = billing_->GetSettlement(Member("owner"), get);  // payee of both
  ASSERT_TRUE(owner.ok()) << owner.status();
  EXPECT_EQ(owner->invoices_size(), 2);
  EXPECT_EQ(owner->gross_total().amount_minor(), 14000);
}

// A lease whose deposit is kept whole for damage, closed a month after its
// return. Deposit: hold_time and settle_time are booking's handover and
// close times (billing consumes the events later), postings the
// application only. The lessee's invoice of the close's month has only the
// DEPOSIT_APPLIED memo line: the owner named by it is a payee (GetInvoice,
// ListInvoices), and with nothing outstanding the invoice is PAID at issue.
TEST_F(OwnerIncomeReportTest, ADepositKeptForDamage) {
  const std::string lease = ApprovedAfmLease();
  const absl::Time handover = day_ + absl::Hours(24);
  clock_.Set(handover);
  HandOver(lease);
  clock_.Set(handover + absl::Hours(2));
  Bill();
  clock_.Set(day_ + absl::Hours(24 * 6));
  TakeBack(lease, 100000);  // the deposit, exactly
  Bill();
  const absl::TimeZone zone = *LoadBillingTimeZone("Asia/Shanghai");
  const std::string returned_in = absl::FormatTime("%Y-%m", clock_.Now(), zone);
  const absl::Time closed = day_ + absl::Hours(24 * 45);
  clock_.Set(closed);
  CloseLease(lease);
  clock_.Set(closed + absl::Hours(3));
  Bill();
  const std::string closed_in = absl::FormatTime("%Y-%m", clock_.Now(), zone);
  ASSERT_NE(returned_in, closed_in);

  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.substr(lease.rfind('/') + 1));
  auto deposit = billing_->GetDeposit(admin_, gd);
  ASSERT_TRUE(deposit.ok()) << deposit.status();
  EXPECT_EQ(deposit->state(), v1::Deposit::APPLIED);
  EXPECT_EQ(FromProto(deposit->hold_time()), handover);
  EXPECT_EQ(FromProto(deposit->settle_time()), closed);
  EXPECT_EQ(deposit->postings_size(), 1);  // the application only, not the hold
  ASSERT_GE(deposit->postings_size(), 1);
  v1::GetPostingRequest gp;
  gp.set_name(deposit->postings(deposit->postings_size() - 1));
  auto applied = billing_->GetPosting(admin_, gp);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->kind(), v1::DEPOSIT_APPLICATION);

  clock_.Set(day_ + absl::Hours(24 * 100));  // both months ended
  v1::IssueInvoiceRequest ir;
  ir.set_payer_organization(kLab);
  ir.set_period(returned_in);
  ASSERT_TRUE(billing_->IssueInvoice(admin_, ir).ok());
  ir.set_period(closed_in);
  auto memo = billing_->IssueInvoice(admin_, ir);
  ASSERT_TRUE(memo.ok()) << memo.status();
  ASSERT_EQ(memo->lines_size(), 1);
  EXPECT_EQ(memo->lines(0).kind(), v1::InvoiceLine::DEPOSIT_APPLIED);
  EXPECT_EQ(memo->lines(0).payee_organization(), kOwner);
  EXPECT_EQ(memo->state(), v1::Invoice::PAID);
  EXPECT_EQ(FromProto(memo->paid_time()), clock_.Now());
  int announced = 0;
  for (const auto& e : Published()) {
    if (e.has_invoice_paid() && e.invoice_paid().invoice().name() == memo->name()) {
      ++announced;
      EXPECT_EQ(e.invoice_paid().invoice().state(), v1::Invoice::PAID);
    }
  }
  EXPECT_EQ(announced, 1);

  const Principal owner = Member("owner");
  v1::GetInvoiceRequest gi;
  gi.set_name(memo->name());
  auto got = billing_->GetInvoice(owner, gi);
  ASSERT_TRUE(got.ok()) << got.status();
  v1::ListInvoicesRequest li;
  li.set_period(closed_in);
  for (const std::string& payee : {std::string(), std::string(kOwner)}) {
    li.set_payee_organization(payee);
    auto listed = billing_->ListInvoices(owner, li);
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->invoices_size(), 1) << payee;
    EXPECT_EQ(listed->invoices(0).name(), memo->name());
  }
  ExpectError(billing_->GetInvoice(Member("third"), gi).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
}

}  // namespace
}  // namespace labshare::billing
