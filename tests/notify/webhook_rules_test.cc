// The pure rules of webhooks: the signature, the party rule of
// webhooks.proto on real event payloads, registration checks, the body and
// the retry delays.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <type_traits>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include <arpa/inet.h>

#include "services/notify/webhook_http.h"
#include "services/notify/webhook_rules.h"
#include "services/notify/webhook_secret_box.h"

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;

StreamEvent Entry(const google::protobuf::Message& envelope) {
  return StreamEvent{"1-0", envelope.GetDescriptor()->full_name(), envelope.SerializeAsString()};
}

template <typename E>
E WithHeader(const std::string& id) {
  E e;
  e.mutable_header()->set_event_id(id);
  *e.mutable_header()->mutable_event_time() = ToProto(absl::FromUnixSeconds(1798761600));
  return e;
}

std::vector<std::string> PartiesOf(const google::protobuf::Message& envelope) {
  auto decoded = DecodeWebhookEvent(Entry(envelope));
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  if (!decoded.ok() || !*decoded) return {"<not delivered>"};
  return (*decoded)->organizations;
}

TEST(WebhookSignature, IsHexHmacSha256OverIdTimestampAndBody) {
  EXPECT_EQ(WebhookSignature("whsec_0123", "abc123", "1798761600", "{\"a\":1}"),
            "v1=a7ac2ac513fd4f8acbaea8dd066a98b1fb9a59179a4c54d317461d212773bb33");
  // Any change of id, timestamp, body or secret changes it.
  const std::string base = WebhookSignature("whsec_0123", "abc123", "1798761600", "{\"a\":1}");
  EXPECT_NE(WebhookSignature("whsec_0124", "abc123", "1798761600", "{\"a\":1}"), base);
  EXPECT_NE(WebhookSignature("whsec_0123", "abc124", "1798761600", "{\"a\":1}"), base);
  EXPECT_NE(WebhookSignature("whsec_0123", "abc123", "1798761601", "{\"a\":1}"), base);
  EXPECT_NE(WebhookSignature("whsec_0123", "abc123", "1798761600", "{\"a\":2}"), base);
}

TEST(WebhookSecret, Is256RandomBitsInHex) {
  const std::string a = NewWebhookSecret(), b = NewWebhookSecret();
  EXPECT_EQ(a.size(), 6u + 64u);
  EXPECT_EQ(a.substr(0, 6), "whsec_");
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef", 6), std::string::npos);
  EXPECT_NE(a, b);
}

TEST(WebhookParties, BookingsConcernThePayerAndCostSharersNeverTheOwner) {
  auto e = WithHeader<bk::BookingEvent>("e1");
  auto* b = e.mutable_booking_confirmed()->mutable_booking();
  b->set_instrument_owner("organizations/owner");
  b->set_payer_organization("organizations/acme");
  b->add_cost_shares()->set_organization("organizations/beta");
  b->add_cost_shares()->set_organization("organizations/acme");
  EXPECT_EQ(PartiesOf(e), (std::vector<std::string>{"organizations/acme", "organizations/beta"}));
}

TEST(WebhookParties, LeasesOrdersQuotasProjects) {
  auto lease = WithHeader<bk::BookingEvent>("e2");
  lease.mutable_lease_handed_over()->mutable_lease()->set_lessee_organization("organizations/lessee");
  EXPECT_EQ(PartiesOf(lease), (std::vector<std::string>{"organizations/lessee"}));
  auto order = WithHeader<bk::BookingEvent>("e3");
  order.mutable_service_order_quoted()->mutable_service_order()->set_client_organization("organizations/client");
  EXPECT_EQ(PartiesOf(order), (std::vector<std::string>{"organizations/client"}));
  auto quota = WithHeader<bk::BookingEvent>("e4");
  quota.mutable_quota_set()->mutable_quota()->set_organization("organizations/q");
  EXPECT_EQ(PartiesOf(quota), (std::vector<std::string>{"organizations/q"}));
  auto project = WithHeader<bk::BookingEvent>("e5");
  project.mutable_project_updated()->mutable_project()->add_participants()->set_organization("organizations/p1");
  project.mutable_project_updated()->add_previous_participants()->set_organization("organizations/p0");
  EXPECT_EQ(PartiesOf(project), (std::vector<std::string>{"organizations/p1", "organizations/p0"}));
}

TEST(WebhookParties, BillingConcernsPayersAndPayees) {
  auto charge = WithHeader<bl::BillingEvent>("b1");
  auto* c = charge.mutable_charge_posted()->mutable_charge();
  c->set_payer_organization("organizations/payer");
  c->add_splits()->set_organization("organizations/partner");
  c->set_owner_organization("organizations/owner");
  EXPECT_EQ(PartiesOf(charge),
            (std::vector<std::string>{"organizations/payer", "organizations/partner", "organizations/owner"}));
  auto invoice = WithHeader<bl::BillingEvent>("b2");
  invoice.mutable_invoice_issued()->mutable_invoice()->set_payer_organization("organizations/payer");
  invoice.mutable_invoice_issued()->mutable_invoice()->add_payees()->set_organization("organizations/owner");
  EXPECT_EQ(PartiesOf(invoice), (std::vector<std::string>{"organizations/payer", "organizations/owner"}));
  auto payment = WithHeader<bl::BillingEvent>("b3");
  payment.mutable_payment_recorded()->mutable_payment()->set_payer("subsidyPools/fund");
  payment.mutable_payment_recorded()->mutable_payment()->set_payee("organizations/owner");
  EXPECT_EQ(PartiesOf(payment), (std::vector<std::string>{"organizations/owner"}));
  auto deposit = WithHeader<bl::BillingEvent>("b4");
  deposit.mutable_deposit_changed()->mutable_deposit()->set_lessee_organization("organizations/lessee");
  deposit.mutable_deposit_changed()->mutable_deposit()->set_owner_organization("organizations/owner");
  EXPECT_EQ(PartiesOf(deposit), (std::vector<std::string>{"organizations/lessee", "organizations/owner"}));
  auto settlement = WithHeader<bl::BillingEvent>("b5");
  settlement.mutable_settlement_computed()->mutable_settlement()->add_positions()->set_organization("organizations/a");
  settlement.mutable_settlement_computed()->mutable_settlement()->add_positions()->set_organization("organizations/b");
  EXPECT_EQ(PartiesOf(settlement), (std::vector<std::string>{"organizations/a", "organizations/b"}));
}

TEST(WebhookParties, EventsWithoutPartiesAreNotDelivered) {
  auto maintenance = WithHeader<bk::BookingEvent>("m1");
  maintenance.mutable_maintenance_applied()->set_outage(true);
  EXPECT_EQ(PartiesOf(maintenance), (std::vector<std::string>{"<not delivered>"}));
  auto pool = WithHeader<bl::BillingEvent>("m2");
  pool.mutable_subsidy_pool_changed()->mutable_subsidy_pool()->set_name("subsidyPools/x");
  EXPECT_EQ(PartiesOf(pool), (std::vector<std::string>{"<not delivered>"}));
  auto created = WithHeader<v1::NotifyEvent>("m3");
  created.mutable_webhook_created()->mutable_webhook()->set_name("organizations/a/webhooks/w");
  EXPECT_EQ(PartiesOf(created), (std::vector<std::string>{"<not delivered>"}));
  // A booking without a payer (malformed names are no parties).
  auto nobody = WithHeader<bk::BookingEvent>("m4");
  nobody.mutable_booking_created()->mutable_booking()->set_payer_organization("organizations/../x");
  EXPECT_EQ(PartiesOf(nobody), (std::vector<std::string>{"<not delivered>"}));
  // Entries of other services.
  auto other = DecodeWebhookEvent(StreamEvent{"1-0", "labshare.inventory.v1.InventoryEvent", "x"});
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
  auto disabled = WithHeader<v1::NotifyEvent>("m5");
  disabled.mutable_webhook_disabled()->set_organization("organizations/acme");
  EXPECT_EQ(PartiesOf(disabled), (std::vector<std::string>{"organizations/acme"}));
}

TEST(WebhookParties, UndecodableAndIdlessEntriesAreErrors) {
  auto bad = DecodeWebhookEvent(StreamEvent{"1-0", "labshare.booking.v1.BookingEvent", "\xff\xff\xff"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ErrorReason(bad.status()), "UNDECODABLE_EVENT");
  bk::BookingEvent idless;
  idless.mutable_booking_created()->mutable_booking()->set_payer_organization("organizations/acme");
  auto none = DecodeWebhookEvent(Entry(idless));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(ErrorReason(none.status()), "UNDECODABLE_EVENT");
}

TEST(WebhookBody, CarriesIdTypeTimeAndTheEnvelopeInJson) {
  auto e = WithHeader<bk::BookingEvent>("0123abcd");
  e.mutable_booking_cancelled()->mutable_booking()->set_payer_organization("organizations/acme");
  e.mutable_booking_cancelled()->set_late_cancellation(true);
  auto decoded = DecodeWebhookEvent(Entry(e));
  ASSERT_TRUE(decoded.ok() && *decoded);
  EXPECT_EQ((*decoded)->event_type, "labshare.booking.v1.BookingCancelled");
  EXPECT_EQ(WebhookBody(**decoded, "0123abcd", "organizations/acme", "organizations/acme/webhooks/erp"),
            "{\"id\":\"0123abcd\",\"type\":\"labshare.booking.v1.BookingCancelled\","
            "\"time\":\"2027-01-01T00:00:00Z\",\"organization\":\"organizations/acme\","
            "\"webhook\":\"organizations/acme/webhooks/erp\",\"event\":{\"header\":{\"eventId\":\"0123abcd\","
            "\"eventTime\":\"2027-01-01T00:00:00Z\"},\"bookingCancelled\":{\"booking\":{\"payerOrganization\":"
            "\"organizations/acme\"},\"lateCancellation\":true}}}");
}

TEST(WebhookBody, TheTraceIdOfItsEventIsReadBack) {
  auto e = WithHeader<bk::BookingEvent>("0123abcd");
  e.mutable_booking_cancelled()->mutable_booking()->set_payer_organization("organizations/acme");
  auto decoded = DecodeWebhookEvent(Entry(e));
  ASSERT_TRUE(decoded.ok() && *decoded);
  EXPECT_EQ(WebhookBodyTraceId(WebhookBody(**decoded, "0123abcd", "organizations/acme", "w")), "");
  e.mutable_header()->set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
  decoded = DecodeWebhookEvent(Entry(e));
  ASSERT_TRUE(decoded.ok() && *decoded);
  EXPECT_EQ(WebhookBodyTraceId(WebhookBody(**decoded, "0123abcd", "organizations/acme", "w")),
            "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(WebhookBodyTraceId("not json"), "");
  EXPECT_EQ(WebhookBodyTraceId(R"({"event":{"header":"x"}})"), "");
}

TEST(WebhookDeliveryId, IsTheEventIdOrItsHash) {
  EXPECT_EQ(DeliveryIdOf("0123456789abcdef0123456789abcdef"), "0123456789abcdef0123456789abcdef");
  const std::string hashed = DeliveryIdOf("Not/An:Id");
  EXPECT_EQ(hashed.size(), 32u);
  EXPECT_EQ(hashed.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(DeliveryIdOf("Not/An:Id"), hashed);
}

TEST(WebhookChecks, UrlsMustBeHttpsWithAHost) {
  for (const char* ok : {"https://erp.acme.example/hooks/labshare", "https://127.0.0.1:8443/x?y=1",
                         "https://[::1]:8443/", "https://a"}) {
    EXPECT_TRUE(CheckWebhookUrl(ok, "webhook.url").ok()) << ok;
  }
  for (const char* bad : {"", "http://erp.acme.example/", "ftp://x", "https://", "https://user:pw@host/",
                          "https://host/#frag", "https://ho st/", "https://host:/x", "https://host:12a/",
                          "https://[::1/", "HTTPS://host/", "https://h\xc3\xa9/"}) {
    auto s = CheckWebhookUrl(bad, "webhook.url");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << bad;
    ASSERT_EQ(FieldViolationsOf(s).size(), 1u);
    EXPECT_EQ(FieldViolationsOf(s)[0].field, "webhook.url");
  }
  EXPECT_FALSE(CheckWebhookUrl("https://x/" + std::string(2048, 'a'), "u").ok());
}

// A port is a TCP port: 1 to 65535 (webhooks.proto: the URL is
// https://host[:port]/path?query); 0 and anything above are INVALID_FIELD.
TEST(WebhookChecks, UrlPortsAreOneTo65535) {
  for (const char* ok : {"https://host:1/", "https://host:443/x", "https://host:65535", "https://[::1]:1/",
                         "https://[2001:db8::1]:65535/"}) {
    EXPECT_TRUE(CheckWebhookUrl(ok, "webhook.url").ok()) << ok;
  }
  for (const char* bad : {"https://host:0/", "https://host:00000/", "https://host:65536/", "https://host:99999/",
                          "https://[::1]:0/", "https://[::1]:70000/", "https://[::1]:123456/"}) {
    auto s = CheckWebhookUrl(bad, "webhook.url");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << bad;
    ASSERT_EQ(FieldViolationsOf(s).size(), 1u) << bad;
    EXPECT_EQ(FieldViolationsOf(s)[0].field, "webhook.url") << bad;
  }
}

// webhooks.proto CreateWebhook: the host is "a DNS name (letters, digits,
// '-' and '.'), an IPv4 literal (10.0.0.1) or an IPv6 literal in brackets
// ([2001:db8::1])". The bracketed text must be an IPv6 address (no zone id);
// a name is made of non-empty labels of at most 63 characters that neither
// start nor end with '-', at most 253 characters, one final dot allowed; a
// numeric last label makes it an IPv4 literal, which must be a valid one.
TEST(WebhookChecks, UrlHostsAreDnsNamesOrIpLiterals) {
  for (const char* ok :
       {"https://[2001:db8::1]/", "https://[::1]/", "https://[::]/", "https://[2001:DB8:0:0:0:0:0:1]:443/x",
        "https://[::ffff:192.0.2.1]/", "https://[fe80::1]/", "https://example.com./hook", "https://a-b.c-d.example/",
        "https://x1.example/", "https://1example.com/", "https://123.example/", "https://EXAMPLE.COM/",
        "https://0.0.0.0/", "https://255.255.255.255:8443/", "https://10.0.0.1/", "https://a",
        "https://xn--fsqu00a.example/"}) {
    auto s = CheckWebhookUrl(ok, "webhook.url");
    EXPECT_TRUE(s.ok()) << ok << ": " << s;
  }
  const std::string label63(63, 'a');
  const std::string label64(64, 'a');
  // 4 labels of 63 and 3 dots: 255 characters; 3 labels of 63 and one of 61: 253.
  const std::string name253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'a');
  const std::string name255 = label63 + "." + label63 + "." + label63 + "." + label63;
  EXPECT_TRUE(CheckWebhookUrl("https://" + label63 + ".example/", "webhook.url").ok());
  EXPECT_TRUE(CheckWebhookUrl("https://" + name253 + "/", "webhook.url").ok());
  EXPECT_TRUE(CheckWebhookUrl("https://" + name253 + "./", "webhook.url").ok());
  for (const std::string& bad : std::vector<std::string>{
           // Brackets hold an IPv6 address, nothing else.
           "https://[]/", "https://[hello-world]/", "https://[1.2.3.4]/", "https://[::1::2]/", "https://[12345::]/",
           "https://[g::1]/", "https://[:]/", "https://[v1.x]/",
           // No zone id, raw or percent-encoded.
           "https://[fe80::1%eth0]/", "https://[fe80::1%25eth0]/", "https://[fe80::1%25eth0]:8443/",
           // Empty labels, a bad '-', too long.
           "https://example..com/", "https://.example.com/", "https://example.com../", "https://./",
           "https://-example.com/", "https://example-.com/", "https://a.-b.com/", "https://a.b-.com/", "https://-/",
           "https://" + label64 + ".example/", "https://" + name255 + "/",
           // A numeric last label is an IPv4 literal, and must be a valid one.
           "https://1.2.3.4.5/", "https://999.1.1.1/", "https://1.2.3/", "https://256.0.0.1/", "https://01.2.3.4/",
           "https://1.2.3.4./", "https://123/", "https://example.123/", "https://0x7f.0.0.1/", "https://1..2.3/"}) {
    auto s = CheckWebhookUrl(bad, "webhook.url");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << bad;
    ASSERT_EQ(FieldViolationsOf(s).size(), 1u) << bad;
    EXPECT_EQ(FieldViolationsOf(s)[0].field, "webhook.url") << bad;
    EXPECT_TRUE(absl::StrContains(s.message(), "malformed host")) << bad << ": " << s.message();
  }
  // The message says what is wrong.
  EXPECT_TRUE(absl::StrContains(CheckWebhookUrl("https://[fe80::1%25eth0]/", "u").message(), "zone id"));
  EXPECT_TRUE(absl::StrContains(CheckWebhookUrl("https://[hello-world]/", "u").message(), "[2001:db8::1]"));
  EXPECT_TRUE(absl::StrContains(CheckWebhookUrl("https://999.1.1.1/", "u").message(), "IPv4"));
  EXPECT_TRUE(absl::StrContains(CheckWebhookUrl("https://example..com/", "u").message(), "empty label"));
  EXPECT_TRUE(absl::StrContains(CheckWebhookUrl("https://-x.example/", "u").message(), "'-'"));
}

TEST(WebhookChecks, EventTypesFromTheListDistinctAndNonEmpty) {
  EXPECT_TRUE(CheckWebhookEventTypes({"labshare.billing.v1.InvoiceIssued", "labshare.booking.v1.BookingCancelled"},
                                     "webhook.event_types")
                  .ok());
  auto empty = CheckWebhookEventTypes({}, "webhook.event_types");
  EXPECT_EQ(FieldViolationsOf(empty)[0].field, "webhook.event_types");
  auto unknown = CheckWebhookEventTypes({"labshare.billing.v1.InvoiceIssued", "labshare.billing.v1.SubsidyPoolChanged"},
                                        "webhook.event_types");
  EXPECT_EQ(ErrorReason(unknown), "INVALID_FIELD");
  EXPECT_EQ(FieldViolationsOf(unknown)[0].field, "webhook.event_types[1]");
  auto twice = CheckWebhookEventTypes({"labshare.billing.v1.InvoiceIssued", "labshare.billing.v1.InvoiceIssued"},
                                      "webhook.event_types");
  EXPECT_EQ(FieldViolationsOf(twice)[0].field, "webhook.event_types[1]");
  EXPECT_EQ(WebhookEventTypes().size(), 33u + 10u + 1u);
  EXPECT_TRUE(std::is_sorted(WebhookEventTypes().begin(), WebhookEventTypes().end()));
}

TEST(WebhookChecks, DescriptionCountsCharacters) {
  std::string chinese;
  for (int i = 0; i < 200; ++i) chinese += "\xe4\xb8\xad";  // 中
  EXPECT_TRUE(CheckWebhookDescription(chinese, "d").ok());
  EXPECT_FALSE(CheckWebhookDescription(chinese + "x", "d").ok());
  EXPECT_FALSE(CheckWebhookDescription("a\nb", "d").ok());
}

TEST(WebhookRetryDelay, DoublesUpToTheMaximumWithJitterDownToHalf) {
  const absl::Duration i = absl::Seconds(10), max = absl::Seconds(60);
  EXPECT_EQ(WebhookRetryDelay(1, i, max, 1.0), absl::Seconds(10));
  EXPECT_EQ(WebhookRetryDelay(1, i, max, 0.0), absl::Seconds(5));
  EXPECT_EQ(WebhookRetryDelay(2, i, max, 1.0), absl::Seconds(20));
  EXPECT_EQ(WebhookRetryDelay(3, i, max, 1.0), absl::Seconds(40));
  EXPECT_EQ(WebhookRetryDelay(4, i, max, 1.0), absl::Seconds(60));
  EXPECT_EQ(WebhookRetryDelay(40, i, max, 0.5), absl::Seconds(45));
}

bool Private(const std::string& ip) {
  sockaddr_storage s{};
  if (ip.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&s);
    a->sin6_family = AF_INET6;
    EXPECT_EQ(inet_pton(AF_INET6, ip.c_str(), &a->sin6_addr), 1) << ip;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&s);
    a->sin_family = AF_INET;
    EXPECT_EQ(inet_pton(AF_INET, ip.c_str(), &a->sin_addr), 1) << ip;
  }
  return IsPrivateAddress(reinterpret_cast<sockaddr*>(&s));
}

TEST(WebhookAddresses, ThePlatformsOwnNetworksAreNoEndpoints) {
  for (const char* ip : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
                         "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::",
                         "fd00::1", "fe80::1", "ff02::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2001:db8::1"}) {
    EXPECT_TRUE(Private(ip)) << ip;
  }
  for (const char* ip : {"8.8.8.8", "172.32.0.1", "192.169.0.1", "100.128.0.1", "203.0.114.1", "2400:cb00::1",
                         "::ffff:8.8.8.8"}) {
    EXPECT_FALSE(Private(ip)) << ip;
  }
}

// webhooks.proto: "reserved address, refused": the IPv4 documentation
// networks (RFC 5737) and the retired 6to4 relay anycast (RFC 7526), as
// IPv6's documentation 2001:db8::/32 is; also mapped and through 6to4.
TEST(WebhookAddresses, ReservedIpv4NetworksAreNoEndpoints) {
  for (const char* ip : {"192.0.2.0", "192.0.2.77", "192.0.2.255", "198.51.100.1", "198.51.100.255", "203.0.113.1",
                         "203.0.113.255", "192.88.99.1", "192.88.99.255", "::ffff:203.0.113.5",
                         "64:ff9b::198.51.100.7", "2002:c000:201::1"}) {
    EXPECT_TRUE(Private(ip)) << ip;
  }
  for (const char* ip : {"192.0.3.1", "192.0.1.255", "198.51.99.255", "198.51.101.0", "203.0.112.255",
                         "203.0.114.0", "192.88.98.255", "192.88.100.0"}) {
    EXPECT_FALSE(Private(ip)) << ip;
  }
}

TEST(WebhookAddresses, TransitionPrefixesLeadingToThePlatformsNetworksAreNoEndpoints) {
  // NAT64 and 6to4 carry an IPv4 address: judged by it. Local-use NAT64,
  // Teredo and the old site-local prefix: refused whatever they carry.
  for (const char* ip : {"64:ff9b::10.0.0.1", "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::8.8.8.8",
                         "64:ff9b:1:ffff::1", "2002:a00:1::1", "2002:7f00:1::", "2002:c0a8:101::1",
                         "2002:a9fe:a9fe::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fec0::1",
                         "feff:ffff::1"}) {
    EXPECT_TRUE(Private(ip)) << ip;
  }
  for (const char* ip : {"64:ff9b::8.8.8.8", "64:ff9b::808:404", "2002:808:808::1", "2001:4860::8888", "2001:470::1"}) {
    EXPECT_FALSE(Private(ip)) << ip;
  }
}

// webhooks.proto: "a loopback, private, link-local or reserved address,
// refused": the IANA special-purpose IPv6 blocks that are not globally
// reachable were let through (the audit of 2026-12-08): discard-only
// 100::/64, benchmarking 2001:2::/48 (as 198.18.0.0/15), ORCHID
// 2001:10::/28 and ORCHIDv2 2001:20::/28, documentation 3fff::/20 (as
// 2001:db8::/32), SRv6 SIDs 5f00::/16; and the SIIT form ::ffff:0:a.b.c.d,
// judged by the IPv4 address it carries. First and last address of each
// block refused, the neighbours outside it not.
TEST(WebhookAddresses, SpecialPurposeIpv6BlocksAreNoEndpoints) {
  for (const char* ip : {"100::", "100::1", "100::ffff:ffff:ffff:ffff", "2001:2::", "2001:2::10",
                         "2001:2:0:ffff:ffff:ffff:ffff:ffff", "2001:10::", "2001:10::1",
                         "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", "2001:20::", "2001:20::1",
                         "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", "3fff::", "3fff::1",
                         "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "5f00::", "5f00::1",
                         "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0:7f00:1", "::ffff:0:10.0.0.1",
                         "::ffff:0:169.254.169.254", "::ffff:0:192.0.2.1", "::ffff:0:0.0.0.0"}) {
    EXPECT_TRUE(Private(ip)) << ip;
  }
  for (const char* ip : {"100:0:0:2::1", "101::1", "2001:2:1::1", "2001:3::1", "2001:30::1", "2001:f::1",
                         "3fff:1000::1", "3ffe:ffff::1", "5f01::1", "5eff::1", "::ffff:0:8.8.8.8",
                         "::ffff:1:808:808", "0:0:0:1:ffff::808:808"}) {
    EXPECT_FALSE(Private(ip)) << ip;
  }
}

TEST(SecretBox, SealsWithAesGcmBoundToTheKeyName) {
  auto box = SecretBox::FromKey(std::string(32, '\x01'));
  ASSERT_TRUE(box.ok());
  auto sealed = box->Seal("whsec_abc", "{notify}:wh:secret:acme:erp");
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(absl::StartsWith(*sealed, "aesgcm1:"));
  EXPECT_FALSE(absl::StrContains(*sealed, "whsec_abc"));
  // 12-byte nonce + 9 bytes + 16-byte tag, base64.
  EXPECT_EQ(sealed->size(), std::string("aesgcm1:").size() + 52);
  EXPECT_NE(*sealed, *box->Seal("whsec_abc", "{notify}:wh:secret:acme:erp"));  // fresh nonce
  EXPECT_EQ(*box->Open(*sealed, "{notify}:wh:secret:acme:erp"), "whsec_abc");
  // Under another webhook's key, with another key, or altered: refused.
  EXPECT_EQ(box->Open(*sealed, "{notify}:wh:secret:acme:crm").status().code(), absl::StatusCode::kInternal);
  auto other = SecretBox::FromKey(std::string(32, '\x02'));
  EXPECT_FALSE(other->Open(*sealed, "{notify}:wh:secret:acme:erp").ok());
  std::string altered = *sealed;
  altered[12] = altered[12] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(box->Open(altered, "{notify}:wh:secret:acme:erp").ok());
  // A clear one (written before sealing) is used as it is.
  EXPECT_EQ(*box->Open("whsec_old", "{notify}:wh:secret:acme:erp"), "whsec_old");
  EXPECT_FALSE(SecretBox::FromKey("short").ok());
}

static_assert(!std::is_copy_constructible_v<SecretBox> && !std::is_copy_assignable_v<SecretBox>,
              "the key is not copied around");
static_assert(std::is_nothrow_move_constructible_v<SecretBox>);

TEST(SecretBox, AMovedBoxStillOpensWhatItSealed) {
  SecretBox a = *SecretBox::FromKey(std::string(32, '\x11'));
  const std::string sealed = *a.Seal("whsec_x", "k");
  SecretBox b = std::move(a);
  EXPECT_EQ(*b.Open(sealed, "k"), "whsec_x");
  SecretBox c = *SecretBox::FromKey(std::string(32, '\x22'));
  c = std::move(b);
  EXPECT_EQ(*c.Open(sealed, "k"), "whsec_x");
}

TEST(SecretBox, ReadsItsKeyFromAPrivateFileOfHexDigits) {
  const std::string dir = ::testing::TempDir();
  const std::string good = dir + "/webhook-key-good";
  const std::string bad = dir + "/webhook-key-bad";
  {
    std::ofstream(good) << std::string(64, 'a') << "\n";
    std::ofstream(bad) << "not hex\n";
  }
  chmod(good.c_str(), 0600);
  chmod(bad.c_str(), 0600);
  EXPECT_TRUE(SecretBox::FromKeyFile(good).ok());
  auto b = SecretBox::FromKeyFile(bad);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(b.status()), "SECRET_KEY_INVALID");
  chmod(good.c_str(), 0644);
  EXPECT_EQ(SecretBox::FromKeyFile(good).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace labshare::notify
