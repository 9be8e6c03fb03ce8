// Helpers between Abseil and protobuf types, and request plumbing shared by
// all managers: time conversion, request fingerprints. Page tokens are in
// common/page_token.h.
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
// The fingerprint of a request as sent by one caller: `actor` is the caller's
// identity (ActorName of its Principal: "users/<id>" or "services/<name>").
// Every stored request_id answer is keyed by this one, so another caller
// presenting the same request_id and content is REQUEST_ID_REUSED, never
// given the first caller's answer.
std::string RequestFingerprint(absl::string_view method, const google::protobuf::Message& request,
                               absl::string_view actor);

}  // namespace labshare

#endif  // LABSHARE_COMMON_PROTO_UTIL_H_
