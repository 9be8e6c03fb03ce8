// Booking on a real local Redis Cluster (tests/support/redis_cluster.h: 3
// masters, 3 replicas, AOF always): one labshare-inventory and two
// labshare-booking replicas as processes (booking_test_cluster.h) started
// with --redis_cluster --redis=SEEDS, driven by contested CreateBooking load
// from many client threads. Clients retry UNAVAILABLE with the same
// request_id (on the other replica), as the API asks.
//
// The history checks are those of booking_concurrency_test.cc (both use
// booking_history_checks.h), over the final answer of every request:
//   - only OK/CONFIRMED (what was asked, a unique name) or SLOT_TAKEN;
//   - per instrument, accepted blocked intervals pairwise disjoint;
//   - ListBookings(CONFIRMED) on every live replica is exactly the accepted
//     bookings (every acknowledged booking present as answered, nothing
//     else, ordered by start then name);
//   - every SLOT_TAKEN has an accepted booking in its way;
//   - the outbox holds one booking_created per accepted booking, carrying
//     its request_id and the booking as answered, and nothing else; one
//     partition per instrument;
//   - the partition-wide listing indexes hold one entry per accepted booking;
//   - no key names a rejected request_id;
//   - every accepted request sent again (same request_id, same content)
//     answers the same booking.
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_CLUSTER_FIXTURE_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_CLUSTER_FIXTURE_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/booking/redis_booking_store.h"
#include "tests/booking/booking_history_checks.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/redis_cluster.h"

namespace labshare::booking::cluster_test {

namespace bv1 = labshare::booking::v1;
using testing::BookingTestCluster;
using testing::BookingTestClusterOptions;
using testing::RedisCluster;

using namespace testing::booking_checks;  // NOLINT(build/namespaces): Interval, Fmt, FindOverlap, the checks
using testing::booking_checks::OutboxEvent;  // not labshare::OutboxEvent (common/doc_store.h)

static_assert(kOutboxPartitions == kPartitions, "booking_history_checks.h reads the store's outbox partitions");
inline constexpr char kOrg[] = "org-a";
inline constexpr char kFacility[] = "fac-a";

// One call of a request.
struct Try {
  int server = 0;
  absl::Time sent;
  absl::Time answered;
  grpc::StatusCode code = grpc::OK;
  std::string reason;
};

// One CreateBooking request (one request_id): its tries and final answer.
struct Attempt {
  int server = 0;      // of the last try
  int instrument = 0;  // index into the test's instruments
  std::string user_id;
  std::string request_id;
  Interval reserved;
  grpc::StatusCode code = grpc::OK;
  std::string reason;
  std::string message;
  bv1::Booking booking;  // when OK
  std::vector<Try> tries;

  bool ok() const { return code == grpc::OK; }
  bool slot_taken() const { return code == grpc::FAILED_PRECONDITION && reason == "SLOT_TAKEN"; }
  std::string Describe() const {
    std::string answer = ok() ? absl::StrCat("OK ", booking.name(), " state ",
                                             bv1::Booking::State_Name(booking.state()), " blocked ",
                                             Fmt(BlockedOf(booking)))
                              : absl::StrCat(CodeName(code), " reason '", reason, "' message '", message, "'");
    std::string tries_text;
    for (const Try& t : tries) {
      absl::StrAppend(&tries_text, tries_text.empty() ? "" : ", ", "booking-", t.server, ":", CodeName(t.code),
                      t.reason.empty() ? "" : "/", t.reason);
    }
    return absl::StrCat("CreateBooking{request_id ", request_id, ", instrument #", instrument, ", users/", user_id,
                        ", reserved ", Fmt(reserved), "} -> ", answer, " (tries: ", tries_text, ")");
  }
};

// Load: `threads` client threads, each sending up to `max_per_thread`
// pseudo-random CreateBooking requests (seeded per thread) until stopped.
struct LoadOptions {
  std::string prefix = "cc";  // two characters: request ids are "cc-tNN-rNNNN"
  int threads = 16;
  int max_per_thread = 40;
  uint64_t seed = 1;
  int users = 4;
  // Starts are uniform over this many days (5-minute steps) from base_:
  // fewer days, more contention.
  int days = 2;
  // A request answered UNAVAILABLE is sent again (same request_id, same
  // content) to the other replica, until this long after its first try;
  // meanwhile its thread goes on with new requests.
  absl::Duration retry_for = absl::Seconds(120);
  // The replica of a request's first try; default thread % replicas.
  std::function<int(int thread)> first_server;
  // Replicas that are down for good (a killed booking process): retries
  // skip them.
  std::function<bool(int server)> server_down;
};

class BookingOnRedisClusterTest : public ::testing::Test {
 protected:
  // Starts the Redis Cluster, then inventory and booking replicas on it.
  // `service_args` as in BookingTestClusterOptions.
  void StartAll(int booking_replicas = 2,
                std::function<std::vector<std::string>(const std::string&)> service_args = {}) {
    const absl::Time t0 = absl::Now();
    auto redis = RedisCluster::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
    const absl::Time t1 = absl::Now();
    BookingTestClusterOptions options;
    options.external_redis_flags = redis_->ServiceFlags();
    options.external_redis_options = redis_->options();
    options.service_args = std::move(service_args);
    auto cluster = BookingTestCluster::Start(booking_replicas, options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    std::cout << "Redis Cluster healthy in " << absl::ToDoubleSeconds(t1 - t0) << " s, services up in "
              << absl::ToDoubleSeconds(absl::Now() - t1) << " s\n";
    // Midnight UTC one to two days ahead: whole minutes, always in the future.
    base_ = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 86400 + 2) * 86400);
  }

  void TearDown() override {
    if (cluster_ != nullptr) {
      for (const std::string& dead : cluster_->DeadChildren()) {
        if (expected_dead_.count(dead.substr(0, dead.find(':')))) continue;
        ADD_FAILURE() << "a child process ended during the test: " << dead;
      }
      if (HasFailure()) std::cerr << cluster_->DumpLogs(/*tail_bytes=*/12000);
      for (const std::string& line : cluster_->Stop()) std::cout << "teardown: " << line << "\n";
      cluster_.reset();
    }
    if (redis_ != nullptr && HasFailure()) {
      for (int i = 0; i < redis_->size(); ++i) {
        std::cerr << "----- redis node " << i << " (" << redis_->address(i) << ") log tail -----\n"
                  << redis_->LogTail(i, 2500) << "\n";
      }
    }
    redis_.reset();
  }

  // The master that owns partition p's slot now.
  int MasterOfPartition(int p) const {
    auto m = redis_->MasterOfKey(keys::Tag(p));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : -1;
  }

  // Instrument ids "<prefix>-<k>" on distinct partitions: first one on each
  // master of `masters` in turn, then any, until `count`.
  std::vector<std::string> PickInstruments(const std::string& prefix, int count, std::vector<int> masters) const {
    std::vector<std::string> out;
    std::set<int> partitions;
    for (int k = 0; k < 10000 && static_cast<int>(out.size()) < count; ++k) {
      const std::string id = absl::StrCat(prefix, "-", k);
      const int p = keys::Partition(id);
      if (partitions.count(p)) continue;
      const size_t i = out.size();
      if (i < masters.size() && MasterOfPartition(p) != masters[i]) continue;
      out.push_back(id);
      partitions.insert(p);
    }
    EXPECT_EQ(static_cast<int>(out.size()), count) << "could not pick instruments";
    return out;
  }

  // One MEMBER organisation with a facility, the given instruments and
  // buffers, and lab users "user-0".. "user-<users-1>".
  void SeedInventory(const std::vector<std::string>& ids, const std::vector<absl::Duration>& buffers, int users) {
    ASSERT_EQ(ids.size(), buffers.size());
    instruments_ = ids;
    buffers_ = buffers;
    const absl::Status s = testing::booking_checks::SeedInventory(*cluster_, kOrg, kFacility, ids, buffers, users);
    ASSERT_TRUE(s.ok()) << s;
  }

  std::string InstrumentName(int i) const { return "instruments/" + instruments_[static_cast<size_t>(i)]; }
  int PartitionOfInstrument(int i) const { return keys::Partition(instruments_[static_cast<size_t>(i)]); }
  absl::Duration Buffer(int i) const { return buffers_[static_cast<size_t>(i)]; }

  bv1::CreateBookingRequest MakeCreate(const Attempt& a) const {
    return CreateRequest(InstrumentName(a.instrument), a.user_id, a.reserved, a.request_id);
  }

  // One try on a->server; fills in the answer. Thread-safe.
  void Send(Attempt* a) const {
    bv1::CreateBookingRequest r = MakeCreate(*a);
    auto ctx = cluster_->AdminContext();
    Try t;
    t.server = a->server;
    t.sent = absl::Now();
    a->booking.Clear();
    grpc::Status s = cluster_->booking(a->server).CreateBooking(ctx.get(), r, &a->booking);
    t.answered = absl::Now();
    a->code = s.error_code();
    a->message = s.error_message();
    a->reason = s.ok() ? "" : GrpcErrorReason(s);
    t.code = a->code;
    t.reason = a->reason;
    a->tries.push_back(t);
  }

  // The next replica for a retry: the one after a->server that is not down.
  int NextServer(int server, const LoadOptions& load) const {
    const int n = cluster_->booking_replicas();
    int next = (server + 1) % n;
    for (int k = 0; k < n && load.server_down && load.server_down(next); ++k) next = (next + 1) % n;
    return next;
  }

  // Runs load until `stop` is set (or every thread sent max_per_thread);
  // then the caller joins through Finish().
  class Load {
   public:
    Load(BookingOnRedisClusterTest* test, LoadOptions options) : test_(test), options_(std::move(options)) {}
    ~Load() { Finish(); }

    void Start() {
      per_thread_.resize(static_cast<size_t>(options_.threads));
      const int instruments = static_cast<int>(test_->instruments_.size());
      for (int t = 0; t < options_.threads; ++t) {
        threads_.emplace_back([this, t, instruments] {
          std::mt19937_64 rng(options_.seed + static_cast<uint64_t>(t));
          std::uniform_int_distribution<int> instrument(0, instruments - 1);
          std::uniform_int_distribution<int> user(0, options_.users - 1);
          std::uniform_int_distribution<int> start_step(0, options_.days * 24 * 12 - 1);  // 5-min steps
          std::uniform_int_distribution<int> length_steps(1, 36);             // 5..180 min
          const int first = options_.first_server ? options_.first_server(t) : t % test_->cluster_->booking_replicas();
          // A request answered UNAVAILABLE waits in `pending` for its retry
          // (same request_id, same content, the next replica) while the
          // thread goes on with new requests, as independent clients would.
          struct Pending {
            Attempt a;
            absl::Time first_try;
            absl::Time next;
          };
          std::deque<Pending> pending;
          auto finish = [&](Attempt& a) {
            const bool ok = a.ok();
            {
              std::lock_guard<std::mutex> lock(mu_);
              per_thread_[static_cast<size_t>(t)].push_back(std::move(a));
            }
            answered_.fetch_add(1);
            if (ok) accepted_.fetch_add(1);
          };
          auto settle = [&](Attempt& a, absl::Time first_try) {
            const absl::Time now = absl::Now();
            if (a.code == grpc::UNAVAILABLE && now < first_try + options_.retry_for) {
              a.server = test_->NextServer(a.server, options_);
              pending.push_back({std::move(a), first_try, now + absl::Milliseconds(50)});
            } else {
              finish(a);
            }
          };
          int i = 0;
          while (true) {
            const bool more = i < options_.max_per_thread && !stop_.load();
            if (!pending.empty() && (!more || pending.front().next <= absl::Now())) {
              Pending p = std::move(pending.front());
              pending.pop_front();
              const absl::Time now = absl::Now();
              if (p.next > now) absl::SleepFor(p.next - now);
              if (options_.server_down && options_.server_down(p.a.server)) p.a.server = test_->NextServer(p.a.server, options_);
              test_->Send(&p.a);
              settle(p.a, p.first_try);
              continue;
            }
            if (!more) break;
            Attempt a;
            a.server = first;
            if (options_.server_down && options_.server_down(a.server)) a.server = test_->NextServer(a.server, options_);
            a.instrument = instrument(rng);
            a.user_id = absl::StrCat("user-", user(rng));
            a.request_id = absl::StrFormat("%s-t%02d-r%04d", options_.prefix, t, i);
            a.reserved.start = test_->base_ + absl::Minutes(5) * start_step(rng);
            a.reserved.end = a.reserved.start + absl::Minutes(5) * length_steps(rng);
            ++i;
            const absl::Time first_try = absl::Now();
            test_->Send(&a);
            settle(a, first_try);
          }
        });
      }
    }

    // Waits (bounded) until `n` more requests than now have been answered;
    // false on timeout or when the load ended first.
    bool WaitAnswered(int n, absl::Duration timeout = absl::Seconds(120)) {
      const int target = answered_.load() + n;
      const absl::Time deadline = absl::Now() + timeout;
      while (answered_.load() < target) {
        if (absl::Now() >= deadline || done()) return answered_.load() >= target;
        absl::SleepFor(absl::Milliseconds(10));
      }
      return true;
    }
    bool done() {
      std::lock_guard<std::mutex> lock(mu_);
      size_t total = 0;
      for (const auto& v : per_thread_) total += v.size();
      return stop_.load() || total >= static_cast<size_t>(options_.threads * options_.max_per_thread);
    }
    int answered() const { return answered_.load(); }
    void Stop() { stop_.store(true); }
    // Joins the threads; the results.
    std::vector<Attempt> Finish() {
      for (auto& th : threads_) th.join();
      threads_.clear();
      std::vector<Attempt> all;
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& v : per_thread_) {
        for (auto& a : v) all.push_back(a);
      }
      return all;
    }

   private:
    BookingOnRedisClusterTest* test_;
    LoadOptions options_;
    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::vector<std::vector<Attempt>> per_thread_;
    std::atomic<bool> stop_{false};
    std::atomic<int> answered_{0};
    std::atomic<int> accepted_{0};
  };

  absl::StatusOr<std::vector<bv1::Booking>> ListAll(int server, int instrument,
                                                    const std::vector<bv1::Booking::State>& states) const {
    return testing::booking_checks::ListAll(*cluster_, server, InstrumentName(instrument), states, /*page_size=*/97);
  }
  long long ListedBookings() const { return testing::booking_checks::ListedBookings(cluster_->redis()); }
  // Every key, through the pool's SCAN (which walks every master).
  std::vector<std::string> AllKeys() const { return testing::booking_checks::AllKeys(cluster_->redis()); }
  absl::StatusOr<std::vector<OutboxEvent>> ReadOutbox() const { return testing::booking_checks::ReadOutbox(cluster_->redis()); }

  // The history checks (see the file comment) over the final answers.
  // `live_servers`: the replicas to list through. Returns the accepted ones.
  std::vector<Attempt> CheckHistory(const std::vector<Attempt>& attempts, const std::vector<int>& live_servers) {
    const int kInstruments = static_cast<int>(instruments_.size());
    const auto instrument_name = [this](int i) { return InstrumentName(i); };
    const auto buffer = [this](int i) { return Buffer(i); };
    // ---- Only two answers; accepted ones are what was asked.
    int retried = 0;
    for (const Attempt& a : attempts) retried += a.tries.size() > 1 ? 1 : 0;
    Answers<Attempt> answers;
    ClassifyAnswers<Attempt>(attempts, instrument_name, buffer, &answers);
    const std::vector<Attempt>& accepted = answers.accepted;
    const std::vector<Attempt>& rejected = answers.rejected;
    std::cout << attempts.size() << " requests: " << accepted.size() << " accepted, " << rejected.size()
              << " SLOT_TAKEN, " << answers.unexpected << " other; " << retried << " needed more than one try\n";
    EXPECT_GT(accepted.size(), 0u);
    EXPECT_GT(rejected.size(), 0u);

    // ---- Per instrument: disjoint; every replica lists exactly them.
    std::map<std::string, const Attempt*> by_name;
    const auto by_instrument = BlockedByInstrument(accepted, kInstruments, &by_name);
    for (int i = 0; i < kInstruments; ++i) {
      const auto& mine = by_instrument[static_cast<size_t>(i)];
      EXPECT_EQ(FindOverlap(mine), "") << "accepted bookings overlap on " << InstrumentName(i);
      for (int server : live_servers) {
        auto listed = ListAll(server, i, {bv1::Booking::CONFIRMED});
        EXPECT_TRUE(listed.ok()) << listed.status();
        if (listed.ok()) CheckListing(*listed, mine, by_name, InstrumentName(i), server);
      }
    }

    // ---- Every rejection had an accepted booking in its way.
    CheckRejectionsJustified(rejected, by_instrument, buffer);

    // ---- Events: one booking_created per accepted booking, nothing else.
    auto events = ReadOutbox();
    EXPECT_TRUE(events.ok()) << events.status();
    if (events.ok()) CheckEvents(*events, accepted, by_name);

    // ---- Listing indexes; nothing left by rejected requests.
    EXPECT_EQ(ListedBookings(), static_cast<long long>(accepted.size())) << "listing index entries vs accepted";
    const size_t id_length = attempts.empty() ? 0 : attempts.front().request_id.size();
    const std::string id_head = attempts.empty() ? "" : attempts.front().request_id.substr(0, 4);  // "cc-t"
    CheckNoKeysOfRejected<Attempt>(AllKeys(), rejected, id_head, id_length,
                                   [](const Attempt& a) { return a.tries.size() > 1; });
    return accepted;
  }

  // Every accepted request sent again, unchanged, to each live replica in
  // turn: the same booking.
  void CheckReplays(const std::vector<Attempt>& accepted, const std::vector<int>& live_servers) {
    int differ = 0;
    for (size_t k = 0; k < accepted.size(); ++k) {
      Attempt again = accepted[k];
      again.tries.clear();
      again.server = live_servers[k % live_servers.size()];
      Send(&again);
      const bool same = again.ok() && again.booking.name() == accepted[k].booking.name() &&
                        BlockedOf(again.booking).start == BlockedOf(accepted[k].booking).start &&
                        BlockedOf(again.booking).end == BlockedOf(accepted[k].booking).end &&
                        again.booking.state() == accepted[k].booking.state();
      if (!same && ++differ <= kMaxListedFailures) {
        ADD_FAILURE() << "the same request again answered differently: first " << accepted[k].Describe()
                      << "; again " << again.Describe();
      }
    }
    EXPECT_EQ(differ, 0) << "replays of accepted requests that differ";
  }

  std::unique_ptr<RedisCluster> redis_;
  std::unique_ptr<BookingTestCluster> cluster_;
  std::set<std::string> expected_dead_;  // child names killed on purpose
  absl::Time base_;
  std::vector<std::string> instruments_;
  std::vector<absl::Duration> buffers_;
};

}  // namespace labshare::booking::cluster_test

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_CLUSTER_FIXTURE_H_
