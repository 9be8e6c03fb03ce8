// Payments, invoice payment and voiding, corrections, statements, income
// reports and the remaining listings.
//
// A payment is one PAYMENT posting, of at most the open amount from payer
// to payee. Against an invoice it reduces that payee's outstanding amount
// towards zero, from either side (a payee refunding a negative amount; the
// invoice becomes PAID when nothing is outstanding); against an open
// balance it is at most what the payer's PAYABLE (a pool's POOL_PAYABLE)
// owes the payee; against a settlement transfer it marks the transfer paid,
// and the last paid transfer clears the settlement: its SETTLEMENT_NETTING
// posting moves the open receivables and payables onto the transfer
// counterparties and its invoices become PAID, all in the same step.
#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/proto_util.h"
#include "services/billing/billing_common.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"

namespace labshare::billing {
namespace {

// An applied or replayed step's answer; CONCURRENT_MODIFICATION when the
// state kept moving.
template <typename T>
absl::StatusOr<T> Settle(const StepResult& result, T applied) {
  LS_ASSIGN_OR_RETURN(std::optional<T> answer, Answer(result, std::move(applied)));
  if (answer) return *std::move(answer);
  return Conflict();
}

struct AccountLine {
  int64_t ms = 0;
  std::string posting, counterparty, currency;
  int64_t amount = 0;
};
std::vector<AccountLine> ParseLines(const std::vector<std::string>& raw) {
  std::vector<AccountLine> out;
  for (const auto& s : raw) {
    std::vector<std::string> f = absl::StrSplit(s, '|');
    AccountLine l;
    if (f.size() != 5 || !absl::SimpleAtoi(f[0], &l.ms) || !absl::SimpleAtoi(f[4], &l.amount)) continue;
    l.posting = f[1];
    l.counterparty = f[2];
    l.currency = f[3];
    out.push_back(std::move(l));
  }
  return out;
}

// The income report's figures (IncomeRow) and the owner's ledger lines that
// make them.
enum class IncomeFigure { kService, kInKind, kInternal, kCompensation, kSubsidised };
struct IncomeLine {
  std::string posting, counterparty;
  int64_t amount = 0;  // credits to the income accounts, debits of a pool's receivable: positive
  IncomeFigure figure;
};

void Bump(labshare::type::v1::Money* m, int64_t v) { m->set_amount_minor(m->amount_minor() + v); }

void ZeroIncomeFigures(const std::string& currency, v1::IncomeRow* row) {
  for (auto* m : {row->mutable_service_income(), row->mutable_subsidised_amount(), row->mutable_in_kind_amount(),
                  row->mutable_internal_amount(), row->mutable_compensation_amount(),
                  row->mutable_corrections_amount()}) {
    *m = MakeMoney(currency, 0);
  }
}

void BumpIncomeFigure(IncomeFigure figure, int64_t amount, v1::IncomeRow* row) {
  switch (figure) {
    case IncomeFigure::kService: return Bump(row->mutable_service_income(), amount);
    case IncomeFigure::kInKind: return Bump(row->mutable_in_kind_amount(), amount);
    case IncomeFigure::kInternal: return Bump(row->mutable_internal_amount(), amount);
    case IncomeFigure::kCompensation: return Bump(row->mutable_compensation_amount(), amount);
    case IncomeFigure::kSubsidised: return Bump(row->mutable_subsidised_amount(), amount);
  }
}

// Whether `correction` is the exact mirror of `of` (a reversal).
bool IsMirror(const v1::Posting& correction, const v1::Posting& of) {
  if (correction.entries_size() != of.entries_size()) return false;
  for (int i = 0; i < of.entries_size(); ++i) {
    const v1::Entry &a = correction.entries(i), &b = of.entries(i);
    if (a.account() != b.account() || a.counterparty() != b.counterparty() ||
        a.debit().amount_minor() != b.credit().amount_minor() || a.credit().amount_minor() != b.debit().amount_minor()) {
      return false;
    }
  }
  return true;
}

// The stored documents of `kind` named in `names` ("postings/p1", ...), by
// name, in one round trip; those not stored are left out.
template <typename T>
absl::StatusOr<std::map<std::string, T>> LoadDocs(const BillingStore& store, absl::string_view kind,
                                                  const std::set<std::string>& names) {
  std::vector<std::string> doc_keys;
  for (const auto& name : names) doc_keys.push_back(keys::Doc(kind, IdOf(name)));
  std::map<std::string, T> out;
  if (doc_keys.empty()) return out;
  LS_ASSIGN_OR_RETURN(auto docs, store.docs().GetMany(doc_keys));
  auto name = names.begin();
  for (size_t i = 0; i < docs.size(); ++i, ++name) {
    if (!docs[i]) continue;
    LS_ASSIGN_OR_RETURN(T doc, Parse<T>(docs[i]->data));
    out.emplace(*name, std::move(doc));
  }
  return out;
}

// An invoice PAID without being paid: issued PAID because nothing was
// outstanding (only memo lines, or lines netting to zero per payee). One
// paid by payments lists them, one cleared by a settlement names it.
bool PaidAtIssue(const v1::Invoice& inv) {
  return inv.state() == v1::Invoice::PAID && inv.payments().empty() && inv.settlement().empty();
}

// The stored invoice `name` that MarkInvoicePaid or VoidInvoice may change,
// with its version: INVOICE_NOT_FOUND, ETAG_MISMATCH (when `etag` is set),
// INVOICE_ALREADY_PAID or INVOICE_NOT_ISSUED otherwise. With
// `or_paid_at_issue` (VoidInvoice) also an invoice PAID at issue, and
// INVOICE_IN_CLEARED_SETTLEMENT for one paid by its settlement.
//
// A stored invoice's etag changes with its state and payments only
// (billing.proto Invoice.etag): it is the document version its last such
// change wrote ("1" at issue). Versions only grow, so an etag never comes
// back; the changes that are neither (a settlement netting it or letting it
// go, a re-issue linking a voided one) keep it. The caller's step checks
// the version read here, so any change committed meanwhile makes it read
// again and compare the etag afresh.
absl::StatusOr<std::pair<v1::Invoice, int64_t>> IssuedInvoice(const BillingStore& store, const std::string& name,
                                                              const std::string& etag, bool or_paid_at_issue = false) {
  LS_ASSIGN_OR_RETURN(auto doc, store.docs().Get(keys::Doc("invoice", IdOf(name))));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND", name + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::Invoice inv, Parse<v1::Invoice>(doc->data));
  if (!etag.empty() && etag != inv.etag()) {
    return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", name + " changed; read it again");
  }
  if (or_paid_at_issue && PaidAtIssue(inv)) return std::make_pair(std::move(inv), doc->version);
  // Only clearing pays an invoice that names its settlement (a direct
  // payment of one is INVOICE_IN_SETTLEMENT, MarkInvoicePaid refuses it
  // too), so that settlement is CLEARED: VoidInvoice says where it was paid.
  if (or_paid_at_issue && inv.state() == v1::Invoice::PAID && !inv.settlement().empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_IN_CLEARED_SETTLEMENT",
                     name + " was paid through " + inv.settlement() + ", which is cleared");
  }
  if (inv.state() == v1::Invoice::PAID) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_ALREADY_PAID", name + " is paid");
  }
  if (inv.state() != v1::Invoice::ISSUED) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_NOT_ISSUED",
                     name + " is " + v1::Invoice::State_Name(inv.state()));
  }
  return std::make_pair(std::move(inv), doc->version);
}

// The open amounts of `inv` as they stood when `s` was computed: for an
// invoice `s` marked, what it still owes; for one of a settlement computed
// before settlements marked their invoices, what it was due less the
// payments recorded against it up to the computation. These are
// what the settlement's transfers pay for, also when the invoice was
// voided, paid directly or cleared by another settlement since (possible
// only while settlements did not name their invoices).
absl::StatusOr<std::vector<OpenAmount>> OpenWhenComputed(const BillingStore& store, const v1::Invoice& inv,
                                                         const v1::Settlement& s) {
  if (inv.settlement() == s.name()) {
    // Marked by the computation's own step (version-checked against the
    // invoice it read), and refused any direct payment since: its open
    // amounts are still those the transfers were computed from. Timestamps
    // would misplace a payment committed during the computation's scan.
    std::vector<OpenAmount> out;
    for (const auto& pb : inv.payees()) {
      const int64_t amount = pb.amount_outstanding().amount_minor();
      if (amount != 0) out.push_back({inv.payer_organization(), pb.organization(), amount});
    }
    return out;
  }
  std::map<std::string, int64_t> open;
  for (const auto& pb : inv.payees()) open[pb.organization()] = pb.amount_due().amount_minor();
  const std::set<std::string> names(inv.payments().begin(), inv.payments().end());
  LS_ASSIGN_OR_RETURN(auto payments, LoadDocs<v1::Payment>(store, "payment", names));
  for (const auto& [name, pay] : payments) {
    if (FromProto(pay.create_time()) > FromProto(s.create_time())) continue;
    // Payer to payee, or a payee refunding the payer (a negative amount).
    if (pay.payer() == inv.payer_organization()) {
      open[pay.payee()] -= pay.amount().amount_minor();
    } else {
      open[pay.payer()] += pay.amount().amount_minor();
    }
  }
  std::vector<OpenAmount> out;
  for (const auto& [payee, amount] : open) {
    if (amount != 0) out.push_back({inv.payer_organization(), payee, amount});
  }
  return out;
}

// Figures that change nothing: every amount zero (a DEPOSIT charge's, say).
bool AllZero(const v1::IncomeFigures& f) {
  for (const auto* m : {&f.service_income(), &f.subsidised(), &f.in_kind(), &f.internal_use(), &f.compensation()}) {
    if (m->amount_minor() != 0) return false;
  }
  return true;
}

}  // namespace

// ================================================================ settlements holding invoices

absl::StatusOr<std::vector<v1::Settlement>> BillingManager::ComputedSettlements(const std::string& period) const {
  LS_ASSIGN_OR_RETURN(auto members, store_->docs().IndexRange(keys::Index("settlement"), period + "|", 100000));
  std::vector<std::string> doc_keys;
  for (const auto& m : members) {
    if (!absl::StartsWith(m, period + "|")) break;
    doc_keys.push_back(keys::Doc("settlement", m.substr(m.rfind('|') + 1)));
  }
  std::vector<v1::Settlement> out;
  if (doc_keys.empty()) return out;
  LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
  for (const auto& doc : docs) {
    if (!doc) continue;
    LS_ASSIGN_OR_RETURN(v1::Settlement s, Parse<v1::Settlement>(doc->data));
    if (s.state() == v1::Settlement::COMPUTED) out.push_back(std::move(s));
  }
  return out;
}

// Settlements computed before the life cycle did not name themselves on
// their invoices. Such an invoice is found in its settlement here, when it
// is read or changed, rather than by rewriting the stored invoices once at
// start-up: replicas start one by one (and a replica of the earlier release
// may still compute settlements meanwhile), so a one-off migration could
// miss some, while this holds for every document whoever wrote it. A
// mutation that relies on the answer changes the invoice (version-checked)
// or the settlement (version-checked), so a concurrent computation, void or
// clearing makes its step stale and it reads again.
absl::StatusOr<std::string> BillingManager::HeldBy(const v1::Invoice& inv, ComputedCache* computed) const {
  if (!inv.settlement().empty() || inv.state() != v1::Invoice::ISSUED) return inv.settlement();
  ComputedCache local;
  ComputedCache& cache = computed != nullptr ? *computed : local;
  auto found = cache.find(inv.period());
  if (found == cache.end()) {
    LS_ASSIGN_OR_RETURN(auto settlements, ComputedSettlements(inv.period()));
    found = cache.emplace(inv.period(), std::move(settlements)).first;
  }
  std::string held;
  for (const auto& s : found->second) {  // oldest first: the newest wins
    if (s.currency_code() == inv.currency_code() &&
        std::find(s.invoices().begin(), s.invoices().end(), inv.name()) != s.invoices().end()) {
      held = s.name();
    }
  }
  return held;
}

// ================================================================ clearing

absl::Status BillingManager::ClearSettlement(const Principal& p, absl::Time now, const std::string& request_id,
                                             v1::Settlement& s, std::vector<std::pair<v1::Invoice, int64_t>> invoices,
                                             LedgerStep& step, std::vector<std::string>& events) {
  // The netting posting over the open amounts the transfers were computed
  // from, and every invoice still ISSUED in it PAID. One voided or paid
  // directly meanwhile (possible only while settlements did not name their
  // invoices) keeps its state and is not announced again.
  std::vector<OpenAmount> open;
  std::vector<std::pair<v1::Invoice, int64_t>> paid_now;
  for (auto& [inv, version] : invoices) {
    LS_ASSIGN_OR_RETURN(std::vector<OpenAmount> when, OpenWhenComputed(*store_, inv, s));
    open.insert(open.end(), when.begin(), when.end());
    const bool in_it = inv.settlement() == s.name() || inv.settlement().empty();
    if (inv.state() == v1::Invoice::ISSUED && in_it) paid_now.emplace_back(std::move(inv), version);
  }
  std::vector<v1::SettlementTransfer> transfers(s.transfers().begin(), s.transfers().end());
  LS_ASSIGN_OR_RETURN(auto netting, SettlementNettingEntries(open, transfers, s.currency_code()));
  v1::Posting net;
  net.set_name("postings/" + IdOf(s.name()) + "-netting");
  net.set_kind(v1::SETTLEMENT_NETTING);
  net.set_currency_code(s.currency_code());
  net.set_settlement(s.name());
  net.set_description("netting of " + s.name());
  net.set_actor(ActorName(p));
  *net.mutable_create_time() = ToProto(now);
  for (auto& e : netting) *net.add_entries() = std::move(e);
  if (net.entries_size() > 0) {
    AddPosting(step, net, now);
    s.set_netting_posting(net.name());
  }
  s.set_state(v1::Settlement::CLEARED);
  *s.mutable_clear_time() = ToProto(now);
  v1::BillingEvent cleared = NewEvent(p, now, request_id);
  for (auto& [inv, version] : paid_now) {
    inv.set_state(v1::Invoice::PAID);
    *inv.mutable_paid_time() = ToProto(now);
    for (auto& pb : *inv.mutable_payees()) {
      *pb.mutable_amount_paid() = pb.amount_due();
      pb.mutable_amount_outstanding()->set_amount_minor(0);
    }
    *inv.mutable_amount_paid() = inv.amount_due();
    inv.mutable_amount_outstanding()->set_amount_minor(0);
    inv.set_settlement(s.name());
    *inv.mutable_update_time() = ToProto(now);
    inv.set_etag(std::to_string(version + 1));
    const std::string key = keys::Doc("invoice", IdOf(inv.name()));
    step.version_checks.push_back({key, version});
    step.puts.push_back({key, inv.SerializeAsString(), version + 1});
    cleared.mutable_settlement_cleared()->add_paid_invoices(inv.name());
    v1::BillingEvent paid = NewEvent(p, now, request_id);  // each announced by InvoicePaid too
    *paid.mutable_invoice_paid()->mutable_invoice() = inv;
    paid.mutable_invoice_paid()->set_paid_by(v1::InvoicePaid::SETTLEMENT);
    events.push_back(paid.SerializeAsString());
  }
  *cleared.mutable_settlement_cleared()->mutable_settlement() = s;
  if (net.entries_size() > 0) *cleared.mutable_settlement_cleared()->mutable_netting_posting() = net;
  events.push_back(cleared.SerializeAsString());
  return absl::OkStatus();
}

// ================================================================ payments

absl::StatusOr<v1::Payment> BillingManager::RecordPayment(const Principal& p, const v1::RecordPaymentRequest& r) {
  v1::Payment pay = r.payment();
  // Authorization before validation.
  if (!p.HasRole(Role::kConsortiumAdmin) && (ActorOrganization(p).empty() || ActorOrganization(p) != pay.payee() ||
                                             IsSubsidyPoolName(pay.payer()))) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "a member billing admin confirms only payments its own organisation received");
  }
  // Not positive: INVALID_FIELD, as the contract lists it.
  if (pay.amount().amount_minor() <= 0) return InvalidField("payment.amount.amount_minor", "must be positive");
  LS_RETURN_IF_ERROR(ValidateAmount(pay.amount(), "payment.amount", true));
  if (!IsOrganizationName(pay.payer()) && !IsSubsidyPoolName(pay.payer())) {
    return InvalidField("payment.payer", "must be organizations/{organization} or subsidyPools/{subsidy_pool}");
  }
  if (!IsOrganizationName(pay.payee())) return InvalidField("payment.payee", "must be organizations/{organization}");
  if (pay.payer() == pay.payee()) return InvalidField("payment.payee", "payer and payee must differ");
  if (!pay.settlement().empty() && !pay.invoice().empty()) {
    return InvalidField("payment.invoice", "name an invoice or a settlement transfer, not both");
  }
  if (!pay.invoice().empty()) LS_RETURN_IF_ERROR(NameField(pay.invoice(), "invoices", "payment.invoice"));
  if (!pay.settlement().empty()) LS_RETURN_IF_ERROR(NameField(pay.settlement(), "settlements", "payment.settlement"));
  if (pay.settlement().empty() && pay.transfer_index() != 0) {
    return InvalidField("payment.transfer_index", "a transfer index needs its settlement");
  }
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("RecordPayment", r.request_id());
  const std::string fingerprint = RequestFingerprint("RecordPayment", r, ActorName(p));
  // A retry of a recorded payment is answered before inventory is asked
  // (it answers the same during an inventory outage or after a party left).
  {
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::Payment>(*seen);
  }
  // Both parties exist (ORGANIZATION_NOT_FOUND, SUBSIDY_POOL_NOT_FOUND).
  LS_RETURN_IF_ERROR(PartiesExist({pay.payer(), pay.payee()}));
  if (IsSubsidyPoolName(pay.payer())) {  // the pool pays in its own currency
    LS_ASSIGN_OR_RETURN(auto pdoc, store_->docs().Get(keys::Doc("pool", IdOf(pay.payer()))));
    if (!pdoc) return MakeError(absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND", pay.payer() + " does not exist");
    LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(pdoc->data));
    if (pool.currency_code() != pay.amount().currency_code()) {
      return InvalidField("payment.amount.currency_code", "must be the pool's currency " + pool.currency_code(),
                          "CURRENCY_MISMATCH");
    }
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    // Read again after a stale step only (a copy of this request may have
    // committed meanwhile); the first attempt follows the check above.
    if (attempt > 0) {
      LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
      if (seen) return Parse<v1::Payment>(*seen);
    }
    const absl::Time now = StampNow();
    const std::string id = absl::StrFormat("pay-%d-%s", Ms(now), NewEventId().substr(0, 8));
    pay.set_name("payments/" + id);
    pay.set_recorded_by(ActorName(p));
    if (!pay.has_paid_time()) *pay.mutable_paid_time() = ToProto(now);
    *pay.mutable_create_time() = ToProto(now);
    v1::Posting posting;
    posting.set_name("postings/" + id);
    posting.set_kind(v1::PAYMENT);
    posting.set_currency_code(pay.amount().currency_code());
    posting.set_payment(pay.name());
    // The links that apply: a pool paying, a settlement's transfer paid.
    if (IsSubsidyPoolName(pay.payer())) posting.set_subsidy_pool(pay.payer());
    posting.set_settlement(pay.settlement());
    posting.set_reason(pay.external_reference());
    posting.set_description(absl::StrCat("payment ", pay.payer(), " -> ", pay.payee()));
    posting.set_actor(ActorName(p));
    *posting.mutable_create_time() = ToProto(now);
    std::vector<v1::Entry> entries;
    if (IsSubsidyPoolName(pay.payer())) {
      LS_ASSIGN_OR_RETURN(entries, PoolPaymentEntries(pay.payer(), pay.payee(), pay.amount()));
    } else {
      LS_ASSIGN_OR_RETURN(entries, PaymentEntries(pay.payer(), pay.payee(), pay.amount()));
    }
    for (auto& e : entries) *posting.add_entries() = std::move(e);
    pay.set_posting(posting.name());
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    step.limit_field = "payment.amount";
    v1::BillingEvent recorded = NewEvent(p, now, r.request_id());
    std::vector<std::string> later_events;
    if (!pay.invoice().empty()) {
      LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("invoice", IdOf(pay.invoice()))));
      if (!doc) return MakeError(absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND", pay.invoice() + " does not exist");
      LS_ASSIGN_OR_RETURN(v1::Invoice inv, Parse<v1::Invoice>(doc->data));
      // The contract's order: the request against the invoice
      // (INVALID_ARGUMENT) before the invoice's state (FAILED_PRECONDITION).
      // The invoice's payer paying one of its payees, or a payee the payer
      // is owed by (a negative outstanding amount) refunding it.
      const bool refund = inv.payer_organization() != pay.payer();
      if (refund && inv.payer_organization() != pay.payee()) {
        return InvalidField("payment.payer", "must be the invoice's payer, or one of its payees refunding the payer");
      }
      if (inv.currency_code() != pay.amount().currency_code()) {
        return InvalidField("payment.amount.currency_code", "must be the invoice's currency " + inv.currency_code(),
                            "CURRENCY_MISMATCH");
      }
      if (inv.state() != v1::Invoice::ISSUED) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_NOT_ISSUED",
                         pay.invoice() + " is " + v1::Invoice::State_Name(inv.state()));
      }
      // INVOICE_NOT_ISSUED, PAYEE_NOT_ON_INVOICE, INVOICE_IN_SETTLEMENT,
      // OVERPAYMENT: the contract's order.
      const std::string& payee_org = refund ? pay.payer() : pay.payee();
      v1::PayeeBalance* line = nullptr;
      for (auto& pb : *inv.mutable_payees()) {
        if (pb.organization() == payee_org) line = &pb;
      }
      if (line == nullptr) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "PAYEE_NOT_ON_INVOICE",
                         payee_org + " is not a payee of " + pay.invoice());
      }
      LS_ASSIGN_OR_RETURN(const std::string held, HeldBy(inv));
      if (!held.empty()) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_IN_SETTLEMENT",
                         pay.invoice() + " is settled through " + held + "; pay its transfers");
      }
      // Signed by direction: what the payer of the invoice still owes this
      // payee, negative when the payee owes the payer.
      const int64_t outstanding = line->amount_outstanding().amount_minor();
      const int64_t open = refund ? -outstanding : outstanding;  // from this payment's payer to its payee
      if (pay.amount().amount_minor() > open) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "OVERPAYMENT",
                         absl::StrCat("only ", std::max<int64_t>(open, 0), " is open from ", pay.payer(), " to ",
                                      pay.payee(), " on ", pay.invoice()));
      }
      const int64_t paid = refund ? -pay.amount().amount_minor() : pay.amount().amount_minor();
      line->mutable_amount_paid()->set_amount_minor(line->amount_paid().amount_minor() + paid);
      line->mutable_amount_outstanding()->set_amount_minor(outstanding - paid);
      inv.mutable_amount_paid()->set_amount_minor(inv.amount_paid().amount_minor() + paid);
      inv.mutable_amount_outstanding()->set_amount_minor(inv.amount_outstanding().amount_minor() - paid);
      inv.add_payments(pay.name());
      bool all_paid = true;
      for (const auto& pb : inv.payees()) all_paid &= pb.amount_outstanding().amount_minor() == 0;
      if (all_paid) {
        inv.set_state(v1::Invoice::PAID);
        *inv.mutable_paid_time() = ToProto(now);
      }
      *inv.mutable_update_time() = ToProto(now);
      inv.set_etag(std::to_string(doc->version + 1));
      if (all_paid) {
        // InvoicePaid carries the invoice after the change (its new etag).
        v1::BillingEvent paid = NewEvent(p, now, r.request_id());
        *paid.mutable_invoice_paid()->mutable_invoice() = inv;
        paid.mutable_invoice_paid()->set_paid_by(v1::InvoicePaid::PAYMENTS);
        later_events.push_back(paid.SerializeAsString());
      }
      const std::string key = keys::Doc("invoice", IdOf(inv.name()));
      step.version_checks.push_back({key, doc->version});
      step.puts.push_back({key, inv.SerializeAsString(), doc->version + 1});
      *recorded.mutable_payment_recorded()->mutable_invoice_outstanding() = inv.amount_outstanding();
    } else if (!pay.settlement().empty()) {
      LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("settlement", IdOf(pay.settlement()))));
      if (!doc) {
        return MakeError(absl::StatusCode::kNotFound, "SETTLEMENT_NOT_FOUND", pay.settlement() + " does not exist");
      }
      LS_ASSIGN_OR_RETURN(v1::Settlement s, Parse<v1::Settlement>(doc->data));
      // The contract's order: NOT_FOUND (the transfer), INVALID_ARGUMENT
      // against it (its currency), FAILED_PRECONDITION (the settlement
      // superseded, then the transfer's terms), ALREADY_EXISTS (paid).
      if (pay.transfer_index() < 0 || pay.transfer_index() >= s.transfers_size()) {
        return MakeError(absl::StatusCode::kNotFound, "TRANSFER_NOT_FOUND",
                         absl::StrCat(pay.settlement(), " has no transfer ", pay.transfer_index()));
      }
      v1::SettlementTransfer& t = *s.mutable_transfers(pay.transfer_index());
      if (t.amount().currency_code() != pay.amount().currency_code()) {
        return InvalidField("payment.amount.currency_code",
                            "must be the transfer's currency " + t.amount().currency_code(), "CURRENCY_MISMATCH");
      }
      if (s.state() != v1::Settlement::COMPUTED && s.state() != v1::Settlement::CLEARED) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "SETTLEMENT_SUPERSEDED",
                         pay.settlement() + " is " + v1::Settlement::State_Name(s.state()));
      }
      if (t.from_organization() != pay.payer() || t.to_organization() != pay.payee() ||
          t.amount().amount_minor() != pay.amount().amount_minor()) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "TRANSFER_MISMATCH",
                         absl::StrCat("transfer ", t.index(), " is ", t.amount().amount_minor(), " from ",
                                      t.from_organization(), " to ", t.to_organization()));
      }
      // A CLEARED settlement has every transfer paid.
      if (!t.payment().empty() || s.state() == v1::Settlement::CLEARED) {
        return MakeError(absl::StatusCode::kAlreadyExists, "TRANSFER_ALREADY_PAID",
                         absl::StrCat("transfer ", pay.transfer_index(), " of ", pay.settlement(), " was paid by ",
                                      t.payment().empty() ? "an earlier payment" : t.payment()));
      }
      t.set_payment(pay.name());
      // Before ClearSettlement: SettlementCleared carries the settlement
      // after the change.
      *s.mutable_update_time() = ToProto(now);
      bool all_paid = true;
      for (const auto& x : s.transfers()) all_paid &= !x.payment().empty();
      if (all_paid) {
        std::vector<std::pair<v1::Invoice, int64_t>> invoices;
        for (const auto& name : s.invoices()) {
          LS_ASSIGN_OR_RETURN(auto idoc, store_->docs().Get(keys::Doc("invoice", IdOf(name))));
          if (!idoc) continue;
          LS_ASSIGN_OR_RETURN(v1::Invoice inv, Parse<v1::Invoice>(idoc->data));
          invoices.emplace_back(std::move(inv), idoc->version);
        }
        LS_RETURN_IF_ERROR(ClearSettlement(p, now, r.request_id(), s, std::move(invoices), step, later_events));
      }
      const std::string key = keys::Doc("settlement", IdOf(s.name()));
      step.version_checks.push_back({key, doc->version});
      step.puts.push_back({key, s.SerializeAsString(), doc->version + 1});
    } else {
      // An open balance, or a pool paying granted subsidies: at most what
      // the payer owes the payee on its ledger (PAYABLE, a pool's
      // POOL_PAYABLE, with the payee as counterparty; credit-normal), and the
      // step applies only while that is still at least the amount (the
      // fields, debit minus credit, sum to at most -amount). A charge to the
      // pair posted meanwhile only raises the debt and leaves the step
      // valid; a payment or correction that took the debt below the amount
      // makes it read again (and answer OVERPAYMENT).
      // An organisation's debt to the payee is net of what the payee owes it
      // back on its RECEIVABLE (debit-normal): a refund or a negative
      // invoice line cleared through the receivable leaves its credit there.
      const bool pool = IsSubsidyPoolName(pay.payer());
      auto field_of = [&](v1::AccountKind kind) {
        return absl::StrCat(AccountName(pay.payer(), kind), "|", pay.payee(), "|", pay.amount().currency_code());
      };
      std::vector<std::string> fields = {field_of(pool ? v1::POOL_PAYABLE : v1::PAYABLE)};
      if (!pool) fields.push_back(field_of(v1::RECEIVABLE));
      LS_ASSIGN_OR_RETURN(auto balance, store_->Counters(keys::Balances(), fields));
      const int64_t open = -balance[0] - (pool ? 0 : balance[1]);
      if (pay.amount().amount_minor() > open) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "OVERPAYMENT",
                         absl::StrCat(pay.payer(), " owes ", pay.payee(), " only ", std::max<int64_t>(open, 0), " ",
                                      pay.amount().currency_code(), " minor units"));
      }
      step.sum_checks.push_back({keys::Balances(), fields, -pay.amount().amount_minor()});
    }
    AddPosting(step, posting, now);
    const std::string key = keys::Doc("payment", id);
    step.version_checks.push_back({key, 0});
    step.puts.push_back({key, pay.SerializeAsString(), 1});
    step.index_adds.push_back({keys::Index("payment"), keys::IndexMember(now, id)});
    step.stamp = now;
    step.response = SerializeDeterministic(pay);
    *recorded.mutable_payment_recorded()->mutable_payment() = pay;
    *recorded.mutable_payment_recorded()->mutable_posting() = posting;
    step.events.push_back(recorded.SerializeAsString());
    step.events.insert(step.events.end(), later_events.begin(), later_events.end());
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    if (result.kind != StepResult::Kind::kStale) return Settle(result, pay);
  }
  return Conflict();
}

absl::StatusOr<v1::Invoice> BillingManager::MarkInvoicePaid(const Principal& p, const v1::MarkInvoicePaidRequest& r) {
  v1::GetInvoiceRequest get;
  get.set_name(r.name());
  LS_RETURN_IF_ERROR(GetInvoice(p, get).status());
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("MarkInvoicePaid", r.request_id());
  const std::string fingerprint = RequestFingerprint("MarkInvoicePaid", r, ActorName(p));
  const std::string key = keys::Doc("invoice", IdOf(r.name()));
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::Invoice>(*seen);
    LS_ASSIGN_OR_RETURN(auto loaded, IssuedInvoice(*store_, r.name(), r.etag()));
    auto& [inv, version] = loaded;
    LS_ASSIGN_OR_RETURN(const std::string held, HeldBy(inv));
    if (!held.empty()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_IN_SETTLEMENT",
                       r.name() + " is settled through " + held + "; pay its transfers");
    }
    // One payment per payee with an open amount (direction by sign) and the
    // invoice PAID, all in one step: either everything is recorded or nothing.
    const absl::Time now = StampNow();
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    step.limit_field = "name";
    std::vector<v1::BillingEvent> recorded;
    int64_t outstanding = inv.amount_outstanding().amount_minor();
    for (auto& pb : *inv.mutable_payees()) {
      const int64_t open = pb.amount_outstanding().amount_minor();
      if (open == 0) continue;
      const std::string id = absl::StrFormat(
          "pay-%d-%s", Ms(now),
          Hex(Fnv(absl::StrCat(inv.name(), "|", pb.organization(), "|", version))).substr(0, 12));
      v1::Payment pay;
      pay.set_name("payments/" + id);
      pay.set_payer(open > 0 ? inv.payer_organization() : pb.organization());
      pay.set_payee(open > 0 ? pb.organization() : inv.payer_organization());
      *pay.mutable_amount() = MakeMoney(inv.currency_code(), std::abs(open));
      pay.set_invoice(inv.name());
      pay.set_external_reference(r.external_reference());
      *pay.mutable_paid_time() = r.has_paid_time() ? r.paid_time() : ToProto(now);
      pay.set_recorded_by(ActorName(p));
      *pay.mutable_create_time() = ToProto(now);
      v1::Posting posting;
      posting.set_name("postings/" + id);
      posting.set_kind(v1::PAYMENT);
      posting.set_currency_code(inv.currency_code());
      posting.set_payment(pay.name());
      posting.set_reason(pay.external_reference());
      posting.set_description(absl::StrCat("payment ", pay.payer(), " -> ", pay.payee(), " of ", inv.name()));
      posting.set_actor(ActorName(p));
      *posting.mutable_create_time() = ToProto(now);
      LS_ASSIGN_OR_RETURN(auto entries, PaymentEntries(pay.payer(), pay.payee(), pay.amount()));
      for (auto& e : entries) *posting.add_entries() = std::move(e);
      pay.set_posting(posting.name());
      AddPosting(step, posting, now);
      const std::string pkey = keys::Doc("payment", id);
      step.version_checks.push_back({pkey, 0});
      step.puts.push_back({pkey, pay.SerializeAsString(), 1});
      step.index_adds.push_back({keys::Index("payment"), keys::IndexMember(now, id)});
      step.stamp = now;
      *pb.mutable_amount_paid() = MakeMoney(inv.currency_code(), pb.amount_paid().amount_minor() + open);
      pb.mutable_amount_outstanding()->set_amount_minor(0);
      inv.add_payments(pay.name());
      outstanding -= open;
      v1::BillingEvent e = NewEvent(p, now, r.request_id());
      *e.mutable_payment_recorded()->mutable_payment() = pay;
      *e.mutable_payment_recorded()->mutable_posting() = posting;
      *e.mutable_payment_recorded()->mutable_invoice_outstanding() = MakeMoney(inv.currency_code(), outstanding);
      recorded.push_back(std::move(e));
    }
    *inv.mutable_amount_paid() = inv.amount_due();
    *inv.mutable_amount_outstanding() = MakeMoney(inv.currency_code(), 0);
    inv.set_state(v1::Invoice::PAID);
    *inv.mutable_paid_time() = r.has_paid_time() ? r.paid_time() : ToProto(now);
    *inv.mutable_update_time() = ToProto(now);
    inv.set_etag(std::to_string(version + 1));
    step.version_checks.push_back({key, version});
    step.puts.push_back({key, inv.SerializeAsString(), version + 1});
    step.response = SerializeDeterministic(inv);
    for (const auto& e : recorded) step.events.push_back(e.SerializeAsString());
    v1::BillingEvent paid = NewEvent(p, now, r.request_id());
    *paid.mutable_invoice_paid()->mutable_invoice() = inv;
    paid.mutable_invoice_paid()->set_paid_by(v1::InvoicePaid::MARKED_PAID);
    step.events.push_back(paid.SerializeAsString());
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    if (result.kind != StepResult::Kind::kStale) return Settle(result, inv);
  }
  return Conflict();
}

absl::StatusOr<v1::Invoice> BillingManager::VoidInvoice(const Principal& p, const v1::VoidInvoiceRequest& r) {
  LS_RETURN_IF_ERROR(NameId(r.name(), "invoices").status());
  if (r.reason().empty()) return InvalidField("reason", "say why the invoice is void");
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("VoidInvoice", r.request_id());
  const std::string fingerprint = RequestFingerprint("VoidInvoice", r, ActorName(p));
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::Invoice>(*seen);
    // ISSUED, or PAID at issue with nothing outstanding (never paid by
    // anyone: voided like an issued one, its lines return to the next issue).
    LS_ASSIGN_OR_RETURN(auto loaded, IssuedInvoice(*store_, r.name(), r.etag(), /*or_paid_at_issue=*/true));
    auto& [inv, version] = loaded;
    if (!inv.payments().empty()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_HAS_PAYMENTS",
                       "payments were recorded against " + r.name());
    }
    const absl::Time now = clock_->Now();
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    v1::BillingEvent e = NewEvent(p, now, r.request_id());
    // A COMPUTED settlement containing it becomes SUPERSEDED, and its other
    // invoices are in no settlement any more (compute it again).
    LS_ASSIGN_OR_RETURN(const std::string held, HeldBy(inv));
    if (!held.empty()) {
      LS_ASSIGN_OR_RETURN(auto sdoc, store_->docs().Get(keys::Doc("settlement", IdOf(held))));
      if (sdoc) {
        LS_ASSIGN_OR_RETURN(v1::Settlement s, Parse<v1::Settlement>(sdoc->data));
        if (s.state() == v1::Settlement::CLEARED) {
          return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_IN_CLEARED_SETTLEMENT",
                           r.name() + " was paid through " + s.name());
        }
        if (s.state() == v1::Settlement::COMPUTED) {
          // Paid transfers settle its invoices only when the last one clears
          // it: superseding it now would leave them paying for nothing.
          for (const auto& t : s.transfers()) {
            if (!t.payment().empty()) {
              return MakeError(absl::StatusCode::kFailedPrecondition, "SETTLEMENT_IN_PROGRESS",
                               absl::StrCat(r.name(), " is in ", s.name(),
                                            ", which already has paid transfers; pay its remaining transfers "
                                            "first"));
            }
          }
          s.set_state(v1::Settlement::SUPERSEDED);
          *s.mutable_update_time() = ToProto(now);
          const std::string skey = keys::Doc("settlement", IdOf(s.name()));
          step.version_checks.push_back({skey, sdoc->version});
          step.puts.push_back({skey, s.SerializeAsString(), sdoc->version + 1});
          e.mutable_invoice_voided()->add_superseded_settlements(s.name());
          for (const auto& name : s.invoices()) {
            if (name == inv.name()) continue;
            LS_ASSIGN_OR_RETURN(auto odoc, store_->docs().Get(keys::Doc("invoice", IdOf(name))));
            if (!odoc) continue;
            LS_ASSIGN_OR_RETURN(v1::Invoice other, Parse<v1::Invoice>(odoc->data));
            if (other.settlement() != s.name()) continue;
            other.clear_settlement();  // neither state nor payments: its etag stays
            *other.mutable_update_time() = ToProto(now);
            const std::string okey = keys::Doc("invoice", IdOf(name));
            step.version_checks.push_back({okey, odoc->version});
            step.puts.push_back({okey, other.SerializeAsString(), odoc->version + 1});
          }
        }
      }
      inv.clear_settlement();
    }
    inv.set_state(v1::Invoice::VOID);
    *inv.mutable_void_time() = ToProto(now);
    inv.set_void_reason(r.reason());
    *inv.mutable_update_time() = ToProto(now);
    inv.set_etag(std::to_string(version + 1));
    step.response = SerializeDeterministic(inv);
    const std::string key = keys::Doc("invoice", IdOf(inv.name()));
    step.version_checks.push_back({key, version});
    step.puts.push_back({key, inv.SerializeAsString(), version + 1});
    // Its lines return to the next issue; the slot frees for a re-issue.
    const std::string slot = absl::StrCat(inv.payer_organization(), "|", inv.period(), "|", inv.currency_code());
    step.hash_sets.push_back({keys::Invoiced(), slot, ""});
    step.hash_sets.push_back({keys::Voided(), slot, IdOf(inv.name())});  // the re-issue links to it
    for (const auto& line : inv.lines()) {
      step.hash_sets.push_back({"{billing}:invoicedpost", IdOf(line.posting()) + "|" + inv.payer_organization(), ""});
    }
    *e.mutable_invoice_voided()->mutable_invoice() = inv;
    step.events.push_back(e.SerializeAsString());
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    if (result.kind != StepResult::Kind::kStale) return Settle(result, inv);
  }
  return Conflict();
}

// ================================================================ corrections

absl::StatusOr<v1::PostingKind> BillingManager::RootKindOf(const v1::Posting& posting) const {
  v1::Posting at = posting;
  // A correction names the posting it corrects; the chain is short (each
  // link is an admin's correction) but bounded all the same.
  for (int depth = 0; depth < 64 && at.kind() == v1::CORRECTION && !at.corrects().empty(); ++depth) {
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("posting", IdOf(at.corrects()))));
    if (!doc) return at.kind();
    LS_ASSIGN_OR_RETURN(at, Parse<v1::Posting>(doc->data));
  }
  return at.kind();
}

absl::StatusOr<v1::PostCorrectionResponse> BillingManager::PostCorrection(const Principal& p,
                                                                          const v1::PostCorrectionRequest& r) {
  // The whole name: its last segment alone would find another posting.
  LS_RETURN_IF_ERROR(NameField(r.posting(), "postings", "posting"));
  if (r.reason().empty()) return InvalidField("reason", "say why the posting is corrected");
  if (r.mode() == v1::PostCorrectionRequest::CORRECTION_MODE_UNSPECIFIED) {
    return InvalidField("mode", "choose REVERSE or ADJUST");
  }
  if (r.mode() == v1::PostCorrectionRequest::REVERSE && !r.entries().empty()) {
    return InvalidField("entries", "REVERSE takes no entries: it mirrors the posting");
  }
  if (r.mode() == v1::PostCorrectionRequest::ADJUST && r.entries().empty()) {
    return InvalidField("entries", "ADJUST needs the balanced entries of the adjustment");
  }
  if (r.mode() == v1::PostCorrectionRequest::ADJUST) {
    // The entries on their own (UNBALANCED_POSTING, INVALID_ACCOUNT,
    // INVALID_AMOUNT, two currencies among them) before anything is read
    // (POSTING_NOT_FOUND, NOT_CORRECTABLE); the corrected posting's currency
    // once it is read. The overall balance only, as below.
    // A PAYABLE (or POOL_PAYABLE) entry owed to a pool is no relation of
    // the ledger model: on an invoice it would make the pool a payee that
    // no issue can name and no payment can clear.
    BalanceCheckOptions opts;
    opts.per_owner = false;
    opts.owed_to_organizations = true;
    LS_RETURN_IF_ERROR(CheckBalanced({r.entries().begin(), r.entries().end()}, opts));
  }
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("PostCorrection", r.request_id());
  const std::string fingerprint = RequestFingerprint("PostCorrection", r, ActorName(p));
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::PostCorrectionResponse>(*seen);
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("posting", IdOf(r.posting()))));
    if (!doc) return MakeError(absl::StatusCode::kNotFound, "POSTING_NOT_FOUND", r.posting() + " does not exist");
    LS_ASSIGN_OR_RETURN(v1::Posting original, Parse<v1::Posting>(doc->data));
    if (original.kind() == v1::SETTLEMENT_NETTING) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                       "settlement netting is corrected by voiding its settlement");
    }
    // A payment's mirror would leave the Payment, the invoice it paid
    // (amount_paid, PAID) and the settlement transfer it paid as they are:
    // money that went back is recorded as a payment of its own.
    if (r.mode() == v1::PostCorrectionRequest::REVERSE && original.kind() == v1::PAYMENT) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                       r.posting() + " records " + original.payment() +
                           ", which stands with what it paid; record the money going back as a payment from "
                           "the payee to the payer (RecordPayment), or post an ADJUST");
    }
    // A deposit's release or application is its settlement at the lease's
    // close: its mirror would hold the deposit again on the ledger while the
    // Deposit stays RELEASED or APPLIED, and no close comes to settle it
    // again.
    if (r.mode() == v1::PostCorrectionRequest::REVERSE &&
        (original.kind() == v1::DEPOSIT_RELEASE || original.kind() == v1::DEPOSIT_APPLICATION)) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                       r.posting() + " settles " + original.deposit() +
                           " at its lease's close, which is final; post an ADJUST on the accounts it owes or is "
                           "owed by instead");
    }
    // The deposit accounts move with the lease's deposit only (the hold at
    // handover, its release or application at the close, both in full): an
    // ADJUST moving them would leave the Deposit as it is and the close
    // would release, or apply, what the ledger no longer holds.
    if (r.mode() == v1::PostCorrectionRequest::ADJUST) {
      for (const auto& e : r.entries()) {
        // The entries were checked above (CheckBalanced: each account valid).
        auto account = ParseAccountName(e.account());
        if (account.ok() && (account->kind == v1::DEPOSIT_HELD || account->kind == v1::DEPOSIT_LODGED)) {
          return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                           e.account() + " moves only with a lease's deposit (held at handover, released or "
                                         "applied at the close); an ADJUST may not touch it");
        }
      }
    }
    // A deposit hold's mirror would leave its Deposit HELD, to be released
    // (or applied) in full when the lease is closed: the hold is undone by
    // that settlement, never by a reversal.
    if (r.mode() == v1::PostCorrectionRequest::REVERSE && original.kind() == v1::CHARGE &&
        !original.charge().empty()) {
      LS_ASSIGN_OR_RETURN(auto hdoc, store_->docs().Get(keys::Doc("charge", IdOf(original.charge()))));
      if (hdoc) {
        LS_ASSIGN_OR_RETURN(v1::Charge held, Parse<v1::Charge>(hdoc->data));
        if (held.fee_kind() == v1::DEPOSIT) {
          return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                           r.posting() + " holds the deposit of " + held.lease() +
                               ", which the lease's close releases or applies to damage");
        }
      }
    }
    // A charge reversed in full is final (Charge.REVERSED): its reversal,
    // and the reversals of its subsidies made with it, are not undone (the
    // charge would be billed again while it reads REVERSED); an ADJUST, or a
    // new charge, corrects it further.
    if (r.mode() == v1::PostCorrectionRequest::REVERSE && original.kind() == v1::CORRECTION &&
        absl::StartsWith(original.description(), "reversal of ") && !original.corrects().empty()) {
      bool of_charge = original.description() == "reversal of " + original.corrects() + " with its charge";
      if (!of_charge) {
        LS_ASSIGN_OR_RETURN(auto cdoc, store_->docs().Get(keys::Doc("posting", IdOf(original.corrects()))));
        if (cdoc) {
          LS_ASSIGN_OR_RETURN(v1::Posting corrected, Parse<v1::Posting>(cdoc->data));
          of_charge = corrected.kind() == v1::CHARGE;
        }
      }
      if (of_charge) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                         r.posting() + " reverses a charge in full, which is final; post an ADJUST instead");
      }
    }
    const absl::Time now = StampNow();
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    step.limit_field = r.mode() == v1::PostCorrectionRequest::ADJUST ? "entries" : "posting";
    v1::PostCorrectionResponse resp;
    auto correction = [&](const v1::Posting& of, std::vector<v1::Entry> entries, int n) -> absl::StatusOr<v1::Posting> {
      v1::Posting c;
      c.set_name(absl::StrCat("postings/", IdOf(of.name()), "-c", doc->version, "-", n));
      c.set_kind(v1::CORRECTION);
      c.set_currency_code(of.currency_code());
      c.set_corrects(of.name());
      c.set_charge(of.charge());
      c.set_subsidy_pool(of.subsidy_pool());
      c.set_reason(r.reason());
      c.set_description("correction of " + of.name() + ": " + r.reason());
      c.set_actor(ActorName(p));
      *c.mutable_create_time() = ToProto(now);
      for (auto& e : entries) *c.add_entries() = std::move(e);
      BalanceCheckOptions opts;
      opts.currency_code = of.currency_code();
      // The overall balance only: an ADJUST may move amounts between owners,
      // and a reversal mirrors a posting accepted before (one such ADJUST
      // too), so its per-owner nets are that posting's, negated.
      opts.per_owner = false;
      LS_RETURN_IF_ERROR(CheckBalanced({c.entries().begin(), c.entries().end()}, opts));
      return c;
    };
    // Whether a posting stands reversed (by itself or with its charge): a
    // reversal of it that was not itself reversed since (a reversal undone
    // gives the posting back, to be reversed again, alone or with its
    // charge). Chains are an admin's corrections, short, but bounded: past
    // the bound a posting counts as reversed (refused rather than doubled).
    std::function<absl::StatusOr<bool>(const v1::Posting&, int)> stands_reversed =
        [&](const v1::Posting& posting, int depth) -> absl::StatusOr<bool> {
      if (depth >= 64) return true;
      for (const auto& by : posting.corrected_by()) {
        LS_ASSIGN_OR_RETURN(auto cdoc, store_->docs().Get(keys::Doc("posting", IdOf(by))));
        if (!cdoc) continue;
        LS_ASSIGN_OR_RETURN(v1::Posting c, Parse<v1::Posting>(cdoc->data));
        // A reversal's description starts so (set here, never by the caller);
        // an ADJUST's starts "correction of ", whatever reason it carries.
        if (!absl::StartsWith(c.description(), "reversal of ")) continue;
        LS_ASSIGN_OR_RETURN(bool undone, stands_reversed(c, depth + 1));
        if (!undone) return true;
      }
      return false;
    };
    auto reversed = [&](const v1::Posting& posting) { return stands_reversed(posting, 0); };
    // The subsidised part of `base` (a SUBSIDY posting, or an ADJUST of
    // one or of a correction of one) that the owners' figures hold, in units
    // of its own: 1 (ChargePosted, or the ADJUST's own CorrectionPosted if it
    // moved it: Posting.subsidised_delta_sent), plus -1 for each reversal
    // of it and +1 for each reversal of a reversal, ..., that moved its
    // subsidised part (subsidised_delta_sent). Reversals of subsidies posted
    // before they moved subsidised parts moved none: a SUBSIDY posting
    // reversed so still counts 1 while it stands reversed. Bounded as
    // stands_reversed.
    std::function<absl::StatusOr<int64_t>(const v1::Posting&, int)> sent_below =
        [&](const v1::Posting& posting, int depth) -> absl::StatusOr<int64_t> {
      if (depth >= 64) return 0;
      int64_t sum = 0;
      for (const auto& by : posting.corrected_by()) {
        LS_ASSIGN_OR_RETURN(auto cdoc, store_->docs().Get(keys::Doc("posting", IdOf(by))));
        if (!cdoc) continue;
        LS_ASSIGN_OR_RETURN(v1::Posting c, Parse<v1::Posting>(cdoc->data));
        if (!absl::StartsWith(c.description(), "reversal of ")) continue;
        if (c.subsidised_delta_sent()) sum += depth % 2 == 0 ? -1 : 1;
        LS_ASSIGN_OR_RETURN(int64_t below, sent_below(c, depth + 1));
        sum += below;
      }
      return sum;
    };
    auto subsidised_held = [&](const v1::Posting& base) -> absl::StatusOr<int64_t> {
      LS_ASSIGN_OR_RETURN(int64_t below, sent_below(base, 0));
      return (base.kind() == v1::SUBSIDY || base.subsidised_delta_sent() ? 1 : 0) + below;
    };
    std::vector<v1::Posting> corrections;
    if (r.mode() == v1::PostCorrectionRequest::REVERSE) {
      LS_ASSIGN_OR_RETURN(bool done, reversed(original));
      if (done) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "ALREADY_REVERSED", r.posting() + " was reversed");
      }
      LS_ASSIGN_OR_RETURN(v1::Posting c, correction(original, ReverseEntries({original.entries().begin(),
                                                                               original.entries().end()}), 1));
      c.set_description("reversal of " + original.name() + ": " + r.reason());
      corrections.push_back(std::move(c));
    } else {
      LS_ASSIGN_OR_RETURN(v1::Posting c, correction(original, {r.entries().begin(), r.entries().end()}, 1));
      // Every account owner and counterparty named exists
      // (ORGANIZATION_NOT_FOUND, SUBSIDY_POOL_NOT_FOUND).
      std::set<std::string> parties;
      for (const auto& e : c.entries()) {
        LS_ASSIGN_OR_RETURN(AccountRef ref, ParseAccountName(e.account()));
        parties.insert(ref.owner);
        if (!e.counterparty().empty()) parties.insert(e.counterparty());
      }
      LS_RETURN_IF_ERROR(PartiesExist(parties));
      corrections.push_back(std::move(c));
    }
    // The charge, and (reversing a CHARGE posting) its subsidies too.
    std::optional<v1::Charge> charge;
    int64_t charge_version = 0;
    if (!original.charge().empty()) {
      LS_ASSIGN_OR_RETURN(auto cdoc, store_->docs().Get(keys::Doc("charge", IdOf(original.charge()))));
      if (cdoc) {
        LS_ASSIGN_OR_RETURN(charge, Parse<v1::Charge>(cdoc->data));
        charge_version = cdoc->version;
      }
    }
    // REVERSE: the posting at the base of the chain of reversals the
    // corrected posting ends (itself unless it is a reversal), `links` links
    // up; found unless a link is missing or the chain is too long.
    v1::Posting base = original;
    int links = 0;
    bool base_found = true;
    if (r.mode() == v1::PostCorrectionRequest::REVERSE) {
      for (; base.kind() == v1::CORRECTION && !base.corrects().empty() &&
             absl::StartsWith(base.description(), "reversal of ");
           ++links) {
        if (links >= 64) {
          base_found = false;
          break;
        }
        LS_ASSIGN_OR_RETURN(auto adoc, store_->docs().Get(keys::Doc("posting", IdOf(base.corrects()))));
        if (!adoc) {
          base_found = false;
          break;
        }
        LS_ASSIGN_OR_RETURN(base, Parse<v1::Posting>(adoc->data));
      }
    }
    // A reversal of a reversal makes the reversal it undoes stand again
    // (unless another reversal of that one still stands): refused when the
    // posting that one reverses stands reversed by another since, which
    // would be reversed twice (a subsidy reversed, that undone, the subsidy
    // reversed again, then the undoing reversed).
    if (r.mode() == v1::PostCorrectionRequest::REVERSE && links >= 2) {
      auto load = [&](const std::string& name) -> absl::StatusOr<std::optional<v1::Posting>> {
        LS_ASSIGN_OR_RETURN(auto pdoc, store_->docs().Get(keys::Doc("posting", IdOf(name))));
        if (!pdoc) return std::optional<v1::Posting>();
        LS_ASSIGN_OR_RETURN(v1::Posting parsed, Parse<v1::Posting>(pdoc->data));
        return std::optional<v1::Posting>(std::move(parsed));
      };
      // The standing reversal of `posting` other than `except`, if any.
      auto other_standing = [&](const v1::Posting& posting,
                                const std::string& except) -> absl::StatusOr<std::string> {
        for (const auto& by : posting.corrected_by()) {
          if (by == except) continue;
          LS_ASSIGN_OR_RETURN(auto c, load(by));
          if (!c || !absl::StartsWith(c->description(), "reversal of ")) continue;
          LS_ASSIGN_OR_RETURN(bool undone, reversed(*c));
          if (!undone) return c->name();
        }
        return std::string();
      };
      LS_ASSIGN_OR_RETURN(auto undone, load(original.corrects()));
      if (undone && !undone->corrects().empty()) {
        LS_ASSIGN_OR_RETURN(std::string keeps_undone, other_standing(*undone, original.name()));
        if (keeps_undone.empty()) {
          LS_ASSIGN_OR_RETURN(auto target, load(undone->corrects()));
          if (target) {
            LS_ASSIGN_OR_RETURN(std::string standing, other_standing(*target, undone->name()));
            if (!standing.empty()) {
              return MakeError(absl::StatusCode::kFailedPrecondition, "ALREADY_REVERSED",
                               absl::StrCat(target->name(), " stands reversed by ", standing, "; reversing ",
                                            r.posting(), " would make ", undone->name(),
                                            " reverse it a second time"));
            }
          }
        }
      }
    }
    // A charge reversed in full is final: a SUBSIDY posting of it reversed
    // on its own before is not given back (the pool would pay towards a
    // REVERSED charge).
    if (charge && r.mode() == v1::PostCorrectionRequest::REVERSE && charge->state() == v1::Charge::REVERSED &&
        base_found && base.kind() == v1::SUBSIDY && links % 2 == 1) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE",
                       absl::StrCat(charge->name(), " was reversed in full, which is final; reversing ",
                                    r.posting(), " would give ", base.name(), " back"));
    }
    // Reversing one SUBSIDY posting on its own gives its cap usage back too;
    // reversing that reversal (a chain of reversals only, k links from the
    // SUBSIDY posting) takes it again: the cap moves with the subsidy.
    if (charge && r.mode() == v1::PostCorrectionRequest::REVERSE) {
      const int64_t sign = links % 2 == 0 ? -1 : 1;
      for (const auto& line : charge->subsidy_lines()) {
        if (!base_found || base.kind() != v1::SUBSIDY || line.posting() != base.name() || !line.has_cap_period()) {
          continue;
        }
        step.incrs.push_back({keys::Cap(IdOf(line.subsidy_pool())),
                              CapField(line.beneficiary_organization(), FromProto(line.cap_period().start_time()),
                                       FromProto(line.cap_period().end_time())),
                              sign * line.amount().amount_minor()});
      }
    }
    // Subsidy lines whose subsidised parts left the owners' figures before
    // (their postings reversed on their own, IncomeDeltasOf): the charge's
    // reversal does not take them out again. One reversed on its own
    // before reversals moved subsidised parts still counts: the charge's
    // reversal takes it out and marks that reversal (subsidised_delta_sent).
    std::set<std::string> subsidised_gone;
    if (charge && r.mode() == v1::PostCorrectionRequest::REVERSE && original.kind() == v1::CHARGE) {
      int n = 2;
      for (const auto& line : charge->subsidy_lines()) {
        LS_ASSIGN_OR_RETURN(auto sdoc, store_->docs().Get(keys::Doc("posting", IdOf(line.posting()))));
        if (!sdoc) continue;
        LS_ASSIGN_OR_RETURN(v1::Posting sub, Parse<v1::Posting>(sdoc->data));
        LS_ASSIGN_OR_RETURN(int64_t held, subsidised_held(sub));
        if (held == 0) subsidised_gone.insert(sub.name());
        // Reversed on its own before: its pool and cap usage are restored already.
        LS_ASSIGN_OR_RETURN(bool sub_reversed, reversed(sub));
        if (sub_reversed) {
          if (held == 0) continue;
          // Reversed so before its reversal moved subsidised parts: the
          // reversal that stands is marked now, its part going with the charge.
          for (const auto& by : sub.corrected_by()) {
            const std::string rkey = keys::Doc("posting", IdOf(by));
            LS_ASSIGN_OR_RETURN(auto rdoc, store_->docs().Get(rkey));
            if (!rdoc) continue;
            LS_ASSIGN_OR_RETURN(v1::Posting rev, Parse<v1::Posting>(rdoc->data));
            if (!absl::StartsWith(rev.description(), "reversal of ") || rev.subsidised_delta_sent()) continue;
            LS_ASSIGN_OR_RETURN(bool undone, reversed(rev));
            if (undone) continue;
            rev.set_subsidised_delta_sent(true);
            step.version_checks.push_back({rkey, rdoc->version});
            step.puts.push_back({rkey, rev.SerializeAsString(), rdoc->version + 1});
            break;
          }
          continue;
        }
        LS_ASSIGN_OR_RETURN(v1::Posting c, correction(sub, ReverseEntries({sub.entries().begin(), sub.entries().end()}), n++));
        c.set_description("reversal of " + sub.name() + " with its charge");
        c.set_subsidised_delta_sent(held != 0);
        if (line.has_cap_period()) {
          step.incrs.push_back({keys::Cap(IdOf(line.subsidy_pool())),
                                CapField(line.beneficiary_organization(), FromProto(line.cap_period().start_time()),
                                         FromProto(line.cap_period().end_time())),
                                -line.amount().amount_minor()});
        }
        sub.add_corrected_by(c.name());
        const std::string skey = keys::Doc("posting", IdOf(sub.name()));
        step.version_checks.push_back({skey, sdoc->version});
        step.puts.push_back({skey, sub.SerializeAsString(), sdoc->version + 1});
        corrections.push_back(std::move(c));
      }
    }
    // A correction of a SUBSIDY posting (or of a correction of one) moves the
    // payers' subsidised parts by its entries (IncomeDeltasOf), and is marked
    // so, unless it reverses a posting whose subsidised part the figures do
    // not hold as it stands: a reversal of a reversal posted before
    // reversals moved subsidised parts (which moved none) moves none either.
    LS_ASSIGN_OR_RETURN(v1::PostingKind root_kind, RootKindOf(original));
    bool moves_subsidised = root_kind == v1::SUBSIDY;
    if (moves_subsidised && r.mode() == v1::PostCorrectionRequest::REVERSE && original.kind() != v1::CHARGE &&
        base_found) {
      LS_ASSIGN_OR_RETURN(int64_t held, subsidised_held(base));
      LS_ASSIGN_OR_RETURN(bool base_reversed, reversed(base));
      moves_subsidised = held == (base_reversed ? 0 : 1);
    }
    if (original.kind() != v1::CHARGE || r.mode() != v1::PostCorrectionRequest::REVERSE) {
      corrections[0].set_subsidised_delta_sent(moves_subsidised);
    }
    for (const auto& c : corrections) AddPosting(step, c, now);
    // A correction of a top-up (or of a correction of one) changes the
    // pools' funding, not their grants: their topped_up_total moves by its
    // net credit on their POOL_FUNDS, in the same step, so granted_total
    // (topped_up_total - balance) stays the subsidies net of reversals.
    if (root_kind == v1::POOL_TOP_UP) {
      std::map<std::string, __int128> funded;  // pool -> net credit on its POOL_FUNDS
      for (const auto& c : corrections) {
        for (const auto& e : c.entries()) {
          auto ref = ParseAccountName(e.account());
          if (!ref.ok() || ref->kind != v1::POOL_FUNDS) continue;
          funded[ref->owner] += e.credit().amount_minor() - e.debit().amount_minor();
        }
      }
      for (const auto& [pool_name, delta] : funded) {
        if (delta == 0) continue;
        const std::string pkey = keys::Doc("pool", IdOf(pool_name));
        LS_ASSIGN_OR_RETURN(auto pdoc, store_->docs().Get(pkey));
        if (!pdoc) {
          return MakeError(absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND", pool_name + " does not exist");
        }
        LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(pdoc->data));
        const int64_t before = pool.topped_up_total().amount_minor();
        const __int128 after = before + delta;  // exact, however many entries
        if (after < 0 || after > kMaxAmountMinor) {
          return InvalidField(step.limit_field,
                              absl::StrCat("a pool's top-ups net of their corrections stay within 0..10^15 (",
                                           kMaxAmountMinor, ") minor units; ", pool_name, " has ", before,
                                           ", this correction would take it ",
                                           delta < 0 ? "below 0" : "beyond that"));
        }
        pool.mutable_topped_up_total()->set_amount_minor(static_cast<int64_t>(after));
        *pool.mutable_update_time() = ToProto(now);
        step.version_checks.push_back({pkey, pdoc->version});
        step.puts.push_back({pkey, pool.SerializeAsString(), pdoc->version + 1});
      }
    }
    original.add_corrected_by(corrections[0].name());
    const std::string okey = keys::Doc("posting", IdOf(original.name()));
    step.version_checks.push_back({okey, doc->version});
    step.puts.push_back({okey, original.SerializeAsString(), doc->version + 1});
    // Reversing the CHARGE posting reverses the charge in full; any other
    // correction of its postings adjusts it, unless it is reversed already
    // (REVERSED stays: ALREADY_REVERSED answers another reversal).
    const bool reverses_charge = r.mode() == v1::PostCorrectionRequest::REVERSE && original.kind() == v1::CHARGE;
    if (charge) {
      charge->set_state(reverses_charge || charge->state() == v1::Charge::REVERSED ? v1::Charge::REVERSED
                                                                                    : v1::Charge::ADJUSTED);
      for (const auto& c : corrections) charge->add_corrections(c.name());
      *charge->mutable_update_time() = ToProto(now);
      const std::string ckey = keys::Doc("charge", IdOf(charge->name()));
      step.version_checks.push_back({ckey, charge_version});
      step.puts.push_back({ckey, charge->SerializeAsString(), charge_version + 1});
      *resp.mutable_charge() = *charge;
    }
    *resp.mutable_correction() = corrections[0];
    for (size_t i = 1; i < corrections.size(); ++i) *resp.add_related_corrections() = corrections[i];
    step.response = SerializeDeterministic(resp);
    v1::BillingEvent e = NewEvent(p, now, r.request_id());
    auto* ev = e.mutable_correction_posted();
    *ev->mutable_correction() = resp.correction();
    *ev->mutable_related_corrections() = resp.related_corrections();
    ev->set_corrected_posting(original.name());
    if (charge) *ev->mutable_charge() = *charge;
    if (charge && reverses_charge) {
      // Empty when the charge was no income of anyone (billing_events.proto).
      // The charge as the figures hold it: without the subsidies whose
      // subsidised parts left them before.
      v1::Charge standing = *charge;
      standing.clear_subsidy_lines();
      for (const auto& line : charge->subsidy_lines()) {
        if (subsidised_gone.count(line.posting()) == 0) *standing.add_subsidy_lines() = line;
      }
      v1::IncomeFigures delta = NegatedIncome(IncomeOf(standing, now));
      if (!AllZero(delta)) *ev->add_income_deltas() = std::move(delta);
    } else {
      // An ADJUST (or the reversal of another posting) changes the owners'
      // figures by its entries on their income accounts, and a correction
      // of a SUBSIDY posting the payers' subsidised parts by its entries on
      // the owners' RECEIVABLE from them.
      for (auto& f : IncomeDeltasOf(corrections, charge ? &*charge : nullptr, now, moves_subsidised)) {
        *ev->add_income_deltas() = std::move(f);
      }
    }
    LS_ASSIGN_OR_RETURN(auto pool_balances, PoolBalancesAfter(step, corrections));
    for (auto& b : pool_balances) *ev->add_pool_balances() = std::move(b);
    ev->set_reason(r.reason());
    step.events.push_back(e.SerializeAsString());
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    if (result.kind != StepResult::Kind::kStale) return Settle(result, resp);
  }
  return Conflict();
}

// ================================================================ reports

namespace {

// The interval and currency of a statement or income report: both ends set
// (an unset start is no "since the beginning": the interval is required),
// start before end; the currency empty (the consortium currency) or of ISO
// 4217's list, as for invoices ("cny" or "RMB" would report nothing and
// echo the code in every amount).
absl::Status ReportRequestFields(const labshare::type::v1::Interval& interval, bool has_interval, const std::string& currency) {
  if (!has_interval || !interval.has_start_time() || !interval.has_end_time() ||
      FromProto(interval.end_time()) <= FromProto(interval.start_time())) {
    return InvalidField("interval", "needs start_time and end_time, start_time before end_time");
  }
  return CheckRequestCurrency(currency);
}

}  // namespace

absl::StatusOr<v1::OrganizationStatement> BillingManager::GetOrganizationStatement(
    const Principal& p, const v1::GetOrganizationStatementRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "statements").status());
  // Scope before validation (types.proto): a member naming anything but its
  // own organisation is refused first.
  if (!SeesAll(p) && r.organization() != ActorOrganization(p)) return OrgScope("statement");
  if (!IsOrganizationName(r.organization())) return InvalidField("organization", "must be organizations/{organization}");
  LS_RETURN_IF_ERROR(ReportRequestFields(r.interval(), r.has_interval(), r.currency_code()));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  // NOT_FOUND (ORGANIZATION_NOT_FOUND) for one inventory does not know.
  LS_RETURN_IF_ERROR(inventory_->GetOrganization(r.organization()).status());
  const std::string currency = r.currency_code().empty() ? kDefaultCurrency : r.currency_code();
  const absl::Time from = FromProto(r.interval().start_time()), to = FromProto(r.interval().end_time());
  std::vector<v1::AccountKind> kinds;
  for (int k : r.account_kinds()) {  // each kind once, in the order first asked for
    const auto kind = static_cast<v1::AccountKind>(k);
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
  }
  if (kinds.empty()) kinds = {v1::RECEIVABLE, v1::PAYABLE};
  v1::OrganizationStatement out;
  out.set_organization(r.organization());
  *out.mutable_interval() = r.interval();
  out.set_currency_code(currency);
  for (auto k : kinds) out.add_account_kinds(k);
  struct Row {
    AccountLine line;
    std::string account;
    v1::AccountKind kind;
    absl::Time time;                  // the posting's create_time
    std::optional<v1::Posting> posting;  // none for an archived year's carried-forward line
  };
  std::vector<Row> rows;
  int64_t opening = 0;
  // The interval is half-open, to the nanosecond: a line carries its
  // posting's create_time in whole milliseconds (rounded down), so a line
  // of the millisecond of `from` or of `to` is placed by its posting's
  // create_time (a carried-forward line, which has no posting, by its
  // millisecond).
  const int64_t from_ms = Ms(from), to_ms = Ms(to);
  for (auto k : kinds) {
    const std::string account = AccountName(r.organization(), k);
    LS_ASSIGN_OR_RETURN(auto raw, store_->List(keys::Account(account)));
    for (auto& l : ParseLines(raw)) {
      if (l.currency != currency || l.ms > to_ms) continue;
      // Balances on the statement are on the debit side (owed to minus owed by).
      if (l.ms < from_ms) {
        opening += l.amount;
        continue;
      }
      Row row{l, account, k, absl::FromUnixMillis(l.ms), std::nullopt};
      LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("posting", l.posting)));
      if (doc) {
        LS_ASSIGN_OR_RETURN(row.posting, Parse<v1::Posting>(doc->data));
        row.time = FromProto(row.posting->create_time());
      }
      if (row.time >= to) continue;
      if (row.time < from) {
        opening += l.amount;
        continue;
      }
      rows.push_back(std::move(row));
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.time < b.time; });
  int64_t running = opening, debits = 0, credits = 0;
  *out.mutable_opening_balance() = MakeMoney(currency, opening);
  for (const auto& row : rows) {
    running += row.line.amount;
    auto* s = out.add_lines();
    s->set_posting("postings/" + row.line.posting);
    *s->mutable_posting_time() = ToProto(row.time);
    s->set_account(row.account);
    s->set_counterparty(row.line.counterparty);
    if (row.line.amount > 0) {
      *s->mutable_debit() = MakeMoney(currency, row.line.amount);
      debits += row.line.amount;
    } else {
      *s->mutable_credit() = MakeMoney(currency, -row.line.amount);
      credits -= row.line.amount;
    }
    *s->mutable_running_balance() = MakeMoney(currency, running);
    if (row.posting) {
      s->set_kind(row.posting->kind());
      s->set_description(row.posting->description());
      s->set_charge(row.posting->charge());
      s->set_payment(row.posting->payment());
    }
  }
  *out.mutable_total_debits() = MakeMoney(currency, debits);
  *out.mutable_total_credits() = MakeMoney(currency, credits);
  *out.mutable_closing_balance() = MakeMoney(currency, running);
  LS_ASSIGN_OR_RETURN(std::string next, KeepPage(page, out.mutable_lines()));
  if (!next.empty()) out.set_next_page_token(page_tokens_.Make(r, p, next));
  return out;
}

absl::StatusOr<v1::OwnerIncomeReport> BillingManager::GetOwnerIncomeReport(const Principal& p,
                                                                           const v1::GetOwnerIncomeReportRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "income").status());
  // Scope before validation (types.proto), as GetOrganizationStatement: a
  // member naming anything but its own organisation is refused first.
  if (!SeesAll(p) && r.owner_organization() != ActorOrganization(p)) return OrgScope("income");
  if (!IsOrganizationName(r.owner_organization())) {
    return InvalidField("owner_organization", "must be organizations/{organization}");
  }
  LS_RETURN_IF_ERROR(ReportRequestFields(r.interval(), r.has_interval(), r.currency_code()));
  if (!r.instrument().empty() && !IsResourceName(r.instrument(), "instruments")) {
    return InvalidField("instrument", "must be instruments/{instrument}");
  }
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  // NOT_FOUND (ORGANIZATION_NOT_FOUND) for an owner inventory does not know.
  LS_RETURN_IF_ERROR(inventory_->GetOrganization(r.owner_organization()).status());
  const std::string currency = r.currency_code().empty() ? kDefaultCurrency : r.currency_code();
  const std::string& owner = r.owner_organization();
  const absl::Time from = FromProto(r.interval().start_time()), to = FromProto(r.interval().end_time());
  const int64_t from_ms = Ms(from), to_ms = Ms(to);

  // The owner's ledger lines posted in the interval, in the report's
  // currency, that make its figures: credits to INCOME, IN_KIND_CONTRIBUTION,
  // INTERNAL_USE and COMPENSATION (debits count negative), and the debits on
  // RECEIVABLE with a pool as counterparty (what pools pay of the income).
  const std::vector<std::pair<v1::AccountKind, IncomeFigure>> accounts = {
      {v1::INCOME, IncomeFigure::kService},
      {v1::IN_KIND_CONTRIBUTION, IncomeFigure::kInKind},
      {v1::INTERNAL_USE, IncomeFigure::kInternal},
      {v1::COMPENSATION, IncomeFigure::kCompensation},
      {v1::RECEIVABLE, IncomeFigure::kSubsidised}};
  std::vector<IncomeLine> lines;
  std::set<std::string> posting_names;
  for (const auto& [kind, figure] : accounts) {
    LS_ASSIGN_OR_RETURN(auto raw, store_->List(keys::Account(AccountName(owner, kind))));
    for (auto& l : ParseLines(raw)) {
      // The lines of the milliseconds of `from` and `to` too: their
      // postings' create_time decides (below), to the nanosecond.
      if (l.currency != currency || l.ms < from_ms || l.ms > to_ms) continue;
      if (figure == IncomeFigure::kSubsidised && !IsSubsidyPoolName(l.counterparty)) continue;
      const int64_t amount = figure == IncomeFigure::kSubsidised ? l.amount : -l.amount;
      posting_names.insert("postings/" + l.posting);
      lines.push_back({"postings/" + l.posting, l.counterparty, amount, figure});
    }
  }
  // Their postings (an archived year's carried-forward lines have none and
  // are not counted), the postings they correct, the deposits of deposit
  // applications and the charges that give the keys.
  LS_ASSIGN_OR_RETURN(auto postings, LoadDocs<v1::Posting>(*store_, "posting", posting_names));
  std::set<std::string> corrected_names, deposit_names, charge_names;
  for (const auto& [name, posting] : postings) {
    if (!posting.corrects().empty()) corrected_names.insert(posting.corrects());
    if (posting.kind() == v1::DEPOSIT_APPLICATION && !posting.deposit().empty()) deposit_names.insert(posting.deposit());
    if (!posting.charge().empty()) charge_names.insert(posting.charge());
  }
  LS_ASSIGN_OR_RETURN(auto corrected, LoadDocs<v1::Posting>(*store_, "posting", corrected_names));
  LS_ASSIGN_OR_RETURN(auto deposits, LoadDocs<v1::Deposit>(*store_, "deposit", deposit_names));
  for (const auto& [name, d] : deposits) {
    if (!d.hold_charge().empty()) charge_names.insert(d.hold_charge());
  }
  LS_ASSIGN_OR_RETURN(auto charges, LoadDocs<v1::Charge>(*store_, "charge", charge_names));
  auto find = [](const auto& docs, const std::string& name) -> const auto* {
    auto it = docs.find(name);
    return it == docs.end() ? nullptr : &it->second;
  };

  using Key = std::tuple<std::string, int, std::string, int, int>;  // instrument, mode, payer, fee kind, unit
  std::map<Key, v1::IncomeRow> rows;
  std::set<std::pair<std::string, Key>> counted;  // (posting, row): a charge counts once per row
  for (const IncomeLine& line : lines) {
    const v1::Posting* posting = find(postings, line.posting);
    if (posting == nullptr) continue;
    // Posted in the half-open interval, to the nanosecond.
    const absl::Time posted = FromProto(posting->create_time());
    if (posted < from || posted >= to) continue;
    const v1::Posting* of = posting->kind() == v1::CORRECTION ? find(corrected, posting->corrects()) : nullptr;
    if (line.figure == IncomeFigure::kSubsidised &&
        (posting->kind() == v1::CORRECTION ? of == nullptr || of->kind() != v1::SUBSIDY
                                           : posting->kind() != v1::SUBSIDY)) {
      continue;  // a pool's payment, not a subsidy
    }
    const v1::Charge* charge = find(charges, posting->charge());
    if (posting->kind() == v1::DEPOSIT_APPLICATION) {
      const v1::Deposit* d = find(deposits, posting->deposit());
      if (d != nullptr) charge = find(charges, d->hold_charge());
    }
    Key key;
    auto& [instrument, mode, payer, fee_kind, unit] = key;
    if (charge != nullptr) {
      instrument = charge->instrument();
      mode = charge->mode();
      payer = charge->payer_organization();
      fee_kind = charge->fee_kind();
      unit = charge->rate().unit();
    }
    switch (line.figure) {
      case IncomeFigure::kInKind:
      case IncomeFigure::kInternal:
        payer = owner;
        break;
      case IncomeFigure::kSubsidised:  // the beneficiary: whose receivable the pool relieves
        for (const auto& e : posting->entries()) {
          if (e.account() == AccountName(owner, v1::RECEIVABLE) && IsOrganizationName(e.counterparty())) {
            payer = e.counterparty();
          }
        }
        break;
      default:  // the participant credited (joint research: each its own share)
        if (IsOrganizationName(line.counterparty)) payer = line.counterparty;
    }
    if ((!r.instrument().empty() && instrument != r.instrument()) || (r.mode() != 0 && mode != r.mode())) continue;
    v1::IncomeRow& row = rows[key];
    if (!row.has_service_income()) {
      row.set_instrument(instrument);
      row.set_mode(static_cast<labshare::type::v1::SharingMode>(mode));
      row.set_payer_organization(payer);
      row.set_fee_kind(static_cast<v1::FeeKind>(fee_kind));
      row.set_unit(static_cast<v1::ChargeUnit>(unit));
      ZeroIncomeFigures(currency, &row);
    }
    BumpIncomeFigure(line.figure, line.amount, &row);
    if (posting->kind() == v1::CORRECTION && line.figure != IncomeFigure::kSubsidised) {
      Bump(row.mutable_corrections_amount(), line.amount);
    }
    // Charges: +1 for the CHARGE posting, -1 for its reversal.
    if (charge == nullptr || line.figure == IncomeFigure::kSubsidised) continue;
    int sign = 0;
    if (posting->kind() == v1::CHARGE && posting->charge() == charge->name()) sign = 1;
    if (of != nullptr && of->kind() == v1::CHARGE && IsMirror(*posting, *of)) sign = -1;
    if (sign == 0 || !counted.insert({posting->name(), key}).second) continue;
    row.set_charge_count(row.charge_count() + sign);
    row.set_quantity_milli(row.quantity_milli() + sign * charge->quantity_milli());
  }
  v1::OwnerIncomeReport out;
  out.set_owner_organization(owner);
  *out.mutable_interval() = r.interval();
  out.set_currency_code(currency);
  v1::IncomeRow* totals = out.mutable_totals();
  ZeroIncomeFigures(currency, totals);
  for (auto& [key, row] : rows) {
    totals->set_charge_count(totals->charge_count() + row.charge_count());
    totals->set_quantity_milli(totals->quantity_milli() + row.quantity_milli());
    Bump(totals->mutable_service_income(), row.service_income().amount_minor());
    Bump(totals->mutable_subsidised_amount(), row.subsidised_amount().amount_minor());
    Bump(totals->mutable_in_kind_amount(), row.in_kind_amount().amount_minor());
    Bump(totals->mutable_internal_amount(), row.internal_amount().amount_minor());
    Bump(totals->mutable_compensation_amount(), row.compensation_amount().amount_minor());
    Bump(totals->mutable_corrections_amount(), row.corrections_amount().amount_minor());
    *out.add_rows() = std::move(row);
  }
  LS_ASSIGN_OR_RETURN(std::string next, KeepPage(page, out.mutable_rows()));
  if (!next.empty()) out.set_next_page_token(page_tokens_.Make(r, p, next));
  return out;
}

absl::StatusOr<v1::ListBalancesResponse> BillingManager::ListBalances(const Principal& p,
                                                                     const v1::ListBalancesRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "balances").status());
  // As GetAccountBalance: a member reads only its own organisation's accounts
  // (not a pool's, not the "-" parents); scope before validation (types.proto).
  if (!SeesAll(p) && r.parent() != ActorOrganization(p)) return OrgScope("balances");
  const bool all = r.parent() == "organizations/-" || r.parent() == "subsidyPools/-";
  if (!all && !IsOrganizationName(r.parent()) && !IsSubsidyPoolName(r.parent())) {
    return InvalidField("parent", "must be organizations/{organization}, subsidyPools/{subsidy_pool} or a '-' parent");
  }
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  // Checked here, not only per account read: a parent without accounts to
  // read answers it all the same.
  if (r.has_as_of_time() && FromProto(r.as_of_time()) > clock_->Now()) {
    return InvalidField("as_of_time", "must not be in the future");
  }
  if (!all) LS_RETURN_IF_ERROR(PartiesExist({r.parent()}));
  const std::string currency = r.currency_code().empty() ? kDefaultCurrency : r.currency_code();
  const std::string prefix = all ? r.parent().substr(0, r.parent().size() - 1) : r.parent() + "/";
  std::set<v1::AccountKind> kinds;
  for (int k : r.account_kinds()) kinds.insert(static_cast<v1::AccountKind>(k));
  LS_ASSIGN_OR_RETURN(auto fields, store_->HashAll(keys::Balances()));
  // The accounts of the parent, with their counterparties.
  std::set<std::pair<std::string, std::string>> accounts;
  for (const auto& [field, value] : fields) {
    std::vector<std::string> f = absl::StrSplit(field, '|');
    if (f.size() != 3 || f[2] != currency || !absl::StartsWith(f[0], prefix)) continue;
    auto ref = ParseAccountName(f[0]);
    if (!ref.ok() || (!kinds.empty() && !kinds.count(ref->kind))) continue;
    accounts.insert({f[0], r.group_by_counterparty() ? f[1] : ""});
  }
  // "Accounts exist implicitly": a named parent, one balance per account, has
  // every kind asked for (every kind of the parent when none is), at zero
  // when it never had an entry (left out by skip_empty below).
  if (!all && !r.group_by_counterparty()) {
    const bool pool = IsSubsidyPoolName(r.parent());
    for (int k = v1::AccountKind_MIN; k <= v1::AccountKind_MAX; ++k) {
      const auto kind = static_cast<v1::AccountKind>(k);
      if (!v1::AccountKind_IsValid(k) || !(pool ? IsPoolAccountKind(kind) : IsOrganizationAccountKind(kind))) continue;
      if (kinds.empty() || kinds.count(kind)) accounts.insert({AccountName(r.parent(), kind), ""});
    }
  }
  // Pages follow the last row's (account, counterparty), not an offset
  // into a list that may grow between calls; without as_of_time every page
  // is as of the first page's time, which the token carries:
  // "<unix nanos>|<account>|<counterparty>" (the time empty with
  // as_of_time, the request's).
  std::optional<absl::Time> through;
  std::pair<std::string, std::string> after;
  bool resume = false;
  if (!page.after.empty()) {
    const std::vector<std::string> t = absl::StrSplit(page.after, '|');
    int64_t nanos = 0;
    if (t.size() != 3 || (r.has_as_of_time() != t[0].empty()) || (!t[0].empty() && !absl::SimpleAtoi(t[0], &nanos))) {
      return InvalidField("page_token", "not a token from the previous page of this list; start again without page_token",
                          "INVALID_PAGE_TOKEN");
    }
    if (!r.has_as_of_time()) through = absl::FromUnixNanos(nanos);
    after = {t[1], t[2]};
    resume = true;
  } else if (!r.has_as_of_time()) {
    through = clock_->Now();
  }
  v1::ListBalancesResponse out;
  bool more = false;
  for (const auto& [account, counterparty] : accounts) {
    if (resume && std::make_pair(account, counterparty) <= after) continue;
    v1::GetAccountBalanceRequest get;
    get.set_name(account);
    get.set_counterparty(counterparty);
    get.set_currency_code(currency);
    if (r.has_as_of_time()) *get.mutable_as_of_time() = r.as_of_time();
    LS_ASSIGN_OR_RETURN(AccountRef ref, ParseAccountName(account));
    // Grouped, the row of counterparty "" is the entries naming none, not
    // the whole account (which would count every other row again).
    LS_ASSIGN_OR_RETURN(v1::AccountBalance b, ReadBalance(ref, get, r.group_by_counterparty(), through));
    if (r.skip_empty() && b.debit_total().amount_minor() == 0 && b.credit_total().amount_minor() == 0) continue;
    if (out.balances_size() == page.page_size) {
      more = true;
      break;
    }
    *out.add_balances() = std::move(b);
  }
  if (more) {
    const v1::AccountBalance& last = out.balances(out.balances_size() - 1);
    const std::string pinned = through ? absl::StrCat(absl::ToUnixNanos(*through)) : "";
    // A row's counterparty is "" unless grouped; the set's key is the row's.
    out.set_next_page_token(page_tokens_.Make(
        r, p, absl::StrCat(pinned, "|", last.account(), "|", r.group_by_counterparty() ? last.counterparty() : "")));
  }
  return out;
}

}  // namespace labshare::billing
