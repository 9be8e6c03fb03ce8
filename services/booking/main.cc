// labshare-booking: bookings on conflict-free instrument calendars.
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "common/server.h"
#include "common/service_identity.h"
#include "services/booking/booking_manager.h"
#include "services/booking/booking_service.h"

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory.");
ABSL_FLAG(absl::Duration, inventory_cache_ttl, absl::Seconds(5),
          "How long inventory answers (instruments, users, rates, ...) are reused.");

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-booking: bookings in the four sharing modes on conflict-free "
                        "calendars.\nUsage: labshare-booking --listen=HOST:PORT --redis=HOST:PORT "
                        "--inventory=HOST:PORT [--metrics_listen=HOST:PORT] [--token_key_file=FILE]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  labshare::TokenSigner signer = labshare::SignerFromFlags();
  labshare::SystemClock clock;
  labshare::ServiceIdentity identity(&signer, "booking", &clock);
  labshare::booking::InventoryClient inventory(
      grpc::CreateChannel(absl::GetFlag(FLAGS_inventory), grpc::InsecureChannelCredentials()),
      &identity, &clock, absl::GetFlag(FLAGS_inventory_cache_ttl));
  labshare::booking::BookingStore store(&redis);
  labshare::booking::BookingManager manager(&store, &inventory, &clock);
  labshare::Authorizer authorizer(&signer, labshare::booking::BookingPolicy(), &clock);
  labshare::booking::BookingService service(&manager, &authorizer);
  return labshare::RunService("booking", &redis, &authorizer, {&service});
}
