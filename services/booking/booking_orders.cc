// Technical-service orders: a client orders an entry of an instrument's
// service catalogue; the owner's staff quote, receive samples, schedule a
// run (a TECHNICAL_SERVICE booking), run it and deliver a report that the
// client accepts or disputes. The order lives in its instrument's partition,
// so an order and its run's booking change together in one Lua step.
#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/input_limits.h"
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
using labshare::inventory::SlotRulesOf;
using labshare::inventory::ParseName;
using labshare::type::v1::Money;
using Order = v1::ServiceOrder;

absl::Status OrderState(const Order& o, absl::string_view wanted) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "ORDER_STATE",
                   absl::StrCat(o.name(), " is ", Order::State_Name(o.state()), "; this needs ", wanted),
                   {{"state", Order::State_Name(o.state())}});
}

bool IsClient(const Principal& p, const Order& o) {
  return p.HasAnyRole({Role::kLabUser, Role::kMemberBillingAdmin}) &&
         ActorOrganization(p) == o.client_organization();
}

absl::Status ClientOnly(const Principal& p, const Order& o) {
  if (IsClient(p, o)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   "only the client organisation's users and billing admins may do this");
}

// A report accepted automatically at `accepted` (its order's
// report_accept_deadline) can no longer be disputed.
absl::Status AcceptanceClosed(const Order& o, absl::Time accepted) {
  const std::string when = absl::FormatTime(absl::RFC3339_full, accepted, absl::UTCTimeZone());
  return MakeError(absl::StatusCode::kFailedPrecondition, "REPORT_ACCEPTANCE_CLOSED",
                   absl::StrCat("the report of ", o.name(), " was accepted automatically at ", when,
                                ", when its acceptance period ended; it can no longer be disputed"),
                   {{"accept_time", when}});
}

// The order leaves REPORT_DELIVERED (accepted, disputed): its deadline goes,
// and its sweep entry with it in the same step.
void LeaveReportDelivered(int partition, Order& order, std::vector<IndexOp>& index_ops) {
  if (!order.has_report_accept_deadline()) return;
  order.clear_report_accept_deadline();
  index_ops.push_back({keys::ReportDue(partition), IdOf(order.name()), true});
}

absl::Status SameCurrency(const Money& m, const std::string& currency, const std::string& field) {
  if (m.currency_code().empty() && m.amount_minor() == 0) return absl::OkStatus();
  LS_RETURN_IF_ERROR(labshare::inventory::ValidateMoney(m, field, true));
  if (m.currency_code() != currency) {
    return InvalidField(field + ".currency_code", "all amounts of a quote share one currency", "CURRENCY_MISMATCH");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status BookingManager::AuthorizeOrder(const char* method, const Principal& p, const std::string& name,
                                            absl::string_view field) {
  const std::string full = BookingMethod(method);
  // The role before the order is read (types.proto: checked before
  // validation): a role `method` never admits hears ROLE_NOT_ALLOWED whether
  // the order exists or not. The interceptor checked the RPC's own method;
  // CreateBooking's run is ScheduleService's, which it did not check.
  LS_RETURN_IF_ERROR(BookingPolicy().Check(full, p));
  if (BookingPolicy().ScopesOf(full, p) & kScopeAny) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(LoadedOrder cur, LoadOrder(name, field));
  return CheckScopeOn(method, p, *inventory_, cur.order.instrument(),
                      {cur.order.requester(), {cur.order.client_organization()}, {}});
}

absl::StatusOr<BookingManager::LoadedOrder> BookingManager::LoadOrder(const std::string& name,
                                                                      absl::string_view field) {
  LS_ASSIGN_OR_RETURN(auto stored,
                      LoadStored<Order>(name, "serviceOrders", keys::Order, "SERVICE_ORDER_NOT_FOUND", field));
  return LoadedOrder{std::move(stored.doc), stored.version, stored.partition};
}

absl::StatusOr<Order> BookingManager::OrderTransition(
    const Principal& p, absl::string_view method, const google::protobuf::Message& request, const std::string& name,
    const std::string& request_id,
    const std::function<absl::StatusOr<OrderChange>(const LoadedOrder&, absl::Time now)>& decide) {
  LS_ASSIGN_OR_RETURN(LoadedOrder cur, LoadOrder(name));
  const std::string idem = request_id.empty() ? "" : keys::Idempotency(cur.partition, method, request_id);
  const std::string fingerprint = RequestFingerprint(method, request, ActorName(p));
  // A request_id spans partitions (types.proto): claimed as for bookings.
  return Claimed<Order>(ClaimOf(p, method, request_id, request), [&] {
  return ReplayOrRetry<Order>(idem, fingerprint, "order", [&](int attempt) -> absl::StatusOr<std::optional<Order>> {
    if (attempt > 0) {
      LS_ASSIGN_OR_RETURN(cur, LoadOrder(name));
    }
    // One clock reading per attempt: update_time, what the change stamps
    // and the events' event_time.
    const absl::Time now = clock_->Now();
    LS_ASSIGN_OR_RETURN(OrderChange c, decide(cur, now));
    *c.order.mutable_update_time() = ToProto(now);
    c.order.set_etag(std::to_string(cur.version + 1));
    if (c.with_booking) {
      *c.booking.mutable_update_time() = ToProto(now);
      c.booking.set_etag(std::to_string(c.booking_version + 1));
    }
    for (auto& e : c.events) AttachSnapshot(e, request_id, c.booking, &c.order);
    const std::string order_key = keys::Order(cur.partition, IdOf(name));
    if (!c.with_booking) {
      Mutation m;
      m.idempotency_key = idem;
      m.fingerprint = fingerprint;
      m.response = SerializeDeterministic(c.order);
      m.writes.push_back({order_key, c.order.SerializeAsString(), cur.version});
      m.index_ops = c.index_ops;
      m.outbox_key = keys::Outbox(cur.partition);
      m.event_type = v1::BookingEvent::descriptor()->full_name();
      m.event_payload = c.events.front().SerializeAsString();
      LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
      return Settle(outcome, std::move(c.order));
    }
    UpdateStep step;
    step.partition = cur.partition;
    step.instrument_id = IdOf(c.booking.instrument());
    step.booking_id = IdOf(c.booking.name());
    step.idempotency_key = idem;
    step.fingerprint = fingerprint;
    step.booking = SerializeDeterministic(c.booking);
    step.busy_reason = BusyReasonOf(c.booking);
    step.response = SerializeDeterministic(c.order);
    step.expected_version = c.booking_version;
    step.extra_docs.push_back({order_key, c.order.SerializeAsString(), cur.version});
    step.calendar = c.calendar;
    step.blocked_start_ms = Ms(FromProto(c.booking.blocked_interval().start_time()));
    step.guard_from_ms = c.guard_from_ms;
    step.guard_to_ms = c.guard_to_ms;
    step.window_guard = c.window_guard;
    if (c.calendar == UpdateStep::Calendar::kRemove) step.due = UpdateStep::Due::kRemove;
    for (const auto& e : c.events) step.events.push_back(e.SerializeAsString());
    step.index_ops = c.index_ops;
    LS_ASSIGN_OR_RETURN(StepOutcome outcome, store_->Update(step));
    if (outcome.kind == StepOutcome::Kind::kWindowWithdrawn) return WindowWithdrawn();
    return Settle(outcome, std::move(c.order));
  }); });
}

// ================================================================ create and read

absl::StatusOr<Order> BookingManager::CreateServiceOrder(const Principal& p,
                                                         const v1::CreateServiceOrderRequest& r) {
  const Order& in = r.service_order();
  LS_ASSIGN_OR_RETURN(std::string instrument_id, ParseName(in.instrument(), "instruments", "service_order.instrument"));
  // Authorization before validation: for whom the caller orders.
  LS_RETURN_IF_ERROR(CheckScopeOn("CreateServiceOrder", p, *inventory_, in.instrument(),
                                  {in.requester().empty() ? ActorName(p) : in.requester(), {}, {}}));
  LS_RETURN_IF_ERROR(CheckOwnOrganization(p, in.client_organization(), "client"));
  // A request_id spans partitions (types.proto): claimed as for bookings.
  return Claimed<Order>(ClaimOf(p, "CreateServiceOrder", r.request_id(), r),
                        [&] { return PlaceServiceOrder(p, r, instrument_id); });
}

absl::StatusOr<Order> BookingManager::PlaceServiceOrder(const Principal& p, const v1::CreateServiceOrderRequest& r,
                                                        const std::string& instrument_id) {
  const Order& in = r.service_order();
  if (!r.service_order_id().empty()) LS_RETURN_IF_ERROR(CheckChosenId("service_order_id", r.service_order_id()));
  if (in.sample_count() < 1) return InvalidField("service_order.sample_count", "order at least one sample");
  const int partition = keys::Partition(instrument_id);
  const std::string idem =
      r.request_id().empty() ? "" : keys::Idempotency(partition, "CreateServiceOrder", r.request_id());
  const std::string fingerprint = RequestFingerprint("CreateServiceOrder", r, ActorName(p));
  // A refusal because the instrument changed since an order was placed: a
  // retry of that order still gets its first answer.
  const auto refused = [&](absl::Status refusal) -> absl::StatusOr<Order> {
    LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(idem, fingerprint));
    if (seen) return ParseAnswer<Order>(*seen);
    return refusal;
  };
  LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(in.instrument()));
  // For whom the caller orders first (authorization before validation; the
  // stored answer `refused` may give goes only to a caller who may order so).
  const bool privileged = p.HasRole(Role::kConsortiumAdmin) || IsOwnerStaff(p, *instrument);
  const std::string requester = in.requester().empty() ? "users/" + p.user_id : in.requester();
  if (!privileged && requester != "users/" + p.user_id) {
    return MakeError(absl::StatusCode::kPermissionDenied, "USER_SCOPE", "you may order only as yourself");
  }
  // Malformed names are named as the request names them (inventory's answer would say "name").
  LS_RETURN_IF_ERROR(ParseName(requester, "users", "service_order.requester").status());
  LS_ASSIGN_OR_RETURN(auto user, inventory_->User(requester));
  const std::string client = in.client_organization().empty() ? user->organization() : in.client_organization();
  if (!privileged && client != user->organization()) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "only the owner's staff or an administrator may order for another organisation");
  }
  LS_RETURN_IF_ERROR(ParseName(client, "organizations", "service_order.client_organization").status());
  // Required: a missing entry is a bad request, not an entry the catalogue lacks.
  if (in.service_entry_id().empty()) {
    return InvalidField("service_order.service_entry_id", "required: an entry of the instrument's service catalogue");
  }
  if (FindMode(*instrument, labshare::type::v1::TECHNICAL_SERVICE) == nullptr) {
    return refused(Precondition("MODE_NOT_OFFERED", in.instrument() + " offers no technical service"));
  }
  const bool known_entry = std::any_of(instrument->service_catalogue().begin(), instrument->service_catalogue().end(),
                                       [&](const auto& e) { return e.entry_id() == in.service_entry_id(); });
  if (!known_entry) {
    return refused(MakeError(absl::StatusCode::kNotFound, "SERVICE_ENTRY_NOT_FOUND",
                             absl::StrCat(in.instrument(), " has no catalogue entry '", in.service_entry_id(), "'")));
  }
  LS_ASSIGN_OR_RETURN(auto org, inventory_->Organization(client));
  // The instrument's access rules, for the client as payer (as for any
  // booking): no orders on an instrument out of service, nor from an
  // organisation its facility's access policy does not admit (the owner's
  // own are always admitted). A retry of an order placed before the rules
  // changed still gets its first answer.
  absl::Status access;
  if (user->disabled()) {
    access = Precondition("USER_DISABLED", requester + " is disabled; an administrator can enable the account");
  } else if (instrument->state() != inv::ACTIVE) {
    access = Precondition("INSTRUMENT_NOT_ACTIVE", absl::StrCat(in.instrument(), " is ",
                                                                inv::InstrumentState_Name(instrument->state()),
                                                                "; it takes no orders"));
  } else if (labshare::inventory::PayerClassFor(*org, *instrument) != labshare::type::v1::OWNER) {
    LS_ASSIGN_OR_RETURN(auto facility, inventory_->Facility(instrument->facility()));
    if (!labshare::inventory::PolicyAllows(labshare::inventory::EffectivePolicy(*instrument, *facility), *org)) {
      access = Precondition("ACCESS_POLICY_FORBIDS",
                            std::string(instrument->has_access_policy() ? "the instrument's" : "the facility's") +
                                " access policy does not admit " + client + " to order this service");
    }
  }
  if (!access.ok()) return refused(access);
  const std::string& chosen = r.service_order_id();
  const std::string id = chosen.empty() ? NewBookingId(partition) : chosen;
  const absl::Time now = clock_->Now();
  Order o;
  o.set_name("serviceOrders/" + id);
  o.set_instrument(in.instrument());
  o.set_instrument_owner(instrument->owner_organization());
  o.set_service_entry_id(in.service_entry_id());
  o.set_client_organization(client);
  o.set_requester(requester);
  o.set_sample_count(in.sample_count());
  o.set_sample_description(in.sample_description());
  if (in.has_requested_completion_time()) {  // unset: no wish (not the epoch)
    *o.mutable_requested_completion_time() = in.requested_completion_time();
  }
  o.set_state(Order::REQUESTED);
  o.set_payer_class(labshare::inventory::PayerClassFor(*org, *instrument));
  o.set_payer_tier(o.payer_class() == labshare::type::v1::MEMBER ? org->tier() : "");
  *o.mutable_create_time() = ToProto(now);
  *o.mutable_update_time() = ToProto(now);
  o.set_etag("1");
  v1::BookingEvent event = Event(p, r.request_id(), now);  // its create_time
  *event.mutable_service_order_created()->mutable_service_order() = o;
  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = SerializeDeterministic(o);
  m.writes.push_back({keys::Order(partition, id), o.SerializeAsString(), 0});
  m.index_ops = OrderListingOps(partition, o, instrument->operator_organization());
  m.outbox_key = keys::Outbox(partition);
  m.event_type = v1::BookingEvent::descriptor()->full_name();
  m.event_payload = event.SerializeAsString();
  auto exists = [&] {
    return MakeError(absl::StatusCode::kAlreadyExists, "SERVICE_ORDER_EXISTS", o.name() + " already exists");
  };
  bool reserved_id = false;
  if (!chosen.empty()) {
    // A retry of the same request gets its first answer; a taken id (by
    // any order, booking or lease: they share the id lookup) is an error.
    for (int i = 0; i < 2 && !reserved_id; ++i) {
      LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(m.idempotency_key, m.fingerprint));
      if (seen) return ParseAnswer<Order>(*seen);
      if (i == 1) return exists();
      LS_ASSIGN_OR_RETURN(reserved_id, store_->ReserveId(id, partition));
    }
  }
  // The operator the listing entries name must not be older than a change
  // the instrument's record re-filed or announced (as a create step checks,
  // BookingStore::CreateStep::operator_etag); the record is guarded.
  const std::string record = keys::ListOperator(partition, instrument_id);
  absl::StatusOr<CommitOutcome> committed = absl::AbortedError("not committed");
  for (int attempt = 0; attempt < 3; ++attempt) {  // the record moved meanwhile: read it again
    auto rec = store_->GetListingOperator(partition, instrument_id);
    if (!rec.ok()) {
      committed = rec.status();
      break;
    }
    int64_t read_etag = 0;
    if (absl::SimpleAtoi(instrument->etag(), &read_etag) &&
        rec->Outdates(instrument->operator_organization(), read_etag)) {
      auto seen = store_->FindReplay(m.idempotency_key, m.fingerprint);
      if (seen.ok() && *seen) {
        committed = CommitOutcome{CommitOutcome::Kind::kReplayed, **seen, "", ""};
      } else {
        committed = seen.ok() ? OperatorMoved(in.instrument()) : seen.status();
      }
      break;
    }
    m.guards = {{record, rec->version, false}};
    committed = store_->docs().Commit(m);
    if (!committed.ok() || committed->kind != CommitOutcome::Kind::kConflict || committed->conflict_key != record) {
      break;
    }
  }
  if (reserved_id && (!committed.ok() || committed->kind != CommitOutcome::Kind::kApplied)) {
    store_->ReleaseId(id).IgnoreError();  // best effort: the id was never used
  }
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, std::move(committed));
  if (outcome.kind == CommitOutcome::Kind::kConflict && outcome.conflict_key == record) {
    return OperatorMoved(in.instrument());
  }
  if (outcome.kind == CommitOutcome::Kind::kConflict) return exists();
  if (outcome.kind == CommitOutcome::Kind::kReplayed) {
    Order replay;
    replay.ParseFromString(outcome.response);
    return replay;
  }
  if (outcome.kind == CommitOutcome::Kind::kRequestReused) return RequestIdReused();
  return o;
}

absl::StatusOr<Order> BookingManager::GetServiceOrder(const Principal& p, const v1::GetServiceOrderRequest& r) {
  LS_ASSIGN_OR_RETURN(LoadedOrder cur, LoadOrder(r.name()));
  LS_RETURN_IF_ERROR(CheckScopeOn("GetServiceOrder", p, *inventory_, cur.order.instrument(),
                                  {cur.order.requester(), {cur.order.client_organization()}, {}}));
  return cur.order;
}

absl::StatusOr<v1::ListServiceOrdersResponse> BookingManager::ListServiceOrders(
    const Principal& p, const v1::ListServiceOrdersRequest& r) {
  LS_RETURN_IF_ERROR(CheckPageSize(r.page_size()));
  // Scoped as GetServiceOrder (booking_lists.h).
  const ListScope scope = ScopeOf(p);
  if (!r.client_organization().empty() && r.client_organization() != scope.org && !scope.all && !scope.staff) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "you may list only your own organisation's orders");
  }
  std::string instrument_id, client_id, owner_id;
  if (!r.instrument().empty()) {
    LS_ASSIGN_OR_RETURN(instrument_id, ParseName(r.instrument(), "instruments", "instrument"));
  }
  if (!r.client_organization().empty()) {
    LS_ASSIGN_OR_RETURN(client_id, ParseName(r.client_organization(), "organizations", "client_organization"));
  }
  if (!r.instrument_owner().empty()) {
    LS_ASSIGN_OR_RETURN(owner_id, ParseName(r.instrument_owner(), "organizations", "instrument_owner"));
  }
  for (int i = 0; i < r.states_size(); ++i) {  // an entry is named by its index
    const int s = r.states(i);
    if (s == 0 || !Order::State_IsValid(s)) return InvalidField(absl::StrCat("states[", i, "]"), "not an order state");
  }
  LS_ASSIGN_OR_RETURN(bool descending, ParseOrderBy(r.order_by(), "create_time", true));
  const auto& range = r.create_time_range();
  if (r.has_create_time_range() && (!range.has_start_time() || !range.has_end_time() ||
                                    FromProto(range.end_time()) <= FromProto(range.start_time()))) {
    return InvalidField("create_time_range", "needs start_time before end_time (half-open [start, end))",
                        "INVALID_INTERVAL");
  }
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  ListQuery q;
  q.descending = descending;
  q.doc_key = keys::Order;
  q.page_size = page.page_size;
  q.after = page.after;
  if (r.has_create_time_range()) {  // create time never changes: the bounds are exact
    q.lo_ms = Ms(FromProto(range.start_time()));
    q.hi_ms = Ms(FromProto(range.end_time())) + 1;  // whole milliseconds; exact below
  }
  constexpr bool kLex = true;  // DocStore's index shape
  if (!instrument_id.empty()) {
    const int part = keys::Partition(instrument_id);
    q.candidates.push_back({{part, keys::ListBy(part, 'o', "instr", instrument_id), kLex}});
  }
  if (!client_id.empty()) q.candidates.push_back(EveryPartition('o', "org", client_id, kLex));
  if (!owner_id.empty()) q.candidates.push_back(EveryPartition('o', "org", owner_id, kLex));
  if (scope.all) {
    q.candidates.push_back(EveryPartition('o', "", "", kLex));
  } else if (!scope.org.empty()) {
    q.candidates.push_back(EveryPartition('o', "org", IdOf(scope.org), kLex));
  } else {
    q.candidates.push_back({});
  }
  OwnsOrOperates operates(inventory_, scope.org);
  v1::ListServiceOrdersResponse resp;
  auto take = [&](const std::string& data) -> absl::StatusOr<bool> {
    Order o;
    if (!o.ParseFromString(data)) {  // as ListBookings: damaged data is an error, never a shorter page
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored service order is unreadable");
    }
    if (!r.instrument().empty() && o.instrument() != r.instrument()) return false;
    if (!r.client_organization().empty() && o.client_organization() != r.client_organization()) return false;
    if (!r.instrument_owner().empty() && o.instrument_owner() != r.instrument_owner()) return false;
    if (!r.states().empty() && std::find(r.states().begin(), r.states().end(), o.state()) == r.states().end()) {
      return false;
    }
    if (r.has_create_time_range() && (FromProto(o.create_time()) < FromProto(range.start_time()) ||
                                      FromProto(o.create_time()) >= FromProto(range.end_time()))) {
      return false;
    }
    bool visible = scope.all || (!scope.org.empty() && o.client_organization() == scope.org &&
                                 (scope.lab_user || scope.billing || scope.staff));
    if (!visible && scope.staff && !scope.org.empty()) {
      if (o.instrument_owner() == scope.org) {
        visible = true;
      } else {
        LS_ASSIGN_OR_RETURN(visible, operates(o.instrument()));
      }
    }
    if (!visible) return false;
    *resp.add_service_orders() = std::move(o);
    return true;
  };
  LS_ASSIGN_OR_RETURN(std::string next, RunListing(*store_, q, take));
  if (!next.empty()) resp.set_next_page_token(page_tokens_.Make(r, p, next));
  return resp;
}

// ================================================================ quote and samples

namespace {
absl::Status OwnerStaffOnly(const Principal& p, const inv::Instrument& in) {
  if (IsOwnerStaff(p, in)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   "only the staff of the instrument's owner or operator may do this");
}
}  // namespace

absl::StatusOr<Order> BookingManager::IssueQuote(const Principal& p, const v1::IssueQuoteRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("IssueQuote", p, r.name()));
  const v1::Quote& q = r.quote();
  LS_RETURN_IF_ERROR(labshare::inventory::ValidateMoney(q.per_sample_fee(), "quote.per_sample_fee", true));
  const std::string currency = q.per_sample_fee().currency_code();
  LS_RETURN_IF_ERROR(SameCurrency(q.staff_time_fee(), currency, "quote.staff_time_fee"));
  LS_RETURN_IF_ERROR(SameCurrency(q.consumables(), currency, "quote.consumables"));
  if (FromProto(q.staff_time()) < absl::ZeroDuration()) {
    return InvalidField("quote.staff_time", "planned staff time must not be negative");
  }
  if (!q.has_valid_until()) return InvalidField("quote.valid_until", "required: until when the quote may be accepted");
  return OrderTransition(p, "IssueQuote", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(cur.order.instrument()));
    LS_RETURN_IF_ERROR(OwnerStaffOnly(p, *instrument));
    // Checked once the stored answer was looked up: a retry after
    // valid_until has passed still gets its first answer.
    if (FromProto(q.valid_until()) <= now) {
      return InvalidField("quote.valid_until", "must be in the future");
    }
    if (!r.etag().empty() && r.etag() != std::to_string(cur.version)) {
      return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", "the order changed; read it again");
    }
    const auto s = cur.order.state();
    if (s != Order::REQUESTED && s != Order::QUOTED && s != Order::QUOTE_ACCEPTED) {
      return OrderState(cur.order, "REQUESTED, QUOTED or QUOTE_ACCEPTED");
    }
    // Each amount is within the input limits, their total may not be (an
    // int64 product could even overflow): it must be a Money as well.
    const __int128 total = static_cast<__int128>(q.per_sample_fee().amount_minor()) * cur.order.sample_count() +
                           q.staff_time_fee().amount_minor() + q.consumables().amount_minor();
    if (total > kMaxAmountMinor) {
      return InvalidField("quote.per_sample_fee", absl::StrCat("the total for ", cur.order.sample_count(),
                                                               " samples would exceed ", kMaxAmountMinor,
                                                               " minor units"));
    }
    OrderChange c;
    c.order = cur.order;
    v1::Quote* quote = c.order.mutable_quote();
    *quote = q;
    quote->mutable_staff_time_fee()->set_currency_code(currency);
    quote->mutable_consumables()->set_currency_code(currency);
    quote->mutable_total()->set_currency_code(currency);
    quote->mutable_total()->set_amount_minor(static_cast<int64_t>(total));
    quote->set_quoted_by(ActorName(p));
    *quote->mutable_quote_time() = ToProto(now);
    quote->set_quote_etag(NewEventId().substr(0, 16));
    c.order.set_state(Order::QUOTED);
    c.order.clear_quote_accept_time();  // a re-quote is accepted anew
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_service_order_quoted();
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<Order> BookingManager::AcceptQuote(const Principal& p, const v1::AcceptQuoteRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("AcceptQuote", p, r.name()));
  return OrderTransition(p, "AcceptQuote", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_RETURN_IF_ERROR(ClientOnly(p, cur.order));
    if (cur.order.state() != Order::QUOTED) return OrderState(cur.order, "QUOTED");
    if (r.quote_etag() != cur.order.quote().quote_etag()) {
      return InvalidField("quote_etag", "does not name the current quote; read the order again");
    }
    if (now >= FromProto(cur.order.quote().valid_until())) {  // valid over [quote_time, valid_until)
      return Precondition("QUOTE_EXPIRED", "the quote is no longer valid; ask for a new one");
    }
    OrderChange c;
    c.order = cur.order;
    c.order.set_state(Order::QUOTE_ACCEPTED);
    *c.order.mutable_quote_accept_time() = ToProto(now);
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_service_order_quote_accepted();
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<Order> BookingManager::ReceiveSamples(const Principal& p, const v1::ReceiveSamplesRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("ReceiveSamples", p, r.name()));
  if (r.received_sample_count() < 1) return InvalidField("received_sample_count", "at least one sample arrives");
  if (r.has_receive_time() && FromProto(r.receive_time()) > clock_->Now()) {
    return InvalidField("receive_time", "must not be in the future");
  }
  return OrderTransition(p, "ReceiveSamples", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(cur.order.instrument()));
    LS_RETURN_IF_ERROR(OwnerStaffOnly(p, *instrument));
    if (cur.order.state() != Order::QUOTE_ACCEPTED) return OrderState(cur.order, "QUOTE_ACCEPTED");
    if (r.received_sample_count() != cur.order.sample_count()) {
      return Precondition("SAMPLE_COUNT_MISMATCH",
                          absl::StrCat(r.received_sample_count(), " samples arrived but ", cur.order.sample_count(),
                                       " were quoted; re-quote first"));
    }
    OrderChange c;
    c.order = cur.order;
    c.order.set_state(Order::SAMPLES_RECEIVED);
    c.order.set_received_sample_count(r.received_sample_count());
    *c.order.mutable_samples_receive_time() = r.has_receive_time() ? r.receive_time() : ToProto(now);
    c.order.set_sample_condition_notes(r.condition_notes());
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_service_order_samples_received();
    c.events.push_back(std::move(e));
    return c;
  });
}

// ================================================================ the run

absl::StatusOr<Order> BookingManager::ScheduleService(const Principal& p, const v1::ScheduleServiceRequest& r) {
  // Authorized before its request_id is claimed (across partitions, as for
  // bookings); ScheduleRun checks again (CreateBooking comes there directly).
  LS_RETURN_IF_ERROR(AuthorizeOrder("ScheduleService", p, r.name()));
  return Claimed<Order>(ClaimOf(p, "ScheduleService", r.request_id(), r),
                        [&] { return ScheduleRun(p, r, "ScheduleService", r, false, nullptr); });
}

absl::StatusOr<Order> BookingManager::ScheduleRun(const Principal& p, const v1::ScheduleServiceRequest& r,
                                                  absl::string_view method, const google::protobuf::Message& request,
                                                  bool validate_only, v1::Booking* booking_answer) {
  // CreateBooking (mode TECHNICAL_SERVICE) books the run of an order in
  // SAMPLES_RECEIVED only, may preview it, and answers the booking (and
  // names its own fields: booking.service_order is the order's name).
  const bool as_booking = booking_answer != nullptr;
  const absl::string_view order_field = as_booking ? "booking.service_order" : "name";
  LS_RETURN_IF_ERROR(AuthorizeOrder("ScheduleService", p, r.name(), order_field));
  const auto& interval = r.interval();
  if (!interval.has_start_time() || !interval.has_end_time() ||
      FromProto(interval.end_time()) <= FromProto(interval.start_time())) {
    return InvalidField(as_booking ? "booking.reserved_interval" : "interval", "needs start_time before end_time",
                        "INVALID_INTERVAL");
  }
  LS_ASSIGN_OR_RETURN(LoadedOrder cur, LoadOrder(r.name(), order_field));
  LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(cur.order.instrument()));
  LS_RETURN_IF_ERROR(OwnerStaffOnly(p, *instrument));
  const std::string idem =
      r.request_id().empty() || validate_only ? "" : keys::Idempotency(cur.partition, method, r.request_id());
  const std::string fingerprint = RequestFingerprint(method, request, ActorName(p));
  // The first answer: the order, or for CreateBooking the run as created.
  const auto replayed = [&](const std::string& bytes) -> absl::StatusOr<Order> {
    Order first;
    if (!(as_booking ? booking_answer->ParseFromString(bytes) : first.ParseFromString(bytes))) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored answer is unreadable");
    }
    return first;
  };
  LS_ASSIGN_OR_RETURN(auto seen, store_->FindReplay(idem, fingerprint));
  if (seen) return replayed(*seen);
  // In SCHEDULED the run moves: its booking (not started) is cancelled
  // without charge and the new one created in the same step.
  const bool reschedule = !as_booking && cur.order.state() == Order::SCHEDULED;
  if (cur.order.state() != Order::SAMPLES_RECEIVED && !reschedule) {
    if (as_booking && !idem.empty()) {
      // A version before CreateBooking kept its own record booked the run
      // through ScheduleService, under that method's record (the order as
      // answered): a retry across the upgrade finds it there and answers
      // the run, as it is now. Another request's record under that key
      // (request_ids are per method) is not this one's.
      auto older = store_->FindReplay(keys::Idempotency(cur.partition, "ScheduleService", r.request_id()),
                                      RequestFingerprint("ScheduleService", r, ActorName(p)));
      if (!older.ok() && ErrorReason(older.status()) != "REQUEST_ID_REUSED") return older.status();
      if (older.ok() && *older) {
        Order first;
        if (!first.ParseFromString(**older)) {
          return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored answer is unreadable");
        }
        LS_ASSIGN_OR_RETURN(Loaded run, Load(first.booking()));
        *booking_answer = std::move(run.booking);
        return first;
      }
    }
    return OrderState(cur.order, as_booking ? "SAMPLES_RECEIVED" : "SAMPLES_RECEIVED or SCHEDULED");
  }
  Loaded previous;
  if (reschedule) {
    LS_ASSIGN_OR_RETURN(previous, Load(cur.order.booking()));
    if (previous.booking.state() != v1::Booking::CONFIRMED) {
      return OrderState(cur.order, "a run not started yet");
    }
  }
  const std::string operator_user = r.operator_user().empty() ? "users/" + p.user_id : r.operator_user();
  // Named as the request names it (inventory's answer would say "name").
  LS_RETURN_IF_ERROR(
      ParseName(operator_user, "users", as_booking ? "booking.operator_user" : "operator_user").status());
  LS_ASSIGN_OR_RETURN(auto op, inventory_->User(operator_user));
  const bool staff = std::find(op->roles().begin(), op->roles().end(), labshare::type::v1::FACILITY_STAFF) != op->roles().end();
  if (!staff || (op->organization() != instrument->owner_organization() &&
                 op->organization() != instrument->operator_organization())) {
    return Precondition("OPERATOR_NOT_STAFF", operator_user + " is not staff of the instrument's owner or operator");
  }
  if (op->disabled()) {
    return Precondition("USER_DISABLED", operator_user + " is disabled; name another operator");
  }
  // The same rules as any booking, for the client as payer.
  LS_ASSIGN_OR_RETURN(auto requester, inventory_->User(cur.order.requester()));
  LS_ASSIGN_OR_RETURN(auto client, inventory_->Organization(cur.order.client_organization()));
  LS_ASSIGN_OR_RETURN(auto facility, inventory_->Facility(instrument->facility()));
  LS_ASSIGN_OR_RETURN(auto rates, inventory_->Rates(cur.order.instrument()));
  LS_ASSIGN_OR_RETURN(auto windows, inventory_->Windows(cur.order.instrument()));
  labshare::inventory::AccessFacts facts;
  facts.user = requester.get();
  facts.payer = client.get();
  facts.instrument = instrument.get();
  facts.facility = facility.get();
  facts.rates.assign(rates->rates().begin(), rates->rates().end());
  facts.windows.assign(windows->maintenance_windows().begin(), windows->maintenance_windows().end());
  // A scheduled window over the run's buffer too (SlotRules.buffer).
  facts.has_blocked = true;
  facts.blocked_start = FromProto(interval.start_time());
  facts.blocked_end = FromProto(interval.end_time()) +
                      FromProto(labshare::inventory::SlotRulesOf(*instrument, labshare::type::v1::TECHNICAL_SERVICE).buffer());
  inv::CheckAccessRequest check;
  check.set_user(cur.order.requester());
  check.set_instrument(cur.order.instrument());
  check.set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  *check.mutable_interval() = interval;
  check.set_payer_organization(cur.order.client_organization());
  check.set_service_entry_id(cur.order.service_entry_id());
  const absl::Time now = clock_->Now();
  const inv::CheckAccessResponse access = EvaluateAccess(facts, check, now);
  for (const auto& d : access.denials()) {
    if (d.code() == inv::NO_RATE) continue;  // the quote, not the rate card, prices the run
    return Precondition(d.code() == inv::DURING_MAINTENANCE ? "MAINTENANCE_CONFLICT" : inv::DenialCode_Name(d.code()),
                        d.message());
  }
  const inv::ModeOffering* offering = FindMode(*instrument, labshare::type::v1::TECHNICAL_SERVICE);
  const absl::Time start = FromProto(interval.start_time());
  const absl::Time end = FromProto(interval.end_time());
  const absl::Time blocked_end = end + FromProto(offering->slot_rules().buffer());
  std::string booking_id = NewBookingId(cur.partition);
  bool reserved_id = false;
  if (!r.booking_id().empty()) {
    LS_RETURN_IF_ERROR(CheckChosenId("booking_id", r.booking_id()));
    booking_id = r.booking_id();
    if (validate_only) {
      LS_ASSIGN_OR_RETURN(auto taken, store_->PartitionOf(booking_id));
      reserved_id = !taken;
    } else {
      LS_ASSIGN_OR_RETURN(reserved_id, store_->ReserveId(booking_id, cur.partition));
    }
    if (!reserved_id) {
      return MakeError(absl::StatusCode::kAlreadyExists, "BOOKING_EXISTS", "bookings/" + booking_id + " already exists");
    }
  }
  v1::Booking b;
  b.set_name("bookings/" + booking_id);
  b.set_instrument(cur.order.instrument());
  b.set_instrument_owner(instrument->owner_organization());
  b.set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  b.set_user(cur.order.requester());
  b.set_user_organization(requester->organization());
  b.set_payer_organization(cur.order.client_organization());
  *b.mutable_reserved_interval() = interval;
  *b.mutable_blocked_interval()->mutable_start_time() = ToProto(start);
  *b.mutable_blocked_interval()->mutable_end_time() = ToProto(blocked_end);
  b.set_state(v1::Booking::CONFIRMED);
  b.set_service_order(cur.order.name());
  b.set_operator_user(operator_user);
  b.set_sample_count(cur.order.received_sample_count());
  b.set_payer_class(cur.order.payer_class());
  b.set_payer_tier(cur.order.payer_tier());
  if (request.GetDescriptor() == v1::CreateBookingRequest::descriptor()) {
    // CreateBooking's settable purpose (ScheduleService has none).
    b.set_purpose(static_cast<const v1::CreateBookingRequest&>(request).booking().purpose());
  }
  *b.mutable_create_time() = ToProto(now);
  *b.mutable_update_time() = ToProto(now);
  b.set_etag("1");
  if (validate_only) {
    // The step's checks, read rather than written: the slot.
    LS_ASSIGN_OR_RETURN(auto taken, store_->CalendarRange(cur.partition, IdOf(cur.order.instrument()), Ms(start),
                                                          CeilMs(blocked_end)));
    if (!taken.empty()) {
      // Named as the step names it: by the last entry in the way.
      if (IsWindowEntry(taken.back().booking_id)) {
        return Precondition("MAINTENANCE_CONFLICT", "the run overlaps a maintenance window");
      }
      return Precondition("SLOT_TAKEN", "the run overlaps another booking of this instrument");
    }
    *booking_answer = std::move(b);
    booking_answer->clear_name();
    return cur.order;
  }
  Order o = cur.order;
  o.set_state(Order::SCHEDULED);
  o.set_booking(b.name());
  *o.mutable_scheduled_interval() = interval;
  o.set_operator_user(operator_user);
  *o.mutable_update_time() = ToProto(now);
  o.set_etag(std::to_string(cur.version + 1));
  CreateStep step;
  std::vector<std::string> events;
  if (reschedule) {
    v1::Booking old = previous.booking;
    old.set_state(v1::Booking::CANCELLED);
    auto* cancel = old.mutable_cancellation();
    *cancel->mutable_cancel_time() = ToProto(now);
    cancel->set_cancelled_by(ActorName(p));
    cancel->set_initiator(v1::Booking::PARENT_RESOURCE);  // its order was rescheduled
    cancel->set_reason("service run rescheduled to " + b.name());
    *old.mutable_update_time() = ToProto(now);
    old.set_etag(std::to_string(previous.version + 1));
    step.replaces_booking_id = IdOf(old.name());
    step.replaces_start_ms = Ms(FromProto(old.blocked_interval().start_time()));
    step.extra_docs.push_back({keys::Booking(cur.partition, IdOf(old.name())), SerializeDeterministic(old),
                               previous.version});
    v1::BookingEvent cancelled = Event(p, r.request_id(), now);
    cancelled.mutable_booking_cancelled()->set_previous_state(v1::Booking::CONFIRMED);
    cancelled.mutable_booking_cancelled()->set_initiator(v1::Booking::PARENT_RESOURCE);
    AttachSnapshot(cancelled, r.request_id(), old);
    events.push_back(cancelled.SerializeAsString());
  }
  step.partition = cur.partition;
  step.instrument_id = IdOf(cur.order.instrument());
  step.booking_id = booking_id;
  step.idempotency_key = idem;
  step.fingerprint = fingerprint;
  step.booking = SerializeDeterministic(b);
  step.busy_reason = BusyReasonOf(b);
  step.response = as_booking ? SerializeDeterministic(b) : SerializeDeterministic(o);
  step.blocked_start_ms = Ms(start);
  step.blocked_end_ms = CeilMs(blocked_end);
  step.reserved_start_ms = Ms(start);
  step.extra_docs.push_back({keys::Order(cur.partition, IdOf(o.name())), o.SerializeAsString(), cur.version});
  step.listing_keys = BookingListingKeys(cur.partition, b, instrument->operator_organization());
  NameOperator(*instrument, &step);
  // The run's create_time, the order's (and a replaced run's) update_time.
  v1::BookingEvent created = Event(p, r.request_id(), now);
  *created.mutable_booking_created()->mutable_booking() = b;
  v1::BookingEvent scheduled = Event(p, r.request_id(), now);
  *scheduled.mutable_service_order_scheduled()->mutable_service_order() = o;
  if (reschedule) scheduled.mutable_service_order_scheduled()->set_previous_booking(previous.booking.name());
  events.push_back(created.SerializeAsString());  // the run is CONFIRMED from the start
  events.push_back(scheduled.SerializeAsString());
  step.events = std::move(events);
  absl::StatusOr<StepOutcome> stepped = store_->Create(step);
  if (reserved_id && (!stepped.ok() || stepped->kind != StepOutcome::Kind::kApplied)) {
    store_->ReleaseId(booking_id).IgnoreError();  // best effort: the id was never used
  }
  LS_ASSIGN_OR_RETURN(StepOutcome outcome, std::move(stepped));
  switch (outcome.kind) {
    case StepOutcome::Kind::kApplied:
      if (as_booking) *booking_answer = std::move(b);
      return o;
    case StepOutcome::Kind::kReplayed: return replayed(outcome.response);
    case StepOutcome::Kind::kRequestReused: return RequestIdReused();
    case StepOutcome::Kind::kSlotTaken:
      if (IsWindowEntry(outcome.conflicting)) return Precondition("MAINTENANCE_CONFLICT", "the run overlaps a maintenance window");
      return Precondition("SLOT_TAKEN", "the run overlaps another booking of this instrument");
    case StepOutcome::Kind::kConflict:
      return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                       "the order changed while scheduling; retry with the same request_id");
    case StepOutcome::Kind::kOperatorMoved: return OperatorMoved(b.instrument());
    default: break;
  }
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage outcome");
}

absl::StatusOr<Order> BookingManager::UnscheduleForOutage(const Principal& p, const std::string& name,
                                                          const std::string& run_name,
                                                          const inv::MaintenanceWindow& window,
                                                          const std::string& event_request_id) {
  v1::GetServiceOrderRequest key;
  key.set_name(name);
  return UnscheduleRun(p, "ApplyMaintenanceWindow", key, name, "", run_name, "", &window, event_request_id);
}

absl::StatusOr<Order> BookingManager::UnscheduleRun(const Principal& p, absl::string_view method,
                                                    const google::protobuf::Message& request,
                                                    const std::string& name, const std::string& request_id,
                                                    const std::string& run_name, const std::string& reason,
                                                    const inv::MaintenanceWindow* window,
                                                    const std::string& event_request_id) {
  const bool outage = window != nullptr;
  const std::string& stamped = event_request_id.empty() ? request_id : event_request_id;
  return OrderTransition(p, method, request, name, request_id, [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_ASSIGN_OR_RETURN(Loaded run, Load(run_name));
    if (cur.order.state() != Order::SCHEDULED || cur.order.booking() != run_name ||
        run.booking.state() != v1::Booking::CONFIRMED) {
      // CancelBooking's answer: the run is no longer a CONFIRMED run of its
      // order. An outage leaves such a run to ApplyMaintenanceWindow's
      // handling of what it is now (a session checked in is checked out).
      const std::string state = v1::Booking::State_Name(run.booking.state());
      return MakeError(absl::StatusCode::kFailedPrecondition, "BOOKING_STATE",
                       absl::StrCat(run_name, " is ", state, " (", cur.order.name(), " ",
                                    Order::State_Name(cur.order.state()), "); only a run not started yet is cancelled"),
                       {{"state", state}});
    }
    OrderChange c;
    c.order = cur.order;
    c.order.set_state(Order::SAMPLES_RECEIVED);
    // No run, no operator: the next ScheduleService names one again.
    c.order.clear_booking();
    c.order.clear_scheduled_interval();
    c.order.clear_operator_user();
    c.with_booking = true;
    c.booking = run.booking;
    c.booking_version = run.version;
    c.calendar = UpdateStep::Calendar::kRemove;
    if (outage) c.window_guard = IdOf(window->name());
    c.booking.set_state(v1::Booking::CANCELLED);
    c.booking.set_cancelled_by_outage(outage);
    const auto initiator = outage                              ? v1::Booking::MAINTENANCE_OUTAGE
                           : p.HasRole(Role::kConsortiumAdmin) ? v1::Booking::PLATFORM_ADMIN
                                                               : v1::Booking::OWNER_STAFF;
    auto* cancel = c.booking.mutable_cancellation();
    *cancel->mutable_cancel_time() = ToProto(now);
    cancel->set_cancelled_by(ActorName(p));
    cancel->set_initiator(initiator);
    cancel->set_reason(outage ? window->reason() : reason);
    if (outage) cancel->set_maintenance_window(window->name());
    v1::BookingEvent cancelled = Event(p, stamped, now);
    auto* bc = cancelled.mutable_booking_cancelled();
    bc->set_previous_state(run.booking.state());
    bc->set_cancelled_by_outage(outage);
    bc->set_initiator(initiator);
    if (outage) bc->set_maintenance_window(window->name());
    v1::BookingEvent unscheduled = Event(p, stamped, now);
    unscheduled.mutable_service_order_unscheduled()->set_cancelled_booking(run.booking.name());
    unscheduled.mutable_service_order_unscheduled()->set_cancelled_by_outage(outage);
    c.events = {std::move(cancelled), std::move(unscheduled)};
    return c;
  });
}

absl::StatusOr<v1::Booking> BookingManager::CancelRun(const Principal& p, const v1::CancelBookingRequest& r,
                                                     const v1::Booking& run) {
  LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(run.instrument()));
  // Not the client's side: it cancels the order. An administrator may act
  // for the owner, as everywhere.
  if (!p.HasRole(Role::kConsortiumAdmin) && !IsOwnerStaff(p, *instrument)) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     absl::StrCat(run.name(), " is the run of ", run.service_order(),
                                  "; only the owner's staff cancel a run (the client cancels the order with "
                                  "CancelOrder)"));
  }
  LS_RETURN_IF_ERROR(
      UnscheduleRun(p, "CancelBooking", r, run.service_order(), r.request_id(), run.name(), r.reason(), nullptr)
          .status());
  LS_ASSIGN_OR_RETURN(Loaded after, Load(run.name()));  // cancelled is final: a retry reads the same
  return after.booking;
}

absl::StatusOr<Order> BookingManager::StartService(const Principal& p, const v1::StartServiceRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("StartService", p, r.name()));
  return OrderTransition(p, "StartService", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(cur.order.instrument()));
    LS_RETURN_IF_ERROR(OwnerStaffOnly(p, *instrument));
    if (cur.order.state() != Order::SCHEDULED) return OrderState(cur.order, "SCHEDULED");
    LS_ASSIGN_OR_RETURN(Loaded run, Load(cur.order.booking()));
    // Checked in already (CheckIn on the run, in its window): the run has
    // started and its session stands. Checked out already (CheckIn and
    // CheckOut before StartService): the run is over, its session stands
    // too, and the order goes on to its report (it could not be cancelled).
    const bool checked_in = run.booking.state() == v1::Booking::CHECKED_IN ||
                            run.booking.state() == v1::Booking::COMPLETED;
    if (!checked_in && run.booking.state() != v1::Booking::CONFIRMED) {
      return OrderState(cur.order, absl::StrCat("a run not ended yet (", run.booking.name(), " is ",
                                                v1::Booking::State_Name(run.booking.state()), ")"));
    }
    OrderChange c;
    c.order = cur.order;
    c.order.set_state(Order::IN_PROGRESS);
    if (!checked_in) {
      // Starting is checking the run in: only on an instrument in service. A
      // run checked in (or out) already keeps its session whatever the
      // instrument's state since, so its order can go on to its report.
      if (instrument->state() != inv::ACTIVE) {
        return Precondition("INSTRUMENT_NOT_ACTIVE", "the instrument is not in service");
      }
      const absl::Time start = FromProto(run.booking.reserved_interval().start_time());
      // CheckIn's window [opens, closes): from the later of the run's
      // buffer (the one in force when it was scheduled) before its start
      // and the end of the previous entry's blocked interval, until the
      // earlier of the run's start + no_show_grace and its end (without a
      // grace period, until its end), that moment excluded.
      const inv::SlotRules& rules = SlotRulesOf(*instrument, labshare::type::v1::TECHNICAL_SERVICE);
      absl::Time opens = start - BookingBuffer(run.booking);
      LS_ASSIGN_OR_RETURN(auto before, store_->CalendarRange(cur.partition, IdOf(cur.order.instrument()), Ms(opens),
                                                             Ms(start)));
      for (const auto& e : before) {
        if (e.booking_id != IdOf(run.booking.name()) && e.start_ms < Ms(start)) {
          opens = std::max(opens, FromMs(e.end_ms));
        }
      }
      if (now < opens) {
        return Precondition("CHECK_IN_TOO_EARLY", absl::StrCat("the run may start from ", absl::FormatTime(opens)));
      }
      if (now >= CheckInCloses(run.booking, FromProto(rules.no_show_grace()))) {
        return Precondition("CHECK_IN_WINDOW_CLOSED", "the run's check-in window has closed; schedule it again");
      }
      c.with_booking = true;
      c.booking = run.booking;
      c.booking_version = run.version;
      c.booking.set_state(v1::Booking::CHECKED_IN);
      auto* session = c.booking.mutable_session();  // as CheckIn
      *session->mutable_start_time() = ToProto(now);
      session->set_checked_in_by(ActorName(p));
      c.events.emplace_back(Event(p, r.request_id(), now));
      c.events.back().mutable_booking_checked_in();
    }
    v1::BookingEvent started = Event(p, r.request_id(), now);
    started.mutable_service_order_started();
    c.events.push_back(std::move(started));
    return c;
  });
}

absl::StatusOr<Order> BookingManager::DeliverReport(const Principal& p, const v1::DeliverReportRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("DeliverReport", p, r.name()));
  if (r.report().uri().empty()) return InvalidField("report.uri", "say where the report is stored");
  // Optional; when given, the hex SHA-256 of the report file.
  const std::string& sha256 = r.report().sha256();
  if (!sha256.empty() && (sha256.size() != 64 || !std::all_of(sha256.begin(), sha256.end(), [](char ch) {
                            return absl::ascii_isxdigit(static_cast<unsigned char>(ch));
                          }))) {
    return InvalidField("report.sha256", "give the report file's SHA-256 as 64 hex digits, or leave it empty");
  }
  return OrderTransition(p, "DeliverReport", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(cur.order.instrument()));
    LS_RETURN_IF_ERROR(OwnerStaffOnly(p, *instrument));
    if (cur.order.state() != Order::IN_PROGRESS && cur.order.state() != Order::DISPUTED) {
      return OrderState(cur.order, "IN_PROGRESS or DISPUTED");
    }
    OrderChange c;
    c.order = cur.order;
    c.order.set_state(Order::REPORT_DELIVERED);
    auto* report = c.order.add_reports();
    *report = r.report();
    *report->mutable_deliver_time() = ToProto(now);
    report->set_delivered_by(ActorName(p));
    // The acceptance period in force now, pinned as the report's deadline
    // (a later change of the rule leaves it), and the sweep's entry for it
    // in the same step (a revised report's moves to its new deadline).
    c.order.clear_report_accept_deadline();
    const absl::Duration period =
        FromProto(SlotRulesOf(*instrument, labshare::type::v1::TECHNICAL_SERVICE).report_acceptance_period());
    if (period > absl::ZeroDuration()) {
      const absl::Time deadline = now + period;
      *c.order.mutable_report_accept_deadline() = ToProto(deadline);
      c.index_ops.push_back({keys::ReportDue(cur.partition), IdOf(cur.order.name()), false, CeilMs(deadline)});
    }
    v1::BookingEvent delivered = Event(p, r.request_id(), now);
    delivered.mutable_service_order_report_delivered();
    LS_ASSIGN_OR_RETURN(Loaded run, Load(cur.order.booking()));
    if (run.booking.state() == v1::Booking::CHECKED_IN) {
      // The run ends with its report at the latest; as a check-out, the
      // session never runs into the next entry on the calendar (CheckOut).
      absl::Time end = now;
      LS_ASSIGN_OR_RETURN(auto next, store_->NextCalendarStart(
                                         cur.partition, IdOf(run.booking.instrument()),
                                         Ms(FromProto(run.booking.blocked_interval().start_time())),
                                         IdOf(run.booking.name())));
      const bool clamped = next && FromMs(*next) < end;
      if (clamped) end = std::max(FromMs(*next), FromProto(run.booking.session().start_time()));
      c.with_booking = true;
      c.booking = run.booking;
      c.booking_version = run.version;
      c.booking.set_state(v1::Booking::COMPLETED);
      *c.booking.mutable_session()->mutable_end_time() = ToProto(end);
      c.booking.mutable_session()->set_checked_out_by(ActorName(p));
      c.booking.mutable_session()->set_end_clamped(clamped);
      // No booking may have slipped in before the recorded end.
      c.guard_from_ms = Ms(FromProto(run.booking.blocked_interval().start_time()));
      c.guard_to_ms = CeilMs(end);
      v1::BookingEvent checked_out = Event(p, r.request_id(), now);
      checked_out.mutable_booking_checked_out();
      c.events.push_back(std::move(checked_out));
    }
    c.events.push_back(std::move(delivered));
    if (!c.with_booking) c.events = {c.events.back()};
    return c;
  });
}

absl::StatusOr<Order> BookingManager::AcceptReport(const Principal& p, const v1::AcceptReportRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("AcceptReport", p, r.name()));
  return OrderTransition(p, "AcceptReport", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_RETURN_IF_ERROR(ClientOnly(p, cur.order));
    if (cur.order.state() != Order::REPORT_DELIVERED) return OrderState(cur.order, "REPORT_DELIVERED");
    // At or after the deadline too, until the sweep has accepted it: the
    // client agrees anyway (accepted now, by the client).
    OrderChange c;
    c.order = cur.order;
    c.order.set_state(Order::COMPLETED);
    *c.order.mutable_report_accept_time() = ToProto(now);
    LeaveReportDelivered(cur.partition, c.order, c.index_ops);
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_service_order_report_accepted();
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<Order> BookingManager::DisputeReport(const Principal& p, const v1::DisputeReportRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("DisputeReport", p, r.name()));
  if (r.reason().empty()) return InvalidField("reason", "say what is wrong with the report");
  return OrderTransition(p, "DisputeReport", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_RETURN_IF_ERROR(ClientOnly(p, cur.order));
    // The report counts as accepted from its deadline on (half-open),
    // whether the sweep has completed the order yet or not.
    if (cur.order.state() == Order::COMPLETED && cur.order.report_auto_accepted()) {
      return AcceptanceClosed(cur.order, FromProto(cur.order.report_accept_time()));
    }
    if (cur.order.state() != Order::REPORT_DELIVERED) return OrderState(cur.order, "REPORT_DELIVERED");
    if (cur.order.has_report_accept_deadline() && now >= FromProto(cur.order.report_accept_deadline())) {
      return AcceptanceClosed(cur.order, FromProto(cur.order.report_accept_deadline()));
    }
    OrderChange c;
    c.order = cur.order;
    LeaveReportDelivered(cur.partition, c.order, c.index_ops);
    c.order.set_state(Order::DISPUTED);
    c.order.set_dispute_reason(r.reason());
    *c.order.mutable_dispute_time() = ToProto(now);
    v1::BookingEvent e = Event(p, r.request_id(), now);
    e.mutable_service_order_report_disputed()->set_reason(r.reason());
    c.events.push_back(std::move(e));
    return c;
  });
}

absl::StatusOr<Order> BookingManager::CancelOrder(const Principal& p, const v1::CancelOrderRequest& r) {
  LS_RETURN_IF_ERROR(AuthorizeOrder("CancelOrder", p, r.name()));
  return OrderTransition(p, "CancelOrder", r, r.name(), r.request_id(), [&](const LoadedOrder& cur, absl::Time now) -> absl::StatusOr<OrderChange> {
    LS_ASSIGN_OR_RETURN(auto instrument, inventory_->Instrument(cur.order.instrument()));
    const bool admin = p.HasRole(Role::kConsortiumAdmin);
    const bool staff = IsOwnerStaff(p, *instrument);
    const bool client = IsClient(p, cur.order);
    const auto s = cur.order.state();
    const bool before_run = s == Order::REQUESTED || s == Order::QUOTED || s == Order::QUOTE_ACCEPTED ||
                            s == Order::SAMPLES_RECEIVED || s == Order::SCHEDULED;
    if (!(before_run && (client || staff || admin)) && !(s == Order::DISPUTED && admin)) {
      if (!before_run && s != Order::DISPUTED) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "ORDER_NOT_CANCELLABLE",
                         absl::StrCat(cur.order.name(), " is ", Order::State_Name(s),
                                      "; only orders before their run (or DISPUTED ones, by an administrator) "
                                      "can be cancelled"),
                         {{"state", Order::State_Name(s)}});
      }
      // The client side and owner staff may cancel this order in other
      // states: in DISPUTED it is their role that may not.
      const bool related = client || staff;
      return MakeError(absl::StatusCode::kPermissionDenied,
                       s == Order::DISPUTED && related ? "ROLE_NOT_ALLOWED" : "ORGANIZATION_SCOPE",
                       "before the run the client or the owner's staff cancel; a dispute is settled by an administrator");
    }
    // A run checked in already (CheckIn, before StartService) has begun, one
    // checked out already has run: as IN_PROGRESS, not cancellable (the
    // service was given: its report is delivered and accepted, and charged).
    std::optional<Loaded> run;
    if (s == Order::SCHEDULED) {
      LS_ASSIGN_OR_RETURN(run, Load(cur.order.booking()));
      const v1::Booking::State rs = run->booking.state();
      if (rs == v1::Booking::CHECKED_IN || rs == v1::Booking::COMPLETED) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "ORDER_NOT_CANCELLABLE",
                         absl::StrCat(cur.order.name(), "'s run ", run->booking.name(),
                                      rs == v1::Booking::CHECKED_IN ? " is checked in: it has begun"
                                                                    : " was checked out: it has run",
                                      "; start the service (StartService) and deliver its report"),
                         {{"state", Order::State_Name(s)}});
      }
    }
    OrderChange c;
    c.order = cur.order;
    // No deadline in the states CancelOrder allows (a dispute cleared it):
    // cleared with its entry all the same should one be there.
    LeaveReportDelivered(cur.partition, c.order, c.index_ops);
    c.order.set_state(Order::CANCELLED);
    c.order.set_cancel_reason(r.reason());
    *c.order.mutable_cancel_time() = ToProto(now);
    c.order.set_cancelled_in_state(s);
    if (run) {
      const inv::SlotRules& rules = SlotRulesOf(*instrument, labshare::type::v1::TECHNICAL_SERVICE);
      const absl::Duration notice = FromProto(rules.late_cancel_notice());
      c.order.set_late_cancellation(client && !staff && !admin &&
                                    now > FromProto(run->booking.reserved_interval().start_time()) - notice);
      // The fee in force now, pinned as lateness is decided: billing
      // charges it, whatever the rule becomes before it applies the event.
      if (c.order.late_cancellation()) c.order.set_late_cancel_fee_bps(rules.late_cancel_fee_bps());
    }
    if (run && run->booking.state() == v1::Booking::CONFIRMED) {
      c.with_booking = true;
      c.booking = run->booking;
      c.booking_version = run->version;
      c.calendar = UpdateStep::Calendar::kRemove;
      c.booking.set_state(v1::Booking::CANCELLED);
      auto* cancel = c.booking.mutable_cancellation();
      *cancel->mutable_cancel_time() = ToProto(now);
      cancel->set_cancelled_by(ActorName(p));
      cancel->set_initiator(v1::Booking::PARENT_RESOURCE);
      cancel->set_reason(r.reason());
      v1::BookingEvent booking_cancelled = Event(p, r.request_id(), now);
      booking_cancelled.mutable_booking_cancelled()->set_previous_state(run->booking.state());
      booking_cancelled.mutable_booking_cancelled()->set_initiator(v1::Booking::PARENT_RESOURCE);
      c.events.push_back(std::move(booking_cancelled));
    }
    v1::BookingEvent e = Event(p, r.request_id(), now);
    auto* ev = e.mutable_service_order_cancelled();
    ev->set_previous_state(s);
    ev->set_late_cancellation(c.order.late_cancellation());
    ev->set_reason(r.reason());
    c.events.push_back(std::move(e));
    return c;
  });
}

// ================================================================ automatic acceptance

absl::Status BookingManager::AcceptDueReports(const Principal& sweeper, int partition, absl::Time now, int batch,
                                              int* changed) {
  // What the step found: the order moved on (its entry is dropped at the
  // version read: 0 when it is gone), or its deadline is later (the entry
  // stays: a revised report moved it).
  struct Found {
    bool gone = false;
    bool later = false;
    int64_t version = 0;
  };
  auto settle = [&](const std::string& order_id, Found& found) -> absl::Status {
    const std::string name = "serviceOrders/" + order_id;
    v1::GetServiceOrderRequest key;
    key.set_name(name);
    // Due or not is decided at the sweep's `now`, on the stored order; the
    // change is stamped at its own attempt's reading (`at`), as its event.
    auto result = OrderTransition(sweeper, "Sweep", key, name, "",
                                  [&](const LoadedOrder& cur, absl::Time at) -> absl::StatusOr<OrderChange> {
      found = Found();
      found.version = cur.version;
      if (cur.order.state() != Order::REPORT_DELIVERED || !cur.order.has_report_accept_deadline()) {
        found.gone = true;
        return Precondition("NOT_DUE", "no report awaits its automatic acceptance");
      }
      const absl::Time deadline = FromProto(cur.order.report_accept_deadline());
      if (deadline > now) {
        found.later = true;
        return Precondition("NOT_DUE", "not due yet");
      }
      OrderChange c;
      c.order = cur.order;
      c.order.set_state(Order::COMPLETED);
      *c.order.mutable_report_accept_time() = ToProto(deadline);  // accepted from that moment on
      c.order.set_report_auto_accepted(true);
      LeaveReportDelivered(cur.partition, c.order, c.index_ops);
      v1::BookingEvent e = Event(sweeper, "", at);
      e.mutable_service_order_report_accepted()->set_auto_accepted(true);
      c.events.push_back(std::move(e));
      return c;
    });
    if (result.ok()) {
      ++*changed;
      return absl::OkStatus();
    }
    if (absl::IsNotFound(result.status())) {
      found = Found();
      found.gone = true;  // no such order (version 0)
    }
    if (!found.gone) {
      if (found.later || absl::IsAborted(result.status())) {  // moved meanwhile: next round
        found.later = true;
        return absl::OkStatus();
      }
      return result.status();
    }
    // Dropped only while the order is still as read: a revised report
    // written meanwhile keeps its entry.
    Mutation m;
    m.guards.push_back({keys::Order(partition, order_id), found.version});
    m.index_ops.push_back({keys::ReportDue(partition), order_id, true});
    LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
    if (outcome.kind != CommitOutcome::Kind::kApplied) found.later = true;
    return absl::OkStatus();
  };
  // Entries settled leave the set; those that stay (later, skipped) are
  // passed by the offset. Scores are deadlines rounded up: every deadline
  // <= now has one <= now rounded up (to the nanosecond, as DisputeReport
  // compares); one later within that millisecond is passed as later.
  for (int offset = 0;;) {
    LS_ASSIGN_OR_RETURN(auto due, store_->ReportsDue(partition, CeilMs(now), offset, batch));
    for (const auto& entry : due) {
      Found found;
      if (absl::Status settled = settle(entry.order_id, found); !settled.ok()) {
        LogWarning("sweep skipped a service order",
                   {{"service_order", "serviceOrders/" + entry.order_id}, {"error", settled.ToString()}});
        ++offset;
      } else if (found.later) {
        ++offset;
      }
    }
    if (static_cast<int>(due.size()) < batch) break;
  }
  return absl::OkStatus();
}

}  // namespace labshare::booking
