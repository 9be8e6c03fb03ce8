#include "common/channel.h"

#include "common/secret_file.h"

namespace labshare {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const TlsMaterial& tls,
                                                           const grpc::ChannelArguments& args) {
  const bool use_tls = tls.has_identity() || !tls.ca_pem.empty();
  if (!use_tls) {
    if (absl::Status s = CheckPlaintextAllowed(target, "target"); !s.ok()) return s;
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_pem;  // empty: gRPC's default roots
  options.pem_cert_chain = tls.cert_pem;
  options.pem_private_key = tls.key_pem;
  auto credentials = grpc::SslCredentials(options);
  WipeSecret(options.pem_private_key);
  return grpc::CreateCustomChannel(target, credentials, args);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannelWithFiles(const std::string& target,
                                                                    const TlsFiles& files,
                                                                    const grpc::ChannelArguments& args) {
  auto tls = LoadTls(files, /*server=*/false);
  if (!tls.ok()) return tls.status();
  auto channel = MakeChannel(target, *tls, args);
  WipeSecret(tls->key_pem);
  return channel;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target) {
  // A name with several addresses (a headless Service, dns:///booking:50052)
  // spreads calls over every replica instead of sticking to the first.
  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  return MakeChannelWithFiles(target, TlsFilesFromFlags(), args);
}

}  // namespace labshare
