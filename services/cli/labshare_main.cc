// labshare: the command-line client of the four LabShare services.
//
//   labshare [global flags] <service> <Method> [NAME] [--field=value ...]
//   labshare [global flags] <service> <Method> --request='{"json": ...}'
//   labshare services | labshare <service> [--help] | labshare <service> <Method> --help
//   labshare [global flags] batch [FILE]
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
// --output=FILE writes the answer into FILE (a new file replacing FILE once
// the call has succeeded); --all_pages follows next_page_token, printing
// every page in turn (--max_pages=N: exit 3 rather than read more).
//
// batch: the calls of FILE (stdin when none or "-"), one a line as it would
// follow `labshare` on a command line (words split at blanks, '...' and
// "..." quote; blank and # lines skipped), in order, in one process: one
// channel per service, the token read once. The batch's command line gives
// addresses, TLS and token for every line and its --json, --all_pages,
// --max_pages, --timeout as defaults. The first failing line stops the
// batch with its exit code; its error names it ("error: line N (LINE): ...";
// under --json "line" and "command" lead the object).
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

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
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

// A failed command: the client's own failure (bad flag, unreadable file:
// exit 2 or 3) or the service's answer (10 + the gRPC code). Fail throws
// one; whoever runs the command (main, or a batch for each of its lines)
// catches it, prints it (PrintError) and exits with its code.
struct CliError {
  int exit_code;
  std::string text;  // printed as "error: TEXT"
  std::string json;  // under --json: one JSON object
};

[[noreturn]] void Fail(int code, const std::string& message) {
  throw CliError{code, message, labshare::cli::LocalErrorJson(code == kUsage ? "USAGE" : "LOCAL", message, code)};
}

// A failed call: "CODE REASON: message", 10 + the gRPC code.
CliError CallError(const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  const std::string reason = labshare::GrpcErrorReason(status);
  return CliError{10 + code,
                  labshare::cli::CodeName(code) + (reason.empty() ? "" : " " + reason) + ": " + status.error_message(),
                  labshare::cli::StatusJson(status, 10 + code)};
}

// On stderr, one line. A batch line's error names the line: "error: line 3
// (booking GetBooking bookings/x): ..."; under --json the object starts
// with "line" and "command".
void PrintError(const CliError& e, int line = 0, const std::string& command = "") {
  if (g_json_errors) {
    std::string json = e.json;
    if (line > 0 && absl::StartsWith(json, "{")) {
      json = absl::StrCat("{\"line\":", line, ",\"command\":", labshare::cli::JsonQuote(command),
                          json.size() > 2 ? "," : "", json.substr(1));
    }
    std::cerr << json << "\n";
  } else if (line > 0) {
    std::cerr << "error: line " << line << " (" << command << "): " << e.text << "\n";
  } else {
    std::cerr << "error: " << e.text << "\n";
  }
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

void PrintAnswer(const pb::Message& m, bool json, const labshare::cli::PrintOptions& options, std::ostream& out) {
  if (json) {
    std::string text;
    pb::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    o.add_whitespace = true;
    (void)pb::util::MessageToJsonString(m, &text, o);
    out << text;
    if (text.empty() || text.back() != '\n') out << "\n";
    return;
  }
  if (!labshare::cli::PrintTable(m, options, out)) labshare::cli::PrintFields(m, options, out);
}

void Usage(std::ostream& out) {
  out << "usage: labshare [--json] [--token=T] [--<service>=HOST:PORT] <service> <Method> [NAME] [--field=value ...]\n"
         "       labshare services            list the services\n"
         "       labshare health HOST:PORT    gRPC health check (exit 0 when SERVING: readiness)\n"
         "       labshare health --liveness HOST:PORT   exit 0 while the process answers at all\n"
         "       labshare <service>           list its methods\n"
         "       labshare <service> <Method> --help   its request fields\n"
         "       labshare [flags] batch [FILE]   many calls, one a line of FILE (none or -: stdin), over one\n"
         "                                    connection per service (below)\n"
         "services: inventory, booking, billing, usage\n"
         "\n"
         "answers: --json         protobuf JSON instead of tables and field: value lines\n"
         "         --output=FILE  the answer into FILE (replaced only once the call has succeeded)\n"
         "         --all_pages    follow next_page_token: every page of a list, one after the other\n"
         "         --max_pages=N  with --all_pages: fail (exit 3) rather than read more than N pages\n"
         "\n"
         "batch: each line is a call as it follows `labshare` on a command line: <service> <Method> [NAME]\n"
         "  [--field=value ...] with --json, --output, --all_pages, --max_pages, --request, --request_file=FILE,\n"
         "  --timeout as it needs. Words split at blanks; '...' and \"...\" quote; blank lines and lines\n"
         "  starting with # are skipped. Addresses, TLS and the token come from the batch's command line\n"
         "  (then the environment and the config file) and hold for every line; its --json, --all_pages,\n"
         "  --max_pages and --timeout are every line's defaults. Lines run in order; the first that fails\n"
         "  stops the batch with its exit code, its error naming it: \"error: line N (the line): ...\" (under\n"
         "  --json the object has \"line\" and \"command\"). Exit 0 when every line succeeded. Example:\n"
         "    labshare --json --all_pages batch <<'EOF'\n"
         "    billing ListInvoices --page_size=50 --output=invoices.json\n"
         "    usage GetAnnualReport --year=2027 --output=report-2027.json\n"
         "    usage ExportAnnualReportCsv --year=2027 --json=false --output=report-2027.csv\n"
         "    EOF\n";
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

// A command line, or one line of a batch, taken apart.
struct CommandLine {
  std::map<std::string, std::string> global;  // the client's own flags: json, token, addresses, ...
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> fields;  // the request's --field=value
  std::set<std::string> bare;  // field flags given without a value before the method was known
  bool help = false;
};

// The flags that say where and as whom to call: a batch's command line
// gives them for all its lines.
const std::set<std::string>& ConnectionFlags() {
  static const std::set<std::string> kConnection = {"token",   "token_file", "inventory", "booking", "billing",
                                                    "usage",   "tls_ca",     "tls_cert",  "tls_key", "liveness"};
  return kConnection;
}

CommandLine ParseCommandLine(const std::vector<std::string>& args) {
  CommandLine c;
  // The client's own flags; kBoolGlobal need no value ("--json" = "--json=true").
  static const std::set<std::string> kGlobal = {"json",      "token",   "token_file", "inventory",    "booking",
                                                "billing",   "usage",   "request",    "request_file", "timeout",
                                                "tls_ca",    "tls_cert", "tls_key",   "liveness",     "output",
                                                "all_pages", "max_pages"};
  static const std::set<std::string> kBoolGlobal = {"json", "liveness", "all_pages"};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      c.help = true;
    } else if (absl::StartsWith(a, "--")) {
      std::string key = a.substr(2), value;
      const size_t eq = key.find('=');
      // Before the method, service names are addresses; after it, fields.
      static const std::set<std::string> kAddresses = {"inventory", "booking", "billing", "usage"};
      const std::string name = key.substr(0, eq);
      const bool is_global = kGlobal.count(name) && (c.positional.size() < 2 || kAddresses.count(name) == 0);
      const pb::MethodDescriptor* method = MethodNamed(c.positional);
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (is_global ? kBoolGlobal.count(key) > 0
                           : method != nullptr && IsBool(ResolvePath(method->input_type(), key))) {
        value = "true";  // a boolean flag without a value
      } else if (!is_global && method == nullptr && (i + 1 == args.size() || absl::StartsWith(args[i + 1], "--"))) {
        value = "true";  // checked to be a boolean field once the method is known
        c.bare.insert(key);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        Fail(kUsage, "--" + key + " needs a value");
      }
      if (is_global) {
        c.global[key] = value;
      } else {
        c.fields.emplace_back(key, value);
      }
    } else {
      c.positional.push_back(a);
    }
  }
  return c;
}

// What the calls of one run share: the command line's own flags, the config
// file, one channel per address (a batch's lines share one connection, one
// TLS handshake, per service), the token (read once, at the first call) and
// the facility zones of tables (looked up once per instrument and facility).
class Session {
 public:
  explicit Session(std::map<std::string, std::string> global) : global_(std::move(global)), config_(ReadConfig()) {}

  const std::map<std::string, std::string>& global() const { return global_; }

  // The flag, else LABSHARE_<KEY>, else the config file's key; "" when none.
  std::string Setting(const std::string& key) const {
    if (auto it = global_.find(key); it != global_.end()) return it->second;
    if (const char* e = std::getenv(("LABSHARE_" + absl::AsciiStrToUpper(key)).c_str())) return e;
    auto it = config_.find(key);
    return it == config_.end() ? "" : it->second;
  }

  std::string Address(const ServiceInfo& service) const {
    const std::string address = Setting(service.name);
    return address.empty() ? service.default_address : address;
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
    std::shared_ptr<grpc::Channel>& channel = channels_[address];
    if (channel == nullptr) channel = ChannelOrFail(address, global_);
    return channel;
  }

  // The token, source by source: the flags (--token, then --token_file), the
  // environment (LABSHARE_TOKEN, then LABSHARE_TOKEN_FILE), the config file
  // (token, then token_file); then the stored sign-in.
  const std::string& Token() {
    if (token_.has_value()) return *token_;
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
    auto flag = [&](const char* key) { return global_.count(key) ? global_.at(key).c_str() : nullptr; };
    auto conf = [&](const char* key) {
      auto it = config_.find(key);
      return it == config_.end() ? nullptr : it->second.c_str();
    };
    std::string token = from_source(flag("token"), flag("token_file"));
    if (token.empty()) token = from_source(std::getenv("LABSHARE_TOKEN"), std::getenv("LABSHARE_TOKEN_FILE"));
    if (token.empty()) token = from_source(conf("token"), conf("token_file"));
    if (token.empty()) token = labshare::cli::StoredAccessToken(global_);  // from `labshare login`
    token_ = std::string(absl::StripAsciiWhitespace(token));
    return *token_;
  }

  // Times in the caller's zone; table rows of instrument-bound resources in
  // their facility's.
  const labshare::cli::PrintOptions& Printing(absl::Duration timeout) {
    if (!options_.has_value()) {
      options_.emplace();
      options_->caller_zone = labshare::cli::CallerZone();
      const std::string inventory = Address(kServices[0]);
      zones_ = std::make_unique<labshare::cli::FacilityZones>([this, inventory] { return Channel(inventory); },
                                                              Token(), timeout);
      options_->row_zone = [this](const pb::Message& row) { return zones_->ForRow(row); };
    }
    return *options_;
  }

 private:
  const std::map<std::string, std::string> global_;
  const std::map<std::string, std::string> config_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
  std::optional<std::string> token_;
  std::optional<labshare::cli::PrintOptions> options_;
  std::unique_ptr<labshare::cli::FacilityZones> zones_;
};

// Where an answer goes: stdout, or with --output=FILE a new file next to
// FILE that replaces it once the call has succeeded (a failed call leaves
// FILE as it was).
class AnswerOutput {
 public:
  explicit AnswerOutput(const std::string* path) {
    if (path == nullptr) return;
    if (path->empty()) Fail(kUsage, "--output: name a file");
    path_ = *path;
    temp_ = absl::StrCat(path_, ".labshare-", getpid(), ".tmp");
    file_.open(temp_, std::ios::binary | std::ios::trunc);
    if (!file_) Fail(kLocal, absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
  }
  ~AnswerOutput() {
    if (!temp_.empty() && !committed_) {
      file_.close();
      std::remove(temp_.c_str());
    }
  }
  AnswerOutput(const AnswerOutput&) = delete;
  AnswerOutput& operator=(const AnswerOutput&) = delete;

  std::ostream& stream() { return temp_.empty() ? std::cout : file_; }

  void Commit() {
    if (temp_.empty()) {
      std::cout.flush();
      return;
    }
    file_.close();
    if (file_.fail() || std::rename(temp_.c_str(), path_.c_str()) != 0) {
      Fail(kLocal, absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
    }
    committed_ = true;
  }

 private:
  std::string path_, temp_;
  std::ofstream file_;
  bool committed_ = false;
};

// A string field of that name, or nullptr (paging: page_token in the
// request, next_page_token in the answer).
const pb::FieldDescriptor* StringField(const pb::Descriptor* d, const char* name) {
  const pb::FieldDescriptor* f = d->FindFieldByName(name);
  return f != nullptr && f->type() == pb::FieldDescriptor::TYPE_STRING && !f->is_repeated() ? f : nullptr;
}

// One call, of the command line or of a batch line: builds the request,
// calls, prints the answer (to stdout or --output). Throws CliError when it
// fails. The line's own flags (json, output, all_pages, max_pages, request,
// request_file, timeout) come first, then the session's.
void RunCall(Session& session, const CommandLine& line, bool in_batch) {
  const std::vector<std::string>& positional = line.positional;
  auto flag = [&](const std::string& key) -> const std::string* {
    if (auto it = line.global.find(key); it != line.global.end()) return &it->second;
    if (auto it = session.global().find(key); it != session.global().end()) return &it->second;
    return nullptr;
  };
  const ServiceInfo* service = nullptr;
  for (const auto& s : kServices) {
    if (positional[0] == s.name) service = &s;
  }
  if (service == nullptr) {
    if (!g_json_errors && !in_batch) Usage(std::cerr);
    Fail(kUsage, "unknown service \"" + positional[0] + "\"");
  }
  const pb::ServiceDescriptor* sd = pb::DescriptorPool::generated_pool()->FindServiceByName(service->full_name);
  if (sd == nullptr) Fail(kLocal, "service descriptor missing");
  if (positional.size() < 2) {
    ListMethods(sd);
    return;
  }
  const pb::MethodDescriptor* md = sd->FindMethodByName(positional[1]);
  if (md == nullptr) {
    for (int i = 0; i < sd->method_count(); ++i) {
      if (absl::EqualsIgnoreCase(sd->method(i)->name(), positional[1])) md = sd->method(i);
    }
  }
  if (md == nullptr) Fail(kUsage, absl::StrCat("unknown method \"", positional[1], "\"; `labshare ", service->name, "` lists them"));
  if (line.help) {
    std::cout << service->name << " " << md->name() << ": " << md->input_type()->full_name() << "\n";
    DescribeFields(md->input_type(), "", 0);
    return;
  }

  pb::DynamicMessageFactory factory(pb::DescriptorPool::generated_pool());
  std::unique_ptr<pb::Message> request(factory.GetPrototype(md->input_type())->New());
  std::unique_ptr<pb::Message> response(factory.GetPrototype(md->output_type())->New());
  std::string json_request = flag("request") != nullptr ? *flag("request") : "";
  if (const std::string* request_file = flag("request_file")) {
    std::stringstream buf;
    if (*request_file == "-") {
      buf << std::cin.rdbuf();
    } else {
      std::ifstream in(*request_file);
      if (!in) Fail(kLocal, "cannot read " + *request_file);
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
  for (const auto& key : line.bare) {
    if (!IsBool(ResolvePath(md->input_type(), key))) Fail(kUsage, "--" + key + " needs a value");
  }
  for (const auto& [path, value] : line.fields) SetPath(request.get(), path, value);

  absl::Duration timeout = absl::Seconds(30);
  if (const std::string* t = flag("timeout"); t != nullptr && !absl::ParseDuration(*t, &timeout)) {
    Fail(kUsage, "--timeout like 30s");
  }
  bool json = false, all_pages = false;
  if (const std::string* j = flag("json"); j != nullptr && !absl::SimpleAtob(*j, &json)) {
    Fail(kUsage, "--json: true or false");
  }
  if (const std::string* a = flag("all_pages"); a != nullptr && !absl::SimpleAtob(*a, &all_pages)) {
    Fail(kUsage, "--all_pages: true or false");
  }
  int64_t max_pages = 0;  // no limit
  if (const std::string* m = flag("max_pages"); m != nullptr && (!absl::SimpleAtoi(*m, &max_pages) || max_pages < 1)) {
    Fail(kUsage, "--max_pages: a number from 1");
  }

  const std::string& token = session.Token();
  auto channel = session.Channel(session.Address(*service));
  const labshare::cli::PrintOptions& options = session.Printing(timeout);
  AnswerOutput out(flag("output"));
  auto context = [&] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
    return ctx;
  };
  const std::string path = absl::StrCat("/", sd->full_name(), "/", md->name());
  const pb::FieldDescriptor* raw = labshare::cli::RawContentField(md->output_type());
  if (md->server_streaming()) {
    const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::SERVER_STREAMING);
    auto ctx = context();
    std::unique_ptr<grpc::ClientReader<pb::Message>> reader(
        grpc::internal::ClientReaderFactory<pb::Message>::Create(channel.get(), method, ctx.get(), *request));
    while (reader->Read(response.get())) {
      // CSV and JSONL pieces print raw (a message of the stream without its
      // piece, the trailer, prints nothing); a message carrying another
      // member of the piece's oneof (ExportUsage's rows) as an answer.
      if (raw != nullptr && !json && !labshare::cli::OtherOneofMemberSet(*response, raw)) {
        out.stream() << response->GetReflection()->GetString(*response, raw);
      } else {
        PrintAnswer(*response, json, options, out.stream());
      }
      response->Clear();
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) throw CallError(status);
    out.Commit();
    return;
  }
  // With --all_pages, as long as the answer has a next_page_token, the same
  // request again with it as page_token; each page printed in turn.
  const pb::FieldDescriptor* page_token = all_pages ? StringField(md->input_type(), "page_token") : nullptr;
  const pb::FieldDescriptor* next_page_token = all_pages ? StringField(md->output_type(), "next_page_token") : nullptr;
  const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
  for (int64_t pages = 1;; ++pages) {
    auto ctx = context();
    const grpc::Status status = grpc::internal::BlockingUnaryCall<pb::Message, pb::Message>(
        channel.get(), method, ctx.get(), *request, response.get());
    if (!status.ok()) throw CallError(status);
    if (raw != nullptr && !json && !labshare::cli::OtherOneofMemberSet(*response, raw)) {
      // A document (GetInvoiceDocument): its bytes as they are, for
      // `> invoice.pdf`; the other fields (file name, content type) to stderr.
      out.stream() << response->GetReflection()->GetString(*response, raw) << std::flush;
      response->GetReflection()->ClearField(response.get(), raw);
      labshare::cli::PrintFields(*response, options, std::cerr);
    } else {
      PrintAnswer(*response, json, options, out.stream());
    }
    if (page_token == nullptr || next_page_token == nullptr) break;
    const std::string next = response->GetReflection()->GetString(*response, next_page_token);
    if (next.empty()) break;
    if (max_pages > 0 && pages >= max_pages) {
      Fail(kLocal, absl::StrCat("more than ", max_pages, " pages (--max_pages=", max_pages, ")"));
    }
    request->GetReflection()->SetString(request.get(), page_token, next);
    response->Clear();
  }
  out.Commit();
}

// The words of a batch line: split at blanks; '...' keeps its text as it
// is, "..." too except that \" and \\ stand for " and \; outside quotes a
// backslash keeps the next character as it is. False (*error says why) on
// a quote left open.
bool SplitWords(const std::string& line, std::vector<std::string>* words, std::string* error) {
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == ' ' || c == '\t' || c == '\r') {
      if (in_word) words->push_back(word);
      word.clear();
      in_word = false;
    } else if (c == '\'' || c == '"') {
      const size_t close = [&] {
        for (size_t k = i + 1; k < line.size(); ++k) {
          if (c == '"' && line[k] == '\\' && k + 1 < line.size()) {
            ++k;
          } else if (line[k] == c) {
            return k;
          }
        }
        return std::string::npos;
      }();
      if (close == std::string::npos) {
        *error = absl::StrCat("the quote (", std::string(1, c), ") at column ", i + 1, " is not closed");
        return false;
      }
      for (size_t k = i + 1; k < close; ++k) {
        if (c == '"' && line[k] == '\\' && (line[k + 1] == '"' || line[k + 1] == '\\')) ++k;
        word += line[k];
      }
      i = close;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words->push_back(word);
  return true;
}

// labshare [flags] batch [FILE]: the calls of FILE (stdin when none or "-"),
// one a line, in order, over one session; stops at the first that fails.
int RunBatch(const CommandLine& command) {
  if (command.positional.size() > 2) Fail(kUsage, "usage: labshare [flags] batch [FILE]");
  for (const char* key : {"output", "request", "request_file"}) {
    if (command.global.count(key)) Fail(kUsage, absl::StrCat("--", key, " goes on a line of the batch"));
  }
  if (!command.fields.empty()) Fail(kUsage, "labshare batch: unknown flag --" + command.fields[0].first);
  const std::string file = command.positional.size() == 2 ? command.positional[1] : "-";
  std::ifstream in_file;
  std::istream* in = &std::cin;
  if (file != "-") {
    in_file.open(file);
    if (!in_file) Fail(kLocal, "cannot read " + file);
    in = &in_file;
  }
  Session session(command.global);
  std::string text;
  for (int number = 1; std::getline(*in, text); ++number) {
    const std::string stripped(absl::StripAsciiWhitespace(text));
    if (stripped.empty() || stripped[0] == '#') continue;
    try {
      std::vector<std::string> words;
      std::string error;
      if (!SplitWords(stripped, &words, &error)) Fail(kUsage, error);
      const CommandLine line = ParseCommandLine(words);
      for (const auto& [key, value] : line.global) {
        if (ConnectionFlags().count(key)) Fail(kUsage, "--" + key + " goes on the batch's command line");
      }
      if (line.global.count("request_file") && line.global.at("request_file") == "-") {
        Fail(kUsage, "--request_file=-: a batch line reads no stdin; name a file");
      }
      if (line.help) Fail(kUsage, "--help: not in a batch");
      const bool a_service = !line.positional.empty() &&
                             std::any_of(std::begin(kServices), std::end(kServices),
                                         [&](const ServiceInfo& s) { return line.positional[0] == s.name; });
      if (!a_service || line.positional.size() < 2) {
        Fail(kUsage, "a line is a call: <service> <Method> [NAME] [--field=value ...] (services: inventory, "
                     "booking, billing, usage)");
      }
      RunCall(session, line, /*in_batch=*/true);
    } catch (const CliError& e) {
      PrintError(e, number, stripped);
      return e.exit_code;
    }
  }
  if (in->bad()) Fail(kLocal, "cannot read " + file);
  return 0;
}

int Run(const CommandLine& command) {
  const std::vector<std::string>& positional = command.positional;
  std::map<std::string, std::string> global = command.global;
  if (positional.empty()) {
    Usage(command.help ? std::cout : std::cerr);
    return command.help ? 0 : kUsage;
  }
  if (labshare::cli::IsAccountCommand(positional[0])) {  // login, logout, whoami (login.h)
    std::map<std::string, std::string> flags(command.fields.begin(), command.fields.end());
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
  if (positional[0] == "batch") {
    if (command.help) {
      Usage(std::cout);
      return 0;
    }
    return RunBatch(command);
  }
  Session session(global);
  RunCall(session, command, /*in_batch=*/false);
  return 0;
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
  try {
    return Run(ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc)));
  } catch (const CliError& e) {
    PrintError(e);
    return e.exit_code;
  }
}
