// Quotas: an organisation's allowance of hours on an instrument per period.
//
// All quotas of one (instrument, organisation) live in one versioned
// document in the instrument's partition, next to their counters, so the
// create step checks and counts them atomically with the calendar. The
// manager caches the documents; the create step compares the cached version
// with the stored one and answers kGuardMoved when they differ, so a new
// allowance applies to every booking created after SetQuota returned.
#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "common/error.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "common/time_zone.h"
#include "services/booking/booking_common.h"
#include "services/booking/booking_lists.h"
#include "services/booking/booking_manager.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::booking {
namespace {

using labshare::inventory::ParseName;
using Quota = v1::Quota;

constexpr char kDefaultTimeZone[] = "Asia/Shanghai";

std::string PeriodWord(Quota::Period period) {
  return absl::AsciiStrToLower(Quota::Period_Name(period));
}

std::string QuotaId(absl::string_view instrument_id, absl::string_view org_id, Quota::Period period) {
  return absl::StrCat(instrument_id, ".", org_id, ".", PeriodWord(period));
}

struct QuotaKey {
  std::string instrument_id;
  std::string org_id;
  Quota::Period period = Quota::PERIOD_UNSPECIFIED;
};

absl::StatusOr<QuotaKey> ParseQuotaName(const std::string& name, const std::string& field) {
  QuotaKey key;
  std::vector<std::string> parts;
  if (absl::StartsWith(name, "quotas/")) parts = absl::StrSplit(name.substr(7), '.');
  if (parts.size() == 3) {
    key.instrument_id = parts[0];
    key.org_id = parts[1];
    Quota::Period_Parse(absl::AsciiStrToUpper(parts[2]), &key.period);
  }
  if (key.period == Quota::PERIOD_UNSPECIFIED || !labshare::inventory::ValidId(key.instrument_id) ||
      !labshare::inventory::ValidId(key.org_id)) {
    return InvalidField(field, "must be quotas/{instrument}.{organization}.{week|month|quarter|year}",
                        "INVALID_NAME");
  }
  return key;
}

absl::Status QuotaNotFound(const std::string& name) {
  return MakeError(absl::StatusCode::kNotFound, "QUOTA_NOT_FOUND", name + " does not exist");
}

// The period instance of `period` in `zone` that contains t: [start, end).
// SetQuota stores IANA names only (Quota.time_zone); none, or a name stored
// before names were checked as such ("localtime"), is the default zone.
absl::StatusOr<std::pair<absl::Time, absl::Time>> PeriodAround(Quota::Period period, const std::string& zone,
                                                               absl::Time t) {
  absl::TimeZone tz;
  if (!LoadIanaTimeZone(zone, &tz) && !LoadIanaTimeZone(kDefaultTimeZone, &tz)) tz = absl::UTCTimeZone();
  const absl::CivilDay day = absl::ToCivilDay(t, tz);
  absl::CivilSecond start, end;
  switch (period) {
    case Quota::WEEK: {
      const absl::CivilDay monday = absl::PrevWeekday(day + 1, absl::Weekday::monday);
      start = monday;
      end = monday + 7;
      break;
    }
    case Quota::MONTH: {
      const absl::CivilMonth m(day);
      start = m;
      end = m + 1;
      break;
    }
    case Quota::QUARTER: {
      const absl::CivilMonth q(day.year(), (day.month() - 1) / 3 * 3 + 1);
      start = q;
      end = q + 3;
      break;
    }
    case Quota::YEAR: {
      const absl::CivilYear y(day);
      start = y;
      end = y + 1;
      break;
    }
    default:
      return InvalidField("quota.period", "choose WEEK, MONTH, QUARTER or YEAR");
  }
  return std::make_pair(absl::FromCivil(start, tz), absl::FromCivil(end, tz));
}

// The counter field of one period instance.
std::string CounterField(Quota::Period period, absl::Time period_start) {
  return absl::StrCat(PeriodWord(period), ":", Ms(period_start));
}

// A booking the quotas of its paying organisation count (SetQuota's "What
// counts"), and whether its time is used rather than committed.
bool Counted(const v1::Booking& b, bool* used) {
  if (b.mode() != labshare::type::v1::ON_SITE && b.mode() != labshare::type::v1::JOINT_RESEARCH) return false;
  switch (b.state()) {
    case v1::Booking::PENDING_APPROVAL:
    case v1::Booking::CONFIRMED:
    case v1::Booking::CHECKED_IN:
      *used = false;
      return true;
    case v1::Booking::COMPLETED:
    case v1::Booking::MISSED:
      *used = true;
      return true;
    default:
      return false;
  }
}

// Charges quota `q` with the bookings made before it (or while it did not
// exist) that it counts: those of its organisation on its instrument that
// start in its period instance around `now` or later and carry no charge of
// it yet. Each gains the charge in its document (written at the version
// read, etag and update_time renewed) and its reserved time goes to the
// counters, as committed or, once COMPLETED or MISSED, as used: as if the
// quota had been there when it was created. A booking created meanwhile
// under the quotas before this step would escape the charge: the step
// requires the instrument's booking index to hold as many bookings as when
// it was read, counting those that start in the period or later (which
// only creates change: the archive removes bookings of closed years); it is
// counted first, then read: a booking added in between makes the step a
// conflict, tried again.
absl::Status ChargeEarlierBookings(const DocStore& docs, const Quota& q, int partition,
                                   const std::string& instrument_id, const std::string& org_id, absl::Time now,
                                   Mutation* m) {
  LS_ASSIGN_OR_RETURN(auto current, PeriodAround(q.period(), q.time_zone(), now));
  const std::string index = keys::ByInstrument(partition, instrument_id);
  const int64_t from = Ms(current.first);
  LS_ASSIGN_OR_RETURN(auto replies,
                      docs.pool()->Pipeline({{"ZCOUNT", index, std::to_string(from), "+inf"},
                                             {"ZRANGEBYSCORE", index, std::to_string(from), "+inf"}}));
  if (replies.size() != 2 || replies[1].type != RedisValue::Type::kArray) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  m->guards.push_back({index, replies[0].integer, /*count=*/true, from});
  std::vector<std::string> doc_keys;
  doc_keys.reserve(replies[1].elements.size());
  for (const auto& id : replies[1].elements) doc_keys.push_back(keys::Booking(partition, id.str));
  LS_ASSIGN_OR_RETURN(auto found, docs.GetMany(doc_keys));
  const std::string organization = "organizations/" + org_id;
  const std::string counters = keys::QuotaCounters(partition, instrument_id, org_id);
  for (size_t i = 0; i < found.size(); ++i) {
    if (!found[i]) continue;  // archived meanwhile: no longer counted
    v1::Booking b;
    if (!b.ParseFromString(found[i]->data)) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", doc_keys[i] + " is unreadable");
    }
    bool used = false;
    if (b.payer_organization() != organization || !Counted(b, &used)) continue;
    if (std::any_of(b.quota_charges().begin(), b.quota_charges().end(),
                    [&](const v1::QuotaCharge& c) { return c.quota() == q.name(); })) {
      continue;
    }
    const absl::Time start = FromProto(b.reserved_interval().start_time());
    LS_ASSIGN_OR_RETURN(auto period, PeriodAround(q.period(), q.time_zone(), start));
    auto* charge = b.add_quota_charges();
    charge->set_quota(q.name());
    *charge->mutable_period_interval()->mutable_start_time() = ToProto(period.first);
    *charge->mutable_period_interval()->mutable_end_time() = ToProto(period.second);
    b.set_etag(std::to_string(found[i]->version + 1));
    *b.mutable_update_time() = ToProto(now);
    m->writes.push_back({doc_keys[i], SerializeDeterministic(b), found[i]->version});
    m->keep_first_answer.push_back(doc_keys[i]);  // a retry of its CreateBooking answers as first
    const int64_t ms = Ms(FromProto(b.reserved_interval().end_time())) - Ms(start);
    m->increments.push_back(
        {counters, absl::StrCat(CounterField(q.period(), period.first), used ? ":used" : ":committed"), ms});
  }
  return absl::OkStatus();
}

bool IsStaffOf(const Principal& p, const inv::Instrument& instrument) { return IsOwnerStaff(p, instrument); }

bool SeesAllQuotas(const Principal& p) {
  return p.HasAnyRole({Role::kConsortiumAdmin, Role::kAuditor, Role::kService});
}

}  // namespace

// ================================================================ cache

std::shared_ptr<const BookingManager::QuotaGroup> BookingManager::CachedQuotas(const std::string& instrument_id,
                                                                               const std::string& organization) {
  static const auto* kNone = new std::shared_ptr<const QuotaGroup>(std::make_shared<QuotaGroup>());
  const std::string key = absl::StrCat(instrument_id, "|", organization);
  absl::MutexLock lock(&quota_mu_);
  auto it = quota_cache_.find(key);
  return it == quota_cache_.end() ? *kNone : it->second;
}

absl::StatusOr<std::shared_ptr<const BookingManager::QuotaGroup>> BookingManager::LoadQuotas(
    const std::string& instrument_id, const std::string& organization) {
  const int partition = keys::Partition(instrument_id);
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::QuotaGroup(partition, instrument_id, organization)));
  auto group = std::make_shared<QuotaGroup>();
  if (doc) {
    v1::ListQuotasResponse stored;
    if (!stored.ParseFromString(doc->data)) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "stored quotas are unreadable");
    }
    group->version = doc->version;
    group->quotas.assign(stored.quotas().begin(), stored.quotas().end());
  }
  absl::MutexLock lock(&quota_mu_);
  auto& slot = quota_cache_[absl::StrCat(instrument_id, "|", organization)];
  if (!slot || slot->version <= group->version) slot = group;
  return std::shared_ptr<const QuotaGroup>(slot);
}

// ================================================================ booking side

absl::Status BookingManager::ChargeQuotas(PreparedCreate& out, const QuotaGroup& group, bool over_approved) const {
  v1::Booking& b = out.booking;
  CreateStep& step = out.step;
  const std::string org_id = IdOf(b.payer_organization());
  step.counters = out.budget;
  step.guard_key = keys::QuotaGroup(step.partition, step.instrument_id, org_id);
  step.guard_version = group.version;
  b.clear_quota_charges();
  const absl::Time start = FromProto(b.reserved_interval().start_time());
  const int64_t hours_ms = Ms(FromProto(b.reserved_interval().end_time())) - Ms(start);
  for (const Quota& q : group.quotas) {
    LS_ASSIGN_OR_RETURN(auto period, PeriodAround(q.period(), q.time_zone(), start));
    auto* charge = b.add_quota_charges();
    charge->set_quota(q.name());
    *charge->mutable_period_interval()->mutable_start_time() = ToProto(period.first);
    *charge->mutable_period_interval()->mutable_end_time() = ToProto(period.second);
    CounterCharge c;
    c.key = keys::QuotaCounters(step.partition, step.instrument_id, org_id);
    c.field = CounterField(q.period(), period.first);
    c.ms = hours_ms;
    c.limit_ms = absl::ToInt64Milliseconds(FromProto(q.allowance()));
    c.on_over = q.enforcement() == Quota::HARD_LIMIT ? CounterCharge::OnOver::kFail
                : over_approved                      ? CounterCharge::OnOver::kAllow
                                                     : CounterCharge::OnOver::kAskApproval;
    c.over_reason = "QUOTA";
    step.counters.push_back(std::move(c));
  }
  if (over_approved && b.state() == v1::Booking::CONFIRMED) {
    b.set_state(v1::Booking::PENDING_APPROVAL);
    b.set_approval_reason(v1::Booking::OVER_QUOTA);
  }
  SealCreate(out);
  return absl::OkStatus();
}

std::vector<CounterMove> BookingManager::QuotaMoves(const v1::Booking& before, v1::Booking::State after) {
  std::vector<CounterMove> moves;
  const int64_t ms = Ms(FromProto(before.reserved_interval().end_time())) -
                     Ms(FromProto(before.reserved_interval().start_time()));
  const bool used = after == v1::Booking::COMPLETED || after == v1::Booking::MISSED;
  const std::string instrument_id = IdOf(before.instrument());
  for (const auto& charge : before.quota_charges()) {
    auto key = ParseQuotaName(charge.quota(), "quota");
    if (!key.ok()) continue;  // written by this service; cannot happen
    CounterMove m;
    m.key = keys::QuotaCounters(keys::Partition(instrument_id), instrument_id, key->org_id);
    m.field = CounterField(key->period, FromProto(charge.period_interval().start_time()));
    m.committed_delta_ms = -ms;
    m.used_delta_ms = used ? ms : 0;
    moves.push_back(std::move(m));
  }
  return moves;
}

absl::Status BookingManager::PreviewQuotas(v1::Booking& b, const std::string& instrument_id) {
  const std::string org_id = IdOf(b.payer_organization());
  // The stored quotas, not this replica's cache (which may not hold them
  // yet): a preview has no step whose guard would catch a stale cache.
  LS_ASSIGN_OR_RETURN(const auto group, LoadQuotas(instrument_id, org_id));
  const absl::Time start = FromProto(b.reserved_interval().start_time());
  const int64_t ms = Ms(FromProto(b.reserved_interval().end_time())) - Ms(start);
  b.clear_quota_charges();
  for (const Quota& q : group->quotas) {
    LS_ASSIGN_OR_RETURN(auto period, PeriodAround(q.period(), q.time_zone(), start));
    // As ChargeQuotas charges it.
    auto* charge = b.add_quota_charges();
    charge->set_quota(q.name());
    *charge->mutable_period_interval()->mutable_start_time() = ToProto(period.first);
    *charge->mutable_period_interval()->mutable_end_time() = ToProto(period.second);
    const std::string field = CounterField(q.period(), period.first);
    LS_ASSIGN_OR_RETURN(RedisValue v, store_->docs().pool()->Command(
                                          {"HMGET", keys::QuotaCounters(keys::Partition(instrument_id), instrument_id, org_id),
                                           field + ":committed", field + ":used"}));
    int64_t taken = 0;
    for (const auto& e : v.elements) {
      int64_t n = 0;
      if (!e.is_nil() && absl::SimpleAtoi(e.str, &n)) taken += n;
    }
    if (taken + ms <= absl::ToInt64Milliseconds(FromProto(q.allowance()))) continue;
    if (q.enforcement() == Quota::HARD_LIMIT) {
      return Precondition("QUOTA_EXCEEDED", absl::StrCat(b.payer_organization(), " has not enough hours left in ",
                                                         q.name(), "; GetQuotaUsage shows what remains"));
    }
    if (b.state() == v1::Booking::CONFIRMED) {
      b.set_state(v1::Booking::PENDING_APPROVAL);
      b.set_approval_reason(v1::Booking::OVER_QUOTA);
    }
  }
  return absl::OkStatus();
}

// ================================================================ RPCs

absl::StatusOr<v1::Quota> BookingManager::SetQuota(const Principal& p, const v1::SetQuotaRequest& r) {
  Quota in = r.quota();
  LS_ASSIGN_OR_RETURN(std::string instrument_id, ParseName(in.instrument(), "instruments", "quota.instrument"));
  LS_ASSIGN_OR_RETURN(std::string org_id, ParseName(in.organization(), "organizations", "quota.organization"));
  if (in.period() == Quota::PERIOD_UNSPECIFIED || !Quota::Period_IsValid(in.period())) {
    return InvalidField("quota.period", "choose WEEK, MONTH, QUARTER or YEAR");
  }
  if (in.enforcement() == Quota::ENFORCEMENT_UNSPECIFIED || !Quota::Enforcement_IsValid(in.enforcement())) {
    return InvalidField("quota.enforcement", "choose HARD_LIMIT or REQUIRE_APPROVAL");
  }
  // Unset is zero, which forbids counted bookings (the comment on Quota).
  if (in.has_allowance() && FromProto(in.allowance()) < absl::ZeroDuration()) {
    return InvalidField("quota.allowance", "must be zero or more hours");
  }
  if (!in.has_allowance()) *in.mutable_allowance() = ToProto(absl::ZeroDuration());
  if (in.time_zone().empty()) in.set_time_zone(kDefaultTimeZone);
  if (absl::TimeZone tz; !LoadIanaTimeZone(in.time_zone(), &tz)) {
    return InvalidField("quota.time_zone", "unknown time zone \"" + in.time_zone() + "\"; use an IANA name");
  }
  LS_RETURN_IF_ERROR(PeriodAround(in.period(), in.time_zone(), clock_->Now()).status());
  LS_RETURN_IF_ERROR(inventory_->Instrument(in.instrument()).status());
  LS_RETURN_IF_ERROR(inventory_->Organization(in.organization()).status());

  const int partition = keys::Partition(instrument_id);
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency(partition, "SetQuota", r.request_id());
  const std::string fingerprint = RequestFingerprint("SetQuota", r, ActorName(p));
  return Claimed<Quota>(ClaimOf(p, "SetQuota", r.request_id(), r), [&] {
  return ReplayOrRetry<Quota>(idem, fingerprint, "quota", [&](int) -> absl::StatusOr<std::optional<Quota>> {
    LS_ASSIGN_OR_RETURN(auto group, LoadQuotas(instrument_id, org_id));
    const std::string name = "quotas/" + QuotaId(instrument_id, org_id, in.period());
    v1::ListQuotasResponse stored;
    const Quota* previous = nullptr;
    for (const auto& q : group->quotas) {
      if (q.name() == name) {
        previous = &q;
      } else {
        *stored.add_quotas() = q;
      }
    }
    if (!in.etag().empty() && (previous == nullptr || previous->etag() != in.etag())) {
      return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", name + " changed; read it again");
    }
    const absl::Time now = clock_->Now();
    Quota q = in;
    q.set_name(name);
    *q.mutable_create_time() = previous ? previous->create_time() : ToProto(now);
    *q.mutable_update_time() = ToProto(now);
    int64_t etag = 0;
    if (previous) absl::SimpleAtoi(previous->etag(), &etag);
    q.set_etag(std::to_string(etag + 1));
    *stored.add_quotas() = q;
    std::sort(stored.mutable_quotas()->begin(), stored.mutable_quotas()->end(),
              [](const Quota& a, const Quota& b) { return a.period() < b.period(); });
    v1::BookingEvent event = Event(p, r.request_id(), now);  // its update_time
    *event.mutable_quota_set()->mutable_quota() = q;
    if (previous) *event.mutable_quota_set()->mutable_previous() = *previous;
    Mutation m;
    m.idempotency_key = idem;
    m.fingerprint = fingerprint;
    m.response = SerializeDeterministic(q);
    m.writes.push_back({keys::QuotaGroup(partition, instrument_id, org_id), stored.SerializeAsString(), group->version});
    LS_RETURN_IF_ERROR(ChargeEarlierBookings(store_->docs(), q, partition, instrument_id, org_id, now, &m));
    m.index_ops.push_back({keys::QuotaIndex(partition), absl::StrCat(org_id, "|", instrument_id)});
    m.outbox_key = keys::Outbox(partition);
    m.event_type = v1::BookingEvent::descriptor()->full_name();
    m.event_payload = event.SerializeAsString();
    LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
    if (outcome.kind == CommitOutcome::Kind::kApplied) {
      LS_RETURN_IF_ERROR(LoadQuotas(instrument_id, org_id).status());  // refresh this replica's cache
    }
    if (outcome.kind == CommitOutcome::Kind::kConflict) return std::optional<Quota>();
    if (outcome.kind == CommitOutcome::Kind::kReplayed) {
      LS_ASSIGN_OR_RETURN(Quota replay, ParseAnswer<Quota>(outcome.response));
      return std::optional<Quota>(std::move(replay));
    }
    if (outcome.kind == CommitOutcome::Kind::kRequestReused) return RequestIdReused();
    return std::optional<Quota>(std::move(q));
  });
  });
}

absl::StatusOr<google::protobuf::Empty> BookingManager::DeleteQuota(const Principal& p, const v1::DeleteQuotaRequest& r) {
  LS_ASSIGN_OR_RETURN(QuotaKey key, ParseQuotaName(r.name(), "name"));
  const int partition = keys::Partition(key.instrument_id);
  const std::string idem = r.request_id().empty() ? "" : keys::Idempotency(partition, "DeleteQuota", r.request_id());
  const std::string fingerprint = RequestFingerprint("DeleteQuota", r, ActorName(p));
  google::protobuf::Empty none;
  return Claimed<google::protobuf::Empty>(ClaimOf(p, "DeleteQuota", r.request_id(), r), [&] {
  return ReplayOrRetry<google::protobuf::Empty>(
      idem, fingerprint, "quota", [&](int) -> absl::StatusOr<std::optional<google::protobuf::Empty>> {
        LS_ASSIGN_OR_RETURN(auto group, LoadQuotas(key.instrument_id, key.org_id));
        v1::ListQuotasResponse stored;
        const Quota* gone = nullptr;
        for (const auto& q : group->quotas) {
          if (q.name() == r.name()) {
            gone = &q;
          } else {
            *stored.add_quotas() = q;
          }
        }
        if (gone == nullptr) return QuotaNotFound(r.name());
        if (!r.etag().empty() && r.etag() != gone->etag()) {
          return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", r.name() + " changed; read it again");
        }
        // A deletion stamps no time on the quota: its own step's reading.
        v1::BookingEvent event = Event(p, r.request_id(), clock_->Now());
        *event.mutable_quota_deleted()->mutable_quota() = *gone;
        Mutation m;
        m.idempotency_key = idem;
        m.fingerprint = fingerprint;
        m.response = none.SerializeAsString();
        // The document stays (empty) so that its version keeps rising and
        // every replica's cached copy is seen to be stale.
        m.writes.push_back({keys::QuotaGroup(partition, key.instrument_id, key.org_id), stored.SerializeAsString(),
                            group->version});
        if (stored.quotas().empty()) {
          m.index_ops.push_back({keys::QuotaIndex(partition), absl::StrCat(key.org_id, "|", key.instrument_id), true});
        }
        m.outbox_key = keys::Outbox(partition);
        m.event_type = v1::BookingEvent::descriptor()->full_name();
        m.event_payload = event.SerializeAsString();
        LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
        if (outcome.kind == CommitOutcome::Kind::kApplied) {
          LS_RETURN_IF_ERROR(LoadQuotas(key.instrument_id, key.org_id).status());
        }
        if (outcome.kind == CommitOutcome::Kind::kConflict) return std::optional<google::protobuf::Empty>();
        if (outcome.kind == CommitOutcome::Kind::kRequestReused) return RequestIdReused();
        return std::optional<google::protobuf::Empty>(none);
      });
  });
}

absl::StatusOr<v1::ListQuotasResponse> BookingManager::ListQuotas(const Principal& p, const v1::ListQuotasRequest& r) {
  // Authorization before validation: an organisation filter outside the
  // caller's scope fails rather than answering an empty page (FACILITY_STAFF
  // may name another organisation on an instrument its organisation owns or
  // operates).
  // (A malformed instrument names no owner: the scope is checked without
  // one, the name afterwards.) Without an instrument filter FACILITY_STAFF
  // may name any organisation: each row is then shown only if the staff may
  // see it (below). An instrument that does not exist has no quotas: an
  // empty page, as for every caller (ListQuotas lists no NOT_FOUND).
  LS_RETURN_IF_ERROR(CheckPageSize(r.page_size()));  // before the scope and every other check
  const bool staff = p.HasRole(Role::kFacilityStaff);
  bool no_such_instrument = false;
  if (!r.organization().empty()) {
    if (r.instrument().empty() || !ParseName(r.instrument(), "instruments", "instrument").ok()) {
      if (!(staff && r.instrument().empty())) {
        LS_RETURN_IF_ERROR(CheckScope("ListQuotas", p, {"", {r.organization()}, {}}));
      }
    } else {
      absl::Status scope = CheckScopeOn("ListQuotas", p, *inventory_, r.instrument(), {"", {r.organization()}, {}});
      if (scope.code() == absl::StatusCode::kNotFound) {
        no_such_instrument = true;
      } else {
        LS_RETURN_IF_ERROR(scope);
      }
    }
  }
  std::string instrument_id, org_id;
  if (!r.instrument().empty()) {
    LS_ASSIGN_OR_RETURN(instrument_id, ParseName(r.instrument(), "instruments", "instrument"));
  }
  if (!r.organization().empty()) {
    LS_ASSIGN_OR_RETURN(org_id, ParseName(r.organization(), "organizations", "organization"));
  }
  if (!Quota::Period_IsValid(r.period())) return InvalidField("period", "unknown period");
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  if (no_such_instrument) return v1::ListQuotasResponse();
  const bool all = SeesAllQuotas(p);
  const std::string own = ActorOrganization(p);
  if (!all && !staff && !r.organization().empty() && r.organization() != own) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "you may list only your own organisation's quotas");
  }
  // Index members "<org>|<instr>" of the partitions in question, in order
  // of organisation, then instrument. Positions join the ids with ' ', which
  // sorts before every id character, so that they order as the pairs do
  // ("organizations/a" before "organizations/a-b"; '|' would sort after).
  std::vector<std::string> members;
  for (int partition = 0; partition < kPartitions; ++partition) {
    if (!instrument_id.empty() && partition != keys::Partition(instrument_id)) continue;
    LS_ASSIGN_OR_RETURN(auto part, store_->docs().IndexRange(keys::QuotaIndex(partition), "", 100000));
    for (auto& m : part) {
      const std::vector<std::string> ids = absl::StrSplit(m, '|');
      if (ids.size() != 2) continue;
      if (!org_id.empty() && ids[0] != org_id) continue;
      if (!instrument_id.empty() && ids[1] != instrument_id) continue;
      members.push_back(absl::StrCat(ids[0], " ", ids[1]));
    }
  }
  std::sort(members.begin(), members.end());
  v1::ListQuotasResponse out;
  std::string last;
  for (size_t i = 0; i < members.size(); ++i) {
    if (!page.after.empty() && members[i] + " ~" <= page.after) continue;
    const std::vector<std::string> ids = absl::StrSplit(members[i], ' ');
    const int partition = keys::Partition(ids[1]);
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::QuotaGroup(partition, ids[1], ids[0])));
    if (!doc) continue;
    v1::ListQuotasResponse stored;
    stored.ParseFromString(doc->data);
    bool visible = all || "organizations/" + ids[0] == own;
    if (!visible && staff) {
      // An instrument gone from inventory is nobody's; inventory out of
      // reach is an error, never a page that leaves quotas out.
      auto instrument = inventory_->Instrument("instruments/" + ids[1]);
      if (!instrument.ok() && !absl::IsNotFound(instrument.status())) return instrument.status();
      visible = instrument.ok() && IsStaffOf(p, **instrument);
    }
    if (!visible) continue;
    for (const auto& q : stored.quotas()) {
      const std::string position = absl::StrCat(members[i], " ", static_cast<int>(q.period()));
      if (!page.after.empty() && position <= page.after) continue;
      if (r.period() != Quota::PERIOD_UNSPECIFIED && q.period() != r.period()) continue;
      if (out.quotas_size() == page.page_size) {
        out.set_next_page_token(page_tokens_.Make(r, p, last));
        return out;
      }
      *out.add_quotas() = q;
      last = position;
    }
  }
  return out;
}

absl::StatusOr<v1::QuotaUsage> BookingManager::GetQuotaUsage(const Principal& p, const v1::GetQuotaUsageRequest& r) {
  LS_ASSIGN_OR_RETURN(QuotaKey key, ParseQuotaName(r.quota(), "quota"));
  // Authorization before the lookup: the name says whose quota it is (an
  // instrument that is gone has no quota either).
  absl::Status scope = CheckScopeOn("GetQuotaUsage", p, *inventory_, "instruments/" + key.instrument_id,
                                    {"", {"organizations/" + key.org_id}, {}});
  if (scope.code() == absl::StatusCode::kNotFound) return QuotaNotFound(r.quota());
  LS_RETURN_IF_ERROR(scope);
  LS_ASSIGN_OR_RETURN(auto group, LoadQuotas(key.instrument_id, key.org_id));
  const Quota* quota = nullptr;
  for (const auto& q : group->quotas) {
    if (q.name() == r.quota()) quota = &q;
  }
  if (quota == nullptr) return QuotaNotFound(r.quota());
  const absl::Time at = r.has_time() ? FromProto(r.time()) : clock_->Now();
  LS_ASSIGN_OR_RETURN(auto period, PeriodAround(quota->period(), quota->time_zone(), at));
  const int partition = keys::Partition(key.instrument_id);
  const std::string field = CounterField(quota->period(), period.first);
  LS_ASSIGN_OR_RETURN(RedisValue v, store_->docs().pool()->Command(
                                        {"HMGET", keys::QuotaCounters(partition, key.instrument_id, key.org_id),
                                         field + ":committed", field + ":used"}));
  int64_t committed = 0, used = 0;
  if (v.elements.size() == 2) {
    if (!v.elements[0].is_nil()) absl::SimpleAtoi(v.elements[0].str, &committed);
    if (!v.elements[1].is_nil()) absl::SimpleAtoi(v.elements[1].str, &used);
  }
  v1::QuotaUsage out;
  out.set_quota(quota->name());
  out.set_organization(quota->organization());
  out.set_instrument(quota->instrument());
  *out.mutable_period_interval()->mutable_start_time() = ToProto(period.first);
  *out.mutable_period_interval()->mutable_end_time() = ToProto(period.second);
  *out.mutable_allowance() = quota->allowance();
  const absl::Duration allowance = FromProto(quota->allowance());
  *out.mutable_used() = ToProto(absl::Milliseconds(used));
  *out.mutable_committed() = ToProto(absl::Milliseconds(committed));
  *out.mutable_remaining() = ToProto(allowance - absl::Milliseconds(used + committed));
  out.set_enforcement(quota->enforcement());
  return out;
}

}  // namespace labshare::booking
