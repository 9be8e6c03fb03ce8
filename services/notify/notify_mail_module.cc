#include "services/notify/notify_mail_module.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/input_limits.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "common/time_zone.h"
#include "labshare/notify/v1/notify_events.pb.h"

namespace labshare::notify {
namespace {

constexpr char kDomain[] = "notify.labshare";
constexpr char kService[] = "/labshare.notify.v1.NotificationService/";

std::string M(const char* method) { return absl::StrCat(kService, method); }

std::string Ms(absl::Time t) { return absl::StrCat(absl::ToUnixMillis(t)); }

std::string UserId(absl::string_view name) { return std::string(absl::StripPrefix(name, "users/")); }

// The next `hour`:00 in `zone` strictly after `now`.
absl::Time NextLocalHour(absl::Time now, absl::TimeZone zone, int hour) {
  const absl::CivilDay day = absl::ToCivilDay(now, zone);
  absl::Time t = absl::FromCivil(absl::CivilHour(day.year(), day.month(), day.day(), hour), zone);
  if (t <= now) t = absl::FromCivil(absl::CivilHour((day + 1).year(), (day + 1).month(), (day + 1).day(), hour), zone);
  return t;
}

std::string RandomHex(int bytes) {
  std::string b(static_cast<size_t>(bytes), '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(b.data()), bytes);
  return absl::BytesToHexString(b);
}

// An unsubscribe token's signature: 128 bits, 32 hex digits on the link.
constexpr size_t kUnsubscribeMacBytes = 16;
// Of an Unsubscribe call's deadline, what the organisation lookup leaves
// for the write and the answer.
constexpr absl::Duration kActorLookupMargin = absl::Milliseconds(500);

std::string Hmac(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), kUnsubscribeMacBytes);
}

v1::NotificationSettings SettingsProto(const std::string& user_id, const Fields& f) {
  v1::NotificationSettings s;
  s.set_name(absl::StrCat("users/", user_id, "/notificationSettings"));
  auto get = [&](const char* k) {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
  };
  s.set_language(get("language"));
  s.set_time_zone(get("time_zone"));
  int delivery = 0;
  (void)absl::SimpleAtoi(get("delivery"), &delivery);
  s.set_delivery(static_cast<v1::NotificationSettings::Delivery>(delivery));
  for (absl::string_view k : absl::StrSplit(get("disabled"), ',', absl::SkipEmpty())) {
    Kind kind;
    if (ParseKind(k, &kind)) s.add_disabled_kinds(kind);
  }
  s.set_etag(get("etag"));
  int64_t ms = 0;
  if (absl::SimpleAtoi(get("update_ms"), &ms)) *s.mutable_update_time() = ToProto(absl::FromUnixMillis(ms));
  return s;
}

Fields SettingsFields(const v1::NotificationSettings& s, absl::Time now) {
  Fields f;
  f["language"] = s.language();
  f["time_zone"] = s.time_zone();
  f["delivery"] = absl::StrCat(static_cast<int>(s.delivery()));
  std::vector<std::string> kinds;
  for (int k : s.disabled_kinds()) kinds.push_back(KindName(static_cast<Kind>(k)));
  std::sort(kinds.begin(), kinds.end());
  kinds.erase(std::unique(kinds.begin(), kinds.end()), kinds.end());
  f["disabled"] = absl::StrJoin(kinds, ",");
  f["etag"] = RandomHex(8);
  f["update_ms"] = Ms(now);
  return f;
}

// Whether two settings say the same (etag and update_time aside; the
// disabled kinds as a set; DELIVERY_UNSPECIFIED is IMMEDIATE).
bool SameSettings(v1::NotificationSettings a, v1::NotificationSettings b) {
  for (v1::NotificationSettings* s : {&a, &b}) {
    if (s->delivery() == v1::NotificationSettings::DELIVERY_UNSPECIFIED) {
      s->set_delivery(v1::NotificationSettings::IMMEDIATE);
    }
  }
  Fields fa = SettingsFields(a, absl::UnixEpoch());
  Fields fb = SettingsFields(b, absl::UnixEpoch());
  fa.erase("etag");
  fb.erase("etag");
  return fa == fb;
}

absl::Status InvalidName(const std::string& field, const std::string& what) {
  return InvalidField(field, absl::StrCat("must be ", what), "INVALID_NAME");
}

// ------------------------------------------------------------------ service

class NotificationServiceImpl final : public v1::NotificationService::Service {
 public:
  NotificationServiceImpl(MailModule* module, const Authorizer* auth) : m_(module), auth_(auth) {}

  grpc::Status GetNotificationSettings(grpc::ServerContext* ctx, const v1::GetNotificationSettingsRequest* req,
                                       v1::NotificationSettings* resp) override {
    return ToGrpcStatus(Get(ctx, *req, resp), kDomain);
  }
  grpc::Status UpdateNotificationSettings(grpc::ServerContext* ctx, const v1::UpdateNotificationSettingsRequest* req,
                                          v1::NotificationSettings* resp) override {
    return ToGrpcStatus(Update(ctx, *req, resp), kDomain);
  }
  grpc::Status Unsubscribe(grpc::ServerContext* ctx, const v1::UnsubscribeRequest* req,
                           v1::UnsubscribeResponse* resp) override {
    return ToGrpcStatus(DoUnsubscribe(ctx, *req, resp), kDomain);
  }
  grpc::Status ListDeadLetters(grpc::ServerContext* ctx, const v1::ListDeadLettersRequest* req,
                               v1::ListDeadLettersResponse* resp) override {
    return ToGrpcStatus(List(ctx, *req, resp), kDomain);
  }
  grpc::Status ReplayDeadLetter(grpc::ServerContext* ctx, const v1::ReplayDeadLetterRequest* req,
                                v1::DeadLetter* resp) override {
    return ToGrpcStatus(Replay(ctx, *req, resp), kDomain);
  }

 private:
  absl::StatusOr<std::string> SettingsUser(const std::string& method, const Principal& p, const std::string& name,
                                           const std::string& field) {
    std::vector<std::string> parts = absl::StrSplit(name, '/');
    // The {user} segment is an id as everywhere ([a-z0-9][a-z0-9-]{0,62}),
    // checked with the shape as the feed and webhook names are.
    if (parts.size() != 3 || parts[0] != "users" || !ValidResourceId(parts[1]) ||
        parts[2] != "notificationSettings") {
      return InvalidName(field, "\"users/{user}/notificationSettings\"");
    }
    ScopeFacts facts;
    facts.user = "users/" + parts[1];
    LS_RETURN_IF_ERROR(auth_->policy().CheckScope(method, p, facts));
    return parts[1];
  }

  absl::Status Get(grpc::ServerContext* ctx, const v1::GetNotificationSettingsRequest& req,
                   v1::NotificationSettings* resp) {
    LS_ASSIGN_OR_RETURN(Principal p, auth_->Authorize(ctx));
    LS_RETURN_IF_ERROR(CheckInputRanges(req));  // types.proto: numbers first
    LS_ASSIGN_OR_RETURN(std::string user, SettingsUser(M("GetNotificationSettings"), p, req.name(), "name"));
    LS_ASSIGN_OR_RETURN(Fields f, m_->queue().Settings(user));
    *resp = SettingsProto(user, f);
    return absl::OkStatus();
  }

  absl::Status Update(grpc::ServerContext* ctx, const v1::UpdateNotificationSettingsRequest& req,
                      v1::NotificationSettings* resp) {
    LS_ASSIGN_OR_RETURN(Principal p, auth_->Authorize(ctx));
    LS_RETURN_IF_ERROR(CheckInputRanges(req));  // types.proto: numbers first
    LS_ASSIGN_OR_RETURN(std::string user,
                        SettingsUser(M("UpdateNotificationSettings"), p, req.settings().name(), "settings.name"));
    std::set<std::string> mask(req.update_mask().paths().begin(), req.update_mask().paths().end());
    if (mask.empty()) mask = {"language", "time_zone", "delivery", "disabled_kinds"};
    for (const std::string& path : mask) {
      if (path != "language" && path != "time_zone" && path != "delivery" && path != "disabled_kinds") {
        return InvalidField("update_mask", absl::StrCat("unknown field \"", path,
                                                        "\"; settable: language, time_zone, delivery, disabled_kinds"));
      }
    }
    const v1::NotificationSettings& in = req.settings();
    if (mask.count("language") && !in.language().empty() && in.language() != "zh-CN" && in.language() != "en") {
      return InvalidField("settings.language", "must be \"zh-CN\" or \"en\" (or empty for the default)");
    }
    absl::TimeZone zone;
    if (mask.count("time_zone") && !in.time_zone().empty() && !LoadIanaTimeZone(in.time_zone(), &zone)) {
      return InvalidField("settings.time_zone",
                          "must be a zone of the IANA tz database such as \"Asia/Shanghai\" (or empty for the default)");
    }
    if (mask.count("delivery") && !v1::NotificationSettings::Delivery_IsValid(in.delivery())) {
      return InvalidField("settings.delivery", "must be IMMEDIATE or DAILY_DIGEST");
    }
    if (mask.count("disabled_kinds")) {
      for (int k : in.disabled_kinds()) {
        const Kind kind = static_cast<Kind>(k);
        if (IsLegalNotice(kind)) {
          return InvalidField("settings.disabled_kinds",
                              absl::StrCat(KindName(kind), " is a legal notice and cannot be turned off"),
                              "LEGAL_NOTICE_REQUIRED");
        }
        if (!v1::NotificationKind_IsValid(k) || kind == v1::NOTIFICATION_KIND_UNSPECIFIED || kind == v1::DIGEST) {
          return InvalidField("settings.disabled_kinds", "must name notification kinds");
        }
      }
    }
    const std::string fingerprint = RequestFingerprint(M("UpdateNotificationSettings"), req);
    for (int attempt = 0;; ++attempt) {
      LS_ASSIGN_OR_RETURN(Fields current, m_->queue().Settings(user));
      const v1::NotificationSettings before = SettingsProto(user, current);
      v1::NotificationSettings after = before;
      if (mask.count("language")) after.set_language(in.language());
      if (mask.count("time_zone")) after.set_time_zone(in.time_zone());
      if (mask.count("delivery")) after.set_delivery(in.delivery());
      if (mask.count("disabled_kinds")) *after.mutable_disabled_kinds() = in.disabled_kinds();
      // Nothing to change (as inventory's updates): no write, no event, the
      // etag as it was; a request_id still keeps the answer.
      if (SameSettings(before, after)) {
        std::string replayed;
        LS_ASSIGN_OR_RETURN(const bool fresh,
                            m_->queue().FindRequest(ActorName(p), req.request_id(), fingerprint, &replayed));
        if (fresh && !in.etag().empty() && in.etag() != before.etag()) {
          return MakeError(absl::StatusCode::kFailedPrecondition, "ETAG_MISMATCH",
                           "the settings changed since they were read; read them again");
        }
        if (fresh) {
          LS_ASSIGN_OR_RETURN(const bool kept, m_->queue().KeepRequest(ActorName(p), req.request_id(), fingerprint,
                                                                       before.SerializeAsString(), &replayed));
          if (kept) {
            *resp = before;
            return absl::OkStatus();
          }
        }
        if (!replayed.empty() && resp->ParseFromString(replayed)) return absl::OkStatus();
        *resp = before;
        return absl::OkStatus();
      }
      const Fields fields = SettingsFields(after, m_->context().clock->Now());
      after = SettingsProto(user, fields);
      v1::NotifyEvent ev;
      *ev.mutable_notification_settings_changed()->mutable_settings() = after;
      if (!before.etag().empty()) *ev.mutable_notification_settings_changed()->mutable_previous() = before;
      const std::string payload =
          NotifyEventPayload(ev, m_->context().clock->Now(), ActorName(p), req.request_id(),
                             ActorOrganization(p), p.trace_id);
      std::string replayed;
      auto put = m_->queue().PutSettings(user, fields, before.etag(), ActorName(p), req.request_id(), fingerprint,
                                         payload, in.etag(), after.SerializeAsString(), &replayed);
      if (!put.ok() && ErrorReason(put.status()) == "CONCURRENT_MODIFICATION" && attempt < 5) continue;
      LS_RETURN_IF_ERROR(put.status());
      if (!*put) {
        // A retry: the first answer (records from before answers were
        // kept: the settings as they are now).
        if (!replayed.empty() && resp->ParseFromString(replayed)) return absl::OkStatus();
        LS_ASSIGN_OR_RETURN(Fields now, m_->queue().Settings(user));
        *resp = SettingsProto(user, now);
      } else {
        *resp = after;
      }
      return absl::OkStatus();
    }
  }

  absl::Status DoUnsubscribe(grpc::ServerContext* ctx, const v1::UnsubscribeRequest& req,
                             v1::UnsubscribeResponse* resp) {
    LS_ASSIGN_OR_RETURN(Principal p, auth_->Authorize(ctx));
    LS_RETURN_IF_ERROR(CheckInputRanges(req));  // types.proto: numbers first
    if (req.token().empty() || req.token().size() > 512 || req.token().find('.') == std::string::npos) {
      return InvalidField("token", "must be the token of a mail's unsubscribe link");
    }
    std::string user;
    Kind kind;
    // The key unreadable (Redis down) is UNAVAILABLE, not a bad link.
    LS_ASSIGN_OR_RETURN(MailModule::TokenCheck check, m_->CheckUnsubscribeToken(req.token(), &user, &kind));
    if (check == MailModule::TokenCheck::kMalformed) {
      return InvalidField("token", "is not the token of a mail's unsubscribe link (base64url, '.', 32 hex digits)");
    }
    if (check == MailModule::TokenCheck::kInvalid || IsLegalNotice(kind)) {
      return MakeError(absl::StatusCode::kNotFound, "UNSUBSCRIBE_TOKEN_NOT_FOUND",
                       "this unsubscribe link is not valid; change your notification settings in the console");
    }
    resp->set_user("users/" + user);
    resp->set_kind(kind);
    // The request record is the token's user's (types.proto: a retry with
    // the same request_id answers the first answer; other content under it
    // is REQUEST_ID_REUSED), kept like UpdateNotificationSettings' own.
    const std::string actor = "users/" + user;
    const std::string fingerprint = RequestFingerprint(M("Unsubscribe"), req);
    auto first_answer = [&](const std::string& replayed) {
      v1::UnsubscribeResponse first;
      if (!replayed.empty() && first.ParseFromString(replayed)) *resp = first;
      return absl::OkStatus();
    };
    if (check == MailModule::TokenCheck::kExpired) {
      // The retry of a click made before the expiry answers its first
      // answer (the kind was turned off); any other use is expired.
      std::string replayed;
      absl::StatusOr<bool> fresh = req.validate_only() ? true
                                   : m_->queue().FindRequest(actor, req.request_id(), fingerprint, &replayed);
      if (!fresh.ok() && ErrorReason(fresh.status()) != "REQUEST_ID_REUSED") return fresh.status();
      if (fresh.ok() && !*fresh) return first_answer(replayed);
      return MakeError(absl::StatusCode::kNotFound, "UNSUBSCRIBE_TOKEN_EXPIRED",
                       "this unsubscribe link has expired; change your notification settings in the console");
    }
    if (req.validate_only()) return absl::OkStatus();
    // The user's organisation, for the event: asked once (when there is a
    // change to write, not again on a retried attempt), and only for what
    // is left of the call's deadline less a margin, so that the answer is
    // not late for it (notify.proto: empty when inventory does not answer
    // within the call's deadline).
    const absl::Time lookup_deadline = absl::FromChrono(ctx->deadline()) - kActorLookupMargin;
    std::optional<std::string> actor_organization;
    for (int attempt = 0;; ++attempt) {
      LS_ASSIGN_OR_RETURN(Fields current, m_->queue().Settings(user));
      const v1::NotificationSettings before = SettingsProto(user, current);
      if (std::find(before.disabled_kinds().begin(), before.disabled_kinds().end(), kind) !=
          before.disabled_kinds().end()) {
        resp->set_changed(false);
        std::string replayed;
        LS_ASSIGN_OR_RETURN(const bool kept, m_->queue().KeepRequest(actor, req.request_id(), fingerprint,
                                                                     resp->SerializeAsString(), &replayed));
        if (!kept) return first_answer(replayed);
        return absl::OkStatus();
      }
      v1::NotificationSettings after = before;
      after.add_disabled_kinds(kind);
      const Fields fields = SettingsFields(after, m_->context().clock->Now());
      after = SettingsProto(user, fields);
      v1::NotifyEvent ev;
      *ev.mutable_notification_settings_changed()->mutable_settings() = after;
      if (!before.etag().empty()) *ev.mutable_notification_settings_changed()->mutable_previous() = before;
      if (!actor_organization) actor_organization = ActorOrganizationOf(actor, lookup_deadline);
      const std::string payload = NotifyEventPayload(ev, m_->context().clock->Now(), actor, req.request_id(),
                                                     *actor_organization, p.trace_id);
      v1::UnsubscribeResponse answer = *resp;
      answer.set_changed(true);
      std::string replayed;
      auto put = m_->queue().PutSettings(user, fields, before.etag(), actor, req.request_id(), fingerprint, payload, "",
                                         answer.SerializeAsString(), &replayed);
      if (!put.ok() && ErrorReason(put.status()) == "CONCURRENT_MODIFICATION" && attempt < 5) continue;
      LS_RETURN_IF_ERROR(put.status());
      if (!*put) return first_answer(replayed);
      *resp = answer;
      return absl::OkStatus();
    }
  }

  // The organisation of the user acting without a LabShare token (the
  // unsubscribe link's), for EventHeader.actor_organization: inventory's
  // answer; none for a user it does not know, and none (logged) when it
  // does not answer by `deadline` (the call's, less a margin): an
  // unsubscribe is not refused, nor answered late, because inventory is
  // away.
  std::string ActorOrganizationOf(const std::string& user, absl::Time deadline) {
    absl::StatusOr<Person> person = m_->people().UserWithin(user, deadline);
    if (person.ok()) return person->organization;
    if (!absl::IsNotFound(person.status())) {
      LogWarning("notify: the unsubscribing user's organisation is unknown; its event names none",
                 {{"user", user}, {"error", person.status().ToString()}});
    }
    return "";
  }

  absl::Status List(grpc::ServerContext* ctx, const v1::ListDeadLettersRequest& req,
                    v1::ListDeadLettersResponse* resp) {
    LS_ASSIGN_OR_RETURN(Principal p, auth_->Authorize(ctx));
    // types.proto: numbers and enums first (a reason that is no
    // DeadLetter.Reason is INVALID_FIELD there), then the organisation
    // scope before every other check: the page token after it.
    LS_RETURN_IF_ERROR(CheckInputRanges(req));
    const unsigned scopes = auth_->policy().ScopesOf(M("ListDeadLetters"), p);
    const std::string org = (scopes & kScopeAny) != 0 ? "" : ActorOrganization(p);
    if ((scopes & kScopeAny) == 0 && org.empty()) {
      return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                       "only the dead letters of your own organisation");
    }
    if (!v1::DeadLetter::Reason_IsValid(req.reason())) {
      return InvalidField("reason", "must be a DeadLetter.Reason");
    }
    LS_ASSIGN_OR_RETURN(PageTokenCodec codec, m_->PageTokens());
    LS_ASSIGN_OR_RETURN(PageRequest page, codec.Parse(req, p));
    LS_ASSIGN_OR_RETURN(auto rows, m_->queue().ListDead(page.after, page.page_size, org, req.reason()));
    for (size_t i = 0; i < rows.size() && static_cast<int>(i) < page.page_size; ++i) {
      *resp->add_dead_letters() = DeadLetterFromFields(rows[i].id, rows[i].fields);
    }
    if (static_cast<int>(rows.size()) > page.page_size) {
      resp->set_next_page_token(codec.Make(req, p, rows[static_cast<size_t>(page.page_size) - 1].cursor));
    }
    return absl::OkStatus();
  }

  absl::Status Replay(grpc::ServerContext* ctx, const v1::ReplayDeadLetterRequest& req, v1::DeadLetter* resp) {
    LS_ASSIGN_OR_RETURN(Principal p, auth_->Authorize(ctx));
    LS_RETURN_IF_ERROR(CheckInputRanges(req));  // types.proto: numbers first
    // Then the scope, as ListDeadLetters: a caller limited to its own
    // organisation who has none may replay nothing, whatever the name.
    if ((auth_->policy().ScopesOf(M("ReplayDeadLetter"), p) & kScopeAny) == 0 && ActorOrganization(p).empty()) {
      return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                       "only the dead letters of your own organisation");
    }
    // A message id is one the service makes (lowercase hex, or a digest's
    // "dg-{user}-{due ms}", longer than a resource id for a long user id):
    // a name with other characters names no message and is malformed, not
    // unknown.
    std::vector<std::string> parts = absl::StrSplit(req.name(), '/');
    if (parts.size() != 2 || parts[0] != "deadLetters" || !ValidMessageId(parts[1])) {
      return InvalidName("name",
                         "\"deadLetters/{message}\" (message: [a-z0-9][a-z0-9-]{0,62}, or dg-{user}-{digits})");
    }
    // Scoped by the message's organisation each time the step loads it. A
    // message that is gone (never was, or removed after the retention) has
    // none: the step answers DEAD_LETTER_NOT_FOUND, or the first answer to
    // the retry of a replay made before it went (the request record is the
    // caller's own).
    auto allowed = [&](const Fields& f) {
      ScopeFacts facts;
      facts.parties = {f.count("org") ? f.at("org") : ""};
      return auth_->policy().CheckScope(M("ReplayDeadLetter"), p, facts);
    };
    LS_ASSIGN_OR_RETURN(*resp, m_->queue().Replay(parts[1], ActorName(p), req.request_id(),
                                                  m_->context().wall->Now(), m_->context().clock->Now(),
                                                  ActorOrganization(p), allowed, p.trace_id));
    return absl::OkStatus();
  }

  MailModule* m_;
  const Authorizer* auth_;
};

}  // namespace

const MethodPolicy& MailPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    auto* p = new MethodPolicy();
    for (const char* m : {"GetNotificationSettings", "UpdateNotificationSettings"}) {
      p->Allow(M(m), {Role::kLabUser, Role::kFacilityStaff, Role::kMemberBillingAdmin, Role::kAuditor}, kScopeSelf);
      p->Allow(M(m), {Role::kConsortiumAdmin}, kScopeAny);
    }
    p->AllowUnauthenticated(M("Unsubscribe"));
    for (const char* m : {"ListDeadLetters", "ReplayDeadLetter"}) {
      p->Allow(M(m), {Role::kConsortiumAdmin}, kScopeAny);
      p->Allow(M(m), {Role::kFacilityStaff}, kScopeParty);
    }
    return p;
  }();
  return *kPolicy;
}

MailModule::MailModule(const NotifyContext& context, MailOptions options, std::unique_ptr<People> people)
    : context_(context),
      options_(std::move(options)),
      people_(std::move(people)),
      queue_(context.redis, context.metrics) {
  if (people_ == nullptr) people_ = InventoryPeople(context_.inventory, context_.wall, options_.people_cache_ttl);
}

MailModule::~MailModule() { Stop(); }

void MailModule::AddPolicy(MethodPolicy* policy) {
  for (const auto& [method, roles] : MailPolicy().rules()) {
    for (const auto& [role, scope] : roles) policy->Allow(method, {role}, scope);
  }
  policy->AllowUnauthenticated(M("Unsubscribe"));
}

std::vector<grpc::Service*> MailModule::Services(const Authorizer* authorizer) {
  service_ = std::make_unique<NotificationServiceImpl>(this, authorizer);
  return {service_.get()};
}

void MailModule::AddConsumers(ConsumerLoop* loop) {
  for (const std::string& stream : context_.streams) {
    ConsumerOptions o;
    o.stream = stream;
    o.group = kMailGroup;
    o.consumer = context_.consumer;
    o.block = absl::ZeroDuration();
    o.reclaim_idle = absl::Seconds(10);
    consumers_.push_back(std::make_unique<EventConsumer>(context_.redis, o));
    loop->Add(consumers_.back().get(), [this](const StreamEvent& e) { return HandleEvent(e); });
  }
}

absl::StatusOr<PageTokenCodec> MailModule::PageTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!page_tokens_.has_value()) {
    LS_ASSIGN_OR_RETURN(PageTokenCodec codec, PageTokenCodec::FromRedis(context_.redis, "{notify}", absl::Seconds(2)));
    page_tokens_.emplace(std::move(codec));
  }
  return *page_tokens_;
}

absl::StatusOr<std::string> MailModule::UnsubscribeKey() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!unsub_key_.empty()) return unsub_key_;
  }
  LS_ASSIGN_OR_RETURN(std::string key, queue_.UnsubscribeKey());
  std::lock_guard<std::mutex> lock(mu_);
  unsub_key_ = key;
  return unsub_key_;
}

absl::StatusOr<std::string> MailModule::UnsubscribeToken(const std::string& user_id, Kind kind) {
  LS_ASSIGN_OR_RETURN(std::string key, UnsubscribeKey());
  // "<user>:<kind>:<expiry, unix seconds on the domain clock>", signed.
  const int64_t expiry = absl::ToUnixSeconds(context_.clock->Now() + options_.unsubscribe_validity);
  const std::string payload = absl::StrCat(user_id, ":", KindName(kind), ":", expiry);
  return absl::StrCat(absl::WebSafeBase64Escape(payload), ".", absl::BytesToHexString(Hmac(key, payload)));
}

absl::StatusOr<MailModule::TokenCheck> MailModule::CheckUnsubscribeToken(const std::string& token,
                                                                         std::string* user_id, Kind* kind) {
  // The form a link's token has, judged before anything is read (the key
  // out of reach does not turn a malformed token into a retry): base64url
  // without padding (nothing outside [A-Za-z0-9_-]: the decoder would skip
  // whitespace), '.', 32 lower-case hex digits. A malformed token is
  // INVALID_FIELD whatever its first part.
  std::pair<std::string, std::string> parts = absl::StrSplit(token, absl::MaxSplits('.', 1));
  const auto base64url = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  };
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  std::string payload;
  if (parts.first.empty() || !std::all_of(parts.first.begin(), parts.first.end(), base64url) ||
      !absl::WebSafeBase64Unescape(parts.first, &payload)) {
    return TokenCheck::kMalformed;
  }
  if (parts.second.size() != 2 * kUnsubscribeMacBytes || !std::all_of(parts.second.begin(), parts.second.end(), hex)) {
    return TokenCheck::kMalformed;
  }
  LS_ASSIGN_OR_RETURN(std::string key, UnsubscribeKey());
  const std::string want = absl::BytesToHexString(Hmac(key, payload));
  // Well-formed; only the form the link was made with (spare low bits of
  // the final character altered decode the same payload), else a forged
  // link.
  if (absl::WebSafeBase64Escape(payload) != parts.first) return TokenCheck::kInvalid;
  if (CRYPTO_memcmp(parts.second.data(), want.data(), want.size()) != 0) return TokenCheck::kInvalid;
  std::vector<std::string> f = absl::StrSplit(payload, ':');
  if (f.size() < 2 || f.size() > 3 || f[0].empty() || !ParseKind(f[1], kind)) return TokenCheck::kInvalid;
  *user_id = f[0];
  absl::Time expiry;
  if (f.size() == 3) {
    int64_t s = 0;
    if (!absl::SimpleAtoi(f[2], &s)) return TokenCheck::kInvalid;
    expiry = absl::FromUnixSeconds(s);
  } else {
    // Made before tokens carried an expiry: valid for one validity from
    // the first time this version read its key, then expired.
    LS_ASSIGN_OR_RETURN(expiry, LegacyUnsubscribeExpiry());
  }
  return context_.clock->Now() < expiry ? TokenCheck::kValid : TokenCheck::kExpired;
}

absl::StatusOr<bool> MailModule::ParseUnsubscribeToken(const std::string& token, std::string* user_id, Kind* kind) {
  LS_ASSIGN_OR_RETURN(TokenCheck c, CheckUnsubscribeToken(token, user_id, kind));
  return c == TokenCheck::kValid;
}

absl::StatusOr<absl::Time> MailModule::LegacyUnsubscribeExpiry() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (legacy_unsub_expiry_.has_value()) return *legacy_unsub_expiry_;
  }
  LS_ASSIGN_OR_RETURN(absl::Time t,
                      queue_.LegacyUnsubscribeExpiry(context_.clock->Now() + options_.unsubscribe_validity));
  std::lock_guard<std::mutex> lock(mu_);
  legacy_unsub_expiry_ = t;
  return t;
}

absl::StatusOr<MailModule::EffectiveSettings> MailModule::SettingsOf(const std::string& user_id,
                                                                     const std::string& fallback_zone) {
  EffectiveSettings s;
  LS_ASSIGN_OR_RETURN(s.raw, queue_.Settings(user_id));
  const v1::NotificationSettings p = SettingsProto(user_id, s.raw);
  s.language = p.language().empty() ? options_.default_language : p.language();
  // The user's zone, else the facility's, else --default_time_zone (all
  // IANA names; one stored before names were checked as such, "localtime",
  // counts as none).
  s.zone_name = "UTC";
  s.zone = absl::UTCTimeZone();
  const std::string* const names[] = {&p.time_zone(), &fallback_zone, &options_.default_time_zone};
  for (const std::string* name : names) {
    absl::TimeZone zone;
    if (LoadIanaTimeZone(*name, &zone)) {
      s.zone_name = *name;
      s.zone = zone;
      break;
    }
  }
  s.digest = p.delivery() == v1::NotificationSettings::DAILY_DIGEST;
  for (int k : p.disabled_kinds()) s.disabled.push_back(static_cast<Kind>(k));
  return s;
}

absl::Status MailModule::HandleEvent(const StreamEvent& e) {
  auto interpretation = Interpret(e, options_.interpret);
  if (!interpretation.ok()) {
    LogWarning("notify: an outbox entry that does not parse was skipped",
               {{"type", e.type}, {"entry", e.stream_id}});
    return absl::OkStatus();
  }
  const absl::Time now = context_.clock->Now();
  std::vector<std::pair<std::string, absl::Time>> add;
  for (const Schedule& s : SchedulesToApply(*interpretation, now, options_.schedule_grace, options_.max_event_age)) {
    add.emplace_back(s.member, s.fire);
  }
  LS_RETURN_IF_ERROR(
      queue_.ApplySchedule(interpretation->event_id, e, add, interpretation->unschedule, interpretation->version));
  if (options_.max_event_age > absl::ZeroDuration() && interpretation->event_time != absl::InfinitePast() &&
      interpretation->event_time < now - options_.max_event_age) {
    return absl::OkStatus();  // history, not news
  }
  for (const Notice& n : interpretation->notices) LS_RETURN_IF_ERROR(Deliver(n, interpretation->event_id));
  return absl::OkStatus();
}

absl::Status MailModule::Deliver(const Notice& event_notice, const std::string& event_id) {
  Notice notice = event_notice;
  // Who did it, as inventory has the person now (their role and
  // organisation); the event's account when inventory does not know them.
  // Inventory unreachable fails the event, which is redelivered.
  if (!notice.by_actor.empty()) {
    auto actor = people_->User(notice.by_actor);
    if (actor.ok()) {
      notice.text["by_role"] = ByRole(actor->roles);
      if (!actor->organization.empty()) notice.names["by_org"] = actor->organization;
    } else if (!absl::IsNotFound(actor.status()) && !absl::IsInvalidArgument(actor.status())) {
      return actor.status();
    }
  }
  // A lookup that can never succeed (no such user or organisation, or a
  // name inventory refuses) is nobody: logged, never retried. Anything else
  // (inventory unreachable) fails the event, which is redelivered.
  auto nobody = [&](const absl::Status& s, const std::string& who) {
    if (!absl::IsNotFound(s) && !absl::IsInvalidArgument(s)) return false;
    LogWarning("notify: a recipient lookup found nobody; no mail for it",
               {{"kind", KindName(notice.kind)}, {"event", event_id}, {"recipients", who}, {"error", s.ToString()}});
    return true;
  };
  std::vector<Person> people;
  for (const std::string& u : notice.users) {
    auto p = people_->User(u);
    if (!p.ok() && nobody(p.status(), u)) continue;
    LS_RETURN_IF_ERROR(p.status());
    people.push_back(*p);
  }
  for (const auto& [org, role] : notice.org_roles) {
    auto found = people_->WithRole(org, role);
    if (!found.ok() && nobody(found.status(), absl::StrCat(RoleName(role), " of ", org.empty() ? "any" : org))) {
      continue;
    }
    LS_RETURN_IF_ERROR(found.status());
    people.insert(people.end(), found->begin(), found->end());
  }
  std::set<std::string> seen;
  const bool legal = IsLegalNotice(notice.kind);
  // People without a zone of their own read the facility's local time.
  const std::string instrument_zone = people_->InstrumentZone(notice.instrument);
  RenderContext base;
  base.console_url = context_.console_url;
  base.instrument_name = people_->InstrumentName(notice.instrument);
  // Display names; a name inventory cannot give is written as its id.
  for (const auto& [key, name] : notice.names) {
    if (absl::StartsWith(name, "organizations/")) {
      base.names[key] = people_->OrganizationName(name);
    } else if (absl::StartsWith(name, "users/")) {
      auto p = people_->User(name);
      if (p.ok() && !p->display_name.empty()) base.names[key] = p->display_name;
    } else if (const size_t at = name.find(kServiceEntryRefInfix); at != std::string::npos) {
      base.names[key] = people_->ServiceEntryName(name.substr(0, at), name.substr(at + sizeof(kServiceEntryRefInfix) - 1));
    }
  }
  if (!notice.maintenance_window.empty()) {
    auto w = people_->Window(notice.maintenance_window);
    if (w.ok()) {
      base.has_window = true;
      base.window_start = w->first;
      base.window_end = w->second;
    }
  }
  for (const Person& person : people) {
    if (!seen.insert(person.name).second || person.disabled || person.email.empty()) continue;
    const std::string user_id = UserId(person.name);
    LS_ASSIGN_OR_RETURN(EffectiveSettings s, SettingsOf(user_id, instrument_zone));
    if (!legal && std::find(s.disabled.begin(), s.disabled.end(), notice.kind) != s.disabled.end()) continue;
    RenderContext c = base;
    c.language = s.language;
    c.zone = s.zone;
    c.zone_name = s.zone_name;
    c.recipient_name = person.display_name.empty() ? user_id : person.display_name;
    if (!legal) {
      LS_ASSIGN_OR_RETURN(std::string token, UnsubscribeToken(user_id, notice.kind));
      c.unsubscribe_url = absl::StrCat(context_.console_url, "/unsubscribe?token=", token);
    }
    const RenderedMail mail = Render(notice, c);
    Fields f = {{"kind", KindName(notice.kind)},
                {"user", person.name},
                {"org", person.organization},
                {"email", person.email},
                {"name", c.recipient_name},
                {"subject", mail.subject},
                {"text", mail.text},
                {"html", mail.html},
                {"unsub", c.unsubscribe_url},
                {"event", event_id},
                {"lang", s.language},
                {"tz", s.zone_name}};
    // The causing event's trace id, for the mail's own events (MailDeadLettered).
    if (!notice.trace_id.empty()) f["trace"] = notice.trace_id;
    const bool digest = s.digest && !legal;
    const absl::Time due = NextLocalHour(context_.clock->Now(), s.zone, options_.digest_hour);
    const std::string id = MessageId(event_id, KindName(notice.kind), person.name, notice.discriminator);
    // An address stored before inventory checked it, and that could inject
    // headers: never queued, a REJECTED dead letter staff can see.
    std::optional<MailQueue::Refused> refused;
    if (std::string why; !ValidMailAddress(person.email, &why)) {
      refused.emplace();
      refused->error = absl::StrCat("invalid recipient address (", why, "); not sent");
      Fields dead = f;
      dead["state"] = "DEAD";
      dead["attempts"] = "0";
      dead["reason"] = v1::DeadLetter::Reason_Name(refused->reason);
      dead["error"] = refused->error;
      dead["create_ms"] = dead["dead_ms"] = Ms(context_.clock->Now());
      v1::NotifyEvent ev;
      *ev.mutable_mail_dead_lettered()->mutable_dead_letter() = DeadLetterFromFields(id, dead);
      refused->event_payload =
          NotifyEventPayload(ev, context_.clock->Now(), "services/notify", "", "", notice.trace_id);
    }
    LS_ASSIGN_OR_RETURN(bool written, queue_.Enqueue(id, f, digest && !refused, due, context_.wall->Now(),
                                                     context_.clock->Now(), refused ? &*refused : nullptr));
    if (written && refused) {
      LogWarning("notify: a mail to an invalid address went to the dead letters", {{"message", id}});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> MailModule::SendDue() {
  // One message claimed at a time: a crash can only leave the message being
  // sent in flight (DELIVERY_UNCERTAIN), never others merely claimed.
  int sent = 0;
  while (sent < options_.batch && !stop_.HasBeenNotified()) {
    LS_ASSIGN_OR_RETURN(std::vector<std::string> ids, queue_.Claim(context_.consumer, context_.wall->Now(), 1));
    if (ids.empty()) break;
    LS_RETURN_IF_ERROR(SendOne(ids[0]));
    ++sent;
  }
  return sent;
}

absl::Status MailModule::SendOne(const std::string& id) {
  LS_ASSIGN_OR_RETURN(Fields f, queue_.Load(id));
  if (f["state"] != "SENDING") return absl::OkStatus();
  OutgoingMail mail;
  mail.message_id = id;
  mail.to_address = f["email"];
  mail.to_name = f["name"];
  mail.kind = f["kind"];
  mail.unsubscribe_url = f["unsub"];
  mail.date = context_.wall->Now();  // the Date: header says when it was really sent
  if (f["kind"] == "DIGEST") {
    std::vector<RenderedMail> parts;
    for (absl::string_view part : absl::StrSplit(f["parts"], ',', absl::SkipEmpty())) {
      LS_ASSIGN_OR_RETURN(Fields pf, queue_.Load(std::string(part)));
      if (pf.empty()) continue;
      parts.push_back(RenderedMail{pf["subject"], pf["text"], pf["html"]});
    }
    RenderContext c;
    c.language = f["lang"];
    c.console_url = context_.console_url;
    c.recipient_name = f["name"];
    const RenderedMail d = RenderDigest(parts, c);
    // The subject as sent, before the attempt (MakeDigests stored it; a part
    // may have expired since, or the digest was made by a version that
    // stored none): a dead letter of the digest (whichever way it dies, also
    // uncertain) shows it.
    if (f["subject"] != d.subject) {
      LS_RETURN_IF_ERROR(queue_.SetSendingSubject(id, d.subject));
      f["subject"] = d.subject;
    }
    mail.subject = d.subject;
    mail.text = d.text;
    mail.html = d.html;
  } else {
    mail.subject = f["subject"];
    mail.text = f["text"];
    mail.html = f["html"];
  }
  handed_.insert(id);
  // Once the outcome is recorded the message is no longer this process's
  // uncertain one; a failed record leaves it uncertain (RecoverInFlight).
  auto recorded = [&](absl::Status s) {
    if (s.ok()) handed_.erase(id);
    return s;
  };
  const SmtpResult r = SendSmtp(options_.smtp, mail);
  int attempts = 1;
  (void)absl::SimpleAtoi(f["attempts"], &attempts);
  const absl::Time now = context_.wall->Now();
  const absl::Time domain_now = context_.clock->Now();
  if (r.outcome == SmtpResult::kSent) {
    return recorded(queue_.Finish(id, context_.consumer, MailQueue::Outcome::kSent, now, now, "",
                                  v1::DeadLetter::REASON_UNSPECIFIED, "", options_.retention, domain_now));
  }
  if (r.outcome == SmtpResult::kTemporary && attempts < options_.max_attempts) {
    absl::Duration delay = options_.retry_initial;
    for (int i = 1; i < attempts && delay < options_.retry_max; ++i) delay *= 2;
    delay = std::min(delay, options_.retry_max);
    LogWarning("notify: a mail will be retried", {{"message", id}, {"error", r.error}, {"attempt", absl::StrCat(attempts)}});
    return recorded(queue_.Finish(id, context_.consumer, MailQueue::Outcome::kRetry, now, now + delay, r.error,
                                  v1::DeadLetter::REASON_UNSPECIFIED, "", options_.retention, domain_now));
  }
  const v1::DeadLetter::Reason reason =
      r.outcome == SmtpResult::kPermanent ? v1::DeadLetter::REJECTED : v1::DeadLetter::RETRIES_EXHAUSTED;
  Fields dead = f;
  dead["state"] = "DEAD";
  dead["reason"] = v1::DeadLetter::Reason_Name(reason);
  dead["error"] = r.error;
  dead["dead_ms"] = Ms(domain_now);
  v1::NotifyEvent ev;
  *ev.mutable_mail_dead_lettered()->mutable_dead_letter() = DeadLetterFromFields(id, dead);
  LogWarning("notify: a mail went to the dead letters", {{"message", id}, {"error", r.error}});
  return recorded(queue_.Finish(id, context_.consumer, MailQueue::Outcome::kDead, now, now, r.error, reason,
                                NotifyEventPayload(ev, domain_now, "services/notify", "", "", f["trace"]),
                                options_.retention, domain_now));
}

absl::StatusOr<int> MailModule::FireSchedules() {
  const absl::Time wall = context_.wall->Now();
  LS_ASSIGN_OR_RETURN(auto fired, queue_.ClaimSchedules(context_.clock->Now(), wall, wall - absl::Minutes(2),
                                                        options_.batch));
  const absl::Time now = context_.clock->Now();
  for (const auto& f : fired) {
    auto notice = ScheduledNotice(f.member, f.event);
    // Too late (the notifier was down, or the event came late): dropped
    // without a mail.
    if (notice.ok() && ScheduledStillDue(f.member, f.fire, *notice, now, options_.schedule_grace)) {
      LS_RETURN_IF_ERROR(Deliver(*notice, absl::StrCat("sched:", f.member, ":", absl::ToUnixMillis(f.fire))));
    }
    LS_RETURN_IF_ERROR(queue_.FinishSchedule(f.member));
  }
  return static_cast<int>(fired.size());
}

absl::StatusOr<int> MailModule::MakeDigests() {
  return queue_.MakeDigests(context_.clock->Now(), context_.wall->Now(), options_.batch);
}

absl::StatusOr<int> MailModule::PruneDeadLetters() {
  if (options_.dead_letter_retention <= absl::ZeroDuration()) return 0;
  return queue_.PruneDead(context_.clock->Now() - options_.dead_letter_retention, options_.batch * 5);
}

absl::StatusOr<int> MailModule::RecoverInFlight(bool own_only) {
  const absl::Time wall = context_.wall->Now();
  // At start every claim of this consumer is uncertain (the process before
  // may have sent it); later only those this process gave the mail server.
  return queue_.RecoverInFlight(context_.consumer, own_only ? absl::InfinitePast() : wall - options_.inflight_timeout,
                                wall, context_.clock->Now(), own_only ? nullptr : &handed_);
}

absl::Status MailModule::RecordUpgradeStart() { return LegacyUnsubscribeExpiry().status(); }

void MailModule::Start() {
  // At start, not at the first click: an old link first used years later
  // is expired.
  if (absl::Status s = RecordUpgradeStart(); !s.ok()) {
    LogWarning("notify: cannot record the start for old unsubscribe links; at the first check",
               {{"error", s.ToString()}});
  }
  thread_ = std::thread([this] { Run(); });
}

void MailModule::Run() {
  // What this process had in flight when it last died: never resent.
  while (!stop_.HasBeenNotified()) {
    auto own = RecoverInFlight(true);
    if (own.ok()) {
      if (*own > 0) LogWarning("notify: mails in flight at the last stop are dead letters (delivery uncertain)",
                               {{"count", absl::StrCat(*own)}});
      break;
    }
    stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
  }
  // Dead letters from before the page indexes: indexed once.
  while (!stop_.HasBeenNotified()) {
    const absl::Status indexed = queue_.IndexDeadLetters();
    if (indexed.ok()) break;
    LogWarning("notify: indexing the dead letters failed", {{"error", indexed.ToString()}});
    stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
  }
  absl::Time next_recover = absl::InfinitePast();
  std::string repair_cursor;
  while (!stop_.HasBeenNotified()) {
    int work = 0;
    auto step = [&](const char* what, absl::StatusOr<int> r) {
      if (r.ok()) {
        work += *r;
      } else {
        LogWarning(absl::StrCat("notify: ", what, " failed"), {{"error", r.status().ToString()}});
      }
    };
    if (context_.wall->Now() >= next_recover) {
      step("recovering stale mails", RecoverInFlight(false));
      next_recover = context_.wall->Now() + absl::Seconds(30);
      // Dead letters past the retention, a bounded number per round.
      step("removing old dead letters", PruneDeadLetters());
      // Dead letters an older replica wrote without the indexes: one
      // bounded step of a walk of "dead" per round, then from the start.
      absl::StatusOr<std::string> next = queue_.IndexDeadStep(repair_cursor, 200, false);
      if (next.ok()) {
        repair_cursor = *next;
      } else {
        LogWarning("notify: repairing the dead-letter indexes failed", {{"error", next.status().ToString()}});
      }
    }
    step("firing reminders", FireSchedules());
    step("making digests", MakeDigests());
    step("sending", SendDue());
    if (work == 0) stop_.WaitForNotificationWithTimeout(options_.poll);
  }
}

void MailModule::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

}  // namespace labshare::notify
