#include "common/error.h"

#include <gtest/gtest.h>

#include "common/grpc_status.h"
#include "google/rpc/error_details.pb.h"

namespace labshare {
namespace {

TEST(MakeError, CarriesReasonAndMetadata) {
  absl::Status s = MakeError(absl::StatusCode::kNotFound, "INSTRUMENT_NOT_FOUND",
                             "instruments/x does not exist", {{"name", "instruments/x"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "instruments/x does not exist");
  EXPECT_EQ(ErrorReason(s), "INSTRUMENT_NOT_FOUND");
  EXPECT_EQ(ErrorMetadataOf(s).at("name"), "instruments/x");
}

TEST(ErrorReason, DefaultsToCodeName) {
  EXPECT_EQ(ErrorReason(absl::UnavailableError("x")), "UNAVAILABLE");
  EXPECT_EQ(CodeName(absl::StatusCode::kFailedPrecondition), "FAILED_PRECONDITION");
}

TEST(InvalidFields, ListsEveryViolationAndNamesTheFirst) {
  absl::Status s = InvalidFields({{"a.b", "required"}, {"c", "too long"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD");
  EXPECT_EQ(s.message(), "a.b: required (and 1 more)");
  auto v = FieldViolationsOf(s);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].field, "c");
  EXPECT_EQ(v[1].description, "too long");
}

TEST(Payloads, SurviveSeparatorsInValues) {
  absl::Status s = MakeError(absl::StatusCode::kAborted, "R", "m", {{"k:1", "v:2:3"}});
  EXPECT_EQ(ErrorMetadataOf(s).at("k:1"), "v:2:3");
}

TEST(ToGrpcStatus, PacksErrorInfoAndBadRequest) {
  grpc::Status g = ToGrpcStatus(InvalidField("instrument.category", "required"), "inventory.labshare");
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.error_message(), "instrument.category: required");
  google::rpc::Status rpc = ToRpcStatus(g);
  ASSERT_EQ(rpc.details_size(), 2);
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(rpc.details(0).UnpackTo(&info));
  EXPECT_EQ(info.reason(), "INVALID_FIELD");
  EXPECT_EQ(info.domain(), "inventory.labshare");
  google::rpc::BadRequest bad;
  ASSERT_TRUE(rpc.details(1).UnpackTo(&bad));
  ASSERT_EQ(bad.field_violations_size(), 1);
  EXPECT_EQ(bad.field_violations(0).field(), "instrument.category");
  EXPECT_EQ(GrpcErrorReason(g), "INVALID_FIELD");
}

TEST(ToGrpcStatus, HidesInternalDetails) {
  grpc::Status g = ToGrpcStatus(absl::InternalError("ERR wrong number of args for HSET"), "x");
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(g.error_message().find("HSET"), std::string::npos);
  EXPECT_EQ(GrpcErrorReason(g), "INTERNAL");
}

TEST(ToGrpcStatus, PassesCodesThrough) {
  for (auto code : {absl::StatusCode::kPermissionDenied, absl::StatusCode::kUnavailable,
                    absl::StatusCode::kAborted, absl::StatusCode::kAlreadyExists}) {
    grpc::Status g = ToGrpcStatus(MakeError(code, "R", "m"), "d");
    EXPECT_EQ(static_cast<int>(g.error_code()), static_cast<int>(code));
    EXPECT_EQ(g.error_message(), "m");
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus(), "d").ok());
}

}  // namespace
}  // namespace labshare
