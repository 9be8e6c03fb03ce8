#include "common/page_token.h"

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

using labshare::inventory::v1::ListFacilitiesRequest;
using labshare::inventory::v1::ListInstrumentsRequest;
using labshare::inventory::v1::ListOrganizationsRequest;

constexpr char kKey[] = "page-token-test-key-0123456789abcdef";

Principal Caller(std::string user = "u-ana", std::string org = "lab", std::vector<Role> roles = {Role::kLabUser}) {
  return Principal{std::move(user), std::move(org), std::move(roles), absl::InfiniteFuture()};
}

void ExpectBadToken(const absl::StatusOr<PageRequest>& page) {
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(page.status()), "INVALID_PAGE_TOKEN");
  EXPECT_TRUE(absl::StrContains(page.status().message(), "start again without page_token"))
      << page.status().message();
  const auto violations = FieldViolationsOf(page.status());
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].field, "page_token");
}

TEST(PageTokenCodec, DefaultsClampsAndRefusesNegativeSize) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  EXPECT_EQ(codec.Parse(r, Caller())->page_size, kDefaultPageSize);
  r.set_page_size(7);
  EXPECT_EQ(codec.Parse(r, Caller())->page_size, 7);
  r.set_page_size(100000);
  EXPECT_EQ(codec.Parse(r, Caller())->page_size, kMaxPageSize);
  for (int32_t size : {-1, -500, INT32_MIN}) {
    r.set_page_size(size);
    const auto page = codec.Parse(r, Caller());
    EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(page.status()), "INVALID_FIELD");
    ASSERT_EQ(FieldViolationsOf(page.status()).size(), 1u);
    EXPECT_EQ(FieldViolationsOf(page.status())[0].field, "page_size");
  }
}

TEST(PageTokenCodec, RoundTripsWithSameFiltersCallerAndAnyPageSize) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  r.set_category("nmr");
  r.set_page_size(10);
  const std::string token = codec.Make(r, Caller(), "1700000000|i042");
  r.set_page_token(token);
  r.set_page_size(20);
  auto page = codec.Parse(r, Caller());
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->after, "1700000000|i042");
  EXPECT_EQ(page->page_size, 20);
  // The order of roles and the bearer token's expiry do not matter.
  Principal renewed = Caller("u-ana", "lab", {Role::kAuditor, Role::kLabUser});
  r.set_page_token(codec.Make(r, renewed, "x"));
  std::swap(renewed.roles[0], renewed.roles[1]);
  renewed.expires_at = absl::UnixEpoch();
  EXPECT_TRUE(codec.Parse(r, renewed).ok());
  // Another codec with the same key (another replica) accepts it too.
  EXPECT_TRUE(PageTokenCodec(kKey).Parse(r, renewed).ok());
}

TEST(PageTokenCodec, TokensAreUrlSafeAndShort) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  r.set_category(std::string(1000, 'x'));  // the filters do not grow the token
  const std::string token = codec.Make(r, Caller(), "1700000000|i042");
  EXPECT_LE(token.size(), 50u);
  for (char c : token) EXPECT_TRUE(absl::ascii_isalnum(c) || c == '-' || c == '_') << token;
}

TEST(PageTokenCodec, RefusesAnotherList) {
  const PageTokenCodec codec(kKey);
  // Same (empty) filters, same field numbers: only the list differs.
  ListFacilitiesRequest facilities;
  ListOrganizationsRequest orgs;
  orgs.set_page_token(codec.Make(facilities, Caller(), "f1"));
  ExpectBadToken(codec.Parse(orgs, Caller()));
}

TEST(PageTokenCodec, RefusesOtherFilters) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  r.set_category("nmr");
  const std::string token = codec.Make(r, Caller(), "i042");
  r.set_category("sem");
  r.set_page_token(token);
  ExpectBadToken(codec.Parse(r, Caller()));
  r.set_category("nmr");
  r.set_state(labshare::inventory::v1::ACTIVE);  // a filter added
  ExpectBadToken(codec.Parse(r, Caller()));
}

TEST(PageTokenCodec, RefusesAnotherCaller) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  r.set_page_token(codec.Make(r, Caller("u-ana", "lab", {Role::kLabUser}), "i042"));
  ExpectBadToken(codec.Parse(r, Caller("u-bob", "lab", {Role::kLabUser})));
  ExpectBadToken(codec.Parse(r, Caller("u-ana", "other", {Role::kLabUser})));
  ExpectBadToken(codec.Parse(r, Caller("u-ana", "lab", {Role::kLabUser, Role::kAuditor})));
  ExpectBadToken(codec.Parse(r, Caller("u-ana", "lab", {})));
  // Parts cannot be shifted into one another.
  r.set_page_token(codec.Make(r, Caller("u-a", "nalab", {}), "i042"));
  ExpectBadToken(codec.Parse(r, Caller("u-an", "alab", {})));
}

TEST(PageTokenCodec, RefusesTamperedTruncatedForgedOrGarbage) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  const std::string token = codec.Make(r, Caller(), "1700000000|i042");
  std::string raw;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token, &raw));
  for (size_t i = 0; i < raw.size(); ++i) {  // every byte, MAC and position alike
    std::string edited = raw;
    edited[i] = static_cast<char>(edited[i] ^ 0x01);
    r.set_page_token(absl::WebSafeBase64Escape(edited));
    ExpectBadToken(codec.Parse(r, Caller()));
  }
  for (size_t n : {size_t{0}, size_t{1}, size_t{16}, size_t{17}, raw.size() - 1}) {  // truncated
    if (n == 0) continue;  // an empty token is no token: the first page
    r.set_page_token(absl::WebSafeBase64Escape(raw.substr(0, n)));
    ExpectBadToken(codec.Parse(r, Caller()));
  }
  r.set_page_token(token + "AAAA");  // extended
  ExpectBadToken(codec.Parse(r, Caller()));
  // The old format: base64 of a filter hash, "\n" and the position.
  r.set_page_token(absl::WebSafeBase64Escape("0123456789abcdef\ni042"));
  ExpectBadToken(codec.Parse(r, Caller()));
  // Made with another key.
  r.set_page_token(PageTokenCodec("another-key-0123456789abcdef012345").Make(r, Caller(), "i042"));
  ExpectBadToken(codec.Parse(r, Caller()));
  for (const char* garbage : {"%%%not-base64", "!", "bm90LWEtdG9rZW4", "AQ", " "}) {
    r.set_page_token(garbage);
    ExpectBadToken(codec.Parse(r, Caller()));
  }
  r.set_page_token(std::string(100000, 'A'));
  ExpectBadToken(codec.Parse(r, Caller()));
}

// Every other character in a token's place is refused, the last one too:
// base64 ignores the spare low bits of a final character, so without a check
// of the form some of those edits decoded to the same token and were taken.
TEST(PageTokenCodec, RefusesEveryEditOfEveryCharacter) {
  const PageTokenCodec codec(kKey);
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  int spare_bits = 0;  // positions whose raw length leaves spare bits
  for (const char* last : {"i042", "1700000000|i042", "1700000000|i04", "1700000000|i0"}) {
    ListInstrumentsRequest r;
    const std::string token = codec.Make(r, Caller(), last);
    r.set_page_token(token);
    ASSERT_TRUE(codec.Parse(r, Caller()).ok()) << last;
    std::string raw;
    ASSERT_TRUE(absl::WebSafeBase64Unescape(token, &raw));
    spare_bits += raw.size() % 3 != 0;
    for (size_t i = 0; i < token.size(); ++i) {
      for (const char* c = kAlphabet; *c != '\0'; ++c) {
        if (*c == token[i]) continue;
        std::string edited = token;
        edited[i] = *c;
        r.set_page_token(edited);
        SCOPED_TRACE(absl::StrCat(last, " ", i, " ", edited));
        ExpectBadToken(codec.Parse(r, Caller()));
      }
    }
  }
  EXPECT_GE(spare_bits, 2);  // the final-character case is exercised
}

TEST(PageTokenCodec, EmptyTokenIsTheFirstPage) {
  const PageTokenCodec codec(kKey);
  ListInstrumentsRequest r;
  r.set_page_token("");
  auto page = codec.Parse(r, Caller());
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->after, "");
}

// The key replicas share comes from Redis, in the service's own hash tag:
// the first replica creates it, the others read the same one, and another
// service's key is different.
TEST(PageTokenCodec, KeyFromRedisIsSharedByTheReplicasOfOneService) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  testing::FlushAll(*redis);
  RedisPool pool(redis->options());
  auto a = PageTokenCodec::FromRedis(&pool, "{booking}");
  auto b = PageTokenCodec::FromRedis(&pool, "{booking}");
  auto other = PageTokenCodec::FromRedis(&pool, "{billing}");
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  auto stored = pool.Command({"GET", "{booking}:page_token_key"});
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->str.size(), 32u);
  ListInstrumentsRequest r;
  r.set_page_token(a->Make(r, Caller(), "i042"));
  EXPECT_TRUE(b->Parse(r, Caller()).ok());
  ExpectBadToken(other->Parse(r, Caller()));
  // Deleting the key rotates it: old tokens stop working.
  ASSERT_TRUE(pool.Command({"DEL", "{booking}:page_token_key"}).ok());
  auto rotated = PageTokenCodec::FromRedis(&pool, "{booking}");
  ASSERT_TRUE(rotated.ok());
  ExpectBadToken(rotated->Parse(r, Caller()));
}

TEST(PageTokenCodec, KeyFromRedisGivesUpWhenRedisStaysAway) {
  RedisOptions options;
  options.host = "127.0.0.1";
  options.port = 1;  // nothing listens there
  RedisPool pool(options);
  auto codec = PageTokenCodec::FromRedis(&pool, "{booking}", absl::Milliseconds(200));
  EXPECT_FALSE(codec.ok());
  EXPECT_EQ(codec.status().code(), absl::StatusCode::kUnavailable) << codec.status();
}

// Start-up: a service waits for its Redis however long it takes (not ready
// meanwhile) instead of exiting after a deadline and crash-looping; the
// wait ends when `stop` says so (the services: SIGTERM).
TEST(PageTokenCodec, KeyFromRedisWaitsWithoutDeadlineForARedisThatStartsLate) {
  auto first = testing::RedisServer::Start();
  ASSERT_TRUE(first.ok()) << first.status();
  const int port = (*first)->port();
  RedisPool pool((*first)->options());
  first->reset();  // nothing listens on the port now
  std::unique_ptr<testing::RedisServer> late;
  int asked = 0;
  auto codec = PageTokenCodec::FromRedis(&pool, "{booking}", absl::InfiniteDuration(), [&] {
    if (++asked == 3) {  // Redis comes up after three failed attempts
      auto started = testing::RedisServer::StartOnPort(port);
      EXPECT_TRUE(started.ok()) << started.status();
      if (started.ok()) late = *std::move(started);
    }
    return asked > 60;  // guard: never hang the test
  });
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_GE(asked, 3);
  auto stored = pool.Command({"STRLEN", "{booking}:page_token_key"});
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->AsInteger().value_or(0), 32);
}

TEST(PageTokenCodec, KeyFromRedisStopsWaitingWhenAsked) {
  RedisOptions options;
  options.host = "127.0.0.1";
  options.port = 1;  // nothing listens there
  RedisPool pool(options);
  int asked = 0;
  auto codec = PageTokenCodec::FromRedis(&pool, "{booking}", absl::InfiniteDuration(), [&] { return ++asked == 2; });
  ASSERT_FALSE(codec.ok());
  EXPECT_EQ(codec.status().code(), absl::StatusCode::kCancelled) << codec.status();
  EXPECT_EQ(asked, 2);
}

}  // namespace
}  // namespace labshare
