// Billing's lease rent against billing_events.proto ("Return: charging stops
// at the return time (early return)") and booking.proto RecordReturn
// ("billing stops lease invoices at the return"), also when the rent of a
// period was charged at its end before the return reached billing: a return
// back-dated into a charged period, or billing's consumer behind at the
// month end (the sweep runs before the backlog). The rent already charged
// is re-priced with the return applied and each difference posted as a
// CORRECTION (rent and subsidy), in the return's atomic step, once.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock), with the fixture's subsidy pool
// "voucher" paying 10 % of every charge.
#include <map>
#include <string>
#include <vector>

#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";

class BillingLeaseRentTest : public testing::BillingLedgerTest {
 protected:
  static absl::Time Utc(int month, int day, int hour = 0) {
    return absl::FromCivil(absl::CivilSecond(2027, month, day, hour, 0, 0), absl::UTCTimeZone());
  }

  // ana's lease of afm from 2027-01-04 08:00 Shanghai for `days` days at
  // `rate` per `basis`, deposit 1,000.00, handed over at its start and
  // billed.
  bk::Lease HandedOver(int days, bk::LeaseContract::RateBasis basis, int64_t rate) {
    bk::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * (1 + days)));
    bk::Lease lease, out;
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::ApproveLeaseRequest a;
    a.set_name(lease.name());
    a.mutable_contract()->set_rate_basis(basis);
    *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", rate);
    *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 100000);
    s = Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    clock_.Set(day_ + absl::Hours(24));
    EXPECT_TRUE(clock_.Now() == Utc(1, 4)) << clock_.Now();
    bk::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("ok");
    s = Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    Bill();
    return out;
  }

  // Handed over the next day, returned 2027-01-09 09:00 with 300.00 of
  // damage, closed: the booking service's events, for billing to apply.
  void HandOverReturnDamagedAndClose(const bk::Lease& lease) {
    bk::Lease out;
    clock_.Set(day_ + absl::Hours(24));
    bk::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("ok");
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
    clock_.Set(Utc(1, 9));
    bk::RecordReturnRequest ret;
    ret.set_name(lease.name());
    ret.set_condition_notes("stage scratched");
    *ret.mutable_damage_amount() = MakeMoney("CNY", 30000);
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
    bk::CloseLeaseRequest close;
    close.set_name(lease.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CloseLease, close, &out, staff_).ok());
  }

  void Return(const bk::Lease& lease, absl::Time at) {
    bk::RecordReturnRequest ret;
    ret.set_name(lease.name());
    ret.set_condition_notes("fine");
    *ret.mutable_return_time() = ToProto(at);
    bk::Lease out;
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // The lease's LEASE_PERIOD charges by source key.
  std::map<std::string, v1::Charge> Rent(const bk::Lease& lease) {
    v1::ListChargesRequest r;
    r.set_reference(lease.name());
    r.set_page_size(100);
    auto got = billing_->ListCharges(root_, r);
    EXPECT_TRUE(got.ok()) << got.status();
    std::map<std::string, v1::Charge> out;
    if (!got.ok()) return out;
    for (const auto& c : got->charges()) {
      if (c.fee_kind() == v1::LEASE_PERIOD) out[c.source_key()] = c;
    }
    return out;
  }

  v1::Deposit DepositOf(const bk::Lease& lease) {
    v1::GetDepositRequest gd;
    gd.set_name("deposits/" + lease.name().substr(lease.name().find('/') + 1));
    auto deposit = billing_->GetDeposit(root_, gd);
    EXPECT_TRUE(deposit.ok()) << deposit.status();
    return deposit.ok() ? *deposit : v1::Deposit();
  }

  std::vector<v1::Posting> CorrectionsOf(const v1::Charge& c) {
    std::vector<v1::Posting> out;
    for (const auto& name : c.corrections()) out.push_back(GetPosting(name));
    return out;
  }

  // Sums of the CorrectionPosted events' income deltas of the owner.
  void CorrectionFigures(int64_t* income, int64_t* subsidised, int* events) {
    *income = *subsidised = 0;
    *events = 0;
    for (const auto& e : Published()) {
      if (!e.has_correction_posted()) continue;
      ++*events;
      for (const auto& f : e.correction_posted().income_deltas()) {
        EXPECT_EQ(f.owner_organization(), kOwner);
        *income += f.service_income().amount_minor();
        *subsidised += f.subsidised().amount_minor();
      }
    }
  }
};

// Monthly rent 3,100.00, handed over 2027-01-04 08:00 Shanghai. The sweep
// charges January (4..31: 28 of 31 days touched, 2,800.00, 280.00 of it
// subsidised) on 2 February and February (in full, 3,100.00, 310.00
// subsidised) on 2 March. The return recorded then is back-dated to
// 2027-01-20 09:00 Shanghai: January is 4..20, 17 days, round(310000 * 17 /
// 31) = 170000, subsidy 17000; February nothing. The ledger ends as if the
// return had been known all along.
TEST_F(BillingLeaseRentTest, RentChargedBeforeABackDatedReturnIsCorrected) {
  const bk::Lease lease = HandedOver(55, bk::LeaseContract::MONTHLY, 310000);
  clock_.Set(Utc(2, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  clock_.Set(Utc(3, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  auto rent = Rent(lease);
  ASSERT_EQ(rent.size(), 2u);
  ASSERT_EQ(rent["lease-period/2027-01"].amount().amount_minor(), 280000);
  ASSERT_EQ(rent["lease-period/2027-01"].subsidy_total().amount_minor(), 28000);
  ASSERT_EQ(rent["lease-period/2027-02"].amount().amount_minor(), 310000);
  ASSERT_EQ(rent["lease-period/2027-02"].subsidy_total().amount_minor(), 31000);

  clock_.Set(Utc(3, 2, 1));
  ASSERT_NO_FATAL_FAILURE(Return(lease, Utc(1, 20, 1)));
  Bill();

  rent = Rent(lease);
  ASSERT_EQ(rent.size(), 2u);
  const v1::Charge& jan = rent["lease-period/2027-01"];
  const v1::Charge& feb = rent["lease-period/2027-02"];
  // Charges are never edited: the corrections say what changed.
  EXPECT_EQ(jan.state(), v1::Charge::ADJUSTED);
  EXPECT_EQ(jan.amount().amount_minor(), 280000);
  EXPECT_EQ(feb.state(), v1::Charge::REVERSED);
  ASSERT_EQ(jan.corrections_size(), 2);
  ASSERT_EQ(feb.corrections_size(), 2);
  const auto jan_fix = CorrectionsOf(jan);
  EXPECT_EQ(jan_fix[0].kind(), v1::CORRECTION);
  EXPECT_EQ(jan_fix[0].corrects(), jan.posting());
  EXPECT_EQ(jan_fix[1].corrects(), jan.subsidy_postings(0));
  EXPECT_EQ(FromProto(jan_fix[0].create_time()), Utc(3, 2, 1));  // posted now, never back-dated
  EXPECT_EQ(GetPosting(jan.posting()).corrected_by_size(), 1);
  const auto feb_fix = CorrectionsOf(feb);
  EXPECT_EQ(feb_fix[0].corrects(), feb.posting());
  EXPECT_EQ(feb_fix[1].corrects(), feb.subsidy_postings(0));

  // Rent 170000 in all, 17000 of it subsidised.
  EXPECT_EQ(SubLedger(kOwner, "income", kLab), 170000);
  EXPECT_EQ(SubLedger(kLab, "expense", ""), 170000);
  EXPECT_EQ(SubLedger(kLab, "subsidy-received", "subsidyPools/voucher"), 17000);
  EXPECT_EQ(SubLedger("subsidyPools/voucher", "pool-funds", ""), 1000000 - 17000);
  EXPECT_EQ(SubLedger(kOwner, "receivable", "subsidyPools/voucher"), 17000);
  // lab owes the deposit and the rent net of the subsidy.
  EXPECT_EQ(SubLedger(kLab, "payable", kOwner), 100000 + 170000 - 17000);
  EXPECT_EQ(SubLedger(kOwner, "receivable", kLab), 100000 + 170000 - 17000);
  int64_t income = 0, subsidised = 0;
  int events = 0;
  CorrectionFigures(&income, &subsidised, &events);
  EXPECT_EQ(events, 2);
  EXPECT_EQ(income, -(280000 - 170000) - 310000);
  EXPECT_EQ(subsidised, -(28000 - 17000) - 31000);

  // Once: the return billed again and the sweep change nothing.
  Bill();
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);
  CorrectionFigures(&income, &subsidised, &events);
  EXPECT_EQ(events, 2);
  EXPECT_EQ(SubLedger(kOwner, "income", kLab), 170000);
  EXPECT_EQ(SubLedger("subsidyPools/voucher", "pool-funds", ""), 1000000 - 17000);
}

// A rent charge an administrator adjusted already (ADJUST of -60,000.00
// on January's 280,000.00) and then cut by a back-dated return: the
// return's correction is left to the administrator (the difference from
// the charged amount would have credited the lab twice: 280000 - 60000 -
// 110000 = 110000 paid for 170000 of rent). February, not adjusted, is
// reversed as before.
TEST_F(BillingLeaseRentTest, ARentChargeAdjustedByAnAdministratorIsNotCorrectedTwice) {
  const bk::Lease lease = HandedOver(55, bk::LeaseContract::MONTHLY, 310000);
  clock_.Set(Utc(2, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  clock_.Set(Utc(3, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  auto rent = Rent(lease);
  ASSERT_EQ(rent["lease-period/2027-01"].amount().amount_minor(), 280000);
  const v1::Posting jan_posting = GetPosting(rent["lease-period/2027-01"].posting());
  v1::PostCorrectionRequest fix;
  fix.set_posting(jan_posting.name());
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("goodwill");
  for (const auto& e : ReverseEntries({jan_posting.entries().begin(), jan_posting.entries().end()})) {
    v1::Entry part = e;
    if (part.has_debit()) part.mutable_debit()->set_amount_minor(60000);
    if (part.has_credit()) part.mutable_credit()->set_amount_minor(60000);
    *fix.add_entries() = part;
  }
  auto adjusted = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(adjusted.ok()) << adjusted.status();
  ASSERT_EQ(SubLedger(kOwner, "income", kLab), 280000 - 60000 + 310000);

  clock_.Set(Utc(3, 2, 1));
  ASSERT_NO_FATAL_FAILURE(Return(lease, Utc(1, 20, 1)));
  Bill();
  rent = Rent(lease);
  EXPECT_EQ(GetPosting(rent["lease-period/2027-01"].posting()).corrected_by_size(), 1);  // the ADJUST only
  EXPECT_EQ(rent["lease-period/2027-02"].state(), v1::Charge::REVERSED);
  EXPECT_EQ(SubLedger(kOwner, "income", kLab), 280000 - 60000);
}

// FeeKind.LEASE_PERIOD: "A charge an administrator corrected before (a
// REVERSE or an ADJUST of its CHARGE posting or of one of its SUBSIDY
// postings, whatever followed: also a SUBSIDY posting reversed and then
// given back by reversing that reversal) ... is left as it stands
// (logged)". January's subsidy (28,000.00 of 280,000.00) is adjusted down
// by 1,000.00; February's (31,000.00 of 310,000.00) is reversed and given
// back by reversing that reversal, so that it stands again. A return
// back-dated to 20 January then corrects neither: January keeps its rent
// and subsidy, and February is not reversed while its subsidy stands (it
// was: REVERSED, the pool still paying 31,000.00 of no rent, lab's PAYABLE
// to the owner 31,000.00 in credit for it).
TEST_F(BillingLeaseRentTest, ARentChargeWhoseSubsidyAnAdministratorCorrectedIsLeftAsItStands) {
  const bk::Lease lease = HandedOver(55, bk::LeaseContract::MONTHLY, 310000);
  clock_.Set(Utc(2, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  clock_.Set(Utc(3, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  auto rent = Rent(lease);
  ASSERT_EQ(rent["lease-period/2027-01"].subsidy_postings_size(), 1);
  ASSERT_EQ(rent["lease-period/2027-02"].subsidy_postings_size(), 1);
  const std::string jan_subsidy = rent["lease-period/2027-01"].subsidy_postings(0);
  const std::string feb_subsidy = rent["lease-period/2027-02"].subsidy_postings(0);

  // January: 1,000.00 of its subsidy taken back (each entry of the
  // subsidy's pattern, mirrored, at 1,000.00).
  const v1::Posting jan_sub = GetPosting(jan_subsidy);
  v1::PostCorrectionRequest less;
  less.set_posting(jan_subsidy);
  less.set_mode(v1::PostCorrectionRequest::ADJUST);
  less.set_reason("voucher rule misapplied");
  for (const auto& e : ReverseEntries({jan_sub.entries().begin(), jan_sub.entries().end()})) {
    v1::Entry part = e;
    if (part.has_debit()) part.mutable_debit()->set_amount_minor(1000);
    if (part.has_credit()) part.mutable_credit()->set_amount_minor(1000);
    *less.add_entries() = part;
  }
  auto adjusted = billing_->PostCorrection(root_, less);
  ASSERT_TRUE(adjusted.ok()) << adjusted.status();
  // February: reversed, then given back.
  auto reversed = Reverse(feb_subsidy, "granted in error");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  auto back = Reverse(reversed->correction().name(), "granted after all");
  ASSERT_TRUE(back.ok()) << back.status();
  rent = Rent(lease);
  ASSERT_EQ(rent["lease-period/2027-01"].state(), v1::Charge::ADJUSTED);
  ASSERT_EQ(rent["lease-period/2027-02"].state(), v1::Charge::ADJUSTED);
  ASSERT_EQ(SubLedger("subsidyPools/voucher", "pool-funds", ""), 1000000 - 27000 - 31000);
  const size_t events_before = Published().size();

  clock_.Set(Utc(3, 2, 1));
  ASSERT_NO_FATAL_FAILURE(Return(lease, Utc(1, 20, 1)));
  Bill();

  rent = Rent(lease);
  const v1::Charge& jan = rent["lease-period/2027-01"];
  const v1::Charge& feb = rent["lease-period/2027-02"];
  EXPECT_EQ(jan.state(), v1::Charge::ADJUSTED);
  EXPECT_EQ(feb.state(), v1::Charge::ADJUSTED);
  EXPECT_EQ(jan.corrections_size(), 1);  // the administrator's only
  EXPECT_EQ(feb.corrections_size(), 2);
  EXPECT_EQ(GetPosting(jan.posting()).corrected_by_size(), 0);
  EXPECT_EQ(GetPosting(feb.posting()).corrected_by_size(), 0);
  EXPECT_EQ(GetPosting(jan_subsidy).corrected_by_size(), 1);
  EXPECT_EQ(GetPosting(feb_subsidy).corrected_by_size(), 1);
  // The ledger as the administrator left it.
  EXPECT_EQ(SubLedger(kOwner, "income", kLab), 280000 + 310000);
  EXPECT_EQ(SubLedger(kLab, "subsidy-received", "subsidyPools/voucher"), 27000 + 31000);
  EXPECT_EQ(SubLedger("subsidyPools/voucher", "pool-funds", ""), 1000000 - 27000 - 31000);
  EXPECT_EQ(SubLedger(kLab, "payable", kOwner), 100000 + (280000 - 27000) + (310000 - 31000));
  EXPECT_EQ(SubLedger(kOwner, "receivable", kLab), 100000 + (280000 - 27000) + (310000 - 31000));
  const std::vector<v1::BillingEvent> events = Published();
  ASSERT_GE(events.size(), events_before);
  for (size_t i = events_before; i < events.size(); ++i) {
    EXPECT_FALSE(events[i].has_correction_posted()) << "the return corrected a charge";
  }
}

// Daily rent 3,000.00, returned on time 2027-01-20 08:00 Shanghai, but
// billing consumes the return only after the sweep of 2 February charged
// January as out to its end (4..31, 28 days: 28 x 300000 = 8400000,
// 840000 subsidised). Applied, the return takes it to 4..20, 17 days:
// 5100000, subsidy 510000.
TEST_F(BillingLeaseRentTest, RentChargedBeforeTheReturnWasConsumedIsCorrected) {
  const bk::Lease lease = HandedOver(19, bk::LeaseContract::DAILY, 300000);
  clock_.Set(Utc(1, 20));
  ASSERT_NO_FATAL_FAILURE(Return(lease, Utc(1, 20)));
  clock_.Set(Utc(2, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);  // the return not consumed yet
  ASSERT_EQ(Rent(lease)["lease-period/2027-01"].amount().amount_minor(), 8400000);
  Bill();
  const v1::Charge jan = Rent(lease)["lease-period/2027-01"];
  EXPECT_EQ(jan.state(), v1::Charge::ADJUSTED);
  EXPECT_EQ(SubLedger(kOwner, "income", kLab), 5100000);
  EXPECT_EQ(SubLedger(kLab, "subsidy-received", "subsidyPools/voucher"), 510000);
  EXPECT_EQ(SubLedger("subsidyPools/voucher", "pool-funds", ""), 1000000 - 510000);
  EXPECT_EQ(SubLedger(kLab, "payable", kOwner), 100000 + 5100000 - 510000);
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);
}

// A return that leaves the charged periods as they were (after the last
// charged period) corrects nothing.
TEST_F(BillingLeaseRentTest, AReturnAfterTheChargedPeriodsCorrectsNothing) {
  const bk::Lease lease = HandedOver(55, bk::LeaseContract::MONTHLY, 310000);
  clock_.Set(Utc(2, 2));
  ASSERT_EQ(*billing_->ChargeEndedLeasePeriods(), 1);
  clock_.Set(Utc(2, 10));
  ASSERT_NO_FATAL_FAILURE(Return(lease, Utc(2, 10)));
  Bill();
  auto rent = Rent(lease);
  EXPECT_EQ(rent["lease-period/2027-01"].state(), v1::Charge::POSTED);
  EXPECT_EQ(rent["lease-period/2027-01"].amount().amount_minor(), 280000);
  // February 1..10: round(310000 * 10 / 28) = 110714.
  EXPECT_EQ(rent["lease-period/2027-02"].amount().amount_minor(), 110714);
  EXPECT_EQ(SubLedger(kOwner, "income", kLab), 280000 + 110714);
  int64_t income = 0, subsidised = 0;
  int events = 0;
  CorrectionFigures(&income, &subsidised, &events);
  EXPECT_EQ(events, 0);
}

// The handover, return and close of a lease caught up in one batch, the
// handover's step failing (its deposit index unwritable: a Redis error, as
// a blip or a step stale after every attempt would be): the return and the
// close wait for it, left pending, instead of settling no deposit before it
// is held. Retried in order, the ledger is exactly the in-order one: the
// deposit held then 300.00 applied to the damage and 700.00 released, rent
// 4..9 January (six days at 3,000.00), nothing out afterwards.
TEST_F(BillingLeaseRentTest, ALeasesEventsWaitForAnEarlierOneThatFailed) {
  const bk::Lease lease = ApprovedLease(19);
  ASSERT_NO_FATAL_FAILURE(HandOverReturnDamagedAndClose(lease));
  std::vector<StreamEvent> events;
  std::vector<std::string> kinds;
  for (const auto& e : Events()) {
    events.push_back({e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()});
    kinds.push_back(e.has_lease_handed_over() ? "handover"
                    : e.has_lease_returned()  ? "return"
                    : e.has_lease_closed()    ? "close"
                                              : "");
  }
  ASSERT_TRUE(pool_->Command({"SET", keys::Index("deposit"), "not a sorted set"}).ok());
  std::vector<absl::Status> st = billing_->ApplyBookingEvents(events);
  ASSERT_EQ(st.size(), events.size());
  int lease_events = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    if (kinds[i].empty()) continue;
    ++lease_events;
    EXPECT_FALSE(st[i].ok()) << kinds[i] << " applied before the failed handover";
  }
  EXPECT_EQ(lease_events, 3);
  ASSERT_TRUE(pool_->Command({"DEL", keys::Index("deposit")}).ok());
  // The entries left pending, read again in stream order.
  std::vector<StreamEvent> pending;
  for (size_t i = 0; i < events.size(); ++i) {
    if (!st[i].ok()) pending.push_back(events[i]);
  }
  for (const auto& s : billing_->ApplyBookingEvents(pending)) EXPECT_TRUE(s.ok()) << s;

  const v1::Deposit deposit = DepositOf(lease);
  EXPECT_EQ(deposit.state(), v1::Deposit::APPLIED);
  EXPECT_EQ(deposit.applied_amount().amount_minor(), 30000);
  EXPECT_EQ(deposit.released_amount().amount_minor(), 70000);
  EXPECT_EQ(SubLedger(kOwner, "deposit-held", ""), 0);
  EXPECT_EQ(SubLedger(kLab, "deposit-lodged", ""), 0);
  EXPECT_EQ(SubLedger(kOwner, "compensation", kLab), 30000);
  auto rent = Rent(lease);
  ASSERT_EQ(rent.size(), 1u);
  EXPECT_EQ(rent["lease-period/2027-01"].amount().amount_minor(), 1800000);
  clock_.Set(Utc(3, 2));
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);  // returned: no rent after it
  EXPECT_EQ(Rent(lease).size(), 1u);
}

// A close read before its handover (two billing replicas on consecutive
// batches of one stream, or a handover retried after the close's batch):
// the close waits until the handover has held the deposit, then settles it
// as in order. It was applied at once: the damage charged net of a deposit
// that the late handover then held for good (HELD, never released).
TEST_F(BillingLeaseRentTest, ACloseReadBeforeItsHandoverWaitsForTheDeposit) {
  const bk::Lease lease = ApprovedLease(19);
  ASSERT_NO_FATAL_FAILURE(HandOverReturnDamagedAndClose(lease));
  std::vector<StreamEvent> handover, rest;
  for (const auto& e : Events()) {
    StreamEvent se{e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
    (e.has_lease_handed_over() ? handover : rest).push_back(std::move(se));
  }
  ASSERT_EQ(handover.size(), 1u);
  // The later batch first: the close is left pending, nothing settled.
  std::vector<absl::Status> st = billing_->ApplyBookingEvents(rest);
  std::vector<StreamEvent> pending;
  for (size_t i = 0; i < rest.size(); ++i) {
    bk::BookingEvent e;
    ASSERT_TRUE(e.ParseFromString(rest[i].payload));
    if (e.has_lease_closed()) {
      EXPECT_EQ(st[i].code(), absl::StatusCode::kAborted) << st[i];
      pending.push_back(rest[i]);
    } else {
      EXPECT_TRUE(st[i].ok()) << st[i];
    }
  }
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(SubLedger(kOwner, "compensation", kLab), 0);
  // The handover, then the close again.
  for (const auto& s : billing_->ApplyBookingEvents(handover)) EXPECT_TRUE(s.ok()) << s;
  for (const auto& s : billing_->ApplyBookingEvents(pending)) EXPECT_TRUE(s.ok()) << s;
  const v1::Deposit deposit = DepositOf(lease);
  EXPECT_EQ(deposit.state(), v1::Deposit::APPLIED);
  EXPECT_EQ(deposit.applied_amount().amount_minor(), 30000);
  EXPECT_EQ(deposit.released_amount().amount_minor(), 70000);
  EXPECT_EQ(SubLedger(kOwner, "deposit-held", ""), 0);
  EXPECT_EQ(SubLedger(kLab, "deposit-lodged", ""), 0);
  EXPECT_EQ(SubLedger(kOwner, "compensation", kLab), 30000);
  clock_.Set(Utc(3, 2));
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);  // returned: no rent after it
}

// A handover applied after its lease's return (its event failed twice and
// was retried after the return, read in a later batch): the deposit is
// held (the close settles it) but the lease is not put out again, so no
// rent is charged after the return.
TEST_F(BillingLeaseRentTest, AHandoverAppliedAfterItsReturnChargesNoRentAfterIt) {
  const bk::Lease lease = ApprovedLease(19);
  bk::Lease out;
  clock_.Set(day_ + absl::Hours(24));
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("ok");
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
  clock_.Set(Utc(1, 9));
  bk::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("fine");
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
  std::vector<StreamEvent> handover, others;
  for (const auto& e : Events()) {
    StreamEvent event{e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
    (e.has_lease_handed_over() ? handover : others).push_back(event);
  }
  ASSERT_EQ(handover.size(), 1u);
  for (const auto& s : billing_->ApplyBookingEvents(others)) EXPECT_TRUE(s.ok()) << s;
  for (const auto& s : billing_->ApplyBookingEvents(handover)) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(DepositOf(lease).state(), v1::Deposit::HELD);
  clock_.Set(Utc(3, 2));
  EXPECT_EQ(*billing_->ChargeEndedLeasePeriods(), 0);
  auto rent = Rent(lease);
  ASSERT_EQ(rent.size(), 1u);
  EXPECT_EQ(rent["lease-period/2027-01"].amount().amount_minor(), 1800000);
}

}  // namespace
}  // namespace labshare::billing
