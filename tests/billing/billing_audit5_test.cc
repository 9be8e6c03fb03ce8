// Billing against the fifth contract audit of 2026-12-06 (billing.proto as
// the contract):
// 1. Postings are never back-dated, also when the step that writes them
//    commits late (a replica whose clock is behind, a clock set back): the
//    step is stamped at or after the ledger's latest stamp, checked in its
//    atomic step, so a window of the past that a reader has read never
//    gains an entry (ListPostings, GetAccountBalance, statements).
// 2. PostCorrection ADJUST of a PAYMENT posting: the Payment and the
//    invoice it paid stand; the adjustment goes on the payer's next
//    invoice, as every correction does.
// 3. PostCorrection REVERSE of a deposit release or application is
//    NOT_CORRECTABLE: the Deposit, settled at the lease's close, would no
//    longer match the ledger.
// 4. ListPostings for a MEMBER_BILLING_ADMIN: a subsidy_pool filter never
//    shows which postings touch another organisation; INVALID_FIELD in the
//    Errors list's order (inverted interval, then malformed account).
// 5. GetOrganizationStatement and GetOwnerIncomeReport: half-open
//    intervals exact to the nanosecond, not the millisecond.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock).
#include <memory>
#include <string>
#include <vector>

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

class BillingAudit5Test : public testing::BillingLedgerTest {
 protected:
  static absl::Time At(int day, int hour, int minute = 0) {
    return absl::FromCivil(absl::CivilSecond(2027, 1, day, hour, minute, 0), absl::UTCTimeZone());
  }

  // The names of the CORRECTION postings, in ListPostings' order.
  std::vector<std::string> Corrections(const v1::ListPostingsRequest& base = {}) {
    v1::ListPostingsRequest lp = base;
    lp.set_kind(v1::CORRECTION);
    lp.set_page_size(1000);
    auto got = billing_->ListPostings(root_, lp);
    EXPECT_TRUE(got.ok()) << got.status();
    std::vector<std::string> names;
    if (got.ok()) {
      for (const auto& posting : got->postings()) names.push_back(posting.name());
    }
    return names;
  }

  int64_t PayableAsOf(absl::Time t) {
    v1::GetAccountBalanceRequest r;
    r.set_name(std::string(kLab) + "/accounts/payable");
    *r.mutable_as_of_time() = ToProto(t);
    auto got = billing_->GetAccountBalance(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->balance().amount_minor() : -1;
  }

  // lab's statement of its PAYABLE over [from, to).
  v1::OrganizationStatement Statement(absl::Time from, absl::Time to) {
    v1::GetOrganizationStatementRequest r;
    r.set_organization(kLab);
    *r.mutable_interval()->mutable_start_time() = ToProto(from);
    *r.mutable_interval()->mutable_end_time() = ToProto(to);
    r.add_account_kinds(v1::PAYABLE);
    auto got = billing_->GetOrganizationStatement(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::OrganizationStatement();
  }

  // The owner's service income over [from, to).
  int64_t ServiceIncome(absl::Time from, absl::Time to) {
    v1::GetOwnerIncomeReportRequest r;
    r.set_owner_organization(kOwner);
    *r.mutable_interval()->mutable_start_time() = ToProto(from);
    *r.mutable_interval()->mutable_end_time() = ToProto(to);
    auto got = billing_->GetOwnerIncomeReport(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->totals().service_income().amount_minor() : -1;
  }

  // ana's lease of afm (19 days, 1,000.00 deposit) handed over at
  // day_ + 24 h, returned at day_ + 6 days with `damage`, closed and billed.
  bk::Lease ClosedLease(int64_t damage) {
    const bk::Lease lease = ApprovedLease(19);
    bk::Lease out;
    bk::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("tip new");
    clock_.Set(day_ + absl::Hours(24));
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    clock_.Set(day_ + absl::Hours(24 * 6));
    bk::RecordReturnRequest ret;
    ret.set_name(lease.name());
    ret.set_condition_notes("stage scratched");
    if (damage > 0) *ret.mutable_damage_amount() = MakeMoney("CNY", damage);
    s = Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::CloseLeaseRequest c;
    c.set_name(lease.name());
    s = Call(stub_.get(), &bk::BookingService::Stub::CloseLease, c, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    Bill();
    return out;
  }

  v1::Deposit DepositOf(const bk::Lease& lease) {
    v1::GetDepositRequest gd;
    gd.set_name("deposits/" + lease.name().substr(lease.name().find('/') + 1));
    auto deposit = billing_->GetDeposit(root_, gd);
    EXPECT_TRUE(deposit.ok()) << deposit.status();
    return deposit.ok() ? *deposit : v1::Deposit();
  }
};

// ================================================================ 1. never back-dated

// Another replica whose clock is ten seconds behind posts after a posting
// at T: its posting is stamped just after T (the step is checked against
// the ledger's latest stamp in Redis), so the past stays as it was read:
// ListPostings over [T - 10 s, T) and the balance as of T do not change,
// and the postings list in the order they were committed.
TEST_F(BillingAudit5Test, AReplicaWhoseClockIsBehindPostsAfterTheLatestPosting) {
  const absl::Time t = At(20, 10);
  clock_.Set(t);
  auto first = OweBy(top_up_, kLab, kOwner, 1000);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(FromProto(first->correction().create_time()), t);
  clock_.Set(t + absl::Seconds(1));
  v1::ListPostingsRequest window;
  *window.mutable_interval()->mutable_start_time() = ToProto(t - absl::Seconds(10));
  *window.mutable_interval()->mutable_end_time() = ToProto(t);
  const std::vector<std::string> before = Corrections(window);
  EXPECT_EQ(PayableAsOf(t), 0);
  EXPECT_EQ(PayableAsOf(t + absl::Nanoseconds(1)), 1000);

  FakeClock behind_clock(t - absl::Seconds(10));
  BillingStore behind_store(pool_.get());
  BillingManager behind(&behind_store, reader_.get(), &behind_clock, *LoadBillingTimeZone("Asia/Shanghai"),
                        labshare::testing::TestPageTokens());
  v1::PostCorrectionRequest fix;
  fix.set_posting(top_up_);
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("late");
  auto entry = [&](const std::string& owner, const char* kind, const std::string& cp, bool debit) {
    v1::Entry* e = fix.add_entries();
    e->set_account(owner + "/accounts/" + kind);
    e->set_counterparty(cp);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", 500);
  };
  entry(kLab, "expense", kOwner, true);
  entry(kLab, "payable", kOwner, false);
  entry(kOwner, "receivable", kLab, true);
  entry(kOwner, "income", kLab, false);
  auto late = behind.PostCorrection(root_, fix);
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(FromProto(late->correction().create_time()), t + absl::Nanoseconds(1));

  EXPECT_EQ(Corrections(window), before);
  EXPECT_EQ(PayableAsOf(t), 0);
  EXPECT_EQ(PayableAsOf(t + absl::Nanoseconds(1)), 1000);
  EXPECT_EQ(PayableAsOf(t + absl::Nanoseconds(2)), 1500);
  const std::vector<std::string> all = Corrections();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], first->correction().name());
  EXPECT_EQ(all[1], late->correction().name());
  const v1::OrganizationStatement s = Statement(t - absl::Seconds(10), t + absl::Nanoseconds(1));
  ASSERT_EQ(s.lines_size(), 1);
  EXPECT_EQ(s.lines(0).posting(), first->correction().name());

  // The replica goes on from there (it learnt the ledger's latest stamp);
  // once its clock is ahead again, its clock's time stands.
  fix.set_reason("later");
  auto next = behind.PostCorrection(root_, fix);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(FromProto(next->correction().create_time()), t + absl::Nanoseconds(2));
  behind_clock.Set(t + absl::Seconds(5));
  fix.set_reason("on time");
  auto on_time = behind.PostCorrection(root_, fix);
  ASSERT_TRUE(on_time.ok()) << on_time.status();
  EXPECT_EQ(FromProto(on_time->correction().create_time()), t + absl::Seconds(5));
}

// The same on one replica whose clock was set back, for a charge billed
// from a booking event: its charge, postings and ChargePosted are stamped
// just after the latest posting, not at the clock's earlier time. Steps at
// the same instant keep it.
TEST_F(BillingAudit5Test, AClockSetBackNeverBackDatesACharge) {
  bk::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(FromProto(b.reserved_interval().start_time()));
  bk::Booking done;
  bk::CheckInRequest in;
  in.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, in, &done, ana_).ok());
  clock_.Set(FromProto(b.reserved_interval().end_time()));
  bk::CheckOutRequest out;
  out.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, out, &done, ana_).ok());

  const absl::Time t = FromProto(b.reserved_interval().end_time()) + absl::Hours(1);
  clock_.Set(t);
  Owe(kLab, kThird, 100);
  Owe(kLab, kThird, 200);  // the same instant: stamped at it
  clock_.Set(t + absl::Seconds(1));
  EXPECT_EQ(PayableAsOf(t + absl::Nanoseconds(1)), 300);
  clock_.Set(t - absl::Minutes(30));  // set back
  Bill();
  const v1::Charge charge = ChargeOf(b.name());
  EXPECT_EQ(FromProto(charge.create_time()), t + absl::Nanoseconds(1));
  EXPECT_EQ(FromProto(GetPosting(charge.posting()).create_time()), t + absl::Nanoseconds(1));
  for (const auto& e : Published()) {
    if (e.has_charge_posted()) {
      EXPECT_EQ(FromProto(e.header().event_time()), t + absl::Nanoseconds(1));
    }
  }
}

// ================================================================ 2. ADJUST of a payment

// "REVERSE of a PAYMENT posting is refused (its Payment, and the invoice
// or settlement transfer it paid, stand: record money going back as a
// payment from the payee to the payer, or ADJUST)". A payment recorded as
// 100.00 of which 30.00 never arrived is ADJUSTed: the Payment and the
// PAID invoice stand; the 30.00 lab owes owner again is on lab's next
// invoice, an ADJUSTMENT line correcting the payment's posting.
TEST_F(BillingAudit5Test, AnAdjustedPaymentGoesOnTheNextInvoice) {
  Owe(kLab, kOwner, 10000);
  const v1::Invoice issued = Issue(kLab);
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer(kLab);
  pay.mutable_payment()->set_payee(kOwner);
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 10000);
  pay.mutable_payment()->set_invoice(issued.name());
  auto paid = billing_->RecordPayment(root_, pay);
  ASSERT_TRUE(paid.ok()) << paid.status();
  clock_.Advance(absl::Hours(1));

  v1::PostCorrectionRequest fix;
  fix.set_posting(paid->posting());
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("30.00 of the transfer never arrived");
  auto entry = [&](const std::string& owner, const char* kind, const std::string& cp, bool debit) {
    v1::Entry* e = fix.add_entries();
    e->set_account(owner + "/accounts/" + kind);
    e->set_counterparty(cp);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", 3000);
  };
  entry(kLab, "cash", kOwner, true);
  entry(kLab, "payable", kOwner, false);
  entry(kOwner, "receivable", kLab, true);
  entry(kOwner, "cash", kLab, false);
  auto adjusted = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(adjusted.ok()) << adjusted.status();

  const v1::Invoice now = GetInvoice(issued.name());
  EXPECT_EQ(now.state(), v1::Invoice::PAID);
  EXPECT_EQ(now.amount_paid().amount_minor(), 10000);
  v1::GetPaymentRequest gp;
  gp.set_name(paid->name());
  auto payment = billing_->GetPayment(root_, gp);
  ASSERT_TRUE(payment.ok()) << payment.status();
  EXPECT_EQ(payment->amount().amount_minor(), 10000);
  EXPECT_EQ(SubLedger(kLab, "payable", kOwner), 3000);
  EXPECT_EQ(SubLedger(kOwner, "receivable", kLab), 3000);

  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization(kLab);
  preview.set_period("2027-02");
  auto next = billing_->PreviewInvoice(root_, preview);
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_EQ(next->lines_size(), 1);
  EXPECT_EQ(next->lines(0).kind(), v1::InvoiceLine::ADJUSTMENT);
  EXPECT_EQ(next->lines(0).corrects(), paid->posting());
  EXPECT_EQ(next->lines(0).payee_organization(), kOwner);
  EXPECT_EQ(next->lines(0).amount().amount_minor(), 3000);
  EXPECT_EQ(next->amount_due().amount_minor(), 3000);
}

// ================================================================ 3. deposit settlements stand

// A deposit of 1,000.00, 300.00 of it kept for damage at the close: its
// DEPOSIT_APPLICATION and DEPOSIT_RELEASE postings are not reversed
// (NOT_CORRECTABLE, nothing written): the Deposit stays APPLIED and the
// lessee's deposit-lodged and the owner's deposit-held stay at zero.
TEST_F(BillingAudit5Test, ADepositsReleaseAndApplicationAreNotReversed) {
  const bk::Lease lease = ClosedLease(30000);
  const v1::Deposit settled = DepositOf(lease);
  ASSERT_EQ(settled.state(), v1::Deposit::APPLIED);
  ASSERT_EQ(settled.applied_amount().amount_minor(), 30000);
  ASSERT_EQ(settled.released_amount().amount_minor(), 70000);
  ASSERT_EQ(settled.postings_size(), 2);
  const size_t corrections = Corrections().size();
  clock_.Advance(absl::Hours(1));

  for (const auto& name : settled.postings()) {
    const v1::Posting posting = GetPosting(name);
    ASSERT_TRUE(posting.kind() == v1::DEPOSIT_RELEASE || posting.kind() == v1::DEPOSIT_APPLICATION) << name;
    ExpectError(Reverse(name, "released by mistake").status(), absl::StatusCode::kFailedPrecondition,
                "NOT_CORRECTABLE");
    EXPECT_TRUE(GetPosting(name).corrected_by().empty());
  }
  EXPECT_EQ(Corrections().size(), corrections);
  const v1::Deposit after = DepositOf(lease);
  EXPECT_EQ(after.state(), v1::Deposit::APPLIED);
  EXPECT_EQ(after.held_amount().amount_minor(), 0);
  EXPECT_EQ(SubLedger(kLab, "deposit-lodged", ""), 0);
  EXPECT_EQ(SubLedger(kOwner, "deposit-held", ""), 0);
}

// A deposit returned in full: its DEPOSIT_RELEASE is not reversed either.
TEST_F(BillingAudit5Test, ADepositReleasedInFullIsNotReversed) {
  const bk::Lease lease = ClosedLease(0);
  const v1::Deposit settled = DepositOf(lease);
  ASSERT_EQ(settled.state(), v1::Deposit::RELEASED);
  ASSERT_EQ(settled.postings_size(), 1);
  ExpectError(Reverse(settled.postings(0), "released by mistake").status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
  EXPECT_EQ(DepositOf(lease).state(), v1::Deposit::RELEASED);
  EXPECT_EQ(SubLedger(kLab, "deposit-lodged", ""), 0);
}

// ================================================================ 4. a member's ListPostings

// A member's subsidy_pool filter finds the postings of that pool with an
// entry of its own, showing only its own entries; naming another
// organisation instead of a pool is ORGANIZATION_SCOPE (it would tell which
// of its postings also touch that organisation, as a counterparty filter
// on another pair's entries would), its own finds nothing (no pool).
TEST_F(BillingAudit5Test, AMembersSubsidyPoolFilterShowsOnlyItsOwnEntries) {
  bk::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  Use(b, ana_);
  const v1::Charge charge = ChargeOf(b.name());
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  // One ADJUST with entries of lab, owner and third and none of the pool.
  v1::PostCorrectionRequest fix;
  fix.set_posting(top_up_);
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("two services outside the booking system");
  for (const auto& payer : {kLab, kThird}) {
    for (const auto& [account, cp, debit] : std::vector<std::tuple<std::string, std::string, bool>>{
             {std::string(payer) + "/accounts/expense", kOwner, true},
             {std::string(payer) + "/accounts/payable", kOwner, false},
             {std::string(kOwner) + "/accounts/receivable", payer, true},
             {std::string(kOwner) + "/accounts/income", payer, false}}) {
      v1::Entry* e = fix.add_entries();
      e->set_account(account);
      e->set_counterparty(cp);
      *(debit ? e->mutable_debit() : e->mutable_credit()) = MakeMoney("CNY", 1000);
    }
  }
  ASSERT_TRUE(billing_->PostCorrection(root_, fix).ok());

  auto list = [&](const Principal& who, const std::string& pool) {
    v1::ListPostingsRequest lp;
    lp.set_subsidy_pool(pool);
    return billing_->ListPostings(who, lp);
  };
  auto got = list(Member("lab"), "subsidyPools/voucher");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->postings_size(), 1);
  EXPECT_EQ(got->postings(0).name(), charge.subsidy_postings(0));
  ASSERT_GT(got->postings(0).entries_size(), 0);
  for (const auto& e : got->postings(0).entries()) {
    EXPECT_EQ(e.account().rfind(std::string(kLab) + "/", 0), 0u) << e.account();
  }
  ExpectError(list(Member("lab"), kThird).status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  ExpectError(list(Member("lab"), kOwner).status(), absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE");
  got = list(Member("lab"), kLab);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->postings_size(), 0);
  // The admin: a filter that names no pool matches no pool's entries.
  got = list(root_, kThird);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->postings_size(), 0);
  got = list(root_, "subsidyPools/voucher");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->postings_size(), 2);  // the top-up and the subsidy
}

// ListPostings "Errors: INVALID_ARGUMENT (INVALID_FIELD: inverted interval,
// account name malformed ...)": a request wrong in both ways names the
// interval; another organisation's account, malformed or not, is
// ORGANIZATION_SCOPE before either.
TEST_F(BillingAudit5Test, ListPostingsChecksTheIntervalBeforeTheAccountsForm) {
  v1::ListPostingsRequest lp;
  lp.set_account(std::string(kLab) + "/accounts/no-such-kind");
  *lp.mutable_interval()->mutable_start_time() = ToProto(At(20, 10));
  *lp.mutable_interval()->mutable_end_time() = ToProto(At(20, 9));
  for (const Principal& who : {root_, Member("lab")}) {
    const absl::Status s = billing_->ListPostings(who, lp).status();
    ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
    ASSERT_FALSE(FieldViolationsOf(s).empty()) << s;
    EXPECT_EQ(FieldViolationsOf(s).front().field, "interval") << s;
  }
  lp.set_account(std::string(kThird) + "/accounts/no-such-kind");
  ExpectError(billing_->ListPostings(Member("lab"), lp).status(), absl::StatusCode::kPermissionDenied,
              "ORGANIZATION_SCOPE");
  lp.clear_interval();
  const absl::Status s = billing_->ListPostings(root_, lp).status();
  ExpectError(s, absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  ASSERT_FALSE(FieldViolationsOf(s).empty()) << s;
  EXPECT_EQ(FieldViolationsOf(s).front().field, "account") << s;
}

// ================================================================ 5. to the nanosecond

// lab owes owner 25.00 from 10:00:00.000500. Half-open intervals decide to
// the nanosecond: [.., 10:00:00.000700) holds it, [10:00:00.000700, ..)
// does not (its opening balance does), [10:00:00.000500, ..) does; the
// statement line carries the posting's time itself.
TEST_F(BillingAudit5Test, StatementIntervalsAreExactToTheNanosecond) {
  const absl::Time t = At(20, 10);
  clock_.Set(t + absl::Microseconds(500));
  Owe(kLab, kOwner, 2500);
  clock_.Set(t + absl::Seconds(1));
  const absl::Time before = t - absl::Seconds(1), after = t + absl::Seconds(1);

  v1::OrganizationStatement s = Statement(before, t + absl::Microseconds(700));
  ASSERT_EQ(s.lines_size(), 1);
  EXPECT_EQ(FromProto(s.lines(0).posting_time()), t + absl::Microseconds(500));
  EXPECT_EQ(s.closing_balance().amount_minor(), -2500);

  s = Statement(t + absl::Microseconds(700), after);
  EXPECT_EQ(s.lines_size(), 0);
  EXPECT_EQ(s.opening_balance().amount_minor(), -2500);

  s = Statement(t + absl::Microseconds(500), after);
  ASSERT_EQ(s.lines_size(), 1);
  EXPECT_EQ(s.opening_balance().amount_minor(), 0);

  s = Statement(before, t + absl::Microseconds(500));
  EXPECT_EQ(s.lines_size(), 0);
  EXPECT_EQ(s.closing_balance().amount_minor(), 0);

  s = Statement(t + absl::Microseconds(500) + absl::Nanoseconds(1), after);
  EXPECT_EQ(s.lines_size(), 0);
  EXPECT_EQ(s.opening_balance().amount_minor(), -2500);
}

// The owner's service income of that posting, over the same intervals:
// adjacent intervals add up, and the posting is on the right side of
// 10:00:00.000700 and of 10:00:00.000500 + 1 ns.
TEST_F(BillingAudit5Test, IncomeIntervalsAreExactToTheNanosecond) {
  const absl::Time t = At(20, 10);
  clock_.Set(t + absl::Microseconds(500));
  Owe(kLab, kOwner, 2500);
  clock_.Set(t + absl::Seconds(1));
  const absl::Time before = t - absl::Seconds(1), after = t + absl::Seconds(1);

  EXPECT_EQ(ServiceIncome(before, t + absl::Microseconds(700)), 2500);
  EXPECT_EQ(ServiceIncome(t + absl::Microseconds(700), after), 0);
  EXPECT_EQ(ServiceIncome(t + absl::Microseconds(500), after), 2500);
  EXPECT_EQ(ServiceIncome(before, t + absl::Microseconds(500)), 0);
  EXPECT_EQ(ServiceIncome(t + absl::Microseconds(500) + absl::Nanoseconds(1), after), 0);
  EXPECT_EQ(ServiceIncome(before, t + absl::Microseconds(500) + absl::Nanoseconds(1)), 2500);
}

}  // namespace
}  // namespace labshare::billing
