// The calling service's name, proven by its client certificate.
//
// Service certificates carry the URI SAN spiffe://<trust_domain>/<service>
// (e.g. spiffe://labshare/booking). gRPC puts a verified peer certificate's
// SPIFFE id in the auth context ("peer_spiffe_id", set only when the chain
// verified against --tls_ca and the certificate has exactly one URI SAN).
#ifndef LABSHARE_COMMON_PEER_IDENTITY_H_
#define LABSHARE_COMMON_PEER_IDENTITY_H_

#include <string>
#include <string_view>

#include <grpcpp/security/auth_context.h>

namespace labshare {

// The service name ("booking") from a verified peer certificate whose SPIFFE
// id is spiffe://<trust_domain>/<name> with one path segment of [a-z0-9_-];
// "" for anything else (no TLS, no client certificate, another trust domain,
// a longer path).
std::string PeerServiceName(const grpc::AuthContext& context, std::string_view trust_domain);

}  // namespace labshare

#endif  // LABSHARE_COMMON_PEER_IDENTITY_H_
