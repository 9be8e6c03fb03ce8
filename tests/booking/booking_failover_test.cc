// Sentinel failover under contested booking load (issue 15, "Failover"):
// 1 master + 2 replicas + 3 sentinels (tests/support/redis_sentinel.h, AOF
// `always`, min-replicas-to-write 1), one inventory and three booking
// replicas and one labshare-usage (consuming every outbox into its audit
// hash chain) started with --redis_sentinels and --redis_wait_replicas=1,
// twelve client threads booking overlapping slots on three instruments. The
// master is killed with SIGKILL mid-load, twice (the first victim is
// restarted in between and rejoins as a replica); the clients retry
// UNAVAILABLE answers with the same request_id (bounded). Afterwards the
// whole history is checked on the last master (booking_history.h): no
// overlap, every acknowledged booking present as answered and listed, its
// booking_created event in the outbox exactly once and in the audit trail
// exactly once (the chain verifies), every request sent again answered the
// same. Prints, for each kill, the seconds until the sentinels promoted a
// replica and until a write was acknowledged again.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/booking/booking_history.h"
#include "tests/booking/booking_test_cluster.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "tests/support/redis_sentinel.h"

namespace labshare::testing {
namespace {

// Two failovers, each after kPerPhase more acknowledged bookings, and
// kPerPhase more after the last one.
constexpr int kFailovers = 2;
constexpr int64_t kPerPhase = 150;
constexpr absl::Duration kPhaseTimeout = absl::Seconds(90);

std::string Seconds(absl::Duration d) { return absl::StrFormat("%.2f s", absl::ToDoubleSeconds(d)); }

class BookingFailoverTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (cluster_ != nullptr) {
      for (const std::string& dead : cluster_->DeadChildren()) {
        ADD_FAILURE() << "a child process ended during the test: " << dead;
      }
      if (usage_ != nullptr) {
        const std::string how = usage_->ExitedEarly();
        if (!how.empty()) ADD_FAILURE() << "labshare-usage ended during the test: " << how;
        if (HasFailure()) std::cerr << "----- usage stderr tail -----\n" << usage_->StderrTail(8000) << "\n";
        usage_->Stop();
        usage_.reset();
      }
      if (HasFailure()) {
        std::cerr << cluster_->DumpLogs(/*tail_bytes=*/8000);
        if (redis_ != nullptr) std::cerr << redis_->SentinelLogs(4000);
      }
      cluster_->Stop();
      cluster_.reset();
    }
    redis_.reset();
  }

  std::unique_ptr<RedisSentinelSetup> redis_;
  std::unique_ptr<BookingTestCluster> cluster_;
  std::unique_ptr<ChildProcess> usage_;
};

TEST_F(BookingFailoverTest, MasterKilledUnderContestedLoadLosesNoAcknowledgedBooking) {
  auto setup = RedisSentinelSetup::Start();
  ASSERT_TRUE(setup.ok()) << setup.status();
  redis_ = *std::move(setup);
  std::cout << "sentinels " << redis_->SentinelAddresses() << ", master " << redis_->master().address()
            << std::endl;

  BookingTestClusterOptions options;
  options.external_redis_flags = redis_->ServiceFlags();
  options.external_redis_options = redis_->options();
  auto cluster = BookingTestCluster::Start(kOutageBookingReplicas, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  cluster_ = *std::move(cluster);
  auto usage = ChildProcess::Start(
      "usage", cluster_->bin_dir() + "/labshare-usage",
      WithTls([&] {
        std::vector<std::string> args = {"--listen=127.0.0.1:0", "--audit_unsigned"};
        for (const std::string& f : redis_->ServiceFlags()) args.push_back(f);
        return args;
      }(), "usage"),
      cluster_->log_dir());
  ASSERT_TRUE(usage.ok()) << usage.status();
  usage_ = *std::move(usage);

  auto seeded = SeedContestedInventory(*cluster_, "org-f", "fac-f", "fo", kOutageInstruments, kOutageUsers);
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  ContestedLoadOptions load_options = *std::move(seeded);
  load_options.threads = kOutageThreads;
  load_options.seed = 15003;
  load_options.request_prefix = "failover";

  ContestedLoad load(cluster_.get(), load_options);
  load.Start();
  // kPerPhase acknowledged bookings, a kill -9 of the master, kPerPhase more
  // on the promoted replica; then the killed node comes back (the sentinels
  // make it a replica) and the next master is killed.
  std::vector<absl::Time> kills;
  std::vector<absl::Duration> promotions;
  for (int k = 0; k <= kFailovers; ++k) {
    const absl::Status phase = load.WaitPhase(kPerPhase, kPhaseTimeout, k);
    if (!phase.ok()) FAIL() << phase.message();
    if (k == kFailovers) break;
    if (k > 0) {
      // Sentinel turns a returning old master into a replica only after
      // watching it for a while (about 20 s here); the load pauses
      // meanwhile so that the calendars do not fill up.
      load.Pause();
      const absl::Time restarting = absl::Now();
      const absl::Status whole = redis_->RestartKilled();
      if (!whole.ok()) {
        load.Stop();
        FAIL() << whole;
      }
      std::cout << "the killed node is a replica again after " << Seconds(absl::Now() - restarting) << std::endl;
      load.Resume();
      if (!load.WaitAcknowledged(load.acknowledged() + kPerPhase / 2, kPhaseTimeout)) {
        load.Stop();
        FAIL() << "the load did not resume";
      }
    }
    // The time after kill -9 returned (the process is reaped): a try sent
    // before that may still have reached the old master.
    const int old_port = redis_->Kill9Master();
    const absl::Time killed = absl::Now();
    const int64_t at_kill = load.acknowledged();
    auto promoted = redis_->WaitForNewMaster();
    const absl::Duration to_promotion = absl::Now() - killed;
    if (!promoted.ok()) {
      load.Stop();
      FAIL() << promoted.status();
    }
    kills.push_back(killed);
    promotions.push_back(to_promotion);
    std::cout << "kill -9 #" << k + 1 << " of master 127.0.0.1:" << old_port << " after " << at_kill
              << " acknowledged bookings; sentinels name " << (*promoted)->address() << " (taking writes) after "
              << Seconds(to_promotion) << std::endl;
  }
  load.Stop();
  int64_t in_flight = -1;
  for (size_t k = 0; k < kills.size(); ++k) {
    const absl::Time again = load.FirstAcknowledgementSentAfter(kills[k]);
    ASSERT_NE(again, absl::InfiniteFuture());
    const int64_t n = load.InFlightAt(kills[k]);
    in_flight = in_flight < 0 ? n : std::min(in_flight, n);
    std::cout << "FAILOVER #" << k + 1 << ": writes acknowledged again " << Seconds(again - kills[k])
              << " after the kill -9 of the master (sentinels promoted a replica after " << Seconds(promotions[k])
              << "); " << n << " requests in flight at the kill" << std::endl;
  }

  // The history, read on the new master directly (no Sentinel in between).
  RedisPool data(redis_->MasterOptions());
  const HistoryReport rep = CheckHistory(*cluster_, data, load, load.attempts(), load_options.instruments);
  std::cout << "failover: " << rep.Summary() << "\n"
            << "failover: acknowledged " << rep.acknowledged << ", lost " << rep.lost << std::endl;
  ExpectNothingLost(rep, (kFailovers + 1) * kPerPhase, in_flight, "failover");

  // The audit trail: labshare-usage consumed every outbox across the
  // failover; each acknowledged booking's booking_created event is in the
  // chain exactly once, and the chain verifies.
  ASSERT_EQ(rep.created_event_ids.size(), static_cast<size_t>(rep.acknowledged - rep.missing_events));
  const absl::Time deadline = absl::Now() + kPhaseTimeout;
  std::map<std::string, long long> audited;  // event_id -> entries
  std::string waiting_for;
  while (true) {
    waiting_for.clear();
    for (const auto& [name, event_id] : rep.created_event_ids) {
      if (audited[event_id] > 0) continue;
      auto n = data.Command({"ZCARD", "{usage}:audit:idx:event:" + event_id});
      ASSERT_TRUE(n.ok()) << n.status();
      audited[event_id] = n->integer;
      if (n->integer == 0 && waiting_for.empty()) waiting_for = absl::StrCat(name, " (event ", event_id, ")");
    }
    if (waiting_for.empty()) break;
    ASSERT_LT(absl::Now(), deadline) << "not in the audit trail within " << kPhaseTimeout << ": " << waiting_for;
    absl::SleepFor(absl::Milliseconds(100));
  }
  int twice = 0;
  for (const auto& [event_id, n] : audited) {
    if (n != 1 && ++twice <= 10) ADD_FAILURE() << "event " << event_id << " is in the audit trail " << n << " times";
  }
  EXPECT_EQ(twice, 0);
  auto usage_stub = usage::v1::UsageService::NewStub(TlsChannel(usage_->address()));
  usage::v1::VerifyAuditChainRequest verify;
  verify.set_request_id("failover-verify");
  usage::v1::VerifyAuditChainResponse verified;
  auto ctx = cluster_->AdminContext();
  const grpc::Status vs = usage_stub->VerifyAuditChain(ctx.get(), verify, &verified);
  ASSERT_TRUE(vs.ok()) << vs.error_message();
  EXPECT_EQ(verified.result(), usage::v1::VERIFIED) << verified.ShortDebugString();
  EXPECT_GE(verified.entries_checked(), static_cast<int64_t>(audited.size()));
  std::cout << "failover: " << audited.size() << " acknowledged bookings in the audit trail once each; chain of "
            << verified.entries_checked() << " entries " << usage::v1::VerificationResult_Name(verified.result())
            << std::endl;
}

}  // namespace
}  // namespace labshare::testing
