// The rest of the usage contract on top of the figures: the thresholds
// singleton, idle and under-shared assessments, the sharing matrix, the
// annual report (and its CSV) and the usage export.
#include <openssl/evp.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/csv.h"
#include "common/doc_store.h"
#include "common/error.h"
#include "common/events.h"
#include "common/proto_util.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_internal.h"

namespace labshare::usage {
namespace {

namespace iv = labshare::inventory::v1;
using labshare::type::v1::Money;
using labshare::type::v1::SharingMode;

constexpr char kThresholdsKey[] = "{usage}:thresholds";
constexpr char kOutbox[] = "{usage}:outbox";
constexpr char kThresholdsName[] = "thresholds";
constexpr int64_t kYearSeconds = 31536000;  // 365 days
constexpr int kCommitAttempts = 5;
// The position of an idle or under-shared listing without a range starts
// with the range its first page resolved: "r<start>,<end>\x1e" (Unix
// seconds), then the last key returned.
constexpr char kRangePrefix[] = "r";
constexpr char kRangeEnd[] = "\x1e";

bool Overseer(const Principal& p) { return p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin}); }

// MEMBER_BILLING_ADMIN and FACILITY_STAFF: `owners` must be exactly [own]
// (a token without an organisation has none to name).
template <typename Repeated>
absl::Status OwnerScope(const Principal& p, const Repeated& owners, absl::string_view field) {
  if (Overseer(p)) return absl::OkStatus();
  const std::string own = ActorOrganization(p);
  if (!own.empty() && owners.size() == 1 && *owners.begin() == own) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   absl::StrCat("name exactly your own organisation in ", field));
}

v1::Thresholds Defaults(const std::string& currency) {
  v1::Thresholds t;
  t.set_name(kThresholdsName);
  auto* band = t.add_bands();
  band->mutable_min_original_value()->set_currency_code(currency);
  band->mutable_min_original_value()->set_amount_minor(0);
  band->set_idle_effective_seconds_per_year(2880000);  // 800 h
  band->set_min_external_seconds_per_year(0);
  band->set_min_sharing_rate_bp(1600);  // 16 %
  t.set_minimum_assessed_days(30);
  t.set_default_lease_counted_hours_per_day(8);
  return t;
}

// The fields of the given update_mask paths ("bands",
// "minimum_assessed_days", "default_lease_counted_hours_per_day"); each
// path's fields are checked on their own, so a request's values can be
// checked before the stored thresholds are read.
absl::Status ValidateThresholdPaths(const v1::Thresholds& t, const std::string& currency,
                                    const std::vector<std::string>& paths) {
  auto has = [&paths](absl::string_view path) { return std::find(paths.begin(), paths.end(), path) != paths.end(); };
  if (has("bands") && t.bands().empty()) return InvalidField("thresholds.bands", "at least one band");
  for (int i = 0; has("bands") && i < t.bands_size(); ++i) {
    const auto& b = t.bands(i);
    const std::string field = absl::StrCat("thresholds.bands[", i, "]");
    if (b.min_original_value().currency_code() != currency) {
      return InvalidField(field + ".min_original_value",
                          absl::StrCat("must be in the reporting currency ", currency), "CURRENCY_MISMATCH");
    }
    if (b.min_original_value().amount_minor() < 0 || b.idle_effective_seconds_per_year() < 0 ||
        b.min_external_seconds_per_year() < 0 || b.min_sharing_rate_bp() < 0) {
      return InvalidField(field, "values must not be negative");
    }
    if (b.min_sharing_rate_bp() > 10000) {
      return InvalidField(field + ".min_sharing_rate_bp", "at most 10000 basis points");
    }
    if (i == 0 && b.min_original_value().amount_minor() != 0) {
      return InvalidField(field + ".min_original_value", "the first band starts at 0");
    }
    if (i > 0 && b.min_original_value().amount_minor() <= t.bands(i - 1).min_original_value().amount_minor()) {
      return InvalidField(field + ".min_original_value", "bands must be strictly ascending by min_original_value");
    }
  }
  if (has("minimum_assessed_days") && t.minimum_assessed_days() < 0) {
    return InvalidField("thresholds.minimum_assessed_days", "must not be negative");
  }
  if (has("default_lease_counted_hours_per_day") &&
      (t.default_lease_counted_hours_per_day() < 1 || t.default_lease_counted_hours_per_day() > 24)) {
    return InvalidField("thresholds.default_lease_counted_hours_per_day", "must be 1..24");
  }
  return absl::OkStatus();
}

absl::Status ValidateThresholds(const v1::Thresholds& t, const std::string& currency) {
  return ValidateThresholdPaths(t, currency, {"bands", "minimum_assessed_days", "default_lease_counted_hours_per_day"});
}

// A band value without a currency is in the reporting currency.
void FillBandCurrency(v1::Thresholds* t, const std::string& currency) {
  for (auto& b : *t->mutable_bands()) {
    if (b.min_original_value().currency_code().empty()) b.mutable_min_original_value()->set_currency_code(currency);
  }
}

// round_half_up(t x seconds / 31536000), at most INT64_MAX (a threshold
// near INT64_MAX a year over a range longer than a year would not fit).
int64_t Prorate(int64_t t, int64_t seconds) {
  const __int128 n = (static_cast<__int128>(t) * seconds + kYearSeconds / 2) / kYearSeconds;
  return n > std::numeric_limits<int64_t>::max() ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(n);
}

v1::InstrumentAssessment AssessOne(const v1::UsageFigures& fig, const iv::Instrument& ins,
                                   const v1::Thresholds& t, const v1::ThresholdOverride& o,
                                   const std::map<std::string, std::string>& org_names,
                                   const std::map<std::string, std::string>& fac_names, const std::string& currency,
                                   bool enough_days) {
  v1::InstrumentAssessment a;
  a.set_instrument(ins.name());
  a.set_instrument_display_name(ins.display_name());
  a.set_owner_organization(ins.owner_organization());
  auto name_of = [](const std::map<std::string, std::string>& m, const std::string& k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  a.set_owner_organization_display_name(name_of(org_names, ins.owner_organization()));
  a.set_facility(ins.facility());
  a.set_facility_display_name(name_of(fac_names, ins.facility()));
  a.set_category(ins.category());
  if (ins.has_original_value()) *a.mutable_original_value() = ins.original_value();
  *a.mutable_figures() = fig;
  // The band: the largest min_original_value <= the value (first if unknown).
  int band = 0;
  if (ins.has_original_value() && ins.original_value().currency_code() == currency) {
    for (int i = 0; i < t.bands_size(); ++i) {
      if (t.bands(i).min_original_value().amount_minor() <= ins.original_value().amount_minor()) band = i;
    }
  }
  a.set_band_index(band);
  const auto& b = t.bands(band);
  const int64_t idle = o.has_idle_effective_seconds_per_year() ? o.idle_effective_seconds_per_year()
                                                                : b.idle_effective_seconds_per_year();
  const int64_t ext = o.has_min_external_seconds_per_year() ? o.min_external_seconds_per_year()
                                                            : b.min_external_seconds_per_year();
  const int32_t bp = o.has_min_sharing_rate_bp() ? o.min_sharing_rate_bp() : b.min_sharing_rate_bp();
  const int64_t in_service = fig.calendar_seconds();
  a.set_idle_threshold_seconds(Prorate(idle, in_service));
  a.set_min_external_threshold_seconds(Prorate(ext, in_service));
  a.set_min_sharing_rate_bp(bp);
  // minimum_assessed_days: calendar days in service (UsageFigures::InServiceDays).
  a.set_assessed(enough_days);
  if (a.assessed()) {
    a.set_idle(fig.effective_seconds() < a.idle_threshold_seconds());
    a.set_under_shared(fig.effective_seconds() > 0 &&
                       (fig.sharing_rate().basis_points() < bp ||
                        (a.min_external_threshold_seconds() > 0 &&
                         fig.external_seconds() < a.min_external_threshold_seconds())));
  }
  return a;
}

void Count(v1::AssessmentCounts* c, const v1::InstrumentAssessment& a) {
  c->set_instruments(c->instruments() + 1);
  if (a.assessed()) c->set_assessed(c->assessed() + 1);
  if (a.idle()) c->set_idle(c->idle() + 1);
  if (a.under_shared()) c->set_under_shared(c->under_shared() + 1);
}

// ------------------------------------------------------------ CSV

std::string CsvLine(const std::vector<std::string>& cells) {
  std::string out;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i > 0) out += ',';
    out += CsvCell(cells[i], /*numeric=*/true);
  }
  out += "\r\n";
  return out;
}

// seconds / 3600, rounded half up to two decimals.
std::string Hours(int64_t seconds) {
  const bool negative = seconds < 0;
  const __int128 s = negative ? -static_cast<__int128>(seconds) : seconds;
  const int64_t centi = static_cast<int64_t>((s * 100 + 1800) / 3600);
  return absl::StrFormat("%s%d.%02d", negative ? "-" : "", centi / 100, centi % 100);
}

// The UsageFigures columns, in field-number order (see EXPORT_FORMAT_CSV).
std::vector<const google::protobuf::FieldDescriptor*> FigureFields() {
  const auto* d = v1::UsageFigures::descriptor();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  for (int i = 0; i < d->field_count(); ++i) fields.push_back(d->field(i));
  std::sort(fields.begin(), fields.end(), [](auto* a, auto* b) { return a->number() < b->number(); });
  return fields;
}

void FigureHeader(std::vector<std::string>* cols) {
  for (const auto* f : FigureFields()) {
    const std::string& n = f->name();
    if (f->is_repeated()) {
      cols->push_back(n);
    } else if (f->message_type() == v1::Ratio::descriptor()) {
      cols->push_back(n + "_numerator");
      cols->push_back(n + "_denominator");
      cols->push_back(n + "_bp");
    } else if (f->message_type() == Money::descriptor()) {
      cols->push_back(n + "_minor");
    } else {
      cols->push_back(n);
      if (absl::EndsWith(n, "_seconds")) cols->push_back(n.substr(0, n.size() - 8) + "_hours");
    }
  }
}

void FigureCells(const v1::UsageFigures& fig, std::vector<std::string>* cells) {
  const auto* r = fig.GetReflection();
  for (const auto* f : FigureFields()) {
    if (f->is_repeated()) {
      std::vector<std::string> parts;
      for (int i = 0; i < r->FieldSize(fig, f); ++i) {
        const auto& m = static_cast<const Money&>(r->GetRepeatedMessage(fig, f, i));
        parts.push_back(absl::StrCat(m.currency_code(), ":", m.amount_minor()));
      }
      cells->push_back(absl::StrJoin(parts, ";"));
    } else if (f->message_type() == v1::Ratio::descriptor()) {
      // All three cells empty when the ratio is undefined or not set.
      const auto& ratio = static_cast<const v1::Ratio&>(r->GetMessage(fig, f));
      const bool defined = r->HasField(fig, f) && ratio.defined();
      cells->push_back(defined ? absl::StrCat(ratio.numerator()) : "");
      cells->push_back(defined ? absl::StrCat(ratio.denominator()) : "");
      cells->push_back(defined ? absl::StrCat(ratio.basis_points()) : "");
    } else if (f->message_type() == Money::descriptor()) {
      cells->push_back(r->HasField(fig, f) ? absl::StrCat(static_cast<const Money&>(r->GetMessage(fig, f)).amount_minor())
                                           : "");
    } else {
      const int64_t v = r->GetInt64(fig, f);
      cells->push_back(absl::StrCat(v));
      if (absl::EndsWith(f->name(), "_seconds")) cells->push_back(Hours(v));
    }
  }
}

std::string KeyColumnName(v1::Dimension d) {
  switch (d) {
    case v1::DIMENSION_INSTRUMENT: return "instrument";
    case v1::DIMENSION_OWNER_ORGANIZATION: return "owner_organization";
    case v1::DIMENSION_FACILITY: return "facility";
    case v1::DIMENSION_CATEGORY: return "category";
    case v1::DIMENSION_USER_ORGANIZATION: return "user_organization";
    case v1::DIMENSION_SHARING_MODE: return "mode";
    default: return "";
  }
}

std::string KeyValue(const v1::UsageGroupKey& k, v1::Dimension d) {
  switch (d) {
    case v1::DIMENSION_INSTRUMENT: return k.instrument();
    case v1::DIMENSION_OWNER_ORGANIZATION: return k.owner_organization();
    case v1::DIMENSION_FACILITY: return k.facility();
    case v1::DIMENSION_CATEGORY: return k.category();
    case v1::DIMENSION_USER_ORGANIZATION: return k.user_organization();
    case v1::DIMENSION_SHARING_MODE: return labshare::type::v1::SharingMode_Name(k.mode());
    default: return "";
  }
}

// The header of an event of `p`'s call, published now.
void Stamp(const Principal& p, absl::Time now, const std::string& request_id, v1::UsageEvent* event) {
  auto* h = event->mutable_header();
  h->set_event_id(NewEventId());
  *h->mutable_event_time() = ToProto(now);
  h->set_request_id(request_id);
  h->set_actor(ActorName(p));
  h->set_actor_organization(ActorOrganization(p));
  h->set_trace_id(p.trace_id);
}

// An answer stored for replay by DocStore (request_id idempotency).
template <typename Msg>
absl::StatusOr<Msg> StoredAnswer(const std::string& bytes) {
  Msg m;
  if (!m.ParseFromString(bytes)) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "stored answer unreadable");
  }
  return m;
}

absl::Status BadResumeToken() {
  return InvalidField("resume_token", "not a resume_token of this same export; start again without it",
                      "INVALID_RESUME_TOKEN");
}

}  // namespace

// ================================================================ plumbing

absl::StatusOr<UsageFigures::Names> UsageFigures::LoadNames() const {
  LS_ASSIGN_OR_RETURN(auto replies,
                      pool_->Pipeline({{"HGETALL", "{usage}:orgname"}, {"HGETALL", "{usage}:facname"}}));
  Names names;
  for (size_t i = 0; i + 1 < replies[0].elements.size(); i += 2) {
    names.orgs[replies[0].elements[i].str] = replies[0].elements[i + 1].str;
  }
  for (size_t i = 0; i + 1 < replies[1].elements.size(); i += 2) {
    names.facilities[replies[1].elements[i].str] = replies[1].elements[i + 1].str;
  }
  return names;
}

absl::Status UsageFigures::Publish(const Principal& p, v1::UsageEvent event) const {
  Stamp(p, clock_->Now(), "", &event);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"XADD", kOutbox, "*", "type",
                                                    v1::UsageEvent::descriptor()->full_name(), "payload",
                                                    event.SerializeAsString()}));
  if (v.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "could not publish the event");
  return absl::OkStatus();
}

// ================================================================ thresholds

absl::StatusOr<v1::Thresholds> UsageFigures::LoadThresholds() const {
  DocStore docs(pool_);
  for (int attempt = 0; attempt < kCommitAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto doc, docs.Get(kThresholdsKey));
    if (doc) {
      v1::Thresholds t;
      if (!t.ParseFromString(doc->data)) {
        return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "stored thresholds unreadable");
      }
      t.set_etag(std::to_string(doc->version));
      return t;
    }
    // First use: store the defaults so that create_time and the etag stay.
    v1::Thresholds t = Defaults(currency_);
    *t.mutable_create_time() = ToProto(clock_->Now());
    *t.mutable_update_time() = t.create_time();
    t.set_etag("1");
    Mutation m;
    m.writes.push_back({kThresholdsKey, t.SerializeAsString(), 0});
    LS_ASSIGN_OR_RETURN(CommitOutcome outcome, docs.Commit(m));
    if (outcome.kind == CommitOutcome::Kind::kApplied) return t;
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION", "thresholds are being changed; retry");
}

absl::StatusOr<v1::Thresholds> UsageFigures::GetThresholds(const Principal&, const v1::GetThresholdsRequest& r) {
  if (r.name() != kThresholdsName) return InvalidField("name", "must be \"thresholds\"", "INVALID_NAME");
  return LoadThresholds();
}

absl::StatusOr<v1::Thresholds> UsageFigures::UpdateThresholds(const Principal& p,
                                                             const v1::UpdateThresholdsRequest& r) {
  constexpr char kMethod[] = "UpdateThresholds";
  if (r.thresholds().name() != kThresholdsName) {
    return InvalidField("thresholds.name", "must be \"thresholds\"", "INVALID_NAME");
  }
  static const char* const kPaths[] = {"bands", "minimum_assessed_days", "default_lease_counted_hours_per_day"};
  std::vector<std::string> paths(r.update_mask().paths().begin(), r.update_mask().paths().end());
  if (paths.empty()) paths.assign(std::begin(kPaths), std::end(kPaths));
  for (const auto& path : paths) {
    if (std::find(std::begin(kPaths), std::end(kPaths), path) == std::end(kPaths)) {
      return InvalidField("update_mask",
                          absl::StrCat("'", path, "' cannot be updated; allowed: ", absl::StrJoin(kPaths, ", ")),
                          "INVALID_UPDATE_MASK");
    }
  }
  // The request's values before anything stored is looked at: an invalid
  // change is INVALID_ARGUMENT whatever the etag (a stale etag included).
  {
    v1::Thresholds proposed = r.thresholds();
    FillBandCurrency(&proposed, currency_);
    LS_RETURN_IF_ERROR(ValidateThresholdPaths(proposed, currency_, paths));
  }
  DocStore docs(pool_);
  const std::string idem = r.request_id().empty() ? "" : absl::StrCat("{usage}:idem:", kMethod, ":", r.request_id());
  const std::string fingerprint = RequestFingerprint(kMethod, r, ActorName(p));
  auto replay = StoredAnswer<v1::Thresholds>;
  LS_ASSIGN_OR_RETURN(auto seen, docs.FindReplay(idem, fingerprint));
  if (seen) return replay(*seen);
  const bool conditional = !r.thresholds().etag().empty();
  for (int attempt = 0; attempt < kCommitAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(v1::Thresholds current, LoadThresholds());
    int64_t version = 0;
    absl::SimpleAtoi(current.etag(), &version);
    if (conditional && r.thresholds().etag() != current.etag()) {
      return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH",
                       "the thresholds changed since they were read; read them again and retry");
    }
    v1::Thresholds next = current;
    for (const auto& path : paths) {
      if (path == "bands") {
        *next.mutable_bands() = r.thresholds().bands();
        FillBandCurrency(&next, currency_);
      } else if (path == "minimum_assessed_days") {
        next.set_minimum_assessed_days(r.thresholds().minimum_assessed_days());
      } else {
        next.set_default_lease_counted_hours_per_day(r.thresholds().default_lease_counted_hours_per_day());
      }
    }
    LS_RETURN_IF_ERROR(ValidateThresholds(next, currency_));
    const absl::Time now = clock_->Now();  // one reading: the event's time is the change's
    *next.mutable_update_time() = ToProto(now);
    next.set_updated_by(ActorName(p));
    next.set_etag(std::to_string(version + 1));
    v1::UsageEvent event;
    Stamp(p, now, r.request_id(), &event);
    auto* changed = event.mutable_thresholds_changed();
    *changed->mutable_previous() = current;
    *changed->mutable_current() = next;
    for (const auto& path : paths) changed->mutable_update_mask()->add_paths(path);
    Mutation m;
    m.idempotency_key = idem;
    m.fingerprint = fingerprint;
    m.response = SerializeDeterministic(next);
    m.writes.push_back({kThresholdsKey, next.SerializeAsString(), version});
    m.outbox_key = kOutbox;
    m.event_type = v1::UsageEvent::descriptor()->full_name();
    m.event_payload = event.SerializeAsString();
    LS_ASSIGN_OR_RETURN(CommitOutcome outcome, docs.Commit(m));
    switch (outcome.kind) {
      case CommitOutcome::Kind::kApplied: return next;
      case CommitOutcome::Kind::kReplayed: return replay(outcome.response);
      case CommitOutcome::Kind::kRequestReused: return RequestIdReused();
      case CommitOutcome::Kind::kConflict:
        if (conditional) {
          return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH",
                           "the thresholds changed since they were read; read them again and retry");
        }
        break;  // somebody else wrote first: read again
    }
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the thresholds are being changed concurrently; retry with the same request_id");
}

// ================================================================ audit trail

absl::StatusOr<v1::VerifyAuditChainResponse> UsageFigures::VerifyAuditChain(const Principal& p,
                                                                            const v1::VerifyAuditChainRequest& r,
                                                                            const AuditChain& audit,
                                                                            absl::Time deadline) const {
  constexpr char kMethod[] = "VerifyAuditChain";
  DocStore docs(pool_);
  // The caller's own request ids: another auditor's same id is another request.
  const std::string idem =
      r.request_id().empty() ? "" : absl::StrCat("{usage}:idem:", kMethod, ":", ActorName(p), ":", r.request_id());
  const std::string fingerprint = RequestFingerprint(kMethod, r, ActorName(p));
  LS_ASSIGN_OR_RETURN(auto seen, docs.FindReplay(idem, fingerprint));
  if (seen) return StoredAnswer<v1::VerifyAuditChainResponse>(*seen);
  LS_ASSIGN_OR_RETURN(v1::VerifyAuditChainResponse resp, audit.Verify(r, deadline));
  // A run the caller can no longer receive is neither stored nor published.
  if (absl::Now() >= deadline) {
    return MakeError(absl::StatusCode::kDeadlineExceeded, "DEADLINE_EXCEEDED",
                     "the deadline passed before the verification was recorded; verify in smaller ranges "
                     "or allow more time");
  }
  v1::UsageEvent event;
  Stamp(p, clock_->Now(), r.request_id(), &event);
  auto* run = event.mutable_audit_verification_run();
  run->set_start_sequence(resp.start_sequence());
  run->set_end_sequence(resp.end_sequence());
  run->set_result(resp.result());
  run->set_entries_checked(resp.entries_checked());
  run->set_anchors_checked(resp.anchors_checked());
  if (resp.has_first_break()) *run->mutable_first_break() = resp.first_break();
  *run->mutable_head() = resp.head();
  *run->mutable_verify_time() = resp.verify_time();
  // The answer and its event in one step: a retry replays the answer of the
  // run that was published, a concurrent twin of the request is refused or
  // replayed by the step, never published twice.
  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = SerializeDeterministic(resp);
  m.outbox_key = kOutbox;
  m.event_type = v1::UsageEvent::descriptor()->full_name();
  m.event_payload = event.SerializeAsString();
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, docs.Commit(m));
  if (outcome.kind == CommitOutcome::Kind::kReplayed) {
    return StoredAnswer<v1::VerifyAuditChainResponse>(outcome.response);
  }
  if (outcome.kind == CommitOutcome::Kind::kRequestReused) return RequestIdReused();
  return resp;  // applied (no document is written, so no version conflict)
}

absl::Status UsageFigures::PublishAuditExport(const Principal& p, int64_t start_sequence, int64_t end_sequence,
                                              const v1::ExportTrailer& trailer) const {
  v1::UsageEvent e;
  auto* x = e.mutable_report_exported();
  x->set_kind(v1::EXPORT_KIND_AUDIT_TRAIL);
  x->set_start_sequence(start_sequence);
  x->set_end_sequence(end_sequence);
  *x->mutable_trailer() = trailer;
  return Publish(p, std::move(e));
}

// ================================================================ assessments

// What ValidateThresholdPaths refuses in a band, for both lists: the idle
// list's assessments carry under_shared too, judged by the override's rate.
absl::Status UsageFigures::CheckOverride(const v1::ThresholdOverride& o) const {
  if ((o.has_idle_effective_seconds_per_year() && o.idle_effective_seconds_per_year() < 0) ||
      (o.has_min_external_seconds_per_year() && o.min_external_seconds_per_year() < 0) ||
      (o.has_min_sharing_rate_bp() && o.min_sharing_rate_bp() < 0)) {
    return InvalidField("threshold_override", "values must not be negative");
  }
  if (o.has_min_sharing_rate_bp() && o.min_sharing_rate_bp() > 10000) {
    return InvalidField("threshold_override.min_sharing_rate_bp", "at most 10000 basis points");
  }
  return absl::OkStatus();
}

bool UsageFigures::OwnFiguresFilter(const std::map<std::string, Instr>& instruments, const v1::UsageFilter& f,
                                    absl::CivilDay to, v1::UsageFilter* own) const {
  auto in = [](const auto& list, const std::string& v) {
    return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
  };
  for (const auto& [id, x] : instruments) {
    const iv::Instrument& v = *x.VersionAt(absl::FromCivil(to - 1, zone_));
    if (in(f.owner_organizations(), v.owner_organization()) && in(f.facilities(), v.facility()) &&
        in(f.categories(), v.category())) {
      own->add_instruments(x.instrument.name());
    }
  }
  return own->instruments_size() > 0;
}

const iv::Instrument* UsageFigures::EndVersion(const std::map<std::string, Instr>& instruments,
                                              const v1::UsageRow& row, absl::CivilDay to,
                                              std::string* latest_name) const {
  // A row of use or postings only (the instrument not in service in the
  // range, or its version at the end outside the filter) is not assessed.
  if (row.figures().instrument_count() == 0) return nullptr;
  auto it = instruments.find(row.key().instrument().substr(row.key().instrument().rfind('/') + 1));
  if (it == instruments.end()) return nullptr;
  if (latest_name != nullptr) *latest_name = it->second.instrument.display_name();
  // As the row's instrument set: the version in force at the start of the
  // range's last day (owner, facility, category, value); the name is the
  // latest, like the organisations' and facilities' names.
  return it->second.VersionAt(absl::FromCivil(to - 1, zone_));
}

absl::StatusOr<std::vector<v1::InstrumentAssessment>> UsageFigures::Assess(absl::CivilDay from, absl::CivilDay to,
                                                                           const v1::UsageFilter& f,
                                                                           const v1::Thresholds& t,
                                                                           const v1::ThresholdOverride& o,
                                                                           bool whole_instrument) const {
  LS_ASSIGN_OR_RETURN(auto instruments, Instruments(f, /*history=*/true));
  // An overseer's figures are the instrument's own, every stretch of the
  // range; a scoped caller's only its organisation's stretches (the
  // Authorization: figures about its own organisation, never the previous
  // owner's income or users).
  v1::UsageFilter own;
  if (whole_instrument && !OwnFiguresFilter(instruments, f, to, &own)) {
    return std::vector<v1::InstrumentAssessment>();
  }
  LS_ASSIGN_OR_RETURN(auto rows, Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_INSTRUMENT},
                                         whole_instrument ? own : f, true));
  LS_ASSIGN_OR_RETURN(Names names, LoadNames());
  std::vector<v1::InstrumentAssessment> out;
  for (const auto& row : rows) {
    std::string latest_name;
    const iv::Instrument* version = EndVersion(instruments, row, to, &latest_name);
    if (version == nullptr) continue;
    out.push_back(AssessOne(row.figures(), *version, t, o, names.orgs, names.facilities, currency_,
                            InServiceDays(instruments, row, from, to, t.minimum_assessed_days())));
    out.back().set_instrument_display_name(latest_name);
  }
  return out;
}

absl::Status UsageFigures::TakeDefaultRange(std::string* after, labshare::type::v1::Interval* range,
                                            absl::CivilDay* from, absl::CivilDay* to) const {
  // Tokens made before the range travelled in them hold the position only
  // (it starts with a digit): those continue with the range of today.
  if (!absl::StartsWith(*after, kRangePrefix)) return absl::OkStatus();
  const size_t end = after->find(kRangeEnd);
  std::pair<std::string, std::string> bounds =
      absl::StrSplit(absl::string_view(*after).substr(1, end == std::string::npos ? 0 : end - 1), ',');
  int64_t start_s = 0, end_s = 0;
  labshare::type::v1::Interval carried;
  if (end == std::string::npos || !absl::SimpleAtoi(bounds.first, &start_s) ||
      !absl::SimpleAtoi(bounds.second, &end_s)) {
    return InvalidField("page_token", "not a token of this listing; start again without page_token",
                        "INVALID_PAGE_TOKEN");
  }
  *carried.mutable_start_time() = ToProto(absl::FromUnixSeconds(start_s));
  *carried.mutable_end_time() = ToProto(absl::FromUnixSeconds(end_s));
  absl::CivilDay carried_from, carried_to;
  if (!CheckRange(carried, &carried_from, &carried_to).ok()) {
    return InvalidField("page_token", "not a token of this listing; start again without page_token",
                        "INVALID_PAGE_TOKEN");
  }
  *range = carried;
  *from = carried_from;
  *to = carried_to;
  after->erase(0, end + 1);
  return absl::OkStatus();
}

template <typename Req, typename Resp>
absl::Status UsageFigures::ListAssessed(const Principal& p, const Req& r, bool idle, Resp* out) {
  // Authorization before validation.
  LS_RETURN_IF_ERROR(OwnerScope(p, r.filter().owner_organizations(), "filter.owner_organizations"));
  labshare::type::v1::Interval range = r.range();
  if (!r.has_range()) {  // the 365 days ending at the start of today
    const absl::CivilDay today = absl::ToCivilDay(clock_->Now(), zone_);
    *range.mutable_start_time() = ToProto(absl::FromCivil(today - 365, zone_));
    *range.mutable_end_time() = ToProto(absl::FromCivil(today, zone_));
  }
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(range, &from, &to));
  LS_RETURN_IF_ERROR(CheckOverride(r.threshold_override()));
  LS_RETURN_IF_ERROR(CheckFilterNames(r.filter(), "filter"));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  // The default range is the first page's: the token carries it (types.proto:
  // a token binds its request, range unset included, so page 2 read after
  // midnight must not rank another year).
  std::string range_prefix;
  if (!r.has_range()) {
    LS_RETURN_IF_ERROR(TakeDefaultRange(&page.after, &range, &from, &to));
    range_prefix = absl::StrCat(kRangePrefix, ToUnixSeconds(FromProto(range.start_time())), ",",
                                ToUnixSeconds(FromProto(range.end_time())), kRangeEnd);
  }
  v1::UsageFilter f;
  *f.mutable_instruments() = r.filter().instruments();
  *f.mutable_owner_organizations() = r.filter().owner_organizations();
  *f.mutable_facilities() = r.filter().facilities();
  *f.mutable_categories() = r.filter().categories();
  LS_ASSIGN_OR_RETURN(v1::Thresholds t, LoadThresholds());
  LS_ASSIGN_OR_RETURN(auto all, Assess(from, to, f, t, r.threshold_override(), Overseer(p)));
  // Idle: effective seconds ascending; under-shared: sharing rate ascending,
  // compared exactly (not by its rounded basis points: cross-multiplied in
  // 128 bits); then instrument name. A page position is the last hit's
  // figures and name: "%020d\x1f{name}" of effective seconds (idle),
  // "%020d\x1f%020d\x1f{name}" of the rate's numerator and denominator
  // (under-shared).
  struct Hit {
    int64_t num = 0, den = 1;  // idle: effective seconds over 1
    std::string name;
    v1::InstrumentAssessment* a = nullptr;
  };
  auto before = [](const Hit& x, const Hit& y) {
    const __int128 l = static_cast<__int128>(x.num) * y.den, g = static_cast<__int128>(y.num) * x.den;
    return l != g ? l < g : x.name < y.name;
  };
  auto position = [idle](const Hit& h) {
    return idle ? absl::StrFormat("%020d\x1f%s", h.num, h.name)
                : absl::StrFormat("%020d\x1f%020d\x1f%s", h.num, h.den, h.name);
  };
  std::optional<Hit> after;
  if (!page.after.empty()) {
    std::vector<std::string> parts = absl::StrSplit(page.after, absl::MaxSplits('\x1f', idle ? 1 : 2));
    Hit h;
    if (parts.size() != (idle ? 2u : 3u) || !absl::SimpleAtoi(parts[0], &h.num) ||
        (!idle && (!absl::SimpleAtoi(parts[1], &h.den) || h.den <= 0))) {
      // Under-shared tokens from before the exact order held basis points.
      return InvalidField("page_token", "not a token from the previous page of this same query; start again "
                          "without page_token", "INVALID_PAGE_TOKEN");
    }
    h.name = parts.back();
    after = std::move(h);
  }
  std::vector<Hit> hits;
  for (auto& a : all) {
    if (idle ? a.idle() : a.under_shared()) {
      Hit h;
      if (idle) {
        h.num = a.figures().effective_seconds();
      } else if (a.figures().sharing_rate().denominator() > 0) {  // else undefined: as 0
        h.num = a.figures().sharing_rate().numerator();
        h.den = a.figures().sharing_rate().denominator();
      }
      h.name = a.instrument();
      h.a = &a;
      hits.push_back(std::move(h));
    }
  }
  std::sort(hits.begin(), hits.end(), before);
  out->set_total_size(static_cast<int64_t>(hits.size()));
  const Hit* last = nullptr;
  for (const Hit& h : hits) {
    if (after && !before(*after, h)) continue;
    if (out->instruments_size() == page.page_size) {
      out->set_next_page_token(page_tokens_.Make(r, p, range_prefix + position(*last)));
      break;
    }
    *out->add_instruments() = std::move(*h.a);
    last = &h;
  }
  *out->mutable_range() = range;
  *out->mutable_thresholds() = t;
  *out->mutable_computation() = Info(FromProto(range.end_time()));
  return absl::OkStatus();
}

absl::StatusOr<v1::ListIdleInstrumentsResponse> UsageFigures::ListIdleInstruments(
    const Principal& p, const v1::ListIdleInstrumentsRequest& r) {
  v1::ListIdleInstrumentsResponse out;
  LS_RETURN_IF_ERROR(ListAssessed(p, r, true, &out));
  return out;
}

absl::StatusOr<v1::ListUnderSharedInstrumentsResponse> UsageFigures::ListUnderSharedInstruments(
    const Principal& p, const v1::ListUnderSharedInstrumentsRequest& r) {
  v1::ListUnderSharedInstrumentsResponse out;
  LS_RETURN_IF_ERROR(ListAssessed(p, r, false, &out));
  return out;
}


// ================================================================ sharing matrix

absl::StatusOr<v1::GetSharingMatrixResponse> UsageFigures::GetSharingMatrix(const Principal& p,
                                                                            const v1::GetSharingMatrixRequest& r) {
  LS_RETURN_IF_ERROR(Scope(p, r.filter()));  // authorization before validation
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(r.range(), &from, &to));
  LS_RETURN_IF_ERROR(CheckFilterNames(r.filter(), "filter"));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  std::vector<v1::Dimension> dims = {v1::DIMENSION_OWNER_ORGANIZATION, v1::DIMENSION_USER_ORGANIZATION};
  if (r.split_by_mode()) dims.push_back(v1::DIMENSION_SHARING_MODE);
  LS_ASSIGN_OR_RETURN(auto rows, Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, dims, r.filter(), false));
  std::vector<std::pair<std::string, v1::SharingMatrixCell>> cells;
  std::map<std::string, std::pair<int64_t, int64_t>> owner_totals, user_totals;  // (seconds, charged)
  for (const auto& row : rows) {
    const auto& k = row.key();
    const auto& fig = row.figures();
    if (k.owner_organization() == k.user_organization() && !r.include_internal()) continue;
    if (fig.effective_seconds() == 0 && fig.bookings() == 0 && fig.service_income().amount_minor() == 0 &&
        fig.subsidized_income().amount_minor() == 0 && fig.users_served() == 0) {
      continue;  // only rejections or cancellations: nothing delivered or charged
    }
    v1::SharingMatrixCell c;
    c.set_owner_organization(k.owner_organization());
    c.set_user_organization(k.user_organization());
    if (r.split_by_mode()) c.set_mode(k.mode());
    c.set_effective_seconds(fig.effective_seconds());
    c.set_bookings(fig.bookings());
    *c.mutable_charged() = fig.service_income();
    *c.mutable_subsidized() = fig.subsidized_income();
    c.set_users_served(fig.users_served());
    auto& o = owner_totals[c.owner_organization()];
    o.first += c.effective_seconds();
    o.second += c.charged().amount_minor();
    auto& u = user_totals[c.user_organization()];
    u.first += c.effective_seconds();
    u.second += c.charged().amount_minor();
    cells.emplace_back(absl::StrFormat("%s\x1f%s\x1f%04d", c.owner_organization(), c.user_organization(),
                                       static_cast<int>(c.mode())),
                       std::move(c));
  }
  std::sort(cells.begin(), cells.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  v1::GetSharingMatrixResponse out;
  std::string last;
  for (auto& [k, c] : cells) {
    if (!page.after.empty() && k <= page.after) continue;
    if (out.cells_size() == page.page_size) {
      out.set_next_page_token(page_tokens_.Make(r, p, last));
      break;
    }
    *out.add_cells() = std::move(c);
    last = k;
  }
  if (page.after.empty()) {
    auto totals = [&](const std::map<std::string, std::pair<int64_t, int64_t>>& m, auto* field) {
      for (const auto& [org, v] : m) {
        auto* t = field->Add();
        t->set_organization(org);
        t->set_effective_seconds(v.first);
        t->mutable_charged()->set_currency_code(currency_);
        t->mutable_charged()->set_amount_minor(v.second);
      }
    };
    totals(owner_totals, out.mutable_owner_totals());
    totals(user_totals, out.mutable_user_totals());
  }
  *out.mutable_computation() = Info(FromProto(r.range().end_time()));
  return out;
}

// ================================================================ annual report

absl::Status UsageFigures::CheckReport(const Principal& p, int year, const v1::ReportScope& scope) const {
  LS_RETURN_IF_ERROR(OwnerScope(p, scope.owner_organizations(), "scope.owner_organizations"));  // authorization first
  const int current = static_cast<int>(absl::ToCivilYear(clock_->Now(), zone_).year());
  if (year < 1970 || year > current) {
    return InvalidField("year", absl::StrCat("a calendar year from 1970 to ", current), "INVALID_YEAR");
  }
  return CheckFilterNames(scope, "scope");
}

absl::Status UsageFigures::BuildReport(const Principal& p, int year, const v1::ReportScope& scope, bool summaries,
                                       v1::AnnualReport* out) const {
  LS_RETURN_IF_ERROR(CheckReport(p, year, scope));
  const absl::CivilDay from(year, 1, 1), to(year + 1, 1, 1);
  v1::UsageFilter f;
  *f.mutable_owner_organizations() = scope.owner_organizations();
  *f.mutable_facilities() = scope.facilities();
  Groupings groupings = {{v1::DIMENSION_INSTRUMENT}};
  if (summaries) {
    groupings.push_back({});
    groupings.push_back({v1::DIMENSION_OWNER_ORGANIZATION});
    groupings.push_back({v1::DIMENSION_FACILITY});
    groupings.push_back({v1::DIMENSION_CATEGORY});
    groupings.push_back({v1::DIMENSION_SHARING_MODE});
  }
  LS_ASSIGN_OR_RETURN(auto rows, ComputeMany(from, to, v1::PERIOD_GRANULARITY_RANGE, groupings, f, true));
  LS_ASSIGN_OR_RETURN(auto instruments, Instruments(f, /*history=*/true));
  // The instrument rows: for an overseer each instrument's own figures over
  // the year, also of the stretches before it came into the scope
  // (InstrumentAssessment); a scoped caller's its organisation's only.
  if (Overseer(p) && (f.owner_organizations_size() > 0 || f.facilities_size() > 0)) {
    v1::UsageFilter own;
    if (OwnFiguresFilter(instruments, f, to, &own)) {
      LS_ASSIGN_OR_RETURN(rows[0], Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_INSTRUMENT}, own, true));
    } else {
      rows[0].clear();
    }
  }
  LS_ASSIGN_OR_RETURN(Names names, LoadNames());
  LS_ASSIGN_OR_RETURN(v1::Thresholds t, LoadThresholds());
  out->set_year(year);
  *out->mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(from, zone_));
  *out->mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(to, zone_));
  *out->mutable_scope() = scope;
  *out->mutable_thresholds() = t;
  std::vector<v1::InstrumentAssessment> assessed;
  for (const auto& row : rows[0]) {
    std::string latest_name;
    const iv::Instrument* version = EndVersion(instruments, row, to, &latest_name);
    if (version == nullptr) continue;
    assessed.push_back(
        AssessOne(row.figures(), *version, t, v1::ThresholdOverride(), names.orgs, names.facilities, currency_,
                  InServiceDays(instruments, row, from, to, t.minimum_assessed_days())));
    assessed.back().set_instrument_display_name(latest_name);
  }
  std::sort(assessed.begin(), assessed.end(), [](const auto& a, const auto& b) {
    return std::tie(a.owner_organization(), a.instrument()) < std::tie(b.owner_organization(), b.instrument());
  });
  if (summaries) {
    // Zero figures (money 0 in the reporting currency) for a year or scope
    // with nothing in it, as GetUsageFigures answers: in the answer, the
    // CSV's PLATFORM line and ReportGenerated alike.
    *out->mutable_platform_figures() =
        rows[1].empty() ? ZeroFigures(currency_, /*owner_view=*/true) : rows[1][0].figures();
    std::map<std::string, v1::AssessmentCounts> by_org, by_facility, by_category;
    for (const auto& a : assessed) {
      Count(out->mutable_platform_counts(), a);
      Count(&by_org[a.owner_organization()], a);
      Count(&by_facility[a.facility()], a);
      Count(&by_category[a.category()], a);
    }
    auto lookup = [](const std::map<std::string, std::string>& m, const std::string& k) {
      auto it = m.find(k);
      return it == m.end() ? std::string() : it->second;
    };
    auto add = [&](std::vector<v1::UsageRow>& group, v1::Dimension d, auto* field,
                   std::map<std::string, v1::AssessmentCounts>* counts) {
      std::sort(group.begin(), group.end(),
                [&](const auto& a, const auto& b) { return RowSortKey(a, {d}) < RowSortKey(b, {d}); });
      for (auto& row : group) {
        v1::ReportSummary* s = field->Add();
        s->set_dimension(d);
        *s->mutable_key() = row.key();
        const std::string k = KeyValue(row.key(), d);
        switch (d) {
          case v1::DIMENSION_OWNER_ORGANIZATION: s->set_display_name(lookup(names.orgs, k)); break;
          case v1::DIMENSION_FACILITY: s->set_display_name(lookup(names.facilities, k)); break;
          default: s->set_display_name(k); break;
        }
        *s->mutable_figures() = std::move(*row.mutable_figures());
        if (counts != nullptr) *s->mutable_counts() = (*counts)[k];
      }
    };
    add(rows[2], v1::DIMENSION_OWNER_ORGANIZATION, out->mutable_organization_summaries(), &by_org);
    add(rows[3], v1::DIMENSION_FACILITY, out->mutable_facility_summaries(), &by_facility);
    add(rows[4], v1::DIMENSION_CATEGORY, out->mutable_category_summaries(), &by_category);
    add(rows[5], v1::DIMENSION_SHARING_MODE, out->mutable_mode_summaries(), nullptr);
  }
  for (auto& a : assessed) *out->add_instruments() = std::move(a);
  *out->mutable_computation() = Info(absl::FromCivil(to, zone_));
  return absl::OkStatus();
}

absl::StatusOr<v1::AnnualReport> UsageFigures::GetAnnualReport(const Principal& p,
                                                               const v1::GetAnnualReportRequest& r) {
  // Authorization, then the request (year, scope names), then the page
  // token: {year 2999, page_token "junk"} is INVALID_YEAR.
  LS_RETURN_IF_ERROR(CheckReport(p, r.year(), r.scope()));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  const bool first = page.after.empty();
  v1::AnnualReport full;
  LS_RETURN_IF_ERROR(BuildReport(p, r.year(), r.scope(), first, &full));
  v1::AnnualReport out = full;
  out.clear_instruments();
  std::string last;
  for (auto& a : *full.mutable_instruments()) {
    const std::string k = absl::StrCat(a.owner_organization(), "\x1f", a.instrument());
    if (!first && k <= page.after) continue;
    if (out.instruments_size() == page.page_size) {
      out.set_next_page_token(page_tokens_.Make(r, p, last));
      break;
    }
    *out.add_instruments() = std::move(a);
    last = k;
  }
  if (first) {
    v1::UsageEvent e;
    auto* g = e.mutable_report_generated();
    g->set_year(r.year());
    *g->mutable_scope() = r.scope();
    g->set_thresholds_etag(out.thresholds().etag());
    *g->mutable_platform_figures() = out.platform_figures();
    *g->mutable_platform_counts() = out.platform_counts();
    *g->mutable_computation() = out.computation();
    LS_RETURN_IF_ERROR(Publish(p, std::move(e)));
  }
  return out;
}

absl::Status UsageFigures::ExportAnnualReportCsv(const Principal& p, const v1::ExportAnnualReportCsvRequest& r,
                                                 const std::function<absl::Status(const v1::CsvChunk&)>& sink) {
  // Authorization, then validation, then an export slot (EXPORT_LIMIT comes
  // after the request was validated).
  LS_RETURN_IF_ERROR(CheckReport(p, r.year(), r.scope()));
  LS_ASSIGN_OR_RETURN(ExportSlot slot, AcquireExport(p));
  v1::AnnualReport report;
  LS_RETURN_IF_ERROR(BuildReport(p, r.year(), r.scope(), true, &report));
  std::vector<std::string> header = {"row_type", "key", "display_name", "owner_organization", "facility", "category"};
  FigureHeader(&header);
  for (const char* c : {"instruments", "assessed", "idle", "under_shared", "idle_threshold_seconds",
                        "min_external_threshold_seconds", "min_sharing_rate_bp", "currency_code"}) {
    header.push_back(c);
  }
  std::vector<std::string> lines = {CsvLine(header)};
  auto summary = [&](const char* type, const std::string& key, const std::string& display,
                     const v1::UsageFigures& fig, const v1::AssessmentCounts* counts) {
    std::vector<std::string> cells = {type, key, display, "", "", ""};
    FigureCells(fig, &cells);
    for (int64_t v : {counts ? counts->instruments() : 0, counts ? counts->assessed() : 0,
                      counts ? counts->idle() : 0, counts ? counts->under_shared() : 0}) {
      cells.push_back(counts ? absl::StrCat(v) : "");
    }
    for (int i = 0; i < 3; ++i) cells.push_back("");
    cells.push_back(currency_);
    lines.push_back(CsvLine(cells));
  };
  summary("PLATFORM", "", "", report.platform_figures(), &report.platform_counts());
  auto group = [&](const char* type, const auto& list) {
    for (const auto& s : list) {
      summary(type, KeyValue(s.key(), s.dimension()), s.display_name(), s.figures(),
              s.dimension() == v1::DIMENSION_SHARING_MODE ? nullptr : &s.counts());
    }
  };
  group("ORGANIZATION", report.organization_summaries());
  group("FACILITY", report.facility_summaries());
  group("CATEGORY", report.category_summaries());
  group("MODE", report.mode_summaries());
  for (const auto& a : report.instruments()) {
    std::vector<std::string> cells = {"INSTRUMENT", a.instrument(), a.instrument_display_name(),
                                      a.owner_organization(), a.facility(), a.category()};
    FigureCells(a.figures(), &cells);
    cells.push_back("");
    for (bool b : {a.assessed(), a.idle(), a.under_shared()}) cells.push_back(b ? "true" : "false");
    cells.push_back(absl::StrCat(a.idle_threshold_seconds()));
    cells.push_back(absl::StrCat(a.min_external_threshold_seconds()));
    cells.push_back(absl::StrCat(a.min_sharing_rate_bp()));
    cells.push_back(currency_);
    lines.push_back(CsvLine(cells));
  }
  // Chunks of whole lines; the last one carries the trailer.
  Sha256 sha;
  int64_t offset = 0;
  std::string buffer = r.include_bom() ? "\xEF\xBB\xBF" : "";
  std::optional<v1::CsvChunk> pending;
  auto flush = [&]() -> absl::Status {
    if (pending) LS_RETURN_IF_ERROR(sink(*pending));
    v1::CsvChunk c;
    c.set_data(buffer);
    c.set_offset(offset);
    sha.Update(buffer);
    offset += static_cast<int64_t>(buffer.size());
    buffer.clear();
    pending = std::move(c);
    return absl::OkStatus();
  };
  for (const auto& line : lines) {
    buffer += line;
    if (static_cast<int>(buffer.size()) >= chunk_bytes_) LS_RETURN_IF_ERROR(flush());
  }
  if (!buffer.empty() || !pending) LS_RETURN_IF_ERROR(flush());
  auto* trailer = pending->mutable_trailer();
  trailer->set_row_count(static_cast<int64_t>(lines.size()) - 1);
  trailer->set_total_bytes(offset);
  trailer->set_sha256_hex(sha.HexDigest());
  *trailer->mutable_computation() = report.computation();
  // Recorded before the last message (see ExportAuditTrail in the service).
  v1::UsageEvent e;
  auto* x = e.mutable_report_exported();
  x->set_kind(v1::EXPORT_KIND_ANNUAL_REPORT_CSV);
  x->set_year(r.year());
  *x->mutable_scope() = r.scope();
  *x->mutable_trailer() = *trailer;
  LS_RETURN_IF_ERROR(Publish(p, std::move(e)));
  return sink(*pending);
}

// ================================================================ usage export

absl::Status UsageFigures::ExportUsage(const Principal& p, const v1::ExportUsageRequest& r,
                                       const std::function<absl::Status(const v1::ExportUsageResponse&)>& sink) {
  LS_RETURN_IF_ERROR(Scope(p, r.filter()));  // authorization before validation
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(r.range(), &from, &to));
  LS_ASSIGN_OR_RETURN(std::vector<v1::Dimension> dims, ParseDims(r.group_by()));
  if (!v1::PeriodGranularity_IsValid(r.granularity())) {
    return InvalidField("granularity", "not a PeriodGranularity value (DAY, MONTH, YEAR or RANGE)");
  }
  if (r.format() != v1::EXPORT_FORMAT_ROWS && r.format() != v1::EXPORT_FORMAT_CSV) {
    return InvalidField("format", "required: EXPORT_FORMAT_ROWS or EXPORT_FORMAT_CSV");
  }
  LS_RETURN_IF_ERROR(CheckFilterNames(r.filter(), "filter"));
  const bool csv = r.format() == v1::EXPORT_FORMAT_CSV;
  v1::ExportUsageRequest base = r;
  base.clear_resume_token();
  const std::string fp = RequestFingerprint("ExportUsage", base).substr(0, 16);
  // Resume token: a page token (common/page_token.h: bound by its MAC to
  // this request, resume_token aside, and this caller) whose position is
  // the fingerprint, rows and bytes before it and the key of the last row.
  int64_t rows_before = 0, offset = 0;
  std::string after;
  const bool resumed = !r.resume_token().empty();
  if (resumed) {
    std::optional<std::string> raw = page_tokens_.Open(base, p, r.resume_token());
    if (!raw) return BadResumeToken();
    std::vector<std::string> parts = absl::StrSplit(*raw, absl::MaxSplits('\n', 3));
    if (parts.size() != 4 || parts[0] != fp || !absl::SimpleAtoi(parts[1], &rows_before) ||
        !absl::SimpleAtoi(parts[2], &offset)) {
      return BadResumeToken();
    }
    after = UpgradeRowSortKey(parts[3]);  // a token from before negative starts were keyed in order
  }
  LS_ASSIGN_OR_RETURN(ExportSlot slot, AcquireExport(p));
  const bool owner_view = Overseer(p) || (r.filter().owner_organizations_size() == 1 &&
                                          r.filter().owner_organizations(0) == ActorOrganization(p));
  Sha256 sha;
  int64_t rows_sent = 0, bytes_sent = 0;
  std::string last_key = after;
  std::string buffer;
  v1::UsageRowBatch batch;
  if (csv && !resumed) {
    if (r.include_bom()) buffer = "\xEF\xBB\xBF";
    std::vector<std::string> header = {"period_start", "period_end", "partial_period"};
    for (auto d : dims) header.push_back(KeyColumnName(d));
    FigureHeader(&header);
    header.push_back("currency_code");
    buffer += CsvLine(header);
  }
  std::optional<v1::ExportUsageResponse> pending;
  auto token = [&]() {
    return page_tokens_.Make(base, p,
                             absl::StrCat(fp, "\n", rows_before + rows_sent, "\n", offset + bytes_sent, "\n", last_key));
  };
  auto flush = [&]() -> absl::Status {
    if (pending) LS_RETURN_IF_ERROR(sink(*pending));
    v1::ExportUsageResponse m;
    if (csv) {
      m.set_csv_offset(offset + bytes_sent);
      sha.Update(buffer);
      bytes_sent += static_cast<int64_t>(buffer.size());
      m.set_csv(std::move(buffer));
      buffer.clear();
    } else {
      *m.mutable_rows() = std::move(batch);
      batch.Clear();
    }
    m.set_resume_token(token());
    pending = std::move(m);
    return absl::OkStatus();
  };
  auto tz_time = [&](const google::protobuf::Timestamp& ts) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%S%Ez", FromProto(ts), zone_);
  };
  int in_batch = 0;
  BucketFn per_bucket = [&](std::vector<std::vector<v1::UsageRow>> groups) -> absl::Status {
    std::vector<v1::UsageRow>& rows = groups[0];
    SortRows(&rows, dims);
    for (auto& row : rows) {
      std::string k = RowSortKey(row, dims);
      if (!after.empty() && k <= after) continue;
      if (csv) {
        std::vector<std::string> cells = {tz_time(row.period().start_time()), tz_time(row.period().end_time()),
                                          row.partial_period() ? "true" : "false"};
        for (auto d : dims) cells.push_back(KeyValue(row.key(), d));
        FigureCells(row.figures(), &cells);
        cells.push_back(currency_);
        buffer += CsvLine(cells);
      } else {
        *batch.add_rows() = std::move(row);
      }
      ++rows_sent;
      ++in_batch;
      last_key = std::move(k);
      if (csv ? static_cast<int>(buffer.size()) >= chunk_bytes_ : in_batch >= batch_rows_) {
        LS_RETURN_IF_ERROR(flush());
        in_batch = 0;
      }
    }
    return absl::OkStatus();
  };
  LS_RETURN_IF_ERROR(ComputeMany(from, to, r.granularity(), {dims}, r.filter(), owner_view, &per_bucket).status());
  if (in_batch > 0 || !buffer.empty() || !pending) LS_RETURN_IF_ERROR(flush());
  auto* trailer = pending->mutable_trailer();
  trailer->set_row_count(rows_sent);
  if (csv) {
    trailer->set_total_bytes(bytes_sent);
    trailer->set_sha256_hex(sha.HexDigest());
  }
  *trailer->mutable_computation() = Info(FromProto(r.range().end_time()));
  // Recorded before the last message (see ExportAuditTrail in the service).
  v1::UsageEvent e;
  auto* x = e.mutable_report_exported();
  x->set_kind(v1::EXPORT_KIND_USAGE);
  *x->mutable_usage_request() = base;
  *x->mutable_trailer() = *trailer;
  x->set_resumed(resumed);
  LS_RETURN_IF_ERROR(Publish(p, std::move(e)));
  return sink(*pending);
}

}  // namespace labshare::usage
