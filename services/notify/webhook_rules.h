// The pure rules of webhooks (no storage, no network): which events a
// webhook may subscribe to and which organisations an event concerns (the
// party rule of proto/labshare/notify/v1/webhooks.proto), the delivery body
// and signature, the checks of a registration.
#ifndef LABSHARE_SERVICES_NOTIFY_WEBHOOK_RULES_H_
#define LABSHARE_SERVICES_NOTIFY_WEBHOOK_RULES_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/events.h"

namespace labshare::notify {

// The event types a webhook may subscribe to: full names of event payloads
// ("labshare.booking.v1.BookingConfirmed"), sorted.
const std::vector<std::string>& WebhookEventTypes();
bool IsWebhookEventType(absl::string_view type);

// An outbox entry as the webhooks see it.
struct WebhookEvent {
  std::string event_id;
  std::string event_type;  // the payload's full name
  absl::Time event_time;
  // The parties ("organizations/{id}"), distinct, in order of appearance.
  std::vector<std::string> organizations;
  // The whole envelope in the protobuf JSON mapping.
  std::string envelope_json;
};

// The entry decoded, when it is an event webhooks deliver (a type of
// WebhookEventTypes() with at least one party); nullopt for every other
// entry. INVALID_ARGUMENT UNDECODABLE_EVENT for a known envelope type whose
// payload does not parse or carries no event id.
absl::StatusOr<std::optional<WebhookEvent>> DecodeWebhookEvent(const StreamEvent& entry);

// The delivery id of an event: the event id when it is a resource id,
// otherwise 32 hex characters of its SHA-256.
std::string DeliveryIdOf(absl::string_view event_id);

// The JSON body of one delivery (webhooks.proto: "id", "type", "time",
// "organization", "webhook", "event").
std::string WebhookBody(const WebhookEvent& event, absl::string_view delivery_id,
                        absl::string_view organization, absl::string_view webhook);

// The trace id of the event a delivery body carries (its
// "event"."header"."traceId"); "" when it has none or the body is not such
// JSON. The delivery's own events (WebhookDelivered, WebhookDeliveryDead,
// WebhookDisabled) carry it: the body is stored with the delivery as sent,
// so this needs no other record, also for deliveries queued before.
std::string WebhookBodyTraceId(absl::string_view body);

// "v1=" + lowercase hex HMAC-SHA256(secret, id + "." + timestamp + "." + body).
std::string WebhookSignature(absl::string_view secret, absl::string_view id, absl::string_view timestamp,
                             absl::string_view body);

// "whsec_" + 64 hex characters of 32 random bytes.
std::string NewWebhookSecret();

// Registration checks. INVALID_ARGUMENT INVALID_FIELD naming `field`.
absl::Status CheckWebhookUrl(absl::string_view url, const std::string& field);
absl::Status CheckWebhookEventTypes(const std::vector<std::string>& types, const std::string& field);
absl::Status CheckWebhookDescription(absl::string_view description, const std::string& field);

// The delay before attempt `attempt + 1` after `attempt` failed attempts
// (attempt >= 1): initial x 2^(attempt-1), capped at max, times a uniform
// factor in [0.5, 1] (`unit` in [0, 1]).
absl::Duration WebhookRetryDelay(int attempt, absl::Duration initial, absl::Duration max, double unit);

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_WEBHOOK_RULES_H_
