// Invoice documents (billing.proto GetInvoiceDocument, file comment "Tax"):
// the tax rule and its rounding, the taxpayer-id check, CSV quoting, and
// invoices issued through the real billing service (inventory and booking in
// process on a real Redis, fake clock): the fapiao details copied at issue
// (an organisation edited afterwards does not change the document), the tax
// per line, VOID, the errors, and the PDF read back with pdftotext.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "services/billing/invoice_document.h"
#include "services/inventory/inventory_rules.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using booking::BookingServiceTest;

// ---------------------------------------------------------------- pure rules

TEST(TaxRule, RoundHalfUpOfAmountTimesRateOverOnePlusRate) {
  EXPECT_EQ(*TaxContained(10600, 600), 600);      // exactly 6 % of 100.00 net
  EXPECT_EQ(*TaxContained(1000, 600), 57);        // 56.60 -> 57
  EXPECT_EQ(*TaxContained(62500, 600), 3538);     // 3537.74 -> 3538
  EXPECT_EQ(*TaxContained(50000, 600), 2830);     // 2830.19 -> 2830
  EXPECT_EQ(*TaxContained(1, 600), 0);            // 0.057 -> 0
  EXPECT_EQ(*TaxContained(3, 2000), 1);           // 0.5 -> 1: half rounds up
  EXPECT_EQ(*TaxContained(9, 2000), 2);           // 1.5 -> 2
  EXPECT_EQ(*TaxContained(-3, 2000), -1);         // negative lines mirror positive ones
  EXPECT_EQ(*TaxContained(-62500, 600), -3538);
  EXPECT_EQ(*TaxContained(11300, 1300), 1300);    // 13 %
  EXPECT_EQ(*TaxContained(20000, 10000), 10000);  // 100 %
  EXPECT_EQ(*TaxContained(5000, 0), 0);           // a stated zero rate
  EXPECT_EQ(*TaxContained(1000000000000000, 600), 56603773584906);  // 10^15: exact, no overflow
  EXPECT_EQ(ErrorReason(TaxContained(100, -1).status()), "INVALID_FIELD");
  EXPECT_EQ(ErrorReason(TaxContained(100, 10001).status()), "INVALID_FIELD");
}

TEST(TaxpayerId, UnifiedSocialCreditCodeIsCheckedCharacterByCharacter) {
  using labshare::inventory::UnifiedSocialCreditCodeProblem;
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91350100M000100Y43"), "");  // GB 32100-2015's example
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91110000802100433B"), "");
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91350100M000100Y44"),
            "check character (18th) is '4', expected '3': a character was mistyped");
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91350100M000100Y4"), "must be 18 characters (统一社会信用代码), got 17");
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91350100m000100Y43"), "character 9 'm' must be upper case");
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91350100O000100Y43"),
            "character 9 'O' is not used in the code (no I, O, Z, S or V)");
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("9135A100M000100Y43"),
            "character 5 'A' must be a digit (characters 3-8 are the administrative division code)");
  EXPECT_EQ(UnifiedSocialCreditCodeProblem("91350100-000100Y43"), "character 9 must be a digit or an upper-case letter");

  iv::InvoicingDetails d;
  EXPECT_TRUE(labshare::inventory::ValidateInvoicingDetails(d).ok());  // none at all is fine
  d.set_bank_name("中国工商银行");
  EXPECT_EQ(ErrorReason(labshare::inventory::ValidateInvoicingDetails(d)), "INVALID_TAXPAYER_ID");
  d.set_taxpayer_id("91350100M000100Y43");
  const absl::Status missing = labshare::inventory::ValidateInvoicingDetails(d);
  EXPECT_EQ(ErrorReason(missing), "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(missing.ToString(), "legal_name")) << missing;
  EXPECT_TRUE(absl::StrContains(missing.ToString(), "registered_address")) << missing;
  EXPECT_TRUE(absl::StrContains(missing.ToString(), "bank_account")) << missing;
  d.set_legal_name("示例有限公司");
  d.set_registered_address("福州市鼓楼区");
  d.set_bank_account("6222 0210 0100");
  d.set_phone("0591-8888 1234");
  EXPECT_TRUE(labshare::inventory::ValidateInvoicingDetails(d).ok());
  d.set_bank_account("6222-0210");
  EXPECT_EQ(ErrorReason(labshare::inventory::ValidateInvoicingDetails(d)), "INVALID_FIELD");
  d.set_bank_account("6222 0210 0100");
  // No line breaks or text-direction controls in the printed blocks.
  d.set_legal_name("示例有限公司\n银行账号 6222");
  absl::Status controls = labshare::inventory::ValidateInvoicingDetails(d);
  EXPECT_EQ(ErrorReason(controls), "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(controls.ToString(), "legal_name")) << controls;
  d.set_legal_name("示例有限公司");
  d.set_bank_name("银行\xE2\x80\xAE" "4321");  // U+202E RIGHT-TO-LEFT OVERRIDE
  controls = labshare::inventory::ValidateInvoicingDetails(d);
  EXPECT_EQ(ErrorReason(controls), "INVALID_FIELD");
  EXPECT_TRUE(absl::StrContains(controls.ToString(), "bank_name")) << controls;
}

TEST(Csv, FieldsAreQuotedOnlyWhenRfc4180NeedsIt) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("浙江大学"), "浙江大学");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\r\nlines"), "\"two\r\nlines\"");
  // Cells a spreadsheet would run as formulas stay text; amounts stay numbers.
  EXPECT_EQ(CsvField("=HYPERLINK(\"https://evil.example\",\"ZJU\")"),
            "\"'=HYPERLINK(\"\"https://evil.example\"\",\"\"ZJU\"\")\"");
  EXPECT_EQ(CsvField("+86 571"), "'+86 571");
  EXPECT_EQ(CsvField("@SUM(A1)"), "'@SUM(A1)");
  EXPECT_EQ(CsvField("-cmd"), "'-cmd");
  EXPECT_EQ(CsvField("-12.34", /*numeric=*/true), "-12.34");
  EXPECT_EQ(CsvField("6%", /*numeric=*/true), "6%");
  EXPECT_EQ(CsvField("-cmd", /*numeric=*/true), "'-cmd");
  // A text cell that only looks like a number is text all the same: a
  // void reason "-100", a name "-5%" (formula-like first character).
  EXPECT_EQ(CsvField("-100"), "'-100");
  EXPECT_EQ(CsvField("-5%"), "'-5%");
  EXPECT_EQ(CsvField("-12.34"), "'-12.34");
  EXPECT_EQ(CsvField("6%"), "6%");  // nothing a spreadsheet would run
  EXPECT_EQ(FormatAmount(123456, "CNY"), "1234.56");
  EXPECT_EQ(FormatAmount(-5, "CNY"), "-0.05");
  EXPECT_EQ(FormatAmount(0, "CNY"), "0.00");
  EXPECT_EQ(FormatAmount(1234, "JPY"), "1234");
  EXPECT_EQ(FormatAmount(1234567, "KWD"), "1234.567");
  EXPECT_EQ(FormatAmount(-5, "BHD"), "-0.005");
  EXPECT_EQ(FormatAmount(0, "TND"), "0.000");
  EXPECT_EQ(FormatAmount(-1500, "XOF"), "-1500");
  EXPECT_EQ(FormatTaxRate(600), "6%");
  EXPECT_EQ(FormatTaxRate(650), "6.5%");
  EXPECT_EQ(FormatTaxRate(1325), "13.25%");
  EXPECT_EQ(FormatQuantity(2500), "2.5");
  EXPECT_EQ(FormatQuantity(1250), "1.25");
  EXPECT_EQ(FormatQuantity(12000), "12");
}

// ---------------------------------------------------------------- through billing

std::string Run(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// pdftotext of a PDF (poppler-utils), as UTF-8 text.
std::string PdfText(const std::string& pdf, const std::string& tag) {
  const std::string path = ::testing::TempDir() + "/invoice-" + tag + ".pdf";
  std::ofstream(path, std::ios::binary) << pdf;
  return Run("pdftotext -enc UTF-8 -layout '" + path + "' -");
}

// An invoice built by hand: 60 lines of every kind, two payees, a
// zero-decimal check of the layout across pages; rendered from 4 threads at
// once (the service renders on gRPC's threads) to the same bytes.
v1::Invoice ManyLines() {
  v1::Invoice inv;
  inv.set_name("invoices/ls-cny-2027-000007");
  inv.set_number("LS-CNY-2027-000007");
  inv.set_state(v1::Invoice::ISSUED);
  inv.set_payer_organization("organizations/nanocraft");
  inv.set_period("2027-03");
  inv.set_currency_code("CNY");
  *inv.mutable_issue_time() = ToProto(absl::FromCivil(absl::CivilSecond(2027, 4, 1, 2, 0, 0), absl::UTCTimeZone()));
  *inv.mutable_due_time() = ToProto(absl::FromCivil(absl::CivilSecond(2027, 5, 1, 2, 0, 0), absl::UTCTimeZone()));
  auto* payer = inv.mutable_payer_party();
  payer->set_organization("organizations/nanocraft");
  payer->set_display_name("NanoCraft Materials");
  payer->set_legal_name("纳米工坊材料科技（杭州）有限公司");
  for (const char* org : {"sjtu", "zju"}) {
    auto* p = inv.add_payee_parties();
    p->set_organization(absl::StrCat("organizations/", org));
    p->set_display_name(org);
    p->set_legal_name(std::string(org) == "zju" ? "浙江大学" : "上海交通大学");
    auto* pb = inv.add_payees();
    pb->set_organization(p->organization());
  }
  int64_t due = 0, tax = 0;
  for (int i = 1; i <= 60; ++i) {
    auto* l = inv.add_lines();
    l->set_line_number(i);
    l->set_kind(i % 3 == 2 ? v1::InvoiceLine::SUBSIDY : v1::InvoiceLine::CHARGE);
    l->set_payee_organization(i % 2 ? "organizations/zju" : "organizations/sjtu");
    l->set_fee_kind(v1::USAGE);
    l->set_mode(labshare::type::v1::ON_SITE);
    l->set_instrument("instruments/sem-1");
    l->set_subsidy_pool("subsidyPools/sme-voucher");
    l->set_quantity_milli(1500);
    l->set_unit(v1::UNIT_HOUR);
    *l->mutable_unit_price() = MakeMoney("CNY", 48000);
    const int64_t amount = l->kind() == v1::InvoiceLine::SUBSIDY ? -36000 : 72000;
    *l->mutable_amount() = MakeMoney("CNY", amount);
    l->set_tax_rate_bps(600);
    *l->mutable_tax_amount() = MakeMoney("CNY", *TaxContained(amount, 600));
    due += amount;
    tax += l->tax_amount().amount_minor();
  }
  *inv.mutable_amount_due() = MakeMoney("CNY", due);
  *inv.mutable_amount_outstanding() = MakeMoney("CNY", due);
  *inv.mutable_tax_total() = MakeMoney("CNY", tax);
  return inv;
}

TEST(InvoicePdf, ManyLinesRunOverPagesAndThreadsRenderTheSameBytes) {
  const v1::Invoice inv = ManyLines();
  const absl::TimeZone zone = *LoadBillingTimeZone("Asia/Shanghai");
  auto once = InvoicePdf(inv, zone);
  ASSERT_TRUE(once.ok()) << once.status();
  std::vector<std::string> out(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto pdf = InvoicePdf(inv, zone);
      if (pdf.ok()) out[i] = *pdf;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& pdf : out) EXPECT_TRUE(pdf == *once) << "a thread rendered other bytes";
  const std::string text = PdfText(*once, "many");
  EXPECT_GE(std::count(text.begin(), text.end(), '\f'), 2) << "60 lines fit on one A4 page?";
  EXPECT_TRUE(absl::StrContains(text, "上海交通大学"));
  EXPECT_TRUE(absl::StrContains(text, "21600.00 CNY"));  // 40 x 720.00 - 20 x 360.00
  EXPECT_TRUE(absl::StrContains(text, "1222.40 CNY"));   // 40 x 40.75 - 20 x 20.38
  EXPECT_TRUE(absl::StrContains(text, "2027-04-01"));  // issued at 10:00 in Shanghai
  int lines = 0;
  for (absl::string_view row : absl::StrSplit(text, '\n')) {
    if (absl::StrContains(row, "720.00") || absl::StrContains(row, "-360.00")) ++lines;
  }
  EXPECT_EQ(lines, 60);
}

// GetInvoiceDocument: "a text cell that begins with =, +, -, @, tab or CR
// is prefixed with an apostrophe". The invoice's void reason "-100" and the
// payer's short name "-5%" are text; the amounts in the amount columns and
// the totals' values stay numbers.
TEST(InvoiceCsv, TextLookingLikeANegativeNumberIsPrefixedAmountsAreNot) {
  v1::Invoice inv = ManyLines();
  inv.set_state(v1::Invoice::VOID);
  *inv.mutable_void_time() = inv.due_time();
  inv.set_void_reason("-100");
  inv.mutable_payer_party()->set_display_name("-5%");
  *inv.mutable_subsidy_total() = MakeMoney("CNY", -720000);
  const std::string csv = InvoiceCsv(inv, *LoadBillingTimeZone("Asia/Shanghai"));
  EXPECT_TRUE(absl::StrContains(csv, "\r\ninvoice,void_reason,'-100,,,,,,,,,,,\r\n")) << csv;
  EXPECT_TRUE(absl::StrContains(csv, "\r\npayer,display_name,'-5%,organizations/nanocraft,,,,,,,,,,\r\n")) << csv;
  EXPECT_TRUE(absl::StrContains(csv, "\r\ntotal,subsidy_total,-7200.00,,,,,,,,,,,CNY\r\n")) << csv;
  EXPECT_TRUE(absl::StrContains(csv, ",,,,-360.00,6%,-20.38,CNY\r\n")) << csv;
  EXPECT_FALSE(absl::StrContains(csv, "'-360.00")) << csv;
  EXPECT_FALSE(absl::StrContains(csv, "'-7200.00")) << csv;
}

// GetInvoiceDocument shows "the payer and every payee ... with the fapiao
// details copied" and Invoice.payee_parties lists the payees named only by
// memo lines (the owner that kept a deposit) after the payees: the document
// prints that payee's details too, without an amount due (it is owed
// nothing on this invoice).
TEST(InvoiceDocument, APayeeNamedOnlyByAMemoLineIsPrintedWithoutAnAmountDue) {
  v1::Invoice inv;
  inv.set_name("invoices/ls-cny-2027-000008");
  inv.set_number("LS-CNY-2027-000008");
  inv.set_state(v1::Invoice::ISSUED);
  inv.set_payer_organization("organizations/nanocraft");
  inv.set_period("2027-03");
  inv.set_currency_code("CNY");
  *inv.mutable_issue_time() = ToProto(absl::FromCivil(absl::CivilSecond(2027, 4, 1, 2, 0, 0), absl::UTCTimeZone()));
  *inv.mutable_due_time() = ToProto(absl::FromCivil(absl::CivilSecond(2027, 5, 1, 2, 0, 0), absl::UTCTimeZone()));
  inv.mutable_payer_party()->set_organization("organizations/nanocraft");
  inv.mutable_payer_party()->set_display_name("NanoCraft");
  auto* zju = inv.add_payee_parties();
  zju->set_organization("organizations/zju");
  zju->set_display_name("ZJU");
  zju->set_legal_name("浙江大学");
  zju->set_taxpayer_id("12330000470003281H");
  auto* sjtu = inv.add_payee_parties();  // named only by the memo line
  sjtu->set_organization("organizations/sjtu");
  sjtu->set_display_name("SJTU");
  sjtu->set_legal_name("上海交通大学");
  sjtu->set_taxpayer_id("12310000425004183R");
  auto* owed = inv.add_payees();
  owed->set_organization("organizations/zju");
  *owed->mutable_amount_due() = MakeMoney("CNY", 100000);
  auto* charge = inv.add_lines();
  charge->set_line_number(1);
  charge->set_kind(v1::InvoiceLine::CHARGE);
  charge->set_description("SEM imaging");
  charge->set_payee_organization("organizations/zju");
  *charge->mutable_amount() = MakeMoney("CNY", 100000);
  auto* memo = inv.add_lines();
  memo->set_line_number(2);
  memo->set_kind(v1::InvoiceLine::DEPOSIT_APPLIED);
  memo->set_description("deposit kept for damage");
  memo->set_payee_organization("organizations/sjtu");
  *memo->mutable_amount() = MakeMoney("CNY", 0);
  *memo->mutable_memo_amount() = MakeMoney("CNY", 50000);
  *inv.mutable_amount_due() = MakeMoney("CNY", 100000);
  const absl::TimeZone zone = *LoadBillingTimeZone("Asia/Shanghai");

  const std::string csv = InvoiceCsv(inv, zone);
  EXPECT_TRUE(absl::StrContains(csv, "\r\npayee,legal_name,浙江大学,organizations/zju,,,,,,,,,,\r\n")) << csv;
  EXPECT_TRUE(absl::StrContains(csv, "\r\npayee,amount_due,1000.00,organizations/zju,,,,,,,,,,CNY\r\n")) << csv;
  EXPECT_TRUE(absl::StrContains(csv, "\r\npayee,legal_name,上海交通大学,organizations/sjtu,,,,,,,,,,\r\n")) << csv;
  EXPECT_TRUE(absl::StrContains(csv, "\r\npayee,taxpayer_id,12310000425004183R,organizations/sjtu,,,,,,,,,,\r\n"))
      << csv;
  EXPECT_FALSE(absl::StrContains(csv, "payee,amount_due,0.00,organizations/sjtu")) << csv;
  // Payee rows come before the lines: the memo-only payee's too.
  EXPECT_LT(csv.find("organizations/sjtu,,,,,,,,,,"), csv.find("\r\nline,")) << csv;

  auto pdf = InvoicePdf(inv, zone);
  ASSERT_TRUE(pdf.ok()) << pdf.status();
  const std::string text = PdfText(*pdf, "memo-payee");
  for (const char* want : {"上海交通大学", "12310000425004183R", "浙江大学", "12330000470003281H", "1000.00 CNY"}) {
    EXPECT_TRUE(absl::StrContains(text, want)) << want << " missing from:\n" << text;
  }
  EXPECT_FALSE(absl::StrContains(text, "Due to it: 0.00")) << text;
}

class InvoiceDocumentTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    reader_ = std::make_unique<testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<BillingStore>(pool_.get());
    billing_ = std::make_unique<BillingManager>(bstore_.get(), reader_.get(), &clock_,
                                                *LoadBillingTimeZone("Asia/Shanghai"),
                                                labshare::testing::TestPageTokens());
    for (int p = 0; p < booking::kPartitions; ++p) {
      ConsumerOptions o;
      o.stream = booking::keys::Outbox(p);
      o.group = kBookingEventsGroup;
      o.consumer = "billing-test";
      o.block = absl::ZeroDuration();
      consumers_.push_back(std::make_unique<EventConsumer>(pool_.get(), o));
      ASSERT_TRUE(consumers_.back()->EnsureGroup().ok());
    }
    root_.user_id = "root";
    root_.roles = {Role::kConsortiumAdmin};
  }

  void Drain() {
    for (int round = 0; round < 10; ++round) {
      int n = 0;
      for (auto& c : consumers_) {
        auto applied = c->PollOnce([&](const StreamEvent& e) { return billing_->ApplyBookingEvent(e); });
        ASSERT_TRUE(applied.ok()) << applied.status();
        n += *applied;
      }
      if (n == 0) break;
    }
  }

  void Session(absl::Duration from, absl::Duration to) {
    bk::Booking b, done;
    ASSERT_TRUE(Book(from, to, &b).ok());
    clock_.Set(day_ + from);
    bk::CheckInRequest ci;
    ci.set_name(b.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_).ok());
    clock_.Set(day_ + to);
    bk::CheckOutRequest co;
    co.set_name(b.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &done, ana_).ok());
  }

  absl::StatusOr<iv::Organization> SetDetails(const Principal& who, const std::string& org,
                                              const iv::InvoicingDetails& d, const std::string& request_id,
                                              const std::string& path = "invoicing_details") {
    iv::UpdateOrganizationRequest r;
    r.mutable_organization()->set_name("organizations/" + org);
    *r.mutable_organization()->mutable_invoicing_details() = d;
    r.mutable_update_mask()->add_paths(path);
    r.set_request_id(request_id);
    return inv_manager_->UpdateOrganization(who, r);
  }

  absl::StatusOr<v1::InvoiceDocument> Document(const Principal& who, const std::string& name,
                                               v1::GetInvoiceDocumentRequest::Format format) {
    v1::GetInvoiceDocumentRequest r;
    r.set_name(name);
    r.set_format(format);
    return billing_->GetInvoiceDocument(who, r);
  }

  std::unique_ptr<testing::DirectInventory> reader_;
  std::unique_ptr<BillingStore> bstore_;
  std::unique_ptr<BillingManager> billing_;
  std::vector<std::unique_ptr<EventConsumer>> consumers_;
  Principal root_;
};

iv::InvoicingDetails LabDetails() {
  iv::InvoicingDetails d;
  d.set_legal_name("纳米工坊材料科技（杭州）有限公司");
  d.set_taxpayer_id("91330110MA2H3K5L7B");
  d.set_registered_address("浙江省杭州市余杭区文一西路1818号");
  d.set_phone("0571-8888 1234");
  d.set_bank_name("中国工商银行杭州余杭支行");
  d.set_bank_account("1202 0215 0910 0123 456");
  return d;
}

iv::InvoicingDetails OwnerDetails() {
  iv::InvoicingDetails d;
  d.set_legal_name("浙江大学");
  d.set_taxpayer_id("12330000470003281H");
  d.set_registered_address("浙江省杭州市西湖区余杭塘路866号");
  d.set_phone("0571-8795 1111");
  d.set_bank_name("中国银行杭州浙大支行");
  d.set_bank_account("3731 5832 5823");
  return d;
}

// The lab's billing admin keeps its own fapiao details; the taxpayer id is
// checked with precise reasons; tem's rate card line states 6 %; the issued
// invoice carries the parties and the tax; the document never changes after
// the organisation edits its details; a voided invoice is marked VOID.
TEST_F(InvoiceDocumentTest, IssuedDocumentCarriesFapiaoDetailsAndTaxAndNeverChanges) {
  Principal lab_admin{"lena", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  Principal owner_admin{"olga", "owner", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  Principal other{"otto", "outsider", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  iv::InvoicingDetails bad = LabDetails();
  bad.set_taxpayer_id("91330110MA2H3K5L7C");
  auto refused = SetDetails(lab_admin, "lab", bad, "d-0");
  EXPECT_EQ(ErrorReason(refused.status()), "INVALID_TAXPAYER_ID");
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "expected 'B'")) << refused.status();
  ASSERT_TRUE(SetDetails(lab_admin, "lab", LabDetails(), "d-1").ok());
  EXPECT_EQ(ErrorReason(SetDetails(lab_admin, "owner", LabDetails(), "d-2").status()), "ORGANIZATION_SCOPE");
  EXPECT_EQ(ErrorReason(SetDetails(lab_admin, "lab", LabDetails(), "d-3", "display_name").status()),
            "ROLE_NOT_ALLOWED");
  ASSERT_TRUE(SetDetails(root_, "owner", OwnerDetails(), "d-4").ok());
  // Through gRPC (the interceptor's role table, then the manager's scope):
  // the lab's billing admin may, a lab user may not (ROLE_NOT_ALLOWED).
  {
    iv::UpdateOrganizationRequest r;
    r.mutable_organization()->set_name("organizations/lab");
    *r.mutable_organization()->mutable_invoicing_details() = LabDetails();
    r.mutable_update_mask()->add_paths("invoicing_details");
    r.set_request_id("d-grpc");
    iv::Organization o;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::UpdateOrganization, r, &o,
                     Token("lena", "lab", {Role::kMemberBillingAdmin})).ok());
    EXPECT_EQ(o.invoicing_details().taxpayer_id(), "91330110MA2H3K5L7B");
    r.set_request_id("d-grpc-2");
    EXPECT_EQ(GrpcErrorReason(Call(inventory_.get(), &iv::InventoryService::Stub::UpdateOrganization, r, &o, ana_)),
              "ROLE_NOT_ALLOWED");
  }

  // tem's member line from now on: 500.00 an hour, 6 % VAT included.
  iv::CreateRateRequest rate;
  rate.set_parent("instruments/tem");
  rate.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
  rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
  rate.mutable_rate()->set_unit(iv::PER_HOUR);
  rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
  rate.mutable_rate()->mutable_price()->set_amount_minor(50000);
  rate.mutable_rate()->set_tax_rate_bps(600);
  *rate.mutable_rate()->mutable_effective_time() = ToProto(clock_.Now() + absl::Minutes(1));
  rate.mutable_rate()->set_tax_rate_bps(10001);
  iv::Rate created;
  EXPECT_EQ(GrpcErrorReason(Call(inventory_.get(), &iv::InventoryService::Stub::CreateRate, rate, &created, admin_)),
            "INVALID_FIELD");
  rate.mutable_rate()->set_tax_rate_bps(600);
  Inv(&iv::InventoryService::Stub::CreateRate, rate);

  Session(absl::Hours(9), absl::Hours(10) + absl::Minutes(15));   // 625.00
  Session(absl::Hours(13), absl::Hours(14));                      // 500.00
  Drain();
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("inv-1");
  auto inv = billing_->IssueInvoice(root_, issue);
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_EQ(inv->lines_size(), 2);
  EXPECT_EQ(inv->lines(0).amount().amount_minor(), 62500);
  EXPECT_EQ(inv->lines(0).tax_rate_bps(), 600);
  EXPECT_EQ(inv->lines(0).tax_amount().amount_minor(), 3538);
  EXPECT_EQ(inv->lines(1).tax_amount().amount_minor(), 2830);
  EXPECT_EQ(inv->tax_total().amount_minor(), 6368);
  EXPECT_EQ(inv->amount_due().amount_minor(), 112500);
  EXPECT_EQ(inv->payer_party().legal_name(), "纳米工坊材料科技（杭州）有限公司");
  EXPECT_EQ(inv->payer_party().taxpayer_id(), "91330110MA2H3K5L7B");
  ASSERT_EQ(inv->payee_parties_size(), 1);
  EXPECT_EQ(inv->payee_parties(0).organization(), "organizations/owner");
  EXPECT_EQ(inv->payee_parties(0).legal_name(), "浙江大学");
  EXPECT_EQ(inv->payee_parties(0).bank_account(), "3731 5832 5823");

  // CSV: the whole document, exactly.
  auto csv = Document(lab_admin, inv->name(), v1::GetInvoiceDocumentRequest::CSV);
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_EQ(csv->content_type(), "text/csv; charset=utf-8");
  EXPECT_EQ(csv->filename(), "LS-CNY-2027-000001.csv");
  const std::vector<std::string> rows = absl::StrSplit(csv->content(), "\r\n");
  ASSERT_GE(rows.size(), 30u) << csv->content();
  EXPECT_EQ(rows[0], "\xEF\xBB\xBF" "record,key,value,organization,line_number,kind,description,quantity,unit,unit_price,amount,"
                     "tax_rate,tax_amount,currency");
  EXPECT_EQ(rows[1], "invoice,number,LS-CNY-2027-000001,,,,,,,,,,,");
  EXPECT_EQ(rows[2], "invoice,state,ISSUED,,,,,,,,,,,");
  EXPECT_EQ(rows[3], "invoice,period,2027-01,,,,,,,,,,,");
  EXPECT_EQ(rows[4], "invoice,issue_date,2027-02-02,,,,,,,,,,,");
  EXPECT_EQ(rows[7], "payer,legal_name,纳米工坊材料科技（杭州）有限公司,organizations/lab,,,,,,,,,,");
  EXPECT_EQ(rows[9], "payer,taxpayer_id,91330110MA2H3K5L7B,organizations/lab,,,,,,,,,,");
  EXPECT_EQ(rows[14], "payee,legal_name,浙江大学,organizations/owner,,,,,,,,,,");
  EXPECT_EQ(rows[21], "payee,amount_due,1125.00,organizations/owner,,,,,,,,,,CNY");
  EXPECT_TRUE(absl::StartsWith(rows[22], "line,,,organizations/owner,1,CHARGE,")) << rows[22];
  EXPECT_TRUE(absl::EndsWith(rows[22], ",1.25,UNIT_HOUR,500.00,625.00,6%,35.38,CNY")) << rows[22];
  EXPECT_TRUE(absl::EndsWith(rows[23], ",1,UNIT_HOUR,500.00,500.00,6%,28.30,CNY")) << rows[23];
  EXPECT_EQ(rows[28], "total,amount_due,1125.00,,,,,,,,,,,CNY");
  EXPECT_EQ(rows[29], "total,tax_total,63.68,,,,,,,,,,,CNY");

  // PDF, read back by poppler: number, period, Chinese names, amounts, tax, totals.
  auto pdf = Document(owner_admin, inv->name(), v1::GetInvoiceDocumentRequest::PDF);  // a payee may read it
  ASSERT_TRUE(pdf.ok()) << pdf.status();
  EXPECT_EQ(pdf->content_type(), "application/pdf");
  EXPECT_EQ(pdf->filename(), "LS-CNY-2027-000001.pdf");
  ASSERT_TRUE(absl::StartsWith(pdf->content(), "%PDF-"));
  const std::string text = PdfText(pdf->content(), "issued");
  for (const char* want : {"LS-CNY-2027-000001", "2027-01", "2027-02-02", "纳米工坊材料科技（杭州）有限公司", "浙江大学",
                           "91330110MA2H3K5L7B", "12330000470003281H", "浙江省杭州市西湖区余杭塘路866号",
                           "中国银行杭州浙大支行", "3731 5832 5823", "625.00", "500.00", "35.38", "28.30", "6%",
                           "1125.00 CNY", "63.68 CNY", "已开具 ISSUED"}) {
    EXPECT_TRUE(absl::StrContains(text, want)) << want << " missing from:\n" << text;
  }
  EXPECT_FALSE(absl::StrContains(text, "VOID"));
  // Deterministic: the same bytes again, later.
  clock_.Advance(absl::Hours(5));
  auto again = Document(root_, inv->name(), v1::GetInvoiceDocumentRequest::PDF);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->content() == pdf->content()) << "the PDF of an unchanged invoice changed";

  // The lab moves and changes banks: the issued document stays as it was.
  iv::InvoicingDetails moved = LabDetails();
  moved.set_registered_address("上海市浦东新区张江路1号");
  moved.set_bank_name("招商银行上海张江支行");
  ASSERT_TRUE(SetDetails(lab_admin, "lab", moved, "d-5").ok());
  auto after = Document(root_, inv->name(), v1::GetInvoiceDocumentRequest::PDF);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->content() == pdf->content()) << "editing the organisation changed an issued document";
  auto csv_after = Document(root_, inv->name(), v1::GetInvoiceDocumentRequest::CSV);
  ASSERT_TRUE(csv_after.ok());
  EXPECT_EQ(csv_after->content(), csv->content());

  // Errors and scope.
  EXPECT_EQ(ErrorReason(Document(other, inv->name(), v1::GetInvoiceDocumentRequest::PDF).status()),
            "ORGANIZATION_SCOPE");
  EXPECT_EQ(ErrorReason(Document(root_, inv->name(), v1::GetInvoiceDocumentRequest::FORMAT_UNSPECIFIED).status()),
            "INVALID_FIELD");
  EXPECT_EQ(ErrorReason(Document(root_, "bills/x", v1::GetInvoiceDocumentRequest::PDF).status()), "INVALID_NAME");
  EXPECT_EQ(ErrorReason(Document(root_, "invoices/ls-cny-2027-000099", v1::GetInvoiceDocumentRequest::PDF).status()),
            "INVOICE_NOT_FOUND");

  // Voided: marked VOID in both formats; the rest as issued.
  v1::VoidInvoiceRequest void_req;
  void_req.set_name(inv->name());
  void_req.set_reason("wrong period");
  void_req.set_request_id("void-1");
  ASSERT_TRUE(billing_->VoidInvoice(root_, void_req).ok());
  auto void_pdf = Document(root_, inv->name(), v1::GetInvoiceDocumentRequest::PDF);
  ASSERT_TRUE(void_pdf.ok());
  const std::string void_text = PdfText(void_pdf->content(), "void");
  EXPECT_TRUE(absl::StrContains(void_text, "VOID 作废")) << void_text;
  EXPECT_TRUE(absl::StrContains(void_text, "wrong period")) << void_text;
  EXPECT_TRUE(absl::StrContains(void_text, "浙江省杭州市余杭区文一西路1818号")) << "the address as issued";
  auto void_csv = Document(root_, inv->name(), v1::GetInvoiceDocumentRequest::CSV);
  ASSERT_TRUE(void_csv.ok());
  EXPECT_TRUE(absl::StrContains(void_csv->content(), "\r\ninvoice,state,VOID,,,,,,,,,,,\r\n"));
  EXPECT_TRUE(absl::StrContains(void_csv->content(), "\r\ninvoice,void_reason,wrong period,,,,,,,,,,,\r\n"));

  // Re-issued after the void: the parties as they stand now.
  issue.set_request_id("inv-2");
  auto reissued = billing_->IssueInvoice(root_, issue);
  ASSERT_TRUE(reissued.ok()) << reissued.status();
  EXPECT_EQ(reissued->payer_party().registered_address(), "上海市浦东新区张江路1号");
}

// InvoiceLine.late: "True for a line from activity of an earlier period
// (arrived after that period's invoice was issued ...)". A January session
// whose check-out billing consumes only on 3 February, after January's
// invoice was issued on 2 February, is charged then (posting times are never
// back-dated) and lands on February's invoice: late, and marked so in the
// CSV and the PDF; February's own session on the same invoice is not.
TEST_F(InvoiceDocumentTest, ActivityBilledAfterItsPeriodsInvoiceWasIssuedIsLate) {
  Session(absl::Hours(9), absl::Hours(10));  // 500.00, January 3
  Drain();
  Session(absl::Hours(12), absl::Hours(13));  // 500.00, January 3, not consumed yet
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("jan");
  auto january = billing_->IssueInvoice(root_, issue);
  ASSERT_TRUE(january.ok()) << january.status();
  ASSERT_EQ(january->lines_size(), 1);
  EXPECT_FALSE(january->lines(0).late());

  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 3), absl::UTCTimeZone()));
  Drain();  // the January check-out, charged on February 3
  day_ = clock_.Now();
  Session(absl::Hours(9), absl::Hours(10));  // 500.00, February 3
  Drain();
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 3, 2), absl::UTCTimeZone()));
  issue.set_period("2027-02");
  issue.set_request_id("feb");
  auto february = billing_->IssueInvoice(root_, issue);
  ASSERT_TRUE(february.ok()) << february.status();
  ASSERT_EQ(february->lines_size(), 2);
  const v1::InvoiceLine& from_january = february->lines(0);  // by service interval
  const v1::InvoiceLine& own = february->lines(1);
  EXPECT_LT(FromProto(from_january.service_interval().end_time()),
            absl::FromCivil(absl::CivilDay(2027, 2, 1), *LoadBillingTimeZone("Asia/Shanghai")));
  EXPECT_TRUE(from_january.late());
  EXPECT_EQ(from_january.amount().amount_minor(), 50000);
  EXPECT_FALSE(own.late());
  EXPECT_EQ(own.amount().amount_minor(), 50000);
  EXPECT_EQ(february->amount_due().amount_minor(), 100000);

  auto csv = Document(root_, february->name(), v1::GetInvoiceDocumentRequest::CSV);
  ASSERT_TRUE(csv.ok()) << csv.status();
  std::vector<std::string> lines;
  for (absl::string_view row : absl::StrSplit(csv->content(), "\r\n")) {
    if (absl::StartsWith(row, "line,")) lines.emplace_back(row);
  }
  ASSERT_EQ(lines.size(), 2u) << csv->content();
  EXPECT_TRUE(absl::StrContains(lines[0], "[上期 late]")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "2027-01-03")) << lines[0];
  EXPECT_FALSE(absl::StrContains(lines[1], "late")) << lines[1];
  auto pdf = Document(root_, february->name(), v1::GetInvoiceDocumentRequest::PDF);
  ASSERT_TRUE(pdf.ok()) << pdf.status();
  const std::string text = PdfText(pdf->content(), "late");
  EXPECT_TRUE(absl::StrContains(text, "上期")) << text;
  auto january_pdf = Document(root_, january->name(), v1::GetInvoiceDocumentRequest::PDF);
  ASSERT_TRUE(january_pdf.ok()) << january_pdf.status();
  EXPECT_FALSE(absl::StrContains(PdfText(january_pdf->content(), "not-late"), "上期"));
}

// A SUBSIDY line is printed with the pool's funder as the pool names it
// (SubsidyPool.funder_display_name: "as printed on invoices"), kept on the
// issued invoice: renaming the pool afterwards changes no issued document.
TEST_F(InvoiceDocumentTest, SubsidyLinesNameTheFunderAsTheInvoiceWasIssued) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  cp.mutable_subsidy_pool()->set_display_name("Voucher");
  cp.mutable_subsidy_pool()->set_funder_display_name("Provincial S&T Department voucher 2027");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(2000);
  ASSERT_TRUE(billing_->CreateSubsidyPool(root_, cp).ok());
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  *top.mutable_amount() = MakeMoney("CNY", 1000000);
  ASSERT_TRUE(billing_->TopUpSubsidyPool(root_, top).ok());

  Session(absl::Hours(9), absl::Hours(10));  // 500.00, of which 100.00 subsidised
  Drain();
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()));
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("jan");
  auto january = billing_->IssueInvoice(root_, issue);
  ASSERT_TRUE(january.ok()) << january.status();
  ASSERT_EQ(january->lines_size(), 2);
  const v1::InvoiceLine& subsidy = january->lines(1);
  ASSERT_EQ(subsidy.kind(), v1::InvoiceLine::SUBSIDY);
  EXPECT_EQ(subsidy.amount().amount_minor(), -10000);
  EXPECT_EQ(subsidy.funder_display_name(), "Provincial S&T Department voucher 2027");
  EXPECT_TRUE(january->lines(0).funder_display_name().empty());

  auto csv = Document(root_, january->name(), v1::GetInvoiceDocumentRequest::CSV);
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_TRUE(absl::StrContains(csv->content(), "补贴 Subsidy · Provincial S&T Department voucher 2027"))
      << csv->content();
  auto pdf = Document(root_, january->name(), v1::GetInvoiceDocumentRequest::PDF);
  ASSERT_TRUE(pdf.ok()) << pdf.status();
  EXPECT_TRUE(absl::StrContains(PdfText(pdf->content(), "funder"), "Provincial S&T Department"));

  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
  up.mutable_subsidy_pool()->set_funder_display_name("Renamed programme");
  up.mutable_update_mask()->add_paths("funder_display_name");
  ASSERT_TRUE(billing_->UpdateSubsidyPool(root_, up).ok());
  auto again = Document(root_, january->name(), v1::GetInvoiceDocumentRequest::CSV);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->content(), csv->content());
  v1::GetInvoiceRequest get;
  get.set_name(january->name());
  auto stored = billing_->GetInvoice(root_, get);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->lines(1).funder_display_name(), "Provincial S&T Department voucher 2027");
}

}  // namespace
}  // namespace labshare::billing
