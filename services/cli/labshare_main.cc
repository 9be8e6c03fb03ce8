// labshare: the command-line client of the four LabShare services.
//
//   labshare [global flags] <service> <Method> [NAME] [--field=value ...]
//   labshare [global flags] <service> <Method> --request='{"json": ...}'
//   labshare services | labshare <service> [--help] | labshare <service> <Method> --help
//
// Every RPC of inventory, booking, billing and usage is reachable: the
// request is built by reflection from --field=value flags (dotted paths into
// sub-messages, repeated fields by repeating the flag, enums by name,
// timestamps as RFC 3339, durations as "90m"/"2h"/"3600s", money in major
// units as "500.00 CNY" or "500 CNY" (both 50000 minor units; at most the
// currency's ISO 4217 digits: "1500 JPY", "1.500 KWD"; CNY when no currency
// is named), or from JSON (--request or --request_file,
// "-" for stdin). A lone positional argument fills the request's "name"
// field (or its only string field). A boolean field or flag given without a
// value is true ("--validate_only" = "--validate_only=true"; "--json").
// Answers print as a table (lists) or as "field: value" lines; --json prints
// the protobuf JSON instead (times in UTC). Money prints with its
// currency's digits ("1500.00 CNY", "1500 JPY", "1.500 KWD"). A document or
// file (a bytes field named content, data, chunk or csv: GetInvoiceDocument,
// the CSV and JSONL export streams) is written to stdout as it is, for
// `> invoice.pdf`; the answer's other fields of a unary call go to stderr as
// "field: value" lines (--json: base64 in the JSON, as protobuf JSON has it).
// Times print in RFC 3339 in the
// caller's time zone ($TZ, else the system's); in tables of resources bound
// to an instrument (bookings, leases, orders, rates, windows, instruments),
// in the zone of the instrument's facility, read from inventory once per
// run, and the column header names the zone ("START_TIME (Asia/Shanghai)").
// Columns line up by display width (Chinese characters take two columns).
//
// Configuration, first match wins: flags, then the environment
// (LABSHARE_INVENTORY, LABSHARE_BOOKING, LABSHARE_BILLING, LABSHARE_USAGE,
// LABSHARE_TOKEN, LABSHARE_TOKEN_FILE), then the config file ($LABSHARE_CONFIG,
// else ~/.config/labshare/config) with lines "key = value" for the same keys
// in lower case (inventory, booking, billing, usage, token, token_file).
// The token: --token, --token_file, then LABSHARE_TOKEN, LABSHARE_TOKEN_FILE,
// then the config file's token, token_file (a source's file before the next
// source), then the sign-in stored by `labshare login`.
// Defaults: 127.0.0.1:50051..50054 (the local launcher).
// Transport: with --tls_ca=FILE (LABSHARE_TLS_CA, config tls_ca) calls go
// over TLS trusting that CA (--tls_cert/--tls_key add a client
// certificate); without it only loopback addresses are reached, in plaintext.
//
// Exit codes: 0 success; 2 usage error (unknown service, method or field,
// bad value); 3 local error (unreadable file, bad configuration); 10 + the
// gRPC status code when the call failed (13 INVALID_ARGUMENT, 15 NOT_FOUND,
// 16 ALREADY_EXISTS, 17 PERMISSION_DENIED, 19 FAILED_PRECONDITION,
// 20 ABORTED, 24 UNAVAILABLE, 26 UNAUTHENTICATED, ...). Errors go to stderr
// as "error: CODE REASON: message" (REASON from google.rpc.ErrorInfo); under
// --json as one JSON object on one line on stderr (stdout stays empty):
// {"code":"NOT_FOUND","code_number":5,"reason":"BOOKING_NOT_FOUND",
// "domain":"booking.labshare","message":"...","metadata":{...},"field_violations":
// [{"field":"...","description":"..."}],"exit_code":15}, plus "retry_delay"
// when the server gave one; the client's own errors with code "USAGE" or
// "LOCAL" and reason "".
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/sync_stream.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "services/cli/facility_zones.h"
#include "services/cli/format.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "common/channel.h"
#include "services/cli/login.h"

namespace {

namespace pb = google::protobuf;

constexpr int kUsage = 2;
constexpr int kLocal = 3;

struct ServiceInfo {
  const char* name;
  const char* full_name;
  const char* default_address;
};
const ServiceInfo kServices[] = {
    {"inventory", "labshare.inventory.v1.InventoryService", "127.0.0.1:50051"},
    {"booking", "labshare.booking.v1.BookingService", "127.0.0.1:50052"},
    {"billing", "labshare.billing.v1.BillingService", "127.0.0.1:50053"},
    {"usage", "labshare.usage.v1.UsageService", "127.0.0.1:50054"},
};

// Under --json, errors are one JSON object on one line on stderr
// (services/cli/format.h); set before anything can fail.
bool g_json_errors = false;

[[noreturn]] void Fail(int code, const std::string& message) {
  if (g_json_errors) {
    std::cerr << labshare::cli::LocalErrorJson(code == kUsage ? "USAGE" : "LOCAL", message, code) << "\n";
  } else {
    std::cerr << "error: " << message << "\n";
  }
  std::exit(code);
}

// The field a dotted flag path names in a request type, or nullptr.
const pb::FieldDescriptor* ResolvePath(const pb::Descriptor* d, const std::string& path) {
  const pb::FieldDescriptor* f = nullptr;
  for (const auto& part : absl::StrSplit(path, '.')) {
    if (d == nullptr) return nullptr;
    f = d->FindFieldByName(std::string(part));
    if (f == nullptr) return nullptr;
    d = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() ? f->message_type() : nullptr;
  }
  return f;
}

bool IsBool(const pb::FieldDescriptor* f) { return f != nullptr && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL; }

// "labshare booking CreateBooking": the method, or nullptr while unknown.
const pb::MethodDescriptor* MethodNamed(const std::vector<std::string>& positional);

std::map<std::string, std::string> ReadConfig() { return labshare::cli::ReadConfigFile(); }

// The channel to a service: TLS with --tls_ca (and --tls_cert/--tls_key for a
// client certificate), else LABSHARE_TLS_CA/_CERT/_KEY, else the config
// file's tls_ca/tls_cert/tls_key; plaintext only to loopback addresses
// (common/channel.h). Exits 3 when that cannot be.
std::shared_ptr<grpc::Channel> ChannelOrFail(const std::string& address,
                                             const std::map<std::string, std::string>& global) {
  const std::map<std::string, std::string> config = ReadConfig();
  auto setting = [&](const std::string& key) -> std::string {
    if (auto it = global.find(key); it != global.end()) return it->second;
    if (const char* e = std::getenv(("LABSHARE_" + absl::AsciiStrToUpper(key)).c_str())) return e;
    auto it = config.find(key);
    return it == config.end() ? "" : it->second;
  };
  auto channel = labshare::MakeChannelWithFiles(
      address, labshare::TlsFiles{setting("tls_cert"), setting("tls_key"), setting("tls_ca")});
  if (!channel.ok()) Fail(kLocal, std::string(channel.status().message()));
  return *channel;
}

// --- building requests -------------------------------------------------------

void SetScalar(pb::Message* msg, const pb::FieldDescriptor* f, const std::string& value) {
  const pb::Reflection* r = msg->GetReflection();
  const bool rep = f->is_repeated();
  auto bad = [&]() { Fail(kUsage, absl::StrCat("--", f->name(), ": cannot use \"", value, "\" as ", f->type_name())); };
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING:
      if (f->type() == pb::FieldDescriptor::TYPE_BYTES) {
        rep ? r->AddString(msg, f, value) : r->SetString(msg, f, value);
      } else {
        rep ? r->AddString(msg, f, value) : r->SetString(msg, f, value);
      }
      return;
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(value, &v)) bad();
      rep ? r->AddInt32(msg, f, v) : r->SetInt32(msg, f, v);
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) bad();
      rep ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(value, &v)) bad();
      rep ? r->AddUInt32(msg, f, v) : r->SetUInt32(msg, f, v);
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(value, &v)) bad();
      rep ? r->AddUInt64(msg, f, v) : r->SetUInt64(msg, f, v);
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!absl::SimpleAtob(value, &v)) bad();
      rep ? r->AddBool(msg, f, v) : r->SetBool(msg, f, v);
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(value, &v)) bad();
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
        rep ? r->AddDouble(msg, f, v) : r->SetDouble(msg, f, v);
      } else {
        rep ? r->AddFloat(msg, f, static_cast<float>(v)) : r->SetFloat(msg, f, static_cast<float>(v));
      }
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* e = f->enum_type()->FindValueByName(absl::AsciiStrToUpper(value));
      int n = 0;
      if (e == nullptr && absl::SimpleAtoi(value, &n)) e = f->enum_type()->FindValueByNumber(n);
      if (e == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < f->enum_type()->value_count(); ++i) names.push_back(f->enum_type()->value(i)->name());
        Fail(kUsage, absl::StrCat("--", f->name(), ": choose one of ", absl::StrJoin(names, ", ")));
      }
      rep ? r->AddEnum(msg, f, e) : r->SetEnum(msg, f, e);
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      pb::Message* sub = rep ? r->AddMessage(msg, f) : r->MutableMessage(msg, f);
      const std::string type = f->message_type()->full_name();
      if (type == "google.protobuf.Timestamp") {
        absl::Time t;
        std::string err;
        if (!absl::ParseTime(absl::RFC3339_full, value, &t, &err)) {
          Fail(kUsage, absl::StrCat("--", f->name(), ": RFC 3339 time expected (2027-01-04T09:00:00+08:00): ", err));
        }
        const pb::Reflection* sr = sub->GetReflection();
        const pb::Descriptor* d = sub->GetDescriptor();
        sr->SetInt64(sub, d->FindFieldByName("seconds"), absl::ToUnixSeconds(t));
        sr->SetInt32(sub, d->FindFieldByName("nanos"),
                     static_cast<int32_t>((t - absl::FromUnixSeconds(absl::ToUnixSeconds(t))) / absl::Nanoseconds(1)));
        return;
      }
      if (type == "google.protobuf.Duration") {
        absl::Duration d;
        if (!absl::ParseDuration(value, &d)) Fail(kUsage, absl::StrCat("--", f->name(), ": duration like 90m, 2h, 3600s"));
        const pb::Reflection* sr = sub->GetReflection();
        const pb::Descriptor* desc = sub->GetDescriptor();
        const int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
        sr->SetInt64(sub, desc->FindFieldByName("seconds"), s);
        sr->SetInt32(sub, desc->FindFieldByName("nanos"), static_cast<int32_t>(d / absl::Nanoseconds(1)));
        return;
      }
      if (type == "labshare.type.v1.Money") {
        int64_t minor = 0;
        std::string currency, error;
        if (!labshare::cli::ParseMoney(value, &minor, &currency, &error)) {
          Fail(kUsage, absl::StrCat("--", f->name(), ": ", error));
        }
        const pb::Reflection* sr = sub->GetReflection();
        const pb::Descriptor* d = sub->GetDescriptor();
        sr->SetString(sub, d->FindFieldByName("currency_code"), currency);
        sr->SetInt64(sub, d->FindFieldByName("amount_minor"), minor);
        return;
      }
      if (type == "google.protobuf.FieldMask") {
        const pb::Reflection* sr = sub->GetReflection();
        for (const auto& path : absl::StrSplit(value, ',')) {
          sr->AddString(sub, sub->GetDescriptor()->FindFieldByName("paths"), std::string(path));
        }
        return;
      }
      // Any other message: JSON.
      auto s = pb::util::JsonStringToMessage(value, sub);
      if (!s.ok()) Fail(kUsage, absl::StrCat("--", f->name(), ": JSON for ", type, " expected: ", s.ToString()));
      return;
    }
  }
}

void SetPath(pb::Message* msg, const std::string& path, const std::string& value) {
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(parts[i]);
    if (f == nullptr) {
      std::vector<std::string> names;
      for (int k = 0; k < msg->GetDescriptor()->field_count(); ++k) names.push_back(msg->GetDescriptor()->field(k)->name());
      Fail(kUsage, absl::StrCat("no field \"", parts[i], "\" in ", msg->GetDescriptor()->full_name(),
                                "; fields: ", absl::StrJoin(names, ", ")));
    }
    if (i + 1 == parts.size()) return SetScalar(msg, f, value);
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
      Fail(kUsage, absl::StrCat("\"", parts[i], "\" has no sub-fields"));
    }
    msg = msg->GetReflection()->MutableMessage(msg, f);
  }
}

// --- printing answers (services/cli/format.h) ------------------------------

void PrintAnswer(const pb::Message& m, bool json, const labshare::cli::PrintOptions& options) {
  if (json) {
    std::string out;
    pb::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    o.add_whitespace = true;
    (void)pb::util::MessageToJsonString(m, &out, o);
    std::cout << out;
    if (out.empty() || out.back() != '\n') std::cout << "\n";
    return;
  }
  if (!labshare::cli::PrintTable(m, options, std::cout)) labshare::cli::PrintFields(m, options, std::cout);
}

void Usage(std::ostream& out) {
  out << "usage: labshare [--json] [--token=T] [--<service>=HOST:PORT] <service> <Method> [NAME] [--field=value ...]\n"
         "       labshare services            list the services\n"
         "       labshare health HOST:PORT    gRPC health check (exit 0 when SERVING: readiness)\n"
         "       labshare health --liveness HOST:PORT   exit 0 while the process answers at all\n"
         "       labshare <service>           list its methods\n"
         "       labshare <service> <Method> --help   its request fields\n"
         "services: inventory, booking, billing, usage\n";
}

void ListMethods(const pb::ServiceDescriptor* s) {
  for (int i = 0; i < s->method_count(); ++i) {
    const auto* m = s->method(i);
    std::cout << m->name() << "  (" << m->input_type()->name() << " -> " << m->output_type()->name()
              << (m->server_streaming() ? ", streamed" : "") << ")\n";
  }
}

void DescribeFields(const pb::Descriptor* d, const std::string& prefix, int depth) {
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    std::string type = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE ? f->message_type()->full_name()
                       : f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM   ? f->enum_type()->name()
                                                                              : f->type_name();
    std::cout << "  --" << prefix << f->name() << "  " << (f->is_repeated() ? "repeated " : "") << type << "\n";
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && depth < 2 &&
        !absl::StartsWith(type, "google.protobuf.") && type != "labshare.type.v1.Money" &&
        type != "labshare.type.v1.Interval" && !f->is_repeated()) {
      DescribeFields(f->message_type(), prefix + f->name() + ".", depth + 1);
    }
  }
}

const pb::MethodDescriptor* MethodNamed(const std::vector<std::string>& positional) {
  if (positional.size() < 2) return nullptr;
  for (const auto& s : kServices) {
    if (positional[0] != s.name) continue;
    const pb::ServiceDescriptor* sd = pb::DescriptorPool::generated_pool()->FindServiceByName(s.full_name);
    if (sd == nullptr) return nullptr;
    for (int i = 0; i < sd->method_count(); ++i) {
      if (absl::EqualsIgnoreCase(sd->method(i)->name(), positional[1])) return sd->method(i);
    }
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  // Link the generated services so their descriptors are in the pool.
  (void)labshare::inventory::v1::GetInstrumentRequest::descriptor();
  (void)labshare::booking::v1::GetBookingRequest::descriptor();
  (void)labshare::billing::v1::GetChargeRequest::descriptor();
  (void)labshare::usage::v1::GetUsageFiguresRequest::descriptor();

  for (int i = 1; i < argc; ++i) {
    bool json = false;
    if (absl::string_view(argv[i]) == "--json" ||
        (absl::StartsWith(argv[i], "--json=") && absl::SimpleAtob(argv[i] + 7, &json) && json)) {
      g_json_errors = true;
    }
  }
  std::map<std::string, std::string> global;  // json, token, addresses
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> fields;
  std::set<std::string> bare;  // field flags given without a value before the method was known
  bool help = false;
  // The client's own flags; kBoolGlobal need no value ("--json" = "--json=true").
  static const std::set<std::string> kGlobal = {"json", "token", "token_file", "inventory", "booking",
                                                "billing", "usage", "request", "request_file", "timeout",
                                                "tls_ca", "tls_cert", "tls_key", "liveness"};
  static const std::set<std::string> kBoolGlobal = {"json", "liveness"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help = true;
    } else if (absl::StartsWith(a, "--")) {
      std::string key = a.substr(2), value;
      const size_t eq = key.find('=');
      // Before the method, service names are addresses; after it, fields.
      static const std::set<std::string> kAddresses = {"inventory", "booking", "billing", "usage"};
      const std::string name = key.substr(0, eq);
      const bool is_global = kGlobal.count(name) && (positional.size() < 2 || kAddresses.count(name) == 0);
      const pb::MethodDescriptor* method = MethodNamed(positional);
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (is_global ? kBoolGlobal.count(key) > 0
                           : method != nullptr && IsBool(ResolvePath(method->input_type(), key))) {
        value = "true";  // a boolean flag without a value
      } else if (!is_global && method == nullptr && (i + 1 == argc || absl::StartsWith(argv[i + 1], "--"))) {
        value = "true";  // checked to be a boolean field once the method is known
        bare.insert(key);
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        Fail(kUsage, "--" + key + " needs a value");
      }
      if (is_global) {
        global[key] = value;
      } else {
        fields.emplace_back(key, value);
      }
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty()) {
    Usage(help ? std::cout : std::cerr);
    return help ? 0 : kUsage;
  }
  if (labshare::cli::IsAccountCommand(positional[0])) {  // login, logout, whoami (login.h)
    std::map<std::string, std::string> flags(fields.begin(), fields.end());
    flags.insert(global.begin(), global.end());
    return labshare::cli::RunAccountCommand(positional[0], flags);
  }
  bool liveness = false;
  if (global.count("liveness") && !absl::SimpleAtob(global["liveness"], &liveness)) {
    Fail(kUsage, "--liveness: true or false");
  }
  if (positional[0] == "health") {
    // labshare health HOST:PORT: the standard gRPC health check of the
    // server as a whole (service ""), which follows Redis: readiness. Exit 0
    // when SERVING, 1 otherwise.
    // labshare health --liveness HOST:PORT: asks for the "liveness" service
    // (common/server.h kLivenessService) and exits 0 whenever the process
    // answers at all: SERVING, NOT_SERVING (draining) or any other status the
    // server sends (NOT_FOUND from a server without that name). Only no
    // answer (UNAVAILABLE: nothing listening, connection or TLS failure;
    // DEADLINE_EXCEEDED: a hung process) exits 1. A Redis outage therefore
    // never fails it.
    if (positional.size() != 2) Fail(kUsage, "usage: labshare health [--liveness] HOST:PORT");
    auto channel = ChannelOrFail(positional[1], global);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC);
    grpc::ByteBuffer request, response;
    // HealthCheckRequest{service: ""} is empty; {service: "liveness"} is
    // field 1 (tag 0x0a), length, bytes.
    const std::string service_name = liveness ? "liveness" : "";
    std::string encoded;
    if (!service_name.empty()) {
      encoded = std::string(1, '\x0a') + static_cast<char>(service_name.size()) + service_name;
    }
    grpc::Slice slice(encoded);
    request = grpc::ByteBuffer(&slice, 1);
    grpc::Status st = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(channel.get(), method, &ctx,
                                                                                             request, &response);
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (st.ok() && response.Dump(&slices).ok()) {
      for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
    const bool serving = st.ok() && bytes == std::string("\x08\x01", 2);  // status: SERVING
    const std::string state = serving ? "SERVING" : st.ok() ? "NOT_SERVING" : "UNREACHABLE: " + st.error_message();
    if (liveness) {
      const bool answered = st.error_code() != grpc::StatusCode::UNAVAILABLE &&
                            st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED;
      std::cout << (answered ? "ALIVE (" + (st.ok() ? state : "answered " + std::to_string(st.error_code())) + ")"
                             : state)
                << "\n";
      return answered ? 0 : 1;
    }
    std::cout << state << "\n";
    return serving ? 0 : 1;
  }
  if (liveness) Fail(kUsage, "--liveness goes with labshare health");
  if (positional[0] == "services") {
    for (const auto& s : kServices) std::cout << s.name << "  " << s.full_name << "\n";
    return 0;
  }
  const ServiceInfo* service = nullptr;
  for (const auto& s : kServices) {
    if (positional[0] == s.name) service = &s;
  }
  if (service == nullptr) {
    if (!g_json_errors) Usage(std::cerr);
    Fail(kUsage, "unknown service \"" + positional[0] + "\"");
  }
  const pb::ServiceDescriptor* sd = pb::DescriptorPool::generated_pool()->FindServiceByName(service->full_name);
  if (sd == nullptr) Fail(kLocal, "service descriptor missing");
  if (positional.size() < 2) {
    ListMethods(sd);
    return 0;
  }
  const pb::MethodDescriptor* md = sd->FindMethodByName(positional[1]);
  if (md == nullptr) {
    for (int i = 0; i < sd->method_count(); ++i) {
      if (absl::EqualsIgnoreCase(sd->method(i)->name(), positional[1])) md = sd->method(i);
    }
  }
  if (md == nullptr) Fail(kUsage, absl::StrCat("unknown method \"", positional[1], "\"; `labshare ", service->name, "` lists them"));
  if (help) {
    std::cout << service->name << " " << md->name() << ": " << md->input_type()->full_name() << "\n";
    DescribeFields(md->input_type(), "", 0);
    return 0;
  }

  pb::DynamicMessageFactory factory(pb::DescriptorPool::generated_pool());
  std::unique_ptr<pb::Message> request(factory.GetPrototype(md->input_type())->New());
  std::unique_ptr<pb::Message> response(factory.GetPrototype(md->output_type())->New());
  std::string json_request = global.count("request") ? global["request"] : "";
  if (global.count("request_file")) {
    std::stringstream buf;
    if (global["request_file"] == "-") {
      buf << std::cin.rdbuf();
    } else {
      std::ifstream in(global["request_file"]);
      if (!in) Fail(kLocal, "cannot read " + global["request_file"]);
      buf << in.rdbuf();
    }
    json_request = buf.str();
  }
  if (!json_request.empty()) {
    auto s = pb::util::JsonStringToMessage(json_request, request.get());
    if (!s.ok()) Fail(kUsage, "request JSON: " + s.ToString());
  }
  if (positional.size() > 2) {
    const pb::FieldDescriptor* target = md->input_type()->FindFieldByName("name");
    if (target == nullptr) {
      for (int i = 0; i < md->input_type()->field_count(); ++i) {
        const auto* f = md->input_type()->field(i);
        if (f->type() == pb::FieldDescriptor::TYPE_STRING && !f->is_repeated()) {
          if (target != nullptr) Fail(kUsage, "name the field: --field=value");
          target = f;
        }
      }
    }
    if (target == nullptr || positional.size() > 3) Fail(kUsage, "too many arguments; use --field=value");
    SetScalar(request.get(), target, positional[2]);
  }
  for (const auto& key : bare) {
    if (!IsBool(ResolvePath(md->input_type(), key))) Fail(kUsage, "--" + key + " needs a value");
  }
  for (const auto& [path, value] : fields) SetPath(request.get(), path, value);

  // Address and token.
  const std::map<std::string, std::string> config = ReadConfig();
  auto setting = [&](const std::string& key) -> std::string {
    if (global.count(key)) return global.at(key);
    if (const char* e = std::getenv(("LABSHARE_" + absl::AsciiStrToUpper(key)).c_str())) return e;
    auto it = config.find(key);
    return it == config.end() ? "" : it->second;
  };
  std::string address = setting(service->name);
  if (address.empty()) address = service->default_address;
  // The token, source by source: the flags (--token, then --token_file), the
  // environment (LABSHARE_TOKEN, then LABSHARE_TOKEN_FILE), the config file
  // (token, then token_file); then the stored sign-in.
  std::string token;
  auto read_token_file = [&](const std::string& path) {
    std::ifstream in(path);
    if (!in) Fail(kLocal, "cannot read token file " + path);
    std::string line;
    std::getline(in, line);
    return line;
  };
  auto from_source = [&](const char* t, const char* t_file) {
    if (t != nullptr && *t != '\0') return std::string(t);
    if (t_file != nullptr && *t_file != '\0') return read_token_file(t_file);
    return std::string();
  };
  auto flag = [&](const char* key) { return global.count(key) ? global.at(key).c_str() : nullptr; };
  auto conf = [&](const char* key) {
    auto it = config.find(key);
    return it == config.end() ? nullptr : it->second.c_str();
  };
  token = from_source(flag("token"), flag("token_file"));
  if (token.empty()) token = from_source(std::getenv("LABSHARE_TOKEN"), std::getenv("LABSHARE_TOKEN_FILE"));
  if (token.empty()) token = from_source(conf("token"), conf("token_file"));
  if (token.empty()) token = labshare::cli::StoredAccessToken(global);  // from `labshare login`
  absl::Duration timeout = absl::Seconds(30);
  if (global.count("timeout") && !absl::ParseDuration(global["timeout"], &timeout)) Fail(kUsage, "--timeout like 30s");

  auto channel = ChannelOrFail(address, global);
  grpc::ClientContext ctx;
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + std::string(absl::StripAsciiWhitespace(token)));
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  const std::string path = absl::StrCat("/", sd->full_name(), "/", md->name());
  bool json = false;
  if (global.count("json") && !absl::SimpleAtob(global["json"], &json)) Fail(kUsage, "--json: true or false");
  // Times in the caller's zone; table rows of instrument-bound resources in
  // their facility's (looked up once per instrument and facility).
  labshare::cli::PrintOptions options;
  options.caller_zone = labshare::cli::CallerZone();
  std::string inventory_address = setting("inventory");
  if (inventory_address.empty()) inventory_address = kServices[0].default_address;
  labshare::cli::FacilityZones zones(
      [&] { return ChannelOrFail(inventory_address, global); },
      std::string(absl::StripAsciiWhitespace(token)), timeout);
  options.row_zone = [&](const pb::Message& row) { return zones.ForRow(row); };
  grpc::Status status;
  if (md->server_streaming()) {
    const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::SERVER_STREAMING);
    std::unique_ptr<grpc::ClientReader<pb::Message>> reader(
        grpc::internal::ClientReaderFactory<pb::Message>::Create(channel.get(), method, &ctx, *request));
    const pb::FieldDescriptor* raw = labshare::cli::RawContentField(md->output_type());
    while (reader->Read(response.get())) {
      // CSV and JSONL pieces print raw (a message of the stream without its
      // piece, the trailer, prints nothing); a message carrying another
      // member of the piece's oneof (ExportUsage's rows) as an answer.
      if (raw != nullptr && !json && !labshare::cli::OtherOneofMemberSet(*response, raw)) {
        std::cout << response->GetReflection()->GetString(*response, raw);
      } else {
        PrintAnswer(*response, json, options);
      }
      response->Clear();
    }
    status = reader->Finish();
  } else {
    const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
    status = grpc::internal::BlockingUnaryCall<pb::Message, pb::Message>(channel.get(), method, &ctx, *request,
                                                                         response.get());
    const pb::FieldDescriptor* raw = labshare::cli::RawContentField(md->output_type());
    if (status.ok() && raw != nullptr && !json && !labshare::cli::OtherOneofMemberSet(*response, raw)) {
      // A document (GetInvoiceDocument): its bytes as they are, for
      // `> invoice.pdf`; the other fields (file name, content type) to stderr.
      std::cout << response->GetReflection()->GetString(*response, raw) << std::flush;
      response->GetReflection()->ClearField(response.get(), raw);
      labshare::cli::PrintFields(*response, options, std::cerr);
    } else if (status.ok()) {
      PrintAnswer(*response, json, options);
    }
  }
  if (!status.ok()) {
    const int code = static_cast<int>(status.error_code());
    if (json) {
      std::cerr << labshare::cli::StatusJson(status, 10 + code) << "\n";
      return 10 + code;
    }
    const std::string reason = labshare::GrpcErrorReason(status);
    std::cerr << "error: " << labshare::cli::CodeName(code) << (reason.empty() ? "" : " " + reason) << ": "
              << status.error_message() << "\n";
    return 10 + code;
  }
  return 0;
}
