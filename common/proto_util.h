// Helpers between Abseil and protobuf types, and request plumbing shared by
// all managers: time conversion, request fingerprints, page tokens.
#ifndef LABSHARE_COMMON_PROTO_UTIL_H_
#define LABSHARE_COMMON_PROTO_UTIL_H_

#include <string>

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace labshare {

google::protobuf::Timestamp ToProto(absl::Time t);
absl::Time FromProto(const google::protobuf::Timestamp& t);
google::protobuf::Duration ToProto(absl::Duration d);
absl::Duration FromProto(const google::protobuf::Duration& d);

// Deterministic serialization (map order fixed).
std::string SerializeDeterministic(const google::protobuf::Message& m);

// SHA-256 hex of method + deterministic request bytes: two requests with the
// same fingerprint are the same request.
std::string RequestFingerprint(absl::string_view method, const google::protobuf::Message& request);

// Pagination (AIP-158). page_size 0 means the default; above the maximum it
// is clamped. A token records the last member returned and a hash of the
// request's other fields, so a token used with different filters is
// rejected with INVALID_ARGUMENT INVALID_PAGE_TOKEN.
struct PageRequest {
  int page_size = 50;
  std::string after;  // last member of the previous page; empty: from the start
};
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;
absl::StatusOr<PageRequest> ParsePageRequest(const google::protobuf::Message& list_request);
std::string MakePageToken(const google::protobuf::Message& list_request, const std::string& last);

}  // namespace labshare

#endif  // LABSHARE_COMMON_PROTO_UTIL_H_
