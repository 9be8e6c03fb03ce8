// The HTTPS POST of one webhook attempt (libcurl): the JSON body with the
// LabShare-Webhook-* headers, no redirects, peer and host verified, the
// answer's body read up to 64 KiB and dropped. Network timing only: the
// caller passes the wall-clock timestamp it signed.
#ifndef LABSHARE_SERVICES_NOTIFY_WEBHOOK_HTTP_H_
#define LABSHARE_SERVICES_NOTIFY_WEBHOOK_HTTP_H_

#include <sys/socket.h>

#include <string>

#include "absl/time/time.h"
#include "services/notify/webhook_manager.h"

namespace labshare::notify {

struct WebhookPost {
  std::string url;
  std::string id;         // LabShare-Webhook-Id
  std::string timestamp;  // LabShare-Webhook-Timestamp (Unix seconds)
  std::string signature;  // LabShare-Signature
  std::string body;
};

struct WebhookHttpOptions {
  absl::Duration timeout = absl::Seconds(10);
  // PEM file of the CA certificates to trust; empty: the system's.
  std::string ca_file;
  // false: a connection to a loopback, private, shared, link-local,
  // unspecified, multicast or reserved address is refused (the platform's
  // own network, Redis included, is no webhook endpoint). Tests allow it.
  bool allow_private_addresses = false;
};

// Whether webhooks refuse to connect to this address (see above).
bool IsPrivateAddress(const ::sockaddr* address);

// ok for a 2xx; otherwise the status ("HTTP 503") or why no answer came
// ("no answer: <libcurl's reason>").
AttemptResult PostWebhook(const WebhookPost& post, const WebhookHttpOptions& options);

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_WEBHOOK_HTTP_H_
