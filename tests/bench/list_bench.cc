// list-bench: ListBookings for one user over a store of --bookings bookings.
//
// Fills its own redis-server through the real create step (BookingStore's
// Lua script with the listing indexes, pipelined over two connections as
// the service does; events left out), then times BookingManager::
// ListBookings as a LAB_USER: the first page, a deep page (the last one,
// reached by following tokens), and a walk over all pages; the same for a
// CONSORTIUM_ADMIN over everything. Finally the Redis memory the listing
// indexes take: used_memory before and after deleting them.
//
// Shape: --instruments instruments (ids "i0000".., spread over the 16
// partitions), bookings of one hour back to back on each; --users users in
// --organizations organisations; every --every-th booking is the measured
// user's (so 1M / 500 = 2,000 bookings), the rest random users.
//
//   list-bench [--bookings=1000000] [--instruments=1000] [--users=5000] [--every=500]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/booking/booking_lists.h"
#include "services/booking/booking_manager.h"
#include "tests/support/redis_server.h"

ABSL_FLAG(int, bookings, 1000000, "Bookings to store.");
ABSL_FLAG(int, instruments, 1000, "Instruments.");
ABSL_FLAG(int, users, 5000, "Users.");
ABSL_FLAG(int, organizations, 50, "Organisations.");
ABSL_FLAG(int, every, 500, "Every n-th booking is the measured user's.");
ABSL_FLAG(int, repeat, 300, "Timed calls per latency figure.");
ABSL_FLAG(int, page_size, 50, "page_size of every call.");

namespace {

namespace bk = labshare::booking;
namespace v1 = labshare::booking::v1;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int64_t UsedMemory(labshare::RedisPool& pool) {
  auto info = pool.Command({"INFO", "memory"});
  if (!info.ok()) return 0;
  const std::string& s = info->str;
  const size_t at = s.find("used_memory:");
  return at == std::string::npos ? 0 : std::stoll(s.substr(at + 12));
}

struct Timing {
  double p50 = 0, p99 = 0, mean = 0;
};
Timing Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  Timing t;
  if (ms.empty()) return t;
  t.p50 = ms[ms.size() / 2];
  t.p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  for (double m : ms) t.mean += m;
  t.mean /= static_cast<double>(ms.size());
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  labshare::SetQuietLogging(true);
  auto server = labshare::testing::RedisServer::Start({"--save", "", "--appendonly", "no"});
  if (!server.ok()) {
    std::fprintf(stderr, "redis-server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  labshare::RedisOptions options = (*server)->options();
  options.pool_size = 8;
  options.command_timeout = absl::Seconds(120);
  labshare::RedisPool pool(options);
  labshare::RedisPipeline pipeline(options, 2, 256);
  bk::BookingStore store(&pool, &pipeline);
  labshare::FakeClock clock(absl::FromUnixSeconds(1798761600));  // 2027-01-01
  // No call reaches inventory: a LAB_USER's and an admin's lists never ask.
  bk::InventoryClient inventory(grpc::CreateChannel("127.0.0.1:9", grpc::InsecureChannelCredentials()), &clock);
  bk::BookingManager manager(&store, &inventory, &clock, labshare::PageTokenCodec(std::string(32, 'k')));

  const int n = absl::GetFlag(FLAGS_bookings);
  const int instruments = absl::GetFlag(FLAGS_instruments);
  const int users = absl::GetFlag(FLAGS_users);
  const int orgs = absl::GetFlag(FLAGS_organizations);
  const int every = absl::GetFlag(FLAGS_every);
  const int64_t used_before = UsedMemory(pool);

  // ---- fill: the real create step, pipelined, at most 4096 in flight
  std::mt19937_64 rng(42);
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  std::atomic<int> failed{0};
  const absl::Time t0 = clock.Now() - absl::Hours(24 * 365);
  const auto fill_start = Clock::now();
  int mine = 0;
  for (int k = 0; k < n; ++k) {
    const int instr = k % instruments;
    const int slot = k / instruments;
    const bool measured = every > 0 && k % every == 0;
    const int user = measured ? 0 : 1 + static_cast<int>(rng() % static_cast<uint64_t>(users - 1));
    mine += measured ? 1 : 0;
    const std::string instrument_id = absl::StrFormat("i%04d", instr);
    const int partition = bk::keys::Partition(instrument_id);
    const std::string id = bk::NewBookingId(partition);
    const absl::Time start = t0 + absl::Hours(slot);
    v1::Booking b;
    b.set_name("bookings/" + id);
    b.set_instrument("instruments/" + instrument_id);
    b.set_instrument_owner(absl::StrFormat("organizations/o%02d", instr % orgs));
    b.set_mode(labshare::type::v1::ON_SITE);
    b.set_user(absl::StrFormat("users/u%05d", user));
    b.set_payer_organization(absl::StrFormat("organizations/o%02d", user % orgs));
    *b.mutable_reserved_interval()->mutable_start_time() = labshare::ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = labshare::ToProto(start + absl::Minutes(50));
    *b.mutable_blocked_interval()->mutable_start_time() = labshare::ToProto(start);
    *b.mutable_blocked_interval()->mutable_end_time() = labshare::ToProto(start + absl::Hours(1));
    b.set_state(v1::Booking::CONFIRMED);
    b.set_payer_class(labshare::type::v1::MEMBER);
    b.set_payer_tier("GENERAL");
    b.set_purpose("bench");
    *b.mutable_create_time() = labshare::ToProto(start - absl::Hours(48));
    *b.mutable_update_time() = b.create_time();
    b.set_etag("1");
    bk::CreateStep step;
    step.partition = partition;
    step.instrument_id = instrument_id;
    step.booking_id = id;
    step.booking = labshare::SerializeDeterministic(b);
    step.blocked_start_ms = absl::ToUnixMillis(start);
    step.blocked_end_ms = absl::ToUnixMillis(start + absl::Hours(1));
    step.reserved_start_ms = step.blocked_start_ms;
    step.swept = true;
    step.listing_keys = bk::BookingListingKeys(partition, b, b.instrument_owner());
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return in_flight < 4096; });
      ++in_flight;
    }
    store.CreateAsync(step, [&](absl::StatusOr<bk::StepOutcome> outcome) {
      if (!outcome.ok() || outcome->kind != bk::StepOutcome::Kind::kApplied) failed.fetch_add(1);
      std::lock_guard<std::mutex> lock(mu);
      --in_flight;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return in_flight == 0; });
  }
  const double fill_s = Ms(Clock::now() - fill_start) / 1000;
  std::printf("RESULT fill: %d bookings through the create step in %.1f s (%.0f/s), %d failed; measured user has %d\n",
              n, fill_s, n / fill_s, failed.load(), mine);

  // ---- lists
  const int page_size = absl::GetFlag(FLAGS_page_size);
  const int repeat = absl::GetFlag(FLAGS_repeat);
  auto bench = [&](const char* who, const labshare::Principal& p, const std::string& order_by, int max_walk) {
    v1::ListBookingsRequest r;
    r.set_page_size(page_size);
    r.set_order_by(order_by);
    // Walk: every page in order (at most max_walk pages), keeping tokens.
    std::vector<std::string> tokens = {""};
    int64_t listed = 0;
    int pages = 0;
    const auto walk_start = Clock::now();
    for (int page = 0; page < max_walk; ++page) {
      r.set_page_token(tokens.back());
      ++pages;
      auto resp = manager.ListBookings(p, r);
      if (!resp.ok()) {
        std::fprintf(stderr, "ListBookings: %s\n", resp.status().ToString().c_str());
        return;
      }
      listed += resp->bookings_size();
      if (resp->next_page_token().empty()) break;
      tokens.push_back(resp->next_page_token());
    }
    const double walk_s = Ms(Clock::now() - walk_start) / 1000;
    auto time_page = [&](const std::string& token) {
      std::vector<double> ms;
      r.set_page_token(token);
      for (int i = 0; i < repeat; ++i) {
        const auto s = Clock::now();
        auto resp = manager.ListBookings(p, r);
        ms.push_back(Ms(Clock::now() - s));
        if (!resp.ok()) return Timing{};
      }
      return Summarize(ms);
    };
    const Timing first = time_page("");
    const Timing deep = time_page(tokens.back());
    std::printf(
        "RESULT %s order_by=\"%s\": walk %lld bookings in %d pages, %.0f pages/s; first page p50 %.2f ms p99 %.2f ms; "
        "page %d p50 %.2f ms p99 %.2f ms\n",
        who, order_by.c_str(), static_cast<long long>(listed), pages, pages / walk_s, first.p50, first.p99,
        static_cast<int>(tokens.size()), deep.p50, deep.p99);
  };
  const labshare::Principal user{"u00000", "o00", {labshare::Role::kLabUser}, clock.Now() + absl::Hours(1)};
  const labshare::Principal admin{"admin", "", {labshare::Role::kConsortiumAdmin}, clock.Now() + absl::Hours(1)};
  bench("lab user, own bookings", user, "", 100000);
  bench("lab user, own bookings", user, "start_time desc", 100000);
  bench("admin, all bookings (first 200 pages)", admin, "", 200);

  // ---- memory of the listing indexes
  const int64_t used_full = UsedMemory(pool);
  std::string cursor = "0";
  int64_t index_keys = 0;
  do {
    auto step = store.ScanKeys(cursor, "{bk:*}:ls:*");
    if (!step.ok()) break;
    cursor = step->first;
    for (const auto& k : step->second) {
      pool.Command({"DEL", k}).IgnoreError();
      ++index_keys;
    }
  } while (cursor != "0");
  const int64_t used_without = UsedMemory(pool);
  std::printf("RESULT memory: used_memory %.1f MB in all (%.0f B per booking); listing indexes %lld keys, %.1f MB, "
              "%.0f B per booking\n",
              static_cast<double>(used_full - used_before) / 1e6,
              static_cast<double>(used_full - used_before) / n, static_cast<long long>(index_keys),
              static_cast<double>(used_full - used_without) / 1e6, static_cast<double>(used_full - used_without) / n);
  return 0;
}
