// booking-load: closed-loop load generator for BookingService.CreateBooking,
// modelled on the perf-reference client (../shared/perf-reference/client.cc)
// so that its RESULT line can be compared with the reference's.
//
// Load mode (default):
//   booking-load --target=HOST:PORT --token=JWT [--instruments=200]
//       [--instrument_prefix=bench-ins-] [--user=bench-user] [--concurrency=64]
//       [--threads=1] [--duration=10] [--warmup=2]
// Each client thread has its own CompletionQueue and its own channel (TCP
// connection) and keeps concurrency/threads CreateBooking calls in flight.
// Every call books a random ON_SITE slot on a random instrument, with a
// unique request_id, in one of two shapes:
//   sparse (default): a start on a 1-minute grid in [now + --base_days,
//     + --window_days), 5..60 minutes long: nearly every request is accepted;
//   --slots=N: the perf-reference client's key space: a start on one of N
//     slots of --slot_minutes after now + --base_days, --dur_slots slots long
//     (the reference: 1000 instruments, 1000 slots, 3 slots): calendars fill
//     up and a growing share of requests meets a taken slot. Only calls started after the warmup and finished
// before the end count. OK and FAILED_PRECONDITION SLOT_TAKEN are both
// answers (counted apart); anything else is an error (the first few are
// printed on stderr). Prints one line:
//   RESULT qps=<(ok+slot_taken)/s> ok=<n> slot_taken=<n> errors=<n> p50_us=<> p99_us=<> ...
//
// Seed mode (--seed): creates through InventoryService at --inventory the
// organisation, facility, N instruments (ids prefix + 0..N-1; ON_SITE,
// buffer --buffer_minutes, min_notice 0, horizon 3650 days, no
// qualification), the user and one MEMBER rate per instrument. ALREADY_EXISTS
// counts as done, so seeding the same Redis twice is harmless.
//
// The token (--token) must be a consortium_admin token: it books for --user.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50052", "HOST:PORT of labshare-booking.");
ABSL_FLAG(std::string, token, "", "Bearer token (consortium_admin) sent with every call.");
ABSL_FLAG(int, instruments, 200, "Number of instruments (ids instrument_prefix + 0..N-1).");
ABSL_FLAG(std::string, instrument_prefix, "bench-ins-", "Instrument id prefix.");
ABSL_FLAG(std::string, user, "bench-user", "User id the bookings are for.");
ABSL_FLAG(int, concurrency, 64, "CreateBooking calls in flight (over all threads).");
ABSL_FLAG(double, duration, 10, "Measured seconds (after the warmup).");
ABSL_FLAG(double, warmup, 2, "Warmup seconds (calls started then are not counted).");
ABSL_FLAG(int, threads, 1, "Client threads, each with its own completion queue and channel.");
ABSL_FLAG(int, base_days, 2, "Earliest booking start: now (whole minute) + this many days.");
ABSL_FLAG(int, window_days, 3000, "Booking starts spread over this many days after the base.");
ABSL_FLAG(int, slots, 0, "If > 0: starts on this many slots (the reference client's key space).");
ABSL_FLAG(int, slot_minutes, 15, "Length of a slot (--slots).");
ABSL_FLAG(int, dur_slots, 3, "Slots per booking (--slots).");
ABSL_FLAG(int, deadline_ms, 0,
          "Deadline of each CreateBooking call; 0: none, as the reference client sends none.");
ABSL_FLAG(int, print_errors, 5, "How many errors to print on stderr.");
// Seed mode.
ABSL_FLAG(bool, seed, false, "Seed inventory (--inventory) instead of generating load.");
ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory (--seed).");
ABSL_FLAG(std::string, org, "bench-org", "Organisation id (--seed).");
ABSL_FLAG(std::string, facility, "bench-fac", "Facility id (--seed).");
ABSL_FLAG(int, buffer_minutes, 0, "ON_SITE buffer of the seeded instruments (--seed).");

namespace {

namespace bk = labshare::booking::v1;
namespace inv = labshare::inventory::v1;
namespace lt = labshare::type::v1;
using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// A run id keeps request_ids unique across runs against the same Redis.
std::string RandomRunId() {
  std::random_device rd;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 12; ++i) id.push_back(kHex[rd() % 16]);
  return id;
}

// ---------------------------------------------------------------- seed

class Seeder {
 public:
  Seeder(const std::shared_ptr<grpc::Channel>& channel, std::string token, std::string run_id)
      : stub_(inv::InventoryService::NewStub(channel)),
        auth_("Bearer " + std::move(token)),
        run_id_(std::move(run_id)) {}

  template <typename Req, typename Resp>
  bool Call(const char* what,
            grpc::Status (inv::InventoryService::Stub::*method)(grpc::ClientContext*, const Req&,
                                                                 Resp*),
            Req req, const std::string& id) {
    req.set_request_id(absl::StrCat("bench-seed-", run_id_, "-", what, "-", id));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", auth_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    Resp resp;
    grpc::Status s = (stub_.get()->*method)(&ctx, req, &resp);
    if (s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return true;
    fprintf(stderr, "seed %s %s: code %d %s: %s\n", what, id.c_str(),
            static_cast<int>(s.error_code()), labshare::GrpcErrorReason(s).c_str(),
            s.error_message().c_str());
    return false;
  }

  int Run() {
    const std::string org = absl::GetFlag(FLAGS_org);
    const std::string fac = absl::GetFlag(FLAGS_facility);
    const std::string user = absl::GetFlag(FLAGS_user);
    const std::string prefix = absl::GetFlag(FLAGS_instrument_prefix);
    const int n = absl::GetFlag(FLAGS_instruments);
    int failures = 0;

    inv::CreateOrganizationRequest o;
    o.set_organization_id(org);
    o.mutable_organization()->set_display_name("Bench Organisation");
    o.mutable_organization()->set_type(inv::UNIVERSITY);
    o.mutable_organization()->set_membership_state(inv::MEMBER);
    o.mutable_organization()->set_tier("CORE");
    if (!Call("org", &inv::InventoryService::Stub::CreateOrganization, o, org)) return 1;

    inv::CreateFacilityRequest f;
    f.set_facility_id(fac);
    f.mutable_facility()->set_display_name("Bench Facility");
    f.mutable_facility()->set_owner_organization("organizations/" + org);
    f.mutable_facility()->mutable_access_policy()->set_allow_members(true);
    if (!Call("facility", &inv::InventoryService::Stub::CreateFacility, f, fac)) return 1;

    inv::CreateUserRequest u;
    u.set_user_id(user);
    u.mutable_user()->set_display_name("Bench User");
    u.mutable_user()->set_email(user + "@example.org");
    u.mutable_user()->set_organization("organizations/" + org);
    u.mutable_user()->add_roles(lt::LAB_USER);
    if (!Call("user", &inv::InventoryService::Stub::CreateUser, u, user)) return 1;

    inv::SlotRules rules;
    *rules.mutable_min_block() = labshare::ToProto(absl::Minutes(1));
    *rules.mutable_max_block() = labshare::ToProto(absl::Hours(24));
    *rules.mutable_member_horizon() = labshare::ToProto(absl::Hours(24 * 3650));
    *rules.mutable_non_member_horizon() = labshare::ToProto(absl::Hours(24 * 3650));
    *rules.mutable_min_notice() = labshare::ToProto(absl::ZeroDuration());
    *rules.mutable_buffer() = labshare::ToProto(absl::Minutes(absl::GetFlag(FLAGS_buffer_minutes)));
    rules.set_billing_basis(inv::ACTUAL_TIME);
    *rules.mutable_billing_unit() = labshare::ToProto(absl::Minutes(15));
    rules.set_qualification_validity_days(0);

    for (int i = 0; i < n; ++i) {
      const std::string id = absl::StrCat(prefix, i);
      inv::CreateInstrumentRequest r;
      r.set_instrument_id(id);
      auto* in = r.mutable_instrument();
      in->set_display_name(absl::StrCat("Bench instrument ", i));
      in->set_owner_organization("organizations/" + org);
      in->set_facility("facilities/" + fac);
      in->set_category("bench");
      in->mutable_original_value()->set_currency_code("CNY");
      in->mutable_original_value()->set_amount_minor(100000000);
      in->set_daily_available_hours(24);
      auto* m = in->add_modes();
      m->set_mode(lt::ON_SITE);
      *m->mutable_slot_rules() = rules;
      if (!Call("instrument", &inv::InventoryService::Stub::CreateInstrument, r, id)) {
        ++failures;
        continue;
      }
      inv::CreateRateRequest rate;
      rate.set_parent("instruments/" + id);
      rate.mutable_rate()->set_mode(lt::ON_SITE);
      rate.mutable_rate()->set_payer_class(lt::MEMBER);
      rate.mutable_rate()->set_unit(inv::PER_HOUR);
      rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
      rate.mutable_rate()->mutable_price()->set_amount_minor(30000);
      if (!Call("rate", &inv::InventoryService::Stub::CreateRate, rate, id)) ++failures;
    }
    printf("seeded org=%s facility=%s user=%s instruments=%s0..%s%d failures=%d\n", org.c_str(),
           fac.c_str(), user.c_str(), prefix.c_str(), prefix.c_str(), n - 1, failures);
    return failures == 0 ? 0 : 1;
  }

 private:
  std::unique_ptr<inv::InventoryService::Stub> stub_;
  std::string auth_;
  std::string run_id_;
};

// ---------------------------------------------------------------- load

struct Cfg {
  std::string auth;  // "Bearer <token>"
  std::string user_name;
  std::vector<std::string> instrument_names;
  std::string run_id;
  int64_t base_unix_s = 0;  // earliest start, whole minute
  int64_t window_minutes = 1;
  int64_t slots = 0;  // > 0: the reference's shape
  int64_t slot_minutes = 15;
  int64_t dur_slots = 3;
  int deadline_ms = 10000;
  int print_errors = 5;
  int64_t warm_end_ns = 0;
  int64_t end_ns = 0;
};

struct Call {
  grpc::ClientContext ctx;
  grpc::Status status;
  int64_t start_ns = 0;
  bk::CreateBookingRequest req;
  bk::Booking resp;
  std::unique_ptr<grpc::ClientAsyncResponseReader<bk::Booking>> reader;
};

struct Stats {
  std::vector<int64_t> lat_ns;  // ok and slot_taken answers
  long ok = 0, slot_taken = 0, errors = 0;
};

std::atomic<int> g_errors_printed{0};

void PrintError(const Cfg& cfg, const char* what, const std::string& detail) {
  if (g_errors_printed.fetch_add(1) < cfg.print_errors) {
    fprintf(stderr, "error: %s: %s\n", what, detail.c_str());
  }
}

void Worker(int tid, const std::shared_ptr<grpc::Channel>& channel, int conc, const Cfg* cfg,
            Stats* st) {
  auto stub = bk::BookingService::NewStub(channel);
  grpc::CompletionQueue cq;
  std::mt19937_64 rng(0x5eed0000u + static_cast<uint64_t>(tid) * 7919u + std::random_device{}());
  std::uniform_int_distribution<size_t> pick_instrument(0, cfg->instrument_names.size() - 1);
  std::uniform_int_distribution<int64_t> pick_start(0, cfg->window_minutes - 1);
  std::uniform_int_distribution<int64_t> pick_length(5, 60);
  std::uniform_int_distribution<int64_t> pick_slot(0, std::max<int64_t>(cfg->slots, 1) - 1);
  const std::string rid_prefix = absl::StrCat("bl-", cfg->run_id, "-", tid, "-");
  long seq = 0;
  int outstanding = 0;
  st->lat_ns.reserve(1 << 20);

  auto issue = [&] {
    Call* c = new Call;
    bk::Booking* b = c->req.mutable_booking();
    b->set_instrument(cfg->instrument_names[pick_instrument(rng)]);
    b->set_mode(lt::ON_SITE);
    b->set_user(cfg->user_name);
    int64_t start = 0, minutes = 0;
    if (cfg->slots > 0) {
      start = cfg->base_unix_s + 60 * cfg->slot_minutes * pick_slot(rng);
      minutes = cfg->slot_minutes * cfg->dur_slots;
    } else {
      start = cfg->base_unix_s + 60 * pick_start(rng);
      minutes = pick_length(rng);
    }
    b->mutable_reserved_interval()->mutable_start_time()->set_seconds(start);
    b->mutable_reserved_interval()->mutable_end_time()->set_seconds(start + 60 * minutes);
    c->req.set_request_id(absl::StrCat(rid_prefix, seq++));
    c->ctx.AddMetadata("authorization", cfg->auth);
    if (cfg->deadline_ms > 0) {
      c->ctx.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(cfg->deadline_ms));
    }
    c->start_ns = NowNs();
    c->reader = stub->PrepareAsyncCreateBooking(&c->ctx, c->req, &cq);
    c->reader->StartCall();
    c->reader->Finish(&c->resp, &c->status, c);
    ++outstanding;
  };

  for (int i = 0; i < conc; ++i) issue();
  void* tag = nullptr;
  bool cq_ok = false;
  while (outstanding > 0 && cq.Next(&tag, &cq_ok)) {
    Call* c = static_cast<Call*>(tag);
    --outstanding;
    const int64_t t = NowNs();
    if (c->start_ns >= cfg->warm_end_ns && t <= cfg->end_ns) {
      if (c->status.ok()) {
        if (c->resp.name().empty() || c->resp.state() != bk::Booking::CONFIRMED) {
          ++st->errors;
          PrintError(*cfg, "unexpected answer",
                     absl::StrCat("name '", c->resp.name(), "' state ",
                                  bk::Booking::State_Name(c->resp.state())));
        } else {
          ++st->ok;
          st->lat_ns.push_back(t - c->start_ns);
        }
      } else {
        const std::string reason = labshare::GrpcErrorReason(c->status);
        if (c->status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
            reason == "SLOT_TAKEN") {
          ++st->slot_taken;
          st->lat_ns.push_back(t - c->start_ns);
        } else {
          ++st->errors;
          PrintError(*cfg, "CreateBooking",
                     absl::StrCat("code ", static_cast<int>(c->status.error_code()), " reason '",
                                  reason, "' message '", c->status.error_message(), "'"));
        }
      }
    }
    delete c;
    if (t < cfg->end_ns) issue();
  }
  cq.Shutdown();
  while (cq.Next(&tag, &cq_ok)) {
  }
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int RunLoad() {
  Cfg cfg;
  const std::string token = absl::GetFlag(FLAGS_token);
  if (token.empty()) {
    fprintf(stderr, "--token is required (a consortium_admin token)\n");
    return 2;
  }
  cfg.auth = "Bearer " + token;
  cfg.user_name = "users/" + absl::GetFlag(FLAGS_user);
  const int n = absl::GetFlag(FLAGS_instruments);
  int conc = absl::GetFlag(FLAGS_concurrency);
  int threads = absl::GetFlag(FLAGS_threads);
  const double duration = absl::GetFlag(FLAGS_duration);
  const double warmup = absl::GetFlag(FLAGS_warmup);
  const int window_days = absl::GetFlag(FLAGS_window_days);
  if (n < 1 || conc < 1 || threads < 1 || duration <= 0 || warmup < 0 || window_days < 1) {
    fprintf(stderr, "need --instruments, --concurrency, --threads, --duration, --window_days > 0 "
                    "and --warmup >= 0\n");
    return 2;
  }
  if (threads > conc) threads = conc;
  const std::string prefix = absl::GetFlag(FLAGS_instrument_prefix);
  for (int i = 0; i < n; ++i) cfg.instrument_names.push_back(absl::StrCat("instruments/", prefix, i));
  cfg.run_id = RandomRunId();
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  cfg.base_unix_s = (now_s / 60 + 1) * 60 + int64_t{86400} * absl::GetFlag(FLAGS_base_days);
  cfg.window_minutes = int64_t{window_days} * 24 * 60;
  cfg.slots = absl::GetFlag(FLAGS_slots);
  cfg.slot_minutes = absl::GetFlag(FLAGS_slot_minutes);
  cfg.dur_slots = absl::GetFlag(FLAGS_dur_slots);
  if (cfg.slots < 0 || cfg.slot_minutes < 1 || cfg.dur_slots < 1) {
    fprintf(stderr, "need --slots >= 0, --slot_minutes and --dur_slots > 0\n");
    return 2;
  }
  cfg.deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  cfg.print_errors = absl::GetFlag(FLAGS_print_errors);

  const std::string target = absl::GetFlag(FLAGS_target);
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < threads; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a distinct TCP connection per channel
    args.SetInt("booking_load.channel_id", i);
    auto made = labshare::MakeChannelWithFiles(target, labshare::TlsFilesFromFlags(), args);  // --tls_*
    if (!made.ok()) {
      fprintf(stderr, "%s\n", std::string(made.status().message()).c_str());
      return 2;
    }
    auto ch = *made;
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
      fprintf(stderr, "connect to %s failed\n", target.c_str());
      return 1;
    }
    channels.push_back(ch);
  }

  const int64_t t0 = NowNs();
  cfg.warm_end_ns = t0 + static_cast<int64_t>(warmup * 1e9);
  cfg.end_ns = cfg.warm_end_ns + static_cast<int64_t>(duration * 1e9);
  std::vector<Stats> stats(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  double cpu0 = 0;
  std::thread cpu_sampler([&] {  // client CPU at the end of the warmup
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(0, cfg.warm_end_ns - NowNs())));
    cpu0 = CpuSeconds();
  });
  for (int i = 0; i < threads; ++i) {
    const int c = conc / threads + (i < conc % threads ? 1 : 0);
    workers.emplace_back(Worker, i, channels[static_cast<size_t>(i)], c, &cfg,
                         &stats[static_cast<size_t>(i)]);
  }
  cpu_sampler.join();
  for (auto& w : workers) w.join();
  const double cpu1 = CpuSeconds();

  Stats all;
  for (auto& s : stats) {
    all.lat_ns.insert(all.lat_ns.end(), s.lat_ns.begin(), s.lat_ns.end());
    all.ok += s.ok;
    all.slot_taken += s.slot_taken;
    all.errors += s.errors;
  }
  std::sort(all.lat_ns.begin(), all.lat_ns.end());
  auto pct = [&](double p) -> double {
    if (all.lat_ns.empty()) return 0;
    const size_t i = std::min(all.lat_ns.size() - 1,
                              static_cast<size_t>(p / 100.0 * static_cast<double>(all.lat_ns.size())));
    return static_cast<double>(all.lat_ns[i]) / 1000.0;
  };
  const long answered = all.ok + all.slot_taken;
  const double qps = static_cast<double>(answered) / duration;
  printf("RESULT qps=%.0f ok=%ld slot_taken=%ld errors=%ld p50_us=%.0f p99_us=%.0f p90_us=%.0f "
         "p999_us=%.0f max_us=%.0f conc=%d threads=%d dur=%.0fs instruments=%d "
         "client_cpu_us_per_rpc=%.1f\n",
         qps, all.ok, all.slot_taken, all.errors, pct(50), pct(99), pct(90), pct(99.9),
         all.lat_ns.empty() ? 0.0 : static_cast<double>(all.lat_ns.back()) / 1000.0, conc,
         threads, duration, n, answered ? (cpu1 - cpu0) * 1e6 / static_cast<double>(answered) : 0.0);
  fflush(stdout);
  return all.errors == 0 && answered > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "booking-load: CreateBooking load generator (or, with --seed, its inventory seeder).\n"
      "  booking-load --seed --inventory=HOST:PORT --token=JWT [--instruments=200]\n"
      "  booking-load --target=HOST:PORT --token=JWT [--concurrency=64 --duration=10 --warmup=2]");
  absl::ParseCommandLine(argc, argv);
  // As the services do (common/server.cc): Debian's Abseil would otherwise
  // check every absl::Mutex gRPC takes for lock-order cycles.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (absl::GetFlag(FLAGS_seed)) {
    if (absl::GetFlag(FLAGS_token).empty()) {
      fprintf(stderr, "--token is required (a consortium_admin token)\n");
      return 2;
    }
    auto made = labshare::MakeChannel(absl::GetFlag(FLAGS_inventory));  // --tls_*
    if (!made.ok()) {
      fprintf(stderr, "%s\n", std::string(made.status().message()).c_str());
      return 2;
    }
    auto channel = *made;
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      fprintf(stderr, "cannot reach inventory at %s\n", absl::GetFlag(FLAGS_inventory).c_str());
      return 1;
    }
    return Seeder(channel, absl::GetFlag(FLAGS_token), RandomRunId()).Run();
  }
  return RunLoad();
}
