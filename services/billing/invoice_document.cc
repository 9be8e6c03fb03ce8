#include "services/billing/invoice_document.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <pango/pangocairo.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/csv.h"
#include "common/currency.h"
#include "common/error.h"
#include "common/proto_util.h"

namespace labshare::billing {
namespace {

std::string UnitWord(v1::ChargeUnit unit) {
  switch (unit) {
    case v1::UNIT_HOUR: return "小时 h";
    case v1::UNIT_DAY: return "天 day";
    case v1::UNIT_MONTH: return "月 month";
    case v1::UNIT_SAMPLE: return "样 sample";
    case v1::UNIT_TEST: return "项 test";
    case v1::UNIT_ITEM: return "件 item";
    case v1::UNIT_FLAT: return "次 flat";
    default: return "";
  }
}

std::string KindWord(v1::InvoiceLine::Kind kind) {
  switch (kind) {
    case v1::InvoiceLine::CHARGE: return "费用 Charge";
    case v1::InvoiceLine::SUBSIDY: return "补贴 Subsidy";
    case v1::InvoiceLine::DEPOSIT_RELEASE: return "押金退还 Deposit release";
    case v1::InvoiceLine::ADJUSTMENT: return "调整 Adjustment";
    case v1::InvoiceLine::DEPOSIT_APPLIED: return "押金抵扣 Deposit applied (memo)";
    default: return "";
  }
}

std::string KindCode(v1::InvoiceLine::Kind kind) { return v1::InvoiceLine::Kind_Name(kind); }

std::string StateWord(v1::Invoice::State state) {
  switch (state) {
    case v1::Invoice::ISSUED: return "已开具 ISSUED";
    case v1::Invoice::PAID: return "已付 PAID";
    case v1::Invoice::VOID: return "作废 VOID";
    default: return v1::Invoice::State_Name(state);
  }
}

std::string Date(const google::protobuf::Timestamp& t, absl::TimeZone zone) {
  if (t.seconds() == 0 && t.nanos() == 0) return "";
  return absl::FormatTime("%Y-%m-%d", FromProto(t), zone);
}

std::string Money(const labshare::type::v1::Money& m, absl::string_view currency) {
  return FormatAmount(m.amount_minor(), currency);
}

// The fields of a party in print order: (label, CSV key, value).
struct PartyField {
  const char* label;
  const char* key;
  std::string value;
};

std::vector<PartyField> PartyFields(const v1::InvoiceParty& p) {
  return {{"名称 Name", "legal_name", p.legal_name()},
          {"简称 Short name", "display_name", p.display_name()},
          {"纳税人识别号 Taxpayer ID", "taxpayer_id", p.taxpayer_id()},
          {"地址 Registered address", "registered_address", p.registered_address()},
          {"电话 Phone", "phone", p.phone()},
          {"开户银行 Bank", "bank_name", p.bank_name()},
          {"银行账号 Account", "bank_account", p.bank_account()}};
}

// The party printed for a payee: its snapshot, or just its name for
// invoices issued before snapshots existed.
v1::InvoiceParty PayeeParty(const v1::Invoice& inv, const std::string& organization) {
  for (const auto& p : inv.payee_parties()) {
    if (p.organization() == organization) return p;
  }
  v1::InvoiceParty p;
  p.set_organization(organization);
  p.set_display_name(organization);
  return p;
}

// The payee_parties not in `payees`, in their order: payees named only by
// memo lines (DEPOSIT_APPLIED: the owner that kept a deposit), owed nothing
// on this invoice. Invoice.payee_parties lists them after the payees.
std::vector<v1::InvoiceParty> MemoOnlyPayees(const v1::Invoice& inv) {
  std::vector<v1::InvoiceParty> out;
  for (const auto& p : inv.payee_parties()) {
    const bool owed = std::any_of(inv.payees().begin(), inv.payees().end(),
                                  [&](const v1::PayeeBalance& pb) { return pb.organization() == p.organization(); });
    if (!owed) out.push_back(p);
  }
  return out;
}

v1::InvoiceParty PayerParty(const v1::Invoice& inv) {
  if (inv.has_payer_party()) return inv.payer_party();
  v1::InvoiceParty p;
  p.set_organization(inv.payer_organization());
  p.set_display_name(inv.payer_organization());
  return p;
}

std::string LineQuantity(const v1::InvoiceLine& l) {
  return l.quantity_milli() == 0 ? "" : FormatQuantity(l.quantity_milli());
}

std::string FeeWord(v1::FeeKind kind) {
  switch (kind) {
    case v1::USAGE: return "仪器机时 Instrument time";
    case v1::MISSED_BOOKING_FEE: return "爽约费 Missed booking fee";
    case v1::LATE_CANCELLATION_FEE: return "逾期取消费 Late cancellation fee";
    case v1::LEASE_PERIOD: return "租金 Lease rent";
    case v1::DEPOSIT: return "押金 Lease deposit";
    case v1::DAMAGE: return "损坏赔偿 Damage";
    case v1::TECHNICAL_SERVICE: return "技术服务 Technical service";
    case v1::STAFF_TIME: return "人工 Staff time";
    case v1::CONSUMABLES: return "耗材 Consumables";
    default: return "";
  }
}

std::string ModeWord(labshare::type::v1::SharingMode mode) {
  switch (mode) {
    case labshare::type::v1::ON_SITE: return "现场使用 on site";
    case labshare::type::v1::LEASE: return "租赁 lease";
    case labshare::type::v1::JOINT_RESEARCH: return "联合研究 joint research";
    case labshare::type::v1::TECHNICAL_SERVICE: return "技术服务 technical service";
    default: return "";
  }
}

std::string LastSegment(const std::string& name) {
  const size_t slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

// What the line is: the charge's fee kind, mode, instrument and service
// time (consortium zone) when the ledger gave no description, the pool for
// subsidy lines.
std::string LineDescription(const v1::InvoiceLine& l, absl::string_view currency, absl::TimeZone zone) {
  std::string d = l.description();
  if (l.kind() == v1::InvoiceLine::SUBSIDY) {
    d = absl::StrCat("补贴 Subsidy · ",
                     l.funder_display_name().empty() ? LastSegment(l.subsidy_pool()) : l.funder_display_name());
  } else if (l.kind() == v1::InvoiceLine::CHARGE && d.empty()) {
    // A charge priced before charges carried their description.
    const std::string text = ChargeText(l.fee_kind(), l.mode(), l.instrument(),
                                        l.has_service_interval() ? &l.service_interval() : nullptr, zone);
    if (!text.empty()) d = text;
  }
  if (l.share_bps() > 0 && l.share_bps() < 10000) absl::StrAppend(&d, " (", FormatTaxRate(l.share_bps()), " 分摊 share)");
  if (l.kind() == v1::InvoiceLine::DEPOSIT_APPLIED) {
    absl::StrAppend(&d, " (", FormatAmount(l.memo_amount().amount_minor(), currency), " ", currency, ")");
  }
  if (l.late()) absl::StrAppend(&d, " [上期 late]");
  return d;
}

// Totals in print order: (label, CSV key, amount). What was paid is not
// part of the document (a payment changes no issued document; statements
// and GetInvoice show it).
std::vector<std::tuple<const char*, const char*, int64_t>> Totals(const v1::Invoice& inv) {
  return {{"费用合计 Charges", "charges_total", inv.charges_total().amount_minor()},
          {"补贴合计 Subsidies", "subsidy_total", inv.subsidy_total().amount_minor()},
          {"押金退还 Deposit releases", "deposit_release_total", inv.deposit_release_total().amount_minor()},
          {"调整 Adjustments", "adjustments_total", inv.adjustments_total().amount_minor()},
          {"应付总额 Amount due", "amount_due", inv.amount_due().amount_minor()},
          {"其中税额 of which tax", "tax_total", inv.tax_total().amount_minor()}};
}

// ------------------------------------------------------------------ PDF

constexpr double kPageWidth = 595.276;   // A4 in points
constexpr double kPageHeight = 841.890;
constexpr double kMargin = 42.0;
constexpr double kBottom = kPageHeight - 48.0;
constexpr char kFont[] = "Noto Sans CJK SC";

cairo_status_t AppendToString(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

class PdfWriter {
 public:
  PdfWriter(const v1::Invoice& inv, absl::TimeZone zone) : inv_(inv), zone_(zone) {
    surface_ = cairo_pdf_surface_create_for_stream(&AppendToString, &out_, kPageWidth, kPageHeight);
    // Deterministic: the creation date is the issue time, not "now".
    const std::string created =
        absl::FormatTime("%Y-%m-%dT%H:%M:%S%Ez", FromProto(inv.issue_time()), zone);
    cairo_pdf_surface_set_metadata(surface_, CAIRO_PDF_METADATA_CREATE_DATE, created.c_str());
    cairo_pdf_surface_set_metadata(surface_, CAIRO_PDF_METADATA_MOD_DATE, created.c_str());
    cairo_pdf_surface_set_metadata(surface_, CAIRO_PDF_METADATA_TITLE,
                                   absl::StrCat("Invoice ", inv.number()).c_str());
    cairo_pdf_surface_set_metadata(surface_, CAIRO_PDF_METADATA_CREATOR, "LabShare billing");
    cr_ = cairo_create(surface_);
  }
  ~PdfWriter() {
    if (cr_ != nullptr) cairo_destroy(cr_);
    if (surface_ != nullptr) cairo_surface_destroy(surface_);
  }
  PdfWriter(const PdfWriter&) = delete;
  PdfWriter& operator=(const PdfWriter&) = delete;

  // Lays out text in a box of `width` points at (x, y); returns its height.
  double Text(double x, double y, double width, const std::string& text, double size, bool bold = false,
              PangoAlignment align = PANGO_ALIGN_LEFT, bool draw = true, double grey = 0.0) {
    PangoLayout* layout = pango_cairo_create_layout(cr_);
    PangoFontDescription* font = pango_font_description_new();
    pango_font_description_set_family(font, kFont);
    pango_font_description_set_absolute_size(font, size * PANGO_SCALE);
    pango_font_description_set_weight(font, bold ? PANGO_WEIGHT_BOLD : PANGO_WEIGHT_NORMAL);
    pango_layout_set_font_description(layout, font);
    pango_layout_set_width(layout, static_cast<int>(width * PANGO_SCALE));
    pango_layout_set_wrap(layout, PANGO_WRAP_WORD_CHAR);
    pango_layout_set_alignment(layout, align);
    pango_layout_set_text(layout, text.c_str(), -1);
    int w = 0, h = 0;
    pango_layout_get_size(layout, &w, &h);
    if (draw) {
      cairo_set_source_rgb(cr_, grey, grey, grey);
      cairo_move_to(cr_, x, y);
      pango_cairo_show_layout(cr_, layout);
    }
    pango_font_description_free(font);
    g_object_unref(layout);
    return static_cast<double>(h) / PANGO_SCALE;
  }

  // How many characters of `text` no installed font can draw.
  int UnknownGlyphs(const char* text) {
    PangoLayout* layout = pango_cairo_create_layout(cr_);
    PangoFontDescription* font = pango_font_description_new();
    pango_font_description_set_family(font, kFont);
    pango_layout_set_font_description(layout, font);
    pango_layout_set_text(layout, text, -1);
    const int missing = pango_layout_get_unknown_glyphs_count(layout);
    pango_font_description_free(font);
    g_object_unref(layout);
    return missing;
  }

  void Rule(double y, double width = 0.5) {
    cairo_set_source_rgb(cr_, 0.4, 0.4, 0.4);
    cairo_set_line_width(cr_, width);
    cairo_move_to(cr_, kMargin, y);
    cairo_line_to(cr_, kPageWidth - kMargin, y);
    cairo_stroke(cr_);
  }

  void EndPage() {
    ++page_;
    Text(kMargin, kPageHeight - 36, kPageWidth - 2 * kMargin,
         absl::StrCat(inv_.number(), "  ·  ", page_), 7, false, PANGO_ALIGN_RIGHT, true, 0.4);
    if (inv_.state() == v1::Invoice::VOID) {
      cairo_save(cr_);
      cairo_translate(cr_, kPageWidth / 2, kPageHeight / 2);
      cairo_rotate(cr_, -0.6);
      PangoLayout* layout = pango_cairo_create_layout(cr_);
      PangoFontDescription* font = pango_font_description_new();
      pango_font_description_set_family(font, kFont);
      pango_font_description_set_absolute_size(font, 110 * PANGO_SCALE);
      pango_font_description_set_weight(font, PANGO_WEIGHT_BOLD);
      pango_layout_set_font_description(layout, font);
      pango_layout_set_text(layout, "VOID 作废", -1);
      int w = 0, h = 0;
      pango_layout_get_size(layout, &w, &h);
      cairo_move_to(cr_, -static_cast<double>(w) / PANGO_SCALE / 2, -static_cast<double>(h) / PANGO_SCALE / 2);
      cairo_set_source_rgba(cr_, 0.8, 0.0, 0.0, 0.25);
      pango_cairo_show_layout(cr_, layout);
      pango_font_description_free(font);
      g_object_unref(layout);
      cairo_restore(cr_);
    }
    cairo_show_page(cr_);
  }

  absl::StatusOr<std::string> Render();

 private:
  double Party(double x, double y, double width, const std::string& title, const v1::InvoiceParty& party,
               const std::string& extra, bool draw);
  void TableHeader();
  void NeedSpace(double height) {
    if (y_ + height > kBottom) {
      EndPage();
      y_ = kMargin;
    }
  }

  const v1::Invoice& inv_;
  absl::TimeZone zone_;
  std::string out_;
  cairo_surface_t* surface_ = nullptr;
  cairo_t* cr_ = nullptr;
  double y_ = kMargin;
  int page_ = 0;
};

// Columns of the line table: x offsets and widths.
struct Column {
  double x, width;
  PangoAlignment align;
};
constexpr double kTableWidth = kPageWidth - 2 * kMargin;
const Column kCols[] = {
    {kMargin, 18, PANGO_ALIGN_LEFT},           // #
    {kMargin + 20, 214, PANGO_ALIGN_LEFT},     // description, kind, payee
    {kMargin + 236, 52, PANGO_ALIGN_RIGHT},    // quantity + unit
    {kMargin + 290, 58, PANGO_ALIGN_RIGHT},    // unit price
    {kMargin + 350, 62, PANGO_ALIGN_RIGHT},    // amount
    {kMargin + 414, 38, PANGO_ALIGN_RIGHT},    // tax rate
    {kMargin + 454, kTableWidth - 454, PANGO_ALIGN_RIGHT},  // tax amount
};

double PdfWriter::Party(double x, double y, double width, const std::string& title, const v1::InvoiceParty& party,
                        const std::string& extra, bool draw) {
  double h = Text(x, y, width, title, 9, true, PANGO_ALIGN_LEFT, draw);
  for (const auto& f : PartyFields(party)) {
    h += Text(x, y + h, width, absl::StrCat(f.label, ": ", f.value.empty() ? "—" : f.value), 8, false,
              PANGO_ALIGN_LEFT, draw);
  }
  if (!extra.empty()) h += Text(x, y + h, width, extra, 8, true, PANGO_ALIGN_LEFT, draw);
  return h;
}

void PdfWriter::TableHeader() {
  const char* heads[] = {"#", "项目 Description", "数量 Qty", "单价 Unit price", "金额 Amount", "税率 Tax", "税额 Tax amount"};
  double h = 0;
  for (int i = 0; i < 7; ++i) {
    h = std::max(h, Text(kCols[i].x, y_, kCols[i].width, heads[i], 7.5, true, kCols[i].align));
  }
  y_ += h + 2;
  Rule(y_);
  y_ += 3;
}

absl::StatusOr<std::string> PdfWriter::Render() {
  const std::string& cur = inv_.currency_code();
  const double full = kPageWidth - 2 * kMargin;
  // Title and the invoice's facts.
  y_ += Text(kMargin, y_, full, "LabShare 账单 Invoice", 18, true);
  y_ += 4;
  std::vector<std::string> facts = {
      absl::StrCat("编号 Number: ", inv_.number()),
      absl::StrCat("账期 Period: ", inv_.period()),
      absl::StrCat("开具日期 Issued: ", Date(inv_.issue_time(), zone_)),
      absl::StrCat("付款期限 Due: ", Date(inv_.due_time(), zone_)),
      absl::StrCat("币种 Currency: ", cur),
      absl::StrCat("状态 State: ", StateWord(inv_.state())),
  };
  if (inv_.state() == v1::Invoice::VOID) {
    facts.push_back(absl::StrCat("作废 Voided: ", Date(inv_.void_time(), zone_), " — ", inv_.void_reason()));
  }
  if (!inv_.replaces().empty()) facts.push_back(absl::StrCat("替代 Replaces: ", inv_.replaces()));
  y_ += Text(kMargin, y_, full, absl::StrJoin(facts, "    "), 8.5);
  y_ += 8;
  Rule(y_, 1.0);
  y_ += 8;
  // Payer, then every payee (seller), two blocks a row.
  const double half = (full - 16) / 2;
  std::vector<std::pair<std::string, std::pair<v1::InvoiceParty, std::string>>> blocks;
  blocks.push_back({"付款方（购买方）Payer (buyer)", {PayerParty(inv_), ""}});
  for (const auto& pb : inv_.payees()) {
    blocks.push_back({"收款方（开票方）Payee (seller, issues the fapiao)",
                      {PayeeParty(inv_, pb.organization()),
                       absl::StrCat("应收 Due to it: ", Money(pb.amount_due(), cur), " ", cur)}});
  }
  // Payees named only by memo lines (the owner that kept a deposit): their
  // details, nothing due to them.
  for (const auto& party : MemoOnlyPayees(inv_)) {
    blocks.push_back({"收款方（备忘）Payee (memo lines only)", {party, ""}});
  }
  for (size_t i = 0; i < blocks.size(); i += 2) {
    double h = 0;
    for (size_t j = i; j < i + 2 && j < blocks.size(); ++j) {
      h = std::max(h,
                   Party(kMargin, 0, half, blocks[j].first, blocks[j].second.first, blocks[j].second.second, false));
    }
    NeedSpace(h);
    for (size_t j = i; j < i + 2 && j < blocks.size(); ++j) {
      Party(kMargin + static_cast<double>(j - i) * (half + 16), y_, half, blocks[j].first, blocks[j].second.first,
            blocks[j].second.second, true);
    }
    y_ += h + 10;
  }
  Rule(y_, 1.0);
  y_ += 6;
  // The lines.
  TableHeader();
  for (const auto& l : inv_.lines()) {
    const v1::InvoiceParty payee = PayeeParty(inv_, l.payee_organization());
    std::string desc = LineDescription(l, cur, zone_);
    std::string sub = absl::StrCat(KindWord(l.kind()), " → ", payee.display_name());
    if (l.kind() == v1::InvoiceLine::SUBSIDY) sub = absl::StrCat(KindWord(l.kind()), " → ", payee.display_name());
    const std::string cells[] = {
        absl::StrCat(l.line_number()),
        desc,
        l.quantity_milli() == 0 || l.kind() == v1::InvoiceLine::SUBSIDY
            ? ""
            : absl::StrCat(LineQuantity(l), " ", UnitWord(l.unit())),
        l.has_unit_price() && l.kind() != v1::InvoiceLine::SUBSIDY ? Money(l.unit_price(), cur) : "",
        Money(l.amount(), cur),
        l.has_tax_rate_bps() ? FormatTaxRate(l.tax_rate_bps()) : "—",
        l.has_tax_rate_bps() ? Money(l.tax_amount(), cur) : "—",
    };
    double h = 0;
    for (int i = 0; i < 7; ++i) {
      h = std::max(h, Text(kCols[i].x, 0, kCols[i].width, cells[i], 8, false, kCols[i].align, false));
    }
    const double sub_h = Text(kCols[1].x, 0, kCols[1].width, sub, 6.5, false, PANGO_ALIGN_LEFT, false);
    const double row = std::max(h, Text(kCols[1].x, 0, kCols[1].width, desc, 8, false, PANGO_ALIGN_LEFT, false) + sub_h);
    if (y_ + row + 4 > kBottom) {
      EndPage();
      y_ = kMargin;
      TableHeader();
    }
    for (int i = 0; i < 7; ++i) Text(kCols[i].x, y_, kCols[i].width, cells[i], 8, false, kCols[i].align);
    const double dh = Text(kCols[1].x, 0, kCols[1].width, desc, 8, false, PANGO_ALIGN_LEFT, false);
    Text(kCols[1].x, y_ + dh, kCols[1].width, sub, 6.5, false, PANGO_ALIGN_LEFT, true, 0.35);
    y_ += row + 3;
  }
  Rule(y_);
  y_ += 6;
  // Totals, right-aligned.
  const auto totals = Totals(inv_);
  NeedSpace(static_cast<double>(totals.size()) * 13 + 30);
  for (const auto& [label, key, amount] : totals) {
    const bool strong = std::string(key) == "amount_due";
    Text(kMargin + 230, y_, 180, label, 9, strong, PANGO_ALIGN_RIGHT);
    y_ += Text(kMargin + 414, y_, kTableWidth - 414, absl::StrCat(FormatAmount(amount, cur), " ", cur), 9, strong,
               PANGO_ALIGN_RIGHT);
  }
  y_ += 10;
  Text(kMargin, y_, full,
       "价格含税：税额 = 金额 × 税率 ÷ (1 + 税率)，四舍五入到分。Prices include tax: tax = amount × rate ÷ (1 + rate), "
       "rounded half up to the minor unit. 各收款方为其费用行开具发票 Each payee issues the fapiao for its own lines.",
       7, false, PANGO_ALIGN_LEFT, true, 0.35);
  EndPage();
  // Pango quietly draws boxes for characters no installed font has: without
  // a CJK font every Chinese name and label would print as empty boxes.
  if (const int missing = UnknownGlyphs("发票 作废 纳税人识别号"); missing > 0) {
    return MakeError(absl::StatusCode::kInternal, "DOCUMENT_RENDER_FAILED",
                     absl::StrCat("no installed font has Chinese characters (", missing,
                                  " missing); install fonts-noto-cjk"));
  }
  cairo_destroy(cr_);
  cr_ = nullptr;
  cairo_surface_finish(surface_);
  const cairo_status_t status = cairo_surface_status(surface_);
  if (status != CAIRO_STATUS_SUCCESS) {
    return MakeError(absl::StatusCode::kInternal, "DOCUMENT_RENDER_FAILED",
                     absl::StrCat("cairo: ", cairo_status_to_string(status)));
  }
  return std::move(out_);
}

}  // namespace

std::string ChargeText(v1::FeeKind fee_kind, labshare::type::v1::SharingMode mode, const std::string& instrument,
                       const labshare::type::v1::Interval* service_interval, absl::TimeZone zone) {
  std::vector<std::string> parts;
  for (const std::string& p : {FeeWord(fee_kind), ModeWord(mode), LastSegment(instrument)}) {
    if (!p.empty()) parts.push_back(p);
  }
  if (service_interval != nullptr && service_interval->has_start_time() && service_interval->has_end_time()) {
    const absl::Time a = FromProto(service_interval->start_time());
    const absl::Time b = FromProto(service_interval->end_time());
    const bool same_day = absl::FormatTime("%Y-%m-%d", a, zone) == absl::FormatTime("%Y-%m-%d", b, zone);
    parts.push_back(absl::StrCat(absl::FormatTime("%Y-%m-%d %H:%M", a, zone), "–",
                                 absl::FormatTime(same_day ? "%H:%M" : "%Y-%m-%d %H:%M", b, zone)));
  }
  return absl::StrJoin(parts, " · ");
}

std::string FormatAmount(int64_t minor, absl::string_view currency) {
  const int digits = CurrencyMinorDigits(currency);
  const bool negative = minor < 0;
  // |INT64_MIN| does not fit; amounts are bounded far below it.
  const uint64_t abs = negative ? static_cast<uint64_t>(-(minor + 1)) + 1 : static_cast<uint64_t>(minor);
  if (digits == 0) return absl::StrCat(negative ? "-" : "", abs);
  if (digits == 3) return absl::StrFormat("%s%d.%03d", negative ? "-" : "", abs / 1000, abs % 1000);
  return absl::StrFormat("%s%d.%02d", negative ? "-" : "", abs / 100, abs % 100);
}

std::string FormatTaxRate(int32_t bps) {
  std::string s = absl::StrCat(bps / 100);
  int frac = bps % 100;
  if (frac != 0) {
    std::string f = absl::StrFormat("%02d", frac);
    if (f.back() == '0') f.pop_back();
    absl::StrAppend(&s, ".", f);
  }
  return s + "%";
}

std::string FormatQuantity(int64_t milli) {
  const bool negative = milli < 0;
  const int64_t a = negative ? -milli : milli;
  std::string s = absl::StrCat(negative ? "-" : "", a / 1000);
  if (a % 1000 != 0) {
    std::string f = absl::StrFormat("%03d", a % 1000);
    while (f.back() == '0') f.pop_back();
    absl::StrAppend(&s, ".", f);
  }
  return s;
}

std::string CsvField(absl::string_view raw, bool numeric) { return CsvCell(raw, numeric); }

std::string InvoiceCsv(const v1::Invoice& inv, absl::TimeZone zone) {
  // One table, the same columns in every record (RFC 4180): `record` says
  // what a row is; invoice, party and total rows use key/value, line rows
  // the line columns.
  static const std::vector<std::string> kHeader = {
      "record",   "key",         "value",  "organization", "line_number", "kind",
      "description", "quantity", "unit",   "unit_price",   "amount",      "tax_rate",
      "tax_amount",  "currency"};
  const std::string& cur = inv.currency_code();
  // A byte-order mark first: spreadsheets on Chinese systems read UTF-8
  // without one as GBK.
  std::string out = "\xEF\xBB\xBF";
  // The columns that hold numbers the document wrote: line_number, quantity,
  // unit_price, amount, tax_rate, tax_amount; `value` only in the rows whose
  // value is an amount (`value_numeric`). Every other cell is text.
  static const std::vector<bool> kNumeric = {false, false, false, false, true,  false, false,
                                             true,  false, true,  true,  true,  true,  false};
  auto row = [&](const std::vector<std::string>& fields, bool value_numeric = false) {
    std::vector<std::string> quoted;
    quoted.reserve(kHeader.size());
    for (size_t i = 0; i < kHeader.size(); ++i) {
      const bool numeric = i == 2 ? value_numeric : kNumeric[i];
      quoted.push_back(CsvField(i < fields.size() ? fields[i] : "", numeric));
    }
    absl::StrAppend(&out, absl::StrJoin(quoted, ","), "\r\n");
  };
  row(kHeader);
  auto fact = [&](const char* key, const std::string& value) { row({"invoice", key, value}); };
  fact("number", inv.number());
  fact("state", v1::Invoice::State_Name(inv.state()));
  fact("period", inv.period());
  fact("issue_date", Date(inv.issue_time(), zone));
  fact("due_date", Date(inv.due_time(), zone));
  fact("currency", cur);
  if (inv.state() == v1::Invoice::VOID) {
    fact("void_date", Date(inv.void_time(), zone));
    fact("void_reason", inv.void_reason());
  }
  if (!inv.replaces().empty()) fact("replaces", inv.replaces());
  const v1::InvoiceParty payer = PayerParty(inv);
  for (const auto& f : PartyFields(payer)) row({"payer", f.key, f.value, payer.organization()});
  for (const auto& pb : inv.payees()) {
    const v1::InvoiceParty payee = PayeeParty(inv, pb.organization());
    for (const auto& f : PartyFields(payee)) row({"payee", f.key, f.value, payee.organization()});
    row({"payee", "amount_due", Money(pb.amount_due(), cur), payee.organization(), "", "", "", "", "", "", "", "", "",
         cur},
        true);
  }
  // Payees named only by memo lines: their details, no amount_due row.
  for (const auto& payee : MemoOnlyPayees(inv)) {
    for (const auto& f : PartyFields(payee)) row({"payee", f.key, f.value, payee.organization()});
  }
  for (const auto& l : inv.lines()) {
    const bool subsidy = l.kind() == v1::InvoiceLine::SUBSIDY;  // the charge's quantity is not its own
    row({"line", "", "", l.payee_organization(), absl::StrCat(l.line_number()), KindCode(l.kind()),
         LineDescription(l, cur, zone), subsidy ? "" : LineQuantity(l),
         subsidy || l.unit() == v1::CHARGE_UNIT_UNSPECIFIED ? "" : v1::ChargeUnit_Name(l.unit()),
         !subsidy && l.has_unit_price() ? Money(l.unit_price(), cur) : "", Money(l.amount(), cur),
         l.has_tax_rate_bps() ? FormatTaxRate(l.tax_rate_bps()) : "",
         l.has_tax_rate_bps() ? Money(l.tax_amount(), cur) : "", cur});
  }
  for (const auto& [label, key, amount] : Totals(inv)) {
    row({"total", key, FormatAmount(amount, cur), "", "", "", "", "", "", "", "", "", "", cur}, true);
  }
  return out;
}

absl::StatusOr<std::string> InvoicePdf(const v1::Invoice& invoice, absl::TimeZone zone) {
  PdfWriter writer(invoice, zone);
  return writer.Render();
}

}  // namespace labshare::billing
