// The token issuer's key in operation: rotation with two keys live under
// load, the key file's protection at start, and labshare-token's key tool.
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/grpc_status.h"
#include "common/jwks.h"
#include "common/log.h"
#include "common/server.h"
#include "common/token.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/inventory/inventory_service.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

namespace v1 = labshare::inventory::v1;
using labshare::testing::TestTempDir;
using labshare::testing::WriteTestFile;

std::string PublicJwkOf(const std::string& pem) { return (*TokenIssuer::FromPem(pem, "labshare", "labshare"))->PublicJwk(); }

// Inventory in this process, verifying with the keys of a JWKS file on the
// wall clock, as the binary does.
class TokenRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = labshare::testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    labshare::testing::FlushAll(*redis_);
    dir_ = TestTempDir();
    old_pem_ = *GenerateEcPrivateKeyPem();
    new_pem_ = *GenerateEcPrivateKeyPem();
    key_file_ = WriteTestFile(dir_, "signing.pem", old_pem_, 0600);
    jwks_file_ = WriteTestFile(dir_, "jwks.json", JwksJson({PublicJwkOf(old_pem_)}), 0644);
    auto keys = KeySet::Open(jwks_file_);
    ASSERT_TRUE(keys.ok()) << keys.status();
    verifier_ = std::make_unique<TokenVerifier>(*std::move(keys), TokenRules{});
    pool_ = std::make_unique<RedisPool>(redis_->options());
    store_ = std::make_unique<inventory::InventoryStore>(pool_.get());
    manager_ = std::make_unique<inventory::InventoryManager>(store_.get(), &wall_, labshare::testing::TestPageTokens());
    auth_ = std::make_unique<Authorizer>(verifier_.get(), inventory::InventoryPolicy(), &wall_);
    service_ = std::make_unique<inventory::InventoryService>(manager_.get(), auth_.get());
    ServerConfig config;
    config.service_name = "inventory";
    config.redis = pool_.get();
    config.authorizer = auth_.get();
    auto server = Server::Start(config, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  }

  grpc::Status List(const std::string& token) {
    auto stub = v1::InventoryService::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListOrganizationsRequest req;
    v1::ListOrganizationsResponse resp;
    return stub->ListOrganizations(&ctx, req, &resp);
  }

  static std::string KidOf(const std::string& token) {
    std::string header;
    absl::WebSafeBase64Unescape(std::string(token.substr(0, token.find('.'))), &header);
    const size_t at = header.find("\"kid\":\"");
    return header.substr(at + 7, header.find('"', at + 7) - at - 7);
  }

  SystemClock wall_;
  labshare::testing::RedisServer* redis_ = nullptr;
  std::string dir_, old_pem_, new_pem_, key_file_, jwks_file_;
  std::unique_ptr<TokenVerifier> verifier_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<inventory::InventoryStore> store_;
  std::unique_ptr<inventory::InventoryManager> manager_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<inventory::InventoryService> service_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// The operator's rotation: publish the new public key next to the old one,
// switch the issuer's key file, later retire the old key. Clients calling
// all along, each with a freshly minted token or one minted earlier, see no
// failure; once the old key is gone from the JWKS its tokens are refused.
TEST_F(TokenRotationTest, KeyRotationUnderLoadDropsNoCall) {
  auto issuer = TokenIssuer::FromFile(key_file_, "labshare", "labshare");
  ASSERT_TRUE(issuer.ok()) << issuer.status();
  const std::string old_kid = (*issuer)->kid();
  const std::string new_kid = JwkThumbprint(ParseEcPrivateKeyPem(new_pem_, "new").value().get());
  auto mint = [&] {
    const absl::Time now = absl::Now();
    return (*issuer)->Mint(Principal{"root", "", {Role::kConsortiumAdmin}, now + absl::Minutes(10)}, now);
  };
  const std::string early_token = mint();  // minted before the rotation, used throughout

  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, failures{0}, new_kid_calls{0};
  std::mutex failure_mu;
  std::string first_failure;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      while (!stop.load()) {
        const std::string token = t == 0 ? early_token : mint();
        const grpc::Status s = List(token);
        ++calls;
        if (KidOf(token) == new_kid) ++new_kid_calls;
        if (!s.ok()) {
          ++failures;
          std::lock_guard<std::mutex> lock(failure_mu);
          if (first_failure.empty()) first_failure = absl::StrCat(GrpcErrorReason(s), ": ", s.error_message());
        }
      }
    });
  }
  auto wait_for_calls = [&](int more) {
    const int target = calls.load() + more;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (calls.load() < target && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  };
  wait_for_calls(50);
  // 1. Both keys live in the JWKS.
  WriteTestFile(dir_, "jwks.json", JwksJson({PublicJwkOf(old_pem_), PublicJwkOf(new_pem_)}), 0644);
  wait_for_calls(50);
  // 2. The issuer signs with the new key from its next token on.
  WriteTestFile(dir_, "signing.pem", new_pem_, 0600);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (new_kid_calls.load() < 100 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  wait_for_calls(50);
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(failures.load(), 0) << "first failure: " << first_failure;
  EXPECT_GE(new_kid_calls.load(), 100);
  EXPECT_EQ((*issuer)->kid(), new_kid);
  EXPECT_NE(old_kid, new_kid);
  ASSERT_TRUE(List(early_token).ok());

  // 3. The old key is retired: its tokens (even one verified and remembered
  // a moment ago) are refused, the new key's are not.
  WriteTestFile(dir_, "jwks.json", JwksJson({PublicJwkOf(new_pem_)}), 0644);
  const grpc::Status refused = List(early_token);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(refused), "INVALID_TOKEN");
  EXPECT_TRUE(List(mint()).ok());
}

// ------------------------------------------------------------ the binaries

struct ToolRun {
  int status = -1;
  std::string out, err;
};

ToolRun Execute(const std::vector<std::string>& argv) {
  const std::string dir = TestTempDir();
  std::string cmd;
  for (const auto& a : argv) absl::StrAppend(&cmd, "'", a, "' ");
  absl::StrAppend(&cmd, "> ", dir, "/out 2> ", dir, "/err < /dev/null");
  ToolRun r;
  const int rc = std::system(cmd.c_str());
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::ifstream o(dir + "/out"), e(dir + "/err");
  std::stringstream os, es;
  os << o.rdbuf();
  es << e.rdbuf();
  r.out = os.str();
  r.err = es.str();
  return r;
}

TEST(TokenKeyAtStart, InventoryRefusesASigningKeyOthersCanRead) {
  const std::string bin = labshare::testing::LabshareBinDir();
  const std::string dir = TestTempDir();
  const std::string key = WriteTestFile(dir, "signing.pem", *GenerateEcPrivateKeyPem(), 0644);
  labshare::testing::RedisServer* redis = labshare::testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  ToolRun r = Execute({bin + "/labshare-inventory", "--listen=127.0.0.1:0", "--redis=" + redis->address(),
                   "--jwks=" + labshare::testing::TestJwksFile(), "--token_signing_key_file=" + key});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "mode 0644")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "chmod 600")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "listening on")) << r.out;
  // Without a key set no service starts.
  r = Execute({bin + "/labshare-booking", "--listen=127.0.0.1:0", "--redis=" + redis->address()});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--jwks is required")) << r.err;
}

TEST(LabshareTokenTool, GeneratesKeysPrintsJwksAndMintsOnlyWithTheIssuersKey) {
  const std::string tool = labshare::testing::LabshareBinDir() + "/labshare-token";
  const std::string dir = TestTempDir();
  const std::string key = dir + "/issuer.pem";
  ToolRun gen = Execute({tool, "--generate_key=" + key});
  ASSERT_EQ(gen.status, 0) << gen.err;
  struct stat st;
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string kid(absl::StripTrailingAsciiWhitespace(gen.out));
  EXPECT_EQ(kid.size(), 43u) << gen.out;  // base64url of SHA-256
  EXPECT_EQ(Execute({tool, "--generate_key=" + key}).status, 2) << "an existing key is never overwritten";

  ToolRun jwks = Execute({tool, "--jwks", key});
  ASSERT_EQ(jwks.status, 0) << jwks.err;
  auto keys = KeySet::FromJson(jwks.out);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ((*keys)->Kids(), std::vector<std::string>{kid});

  ToolRun mint = Execute({tool, "--signing_key_file=" + key, "--user=li-wei", "--org=org-uni-a", "--roles=lab_user,auditor"});
  ASSERT_EQ(mint.status, 0) << mint.err;
  TokenVerifier verifier(*keys, TokenRules{});
  auto p = verifier.Verify(std::string(absl::StripTrailingAsciiWhitespace(mint.out)), absl::Now());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->user_id, "li-wei");
  EXPECT_EQ(p->roles, (std::vector<Role>{Role::kLabUser, Role::kAuditor}));

  // Never the service role, never without the issuer's key, never a key others can read.
  ToolRun service = Execute({tool, "--signing_key_file=" + key, "--user=booking", "--roles=service"});
  EXPECT_EQ(service.status, 2);
  EXPECT_TRUE(absl::StrContains(service.err, "service role")) << service.err;
  ToolRun keyless = Execute({tool, "--user=li-wei", "--roles=lab_user"});
  EXPECT_EQ(keyless.status, 2);
  EXPECT_TRUE(absl::StrContains(keyless.err, "--signing_key_file is required")) << keyless.err;
  ::chmod(key.c_str(), 0644);
  ToolRun exposed = Execute({tool, "--signing_key_file=" + key, "--user=li-wei", "--roles=lab_user"});
  EXPECT_EQ(exposed.status, 2);
  EXPECT_TRUE(absl::StrContains(exposed.err, "chmod 600")) << exposed.err;
}

}  // namespace
}  // namespace labshare
