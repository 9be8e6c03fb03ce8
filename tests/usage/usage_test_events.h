// Events the usage tests fold, built in one place: an instrument's version
// (inventory's InstrumentChanged), service income of a posted charge or of a
// correction (billing), a service order's acceptance and cancellation
// (booking), and the outbox entry that carries an event.
#ifndef LABSHARE_TESTS_USAGE_USAGE_TEST_EVENTS_H_
#define LABSHARE_TESTS_USAGE_USAGE_TEST_EVENTS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "common/events.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::usage::test_events {

// What an InstrumentChanged says of instruments/<id>; unset fields stay
// unset in the event (state UNSPECIFIED, no update_time, no original value).
struct InstrumentFacts {
  std::string owner = "organizations/own";
  std::string category;
  int daily_available_hours = 24;
  labshare::inventory::v1::InstrumentState state = labshare::inventory::v1::INSTRUMENT_STATE_UNSPECIFIED;
  absl::Time create_time;
  std::optional<absl::Time> update_time;
  int64_t original_value_cny = 0;  // minor units; 0: none
};

inline labshare::inventory::v1::InventoryEvent InstrumentChanged(const std::string& id, const InstrumentFacts& f) {
  labshare::inventory::v1::InventoryEvent e;
  auto* in = e.mutable_instrument_changed()->mutable_instrument();
  in->set_name("instruments/" + id);
  in->set_owner_organization(f.owner);
  if (!f.category.empty()) in->set_category(f.category);
  if (f.state != labshare::inventory::v1::INSTRUMENT_STATE_UNSPECIFIED) in->set_state(f.state);
  in->set_daily_available_hours(f.daily_available_hours);
  if (f.original_value_cny > 0) {
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(f.original_value_cny);
  }
  *in->mutable_create_time() = ToProto(f.create_time);
  if (f.update_time) *in->mutable_update_time() = ToProto(*f.update_time);
  return e;
}

// `amount` of service income on instruments/<id> of organizations/own,
// ON_SITE, all paid by `payer` in `currency`, effective at `at`: a posted
// charge's income, or with `correction` a correction's income delta.
inline labshare::billing::v1::BillingEvent ServiceIncome(const std::string& id, const std::string& payer,
                                                         const std::string& currency, int64_t amount, absl::Time at,
                                                         bool correction = false) {
  labshare::billing::v1::BillingEvent e;
  auto* f = correction ? e.mutable_correction_posted()->add_income_deltas() : e.mutable_charge_posted()->mutable_income();
  f->set_owner_organization("organizations/own");
  f->set_instrument("instruments/" + id);
  f->set_mode(labshare::type::v1::ON_SITE);
  f->set_currency_code(currency);
  *f->mutable_effective_time() = ToProto(at);
  auto* share = f->add_shares();
  share->set_payer_organization(payer);
  share->set_share_bps(10000);
  share->mutable_service_income()->set_currency_code(currency);
  share->mutable_service_income()->set_amount_minor(amount);
  *f->mutable_service_income() = share->service_income();
  return e;
}

// Service order serviceOrders/<id> on instruments/<instrument> for
// `client`, requested at `create_time`.
inline labshare::booking::v1::ServiceOrder ServiceOrder(const std::string& id, const std::string& instrument,
                                                        const std::string& client, absl::Time create_time) {
  labshare::booking::v1::ServiceOrder o;
  o.set_name("serviceOrders/" + id);
  o.set_instrument("instruments/" + instrument);
  o.set_client_organization(client);
  *o.mutable_create_time() = ToProto(create_time);
  return o;
}

// Its client accepts its quote at `at`.
inline labshare::booking::v1::BookingEvent QuoteAccepted(labshare::booking::v1::ServiceOrder o, absl::Time at) {
  o.set_state(labshare::booking::v1::ServiceOrder::QUOTE_ACCEPTED);
  *o.mutable_quote_accept_time() = ToProto(at);
  labshare::booking::v1::BookingEvent e;
  *e.mutable_service_order_quote_accepted()->mutable_service_order() = std::move(o);
  return e;
}

// Cancelled from `previous` by a member of `actor_organization` (the order
// as it stands: a re-quote has cleared its quote_accept_time).
inline labshare::booking::v1::BookingEvent OrderCancelled(labshare::booking::v1::ServiceOrder o,
                                                          labshare::booking::v1::ServiceOrder::State previous,
                                                          const std::string& actor_organization) {
  o.set_state(labshare::booking::v1::ServiceOrder::CANCELLED);
  labshare::booking::v1::BookingEvent e;
  e.mutable_header()->set_actor_organization(actor_organization);
  auto* c = e.mutable_service_order_cancelled();
  *c->mutable_service_order() = std::move(o);
  c->set_previous_state(previous);
  return e;
}

// The outbox entry of `event` under event id `event_id`.
template <typename Event>
StreamEvent Entry(Event event, const std::string& event_id) {
  event.mutable_header()->set_event_id(event_id);
  StreamEvent e;
  e.payload = event.SerializeAsString();
  return e;
}

}  // namespace labshare::usage::test_events

#endif  // LABSHARE_TESTS_USAGE_USAGE_TEST_EVENTS_H_
