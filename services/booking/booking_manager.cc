#include "services/booking/booking_common.h"
#include "services/booking/booking_manager.h"

#include <limits>
#include <optional>
#include <tuple>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include "services/booking/booking_lists.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::booking {
namespace {

using labshare::inventory::EvaluateAccess;
using labshare::inventory::FindMode;
using labshare::inventory::SlotRulesOf;
using labshare::inventory::ParseName;
using labshare::type::v1::SharingMode;
using State = v1::Booking::State;

constexpr int kAttempts = 5;
// The sweep reads at most this many bookings per instrument and round, and
// looks this far back every round (a booking is stored within a request's
// lifetime of being checked against the clock, so its start is never older).
constexpr int kSweepBatch = 500;
constexpr absl::Duration kSweepLookback = absl::Hours(1);
constexpr absl::Duration kMaxRange = absl::Hours(24 * 366);

absl::Status WrongState(const v1::Booking& b, absl::string_view wanted) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "BOOKING_STATE",
                   absl::StrCat(b.name(), " is ", v1::Booking::State_Name(b.state()), "; this needs ",
                                wanted),
                   {{"state", v1::Booking::State_Name(b.state())}});
}

absl::Status UserScope(std::string message) {
  return MakeError(absl::StatusCode::kPermissionDenied, "USER_SCOPE", message);
}

bool IsAdmin(const Principal& p) { return p.HasRole(Role::kConsortiumAdmin); }

absl::Status NotForLeases(const v1::Booking& b) {
  if (b.mode() != labshare::type::v1::LEASE) return absl::OkStatus();
  return MakeError(absl::StatusCode::kFailedPrecondition, "USE_LEASE_METHODS",
                   absl::StrCat(b.name(), " belongs to ", b.lease(), "; use the lease methods"));
}

bool IsBookingUser(const Principal& p, const v1::Booking& b) {
  return !p.HasRole(Role::kService) && b.user() == "users/" + p.user_id;
}

absl::Status ValidInterval(const labshare::type::v1::Interval& i, const std::string& field) {
  if (!i.has_start_time() || !i.has_end_time() ||
      FromProto(i.end_time()) <= FromProto(i.start_time())) {
    return InvalidField(field, "needs start_time before end_time (half-open [start, end))",
                        "INVALID_INTERVAL");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Booking> ParseBooking(const std::string& bytes) {
  v1::Booking b;
  if (!b.ParseFromString(bytes)) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored booking is unreadable");
  }
  return b;
}

// A stored booking's state and mode without parsing the whole document
// (QueryAvailability reads one per entry in its range and needs only
// these); false where ParseBooking would fail to parse the wire format.
// Keep in step with ParseBooking's encoding.
bool ReadStateAndMode(const std::string& bytes, int* state, int* mode) {
  using google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  *state = 0;
  *mode = 0;
  while (const uint32_t tag = in.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    if ((field == v1::Booking::kStateFieldNumber || field == v1::Booking::kModeFieldNumber) &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_VARINT) {
      uint64_t v = 0;
      if (!in.ReadVarint64(&v)) return false;
      (field == v1::Booking::kStateFieldNumber ? *state : *mode) = static_cast<int>(static_cast<int32_t>(v));
      continue;
    }
    if (!WireFormatLite::SkipField(&in, tag)) return false;
  }
  return in.ConsumedEntireMessage();
}

absl::Status PayerScope() {
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   "only the owner's staff or an administrator may name another paying organisation");
}

absl::Status BookingExists(const std::string& name) {
  return MakeError(absl::StatusCode::kAlreadyExists, "BOOKING_EXISTS", name + " already exists");
}

// The billing rules of a slot mode's offering, as the booking keeps them
// (Booking.billing_terms).
v1::BillingTerms BillingTermsOf(const inv::SlotRules& rules) {
  v1::BillingTerms t;
  switch (rules.billing_basis()) {
    case inv::RESERVED_TIME: t.set_billing_basis(v1::BillingTerms::RESERVED_TIME); break;
    case inv::ACTUAL_TIME: t.set_billing_basis(v1::BillingTerms::ACTUAL_TIME); break;
    case inv::GREATER_OF_RESERVED_AND_ACTUAL:
      t.set_billing_basis(v1::BillingTerms::GREATER_OF_RESERVED_AND_ACTUAL);
      break;
    default: break;  // inventory requires one: never unset on an offered mode
  }
  if (rules.has_billing_unit()) *t.mutable_billing_unit() = rules.billing_unit();
  if (rules.has_minimum_charge()) *t.mutable_minimum_charge() = rules.minimum_charge();
  t.set_missed_fee_bps(rules.missed_fee_bps());
  t.set_late_cancel_fee_bps(rules.late_cancel_fee_bps());
  return t;
}

absl::Status OverBudget() {
  return MakeError(absl::StatusCode::kFailedPrecondition, "PROJECT_BUDGET_EXCEEDED",
                   "the booking does not fit the project's remaining hours on this instrument");
}

}  // namespace

v1::BookingEvent BookingManager::Event(const Principal& p, const std::string& request_id, absl::Time at) const {
  v1::BookingEvent e;
  auto* h = e.mutable_header();
  h->set_event_id(NewEventId());
  *h->mutable_event_time() = ToProto(at);
  h->set_request_id(request_id);
  h->set_actor(ActorName(p));
  h->set_actor_organization(ActorOrganization(p));
  h->set_trace_id(p.trace_id);
  return e;
}

// ================================================================ request ids

BookingManager::Claim BookingManager::ClaimOf(const Principal& p, absl::string_view method, const std::string& request_id,
                                              const google::protobuf::Message& request) {
  Claim c;
  if (request_id.empty()) return c;
  c.key = keys::RequestClaim(method, request_id);
  c.fingerprint = RequestFingerprint(method, request, ActorName(p));
  return c;
}

absl::Status BookingManager::HeldBy(const Claim& claim, const std::optional<std::string>& holder) {
  if (holder && *holder != claim.fingerprint) return RequestIdReused();
  return absl::OkStatus();
}

absl::StatusOr<bool> BookingManager::TakeClaim(const Claim& claim) const {
  if (claim.key.empty()) return false;
  LS_ASSIGN_OR_RETURN(auto holder, store_->ClaimRequest(claim.key, claim.fingerprint));
  LS_RETURN_IF_ERROR(HeldBy(claim, holder));
  return !holder.has_value();
}

bool BookingManager::DropsClaim(const Claim& claim, bool made, const absl::Status& outcome) {
  if (claim.key.empty() || !made || outcome.ok()) return false;
  switch (outcome.code()) {
    case absl::StatusCode::kUnavailable:  // may have been kept: a retry must find the claim
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kCancelled:
    // A chosen id taken: maybe by a copy of this very request still in its
    // step, whose answer is not stored yet (review of 2026-12-04): keep.
    case absl::StatusCode::kAlreadyExists:
      return false;
    default:
      return true;
  }
}

// ================================================================ create

namespace {

// Whether PrepareCreate writes before the step (a chosen id's reservation,
// a lease's or a run's whole step): the request_id is claimed before it.
bool WritesWhilePreparing(const v1::CreateBookingRequest& r) {
  return !r.booking_id().empty() || r.booking().mode() == labshare::type::v1::LEASE ||
         r.booking().mode() == labshare::type::v1::TECHNICAL_SERVICE;
}

}  // namespace

absl::StatusOr<v1::Booking> BookingManager::CreateBooking(const Principal& p,
                                                          const v1::CreateBookingRequest& r) {
  const Claim claim = ClaimOf(p, "CreateBooking", r.validate_only() ? "" : r.request_id(), r);
  PreparedCreate prepared;
  if (WritesWhilePreparing(r)) {
    // Authorization before the claim too (types.proto); PrepareCreate checks
    // it again where it always did.
    LS_RETURN_IF_ERROR(CreateScope(p, r));
    return Claimed<v1::Booking>(claim, [&]() -> absl::StatusOr<v1::Booking> {
      LS_ASSIGN_OR_RETURN(auto early, PrepareCreate(p, r, prepared));
      if (early) return *std::move(early);
      return FinishCreate(prepared, store_->Create(prepared.step));
    });
  }
  LS_ASSIGN_OR_RETURN(auto early, PrepareCreate(p, r, prepared));
  if (early) return *std::move(early);
  return Claimed<v1::Booking>(claim, [&] { return FinishCreate(prepared, store_->Create(prepared.step)); });
}

void BookingManager::CreateBookingAsync(const Principal& p, const v1::CreateBookingRequest& r,
                                        std::function<void(absl::StatusOr<v1::Booking>)> done) {
  // A chosen id, a lease or a run writes while preparing, synchronously as
  // before (the claim is taken the same way). Anything else is prepared
  // (read-only) from inventory's cache here. Either may wait on inventory,
  // which holds up every call on a gRPC callback thread: the former, and
  // the latter on a cache miss, run (again) on blocking_.
  const bool writes = WritesWhilePreparing(r) && !r.validate_only();
  if (writes && OnBlockingThread()) return done(CreateBooking(p, r));
  auto prepared = std::make_shared<PreparedCreate>();
  std::optional<absl::StatusOr<std::optional<v1::Booking>>> early;
  if (!writes && OnBlockingThread()) {
    early.emplace(PrepareCreate(p, r, *prepared));
  } else if (!writes) {
    InventoryClient::CacheOnly cached;
    absl::StatusOr<std::optional<v1::Booking>> answer = PrepareCreate(p, r, *prepared);
    if (!cached.missed()) early.emplace(std::move(answer));  // else: nothing was written
  }
  if (!early) {
    auto job = std::make_shared<std::tuple<Principal, v1::CreateBookingRequest,
                                           std::function<void(absl::StatusOr<v1::Booking>)>>>(p, r, std::move(done));
    absl::Status offloaded = Offload([this, job] {
      auto& [jp, jr, jdone] = *job;
      CreateBookingAsync(jp, jr, std::move(jdone));  // on blocking_: prepares (or creates) there
    });
    if (!offloaded.ok()) std::get<2>(*job)(offloaded);
    return;
  }
  if (!early->ok()) return done(early->status());
  if (**early) return done(***std::move(early));
  auto claim = std::make_shared<Claim>(ClaimOf(p, "CreateBooking", r.request_id(), r));
  auto step = [this, prepared, claim](bool made, std::function<void(absl::StatusOr<v1::Booking>)> done) {
    store_->CreateAsync(prepared->step, [this, prepared, claim, made, done = std::move(done)](
                                            absl::StatusOr<StepOutcome> outcome) {
      absl::StatusOr<v1::Booking> answer = FinishCreate(*prepared, std::move(outcome));
      if (!DropsClaim(*claim, made, answer.status())) return done(std::move(answer));
      // Answered once the claim is gone: the client may reuse the request_id at once.
      auto refused = std::make_shared<absl::StatusOr<v1::Booking>>(std::move(answer));
      store_->ReleaseRequestAsync(claim->key, claim->fingerprint,
                                  [refused, done = std::move(done)]() mutable { done(std::move(*refused)); });
    });
  };
  if (claim->key.empty()) return step(false, std::move(done));
  // One more command on the pipeline before the step (the claim's slot is
  // not the partition's: it cannot be part of the step's script).
  store_->ClaimRequestAsync(claim->key, claim->fingerprint,
                            [claim, step = std::move(step), done = std::move(done)](
                                absl::StatusOr<std::optional<std::string>> holder) mutable {
                              absl::Status held = holder.ok() ? HeldBy(*claim, *holder) : holder.status();
                              if (!held.ok()) return done(held);  // nothing was written on this path
                              step(!holder->has_value(), std::move(done));  // made by this call?
                            });
}

absl::Status BookingManager::CreateScope(const Principal& p, const v1::CreateBookingRequest& r) {
  const v1::Booking& in = r.booking();
  // Authorization before validation (and before the claim): a run is
  // ScheduleService's, booked by owner staff only, so any other role hears
  // ROLE_NOT_ALLOWED before its order is read or its fields are looked at;
  // whether staff are the order's instrument's is checked once it is read.
  if (in.mode() == labshare::type::v1::TECHNICAL_SERVICE) {
    LS_RETURN_IF_ERROR(BookingPolicy().Check(BookingMethod("ScheduleService"), p));
  }
  // Whom the caller books for: a caller whose scope does not depend on the
  // instrument (a LAB_USER for themselves, an administrator) is decided
  // without reading it, so a LAB_USER booking for someone else hears
  // USER_SCOPE whatever else the request holds; owner staff are decided on
  // the instrument, which is then named first (a run's is checked by
  // ScheduleService's own rules).
  if (in.mode() != labshare::type::v1::TECHNICAL_SERVICE || !in.instrument().empty()) {
    LS_RETURN_IF_ERROR(CheckScopeNamed("CreateBooking", p, *inventory_, in.instrument(), "booking.instrument",
                                       {in.user().empty() ? ActorName(p) : in.user(), {}, {}}));
  }
  // Then who pays, whatever the mode says (it is not validated yet; a run's
  // payer is its order's client): a caller who can never name another payer
  // (neither CONSORTIUM_ADMIN nor FACILITY_STAFF) hears ORGANIZATION_SCOPE
  // before any other fault of the request, as RequestLease and
  // CreateServiceOrder answer theirs. Besides the token's organisation, the
  // one inventory gives the caller is theirs too (PrepareCreate's rule).
  // Whether staff are the instrument's is decided once it is read.
  if (in.mode() != labshare::type::v1::TECHNICAL_SERVICE &&
      !CheckOwnOrganization(p, in.payer_organization(), "paying organisation").ok()) {
    LS_ASSIGN_OR_RETURN(auto self, inventory_->User(ActorName(p)));
    if (in.payer_organization() != self->organization()) return PayerScope();
  }
  // Then the request, the instrument's name first (in every mode but a run's).
  if (in.mode() != labshare::type::v1::TECHNICAL_SERVICE || !in.instrument().empty()) {
    LS_RETURN_IF_ERROR(ParseName(in.instrument(), "instruments", "booking.instrument").status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::Booking>> BookingManager::PrepareCreate(
    const Principal& p, const v1::CreateBookingRequest& r, PreparedCreate& out) {
  const v1::Booking& in = r.booking();
  LS_RETURN_IF_ERROR(CreateScope(p, r));
  if (in.mode() == labshare::type::v1::SHARING_MODE_UNSPECIFIED ||
      !labshare::type::v1::SharingMode_IsValid(in.mode())) {
    return InvalidField("booking.mode", "choose ON_SITE, LEASE, JOINT_RESEARCH or TECHNICAL_SERVICE");
  }
  if (in.mode() == labshare::type::v1::LEASE) {
    if (!r.has_lease_terms() || !in.project().empty() || !in.service_order().empty() || !in.operator_user().empty()) {
      return InvalidField("lease_terms", "a LEASE booking needs lease_terms and takes no project, service_order "
                          "or operator_user", "MODE_FIELDS_MISMATCH");
    }
    v1::Lease lease;
    lease.set_instrument(in.instrument());
    lease.set_lessee_organization(in.payer_organization());
    lease.set_contact_user(in.user());
    *lease.mutable_term() = in.reserved_interval();
    if (r.lease_terms().has_handover_buffer()) *lease.mutable_handover_buffer() = r.lease_terms().handover_buffer();
    if (r.lease_terms().has_return_buffer()) *lease.mutable_return_buffer() = r.lease_terms().return_buffer();
    lease.set_purpose(in.purpose());
    // The answer is the booking as created (or previewed), a retry's too.
    v1::Booking answer;
    LS_ASSIGN_OR_RETURN(v1::Lease created, RequestLeaseAs(p, "CreateBooking", r, lease, r.booking_id(),
                                                          r.request_id(), r.validate_only(), &answer));
    if (r.validate_only() || !answer.name().empty()) return answer;
    LS_ASSIGN_OR_RETURN(Loaded booking, Load(created.booking()));  // the record of an older version
    return std::move(booking.booking);
  }
  if (in.mode() == labshare::type::v1::TECHNICAL_SERVICE) {
    // The run of an order: exactly ScheduleService.
    if (in.service_order().empty() || !in.project().empty() || r.has_lease_terms()) {
      return InvalidField("booking.service_order", "a TECHNICAL_SERVICE booking names its service_order and takes "
                          "no project or lease_terms", "MODE_FIELDS_MISMATCH");
    }
    if (!in.instrument().empty()) {
      // The run is on the order's instrument: a request naming another one
      // is refused, not booked there (after the caller's authorization).
      LS_RETURN_IF_ERROR(AuthorizeOrder("ScheduleService", p, in.service_order(), "booking.service_order"));
      LS_ASSIGN_OR_RETURN(LoadedOrder order, LoadOrder(in.service_order(), "booking.service_order"));
      if (order.order.instrument() != in.instrument()) {
        return InvalidField("booking.instrument", absl::StrCat(in.service_order(), " is an order on ",
                                                               order.order.instrument(),
                                                               ": its run is booked there (name it, or leave "
                                                               "booking.instrument empty)"));
      }
    }
    v1::ScheduleServiceRequest schedule;
    schedule.set_name(in.service_order());
    *schedule.mutable_interval() = in.reserved_interval();
    schedule.set_operator_user(in.operator_user());
    schedule.set_booking_id(r.booking_id());
    schedule.set_request_id(r.request_id());
    v1::Booking run;
    LS_RETURN_IF_ERROR(ScheduleRun(p, schedule, "CreateBooking", r, r.validate_only(), &run).status());
    return run;
  }
  const bool joint = in.mode() == labshare::type::v1::JOINT_RESEARCH;
  if (r.has_lease_terms() || !in.service_order().empty() || !in.operator_user().empty() ||
      in.project().empty() == joint) {
    return InvalidField("booking", "ON_SITE bookings take no project, JOINT_RESEARCH bookings need one; "
                        "neither takes lease_terms, service_order or operator_user", "MODE_FIELDS_MISMATCH");
  }
  LS_ASSIGN_OR_RETURN(std::string instrument_id, ParseName(in.instrument(), "instruments", "booking.instrument"));
  const std::string user_name = in.user().empty() ? "users/" + p.user_id : in.user();
  LS_RETURN_IF_ERROR(ParseName(user_name, "users", "booking.user").status());

  // Shared, cached objects: nothing is parsed or copied on a warm cache.
  LS_ASSIGN_OR_RETURN(auto instrument_ptr, inventory_->Instrument(in.instrument()));
  const inv::Instrument& instrument = *instrument_ptr;
  const bool privileged = IsAdmin(p) || IsOwnerStaff(p, instrument);
  if (!privileged && user_name != "users/" + p.user_id) {
    return UserScope("you may book only for yourself");
  }
  // The scope of the payer, before validation (types.proto): CreateScope
  // refused a LAB_USER; here staff who are not the instrument's (also
  // LAB_USER, so admitted for themselves) hear so whatever else is wrong.
  if (!privileged && !in.payer_organization().empty() && in.payer_organization() != ActorOrganization(p)) {
    LS_ASSIGN_OR_RETURN(auto self, inventory_->User(user_name));
    if (in.payer_organization() != self->organization()) return PayerScope();
  }
  if (!r.booking_id().empty()) LS_RETURN_IF_ERROR(CheckChosenId("booking_id", r.booking_id()));
  LS_RETURN_IF_ERROR(ValidInterval(in.reserved_interval(), "booking.reserved_interval"));
  LS_ASSIGN_OR_RETURN(auto user_ptr, inventory_->User(user_name));
  const inv::User& user = *user_ptr;
  const std::string payer_name = in.payer_organization().empty() ? user.organization() : in.payer_organization();
  if (!privileged && payer_name != user.organization()) return PayerScope();
  LS_RETURN_IF_ERROR(ParseName(payer_name, "organizations", "booking.payer_organization").status());
  LS_ASSIGN_OR_RETURN(auto payer_ptr, inventory_->Organization(payer_name));
  const inv::Organization& payer = *payer_ptr;
  LS_ASSIGN_OR_RETURN(auto facility, inventory_->Facility(instrument.facility()));
  LS_ASSIGN_OR_RETURN(auto qualification, inventory_->Qualification(in.instrument(), user_name));
  LS_ASSIGN_OR_RETURN(auto rates, inventory_->Rates(in.instrument()));
  LS_ASSIGN_OR_RETURN(auto windows, inventory_->Windows(in.instrument()));
  labshare::inventory::AccessFacts facts;
  facts.user = &user;
  facts.payer = &payer;
  facts.instrument = &instrument;
  facts.facility = facility.get();
  facts.qualification = qualification.get();
  facts.rates.assign(rates->rates().begin(), rates->rates().end());
  facts.windows.assign(windows->maintenance_windows().begin(), windows->maintenance_windows().end());
  // A scheduled window over the buffer too (one the calendar may not hold
  // yet): SlotRules.buffer.
  facts.has_blocked = true;
  facts.blocked_start = FromProto(in.reserved_interval().start_time());
  facts.blocked_end =
      FromProto(in.reserved_interval().end_time()) + FromProto(SlotRulesOf(instrument, in.mode()).buffer());

  inv::CheckAccessRequest check;
  check.set_user(user_name);
  check.set_instrument(in.instrument());
  check.set_mode(in.mode());
  *check.mutable_interval() = in.reserved_interval();
  check.set_payer_organization(payer_name);
  const absl::Time now = clock_->Now();
  const inv::CheckAccessResponse access = EvaluateAccess(facts, check, now);
  absl::Status denial;
  if (!access.allowed()) {
    std::vector<std::string> codes;
    for (const auto& d : access.denials()) codes.push_back(inv::DenialCode_Name(d.code()));
    const auto& first = access.denials(0);
    // The first reason names the error; all of them are in the metadata.
    denial = MakeError(absl::StatusCode::kFailedPrecondition,
                       first.code() == inv::DURING_MAINTENANCE ? "MAINTENANCE_CONFLICT"
                                                               : inv::DenialCode_Name(first.code()),
                       first.message(), {{"denials", absl::StrJoin(codes, ",")}});
  }

  // The booking as it will be stored.
  const inv::SlotRules& rules = SlotRulesOf(instrument, in.mode());
  const absl::Time start = FromProto(in.reserved_interval().start_time());
  const absl::Time end = FromProto(in.reserved_interval().end_time());
  const int partition = keys::Partition(instrument_id);
  // Without a chosen id, a request id names the booking (a retry finds the
  // same document, which holds the request's record); else a random id.
  const bool derived_id = r.booking_id().empty() && !r.request_id().empty();
  const std::string booking_id = !r.booking_id().empty() ? r.booking_id()
                                 : derived_id ? DerivedBookingId(partition, "CreateBooking", r.request_id())
                                              : NewBookingId(partition);
  v1::Booking b;
  b.set_name("bookings/" + booking_id);
  b.set_instrument(in.instrument());
  b.set_instrument_owner(instrument.owner_organization());
  b.set_mode(in.mode());
  b.set_user(user_name);
  b.set_user_organization(user.organization());  // usage's user organisation of ON_SITE time
  b.set_payer_organization(payer_name);
  *b.mutable_reserved_interval() = in.reserved_interval();
  *b.mutable_blocked_interval()->mutable_start_time() = ToProto(start);
  *b.mutable_blocked_interval()->mutable_end_time() = ToProto(end + FromProto(rules.buffer()));
  b.set_payer_class(access.payer_class());
  b.set_payer_tier(access.payer_class() == labshare::type::v1::MEMBER ? payer.tier() : "");
  *b.mutable_billing_terms() = BillingTermsOf(rules);  // billing prices the booking with these
  b.set_purpose(in.purpose());
  int64_t project_version = 0;  // the project version checked (JOINT_RESEARCH)
  int64_t project_budget_ms = 0;  // its budget on the instrument, as that version says
  if (joint) {
    b.set_project(in.project());
    if (absl::Status project =
            CheckProject(b, instrument_id, &project_version, r.validate_only(), &project_budget_ms);
        !project.ok()) {
      // A retry of a request answered before gets its first answer, whatever
      // became of the project since.
      if (!r.request_id().empty() && !r.validate_only()) {
        const std::string fingerprint = RequestFingerprint("CreateBooking", r, ActorName(p));
        LS_ASSIGN_OR_RETURN(auto seen, derived_id ? store_->FindReplayInDocument(keys::Booking(partition, booking_id),
                                                                                 fingerprint)
                                                  : store_->FindReplay(keys::Idempotency(partition, "CreateBooking",
                                                                                         r.request_id()),
                                                                       fingerprint));
        if (seen) return ParseBooking(*seen);
      }
      return project;
    }
  }
  if (access.approval_required()) {
    b.set_state(v1::Booking::PENDING_APPROVAL);
    const absl::Duration threshold = FromProto(rules.approval_threshold());
    b.set_approval_reason(threshold > absl::ZeroDuration() && end - start > threshold
                              ? v1::Booking::LONG_RESIDENCY
                              : v1::Booking::MODE_RULE);
  } else {
    b.set_state(v1::Booking::CONFIRMED);
  }
  *b.mutable_create_time() = ToProto(now);
  *b.mutable_update_time() = ToProto(now);
  b.set_etag("1");
  const int64_t blocked_start = Ms(start);
  const int64_t blocked_end = CeilMs(FromProto(b.blocked_interval().end_time()));

  if (r.validate_only()) {
    // The checks of the create step, read rather than written, in the real
    // request's order: the id (reserved before the step), the access
    // denial, the slot, the project's budget, the quotas.
    if (!r.booking_id().empty()) {
      LS_ASSIGN_OR_RETURN(auto taken_id, store_->PartitionOf(booking_id));
      if (taken_id) return BookingExists(b.name());
    }
    if (!denial.ok()) return denial;
    LS_ASSIGN_OR_RETURN(auto taken, store_->CalendarRange(partition, instrument_id, blocked_start, blocked_end));
    // Named as the step names it: by the last entry in the way (FinishCreate).
    if (!taken.empty() && IsWindowEntry(taken.back().booking_id)) {
      return Precondition("MAINTENANCE_CONFLICT", "the slot overlaps a maintenance window");
    }
    if (!taken.empty()) return Precondition("SLOT_TAKEN", "the slot overlaps another booking");
    if (joint) {
      LS_ASSIGN_OR_RETURN(auto use, store_->GetBudget(IdOf(b.project()), instrument_id));
      // Counters behind the checked document are judged by the budget the
      // request would first bring them up to (CheckProject): the document's.
      const int64_t budget_ms = use.version < project_version ? project_budget_ms : use.budget_ms;
      if (Ms(end) - Ms(start) > budget_ms - use.used_ms - use.committed_ms) return OverBudget();
    }
    LS_RETURN_IF_ERROR(PreviewQuotas(b, instrument_id));
    b.clear_name();
    return b;
  }

  const std::string idem =
      r.request_id().empty() || derived_id ? "" : keys::Idempotency(partition, "CreateBooking", r.request_id());
  const std::string fingerprint = r.request_id().empty() ? "" : RequestFingerprint("CreateBooking", r, ActorName(p));
  bool reserved_id = false;
  if (!r.booking_id().empty()) {
    // A retry of the same request answers first; a taken id is an error.
    LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(idem, fingerprint));
    if (seen) return ParseBooking(*seen);
    LS_ASSIGN_OR_RETURN(reserved_id, store_->ReserveId(booking_id, partition));
    if (!reserved_id) return BookingExists(b.name());
  }

  CreateStep& step = out.step;
  step.partition = partition;
  step.instrument_id = instrument_id;
  step.booking_id = booking_id;
  step.idempotency_key = idem;
  step.fingerprint = fingerprint;
  step.blocked_start_ms = blocked_start;
  step.blocked_end_ms = blocked_end;
  step.reserved_start_ms = Ms(start);
  step.denied = !denial.ok();
  step.listing_keys = BookingListingKeys(partition, b, instrument.operator_organization());
  NameOperator(instrument, &step);
  if (joint) {
    CounterCharge budget;
    budget.key = keys::Budget(partition, IdOf(b.project()));
    budget.field = instrument_id;
    budget.ms = Ms(end) - Ms(start);
    // The step refuses when the project moved on from what was checked.
    budget.project_version = project_version;
    out.budget.push_back(std::move(budget));
  }
  out.event = Event(p, r.request_id(), now);  // its create_time
  out.booking = std::move(b);
  out.denial = denial;
  out.reserved_id = reserved_id;
  LS_RETURN_IF_ERROR(ChargeQuotas(out, *CachedQuotas(instrument_id, IdOf(payer_name)), false));
  if (joint && project_interleave_) project_interleave_("create:" + out.booking.name());
  return std::optional<v1::Booking>();
}

void BookingManager::SealCreate(PreparedCreate& out) const {
  const v1::Booking& b = out.booking;
  CreateStep& step = out.step;
  step.booking = SerializeDeterministic(b);
  step.busy_reason = BusyReasonOf(b);
  step.swept = true;  // MISSED without check-in, EXPIRED if still pending at its start
  // One event, BookingCreated, in whichever state the booking starts
  // (CONFIRMED included), carrying the stored document's bytes.
  out.event.mutable_header()->set_event_id(NewEventId());
  step.events = {EventBytesWithBooking(out.event, v1::BookingEvent::kBookingCreatedFieldNumber, step.booking)};
}

absl::StatusOr<v1::Booking> BookingManager::FinishCreate(PreparedCreate& prepared,
                                                         absl::StatusOr<StepOutcome> outcome) {
  // The quotas moved since they were cached, or a REQUIRE_APPROVAL quota
  // would be exceeded: charge again and rerun the step (synchronously; rare).
  for (int i = 0; i < kAttempts && outcome.ok(); ++i) {
    if (outcome->kind == StepOutcome::Kind::kGuardMoved) {
      auto group = LoadQuotas(prepared.step.instrument_id, IdOf(prepared.booking.payer_organization()));
      if (!group.ok()) {
        outcome = group.status();
        break;
      }
      if (auto charged = ChargeQuotas(prepared, **group, false); !charged.ok()) {
        outcome = charged;
        break;
      }
    } else if (outcome->kind == StepOutcome::Kind::kNeedsApproval) {
      auto group = CachedQuotas(prepared.step.instrument_id, IdOf(prepared.booking.payer_organization()));
      if (auto charged = ChargeQuotas(prepared, *group, true); !charged.ok()) {
        outcome = charged;
        break;
      }
    } else {
      break;
    }
    outcome = store_->Create(prepared.step);
  }
  const v1::Booking& b = prepared.booking;
  if (prepared.reserved_id && (!outcome.ok() || outcome->kind != StepOutcome::Kind::kApplied)) {
    store_->ReleaseId(prepared.step.booking_id).IgnoreError();  // best effort: the id was never used
  }
  LS_RETURN_IF_ERROR(outcome.status());
  switch (outcome->kind) {
    case StepOutcome::Kind::kApplied: return std::move(prepared.booking);  // nothing reads it after
    case StepOutcome::Kind::kReplayed: return ParseBooking(outcome->response);
    case StepOutcome::Kind::kRequestReused: return RequestIdReused();
    case StepOutcome::Kind::kDenied: return prepared.denial;
    case StepOutcome::Kind::kExists: return BookingExists(b.name());
    case StepOutcome::Kind::kSlotTaken:
      if (IsWindowEntry(outcome->conflicting)) {
        return Precondition("MAINTENANCE_CONFLICT", "the slot overlaps a maintenance window");
      }
      return Precondition("SLOT_TAKEN",
                          "the slot overlaps another booking of this instrument (buffers included); "
                          "QueryAvailability lists free time");
    case StepOutcome::Kind::kOverBudget: return OverBudget();
    case StepOutcome::Kind::kOverQuota:
      return Precondition("QUOTA_EXCEEDED",
                          absl::StrCat(b.payer_organization(), " has not enough hours left in its quota on ",
                                       b.instrument(), " for this period; GetQuotaUsage shows what remains"));
    case StepOutcome::Kind::kOperatorMoved: return OperatorMoved(b.instrument());
    case StepOutcome::Kind::kProjectMoved:
      return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                       b.project() + " changed while booking (or is being updated); retry with the same "
                       "request_id: the booking is checked against the project as it is then");
    case StepOutcome::Kind::kGuardMoved:
    case StepOutcome::Kind::kNeedsApproval:
      return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                       "the quotas changed while booking; retry with the same request_id");
    case StepOutcome::Kind::kConflict:
    case StepOutcome::Kind::kWindowWithdrawn: break;
  }
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage outcome");
}

absl::Status BookingManager::CheckProject(v1::Booking& b, const std::string& instrument_id, int64_t* checked,
                                          bool preview, int64_t* budget_ms) {
  // Twice at most: the second time after lifting the lapsed fence of an
  // UpdateProject that died, against the document as it is now.
  for (int attempt = 1;; ++attempt) {
    int64_t version = 0;
    LS_ASSIGN_OR_RETURN(v1::Project project, LoadProject(b.project(), &version, "booking.project"));
    // Participation first: a payer outside the project learns nothing more
    // about it (neither its instruments, its state nor its period). Then the
    // instrument's budget, the project's state and its period.
    bool participant = false;
    for (const auto& part : project.participants()) participant |= part.organization() == b.payer_organization();
    if (!participant) {
      return Precondition("NOT_PROJECT_PARTICIPANT", b.payer_organization() + " is not a participant of " + b.project());
    }
    bool budgeted = false;
    for (const auto& budget : project.instrument_budgets()) {
      if (budget.instrument() != "instruments/" + instrument_id) continue;
      budgeted = true;
      // As SetProjectBudgets writes it.
      *budget_ms = absl::ToInt64Milliseconds(FromProto(budget.budget()));
    }
    if (!budgeted) {
      return Precondition("INSTRUMENT_NOT_IN_PROJECT", b.project() + " has no budget on " + b.instrument());
    }
    const absl::Time start = FromProto(b.reserved_interval().start_time());
    const absl::Time end = FromProto(b.reserved_interval().end_time());
    if (ProjectState(project) == v1::Project::ENDED) {
      return Precondition("PROJECT_NOT_ACTIVE", b.project() + " has ended");
    }
    if (start < FromProto(project.period().start_time()) || end > FromProto(project.period().end_time())) {
      return Precondition("OUTSIDE_PROJECT_PERIOD", "the booking must lie inside the project's period");
    }
    const std::string project_id = IdOf(b.project());
    LS_ASSIGN_OR_RETURN(auto use, store_->GetBudget(project_id, instrument_id));
    if (use.fence != 0) {
      // An UpdateProject is checking or committing: the booking waits for
      // it (the create step would refuse anyway). One whose fence lapsed
      // died: the counters follow the document as it is once the fence is
      // seen lapsed (read again), and the fence goes. A preview
      // (validate_only) writes nothing: it checks against the document.
      LS_ASSIGN_OR_RETURN(bool lapsed, store_->FenceLapsed(project_id, instrument_id, use.fence));
      if (!lapsed || attempt > 1) {
        return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                         b.project() + " is being updated; retry with the same request_id");
      }
      if (!preview) {
        int64_t now_version = 0;
        LS_ASSIGN_OR_RETURN(v1::Project now, LoadProject(b.project(), &now_version, "booking.project"));
        LS_RETURN_IF_ERROR(LiftProjectFences(project_id, {instrument_id}, use.fence, now, now_version));
        continue;
      }
    }
    // Counters behind the document (an UpdateProject whose process died
    // between its commit and the counter write, never retried) follow it
    // now, before the booking's step checks the budget; the version guard
    // makes a repetition, or a race with a newer update, harmless. Not in
    // a preview, which writes nothing.
    if (use.version < version && !preview) LS_RETURN_IF_ERROR(SetProjectBudgets(project, {}, version));
    for (const auto& part : project.participants()) {
      auto* share = b.add_cost_shares();
      share->set_organization(part.organization());
      share->set_share_bps(part.share_bps());
    }
    *checked = version;
    return absl::OkStatus();
  }
}

// ================================================================ reads

absl::StatusOr<BookingManager::Loaded> BookingManager::Load(const std::string& name) {
  LS_ASSIGN_OR_RETURN(auto stored, LoadStored<v1::Booking>(name, "bookings", keys::Booking, "BOOKING_NOT_FOUND"));
  return Loaded{std::move(stored.doc), stored.version, stored.partition};
}

absl::Status BookingManager::AuthorizeBooking(const char* method, const Principal& p, const std::string& name,
                                              bool lease_methods_first) {
  // A caller of any scope meets USE_LEASE_METHODS first in the method's
  // step, which reads the booking before anything else.
  if (BookingPolicy().ScopesOf(BookingMethod(method), p) & kScopeAny) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(Loaded cur, Load(name));
  if (lease_methods_first) LS_RETURN_IF_ERROR(NotForLeases(cur.booking));
  return CheckScopeOn(method, p, *inventory_, cur.booking.instrument(), BookingFacts(cur.booking));
}

absl::StatusOr<v1::Booking> BookingManager::GetBooking(const Principal& p,
                                                       const v1::GetBookingRequest& r) {
  LS_ASSIGN_OR_RETURN(Loaded cur, Load(r.name()));
  LS_RETURN_IF_ERROR(CheckScopeOn("GetBooking", p, *inventory_, cur.booking.instrument(), BookingFacts(cur.booking)));
  return std::move(cur.booking);
}

void BookingManager::GetBookingAsync(const Principal& p, const v1::GetBookingRequest& r,
                                     std::function<void(absl::StatusOr<v1::Booking>)> done) {
  // Load() and the scope check of GetBooking, on the pipeline.
  auto id = ParseName(r.name(), "bookings", "name");
  if (!id.ok()) return done(id.status());
  auto shared = std::make_shared<std::function<void(absl::StatusOr<v1::Booking>)>>(std::move(done));
  store_->PartitionOfAsync(*id, [this, p, name = r.name(), id = *id, shared](absl::StatusOr<std::optional<int>> partition) {
    auto& done = *shared;
    if (!partition.ok()) return done(partition.status());
    if (!*partition) return done(MakeError(absl::StatusCode::kNotFound, "BOOKING_NOT_FOUND", name + " does not exist"));
    store_->GetDocAsync(keys::Booking(**partition, id), [this, p, name, shared](absl::StatusOr<std::optional<StoredDoc>> doc) {
      auto& done = *shared;
      if (!doc.ok()) return done(doc.status());
      if (!*doc) return done(MakeError(absl::StatusCode::kNotFound, "BOOKING_NOT_FOUND", name + " does not exist"));
      auto booking = ParseAnswer<v1::Booking>((*doc)->data);
      if (!booking.ok()) return done(booking.status());
      // An owner-scoped caller's check may ask inventory: not on this
      // (pipeline) thread.
      const bool blocks = ScopeNeedsInventory("GetBooking", p, BookingFacts(*booking));
      auto check = [this, p, shared, b = *std::move(booking)]() {
        absl::Status scope = CheckScopeOn("GetBooking", p, *inventory_, b.instrument(), BookingFacts(b));
        if (!scope.ok()) return (*shared)(scope);
        (*shared)(b);
      };
      if (!blocks) return check();
      absl::Status offloaded = Offload(std::move(check));
      if (!offloaded.ok()) done(offloaded);
    });
  });
}

absl::StatusOr<std::shared_ptr<BookingManager::BookingsListing>> BookingManager::PlanListBookings(
    const Principal& p, const v1::ListBookingsRequest& r) {
  auto plan = std::make_shared<BookingsListing>();
  LS_RETURN_IF_ERROR(CheckPageSize(r.page_size()));
  // The caller's scope (booking_lists.h); a filter outside it fails first.
  const ListScope scope = ScopeOf(p);
  if (!r.user().empty() && r.user() != scope.self && !scope.all && !scope.billing && !scope.staff) {
    return UserScope("you may list only your own bookings");
  }
  if (!r.payer_organization().empty() && r.payer_organization() != scope.org && !scope.all && !scope.staff) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "you may list only bookings your own organisation pays for");
  }
  auto id_of = [](const std::string& name, absl::string_view collection,
                  const std::string& field) -> absl::StatusOr<std::string> {
    if (name.empty()) return std::string();
    return ParseName(name, collection, field);
  };
  LS_ASSIGN_OR_RETURN(std::string instrument_id, id_of(r.instrument(), "instruments", "instrument"));
  LS_ASSIGN_OR_RETURN(std::string user_id, id_of(r.user(), "users", "user"));
  LS_ASSIGN_OR_RETURN(std::string payer_id, id_of(r.payer_organization(), "organizations", "payer_organization"));
  LS_ASSIGN_OR_RETURN(std::string owner_id, id_of(r.instrument_owner(), "organizations", "instrument_owner"));
  LS_RETURN_IF_ERROR(id_of(r.project(), "projects", "project").status());
  LS_ASSIGN_OR_RETURN(std::string order_id, id_of(r.service_order(), "serviceOrders", "service_order"));
  LS_ASSIGN_OR_RETURN(std::string lease_id, id_of(r.lease(), "leases", "lease"));
  if (!labshare::type::v1::SharingMode_IsValid(r.mode())) return InvalidField("mode", "not a sharing mode");
  for (int i = 0; i < r.states_size(); ++i) {  // an entry is named by its index
    const int s = r.states(i);
    if (s == 0 || !v1::Booking::State_IsValid(s)) return InvalidField(absl::StrCat("states[", i, "]"), "not a booking state");
  }
  LS_ASSIGN_OR_RETURN(bool descending, ParseOrderBy(r.order_by(), "start_time", false));
  if (r.has_time_range()) LS_RETURN_IF_ERROR(ValidInterval(r.time_range(), "time_range"));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));

  ListQuery& q = plan->q;
  q.descending = descending;
  q.doc_key = keys::Booking;
  q.page_size = page.page_size;
  q.after = page.after;
  if (r.has_time_range()) {
    q.lo_ms = Ms(FromProto(r.time_range().start_time()));
    q.hi_ms = Ms(FromProto(r.time_range().end_time())) + 1;  // whole milliseconds; exact below
    q.widen_by_span = true;
  }
  // Every index that holds all possible answers is a candidate.
  if (!instrument_id.empty()) {
    const int part = keys::Partition(instrument_id);
    q.candidates.push_back({{part, keys::ByInstrument(part, instrument_id), false}});
  }
  // A lease's booking and an order's runs are on the lease's or order's
  // instrument: read its index (an unknown lease or order lists nothing).
  auto on_instrument_of = [&](auto doc_proto, const std::string& id,
                              std::string (*doc_key)(int, absl::string_view)) -> absl::StatusOr<bool> {
    LS_ASSIGN_OR_RETURN(auto part, store_->PartitionOf(id));
    if (!part) return false;
    LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(doc_key(*part, id)));
    if (!doc || !doc_proto.ParseFromString(doc->data)) return false;
    q.candidates.push_back({{*part, keys::ByInstrument(*part, IdOf(doc_proto.instrument())), false}});
    return true;
  };
  if (!lease_id.empty()) {
    LS_ASSIGN_OR_RETURN(bool found, on_instrument_of(v1::Lease(), lease_id, keys::Lease));
    if (!found) return plan->nothing = true, plan;
  }
  if (!order_id.empty()) {
    LS_ASSIGN_OR_RETURN(bool found, on_instrument_of(v1::ServiceOrder(), order_id, keys::Order));
    if (!found) return plan->nothing = true, plan;
  }
  if (!user_id.empty()) q.candidates.push_back(EveryPartition('b', "user", user_id));
  if (!payer_id.empty()) q.candidates.push_back(EveryPartition('b', "org", payer_id));
  if (!owner_id.empty()) q.candidates.push_back(EveryPartition('b', "org", owner_id));
  if (scope.all) {
    q.candidates.push_back(EveryPartition('b', "", ""));
  } else {
    std::vector<ListingSource> mine;
    if (scope.lab_user) mine = EveryPartition('b', "user", p.user_id);
    if ((scope.billing || scope.staff) && !scope.org.empty()) {
      auto org = EveryPartition('b', "org", IdOf(scope.org));
      mine.insert(mine.end(), org.begin(), org.end());
    }
    q.candidates.push_back(std::move(mine));
  }
  plan->r = r;
  plan->p = p;
  plan->scope = scope;
  plan->operates = std::make_unique<OwnsOrOperates>(inventory_, scope.org);
  plan->range_start = r.has_time_range() ? FromProto(r.time_range().start_time()) : absl::InfinitePast();
  plan->range_end = r.has_time_range() ? FromProto(r.time_range().end_time()) : absl::InfiniteFuture();
  return plan;
}

absl::StatusOr<bool> BookingManager::TakeBooking(BookingsListing& l, std::string& data) {
  auto corrupt = [] {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored booking is unreadable");
  };
  if (l.raw) {
    // The stored bytes as they are: the filter reads its fields off the
    // wire, and a wanted booking is appended as one more `bookings` element
    // (field 1, length-delimited): on the wire the same as parsing it onto
    // the page and serializing it again.
    ListedBooking b;
    if (!ListedFromBytes(data, &b)) return corrupt();
    LS_ASSIGN_OR_RETURN(bool wanted, Wanted(l, b));
    if (wanted) {
      auto* page = l.Out().GetReflection()->MutableUnknownFields(&l.Out());
      *page->AddLengthDelimited(v1::ListBookingsResponse::kBookingsFieldNumber) = std::move(data);
    }
    return wanted;
  }
  // Parsed in place, on the page (the call's arena): taken back unless it
  // belongs there.
  auto* page = l.Out().mutable_bookings();
  v1::Booking& b = *page->Add();
  absl::StatusOr<bool> wanted = [&]() -> absl::StatusOr<bool> {
    if (!b.ParseFromString(data)) return corrupt();
    return Wanted(l, ListedOf(b));
  }();
  if (!wanted.ok() || !*wanted) page->RemoveLast();
  return wanted;
}

absl::StatusOr<bool> BookingManager::Wanted(BookingsListing& l, const ListedBooking& b) {
  const v1::ListBookingsRequest& r = l.r;
  const ListScope& scope = l.scope;
  auto pays = [](const ListedBooking& b, const std::string& org) {
    return b.payer_organization == org ||
           std::any_of(b.cost_share_orgs.begin(), b.cost_share_orgs.end(),
                       [&](absl::string_view s) { return s == org; });
  };
  OwnsOrOperates& operates = *l.operates;
  auto in_scope = [&](const ListedBooking& b) -> absl::StatusOr<bool> {
    if (scope.all || (scope.lab_user && b.user == scope.self)) return true;
    if ((scope.billing || scope.staff) && !scope.org.empty() && pays(b, scope.org)) return true;
    if (scope.staff && (b.instrument_owner == scope.org && !scope.org.empty())) return true;
    if (scope.staff) return operates(std::string(b.instrument));
    return false;
  };
  const absl::Time range_start = l.range_start, range_end = l.range_end;
  if (!r.instrument().empty() && b.instrument != r.instrument()) return false;
  if (!r.user().empty() && b.user != r.user()) return false;
  if (!r.payer_organization().empty() && !pays(b, r.payer_organization())) return false;
  if (!r.instrument_owner().empty() && b.instrument_owner != r.instrument_owner()) return false;
  if (r.mode() != 0 && b.mode != r.mode()) return false;
  if (!r.states().empty() && std::find(r.states().begin(), r.states().end(), b.state) == r.states().end()) {
    return false;
  }
  // A half-open empty interval [s, s) overlaps no range.
  if (r.has_time_range() && !(b.start < range_end && range_start < b.end && b.start < b.end)) return false;
  if (!r.project().empty() && b.project != r.project()) return false;
  if (!r.service_order().empty() && b.service_order != r.service_order()) return false;
  if (!r.lease().empty() && b.lease != r.lease()) return false;
  return in_scope(b);
}

absl::StatusOr<v1::ListBookingsResponse> BookingManager::ListBookings(const Principal& p,
                                                                     const v1::ListBookingsRequest& r) {
  LS_ASSIGN_OR_RETURN(std::shared_ptr<BookingsListing> plan, PlanListBookings(p, r));
  if (plan->nothing) return std::move(plan->resp);
  LS_ASSIGN_OR_RETURN(std::string next,
                      RunListing(*store_, plan->q, [&](std::string& data) { return TakeBooking(*plan, data); }));
  if (!next.empty()) plan->resp.set_next_page_token(page_tokens_.Make(r, p, next));
  return std::move(plan->resp);
}

namespace {
thread_local bool t_on_blocking = false;  // this thread is one of a blocking_'s
}  // namespace

bool BookingManager::OnBlockingThread() { return t_on_blocking; }

absl::Status BookingManager::Offload(std::function<void()> work) {
  if (blocking_->Submit([work = std::move(work)] {
        t_on_blocking = true;
        work();
      })) {
    return absl::OkStatus();
  }
  return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                   "too many requests wait for the inventory service; try again");
}

void BookingManager::ListBookingsAsync(const Principal& p, const v1::ListBookingsRequest& r,
                                       v1::ListBookingsResponse* out, std::function<void(absl::Status)> done) {
  // A lease or order filter reads its document synchronously: the plan then
  // runs on blocking_, not on this (gRPC callback) thread.
  if (!r.lease().empty() || !r.service_order().empty()) {
    auto shared = std::make_shared<std::function<void(absl::Status)>>(std::move(done));
    absl::Status offloaded = Offload([this, p, r, out, shared] { ListBookingsPlanned(p, r, out, std::move(*shared)); });
    if (!offloaded.ok()) (*shared)(offloaded);
    return;
  }
  ListBookingsPlanned(p, r, out, std::move(done));
}

void BookingManager::ListBookingsPlanned(const Principal& p, const v1::ListBookingsRequest& r,
                                         v1::ListBookingsResponse* out, std::function<void(absl::Status)> done) {
  // The checks and the choice of index here; the pages and documents on the
  // pipeline.
  auto plan = PlanListBookings(p, r);
  if (!plan.ok()) return done(plan.status());
  std::shared_ptr<BookingsListing> l = *std::move(plan);
  if (l->nothing) return done(absl::OkStatus());
  l->out = out;
  l->raw = true;
  ListQuery q = l->q;
  // A staff caller's scope may ask inventory who operates an instrument
  // (OwnsOrOperates): each page's documents are then taken on blocking_.
  if (l->scope.staff && !l->scope.all) q.offload = [this](std::function<void()> work) { return Offload(std::move(work)); };
  RunListingAsync(*store_, std::move(q), [this, l](std::string& data) { return TakeBooking(*l, data); },
                  [this, l, done = std::move(done)](absl::StatusOr<std::string> next) {
                    if (!next.ok()) return done(next.status());
                    if (!next->empty()) {
                      // Raw too, after the bookings: the field order
                      // serialization gives.
                      l->Out().GetReflection()->MutableUnknownFields(&l->Out())->AddLengthDelimited(
                          v1::ListBookingsResponse::kNextPageTokenFieldNumber, page_tokens_.Make(l->r, l->p, *next));
                    }
                    done(absl::OkStatus());
                  });
}

absl::StatusOr<int64_t> BookingManager::MigrateListings() {
  return labshare::booking::MigrateListings(*store_, [this](const std::string& instrument) -> absl::StatusOr<std::string> {
    auto in = inventory_->Instrument(instrument);
    if (!in.ok() && in.status().code() == absl::StatusCode::kNotFound) return std::string();
    LS_RETURN_IF_ERROR(in.status());
    return (*in)->operator_organization();
  });
}

void BookingManager::NameOperator(const inv::Instrument& instrument, CreateStep* step) {
  step->operator_org = instrument.operator_organization();
  int64_t etag = 0;
  step->operator_etag = absl::SimpleAtoi(instrument.etag(), &etag) && etag > 0 ? etag : 0;
}

absl::Status BookingManager::OperatorMoved(const std::string& instrument) {
  inv::InventoryEvent changed;
  changed.mutable_instrument_changed()->mutable_instrument()->set_name(instrument);
  inventory_->Invalidate(changed);
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the instrument's operator changed meanwhile; retry with the same request_id");
}

absl::Status BookingManager::FollowInstrumentOperator(const inv::Instrument& instrument,
                                                     const RefileOptions& options) {
  int64_t etag = 0;
  const std::string id = IdOf(instrument.name());
  if (id.empty() || !absl::SimpleAtoi(instrument.etag(), &etag)) {
    LogWarning("inventory event: instrument without a numeric etag; listings not re-filed",
               {{"instrument", instrument.name()}, {"etag", instrument.etag()}});
    return absl::OkStatus();
  }
  return RefileOperator(*store_, id, etag, instrument.operator_organization(), options).status();
}

absl::StatusOr<int64_t> BookingManager::RefileStaleOperators(const RefileOptions& options) {
  return labshare::booking::RefileStaleOperators(
      *store_,
      [this](const std::string& id) -> absl::StatusOr<std::optional<CurrentOperator>> {
        auto in = inventory_->Instrument("instruments/" + id);
        if (!in.ok() && in.status().code() == absl::StatusCode::kNotFound) return std::optional<CurrentOperator>();
        LS_RETURN_IF_ERROR(in.status());
        CurrentOperator now{(*in)->operator_organization(), 0};
        if (!absl::SimpleAtoi((*in)->etag(), &now.etag)) return std::optional<CurrentOperator>();
        return std::optional<CurrentOperator>(std::move(now));
      },
      options);
}

// ================================================================ transitions

absl::StatusOr<v1::Booking> BookingManager::Transition(
    const Principal& p, absl::string_view method, const google::protobuf::Message& request,
    const std::string& name, const std::string& request_id,
    const std::function<absl::StatusOr<Change>(const Loaded&, absl::Time now)>& decide) {
  LS_ASSIGN_OR_RETURN(Loaded cur, Load(name));
  const std::string idem = request_id.empty() ? "" : keys::Idempotency(cur.partition, method, request_id);
  const std::string fingerprint = RequestFingerprint(method, request, ActorName(p));
  return Claimed<v1::Booking>(ClaimOf(p, method, request_id, request), [&] { return ReplayOrRetry<v1::Booking>(
      idem, fingerprint, "booking",
      [&](int attempt) -> absl::StatusOr<std::optional<v1::Booking>> {
        if (attempt > 0) {
          LS_ASSIGN_OR_RETURN(cur, Load(name));
        }
        // One clock reading per attempt: update_time, what the change
        // stamps and the events' event_time.
        const absl::Time now = clock_->Now();
        LS_ASSIGN_OR_RETURN(Change c, decide(cur, now));
        *c.booking.mutable_update_time() = ToProto(now);
        c.booking.set_etag(std::to_string(cur.version + 1));
        UpdateStep step;
        step.partition = cur.partition;
        step.instrument_id = IdOf(cur.booking.instrument());
        step.booking_id = IdOf(name);
        step.idempotency_key = idem;
        step.fingerprint = fingerprint;
        step.booking = SerializeDeterministic(c.booking);
        step.busy_reason = BusyReasonOf(c.booking);
        step.expected_version = cur.version;
        step.calendar = c.calendar;
        step.blocked_start_ms = Ms(FromProto(cur.booking.blocked_interval().start_time()));
        step.new_end_ms = c.new_end_ms;
        step.guard_from_ms = c.guard_from_ms;
        step.guard_to_ms = c.guard_to_ms;
        step.window_guard = c.window_guard;
        step.due = c.due;
        const v1::Booking& before = cur.booking;
        if (c.release_budget) {
          if (!before.project().empty()) {
            CounterMove budget;
            budget.key = keys::Budget(cur.partition, IdOf(before.project()));
            budget.field = IdOf(before.instrument());
            budget.committed_delta_ms = -(Ms(FromProto(before.reserved_interval().end_time())) -
                                          Ms(FromProto(before.reserved_interval().start_time())));
            budget.used_delta_ms = absl::ToInt64Milliseconds(c.used);
            step.counters.push_back(std::move(budget));
          }
          for (auto& m : QuotaMoves(before, c.booking.state())) step.counters.push_back(std::move(m));
        }
        for (auto& e : c.events) {
          AttachSnapshot(e, request_id, c.booking);
          step.events.push_back(e.SerializeAsString());
        }
        LS_ASSIGN_OR_RETURN(StepOutcome outcome, store_->Update(step));
        if (outcome.kind == StepOutcome::Kind::kWindowWithdrawn) return WindowWithdrawn();
        return Settle(outcome, std::move(c.booking));
      }); });
}

absl::StatusOr<v1::Booking> BookingManager::CancelBooking(const Principal& p,
                                                          const v1::CancelBookingRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeBooking("CancelBooking", p, r.name(), /*lease_methods_first=*/true));
  {
    // A technical-service run is unscheduled with its order (booking_orders.cc).
    LS_ASSIGN_OR_RETURN(Loaded run, Load(r.name()));
    if (run.booking.mode() == labshare::type::v1::TECHNICAL_SERVICE && !run.booking.service_order().empty()) {
      return Claimed<v1::Booking>(ClaimOf(p, "CancelBooking", r.request_id(), r),
                                  [&] { return CancelRun(p, r, run.booking); });
    }
  }
  return Transition(p, "CancelBooking", r, r.name(), r.request_id(),
                    [&](const Loaded& cur, absl::Time now) -> absl::StatusOr<Change> {
    const v1::Booking& b = cur.booking;
    LS_RETURN_IF_ERROR(NotForLeases(b));
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(b.instrument()));
    const bool staff = IsOwnerStaff(p, instrument);
    if (b.state() != v1::Booking::PENDING_APPROVAL && b.state() != v1::Booking::CONFIRMED) {
      return WrongState(b, "PENDING_APPROVAL or CONFIRMED");
    }
    // The sweep's bookings are MISSED (EXPIRED) from the moment CheckIn's
    // window closes (the reserved start comes), whenever the sweep runs:
    // from then on nothing is left to cancel.
    if ((b.mode() == labshare::type::v1::ON_SITE || b.mode() == labshare::type::v1::JOINT_RESEARCH) &&
        now >= DueTime(b, instrument)) {
      const bool pending = b.state() == v1::Booking::PENDING_APPROVAL;
      // A confirmed one on an instrument out of service as check-in closed
      // is cancelled by the sweep as an outage instead (Booking.CANCELLED),
      // not MISSED.
      bool outage = false;
      if (!pending) {
        LS_ASSIGN_OR_RETURN(outage, OutOfServiceAtClose(instrument, DueTime(b, instrument)));
      }
      return MakeError(absl::StatusCode::kFailedPrecondition, "BOOKING_STATE",
                       absl::StrCat(b.name(), pending   ? " reached its reserved start still pending: it is EXPIRED"
                                              : outage ? "'s check-in window has closed while the instrument is out "
                                                         "of service: it is cancelled as an outage, without charge"
                                                       : "'s check-in window has closed: it is MISSED"),
                       {{"state", pending ? "EXPIRED" : outage ? "CANCELLED" : "MISSED"}});
    }
    Change c;
    c.booking = b;
    auto initiator = IsAdmin(p) ? v1::Booking::PLATFORM_ADMIN
                                : staff ? v1::Booking::OWNER_STAFF : v1::Booking::BOOKER;
    const absl::Duration notice = FromProto(SlotRulesOf(instrument, b.mode()).late_cancel_notice());
    // Never late while the instrument is out of service (MAINTENANCE or
    // RETIRED: nobody could use the slot).
    const bool late = initiator == v1::Booking::BOOKER && b.state() == v1::Booking::CONFIRMED &&
                      instrument.state() == inv::ACTIVE && now > FromProto(b.reserved_interval().start_time()) - notice;
    c.booking.set_state(v1::Booking::CANCELLED);
    c.booking.set_late_cancellation(late);
    auto* cancel = c.booking.mutable_cancellation();
    *cancel->mutable_cancel_time() = ToProto(now);
    cancel->set_cancelled_by(ActorName(p));
    cancel->set_initiator(initiator);
    cancel->set_reason(r.reason());
    c.calendar = UpdateStep::Calendar::kRemove;
    c.due = UpdateStep::Due::kRemove;
    c.release_budget = true;
    v1::BookingEvent e = Event(p, r.request_id(), now);
    auto* ev = e.mutable_booking_cancelled();
    ev->set_previous_state(b.state());
    ev->set_late_cancellation(late);
    ev->set_initiator(initiator);
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<inv::Instrument> BookingManager::CheckDecision(const Principal& p, const Loaded& cur,
                                                              const std::string& etag) {
  const v1::Booking& b = cur.booking;
  LS_RETURN_IF_ERROR(NotForLeases(b));
  LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(b.instrument()));
  if (!IsAdmin(p) && !IsOwnerStaff(p, instrument)) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "only the owner's staff or an administrator decide on bookings");
  }
  if (!etag.empty() && etag != std::to_string(cur.version)) {
    return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", "the booking changed; read it again");
  }
  if (b.state() != v1::Booking::PENDING_APPROVAL) return WrongState(b, "PENDING_APPROVAL");
  return instrument;
}

absl::StatusOr<v1::Booking> BookingManager::ApproveBooking(const Principal& p,
                                                           const v1::ApproveBookingRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeBooking("ApproveBooking", p, r.name()));
  return Transition(p, "ApproveBooking", r, r.name(), r.request_id(),
                    [&](const Loaded& cur, absl::Time now) -> absl::StatusOr<Change> {
    const v1::Booking& b = cur.booking;
    LS_RETURN_IF_ERROR(CheckDecision(p, cur, r.etag()).status());  // who may decide, and on what
    if (now >= FromProto(b.reserved_interval().start_time())) {
      return Precondition("BOOKING_STARTED", "the reserved start has come; it can no longer be approved");
    }
    Change c;
    c.booking = b;
    c.booking.set_state(v1::Booking::CONFIRMED);
    *c.booking.mutable_decision()->mutable_decide_time() = ToProto(now);
    c.booking.mutable_decision()->set_decided_by(ActorName(p));
    c.booking.mutable_decision()->set_note(r.note());
    v1::BookingEvent approved = Event(p, r.request_id(), now);
    approved.mutable_booking_approved();
    v1::BookingEvent confirmed = Event(p, r.request_id(), now);
    confirmed.mutable_booking_confirmed();
    confirmed.mutable_booking_confirmed()->set_via_approval(true);
    c.events = {std::move(approved), std::move(confirmed)};
    return c;
  });
}

absl::StatusOr<v1::Booking> BookingManager::RejectBooking(const Principal& p,
                                                          const v1::RejectBookingRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeBooking("RejectBooking", p, r.name()));
  if (r.reason().empty()) return InvalidField("reason", "say why; the user sees it");
  return Transition(p, "RejectBooking", r, r.name(), r.request_id(),
                    [&](const Loaded& cur, absl::Time now) -> absl::StatusOr<Change> {
    const v1::Booking& b = cur.booking;
    LS_RETURN_IF_ERROR(CheckDecision(p, cur, r.etag()).status());
    // As ApproveBooking: from the reserved start the booking is EXPIRED
    // (the sweep sets it), not REJECTED.
    if (now >= FromProto(b.reserved_interval().start_time())) {
      return Precondition("BOOKING_STARTED", "the reserved start has come; it can no longer be rejected");
    }
    Change c;
    c.booking = b;
    c.booking.set_state(v1::Booking::REJECTED);
    *c.booking.mutable_decision()->mutable_decide_time() = ToProto(now);
    c.booking.mutable_decision()->set_decided_by(ActorName(p));
    c.booking.mutable_decision()->set_note(r.reason());
    c.calendar = UpdateStep::Calendar::kRemove;
    c.due = UpdateStep::Due::kRemove;
    c.release_budget = true;
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_booking_rejected();
    e.mutable_booking_rejected()->set_reason(r.reason());
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<v1::Booking> BookingManager::CheckIn(const Principal& p, const v1::CheckInRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeBooking("CheckIn", p, r.name(), /*lease_methods_first=*/true));
  return Transition(p, "CheckIn", r, r.name(), r.request_id(),
                    [&](const Loaded& cur, absl::Time now) -> absl::StatusOr<Change> {
    const v1::Booking& b = cur.booking;
    LS_RETURN_IF_ERROR(NotForLeases(b));
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(b.instrument()));
    const bool staff = IsOwnerStaff(p, instrument) || p.HasRole(Role::kService);
    if (!staff && !IsBookingUser(p, b)) return UserScope("only the booking's user checks in");
    if (!staff && b.mode() == labshare::type::v1::TECHNICAL_SERVICE) {
      return UserScope("a technical-service run is checked in by the owner's staff (StartService)");
    }
    if (r.has_check_in_time() && !staff) {
      return MakeError(absl::StatusCode::kPermissionDenied, "ROLE_NOT_ALLOWED",
                       "only the owner's staff and badge readers may set check_in_time");
    }
    // INVALID_ARGUMENT before FAILED_PRECONDITION (the Errors list).
    const absl::Time t = r.has_check_in_time() ? FromProto(r.check_in_time()) : now;
    if (t > now) return InvalidField("check_in_time", "must not be in the future");
    if (b.state() != v1::Booking::CONFIRMED) return WrongState(b, "CONFIRMED");
    const inv::SlotRules& rules = SlotRulesOf(instrument, b.mode());
    const absl::Time start = FromProto(b.reserved_interval().start_time());
    // The window [opens, closes) (CheckInCloses). It opens at the later of
    // start - the booking's buffer (the one in force when it was created,
    // not the instrument's current one) and the end of the previous entry's
    // blocked interval (entries never overlap this one's).
    absl::Time opens = start - BookingBuffer(b);
    if (t < start && opens < start) {
      LS_ASSIGN_OR_RETURN(auto before, store_->CalendarRange(cur.partition, IdOf(b.instrument()), Ms(opens), Ms(start)));
      for (const auto& e : before) {
        if (e.booking_id != IdOf(b.name())) opens = std::max(opens, FromMs(e.end_ms));
      }
    }
    if (t < opens) {
      return Precondition("CHECK_IN_TOO_EARLY", absl::StrCat("check-in opens at ", absl::FormatTime(opens)));
    }
    // It closes at the earlier of start + no_show_grace and the reserved
    // end: at that very moment it is closed (and the sweep marks the booking
    // MISSED).
    const absl::Time closes = CheckInCloses(b, FromProto(rules.no_show_grace()));
    if (t >= closes) {
      return Precondition("CHECK_IN_WINDOW_CLOSED",
                          absl::StrCat("the check-in window of this booking closed at ", absl::FormatTime(closes)));
    }
    // The qualification CreateBooking checked: ON_SITE only (inventory's
    // qualification_validity_days is an ON_SITE rule).
    if (b.mode() == labshare::type::v1::ON_SITE && rules.qualification_validity_days() > 0) {
      LS_ASSIGN_OR_RETURN(auto q, inventory_->FindQualification(b.instrument(), b.user()));
      if (!q) return Precondition("QUALIFICATION_MISSING", "the user has no qualification on this instrument");
      inv::Qualification copy = *q;
      labshare::inventory::ComputeQualificationState(copy, rules.qualification_validity_days(), t);
      if (copy.state() == inv::REVOKED) {  // as CreateBooking answers it
        return Precondition("QUALIFICATION_REVOKED", "the user's qualification was revoked");
      }
      if (copy.state() != inv::VALID) {
        return Precondition("QUALIFICATION_EXPIRED", "the user's qualification is no longer valid");
      }
    }
    // After the qualification, as the Errors list orders them.
    if (instrument.state() != inv::ACTIVE) {
      return Precondition("INSTRUMENT_NOT_ACTIVE", "the instrument is not in service");
    }
    Change c;
    c.booking = b;
    c.booking.set_state(v1::Booking::CHECKED_IN);
    auto* session = c.booking.mutable_session();
    *session->mutable_start_time() = ToProto(t);
    session->set_checked_in_by(ActorName(p));
    session->set_notes(r.notes());
    c.due = UpdateStep::Due::kRemove;
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_booking_checked_in();
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<v1::Booking> BookingManager::CheckOut(const Principal& p, const v1::CheckOutRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeBooking("CheckOut", p, r.name(), /*lease_methods_first=*/true));
  std::optional<inv::Instrument> used_on;
  auto result = Transition(p, "CheckOut", r, r.name(), r.request_id(),
                           [&](const Loaded& cur, absl::Time now) -> absl::StatusOr<Change> {
    const v1::Booking& b = cur.booking;
    LS_RETURN_IF_ERROR(NotForLeases(b));
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(b.instrument()));
    const bool staff = IsOwnerStaff(p, instrument) || p.HasRole(Role::kService);
    if (!staff && !IsBookingUser(p, b)) return UserScope("only the booking's user checks out");
    if (r.has_check_out_time() && !staff) {
      return MakeError(absl::StatusCode::kPermissionDenied, "ROLE_NOT_ALLOWED",
                       "only the owner's staff and badge readers may set check_out_time");
    }
    if (b.state() != v1::Booking::CHECKED_IN) return WrongState(b, "CHECKED_IN");
    absl::Time t = r.has_check_out_time() ? FromProto(r.check_out_time()) : now;
    const absl::Time session_start = FromProto(b.session().start_time());
    if (t > now || t < session_start) {
      return InvalidField("check_out_time", "must lie between the check-in time and now");
    }
    // The session may run past the reservation only up to the next booking.
    const absl::Time blocked_start = FromProto(b.blocked_interval().start_time());
    const absl::Time blocked_end = FromProto(b.blocked_interval().end_time());
    const std::string id = b.name().substr(b.name().find('/') + 1);
    LS_ASSIGN_OR_RETURN(auto entries, store_->CalendarRange(cur.partition, IdOf(b.instrument()),
                                                            Ms(blocked_start), Ms(std::max(t, blocked_end)) + 1));
    bool clamped = false;
    for (const auto& e : entries) {
      if (e.booking_id != id && e.start_ms > Ms(blocked_start) && FromMs(e.start_ms) < t) {
        t = FromMs(e.start_ms);
        clamped = true;
      }
    }
    Change c = EndSession(p, b, t, r.request_id(), now);
    auto* session = c.booking.mutable_session();
    session->set_end_clamped(clamped);
    if (!r.notes().empty()) session->set_notes(absl::StrCat(session->notes(), session->notes().empty() ? "" : "\n", r.notes()));
    // The booking's buffer (the one in force when it was created), not the
    // instrument's current one: the block ends at check-out + that buffer.
    const absl::Duration buffer = BookingBuffer(b);
    if (r.release_remaining() && t + buffer < blocked_end) {
      // The shorter block is announced with the check-out, in its step.
      v1::BookingEvent changed = Event(p, r.request_id(), now);
      auto* ic = changed.mutable_booking_interval_changed();
      ic->set_cause(v1::BookingIntervalChanged::REMAINDER_RELEASED);
      *ic->mutable_previous_reserved_interval() = b.reserved_interval();
      *ic->mutable_previous_blocked_interval() = b.blocked_interval();
      c.events.push_back(std::move(changed));
      c.calendar = UpdateStep::Calendar::kSetEnd;
      c.new_end_ms = CeilMs(t + buffer);
      *c.booking.mutable_blocked_interval()->mutable_end_time() = ToProto(t + buffer);
      session->set_remaining_released(true);
    }
    used_on = std::move(instrument);
    return c;
  });
  if (result.ok() && used_on) RecordSessionUse(*result, *used_on);
  return result;
}

BookingManager::Change BookingManager::EndSession(const Principal& p, const v1::Booking& b, absl::Time end,
                                                  const std::string& request_id, absl::Time now) const {
  Change c;
  c.booking = b;
  c.booking.set_state(v1::Booking::COMPLETED);
  auto* session = c.booking.mutable_session();
  *session->mutable_end_time() = ToProto(end);
  session->set_checked_out_by(ActorName(p));
  // No booking may have slipped in before the recorded end.
  c.guard_from_ms = Ms(FromProto(b.blocked_interval().start_time()));
  c.guard_to_ms = CeilMs(end);
  c.due = UpdateStep::Due::kRemove;
  c.release_budget = true;
  c.used = std::max(absl::ZeroDuration(), end - FromProto(b.session().start_time()));
  v1::BookingEvent e = Event(p, request_id, now);
  e.mutable_booking_checked_out();
  c.events.push_back(std::move(e));
  return c;
}

absl::Status BookingManager::SessionUse(const v1::Booking& ended, const inv::Instrument& instrument) {
  // The ON_SITE qualification (the only mode that needs one), renewed by the
  // user's own use on site.
  if (ended.state() != v1::Booking::COMPLETED || ended.mode() != labshare::type::v1::ON_SITE ||
      SlotRulesOf(instrument, ended.mode()).qualification_validity_days() <= 0) {
    return absl::OkStatus();
  }
  // One request_id per check-out (a booking is checked out once): the
  // call at check-out and every redelivery (DeliverSessionUse) are one
  // request to inventory, which also ignores a use not later than the last.
  return inventory_->RecordQualificationUse(ended.instrument(), ended.user(), FromProto(ended.session().start_time()),
                                            FromProto(ended.session().end_time()), "checkout-" + IdOf(ended.name()));
}

void BookingManager::RecordSessionUse(const v1::Booking& ended, const inv::Instrument& instrument) {
  // A failure here does not undo the check-out: its BookingCheckedOut event
  // delivers the use again (DeliverSessionUse) until inventory takes it.
  absl::Status s = SessionUse(ended, instrument);
  if (!s.ok()) {
    LogWarning("qualification use not recorded yet; delivered again from the check-out's event",
               {{"booking", ended.name()}, {"error", s.ToString()}});
  }
}

absl::Status BookingManager::DeliverSessionUse(const v1::BookingEvent& event) {
  if (!event.has_booking_checked_out()) return absl::OkStatus();
  const v1::Booking& ended = event.booking_checked_out().booking();
  if (ended.state() != v1::Booking::COMPLETED || ended.mode() != labshare::type::v1::ON_SITE) {
    return absl::OkStatus();
  }
  absl::Status s;
  auto instrument = inventory_->Instrument(ended.instrument());
  if (!instrument.ok()) {
    s = instrument.status();
  } else {
    s = SessionUse(ended, **instrument);
  }
  if (s.ok()) return s;
  // A qualification inventory cannot read answers the same every time:
  // parked (common/events.h), so that it does not hold the outbox's
  // trimming back for good.
  if (s.code() == absl::StatusCode::kInternal && ErrorReason(s) == "CORRUPT_DOCUMENT") {
    return PermanentEventFailure(s);
  }
  switch (s.code()) {
    // Inventory unreachable, overloaded, or the call's outcome unknown:
    // again later (the same request_id).
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kUnauthenticated:
      return s;
    default:
      // Refused for good (the instrument gone, the call not allowed):
      // retrying changes nothing.
      LogWarning("qualification use refused by inventory; not delivered again",
                 {{"booking", ended.name()}, {"error", s.ToString()}});
      return absl::OkStatus();
  }
}

absl::StatusOr<absl::Time> BookingManager::AutoCheckOutTime(const Loaded& cur, const inv::Instrument& instrument) {
  const v1::Booking& b = cur.booking;
  const absl::Time session_start = FromProto(b.session().start_time());
  const absl::Duration max_block = FromProto(SlotRulesOf(instrument, b.mode()).max_block());
  // A mode the instrument no longer offers has no max_block (inventory
  // requires a positive one of every offered mode): its reserved end instead.
  absl::Time t = max_block > absl::ZeroDuration() ? session_start + max_block
                                                  : FromProto(b.reserved_interval().end_time());
  LS_ASSIGN_OR_RETURN(auto next, store_->NextCalendarStart(cur.partition, IdOf(b.instrument()),
                                                           Ms(FromProto(b.blocked_interval().start_time())),
                                                           IdOf(b.name())));
  if (next) t = std::min(t, FromMs(*next));
  return std::max(t, session_start);
}

// ================================================================ maintenance

absl::StatusOr<v1::ApplyMaintenanceWindowResponse> BookingManager::ApplyMaintenanceWindow(
    const Principal& p, const v1::ApplyMaintenanceWindowRequest& r, const std::string& cause_request_id) {
  LS_ASSIGN_OR_RETURN(auto ids, labshare::inventory::ParseChildName(
                                    r.maintenance_window(), "instruments", "maintenanceWindows",
                                    "maintenance_window"));
  const std::string instrument_name = "instruments/" + ids.first;
  LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(instrument_name));
  if (!p.HasAnyRole({Role::kService, Role::kConsortiumAdmin}) && !IsOwnerStaff(p, instrument)) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "only the owner's staff, an administrator or a service apply maintenance");
  }
  // Like every mutation (types.proto): a retry with the same request_id gets
  // the first answer, other content with it REQUEST_ID_REUSED. The answer is
  // kept with the MaintenanceApplied event, in one step.
  using Response = v1::ApplyMaintenanceWindowResponse;
  const int partition = keys::Partition(ids.first);
  const std::string idem =
      r.request_id().empty() ? "" : keys::Idempotency(partition, "ApplyMaintenanceWindow", r.request_id());
  const std::string fingerprint = RequestFingerprint("ApplyMaintenanceWindow", r, ActorName(p));
  // Every event of the window's steps names the request that caused it
  // (types.proto: inventory's, when its event is applied); the steps keep
  // their own idempotency (none).
  const std::string& event_rid = cause_request_id.empty() ? r.request_id() : cause_request_id;
  return Claimed<Response>(ClaimOf(p, "ApplyMaintenanceWindow", r.request_id(), r), [&]() -> absl::StatusOr<Response> {
  LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(idem, fingerprint));
  if (seen) return ParseAnswer<Response>(*seen);
  LS_ASSIGN_OR_RETURN(inv::MaintenanceWindow window, inventory_->GetMaintenanceWindow(r.maintenance_window()));
  v1::ApplyMaintenanceWindowResponse resp;
  resp.set_maintenance_window(window.name());
  resp.set_instrument(instrument_name);
  *resp.mutable_interval() = window.interval();
  if (window.state() != inv::SCHEDULED) {
    // Off the calendar and withdrawn in one step: an application of the
    // window still under way (it read the window SCHEDULED) puts it back on
    // no more, and changes no more bookings for it.
    LS_RETURN_IF_ERROR(store_->UnblockWindow(partition, ids.first, ids.second,
                                             Ms(FromProto(window.interval().start_time()))));
    resp.set_window_cancelled(true);
  } else {
    const absl::Time ws = FromProto(window.interval().start_time());
    const absl::Time we = FromProto(window.interval().end_time());
    if (apply_interleave_) apply_interleave_(window.name());
    LS_ASSIGN_OR_RETURN(const bool blocked, store_->BlockWindow(partition, ids.first, ids.second, Ms(ws), CeilMs(we),
                                                                v1::BusyInterval::MAINTENANCE));
    // Not blocked: the window was cancelled (and that applied) since it was
    // read; the calendar is in line with that already.
    if (!blocked) resp.set_window_cancelled(true);
    // The window now wins every new booking; clear what it hits, again and
    // again until nothing is left (a booking may have slipped in meanwhile).
    // Each step re-checks what it changes (the booking's, lease's or
    // order's version, and that the window is not withdrawn): one changed
    // meanwhile is looked at again in the next round; once the window is
    // withdrawn, nothing more is changed for it.
    std::set<std::string> left_alone;
    for (int round = 0; blocked && !resp.window_cancelled() && round < 10; ++round) {
      LS_ASSIGN_OR_RETURN(auto entries, store_->CalendarRange(partition, ids.first, Ms(ws), CeilMs(we)));
      bool any = false;
      for (const auto& e : entries) {
        if (IsWindowEntry(e.booking_id) || left_alone.count(e.booking_id)) continue;
        any = true;
        LS_ASSIGN_OR_RETURN(auto lease_doc, store_->docs().Get(keys::Lease(partition, e.booking_id)));
        LS_ASSIGN_OR_RETURN(auto hit, Load("bookings/" + e.booking_id));
        if (apply_interleave_) apply_interleave_("bookings/" + e.booking_id);
        if (hit.booking.mode() == labshare::type::v1::TECHNICAL_SERVICE && !hit.booking.service_order().empty() &&
            hit.booking.state() == v1::Booking::CONFIRMED) {
          // A scheduled run goes back to SAMPLES_RECEIVED with its booking
          // cancelled. One that moved meanwhile (checked in, started,
          // cancelled) is looked at again in the next round, as it is then.
          auto unscheduled =
              UnscheduleForOutage(p, hit.booking.service_order(), hit.booking.name(), window, event_rid);
          if (IsWindowWithdrawn(unscheduled.status())) {
            resp.set_window_cancelled(true);
            break;
          }
          if (unscheduled.ok()) {
            resp.add_unscheduled_orders(hit.booking.service_order());
            resp.add_cancelled_bookings("bookings/" + e.booking_id);
            continue;
          }
          if (ErrorReason(unscheduled.status()) != "BOOKING_STATE") return unscheduled.status();
          // Still CONFIRMED, it is no run its order has scheduled (the order
          // is not SCHEDULED, or scheduled on another run): nothing of the
          // order to unschedule (CancelBooking of the run finds the same),
          // and it would stay CONFIRMED under the window round after round.
          // It is cancelled below like any CONFIRMED booking, its order left
          // as it is. (An order never comes back to a run it left: only
          // ScheduleRun points an order at a run, a new one.)
          LS_ASSIGN_OR_RETURN(auto run_now, Load(hit.booking.name()));
          if (run_now.booking.state() != v1::Booking::CONFIRMED) continue;  // moved: next round, as it is then
        }
        if (lease_doc) {
          // A lease before handover is cancelled with its booking; one with
          // the lessee is left for the owner's staff to resolve.
          v1::Lease lease;
          lease.ParseFromString(lease_doc->data);
          if (lease.state() == v1::Lease::HANDED_OVER) {
            resp.add_conflicting_leases(lease.name());
            left_alone.insert(e.booking_id);
            continue;
          }
          if (lease.state() == v1::Lease::REQUESTED || lease.state() == v1::Lease::APPROVED) {
            // One that moved meanwhile (handed over, cancelled) is looked at
            // again in the next round, as it is then.
            auto cancelled = CancelLeaseForOutage(p, lease.name(), window, event_rid);
            if (IsWindowWithdrawn(cancelled.status())) {
              resp.set_window_cancelled(true);
              break;
            }
            if (!cancelled.ok() && ErrorReason(cancelled.status()) == "LEASE_STATE") continue;
            LS_RETURN_IF_ERROR(cancelled.status());
            resp.add_cancelled_leases(lease.name());
            resp.add_cancelled_bookings(lease.booking());  // cancelled with it, as a run's booking is
            continue;
          }
          if (lease.state() == v1::Lease::RETURNED || lease.state() == v1::Lease::CLOSED) {
            // Back with the owner: its booking's block is cut as any
            // finished booking's (below), and the lease's own
            // blocked_interval with it, in the same step, so that GetLease
            // and ListLeases say what the booking says.
            auto cut = LeaseTransition(p, "ApplyMaintenanceWindow", r, lease.name(), "",
                                       [&](const LoadedLease& cur, absl::Time now) -> absl::StatusOr<LeaseChange> {
              if (cur.lease.state() != v1::Lease::RETURNED && cur.lease.state() != v1::Lease::CLOSED) {
                return MakeError(absl::StatusCode::kFailedPrecondition, "LEASE_STATE", "no longer returned");
              }
              const v1::Booking& b = cur.booking.booking;
              const absl::Time from = FromProto(b.blocked_interval().start_time());
              const absl::Time to = FromProto(b.blocked_interval().end_time());
              if (to <= ws) return MakeError(absl::StatusCode::kFailedPrecondition, "FINISHED", "nothing to cut");
              LeaseChange c;
              c.lease = cur.lease;
              c.booking = b;
              c.window_guard = ids.second;
              // A block starting at or after the window start becomes empty
              // and leaves the calendar.
              const absl::Time end = std::max(from, ws);
              c.calendar = end > from ? UpdateStep::Calendar::kSetEnd : UpdateStep::Calendar::kRemove;
              if (end > from) c.new_end_ms = Ms(end);
              *c.booking.mutable_blocked_interval()->mutable_end_time() = ToProto(end);
              *c.lease.mutable_blocked_interval()->mutable_end_time() = ToProto(end);
              v1::BookingEvent ev = Event(p, event_rid, now);
              auto* changed = ev.mutable_booking_interval_changed();
              changed->set_cause(v1::BookingIntervalChanged::MAINTENANCE_CUT);
              *changed->mutable_previous_reserved_interval() = b.reserved_interval();
              *changed->mutable_previous_blocked_interval() = b.blocked_interval();
              c.events.push_back(std::move(ev));
              return c;
            });
            if (!cut.ok() && ErrorReason(cut.status()) == "FINISHED") {
              left_alone.insert(e.booking_id);  // its block ends at the window start already
              continue;
            }
            if (IsWindowWithdrawn(cut.status())) {
              resp.set_window_cancelled(true);
              break;
            }
            if (!cut.ok() && ErrorReason(cut.status()) == "LEASE_STATE") continue;  // next round, as it is then
            LS_RETURN_IF_ERROR(cut.status());
            continue;
          }
        }
        bool interrupted = false;
        bool cut = false;
        const std::string name = "bookings/" + e.booking_id;
        auto result = Transition(p, "ApplyMaintenanceWindow", r, name, "",
                                 [&](const Loaded& cur, absl::Time now) -> absl::StatusOr<Change> {
          const v1::Booking& b = cur.booking;
          interrupted = false;
          cut = false;
          if (b.state() == v1::Booking::CHECKED_IN) {
            // Checked out at the window start, as CheckOut would, in this
            // step; the time before the window stays on the calendar. (A
            // session checked in after the window start ends at its check-in.)
            interrupted = true;
            Change c = EndSession(p, b, std::max(FromProto(b.session().start_time()), ws), event_rid, now);
            c.booking.set_interrupted_by_outage(true);
            c.window_guard = ids.second;
            // The guard stops at the window start: the window's own entry,
            // on the calendar since BlockWindow, wins; no booking may have
            // slipped in before it.
            c.guard_to_ms = std::min(c.guard_to_ms, Ms(ws));
            if (c.guard_to_ms <= c.guard_from_ms) c.guard_from_ms = c.guard_to_ms = 0;
            if (ws > FromProto(b.blocked_interval().start_time())) {
              c.calendar = UpdateStep::Calendar::kSetEnd;
              c.new_end_ms = Ms(ws);
              *c.booking.mutable_blocked_interval()->mutable_end_time() = ToProto(ws);
            } else {
              // Nothing of the block lies before the window: it becomes
              // empty, [start, start), and leaves the calendar (as a
              // finished booking's block cut at its start, below).
              c.calendar = UpdateStep::Calendar::kRemove;
              *c.booking.mutable_blocked_interval()->mutable_end_time() = b.blocked_interval().start_time();
            }
            return c;
          }
          Change c;
          c.booking = b;
          c.calendar = UpdateStep::Calendar::kRemove;
          c.due = UpdateStep::Due::kRemove;
          c.window_guard = ids.second;
          v1::BookingEvent ev = Event(p, event_rid, now);
          if (b.state() == v1::Booking::CONFIRMED || b.state() == v1::Booking::PENDING_APPROVAL) {
            c.release_budget = true;
            c.booking.set_state(v1::Booking::CANCELLED);
            c.booking.set_cancelled_by_outage(true);
            auto* cancel = c.booking.mutable_cancellation();
            *cancel->mutable_cancel_time() = ToProto(now);
            cancel->set_cancelled_by(ActorName(p));
            cancel->set_initiator(v1::Booking::MAINTENANCE_OUTAGE);
            cancel->set_reason(window.reason());
            cancel->set_maintenance_window(window.name());
            auto* cancelled = ev.mutable_booking_cancelled();
            cancelled->set_previous_state(b.state());
            cancelled->set_cancelled_by_outage(true);
            cancelled->set_initiator(v1::Booking::MAINTENANCE_OUTAGE);
            cancelled->set_maintenance_window(window.name());
          } else {
            // A finished booking (a session checked out earlier, a lease
            // returned) keeps its state. Its block before the window stays;
            // what runs on past the window start is cut there, as for a
            // session the window checks out (a block starting at or after
            // the window start goes: it becomes empty), with its event.
            const absl::Time from = FromProto(b.blocked_interval().start_time());
            const absl::Time to = FromProto(b.blocked_interval().end_time());
            if (to <= ws) return MakeError(absl::StatusCode::kFailedPrecondition, "FINISHED", "nothing to cut");
            cut = true;
            c.release_budget = false;
            c.due = UpdateStep::Due::kKeep;
            const absl::Time end = std::max(from, ws);
            if (end > from) {
              c.calendar = UpdateStep::Calendar::kSetEnd;
              c.new_end_ms = Ms(end);
            }
            *c.booking.mutable_blocked_interval()->mutable_end_time() = ToProto(end);
            auto* changed = ev.mutable_booking_interval_changed();
            changed->set_cause(v1::BookingIntervalChanged::MAINTENANCE_CUT);
            *changed->mutable_previous_reserved_interval() = b.reserved_interval();
            *changed->mutable_previous_blocked_interval() = b.blocked_interval();
          }
          c.events.push_back(std::move(ev));
          return c;
        });
        if (!result.ok() && ErrorReason(result.status()) == "FINISHED") {
          left_alone.insert(e.booking_id);  // its block ends at the window start already
          continue;
        }
        if (IsWindowWithdrawn(result.status())) {
          resp.set_window_cancelled(true);
          break;
        }
        LS_RETURN_IF_ERROR(result.status());
        if (cut) continue;
        if (result->state() == v1::Booking::CANCELLED) resp.add_cancelled_bookings(name);
        if (interrupted) {
          resp.add_interrupted_bookings(name);
          RecordSessionUse(*result, instrument);
        }
      }
      if (!any) break;
    }
  }
  // It stamps no resource: the time of its own step.
  v1::BookingEvent applied = Event(p, event_rid, clock_->Now());
  *applied.mutable_maintenance_applied()->mutable_result() = resp;
  applied.mutable_maintenance_applied()->set_outage(window.outage());
  applied.mutable_maintenance_applied()->set_reason(window.reason());
  if (idem.empty()) {
    LS_RETURN_IF_ERROR(store_->Publish(partition, applied.SerializeAsString()));
    return resp;
  }
  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = SerializeDeterministic(resp);
  m.outbox_key = keys::Outbox(partition);
  m.event_type = v1::BookingEvent::descriptor()->full_name();
  m.event_payload = applied.SerializeAsString();
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
  if (outcome.kind == CommitOutcome::Kind::kReplayed) return ParseAnswer<Response>(outcome.response);
  if (outcome.kind == CommitOutcome::Kind::kRequestReused) return RequestIdReused();
  return resp;
  });
}

// ================================================================ sweep

absl::Time BookingManager::DueTime(const v1::Booking& b, const inv::Instrument& instrument) const {
  const absl::Time start = FromProto(b.reserved_interval().start_time());
  if (b.state() == v1::Booking::PENDING_APPROVAL) return start;
  // When CheckIn's window [opens, closes) closes: the earlier of start +
  // grace and the reserved end (without a grace period, the reserved end).
  return CheckInCloses(b, FromProto(SlotRulesOf(instrument, b.mode()).no_show_grace()));
}

absl::StatusOr<std::optional<inv::InstrumentState>> BookingManager::StateAt(const inv::Instrument& instrument,
                                                                             absl::Time at) const {
  const absl::Time updated = FromProto(instrument.update_time());
  if (!instrument.has_update_time() || updated < at) return std::optional<inv::InstrumentState>(instrument.state());
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(instrument.name(), "instruments", "instrument"));
  LS_ASSIGN_OR_RETURN(auto changes, store_->InstrumentChanges(id));
  // The first change at or after `at` says the state before it, the state
  // at `at`; it is known to be the first only next to the change before it
  // (the version in force at `at`, before `at`). A change missing between
  // them (not recorded yet: its event pending on a replica that failed to
  // record it, while a later one was recorded) leaves the state unknown.
  const BookingStore::InstrumentChange* in_force = nullptr;  // the latest before `at`
  const BookingStore::InstrumentChange* next = nullptr;      // the first at or after `at`
  bool unversioned_before = false;  // recorded before `at` by a version that kept no versions
  bool latest_read = false;         // the change of the instrument's update_time is recorded
  const BookingStore::InstrumentChange* first_state_change = nullptr;  // at or after `at`, by time
  for (const auto& c : changes) {
    if (c.time >= updated) latest_read = true;
    if (c.time >= at && c.kind == labshare::inventory::v1::STATE_CHANGED &&
        (first_state_change == nullptr || c.time < first_state_change->time)) {
      first_state_change = &c;
    }
    if (c.version <= 0) {  // recorded without its version: cannot tell what is missing
      if (c.time < at) unversioned_before = true;
      continue;
    }
    if (c.time < at) {
      if (in_force == nullptr || c.version > in_force->version) in_force = &c;
    } else if (next == nullptr || c.version < next->version) {
      next = &c;
    }
  }
  // Recorded before versions were kept (an upgrade): no versioned change
  // before `at` to pair with, so judged as that version did: known once the
  // latest change is recorded, the state before the first state change at
  // or after `at` (none: the state now).
  if (in_force == nullptr && unversioned_before) {
    if (!latest_read) return std::optional<inv::InstrumentState>();
    return std::optional<inv::InstrumentState>(
        first_state_change != nullptr ? static_cast<inv::InstrumentState>(first_state_change->state_before)
                                      : instrument.state());
  }
  if (next == nullptr) return std::optional<inv::InstrumentState>();
  // Version 1: the instrument's creation, nothing before it.
  if (next->version != 1 && (in_force == nullptr || in_force->version + 1 != next->version)) {
    return std::optional<inv::InstrumentState>();
  }
  return std::optional<inv::InstrumentState>(static_cast<inv::InstrumentState>(next->state_before));
}

absl::StatusOr<bool> BookingManager::OutOfServiceAtClose(const inv::Instrument& instrument, absl::Time closes,
                                                         bool* unknown) const {
  LS_ASSIGN_OR_RETURN(auto state, StateAt(instrument, closes));
  if (unknown != nullptr) *unknown = !state.has_value();
  return !state || *state != inv::ACTIVE;
}

absl::Status BookingManager::RecordInstrumentChange(const labshare::inventory::v1::InstrumentChanged& changed) {
  const inv::Instrument& instrument = changed.instrument();
  auto id = ParseName(instrument.name(), "instruments", "instrument");
  if (!id.ok() || !instrument.has_update_time()) return absl::OkStatus();  // nothing to place in time
  BookingStore::InstrumentChange c;
  c.time = FromProto(instrument.update_time());
  c.kind = changed.kind();
  c.state_after = instrument.state();
  // Only a state change says what the state was before; any other change
  // left it as it is after.
  c.state_before = changed.kind() == labshare::inventory::v1::STATE_CHANGED ? changed.previous_state()
                                                                             : instrument.state();
  // The instrument's version after the change (inventory's etag, moved by
  // one per change); unreadable: recorded without it (StateAt cannot use it).
  if (!absl::SimpleAtoi(instrument.etag(), &c.version) || c.version < 0) c.version = 0;
  return store_->RecordInstrumentChange(*id, c);
}

absl::StatusOr<int> BookingManager::Sweep() {
  Principal sweeper;
  sweeper.user_id = "booking";
  sweeper.roles = {Role::kService};
  const absl::Time now = clock_->Now();
  const int64_t now_ms = Ms(now);
  int changed = 0;
  // What settle found: not due yet (later), never due again (gone); for a
  // running session or a lease request not due yet, the earliest moment it
  // may be (look_ms).
  struct Found {
    bool later = false;
    bool gone = false;
    int64_t look_ms = 0;
  };
  // Marks one booking MISSED (CONFIRMED, not checked in, CheckIn's window
  // closed: now >= the earlier of start + grace and the reserved end)
  // or EXPIRED (PENDING_APPROVAL at or past its start), or checks a forgotten
  // session out (CHECKED_IN past its auto-checkout time), deciding on the
  // stored state in the step itself.
  // A lease still REQUESTED when its block begins (ApproveLease answers
  // LEASE_STARTED from then on): the lease CANCELLED, its booking EXPIRED,
  // in one step with LeaseCancelled and BookingExpired.
  // A step that changed nothing: gone (not found), not due yet, or moved
  // meanwhile (next round) are no failure; anything else is.
  auto unsettled = [](const absl::Status& status, Found& found) -> absl::Status {
    if (absl::IsNotFound(status)) found.gone = true;
    if (found.gone || found.later) return absl::OkStatus();
    if (absl::IsAborted(status)) {  // moved meanwhile: next round
      found.later = true;
      return absl::OkStatus();
    }
    return status;
  };
  auto expire_lease = [&](const std::string& name, Found& found) -> absl::Status {
    v1::GetLeaseRequest key;
    key.set_name(name);
    auto result = LeaseTransition(sweeper, "Sweep", key, name, "",
                                  [&](const LoadedLease& cur, absl::Time at) -> absl::StatusOr<LeaseChange> {
      found = Found();
      if (cur.lease.state() != v1::Lease::REQUESTED || cur.booking.booking.state() != v1::Booking::PENDING_APPROVAL) {
        found.gone = true;
        return Precondition("NOT_DUE", "no longer due");
      }
      if (RequestDeadline(cur.lease) > now) {  // as ApproveLease's LEASE_STARTED
        // Moved to its deadline in the due set, not read again every round
        // until then (a lease stored without a blocked interval is due at
        // its term start, after its due entry at the handover buffer's).
        found.later = true;
        found.look_ms = Ms(RequestDeadline(cur.lease));
        return Precondition("NOT_DUE", "not due yet");
      }
      LeaseChange c;
      c.lease = cur.lease;
      c.booking = cur.booking.booking;
      c.lease.set_state(v1::Lease::CANCELLED);
      c.lease.set_end_reason("not approved before its term (handover buffer included) began");
      c.booking.set_state(v1::Booking::EXPIRED);
      c.calendar = UpdateStep::Calendar::kRemove;
      c.due = UpdateStep::Due::kRemove;
      v1::BookingEvent cancelled = Event(sweeper, "", at);
      cancelled.mutable_lease_cancelled()->set_previous_state(v1::Lease::REQUESTED);
      cancelled.mutable_lease_cancelled()->set_reason(c.lease.end_reason());
      v1::BookingEvent expired = Event(sweeper, "", at);
      expired.mutable_booking_expired();
      c.events = {std::move(cancelled), std::move(expired)};
      return c;
    });
    if (result.ok()) {
      ++changed;
      return absl::OkStatus();
    }
    return unsettled(result.status(), found);
  };
  auto settle = [&](const std::string& id, Found& found) -> absl::Status {
    v1::GetBookingRequest key;
    key.set_name("bookings/" + id);
    std::optional<inv::Instrument> ended_on;
    std::string lease;  // a LEASE booking pending approval: its lease may expire
    // Due or not is decided at the sweep's `now`; the change is stamped
    // at its own attempt's reading (`at`), as its events are.
    auto result = Transition(sweeper, "Sweep", key, key.name(), "",
                             [&](const Loaded& cur, absl::Time at) -> absl::StatusOr<Change> {
      const v1::Booking& b = cur.booking;
      found = Found();
      ended_on.reset();
      lease.clear();
      if (b.mode() == labshare::type::v1::LEASE) {
        // Changed with its lease, in the lease's step (below); otherwise it
        // follows its lease.
        if (b.state() == v1::Booking::PENDING_APPROVAL && !b.lease().empty()) {
          lease = b.lease();
        } else {
          found.gone = true;
        }
        return Precondition("NOT_DUE", "a lease's booking");
      }
      const bool slot_mode = b.mode() == labshare::type::v1::ON_SITE || b.mode() == labshare::type::v1::JOINT_RESEARCH;
      if (b.state() == v1::Booking::CHECKED_IN && slot_mode) {
        LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(b.instrument()));
        LS_ASSIGN_OR_RETURN(absl::Time t, AutoCheckOutTime(cur, *instrument));
        if (Ms(t) >= now_ms) {
          // The next booking cannot start before this one's blocked end.
          found.later = true;
          found.look_ms = std::min(Ms(t), Ms(FromProto(b.blocked_interval().end_time())));
          return Precondition("NOT_DUE", "not due yet");
        }
        Change c = EndSession(sweeper, b, t, "", at);
        c.booking.mutable_session()->set_auto_checked_out(true);
        ended_on = *instrument;
        return c;
      }
      const bool confirmed = b.state() == v1::Booking::CONFIRMED;
      if (!confirmed && b.state() != v1::Booking::PENDING_APPROVAL) {
        found.gone = true;
        return Precondition("NOT_DUE", "no longer due");
      }
      absl::Time due = FromProto(b.reserved_interval().start_time());  // pending: its start
      std::shared_ptr<const inv::Instrument> instrument;
      if (confirmed) {
        LS_ASSIGN_OR_RETURN(instrument, inventory_->Instrument(b.instrument()));
        due = DueTime(b, *instrument);
      }
      // A missed booking is due at the moment CheckIn's window closes
      // (half-open: CheckIn refuses from that moment on); a pending one at
      // its reserved start, the moment ApproveBooking refuses it
      // (BOOKING_STARTED): no instant where a booking could be neither
      // checked in (approved) nor marked MISSED (EXPIRED). To the
      // nanosecond, as CheckIn and ApproveBooking compare.
      if (due > now) {
        found.later = true;
        return Precondition("NOT_DUE", "not due yet");
      }
      // Judged on the instrument's state as check-in closed (`due`), not
      // on its state now: a sweep running late after a change decides as
      // one on time would.
      bool out_of_service = false;
      bool unknown = false;
      if (confirmed) {
        LS_ASSIGN_OR_RETURN(out_of_service, OutOfServiceAtClose(*instrument, due, &unknown));
      }
      Change c;
      c.booking = b;
      c.calendar = UpdateStep::Calendar::kRemove;
      c.due = UpdateStep::Due::kRemove;
      v1::BookingEvent e = Event(sweeper, "", at);
      c.release_budget = true;
      if (confirmed && out_of_service) {
        // Nobody could check in (CheckIn: INSTRUMENT_NOT_ACTIVE): an outage
        // (inventory's MAINTENANCE is "out of service for all bookings"),
        // cancelled without charge, not MISSED. So is a booking whose
        // instrument booking cannot tell was in service then: never
        // charged on a guess.
        c.booking.set_state(v1::Booking::CANCELLED);
        c.booking.set_cancelled_by_outage(true);
        auto* cancel = c.booking.mutable_cancellation();
        *cancel->mutable_cancel_time() = ToProto(at);
        cancel->set_cancelled_by(ActorName(sweeper));
        cancel->set_initiator(v1::Booking::MAINTENANCE_OUTAGE);
        cancel->set_reason(unknown ? "the instrument changed after check-in closed and its state then is not known"
                                   : "the instrument was out of service when check-in closed");
        auto* cancelled = e.mutable_booking_cancelled();
        cancelled->set_previous_state(b.state());
        cancelled->set_cancelled_by_outage(true);
        cancelled->set_initiator(v1::Booking::MAINTENANCE_OUTAGE);
      } else if (confirmed) {
        // A missed booking spends its reserved hours.
        c.used = FromProto(b.reserved_interval().end_time()) - FromProto(b.reserved_interval().start_time());
        c.booking.set_state(v1::Booking::MISSED);
        e.mutable_booking_missed();
      } else {
        c.booking.set_state(v1::Booking::EXPIRED);
        e.mutable_booking_expired();
      }
      c.events.push_back(std::move(e));
      return c;
    });
    if (result.ok()) {
      ++changed;
      if (ended_on) RecordSessionUse(*result, *ended_on);
      return absl::OkStatus();
    }
    if (!lease.empty()) return expire_lease(lease, found);
    return unsettled(result.status(), found);
  };

  // One booking the sweep could not settle (an unreadable document, a
  // failed step or read) is logged and skipped; the round goes on with the
  // others, and it is looked at again in the next round.
  const auto skipped = [](const std::string& id, const absl::Status& error) {
    LogWarning("sweep skipped a booking", {{"booking", "bookings/" + id}, {"error", error.ToString()}});
  };
  for (int partition = 0; partition < kPartitions; ++partition) {
    // The due set: bookings made by older versions, running sessions met
    // below, and bookings a round skipped. All of it that is due is read,
    // page by page; what stays (not due yet, skipped) is passed by the
    // offset.
    for (int offset = 0;;) {
      LS_ASSIGN_OR_RETURN(auto due, store_->Due(partition, now_ms, offset, kSweepBatch));
      for (const std::string& id : due) {
        Found found;
        absl::Status settled = settle(id, found);
        if (settled.ok() && found.gone) settled = store_->ForgetDue(partition, id);
        if (!settled.ok()) {
          skipped(id, settled);
          ++offset;
        } else if (found.later) {
          // Not due until look_ms: moved there (out of this read's range),
          // so that it is not read again every round until then.
          if (found.look_ms <= now_ms || !store_->RememberDue(partition, id, found.look_ms).ok()) ++offset;
        }
      }
      if (static_cast<int>(due.size()) < kSweepBatch) break;
    }
    // Every other: each instrument's bookings that started since its
    // cursor. The cursor then moves to the first one still open, and never
    // closer to now than kSweepLookback, so a booking that lands just after
    // this read (its start can only be that recent) is read next time. A
    // running session may outlast any look-back: it goes to the due set
    // instead of holding the cursor, before the cursor moves past it.
    LS_ASSIGN_OR_RETURN(auto ranges, store_->SweepRanges(partition, now_ms, kSweepBatch));
    for (const auto& range : ranges) {
      if (range.entries.empty()) continue;
      std::vector<std::string> ids;
      for (const auto& e : range.entries) ids.push_back(e.booking_id);
      LS_ASSIGN_OR_RETURN(auto docs, store_->GetMany(partition, ids));
      int64_t cursor = now_ms - absl::ToInt64Milliseconds(kSweepLookback);
      if (static_cast<int>(range.entries.size()) == kSweepBatch) {
        cursor = std::min(cursor, range.entries.back().start_ms);  // more after these
      }
      for (size_t i = 0; i < range.entries.size() && i < docs.size(); ++i) {
        if (!docs[i]) continue;
        auto b = ParseBooking(docs[i]->data);
        const bool lease_request =
            b.ok() && b->mode() == labshare::type::v1::LEASE && b->state() == v1::Booking::PENDING_APPROVAL;
        if (!lease_request &&
            (!b.ok() ||
             (b->state() != v1::Booking::CONFIRMED && b->state() != v1::Booking::PENDING_APPROVAL &&
              b->state() != v1::Booking::CHECKED_IN) ||
             (b->mode() != labshare::type::v1::ON_SITE && b->mode() != labshare::type::v1::JOINT_RESEARCH))) {
          continue;  // settled: nothing for the sweep
        }
        Found found;
        const std::string& id = range.entries[i].booking_id;
        if (absl::Status settled = settle(id, found); !settled.ok()) {
          // Looked at again through the due set, so that the cursor moves
          // on past it (or, when even that fails, the cursor stays).
          skipped(id, settled);
          if (!store_->RememberDue(partition, id, now_ms).ok()) cursor = std::min(cursor, range.entries[i].start_ms);
        } else if (found.later && found.look_ms > 0) {
          if (absl::Status remembered = store_->RememberDue(partition, id, found.look_ms); !remembered.ok()) {
            skipped(id, remembered);
            cursor = std::min(cursor, range.entries[i].start_ms);
          }
        } else if (found.later) {
          cursor = std::min(cursor, range.entries[i].start_ms);
        }
      }
      if (!range.has_cursor || cursor > range.cursor_ms) {
        LS_RETURN_IF_ERROR(store_->SetSweepCursor(partition, range.instrument_id, cursor));
      }
    }
    // Service orders whose report is due for automatic acceptance.
    LS_RETURN_IF_ERROR(AcceptDueReports(sweeper, partition, now, kSweepBatch, &changed));
  }
  return changed;
}

// ================================================================ availability

absl::StatusOr<BookingManager::AvailabilityPlan> BookingManager::PlanAvailability(
    const Principal& p, const v1::QueryAvailabilityRequest& r) {
  // Authorization before validation: another organisation's view.
  if (!r.organization().empty()) LS_RETURN_IF_ERROR(CheckScope("QueryAvailability", p, {"", {r.organization()}, {}}));
  AvailabilityPlan plan;
  LS_ASSIGN_OR_RETURN(plan.instrument_id, ParseName(r.instrument(), "instruments", "instrument"));
  if (!r.organization().empty()) {
    LS_RETURN_IF_ERROR(ParseName(r.organization(), "organizations", "organization").status());
  }
  // In the order the contract lists them (as SearchAvailableInstruments):
  // min_duration, the range, its length.
  if (FromProto(r.min_duration()) < absl::ZeroDuration()) return InvalidField("min_duration", "must not be negative");
  LS_RETURN_IF_ERROR(ValidInterval(r.range(), "range"));
  plan.instrument = r.instrument();
  plan.from = FromProto(r.range().start_time());
  plan.to = FromProto(r.range().end_time());
  if (plan.to - plan.from > kMaxRange) {
    return InvalidField("range", "may span at most 366 days", "RANGE_TOO_LONG");
  }
  if (!labshare::type::v1::SharingMode_IsValid(r.mode())) return InvalidField("mode", "not a sharing mode");
  const SharingMode mode = r.mode() == 0 ? labshare::type::v1::ON_SITE : r.mode();
  const bool privileged = p.HasAnyRole({Role::kFacilityStaff, Role::kConsortiumAdmin, Role::kAuditor, Role::kService});
  const std::string org_name = r.organization().empty() ? ActorOrganization(p) : r.organization();
  if (!r.organization().empty() && r.organization() != ActorOrganization(p) && !privileged) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE", "you may ask only for your own organisation");
  }
  // What is named must exist (NOT_FOUND: the instrument, then the
  // organisation) before the instrument's modes are looked at.
  LS_ASSIGN_OR_RETURN(auto instrument_shared, inventory_->Instrument(r.instrument()));
  const inv::Instrument& instrument = *instrument_shared;
  plan.state = instrument.state();
  std::shared_ptr<const inv::Organization> org;
  if (!org_name.empty()) {
    LS_ASSIGN_OR_RETURN(org, inventory_->Organization(org_name));
  }
  const inv::ModeOffering* offering = FindMode(instrument, mode);
  if (offering == nullptr) {
    return Precondition("MODE_NOT_OFFERED", absl::StrCat(r.instrument(), " does not offer ", labshare::type::v1::SharingMode_Name(mode)));
  }
  // Without an organisation (CONSORTIUM_ADMIN, AUDITOR, SERVICE asking for
  // none): a member's notice and horizon (member_horizon, no tier's).
  const labshare::type::v1::PayerClass payer_class =
      org != nullptr ? labshare::inventory::PayerClassFor(*org, instrument) : labshare::type::v1::MEMBER;
  const absl::Time now = clock_->Now();
  // Notice and horizon exactly as CreateBooking and RequestLease check them
  // (a MEMBER's tier horizon included).
  plan.window = labshare::inventory::BookingWindowFor(*offering, payer_class,
                                                      org != nullptr ? org->tier() : std::string(), now);
  // A reservation [s, e) blocks [s - lead, e + tail): slot modes the buffer
  // after; LEASE the default handover buffer before and return buffer after.
  const bool lease = mode == labshare::type::v1::LEASE;
  plan.lead = lease ? FromProto(offering->lease_rules().handover_buffer()) : absl::ZeroDuration();
  plan.tail = lease ? FromProto(offering->lease_rules().return_buffer()) : FromProto(offering->slot_rules().buffer());
  plan.min_len = FromProto(r.min_duration());
  plan.partition = keys::Partition(plan.instrument_id);
  plan.names = p.HasAnyRole({Role::kConsortiumAdmin, Role::kAuditor}) || IsOwnerStaff(p, instrument);
  // The scheduled maintenance (cached), before the calendar read: no
  // pipeline thread ever waits on inventory.
  LS_ASSIGN_OR_RETURN(plan.windows, inventory_->Windows(r.instrument()));
  return plan;
}

absl::StatusOr<v1::QueryAvailabilityResponse> BookingManager::QueryAvailability(
    const Principal& p, const v1::QueryAvailabilityRequest& r) {
  LS_ASSIGN_OR_RETURN(AvailabilityPlan plan, PlanAvailability(p, r));
  // Taken time: bookings (blocked intervals) and scheduled maintenance. The
  // calendar's whole milliseconds: the read reaches the range's end rounded
  // up (an entry starting inside its last millisecond is in the way).
  LS_ASSIGN_OR_RETURN(auto cal, store_->ReadCalendarWithDocs(plan.partition, plan.instrument_id,
                                                             Ms(plan.from - plan.lead), CeilMs(plan.to + plan.tail)));
  v1::QueryAvailabilityResponse resp;
  AnswerAvailability(plan, cal.entries, cal.docs, &resp);
  return resp;
}

template <typename T>
void BookingManager::Planned(std::function<absl::StatusOr<T>()> plan, std::function<void(absl::StatusOr<T>)> then) {
  std::optional<absl::StatusOr<T>> answer;
  {
    InventoryClient::CacheOnly cached;
    absl::StatusOr<T> result = plan();
    if (!cached.missed()) answer.emplace(std::move(result));
  }
  if (answer) return then(*std::move(answer));
  // A miss: again where waiting on inventory holds up no other call.
  auto shared = std::make_shared<std::pair<std::function<absl::StatusOr<T>()>, std::function<void(absl::StatusOr<T>)>>>(
      std::move(plan), std::move(then));
  absl::Status offloaded = Offload([shared] { shared->second(shared->first()); });
  if (!offloaded.ok()) shared->second(offloaded);
}

void BookingManager::QueryAvailabilityAsync(const Principal& p, const v1::QueryAvailabilityRequest& r,
                                            v1::QueryAvailabilityResponse* out,
                                            std::function<void(absl::Status)> done) {
  // The plan asks inventory: from its cache here, a miss on blocking_.
  Planned<AvailabilityPlan>(
      [this, p, r] { return PlanAvailability(p, r); },
      [this, out, done = std::move(done)](absl::StatusOr<AvailabilityPlan> plan) {
        if (!plan.ok()) return done(plan.status());
        auto shared = std::make_shared<AvailabilityPlan>(*std::move(plan));
        store_->CalendarWithDocsAsync(shared->partition, shared->instrument_id, Ms(shared->from - shared->lead),
                                      CeilMs(shared->to + shared->tail),
                                      [shared, out, done](absl::StatusOr<BookingStore::CalendarWithDocs> cal) {
                                        if (!cal.ok()) return done(cal.status());
                                        AnswerAvailabilityWire(*shared, cal->entries, cal->docs, out);
                                        done(absl::OkStatus());
                                      });
      });
}

// The answer's parts in answer order, before they become a message or its
// bytes (AnswerAvailability, AnswerAvailabilityWire): both forms from one
// computation.
struct BookingManager::AvailabilityAnswer {
  struct Busy {
    absl::Time start, end;
    int reason = 0;
    const CalendarEntry* entry = nullptr;           // a calendar entry, or
    const inv::MaintenanceWindow* window = nullptr;  // a scheduled window off the calendar,
                                                     // or neither: the MAINTENANCE state
  };
  std::vector<Busy> busy;  // empty unless with_busy
  std::vector<std::pair<absl::Time, absl::Time>> free;
};

void BookingManager::ComputeAvailability(const AvailabilityPlan& plan, const std::vector<CalendarEntry>& entries,
                                         const std::vector<std::optional<StoredDoc>>& docs, bool with_busy,
                                         AvailabilityAnswer* answer) {
  const absl::Time from = plan.from, to = plan.to;
  const absl::Duration lead = plan.lead, tail = plan.tail;
  const labshare::inventory::BookingWindow& window = plan.window;
  std::set<std::string> windows_on_calendar;  // rare: only when a window is on the calendar
  for (const auto& e : entries) {
    if (IsWindowEntry(e.booking_id)) windows_on_calendar.insert(e.booking_id.substr(3));
  }
  std::vector<std::pair<absl::Time, absl::Time>> busy;
  busy.reserve(entries.size() + 4);
  std::vector<AvailabilityAnswer::Busy>& out = answer->busy;
  // Whether the busy intervals added so far start strictly in order (the
  // calendar's are by start): then sorting them changes nothing.
  bool in_order = true;
  absl::Time last_start = absl::InfinitePast();
  auto add_busy = [&](absl::Time bs, absl::Time be) -> AvailabilityAnswer::Busy& {
    if (!out.empty() && !(last_start < bs)) in_order = false;
    last_start = bs;
    out.emplace_back();
    out.back().start = bs;
    out.back().end = be;
    return out.back();
  };
  if (with_busy) out.reserve(entries.size() + 1);
  // An instrument in MAINTENANCE state is out of service until set back to
  // ACTIVE, an outage without a window: busy over the whole range, naming
  // nothing (first, so that it stays first among intervals starting with
  // the range).
  if (with_busy && plan.state == inv::MAINTENANCE) add_busy(from, to).reason = v1::BusyInterval::MAINTENANCE;
  for (size_t i = 0; i < entries.size(); ++i) {
    const absl::Time bs = FromMs(entries[i].start_ms), be = FromMs(entries[i].end_ms);
    busy.emplace_back(bs, be);
    if (!with_busy || !(bs < to && from < be)) continue;  // only in the way of the range's edges
    AvailabilityAnswer::Busy& bi = add_busy(bs, be);
    bi.entry = &entries[i];
    // The reason stored beside the end; for an end an older version wrote,
    // the document's (a window's from its id).
    int reason = entries[i].busy_reason;
    int state = 0, mode = 0;
    if (IsWindowEntry(entries[i].booking_id)) {
      reason = v1::BusyInterval::MAINTENANCE;
    } else if (reason == 0) {
      reason = i < docs.size() && docs[i] && ReadStateAndMode(docs[i]->data, &state, &mode)
                   ? BusyReasonFor(state, mode)
                   : v1::BusyInterval::BOOKED;
    }
    bi.reason = reason;
  }
  for (const auto& w : plan.windows->maintenance_windows()) {
    if (w.state() != inv::SCHEDULED ||
        (!windows_on_calendar.empty() && windows_on_calendar.count(w.name().substr(w.name().rfind('/') + 1)))) {
      continue;
    }
    const absl::Time ws = FromProto(w.interval().start_time()), we = FromProto(w.interval().end_time());
    if (!(ws < to + tail && from - lead < we)) continue;
    busy.emplace_back(ws, we);
    if (!with_busy || !(ws < to && from < we)) continue;
    AvailabilityAnswer::Busy& bi = add_busy(ws, we);
    bi.window = &w;
    bi.reason = v1::BusyInterval::MAINTENANCE;
  }
  if (!std::is_sorted(busy.begin(), busy.end())) std::sort(busy.begin(), busy.end());
  if (!in_order) {
    std::stable_sort(out.begin(), out.end(), [](const AvailabilityAnswer::Busy& a, const AvailabilityAnswer::Busy& b) {
      return a.start < b.start;
    });
  }
  // Only an ACTIVE instrument may be booked (CreateBooking's
  // INSTRUMENT_NOT_ACTIVE): in MAINTENANCE or RETIRED state nothing is free.
  if (plan.state != inv::ACTIVE) return;
  // Free: in each gap [gap start, next taken start), where a reservation's
  // whole blocked interval fits: lead after the gap opens, tail before it
  // closes; clipped to the booking window and the range.
  const absl::Time lo = std::max(from, window.earliest_start);
  const absl::Time hi = std::min(to, window.latest_end);
  const absl::Duration min_len = plan.min_len;
  answer->free.reserve(busy.size() + 1);
  auto emit = [&](absl::Time s, absl::Time e) {
    s = std::max(s, lo);
    e = std::min(e, hi);
    if (e > s && e - s >= min_len) answer->free.emplace_back(s, e);
  };
  absl::Time gap_start = absl::InfinitePast();
  for (const auto& [bs, be] : busy) {
    if (bs > gap_start) emit(gap_start + lead, bs - tail);
    gap_start = std::max(gap_start, be);
    if (gap_start >= hi) break;
  }
  emit(gap_start + lead, absl::InfiniteFuture());
}

namespace {
// A busy interval's resource: a window on the calendar is named as
// inventory names it.
std::string BusyResource(const std::string& instrument, const CalendarEntry& e) {
  return IsWindowEntry(e.booking_id)
             ? absl::StrCat(instrument, "/maintenanceWindows/", absl::string_view(e.booking_id).substr(3))
             : absl::StrCat("bookings/", e.booking_id);
}
}  // namespace

void BookingManager::AnswerAvailability(const AvailabilityPlan& plan, const std::vector<CalendarEntry>& entries,
                                        const std::vector<std::optional<StoredDoc>>& docs,
                                        v1::QueryAvailabilityResponse* out, bool with_busy) {
  AvailabilityAnswer a;
  ComputeAvailability(plan, entries, docs, with_busy, &a);
  v1::QueryAvailabilityResponse& resp = *out;
  resp.set_instrument(plan.instrument);
  *resp.mutable_earliest_start() = ToProto(plan.window.earliest_start);
  if (plan.window.latest_end != absl::InfiniteFuture()) *resp.mutable_horizon_end() = ToProto(plan.window.latest_end);
  resp.mutable_busy_intervals()->Reserve(static_cast<int>(a.busy.size()));
  for (const auto& b : a.busy) {
    v1::BusyInterval* bi = resp.add_busy_intervals();
    if (b.window != nullptr) {
      *bi->mutable_interval() = b.window->interval();
    } else {
      *bi->mutable_interval()->mutable_start_time() = ToProto(b.start);
      *bi->mutable_interval()->mutable_end_time() = ToProto(b.end);
    }
    bi->set_reason(static_cast<v1::BusyInterval::Reason>(b.reason));
    if (plan.names && b.window != nullptr) {
      bi->set_resource(b.window->name());
    } else if (plan.names && b.entry != nullptr) {
      bi->set_resource(BusyResource(plan.instrument, *b.entry));
    }
  }
  for (const auto& [s, e] : a.free) {
    auto* f = resp.add_free_intervals();
    *f->mutable_start_time() = ToProto(s);
    *f->mutable_end_time() = ToProto(e);
  }
}

namespace {
// The protobuf encoding of QueryAvailabilityResponse's parts, byte for byte
// what serializing the message AnswerAvailability builds gives (proto3:
// zero scalars and empty strings left out, set messages always written,
// fields by number). Each writer puts its bytes at p and answers their end.
namespace wire {
char* Varint(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}
// google.protobuf.Timestamp's fields of t, as ToProto(absl::Time) sets
// them (seconds rounded down, nanos the rest): at most 22 bytes.
char* Timestamp(char* p, absl::Time t) {
  int64_t s;
  int32_t nanos;
  // Within about 285 years of 1970: one conversion to nanoseconds, exact.
  constexpr absl::Time kLow = absl::FromUnixSeconds(-9000000000LL), kHigh = absl::FromUnixSeconds(9000000000LL);
  if (kLow < t && t < kHigh) {
    const int64_t ns = absl::ToUnixNanos(t);  // rounded down, as ToUnixSeconds
    s = ns / 1000000000;
    int64_t rest = ns % 1000000000;
    if (rest < 0) {
      rest += 1000000000;
      --s;
    }
    nanos = static_cast<int32_t>(rest);
  } else {
    s = absl::ToUnixSeconds(t);
    nanos = static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(s)));
  }
  if (s != 0) {
    *p++ = 0x08;
    p = Varint(p, static_cast<uint64_t>(s));
  }
  if (nanos != 0) {
    *p++ = 0x10;
    p = Varint(p, static_cast<uint64_t>(static_cast<int64_t>(nanos)));  // int32: sign-extended
  }
  return p;
}
// Field `field` holding a Timestamp (its length fits one byte): at most 24.
char* TimestampField(char* p, int field, absl::Time t) {
  *p = static_cast<char>(field << 3 | 2);
  char* body = p + 2;
  char* end = Timestamp(body, t);
  p[1] = static_cast<char>(end - body);
  return end;
}
// labshare.type.v1.Interval{start_time: s, end_time: e}: at most 48 bytes.
char* Interval(char* p, absl::Time s, absl::Time e) { return TimestampField(TimestampField(p, 1, s), 2, e); }
constexpr size_t kMaxInterval = 48;
size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
}  // namespace wire
}  // namespace

void BookingManager::AnswerAvailabilityWire(const AvailabilityPlan& plan, const std::vector<CalendarEntry>& entries,
                                            const std::vector<std::optional<StoredDoc>>& docs,
                                            v1::QueryAvailabilityResponse* out) {
  AvailabilityAnswer a;
  ComputeAvailability(plan, entries, docs, /*with_busy=*/true, &a);
  // Every field as an unknown field, in field number order: on the wire
  // the message AnswerAvailability builds, without building it.
  google::protobuf::UnknownFieldSet* fields = out->GetReflection()->MutableUnknownFields(out);
  using R = v1::QueryAvailabilityResponse;
  char buf[2 + wire::kMaxInterval + 11];
  if (!plan.instrument.empty()) *fields->AddLengthDelimited(R::kInstrumentFieldNumber) = plan.instrument;
  for (const auto& [s, e] : a.free) {
    fields->AddLengthDelimited(R::kFreeIntervalsFieldNumber)->assign(buf, wire::Interval(buf, s, e) - buf);
  }
  for (const auto& b : a.busy) {
    // interval (1), reason (2), resource (3).
    std::string* f = fields->AddLengthDelimited(R::kBusyIntervalsFieldNumber);
    char* p = buf;
    if (b.window != nullptr) {
      *f = b.window->interval().SerializeAsString();
      *p++ = 0x0A;
      p = wire::Varint(p, f->size());
      f->insert(0, buf, p - buf);
      p = buf;
    } else {
      *p++ = 0x0A;
      char* body = p + 1;
      char* end = wire::Interval(body, b.start, b.end);
      *p = static_cast<char>(end - body);
      p = end;
    }
    if (b.reason != 0) {
      *p++ = 0x10;
      p = wire::Varint(p, static_cast<uint64_t>(static_cast<int64_t>(b.reason)));
    }
    const size_t head = p - buf;
    if (!plan.names || (b.window == nullptr && b.entry == nullptr)) {  // the state's outage names nothing
      f->append(buf, head);
      continue;
    }
    // "bookings/<id>" written in place (no string built for it); a window
    // (on the calendar or not) named as inventory names it.
    static constexpr absl::string_view kBookings = "bookings/";
    const bool booking = b.window == nullptr && !IsWindowEntry(b.entry->booking_id);
    const std::string other =
        booking ? std::string() : (b.window != nullptr ? b.window->name() : BusyResource(plan.instrument, *b.entry));
    const size_t len = booking ? kBookings.size() + b.entry->booking_id.size() : other.size();
    if (len == 0) {
      f->append(buf, head);
      continue;
    }
    const size_t at = f->size();
    f->resize(at + head + 1 + wire::VarintSize(len) + len);
    char* q = &(*f)[at];
    std::memcpy(q, buf, head);
    q += head;
    *q++ = 0x1A;
    q = wire::Varint(q, len);
    if (booking) {
      std::memcpy(q, kBookings.data(), kBookings.size());
      std::memcpy(q + kBookings.size(), b.entry->booking_id.data(), b.entry->booking_id.size());
    } else {
      std::memcpy(q, other.data(), other.size());
    }
  }
  fields->AddLengthDelimited(R::kEarliestStartFieldNumber)
      ->assign(buf, wire::Timestamp(buf, plan.window.earliest_start) - buf);
  if (plan.window.latest_end != absl::InfiniteFuture()) {
    fields->AddLengthDelimited(R::kHorizonEndFieldNumber)
        ->assign(buf, wire::Timestamp(buf, plan.window.latest_end) - buf);
  }
}

namespace {
// Before any candidate is planned: a category without one answers
// RANGE_TOO_LONG too (each plan checks it again).
// Category and facility: inventory names are short, and a longer one only
// grows the cached pages' keys (InventoryClient::Instruments).
constexpr size_t kMaxSearchFilter = 200;
absl::Status SearchFilters(const v1::SearchAvailableInstrumentsRequest& r) {
  if (r.category().empty()) return InvalidField("category", "required, e.g. electron-microscopy");
  if (r.category().size() > kMaxSearchFilter) return InvalidField("category", "may be at most 200 bytes");
  if (r.facility().size() > kMaxSearchFilter) return InvalidField("facility", "may be at most 200 bytes");
  if (!r.facility().empty()) LS_RETURN_IF_ERROR(ParseName(r.facility(), "facilities", "facility").status());
  if (FromProto(r.min_duration()) < absl::ZeroDuration()) return InvalidField("min_duration", "must not be negative");
  if (!r.organization().empty()) return ParseName(r.organization(), "organizations", "organization").status();
  return absl::OkStatus();
}

// A listed instrument deleted or without the mode by the time it is planned
// (a page and an instrument are read, or cached, apart): not a candidate,
// as if the page had been read after the change.
bool GoneSinceListed(const absl::Status& s) {
  if (s.ok()) return false;
  const std::string reason = ErrorReason(s);
  return reason == "MODE_NOT_OFFERED" || reason == "INSTRUMENT_NOT_FOUND";
}

absl::Status SearchRangeFits(const v1::SearchAvailableInstrumentsRequest& r) {
  if (FromProto(r.range().end_time()) - FromProto(r.range().start_time()) > kMaxRange) {
    return InvalidField("range", "may span at most 366 days", "RANGE_TOO_LONG");
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<v1::SearchAvailableInstrumentsResponse> BookingManager::SearchAvailableInstruments(
    const Principal& p, const v1::SearchAvailableInstrumentsRequest& r) {
  LS_RETURN_IF_ERROR(CheckPageSize(r.page_size()));  // before the scope and every other check
  // Authorization before validation: another organisation's view.
  if (!r.organization().empty()) {
    LS_RETURN_IF_ERROR(CheckScope("SearchAvailableInstruments", p, {"", {r.organization()}, {}}));
  }
  LS_RETURN_IF_ERROR(SearchFilters(r));
  LS_RETURN_IF_ERROR(ValidInterval(r.range(), "range"));
  LS_RETURN_IF_ERROR(SearchRangeFits(r));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  const SharingMode mode = r.mode() == 0 ? labshare::type::v1::ON_SITE : r.mode();
  const std::string org_name = r.organization().empty() ? ActorOrganization(p) : r.organization();
  std::shared_ptr<const inv::Organization> org;
  if (!org_name.empty()) {
    LS_ASSIGN_OR_RETURN(org, inventory_->Organization(org_name));
  }
  const absl::Duration span = FromProto(r.range().end_time()) - FromProto(r.range().start_time());
  const absl::Duration wanted = r.has_min_duration() ? FromProto(r.min_duration()) : span;

  inv::ListInstrumentsRequest list;
  list.set_category(r.category());
  list.set_facility(r.facility());
  list.set_mode(mode);
  list.set_state(inv::ACTIVE);
  list.set_page_token(page.after);  // our token carries inventory's
  v1::SearchAvailableInstrumentsResponse resp;
  do {
    // Ask for no more than still fits: filtering only removes, so a page
    // never exceeds page_size and inventory's token resumes exactly.
    list.set_page_size(page.page_size - resp.instruments_size());
    LS_ASSIGN_OR_RETURN(auto instruments, inventory_->ListInstruments(list));
    for (const auto& in : instruments.instruments()) {
      if (org != nullptr) {
        LS_ASSIGN_OR_RETURN(auto facility, inventory_->Facility(in.facility()));
        const bool owner = in.owner_organization() == org->name();
        if (!owner && !labshare::inventory::PolicyAllows(labshare::inventory::EffectivePolicy(in, *facility), *org)) {
          continue;
        }
      }
      v1::QueryAvailabilityRequest q;
      q.set_instrument(in.name());
      *q.mutable_range() = r.range();
      q.set_mode(mode);
      *q.mutable_min_duration() = ToProto(wanted);
      q.set_organization(org_name);
      absl::StatusOr<v1::QueryAvailabilityResponse> free = QueryAvailability(p, q);
      if (GoneSinceListed(free.status())) continue;
      if (!free.ok()) return free.status();
      if (free->free_intervals().empty()) continue;
      auto* found = resp.add_instruments();
      found->set_instrument(in.name());
      found->set_owner_organization(in.owner_organization());
      found->set_facility(in.facility());
      *found->mutable_free_intervals() = free->free_intervals();
    }
    list.set_page_token(instruments.next_page_token());
  } while (!list.page_token().empty() && resp.instruments_size() < page.page_size);
  if (!list.page_token().empty()) resp.set_next_page_token(page_tokens_.Make(r, p, list.page_token()));
  return resp;
}


// The synchronous form above, one page of candidates at a time: the page
// and the plans (PlanSearchPage: inventory, cached), then one batch of
// calendar reads for the page; the answer keeps the page's order.
void BookingManager::SearchAvailableInstrumentsAsync(
    const Principal& p, const v1::SearchAvailableInstrumentsRequest& r,
    std::function<void(absl::StatusOr<v1::SearchAvailableInstrumentsResponse>)> done) {
  // The checks of the synchronous form, in its order; none asks inventory.
  if (absl::Status size = CheckPageSize(r.page_size()); !size.ok()) return done(size);
  if (!r.organization().empty()) {
    absl::Status scope = CheckScope("SearchAvailableInstruments", p, {"", {r.organization()}, {}});
    if (!scope.ok()) return done(scope);
  }
  if (absl::Status filters = SearchFilters(r); !filters.ok()) return done(filters);
  if (absl::Status range = ValidInterval(r.range(), "range"); !range.ok()) return done(range);
  if (absl::Status range = SearchRangeFits(r); !range.ok()) return done(range);
  auto page = page_tokens_.Parse(r, p);
  if (!page.ok()) return done(page.status());
  auto s = std::make_shared<Search>();
  s->p = p;
  s->r = r;
  s->page_size = page->page_size;
  s->mode = r.mode() == 0 ? labshare::type::v1::ON_SITE : r.mode();
  s->org_name = r.organization().empty() ? ActorOrganization(p) : r.organization();
  const absl::Duration span = FromProto(r.range().end_time()) - FromProto(r.range().start_time());
  s->wanted = r.has_min_duration() ? FromProto(r.min_duration()) : span;
  s->list.set_category(r.category());
  s->list.set_facility(r.facility());
  s->list.set_mode(s->mode);
  s->list.set_state(inv::ACTIVE);
  s->list.set_page_token(page->after);  // our token carries inventory's
  s->done = std::move(done);
  SearchNextPage(std::move(s));
}

absl::StatusOr<BookingManager::SearchPage> BookingManager::PlanSearchPage(Search& s, int max_pages) {
  SearchPage out;
  out.org = s.org;
  if (!s.org_loaded && !s.org_name.empty()) {
    LS_ASSIGN_OR_RETURN(out.org, inventory_->Organization(s.org_name));
  }
  // Pages without a candidate (all excluded by access policy) are passed
  // over here, in one frame: the caller's continuation would otherwise
  // recurse once per such page (CalendarsAsync of nothing answers inline).
  // s.list's token moves past them; a rerun after a miss resumes there.
  for (int n = 1;; ++n) {
    LS_ASSIGN_OR_RETURN(out.instruments, inventory_->Instruments(s.list));
    LS_RETURN_IF_ERROR(PlanCandidates(s, &out));
    if (!out.candidates.empty() || out.instruments->next_page_token().empty() || n >= max_pages) return out;
    s.list.set_page_token(out.instruments->next_page_token());
  }
}

absl::Status BookingManager::PlanCandidates(const Search& s, SearchPage* page) {
  SearchPage& out = *page;
  const auto& instruments = out.instruments->instruments();
  for (int k = 0; k < instruments.size(); ++k) {
    const inv::Instrument& in = instruments[k];
    if (out.org != nullptr) {
      LS_ASSIGN_OR_RETURN(auto facility, inventory_->Facility(in.facility()));
      const bool owner = in.owner_organization() == out.org->name();
      if (!owner && !labshare::inventory::PolicyAllows(labshare::inventory::EffectivePolicy(in, *facility), *out.org)) {
        continue;
      }
    }
    v1::QueryAvailabilityRequest q;
    q.set_instrument(in.name());
    *q.mutable_range() = s.r.range();
    q.set_mode(s.mode);
    *q.mutable_min_duration() = ToProto(s.wanted);
    q.set_organization(s.org_name);
    absl::StatusOr<AvailabilityPlan> plan = PlanAvailability(s.p, q);
    if (GoneSinceListed(plan.status())) continue;
    if (!plan.ok()) return plan.status();
    out.candidates.emplace_back(k, *std::move(plan));
  }
  return absl::OkStatus();
}

void BookingManager::SearchNextPage(std::shared_ptr<Search> s) {
  // Ask for no more than still fits: filtering only removes, so a page
  // never exceeds page_size and inventory's token resumes exactly.
  s->list.set_page_size(s->page_size - s->resp.instruments_size());
  if (s->list.page_size() > kInlineCandidates && !OnBlockingThread()) {
    // Many plans to make: not on a gRPC or pipeline thread.
    absl::Status offloaded = Offload([this, s] { SearchNextPage(s); });
    if (!offloaded.ok()) s->done(offloaded);
    return;
  }
  const int max_pages = OnBlockingThread() ? std::numeric_limits<int>::max() : kInlineCandidates;
  Planned<SearchPage>([this, s, max_pages] { return PlanSearchPage(*s, max_pages); },
                      [this, s](absl::StatusOr<SearchPage> planned) { SearchPlanned(s, std::move(planned)); });
}

void BookingManager::SearchPlanned(std::shared_ptr<Search> s, absl::StatusOr<SearchPage> planned) {
  if (!planned.ok()) return s->done(planned.status());
  auto page = std::make_shared<SearchPage>(*std::move(planned));
  s->org = page->org;
  s->org_loaded = true;
  if (page->candidates.empty()) {
    // The inline walk's page limit: go on from blocking_ (a new stack).
    s->list.set_page_token(page->instruments->next_page_token());
    if (s->list.page_token().empty()) return s->done(std::move(s->resp));
    absl::Status offloaded = Offload([this, s] { SearchNextPage(s); });
    if (!offloaded.ok()) s->done(offloaded);
    return;
  }
  std::vector<BookingStore::CalendarRead> reads;
  reads.reserve(page->candidates.size());
  for (const auto& [k, plan] : page->candidates) {
    reads.push_back({plan.partition, plan.instrument_id, Ms(plan.from - plan.lead), CeilMs(plan.to + plan.tail)});
  }
  store_->CalendarsAsync(std::move(reads), [this, s, page](absl::StatusOr<std::vector<std::vector<CalendarEntry>>> cals) {
    if (!cals.ok()) return s->done(cals.status());
    auto shared = std::make_shared<std::vector<std::vector<CalendarEntry>>>(*std::move(cals));
    auto answer = [this, s, page, shared] { SearchAnswered(s, *page, *shared); };
    // The pipeline's callbacks must be short: many answers on blocking_.
    if (page->candidates.size() <= kInlineCandidates || OnBlockingThread()) return answer();
    absl::Status offloaded = Offload(answer);
    if (!offloaded.ok()) s->done(offloaded);
  });
}

void BookingManager::SearchAnswered(const std::shared_ptr<Search>& s, const SearchPage& page,
                                    const std::vector<std::vector<CalendarEntry>>& cals) {
  for (size_t i = 0; i < page.candidates.size() && i < cals.size(); ++i) {
    const auto& [k, plan] = page.candidates[i];
    // Free time needs no documents (they only name why time is busy).
    v1::QueryAvailabilityResponse free;
    AnswerAvailability(plan, cals[i], {}, &free, /*with_busy=*/false);
    if (free.free_intervals().empty()) continue;
    const inv::Instrument& in = page.instruments->instruments(k);
    auto* found = s->resp.add_instruments();
    found->set_instrument(in.name());
    found->set_owner_organization(in.owner_organization());
    found->set_facility(in.facility());
    *found->mutable_free_intervals() = std::move(*free.mutable_free_intervals());
  }
  s->list.set_page_token(page.instruments->next_page_token());
  if (!s->list.page_token().empty() && s->resp.instruments_size() < s->page_size) return SearchNextPage(s);
  if (!s->list.page_token().empty()) s->resp.set_next_page_token(page_tokens_.Make(s->r, s->p, s->list.page_token()));
  s->done(std::move(s->resp));
}

}  // namespace labshare::booking
