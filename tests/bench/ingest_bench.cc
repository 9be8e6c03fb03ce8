// ingest-bench: billing's ingest of booking events from the booking outboxes.
//
// Each round fills the 16 streams {bk:P}:outbox with --events entries of the
// shape services/booking writes (type labshare.booking.v1.BookingEvent, a
// BookingEvent with header.event_id): per session a BookingCreated
// (CONFIRMED), a BookingCheckedIn and a BookingCheckedOut (COMPLETED, with
// the session), one session in --missed_every a BookingMissed instead of the
// check-in and check-out. The payer is another organisation than the owner,
// and with --subsidy_pool a pool (no cap, funds enough) subsidises every
// charge, so every charge reads and checks the pool's funds. Then it times
// billing's consumer group "billing" draining all 16 streams, in one of
// three ways, alternating round by round:
//   old:       what billing did before batching: XREADGROUP, then per entry
//              ApplyBookingEvent and one XACK;
//   per-event: EventConsumer::PollOnce(ApplyBookingEvent): the same steps,
//              one XACK per read;
//   batch:     EventConsumer::PollBatch(ApplyBookingEvents), as the service
//              runs it (main.cc): one HMGET, several ledger steps per Lua
//              call, one XACK per read.
// Every way starts from the same ledger state (billing's keys deleted
// before each fill) and must post the same number of charges.
//
// Inventory is an in-process stub answering at once (the service asks
// labshare-inventory over gRPC: per charged event the old path pays three
// gRPC calls more, the batch path three per batch), so the figures are
// billing's own work and Redis. Starts its own redis-server (no
// persistence) unless --redis is given (that Redis is FLUSHALLed).
//
//   ingest-bench [--events=60000] [--rounds=3] [--batch=256]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_store.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

ABSL_FLAG(std::string, redis, "", "HOST:PORT of a Redis to use (FLUSHALLed); empty: start one.");
ABSL_FLAG(int, events, 60000, "Booking events per round (three per session).");
ABSL_FLAG(int, rounds, 3, "Rounds of each way, alternating.");
ABSL_FLAG(int, batch, 256, "Entries per read (ConsumerOptions::batch; the service uses 256).");
ABSL_FLAG(int, instruments, 200, "Instruments (spread over the 16 partitions).");
ABSL_FLAG(int, organizations, 30, "Organisations.");
ABSL_FLAG(int, missed_every, 10, "One session in n is missed (0: none).");
ABSL_FLAG(bool, subsidy_pool, true, "A subsidy pool subsidises every charge.");
ABSL_FLAG(std::string, modes, "old,per-event,batch", "Ways to time, comma-separated.");
ABSL_FLAG(bool, commandstats, false,
          "Print Redis's INFO commandstats per round: calls and microseconds per event of each command "
          "(commands a script runs are counted under their own names and inside the script's time).");

namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing;
namespace inv = labshare::inventory::v1;
namespace tv1 = labshare::type::v1;
using labshare::ToProto;
using SteadyClock = std::chrono::steady_clock;

constexpr int kPartitions = 16;

std::string Outbox(int p) { return absl::StrCat("{bk:", p, "}:outbox"); }

// Answers as labshare-inventory would for the fixture's "tem": ON_SITE,
// actual time in 15-minute units, 500.00 CNY per hour for members.
class StubInventory final : public bl::InventoryReader {
 public:
  absl::StatusOr<inv::LookupRateResponse> LookupRate(const inv::LookupRateRequest& r) override {
    ++calls;
    inv::LookupRateResponse out;
    auto* rate = out.mutable_rate();
    rate->set_name(r.instrument() + "/rates/member");
    rate->set_mode(r.mode());
    rate->set_payer_class(tv1::MEMBER);
    rate->set_unit(inv::PER_HOUR);
    rate->mutable_price()->set_currency_code("CNY");
    rate->mutable_price()->set_amount_minor(50000);
    return out;
  }
  absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name) override {
    ++calls;
    inv::Instrument in;
    in.set_name(name);
    in.set_category("electron-microscopy");
    auto* m = in.add_modes();
    m->set_mode(tv1::ON_SITE);
    auto* sr = m->mutable_slot_rules();
    sr->set_billing_basis(inv::ACTUAL_TIME);
    sr->set_missed_fee_bps(5000);
    sr->set_late_cancel_fee_bps(2500);
    *sr->mutable_billing_unit() = ToProto(absl::Minutes(15));
    return in;
  }
  absl::StatusOr<inv::Organization> GetOrganization(const std::string& name) override {
    ++calls;
    inv::Organization o;
    o.set_name(name);
    return o;
  }
  int64_t calls = 0;
};

// One round's entries, per partition: [type, payload].
struct Fill {
  std::vector<std::vector<std::string>> payloads = std::vector<std::vector<std::string>>(kPartitions);
  int charges = 0;
};

Fill MakeEvents(int n, std::mt19937_64& rng, absl::Time t0) {
  Fill f;
  const int instruments = absl::GetFlag(FLAGS_instruments);
  const int orgs = absl::GetFlag(FLAGS_organizations);
  const int missed_every = absl::GetFlag(FLAGS_missed_every);
  for (int s = 0; s * 3 < n; ++s) {
    const int instr = static_cast<int>(rng() % static_cast<uint64_t>(instruments));
    const int partition = instr % kPartitions;
    const int owner = instr % orgs;
    const int payer = (owner + 1 + static_cast<int>(rng() % static_cast<uint64_t>(orgs - 1))) % orgs;
    const absl::Time start = t0 + absl::Hours(s);
    bk::Booking b;
    b.set_name(absl::StrFormat("bookings/b%d-%08d", partition, s));
    b.set_instrument(absl::StrFormat("instruments/i%04d", instr));
    b.set_instrument_owner(absl::StrFormat("organizations/o%02d", owner));
    b.set_mode(tv1::ON_SITE);
    b.set_user(absl::StrFormat("users/u%05d", static_cast<int>(rng() % 5000)));
    b.set_payer_organization(absl::StrFormat("organizations/o%02d", payer));
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(2));
    *b.mutable_blocked_interval() = b.reserved_interval();
    b.set_state(bk::Booking::CONFIRMED);
    b.set_payer_class(tv1::MEMBER);
    b.set_payer_tier("GENERAL");
    b.set_purpose("bench");
    *b.mutable_create_time() = ToProto(start - absl::Hours(48));
    *b.mutable_update_time() = b.create_time();
    auto event = [&](absl::Time at) {
      bk::BookingEvent e;
      e.mutable_header()->set_event_id(labshare::NewEventId());
      *e.mutable_header()->mutable_event_time() = ToProto(at);
      e.mutable_header()->set_actor(b.user());
      return e;
    };
    std::vector<std::string>& out = f.payloads[partition];
    bk::BookingEvent created = event(start - absl::Hours(48));
    *created.mutable_booking_created()->mutable_booking() = b;
    out.push_back(created.SerializeAsString());
    if (missed_every > 0 && s % missed_every == missed_every - 1) {
      b.set_state(bk::Booking::MISSED);
      bk::BookingEvent missed = event(start + absl::Minutes(15));
      *missed.mutable_booking_missed()->mutable_booking() = b;
      out.push_back(missed.SerializeAsString());
      ++f.charges;
      continue;
    }
    const absl::Time in = start + absl::Minutes(static_cast<int>(rng() % 10));
    const absl::Time leave = start + absl::Minutes(60 + static_cast<int>(rng() % 60));
    b.set_state(bk::Booking::CHECKED_IN);
    *b.mutable_session()->mutable_start_time() = ToProto(in);
    bk::BookingEvent checked_in = event(in);
    *checked_in.mutable_booking_checked_in()->mutable_booking() = b;
    out.push_back(checked_in.SerializeAsString());
    b.set_state(bk::Booking::COMPLETED);
    *b.mutable_session()->mutable_end_time() = ToProto(leave);
    bk::BookingEvent out_ev = event(leave);
    *out_ev.mutable_booking_checked_out()->mutable_booking() = b;
    out.push_back(out_ev.SerializeAsString());
    ++f.charges;
  }
  return f;
}

bool Ok(const absl::StatusOr<labshare::RedisValue>& v, const char* what) {
  if (v.ok() && !v->is_error()) return true;
  std::fprintf(stderr, "%s: %s\n", what, v.ok() ? v->str.c_str() : v.status().ToString().c_str());
  return false;
}

// Deletes billing's keys and the outboxes, then writes the entries.
bool Prepare(labshare::RedisPool& pool, const Fill& fill, bool pool_on, bl::BillingManager& manager) {
  auto keys = pool.Command({"KEYS", "{billing}:*"});
  if (!Ok(keys, "KEYS")) return false;
  for (const auto& k : keys->elements) pool.Command({"UNLINK", k.str}).IgnoreError();
  for (int p = 0; p < kPartitions; ++p) {
    pool.Command({"DEL", Outbox(p)}).IgnoreError();
    if (!Ok(pool.Command({"XGROUP", "CREATE", Outbox(p), "billing", "0", "MKSTREAM"}), "XGROUP")) return false;
    const auto& payloads = fill.payloads[p];
    for (size_t i = 0; i < payloads.size(); i += 500) {
      std::vector<std::vector<std::string>> cmds;
      for (size_t j = i; j < std::min(payloads.size(), i + 500); ++j) {
        cmds.push_back({"XADD", Outbox(p), "*", "type", "labshare.booking.v1.BookingEvent", "payload", payloads[j]});
      }
      auto r = pool.Pipeline(cmds);
      if (!r.ok()) {
        std::fprintf(stderr, "XADD: %s\n", r.status().ToString().c_str());
        return false;
      }
    }
  }
  if (pool_on) {
    labshare::Principal admin;
    admin.user_id = "root";
    admin.roles = {labshare::Role::kConsortiumAdmin};
    labshare::billing::v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id("voucher");
    auto* sp = cp.mutable_subsidy_pool();
    sp->set_display_name("Innovation voucher");
    sp->set_currency_code("CNY");
    sp->set_percentage_bps(2000);
    auto created = manager.CreateSubsidyPool(admin, cp);
    if (!created.ok()) {
      std::fprintf(stderr, "CreateSubsidyPool: %s\n", created.status().ToString().c_str());
      return false;
    }
    labshare::billing::v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/voucher");
    top.set_request_id("fund-1");
    *top.mutable_amount() = bl::MakeMoney("CNY", 1000000000000000);
    auto topped = manager.TopUpSubsidyPool(admin, top);
    if (!topped.ok()) {
      std::fprintf(stderr, "TopUpSubsidyPool: %s\n", topped.status().ToString().c_str());
      return false;
    }
  }
  return true;
}

// The consumer before batching (common/events.cc at 5f460ef): per entry the
// handler, then one XACK.
absl::StatusOr<int> OldPoll(labshare::RedisPool& pool, const std::string& stream, int batch,
                            bl::BillingManager& manager) {
  LS_ASSIGN_OR_RETURN(labshare::RedisValue fresh,
                      pool.Command({"XREADGROUP", "GROUP", "billing", "bench", "COUNT", std::to_string(batch),
                                    "STREAMS", stream, ">"}));
  int acked = 0;
  if (fresh.type != labshare::RedisValue::Type::kArray || fresh.elements.empty()) return 0;
  for (const auto& entry : fresh.elements[0].elements[1].elements) {
    labshare::StreamEvent e;
    e.stream_id = entry.elements[0].str;
    const auto& f = entry.elements[1].elements;
    for (size_t i = 0; i + 1 < f.size(); i += 2) {
      if (f[i].str == "type") e.type = f[i + 1].str;
      if (f[i].str == "payload") e.payload = f[i + 1].str;
    }
    if (!manager.ApplyBookingEvent(e).ok()) continue;
    LS_ASSIGN_OR_RETURN(labshare::RedisValue ack, pool.Command({"XACK", stream, "billing", e.stream_id}));
    acked += static_cast<int>(ack.integer);
  }
  return acked;
}

// Redis's CPU seconds (user + sys) so far.
double RedisCpu(labshare::RedisPool& pool) {
  auto info = pool.Command({"INFO", "cpu"});
  if (!info.ok()) return 0;
  double total = 0;
  for (absl::string_view line : absl::StrSplit(info->str, '\n')) {
    for (absl::string_view key : {"used_cpu_sys:", "used_cpu_user:"}) {
      if (absl::StartsWith(line, key)) {
        double v = 0;
        if (absl::SimpleAtod(absl::StripTrailingAsciiWhitespace(line.substr(key.size())), &v)) total += v;
      }
    }
  }
  return total;
}

double OwnCpu() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int64_t Load1000() {
  double l = 0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = 0;
    std::fclose(f);
  }
  return static_cast<int64_t>(l * 100);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  labshare::SetQuietLogging(true);
  std::unique_ptr<labshare::testing::RedisServer> own;
  labshare::RedisOptions options;
  if (absl::GetFlag(FLAGS_redis).empty()) {
    auto server = labshare::testing::RedisServer::Start({"--save", "", "--appendonly", "no"});
    if (!server.ok()) {
      std::fprintf(stderr, "redis-server: %s\n", server.status().ToString().c_str());
      return 1;
    }
    own = *std::move(server);
    options = own->options();
  } else {
    const std::string a = absl::GetFlag(FLAGS_redis);
    options.host = a.substr(0, a.rfind(':'));
    options.port = std::stoi(a.substr(a.rfind(':') + 1));
  }
  options.pool_size = 4;
  options.command_timeout = absl::Seconds(120);
  labshare::RedisPool pool(options);
  pool.Command({"FLUSHALL"}).IgnoreError();
  StubInventory inventory;
  labshare::FakeClock clock(absl::FromUnixSeconds(1798761600));  // 2027-01-01
  bl::BillingStore store(&pool);
  bl::BillingManager manager(&store, &inventory, &clock, *bl::LoadBillingTimeZone("Asia/Shanghai"),
                             labshare::testing::TestPageTokens());
  const int n = absl::GetFlag(FLAGS_events);
  const int batch = absl::GetFlag(FLAGS_batch);
  const bool pool_on = absl::GetFlag(FLAGS_subsidy_pool);
  std::vector<std::string> modes = absl::StrSplit(absl::GetFlag(FLAGS_modes), ',');
  std::mt19937_64 rng(42);
  std::map<std::string, std::vector<double>> rates;
  std::printf("# ingest-bench: %d booking events per round over %d streams, batch %d, subsidy pool %s\n", n,
              kPartitions, batch, pool_on ? "on" : "off");
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (const std::string& mode : modes) {
      const Fill fill = MakeEvents(n, rng, clock.Now() - absl::Hours(24 * 365));
      size_t entries = 0;
      for (const auto& p : fill.payloads) entries += p.size();
      if (!Prepare(pool, fill, pool_on, manager)) return 1;
      pool.Command({"CONFIG", "RESETSTAT"}).IgnoreError();
      std::vector<std::unique_ptr<labshare::EventConsumer>> consumers;
      for (int p = 0; p < kPartitions; ++p) {
        labshare::ConsumerOptions o;
        o.stream = Outbox(p);
        o.group = "billing";
        o.consumer = "bench";
        o.block = absl::ZeroDuration();
        o.batch = batch;
        consumers.push_back(std::make_unique<labshare::EventConsumer>(&pool, o));
      }
      const int64_t inventory_before = inventory.calls;
      const double redis_cpu0 = RedisCpu(pool), own_cpu0 = OwnCpu();
      const auto t0 = SteadyClock::now();
      size_t acked = 0;
      while (acked < entries) {
        size_t got = 0;
        for (int p = 0; p < kPartitions; ++p) {
          absl::StatusOr<int> r;
          if (mode == "old") {
            r = OldPoll(pool, Outbox(p), batch, manager);
          } else if (mode == "per-event") {
            r = consumers[p]->PollOnce([&](const labshare::StreamEvent& e) { return manager.ApplyBookingEvent(e); });
          } else {
            r = consumers[p]->PollBatch([&](const std::vector<labshare::StreamEvent>& events) {
              return manager.ApplyBookingEvents(events);
            });
          }
          if (!r.ok()) {
            std::fprintf(stderr, "%s: %s\n", mode.c_str(), r.status().ToString().c_str());
            return 1;
          }
          got += static_cast<size_t>(*r);
        }
        if (got == 0) {
          std::fprintf(stderr, "%s: stuck at %zu of %zu entries\n", mode.c_str(), acked, entries);
          return 1;
        }
        acked += got;
      }
      const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
      const double redis_us = (RedisCpu(pool) - redis_cpu0) * 1e6 / static_cast<double>(entries);
      const double own_us = (OwnCpu() - own_cpu0) * 1e6 / static_cast<double>(entries);
      auto charges = pool.Command({"ZCARD", "{billing}:charges"});
      const int64_t posted = charges.ok() ? charges->integer : -1;
      if (posted != fill.charges) {
        std::fprintf(stderr, "%s: %lld charges posted, want %d\n", mode.c_str(), static_cast<long long>(posted),
                     fill.charges);
        return 1;
      }
      auto stats = pool.Command({"INFO", "commandstats"});
      int64_t redis_calls = 0;
      std::string per_command;
      if (stats.ok()) {
        // cmdstat_hget:calls=N,usec=U,usec_per_call=...
        for (absl::string_view line : absl::StrSplit(stats->str, '\n')) {
          const size_t at = line.find(":calls=");
          if (at == absl::string_view::npos) continue;
          int64_t c = 0, usec = 0;
          const absl::string_view rest = line.substr(at + 7);
          if (absl::SimpleAtoi(rest.substr(0, rest.find(',')), &c)) redis_calls += c;
          const size_t u = rest.find("usec=");
          if (u != absl::string_view::npos) {
            const absl::string_view us = rest.substr(u + 5);
            if (!absl::SimpleAtoi(us.substr(0, us.find(',')), &usec)) usec = 0;
          }
          absl::string_view name = line.substr(0, at);
          absl::ConsumePrefix(&name, "cmdstat_");
          if (name == "info" || name == "config|resetstat") continue;
          absl::StrAppendFormat(&per_command, "    %-14s calls/event %6.3f  us/event %6.2f\n", name,
                                static_cast<double>(c) / static_cast<double>(entries),
                                static_cast<double>(usec) / static_cast<double>(entries));
        }
      }
      const double eps = static_cast<double>(entries) / secs;
      rates[mode].push_back(eps);
      std::printf("round %d %-9s %7zu events %6d charges %8.3f s %9.0f events/s  redis commands/event %.2f  "
                  "inventory calls/event %.3f  CPU/event: redis %.1f us, billing %.1f us  load %.2f\n",
                  round + 1, mode.c_str(), entries, fill.charges, secs, eps,
                  static_cast<double>(redis_calls) / static_cast<double>(entries),
                  static_cast<double>(inventory.calls - inventory_before) / static_cast<double>(entries), redis_us,
                  own_us, static_cast<double>(Load1000()) / 100.0);
      if (absl::GetFlag(FLAGS_commandstats)) std::printf("%s", per_command.c_str());
      std::fflush(stdout);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::printf("RESULT");
  for (const std::string& mode : modes) std::printf(" %s=%.0f", mode.c_str(), median(rates[mode]));
  if (rates.count("batch") && rates.count("old")) {
    std::printf(" batch/old=%.2f", median(rates["batch"]) / median(rates["old"]));
  }
  std::printf(" events/s (median of %d rounds)\n", absl::GetFlag(FLAGS_rounds));
  return 0;
}
