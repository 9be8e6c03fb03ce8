// What the last billing review left (README, "Known limits"), held to
// billing.proto and types.proto: an invoice issued PAID because nothing was
// outstanding can be voided; a member's settlement gross_total counts pairs
// that net to zero; an open-balance payment of a busy pair is not refused
// because charges kept moving the balance; GetAccountBalance and
// ListPostings check the organisation scope before the account name's form;
// a payee's refund leaves the ledger as MarkInvoicePaid's does.
//
// Runs on the payments fixture (billing in process, real Redis, amounts
// owed put on the ledger by ADJUST corrections).
#include <atomic>
#include <map>
#include <thread>

#include "tests/billing/billing_payments_fixture.h"

namespace labshare::billing {
namespace {

class BillingLeftoversTest : public BillingPaymentsContractTest {
 protected:
  static Principal Member(const std::string& org) {
    return Principal{"member-of-" + org, org, {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  }

  absl::StatusOr<v1::Invoice> Void(const std::string& name) {
    v1::VoidInvoiceRequest r;
    r.set_name(name);
    r.set_reason("issued by mistake");
    r.set_request_id("void-" + name.substr(name.rfind('/') + 1));
    return billing_->VoidInvoice(admin_, r);
  }

  // Lab's invoice of February 2027, which owes the owner `amount` (posted
  // on 10 February; the clock moves to March).
  absl::StatusOr<v1::Invoice> IssueFebruary(int64_t amount) {
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 10), absl::UTCTimeZone()));
    Owe(kLab, kOwner, amount);
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 3, 2), absl::UTCTimeZone()));
    v1::IssueInvoiceRequest r;
    r.set_payer_organization(kLab);
    r.set_period("2027-02");
    return billing_->IssueInvoice(admin_, r);
  }

  // The type of the last event billing published.
  v1::BillingEvent::PayloadCase LastEvent() {
    auto raw = pool_->Command({"XREVRANGE", keys::Outbox(), "+", "-", "COUNT", "1"});
    v1::BillingEvent e;
    EXPECT_TRUE(raw.ok() && raw->elements.size() == 1);
    if (raw.ok() && raw->elements.size() == 1) {
      EXPECT_TRUE(e.ParseFromString(raw->elements[0].elements[1].elements[3].str));
    }
    return e.payload_case();
  }
};

// ================================================================ 1. voiding an invoice issued PAID

// VoidInvoice: an invoice issued PAID because nothing was outstanding (its
// lines net to zero for its payee) was never paid by anyone; voiding it
// (issued by mistake) is allowed: VOID, announced, its lines on the next
// issue, which replaces it. Retried with its request_id it answers the same.
// An invoice paid by payments stays INVOICE_ALREADY_PAID.
TEST_F(BillingLeftoversTest, AnInvoiceIssuedPaidWithNothingOutstandingIsVoided) {
  Owe(kLab, kOwner, 2500);
  Owe(kLab, kOwner, -2500);
  const v1::Invoice zero = IssueJanuary(kLab);
  ASSERT_EQ(zero.state(), v1::Invoice::PAID);
  ASSERT_EQ(zero.lines_size(), 2);
  ASSERT_TRUE(zero.payments().empty());

  auto voided = Void(zero.name());
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(voided->state(), v1::Invoice::VOID);
  EXPECT_EQ(voided->void_reason(), "issued by mistake");
  EXPECT_EQ(LastEvent(), v1::BillingEvent::kInvoiceVoided);
  auto again = Void(zero.name());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->etag(), voided->etag());

  // Its lines return: the re-issue carries them and replaces it.
  const v1::Invoice reissued = IssueJanuary(kLab);
  EXPECT_EQ(reissued.lines_size(), 2);
  EXPECT_EQ(reissued.replaces(), zero.name());
  EXPECT_EQ(reissued.state(), v1::Invoice::PAID);

  // Paid by a payment: never voided.
  auto owed = IssueFebruary(700);
  ASSERT_TRUE(owed.ok()) << owed.status();
  ASSERT_TRUE(Pay(kLab, kOwner, 700, owed->name()).ok());
  ExpectError(Void(owed->name()).status(), absl::StatusCode::kFailedPrecondition, "INVOICE_ALREADY_PAID");
}

// ================================================================ 2. a member's gross_total

// billing.proto: a member's settlement has "gross_total ... summing what
// remains (its pairs' gross amounts)". Lab and the owner owe each other
// 10000: their pair nets to zero (no PairBalance) but its gross is 20000,
// all of the settlement's.
TEST_F(BillingLeftoversTest, AMembersGrossTotalCountsAPairThatNetsToZero) {
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 10000);
  IssueJanuary(kLab);
  IssueJanuary(kOwner);
  auto s = ComputeJanuary();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->gross_total().amount_minor(), 20000);
  EXPECT_EQ(s->pair_balances_size(), 0);
  for (const char* org : {"lab", "owner"}) {
    v1::GetSettlementRequest get;
    get.set_name(s->name());
    auto mine = billing_->GetSettlement(Member(org), get);
    ASSERT_TRUE(mine.ok()) << mine.status();
    EXPECT_EQ(mine->gross_total().amount_minor(), 20000) << org;
    EXPECT_EQ(mine->transfer_total().amount_minor(), 0) << org;
  }
}

// ================================================================ 3. a busy pair

// An open-balance payment is at most what the payer owes, checked in the
// step that posts it. Charges to the same pair posted all the while (each
// raising what lab owes) never make it answer CONCURRENT_MODIFICATION:
// every payment is recorded, and the ledger holds every charge and payment.
TEST_F(BillingLeftoversTest, ChargesToABusyPairNeverRefuseAnOpenBalancePayment) {
  Owe(kLab, kOwner, 1000);
  const std::string payable = absl::StrCat(kLab, "/accounts/payable|", kOwner, "|CNY");
  const std::string receivable = absl::StrCat(kOwner, "/accounts/receivable|", kLab, "|CNY");
  std::atomic<bool> paying{true};
  std::atomic<int64_t> charged{0};
  auto charge = [&] {  // one charge of 1 per step, as the charge step moves the pair's balances
    while (paying) {
      LedgerStep step;
      step.incrs = {{keys::Balances(), payable, -1}, {keys::Balances(), receivable, 1}};
      auto applied = bstore_->Apply(step);
      ASSERT_TRUE(applied.ok()) << applied.status();
      ++charged;
    }
  };
  std::vector<std::thread> chargers;
  for (int i = 0; i < 2; ++i) chargers.emplace_back(charge);
  std::vector<absl::Status> paid;
  for (int i = 0; i < 40; ++i) paid.push_back(Pay(kLab, kOwner, 10).status());
  paying = false;
  for (auto& t : chargers) t.join();
  int recorded = 0;
  for (const auto& s : paid) {
    EXPECT_TRUE(s.ok()) << s;
    recorded += s.ok() ? 1 : 0;
  }
  EXPECT_EQ(recorded, 40);
  EXPECT_EQ(Balance(absl::StrCat(kLab, "/accounts/payable"), kOwner), -1000 - charged + 10 * recorded);
  EXPECT_EQ(Balance(absl::StrCat(kOwner, "/accounts/receivable"), kLab), 1000 + charged - 10 * recorded);
  EXPECT_EQ(PaymentCount(), recorded);
}

// ================================================================ 4. scope before validation

// types.proto: ORGANIZATION_SCOPE is "checked before validation".
// GetAccountBalance and ListPostings refuse a member's account name of
// another organisation (or of nobody) before its form is checked; its own
// malformed name is still INVALID_NAME / INVALID_FIELD, as for the admin.
TEST_F(BillingLeftoversTest, AccountReadsCheckTheScopeBeforeTheNamesForm) {
  const Principal lab = Member("lab");
  for (const char* other : {"organizations/owner/accounts/nothing", "organizations/owner/accounts/pool-funds",
                            "nonsense", "subsidyPools/voucher/accounts/nothing"}) {
    v1::GetAccountBalanceRequest get;
    get.set_name(other);
    ExpectError(billing_->GetAccountBalance(lab, get).status(), absl::StatusCode::kPermissionDenied,
                "ORGANIZATION_SCOPE");
    ExpectError(billing_->GetAccountBalance(admin_, get).status(), absl::StatusCode::kInvalidArgument,
                "INVALID_NAME");
    v1::ListPostingsRequest list;
    list.set_account(other);
    ExpectError(billing_->ListPostings(lab, list).status(), absl::StatusCode::kPermissionDenied,
                "ORGANIZATION_SCOPE");
    ExpectError(billing_->ListPostings(admin_, list).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  }
  v1::GetAccountBalanceRequest own;
  own.set_name("organizations/lab/accounts/nothing");
  ExpectError(billing_->GetAccountBalance(lab, own).status(), absl::StatusCode::kInvalidArgument, "INVALID_NAME");
  v1::ListPostingsRequest own_list;
  own_list.set_account("organizations/lab/accounts/nothing");
  ExpectError(billing_->ListPostings(lab, own_list).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  own.set_name("organizations/lab/accounts/payable");
  EXPECT_TRUE(billing_->GetAccountBalance(lab, own).ok());
}

// ================================================================ 5. a payee's refund

// The owner owes lab 3000 back on lab's invoice. Refunded by RecordPayment
// (January) and by MarkInvoicePaid (February), the four accounts between
// them move alike: both post the contract's one payment pattern (payer
// O -> payee P), so each leaves the same balances behind.
TEST_F(BillingLeftoversTest, ARefundMovesTheLedgerAsMarkInvoicePaidDoes) {
  const std::vector<std::pair<std::string, std::string>> accounts = {
      {absl::StrCat(kLab, "/accounts/payable"), kOwner},
      {absl::StrCat(kLab, "/accounts/receivable"), kOwner},
      {absl::StrCat(kOwner, "/accounts/payable"), kLab},
      {absl::StrCat(kOwner, "/accounts/receivable"), kLab}};
  auto balances = [&] {
    std::map<std::string, int64_t> out;
    for (const auto& [account, counterparty] : accounts) out[account] = Balance(account, counterparty);
    return out;
  };
  Owe(kLab, kOwner, -3000);
  const v1::Invoice jan = IssueJanuary(kLab);
  ASSERT_TRUE(Pay(kOwner, kLab, 3000, jan.name()).ok());
  const std::map<std::string, int64_t> after_payment = balances();

  auto inv = IssueFebruary(-3000);
  ASSERT_TRUE(inv.ok()) << inv.status();
  v1::MarkInvoicePaidRequest mark;
  mark.set_name(inv->name());
  ASSERT_TRUE(billing_->MarkInvoicePaid(admin_, mark).ok());
  for (const auto& [account, balance] : balances()) {
    EXPECT_EQ(balance, 2 * after_payment.at(account)) << account;
  }
}

}  // namespace
}  // namespace labshare::billing
