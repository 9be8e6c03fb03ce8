// labshare-inventory: organisations, users, facilities, instruments, rate
// cards, qualifications and maintenance windows.
#include "absl/flags/flag.h"
#include "common/page_token.h"
#include "common/server.h"
#include "common/token_flags.h"
#include "services/inventory/identity_service.h"
#include "services/inventory/inventory_manager.h"
#include "services/inventory/inventory_service.h"

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-inventory: the consortium's organisations, users, facilities, "
                        "instruments, rate cards, qualifications and maintenance windows.\n"
                        "Usage: labshare-inventory --listen=HOST:PORT --redis=HOST:PORT "
                        "[--metrics_listen=HOST:PORT] [--token_key_file=FILE]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  labshare::TokenSigner signer = labshare::SignerFromFlags();
  const std::unique_ptr<labshare::Clock> clock_owner = labshare::ClockFromFlags();
  const labshare::Clock& clock = *clock_owner;
  // Tokens expire by the wall clock, whatever the domain clock says.
  labshare::SystemClock wall;
  labshare::inventory::InventoryStore store(&redis);
  labshare::inventory::InventoryManager manager(&store, &clock, labshare::PageTokenCodec::FromSigner(signer));
  labshare::MethodPolicy policy = labshare::inventory::InventoryPolicy();
  labshare::inventory::AddIdentityPolicy(&policy);
  labshare::Authorizer authorizer(&signer, std::move(policy), &wall);
  labshare::inventory::InventoryService service(&manager, &authorizer);
  // Sign-in (labshare.identity.v1): the one place LabShare tokens are minted.
  const std::unique_ptr<labshare::TokenIssuer> issuer =
      absl::GetFlag(FLAGS_token_signing_key_file).empty() ? nullptr : labshare::TokenIssuerFromFlags();
  labshare::inventory::SignIn sign_in = labshare::inventory::SignInFromFlags(&redis, &store, issuer.get(), &wall);
  labshare::inventory::IdentityService identity(sign_in.manager.get(), &authorizer);
  return labshare::RunService("inventory", &redis, &authorizer, {&service, &identity});
}
