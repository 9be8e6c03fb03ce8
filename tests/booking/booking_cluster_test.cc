// Booking on a real local Redis Cluster (booking_cluster_fixture.h): the
// concurrency check with booking's 16 partitions spread over the three
// masters, and a kill -9 of a booking replica whose in-flight requests are
// retried on the other replica.
#include <signal.h>

#include "tests/booking/booking_cluster_fixture.h"

namespace labshare::booking::cluster_test {
namespace {

TEST_F(BookingOnRedisClusterTest, ConcurrentBookingsNeverOverlapWithPartitionsOnEveryMaster) {
  StartAll();
  if (HasFatalFailure()) return;
  const std::vector<int> masters = redis_->Masters();
  ASSERT_EQ(masters.size(), 3u);

  // Booking's 16 partitions over the masters, as the cluster was created.
  std::map<int, std::vector<int>> partitions_of;
  for (int p = 0; p < kPartitions; ++p) partitions_of[MasterOfPartition(p)].push_back(p);
  std::cout << "partitions by master:";
  for (int m : masters) {
    std::cout << " node " << m << " {";
    for (int p : partitions_of[m]) std::cout << " " << p << "(slot " << RedisKeySlot(keys::Tag(p)) << ")";
    std::cout << " }";
    EXPECT_FALSE(partitions_of[m].empty()) << "master " << m << " holds no booking partition";
  }
  std::cout << "\n";
  EXPECT_EQ(partitions_of.size(), 3u) << "a partition whose slot no live master owns";

  // Four contested instruments, the first three on three different masters.
  SeedInventory(PickInstruments("conc", 4, masters),
                {absl::Minutes(10), absl::ZeroDuration(), absl::Minutes(10), absl::ZeroDuration()}, 4);
  if (HasFatalFailure()) return;

  LoadOptions options;
  options.prefix = "cc";
  options.threads = 32;
  options.max_per_thread = 100;
  options.seed = 20240611;
  Load load(this, options);
  const absl::Time t0 = absl::Now();
  load.Start();
  std::vector<Attempt> results = load.Finish();
  std::cout << results.size() << " CreateBooking from " << options.threads << " threads on 2 replicas in "
            << absl::ToDoubleSeconds(absl::Now() - t0) << " s\n";
  ASSERT_EQ(results.size(), static_cast<size_t>(options.threads * options.max_per_thread));
  int retried = 0;
  for (const Attempt& a : results) retried += a.tries.size() > 1 ? 1 : 0;
  EXPECT_EQ(retried, 0) << "UNAVAILABLE answers on a healthy cluster";

  const std::vector<Attempt> accepted = CheckHistory(results, {0, 1});

  // The bookings' keys sit on the master of their partition, on all three.
  std::set<int> holding;
  for (size_t i = 0; i < instruments_.size(); ++i) {
    const int p = PartitionOfInstrument(static_cast<int>(i));
    const int slot = RedisKeySlot(keys::Tag(p));
    const int owner = MasterOfPartition(p);
    for (int m : masters) {
      auto n = redis_->CountKeysInSlot(m, slot);
      ASSERT_TRUE(n.ok()) << n.status();
      if (m == owner) {
        EXPECT_GT(*n, 0) << "partition " << p << " (" << InstrumentName(static_cast<int>(i)) << ") has no key on its master";
        if (*n > 0) holding.insert(m);
      } else {
        EXPECT_EQ(*n, 0) << "partition " << p << " has keys on node " << m << ", not its master " << owner;
      }
    }
  }
  EXPECT_EQ(holding.size(), 3u) << "booking data on fewer than three masters";

  CheckReplays(accepted, {0, 1});
}

TEST_F(BookingOnRedisClusterTest, KilledBookingReplicaRequestsRetriedOnTheOtherGiveOneBookingEach) {
  StartAll();
  if (HasFatalFailure()) return;
  SeedInventory(PickInstruments("crash", 4, redis_->Masters()),
                {absl::Minutes(10), absl::ZeroDuration(), absl::Minutes(10), absl::ZeroDuration()}, 4);
  if (HasFatalFailure()) return;

  std::atomic<bool> killed{false};
  LoadOptions options;
  options.prefix = "cr";
  options.threads = 16;
  options.max_per_thread = 80;
  options.seed = 7130521;
  options.days = 7;  // room for the retried requests to be accepted
  options.server_down = [&](int server) { return server == 0 && killed.load(); };
  Load load(this, options);
  load.Start();
  ASSERT_TRUE(load.WaitAnswered(160)) << "the load did not get going";
  const pid_t victim = cluster_->booking_pid(0);
  ASSERT_GT(victim, 0);
  expected_dead_.insert("booking-0");
  const absl::Time t_kill = absl::Now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  killed.store(true);
  std::vector<Attempt> results = load.Finish();
  ASSERT_EQ(results.size(), static_cast<size_t>(options.threads * options.max_per_thread));

  // In flight on booking-0 at the kill: sent before, answered (with an
  // error) after; each was retried on booking-1 with its request_id.
  int in_flight = 0, in_flight_booked = 0, retried = 0;
  for (const Attempt& a : results) {
    if (a.tries.size() > 1) ++retried;
    for (size_t k = 0; k + 1 < a.tries.size(); ++k) {
      const Try& t = a.tries[k];
      if (t.server == 0 && t.sent <= t_kill && t.answered >= t_kill && t.code != grpc::OK) {
        ++in_flight;
        EXPECT_EQ(t.code, grpc::UNAVAILABLE) << a.Describe();
        EXPECT_EQ(a.server, 1) << a.Describe();
        if (a.ok()) ++in_flight_booked;
        break;
      }
    }
  }
  std::cout << "kill -9 of booking-0: " << in_flight << " requests in flight on it, retried on booking-1 ("
            << in_flight_booked << " booked), " << retried << " requests retried in all\n";
  EXPECT_GT(in_flight, 0) << "no request was in flight on the killed replica";

  const std::vector<Attempt> accepted = CheckHistory(results, {1});
  CheckReplays(accepted, {1});
}

}  // namespace
}  // namespace labshare::booking::cluster_test
