// Errors as absl::Status with machine-readable details.
//
// Domain code returns absl::Status built here; the RPC layer turns it into a
// grpc::Status carrying google.rpc.ErrorInfo / BadRequest (see grpc_status.h).
// The reason (UPPER_SNAKE) and metadata travel as Status payloads so that a
// status can cross layers untouched. Messages are for people: say what is
// wrong and what to do; never include raw storage or exception text.
#ifndef LABSHARE_COMMON_ERROR_H_
#define LABSHARE_COMMON_ERROR_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace labshare {

struct FieldViolation {
  std::string field;        // proto path, e.g. "instrument.original_value"
  std::string description;  // what is wrong and what is expected
};

using ErrorMetadata = std::map<std::string, std::string>;

// A status with an ErrorInfo reason and metadata.
absl::Status MakeError(absl::StatusCode code, absl::string_view reason,
                       absl::string_view message, ErrorMetadata metadata = {});

// INVALID_ARGUMENT with BadRequest field violations; reason defaults to
// INVALID_FIELD. The message names the first field.
absl::Status InvalidFields(std::vector<FieldViolation> violations,
                           absl::string_view reason = "INVALID_FIELD");
absl::Status InvalidField(std::string field, std::string description,
                          absl::string_view reason = "INVALID_FIELD");

// Attaches a retry hint: the RPC layer sends it as a google.rpc.RetryInfo
// (retry_delay) next to the ErrorInfo.
absl::Status WithRetryDelay(absl::Status status, absl::Duration delay);
// The hint attached by WithRetryDelay, if any.
std::optional<absl::Duration> RetryDelayOf(const absl::Status& status);

// Reads back what MakeError/InvalidFields attached. The reason of a status
// that has none is the code's name (e.g. "NOT_FOUND").
std::string ErrorReason(const absl::Status& status);
ErrorMetadata ErrorMetadataOf(const absl::Status& status);
std::vector<FieldViolation> FieldViolationsOf(const absl::Status& status);

// UPPER_SNAKE name of a code: "INVALID_ARGUMENT".
std::string CodeName(absl::StatusCode code);

}  // namespace labshare

// Early return for Status / StatusOr, in the style of Abseil's internal macros.
#define LS_CONCAT_INNER_(a, b) a##b
#define LS_CONCAT_(a, b) LS_CONCAT_INNER_(a, b)

#define LS_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::absl::Status ls_status_ = (expr);         \
    if (!ls_status_.ok()) return ls_status_;   \
  } while (false)

#define LS_ASSIGN_OR_RETURN(lhs, expr) \
  LS_ASSIGN_OR_RETURN_IMPL_(LS_CONCAT_(ls_statusor_, __LINE__), lhs, expr)
#define LS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#endif  // LABSHARE_COMMON_ERROR_H_
