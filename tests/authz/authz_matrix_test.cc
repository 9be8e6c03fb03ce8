// Authorization as a client meets it: the four services in one process on a
// real Redis (the booking fixture: inventory and booking; plus billing and
// usage), reached through real gRPC channels with signed tokens of every
// role, in the resource's own user and organisations and in another.
//
// 1. Every method of every service, with every role: a role the policy table
//    does not admit gets PERMISSION_DENIED ROLE_NOT_ALLOWED, an admitted one
//    never does (so a manager cannot deny a role the table admits).
// 2. The methods on a resource (a booking, a lease, a service order, a
//    charge, a deposit, quotas, usage figures), with every role x {the
//    resource's user, its party organisation, the instrument's owner, an
//    outsider}: allowed exactly where the table's scope says so, otherwise
//    PERMISSION_DENIED with ROLE_NOT_ALLOWED, USER_SCOPE or
//    ORGANIZATION_SCOPE. Requests are otherwise invalid where they can be,
//    so a denied caller must be told it is denied before anything is
//    validated (types.proto: authorization before validation).
// The table itself is checked against the proto "Roles:" lines by
// authz_contract_test.
#include <grpcpp/generic/generic_stub.h>

#include <future>

#include "absl/strings/str_cat.h"
#include "common/events.h"
#include "common/grpc_status.h"
#include "google/protobuf/descriptor.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_service.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace us = labshare::usage::v1;
namespace iv = labshare::inventory::v1;

// The roles a token can carry (SERVICE comes only from a service
// certificate: a token claiming it is refused, see below).
const std::vector<Role>& AllRoleList() {
  static const std::vector<Role> kAll = {Role::kLabUser, Role::kFacilityStaff, Role::kMemberBillingAdmin,
                                         Role::kConsortiumAdmin, Role::kAuditor};
  return kAll;
}

// Who calls, relative to the resource: ana@lab is its user, lab its party
// (payer, lessee, client, the organisation a filter names), owner owns the
// instrument, outsider is none of these.
struct Side {
  const char* name;
  const char* user;
  const char* org;
};
constexpr Side kSides[] = {{"self", "ana", "lab"}, {"party", "bob", "lab"}, {"owner", "sam", "owner"},
                           {"other", "zed", "outsider"}};

class AuthzMatrix : public booking::BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    // Billing, reading inventory in process and consuming booking's outboxes.
    reader_ = std::make_unique<billing::testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<billing::BillingStore>(pool_.get());
    billing_ = std::make_unique<billing::BillingManager>(bstore_.get(), reader_.get(), &clock_,
                                                         *billing::LoadBillingTimeZone("Asia/Shanghai"), labshare::testing::TestPageTokens());
    for (int p = 0; p < booking::kPartitions; ++p) {
      ConsumerOptions o;
      o.stream = booking::keys::Outbox(p);
      o.group = billing::kBookingEventsGroup;
      o.consumer = "authz-test";
      o.block = absl::ZeroDuration();
      consumers_.push_back(std::make_unique<EventConsumer>(pool_.get(), o));
      ASSERT_TRUE(consumers_.back()->EnsureGroup().ok());
    }
    billing_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), billing::BillingPolicy(), &clock_);
    billing_service_ = std::make_unique<billing::BillingService>(billing_.get(), billing_auth_.get());
    billing_server_ = Start("billing", billing_auth_.get(), billing_service_.get());
    // Usage.
    figures_ = std::make_unique<usage::UsageFigures>(pool_.get(), &clock_, absl::UTCTimeZone(), labshare::testing::TestPageTokens());
    usage::AuditChainOptions audit_options;
    audit_options.clock = &clock_;
    audit_ = std::make_unique<usage::AuditChain>(pool_.get(), labshare::testing::TestPageTokens(), audit_options);
    usage_auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), usage::UsagePolicy(), &clock_);
    usage_service_ = std::make_unique<usage::UsageService>(figures_.get(), audit_.get(), usage_auth_.get());
    usage_server_ = Start("usage", usage_auth_.get(), usage_service_.get());
    services_ = {
        {"labshare.inventory.v1.InventoryService", {inv_server_.get(), &inventory::InventoryPolicy()}},
        {"labshare.booking.v1.BookingService", {server_.get(), &booking::BookingPolicy()}},
        {"labshare.billing.v1.BillingService", {billing_server_.get(), &billing::BillingPolicy()}},
        {"labshare.usage.v1.UsageService", {usage_server_.get(), &usage::UsagePolicy()}},
    };
  }

  void Drain() {
    for (int round = 0; round < 10; ++round) {
      int n = 0;
      for (auto& c : consumers_) {
        auto applied = c->PollOnce([&](const StreamEvent& e) { return billing_->ApplyBookingEvent(e); });
        ASSERT_TRUE(applied.ok()) << applied.status();
        n += *applied;
      }
      if (n == 0) break;
    }
  }

  // One call by full method name, with any request message, through the
  // generic stub: the same path and interceptor as a generated client.
  // SERVICE callers are a service's certificate (booking's), never a token.
  grpc::Status Invoke(const std::string& service, const std::string& method,
                      const google::protobuf::Message& request, const std::string& token, bool as_service = false) {
    const auto& svc = services_.at(service);
    auto& channel = channels_[{svc.server, as_service}];
    if (channel == nullptr) channel = as_service ? ServiceChannel(*svc.server, "booking") : Channel(*svc.server);
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    if (!as_service) ctx.AddMetadata("authorization", "Bearer " + token);
    const std::string bytes = request.SerializeAsString();
    grpc::Slice slice(bytes);
    grpc::ByteBuffer req(&slice, 1), resp;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, absl::StrCat("/", service, "/", method), grpc::StubOptions(), &req, &resp,
                   [&](grpc::Status s) { done.set_value(std::move(s)); });
    return done.get_future().get();
  }

  std::string TokenOf(Role role, const Side& side) {
    return Token(role == Role::kService ? "svc" : side.user, side.org, {role});
  }

  static unsigned ScopesOf(const MethodPolicy& policy, const std::string& method, Role role) {
    auto m = policy.rules().find(method);
    if (m == policy.rules().end()) return 0;
    auto r = m->second.find(role);
    return r == m->second.end() ? 0 : r->second;
  }

  // What the contract says a caller gets: "" (allowed) or the denial reason.
  static std::string Expected(unsigned scopes, const Side& side, Role role) {
    if (scopes == 0) return "ROLE_NOT_ALLOWED";
    if (scopes & kScopeAny) return "";
    const std::string org = side.org;
    if ((scopes & kScopeSelf) && std::string(side.user) == "ana" && role != Role::kService) return "";
    if ((scopes & (kScopeParty | kScopePayer)) && org == "lab") return "";  // lab pays
    if ((scopes & kScopeOwner) && org == "owner") return "";
    return (scopes & (kScopeParty | kScopePayer | kScopeOwner)) ? "ORGANIZATION_SCOPE" : "USER_SCOPE";
  }

  // Part 2: one method on one resource, every role from every side.
  void Matrix(const std::string& service, const std::string& method, const google::protobuf::Message& request) {
    const MethodPolicy& policy = *services_.at(service).policy;
    const std::string full = absl::StrCat("/", service, "/", method);
    ASSERT_TRUE(policy.Knows(full)) << full;
    for (Role role : AllRoleList()) {
      for (const Side& side : kSides) {
        const std::string want = Expected(ScopesOf(policy, full, role), side, role);
        const grpc::Status got = Invoke(service, method, request, TokenOf(role, side), role == Role::kService);
        const std::string where = absl::StrCat(method, " as ", RoleName(role), " (", side.name, ": users/",
                                               side.user, " of organizations/", side.org, ")");
        if (want.empty()) {
          EXPECT_NE(got.error_code(), grpc::StatusCode::PERMISSION_DENIED)
              << where << " is allowed by the contract but got " << GrpcErrorReason(got) << ": "
              << got.error_message();
        } else {
          EXPECT_EQ(got.error_code(), grpc::StatusCode::PERMISSION_DENIED)
              << where << " must be denied (" << want << ") but got " << got.error_code() << " "
              << GrpcErrorReason(got) << ": " << got.error_message();
          if (got.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
            EXPECT_EQ(GrpcErrorReason(got), want) << where << ": " << got.error_message();
          }
        }
      }
    }
  }

  struct Svc {
    Server* server;
    const MethodPolicy* policy;
  };
  std::map<std::string, Svc> services_;
  std::map<std::pair<Server*, bool>, std::shared_ptr<grpc::Channel>> channels_;  // (server, as service)
  std::unique_ptr<billing::testing::DirectInventory> reader_;
  std::unique_ptr<billing::BillingStore> bstore_;
  std::unique_ptr<billing::BillingManager> billing_;
  std::vector<std::unique_ptr<EventConsumer>> consumers_;
  std::unique_ptr<Authorizer> billing_auth_;
  std::unique_ptr<billing::BillingService> billing_service_;
  std::unique_ptr<Server> billing_server_;
  std::unique_ptr<usage::UsageFigures> figures_;
  std::unique_ptr<usage::AuditChain> audit_;
  std::unique_ptr<Authorizer> usage_auth_;
  std::unique_ptr<usage::UsageService> usage_service_;
  std::unique_ptr<Server> usage_server_;
};

// ---------------------------------------------------------------- 1. roles

TEST_F(AuthzMatrix, EveryMethodAdmitsExactlyTheRolesOfItsTable) {
  int calls = 0;
  for (const auto& [service, svc] : services_) {
    const auto* d = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    ASSERT_NE(d, nullptr) << service;
    for (int i = 0; i < d->method_count(); ++i) {
      const std::string method = d->method(i)->name();
      const std::string full = absl::StrCat("/", service, "/", method);
      EXPECT_TRUE(svc.policy->Knows(full)) << full << " has no entry in its service's policy table";
      const auto* prototype =
          google::protobuf::MessageFactory::generated_factory()->GetPrototype(d->method(i)->input_type());
      for (Role role : AllRoleList()) {
        for (const Side& side : {kSides[1], kSides[3]}) {
          const grpc::Status got = Invoke(service, method, *prototype, TokenOf(role, side), role == Role::kService);
          ++calls;
          const bool denied_role = got.error_code() == grpc::StatusCode::PERMISSION_DENIED &&
                                   GrpcErrorReason(got) == "ROLE_NOT_ALLOWED";
          const bool admitted = ScopesOf(*svc.policy, full, role) != 0;
          EXPECT_EQ(denied_role, !admitted)
              << method << " as " << RoleName(role) << " of organizations/" << side.org << ": table says "
              << (admitted ? "admitted" : "not admitted") << ", got " << got.error_code() << " "
              << GrpcErrorReason(got) << ": " << got.error_message();
        }
      }
    }
  }
  EXPECT_GT(calls, 1000);
}

// ------------------------------------------------- tokens not from the issuer

// Every method of the four services refuses, before anything else, a token
// the issuer did not mint as it is: signed by another key (also one posing
// under the issuer's kid), for another audience or issuer, living longer
// than the maximum, alg none or HS256, or claiming the service role.
TEST_F(AuthzMatrix, ForgedAndMisdirectedTokensAreUnauthenticatedOnEveryRpc) {
  const auto forged = labshare::testing::ForgedTokens(clock_.Now());
  ASSERT_EQ(forged.size(), 8u);
  int calls = 0;
  for (const auto& [service, svc] : services_) {
    const auto* d = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    ASSERT_NE(d, nullptr) << service;
    for (int i = 0; i < d->method_count(); ++i) {
      const auto* prototype =
          google::protobuf::MessageFactory::generated_factory()->GetPrototype(d->method(i)->input_type());
      for (const auto& [what, token] : forged) {
        const grpc::Status got = Invoke(service, d->method(i)->name(), *prototype, token);
        ++calls;
        EXPECT_EQ(got.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << service << "/" << d->method(i)->name() << " with " << what << ": " << got.error_message();
        EXPECT_EQ(GrpcErrorReason(got), "INVALID_TOKEN") << service << "/" << d->method(i)->name() << " with " << what;
      }
    }
  }
  EXPECT_GT(calls, 400);
}

// ---------------------------------------------------------------- 2. scopes

TEST_F(AuthzMatrix, BookingMethodsFollowTheScopeOfTheTable) {
  const std::string kBooking = "labshare.booking.v1.BookingService";
  bk::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  // Creation: for whom; every request lacks its interval.
  bk::CreateBookingRequest create;
  create.mutable_booking()->set_instrument("instruments/tem");
  create.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  create.mutable_booking()->set_user("users/ana");
  Matrix(kBooking, "CreateBooking", create);
  bk::GetBookingRequest get;
  get.set_name(b.name());
  Matrix(kBooking, "GetBooking", get);
  bk::RejectBookingRequest reject;  // no reason
  reject.set_name(b.name());
  Matrix(kBooking, "RejectBooking", reject);
  bk::ApproveBookingRequest approve;
  approve.set_name(b.name());
  Matrix(kBooking, "ApproveBooking", approve);
  bk::CheckInRequest in;  // too early for anyone admitted
  in.set_name(b.name());
  Matrix(kBooking, "CheckIn", in);
  bk::CheckOutRequest out;
  out.set_name(b.name());
  Matrix(kBooking, "CheckOut", out);
  bk::CancelBookingRequest cancel;
  cancel.set_name(b.name());
  Matrix(kBooking, "CancelBooking", cancel);
  // Another organisation's availability.
  bk::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  q.set_organization("organizations/lab");
  Matrix(kBooking, "QueryAvailability", q);  // no range
  bk::SearchAvailableInstrumentsRequest s;
  s.set_organization("organizations/lab");
  Matrix(kBooking, "SearchAvailableInstruments", s);  // no category
  // Quotas of an organisation on an instrument.
  bk::ListQuotasRequest quotas;
  quotas.set_organization("organizations/lab");
  quotas.set_instrument("instruments/tem");
  Matrix(kBooking, "ListQuotas", quotas);
  // Staff naming another organisation without an instrument filter: each
  // row is shown as the staff may see it (that organisation's quotas on the
  // instruments its own organisation owns or operates), so staff of an
  // organisation that runs none of them get an empty page, not a refusal.
  quotas.clear_instrument();
  bk::ListQuotasResponse none;
  const grpc::Status empty = Call(stub_.get(), &bk::BookingService::Stub::ListQuotas, quotas, &none,
                              Token("zed", "outsider", {Role::kFacilityStaff}));
  EXPECT_TRUE(empty.ok()) << GrpcErrorReason(empty) << ": " << empty.error_message();
  EXPECT_EQ(none.quotas_size(), 0);
}

TEST_F(AuthzMatrix, LeaseMethodsFollowTheScopeOfTheTable) {
  const std::string kBooking = "labshare.booking.v1.BookingService";
  bk::RequestLeaseRequest request;
  request.mutable_lease()->set_instrument("instruments/afm");
  request.mutable_lease()->set_contact_user("users/ana");
  Matrix(kBooking, "RequestLease", request);  // no term
  *request.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
  *request.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
  bk::Lease lease;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, request, &lease, ana_).ok());
  bk::GetLeaseRequest get;
  get.set_name(lease.name());
  Matrix(kBooking, "GetLease", get);
  bk::ApproveLeaseRequest approve;  // no contract
  approve.set_name(lease.name());
  Matrix(kBooking, "ApproveLease", approve);
  bk::RejectLeaseRequest reject;  // no reason
  reject.set_name(lease.name());
  Matrix(kBooking, "RejectLease", reject);
  bk::RecordHandoverRequest handover;  // no condition notes
  handover.set_name(lease.name());
  Matrix(kBooking, "RecordHandover", handover);
  bk::RecordReturnRequest ret;  // no condition notes
  ret.set_name(lease.name());
  Matrix(kBooking, "RecordReturn", ret);
  bk::ExtendLeaseRequest extend;  // no new end
  extend.set_name(lease.name());
  Matrix(kBooking, "ExtendLease", extend);
  bk::CloseLeaseRequest close;  // not returned
  close.set_name(lease.name());
  Matrix(kBooking, "CloseLease", close);
  bk::CancelLeaseRequest cancel;
  cancel.set_name(lease.name());
  Matrix(kBooking, "CancelLease", cancel);
}

TEST_F(AuthzMatrix, ServiceOrderMethodsFollowTheScopeOfTheTable) {
  const std::string kBooking = "labshare.booking.v1.BookingService";
  bk::CreateServiceOrderRequest create;
  create.mutable_service_order()->set_instrument("instruments/tem");
  create.mutable_service_order()->set_service_entry_id("imaging");
  create.mutable_service_order()->set_requester("users/ana");
  Matrix(kBooking, "CreateServiceOrder", create);  // no samples
  create.mutable_service_order()->set_sample_count(2);
  bk::ServiceOrder order;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CreateServiceOrder, create, &order, ana_).ok());
  bk::GetServiceOrderRequest get;
  get.set_name(order.name());
  Matrix(kBooking, "GetServiceOrder", get);
  bk::IssueQuoteRequest quote;  // no fee, no validity
  quote.set_name(order.name());
  Matrix(kBooking, "IssueQuote", quote);
  bk::AcceptQuoteRequest accept;  // nothing quoted
  accept.set_name(order.name());
  Matrix(kBooking, "AcceptQuote", accept);
  bk::ReceiveSamplesRequest samples;
  samples.set_name(order.name());
  Matrix(kBooking, "ReceiveSamples", samples);
  bk::ScheduleServiceRequest schedule;  // no interval
  schedule.set_name(order.name());
  Matrix(kBooking, "ScheduleService", schedule);
  bk::StartServiceRequest start;
  start.set_name(order.name());
  Matrix(kBooking, "StartService", start);
  bk::DeliverReportRequest deliver;  // no report
  deliver.set_name(order.name());
  Matrix(kBooking, "DeliverReport", deliver);
  bk::AcceptReportRequest accept_report;
  accept_report.set_name(order.name());
  Matrix(kBooking, "AcceptReport", accept_report);
  bk::DisputeReportRequest dispute;  // no reason
  dispute.set_name(order.name());
  Matrix(kBooking, "DisputeReport", dispute);
  // The first admitted caller cancels it; the others then meet a cancelled
  // order, which must not tell an unrelated caller its state.
  bk::CancelOrderRequest cancel;
  cancel.set_name(order.name());
  Matrix(kBooking, "CancelOrder", cancel);
}

TEST_F(AuthzMatrix, ProjectsAreTheParticipantsAndTheBudgetedOwnersStaffs) {
  const std::string kBooking = "labshare.booking.v1.BookingService";
  iv::CreateOrganizationRequest partner;
  partner.set_organization_id("partner");
  partner.mutable_organization()->set_display_name("partner");
  partner.mutable_organization()->set_type(iv::UNIVERSITY);
  partner.mutable_organization()->set_membership_state(iv::MEMBER);
  partner.mutable_organization()->set_tier("GENERAL");
  Inv(&iv::InventoryService::Stub::CreateOrganization, partner);
  // lab and partner share a project with hours on tem (owned by owner).
  bk::CreateProjectRequest r;
  r.set_project_id("proj");
  r.mutable_project()->set_title("membranes");
  r.mutable_project()->set_cost_share_template(bk::Project::EQUAL_SPLIT);
  for (const char* org : {"organizations/lab", "organizations/partner"}) {
    r.mutable_project()->add_participants()->set_organization(org);
  }
  *r.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
  *r.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
  auto* budget = r.mutable_project()->add_instrument_budgets();
  budget->set_instrument("instruments/tem");
  *budget->mutable_budget() = ToProto(absl::Hours(3));
  bk::Project project;
  const grpc::Status created = Call(stub_.get(), &bk::BookingService::Stub::CreateProject, r, &project, admin_);
  ASSERT_TRUE(created.ok()) << GrpcErrorReason(created) << ": " << created.error_message();
  bk::GetProjectRequest get;
  get.set_name(project.name());
  Matrix(kBooking, "GetProject", get);
}

TEST_F(AuthzMatrix, ChargesAndDepositsAreTheOwnerStaffsNotThePayersStaffs) {
  const std::string kBilling = "labshare.billing.v1.BillingService";
  // A session of ana (lab pays owner) and a lease of afm to lab with a deposit.
  bk::Booking b, done;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(9));
  bk::CheckInRequest ci;
  ci.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_).ok());
  clock_.Set(day_ + absl::Hours(10));
  bk::CheckOutRequest co;
  co.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &done, ana_).ok());
  bk::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(48));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 12));
  bk::Lease lease, out;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_).ok());
  bk::ApproveLeaseRequest a;
  a.set_name(lease.name());
  a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
  *a.mutable_contract()->mutable_rate() = billing::MakeMoney("CNY", 300000);
  *a.mutable_contract()->mutable_deposit() = billing::MakeMoney("CNY", 100000);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_).ok());
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("as new");
  clock_.Set(day_ + absl::Hours(48));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
  Drain();
  Principal root{"root", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  bl::ListChargesRequest lc;
  lc.set_payer_organization("organizations/lab");
  auto charges = billing_->ListCharges(root, lc);
  ASSERT_TRUE(charges.ok()) << charges.status();
  ASSERT_GE(charges->charges_size(), 1);
  bl::GetChargeRequest gc;
  gc.set_name(charges->charges(0).name());
  Matrix(kBilling, "GetCharge", gc);
  bl::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().rfind('/') + 1));
  ASSERT_TRUE(billing_->GetDeposit(root, gd).ok());
  Matrix(kBilling, "GetDeposit", gd);
}

TEST_F(AuthzMatrix, BillingReadsOfAnOrganisationAreScopedBeforeTheRequestIsValidated) {
  const std::string kBilling = "labshare.billing.v1.BillingService";
  bl::RecordPaymentRequest pay;  // no amount
  pay.mutable_payment()->set_payer("organizations/owner");
  pay.mutable_payment()->set_payee("organizations/lab");
  Matrix(kBilling, "RecordPayment", pay);
  bl::GetOrganizationStatementRequest statement;  // no interval
  statement.set_organization("organizations/lab");
  Matrix(kBilling, "GetOrganizationStatement", statement);
  bl::PreviewInvoiceRequest preview;  // no period
  preview.set_payer_organization("organizations/lab");
  Matrix(kBilling, "PreviewInvoice", preview);
  bl::GetOwnerIncomeReportRequest income;  // no interval
  income.set_owner_organization("organizations/owner");
  Matrix(kBilling, "GetOwnerIncomeReport", income);
  bl::GetAccountBalanceRequest balance;  // as of the future
  balance.set_name("organizations/lab/accounts/payable");
  *balance.mutable_as_of_time() = ToProto(clock_.Now() + absl::Hours(1));
  Matrix(kBilling, "GetAccountBalance", balance);
}

TEST_F(AuthzMatrix, UsageFiguresAreScopedBeforeTheRequestIsValidated) {
  const std::string kUsage = "labshare.usage.v1.UsageService";
  // Each names lab as the owner organisation and is otherwise invalid (no
  // range, no format, year 0).
  us::GetUsageFiguresRequest figures;
  figures.mutable_filter()->add_owner_organizations("organizations/lab");
  Matrix(kUsage, "GetUsageFigures", figures);
  us::QueryUsageRequest query;
  query.mutable_filter()->add_owner_organizations("organizations/lab");
  Matrix(kUsage, "QueryUsage", query);
  us::ExportUsageRequest export_usage;
  export_usage.mutable_filter()->add_owner_organizations("organizations/lab");
  Matrix(kUsage, "ExportUsage", export_usage);
  us::GetSharingMatrixRequest sharing;
  sharing.mutable_filter()->add_owner_organizations("organizations/lab");
  Matrix(kUsage, "GetSharingMatrix", sharing);
  us::ListIdleInstrumentsRequest idle;
  idle.mutable_filter()->add_owner_organizations("organizations/lab");
  idle.set_page_size(-1);
  Matrix(kUsage, "ListIdleInstruments", idle);
  us::GetAnnualReportRequest report;
  report.mutable_scope()->add_owner_organizations("organizations/lab");
  Matrix(kUsage, "GetAnnualReport", report);
  us::ExportAnnualReportCsvRequest csv;
  csv.mutable_scope()->add_owner_organizations("organizations/lab");
  Matrix(kUsage, "ExportAnnualReportCsv", csv);
}

}  // namespace
}  // namespace labshare
