// Where bookings live in Redis, and the two atomic steps that change them.
//
// Instruments are spread over kPartitions partitions by a hash of their id.
// Everything one booking step touches carries its partition's hash tag
// {bk:P}: the instrument's calendar, the booking document, the listing
// index, the idempotency record and the partition's outbox stream. So a
// booking is one Lua step, and on Redis Cluster a partition is one slot.
// Consumers read the kPartitions streams "{bk:P}:outbox".
//
//   {bk:P}:cl:<instr>        ZSET  the calendar: one member per entry,
//                            "<entry id>!<blocked end - start, ms><reason>"
//                            at score blocked start (ms); the reason is one
//                            whitespace character (CalendarMember), absent
//                            for an end an older version wrote (then readers
//                            fall back to the document). Entry ids never hold
//                            '!', which sorts below every id character, so
//                            members of one start rank as their ids do.
//                            A calendar read is one round trip; the create
//                            step reads the entry before the new one and
//                            finds its end in the member.
//   {bk:P}:clspan:<instr>    HASH  {b, w}: the longest blocked interval of a
//                            booking and of a maintenance window ever put on
//                            the calendar (ms), never lowered; written by the
//                            step that puts the entry on. A walk back from a
//                            moment stops where no booking can reach it.
//                            Absent beside a calendar an earlier version
//                            wrote (MigrateCalendarSpans fills it and the
//                            windows by end in; until then readers walk back
//                            as that version did).
//   {bk:P}:clwin:<instr>     ZSET  the calendar's window members at score end
//                            (ms), beside known spans: the windows that reach
//                            past a moment, whatever lies before it.
//   {bk:P}:mwoff:<instr>     SET   maintenance windows seen CANCELLED (final
//                            in inventory): never blocked again, and a step
//                            made for one (UpdateStep::window_guard) writes
//                            nothing once it is here.
//   {bk:P}:cal:<instr>, {bk:P}:calend:<instr>   the calendar of older
//                            versions (ZSET id -> start, HASH id -> end and
//                            reason). Every step that writes a calendar folds
//                            them into {bk:P}:cl: first (and reads fold them
//                            when they meet them; MigrateCalendars folds
//                            them all at start-up), then leaves both as
//                            STRING sentinels: any older version's step on
//                            that instrument fails (WRONGTYPE) before it
//                            writes, so it never books past an entry it
//                            cannot see. See README "Rolling upgrade".
//   {bk:P}:booking:<id>      HASH  {d: Booking bytes, v: version}
//   {bk:P}:bystart:<instr>   ZSET  id -> reserved start (ms): every booking of the
//                            instrument, listed in (start, id) order. (Older
//                            versions kept "{bk:P}:byinstr:<instr>", lex
//                            members "<start, 15 digits>|<id>"; MigrateIndexes
//                            moves them, then sets {booking}:migrated:bystart.)
//   {bk:P}:idem:<method>:<request id>   idempotency record (a booking created
//                            without a chosen id holds its own: fields f, r)
//   {bk:P}:outbox            STREAM of BookingEvent
//   {bk:P}:sweep:instruments SET   instruments with bookings the sweep looks at
//   {bk:P}:sweep:cursor      HASH  instrument -> reserved start (ms) before which
//                            the sweep has nothing left to do on it. The sweep
//                            reads each instrument's listing index from there
//                            to now: a CONFIRMED booking past start + grace is
//                            MISSED, a PENDING_APPROVAL one at its start EXPIRED
//                            (a lease request at the latest there).
//   {bk:P}:due               ZSET  booking id -> when the sweep must look at it
//                            (ms): bookings written by older versions, the
//                            checked-in sessions the sweep met on its cursor
//                            scan (from the earliest moment it may close them:
//                            a session lasts past its cursor's look-back),
//                            lease requests (from their blocked start, before
//                            the cursor reaches their term start) and
//                            bookings a sweep round had to skip (now).
//                            Lease requests an older version stored
//                            without their entry are added at start-up
//                            (BookingManager::MigrateLeaseRequestsDue, then
//                            the marker {booking}:migrated:leasedue).
//   {bk:P}:ichanges:<instr>  ZSET  inventory's changes of the instrument as
//                            booking consumed them (InstrumentChanged):
//                            member "<update_time, unix ns>|<kind>|<state
//                            before>|<state after>|<version (etag) after>"
//                            (older versions wrote the first four only),
//                            score its ms. The sweep reads the instrument's
//                            state as check-in closed: known only from two
//                            recorded changes of consecutive versions
//                            around that moment (the consumer may record a
//                            later change before an earlier one). Members
//                            30 days older than the latest go, but for the
//                            latest of those (in force 30 days back).
//   {bk:ids}:<id>            partition of a client-chosen booking id
//   {bk:P}:lease:<id>        Lease document; its booking has the same id
//   {bk:P}:order:<id>        ServiceOrder document (older versions also kept the
//                            index {bk:P}:orders:<instr>; now {bk:P}:ls:o:...)
//   {bk:P}:reportdue         ZSET  order id -> its report_accept_deadline (ms,
//                            rounded up): orders in REPORT_DELIVERED whose
//                            report the sweep accepts at that moment.
//                            Written by DeliverReport's step (a revised report
//                            moves the score), removed by the step that
//                            accepts or disputes the report (or the sweep's,
//                            for an entry whose order moved on otherwise).
//   {bk:P}:budget:<project>  HASH "<instr>:budget|committed|used" -> ms: a joint-
//                            research project's hours on an instrument, kept
//                            with the calendar so the create step checks them;
//                            "<instr>:budget_version" the project version the
//                            budget was set from (CreateProject, UpdateProject);
//                            "<instr>:fence" and "<instr>:fence_until" while an
//                            UpdateProject checks and commits (its owner, a
//                            random integer, and when the fence lapses, ms of
//                            Redis's clock): a booking's create step refuses
//                            to charge a budget that is fenced or whose
//                            budget_version is not the project version the
//                            booking was checked against (CounterCharge::
//                            project_version), so a booking and an update
//                            never each check a state the other is changing.
//   {bk:P}:quotas:<instr>:<org>   quotas of an organisation on an instrument
//   {bk:P}:qc:<instr>:<org>       their counters; index {bk:P}:quotaidx
//   {booking}:project:<id>   Project document; index {booking}:projects;
//                            events on {booking}:outbox
//   {booking}:projectid:<id> the reservation of a project id: claimed by
//                            CreateProject's first step ({d: "claim:<owner>",
//                            v: 1}; owner: the request's idempotency key, or
//                            a random token), before it writes budget
//                            counters; the step that writes the document
//                            makes it {d: "projects/<id>", v: 2}, never
//                            changed after. It outlives the document:
//                            labshare-archive removes an archived project's
//                            document and leaves (or, for a project created
//                            before reservations, writes) it, so an id once
//                            used is never given to another project.
//   {bk:P}:ls:...            listing indexes of ListBookings, ListLeases and
//                            ListServiceOrders (b: bookings, l: leases, o:
//                            orders; see booking_lists.h), written by the
//                            step that creates the resource; {bk:P}:ls:span
//                            the longest blocked end - reserved start (ms) of
//                            any booking of the partition (time-range bound).
//                            MigrateListings fills them for older data, then
//                            sets {booking}:migrated:lists;
//                            RefileStaleOperators then re-files those under
//                            a former operator, and sets
//                            {booking}:migrated:refile.
//   {bk:P}:ls:op:<instr>     HASH {org: operator organisation name, etag:
//                            inventory's instrument etag}: the operator the
//                            "org" listing entries of the instrument's
//                            bookings, leases and orders are filed under,
//                            as of that etag (RefileOperator, booking_lists.h;
//                            absent until the first InstrumentChanged of
//                            the instrument is handled); while a change is
//                            re-filed also {next, next_org}: its etag and
//                            operator; v: a version (each announcement and
//                            completion); cand: the operators announced
//                            since the last completion, one a line. A create
//                            step whose listing keys
//                            name an operator read at an earlier etag than
//                            either, and another operator, answers
//                            kOperatorMoved.
// A scheduled maintenance window sits on the calendar as entry "mw:<id>": it
// always wins; the bookings it hits are then cancelled one by one.
// Blocked intervals of bookings on one calendar never overlap: the create
// step checks the neighbour before and writes in the same script. A
// window's entry may overlap another window's, and lie inside (or around)
// the block of a booking it left alone (a lease with the lessee): whatever
// reads the entries before a moment (the create step, an extension's
// guard, CalendarRange) walks back past window entries to the nearest
// booking's (never further back than the longest booking block reaches:
// {bk:P}:clspan:<instr>), and takes the windows that reach past the moment
// from the windows by end ({bk:P}:clwin:<instr>).
#ifndef LABSHARE_SERVICES_BOOKING_REDIS_BOOKING_STORE_H_
#define LABSHARE_SERVICES_BOOKING_REDIS_BOOKING_STORE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/doc_store.h"
#include "common/redis.h"
#include "common/redis_pipeline.h"

namespace labshare::booking {

constexpr int kPartitions = 16;

namespace keys {
int Partition(absl::string_view instrument_id);
std::string Tag(int partition);
// The calendar (one sorted set, members CalendarMember).
std::string Calendar(int p, absl::string_view instrument_id);
// The older versions' calendar: entry id -> start, entry id -> end value
// (CalendarEndValue); string sentinels once folded.
std::string LegacyCalendar(int p, absl::string_view instrument_id);
std::string LegacyCalendarEnds(int p, absl::string_view instrument_id);
// The calendar's spans: HASH {b: the longest blocked interval of a booking,
// w: of a maintenance window, ever put on it (ms)}, never lowered. Readers
// walk back from a moment no further than the longest entry reaches.
std::string CalendarSpan(int p, absl::string_view instrument_id);
// The calendar's maintenance windows by end: ZSET of their calendar
// members at score end (ms), kept beside known spans. A walk back finds
// every window that reaches past a moment here, whatever lies between.
std::string CalendarWindows(int p, absl::string_view instrument_id);
// The instrument's maintenance windows seen CANCELLED (SET of window ids):
// never put on the calendar again, and no step of an ApplyMaintenanceWindow
// of one of them changes a booking once it is here.
std::string WithdrawnWindows(int p, absl::string_view instrument_id);
std::string Booking(int p, absl::string_view booking_id);
std::string ByInstrument(int p, absl::string_view instrument_id);
std::string LegacyByInstrument(int p, absl::string_view instrument_id);
std::string Idempotency(int p, absl::string_view method, absl::string_view request_id);
std::string Outbox(int p);
std::string Due(int p);
std::string SweepInstruments(int p);
std::string SweepCursors(int p);
// Inventory's changes of one instrument as booking read them
// (BookingStore::RecordInstrumentChange).
std::string InstrumentChanges(int p, absl::string_view instrument_id);
std::string IdLookup(absl::string_view booking_id);
// A mutation's claim of its request_id, in the one slot of IdLookup: the
// per-partition records ({bk:P}:idem:..., or the document a derived id
// names) answer a retry, the claim finds the same request_id reused in
// another partition or by a record kept elsewhere. Holds the fingerprint.
std::string RequestClaim(absl::string_view method, absl::string_view request_id);
std::string Budget(int p, absl::string_view project_id);
std::string Lease(int p, absl::string_view lease_id);
std::string Order(int p, absl::string_view order_id);
// Service orders whose delivered report is accepted automatically: ZSET
// order id -> its report_accept_deadline (ms, rounded up).
std::string ReportDue(int p);
std::string Orders(int p, absl::string_view instrument_id);
// Quotas of one (instrument, organisation): a versioned document holding
// them all (a ListQuotasResponse), their counters ("<period>:<start ms>:
// committed|used"), and the partition's index "<org id>|<instr id>".
std::string QuotaGroup(int p, absl::string_view instrument_id, absl::string_view org_id);
std::string QuotaCounters(int p, absl::string_view instrument_id, absl::string_view org_id);
std::string QuotaIndex(int p);
std::string Project(absl::string_view project_id);
std::string Projects();
std::string ProjectIdReservation(absl::string_view project_id);
std::string ProjectOutbox();
std::string ProjectIdempotency(absl::string_view method, absl::string_view request_id);
// Listing indexes (see booking_lists.h): kind 'b' bookings, 'l' leases,
// 'o' orders; "all" of the partition, or by a dimension ("user", "org",
// "instr") and the id it names.
std::string ListAll(int p, char kind);
std::string ListBy(int p, char kind, absl::string_view dimension, absl::string_view id);
std::string ListSpan(int p);
std::string ListOperator(int p, absl::string_view instrument_id);
// A listing position "<reserved start ms, 15 digits>|<id>": what IndexRange
// returns and takes as `after` (and what page tokens carry).
std::string IndexMember(int64_t start_ms, absl::string_view booking_id);
}  // namespace keys

// Another document changed in the same step (a lease with its booking).
struct ExtraDoc {
  std::string key;
  std::string data;
  int64_t expected_version = 0;  // 0: must not exist yet
};

// One entry of a calendar: a booking's blocked interval in milliseconds.
struct CalendarEntry {
  std::string booking_id;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  // Stored beside the end: the BusyInterval.Reason number the entry shows
  // (1..kMaxBusyReason); 0: none stored (an end an older version wrote).
  int busy_reason = 0;
};

// A calendar end value: the end in decimal, then (busy_reason 1..
// kMaxBusyReason) one ASCII whitespace character naming the reason, in the
// order " \t\n\v\f\r" (1 is ' ', 2 '\t', ...); busy_reason 0: the end
// alone. Whitespace because every reader of an older version parses the
// end as a number that may be followed by whitespace (Lua's tonumber,
// absl::SimpleAtoi): their overlap checks read the new values unchanged.
constexpr int kMaxBusyReason = 6;
std::string CalendarEndValue(int64_t end_ms, int busy_reason);
// Parses CalendarEndValue's form (and an older version's end alone);
// false when the value is not one.
bool ParseCalendarEnd(absl::string_view value, int64_t* end_ms, int* busy_reason);

// A calendar member (keys::Calendar): "<entry id>!" then
// CalendarEndValue(end_ms - start_ms, busy_reason), at score start_ms.
constexpr char kCalendarSeparator = '!';
std::string CalendarMember(absl::string_view entry_id, int64_t start_ms, int64_t end_ms, int busy_reason);
// The entry a member at score start_ms stands for; false when the member
// is not of CalendarMember's form.
bool ParseCalendarMember(absl::string_view member, int64_t start_ms, CalendarEntry* entry);

// Reserved time checked against an allowance and added to a counter by a
// create step: a joint-research project's budget on an instrument, or an
// organisation's quota in one period. The hash `key` holds
// "<field>:committed" and "<field>:used" (ms) and, for budgets,
// "<field>:budget".
struct CounterCharge {
  static constexpr int64_t kLimitFromHash = -1;
  std::string key;
  std::string field;
  int64_t ms = 0;                     // added to committed
  int64_t limit_ms = kLimitFromHash;  // the allowance; kLimitFromHash: "<field>:budget" (absent: over)
  enum class OnOver { kFail, kAskApproval, kAllow };
  OnOver on_over = OnOver::kFail;
  std::string over_reason = "BUDGET";  // kFail: "BUDGET" (kOverBudget) or "QUOTA" (kOverQuota)
  // > 0: a project budget whose booking was checked against the project
  // document at this version. Before anything else (a replay aside) the
  // step answers kProjectMoved, writing nothing, when "<field>:fence" is
  // set (an UpdateProject is under way, or died: BookingStore::FenceBudget)
  // or "<field>:budget_version" is not this version (the project changed).
  int64_t project_version = 0;
};

// A counter movement applied by an update step.
struct CounterMove {
  std::string key;
  std::string field;
  int64_t committed_delta_ms = 0;
  int64_t used_delta_ms = 0;
};

struct CreateStep {
  int partition = 0;
  std::string instrument_id;
  std::string booking_id;
  // Where the request id's record lives. Empty with a fingerprint: in the
  // booking document itself (fields f, and r once the document has moved
  // on), which is how a booking whose id DerivedBookingId made from the
  // request id is created: a retry finds the same document.
  std::string idempotency_key;
  std::string fingerprint;
  std::string booking;   // the document
  std::string response;  // the answer to a replay; empty: the document
  int64_t blocked_start_ms = 0;
  int64_t blocked_end_ms = 0;
  int64_t reserved_start_ms = 0;
  // The sweep looks at it (an ON_SITE or JOINT_RESEARCH booking: MISSED
  // without check-in, EXPIRED if still pending at its start; a lease
  // request: expired if still REQUESTED at its blocked start).
  bool swept = false;
  std::vector<ExtraDoc> extra_docs;
  // Each counter's allowance must hold ms more (allowance - used -
  // committed); then ms is added to committed. kFail: kOverBudget or
  // kOverQuota; kAskApproval: kNeedsApproval (nothing written).
  std::vector<CounterCharge> counters;
  // The busy reason stored beside the blocked end (CalendarEndValue); 0:
  // the end alone.
  int busy_reason = 0;
  // When set, the document guard_key must be at guard_version (0: absent),
  // else kGuardMoved: what the step was computed from changed.
  std::string guard_key;
  int64_t guard_version = 0;
  // A booking of the same instrument this one replaces (a rescheduled run):
  // it does not count as in the way, and its calendar and due entries go.
  // The caller writes its new document as an extra document.
  std::string replaces_booking_id;
  // Where the replaced booking's calendar entry starts (its document's
  // blocked start); 0: unknown (then the step looks through the calendar).
  int64_t replaces_start_ms = 0;
  // The access check said no: the step only answers a replay, else DENIED.
  bool denied = false;
  std::vector<std::string> events;  // serialized BookingEvent, in order
  // Listing indexes (keys::ListAll/ListBy of this partition) that get the
  // booking at its reserved start; with any, the partition's span
  // (keys::ListSpan) grows to blocked end - reserved start if longer.
  std::vector<std::string> listing_keys;
  // The operator organisation ("organizations/{id}") listing_keys were
  // computed with, and the inventory etag of the instrument it was read
  // from (> 0: checked against the instrument's keys::ListOperator record:
  // kOperatorMoved when the record names another operator at a later etag,
  // re-filed or being re-filed; nothing written).
  std::string operator_org;
  int64_t operator_etag = 0;
};

struct UpdateStep {
  int partition = 0;
  std::string instrument_id;
  std::string booking_id;
  std::string idempotency_key;
  std::string fingerprint;
  // The new document; empty: the booking stays as it is (not rewritten, its
  // version unchanged, still checked against expected_version).
  std::string booking;
  std::string response;  // the answer to a replay; empty: the document
  int64_t expected_version = 0;
  std::vector<ExtraDoc> extra_docs;
  enum class Calendar { kKeep, kRemove, kSetEnd };
  Calendar calendar = Calendar::kKeep;
  // Where the booking's calendar entry starts: its document's blocked start
  // (a booking's blocked start never moves). 0: unknown, then the step
  // looks for the entry through the whole calendar (ZSCAN); so do kRemove
  // and kSetEnd when it is not at this start. kKeep takes an entry not at
  // a known start as off the calendar.
  int64_t blocked_start_ms = 0;
  int64_t new_end_ms = 0;  // kSetEnd
  // The busy reason of the booking's calendar entry after the step (from
  // the new document), stored beside its end (CalendarEndValue) by kSetEnd
  // and, when the entry is on the calendar, kKeep. 0: the end alone (then
  // QueryAvailability reads the document), never a stale reason.
  int busy_reason = 0;
  // No other booking may start in (guard_from_ms, guard_to_ms); 0,0: none.
  // With guard_overlap: no other entry may overlap [guard_from_ms,
  // guard_to_ms), one that starts before guard_from_ms included (a booking's
  // block grown at its end: what lies inside the old block, such as a
  // window that left a handed-over lease alone, is not in the way).
  // A violated guard is kSlotTaken (with the entry in the way).
  int64_t guard_from_ms = 0;
  int64_t guard_to_ms = 0;
  bool guard_overlap = false;
  // The id of the maintenance window the change is made for ('' none): when
  // it is among the instrument's withdrawn windows (keys::WithdrawnWindows),
  // kWindowWithdrawn and nothing is written.
  std::string window_guard;
  // kRemove: off the older due set (bookings made before the sweep read
  // the listing index; see Due()).
  enum class Due { kKeep, kRemove };
  Due due = Due::kKeep;
  // Budget and quota movements, applied with the change.
  std::vector<CounterMove> counters;
  std::vector<std::string> events;
  // Sorted-set writes of this partition applied with the change (a service
  // order's keys::ReportDue entry), as DocStore's (IndexOp: a score, or 0).
  std::vector<IndexOp> index_ops;
};

// One listing index of one partition: scored (member id, score ms) or, with
// lex, members "<ms, 15 digits>|<id>" at score 0 (DocStore's index shape).
struct ListingSource {
  int partition = 0;
  std::string key;
  bool lex = false;
};
struct ListingEntry {
  int64_t ms = 0;
  std::string id;
  int partition = 0;
};

// An instrument's ListOperator record.
struct ListingOperator {
  bool known = false;  // false: no record yet
  std::string org;     // "organizations/{id}"
  int64_t etag = 0;
  // The change being re-filed (0: none).
  int64_t next_etag = 0;
  std::string next_org;
  // Moves with every announcement and every completed re-filing (a
  // DocGuard of a create that is no Lua create step).
  int64_t version = 0;
  // Every operator a re-filing announced since the last completion (field
  // cand, dropped when one completes).
  std::vector<std::string> announced;
  // Whether an operator `org` read at instrument etag `etag` is older than
  // a change this record has re-filed or announced for another operator.
  bool Outdates(const std::string& operator_org, int64_t read_etag) const;
};
// One index write of a re-filing step: the member (an id at score `score`,
// or with lex "<ms, 15 digits>|<id>" at score 0) added to or removed from
// `key` (of the step's partition).
struct RefileOp {
  std::string key;
  std::string member;
  int64_t score = 0;
  bool remove = false;
};

struct StepOutcome {
  enum class Kind { kApplied, kReplayed, kRequestReused, kSlotTaken, kExists, kDenied, kConflict,
                    kOverBudget, kOverQuota, kNeedsApproval, kGuardMoved, kOperatorMoved, kWindowWithdrawn,
                    kProjectMoved };
  Kind kind = Kind::kApplied;
  std::string response;     // kReplayed
  std::string conflicting;  // kSlotTaken: the booking id in the way
};

class BookingStore {
 public:
  // pool must outlive the store. Thread-safe.
  // pool (and pipeline, when given) must outlive the store. Without a
  // pipeline, CreateAsync runs the step synchronously.
  explicit BookingStore(RedisPool* pool, RedisPipeline* pipeline = nullptr)
      : pool_(pool), pipeline_(pipeline), docs_(pool) {}

  absl::StatusOr<StepOutcome> Create(const CreateStep& step) const;
  void CreateAsync(const CreateStep& step,
                   std::function<void(absl::StatusOr<StepOutcome>)> done) const;
  absl::StatusOr<StepOutcome> Update(const UpdateStep& step) const;

  absl::StatusOr<std::optional<StoredDoc>> Get(int partition, absl::string_view booking_id) const;
  absl::StatusOr<std::vector<std::optional<StoredDoc>>> GetMany(
      int partition, const std::vector<std::string>& booking_ids) const;
  // Entries whose blocked interval overlaps [from_ms, to_ms), by start.
  absl::StatusOr<std::vector<CalendarEntry>> CalendarRange(int partition,
                                                           absl::string_view instrument_id,
                                                           int64_t from_ms, int64_t to_ms) const;
  // Asynchronous reads for the callback API (booking_service.cc): on the
  // pipeline, one round trip per step, `done` on a pipeline thread; without
  // a pipeline, synchronous on the pool (done before returning).
  template <typename T>
  using Done = std::function<void(absl::StatusOr<T>)>;
  // PartitionOf.
  void PartitionOfAsync(std::string booking_id, Done<std::optional<int>> done) const;
  // A document by key (DocStore::Get).
  void GetDocAsync(std::string key, Done<std::optional<StoredDoc>> done) const;
  // CalendarRange, and the booking documents of the entries whose end has
  // no busy reason beside it (written by an older version; maintenance
  // windows need none): the calendar head, then the ends, then, only when
  // some entry has no reason, those documents (only their bytes: version 0).
  struct CalendarWithDocs {
    std::vector<CalendarEntry> entries;
    std::vector<std::optional<StoredDoc>> docs;  // one per entry; nullopt where not read
  };
  absl::StatusOr<CalendarWithDocs> ReadCalendarWithDocs(int partition, absl::string_view instrument_id,
                                                        int64_t from_ms, int64_t to_ms) const;
  void CalendarWithDocsAsync(int partition, std::string instrument_id, int64_t from_ms, int64_t to_ms,
                             Done<CalendarWithDocs> done) const;
 private:
  // The documents CalendarWithDocsAsync's entries need (their busy reason
  // only their document tells), then `done`.
  void WithDocs(int partition, std::shared_ptr<CalendarWithDocs> out, Done<CalendarWithDocs> done) const;

 public:
  // CalendarRange of several instruments at once (SearchAvailableInstruments):
  // every head in one pipelined batch, then every instrument's ends in one;
  // two round trips whatever the number. One entry list per read, in order.
  struct CalendarRead {
    int partition = 0;
    std::string instrument_id;
    int64_t from_ms = 0, to_ms = 0;
  };
  void CalendarsAsync(std::vector<CalendarRead> reads, Done<std::vector<std::vector<CalendarEntry>>> done) const;
  // The due set: ids due at or before `now_ms` in due order (a pending
  // booking expires at its start; settle skips what is not due), skipping
  // the first `offset`, at most `limit`; adding one (or moving it to
  // `due_ms`); taking one off.
  absl::StatusOr<std::vector<std::string>> Due(int partition, int64_t now_ms, int offset, int limit) const;
  absl::Status RememberDue(int partition, absl::string_view booking_id, int64_t due_ms) const;
  absl::Status ForgetDue(int partition, absl::string_view booking_id) const;
  // Puts each (partition, booking id, due ms) on its due set unless it is
  // there already (ZADD NX: an entry a step or a sweep round wrote keeps
  // its moment), in one round trip. Returns how many it added.
  struct DueEntry {
    int partition = 0;
    std::string booking_id;
    int64_t due_ms = 0;
  };
  absl::StatusOr<int64_t> AddDueIfAbsent(const std::vector<DueEntry>& entries) const;
  // keys::ReportDue of a partition: the orders due at or before `now_ms`
  // (their score), by deadline, skipping the first `offset`, at most
  // `limit`.
  struct ReportDueEntry {
    std::string order_id;
    int64_t due_ms = 0;
  };
  absl::StatusOr<std::vector<ReportDueEntry>> ReportsDue(int partition, int64_t now_ms, int offset,
                                                         int limit) const;
  // The start (ms) of the first calendar entry other than `except` (a
  // booking or a maintenance window) starting strictly after `after_ms`;
  // nullopt when none does.
  absl::StatusOr<std::optional<int64_t>> NextCalendarStart(int partition, absl::string_view instrument_id,
                                                           int64_t after_ms, absl::string_view except) const;
  // Bookings the sweep may have to act on: per instrument of the partition,
  // those whose reserved start lies in [its cursor, now_ms], in start order,
  // at most `limit` per instrument.
  struct SweepEntry {
    std::string booking_id;
    int64_t start_ms = 0;
  };
  struct SweepRange {
    std::string instrument_id;
    bool has_cursor = false;
    int64_t cursor_ms = 0;
    std::vector<SweepEntry> entries;
  };
  absl::StatusOr<std::vector<SweepRange>> SweepRanges(int partition, int64_t now_ms, int limit) const;
  absl::Status SetSweepCursor(int partition, absl::string_view instrument_id, int64_t ms) const;
  // One change of an instrument in inventory (an InstrumentChanged event):
  // when (its update_time), of which kind (inventory ChangeKind), its state
  // before (STATE_CHANGED) and after, and the instrument's version after it
  // (its etag: inventory moves it by one with every change and publishes
  // one InstrumentChanged per version; 0 when not known, e.g. a change
  // recorded by an older version of booking). Idempotent.
  struct InstrumentChange {
    absl::Time time;
    int kind = 0;
    int state_before = 0;
    int state_after = 0;
    int64_t version = 0;
  };
  // Changes older than the recorded one by more than this are dropped, but
  // for the latest of them (the one in force at that moment).
  static constexpr absl::Duration kInstrumentChangeRetention = absl::Hours(24 * 30);
  absl::Status RecordInstrumentChange(absl::string_view instrument_id, const InstrumentChange& change) const;
  // Every recorded change of the instrument, oldest first.
  absl::StatusOr<std::vector<InstrumentChange>> InstrumentChanges(absl::string_view instrument_id) const;
  // Puts a maintenance window on the calendar, with its busy reason beside
  // the end: true; false (nothing written) when the window is withdrawn
  // (keys::WithdrawnWindows: UnblockWindow saw it cancelled).
  absl::StatusOr<bool> BlockWindow(int partition, absl::string_view instrument_id,
                                   absl::string_view window_id, int64_t start_ms, int64_t end_ms,
                                   int busy_reason) const;
  // Takes a cancelled maintenance window off the calendar and withdraws it,
  // in one step: it is never blocked again, and no step whose
  // UpdateStep::window_guard names it writes anything.
  absl::Status UnblockWindow(int partition, absl::string_view instrument_id, absl::string_view window_id,
                             int64_t start_ms) const;
  // Takes any entry (a window's, or a finished booking's) off the calendar.
  // start_ms: where it is expected to start (0: unknown; either way an
  // entry elsewhere is found through the calendar).
  absl::Status RemoveCalendarEntry(int partition, absl::string_view instrument_id,
                                   absl::string_view entry, int64_t start_ms = 0) const;
  // Folds an instrument's calendar of an older version (keys::
  // LegacyCalendar, LegacyCalendarEnds) into keys::Calendar and leaves the
  // sentinels; nothing when folded already. Returns the entries moved.
  absl::StatusOr<int64_t> FoldCalendar(int partition, absl::string_view instrument_id) const;
  // FoldCalendar of every instrument with an older calendar (SCAN), then
  // the marker {booking}:migrated:calendar, after which later starts skip
  // the scan (steps and reads still fold what they meet: an older replica
  // may still write during a rolling upgrade). Returns the entries moved.
  absl::StatusOr<int64_t> MigrateCalendars() const;
  // The spans (keys::CalendarSpan) of every calendar that has none yet
  // (written by an earlier version: until then its readers walk back
  // without a bound, up to the nearest booking), then the marker
  // {booking}:migrated:calspan. Returns the calendars given spans.
  absl::StatusOr<int64_t> MigrateCalendarSpans() const;
  absl::Status Publish(int partition, const std::string& event) const;
  // Sets a project's budget on an instrument (committed and used untouched).
  // With a project version (> 0): only if the budget was not set from that
  // or a later version ("<instr>:budget_version"), so a late write of an
  // older version never overwrites a newer budget. `overwrite`: written
  // with the version whatever the stamp (CreateProject, whose claim on the
  // id makes it the only writer: a resumed claim replaces the budget its
  // crashed attempt wrote at version 1).
  absl::Status SetBudget(absl::string_view project_id, absl::string_view instrument_id,
                         int64_t budget_ms, int64_t project_version = 0, bool overwrite = false) const;
  // CreateProject's first step, in {booking}: the request's idempotency
  // record answers a replay (or REQUEST_REUSED); else an existing document,
  // or a reservation held by another owner, means the id is taken; else the
  // reservation is claimed for `owner` ({d: "claim:<owner>", v: 1}; kept
  // when this owner claimed it already, e.g. before a crash). Only a
  // request that claimed the id writes budget counters; its commit then
  // expects the reservation at version 1.
  struct ProjectClaim {
    enum class Kind { kClaimed, kReplayed, kRequestReused, kTaken };
    Kind kind = Kind::kClaimed;
    std::string response;  // kReplayed
    // kTaken: the id has no document, only another request's claim (a
    // create under way, or one that failed past its claim).
    bool claim_only = false;
  };
  absl::StatusOr<ProjectClaim> ClaimProjectId(const std::string& idempotency_key, const std::string& fingerprint,
                                              absl::string_view project_id, absl::string_view owner) const;
  struct BudgetUse {
    int64_t budget_ms = 0, committed_ms = 0, used_ms = 0;
    int64_t version = 0;  // "<instr>:budget_version": the project version of budget_ms
    int64_t fence = 0;    // "<instr>:fence": the owner of an UpdateProject's fence (0: none)
  };
  absl::StatusOr<BudgetUse> GetBudget(absl::string_view project_id,
                                      absl::string_view instrument_id) const;
  // UpdateProject's fence on a project's budget of an instrument (see
  // keys::Budget): set for `owner` (a random integer in [1, 2^52)) until
  // Redis's clock reaches now + ttl, unless another owner's fence is set
  // and has not lapsed (false: nothing written). A fence of this owner is
  // renewed; a lapsed one of another owner (an updater that died) is taken
  // over.
  absl::StatusOr<bool> FenceBudget(absl::string_view project_id, absl::string_view instrument_id, int64_t owner,
                                   absl::Duration ttl) const;
  // Whether `owner`'s fence is still set there and has lapsed on Redis's
  // clock.
  absl::StatusOr<bool> FenceLapsed(absl::string_view project_id, absl::string_view instrument_id,
                                   int64_t owner) const;
  // Lifts `owner`'s fence (another owner's stays) after writing the budget
  // as of `project_version` (> 0) as SetBudget does (only over an older
  // version), in one step.
  absl::Status LiftBudgetFence(absl::string_view project_id, absl::string_view instrument_id, int64_t owner,
                               int64_t budget_ms, int64_t project_version) const;
  const DocStore& docs() const { return docs_; }
  // Bookings of an instrument in (reserved start, id) order after the
  // position `after` ("" from the first), as IndexMember positions.
  absl::StatusOr<std::vector<std::string>> IndexRange(int partition,
                                                      absl::string_view instrument_id,
                                                      const std::string& after, int limit) const;
  // Moves listing indexes of the older layout ({bk:P}:byinstr:<instr>,
  // ordered by member) to the current one, one index per atomic step;
  // returns how many bookings moved. Safe to run on every start and from
  // several replicas at once; after one complete pass it only checks the
  // marker {booking}:migrated:bystart (so replicas of an older version must
  // be gone by then).
  absl::StatusOr<int64_t> MigrateIndexes() const;
  // Listings: per source, up to `limit` entries with lo_ms <= ms < hi_ms
  // strictly after the cursor (ms, id) in the direction (ascending: by ms,
  // then id; descending: the reverse), in that order. One round trip.
  absl::StatusOr<std::vector<std::vector<ListingEntry>>> ListingPages(
      const std::vector<ListingSource>& sources, bool descending, int64_t lo_ms, int64_t hi_ms,
      const std::optional<ListingEntry>& after, int limit) const;
  // ListingPages, ListingSizes, ListingSpans and DocStore::GetMany on the
  // pipeline (see the asynchronous reads above).
  void ListingPagesAsync(std::vector<ListingSource> sources, bool descending, int64_t lo_ms, int64_t hi_ms,
                         std::optional<ListingEntry> after, int limit,
                         Done<std::vector<std::vector<ListingEntry>>> done) const;
  void ListingSizesAsync(std::vector<ListingSource> sources, Done<std::vector<int64_t>> done) const;
  void ListingSpansAsync(Done<std::vector<int64_t>> done) const;
  // GetDocsAsync reads only the documents' bytes (HGET d): on the pipeline
  // their version is 0 (not read).
  void GetDocsAsync(std::vector<std::string> keys, Done<std::vector<std::optional<StoredDoc>>> done) const;
  // Entries of each source (ZCARD), in one round trip.
  absl::StatusOr<std::vector<int64_t>> ListingSizes(const std::vector<ListingSource>& sources) const;
  // keys::ListSpan of each partition (0 when unset).
  absl::StatusOr<std::vector<int64_t>> ListingSpans() const;
  // Grows a partition's span to at least ms (a booking's end moved later).
  absl::Status RaiseListingSpan(int partition, int64_t ms) const;
  // The instrument's ListOperator record.
  absl::StatusOr<ListingOperator> GetListingOperator(int partition, absl::string_view instrument_id) const;
  // One step of RefileOperator, atomic: when the record is still `seen`
  // and older than `etag`: kAnnounce notes (etag, to_org) as the change
  // under way (next, next_org; create steps check it; without a record
  // to_org also joins `announced`); kBatch applies `ops` (idempotent index
  // writes); kFinish applies them and sets the record to (to_org, etag).
  // kApplied; kDone: the record is at `etag` or later already, or a later
  // change is announced (kBatch, kFinish: that one re-files everything;
  // nothing written); kMoved: the record's operator or etag differs from
  // `seen` (nothing written; read it again).
  enum class RefileOutcome { kApplied, kDone, kMoved };
  enum class RefilePhase { kAnnounce, kBatch, kFinish };
  absl::StatusOr<RefileOutcome> RefileStep(int partition, absl::string_view instrument_id,
                                           const ListingOperator& seen, const std::string& to_org, int64_t etag,
                                           const std::vector<RefileOp>& ops, RefilePhase phase) const;
  // Adds entries (migration; idempotent), one round trip.
  absl::Status AddListings(const std::vector<std::pair<ListingSource, ListingEntry>>& entries) const;
  // For each (zset key, members): whether the key holds any of them
  // (ZMSCORE, pipelined; an empty member list: false).
  absl::StatusOr<std::vector<bool>> HoldAny(
      const std::vector<std::pair<std::string, std::vector<std::string>>>& sets) const;
  // One SCAN step over keys matching pattern: the next cursor ("0": done).
  absl::StatusOr<std::pair<std::string, std::vector<std::string>>> ScanKeys(const std::string& cursor,
                                                                          const std::string& pattern) const;
  // The partition of a booking id: encoded in generated ids ("p07-..."),
  // looked up for client-chosen ones. nullopt: no such booking.
  absl::StatusOr<std::optional<int>> PartitionOf(absl::string_view booking_id) const;
  // Records the partition of a client-chosen id; false if the id is taken.
  absl::StatusOr<bool> ReserveId(absl::string_view booking_id, int partition) const;
  absl::Status ReleaseId(absl::string_view booking_id) const;
  // Claims a request_id for `fingerprint` (SET NX GET, kept as long as the
  // idempotency records): nullopt when this call made the claim, else the
  // fingerprint that holds it. The async form runs on the pipeline (one
  // command), synchronously on the pool without one.
  absl::StatusOr<std::optional<std::string>> ClaimRequest(const std::string& key,
                                                          const std::string& fingerprint) const;
  void ClaimRequestAsync(const std::string& key, const std::string& fingerprint,
                         std::function<void(absl::StatusOr<std::optional<std::string>>)> done) const;
  // Drops the claim if `fingerprint` still holds it (a refused request
  // leaves its request_id free); the async form calls `then` once it ran
  // (whatever its outcome: the claim expires anyway).
  absl::Status ReleaseRequest(const std::string& key, const std::string& fingerprint) const;
  void ReleaseRequestAsync(const std::string& key, const std::string& fingerprint,
                           std::function<void()> then) const;
  // The first answer kept in a document that is its own request's record
  // (a derived id: field f the fingerprint, r the first state, else d):
  // nullopt when the document is not there or holds no record;
  // REQUEST_ID_REUSED when it is another request's.
  absl::StatusOr<std::optional<std::string>> FindReplayInDocument(const std::string& key,
                                                                  const std::string& fingerprint) const;
  absl::StatusOr<std::optional<std::string>> FindReplay(const std::string& key,
                                                        const std::string& fingerprint) const {
    return docs_.FindReplay(key, fingerprint);
  }

 private:
  RedisPool* pool_;
  RedisPipeline* pipeline_;
  DocStore docs_;
};

// Calendar entry of a maintenance window.
std::string WindowEntry(absl::string_view window_id);
bool IsWindowEntry(absl::string_view entry);

// Generated booking ids carry their partition: "p07-3f9a0c1d2e4b".
std::string NewBookingId(int partition);
// The id of the booking a request creates, from its request id: a retry
// names the same document. "p07-" and 16 hex digits of a 64-bit hash.
std::string DerivedBookingId(int partition, absl::string_view method, absl::string_view request_id);
// Whether id has the shape of NewBookingId or DerivedBookingId (its
// partition is in it); clients may not choose such ids.
bool IsGeneratedId(absl::string_view id);

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_REDIS_BOOKING_STORE_H_
