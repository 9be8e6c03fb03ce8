// labshare-inventory: organisations, users, facilities, instruments, rate
// cards, qualifications and maintenance windows.
#include "common/log.h"
#include "common/outbox_trim.h"
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
                        "--jwks=FILE|URL --token_signing_key_file=FILE [--metrics_listen=HOST:PORT]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  const std::unique_ptr<labshare::TokenVerifier> verifier = labshare::TokenVerifierFromFlags();
  // The one component holding the token signing key (its identity service
  // mints the access tokens); refused when others can read the file.
  const std::unique_ptr<labshare::TokenIssuer> issuer = labshare::TokenIssuerFromFlags();
  const std::unique_ptr<labshare::Clock> clock_owner = labshare::ClockFromFlags();
  const labshare::Clock& clock = *clock_owner;
  // Tokens expire by the wall clock, whatever the domain clock says.
  labshare::SystemClock wall;
  labshare::inventory::InventoryStore store(&redis);
  // Waits for Redis as long as it takes (not ready meanwhile: the health
  // server starts after this); SIGTERM ends the wait.
  auto page_tokens = labshare::PageTokenCodec::FromRedis(&redis, "{inventory}", absl::InfiniteDuration(),
                                                         labshare::ShutdownSignalPending);
  if (!page_tokens.ok()) {
    if (absl::IsCancelled(page_tokens.status())) return 0;  // stopped before it started
    labshare::LogError("cannot read the page-token key from Redis", {{"error", page_tokens.status().ToString()}});
    return 2;
  }
  labshare::inventory::InventoryManager manager(&store, &clock, *std::move(page_tokens));
  // Instruments registered before facilities indexed theirs (idempotent).
  if (auto examined = manager.BackfillFacilityInstruments(); !examined.ok()) {
    labshare::LogError("cannot index the facilities' instruments", {{"error", examined.status().ToString()}});
    return 2;
  }
  // Rate lines indexed in the first format, ordered by key as ListRates says.
  if (auto moved = manager.MigrateRateIndexes(); !moved.ok()) {
    labshare::LogError("cannot migrate the rate indexes", {{"error", moved.status().ToString()}});
    return 2;
  } else if (*moved > 0) {
    labshare::LogInfo("rate indexes migrated", {{"members", std::to_string(*moved)}});
  }
  // Maintenance windows indexed by whole seconds, or starting before 1970
  // and indexed by "%020d" seconds, ordered to the nanosecond by start as
  // ListMaintenanceWindows says.
  if (auto moved = manager.MigrateWindowIndexes(); !moved.ok()) {
    labshare::LogError("cannot migrate the maintenance window indexes", {{"error", moved.status().ToString()}});
    return 2;
  } else if (*moved > 0) {
    labshare::LogInfo("maintenance window indexes migrated", {{"members", std::to_string(*moved)}});
  }
  labshare::MethodPolicy policy = labshare::inventory::InventoryPolicy();
  labshare::inventory::AddIdentityPolicy(&policy);
  labshare::Authorizer authorizer(verifier.get(), std::move(policy), &wall);
  labshare::inventory::InventoryService service(&manager, &authorizer);
  // Sign-in (labshare.identity.v1): the one place LabShare tokens are minted.
  labshare::inventory::SignIn sign_in = labshare::inventory::SignInFromFlags(&redis, &store, issuer.get(), &wall);
  labshare::inventory::IdentityService identity(sign_in.manager.get(), &authorizer);
  // Outbox retention and lag metrics (common/outbox_trim.h).
  // {inventory}:outbox is read by usage, notify's modules and booking.
  std::vector<std::string> groups = labshare::OutboxEveryStreamGroups();
  groups.push_back(labshare::kOutboxGroupBooking);
  labshare::OutboxMaintenance outbox(&redis, {{"{inventory}:outbox", groups}});
  return labshare::RunService("inventory", &redis, &authorizer, {&service, &identity});
}
