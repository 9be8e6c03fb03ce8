#include "services/usage/usage_figures.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::SharingMode;

std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

std::string DayKey(absl::string_view instr, absl::CivilDay d) {
  return absl::StrFormat("{usage}:d:%s:%04d%02d%02d", instr, d.year(), d.month(), d.day());
}
std::string MonthKey(absl::string_view instr, absl::CivilMonth m) {
  return absl::StrFormat("{usage}:m:%s:%04d%02d", instr, m.year(), m.month());
}
std::string UsersDayKey(absl::string_view instr, absl::CivilDay d) {
  return absl::StrFormat("{usage}:ud:%s:%04d%02d%02d", instr, d.year(), d.month(), d.day());
}
std::string UsersMonthKey(absl::string_view instr, absl::CivilMonth m) {
  return absl::StrFormat("{usage}:um:%s:%04d%02d", instr, m.year(), m.month());
}

// KEYS: 1 applied, then one key per op. ARGV: 1 marker, 2 n ops, then per
// op (code, a, b): 'inc' field a += b; 'sadd' member a; 'hset' a = b; 'hdel' a.
const RedisScript& FoldScript() {
  static const RedisScript* s = new RedisScript(R"lua(
if redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 0 then return 0 end
local n = tonumber(ARGV[2])
for i = 1, n do
  local code, a, b, k = ARGV[3 + (i - 1) * 3], ARGV[4 + (i - 1) * 3], ARGV[5 + (i - 1) * 3], KEYS[1 + i]
  if code == 'inc' then redis.call('HINCRBY', k, a, b)
  elseif code == 'sadd' then redis.call('SADD', k, a)
  elseif code == 'hset' then redis.call('HSET', k, a, b)
  elseif code == 'hdel' then redis.call('HDEL', k, a)
  end
end
return 1
)lua");
  return *s;
}

struct Ops {
  std::vector<std::string> keys;
  std::vector<std::string> args;
  void Add(std::string key, const char* code, std::string a, std::string b = "") {
    keys.push_back(std::move(key));
    args.push_back(code);
    args.push_back(std::move(a));
    args.push_back(std::move(b));
  }
};

// Seconds of [s, e) in each calendar day of the zone.
std::vector<std::pair<absl::CivilDay, int64_t>> SplitByDay(absl::Time s, absl::Time e, absl::TimeZone zone) {
  std::vector<std::pair<absl::CivilDay, int64_t>> out;
  while (s < e) {
    const absl::CivilDay d = absl::ToCivilDay(s, zone);
    const absl::Time next = std::min(e, absl::FromCivil(d + 1, zone));
    out.emplace_back(d, absl::ToInt64Seconds(next - s));
    s = next;
  }
  return out;
}

int64_t Bps(int64_t num, int64_t den) {
  if (den == 0) return 0;
  // round half away from zero
  const __int128 n = static_cast<__int128>(num) * 10000;
  __int128 q = n / den, r = n % den;
  if (2 * (r < 0 ? -r : r) >= (den < 0 ? -den : den)) q += ((n < 0) != (den < 0)) ? -1 : 1;
  return static_cast<int64_t>(q);
}
v1::Ratio MakeRatio(int64_t num, int64_t den) {
  v1::Ratio r;
  r.set_numerator(num);
  r.set_denominator(den);
  r.set_defined(den != 0);
  r.set_basis_points(Bps(num, den));
  return r;
}

}  // namespace

UsageFigures::UsageFigures(RedisPool* pool, const Clock* clock, absl::TimeZone zone, std::string currency,
                           int default_lease_hours_per_day)
    : pool_(pool), clock_(clock), zone_(zone), currency_(std::move(currency)),
      default_lease_hours_(default_lease_hours_per_day) {}

// ================================================================ folding

absl::Status UsageFigures::Fold(absl::string_view source, const StreamEvent& event) {
  Ops ops;
  std::string event_id;
  // One counter in the day of `at` and its month.
  auto count = [&](const std::string& instrument, absl::Time at, absl::string_view counter, SharingMode mode,
                   const std::string& org, int64_t delta) {
    const std::string id = IdOf(instrument);
    const absl::CivilDay d = absl::ToCivilDay(at, zone_);
    const std::string field = absl::StrCat(counter, "|", static_cast<int>(mode), "|", org);
    ops.Add(DayKey(id, d), "inc", field, std::to_string(delta));
    ops.Add(MonthKey(id, absl::CivilMonth(d)), "inc", field, std::to_string(delta));
  };
  auto served = [&](const std::string& instrument, absl::CivilDay d, SharingMode mode, const std::string& org,
                    const std::string& user) {
    const std::string id = IdOf(instrument);
    const std::string member = absl::StrCat(static_cast<int>(mode), "|", org, "|", user);
    ops.Add(UsersDayKey(id, d), "sadd", member);
    ops.Add(UsersMonthKey(id, absl::CivilMonth(d)), "sadd", member);
  };
  if (source == "inventory") {
    iv::InventoryEvent e;
    if (!e.ParseFromString(event.payload)) return absl::OkStatus();
    event_id = e.header().event_id();
    if (e.has_instrument_changed()) {
      const auto& in = e.instrument_changed().instrument();
      ops.Add("{usage}:instr", "hset", IdOf(in.name()), in.SerializeAsString());
    } else if (e.has_organization_changed()) {
      const auto& o = e.organization_changed().organization();
      ops.Add("{usage}:orgs", "hset", o.name(), std::to_string(static_cast<int>(o.size_class())));
    } else if (e.has_maintenance_window_changed()) {
      const auto& w = e.maintenance_window_changed().maintenance_window();
      const std::string key = "{usage}:mw:" + IdOf(e.maintenance_window_changed().instrument());
      if (w.state() == iv::SCHEDULED) {
        ops.Add(key, "hset", IdOf(w.name()),
                absl::StrCat(absl::ToUnixMillis(FromProto(w.interval().start_time())), "|",
                             absl::ToUnixMillis(FromProto(w.interval().end_time()))));
      } else {
        ops.Add(key, "hdel", IdOf(w.name()));
      }
    }
  } else if (source == "booking") {
    bk::BookingEvent e;
    if (!e.ParseFromString(event.payload)) return absl::OkStatus();
    event_id = e.header().event_id();
    const bk::Booking* b = nullptr;
    for (const bk::Booking* candidate :
         {e.has_booking_confirmed() ? &e.booking_confirmed().booking() : nullptr,
          e.has_booking_checked_out() ? &e.booking_checked_out().booking() : nullptr,
          e.has_booking_missed() ? &e.booking_missed().booking() : nullptr,
          e.has_booking_cancelled() ? &e.booking_cancelled().booking() : nullptr,
          e.has_booking_rejected() ? &e.booking_rejected().booking() : nullptr}) {
      if (candidate != nullptr) b = candidate;
    }
    if (b != nullptr) {
      const absl::Time start = FromProto(b->reserved_interval().start_time());
      const std::string& org = b->payer_organization();
      if (e.has_booking_confirmed()) count(b->instrument(), start, "bk", b->mode(), org, 1);
      if (e.has_booking_missed()) count(b->instrument(), start, "miss", b->mode(), org, 1);
      if (e.has_booking_rejected()) count(b->instrument(), FromProto(b->create_time()), "rej", b->mode(), org, 1);
      if (e.has_booking_cancelled()) {
        const auto& c = e.booking_cancelled();
        if (c.cancelled_by_outage()) {
          count(b->instrument(), start, "out", b->mode(), org, 1);
        } else if (c.initiator() == bk::Booking::BOOKER) {
          count(b->instrument(), start, "canc", b->mode(), org, 1);
          if (c.late_cancellation()) count(b->instrument(), start, "late", b->mode(), org, 1);
        }
      }
      if (e.has_booking_checked_out() && b->has_session() && b->session().has_start_time() &&
          b->session().has_end_time()) {
        count(b->instrument(), start, "done", b->mode(), org, 1);
        const absl::Time s = FromProto(b->session().start_time()), en = FromProto(b->session().end_time());
        int64_t cap = 24 * 3600;
        if (b->mode() == labshare::type::v1::LEASE) {
          cap = default_lease_hours_ * 3600;
          auto v = pool_->Command({"HGET", "{usage}:instr", IdOf(b->instrument())});
          iv::Instrument in;
          if (v.ok() && !v->is_nil() && in.ParseFromString(v->str)) {
            for (const auto& m : in.modes()) {
              if (m.mode() == labshare::type::v1::LEASE && m.lease_rules().counted_hours_per_day() > 0) {
                cap = m.lease_rules().counted_hours_per_day() * 3600;
              }
            }
          }
        }
        for (const auto& [day, seconds] : SplitByDay(s, en, zone_)) {
          count(b->instrument(), absl::FromCivil(day, zone_), "eff", b->mode(), org, std::min(seconds, cap));
          served(b->instrument(), day, b->mode(), org, b->user());
        }
      }
    }
  } else if (source == "billing") {
    bl::BillingEvent e;
    if (!e.ParseFromString(event.payload)) return absl::OkStatus();
    event_id = e.header().event_id();
    std::vector<const bl::IncomeFigures*> figures;
    if (e.has_charge_posted()) figures.push_back(&e.charge_posted().income());
    if (e.has_correction_posted()) {
      for (const auto& f : e.correction_posted().income_deltas()) figures.push_back(&f);
    }
    for (const bl::IncomeFigures* f : figures) {
      if (f->instrument().empty() || f->currency_code() != currency_) continue;
      const absl::Time at = FromProto(f->effective_time());
      const bool fee = f->fee_kind() == bl::MISSED_BOOKING_FEE || f->fee_kind() == bl::LATE_CANCELLATION_FEE;
      for (const auto& s : f->shares()) {
        if (s.service_income().amount_minor() != 0) {
          count(f->instrument(), at, "inc", f->mode(), s.payer_organization(), s.service_income().amount_minor());
          if (fee) count(f->instrument(), at, "pen", f->mode(), s.payer_organization(), s.service_income().amount_minor());
        }
        if (s.subsidised().amount_minor() != 0) {
          count(f->instrument(), at, "sub", f->mode(), s.payer_organization(), s.subsidised().amount_minor());
        }
      }
      if (f->in_kind().amount_minor() != 0) {
        count(f->instrument(), at, "ink", f->mode(), f->owner_organization(), f->in_kind().amount_minor());
      }
    }
  }
  if (event_id.empty()) return absl::OkStatus();
  std::vector<std::string> keys = {"{usage}:applied"};
  keys.insert(keys.end(), ops.keys.begin(), ops.keys.end());
  std::vector<std::string> args = {absl::StrCat(source, "|", event_id), std::to_string(ops.keys.size())};
  args.insert(args.end(), ops.args.begin(), ops.args.end());
  return pool_->Eval(FoldScript(), keys, args).status();
}

// ================================================================ figures

struct UsageFigures::Partial {
  std::map<std::string, int64_t> counters;  // "eff", "inc", ... summed
};

absl::Status UsageFigures::CheckRange(const labshare::type::v1::Interval& range, absl::CivilDay* from,
                                      absl::CivilDay* to) const {
  if (!range.has_start_time() || !range.has_end_time()) return InvalidField("range", "required: whole days");
  const absl::Time s = FromProto(range.start_time()), e = FromProto(range.end_time());
  if (e <= s) return InvalidField("range", "end must be after start");
  *from = absl::ToCivilDay(s, zone_);
  *to = absl::ToCivilDay(e, zone_);
  if (absl::FromCivil(*from, zone_) != s || absl::FromCivil(*to, zone_) != e) {
    return InvalidField("range", absl::StrCat("start and end must be midnight in ", zone_.name()), "RANGE_NOT_ALIGNED");
  }
  if (*to - *from > 366 * 100) return InvalidField("range", "more than 100 years", "RANGE_TOO_LARGE");
  return absl::OkStatus();
}

absl::Status UsageFigures::Scope(const Principal& p, const v1::UsageFilter& f) const {
  if (p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin})) return absl::OkStatus();
  const std::string own = ActorOrganization(p);
  const bool owner_scope = f.owner_organizations_size() == 1 && f.owner_organizations(0) == own;
  const bool user_scope = f.user_organizations_size() == 1 && f.user_organizations(0) == own;
  if (owner_scope || (user_scope && p.HasRole(Role::kMemberBillingAdmin))) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   "name exactly your own organisation in filter.owner_organizations"
                   " (or, as billing admin, filter.user_organizations)");
}

absl::StatusOr<std::map<std::string, UsageFigures::Instr>> UsageFigures::Instruments(const v1::UsageFilter& f) const {
  LS_ASSIGN_OR_RETURN(RedisValue all, pool_->Command({"HGETALL", "{usage}:instr"}));
  auto in = [](const auto& list, const std::string& v) {
    return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
  };
  std::map<std::string, Instr> out;
  for (size_t i = 0; i + 1 < all.elements.size(); i += 2) {
    Instr x;
    if (!x.instrument.ParseFromString(all.elements[i + 1].str)) continue;
    const auto& ins = x.instrument;
    if (!in(f.instruments(), ins.name()) || !in(f.owner_organizations(), ins.owner_organization()) ||
        !in(f.facilities(), ins.facility()) || !in(f.categories(), ins.category())) {
      continue;
    }
    LS_ASSIGN_OR_RETURN(RedisValue w, pool_->Command({"HVALS", "{usage}:mw:" + all.elements[i].str}));
    for (const auto& v : w.elements) {
      std::vector<std::string> se = absl::StrSplit(v.str, '|');
      int64_t s = 0, e = 0;
      if (se.size() == 2 && absl::SimpleAtoi(se[0], &s) && absl::SimpleAtoi(se[1], &e)) {
        x.windows.emplace_back(absl::FromUnixMillis(s), absl::FromUnixMillis(e));
      }
    }
    out.emplace(all.elements[i].str, std::move(x));
  }
  return out;
}

v1::ComputationInfo UsageFigures::Info(absl::Time range_end) const {
  v1::ComputationInfo info;
  const absl::Time now = clock_->Now();
  *info.mutable_computed_time() = ToProto(now);
  info.set_time_zone(zone_.name());
  info.set_currency_code(currency_);
  info.set_provisional(range_end > now);
  return info;
}

absl::StatusOr<std::vector<v1::UsageRow>> UsageFigures::Compute(absl::CivilDay from, absl::CivilDay to,
                                                                v1::PeriodGranularity granularity,
                                                                const std::vector<v1::Dimension>& dims,
                                                                const v1::UsageFilter& f, bool owner_view) const {
  LS_ASSIGN_OR_RETURN(auto instruments, Instruments(f));
  LS_ASSIGN_OR_RETURN(RedisValue orgs_raw, pool_->Command({"HGETALL", "{usage}:orgs"}));
  std::map<std::string, int> size_class;
  for (size_t i = 0; i + 1 < orgs_raw.elements.size(); i += 2) {
    int v = 0;
    absl::SimpleAtoi(orgs_raw.elements[i + 1].str, &v);
    size_class[orgs_raw.elements[i].str] = v;
  }
  auto user_ok = [&](int mode, const std::string& org) {
    if (!f.modes().empty() && std::find(f.modes().begin(), f.modes().end(), mode) == f.modes().end()) return false;
    return f.user_organizations().empty() ||
           std::find(f.user_organizations().begin(), f.user_organizations().end(), org) != f.user_organizations().end();
  };
  auto has = [&](v1::Dimension d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
  // Buckets.
  std::vector<std::pair<absl::CivilDay, absl::CivilDay>> buckets;
  for (absl::CivilDay d = from; d < to;) {
    absl::CivilDay next = to;
    if (granularity == v1::PERIOD_GRANULARITY_DAY) next = d + 1;
    if (granularity == v1::PERIOD_GRANULARITY_MONTH) next = absl::CivilDay(absl::CivilMonth(d) + 1);
    if (granularity == v1::PERIOD_GRANULARITY_YEAR) next = absl::CivilDay(absl::CivilYear(d) + 1);
    next = std::min(next, to);
    buckets.emplace_back(d, next);
    d = next;
  }
  struct Acc {
    v1::UsageGroupKey key;
    std::map<std::string, int64_t> c;
    std::set<std::string> instruments;  // the row's instrument set
    int64_t calendar = 0, maintenance = 0, available = 0, original_value = 0, without_value = 0;
    std::set<std::string> users, ext_users, sme_users, orgs, ext_orgs, sme_orgs, startup_orgs;
  };
  std::vector<v1::UsageRow> rows;
  for (const auto& [bfrom, bto] : buckets) {
    std::map<std::string, Acc> accs;  // by serialized key
    const absl::Time bstart = absl::FromCivil(bfrom, zone_), bend = absl::FromCivil(bto, zone_);
    for (const auto& [id, x] : instruments) {
      const auto& ins = x.instrument;
      const absl::Time created = ins.has_create_time() ? FromProto(ins.create_time()) : absl::InfinitePast();
      const absl::Time retired = ins.state() == iv::RETIRED && ins.has_update_time() ? FromProto(ins.update_time())
                                                                                  : absl::InfiniteFuture();
      const absl::Time in_from = std::max(created, bstart), in_to = std::min(retired, bend);
      if (in_from >= in_to) continue;  // not in service in this bucket
      v1::UsageGroupKey ikey;
      if (has(v1::DIMENSION_INSTRUMENT)) ikey.set_instrument(ins.name());
      if (has(v1::DIMENSION_OWNER_ORGANIZATION)) ikey.set_owner_organization(ins.owner_organization());
      if (has(v1::DIMENSION_FACILITY)) ikey.set_facility(ins.facility());
      if (has(v1::DIMENSION_CATEGORY)) ikey.set_category(ins.category());
      // Capacity of this instrument in the bucket.
      int64_t calendar = 0, maintenance = 0, available = 0;
      for (const auto& [day, secs] : SplitByDay(in_from, in_to, zone_)) {
        const absl::Time ds = std::max(in_from, absl::FromCivil(day, zone_));
        const absl::Time de = std::min(in_to, absl::FromCivil(day + 1, zone_));
        // Union of the windows inside [ds, de).
        std::vector<std::pair<absl::Time, absl::Time>> cut;
        for (const auto& [ws, we] : x.windows) {
          if (ws < de && ds < we) cut.emplace_back(std::max(ws, ds), std::min(we, de));
        }
        std::sort(cut.begin(), cut.end());
        int64_t m = 0;
        absl::Time reach = absl::InfinitePast();
        for (const auto& [s, e] : cut) {
          const absl::Time s2 = std::max(s, reach);
          if (e > s2) m += absl::ToInt64Seconds(e - s2);
          reach = std::max(reach, e);
        }
        calendar += secs;
        maintenance += m;
        const int hours = ins.daily_available_hours() > 0 ? ins.daily_available_hours() : 24;
        available += (secs - m) * hours / 24;
      }
      const bool value_known = ins.has_original_value() && ins.original_value().currency_code() == currency_;
      // Counters: whole months from month hashes, the rest from days.
      std::vector<std::string> hkeys, skeys;
      for (absl::CivilDay d = bfrom; d < bto;) {
        const absl::CivilMonth m(d);
        if (absl::CivilDay(m) == d && absl::CivilDay(m + 1) <= bto) {
          hkeys.push_back(MonthKey(id, m));
          skeys.push_back(UsersMonthKey(id, m));
          d = absl::CivilDay(m + 1);
        } else {
          hkeys.push_back(DayKey(id, d));
          skeys.push_back(UsersDayKey(id, d));
          d = d + 1;
        }
      }
      std::vector<std::vector<std::string>> cmds;
      for (const auto& k : hkeys) cmds.push_back({"HGETALL", k});
      std::vector<std::string> sunion = {"SUNION"};
      sunion.insert(sunion.end(), skeys.begin(), skeys.end());
      cmds.push_back(sunion);
      LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(cmds));
      // The rows this instrument contributes to: one per user-side key seen,
      // or the instrument-side key alone.
      const bool user_dims = has(v1::DIMENSION_USER_ORGANIZATION) || has(v1::DIMENSION_SHARING_MODE);
      auto row_for = [&](int mode, const std::string& org) -> Acc& {
        v1::UsageGroupKey k = ikey;
        if (has(v1::DIMENSION_USER_ORGANIZATION)) k.set_user_organization(org);
        if (has(v1::DIMENSION_SHARING_MODE)) k.set_mode(static_cast<SharingMode>(mode));
        Acc& a = accs[SerializeDeterministic(k)];
        a.key = k;
        if (a.instruments.insert(id).second) {
          a.calendar += calendar;
          a.maintenance += maintenance;
          a.available += available;
          if (value_known) {
            a.original_value += ins.original_value().amount_minor();
          } else {
            ++a.without_value;
          }
        }
        return a;
      };
      if (!user_dims) row_for(0, "");
      for (size_t i = 0; i + 1 < replies.size(); ++i) {
        const auto& h = replies[i];
        for (size_t j = 0; j + 1 < h.elements.size(); j += 2) {
          std::vector<std::string> parts = absl::StrSplit(h.elements[j].str, '|');
          int mode = 0;
          int64_t v = 0;
          if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &mode) || !absl::SimpleAtoi(h.elements[j + 1].str, &v)) continue;
          if (!user_ok(mode, parts[2])) continue;
          Acc& a = row_for(mode, parts[2]);
          a.c[parts[0]] += v;
          if (parts[0] == "eff" && parts[2] != ins.owner_organization()) a.c["ext"] += v;
        }
      }
      for (const auto& m : replies.back().elements) {
        std::vector<std::string> parts = absl::StrSplit(m.str, absl::MaxSplits('|', 2));
        int mode = 0;
        if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &mode) || !user_ok(mode, parts[1])) continue;
        Acc& a = row_for(mode, parts[1]);
        const std::string& org = parts[1];
        const std::string& user = parts[2];
        const bool external = org != ins.owner_organization();
        const int sc = size_class.count(org) ? size_class[org] : 0;
        a.users.insert(user);
        a.orgs.insert(org);
        if (external) {
          a.ext_users.insert(user);
          a.ext_orgs.insert(org);
        }
        if (sc == iv::SME) {
          a.sme_users.insert(user);
          a.sme_orgs.insert(org);
        }
        if (sc == iv::START_UP) a.startup_orgs.insert(org);
      }
    }
    for (auto& [k, a] : accs) {
      const bool any_use = a.c["eff"] != 0 || a.c["bk"] != 0 || a.c["inc"] != 0 || !a.instruments.empty();
      if (!any_use) continue;
      v1::UsageRow row;
      *row.mutable_period()->mutable_start_time() = ToProto(bstart);
      *row.mutable_period()->mutable_end_time() = ToProto(bend);
      const bool whole = granularity == v1::PERIOD_GRANULARITY_RANGE || granularity == 0 ||
                         (granularity == v1::PERIOD_GRANULARITY_DAY) ||
                         (granularity == v1::PERIOD_GRANULARITY_MONTH && absl::CivilDay(absl::CivilMonth(bfrom)) == bfrom &&
                          absl::CivilDay(absl::CivilMonth(bfrom) + 1) == bto) ||
                         (granularity == v1::PERIOD_GRANULARITY_YEAR && absl::CivilDay(absl::CivilYear(bfrom)) == bfrom &&
                          absl::CivilDay(absl::CivilYear(bfrom) + 1) == bto);
      row.set_partial_period(!whole);
      *row.mutable_key() = a.key;
      v1::UsageFigures& fig = *row.mutable_figures();
      fig.set_effective_seconds(a.c["eff"]);
      fig.set_external_seconds(a.c["ext"]);
      if (owner_view) {
        fig.set_calendar_seconds(a.calendar);
        fig.set_maintenance_seconds(a.maintenance);
        fig.set_available_seconds(a.available);
        *fig.mutable_utilization() = MakeRatio(a.c["eff"], a.available);
        *fig.mutable_revenue_rate() = MakeRatio(a.c["inc"], a.original_value);
        fig.mutable_original_value()->set_currency_code(currency_);
        fig.mutable_original_value()->set_amount_minor(a.original_value);
        fig.set_instrument_count(static_cast<int64_t>(a.instruments.size()));
        fig.set_instruments_without_value(a.without_value);
      }
      *fig.mutable_sharing_rate() = MakeRatio(a.c["ext"], a.c["eff"]);
      auto money = [&](labshare::type::v1::Money* m, int64_t v) {
        m->set_currency_code(currency_);
        m->set_amount_minor(v);
      };
      money(fig.mutable_service_income(), a.c["inc"]);
      money(fig.mutable_penalty_income(), a.c["pen"]);
      money(fig.mutable_subsidized_income(), a.c["sub"]);
      money(fig.mutable_in_kind_contribution(), a.c["ink"]);
      fig.set_bookings(a.c["bk"]);
      fig.set_completed_bookings(a.c["done"]);
      fig.set_missed_bookings(a.c["miss"]);
      fig.set_late_cancelled_bookings(a.c["late"]);
      fig.set_cancelled_bookings(a.c["canc"]);
      fig.set_outage_cancelled_bookings(a.c["out"]);
      fig.set_rejected_requests(a.c["rej"]);
      fig.set_users_served(static_cast<int64_t>(a.users.size()));
      fig.set_external_users_served(static_cast<int64_t>(a.ext_users.size()));
      fig.set_sme_users_served(static_cast<int64_t>(a.sme_users.size()));
      fig.set_organizations_served(static_cast<int64_t>(a.orgs.size()));
      fig.set_external_organizations_served(static_cast<int64_t>(a.ext_orgs.size()));
      fig.set_sme_organizations_served(static_cast<int64_t>(a.sme_orgs.size()));
      fig.set_startup_organizations_served(static_cast<int64_t>(a.startup_orgs.size()));
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

absl::StatusOr<v1::GetUsageFiguresResponse> UsageFigures::GetUsageFigures(const Principal& p,
                                                                          const v1::GetUsageFiguresRequest& r) {
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(r.range(), &from, &to));
  LS_RETURN_IF_ERROR(Scope(p, r.filter()));
  const bool owner_view = p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin}) ||
                          (r.filter().owner_organizations_size() == 1 &&
                           r.filter().owner_organizations(0) == ActorOrganization(p));
  LS_ASSIGN_OR_RETURN(auto rows, Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, {}, r.filter(), owner_view));
  v1::GetUsageFiguresResponse out;
  *out.mutable_range() = r.range();
  if (!rows.empty()) *out.mutable_figures() = rows[0].figures();
  *out.mutable_computation() = Info(FromProto(r.range().end_time()));
  return out;
}

absl::StatusOr<v1::QueryUsageResponse> UsageFigures::QueryUsage(const Principal& p, const v1::QueryUsageRequest& r) {
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(r.range(), &from, &to));
  LS_RETURN_IF_ERROR(Scope(p, r.filter()));
  std::vector<v1::Dimension> dims;
  for (int d : r.group_by()) {
    const auto dim = static_cast<v1::Dimension>(d);
    if (dim == v1::DIMENSION_UNSPECIFIED || !v1::Dimension_IsValid(d) ||
        std::find(dims.begin(), dims.end(), dim) != dims.end()) {
      return InvalidField("group_by", "dimensions must be distinct and specified");
    }
    dims.push_back(dim);
  }
  if (dims.size() > 3) return InvalidField("group_by", "at most 3 dimensions");
  if (r.granularity() == v1::PERIOD_GRANULARITY_DAY && to - from > 400) {
    return InvalidField("range", "DAY over more than 400 days: use ExportUsage", "RANGE_TOO_LARGE");
  }
  const bool owner_view = p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin}) ||
                          (r.filter().owner_organizations_size() == 1 &&
                           r.filter().owner_organizations(0) == ActorOrganization(p));
  LS_ASSIGN_OR_RETURN(PageRequest page, ParsePageRequest(r));
  LS_ASSIGN_OR_RETURN(auto rows, Compute(from, to, r.granularity(), dims, r.filter(), owner_view));
  LS_ASSIGN_OR_RETURN(auto totals, Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, {}, r.filter(), owner_view));
  v1::QueryUsageResponse out;
  // Ordered by period start, then the keys in group_by order.
  auto sort_key = [&](const v1::UsageRow& row) {
    std::vector<std::string> k = {absl::StrFormat("%020d", row.period().start_time().seconds())};
    for (auto d : dims) {
      switch (d) {
        case v1::DIMENSION_INSTRUMENT: k.push_back(row.key().instrument()); break;
        case v1::DIMENSION_OWNER_ORGANIZATION: k.push_back(row.key().owner_organization()); break;
        case v1::DIMENSION_FACILITY: k.push_back(row.key().facility()); break;
        case v1::DIMENSION_CATEGORY: k.push_back(row.key().category()); break;
        case v1::DIMENSION_USER_ORGANIZATION: k.push_back(row.key().user_organization()); break;
        case v1::DIMENSION_SHARING_MODE: k.push_back(absl::StrFormat("%04d", static_cast<int>(row.key().mode()))); break;
        default: break;
      }
    }
    return absl::StrJoin(k, "\x1f");
  };
  std::sort(rows.begin(), rows.end(),
            [&](const v1::UsageRow& a, const v1::UsageRow& b) { return sort_key(a) < sort_key(b); });
  for (auto& row : rows) {
    const std::string k = sort_key(row);
    if (!page.after.empty() && k <= page.after) continue;
    if (out.rows_size() == page.page_size) {
      out.set_next_page_token(MakePageToken(r, sort_key(out.rows(out.rows_size() - 1))));
      break;
    }
    *out.add_rows() = std::move(row);
  }
  if (!totals.empty()) *out.mutable_totals() = totals[0].figures();
  *out.mutable_computation() = Info(FromProto(r.range().end_time()));
  return out;
}

}  // namespace labshare::usage
