// Reads and request checks against the comments of billing.proto (third
// contract audit): ListCharges refuses malformed name filters after the
// scope check; GetOwnerIncomeReport checks the scope before the owner's form
// and GetAccountBalance a future as_of_time before the owner's existence;
// ListBalances grouped by counterparty has a row for the entries naming no
// counterparty that holds only those; a currency that is not on ISO 4217's
// list ("RMB") is INVALID_FIELD where the contract says "not ISO 4217".
//
// The fixture (tests/billing/billing_payments_fixture.h) runs billing in
// process over the booking fixture (real Redis, fake clock); amounts are put
// on the ledger by ADJUST corrections of the pool's top-up.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "tests/billing/billing_payments_fixture.h"

namespace labshare::billing {
namespace {

const Principal kLabAdmin{"member-of-lab", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};

// ListCharges: "INVALID_FIELD: inverted interval, bad name": a payer, owner,
// instrument or reference filter not in its form is refused (it would match
// nothing and answer as if there were no charges); a member naming another
// organisation is ORGANIZATION_SCOPE first, whatever else is wrong.
TEST_F(BillingPaymentsContractTest, ListChargesRefusesMalformedNameFiltersAfterTheScope) {
  auto list = [&](const Principal& who, const std::function<void(v1::ListChargesRequest&)>& set) {
    v1::ListChargesRequest r;
    set(r);
    return billing_->ListCharges(who, r).status();
  };
  using R = v1::ListChargesRequest;
  const std::vector<std::pair<std::string, std::function<void(R&)>>> bad = {
      {"payer_organization", [](R& r) { r.set_payer_organization("lab"); }},
      {"payer_organization", [](R& r) { r.set_payer_organization("organizations/"); }},
      {"owner_organization", [](R& r) { r.set_owner_organization("organizations/Owner"); }},
      {"owner_organization", [](R& r) { r.set_owner_organization("subsidyPools/voucher"); }},
      {"instrument", [](R& r) { r.set_instrument("tem"); }},
      {"instrument", [](R& r) { r.set_instrument("instruments/tem/x"); }},
      {"reference", [](R& r) { r.set_reference("bookings"); }},
      {"reference", [](R& r) { r.set_reference("orders/o1"); }},
      {"reference", [](R& r) { r.set_reference("leases/../x"); }},
  };
  for (const auto& [field, set] : bad) {
    const absl::Status s = list(admin_, set);
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(s.message(), field)) << s;
  }
  // Every form the contract names is accepted.
  for (const char* ref : {"bookings/b1", "leases/l1", "serviceOrders/s1", "projects/p1"}) {
    EXPECT_TRUE(list(admin_, [&](R& r) { r.set_reference(ref); }).ok()) << ref;
  }
  EXPECT_TRUE(list(admin_, [](R& r) {
                r.set_payer_organization(kLab);
                r.set_owner_organization(kOwner);
                r.set_instrument("instruments/tem");
              }).ok());
  // A member: its own payer with a bad instrument is INVALID_FIELD; another
  // organisation (also a malformed name) is ORGANIZATION_SCOPE first.
  ExpectError(list(kLabAdmin,
                   [](R& r) {
                     r.set_payer_organization(kLab);
                     r.set_instrument("tem");
                   }),
              absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ExpectError(list(kLabAdmin,
                   [](R& r) {
                     r.set_payer_organization(kOwner);
                     r.set_reference("bookings");
                   }),
              absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  ExpectError(list(kLabAdmin, [](R& r) { r.set_owner_organization("owner"); }), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
}

// ListInvoices, ListPostings and ListSettlements refuse an organisation
// filter not of the form "organizations/{id}" as ListCharges does (they
// answered an empty page, as if there were nothing), after the scope: a
// member's malformed filter naming no organisation of its own is
// ORGANIZATION_SCOPE first.
TEST_F(BillingPaymentsContractTest, InvoicePostingAndSettlementListsRefuseMalformedOrganizationFilters) {
  for (const char* bad : {"lab", "organizations/", "widgets/x", "organizations/lab/x"}) {
    SCOPED_TRACE(bad);
    v1::ListInvoicesRequest payer;
    payer.set_payer_organization(bad);
    absl::Status s = billing_->ListInvoices(admin_, payer).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(s.message(), "payer_organization")) << s;
    v1::ListInvoicesRequest payee;
    payee.set_payee_organization(bad);
    s = billing_->ListInvoices(admin_, payee).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(s.message(), "payee_organization")) << s;
    // A member naming itself as payer and a malformed payee: past the scope.
    payee.set_payer_organization(kLab);
    ExpectError(billing_->ListInvoices(kLabAdmin, payee).status(), absl::StatusCode::kInvalidArgument,
                "INVALID_FIELD");

    v1::ListPostingsRequest postings;
    postings.set_organization(bad);
    s = billing_->ListPostings(admin_, postings).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(s.message(), "organization")) << s;
    ExpectError(billing_->ListPostings(kLabAdmin, postings).status(), absl::StatusCode::kPermissionDenied,
                "ORGANIZATION_SCOPE");

    v1::ListSettlementsRequest settlements;
    settlements.set_organization(bad);
    s = billing_->ListSettlements(admin_, settlements).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(s.message(), "organization")) << s;
    ExpectError(billing_->ListSettlements(kLabAdmin, settlements).status(), absl::StatusCode::kPermissionDenied,
                "ORGANIZATION_SCOPE");
  }
  // Well-formed filters, also of an organisation with nothing, are answered.
  v1::ListInvoicesRequest invoices;
  invoices.set_payer_organization(kLab);
  invoices.set_payee_organization("organizations/nobody");
  EXPECT_TRUE(billing_->ListInvoices(admin_, invoices).ok());
  v1::ListPostingsRequest postings;
  postings.set_organization(kLab);
  EXPECT_TRUE(billing_->ListPostings(admin_, postings).ok());
  EXPECT_TRUE(billing_->ListPostings(kLabAdmin, postings).ok());
  v1::ListSettlementsRequest settlements;
  settlements.set_organization("organizations/nobody");
  EXPECT_TRUE(billing_->ListSettlements(admin_, settlements).ok());
}

// types.proto: permission is checked before validation. A member asking for
// another owner's income report, its name malformed or not, is
// ORGANIZATION_SCOPE (as GetOrganizationStatement answers); an admin's
// malformed owner is INVALID_FIELD.
TEST_F(BillingPaymentsContractTest, OwnerIncomeReportChecksTheScopeBeforeTheOwnersForm) {
  v1::GetOwnerIncomeReportRequest r;
  *r.mutable_interval()->mutable_start_time() = ToProto(clock_.Now());
  *r.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(24));
  for (const char* owner : {"owner", "organizations/", "organizations/owner"}) {
    r.set_owner_organization(owner);
    ExpectError(billing_->GetOwnerIncomeReport(kLabAdmin, r).status(), absl::StatusCode::kPermissionDenied,
                "ORGANIZATION_SCOPE");
  }
  r.set_owner_organization("owner");
  ExpectError(billing_->GetOwnerIncomeReport(admin_, r).status(), absl::StatusCode::kInvalidArgument,
              "INVALID_FIELD");
  v1::GetOrganizationStatementRequest st;
  st.set_organization("owner");
  *st.mutable_interval() = r.interval();
  ExpectError(billing_->GetOrganizationStatement(kLabAdmin, st).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  r.set_owner_organization(kLab);
  EXPECT_TRUE(billing_->GetOwnerIncomeReport(kLabAdmin, r).ok());
}

// GetAccountBalance validates the request (a future as_of_time) before it
// asks whether the owner exists, as ListBalances does: INVALID_FIELD, not
// ORGANIZATION_NOT_FOUND.
TEST_F(BillingPaymentsContractTest, AccountBalanceRefusesAFutureTimeBeforeLookingForTheOwner) {
  v1::GetAccountBalanceRequest r;
  r.set_name("organizations/ghost/accounts/payable");
  *r.mutable_as_of_time() = ToProto(clock_.Now() + absl::Hours(1));
  const absl::Status future = billing_->GetAccountBalance(admin_, r).status();
  ExpectError(future, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(future.message(), "as_of_time")) << future;
  v1::ListBalancesRequest list;
  list.set_parent("organizations/ghost");
  *list.mutable_as_of_time() = r.as_of_time();
  ExpectError(billing_->ListBalances(admin_, list).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  // The time allowed, the owner is looked for.
  *r.mutable_as_of_time() = ToProto(clock_.Now());
  ExpectError(billing_->GetAccountBalance(admin_, r).status(), absl::StatusCode::kNotFound,
              "ORGANIZATION_NOT_FOUND");
}

// ListBalancesRequest.group_by_counterparty: "one balance per account and
// counterparty". lab's EXPENSE has 100.00 with the owner as counterparty and
// 25.00 naming none: two rows, 25.00 and 100.00, adding up to the account's
// 125.00 (the row of counterparty "" held every entry before: 125.00).
TEST_F(BillingPaymentsContractTest, GroupedBalancesCountEachEntryInOneRowOnly) {
  Adjust({{std::string(kLab) + "/accounts/expense", kOwner, 10000},
          {std::string(kLab) + "/accounts/expense", "", 2500},
          {std::string(kLab) + "/accounts/payable", kOwner, -12500},
          {std::string(kOwner) + "/accounts/receivable", kLab, 12500},
          {std::string(kOwner) + "/accounts/income", kLab, -12500}});
  v1::ListBalancesRequest r;
  r.set_parent(kLab);
  r.add_account_kinds(v1::EXPENSE);
  r.set_group_by_counterparty(true);
  auto grouped = billing_->ListBalances(admin_, r);
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  ASSERT_EQ(grouped->balances_size(), 2);
  const std::string expense = std::string(kLab) + "/accounts/expense";
  EXPECT_EQ(grouped->balances(0).account(), expense);
  EXPECT_EQ(grouped->balances(0).counterparty(), "");
  EXPECT_EQ(grouped->balances(0).debit_total().amount_minor(), 2500);
  EXPECT_EQ(grouped->balances(0).credit_total().amount_minor(), 0);
  EXPECT_EQ(grouped->balances(0).balance().amount_minor(), 2500);
  EXPECT_EQ(grouped->balances(1).account(), expense);
  EXPECT_EQ(grouped->balances(1).counterparty(), kOwner);
  EXPECT_EQ(grouped->balances(1).balance().amount_minor(), 10000);
  // Ungrouped: one row, the whole account; GetAccountBalance without a
  // counterparty answers the same.
  r.set_group_by_counterparty(false);
  auto whole = billing_->ListBalances(admin_, r);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->balances_size(), 1);
  EXPECT_EQ(whole->balances(0).counterparty(), "");
  EXPECT_EQ(whole->balances(0).balance().amount_minor(), 12500);
  v1::GetAccountBalanceRequest get;
  get.set_name(expense);
  auto got = billing_->GetAccountBalance(admin_, get);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->balance().amount_minor(), 12500);
  // Every account of lab grouped: each entry in one row, so the rows'
  // debits equal their credits as the postings' do.
  r.clear_account_kinds();
  r.set_group_by_counterparty(true);
  r.set_skip_empty(true);
  auto rows = billing_->ListBalances(admin_, r);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->balances_size(), 3);  // expense "", expense owner, payable owner
  int64_t debits = 0, credits = 0;
  for (const auto& b : rows->balances()) {
    debits += b.debit_total().amount_minor();
    credits += b.credit_total().amount_minor();
  }
  EXPECT_EQ(debits, 12500);
  EXPECT_EQ(credits, 12500);
}

// "currency_code not ISO 4217": a code of the right shape that is not on
// ISO 4217's list ("RMB" is not; CNY is) is INVALID_FIELD for a new pool, a
// preview, an issue and a settlement, instead of a pool in no currency or a
// draft of nothing (NOTHING_TO_INVOICE, NOTHING_TO_SETTLE).
TEST_F(BillingPaymentsContractTest, ACurrencyNotOnTheIso4217ListIsAnInvalidField) {
  EXPECT_TRUE(IsIso4217Code("CNY"));
  EXPECT_TRUE(IsIso4217Code("USD"));
  EXPECT_TRUE(IsIso4217Code("XOF"));
  EXPECT_TRUE(IsIso4217Code("ZWG"));
  EXPECT_FALSE(IsIso4217Code("RMB"));
  EXPECT_FALSE(IsIso4217Code("ABC"));
  EXPECT_FALSE(IsIso4217Code("cny"));
  EXPECT_FALSE(IsIso4217Code("CN"));
  EXPECT_FALSE(IsIso4217Code(""));

  Owe(kLab, kOwner, 10000);
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::CreateSubsidyPoolRequest create;
  create.set_subsidy_pool_id("yuan");
  create.mutable_subsidy_pool()->set_display_name("Yuan");
  create.mutable_subsidy_pool()->set_currency_code("RMB");
  create.mutable_subsidy_pool()->set_percentage_bps(1000);
  const absl::Status pool = billing_->CreateSubsidyPool(admin_, create).status();
  ExpectError(pool, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(pool.message(), "currency_code")) << pool;
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization(kLab);
  preview.set_period("2027-01");
  preview.set_currency_code("RMB");
  ExpectError(billing_->PreviewInvoice(admin_, preview).status(), absl::StatusCode::kInvalidArgument,
              "INVALID_FIELD");
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization(kLab);
  issue.set_period("2027-01");
  issue.set_currency_code("RMB");
  ExpectError(billing_->IssueInvoice(admin_, issue).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  v1::ComputeSettlementRequest settle;
  settle.set_period("2027-01");
  settle.set_currency_code("RMB");
  ExpectError(billing_->ComputeSettlement(admin_, settle).status(), absl::StatusCode::kInvalidArgument,
              "INVALID_FIELD");
  // A listed code of another currency: a pool is created; there is nothing
  // to invoice in it.
  create.set_subsidy_pool_id("dollar");
  create.mutable_subsidy_pool()->set_currency_code("USD");
  EXPECT_TRUE(billing_->CreateSubsidyPool(admin_, create).ok());
  issue.set_currency_code("USD");
  ExpectError(billing_->IssueInvoice(admin_, issue).status(), absl::StatusCode::kFailedPrecondition,
              "NOTHING_TO_INVOICE");
  issue.set_currency_code("CNY");
  auto issued = billing_->IssueInvoice(admin_, issue);
  ASSERT_TRUE(issued.ok()) << issued.status();
  EXPECT_EQ(issued->amount_due().amount_minor(), 10000);
}

// GetOrganizationStatement and GetOwnerIncomeReport: "interval missing,
// empty or inverted" includes an interval with one end unset (it is
// required, not "since the beginning"); a currency that is not ISO 4217
// ("cny", "XX") is INVALID_FIELD rather than a report of nothing echoing the
// code; an income report's instrument filter not in its form is
// INVALID_FIELD rather than matching nothing.
TEST_F(BillingPaymentsContractTest, ReportsRefuseAHalfIntervalAnUnknownCurrencyAndAMalformedInstrument) {
  Owe(kLab, kOwner, 10000);
  const absl::Time now = clock_.Now();
  auto field_of = [](const absl::Status& s) { return s.message(); };
  v1::GetOrganizationStatementRequest st;
  st.set_organization(kLab);
  *st.mutable_interval()->mutable_end_time() = ToProto(now + absl::Hours(1));
  absl::Status s = billing_->GetOrganizationStatement(admin_, st).status();
  ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(field_of(s), "interval")) << s;
  v1::GetOwnerIncomeReportRequest in;
  in.set_owner_organization(kOwner);
  *in.mutable_interval()->mutable_start_time() = ToProto(now - absl::Hours(1));
  s = billing_->GetOwnerIncomeReport(admin_, in).status();
  ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(field_of(s), "interval")) << s;

  *st.mutable_interval()->mutable_start_time() = ToProto(now - absl::Hours(1));
  *in.mutable_interval()->mutable_end_time() = ToProto(now + absl::Hours(1));
  ASSERT_TRUE(billing_->GetOrganizationStatement(admin_, st).ok());
  ASSERT_TRUE(billing_->GetOwnerIncomeReport(admin_, in).ok());
  for (const char* code : {"cny", "XX", "RMB"}) {
    st.set_currency_code(code);
    s = billing_->GetOrganizationStatement(admin_, st).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(field_of(s), "currency_code")) << code << ": " << s;
    in.set_currency_code(code);
    s = billing_->GetOwnerIncomeReport(admin_, in).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    EXPECT_TRUE(absl::StrContains(field_of(s), "currency_code")) << code << ": " << s;
  }
  st.set_currency_code("CNY");
  in.set_currency_code("");
  auto statement = billing_->GetOrganizationStatement(admin_, st);
  ASSERT_TRUE(statement.ok()) << statement.status();
  EXPECT_EQ(statement->currency_code(), "CNY");
  in.set_instrument("tem");
  s = billing_->GetOwnerIncomeReport(admin_, in).status();
  ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(field_of(s), "instrument")) << s;
  in.set_instrument("instruments/tem");
  EXPECT_TRUE(billing_->GetOwnerIncomeReport(admin_, in).ok());
}

}  // namespace
}  // namespace labshare::billing
