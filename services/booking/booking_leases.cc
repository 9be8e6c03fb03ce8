// Leases: the owner rents an instrument to another organisation for a term.
// The lease document and its calendar booking (mode LEASE, same id, same
// partition) always change together in one Lua step; the booking blocks
// [term start - handover buffer, term end + return buffer).
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/booking/booking_common.h"
#include "services/booking/booking_lists.h"
#include "services/booking/booking_manager.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::booking {
namespace {

using labshare::inventory::FindMode;
using labshare::inventory::ParseName;
using labshare::type::v1::Money;

absl::Status LeaseState(const v1::Lease& l, absl::string_view wanted) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "LEASE_STATE",
                   absl::StrCat(l.name(), " is ", v1::Lease::State_Name(l.state()), "; this needs ", wanted),
                   {{"state", v1::Lease::State_Name(l.state())}});
}

// A request still REQUESTED when its blocked interval has begun is in
// effect CANCELLED (Lease.CANCELLED): the sweep cancels it from that moment
// (RequestDeadline), whenever it runs. RejectLease and CancelLease answer
// it as a cancelled lease.
bool ExpiredRequest(const v1::Lease& l, absl::Time now) {
  return l.state() == v1::Lease::REQUESTED && now >= RequestDeadline(l);
}
absl::Status ExpiredRequestState(const v1::Lease& l, absl::string_view wanted) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "LEASE_STATE",
                   absl::StrCat(l.name(), " was not approved before its term (handover buffer included) began: "
                                "it is CANCELLED; this needs ", wanted),
                   {{"state", v1::Lease::State_Name(v1::Lease::CANCELLED)}});
}

Money Min(const Money& a, const Money& b) { return a.amount_minor() <= b.amount_minor() ? a : b; }
Money Minus(const Money& a, const Money& b) {
  Money out = a;
  out.set_amount_minor(a.amount_minor() - b.amount_minor());
  return out;
}

}  // namespace

// ================================================================ request

absl::StatusOr<v1::Lease> BookingManager::RequestLease(const Principal& p,
                                                       const v1::RequestLeaseRequest& r) {
  // Authorization before anything else (types.proto), the claim included:
  // a caller who may not ask hears so, whatever its request_id.
  LS_RETURN_IF_ERROR(CheckScopeNamed("RequestLease", p, *inventory_, r.lease().instrument(), "lease.instrument",
                                     {r.lease().contact_user().empty() ? ActorName(p) : r.lease().contact_user(), {}, {}}));
  // The lessee a LAB_USER names too, as CreateBooking and CreateServiceOrder
  // check theirs: another organisation is ORGANIZATION_SCOPE, not a
  // REQUEST_ID_REUSED of the request_id her own request used.
  LS_RETURN_IF_ERROR(CheckOwnOrganization(p, r.lease().lessee_organization(), "lessee"));
  // The request_id is one request in every partition (types.proto): claimed
  // in one slot, as CreateBooking claims its own.
  return Claimed<v1::Lease>(ClaimOf(p, "RequestLease", r.validate_only() ? "" : r.request_id(), r), [&] {
    return RequestLeaseAs(p, "RequestLease", r, r.lease(), r.lease_id(), r.request_id(), r.validate_only());
  });
}

namespace {

// A stored first answer of a lease request: the lease, or for CreateBooking
// (`booking_answer` set) the booking as created (a record of an older
// version holds the lease: booking_answer stays empty and the caller reads
// the booking).
absl::StatusOr<v1::Lease> ReplayedLease(const std::string& bytes, v1::Booking* booking_answer) {
  v1::Lease first;
  if (booking_answer != nullptr) {
    v1::Booking answer;
    if (answer.ParseFromString(bytes) && absl::StartsWith(answer.name(), "bookings/")) {
      *booking_answer = std::move(answer);
      return first;
    }
    booking_answer->Clear();
  }
  if (!first.ParseFromString(bytes)) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored answer is unreadable");
  }
  return first;
}

}  // namespace

absl::StatusOr<v1::Lease> BookingManager::RequestLeaseAs(const Principal& p, absl::string_view method,
                                                         const google::protobuf::Message& request,
                                                         const v1::Lease& in, const std::string& lease_id,
                                                         const std::string& request_id, bool validate_only,
                                                         v1::Booking* booking_answer) {
  absl::StatusOr<v1::Lease> out =
      RequestLeaseChecked(p, method, request, in, lease_id, request_id, validate_only, booking_answer);
  // A refusal from a check that runs before the step reads the stored answer
  // (the instrument's lease buffers grew, the lessee is gone, ...): a retry
  // of a request answered before gets its first answer all the same
  // (types.proto), whatever became of the instrument since.
  const absl::StatusCode code = out.status().code();
  if (out.ok() || validate_only || request_id.empty() ||
      (code != absl::StatusCode::kFailedPrecondition && code != absl::StatusCode::kNotFound)) {
    return out;
  }
  auto instrument_id = ParseName(in.instrument(), "instruments", "lease.instrument");
  if (!instrument_id.ok()) return out;
  auto seen = store_->FindReplay(keys::Idempotency(keys::Partition(*instrument_id), method, request_id),
                                 RequestFingerprint(method, request, ActorName(p)));
  if (!seen.ok() || !*seen) return out;  // another request's record: refused as it was
  return ReplayedLease(**seen, booking_answer);
}

absl::StatusOr<v1::Lease> BookingManager::RequestLeaseChecked(const Principal& p, absl::string_view method,
                                                              const google::protobuf::Message& request,
                                                              const v1::Lease& in, const std::string& lease_id,
                                                              const std::string& request_id, bool validate_only,
                                                              v1::Booking* booking_answer) {
  // Authorization before validation: for whom the caller asks, then the
  // lessee; then the instrument's name.
  LS_RETURN_IF_ERROR(CheckScopeNamed("RequestLease", p, *inventory_, in.instrument(), "lease.instrument",
                                     {in.contact_user().empty() ? ActorName(p) : in.contact_user(), {}, {}}));
  LS_RETURN_IF_ERROR(CheckOwnOrganization(p, in.lessee_organization(), "lessee"));
  LS_ASSIGN_OR_RETURN(std::string instrument_id, ParseName(in.instrument(), "instruments", "lease.instrument"));
  // CreateBooking (mode LEASE) answers in its own request's terms: its
  // booking_id, its booking's reserved interval, BOOKING_EXISTS.
  const bool as_booking = booking_answer != nullptr;
  if (!lease_id.empty()) LS_RETURN_IF_ERROR(CheckChosenId(as_booking ? "booking_id" : "lease_id", lease_id));
  const auto& term = in.term();
  if (!term.has_start_time() || !term.has_end_time() ||
      FromProto(term.end_time()) <= FromProto(term.start_time())) {
    return InvalidField(as_booking ? "booking.reserved_interval" : "lease.term", "needs start_time before end_time",
                        "INVALID_INTERVAL");
  }
  const auto exists = [&](const std::string& name) {
    return as_booking ? MakeError(absl::StatusCode::kAlreadyExists, "BOOKING_EXISTS",
                                  "bookings/" + IdOf(name) + " already exists")
                      : MakeError(absl::StatusCode::kAlreadyExists, "LEASE_EXISTS", name + " already exists");
  };
  const std::string contact = in.contact_user().empty() ? "users/" + p.user_id : in.contact_user();
  LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(in.instrument()));
  const bool privileged = p.HasRole(Role::kConsortiumAdmin) || IsOwnerStaff(p, instrument);
  if (!privileged && contact != "users/" + p.user_id) {
    return MakeError(absl::StatusCode::kPermissionDenied, "USER_SCOPE", "you may request leases only as yourself");
  }
  // Malformed names are named as the request names them (inventory's answer would say "name").
  LS_RETURN_IF_ERROR(ParseName(contact, "users", as_booking ? "booking.user" : "lease.contact_user").status());
  LS_ASSIGN_OR_RETURN(inv::User user, inventory_->GetUser(contact));
  const std::string lessee = in.lessee_organization().empty() ? user.organization() : in.lessee_organization();
  if (!privileged && lessee != user.organization()) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "only the owner's staff or an administrator may name another lessee");
  }
  LS_RETURN_IF_ERROR(
      ParseName(lessee, "organizations", as_booking ? "booking.payer_organization" : "lease.lessee_organization")
          .status());
  // The named resources (NOT_FOUND) before any FAILED_PRECONDITION.
  LS_ASSIGN_OR_RETURN(inv::Organization payer, inventory_->GetOrganization(lessee));
  LS_ASSIGN_OR_RETURN(inv::Facility facility, inventory_->GetFacility(instrument.facility()));
  // An instrument that does not offer LEASE is the access check's
  // MODE_NOT_OFFERED, in its place among the denials (after USER_DISABLED,
  // INSTRUMENT_NOT_ACTIVE, ACCESS_POLICY_FORBIDS; with "denials") and after
  // a chosen id already taken (RequestLease's comment). Its block then has
  // the requested buffers (none: zero), and no lease rule applies to them.
  const inv::ModeOffering* offering = FindMode(instrument, labshare::type::v1::LEASE);
  const absl::Duration rule_handover =
      offering == nullptr ? absl::ZeroDuration() : FromProto(offering->lease_rules().handover_buffer());
  const absl::Duration rule_return =
      offering == nullptr ? absl::ZeroDuration() : FromProto(offering->lease_rules().return_buffer());
  const absl::Duration handover = in.has_handover_buffer() ? FromProto(in.handover_buffer()) : rule_handover;
  const absl::Duration ret = in.has_return_buffer() ? FromProto(in.return_buffer()) : rule_return;
  if (offering != nullptr && (handover < rule_handover || ret < rule_return)) {
    return Precondition("BUFFER_TOO_SHORT", "handover and return buffers may not be shorter than the instrument's lease rules");
  }
  labshare::inventory::AccessFacts facts;
  facts.user = &user;
  facts.payer = &payer;
  facts.instrument = &instrument;
  facts.facility = &facility;
  // The notice is measured against the buffer the lease gets: a longer
  // requested handover buffer needs that much notice too (the block starts
  // a handover buffer before the term, and a block already started could
  // never be approved: LEASE_STARTED).
  inv::Instrument with_buffer;
  if (offering != nullptr && handover > rule_handover) {
    with_buffer = instrument;
    for (auto& m : *with_buffer.mutable_modes()) {
      if (m.mode() == labshare::type::v1::LEASE) *m.mutable_lease_rules()->mutable_handover_buffer() = ToProto(handover);
    }
    facts.instrument = &with_buffer;
  }
  LS_ASSIGN_OR_RETURN(facts.rates, inventory_->ListRates(in.instrument()));
  LS_ASSIGN_OR_RETURN(facts.windows, inventory_->ListMaintenanceWindows(in.instrument()));
  // A scheduled window over the handover or return buffer too (the block).
  facts.has_blocked = true;
  facts.blocked_start = FromProto(term.start_time()) - handover;
  facts.blocked_end = FromProto(term.end_time()) + ret;
  inv::CheckAccessRequest check;
  check.set_user(contact);
  check.set_instrument(in.instrument());
  check.set_mode(labshare::type::v1::LEASE);
  *check.mutable_interval() = term;
  check.set_payer_organization(lessee);
  const absl::Time now = clock_->Now();
  const inv::CheckAccessResponse access = EvaluateAccess(facts, check, now);
  absl::Status denial;
  if (!access.allowed()) {
    std::vector<std::string> codes;
    for (const auto& d : access.denials()) codes.push_back(inv::DenialCode_Name(d.code()));
    const auto& first = access.denials(0);
    std::string reason = inv::DenialCode_Name(first.code());
    if (first.code() == inv::BLOCK_TOO_SHORT) reason = "LEASE_TERM_TOO_SHORT";
    if (first.code() == inv::BLOCK_TOO_LONG) reason = "LEASE_TERM_TOO_LONG";
    if (first.code() == inv::DURING_MAINTENANCE) reason = "MAINTENANCE_CONFLICT";
    denial = MakeError(absl::StatusCode::kFailedPrecondition, reason, first.message(),
                       {{"denials", absl::StrJoin(codes, ",")}});
  }

  const absl::Time start = FromProto(term.start_time());
  const absl::Time end = FromProto(term.end_time());
  const int partition = keys::Partition(instrument_id);
  const std::string id = lease_id.empty() ? NewBookingId(partition) : lease_id;
  v1::Lease lease;
  lease.set_name("leases/" + id);
  lease.set_instrument(in.instrument());
  lease.set_instrument_owner(instrument.owner_organization());
  lease.set_lessee_organization(lessee);
  lease.set_contact_user(contact);
  *lease.mutable_term() = term;
  *lease.mutable_handover_buffer() = ToProto(handover);
  *lease.mutable_return_buffer() = ToProto(ret);
  *lease.mutable_blocked_interval()->mutable_start_time() = ToProto(start - handover);
  *lease.mutable_blocked_interval()->mutable_end_time() = ToProto(end + ret);
  lease.set_state(v1::Lease::REQUESTED);
  lease.set_booking("bookings/" + id);
  lease.set_purpose(in.purpose());
  lease.set_payer_class(access.payer_class());
  lease.set_payer_tier(access.payer_class() == labshare::type::v1::MEMBER ? payer.tier() : "");
  *lease.mutable_create_time() = ToProto(now);
  *lease.mutable_update_time() = ToProto(now);
  lease.set_etag("1");
  v1::Booking booking;
  booking.set_name(lease.booking());
  booking.set_instrument(in.instrument());
  booking.set_instrument_owner(instrument.owner_organization());
  booking.set_mode(labshare::type::v1::LEASE);
  booking.set_user(contact);
  booking.set_user_organization(user.organization());
  booking.set_payer_organization(lessee);
  *booking.mutable_reserved_interval() = term;
  *booking.mutable_blocked_interval() = lease.blocked_interval();
  booking.set_state(v1::Booking::PENDING_APPROVAL);
  booking.set_approval_reason(v1::Booking::LEASE_CONTRACT);
  booking.set_lease(lease.name());
  booking.set_payer_class(lease.payer_class());
  booking.set_payer_tier(lease.payer_tier());
  booking.set_purpose(in.purpose());
  *booking.mutable_create_time() = ToProto(now);
  *booking.mutable_update_time() = ToProto(now);
  booking.set_etag("1");

  const int64_t blocked_start = Ms(start - handover);
  const int64_t blocked_end = CeilMs(end + ret);
  // The calendar entry in the way: a maintenance window or another booking
  // (validate_only reads it as the step would meet it).
  const auto slot_taken = [](const std::string& conflicting) {
    if (IsWindowEntry(conflicting)) {
      return Precondition("MAINTENANCE_CONFLICT", "the term (with handover and return buffers) overlaps a "
                          "maintenance window");
    }
    return Precondition("SLOT_TAKEN", "the term (with handover and return buffers) overlaps another booking");
  };
  if (validate_only) {
    // In the request's order: a chosen id already taken (reserved before
    // the step), then the access denial (the step's first check).
    if (!lease_id.empty()) {
      LS_ASSIGN_OR_RETURN(auto taken_id, store_->PartitionOf(id));
      if (taken_id) return exists(lease.name());
    }
    if (!denial.ok()) return denial;
    LS_ASSIGN_OR_RETURN(auto taken, store_->CalendarRange(partition, instrument_id, blocked_start, blocked_end));
    // Named as the step names it: by the last entry in the way.
    if (!taken.empty()) return slot_taken(taken.back().booking_id);
    lease.clear_name();
    lease.clear_booking();
    if (as_booking) {
      *booking_answer = std::move(booking);
      booking_answer->clear_name();
      booking_answer->clear_lease();
    }
    return lease;
  }
  // The first answer (ReplayedLease).
  const auto replayed = [&](const std::string& bytes) { return ReplayedLease(bytes, booking_answer); };
  const std::string idem = request_id.empty() ? "" : keys::Idempotency(partition, method, request_id);
  const std::string fingerprint = RequestFingerprint(method, request, ActorName(p));
  bool reserved_id = false;
  if (!lease_id.empty()) {
    LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(idem, fingerprint));
    if (seen) return replayed(*seen);
    LS_ASSIGN_OR_RETURN(reserved_id, store_->ReserveId(id, partition));
    if (!reserved_id) return exists(lease.name());
  }
  CreateStep step;
  step.partition = partition;
  step.instrument_id = instrument_id;
  step.booking_id = id;
  step.idempotency_key = idem;
  step.fingerprint = fingerprint;
  step.booking = SerializeDeterministic(booking);
  step.busy_reason = BusyReasonOf(booking);
  step.response = as_booking ? SerializeDeterministic(booking) : SerializeDeterministic(lease);
  step.blocked_start_ms = blocked_start;
  step.blocked_end_ms = blocked_end;
  step.reserved_start_ms = Ms(start);
  step.extra_docs.push_back({keys::Lease(partition, id), lease.SerializeAsString(), 0});
  step.denied = !denial.ok();
  // The sweep expires the request if it is still REQUESTED when its block
  // begins (ApproveLease: LEASE_STARTED): it looks at it from then on
  // through the due set, or at the latest from the term start (its listing
  // start) through the instrument's cursor.
  step.swept = true;
  step.listing_keys = BookingListingKeys(partition, booking, instrument.operator_organization());
  for (auto& k : LeaseListingKeys(partition, lease, instrument.operator_organization())) {
    step.listing_keys.push_back(std::move(k));
  }
  NameOperator(instrument, &step);
  // Both carry the create_time of the lease and its booking.
  v1::BookingEvent requested = Event(p, request_id, now);
  *requested.mutable_lease_requested()->mutable_lease() = lease;
  v1::BookingEvent created = Event(p, request_id, now);
  *created.mutable_booking_created()->mutable_booking() = booking;
  step.events = {requested.SerializeAsString(), created.SerializeAsString()};
  auto outcome = store_->Create(step);
  if (reserved_id && (!outcome.ok() || outcome->kind != StepOutcome::Kind::kApplied)) {
    store_->ReleaseId(id).IgnoreError();
  }
  LS_RETURN_IF_ERROR(outcome.status());
  switch (outcome->kind) {
    case StepOutcome::Kind::kApplied:
      if (absl::Status due = store_->RememberDue(partition, id, blocked_start); !due.ok()) {
        // Best effort: the sweep still meets it on its cursor at the term start.
        LogWarning("lease request not put on the due set", {{"lease", lease.name()}, {"error", due.ToString()}});
      }
      if (as_booking) *booking_answer = std::move(booking);
      return lease;
    case StepOutcome::Kind::kReplayed: return replayed(outcome->response);
    case StepOutcome::Kind::kRequestReused: return RequestIdReused();
    case StepOutcome::Kind::kDenied: return denial;
    case StepOutcome::Kind::kExists: return exists(lease.name());
    case StepOutcome::Kind::kSlotTaken: return slot_taken(outcome->conflicting);
    case StepOutcome::Kind::kOperatorMoved: return OperatorMoved(lease.instrument());
    default: break;
  }
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage outcome");
}

// ================================================================ start-up

absl::StatusOr<int64_t> BookingManager::MigrateLeaseRequestsDue() {
  const std::string done = "{booking}:migrated:leasedue";
  LS_ASSIGN_OR_RETURN(RedisValue marker, store_->docs().pool()->Command({"EXISTS", done}));
  if (marker.integer == 1) return 0;
  int64_t added = 0;
  std::string cursor = "0";
  do {
    LS_ASSIGN_OR_RETURN(auto step, store_->ScanKeys(cursor, "{bk:*}:lease:*"));
    cursor = step.first;
    std::vector<std::string> doc_keys;
    std::vector<int> parts;
    for (const auto& key : step.second) {
      // "{bk:<p>}:lease:<id>", exactly keys::Lease's shape.
      const size_t close = key.find('}');
      int p = -1;
      if (key.rfind("{bk:", 0) != 0 || close == std::string::npos || !absl::SimpleAtoi(key.substr(4, close - 4), &p) ||
          p < 0 || p >= kPartitions) {
        continue;
      }
      const std::string prefix = keys::Lease(p, "");
      if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix) != 0) continue;
      doc_keys.push_back(key);
      parts.push_back(p);
    }
    if (doc_keys.empty()) continue;
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    std::vector<BookingStore::DueEntry> due;
    for (size_t i = 0; i < docs.size() && i < doc_keys.size(); ++i) {
      if (!docs[i]) continue;
      v1::Lease lease;
      if (!lease.ParseFromString(docs[i]->data) || lease.state() != v1::Lease::REQUESTED) continue;
      // Its booking has the lease's id; the sweep reaches the lease through it.
      const std::string id = IdOf(lease.booking().empty() ? lease.name() : lease.booking());
      if (id.empty()) continue;
      // When ApproveLease starts answering LEASE_STARTED (the sweep's test).
      const absl::Time at = RequestDeadline(lease);
      due.push_back({parts[i], id, Ms(at)});
    }
    LS_ASSIGN_OR_RETURN(int64_t n, store_->AddDueIfAbsent(due));
    added += n;
  } while (cursor != "0");
  LS_RETURN_IF_ERROR(store_->docs().pool()->Command({"SET", done, "1"}).status());
  return added;
}

// ================================================================ reads

absl::StatusOr<BookingManager::LoadedLease> BookingManager::LoadLease(const std::string& name) {
  LS_ASSIGN_OR_RETURN(auto stored, LoadStored<v1::Lease>(name, "leases", keys::Lease, "LEASE_NOT_FOUND"));
  LoadedLease out;
  out.lease = std::move(stored.doc);
  out.lease_version = stored.version;
  LS_ASSIGN_OR_RETURN(out.booking, Load("bookings/" + IdOf(name)));  // a lease and its booking share the id
  return out;
}

absl::Status BookingManager::AuthorizeLease(const char* method, const Principal& p, const std::string& name) {
  LS_ASSIGN_OR_RETURN(auto stored, LoadStored<v1::Lease>(name, "leases", keys::Lease, "LEASE_NOT_FOUND"));
  return CheckScopeOn(method, p, *inventory_, stored.doc.instrument(),
                      {stored.doc.contact_user(), {stored.doc.lessee_organization()}, {}});
}

absl::StatusOr<v1::Lease> BookingManager::GetLease(const Principal& p, const v1::GetLeaseRequest& r) {
  LS_ASSIGN_OR_RETURN(LoadedLease cur, LoadLease(r.name()));
  LS_RETURN_IF_ERROR(CheckScopeOn("GetLease", p, *inventory_, cur.lease.instrument(),
                                  {cur.lease.contact_user(), {cur.lease.lessee_organization()}, {}}));
  return cur.lease;
}

absl::StatusOr<v1::ListLeasesResponse> BookingManager::ListLeases(const Principal& p,
                                                                  const v1::ListLeasesRequest& r) {
  LS_RETURN_IF_ERROR(CheckPageSize(r.page_size()));
  // Scoped like ListBookings by organisation (booking_lists.h).
  const ListScope scope = ScopeOf(p);
  if (!r.lessee_organization().empty() && r.lessee_organization() != scope.org && !scope.all && !scope.staff) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "you may list only your own organisation's leases");
  }
  std::string instrument_id, lessee_id, owner_id;
  if (!r.instrument().empty()) {
    LS_ASSIGN_OR_RETURN(instrument_id, ParseName(r.instrument(), "instruments", "instrument"));
  }
  if (!r.lessee_organization().empty()) {
    LS_ASSIGN_OR_RETURN(lessee_id, ParseName(r.lessee_organization(), "organizations", "lessee_organization"));
  }
  if (!r.instrument_owner().empty()) {
    LS_ASSIGN_OR_RETURN(owner_id, ParseName(r.instrument_owner(), "organizations", "instrument_owner"));
  }
  for (int i = 0; i < r.states_size(); ++i) {  // an entry is named by its index
    const int s = r.states(i);
    if (s == 0 || !v1::Lease::State_IsValid(s)) return InvalidField(absl::StrCat("states[", i, "]"), "not a lease state");
  }
  LS_ASSIGN_OR_RETURN(bool descending, ParseOrderBy(r.order_by(), "start_time", false));
  const auto& range = r.time_range();
  if (r.has_time_range() && (!range.has_start_time() || !range.has_end_time() ||
                             FromProto(range.end_time()) <= FromProto(range.start_time()))) {
    return InvalidField("time_range", "needs start_time before end_time (half-open [start, end))", "INVALID_INTERVAL");
  }
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  ListQuery q;
  q.descending = descending;
  q.doc_key = keys::Lease;  // the instrument's index lists bookings too: no lease document, skipped
  q.page_size = page.page_size;
  q.after = page.after;
  if (r.has_time_range()) {
    q.lo_ms = Ms(FromProto(range.start_time()));
    q.hi_ms = Ms(FromProto(range.end_time())) + 1;  // whole milliseconds; exact below
    q.widen_by_span = true;
  }
  if (!instrument_id.empty()) {
    const int part = keys::Partition(instrument_id);
    q.candidates.push_back({{part, keys::ByInstrument(part, instrument_id), false}});
  }
  if (!lessee_id.empty()) q.candidates.push_back(EveryPartition('l', "org", lessee_id));
  if (!owner_id.empty()) q.candidates.push_back(EveryPartition('l', "org", owner_id));
  if (scope.all) {
    q.candidates.push_back(EveryPartition('l', "", ""));
  } else if (!scope.org.empty()) {
    q.candidates.push_back(EveryPartition('l', "org", IdOf(scope.org)));
  } else {
    q.candidates.push_back({});
  }
  OwnsOrOperates operates(inventory_, scope.org);
  const absl::Time range_start = r.has_time_range() ? FromProto(range.start_time()) : absl::InfinitePast();
  const absl::Time range_end = r.has_time_range() ? FromProto(range.end_time()) : absl::InfiniteFuture();
  v1::ListLeasesResponse resp;
  auto take = [&](const std::string& data) -> absl::StatusOr<bool> {
    v1::Lease lease;
    if (!lease.ParseFromString(data)) {  // as ListBookings: damaged data is an error, never a shorter page
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored lease is unreadable");
    }
    if (!r.instrument().empty() && lease.instrument() != r.instrument()) return false;
    if (!r.lessee_organization().empty() && lease.lessee_organization() != r.lessee_organization()) return false;
    if (!r.instrument_owner().empty() && lease.instrument_owner() != r.instrument_owner()) return false;
    if (!r.states().empty() && std::find(r.states().begin(), r.states().end(), lease.state()) == r.states().end()) {
      return false;
    }
    // A half-open empty term [s, s) (returned before it began) overlaps no range.
    const absl::Time term_start = FromProto(lease.term().start_time()), term_end = FromProto(lease.term().end_time());
    if (r.has_time_range() && !(term_start < range_end && range_start < term_end && term_start < term_end)) {
      return false;
    }
    bool visible = scope.all || (!scope.org.empty() && lease.lessee_organization() == scope.org &&
                                 (scope.lab_user || scope.billing || scope.staff));
    if (!visible && scope.staff && !scope.org.empty()) {
      if (lease.instrument_owner() == scope.org) {
        visible = true;
      } else {
        LS_ASSIGN_OR_RETURN(visible, operates(lease.instrument()));
      }
    }
    if (!visible) return false;
    *resp.add_leases() = std::move(lease);
    return true;
  };
  LS_ASSIGN_OR_RETURN(std::string next, RunListing(*store_, q, take));
  if (!next.empty()) resp.set_next_page_token(page_tokens_.Make(r, p, next));
  return resp;
}

// ================================================================ transitions

absl::StatusOr<v1::Lease> BookingManager::LeaseTransition(
    const Principal& p, absl::string_view method, const google::protobuf::Message& request,
    const std::string& name, const std::string& request_id,
    const std::function<absl::StatusOr<LeaseChange>(const LoadedLease&, absl::Time now)>& decide) {
  LS_ASSIGN_OR_RETURN(LoadedLease cur, LoadLease(name));
  const std::string idem = request_id.empty() ? "" : keys::Idempotency(cur.booking.partition, method, request_id);
  const std::string fingerprint = RequestFingerprint(method, request, ActorName(p));
  // The partition's record answers a retry; the claim refuses another
  // content under the request_id whichever partition its lease is in.
  return Claimed<v1::Lease>(ClaimOf(p, method, request_id, request), [&] { return ReplayOrRetry<v1::Lease>(
      idem, fingerprint, "lease",
      [&](int attempt) -> absl::StatusOr<std::optional<v1::Lease>> {
        if (attempt > 0) {
          LS_ASSIGN_OR_RETURN(cur, LoadLease(name));
        }
        // One clock reading per attempt: update_time, what the change
        // stamps and the events' event_time.
        const absl::Time now = clock_->Now();
        LS_ASSIGN_OR_RETURN(LeaseChange c, decide(cur, now));
        *c.lease.mutable_update_time() = ToProto(now);
        c.lease.set_etag(std::to_string(cur.lease_version + 1));
        // A booking the change leaves as it is (CloseLease) is not rewritten:
        // its etag and update_time stay, and its version still guards the step.
        const bool booking_changed =
            SerializeDeterministic(c.booking) != SerializeDeterministic(cur.booking.booking);
        if (booking_changed) {
          *c.booking.mutable_update_time() = ToProto(now);
          c.booking.set_etag(std::to_string(cur.booking.version + 1));
        }
        UpdateStep step;
        step.partition = cur.booking.partition;
        step.instrument_id = IdOf(c.booking.instrument());
        step.booking_id = IdOf(c.booking.name());
        step.idempotency_key = idem;
        step.fingerprint = fingerprint;
        if (booking_changed) step.booking = SerializeDeterministic(c.booking);
        step.busy_reason = BusyReasonOf(c.booking);
        step.response = SerializeDeterministic(c.lease);
        step.expected_version = cur.booking.version;
        step.extra_docs.push_back({keys::Lease(cur.booking.partition, IdOf(c.lease.name())),
                                   c.lease.SerializeAsString(), cur.lease_version});
        step.calendar = c.calendar;
        step.blocked_start_ms = Ms(FromProto(cur.booking.booking.blocked_interval().start_time()));
        step.new_end_ms = c.new_end_ms;
        step.guard_from_ms = c.guard_from_ms;
        step.guard_to_ms = c.guard_to_ms;
        step.due = c.due;
        step.guard_overlap = c.guard_overlap;
        step.window_guard = c.window_guard;
        for (auto& e : c.events) {
          AttachSnapshot(e, request_id, c.booking, &c.lease);
          step.events.push_back(e.SerializeAsString());
        }
        LS_ASSIGN_OR_RETURN(StepOutcome outcome, store_->Update(step));
        if (outcome.kind == StepOutcome::Kind::kWindowWithdrawn) return WindowWithdrawn();
        if (outcome.kind == StepOutcome::Kind::kSlotTaken) {
          if (IsWindowEntry(outcome.conflicting)) {
            return Precondition("MAINTENANCE_CONFLICT", "the new term overlaps a maintenance window");
          }
          return Precondition("SLOT_TAKEN", "the new term overlaps another booking");
        }
        return Settle(outcome, std::move(c.lease));
      }); });
}

namespace {
absl::Status CheckLeaseEtag(const std::string& given, int64_t version) {
  if (!given.empty() && given != std::to_string(version)) {
    return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", "the lease changed; read it again");
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<v1::Lease> BookingManager::ApproveLease(const Principal& p, const v1::ApproveLeaseRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("ApproveLease", p, r.name()));
  const auto& k = r.contract();
  if (k.rate_basis() == v1::LeaseContract::RATE_BASIS_UNSPECIFIED || !v1::LeaseContract::RateBasis_IsValid(k.rate_basis())) {
    return InvalidField("contract.rate_basis", "choose DAILY or MONTHLY");
  }
  LS_RETURN_IF_ERROR(labshare::inventory::ValidateMoney(k.rate(), "contract.rate", true));
  if (k.rate().amount_minor() <= 0) return InvalidField("contract.rate.amount_minor", "must be positive");
  LS_RETURN_IF_ERROR(labshare::inventory::ValidateMoney(k.deposit(), "contract.deposit", false));
  if (!k.deposit().currency_code().empty() && k.deposit().currency_code() != k.rate().currency_code()) {
    return InvalidField("contract.deposit.currency_code", "must be the rate's currency", "CURRENCY_MISMATCH");
  }
  return LeaseTransition(p, "ApproveLease", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    LS_RETURN_IF_ERROR(CheckLeaseEtag(r.etag(), cur.lease_version));
    if (cur.lease.state() != v1::Lease::REQUESTED) return LeaseState(cur.lease, "REQUESTED");
    if (now >= RequestDeadline(cur.lease)) {
      return Precondition("LEASE_STARTED", "the term (handover buffer included) has begun");
    }
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::APPROVED);
    auto* contract = c.lease.mutable_contract();
    *contract = k;
    if (contract->deposit().currency_code().empty()) contract->mutable_deposit()->set_currency_code(k.rate().currency_code());
    contract->set_approved_by(ActorName(p));
    *contract->mutable_approve_time() = ToProto(now);
    c.booking.set_state(v1::Booking::CONFIRMED);
    *c.booking.mutable_decision()->mutable_decide_time() = ToProto(now);
    c.booking.mutable_decision()->set_decided_by(ActorName(p));
    v1::BookingEvent approved = Event(p, r.request_id(), now);
    approved.mutable_lease_approved();
    v1::BookingEvent booking_approved = Event(p, r.request_id(), now);
    booking_approved.mutable_booking_approved();
    v1::BookingEvent confirmed = Event(p, r.request_id(), now);
    confirmed.mutable_booking_confirmed()->set_via_approval(true);
    c.events = {std::move(approved), std::move(booking_approved), std::move(confirmed)};
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::RejectLease(const Principal& p, const v1::RejectLeaseRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("RejectLease", p, r.name()));
  if (r.reason().empty()) return InvalidField("reason", "say why; the lessee sees it");
  return LeaseTransition(p, "RejectLease", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    LS_RETURN_IF_ERROR(CheckLeaseEtag(r.etag(), cur.lease_version));
    if (cur.lease.state() != v1::Lease::REQUESTED) return LeaseState(cur.lease, "REQUESTED");
    // From its block start the request is the sweep's (Lease.CANCELLED),
    // also before the sweep has run: no longer rejected.
    if (ExpiredRequest(cur.lease, now)) return ExpiredRequestState(cur.lease, "REQUESTED");
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::REJECTED);
    c.lease.set_end_reason(r.reason());
    c.booking.set_state(v1::Booking::REJECTED);
    c.booking.mutable_decision()->set_decided_by(ActorName(p));
    *c.booking.mutable_decision()->mutable_decide_time() = ToProto(now);
    c.booking.mutable_decision()->set_note(r.reason());
    c.calendar = UpdateStep::Calendar::kRemove;
    v1::BookingEvent rejected = Event(p, r.request_id(), now);
    rejected.mutable_lease_rejected()->set_reason(r.reason());
    v1::BookingEvent booking_rejected = Event(p, r.request_id(), now);
    booking_rejected.mutable_booking_rejected()->set_reason(r.reason());
    c.events = {std::move(rejected), std::move(booking_rejected)};
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::CancelLease(const Principal& p, const v1::CancelLeaseRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("CancelLease", p, r.name()));
  return LeaseTransition(p, "CancelLease", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    const v1::Lease::State previous = cur.lease.state();
    if (previous != v1::Lease::REQUESTED && previous != v1::Lease::APPROVED) {
      return LeaseState(cur.lease, "REQUESTED or APPROVED");
    }
    // As RejectLease: a request whose block has begun is cancelled by the
    // sweep (its end_reason, its actor), whenever the sweep runs.
    if (ExpiredRequest(cur.lease, now)) return ExpiredRequestState(cur.lease, "REQUESTED or APPROVED");
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::CANCELLED);
    c.lease.set_end_reason(r.reason());
    const v1::Booking::State booking_before = c.booking.state();
    c.booking.set_state(v1::Booking::CANCELLED);
    auto* cancel = c.booking.mutable_cancellation();
    *cancel->mutable_cancel_time() = ToProto(now);
    cancel->set_cancelled_by(ActorName(p));
    cancel->set_initiator(v1::Booking::PARENT_RESOURCE);
    cancel->set_reason(r.reason());
    c.calendar = UpdateStep::Calendar::kRemove;
    v1::BookingEvent cancelled = Event(p, r.request_id(), now);
    cancelled.mutable_lease_cancelled()->set_previous_state(previous);
    cancelled.mutable_lease_cancelled()->set_reason(r.reason());
    v1::BookingEvent booking_cancelled = Event(p, r.request_id(), now);
    booking_cancelled.mutable_booking_cancelled()->set_previous_state(booking_before);
    booking_cancelled.mutable_booking_cancelled()->set_initiator(v1::Booking::PARENT_RESOURCE);
    c.events = {std::move(cancelled), std::move(booking_cancelled)};
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::CancelLeaseForOutage(const Principal& p, const std::string& name,
                                                               const inv::MaintenanceWindow& window,
                                                               const std::string& event_request_id) {
  v1::CancelLeaseRequest key;
  key.set_name(name);
  return LeaseTransition(p, "ApplyMaintenanceWindow", key, name, "",
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    const v1::Lease::State previous = cur.lease.state();
    if (previous != v1::Lease::REQUESTED && previous != v1::Lease::APPROVED) {
      return LeaseState(cur.lease, "REQUESTED or APPROVED");
    }
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::CANCELLED);
    c.lease.set_cancelled_by_outage(true);
    c.lease.set_end_reason(window.reason());
    const v1::Booking::State booking_before = c.booking.state();
    c.booking.set_state(v1::Booking::CANCELLED);
    c.booking.set_cancelled_by_outage(true);
    auto* cancel = c.booking.mutable_cancellation();
    *cancel->mutable_cancel_time() = ToProto(now);
    cancel->set_cancelled_by(ActorName(p));
    cancel->set_initiator(v1::Booking::MAINTENANCE_OUTAGE);
    cancel->set_reason(window.reason());
    cancel->set_maintenance_window(window.name());
    c.calendar = UpdateStep::Calendar::kRemove;
    c.window_guard = IdOf(window.name());
    v1::BookingEvent cancelled = Event(p, event_request_id, now);
    auto* lc = cancelled.mutable_lease_cancelled();
    lc->set_previous_state(previous);
    lc->set_reason(window.reason());
    lc->set_cancelled_by_outage(true);
    lc->set_maintenance_window(window.name());
    v1::BookingEvent booking_cancelled = Event(p, event_request_id, now);
    auto* bc = booking_cancelled.mutable_booking_cancelled();
    bc->set_previous_state(booking_before);
    bc->set_cancelled_by_outage(true);
    bc->set_initiator(v1::Booking::MAINTENANCE_OUTAGE);
    bc->set_maintenance_window(window.name());
    c.events = {std::move(cancelled), std::move(booking_cancelled)};
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::RecordHandover(const Principal& p, const v1::RecordHandoverRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("RecordHandover", p, r.name()));
  if (r.condition_notes().empty()) return InvalidField("condition_notes", "note the instrument's condition at handover");
  return LeaseTransition(p, "RecordHandover", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    if (cur.lease.state() != v1::Lease::APPROVED) return LeaseState(cur.lease, "APPROVED");
    const absl::Time t = r.has_handover_time() ? FromProto(r.handover_time()) : now;
    if (t > now) return InvalidField("handover_time", "must not be in the future");
    if (t < LeaseBlockedStart(cur.lease) || t >= FromProto(cur.lease.term().end_time())) {
      return Precondition("HANDOVER_WINDOW", "handover happens from the handover buffer before the term until its end");
    }
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::HANDED_OVER);
    auto* h = c.lease.mutable_handover();
    *h->mutable_handover_time() = ToProto(t);
    h->set_condition_notes(r.condition_notes());
    h->set_recorded_by(ActorName(p));
    c.booking.set_state(v1::Booking::CHECKED_IN);
    *c.booking.mutable_session()->mutable_start_time() = ToProto(t);
    c.booking.mutable_session()->set_checked_in_by(ActorName(p));
    c.booking.mutable_session()->set_notes(r.condition_notes());
    v1::BookingEvent handed = Event(p, r.request_id(), now);
    handed.mutable_lease_handed_over();
    v1::BookingEvent checked_in = Event(p, r.request_id(), now);
    checked_in.mutable_booking_checked_in();
    c.events = {std::move(handed), std::move(checked_in)};
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::RecordReturn(const Principal& p, const v1::RecordReturnRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("RecordReturn", p, r.name()));
  if (r.condition_notes().empty()) return InvalidField("condition_notes", "note the instrument's condition at return");
  // An empty amount (0, no currency) is no damage, as an unset one; an
  // amount given carries its currency.
  const bool damage = r.has_damage_amount() &&
                      (r.damage_amount().amount_minor() != 0 || !r.damage_amount().currency_code().empty());
  if (damage) LS_RETURN_IF_ERROR(labshare::inventory::ValidateMoney(r.damage_amount(), "damage_amount", true));
  return LeaseTransition(p, "RecordReturn", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    if (cur.lease.state() != v1::Lease::HANDED_OVER) return LeaseState(cur.lease, "HANDED_OVER");
    const std::string currency = cur.lease.contract().rate().currency_code();
    if (damage && r.damage_amount().currency_code() != currency) {
      return InvalidField("damage_amount.currency_code", "must be the contract currency " + currency, "CURRENCY_MISMATCH");
    }
    const absl::Time t = r.has_return_time() ? FromProto(r.return_time()) : now;
    if (t > now || t < FromProto(cur.lease.handover().handover_time())) {
      return InvalidField("return_time", "must lie between the handover and now");
    }
    const absl::Time term_end = FromProto(cur.lease.term().end_time());
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::RETURNED);
    auto* ret = c.lease.mutable_return_record();
    *ret->mutable_return_time() = ToProto(t);
    ret->set_condition_notes(r.condition_notes());
    ret->set_damage_notes(r.damage_notes());
    *ret->mutable_damage_amount() = r.damage_amount();
    ret->mutable_damage_amount()->set_currency_code(currency);
    ret->set_early_return(t < term_end);
    ret->set_late_return(t > term_end);
    ret->set_recorded_by(ActorName(p));
    c.booking.set_state(v1::Booking::COMPLETED);
    *c.booking.mutable_session()->mutable_end_time() = ToProto(t);
    c.booking.mutable_session()->set_checked_out_by(ActorName(p));
    v1::BookingEvent returned = Event(p, r.request_id(), now);
    returned.mutable_lease_returned();
    v1::BookingEvent checked_out = Event(p, r.request_id(), now);
    checked_out.mutable_booking_checked_out();
    c.events = {std::move(returned), std::move(checked_out)};
    if (t < term_end) {
      // Early return: the term (the booking's reserved interval) ends at the
      // return, and the block shrinks to return + return buffer.
      const absl::Time new_end = t + FromProto(cur.lease.return_buffer());
      v1::BookingEvent changed = Event(p, r.request_id(), now);
      changed.mutable_booking_interval_changed()->set_cause(v1::BookingIntervalChanged::EARLY_RETURN);
      *changed.mutable_booking_interval_changed()->mutable_previous_reserved_interval() = c.booking.reserved_interval();
      *changed.mutable_booking_interval_changed()->mutable_previous_blocked_interval() = c.booking.blocked_interval();
      // A return before the term began (handed over early, inside the
      // handover buffer) leaves an empty term [start, start), never one that
      // ends before it starts.
      const absl::Time term_end_now = std::max(t, FromProto(cur.lease.term().start_time()));
      *c.lease.mutable_term()->mutable_end_time() = ToProto(term_end_now);
      *c.booking.mutable_reserved_interval()->mutable_end_time() = ToProto(term_end_now);
      // (A lease or booking stored without a blocked interval gets the
      // start RequestLease would have stored.)
      if (!c.lease.has_blocked_interval()) {
        *c.lease.mutable_blocked_interval()->mutable_start_time() = ToProto(LeaseBlockedStart(cur.lease));
      }
      if (!c.booking.has_blocked_interval()) {
        *c.booking.mutable_blocked_interval()->mutable_start_time() = ToProto(LeaseBlockedStart(cur.lease));
      }
      *c.lease.mutable_blocked_interval()->mutable_end_time() = ToProto(new_end);
      *c.booking.mutable_blocked_interval()->mutable_end_time() = ToProto(new_end);
      c.calendar = UpdateStep::Calendar::kSetEnd;
      c.new_end_ms = CeilMs(new_end);
      c.events.push_back(std::move(changed));
    }
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::ExtendLease(const Principal& p, const v1::ExtendLeaseRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("ExtendLease", p, r.name()));
  if (!r.has_new_end_time()) return InvalidField("new_end_time", "required");
  return LeaseTransition(p, "ExtendLease", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    // In the comment's order: what the lease alone decides first, so that
    // inventory out of reach does not hide a stale etag, a lease in the
    // wrong state or a new_end_time that is no extension.
    LS_RETURN_IF_ERROR(CheckLeaseEtag(r.etag(), cur.lease_version));
    if (cur.lease.state() != v1::Lease::APPROVED && cur.lease.state() != v1::Lease::HANDED_OVER) {
      return LeaseState(cur.lease, "APPROVED or HANDED_OVER");
    }
    const absl::Time old_end = FromProto(cur.lease.term().end_time());
    const absl::Time new_end = FromProto(r.new_end_time());
    if (new_end <= old_end) return InvalidField("new_end_time", "must be after the current term end");
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(cur.lease.instrument()));
    const inv::ModeOffering* offering = FindMode(instrument, labshare::type::v1::LEASE);
    if (offering == nullptr) {
      // Its lease rules (the longest term) went with the mode.
      return Precondition("MODE_NOT_OFFERED", absl::StrCat(cur.lease.instrument(),
                                                           " no longer offers LEASE: a lease on it cannot be extended"));
    }
    const int max_days = offering->lease_rules().max_term_days();
    if (new_end - FromProto(cur.lease.term().start_time()) > absl::Hours(24) * max_days) {
      return Precondition("LEASE_TERM_TOO_LONG", absl::StrCat("a lease runs at most ", max_days, " days"));
    }
    const absl::Time blocked_end = new_end + FromProto(cur.lease.return_buffer());
    // The block as it stands, for a lease stored without a blocked interval
    // (by an older version) the one RequestLease would have stored:
    // [term start - handover buffer, term end + return buffer).
    const absl::Time old_blocked_start = LeaseBlockedStart(cur.lease);
    const absl::Time old_blocked_end = cur.lease.has_blocked_interval()
                                           ? FromProto(cur.lease.blocked_interval().end_time())
                                           : old_end + FromProto(cur.lease.return_buffer());
    // A window scheduled in inventory over the extension of the block,
    // [old blocked end, new blocked end) (the return buffer included), is
    // in the way as one on the calendar is (the step's MAINTENANCE_CONFLICT
    // below), also before the calendar has received it.
    LS_ASSIGN_OR_RETURN(auto windows, inventory_->Windows(cur.lease.instrument()));
    if (const inv::MaintenanceWindow* w =
            labshare::inventory::ScheduledWindowOver(windows->maintenance_windows(), old_blocked_end, blocked_end)) {
      return Precondition("MAINTENANCE_CONFLICT", "the new term (with its return buffer) overlaps maintenance "
                          "window " + w->name() + " scheduled in inventory");
    }
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    auto* ext = c.lease.add_extensions();
    *ext->mutable_previous_end_time() = ToProto(old_end);
    *ext->mutable_new_end_time() = ToProto(new_end);
    *ext->mutable_extend_time() = ToProto(now);
    ext->set_extended_by(ActorName(p));
    ext->set_note(r.note());
    v1::BookingEvent changed = Event(p, r.request_id(), now);
    changed.mutable_booking_interval_changed()->set_cause(v1::BookingIntervalChanged::LEASE_EXTENDED);
    *changed.mutable_booking_interval_changed()->mutable_previous_reserved_interval() = c.booking.reserved_interval();
    *changed.mutable_booking_interval_changed()->mutable_previous_blocked_interval() = c.booking.blocked_interval();
    *c.lease.mutable_term()->mutable_end_time() = ToProto(new_end);
    if (!c.lease.has_blocked_interval()) {
      *c.lease.mutable_blocked_interval()->mutable_start_time() = ToProto(old_blocked_start);
    }
    *c.lease.mutable_blocked_interval()->mutable_end_time() = ToProto(blocked_end);
    *c.booking.mutable_reserved_interval()->mutable_end_time() = ToProto(new_end);
    if (!c.booking.has_blocked_interval()) {
      *c.booking.mutable_blocked_interval()->mutable_start_time() = ToProto(old_blocked_start);
    }
    *c.booking.mutable_blocked_interval()->mutable_end_time() = ToProto(blocked_end);
    c.calendar = UpdateStep::Calendar::kSetEnd;
    c.new_end_ms = CeilMs(blocked_end);
    // The block grows by [old blocked end, new blocked end): that must not
    // run into the next booking or a window. What lies inside the old block
    // is not in the way (a window applied while the lease was handed over
    // left it alone there).
    c.guard_from_ms = CeilMs(old_blocked_end);
    c.guard_to_ms = CeilMs(blocked_end);
    c.guard_overlap = true;
    v1::BookingEvent extended = Event(p, r.request_id(), now);
    *extended.mutable_lease_extended()->mutable_previous_end_time() = ToProto(old_end);
    *extended.mutable_lease_extended()->mutable_new_end_time() = ToProto(new_end);
    c.events = {std::move(extended), std::move(changed)};
    // Lists bound a time range by the longest booking: grow it first (a
    // longer bound than needed is harmless if the step then fails).
    LS_RETURN_IF_ERROR(store_->RaiseListingSpan(
        cur.booking.partition, CeilMs(blocked_end) - Ms(FromProto(cur.booking.booking.reserved_interval().start_time()))));
    return c;
  });
}

absl::StatusOr<v1::Lease> BookingManager::CloseLease(const Principal& p, const v1::CloseLeaseRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeLease("CloseLease", p, r.name()));
  return LeaseTransition(p, "CloseLease", r, r.name(), r.request_id(),
                         [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
    if (cur.lease.state() != v1::Lease::RETURNED) return LeaseState(cur.lease, "RETURNED");
    LeaseChange c;
    c.lease = cur.lease;
    c.booking = cur.booking.booking;
    c.lease.set_state(v1::Lease::CLOSED);
    const Money& deposit = c.lease.contract().deposit();
    const Money& damage = c.lease.return_record().damage_amount();
    auto* s = c.lease.mutable_settlement();
    *s->mutable_deposit_applied() = Min(deposit, damage);
    *s->mutable_deposit_released() = Minus(deposit, s->deposit_applied());
    *s->mutable_damage_outstanding() = Minus(damage, s->deposit_applied());
    *s->mutable_close_time() = ToProto(now);
    s->set_closed_by(ActorName(p));
    s->set_notes(r.notes());
    v1::BookingEvent closed = Event(p, r.request_id(), now);
    closed.mutable_lease_closed();
    c.events = {std::move(closed)};
    return c;
  });
}

}  // namespace labshare::booking
