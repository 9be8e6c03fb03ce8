// Service identity and transport security (issue 13): mutual TLS between
// services, the calling service's name from its certificate, user tokens
// never reaching SERVICE-only methods, plaintext refused off loopback, and
// /metrics over TLS. Real gRPC channels against a real InventoryService on a
// real redis-server; certificates from tests/support/test_pki.h.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "common/channel.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/inventory/inventory_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

namespace v1 = labshare::inventory::v1;
using testing::TestPki;


// The first address of an interface that is up and not loopback ("" if none).
std::string NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || (a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    if (a->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof buf);
    found = buf;
  }
  freeifaddrs(list);
  return found;
}

int Connect(const std::string& host, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// GET /metrics in plaintext: the whole answer ("" when the server said nothing).
std::string PlainGet(int port) {
  const int fd = Connect("127.0.0.1", port);
  if (fd < 0) return "";
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) {
    close(fd);
    return "";
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// GET /metrics over TLS, trusting `ca_pem`, presenting `cert` if not null.
// Returns the answer, or "" when the handshake failed.
std::string TlsGet(int port, const std::string& ca_pem, const testing::TestCert* cert) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  BIO* bio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
  X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca);
  X509_free(ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (cert != nullptr) {
    SSL_CTX_use_certificate_file(ctx, cert->cert_file.c_str(), SSL_FILETYPE_PEM);
    SSL_CTX_use_PrivateKey_file(ctx, cert->key_file.c_str(), SSL_FILETYPE_PEM);
  }
  std::string out;
  const int fd = Connect("127.0.0.1", port);
  SSL* ssl = SSL_new(ctx);
  SSL_set1_host(ssl, "127.0.0.1");
  SSL_set_fd(ssl, fd);
  if (fd >= 0 && SSL_connect(ssl) == 1) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    SSL_write(ssl, req.data(), static_cast<int>(req.size()));
    char buf[4096];
    int n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  if (fd >= 0) close(fd);
  return out;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    store_ = std::make_unique<inventory::InventoryStore>(pool_.get());
    manager_ = std::make_unique<inventory::InventoryManager>(store_.get(), &clock_, testing::TestPageTokens());
    auth_ = std::make_unique<Authorizer>(testing::TestVerifier(), inventory::InventoryPolicy(), &clock_);
    service_ = std::make_unique<inventory::InventoryService>(manager_.get(), auth_.get());
  }

  ServerConfig Config() {
    ServerConfig config;
    config.service_name = "inventory";
    config.redis = pool_.get();
    config.authorizer = auth_.get();
    config.tls = TestPki::Shared().ServerTls("inventory");
    return config;
  }

  void StartServer(ServerConfig config) {
    auto server = Server::Start(std::move(config), {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // A person's token (the one place tokens are made here).
  std::string UserToken(const std::string& user, const std::string& org, Role role) {
    Principal p{user, org, {role}, clock_.Now() + absl::Hours(1)};
    return testing::Mint(p, clock_.Now());
  }

  static std::unique_ptr<v1::InventoryService::Stub> Stub(const std::shared_ptr<grpc::Channel>& channel) {
    return v1::InventoryService::NewStub(channel);
  }

  template <typename Req, typename Resp>
  static grpc::Status Call(v1::InventoryService::Stub* stub,
                           grpc::Status (v1::InventoryService::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                           const Req& req, Resp* resp, const std::string& token = "") {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return (stub->*method)(&ctx, req, resp);
  }

  // owner org, facility, instrument "tem", user ana qualified on it; made
  // by the consortium admin through a TLS channel without a client
  // certificate (a person's client). Returns the qualification's name.
  std::string Seed() {
    auto stub = Stub(testing::TlsChannel(server_->address()));
    const std::string admin = UserToken("admin", "", Role::kConsortiumAdmin);
    auto ok = [](const grpc::Status& s) { EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message(); };
    v1::CreateOrganizationRequest org;
    org.set_organization_id("owner");
    org.mutable_organization()->set_display_name("Owner");
    org.mutable_organization()->set_type(v1::UNIVERSITY);
    org.mutable_organization()->set_membership_state(v1::MEMBER);
    org.mutable_organization()->set_tier("CORE");
    v1::Organization o;
    ok(Call(stub.get(), &v1::InventoryService::Stub::CreateOrganization, org, &o, admin));
    v1::CreateFacilityRequest fac;
    fac.set_facility_id("fac");
    fac.mutable_facility()->set_display_name("Facility");
    fac.mutable_facility()->set_owner_organization("organizations/owner");
    fac.mutable_facility()->mutable_access_policy()->set_allow_members(true);
    v1::Facility f;
    ok(Call(stub.get(), &v1::InventoryService::Stub::CreateFacility, fac, &f, admin));
    v1::CreateInstrumentRequest ins;
    ins.set_instrument_id("tem");
    auto* in = ins.mutable_instrument();
    in->set_display_name("TEM");
    in->set_owner_organization("organizations/owner");
    in->set_facility("facilities/fac");
    in->set_category("electron-microscopy");
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(100000000);
    in->set_daily_available_hours(8);
    auto* m = in->add_modes();
    m->set_mode(labshare::type::v1::ON_SITE);
    auto* r = m->mutable_slot_rules();
    *r->mutable_min_block() = ToProto(absl::Hours(1));
    *r->mutable_max_block() = ToProto(absl::Hours(8));
    *r->mutable_member_horizon() = ToProto(absl::Hours(24 * 30));
    *r->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 7));
    *r->mutable_min_notice() = ToProto(absl::Hours(2));
    r->set_billing_basis(v1::ACTUAL_TIME);
    *r->mutable_billing_unit() = ToProto(absl::Minutes(15));
    r->set_qualification_validity_days(30);
    v1::Instrument i;
    ok(Call(stub.get(), &v1::InventoryService::Stub::CreateInstrument, ins, &i, admin));
    v1::CreateUserRequest user;
    user.set_user_id("ana");
    user.mutable_user()->set_display_name("Ana");
    user.mutable_user()->set_organization("organizations/owner");
    user.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
    v1::User u;
    ok(Call(stub.get(), &v1::InventoryService::Stub::CreateUser, user, &u, admin));
    v1::GrantQualificationRequest grant;
    grant.set_instrument("instruments/tem");
    grant.set_user("users/ana");
    v1::Qualification q;
    ok(Call(stub.get(), &v1::InventoryService::Stub::GrantQualification, grant, &q, admin));
    return q.name();
  }

  v1::RecordQualificationUseRequest Use(const std::string& name, absl::Duration after) {
    v1::RecordQualificationUseRequest use;
    use.set_name(name);
    *use.mutable_use_time() = ToProto(clock_.Now() + after);
    return use;
  }

  // The actor of the last event on inventory's outbox.
  std::string LastEventActor() {
    auto v = pool_->Command({"XREVRANGE", inventory::keys::Outbox(), "+", "-", "COUNT", "1"});
    if (!v.ok() || v->elements.empty()) return "";
    const auto& fields = v->elements[0].elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "payload") {
        v1::InventoryEvent e;
        if (e.ParseFromString(fields[i + 1].str)) return e.header().actor();
      }
    }
    return "";
  }

  FakeClock clock_;
  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<inventory::InventoryStore> store_;
  std::unique_ptr<inventory::InventoryManager> manager_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<inventory::InventoryService> service_;
  std::unique_ptr<Server> server_;
};

TEST_F(TlsTest, BookingsCertificateIsThePrincipalBooking) {
  StartServer(Config());
  const std::string name = Seed();
  auto booking = Stub(testing::TlsChannel(server_->address(), "booking"));
  v1::Qualification q;
  // No token at all: the certificate is the credential.
  grpc::Status s = Call(booking.get(), &v1::InventoryService::Stub::RecordQualificationUse,
                        Use(name, absl::Hours(1)), &q);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_EQ(LastEventActor(), "services/booking");
  // A person's token sent along decides (a gateway calls for its user): a
  // lab user may not record a use.
  s = Call(booking.get(), &v1::InventoryService::Stub::RecordQualificationUse, Use(name, absl::Hours(2)), &q,
           UserToken("ana", "owner", Role::kLabUser));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(LastEventActor(), "services/booking");
  // The console's certificate alone is no SERVICE principal.
  auto console = Stub(testing::TlsChannel(server_->address(), "console"));
  s = Call(console.get(), &v1::InventoryService::Stub::RecordQualificationUse, Use(name, absl::Hours(2)), &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  // Billing's certificate is billing.
  auto billing = Stub(testing::TlsChannel(server_->address(), "billing"));
  s = Call(billing.get(), &v1::InventoryService::Stub::RecordQualificationUse, Use(name, absl::Hours(3)), &q);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(LastEventActor(), "services/billing");
}

TEST_F(TlsTest, UserTokensOfEveryRoleCannotCallServiceOnlyMethods) {
  StartServer(Config());
  const std::string name = Seed();
  auto person = Stub(testing::TlsChannel(server_->address()));
  for (Role role : {Role::kLabUser, Role::kFacilityStaff, Role::kMemberBillingAdmin, Role::kConsortiumAdmin,
                    Role::kAuditor}) {
    v1::Qualification q;
    grpc::Status s = Call(person.get(), &v1::InventoryService::Stub::RecordQualificationUse,
                          Use(name, absl::Hours(1)), &q, UserToken("ana", "owner", role));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << RoleName(role);
    EXPECT_EQ(GrpcErrorReason(s), "ROLE_NOT_ALLOWED") << RoleName(role);
  }
}

TEST_F(TlsTest, ClientWithoutCertificateAndWithTokenWorksOverTls) {
  StartServer(Config());
  Seed();  // every call of Seed() is such a client's; checked here once more
  auto person = Stub(testing::TlsChannel(server_->address()));
  v1::GetInstrumentRequest get;
  get.set_name("instruments/tem");
  v1::Instrument i;
  grpc::Status s = Call(person.get(), &v1::InventoryService::Stub::GetInstrument, get, &i,
                        UserToken("ana", "owner", Role::kLabUser));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(i.name(), "instruments/tem");
  // Without a token such a client is nobody.
  s = Call(person.get(), &v1::InventoryService::Stub::GetInstrument, get, &i);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "MISSING_CREDENTIALS");
}

TEST_F(TlsTest, CertificateFromAnotherCaClaimingAServiceIsRefusedAtTheHandshake) {
  StartServer(Config());
  const std::string name = Seed();
  const TestPki& pki = TestPki::Shared();
  for (const char* claimed : {"inventory", "booking"}) {
    TlsMaterial impostor = pki.Material(pki.Impostor(claimed));  // trusts our CA, shows the other CA's cert
    auto channel = MakeChannel(server_->address(), impostor);
    ASSERT_TRUE(channel.ok());
    auto stub = Stub(*channel);
    v1::Qualification q;
    grpc::Status s = Call(stub.get(), &v1::InventoryService::Stub::RecordQualificationUse,
                          Use(name, absl::Hours(1)), &q);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << claimed << ": " << s.error_message();
  }
  EXPECT_EQ(LastEventActor(), "users/admin");  // nothing recorded
}

TEST_F(TlsTest, ServerWithACertificateFromAnotherCaIsRefusedByClients) {
  // A fake "inventory" whose certificate (spiffe://labshare/inventory, the
  // right host names) comes from another CA.
  ServerConfig config = Config();
  const TestPki& pki = TestPki::Shared();
  config.tls = pki.Material(pki.Impostor("inventory"));
  StartServer(config);
  auto booking = Stub(testing::TlsChannel(server_->address(), "booking"));
  v1::GetInstrumentRequest get;
  get.set_name("instruments/tem");
  v1::Instrument i;
  grpc::Status s = Call(booking.get(), &v1::InventoryService::Stub::GetInstrument, get, &i);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(TlsTest, CertificateWithAKeyThatDoesNotMatchFails) {
  StartServer(Config());
  const std::string name = Seed();
  const TestPki& pki = TestPki::Shared();
  auto channel = MakeChannel(server_->address(), pki.Material(pki.MismatchedKey("booking")));
  if (channel.ok()) {
    auto stub = Stub(*channel);
    v1::Qualification q;
    grpc::Status s = Call(stub.get(), &v1::InventoryService::Stub::RecordQualificationUse,
                          Use(name, absl::Hours(1)), &q);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  EXPECT_EQ(LastEventActor(), "users/admin");  // nothing recorded
  // A server cannot start with such a pair either.
  ServerConfig bad = Config();
  bad.tls = pki.Material(pki.MismatchedKey("booking"));
  auto server = Server::Start(bad, {service_.get()});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(ErrorReason(server.status()), "TLS_CONFIG_INVALID");
}

TEST_F(TlsTest, CertificateWithoutSpiffeIdOrFromAnotherTrustDomainIsNoService) {
  ServerConfig config = Config();
  StartServer(config);
  const std::string name = Seed();
  const TestPki& pki = TestPki::Shared();
  auto anonymous = Stub(*MakeChannel(server_->address(), pki.Material(pki.Anonymous())));
  v1::Qualification q;
  grpc::Status s = Call(anonymous.get(), &v1::InventoryService::Stub::RecordQualificationUse,
                        Use(name, absl::Hours(1)), &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "MISSING_CREDENTIALS");
  server_.reset();
  // The same booking certificate on a server of another trust domain.
  config = Config();
  config.trust_domain = "elsewhere";
  StartServer(config);
  auto booking = Stub(testing::TlsChannel(server_->address(), "booking"));
  s = Call(booking.get(), &v1::InventoryService::Stub::RecordQualificationUse, Use(name, absl::Hours(1)), &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "MISSING_CREDENTIALS");
}

TEST_F(TlsTest, PlaintextToANonLoopbackAddressIsRefusedByServersAndClients) {
  const std::string ip = NonLoopbackAddress();
  if (ip.empty()) GTEST_SKIP() << "this machine has no non-loopback IPv4 interface";
  // Server: plaintext on that address is refused, for gRPC and metrics.
  ServerConfig plain = Config();
  plain.tls = {};
  plain.listen = ip + ":0";
  auto refused = Server::Start(plain, {service_.get()});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorReason(refused.status()), "PLAINTEXT_REFUSED");
  plain.listen = "127.0.0.1:0";
  plain.metrics_listen = ip + ":0";
  refused = Server::Start(plain, {service_.get()});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorReason(refused.status()), "PLAINTEXT_REFUSED");
  plain.listen = "0.0.0.0:0";
  plain.metrics_listen = "";
  refused = Server::Start(plain, {service_.get()});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorReason(refused.status()), "PLAINTEXT_REFUSED");
  // With TLS it serves there.
  ServerConfig tls = Config();
  tls.listen = ip + ":0";
  StartServer(tls);
  auto person = Stub(testing::TlsChannel(server_->address()));
  v1::GetInstrumentRequest get;
  get.set_name("instruments/none");
  v1::Instrument i;
  grpc::Status s = Call(person.get(), &v1::InventoryService::Stub::GetInstrument, get, &i,
                        UserToken("ana", "owner", Role::kLabUser));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  // Client: no plaintext channel to that address (nor to a name).
  for (const std::string& target : {server_->address(), "dns:///" + server_->address(), std::string("example.org:443")}) {
    auto channel = MakeChannel(target, TlsMaterial{});
    ASSERT_FALSE(channel.ok()) << target;
    EXPECT_EQ(ErrorReason(channel.status()), "PLAINTEXT_REFUSED") << target;
  }
  for (const std::string target : {"127.0.0.1:1", "localhost:1", "[::1]:1", "dns:///localhost:1"}) {
    EXPECT_TRUE(MakeChannel(target, TlsMaterial{}).ok()) << target;
  }
}

TEST_F(TlsTest, MetricsOverTlsAnswerAndRefusePlaintext) {
  ServerConfig config = Config();
  config.metrics_listen = "127.0.0.1:0";
  StartServer(config);
  Seed();
  const int port = server_->metrics_port();
  ASSERT_GT(port, 0);
  const TestPki& pki = TestPki::Shared();
  const std::string anonymous = TlsGet(port, pki.ca_pem(), nullptr);
  EXPECT_TRUE(absl::StartsWith(anonymous, "HTTP/1.1 200 OK")) << anonymous;
  EXPECT_NE(anonymous.find("labshare_rpc_requests_total{service=\"inventory\",code=\"OK\","
                           "method=\"/labshare.inventory.v1.InventoryService/CreateOrganization\"} 1"),
            std::string::npos)
      << anonymous;
  // With a client certificate of the CA (a Prometheus with its own).
  EXPECT_TRUE(absl::StartsWith(TlsGet(port, pki.ca_pem(), &pki.Service("usage")), "HTTP/1.1 200 OK"));
  // A client certificate from another CA is refused.
  EXPECT_EQ(TlsGet(port, pki.ca_pem(), &pki.Impostor("booking")), "");
  // Plaintext gets no answer at all.
  EXPECT_EQ(PlainGet(port), "");
  // And the metrics server is still there afterwards.
  EXPECT_TRUE(absl::StartsWith(TlsGet(port, pki.ca_pem(), nullptr), "HTTP/1.1 200 OK"));
}

TEST(Loopback, OnlyLoopbackAddressesAllowPlaintext) {
  for (const char* ok : {"127.0.0.1:50051", "127.1.2.3:0", "[::1]:1", "localhost:80", "LOCALHOST:1",
                         "dns:///localhost:1", "dns:localhost:1", "ipv4:127.0.0.1:1,127.0.0.2:2", "ipv6:[::1]:1",
                         "[::ffff:127.0.0.1]:1", "unix:/run/labshare.sock"}) {
    EXPECT_TRUE(CheckPlaintextAllowed(ok, "--listen").ok()) << ok;
  }
  for (const char* refused : {"0.0.0.0:50051", ":50051", "[::]:1", "192.0.2.2:1", "10.0.0.1:1", "example.org:443",
                              "localhost.example.org:1", "dns:///inventory:50051", "ipv4:127.0.0.1:1,10.0.0.1:2",
                              "[::ffff:10.0.0.1]:1", "128.0.0.1:1"}) {
    const absl::Status s = CheckPlaintextAllowed(refused, "--listen");
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << refused;
    EXPECT_EQ(ErrorReason(s), "PLAINTEXT_REFUSED") << refused;
  }
  EXPECT_EQ(HostOfAddress("[::1]:50051"), "::1");
  EXPECT_EQ(HostOfAddress("dns:///booking:50052"), "booking");
  EXPECT_EQ(HostOfAddress("ipv4:10.1.2.3:7"), "10.1.2.3");
}

TEST(TlsFiles, HalfAPairOrAnExposedKeyIsRefused) {
  const TestPki& pki = TestPki::Shared();
  const testing::TestCert& booking = pki.Service("booking");
  auto only_cert = LoadTls(TlsFiles{booking.cert_file, "", pki.ca_file()}, /*server=*/true);
  EXPECT_EQ(ErrorReason(only_cert.status()), "TLS_CONFIG_INVALID");
  auto only_ca = LoadTls(TlsFiles{"", "", pki.ca_file()}, /*server=*/true);
  EXPECT_EQ(ErrorReason(only_ca.status()), "TLS_CONFIG_INVALID");
  EXPECT_TRUE(LoadTls(TlsFiles{"", "", pki.ca_file()}, /*server=*/false).ok());  // a person's client
  auto wrong_key = LoadTls(TlsFiles{booking.cert_file, pki.Service("inventory").key_file, pki.ca_file()}, true);
  EXPECT_EQ(ErrorReason(wrong_key.status()), "TLS_CONFIG_INVALID");
  auto good = LoadTls(pki.Files("booking"), true);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->cert_pem, booking.cert_pem);
  // A key others can read is refused (common/secret_file.h).
  const std::string exposed = pki.dir() + "/exposed.key";
  { std::ofstream(exposed) << booking.key_pem; }
  chmod(exposed.c_str(), 0644);
  auto refused = LoadTls(TlsFiles{booking.cert_file, exposed, pki.ca_file()}, true);
  EXPECT_EQ(ErrorReason(refused.status()), "SECRET_FILE_EXPOSED");
}

}  // namespace
}  // namespace labshare
