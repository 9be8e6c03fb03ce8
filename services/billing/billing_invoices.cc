// Subsidy pools, invoices and settlement.
//
// Invoices are documents over the ledger: a payer's draft is every entry on
// its PAYABLE accounts posted before the period's end and not yet on an
// issued (not void) invoice, so activity that arrives after an invoice was
// issued lands on the next one, marked late (InvoiceLine.late: by the
// charge's service interval, since posting times are never back-dated). Issuing stores the invoice with
// the next number of its series in one step that also checks the series
// counter, so numbers have no gaps and two issues cannot take the same lines.
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "services/billing/billing_common.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/invoice_document.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::billing {
namespace {

constexpr char kInvoicedPostings[] = "{billing}:invoicedpost";

v1::InvoiceParty PartyOf(const inv::Organization& org) {
  v1::InvoiceParty party;
  party.set_organization(org.name());
  party.set_display_name(org.display_name());
  const auto& d = org.invoicing_details();
  party.set_taxpayer_id(d.taxpayer_id());
  party.set_registered_address(d.registered_address());
  party.set_phone(d.phone());
  party.set_bank_name(d.bank_name());
  party.set_bank_account(d.bank_account());
  party.set_legal_name(d.legal_name());
  return party;
}

// SubsidyPool.State, derived from validity, the clock and the balance:
// SCHEDULED before validity, ENDED after it, else ACTIVE with a positive
// balance and EXHAUSTED with none.
v1::SubsidyPool::State PoolState(const v1::SubsidyPool& pool, int64_t balance, absl::Time now) {
  const auto& v = pool.validity();
  if (v.has_start_time() && now < FromProto(v.start_time())) return v1::SubsidyPool::SCHEDULED;
  if (v.has_end_time() && now >= FromProto(v.end_time())) return v1::SubsidyPool::ENDED;
  return balance > 0 ? v1::SubsidyPool::ACTIVE : v1::SubsidyPool::EXHAUSTED;
}

// A pool's etag: its document version (updates, top-ups) plus the count of
// the other postings that changed its balance (subsidies, their reversals,
// adjustments; keys::PoolChanges). Both only grow, so every change of the
// pool gives a new etag.
std::string PoolEtag(int64_t version, int64_t changes) { return std::to_string(version + changes); }

// The read-time fields of a pool answer: balance, granted total (top-ups
// net of their corrections minus balance: subsidies net of reversals, since
// PostCorrection moves topped_up_total with every correction of a top-up),
// state and etag.
void DerivePool(v1::SubsidyPool& pool, int64_t balance, absl::Time now, const std::string& etag) {
  *pool.mutable_balance() = MakeMoney(pool.currency_code(), balance);
  *pool.mutable_granted_total() = MakeMoney(pool.currency_code(), pool.topped_up_total().amount_minor() - balance);
  pool.set_state(PoolState(pool, balance, now));
  pool.set_etag(etag);
}

}  // namespace

// ================================================================ pools

absl::StatusOr<int64_t> BillingManager::PoolBalance(const v1::SubsidyPool& pool) const {
  LS_ASSIGN_OR_RETURN(auto bal, store_->Counters(keys::Balances(), {PoolFundsField(pool)}));
  if (bal[0] > kMaxCounter || bal[0] < -kMaxCounter) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT",
                     pool.name() + "'s stored balance is out of range");
  }
  return -bal[0];  // POOL_FUNDS is credit-normal; the hash keeps debit minus credit
}

absl::StatusOr<int64_t> BillingManager::PoolChangeCount(const std::string& pool_id) const {
  LS_ASSIGN_OR_RETURN(auto changes, store_->Counters(keys::PoolChanges(), {pool_id}));
  return changes[0];
}

absl::StatusOr<v1::SubsidyPool> BillingManager::CreateSubsidyPool(const Principal& p,
                                                                   const v1::CreateSubsidyPoolRequest& r) {
  if (!r.subsidy_pool_id().empty() && !labshare::inventory::ValidId(r.subsidy_pool_id())) {
    return InvalidField("subsidy_pool_id", "must match [a-z0-9][a-z0-9-]{0,62}, or be empty for a generated id");
  }
  // Optional: generated when empty (a retry with the request_id gets the
  // first answer, whatever id this attempt draws).
  const std::string pool_id =
      r.subsidy_pool_id().empty() ? labshare::inventory::NewId("pool") : r.subsidy_pool_id();
  v1::SubsidyPool pool = r.subsidy_pool();
  pool.set_name("subsidyPools/" + pool_id);
  // A new pool's currency is one of ISO 4217's list ("RMB" is not), checked
  // before the cap; the shape alone is checked on update, where the
  // currency never changes.
  LS_RETURN_IF_ERROR(ValidateSubsidyPool(pool, PoolCurrencyCheck::kIso4217));
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("CreateSubsidyPool", r.request_id());
  const std::string fingerprint = RequestFingerprint("CreateSubsidyPool", r, ActorName(p));
  // A retry of a created pool gets the first answer before inventory is
  // asked (the same during an inventory outage).
  {
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::SubsidyPool>(*seen);
  }
  if (!pool.funder_organization().empty()) {
    LS_RETURN_IF_ERROR(inventory_->GetOrganization(pool.funder_organization()).status());
  }
  const absl::Time now = clock_->Now();
  *pool.mutable_topped_up_total() = MakeMoney(pool.currency_code(), 0);
  DerivePool(pool, 0, now, PoolEtag(1, 0));
  *pool.mutable_create_time() = ToProto(now);
  *pool.mutable_update_time() = ToProto(now);
  LedgerStep step;
  step.idempotency_key = idem;
  step.fingerprint = fingerprint;
  step.response = SerializeDeterministic(pool);
  const std::string key = keys::Doc("pool", pool_id);
  step.version_checks.push_back({key, 0});
  step.puts.push_back({key, pool.SerializeAsString(), 1});
  step.index_adds.push_back({keys::Index("pool"), absl::StrFormat("%010d|%s", pool.priority(), pool_id)});
  step.incrs.push_back({keys::PoolGeneration(), "g", 1});  // charge steps priced before are stale
  v1::BillingEvent e = NewEvent(p, now, r.request_id());
  *e.mutable_subsidy_pool_changed()->mutable_subsidy_pool() = pool;
  e.mutable_subsidy_pool_changed()->set_kind(v1::SubsidyPoolChanged::CREATED);
  step.events.push_back(e.SerializeAsString());
  LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
  LS_ASSIGN_OR_RETURN(auto answer, Answer(result, pool));
  if (answer) return *std::move(answer);
  return MakeError(absl::StatusCode::kAlreadyExists, "SUBSIDY_POOL_EXISTS", pool.name() + " already exists");
}

absl::StatusOr<v1::SubsidyPool> BillingManager::GetSubsidyPool(const Principal&, const v1::GetSubsidyPoolRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string id, NameId(r.name(), "subsidyPools"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("pool", id)));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(doc->data));
  // The etag is read before the balance: never newer than what it shows.
  LS_ASSIGN_OR_RETURN(int64_t changes, PoolChangeCount(id));
  LS_ASSIGN_OR_RETURN(int64_t balance, PoolBalance(pool));
  DerivePool(pool, balance, clock_->Now(), PoolEtag(doc->version, changes));
  return pool;
}

absl::StatusOr<v1::ListSubsidyPoolsResponse> BillingManager::ListSubsidyPools(const Principal& p,
                                                                              const v1::ListSubsidyPoolsRequest& r) {
  // The filters' forms first (INVALID_FIELD), as ListCharges: a malformed
  // value would match nothing and answer an empty list as if there were none.
  if (!r.funder_organization().empty() && !IsOrganizationName(r.funder_organization())) {
    return InvalidField("funder_organization", "must be organizations/{organization}");
  }
  LS_RETURN_IF_ERROR(CheckRequestCurrency(r.currency_code()));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  // Pages follow the last pool's (priority, name), "<priority>|<name>", not
  // an offset into a list that may change between calls.
  std::optional<std::pair<int64_t, std::string>> after;
  if (!page.after.empty()) {
    const std::vector<std::string> t = absl::StrSplit(page.after, absl::MaxSplits('|', 1));
    int64_t priority = 0;
    if (t.size() != 2 || !absl::SimpleAtoi(t[0], &priority) || t[1].empty()) {
      return InvalidField("page_token", "not a token from the previous page of this list; start again without page_token",
                          "INVALID_PAGE_TOKEN");
    }
    after = std::make_pair(priority, t[1]);
  }
  LS_ASSIGN_OR_RETURN(auto pools, LoadPools());
  v1::ListSubsidyPoolsResponse out;
  for (const auto& pool : pools) {
    if (after && std::make_pair(static_cast<int64_t>(pool.priority()), pool.name()) <= *after) continue;
    if (!r.funder_organization().empty() && pool.funder_organization() != r.funder_organization()) continue;
    if (!r.currency_code().empty() && pool.currency_code() != r.currency_code()) continue;
    v1::GetSubsidyPoolRequest get;
    get.set_name(pool.name());
    LS_ASSIGN_OR_RETURN(v1::SubsidyPool full, GetSubsidyPool(p, get));
    if (r.state() != 0 && full.state() != r.state()) continue;
    *out.add_subsidy_pools() = std::move(full);
  }
  // "Ordered by priority then name", numerically: the index orders its
  // members as text, which puts priority -1 before -5.
  std::stable_sort(out.mutable_subsidy_pools()->begin(), out.mutable_subsidy_pools()->end(),
                   [](const v1::SubsidyPool& a, const v1::SubsidyPool& b) {
                     if (a.priority() != b.priority()) return a.priority() < b.priority();
                     return a.name() < b.name();
                   });
  if (out.subsidy_pools_size() > page.page_size) {
    out.mutable_subsidy_pools()->DeleteSubrange(page.page_size, out.subsidy_pools_size() - page.page_size);
    const v1::SubsidyPool& last = out.subsidy_pools(page.page_size - 1);
    out.set_next_page_token(page_tokens_.Make(r, p, absl::StrCat(last.priority(), "|", last.name())));
  }
  return out;
}

absl::StatusOr<v1::SubsidyPool> BillingManager::TopUpSubsidyPool(const Principal& p,
                                                                  const v1::TopUpSubsidyPoolRequest& r) {
  LS_RETURN_IF_ERROR(NameField(r.name(), "subsidyPools", "name"));
  // Not positive: INVALID_FIELD, as the contract lists it.
  if (r.amount().amount_minor() <= 0) return InvalidField("amount.amount_minor", "must be positive");
  LS_RETURN_IF_ERROR(ValidateAmount(r.amount(), "amount", true));
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("TopUpSubsidyPool", r.request_id());
  const std::string fingerprint = RequestFingerprint("TopUpSubsidyPool", r, ActorName(p));
  for (int attempt = 0; attempt < 5; ++attempt) {
    // A retry of a call that succeeded gets its first answer, whatever has
    // moved since (its own top-up moved the etag).
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::SubsidyPool>(*seen);
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("pool", IdOf(r.name()))));
    if (!doc) return MakeError(absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND", r.name() + " does not exist");
    LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(doc->data));
    if (r.amount().currency_code() != pool.currency_code()) {
      return InvalidField("amount.currency_code", "must be the pool's currency " + pool.currency_code(),
                          "CURRENCY_MISMATCH");
    }
    // The contract's order: INVALID_ARGUMENT (the total beyond 10^15, read
    // with the pool), FAILED_PRECONDITION (POOL_ENDED), then ABORTED
    // (ETAG_MISMATCH). Range-checked before anything is built: the totals
    // stay within the maximum amount (and so within the ledger step's exact
    // range).
    if (pool.topped_up_total().amount_minor() < 0 ||
        r.amount().amount_minor() > kMaxAmountMinor - pool.topped_up_total().amount_minor()) {
      return InvalidField("amount.amount_minor",
                          absl::StrCat("a pool's top-ups total at most 10^15 (", kMaxAmountMinor,
                                       ") minor units, the largest amount of money; ", r.name(), " has ",
                                       pool.topped_up_total().amount_minor(), ", so at most ",
                                       std::max<int64_t>(0, kMaxAmountMinor - pool.topped_up_total().amount_minor()),
                                       " more can be added"));
    }
    const absl::Time now = StampNow();
    if (pool.has_validity() && pool.validity().has_end_time() && now >= FromProto(pool.validity().end_time())) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "POOL_ENDED", r.name() + " has ended");
    }
    LS_ASSIGN_OR_RETURN(int64_t changes, PoolChangeCount(IdOf(r.name())));
    if (!r.etag().empty() && r.etag() != PoolEtag(doc->version, changes)) {
      return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", r.name() + " changed; read it again");
    }
    pool.mutable_topped_up_total()->set_amount_minor(pool.topped_up_total().amount_minor() + r.amount().amount_minor());
    *pool.mutable_update_time() = ToProto(now);
    v1::Posting posting;
    posting.set_name(absl::StrCat("postings/t", absl::StrFormat("%016x", Fnv(r.name() + "|" + std::to_string(doc->version)))));
    posting.set_kind(v1::POOL_TOP_UP);
    posting.set_currency_code(pool.currency_code());
    posting.set_description("top-up of " + pool.name());
    posting.set_subsidy_pool(pool.name());
    posting.set_reason(r.external_reference());
    posting.set_actor(ActorName(p));
    *posting.mutable_create_time() = ToProto(now);
    LS_ASSIGN_OR_RETURN(auto entries, PoolTopUpEntries(pool.name(), r.amount()));
    for (auto& e : entries) *posting.add_entries() = std::move(e);
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    const std::string key = keys::Doc("pool", IdOf(r.name()));
    step.version_checks.push_back({key, doc->version});
    // The etag matched: no subsidy may change the pool before this step.
    if (!r.etag().empty()) step.field_checks.push_back({keys::PoolChanges(), IdOf(r.name()), std::to_string(changes)});
    step.puts.push_back({key, pool.SerializeAsString(), doc->version + 1});
    AddPosting(step, posting, now);
    LS_ASSIGN_OR_RETURN(int64_t balance, PoolBalance(pool));
    v1::SubsidyPool answer = pool;
    DerivePool(answer, balance + r.amount().amount_minor(), now, PoolEtag(doc->version + 1, changes));
    step.response = SerializeDeterministic(answer);
    v1::BillingEvent e = NewEvent(p, now, r.request_id());
    *e.mutable_subsidy_pool_changed()->mutable_subsidy_pool() = answer;
    e.mutable_subsidy_pool_changed()->set_kind(v1::SubsidyPoolChanged::TOPPED_UP);
    *e.mutable_subsidy_pool_changed()->mutable_top_up_amount() = r.amount();
    *e.mutable_subsidy_pool_changed()->mutable_posting() = posting;
    step.events.push_back(e.SerializeAsString());
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    LS_ASSIGN_OR_RETURN(auto done, Answer(result, std::move(answer)));
    if (done) return *std::move(done);  // else the state moved: look again
  }
  return Conflict();
}

namespace {

// The fields of `in` named by `mask` (UpdateSubsidyPool's paths) set on `pool`.
void ApplyPoolMask(const google::protobuf::FieldMask& mask, const v1::SubsidyPool& in, v1::SubsidyPool& pool) {
  for (const auto& path : mask.paths()) {
    if (path == "display_name") pool.set_display_name(in.display_name());
    if (path == "description") pool.set_description(in.description());
    if (path == "funder_display_name") pool.set_funder_display_name(in.funder_display_name());
    if (path == "percentage_bps") pool.set_percentage_bps(in.percentage_bps());
    if (path == "eligibility") *pool.mutable_eligibility() = in.eligibility();
    if (path == "cap_per_organization") {
      if (in.has_cap_per_organization()) {
        *pool.mutable_cap_per_organization() = in.cap_per_organization();
      } else {
        pool.clear_cap_per_organization();
      }
    }
    if (path == "cap_period_kind") pool.set_cap_period_kind(in.cap_period_kind());
    if (path == "validity") *pool.mutable_validity() = in.validity();
    if (path == "priority") pool.set_priority(in.priority());
  }
}

}  // namespace

absl::StatusOr<v1::SubsidyPool> BillingManager::UpdateSubsidyPool(const Principal& p,
                                                                   const v1::UpdateSubsidyPoolRequest& r) {
  static const std::set<std::string> kPaths = {"display_name", "description", "funder_display_name",
                                               "percentage_bps", "eligibility", "cap_per_organization",
                                               "cap_period_kind", "validity", "priority"};
  if (r.update_mask().paths().empty()) {
    return InvalidField("update_mask", "name the fields to change", "INVALID_UPDATE_MASK");
  }
  for (const auto& path : r.update_mask().paths()) {
    if (!kPaths.count(path)) {
      return InvalidField("update_mask", "cannot change \"" + path + "\"; balance changes only through top-ups",
                          "INVALID_UPDATE_MASK");
    }
  }
  LS_RETURN_IF_ERROR(NameField(r.subsidy_pool().name(), "subsidyPools", "subsidy_pool.name"));
  // The values given, each on its own, before anything is read
  // (INVALID_FIELD before NOT_FOUND and ETAG_MISMATCH): the masked fields
  // on a valid probe pool, whose other fields stand in for the stored ones
  // (the pool's currency for the cap's, a cap period kind for a cap).
  // What depends on the stored pool (a cap in another currency than the
  // pool's, a cap left without a cap period kind) is checked on the merged
  // pool below, still before ETAG_MISMATCH.
  {
    const v1::SubsidyPool& in = r.subsidy_pool();
    v1::SubsidyPool probe;
    probe.set_display_name("probe");
    probe.set_percentage_bps(1);
    probe.set_currency_code(in.has_cap_per_organization() && IsIso4217Code(in.cap_per_organization().currency_code())
                                ? in.cap_per_organization().currency_code()
                                : kDefaultCurrency);
    probe.set_cap_period_kind(v1::MONTHLY);
    ApplyPoolMask(r.update_mask(), in, probe);
    if (probe.cap_period_kind() == v1::PERIOD_KIND_UNSPECIFIED && !probe.has_cap_per_organization()) {
      probe.set_cap_period_kind(v1::MONTHLY);  // the stored cap, if any, decides below
    }
    LS_RETURN_IF_ERROR(ValidateSubsidyPool(probe));
  }
  const std::string id = IdOf(r.subsidy_pool().name());
  const std::string key = keys::Doc("pool", id);
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("UpdateSubsidyPool", r.request_id());
  const std::string fingerprint = RequestFingerprint("UpdateSubsidyPool", r, ActorName(p));
  for (int attempt = 0; attempt < 5; ++attempt) {
    // The replay first: a retry of a call that succeeded gets its answer.
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::SubsidyPool>(*seen);
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(key));
    if (!doc) {
      return MakeError(absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND", r.subsidy_pool().name() + " does not exist");
    }
    LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(doc->data));
    // The new terms on the stored pool (INVALID_FIELD) before the etag.
    const v1::SubsidyPool stored = pool;
    ApplyPoolMask(r.update_mask(), r.subsidy_pool(), pool);
    LS_RETURN_IF_ERROR(ValidateSubsidyPool(pool, PoolCurrencyCheck::kShapeOnly));
    LS_ASSIGN_OR_RETURN(int64_t changes, PoolChangeCount(id));
    if (!r.subsidy_pool().etag().empty() && r.subsidy_pool().etag() != PoolEtag(doc->version, changes)) {
      return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", pool.name() + " changed; read it again");
    }
    // The pool before, as GetSubsidyPool showed it just before this update
    // (SubsidyPoolChanged.previous): its read-time fields derived from the
    // balance and change count read now, not the ones stored at creation.
    const absl::Time now = clock_->Now();
    LS_ASSIGN_OR_RETURN(int64_t balance, PoolBalance(stored));
    v1::SubsidyPool previous = stored;
    DerivePool(previous, balance, now, PoolEtag(doc->version, changes));
    *pool.mutable_update_time() = ToProto(now);
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    step.version_checks.push_back({key, doc->version});
    if (!r.subsidy_pool().etag().empty()) step.field_checks.push_back({keys::PoolChanges(), id, std::to_string(changes)});
    step.puts.push_back({key, pool.SerializeAsString(), doc->version + 1});
    step.incrs.push_back({keys::PoolGeneration(), "g", 1});  // charge steps priced before are stale
    // A new cap period kind counts its usage afresh (CapField names the
    // period by both ends); usage of the old field form stays the kind's the
    // pool had before its first change of kind (ReadsLegacyCap).
    if (pool.cap_period_kind() != stored.cap_period_kind() &&
        stored.cap_period_kind() != v1::PERIOD_KIND_UNSPECIFIED) {
      LS_ASSIGN_OR_RETURN(auto legacy_kind, store_->Counters(keys::CapLegacyKinds(), {id}));
      if (legacy_kind[0] == 0) {
        step.hash_sets.push_back({keys::CapLegacyKinds(), id, std::to_string(stored.cap_period_kind())});
      }
    }
    if (pool.priority() != previous.priority()) {
      step.index_removes.push_back({keys::Index("pool"), absl::StrFormat("%010d|%s", previous.priority(), id)});
      step.index_adds.push_back({keys::Index("pool"), absl::StrFormat("%010d|%s", pool.priority(), id)});
    }
    v1::SubsidyPool answer = pool;
    DerivePool(answer, balance, now, PoolEtag(doc->version + 1, changes));
    step.response = SerializeDeterministic(answer);
    v1::BillingEvent e = NewEvent(p, now, r.request_id());
    auto* changed = e.mutable_subsidy_pool_changed();
    changed->set_kind(v1::SubsidyPoolChanged::UPDATED);
    *changed->mutable_subsidy_pool() = answer;
    *changed->mutable_previous() = previous;
    *changed->mutable_update_mask() = r.update_mask();
    step.events.push_back(e.SerializeAsString());
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    LS_ASSIGN_OR_RETURN(auto done, Answer(result, std::move(answer)));
    if (done) return *std::move(done);  // else the state moved: look again
  }
  return Conflict();
}

// ================================================================ invoices

absl::StatusOr<v1::Invoice> BillingManager::Draft(const std::string& payer, const std::string& period,
                                                  const std::string& currency) {
  LS_ASSIGN_OR_RETURN(TimeRange range, PeriodRange(period, zone_));
  // Candidate lines, per posting: the payer's PAYABLE entries (what it owes
  // or is owed) and, as memo lines, the credits to its DEPOSIT_LODGED from a
  // deposit kept for damage (nothing more is owed, but the invoice says why
  // the deposit did not come back).
  struct Line {
    std::string posting, counterparty;
    int64_t owed = 0;  // credit minus debit
    int64_t ms = 0;
    bool memo = false;
  };
  std::vector<Line> lines;
  auto collect = [&](v1::AccountKind kind, bool memo) -> absl::Status {
    LS_ASSIGN_OR_RETURN(auto raw, store_->List(keys::Account(AccountName(payer, kind))));
    for (const auto& s : raw) {
      std::vector<std::string> f = absl::StrSplit(s, '|');
      Line l;
      int64_t signed_amount = 0;
      if (f.size() != 5 || !absl::SimpleAtoi(f[0], &l.ms) || !absl::SimpleAtoi(f[4], &signed_amount)) continue;
      if (l.ms >= Ms(range.end) || f[3] != currency) continue;
      if (memo && signed_amount >= 0) continue;  // holds debit DEPOSIT_LODGED; kept or released parts credit it
      l.posting = f[1];
      l.counterparty = f[2];
      l.owed = -signed_amount;
      l.memo = memo;
      lines.push_back(l);
    }
    return absl::OkStatus();
  };
  LS_RETURN_IF_ERROR(collect(v1::PAYABLE, false));
  LS_RETURN_IF_ERROR(collect(v1::DEPOSIT_LODGED, true));
  std::vector<std::string> fields;
  for (const auto& l : lines) fields.push_back(l.posting + "|" + payer);
  std::vector<std::string> taken(fields.size());
  if (!fields.empty()) {
    std::vector<std::string> cmd = {"HMGET", kInvoicedPostings};
    cmd.insert(cmd.end(), fields.begin(), fields.end());
    LS_ASSIGN_OR_RETURN(RedisValue v, store_->pool()->Command(cmd));
    for (size_t i = 0; i < taken.size() && i < v.elements.size(); ++i) {
      if (!v.elements[i].is_nil()) taken[i] = v.elements[i].str;
    }
  }
  v1::Invoice inv;
  inv.set_state(v1::Invoice::DRAFT);
  inv.set_payer_organization(payer);
  inv.set_period(period);
  *inv.mutable_period_interval() = ToInterval(range);
  inv.set_currency_code(currency);
  std::vector<v1::InvoiceLine> out;
  // SUBSIDY lines name their funder as the pool states it now (kept on the
  // issued invoice); read once per pool.
  std::map<std::string, std::string> funders;
  auto funder = [&](const std::string& pool_name) -> absl::StatusOr<std::string> {
    if (auto it = funders.find(pool_name); it != funders.end()) return it->second;
    std::string name;
    LS_ASSIGN_OR_RETURN(auto pdoc, store_->docs().Get(keys::Doc("pool", IdOf(pool_name))));
    if (pdoc) {
      LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(pdoc->data));
      name = pool.funder_display_name().empty() ? pool.display_name() : pool.funder_display_name();
    }
    funders.emplace(pool_name, name);
    return name;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!taken[i].empty()) continue;  // on an issued invoice already
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("posting", lines[i].posting)));
    if (!doc) continue;
    LS_ASSIGN_OR_RETURN(v1::Posting posting, Parse<v1::Posting>(doc->data));
    if (posting.kind() == v1::PAYMENT || posting.kind() == v1::SETTLEMENT_NETTING) continue;
    if (lines[i].memo != (posting.kind() == v1::DEPOSIT_APPLICATION)) continue;
    v1::InvoiceLine line;
    line.set_posting(posting.name());
    line.set_description(posting.description());
    line.set_payee_organization(lines[i].counterparty);
    line.set_charge(posting.charge());
    line.set_deposit(posting.deposit());
    line.set_late(lines[i].ms < Ms(range.start));
    *line.mutable_amount() = MakeMoney(currency, lines[i].owed);
    switch (posting.kind()) {
      case v1::SUBSIDY:
        line.set_kind(v1::InvoiceLine::SUBSIDY);
        line.set_subsidy_pool(posting.subsidy_pool());
        if (!posting.subsidy_pool().empty()) {
          LS_ASSIGN_OR_RETURN(std::string name, funder(posting.subsidy_pool()));
          line.set_funder_display_name(name);
        }
        break;
      case v1::DEPOSIT_RELEASE:
        line.set_kind(v1::InvoiceLine::DEPOSIT_RELEASE);
        break;
      case v1::DEPOSIT_APPLICATION:
        // Information only: the amount kept, owed to nobody any more. The
        // payee is the owner that kept it (the deposit-held account's owner).
        line.set_kind(v1::InvoiceLine::DEPOSIT_APPLIED);
        *line.mutable_memo_amount() = line.amount();
        *line.mutable_amount() = MakeMoney(currency, 0);
        for (const auto& e : posting.entries()) {
          const size_t at = e.account().find("/accounts/");
          if (at != std::string::npos && e.account().substr(at) == "/accounts/deposit-held") {
            line.set_payee_organization(e.account().substr(0, at));
          }
        }
        break;
      case v1::CORRECTION:
        line.set_kind(v1::InvoiceLine::ADJUSTMENT);
        line.set_corrects(posting.corrects());
        break;
      default:
        line.set_kind(v1::InvoiceLine::CHARGE);
        break;
    }
    if (!posting.charge().empty()) {
      LS_ASSIGN_OR_RETURN(auto cdoc, store_->docs().Get(keys::Doc("charge", IdOf(posting.charge()))));
      if (cdoc) {
        LS_ASSIGN_OR_RETURN(v1::Charge c, Parse<v1::Charge>(cdoc->data));
        line.set_instrument(c.instrument());
        line.set_mode(c.mode());
        line.set_fee_kind(c.fee_kind());
        // Deposit and damage charges have no service interval: their lines
        // have none either (and sort after the lines that have one).
        if (c.has_service_interval()) *line.mutable_service_interval() = c.service_interval();
        // InvoiceLine.late: a charge's activity is of an earlier period when
        // its service interval ended by this period's start, however late
        // the charge was posted (posting time is never back-dated: January's
        // session billed on 3 February after January's invoice was issued
        // lands here). Its subsidy lines go with it; corrections count in
        // the period of their posting.
        if ((posting.kind() == v1::CHARGE || posting.kind() == v1::SUBSIDY) && c.service_interval().has_end_time() &&
            FromProto(c.service_interval().end_time()) <= range.start) {
          line.set_late(true);
        }
        line.set_quantity_milli(c.quantity_milli());
        line.set_unit(c.rate().unit());
        *line.mutable_unit_price() = c.rate().unit_price();
        if (line.description().empty()) line.set_description(c.description());
        for (const auto& sp : c.splits()) {
          if (sp.organization() == payer) line.set_share_bps(sp.share_bps());
        }
        // Prices are tax-inclusive: the line says how much of its amount is
        // tax at its rate-card line's rate (billing.proto "Tax").
        if (c.rate().has_tax_rate_bps() && line.kind() != v1::InvoiceLine::DEPOSIT_APPLIED) {
          line.set_tax_rate_bps(c.rate().tax_rate_bps());
          LS_ASSIGN_OR_RETURN(int64_t tax, TaxContained(line.amount().amount_minor(), c.rate().tax_rate_bps()));
          *line.mutable_tax_amount() = MakeMoney(currency, tax);
        }
      }
    }
    out.push_back(std::move(line));
  }
  // Issued documents are reproducible: the lines do not follow the order in
  // which events happened to be consumed but the service interval, then the
  // charge (lines without an interval last), then what the line is.
  std::sort(out.begin(), out.end(), [](const v1::InvoiceLine& a, const v1::InvoiceLine& b) {
    auto key = [](const v1::InvoiceLine& l) {
      const auto& i = l.service_interval();
      return std::make_tuple(!l.has_service_interval(), i.start_time().seconds(), i.start_time().nanos(),
                             i.end_time().seconds(), i.end_time().nanos(), l.charge(), static_cast<int>(l.kind()),
                             l.subsidy_pool(), l.deposit(), l.posting(), l.payee_organization(),
                             l.amount().amount_minor(), l.late());
    };
    return key(a) < key(b);
  });
  std::map<std::string, int64_t> by_payee;
  int64_t charges = 0, subsidies = 0, releases = 0, adjustments = 0, tax = 0;
  for (auto& line : out) {
    const int64_t amount = line.amount().amount_minor();
    tax += line.tax_amount().amount_minor();
    switch (line.kind()) {
      case v1::InvoiceLine::SUBSIDY: subsidies += amount; break;
      case v1::InvoiceLine::DEPOSIT_RELEASE: releases += amount; break;
      case v1::InvoiceLine::ADJUSTMENT: adjustments += amount; break;
      case v1::InvoiceLine::DEPOSIT_APPLIED: break;  // memo: amount zero
      default: charges += amount; break;
    }
    if (line.kind() != v1::InvoiceLine::DEPOSIT_APPLIED) by_payee[line.payee_organization()] += amount;
    line.set_line_number(inv.lines_size() + 1);
    *inv.add_lines() = std::move(line);
  }
  *inv.mutable_charges_total() = MakeMoney(currency, charges);
  *inv.mutable_subsidy_total() = MakeMoney(currency, subsidies);
  *inv.mutable_deposit_release_total() = MakeMoney(currency, releases);
  *inv.mutable_adjustments_total() = MakeMoney(currency, adjustments);
  *inv.mutable_tax_total() = MakeMoney(currency, tax);
  const int64_t due = charges + subsidies + releases + adjustments;
  *inv.mutable_amount_due() = MakeMoney(currency, due);
  *inv.mutable_amount_paid() = MakeMoney(currency, 0);
  *inv.mutable_amount_outstanding() = MakeMoney(currency, due);
  for (const auto& [payee, amount] : by_payee) {
    auto* pb = inv.add_payees();
    pb->set_organization(payee);
    *pb->mutable_amount_due() = MakeMoney(currency, amount);
    *pb->mutable_amount_paid() = MakeMoney(currency, 0);
    *pb->mutable_amount_outstanding() = MakeMoney(currency, amount);
  }
  inv.set_etag(absl::StrFormat("%016x", Fnv(SerializeDeterministic(inv))));
  return inv;
}


absl::StatusOr<v1::Invoice> BillingManager::PreviewInvoice(const Principal& p, const v1::PreviewInvoiceRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "invoices").status());
  // The scope before the name's form (types.proto: authorization before
  // validation): a malformed name is never the caller's own organisation.
  if (!SeesAll(p) && !r.payer_organization().empty() && r.payer_organization() != ActorOrganization(p)) {
    return OrgScope("invoices");
  }
  if (!IsOrganizationName(r.payer_organization())) {
    return InvalidField("payer_organization", "must be organizations/{organization}");
  }
  LS_RETURN_IF_ERROR(ParsePeriod(r.period()).status());
  LS_RETURN_IF_ERROR(CheckRequestCurrency(r.currency_code()));
  LS_RETURN_IF_ERROR(PartiesExist({r.payer_organization()}));  // ORGANIZATION_NOT_FOUND
  return Draft(r.payer_organization(), r.period(), r.currency_code().empty() ? kDefaultCurrency : r.currency_code());
}

absl::StatusOr<v1::Invoice> BillingManager::IssueInvoice(const Principal& p, const v1::IssueInvoiceRequest& r) {
  if (!IsOrganizationName(r.payer_organization())) {
    return InvalidField("payer_organization", "must be organizations/{organization}");
  }
  LS_RETURN_IF_ERROR(ParsePeriod(r.period()).status());
  LS_RETURN_IF_ERROR(CheckRequestCurrency(r.currency_code()));
  const std::string currency = r.currency_code().empty() ? kDefaultCurrency : r.currency_code();
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("IssueInvoice", r.request_id());
  const std::string fingerprint = RequestFingerprint("IssueInvoice", r, ActorName(p));
  LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
  if (seen) return Parse<v1::Invoice>(*seen);
  const absl::Time now = clock_->Now();
  LS_ASSIGN_OR_RETURN(bool ended, PeriodEnded(r.period(), now, zone_));
  if (!ended) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "PERIOD_NOT_ENDED",
                     r.period() + " has not ended; PreviewInvoice shows the draft so far");
  }
  LS_ASSIGN_OR_RETURN(inv::Organization payer_org, inventory_->GetOrganization(r.payer_organization()));
  const std::string slot = absl::StrCat(r.payer_organization(), "|", r.period(), "|", currency);
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(RedisValue issued, store_->pool()->Command({"HGET", keys::Invoiced(), slot}));
    if (!issued.is_nil() && !issued.str.empty()) {
      return MakeError(absl::StatusCode::kAlreadyExists, "INVOICE_ALREADY_ISSUED",
                       "invoices/" + issued.str + " is already issued for " + slot);
    }
    // The voided invoice this one re-issues, if any: both links are written
    // in the same step that issues it.
    LS_ASSIGN_OR_RETURN(RedisValue voided_id, store_->pool()->Command({"HGET", keys::Voided(), slot}));
    std::optional<StoredDoc> voided_doc;
    v1::Invoice voided;
    if (!voided_id.is_nil() && !voided_id.str.empty()) {
      LS_ASSIGN_OR_RETURN(voided_doc, store_->docs().Get(keys::Doc("invoice", voided_id.str)));
      if (voided_doc) {
        LS_ASSIGN_OR_RETURN(voided, Parse<v1::Invoice>(voided_doc->data));
        if (voided.state() != v1::Invoice::VOID || !voided.replaced_by().empty()) voided_doc.reset();
      }
    }
    LS_ASSIGN_OR_RETURN(v1::Invoice inv, Draft(r.payer_organization(), r.period(), currency));
    if (!r.expected_etag().empty() && r.expected_etag() != inv.etag()) {
      return MakeError(absl::StatusCode::kAborted, "INVOICE_CHANGED", "the draft changed since; preview again");
    }
    if (inv.lines().empty()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOTHING_TO_INVOICE",
                       r.payer_organization() + " has nothing to invoice up to the end of " + r.period());
    }
    // The document's parties as inventory has them now: copied, so that
    // later edits of an organisation never change an issued document.
    *inv.mutable_payer_party() = PartyOf(payer_org);
    std::vector<std::string> parties;
    for (const auto& pb : inv.payees()) parties.push_back(pb.organization());
    std::set<std::string> memo;  // payees of memo lines only (a deposit kept)
    for (const auto& line : inv.lines()) {
      if (std::find(parties.begin(), parties.end(), line.payee_organization()) == parties.end()) {
        memo.insert(line.payee_organization());
      }
    }
    parties.insert(parties.end(), memo.begin(), memo.end());
    for (const auto& org : parties) {
      LS_ASSIGN_OR_RETURN(inv::Organization payee, inventory_->GetOrganization(org));
      *inv.add_payee_parties() = PartyOf(payee);
    }
    const std::string series = absl::StrCat("LS-", currency, "-", absl::FormatTime("%Y", now, zone_));
    LS_ASSIGN_OR_RETURN(auto seq, store_->Counters(keys::Sequences(), {series}));
    if (seq[0] < 0 || seq[0] >= kMaxCounter) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT",
                       "the counter of series " + series + " is out of range");
    }
    const int64_t number = seq[0] + 1;
    const std::string id = absl::StrFormat("%s-%06d", series, number);
    inv.set_name("invoices/" + absl::AsciiStrToLower(id));
    inv.set_state(v1::Invoice::ISSUED);
    inv.set_series(series);
    inv.set_sequence(number);
    inv.set_number(id);
    *inv.mutable_issue_time() = ToProto(now);
    *inv.mutable_due_time() = ToProto(now + payment_term_);  // the configured payment term
    inv.set_issued_by(ActorName(p));
    // PAID is "every payee's outstanding amount is zero": an invoice owing
    // nothing (only memo lines, or lines netting to zero per payee) is paid
    // as it is issued, announced by InvoicePaid in the same step.
    const bool nothing_owed = std::all_of(inv.payees().begin(), inv.payees().end(), [](const v1::PayeeBalance& pb) {
      return pb.amount_outstanding().amount_minor() == 0;
    });
    if (nothing_owed) {
      inv.set_state(v1::Invoice::PAID);
      *inv.mutable_paid_time() = ToProto(now);
    }
    if (voided_doc) inv.set_replaces(voided.name());
    *inv.mutable_create_time() = ToProto(now);
    *inv.mutable_update_time() = ToProto(now);
    inv.set_etag("1");
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    step.response = SerializeDeterministic(inv);
    step.field_checks.push_back({keys::Voided(), slot, voided_id.is_nil() ? "0" : voided_id.str});
    if (voided_doc) {
      voided.set_replaced_by(inv.name());  // neither state nor payments: its etag stays
      *voided.mutable_update_time() = ToProto(now);
      const std::string voided_key = keys::Doc("invoice", IdOf(voided.name()));
      step.version_checks.push_back({voided_key, voided_doc->version});
      step.puts.push_back({voided_key, voided.SerializeAsString(), voided_doc->version + 1});
      step.hash_sets.push_back({keys::Voided(), slot, ""});
    }
    step.field_checks.push_back({keys::Sequences(), series, std::to_string(seq[0])});
    step.field_checks.push_back({keys::Invoiced(), slot, issued.is_nil() ? "0" : issued.str});  // "" after a void
    step.hash_sets.push_back({keys::Sequences(), series, std::to_string(number)});
    step.hash_sets.push_back({keys::Invoiced(), slot, IdOf(inv.name())});
    const std::string key = keys::Doc("invoice", IdOf(inv.name()));
    step.version_checks.push_back({key, 0});
    step.puts.push_back({key, inv.SerializeAsString(), 1});
    const std::string member = absl::StrCat(series, "|", absl::StrFormat("%010d", number));
    step.index_adds.push_back({keys::Index("invoice"), member});
    // Its period and currency's set, counted in the same step
    // (keys::PeriodInvoiceCount): ComputeSettlement reads that set only.
    step.index_adds.push_back({keys::PeriodInvoices(r.period(), currency), member});
    step.incrs.push_back({keys::PeriodInvoiceCount(), "n", 1});
    std::set<std::string> charged;  // the charges whose lines it carries
    for (const auto& line : inv.lines()) {
      step.hash_sets.push_back({kInvoicedPostings, IdOf(line.posting()) + "|" + r.payer_organization(), IdOf(inv.name())});
      if (!line.charge().empty()) charged.insert(line.charge());
    }
    // Charge.invoices: "issued invoices carrying its lines", written in the
    // step that issues it (a charge changed meanwhile makes the step stale).
    std::vector<std::string> ckeys;
    for (const auto& charge_name : charged) ckeys.push_back(keys::Doc("charge", IdOf(charge_name)));
    LS_ASSIGN_OR_RETURN(auto cdocs, store_->docs().GetMany(ckeys));  // one round trip
    for (size_t i = 0; i < ckeys.size() && i < cdocs.size(); ++i) {
      const std::string& ckey = ckeys[i];
      const auto& cdoc = cdocs[i];
      if (!cdoc) continue;  // archived
      LS_ASSIGN_OR_RETURN(v1::Charge charge, Parse<v1::Charge>(cdoc->data));
      if (std::find(charge.invoices().begin(), charge.invoices().end(), inv.name()) != charge.invoices().end()) {
        continue;
      }
      charge.add_invoices(inv.name());
      *charge.mutable_update_time() = ToProto(now);
      step.version_checks.push_back({ckey, cdoc->version});
      step.puts.push_back({ckey, charge.SerializeAsString(), cdoc->version + 1});
    }
    v1::BillingEvent e = NewEvent(p, now, r.request_id());
    *e.mutable_invoice_issued()->mutable_invoice() = inv;
    step.events.push_back(e.SerializeAsString());
    if (nothing_owed) {
      v1::BillingEvent paid = NewEvent(p, now, r.request_id());
      *paid.mutable_invoice_paid()->mutable_invoice() = inv;
      paid.mutable_invoice_paid()->set_paid_by(v1::InvoicePaid::PAYMENTS);
      step.events.push_back(paid.SerializeAsString());
    }
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    LS_ASSIGN_OR_RETURN(auto answer, Answer(result, std::move(inv)));
    if (answer) return *std::move(answer);  // else the state moved: look again
  }
  return Conflict();
}

absl::StatusOr<std::optional<v1::Invoice>> BillingManager::InvoiceInScope(const Principal& p,
                                                                          const std::string& name) const {
  LS_RETURN_IF_ERROR(OwnScope(p, "invoices").status());  // before the name: nothing to see
  LS_ASSIGN_OR_RETURN(std::string id, NameId(name, "invoices"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("invoice", id)));
  if (!doc) return std::nullopt;
  LS_ASSIGN_OR_RETURN(v1::Invoice inv, Parse<v1::Invoice>(doc->data));
  if (!SeesAll(p)) {
    const std::string own = ActorOrganization(p);
    if (inv.payer_organization() != own && !IsInvoicePayee(inv, own)) return OrgScope("invoices");
  }
  return inv;
}

absl::StatusOr<v1::Invoice> BillingManager::GetInvoice(const Principal& p, const v1::GetInvoiceRequest& r) {
  LS_ASSIGN_OR_RETURN(auto inv, InvoiceInScope(p, r.name()));
  if (!inv) return MakeError(absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(std::string held, HeldBy(*inv));
  inv->set_settlement(std::move(held));
  return *std::move(inv);
}

absl::StatusOr<v1::InvoiceDocument> BillingManager::GetInvoiceDocument(const Principal& p,
                                                                       const v1::GetInvoiceDocumentRequest& r) {
  // The scope first (types.proto: permission is checked before validation),
  // then the name and the format, before anything of the stored invoice is
  // told (its existence, its state). A member's scope is the stored
  // invoice's parties, so it is read for that; the roles that see every
  // invoice have it read only once the format is known good.
  const bool format_ok =
      r.format() == v1::GetInvoiceDocumentRequest::PDF || r.format() == v1::GetInvoiceDocumentRequest::CSV;
  std::optional<v1::Invoice> found;
  if (!SeesAll(p)) {
    LS_ASSIGN_OR_RETURN(found, InvoiceInScope(p, r.name()));
  } else {
    LS_RETURN_IF_ERROR(NameId(r.name(), "invoices").status());
  }
  if (!format_ok) return InvalidField("format", "choose PDF or CSV");
  if (SeesAll(p)) {
    LS_ASSIGN_OR_RETURN(found, InvoiceInScope(p, r.name()));
  }
  if (!found) return MakeError(absl::StatusCode::kNotFound, "INVOICE_NOT_FOUND", r.name() + " does not exist");
  v1::Invoice& inv = *found;
  LS_ASSIGN_OR_RETURN(std::string held, HeldBy(inv));
  inv.set_settlement(std::move(held));
  if (inv.state() != v1::Invoice::ISSUED && inv.state() != v1::Invoice::PAID && inv.state() != v1::Invoice::VOID) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "INVOICE_NOT_ISSUED",
                     r.name() + " is not issued; only issued, paid and void invoices have a document");
  }
  v1::InvoiceDocument doc;
  if (r.format() == v1::GetInvoiceDocumentRequest::CSV) {
    doc.set_content_type("text/csv; charset=utf-8");
    doc.set_filename(inv.number() + ".csv");
    doc.set_content(InvoiceCsv(inv, zone_));
  } else {
    doc.set_content_type("application/pdf");
    doc.set_filename(inv.number() + ".pdf");
    LS_ASSIGN_OR_RETURN(std::string pdf, InvoicePdf(inv, zone_));
    doc.set_content(std::move(pdf));
  }
  return doc;
}

// ================================================================ settlement

namespace {

// KEYS[1] a period's invoice set, KEYS[2] keys::PeriodInvoiceCount();
// ARGV[1] the member. Added and counted once.
const RedisScript& AddPeriodInvoice() {
  static const RedisScript* const kAdd = new RedisScript(R"lua(
if redis.call('ZADD', KEYS[1], 0, ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'n', 1)
  return 1
end
return 0
)lua");
  return *kAdd;
}

}  // namespace

absl::StatusOr<int> BillingManager::IndexPeriodInvoices() {
  auto complete = [&]() -> absl::StatusOr<bool> {
    LS_ASSIGN_OR_RETURN(auto replies, store_->pool()->Pipeline({{"HMGET", keys::PeriodInvoiceCount(), "n", "unreadable"},
                                                                 {"ZCARD", keys::Index("invoice")}}));
    int64_t counted = 0, unreadable = 0;
    if (replies.size() != 2 || replies[1].type != RedisValue::Type::kInteger || replies[0].elements.size() != 2 ||
        (!replies[0].elements[0].is_nil() && !absl::SimpleAtoi(replies[0].elements[0].str, &counted)) ||
        (!replies[0].elements[1].is_nil() && !absl::SimpleAtoi(replies[0].elements[1].str, &unreadable))) {
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read the invoice indexes' sizes");
    }
    return counted + unreadable >= replies[1].integer;
  };
  LS_ASSIGN_OR_RETURN(bool done, complete());
  if (done) return 0;
  int added = 0;
  int64_t unreadable = 0;  // index members without a readable document
  for (std::string after;;) {
    LS_ASSIGN_OR_RETURN(auto page, store_->docs().IndexRange(keys::Index("invoice"), after, index_page_));
    std::vector<std::string> members, doc_keys;
    for (const auto& m : page) {
      const std::vector<std::string> parts = absl::StrSplit(m, '|');
      int64_t seq = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &seq)) {
        ++unreadable;
        continue;
      }
      members.push_back(m);
      doc_keys.push_back(keys::Doc("invoice", absl::AsciiStrToLower(absl::StrFormat("%s-%06d", parts[0], seq))));
    }
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    for (size_t i = 0; i < members.size() && i < docs.size(); ++i) {
      absl::StatusOr<v1::Invoice> parsed =
          docs[i] ? Parse<v1::Invoice>(docs[i]->data) : absl::NotFoundError("no document");
      if (!parsed.ok()) {
        // Damaged data: said, skipped (it cannot be netted), and counted so
        // that the next call does not walk the whole index again for it.
        LogError("invoice index member without a readable document; left out of its period's set",
                 {{"member", members[i]}, {"error", std::string(parsed.status().message())}});
        ++unreadable;
        continue;
      }
      const v1::Invoice& inv = *parsed;
      LS_ASSIGN_OR_RETURN(RedisValue reply,
                          store_->pool()->Eval(AddPeriodInvoice(),
                                               {keys::PeriodInvoices(inv.period(), inv.currency_code()),
                                                keys::PeriodInvoiceCount()},
                                               {members[i]}));
      if (reply.type == RedisValue::Type::kInteger) added += static_cast<int>(reply.integer);
    }
    if (static_cast<int>(page.size()) < index_page_) break;
    after = page.back();
  }
  // What this walk found unreadable, as of now (a later walk replaces it).
  LS_RETURN_IF_ERROR(
      store_->pool()->Command({"HSET", keys::PeriodInvoiceCount(), "unreadable", std::to_string(unreadable)}).status());
  return added;
}

absl::StatusOr<v1::Settlement> BillingManager::ComputeSettlement(const Principal& p,
                                                                 const v1::ComputeSettlementRequest& r) {
  LS_RETURN_IF_ERROR(ParsePeriod(r.period()).status());
  LS_RETURN_IF_ERROR(CheckRequestCurrency(r.currency_code()));
  const std::string currency = r.currency_code().empty() ? kDefaultCurrency : r.currency_code();
  LS_ASSIGN_OR_RETURN(bool ended, PeriodEnded(r.period(), clock_->Now(), zone_));
  if (!ended) return MakeError(absl::StatusCode::kFailedPrecondition, "PERIOD_NOT_ENDED", r.period() + " has not ended");
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency("ComputeSettlement", r.request_id());
  const std::string fingerprint = RequestFingerprint("ComputeSettlement", r, ActorName(p));
  bool indexed = false;
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
    if (seen) return Parse<v1::Settlement>(*seen);
    if (!indexed) {
      // The period sets complete (invoices issued before they existed);
      // after the replay, which needs none of it.
      LS_RETURN_IF_ERROR(IndexPeriodInvoices().status());
      indexed = true;
    }
    const absl::Time now = StampNow();
    // The COMPUTED settlements of this period and currency: superseded by
    // this one, unless one of them already has paid transfers.
    std::vector<std::pair<v1::Settlement, int64_t>> previous;
    int64_t of_period = 0;  // settlements of the period computed so far, any state and currency
    // Every settlement of the period, page by page.
    std::vector<std::string> computed;
    for (std::string after = r.period() + "|";;) {
      LS_ASSIGN_OR_RETURN(auto page, store_->docs().IndexRange(keys::Index("settlement"), after, index_page_));
      bool past = false;
      for (auto& m : page) {
        if (!absl::StartsWith(m, r.period() + "|")) {
          past = true;
          break;
        }
        computed.push_back(std::move(m));
      }
      if (past || static_cast<int>(page.size()) < index_page_) break;
      after = computed.back();
    }
    for (const auto& m : computed) {
      ++of_period;
      LS_ASSIGN_OR_RETURN(auto sdoc, store_->docs().Get(keys::Doc("settlement", m.substr(m.rfind('|') + 1))));
      if (!sdoc) continue;
      LS_ASSIGN_OR_RETURN(v1::Settlement old, Parse<v1::Settlement>(sdoc->data));
      if (old.state() != v1::Settlement::COMPUTED || old.currency_code() != currency) continue;
      for (const auto& t : old.transfers()) {
        if (!t.payment().empty()) {
          return MakeError(absl::StatusCode::kFailedPrecondition, "SETTLEMENT_IN_PROGRESS",
                           old.name() + " already has paid transfers; pay the rest of its transfers");
        }
      }
      previous.emplace_back(std::move(old), sdoc->version);
    }
    // Every invoice of the period and currency (its own set, read whole,
    // page by page), each document read in one round trip per page.
    std::vector<std::string> invoice_keys;
    const std::string of_currency = keys::PeriodInvoices(r.period(), currency);
    for (std::string after;;) {
      LS_ASSIGN_OR_RETURN(auto page, store_->docs().IndexRange(of_currency, after, index_page_));
      for (const auto& m : page) {
        const std::vector<std::string> parts = absl::StrSplit(m, '|');
        int64_t seq = 0;
        if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &seq)) continue;
        invoice_keys.push_back(
            keys::Doc("invoice", absl::AsciiStrToLower(absl::StrFormat("%s-%06d", parts[0], seq))));
      }
      if (static_cast<int>(page.size()) < index_page_) break;
      after = page.back();
    }
    std::vector<OpenAmount> open;
    std::vector<std::pair<v1::Invoice, int64_t>> invoices;
    for (size_t from = 0; from < invoice_keys.size(); from += index_page_) {
      const std::vector<std::string> batch(
          invoice_keys.begin() + from,
          invoice_keys.begin() + std::min(invoice_keys.size(), from + static_cast<size_t>(index_page_)));
      LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(batch));
      for (size_t i = 0; i < batch.size() && i < docs.size(); ++i) {
        const auto& doc = docs[i];
        if (!doc) continue;
        LS_ASSIGN_OR_RETURN(v1::Invoice inv, Parse<v1::Invoice>(doc->data));
        if (inv.state() != v1::Invoice::ISSUED || inv.period() != r.period() || inv.currency_code() != currency) {
          continue;
        }
        // Not in another COMPUTED or CLEARED settlement (those of this
        // period are superseded now).
        if (!inv.settlement().empty()) {
          bool superseded = false;
          for (const auto& [old, v] : previous) superseded |= old.name() == inv.settlement();
          LS_ASSIGN_OR_RETURN(auto sdoc, store_->docs().Get(keys::Doc("settlement", IdOf(inv.settlement()))));
          if (!superseded && sdoc) {
            LS_ASSIGN_OR_RETURN(v1::Settlement in, Parse<v1::Settlement>(sdoc->data));
            if (in.state() != v1::Settlement::SUPERSEDED) continue;
          }
        }
        for (const auto& pb : inv.payees()) {
          if (pb.amount_outstanding().amount_minor() == 0) continue;
          open.push_back({inv.payer_organization(), pb.organization(), pb.amount_outstanding().amount_minor()});
        }
        invoices.emplace_back(std::move(inv), doc->version);
      }
    }
    if (open.empty()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOTHING_TO_SETTLE",
                       "no issued invoice of " + r.period() + " has an open amount in " + currency);
    }
    LS_ASSIGN_OR_RETURN(v1::Settlement s, billing::ComputeSettlement(open, currency));
    // Each transfer is paid by one payment, whose amount is at most 10^15
    // minor units (types.proto): one beyond could never be paid and the
    // settlement would stay COMPUTED for ever. Refused, nothing stored.
    for (const auto& t : s.transfers()) {
      if (t.amount().amount_minor() > kMaxAmountMinor) {
        return InvalidField(absl::StrCat("transfers[", t.index(), "].amount"),
                            absl::StrCat(t.from_organization(), " would pay ", t.to_organization(), " ",
                                         t.amount().amount_minor(), " minor units of ", currency,
                                         " in one transfer, more than a payment's ", kMaxAmountMinor,
                                         "; settle part of the period's invoices by payments against them first"),
                            "AMOUNT_OUT_OF_RANGE");
      }
    }
    // Unique also for a recomputation in the same millisecond: the
    // period's sequence number follows the time (the index orders by time,
    // then id). A concurrent computation taking the same number makes this
    // step stale (the document exists) and it reads again.
    const std::string id =
        absl::StrFormat("%s-%s-%d-%04d", r.period(), absl::AsciiStrToLower(currency), Ms(now), of_period + 1);
    s.set_name("settlements/" + id);
    s.set_state(v1::Settlement::COMPUTED);
    s.set_period(r.period());
    LS_ASSIGN_OR_RETURN(TimeRange range, PeriodRange(r.period(), zone_));
    *s.mutable_period_interval() = ToInterval(range);
    s.set_currency_code(currency);
    for (const auto& [inv, v] : invoices) s.add_invoices(inv.name());
    if (!previous.empty()) s.set_supersedes(previous.back().first.name());
    s.set_computed_by(ActorName(p));
    *s.mutable_create_time() = ToProto(now);
    *s.mutable_update_time() = ToProto(now);
    LedgerStep step;
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    // Each netted invoice is in this settlement: paid through its transfers.
    for (auto& [inv, v] : invoices) inv.set_settlement(s.name());
    std::vector<std::string> clearing;  // InvoicePaid and SettlementCleared, after SettlementComputed
    if (s.transfers().empty()) {
      // Every position nets to zero: no transfer is needed, so all of them
      // are paid and it clears in this step (its invoices PAID).
      LS_RETURN_IF_ERROR(ClearSettlement(p, now, r.request_id(), s, std::move(invoices), step, clearing));
    } else {
      for (auto& [inv, v] : invoices) {
        // Neither state nor payments: the etag stays (Invoice.etag), so an
        // etag read before still voids it; the version check below makes a
        // concurrent change of either read again.
        *inv.mutable_update_time() = ToProto(now);
        const std::string inv_key = keys::Doc("invoice", IdOf(inv.name()));
        step.version_checks.push_back({inv_key, v});
        step.puts.push_back({inv_key, inv.SerializeAsString(), v + 1});
      }
    }
    // The settlement as stored: CLEARED (netting posting, clear_time) when
    // it cleared in this step.
    v1::BillingEvent e = NewEvent(p, now, r.request_id());
    *e.mutable_settlement_computed()->mutable_settlement() = s;
    e.mutable_settlement_computed()->set_superseded_settlement(s.supersedes());
    step.events.push_back(e.SerializeAsString());
    step.events.insert(step.events.end(), clearing.begin(), clearing.end());
    step.response = SerializeDeterministic(s);
    const std::string key = keys::Doc("settlement", id);
    step.version_checks.push_back({key, 0});
    step.puts.push_back({key, s.SerializeAsString(), 1});
    step.index_adds.push_back({keys::Index("settlement"), absl::StrCat(r.period(), "|", keys::IndexMember(now, id))});
    step.stamp = now;
    for (auto& [old, v] : previous) {
      old.set_state(v1::Settlement::SUPERSEDED);
      old.set_superseded_by(s.name());
      *old.mutable_update_time() = ToProto(now);
      const std::string old_key = keys::Doc("settlement", IdOf(old.name()));
      step.version_checks.push_back({old_key, v});
      step.puts.push_back({old_key, old.SerializeAsString(), v + 1});
    }
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
    LS_ASSIGN_OR_RETURN(auto answer, Answer(result, std::move(s)));
    if (answer) return *std::move(answer);  // else the state moved: look again
  }
  return Conflict();
}

absl::StatusOr<v1::Settlement> BillingManager::GetSettlement(const Principal& p, const v1::GetSettlementRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "settlements").status());  // before the name: nothing to see
  LS_ASSIGN_OR_RETURN(std::string id, NameId(r.name(), "settlements"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("settlement", id)));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "SETTLEMENT_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::Settlement s, Parse<v1::Settlement>(doc->data));
  if (SeesAll(p)) return s;
  // Reduced to what involves the caller's organisation: its position, pairs
  // and transfers, the invoices it pays or is paid by (it never sees another
  // organisation's invoices), and the totals over what remains (its pairs'
  // gross open amounts, its transfers). Its pairs' gross amounts are what
  // its position is owed and owes: that also counts a pair netting to zero,
  // which has no PairBalance.
  const std::string own = ActorOrganization(p);
  v1::Settlement mine = s;
  mine.clear_positions();
  mine.clear_pair_balances();
  mine.clear_transfers();
  mine.clear_invoices();
  int64_t gross = 0, moved = 0;
  for (const auto& x : s.positions()) {
    if (x.organization() != own) continue;
    gross += x.owed_to().amount_minor() + x.owed_by().amount_minor();
    *mine.add_positions() = x;
  }
  for (const auto& x : s.pair_balances()) {
    if (x.debtor_organization() == own || x.creditor_organization() == own) *mine.add_pair_balances() = x;
  }
  for (const auto& x : s.transfers()) {
    if (x.from_organization() != own && x.to_organization() != own) continue;
    moved += x.amount().amount_minor();
    *mine.add_transfers() = x;
  }
  std::vector<std::string> invoice_keys;
  for (const auto& name : s.invoices()) invoice_keys.push_back(keys::Doc("invoice", IdOf(name)));
  LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(invoice_keys));
  for (int i = 0; i < s.invoices_size(); ++i) {
    if (!docs[i]) continue;
    LS_ASSIGN_OR_RETURN(v1::Invoice inv, Parse<v1::Invoice>(docs[i]->data));
    if (inv.payer_organization() == own || IsInvoicePayee(inv, own)) mine.add_invoices(s.invoices(i));
  }
  *mine.mutable_gross_total() = MakeMoney(s.currency_code(), gross);
  *mine.mutable_transfer_total() = MakeMoney(s.currency_code(), moved);
  return mine;
}

}  // namespace labshare::billing
