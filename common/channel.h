// Client channels to LabShare services (and to anything else we call over
// gRPC), with the transport rules of common/tls.h: TLS when TLS settings are
// given (the CA as root, or the system's roots when none; the own
// certificate as client certificate when there is one, which makes the call
// a service's call: common/peer_identity.h), plaintext only to loopback.
#ifndef LABSHARE_COMMON_CHANNEL_H_
#define LABSHARE_COMMON_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "common/tls.h"

namespace labshare {

// With --tls_cert, --tls_key and --tls_ca, balanced round_robin over every
// address the target resolves to. Errors: PLAINTEXT_REFUSED,
// TLS_CONFIG_INVALID and the key file's (common/tls.h).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target);

// The same with explicit settings; `args` are passed to the channel.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& target, const TlsMaterial& tls, const grpc::ChannelArguments& args = {});
// Reads the files first (LoadTls).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannelWithFiles(
    const std::string& target, const TlsFiles& files, const grpc::ChannelArguments& args = {});

}  // namespace labshare

#endif  // LABSHARE_COMMON_CHANNEL_H_
