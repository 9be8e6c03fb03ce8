// gRPC adapter of the booking service. The role policy of every method is
// declared in the .cc next to the methods (deny by default); methods not
// built yet fall through to the generated base class (UNIMPLEMENTED).
// CreateBooking, GetBooking, ListBookings, QueryAvailability and
// SearchAvailableInstruments run on the callback API
// (common/unary.h HandleUnaryAsync): their Redis steps go through the
// store's Redis pipeline, so no thread waits on Redis. ListBookings' and
// QueryAvailability's messages live on an arena per call (ArenaMessages) and
// their answers are built in place (HandleUnaryAsyncInPlace).
#ifndef LABSHARE_SERVICES_BOOKING_BOOKING_SERVICE_H_
#define LABSHARE_SERVICES_BOOKING_BOOKING_SERVICE_H_

#include "common/auth.h"
#include "common/unary.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "services/booking/booking_manager.h"

namespace labshare::booking {

// Every method on the callback API: the five hot ones answer from the Redis
// pipeline (HandleUnaryAsync), the others run their synchronous use cases on
// booking's bounded workers (HandleUnaryBlocking): no thread per call.
class BookingService final : public v1::BookingService::CallbackService {
 public:
  // manager and authorizer must outlive the service.
  BookingService(BookingManager* manager, const Authorizer* authorizer)
      : manager_(manager), auth_(authorizer) {
    SetMessageAllocatorFor_ListBookings(&list_messages_);
    SetMessageAllocatorFor_QueryAvailability(&availability_messages_);
  }

  grpc::ServerUnaryReactor* CreateBooking(grpc::CallbackServerContext* ctx,
                                          const v1::CreateBookingRequest* req,
                                          v1::Booking* resp) override;
  grpc::ServerUnaryReactor* GetBooking(grpc::CallbackServerContext* ctx, const v1::GetBookingRequest* req,
                                       v1::Booking* resp) override;
  grpc::ServerUnaryReactor* ListBookings(grpc::CallbackServerContext* ctx, const v1::ListBookingsRequest* req,
                                         v1::ListBookingsResponse* resp) override;
  grpc::ServerUnaryReactor* QueryAvailability(grpc::CallbackServerContext* ctx,
                                              const v1::QueryAvailabilityRequest* req,
                                              v1::QueryAvailabilityResponse* resp) override;
  grpc::ServerUnaryReactor* SearchAvailableInstruments(grpc::CallbackServerContext* ctx,
                                                       const v1::SearchAvailableInstrumentsRequest* req,
                                                       v1::SearchAvailableInstrumentsResponse* resp) override;

#define LABSHARE_BOOKING_RPC(Method, Req, Resp)                                                      \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* ctx, const v1::Req* req, v1::Resp* resp) \
      override;
#include "services/booking/booking_methods.inc"
#undef LABSHARE_BOOKING_RPC

 private:
  BookingManager* manager_;
  const Authorizer* auth_;
  BlockingExecutor* const workers_ = ServiceWorkers("booking");
  // ListBookings' and QueryAvailability's request and response on one arena
  // per call.
  ArenaMessages<v1::ListBookingsRequest, v1::ListBookingsResponse> list_messages_;
  ArenaMessages<v1::QueryAvailabilityRequest, v1::QueryAvailabilityResponse> availability_messages_;
};

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_BOOKING_SERVICE_H_
