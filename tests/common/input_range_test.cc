// Every amount, count, duration, time and enum a request carries is checked
// before anything computes with it: INT64_MAX / INT64_MIN (INT32_* for int32
// fields), and an enum number its enum does not define (9999, -9999), in any
// such field of any unary RPC of inventory, booking, billing, usage and
// notify is INVALID_ARGUMENT / INVALID_FIELD naming that field, and
// nothing overflows on the way (this binary runs under UBSan with
// halt_on_error). And every List method of those services keeps types.proto's
// paging rules: a negative page_size is INVALID_FIELD naming page_size, a
// made-up page_token INVALID_PAGE_TOKEN.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <grpcpp/impl/codegen/client_unary_call.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/match.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/input_limits.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "google/rpc/error_details.pb.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/notify/v1/feeds.grpc.pb.h"
#include "labshare/notify/v1/notify.grpc.pb.h"
#include "labshare/notify/v1/webhooks.grpc.pb.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "services/billing/billing_store.h"
#include "services/booking/booking_service.h"
#include "services/notify/feed_module.h"
#include "services/notify/notify_mail_module.h"
#include "services/notify/webhook_module.h"
#include "services/booking/inventory_client.h"
#include "services/inventory/inventory_service.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;


// ------------------------------------------------------------ the walker

TEST(CheckInputRanges, LimitsAreInclusiveAndPathsNameTheField) {
  labshare::inventory::v1::CreateInstrumentRequest r;
  auto* in = r.mutable_instrument();
  in->mutable_original_value()->set_amount_minor(kMaxAmountMinor);
  EXPECT_TRUE(CheckInputRanges(r).ok());
  in->mutable_original_value()->set_amount_minor(kMaxAmountMinor + 1);
  absl::Status s = CheckInputRanges(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD");
  ASSERT_EQ(FieldViolationsOf(s).size(), 1u);
  EXPECT_EQ(FieldViolationsOf(s)[0].field, "instrument.original_value.amount_minor");
  in->mutable_original_value()->set_amount_minor(-kMaxAmountMinor);
  EXPECT_TRUE(CheckInputRanges(r).ok());

  auto* rules = in->add_modes()->mutable_slot_rules();
  rules->mutable_max_block()->set_seconds(kMaxDurationSeconds);
  EXPECT_TRUE(CheckInputRanges(r).ok());
  rules->mutable_max_block()->set_seconds(kMaxDurationSeconds + 1);
  EXPECT_EQ(FieldViolationsOf(CheckInputRanges(r))[0].field, "instrument.modes[0].slot_rules.max_block");
  rules->mutable_max_block()->set_seconds(1);
  rules->mutable_max_block()->set_nanos(-1);  // mixed signs
  EXPECT_FALSE(CheckInputRanges(r).ok());
  rules->mutable_max_block()->set_nanos(1'000'000'000);
  EXPECT_FALSE(CheckInputRanges(r).ok());
  rules->mutable_max_block()->set_nanos(0);
  in->set_daily_available_hours(kMaxInt32Input + 1);
  EXPECT_EQ(FieldViolationsOf(CheckInputRanges(r))[0].field, "instrument.daily_available_hours");
  in->set_daily_available_hours(8);
  EXPECT_TRUE(CheckInputRanges(r).ok());

  labshare::booking::v1::ListBookingsRequest list;
  list.set_page_size(std::numeric_limits<int32_t>::max());  // clamped by the list, not refused here
  EXPECT_TRUE(CheckInputRanges(list).ok());
}

// ------------------------------------------------------------ every RPC

// One numeric or enum leaf of a request type: a path of fields from the request.
struct Leaf {
  std::vector<const FieldDescriptor*> path;  // the last is the number itself
  std::string name;                          // "a.b[0].c" as the walker names it
  std::string reported;                      // the field the error should name
};

bool IsLeafMessage(const Descriptor* d) {
  const std::string& n = d->full_name();
  return n == "labshare.type.v1.Money" || n == "google.protobuf.Duration" || n == "google.protobuf.Timestamp";
}

void CollectLeaves(const Descriptor* d, std::vector<const FieldDescriptor*>& path, const std::string& name,
                   int depth, std::vector<Leaf>* out) {
  if (depth > 5) return;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_map()) continue;
    std::string fname = name.empty() ? f->name() : name + "." + f->name();
    if (f->is_repeated()) fname += "[0]";
    path.push_back(f);
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64:
        if (f->name() != "page_size") out->push_back({path, fname, fname});
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        out->push_back({path, fname, fname});
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        const Descriptor* m = f->message_type();
        if (IsLeafMessage(m)) {
          const FieldDescriptor* inner =
              m->FindFieldByName(m->full_name() == "labshare.type.v1.Money" ? "amount_minor" : "seconds");
          path.push_back(inner);
          out->push_back({path, fname + "." + inner->name(),
                          m->full_name() == "labshare.type.v1.Money" ? fname + ".amount_minor" : fname});
          path.pop_back();
        } else if (absl::StartsWith(m->full_name(), "labshare.")) {
          CollectLeaves(m, path, fname, depth + 1, out);
        }
        break;
      }
      default:
        break;
    }
    path.pop_back();
  }
}

// Sets the leaf to `value` in a fresh request.
std::unique_ptr<Message> RequestWith(const Message& prototype, const Leaf& leaf, bool max) {
  std::unique_ptr<Message> req(prototype.New());
  Message* m = req.get();
  for (size_t i = 0; i + 1 < leaf.path.size(); ++i) {
    const FieldDescriptor* f = leaf.path[i];
    m = f->is_repeated() ? m->GetReflection()->AddMessage(m, f) : m->GetReflection()->MutableMessage(m, f);
  }
  const FieldDescriptor* f = leaf.path.back();
  const auto* r = m->GetReflection();
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
    // A number the enum does not define (proto3 keeps it on the wire).
    const int v = max ? 9999 : -9999;
    f->is_repeated() ? r->AddEnumValue(m, f, v) : r->SetEnumValue(m, f, v);
  } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT64) {
    const int64_t v = max ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
    f->is_repeated() ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
  } else {
    const int32_t v = max ? std::numeric_limits<int32_t>::max() : std::numeric_limits<int32_t>::min();
    f->is_repeated() ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
  }
  return req;
}

class InputRangeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    inv_store_ = std::make_unique<inventory::InventoryStore>(pool_.get());
    inv_manager_ = std::make_unique<inventory::InventoryManager>(inv_store_.get(), &clock_, labshare::testing::TestPageTokens());
    inv_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), inventory::InventoryPolicy(), &clock_);
    inv_service_ = std::make_unique<inventory::InventoryService>(inv_manager_.get(), inv_auth_.get());
    inv_server_ = Start("inventory", inv_auth_.get(), inv_service_.get());
    inv_client_ = std::make_unique<booking::InventoryClient>(
        labshare::testing::TlsChannel(inv_server_->address(), "booking"),
        &clock_, absl::ZeroDuration());
    bk_store_ = std::make_unique<booking::BookingStore>(pool_.get());
    bk_manager_ = std::make_unique<booking::BookingManager>(bk_store_.get(), inv_client_.get(), &clock_, labshare::testing::TestPageTokens());
    bk_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), booking::BookingPolicy(), &clock_);
    bk_service_ = std::make_unique<booking::BookingService>(bk_manager_.get(), bk_auth_.get());
    bk_server_ = Start("booking", bk_auth_.get(), bk_service_.get());
    figures_ = std::make_unique<usage::UsageFigures>(pool_.get(), &clock_, absl::UTCTimeZone(), labshare::testing::TestPageTokens());
    usage::AuditChainOptions audit_options;
    audit_options.clock = &clock_;
    audit_ = std::make_unique<usage::AuditChain>(pool_.get(), labshare::testing::TestPageTokens(), audit_options);
    us_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), usage::UsagePolicy(), &clock_);
    us_service_ = std::make_unique<usage::UsageService>(figures_.get(), audit_.get(), us_auth_.get());
    us_server_ = Start("usage", us_auth_.get(), us_service_.get());
    bl_reader_ = std::make_unique<billing::GrpcInventoryReader>(
        labshare::testing::TlsChannel(inv_server_->address(), "billing"));
    bl_store_ = std::make_unique<billing::BillingStore>(pool_.get());
    bl_manager_ = std::make_unique<billing::BillingManager>(bl_store_.get(), bl_reader_.get(), &clock_,
                                                            *billing::LoadBillingTimeZone("Asia/Shanghai"),
                                                            labshare::testing::TestPageTokens());
    bl_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), billing::BillingPolicy(), &clock_);
    bl_service_ = std::make_unique<billing::BillingService>(bl_manager_.get(), bl_auth_.get());
    bl_server_ = Start("billing", bl_auth_.get(), bl_service_.get());
    // notify: its three modules on one server, as labshare-notify runs them.
    notify::NotifyContext nc;
    nc.redis = pool_.get();
    nc.clock = &clock_;
    nc.wall = &clock_;
    nc.inventory = labshare::testing::TlsChannel(inv_server_->address(), "notify");
    nc.console_url = "https://labshare.example.org";
    nc.consumer = "input-range-test";
    mail_ = std::make_unique<notify::MailModule>(nc, notify::MailOptions());
    feeds_ = std::make_unique<notify::FeedModule>(nc, notify::FeedOptions());
    hooks_ = std::make_unique<notify::WebhookModule>(nc, notify::WebhookOptions());
    std::vector<grpc::Service*> services;
    for (notify::NotifyModule* m : std::initializer_list<notify::NotifyModule*>{mail_.get(), feeds_.get(), hooks_.get()}) {
      m->AddPolicy(&nt_policy_);
    }
    nt_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), nt_policy_, &clock_);
    for (notify::NotifyModule* m : std::initializer_list<notify::NotifyModule*>{mail_.get(), feeds_.get(), hooks_.get()}) {
      for (grpc::Service* svc : m->Services(nt_auth_.get())) services.push_back(svc);
    }
    ServerConfig config;
    config.service_name = "notify";
    config.redis = pool_.get();
    config.authorizer = nt_auth_.get();
    config.tls = labshare::testing::TestPki::Shared().ServerTls("notify");
    auto server = Server::Start(config, services);
    ASSERT_TRUE(server.ok()) << server.status();
    nt_server_ = *std::move(server);
    // Every role at once: the role check passes, so the range check answers.
    Principal p{"root", "org1",
                {Role::kLabUser, Role::kFacilityStaff, Role::kMemberBillingAdmin, Role::kConsortiumAdmin,
                 Role::kAuditor},
                clock_.Now() + absl::Hours(1)};
    token_ = labshare::testing::Mint(p, clock_.Now());
  }
  void TearDown() override {
    nt_server_.reset();
    bl_server_.reset();
    us_server_.reset();
    bk_server_.reset();
    inv_server_.reset();
  }

  std::unique_ptr<Server> Start(const std::string& name, Authorizer* auth, grpc::Service* service) {
    ServerConfig config;
    config.service_name = name;
    config.redis = pool_.get();
    config.authorizer = auth;
    config.tls = labshare::testing::TestPki::Shared().ServerTls(name);
    auto server = Server::Start(config, {service});
    EXPECT_TRUE(server.ok()) << server.status();
    return *std::move(server);
  }

  // Calls `method` of the service behind `server` with `req`, as a holder of
  // every role; SERVICE-only methods (RecordQualificationUse) as booking
  // calls them: its certificate, no token.
  grpc::Status Call(const Server& server, const google::protobuf::MethodDescriptor* method, const Message& req) {
    const std::string full = absl::StrCat("/", method->service()->full_name(), "/", method->name());
    auto call = [&](const std::string& as, bool with_token) {
      auto channel = labshare::testing::TlsChannel(server.address(), as);
      grpc::ClientContext ctx;
      if (with_token) ctx.AddMetadata("authorization", "Bearer " + token_);
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      grpc::Slice slice(req.SerializeAsString());
      grpc::ByteBuffer request(&slice, 1), response;
      return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
          channel.get(), grpc::internal::RpcMethod(full.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), &ctx,
          request, &response);
    };
    grpc::Status s = call("", true);
    if (GrpcErrorReason(s) == "ROLE_NOT_ALLOWED") s = call("booking", false);
    return s;
  }

  static const Message& Prototype(const google::protobuf::MethodDescriptor* method) {
    return *google::protobuf::MessageFactory::generated_factory()->GetPrototype(method->input_type());
  }

  // Every unary method of `service`, every numeric leaf, both extremes.
  // Returns how many calls were checked.
  int CheckService(const Server& server, const google::protobuf::ServiceDescriptor* service) {
    int checked = 0;
    for (int i = 0; i < service->method_count(); ++i) {
      const auto* method = service->method(i);
      if (method->client_streaming() || method->server_streaming()) continue;
      std::vector<Leaf> leaves;
      std::vector<const FieldDescriptor*> path;
      CollectLeaves(method->input_type(), path, "", 0, &leaves);
      for (const Leaf& leaf : leaves) {
        for (bool max : {true, false}) {
          auto req = RequestWith(Prototype(method), leaf, max);
          const grpc::Status s = Call(server, method, *req);
          const std::string what = absl::StrCat(method->full_name(), " ", leaf.name, "=", max ? "MAX" : "MIN");
          if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED) continue;
          EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what << ": " << s.error_message();
          EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << what;
          const absl::Status back = FromGrpcStatus(s);
          const auto md = ErrorMetadataOf(back);
          EXPECT_EQ(md.count("field") ? md.at("field") : "", leaf.reported) << what;
          ++checked;
        }
      }
    }
    return checked;
  }

  static inline const std::map<std::string, std::string> kRequired = {
      {"labshare.inventory.v1.InventoryService.ListRates", "parent: 'instruments/sem-1'"},
      {"labshare.inventory.v1.InventoryService.ListQualifications", "parent: 'instruments/sem-1'"},
      {"labshare.inventory.v1.InventoryService.ListMaintenanceWindows", "parent: 'instruments/sem-1'"},
      {"labshare.inventory.v1.InventoryService.ListMembershipChanges", "parent: 'organizations/org1'"},
      {"labshare.booking.v1.BookingService.SearchAvailableInstruments",
       "category: 'electron-microscopy' range { start_time { seconds: 1798761600 } end_time { seconds: 1798848000 } }"},
      {"labshare.usage.v1.UsageService.QueryUsage",
       "range { start_time { seconds: 1798761600 } end_time { seconds: 1801440000 } }"},
      {"labshare.usage.v1.UsageService.GetSharingMatrix",
       "range { start_time { seconds: 1798761600 } end_time { seconds: 1801440000 } }"},
      // The year is checked before the page (usage.proto, GetAnnualReport).
      {"labshare.usage.v1.UsageService.GetAnnualReport", "year: 2026"},
      {"labshare.billing.v1.BillingService.ListBalances", "parent: 'organizations/org1'"},
      {"labshare.notify.v1.WebhookService.ListWebhooks", "parent: 'organizations/org1'"},
      {"labshare.notify.v1.WebhookService.ListWebhookDeliveries", "parent: 'organizations/org1/webhooks/erp'"},
      {"labshare.notify.v1.CalendarFeedService.ListCalendarFeeds", "parent: 'users/root'"},
      {"labshare.billing.v1.BillingService.GetOwnerIncomeReport",
       "owner_organization: 'organizations/org1' interval { start_time { seconds: 1798761600 } end_time { seconds: 1801440000 } }"},
      {"labshare.billing.v1.BillingService.GetOrganizationStatement",
       "organization: 'organizations/org1' interval { start_time { seconds: 1798761600 } end_time { seconds: 1801440000 } }"},
  };

  // types.proto's paging rules on every method whose request has page_size:
  // page_size -1 is INVALID_ARGUMENT / INVALID_FIELD naming page_size; a
  // page_token that no server issued is INVALID_ARGUMENT /
  // INVALID_PAGE_TOKEN. Returns how many methods were checked.
  int CheckPaging(const Server& server, const google::protobuf::ServiceDescriptor* service) {
    int checked = 0;
    for (int i = 0; i < service->method_count(); ++i) {
      const auto* method = service->method(i);
      const Descriptor* in = method->input_type();
      const FieldDescriptor* size = in->FindFieldByName("page_size");
      const FieldDescriptor* token = in->FindFieldByName("page_token");
      if (size == nullptr || method->client_streaming() || method->server_streaming()) continue;
      // The fields a request needs before paging matters (a parent, a
      // category, a range), so the answer is about paging.
      auto fresh = [&] {
        std::unique_ptr<Message> m(Prototype(method).New());
        if (auto it = kRequired.find(method->full_name()); it != kRequired.end()) {
          EXPECT_TRUE(google::protobuf::TextFormat::MergeFromString(it->second, m.get())) << method->full_name();
        }
        return m;
      };
      std::unique_ptr<Message> req = fresh();
      req->GetReflection()->SetInt32(req.get(), size, -1);
      grpc::Status s = Call(server, method, *req);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method->full_name() << ": " << s.error_message();
      EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << method->full_name();
      const auto md = ErrorMetadataOf(FromGrpcStatus(s));
      EXPECT_EQ(md.count("field") ? md.at("field") : "", "page_size") << method->full_name();
      if (token != nullptr) {
        req = fresh();
        req->GetReflection()->SetString(req.get(), token, "bm90LWEtdG9rZW4");  // "not-a-token", base64url
        s = Call(server, method, *req);
        EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method->full_name() << ": " << s.error_message();
        EXPECT_EQ(GrpcErrorReason(s), "INVALID_PAGE_TOKEN") << method->full_name() << ": " << s.error_message();
      }
      ++checked;
    }
    return checked;
  }

  testing::RedisServer* redis_ = nullptr;
  FakeClock clock_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<inventory::InventoryStore> inv_store_;
  std::unique_ptr<inventory::InventoryManager> inv_manager_;
  std::unique_ptr<Authorizer> inv_auth_;
  std::unique_ptr<inventory::InventoryService> inv_service_;
  std::unique_ptr<Server> inv_server_;
  std::unique_ptr<booking::InventoryClient> inv_client_;
  std::unique_ptr<booking::BookingStore> bk_store_;
  std::unique_ptr<booking::BookingManager> bk_manager_;
  std::unique_ptr<Authorizer> bk_auth_;
  std::unique_ptr<booking::BookingService> bk_service_;
  std::unique_ptr<Server> bk_server_;
  std::unique_ptr<usage::UsageFigures> figures_;
  std::unique_ptr<usage::AuditChain> audit_;
  std::unique_ptr<Authorizer> us_auth_;
  std::unique_ptr<usage::UsageService> us_service_;
  std::unique_ptr<Server> us_server_;
  std::unique_ptr<billing::GrpcInventoryReader> bl_reader_;
  std::unique_ptr<billing::BillingStore> bl_store_;
  std::unique_ptr<billing::BillingManager> bl_manager_;
  std::unique_ptr<Authorizer> bl_auth_;
  std::unique_ptr<billing::BillingService> bl_service_;
  std::unique_ptr<Server> bl_server_;
  std::unique_ptr<notify::MailModule> mail_;
  std::unique_ptr<notify::FeedModule> feeds_;
  std::unique_ptr<notify::WebhookModule> hooks_;
  MethodPolicy nt_policy_;
  std::unique_ptr<Authorizer> nt_auth_;
  std::unique_ptr<Server> nt_server_;
  std::string token_;
};

const google::protobuf::ServiceDescriptor* ServiceNamed(const std::string& name) {
  return google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
}

TEST_F(InputRangeTest, InventoryRefusesEveryExtremeNumber) {
  EXPECT_GT(CheckService(*inv_server_, ServiceNamed(labshare::inventory::v1::InventoryService::service_full_name())), 20);
}

TEST_F(InputRangeTest, BookingRefusesEveryExtremeNumber) {
  EXPECT_GT(CheckService(*bk_server_, ServiceNamed(labshare::booking::v1::BookingService::service_full_name())), 20);
}

TEST_F(InputRangeTest, BillingRefusesEveryExtremeNumber) {
  EXPECT_GT(CheckService(*bl_server_, ServiceNamed(labshare::billing::v1::BillingService::service_full_name())), 20);
}

constexpr const char* kNotifyServices[] = {"labshare.notify.v1.NotificationService",
                                           "labshare.notify.v1.CalendarFeedService",
                                           "labshare.notify.v1.WebhookService"};

TEST_F(InputRangeTest, NotifyRefusesEveryExtremeNumber) {
  int checked = 0;
  for (const char* name : kNotifyServices) checked += CheckService(*nt_server_, ServiceNamed(name));
  EXPECT_GT(checked, 10);
}

TEST_F(InputRangeTest, EveryListKeepsThePagingRules) {
  EXPECT_GE(CheckPaging(*inv_server_, ServiceNamed(labshare::inventory::v1::InventoryService::service_full_name())), 8);
  EXPECT_GE(CheckPaging(*bk_server_, ServiceNamed(labshare::booking::v1::BookingService::service_full_name())), 6);
  EXPECT_GE(CheckPaging(*bl_server_, ServiceNamed(labshare::billing::v1::BillingService::service_full_name())), 10);
  EXPECT_GE(CheckPaging(*us_server_, ServiceNamed(labshare::usage::v1::UsageService::service_full_name())), 5);
  int notify = 0;
  for (const char* name : kNotifyServices) notify += CheckPaging(*nt_server_, ServiceNamed(name));
  EXPECT_GE(notify, 4);
}

TEST_F(InputRangeTest, UsageRefusesEveryExtremeNumber) {
  EXPECT_GT(CheckService(*us_server_, ServiceNamed(labshare::usage::v1::UsageService::service_full_name())), 10);
}

}  // namespace
}  // namespace labshare
