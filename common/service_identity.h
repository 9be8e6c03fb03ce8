// How a service identifies itself when it calls another service: a bearer
// token with the SERVICE role, minted from the shared signing key, kept
// while it has more than a minute to live and then minted again.
#ifndef LABSHARE_COMMON_SERVICE_IDENTITY_H_
#define LABSHARE_COMMON_SERVICE_IDENTITY_H_

#include <mutex>
#include <string>

#include <grpcpp/client_context.h>

#include "common/clock.h"
#include "common/token.h"

namespace labshare {

class ServiceIdentity {
 public:
  // signer and clock must outlive this. Thread-safe.
  ServiceIdentity(const TokenSigner* signer, std::string service_name, const Clock* clock,
                  absl::Duration ttl = absl::Minutes(10))
      : signer_(signer), service_name_(std::move(service_name)), clock_(clock), ttl_(ttl) {}

  // "Bearer <token>" for an outgoing call.
  std::string Authorization();
  // Adds the authorization metadata to an outgoing call.
  void Attach(grpc::ClientContext* context) { context->AddMetadata("authorization", Authorization()); }

 private:
  const TokenSigner* signer_;
  const std::string service_name_;
  const Clock* clock_;
  const absl::Duration ttl_;
  std::mutex mu_;
  std::string token_;             // guarded by mu_
  absl::Time expires_at_;         // guarded by mu_
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_SERVICE_IDENTITY_H_
