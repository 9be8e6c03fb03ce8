#include "common/auth.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/jwks.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

constexpr char kMethod[] = "/labshare.inventory.v1.InventoryService/CreateOrganization";

class AuthorizerTest : public ::testing::Test {
 protected:
  AuthorizerTest()
      : authorizer_(labshare::testing::TestVerifier(), MethodPolicy().Allow(kMethod, {Role::kConsortiumAdmin}), &clock_) {}

  std::string Bearer(std::vector<Role> roles, absl::Duration ttl = absl::Hours(1)) {
    Principal p{"ana", "lab", std::move(roles), clock_.Now() + ttl};
    return "Bearer " + labshare::testing::Mint(p, clock_.Now());
  }

  FakeClock clock_;
  Authorizer authorizer_;
};

TEST_F(AuthorizerTest, AdmitsAllowedRole) {
  auto p = authorizer_.Decide(kMethod, Bearer({Role::kLabUser, Role::kConsortiumAdmin}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->user_id, "ana");
  EXPECT_EQ(ActorName(*p), "users/ana");
  EXPECT_EQ(ActorOrganization(*p), "organizations/lab");
}

TEST_F(AuthorizerTest, MissingHeaderIsUnauthenticated) {
  auto p = authorizer_.Decide(kMethod, "");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorReason(p.status()), "MISSING_CREDENTIALS");
}

TEST_F(AuthorizerTest, NonBearerSchemeIsInvalid) {
  EXPECT_EQ(ErrorReason(authorizer_.Decide(kMethod, "Basic abc").status()), "INVALID_TOKEN");
}

TEST_F(AuthorizerTest, ExpiredTokenIsRejected) {
  const std::string token = Bearer({Role::kConsortiumAdmin}, absl::Minutes(5));
  clock_.Advance(absl::Minutes(5));
  EXPECT_EQ(ErrorReason(authorizer_.Decide(kMethod, token).status()), "TOKEN_EXPIRED");
}

// Verified tokens are remembered; the memory must not outlive the token,
// nor admit a token that differs from the verified one.
TEST_F(AuthorizerTest, AcceptedTokenStillExpiresAndTamperingIsStillCaught) {
  const std::string token = Bearer({Role::kConsortiumAdmin}, absl::Minutes(5));
  ASSERT_TRUE(authorizer_.Decide(kMethod, token).ok());
  clock_.Advance(absl::Minutes(4));
  ASSERT_TRUE(authorizer_.Decide(kMethod, token).ok());
  std::string tampered = token;
  char& claim = tampered[tampered.find('.') + 5];  // inside the claims
  claim = claim == 'A' ? 'B' : 'A';
  EXPECT_EQ(ErrorReason(authorizer_.Decide(kMethod, tampered).status()), "INVALID_TOKEN");
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(ErrorReason(authorizer_.Decide(kMethod, token).status()), "TOKEN_EXPIRED");
  // The role check still applies to a remembered token.
  const std::string user = Bearer({Role::kLabUser});
  ASSERT_EQ(authorizer_.Decide(kMethod, user).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(authorizer_.Decide(kMethod, user).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthorizerTest, WrongRoleIsPermissionDenied) {
  auto p = authorizer_.Decide(kMethod, Bearer({Role::kLabUser, Role::kAuditor}));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrorReason(p.status()), "ROLE_NOT_ALLOWED");
}

TEST_F(AuthorizerTest, UnknownMethodIsDeniedByDefault) {
  auto p = authorizer_.Decide("/labshare.inventory.v1.InventoryService/Unlisted",
                              Bearer({Role::kConsortiumAdmin, Role::kAuditor}));
  EXPECT_EQ(ErrorReason(p.status()), "ROLE_NOT_ALLOWED");
}

TEST_F(AuthorizerTest, HandlerSeesTheDecisionOfItsOwnCall) {
  const auto* call_a = reinterpret_cast<const grpc::ServerContextBase*>(0x1000);
  const auto* call_b = reinterpret_cast<const grpc::ServerContextBase*>(0x2000);
  authorizer_.Begin(call_a, kMethod, Bearer({Role::kConsortiumAdmin}));
  authorizer_.Begin(call_b, kMethod, "");
  EXPECT_TRUE(authorizer_.Authorize(call_a).ok());
  EXPECT_EQ(ErrorReason(authorizer_.Authorize(call_b).status()), "MISSING_CREDENTIALS");
  authorizer_.End(call_a);
  EXPECT_EQ(authorizer_.Authorize(call_a).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(MethodPolicy, AllowAllAdmitsEveryRole) {
  MethodPolicy p;
  p.AllowAll("/m");
  for (Role r : AllRoles()) {
    Principal principal{"u", "", {r}, absl::InfiniteFuture()};
    EXPECT_TRUE(p.Check("/m", principal).ok()) << RoleName(r);
  }
  EXPECT_TRUE(p.Knows("/m"));
  EXPECT_FALSE(p.Knows("/n"));
}

TEST(MethodPolicy, ScopeAdmitsOnlyWhatTheRolesScopeCovers) {
  constexpr char kGet[] = "/x.v1.S/GetThing";
  MethodPolicy policy;
  policy.Allow(kGet, {Role::kAuditor})
      .Allow(kGet, {Role::kLabUser}, kScopeSelf)
      .Allow(kGet, {Role::kMemberBillingAdmin}, kScopeParty)
      .Allow(kGet, {Role::kFacilityStaff}, kScopeOwner);
  const ScopeFacts facts{"users/ana", {"organizations/lab"}, {"organizations/owner"}};
  auto who = [](const char* user, const char* org, Role role) {
    return Principal{user, org, {role}, absl::InfiniteFuture()};
  };
  EXPECT_TRUE(policy.CheckScope(kGet, who("ana", "lab", Role::kLabUser), facts).ok());
  EXPECT_EQ(ErrorReason(policy.CheckScope(kGet, who("bob", "lab", Role::kLabUser), facts)), "USER_SCOPE");
  EXPECT_TRUE(policy.CheckScope(kGet, who("lena", "lab", Role::kMemberBillingAdmin), facts).ok());
  EXPECT_EQ(ErrorReason(policy.CheckScope(kGet, who("otto", "owner", Role::kMemberBillingAdmin), facts)),
            "ORGANIZATION_SCOPE");
  EXPECT_TRUE(policy.CheckScope(kGet, who("sam", "owner", Role::kFacilityStaff), facts).ok());
  // Staff of the paying organisation are not the owner's staff.
  EXPECT_EQ(ErrorReason(policy.CheckScope(kGet, who("fay", "lab", Role::kFacilityStaff), facts)),
            "ORGANIZATION_SCOPE");
  EXPECT_TRUE(policy.CheckScope(kGet, who("aud", "", Role::kAuditor), facts).ok());
  EXPECT_EQ(ErrorReason(policy.CheckScope(kGet, who("root", "", Role::kConsortiumAdmin), facts)),
            "ROLE_NOT_ALLOWED");
  // Several roles: any one of them in scope admits.
  Principal both{"fay", "lab", {Role::kFacilityStaff, Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  EXPECT_TRUE(policy.CheckScope(kGet, both, facts).ok());
  EXPECT_EQ(policy.ScopesOf(kGet, both), static_cast<unsigned>(kScopeParty | kScopeOwner));
}

TEST_F(AuthorizerTest, TheServiceRoleComesOnlyFromACertifiedPeerNeverFromAToken) {
  MethodPolicy policy;
  policy.Allow("/svc", {Role::kService});
  Authorizer service_only(labshare::testing::TestVerifier(), policy, &clock_);
  // A correctly signed token claiming the service role: refused outright.
  auto forged = service_only.Decide("/svc", Bearer({Role::kService}));
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorReason(forged.status()), "INVALID_TOKEN");
  EXPECT_EQ(ErrorReason(authorizer_.Decide(kMethod, Bearer({Role::kConsortiumAdmin, Role::kService})).status()),
            "INVALID_TOKEN");
  // The peer's certificate names the service and no token is sent: admitted.
  auto p = service_only.Decide("/svc", "", "booking");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(ActorName(*p), "services/booking");
  // A token sent on a certified channel decides (a gateway calling for its
  // signed-in person): a bad one is refused, a person's is that person.
  EXPECT_EQ(ErrorReason(service_only.Decide("/svc", "Bearer garbage", "booking").status()), "INVALID_TOKEN");
  EXPECT_EQ(ErrorReason(service_only.Decide("/svc", Bearer({Role::kConsortiumAdmin}), "booking").status()),
            "ROLE_NOT_ALLOWED");
  // A certified name that is not a platform service (the console) is no
  // SERVICE principal: it must send its user's token.
  auto console = service_only.Decide("/svc", "", "console");
  EXPECT_EQ(console.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorReason(console.status()), "MISSING_CREDENTIALS");
  // Nor is a name no service of the platform has.
  EXPECT_EQ(ErrorReason(service_only.Decide("/svc", "", "mailer").status()), "MISSING_CREDENTIALS");
  // labshare-notify is one (it reads people from inventory).
  auto notify = service_only.Decide("/svc", "", "notify");
  ASSERT_TRUE(notify.ok()) << notify.status();
  EXPECT_EQ(ActorName(*notify), "services/notify");
  // A person's token on a service-only method: not admitted.
  EXPECT_EQ(ErrorReason(service_only.Decide("/svc", Bearer({Role::kConsortiumAdmin})).status()), "ROLE_NOT_ALLOWED");
}

TEST_F(AuthorizerTest, MissingCredentialsPointAtLabshareLogin) {
  auto p = authorizer_.Decide(kMethod, "");
  EXPECT_NE(p.status().message().find("labshare login"), absl::string_view::npos) << p.status();
}

// A certified peer that is not a platform service (the console gateway)
// sending no token gets the plain missing-credentials answer an uncertified
// caller gets: the gateway hands it on to its anonymous HTTP callers, who
// must not read about the gateway's certificate (it used to say "the
// certificate names 'console', which is not one of the platform's
// services ...").
TEST_F(AuthorizerTest, ACertifiedGatewayWithoutATokenGetsThePlainMissingCredentials) {
  auto uncertified = authorizer_.Decide(kMethod, "");
  ASSERT_EQ(ErrorReason(uncertified.status()), "MISSING_CREDENTIALS");
  for (const char* peer : {"console", "mailer"}) {
    auto certified = authorizer_.Decide(kMethod, "", peer);
    EXPECT_EQ(certified.status().code(), absl::StatusCode::kUnauthenticated) << peer;
    EXPECT_EQ(ErrorReason(certified.status()), "MISSING_CREDENTIALS") << peer;
    EXPECT_EQ(certified.status().message(), uncertified.status().message()) << peer;
    EXPECT_EQ(certified.status().message().find(peer), absl::string_view::npos) << certified.status();
  }
}

// A remembered token is dropped with its key: once the key set no longer
// holds the key that signed it, the next call verifies it again and fails.
TEST_F(AuthorizerTest, RememberedTokenIsRefusedOnceItsKeyLeavesTheKeySet) {
  const std::string dir = labshare::testing::TestTempDir();
  auto old_issuer = *TokenIssuer::FromPem(*GenerateEcPrivateKeyPem(), "labshare", "labshare");
  auto new_issuer = *TokenIssuer::FromPem(*GenerateEcPrivateKeyPem(), "labshare", "labshare");
  const std::string jwks = labshare::testing::WriteTestFile(
      dir, "jwks.json", JwksJson({old_issuer->PublicJwk(), new_issuer->PublicJwk()}), 0644);
  TokenVerifier verifier(*KeySet::Open(jwks), TokenRules{});
  Authorizer auth(&verifier, MethodPolicy().Allow(kMethod, {Role::kConsortiumAdmin}), &clock_);
  Principal admin{"root", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Minutes(10)};
  const std::string old_token = "Bearer " + old_issuer->Mint(admin, clock_.Now());
  const std::string new_token = "Bearer " + new_issuer->Mint(admin, clock_.Now());
  ASSERT_TRUE(auth.Decide(kMethod, old_token).ok());
  ASSERT_TRUE(auth.Decide(kMethod, new_token).ok());
  labshare::testing::WriteTestFile(dir, "jwks.json", JwksJson({new_issuer->PublicJwk()}), 0644);
  auto refused = auth.Decide(kMethod, old_token);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorReason(refused.status()), "INVALID_TOKEN");
  EXPECT_TRUE(auth.Decide(kMethod, new_token).ok());
}

}  // namespace
}  // namespace labshare
