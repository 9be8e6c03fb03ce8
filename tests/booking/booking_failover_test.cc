// Sentinel failover under contested booking load (issue 15, "Failover"):
// 1 master + 2 replicas + 3 sentinels (tests/support/redis_sentinel.h, AOF
// `always`, min-replicas-to-write 1), one inventory and three booking
// replicas, one labshare-usage (consuming every outbox into its audit hash
// chain) and one labshare-billing (consuming the booking outboxes into its
// ledger), all started with --redis_sentinels and --redis_wait_replicas=1;
// twelve client threads booking overlapping slots on three instruments and,
// beside them, three threads booking and at once cancelling on two priced
// instruments as lab users of another organisation (booking_charge_history.h:
// a cancellation within the 60-day notice owes a late-cancellation fee). The
// master is killed with SIGKILL mid-load, twice (the first victim is
// restarted in between and rejoins as a replica); the clients retry
// UNAVAILABLE answers with the same request_id (bounded). Afterwards the
// whole history is checked on the last master (booking_history.h): no
// overlap, every acknowledged booking present as answered and listed, its
// booking_created event in the outbox exactly once and in the audit trail
// exactly once (the chain verifies), every request sent again answered the
// same. Once billing has read and acknowledged every booking event, the
// charges are checked through billing's RPCs: each acknowledged late
// cancellation charged exactly once with the amount the test's rate card
// gives by hand, nothing charged for the others, one balanced posting per
// charge, debit totals equal to credit totals and the payer's and owner's
// balances equal to the sum of the fees; each ChargePosted event in the
// audit trail once. Prints, for each kill, the seconds until the sentinels
// promoted a replica and until a booking and a charge were written again.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "tests/booking/booking_charge_history.h"
#include "tests/booking/booking_history.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/redis_sentinel.h"

namespace labshare::testing {
namespace {

// Two failovers, each after kPerPhase more acknowledged bookings, and
// kPerPhase more after the last one.
constexpr int kFailovers = 2;
constexpr int64_t kPerPhase = 150;
constexpr absl::Duration kPhaseTimeout = absl::Seconds(90);
// And kChargesPerPhase more acknowledged cancellations of the charge load
// before each kill and at the end.
constexpr int64_t kChargesPerPhase = 15;

std::string Seconds(absl::Duration d) { return absl::StrFormat("%.2f s", absl::ToDoubleSeconds(d)); }

class BookingFailoverTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (cluster_ != nullptr) {
      for (const std::string& dead : cluster_->DeadChildren()) {
        ADD_FAILURE() << "a child process ended during the test: " << dead;
      }
      for (std::unique_ptr<ChildProcess>* consumer : {&usage_, &billing_}) {
        if (*consumer == nullptr) continue;
        const std::string how = (*consumer)->ExitedEarly();
        if (!how.empty()) ADD_FAILURE() << "labshare-" << (*consumer)->name() << " ended during the test: " << how;
        if (HasFailure()) {
          std::cerr << "----- " << (*consumer)->name() << " stderr tail -----\n"
                    << (*consumer)->StderrTail(8000) << "\n";
        }
        (*consumer)->Stop();
        consumer->reset();
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
  std::unique_ptr<ChildProcess> billing_;
};

// Waits (bounded) until every event id of `ids` (label -> event id) is in
// labshare-usage's audit trail; returns how often each is there.
absl::StatusOr<std::map<std::string, long long>> WaitAudited(RedisPool& data,
                                                             const std::map<std::string, std::string>& ids,
                                                             absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::map<std::string, long long> audited;  // event_id -> entries
  while (true) {
    std::string waiting_for;
    for (const auto& [label, event_id] : ids) {
      if (audited[event_id] > 0) continue;
      auto n = data.Command({"ZCARD", "{usage}:audit:idx:event:" + event_id});
      if (!n.ok()) return n.status();
      audited[event_id] = n->integer;
      if (n->integer == 0 && waiting_for.empty()) waiting_for = absl::StrCat(label, " (event ", event_id, ")");
    }
    if (waiting_for.empty()) return audited;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("not in the audit trail within ", absl::FormatDuration(timeout), ": ", waiting_for));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

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
  auto billing = ChildProcess::Start(
      "billing", cluster_->bin_dir() + "/labshare-billing",
      WithTls([&] {
        std::vector<std::string> args = {"--listen=127.0.0.1:0", "--inventory=" + cluster_->inventory_address()};
        for (const std::string& f : redis_->ServiceFlags()) args.push_back(f);
        return args;
      }(), "billing"),
      cluster_->log_dir());
  ASSERT_TRUE(billing.ok()) << billing.status();
  billing_ = *std::move(billing);

  auto seeded = SeedContestedInventory(*cluster_, "org-f", "fac-f", "fo", kOutageInstruments, kOutageUsers);
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  ContestedLoadOptions load_options = *std::move(seeded);
  load_options.threads = kOutageThreads;
  load_options.seed = 15003;
  load_options.request_prefix = "failover";
  // The charge load's instruments, on the same facility: prices and fees
  // that make the hand-computed amounts round.
  auto charge_seeded = SeedChargeInventory(*cluster_, "org-f", "fac-f", "org-fp",
                                           {{"fc-0", 33333, 2500}, {"fc-1", 48050, 1250}}, 3);
  ASSERT_TRUE(charge_seeded.ok()) << charge_seeded.status();
  ChargeLoadOptions charge_options = *std::move(charge_seeded);
  charge_options.seed = 15004;
  charge_options.request_prefix = "failover-charge";

  ContestedLoad load(cluster_.get(), load_options);
  ChargeLoad charges(cluster_.get(), charge_options);
  load.Start();
  charges.Start();
  // Both loads stop on every way out of the test body.
  struct StopLoads {
    ContestedLoad* load;
    ChargeLoad* charges;
    ~StopLoads() {
      load->Stop();
      charges->Stop();
    }
  } stop_loads{&load, &charges};
  auto charges_phase = [&](int phase) -> absl::Status {
    if (charges.WaitCancelled(charges.cancelled() + kChargesPerPhase, kPhaseTimeout)) return absl::OkStatus();
    return absl::DeadlineExceededError(absl::StrCat("only ", charges.cancelled(),
                                                    " cancellations acknowledged (phase ", phase, ")"));
  };
  // kPerPhase acknowledged bookings, a kill -9 of the master, kPerPhase more
  // on the promoted replica; then the killed node comes back (the sentinels
  // make it a replica) and the next master is killed.
  std::vector<absl::Time> kills;
  std::vector<absl::Duration> promotions;
  for (int k = 0; k <= kFailovers; ++k) {
    const absl::Status phase = load.WaitPhase(kPerPhase, kPhaseTimeout, k);
    if (!phase.ok()) FAIL() << phase.message();
    const absl::Status charged = charges_phase(k);
    if (!charged.ok()) FAIL() << charged.message();
    if (k == kFailovers) break;
    if (k > 0) {
      // Sentinel turns a returning old master into a replica only after
      // watching it for a while (about 20 s here); the loads pause
      // meanwhile so that the calendars do not fill up.
      load.Pause();
      charges.Pause();
      const absl::Time restarting = absl::Now();
      const absl::Status whole = redis_->RestartKilled();
      if (!whole.ok()) {
        load.Stop();
        FAIL() << whole;
      }
      std::cout << "the killed node is a replica again after " << Seconds(absl::Now() - restarting) << std::endl;
      load.Resume();
      charges.Resume();
      if (!load.WaitAcknowledged(load.acknowledged() + kPerPhase / 2, kPhaseTimeout)) {
        load.Stop();
        FAIL() << "the load did not resume";
      }
      const absl::Status resumed = charges_phase(k);
      if (!resumed.ok()) FAIL() << "the charge load did not resume: " << resumed.message();
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
  charges.Stop();
  int64_t in_flight = -1;
  for (size_t k = 0; k < kills.size(); ++k) {
    const absl::Time again = load.FirstAcknowledgementSentAfter(kills[k]);
    ASSERT_NE(again, absl::InfiniteFuture());
    const int64_t n = load.InFlightAt(kills[k]);
    in_flight = in_flight < 0 ? n : std::min(in_flight, n);
    std::cout << "FAILOVER #" << k + 1 << ": writes acknowledged again " << Seconds(again - kills[k])
              << " after the kill -9 of the master (sentinels promoted a replica after " << Seconds(promotions[k])
              << "); " << n << " requests in flight at the kill, " << charges.InFlightAt(kills[k])
              << " of the charge load" << std::endl;
  }

  // The history, read on the new master directly (no Sentinel in between).
  RedisPool data(redis_->MasterOptions());
  const std::vector<ChargeAttempt> charge_attempts = charges.attempts();
  std::set<std::string> charge_bookings;
  for (const ChargeAttempt& a : charge_attempts) {
    if (a.create.ok()) charge_bookings.insert(a.create.booking.name());
  }
  const HistoryReport rep =
      CheckHistory(*cluster_, data, load, load.attempts(), load_options.instruments, charge_bookings);
  std::cout << "failover: " << rep.Summary() << "\n"
            << "failover: acknowledged " << rep.acknowledged << ", lost " << rep.lost << std::endl;
  ExpectNothingLost(rep, (kFailovers + 1) * kPerPhase, in_flight, "failover");

  // The charges: once labshare-billing has read and acknowledged every
  // booking event (across the failovers), each late cancellation is charged
  // once, exactly.
  auto billing_stub = billing::v1::BillingService::NewStub(TlsChannel(billing_->address()));
  const ChargeReport charged =
      CheckCharges(*cluster_, *billing_stub, data, charges, charge_attempts, kPhaseTimeout);
  std::cout << "failover: " << charged.Summary() << std::endl;
  ExpectChargesExact(charged, (kFailovers + 1) * kChargesPerPhase / 2);
  // Billing across each kill: late cancellations acknowledged before it and
  // charged after it (billing was applying them when the master died), and
  // the first charge written after it.
  std::map<std::string, absl::Time> cancelled_at;  // late-cancelled booking -> the answer
  for (const ChargeAttempt& a : charge_attempts) {
    if (a.late()) cancelled_at[a.create.booking.name()] = a.cancel.answered;
  }
  int64_t charged_across = 0;
  for (size_t k = 0; k < kills.size(); ++k) {
    int64_t across = 0;
    absl::Time first = absl::InfiniteFuture();
    for (const auto& [name, c] : charged.charges) {
      const absl::Time created = FromProto(c.create_time());
      if (created < kills[k]) continue;
      first = std::min(first, created);
      const auto it = cancelled_at.find(c.booking());
      across += it != cancelled_at.end() && it->second < kills[k] ? 1 : 0;
    }
    charged_across += across;
    std::cout << "FAILOVER #" << k + 1 << ": billing charged again "
              << (first == absl::InfiniteFuture() ? std::string("never") : Seconds(first - kills[k]))
              << " after the kill -9; " << across << " late cancellations acknowledged before the kill charged after it"
              << std::endl;
  }
  EXPECT_GT(charged_across, 0) << "no kill met billing with charges to apply";

  // The audit trail: labshare-usage consumed every outbox across the
  // failover; each acknowledged booking's booking_created event and each
  // charge's ChargePosted event is in the chain exactly once, and the chain
  // verifies.
  ASSERT_EQ(rep.created_event_ids.size(), static_cast<size_t>(rep.acknowledged - rep.missing_events));
  std::map<std::string, std::string> expected_in_audit = rep.created_event_ids;
  for (const auto& [name, event_id] : charged.charge_event_ids) expected_in_audit[name] = event_id;
  auto audited = WaitAudited(data, expected_in_audit, kPhaseTimeout);
  ASSERT_TRUE(audited.ok()) << audited.status();
  int twice = 0;
  for (const auto& [event_id, n] : *audited) {
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
  EXPECT_GE(verified.entries_checked(), static_cast<int64_t>(audited->size()));
  std::cout << "failover: " << rep.created_event_ids.size() << " acknowledged bookings and "
            << charged.charge_event_ids.size() << " charges in the audit trail once each; chain of "
            << verified.entries_checked() << " entries " << usage::v1::VerificationResult_Name(verified.result())
            << std::endl;
}

}  // namespace
}  // namespace labshare::testing
