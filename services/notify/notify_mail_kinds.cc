#include "services/notify/notify_mail_kinds.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/currency.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/billing/billing_rules.h"

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace tv = labshare::type::v1;

constexpr char kBookingEvent[] = "labshare.booking.v1.BookingEvent";
constexpr char kBillingEvent[] = "labshare.billing.v1.BillingEvent";
constexpr char kNotifyEvent[] = "labshare.notify.v1.NotifyEvent";

std::string Money(const tv::Money& m) { return FormatMoney(m.amount_minor(), m.currency_code()); }

bool SlotMode(const bk::Booking& b) { return b.mode() == tv::ON_SITE || b.mode() == tv::JOINT_RESEARCH; }

Notice BookingNotice(Kind kind, const bk::Booking& b) {
  Notice n;
  n.kind = kind;
  if (!b.user().empty()) n.users.push_back(b.user());
  n.resource = b.name();
  n.instrument = b.instrument();
  n.times["start"] = FromProto(b.reserved_interval().start_time());
  n.times["end"] = FromProto(b.reserved_interval().end_time());
  n.text["booking"] = std::string(absl::StripPrefix(b.name(), "bookings/"));
  return n;
}

Notice LeaseNotice(Kind kind, const bk::Lease& l) {
  Notice n;
  n.kind = kind;
  if (!l.contact_user().empty()) n.users.push_back(l.contact_user());
  n.resource = l.name();
  n.instrument = l.instrument();
  n.times["start"] = FromProto(l.term().start_time());
  n.times["end"] = FromProto(l.term().end_time());
  n.text["lease"] = std::string(absl::StripPrefix(l.name(), "leases/"));
  return n;
}

Notice OrderNotice(Kind kind, const bk::ServiceOrder& o) {
  Notice n;
  n.kind = kind;
  n.resource = o.name();
  n.instrument = o.instrument();
  n.text["order"] = std::string(absl::StripPrefix(o.name(), "serviceOrders/"));
  return n;
}

}  // namespace

std::string ServiceEntryRef(absl::string_view instrument, absl::string_view entry_id) {
  return absl::StrCat(instrument, kServiceEntryRefInfix, entry_id);
}

namespace {

std::string Member(Kind kind, absl::string_view resource) { return absl::StrCat(KindName(kind), "|", resource); }

bool IsService(absl::string_view actor) { return absl::StartsWith(actor, "services/"); }

// Who did it, as far as the event's header says ({by}): the service
// itself, or a person of the actor's organisation (staff when it is the
// instrument's owner); the mail module asks inventory for the person's
// role (by_actor).
void ByFromHeader(const tv::EventHeader& h, const std::string& owner, Notice* n) {
  if (IsService(h.actor()) || h.actor().empty()) {
    n->text["by_role"] = kByService;
    return;
  }
  n->by_actor = h.actor();
  // Consortium-wide people may belong to no organisation.
  n->text["by_role"] = h.actor_organization().empty()   ? kByAdmin
                       : h.actor_organization() == owner ? kByStaff
                                                         : kByMember;
  if (!h.actor_organization().empty()) n->names["by_org"] = h.actor_organization();
}

// BOOKING_CANCELLED: an ON_SITE or JOINT_RESEARCH booking cancelled by
// someone other than its user, not by an outage (which has its own kind).
void BookingCancelledByOthers(const bk::BookingEvent& e, Interpretation* out) {
  const auto& c = e.booking_cancelled();
  const bk::Booking& b = c.booking();
  if (!SlotMode(b) || c.cancelled_by_outage() || b.cancelled_by_outage()) return;
  const auto initiator = c.initiator() != bk::Booking::CANCELLATION_INITIATOR_UNSPECIFIED ? c.initiator()
                                                                                          : b.cancellation().initiator();
  const std::string& by =
      !b.cancellation().cancelled_by().empty() ? b.cancellation().cancelled_by() : e.header().actor();
  const std::string& actor_org = e.header().actor_organization();
  Notice n = BookingNotice(v1::BOOKING_CANCELLED, b);
  switch (initiator) {
    case bk::Booking::OWNER_STAFF:
      n.text["by_role"] = kByStaff;
      n.names["by_org"] = !actor_org.empty() ? actor_org : b.instrument_owner();
      break;
    case bk::Booking::PLATFORM_ADMIN:
      n.text["by_role"] = kByAdmin;
      break;
    case bk::Booking::BOOKER:
      // The booker's side other than the user: the paying organisation's
      // billing administrator (CancelBooking's roles); unknown: no mail.
      if (by.empty()) return;
      n.text["by_role"] = kByBillingAdmin;
      n.names["by_org"] = !actor_org.empty() ? actor_org : b.payer_organization();
      break;
    default:
      return;  // an outage, a parent resource (not a slot mode's), or unknown
  }
  if (by == b.user() || n.users.empty()) return;  // the user's own cancellation
  if (IsService(by)) n.text["by_role"] = kByService;
  n.text["reason"] = b.cancellation().reason();
  if (c.late_cancellation() || b.late_cancellation()) n.variant = "late";
  out->notices.push_back(std::move(n));
}

void LeaseRejectedNotice(const bk::BookingEvent& e, Interpretation* out) {
  const bk::Lease& l = e.lease_rejected().lease();
  if (l.contact_user().empty() || e.header().actor() == l.contact_user()) return;
  Notice n = LeaseNotice(v1::LEASE_REJECTED, l);
  n.text["reason"] = !e.lease_rejected().reason().empty() ? e.lease_rejected().reason() : l.end_reason();
  out->notices.push_back(std::move(n));
}

// LEASE_CANCELLED: by anyone but the contact user: a person, an outage, or
// the sweep (a request not approved before its block began).
void LeaseCancelledNotice(const bk::BookingEvent& e, Interpretation* out) {
  const auto& c = e.lease_cancelled();
  const bk::Lease& l = c.lease();
  const std::string& actor = e.header().actor();
  if (l.contact_user().empty()) return;
  Notice n = LeaseNotice(v1::LEASE_CANCELLED, l);
  n.text["reason"] = !c.reason().empty() ? c.reason() : l.end_reason();
  if (c.cancelled_by_outage() || l.cancelled_by_outage()) {
    n.variant = "outage";
    n.maintenance_window = c.maintenance_window();
  } else if (actor.empty() || actor == l.contact_user()) {
    return;  // the contact user's own (or nobody says who)
  } else if (IsService(actor)) {
    n.variant = "expired";  // the sweep: the only cancellation the service makes but outages
  } else {
    ByFromHeader(e.header(), l.instrument_owner(), &n);
  }
  out->notices.push_back(std::move(n));
}

// What billing charges for a late cancellation (billing_manager.cc,
// ServiceOrderCancelled): the fee pinned on the order
// (late_cancel_fee_bps) of the quote's total, priced by billing's own rule
// (PriceServiceOrderCancellation); nothing when the event is not late, the
// fee is 0 bps, the order has no quote or the fee rounds to 0 minor units.
// Unknown when the order predates the pinned fee (billing then reads the
// instrument's rule when it applies the cancellation) or when billing
// could not price it either.
enum class LateFee { kCharged, kNone, kUnknown };

LateFee LateFeeOf(const bk::ServiceOrderCancelled& c, std::string* amount) {
  const bk::ServiceOrder& so = c.service_order();
  if (!c.late_cancellation()) return LateFee::kNone;
  if (!so.has_late_cancel_fee_bps()) return LateFee::kUnknown;
  if (so.late_cancel_fee_bps() == 0 || !so.has_quote()) return LateFee::kNone;
  auto charge = billing::PriceServiceOrderCancellation(so, so.late_cancel_fee_bps());
  if (!charge.ok()) return LateFee::kUnknown;
  if (!charge->has_value()) return LateFee::kNone;
  *amount = Money((*charge)->amount());
  return LateFee::kCharged;
}

// ORDER_CANCELLED: to the requester when someone else cancelled the order;
// to the owner's staff when the client's side did. A late cancellation's
// text says the fee billing charges ("late", "client_late": its amount),
// that none is charged ("..._no_fee"), or, when that cannot be known, that
// one may apply ("..._fee_unknown").
void OrderCancelledNotices(const bk::BookingEvent& e, Interpretation* out) {
  const auto& c = e.service_order_cancelled();
  const bk::ServiceOrder& so = c.service_order();
  const std::string& actor = e.header().actor();
  const std::string& actor_org = e.header().actor_organization();
  const bool late = c.late_cancellation() || so.late_cancellation();
  const std::string reason = !c.reason().empty() ? c.reason() : so.cancel_reason();
  std::string fee;
  const LateFee late_fee = late ? LateFeeOf(c, &fee) : LateFee::kNone;
  const std::string fee_suffix = late_fee == LateFee::kCharged ? ""
                                 : late_fee == LateFee::kNone  ? "_no_fee"
                                                               : "_fee_unknown";
  if (!so.requester().empty() && !actor.empty() && actor != so.requester()) {
    Notice n = OrderNotice(v1::ORDER_CANCELLED, so);
    n.users.push_back(so.requester());
    n.text["reason"] = reason;
    if (late) n.variant = "late" + fee_suffix;
    if (late_fee == LateFee::kCharged) n.text["fee"] = fee;
    ByFromHeader(e.header(), so.instrument_owner(), &n);
    out->notices.push_back(std::move(n));
  }
  const bool client_side = (!actor.empty() && actor == so.requester()) || late ||
                           (!actor_org.empty() && actor_org == so.client_organization() &&
                            actor_org != so.instrument_owner());
  if (client_side && !so.instrument_owner().empty()) {
    Notice n = OrderNotice(v1::ORDER_CANCELLED, so);
    n.org_roles.push_back({so.instrument_owner(), Role::kFacilityStaff});
    n.discriminator = "client";
    n.variant = late ? "client_late" + fee_suffix : "client";
    n.names["client"] = so.client_organization();
    n.names["requester"] = so.requester();
    n.text["reason"] = reason;
    if (late_fee == LateFee::kCharged) n.text["fee"] = fee;
    ByFromHeader(e.header(), so.instrument_owner(), &n);
    out->notices.push_back(std::move(n));
  }
}

// REPORT_AUTO_ACCEPTED: booking's sweep accepted the report at the order's
// deadline: its requester and the owner's staff. Nothing when the client
// accepted it (AcceptReport).
void ReportAutoAcceptedNotices(const bk::BookingEvent& e, Interpretation* out) {
  const auto& a = e.service_order_report_accepted();
  if (!a.auto_accepted()) return;
  const bk::ServiceOrder& so = a.service_order();
  // When it counts as accepted: report_accept_time is the deadline.
  const absl::Time accepted = so.has_report_accept_time()        ? FromProto(so.report_accept_time())
                              : so.has_report_accept_deadline()  ? FromProto(so.report_accept_deadline())
                              : e.header().has_event_time()      ? FromProto(e.header().event_time())
                                                                 : absl::InfinitePast();
  auto notice = [&]() {
    Notice n = OrderNotice(v1::REPORT_AUTO_ACCEPTED, so);
    if (accepted != absl::InfinitePast()) n.times["accepted"] = accepted;
    n.text["amount"] = Money(so.quote().total());
    return n;
  };
  if (!so.requester().empty()) {
    Notice n = notice();
    n.users.push_back(so.requester());
    out->notices.push_back(std::move(n));
  }
  if (!so.instrument_owner().empty()) {
    Notice n = notice();
    n.org_roles.push_back({so.instrument_owner(), Role::kFacilityStaff});
    n.discriminator = "staff";
    n.variant = "staff";
    n.names["client"] = so.client_organization();
    n.names["requester"] = so.requester();
    out->notices.push_back(std::move(n));
  }
}

// The update_time of the booking or lease in a booking event's payload
// (InfinitePast when it has none).
absl::Time SnapshotVersion(const bk::BookingEvent& e) {
  const auto* oneof = e.GetDescriptor()->FindOneofByName("payload");
  if (oneof == nullptr) return absl::InfinitePast();
  const auto* field = e.GetReflection()->GetOneofFieldDescriptor(e, oneof);
  if (field == nullptr || field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
    return absl::InfinitePast();
  }
  const google::protobuf::Message& payload = e.GetReflection()->GetMessage(e, field);
  for (const char* name : {"booking", "lease"}) {
    const auto* f = payload.GetDescriptor()->FindFieldByName(name);
    if (f == nullptr || f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE ||
        !payload.GetReflection()->HasField(payload, f)) {
      continue;
    }
    const google::protobuf::Message& snapshot = payload.GetReflection()->GetMessage(payload, f);
    const auto* ut = snapshot.GetDescriptor()->FindFieldByName("update_time");
    if (ut == nullptr || !snapshot.GetReflection()->HasField(snapshot, ut)) return absl::InfinitePast();
    const auto& ts = static_cast<const google::protobuf::Timestamp&>(snapshot.GetReflection()->GetMessage(snapshot, ut));
    return FromProto(ts);
  }
  return absl::InfinitePast();
}

void InterpretBooking(const bk::BookingEvent& e, const InterpretOptions& o, Interpretation* out) {
  using P = bk::BookingEvent::PayloadCase;
  switch (e.payload_case()) {
    case P::kBookingCreated: {
      const bk::Booking& b = e.booking_created().booking();
      if (b.state() == bk::Booking::PENDING_APPROVAL) {
        Notice n = BookingNotice(v1::APPROVAL_REQUESTED, b);
        n.users.clear();
        n.org_roles.push_back({b.instrument_owner(), Role::kFacilityStaff});
        n.text["purpose"] = b.purpose();
        n.names["requester"] = b.user();
        out->notices.push_back(std::move(n));
      } else if (b.state() == bk::Booking::CONFIRMED && SlotMode(b)) {
        // Confirmed at creation: only this event says so.
        out->notices.push_back(BookingNotice(v1::BOOKING_CONFIRMED, b));
        out->schedule.push_back({Member(v1::BOOKING_REMINDER, b.name()),
                                 FromProto(b.reserved_interval().start_time()) - o.reminder_lead});
      }
      break;
    }
    case P::kBookingConfirmed: {
      const bk::Booking& b = e.booking_confirmed().booking();
      // Only after an approval (whose own mail says so); a BookingConfirmed
      // without via_approval repeats a BookingCreated of older streams.
      if (!SlotMode(b) || !e.booking_confirmed().via_approval()) break;
      out->schedule.push_back({Member(v1::BOOKING_REMINDER, b.name()),
                               FromProto(b.reserved_interval().start_time()) - o.reminder_lead});
      break;
    }
    case P::kBookingApproved: {
      const bk::Booking& b = e.booking_approved().booking();
      if (!SlotMode(b)) break;
      out->notices.push_back(BookingNotice(v1::BOOKING_APPROVED, b));
      out->schedule.push_back({Member(v1::BOOKING_REMINDER, b.name()),
                               FromProto(b.reserved_interval().start_time()) - o.reminder_lead});
      break;
    }
    case P::kBookingRejected: {
      const bk::Booking& b = e.booking_rejected().booking();
      if (SlotMode(b)) {
        Notice n = BookingNotice(v1::BOOKING_REJECTED, b);
        n.text["reason"] = e.booking_rejected().reason();
        out->notices.push_back(std::move(n));
      }
      out->unschedule.push_back(Member(v1::BOOKING_REMINDER, b.name()));
      break;
    }
    case P::kBookingCancelled: {
      const auto& c = e.booking_cancelled();
      const bk::Booking& b = c.booking();
      if (SlotMode(b) && c.cancelled_by_outage()) {
        Notice n = BookingNotice(v1::BOOKING_CANCELLED_BY_OUTAGE, b);
        n.maintenance_window = c.maintenance_window();
        out->notices.push_back(std::move(n));
      }
      BookingCancelledByOthers(e, out);
      out->unschedule.push_back(Member(v1::BOOKING_REMINDER, b.name()));
      break;
    }
    case P::kBookingMissed: {
      const bk::Booking& b = e.booking_missed().booking();
      if (SlotMode(b)) out->notices.push_back(BookingNotice(v1::BOOKING_MISSED, b));
      out->unschedule.push_back(Member(v1::BOOKING_REMINDER, b.name()));
      break;
    }
    case P::kBookingCheckedIn:
      out->unschedule.push_back(Member(v1::BOOKING_REMINDER, e.booking_checked_in().booking().name()));
      break;
    case P::kBookingCheckedOut:
      out->unschedule.push_back(Member(v1::BOOKING_REMINDER, e.booking_checked_out().booking().name()));
      break;
    case P::kBookingExpired:
      out->unschedule.push_back(Member(v1::BOOKING_REMINDER, e.booking_expired().booking().name()));
      break;
    case P::kBookingIntervalChanged: {
      const bk::Booking& b = e.booking_interval_changed().booking();
      if (SlotMode(b) && b.state() == bk::Booking::CONFIRMED) {
        out->schedule.push_back({Member(v1::BOOKING_REMINDER, b.name()),
                                 FromProto(b.reserved_interval().start_time()) - o.reminder_lead});
      }
      break;
    }
    case P::kLeaseApproved: {
      const bk::Lease& l = e.lease_approved().lease();
      Notice n = LeaseNotice(v1::LEASE_APPROVED, l);
      n.text["rate"] = Money(l.contract().rate());
      n.text["deposit"] = Money(l.contract().deposit());
      out->notices.push_back(std::move(n));
      out->schedule.push_back({Member(v1::LEASE_HANDOVER_DUE, l.name()),
                               FromProto(l.term().start_time()) - o.handover_lead});
      break;
    }
    case P::kLeaseHandedOver: {
      const bk::Lease& l = e.lease_handed_over().lease();
      out->unschedule.push_back(Member(v1::LEASE_HANDOVER_DUE, l.name()));
      out->schedule.push_back({Member(v1::LEASE_RETURN_DUE, l.name()), FromProto(l.term().end_time()) - o.return_lead});
      break;
    }
    case P::kLeaseExtended: {
      const bk::Lease& l = e.lease_extended().lease();
      if (l.state() == bk::Lease::HANDED_OVER) {
        out->schedule.push_back({Member(v1::LEASE_RETURN_DUE, l.name()),
                                 FromProto(e.lease_extended().new_end_time()) - o.return_lead});
      }
      break;
    }
    case P::kLeaseReturned:
    case P::kLeaseCancelled:
    case P::kLeaseRejected:
    case P::kLeaseClosed: {
      std::string name = e.payload_case() == P::kLeaseReturned    ? e.lease_returned().lease().name()
                         : e.payload_case() == P::kLeaseCancelled ? e.lease_cancelled().lease().name()
                         : e.payload_case() == P::kLeaseRejected  ? e.lease_rejected().lease().name()
                                                                  : e.lease_closed().lease().name();
      out->unschedule.push_back(Member(v1::LEASE_HANDOVER_DUE, name));
      out->unschedule.push_back(Member(v1::LEASE_RETURN_DUE, name));
      if (e.payload_case() == P::kLeaseRejected) LeaseRejectedNotice(e, out);
      if (e.payload_case() == P::kLeaseCancelled) LeaseCancelledNotice(e, out);
      break;
    }
    case P::kServiceOrderCreated: {
      const bk::ServiceOrder& so = e.service_order_created().service_order();
      Notice n = OrderNotice(v1::ORDER_RECEIVED, so);
      n.org_roles.push_back({so.instrument_owner(), Role::kFacilityStaff});
      n.names["client"] = so.client_organization();
      n.names["requester"] = so.requester();
      n.names["service"] = ServiceEntryRef(so.instrument(), so.service_entry_id());
      n.text["samples"] = absl::StrCat(so.sample_count());
      n.text["description"] = so.sample_description();
      if (so.has_requested_completion_time()) n.times["wanted"] = FromProto(so.requested_completion_time());
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kServiceOrderQuoteAccepted: {
      const bk::ServiceOrder& so = e.service_order_quote_accepted().service_order();
      Notice n = OrderNotice(v1::QUOTE_ACCEPTED, so);
      n.org_roles.push_back({so.instrument_owner(), Role::kFacilityStaff});
      n.names["client"] = so.client_organization();
      n.names["requester"] = so.requester();
      n.text["amount"] = Money(so.quote().total());
      n.text["samples"] = absl::StrCat(so.sample_count());
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kServiceOrderScheduled: {
      const auto& sch = e.service_order_scheduled();
      const bk::ServiceOrder& so = sch.service_order();
      if (so.requester().empty() || e.header().actor() == so.requester()) break;
      Notice n = OrderNotice(v1::SERVICE_SCHEDULED, so);
      n.users.push_back(so.requester());
      n.times["start"] = FromProto(so.scheduled_interval().start_time());
      n.times["end"] = FromProto(so.scheduled_interval().end_time());
      if (!sch.previous_booking().empty()) n.variant = "moved";
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kServiceOrderUnscheduled: {
      const auto& u = e.service_order_unscheduled();
      const bk::ServiceOrder& so = u.service_order();
      if (so.requester().empty()) break;
      if (!u.cancelled_by_outage() && e.header().actor() == so.requester()) break;
      Notice n = OrderNotice(v1::ORDER_CANCELLED, so);
      n.users.push_back(so.requester());
      if (u.cancelled_by_outage()) {
        n.variant = "run_outage";
      } else {
        n.variant = "run";
        ByFromHeader(e.header(), so.instrument_owner(), &n);
      }
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kServiceOrderCancelled:
      OrderCancelledNotices(e, out);
      break;
    case P::kServiceOrderQuoted: {
      const bk::ServiceOrder& so = e.service_order_quoted().service_order();
      Notice n = OrderNotice(v1::QUOTE_ISSUED, so);
      n.users.push_back(so.requester());
      n.text["amount"] = Money(so.quote().total());
      if (so.quote().has_valid_until()) n.times["valid_until"] = FromProto(so.quote().valid_until());
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kServiceOrderReportDelivered: {
      const bk::ServiceOrder& so = e.service_order_report_delivered().service_order();
      Notice n = OrderNotice(v1::REPORT_DELIVERED, so);
      n.users.push_back(so.requester());
      n.text["summary"] = so.reports().empty() ? "" : so.reports(so.reports_size() - 1).summary();
      // Accepted automatically unless disputed before the deadline (an
      // order delivered without an acceptance period, or before the field
      // existed, has none: the mail says nothing of it).
      if (so.has_report_accept_deadline()) {
        n.variant = "deadline";
        n.times["deadline"] = FromProto(so.report_accept_deadline());
        n.text["amount"] = Money(so.quote().total());
      }
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kServiceOrderReportAccepted:
      ReportAutoAcceptedNotices(e, out);
      break;
    case P::kServiceOrderReportDisputed: {
      const bk::ServiceOrder& so = e.service_order_report_disputed().service_order();
      Notice n = OrderNotice(v1::ORDER_DISPUTED, so);
      n.org_roles.push_back({so.instrument_owner(), Role::kFacilityStaff});
      n.text["reason"] = so.dispute_reason();
      n.names["client"] = so.client_organization();
      out->notices.push_back(std::move(n));
      break;
    }
    default:
      break;
  }
}

void InterpretBilling(const bl::BillingEvent& e, const InterpretOptions& o, Interpretation* out) {
  using P = bl::BillingEvent::PayloadCase;
  switch (e.payload_case()) {
    case P::kInvoiceIssued: {
      const bl::Invoice& inv = e.invoice_issued().invoice();
      Notice n;
      n.kind = v1::INVOICE_ISSUED;
      n.org_roles.push_back({inv.payer_organization(), Role::kMemberBillingAdmin});
      n.resource = inv.name();
      n.text["number"] = inv.number();
      n.text["period"] = inv.period();
      n.text["amount"] = Money(inv.amount_due());
      if (inv.has_due_time()) n.times["due"] = FromProto(inv.due_time());
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kPaymentRecorded: {
      const bl::Payment& p = e.payment_recorded().payment();
      Notice n;
      n.kind = v1::PAYMENT_RECEIVED;
      n.org_roles.push_back({p.payee(), Role::kMemberBillingAdmin});
      // The payer's receipt when the payer is an organisation: a subsidy
      // pool ("subsidyPools/{id}", recorded by the consortium admin) has no
      // billing admins to mail.
      if (p.payer() != p.payee() && absl::StartsWith(p.payer(), "organizations/")) {
        n.org_roles.push_back({p.payer(), Role::kMemberBillingAdmin});
      }
      n.resource = p.name();
      n.text["amount"] = Money(p.amount());
      n.names["payer"] = p.payer();  // a pool ("subsidyPools/{id}") by its id
      n.names["payee"] = p.payee();
      // The invoice by its id ("invoices/{id}": the link's page too).
      n.text["invoice"] = std::string(absl::StripPrefix(p.invoice(), "invoices/"));
      n.text["reference"] = p.external_reference();
      if (p.has_paid_time()) n.times["paid"] = FromProto(p.paid_time());
      out->notices.push_back(std::move(n));
      break;
    }
    case P::kSettlementComputed: {
      const bl::Settlement& s = e.settlement_computed().settlement();
      std::map<std::string, std::vector<const bl::SettlementTransfer*>> by_payer;
      for (const auto& t : s.transfers()) by_payer[t.from_organization()].push_back(&t);
      for (const auto& [org, transfers] : by_payer) {
        Notice n;
        n.kind = v1::SETTLEMENT_TRANSFERS_DUE;
        n.discriminator = org;
        n.org_roles.push_back({org, Role::kMemberBillingAdmin});
        n.resource = s.name();
        n.text["period"] = s.period();
        // One line each ({transfers}, made by Render): the payee by its
        // display name, the amount.
        for (size_t k = 0; k < transfers.size(); ++k) {
          n.names[absl::StrCat("to_", k)] = transfers[k]->to_organization();
          n.text[absl::StrCat("amount_", k)] = Money(transfers[k]->amount());
        }
        out->notices.push_back(std::move(n));
      }
      break;
    }
    case P::kSubsidyApplied: {
      if (o.subsidy_pool_low_minor <= 0) break;
      const auto& a = e.subsidy_applied();
      const int64_t after = a.pool_balance().amount_minor();
      const int64_t before = after + a.line().amount().amount_minor();
      if (before >= o.subsidy_pool_low_minor && after < o.subsidy_pool_low_minor) {
        Notice n;
        n.kind = v1::SUBSIDY_POOL_LOW;
        n.org_roles.push_back({"", Role::kConsortiumAdmin});
        n.resource = a.line().subsidy_pool();
        n.names["pool"] = a.line().subsidy_pool();  // "subsidyPools/{id}": by its id
        n.text["balance"] = Money(a.pool_balance());
        n.text["threshold"] = FormatMoney(o.subsidy_pool_low_minor, a.pool_balance().currency_code());
        out->notices.push_back(std::move(n));
      }
      break;
    }
    default:
      break;
  }
}

void InterpretNotify(const v1::NotifyEvent& e, Interpretation* out) {
  if (e.payload_case() != v1::NotifyEvent::kWebhookDisabled) return;
  const v1::WebhookDisabled& w = e.webhook_disabled();
  Notice n;
  n.kind = v1::WEBHOOK_DISABLED;
  n.org_roles.push_back({w.organization(), Role::kMemberBillingAdmin});
  n.resource = w.webhook();
  n.text["url"] = w.url();
  n.text["failures"] = absl::StrCat(w.consecutive_failures());
  n.text["error"] = w.last_error();
  out->notices.push_back(std::move(n));
}

absl::Status Unparsable(const StreamEvent& e) {
  // Not an RPC answer: the consumer logs and skips the entry.
  return absl::InvalidArgumentError(absl::StrCat("cannot parse the ", e.type, " of entry ", e.stream_id));
}

}  // namespace

std::string KindName(Kind kind) { return v1::NotificationKind_Name(kind); }

bool ParseKind(absl::string_view name, Kind* kind) {
  return v1::NotificationKind_Parse(std::string(name), kind) && *kind != v1::NOTIFICATION_KIND_UNSPECIFIED;
}

std::string ByRole(const std::vector<Role>& roles) {
  const auto has = [&](Role r) { return std::find(roles.begin(), roles.end(), r) != roles.end(); };
  if (has(Role::kConsortiumAdmin)) return kByAdmin;
  if (has(Role::kFacilityStaff)) return kByStaff;
  if (has(Role::kMemberBillingAdmin)) return kByBillingAdmin;
  if (has(Role::kService)) return kByService;
  return kByMember;
}

bool IsLegalNotice(Kind kind) {
  return kind == v1::INVOICE_ISSUED || kind == v1::PAYMENT_RECEIVED || kind == v1::SETTLEMENT_TRANSFERS_DUE ||
         kind == v1::WEBHOOK_DISABLED;
}

absl::StatusOr<Interpretation> Interpret(const StreamEvent& e, const InterpretOptions& options) {
  Interpretation out;
  std::string trace_id;
  if (e.type == kBookingEvent) {
    bk::BookingEvent ev;
    if (!ev.ParseFromString(e.payload)) return Unparsable(e);
    out.event_id = ev.header().event_id();
    if (ev.header().has_event_time()) out.event_time = FromProto(ev.header().event_time());
    trace_id = ev.header().trace_id();
    InterpretBooking(ev, options, &out);
    if (!out.schedule.empty() || !out.unschedule.empty()) out.version = SnapshotVersion(ev);
  } else if (e.type == kBillingEvent) {
    bl::BillingEvent ev;
    if (!ev.ParseFromString(e.payload)) return Unparsable(e);
    out.event_id = ev.header().event_id();
    if (ev.header().has_event_time()) out.event_time = FromProto(ev.header().event_time());
    trace_id = ev.header().trace_id();
    InterpretBilling(ev, options, &out);
  } else if (e.type == kNotifyEvent) {
    v1::NotifyEvent ev;
    if (!ev.ParseFromString(e.payload)) return Unparsable(e);
    out.event_id = ev.header().event_id();
    if (ev.header().has_event_time()) out.event_time = FromProto(ev.header().event_time());
    trace_id = ev.header().trace_id();
    InterpretNotify(ev, &out);
  }
  if (out.event_id.empty()) out.event_id = e.stream_id;
  for (Notice& n : out.notices) n.trace_id = trace_id;
  return out;
}

namespace {

absl::StatusOr<Notice> ScheduledNoticeOf(Kind kind, const bk::BookingEvent& ev) {
  using P = bk::BookingEvent::PayloadCase;
  if (kind == v1::BOOKING_REMINDER) {
    const bk::Booking* b = ev.payload_case() == P::kBookingCreated    ? &ev.booking_created().booking()
                           : ev.payload_case() == P::kBookingConfirmed  ? &ev.booking_confirmed().booking()
                           : ev.payload_case() == P::kBookingApproved ? &ev.booking_approved().booking()
                           : ev.payload_case() == P::kBookingIntervalChanged
                               ? &ev.booking_interval_changed().booking()
                               : nullptr;
    if (b == nullptr) return absl::NotFoundError("no booking");
    return BookingNotice(v1::BOOKING_REMINDER, *b);
  }
  const bk::Lease* l = ev.payload_case() == P::kLeaseApproved     ? &ev.lease_approved().lease()
                       : ev.payload_case() == P::kLeaseHandedOver ? &ev.lease_handed_over().lease()
                       : ev.payload_case() == P::kLeaseExtended   ? &ev.lease_extended().lease()
                                                                  : nullptr;
  if (l == nullptr) return absl::NotFoundError("no lease");
  Notice n = LeaseNotice(kind, *l);
  if (ev.payload_case() == P::kLeaseExtended) n.times["end"] = FromProto(ev.lease_extended().new_end_time());
  return n;
}

}  // namespace

absl::StatusOr<Notice> ScheduledNotice(absl::string_view member, const StreamEvent& e) {
  std::pair<std::string, std::string> parts = absl::StrSplit(member, absl::MaxSplits('|', 1));
  Kind kind;
  if (!ParseKind(parts.first, &kind) || e.type != kBookingEvent) {
    return absl::NotFoundError("not a scheduled kind");
  }
  bk::BookingEvent ev;
  if (!ev.ParseFromString(e.payload)) return Unparsable(e);
  absl::StatusOr<Notice> n = ScheduledNoticeOf(kind, ev);
  if (n.ok()) {
    n->trace_id = ev.header().trace_id();
    if (ev.header().has_event_time()) n->event_time = FromProto(ev.header().event_time());
  }
  return n;
}

std::vector<Schedule> SchedulesToApply(const Interpretation& in, absl::Time now, absl::Duration grace,
                                       absl::Duration max_event_age) {
  std::vector<Schedule> out;
  if (max_event_age > absl::ZeroDuration() && in.event_time != absl::InfinitePast() &&
      in.event_time < now - max_event_age) {
    return out;  // history: whatever it scheduled is long past
  }
  for (const Schedule& s : in.schedule) {
    // Due when it fires, or when its event happened if that is later (a
    // booking made within the lead time): late only past the grace after
    // that. Stored at its own fire time (due at once when past): the mail's
    // id stays the same whichever event scheduled it.
    if (std::max(s.fire, in.event_time) >= now - grace) out.push_back(s);
  }
  return out;
}

bool ScheduledStillDue(absl::string_view member, absl::Time fire, const Notice& notice, absl::Time now,
                       absl::Duration grace) {
  if (std::max(fire, notice.event_time) < now - grace) return false;
  std::pair<std::string, std::string> parts = absl::StrSplit(member, absl::MaxSplits('|', 1));
  Kind kind;
  if (!ParseKind(parts.first, &kind)) return false;
  // A reminder or handover notice after the start, a return notice after
  // the end, announces what already happened.
  const char* edge = kind == v1::LEASE_RETURN_DUE ? "end" : "start";
  auto it = notice.times.find(edge);
  return it == notice.times.end() || it->second > now;
}

std::string FormatMoney(int64_t minor, absl::string_view currency) {
  const bool negative = minor < 0;
  const uint64_t abs = negative ? static_cast<uint64_t>(-(minor + 1)) + 1 : static_cast<uint64_t>(minor);
  // The currency's ISO 4217 exponent: 12345 JPY is 12,345 yen, 12345 CNY
  // 123.45 yuan, 12345 KWD 12.345 dinars.
  const int digits = CurrencyMinorDigits(currency);
  uint64_t scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  std::string units = absl::StrCat(abs / scale);
  std::string grouped;
  for (size_t i = 0; i < units.size(); ++i) {
    if (i > 0 && (units.size() - i) % 3 == 0) grouped += ',';
    grouped += units[i];
  }
  if (digits == 0) return absl::StrCat(negative ? "-" : "", grouped, " ", currency);
  return absl::StrFormat("%s%s.%0*d %s", negative ? "-" : "", grouped, digits, static_cast<int>(abs % scale),
                         currency);
}

// ------------------------------------------------------------------ templates

namespace {

struct Template {
  const char* subject;
  const char* body;  // lines; {x} placeholders
};

struct KindTemplates {
  Kind kind;
  Template en;
  Template zh;
  const char* variant = "";  // Notice::variant
};

// The body's first line is the greeting's continuation; the link follows.
const KindTemplates kTemplates[] = {
    {v1::BOOKING_CONFIRMED,
     {"Booking confirmed: {instrument}, {start}", "Your booking {booking} of {instrument} is confirmed.\nTime: {start} - {end}"},
     {"预约已确认：{instrument}，{start}", "您对 {instrument} 的预约 {booking} 已确认。\n时间：{start} - {end}"}},
    {v1::BOOKING_APPROVED,
     {"Booking approved: {instrument}, {start}", "Your booking {booking} of {instrument} was approved.\nTime: {start} - {end}"},
     {"预约已批准：{instrument}，{start}", "您对 {instrument} 的预约 {booking} 已获批准。\n时间：{start} - {end}"}},
    {v1::BOOKING_REJECTED,
     {"Booking rejected: {instrument}, {start}",
      "Your booking {booking} of {instrument} was rejected.\nTime: {start} - {end}\nReason: {reason}"},
     {"预约被拒绝：{instrument}，{start}", "您对 {instrument} 的预约 {booking} 未获批准。\n时间：{start} - {end}\n原因：{reason}"}},
    {v1::BOOKING_CANCELLED_BY_OUTAGE,
     {"Booking cancelled by an outage: {instrument}, {start}",
      "Your booking {booking} of {instrument} ({start} - {end}) was cancelled because the instrument is unavailable "
      "{window}. You will not be charged."},
     {"预约因停机取消：{instrument}，{start}",
      "由于仪器在 {window} 停机，您对 {instrument} 的预约 {booking}（{start} - {end}）已取消，不收取费用。"}},
    {v1::BOOKING_REMINDER,
     {"Reminder: {instrument} at {start}", "Your booking {booking} of {instrument} starts soon.\nTime: {start} - {end}"},
     {"提醒：{start} 使用 {instrument}", "您对 {instrument} 的预约 {booking} 即将开始。\n时间：{start} - {end}"}},
    {v1::BOOKING_MISSED,
     {"Missed booking: {instrument}, {start}",
      "Your booking {booking} of {instrument} ({start} - {end}) was not checked in and is recorded as missed; a missed-booking fee may apply."},
     {"预约未到：{instrument}，{start}", "您对 {instrument} 的预约 {booking}（{start} - {end}）未签到，已记为爽约，可能收取爽约费。"}},
    {v1::APPROVAL_REQUESTED,
     {"Approval requested: {instrument}, {start}",
      "A booking of {instrument} waits for your approval.\nBooking: {booking}\nBy: {requester}\nTime: {start} - {end}\nPurpose: {purpose}"},
     {"待审批：{instrument}，{start}", "一项 {instrument} 的预约等待您审批。\n预约：{booking}\n申请人：{requester}\n时间：{start} - {end}\n用途：{purpose}"}},
    {v1::LEASE_APPROVED,
     {"Lease approved: {instrument}", "Your lease {lease} of {instrument} was approved.\nTerm: {start} - {end}\nRate: {rate}\nDeposit: {deposit}"},
     {"租赁已批准：{instrument}", "您对 {instrument} 的租赁 {lease} 已获批准。\n租期：{start} - {end}\n租金：{rate}\n押金：{deposit}"}},
    {v1::LEASE_HANDOVER_DUE,
     {"Handover due: {instrument} on {start}", "The handover of {instrument} for lease {lease} is due at {start}."},
     {"即将交接：{instrument}，{start}", "租赁 {lease} 的仪器 {instrument} 将于 {start} 交接。"}},
    {v1::LEASE_RETURN_DUE,
     {"Return due: {instrument} on {end}", "{instrument} of lease {lease} is due back at {end}."},
     {"即将归还：{instrument}，{end}", "租赁 {lease} 的仪器 {instrument} 应于 {end} 归还。"}},
    {v1::QUOTE_ISSUED,
     {"Quote issued: order {order}", "A quote for your service order {order} on {instrument} was issued: {amount}.\nValid until: {valid_until}"},
     {"已报价：订单 {order}", "您在 {instrument} 上的技术服务订单 {order} 已报价：{amount}。\n有效期至：{valid_until}"}},
    {v1::REPORT_DELIVERED,
     {"Report delivered: order {order}", "The report of your service order {order} on {instrument} was delivered.\n{summary}"},
     {"报告已交付：订单 {order}", "您在 {instrument} 上的技术服务订单 {order} 的报告已交付。\n{summary}"}},
    {v1::REPORT_DELIVERED,
     {"Report delivered: order {order}",
      "The report of your service order {order} on {instrument} was delivered.\n{summary}\n"
      "You may dispute it in LabShare before {deadline}. From then on the report is accepted automatically and "
      "the quote of {amount} is charged."},
     {"报告已交付：订单 {order}",
      "您在 {instrument} 上的技术服务订单 {order} 的报告已交付。\n{summary}\n"
      "如有异议，请在 {deadline} 之前在 LabShare 中提出。此后报告将自动验收，并按报价收取 {amount}。"},
     "deadline"},
    {v1::REPORT_AUTO_ACCEPTED,
     {"Report accepted automatically: order {order}",
      "The report of your service order {order} on {instrument} was not disputed before its acceptance period "
      "ended and was accepted automatically on {accepted}.\nThe order is complete; the quote of {amount} is "
      "charged."},
     {"报告已自动验收：订单 {order}",
      "您在 {instrument} 上的技术服务订单 {order} 的报告在验收期内未被提出异议，已于 {accepted} 自动验收。\n"
      "订单已完成，将按报价收取 {amount}。"}},
    {v1::REPORT_AUTO_ACCEPTED,
     {"Report accepted automatically: order {order}",
      "The report of service order {order} on {instrument} was accepted automatically on {accepted}: the client "
      "{client} did not dispute it before its acceptance period ended.\nThe order is complete.\n"
      "Requester: {requester}\nCharged: {amount}"},
     {"报告已自动验收：订单 {order}",
      "{instrument} 上技术服务订单 {order} 的报告已于 {accepted} 自动验收：客户 {client} 在验收期内未提出异议。\n"
      "订单已完成。\n申请人：{requester}\n收费：{amount}"},
     "staff"},
    {v1::ORDER_DISPUTED,
     {"Order disputed: {order}", "The client {client} disputes the report of service order {order} on {instrument}.\nReason: {reason}"},
     {"订单有异议：{order}", "客户 {client} 对 {instrument} 上技术服务订单 {order} 的报告提出异议。\n原因：{reason}"}},
    {v1::INVOICE_ISSUED,
     {"Invoice {number} issued ({period})", "Invoice {number} for {period} was issued: {amount} due by {due}."},
     {"发票 {number} 已开具（{period}）", "{period} 的发票 {number} 已开具：应付 {amount}，付款期限 {due}。"}},
    {v1::PAYMENT_RECEIVED,
     {"Payment received: {amount}", "A payment of {amount} from {payer} to {payee} was recorded ({paid}).\nInvoice: {invoice}\nReference: {reference}"},
     {"已收到付款：{amount}", "已记录 {payer} 向 {payee} 的付款 {amount}（{paid}）。\n发票：{invoice}\n参考号：{reference}"}},
    {v1::SETTLEMENT_TRANSFERS_DUE,
     {"Settlement {period}: transfers due", "The settlement of {period} was computed. Your organisation's transfers:\n{transfers}"},
     {"{period} 结算：待付转账", "{period} 的结算已完成。贵单位应付的转账：\n{transfers}"}},
    {v1::SUBSIDY_POOL_LOW,
     {"Subsidy pool low: {pool}", "The balance of subsidy pool {pool} fell to {balance}, below {threshold}."},
     {"补贴资金池余额不足：{pool}", "补贴资金池 {pool} 的余额已降至 {balance}，低于 {threshold}。"}},
    {v1::BOOKING_CANCELLED,
     {"Booking cancelled: {instrument}, {start}",
      "Your booking {booking} of {instrument} ({start} - {end}) was cancelled by {by}.\nReason: {reason}\n"
      "You will not be charged."},
     {"预约已被取消：{instrument}，{start}",
      "您对 {instrument} 的预约 {booking}（{start} - {end}）已被 {by} 取消。\n原因：{reason}\n不收取费用。"}},
    {v1::BOOKING_CANCELLED,
     {"Booking cancelled: {instrument}, {start}",
      "Your booking {booking} of {instrument} ({start} - {end}) was cancelled by {by}, later than the instrument's "
      "cancellation notice.\nReason: {reason}\nA late-cancellation fee may apply."},
     {"预约已被取消：{instrument}，{start}",
      "您对 {instrument} 的预约 {booking}（{start} - {end}）已被 {by} 取消，晚于仪器规定的取消期限。\n原因：{reason}\n"
      "可能收取逾期取消费。"},
     "late"},
    {v1::LEASE_REJECTED,
     {"Lease rejected: {instrument}", "Your lease request {lease} of {instrument} was rejected.\nTerm: {start} - {end}\nReason: {reason}"},
     {"租赁被拒绝：{instrument}", "您对 {instrument} 的租赁申请 {lease} 未获批准。\n租期：{start} - {end}\n原因：{reason}"}},
    {v1::LEASE_CANCELLED,
     {"Lease cancelled: {instrument}",
      "Your lease {lease} of {instrument} was cancelled by {by}.\nTerm: {start} - {end}\nReason: {reason}\nNothing is charged."},
     {"租赁已取消：{instrument}", "您对 {instrument} 的租赁 {lease} 已被 {by} 取消。\n租期：{start} - {end}\n原因：{reason}\n不收取任何费用。"}},
    {v1::LEASE_CANCELLED,
     {"Lease cancelled by an outage: {instrument}",
      "Your lease {lease} of {instrument} ({start} - {end}) was cancelled because the instrument is unavailable "
      "{window}.\nReason: {reason}\nNothing is charged."},
     {"租赁因停机取消：{instrument}",
      "由于仪器在 {window} 停机，您对 {instrument} 的租赁 {lease}（{start} - {end}）已取消。\n原因：{reason}\n不收取任何费用。"},
     "outage"},
    {v1::LEASE_CANCELLED,
     {"Lease request expired: {instrument}",
      "Your lease request {lease} of {instrument} ({start} - {end}) was not approved before its term (handover "
      "included) began, and was cancelled.\nNothing is charged."},
     {"租赁申请已过期：{instrument}",
      "您对 {instrument} 的租赁申请 {lease}（{start} - {end}）在租期（含交接时间）开始前未获批准，已自动取消。\n不收取任何费用。"},
     "expired"},
    {v1::ORDER_RECEIVED,
     {"New service order: {order} on {instrument}",
      "A service order on {instrument} waits for your quote.\nOrder: {order}\nService: {service}\nClient: {client}\n"
      "Requester: {requester}\nSamples: {samples}\nDescription: {description}\nWanted by: {wanted}"},
     {"新技术服务订单：{order}（{instrument}）",
      "一项 {instrument} 的技术服务订单等待您报价。\n订单：{order}\n服务项目：{service}\n客户：{client}\n申请人：{requester}\n"
      "样品数：{samples}\n说明：{description}\n期望完成时间：{wanted}"}},
    {v1::QUOTE_ACCEPTED,
     {"Quote accepted: order {order}",
      "The client {client} accepted the quote for service order {order} on {instrument}: {amount}.\n"
      "Requester: {requester}\nSamples to receive: {samples}"},
     {"报价已接受：订单 {order}",
      "客户 {client} 已接受 {instrument} 上技术服务订单 {order} 的报价：{amount}。\n申请人：{requester}\n待接收样品数：{samples}"}},
    {v1::SERVICE_SCHEDULED,
     {"Service run scheduled: order {order}, {start}",
      "The run of your service order {order} on {instrument} is scheduled.\nTime: {start} - {end}"},
     {"技术服务已排期：订单 {order}，{start}", "您在 {instrument} 上的技术服务订单 {order} 已排期。\n时间：{start} - {end}"}},
    {v1::SERVICE_SCHEDULED,
     {"Service run moved: order {order}, {start}",
      "The run of your service order {order} on {instrument} was moved.\nNew time: {start} - {end}"},
     {"技术服务已改期：订单 {order}，{start}", "您在 {instrument} 上的技术服务订单 {order} 已改期。\n新时间：{start} - {end}"},
     "moved"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled: {order}", "Your service order {order} on {instrument} was cancelled by {by}.\nReason: {reason}"},
     {"技术服务订单已取消：{order}", "您在 {instrument} 上的技术服务订单 {order} 已被 {by} 取消。\n原因：{reason}"}},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled: {order}",
      "Your service order {order} on {instrument} was cancelled by {by}, later than the instrument's cancellation "
      "notice before its run.\nReason: {reason}\nA late-cancellation fee of {fee} is charged."},
     {"技术服务订单已取消：{order}",
      "您在 {instrument} 上的技术服务订单 {order} 已被 {by} 取消，晚于运行前的取消期限。\n原因：{reason}\n将收取逾期取消费 {fee}。"},
     "late"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled: {order}",
      "Your service order {order} on {instrument} was cancelled by {by}, later than the instrument's cancellation "
      "notice before its run.\nReason: {reason}\nNo late-cancellation fee is charged."},
     {"技术服务订单已取消：{order}",
      "您在 {instrument} 上的技术服务订单 {order} 已被 {by} 取消，晚于运行前的取消期限。\n原因：{reason}\n不收取逾期取消费。"},
     "late_no_fee"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled: {order}",
      "Your service order {order} on {instrument} was cancelled by {by}, later than the instrument's cancellation "
      "notice before its run.\nReason: {reason}\nA late-cancellation fee may apply."},
     {"技术服务订单已取消：{order}",
      "您在 {instrument} 上的技术服务订单 {order} 已被 {by} 取消，晚于运行前的取消期限。\n原因：{reason}\n可能收取逾期取消费。"},
     "late_fee_unknown"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled by the client: {order}",
      "The client {client} cancelled service order {order} on {instrument}.\nRequester: {requester}\n"
      "Cancelled by: {by}\nReason: {reason}"},
     {"客户取消了技术服务订单：{order}",
      "客户 {client} 取消了 {instrument} 上的技术服务订单 {order}。\n申请人：{requester}\n取消人：{by}\n原因：{reason}"},
     "client"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled by the client: {order}",
      "The client {client} cancelled service order {order} on {instrument}, later than the cancellation notice "
      "before its run.\nRequester: {requester}\nCancelled by: {by}\nReason: {reason}\nA late-cancellation fee of {fee} is charged."},
     {"客户取消了技术服务订单：{order}",
      "客户 {client} 取消了 {instrument} 上的技术服务订单 {order}，晚于运行前的取消期限。\n申请人：{requester}\n"
      "取消人：{by}\n原因：{reason}\n将收取逾期取消费 {fee}。"},
     "client_late"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled by the client: {order}",
      "The client {client} cancelled service order {order} on {instrument}, later than the cancellation notice "
      "before its run.\nRequester: {requester}\nCancelled by: {by}\nReason: {reason}\nNo late-cancellation fee is charged."},
     {"客户取消了技术服务订单：{order}",
      "客户 {client} 取消了 {instrument} 上的技术服务订单 {order}，晚于运行前的取消期限。\n申请人：{requester}\n"
      "取消人：{by}\n原因：{reason}\n不收取逾期取消费。"},
     "client_late_no_fee"},
    {v1::ORDER_CANCELLED,
     {"Service order cancelled by the client: {order}",
      "The client {client} cancelled service order {order} on {instrument}, later than the cancellation notice "
      "before its run.\nRequester: {requester}\nCancelled by: {by}\nReason: {reason}\nA late-cancellation fee may apply."},
     {"客户取消了技术服务订单：{order}",
      "客户 {client} 取消了 {instrument} 上的技术服务订单 {order}，晚于运行前的取消期限。\n申请人：{requester}\n"
      "取消人：{by}\n原因：{reason}\n可能收取逾期取消费。"},
     "client_late_fee_unknown"},
    {v1::ORDER_CANCELLED,
     {"Service run cancelled: order {order}",
      "The scheduled run of your service order {order} on {instrument} was cancelled by {by}. The order stays "
      "open and waits to be scheduled again."},
     {"技术服务排期已取消：订单 {order}",
      "您在 {instrument} 上的技术服务订单 {order} 的排期已被 {by} 取消。订单仍有效，等待重新排期。"},
     "run"},
    {v1::ORDER_CANCELLED,
     {"Service run cancelled by an outage: order {order}",
      "The scheduled run of your service order {order} on {instrument} was cancelled because the instrument is "
      "out of service. The order stays open and waits to be scheduled again."},
     {"技术服务排期因停机取消：订单 {order}",
      "由于仪器停机，您在 {instrument} 上的技术服务订单 {order} 的排期已取消。订单仍有效，等待重新排期。"},
     "run_outage"},
    {v1::WEBHOOK_DISABLED,
     {"Webhook disabled: {url}",
      "The webhook {url} was disabled after {failures} failed deliveries in a row.\nLast error: {error}\nFix the endpoint, then enable it again in the console."},
     {"Webhook 已停用：{url}", "Webhook {url} 连续 {failures} 次投递失败，已被停用。\n最后的错误：{error}\n请修复接收端后在控制台重新启用。"}},
};

const KindTemplates* Find(Kind kind, absl::string_view variant) {
  for (const auto& t : kTemplates) {
    if (t.kind == kind && variant == t.variant) return &t;
  }
  return variant.empty() ? nullptr : Find(kind, "");
}

// {by}: who did it, in the mail's language (Notice::by_actor).
std::string ByText(absl::string_view role, const std::string& org, bool en) {
  if (role == kByStaff) return en ? absl::StrCat("staff of ", org) : absl::StrCat(org, " 的工作人员");
  if (role == kByAdmin) return en ? "a consortium administrator" : "联盟管理员";
  if (role == kByBillingAdmin) {
    return en ? absl::StrCat("a billing administrator of ", org) : absl::StrCat(org, " 的财务管理员");
  }
  if (role == kByMember) return en ? absl::StrCat("a user of ", org) : absl::StrCat(org, " 的用户");
  if (role == kByService) return en ? "LabShare" : "LabShare 系统";
  return "-";
}

std::string HtmlEscape(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}, {"'", "&#39;"}});
}

std::string FormatTime(absl::Time t, const RenderContext& c) {
  return absl::StrCat(absl::FormatTime("%Y-%m-%d %H:%M", t, c.zone), " (", c.zone_name, ")");
}

std::string Fill(absl::string_view tmpl, const std::map<std::string, std::string>& values) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] == '{') {
      const size_t close = tmpl.find('}', i);
      if (close != absl::string_view::npos) {
        const std::string key(tmpl.substr(i + 1, close - i - 1));
        auto it = values.find(key);
        out += it != values.end() ? it->second : "-";
        i = close + 1;
        continue;
      }
    }
    out += tmpl[i++];
  }
  return out;
}

bool En(const RenderContext& c) { return c.language == "en"; }

// The footer: a kind's unsubscribe link; for a legal notice, that it is
// required; for a digest (`digest`), where its delivery is set (each of its
// parts keeps its own kind's unsubscribe link).
RenderedMail Wrap(const std::string& subject, const std::string& body_text, const std::string& body_html,
                  const std::string& link, const RenderContext& c, bool digest = false) {
  const bool en = En(c);
  RenderedMail m;
  m.subject = subject;
  const std::string hello = en ? absl::StrCat("Hello ", c.recipient_name, ",")
                               : absl::StrCat(c.recipient_name, "，您好：");
  const std::string open = en ? "Open in LabShare: " : "在 LabShare 中查看：";
  const std::string unsub = en ? "Unsubscribe from these mails: " : "退订此类邮件：";
  const std::string legal = en ? "This is a required notice; it cannot be turned off."
                               : "这是必要通知，无法退订。";
  const std::string settings_url = DigestSettingsUrl(c.console_url);
  const std::string settings = en ? "You get these notifications as a daily digest. To get each mail at once, "
                                    "or fewer kinds, change your notification settings: "
                                  : "您按每日摘要接收这些通知。如需逐封即时接收或减少通知种类，请修改通知设置：";
  m.text = absl::StrCat(hello, "\n\n", body_text, "\n\n");
  if (!link.empty()) absl::StrAppend(&m.text, open, link, "\n");
  absl::StrAppend(&m.text, "\n-- \nLabShare\n",
                  digest                      ? settings + settings_url
                  : c.unsubscribe_url.empty() ? legal
                                              : unsub + c.unsubscribe_url,
                  "\n");
  m.html = absl::StrCat("<!DOCTYPE html>\n<html lang=\"", en ? "en" : "zh-CN",
                        "\"><head><meta charset=\"utf-8\"><title>", HtmlEscape(subject),
                        "</title></head><body>\n<p>", HtmlEscape(hello), "</p>\n", body_html, "\n");
  if (!link.empty()) {
    absl::StrAppend(&m.html, "<p><a href=\"", HtmlEscape(link), "\">", HtmlEscape(open), HtmlEscape(link), "</a></p>\n");
  }
  absl::StrAppend(&m.html, "<hr><p><small>LabShare. ");
  if (digest) {
    absl::StrAppend(&m.html, HtmlEscape(settings), "<a href=\"", HtmlEscape(settings_url), "\">",
                    HtmlEscape(settings_url), "</a>");
  } else if (c.unsubscribe_url.empty()) {
    absl::StrAppend(&m.html, HtmlEscape(legal));
  } else {
    absl::StrAppend(&m.html, "<a href=\"", HtmlEscape(c.unsubscribe_url), "\">", HtmlEscape(unsub), "</a>");
  }
  absl::StrAppend(&m.html, "</small></p>\n</body></html>\n");
  return m;
}

std::string ParagraphsHtml(absl::string_view text) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, "<p>", HtmlEscape(line), "</p>\n");
  }
  return out;
}

}  // namespace

std::string ConsolePath(const Notice& n) {
  const auto id = [&](absl::string_view name) {
    const size_t slash = name.rfind('/');
    return std::string(slash == absl::string_view::npos ? name : name.substr(slash + 1));
  };
  switch (n.kind) {
    case v1::BOOKING_CONFIRMED:
    case v1::BOOKING_APPROVED:
    case v1::BOOKING_REJECTED:
    case v1::BOOKING_CANCELLED_BY_OUTAGE:
    case v1::BOOKING_REMINDER:
    case v1::BOOKING_MISSED:
    case v1::BOOKING_CANCELLED:
    case v1::LEASE_APPROVED:
    case v1::LEASE_HANDOVER_DUE:
    case v1::LEASE_RETURN_DUE:
    case v1::LEASE_REJECTED:
    case v1::LEASE_CANCELLED:
      return "#/lab/bookings";
    case v1::APPROVAL_REQUESTED:
      return "#/staff/approvals";
    case v1::QUOTE_ISSUED:
    case v1::REPORT_DELIVERED:
    case v1::SERVICE_SCHEDULED:
      return absl::StrCat("#/lab/orders/", id(n.resource));
    case v1::ORDER_CANCELLED:
    case v1::REPORT_AUTO_ACCEPTED:
      // The staff's mail (the client cancelled; a report accepted
      // automatically) goes to the staff's list.
      if (!n.org_roles.empty()) return "#/staff/orders";
      return absl::StrCat("#/lab/orders/", id(n.resource));
    case v1::ORDER_DISPUTED:
    case v1::ORDER_RECEIVED:
    case v1::QUOTE_ACCEPTED:
      return "#/staff/orders";
    case v1::INVOICE_ISSUED:
      return absl::StrCat("#/billing/invoices/", id(n.resource));
    case v1::PAYMENT_RECEIVED: {
      auto it = n.text.find("invoice");
      if (it != n.text.end() && !it->second.empty()) return absl::StrCat("#/billing/invoices/", id(it->second));
      return "#/billing/statement";
    }
    case v1::SETTLEMENT_TRANSFERS_DUE:
      return "#/billing/settlements";
    case v1::SUBSIDY_POOL_LOW:
      return "#/billing/subsidies";
    case v1::WEBHOOK_DISABLED:
      return "#/billing/webhooks";
    default:
      return "";
  }
}

RenderedMail Render(const Notice& notice, const RenderContext& c) {
  std::map<std::string, std::string> values = notice.text;
  for (const auto& [k, t] : notice.times) values[k] = FormatTime(t, c);
  values["instrument"] = c.instrument_name;
  if (c.has_window) {
    values["window"] = absl::StrCat(FormatTime(c.window_start, c), " - ", FormatTime(c.window_end, c));
  }
  // Organisations and people by their display names, else their ids.
  for (const auto& [k, name] : notice.names) {
    auto it = c.names.find(k);
    const size_t slash = name.rfind('/');
    values[k] = it != c.names.end() && !it->second.empty() ? it->second
                : slash == std::string::npos                ? name
                                                            : name.substr(slash + 1);
  }
  // SETTLEMENT_TRANSFERS_DUE: a line per transfer (to_0, amount_0, ...).
  if (notice.kind == v1::SETTLEMENT_TRANSFERS_DUE) {
    std::string lines;
    for (size_t k = 0; notice.names.count(absl::StrCat("to_", k)) > 0; ++k) {
      absl::StrAppend(&lines, "  -> ", values[absl::StrCat("to_", k)], ": ", values[absl::StrCat("amount_", k)], "\n");
    }
    values["transfers"] = lines;
  }
  if (auto role = notice.text.find("by_role"); role != notice.text.end()) {
    values["by"] = ByText(role->second, values["by_org"], En(c));
  }
  if (auto reason = values.find("reason"); reason != values.end() && reason->second.empty()) {
    reason->second = En(c) ? "none given" : "未说明";
  }
  const KindTemplates* t = Find(notice.kind, notice.variant);
  const Template& tm = t == nullptr ? Template{"LabShare", ""} : (En(c) ? t->en : t->zh);
  const std::string subject = Fill(tm.subject, values);
  const std::string body = Fill(tm.body, values);
  const std::string link = absl::StrCat(c.console_url, "/", ConsolePath(notice));
  return Wrap(subject, body, ParagraphsHtml(body), link, c);
}

std::string DigestSubject(const std::string& language, absl::string_view count) {
  RenderContext c;
  c.language = language;
  return En(c) ? absl::StrCat("LabShare daily digest: ", count, " notifications")
               : absl::StrCat("LabShare 每日摘要：", count, " 条通知");
}

RenderedMail RenderDigest(const std::vector<RenderedMail>& parts, const RenderContext& c) {
  const std::string subject = DigestSubject(c.language, absl::StrCat(parts.size()));
  std::string text, html;
  for (const RenderedMail& p : parts) {
    absl::StrAppend(&text, "== ", p.subject, "\n", p.text, "\n");
    absl::StrAppend(&html, "<h2>", HtmlEscape(p.subject), "</h2>\n<pre>", HtmlEscape(p.text), "</pre>\n");
  }
  return Wrap(subject, text, html, c.console_url + "/", c, /*digest=*/true);
}

std::string DigestSettingsUrl(const std::string& console_url) {
  return absl::StrCat(console_url, "/#/settings/notifications");
}

}  // namespace labshare::notify
