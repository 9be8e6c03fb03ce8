// Charges across a Redis outage: a load that drives bookings through to a
// charge while the master fails, and the check that labshare-billing charged
// each exactly once. Used by booking_failover_test beside ContestedLoad
// (booking_history.h), on instruments of its own.
//
// ChargeLoad: N client threads, each making a booking as a lab user of a
// payer organisation (not the instruments' owner) and cancelling it at once
// as that user (initiator BOOKER), every call retried on UNAVAILABLE or
// DEADLINE_EXCEEDED with the same request_id (to the next replica, bounded).
// Each (thread, round) has a two-hour slot of its own and books 5 to 119
// minutes of it, so no two bookings of the load ever overlap: every create
// must be answered OK. Two rounds in three start within the instruments'
// late-cancellation notice (the booking service marks the cancellation
// late: billing charges a LATE_CANCELLATION_FEE), every third far beyond
// it (on time: no charge).
//
// Afterwards CheckCharges reads what survived, through the services' RPCs:
//   - every acknowledged cancellation is there as answered (GetBooking);
//   - every call sent again with its request_id is answered the same;
//   - the booking outboxes (read on the data node) hold one booking_created
//     and one booking_cancelled event per cancelled booking (the latter late
//     as answered), none for anything else of the load;
// Then, once billing's consumer group has read and acknowledged every
// booking event (WaitConsumerGroupCaughtUp; after the calls sent again, so
// anything a retry published would show), through billing's RPCs:
//   - ListCharges of the payer organisation: exactly one charge per late
//     cancellation, of the amount the test's rate card gives by hand
//     (reserved time rounded up to the 15-minute unit at the hourly price,
//     times the fee, each step rounded half up), payable in full, posted; no
//     charge for an on-time cancellation or for anything else;
//   - ListPostings of the payer: one balanced CHARGE posting per charge;
//   - ListBalances over every organisation: debit totals equal credit
//     totals, and the payer's EXPENSE and PAYABLE and the owner's RECEIVABLE
//     and INCOME each hold exactly the sum of the expected fees;
//   - {billing}:outbox (read on the data node): one ChargePosted per charge
//     (their event ids, for the audit-trail check of the caller).
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_CHARGE_HISTORY_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_CHARGE_HISTORY_H_

#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/redis.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "tests/booking/booking_history.h"
#include "tests/booking/booking_test_cluster.h"

namespace labshare::testing {

// One instrument of the charge load and its rate card.
struct ChargeInstrument {
  std::string id;
  int64_t hourly_minor = 0;  // MEMBER PER_HOUR price, CNY minor units
  int32_t late_fee_bps = 0;  // slot_rules.late_cancel_fee_bps
};

// The rate card's rule, by hand: reserved time rounded up to whole
// 15-minute units (slot_rules.billing_unit), priced at the hourly rate and
// rounded half up to the minor unit, then the late-cancellation fee share,
// rounded half up again.
inline int64_t ExpectedLateFee(const ChargeInstrument& in, absl::Duration reserved) {
  const int64_t unit_s = 15 * 60;
  const int64_t billed_s = (absl::ToInt64Seconds(reserved) + unit_s - 1) / unit_s * unit_s;
  auto half_up = [](int64_t num, int64_t den) { return (2 * num + den) / (2 * den); };
  const int64_t base = half_up(in.hourly_minor * billed_s, 3600);
  return half_up(base * in.late_fee_bps, 10000);
}

// The fields of a charge the check compares, on one line.
inline std::string DescribeCharge(const billing::v1::Charge& c) {
  return absl::StrCat(c.name(), " of ", c.booking(), " (", c.instrument(), ", ", c.payer_organization(), " -> ",
                      c.owner_organization(), ", ", c.user(), "): ", billing::v1::FeeKind_Name(c.fee_kind()), " ",
                      c.amount().amount_minor(), " ", c.amount().currency_code(), " payable ",
                      c.payable_amount().amount_minor(), " at ", c.fee_bps(), " bps, ",
                      billing::v1::Charge::State_Name(c.state()), ", posting '", c.posting(), "', event ",
                      c.source_event_id());
}

// One call sent until it got an answer (or its retry budget ran out).
struct RetriedCall {
  int tries = 0;
  int server = 0;  // the replica that gave the final answer
  absl::Time first_sent = absl::InfiniteFuture();
  absl::Time last_sent;
  absl::Time answered;
  grpc::StatusCode code = grpc::UNAVAILABLE;
  std::string reason;
  std::string message;
  booking::v1::Booking booking;  // when OK

  bool sent() const { return tries > 0; }
  bool ok() const { return code == grpc::OK; }
  std::string Describe() const {
    if (!sent()) return "not sent";
    return absl::StrCat(tries, " tries, last via booking-", server, " -> ",
                        ok() ? absl::StrCat("OK ", booking.name(), " ",
                                            booking::v1::Booking::State_Name(booking.state()),
                                            booking.late_cancellation() ? " late" : "")
                             : absl::StrCat(booking_checks::CodeName(code), " '", reason, "' ", message));
  }
};

// One booking of the charge load: created, then cancelled.
struct ChargeAttempt {
  int instrument = 0;
  std::string user_id;
  history_internal::Interval reserved;
  std::string create_id;
  std::string cancel_id;
  RetriedCall create;
  RetriedCall cancel;  // sent only when the create was answered OK

  bool cancelled() const { return create.ok() && cancel.ok(); }
  bool late() const { return cancelled() && cancel.booking.late_cancellation(); }
  std::string Describe() const {
    return absl::StrCat("booking{", create_id, ", instrument #", instrument, ", users/", user_id, ", ",
                        history_internal::Fmt(reserved), "} create: ", create.Describe(),
                        "; cancel: ", cancel.Describe());
  }
};

struct ChargeLoadOptions {
  std::vector<ChargeInstrument> instruments;
  std::string payer_org;           // id; its users book and cancel
  std::string owner_org;           // id; owns the instruments
  std::vector<std::string> users;  // user ids of payer_org (LAB_USER)
  absl::Time base;                 // first start (whole hour, future)
  absl::Duration late_notice;      // slot_rules.late_cancel_notice
  int threads = 3;
  uint64_t seed = 1;
  std::string request_prefix = "charge";
  absl::Duration retry_budget = absl::Seconds(60);
};

// Seeds payer organisation `payer_org` (a GENERAL member) with `users` lab
// users "<payer_org>-user-<u>", and on facility `facility` of `owner_org`
// (both existing) one instrument per entry of `instruments` (no buffer,
// late-cancellation notice 60 days, the entry's price and fee), before the
// first booking (booking caches inventory).
inline absl::StatusOr<ChargeLoadOptions> SeedChargeInventory(BookingTestCluster& cluster,
                                                             const std::string& owner_org,
                                                             const std::string& facility,
                                                             const std::string& payer_org,
                                                             std::vector<ChargeInstrument> instruments, int users) {
  ChargeLoadOptions options;
  options.owner_org = owner_org;
  options.payer_org = payer_org;
  options.late_notice = absl::Hours(24 * 60);
  absl::Status s = cluster.CreateMemberOrganization(payer_org, "GENERAL");
  if (!s.ok()) return s;
  for (const ChargeInstrument& in : instruments) {
    s = cluster.CreateInstrument(in.id, facility, owner_org, absl::ZeroDuration(),
                                 [&](inventory::v1::Instrument* instrument, inventory::v1::Rate* rate) {
                                   auto* rules = instrument->mutable_modes(0)->mutable_slot_rules();
                                   *rules->mutable_late_cancel_notice() = ToProto(options.late_notice);
                                   rules->set_late_cancel_fee_bps(in.late_fee_bps);
                                   rate->mutable_price()->set_amount_minor(in.hourly_minor);
                                 });
    if (!s.ok()) return s;
  }
  options.instruments = std::move(instruments);
  for (int u = 0; u < users; ++u) {
    const std::string id = absl::StrCat(payer_org, "-user-", u);
    s = cluster.CreateLabUser(id, payer_org);
    if (!s.ok()) return s;
    options.users.push_back(id);
  }
  options.base = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 3600 + 48) * 3600);
  return options;
}

class ChargeLoad {
 public:
  ChargeLoad(BookingTestCluster* cluster, ChargeLoadOptions options)
      : cluster_(cluster), options_(std::move(options)) {
    for (const std::string& u : options_.users) {
      tokens_[u] = cluster_->Mint(u, options_.payer_org, {Role::kLabUser});
    }
  }
  ~ChargeLoad() { Stop(); }
  ChargeLoad(const ChargeLoad&) = delete;
  ChargeLoad& operator=(const ChargeLoad&) = delete;

  const ChargeLoadOptions& options() const { return options_; }

  void Start() {
    for (int t = 0; t < options_.threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }
  // Stops starting bookings; each thread finishes (create and cancel) the
  // one it has. Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true);
    }
    resumed_.notify_all();
    for (auto& th : threads_) th.join();
    threads_.clear();
  }
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

  int64_t cancelled() const { return cancelled_.load(); }

  // Waits until `n` cancellations were acknowledged, bounded.
  bool WaitCancelled(int64_t n, absl::Duration timeout) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (cancelled_.load() < n) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  // After Stop(): every booking attempted.
  std::vector<ChargeAttempt> attempts() {
    std::lock_guard<std::mutex> lock(mu_);
    return attempts_;
  }

  // After Stop(): calls (creates or cancels) sent before `t` and answered
  // after it.
  int64_t InFlightAt(absl::Time t) {
    int64_t n = 0;
    for (const ChargeAttempt& a : attempts()) {
      for (const RetriedCall* c : {&a.create, &a.cancel}) {
        n += c->sent() && c->first_sent <= t && c->answered >= t ? 1 : 0;
      }
    }
    return n;
  }

  booking::v1::CreateBookingRequest MakeCreate(const ChargeAttempt& a) const {
    return booking_checks::CreateRequest(
        "instruments/" + options_.instruments[static_cast<size_t>(a.instrument)].id, a.user_id, a.reserved,
        a.create_id);
  }
  booking::v1::CancelBookingRequest MakeCancel(const ChargeAttempt& a) const {
    booking::v1::CancelBookingRequest r;
    r.set_name(a.create.booking.name());
    r.set_reason("plans changed");
    r.set_request_id(a.cancel_id);
    return r;
  }

  // `fn(ctx, server, &booking)` until an answer other than UNAVAILABLE /
  // DEADLINE_EXCEEDED or the retry budget is spent; from `server` on, the
  // next replica on each retry. As `user`.
  template <typename Fn>
  RetriedCall Call(const std::string& user, int server, absl::Duration budget, Fn fn) const {
    RetriedCall c;
    c.server = server;
    c.first_sent = absl::Now();
    const absl::Time give_up = c.first_sent + budget;
    absl::Duration backoff = absl::Milliseconds(20);
    while (true) {
      ++c.tries;
      c.booking.Clear();
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + tokens_.at(user));
      c.last_sent = absl::Now();
      ctx.set_deadline(absl::ToChronoTime(c.last_sent + absl::Seconds(15)));
      const grpc::Status s = fn(&ctx, c.server, &c.booking);
      c.code = s.error_code();
      c.message = s.error_message();
      c.reason = s.ok() ? "" : GrpcErrorReason(s);
      c.answered = absl::Now();
      if (!history_internal::Retryable(c.code) || c.answered >= give_up) return c;
      c.server = (c.server + 1) % cluster_->booking_replicas();
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
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
      ChargeAttempt a;
      a.instrument = uniform(0, static_cast<int>(options_.instruments.size()) - 1);
      a.user_id = options_.users[static_cast<size_t>(uniform(0, static_cast<int>(options_.users.size()) - 1))];
      a.create_id = absl::StrFormat("%s-t%02d-r%05d-create", options_.request_prefix, t, r);
      a.cancel_id = absl::StrFormat("%s-t%02d-r%05d-cancel", options_.request_prefix, t, r);
      // Its own two hours; every third round twice the notice further out.
      const bool on_time = r % 3 == 2;
      a.reserved.start = options_.base + absl::Hours(2 * (t + options_.threads * r)) +
                         (on_time ? 2 * options_.late_notice : absl::ZeroDuration());
      a.reserved.end = a.reserved.start + absl::Minutes(uniform(5, 119));
      const booking::v1::CreateBookingRequest create = MakeCreate(a);
      a.create = Call(a.user_id, uniform(0, replicas - 1), options_.retry_budget,
                      [&](grpc::ClientContext* ctx, int server, booking::v1::Booking* out) {
                        return cluster_->booking(server).CreateBooking(ctx, create, out);
                      });
      if (a.create.ok()) {
        const booking::v1::CancelBookingRequest cancel = MakeCancel(a);
        a.cancel = Call(a.user_id, uniform(0, replicas - 1), options_.retry_budget,
                        [&](grpc::ClientContext* ctx, int server, booking::v1::Booking* out) {
                          return cluster_->booking(server).CancelBooking(ctx, cancel, out);
                        });
        if (a.cancel.ok()) cancelled_.fetch_add(1);
      }
      std::lock_guard<std::mutex> lock(mu_);
      attempts_.push_back(std::move(a));
    }
  }

  BookingTestCluster* cluster_;
  const ChargeLoadOptions options_;
  std::map<std::string, std::string> tokens_;  // user id -> token; read-only after construction
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> cancelled_{0};
  std::mutex mu_;
  std::vector<ChargeAttempt> attempts_;  // guarded by mu_
  bool paused_ = false;                  // guarded by mu_
  std::condition_variable resumed_;
};

// Waits (bounded) until consumer group `group` has read every entry of
// every stream in `streams` and acknowledged all of them (on `data`, the
// node holding the data). A stream that does not exist counts as read.
inline absl::Status WaitConsumerGroupCaughtUp(RedisPool& data, const std::vector<std::string>& streams,
                                              const std::string& group, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::vector<std::string>> commands;
  for (const std::string& s : streams) {
    commands.push_back({"XINFO", "STREAM", s});
    commands.push_back({"XINFO", "GROUPS", s});
  }
  auto field = [](const RedisValue& map, const std::string& name) -> const RedisValue* {
    for (size_t i = 0; i + 1 < map.elements.size(); i += 2) {
      if (map.elements[i].str == name) return &map.elements[i + 1];
    }
    return nullptr;
  };
  while (true) {
    std::string behind;
    auto replies = data.Pipeline(commands);
    if (!replies.ok()) {
      behind = replies.status().ToString();
    } else {
      for (size_t i = 0; i < streams.size() && behind.empty(); ++i) {
        const RedisValue& stream = (*replies)[2 * i];
        const RedisValue& groups = (*replies)[2 * i + 1];
        if (stream.is_error()) continue;  // no such stream
        const RedisValue* last = field(stream, "last-generated-id");
        const RedisValue* length = field(stream, "length");
        const RedisValue* mine = nullptr;
        for (const RedisValue& g : groups.elements) {
          const RedisValue* name = field(g, "name");
          if (name != nullptr && name->str == group) mine = &g;
        }
        if (mine == nullptr) {
          if (length != nullptr && length->integer > 0) behind = absl::StrCat(streams[i], ": no group ", group);
          continue;
        }
        const RedisValue* delivered = field(*mine, "last-delivered-id");
        const RedisValue* pending = field(*mine, "pending");
        if (last == nullptr || delivered == nullptr || delivered->str != last->str) {
          behind = absl::StrCat(streams[i], ": group ", group, " read up to ",
                                delivered == nullptr ? "?" : delivered->str, " of ", last == nullptr ? "?" : last->str);
        } else if (pending == nullptr || pending->integer != 0) {
          behind = absl::StrCat(streams[i], ": ", pending == nullptr ? -1 : pending->integer,
                                " entries of group ", group, " not acknowledged");
        }
      }
    }
    if (behind.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("consumer group ", group, " not caught up within ", absl::FormatDuration(timeout), ": ",
                       behind));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

// What CheckCharges found. Counts of problems are zero for a history with
// nothing lost or doubled; `failures` lists the first few.
struct ChargeReport {
  int64_t bookings = 0;       // attempted
  int64_t cancelled = 0;      // create and cancel acknowledged
  int64_t late = 0;           // of those, late: a fee expected
  int64_t retried = 0;        // calls sent more than once
  int64_t expected_minor = 0;  // sum of the expected fees
  int64_t charged_minor = 0;   // sum of the fees charged
  int64_t unanswered = 0;     // retry budget ran out
  int64_t unexpected = 0;     // a final answer other than OK (state CANCELLED when cancelled)
  int64_t changed = 0;        // GetBooking differs from the cancellation's answer
  int64_t retry_mismatches = 0;
  int64_t missing_charges = 0;  // late cancellation without its charge
  int64_t doubled_charges = 0;  // more than one charge for one booking
  int64_t wrong_charges = 0;    // a charge not as the rate card says
  int64_t foreign_charges = 0;  // charges for on-time cancellations or unknown bookings
  int64_t bad_postings = 0;     // unbalanced, missing or repeated CHARGE postings
  int64_t ledger_mismatches = 0;  // balances that disagree with the charges
  int64_t charge_events_wrong = 0;  // charges without exactly one ChargePosted
  int64_t booking_events_wrong = 0;  // cancelled bookings without exactly one created + one cancelled event
  int64_t read_errors = 0;
  std::vector<std::string> failures;
  // Charge name -> the charge, as listed.
  std::map<std::string, billing::v1::Charge> charges;
  // Charge name -> event_id of its ChargePosted event.
  std::map<std::string, std::string> charge_event_ids;

  bool clean() const {
    return unanswered + unexpected + changed + retry_mismatches + missing_charges + doubled_charges + wrong_charges +
               foreign_charges + bad_postings + ledger_mismatches + charge_events_wrong + booking_events_wrong +
               read_errors ==
           0;
  }
  std::string Summary() const {
    return absl::StrCat(bookings, " bookings made and cancelled: ", cancelled, " cancellations acknowledged (", late,
                        " late, fees ", expected_minor, " expected, ", charged_minor, " charged), ", retried,
                        " calls retried, ", unanswered, " unanswered, ", unexpected, " other answers; changed ",
                        changed, "; retries answered otherwise ", retry_mismatches, "; charges missing ",
                        missing_charges, ", doubled ", doubled_charges, ", wrong ", wrong_charges, ", foreign ",
                        foreign_charges, "; bad postings ", bad_postings, "; ledger mismatches ", ledger_mismatches,
                        "; ChargePosted events wrong ", charge_events_wrong, "; booking events wrong ",
                        booking_events_wrong, "; read errors ", read_errors);
  }
};

// `billing`: a stub of labshare-billing (its consumer group "billing");
// `data`: a plain pool on the node that holds the data (outbox streams and
// consumer groups). Call after the load stopped; `catch_up` bounds the wait
// for billing.
inline ChargeReport CheckCharges(BookingTestCluster& cluster, billing::v1::BillingService::Stub& billing,
                                 RedisPool& data, const ChargeLoad& load,
                                 const std::vector<ChargeAttempt>& attempts, absl::Duration catch_up) {
  namespace bv1 = booking::v1;
  namespace bl = billing::v1;
  using google::protobuf::util::MessageDifferencer;
  constexpr size_t kListed = 20;
  constexpr int kCheckThreads = 8;
  const ChargeLoadOptions& options = load.options();
  const std::string payer = "organizations/" + options.payer_org;
  const std::string owner = "organizations/" + options.owner_org;
  ChargeReport rep;
  std::mutex mu;  // rep, from the checking threads
  auto fail = [&](std::string what) {
    if (rep.failures.size() < kListed) rep.failures.push_back(std::move(what));
  };
  const int replicas = cluster.booking_replicas();
  // A read, retried while the services still recover.
  auto call = [&](auto&& fn) {
    grpc::Status s;
    for (int i = 0; i < 50; ++i) {
      auto ctx = cluster.AdminContext();
      s = fn(ctx.get(), i % replicas);
      if (!history_internal::Retryable(s.error_code())) return s;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return s;
  };

  // ---- The answers, and the fee each acknowledged late cancellation owes.
  std::map<std::string, const ChargeAttempt*> by_booking;  // cancelled ones
  for (const ChargeAttempt& a : attempts) {
    ++rep.bookings;
    rep.retried += (a.create.tries > 1 ? 1 : 0) + (a.cancel.tries > 1 ? 1 : 0);
    for (const RetriedCall* c : {&a.create, &a.cancel}) {
      if (c->sent() && history_internal::Retryable(c->code)) {
        ++rep.unanswered;
        fail("no answer within the retry budget: " + a.Describe());
      }
    }
    const bool create_odd = !a.create.ok() && !history_internal::Retryable(a.create.code);
    const bool cancel_odd = a.cancel.sent() && !history_internal::Retryable(a.cancel.code) &&
                            (!a.cancel.ok() || a.cancel.booking.state() != bv1::Booking::CANCELLED);
    if (create_odd || cancel_odd) {
      ++rep.unexpected;
      fail("unexpected answer: " + a.Describe());
    }
    if (!a.cancelled()) continue;
    ++rep.cancelled;
    by_booking[a.create.booking.name()] = &a;
    if (a.late()) {
      ++rep.late;
      rep.expected_minor += ExpectedLateFee(options.instruments[static_cast<size_t>(a.instrument)],
                                            a.reserved.end - a.reserved.start);
    }
  }

  // ---- Every acknowledged cancellation is there, as answered.
  std::vector<const ChargeAttempt*> cancelled;
  for (const auto& [name, a] : by_booking) cancelled.push_back(a);
  history_internal::ParallelFor(cancelled.size(), kCheckThreads, [&](size_t i) {
    const ChargeAttempt* a = cancelled[i];
    bv1::GetBookingRequest r;
    r.set_name(a->create.booking.name());
    bv1::Booking got;
    const grpc::Status s = call([&](grpc::ClientContext* ctx, int server) {
      got.Clear();
      return cluster.booking(server).GetBooking(ctx, r, &got);
    });
    std::string diff;
    MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    const bool same = s.ok() && d.Compare(a->cancel.booking, got);
    std::lock_guard<std::mutex> lock(mu);
    if (!s.ok() && s.error_code() != grpc::NOT_FOUND) {
      ++rep.read_errors;
      fail(absl::StrCat("GetBooking(", r.name(), "): ", booking_checks::CodeName(s.error_code()), " ",
                        s.error_message()));
    } else if (!same) {
      ++rep.changed;
      fail(absl::StrCat("not as its cancellation was answered (", s.ok() ? diff : "NOT_FOUND", "): ",
                        a->Describe()));
    }
  });

  // ---- Every call again with its request_id, as its user: the same answer.
  history_internal::ParallelFor(attempts.size(), kCheckThreads, [&](size_t i) {
    const ChargeAttempt& a = attempts[i];
    auto same_as = [&](const RetriedCall& first, const RetriedCall& again, const char* what) {
      bool same = again.code == first.code && again.reason == first.reason;
      if (same && first.ok()) same = MessageDifferencer::Equals(first.booking, again.booking);
      if (same) return;
      std::lock_guard<std::mutex> lock(mu);
      ++rep.retry_mismatches;
      fail(absl::StrCat(what, " sent again answered ", again.Describe(), "; first ", a.Describe()));
    };
    const int first = static_cast<int>(i % static_cast<size_t>(replicas));
    if (a.create.sent() && !history_internal::Retryable(a.create.code)) {
      const bv1::CreateBookingRequest create = load.MakeCreate(a);
      same_as(a.create,
              load.Call(a.user_id, first, absl::Seconds(30),
                        [&](grpc::ClientContext* ctx, int server, bv1::Booking* out) {
                          return cluster.booking(server).CreateBooking(ctx, create, out);
                        }),
              "CreateBooking");
    }
    if (a.cancel.sent() && !history_internal::Retryable(a.cancel.code)) {
      const bv1::CancelBookingRequest cancel = load.MakeCancel(a);
      same_as(a.cancel,
              load.Call(a.user_id, first, absl::Seconds(30),
                        [&](grpc::ClientContext* ctx, int server, bv1::Booking* out) {
                          return cluster.booking(server).CancelBooking(ctx, cancel, out);
                        }),
              "CancelBooking");
    }
  });

  // ---- The booking events: one created and one cancelled per cancelled
  // booking, the cancellation late as answered; nothing else of the load.
  {
    std::set<std::string> instruments;
    for (const ChargeInstrument& in : options.instruments) instruments.insert("instruments/" + in.id);
    std::map<std::string, std::map<std::string, int>> kinds;  // booking -> kind -> events
    std::map<std::string, bool> late_event;                    // booking -> booking_cancelled.late_cancellation
    auto events = booking_checks::ReadOutbox(data);
    if (!events.ok()) {
      ++rep.read_errors;
      fail("booking outboxes: " + events.status().ToString());
    } else {
      for (const booking_checks::OutboxEvent& e : *events) {
        const auto [name, kind] = booking_checks::EventBooking(e.event);
        const bv1::Booking& b = kind == "created"     ? e.event.booking_created().booking()
                                : kind == "cancelled" ? e.event.booking_cancelled().booking()
                                                      : e.event.booking_confirmed().booking();
        if (instruments.count(b.instrument()) == 0) continue;
        ++kinds[name][kind];
        if (kind == "cancelled") late_event[name] = e.event.booking_cancelled().late_cancellation();
      }
      for (const auto& [name, a] : by_booking) {
        const std::map<std::string, int> want = {{"created", 1}, {"cancelled", 1}};
        if (kinds[name] != want || late_event[name] != a->late()) {
          ++rep.booking_events_wrong;
          std::string seen;
          for (const auto& [kind, n] : kinds[name]) absl::StrAppend(&seen, n, " ", kind, ", ");
          fail(absl::StrCat("events ", seen, "late ", late_event[name], " for ", a->Describe()));
        }
      }
      for (const auto& [name, k] : kinds) {
        if (by_booking.count(name) == 0) {
          ++rep.booking_events_wrong;
          fail(absl::StrCat("events for ", name, " on the charge load's instruments, which no cancellation was "
                            "answered for"));
        }
      }
    }
  }

  // ---- Billing has read and acknowledged every booking event.
  {
    std::vector<std::string> streams;
    for (int p = 0; p < booking_checks::kOutboxPartitions; ++p) streams.push_back(booking_checks::OutboxKey(p));
    const absl::Status caught_up = WaitConsumerGroupCaughtUp(data, streams, "billing", catch_up);
    if (!caught_up.ok()) {
      ++rep.read_errors;
      fail(caught_up.ToString());
    }
  }

  // ---- The charges: one per late cancellation, of its amount, nothing else.
  std::map<std::string, std::vector<const bl::Charge*>> charges_of;  // booking -> charges
  {
    std::string token;
    for (int page = 0; page < 1000; ++page) {
      bl::ListChargesRequest r;
      r.set_payer_organization(payer);
      r.set_page_size(500);
      r.set_page_token(token);
      bl::ListChargesResponse resp;
      const grpc::Status s = call([&](grpc::ClientContext* ctx, int) {
        resp.Clear();
        return billing.ListCharges(ctx, r, &resp);
      });
      if (!s.ok()) {
        ++rep.read_errors;
        fail(absl::StrCat("ListCharges: ", booking_checks::CodeName(s.error_code()), " ", s.error_message()));
        break;
      }
      for (const bl::Charge& c : resp.charges()) {
        if (!rep.charges.emplace(c.name(), c).second) {
          ++rep.doubled_charges;
          fail("ListCharges lists " + c.name() + " twice");
        }
      }
      token = resp.next_page_token();
      if (token.empty()) break;
    }
  }
  for (const auto& [name, c] : rep.charges) {
    charges_of[c.booking()].push_back(&c);
    rep.charged_minor += c.amount().amount_minor();
  }
  for (const auto& [booking, a] : by_booking) {
    const auto it = charges_of.find(booking);
    const size_t n = it == charges_of.end() ? 0 : it->second.size();
    const size_t want = a->late() ? 1 : 0;
    if (n < want) {
      ++rep.missing_charges;
      fail("late cancellation without a charge: " + a->Describe());
    } else if (n > want) {
      ++(want == 0 ? rep.foreign_charges : rep.doubled_charges);
      fail(absl::StrCat(n, " charges (", want, " expected), e.g. ", DescribeCharge(*it->second[0]), ", for ",
                        a->Describe()));
    }
    if (n == 0 || want == 0) continue;
    const bl::Charge& c = *it->second[0];
    const ChargeInstrument& in = options.instruments[static_cast<size_t>(a->instrument)];
    const int64_t fee = ExpectedLateFee(in, a->reserved.end - a->reserved.start);
    if (c.fee_kind() != bl::LATE_CANCELLATION_FEE || c.state() != bl::Charge::POSTED ||
        c.amount().currency_code() != "CNY" || c.amount().amount_minor() != fee ||
        c.payable_amount().amount_minor() != fee || c.fee_bps() != in.late_fee_bps ||
        c.instrument() != "instruments/" + in.id || c.payer_organization() != payer ||
        c.owner_organization() != owner || c.user() != "users/" + a->user_id || c.posting().empty()) {
      ++rep.wrong_charges;
      fail(absl::StrCat("expected LATE_CANCELLATION_FEE of ", fee, " CNY (", in.hourly_minor, "/h, ", in.late_fee_bps,
                        " bps, ", history_internal::Fmt(a->reserved), ") payable in full, posted; charged ",
                        DescribeCharge(c)));
    }
  }
  for (const auto& [booking, cs] : charges_of) {
    if (by_booking.count(booking) == 0) {
      rep.foreign_charges += static_cast<int64_t>(cs.size());
      fail(absl::StrCat(cs.size(), " charges for ", booking, ", which no cancellation was answered for: ",
                        DescribeCharge(*cs[0])));
    }
  }

  // ---- The ledger: one balanced CHARGE posting per charge.
  {
    std::map<std::string, int> postings_of;  // charge -> postings
    std::string token;
    for (int page = 0; page < 1000; ++page) {
      bl::ListPostingsRequest r;
      r.set_organization(payer);
      r.set_page_size(500);
      r.set_page_token(token);
      bl::ListPostingsResponse resp;
      const grpc::Status s = call([&](grpc::ClientContext* ctx, int) {
        resp.Clear();
        return billing.ListPostings(ctx, r, &resp);
      });
      if (!s.ok()) {
        ++rep.read_errors;
        fail(absl::StrCat("ListPostings: ", booking_checks::CodeName(s.error_code()), " ", s.error_message()));
        break;
      }
      for (const bl::Posting& p : resp.postings()) {
        int64_t debit = 0, credit = 0;
        for (const bl::Entry& e : p.entries()) {
          debit += e.debit().amount_minor();
          credit += e.credit().amount_minor();
        }
        const auto charge = rep.charges.find(p.charge());
        if (p.kind() != bl::CHARGE || debit != credit || debit == 0 || charge == rep.charges.end() ||
            charge->second.posting() != p.name() || debit != 2 * charge->second.amount().amount_minor()) {
          ++rep.bad_postings;
          fail("posting not a balanced CHARGE of a listed charge: " + p.ShortDebugString());
        }
        ++postings_of[p.charge()];
      }
      token = resp.next_page_token();
      if (token.empty()) break;
    }
    for (const auto& [name, c] : rep.charges) {
      if (postings_of[name] != 1) {
        ++rep.bad_postings;
        fail(absl::StrCat(name, " has ", postings_of[name], " postings"));
      }
    }
  }

  // ---- Balances over every organisation: debits equal credits; the four
  // accounts the fees touch hold exactly their sum, all others nothing.
  {
    int64_t debit = 0, credit = 0;
    std::map<std::pair<std::string, bl::AccountKind>, int64_t> balance;
    std::string token;
    bool complete = false;
    for (int page = 0; page < 1000; ++page) {
      bl::ListBalancesRequest r;
      r.set_parent("organizations/-");
      r.set_currency_code("CNY");
      r.set_skip_empty(true);
      r.set_page_size(500);
      r.set_page_token(token);
      bl::ListBalancesResponse resp;
      const grpc::Status s = call([&](grpc::ClientContext* ctx, int) {
        resp.Clear();
        return billing.ListBalances(ctx, r, &resp);
      });
      if (!s.ok()) {
        ++rep.read_errors;
        fail(absl::StrCat("ListBalances: ", booking_checks::CodeName(s.error_code()), " ", s.error_message()));
        break;
      }
      for (const bl::AccountBalance& b : resp.balances()) {
        debit += b.debit_total().amount_minor();
        credit += b.credit_total().amount_minor();
        balance[{b.owner(), b.kind()}] += b.balance().amount_minor();
      }
      token = resp.next_page_token();
      if (token.empty()) {
        complete = true;
        break;
      }
    }
    if (complete) {
      if (debit != credit) {
        ++rep.ledger_mismatches;
        fail(absl::StrCat("ledger: debit totals ", debit, " != credit totals ", credit));
      }
      const std::map<std::pair<std::string, bl::AccountKind>, int64_t> want = {
          {{payer, bl::EXPENSE}, rep.expected_minor},
          {{payer, bl::PAYABLE}, rep.expected_minor},
          {{owner, bl::RECEIVABLE}, rep.expected_minor},
          {{owner, bl::INCOME}, rep.expected_minor}};
      auto all = balance;
      for (const auto& [key, amount] : want) all.emplace(key, 0);
      for (const auto& [key, amount] : all) {
        const auto w = want.find(key);
        const int64_t expected = w == want.end() ? 0 : w->second;
        if (amount != expected) {
          ++rep.ledger_mismatches;
          fail(absl::StrCat("balance of ", key.first, " ", bl::AccountKind_Name(key.second), ": ", amount,
                            " CNY minor, expected ", expected));
        }
      }
    }
  }

  // ---- One ChargePosted per charge on billing's outbox.
  {
    auto entries = data.Command({"XRANGE", "{billing}:outbox", "-", "+"});
    if (!entries.ok() || !entries->is_array()) {
      ++rep.read_errors;
      fail("XRANGE {billing}:outbox: " + (entries.ok() ? entries->DebugString() : entries.status().ToString()));
    } else {
      std::map<std::string, int> posted;
      for (const RedisValue& entry : entries->elements) {
        if (entry.elements.size() != 2) continue;
        bl::BillingEvent e;
        const auto& fields = entry.elements[1].elements;
        for (size_t f = 0; f + 1 < fields.size(); f += 2) {
          if (fields[f].str == "payload") e.ParseFromString(fields[f + 1].str);
        }
        if (!e.has_charge_posted()) continue;
        const std::string& name = e.charge_posted().charge().name();
        ++posted[name];
        rep.charge_event_ids[name] = e.header().event_id();
      }
      for (const auto& [name, c] : rep.charges) {
        if (posted[name] != 1) {
          ++rep.charge_events_wrong;
          fail(absl::StrCat(name, ": ", posted[name], " ChargePosted events"));
        }
      }
      for (const auto& [name, n] : posted) {
        if (rep.charges.count(name) == 0) {
          ++rep.charge_events_wrong;
          fail(absl::StrCat(n, " ChargePosted events for ", name, ", which ListCharges does not list"));
        }
      }
    }
  }
  return rep;
}

// The assertions over a charge history that must have lost and doubled
// nothing: every finding listed, at least `min_late` late cancellations and
// some on time, and every count of ChargeReport zero.
inline void ExpectChargesExact(const ChargeReport& rep, int64_t min_late) {
  for (const std::string& f : rep.failures) ADD_FAILURE() << f;
  EXPECT_GE(rep.late, min_late);
  EXPECT_GT(rep.cancelled, rep.late) << "no cancellation was on time";
  EXPECT_EQ(static_cast<int64_t>(rep.charges.size()), rep.late);
  EXPECT_EQ(rep.charged_minor, rep.expected_minor);
  EXPECT_EQ(rep.unanswered, 0);
  EXPECT_EQ(rep.unexpected, 0);
  EXPECT_EQ(rep.changed, 0);
  EXPECT_EQ(rep.retry_mismatches, 0);
  EXPECT_EQ(rep.missing_charges, 0);
  EXPECT_EQ(rep.doubled_charges, 0);
  EXPECT_EQ(rep.wrong_charges, 0);
  EXPECT_EQ(rep.foreign_charges, 0);
  EXPECT_EQ(rep.bad_postings, 0);
  EXPECT_EQ(rep.ledger_mismatches, 0);
  EXPECT_EQ(rep.charge_events_wrong, 0);
  EXPECT_EQ(rep.booking_events_wrong, 0);
  EXPECT_EQ(rep.read_errors, 0);
}

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_CHARGE_HISTORY_H_
