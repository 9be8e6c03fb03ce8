// The async read paths never wait on inventory on a pipeline thread (H1):
// an inventory answer that does not come does not hold up other requests'
// Redis steps.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "services/booking/booking_service.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::booking {
namespace {

// Inventory in front of the real one: forwards every call (as admin), but
// the first GetInstrument after Arm() waits until Release().
class HeldInventory final : public iv::InventoryService::Service {
 public:
  HeldInventory(iv::InventoryService::Stub* real, std::string token) : real_(real), token_(std::move(token)) {}
  void Arm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = true;
  }
  // Waits (bounded) until the armed call arrived.
  bool WaitHeld() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return held_; });
  }
  // Every GetInstrument from now on waits until Release().
  void ArmAll() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_all_ = true;
  }
  // Waits (bounded) until at least n calls are held.
  bool WaitHeldCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return held_calls_ >= n; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

#define LABSHARE_FORWARD(Method, Req, Resp)                                                  \
  grpc::Status Method(grpc::ServerContext*, const iv::Req* req, iv::Resp* resp) override { \
    Hold(#Method);                                                                         \
    grpc::ClientContext ctx;                                                               \
    ctx.AddMetadata("authorization", "Bearer " + token_);                                  \
    return real_->Method(&ctx, *req, resp);                                                \
  }
  LABSHARE_FORWARD(GetOrganization, GetOrganizationRequest, Organization)
  LABSHARE_FORWARD(GetUser, GetUserRequest, User)
  LABSHARE_FORWARD(GetFacility, GetFacilityRequest, Facility)
  LABSHARE_FORWARD(GetInstrument, GetInstrumentRequest, Instrument)
  LABSHARE_FORWARD(ListInstruments, ListInstrumentsRequest, ListInstrumentsResponse)
  LABSHARE_FORWARD(ListRates, ListRatesRequest, ListRatesResponse)
  LABSHARE_FORWARD(GetQualification, GetQualificationRequest, Qualification)
  LABSHARE_FORWARD(RecordQualificationUse, RecordQualificationUseRequest, Qualification)
  LABSHARE_FORWARD(GetMaintenanceWindow, GetMaintenanceWindowRequest, MaintenanceWindow)
  LABSHARE_FORWARD(ListMaintenanceWindows, ListMaintenanceWindowsRequest, ListMaintenanceWindowsResponse)
#undef LABSHARE_FORWARD

 private:
  void Hold(const std::string& method) {
    std::unique_lock<std::mutex> lock(mu_);
    if ((!armed_ && !hold_all_) || method != "GetInstrument") return;
    armed_ = false;
    held_ = true;
    ++held_calls_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return released_; });
  }

  iv::InventoryService::Stub* real_;
  const std::string token_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false, held_ = false, released_ = false, hold_all_ = false;
  int held_calls_ = 0;
};

class AsyncReadsTest : public BookingServiceTest {
 protected:
  void SetUpHeld() {
    held_ = std::make_unique<HeldInventory>(inventory_.get(), admin_);
    held_server_ = Start("inventory", inv_auth_.get(), held_.get());
    held_client_ = std::make_unique<InventoryClient>(ServiceChannel(*held_server_, "booking"), &clock_,
                                                     absl::ZeroDuration());
    // The fixture's pipeline: one thread for the one Redis server.
    held_manager_ = std::make_unique<BookingManager>(store_.get(), held_client_.get(), &clock_,
                                                     testing::TestPageTokens());
    held_service_ = std::make_unique<BookingService>(held_manager_.get(), auth_.get());
    held_booking_ = Start("booking", auth_.get(), held_service_.get());
    held_stub_ = v1::BookingService::NewStub(Channel(*held_booking_));
  }
  void TearDown() override {
    if (held_) held_->Release();
  }

  v1::CreateBookingRequest Request(absl::Duration from, absl::Duration to, const std::string& request_id) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/ana");
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_request_id(request_id);
    return r;
  }

  std::unique_ptr<HeldInventory> held_;
  std::unique_ptr<Server> held_server_;
  std::unique_ptr<InventoryClient> held_client_;
  std::unique_ptr<BookingManager> held_manager_;
  std::unique_ptr<BookingService> held_service_;
  std::unique_ptr<Server> held_booking_;
  std::unique_ptr<v1::BookingService::Stub> held_stub_;
};

// T4: a staff GetBooking (owner scope, no party: its check asks inventory)
// waits on an inventory answer that does not come; meanwhile a
// CreateBooking's Lua step (on the same one-thread pipeline) completes.
// Then inventory answers and the read succeeds.
TEST_F(AsyncReadsTest, CreateBookingCompletesWhileAReadWaitsOnInventory) {
  SetUpHeld();
  v1::Booking first;
  auto s = Call(held_stub_.get(), &v1::BookingService::Stub::CreateBooking,
                Request(absl::Hours(9), absl::Hours(10), "t4-a"), &first, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();

  held_->Arm();
  v1::GetBookingRequest get;
  get.set_name(first.name());
  auto got = std::async(std::launch::async, [&] {
    v1::Booking b;
    grpc::Status st = Call(held_stub_.get(), &v1::BookingService::Stub::GetBooking, get, &b, staff_);
    return std::make_pair(st, b);
  });
  ASSERT_TRUE(held_->WaitHeld());  // GetBooking now waits on inventory

  v1::Booking second;
  s = Call(held_stub_.get(), &v1::BookingService::Stub::CreateBooking,
           Request(absl::Hours(11), absl::Hours(12), "t4-b"), &second, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // The read still waits: it answered nothing while inventory held it.
  EXPECT_NE(got.wait_for(std::chrono::seconds(0)), std::future_status::ready);

  held_->Release();
  auto [status, booking] = got.get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(booking.name(), first.name());
}

// While inventory does not answer, CreateBooking calls that need it (a
// cache miss) wait where no other call waits on them: many of them at once
// hold up neither a read the cache answers nor the service. Before, each
// waited on a gRPC callback thread, and a few of them stopped every call.
TEST_F(AsyncReadsTest, CreateBookingsWaitingOnInventoryHoldUpNoOtherCall) {
  SetUpHeld();
  v1::Booking first;
  auto s = Call(held_stub_.get(), &v1::BookingService::Stub::CreateBooking,
                Request(absl::Hours(1), absl::Hours(2), "live-first"), &first, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();

  held_client_->InvalidateAll();  // the next CreateBookings miss the instrument
  held_->ArmAll();
  constexpr int kWaiting = 16;
  std::vector<std::future<grpc::Status>> creates;
  for (int i = 0; i < kWaiting; ++i) {
    // Chosen ids (the path that writes while preparing) and derived ones.
    creates.push_back(std::async(std::launch::async, [this, i] {
      // Half an hour each, an hour apart: clear of each other's 30-minute buffer.
      v1::CreateBookingRequest r = Request(absl::Hours(3 + i), absl::Hours(3 + i) + absl::Minutes(30),
                                           absl::StrCat("live-", i));
      if (i % 2 == 1) r.set_booking_id(absl::StrCat("live-chosen-", i));
      v1::Booking b;
      return Call(held_stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &b, ana_);
    }));
  }
  // Inventory holds them now: at least as many as the blocking executor
  // has threads (4; the cache fetches each miss itself), the rest queued.
  ASSERT_TRUE(held_->WaitHeldCalls(4));

  // The booking's own user reads it (no inventory call): answered while
  // every CreateBooking above still waits. The deadline only bounds a test
  // that would otherwise hang.
  v1::GetBookingRequest get;
  get.set_name(first.name());
  v1::Booking got;
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + ana_);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Status read = held_stub_->GetBooking(&ctx, get, &got);
  EXPECT_TRUE(read.ok()) << read.error_code() << " " << read.error_message();
  EXPECT_EQ(got.name(), first.name());
  for (auto& c : creates) EXPECT_NE(c.wait_for(std::chrono::seconds(0)), std::future_status::ready);

  held_->Release();
  for (int i = 0; i < kWaiting; ++i) {
    grpc::Status st = creates[static_cast<size_t>(i)].get();
    EXPECT_TRUE(st.ok()) << "CreateBooking " << i << ": " << st.error_message();
  }
}

}  // namespace
}  // namespace labshare::booking
