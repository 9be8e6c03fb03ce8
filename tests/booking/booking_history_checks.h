// The history checks shared by the black-box booking tests
// (booking_concurrency_test, booking_cluster_test, booking_cluster_reshard_test
// through booking_cluster_fixture.h, and booking_durability_test /
// booking_failover_test through booking_history.h):
//   - intervals, their formatting and the half-open overlap check;
//   - reading what the services and Redis hold: every page of a calendar
//     (ListAll), the outbox streams (ReadOutbox), every key (AllKeys), the
//     listing-index entries (ListedBookings);
//   - gtest checks over the final answers of CreateBooking requests
//     (ClassifyAnswers, CheckListing, CheckRejectionsJustified, CheckEvents,
//     CheckNoKeysOfRejected). They take any attempt type with the fields
//     instrument, user_id, request_id, reserved, booking and the methods
//     ok(), slot_taken(), Describe().
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_HISTORY_CHECKS_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_HISTORY_CHECKS_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/redis.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "tests/booking/booking_test_cluster.h"

namespace labshare::testing::booking_checks {

namespace bv1 = labshare::booking::v1;

inline constexpr int kOutboxPartitions = 16;
inline constexpr char kEventType[] = "labshare.booking.v1.BookingEvent";
// Failures listed one by one before only their number is reported.
inline constexpr int kMaxListedFailures = 20;

// A half-open interval [start, end).
struct Interval {
  absl::Time start;
  absl::Time end;
};

inline bool Overlaps(const Interval& a, const Interval& b) { return a.start < b.end && b.start < a.end; }
inline std::string Fmt(absl::Time t) { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone()); }
inline std::string Fmt(const Interval& i) { return absl::StrCat("[", Fmt(i.start), ", ", Fmt(i.end), ")"); }
inline Interval BlockedOf(const bv1::Booking& b) {
  return {FromProto(b.blocked_interval().start_time()), FromProto(b.blocked_interval().end_time())};
}
inline Interval ReservedOf(const bv1::Booking& b) {
  return {FromProto(b.reserved_interval().start_time()), FromProto(b.reserved_interval().end_time())};
}

inline std::string CodeName(grpc::StatusCode code) {
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

// "" when the intervals are pairwise disjoint (half-open), else the first
// overlapping pair found.
inline std::string FindOverlap(std::vector<std::pair<Interval, std::string>> items) {
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first.start < b.first.start; });
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

// One MEMBER organisation `org` with facility `facility`, the instruments
// `ids` with their `buffers`, and lab users "user-0".. "user-<users-1>".
// All of it before the first booking: the booking service caches inventory
// reads.
inline absl::Status SeedInventory(BookingTestCluster& cluster, const std::string& org, const std::string& facility,
                                  const std::vector<std::string>& ids, const std::vector<absl::Duration>& buffers,
                                  int users) {
  if (ids.size() != buffers.size()) {
    return absl::InvalidArgumentError(absl::StrCat(ids.size(), " instruments, ", buffers.size(), " buffers"));
  }
  absl::Status s = cluster.CreateMemberOrganization(org, "CORE");
  if (!s.ok()) return s;
  s = cluster.CreateFacility(facility, org);
  if (!s.ok()) return s;
  for (size_t i = 0; i < ids.size(); ++i) {
    s = cluster.CreateInstrument(ids[i], facility, org, buffers[i]);
    if (!s.ok()) return s;
  }
  for (int u = 0; u < users; ++u) {
    s = cluster.CreateLabUser(absl::StrCat("user-", u), org);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// CreateBooking of `instrument` ("instruments/ID") ON_SITE for users/USER_ID.
inline bv1::CreateBookingRequest CreateRequest(const std::string& instrument, const std::string& user_id,
                                               const Interval& reserved, const std::string& request_id) {
  bv1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument(instrument);
  r.mutable_booking()->set_mode(type::v1::ON_SITE);
  r.mutable_booking()->set_user("users/" + user_id);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(reserved.start);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(reserved.end);
  r.set_request_id(request_id);
  return r;
}

// ---------------------------------------------------------------- reading

struct OutboxEvent {
  int partition = 0;
  std::string entry_id;
  bv1::BookingEvent event;
};

// Name of the booking an event carries, and which kind of event it is.
inline std::pair<std::string, std::string> EventBooking(const bv1::BookingEvent& e) {
  switch (e.payload_case()) {
    case bv1::BookingEvent::kBookingCreated: return {e.booking_created().booking().name(), "created"};
    case bv1::BookingEvent::kBookingConfirmed: return {e.booking_confirmed().booking().name(), "confirmed"};
    case bv1::BookingEvent::kBookingCancelled: return {e.booking_cancelled().booking().name(), "cancelled"};
    default: return {"", absl::StrCat("payload case ", static_cast<int>(e.payload_case()))};
  }
}

inline std::string OutboxKey(int partition) { return absl::StrCat("{bk:", partition, "}:outbox"); }

// Every booking of an instrument ("instruments/ID") in the given states (all
// when empty), over all pages of `page_size`, from one replica.
inline absl::StatusOr<std::vector<bv1::Booking>> ListAll(BookingTestCluster& cluster, int server,
                                                         const std::string& instrument,
                                                         const std::vector<bv1::Booking::State>& states,
                                                         int page_size) {
  std::vector<bv1::Booking> out;
  std::string token;
  for (int page = 0; page < 1000; ++page) {
    bv1::ListBookingsRequest r;
    r.set_instrument(instrument);
    for (auto st : states) r.add_states(st);
    r.set_page_size(page_size);
    r.set_page_token(token);
    bv1::ListBookingsResponse resp;
    auto ctx = cluster.AdminContext();
    grpc::Status s = cluster.booking(server).ListBookings(ctx.get(), r, &resp);
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("ListBookings page ", page, " of ", instrument, " via booking-", server,
                                              ": ", CodeName(s.error_code()), " ", GrpcErrorReason(s), " ",
                                              s.error_message()));
    }
    for (auto& b : *resp.mutable_bookings()) out.push_back(std::move(b));
    if (resp.next_page_token().empty()) return out;
    token = resp.next_page_token();
  }
  return absl::InternalError("ListBookings: more than 1000 pages");
}

// Entries of the partition-wide listing indexes: one per booking.
inline long long ListedBookings(RedisPool& redis) {
  long long n = 0;
  for (int p = 0; p < kOutboxPartitions; ++p) {
    auto v = redis.Command({"ZCARD", absl::StrCat("{bk:", p, "}:ls:b:all")});
    EXPECT_TRUE(v.ok() && v->type == RedisValue::Type::kInteger)
        << (v.ok() ? v->DebugString() : v.status().ToString());
    if (v.ok()) n += v->integer;
  }
  return n;
}

// Every key, through the pool's SCAN (on a cluster pool: every master).
inline std::vector<std::string> AllKeys(RedisPool& redis) {
  std::vector<std::string> keys;
  std::string cursor = "0";
  int calls = 0;
  do {
    auto v = redis.Command({"SCAN", cursor, "COUNT", "1000"});
    EXPECT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2)
        << (v.ok() ? v->DebugString() : v.status().ToString());
    if (!v.ok() || !v->is_array() || v->elements.size() != 2 || ++calls > 100000) return keys;
    cursor = v->elements[0].str;
    for (const auto& k : v->elements[1].elements) keys.push_back(k.str);
  } while (cursor != "0");
  return keys;
}

// Every entry of the outbox streams, each checked for type and payload.
inline absl::StatusOr<std::vector<OutboxEvent>> ReadOutbox(RedisPool& redis) {
  std::vector<OutboxEvent> out;
  for (int p = 0; p < kOutboxPartitions; ++p) {
    const std::string key = OutboxKey(p);
    auto v = redis.Command({"XRANGE", key, "-", "+"});
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
        return absl::InternalError(absl::StrCat(key, " entry ", e.entry_id, ": type '", type, "', payload present ",
                                                have_payload, ", or payload not a BookingEvent"));
      }
      out.push_back(std::move(e));
    }
  }
  return out;
}

// ---------------------------------------------------------------- checks

// Accepted (OK, CONFIRMED) and rejected (SLOT_TAKEN) final answers.
template <typename Attempt>
struct Answers {
  std::vector<Attempt> accepted;
  std::vector<Attempt> rejected;
  int unexpected = 0;
};

// Only two answers are possible; accepted ones are what was asked (the
// instrument, the user, the reserved interval, blocked = reserved + the
// instrument's buffer, a unique "bookings/" name). Appends to `out`.
template <typename Attempt>
void ClassifyAnswers(const std::vector<Attempt>& attempts, const std::function<std::string(int)>& instrument_name,
                     const std::function<absl::Duration(int)>& buffer, Answers<Attempt>* out) {
  int wrong_content = 0;
  std::set<std::string> names;
  for (const Attempt& a : out->accepted) names.insert(a.booking.name());
  for (const Attempt& a : attempts) {
    if (a.ok() && a.booking.state() == bv1::Booking::CONFIRMED) {
      const Interval blocked = BlockedOf(a.booking), reserved = ReservedOf(a.booking);
      const bool content_ok = absl::StartsWith(a.booking.name(), "bookings/") &&
                              a.booking.instrument() == instrument_name(a.instrument) &&
                              a.booking.user() == "users/" + a.user_id && reserved.start == a.reserved.start &&
                              reserved.end == a.reserved.end && blocked.start == a.reserved.start &&
                              blocked.end == a.reserved.end + buffer(a.instrument) &&
                              names.insert(a.booking.name()).second;
      if (!content_ok && ++wrong_content <= kMaxListedFailures) {
        ADD_FAILURE() << "accepted booking is not what was asked (expected blocked "
                      << Fmt(Interval{a.reserved.start, a.reserved.end + buffer(a.instrument)})
                      << ", unique name): " << a.Describe();
      }
      out->accepted.push_back(a);
    } else if (a.slot_taken()) {
      out->rejected.push_back(a);
    } else if (++out->unexpected <= kMaxListedFailures) {
      ADD_FAILURE() << "final answer neither OK/CONFIRMED nor FAILED_PRECONDITION SLOT_TAKEN: " << a.Describe();
    }
  }
  EXPECT_EQ(out->unexpected, 0) << "final answers other than OK/CONFIRMED or SLOT_TAKEN (first "
                                << kMaxListedFailures << " listed above)";
  EXPECT_EQ(wrong_content, 0) << "accepted bookings that differ from their request";
}

// Accepted bookings per instrument index, as (blocked, name); by name.
template <typename Attempt>
std::vector<std::vector<std::pair<Interval, std::string>>> BlockedByInstrument(
    const std::vector<Attempt>& accepted, int instruments, std::map<std::string, const Attempt*>* by_name) {
  std::vector<std::vector<std::pair<Interval, std::string>>> out(static_cast<size_t>(instruments));
  for (const Attempt& a : accepted) {
    out[static_cast<size_t>(a.instrument)].push_back({BlockedOf(a.booking), a.booking.name()});
    (*by_name)[a.booking.name()] = &a;
  }
  return out;
}

// One replica's ListBookings(CONFIRMED) of one instrument against the
// accepted bookings `expected`: each listed one as answered (blocked,
// CONFIRMED), ordered by start then name, none twice, exactly the accepted
// ones, no overlap.
template <typename Attempt>
void CheckListing(const std::vector<bv1::Booking>& listed, const std::vector<std::pair<Interval, std::string>>& expected,
                  const std::map<std::string, const Attempt*>& by_name, const std::string& instrument, int server) {
  std::set<std::string> expected_names;
  for (const auto& [iv, name] : expected) expected_names.insert(name);
  std::set<std::string> listed_names;
  std::vector<std::pair<Interval, std::string>> listed_blocked;
  int mismatched = 0;
  for (size_t n = 0; n < listed.size(); ++n) {
    const bv1::Booking& b = listed[n];
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
      const bv1::Booking& prev = listed[n - 1];
      EXPECT_TRUE(ReservedOf(prev).start < ReservedOf(b).start ||
                  (ReservedOf(prev).start == ReservedOf(b).start && prev.name() < b.name()))
          << "ListBookings not ordered by start, then name: " << prev.name() << " before " << b.name();
    }
  }
  EXPECT_EQ(mismatched, 0) << "listed bookings that differ from their answer";
  EXPECT_EQ(listed.size(), listed_names.size()) << "ListBookings repeats a booking";
  std::vector<std::string> missing, extra;
  std::set_difference(expected_names.begin(), expected_names.end(), listed_names.begin(), listed_names.end(),
                      std::back_inserter(missing));
  std::set_difference(listed_names.begin(), listed_names.end(), expected_names.begin(), expected_names.end(),
                      std::back_inserter(extra));
  EXPECT_TRUE(missing.empty()) << missing.size() << " acknowledged bookings of " << instrument
                               << " not listed via booking-" << server << ", e.g. " << missing.front() << ": "
                               << by_name.at(missing.front())->Describe();
  EXPECT_TRUE(extra.empty()) << extra.size() << " listed bookings of " << instrument
                             << " no client was answered OK for, via booking-" << server << ", e.g. "
                             << extra.front();
  EXPECT_EQ(FindOverlap(listed_blocked), "") << "listed bookings overlap on " << instrument;
}

// Every rejection had a reason: no booking is ever removed here, so an
// accepted booking overlapping its blocked interval must exist.
template <typename Attempt>
void CheckRejectionsJustified(const std::vector<Attempt>& rejected,
                              const std::vector<std::vector<std::pair<Interval, std::string>>>& by_instrument,
                              const std::function<absl::Duration(int)>& buffer) {
  int unjustified = 0;
  for (const Attempt& r : rejected) {
    const Interval want{r.reserved.start, r.reserved.end + buffer(r.instrument)};
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
}

// Events: one booking_created, carrying the request_id and the booking as
// answered (CONFIRMED), per accepted booking, nothing else; each instrument
// on one partition.
template <typename Attempt>
void CheckEvents(const std::vector<OutboxEvent>& events, const std::vector<Attempt>& accepted,
                 const std::map<std::string, const Attempt*>& by_name) {
  std::map<std::string, std::map<std::string, int>> kinds;  // name -> kind -> count
  std::map<std::string, std::set<int>> partitions;          // instrument -> partitions
  int bad_events = 0;
  for (const OutboxEvent& e : events) {
    auto [name, kind] = EventBooking(e.event);
    ++kinds[name][kind];
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (++bad_events <= kMaxListedFailures) {
        ADD_FAILURE() << "event " << e.entry_id << " on partition " << e.partition << " (" << kind << ") for '"
                      << name << "', which no client was answered OK for: " << e.event.ShortDebugString();
      }
      continue;
    }
    partitions[it->second->booking.instrument()].insert(e.partition);
    const bv1::Booking& carried =
        kind == "created" ? e.event.booking_created().booking() : e.event.booking_confirmed().booking();
    if (kind != "created" || e.event.header().request_id() != it->second->request_id ||
        carried.instrument() != it->second->booking.instrument() || carried.state() != bv1::Booking::CONFIRMED ||
        carried.name() != it->second->booking.name() ||
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
  EXPECT_EQ(events.size(), accepted.size()) << "outbox events vs accepted bookings";
  for (const auto& [instrument, ps] : partitions) {
    EXPECT_EQ(ps.size(), 1u) << instrument << " has events on " << ps.size() << " partitions";
  }
}

// No key names a rejected request_id. Request ids of one run all have the
// same length and start with `id_head`: find the one a key names. Except
// the request_id's claim ({bk:ids}:req:...) of a request `retried` says was
// sent more than once: an earlier try that may have been kept made it, and
// only the try that made a claim drops it (README, {bk:ids}).
template <typename Attempt>
void CheckNoKeysOfRejected(const std::vector<std::string>& keys, const std::vector<Attempt>& rejected,
                           const std::string& id_head, size_t id_length,
                           const std::function<bool(const Attempt&)>& retried = nullptr) {
  std::set<std::string> rejected_ids, claims_kept;
  for (const Attempt& r : rejected) {
    rejected_ids.insert(r.request_id);
    if (retried && retried(r)) claims_kept.insert(r.request_id);
  }
  int leaked = 0;
  for (const std::string& key : keys) {
    for (size_t pos = key.find(id_head); pos != std::string::npos; pos = key.find(id_head, pos + 1)) {
      const std::string id = key.substr(pos, id_length);
      if (claims_kept.count(id) && key.rfind("{bk:ids}:req:", 0) == 0) continue;
      if (rejected_ids.count(id) && ++leaked <= kMaxListedFailures) {
        ADD_FAILURE() << "key '" << key << "' names rejected request " << key.substr(pos, id_length);
      }
    }
  }
  EXPECT_EQ(leaked, 0) << "keys left behind by rejected requests";
}

}  // namespace labshare::testing::booking_checks

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_HISTORY_CHECKS_H_
