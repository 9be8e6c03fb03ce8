#include "common/error.h"

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace labshare {
namespace {

// Payload type URLs private to this process; grpc_status.cc converts them.
constexpr char kReasonUrl[] = "labshare/reason";
constexpr char kMetadataUrl[] = "labshare/metadata";
constexpr char kViolationsUrl[] = "labshare/violations";
constexpr char kRetryUrl[] = "labshare/retry_delay_ms";

// Length-prefixed pairs keep arbitrary bytes intact.
void AppendField(std::string& out, absl::string_view value) {
  absl::StrAppend(&out, value.size(), ":", value);
}

std::vector<std::string> SplitFields(absl::string_view in) {
  std::vector<std::string> out;
  while (!in.empty()) {
    const size_t colon = in.find(':');
    if (colon == absl::string_view::npos) break;
    size_t len = 0;
    for (char c : in.substr(0, colon)) len = len * 10 + static_cast<size_t>(c - '0');
    in.remove_prefix(colon + 1);
    if (len > in.size()) break;
    out.emplace_back(in.substr(0, len));
    in.remove_prefix(len);
  }
  return out;
}

std::string EncodePairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::string out;
  for (const auto& [k, v] : pairs) {
    AppendField(out, k);
    AppendField(out, v);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> DecodePairs(const absl::Status& s,
                                                             const char* url) {
  std::vector<std::pair<std::string, std::string>> out;
  auto payload = s.GetPayload(url);
  if (!payload) return out;
  auto fields = SplitFields(std::string(*payload));
  for (size_t i = 0; i + 1 < fields.size(); i += 2) out.emplace_back(fields[i], fields[i + 1]);
  return out;
}

}  // namespace

absl::Status MakeError(absl::StatusCode code, absl::string_view reason, absl::string_view message,
                       ErrorMetadata metadata) {
  absl::Status s(code, message);
  s.SetPayload(kReasonUrl, absl::Cord(reason));
  if (!metadata.empty()) {
    std::vector<std::pair<std::string, std::string>> pairs(metadata.begin(), metadata.end());
    s.SetPayload(kMetadataUrl, absl::Cord(EncodePairs(pairs)));
  }
  return s;
}

absl::Status InvalidFields(std::vector<FieldViolation> violations, absl::string_view reason) {
  std::string message = "invalid request";
  if (!violations.empty()) {
    message = absl::StrCat(violations.front().field, ": ", violations.front().description);
    if (violations.size() > 1) absl::StrAppend(&message, " (and ", violations.size() - 1, " more)");
  }
  absl::Status s = MakeError(absl::StatusCode::kInvalidArgument, reason, message,
                             {{"field", violations.empty() ? "" : violations.front().field}});
  std::vector<std::pair<std::string, std::string>> pairs;
  for (auto& v : violations) pairs.emplace_back(std::move(v.field), std::move(v.description));
  s.SetPayload(kViolationsUrl, absl::Cord(EncodePairs(pairs)));
  return s;
}

absl::Status InvalidField(std::string field, std::string description, absl::string_view reason) {
  return InvalidFields({{std::move(field), std::move(description)}}, reason);
}

absl::Status WithRetryDelay(absl::Status status, absl::Duration delay) {
  if (!status.ok()) status.SetPayload(kRetryUrl, absl::Cord(std::to_string(absl::ToInt64Milliseconds(delay))));
  return status;
}

std::optional<absl::Duration> RetryDelayOf(const absl::Status& status) {
  auto p = status.GetPayload(kRetryUrl);
  int64_t ms = 0;
  if (!p || !absl::SimpleAtoi(std::string(*p), &ms) || ms < 0) return std::nullopt;
  return absl::Milliseconds(ms);
}

std::string ErrorReason(const absl::Status& status) {
  if (auto p = status.GetPayload(kReasonUrl)) return std::string(*p);
  return CodeName(status.code());
}

ErrorMetadata ErrorMetadataOf(const absl::Status& status) {
  ErrorMetadata out;
  for (auto& [k, v] : DecodePairs(status, kMetadataUrl)) out[k] = v;
  return out;
}

std::vector<FieldViolation> FieldViolationsOf(const absl::Status& status) {
  std::vector<FieldViolation> out;
  for (auto& [k, v] : DecodePairs(status, kViolationsUrl)) out.push_back({k, v});
  return out;
}

std::string CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "CANCELLED";
    case absl::StatusCode::kUnknown: return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted: return "ABORTED";
    case absl::StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal: return "INTERNAL";
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss: return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

}  // namespace labshare
