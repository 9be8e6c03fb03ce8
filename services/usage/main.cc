// labshare-usage: utilisation and sharing figures and the audit trail.
//
// The contract (proto/labshare/usage/v1) is complete; its behaviour is built by
// a later issue. Until then the server starts, authenticates calls, answers
// health checks and reflection, and every RPC returns UNIMPLEMENTED.
#include "absl/flags/flag.h"
#include "common/server.h"
#include "labshare/usage/v1/usage.grpc.pb.h"



namespace {
class UsageService final : public labshare::usage::v1::UsageService::Service {};
}  // namespace

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-usage: utilisation and sharing figures and the audit trail.\n"
                        "Usage: labshare-usage --listen=HOST:PORT --redis=HOST:PORT "
                        "[--metrics_listen=HOST:PORT] [--token_key_file=FILE]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  labshare::TokenSigner signer = labshare::SignerFromFlags();
  labshare::SystemClock clock;
  // No method is allowed yet: deny by default until the service is built.
  labshare::Authorizer authorizer(&signer, labshare::MethodPolicy(), &clock);
  UsageService service;
  return labshare::RunService("usage", &redis, &authorizer, {&service});
}
