// usage-bench: ingest and query cost of the usage figures at consortium scale.
//
// Registers --instruments instruments (InstrumentChanged events folded into
// UsageFigures), then folds --events synthetic booking and billing events of
// one year (2026, Asia/Shanghai): per session a BookingCreated (CONFIRMED), a
// BookingCheckedOut (1..3 h, within one day) and a ChargePosted with
// IncomeFigures. The first --single_events are folded by one thread, the
// rest by --threads threads. Then times, each --repeat times:
//   GetUsageFigures over the whole year for all instruments,
//   QueryUsage by month grouped by instrument (first page of 500 rows; the
//     whole year is computed for it),
//   GetAnnualReport (first page: summaries and assessments).
// Prints RESULT lines. Starts its own redis-server unless --redis is given
// (that Redis is FLUSHALLed!).
//
//   usage-bench [--redis=HOST:PORT] [--events=1000000] [--instruments=200]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/usage/usage_figures.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

ABSL_FLAG(std::string, redis, "", "HOST:PORT of a Redis to use (FLUSHALLed); empty: start one.");
ABSL_FLAG(int, events, 1000000, "Booking and billing events to fold.");
ABSL_FLAG(int, instruments, 200, "Instruments.");
ABSL_FLAG(int, organizations, 30, "Organisations.");
ABSL_FLAG(int, single_events, 200000, "Events folded by one thread before the multi-threaded part.");
ABSL_FLAG(int, threads, 4, "Threads for the multi-threaded part.");
ABSL_FLAG(int, repeat, 5, "Repetitions of each query.");

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
  options.pool_size = std::max(8, absl::GetFlag(FLAGS_threads) + 2);
  options.command_timeout = absl::Seconds(60);
  labshare::RedisPool pool(options);
  if (!pool.Command({"FLUSHALL"}).ok()) return 1;
  absl::TimeZone zone;
  absl::LoadTimeZone("Asia/Shanghai", &zone);
  labshare::FakeClock clock(absl::FromCivil(absl::CivilDay(2027, 3, 1), zone));
  labshare::usage::UsageFigures figures(&pool, &clock, zone, labshare::testing::TestPageTokens());
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
    iv::InventoryEvent e;
    e.mutable_header()->set_event_id(absl::StrCat("inv", ++id));
    auto* in = e.mutable_instrument_changed()->mutable_instrument();
    in->set_name(absl::StrCat("instruments/i", i));
    in->set_display_name(absl::StrCat("Instrument ", i));
    in->set_owner_organization(absl::StrCat("organizations/o", i % n_org));
    in->set_facility(absl::StrCat("facilities/f", i % 10));
    in->set_category(absl::StrCat("category-", i % 7));
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(int64_t{100000000} * (1 + i % 50));
    in->set_daily_available_hours(24);
    *in->mutable_create_time() = ToProto(year_start);
    if (!fold("inventory", e.SerializeAsString()).ok()) return 1;
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

  // Ingest: one thread, then several.
  const size_t single = std::min(events.size(), static_cast<size_t>(absl::GetFlag(FLAGS_single_events)));
  auto t0 = Clock::now();
  for (size_t i = 0; i < single; ++i) {
    if (!fold(events[i].first, events[i].second).ok()) {
      std::fprintf(stderr, "fold failed\n");
      return 1;
    }
  }
  auto t1 = Clock::now();
  const int threads = absl::GetFlag(FLAGS_threads);
  std::atomic<size_t> next{single};
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < events.size();) {
        if (!fold(events[i].first, events[i].second).ok()) ++failures;
      }
    });
  }
  for (auto& w : workers) w.join();
  auto t2 = Clock::now();
  if (failures > 0) {
    std::fprintf(stderr, "%d folds failed\n", failures.load());
    return 1;
  }
  const size_t multi = events.size() - single;
  std::printf("RESULT ingest_single_thread events=%zu seconds=%.3f events_per_s=%.0f\n", single, Seconds(t0, t1),
              static_cast<double>(single) / Seconds(t0, t1));
  std::printf("RESULT ingest_threads=%d events=%zu seconds=%.3f events_per_s=%.0f\n", threads, multi,
              Seconds(t1, t2), static_cast<double>(multi) / Seconds(t1, t2));
  events.clear();
  events.shrink_to_fit();

  labshare::Principal auditor{"bench", "", {labshare::Role::kAuditor}, absl::InfiniteFuture()};
  labshare::type::v1::Interval year;
  *year.mutable_start_time() = ToProto(year_start);
  *year.mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), zone));
  auto time = [&](const char* name, const std::function<bool()>& fn) {
    std::vector<double> ms;
    for (int i = 0; i < absl::GetFlag(FLAGS_repeat); ++i) {
      auto a = Clock::now();
      if (!fn()) {
        std::fprintf(stderr, "%s failed\n", name);
        std::exit(1);
      }
      ms.push_back(Seconds(a, Clock::now()) * 1000);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("RESULT %s runs=%zu min_ms=%.1f median_ms=%.1f max_ms=%.1f\n", name, ms.size(), ms.front(),
                ms[ms.size() / 2], ms.back());
  };
  int64_t effective = 0;
  time("get_usage_figures_year_all_instruments", [&] {
    v1::GetUsageFiguresRequest r;
    *r.mutable_range() = year;
    auto out = figures.GetUsageFigures(auditor, r);
    if (out.ok()) effective = out->figures().effective_seconds();
    return out.ok();
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
    return out.ok();
  });
  int64_t idle = 0;
  time("annual_report_first_page", [&] {
    v1::GetAnnualReportRequest r;
    r.set_year(2026);
    r.set_page_size(500);
    auto out = figures.GetAnnualReport(auditor, r);
    if (out.ok()) idle = out->platform_counts().idle();
    return out.ok();
  });
  std::printf("RESULT check effective_seconds=%lld month_rows_first_page=%d idle_instruments=%lld\n",
              static_cast<long long>(effective), rows, static_cast<long long>(idle));
  return 0;
}
