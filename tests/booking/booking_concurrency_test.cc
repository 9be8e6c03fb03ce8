// The booking calendar under concurrency, black box: a real redis-server,
// one labshare-inventory and two labshare-booking replicas as separate
// processes (tests/booking/booking_test_cluster.h), driven over gRPC by many
// client threads. Checks the calendar invariant (blocked intervals of one
// instrument never overlap, half-open), that only the two expected answers
// occur, that every accepted booking published exactly its two events and a
// rejected request wrote nothing, that a sequential random history gets the
// same decisions as a reference model, and that concurrent retries of one
// request_id make one booking.
//
// Inputs are pseudo-random with fixed seeds (printed); only the interleaving
// of concurrent calls varies between runs.
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iostream>
#include <map>
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
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "tests/booking/booking_history_checks.h"
#include "tests/booking/booking_test_cluster.h"

namespace labshare::booking {
namespace {

namespace bv1 = labshare::booking::v1;
using testing::BookingTestCluster;

using namespace testing::booking_checks;  // NOLINT(build/namespaces): Interval, Fmt, FindOverlap, ...
using testing::booking_checks::OutboxEvent;  // not labshare::OutboxEvent (common/doc_store.h)

constexpr char kOrg[] = "org-a";
constexpr char kFacility[] = "fac-a";

// One CreateBooking as sent and as answered.
struct Attempt {
  int server = 0;
  int instrument = 0;  // index into the test's instruments
  std::string user_id;
  std::string request_id;
  Interval reserved;
  grpc::StatusCode code = grpc::OK;
  std::string reason;
  std::string message;
  bv1::Booking booking;  // when OK

  bool ok() const { return code == grpc::OK; }
  bool slot_taken() const { return code == grpc::FAILED_PRECONDITION && reason == "SLOT_TAKEN"; }
  std::string Describe() const {
    std::string answer = ok() ? absl::StrCat("OK ", booking.name(), " state ",
                                             bv1::Booking::State_Name(booking.state()), " blocked ",
                                             Fmt(BlockedOf(booking)))
                              : absl::StrCat(CodeName(code), " reason '", reason, "' message '",
                                             message, "'");
    return absl::StrCat("CreateBooking{request_id ", request_id, ", instrument #", instrument,
                        ", users/", user_id, ", reserved ", Fmt(reserved), "} via booking-",
                        server, " -> ", answer);
  }
};

class BookingConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = BookingTestCluster::Start(/*booking_replicas=*/2);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    // Midnight UTC one to two days ahead: whole minutes, always in the future.
    base_ = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 86400 + 2) * 86400);
  }

  void TearDown() override {
    if (cluster_ == nullptr) return;
    for (const std::string& dead : cluster_->DeadChildren()) {
      ADD_FAILURE() << "a child process ended during the test: " << dead;
    }
    if (HasFailure()) std::cerr << cluster_->DumpLogs(/*tail_bytes=*/12000);
    for (const std::string& line : cluster_->Stop()) std::cout << "teardown: " << line << "\n";
    cluster_.reset();
  }

  // One MEMBER organisation with a facility, instruments "<prefix>-<i>" with
  // the given buffers, and lab users "user-0".. "user-<users-1>". All of it
  // before the first booking: the booking service caches inventory reads.
  void SeedInventory(const std::string& prefix, const std::vector<absl::Duration>& buffers, int users) {
    instruments_.clear();
    for (size_t i = 0; i < buffers.size(); ++i) instruments_.push_back(absl::StrCat(prefix, "-", i));
    buffers_ = buffers;
    const absl::Status s = testing::booking_checks::SeedInventory(*cluster_, kOrg, kFacility, instruments_, buffers, users);
    ASSERT_TRUE(s.ok()) << s;
  }

  std::string InstrumentName(int i) const { return "instruments/" + instruments_[static_cast<size_t>(i)]; }
  absl::Duration Buffer(int i) const { return buffers_[static_cast<size_t>(i)]; }

  bv1::CreateBookingRequest MakeCreate(const Attempt& a) const {
    return CreateRequest(InstrumentName(a.instrument), a.user_id, a.reserved, a.request_id);
  }

  // Sends a.* and fills in the answer. Thread-safe.
  void Send(Attempt* a) const {
    bv1::CreateBookingRequest r = MakeCreate(*a);
    auto ctx = cluster_->AdminContext();
    grpc::Status s = cluster_->booking(a->server).CreateBooking(ctx.get(), r, &a->booking);
    a->code = s.error_code();
    a->message = s.error_message();
    a->reason = s.ok() ? "" : GrpcErrorReason(s);
  }

  // Every booking of an instrument in the given states (all when empty),
  // over all pages, from one replica.
  absl::StatusOr<std::vector<bv1::Booking>> ListAll(int server, int instrument,
                                                    const std::vector<bv1::Booking::State>& states) const {
    // Many pages, none aligned with anything.
    return testing::booking_checks::ListAll(*cluster_, server, InstrumentName(instrument), states, /*page_size=*/37);
  }

  // Keys other than the listing indexes ({bk:P}:ls:..., one per user and
  // partition among others, so their count is no constant per booking);
  // those are checked by their entries (ListedBookings). Nor the keys that
  // background threads write whenever they run, which may be during the
  // test: the start-up migrations' markers ({booking}:migrated:...) and
  // the sweep's cursors ({bk:P}:sweep:cursor) of each replica's sweeper,
  // and the instrument changes ({bk:P}:ichanges:<instr>) of its inventory
  // events consumer.
  static bool Counted(const std::string& key) {
    for (const char* background : {"}:ls:", "{booking}:migrated:", "}:sweep:cursor", "}:ichanges:"}) {
      if (key.find(background) != std::string::npos) return false;
    }
    return true;
  }
  long long DbSize() const {
    long long n = 0;
    for (const auto& k : AllKeys()) n += Counted(k) ? 1 : 0;
    return n;
  }
  // The counted keys of `now` that `before` lacks and that name none of
  // `accepted`'s bookings: what a mismatch of the DBSIZE arithmetic is made of.
  template <typename A>
  static std::string Unexplained(const std::vector<std::string>& before, const std::vector<std::string>& now,
                                 const std::vector<A>& accepted) {
    const std::set<std::string> had(before.begin(), before.end());
    std::string out;
    int shown = 0;
    for (const auto& k : now) {
      if (!Counted(k) || had.count(k) > 0) continue;
      bool names_booking = false;
      for (const A& a : accepted) {
        const std::string& name = a.booking.name();
        const std::string id = name.substr(name.rfind('/') + 1);
        if ((!id.empty() && k.find(id) != std::string::npos) ||
            (!a.request_id.empty() && absl::EndsWith(k, ":" + a.request_id))) {
          names_booking = true;  // its document, or its request's claim
          break;
        }
      }
      if (names_booking) continue;
      if (++shown > 40) { out += " ..."; break; }
      absl::StrAppend(&out, " ", k);
    }
    return out.empty() ? " (none)" : out;
  }
  long long ListedBookings() const { return testing::booking_checks::ListedBookings(cluster_->redis()); }
  std::vector<std::string> AllKeys() const { return testing::booking_checks::AllKeys(cluster_->redis()); }
  absl::StatusOr<std::vector<OutboxEvent>> ReadOutbox() const { return testing::booking_checks::ReadOutbox(cluster_->redis()); }

  std::unique_ptr<BookingTestCluster> cluster_;
  absl::Time base_;
  std::vector<std::string> instruments_;
  std::vector<absl::Duration> buffers_;
};

// Lets all threads start their calls at once.
class StartGate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// ============================================================================

TEST_F(BookingConcurrencyTest, ConcurrentBookingsNeverOverlap) {
  constexpr int kInstruments = 4;
  constexpr int kUsers = 8;
  constexpr int kThreads = 32;
  constexpr int kRequestsPerThread = 100;
  constexpr uint64_t kSeed = 20240611;
  std::cout << "seed " << kSeed << ", " << kThreads << " threads x " << kRequestsPerThread
            << " CreateBooking, 2 replicas\n";
  SeedInventory("conc", {absl::Minutes(10), absl::ZeroDuration(), absl::Minutes(10), absl::ZeroDuration()},
                kUsers);
  if (HasFatalFailure()) return;

  // ---- Warm-up, sequential, outside the random window (base+3d onwards):
  // how many Redis keys does a booking add on a fresh instrument, and on an
  // instrument and user already used?
  std::vector<Attempt> accepted;  // warm-up and concurrent, all OK answers
  int warm = 0;
  auto warm_book = [&](int instrument, int user) -> long long {
    Attempt a;
    a.server = warm % 2;
    a.instrument = instrument;
    a.user_id = absl::StrCat("user-", user);
    a.request_id = absl::StrFormat("warm-%02d", warm);
    a.reserved.start = base_ + absl::Hours(72) + absl::Hours(4) * warm;
    a.reserved.end = a.reserved.start + absl::Minutes(60);
    ++warm;
    const long long before = DbSize();
    Send(&a);
    const long long after = DbSize();
    EXPECT_TRUE(a.ok() && a.booking.state() == bv1::Booking::CONFIRMED) << a.Describe();
    if (a.ok()) accepted.push_back(a);
    return after - before;
  };
  const std::vector<std::string> keys_start = AllKeys();
  const long long dbsize_start = DbSize();
  std::vector<long long> fresh_instrument(kInstruments);
  for (int i = 0; i < kInstruments; ++i) fresh_instrument[static_cast<size_t>(i)] = warm_book(i, i);
  for (int u = kInstruments; u < kUsers; ++u) warm_book(u % kInstruments, u);  // every user used once
  const long long k1 = warm_book(0, 0);
  const long long k2 = warm_book(1, 5);
  const long long k3 = warm_book(3, 7);
  ASSERT_FALSE(HasFailure()) << "warm-up bookings failed; the service does not book at all";
  const bool per_booking_known = k1 == k2 && k2 == k3;
  const long long per_booking_keys = k1;
  std::cout << "warm-up: keys added by a first booking per instrument:";
  for (long long n : fresh_instrument) std::cout << " " << n;
  std::cout << "; by a booking on a used instrument: " << k1 << " " << k2 << " " << k3
            << (per_booking_known ? "" : " (not constant: DBSIZE arithmetic skipped)") << "\n";

  // ---- The concurrent phase.
  const long long dbsize_before = DbSize();
  std::vector<std::vector<Attempt>> per_thread(kThreads);
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(kSeed + static_cast<uint64_t>(t));
      std::uniform_int_distribution<int> instrument(0, kInstruments - 1);
      std::uniform_int_distribution<int> user(0, kUsers - 1);
      std::uniform_int_distribution<int> start_step(0, 2 * 24 * 12 - 1);  // 5-min steps in 2 days
      std::uniform_int_distribution<int> length_steps(1, 36);             // 5..180 min
      auto& mine = per_thread[static_cast<size_t>(t)];
      mine.resize(kRequestsPerThread);
      for (int i = 0; i < kRequestsPerThread; ++i) {
        Attempt& a = mine[static_cast<size_t>(i)];
        a.server = t % 2;
        a.instrument = instrument(rng);
        a.user_id = absl::StrCat("user-", user(rng));
        a.request_id = absl::StrFormat("conc-t%02d-r%03d", t, i);
        a.reserved.start = base_ + absl::Minutes(5) * start_step(rng);
        a.reserved.end = a.reserved.start + absl::Minutes(5) * length_steps(rng);
      }
      gate.Wait();
      for (Attempt& a : mine) Send(&a);
    });
  }
  const absl::Time t0 = absl::Now();
  gate.Open();
  for (auto& th : threads) th.join();
  const absl::Duration took = absl::Now() - t0;

  std::vector<Attempt> attempts;
  for (auto& v : per_thread) attempts.insert(attempts.end(), v.begin(), v.end());
  ASSERT_GE(attempts.size(), 3000u);

  // ---- (b) Only two answers are possible; accepted ones are what was asked.
  const auto instrument_name = [this](int i) { return InstrumentName(i); };
  const auto buffer = [this](int i) { return Buffer(i); };
  Answers<Attempt> answers;
  answers.accepted = std::move(accepted);
  ClassifyAnswers<Attempt>(attempts, instrument_name, buffer, &answers);
  accepted = std::move(answers.accepted);
  const std::vector<Attempt>& rejected = answers.rejected;
  const int concurrent_accepted = static_cast<int>(accepted.size()) - (warm);
  std::cout << attempts.size() << " requests in " << absl::FormatDuration(took) << ": "
            << concurrent_accepted << " accepted, " << rejected.size() << " SLOT_TAKEN, " << answers.unexpected
            << " other\n";
  EXPECT_GT(concurrent_accepted, 0);
  EXPECT_GT(rejected.size(), 0u);

  // ---- (a) Per instrument: accepted blocked intervals are pairwise
  // disjoint, and ListBookings(CONFIRMED) on each replica is exactly them.
  std::map<std::string, const Attempt*> by_name;
  const auto by_instrument = BlockedByInstrument(accepted, kInstruments, &by_name);
  for (int i = 0; i < kInstruments; ++i) {
    const auto& mine = by_instrument[static_cast<size_t>(i)];
    EXPECT_EQ(FindOverlap(mine), "") << "accepted bookings overlap on " << InstrumentName(i);
    for (int server = 0; server < cluster_->booking_replicas(); ++server) {
      auto listed = ListAll(server, i, {bv1::Booking::CONFIRMED});
      ASSERT_TRUE(listed.ok()) << listed.status();
      CheckListing(*listed, mine, by_name, InstrumentName(i), server);
    }
  }

  // Every rejection had a reason.
  CheckRejectionsJustified(rejected, by_instrument, buffer);

  // ---- (c) Events: one booking_created, in state CONFIRMED, per accepted
  // booking, nothing else; each instrument on one partition.
  auto events = ReadOutbox();
  ASSERT_TRUE(events.ok()) << events.status();
  CheckEvents(*events, accepted, by_name);

  // ---- (d) Rejected requests wrote nothing: the key count grew by the
  // accepted bookings only, and no key names a rejected request_id.
  const long long dbsize_after = DbSize();
  if (per_booking_known) {
    EXPECT_EQ(dbsize_after, dbsize_before + concurrent_accepted * per_booking_keys)
        << "DBSIZE " << dbsize_before << " -> " << dbsize_after << " for " << concurrent_accepted
        << " accepted bookings of " << per_booking_keys << " keys each";
    long long per_instrument_constants = 0;
    for (long long n : fresh_instrument) per_instrument_constants += n - per_booking_keys;
    EXPECT_EQ(dbsize_after, dbsize_start + static_cast<long long>(accepted.size()) * per_booking_keys +
                                per_instrument_constants)
        << "DBSIZE from before the warm-up: " << dbsize_start << " + " << accepted.size() << " x "
        << per_booking_keys << " + " << per_instrument_constants
        << " per-instrument keys; new keys naming no booking:" << Unexplained(keys_start, AllKeys(), accepted);
  }
  EXPECT_EQ(ListedBookings(), static_cast<long long>(accepted.size())) << "listing index entries vs accepted bookings";
  // Request ids are "conc-tNN-rNNN", all 13 characters.
  CheckNoKeysOfRejected(AllKeys(), rejected, "conc-t", 13);
}

// ============================================================================

TEST_F(BookingConcurrencyTest, SameRandomHistoryMatchesReferenceModel) {
  constexpr int kInstruments = 3;
  constexpr int kUsers = 4;
  constexpr int kSteps = 1500;
  constexpr uint64_t kSeed = 7130521;
  std::cout << "seed " << kSeed << ", " << kSteps << " steps, alternating replicas\n";
  SeedInventory("hist", {absl::Minutes(10), absl::Minutes(15), absl::Minutes(30)}, kUsers);
  if (HasFatalFailure()) return;

  struct Held {
    std::string name;
    Interval blocked;
  };
  std::vector<std::vector<Held>> model(kInstruments);  // accepted, not cancelled
  std::vector<std::set<std::string>> cancelled(kInstruments);
  std::mt19937_64 rng(kSeed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int creates = 0, accepts = 0, cancels = 0;

  for (int step = 0; step < kSteps; ++step) {
    const int server = step % 2;
    size_t held_total = 0;
    for (const auto& h : model) held_total += h.size();

    if (held_total > 0 && uniform(0, 9) == 0) {
      // Cancel a random held booking; the model frees its interval.
      size_t pick = static_cast<size_t>(uniform(0, static_cast<int>(held_total) - 1));
      int inst = 0;
      while (pick >= model[static_cast<size_t>(inst)].size()) pick -= model[static_cast<size_t>(inst++)].size();
      auto& held = model[static_cast<size_t>(inst)];
      const Held victim = held[pick];
      bv1::CancelBookingRequest r;
      r.set_name(victim.name);
      r.set_reason(absl::StrCat("history step ", step));
      r.set_request_id(absl::StrFormat("hist-s%04d", step));
      bv1::Booking out;
      auto ctx = cluster_->AdminContext();
      grpc::Status s = cluster_->booking(server).CancelBooking(ctx.get(), r, &out);
      ASSERT_TRUE(s.ok()) << "step " << step << ": CancelBooking(" << victim.name << ") via booking-" << server
                          << ": model says OK, service says " << CodeName(s.error_code()) << " "
                          << GrpcErrorReason(s) << " " << s.error_message();
      ASSERT_EQ(out.name(), victim.name) << "step " << step;
      ASSERT_EQ(out.state(), bv1::Booking::CANCELLED) << "step " << step << ": " << out.ShortDebugString();
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(pick));
      cancelled[static_cast<size_t>(inst)].insert(victim.name);
      ++cancels;
      continue;
    }

    Attempt a;
    a.server = server;
    a.instrument = uniform(0, kInstruments - 1);
    a.user_id = absl::StrCat("user-", uniform(0, kUsers - 1));
    a.request_id = absl::StrFormat("hist-s%04d", step);
    const absl::Duration length = absl::Minutes(5) * uniform(1, 36);
    const absl::Duration buffer = Buffer(a.instrument);
    const auto& held = model[static_cast<size_t>(a.instrument)];
    // Mostly uniform starts; a third aimed at the edges of a held booking,
    // where half-open arithmetic and the buffer decide.
    if (!held.empty() && uniform(0, 2) == 0) {
      const Held& h = held[static_cast<size_t>(uniform(0, static_cast<int>(held.size()) - 1))];
      switch (uniform(0, 3)) {
        case 0: a.reserved.start = h.blocked.end; break;                          // touches after
        case 1: a.reserved.start = h.blocked.end - absl::Minutes(5); break;       // 5 min into it
        case 2: a.reserved.start = h.blocked.start - length - buffer; break;       // touches before
        default: a.reserved.start = h.blocked.start - length - buffer + absl::Minutes(5); break;
      }
      if (a.reserved.start <= base_) a.reserved.start = h.blocked.end;
    } else {
      a.reserved.start = base_ + absl::Minutes(5) * uniform(0, 2 * 24 * 12 - 1);
    }
    a.reserved.end = a.reserved.start + length;
    const Interval want{a.reserved.start, a.reserved.end + buffer};
    std::string clash;
    for (const Held& h : held) {
      if (Overlaps(h.blocked, want)) {
        clash = absl::StrCat(h.name, " ", Fmt(h.blocked));
        break;
      }
    }
    Send(&a);
    ++creates;
    if (clash.empty()) {
      ASSERT_TRUE(a.ok()) << "step " << step << ": model accepts (blocked " << Fmt(want)
                          << " is free), service: " << a.Describe();
      ASSERT_EQ(a.booking.state(), bv1::Booking::CONFIRMED) << "step " << step << ": " << a.Describe();
      ASSERT_EQ(BlockedOf(a.booking).start, want.start) << "step " << step << ": " << a.Describe();
      ASSERT_EQ(BlockedOf(a.booking).end, want.end) << "step " << step << ": " << a.Describe();
      model[static_cast<size_t>(a.instrument)].push_back({a.booking.name(), BlockedOf(a.booking)});
      ++accepts;
    } else {
      ASSERT_TRUE(a.slot_taken()) << "step " << step << ": model rejects (blocked " << Fmt(want)
                                  << " overlaps " << clash << "), service: " << a.Describe();
    }
  }
  std::cout << creates << " CreateBooking (" << accepts << " accepted, " << creates - accepts
            << " SLOT_TAKEN), " << cancels << " CancelBooking\n";
  EXPECT_GT(accepts, 0);
  EXPECT_GT(creates - accepts, 0);
  EXPECT_GT(cancels, 0);

  // The service's calendars end where the model's do.
  for (int i = 0; i < kInstruments; ++i) {
    std::set<std::string> want_confirmed, got_confirmed, got_cancelled;
    for (const Held& h : model[static_cast<size_t>(i)]) want_confirmed.insert(h.name);
    auto confirmed = ListAll(i % 2, i, {bv1::Booking::CONFIRMED});
    ASSERT_TRUE(confirmed.ok()) << confirmed.status();
    for (const auto& b : *confirmed) got_confirmed.insert(b.name());
    EXPECT_EQ(got_confirmed, want_confirmed) << "CONFIRMED bookings of " << InstrumentName(i);
    auto gone = ListAll((i + 1) % 2, i, {bv1::Booking::CANCELLED});
    ASSERT_TRUE(gone.ok()) << gone.status();
    for (const auto& b : *gone) got_cancelled.insert(b.name());
    EXPECT_EQ(got_cancelled, cancelled[static_cast<size_t>(i)]) << "CANCELLED bookings of " << InstrumentName(i);
  }
  auto events = ReadOutbox();
  ASSERT_TRUE(events.ok()) << events.status();
  std::map<std::string, int> by_kind;
  for (const OutboxEvent& e : *events) ++by_kind[EventBooking(e.event).second];
  EXPECT_EQ(by_kind["created"], accepts);
  EXPECT_EQ(by_kind["confirmed"], 0);  // created CONFIRMED: BookingCreated says so
  EXPECT_EQ(by_kind["cancelled"], cancels);
  EXPECT_EQ(events->size(), static_cast<size_t>(accepts + cancels));
}

// ============================================================================

TEST_F(BookingConcurrencyTest, ConcurrentRetriesOfOneRequestIdYieldOneBooking) {
  constexpr int kRounds = 8;  // each on its own instrument
  constexpr int kThreads = 16;
  SeedInventory("retry", std::vector<absl::Duration>(kRounds, absl::Minutes(10)), 1);
  if (HasFatalFailure()) return;

  std::vector<std::string> booked;
  for (int round = 0; round < kRounds; ++round) {
    Attempt request;
    request.instrument = round;
    request.user_id = "user-0";
    request.request_id = absl::StrFormat("retry-%02d", round);
    request.reserved.start = base_ + absl::Hours(3) * round;
    request.reserved.end = request.reserved.start + absl::Minutes(90);

    std::vector<Attempt> answers(kThreads, request);
    StartGate gate;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Attempt& a = answers[static_cast<size_t>(t)];
        a.server = t % 2;
        gate.Wait();
        Send(&a);
      });
    }
    gate.Open();
    for (auto& th : threads) th.join();

    for (const Attempt& a : answers) {
      ASSERT_TRUE(a.ok()) << "round " << round << ": " << a.Describe();
    }
    const bv1::Booking& first = answers[0].booking;
    EXPECT_EQ(first.state(), bv1::Booking::CONFIRMED) << answers[0].Describe();
    for (const Attempt& a : answers) {
      EXPECT_EQ(a.booking.name(), first.name()) << "round " << round << ": " << a.Describe();
      std::string diff;
      google::protobuf::util::MessageDifferencer d;
      d.ReportDifferencesToString(&diff);
      EXPECT_TRUE(d.Compare(first, a.booking)) << "round " << round << ": answers differ: " << diff;
    }
    auto listed = ListAll(round % 2, round, {});
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->size(), 1u) << "round " << round << ": bookings on " << InstrumentName(round);
    EXPECT_EQ((*listed)[0].name(), first.name());
    booked.push_back(first.name());

    // The same request_id with other content, on both replicas.
    Attempt reused = request;
    reused.reserved.end = reused.reserved.end + absl::Minutes(30);
    for (int server = 0; server < cluster_->booking_replicas(); ++server) {
      reused.server = server;
      Send(&reused);
      EXPECT_EQ(reused.code, grpc::FAILED_PRECONDITION) << reused.Describe();
      EXPECT_EQ(reused.reason, "REQUEST_ID_REUSED") << reused.Describe();
    }
    listed = ListAll((round + 1) % 2, round, {});
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_EQ(listed->size(), 1u) << "round " << round << ": after the reused request_id";
  }

  // One event per booking, whatever the number of retries.
  auto events = ReadOutbox();
  ASSERT_TRUE(events.ok()) << events.status();
  std::map<std::string, std::vector<std::string>> kinds;
  for (const OutboxEvent& e : *events) {
    auto [name, kind] = EventBooking(e.event);
    kinds[name].push_back(kind);
  }
  for (size_t r = 0; r < booked.size(); ++r) {
    EXPECT_EQ(kinds[booked[r]], (std::vector<std::string>{"created"})) << booked[r];
  }
  EXPECT_EQ(events->size(), booked.size());
}

}  // namespace
}  // namespace labshare::booking
