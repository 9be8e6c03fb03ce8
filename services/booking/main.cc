// labshare-booking: bookings in the four sharing modes on conflict-free calendars.
//
// The contract (proto/labshare/booking/v1) is complete; its behaviour is built by
// a later issue. Until then the server starts, authenticates calls, answers
// health checks and reflection, and every RPC returns UNIMPLEMENTED.
#include "absl/flags/flag.h"
#include "common/server.h"
#include "labshare/booking/v1/booking.grpc.pb.h"

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory.");

namespace {
class BookingService final : public labshare::booking::v1::BookingService::Service {};
}  // namespace

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-booking: bookings in the four sharing modes on conflict-free calendars.\n"
                        "Usage: labshare-booking --listen=HOST:PORT --redis=HOST:PORT "
                        "[--metrics_listen=HOST:PORT] [--token_key_file=FILE]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  labshare::TokenSigner signer = labshare::SignerFromFlags();
  labshare::SystemClock clock;
  // No method is allowed yet: deny by default until the service is built.
  labshare::Authorizer authorizer(&signer, labshare::MethodPolicy(), &clock);
  BookingService service;
  return labshare::RunService("booking", &redis, &authorizer, {&service});
}
