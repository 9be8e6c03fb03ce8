// usage-bench: ingest and query cost of the usage figures at consortium scale.
//
// Registers --instruments instruments (InstrumentChanged events folded into
// UsageFigures; --versions each, the earlier ones of 2025), then generates
// --events synthetic booking and billing events of one year (2026,
// Asia/Shanghai): per session a BookingCreated
// (CONFIRMED), a BookingCheckedOut (1..3 h, within one day) and a
// ChargePosted with IncomeFigures. They are XADDed to {booking}:outbox and
// {billing}:outbox (not timed) and consumed with consumer group "usage"
// (XREADGROUP COUNT --batch, alternating streams) into the audit chain
// (signed with an Ed25519 key unless --sign=false) and the figures:
//   the first --per_event events as labshare-usage does today: ApplyEvent
//     (AuditChain::Append, then UsageFigures::Fold) and one XACK per event;
//   the rest batched: ApplyEvents (AuditChain::AppendBatch, one Lua step
//     per batch, and UsageFigures::FoldBatch) and one XACK per batch.
// Then times, alternating --repeat rounds of the reference computation
// (counters and served sets, set_use_aggregates(false)) and the aggregates:
//   GetUsageFigures over the whole year for all instruments,
//   QueryUsage by month grouped by instrument (first page of 500 rows; the
//     whole year is computed for it),
//   GetAnnualReport (first page: summaries and assessments).
// Last, the memory of the aggregates and of the counters and sets (MEMORY
// USAGE of every key), and the time of one rebuild of the year and of a
// month (the steps the migration and an attribute change run: their number,
// and the longest single step from SLOWLOG; --rebuild_chunk).
// Prints RESULT lines. Starts its own redis-server unless --redis is given
// (that Redis is FLUSHALLed!).
//
//   usage-bench [--redis=HOST:PORT] [--events=1000000] [--instruments=200] [--versions=1] [--batch=256]
#include <openssl/evp.h>
#include <sys/resource.h>
#include <openssl/pem.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/clock.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

ABSL_FLAG(std::string, redis, "", "HOST:PORT of a Redis to use (FLUSHALLed); empty: start one.");
ABSL_FLAG(int, events, 1000000, "Booking and billing events to fold.");
ABSL_FLAG(int, instruments, 200, "Instruments.");
ABSL_FLAG(int, organizations, 30, "Organisations.");
ABSL_FLAG(int, versions, 1,
          "Versions per instrument (InstrumentChanged): the current one and versions - 1 earlier ones of 2025 that "
          "only rename it (the history every query reads).");
ABSL_FLAG(int, per_event, 50000, "Events applied one by one (ApplyEvent + XACK each) before the batched part.");
ABSL_FLAG(int, batch, 256, "XREADGROUP COUNT, and events per ApplyEvents call.");
ABSL_FLAG(std::string, parts, "both",
          "What the batched part applies: both (ApplyEvents), audit (AppendBatch only) or fold (FoldBatch only), "
          "to see where the time goes.");
ABSL_FLAG(bool, sign, true, "Sign the audit chain's head (Ed25519), as the service does.");
ABSL_FLAG(int, slowlog_us, 5000, "SLOWLOG threshold (microseconds) during the batched ingest.");
ABSL_FLAG(int, rebuild_chunk, 1024,
          "Source entries per rebuild step (served-set members, counter fields); 0: one step for the whole period.");
ABSL_FLAG(int, repeat, 5, "Rounds of each query (reference and aggregates alternating).");

namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
namespace v1 = labshare::usage::v1;
using labshare::FromProto;
using labshare::ToProto;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::unique_ptr<labshare::testing::RedisServer> own;
  labshare::RedisOptions options;
  if (absl::GetFlag(FLAGS_redis).empty()) {
    auto s = labshare::testing::RedisServer::Start({"--save", "", "--appendonly", "no"});
    if (!s.ok()) {
      std::fprintf(stderr, "redis-server: %s\n", s.status().ToString().c_str());
      return 1;
    }
    own = *std::move(s);
    options = own->options();
  } else {
    auto o = labshare::ParseRedisAddress(absl::GetFlag(FLAGS_redis));
    if (!o.ok()) return 2;
    options = *o;
  }
  options.pool_size = 8;
  options.command_timeout = absl::Seconds(60);
  labshare::RedisPool pool(options);
  if (!pool.Command({"FLUSHALL"}).ok()) return 1;
  absl::TimeZone zone;
  absl::LoadTimeZone("Asia/Shanghai", &zone);
  labshare::FakeClock clock(absl::FromCivil(absl::CivilDay(2027, 3, 1), zone));
  labshare::usage::UsageFigures figures(&pool, &clock, zone, labshare::testing::TestPageTokens());
  if (!figures.MigrateAggregates().ok()) return 1;
  labshare::usage::AuditChainOptions audit_options;
  audit_options.clock = &clock;
  if (absl::GetFlag(FLAGS_sign)) {
    EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    auto key = labshare::usage::AuditSigningKey::FromPrivateKeyPem(std::string(data, static_cast<size_t>(n)));
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    if (!key.ok()) return 1;
    audit_options.signing_key = *key;
  }
  labshare::usage::AuditChain audit(&pool, labshare::testing::TestPageTokens(), audit_options);
  const int n_instr = absl::GetFlag(FLAGS_instruments), n_org = absl::GetFlag(FLAGS_organizations);
  const absl::Time year_start = absl::FromCivil(absl::CivilDay(2026, 1, 1), zone);

  // Organisations and instruments.
  int64_t id = 0;
  auto fold = [&](const char* source, const std::string& payload) {
    labshare::StreamEvent e;
    e.payload = payload;
    return figures.Fold(source, e);
  };
  for (int o = 0; o < n_org; ++o) {
    iv::InventoryEvent e;
    e.mutable_header()->set_event_id(absl::StrCat("inv", ++id));
    auto* org = e.mutable_organization_changed()->mutable_organization();
    org->set_name(absl::StrCat("organizations/o", o));
    org->set_display_name(absl::StrCat("Org ", o));
    org->set_size_class(static_cast<iv::SizeClass>(1 + o % 4));
    if (!fold("inventory", e.SerializeAsString()).ok()) return 1;
  }
  for (int i = 0; i < n_instr; ++i) {
    // --versions - 1 earlier versions (renamed, in 2025), then the current one.
    for (int k = absl::GetFlag(FLAGS_versions) - 1; k >= 0; --k) {
      iv::InventoryEvent e;
      e.mutable_header()->set_event_id(absl::StrCat("inv", ++id));
      auto* in = e.mutable_instrument_changed()->mutable_instrument();
      in->set_name(absl::StrCat("instruments/i", i));
      in->set_display_name(k == 0 ? absl::StrCat("Instrument ", i) : absl::StrCat("Instrument ", i, " (", k, ")"));
      if (k > 0) *in->mutable_update_time() = ToProto(year_start - absl::Hours(24 * k));
      in->set_owner_organization(absl::StrCat("organizations/o", i % n_org));
      in->set_facility(absl::StrCat("facilities/f", i % 10));
      in->set_category(absl::StrCat("category-", i % 7));
      in->mutable_original_value()->set_currency_code("CNY");
      in->mutable_original_value()->set_amount_minor(int64_t{100000000} * (1 + i % 50));
      in->set_daily_available_hours(24);
      *in->mutable_create_time() = ToProto(year_start);
      if (!fold("inventory", e.SerializeAsString()).ok()) return 1;
    }
  }

  // The events, generated before timing: 3 per session.
  const int n_events = absl::GetFlag(FLAGS_events);
  std::vector<std::pair<const char*, std::string>> events;
  events.reserve(static_cast<size_t>(n_events));
  std::mt19937_64 rng(42);
  const labshare::type::v1::SharingMode modes[] = {labshare::type::v1::ON_SITE, labshare::type::v1::ON_SITE,
                                                   labshare::type::v1::ON_SITE, labshare::type::v1::TECHNICAL_SERVICE,
                                                   labshare::type::v1::JOINT_RESEARCH};
  for (int64_t s = 0; static_cast<int>(events.size()) < n_events; ++s) {
    const int instr = static_cast<int>(rng() % static_cast<uint64_t>(n_instr));
    const int org = static_cast<int>(rng() % static_cast<uint64_t>(n_org));
    const auto mode = modes[rng() % 5];
    const absl::Time start = year_start + absl::Hours(static_cast<int64_t>(rng() % 365) * 24 + 8 +
                                                      static_cast<int64_t>(rng() % 12));
    const absl::Time end = start + absl::Minutes(60 + static_cast<int64_t>(rng() % 121));
    bk::Booking b;
    b.set_name(absl::StrCat("bookings/b", s));
    b.set_instrument(absl::StrCat("instruments/i", instr));
    b.set_mode(mode);
    b.set_payer_organization(absl::StrCat("organizations/o", org));
    b.set_user(absl::StrCat("users/u", org, "-", rng() % 10));
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(end);
    b.set_state(bk::Booking::CONFIRMED);
    bk::BookingEvent created;  // created straight into CONFIRMED
    created.mutable_header()->set_event_id(absl::StrCat("c", s));
    *created.mutable_booking_created()->mutable_booking() = b;
    events.emplace_back("booking", created.SerializeAsString());
    *b.mutable_session()->mutable_start_time() = ToProto(start);
    *b.mutable_session()->mutable_end_time() = ToProto(end);
    bk::BookingEvent out;
    out.mutable_header()->set_event_id(absl::StrCat("o", s));
    *out.mutable_booking_checked_out()->mutable_booking() = b;
    events.emplace_back("booking", out.SerializeAsString());
    bl::BillingEvent charge;
    charge.mutable_header()->set_event_id(absl::StrCat("ch", s));
    auto* f = charge.mutable_charge_posted()->mutable_income();
    f->set_owner_organization(absl::StrCat("organizations/o", instr % n_org));
    f->set_instrument(b.instrument());
    f->set_mode(mode);
    *f->mutable_effective_time() = ToProto(end);
    f->set_currency_code("CNY");
    if (org != instr % n_org) {
      auto* share = f->add_shares();
      share->set_payer_organization(b.payer_organization());
      share->set_share_bps(10000);
      share->mutable_service_income()->set_currency_code("CNY");
      share->mutable_service_income()->set_amount_minor(50000 + static_cast<int64_t>(rng() % 100000));
      share->mutable_subsidised()->set_currency_code("CNY");
      share->mutable_subsidised()->set_amount_minor(org % 4 == 2 ? 10000 : 0);
    }
    events.emplace_back("billing", charge.SerializeAsString());
  }
  events.resize(static_cast<size_t>(n_events));

  // Into the outboxes (not timed), then consumed.
  const std::map<std::string, std::string> stream_of = {{"booking", "{booking}:outbox"},
                                                        {"billing", "{billing}:outbox"}};
  const std::map<std::string, std::string> type_of = {{"booking", "labshare.booking.v1.BookingEvent"},
                                                      {"billing", "labshare.billing.v1.BillingEvent"}};
  for (size_t i = 0; i < events.size(); i += 1000) {
    std::vector<std::vector<std::string>> cmds;
    for (size_t j = i; j < std::min(events.size(), i + 1000); ++j) {
      cmds.push_back({"XADD", stream_of.at(events[j].first), "*", "type", type_of.at(events[j].first), "payload",
                      events[j].second});
    }
    if (!pool.Pipeline(cmds).ok()) return 1;
  }
  for (const auto& [source, stream] : stream_of) {
    if (!pool.Command({"XGROUP", "CREATE", stream, "usage", "0"}).ok()) return 1;
  }
  const size_t total = events.size();
  events.clear();
  events.shrink_to_fit();
  const int batch = absl::GetFlag(FLAGS_batch);
  // Reads up to `batch` entries of `stream`; false when it is drained.
  auto read = [&](const std::string& stream, std::vector<labshare::StreamEvent>* out) {
    out->clear();
    auto v = pool.Command({"XREADGROUP", "GROUP", "usage", "bench", "COUNT", std::to_string(batch), "STREAMS", stream,
                           ">"});
    if (!v.ok() || v->is_nil() || v->elements.empty()) return false;
    for (const auto& entry : v->elements[0].elements[1].elements) {
      labshare::StreamEvent e;
      e.stream_id = entry.elements[0].str;
      e.type = entry.elements[1].elements[1].str;
      e.payload = entry.elements[1].elements[3].str;
      out->push_back(std::move(e));
    }
    return !out->empty();
  };
  // CPU seconds of the redis-server (INFO cpu) and of this process.
  auto redis_cpu = [&] {
    auto v = pool.Command({"INFO", "cpu"});
    double total = 0;
    if (!v.ok()) return total;
    for (const char* field : {"used_cpu_sys:", "used_cpu_user:"}) {
      const auto at = v->str.find(field);
      if (at != std::string::npos) total += std::atof(v->str.c_str() + at + std::strlen(field));
    }
    return total;
  };
  auto own_cpu = [] {
    rusage u;
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  size_t consumed = 0;
  int failures = 0;
  std::vector<labshare::StreamEvent> got;
  // Today's path: one event at a time, one XACK each.
  const size_t per_event = std::min(total, static_cast<size_t>(absl::GetFlag(FLAGS_per_event)));
  auto t0 = Clock::now();
  const double r0 = redis_cpu(), c0 = own_cpu();
  while (consumed < per_event) {
    bool any = false;
    for (const auto& [source, stream] : stream_of) {
      if (consumed >= per_event || !read(stream, &got)) continue;
      any = true;
      for (const auto& e : got) {
        if (!labshare::usage::ApplyEvent(&audit, &figures, source, e).ok()) ++failures;
        if (!pool.Command({"XACK", stream, "usage", e.stream_id}).ok()) ++failures;
      }
      consumed += got.size();
    }
    if (!any) break;
  }
  auto t1 = Clock::now();
  const double r1 = redis_cpu(), c1 = own_cpu();
  const size_t first = consumed;
  // Where Redis spends its time in the batched part: INFO commandstats
  // (commands run by the scripts included) and the SLOWLOG of steps over
  // --slowlog_us; the client's stages timed.
  (void)pool.Command({"CONFIG", "RESETSTAT"});
  (void)pool.Command({"SLOWLOG", "RESET"});
  (void)pool.Command({"CONFIG", "SET", "slowlog-log-slower-than", std::to_string(absl::GetFlag(FLAGS_slowlog_us))});
  (void)pool.Command({"CONFIG", "SET", "slowlog-max-len", "100000"});
  double t_read = 0, t_apply = 0, t_ack = 0;
  // Batched: ApplyEvents per read, one XACK per batch.
  for (bool any = true; any;) {
    any = false;
    for (const auto& [source, stream] : stream_of) {
      const auto s0 = Clock::now();
      const bool have = read(stream, &got);
      t_read += Seconds(s0, Clock::now());
      if (!have) continue;
      any = true;
      const auto s1 = Clock::now();
      const std::string parts = absl::GetFlag(FLAGS_parts);
      if (parts == "audit") {
        for (const auto& st : audit.AppendBatch(source, got)) {
          if (!st.ok()) ++failures;
        }
      } else if (parts == "fold") {
        for (const auto& st : figures.FoldBatch(source, got)) {
          if (!st.ok()) ++failures;
        }
      } else {
        for (const auto& st : labshare::usage::ApplyEvents(&audit, &figures, source, got)) {
          if (!st.ok()) ++failures;
        }
      }
      const auto s2 = Clock::now();
      t_apply += Seconds(s1, s2);
      std::vector<std::string> ack = {"XACK", stream, "usage"};
      for (const auto& e : got) ack.push_back(e.stream_id);
      if (!pool.Command(ack).ok()) ++failures;
      t_ack += Seconds(s2, Clock::now());
      consumed += got.size();
    }
  }
  auto t2 = Clock::now();
  const double r2 = redis_cpu(), c2 = own_cpu();
  {
    const double n = static_cast<double>(std::max<size_t>(consumed - first, 1));
    std::printf("RESULT ingest_stages wall_us_per_event read=%.2f apply=%.2f ack=%.2f\n", t_read * 1e6 / n,
                t_apply * 1e6 / n, t_ack * 1e6 / n);
    auto stats = pool.Command({"INFO", "commandstats"});
    if (stats.ok()) {
      // cmdstat_hset:calls=1,usec=2,usec_per_call=2.00,...
      for (absl::string_view line : absl::StrSplit(stats->str, absl::ByAnyChar("\r\n"), absl::SkipEmpty())) {
        if (!absl::ConsumePrefix(&line, "cmdstat_")) continue;
        const auto colon = line.find(':');
        const auto calls_at = line.find("calls="), usec_at = line.find(",usec=");
        if (colon == absl::string_view::npos || calls_at == absl::string_view::npos ||
            usec_at == absl::string_view::npos) {
          continue;
        }
        const double calls = std::atof(std::string(line.substr(calls_at + 6)).c_str());
        const double usec = std::atof(std::string(line.substr(usec_at + 6)).c_str());
        std::printf("RESULT ingest_commandstats command=%s calls_per_event=%.3f usec_per_event=%.2f "
                    "usec_per_call=%.2f\n",
                    std::string(line.substr(0, colon)).c_str(), calls / n, usec / n, usec / std::max(calls, 1.0));
      }
    }
    auto slow = pool.Command({"SLOWLOG", "GET", "100000"});
    if (slow.ok()) {
      int64_t max_us = 0, total_us = 0;
      for (const auto& e : slow->elements) {
        if (e.elements.size() < 3) continue;
        max_us = std::max(max_us, static_cast<int64_t>(e.elements[2].integer));
        total_us += static_cast<int64_t>(e.elements[2].integer);
      }
      std::printf("RESULT ingest_slowlog over_us=%d entries=%zu max_us=%lld total_us=%lld\n",
                  absl::GetFlag(FLAGS_slowlog_us), slow->elements.size(), static_cast<long long>(max_us),
                  static_cast<long long>(total_us));
    }
    (void)pool.Command({"CONFIG", "SET", "slowlog-log-slower-than", "10000"});
  }
  if (failures > 0 || consumed != total) {
    std::fprintf(stderr, "%d failures, %zu of %zu events consumed\n", failures, consumed, total);
    return 1;
  }
  std::printf("RESULT ingest_per_event events=%zu seconds=%.3f events_per_s=%.0f redis_cpu_us_per_event=%.1f "
              "client_cpu_us_per_event=%.1f\n",
              first, Seconds(t0, t1), static_cast<double>(first) / Seconds(t0, t1),
              (r1 - r0) * 1e6 / static_cast<double>(std::max<size_t>(first, 1)),
              (c1 - c0) * 1e6 / static_cast<double>(std::max<size_t>(first, 1)));
  std::printf("RESULT ingest_batched batch=%d events=%zu seconds=%.3f events_per_s=%.0f redis_cpu_us_per_event=%.1f "
              "client_cpu_us_per_event=%.1f\n",
              batch, consumed - first, Seconds(t1, t2), static_cast<double>(consumed - first) / Seconds(t1, t2),
              (r2 - r1) * 1e6 / static_cast<double>(std::max<size_t>(consumed - first, 1)),
              (c2 - c1) * 1e6 / static_cast<double>(std::max<size_t>(consumed - first, 1)));
  if (first > 0 && consumed > first) {
    std::printf("RESULT ingest_ratio batched_over_per_event=%.2f\n",
                (static_cast<double>(consumed - first) / Seconds(t1, t2)) /
                    (static_cast<double>(first) / Seconds(t0, t1)));
  }
  if (auto head = audit.Head(); head.ok()) {
    std::printf("RESULT audit_head sequence=%lld signed=%d\n", static_cast<long long>(head->sequence()),
                head->signature().empty() ? 0 : 1);
  }

  labshare::Principal auditor{"bench", "", {labshare::Role::kAuditor}, absl::InfiniteFuture()};
  labshare::type::v1::Interval year;
  *year.mutable_start_time() = ToProto(year_start);
  *year.mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), zone));
  // Each report alternately from the counters and sets (reference) and from
  // the aggregates, --repeat rounds; the answers must be identical.
  auto time = [&](const char* name, const std::function<std::string()>& fn) {
    std::vector<double> ms[2];
    std::string answer[2];
    for (int i = 0; i < absl::GetFlag(FLAGS_repeat); ++i) {
      for (int agg = 0; agg < 2; ++agg) {
        figures.set_use_aggregates(agg == 1);
        auto a = Clock::now();
        std::string out = fn();
        ms[agg].push_back(Seconds(a, Clock::now()) * 1000);
        if (out.empty()) {
          std::fprintf(stderr, "%s failed\n", name);
          std::exit(1);
        }
        answer[agg] = std::move(out);
      }
    }
    figures.set_use_aggregates(true);
    for (int agg = 0; agg < 2; ++agg) {
      std::sort(ms[agg].begin(), ms[agg].end());
      std::printf("RESULT %s %s runs=%zu min_ms=%.1f median_ms=%.1f max_ms=%.1f\n", name,
                  agg ? "aggregates" : "reference", ms[agg].size(), ms[agg].front(), ms[agg][ms[agg].size() / 2],
                  ms[agg].back());
    }
    std::printf("RESULT %s speedup_median=%.1f identical=%d\n", name,
                ms[0][ms[0].size() / 2] / ms[1][ms[1].size() / 2], answer[0] == answer[1] ? 1 : 0);
    if (answer[0] != answer[1]) std::exit(3);
  };
  // An error fails the benchmark (never compared as an answer).
  auto serialized = [](const auto& out) {
    if (!out.ok()) {
      std::fprintf(stderr, "report failed: %s\n", out.status().ToString().c_str());
      std::exit(1);
    }
    return "ok:" + labshare::SerializeDeterministic(*out);
  };
  int64_t effective = 0;
  time("get_usage_figures_year_all_instruments", [&] {
    v1::GetUsageFiguresRequest r;
    *r.mutable_range() = year;
    auto out = figures.GetUsageFigures(auditor, r);
    if (out.ok()) effective = out->figures().effective_seconds();
    return serialized(out);
  });
  int rows = 0;
  time("query_usage_month_by_instrument_year", [&] {
    v1::QueryUsageRequest r;
    *r.mutable_range() = year;
    r.set_granularity(v1::PERIOD_GRANULARITY_MONTH);
    r.add_group_by(v1::DIMENSION_INSTRUMENT);
    r.set_page_size(500);
    auto out = figures.QueryUsage(auditor, r);
    if (out.ok()) rows = out->rows_size();
    return serialized(out);
  });
  int64_t idle = 0;
  time("annual_report_first_page", [&] {
    v1::GetAnnualReportRequest r;
    r.set_year(2026);
    r.set_page_size(500);
    auto out = figures.GetAnnualReport(auditor, r);
    if (out.ok()) idle = out->platform_counts().idle();
    return serialized(out);
  });
  std::printf("RESULT check effective_seconds=%lld month_rows_first_page=%d idle_instruments=%lld\n",
              static_cast<long long>(effective), rows, static_cast<long long>(idle));

  // Memory: MEMORY USAGE (every element sampled) of the keys of each layout.
  auto memory = [&](const std::vector<std::string>& patterns, int64_t* keys) {
    int64_t bytes = 0;
    *keys = 0;
    for (const auto& pattern : patterns) {
      std::string cursor = "0";
      do {
        auto page = pool.Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
        if (!page.ok()) std::exit(1);
        cursor = page->elements[0].str;
        std::vector<std::vector<std::string>> cmds;
        for (const auto& k : page->elements[1].elements) cmds.push_back({"MEMORY", "USAGE", k.str, "SAMPLES", "0"});
        if (cmds.empty()) continue;
        auto sizes = pool.Pipeline(cmds);
        if (!sizes.ok()) std::exit(1);
        for (const auto& v : *sizes) bytes += v.integer;
        *keys += static_cast<int64_t>(cmds.size());
      } while (cursor != "0");
    }
    return bytes;
  };
  int64_t agg_keys = 0, old_keys = 0;
  const int64_t agg_bytes = memory({"{usage}:a:*", "{usage}:ad:*", "{usage}:au:*", "{usage}:ao:*", "{usage}:ai:*",
                                    "{usage}:agg*", "{usage}:iattr"},
                                   &agg_keys);
  const int64_t old_bytes = memory({"{usage}:d:*", "{usage}:m:*", "{usage}:y:*", "{usage}:ud:*", "{usage}:um:*",
                                    "{usage}:uy:*"},
                                   &old_keys);
  auto info = pool.Command({"INFO", "memory"});
  long long used = 0;
  if (info.ok()) {
    const auto at = info->str.find("used_memory:");
    if (at != std::string::npos) used = std::atoll(info->str.c_str() + at + 12);
  }
  std::printf("RESULT memory aggregates_bytes=%lld keys=%lld bytes_per_event=%.1f\n", static_cast<long long>(agg_bytes),
              static_cast<long long>(agg_keys), static_cast<double>(agg_bytes) / static_cast<double>(total));
  std::printf("RESULT memory counters_and_sets_bytes=%lld keys=%lld bytes_per_event=%.1f\n",
              static_cast<long long>(old_bytes), static_cast<long long>(old_keys),
              static_cast<double>(old_bytes) / static_cast<double>(total));
  std::printf("RESULT memory used_memory=%lld (everything: outboxes, audit trail, figures)\n", used);
  // Each rebuild under SLOWLOG (every command over 1 ms): the longest single
  // step Redis ran (what blocks every other client), and the steps counted.
  const int chunk = absl::GetFlag(FLAGS_rebuild_chunk);
  figures.set_rebuild_chunk(chunk > 0 ? chunk : (1 << 30));
  for (const char* period : {"y2026", "m202606"}) {
    // Marked stale first (a period already exact is not rebuilt again).
    if (!pool.Command({"HSET", "{usage}:agg:built", period, "-1"}).ok()) return 1;
    (void)pool.Command({"CONFIG", "SET", "slowlog-log-slower-than", "1000"});
    (void)pool.Command({"CONFIG", "SET", "slowlog-max-len", "100000"});
    (void)pool.Command({"SLOWLOG", "RESET"});
    int64_t steps = 0, max_entries = 0;
    figures.set_rebuild_chunk_hook_for_testing([&](const std::string&, int64_t n) {
      ++steps;
      max_entries = std::max(max_entries, n);
      return true;
    });
    auto a = Clock::now();
    auto done = figures.RebuildPeriod(period);
    const double ms = Seconds(a, Clock::now()) * 1000;
    figures.set_rebuild_chunk_hook_for_testing(nullptr);
    if (!done.ok() || !*done) return 1;
    long long longest = 0, over = 0;
    if (auto slow = pool.Command({"SLOWLOG", "GET", "-1"}); slow.ok()) {
      for (const auto& e : slow->elements) {
        if (e.elements.size() > 3 && !e.elements[3].elements.empty() &&
            absl::StartsWithIgnoreCase(e.elements[3].elements[0].str, "EVAL")) {
          longest = std::max(longest, static_cast<long long>(e.elements[2].integer));
          ++over;
        }
      }
    }
    (void)pool.Command({"CONFIG", "SET", "slowlog-log-slower-than", "10000"});
    std::printf(
        "RESULT rebuild period=%s ms=%.1f chunk=%d steps=%lld max_entries_per_step=%lld "
        "longest_step_us=%lld steps_over_1ms=%lld\n",
        period, ms, chunk, static_cast<long long>(steps + 1), static_cast<long long>(max_entries), longest, over);
  }
  return 0;
}
