// Billing in process over the booking fixture (real Redis, inventory and
// booking over real gRPC, fake clock), with a third member organisation
// ("organizations/third", a university of tier GENERAL) and a subsidy pool
// "voucher" that pays 10 % of every charge, topped up with 10,000.00 CNY.
// Invoices can be made from ADJUST corrections of that top-up (Owe), which
// put exactly the amounts wanted on the payers' PAYABLE accounts without any
// booking; bookings are used and billed with Use (or Bill). Reads, REVERSE
// and sub-ledger balances by the consortium admin are here too. Shared by
// billing_contract_test, billing_audit2_test, billing_audit3_test,
// billing_audit4_test and usage_figures_test.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "services/billing/billing_common.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_store.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::billing::testing {

class BillingLedgerTest : public booking::BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    inventory::v1::CreateOrganizationRequest org;
    org.set_organization_id("third");
    org.mutable_organization()->set_display_name("third");
    org.mutable_organization()->set_type(inventory::v1::UNIVERSITY);
    org.mutable_organization()->set_membership_state(inventory::v1::MEMBER);
    org.mutable_organization()->set_tier("GENERAL");
    Inv(&inventory::v1::InventoryService::Stub::CreateOrganization, org);
    reader_ = std::make_unique<DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<BillingStore>(pool_.get());
    billing_ = std::make_unique<BillingManager>(bstore_.get(), reader_.get(), &clock_,
                                                *LoadBillingTimeZone("Asia/Shanghai"),
                                                labshare::testing::TestPageTokens());
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id("voucher");
    cp.mutable_subsidy_pool()->set_display_name("Voucher");
    cp.mutable_subsidy_pool()->set_currency_code("CNY");
    cp.mutable_subsidy_pool()->set_percentage_bps(1000);
    ASSERT_TRUE(billing_->CreateSubsidyPool(root_, cp).ok());
    v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/voucher");
    *top.mutable_amount() = MakeMoney("CNY", 1000000);
    ASSERT_TRUE(billing_->TopUpSubsidyPool(root_, top).ok());
    v1::ListPostingsRequest lp;
    lp.set_kind(v1::POOL_TOP_UP);
    auto postings = billing_->ListPostings(root_, lp);
    ASSERT_TRUE(postings.ok() && postings->postings_size() == 1);
    top_up_ = postings->postings(0).name();
  }

  // `payer` owes `payee` `amount` CNY from now on: an ADJUST correction of
  // `posting` (by default the top-up; Dr payer EXPENSE, Cr payer PAYABLE;
  // Dr payee RECEIVABLE, Cr payee INCOME). A negative amount is a credit
  // the payee owes back: the same accounts, each entry on the other side
  // (Dr payer PAYABLE, Cr payee RECEIVABLE). Its answer, or the error.
  absl::StatusOr<v1::PostCorrectionResponse> OweBy(const std::string& posting, const std::string& payer,
                                                   const std::string& payee, int64_t amount) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(posting);
    fix.set_mode(v1::PostCorrectionRequest::ADJUST);
    fix.set_reason("service outside the booking system");
    auto entry = [&](const std::string& owner, const char* kind, const std::string& cp, bool debit) {
      v1::Entry* e = fix.add_entries();
      e->set_account(owner + "/accounts/" + kind);
      e->set_counterparty(cp);
      *((debit != (amount < 0)) ? e->mutable_debit() : e->mutable_credit()) =
          MakeMoney("CNY", amount < 0 ? -amount : amount);
    };
    entry(payer, "expense", payee, true);
    entry(payer, "payable", payee, false);
    entry(payee, "receivable", payer, true);
    entry(payee, "income", payer, false);
    return billing_->PostCorrection(root_, fix);
  }

  void Owe(const std::string& payer, const std::string& payee, int64_t amount) {
    auto posted = OweBy(top_up_, payer, payee, amount);
    ASSERT_TRUE(posted.ok()) << posted.status();
  }

  // ana's lease of afm for `days` days from day_ + 24 h, approved at
  // 3,000.00 a day with a deposit of 1,000.00 (not handed over yet).
  booking::v1::Lease ApprovedLease(int days) {
    namespace bk = labshare::booking::v1;
    bk::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * (1 + days)));
    bk::Lease lease, out;
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::ApproveLeaseRequest a;
    a.set_name(lease.name());
    a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
    *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 100000);
    s = Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  // Bills every booking event so far, at the current clock (its posting
  // time); events billed before are applied once.
  void Bill() {
    for (const auto& e : Events()) {
      StreamEvent event{e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
      auto s = billing_->ApplyBookingEvent(event);
      ASSERT_TRUE(s.ok()) << s;
    }
  }

  // Checks `b` in at its start and out at its end (with the request_ids
  // given), then bills it.
  void Use(const booking::v1::Booking& b, const std::string& token, const std::string& check_in_id = "",
           const std::string& check_out_id = "") {
    namespace bk = labshare::booking::v1;
    bk::Booking done;
    clock_.Set(FromProto(b.reserved_interval().start_time()));
    bk::CheckInRequest in;
    in.set_name(b.name());
    in.set_request_id(check_in_id);
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::CheckIn, in, &done, token);
    ASSERT_TRUE(s.ok()) << s.error_message();
    clock_.Set(FromProto(b.reserved_interval().end_time()));
    bk::CheckOutRequest out;
    out.set_name(b.name());
    out.set_request_id(check_out_id);
    s = Call(stub_.get(), &bk::BookingService::Stub::CheckOut, out, &done, token);
    ASSERT_TRUE(s.ok()) << s.error_message();
    Bill();
  }

  // The one charge of `reference` (a booking, lease or project).
  v1::Charge ChargeOf(const std::string& reference) {
    v1::ListChargesRequest r;
    r.set_reference(reference);
    auto charges = billing_->ListCharges(root_, r);
    EXPECT_TRUE(charges.ok() && charges->charges_size() == 1) << charges.status();
    return charges.ok() && charges->charges_size() == 1 ? charges->charges(0) : v1::Charge();
  }

  // Issues `payer`'s invoice of January 2027 (the clock moves to February).
  v1::Invoice Issue(const std::string& payer) {
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
    v1::IssueInvoiceRequest r;
    r.set_payer_organization(payer);
    r.set_period("2027-01");
    auto inv = billing_->IssueInvoice(root_, r);
    EXPECT_TRUE(inv.ok()) << inv.status();
    return inv.ok() ? *inv : v1::Invoice();
  }

  // The BillingEvents published so far.
  std::vector<v1::BillingEvent> Published() {
    std::vector<v1::BillingEvent> out;
    auto raw = pool_->Command({"XRANGE", keys::Outbox(), "-", "+"});
    EXPECT_TRUE(raw.ok());
    if (!raw.ok()) return out;
    for (const auto& entry : raw->elements) {
      v1::BillingEvent e;
      EXPECT_TRUE(e.ParseFromString(entry.elements[1].elements[3].str));
      out.push_back(std::move(e));
    }
    return out;
  }

  // Posts `fix`, a correction of a SUBSIDY posting (or of a correction of
  // one) whose entries touch no income account, as billing did before such
  // corrections moved the payers' subsidised parts, and stores it so: the
  // correction without Posting.subsidised_delta_sent, its CorrectionPosted
  // without income_deltas; the ledger, the pools' balances, the cap usage
  // and the charge were as they are now. The correction's name, empty if it
  // failed.
  std::string PostTheOldWay(const v1::PostCorrectionRequest& fix) {
    auto done = billing_->PostCorrection(root_, fix);
    EXPECT_TRUE(done.ok()) << done.status();
    if (!done.ok()) return "";
    const std::string name = done->correction().name();
    const std::string key = keys::Doc("posting", IdOf(name));
    auto stored = pool_->Command({"HGET", key, "d"});
    v1::Posting posting;
    EXPECT_TRUE(stored.ok() && posting.ParseFromString(stored->str));
    posting.clear_subsidised_delta_sent();
    EXPECT_TRUE(pool_->Command({"HSET", key, "d", posting.SerializeAsString()}).ok());
    // Its event is the outbox's last entry: replaced by the old form's.
    auto last = pool_->Command({"XREVRANGE", keys::Outbox(), "+", "-", "COUNT", "1"});
    EXPECT_TRUE(last.ok() && last->elements.size() == 1);
    if (!last.ok() || last->elements.size() != 1) return "";
    v1::BillingEvent e;
    EXPECT_TRUE(e.ParseFromString(last->elements[0].elements[1].elements[3].str));
    EXPECT_EQ(e.correction_posted().correction().name(), name);
    e.mutable_correction_posted()->clear_income_deltas();
    e.mutable_correction_posted()->mutable_correction()->clear_subsidised_delta_sent();
    EXPECT_TRUE(pool_->Command({"XDEL", keys::Outbox(), last->elements[0].elements[0].str}).ok());
    EXPECT_TRUE(pool_->Command({"XADD", keys::Outbox(), "*", "type", "labshare.billing.v1.BillingEvent", "payload",
                                e.SerializeAsString()})
                    .ok());
    return name;
  }

  // Reverses the SUBSIDY posting `subsidy` on its own the old way
  // (PostTheOldWay: its entries are on the pool's, the payer's PAYABLE and
  // SUBSIDY_RECEIVED and the owner's RECEIVABLE accounts).
  std::string ReverseSubsidyTheOldWay(const std::string& subsidy) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(subsidy);
    fix.set_mode(v1::PostCorrectionRequest::REVERSE);
    fix.set_reason("granted in error");
    return PostTheOldWay(fix);
  }

  v1::SubsidyPool Pool(const std::string& name) {
    v1::GetSubsidyPoolRequest get;
    get.set_name(name);
    auto pool = billing_->GetSubsidyPool(root_, get);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? *pool : v1::SubsidyPool();
  }

  // olga, a user of the owner organisation qualified on tem, which the owner
  // uses internally at 200.00 an hour.
  std::string AddOwnerUser() {
    inventory::v1::CreateRateRequest rate;
    rate.set_parent("instruments/tem");
    rate.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
    rate.mutable_rate()->set_payer_class(labshare::type::v1::OWNER);
    rate.mutable_rate()->set_unit(inventory::v1::PER_HOUR);
    *rate.mutable_rate()->mutable_price() = MakeMoney("CNY", 20000);
    Inv(&inventory::v1::InventoryService::Stub::CreateRate, rate);
    inventory::v1::CreateUserRequest cu;
    cu.set_user_id("olga");
    cu.mutable_user()->set_display_name("olga");
    cu.mutable_user()->set_organization("organizations/owner");
    cu.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
    Inv(&inventory::v1::InventoryService::Stub::CreateUser, cu);
    inventory::v1::GrantQualificationRequest g;
    g.set_instrument("instruments/tem");
    g.set_user("users/olga");
    Inv(&inventory::v1::InventoryService::Stub::GrantQualification, g);
    return Token("olga", "owner", {Role::kLabUser});
  }

  // Reads by the consortium admin (an empty message on failure, recorded).
  v1::Invoice GetInvoice(const std::string& name) {
    v1::GetInvoiceRequest g;
    g.set_name(name);
    auto got = billing_->GetInvoice(root_, g);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Invoice();
  }
  v1::Posting GetPosting(const std::string& name) {
    v1::GetPostingRequest g;
    g.set_name(name);
    auto got = billing_->GetPosting(root_, g);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Posting();
  }
  v1::Settlement GetSettlement(const std::string& name) {
    v1::GetSettlementRequest g;
    g.set_name(name);
    auto got = billing_->GetSettlement(root_, g);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Settlement();
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

  // ComputeSettlement of January 2027 by the consortium admin.
  absl::StatusOr<v1::Settlement> ComputeJanuary() {
    v1::ComputeSettlementRequest cs;
    cs.set_period("2027-01");
    return billing_->ComputeSettlement(root_, cs);
  }

  // PostCorrection REVERSE of `posting` by the consortium admin.
  absl::StatusOr<v1::PostCorrectionResponse> Reverse(const std::string& posting, const std::string& why) {
    v1::PostCorrectionRequest rev;
    rev.set_posting(posting);
    rev.set_mode(v1::PostCorrectionRequest::REVERSE);
    rev.set_reason(why);
    return billing_->PostCorrection(root_, rev);
  }

  static Principal Member(const std::string& org) {
    return Principal{"member-of-" + org, org, {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  }

  std::unique_ptr<DirectInventory> reader_;
  std::unique_ptr<BillingStore> bstore_;
  std::unique_ptr<BillingManager> billing_;
  Principal root_{"root", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  std::string top_up_;
};

}  // namespace labshare::billing::testing
