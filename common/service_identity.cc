#include "common/service_identity.h"

namespace labshare {

std::string ServiceIdentity::Authorization() {
  const absl::Time now = clock_->Now();
  std::lock_guard<std::mutex> lock(mu_);
  if (token_.empty() || now + absl::Minutes(1) >= expires_at_) {
    Principal p;
    p.user_id = service_name_;
    p.roles = {Role::kService};
    p.expires_at = now + ttl_;
    token_ = signer_->Mint(p, now);
    expires_at_ = p.expires_at;
  }
  return "Bearer " + token_;
}

}  // namespace labshare
