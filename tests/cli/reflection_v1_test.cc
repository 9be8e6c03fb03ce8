// Server reflection: grpc.reflection.v1 (common/reflection_v1.cc) and the
// v1alpha service of libgrpc++ on a real labshare::Server, both able to
// describe the LabShare services and grpc.health.v1.Health.
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "common/server.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"

namespace labshare {
namespace {

namespace rv1 = grpc::reflection::v1;
using Stream = grpc::ClientReaderWriter<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse>;

class BookingStub final : public labshare::booking::v1::BookingService::Service {};

class ReflectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.service_name = "booking";
    // No authorizer: only /grpc.* methods are called, which it never sees.
    auto server = Server::Start(config, {&service_});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  // One request, one answer, on a stream of the given version ("v1" or
  // "v1alpha"; their messages are the same on the wire).
  rv1::ServerReflectionResponse Ask(const std::string& version, const rv1::ServerReflectionRequest& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const std::string path = "/grpc.reflection." + version + ".ServerReflection/ServerReflectionInfo";
    std::unique_ptr<Stream> stream;
    if (version == "v1") {
      stub_ = rv1::ServerReflection::NewStub(channel_);
      stream = stub_->ServerReflectionInfo(&ctx);
    } else {
      const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::BIDI_STREAMING);
      stream.reset(grpc::internal::ClientReaderWriterFactory<rv1::ServerReflectionRequest,
                                                             rv1::ServerReflectionResponse>::Create(channel_.get(),
                                                                                                    method, &ctx));
    }
    rv1::ServerReflectionResponse response;
    EXPECT_TRUE(stream->Write(request));
    EXPECT_TRUE(stream->WritesDone());
    EXPECT_TRUE(stream->Read(&response)) << path;
    rv1::ServerReflectionResponse extra;
    EXPECT_FALSE(stream->Read(&extra)) << "one answer per request";
    const grpc::Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << path << ": " << status.error_code() << " " << status.error_message();
    return response;
  }

  std::vector<std::string> Services(const std::string& version) {
    rv1::ServerReflectionRequest request;
    request.set_list_services("");
    const rv1::ServerReflectionResponse response = Ask(version, request);
    EXPECT_TRUE(response.has_list_services_response()) << response.DebugString();
    std::vector<std::string> names;
    for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
    std::sort(names.begin(), names.end());
    return names;
  }

  // The files of a file_containing_symbol answer, the first one first.
  std::vector<google::protobuf::FileDescriptorProto> FilesFor(const std::string& version, const std::string& symbol) {
    rv1::ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    const rv1::ServerReflectionResponse response = Ask(version, request);
    EXPECT_EQ(response.original_request().file_containing_symbol(), symbol);
    std::vector<google::protobuf::FileDescriptorProto> files;
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto f;
      EXPECT_TRUE(f.ParseFromString(bytes));
      files.push_back(f);
    }
    return files;
  }

  BookingStub service_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rv1::ServerReflection::Stub> stub_;
};

TEST_F(ReflectionTest, BothVersionsListTheServicesIncludingHealth) {
  const std::vector<std::string> want = {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                         "grpc.reflection.v1alpha.ServerReflection",
                                         "labshare.booking.v1.BookingService"};
  EXPECT_EQ(Services("v1"), want);
  EXPECT_EQ(Services("v1alpha"), want);
}

TEST_F(ReflectionTest, BothVersionsDescribeALabshareServiceAndHealth) {
  for (const std::string version : {"v1", "v1alpha"}) {
    SCOPED_TRACE(version);
    auto files = FilesFor(version, "labshare.booking.v1.BookingService");
    ASSERT_FALSE(files.empty());
    EXPECT_EQ(files[0].name(), "labshare/booking/v1/booking.proto");
    ASSERT_GE(files[0].service_size(), 1);
    EXPECT_EQ(files[0].service(0).name(), "BookingService");
    std::vector<std::string> names;
    for (const auto& f : files) names.push_back(f.name());
    // Its imports come along, each once.
    EXPECT_NE(std::find(names.begin(), names.end(), "google/protobuf/timestamp.proto"), names.end());
    EXPECT_NE(std::find(names.begin(), names.end(), "labshare/type/v1/types.proto"), names.end());
    std::vector<std::string> unique = names;
    std::sort(unique.begin(), unique.end());
    EXPECT_EQ(std::unique(unique.begin(), unique.end()), unique.end());

    for (const std::string symbol : {"grpc.health.v1.Health", "grpc.health.v1.Health.Check"}) {
      files = FilesFor(version, symbol);
      ASSERT_EQ(files.size(), 1u) << symbol;
      EXPECT_EQ(files[0].name(), "grpc/health/v1/health.proto");
      EXPECT_EQ(files[0].package(), "grpc.health.v1");
      ASSERT_EQ(files[0].service_size(), 1);
      EXPECT_EQ(files[0].service(0).name(), "Health");
      ASSERT_GE(files[0].service(0).method_size(), 2);
      EXPECT_EQ(files[0].service(0).method(0).name(), "Check");
      EXPECT_EQ(files[0].service(0).method(0).input_type(), ".grpc.health.v1.HealthCheckRequest");
      EXPECT_EQ(files[0].service(0).method(1).name(), "Watch");
    }
  }
}

TEST_F(ReflectionTest, V1ResolvesFilesByNameAndReportsUnknownSymbols) {
  rv1::ServerReflectionRequest request;
  request.set_file_by_filename("grpc/reflection/v1/reflection.proto");
  rv1::ServerReflectionResponse response = Ask("v1", request);
  ASSERT_EQ(response.file_descriptor_response().file_descriptor_proto_size(), 1);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(response.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.package(), "grpc.reflection.v1");

  request.set_file_containing_symbol("labshare.booking.v1.NoSuchService");
  response = Ask("v1", request);
  ASSERT_TRUE(response.has_error_response()) << response.DebugString();
  EXPECT_EQ(response.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

}  // namespace
}  // namespace labshare
