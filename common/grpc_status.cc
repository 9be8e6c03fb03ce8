#include "common/grpc_status.h"

#include "common/error.h"
#include "google/rpc/error_details.pb.h"

namespace labshare {

grpc::Status ToGrpcStatus(const absl::Status& status, absl::string_view domain) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (status.code() == absl::StatusCode::kInternal || status.code() == absl::StatusCode::kUnknown) {
    message = "internal error; the request was not applied and may be retried";
  }
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(status.code()));
  rpc.set_message(message);

  google::rpc::ErrorInfo info;
  info.set_reason(ErrorReason(status));
  info.set_domain(std::string(domain));
  for (const auto& [k, v] : ErrorMetadataOf(status)) (*info.mutable_metadata())[k] = v;
  rpc.add_details()->PackFrom(info);

  auto violations = FieldViolationsOf(status);
  if (!violations.empty()) {
    google::rpc::BadRequest bad;
    for (const auto& v : violations) {
      auto* fv = bad.add_field_violations();
      fv->set_field(v.field);
      fv->set_description(v.description);
    }
    rpc.add_details()->PackFrom(bad);
  }
  if (const auto delay = RetryDelayOf(status)) {
    google::rpc::RetryInfo retry;
    const int64_t ms = absl::ToInt64Milliseconds(*delay);
    retry.mutable_retry_delay()->set_seconds(ms / 1000);
    retry.mutable_retry_delay()->set_nanos(static_cast<int32_t>((ms % 1000) * 1000000));
    rpc.add_details()->PackFrom(retry);
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message,
                      rpc.SerializeAsString());
}

google::rpc::Status ToRpcStatus(const grpc::Status& status) {
  google::rpc::Status rpc;
  if (!status.error_details().empty() && rpc.ParseFromString(status.error_details())) return rpc;
  rpc.Clear();
  rpc.set_code(status.error_code());
  rpc.set_message(status.error_message());
  return rpc;
}

std::string GrpcErrorReason(const grpc::Status& status) {
  const google::rpc::Status rpc = ToRpcStatus(status);
  for (const auto& any : rpc.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info.reason();
  }
  return "";
}

std::optional<absl::Duration> GrpcRetryDelay(const grpc::Status& status) {
  const google::rpc::Status rpc = ToRpcStatus(status);
  for (const auto& any : rpc.details()) {
    google::rpc::RetryInfo retry;
    if (any.UnpackTo(&retry)) {
      return absl::Seconds(retry.retry_delay().seconds()) +
             absl::Nanoseconds(retry.retry_delay().nanos());
    }
  }
  return std::nullopt;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const google::rpc::Status rpc = ToRpcStatus(status);
  for (const auto& any : rpc.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) {
      ErrorMetadata metadata(info.metadata().begin(), info.metadata().end());
      absl::Status out = MakeError(static_cast<absl::StatusCode>(status.error_code()), info.reason(),
                                   status.error_message(), std::move(metadata));
      if (const auto delay = GrpcRetryDelay(status)) out = WithRetryDelay(std::move(out), *delay);
      return out;
    }
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace labshare
