// The usage figures: events of inventory, booking and billing folded into
// per-instrument day and month counters as they arrive, and the figures of
// usage.proto ("Definitions") computed from those counters, never from raw
// history.
//
// Redis layout (hash tag {usage}):
//   {usage}:applied                   HASH "<source>|<event id>" -> 1: folded once
//   {usage}:instr                     HASH instrument id -> Instrument (latest)
//   {usage}:ih:<instr>                HASH "<unix ms>" -> Instrument: every version, by the time
//                                     it took effect (update_time, else create_time, else the
//                                     event time); figures take owner, facility, category and
//                                     daily hours of use from the version in force at the start
//                                     of its day, the instrument set's from the bucket's last day
//   {usage}:ihv                       HASH instrument id -> event id of the last version written to
//                                     {usage}:ih:<instr> (same fold step): a query parses an
//                                     instrument's versions again only when it changed
//   {usage}:orgs                      HASH organisation name -> "<size class>|<ms>:<class>,...": the
//                                     current class and its changes by effective time (see
//                                     OrgSizeClassOn; "<size class>" alone: folded before the history)
//   {usage}:mw:<instr>                HASH window id -> "<start ms>|<end ms>" (scheduled windows)
//   {usage}:mwx:<instr>               HASH window id -> 1: cancelled (final; a SCHEDULED folded after
//                                     the cancellation schedules nothing)
//   {usage}:d:<instr>:<YYYYMMDD>      HASH counters of one day, fields
//   {usage}:m:<instr>:<YYYYMM>        HASH the same counters per month
//        "<counter>|<mode>|<user organisation>" -> integer, counters:
//        eff (seconds in use), bk (bookings), done (completed bookings),
//        miss, late, canc (user-side cancellations), out (outage
//        cancellations), rej (rejected requests), inc (service income,
//        minor units), pen (of which fees), sub (of which subsidised),
//        ink (in-kind contribution), oc.<CODE> (service income posted in
//        currency CODE other than the reporting one: other_currency_income)
//   {usage}:y:<instr>:<YYYY>          HASH the same counters per year (rollup)
//   {usage}:ud:<instr>:<YYYYMMDD>, {usage}:um:<instr>:<YYYYMM>, {usage}:uy:<instr>:<YYYY>
//                                     SET "<mode>|<user org>|<user>|<size class>" served, the
//                                     organisation's size class on that day (members
//                                     folded before it was recorded lack "|<size class>": the
//                                     size class now)
//   {usage}:open                      HASH booking name -> "<day cap s>|<Booking>": sessions
//                                     checked in and not checked out yet (added at
//                                     BookingCheckedIn, removed at check-out or
//                                     cancellation); they count at query time, up to
//                                     the computation time (OpenSessions), not in the
//                                     counters or the aggregates; the day cap counts for
//                                     LEASE only (other modes: actual time, uncapped)
//   {usage}:closed                    HASH booking name -> unix ms of the event that closed its
//                                     session (BookingCheckedOut, or BookingCancelled of a
//                                     booking with a session): written with the HDEL from
//                                     {usage}:open; a check-in or block change folded after it
//                                     (two replicas on one stream) opens nothing.
//                                     labshare-archive removes the field with the booking
//   {usage}:tsorder                   HASH service order name -> unix ms its quote was first
//                                     accepted (the period its booking, its client's
//                                     cancellation and its run's completion count in); an
//                                     acceptance folded when the field exists changes nothing
//   {usage}:tsout                     HASH service order name -> "1": counted in outage_cancelled_bookings
//                                     (once per order, however many of its runs an outage cancels)
//                                     labshare-archive removes both fields with the order
// Figures of a range read whole years from the year hashes, whole months from
// the month hashes and the remaining days from the day hashes, all
// instruments in one pipelined round trip per bucket.
//   {usage}:orgname                   HASH organisation name -> display name
//   {usage}:facname                   HASH facility name -> display name
//   {usage}:thresholds                DocStore document {d: Thresholds, v: version}
//   {usage}:idem:<method>:<request>   idempotency records (DocStore)
//   {usage}:outbox                    STREAM UsageEvent (type/payload)
// The report aggregates folded in the same step: usage_aggregates.h.
// A day or month is a calendar day or month in the reporting time zone.
#ifndef LABSHARE_SERVICES_USAGE_USAGE_FIGURES_H_
#define LABSHARE_SERVICES_USAGE_USAGE_FIGURES_H_

#include <atomic>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/page_token.h"
#include "common/redis.h"
#include "labshare/booking/v1/booking.pb.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "labshare/usage/v1/usage.pb.h"
#include "labshare/usage/v1/usage_events.pb.h"
#include "services/usage/export_limiter.h"

namespace labshare::usage {

namespace v1 = labshare::usage::v1;

class AuditChain;

// The size class (number, as text) of an organisation in force before
// `before_ms` (Unix ms), from its {usage}:orgs value: "<class>" or
// "<class>|<ms>:<class>,..." (its changes by effective time, ascending). The
// last change before the time, else the first recorded, else the class.
std::string OrgSizeClassOn(absl::string_view value, int64_t before_ms);

class UsageFigures {
 public:
  // pool and clock must outlive this. Thread-safe.
  // page_tokens: see page_token.h (main derives it from the token key; tests
  // pass a fixed key).
  UsageFigures(RedisPool* pool, const Clock* clock, absl::TimeZone zone, PageTokenCodec page_tokens,
               std::string currency = "CNY", int default_lease_hours_per_day = 8);

  // Folds one outbox entry of `source` ("inventory", "booking", "billing")
  // exactly once (keyed by source and event id, in the same step as its
  // counters). Events that change no figure are recorded as seen only.
  absl::Status Fold(absl::string_view source, const StreamEvent& event);
  // Fold of several events of `source` in as few Lua steps as possible: one
  // status per event, in order; each event folded exactly once and atomically
  // on its own, exactly as Fold would.
  std::vector<absl::Status> FoldBatch(absl::string_view source, const std::vector<StreamEvent>& events);

  // usage_aggregates.cc. Registers the periods and instrument attributes of
  // data folded before the aggregates existed (once; idempotent, safe with
  // several replicas and while events are folded), then
  // RebuildStaleAggregates.
  absl::Status MigrateAggregates();
  // Gives every instrument known before attribute versions were kept
  // ({usage}:instr without {usage}:ih:<id>) its current record as its first
  // version, dated by its update_time (else create_time), so days before its
  // next change keep the attributes in force then. Run at start before any
  // event is folded; idempotent. Returns how many were seeded.
  absl::StatusOr<int> SeedInstrumentVersions();
  // A random token naming this instance as a rebuilder (the lease owner).
  static std::string NewRebuildOwner();
  // Rebuilds, each in bounded Lua steps from the counters and served sets, every
  // period whose aggregates are not exact for the current attributes; how
  // many. Idempotent; replicas may run it concurrently.
  absl::StatusOr<int> RebuildStaleAggregates();
  // One period; false when it was already exact (rebuilt by another replica)
  // or kept changing while it was rebuilt (left for the next check).
  absl::StatusOr<bool> RebuildPeriod(const std::string& period);
  // Tests: runs between listing a period's instruments and its rebuild step.
  void set_rebuild_listed_hook_for_testing(std::function<void()> hook) { rebuild_listed_hook_ = std::move(hook); }
  // Tests: runs after each rebuild chunk step with its status and the source
  // entries it processed; false stops RebuildPeriod there (Aborted), as a
  // crash would, leaving the state and the lease in Redis.
  void set_rebuild_chunk_hook_for_testing(std::function<bool(const std::string&, int64_t)> hook) {
    rebuild_chunk_hook_ = std::move(hook);
  }
  // Source entries per rebuild step (default 1024) and the lease of a
  // rebuilder, renewed by each step (default 30 s, Redis TIME).
  // Tests: called with the KEYS of each rebuild step (start and chunks)
  // before it runs.
  void set_rebuild_keys_hook_for_testing(std::function<void(const std::vector<std::string>&)> hook) {
    rebuild_keys_hook_ = std::move(hook);
  }
  void set_rebuild_chunk(int entries) { rebuild_chunk_ = entries; }
  void set_rebuild_lease_us(int64_t us) { rebuild_lease_us_ = us; }
  const std::string& rebuild_owner() const { return rebuild_owner_; }
  // Tests: false folds every event with the per-event step (the reference
  // the one-step fold of a run is compared with).
  void set_fast_fold_for_testing(bool on) { fast_fold_ = on; }
  // Steps FoldFast folded, and those its state check refused (read again).
  int64_t fast_fold_steps() const { return fast_steps_; }
  int64_t fast_fold_stale() const { return fast_stale_; }
  // Called with the KEYS of each fold step before it runs.
  void set_fold_keys_hook_for_testing(std::function<void(const std::vector<std::string>&)> hook) {
    fold_keys_hook_ = std::move(hook);
  }
  // Tests and the benchmark: false computes every report from the counters
  // and sets as before the aggregates (the reference they are compared with).
  void set_use_aggregates(bool on) { use_aggregates_ = on; }
  // Buckets (a period of one report) answered from the aggregates so far.
  int64_t buckets_from_aggregates() const { return buckets_from_aggregates_; }

  absl::StatusOr<v1::GetUsageFiguresResponse> GetUsageFigures(const Principal& p, const v1::GetUsageFiguresRequest& r);
  absl::StatusOr<v1::QueryUsageResponse> QueryUsage(const Principal& p, const v1::QueryUsageRequest& r);

  // usage_reports.cc: thresholds, assessments, matrix, annual report, exports.
  absl::StatusOr<v1::Thresholds> GetThresholds(const Principal& p, const v1::GetThresholdsRequest& r);
  absl::StatusOr<v1::Thresholds> UpdateThresholds(const Principal& p, const v1::UpdateThresholdsRequest& r);
  absl::StatusOr<v1::ListIdleInstrumentsResponse> ListIdleInstruments(const Principal& p,
                                                                      const v1::ListIdleInstrumentsRequest& r);
  absl::StatusOr<v1::ListUnderSharedInstrumentsResponse> ListUnderSharedInstruments(
      const Principal& p, const v1::ListUnderSharedInstrumentsRequest& r);
  absl::StatusOr<v1::GetSharingMatrixResponse> GetSharingMatrix(const Principal& p,
                                                                const v1::GetSharingMatrixRequest& r);
  absl::StatusOr<v1::AnnualReport> GetAnnualReport(const Principal& p, const v1::GetAnnualReportRequest& r);
  // Streaming: `sink` sends one message; an error from it ends the export.
  absl::Status ExportAnnualReportCsv(const Principal& p, const v1::ExportAnnualReportCsvRequest& r,
                                     const std::function<absl::Status(const v1::CsvChunk&)>& sink);
  absl::Status ExportUsage(const Principal& p, const v1::ExportUsageRequest& r,
                           const std::function<absl::Status(const v1::ExportUsageResponse&)>& sink);

  // VerifyAuditChain over `audit` with what the RPC adds to AuditChain::Verify:
  // idempotent through request_id (a retry replays the stored answer; the
  // same id with other content is FAILED_PRECONDITION REQUEST_ID_REUSED),
  // and AuditVerificationRun published in the step that stores the answer.
  // `deadline`: the caller's (real time); once it has passed, before the
  // answer is stored, DEADLINE_EXCEEDED (reason DEADLINE_EXCEEDED) and
  // nothing is stored or published.
  absl::StatusOr<v1::VerifyAuditChainResponse> VerifyAuditChain(const Principal& p,
                                                                const v1::VerifyAuditChainRequest& r,
                                                                const AuditChain& audit,
                                                                absl::Time deadline = absl::InfiniteFuture()) const;
  // ReportExported (EXPORT_KIND_AUDIT_TRAIL) of a completed audit export of
  // [start_sequence, end_sequence) with the trailer that was sent.
  absl::Status PublishAuditExport(const Principal& p, int64_t start_sequence, int64_t end_sequence,
                                  const v1::ExportTrailer& trailer) const;

  // Concurrent exports (ExportUsage, ExportAnnualReportCsv and, through the
  // service, ExportAuditTrail) above `total` in the process or `per_caller`
  // for one caller are RESOURCE_EXHAUSTED (EXPORT_LIMIT).
  void set_max_concurrent_exports(int total, int per_caller = ExportLimiter::kDefaultMaxPerCaller) {
    exports_.SetLimits(total, per_caller);
  }
  // A slot for one export of `p` (ActorName), released when destroyed.
  absl::StatusOr<ExportSlot> AcquireExport(const Principal& p) { return exports_.Acquire(ActorName(p)); }
  const ExportLimiter& exports() const { return exports_; }
  // Bytes per CSV chunk (pieces end on line boundaries) and rows per batch.
  void set_export_chunk(int bytes, int rows) {
    chunk_bytes_ = bytes;
    batch_rows_ = rows;
  }

 private:
  struct Instr {
    labshare::inventory::v1::Instrument instrument;  // the latest
    std::vector<std::pair<absl::Time, absl::Time>> windows;
    // Its versions by the time they took effect, ascending (history: true;
    // empty for instruments folded before versions were kept). Shared with
    // the cache of parsed versions (versions_cache_), never changed.
    using Versions = std::vector<std::pair<absl::Time, labshare::inventory::v1::Instrument>>;
    std::shared_ptr<const Versions> history;
    const Versions& versions() const;
    // The version in force at t: the last one in effect at or before t (the
    // first one before it took effect; the latest when there are none).
    const labshare::inventory::v1::Instrument* VersionAt(absl::Time t) const;
    // When it was retired: its last version RETIRED, the time the first of
    // its last run of RETIRED versions took effect (no versions: the latest
    // record's update_time when it is RETIRED); InfiniteFuture if in service.
    absl::Time RetiredAt() const;
    // The intervals in which its versions had state `state` (an
    // inventory::v1::Instrument::State), [took effect, next version not in it).
    std::vector<std::pair<absl::Time, absl::Time>> StateIntervals(int state) const;
  };
  struct PreparedFold {
    struct Op {
      std::string code;
      std::vector<std::string> keys;
      std::vector<std::string> args;
    };
    bool send = false;  // false: nothing to record (no event id, or it does not parse)
    std::string marker;
    std::vector<Op> ops;
    // The hash fields ("<key>\n<field>") the preparation read: FoldBatch
    // prepares an event that reads a field an earlier event of the batch
    // writes only once that event is folded.
    std::vector<std::string> reads;
  };
  absl::StatusOr<PreparedFold> PrepareFold(absl::string_view source, const StreamEvent& event) const;
  // Folds prepared events (their statuses at out[index[i]]) in as few Lua
  // steps as the argument budget allows; consumes their ops. Runs of events
  // that only count, serve and open or close sessions go through FoldFast,
  // the others (and a run FoldFast leaves) through FoldSteps.
  void FoldPrepared(std::vector<PreparedFold>* prepared, const std::vector<size_t>& index,
                    std::vector<absl::Status>* out);
  // prepared[from, to) with the per-event step (FoldScript).
  void FoldSteps(std::vector<PreparedFold>* prepared, const std::vector<size_t>& index, size_t from, size_t to,
                 std::vector<absl::Status>* out);
  // prepared[from, to) in one step (FastFoldScript): true when every event
  // was folded, false when nothing was written (FoldSteps folds them).
  absl::StatusOr<bool> FoldFast(const std::vector<PreparedFold>& prepared, size_t from, size_t to);
  // Seconds a day of the booking's session counts at most: LEASE the
  // counted hours per day in force at handover: the instrument's version in
  // force at the start of the handover's day ({usage}:ih), else the
  // thresholds' default as held now (at_handover; else the cap its open
  // session recorded, or as at handover); other modes count actual
  // time, uncapped (kNoDayCap: a 25-hour day of a daylight-saving change
  // counts 25 hours).
  static constexpr int64_t kNoDayCap = std::numeric_limits<int64_t>::max();
  absl::StatusOr<int64_t> DayCap(const labshare::booking::v1::Booking& b, bool at_handover) const;
  // The version of `instrument` in force at t (Instr::VersionAt over its
  // versions, {usage}:ih, else the latest record); nullopt when usage holds
  // neither (its InstrumentChanged not folded yet).
  absl::StatusOr<std::optional<labshare::inventory::v1::Instrument>> InstrumentOn(const std::string& instrument,
                                                                                 absl::Time t) const;
  // When a booking counts (bookings, completed_bookings): its reserved
  // start; a TECHNICAL_SERVICE run, when its service order was confirmed.
  absl::StatusOr<absl::Time> BookingPeriodTime(const labshare::booking::v1::Booking& b) const;
  // When the service order was confirmed (its first acceptance,
  // {usage}:tsorder); `otherwise` when it was not folded.
  absl::StatusOr<absl::Time> OrderConfirmedTime(const std::string& order, absl::Time otherwise) const;
  // A checked-in session not checked out yet, as it counts at `now`.
  struct OpenSession {
    int mode = 0;
    std::string org, user;
    // end: min(now, reserved end), LEASE: now; reserved_start: BookingPeriodTime.
    absl::Time start, end, reserved_start;
    int64_t cap = kNoDayCap;                // per calendar day (LEASE only)
  };
  // The open sessions by instrument id.
  absl::StatusOr<std::map<std::string, std::vector<OpenSession>>> OpenSessions(absl::Time now) const;
  struct Partial;  // the figures of one instrument, bucket and user-side key, before ratios
  // The instruments matching f. history: with their versions, filtered by
  // f.instruments only (the caller matches each version).
  absl::StatusOr<std::map<std::string, Instr>> Instruments(const v1::UsageFilter& f, bool history = false) const;
  absl::Status CheckRange(const labshare::type::v1::Interval& range, absl::CivilDay* from, absl::CivilDay* to) const;
  // The version an instrument row of [.., to) is assessed with: in force at
  // the start of the last day; nullptr when the row has no instrument set.
  // `latest_name`, if given: the instrument's display name as last seen
  // (InstrumentAssessment.instrument_display_name).
  // An assessment's figures for AUDITOR and CONSORTIUM_ADMIN are the
  // instrument's own over the range (InstrumentAssessment.figures): `own` names the instruments whose
  // version at the start of the range's last day matches f's owner, facility
  // and category (the scope decides which are listed) and nothing else, so
  // their earlier stretches under other attributes count too. False when
  // there is none.
  bool OwnFiguresFilter(const std::map<std::string, Instr>& instruments, const v1::UsageFilter& f, absl::CivilDay to,
                        v1::UsageFilter* own) const;
  const labshare::inventory::v1::Instrument* EndVersion(const std::map<std::string, Instr>& instruments,
                                                        const v1::UsageRow& row, absl::CivilDay to,
                                                        std::string* latest_name = nullptr) const;
  // Whether the instrument of an instrument row of [from, to) was in service
  // at least `days` calendar days of it (Thresholds.minimum_assessed_days):
  // each day counts the part of it in service, so a whole 23- or 25-hour day
  // of a daylight-saving change is one day.
  bool InServiceDays(const std::map<std::string, Instr>& instruments, const v1::UsageRow& row, absl::CivilDay from,
                     absl::CivilDay to, int64_t days) const;
  absl::Status Scope(const Principal& p, const v1::UsageFilter& f) const;
  // Rows of [from, to) grouped by `dims`, bucketed by `granularity`.
  absl::StatusOr<std::vector<v1::UsageRow>> Compute(absl::CivilDay from, absl::CivilDay to,
                                                    v1::PeriodGranularity granularity,
                                                    const std::vector<v1::Dimension>& dims,
                                                    const v1::UsageFilter& f, bool owner_view) const;
  // Rows of several groupings at once, from one read of the counters: one
  // vector of rows per grouping, unsorted. With `per_bucket` set, the rows of
  // each bucket go to it (in bucket order) instead of being returned.
  using Groupings = std::vector<std::vector<v1::Dimension>>;
  using BucketFn = std::function<absl::Status(std::vector<std::vector<v1::UsageRow>>)>;
  absl::StatusOr<std::vector<std::vector<v1::UsageRow>>> ComputeMany(
      absl::CivilDay from, absl::CivilDay to, v1::PeriodGranularity granularity, const Groupings& groupings,
      const v1::UsageFilter& f, bool owner_view, const BucketFn* per_bucket = nullptr) const;
  v1::ComputationInfo Info(absl::Time range_end) const;

  // usage_reports.cc.
  struct Names {
    std::map<std::string, std::string> orgs, facilities;
  };
  struct Report;
  absl::StatusOr<Names> LoadNames() const;
  absl::StatusOr<v1::Thresholds> LoadThresholds() const;
  // Refuses (INVALID_FIELD) what UpdateThresholds refuses in a band: a
  // negative value, min_sharing_rate_bp above 10000. Both lists.
  absl::Status CheckOverride(const v1::ThresholdOverride& o) const;
  template <typename Req, typename Resp>
  absl::Status ListAssessed(const Principal& p, const Req& r, bool idle, Resp* out);
  // A listing without a range: the range its first page resolved, carried
  // at the front of the page token's position `after` (taken off it), into
  // range/from/to; a position without one leaves them as they are.
  absl::Status TakeDefaultRange(std::string* after, labshare::type::v1::Interval* range, absl::CivilDay* from,
                                absl::CivilDay* to) const;
  absl::StatusOr<std::vector<v1::InstrumentAssessment>> Assess(absl::CivilDay from, absl::CivilDay to,
                                                               const v1::UsageFilter& f,
                                                               const v1::Thresholds& t,
                                                               const v1::ThresholdOverride& o,
                                                               bool whole_instrument) const;
  // The annual report's scope (authorization) and then its year and names.
  absl::Status CheckReport(const Principal& p, int year, const v1::ReportScope& scope) const;
  absl::Status BuildReport(const Principal& p, int year, const v1::ReportScope& scope, bool summaries,
                           v1::AnnualReport* out) const;
  absl::Status Publish(const Principal& p, v1::UsageEvent event) const;

  RedisPool* pool_;
  const Clock* clock_;
  absl::TimeZone zone_;
  PageTokenCodec page_tokens_;
  std::string currency_;
  int default_lease_hours_;
  ExportLimiter exports_;
  int chunk_bytes_ = 64 * 1024;
  int batch_rows_ = 500;
  std::atomic<bool> use_aggregates_{true};
  std::function<void()> rebuild_listed_hook_;
  std::function<bool(const std::string&, int64_t)> rebuild_chunk_hook_;
  std::function<void(const std::vector<std::string>&)> rebuild_keys_hook_;
  int rebuild_chunk_ = 1024;
  int64_t rebuild_lease_us_ = 30'000'000;
  std::string rebuild_owner_ = NewRebuildOwner();
  std::function<void(const std::vector<std::string>&)> fold_keys_hook_;
  std::atomic<bool> fast_fold_{true};
  std::atomic<int64_t> fast_steps_{0}, fast_stale_{0};
  // What FoldFast last read of the instruments' attributes ({usage}:iattr:
  // '0' none, else '1' and the value) and the organisations' size classes
  // ({usage}:orgs, '0' when unknown); its step checks each value it used.
  absl::Mutex fast_mu_;
  std::map<std::string, std::string> attr_cache_ ABSL_GUARDED_BY(fast_mu_);
  std::map<std::string, std::string> size_cache_ ABSL_GUARDED_BY(fast_mu_);
  mutable std::atomic<int64_t> buckets_from_aggregates_{0};
  // Parsed versions by instrument id, with the {usage}:ihv value they were
  // read at: reused while it is unchanged.
  struct CachedVersions {
    std::string written_by;
    std::shared_ptr<const Instr::Versions> versions;
  };
  mutable absl::Mutex versions_mu_;
  mutable std::map<std::string, CachedVersions> versions_cache_ ABSL_GUARDED_BY(versions_mu_);
};

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_USAGE_FIGURES_H_
