#include "common/reflection_v1.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/impl/server_initializer.h>

#include "absl/base/call_once.h"
#include "grpc/health/v1/health.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace labshare {
namespace {

namespace pb = google::protobuf;
namespace rv1 = grpc::reflection::v1;

class ReflectionV1Service final : public rv1::ServerReflection::Service {
 public:
  ReflectionV1Service() : pool_(pb::DescriptorPool::generated_pool()) {
    // Link the health descriptor into the pool (grpc++ serves the service
    // without one).
    (void)grpc::health::v1::HealthCheckRequest::descriptor();
  }

  // The server's service names; owned by the server, read on each call.
  void SetServiceList(const std::vector<std::string>* services) { services_ = services; }

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<rv1::ServerReflectionResponse, rv1::ServerReflectionRequest>* stream)
      override {
    rv1::ServerReflectionRequest request;
    while (!context->IsCancelled() && stream->Read(&request)) {
      rv1::ServerReflectionResponse response;
      response.set_valid_host(request.host());
      *response.mutable_original_request() = request;
      Answer(request, &response);
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

 private:
  void Answer(const rv1::ServerReflectionRequest& request, rv1::ServerReflectionResponse* response) const {
    switch (request.message_request_case()) {
      case rv1::ServerReflectionRequest::kListServices: {
        auto* list = response->mutable_list_services_response();
        if (services_ != nullptr) {
          for (const std::string& name : *services_) list->add_service()->set_name(name);
        }
        return;
      }
      case rv1::ServerReflectionRequest::kFileByFilename:
        return SendFile(pool_->FindFileByName(request.file_by_filename()),
                        "no file " + request.file_by_filename(), response);
      case rv1::ServerReflectionRequest::kFileContainingSymbol:
        return SendFile(pool_->FindFileContainingSymbol(request.file_containing_symbol()),
                        "no symbol " + request.file_containing_symbol(), response);
      case rv1::ServerReflectionRequest::kFileContainingExtension: {
        const auto& ext = request.file_containing_extension();
        const pb::Descriptor* type = pool_->FindMessageTypeByName(ext.containing_type());
        const pb::FieldDescriptor* field =
            type == nullptr ? nullptr : pool_->FindExtensionByNumber(type, ext.extension_number());
        return SendFile(field == nullptr ? nullptr : field->file(),
                        "no extension " + std::to_string(ext.extension_number()) + " of " + ext.containing_type(),
                        response);
      }
      case rv1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
        const pb::Descriptor* type = pool_->FindMessageTypeByName(request.all_extension_numbers_of_type());
        if (type == nullptr) {
          return Error(grpc::StatusCode::NOT_FOUND, "no type " + request.all_extension_numbers_of_type(), response);
        }
        std::vector<const pb::FieldDescriptor*> extensions;
        pool_->FindAllExtensions(type, &extensions);
        auto* out = response->mutable_all_extension_numbers_response();
        out->set_base_type_name(type->full_name());
        for (const auto* e : extensions) out->add_extension_number(e->number());
        return;
      }
      case rv1::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
        break;
    }
    Error(grpc::StatusCode::UNIMPLEMENTED, "unknown reflection request", response);
  }

  static void Error(grpc::StatusCode code, const std::string& message, rv1::ServerReflectionResponse* response) {
    response->mutable_error_response()->set_error_code(static_cast<int32_t>(code));
    response->mutable_error_response()->set_error_message(message);
  }

  // The file and, depth first, every file it imports (each once).
  static void SendFile(const pb::FileDescriptor* file, const std::string& not_found,
                       rv1::ServerReflectionResponse* response) {
    if (file == nullptr) return Error(grpc::StatusCode::NOT_FOUND, not_found, response);
    std::set<std::string> seen;
    auto* out = response->mutable_file_descriptor_response();
    std::vector<const pb::FileDescriptor*> todo = {file};
    while (!todo.empty()) {
      const pb::FileDescriptor* f = todo.back();
      todo.pop_back();
      if (!seen.insert(f->name()).second) continue;
      pb::FileDescriptorProto proto;
      f->CopyTo(&proto);
      out->add_file_descriptor_proto(proto.SerializeAsString());
      for (int i = 0; i < f->dependency_count(); ++i) todo.push_back(f->dependency(i));
    }
  }

  const pb::DescriptorPool* pool_;
  const std::vector<std::string>* services_ = nullptr;
};

class ReflectionV1Plugin final : public grpc::ServerBuilderPlugin {
 public:
  std::string name() override { return "labshare_reflection_v1"; }
  void InitServer(grpc::ServerInitializer* si) override { si->RegisterService(service_); }
  void Finish(grpc::ServerInitializer* si) override { service_->SetServiceList(si->GetServiceList()); }
  void ChangeArguments(const std::string&, void*) override {}
  bool has_sync_methods() const override { return service_->has_synchronous_methods(); }
  bool has_async_methods() const override { return service_->has_async_methods(); }

 private:
  std::shared_ptr<ReflectionV1Service> service_ = std::make_shared<ReflectionV1Service>();
};

std::unique_ptr<grpc::ServerBuilderPlugin> CreateReflectionV1Plugin() {
  return std::make_unique<ReflectionV1Plugin>();
}

}  // namespace

void InitReflectionV1ServerBuilderPlugin() {
  static absl::once_flag once;
  absl::call_once(once, [] { grpc::ServerBuilder::InternalAddPluginFactory(&CreateReflectionV1Plugin); });
}

}  // namespace labshare
