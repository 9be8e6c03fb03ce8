// The sign-in storage against a real redis-server: lookup indexes (backfill,
// stale members, case) and the refresh-token families (rotation, reuse,
// revocation, only hashes stored, expiry, the maximum session age).
#include "services/inventory/identity_store.h"

#include "services/inventory/identity_manager.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "common/jwks.h"
#include "tests/support/https_file_server.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare::inventory {
namespace {

using labshare::testing::FlushAll;
using labshare::testing::SharedRedisServer;
using Kind = IdentityStore::Rotation::Kind;

// A JWS (ES256) over exactly these header and payload texts, signed with
// the EC private key in `pem`: headers the issuers here would not write.
std::string SignEs256(const std::string& pem, const std::string& header, const std::string& payload) {
  auto b64 = [](const std::string& s) { return absl::WebSafeBase64Escape(s); };
  const std::string input = absl::StrCat(b64(header), ".", b64(payload));
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr),
                                                          EVP_PKEY_free);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EXPECT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()), 1);
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size()), 1);
  std::string der(len, '\0');
  EXPECT_EQ(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(der.data()), &len, in, input.size()), 1);
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(len)),
                                                           ECDSA_SIG_free);
  unsigned char raw[64];
  BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw + 32, 32);
  return absl::StrCat(input, ".", b64(std::string(reinterpret_cast<char*>(raw), 64)));
}

class IdentityStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(SharedRedisServer(), nullptr);
    FlushAll(*SharedRedisServer());
    pool_ = std::make_unique<RedisPool>(SharedRedisServer()->options());
    inventory_ = std::make_unique<InventoryStore>(pool_.get());
    store_ = std::make_unique<IdentityStore>(pool_.get(), inventory_.get());
  }

  // Writes a user document the way CreateUser does, with or without the
  // sign-in index entries (without: a user stored before they existed).
  void PutUser(const std::string& id, const std::string& email, const std::string& subject, bool index,
               int64_t version = 0) {
    v1::User u;
    u.set_name("users/" + id);
    u.set_email(email);
    u.set_external_subject(subject);
    Mutation m;
    m.writes.push_back({keys::User(id), u.SerializeAsString(), version});
    if (version == 0) m.index_ops.push_back({keys::Users(), id});
    if (index) AddSignInIndexOps(v1::User(), u, id, &m.index_ops);
    auto outcome = inventory_->docs().Commit(m);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    ASSERT_EQ(outcome->kind, CommitOutcome::Kind::kApplied);
  }

  std::vector<std::string> Names(const absl::StatusOr<std::vector<v1::User>>& users) {
    EXPECT_TRUE(users.ok()) << users.status();
    std::vector<std::string> out;
    if (users.ok()) {
      for (const auto& u : *users) out.push_back(u.name());
    }
    return out;
  }

  // A session step at clock_'s now: refresh tokens live `ttl`, the session
  // the default maximum age (30 days).
  IdentityStore::SessionLimits Limits(absl::Duration ttl) const {
    return {ttl, IdentityOptions().max_session_age, clock_.Now()};
  }

  // Every stored key of the session whose token is `token`, by kind:
  // "{inventory}:refresh_family:<family>" and "...refresh_used:<family>".
  static std::string SessionKey(absl::string_view kind, const std::string& token) {
    return absl::StrCat("{inventory}:refresh_", kind, ":", token.substr(5, 22));
  }

  FakeClock clock_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<InventoryStore> inventory_;
  std::unique_ptr<IdentityStore> store_;
};

TEST_F(IdentityStoreTest, BackfillIndexesUsersStoredBeforeTheIndexes) {
  PutUser("old", "Old@Example.org", "sub-old", /*index=*/false);
  EXPECT_TRUE(Names(store_->UsersWithEmail("old@example.org")).empty());
  ASSERT_TRUE(store_->BackfillSignInIndexes().ok());
  EXPECT_EQ(Names(store_->UsersWithEmail("old@example.org")), std::vector<std::string>{"users/old"});
  EXPECT_EQ(Names(store_->UsersWithSubject("sub-old")), std::vector<std::string>{"users/old"});
  ASSERT_TRUE(store_->BackfillSignInIndexes().ok());  // idempotent
  EXPECT_EQ(Names(store_->UsersWithEmail(" OLD@example.ORG ")), std::vector<std::string>{"users/old"});
}

TEST_F(IdentityStoreTest, StaleIndexMemberSignsNobodyIn) {
  PutUser("a", "a@example.org", "", /*index=*/true);
  // The document moves to another email without its index entry moving.
  PutUser("a", "b@example.org", "", /*index=*/false, /*version=*/1);
  EXPECT_TRUE(Names(store_->UsersWithEmail("a@example.org")).empty());
}

TEST_F(IdentityStoreTest, PrefixOfAnotherValueMatchesNothing) {
  PutUser("ann", "ann@example.org", "sub-1", /*index=*/true);
  EXPECT_TRUE(Names(store_->UsersWithSubject("sub-")).empty());
  EXPECT_TRUE(Names(store_->UsersWithEmail("ann@example.or")).empty());
  EXPECT_TRUE(Names(store_->UsersWithEmail("")).empty());
}

TEST_F(IdentityStoreTest, RotationUsesATokenUpAndReuseEndsTheFamily) {
  auto t1 = store_->StartSession("li-wei", Limits(absl::Hours(1)));
  ASSERT_TRUE(t1.ok()) << t1.status();
  auto r1 = store_->Rotate(*t1, Limits(absl::Hours(1)));
  ASSERT_TRUE(r1.ok());
  ASSERT_EQ(r1->kind, Kind::kRotated);
  EXPECT_EQ(r1->user_id, "li-wei");
  EXPECT_NE(r1->new_token, *t1);
  auto again = store_->Rotate(*t1, Limits(absl::Hours(1)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind, Kind::kReused);
  auto r2 = store_->Rotate(r1->new_token, Limits(absl::Hours(1)));
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->kind, Kind::kInvalid);
}

// A used token stays known as long as its session lives on from its
// use (the rotation's TTL), not just its own first TTL: presented again
// later in the session it is still a reuse, not an unknown token.
TEST_F(IdentityStoreTest, AUsedTokenIsKeptAsLongAsTheSessionItWasRotatedInto) {
  auto t1 = store_->StartSession("li-wei", Limits(absl::Hours(1)));
  ASSERT_TRUE(t1.ok()) << t1.status();
  EXPECT_EQ(*store_->ActiveTokenUser(*t1), "li-wei");
  auto r1 = store_->Rotate(*t1, Limits(absl::Hours(5)));
  ASSERT_TRUE(r1.ok() && r1->kind == Kind::kRotated);
  EXPECT_EQ(*store_->ActiveTokenUser(*t1), "");  // used
  EXPECT_EQ(*store_->ActiveTokenUser(r1->new_token), "li-wei");
  auto keys = pool_->Command({"KEYS", "{inventory}:refresh*"});
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->elements.size(), 3u);  // the new token's record, the family, its used set
  for (const auto& k : keys->elements) {
    auto ttl = pool_->Command({"TTL", k.str});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, 4 * 3600) << k.str;  // all: 5 h from the rotation
  }
  EXPECT_EQ(store_->Rotate(*t1, Limits(absl::Hours(5)))->kind, Kind::kReused);
  EXPECT_EQ(*store_->ActiveTokenUser(r1->new_token), "");  // the session ended
  EXPECT_EQ(*store_->ActiveTokenUser("nonsense"), "");
}

// identity.proto RefreshToken: a token used before revokes its whole session
// whenever it comes back while that session lives. A -> B, B -> C, then A:
// A's own record is gone (it used to get a TTL from its use, which later
// rotations did not extend, so once it lapsed A was "unknown" and C lived
// on); the family's used set still knows A, and the session ends.
TEST_F(IdentityStoreTest, ATokenUsedSeveralRotationsAgoIsAReuseWhileTheSessionLives) {
  auto a = store_->StartSession("li-wei", Limits(absl::Hours(1)));
  ASSERT_TRUE(a.ok()) << a.status();
  auto a_record = pool_->Command({"KEYS", "{inventory}:refresh:*"});
  ASSERT_TRUE(a_record.ok());
  ASSERT_EQ(a_record->elements.size(), 1u);
  auto b = store_->Rotate(*a, Limits(absl::Hours(1)));
  ASSERT_TRUE(b.ok() && b->kind == Kind::kRotated);
  auto c = store_->Rotate(b->new_token, Limits(absl::Hours(1)));
  ASSERT_TRUE(c.ok() && c->kind == Kind::kRotated);
  // Whatever was kept of A's record has lapsed; the session lives on from C.
  ASSERT_TRUE(pool_->Command({"DEL", a_record->elements[0].str}).ok());
  ASSERT_EQ(*store_->ActiveTokenUser(c->new_token), "li-wei");

  auto again = store_->Rotate(*a, Limits(absl::Hours(1)));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->kind, Kind::kReused);
  EXPECT_EQ(again->user_id, "li-wei");
  EXPECT_EQ(*store_->ActiveTokenUser(c->new_token), "");
  EXPECT_EQ(store_->Rotate(c->new_token, Limits(absl::Hours(1)))->kind, Kind::kInvalid);
  auto left = pool_->Command({"KEYS", "{inventory}:refresh_*"});
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->elements.empty());  // the family and its used set are gone
}

// The used set only knows tokens the family issued: a token naming a live
// family with a made-up secret is unknown and leaves the session alone, and
// once the session ended a used token is unknown too.
TEST_F(IdentityStoreTest, AForgedTokenOfALiveFamilyIsUnknownNotAReuse) {
  auto a = store_->StartSession("li-wei", Limits(absl::Hours(1)));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = store_->Rotate(*a, Limits(absl::Hours(1)));
  ASSERT_TRUE(b.ok() && b->kind == Kind::kRotated);
  const std::string forged = a->substr(0, a->rfind('.') + 1) + std::string(43, 'A');
  EXPECT_EQ(store_->Rotate(forged, Limits(absl::Hours(1)))->kind, Kind::kInvalid);
  EXPECT_EQ(*store_->ActiveTokenUser(b->new_token), "li-wei");
  ASSERT_TRUE(store_->RevokeSession(forged).ok());
  EXPECT_EQ(*store_->ActiveTokenUser(b->new_token), "li-wei");
  // Signing out with the used token ends the session (RevokeToken: a token
  // of the session, used or not); presented afterwards it is unknown.
  ASSERT_TRUE(store_->RevokeSession(*a).ok());
  EXPECT_EQ(*store_->ActiveTokenUser(b->new_token), "");
  EXPECT_EQ(store_->Rotate(*a, Limits(absl::Hours(1)))->kind, Kind::kInvalid);
}

TEST_F(IdentityStoreTest, RevokeEndsTheFamilyAndOtherSessionsLive) {
  auto mine = store_->StartSession("li-wei", Limits(absl::Hours(1)));
  auto other = store_->StartSession("li-wei", Limits(absl::Hours(1)));
  ASSERT_TRUE(mine.ok() && other.ok());
  ASSERT_TRUE(store_->RevokeSession(*mine).ok());
  EXPECT_EQ(store_->Rotate(*mine, Limits(absl::Hours(1)))->kind, Kind::kInvalid);
  EXPECT_EQ(store_->Rotate(*other, Limits(absl::Hours(1)))->kind, Kind::kRotated);
  // A token of a family but not issued by it revokes nothing.
  const std::string forged = other->substr(0, other->rfind('.') + 1) + std::string(43, 'A');
  ASSERT_TRUE(store_->RevokeSession(forged).ok());
  EXPECT_TRUE(store_->RevokeSession("nonsense").ok());
}

TEST_F(IdentityStoreTest, MalformedTokensAreInvalid) {
  for (const std::string t : {"", "lsr1", "lsr1..", "lsr2.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                              "lsr1.AAAAAAAAAAAAAAAAAAAA!A.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}) {
    auto r = store_->Rotate(t, Limits(absl::Hours(1)));
    ASSERT_TRUE(r.ok()) << t;
    EXPECT_EQ(r->kind, Kind::kInvalid) << t;
  }
}

TEST_F(IdentityStoreTest, OnlyHashesAreStoredAndEverythingExpires) {
  auto token = store_->StartSession("li-wei", Limits(absl::Minutes(10)));
  ASSERT_TRUE(token.ok());
  auto keys = pool_->Command({"KEYS", "*"});
  ASSERT_TRUE(keys.ok());
  const std::string secret = token->substr(token->rfind('.') + 1);
  ASSERT_EQ(keys->elements.size(), 2u);
  for (const auto& k : keys->elements) {
    EXPECT_TRUE(absl::StartsWith(k.str, "{inventory}:refresh")) << k.str;
    EXPECT_FALSE(absl::StrContains(k.str, secret));
    auto dump = pool_->Command({"DUMP", k.str});
    ASSERT_TRUE(dump.ok());
    EXPECT_FALSE(absl::StrContains(dump->str, secret));
    auto ttl = pool_->Command({"TTL", k.str});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, 0) << k.str;
    EXPECT_LE(ttl->integer, 600) << k.str;
  }
}

// identity_store.h: a session at its maximum age ends at its next refresh
// (kExpired), its family, used set and the presented record deleted, and a
// token of it is then invalid, not a reuse; before that every key's TTL is
// capped by what is left of the session, so the used set (one hash per
// rotation) never outlives it. The clock is injected: no waiting.
TEST_F(IdentityStoreTest, ASessionEndsAtItsMaximumAgeWithItsUsedSet) {
  const absl::Time start = clock_.Now();
  auto limits = [&] { return IdentityStore::SessionLimits{absl::Hours(12), absl::Hours(48), clock_.Now()}; };
  auto token = store_->StartSession("li-wei", limits());
  ASSERT_TRUE(token.ok()) << token.status();
  std::string current = *token;
  for (int i = 1; i <= 4; ++i) {  // at 11, 22, 33 and 44 hours
    clock_.Advance(absl::Hours(11));
    auto r = store_->Rotate(current, limits());
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->kind, Kind::kRotated) << i;
    EXPECT_EQ(r->session_start, start);
    current = r->new_token;
  }
  auto used = pool_->Command({"HLEN", SessionKey("used", current)});
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(used->integer, 4);
  for (const std::string& key : {SessionKey("used", current), SessionKey("family", current)}) {
    auto ttl = pool_->Command({"TTL", key});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, 0) << key;
    EXPECT_LE(ttl->integer, 4 * 3600) << key;  // 4 h left of 48, not the 12 h refresh TTL
  }
  clock_.Set(start + absl::Hours(48));
  auto ended = store_->Rotate(current, limits());
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->kind, Kind::kExpired);
  auto left = pool_->Command({"KEYS", "{inventory}:refresh*"});  // records, family, used set
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->elements.empty());
  EXPECT_EQ(store_->Rotate(*token, limits())->kind, Kind::kInvalid);  // used long ago: the session is gone
}

// A family stored before sessions had a start ("1") counts its age from its
// first refresh since.
TEST_F(IdentityStoreTest, ASessionOfTheFirstFormatStartsAtItsNextRefresh) {
  auto token = store_->StartSession("li-wei", Limits(absl::Hours(12)));
  ASSERT_TRUE(token.ok()) << token.status();
  ASSERT_TRUE(pool_->Command({"SET", SessionKey("family", *token), "1", "KEEPTTL"}).ok());
  clock_.Advance(absl::Hours(24 * 365));
  auto r = store_->Rotate(*token, Limits(absl::Hours(12)));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->kind, Kind::kRotated);
  EXPECT_EQ(r->session_start, absl::FromUnixMillis(absl::ToUnixMillis(clock_.Now())));
}

// ------------------------------------------------------------ the manager's own answers

TEST_F(IdentityStoreTest, SignInWithoutProviderOrKeyIsNotConfigured) {
  SystemClock clock;
  OidcProvider provider("https://127.0.0.1:1", HttpOptions());
  for (auto [p, issuer] : {std::pair<OidcProvider*, const TokenIssuer*>{nullptr, &labshare::testing::TestIssuer()},
                           std::pair<OidcProvider*, const TokenIssuer*>{&provider, nullptr}}) {
    IdentityManager manager(inventory_.get(), store_.get(), p, issuer, IdentityOptions(), &clock);
    identity::v1::ExchangeTokenRequest req;
    req.set_id_token("a.b.c");
    auto out = manager.ExchangeToken(req);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(ErrorReason(out.status()), "SIGN_IN_NOT_CONFIGURED");
  }
}

TEST_F(IdentityStoreTest, UnreachableProviderIsUnavailable) {
  SystemClock clock;
  HttpOptions http;
  http.timeout = absl::Seconds(2);
  OidcProvider provider("https://127.0.0.1:1", http);  // nothing listens on port 1
  IdentityManager manager(inventory_.get(), store_.get(), &provider, &labshare::testing::TestIssuer(),
                          IdentityOptions(), &clock);
  identity::v1::ExchangeTokenRequest req;
  const absl::Time now = absl::Now();
  req.set_id_token(labshare::testing::TestIssuer().Mint(Principal{"acct-a", "", {}, now + absl::Minutes(5)}, now));
  auto out = manager.ExchangeToken(req);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorReason(out.status()), "PROVIDER_UNAVAILABLE");
  // What is not a JWT at all is INVALID_TOKEN whether or not the provider
  // answers (identity.proto: "not a JWT"); it was PROVIDER_UNAVAILABLE.
  for (const char* garbage : {"a.b.c", "garbage", "e30.e30.e30" /* {} without alg */}) {
    req.set_id_token(garbage);
    out = manager.ExchangeToken(req);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kUnauthenticated) << garbage << ": " << out.status();
    EXPECT_EQ(ErrorReason(out.status()), "INVALID_TOKEN") << garbage;
  }
}

// The provider rotated to a key we have not seen, and its key set cannot be
// fetched now: the ID token is not known to be invalid, so the answer is
// PROVIDER_UNAVAILABLE (retry), not INVALID_TOKEN (a bad token). While the
// provider answers, a key it does not publish stays INVALID_TOKEN.
TEST_F(IdentityStoreTest, UnknownKeyWhileTheProviderIsDownIsProviderUnavailable) {
  const std::string www = labshare::testing::TestTempDir();
  ASSERT_EQ(::mkdir((www + "/.well-known").c_str(), 0755), 0);
  const auto& pki = labshare::testing::TestPki::Shared();
  labshare::testing::HttpsFileServer server(www, pki.Service("inventory").cert_file,
                                            pki.Service("inventory").key_file);
  ASSERT_GT(server.port(), 0);
  const std::string issuer = absl::StrCat("https://127.0.0.1:", server.port());
  labshare::testing::WriteTestFile(
      www + "/.well-known", "openid-configuration",
      absl::StrCat(R"({"issuer":")", issuer, R"(","jwks_uri":")", issuer, R"(/jwks.json"})"), 0644);
  auto published = TokenIssuer::FromPem(*GenerateEcPrivateKeyPem(), issuer, "labshare-console");
  auto unpublished = TokenIssuer::FromPem(*GenerateEcPrivateKeyPem(), issuer, "labshare-console");
  ASSERT_TRUE(published.ok() && unpublished.ok());
  labshare::testing::WriteTestFile(www, "jwks.json", JwksJson({(*published)->PublicJwk()}), 0644);

  SystemClock clock;
  HttpOptions http;
  http.ca_file = pki.ca_file();
  http.timeout = absl::Seconds(2);
  OidcProvider provider(issuer, http);
  IdentityManager manager(inventory_.get(), store_.get(), &provider, &labshare::testing::TestIssuer(),
                          IdentityOptions(), &clock);
  auto exchange = [&](const TokenIssuer& signer) {
    const absl::Time now = absl::Now();
    identity::v1::ExchangeTokenRequest req;
    req.set_id_token(signer.Mint(Principal{"acct-nobody", "", {}, now + absl::Minutes(5)}, now));
    return manager.ExchangeToken(req).status();
  };

  absl::Status out = exchange(**unpublished);
  EXPECT_EQ(out.code(), absl::StatusCode::kUnauthenticated) << out;
  EXPECT_EQ(ErrorReason(out), "INVALID_TOKEN") << out;
  out = exchange(**published);  // verified; nobody has this subject
  EXPECT_EQ(ErrorReason(out), "USER_NOT_REGISTERED") << out;

  server.Stop();
  // The key set is fetched again for an unknown kid at most once a second:
  // until then the last fetch (which succeeded) stands. Poll until it is
  // fetched again, and fails.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  out = exchange(**unpublished);
  while (ErrorReason(out) == "INVALID_TOKEN" && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    out = exchange(**unpublished);
  }
  EXPECT_EQ(out.code(), absl::StatusCode::kUnavailable) << out;
  EXPECT_EQ(ErrorReason(out), "PROVIDER_UNAVAILABLE") << out;
  // Right after, the one-second limit skips the fetch: still unavailable.
  out = exchange(**unpublished);
  EXPECT_EQ(out.code(), absl::StatusCode::kUnavailable) << out;
  EXPECT_EQ(ErrorReason(out), "PROVIDER_UNAVAILABLE") << out;
  // A key already known still verifies.
  EXPECT_EQ(ErrorReason(exchange(**published)), "USER_NOT_REGISTERED");
}

// identity.proto ExchangeToken: "An ID token is exchanged once". The ID
// token the console once put in the provider's sign-out URL (and so in the
// browser's history) started a new session every time it was exchanged
// until it expired. Now the second exchange is INVALID_TOKEN, also with the
// other valid form of its ECDSA signature (s -> n - s); a refusal uses
// nothing up; another ID token of the same person signs in.
TEST_F(IdentityStoreTest, AnIdTokenIsExchangedOnce) {
  const std::string www = labshare::testing::TestTempDir();
  ASSERT_EQ(::mkdir((www + "/.well-known").c_str(), 0755), 0);
  const auto& pki = labshare::testing::TestPki::Shared();
  labshare::testing::HttpsFileServer server(www, pki.Service("inventory").cert_file,
                                            pki.Service("inventory").key_file);
  ASSERT_GT(server.port(), 0);
  const std::string issuer = absl::StrCat("https://127.0.0.1:", server.port());
  labshare::testing::WriteTestFile(
      www + "/.well-known", "openid-configuration",
      absl::StrCat(R"({"issuer":")", issuer, R"(","jwks_uri":")", issuer, R"(/jwks.json"})"), 0644);
  auto provider_key = TokenIssuer::FromPem(*GenerateEcPrivateKeyPem(), issuer, "labshare-console");
  ASSERT_TRUE(provider_key.ok());
  labshare::testing::WriteTestFile(www, "jwks.json", JwksJson({(*provider_key)->PublicJwk()}), 0644);
  PutUser("li-wei", "li.wei@example.org", "acct-li-wei", /*index=*/true);

  SystemClock clock;
  HttpOptions http;
  http.ca_file = pki.ca_file();
  http.timeout = absl::Seconds(5);
  OidcProvider provider(issuer, http);
  IdentityManager manager(inventory_.get(), store_.get(), &provider, &labshare::testing::TestIssuer(),
                          IdentityOptions(), &clock);
  auto exchange = [&](const std::string& id_token) {
    identity::v1::ExchangeTokenRequest req;
    req.set_id_token(id_token);
    return manager.ExchangeToken(req);
  };
  const absl::Time now = absl::Now();
  const std::string id_token = (*provider_key)->Mint(Principal{"acct-li-wei", "", {}, now + absl::Minutes(5)}, now);

  auto first = exchange(id_token);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->user().name(), "users/li-wei");
  auto again = exchange(id_token);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnauthenticated) << again.status();
  EXPECT_EQ(ErrorReason(again.status()), "INVALID_TOKEN") << again.status();

  // ES256: the signature r||s verifies as r||(n - s) too; the same token in
  // other bytes is still the same token.
  auto other_form = [](const std::string& jwt) {
    const size_t dot = jwt.rfind('.');
    std::string sig;
    EXPECT_TRUE(absl::WebSafeBase64Unescape(jwt.substr(dot + 1), &sig));
    EXPECT_EQ(sig.size(), 64u);
    static constexpr unsigned char kN[32] = {
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};
    int borrow = 0;
    for (int i = 31; i >= 0; --i) {
      int d = kN[i] - static_cast<unsigned char>(sig[32 + i]) - borrow;
      borrow = d < 0 ? 1 : 0;
      sig[32 + i] = static_cast<char>(d < 0 ? d + 256 : d);
    }
    return absl::StrCat(jwt.substr(0, dot + 1), absl::WebSafeBase64Escape(sig));
  };
  const std::string second = (*provider_key)->Mint(Principal{"acct-li-wei", "", {}, now + absl::Minutes(5)}, now);
  auto alternate = exchange(other_form(second));
  ASSERT_TRUE(alternate.ok()) << alternate.status();  // the other form verifies
  again = exchange(second);
  EXPECT_EQ(ErrorReason(again.status()), "INVALID_TOKEN") << again.status();
  again = exchange(other_form(id_token));
  EXPECT_EQ(ErrorReason(again.status()), "INVALID_TOKEN") << again.status();

  // Only a hash is kept, for as long as the token could verify.
  auto keys = pool_->Command({"KEYS", "{inventory}:id_token_used:*"});
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->elements.size(), 2u);
  for (const auto& k : keys->elements) {
    auto ttl = pool_->Command({"PTTL", k.str});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, absl::ToInt64Milliseconds(absl::Minutes(5)));
    EXPECT_LE(ttl->integer, absl::ToInt64Milliseconds(absl::Minutes(6) + absl::Seconds(1)));
  }

  // A refusal uses nothing up: disabled, then enabled again, the same ID
  // token signs in.
  const std::string third = (*provider_key)->Mint(Principal{"acct-li-wei", "", {}, now + absl::Minutes(5)}, now);
  v1::User disabled;
  disabled.set_name("users/li-wei");
  disabled.set_email("li.wei@example.org");
  disabled.set_external_subject("acct-li-wei");
  disabled.set_disabled(true);
  Mutation m;
  m.writes.push_back({keys::User("li-wei"), disabled.SerializeAsString(), 1});
  auto committed = inventory_->docs().Commit(m);
  ASSERT_TRUE(committed.ok() && committed->kind == CommitOutcome::Kind::kApplied);
  EXPECT_EQ(ErrorReason(exchange(third).status()), "USER_DISABLED");
  PutUser("li-wei", "li.wei@example.org", "acct-li-wei", /*index=*/false, /*version=*/2);
  auto after_refusal = exchange(third);
  EXPECT_TRUE(after_refusal.ok()) << after_refusal.status();
}

// ExchangeToken takes the ID token of any certified provider: a header typ
// of "JWT" in any spelling of its media type, "JOSE" or none (RFC 7519 5.1,
// RFC 7515 4.1.9). Every typ but "JWT" was refused as "the signature does
// not verify". Another kind of token (an "at+jwt" access token) is still
// INVALID_TOKEN, by its typ.
TEST_F(IdentityStoreTest, AnIdTokenOfAnyJwtTypSignsIn) {
  const std::string www = labshare::testing::TestTempDir();
  ASSERT_EQ(::mkdir((www + "/.well-known").c_str(), 0755), 0);
  const auto& pki = labshare::testing::TestPki::Shared();
  labshare::testing::HttpsFileServer server(www, pki.Service("inventory").cert_file,
                                            pki.Service("inventory").key_file);
  ASSERT_GT(server.port(), 0);
  const std::string issuer = absl::StrCat("https://127.0.0.1:", server.port());
  labshare::testing::WriteTestFile(
      www + "/.well-known", "openid-configuration",
      absl::StrCat(R"({"issuer":")", issuer, R"(","jwks_uri":")", issuer, R"(/jwks.json"})"), 0644);
  const absl::StatusOr<std::string> pem = GenerateEcPrivateKeyPem();
  ASSERT_TRUE(pem.ok());
  auto provider_key = TokenIssuer::FromPem(*pem, issuer, "labshare-console");
  ASSERT_TRUE(provider_key.ok());
  labshare::testing::WriteTestFile(www, "jwks.json", JwksJson({(*provider_key)->PublicJwk()}), 0644);
  PutUser("li-wei", "li.wei@example.org", "acct-li-wei", /*index=*/true);

  SystemClock clock;
  HttpOptions http;
  http.ca_file = pki.ca_file();
  http.timeout = absl::Seconds(5);
  OidcProvider provider(issuer, http);
  IdentityManager manager(inventory_.get(), store_.get(), &provider, &labshare::testing::TestIssuer(),
                          IdentityOptions(), &clock);
  int n = 0;
  auto exchange = [&](const std::string& typ_member) {
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    const std::string header =
        absl::StrCat(R"({"alg":"ES256",)", typ_member, R"("kid":")", (*provider_key)->kid(), R"("})");
    const std::string claims = absl::StrCat(R"({"iss":")", issuer, R"(","aud":"labshare-console","sub":"acct-li-wei",)",
                                            R"("nonce":")", ++n, R"(","iat":)", now, R"(,"exp":)", now + 300, "}");
    identity::v1::ExchangeTokenRequest req;
    req.set_id_token(SignEs256(*pem, header, claims));
    return manager.ExchangeToken(req);
  };
  for (const std::string typ : {R"("typ":"JWT",)", R"("typ":"application/jwt",)", R"("typ":"JOSE",)",
                                R"("typ":"jwt",)", ""}) {
    auto out = exchange(typ);
    ASSERT_TRUE(out.ok()) << typ << ": " << out.status();
    EXPECT_EQ(out->user().name(), "users/li-wei");
  }
  for (const std::string typ : {R"("typ":"at+jwt",)", R"("typ":"application/at+jwt",)", R"("typ":"logout+jwt",)"}) {
    auto out = exchange(typ);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kUnauthenticated) << typ << ": " << out.status();
    EXPECT_EQ(ErrorReason(out.status()), "INVALID_TOKEN") << out.status();
    EXPECT_TRUE(absl::StrContains(out.status().message(), "the header's type (typ) must be JWT or JOSE"))
        << out.status();
  }
}

// identity.proto: a session "lives at most --max_session_age ... then it
// ends". A refresh near its end capped refresh_expire_time at the end, but
// the new access token still lived --access_token_ttl (15 minutes) past it.
// Now the access token (its exp claim, expire_time and expires_in) stops at
// the session's end as well.
TEST_F(IdentityStoreTest, AnAccessTokenNeverOutlivesItsSession) {
  PutUser("li-wei", "li.wei@example.org", "sub-li-wei", /*index=*/true);
  OidcProvider provider("https://127.0.0.1:1", HttpOptions());  // a refresh asks the provider nothing
  const IdentityOptions options;  // access tokens 15 min, sessions 30 days
  IdentityManager manager(inventory_.get(), store_.get(), &provider, &labshare::testing::TestIssuer(), options,
                          &clock_);
  clock_.Advance(absl::Milliseconds(500));  // sessions start at any millisecond
  const absl::Time end = clock_.Now() + options.max_session_age;
  const absl::Time end_second = absl::FromUnixSeconds(absl::ToUnixSeconds(end));  // a JWT's exp is whole seconds
  auto token = store_->StartSession("li-wei", Limits(options.refresh_token_ttl));
  ASSERT_TRUE(token.ok()) << token.status();
  identity::v1::RefreshTokenRequest req;
  req.set_refresh_token(*token);
  // Far from the end: the full --access_token_ttl.
  clock_.Set(end - absl::Hours(1));
  auto out = manager.RefreshToken(req);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(FromProto(out->expire_time()), end_second - absl::Hours(1) + absl::Minutes(15));
  EXPECT_EQ(out->expires_in(), 900);
  // Five minutes before the end: five minutes.
  clock_.Set(end - absl::Minutes(5));
  req.set_refresh_token(out->refresh_token());
  out = manager.RefreshToken(req);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(FromProto(out->expire_time()), end_second);
  EXPECT_EQ(out->expires_in(), 300);
  EXPECT_EQ(FromProto(out->refresh_expire_time()), end);
  auto principal = labshare::testing::TestVerifier()->Verify(out->access_token(), clock_.Now());
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->expires_at, end_second);
  // In its last second (after end_second): a token of one second (exp
  // after iat), not of none.
  clock_.Set(end - absl::Milliseconds(200));
  req.set_refresh_token(out->refresh_token());
  out = manager.RefreshToken(req);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->expires_in(), 1);
  EXPECT_TRUE(labshare::testing::TestVerifier()->Verify(out->access_token(), clock_.Now()).ok());
}

// identity.proto RefreshToken: a session at --max_session_age from its
// sign-in is refused (INVALID_REFRESH_TOKEN, as an expired token), however
// often it was refreshed; refresh_expire_time never passes the session's
// end. Refreshed every 11 hours, the session lived for ever before.
TEST_F(IdentityStoreTest, RefreshAfterTheMaximumSessionAgeIsInvalidRefreshToken) {
  PutUser("li-wei", "li.wei@example.org", "sub-li-wei", /*index=*/true);
  OidcProvider provider("https://127.0.0.1:1", HttpOptions());  // a refresh asks the provider nothing
  const IdentityOptions options;  // refresh tokens 12 h, sessions 30 days
  IdentityManager manager(inventory_.get(), store_.get(), &provider, &labshare::testing::TestIssuer(), options,
                          &clock_);
  const absl::Time signed_in = clock_.Now();
  const absl::Time end = signed_in + options.max_session_age;
  auto token = store_->StartSession("li-wei", Limits(options.refresh_token_ttl));
  ASSERT_TRUE(token.ok()) << token.status();
  identity::v1::RefreshTokenRequest req;
  req.set_refresh_token(*token);
  int rotations = 0;
  absl::Time last_expiry;
  while (clock_.Now() + absl::Hours(11) < end) {
    clock_.Advance(absl::Hours(11));
    auto out = manager.RefreshToken(req);
    ASSERT_TRUE(out.ok()) << out.status();
    last_expiry = FromProto(out->refresh_expire_time());
    EXPECT_LE(last_expiry, end);
    req.set_refresh_token(out->refresh_token());
    ++rotations;
  }
  EXPECT_EQ(last_expiry, end);  // 5 h left: the session's end before the 12 h
  auto used = pool_->Command({"HLEN", SessionKey("used", *token)});
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(used->integer, rotations);
  clock_.Set(end);
  auto refused = manager.RefreshToken(req);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated) << refused.status();
  EXPECT_EQ(ErrorReason(refused.status()), "INVALID_REFRESH_TOKEN");
  auto left = pool_->Command({"EXISTS", SessionKey("family", *token), SessionKey("used", *token)});
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->integer, 0);
  req.set_refresh_token(*token);  // the first token, used: no longer a reuse, the session is over
  EXPECT_EQ(ErrorReason(manager.RefreshToken(req).status()), "INVALID_REFRESH_TOKEN");
}

}  // namespace
}  // namespace labshare::inventory
