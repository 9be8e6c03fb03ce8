// The listings over billing's indexes, and the remaining single reads.
// Every list scans its index in order (create time, or series and number
// for invoices), filters in process and pages by the last index member.
#include <algorithm>
#include <initializer_list>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/numbers.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/billing/billing_common.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"

namespace labshare::billing {
namespace {

// A filter given by a member must name its own organisation; unset, it is
// narrowed to it (the returned value). A member whose token names no
// organisation is ORGANIZATION_SCOPE (OwnScope), never left unfiltered.
absl::StatusOr<std::string> Narrow(const Principal& p, const std::string& filter, absl::string_view what) {
  if (SeesAll(p)) return filter;
  LS_ASSIGN_OR_RETURN(std::string own, OwnScope(p, what));
  if (!filter.empty() && filter != own) return OrgScope(what);
  return own;
}

// A member's organisation filters: another organisation may be named only
// beside its own (what it pays to, or is paid by, that organisation).
absl::Status OthersBesideOwn(const Principal& p, std::initializer_list<const std::string*> filters,
                             absl::string_view what) {
  if (SeesAll(p)) return absl::OkStatus();
  const std::string own = ActorOrganization(p);
  bool other = false, mine = false;
  for (const std::string* f : filters) {
    other |= !f->empty() && *f != own;
    mine |= *f == own;
  }
  return other && !mine ? OrgScope(what) : absl::OkStatus();
}

std::string AfterBar(const std::string& m) { return m.substr(m.rfind('|') + 1); }

// A filter naming an organisation, empty or of the form
// "organizations/{organization}" (INVALID_FIELD otherwise).
absl::Status OrganizationFilter(const std::string& filter, absl::string_view field) {
  if (filter.empty() || IsOrganizationName(filter)) return absl::OkStatus();
  return InvalidField(std::string(field), "must be organizations/{organization}");
}

// A filter naming a resource of `collection`, empty or "{collection}/{id}".
absl::Status NameFilter(const std::string& filter, absl::string_view collection, absl::string_view field) {
  if (filter.empty() || IsResourceName(filter, collection)) return absl::OkStatus();
  return InvalidField(std::string(field), absl::StrCat("must be ", collection, "/{", field, "}"));
}

}  // namespace

absl::StatusOr<v1::ListInvoicesResponse> BillingManager::ListInvoices(const Principal& p,
                                                                     const v1::ListInvoicesRequest& r) {
  // Scope before validation (types.proto).
  LS_RETURN_IF_ERROR(OwnScope(p, "invoices").status());
  LS_RETURN_IF_ERROR(OthersBesideOwn(p, {&r.payer_organization(), &r.payee_organization()}, "invoices"));
  LS_RETURN_IF_ERROR(OrganizationFilter(r.payer_organization(), "payer_organization"));
  LS_RETURN_IF_ERROR(OrganizationFilter(r.payee_organization(), "payee_organization"));
  if (!r.period().empty()) LS_RETURN_IF_ERROR(ParsePeriod(r.period()).status());
  const std::string own = ActorOrganization(p);
  v1::ListInvoicesResponse resp;
  auto id = [](const std::string& m) {
    const std::vector<std::string> f = absl::StrSplit(m, '|');
    int64_t seq = 0;
    if (f.size() == 2) absl::SimpleAtoi(f[1], &seq);
    return absl::AsciiStrToLower(absl::StrFormat("%s-%06d", f[0], seq));
  };
  auto keep = [&](const v1::Invoice& inv) {
    if (!SeesAll(p) && inv.payer_organization() != own && !IsInvoicePayee(inv, own)) return false;
    if (!r.payer_organization().empty() && inv.payer_organization() != r.payer_organization()) return false;
    if (!r.payee_organization().empty() && !IsInvoicePayee(inv, r.payee_organization())) return false;
    if (!r.period().empty() && inv.period() != r.period()) return false;
    if (r.state() != 0 && inv.state() != r.state()) return false;
    if (!r.currency_code().empty() && inv.currency_code() != r.currency_code()) return false;
    return r.series().empty() || inv.series() == r.series();
  };
  LS_RETURN_IF_ERROR(
      (ScanIndex<v1::Invoice>(*store_, page_tokens_, p, "invoice", r, id, keep, resp.mutable_invoices(), &resp)));
  ComputedCache computed;  // the settlements each invoice may be in, read once per period
  for (auto& inv : *resp.mutable_invoices()) {
    LS_ASSIGN_OR_RETURN(std::string held, HeldBy(inv, &computed));
    inv.set_settlement(std::move(held));
  }
  return resp;
}

absl::StatusOr<v1::ListPostingsResponse> BillingManager::ListPostings(const Principal& p,
                                                                     const v1::ListPostingsRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string org, Narrow(p, r.organization(), "postings"));
  // The filters naming someone, scope first (types.proto). A member names
  // only its own accounts: another's, or a name of nobody, is
  // ORGANIZATION_SCOPE, checked before the form. Its subsidy_pool filter
  // names a pool; one naming another organisation instead is
  // ORGANIZATION_SCOPE too (a filter naming another organisation), never
  // an answer telling which of its postings touch that organisation.
  if (!SeesAll(p) && !r.account().empty() && !IsOwnAccountName(p, r.account())) return OrgScope("postings");
  if (!SeesAll(p) && absl::StartsWith(r.subsidy_pool(), "organizations/") && r.subsidy_pool() != org &&
      !absl::StartsWith(r.subsidy_pool(), org + "/")) {
    return OrgScope("postings");
  }
  // Then the forms, in the Errors list's order: an inverted interval, then
  // a malformed account (INVALID_FIELD, the contract's "account name
  // malformed", not INVALID_NAME).
  LS_RETURN_IF_ERROR(CheckIntervalFilter(r.has_interval(), r.interval()));
  if (!r.account().empty()) {
    auto account = ParseAccountName(r.account());
    if (!account.ok()) return InvalidField("account", std::string(account.status().message()));
  }
  LS_RETURN_IF_ERROR(OrganizationFilter(r.organization(), "organization"));
  // "Postings with an entry on an account of this pool": a filter naming no
  // pool matches none.
  const bool pool_named = IsSubsidyPoolName(r.subsidy_pool());
  v1::ListPostingsResponse resp;
  auto keep = [&](const v1::Posting& posting) {
    bool org_hit = org.empty(), pool_hit = r.subsidy_pool().empty(), account_hit = r.account().empty(),
         cp_hit = r.counterparty().empty(), cur_hit = r.currency_code().empty();
    for (const auto& e : posting.entries()) {
      const bool own_entry = absl::StartsWith(e.account(), org + "/");
      org_hit |= own_entry;
      pool_hit |= pool_named && absl::StartsWith(e.account(), r.subsidy_pool() + "/");
      account_hit |= e.account() == r.account();
      // On the entries the caller is shown: a member's own (below), never
      // another pair's netting of the same posting.
      cp_hit |= (SeesAll(p) || own_entry) && e.counterparty() == r.counterparty();
    }
    cur_hit |= posting.currency_code() == r.currency_code();
    if (!(org_hit && pool_hit && account_hit && cp_hit && cur_hit)) return false;
    if (r.kind() != 0 && posting.kind() != r.kind()) return false;
    if (!r.charge().empty() && posting.charge() != r.charge()) return false;
    if (!r.corrects().empty() && posting.corrects() != r.corrects()) return false;
    if (r.has_interval()) {
      const absl::Time t = FromProto(posting.create_time());
      if (t < FromProto(r.interval().start_time()) || t >= FromProto(r.interval().end_time())) return false;
    }
    return true;
  };
  LS_RETURN_IF_ERROR((ScanIndex<v1::Posting>(*store_, page_tokens_, p, "posting", r, AfterBar, keep,
                                             resp.mutable_postings(), &resp)));
  if (!SeesAll(p)) {  // a member sees only its own entries of each posting
    for (auto& posting : *resp.mutable_postings()) {
      v1::Posting mine = posting;
      mine.clear_entries();
      for (const auto& e : posting.entries()) {
        if (absl::StartsWith(e.account(), org + "/")) *mine.add_entries() = e;
      }
      posting = std::move(mine);
    }
  }
  return resp;
}

absl::StatusOr<v1::ListDepositsResponse> BillingManager::ListDeposits(const Principal& p,
                                                                     const v1::ListDepositsRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "deposits").status());
  const std::string own = ActorOrganization(p);
  if (!SeesAll(p)) {
    for (const std::string* f : {&r.owner_organization(), &r.lessee_organization()}) {
      if (!f->empty() && *f != own) return OrgScope("deposits");
    }
  }
  // Then the filters' forms (INVALID_FIELD), as ListCharges: a malformed
  // name would match nothing and answer an empty list as if there were none.
  LS_RETURN_IF_ERROR(OrganizationFilter(r.owner_organization(), "owner_organization"));
  LS_RETURN_IF_ERROR(OrganizationFilter(r.lessee_organization(), "lessee_organization"));
  LS_RETURN_IF_ERROR(NameFilter(r.instrument(), "instruments", "instrument"));
  LS_RETURN_IF_ERROR(NameFilter(r.lease(), "leases", "lease"));
  v1::ListDepositsResponse resp;
  auto keep = [&](const v1::Deposit& d) {
    if (!SeesAll(p) && !CheckScope("ListDeposits", p, DepositFacts(d)).ok()) return false;
    if (!r.owner_organization().empty() && d.owner_organization() != r.owner_organization()) return false;
    if (!r.lessee_organization().empty() && d.lessee_organization() != r.lessee_organization()) return false;
    if (!r.instrument().empty() && d.instrument() != r.instrument()) return false;
    if (!r.lease().empty() && d.lease() != r.lease()) return false;
    return r.state() == 0 || d.state() == r.state();
  };
  LS_RETURN_IF_ERROR((ScanIndex<v1::Deposit>(*store_, page_tokens_, p, "deposit", r, AfterBar, keep,
                                             resp.mutable_deposits(), &resp)));
  return resp;
}

absl::StatusOr<v1::Payment> BillingManager::GetPayment(const Principal& p, const v1::GetPaymentRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "payments").status());  // before the name: nothing to see
  LS_ASSIGN_OR_RETURN(std::string id, NameId(r.name(), "payments"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("payment", id)));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "PAYMENT_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::Payment pay, Parse<v1::Payment>(doc->data));
  const std::string own = ActorOrganization(p);
  if (!SeesAll(p) && pay.payer() != own && pay.payee() != own) return OrgScope("payments");
  return pay;
}

absl::StatusOr<v1::ListPaymentsResponse> BillingManager::ListPayments(const Principal& p,
                                                                     const v1::ListPaymentsRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string org, Narrow(p, r.organization(), "payments"));
  // Payer and payee: another organisation only beside the member's own (an
  // explicit organisation filter, necessarily its own, counts as beside it).
  LS_RETURN_IF_ERROR(OthersBesideOwn(p, {&r.payer(), &r.payee(), &r.organization()}, "payments"));
  // Then the filters' forms (INVALID_FIELD), as ListCharges. A payer is an
  // organisation or a pool paying granted subsidies.
  if (!r.payer().empty() && !IsOrganizationName(r.payer()) && !IsSubsidyPoolName(r.payer())) {
    return InvalidField("payer", "must be organizations/{organization} or subsidyPools/{subsidy_pool}");
  }
  LS_RETURN_IF_ERROR(OrganizationFilter(r.payee(), "payee"));
  LS_RETURN_IF_ERROR(OrganizationFilter(r.organization(), "organization"));
  LS_RETURN_IF_ERROR(NameFilter(r.invoice(), "invoices", "invoice"));
  LS_RETURN_IF_ERROR(NameFilter(r.settlement(), "settlements", "settlement"));
  LS_RETURN_IF_ERROR(CheckIntervalFilter(r.has_interval(), r.interval()));
  v1::ListPaymentsResponse resp;
  auto keep = [&](const v1::Payment& pay) {
    if (!org.empty() && pay.payer() != org && pay.payee() != org) return false;
    if (!r.payer().empty() && pay.payer() != r.payer()) return false;
    if (!r.payee().empty() && pay.payee() != r.payee()) return false;
    if (!r.invoice().empty() && pay.invoice() != r.invoice()) return false;
    if (!r.settlement().empty() && pay.settlement() != r.settlement()) return false;
    if (r.has_interval()) {
      const absl::Time t = FromProto(pay.create_time());
      if (t < FromProto(r.interval().start_time()) || t >= FromProto(r.interval().end_time())) return false;
    }
    return true;
  };
  LS_RETURN_IF_ERROR((ScanIndex<v1::Payment>(*store_, page_tokens_, p, "payment", r, AfterBar, keep,
                                             resp.mutable_payments(), &resp)));
  return resp;
}

absl::StatusOr<v1::ListSettlementsResponse> BillingManager::ListSettlements(const Principal& p,
                                                                           const v1::ListSettlementsRequest& r) {
  // Settlements with a position of `organization`; a member's narrowed to its own.
  LS_ASSIGN_OR_RETURN(std::string org, Narrow(p, r.organization(), "settlements"));
  LS_RETURN_IF_ERROR(OrganizationFilter(r.organization(), "organization"));
  if (!r.period().empty()) LS_RETURN_IF_ERROR(ParsePeriod(r.period()).status());
  v1::ListSettlementsResponse resp;
  auto keep = [&](const v1::Settlement& s) {
    if (!org.empty() && std::none_of(s.positions().begin(), s.positions().end(),
                                     [&](const v1::OrganizationPosition& x) { return x.organization() == org; })) {
      return false;
    }
    if (!r.period().empty() && s.period() != r.period()) return false;
    if (r.state() != 0 && s.state() != r.state()) return false;
    return r.currency_code().empty() || s.currency_code() == r.currency_code();
  };
  LS_RETURN_IF_ERROR((ScanIndex<v1::Settlement>(*store_, page_tokens_, p, "settlement", r, AfterBar, keep,
                                                resp.mutable_settlements(), &resp)));
  if (!SeesAll(p)) {  // reduced to what involves the caller's organisation
    for (auto& s : *resp.mutable_settlements()) {
      v1::GetSettlementRequest get;
      get.set_name(s.name());
      LS_ASSIGN_OR_RETURN(s, GetSettlement(p, get));
    }
  }
  return resp;
}

absl::StatusOr<v1::SubsidyAllowance> BillingManager::GetSubsidyAllowance(const Principal& p,
                                                                         const v1::GetSubsidyAllowanceRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "allowances").status());  // before the name: nothing to see
  // "subsidyPools/{pool}/allowances/{organization}"
  const std::vector<std::string> f = absl::StrSplit(r.name(), '/');
  if (f.size() != 4 || f[0] != "subsidyPools" || f[2] != "allowances") {
    return InvalidField("name", "must be subsidyPools/{subsidy_pool}/allowances/{organization}", "INVALID_NAME");
  }
  const std::string org = "organizations/" + f[3];
  if (!SeesAll(p) && ActorOrganization(p) != org) return OrgScope("allowances");
  v1::GetSubsidyPoolRequest get;
  get.set_name("subsidyPools/" + f[1]);
  LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, GetSubsidyPool(p, get));
  LS_ASSIGN_OR_RETURN(inv::Organization o, inventory_->GetOrganization(org));
  const absl::Time at = r.has_time() ? FromProto(r.time()) : clock_->Now();
  v1::SubsidyAllowance out;
  out.set_name(r.name());
  out.set_subsidy_pool(pool.name());
  out.set_organization(org);
  out.set_ineligible_reason(ProfileIneligibilityReason(pool, static_cast<v1::SizeClass>(o.size_class())));
  out.set_eligible(out.ineligible_reason().empty());
  int64_t used = 0;
  if (pool.has_cap_per_organization() && pool.cap_period_kind() != v1::PERIOD_KIND_UNSPECIFIED) {
    LS_ASSIGN_OR_RETURN(TimeRange cap, CapPeriodRange(pool.cap_period_kind(), at, zone_));
    *out.mutable_cap_period() = ToInterval(cap);
    *out.mutable_cap() = pool.cap_per_organization();
    LS_ASSIGN_OR_RETURN(auto legacy_kind, store_->Counters(keys::CapLegacyKinds(), {f[1]}));
    std::vector<std::string> fields = {CapField(org, cap.start, cap.end)};
    if (ReadsLegacyCap(legacy_kind[0], pool.cap_period_kind())) fields.push_back(LegacyCapField(org, cap.start));
    LS_ASSIGN_OR_RETURN(auto counters, store_->Counters(keys::Cap(f[1]), fields));
    for (int64_t c : counters) used += c;
  }
  *out.mutable_used() = MakeMoney(pool.currency_code(), used);
  *out.mutable_remaining() =
      MakeMoney(pool.currency_code(), out.eligible() ? AllowanceRemaining(pool, used, pool.balance().amount_minor()) : 0);
  return out;
}

}  // namespace labshare::billing
