// WebhookService through a real gRPC server: roles and organisation scope,
// idempotency by request_id, every error with its exact code and reason,
// the events of every change, and the queueing of deliveries from real
// outbox entries (the party rule, exactly once per event and webhook).
#include "tests/notify/webhook_test_util.h"

#include <functional>

#include "absl/strings/match.h"

namespace labshare::notify::testing {
namespace {

constexpr char kUrl[] = "https://erp.acme.example/hooks/labshare";
constexpr char kCancelled[] = "labshare.booking.v1.BookingCancelled";
constexpr char kIssued[] = "labshare.billing.v1.InvoiceIssued";

class WebhookServiceTest : public WebhookFixture {
 protected:
  void SetUp() override {
    WebhookOptions o;
    o.limits.max_webhooks_per_org = 3;
    SetUpModule(o);
  }
  using S = v1::WebhookService::Stub;

  absl::StatusOr<v1::Webhook> Get(const Principal& p, const std::string& name) {
    v1::GetWebhookRequest r;
    r.set_name(name);
    return Call(p, &S::GetWebhook, r);
  }
  absl::StatusOr<v1::Webhook> Update(const Principal& p, v1::Webhook w, std::vector<std::string> paths,
                                     const std::string& request_id = "") {
    v1::UpdateWebhookRequest r;
    *r.mutable_webhook() = std::move(w);
    for (auto& path : paths) r.mutable_update_mask()->add_paths(path);
    r.set_request_id(request_id);
    return Call(p, &S::UpdateWebhook, r);
  }
  absl::StatusOr<v1::ListWebhookDeliveriesResponse> Deliveries(const Principal& p, const std::string& webhook,
                                                               std::vector<v1::WebhookDelivery::State> states = {}) {
    v1::ListWebhookDeliveriesRequest r;
    r.set_parent(webhook);
    for (auto s : states) r.add_states(s);
    return Call(p, &S::ListWebhookDeliveries, r);
  }
};

TEST_F(WebhookServiceTest, CreateReturnsTheSecretOnceAndPublishesWithoutIt) {
  auto created = Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled, kIssued}, "req-1");
  ASSERT_TRUE(created.ok()) << created.status();
  const v1::Webhook& w = created->webhook();
  EXPECT_EQ(w.name(), "organizations/acme/webhooks/erp");
  EXPECT_EQ(w.url(), kUrl);
  EXPECT_EQ(w.state(), v1::Webhook::ENABLED);
  EXPECT_EQ(w.creator(), "users/admin-of-acme");
  EXPECT_EQ(w.etag(), "1");
  EXPECT_EQ(FromProto(w.create_time()), clock_.Now());
  EXPECT_EQ(created->secret().size(), 70u);
  // Get never shows the secret (there is no field for it) and says the same.
  auto got = Get(Admin("acme"), w.name());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), w.SerializeAsString());
  // The event carries the webhook, never the secret.
  auto events = NotifyEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].webhook_created().webhook().name(), w.name());
  EXPECT_EQ(events[0].header().actor(), "users/admin-of-acme");
  EXPECT_EQ(events[0].header().actor_organization(), "organizations/acme");
  EXPECT_EQ(events[0].header().request_id(), "req-1");
  EXPECT_FALSE(absl::StrContains(events[0].SerializeAsString(), created->secret()));
}

// A request_id belongs to its caller (types.proto): a second administrator
// of the same organisation sending the same request_id and content is
// REQUEST_ID_REUSED, never handed the first one's webhook and secret.
TEST_F(WebhookServiceTest, AnotherCallersSameRequestIsReused) {
  auto first = Create(Admin("acme"), "acme", "", kUrl, {kCancelled}, "req-x");
  ASSERT_TRUE(first.ok()) << first.status();
  const Principal second_admin = As("other-admin-of-acme", "acme", Role::kMemberBillingAdmin);
  EXPECT_ERROR(Create(second_admin, "acme", "", kUrl, {kCancelled}, "req-x"), kFailedPrecondition,
               "REQUEST_ID_REUSED");
  auto again = Create(Admin("acme"), "acme", "", kUrl, {kCancelled}, "req-x");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(NotifyEvents().size(), 1u);  // one webhook created
}

TEST_F(WebhookServiceTest, MutationsAreIdempotentByRequestId) {
  auto first = Create(Admin("acme"), "acme", "", kUrl, {kCancelled}, "req-c");
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = Create(Admin("acme"), "acme", "", kUrl, {kCancelled}, "req-c");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());  // same name, same secret
  EXPECT_ERROR(Create(Admin("acme"), "acme", "", kUrl, {kIssued}, "req-c"), kFailedPrecondition, "REQUEST_ID_REUSED");
  v1::Webhook w = first->webhook();
  w.set_description("ERP");
  auto u1 = Update(Admin("acme"), w, {"description"}, "req-u");
  auto u2 = Update(Admin("acme"), w, {"description"}, "req-u");
  ASSERT_TRUE(u1.ok() && u2.ok());
  EXPECT_EQ(u1->etag(), "2");
  EXPECT_EQ(u2->SerializeAsString(), u1->SerializeAsString());
  v1::RotateWebhookSecretRequest rot;
  rot.set_name(w.name());
  rot.set_request_id("req-r");
  auto r1 = Call(Admin("acme"), &S::RotateWebhookSecret, rot);
  auto r2 = Call(Admin("acme"), &S::RotateWebhookSecret, rot);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(r1->secret(), r2->secret());
  EXPECT_NE(r1->secret(), first->secret());
  EXPECT_EQ(r1->webhook().etag(), "3");
  v1::DeleteWebhookRequest del;
  del.set_name(w.name());
  del.set_request_id("req-d");
  EXPECT_TRUE(Call(Admin("acme"), &S::DeleteWebhook, del).ok());
  EXPECT_TRUE(Call(Admin("acme"), &S::DeleteWebhook, del).ok());  // the replay, not NOT_FOUND
  EXPECT_ERROR(Get(Admin("acme"), w.name()), kNotFound, "WEBHOOK_NOT_FOUND");
  // Its id is not given out again.
  const std::string id = w.name().substr(w.name().rfind('/') + 1);
  EXPECT_ERROR(Create(Admin("acme"), "acme", id, kUrl, {kCancelled}), kAlreadyExists, "WEBHOOK_EXISTS");
  // One event per change: created, updated, rotated, deleted.
  auto events = NotifyEvents();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_TRUE(events[0].has_webhook_created());
  EXPECT_TRUE(events[1].has_webhook_updated());
  EXPECT_EQ(events[1].webhook_updated().update_mask(0), "description");
  EXPECT_TRUE(events[2].has_webhook_secret_rotated());
  EXPECT_TRUE(events[3].has_webhook_deleted());
}

// notify_events.proto WebhookUpdated.update_mask: "The paths changed", not
// every path the request named; webhooks.proto UpdateWebhook: an update
// that changes nothing writes and publishes nothing and answers the webhook
// as it is (etag and update_time unchanged; a request_id keeps that answer).
TEST_F(WebhookServiceTest, UpdatedListsTheChangedPathsOnlyAndANoOpChangesNothing) {
  auto created = Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled, kIssued});
  ASSERT_TRUE(created.ok()) << created.status();
  const std::vector<std::string> all = {"url", "event_types", "description", "state"};
  v1::Webhook w = created->webhook();
  w.set_description("ERP");
  w.clear_event_types();
  w.add_event_types(kIssued);  // the same types in another order
  w.add_event_types(kCancelled);
  w.set_state(v1::Webhook::ENABLED);
  clock_.Advance(absl::Minutes(1));
  auto changed = Update(Admin("acme"), w, {"url", "event_types", "description", "state", "description"});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->etag(), "2");
  EXPECT_EQ(changed->description(), "ERP");
  EXPECT_EQ(std::vector<std::string>(changed->event_types().begin(), changed->event_types().end()),
            (std::vector<std::string>{kCancelled, kIssued}));  // as stored
  auto events = NotifyEvents();
  ASSERT_EQ(events.size(), 2u);
  ASSERT_TRUE(events[1].has_webhook_updated());
  EXPECT_EQ(std::vector<std::string>(events[1].webhook_updated().update_mask().begin(),
                                     events[1].webhook_updated().update_mask().end()),
            std::vector<std::string>{"description"});

  // Everything as it is: no write, no event, the webhook unchanged.
  w.set_etag(changed->etag());
  clock_.Advance(absl::Minutes(1));
  auto same = Update(Admin("acme"), w, all, "req-same");
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->SerializeAsString(), changed->SerializeAsString());
  EXPECT_EQ(same->etag(), "2");
  EXPECT_EQ(FromProto(same->update_time()), FromProto(changed->update_time()));
  auto got = Get(Admin("acme"), w.name());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), changed->SerializeAsString());
  EXPECT_EQ(NotifyEvents().size(), 2u);
  // Its request_id keeps the answer; other content under it is reused.
  auto retry = Update(Admin("acme"), w, all, "req-same");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->SerializeAsString(), same->SerializeAsString());
  EXPECT_ERROR(Update(Admin("acme"), w, {"description"}, "req-same"), kFailedPrecondition, "REQUEST_ID_REUSED");
  // A stale etag is still a mismatch.
  w.set_etag("1");
  EXPECT_ERROR(Update(Admin("acme"), w, {"description"}), kAborted, "ETAG_MISMATCH");
  EXPECT_EQ(NotifyEvents().size(), 2u);
}

TEST_F(WebhookServiceTest, OnlyTheOrganisationsBillingAdminAndConsortiumAdmins) {
  ASSERT_TRUE(Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled}).ok());
  const std::string name = "organizations/acme/webhooks/erp";
  // Another organisation's billing admin: scope, before anything else (even
  // before the request's own errors).
  EXPECT_ERROR(Get(Admin("beta"), name), kPermissionDenied, "ORGANIZATION_SCOPE");
  EXPECT_ERROR(Create(Admin("beta"), "acme", "x", "http://bad", {}), kPermissionDenied, "ORGANIZATION_SCOPE");
  EXPECT_ERROR(Deliveries(Admin("beta"), name), kPermissionDenied, "ORGANIZATION_SCOPE");
  v1::ListWebhooksRequest list;
  list.set_parent("organizations/acme");
  EXPECT_ERROR(Call(Admin("beta"), &S::ListWebhooks, list), kPermissionDenied, "ORGANIZATION_SCOPE");
  // Also when the rest of the name or the request is malformed: the scope
  // on the organisation the name is under comes first (types.proto), so an
  // outsider learns nothing of the request's own errors.
  for (const std::string& bad : {std::string("organizations/acme/webhooks/Bad_Id"),
                                  std::string("organizations/acme/webhooks"), std::string("organizations/acme"),
                                  std::string("organizations/Not An Org/webhooks/erp")}) {
    SCOPED_TRACE(bad);
    EXPECT_ERROR(Get(Admin("beta"), bad), kPermissionDenied, "ORGANIZATION_SCOPE");
    EXPECT_ERROR(Deliveries(Admin("beta"), bad), kPermissionDenied, "ORGANIZATION_SCOPE");
    v1::Webhook w;
    w.set_name(bad);
    EXPECT_ERROR(Update(Admin("beta"), w, {}), kPermissionDenied, "ORGANIZATION_SCOPE");
    v1::DeleteWebhookRequest del;
    del.set_name(bad);
    EXPECT_ERROR(Call(Admin("beta"), &S::DeleteWebhook, del), kPermissionDenied, "ORGANIZATION_SCOPE");
    v1::RotateWebhookSecretRequest rotate;
    rotate.set_name(bad);
    EXPECT_ERROR(Call(Admin("beta"), &S::RotateWebhookSecret, rotate), kPermissionDenied, "ORGANIZATION_SCOPE");
    v1::ReplayWebhookDeliveryRequest replay;
    replay.set_name(bad + "/deliveries/Bad!");
    EXPECT_ERROR(Call(Admin("beta"), &S::ReplayWebhookDelivery, replay), kPermissionDenied, "ORGANIZATION_SCOPE");
    // The organisation's own admin and a consortium admin hear what is wrong.
    EXPECT_ERROR(Get(Root(), bad), kInvalidArgument, "INVALID_NAME");
  }
  v1::CreateWebhookRequest odd_parent;
  odd_parent.set_parent("organizations/acme/extra");
  EXPECT_ERROR(Call(Admin("beta"), &S::CreateWebhook, odd_parent), kPermissionDenied, "ORGANIZATION_SCOPE");
  EXPECT_ERROR(Call(Admin("acme"), &S::CreateWebhook, odd_parent), kInvalidArgument, "INVALID_NAME");
  v1::ListWebhooksRequest odd_list;
  odd_list.set_parent("organizations/acme/");
  EXPECT_ERROR(Call(Admin("beta"), &S::ListWebhooks, odd_list), kPermissionDenied, "ORGANIZATION_SCOPE");
  EXPECT_ERROR(Get(Admin("acme"), "organizations/acme/webhooks/Bad_Id"), kInvalidArgument, "INVALID_NAME");
  // Other roles of the same organisation.
  for (Role role : {Role::kLabUser, Role::kFacilityStaff, Role::kAuditor}) {
    EXPECT_ERROR(Get(As("u", "acme", role), name), kPermissionDenied, "ROLE_NOT_ALLOWED");
  }
  // A consortium admin manages every organisation's webhooks.
  EXPECT_TRUE(Get(Root(), name).ok());
  EXPECT_TRUE(Create(Root(), "beta", "b1", kUrl, {kIssued}).ok());
  auto listed = Call(Admin("acme"), &S::ListWebhooks, list);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->webhooks_size(), 1);
  EXPECT_EQ(listed->webhooks(0).name(), name);
  // No token at all.
  grpc::ClientContext ctx;
  v1::GetWebhookRequest get;
  get.set_name(name);
  v1::Webhook out;
  auto s = FromGrpcStatus(stub_->GetWebhook(&ctx, get, &out));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorReason(s), "MISSING_CREDENTIALS");
}

TEST_F(WebhookServiceTest, ErrorsCarryTheirContractReasons) {
  EXPECT_ERROR(Create(Admin("acme"), "acme", "erp", "http://erp.acme.example/", {kCancelled}), kInvalidArgument,
               "INVALID_FIELD");
  EXPECT_ERROR(Create(Admin("acme"), "acme", "erp", kUrl, {}), kInvalidArgument, "INVALID_FIELD");
  EXPECT_ERROR(Create(Admin("acme"), "acme", "erp", kUrl, {"labshare.usage.v1.AnythingElse"}), kInvalidArgument,
               "INVALID_FIELD");
  EXPECT_ERROR(Create(Admin("acme"), "acme", "Bad_Id", kUrl, {kCancelled}), kInvalidArgument, "INVALID_NAME");
  v1::CreateWebhookRequest bad_parent;
  bad_parent.set_parent("organizations/acme/extra");
  EXPECT_ERROR(Call(Root(), &S::CreateWebhook, bad_parent), kInvalidArgument, "INVALID_NAME");
  ASSERT_TRUE(Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled}).ok());
  EXPECT_ERROR(Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled}), kAlreadyExists, "WEBHOOK_EXISTS");
  ASSERT_TRUE(Create(Admin("acme"), "acme", "erp2", kUrl, {kCancelled}).ok());
  ASSERT_TRUE(Create(Admin("acme"), "acme", "erp3", kUrl, {kCancelled}).ok());
  EXPECT_ERROR(Create(Admin("acme"), "acme", "erp4", kUrl, {kCancelled}), kResourceExhausted, "WEBHOOK_LIMIT");
  EXPECT_ERROR(Get(Admin("acme"), "organizations/acme/webhooks/nope"), kNotFound, "WEBHOOK_NOT_FOUND");
  EXPECT_ERROR(Get(Admin("acme"), "webhooks/erp"), kInvalidArgument, "INVALID_NAME");
  auto w = Get(Admin("acme"), "organizations/acme/webhooks/erp");
  ASSERT_TRUE(w.ok());
  EXPECT_ERROR(Update(Admin("acme"), *w, {}), kInvalidArgument, "INVALID_UPDATE_MASK");
  EXPECT_ERROR(Update(Admin("acme"), *w, {"creator"}), kInvalidArgument, "INVALID_UPDATE_MASK");
  v1::Webhook stale = *w;
  stale.set_etag("7");
  EXPECT_ERROR(Update(Admin("acme"), stale, {"description"}), kAborted, "ETAG_MISMATCH");
  v1::Webhook no_state = *w;
  no_state.set_state(v1::Webhook::STATE_UNSPECIFIED);
  EXPECT_ERROR(Update(Admin("acme"), no_state, {"state"}), kInvalidArgument, "INVALID_FIELD");
  v1::Webhook insecure = *w;
  insecure.set_url("http://erp.acme.example/");
  EXPECT_ERROR(Update(Admin("acme"), insecure, {"url"}), kInvalidArgument, "INVALID_FIELD");
  v1::DeleteWebhookRequest del;
  del.set_name(w->name());
  del.set_etag("99");
  EXPECT_ERROR(Call(Admin("acme"), &S::DeleteWebhook, del), kAborted, "ETAG_MISMATCH");
  v1::ListWebhookDeliveriesRequest list;
  list.set_parent(w->name());
  list.add_states(v1::WebhookDelivery::STATE_UNSPECIFIED);
  EXPECT_ERROR(Call(Admin("acme"), &S::ListWebhookDeliveries, list), kInvalidArgument, "INVALID_FIELD");
  list.clear_states();
  list.set_page_token("forged");
  EXPECT_ERROR(Call(Admin("acme"), &S::ListWebhookDeliveries, list), kInvalidArgument, "INVALID_PAGE_TOKEN");
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name(w->name() + "/deliveries/nope");
  EXPECT_ERROR(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay), kNotFound, "DELIVERY_NOT_FOUND");
  replay.set_name("organizations/acme/webhooks/gone/deliveries/nope");
  EXPECT_ERROR(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay), kNotFound, "WEBHOOK_NOT_FOUND");
  replay.set_name(w->name());
  EXPECT_ERROR(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay), kInvalidArgument, "INVALID_NAME");
}

// webhooks.proto UpdateWebhook: INVALID_ARGUMENT (INVALID_FIELD) comes
// before NOT_FOUND (WEBHOOK_NOT_FOUND) and ABORTED (ETAG_MISMATCH): the
// masked fields' values are checked before the webhook is read, so a bad
// value is INVALID_FIELD also for a missing webhook or with a stale etag.
// The mask itself is checked first (INVALID_UPDATE_MASK), and a refused
// request keeps nothing: its request_id, sent again corrected, is checked
// afresh (types.proto).
TEST_F(WebhookServiceTest, UpdateChecksTheMaskedValuesBeforeTheWebhookAndItsEtag) {
  auto created = Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  const v1::Webhook good = created->webhook();
  v1::Webhook missing = good;
  missing.set_name("organizations/acme/webhooks/nope");
  v1::Webhook stale = good;
  stale.set_etag("7");
  struct Bad {
    std::string path, field;
    std::function<void(v1::Webhook*)> set;
  };
  const std::vector<Bad> bads = {
      {"url", "webhook.url", [](v1::Webhook* w) { w->set_url("https://[hello-world]/"); }},
      {"url", "webhook.url", [](v1::Webhook* w) { w->set_url("http://erp.acme.example/"); }},
      {"event_types", "webhook.event_types", [](v1::Webhook* w) { w->clear_event_types(); }},
      {"description", "webhook.description", [](v1::Webhook* w) { w->set_description("two\nlines"); }},
      {"state", "webhook.state", [](v1::Webhook* w) { w->set_state(v1::Webhook::STATE_UNSPECIFIED); }},
  };
  for (const Bad& bad : bads) {
    for (v1::Webhook w : {missing, stale, good}) {
      bad.set(&w);
      auto s = Update(Admin("acme"), w, {"description", bad.path});
      ASSERT_FALSE(s.ok()) << bad.path << " " << w.name() << " etag " << w.etag();
      EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad.path << " " << s.status();
      EXPECT_EQ(ErrorReason(s.status()), "INVALID_FIELD") << bad.path << " " << w.name() << " " << s.status();
      EXPECT_EQ(ErrorMetadataOf(s.status())["field"], bad.field) << s.status();
    }
  }
  // Only the masked fields' values count: a bad url left out of the mask
  // does not hide the missing webhook or the stale etag.
  v1::Webhook unmasked = missing;
  unmasked.set_url("https://[hello-world]/");
  EXPECT_ERROR(Update(Admin("acme"), unmasked, {"description"}), kNotFound, "WEBHOOK_NOT_FOUND");
  unmasked = stale;
  unmasked.set_url("https://[hello-world]/");
  EXPECT_ERROR(Update(Admin("acme"), unmasked, {"description"}), kAborted, "ETAG_MISMATCH");
  // A bad mask is named before a bad value.
  v1::Webhook bad_url = missing;
  bad_url.set_url("https://[hello-world]/");
  EXPECT_ERROR(Update(Admin("acme"), bad_url, {"url", "creator"}), kInvalidArgument, "INVALID_UPDATE_MASK");
  // Nothing was written or published; the refused request_id is free for
  // the corrected request.
  bad_url = good;
  bad_url.set_url("https://example..com/");
  EXPECT_ERROR(Update(Admin("acme"), bad_url, {"url"}, "req-fix"), kInvalidArgument, "INVALID_FIELD");
  auto got = Get(Admin("acme"), good.name());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), good.SerializeAsString());
  EXPECT_EQ(NotifyEvents().size(), 1u);  // WebhookCreated only
  v1::Webhook fixed = good;
  fixed.set_url("https://[2001:db8::1]:8443/hook");
  auto updated = Update(Admin("acme"), fixed, {"url"}, "req-fix");
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->url(), "https://[2001:db8::1]:8443/hook");
  EXPECT_EQ(updated->etag(), "2");
  auto retry = Update(Admin("acme"), fixed, {"url"}, "req-fix");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->SerializeAsString(), updated->SerializeAsString());
}

TEST_F(WebhookServiceTest, TheLimitCountsLiveWebhooksAndAStorageFaultIsNoRoom) {
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(Create(Admin("acme"), "acme", id, kUrl, {kCancelled}).ok());
  v1::DeleteWebhookRequest del;
  del.set_name("organizations/acme/webhooks/b");
  ASSERT_TRUE(Call(Admin("acme"), &S::DeleteWebhook, del).ok());
  ASSERT_TRUE(Create(Admin("acme"), "acme", "d", kUrl, {kCancelled}).ok());
  auto full = Create(Admin("acme"), "acme", "e", kUrl, {kCancelled});
  EXPECT_ERROR(full, kResourceExhausted, "WEBHOOK_LIMIT");
  EXPECT_EQ(full.status().message(), "organizations/acme already has 3 webhooks; delete one first");
  // An error reply where the count is read is no count of 0.
  ASSERT_TRUE(pool_->Command({"SET", "{notify}:wh:org:beta", "not an index"}).ok());
  EXPECT_ERROR(Create(Admin("beta"), "beta", "erp", kUrl, {kCancelled}), kUnavailable, "STORAGE_UNAVAILABLE");
}

TEST_F(WebhookServiceTest, EventsAreQueuedOncePerMatchingWebhookOfAPartyOnly) {
  ASSERT_TRUE(Create(Admin("acme"), "acme", "erp", kUrl, {kCancelled, kIssued}).ok());
  ASSERT_TRUE(Create(Admin("acme"), "acme", "invoices", kUrl, {kIssued}).ok());
  ASSERT_TRUE(Create(Admin("beta"), "beta", "erp", kUrl, {kCancelled, kIssued}).ok());
  ASSERT_TRUE(Create(Admin("owner"), "owner", "erp", kUrl, {kCancelled, kIssued}).ok());
  // acme's cancelled booking on owner's instrument: acme/erp only (the
  // instrument's owner is no party of a booking).
  Publish(kBookingStream, BookingCancelled("ev-cancel-1", "organizations/acme"));
  // An invoice of acme payable to owner: acme/erp, acme/invoices, owner/erp.
  Publish(kBillingStream, InvoiceIssued("ev-invoice-1", "organizations/acme", "organizations/owner"));
  Consume();
  auto acme = Deliveries(Admin("acme"), "organizations/acme/webhooks/erp");
  ASSERT_TRUE(acme.ok()) << acme.status();
  ASSERT_EQ(acme->deliveries_size(), 2);
  EXPECT_EQ(acme->deliveries(0).name(), "organizations/acme/webhooks/erp/deliveries/ev-cancel-1");
  EXPECT_EQ(acme->deliveries(0).event_type(), kCancelled);
  EXPECT_EQ(acme->deliveries(0).state(), v1::WebhookDelivery::PENDING);
  EXPECT_EQ(acme->deliveries(1).event_type(), kIssued);
  EXPECT_TRUE(absl::StartsWith(acme->deliveries(0).body(), "{\"id\":\"ev-cancel-1\",\"type\":\"" +
                                                                std::string(kCancelled) + "\""));
  auto invoices = Deliveries(Admin("acme"), "organizations/acme/webhooks/invoices");
  ASSERT_TRUE(invoices.ok());
  EXPECT_EQ(invoices->deliveries_size(), 1);
  auto beta = Deliveries(Admin("beta"), "organizations/beta/webhooks/erp");
  ASSERT_TRUE(beta.ok());
  EXPECT_EQ(beta->deliveries_size(), 0);
  auto owner = Deliveries(Admin("owner"), "organizations/owner/webhooks/erp");
  ASSERT_TRUE(owner.ok());
  ASSERT_EQ(owner->deliveries_size(), 1);
  EXPECT_EQ(owner->deliveries(0).event_type(), kIssued);
  // The same event again (another replica, a redelivered entry): nothing new.
  Publish(kBillingStream, InvoiceIssued("ev-invoice-1", "organizations/acme", "organizations/owner"));
  Consume();
  EXPECT_EQ(Deliveries(Admin("acme"), "organizations/acme/webhooks/erp")->deliveries_size(), 2);
  EXPECT_EQ(Deliveries(Admin("owner"), "organizations/owner/webhooks/erp")->deliveries_size(), 1);
  auto due = pool_->Command({"ZCARD", "{notify}:wh:due"});
  ASSERT_TRUE(due.ok());
  EXPECT_EQ(due->integer, 4);
  // A disabled webhook gets nothing; a replay of a PENDING delivery is refused.
  auto erp = Get(Admin("acme"), "organizations/acme/webhooks/erp");
  v1::Webhook off = *erp;
  off.set_state(v1::Webhook::DISABLED);
  auto disabled = Update(Admin("acme"), off, {"state"});
  ASSERT_TRUE(disabled.ok());
  EXPECT_EQ(disabled->disabled_reason(), v1::Webhook::BY_ADMIN);
  Publish(kBookingStream, BookingCancelled("ev-cancel-2", "organizations/acme"));
  Consume();
  EXPECT_EQ(Deliveries(Admin("acme"), "organizations/acme/webhooks/erp")->deliveries_size(), 2);
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name("organizations/acme/webhooks/invoices/deliveries/ev-invoice-1");
  EXPECT_ERROR(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay), kFailedPrecondition, "DELIVERY_STATE");
  // Page through the deliveries one by one.
  v1::ListWebhookDeliveriesRequest page;
  page.set_parent("organizations/acme/webhooks/erp");
  page.set_page_size(1);
  auto p1 = Call(Admin("acme"), &S::ListWebhookDeliveries, page);
  ASSERT_TRUE(p1.ok());
  ASSERT_EQ(p1->deliveries_size(), 1);
  ASSERT_FALSE(p1->next_page_token().empty());
  page.set_page_token(p1->next_page_token());
  auto p2 = Call(Admin("acme"), &S::ListWebhookDeliveries, page);
  ASSERT_TRUE(p2.ok());
  ASSERT_EQ(p2->deliveries_size(), 1);
  EXPECT_EQ(p2->deliveries(0).event_id(), "ev-invoice-1");
  EXPECT_TRUE(p2->next_page_token().empty());
  // The page token is bound to its caller.
  EXPECT_ERROR(Call(Root(), &S::ListWebhookDeliveries, page), kInvalidArgument, "INVALID_PAGE_TOKEN");
}

}  // namespace
}  // namespace labshare::notify::testing
