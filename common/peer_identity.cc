#include "common/peer_identity.h"

#include <grpc/grpc_security_constants.h>


namespace labshare {

std::string PeerServiceName(const grpc::AuthContext& context, std::string_view trust_domain) {
  if (trust_domain.empty() || !context.IsPeerAuthenticated()) return "";
  const auto type = context.FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
  if (type.size() != 1 || std::string_view(type[0].data(), type[0].size()) != GRPC_SSL_TRANSPORT_SECURITY_TYPE) {
    return "";
  }
  const auto ids = context.FindPropertyValues(GRPC_PEER_SPIFFE_ID_PROPERTY_NAME);
  if (ids.size() != 1) return "";
  std::string_view id(ids[0].data(), ids[0].size());
  const std::string prefix = "spiffe://" + std::string(trust_domain) + "/";
  if (id.substr(0, prefix.size()) != prefix) return "";
  id.remove_prefix(prefix.size());
  if (id.empty() || id.size() > 63) return "";
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return "";
  }
  return std::string(id);
}

}  // namespace labshare
