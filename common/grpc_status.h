// The one conversion from absl::Status to grpc::Status for the project.
//
// The result carries a google.rpc.Status in its binary details with an
// ErrorInfo (reason, domain, metadata), when the status names invalid
// fields a BadRequest, and when it carries a retry hint (WithRetryDelay) a
// RetryInfo. Codes pass through unchanged; INTERNAL and UNKNOWN
// messages are replaced by a generic text (details are in the server log).
#ifndef LABSHARE_COMMON_GRPC_STATUS_H_
#define LABSHARE_COMMON_GRPC_STATUS_H_

#include <optional>
#include <string_view>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/rpc/status.pb.h"

namespace labshare {

grpc::Status ToGrpcStatus(const absl::Status& status, absl::string_view domain);

// For clients and tests: the google.rpc.Status inside a grpc::Status's
// details (code and message only when there are no details).
google::rpc::Status ToRpcStatus(const grpc::Status& status);

// Reason of the first ErrorInfo in a grpc::Status, or "" if none.
std::string GrpcErrorReason(const grpc::Status& status);

// The delay of the google.rpc.RetryInfo in a grpc::Status, if any.
std::optional<absl::Duration> GrpcRetryDelay(const grpc::Status& status);

// A downstream answer as an absl::Status: code, message, ErrorInfo reason
// and metadata pass through (STYLE: codes pass through from downstream).
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace labshare

#endif  // LABSHARE_COMMON_GRPC_STATUS_H_
