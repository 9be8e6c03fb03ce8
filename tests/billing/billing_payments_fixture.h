// The fixture of billing's payment tests: billing in process over the
// booking fixture (real Redis, inventory in process, fake clock), a funded
// pool "voucher", and amounts owed put on the ledger by ADJUST corrections
// of the pool's top-up, without any booking. Shared by
// billing_payments_contract_test and billing_leftovers_test.
#ifndef LABSHARE_TESTS_BILLING_BILLING_PAYMENTS_FIXTURE_H_
#define LABSHARE_TESTS_BILLING_BILLING_PAYMENTS_FIXTURE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::billing {

using booking::BookingServiceTest;
using labshare::type::v1::Money;

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";
constexpr char kVoucher[] = "subsidyPools/voucher";

inline void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& reason) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorReason(s), reason) << s;
}

class BillingPaymentsContractTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    reader_ = std::make_unique<testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<BillingStore>(pool_.get());
    billing_ = NewBilling(reader_.get());
    v1::CreateSubsidyPoolRequest create;
    create.set_subsidy_pool_id("voucher");
    create.mutable_subsidy_pool()->set_display_name("Voucher");
    create.mutable_subsidy_pool()->set_currency_code("CNY");
    create.mutable_subsidy_pool()->set_percentage_bps(1000);
    ASSERT_TRUE(billing_->CreateSubsidyPool(admin_, create).ok());
    v1::TopUpSubsidyPoolRequest top;
    top.set_name(kVoucher);
    *top.mutable_amount() = Cny(1000000);
    ASSERT_TRUE(billing_->TopUpSubsidyPool(admin_, top).ok());
    v1::ListPostingsRequest list;
    list.set_kind(v1::POOL_TOP_UP);
    auto postings = billing_->ListPostings(admin_, list);
    ASSERT_TRUE(postings.ok() && postings->postings_size() == 1);
    top_up_ = postings->postings(0).name();
  }

  std::unique_ptr<BillingManager> NewBilling(InventoryReader* inventory) {
    return std::make_unique<BillingManager>(bstore_.get(), inventory, &clock_, *LoadBillingTimeZone("Asia/Shanghai"),
                                            labshare::testing::TestPageTokens());
  }
  // A billing manager whose inventory never answers.
  std::unique_ptr<BillingManager> CutOff() {
    unreachable_ = std::make_unique<GrpcInventoryReader>(
        grpc::CreateChannel("unix:/nonexistent/labshare-inventory.sock", grpc::InsecureChannelCredentials()));
    return NewBilling(unreachable_.get());
  }

  static Money Cny(int64_t amount) { return MakeMoney("CNY", amount); }

  // An ADJUST correction of the top-up with `entries` (account, counterparty,
  // signed amount: positive debits).
  void Adjust(const std::vector<std::tuple<std::string, std::string, int64_t>>& entries) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(top_up_);
    fix.set_mode(v1::PostCorrectionRequest::ADJUST);
    fix.set_reason("settled outside the booking system");
    for (const auto& [account, counterparty, amount] : entries) {
      v1::Entry* e = fix.add_entries();
      e->set_account(account);
      e->set_counterparty(counterparty);
      *(amount > 0 ? e->mutable_debit() : e->mutable_credit()) = Cny(std::abs(amount));
    }
    auto posted = billing_->PostCorrection(admin_, fix);
    ASSERT_TRUE(posted.ok()) << posted.status();
  }
  // `payer` owes `payee` `amount` (negative: `payee` owes `payer` back, a
  // credit on `payer`'s PAYABLE).
  void Owe(const std::string& payer, const std::string& payee, int64_t amount) {
    Adjust({{payer + "/accounts/expense", payee, amount},
            {payer + "/accounts/payable", payee, -amount},
            {payee + "/accounts/receivable", payer, amount},
            {payee + "/accounts/income", payer, -amount}});
  }

  v1::Invoice IssueJanuary(const std::string& payer) {
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
    v1::IssueInvoiceRequest r;
    r.set_payer_organization(payer);
    r.set_period("2027-01");
    auto inv = billing_->IssueInvoice(admin_, r);
    EXPECT_TRUE(inv.ok()) << inv.status();
    return inv.ok() ? *inv : v1::Invoice();
  }

  absl::StatusOr<v1::Settlement> ComputeJanuary() {
    v1::ComputeSettlementRequest r;
    r.set_period("2027-01");
    return billing_->ComputeSettlement(admin_, r);
  }

  absl::StatusOr<v1::Payment> Record(const v1::Payment& pay, const Principal* by = nullptr) {
    v1::RecordPaymentRequest r;
    *r.mutable_payment() = pay;
    return billing_->RecordPayment(by != nullptr ? *by : admin_, r);
  }
  absl::StatusOr<v1::Payment> Pay(const std::string& payer, const std::string& payee, int64_t amount,
                                  const std::string& invoice = "", const Principal* by = nullptr) {
    v1::Payment pay;
    pay.set_payer(payer);
    pay.set_payee(payee);
    *pay.mutable_amount() = Cny(amount);
    pay.set_invoice(invoice);
    return Record(pay, by);
  }
  // Transfer `index` of `s`, as computed.
  absl::StatusOr<v1::Payment> PayTransfer(const v1::Settlement& s, int index) {
    const v1::SettlementTransfer& t = s.transfers(index);
    v1::Payment pay;
    pay.set_settlement(s.name());
    pay.set_transfer_index(index);
    pay.set_payer(t.from_organization());
    pay.set_payee(t.to_organization());
    *pay.mutable_amount() = t.amount();
    return Record(pay);
  }

  // Debit minus credit of `account` with `counterparty`, in CNY.
  int64_t Balance(const std::string& account, const std::string& counterparty) {
    auto b = bstore_->Counters(keys::Balances(), {absl::StrCat(account, "|", counterparty, "|CNY")});
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? (*b)[0] : 0;
  }

  int PaymentCount() {
    auto payments = billing_->ListPayments(admin_, v1::ListPaymentsRequest());
    EXPECT_TRUE(payments.ok()) << payments.status();
    return payments.ok() ? payments->payments_size() : -1;
  }

  std::unique_ptr<testing::DirectInventory> reader_;
  std::unique_ptr<GrpcInventoryReader> unreachable_;
  std::unique_ptr<BillingStore> bstore_;
  std::unique_ptr<BillingManager> billing_;
  Principal admin_{"root", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  std::string top_up_;
};

}  // namespace labshare::billing

#endif  // LABSHARE_TESTS_BILLING_BILLING_PAYMENTS_FIXTURE_H_
