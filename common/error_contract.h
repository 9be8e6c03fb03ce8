// Keeps the servers' answers and the documented error lists agreeing.
//
// The contract of an RPC is its proto comment, whose "Errors:" text names
// every (code, reason) it may answer (format: error_contract_parser.h).
// Code and comment drift apart silently: a new reason in a manager, a
// reason renamed in one place. Two checks keep them together:
//  - At run time, the server interceptor (common/server.cc) passes every
//    answer of every method, unary, callback and streaming alike, to
//    CheckAnswerDocumented. A (code, reason) that neither the method's
//    comment, its file's header nor types.proto's conventions name is
//    logged once per kind; with LABSHARE_STRICT_REASONS=1 in the
//    environment the process aborts with the method and reason on stderr.
//    Every ctest test runs with it set (tests/CMakeLists.txt), so any test
//    that provokes an undocumented answer fails, also in the service
//    binaries the end-to-end tests start.
//  - tests/common/error_contract_test.cc reads every reason string literal
//    in services/ and common/ and fails on one documented nowhere, so a
//    reason no test provokes is still caught.
// Why here and not in each handler: one place sees every answer, including
// the callback and streaming paths, and the interceptor already decodes
// the status for the call log. Why a table generated at build time from
// the protos (common/CMakeLists.txt runs error_contract_gen): the binary
// cannot carry a stale copy of the contract, and the servers do not need
// the proto sources at run time. The cost is one hash lookup per error
// answer; successful answers are not looked at.
#ifndef LABSHARE_COMMON_ERROR_CONTRACT_H_
#define LABSHARE_COMMON_ERROR_CONTRACT_H_

#include <cstddef>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/strings/string_view.h"
#include "common/error_contract_parser.h"

namespace labshare {

namespace internal {
// One row of the generated table: key is "*" (every method), a service's
// full name (every method of it) or a full method path.
struct DocumentedErrorRow {
  const char* key;
  const char* code;
  const char* reason;
};
extern const DocumentedErrorRow kDocumentedErrors[];
extern const size_t kDocumentedErrorsCount;
}  // namespace internal

// The contract as built into this binary.
const ErrorContract& DocumentedErrors();

// "" when `method` may answer `status` per the contract (OK and CANCELLED,
// which no client receives, always may); otherwise what is undocumented,
// for a person. A status without an ErrorInfo is allowed only for
// DEADLINE_EXCEEDED and UNIMPLEMENTED (a method a server does not
// implement), which gRPC itself produces; any other error must carry one
// (types.proto).
std::string UndocumentedAnswer(absl::string_view method, const grpc::Status& status);

// For the interceptor: logs an undocumented answer (once per method, code
// and reason); in strict mode aborts the process. Methods of gRPC's own
// services ("/grpc.") are not checked.
void CheckAnswerDocumented(absl::string_view method, const grpc::Status& status);

// Strict mode: LABSHARE_STRICT_REASONS=1 in the environment, read once.
bool StrictReasons();

}  // namespace labshare

#endif  // LABSHARE_COMMON_ERROR_CONTRACT_H_
