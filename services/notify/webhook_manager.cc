#include "services/notify/webhook_manager.h"

#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "services/notify/notify_module.h"
#include "services/notify/webhook_rules.h"

namespace labshare::notify {
namespace {

constexpr int kAttempts = 8;  // compare-and-set rounds before CONCURRENT_MODIFICATION
constexpr char kActor[] = "services/notify";

std::string M(const char* method) { return absl::StrCat("/labshare.notify.v1.WebhookService/", method); }

namespace keys {
std::string Hook(const std::string& org, const std::string& id) { return absl::StrCat("{notify}:wh:hook:", org, ":", id); }
std::string Stats(const std::string& org, const std::string& id) {
  return absl::StrCat("{notify}:wh:stats:", org, ":", id);
}
std::string Secret(const std::string& org, const std::string& id) {
  return absl::StrCat("{notify}:wh:secret:", org, ":", id);
}
std::string Org(const std::string& org) { return absl::StrCat("{notify}:wh:org:", org); }
std::string Count(const std::string& org) { return absl::StrCat("{notify}:wh:n:", org); }
std::string Dlv(const std::string& org, const std::string& id, const std::string& d) {
  return absl::StrCat("{notify}:wh:dlv:", org, ":", id, ":", d);
}
std::string Dlvs(const std::string& org, const std::string& id) { return absl::StrCat("{notify}:wh:dlvs:", org, ":", id); }
std::string Dead(const std::string& org, const std::string& id) { return absl::StrCat("{notify}:wh:dead:", org, ":", id); }
std::string Done(const std::string& org, const std::string& id) { return absl::StrCat("{notify}:wh:done:", org, ":", id); }
std::string Pend(const std::string& org, const std::string& id) { return absl::StrCat("{notify}:wh:pend:", org, ":", id); }
std::string Due() { return "{notify}:wh:due"; }
std::string Off(const std::string& org, const std::string& id) { return absl::StrCat("{notify}:wh:off:", org, ":", id); }
std::string AllHooks() { return "{notify}:wh:hooks"; }
// A value sealed with the key in use (WebhookManager::CheckSecretKey).
std::string KeyCheck() { return "{notify}:wh:keycheck"; }
std::string Seen(const std::string& event_id) { return absl::StrCat("{notify}:wh:seen:", DeliveryIdOf(event_id)); }
std::string Idem(const char* method, const std::string& request_id) {
  return absl::StrCat("{notify}:wh:idem:", method, ":", request_id);
}
}  // namespace keys

std::string WebhookName(const std::string& org, const std::string& id) {
  return absl::StrCat("organizations/", org, "/webhooks/", id);
}
std::string DeliveryName(const std::string& org, const std::string& id, const std::string& d) {
  return absl::StrCat(WebhookName(org, id), "/deliveries/", d);
}
int64_t Ms(absl::Time t) { return absl::ToUnixMillis(t); }
// `hook_version`: the webhook's version when the delivery was queued or
// replayed (0 in members written before it was kept): a delivery queued
// before the webhook's last disabling is never attempted (see OffVersion).
std::string DueMember(int64_t due_ms, const std::string& org, const std::string& id, const std::string& d,
                      int64_t hook_version) {
  return absl::StrFormat("%013d|%s|%s|%s|%d", std::max<int64_t>(due_ms, 0), org, id, d, hook_version);
}
// The hook version in a due member.
int64_t HookVersionOf(const std::string& member) {
  std::vector<std::string> f = absl::StrSplit(member, '|');
  int64_t v = 0;
  if (f.size() != 5 || !absl::SimpleAtoi(f[4], &v)) return 0;
  return v;
}
// The "off" document of a webhook: "<version>|<DisabledReason>" of the
// commit that last disabled it.
std::string OffData(int64_t version, v1::Webhook::DisabledReason reason) {
  return absl::StrCat(version, "|", static_cast<int>(reason));
}
// The "off" document's commit version and whether an admin disabled it;
// nullopt when the webhook was never disabled (or the document is damaged).
struct OffRecord {
  int64_t version = 0;
  bool by_admin = false;
};
std::optional<OffRecord> ParseOff(const std::optional<StoredDoc>& doc) {
  if (!doc || doc->data.empty()) return std::nullopt;
  std::vector<std::string> f = absl::StrSplit(doc->data, '|');
  OffRecord off;
  int reason = 0;
  if (f.size() != 2 || !absl::SimpleAtoi(f[0], &off.version) || !absl::SimpleAtoi(f[1], &reason)) return std::nullopt;
  off.by_admin = reason != v1::Webhook::REPEATED_FAILURES;
  return off;
}
// A signing secret as stored: sealed with the box when there is one.
absl::StatusOr<std::string> StoredSecret(const SecretBox* box, const std::string& key, const std::string& secret) {
  if (box == nullptr) return secret;
  return box->Seal(secret, key);
}

std::string ListMember(absl::Time create, const std::string& d) {
  return absl::StrFormat("%013d|%s", std::max<int64_t>(Ms(create), 0), d);
}

struct WebhookRef {
  std::string org, id;
};
absl::Status BadName(const std::string& field, const std::string& expected) {
  return InvalidField(field, absl::StrCat("expected \"", expected, "\""), "INVALID_NAME");
}
absl::StatusOr<WebhookRef> ParseWebhookName(const std::string& name, const std::string& field) {
  std::vector<std::string> parts = absl::StrSplit(name, '/');
  if (parts.size() != 4 || parts[0] != "organizations" || parts[2] != "webhooks" || !ValidResourceId(parts[1]) ||
      !ValidResourceId(parts[3])) {
    return BadName(field, "organizations/{organization}/webhooks/{webhook}");
  }
  return WebhookRef{parts[1], parts[3]};
}
struct DeliveryRef {
  std::string org, id, d;
};
absl::StatusOr<DeliveryRef> ParseDeliveryName(const std::string& name, const std::string& field) {
  std::vector<std::string> parts = absl::StrSplit(name, '/');
  if (parts.size() != 6 || parts[0] != "organizations" || parts[2] != "webhooks" || parts[4] != "deliveries" ||
      !ValidResourceId(parts[1]) || !ValidResourceId(parts[3]) || !ValidResourceId(parts[5])) {
    return BadName(field, "organizations/{organization}/webhooks/{webhook}/deliveries/{delivery}");
  }
  return DeliveryRef{parts[1], parts[3], parts[5]};
}
absl::StatusOr<std::string> ParseOrg(const std::string& name, const std::string& field) {
  if (!IsResourceName(name, "organizations")) return BadName(field, "organizations/{organization}");
  return name.substr(sizeof("organizations/") - 1);
}

absl::Status Scope(const char* method, const Principal& p, const std::string& org) {
  ScopeFacts facts;
  facts.parties.push_back(absl::StrCat("organizations/", org));
  return WebhookPolicy().CheckScope(M(method), p, facts);
}

// Authorization before validation (types.proto; webhooks.proto: "checked
// before anything else"): the scope on the {organization} segment of a name
// or parent as written, before the name itself is checked, so that a
// caller outside that organisation learns nothing of the request's own
// errors. A name under no "organizations/" names no organisation's
// resource: its parse answers INVALID_NAME to anyone.
absl::Status ScopeOfName(const char* method, const Principal& p, const std::string& name) {
  constexpr absl::string_view kPrefix = "organizations/";
  if (!absl::StartsWith(name, kPrefix)) return absl::OkStatus();
  const std::string rest = name.substr(kPrefix.size());
  return Scope(method, p, rest.substr(0, rest.find('/')));
}

absl::Status HookNotFound(const std::string& name) {
  return MakeError(absl::StatusCode::kNotFound, "WEBHOOK_NOT_FOUND", absl::StrCat(name, " does not exist"),
                   {{"name", name}});
}
absl::Status Conflict() {
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the webhook changed at the same moment; retry with the same request_id");
}
absl::Status Corrupt(const std::string& key) {
  LogError("undecodable webhook document", {{"key", key}});
  return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored webhook record is damaged");
}
// How many webhooks an organisation has: its counter document (written in
// the commits that create and delete them, so the limit holds under
// concurrent creations), or, before its first write, the size of its index.
absl::StatusOr<int64_t> LiveWebhooks(RedisPool* pool, const std::optional<StoredDoc>& count, const std::string& org) {
  if (count && !count->data.empty()) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(count->data, &n)) return Corrupt(keys::Count(org));
    return n;
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool->Command({"ZCARD", keys::Org(org)}));
  if (v.is_error() || v.type != RedisValue::Type::kInteger) return StorageUnavailable();
  return v.integer;
}

absl::Status EtagMismatch(const std::string& name) {
  return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", absl::StrCat(name, " changed; read it again"));
}

template <typename T>
absl::StatusOr<T> ParseAs(const std::string& bytes, const std::string& what) {
  T out;
  if (!out.ParseFromString(bytes)) return Corrupt(what);
  return out;
}

// A delivery document: "<due member>\n<WebhookDelivery>".
std::string EncodeDelivery(const std::string& due, const v1::WebhookDelivery& d) {
  return absl::StrCat(due, "\n", d.SerializeAsString());
}
bool DecodeDelivery(const std::string& data, std::string* due, v1::WebhookDelivery* d) {
  const size_t nl = data.find('\n');
  if (nl == std::string::npos) return false;
  *due = data.substr(0, nl);
  return d->ParseFromArray(data.data() + nl + 1, static_cast<int>(data.size() - nl - 1));
}

// The outcome of a commit: the answer, a replay's stored answer, or nullopt
// (the state moved: look again).
template <typename T>
absl::StatusOr<std::optional<T>> Outcome(const CommitOutcome& o, T answer) {
  switch (o.kind) {
    case CommitOutcome::Kind::kApplied: return std::optional<T>(std::move(answer));
    case CommitOutcome::Kind::kReplayed: {
      LS_ASSIGN_OR_RETURN(T replay, ParseAs<T>(o.response, "idempotency record"));
      return std::optional<T>(std::move(replay));
    }
    case CommitOutcome::Kind::kRequestReused: return RequestIdReused();
    case CommitOutcome::Kind::kConflict: return std::optional<T>();
  }
  return std::optional<T>();
}

template <typename T>
absl::StatusOr<std::optional<T>> FindReplayOf(const DocStore& docs, const char* method, const std::string& request_id,
                                              const google::protobuf::Message& request, const std::string& actor) {
  if (request_id.empty()) return std::optional<T>();
  LS_ASSIGN_OR_RETURN(auto stored, docs.FindReplay(keys::Idem(method, request_id), RequestFingerprint(method, request, actor)));
  if (!stored) return std::optional<T>();
  LS_ASSIGN_OR_RETURN(T replay, ParseAs<T>(*stored, "idempotency record"));
  return std::optional<T>(std::move(replay));
}

void SetIdempotency(Mutation* m, const char* method, const std::string& request_id,
                    const google::protobuf::Message& request, const std::string& actor,
                    const google::protobuf::Message& response) {
  if (request_id.empty()) return;
  m->idempotency_key = keys::Idem(method, request_id);
  m->fingerprint = RequestFingerprint(method, request, actor);
  m->response = SerializeDeterministic(response);
}

// The idempotency record of an answer carrying a signing secret (CreateWebhook,
// RotateWebhookSecret): the secret sealed like the secret document, under
// the record's key, so Redis holds it in clear nowhere; opened on replay.
template <typename T>
absl::StatusOr<T> SealedRecord(const SecretBox* box, const char* method, const std::string& request_id, T answer) {
  if (box == nullptr || request_id.empty()) return answer;
  LS_ASSIGN_OR_RETURN(std::string sealed, box->Seal(answer.secret(), keys::Idem(method, request_id)));
  answer.set_secret(std::move(sealed));
  return answer;
}
template <typename T>
absl::StatusOr<T> OpenedRecord(const SecretBox* box, const char* method, const std::string& request_id, T answer) {
  if (box == nullptr || !SecretBox::IsSealed(answer.secret())) return answer;
  LS_ASSIGN_OR_RETURN(std::string secret, box->Open(answer.secret(), keys::Idem(method, request_id)));
  answer.set_secret(std::move(secret));
  return answer;
}

void SetEvent(Mutation* m, const v1::NotifyEvent& e) {
  m->outbox_key = kNotifyOutbox;
  m->event_type = "labshare.notify.v1.NotifyEvent";
  m->event_payload = e.SerializeAsString();
}
// Another event of the same step, after those already in `m`.
void AddEvent(Mutation* m, const v1::NotifyEvent& e) {
  if (m->outbox_key.empty()) return SetEvent(m, e);
  m->more_events.push_back({"labshare.notify.v1.NotifyEvent", e.SerializeAsString()});
}

// The stored form of a webhook: admin fields only.
v1::Webhook AdminFields(v1::Webhook w) {
  w.clear_consecutive_failures();
  w.clear_last_error();
  w.clear_last_attempt_time();
  w.clear_last_success_time();
  w.clear_etag();
  return w;
}

}  // namespace

// The contract's "Roles:" lines (tests/authz and webhook_service_test check
// it against proto/labshare/notify/v1/webhooks.proto): the interceptor checks
// the role, the manager the organisation of the name or parent.
const MethodPolicy& WebhookPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    auto* p = new MethodPolicy();
    for (const char* m : {"CreateWebhook", "GetWebhook", "ListWebhooks", "UpdateWebhook", "DeleteWebhook",
                          "RotateWebhookSecret", "ListWebhookDeliveries", "ReplayWebhookDelivery"}) {
      p->Allow(M(m), {Role::kConsortiumAdmin}).Allow(M(m), {Role::kMemberBillingAdmin}, kScopeParty);
    }
    return p;
  }();
  return *kPolicy;
}

WebhookManager::WebhookManager(RedisPool* pool, const Clock* clock, const Clock* wall, WebhookLimits limits)
    : pool_(pool), clock_(clock), wall_(wall), limits_(limits), docs_(pool) {}

absl::StatusOr<PageTokenCodec> WebhookManager::PageTokens() {
  std::lock_guard<std::mutex> lock(page_mu_);
  if (!page_tokens_) {
    LS_ASSIGN_OR_RETURN(PageTokenCodec codec, PageTokenCodec::FromRedis(pool_, "{notify}", absl::Seconds(5)));
    page_tokens_.emplace(std::move(codec));
  }
  return *page_tokens_;
}

v1::NotifyEvent WebhookManager::NewEvent(const Principal& p, const std::string& request_id) const {
  v1::NotifyEvent e;
  auto* h = e.mutable_header();
  h->set_event_id(NewEventId());
  *h->mutable_event_time() = ToProto(clock_->Now());
  h->set_request_id(request_id);
  h->set_actor(p.user_id.empty() ? kActor : ActorName(p));
  h->set_actor_organization(p.user_id.empty() ? "" : ActorOrganization(p));
  h->set_trace_id(p.trace_id);
  return e;
}

v1::NotifyEvent WebhookManager::NewDeliveryEvent(const v1::WebhookDelivery& delivery) const {
  Principal notify;
  notify.trace_id = WebhookBodyTraceId(delivery.body());
  return NewEvent(notify, "");
}

absl::StatusOr<WebhookManager::Hook> WebhookManager::LoadHook(const std::string& org_id, const std::string& id) const {
  Hook hook;
  hook.org_id = org_id;
  hook.id = id;
  hook.key = keys::Hook(org_id, id);
  LS_ASSIGN_OR_RETURN(auto doc, docs_.Get(hook.key));
  if (!doc) return hook;
  hook.version = doc->version;
  if (doc->data.empty()) {
    hook.tombstone = true;
    return hook;
  }
  LS_ASSIGN_OR_RETURN(hook.webhook, ParseAs<v1::Webhook>(doc->data, hook.key));
  return hook;
}

absl::StatusOr<v1::Webhook> WebhookManager::Present(const Hook& hook) const {
  v1::Webhook w = hook.webhook;
  LS_ASSIGN_OR_RETURN(auto stats_doc, docs_.Get(keys::Stats(hook.org_id, hook.id)));
  if (stats_doc && !stats_doc->data.empty()) {
    LS_ASSIGN_OR_RETURN(v1::Webhook stats, ParseAs<v1::Webhook>(stats_doc->data, keys::Stats(hook.org_id, hook.id)));
    w.set_consecutive_failures(stats.consecutive_failures());
    w.set_last_error(stats.last_error());
    if (stats.has_last_attempt_time()) *w.mutable_last_attempt_time() = stats.last_attempt_time();
    if (stats.has_last_success_time()) *w.mutable_last_success_time() = stats.last_success_time();
  }
  w.set_etag(std::to_string(hook.version));
  return w;
}

// ================================================================ RPCs

absl::StatusOr<v1::CreateWebhookResponse> WebhookManager::CreateWebhook(const Principal& p,
                                                                       const v1::CreateWebhookRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("CreateWebhook", p, r.parent()));
  LS_ASSIGN_OR_RETURN(std::string org, ParseOrg(r.parent(), "parent"));
  LS_ASSIGN_OR_RETURN(auto replay, FindReplayOf<v1::CreateWebhookResponse>(docs_, "CreateWebhook", r.request_id(), r, ActorName(p)));
  if (replay) return OpenedRecord(box_, "CreateWebhook", r.request_id(), *std::move(replay));
  if (!r.webhook_id().empty() && !ValidResourceId(r.webhook_id())) {
    return InvalidField("webhook_id", "use [a-z0-9][a-z0-9-]{0,62}", "INVALID_NAME");
  }
  const v1::Webhook& in = r.webhook();
  LS_RETURN_IF_ERROR(CheckWebhookUrl(in.url(), "webhook.url"));
  LS_RETURN_IF_ERROR(CheckWebhookEventTypes({in.event_types().begin(), in.event_types().end()}, "webhook.event_types"));
  LS_RETURN_IF_ERROR(CheckWebhookDescription(in.description(), "webhook.description"));
  const std::string id = r.webhook_id().empty() ? NewEventId().substr(0, 16) : r.webhook_id();
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(org, id));
    // An id is never used twice, also after a deletion: the deliveries of
    // the deleted webhook keep their keys.
    if (hook.version > 0) {
      return MakeError(absl::StatusCode::kAlreadyExists, "WEBHOOK_EXISTS",
                       absl::StrCat(WebhookName(org, id), hook.tombstone ? " was used before" : " already exists",
                                    "; choose another webhook_id"));
    }
    LS_ASSIGN_OR_RETURN(auto docs, docs_.GetMany({keys::Secret(org, id), keys::Stats(org, id), keys::Count(org)}));
    LS_ASSIGN_OR_RETURN(const int64_t live, LiveWebhooks(pool_, docs[2], org));
    if (live >= limits_.max_webhooks_per_org) {
      return MakeError(absl::StatusCode::kResourceExhausted, "WEBHOOK_LIMIT",
                       absl::StrCat("organizations/", org, " already has ", live, " webhooks; delete one first"),
                       {{"limit", std::to_string(limits_.max_webhooks_per_org)}});
    }
    const absl::Time now = clock_->Now();
    v1::Webhook w;
    w.set_name(WebhookName(org, id));
    w.set_url(in.url());
    *w.mutable_event_types() = in.event_types();
    w.set_description(in.description());
    w.set_state(v1::Webhook::ENABLED);
    *w.mutable_secret_time() = ToProto(now);
    w.set_creator(ActorName(p));
    *w.mutable_create_time() = ToProto(now);
    *w.mutable_update_time() = ToProto(now);
    const std::string secret = NewWebhookSecret();
    v1::CreateWebhookResponse answer;
    *answer.mutable_webhook() = w;
    answer.mutable_webhook()->set_etag(std::to_string(hook.version + 1));
    answer.set_secret(secret);
    LS_ASSIGN_OR_RETURN(const std::string stored, StoredSecret(box_, keys::Secret(org, id), secret));
    Mutation m;
    m.writes.push_back({hook.key, w.SerializeAsString(), hook.version});
    m.writes.push_back({keys::Secret(org, id), stored, docs[0] ? docs[0]->version : 0});
    m.writes.push_back({keys::Stats(org, id), v1::Webhook().SerializeAsString(), docs[1] ? docs[1]->version : 0});
    m.writes.push_back({keys::Count(org), std::to_string(live + 1), docs[2] ? docs[2]->version : 0});
    m.index_ops.push_back({keys::Org(org), id});
    m.index_ops.push_back({keys::AllHooks(), absl::StrCat(org, "|", id)});
    v1::NotifyEvent e = NewEvent(p, r.request_id());
    *e.mutable_webhook_created()->mutable_webhook() = answer.webhook();
    SetEvent(&m, e);
    LS_ASSIGN_OR_RETURN(auto record, SealedRecord(box_, "CreateWebhook", r.request_id(), answer));
    SetIdempotency(&m, "CreateWebhook", r.request_id(), r, ActorName(p), record);
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    LS_ASSIGN_OR_RETURN(auto done, Outcome(o, std::move(answer)));
    if (done) return OpenedRecord(box_, "CreateWebhook", r.request_id(), *std::move(done));
  }
  return Conflict();
}

absl::StatusOr<v1::Webhook> WebhookManager::GetWebhook(const Principal& p, const v1::GetWebhookRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("GetWebhook", p, r.name()));
  LS_ASSIGN_OR_RETURN(WebhookRef ref, ParseWebhookName(r.name(), "name"));
  LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(ref.org, ref.id));
  if (hook.version == 0 || hook.tombstone) return HookNotFound(r.name());
  return Present(hook);
}

absl::StatusOr<v1::ListWebhooksResponse> WebhookManager::ListWebhooks(const Principal& p,
                                                                     const v1::ListWebhooksRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("ListWebhooks", p, r.parent()));
  LS_ASSIGN_OR_RETURN(std::string org, ParseOrg(r.parent(), "parent"));
  LS_ASSIGN_OR_RETURN(PageTokenCodec codec, PageTokens());
  LS_ASSIGN_OR_RETURN(PageRequest page, codec.Parse(r, p));
  LS_ASSIGN_OR_RETURN(std::vector<std::string> ids, docs_.IndexRange(keys::Org(org), page.after, page.page_size + 1));
  v1::ListWebhooksResponse out;
  const bool more = static_cast<int>(ids.size()) > page.page_size;
  if (more) ids.resize(page.page_size);
  for (const auto& id : ids) {
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(org, id));
    if (hook.version == 0 || hook.tombstone) continue;
    LS_ASSIGN_OR_RETURN(*out.add_webhooks(), Present(hook));
  }
  if (more && !ids.empty()) out.set_next_page_token(codec.Make(r, p, ids.back()));
  return out;
}

namespace {

// The paths of `mask` (each once, in the mask's order) whose value `after`
// changes from `before`. event_types compare as a set: the same types in
// another order are no change, and `after` keeps the stored order.
std::vector<std::string> ChangedPaths(const v1::Webhook& before,
                                      const google::protobuf::RepeatedPtrField<std::string>& mask,
                                      v1::Webhook* after) {
  const std::set<std::string> types_before(before.event_types().begin(), before.event_types().end());
  const std::set<std::string> types_after(after->event_types().begin(), after->event_types().end());
  if (types_before == types_after) *after->mutable_event_types() = before.event_types();
  std::vector<std::string> out;
  for (const std::string& path : mask) {
    if (std::find(out.begin(), out.end(), path) != out.end()) continue;
    bool differs = false;
    if (path == "url") differs = after->url() != before.url();
    if (path == "event_types") differs = types_after != types_before;
    if (path == "description") differs = after->description() != before.description();
    if (path == "state") {
      differs = after->state() != before.state() || after->disabled_reason() != before.disabled_reason();
    }
    if (differs) out.push_back(path);
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::Webhook> WebhookManager::UpdateWebhook(const Principal& p, const v1::UpdateWebhookRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("UpdateWebhook", p, r.webhook().name()));
  LS_ASSIGN_OR_RETURN(WebhookRef ref, ParseWebhookName(r.webhook().name(), "webhook.name"));
  LS_ASSIGN_OR_RETURN(auto replay, FindReplayOf<v1::Webhook>(docs_, "UpdateWebhook", r.request_id(), r, ActorName(p)));
  if (replay) return *std::move(replay);
  static const std::set<std::string> kPaths = {"url", "event_types", "description", "state"};
  if (r.update_mask().paths().empty()) {
    return InvalidField("update_mask", "name the fields to change: url, event_types, description, state",
                        "INVALID_UPDATE_MASK");
  }
  for (const auto& path : r.update_mask().paths()) {
    if (!kPaths.count(path)) {
      return InvalidField("update_mask", absl::StrCat("cannot change \"", path.substr(0, 100),
                                                      "\"; paths: url, event_types, description, state"),
                          "INVALID_UPDATE_MASK");
    }
  }
  const v1::Webhook& in = r.webhook();
  // The masked fields' values, in the mask's order, before the webhook is
  // read (webhooks.proto: INVALID_ARGUMENT before NOT_FOUND and ABORTED):
  // a bad value is INVALID_FIELD also for a missing webhook or a stale etag.
  // After the replay check: a retry is answered as the first time, also
  // when the rules have grown stricter since (types.proto).
  for (const auto& path : r.update_mask().paths()) {
    if (path == "url") LS_RETURN_IF_ERROR(CheckWebhookUrl(in.url(), "webhook.url"));
    if (path == "event_types") {
      LS_RETURN_IF_ERROR(
          CheckWebhookEventTypes({in.event_types().begin(), in.event_types().end()}, "webhook.event_types"));
    }
    if (path == "description") LS_RETURN_IF_ERROR(CheckWebhookDescription(in.description(), "webhook.description"));
    if (path == "state" && in.state() != v1::Webhook::ENABLED && in.state() != v1::Webhook::DISABLED) {
      return InvalidField("webhook.state", "ENABLED or DISABLED");
    }
  }
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(ref.org, ref.id));
    if (hook.version == 0 || hook.tombstone) return HookNotFound(in.name());
    if (!in.etag().empty() && in.etag() != std::to_string(hook.version)) return EtagMismatch(in.name());
    v1::Webhook w = hook.webhook;
    bool reenable = false;
    bool disable = false;
    for (const auto& path : r.update_mask().paths()) {
      if (path == "url") w.set_url(in.url());
      if (path == "event_types") *w.mutable_event_types() = in.event_types();
      if (path == "description") w.set_description(in.description());
      if (path == "state") {
        // Against the stored state, not w's: a mask naming "state" twice
        // must not undo the first's disable or re-enable.
        if (in.state() == v1::Webhook::ENABLED) {
          reenable = hook.webhook.state() != v1::Webhook::ENABLED;
          w.set_state(v1::Webhook::ENABLED);
          w.clear_disabled_reason();
        } else {  // DISABLED (checked above)
          disable = hook.webhook.state() != v1::Webhook::DISABLED;
          if (disable) w.set_disabled_reason(v1::Webhook::BY_ADMIN);
          w.set_state(v1::Webhook::DISABLED);
        }
      }
    }
    const std::vector<std::string> changed = ChangedPaths(hook.webhook, r.update_mask().paths(), &w);
    if (changed.empty()) {
      // Nothing to change (as UpdateNotificationSettings): no write, no
      // event, the webhook as it is (etag and update_time unchanged); a
      // request_id still keeps that answer for its retry.
      LS_ASSIGN_OR_RETURN(v1::Webhook answer, Present(hook));
      if (r.request_id().empty()) return answer;
      Mutation m;
      m.guards.push_back({hook.key, hook.version});
      SetIdempotency(&m, "UpdateWebhook", r.request_id(), r, ActorName(p), answer);
      LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
      LS_ASSIGN_OR_RETURN(auto done, Outcome(o, std::move(answer)));
      if (!done) continue;
      return *std::move(done);
    }
    const absl::Time now = clock_->Now();
    *w.mutable_update_time() = ToProto(now);
    Mutation m;
    m.writes.push_back({hook.key, AdminFields(w).SerializeAsString(), hook.version});
    if (disable) {
      // What was queued before this commit is never sent, also when the
      // webhook is enabled again first: the off record says so to ClaimDue.
      LS_ASSIGN_OR_RETURN(auto off_doc, docs_.Get(keys::Off(ref.org, ref.id)));
      m.writes.push_back({keys::Off(ref.org, ref.id), OffData(hook.version + 1, v1::Webhook::BY_ADMIN),
                          off_doc ? off_doc->version : 0});
    }
    if (reenable) {
      // A re-enabled webhook starts counting its failures afresh.
      LS_ASSIGN_OR_RETURN(auto stats_doc, docs_.Get(keys::Stats(ref.org, ref.id)));
      v1::Webhook stats;
      if (stats_doc && !stats_doc->data.empty()) {
        LS_ASSIGN_OR_RETURN(stats, ParseAs<v1::Webhook>(stats_doc->data, keys::Stats(ref.org, ref.id)));
      }
      stats.set_consecutive_failures(0);
      m.writes.push_back({keys::Stats(ref.org, ref.id), stats.SerializeAsString(), stats_doc ? stats_doc->version : 0});
    }
    Hook after = hook;
    after.webhook = AdminFields(w);
    after.version = hook.version + 1;
    LS_ASSIGN_OR_RETURN(v1::Webhook answer, Present(after));
    if (reenable) answer.set_consecutive_failures(0);
    v1::NotifyEvent e = NewEvent(p, r.request_id());
    *e.mutable_webhook_updated()->mutable_webhook() = answer;
    for (const auto& path : changed) e.mutable_webhook_updated()->add_update_mask(path);
    SetEvent(&m, e);
    // Its queued deliveries are DEAD in the same step (dead letters, each
    // with its WebhookDeliveryDead), the first dead_on_disable_batch of
    // them; the rest in the steps after the commit.
    std::string rest;
    if (disable) {
      LS_RETURN_IF_ERROR(AddDeadOnDisable(ref.org, ref.id, hook.version + 1, /*publish=*/true,
                                          std::max(1, limits_.dead_on_disable_batch), "", &rest, &m)
                             .status());
    }
    SetIdempotency(&m, "UpdateWebhook", r.request_id(), r, ActorName(p), answer);
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    const bool applied = o.kind == CommitOutcome::Kind::kApplied;
    LS_ASSIGN_OR_RETURN(auto done, Outcome(o, std::move(answer)));
    if (!done) continue;
    if (applied && !rest.empty()) FinishDisablingOrLog(ref.org, ref.id, hook.version + 1, true);
    return *std::move(done);
  }
  return Conflict();
}

absl::StatusOr<v1::DeleteWebhookResponse> WebhookManager::DeleteWebhook(const Principal& p,
                                                                       const v1::DeleteWebhookRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("DeleteWebhook", p, r.name()));
  LS_ASSIGN_OR_RETURN(WebhookRef ref, ParseWebhookName(r.name(), "name"));
  LS_ASSIGN_OR_RETURN(auto replay, FindReplayOf<v1::DeleteWebhookResponse>(docs_, "DeleteWebhook", r.request_id(), r, ActorName(p)));
  if (replay) return *std::move(replay);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(ref.org, ref.id));
    if (hook.version == 0 || hook.tombstone) return HookNotFound(r.name());
    if (!r.etag().empty() && r.etag() != std::to_string(hook.version)) return EtagMismatch(r.name());
    LS_ASSIGN_OR_RETURN(auto secret_doc, docs_.Get(keys::Secret(ref.org, ref.id)));
    LS_ASSIGN_OR_RETURN(auto count_doc, docs_.Get(keys::Count(ref.org)));
    LS_ASSIGN_OR_RETURN(const int64_t live, LiveWebhooks(pool_, count_doc, ref.org));
    LS_ASSIGN_OR_RETURN(v1::Webhook before, Present(hook));
    Mutation m;
    m.writes.push_back({hook.key, "", hook.version});
    m.writes.push_back({keys::Count(ref.org), std::to_string(std::max<int64_t>(live - 1, 0)),
                        count_doc ? count_doc->version : 0});
    m.writes.push_back({keys::Secret(ref.org, ref.id), "", secret_doc ? secret_doc->version : 0});
    m.index_ops.push_back({keys::Org(ref.org), ref.id, /*remove=*/true});
    v1::NotifyEvent e = NewEvent(p, r.request_id());
    *e.mutable_webhook_deleted()->mutable_webhook() = before;
    SetEvent(&m, e);
    v1::DeleteWebhookResponse answer;
    SetIdempotency(&m, "DeleteWebhook", r.request_id(), r, ActorName(p), answer);
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    LS_ASSIGN_OR_RETURN(auto done, Outcome(o, std::move(answer)));
    if (done) return *std::move(done);
  }
  return Conflict();
}

absl::StatusOr<v1::RotateWebhookSecretResponse> WebhookManager::RotateWebhookSecret(
    const Principal& p, const v1::RotateWebhookSecretRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("RotateWebhookSecret", p, r.name()));
  LS_ASSIGN_OR_RETURN(WebhookRef ref, ParseWebhookName(r.name(), "name"));
  LS_ASSIGN_OR_RETURN(auto replay,
                      FindReplayOf<v1::RotateWebhookSecretResponse>(docs_, "RotateWebhookSecret", r.request_id(), r, ActorName(p)));
  if (replay) return OpenedRecord(box_, "RotateWebhookSecret", r.request_id(), *std::move(replay));
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(ref.org, ref.id));
    if (hook.version == 0 || hook.tombstone) return HookNotFound(r.name());
    if (!r.etag().empty() && r.etag() != std::to_string(hook.version)) return EtagMismatch(r.name());
    LS_ASSIGN_OR_RETURN(auto secret_doc, docs_.Get(keys::Secret(ref.org, ref.id)));
    const absl::Time now = clock_->Now();
    v1::Webhook w = hook.webhook;
    *w.mutable_secret_time() = ToProto(now);
    *w.mutable_update_time() = ToProto(now);
    const std::string secret = NewWebhookSecret();
    Hook after = hook;
    after.webhook = w;
    after.version = hook.version + 1;
    v1::RotateWebhookSecretResponse answer;
    LS_ASSIGN_OR_RETURN(*answer.mutable_webhook(), Present(after));
    answer.set_secret(secret);
    LS_ASSIGN_OR_RETURN(const std::string stored, StoredSecret(box_, keys::Secret(ref.org, ref.id), secret));
    Mutation m;
    m.writes.push_back({hook.key, w.SerializeAsString(), hook.version});
    m.writes.push_back({keys::Secret(ref.org, ref.id), stored, secret_doc ? secret_doc->version : 0});
    v1::NotifyEvent e = NewEvent(p, r.request_id());
    *e.mutable_webhook_secret_rotated()->mutable_webhook() = answer.webhook();
    SetEvent(&m, e);
    LS_ASSIGN_OR_RETURN(auto record, SealedRecord(box_, "RotateWebhookSecret", r.request_id(), answer));
    SetIdempotency(&m, "RotateWebhookSecret", r.request_id(), r, ActorName(p), record);
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    LS_ASSIGN_OR_RETURN(auto done, Outcome(o, std::move(answer)));
    if (done) return OpenedRecord(box_, "RotateWebhookSecret", r.request_id(), *std::move(done));
  }
  return Conflict();
}

absl::StatusOr<v1::ListWebhookDeliveriesResponse> WebhookManager::ListWebhookDeliveries(
    const Principal& p, const v1::ListWebhookDeliveriesRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("ListWebhookDeliveries", p, r.parent()));
  LS_ASSIGN_OR_RETURN(WebhookRef ref, ParseWebhookName(r.parent(), "parent"));
  std::set<int> states;
  for (int i = 0; i < r.states_size(); ++i) {
    const int s = r.states(i);
    if (s != v1::WebhookDelivery::PENDING && s != v1::WebhookDelivery::DELIVERED && s != v1::WebhookDelivery::DEAD) {
      return InvalidField(absl::StrCat("states[", i, "]"), "PENDING, DELIVERED or DEAD");
    }
    states.insert(s);
  }
  LS_ASSIGN_OR_RETURN(PageTokenCodec codec, PageTokens());
  LS_ASSIGN_OR_RETURN(PageRequest page, codec.Parse(r, p));
  LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(ref.org, ref.id));
  if (hook.version == 0 || hook.tombstone) return HookNotFound(r.parent());
  const bool dead_only = states.size() == 1 && *states.begin() == v1::WebhookDelivery::DEAD;
  const std::string index = dead_only ? keys::Dead(ref.org, ref.id) : keys::Dlvs(ref.org, ref.id);
  std::vector<std::pair<std::string, v1::WebhookDelivery>> found;  // (member, delivery)
  std::string after = page.after;
  const int batch = std::min(page.page_size + 1, kMaxPageSize);
  while (static_cast<int>(found.size()) <= page.page_size) {
    LS_ASSIGN_OR_RETURN(std::vector<std::string> members, docs_.IndexRange(index, after, batch));
    if (members.empty()) break;
    std::vector<std::string> dkeys;
    for (const auto& member : members) {
      dkeys.push_back(keys::Dlv(ref.org, ref.id, member.substr(member.find('|') + 1)));
    }
    LS_ASSIGN_OR_RETURN(auto docs, docs_.GetMany(dkeys));
    for (size_t i = 0; i < members.size() && static_cast<int>(found.size()) <= page.page_size; ++i) {
      if (!docs[i]) continue;
      std::string due;
      v1::WebhookDelivery d;
      if (!DecodeDelivery(docs[i]->data, &due, &d)) return Corrupt(dkeys[i]);
      if (!states.empty() && !states.count(d.state())) continue;
      found.emplace_back(members[i], std::move(d));
    }
    after = members.back();
    if (static_cast<int>(members.size()) < batch) break;
  }
  v1::ListWebhookDeliveriesResponse out;
  const bool more = static_cast<int>(found.size()) > page.page_size;
  if (more) found.resize(page.page_size);
  for (auto& [member, d] : found) *out.add_deliveries() = std::move(d);
  if (more && !found.empty()) out.set_next_page_token(codec.Make(r, p, found.back().first));
  return out;
}

absl::StatusOr<v1::WebhookDelivery> WebhookManager::ReplayWebhookDelivery(
    const Principal& p, const v1::ReplayWebhookDeliveryRequest& r) {
  LS_RETURN_IF_ERROR(ScopeOfName("ReplayWebhookDelivery", p, r.name()));
  LS_ASSIGN_OR_RETURN(DeliveryRef ref, ParseDeliveryName(r.name(), "name"));
  LS_ASSIGN_OR_RETURN(auto replay, FindReplayOf<v1::WebhookDelivery>(docs_, "ReplayWebhookDelivery", r.request_id(), r, ActorName(p)));
  if (replay) return *std::move(replay);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(ref.org, ref.id));
    if (hook.version == 0 || hook.tombstone) return HookNotFound(WebhookName(ref.org, ref.id));
    const std::string key = keys::Dlv(ref.org, ref.id, ref.d);
    LS_ASSIGN_OR_RETURN(auto doc, docs_.Get(key));
    if (!doc) {
      return MakeError(absl::StatusCode::kNotFound, "DELIVERY_NOT_FOUND", absl::StrCat(r.name(), " does not exist"),
                       {{"name", r.name()}});
    }
    std::string due;
    v1::WebhookDelivery d;
    if (!DecodeDelivery(doc->data, &due, &d)) return Corrupt(key);
    if (d.state() == v1::WebhookDelivery::PENDING) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "DELIVERY_STATE",
                       absl::StrCat(r.name(), " is still queued; only DEAD or DELIVERED deliveries are replayed"),
                       {{"state", v1::WebhookDelivery::State_Name(d.state())}});
    }
    if (hook.webhook.state() != v1::Webhook::ENABLED) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "WEBHOOK_DISABLED",
                       absl::StrCat(WebhookName(ref.org, ref.id), " is disabled; enable it first"));
    }
    const bool was_dead = d.state() == v1::WebhookDelivery::DEAD;
    const absl::Time now = clock_->Now();
    d.set_state(v1::WebhookDelivery::PENDING);
    d.set_attempts(0);
    d.set_replays(d.replays() + 1);
    *d.mutable_next_attempt_time() = ToProto(now);
    // A queued delivery is neither dead nor delivered, and what told of
    // the last attempt tells of the attempts since this replay
    // (webhooks.proto WebhookDelivery): none yet.
    d.clear_dead_time();
    d.clear_delivered_time();
    d.clear_last_error();
    d.clear_last_status_code();
    d.clear_last_attempt_time();
    const std::string member = DueMember(Ms(wall_->Now()), ref.org, ref.id, ref.d, hook.version);
    Mutation m;
    m.writes.push_back({key, EncodeDelivery(member, d), doc->version});
    m.guards.push_back({hook.key, hook.version});  // still enabled at the commit
    m.index_ops.push_back({keys::Due(), member});
    m.index_ops.push_back({keys::Pend(ref.org, ref.id), ListMember(FromProto(d.create_time()), ref.d)});
    if (was_dead) m.index_ops.push_back({keys::Dead(ref.org, ref.id), ListMember(FromProto(d.create_time()), ref.d), true});
    if (!was_dead) {
      m.index_ops.push_back({keys::Done(ref.org, ref.id), ListMember(FromProto(d.create_time()), ref.d), true});
    }
    v1::NotifyEvent e = NewEvent(p, r.request_id());
    auto* replayed = e.mutable_webhook_delivery_replayed();
    replayed->set_delivery(d.name());
    replayed->set_event_id(d.event_id());
    replayed->set_event_type(d.event_type());
    replayed->set_replays(d.replays());
    SetEvent(&m, e);
    SetIdempotency(&m, "ReplayWebhookDelivery", r.request_id(), r, ActorName(p), d);
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    LS_ASSIGN_OR_RETURN(auto done, Outcome(o, std::move(d)));
    if (done) return *std::move(done);
  }
  return Conflict();
}

// ================================================================ events

absl::StatusOr<int> WebhookManager::QueueDeliveries(const StreamEvent& entry) {
  auto decoded = DecodeWebhookEvent(entry);
  if (!decoded.ok()) {
    // Retrying cannot help an entry that does not decode: log and move on.
    LogWarning("webhooks: event skipped", {{"id", entry.stream_id}, {"error", decoded.status().ToString()}});
    return 0;
  }
  if (!*decoded) return 0;
  const WebhookEvent& event = **decoded;
  // A webhook that changed between its read and the commit (a disabling,
  // whose step made its queued deliveries DEAD) is read again.
  for (int pass = 0; pass < kAttempts; ++pass) {
    LS_ASSIGN_OR_RETURN(std::optional<int> queued, QueueDeliveriesOnce(event));
    if (queued) return *queued;
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   absl::StrCat("deliveries of event ", event.event_id, " kept changing; will retry"));
}

absl::StatusOr<std::optional<int>> WebhookManager::QueueDeliveriesOnce(const WebhookEvent& event) {
  const std::string d = DeliveryIdOf(event.event_id);
  const absl::Time now = clock_->Now();
  const int64_t due_ms = Ms(wall_->Now());
  Mutation m;
  m.idempotency_key = keys::Seen(event.event_id);
  m.fingerprint = "queued";
  for (const auto& organization : event.organizations) {
    const std::string org = organization.substr(sizeof("organizations/") - 1);
    LS_ASSIGN_OR_RETURN(std::vector<std::string> ids, docs_.IndexRange(keys::Org(org), "", 1000));
    for (const auto& id : ids) {
      LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(org, id));
      if (hook.version == 0 || hook.tombstone || hook.webhook.state() != v1::Webhook::ENABLED) continue;
      const auto& types = hook.webhook.event_types();
      if (std::find(types.begin(), types.end(), event.event_type) == types.end()) continue;
      v1::WebhookDelivery delivery;
      delivery.set_name(DeliveryName(org, id, d));
      delivery.set_event_id(event.event_id);
      delivery.set_event_type(event.event_type);
      *delivery.mutable_event_time() = ToProto(event.event_time);
      delivery.set_state(v1::WebhookDelivery::PENDING);
      *delivery.mutable_create_time() = ToProto(now);
      *delivery.mutable_next_attempt_time() = ToProto(now);
      delivery.set_body(WebhookBody(event, d, organization, hook.webhook.name()));
      const std::string member = DueMember(due_ms, org, id, d, hook.version);
      m.writes.push_back({keys::Dlv(org, id, d), EncodeDelivery(member, delivery), 0});
      m.index_ops.push_back({keys::Dlvs(org, id), ListMember(now, d)});
      m.index_ops.push_back({keys::Pend(org, id), ListMember(now, d)});
      m.index_ops.push_back({keys::Due(), member});
      // Still that version at the commit.
      m.guards.push_back({hook.key, hook.version});
    }
  }
  if (m.writes.empty()) return 0;
  // One step: the marker and every delivery. A delivery that already exists
  // (the marker expired and the entry came again) is left out.
  for (size_t round = 0; round <= m.writes.size() + 1; ++round) {
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    if (o.kind == CommitOutcome::Kind::kApplied) return static_cast<int>(m.writes.size());
    if (o.kind != CommitOutcome::Kind::kConflict) return 0;  // seen before
    auto it = std::find_if(m.writes.begin(), m.writes.end(), [&](const DocWrite& w) { return w.key == o.conflict_key; });
    if (it == m.writes.end()) return std::optional<int>();  // a webhook changed: read again
    const size_t i = static_cast<size_t>(it - m.writes.begin());
    m.writes.erase(it);
    m.index_ops.erase(m.index_ops.begin() + static_cast<std::ptrdiff_t>(3 * i),
                      m.index_ops.begin() + static_cast<std::ptrdiff_t>(3 * i + 3));
    m.guards.erase(m.guards.begin() + static_cast<std::ptrdiff_t>(i));
    if (m.writes.empty()) return 0;
  }
  return std::optional<int>();
}

// ================================================================ attempts

void WebhookManager::AddSettled(const std::string& org, const std::string& id, const std::string& d,
                                const std::string& due_member, int64_t version, v1::WebhookDelivery delivery,
                                const std::string& why, bool publish, Mutation* m) const {
  const absl::Time now = clock_->Now();
  delivery.set_state(v1::WebhookDelivery::DEAD);
  delivery.set_last_error(why);
  *delivery.mutable_dead_time() = ToProto(now);
  delivery.clear_next_attempt_time();
  const std::string member = ListMember(FromProto(delivery.create_time()), d);
  m->writes.push_back({keys::Dlv(org, id, d), EncodeDelivery("", delivery), version});
  if (!due_member.empty()) m->index_ops.push_back({keys::Due(), due_member, true});
  m->index_ops.push_back({keys::Pend(org, id), member, true});
  m->index_ops.push_back({keys::Dead(org, id), member});
  if (publish) {
    v1::NotifyEvent e = NewDeliveryEvent(delivery);
    auto* dead = e.mutable_webhook_delivery_dead();
    dead->set_delivery(delivery.name());
    dead->set_event_id(delivery.event_id());
    dead->set_event_type(delivery.event_type());
    dead->set_attempts(delivery.attempts());
    dead->set_last_error(why);
    AddEvent(m, e);
  }
}

absl::Status WebhookManager::Settle(const std::string& org, const std::string& id, const std::string& d,
                                    const std::string& due_member, int64_t version, v1::WebhookDelivery delivery,
                                    const std::string& why, bool publish) {
  Mutation m;
  AddSettled(org, id, d, due_member, version, std::move(delivery), why, publish, &m);
  LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
  (void)o;  // a conflict: someone else settled or replayed it
  return absl::OkStatus();
}

absl::StatusOr<int> WebhookManager::AddDeadOnDisable(const std::string& org, const std::string& id,
                                                     int64_t off_version, bool publish, int limit,
                                                     const std::string& skip, std::string* after,
                                                     Mutation* m) const {
  const int page = std::max(limit, 1);
  LS_ASSIGN_OR_RETURN(std::vector<std::string> members, docs_.IndexRange(keys::Pend(org, id), *after, page));
  // Fewer than a page: the index is read to its end.
  *after = static_cast<int>(members.size()) < page ? "" : members.back();
  std::vector<std::string> dkeys;
  for (const auto& member : members) dkeys.push_back(keys::Dlv(org, id, member.substr(member.find('|') + 1)));
  LS_ASSIGN_OR_RETURN(auto docs, docs_.GetMany(dkeys));
  int added = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    if (dkeys[i] == skip) continue;
    std::string due;
    v1::WebhookDelivery delivery;
    if (!docs[i] || !DecodeDelivery(docs[i]->data, &due, &delivery) ||
        delivery.state() != v1::WebhookDelivery::PENDING) {
      m->index_ops.push_back({keys::Pend(org, id), members[i], true});  // not pending: out of the index
      continue;
    }
    // Queued or replayed after the disabling (the webhook was enabled
    // again meanwhile): it stays.
    if (HookVersionOf(due) >= off_version) continue;
    AddSettled(org, id, members[i].substr(members[i].find('|') + 1), due, docs[i]->version, std::move(delivery),
               "the webhook was disabled", publish, m);
    ++added;
  }
  return added;
}

absl::StatusOr<int> WebhookManager::FinishDisabling(const std::string& org, const std::string& id,
                                                    int64_t off_version, bool publish, int max_steps) {
  int total = 0;
  std::string after;
  int conflicts = 0;
  for (int step = 0; step < max_steps; ++step) {
    std::string next = after;
    Mutation m;
    LS_ASSIGN_OR_RETURN(const int n, AddDeadOnDisable(org, id, off_version, publish,
                                                      std::max(1, limits_.dead_on_disable_batch), "", &next, &m));
    if (!m.writes.empty() || !m.index_ops.empty()) {
      LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
      if (o.kind == CommitOutcome::Kind::kConflict) {
        // One of them moved (claimed, recorded, replayed): read that part
        // again.
        if (++conflicts >= kAttempts) return Conflict();
        continue;
      }
      total += n;
    }
    if (next.empty()) return total;  // the whole index was read
    after = next;
  }
  return total;
}

void WebhookManager::FinishDisablingOrLog(const std::string& org, const std::string& id, int64_t off_version,
                                          bool publish) {
  absl::StatusOr<int> n = FinishDisabling(org, id, off_version, publish, std::numeric_limits<int>::max());
  if (!n.ok()) {
    // The disabling stands; what is left is made DEAD by ClaimDue when it
    // comes up and by SettleDisabled in the maintenance pass.
    LogWarning("webhook disabled; some queued deliveries are left for the maintenance pass",
               {{"webhook", WebhookName(org, id)}, {"error", n.status().ToString()}});
  }
}

absl::StatusOr<int> WebhookManager::SettleDisabled(int max_per_webhook) {
  int settled = 0;
  LS_RETURN_IF_ERROR(ForEachWebhook([&](const std::string& org, const std::string& id) -> absl::Status {
    LS_ASSIGN_OR_RETURN(auto off_doc, docs_.Get(keys::Off(org, id)));
    const std::optional<OffRecord> off = ParseOff(off_doc);
    if (!off) return absl::OkStatus();
    const int steps = std::max(1, max_per_webhook / std::max(1, limits_.dead_on_disable_batch));
    LS_ASSIGN_OR_RETURN(const int n, FinishDisabling(org, id, off->version, off->by_admin, steps));
    settled += n;
    return absl::OkStatus();
  }));
  return settled;
}

void WebhookManager::SecretUnreadable(const std::string& delivery_key, const absl::Status& why) {
  LogWarning("webhook delivery left due: its secret cannot be opened",
             {{"delivery", delivery_key}, {"error", why.ToString()}});
  if (metrics_ != nullptr) metrics_->WebhookSecretUnreadable();
}

absl::StatusOr<std::vector<ClaimedDelivery>> WebhookManager::ClaimDue(int limit) {
  std::vector<ClaimedDelivery> out;
  const int64_t now_ms = Ms(wall_->Now());
  // Pages through the schedule until `limit` are claimed: entries settled
  // or taken by another replica on the way do not end the search.
  std::string after;
  bool more = true;
  std::set<std::string> taken;  // a claim due at once (no lease) is seen again
  while (more && static_cast<int>(out.size()) < limit) {
    LS_ASSIGN_OR_RETURN(std::vector<std::string> members,
                        docs_.IndexRange(keys::Due(), after, std::max(limit, 10)));
    if (members.empty()) break;
    after = members.back();
    for (const auto& member : members) {
      if (static_cast<int>(out.size()) >= limit) break;
      std::vector<std::string> f = absl::StrSplit(member, '|');
      int64_t due_ms = 0;
      if ((f.size() != 4 && f.size() != 5) || !absl::SimpleAtoi(f[0], &due_ms)) {
        LS_RETURN_IF_ERROR(pool_->Command({"ZREM", keys::Due(), member}).status());
        continue;
      }
      if (due_ms > now_ms) {
        more = false;
        break;
      }
      const std::string &org = f[1], &id = f[2], &d = f[3];
      const std::string key = keys::Dlv(org, id, d);
      if (taken.count(key)) continue;
      LS_ASSIGN_OR_RETURN(auto doc, docs_.Get(key));
      std::string due;
      v1::WebhookDelivery delivery;
      if (!doc || !DecodeDelivery(doc->data, &due, &delivery) || due != member ||
          delivery.state() != v1::WebhookDelivery::PENDING) {
        // An index entry without its delivery: never attempted.
        LS_RETURN_IF_ERROR(pool_->Command({"ZREM", keys::Due(), member}).status());
        continue;
      }
      LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(org, id));
      LS_ASSIGN_OR_RETURN(auto secret_doc, docs_.Get(keys::Secret(org, id)));
      if (hook.version == 0 || hook.tombstone || !secret_doc || secret_doc->data.empty()) {
        LS_RETURN_IF_ERROR(Settle(org, id, d, member, doc->version, delivery, "the webhook was deleted", false));
        continue;
      }
      if (hook.webhook.state() != v1::Webhook::ENABLED) {
        const bool by_admin = hook.webhook.disabled_reason() != v1::Webhook::REPEATED_FAILURES;
        LS_RETURN_IF_ERROR(Settle(org, id, d, member, doc->version, delivery, "the webhook is disabled", by_admin));
        continue;
      }
      // Queued before the webhook was last disabled (and enabled again
      // since): DEAD, as if the delivery step had come while it was off.
      LS_ASSIGN_OR_RETURN(auto off_doc, docs_.Get(keys::Off(org, id)));
      const std::optional<OffRecord> off = ParseOff(off_doc);
      if (off && HookVersionOf(member) < off->version) {
        LS_RETURN_IF_ERROR(
            Settle(org, id, d, member, doc->version, delivery, "the webhook was disabled", off->by_admin));
        continue;
      }
      // Opened before the claim: a secret this process cannot open (no key,
      // another key) leaves the delivery due for a notifier that can, and is
      // counted, instead of re-leasing it for ever.
      std::string secret;
      if (box_ != nullptr) {
        absl::StatusOr<std::string> opened = box_->Open(secret_doc->data, keys::Secret(org, id));
        if (!opened.ok()) {
          SecretUnreadable(key, opened.status());
          continue;
        }
        secret = *std::move(opened);
      } else if (SecretBox::IsSealed(secret_doc->data)) {
        SecretUnreadable(key, MakeError(absl::StatusCode::kFailedPrecondition, "WEBHOOK_SECRET_SEALED",
                                        "webhook secrets are sealed but this process has no key "
                                        "(--webhook_secret_key_file)"));
        continue;
      } else {
        secret = secret_doc->data;
      }
      ClaimedDelivery c;
      c.key = key;
      c.due_member = DueMember(Ms(wall_->Now() + limits_.claim_lease), org, id, d, HookVersionOf(member));
      Mutation m;
      m.writes.push_back({key, EncodeDelivery(c.due_member, delivery), doc->version});
      m.index_ops.push_back({keys::Due(), member, true});
      m.index_ops.push_back({keys::Due(), c.due_member});
      LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
      if (o.kind != CommitOutcome::Kind::kApplied) continue;  // another replica has it
      c.version = doc->version + 1;
      c.organization = absl::StrCat("organizations/", org);
      c.org_id = org;
      c.webhook_id = id;
      c.url = hook.webhook.url();
      c.secret = std::move(secret);
      c.delivery = std::move(delivery);
      taken.insert(key);
      out.push_back(std::move(c));
    }
  }
  return out;
}

absl::Status WebhookManager::RecordAttempt(const ClaimedDelivery& c, const AttemptResult& result, double unit) {
  const std::string& org = c.org_id;
  const std::string& id = c.webhook_id;
  const std::string d = c.delivery.name().substr(c.delivery.name().rfind('/') + 1);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto doc, docs_.Get(c.key));
    if (!doc || doc->data.empty()) return absl::OkStatus();  // trimmed
    std::string due;
    v1::WebhookDelivery delivery;
    if (!DecodeDelivery(doc->data, &due, &delivery)) return Corrupt(c.key);
    bool was_dead = false;
    if (doc->version != c.version) {
      // The delivery moved on meanwhile (its lease ran out and it was
      // claimed again, or it was settled or replayed). A failure is then
      // another attempt's business; a success is never lost: the receiver
      // has the event, so the delivery is DELIVERED whatever came between.
      if (!result.ok || delivery.state() == v1::WebhookDelivery::DELIVERED) return absl::OkStatus();
      was_dead = delivery.state() == v1::WebhookDelivery::DEAD;
    }
    LS_ASSIGN_OR_RETURN(Hook hook, LoadHook(org, id));
    LS_ASSIGN_OR_RETURN(auto stats_doc, docs_.Get(keys::Stats(org, id)));
    LS_ASSIGN_OR_RETURN(auto off_doc, docs_.Get(keys::Off(org, id)));
    v1::Webhook stats;
    if (stats_doc && !stats_doc->data.empty()) {
      LS_ASSIGN_OR_RETURN(stats, ParseAs<v1::Webhook>(stats_doc->data, keys::Stats(org, id)));
    }
    const absl::Time now = clock_->Now();
    delivery.set_attempts(delivery.attempts() + 1);
    *delivery.mutable_last_attempt_time() = ToProto(now);
    delivery.set_last_status_code(result.status_code);
    delivery.set_last_error(result.error);
    *stats.mutable_last_attempt_time() = ToProto(now);
    Mutation m;
    std::string next_due;
    std::optional<v1::NotifyEvent> event;
    const bool live = hook.version > 0 && !hook.tombstone;
    if (result.ok) {
      delivery.set_state(v1::WebhookDelivery::DELIVERED);
      *delivery.mutable_delivered_time() = ToProto(now);
      delivery.clear_next_attempt_time();
      delivery.clear_dead_time();
      if (was_dead) {
        m.index_ops.push_back({keys::Dead(org, id), ListMember(FromProto(delivery.create_time()), d), true});
      }
      m.index_ops.push_back({keys::Pend(org, id), ListMember(FromProto(delivery.create_time()), d), true});
      m.index_ops.push_back({keys::Done(org, id), ListMember(FromProto(delivery.create_time()), d)});
      stats.set_consecutive_failures(0);
      stats.clear_last_error();
      *stats.mutable_last_success_time() = ToProto(now);
      event = NewDeliveryEvent(delivery);
      auto* delivered = event->mutable_webhook_delivered();
      delivered->set_delivery(delivery.name());
      delivered->set_event_id(delivery.event_id());
      delivered->set_event_type(delivery.event_type());
      delivered->set_attempts(delivery.attempts());
      delivered->set_status_code(result.status_code);
    } else {
      stats.set_consecutive_failures(stats.consecutive_failures() + 1);
      stats.set_last_error(result.error);
      const bool disable = live && hook.webhook.state() == v1::Webhook::ENABLED &&
                           stats.consecutive_failures() >= limits_.disable_after;
      if (disable || delivery.attempts() >= limits_.max_attempts) {
        delivery.set_state(v1::WebhookDelivery::DEAD);
        *delivery.mutable_dead_time() = ToProto(now);
        delivery.clear_next_attempt_time();
        m.index_ops.push_back({keys::Pend(org, id), ListMember(FromProto(delivery.create_time()), d), true});
        m.index_ops.push_back({keys::Dead(org, id), ListMember(FromProto(delivery.create_time()), d)});
        event = NewDeliveryEvent(delivery);
        if (disable) {
          v1::Webhook w = hook.webhook;
          w.set_state(v1::Webhook::DISABLED);
          w.set_disabled_reason(v1::Webhook::REPEATED_FAILURES);
          *w.mutable_update_time() = ToProto(now);
          m.writes.push_back({hook.key, w.SerializeAsString(), hook.version});
          m.writes.push_back({keys::Off(org, id), OffData(hook.version + 1, v1::Webhook::REPEATED_FAILURES),
                              off_doc ? off_doc->version : 0});
          auto* off = event->mutable_webhook_disabled();
          off->set_webhook(w.name());
          off->set_organization(c.organization);
          off->set_url(w.url());
          off->set_consecutive_failures(stats.consecutive_failures());
          off->set_last_error(result.error);
        } else {
          auto* dead = event->mutable_webhook_delivery_dead();
          dead->set_delivery(delivery.name());
          dead->set_event_id(delivery.event_id());
          dead->set_event_type(delivery.event_type());
          dead->set_attempts(delivery.attempts());
          dead->set_last_error(result.error);
        }
      } else {
        const absl::Duration delay =
            WebhookRetryDelay(delivery.attempts(), limits_.backoff_initial, limits_.backoff_max, unit);
        next_due = DueMember(Ms(wall_->Now() + delay), org, id, d, HookVersionOf(due));
        *delivery.mutable_next_attempt_time() = ToProto(now + delay);
        m.index_ops.push_back({keys::Due(), next_due});
      }
    }
    // Out of the schedule first: the new entry may be the same member.
    if (!due.empty()) m.index_ops.insert(m.index_ops.begin(), IndexOp{keys::Due(), due, true});
    m.writes.push_back({c.key, EncodeDelivery(next_due, delivery), doc->version});
    if (live) m.writes.push_back({keys::Stats(org, id), stats.SerializeAsString(), stats_doc ? stats_doc->version : 0});
    if (event) SetEvent(&m, *event);
    // The automatic disabling makes the webhook's other queued deliveries
    // DEAD in the same step (told by WebhookDisabled alone), the first
    // dead_on_disable_batch of them; the rest in the steps after it.
    const bool disabling = event && event->has_webhook_disabled();
    std::string rest;
    if (disabling) {
      LS_RETURN_IF_ERROR(AddDeadOnDisable(org, id, hook.version + 1, /*publish=*/false,
                                          std::max(1, limits_.dead_on_disable_batch), c.key, &rest, &m)
                             .status());
    }
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    if (o.kind == CommitOutcome::Kind::kApplied) {
      if (metrics_ != nullptr) {
        metrics_->WebhookDelivery(result.ok                                                 ? "delivered"
                                  : delivery.state() == v1::WebhookDelivery::DEAD ? "dead"
                                                                                            : "retry");
        if (disabling) metrics_->WebhookDisabled();
      }
      if (disabling && !rest.empty()) FinishDisablingOrLog(org, id, hook.version + 1, false);
      return absl::OkStatus();
    }
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   absl::StrCat(c.delivery.name(), " kept changing while its attempt was recorded"));
}

// KEYS: the webhook's delivery index, its dead letters, its DELIVERED ones,
// then one delivery document per ARGV member (taken from the DELIVERED
// index). A member goes (document and index entries) only when its document
// is not PENDING (its due line is empty) and it is no dead letter: both
// re-checked here, since a replay may have come in between. A member that
// fails them leaves the DELIVERED index (it is put back when delivered), so
// that it never holds up the ones after it.
const RedisScript& TrimScript() {
  static const RedisScript* script = new RedisScript(R"lua(
local removed = 0
for i = 1, #ARGV do
  local doc = KEYS[3 + i]
  local d = redis.call('HGET', doc, 'd')
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) and (not d or string.sub(d, 1, 1) == '\n') then
    redis.call('DEL', doc)
    redis.call('ZREM', KEYS[1], ARGV[i])
    removed = removed + 1
  end
  redis.call('ZREM', KEYS[3], ARGV[i])
end
return removed
)lua");
  return *script;
}

absl::StatusOr<int> WebhookManager::TrimDeliveries(int max_per_webhook) {
  const std::string cutoff = ListMember(clock_->Now() - limits_.retention, "");  // "<ms>|"
  int removed = 0;
  LS_RETURN_IF_ERROR(ForEachWebhook([&](const std::string& org, const std::string& id) -> absl::Status {
    // The DELIVERED ones only: dead letters and pending deliveries, which
    // stay, never stand in the way.
    const std::string done = keys::Done(org, id);
    LS_ASSIGN_OR_RETURN(RedisValue old, pool_->Command({"ZRANGE", done, "-", "(" + cutoff, "BYLEX", "LIMIT", "0",
                                                        std::to_string(max_per_webhook)}));
    if (old.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot trim deliveries");
    if (old.type != RedisValue::Type::kArray || old.elements.empty()) return absl::OkStatus();
    std::vector<std::string> script_keys = {keys::Dlvs(org, id), keys::Dead(org, id), done};
    std::vector<std::string> members;
    for (const auto& m : old.elements) {
      script_keys.push_back(keys::Dlv(org, id, m.str.substr(m.str.find('|') + 1)));
      members.push_back(m.str);
    }
    LS_ASSIGN_OR_RETURN(RedisValue n, pool_->Eval(TrimScript(), script_keys, members));
    if (n.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot trim deliveries");
    removed += static_cast<int>(n.integer);
    return absl::OkStatus();
  }));
  return removed;
}

absl::Status WebhookManager::ForEachWebhook(
    const std::function<absl::Status(const std::string& org, const std::string& id)>& fn) const {
  std::string after;
  while (true) {
    LS_ASSIGN_OR_RETURN(std::vector<std::string> hooks, docs_.IndexRange(keys::AllHooks(), after, 100));
    if (hooks.empty()) return absl::OkStatus();
    after = hooks.back();
    for (const auto& hook : hooks) {
      std::vector<std::string> f = absl::StrSplit(hook, '|');
      if (f.size() != 2) continue;
      LS_RETURN_IF_ERROR(fn(f[0], f[1]));
    }
  }
}

absl::StatusOr<int> WebhookManager::SealClearSecrets() {
  if (box_ == nullptr) return 0;
  int sealed = 0;
  LS_RETURN_IF_ERROR(ForEachWebhook([&](const std::string& org, const std::string& id) -> absl::Status {
    const std::string key = keys::Secret(org, id);
    LS_ASSIGN_OR_RETURN(std::optional<StoredDoc> doc, docs_.Get(key));
    if (!doc || doc->data.empty() || SecretBox::IsSealed(doc->data)) return absl::OkStatus();
    LS_ASSIGN_OR_RETURN(const std::string stored, box_->Seal(doc->data, key));
    Mutation m;
    m.writes.push_back({key, stored, doc->version});
    LS_ASSIGN_OR_RETURN(CommitOutcome o, docs_.Commit(m));
    if (o.kind == CommitOutcome::Kind::kApplied) ++sealed;
    return absl::OkStatus();
  }));
  return sealed;
}

absl::Status WebhookManager::CheckSecretKey() {
  constexpr char kCheck[] = "labshare webhook secret key check";
  const std::string key = keys::KeyCheck();
  if (box_ != nullptr) {
    LS_ASSIGN_OR_RETURN(const std::string sealed, box_->Seal(kCheck, key));
    LS_RETURN_IF_ERROR(pool_->Command({"SET", key, sealed, "NX"}).status());
    LS_ASSIGN_OR_RETURN(RedisValue stored, pool_->Command({"GET", key}));
    absl::StatusOr<std::string> opened = box_->Open(stored.str, key);
    if (stored.is_nil() || !opened.ok() || *opened != kCheck) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "WEBHOOK_SECRET_KEY_MISMATCH",
                       "--webhook_secret_key_file is not the key the webhook secrets were sealed with");
    }
    return absl::OkStatus();
  }
  const absl::Status sealed = MakeError(absl::StatusCode::kFailedPrecondition, "WEBHOOK_SECRET_SEALED",
                                        "webhook secrets are sealed but this process has no key "
                                        "(--webhook_secret_key_file)");
  LS_ASSIGN_OR_RETURN(RedisValue check, pool_->Command({"EXISTS", key}));
  if (check.integer > 0) return sealed;
  return ForEachWebhook([&](const std::string& org, const std::string& id) -> absl::Status {
    LS_ASSIGN_OR_RETURN(std::optional<StoredDoc> doc, docs_.Get(keys::Secret(org, id)));
    if (doc && SecretBox::IsSealed(doc->data)) return sealed;
    return absl::OkStatus();
  });
}

}  // namespace labshare::notify
