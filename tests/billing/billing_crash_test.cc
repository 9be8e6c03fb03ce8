// Crash test of labshare-billing's booking-event consumer, black box.
//
// A stream of ~2000 synthetic BookingEvents (checked out, missed, late
// cancelled, plus a few that bill nothing and a few published twice) is fed
// into the 16 booking outboxes {bk:P}:outbox of one redis-server while
// labshare-billing consumes them; the test kills the billing process with
// SIGKILL at random points (a random 20-300 ms after it listens) and restarts
// it (same consumer name, so it first re-reads its own pending entries),
// while more events keep arriving. After the last restart has consumed every
// stream, the ledger must equal that of an uninterrupted run: a second,
// never-killed labshare-billing on a second redis-server with the same
// events. Compared, to the minor unit:
//   - one charge per billable event id, none for the others, and the charges
//     of both runs equal field by field except their timestamps (amount,
//     fee kind, payable amount, billed time, ...), and equal to the amount
//     the slot rules give by hand (15-minute units of 500.00 CNY/h);
//   - the same postings, each balanced (debits == credits in its currency);
//   - {billing}:bal equal field by field, summing to zero per currency;
//   - every account's ledger lines equal (ignoring posting times);
//   - exactly one ChargePosted on {billing}:outbox per charge.
//
// Real processes (redis-server x2, labshare-inventory, labshare-billing) on
// free loopback ports, started from GoogleTest's main thread; binaries from
// $LABSHARE_BIN_DIR or <test dir>/../bin (tests/booking/booking_test_cluster.h).
// Event contents use a seed printed at the start (LABSHARE_CRASH_SEED sets
// it); the kill points are random. Waits poll with bounded deadlines; the
// only sleeps are the fault injection and the producer's pacing.
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/redis.h"
#include "common/token.h"
#include "labshare/billing/v1/billing.pb.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/redis_server.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
namespace bv1 = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
namespace tv1 = labshare::type::v1;
using labshare::testing::ChildProcess;
using labshare::testing::RedisServer;
using google::protobuf::util::MessageDifferencer;

constexpr int kPartitions = 16;
constexpr char kEventType[] = "labshare.booking.v1.BookingEvent";
constexpr char kGroup[] = "billing";

// The stream: billable events by kind, events that bill nothing, and
// re-publications of billable events (at-least-once publishing).
constexpr int kCheckedOut = 1600;
constexpr int kMissed = 200;
constexpr int kLateCancelled = 200;
constexpr int kNotBilled = 40;     // cancelled in time: no charge
constexpr int kRepublished = 40;   // the same payload published again later
// Published before billing first starts; the rest arrive in batches while
// billing is being killed.
constexpr double kPublishedUpFront = 0.25;
constexpr int kProducerBatch = 25;
constexpr absl::Duration kProducerPause = absl::Milliseconds(60);

// Fault injection: how long a billing process lives after "listening on".
constexpr int kMinLifeMs = 20;
constexpr int kMaxLifeMs = 300;
// Killing stops after this long (the last restart then runs to the end).
constexpr absl::Duration kKillPhase = absl::Seconds(25);
// Kills that must hit a process with work left for the test to mean anything.
constexpr int kMinKillsWithWorkLeft = 5;
// Bound on every wait for consumption to finish.
constexpr absl::Duration kConsumeTimeout = absl::Seconds(90);
constexpr absl::Duration kPoll = absl::Milliseconds(20);
constexpr int kMaxListed = 20;

// The instrument's rules and rate (hand-computed amounts below).
constexpr int64_t kHourlyMinor = 50000;  // 500.00 CNY per hour
constexpr int64_t kUnitSeconds = 15 * 60;
constexpr int64_t kUnitMinor = kHourlyMinor / 4;  // one 15-minute unit
constexpr int32_t kMissedFeeBps = 5000;
constexpr int32_t kLateCancelFeeBps = 2500;

std::string Hex32(std::mt19937_64& rng) {
  return absl::StrFormat("%016x%016x", rng(), rng());
}

int64_t Units(int64_t seconds) { return (seconds + kUnitSeconds - 1) / kUnitSeconds; }

// round_half_up(base * bps / 10000) for the small non-negative values here.
int64_t Fee(int64_t base, int32_t bps) { return (base * bps + 5000) / 10000; }

struct SynthEvent {
  std::string event_id;
  std::string what;  // "checked_out", "missed", "late_cancelled", "cancelled"
  std::string payload;
  bool billable = false;
  bv1::FeeKind fee_kind = bv1::FEE_KIND_UNSPECIFIED;
  int64_t amount_minor = 0;  // by hand, from the slot rules and rate
};

struct Publication {
  int partition = 0;
  const SynthEvent* event = nullptr;
};

bk::Booking BaseBooking(int i, absl::Time start, absl::Duration reserved) {
  bk::Booking b;
  b.set_name(absl::StrFormat("bookings/crash-%05d", i));
  b.set_instrument("instruments/tem");
  b.set_instrument_owner("organizations/owner");
  b.set_mode(tv1::ON_SITE);
  b.set_user("users/ana");
  b.set_payer_organization("organizations/lab");
  b.set_payer_class(tv1::MEMBER);
  b.set_payer_tier("GENERAL");
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(start + reserved);
  *b.mutable_blocked_interval() = b.reserved_interval();
  *b.mutable_create_time() = ToProto(start - absl::Hours(48));
  b.set_etag(absl::StrCat("e", i));
  return b;
}

// The events, in publication order of their first publication. `base` is
// after the rate's effective time, so every reserved start has a rate.
std::vector<SynthEvent> MakeEvents(std::mt19937_64& rng, absl::Time base) {
  std::vector<std::string> kinds;
  kinds.insert(kinds.end(), kCheckedOut, "checked_out");
  kinds.insert(kinds.end(), kMissed, "missed");
  kinds.insert(kinds.end(), kLateCancelled, "late_cancelled");
  kinds.insert(kinds.end(), kNotBilled, "cancelled");
  std::shuffle(kinds.begin(), kinds.end(), rng);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  std::vector<SynthEvent> out;
  std::set<std::string> ids;
  for (size_t i = 0; i < kinds.size(); ++i) {
    SynthEvent s;
    do {
      s.event_id = Hex32(rng);
    } while (!ids.insert(s.event_id).second);
    s.what = kinds[i];
    // Reserved: whole seconds from 1 min to 8 h, within the next 60 days.
    const absl::Time start = base + absl::Seconds(uniform(0, 60 * 24 * 3600));
    const int64_t reserved_s = uniform(60, 8 * 3600);
    bk::Booking b = BaseBooking(static_cast<int>(i), start, absl::Seconds(reserved_s));
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(s.event_id);
    e.mutable_header()->set_actor("users/ana");
    e.mutable_header()->set_actor_organization("organizations/lab");
    e.mutable_header()->set_request_id(absl::StrCat("req-", i));
    absl::Time event_time;
    if (s.what == "checked_out") {
      // Check-in up to 20 min after the start; 1 s to 6 h of actual use.
      const absl::Time in = start + absl::Seconds(uniform(0, 20 * 60));
      const int64_t used_s = uniform(1, 6 * 3600);
      b.set_state(bk::Booking::COMPLETED);
      auto* session = b.mutable_session();
      *session->mutable_start_time() = ToProto(in);
      *session->mutable_end_time() = ToProto(in + absl::Seconds(used_s));
      session->set_checked_in_by("users/ana");
      session->set_checked_out_by("users/ana");
      event_time = in + absl::Seconds(used_s);
      s.billable = true;
      s.fee_kind = bv1::USAGE;
      s.amount_minor = Units(used_s) * kUnitMinor;
      *e.mutable_booking_checked_out()->mutable_booking() = b;
    } else if (s.what == "missed") {
      b.set_state(bk::Booking::MISSED);
      event_time = start + absl::Minutes(15);
      s.billable = true;
      s.fee_kind = bv1::MISSED_BOOKING_FEE;
      s.amount_minor = Fee(Units(reserved_s) * kUnitMinor, kMissedFeeBps);
      e.mutable_header()->set_actor("services/booking");
      e.mutable_header()->clear_actor_organization();
      *e.mutable_booking_missed()->mutable_booking() = b;
    } else {
      const bool late = s.what == "late_cancelled";
      event_time = start - (late ? absl::Hours(2) : absl::Hours(72));
      b.set_state(bk::Booking::CANCELLED);
      b.set_late_cancellation(late);
      auto* c = b.mutable_cancellation();
      *c->mutable_cancel_time() = ToProto(event_time);
      c->set_cancelled_by("users/ana");
      c->set_initiator(bk::Booking::BOOKER);
      c->set_reason("plans changed");
      s.billable = late;
      if (late) {
        s.fee_kind = bv1::LATE_CANCELLATION_FEE;
        s.amount_minor = Fee(Units(reserved_s) * kUnitMinor, kLateCancelFeeBps);
      }
      auto* cancelled = e.mutable_booking_cancelled();
      *cancelled->mutable_booking() = b;
      cancelled->set_previous_state(bk::Booking::CONFIRMED);
      cancelled->set_late_cancellation(late);
      cancelled->set_initiator(bk::Booking::BOOKER);
    }
    *e.mutable_header()->mutable_event_time() = ToProto(event_time);
    s.payload = e.SerializeAsString();
    out.push_back(std::move(s));
  }
  return out;
}

// Every event once on a random partition, plus kRepublished billable ones
// again at a later position on another random partition.
std::vector<Publication> MakePublications(std::mt19937_64& rng, const std::vector<SynthEvent>& events) {
  std::uniform_int_distribution<int> partition(0, kPartitions - 1);
  std::vector<Publication> out;
  for (const auto& e : events) out.push_back({partition(rng), &e});
  std::vector<const SynthEvent*> billable;
  for (const auto& e : events) {
    if (e.billable) billable.push_back(&e);
  }
  std::shuffle(billable.begin(), billable.end(), rng);
  for (int i = 0; i < kRepublished && i < static_cast<int>(billable.size()); ++i) {
    const SynthEvent* e = billable[static_cast<size_t>(i)];
    size_t first = 0;
    while (out[first].event != e) ++first;
    const size_t at = std::uniform_int_distribution<size_t>(first + 1, out.size())(rng);
    out.insert(out.begin() + static_cast<std::ptrdiff_t>(at), Publication{partition(rng), e});
  }
  return out;
}

std::string Outbox(int partition) { return absl::StrCat("{bk:", partition, "}:outbox"); }

absl::Status Publish(RedisPool& redis, const std::vector<Publication>& pubs, size_t from, size_t to) {
  std::vector<std::vector<std::string>> commands;
  for (size_t i = from; i < to; ++i) {
    commands.push_back({"XADD", Outbox(pubs[i].partition), "*", "type", kEventType, "payload",
                        pubs[i].event->payload});
  }
  if (commands.empty()) return absl::OkStatus();
  auto replies = redis.Pipeline(commands);
  if (!replies.ok()) return replies.status();
  for (const auto& r : *replies) {
    if (r.is_error()) return absl::InternalError("XADD: " + r.str);
  }
  return absl::OkStatus();
}

// Field/value pairs of a RESP2 map-as-array reply.
std::map<std::string, const RedisValue*> Fields(const RedisValue& v) {
  std::map<std::string, const RedisValue*> out;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) out[v.elements[i].str] = &v.elements[i + 1];
  return out;
}

// Progress of billing on one Redis.
struct Progress {
  int64_t applied = 0;         // HLEN {billing}:applied
  int64_t pending = 0;         // delivered, not acknowledged, all streams
  int streams_behind = 0;      // streams whose group has not read the last entry
  std::string Describe() const {
    return absl::StrCat(applied, " events applied, ", pending, " entries pending, ", streams_behind,
                        " streams not read to the end");
  }
};

absl::StatusOr<Progress> ProgressOf(RedisPool& redis) {
  std::vector<std::vector<std::string>> commands = {{"HLEN", "{billing}:applied"}};
  for (int p = 0; p < kPartitions; ++p) {
    commands.push_back({"XINFO", "STREAM", Outbox(p)});
    commands.push_back({"XINFO", "GROUPS", Outbox(p)});
  }
  auto replies = redis.Pipeline(commands);
  if (!replies.ok()) return replies.status();
  Progress out;
  out.applied = (*replies)[0].integer;
  for (int p = 0; p < kPartitions; ++p) {
    const RedisValue& stream = (*replies)[static_cast<size_t>(1 + 2 * p)];
    const RedisValue& groups = (*replies)[static_cast<size_t>(2 + 2 * p)];
    if (stream.is_error()) continue;  // no such stream: nothing to read
    auto sf = Fields(stream);
    const std::string last = sf.count("last-generated-id") ? sf["last-generated-id"]->str : "";
    const int64_t length = sf.count("length") ? sf["length"]->integer : 0;
    bool found = false;
    if (groups.is_array()) {
      for (const auto& g : groups.elements) {
        auto gf = Fields(g);
        if (!gf.count("name") || gf["name"]->str != kGroup) continue;
        found = true;
        out.pending += gf.count("pending") ? gf["pending"]->integer : 0;
        if (!gf.count("last-delivered-id") || gf["last-delivered-id"]->str != last) ++out.streams_behind;
      }
    }
    if (!found && length > 0) ++out.streams_behind;
  }
  return out;
}

// Entries delivered to billing and not acknowledged whose event was applied
// from that very entry ({billing}:applied holds the entry id): a kill landed
// between a ledger step and its XACK, so the next process must recognise the
// redelivered event. (A statistic: equal entry ids on two streams are rare.)
absl::StatusOr<int> AppliedButPending(RedisPool& redis) {
  std::vector<std::vector<std::string>> commands;
  for (int p = 0; p < kPartitions; ++p) commands.push_back({"XPENDING", Outbox(p), kGroup, "-", "+", "1000"});
  auto pending = redis.Pipeline(commands);
  if (!pending.ok()) return pending.status();
  std::vector<std::vector<std::string>> reads;
  for (int p = 0; p < kPartitions; ++p) {
    const RedisValue& v = (*pending)[static_cast<size_t>(p)];
    if (!v.is_array()) continue;
    for (const auto& e : v.elements) {
      if (!e.elements.empty()) reads.push_back({"XRANGE", Outbox(p), e.elements[0].str, e.elements[0].str});
    }
  }
  if (reads.empty()) return 0;
  auto entries = redis.Pipeline(reads);
  if (!entries.ok()) return entries.status();
  std::vector<std::vector<std::string>> checks;
  std::vector<std::string> entry_ids;
  for (const auto& r : *entries) {
    if (r.elements.size() != 1 || r.elements[0].elements.size() != 2) continue;
    const auto& fields = r.elements[0].elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      bk::BookingEvent e;
      if (fields[i].str == "payload" && e.ParseFromString(fields[i + 1].str)) {
        checks.push_back({"HGET", "{billing}:applied", e.header().event_id()});
        entry_ids.push_back(r.elements[0].elements[0].str);
      }
    }
  }
  if (checks.empty()) return 0;
  auto applied = redis.Pipeline(checks);
  if (!applied.ok()) return applied.status();
  int n = 0;
  for (size_t i = 0; i < applied->size(); ++i) n += (*applied)[i].str == entry_ids[i] ? 1 : 0;
  return n;
}

bool Finished(const Progress& p, int64_t billable) {
  return p.applied >= billable && p.pending == 0 && p.streams_behind == 0;
}

// The stored documents of one kind ("charge", "posting"), by id, read via the
// index. Index members without a readable document go to `broken`;
// `key_count` counts the document keys (a document outside the index shows
// up as a difference).
template <typename T>
absl::StatusOr<std::map<std::string, T>> LoadDocs(RedisPool& redis, const std::string& kind,
                                                  int64_t* key_count, std::vector<std::string>* broken) {
  auto members = redis.Command({"ZRANGE", absl::StrCat("{billing}:", kind, "s"), "0", "-1"});
  if (!members.ok()) return members.status();
  std::vector<std::string> ids;
  for (const auto& m : members->elements) ids.push_back(m.str.substr(m.str.find('|') + 1));
  std::map<std::string, T> out;
  for (size_t from = 0; from < ids.size(); from += 500) {
    std::vector<std::vector<std::string>> commands;
    for (size_t i = from; i < std::min(ids.size(), from + 500); ++i) {
      commands.push_back({"HGET", absl::StrCat("{billing}:", kind, ":", ids[i]), "d"});
    }
    auto replies = redis.Pipeline(commands);
    if (!replies.ok()) return replies.status();
    for (size_t i = 0; i < replies->size(); ++i) {
      const std::string& id = ids[from + i];
      T doc;
      if ((*replies)[i].is_nil() || !doc.ParseFromString((*replies)[i].str)) {
        broken->push_back(absl::StrCat(kind, " ", id, " is indexed but missing or unreadable"));
      } else if (!out.emplace(id, std::move(doc)).second) {
        broken->push_back(absl::StrCat(kind, " ", id, " is indexed twice"));
      }
    }
  }
  auto keys = redis.Command({"KEYS", absl::StrCat("{billing}:", kind, ":*")});
  if (!keys.ok()) return keys.status();
  *key_count = static_cast<int64_t>(keys->elements.size());
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> HashAll(RedisPool& redis, const std::string& key) {
  auto v = redis.Command({"HGETALL", key});
  if (!v.ok()) return v.status();
  std::map<std::string, std::string> out;
  for (size_t i = 0; i + 1 < v->elements.size(); i += 2) out[v->elements[i].str] = v->elements[i + 1].str;
  return out;
}

// Every account's ledger lines without their posting time, sorted.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> AccountLines(RedisPool& redis) {
  auto keys = redis.Command({"KEYS", "{billing}:acct:*"});
  if (!keys.ok()) return keys.status();
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& k : keys->elements) {
    auto lines = redis.Command({"LRANGE", k.str, "0", "-1"});
    if (!lines.ok()) return lines.status();
    auto& mine = out[k.str];
    for (const auto& l : lines->elements) mine.push_back(l.str.substr(l.str.find('|') + 1));
    std::sort(mine.begin(), mine.end());
  }
  return out;
}

// charge name -> number of ChargePosted events for it on {billing}:outbox.
absl::StatusOr<std::map<std::string, int>> ChargePostedCounts(RedisPool& redis, int64_t* other_events) {
  auto entries = redis.Command({"XRANGE", "{billing}:outbox", "-", "+"});
  if (!entries.ok()) return entries.status();
  std::map<std::string, int> out;
  *other_events = 0;
  for (const auto& entry : entries->elements) {
    if (entry.elements.size() != 2) continue;
    const auto& fields = entry.elements[1].elements;
    bv1::BillingEvent e;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "payload" && !e.ParseFromString(fields[i + 1].str)) {
        return absl::DataLossError("unreadable billing event " + entry.elements[0].str);
      }
    }
    if (e.has_charge_posted()) {
      ++out[e.charge_posted().charge().name()];
    } else {
      ++*other_events;
    }
  }
  return out;
}

std::string MoneyText(const tv1::Money& m) {
  return m.currency_code().empty() && m.amount_minor() == 0 ? "-" : absl::StrCat(m.amount_minor(), " ", m.currency_code());
}

std::string DescribeCharge(const bv1::Charge& c) {
  return absl::StrCat(c.name(), " ", bv1::FeeKind_Name(c.fee_kind()), " amount ", MoneyText(c.amount()),
                      " payable ", MoneyText(c.payable_amount()), " base ", MoneyText(c.base_amount()), " billed ",
                      absl::FormatDuration(FromProto(c.billed_duration())), " posting ", c.posting());
}

// Charges and postings compared without the times they were made at.
bool SameIgnoringTimes(const google::protobuf::Message& a, const google::protobuf::Message& b,
                       std::string* diff) {
  MessageDifferencer d;
  const auto* desc = a.GetDescriptor();
  for (const char* f : {"create_time", "update_time"}) {
    if (const auto* field = desc->FindFieldByName(f)) d.IgnoreField(field);
  }
  d.ReportDifferencesToString(diff);
  return d.Compare(a, b);
}

// Debits equal credits, every entry in the posting's currency.
std::string PostingProblem(const bv1::Posting& p) {
  int64_t debit = 0, credit = 0;
  for (const auto& e : p.entries()) {
    for (const tv1::Money* m : {&e.debit(), &e.credit()}) {
      if (m->amount_minor() != 0 && m->currency_code() != p.currency_code()) {
        return absl::StrCat(p.name(), ": entry on ", e.account(), " in ", m->currency_code(), ", posting in ",
                            p.currency_code());
      }
    }
    debit += e.debit().amount_minor();
    credit += e.credit().amount_minor();
  }
  if (p.entries().empty()) return absl::StrCat(p.name(), ": no entries");
  if (debit != credit) return absl::StrCat(p.name(), ": debits ", debit, " != credits ", credit);
  return "";
}

// Collects failure lines, listing the first kMaxListed.
class Problems {
 public:
  explicit Problems(std::string what) : what_(std::move(what)) {}
  void Add(std::string line) {
    if (count_++ < kMaxListed) absl::StrAppend(&text_, "  ", line, "\n");
  }
  int count() const { return count_; }
  std::string Report() const {
    std::string out = absl::StrCat(count_, " ", what_, ":\n", text_);
    if (count_ > kMaxListed) absl::StrAppend(&out, "  ... and ", count_ - kMaxListed, " more\n");
    return out;
  }

 private:
  std::string what_;
  std::string text_;
  int count_ = 0;
};

class BillingCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/labshare-billing-crash-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << strerror(errno);
    log_dir_ = tmpl;
    bin_dir_ = labshare::testing::LabshareBinDir();

    for (auto* server : {&redis_crash_, &redis_reference_}) {
      auto redis = RedisServer::Start();
      ASSERT_TRUE(redis.ok()) << redis.status();
      *server = *std::move(redis);
    }
    RedisOptions options = redis_crash_->options();
    options.pool_size = 4;
    options.command_timeout = absl::Seconds(20);
    crash_ = std::make_unique<RedisPool>(options);
    options = redis_reference_->options();
    options.pool_size = 4;
    options.command_timeout = absl::Seconds(20);
    reference_ = std::make_unique<RedisPool>(options);

    // One inventory serves both billing processes (they only read rates).
    auto inventory = ChildProcess::Start("inventory", bin_dir_ + "/labshare-inventory",
                                         labshare::testing::WithTls({"--listen=127.0.0.1:0", "--redis=" + redis_crash_->address()},
                                                                    "inventory"),
                                         log_dir_);
    ASSERT_TRUE(inventory.ok()) << inventory.status();
    inventory_process_ = *std::move(inventory);
    auto channel = labshare::testing::TlsChannel(inventory_process_->address());
    ASSERT_TRUE(channel->WaitForConnected(absl::ToChronoTime(absl::Now() + labshare::testing::kChildStartTimeout)));
    inventory_ = iv::InventoryService::NewStub(channel);
    const absl::Time now = absl::Now();
    admin_token_ = labshare::testing::Mint(Principal{"admin", "", {Role::kConsortiumAdmin}, now + absl::Minutes(55)},
                                           now - absl::Seconds(5));
    ASSERT_NO_FATAL_FAILURE(Seed());
  }

  void TearDown() override {
    std::vector<ChildProcess*> children;
    for (auto* p : {&billing_, &reference_billing_, &inventory_process_}) {
      if (*p != nullptr) children.push_back(p->get());
    }
    for (ChildProcess* p : children) p->Terminate();
    for (ChildProcess* p : children) p->WaitExit();
    if (HasFailure()) {
      std::cerr << "child logs kept in " << log_dir_ << "\n";
      for (ChildProcess* p : children) {
        std::cerr << "----- " << p->name() << " stderr tail -----\n" << p->StderrTail(3000) << "\n";
      }
    }
    billing_.reset();
    reference_billing_.reset();
    inventory_process_.reset();
    inventory_.reset();
    crash_.reset();
    reference_.reset();
    redis_crash_.reset();
    redis_reference_.reset();
    if (!HasFailure() && !log_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(log_dir_, ec);
    }
  }

  std::unique_ptr<grpc::ClientContext> Admin() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + admin_token_);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + labshare::testing::kRpcTimeout));
    return ctx;
  }

  static std::string Failed(const char* what, const grpc::Status& s) {
    return absl::StrCat(what, ": code ", static_cast<int>(s.error_code()), " ", GrpcErrorReason(s), " ",
                        s.error_message());
  }

  // owner (CORE member) owns "tem": ON_SITE, ACTUAL_TIME in 15-minute units,
  // missed fee 50 %, late cancellation fee 25 %, MEMBER rate 500.00 CNY/h;
  // lab is a GENERAL member.
  void Seed() {
    for (const auto& [id, tier] : std::vector<std::pair<std::string, std::string>>{{"owner", "CORE"},
                                                                                   {"lab", "GENERAL"}}) {
      iv::CreateOrganizationRequest r;
      r.set_organization_id(id);
      r.mutable_organization()->set_display_name(id);
      r.mutable_organization()->set_type(iv::UNIVERSITY);
      r.mutable_organization()->set_membership_state(iv::MEMBER);
      r.mutable_organization()->set_tier(tier);
      iv::Organization out;
      grpc::Status s = inventory_->CreateOrganization(Admin().get(), r, &out);
      ASSERT_TRUE(s.ok()) << Failed("CreateOrganization", s);
    }
    iv::CreateFacilityRequest f;
    f.set_facility_id("fac");
    f.mutable_facility()->set_display_name("fac");
    f.mutable_facility()->set_owner_organization("organizations/owner");
    f.mutable_facility()->mutable_access_policy()->set_allow_members(true);
    iv::Facility facility;
    grpc::Status s = inventory_->CreateFacility(Admin().get(), f, &facility);
    ASSERT_TRUE(s.ok()) << Failed("CreateFacility", s);

    iv::CreateInstrumentRequest i;
    i.set_instrument_id("tem");
    auto* in = i.mutable_instrument();
    in->set_display_name("TEM");
    in->set_owner_organization("organizations/owner");
    in->set_facility("facilities/fac");
    in->set_category("electron-microscopy");
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(100000000);
    in->set_daily_available_hours(24);
    auto* m = in->add_modes();
    m->set_mode(tv1::ON_SITE);
    auto* sr = m->mutable_slot_rules();
    *sr->mutable_min_block() = ToProto(absl::Minutes(1));
    *sr->mutable_max_block() = ToProto(absl::Hours(24));
    *sr->mutable_member_horizon() = ToProto(absl::Hours(24 * 3650));
    *sr->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 3650));
    *sr->mutable_min_notice() = ToProto(absl::ZeroDuration());
    *sr->mutable_buffer() = ToProto(absl::Minutes(30));
    *sr->mutable_no_show_grace() = ToProto(absl::Minutes(15));
    *sr->mutable_late_cancel_notice() = ToProto(absl::Hours(24));
    sr->set_billing_basis(iv::ACTUAL_TIME);
    *sr->mutable_billing_unit() = ToProto(absl::Seconds(kUnitSeconds));
    sr->set_missed_fee_bps(kMissedFeeBps);
    sr->set_late_cancel_fee_bps(kLateCancelFeeBps);
    sr->set_qualification_validity_days(0);
    iv::Instrument instrument;
    s = inventory_->CreateInstrument(Admin().get(), i, &instrument);
    ASSERT_TRUE(s.ok()) << Failed("CreateInstrument", s);

    iv::CreateRateRequest rate;
    rate.set_parent("instruments/tem");
    rate.mutable_rate()->set_mode(tv1::ON_SITE);
    rate.mutable_rate()->set_payer_class(tv1::MEMBER);
    rate.mutable_rate()->set_unit(iv::PER_HOUR);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(kHourlyMinor);
    iv::Rate rate_out;
    s = inventory_->CreateRate(Admin().get(), rate, &rate_out);
    ASSERT_TRUE(s.ok()) << Failed("CreateRate", s);
    rate_effective_ = FromProto(rate_out.effective_time());
  }

  absl::StatusOr<std::unique_ptr<ChildProcess>> StartBilling(const std::string& name, const RedisServer& redis) {
    auto child = ChildProcess::Start(name, bin_dir_ + "/labshare-billing",
                                     labshare::testing::WithTls({"--listen=127.0.0.1:0", "--redis=" + redis.address(),
                                                                 "--inventory=" + inventory_process_->address()},
                                                                "billing"),
                                     log_dir_);
    if (child.ok()) ++billing_starts_;
    return child;
  }

  // Polls until billing has consumed everything on `redis`, with a bound;
  // fails early if `process` ends on its own.
  absl::StatusOr<Progress> WaitFinished(RedisPool& redis, ChildProcess* process, int64_t billable) {
    const absl::Time deadline = absl::Now() + kConsumeTimeout;
    Progress last;
    while (true) {
      auto p = ProgressOf(redis);
      if (!p.ok()) return p.status();
      last = *p;
      if (Finished(last, billable)) return last;
      std::string how = process->ExitedEarly();
      if (!how.empty()) {
        return absl::InternalError(absl::StrCat(process->name(), " ", how, " with ", last.Describe(), "; stderr:\n",
                                                process->StderrTail(3000)));
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("billing did not finish within ",
                                                        absl::FormatDuration(kConsumeTimeout), ": ",
                                                        last.Describe(), " of ", billable, " billable"));
      }
      absl::SleepFor(kPoll);
    }
  }

  std::string log_dir_, bin_dir_, admin_token_;
  std::unique_ptr<RedisServer> redis_crash_, redis_reference_;
  std::unique_ptr<RedisPool> crash_, reference_;
  std::unique_ptr<ChildProcess> inventory_process_, billing_, reference_billing_;
  std::unique_ptr<iv::InventoryService::Stub> inventory_;
  absl::Time rate_effective_;
  int billing_starts_ = 0;
};

// Joins a thread on every way out of a scope (the thread uses the scope's
// locals).
class JoinOnExit {
 public:
  JoinOnExit(std::thread* thread, std::atomic<bool>* stop) : thread_(thread), stop_(stop) {}
  ~JoinOnExit() {
    *stop_ = true;
    Wait();
  }
  // Joins without asking the thread to stop.
  void Wait() {
    if (thread_->joinable()) thread_->join();
  }

 private:
  std::thread* thread_;
  std::atomic<bool>* stop_;
};

TEST_F(BillingCrashTest, KilledAtRandomPointsChargesLikeAnUninterruptedRun) {
  uint64_t seed = std::random_device{}();
  if (const char* env = getenv("LABSHARE_CRASH_SEED"); env != nullptr && env[0] != '\0') {
    ASSERT_TRUE(absl::SimpleAtoi(env, &seed)) << "LABSHARE_CRASH_SEED=" << env;
  }
  std::cout << "event seed " << seed << " (LABSHARE_CRASH_SEED to repeat)\n";
  std::mt19937_64 rng(seed);
  std::mt19937_64 chaos(std::random_device{}());
  const absl::Time t0 = absl::Now();

  const std::vector<SynthEvent> events = MakeEvents(rng, rate_effective_ + absl::Hours(1));
  const std::vector<Publication> pubs = MakePublications(rng, events);
  std::map<std::string, const SynthEvent*> by_id;
  int64_t billable = 0;
  for (const auto& e : events) {
    by_id[e.event_id] = &e;
    billable += e.billable ? 1 : 0;
  }

  // The reference: everything published, then one billing that is never
  // killed. It runs alongside the crash run.
  {
    absl::Status s = Publish(*reference_, pubs, 0, pubs.size());
    ASSERT_TRUE(s.ok()) << s;
  }
  {
    auto ref = StartBilling("billing-reference", *redis_reference_);
    ASSERT_TRUE(ref.ok()) << ref.status();
    reference_billing_ = *std::move(ref);
  }

  // The crash run: a quarter published up front, the rest while billing is
  // killed and restarted.
  const size_t up_front = static_cast<size_t>(static_cast<double>(pubs.size()) * kPublishedUpFront);
  {
    absl::Status s = Publish(*crash_, pubs, 0, up_front);
    ASSERT_TRUE(s.ok()) << s;
  }
  std::atomic<bool> produced{false}, stop_producer{false};
  std::mutex producer_mu;
  std::string producer_error;
  std::thread producer([&] {
    RedisOptions options = redis_crash_->options();
    options.pool_size = 1;
    options.command_timeout = absl::Seconds(20);
    RedisPool redis(options);
    for (size_t from = up_front; from < pubs.size() && !stop_producer; from += kProducerBatch) {
      absl::Status s = Publish(redis, pubs, from, std::min(pubs.size(), from + kProducerBatch));
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(producer_mu);
        producer_error = s.ToString();
        return;
      }
      absl::SleepFor(kProducerPause);  // pacing, not ordering
    }
    produced = true;
  });
  JoinOnExit join_producer(&producer, &stop_producer);

  int kills = 0, kills_with_work_left = 0, kills_between_step_and_ack = 0;
  const absl::Time kill_phase_end = absl::Now() + kKillPhase;
  std::uniform_int_distribution<int> life_ms(kMinLifeMs, kMaxLifeMs);
  int life = 0;
  while (true) {
    auto started = StartBilling(absl::StrCat("billing-", life++), *redis_crash_);
    ASSERT_TRUE(started.ok()) << started.status();
    billing_ = *std::move(started);
    auto before = ProgressOf(*crash_);
    ASSERT_TRUE(before.ok()) << before.status();
    const bool work_left = !produced || !Finished(*before, billable);
    if (!work_left || absl::Now() > kill_phase_end) break;  // this one runs to the end
    const int ms = life_ms(chaos);
    absl::SleepFor(absl::Milliseconds(ms));  // fault injection
    const std::string early = billing_->ExitedEarly();
    ASSERT_TRUE(early.empty()) << billing_->name() << " " << early << " before it was killed; stderr:\n"
                               << billing_->StderrTail(3000);
    ASSERT_EQ(kill(billing_->pid(), SIGKILL), 0) << strerror(errno);
    billing_->WaitExit();
    ++kills;
    auto after = ProgressOf(*crash_);
    ASSERT_TRUE(after.ok()) << after.status();
    if (!produced || !Finished(*after, billable)) ++kills_with_work_left;
    auto redelivered = AppliedButPending(*crash_);
    ASSERT_TRUE(redelivered.ok()) << redelivered.status();
    if (*redelivered > 0) ++kills_between_step_and_ack;
  }
  // The last process runs uninterrupted; everything gets published (the
  // producer's calls are bounded by their command timeout).
  join_producer.Wait();
  {
    std::lock_guard<std::mutex> lock(producer_mu);
    ASSERT_TRUE(producer_error.empty()) << "publishing: " << producer_error;
  }
  ASSERT_TRUE(produced);
  auto crash_done = WaitFinished(*crash_, billing_.get(), billable);
  ASSERT_TRUE(crash_done.ok()) << crash_done.status();
  // Every publication is on the streams and was read (Finished also says so).
  auto ref_done = WaitFinished(*reference_, reference_billing_.get(), billable);
  ASSERT_TRUE(ref_done.ok()) << ref_done.status();
  const absl::Duration consumed_after = absl::Now() - t0;

  std::cout << pubs.size() << " publications of " << events.size() << " events (" << billable
            << " billable); billing started " << billing_starts_ - 1 << " times on the crash run, killed "
            << kills << " times (" << kills_with_work_left << " with work left, " << kills_between_step_and_ack
            << " between a ledger step and its XACK); both runs done after "
            << absl::FormatDuration(absl::Trunc(consumed_after, absl::Milliseconds(1))) << "\n";
  EXPECT_GE(kills_with_work_left, kMinKillsWithWorkLeft)
      << "too few kills hit a billing process with work left; the test proves little";

  // ------------------------------------------------------------ charges
  int64_t crash_charge_keys = 0, ref_charge_keys = 0;
  std::vector<std::string> crash_broken, ref_broken;
  auto crash_charges = LoadDocs<bv1::Charge>(*crash_, "charge", &crash_charge_keys, &crash_broken);
  ASSERT_TRUE(crash_charges.ok()) << crash_charges.status();
  auto ref_charges = LoadDocs<bv1::Charge>(*reference_, "charge", &ref_charge_keys, &ref_broken);
  ASSERT_TRUE(ref_charges.ok()) << ref_charges.status();
  EXPECT_EQ(static_cast<int64_t>(crash_charges->size()), crash_charge_keys) << "charge documents outside the index";
  EXPECT_EQ(static_cast<int64_t>(ref_charges->size()), ref_charge_keys) << "charge documents outside the index";
  EXPECT_EQ(static_cast<int64_t>(crash_charges->size()), billable) << "crash run: one charge per billable event";
  EXPECT_EQ(static_cast<int64_t>(ref_charges->size()), billable) << "reference run: one charge per billable event";

  auto by_event = [](const std::map<std::string, bv1::Charge>& charges) {
    std::map<std::string, std::vector<const bv1::Charge*>> out;
    for (const auto& [id, c] : charges) out[c.source_event_id()].push_back(&c);
    return out;
  };
  const auto crash_by_event = by_event(*crash_charges);
  const auto ref_by_event = by_event(*ref_charges);
  Problems charge_problems("charge differences (event: expected vs actual)");
  for (const auto& entry : by_id) {
    const std::string& event_id = entry.first;
    const SynthEvent* e = entry.second;
    auto find = [&](const std::map<std::string, std::vector<const bv1::Charge*>>& m) {
      auto it = m.find(event_id);
      return it == m.end() ? std::vector<const bv1::Charge*>() : it->second;
    };
    const auto crash = find(crash_by_event);
    const auto ref = find(ref_by_event);
    const size_t want = e->billable ? 1 : 0;
    if (crash.size() != want || ref.size() != want) {
      std::string listed;
      for (const auto* c : crash) absl::StrAppend(&listed, "\n      crash: ", DescribeCharge(*c));
      for (const auto* c : ref) absl::StrAppend(&listed, "\n      reference: ", DescribeCharge(*c));
      charge_problems.Add(absl::StrCat("event ", event_id, " (", e->what, "): expected ", want,
                                       " charge(s), crash run has ", crash.size(), ", reference has ",
                                       ref.size(), listed));
      continue;
    }
    if (want == 0) continue;
    const bv1::Charge& c = *crash[0];
    const bv1::Charge& r = *ref[0];
    // By hand, from the slot rules and the rate (no subsidy pools exist).
    if (r.fee_kind() != e->fee_kind || r.amount().amount_minor() != e->amount_minor ||
        r.payable_amount().amount_minor() != e->amount_minor || r.amount().currency_code() != "CNY") {
      charge_problems.Add(absl::StrCat("event ", event_id, " (", e->what, "): expected ",
                                       bv1::FeeKind_Name(e->fee_kind), " ", e->amount_minor,
                                       " CNY payable in full; reference run charged ", DescribeCharge(r)));
    }
    if (c.fee_kind() != r.fee_kind() || c.amount().amount_minor() != r.amount().amount_minor() ||
        c.amount().currency_code() != r.amount().currency_code() ||
        c.payable_amount().amount_minor() != r.payable_amount().amount_minor()) {
      charge_problems.Add(absl::StrCat("event ", event_id, " (", e->what, "): uninterrupted ", DescribeCharge(r),
                                       " vs crash run ", DescribeCharge(c)));
      continue;
    }
    std::string diff;
    if (!SameIgnoringTimes(r, c, &diff)) {
      charge_problems.Add(absl::StrCat("event ", event_id, " (", e->what, "): charge ", c.name(),
                                       " differs from the uninterrupted run's: ", diff));
    }
  }
  for (const auto* m : {&crash_by_event, &ref_by_event}) {
    for (const auto& [event_id, charges] : *m) {
      if (!by_id.count(event_id)) {
        charge_problems.Add(absl::StrCat(m == &crash_by_event ? "crash run" : "reference run", ": ",
                                         charges.size(), " charge(s) for unknown event '", event_id, "'"));
      }
    }
  }
  EXPECT_EQ(charge_problems.count(), 0) << charge_problems.Report();

  // ------------------------------------------------------------ postings
  int64_t crash_posting_keys = 0, ref_posting_keys = 0;
  auto crash_postings = LoadDocs<bv1::Posting>(*crash_, "posting", &crash_posting_keys, &crash_broken);
  ASSERT_TRUE(crash_postings.ok()) << crash_postings.status();
  auto ref_postings = LoadDocs<bv1::Posting>(*reference_, "posting", &ref_posting_keys, &ref_broken);
  ASSERT_TRUE(ref_postings.ok()) << ref_postings.status();
  EXPECT_TRUE(crash_broken.empty()) << "crash run: " << absl::StrJoin(crash_broken, "; ");
  EXPECT_TRUE(ref_broken.empty()) << "reference: " << absl::StrJoin(ref_broken, "; ");
  EXPECT_EQ(static_cast<int64_t>(crash_postings->size()), crash_posting_keys);
  EXPECT_EQ(static_cast<int64_t>(ref_postings->size()), ref_posting_keys);
  EXPECT_EQ(crash_postings->size(), ref_postings->size());
  EXPECT_GT(crash_postings->size(), 0u);
  Problems posting_problems("posting problems");
  for (const auto* m : {&*crash_postings, &*ref_postings}) {
    for (const auto& [id, p] : *m) {
      std::string problem = PostingProblem(p);
      if (!problem.empty()) posting_problems.Add(absl::StrCat(m == &*crash_postings ? "crash run " : "reference ", problem));
    }
  }
  for (const auto& [id, r] : *ref_postings) {
    auto it = crash_postings->find(id);
    if (it == crash_postings->end()) {
      posting_problems.Add(absl::StrCat("posting ", id, " (event ", r.source_event_id(), ") missing after the crashes"));
      continue;
    }
    std::string diff;
    if (!SameIgnoringTimes(r, it->second, &diff)) {
      posting_problems.Add(absl::StrCat("posting ", id, " (event ", r.source_event_id(), ") differs: ", diff));
    }
  }
  for (const auto& [id, c] : *crash_postings) {
    if (!ref_postings->count(id)) {
      posting_problems.Add(absl::StrCat("posting ", id, " (event ", c.source_event_id(),
                                        ") only in the crash run"));
    }
  }
  for (const auto& [id, c] : *crash_charges) {
    if (c.amount().amount_minor() > 0 && !crash_postings->count(c.posting().substr(c.posting().rfind('/') + 1))) {
      posting_problems.Add(absl::StrCat("charge ", id, " links posting '", c.posting(), "' that does not exist"));
    }
  }
  EXPECT_EQ(posting_problems.count(), 0) << posting_problems.Report();

  // ------------------------------------------------------------ balances
  auto crash_bal = HashAll(*crash_, "{billing}:bal");
  ASSERT_TRUE(crash_bal.ok()) << crash_bal.status();
  auto ref_bal = HashAll(*reference_, "{billing}:bal");
  ASSERT_TRUE(ref_bal.ok()) << ref_bal.status();
  EXPECT_FALSE(ref_bal->empty());
  Problems balance_problems("balance differences (field: uninterrupted vs crash run)");
  std::set<std::string> fields;
  for (const auto* m : {&*crash_bal, &*ref_bal}) {
    for (const auto& [f, v] : *m) fields.insert(f);
  }
  for (const auto& f : fields) {
    const std::string r = ref_bal->count(f) ? ref_bal->at(f) : "(absent)";
    const std::string c = crash_bal->count(f) ? crash_bal->at(f) : "(absent)";
    if (r != c) balance_problems.Add(absl::StrCat(f, ": ", r, " vs ", c));
  }
  for (const auto* m : {&*crash_bal, &*ref_bal}) {
    std::map<std::string, int64_t> sum;  // per currency
    for (const auto& [f, v] : *m) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(v, &n)) balance_problems.Add(absl::StrCat(f, ": not a number '", v, "'"));
      sum[f.substr(f.rfind('|') + 1)] += n;
    }
    for (const auto& [currency, total] : sum) {
      if (total != 0) {
        balance_problems.Add(absl::StrCat(m == &*crash_bal ? "crash run" : "reference", ": balances in '", currency,
                                          "' sum to ", total, ", not 0"));
      }
    }
  }
  EXPECT_EQ(balance_problems.count(), 0) << balance_problems.Report();

  // ------------------------------------------------------------ account ledgers
  auto crash_lines = AccountLines(*crash_);
  ASSERT_TRUE(crash_lines.ok()) << crash_lines.status();
  auto ref_lines = AccountLines(*reference_);
  ASSERT_TRUE(ref_lines.ok()) << ref_lines.status();
  Problems line_problems("account ledger differences");
  std::set<std::string> accounts;
  for (const auto* m : {&*crash_lines, &*ref_lines}) {
    for (const auto& [k, v] : *m) accounts.insert(k);
  }
  for (const auto& a : accounts) {
    const auto r = ref_lines->count(a) ? ref_lines->at(a) : std::vector<std::string>();
    const auto c = crash_lines->count(a) ? crash_lines->at(a) : std::vector<std::string>();
    if (r != c) {
      std::vector<std::string> only_r, only_c;
      std::set_difference(r.begin(), r.end(), c.begin(), c.end(), std::back_inserter(only_r));
      std::set_difference(c.begin(), c.end(), r.begin(), r.end(), std::back_inserter(only_c));
      line_problems.Add(absl::StrCat(a, ": ", r.size(), " lines uninterrupted vs ", c.size(), " after crashes; only uninterrupted: ",
                                     only_r.empty() ? "-" : only_r[0], only_r.size() > 1 ? " ..." : "",
                                     "; only after crashes: ", only_c.empty() ? "-" : only_c[0],
                                     only_c.size() > 1 ? " ..." : ""));
    }
  }
  EXPECT_EQ(line_problems.count(), 0) << line_problems.Report();

  // ------------------------------------------------------------ billing outbox
  int64_t crash_other = 0, ref_other = 0;
  auto crash_posted = ChargePostedCounts(*crash_, &crash_other);
  ASSERT_TRUE(crash_posted.ok()) << crash_posted.status();
  auto ref_posted = ChargePostedCounts(*reference_, &ref_other);
  ASSERT_TRUE(ref_posted.ok()) << ref_posted.status();
  EXPECT_EQ(crash_other, ref_other) << "other billing events";
  Problems outbox_problems("ChargePosted problems");
  for (const auto* run : {&*crash_charges, &*ref_charges}) {
    const auto& posted = run == &*crash_charges ? *crash_posted : *ref_posted;
    const char* which = run == &*crash_charges ? "crash run" : "reference";
    for (const auto& [id, c] : *run) {
      auto it = posted.find(c.name());
      const int n = it == posted.end() ? 0 : it->second;
      if (n != 1) outbox_problems.Add(absl::StrCat(which, ": ", n, " ChargePosted for ", c.name()));
    }
    for (const auto& [name, n] : posted) {
      if (!run->count(name.substr(name.rfind('/') + 1))) {
        outbox_problems.Add(absl::StrCat(which, ": ", n, " ChargePosted for ", name, " which is not stored"));
      }
    }
  }
  EXPECT_EQ(outbox_problems.count(), 0) << outbox_problems.Report();

  // The processes still running end normally.
  for (auto* p : {&billing_, &reference_billing_}) {
    const std::string how = (*p)->Stop();
    EXPECT_EQ(how, "exited with code 0") << (*p)->name() << "; stderr:\n" << (*p)->StderrTail(3000);
  }
  std::cout << "total " << absl::FormatDuration(absl::Trunc(absl::Now() - t0, absl::Milliseconds(1))) << "\n";
}

}  // namespace
}  // namespace labshare::billing
