// Reads the error contract out of the proto comments.
//
// Each rpc's comment states its errors after "Errors:" as gRPC codes, each
// followed by its reasons in parentheses:
//   Errors: INVALID_ARGUMENT (INVALID_NAME, INVALID_FIELD: why); NOT_FOUND
//   (BOOKING_NOT_FOUND); DEADLINE_EXCEEDED.
// A reason is an UPPER_SNAKE word that starts an item (items are separated
// by "," or ";") and ends it or is followed by ":" and an explanation (or by
// "as OtherRpc", which explains it); other
// words in the explanation (state names, templates) are not reasons. A code
// without parentheses answers its own name as reason (common/error.h). The
// list ends at the first ". " outside parentheses. "as OtherRpc" takes the
// other rpc's errors (inside a code's parentheses: only that code's), and
// "as OtherRpc (without R1, R2)" leaves some out. A file's header comment
// (before `package`) may hold an "Errors:" list too: it applies to every
// method of the file's services, and types.proto's to every method of
// every service.
//
// Used at build time by error_contract_gen (the table the servers check
// their answers against) and by tests/common/error_contract_test.cc.
#ifndef LABSHARE_COMMON_ERROR_CONTRACT_PARSER_H_
#define LABSHARE_COMMON_ERROR_CONTRACT_PARSER_H_

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace labshare {

using CodeReason = std::pair<std::string, std::string>;  // ("NOT_FOUND", "BOOKING_NOT_FOUND")

struct ErrorContract {
  // Full method path "/labshare.booking.v1.BookingService/CreateBooking" ->
  // the errors its own comment lists (file-wide and global ones excluded).
  std::map<std::string, std::set<CodeReason>> methods;
  // Service full name "labshare.booking.v1.BookingService" -> errors its
  // file's header allows on every method.
  std::map<std::string, std::set<CodeReason>> services;
  // Errors every method may answer (types.proto's header).
  std::set<CodeReason> everywhere;
  // What could not be read: an rpc without "Errors:", an unknown "as X".
  std::vector<std::string> problems;

  // Whether `method` may answer (code, reason) by its own list, its
  // service's or the global one.
  bool Allows(absl::string_view method, absl::string_view code, absl::string_view reason) const;
};

// One "Errors:" text (without the "Errors:" word). References ("as X") are
// returned unresolved in *refs as (code or "" for all codes, rpc name,
// excluded reasons).
struct ErrorRef {
  std::string code;  // "" = every code of the referenced rpc
  std::string rpc;
  std::set<std::string> without;
};
std::set<CodeReason> ParseErrorSpec(absl::string_view spec, std::vector<ErrorRef>* refs = nullptr);

// Whole proto files: (file name, content), types.proto among them.
ErrorContract ParseErrorContract(const std::vector<std::pair<std::string, std::string>>& files);

// The gRPC code names ("OK" .. "UNAUTHENTICATED").
bool IsGrpcCodeName(absl::string_view word);

}  // namespace labshare

#endif  // LABSHARE_COMMON_ERROR_CONTRACT_PARSER_H_
