#include "common/token.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/error.h"
#include "gtest/gtest.h"

namespace labshare {
namespace {

constexpr char kKey[] = "0123456789abcdef0123456789abcdef-test-key";
constexpr char kOtherKey[] = "fedcba9876543210fedcba9876543210-other-key";
const absl::Time kNow = absl::FromUnixSeconds(1798761600);  // 2027-01-01T00:00:00Z

std::string B64(std::string_view s) { return absl::WebSafeBase64Escape(absl::string_view(s.data(), s.size())); }

std::string Unb64(std::string_view s) {
  std::string out;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(absl::string_view(s.data(), s.size()), &out)) << s;
  return out;
}

// HS256 done independently of common/token.cc: OpenSSL HMAC + Abseil base64.
std::string Hs256(std::string_view key, std::string_view signing_input) {
  unsigned char mac[32];
  size_t len = 0;
  EXPECT_NE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                      reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac,
                      sizeof(mac), &len),
            nullptr);
  return B64(std::string_view(reinterpret_cast<const char*>(mac), len));
}

// A correctly signed token with arbitrary header and payload text.
std::string SignRaw(std::string_view header_json, std::string_view payload_json, std::string_view key = kKey) {
  const std::string input = absl::StrCat(B64(header_json), ".", B64(payload_json));
  return absl::StrCat(input, ".", Hs256(key, input));
}

std::string SignPayload(std::string_view payload_json) {
  return SignRaw(R"({"alg":"HS256","typ":"JWT"})", payload_json);
}

TokenSigner MakeSigner(const std::string& key = kKey) {
  absl::StatusOr<TokenSigner> s = TokenSigner::Create(key);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

Principal Ana() {
  Principal p;
  p.user_id = "u-ana";
  p.organization_id = "org-uni-a";
  p.roles = {Role::kLabUser, Role::kAuditor};
  p.expires_at = kNow + absl::Hours(24);
  return p;
}

void ExpectError(const absl::StatusOr<Principal>& r, absl::StatusCode code, const std::string& reason) {
  ASSERT_FALSE(r.ok()) << "unexpectedly valid, user " << r->user_id;
  EXPECT_EQ(r.status().code(), code) << r.status();
  EXPECT_EQ(ErrorReason(r.status()), reason) << r.status();
}

void ExpectInvalid(const TokenSigner& signer, std::string_view token, absl::Time now = kNow) {
  SCOPED_TRACE(std::string(token));
  ExpectError(signer.Verify(token, now), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN");
}

std::vector<std::string> Parts(const std::string& token) { return absl::StrSplit(token, '.'); }

// ---------------------------------------------------------------------------
// Roles and principals.

TEST(RoleTest, ParseAndNameRoundTripForEveryRole) {
  const std::vector<std::pair<Role, std::string>> all = {
      {Role::kLabUser, "lab_user"},
      {Role::kFacilityStaff, "facility_staff"},
      {Role::kMemberBillingAdmin, "member_billing_admin"},
      {Role::kConsortiumAdmin, "consortium_admin"},
      {Role::kAuditor, "auditor"},
      {Role::kService, "service"},
  };
  for (const auto& [role, name] : all) {
    EXPECT_EQ(RoleName(role), name);
    absl::StatusOr<Role> parsed = ParseRole(name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, role);
    EXPECT_EQ(ParseRole(RoleName(role)).value(), role);
  }
}

TEST(RoleTest, UnknownNamesAreRejected) {
  for (std::string_view name : {"", "admin", "LAB_USER", "Lab_User", " lab_user", "lab_user ", "lab-user"}) {
    absl::StatusOr<Role> r = ParseRole(name);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(r.status()), "UNKNOWN_ROLE");
  }
  EXPECT_NE(ParseRole("admin").status().message().find("lab_user"), absl::string_view::npos)
      << "the message lists the valid roles";
}

TEST(PrincipalTest, HasRoleAndHasAnyRole) {
  const Principal p = Ana();
  EXPECT_TRUE(p.HasRole(Role::kLabUser));
  EXPECT_TRUE(p.HasRole(Role::kAuditor));
  EXPECT_FALSE(p.HasRole(Role::kService));
  EXPECT_TRUE(p.HasAnyRole({Role::kService, Role::kAuditor}));
  EXPECT_FALSE(p.HasAnyRole({Role::kService, Role::kConsortiumAdmin}));
  EXPECT_FALSE(p.HasAnyRole({}));
}

// ---------------------------------------------------------------------------
// Keys.

TEST(TokenSignerTest, ShortKeyIsWeak) {
  for (const std::string& key : {std::string(), std::string("short"), std::string(31, 'k')}) {
    absl::StatusOr<TokenSigner> s = TokenSigner::Create(key);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(s.status()), "WEAK_TOKEN_KEY");
  }
  EXPECT_TRUE(TokenSigner::Create(std::string(32, 'k')).ok());
}

// ---------------------------------------------------------------------------
// Mint and Verify.

TEST(TokenSignerTest, MintVerifyRoundTrip) {
  const TokenSigner signer = MakeSigner();
  const Principal in = Ana();
  const std::string token = signer.Mint(in, kNow);
  absl::StatusOr<Principal> out = signer.Verify(token, kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->user_id, "u-ana");
  EXPECT_EQ(out->organization_id, "org-uni-a");
  EXPECT_EQ(out->roles, (std::vector<Role>{Role::kLabUser, Role::kAuditor}));
  EXPECT_EQ(out->expires_at, in.expires_at);
}

TEST(TokenSignerTest, TokenIsAStandardJwt) {
  const std::string token = MakeSigner().Mint(Ana(), kNow);
  const std::vector<std::string> parts = Parts(token);
  ASSERT_EQ(parts.size(), 3u);
  for (const std::string& part : parts) {
    EXPECT_EQ(part.find('='), std::string::npos) << "no padding";
    EXPECT_EQ(part.find_first_of("+/"), std::string::npos) << "URL-safe alphabet";
  }
  EXPECT_EQ(Unb64(parts[0]), R"({"alg":"HS256","typ":"JWT"})");
  EXPECT_EQ(Unb64(parts[1]),
            R"({"iss":"labshare","sub":"u-ana","org":"org-uni-a","roles":["lab_user","auditor"],)"
            R"("iat":1798761600,"exp":1798848000})");
  EXPECT_EQ(parts[2], Hs256(kKey, absl::StrCat(parts[0], ".", parts[1])));
}

TEST(TokenSignerTest, ExpiryIsWholeSeconds) {
  const TokenSigner signer = MakeSigner();
  Principal p = Ana();
  p.expires_at = kNow + absl::Seconds(90) + absl::Milliseconds(750);
  absl::StatusOr<Principal> out = signer.Verify(signer.Mint(p, kNow + absl::Milliseconds(400)), kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->expires_at, kNow + absl::Seconds(90));
  const std::string claims = Unb64(Parts(signer.Mint(p, kNow + absl::Milliseconds(400)))[1]);
  EXPECT_NE(claims.find("\"iat\":1798761600,\"exp\":1798761690}"), std::string::npos) << claims;
}

TEST(TokenSignerTest, EmptyOrgAndServiceToken) {
  const TokenSigner signer = MakeSigner();
  Principal p;
  p.user_id = "booking";
  p.roles = {Role::kService};
  p.expires_at = kNow + absl::Minutes(5);
  absl::StatusOr<Principal> out = signer.Verify(signer.Mint(p, kNow), kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->user_id, "booking");
  EXPECT_EQ(out->organization_id, "");
  EXPECT_TRUE(out->HasRole(Role::kService));
}

TEST(TokenSignerTest, StringsNeedingEscapesRoundTrip) {
  const TokenSigner signer = MakeSigner();
  Principal p = Ana();
  static constexpr char kTricky[] = "u-\"quoted\"\\back/slash\b\f\n\r\t\x01\x1f\x7f-\xC3\xA9-\xF0\x9F\x94\xAC";
  p.user_id = std::string(kTricky, sizeof(kTricky) - 1);
  p.organization_id = std::string("org\0nul", 7);
  absl::StatusOr<Principal> out = signer.Verify(signer.Mint(p, kNow), kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->user_id, p.user_id);
  EXPECT_EQ(out->organization_id, p.organization_id);
}

TEST(TokenSignerTest, InvalidUtf8IsMintedAsReplacementCharacter) {
  const TokenSigner signer = MakeSigner();
  Principal p = Ana();
  p.user_id = "u-\xFF\xC3";  // a stray byte and a truncated sequence
  absl::StatusOr<Principal> out = signer.Verify(signer.Mint(p, kNow), kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->user_id, "u-\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenSignerTest, NoRolesRoundTrip) {
  const TokenSigner signer = MakeSigner();
  Principal p = Ana();
  p.roles.clear();
  absl::StatusOr<Principal> out = signer.Verify(signer.Mint(p, kNow), kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->roles.empty());
}

TEST(TokenSignerTest, CopiesShareTheKey) {
  std::optional<TokenSigner> original(MakeSigner());
  const TokenSigner copy = *original;
  const std::string token = original->Mint(Ana(), kNow);
  original.reset();
  EXPECT_TRUE(copy.Verify(token, kNow).ok());
}

TEST(TokenSignerTest, ConcurrentVerify) {
  const TokenSigner signer = MakeSigner();
  const std::string token = signer.Mint(Ana(), kNow);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (size_t t = 0; t < ok.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (signer.Verify(token, kNow).ok() && signer.Verify(signer.Mint(Ana(), kNow), kNow).ok()) ++ok[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int n : ok) EXPECT_EQ(n, 200);
}

// ---------------------------------------------------------------------------
// Expiry.

TEST(TokenSignerTest, ExpiredToken) {
  const TokenSigner signer = MakeSigner();
  FakeClock clock(kNow);
  Principal p = Ana();
  p.expires_at = clock.Now() + absl::Hours(1);
  const std::string token = signer.Mint(p, clock.Now());
  EXPECT_TRUE(signer.Verify(token, clock.Now()).ok());
  clock.Advance(absl::Hours(2));
  absl::StatusOr<Principal> r = signer.Verify(token, clock.Now());
  ExpectError(r, absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED");
  EXPECT_EQ(r.status().message().find(Parts(token)[1]), absl::string_view::npos) << "no token in the message";
}

TEST(TokenSignerTest, ExpiryBoundary) {
  const TokenSigner signer = MakeSigner();
  const Principal p = Ana();
  const std::string token = signer.Mint(p, kNow);
  EXPECT_TRUE(signer.Verify(token, p.expires_at - absl::Nanoseconds(1)).ok());
  ExpectError(signer.Verify(token, p.expires_at), absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED");
  ExpectError(signer.Verify(token, p.expires_at + absl::Seconds(1)), absl::StatusCode::kUnauthenticated,
              "TOKEN_EXPIRED");
}

TEST(TokenSignerTest, ExpiryIsReportedOnlyForOtherwiseValidTokens) {
  const TokenSigner signer = MakeSigner();
  const std::string token = signer.Mint(Ana(), kNow);
  const absl::Time later = kNow + absl::Hours(48);
  ExpectInvalid(MakeSigner(kOtherKey), token, later);
}

TEST(TokenSignerTest, NotBeforeInTheFuture) {
  const TokenSigner signer = MakeSigner();
  ExpectInvalid(signer, SignPayload(R"({"sub":"u","exp":1798848000,"nbf":1798761601})"));
  EXPECT_TRUE(signer.Verify(SignPayload(R"({"sub":"u","exp":1798848000,"nbf":1798761600})"), kNow).ok());
}

// ---------------------------------------------------------------------------
// Forgery and tampering.

TEST(TokenSignerTest, TamperedPayload) {
  const TokenSigner signer = MakeSigner();
  const std::vector<std::string> parts = Parts(signer.Mint(Ana(), kNow));
  std::string claims = Unb64(parts[1]);
  const size_t at = claims.find("u-ana");
  ASSERT_NE(at, std::string::npos);
  claims.replace(at, 5, "u-eve");
  ExpectInvalid(signer, absl::StrCat(parts[0], ".", B64(claims), ".", parts[2]));

  // Granting oneself a role.
  std::string more = Unb64(parts[1]);
  more.replace(more.find("\"lab_user\""), 10, "\"consortium_admin\"");
  ExpectInvalid(signer, absl::StrCat(parts[0], ".", B64(more), ".", parts[2]));

  // One character of the encoded payload changed.
  std::string payload = parts[1];
  payload[10] = payload[10] == 'A' ? 'B' : 'A';
  ExpectInvalid(signer, absl::StrCat(parts[0], ".", payload, ".", parts[2]));
}

TEST(TokenSignerTest, TamperedSignature) {
  const TokenSigner signer = MakeSigner();
  const std::vector<std::string> parts = Parts(signer.Mint(Ana(), kNow));
  for (size_t i : {size_t{0}, size_t{20}, parts[2].size() - 1}) {
    std::string sig = parts[2];
    sig[i] = sig[i] == 'A' ? 'B' : 'A';
    ExpectInvalid(signer, absl::StrCat(parts[0], ".", parts[1], ".", sig));
  }
  ExpectInvalid(signer, absl::StrCat(parts[0], ".", parts[1], "."));                   // empty
  ExpectInvalid(signer, absl::StrCat(parts[0], ".", parts[1], ".", parts[2], "AA"));  // longer
  ExpectInvalid(signer, absl::StrCat(parts[0], ".", parts[1], ".", parts[2].substr(0, 40)));
}

TEST(TokenSignerTest, WrongKey) {
  const std::string token = MakeSigner().Mint(Ana(), kNow);
  ExpectInvalid(MakeSigner(kOtherKey), token);
  ExpectInvalid(MakeSigner(), SignRaw(R"({"alg":"HS256","typ":"JWT"})",
                                      R"({"sub":"u-ana","exp":1798848000})", kOtherKey));
}

TEST(TokenSignerTest, OnlyHs256IsAccepted) {
  const TokenSigner signer = MakeSigner();
  const std::string payload = R"({"iss":"labshare","sub":"u-ana","roles":["consortium_admin"],"exp":1798848000})";
  // alg none, unsigned and "signed".
  ExpectInvalid(signer, absl::StrCat(B64(R"({"alg":"none","typ":"JWT"})"), ".", B64(payload), "."));
  ExpectInvalid(signer, SignRaw(R"({"alg":"none","typ":"JWT"})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":"HS512","typ":"JWT"})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":"hs256","typ":"JWT"})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":"RS256"})", payload));
  ExpectInvalid(signer, SignRaw(R"({"typ":"JWT"})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":["HS256"]})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":"HS256","typ":"JWE"})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":"HS256","crit":["exp"]})", payload));
  ExpectInvalid(signer, SignRaw(R"({"alg":"HS256","alg":"none"})", payload));
  ExpectInvalid(signer, SignRaw("not json", payload));
  // Acceptable variations.
  EXPECT_TRUE(signer.Verify(SignRaw(R"({"alg":"HS256"})", payload), kNow).ok());
  EXPECT_TRUE(signer.Verify(SignRaw(R"( { "typ" : "jwt" , "alg" : "HS256", "kid": "k1" } )", payload), kNow).ok());
}

TEST(TokenSignerTest, MalformedBase64) {
  const TokenSigner signer = MakeSigner();
  const std::vector<std::string> parts = Parts(signer.Mint(Ana(), kNow));
  const std::string& h = parts[0];
  const std::string& p = parts[1];
  const std::string& s = parts[2];
  ExpectInvalid(signer, absl::StrCat(h, ".", p.substr(0, 5), "*", p.substr(6), ".", s));
  ExpectInvalid(signer, absl::StrCat(h, ".", p, "=", ".", s));
  ExpectInvalid(signer, absl::StrCat(h, ".", p, ".", s, "="));
  ExpectInvalid(signer, absl::StrCat(h, "=.", p, ".", s));
  ExpectInvalid(signer, absl::StrCat(h, ".", p, ".", s.substr(0, 10), "+", s.substr(11)));
  ExpectInvalid(signer, absl::StrCat(h, ".", p, ".", s.substr(0, 10), "/", s.substr(11)));
  ExpectInvalid(signer, absl::StrCat(h, ".", p, ".", s.substr(0, 10), " ", s.substr(11)));
  ExpectInvalid(signer, absl::StrCat("A.", p, ".", s));  // a length that no encoding has
  ExpectInvalid(signer, absl::StrCat(std::string(h.size(), '!'), ".", p, ".", s));
}

TEST(TokenSignerTest, NotThreeParts) {
  const TokenSigner signer = MakeSigner();
  const std::string token = signer.Mint(Ana(), kNow);
  const std::vector<std::string> parts = Parts(token);
  for (const std::string& bad :
       {std::string(), std::string("."), std::string(".."), std::string("..."), std::string("garbage"),
        parts[0], absl::StrCat(parts[0], ".", parts[1]), absl::StrCat(token, "."), absl::StrCat(token, ".x"),
        absl::StrCat(".", token), absl::StrCat(parts[0], "..", parts[1], ".", parts[2]),
        absl::StrCat("Bearer ", token), absl::StrCat(token, "\n")}) {
    ExpectInvalid(signer, bad);
  }
}

TEST(TokenSignerTest, OverlongToken) {
  const TokenSigner signer = MakeSigner();
  Principal p = Ana();
  p.user_id = std::string(9000, 'u');
  ExpectInvalid(signer, signer.Mint(p, kNow));
}

// ---------------------------------------------------------------------------
// Claims.

TEST(TokenSignerTest, UnknownRole) {
  const TokenSigner signer = MakeSigner();
  ExpectInvalid(signer, SignPayload(R"({"sub":"u-ana","roles":["lab_user","superuser"],"exp":1798848000})"));
  ExpectInvalid(signer, SignPayload(R"({"sub":"u-ana","roles":["LAB_USER"],"exp":1798848000})"));
  ExpectInvalid(signer, SignPayload(R"({"sub":"u-ana","roles":[""],"exp":1798848000})"));
}

TEST(TokenSignerTest, RequiredClaimsAndTypes) {
  const TokenSigner signer = MakeSigner();
  for (const char* payload : {
           R"({"exp":1798848000})",                                   // no sub
           R"({"sub":"","exp":1798848000})",                          // empty sub
           R"({"sub":"u-ana"})",                                      // no exp
           R"({"sub":"u-ana","exp":"1798848000"})",                   // exp not an integer
           R"({"sub":["u-ana"],"exp":1798848000})",                   // sub not a string
           R"({"sub":7,"exp":1798848000})",                           // sub not a string
           R"({"sub":"u-ana","org":1,"exp":1798848000})",             // org not a string
           R"({"sub":"u-ana","roles":"lab_user","exp":1798848000})",  // roles not an array
           R"({"sub":"u-ana","iat":"now","exp":1798848000})",         // iat not an integer
           R"({"sub":"u-ana","nbf":"now","exp":1798848000})",         // nbf not an integer
           R"({"iss":"elsewhere","sub":"u-ana","exp":1798848000})",   // foreign issuer
           R"({"iss":7,"sub":"u-ana","exp":1798848000})",             // issuer not a string
           R"({})",
       }) {
    ExpectInvalid(signer, SignPayload(payload));
  }
}

TEST(TokenSignerTest, LenientWhereHarmless) {
  const TokenSigner signer = MakeSigner();
  // No iss, org or roles; unknown claims of every supported type; whitespace;
  // escapes including a surrogate pair.
  absl::StatusOr<Principal> out = signer.Verify(
      SignPayload(" {\n\t\"jti\" : \"x\", \"n\": -12, \"aud\": [\"a\", \"b\"], \"aud2\": [],\r\n"
                  " \"sub\": \"u-\\u00e9\\ud83d\\udd2c\\/\\\"\" , \"exp\": 1798848000 } "),
      kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->user_id, "u-\xC3\xA9\xF0\x9F\x94\xAC/\"");
  EXPECT_EQ(out->organization_id, "");
  EXPECT_TRUE(out->roles.empty());
}

TEST(TokenSignerTest, GarbageJson) {
  const TokenSigner signer = MakeSigner();
  for (const std::string& payload : {
           std::string(""),
           std::string("garbage"),
           std::string("null"),
           std::string("[]"),
           std::string("\"sub\""),
           std::string("{"),
           std::string("}"),
           std::string(R"({"sub":"u-ana","exp":1798848000)"),              // unterminated
           std::string(R"({"sub":"u-ana","exp":1798848000}})"),            // trailing brace
           std::string(R"({"sub":"u-ana","exp":1798848000} x)"),           // trailing garbage
           std::string(R"({"sub":"u-ana","exp":1798848000,})"),            // trailing comma
           std::string(R"({,"sub":"u-ana","exp":1798848000})"),            // leading comma
           std::string(R"({"sub":"u-ana" "exp":1798848000})"),             // missing comma
           std::string(R"({"sub" "u-ana","exp":1798848000})"),             // missing colon
           std::string(R"({sub:"u-ana","exp":1798848000})"),               // bare key
           std::string(R"({'sub':'u-ana','exp':1798848000})"),             // single quotes
           std::string(R"({"sub":"u-ana","exp":1798848000.0})"),           // float
           std::string(R"({"sub":"u-ana","exp":1.798848e9})"),             // exponent
           std::string(R"({"sub":"u-ana","exp":01798848000})"),            // leading zero
           std::string(R"({"sub":"u-ana","exp":+1798848000})"),            // plus sign
           std::string(R"({"sub":"u-ana","exp":-})"),                      // lone minus
           std::string(R"({"sub":"u-ana","exp":99999999999999999999})"),   // int64 overflow
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":true})"),    // boolean
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":null})"),    // null
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":{}})"),      // nested object
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":[1]})"),     // array of numbers
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":[[]]})"),    // nested array
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":["a",]})"),  // trailing comma in array
           std::string(R"({"sub":"u-ana","exp":1798848000,"x":["a")"),     // unterminated array
           std::string(R"({"sub":"u-ana","sub":"u-eve","exp":1798848000})"),  // duplicate key
           std::string(R"({"sub":"u-\x","exp":1798848000})"),                 // bad escape
           std::string(R"({"sub":"u-\u12","exp":1798848000})"),               // short \u
           std::string(R"({"sub":"u-\u12g4","exp":1798848000})"),             // bad hex
           std::string(R"({"sub":"u-\ud83d","exp":1798848000})"),             // lone high surrogate
           std::string(R"({"sub":"u-\udd2c","exp":1798848000})"),             // lone low surrogate
           std::string(R"({"sub":"u-\ud83d\u0041","exp":1798848000})"),       // bad pair
           std::string("{\"sub\":\"u-\nana\",\"exp\":1798848000}"),           // raw control char
           std::string("{\"sub\":\"u-\xFF\",\"exp\":1798848000}"),            // invalid UTF-8
           std::string("{\"sub\":\"u-\xC0\xAF\",\"exp\":1798848000}"),        // overlong UTF-8
           std::string("{\"sub\":\"u-\xED\xA0\x80\",\"exp\":1798848000}"),    // UTF-8 surrogate
           std::string("{\"sub\":\"u-\xC3\",\"exp\":1798848000}"),            // truncated UTF-8
           std::string(R"({"sub":"u-ana","exp":1798848000})") + '\0',          // trailing NUL
           std::string(R"({"sub":"u-ana\)"),                                   // ends in escape
           std::string(R"({"sub":"u-ana)"),                                    // unterminated string
       }) {
    SCOPED_TRACE(payload);
    ExpectInvalid(signer, SignPayload(payload));
  }
}

TEST(TokenSignerTest, ExtremeIntegers) {
  const TokenSigner signer = MakeSigner();
  EXPECT_TRUE(signer.Verify(SignPayload(R"({"sub":"u","exp":9223372036854775807})"), kNow).ok());
  ExpectError(signer.Verify(SignPayload(R"({"sub":"u","exp":-9223372036854775808})"), kNow),
              absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED");
  ExpectError(signer.Verify(SignPayload(R"({"sub":"u","exp":-0})"), kNow), absl::StatusCode::kUnauthenticated,
              "TOKEN_EXPIRED");
  ExpectInvalid(signer, SignPayload(R"({"sub":"u","exp":9223372036854775808})"));
  ExpectInvalid(signer, SignPayload(R"({"sub":"u","exp":-9223372036854775809})"));
}

// ---------------------------------------------------------------------------
// Known answers from an independent implementation (Python hmac, hashlib,
// base64, json) with the key below:
//
//   key = b"labshare-known-answer-test-key-0123456789"
//   b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
//   def tok(h, p):
//       si = b(h) + "." + b(p)
//       return si + "." + b(hmac.new(key, si.encode(), hashlib.sha256).digest())

constexpr char kKnownAnswerKey[] = "labshare-known-answer-test-key-0123456789";

// tok(json.dumps({"typ": "JWT", "alg": "HS256"}).encode(),
//     json.dumps({"jti": "kat-1", "exp": 1798765200, "sub": "u-ana", "org": "lab-\u00e9",
//                 "roles": ["facility_staff", "consortium_admin"], "iss": "labshare",
//                 "iat": 1798761600}).encode())
constexpr char kKnownAnswerToken[] =
    "eyJ0eXAiOiAiSldUIiwgImFsZyI6ICJIUzI1NiJ9."
    "eyJqdGkiOiAia2F0LTEiLCAiZXhwIjogMTc5ODc2NTIwMCwgInN1YiI6ICJ1LWFuYSIsICJvcmciOiAibGFiLVx1MDBlOSIsICJyb2xl"
    "cyI6IFsiZmFjaWxpdHlfc3RhZmYiLCAiY29uc29ydGl1bV9hZG1pbiJdLCAiaXNzIjogImxhYnNoYXJlIiwgImlhdCI6IDE3OTg3NjE2"
    "MDB9."
    "zSx6dRYI6L0ngfBJCVtKsalm5w18xX1MoRnhA6lttVI";

TEST(TokenSignerTest, KnownAnswerVerifies) {
  const TokenSigner signer = MakeSigner(kKnownAnswerKey);
  absl::StatusOr<Principal> out = signer.Verify(kKnownAnswerToken, kNow);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->user_id, "u-ana");
  EXPECT_EQ(out->organization_id, "lab-\xC3\xA9");
  EXPECT_EQ(out->roles, (std::vector<Role>{Role::kFacilityStaff, Role::kConsortiumAdmin}));
  EXPECT_EQ(out->expires_at, absl::FromUnixSeconds(1798765200));
  ExpectError(signer.Verify(kKnownAnswerToken, absl::FromUnixSeconds(1798765200)),
              absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED");
  ExpectInvalid(MakeSigner(), kKnownAnswerToken);
}

// tok(b'{"alg":"HS256","typ":"JWT"}',
//     b'{"iss":"labshare","sub":"booking","org":"","roles":["service","auditor"],'
//     b'"iat":1798761600,"exp":1798848000}')
constexpr char kKnownAnswerMinted[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpc3MiOiJsYWJzaGFyZSIsInN1YiI6ImJvb2tpbmciLCJvcmciOiIiLCJyb2xlcyI6WyJzZXJ2aWNlIiwiYXVkaXRvciJdLCJpYXQi"
    "OjE3OTg3NjE2MDAsImV4cCI6MTc5ODg0ODAwMH0."
    "d3Uk5xv1QJFJUBvqHscyGKlk5n8_-YFR6RONUlt9WEI";

TEST(TokenSignerTest, KnownAnswerMint) {
  Principal p;
  p.user_id = "booking";
  p.roles = {Role::kService, Role::kAuditor};
  p.expires_at = absl::FromUnixSeconds(1798848000);
  EXPECT_EQ(MakeSigner(kKnownAnswerKey).Mint(p, kNow), kKnownAnswerMinted);
}

// ---------------------------------------------------------------------------
// FromFileOrEnv.

class FromFileOrEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = getenv("LABSHARE_TOKEN_KEY")) saved_env_ = v;
    unsetenv("LABSHARE_TOKEN_KEY");
  }
  void TearDown() override {
    if (saved_env_) {
      setenv("LABSHARE_TOKEN_KEY", saved_env_->c_str(), 1);
    } else {
      unsetenv("LABSHARE_TOKEN_KEY");
    }
    for (const std::string& f : files_) unlink(f.c_str());
  }

  std::string WriteFile(const std::string& name, const std::string& contents) {
    const std::string path = absl::StrCat(::testing::TempDir(), "/token_test_", getpid(), "_", name);
    std::ofstream(path, std::ios::binary) << contents;
    files_.push_back(path);
    return path;
  }

  // The signer uses exactly kKey if it verifies tokens minted with kKey.
  static void ExpectUsesKey(const absl::StatusOr<TokenSigner>& s, const std::string& key) {
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(s->Verify(MakeSigner(key).Mint(Ana(), kNow), kNow).ok());
    EXPECT_TRUE(MakeSigner(key).Verify(s->Mint(Ana(), kNow), kNow).ok());
  }

  std::optional<std::string> saved_env_;
  std::vector<std::string> files_;
};

TEST_F(FromFileOrEnvTest, KeyFromFileTrailingNewlineTrimmed) {
  ExpectUsesKey(TokenSigner::FromFileOrEnv(WriteFile("nl", absl::StrCat(kKey, "\n"))), kKey);
  ExpectUsesKey(TokenSigner::FromFileOrEnv(WriteFile("crlf", absl::StrCat(kKey, "\r\n"))), kKey);
  ExpectUsesKey(TokenSigner::FromFileOrEnv(WriteFile("bare", kKey)), kKey);
}

TEST_F(FromFileOrEnvTest, FileWinsOverEnv) {
  setenv("LABSHARE_TOKEN_KEY", kOtherKey, 1);
  ExpectUsesKey(TokenSigner::FromFileOrEnv(WriteFile("key", kKey)), kKey);
}

TEST_F(FromFileOrEnvTest, KeyFromEnv) {
  setenv("LABSHARE_TOKEN_KEY", kKey, 1);
  ExpectUsesKey(TokenSigner::FromFileOrEnv(""), kKey);
}

TEST_F(FromFileOrEnvTest, NeitherIsMissing) {
  absl::StatusOr<TokenSigner> s = TokenSigner::FromFileOrEnv("");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorReason(s.status()), "TOKEN_KEY_MISSING");
  EXPECT_NE(s.status().message().find("LABSHARE_TOKEN_KEY"), absl::string_view::npos) << s.status();
  EXPECT_NE(s.status().message().find("--key_file"), absl::string_view::npos) << s.status();

  setenv("LABSHARE_TOKEN_KEY", "", 1);
  EXPECT_EQ(ErrorReason(TokenSigner::FromFileOrEnv("").status()), "TOKEN_KEY_MISSING");
}

TEST_F(FromFileOrEnvTest, WeakKeys) {
  setenv("LABSHARE_TOKEN_KEY", "too-short", 1);
  EXPECT_EQ(ErrorReason(TokenSigner::FromFileOrEnv("").status()), "WEAK_TOKEN_KEY");
  EXPECT_EQ(ErrorReason(TokenSigner::FromFileOrEnv(WriteFile("short", "short\n")).status()), "WEAK_TOKEN_KEY");
  EXPECT_EQ(ErrorReason(TokenSigner::FromFileOrEnv(WriteFile("empty", "")).status()), "WEAK_TOKEN_KEY");
  // 31 bytes plus a newline is still 31 bytes.
  EXPECT_EQ(ErrorReason(TokenSigner::FromFileOrEnv(WriteFile("31", std::string(31, 'k') + "\n")).status()),
            "WEAK_TOKEN_KEY");
}

TEST_F(FromFileOrEnvTest, MissingFile) {
  setenv("LABSHARE_TOKEN_KEY", kKey, 1);  // not consulted when a file is named
  absl::StatusOr<TokenSigner> s = TokenSigner::FromFileOrEnv("/nonexistent/labshare/token.key");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorReason(s.status()), "TOKEN_KEY_FILE_NOT_FOUND");
}

TEST_F(FromFileOrEnvTest, UnreadableFile) {
  absl::StatusOr<TokenSigner> dir = TokenSigner::FromFileOrEnv(::testing::TempDir());
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(dir.status()), "TOKEN_KEY_FILE_UNREADABLE");

  absl::StatusOr<TokenSigner> big = TokenSigner::FromFileOrEnv(WriteFile("big", std::string(70000, 'k')));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);

  if (geteuid() != 0) {  // root reads anything
    const std::string path = WriteFile("noperm", kKey);
    ASSERT_EQ(chmod(path.c_str(), 0), 0);
    absl::StatusOr<TokenSigner> s = TokenSigner::FromFileOrEnv(path);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(s.status()), "TOKEN_KEY_FILE_UNREADABLE");
  }
}

}  // namespace
}  // namespace labshare
