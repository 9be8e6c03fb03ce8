// Contested CreateBooking load against a BookingTestCluster whose Redis is
// made to fail (kill -9, a Sentinel failover), and the check of the whole
// history afterwards. Shared by booking_durability_test and
// booking_failover_test.
//
// ContestedLoad: N client threads, each sending CreateBooking for random
// slots on a few instruments (so many requests meet a taken slot), spread
// over the booking replicas. A request answered UNAVAILABLE or
// DEADLINE_EXCEEDED is sent again with the same request_id (to the next
// replica, after a short backoff) until it gets an answer (OK or
// FAILED_PRECONDITION) or its retry budget runs out. Every attempt records
// what was sent and the final answer.
//
// CheckHistory then reads what survived: every acknowledged booking through
// GetBooking (present and equal to the answer), every instrument's CONFIRMED
// calendar through ListBookings (no two blocked intervals overlap,
// half-open; every acknowledged booking listed), the outbox streams through
// a plain pool on the (new) master (one booking_created per acknowledged
// booking, none for anything else), and finally sends every answered
// request again with its request_id: the answer must be the same (the same
// booking, or SLOT_TAKEN again).
//
// The intervals, the overlap check and the outbox read come from
// booking_history_checks.h (shared with booking_concurrency_test and
// booking_cluster_fixture.h); SeedContestedInventory and ExpectNothingLost
// are the setup and the assertions both outage tests share.
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_HISTORY_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_HISTORY_H_

#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/redis.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "tests/booking/booking_history_checks.h"
#include "tests/booking/booking_test_cluster.h"

namespace labshare::testing {

namespace history_internal {
namespace bv1 = labshare::booking::v1;

using booking_checks::BlockedOf;
using booking_checks::FindOverlap;
using booking_checks::Fmt;
using booking_checks::Interval;

inline bool Retryable(grpc::StatusCode code) {
  return code == grpc::UNAVAILABLE || code == grpc::DEADLINE_EXCEEDED;
}

// fn(i) for i in [0, n) on `threads` threads.
template <typename Fn>
void ParallelFor(size_t n, int threads, Fn fn) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
    });
  }
  for (auto& th : pool) th.join();
}
}  // namespace history_internal

// One CreateBooking request (one request_id) and its final answer.
struct HistoryAttempt {
  int instrument = 0;
  std::string user_id;
  std::string request_id;
  history_internal::Interval reserved;
  int first_server = 0;
  int last_server = 0;
  int tries = 0;
  absl::Time first_sent;
  absl::Time last_sent;  // when the try that got the final answer was sent
  absl::Time answered;   // when the final answer came
  grpc::StatusCode code = grpc::UNAVAILABLE;
  std::string reason;
  std::string message;
  booking::v1::Booking booking;  // when OK

  bool ok() const { return code == grpc::OK; }
  bool slot_taken() const { return code == grpc::FAILED_PRECONDITION && reason == "SLOT_TAKEN"; }
  bool answered_finally() const { return ok() || code == grpc::FAILED_PRECONDITION; }
  std::string Describe() const {
    std::string answer = ok() ? absl::StrCat("OK ", booking.name(), " blocked ",
                                             history_internal::Fmt(history_internal::BlockedOf(booking)))
                              : absl::StrCat("code ", static_cast<int>(code), " '", reason, "' ", message);
    return absl::StrCat("CreateBooking{", request_id, ", instrument #", instrument, ", users/", user_id, ", ",
                        history_internal::Fmt(reserved), "} ", tries, " tries, last via booking-", last_server,
                        " -> ", answer);
  }
};

struct ContestedLoadOptions {
  std::vector<std::string> instruments;  // "instruments/ID"
  std::vector<std::string> users;        // user ids
  absl::Time base;                       // earliest start (whole minute, future)
  int slots = 96;                        // starts on a 15-minute grid: 24 h
  int threads = 12;
  uint64_t seed = 1;
  std::string request_prefix = "load";
  // Retries of one request_id on UNAVAILABLE / DEADLINE_EXCEEDED: bounded.
  absl::Duration retry_budget = absl::Seconds(60);
};

class ContestedLoad {
 public:
  ContestedLoad(BookingTestCluster* cluster, ContestedLoadOptions options)
      : cluster_(cluster), options_(std::move(options)) {}
  ~ContestedLoad() { Stop(); }

  void Start() {
    for (int t = 0; t < options_.threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }

  // Stops sending new requests; each thread finishes (retries) the one it
  // has. Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true);
    }
    resumed_.notify_all();
    for (auto& th : threads_) th.join();
    threads_.clear();
  }

  // Threads finish the request they have and wait until Resume().
  void Pause() {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = true;
  }
  void Resume() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      paused_ = false;
    }
    resumed_.notify_all();
  }

  int64_t acknowledged() const { return acknowledged_.load(); }
  int64_t answered() const { return answered_.load(); }

  // Waits until `n` requests were acknowledged (OK), bounded.
  bool WaitAcknowledged(int64_t n, absl::Duration timeout) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (acknowledged_.load() < n) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  // Waits (bounded) for `more` acknowledged bookings than now; if they do
  // not come, stops the load and says so (for phase `phase`).
  absl::Status WaitPhase(int64_t more, absl::Duration timeout, int phase) {
    const int64_t want = acknowledged() + more;
    if (WaitAcknowledged(want, timeout)) return absl::OkStatus();
    Stop();
    return absl::DeadlineExceededError(absl::StrCat("only ", acknowledged(), " of ", want,
                                                    " bookings acknowledged within ", absl::FormatDuration(timeout),
                                                    " (phase ", phase, ")"));
  }

  // After Stop(): every request sent, in no particular order.
  std::vector<HistoryAttempt> attempts() {
    std::lock_guard<std::mutex> lock(mu_);
    return attempts_;
  }

  // After Stop(): requests sent before `t` and answered after it (in flight
  // across an outage at t, whether the client retried or the service waited).
  int64_t InFlightAt(absl::Time t) {
    int64_t n = 0;
    for (const HistoryAttempt& a : attempts()) n += a.first_sent <= t && a.answered >= t ? 1 : 0;
    return n;
  }

  // After Stop(): the earliest OK answer to a call sent at or after `t` (a
  // first try or a retry), absl::InfiniteFuture() if none. After a kill at
  // t, the first write that succeeded again.
  absl::Time FirstAcknowledgementSentAfter(absl::Time t) {
    absl::Time best = absl::InfiniteFuture();
    for (const HistoryAttempt& a : attempts()) {
      if (a.ok() && a.last_sent >= t) best = std::min(best, a.answered);
    }
    return best;
  }

  booking::v1::CreateBookingRequest MakeRequest(const HistoryAttempt& a) const {
    return booking_checks::CreateRequest(options_.instruments[static_cast<size_t>(a.instrument)], a.user_id,
                                         a.reserved, a.request_id);
  }

 private:
  void Run(int t) {
    std::mt19937_64 rng(options_.seed * 1000003 + static_cast<uint64_t>(t));
    auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const int replicas = cluster_->booking_replicas();
    for (int r = 0; !stop_.load(); ++r) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        resumed_.wait(lock, [this] { return !paused_ || stop_.load(); });
      }
      if (stop_.load()) break;
      HistoryAttempt a;
      a.instrument = uniform(0, static_cast<int>(options_.instruments.size()) - 1);
      a.user_id = options_.users[static_cast<size_t>(uniform(0, static_cast<int>(options_.users.size()) - 1))];
      a.request_id = absl::StrFormat("%s-t%02d-r%05d", options_.request_prefix, t, r);
      a.reserved.start = options_.base + absl::Minutes(15) * uniform(0, options_.slots - 1);
      a.reserved.end = a.reserved.start + absl::Minutes(15) * uniform(1, 4);
      a.first_server = a.last_server = uniform(0, replicas - 1);
      Send(&a, replicas);
      if (a.ok()) acknowledged_.fetch_add(1);
      answered_.fetch_add(1);
      std::lock_guard<std::mutex> lock(mu_);
      attempts_.push_back(std::move(a));
    }
  }

  void Send(HistoryAttempt* a, int replicas) const {
    const booking::v1::CreateBookingRequest request = MakeRequest(*a);
    a->first_sent = absl::Now();
    const absl::Time give_up = a->first_sent + options_.retry_budget;
    absl::Duration backoff = absl::Milliseconds(20);
    while (true) {
      ++a->tries;
      a->booking.Clear();
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + cluster_->admin_token());
      a->last_sent = absl::Now();
      ctx.set_deadline(absl::ToChronoTime(a->last_sent + absl::Seconds(15)));
      const grpc::Status s = cluster_->booking(a->last_server).CreateBooking(&ctx, request, &a->booking);
      a->code = s.error_code();
      a->message = s.error_message();
      a->reason = s.ok() ? "" : GrpcErrorReason(s);
      a->answered = absl::Now();
      if (!history_internal::Retryable(a->code) || a->answered >= give_up) return;
      // The same request_id again, on the next replica, as a client would.
      a->last_server = (a->last_server + 1) % replicas;
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
  }

  BookingTestCluster* cluster_;
  const ContestedLoadOptions options_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acknowledged_{0};
  std::atomic<int64_t> answered_{0};
  std::mutex mu_;
  std::vector<HistoryAttempt> attempts_;  // guarded by mu_
  bool paused_ = false;                   // guarded by mu_
  std::condition_variable resumed_;
};

// What CheckHistory found. The counts are all zero for a history with no
// loss; `failures` lists the first few findings one by one.
struct HistoryReport {
  int64_t requests = 0;
  int64_t acknowledged = 0;     // final answer OK
  int64_t slot_taken = 0;       // final answer SLOT_TAKEN
  int64_t retried = 0;          // requests sent more than once
  int64_t unanswered = 0;       // retry budget ran out
  int64_t unexpected = 0;       // any other final answer
  int64_t acknowledged_overlaps = 0;  // two OK answers whose blocked intervals overlap
  int64_t lost = 0;             // acknowledged, GetBooking NOT_FOUND
  int64_t changed = 0;          // acknowledged, present but not as answered
  int64_t unlisted = 0;         // acknowledged, missing from its calendar listing
  int64_t calendar_overlaps = 0;  // instruments whose CONFIRMED bookings overlap
  int64_t missing_events = 0;   // acknowledged without a booking_created event
  int64_t duplicate_events = 0;  // more than one event for one booking
  int64_t foreign_events = 0;   // events of bookings nobody was told about
  int64_t retry_mismatches = 0;  // the same request_id sent again, answered otherwise
  int64_t read_errors = 0;      // reads that failed (the check is incomplete)
  std::vector<std::string> failures;
  // Acknowledged booking name -> event_id of its booking_created event (for
  // consumers' checks, e.g. the audit trail).
  std::map<std::string, std::string> created_event_ids;

  bool clean() const {
    return unanswered + unexpected + acknowledged_overlaps + lost + changed + unlisted + calendar_overlaps +
               missing_events + duplicate_events + foreign_events + retry_mismatches + read_errors ==
           0;
  }
  std::string Summary() const {
    return absl::StrCat(requests, " requests: ", acknowledged, " acknowledged, ", slot_taken, " SLOT_TAKEN, ",
                        retried, " retried, ", unanswered, " unanswered, ", unexpected,
                        " other answers; acknowledged and lost: ", lost, "; changed: ", changed,
                        "; unlisted: ", unlisted, "; overlaps: ", acknowledged_overlaps, " among answers, ",
                        calendar_overlaps, " in calendars; events missing ", missing_events, ", duplicated ",
                        duplicate_events, ", foreign ", foreign_events, "; retries answered otherwise: ",
                        retry_mismatches, "; read errors: ", read_errors);
  }
};

// `data`: a pool on the node that now holds the data (a plain host:port,
// no sentinels), for the outbox streams. `other_bookings`: bookings made
// beside the load on other instruments (e.g. booking_charge_history.h's
// ChargeLoad, which checks them itself); their events are not foreign.
inline HistoryReport CheckHistory(BookingTestCluster& cluster, RedisPool& data, const ContestedLoad& load,
                                  const std::vector<HistoryAttempt>& attempts,
                                  const std::vector<std::string>& instruments,
                                  const std::set<std::string>& other_bookings = {}) {
  namespace bv1 = booking::v1;
  using history_internal::BlockedOf;
  using history_internal::Interval;
  constexpr size_t kListed = 20;
  constexpr int kCheckThreads = 8;
  HistoryReport rep;
  auto fail = [&](std::string what) {
    if (rep.failures.size() < kListed) rep.failures.push_back(std::move(what));
  };
  const int replicas = cluster.booking_replicas();
  // A read through the services, retried while they still recover.
  auto call = [&](auto&& fn) {
    grpc::Status s;
    for (int i = 0; i < 50; ++i) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + cluster.admin_token());
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(15)));
      s = fn(&ctx, i % replicas);
      if (!history_internal::Retryable(s.error_code())) return s;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return s;
  };

  // ---- The answers themselves.
  std::map<std::string, const HistoryAttempt*> by_name;
  std::vector<std::vector<std::pair<Interval, std::string>>> answered_blocked(instruments.size());
  for (const HistoryAttempt& a : attempts) {
    ++rep.requests;
    if (a.tries > 1) ++rep.retried;
    if (a.ok()) {
      ++rep.acknowledged;
      if (!by_name.emplace(a.booking.name(), &a).second) {
        ++rep.acknowledged_overlaps;
        fail(absl::StrCat("two requests answered with one booking: ", a.Describe()));
      }
      answered_blocked[static_cast<size_t>(a.instrument)].push_back({BlockedOf(a.booking), a.booking.name()});
    } else if (a.slot_taken()) {
      ++rep.slot_taken;
    } else if (history_internal::Retryable(a.code)) {
      ++rep.unanswered;
      fail("no answer within the retry budget: " + a.Describe());
    } else {
      ++rep.unexpected;
      fail("unexpected answer: " + a.Describe());
    }
  }
  for (size_t i = 0; i < instruments.size(); ++i) {
    const std::string overlap = history_internal::FindOverlap(answered_blocked[i]);
    if (!overlap.empty()) {
      ++rep.acknowledged_overlaps;
      fail(absl::StrCat("acknowledged bookings of ", instruments[i], " overlap: ", overlap));
    }
  }

  // ---- Every acknowledged booking is there, as answered.
  std::mutex mu;  // rep
  std::vector<const HistoryAttempt*> acked;
  for (const auto& [name, a] : by_name) acked.push_back(a);
  history_internal::ParallelFor(acked.size(), kCheckThreads, [&](size_t i) {
    const HistoryAttempt* a = acked[i];
    bv1::GetBookingRequest r;
    r.set_name(a->booking.name());
    bv1::Booking got;
    const grpc::Status s = call([&](grpc::ClientContext* ctx, int server) {
      got.Clear();
      return cluster.booking(server).GetBooking(ctx, r, &got);
    });
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    const bool same = s.ok() && d.Compare(a->booking, got);
    std::lock_guard<std::mutex> lock(mu);
    if (s.error_code() == grpc::NOT_FOUND) {
      ++rep.lost;
      fail(absl::StrCat("acknowledged at ", absl::FormatTime(a->answered), ", lost: ", a->Describe()));
    } else if (!s.ok()) {
      ++rep.read_errors;
      fail(absl::StrCat("GetBooking(", a->booking.name(), "): code ", static_cast<int>(s.error_code()), " ",
                        s.error_message()));
    } else if (!same) {
      ++rep.changed;
      fail(absl::StrCat(a->booking.name(), " differs from the answer: ", diff));
    }
  });

  // ---- Calendars: CONFIRMED bookings never overlap; all acknowledged listed.
  std::set<std::string> listed;
  for (size_t i = 0; i < instruments.size(); ++i) {
    std::vector<std::pair<Interval, std::string>> blocked;
    std::string token;
    bool complete = false;
    for (int page = 0; page < 1000; ++page) {
      bv1::ListBookingsRequest r;
      r.set_instrument(instruments[i]);
      r.add_states(bv1::Booking::CONFIRMED);
      r.set_page_size(200);
      r.set_page_token(token);
      bv1::ListBookingsResponse resp;
      const grpc::Status s = call([&](grpc::ClientContext* ctx, int server) {
        resp.Clear();
        return cluster.booking(server).ListBookings(ctx, r, &resp);
      });
      if (!s.ok()) {
        ++rep.read_errors;
        fail(absl::StrCat("ListBookings(", instruments[i], "): code ", static_cast<int>(s.error_code()), " ",
                          s.error_message()));
        break;
      }
      for (const bv1::Booking& b : resp.bookings()) {
        blocked.push_back({BlockedOf(b), b.name()});
        listed.insert(b.name());
      }
      token = resp.next_page_token();
      if (token.empty()) {
        complete = true;
        break;
      }
    }
    if (!complete) continue;
    const std::string overlap = history_internal::FindOverlap(blocked);
    if (!overlap.empty()) {
      ++rep.calendar_overlaps;
      fail(absl::StrCat("CONFIRMED bookings of ", instruments[i], " overlap: ", overlap));
    }
  }
  for (const auto& [name, a] : by_name) {
    if (listed.count(name) == 0) {
      ++rep.unlisted;
      fail("acknowledged, not in its instrument's CONFIRMED listing: " + a->Describe());
    }
  }

  // ---- Outbox: one booking_created per acknowledged booking, nothing else.
  std::map<std::string, int> created;
  auto events = booking_checks::ReadOutbox(data);
  if (!events.ok()) {
    ++rep.read_errors;
    fail(absl::StrCat("outbox: ", events.status().ToString()));
  } else {
    for (const booking_checks::OutboxEvent& e : *events) {
      if (e.event.payload_case() != bv1::BookingEvent::kBookingCreated) continue;
      const std::string& name = e.event.booking_created().booking().name();
      ++created[name];
      if (by_name.count(name) != 0) rep.created_event_ids[name] = e.event.header().event_id();
    }
  }
  for (const auto& [name, a] : by_name) {
    const auto it = created.find(name);
    const int n = it == created.end() ? 0 : it->second;
    if (n == 0) {
      ++rep.missing_events;
      fail("acknowledged, no booking_created event: " + a->Describe());
    } else if (n > 1) {
      ++rep.duplicate_events;
      fail(absl::StrCat(n, " booking_created events for ", a->Describe()));
    }
  }
  for (const auto& [name, n] : created) {
    if (by_name.count(name) == 0 && other_bookings.count(name) == 0) {
      ++rep.foreign_events;
      fail(absl::StrCat(n, " booking_created events for ", name, ", which no request was answered with"));
    }
  }

  // ---- Every answered request once more with its request_id: same answer.
  history_internal::ParallelFor(attempts.size(), kCheckThreads, [&](size_t i) {
    const HistoryAttempt& a = attempts[i];
    if (!a.answered_finally()) return;
    const bv1::CreateBookingRequest request = load.MakeRequest(a);
    bv1::Booking again;
    const grpc::Status s = call([&](grpc::ClientContext* ctx, int server) {
      again.Clear();
      return cluster.booking((a.last_server + 1 + server) % replicas).CreateBooking(ctx, request, &again);
    });
    bool same = s.error_code() == a.code && (s.ok() ? "" : GrpcErrorReason(s)) == a.reason;
    if (same && a.ok()) {
      google::protobuf::util::MessageDifferencer d;
      same = d.Compare(a.booking, again);
    }
    if (!same) {
      std::lock_guard<std::mutex> lock(mu);
      ++rep.retry_mismatches;
      fail(absl::StrCat("sent again, answered code ", static_cast<int>(s.error_code()), " '",
                        s.ok() ? again.name() : GrpcErrorReason(s), "': first ", a.Describe()));
    }
  });
  return rep;
}

// The setup both outage tests (durability, failover) run the load on: three
// booking replicas, three instruments, four users, twelve client threads.
inline constexpr int kOutageBookingReplicas = 3;
inline constexpr int kOutageInstruments = 3;
inline constexpr int kOutageUsers = 4;
inline constexpr int kOutageThreads = 12;

// One MEMBER organisation `org` with facility `facility`, `instruments`
// instruments "<prefix>-<i>" (the first without buffer, the others 10 min)
// and lab users "user-0".. "user-<users-1>": the load's instruments and
// users, its base midnight UTC two to three days ahead and starts on a
// quarter-hour grid over two weeks (room for about 1,300 bookings, and a
// growing share of requests meets a taken slot).
inline absl::StatusOr<ContestedLoadOptions> SeedContestedInventory(BookingTestCluster& cluster,
                                                                   const std::string& org,
                                                                   const std::string& facility,
                                                                   const std::string& prefix, int instruments,
                                                                   int users) {
  ContestedLoadOptions options;
  absl::Status s = cluster.CreateMemberOrganization(org, "CORE");
  if (!s.ok()) return s;
  s = cluster.CreateFacility(facility, org);
  if (!s.ok()) return s;
  for (int i = 0; i < instruments; ++i) {
    const std::string id = absl::StrCat(prefix, "-", i);
    s = cluster.CreateInstrument(id, facility, org, i == 0 ? absl::ZeroDuration() : absl::Minutes(10));
    if (!s.ok()) return s;
    options.instruments.push_back("instruments/" + id);
  }
  for (int u = 0; u < users; ++u) {
    const std::string id = absl::StrCat("user-", u);
    s = cluster.CreateLabUser(id, org);
    if (!s.ok()) return s;
    options.users.push_back(id);
  }
  options.base = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 86400 + 2) * 86400);
  options.slots = 96 * 14;
  return options;
}

// The assertions over a history that must have lost nothing: every finding
// listed, at least `min_acknowledged` bookings, a contested load, requests
// in flight across the outage (`in_flight`, the fewest over the outages),
// and every count of HistoryReport zero.
inline void ExpectNothingLost(const HistoryReport& rep, int64_t min_acknowledged, int64_t in_flight,
                              const std::string& outage) {
  for (const std::string& f : rep.failures) ADD_FAILURE() << f;
  EXPECT_GE(rep.acknowledged, min_acknowledged);
  EXPECT_GT(rep.slot_taken, 0) << "the load was not contested";
  EXPECT_GT(in_flight, 0) << "no request met the " << outage;
  EXPECT_EQ(rep.lost, 0);
  EXPECT_EQ(rep.changed, 0);
  EXPECT_EQ(rep.unlisted, 0);
  EXPECT_EQ(rep.acknowledged_overlaps, 0);
  EXPECT_EQ(rep.calendar_overlaps, 0);
  EXPECT_EQ(rep.missing_events, 0);
  EXPECT_EQ(rep.duplicate_events, 0);
  EXPECT_EQ(rep.foreign_events, 0);
  EXPECT_EQ(rep.retry_mismatches, 0);
  EXPECT_EQ(rep.unanswered, 0);
  EXPECT_EQ(rep.unexpected, 0);
  EXPECT_EQ(rep.read_errors, 0);
}

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_HISTORY_H_
