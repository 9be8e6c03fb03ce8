// labshare-inventory: organisations, users, facilities, instruments, rate
// cards, qualifications and maintenance windows.
#include "common/server.h"
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
  labshare::SystemClock clock;
  labshare::inventory::InventoryStore store(&redis);
  labshare::inventory::InventoryManager manager(&store, &clock);
  labshare::Authorizer authorizer(&signer, labshare::inventory::InventoryPolicy(), &clock);
  labshare::inventory::InventoryService service(&manager, &authorizer);
  return labshare::RunService("inventory", &redis, &authorizer, {&service});
}
