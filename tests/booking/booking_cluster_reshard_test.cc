// Booking on a real local Redis Cluster under contested load
// (booking_cluster_fixture.h), while the cluster changes underneath:
//   - resharding: the slots of two busy booking partitions move to another
//     master, step by step (IMPORTING/MIGRATING, MIGRATE in batches,
//     SETSLOT NODE), one of them paused midway while bookings run;
//   - failover: kill -9 of the master of busy partitions; its replica is
//     promoted; clients retry UNAVAILABLE with the same request_id.
// Afterwards the history checks, every acknowledged booking present, and
// every accepted request answered the same when sent again.
#include "tests/booking/booking_cluster_fixture.h"

namespace labshare::booking::cluster_test {
namespace {

// Redirections and refusals a node sent (INFO errorstats), for the report.
std::string Redirections(const RedisCluster& redis, int node) {
  std::string out;
  for (const char* code : {"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"}) {
    auto n = redis.ErrorCount(node, code);
    absl::StrAppend(&out, out.empty() ? "" : " ", code, "=", n.ok() ? absl::StrCat(*n) : "?");
  }
  return out;
}

TEST_F(BookingOnRedisClusterTest, ReshardingBusyPartitionsUnderLoad) {
  StartAll();
  if (HasFatalFailure()) return;
  const std::vector<int> masters = redis_->Masters();
  ASSERT_EQ(masters.size(), 3u);
  SeedInventory(PickInstruments("resh", 4, masters),
                {absl::Minutes(10), absl::ZeroDuration(), absl::Minutes(10), absl::ZeroDuration()}, 4);
  if (HasFatalFailure()) return;

  LoadOptions options;
  options.prefix = "rs";
  options.threads = 12;
  options.max_per_thread = 2000;  // stopped earlier, once the moves are done
  options.seed = 4242;
  options.days = 7;  // room for bookings to be accepted throughout
  Load load(this, options);
  load.Start();
  ASSERT_TRUE(load.WaitAnswered(240)) << "the load did not get going";

  // The partitions of instruments 0 and 1 (busy: a quarter of the load
  // each) move to the next master.
  for (int i = 0; i < 2; ++i) {
    const int p = PartitionOfInstrument(i);
    const int slot = RedisKeySlot(keys::Tag(p));
    const int from = MasterOfPartition(p);
    const int to = masters[(std::find(masters.begin(), masters.end(), from) - masters.begin() + 1) % 3];
    auto keys_before = redis_->CountKeysInSlot(from, slot);
    ASSERT_TRUE(keys_before.ok()) << keys_before.status();
    const int answered_before = load.answered();
    int batches = 0, answered_while_paused = 0;
    long long redirected_while_paused = 0;
    RedisCluster::MigrationHooks hooks;
    hooks.after_batch = [&](int moved) {
      ++batches;
      // The first move pauses after its first batch until bookings have met
      // the half-moved slot: the source answered ASK or TRYAGAIN 5 more
      // times (bounded).
      if (i == 0 && batches == 1) {
        const int a0 = load.answered();
        auto redirected = [&] { return *redis_->ErrorCount(from, "ASK") + *redis_->ErrorCount(from, "TRYAGAIN"); };
        const long long r0 = redirected();
        const absl::Time deadline = absl::Now() + absl::Seconds(30);
        while (redirected() < r0 + 5 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
        redirected_while_paused = redirected() - r0;
        EXPECT_GE(redirected_while_paused, 5) << "no booking met the half-moved slot (" << moved << " keys moved)";
        answered_while_paused = load.answered() - a0;
      }
    };
    const absl::Time t0 = absl::Now();
    auto moved = redis_->MigrateSlot(slot, from, to, hooks, /*batch=*/20);
    ASSERT_TRUE(moved.ok()) << "moving partition " << p << " (slot " << slot << ") from node " << from << " to node "
                            << to << ": " << moved.status();
    std::cout << "partition " << p << " (slot " << slot << ", " << InstrumentName(i) << ") moved from node " << from
              << " to node " << to << ": " << *moved << " keys (" << *keys_before << " when it began) in " << batches
              << " batches, " << absl::ToDoubleSeconds(absl::Now() - t0) << " s; "
              << load.answered() - answered_before << " requests answered meanwhile"
              << (i == 0 ? absl::StrCat(", ", answered_while_paused, " while paused after the first batch (",
                                        redirected_while_paused, " ASK/TRYAGAIN meanwhile)")
                         : "")
              << "\n  source node " << from << ": " << Redirections(*redis_, from) << "\n  target node " << to << ": "
              << Redirections(*redis_, to) << "\n";
    EXPECT_EQ(MasterOfPartition(p), to);
    auto left = redis_->CountKeysInSlot(from, slot);
    ASSERT_TRUE(left.ok());
    EXPECT_EQ(*left, 0);
    EXPECT_GT(*moved, 0);
  }
  // Bookings go on against the new owners.
  EXPECT_TRUE(load.WaitAnswered(120)) << "the load did not go on after the moves";
  load.Stop();
  std::vector<Attempt> results = load.Finish();
  absl::Status healthy = redis_->WaitHealthy();
  EXPECT_TRUE(healthy.ok()) << healthy;
  auto check = redis_->RedisCliCheck();
  EXPECT_TRUE(check.ok()) << check.status();

  const std::vector<Attempt> accepted = CheckHistory(results, {0, 1});
  CheckReplays(accepted, {0, 1});
}

// The durable configuration: a write is acknowledged once the master's
// replica holds it (WAIT), so the promoted replica has every acknowledged
// booking. The killed master comes back (as a replica) so that writes on
// the promoted one can be acknowledged again.
constexpr bool kWaitForReplica = true;

TEST_F(BookingOnRedisClusterTest, MasterFailoverUnderLoad) {
  StartAll(2, [](const std::string&) {
    return kWaitForReplica ? std::vector<std::string>{"--redis_wait_replicas=1"} : std::vector<std::string>{};
  });
  if (HasFatalFailure()) return;
  const std::vector<int> masters = redis_->Masters();
  ASSERT_EQ(masters.size(), 3u);
  SeedInventory(PickInstruments("fail", 4, masters),
                {absl::Minutes(10), absl::ZeroDuration(), absl::Minutes(10), absl::ZeroDuration()}, 4);
  if (HasFatalFailure()) return;
  const int victim = MasterOfPartition(PartitionOfInstrument(0));
  const std::vector<int> replicas = redis_->ReplicasOf(victim);
  ASSERT_EQ(replicas.size(), 1u);
  std::set<int> victim_instruments;
  for (int i = 0; i < static_cast<int>(instruments_.size()); ++i) {
    if (MasterOfPartition(PartitionOfInstrument(i)) == victim) victim_instruments.insert(i);
  }

  LoadOptions options;
  options.prefix = "fo";
  options.threads = 12;
  options.max_per_thread = 2000;  // stopped earlier
  options.seed = 99;
  options.days = 7;  // room for bookings to be accepted throughout
  Load load(this, options);
  load.Start();
  ASSERT_TRUE(load.WaitAnswered(120)) << "the load did not get going";

  ASSERT_TRUE(redis_->Kill9(victim).ok());
  const absl::Time t_kill = absl::Now();  // the process is dead and reaped by now
  auto successor = redis_->WaitForFailover(victim, absl::Seconds(60));
  ASSERT_TRUE(successor.ok()) << successor.status();
  const absl::Time t_failover = absl::Now();
  EXPECT_EQ(*successor, replicas[0]);
  ASSERT_TRUE(redis_->Restart(victim).ok());
  absl::Status healthy = redis_->WaitHealthy(absl::Seconds(60));
  ASSERT_TRUE(healthy.ok()) << healthy;
  const absl::Time t_back = absl::Now();
  EXPECT_TRUE(load.WaitAnswered(150)) << "the load did not go on after the failover";
  load.Stop();
  std::vector<Attempt> results = load.Finish();

  // Seconds until writes succeed again: the first OK answer to a try sent
  // after the kill, on the dead master's partitions and on the others'.
  absl::Time first_ok_other = absl::InfiniteFuture(), first_ok_victim = absl::InfiniteFuture();
  int unavailable = 0, other_errors = 0;
  size_t most_tries = 0;
  for (const Attempt& a : results) {
    most_tries = std::max(most_tries, a.tries.size());
    for (const Try& t : a.tries) {
      if (t.code == grpc::UNAVAILABLE) ++unavailable;
      if (t.code != grpc::OK && t.code != grpc::UNAVAILABLE &&
          !(t.code == grpc::FAILED_PRECONDITION && t.reason == "SLOT_TAKEN")) {
        ++other_errors;
      }
      if (t.code != grpc::OK || t.sent < t_kill) continue;
      if (victim_instruments.count(a.instrument)) {
        first_ok_victim = std::min(first_ok_victim, t.answered);
      } else {
        first_ok_other = std::min(first_ok_other, t.answered);
      }
    }
  }
  // Every try sent after the kill, by where its instrument lives: when it
  // was answered, and how (the script ran: OK or SLOT_TAKEN; or not).
  for (const bool on_victim : {true, false}) {
    std::map<std::string, int> outcomes;
    absl::Time first_decided = absl::InfiniteFuture();
    absl::Duration slowest;
    for (const Attempt& a : results) {
      if (victim_instruments.count(a.instrument) != (on_victim ? 1u : 0u)) continue;
      for (const Try& t : a.tries) {
        if (t.sent < t_kill) continue;
        ++outcomes[t.code == grpc::OK ? "OK" : absl::StrCat(CodeName(t.code), "/", t.reason)];
        slowest = std::max(slowest, t.answered - t.sent);
        if (t.code == grpc::OK || t.code == grpc::FAILED_PRECONDITION) first_decided = std::min(first_decided, t.answered);
      }
    }
    std::cout << "  tries sent after the kill on " << (on_victim ? "the dead master's" : "the other masters'")
              << " partitions:";
    for (const auto& [what, n] : outcomes) std::cout << " " << what << " x" << n;
    std::cout << "; first decided (OK or SLOT_TAKEN) "
              << (first_decided == absl::InfiniteFuture() ? std::string("never")
                                                          : absl::StrCat(absl::ToDoubleSeconds(first_decided - t_kill), " s"))
              << " after the kill; slowest try " << absl::ToDoubleSeconds(slowest) << " s\n";
  }
  auto secs = [&](absl::Time t) {
    return t == absl::InfiniteFuture() ? std::string("never") : absl::StrCat(absl::ToDoubleSeconds(t - t_kill), " s");
  };
  std::cout << "kill -9 of master node " << victim << " (WAIT for a replica: " << (kWaitForReplica ? "yes" : "no")
            << "): replica node " << *successor << " promoted and cluster_state:ok after " << secs(t_failover)
            << "; old master back as a replica and in sync after " << secs(t_back)
            << "; first CreateBooking accepted (sent after the kill) on the dead master's partitions after "
            << secs(first_ok_victim) << ", on the other masters' after " << secs(first_ok_other) << "; " << unavailable << " UNAVAILABLE answers, " << other_errors
            << " other errors, at most " << most_tries << " tries for one request\n";
  EXPECT_NE(first_ok_victim, absl::InfiniteFuture()) << "no booking on the failed-over partitions succeeded";

  const std::vector<Attempt> accepted = CheckHistory(results, {0, 1});
  CheckReplays(accepted, {0, 1});
}

}  // namespace
}  // namespace labshare::booking::cluster_test
