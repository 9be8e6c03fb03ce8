#include "common/error_contract.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "google/rpc/error_details.pb.h"

namespace labshare {
namespace {

ErrorContract FromTable() {
  ErrorContract c;
  for (size_t i = 0; i < internal::kDocumentedErrorsCount; ++i) {
    const internal::DocumentedErrorRow& row = internal::kDocumentedErrors[i];
    const absl::string_view key = row.key;
    if (key == "*") {
      c.everywhere.insert({row.code, row.reason});
    } else if (absl::StartsWith(key, "/")) {
      auto& errors = c.methods[row.key];
      if (*row.code != '\0') errors.insert({row.code, row.reason});
    } else {
      c.services[row.key].insert({row.code, row.reason});
    }
  }
  return c;
}

}  // namespace

const ErrorContract& DocumentedErrors() {
  static const ErrorContract* contract = new ErrorContract(FromTable());
  return *contract;
}

bool StrictReasons() {
  static const bool strict = [] {
    const char* v = std::getenv("LABSHARE_STRICT_REASONS");
    return v != nullptr && absl::string_view(v) == "1";
  }();
  return strict;
}

std::string UndocumentedAnswer(absl::string_view method, const grpc::Status& status) {
  // CANCELLED: the client went away (or gRPC says so); nobody reads it.
  if (status.ok() || status.error_code() == grpc::StatusCode::CANCELLED) return "";
  const std::string code = CodeName(static_cast<absl::StatusCode>(status.error_code()));
  bool has_info = false;
  std::string reason;
  const google::rpc::Status rpc = ToRpcStatus(status);
  for (const auto& any : rpc.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) {
      has_info = true;
      reason = info.reason();
      break;
    }
  }
  if (!has_info) {
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
        status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      return "";
    }
    return absl::StrCat(method, " answered ", code, " without an ErrorInfo (\"", status.error_message(), "\")");
  }
  const ErrorContract& contract = DocumentedErrors();
  if (contract.methods.count(std::string(method)) == 0) {
    return absl::StrCat(method, " is not an rpc of the contract (answered ", code, " ", reason, ")");
  }
  if (contract.Allows(method, code, reason)) return "";
  return absl::StrCat(method, " answered ", code, " ", reason,
                      ", which its \"Errors:\" comment does not list (\"", status.error_message(), "\")");
}

void CheckAnswerDocumented(absl::string_view method, const grpc::Status& status) {
  if (status.ok() || absl::StartsWith(method, "/grpc.")) return;
  const std::string problem = UndocumentedAnswer(method, status);
  if (problem.empty()) return;
  if (StrictReasons()) {
    std::fprintf(stderr, "LABSHARE_STRICT_REASONS: undocumented error: %s\n", problem.c_str());
    std::fflush(stderr);
    std::abort();
  }
  static std::mutex mu;
  static auto* seen = new std::set<std::string>();
  const std::string key = absl::StrCat(method, " ", status.error_code(), " ", GrpcErrorReason(status));
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!seen->insert(key).second) return;
  }
  LogJson("error", "undocumented error reason", {{"problem", problem}});
}

}  // namespace labshare
