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
#include "tests/booking/booking_test_cluster.h"

namespace labshare::booking {
namespace {

namespace bv1 = labshare::booking::v1;
using testing::BookingTestCluster;

constexpr int kOutboxPartitions = 16;
constexpr char kEventType[] = "labshare.booking.v1.BookingEvent";
constexpr char kOrg[] = "org-a";
constexpr char kFacility[] = "fac-a";
// Failures listed one by one before only their number is reported.
constexpr int kMaxListedFailures = 20;

// A half-open interval [start, end).
struct Interval {
  absl::Time start;
  absl::Time end;
};

bool Overlaps(const Interval& a, const Interval& b) { return a.start < b.end && b.start < a.end; }

std::string Fmt(absl::Time t) { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone()); }
std::string Fmt(const Interval& i) { return absl::StrCat("[", Fmt(i.start), ", ", Fmt(i.end), ")"); }

Interval BlockedOf(const bv1::Booking& b) {
  return {FromProto(b.blocked_interval().start_time()), FromProto(b.blocked_interval().end_time())};
}
Interval ReservedOf(const bv1::Booking& b) {
  return {FromProto(b.reserved_interval().start_time()), FromProto(b.reserved_interval().end_time())};
}

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return absl::StrCat("code ", static_cast<int>(code));
  }
}

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

struct OutboxEvent {
  int partition = 0;
  std::string entry_id;
  bv1::BookingEvent event;
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
    ASSERT_TRUE(cluster_->CreateMemberOrganization(kOrg, "CORE").ok());
    ASSERT_TRUE(cluster_->CreateFacility(kFacility, kOrg).ok());
    instruments_.clear();
    buffers_ = buffers;
    for (size_t i = 0; i < buffers.size(); ++i) {
      std::string id = absl::StrCat(prefix, "-", i);
      absl::Status s = cluster_->CreateInstrument(id, kFacility, kOrg, buffers[i]);
      ASSERT_TRUE(s.ok()) << s;
      instruments_.push_back(id);
    }
    for (int u = 0; u < users; ++u) {
      absl::Status s = cluster_->CreateLabUser(absl::StrCat("user-", u), kOrg);
      ASSERT_TRUE(s.ok()) << s;
    }
  }

  std::string InstrumentName(int i) const { return "instruments/" + instruments_[static_cast<size_t>(i)]; }
  absl::Duration Buffer(int i) const { return buffers_[static_cast<size_t>(i)]; }

  bv1::CreateBookingRequest MakeCreate(const Attempt& a) const {
    bv1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument(InstrumentName(a.instrument));
    r.mutable_booking()->set_mode(type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/" + a.user_id);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(a.reserved.start);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(a.reserved.end);
    r.set_request_id(a.request_id);
    return r;
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
    std::vector<bv1::Booking> out;
    std::string token;
    for (int page = 0; page < 1000; ++page) {
      bv1::ListBookingsRequest r;
      r.set_instrument(InstrumentName(instrument));
      for (auto st : states) r.add_states(st);
      r.set_page_size(37);  // many pages, none aligned with anything
      r.set_page_token(token);
      bv1::ListBookingsResponse resp;
      auto ctx = cluster_->AdminContext();
      grpc::Status s = cluster_->booking(server).ListBookings(ctx.get(), r, &resp);
      if (!s.ok()) {
        return absl::InternalError(absl::StrCat("ListBookings page ", page, " of ", InstrumentName(instrument),
                                                " via booking-", server, ": ", CodeName(s.error_code()),
                                                " ", GrpcErrorReason(s), " ", s.error_message()));
      }
      for (auto& b : *resp.mutable_bookings()) out.push_back(std::move(b));
      if (resp.next_page_token().empty()) return out;
      token = resp.next_page_token();
    }
    return absl::InternalError("ListBookings: more than 1000 pages");
  }

  // Keys other than the listing indexes ({bk:P}:ls:..., one per user and
  // partition among others, so their count is no constant per booking);
  // those are checked by their entries (ListedBookings).
  long long DbSize() const {
    long long n = 0;
    for (const auto& k : AllKeys()) n += k.find("}:ls:") == std::string::npos ? 1 : 0;
    return n;
  }
  // Entries of the partition-wide listing indexes: one per booking.
  long long ListedBookings() const {
    long long n = 0;
    for (int p = 0; p < kOutboxPartitions; ++p) {
      auto v = cluster_->redis().Command({"ZCARD", absl::StrCat("{bk:", p, "}:ls:b:all")});
      EXPECT_TRUE(v.ok()) << v.status();
      if (v.ok()) n += v->integer;
    }
    return n;
  }

  std::vector<std::string> AllKeys() const {
    std::vector<std::string> keys;
    std::string cursor = "0";
    do {
      auto v = cluster_->redis().Command({"SCAN", cursor, "COUNT", "1000"});
      EXPECT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2) << (v.ok() ? v->DebugString() : "");
      if (!v.ok() || !v->is_array() || v->elements.size() != 2) return keys;
      cursor = v->elements[0].str;
      for (const auto& k : v->elements[1].elements) keys.push_back(k.str);
    } while (cursor != "0");
    return keys;
  }

  // Every entry of the 16 outbox streams, each checked for type and payload.
  absl::StatusOr<std::vector<OutboxEvent>> ReadOutbox() const {
    std::vector<OutboxEvent> out;
    for (int p = 0; p < kOutboxPartitions; ++p) {
      const std::string key = absl::StrCat("{bk:", p, "}:outbox");
      auto v = cluster_->redis().Command({"XRANGE", key, "-", "+"});
      if (!v.ok()) return v.status();
      if (!v->is_array()) return absl::InternalError(absl::StrCat("XRANGE ", key, ": ", v->DebugString()));
      for (const auto& entry : v->elements) {
        if (!entry.is_array() || entry.elements.size() != 2 || !entry.elements[1].is_array()) {
          return absl::InternalError(absl::StrCat(key, ": odd entry ", entry.DebugString()));
        }
        OutboxEvent e;
        e.partition = p;
        e.entry_id = entry.elements[0].str;
        const auto& fields = entry.elements[1].elements;
        std::string type, payload;
        bool have_payload = false;
        for (size_t f = 0; f + 1 < fields.size(); f += 2) {
          if (fields[f].str == "type") type = fields[f + 1].str;
          if (fields[f].str == "payload") {
            payload = fields[f + 1].str;
            have_payload = true;
          }
        }
        if (type != kEventType || !have_payload || !e.event.ParseFromString(payload)) {
          return absl::InternalError(absl::StrCat(key, " entry ", e.entry_id, ": type '", type,
                                                  "', payload present ", have_payload,
                                                  ", or payload not a BookingEvent"));
        }
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  std::unique_ptr<BookingTestCluster> cluster_;
  absl::Time base_;
  std::vector<std::string> instruments_;
  std::vector<absl::Duration> buffers_;
};

// Name of the booking an event carries, and which kind of event it is.
std::pair<std::string, std::string> EventBooking(const bv1::BookingEvent& e) {
  switch (e.payload_case()) {
    case bv1::BookingEvent::kBookingCreated: return {e.booking_created().booking().name(), "created"};
    case bv1::BookingEvent::kBookingConfirmed: return {e.booking_confirmed().booking().name(), "confirmed"};
    case bv1::BookingEvent::kBookingCancelled: return {e.booking_cancelled().booking().name(), "cancelled"};
    default: return {"", absl::StrCat("payload case ", static_cast<int>(e.payload_case()))};
  }
}

// "" when the intervals are pairwise disjoint (half-open), else the first
// overlapping pair found.
std::string FindOverlap(std::vector<std::pair<Interval, std::string>> items) {
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first.start < b.first.start; });
  size_t furthest = 0;  // item with the latest end so far
  for (size_t i = 1; i < items.size(); ++i) {
    if (items[i].first.start < items[furthest].first.end) {
      return absl::StrCat(items[furthest].second, " blocked ", Fmt(items[furthest].first), " overlaps ",
                          items[i].second, " blocked ", Fmt(items[i].first));
    }
    if (items[i].first.end > items[furthest].first.end) furthest = i;
  }
  return "";
}

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
  int unexpected = 0, wrong_content = 0;
  std::vector<Attempt> rejected;
  std::set<std::string> names;
  for (const Attempt& a : attempts) {
    if (a.ok() && a.booking.state() == bv1::Booking::CONFIRMED) {
      const Interval blocked = BlockedOf(a.booking), reserved = ReservedOf(a.booking);
      const bool content_ok = absl::StartsWith(a.booking.name(), "bookings/") &&
                              a.booking.instrument() == InstrumentName(a.instrument) &&
                              a.booking.user() == "users/" + a.user_id && reserved.start == a.reserved.start &&
                              reserved.end == a.reserved.end && blocked.start == a.reserved.start &&
                              blocked.end == a.reserved.end + Buffer(a.instrument) &&
                              names.insert(a.booking.name()).second;
      if (!content_ok && ++wrong_content <= kMaxListedFailures) {
        ADD_FAILURE() << "accepted booking is not what was asked (expected blocked "
                      << Fmt(Interval{a.reserved.start, a.reserved.end + Buffer(a.instrument)})
                      << ", unique name): " << a.Describe();
      }
      accepted.push_back(a);
    } else if (a.slot_taken()) {
      rejected.push_back(a);
    } else if (++unexpected <= kMaxListedFailures) {
      ADD_FAILURE() << "answer neither OK/CONFIRMED nor FAILED_PRECONDITION SLOT_TAKEN: " << a.Describe();
    }
  }
  EXPECT_EQ(unexpected, 0) << "answers other than OK/CONFIRMED or SLOT_TAKEN (first "
                           << kMaxListedFailures << " listed above)";
  EXPECT_EQ(wrong_content, 0) << "accepted bookings that differ from their request";
  const int concurrent_accepted = static_cast<int>(accepted.size()) - (warm);
  std::cout << attempts.size() << " requests in " << absl::FormatDuration(took) << ": "
            << concurrent_accepted << " accepted, " << rejected.size() << " SLOT_TAKEN, " << unexpected
            << " other\n";
  EXPECT_GT(concurrent_accepted, 0);
  EXPECT_GT(rejected.size(), 0u);

  // ---- (a) Per instrument: accepted blocked intervals are pairwise
  // disjoint, and ListBookings(CONFIRMED) on each replica is exactly them.
  std::vector<std::vector<std::pair<Interval, std::string>>> by_instrument(kInstruments);
  std::map<std::string, const Attempt*> by_name;
  for (const Attempt& a : accepted) {
    by_instrument[static_cast<size_t>(a.instrument)].push_back({BlockedOf(a.booking), a.booking.name()});
    by_name[a.booking.name()] = &a;
  }
  for (int i = 0; i < kInstruments; ++i) {
    const auto& mine = by_instrument[static_cast<size_t>(i)];
    EXPECT_EQ(FindOverlap(mine), "") << "accepted bookings overlap on " << InstrumentName(i);
    std::set<std::string> expected_names;
    for (const auto& [iv, name] : mine) expected_names.insert(name);
    for (int server = 0; server < cluster_->booking_replicas(); ++server) {
      auto listed = ListAll(server, i, {bv1::Booking::CONFIRMED});
      ASSERT_TRUE(listed.ok()) << listed.status();
      std::set<std::string> listed_names;
      std::vector<std::pair<Interval, std::string>> listed_blocked;
      int mismatched = 0;
      for (size_t n = 0; n < listed->size(); ++n) {
        const bv1::Booking& b = (*listed)[n];
        listed_names.insert(b.name());
        listed_blocked.push_back({BlockedOf(b), b.name()});
        auto it = by_name.find(b.name());
        if (it != by_name.end() && (BlockedOf(b).start != BlockedOf(it->second->booking).start ||
                                    BlockedOf(b).end != BlockedOf(it->second->booking).end ||
                                    b.state() != bv1::Booking::CONFIRMED)) {
          if (++mismatched <= kMaxListedFailures) {
            ADD_FAILURE() << "listed " << b.name() << " blocked " << Fmt(BlockedOf(b)) << " state "
                          << bv1::Booking::State_Name(b.state()) << " differs from its CreateBooking answer "
                          << it->second->Describe();
          }
        }
        if (n > 0) {
          const bv1::Booking& prev = (*listed)[n - 1];
          EXPECT_TRUE(ReservedOf(prev).start < ReservedOf(b).start ||
                      (ReservedOf(prev).start == ReservedOf(b).start && prev.name() < b.name()))
              << "ListBookings not ordered by start, then name: " << prev.name() << " before " << b.name();
        }
      }
      EXPECT_EQ(listed->size(), listed_names.size()) << "ListBookings repeats a booking";
      EXPECT_EQ(listed_names, expected_names)
          << "ListBookings(" << InstrumentName(i) << ", CONFIRMED) via booking-" << server
          << " is not the set of accepted bookings";
      EXPECT_EQ(FindOverlap(listed_blocked), "") << "listed bookings overlap on " << InstrumentName(i);
    }
  }

  // Every rejection had a reason: no booking is ever removed here, so an
  // accepted booking overlapping its blocked interval must exist.
  int unjustified = 0;
  for (const Attempt& r : rejected) {
    const Interval want{r.reserved.start, r.reserved.end + Buffer(r.instrument)};
    bool clash = false;
    for (const auto& [iv, name] : by_instrument[static_cast<size_t>(r.instrument)]) {
      if (Overlaps(iv, want)) {
        clash = true;
        break;
      }
    }
    if (!clash && ++unjustified <= kMaxListedFailures) {
      ADD_FAILURE() << "SLOT_TAKEN although no accepted booking overlaps " << Fmt(want) << ": " << r.Describe();
    }
  }
  EXPECT_EQ(unjustified, 0) << "rejections with nothing in the way";

  // ---- (c) Events: one booking_created, in state CONFIRMED, per accepted
  // booking, nothing else; each instrument on one partition.
  auto events = ReadOutbox();
  ASSERT_TRUE(events.ok()) << events.status();
  std::map<std::string, std::map<std::string, int>> kinds;  // name -> kind -> count
  std::map<std::string, std::set<int>> partitions;          // instrument -> partitions
  int bad_events = 0;
  for (const OutboxEvent& e : *events) {
    auto [name, kind] = EventBooking(e.event);
    ++kinds[name][kind];
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (++bad_events <= kMaxListedFailures) {
        ADD_FAILURE() << "event " << e.entry_id << " on partition " << e.partition << " (" << kind
                      << ") for '" << name << "', which is no accepted booking: " << e.event.ShortDebugString();
      }
      continue;
    }
    partitions[it->second->booking.instrument()].insert(e.partition);
    const bv1::Booking& carried = kind == "created" ? e.event.booking_created().booking()
                                                    : e.event.booking_confirmed().booking();
    if (e.event.header().request_id() != it->second->request_id || carried.instrument() != it->second->booking.instrument() ||
        carried.state() != bv1::Booking::CONFIRMED || carried.name() != it->second->booking.name() ||
        BlockedOf(carried).start != BlockedOf(it->second->booking).start ||
        BlockedOf(carried).end != BlockedOf(it->second->booking).end) {
      if (++bad_events <= kMaxListedFailures) {
        ADD_FAILURE() << "event " << e.entry_id << " (" << kind << ") header.request_id '"
                      << e.event.header().request_id() << "' or booking differs from the answer "
                      << it->second->Describe();
      }
    }
  }
  EXPECT_EQ(bad_events, 0);
  int missing = 0;
  for (const Attempt& a : accepted) {
    const auto& k = kinds[a.booking.name()];
    const int created = k.count("created") ? k.at("created") : 0;
    if ((created != 1 || k.size() != 1) && ++missing <= kMaxListedFailures) {
      ADD_FAILURE() << a.booking.name() << ": " << created << " booking_created, " << k.size()
                    << " kinds of event; " << a.Describe();
    }
  }
  EXPECT_EQ(missing, 0) << "accepted bookings without exactly one booking_created (and nothing else)";
  EXPECT_EQ(events->size(), accepted.size()) << "outbox events vs accepted bookings";
  for (const auto& [instrument, ps] : partitions) {
    EXPECT_EQ(ps.size(), 1u) << instrument << " has events on " << ps.size() << " partitions";
  }

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
        << per_booking_keys << " + " << per_instrument_constants << " per-instrument keys";
  }
  EXPECT_EQ(ListedBookings(), static_cast<long long>(accepted.size())) << "listing index entries vs accepted bookings";
  std::set<std::string> rejected_ids;
  for (const Attempt& r : rejected) rejected_ids.insert(r.request_id);
  int leaked = 0;
  for (const std::string& key : AllKeys()) {
    // Request ids are "conc-tNN-rNNN", all the same length: find the one a key names.
    for (size_t pos = key.find("conc-t"); pos != std::string::npos; pos = key.find("conc-t", pos + 1)) {
      if (rejected_ids.count(key.substr(pos, 13)) && ++leaked <= kMaxListedFailures) {
        ADD_FAILURE() << "key '" << key << "' names rejected request " << key.substr(pos, 13);
      }
    }
  }
  EXPECT_EQ(leaked, 0) << "keys left behind by rejected requests";
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
