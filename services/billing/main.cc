// labshare-billing: prices, the double-entry ledger, invoices and settlement.
//
// The contract (proto/labshare/billing/v1) is complete; its behaviour is built by
// a later issue. Until then the server starts, authenticates calls, answers
// health checks and reflection, and every RPC returns UNIMPLEMENTED.
#include "absl/flags/flag.h"
#include "common/server.h"
#include "labshare/billing/v1/billing.grpc.pb.h"

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory (rate cards).");

namespace {
class BillingService final : public labshare::billing::v1::BillingService::Service {};
}  // namespace

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-billing: prices, the double-entry ledger, invoices and settlement.\n"
                        "Usage: labshare-billing --listen=HOST:PORT --redis=HOST:PORT "
                        "[--metrics_listen=HOST:PORT] [--token_key_file=FILE]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  labshare::TokenSigner signer = labshare::SignerFromFlags();
  labshare::SystemClock clock;
  // No method is allowed yet: deny by default until the service is built.
  labshare::Authorizer authorizer(&signer, labshare::MethodPolicy(), &clock);
  BillingService service;
  return labshare::RunService("billing", &redis, &authorizer, {&service});
}
