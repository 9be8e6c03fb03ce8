// read-bench: booking's read RPCs against the health Check of the same
// server, under the same client, in alternating rounds (issue 17's rows
// "GetBooking vs the health Check", "ListBookings, a page of 50",
// "QueryAvailability, 7 days", "SearchAvailableInstruments over the demo's
// 30 instruments").
//
//   read-bench --target=HOST:PORT --token=JWT [--tls_ca=...] [--instruments=30]
//       [--instrument_prefix=bench-ins-] [--user=bench-user] [--fill=5000]
//       [--concurrency=64] [--seconds=3] [--warmup=0.5] [--rounds=3]
//
// First fills: --fill ON_SITE bookings of one hour, one every three hours
// (8 a day), spread round-robin over --instruments instruments seeded by
// `booking-load --seed` (run_read_bench.sh starts the stack and seeds it;
// category "bench"), from now + 2 days, instrument i's shifted by i % 3
// hours (at any hour a third of them is booked). Then, per round and in this order (the order rotates
// every round), --concurrency calls in flight for --seconds each (calls
// started in the first --warmup seconds are not counted):
//   check  grpc.health.v1.Health/Check (the whole server)
//   get    GetBooking of the filled bookings, in turn
//   list   ListBookings, page_size 50, no filter (consortium_admin: all)
//   query  QueryAvailability of one instrument for 7 days (about 56
//          bookings in the range), instruments in turn
//   search SearchAvailableInstruments of category "bench" (every
//          instrument, one page), in turn: one hour free as a whole (two
//          thirds of the instruments answer) or 90 minutes inside 8 hours
//          (all answer), on the filled days
// One client thread with one completion queue and one channel, like
// booking-load. Every answer must be OK (else counted as an error and the
// first few printed). Prints per round one line per RPC, then
//   RESULT <rpc> calls_per_s=<median over rounds> ratio_to_check=<> p50_us=<> p99_us=<> errors=<>
// where the ratio is of the medians and p50/p99 are over every round.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/tls.h"
#include "grpc/health/v1/health.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50052", "HOST:PORT of labshare-booking.");
ABSL_FLAG(std::string, token, "", "Bearer token (consortium_admin).");
ABSL_FLAG(int, instruments, 30, "Instruments to fill and query (ids instrument_prefix + 0..N-1).");
ABSL_FLAG(std::string, category, "bench", "Category of the seeded instruments (search).");
ABSL_FLAG(std::string, instrument_prefix, "bench-ins-", "Instrument id prefix.");
ABSL_FLAG(std::string, user, "bench-user", "User id the bookings are for.");
ABSL_FLAG(int, fill, 5000, "Bookings to create before measuring.");
ABSL_FLAG(int, concurrency, 64, "Calls in flight.");
ABSL_FLAG(double, seconds, 3, "Measured seconds per RPC and round.");
ABSL_FLAG(double, warmup, 0.5, "Seconds at the start of each measurement not counted.");
ABSL_FLAG(int, rounds, 3, "Rounds; the order of the RPCs rotates every round.");
ABSL_FLAG(int, print_errors, 5, "How many errors to print on stderr.");
ABSL_FLAG(std::string, only, "", "Measure only these RPCs (comma-separated: check,get,list,query,search); for profiling.");

namespace {

namespace bk = labshare::booking::v1;
using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

// One RPC under load: a method and the requests it cycles through.
struct Kind {
  std::string name;
  std::string method;
  std::vector<std::string> requests;  // serialized
};

struct Result {
  double calls_per_s = 0;
  long errors = 0;
  std::vector<int64_t> lat_ns;
};

std::atomic<int> g_errors_printed{0};

struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer resp;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  int64_t start_ns = 0;
};

// Keeps `conc` calls of `kind` in flight for warmup + seconds.
Result Measure(grpc::GenericStub& stub, const Kind& kind, const std::string& auth, int conc, double warmup,
               double seconds) {
  grpc::CompletionQueue cq;
  Result r;
  const int64_t t0 = NowNs();
  const int64_t warm_end = t0 + static_cast<int64_t>(warmup * 1e9);
  const int64_t end = warm_end + static_cast<int64_t>(seconds * 1e9);
  size_t next = 0;
  int outstanding = 0;
  long counted = 0;
  auto issue = [&] {
    auto* c = new Call;
    c->ctx.AddMetadata("authorization", auth);  // the same bytes on every call, Check included
    const std::string& bytes = kind.requests[next++ % kind.requests.size()];
    grpc::Slice slice(bytes);
    grpc::ByteBuffer req(&slice, 1);
    c->start_ns = NowNs();
    c->reader = stub.PrepareUnaryCall(&c->ctx, kind.method, req, &cq);
    c->reader->StartCall();
    c->reader->Finish(&c->resp, &c->status, c);
    ++outstanding;
  };
  for (int i = 0; i < conc; ++i) issue();
  void* tag = nullptr;
  bool ok = false;
  while (outstanding > 0 && cq.Next(&tag, &ok)) {
    auto* c = static_cast<Call*>(tag);
    --outstanding;
    const int64_t t = NowNs();
    if (c->start_ns >= warm_end && t <= end) {
      if (c->status.ok()) {
        ++counted;
        r.lat_ns.push_back(t - c->start_ns);
      } else {
        ++r.errors;
        if (g_errors_printed.fetch_add(1) < absl::GetFlag(FLAGS_print_errors)) {
          fprintf(stderr, "error: %s: code %d reason '%s' %s\n", kind.name.c_str(), static_cast<int>(c->status.error_code()),
                  labshare::GrpcErrorReason(c->status).c_str(), c->status.error_message().c_str());
        }
      }
    }
    delete c;
    if (t < end) issue();
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  r.calls_per_s = static_cast<double>(counted) / seconds;
  return r;
}

double Pct(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())));
  return static_cast<double>(v[i]) / 1000.0;
}

// Creates the bookings (64 in flight); returns their names.
std::vector<std::string> Fill(const std::shared_ptr<grpc::Channel>& channel, const std::string& auth,
                              const std::vector<std::string>& instruments, int64_t base_s, int n) {
  auto stub = bk::BookingService::NewStub(channel);
  grpc::CompletionQueue cq;
  struct Create {
    grpc::ClientContext ctx;
    bk::CreateBookingRequest req;
    bk::Booking resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<bk::Booking>> reader;
  };
  const std::string run = absl::StrCat(absl::ToUnixNanos(absl::Now()));
  std::vector<std::string> names;
  int issued = 0, outstanding = 0;
  auto issue = [&] {
    auto* c = new Create;
    const int i = issued++;
    const size_t ins = static_cast<size_t>(i) % instruments.size();
    const int64_t k = i / static_cast<int64_t>(instruments.size());  // its place on the instrument
    bk::Booking* b = c->req.mutable_booking();
    b->set_instrument(instruments[ins]);
    b->set_mode(labshare::type::v1::ON_SITE);
    b->set_user("users/" + absl::GetFlag(FLAGS_user));
    const int64_t start = base_s + k * 3 * 3600 + static_cast<int64_t>(ins % 3) * 3600;
    b->mutable_reserved_interval()->mutable_start_time()->set_seconds(start);
    b->mutable_reserved_interval()->mutable_end_time()->set_seconds(start + 3600);
    c->req.set_request_id(absl::StrCat("read-bench-", run, "-", i));
    c->ctx.AddMetadata("authorization", auth);
    c->reader = stub->PrepareAsyncCreateBooking(&c->ctx, c->req, &cq);
    c->reader->StartCall();
    c->reader->Finish(&c->resp, &c->status, c);
    ++outstanding;
  };
  while (issued < n && outstanding < 64) issue();
  void* tag = nullptr;
  bool ok = false;
  while (outstanding > 0 && cq.Next(&tag, &ok)) {
    auto* c = static_cast<Create*>(tag);
    --outstanding;
    if (c->status.ok()) {
      names.push_back(c->resp.name());
    } else if (g_errors_printed.fetch_add(1) < absl::GetFlag(FLAGS_print_errors)) {
      fprintf(stderr, "fill: CreateBooking: code %d reason '%s' %s\n", static_cast<int>(c->status.error_code()),
              labshare::GrpcErrorReason(c->status).c_str(), c->status.error_message().c_str());
    }
    delete c;
    if (issued < n) issue();
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string token = absl::GetFlag(FLAGS_token);
  if (token.empty()) {
    fprintf(stderr, "--token is required (a consortium_admin token)\n");
    return 2;
  }
  const std::string auth = "Bearer " + token;
  const int conc = absl::GetFlag(FLAGS_concurrency);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const double seconds = absl::GetFlag(FLAGS_seconds), warmup = absl::GetFlag(FLAGS_warmup);
  const int n_instruments = absl::GetFlag(FLAGS_instruments);
  if (conc < 1 || rounds < 1 || seconds <= 0 || warmup < 0 || n_instruments < 1 || absl::GetFlag(FLAGS_fill) < 1) {
    fprintf(stderr, "need --concurrency, --rounds, --seconds, --instruments, --fill > 0 and --warmup >= 0\n");
    return 2;
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto made = labshare::MakeChannelWithFiles(absl::GetFlag(FLAGS_target), labshare::TlsFilesFromFlags(), args);
  if (!made.ok()) {
    fprintf(stderr, "%s\n", std::string(made.status().message()).c_str());
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel = *made;
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
    fprintf(stderr, "connect to %s failed\n", absl::GetFlag(FLAGS_target).c_str());
    return 1;
  }
  std::vector<std::string> instruments;
  for (int i = 0; i < n_instruments; ++i) {
    instruments.push_back(absl::StrCat("instruments/", absl::GetFlag(FLAGS_instrument_prefix), i));
  }
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  const int64_t base_s = (now_s / 3600 + 1) * 3600 + 2 * 86400;
  {
    // Every instrument measured must be seeded (booking-load --seed with the
    // same --instruments): else the fill and the rates measure errors.
    auto booking = bk::BookingService::NewStub(channel);
    for (const auto& in : instruments) {
      bk::QueryAvailabilityRequest r;
      r.set_instrument(in);
      r.mutable_range()->mutable_start_time()->set_seconds(base_s);
      r.mutable_range()->mutable_end_time()->set_seconds(base_s + 3600);
      bk::QueryAvailabilityResponse a;
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", auth);
      grpc::Status s = booking->QueryAvailability(&ctx, r, &a);
      if (!s.ok()) {
        fprintf(stderr,
                "%s is not usable (code %d: %s): seed --instruments=%d with the same --instrument_prefix "
                "(run_read_bench.sh: INSTRUMENTS mismatch?)\n",
                in.c_str(), static_cast<int>(s.error_code()), s.error_message().c_str(), n_instruments);
        return 1;
      }
    }
  }
  const int64_t t_fill = NowNs();
  std::vector<std::string> names = Fill(channel, auth, instruments, base_s, absl::GetFlag(FLAGS_fill));
  fprintf(stderr, "filled %zu bookings in %.1f s; loadavg %s\n", names.size(), static_cast<double>(NowNs() - t_fill) / 1e9,
          LoadAvg().c_str());
  if (names.empty()) return 1;

  std::vector<Kind> kinds(5);
  kinds[0].name = "check";
  kinds[0].method = "/grpc.health.v1.Health/Check";
  kinds[0].requests.push_back(grpc::health::v1::HealthCheckRequest().SerializeAsString());
  kinds[1].name = "get";
  kinds[1].method = "/labshare.booking.v1.BookingService/GetBooking";
  for (const auto& name : names) {
    bk::GetBookingRequest r;
    r.set_name(name);
    kinds[1].requests.push_back(r.SerializeAsString());
  }
  kinds[2].name = "list";
  kinds[2].method = "/labshare.booking.v1.BookingService/ListBookings";
  {
    bk::ListBookingsRequest r;
    r.set_page_size(50);
    kinds[2].requests.push_back(r.SerializeAsString());
  }
  kinds[3].name = "query";
  kinds[3].method = "/labshare.booking.v1.BookingService/QueryAvailability";
  for (const auto& in : instruments) {
    bk::QueryAvailabilityRequest r;
    r.set_instrument(in);
    r.set_mode(labshare::type::v1::ON_SITE);
    r.mutable_range()->mutable_start_time()->set_seconds(base_s);
    r.mutable_range()->mutable_end_time()->set_seconds(base_s + 7 * 86400);
    kinds[3].requests.push_back(r.SerializeAsString());
  }
  kinds[4].name = "search";
  kinds[4].method = "/labshare.booking.v1.BookingService/SearchAvailableInstruments";
  const int64_t filled_days = std::max<int64_t>(1, absl::GetFlag(FLAGS_fill) / n_instruments / 8);
  for (int64_t i = 0; i < 24; ++i) {
    const int64_t day = base_s + (i % filled_days) * 86400;
    bk::SearchAvailableInstrumentsRequest r;
    r.set_category(absl::GetFlag(FLAGS_category));
    r.set_mode(labshare::type::v1::ON_SITE);
    if (i % 2 == 0) {  // one hour, free as a whole
      r.mutable_range()->mutable_start_time()->set_seconds(day + (i % 24) * 3600);
      r.mutable_range()->mutable_end_time()->set_seconds(day + (i % 24) * 3600 + 3600);
    } else {  // 90 minutes inside 8 hours
      r.mutable_range()->mutable_start_time()->set_seconds(day + 8 * 3600);
      r.mutable_range()->mutable_end_time()->set_seconds(day + 16 * 3600);
      r.mutable_min_duration()->set_seconds(90 * 60);
    }
    kinds[4].requests.push_back(r.SerializeAsString());
  }

  {
    // What the search requests answer (that they find something).
    auto booking = bk::BookingService::NewStub(channel);
    for (size_t i = 0; i < 2 && i < kinds[4].requests.size(); ++i) {
      bk::SearchAvailableInstrumentsRequest r;
      r.ParseFromString(kinds[4].requests[i]);
      bk::SearchAvailableInstrumentsResponse found;
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", auth);
      grpc::Status s = booking->SearchAvailableInstruments(&ctx, r, &found);
      fprintf(stderr, "search request %zu (%s): code %d, %d instruments\n", i,
              r.has_min_duration() ? "90 min inside 8 h" : "one hour as a whole", static_cast<int>(s.error_code()),
              found.instruments_size());
    }
  }
  grpc::GenericStub stub(channel);
  std::map<std::string, std::vector<double>> rates;
  std::map<std::string, std::vector<int64_t>> lat;
  std::map<std::string, long> errors;
  for (int round = 0; round < rounds; ++round) {
    for (size_t j = 0; j < kinds.size(); ++j) {
      const Kind& kind = kinds[(j + static_cast<size_t>(round)) % kinds.size()];
      const std::string only = absl::GetFlag(FLAGS_only);
      if (!only.empty() && only.find(kind.name) == std::string::npos) continue;
      const std::string load = LoadAvg();
      Result r = Measure(stub, kind, auth, conc, warmup, seconds);
      std::sort(r.lat_ns.begin(), r.lat_ns.end());
      printf("round %d %-6s calls_per_s=%.0f p50_us=%.0f p99_us=%.0f errors=%ld loadavg %s\n", round + 1,
             kind.name.c_str(), r.calls_per_s, Pct(r.lat_ns, 50), Pct(r.lat_ns, 99), r.errors, load.c_str());
      fflush(stdout);
      rates[kind.name].push_back(r.calls_per_s);
      lat[kind.name].insert(lat[kind.name].end(), r.lat_ns.begin(), r.lat_ns.end());
      errors[kind.name] += r.errors;
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double check = rates["check"].empty() ? 0 : median(rates["check"]);
  for (const auto& kind : kinds) {
    if (rates[kind.name].empty()) continue;
    auto& l = lat[kind.name];
    std::sort(l.begin(), l.end());
    const double m = median(rates[kind.name]);
    printf("RESULT %-6s calls_per_s=%.0f ratio_to_check=%.3f p50_us=%.0f p99_us=%.0f errors=%ld\n", kind.name.c_str(), m,
           check > 0 ? m / check : 0.0, Pct(l, 50), Pct(l, 99), errors[kind.name]);
  }
  printf("loadavg at the end: %s\n", LoadAvg().c_str());
  return 0;
}
