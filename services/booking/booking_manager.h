// Booking's use cases on contract messages; absl::Status with reasons; no
// gRPC. Access is decided locally with the inventory's own rules
// (inventory_rules.h) on a cached copy of inventory data; the slot is
// decided inside Redis (BookingStore), together with the idempotency record
// and the events. Thread-safe.
//
// Built: all four modes (ON_SITE and JOINT_RESEARCH bookings, leases,
// technical-service orders), lists across instruments (booking_lists.h),
// check-in and check-out with clamping to the next
// booking and optional release of the rest; the sweep marks bookings missed
// or expired and checks forgotten sessions out; projects with cost shares
// and atomic hour budgets, quotas; availability in every mode, with notice
// and horizon from the one definition both CreateBooking and
// QueryAvailability use (inventory's BookingWindowFor); maintenance outages,
// which cancel hit bookings and end running sessions at the window start.
#ifndef LABSHARE_SERVICES_BOOKING_BOOKING_MANAGER_H_
#define LABSHARE_SERVICES_BOOKING_BOOKING_MANAGER_H_

#include <functional>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/auth.h"
#include "common/blocking_executor.h"
#include "common/clock.h"
#include "absl/strings/str_cat.h"
#include "common/doc_store.h"
#include "common/error.h"
#include "common/page_token.h"
#include "common/token.h"
#include "google/protobuf/empty.pb.h"
#include "labshare/booking/v1/booking.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/booking/booking_lists.h"
#include "services/booking/inventory_client.h"
#include "services/booking/listed_booking.h"
#include "services/inventory/inventory_rules.h"
#include "services/booking/redis_booking_store.h"

namespace labshare::booking {

namespace v1 = labshare::booking::v1;

// The service's one authorization table (defined in booking_service.cc):
// the interceptor checks its roles, the manager its scopes.
const MethodPolicy& BookingPolicy();
// "/labshare.booking.v1.BookingService/<method>".
std::string BookingMethod(const char* method);

namespace v1 {
using Empty = ::google::protobuf::Empty;  // so that every method's answer is v1::<name>
}

class BookingManager {
 public:
  // All pointers must outlive the manager. page_tokens: see page_token.h
  // (main derives it from the token key; tests pass a fixed key).
  BookingManager(BookingStore* store, InventoryClient* inventory, const Clock* clock, PageTokenCodec page_tokens)
      : store_(store),
        inventory_(inventory),
        clock_(clock),
        page_tokens_(std::move(page_tokens)),
        blocking_(std::make_unique<BlockingExecutor>(kBlockingThreads, kBlockingQueue)) {}

  absl::StatusOr<v1::Booking> CreateBooking(const Principal& p, const v1::CreateBookingRequest& r);
  // The same, with the Lua step on the store's pipeline: `done` runs once,
  // on a pipeline thread, inline when the answer needs no step, or on a
  // blocking_ thread. The calling thread never waits on inventory:
  // prepared from its cache there, on a miss (and a chosen id, lease or
  // run, which write while preparing) on blocking_.
  void CreateBookingAsync(const Principal& p, const v1::CreateBookingRequest& r,
                          std::function<void(absl::StatusOr<v1::Booking>)> done);
  absl::StatusOr<v1::Booking> GetBooking(const Principal& p, const v1::GetBookingRequest& r);
  // The same on the store's pipeline: `done` runs once, on a pipeline thread
  // (or inline when the answer needs no Redis read). Same answers, errors
  // and scope checks as the synchronous form.
  void GetBookingAsync(const Principal& p, const v1::GetBookingRequest& r,
                       std::function<void(absl::StatusOr<v1::Booking>)> done);
  absl::StatusOr<v1::ListBookingsResponse> ListBookings(const Principal& p, const v1::ListBookingsRequest& r);
  // Answers into *out (the call's response, on its arena): done(OK) once it
  // is complete, else done(the error) with *out to be ignored. The page is
  // in *out's unknown fields (the stored documents' bytes as field 1, the
  // token as field 2): bookings() and next_page_token() stay empty, so *out
  // is for serializing only; parse its bytes to read it in-process.
  void ListBookingsAsync(const Principal& p, const v1::ListBookingsRequest& r, v1::ListBookingsResponse* out,
                         std::function<void(absl::Status)> done);
  absl::StatusOr<v1::Booking> CancelBooking(const Principal& p, const v1::CancelBookingRequest& r);
  absl::StatusOr<v1::Booking> ApproveBooking(const Principal& p, const v1::ApproveBookingRequest& r);
  absl::StatusOr<v1::Booking> RejectBooking(const Principal& p, const v1::RejectBookingRequest& r);
  absl::StatusOr<v1::Booking> CheckIn(const Principal& p, const v1::CheckInRequest& r);
  absl::StatusOr<v1::Booking> CheckOut(const Principal& p, const v1::CheckOutRequest& r);
  absl::StatusOr<v1::QueryAvailabilityResponse> QueryAvailability(const Principal& p, const v1::QueryAvailabilityRequest& r);
  // Answers into *out (the call's response, on its arena): done(OK) once it
  // is complete, else done(the error) with *out to be ignored. The page is
  // in *out's unknown fields (the stored documents' bytes as field 1, the
  // token as field 2): bookings() and next_page_token() stay empty, so *out
  // is for serializing only; parse its bytes to read it in-process.
  void QueryAvailabilityAsync(const Principal& p, const v1::QueryAvailabilityRequest& r,
                              v1::QueryAvailabilityResponse* out, std::function<void(absl::Status)> done);
  // Instruments of a category with free time in a range for an organisation
  // (its access policy, horizon and notice), each with its free intervals.
  absl::StatusOr<v1::SearchAvailableInstrumentsResponse> SearchAvailableInstruments(
      const Principal& p, const v1::SearchAvailableInstrumentsRequest& r);
  // The same on the store's pipeline: per page of candidates (from the
  // inventory cache; a miss is read on blocking_), one batch of calendar
  // reads for all of them (BookingStore::CalendarsAsync). Same answers,
  // order, paging and errors as the synchronous form.
  void SearchAvailableInstrumentsAsync(const Principal& p, const v1::SearchAvailableInstrumentsRequest& r,
                                       std::function<void(absl::StatusOr<v1::SearchAvailableInstrumentsResponse>)> done);

  // Leases (booking_leases.cc). A lease and its calendar booking share an
  // id and change together in one step.
  absl::StatusOr<v1::Lease> RequestLease(const Principal& p, const v1::RequestLeaseRequest& r);
  absl::StatusOr<v1::Lease> GetLease(const Principal& p, const v1::GetLeaseRequest& r);
  absl::StatusOr<v1::ListLeasesResponse> ListLeases(const Principal& p, const v1::ListLeasesRequest& r);
  absl::StatusOr<v1::Lease> ApproveLease(const Principal& p, const v1::ApproveLeaseRequest& r);
  absl::StatusOr<v1::Lease> RejectLease(const Principal& p, const v1::RejectLeaseRequest& r);
  absl::StatusOr<v1::Lease> CancelLease(const Principal& p, const v1::CancelLeaseRequest& r);
  absl::StatusOr<v1::Lease> RecordHandover(const Principal& p, const v1::RecordHandoverRequest& r);
  absl::StatusOr<v1::Lease> RecordReturn(const Principal& p, const v1::RecordReturnRequest& r);
  absl::StatusOr<v1::Lease> ExtendLease(const Principal& p, const v1::ExtendLeaseRequest& r);
  absl::StatusOr<v1::Lease> CloseLease(const Principal& p, const v1::CloseLeaseRequest& r);

  // Technical-service orders (booking_orders.cc).
  absl::StatusOr<v1::ServiceOrder> CreateServiceOrder(const Principal& p, const v1::CreateServiceOrderRequest& r);
  absl::StatusOr<v1::ServiceOrder> GetServiceOrder(const Principal& p, const v1::GetServiceOrderRequest& r);
  absl::StatusOr<v1::ListServiceOrdersResponse> ListServiceOrders(const Principal& p, const v1::ListServiceOrdersRequest& r);
  absl::StatusOr<v1::ServiceOrder> IssueQuote(const Principal& p, const v1::IssueQuoteRequest& r);
  absl::StatusOr<v1::ServiceOrder> AcceptQuote(const Principal& p, const v1::AcceptQuoteRequest& r);
  absl::StatusOr<v1::ServiceOrder> ReceiveSamples(const Principal& p, const v1::ReceiveSamplesRequest& r);
  absl::StatusOr<v1::ServiceOrder> ScheduleService(const Principal& p, const v1::ScheduleServiceRequest& r);
  absl::StatusOr<v1::ServiceOrder> StartService(const Principal& p, const v1::StartServiceRequest& r);
  absl::StatusOr<v1::ServiceOrder> DeliverReport(const Principal& p, const v1::DeliverReportRequest& r);
  absl::StatusOr<v1::ServiceOrder> AcceptReport(const Principal& p, const v1::AcceptReportRequest& r);
  absl::StatusOr<v1::ServiceOrder> DisputeReport(const Principal& p, const v1::DisputeReportRequest& r);
  absl::StatusOr<v1::ServiceOrder> CancelOrder(const Principal& p, const v1::CancelOrderRequest& r);

  // Quotas (booking_quotas.cc): an organisation's hours on an instrument per
  // period, checked and counted in the create step.
  absl::StatusOr<v1::Quota> SetQuota(const Principal& p, const v1::SetQuotaRequest& r);
  absl::StatusOr<google::protobuf::Empty> DeleteQuota(const Principal& p, const v1::DeleteQuotaRequest& r);
  absl::StatusOr<v1::ListQuotasResponse> ListQuotas(const Principal& p, const v1::ListQuotasRequest& r);
  absl::StatusOr<v1::QuotaUsage> GetQuotaUsage(const Principal& p, const v1::GetQuotaUsageRequest& r);

  // Joint-research projects.
  absl::StatusOr<v1::Project> CreateProject(const Principal& p, const v1::CreateProjectRequest& r);
  absl::StatusOr<v1::Project> GetProject(const Principal& p, const v1::GetProjectRequest& r);
  absl::StatusOr<v1::ListProjectsResponse> ListProjects(const Principal& p, const v1::ListProjectsRequest& r);
  absl::StatusOr<v1::Project> UpdateProject(const Principal& p, const v1::UpdateProjectRequest& r);

  // Brings the calendar in line with one inventory maintenance window: a
  // SCHEDULED window is put on the calendar (later bookings fail with
  // MAINTENANCE_CONFLICT) and every booking it hits is cancelled without
  // charge (cancelled_by_outage), or, if checked in, checked out at the
  // window start (interrupted_by_outage); a CANCELLED window is taken off.
  // Idempotent; the service also runs it for each window event from
  // inventory. The events of the step carry r.request_id() in their
  // headers, or, without one, `cause_request_id` (the request_id of the
  // inventory event that changed the window, on the consumer's path); the
  // steps' idempotency keys do not change with it.
  absl::StatusOr<v1::ApplyMaintenanceWindowResponse> ApplyMaintenanceWindow(
      const Principal& p, const v1::ApplyMaintenanceWindowRequest& r, const std::string& cause_request_id = "");

  // Marks CONFIRMED bookings MISSED from the moment their check-in window
  // closes (now >= the earlier of start + no_show_grace and the reserved
  // end; CheckInCloses) and PENDING_APPROVAL bookings whose reserved start has come (now >= start,
  // when ApproveBooking refuses them) EXPIRED, and checks
  // out CHECKED_IN ON_SITE and JOINT_RESEARCH sessions nobody checked out at
  // their auto-checkout time (AutoCheckOutTime) once it has passed, as of the
  // clock's now (actor "services/booking"). A CONFIRMED booking whose
  // instrument was not known to be ACTIVE as check-in closed (StateAt) is
  // cancelled as an outage instead of MISSED. Lease requests still
  // REQUESTED at their blocked start expire (the lease CANCELLED, its
  // booking EXPIRED). Service orders in REPORT_DELIVERED whose
  // report_accept_deadline has come (deadline <= now) are COMPLETED, the
  // report accepted at the deadline (report_auto_accepted), with
  // ServiceOrderReportAccepted{auto_accepted}, found through the
  // partitions' keys::ReportDue sets (AcceptDueReports). A booking it cannot
  // settle (an unreadable document,
  // a failed read or step) is logged and skipped, looked at again in the
  // next round; the others are settled. Returns how many changed. The
  // service runs it periodically; safe to run on every replica at once (each
  // change is one versioned step with its events).
  absl::StatusOr<int> Sweep();

  // Fills the listing indexes of ListBookings, ListLeases and
  // ListServiceOrders for data written before they existed (booking_lists.h);
  // idempotent, then a marker. Returns how many documents it indexed.
  absl::StatusOr<int64_t> MigrateListings();

  // Start-up: puts every lease still REQUESTED on its partition's due set
  // at its blocked start (the moment the sweep expires it), for requests an
  // older version stored without that entry (it predates the expiry): one
  // whose term start the instrument's sweep cursor had passed would never
  // be looked at again. SCAN of the lease documents, then ZADD NX (an entry
  // already there keeps its moment); an entry for a lease that moved on
  // meanwhile is dropped by the sweep. Idempotent, safe beside other
  // replicas; after one complete pass only checks the marker
  // {booking}:migrated:leasedue (so replicas of an older version must be
  // gone by then). Returns how many entries it added.
  absl::StatusOr<int64_t> MigrateLeaseRequestsDue();

  // An InstrumentChanged from inventory: the instrument's bookings, leases
  // and orders are re-filed under its operator as of the event
  // (RefileOperator, booking_lists.h). Idempotent; OK only once complete.
  absl::Status FollowInstrumentOperator(const labshare::inventory::v1::Instrument& instrument,
                                        const RefileOptions& options = {});
  // An InstrumentChanged from inventory: recorded (its time, kind, the
  // state before and after and the instrument's version, its etag), so
  // that the sweep knows the instrument's state
  // at an earlier moment (StateAt). Idempotent.
  absl::Status RecordInstrumentChange(const labshare::inventory::v1::InstrumentChanged& changed);
  // A booking event from booking's own outbox (session_uses.h): a
  // BookingCheckedOut of a COMPLETED ON_SITE booking (CheckOut, the
  // sweep's auto check-out, an outage ending a session) has its use
  // recorded in inventory (SessionUse), the same request as the one made
  // right after the check-out, so the use survives an inventory outage
  // then. OK once delivered, when there is nothing to deliver, or when
  // inventory refuses it for good (logged); the error, for a retry, when
  // inventory could not be reached or answered a transient failure
  // (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
  // CANCELLED, INTERNAL, UNKNOWN, UNAUTHENTICATED).
  absl::Status DeliverSessionUse(const v1::BookingEvent& event);
  // Start-up, after MigrateListings: re-files the instruments whose
  // listing entries an older version left under a former operator
  // (RefileStaleOperators, booking_lists.h; the operator from the
  // inventory cache). Once, then a marker; returns how many it re-filed.
  absl::StatusOr<int64_t> RefileStaleOperators(const RefileOptions& options = {});

  // Tests only: ApplyMaintenanceWindow calls `f` with the window's name
  // right before it puts a SCHEDULED window on the calendar, and with each
  // hit booking's name right before the step that changes it, so that a
  // test can make another change between its reads and its steps. Set it
  // before any call runs.
  void InterleaveApplyForTest(std::function<void(const std::string&)> f) { apply_interleave_ = std::move(f); }
  // Tests only: CreateBooking calls `f` with "create:<booking name>" for a
  // JOINT_RESEARCH booking between its project check and its create step,
  // and UpdateProject with "update:<project name>" between its checks of
  // the bookings and counters and its commit, so that a test can run the
  // other one in between. Set it before any call runs.
  void InterleaveProjectForTest(std::function<void(const std::string&)> f) { project_interleave_ = std::move(f); }

 private:
  // The operator a create step's listing keys name, as read from inventory
  // (CreateStep::operator_org, operator_etag).
  static void NameOperator(const labshare::inventory::v1::Instrument& instrument, CreateStep* step);
  // A create step answered kOperatorMoved: the cached instrument predates
  // an operator change; it is forgotten and the request is ABORTED
  // (CONCURRENT_MODIFICATION; a retry reads the instrument anew).
  absl::Status OperatorMoved(const std::string& instrument);

  // What CreateBooking decided before its Lua step.
  struct PreparedCreate {
    CreateStep step;
    v1::Booking booking;
    absl::Status denial;  // the access check's no, if any
    bool reserved_id = false;
    v1::BookingEvent event;        // header of the events the step publishes
    std::vector<CounterCharge> budget;  // the project budget's counter, if any
  };
  // An answer without a step (errors, validate_only, leases, replays), or
  // nullopt with `out` filled.
  // CreateBooking's authorization: the instrument's scope, for whom.
  absl::Status CreateScope(const Principal& p, const v1::CreateBookingRequest& r);
  absl::StatusOr<std::optional<v1::Booking>> PrepareCreate(const Principal& p,
                                                           const v1::CreateBookingRequest& r,
                                                           PreparedCreate& out);
  absl::StatusOr<v1::Booking> FinishCreate(PreparedCreate& prepared,
                                           absl::StatusOr<StepOutcome> outcome);
  // Fills the step from the booking: document, due time, counters, events.
  void SealCreate(PreparedCreate& out) const;

  // The quotas of one (instrument, organisation), as stored under one
  // versioned document; cached, and checked by the create step against the
  // stored version (a stale cache is corrected and the step rerun).
  struct QuotaGroup {
    int64_t version = 0;
    std::vector<v1::Quota> quotas;
  };
  absl::StatusOr<std::shared_ptr<const QuotaGroup>> LoadQuotas(const std::string& instrument_id,
                                                               const std::string& organization);
  std::shared_ptr<const QuotaGroup> CachedQuotas(const std::string& instrument_id,
                                                 const std::string& organization);
  // Charges the booking to the group's quotas: sets quota_charges and the
  // step's counters and guard. over_approved: REQUIRE_APPROVAL quotas may be
  // exceeded and the booking waits in PENDING_APPROVAL (OVER_QUOTA).
  absl::Status ChargeQuotas(PreparedCreate& out, const QuotaGroup& group, bool over_approved) const;
  // The counter movements when a booking leaves committed (cancelled,
  // rejected, expired: released; completed, missed: used).
  // validate_only: the quotas' answer from the current counters.
  absl::Status PreviewQuotas(v1::Booking& b, const std::string& instrument_id);
  static std::vector<CounterMove> QuotaMoves(const v1::Booking& before, v1::Booking::State after);

  // ListBookings before its listing (checks, scope, the index to read) and
  // the filter each document passes (appended to resp when it does).
  struct BookingsListing {
    v1::ListBookingsRequest r;
    Principal p;
    ListScope scope;
    std::unique_ptr<OwnsOrOperates> operates;
    ListQuery q;
    absl::Time range_start, range_end;
    v1::ListBookingsResponse resp;
    // Where the page goes: the call's response (built in place), else resp.
    v1::ListBookingsResponse* out = nullptr;
    // The callback path (ListBookingsAsync): the page's bookings, and then
    // its next_page_token, go into the response's unknown fields as the
    // stored bytes (fields 1 and 2 on the wire, which a client parses as the
    // bookings and the token); its known fields stay empty. Only for a
    // response that is serialized, never read here.
    bool raw = false;
    v1::ListBookingsResponse& Out() { return out != nullptr ? *out : resp; }
    bool nothing = false;  // an unknown lease or order: the empty answer
  };
  absl::StatusOr<std::shared_ptr<BookingsListing>> PlanListBookings(const Principal& p,
                                                                    const v1::ListBookingsRequest& r);
  // Puts a document on the page (raw: its bytes, read off the wire; else
  // parsed) if it matches the filters and the caller's scope (Wanted).
  absl::StatusOr<bool> TakeBooking(BookingsListing& l, std::string& data);  // raw: moves the bytes
  absl::StatusOr<bool> Wanted(BookingsListing& l, const ListedBooking& b);
  void ListBookingsPlanned(const Principal& p, const v1::ListBookingsRequest& r, v1::ListBookingsResponse* out,
                           std::function<void(absl::Status)> done);

  // QueryAvailability before and after its calendar read: the checks and
  // the inventory's facts (cached), then the answer from the calendar.
  struct AvailabilityPlan {
    std::string instrument;  // the request's name
    std::string instrument_id;
    int partition = 0;
    absl::Time from, to;
    absl::Duration lead, tail, min_len;
    labshare::inventory::BookingWindow window;
    bool names = false;  // busy intervals carry their resource
    InventoryClient::Shared<inv::ListMaintenanceWindowsResponse> windows;
    // Not ACTIVE: no free interval (MAINTENANCE: busy over the range).
    inv::InstrumentState state = inv::ACTIVE;
  };
  absl::StatusOr<AvailabilityPlan> PlanAvailability(const Principal& p, const v1::QueryAvailabilityRequest& r);
  // with_busy false: the free intervals only (busy_intervals left empty).
  // The answer into *out (empty before).
  static void AnswerAvailability(const AvailabilityPlan& plan, const std::vector<CalendarEntry>& entries,
                                 const std::vector<std::optional<StoredDoc>>& docs, v1::QueryAvailabilityResponse* out,
                                 bool with_busy = true);
  // The same answer as unknown fields of *out (empty before), in field
  // order: on the wire byte for byte what AnswerAvailability's message
  // gives, without building ~170 nested messages per call only to
  // serialize them (QueryAvailabilityAsync, whose answer goes straight to
  // the wire). A reader of *out in this process sees only unknown fields.
  static void AnswerAvailabilityWire(const AvailabilityPlan& plan, const std::vector<CalendarEntry>& entries,
                                     const std::vector<std::optional<StoredDoc>>& docs,
                                     v1::QueryAvailabilityResponse* out);
  struct AvailabilityAnswer;
  static void ComputeAvailability(const AvailabilityPlan& plan, const std::vector<CalendarEntry>& entries,
                                  const std::vector<std::optional<StoredDoc>>& docs, bool with_busy,
                                  AvailabilityAnswer* answer);

  // SearchAvailableInstrumentsAsync: the request's state across its pages,
  // and one page of candidates with their availability plans.
  struct Search {
    Principal p;
    v1::SearchAvailableInstrumentsRequest r;
    int page_size = 0;
    labshare::type::v1::SharingMode mode = labshare::type::v1::ON_SITE;
    std::string org_name;
    absl::Duration wanted;
    inv::ListInstrumentsRequest list;
    std::shared_ptr<const inv::Organization> org;  // once the first page loaded it
    bool org_loaded = false;
    v1::SearchAvailableInstrumentsResponse resp;
    std::function<void(absl::StatusOr<v1::SearchAvailableInstrumentsResponse>)> done;
  };
  struct SearchPage {
    std::shared_ptr<const inv::Organization> org;
    InventoryClient::Shared<inv::ListInstrumentsResponse> instruments;
    std::vector<std::pair<int, AvailabilityPlan>> candidates;  // index in instruments, plan
  };
  // The next page with a candidate, or the last page, or the max_pages-th
  // page read (s.list's token moves past pages without one).
  absl::StatusOr<SearchPage> PlanSearchPage(Search& s, int max_pages);
  void SearchPlanned(std::shared_ptr<Search> s, absl::StatusOr<SearchPage> planned);
  void SearchAnswered(const std::shared_ptr<Search>& s, const SearchPage& page,
                      const std::vector<std::vector<CalendarEntry>>& cals);
  // Pages of up to this many instruments are planned and answered on the
  // calling (gRPC, pipeline) thread when cached, larger ones on blocking_;
  // at most this many pages without a candidate are passed over there.
  static constexpr int kInlineCandidates = 8;
  absl::Status PlanCandidates(const Search& s, SearchPage* page);
  void SearchNextPage(std::shared_ptr<Search> s);

  // Runs `plan` (read-only) here when every inventory fact it asks for is
  // cached (InventoryClient::CacheOnly), else again on blocking_; then
  // `then` with its answer, on the thread that ran it.
  template <typename T>
  void Planned(std::function<absl::StatusOr<T>()> plan, std::function<void(absl::StatusOr<T>)> then);

  struct Loaded {
    v1::Booking booking;
    int64_t version = 0;
    int partition = 0;
  };
  absl::StatusOr<Loaded> Load(const std::string& name);
  // The scope check of `method` on the named resource, from BookingPolicy():
  // loads it (NOT_FOUND first) and runs before the request is validated.
  // With `lease_methods_first` (CheckIn, CheckOut, CancelBooking), a LEASE
  // booking is answered USE_LEASE_METHODS once read, before the scope.
  absl::Status AuthorizeBooking(const char* method, const Principal& p, const std::string& name,
                                bool lease_methods_first = false);
  absl::Status AuthorizeLease(const char* method, const Principal& p, const std::string& name);
  // `field`: the request's field that names the order (LoadStored).
  absl::Status AuthorizeOrder(const char* method, const Principal& p, const std::string& name,
                              absl::string_view field = "name");
  // A document of a booking partition by resource name ("<collection>/<id>"):
  // the id's partition, then `key`; `not_found` is the NOT_FOUND reason;
  // `field` is the request's field a malformed name is refused on
  // (INVALID_NAME naming it: "name", or e.g. "booking.service_order").
  template <typename T>
  struct Stored {
    T doc;
    int64_t version = 0;
    int partition = 0;
  };
  template <typename T>
  absl::StatusOr<Stored<T>> LoadStored(const std::string& name, absl::string_view collection,
                                       std::string (*key)(int, absl::string_view), absl::string_view not_found,
                                       absl::string_view field = "name") {
    LS_ASSIGN_OR_RETURN(std::string id, labshare::inventory::ParseName(name, collection, field));
    auto missing = MakeError(absl::StatusCode::kNotFound, not_found, name + " does not exist");
    LS_ASSIGN_OR_RETURN(auto partition, store_->PartitionOf(id));
    if (!partition) return missing;
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(key(*partition, id)));
    if (!doc) return missing;
    Stored<T> out;
    LS_ASSIGN_OR_RETURN(out.doc, ParseAnswer<T>(doc->data));
    out.version = doc->version;
    out.partition = *partition;
    return out;
  }
  // Approve/Reject: owner staff or admin, etag, PENDING_APPROVAL; the instrument.
  absl::StatusOr<inv::Instrument> CheckDecision(const Principal& p, const Loaded& cur,
                                                const std::string& etag);

  // What a transition writes; Transition() commits it and retries when the
  // booking moved concurrently. Each attempt reads the clock once and hands
  // that instant to `decide`: the booking's update_time, every time the
  // change stamps and its events' event_time are that one instant.
  struct Change {
    v1::Booking booking;  // the new state
    UpdateStep::Calendar calendar = UpdateStep::Calendar::kKeep;
    int64_t new_end_ms = 0;
    int64_t guard_from_ms = 0;
    int64_t guard_to_ms = 0;
    UpdateStep::Due due = UpdateStep::Due::kKeep;
    // The reserved time leaves the committed hours of the project budget
    // (JOINT_RESEARCH; `used` is added to its used hours) and of the quotas
    // the booking counts against.
    bool release_budget = false;
    absl::Duration used = absl::ZeroDuration();
    std::vector<v1::BookingEvent> events;
    // The id of the maintenance window the change is made for (UpdateStep::
    // window_guard): withdrawn meanwhile, the transition answers
    // WindowWithdrawn() and writes nothing.
    std::string window_guard;
  };
  // The instrument's state at `at`, as far as booking knows it: its state
  // now when inventory has not changed it since (update_time before `at`);
  // else the state before the first change at or after `at`, once booking
  // has recorded it and the change before it, of the version just below
  // (RecordInstrumentChange: versions are inventory's etags, one per
  // change; the first change, the creation, has none before it); nullopt
  // while unknown (one of them not recorded yet, or no longer kept).
  absl::StatusOr<std::optional<inv::InstrumentState>> StateAt(const inv::Instrument& instrument, absl::Time at) const;
  // A CONFIRMED booking whose check-in window closed at `closes` is
  // cancelled as an outage rather than MISSED: unless its instrument is
  // known to have been ACTIVE then (StateAt). Sets *unknown when booking
  // cannot tell.
  absl::StatusOr<bool> OutOfServiceAtClose(const inv::Instrument& instrument, absl::Time closes,
                                           bool* unknown = nullptr) const;
  // When the sweep must look at a booking in `state` (0: never): a CONFIRMED
  // one when its check-in window closes, a PENDING_APPROVAL one at its start.
  absl::Time DueTime(const v1::Booking& b, const inv::Instrument& instrument) const;
  // When the sweep checks a CHECKED_IN session out: at the start of the
  // next entry on the calendar (a booking's blocked interval or a
  // maintenance window) or at check-in + the mode's max_block, whichever
  // comes first.
  absl::StatusOr<absl::Time> AutoCheckOutTime(const Loaded& cur, const inv::Instrument& instrument);
  // The change ending a CHECKED_IN session at `end` (CheckOut, the sweep, an
  // outage): COMPLETED, closed by `p`, no other booking starting before
  // `end`, the reserved time leaving committed hours with the session time
  // used, and CheckOut's event (stamped `now`, the step's clock reading).
  Change EndSession(const Principal& p, const v1::Booking& b, absl::Time end,
                    const std::string& request_id, absl::Time now) const;
  // After a session ended: its use renews the user's qualification when the
  // mode needs one (ON_SITE with qualification_validity_days), through
  // inventory's RecordQualificationUse at the session's end, request_id
  // "checkout-<booking id>". SessionUse answers the call's status;
  // RecordSessionUse, right after the step that ended the session, logs a
  // failure (the check-out stands; DeliverSessionUse delivers the use again
  // from the step's BookingCheckedOut).
  absl::Status SessionUse(const v1::Booking& ended, const inv::Instrument& instrument);
  void RecordSessionUse(const v1::Booking& ended, const inv::Instrument& instrument);
  absl::StatusOr<v1::Booking> Transition(
      const Principal& p, absl::string_view method, const google::protobuf::Message& request,
      const std::string& name, const std::string& request_id,
      const std::function<absl::StatusOr<Change>(const Loaded&, absl::Time now)>& decide);

  // An event's header, its event_time `at`: the instant the change stamped
  // on its resource (EventHeader.event_time, "Service clock time of the
  // state change"), read once for the change, never a later reading.
  v1::BookingEvent Event(const Principal& p, const std::string& request_id, absl::Time at) const;

  template <typename T>
  static absl::StatusOr<T> ParseAnswer(const std::string& bytes) {
    T out;
    if (!out.ParseFromString(bytes)) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored document is unreadable");
    }
    return out;
  }

  // A mutation's request_id, claimed in one slot for all partitions
  // (keys::RequestClaim): another content under it is REQUEST_ID_REUSED
  // wherever its first request went. Empty request_id: no claim.
  struct Claim {
    std::string key;
    std::string fingerprint;
  };
  static Claim ClaimOf(const Principal& p, absl::string_view method, const std::string& request_id,
                       const google::protobuf::Message& request);
  // Takes the claim (sync): REQUEST_ID_REUSED when another content holds it;
  // else whether this call made it (false: an earlier attempt of the same
  // request holds it, or there is no request_id).
  absl::StatusOr<bool> TakeClaim(const Claim& claim) const;
  // The claim's answer: OK for no holder (claimed now) or the same
  // fingerprint, else REQUEST_ID_REUSED.
  static absl::Status HeldBy(const Claim& claim, const std::optional<std::string>& holder);
  // After the step: the claim is dropped again when the step refused for
  // good (not on an answer that may have been kept, such as a storage
  // failure), so a refused request's request_id stays free; and only by
  // the call that made it (`made`). A claim an earlier attempt made may
  // belong to an acknowledged request whose retry is refused by a check
  // that runs before its stored answer is read (review of 2026-12-04: a
  // LEASE retry after the mode was withdrawn): dropping it would let other
  // content reuse the request_id in another partition. A crashed attempt's
  // claim is therefore kept until it expires, like a storage failure's.
  static bool DropsClaim(const Claim& claim, bool made, const absl::Status& outcome);
  template <typename T>
  absl::StatusOr<T> Claimed(Claim claim, const std::function<absl::StatusOr<T>()>& step) {
    LS_ASSIGN_OR_RETURN(const bool made, TakeClaim(claim));
    absl::StatusOr<T> out = step();
    if (DropsClaim(claim, made, out.status())) {
      store_->ReleaseRequest(claim.key, claim.fingerprint).IgnoreError();  // best effort: it expires anyway
    }
    return out;
  }

  // A request seen before (same request id and content) gets its first
  // answer; else `attempt` runs until it answers. An attempt answers nullopt
  // when a compare-and-set lost and the state must be read again.
  template <typename T>
  absl::StatusOr<T> ReplayOrRetry(const std::string& idempotency_key, const std::string& fingerprint,
                                  absl::string_view what,
                                  const std::function<absl::StatusOr<std::optional<T>>(int attempt)>& attempt) {
    LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(idempotency_key, fingerprint));
    if (seen) return ParseAnswer<T>(*seen);
    for (int i = 0; i < 5; ++i) {
      LS_ASSIGN_OR_RETURN(std::optional<T> answer, attempt(i));
      if (answer) return *std::move(answer);
    }
    return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                     absl::StrCat("the ", what, " is being changed concurrently; retry with the same request_id"));
  }

  // The outcomes every step shares: applied, replayed, request id reused;
  // nullopt for anything else (read again).
  template <typename T, typename Outcome>
  static absl::StatusOr<std::optional<T>> Settle(const Outcome& outcome, T applied) {
    using K = decltype(outcome.kind);
    if (outcome.kind == K::kApplied) return std::optional<T>(std::move(applied));
    if (outcome.kind == K::kReplayed) {
      LS_ASSIGN_OR_RETURN(T replay, ParseAnswer<T>(outcome.response));
      return std::optional<T>(std::move(replay));
    }
    if (outcome.kind == K::kRequestReused) return RequestIdReused();
    return std::optional<T>();
  }

  // Leases: the request under any method name (CreateBooking with mode
  // LEASE goes through here too).
  absl::StatusOr<v1::Lease> RequestLeaseAs(const Principal& p, absl::string_view method,
                                           const google::protobuf::Message& request,
                                           const v1::Lease& in, const std::string& lease_id,
                                           const std::string& request_id, bool validate_only,
                                           v1::Booking* booking_answer = nullptr);
  // RequestLeaseAs without its retry's first answer on a refusal.
  absl::StatusOr<v1::Lease> RequestLeaseChecked(const Principal& p, absl::string_view method,
                                                const google::protobuf::Message& request, const v1::Lease& in,
                                                const std::string& lease_id, const std::string& request_id,
                                                bool validate_only, v1::Booking* booking_answer);
  struct LeaseChange {
    v1::Lease lease;
    v1::Booking booking;
    UpdateStep::Calendar calendar = UpdateStep::Calendar::kKeep;
    int64_t new_end_ms = 0;
    int64_t guard_from_ms = 0;  // a violated guard is SLOT_TAKEN
    int64_t guard_to_ms = 0;
    UpdateStep::Due due = UpdateStep::Due::kKeep;
    bool guard_overlap = false;  // UpdateStep::guard_overlap
    std::vector<v1::BookingEvent> events;
    std::string window_guard;  // as Change's
  };
  struct LoadedLease {
    v1::Lease lease;
    int64_t lease_version = 0;
    Loaded booking;
  };
  absl::StatusOr<v1::Lease> LeaseTransition(
      const Principal& p, absl::string_view method, const google::protobuf::Message& request,
      const std::string& name, const std::string& request_id,
      const std::function<absl::StatusOr<LeaseChange>(const LoadedLease&, absl::Time now)>& decide);
  absl::StatusOr<LoadedLease> LoadLease(const std::string& name);
  // `event_request_id`: what the events' headers carry (the window
  // request's); the step itself takes no idempotency key.
  absl::StatusOr<v1::Lease> CancelLeaseForOutage(const Principal& p, const std::string& name,
                                                 const inv::MaintenanceWindow& window,
                                                 const std::string& event_request_id);

  // Orders: a change of the order alone, or of the order and its run's
  // booking together (one step either way).
  struct LoadedOrder {
    v1::ServiceOrder order;
    int64_t version = 0;
    int partition = 0;
  };
  struct OrderChange {
    v1::ServiceOrder order;
    std::vector<v1::BookingEvent> events;
    // With the run's booking (order.booking): its new state and calendar op.
    bool with_booking = false;
    v1::Booking booking;
    int64_t booking_version = 0;
    UpdateStep::Calendar calendar = UpdateStep::Calendar::kKeep;
    // As UpdateStep's: no other booking may start in (from, to); 0,0: none.
    int64_t guard_from_ms = 0;
    int64_t guard_to_ms = 0;
    std::string window_guard;  // as Change's (with_booking only)
    // Sorted-set writes of the order's partition in the same step (its
    // keys::ReportDue entry).
    std::vector<IndexOp> index_ops;
  };
  absl::StatusOr<LoadedOrder> LoadOrder(const std::string& name, absl::string_view field = "name");
  // CreateServiceOrder once authorized and its request_id claimed.
  absl::StatusOr<v1::ServiceOrder> PlaceServiceOrder(const Principal& p, const v1::CreateServiceOrderRequest& r,
                                                     const std::string& instrument_id);
  // ScheduleService under any method name: CreateBooking (mode
  // TECHNICAL_SERVICE) passes booking_answer, which gets the run as booked
  // (or previewed, with validate_only), a retry's first answer too; it books
  // an order in SAMPLES_RECEIVED only (no reschedule).
  absl::StatusOr<v1::ServiceOrder> ScheduleRun(const Principal& p, const v1::ScheduleServiceRequest& r,
                                               absl::string_view method, const google::protobuf::Message& request,
                                               bool validate_only, v1::Booking* booking_answer);
  // The run `run_name` of `order` unscheduled by an outage; BOOKING_STATE
  // when it is no longer the order's CONFIRMED run (checked in, started,
  // replaced meanwhile).
  absl::StatusOr<v1::ServiceOrder> UnscheduleForOutage(const Principal& p, const std::string& order,
                                                       const std::string& run_name,
                                                       const inv::MaintenanceWindow& window,
                                                       const std::string& event_request_id);
  // The run of a SCHEDULED order cancelled, the order back in
  // SAMPLES_RECEIVED, in one step: by an outage (`window`) or, without one,
  // by owner staff (or an administrator for them) cancelling the run
  // `run_name` (CancelBooking). The events carry `event_request_id` when
  // it is given (the window request's), else `request_id`.
  absl::StatusOr<v1::ServiceOrder> UnscheduleRun(const Principal& p, absl::string_view method,
                                                 const google::protobuf::Message& request, const std::string& order,
                                                 const std::string& request_id, const std::string& run_name,
                                                 const std::string& reason, const inv::MaintenanceWindow* window,
                                                 const std::string& event_request_id = "");
  // CancelBooking of a TECHNICAL_SERVICE run: owner staff (or an
  // administrator for them); unschedules it.
  absl::StatusOr<v1::Booking> CancelRun(const Principal& p, const v1::CancelBookingRequest& r,
                                        const v1::Booking& run);
  absl::StatusOr<v1::ServiceOrder> OrderTransition(
      const Principal& p, absl::string_view method, const google::protobuf::Message& request, const std::string& name,
      const std::string& request_id,
      const std::function<absl::StatusOr<OrderChange>(const LoadedOrder&, absl::Time now)>& decide);
  // The sweep's part for service orders (booking_orders.cc): every entry of
  // the partition's keys::ReportDue set due at `now`, page by page
  // (`batch`): its order, still REPORT_DELIVERED with that deadline, is
  // accepted at the deadline (decided on the stored order in the step, so a
  // client's accept or dispute racing it wins or loses whole); an entry
  // whose order moved on is dropped (guarded by the order's version). One
  // it cannot settle is logged and skipped until the next round. Adds the
  // orders it completed to *changed.
  absl::Status AcceptDueReports(const Principal& sweeper, int partition, absl::Time now, int batch, int* changed);

  // Projects (booking_projects.cc).
  // Validates a project and fills what is computed (shares, each budget's
  // instrument_owner; used and committed cleared). `check_instruments`: asks
  // inventory whether each budgeted instrument exists and offers
  // JOINT_RESEARCH (else the stored instrument_owner stays);
  // `check_participants`: whether each participant organisation exists.
  // CreateProject checks both, UpdateProject what its mask changes.
  absl::Status CompleteProject(v1::Project& project, bool check_instruments = true,
                               bool check_participants = true);
  v1::Project::State ProjectState(const v1::Project& project) const;
  v1::Project::State ProjectState(const v1::Project& project, absl::Time now) const;
  absl::Status FillProjectUse(v1::Project& project) const;
  // `field`: the request's field that names the project ("name",
  // "project.name", "booking.project"), named by INVALID_NAME.
  absl::StatusOr<v1::Project> LoadProject(const std::string& name, int64_t* version, absl::string_view field) const;
  static bool MaySeeProject(const Principal& p, const v1::Project& project);
  // One attempt of UpdateProject: CONCURRENT_MODIFICATION when another
  // change of the project won the compare-and-set.
  // `fenced_out`: set when another update's fences stood in the way
  // (CONCURRENT_MODIFICATION, nothing done; UpdateProject waits for them).
  absl::StatusOr<v1::Project> UpdateProjectOnce(const Principal& p, const v1::UpdateProjectRequest& r,
                                                bool* fenced_out);
  // How many times UpdateProject waits (1..50 ms, growing) for another
  // update's fences before it answers CONCURRENT_MODIFICATION.
  static constexpr int kFenceWaits = 40;
  // UpdateProjectOnce once its fences are set: the checks against the
  // bookings and counters of `current` (at `version`), then the commit of
  // `project` (merged and completed).
  absl::StatusOr<v1::Project> UpdateProjectFenced(const Principal& p, const v1::UpdateProjectRequest& r,
                                                  const v1::Project& current, int64_t version, v1::Project project);
  // Commits a project mutation; `on_conflict` answers a lost compare-and-set.
  absl::StatusOr<v1::Project> CommitProject(const Mutation& m, const v1::Project& project,
                                            absl::Status on_conflict);
  // Writes the project's budget counters as of its `version` (an instrument
  // in `dropped` but no longer budgeted gets 0); a counter already set from
  // that or a later version stays, unless `overwrite` (CreateProject).
  absl::Status SetProjectBudgets(const v1::Project& project, const std::vector<std::string>& dropped,
                                 int64_t version, bool overwrite = false) const;
  // The project checks of a JOINT_RESEARCH booking, in this order: the payer
  // participates (NOT_PROJECT_PARTICIPANT, before anything else is told
  // about the project), the instrument is budgeted
  // (INSTRUMENT_NOT_IN_PROJECT), the project has not ended
  // (PROJECT_NOT_ACTIVE), the booking lies in its period
  // (OUTSIDE_PROJECT_PERIOD). Fills its cost shares and `version`, the
  // project version checked (the create step holds the budget counter to
  // it: CounterCharge::project_version). An UpdateProject under way (its
  // fence on the budget) is CONCURRENT_MODIFICATION; the lapsed fence of
  // one that died is lifted first (the counters follow the document).
  // A `preview` (validate_only) writes nothing: a lapsed fence stays, and
  // counters behind the document are not brought up to it. `budget_ms`:
  // the checked version's budget on the instrument, which a preview judges
  // counters behind that version by (what the request would write first).
  absl::Status CheckProject(v1::Booking& booking, const std::string& instrument_id, int64_t* version,
                            bool preview, int64_t* budget_ms);
  // UpdateProject's fences (BookingStore::FenceBudget) on the project's
  // budget of each instrument of `instruments` (in order), for `owner`: a
  // create step of a booking of the project on them answers kProjectMoved
  // until they are lifted. True when every one is set; false when another
  // update's live fence holds one of them (the fences set so far lifted).
  absl::StatusOr<bool> FenceProject(const std::string& project_id, const std::vector<std::string>& instruments,
                                    int64_t owner);
  // Lifts `owner`'s fences of FenceProject after writing the budgets of
  // `project` (as SetProjectBudgets: an instrument it no longer budgets
  // gets 0) at `version`; a `project` of version 0 (not known: archived)
  // writes none.
  absl::Status LiftProjectFences(const std::string& project_id, const std::vector<std::string>& instruments,
                                 int64_t owner, const v1::Project& project, int64_t version) const;

  BookingStore* store_;
  InventoryClient* inventory_;
  const Clock* clock_;
  PageTokenCodec page_tokens_;
  absl::Mutex quota_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const QuotaGroup>> quota_cache_ ABSL_GUARDED_BY(quota_mu_);
  std::function<void(const std::string&)> apply_interleave_;  // InterleaveApplyForTest
  std::function<void(const std::string&)> project_interleave_;  // InterleaveProjectForTest
  // The async reads' synchronous steps (inventory cache misses, a lease's or
  // order's document): never on a pipeline or gRPC callback thread. Last, so
  // it stops (running what it accepted) before the rest goes.
  static constexpr int kBlockingThreads = 4;
  static constexpr size_t kBlockingQueue = 1024;
  std::unique_ptr<BlockingExecutor> blocking_;
  // Runs `work` on blocking_; INVENTORY_UNAVAILABLE when too much waits.
  absl::Status Offload(std::function<void()> work);

 public:
  // True on the threads of a manager's blocking_ (where Offload runs work).
  static bool OnBlockingThread();

 private:
};

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_BOOKING_MANAGER_H_
