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
  v1::Invoice GetInvoice(const std::string& name) {
    v1::GetInvoiceRequest g;
    g.set_name(name);
    auto inv = billing_->GetInvoice(root_, g);
    EXPECT_TRUE(inv.ok()) << inv.status();
    return inv.ok() ? *inv : v1::Invoice();
  }

  v1::Posting GetPosting(const std::string& name) {
    v1::GetPostingRequest g;
    g.set_name(name);
    auto posting = billing_->GetPosting(root_, g);
    EXPECT_TRUE(posting.ok()) << posting.status();
    return posting.ok() ? *posting : v1::Posting();
  }

  // PostCorrection REVERSE of `posting` by the consortium admin.
  absl::StatusOr<v1::PostCorrectionResponse> Reverse(const std::string& posting, const std::string& why) {
    v1::PostCorrectionRequest rev;
    rev.set_posting(posting);
    rev.set_mode(v1::PostCorrectionRequest::REVERSE);
    rev.set_reason(why);
    return billing_->PostCorrection(root_, rev);
  }

  // The balance of `org`'s account `kind` in its sub-ledger of `counterparty`.
  int64_t SubLedger(const std::string& org, const std::string& kind, const std::string& counterparty) {
    v1::GetAccountBalanceRequest r;
    r.set_name(org + "/accounts/" + kind);
    r.set_counterparty(counterparty);
    auto got = billing_->GetAccountBalance(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->balance().amount_minor() : -1;
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
  Owe(kLab, kOwner, 10000);
  Owe(kOwner, kLab, 3000);
  Issue(kLab);
  Issue(kOwner);
  v1::ComputeSettlementRequest cs;
  cs.set_period("2027-01");
  auto settlement = billing_->ComputeSettlement(root_, cs);
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
// DEPOSIT_LODGED as the hold left it; an ADJUST of it is still taken.
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

}  // namespace
}  // namespace labshare::billing
