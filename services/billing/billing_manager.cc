#include "services/billing/billing_common.h"
#include "services/billing/billing_manager.h"

#include <algorithm>
#include <map>
#include <set>

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
#include "common/resource_name.h"
#include "services/billing/billing_rules.h"
#include "services/billing/invoice_document.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
using labshare::type::v1::SharingMode;

constexpr int kAttempts = 8;

// "<account>|<counterparty>|<currency>"
std::string BalanceField(const v1::Entry& e) {
  const auto& m = e.debit().amount_minor() != 0 ? e.debit() : e.credit();
  return absl::StrCat(e.account(), "|", e.counterparty(), "|", m.currency_code());
}
int64_t Signed(const v1::Entry& e) { return e.debit().amount_minor() - e.credit().amount_minor(); }
std::string EntryCurrency(const v1::Entry& e) {
  return e.debit().amount_minor() != 0 ? e.debit().currency_code() : e.credit().currency_code();
}

struct AccountLine {
  int64_t ms = 0;
  std::string posting, counterparty, currency;
  int64_t amount = 0;  // debit minus credit
};
std::optional<AccountLine> ParseAccountLine(const std::string& s) {
  std::vector<std::string> f = absl::StrSplit(s, '|');
  AccountLine l;
  if (f.size() != 5 || !absl::SimpleAtoi(f[0], &l.ms) || !absl::SimpleAtoi(f[4], &l.amount)) return std::nullopt;
  l.posting = f[1];
  l.counterparty = f[2];
  l.currency = f[3];
  return l;
}

}  // namespace

// The owner's figures from a charge, for usage (billing_events.proto).
v1::IncomeFigures IncomeOf(const v1::Charge& c, absl::Time now) {
  v1::IncomeFigures f;
  const std::string currency = c.amount().currency_code();
  f.set_owner_organization(c.owner_organization());
  f.set_instrument(c.instrument());
  f.set_mode(c.mode());
  f.set_fee_kind(c.fee_kind());
  f.set_charge(c.name());
  *f.mutable_effective_time() = ToProto(now);
  *f.mutable_service_interval() = c.service_interval();
  f.set_currency_code(currency);
  const bool deposit = c.fee_kind() == v1::DEPOSIT;
  const bool damage = c.fee_kind() == v1::DAMAGE;
  const bool internal = c.payer_organization() == c.owner_organization() && c.splits().empty();
  int64_t income = 0, subsidised = 0, in_kind = 0;
  std::map<std::string, int64_t> subsidy_by_org;
  for (const auto& l : c.subsidy_lines()) subsidy_by_org[l.beneficiary_organization()] += l.amount().amount_minor();
  auto share = [&](const std::string& org, int32_t bps, int64_t amount) {
    auto* s = f.add_shares();
    s->set_payer_organization(org);
    s->set_share_bps(bps);
    *s->mutable_service_income() = MakeMoney(currency, amount);
    *s->mutable_subsidised() = MakeMoney(currency, subsidy_by_org[org]);
    income += amount;
    subsidised += subsidy_by_org[org];
  };
  if (!deposit && !damage && !internal) {
    if (c.splits().empty()) {
      share(c.payer_organization(), 10000, c.amount().amount_minor());
    } else {
      for (const auto& sp : c.splits()) {
        if (sp.in_kind()) {
          in_kind += sp.amount().amount_minor();
        } else {
          share(sp.organization(), sp.share_bps(), sp.amount().amount_minor());
        }
      }
    }
  }
  *f.mutable_service_income() = MakeMoney(currency, income);
  *f.mutable_subsidised() = MakeMoney(currency, subsidised);
  *f.mutable_in_kind() = MakeMoney(currency, in_kind);
  *f.mutable_internal_use() = MakeMoney(currency, internal && !deposit && !damage ? c.amount().amount_minor() : 0);
  *f.mutable_compensation() = MakeMoney(currency, damage ? c.amount().amount_minor() : 0);
  return f;
}

v1::IncomeFigures NegatedIncome(v1::IncomeFigures f) {
  auto neg = [](labshare::type::v1::Money* m) { m->set_amount_minor(-m->amount_minor()); };
  for (auto& s : *f.mutable_shares()) {
    neg(s.mutable_service_income());
    neg(s.mutable_subsidised());
  }
  for (auto* m : {f.mutable_service_income(), f.mutable_subsidised(), f.mutable_in_kind(), f.mutable_internal_use(),
                  f.mutable_compensation()}) {
    neg(m);
  }
  return f;
}

std::vector<v1::IncomeFigures> IncomeDeltasOf(const std::vector<v1::Posting>& postings, const v1::Charge* charge,
                                              absl::Time now, bool of_subsidy) {
  struct Share {
    int64_t income = 0, subsidised = 0;
  };
  std::map<std::string, v1::IncomeFigures> by_owner;
  std::map<std::string, std::map<std::string, Share>> shares;  // owner -> payer -> its deltas
  for (const auto& posting : postings) {
    for (const auto& e : posting.entries()) {
      auto ref = ParseAccountName(e.account());
      if (!ref.ok() || !IsOrganizationName(ref->owner)) continue;
      // A subsidy's entry on the owner's RECEIVABLE from the payer: what the
      // pool pays instead of the payer (billing.proto, "subsidy S").
      const bool subsidy_part =
          of_subsidy && ref->kind == v1::RECEIVABLE && IsOrganizationName(e.counterparty());
      if (ref->kind != v1::INCOME && ref->kind != v1::IN_KIND_CONTRIBUTION && ref->kind != v1::INTERNAL_USE &&
          ref->kind != v1::COMPENSATION && !subsidy_part) {
        continue;
      }
      const int64_t credit = -Signed(e);  // the income accounts are credit-normal
      const std::string currency = posting.currency_code();
      auto [it, fresh] = by_owner.try_emplace(ref->owner);
      v1::IncomeFigures& f = it->second;
      if (fresh) {
        f.set_owner_organization(ref->owner);
        if (charge != nullptr) {
          f.set_instrument(charge->instrument());
          f.set_mode(charge->mode());
          f.set_fee_kind(charge->fee_kind());
          f.set_charge(charge->name());
          *f.mutable_service_interval() = charge->service_interval();
        }
        *f.mutable_effective_time() = ToProto(now);
        f.set_currency_code(currency);
        for (auto* m : {f.mutable_service_income(), f.mutable_subsidised(), f.mutable_in_kind(),
                        f.mutable_internal_use(), f.mutable_compensation()}) {
          *m = MakeMoney(currency, 0);
        }
      }
      auto bump = [credit](labshare::type::v1::Money* m) { m->set_amount_minor(m->amount_minor() + credit); };
      if (subsidy_part) {
        bump(f.mutable_subsidised());
        shares[ref->owner][e.counterparty()].subsidised += credit;
        continue;
      }
      switch (ref->kind) {
        case v1::INCOME: {
          bump(f.mutable_service_income());
          // Whose income: the entry's counterparty when it names an
          // organisation (a charge's entries always do); an ADJUST may
          // leave it empty or name a pool: then the corrected charge's
          // payer. Without either the delta has no payer to count under.
          const std::string& payer =
              IsOrganizationName(e.counterparty()) ? e.counterparty()
              : charge != nullptr                  ? charge->payer_organization()
                                                   : e.counterparty();
          if (IsOrganizationName(payer)) shares[ref->owner][payer].income += credit;
          break;
        }
        case v1::IN_KIND_CONTRIBUTION: bump(f.mutable_in_kind()); break;
        case v1::INTERNAL_USE: bump(f.mutable_internal_use()); break;
        default: bump(f.mutable_compensation()); break;
      }
    }
  }
  std::vector<v1::IncomeFigures> out;
  for (auto& [owner, f] : by_owner) {
    for (const auto& [payer, amounts] : shares[owner]) {
      auto* s = f.add_shares();
      s->set_payer_organization(payer);
      int32_t bps = 10000;
      if (charge != nullptr) {
        for (const auto& sp : charge->splits()) {
          if (sp.organization() == payer) bps = sp.share_bps();
        }
      }
      s->set_share_bps(bps);
      *s->mutable_service_income() = MakeMoney(f.currency_code(), amounts.income);
      *s->mutable_subsidised() = MakeMoney(f.currency_code(), amounts.subsidised);
    }
    out.push_back(std::move(f));
  }
  return out;
}

absl::StatusOr<std::vector<v1::PoolBalance>> BillingManager::PoolBalancesAfter(
    LedgerStep& step, const std::vector<v1::Posting>& postings) const {
  std::map<std::string, std::string> pools;  // pool -> its POOL_FUNDS balance field
  for (const auto& posting : postings) {
    for (const auto& e : posting.entries()) {
      auto ref = ParseAccountName(e.account());
      if (!ref.ok() || ref->kind != v1::POOL_FUNDS || pools.count(ref->owner) != 0) continue;
      LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("pool", IdOf(ref->owner))));
      if (!doc) continue;
      LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(doc->data));
      pools.emplace(ref->owner, PoolFundsField(pool));
    }
  }
  std::vector<v1::PoolBalance> out;
  for (const auto& [pool, field] : pools) {
    LS_ASSIGN_OR_RETURN(auto counters, store_->Counters(keys::Balances(), {field}));
    step.field_checks.push_back({keys::Balances(), field, std::to_string(counters[0])});
    int64_t after = counters[0];
    for (const auto& posting : postings) {
      for (const auto& e : posting.entries()) {
        if (BalanceField(e) == field) after += Signed(e);
      }
    }
    v1::PoolBalance b;
    b.set_subsidy_pool(pool);
    // POOL_FUNDS is credit-normal; the field keeps debit minus credit.
    *b.mutable_balance() = MakeMoney(field.substr(field.rfind('|') + 1), -after);
    out.push_back(std::move(b));
  }
  return out;
}

BillingManager::BillingManager(BillingStore* store, InventoryReader* inventory, const Clock* clock,
                               absl::TimeZone zone, PageTokenCodec page_tokens, int payment_term_days)
    : store_(store),
      inventory_(inventory),
      clock_(clock),
      zone_(zone),
      page_tokens_(std::move(page_tokens)),
      payment_term_(absl::Hours(24) * payment_term_days) {}

// ================================================================ consuming booking events

// What one batch of ApplyBookingEvents asks once: inventory's answers (a
// batch spans milliseconds, as the calls of consecutive events would), the
// subsidy pools, and the ledger counters the steps check, each as it will
// be when the step runs (the value read plus the increments of the steps
// built before it). A step whose check still fails (something else moved
// the counter) stops the Lua call; its event takes the per-event path.
struct BillingManager::IngestBatch {
  class Memo final : public InventoryReader {
   public:
    explicit Memo(InventoryReader* next) : next_(next) {}
    absl::StatusOr<inv::LookupRateResponse> LookupRate(const inv::LookupRateRequest& r) override {
      return Ask(rates_, r.SerializeAsString(), [&] { return next_->LookupRate(r); });
    }
    absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name) override {
      return Ask(instruments_, name, [&] { return next_->GetInstrument(name); });
    }
    absl::StatusOr<inv::Organization> GetOrganization(const std::string& name) override {
      return Ask(organizations_, name, [&] { return next_->GetOrganization(name); });
    }

   private:
    // Answers are kept, errors too except UNAVAILABLE-like ones (asked again).
    template <typename T, typename F>
    absl::StatusOr<T> Ask(std::map<std::string, absl::StatusOr<T>>& memo, const std::string& key, F ask) {
      auto it = memo.find(key);
      if (it != memo.end()) return it->second;
      absl::StatusOr<T> answer = ask();
      if (answer.ok() || answer.status().code() == absl::StatusCode::kNotFound ||
          answer.status().code() == absl::StatusCode::kInvalidArgument ||
          answer.status().code() == absl::StatusCode::kFailedPrecondition) {
        memo.emplace(key, answer);
      }
      return answer;
    }
    InventoryReader* next_;
    std::map<std::string, absl::StatusOr<inv::LookupRateResponse>> rates_;
    std::map<std::string, absl::StatusOr<inv::Instrument>> instruments_;
    std::map<std::string, absl::StatusOr<inv::Organization>> organizations_;
  };

  explicit IngestBatch(InventoryReader* inventory) : memo(inventory) {}
  // After a step did not apply: counters and pools are read again.
  void ForgetLedger() {
    pools.reset();
    counters.clear();
    unapplied.clear();
  }

  Memo memo;
  std::optional<std::vector<v1::SubsidyPool>> pools;
  std::vector<int64_t> pool_versions;  // of each of pools
  int64_t pool_generation = 0;
  // "<key>\n<field>" -> the value the next step will see.
  std::map<std::string, int64_t> counters;
  // "<key>\n<field>" -> the increments of the built steps not applied yet.
  std::map<std::string, int64_t> unapplied;
  // Built steps and the index of their event.
  std::vector<LedgerStep> steps;
  std::vector<size_t> step_events;
};

InventoryReader& BillingManager::Inventory(IngestBatch* batch) const {
  return batch != nullptr ? static_cast<InventoryReader&>(batch->memo) : *inventory_;
}

absl::StatusOr<int64_t> BillingManager::Counter(IngestBatch* batch, const std::string& key,
                                                const std::string& field) const {
  if (batch == nullptr) {
    LS_ASSIGN_OR_RETURN(auto v, store_->Counters(key, {field}));
    return v[0];
  }
  const std::string id = absl::StrCat(key, "\n", field);
  auto it = batch->counters.find(id);
  if (it != batch->counters.end()) return it->second;
  LS_ASSIGN_OR_RETURN(auto v, store_->Counters(key, {field}));
  auto pending = batch->unapplied.find(id);
  const int64_t value = v[0] + (pending == batch->unapplied.end() ? 0 : pending->second);
  batch->counters[id] = value;
  return value;
}

absl::StatusOr<v1::AppliedRate> BillingManager::RateFor(const std::string& instrument, SharingMode mode,
                                                        const std::string& payer, absl::Time at,
                                                        labshare::type::v1::PayerClass payer_class,
                                                        const std::string& tier, const std::string& service_entry,
                                                        IngestBatch* batch) {
  inv::LookupRateRequest r;
  r.set_instrument(instrument);
  r.set_mode(mode);
  r.set_payer_organization(payer);
  // The class and tier recorded on the booking, not the organisation's now
  // (billing_events.proto); unset on old events: as inventory sees it now.
  r.set_payer_class(payer_class);
  if (payer_class != labshare::type::v1::PAYER_CLASS_UNSPECIFIED) r.set_payer_tier(tier);
  *r.mutable_time() = ToProto(at);
  r.set_service_entry_id(service_entry);
  LS_ASSIGN_OR_RETURN(inv::LookupRateResponse rate, Inventory(batch).LookupRate(r));
  return AppliedRateFromLine(rate.rate(), tier);
}

absl::StatusOr<BillingManager::Priced> BillingManager::Price(const bk::BookingEvent& e, IngestBatch* batch) {
  Priced out;
  const bk::Booking* booking = nullptr;
  if (e.has_booking_checked_out()) booking = &e.booking_checked_out().booking();
  if (e.has_booking_missed()) booking = &e.booking_missed().booking();
  if (e.has_booking_cancelled() && !e.booking_cancelled().cancelled_by_outage()) booking = &e.booking_cancelled().booking();
  if (booking != nullptr) {
    if (ChargeForBooking(*booking) == BookingCharge::kNone) return out;
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, Inventory(batch).GetInstrument(booking->instrument()));
    // The terms booking pinned when the booking was created: a later change
    // of the instrument's rules, or the mode's withdrawal, does not re-price
    // it. Older bookings without them: the rules of the mode's offering now,
    // or, when the instrument no longer offers the mode, the withdrawn-mode
    // terms (billing_events.proto): priced and posted, never retried for ever.
    BillingPolicy policy;
    if (booking->has_billing_terms()) {
      LS_ASSIGN_OR_RETURN(policy, PolicyFromBillingTerms(booking->billing_terms()));
    } else {
      const inv::SlotRules* rules = nullptr;
      for (const auto& m : instrument.modes()) {
        if (m.mode() == booking->mode()) rules = &m.slot_rules();
      }
      if (rules != nullptr) {
        LS_ASSIGN_OR_RETURN(policy, PolicyFromSlotRules(*rules));
      } else {
        policy = WithdrawnModePolicy();
        LogWarning("booking without billing terms whose mode the instrument no longer offers: priced on actual "
                   "time, no unit, no minimum, no fee",
                   {{"booking", booking->name()},
                    {"instrument", booking->instrument()},
                    {"mode", labshare::type::v1::SharingMode_Name(booking->mode())},
                    {"event_id", e.header().event_id()}});
      }
    }
    // A fee of 0 bps: nothing to charge, no rate to look up.
    if (FeeBpsFor(ChargeForBooking(*booking), policy) == 0) return out;
    absl::StatusOr<v1::AppliedRate> rate =
        RateFor(booking->instrument(), booking->mode(), booking->payer_organization(),
                FromProto(booking->reserved_interval().start_time()), booking->payer_class(), booking->payer_tier(),
                "", batch);
    // The owner's own use with no OWNER line in force is free (inventory's
    // CheckAccess admits it with no rate: internal use is free): nothing
    // to charge, its fees neither, as for a fee of 0 bps. Old events
    // without a recorded class: the payer owning the instrument.
    const bool owner_pays = booking->payer_class() == labshare::type::v1::OWNER ||
                            (booking->payer_class() == labshare::type::v1::PAYER_CLASS_UNSPECIFIED &&
                             booking->payer_organization() == booking->instrument_owner());
    if (!rate.ok() && owner_pays && rate.status().code() == absl::StatusCode::kNotFound &&
        ErrorReason(rate.status()) == "NO_RATE") {
      return out;
    }
    LS_RETURN_IF_ERROR(rate.status());
    LS_ASSIGN_OR_RETURN(auto charge, PriceBooking(*booking, *rate, policy));
    if (charge) {
      charge->set_instrument_category(instrument.category());
      out.charges.push_back(*std::move(charge));
    }
    return out;
  }
  if (e.has_lease_handed_over()) {
    const bk::Lease& lease = e.lease_handed_over().lease();
    LS_ASSIGN_OR_RETURN(auto deposit, PriceDeposit(lease));
    if (!deposit) {
      out.lease_out = lease;
      return out;
    }
    out.charges.push_back(*std::move(deposit));
    v1::Deposit d;
    d.set_name("deposits/" + IdOf(lease.name()));
    d.set_state(v1::Deposit::HELD);
    d.set_lease(lease.name());
    d.set_instrument(lease.instrument());
    d.set_owner_organization(out.charges[0].owner_organization());
    d.set_lessee_organization(lease.lessee_organization());
    *d.mutable_amount() = out.charges[0].amount();
    *d.mutable_held_amount() = out.charges[0].amount();
    // Booking's handover time (the contract's hold_time), not billing's clock.
    if (lease.has_handover() && lease.handover().has_handover_time()) {
      *d.mutable_hold_time() = lease.handover().handover_time();
    }
    out.deposit = std::move(d);
    out.lease_out = lease;
    return out;
  }
  if (e.has_lease_returned()) {
    // The periods not charged at their end yet, up to the return.
    LS_ASSIGN_OR_RETURN(out.charges, UnchargedLeasePeriods(e.lease_returned().lease(), absl::InfiniteFuture()));
    out.lease_done = e.lease_returned().lease().name();
    return out;
  }
  if (e.has_lease_closed()) {
    const bk::Lease& lease = e.lease_closed().lease();
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("deposit", IdOf(lease.name()))));
    if (!doc) {
      // A lease is closed only after its handover, whose step holds any
      // deposit of the contract: none held yet means the handover is not
      // applied yet (its event failed, or another replica still has it).
      // Settled now, the damage would be charged net of a deposit never
      // released; the close waits for it (left pending, retried).
      if (lease.contract().deposit().amount_minor() > 0) {
        return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                         lease.name() + "'s deposit is not held yet: its handover is applied first");
      }
      // No deposit was held (a zero deposit creates none): nothing to
      // release or apply, but the damage is still charged, all of it
      // outstanding (billing.proto, Deposit).
      LS_ASSIGN_OR_RETURN(auto damage, PriceDamage(lease));
      if (damage) out.charges.push_back(*std::move(damage));
      return out;
    }
    LS_ASSIGN_OR_RETURN(v1::Deposit d, Parse<v1::Deposit>(doc->data));
    LS_ASSIGN_OR_RETURN(DepositSettlement settled, LeaseDepositSettlement(lease));
    const std::string owner = d.owner_organization(), lessee = d.lessee_organization();
    auto posting = [&](v1::PostingKind kind, std::vector<v1::Entry> entries, const std::string& what) {
      v1::Posting p;
      p.set_kind(kind);
      p.set_deposit(d.name());
      p.set_description(what);
      for (auto& en : entries) *p.add_entries() = std::move(en);
      out.postings.push_back(std::move(p));
    };
    if (settled.released.amount_minor() > 0) {
      LS_ASSIGN_OR_RETURN(auto entries, DepositReleaseEntries(owner, lessee, settled.released));
      posting(v1::DEPOSIT_RELEASE, std::move(entries), "deposit released to " + lessee);
    }
    if (settled.applied.amount_minor() > 0) {
      LS_ASSIGN_OR_RETURN(auto entries, DepositApplicationEntries(owner, lessee, settled.applied));
      posting(v1::DEPOSIT_APPLICATION, std::move(entries), "deposit applied to damage");
    }
    LS_ASSIGN_OR_RETURN(auto damage, PriceDamage(lease));
    if (damage) out.charges.push_back(*std::move(damage));
    d.set_state(settled.applied.amount_minor() > 0 ? v1::Deposit::APPLIED : v1::Deposit::RELEASED);
    *d.mutable_applied_amount() = settled.applied;
    *d.mutable_released_amount() = settled.released;
    d.mutable_held_amount()->set_amount_minor(0);  // nothing is held once the lease is closed
    // Deposit.postings: the release and application postings only (the hold
    // posting is the hold charge's; a deposit stored by an earlier release
    // listed it here too).
    d.clear_postings();
    // Booking's close time (the contract's settle_time), not billing's clock.
    if (lease.has_settlement() && lease.settlement().has_close_time()) {
      *d.mutable_settle_time() = lease.settlement().close_time();
    }
    if (lease.has_return_record()) {
      *d.mutable_assessed_damage() = lease.return_record().damage_amount();
      d.set_damage_note(lease.return_record().damage_notes());
    }
    out.deposit = std::move(d);
    out.deposit_version = doc->version;
    return out;
  }
  const bk::ServiceOrder* order = nullptr;
  if (e.has_service_order_report_accepted()) order = &e.service_order_report_accepted().service_order();
  if (order != nullptr) {
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, Inventory(batch).GetInstrument(order->instrument()));
    v1::ChargeUnit unit = v1::UNIT_SAMPLE;
    for (const auto& entry : instrument.service_catalogue()) {
      if (entry.entry_id() == order->service_entry_id()) unit = ChargeUnitOf(entry.unit());
    }
    LS_ASSIGN_OR_RETURN(auto charges, PriceServiceOrder(*order, unit, zone_));
    // The price is the quote's; the VAT rate is the rate card's for the
    // catalogue entry (the line in force at the quote for this client), so
    // the service's invoice lines show it. No line (NOT_FOUND): no rate.
    std::optional<int32_t> tax_rate_bps;
    {
      inv::LookupRateRequest lookup;
      lookup.set_instrument(order->instrument());
      lookup.set_mode(labshare::type::v1::TECHNICAL_SERVICE);
      lookup.set_payer_organization(order->client_organization());
      // The client's class and tier when ordered (unset on old events).
      lookup.set_payer_class(order->payer_class());
      if (order->payer_class() != labshare::type::v1::PAYER_CLASS_UNSPECIFIED) {
        lookup.set_payer_tier(order->payer_tier());
      }
      lookup.set_service_entry_id(order->service_entry_id());
      *lookup.mutable_time() = order->quote().has_quote_time() ? order->quote().quote_time() : ToProto(clock_->Now());
      auto line = Inventory(batch).LookupRate(lookup);
      if (line.ok() && line->rate().has_tax_rate_bps()) tax_rate_bps = line->rate().tax_rate_bps();
      if (!line.ok() && line.status().code() != absl::StatusCode::kNotFound &&
          line.status().code() != absl::StatusCode::kInvalidArgument) {
        return line.status();  // inventory unreachable: the event is retried
      }
    }
    for (auto& c : charges) {
      c.set_instrument_category(instrument.category());
      if (tax_rate_bps) c.mutable_rate()->set_tax_rate_bps(*tax_rate_bps);
      out.charges.push_back(std::move(c));
    }
    return out;
  }
  if (e.has_service_order_cancelled() && e.service_order_cancelled().late_cancellation()) {
    const bk::ServiceOrder& o = e.service_order_cancelled().service_order();
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, Inventory(batch).GetInstrument(o.instrument()));
    // The fee booking pinned on the order when it was cancelled late; an
    // order cancelled before booking pinned it: the TECHNICAL_SERVICE rule
    // now (0 when the mode was withdrawn).
    int32_t bps = 0;
    if (o.has_late_cancel_fee_bps()) {
      bps = o.late_cancel_fee_bps();
    } else {
      for (const auto& m : instrument.modes()) {
        if (m.mode() == labshare::type::v1::TECHNICAL_SERVICE) bps = m.slot_rules().late_cancel_fee_bps();
      }
    }
    if (bps == 0 || !o.has_quote()) return out;
    LS_ASSIGN_OR_RETURN(std::optional<v1::Charge> c, PriceServiceOrderCancellation(o, bps));
    if (!c) return out;  // the fee rounds to 0 minor units: nothing to charge
    c->set_instrument_category(instrument.category());
    out.charges.push_back(*std::move(c));
  }
  return out;
}

absl::StatusOr<std::vector<v1::SubsidyPool>> BillingManager::LoadPools() const {
  return LoadPools(nullptr, nullptr);
}

absl::StatusOr<std::vector<v1::SubsidyPool>> BillingManager::LoadPools(std::vector<int64_t>* versions,
                                                                       int64_t* generation) const {
  if (generation != nullptr) {
    LS_ASSIGN_OR_RETURN(auto g, store_->Counters(keys::PoolGeneration(), {"g"}));
    *generation = g[0];
  }
  LS_ASSIGN_OR_RETURN(auto members, store_->docs().IndexRange(keys::Index("pool"), "", 100000));
  std::vector<std::string> k;
  for (const auto& m : members) k.push_back(keys::Doc("pool", m.substr(m.find('|') + 1)));
  LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(k));
  std::vector<v1::SubsidyPool> out;
  for (const auto& d : docs) {
    if (!d) continue;
    LS_ASSIGN_OR_RETURN(v1::SubsidyPool pool, Parse<v1::SubsidyPool>(d->data));
    out.push_back(std::move(pool));
    if (versions != nullptr) versions->push_back(d->version);
  }
  return out;
}

absl::Time BillingManager::StampNow() const {
  const absl::Time now = clock_->Now();
  const absl::Time floor = store_->ClockFloor();
  return now >= floor ? now : floor + absl::Nanoseconds(1);
}

void BillingManager::AddPosting(LedgerStep& step, const v1::Posting& posting, absl::Time now) {
  const std::string id = IdOf(posting.name());
  step.stamp = now;
  step.puts.push_back({keys::Doc("posting", id), posting.SerializeAsString(), 1});
  step.version_checks.push_back({keys::Doc("posting", id), 0});
  step.index_adds.push_back({keys::Index("posting"), keys::IndexMember(now, id)});
  std::set<std::string> pools_changed;
  for (const auto& e : posting.entries()) {
    step.incrs.push_back({keys::Balances(), BalanceField(e), Signed(e)});
    step.appends.push_back({keys::Account(e.account()), absl::StrCat(Ms(now), "|", id, "|", e.counterparty(), "|",
                                                                     EntryCurrency(e), "|", Signed(e))});
    // A subsidy, its reversal or an adjustment changes the pool (its
    // balance) and so its etag; a top-up moves the pool document itself.
    auto ref = ParseAccountName(e.account());
    if (posting.kind() != v1::POOL_TOP_UP && ref.ok() && ref->kind == v1::POOL_FUNDS &&
        pools_changed.insert(IdOf(ref->owner)).second) {
      step.incrs.push_back({keys::PoolChanges(), IdOf(ref->owner), 1});
    }
  }
}

absl::Status BillingManager::PostCharge(LedgerStep& step, v1::Charge& charge, const std::string& event_id,
                                        absl::Time now, const std::string& request_id,
                                        const std::string& trace_id, IngestBatch* batch) {
  // Lease rent is keyed by lease and period: charged once whether at the
  // period's end or on return.
  const std::string basis = charge.fee_kind() == v1::LEASE_PERIOD ? charge.lease() : event_id;
  const std::string id = "c" + Hex(Fnv(basis + "|" + charge.source_key()));
  charge.set_name("charges/" + id);
  charge.set_state(v1::Charge::POSTED);
  charge.set_source_event_id(event_id);
  charge.set_source_event_type("labshare.booking.v1.BookingEvent");
  // Charge.description: "Free text for invoices" (its CHARGE posting and
  // invoice lines carry it), in the words invoice documents print.
  if (charge.description().empty()) {
    charge.set_description(ChargeText(charge.fee_kind(), charge.mode(), charge.instrument(),
                                      charge.has_service_interval() ? &charge.service_interval() : nullptr, zone_));
  }
  *charge.mutable_create_time() = ToProto(now);
  *charge.mutable_update_time() = ToProto(now);

  // Subsidies, from the pools' balances and caps as they are now; the step
  // checks they have not moved.
  std::vector<SubsidyBeneficiary> beneficiaries = BeneficiariesOf(charge);
  std::vector<v1::SubsidyLine> lines;
  // Each pool's balance and each (pool, beneficiary) cap use before this
  // charge's lines, for SubsidyApplied's figures "after it".
  std::map<std::string, int64_t> balance_before;
  std::map<std::pair<std::string, std::string>, int64_t> cap_used_before;
  if (!beneficiaries.empty() && FeeKindSubsidisable(charge.fee_kind())) {
    for (auto& b : beneficiaries) {
      LS_ASSIGN_OR_RETURN(inv::Organization org, Inventory(batch).GetOrganization(b.organization));
      b.size_class = static_cast<v1::SizeClass>(org.size_class());
    }
    // The pools' terms as read (once per batch): the step checks that no
    // pool was created or updated since (the generation) and that each
    // pool document is the version read; else the step is stale and the
    // event is priced again from the pools as they are.
    std::vector<v1::SubsidyPool> pools;
    std::vector<int64_t> versions;
    int64_t generation = 0;
    if (batch != nullptr && batch->pools) {
      pools = *batch->pools;
      versions = batch->pool_versions;
      generation = batch->pool_generation;
    } else {
      LS_ASSIGN_OR_RETURN(pools, LoadPools(&versions, &generation));
      if (batch != nullptr) {
        batch->pools = pools;
        batch->pool_versions = versions;
        batch->pool_generation = generation;
      }
    }
    step.field_checks.push_back({keys::PoolGeneration(), "g", std::to_string(generation)});
    for (size_t i = 0; i < pools.size(); ++i) {
      step.version_checks.push_back({keys::Doc("pool", IdOf(pools[i].name())), versions[i]});
    }
    // The step's own increments so far: an event's earlier charges (a
    // service order prices up to three) draw on the same pool balance and
    // caps, so this charge sees them. The checks hold the values before the
    // step (the script checks before it writes).
    auto own = [&step](const std::string& key, const std::string& field) {
      int64_t sum = 0;
      for (const auto& inc : step.incrs) {
        if (inc.key == key && inc.field == field) sum += inc.delta;
      }
      return sum;
    };
    std::vector<PoolFunds> funds;
    for (auto& pool : pools) {
      PoolFunds f;
      const std::string funds_field = PoolFundsField(pool);
      LS_ASSIGN_OR_RETURN(int64_t bal, Counter(batch, keys::Balances(), funds_field));
      f.balance = -(bal + own(keys::Balances(), funds_field));
      step.field_checks.push_back({keys::Balances(), funds_field, std::to_string(bal)});
      if (pool.has_cap_per_organization() && pool.cap_period_kind() != v1::PERIOD_KIND_UNSPECIFIED) {
        LS_ASSIGN_OR_RETURN(TimeRange cap, CapPeriodRange(pool.cap_period_kind(), now, zone_));
        // A change of kind is a change of terms (PoolGeneration, checked above).
        LS_ASSIGN_OR_RETURN(int64_t legacy_kind, Counter(batch, keys::CapLegacyKinds(), IdOf(pool.name())));
        const std::string cap_key = keys::Cap(IdOf(pool.name()));
        for (const auto& b : beneficiaries) {
          const std::string field = CapField(b.organization, cap.start, cap.end);
          LS_ASSIGN_OR_RETURN(int64_t used, Counter(batch, cap_key, field));
          f.cap_used[b.organization] = used + own(cap_key, field);
          step.field_checks.push_back({cap_key, field, std::to_string(used)});
          if (ReadsLegacyCap(legacy_kind, pool.cap_period_kind())) {
            const std::string legacy = LegacyCapField(b.organization, cap.start);
            LS_ASSIGN_OR_RETURN(int64_t before, Counter(batch, cap_key, legacy));
            f.cap_used[b.organization] += before;
            step.field_checks.push_back({cap_key, legacy, std::to_string(before)});
          }
        }
      }
      f.pool = std::move(pool);
      funds.push_back(std::move(f));
    }
    SubsidyCharge sc;
    sc.owner_organization = charge.owner_organization();
    sc.mode = charge.mode();
    sc.instrument_category = charge.instrument_category();
    sc.fee_kind = charge.fee_kind();
    sc.currency_code = charge.amount().currency_code();
    sc.posting_time = now;
    LS_ASSIGN_OR_RETURN(lines, ApplySubsidies(sc, beneficiaries, funds, zone_));
    for (const auto& f : funds) {
      balance_before[f.pool.name()] = f.balance;
      for (const auto& [org, used] : f.cap_used) cap_used_before[{f.pool.name(), org}] = used;
    }
  }
  for (auto& l : lines) *charge.add_subsidy_lines() = l;
  LS_RETURN_IF_ERROR(FillChargeTotals(charge));

  LS_ASSIGN_OR_RETURN(auto entries, ChargePostingEntries(charge));
  std::optional<v1::Posting> charge_posting;
  if (!entries.empty()) {
    v1::Posting posting;
    posting.set_name("postings/" + id);
    posting.set_kind(v1::CHARGE);
    posting.set_currency_code(charge.amount().currency_code());
    posting.set_description(charge.description());
    posting.set_charge(charge.name());
    posting.set_source_event_id(event_id);
    posting.set_actor("services/billing");
    *posting.mutable_create_time() = ToProto(now);
    for (auto& e : entries) *posting.add_entries() = std::move(e);
    LS_RETURN_IF_ERROR(CheckBalanced({posting.entries().begin(), posting.entries().end()}));
    charge.set_posting(posting.name());
    AddPosting(step, posting, now);
    charge_posting = std::move(posting);
  }
  const size_t charge_event_at = step.events.size();
  for (int i = 0; i < charge.subsidy_lines_size(); ++i) {
    v1::SubsidyLine& line = *charge.mutable_subsidy_lines(i);
    LS_ASSIGN_OR_RETURN(auto sub, SubsidyLineEntries(line, charge));
    v1::Posting posting;
    posting.set_name(absl::StrCat("postings/", id, "-s", i + 1));
    posting.set_kind(v1::SUBSIDY);
    posting.set_currency_code(charge.amount().currency_code());
    posting.set_description("subsidy of " + charge.name());
    posting.set_charge(charge.name());
    posting.set_subsidy_pool(line.subsidy_pool());
    posting.set_source_event_id(event_id);
    posting.set_actor("services/billing");
    *posting.mutable_create_time() = ToProto(now);
    for (auto& e : sub) *posting.add_entries() = std::move(e);
    LS_RETURN_IF_ERROR(CheckBalanced({posting.entries().begin(), posting.entries().end()}));
    line.set_posting(posting.name());
    charge.add_subsidy_postings(posting.name());
    AddPosting(step, posting, now);
    if (line.has_cap_period()) {
      step.incrs.push_back({keys::Cap(IdOf(line.subsidy_pool())),
                            CapField(line.beneficiary_organization(), FromProto(line.cap_period().start_time()),
                                     FromProto(line.cap_period().end_time())),
                            line.amount().amount_minor()});
    }
    v1::BillingEvent ev = ServiceEvent(now, request_id, trace_id);
    auto* applied = ev.mutable_subsidy_applied();
    applied->set_charge(charge.name());
    *applied->mutable_line() = line;
    applied->set_owner_organization(charge.owner_organization());
    applied->set_instrument(charge.instrument());
    applied->set_mode(charge.mode());
    applied->set_fee_kind(charge.fee_kind());
    *applied->mutable_posting() = std::move(posting);  // not used after: moved, not copied
    // The figures after this line (and the charge's lines before it).
    const std::string currency = charge.amount().currency_code();
    balance_before[line.subsidy_pool()] -= line.amount().amount_minor();
    *applied->mutable_pool_balance() = MakeMoney(currency, balance_before[line.subsidy_pool()]);
    if (line.has_cap_period()) {
      int64_t& used = cap_used_before[{line.subsidy_pool(), line.beneficiary_organization()}];
      used += line.amount().amount_minor();
      *applied->mutable_allowance_used() = MakeMoney(currency, used);
    }
    step.events.push_back(ev.SerializeAsString());
  }
  step.version_checks.push_back({keys::Doc("charge", id), 0});
  step.puts.push_back({keys::Doc("charge", id), charge.SerializeAsString(), 1});
  step.index_adds.push_back({keys::Index("charge"), keys::IndexMember(now, id)});
  step.stamp = now;
  // ChargePosted first, carrying the charge as stored (links included).
  v1::BillingEvent ev = ServiceEvent(now, request_id, trace_id);
  auto* posted = ev.mutable_charge_posted();
  *posted->mutable_income() = IncomeOf(charge, now);
  if (charge_posting) *posted->mutable_posting() = std::move(*charge_posting);
  // The charge is lent to the event while it is serialised (swapped in and
  // back out) rather than copied: the bytes are the same, the copy and its
  // destruction were a tenth of ingesting a charge.
  posted->mutable_charge()->Swap(&charge);
  std::string posted_bytes = ev.SerializeAsString();
  posted->mutable_charge()->Swap(&charge);
  step.events.insert(step.events.begin() + static_cast<std::ptrdiff_t>(charge_event_at), std::move(posted_bytes));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<LedgerStep>> BillingManager::BookingStep(const StreamEvent& event,
                                                                      const bk::BookingEvent& e,
                                                                      IngestBatch* batch) {
  const std::string& event_id = e.header().event_id();
  // The billing events this one causes carry its request_id and trace id.
  const std::string& request_id = e.header().request_id();
  const std::string& trace_id = e.header().trace_id();
  LS_ASSIGN_OR_RETURN(Priced priced, Price(e, batch));
  if (priced.charges.empty() && priced.postings.empty() && !priced.deposit && !priced.lease_out &&
      priced.lease_done.empty()) {
    return std::optional<LedgerStep>();
  }
  const absl::Time now = StampNow();
  LedgerStep step;
  step.applied_event_id = event_id;
  step.applied_stream_id = event.stream_id;
  // A handover applied after its lease's return (its event retried after
  // the return's): the rent the return stopped stays stopped. Checked in
  // the step: a return applied meanwhile makes it stale, built again.
  if (e.has_lease_handed_over() && priced.lease_out) {
    const std::string out_key = keys::Doc("leases", "out"), id = IdOf(priced.lease_out->name());
    LS_ASSIGN_OR_RETURN(RedisValue was, store_->pool()->Command({"HGET", out_key, id}));
    if (was.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read " + out_key);
    step.field_checks.push_back({out_key, id, was.is_nil() ? "0" : was.str});
    if (!was.is_nil() && was.str.empty()) priced.lease_out.reset();
  }
  for (auto& c : priced.charges) LS_RETURN_IF_ERROR(PostCharge(step, c, event_id, now, request_id, trace_id, batch));
  // Rent charged before the return, for days after it: corrected now.
  if (e.has_lease_returned()) {
    LS_RETURN_IF_ERROR(CorrectChargedRent(step, e.lease_returned().lease(), now, request_id, trace_id));
  }
  for (size_t i = 0; i < priced.postings.size(); ++i) {
    v1::Posting& p = priced.postings[i];
    p.set_name(absl::StrCat("postings/p", Hex(Fnv(event_id + "|posting")), "-", i + 1));
    p.set_currency_code(EntryCurrency(p.entries(0)));
    p.set_source_event_id(event_id);
    p.set_actor("services/billing");
    *p.mutable_create_time() = ToProto(now);
    LS_RETURN_IF_ERROR(CheckBalanced({p.entries().begin(), p.entries().end()}));
    AddPosting(step, p, now);
  }
  if (priced.deposit) {
    v1::Deposit& d = *priced.deposit;
    for (const auto& c : priced.charges) {
      if (c.fee_kind() == v1::DEPOSIT) {
        d.set_hold_charge(c.name());
        if (!d.has_hold_time()) *d.mutable_hold_time() = ToProto(now);  // an event without the handover time
      }
      if (c.fee_kind() == v1::DAMAGE) d.set_excess_damage_charge(c.name());
    }
    for (const auto& p : priced.postings) d.add_postings(p.name());
    if (priced.deposit_version > 0 && !d.has_settle_time()) *d.mutable_settle_time() = ToProto(now);
    if (priced.deposit_version == 0) *d.mutable_create_time() = ToProto(now);
    *d.mutable_update_time() = ToProto(now);
    const std::string key = keys::Doc("deposit", IdOf(d.name()));
    step.version_checks.push_back({key, priced.deposit_version});
    step.puts.push_back({key, d.SerializeAsString(), priced.deposit_version + 1});
    // Listed once, by create time: settling does not index it again.
    if (priced.deposit_version == 0) {
      step.index_adds.push_back({keys::Index("deposit"), keys::IndexMember(now, IdOf(d.name()))});
      step.stamp = now;
    }
    // DepositChanged, after the ChargePosted of its charge (billing_events.proto).
    v1::BillingEvent ev = ServiceEvent(now, request_id, trace_id);
    auto* changed = ev.mutable_deposit_changed();
    const bool held = priced.deposit_version == 0;
    changed->set_kind(held ? v1::DepositChanged::HELD : v1::DepositChanged::SETTLED);
    *changed->mutable_deposit() = d;
    for (const auto& c : priced.charges) {
      if (c.fee_kind() == (held ? v1::DEPOSIT : v1::DAMAGE)) *changed->mutable_charge() = c;
    }
    if (!held) {
      for (const auto& p : priced.postings) *changed->add_postings() = p;
      // The owner's compensation from the deposit applied, keyed as the
      // income report keys a DEPOSIT_APPLICATION (its DEPOSIT charge).
      v1::IncomeFigures* income = changed->mutable_income();
      const std::string currency = d.amount().currency_code();
      income->set_owner_organization(d.owner_organization());
      income->set_instrument(d.instrument());
      income->set_mode(labshare::type::v1::LEASE);
      income->set_fee_kind(v1::DEPOSIT);
      income->set_charge(d.hold_charge());
      *income->mutable_effective_time() = ToProto(now);
      income->set_currency_code(currency);
      for (auto* m : {income->mutable_service_income(), income->mutable_subsidised(), income->mutable_in_kind(),
                      income->mutable_internal_use()}) {
        *m = MakeMoney(currency, 0);
      }
      *income->mutable_compensation() = MakeMoney(currency, d.applied_amount().amount_minor());
    }
    step.events.push_back(ev.SerializeAsString());
  }
  // Leases out: rent is charged at each period's end (ChargeEndedLeasePeriods).
  if (priced.lease_out) {
    step.hash_sets.push_back({keys::Doc("leases", "out"), IdOf(priced.lease_out->name()),
                              priced.lease_out->SerializeAsString()});
  }
  if (!priced.lease_done.empty()) step.hash_sets.push_back({keys::Doc("leases", "out"), IdOf(priced.lease_done), ""});
  return std::optional<LedgerStep>(std::move(step));
}

absl::Status BillingManager::ApplyBookingEvent(const StreamEvent& event) {
  if (event.type != "labshare.booking.v1.BookingEvent") return absl::OkStatus();
  bk::BookingEvent e;
  if (!e.ParseFromString(event.payload)) {
    // Never readable: parked (common/events.h), not retried for ever.
    return PermanentEventFailure(
        MakeError(absl::StatusCode::kDataLoss, "CORRUPT_EVENT", "unreadable booking event " + event.stream_id));
  }
  const std::string& event_id = e.header().event_id();
  if (event_id.empty()) return absl::OkStatus();
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(bool done, store_->EventApplied(event_id));
    if (done) return absl::OkStatus();
    LS_ASSIGN_OR_RETURN(std::optional<LedgerStep> step, BookingStep(event, e, nullptr));
    if (!step) return absl::OkStatus();
    LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(*step));
    if (result.kind != StepResult::Kind::kStale) return absl::OkStatus();
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "subsidy pools kept changing while posting " + event_id + "; will retry");
}

void BillingManager::Flush(IngestBatch& batch, const std::vector<StreamEvent>& events,
                           std::vector<absl::Status>& statuses) {
  if (batch.steps.empty()) return;
  auto results = store_->ApplyMany(batch.steps);
  size_t done = 0;
  if (!results.ok()) {
    const absl::StatusCode code = results.status().code();
    if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
        code == absl::StatusCode::kCancelled) {
      // Transport: unknown whether the call ran. Each event is retried
      // later, its marker keeps it applied once.
      for (size_t i : batch.step_events) statuses[i] = results.status();
      done = batch.steps.size();
      batch.ForgetLedger();
    } else {
      // Redis answered with an error (e.g. a script error): the chunk goes
      // per event, so one event's failure does not hold back the others
      // round after round (the steps before a failing one may have been
      // written: their markers make them applied).
      LogWarning("batched ledger steps failed; applying their events one by one",
                 {{"steps", std::to_string(batch.steps.size())}, {"error", results.status().ToString()}});
    }
  } else {
    for (; done < results->size(); ++done) {
      const auto& r = (*results)[done];
      if (!r.ok() || (r->kind != StepResult::Kind::kApplied && r->kind != StepResult::Kind::kAlreadyApplied)) break;
    }
  }
  // The step that did not apply and every one after it: per event, in order.
  if (done < batch.steps.size()) batch.ForgetLedger();
  for (size_t s = done; s < batch.steps.size(); ++s) {
    const size_t i = batch.step_events[s];
    statuses[i] = ApplyBookingEvent(events[i]);
  }
  batch.steps.clear();
  batch.step_events.clear();
  batch.unapplied.clear();
}

namespace {

// The lease a lease event billing applies is about; "" for other events.
std::string LeaseOfEvent(const bk::BookingEvent& e) {
  if (e.has_lease_handed_over()) return e.lease_handed_over().lease().name();
  if (e.has_lease_returned()) return e.lease_returned().lease().name();
  if (e.has_lease_closed()) return e.lease_closed().lease().name();
  return "";
}

}  // namespace

std::vector<absl::Status> BillingManager::ApplyBookingEvents(const std::vector<StreamEvent>& events) {
  constexpr size_t kStepsPerCall = 64;
  std::vector<absl::Status> statuses(events.size());
  std::vector<bk::BookingEvent> parsed(events.size());
  std::vector<size_t> todo;
  std::vector<std::string> hmget = {"HMGET", keys::Applied()};
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].type != "labshare.booking.v1.BookingEvent") continue;
    if (!parsed[i].ParseFromString(events[i].payload)) {
      // Never readable: parked (common/events.h), not retried for ever.
      statuses[i] = PermanentEventFailure(MakeError(absl::StatusCode::kDataLoss, "CORRUPT_EVENT",
                                                    "unreadable booking event " + events[i].stream_id));
      continue;
    }
    if (parsed[i].header().event_id().empty()) continue;
    todo.push_back(i);
    hmget.push_back(parsed[i].header().event_id());
  }
  if (todo.empty()) return statuses;
  // A lease's events in one batch are applied in stream order: once one is
  // not applied, the later ones of that lease in the batch are left pending
  // too. Each pending entry then comes back on its own backoff, so across
  // batches the order is not guaranteed; the steps cope with either (a
  // handover applied after its return holds the deposit without restarting
  // the rent; a close before its handover waits for the deposit hold).
  std::set<std::string> held;  // leases with an event not applied in this batch
  auto lease_step = [&](size_t i) {
    const std::string lease = LeaseOfEvent(parsed[i]);
    if (held.count(lease) != 0) {
      statuses[i] = MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                              "an earlier event of " + lease + " is not applied yet; " +
                                  parsed[i].header().event_id() + " waits for it");
      return;
    }
    statuses[i] = ApplyBookingEvent(events[i]);
    if (!statuses[i].ok()) held.insert(lease);
  };
  // Which are applied already (a redelivery): one round trip for the batch.
  auto applied = store_->pool()->Command(hmget);
  if (!applied.ok() || applied->type != RedisValue::Type::kArray || applied->elements.size() != todo.size()) {
    for (size_t i : todo) {
      if (LeaseOfEvent(parsed[i]).empty()) {
        statuses[i] = ApplyBookingEvent(events[i]);
      } else {
        lease_step(i);
      }
    }
    return statuses;
  }
  IngestBatch batch(inventory_);
  for (size_t t = 0; t < todo.size(); ++t) {
    if (!applied->elements[t].is_nil()) continue;
    const size_t i = todo[t];
    const bk::BookingEvent& e = parsed[i];
    if (e.has_lease_handed_over() || e.has_lease_returned() || e.has_lease_closed()) {
      // Reads what the steps before it write: those first, then this one alone.
      Flush(batch, events, statuses);
      batch.ForgetLedger();
      lease_step(i);
      continue;
    }
    auto step = BookingStep(events[i], e, &batch);
    if (!step.ok()) {
      statuses[i] = step.status();
      continue;
    }
    if (!*step) continue;
    for (const auto& inc : (*step)->incrs) {
      const std::string id = absl::StrCat(inc.key, "\n", inc.field);
      batch.unapplied[id] += inc.delta;
      auto it = batch.counters.find(id);
      if (it != batch.counters.end()) it->second += inc.delta;
    }
    batch.steps.push_back(*std::move(*step));
    batch.step_events.push_back(i);
    if (batch.steps.size() >= kStepsPerCall) Flush(batch, events, statuses);
  }
  Flush(batch, events, statuses);
  return statuses;
}

absl::StatusOr<std::vector<v1::Charge>> BillingManager::UnchargedLeasePeriods(const bk::Lease& lease, absl::Time until) {
  LS_ASSIGN_OR_RETURN(auto periods, LeasePeriods(lease, until, zone_));
  std::vector<v1::Charge> out;
  for (const auto& period : periods) {
    LS_ASSIGN_OR_RETURN(v1::Charge c, PriceLeasePeriod(lease, period, zone_));
    LS_ASSIGN_OR_RETURN(auto existing, store_->docs().Get(keys::Doc("charge", "c" + Hex(Fnv(c.lease() + "|" + c.source_key())))));
    if (!existing) out.push_back(std::move(c));
  }
  return out;
}

namespace {

// Adds `f`'s figures to `into` (the same owner), share by payer.
void AddIncome(v1::IncomeFigures& into, const v1::IncomeFigures& f) {
  auto add = [](labshare::type::v1::Money* to, const labshare::type::v1::Money& m) {
    to->set_amount_minor(to->amount_minor() + m.amount_minor());
  };
  add(into.mutable_service_income(), f.service_income());
  add(into.mutable_subsidised(), f.subsidised());
  add(into.mutable_in_kind(), f.in_kind());
  add(into.mutable_internal_use(), f.internal_use());
  add(into.mutable_compensation(), f.compensation());
  for (const auto& s : f.shares()) {
    v1::IncomeShare* same = nullptr;
    for (auto& t : *into.mutable_shares()) {
      if (t.payer_organization() == s.payer_organization()) same = &t;
    }
    if (same == nullptr) {
      *into.add_shares() = s;
      continue;
    }
    add(same->mutable_service_income(), s.service_income());
    add(same->mutable_subsidised(), s.subsidised());
  }
}

}  // namespace

absl::Status BillingManager::CorrectChargedRent(LedgerStep& step, const bk::Lease& returned, absl::Time now,
                                                const std::string& request_id, const std::string& trace_id) {
  if (!returned.has_return_record() || !returned.return_record().has_return_time()) return absl::OkStatus();
  const absl::Time return_time = FromProto(returned.return_record().return_time());
  // The periods the lease as at handover (out, no return) may have been
  // charged for at their end: up to the later of the return and now, with
  // a month to spare for a replica whose clock is ahead.
  bk::Lease open = returned;
  open.clear_return_record();
  LS_ASSIGN_OR_RETURN(auto periods, LeasePeriods(open, std::max(now, return_time) + absl::Hours(24 * 31), zone_));
  LS_ASSIGN_OR_RETURN(auto kept, LeasePeriods(returned, absl::InfiniteFuture(), zone_));
  const std::set<std::string> out_in(kept.begin(), kept.end());
  for (const auto& period : periods) {
    const std::string ckey =
        keys::Doc("charge", "c" + Hex(Fnv(returned.name() + "|" + absl::StrCat("lease-period/", period))));
    LS_ASSIGN_OR_RETURN(auto cdoc, store_->docs().Get(ckey));
    if (!cdoc) continue;  // not charged yet: charged with the return applied (Price)
    LS_ASSIGN_OR_RETURN(v1::Charge charge, Parse<v1::Charge>(cdoc->data));
    int64_t fresh = 0;  // the rent of the period with the return applied
    if (out_in.count(period) != 0) {
      LS_ASSIGN_OR_RETURN(v1::Charge repriced, PriceLeasePeriod(returned, period, zone_));
      fresh = repriced.amount().amount_minor();
    }
    const int64_t was = charge.amount().amount_minor();
    // A charge at a period's end covers the period up to its end: a return
    // only takes days off it.
    if (fresh >= was) continue;
    if (charge.posting().empty()) continue;  // nothing posted: nothing to correct
    // The charge's postings as they stand: its CHARGE posting and each of
    // its SUBSIDY postings, each checked in the step (a correction posted
    // meanwhile makes the step stale: built again).
    struct Read {
      std::string key;
      int64_t version = 0;
      v1::Posting posting;
    };
    auto read = [&](const std::string& name) -> absl::StatusOr<std::optional<Read>> {
      const std::string key = keys::Doc("posting", IdOf(name));
      LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(key));
      if (!doc) return std::optional<Read>();
      LS_ASSIGN_OR_RETURN(v1::Posting posting, Parse<v1::Posting>(doc->data));
      return std::optional<Read>(Read{key, doc->version, std::move(posting)});
    };
    LS_ASSIGN_OR_RETURN(std::optional<Read> original, read(charge.posting()));
    if (!original) continue;
    std::map<std::string, Read> subsidies;  // by posting name
    bool corrected = charge.state() != v1::Charge::POSTED || charge.corrections_size() > 0 ||
                     original->posting.corrected_by_size() > 0;
    for (const auto& line : charge.subsidy_lines()) {
      if (line.posting().empty() || subsidies.count(line.posting()) != 0) continue;
      LS_ASSIGN_OR_RETURN(std::optional<Read> sub, read(line.posting()));
      if (!sub) continue;
      if (sub->posting.corrected_by_size() > 0) corrected = true;
      subsidies.emplace(line.posting(), *std::move(sub));
    }
    if (corrected) {
      // An administrator reversed or corrected the charge, or one of its
      // SUBSIDY postings, already (REVERSE or ADJUST, whatever followed it:
      // a reversal reversed in turn too): a correction by the difference
      // would credit the payer twice, or leave a subsidy standing on a
      // charge reversed. Left as it stands, for the administrator to settle.
      LogWarning("rent charge corrected already; the return's correction is left to an administrator",
                 {{"charge", charge.name()},
                  {"lease", returned.name()},
                  {"period", period},
                  {"state", v1::Charge::State_Name(charge.state())}});
      continue;
    }
    const bool whole = fresh == 0;
    const std::string reason =
        whole ? absl::StrCat(returned.name(), " was returned before ", period, ": no rent for ", period)
              : absl::StrCat(returned.name(), " was returned during ", period, ": rent of ", period,
                             " re-priced to the return (", was, " -> ", fresh, ")");
    auto correction = [&](const v1::Posting& of, int64_t version, std::vector<v1::Entry> entries,
                          const std::string& description) -> absl::StatusOr<v1::Posting> {
      v1::Posting c;
      c.set_name(absl::StrCat("postings/", IdOf(of.name()), "-c", version, "-1"));
      c.set_kind(v1::CORRECTION);
      c.set_currency_code(of.currency_code());
      c.set_corrects(of.name());
      c.set_charge(of.charge());
      c.set_subsidy_pool(of.subsidy_pool());
      c.set_reason(reason);
      c.set_description(description);
      c.set_actor("services/billing");
      *c.mutable_create_time() = ToProto(now);
      for (auto& e : entries) *c.add_entries() = std::move(e);
      LS_RETURN_IF_ERROR(CheckBalanced({c.entries().begin(), c.entries().end()}));
      return c;
    };
    // The CHARGE posting, by the difference (in full: its mirror).
    std::vector<v1::Posting> of_charge, of_subsidies;
    {
      v1::Charge cut = charge;
      cut.clear_subsidy_lines();
      cut.mutable_amount()->set_amount_minor(was - fresh);
      LS_ASSIGN_OR_RETURN(auto entries, ChargePostingEntries(cut));
      LS_ASSIGN_OR_RETURN(v1::Posting c, correction(original->posting, original->version, ReverseEntries(entries),
                                                    absl::StrCat(whole ? "reversal of " : "correction of ",
                                                                 original->posting.name(), ": ", reason)));
      original->posting.add_corrected_by(c.name());
      step.version_checks.push_back({original->key, original->version});
      step.puts.push_back({original->key, original->posting.SerializeAsString(), original->version + 1});
      of_charge.push_back(std::move(c));
    }
    for (const auto& [name, sub] : subsidies) step.version_checks.push_back({sub.key, sub.version});
    // Each SUBSIDY posting down to what its pool pays of the new amount (its
    // percentage, never more than it paid, nor more than earlier pools
    // left); its pool balance and cap usage get the difference back.
    int64_t covered = 0;
    for (const auto& line : charge.subsidy_lines()) {
      const int64_t paid = line.amount().amount_minor();
      LS_ASSIGN_OR_RETURN(int64_t full, MulDivFloor(fresh, line.percentage_bps(), kWholeBps));
      const int64_t keep = std::max<int64_t>(0, std::min({paid, full, fresh - covered}));
      covered += keep;
      if (keep == paid || line.posting().empty()) continue;
      auto found = subsidies.find(line.posting());
      if (found == subsidies.end()) continue;
      Read& read_sub = found->second;
      v1::Posting& sub = read_sub.posting;
      v1::SubsidyLine less = line;
      less.mutable_amount()->set_amount_minor(paid - keep);
      LS_ASSIGN_OR_RETURN(auto entries, SubsidyLineEntries(less, charge));
      LS_ASSIGN_OR_RETURN(
          v1::Posting c,
          correction(sub, read_sub.version, ReverseEntries(entries),
                     whole ? absl::StrCat("reversal of ", sub.name(), " with its charge")
                           : absl::StrCat("correction of ", sub.name(), ": ", reason)));
      c.set_subsidised_delta_sent(true);  // moves the payer's subsidised part (IncomeDeltasOf)
      if (line.has_cap_period()) {
        step.incrs.push_back({keys::Cap(IdOf(line.subsidy_pool())),
                              CapField(line.beneficiary_organization(), FromProto(line.cap_period().start_time()),
                                       FromProto(line.cap_period().end_time())),
                              -(paid - keep)});
      }
      sub.add_corrected_by(c.name());
      step.puts.push_back({read_sub.key, sub.SerializeAsString(), read_sub.version + 1});
      of_subsidies.push_back(std::move(c));
    }
    std::vector<v1::Posting> all = of_charge;
    all.insert(all.end(), of_subsidies.begin(), of_subsidies.end());
    // The pools' balances after these corrections and what the step holds
    // before them (rent charged on return in the same step, an earlier
    // period's corrections).
    LS_ASSIGN_OR_RETURN(auto pool_balances, PoolBalancesAfter(step, all));
    for (auto& b : pool_balances) {
      std::string field;
      for (const auto& c : all) {
        for (const auto& e : c.entries()) {
          auto ref = ParseAccountName(e.account());
          if (ref.ok() && ref->kind == v1::POOL_FUNDS && ref->owner == b.subsidy_pool()) field = BalanceField(e);
        }
      }
      int64_t earlier = 0;
      for (const auto& inc : step.incrs) {
        if (inc.key == keys::Balances() && inc.field == field) earlier += inc.delta;
      }
      b.mutable_balance()->set_amount_minor(b.balance().amount_minor() - earlier);
    }
    for (const auto& c : all) AddPosting(step, c, now);
    charge.set_state(whole ? v1::Charge::REVERSED : v1::Charge::ADJUSTED);
    for (const auto& c : all) charge.add_corrections(c.name());
    *charge.mutable_update_time() = ToProto(now);
    step.version_checks.push_back({ckey, cdoc->version});
    step.puts.push_back({ckey, charge.SerializeAsString(), cdoc->version + 1});
    v1::BillingEvent ev = ServiceEvent(now, request_id, trace_id);
    auto* posted = ev.mutable_correction_posted();
    *posted->mutable_correction() = of_charge[0];
    for (const auto& c : of_subsidies) *posted->add_related_corrections() = c;
    posted->set_corrected_posting(charge.posting());
    *posted->mutable_charge() = charge;
    std::vector<v1::IncomeFigures> deltas = IncomeDeltasOf(of_charge, &charge, now, false);
    for (const auto& f : IncomeDeltasOf(of_subsidies, &charge, now, true)) {
      auto same = std::find_if(deltas.begin(), deltas.end(), [&](const v1::IncomeFigures& d) {
        return d.owner_organization() == f.owner_organization() && d.currency_code() == f.currency_code();
      });
      if (same == deltas.end()) {
        deltas.push_back(f);
      } else {
        AddIncome(*same, f);
      }
    }
    for (auto& d : deltas) *posted->add_income_deltas() = std::move(d);
    for (auto& b : pool_balances) *posted->add_pool_balances() = std::move(b);
    posted->set_reason(reason);
    step.events.push_back(ev.SerializeAsString());
  }
  return absl::OkStatus();
}

absl::StatusOr<int> BillingManager::ChargeEndedLeasePeriods() {
  LS_ASSIGN_OR_RETURN(auto leases, store_->HashAll(keys::Doc("leases", "out")));
  const absl::Time now = clock_->Now();
  int posted = 0;
  for (const auto& [id, bytes] : leases) {
    bk::Lease lease;
    if (bytes.empty() || !lease.ParseFromString(bytes)) continue;
    // Only whole periods that have ended; the running one waits.
    LS_ASSIGN_OR_RETURN(auto periods, LeasePeriods(lease, now, zone_));
    for (const auto& period : periods) {
      LS_ASSIGN_OR_RETURN(bool ended, PeriodEnded(period, now, zone_));
      if (!ended) continue;
      LS_ASSIGN_OR_RETURN(v1::Charge c, PriceLeasePeriod(lease, period, zone_));
      const std::string marker = absl::StrCat("lease-period:", lease.name(), "|", period);
      for (int attempt = 0; attempt < kAttempts; ++attempt) {
        LS_ASSIGN_OR_RETURN(bool done, store_->EventApplied(marker));
        LS_ASSIGN_OR_RETURN(auto existing,
                            store_->docs().Get(keys::Doc("charge", "c" + Hex(Fnv(c.lease() + "|" + c.source_key())))));
        if (done || existing) break;
        LedgerStep step;
        step.applied_event_id = marker;
        // Only while the lease is still out as read: a return applied
        // meanwhile charged (or corrected) the period with the return.
        step.field_checks.push_back({keys::Doc("leases", "out"), id, bytes});
        v1::Charge charge = c;
        // Posted now (the period ended before `now`), stamped anew on each attempt.
        LS_RETURN_IF_ERROR(PostCharge(step, charge, marker, StampNow(), "", ""));
        LS_ASSIGN_OR_RETURN(StepResult result, store_->Apply(step));
        if (result.kind == StepResult::Kind::kApplied) ++posted;
        if (result.kind != StepResult::Kind::kStale) break;
      }
    }
  }
  return posted;
}

namespace {

const RedisScript& MoveIndexMember() {
  static const RedisScript* const kMove = new RedisScript(R"lua(
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], 0, ARGV[2])
  return 1
end
return 0
)lua");
  return *kMove;
}

// The create_time of a stored document of an index listed by create time.
absl::StatusOr<std::optional<absl::Time>> CreateTimeOf(const std::string& kind, const std::string& data) {
  auto of = [](const auto& m) {
    return m.has_create_time() ? std::optional<absl::Time>(FromProto(m.create_time())) : std::nullopt;
  };
  if (kind == "posting") {
    LS_ASSIGN_OR_RETURN(auto m, Parse<v1::Posting>(data));
    return of(m);
  }
  if (kind == "charge") {
    LS_ASSIGN_OR_RETURN(auto m, Parse<v1::Charge>(data));
    return of(m);
  }
  if (kind == "deposit") {
    LS_ASSIGN_OR_RETURN(auto m, Parse<v1::Deposit>(data));
    return of(m);
  }
  if (kind == "payment") {
    LS_ASSIGN_OR_RETURN(auto m, Parse<v1::Payment>(data));
    return of(m);
  }
  LS_ASSIGN_OR_RETURN(auto m, Parse<v1::Settlement>(data));
  return of(m);
}

}  // namespace

absl::StatusOr<int> BillingManager::MigrateIndexMembers() {
  constexpr int kBatch = 500;
  int moved = 0;
  for (const std::string kind : {"posting", "charge", "deposit", "payment", "settlement"}) {
    const std::string index = keys::Index(kind);
    // Settlements are indexed "<period>|<time>|<id>", the others "<time>|<id>".
    const bool by_period = kind == "settlement";
    std::string after;
    while (true) {
      LS_ASSIGN_OR_RETURN(auto members, store_->docs().IndexRange(index, after, kBatch));
      for (const auto& m : members) {
        after = m;  // a member moved is met again later, of the new form
        const size_t bar = m.rfind('|');
        const size_t start = by_period ? m.find('|') + 1 : 0;
        if (bar == std::string::npos || (by_period && start > bar)) continue;
        const std::optional<int64_t> ms = keys::LegacyIndexMillis(absl::string_view(m).substr(start, bar - start));
        if (!ms) continue;
        const std::string id = m.substr(bar + 1);
        absl::Time t = absl::FromUnixMillis(*ms);
        LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc(kind, id)));
        if (doc) {
          auto created = CreateTimeOf(kind, doc->data);
          if (created.ok() && *created && Ms(**created) == *ms) t = **created;
        }
        const std::string fresh = m.substr(0, start) + keys::IndexMember(t, id);
        LS_ASSIGN_OR_RETURN(RedisValue reply, store_->pool()->Eval(MoveIndexMember(), {index}, {m, fresh}));
        if (reply.type == RedisValue::Type::kInteger) moved += static_cast<int>(reply.integer);
      }
      if (static_cast<int>(members.size()) < kBatch) break;
    }
  }
  return moved;
}

// ================================================================ charges, postings, balances

absl::StatusOr<v1::Charge> BillingManager::GetCharge(const Principal& p, const v1::GetChargeRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "charges").status());  // before the name: nothing to see
  LS_ASSIGN_OR_RETURN(std::string id, NameId(r.name(), "charges"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("charge", id)));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "CHARGE_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::Charge c, Parse<v1::Charge>(doc->data));
  LS_RETURN_IF_ERROR(CheckScope("GetCharge", p, ChargeFacts(c)));
  return c;
}

absl::StatusOr<v1::ListChargesResponse> BillingManager::ListCharges(const Principal& p,
                                                                   const v1::ListChargesRequest& r) {
  // Scope before validation (types.proto): a filter naming another
  // organisation is refused whatever else is wrong with the request.
  LS_RETURN_IF_ERROR(OwnScope(p, "charges").status());
  const std::string own = ActorOrganization(p);
  if (!SeesAll(p)) {
    for (const std::string* org : {&r.payer_organization(), &r.owner_organization()}) {
      if (!org->empty() && *org != own) return OrgScope("charges");
    }
  }
  // Then the filters' forms (INVALID_FIELD: "bad name"): a malformed name
  // would match nothing and answer an empty list as if there were none.
  if (!r.payer_organization().empty() && !IsOrganizationName(r.payer_organization())) {
    return InvalidField("payer_organization", "must be organizations/{organization}");
  }
  if (!r.owner_organization().empty() && !IsOrganizationName(r.owner_organization())) {
    return InvalidField("owner_organization", "must be organizations/{organization}");
  }
  if (!r.instrument().empty() && !IsResourceName(r.instrument(), "instruments")) {
    return InvalidField("instrument", "must be instruments/{instrument}");
  }
  if (!r.reference().empty() && !IsResourceName(r.reference(), "bookings") && !IsResourceName(r.reference(), "leases") &&
      !IsResourceName(r.reference(), "serviceOrders") && !IsResourceName(r.reference(), "projects")) {
    return InvalidField("reference",
                        "must be bookings/{booking}, leases/{lease}, serviceOrders/{service_order} or "
                        "projects/{project}");
  }
  // The token before the interval, as before (INVALID_PAGE_TOKEN first).
  LS_RETURN_IF_ERROR(page_tokens_.Parse(r, p).status());
  LS_RETURN_IF_ERROR(CheckIntervalFilter(r.has_interval(), r.interval()));
  v1::ListChargesResponse out;
  auto keep = [&](const v1::Charge& c) {
    if (!SeesAll(p) && !CheckScope("ListCharges", p, ChargeFacts(c)).ok()) return false;
    // The payer filter: the charge's payer or a participant bearing a split part.
    if (!r.payer_organization().empty() && c.payer_organization() != r.payer_organization() &&
        std::none_of(c.splits().begin(), c.splits().end(),
                     [&](const v1::ChargeSplit& x) { return x.organization() == r.payer_organization(); })) {
      return false;
    }
    if (!r.owner_organization().empty() && c.owner_organization() != r.owner_organization()) return false;
    if (!r.instrument().empty() && c.instrument() != r.instrument()) return false;
    if (r.mode() != 0 && c.mode() != r.mode()) return false;
    if (r.fee_kind() != 0 && c.fee_kind() != r.fee_kind()) return false;
    if (r.state() != 0 && c.state() != r.state()) return false;
    if (!r.source_event_id().empty() && c.source_event_id() != r.source_event_id()) return false;
    if (!r.reference().empty() && c.booking() != r.reference() && c.lease() != r.reference() &&
        c.service_order() != r.reference() && c.project() != r.reference()) {
      return false;
    }
    if (r.has_interval()) {
      const absl::Time t = FromProto(c.create_time());
      if (t < FromProto(r.interval().start_time()) || t >= FromProto(r.interval().end_time())) return false;
    }
    return true;
  };
  auto id = [](const std::string& m) { return m.substr(m.find('|') + 1); };
  LS_RETURN_IF_ERROR(
      (ScanIndex<v1::Charge>(*store_, page_tokens_, p, "charge", r, id, keep, out.mutable_charges(), &out)));
  return out;
}

absl::StatusOr<v1::Posting> BillingManager::GetPosting(const Principal& p, const v1::GetPostingRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "postings").status());  // before the name: nothing to see
  LS_ASSIGN_OR_RETURN(std::string id, NameId(r.name(), "postings"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("posting", id)));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "POSTING_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::Posting posting, Parse<v1::Posting>(doc->data));
  if (SeesAll(p)) return posting;
  const std::string own = ActorOrganization(p);
  v1::Posting mine = posting;
  mine.clear_entries();
  for (const auto& e : posting.entries()) {
    if (!own.empty() && absl::StartsWith(e.account(), own + "/")) *mine.add_entries() = e;
  }
  if (mine.entries().empty()) return OrgScope("postings");
  return mine;
}

absl::Status BillingManager::PoolExists(const std::string& pool) const {
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("pool", IdOf(pool))));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "SUBSIDY_POOL_NOT_FOUND", pool + " does not exist");
  return absl::OkStatus();
}

absl::Status BillingManager::PartiesExist(const std::set<std::string>& parties) const {
  for (const auto& party : parties) {
    if (IsSubsidyPoolName(party)) {
      LS_RETURN_IF_ERROR(PoolExists(party));
    } else if (IsOrganizationName(party)) {
      LS_RETURN_IF_ERROR(inventory_->GetOrganization(party).status());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> BillingManager::AllBalances() const {
  LS_ASSIGN_OR_RETURN(auto all, store_->HashAll(keys::Balances()));
  std::vector<std::pair<std::string, int64_t>> out;
  for (auto& [field, value] : all) {
    int64_t v = 0;
    absl::SimpleAtoi(value, &v);
    out.emplace_back(field, v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<v1::AccountBalance> BillingManager::GetAccountBalance(const Principal& p,
                                                                     const v1::GetAccountBalanceRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "accounts").status());
  // Scope before validation (types.proto): a member naming anything but an
  // account of its own organisation, malformed names included, is refused
  // before the name's form is checked.
  if (!SeesAll(p) && !IsOwnAccountName(p, r.name())) return OrgScope("accounts");
  LS_ASSIGN_OR_RETURN(AccountRef ref, ParseAccountName(r.name(), "name"));
  // The request's fields before looking anything up (as ListBalances): a
  // future as_of_time is INVALID_FIELD whether the owner exists or not.
  if (r.has_as_of_time() && FromProto(r.as_of_time()) > clock_->Now()) {
    return InvalidField("as_of_time", "must not be in the future");
  }
  // NOT_FOUND (ORGANIZATION_NOT_FOUND, SUBSIDY_POOL_NOT_FOUND) for an owner
  // that does not exist.
  LS_RETURN_IF_ERROR(PartiesExist({ref.owner}));
  return ReadBalance(ref, r);
}

absl::StatusOr<v1::AccountBalance> BillingManager::ReadBalance(const AccountRef& ref,
                                                               const v1::GetAccountBalanceRequest& r,
                                                               bool exact_counterparty,
                                                               std::optional<absl::Time> through) const {
  const absl::Time now = clock_->Now();
  const absl::Time as_of = through ? *through : r.has_as_of_time() ? FromProto(r.as_of_time()) : now;
  // A later page's time (`through`) is the first page's clock, perhaps
  // another replica's: never "in the future" for a field the caller left unset.
  if (!through && as_of > now) return InvalidField("as_of_time", "must not be in the future");
  const std::string currency = r.currency_code().empty() ? kDefaultCurrency : r.currency_code();
  LS_ASSIGN_OR_RETURN(auto lines, store_->List(keys::Account(r.name())));
  // "Entries created strictly before this time count" (as_of_time; at or
  // before `through`), to the nanosecond: a line carries its posting's
  // create_time in whole milliseconds, so a line of the cut-off's own
  // millisecond is decided by its posting's create_time. Without either:
  // everything posted so far (also at this instant).
  const bool limited = through.has_value() || r.has_as_of_time();
  const bool inclusive = through.has_value();
  const int64_t cut_ms = Ms(as_of);
  const bool cut_on_ms = as_of == absl::FromUnixMillis(cut_ms);
  int64_t debit = 0, credit = 0;
  for (const auto& s : lines) {
    auto l = ParseAccountLine(s);
    if (!l || l->currency != currency) continue;
    if ((exact_counterparty || !r.counterparty().empty()) && l->counterparty != r.counterparty()) continue;
    if (limited && l->ms >= cut_ms) {
      if (l->ms > cut_ms || (!inclusive && cut_on_ms)) continue;
      LS_ASSIGN_OR_RETURN(auto pdoc, store_->docs().Get(keys::Doc("posting", l->posting)));
      if (!pdoc) continue;
      LS_ASSIGN_OR_RETURN(v1::Posting posting, Parse<v1::Posting>(pdoc->data));
      const absl::Time created = FromProto(posting.create_time());
      if (inclusive ? created > as_of : created >= as_of) continue;
    }
    (l->amount > 0 ? debit : credit) += std::abs(l->amount);
  }
  v1::AccountBalance out;
  out.set_account(r.name());
  out.set_owner(ref.owner);
  out.set_kind(ref.kind);
  out.set_normal_side(NormalSideOf(ref.kind));
  out.set_counterparty(r.counterparty());
  out.set_currency_code(currency);
  *out.mutable_debit_total() = MakeMoney(currency, debit);
  *out.mutable_credit_total() = MakeMoney(currency, credit);
  *out.mutable_balance() = MakeMoney(currency, out.normal_side() == v1::DEBIT ? debit - credit : credit - debit);
  *out.mutable_as_of_time() = ToProto(as_of);
  return out;
}

absl::StatusOr<v1::Deposit> BillingManager::GetDeposit(const Principal& p, const v1::GetDepositRequest& r) {
  LS_RETURN_IF_ERROR(OwnScope(p, "deposits").status());  // before the name: nothing to see
  LS_ASSIGN_OR_RETURN(std::string id, NameId(r.name(), "deposits"));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Doc("deposit", id)));
  if (!doc) return MakeError(absl::StatusCode::kNotFound, "DEPOSIT_NOT_FOUND", r.name() + " does not exist");
  LS_ASSIGN_OR_RETURN(v1::Deposit d, Parse<v1::Deposit>(doc->data));
  LS_RETURN_IF_ERROR(CheckScope("GetDeposit", p, DepositFacts(d)));
  return d;
}

}  // namespace labshare::billing
