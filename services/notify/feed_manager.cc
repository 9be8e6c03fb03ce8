#include "services/notify/feed_manager.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "common/time_zone.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/notify/feed_ical.h"
#include "services/notify/notify_module.h"

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
using labshare::type::v1::SharingMode;
using fv1::NotifyEvent;

constexpr char kService[] = "/labshare.notify.v1.CalendarFeedService/";
std::string M(absl::string_view method) { return absl::StrCat(kService, method); }

std::string FeedKey(absl::string_view user, absl::string_view feed) {
  return absl::StrCat("{notify}:feed:f:", user, "/", feed);
}
std::string SecretKey(absl::string_view user, absl::string_view feed) {
  return absl::StrCat("{notify}:feed:s:", user, "/", feed);
}
std::string TokenKey(absl::string_view hash) { return absl::StrCat("{notify}:feed:t:", hash); }
std::string CountKey(absl::string_view user) { return absl::StrCat("{notify}:feed:n:", user); }
std::string ListKey(absl::string_view user) { return absl::StrCat("{notify}:feed:l:", user); }
std::string IdemKey(absl::string_view method, const Principal& p, absl::string_view request_id) {
  return absl::StrCat("{notify}:feed:req:", method, ":",
                      Sha256Hex(absl::StrCat(ActorName(p), std::string(1, '\0'), request_id)));
}
std::string ListMember(absl::Time created, absl::string_view feed) {
  return absl::StrFormat("%020d|%s", absl::ToUnixMicros(created), feed);
}

std::string IdOf(absl::string_view name) {
  const size_t slash = name.rfind('/');
  return std::string(slash == absl::string_view::npos ? name : name.substr(slash + 1));
}

absl::Status FeedNotFound() {
  return MakeError(absl::StatusCode::kNotFound, "FEED_NOT_FOUND",
                   "no live calendar feed has this name or secret URL (it may have been rotated or deleted)");
}

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return MakeError(absl::StatusCode::kInternal, "TOKEN_CRYPTO_FAILURE", "no random bytes for a feed token");
  }
  return out;
}

absl::StatusOr<std::string> NewToken() {
  LS_ASSIGN_OR_RETURN(std::string bytes, RandomBytes(32));
  return absl::WebSafeBase64Escape(bytes);  // 43 characters, no padding
}

absl::StatusOr<std::string> NewFeedId() {
  LS_ASSIGN_OR_RETURN(std::string bytes, RandomBytes(8));
  return absl::BytesToHexString(bytes);
}

absl::Status Committed(const CommitOutcome& outcome) {
  switch (outcome.kind) {
    case CommitOutcome::Kind::kConflict:
      return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                       "the feed changed while this request ran; retry with the same request_id");
    case CommitOutcome::Kind::kRequestReused: return RequestIdReused();
    default: return absl::OkStatus();
  }
}

absl::StatusOr<fv1::CalendarFeed> ParseFeed(const std::string& data) {
  fv1::CalendarFeed feed;
  if (!feed.ParseFromString(data)) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored calendar feed could not be read");
  }
  return feed;
}

// The feed's text in its owner's language: zh-CN, or English.
struct Words {
  const char* lease;
  const char* joint_research;
  const char* service_run;
  const char* booking;
  const char* service_run_operated;
  const char* pending;
  const char* cancelled;
  const char* rejected;
  const char* expired;
  const char* missed;
  const char* busy;
  const char* colon;  // after an instrument or a label
  const char* user_for;
  const char* user_for_end;
  const char* d_booking;
  const char* d_state;
  const char* d_instrument;
  const char* d_user;
  const char* d_paid_by;
  const char* d_lease;
  const char* d_order;
  const char* d_operator;
  const char* d_purpose;
};

constexpr Words kEnglish = {"lease", "joint-research booking", "service run", "booking", "service run you operate",
                            " (pending approval)", " (cancelled)", " (rejected)", " (expired)", " (missed)", "Busy",
                            ": ", " for ", "", "Booking: ", "State: ", "Instrument: ", "User: ", "Paid by: ",
                            "Lease: ", "Service order: ", "Operator: ", "Purpose: "};
constexpr Words kChinese = {"租赁", "联合研究预约", "技术服务", "预约", "由您操作的技术服务", "（待审批）",
                            "（已取消）", "（已拒绝）", "（已过期）", "（爽约）", "占用", "：", "（付款方 ",
                            "）", "预约：", "状态：", "仪器：", "用户：", "付款方：", "租赁：", "服务订单：",
                            "操作员：", "用途："};

const char* ModeLabel(SharingMode mode, const Words& w) {
  switch (mode) {
    case labshare::type::v1::LEASE: return w.lease;
    case labshare::type::v1::JOINT_RESEARCH: return w.joint_research;
    case labshare::type::v1::TECHNICAL_SERVICE: return w.service_run;
    default: return w.booking;
  }
}

ical::Status StatusOf(bk::Booking::State s) {
  switch (s) {
    case bk::Booking::PENDING_APPROVAL: return ical::Status::kTentative;
    case bk::Booking::CANCELLED:
    case bk::Booking::REJECTED:
    case bk::Booking::EXPIRED: return ical::Status::kCancelled;
    default: return ical::Status::kConfirmed;
  }
}

const char* StateSuffix(bk::Booking::State s, const Words& w) {
  switch (s) {
    case bk::Booking::PENDING_APPROVAL: return w.pending;
    case bk::Booking::CANCELLED: return w.cancelled;
    case bk::Booking::REJECTED: return w.rejected;
    case bk::Booking::EXPIRED: return w.expired;
    case bk::Booking::MISSED: return w.missed;
    default: return "";
  }
}

std::string StateName(bk::Booking::State s) { return bk::Booking::State_Name(s); }

// What rendering one feed needs besides its entries.
struct RenderContext {
  bool instrument_feed = false;
  std::string feed_user;           // "users/{user}"
  std::string owner_organization;  // the feed's
  std::string console_url;
  std::string host;                // of the console URL: the UIDs' domain
  const Words* words = &kEnglish;  // the feed owner's language
};

// The TZID for a stored zone name, adding its zone to the calendar once
// (feeds.proto): none, or a name that is no IANA zone (an entry stored
// before facility zones were checked as such: "localtime",
// "Fixed/UTC+08:00:00"), is `fallback` (--feed_default_time_zone), else UTC.
std::string ZoneOf(const std::string& wanted, const std::string& fallback, std::map<std::string, std::string>* zones,
                   ical::Calendar* cal) {
  auto it = zones->find(wanted);
  if (it != zones->end()) return it->second;
  absl::TimeZone tz;
  std::string tzid = wanted;
  if (!LoadIanaTimeZone(tzid, &tz)) {
    tzid = fallback;
    if (!LoadIanaTimeZone(tzid, &tz)) {
      tzid = "UTC";
      tz = absl::UTCTimeZone();
    }
  }
  bool known = false;
  for (const auto& z : cal->zones) known = known || z.tzid == tzid;
  if (!known) cal->zones.push_back({tzid, tz});
  zones->emplace(wanted, tzid);
  return tzid;
}

// Who, for whom and why: user feeds always; instrument feeds only for a
// feed owner of the instrument's owner or operator organisation.
bool ShowsDetails(const FeedEntry& e, const RenderContext& ctx) {
  if (!ctx.instrument_feed) return true;
  return !ctx.owner_organization.empty() && (ctx.owner_organization == e.booking.instrument_owner() ||
                                             ctx.owner_organization == e.operator_organization);
}

std::string Description(const FeedEntry& e, const Words& w) {
  const bk::Booking& b = e.booking;
  std::vector<std::string> lines = {
      absl::StrCat(w.d_booking, b.name()), absl::StrCat(w.d_state, StateName(b.state())),
      absl::StrCat(w.d_instrument, e.instrument_display_name, " (", b.instrument(), ")")};
  if (!b.user().empty()) lines.push_back(absl::StrCat(w.d_user, b.user()));
  if (!b.payer_organization().empty()) lines.push_back(absl::StrCat(w.d_paid_by, b.payer_organization()));
  if (!b.lease().empty()) lines.push_back(absl::StrCat(w.d_lease, b.lease()));
  if (!b.service_order().empty()) lines.push_back(absl::StrCat(w.d_order, b.service_order()));
  if (!b.operator_user().empty()) lines.push_back(absl::StrCat(w.d_operator, b.operator_user()));
  if (!b.purpose().empty()) lines.push_back(absl::StrCat(w.d_purpose, b.purpose()));
  return absl::StrJoin(lines, "\n");
}

// One booking as a VEVENT (without its TZID).
ical::Event EventOf(const FeedEntry& e, const RenderContext& ctx) {
  const bk::Booking& b = e.booking;
  ical::Event ev;
  const char* kind = b.mode() == labshare::type::v1::LEASE                ? "lease"
                     : b.mode() == labshare::type::v1::TECHNICAL_SERVICE ? "run"
                                                                          : "booking";
  // Instrument feeds: a booking id may be chosen by its user (and say who
  // or what), so their UIDs are a digest of the name, stable all the same.
  ev.uid = ctx.instrument_feed ? absl::StrCat("busy-", Sha256Hex(b.name()).substr(0, 32), "@", ctx.host)
                               : absl::StrCat(kind, "-", IdOf(b.name()), "@", ctx.host);
  ev.sequence = e.sequence;
  ev.stamp = e.stamp == absl::UnixEpoch() ? FromProto(b.update_time()) : e.stamp;
  // Instrument feeds show busy time: the blocked interval, buffers included.
  const auto& interval =
      ctx.instrument_feed && b.has_blocked_interval() ? b.blocked_interval() : b.reserved_interval();
  ev.start = FromProto(interval.start_time());
  ev.end = FromProto(interval.end_time());
  ev.status = StatusOf(b.state());
  ev.transparent = ev.status == ical::Status::kCancelled;
  if (ctx.instrument_feed) {
    ev.location = e.location;  // the facility; the calendar names the instrument
  } else {
    ev.location = e.location.empty() ? e.instrument_display_name
                                     : absl::StrCat(e.instrument_display_name, ", ", e.location);
  }
  const Words& w = *ctx.words;
  if (!ShowsDetails(e, ctx)) {
    ev.summary = absl::StrCat(w.busy, StateSuffix(b.state(), w));
    return ev;
  }
  std::string label = ModeLabel(b.mode(), w);
  if (!ctx.instrument_feed && b.mode() == labshare::type::v1::TECHNICAL_SERVICE &&
      b.operator_user() == ctx.feed_user && b.user() != ctx.feed_user) {
    label = w.service_run_operated;
  }
  ev.summary = ctx.instrument_feed
                   ? absl::StrCat(label, w.colon, b.user().empty() ? "-" : IdOf(b.user()), w.user_for,
                                  b.payer_organization().empty() ? "-" : IdOf(b.payer_organization()),
                                  w.user_for_end, StateSuffix(b.state(), w))
                   : absl::StrCat(e.instrument_display_name, w.colon, label, StateSuffix(b.state(), w));
  ev.description = Description(e, w);
  if (!ctx.console_url.empty()) {
    ev.url = b.service_order().empty()
                 ? absl::StrCat(ctx.console_url, "/#/lab/bookings")
                 : absl::StrCat(ctx.console_url, "/#/lab/orders/", IdOf(b.service_order()));
  }
  return ev;
}

}  // namespace

const MethodPolicy& FeedPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    auto* p = new MethodPolicy();
    for (const char* m : {"CreateCalendarFeed", "ListCalendarFeeds", "RotateCalendarFeed", "DeleteCalendarFeed"}) {
      p->Allow(M(m),
               {Role::kLabUser, Role::kFacilityStaff, Role::kMemberBillingAdmin, Role::kAuditor,
                Role::kConsortiumAdmin},
               kScopeSelf)
          .Allow(M(m), {Role::kConsortiumAdmin});
    }
    p->AllowUnauthenticated(M("GetCalendarFeedContent"));
    return p;
  }();
  return *kPolicy;
}

FeedManager::FeedManager(RedisPool* redis, const Clock* clock, InstrumentDirectory* instruments,
                         const FeedProjection* projection, std::string console_url, FeedOptions options)
    : redis_(redis),
      docs_(redis),
      clock_(clock),
      instruments_(instruments),
      projection_(projection),
      console_url_(std::move(console_url)),
      options_(std::move(options)) {}

absl::StatusOr<std::string> FeedManager::CheckParent(const Principal& p, const std::string& method,
                                                     const std::string& parent, const char* field) const {
  if (!IsResourceName(parent, "users")) {
    return InvalidField(field, "must be \"users/{user}\", the user who owns the feeds");
  }
  LS_RETURN_IF_ERROR(FeedPolicy().CheckScope(method, p, ScopeFacts{parent, {}, {}}));
  return IdOf(parent);
}

absl::StatusOr<std::pair<std::string, std::string>> FeedManager::ParseFeedName(const std::string& name) const {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 4 || parts[0] != "users" || parts[2] != "calendarFeeds" || !ValidResourceId(parts[1]) ||
      !ValidResourceId(parts[3])) {
    return InvalidField("name", "must be \"users/{user}/calendarFeeds/{feed}\"", "INVALID_NAME");
  }
  return std::make_pair(std::string(parts[1]), std::string(parts[3]));
}

absl::StatusOr<PageTokenCodec> FeedManager::Codec() {
  std::lock_guard<std::mutex> lock(codec_mu_);
  if (!codec_) {
    LS_ASSIGN_OR_RETURN(PageTokenCodec codec, PageTokenCodec::FromRedis(redis_, "{notify}", absl::Seconds(5)));
    codec_.emplace(std::move(codec));
  }
  return *codec_;
}

std::string FeedManager::Url(const std::string& token) const {
  return absl::StrCat(console_url_, "/feeds/", token, ".ics");
}

absl::Status FeedManager::Publish(Mutation* m, const Principal& p, const std::string& request_id,
                                  const fv1::CalendarFeed& feed, int kind) const {
  NotifyEvent event;
  auto* h = event.mutable_header();
  h->set_event_id(NewEventId());
  *h->mutable_event_time() = ToProto(clock_->Now());
  h->set_request_id(request_id);
  h->set_actor(ActorName(p));
  h->set_actor_organization(ActorOrganization(p));
  h->set_trace_id(p.trace_id);
  switch (kind) {
    case NotifyEvent::kCalendarFeedCreated:
      *event.mutable_calendar_feed_created()->mutable_calendar_feed() = feed;
      break;
    case NotifyEvent::kCalendarFeedRotated:
      *event.mutable_calendar_feed_rotated()->mutable_calendar_feed() = feed;
      break;
    default: *event.mutable_calendar_feed_deleted()->mutable_calendar_feed() = feed; break;
  }
  m->outbox_key = kNotifyOutbox;
  m->event_type = "labshare.notify.v1.NotifyEvent";
  m->event_payload = event.SerializeAsString();
  return absl::OkStatus();
}

absl::StatusOr<fv1::CalendarFeed> FeedManager::Create(const Principal& p, const fv1::CreateCalendarFeedRequest& r) {
  LS_ASSIGN_OR_RETURN(const std::string user, CheckParent(p, M("CreateCalendarFeed"), r.parent(), "parent"));
  const fv1::CalendarFeed& in = r.calendar_feed();
  std::vector<FieldViolation> bad;
  if (in.kind() != fv1::CalendarFeed::USER && in.kind() != fv1::CalendarFeed::INSTRUMENT) {
    bad.push_back({"calendar_feed.kind", "must be USER or INSTRUMENT"});
  }
  if (in.kind() == fv1::CalendarFeed::INSTRUMENT && !IsResourceName(in.instrument(), "instruments")) {
    bad.push_back({"calendar_feed.instrument", "an INSTRUMENT feed needs \"instruments/{instrument}\""});
  }
  if (in.kind() == fv1::CalendarFeed::USER && !in.instrument().empty()) {
    bad.push_back({"calendar_feed.instrument", "must be empty for a USER feed"});
  }
  // Characters (UTF-8 lead bytes), not bytes.
  const auto chars = std::count_if(in.display_name().begin(), in.display_name().end(),
                                   [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
  if (chars > 200) bad.push_back({"calendar_feed.display_name", "at most 200 characters"});
  if (!bad.empty()) return InvalidFields(std::move(bad));

  const std::string idem = r.request_id().empty() ? "" : IdemKey("CreateCalendarFeed", p, r.request_id());
  const std::string fingerprint = Sha256Hex(absl::StrCat(ActorName(p), "|", r.SerializeAsString()));
  if (!idem.empty()) {
    LS_ASSIGN_OR_RETURN(std::optional<std::string> replay, docs_.FindReplay(idem, fingerprint));
    if (replay) return ParseFeed(*replay);
  }

  const bool own = ActorName(p) == r.parent();
  fv1::CalendarFeed feed;
  feed.set_kind(in.kind());
  feed.set_owner_organization(own ? ActorOrganization(p) : "");
  if (in.kind() == fv1::CalendarFeed::INSTRUMENT) {
    LS_ASSIGN_OR_RETURN(InstrumentInfo info, instruments_->Lookup(in.instrument()));
    feed.set_instrument(in.instrument());
    feed.set_display_name(in.display_name().empty() ? absl::StrCat("LabShare: ", info.display_name)
                                                    : in.display_name());
    feed.set_shows_details(!feed.owner_organization().empty() &&
                           (feed.owner_organization() == info.owner_organization ||
                            feed.owner_organization() == info.operator_organization));
    LS_RETURN_IF_ERROR(Freshen(&feed));  // the cached info may predate an operator change
  } else {
    feed.set_display_name(in.display_name().empty() ? absl::StrCat("LabShare: ", user) : in.display_name());
  }

  LS_ASSIGN_OR_RETURN(std::optional<StoredDoc> count, docs_.Get(CountKey(user)));
  const int64_t live = count ? std::strtoll(count->data.c_str(), nullptr, 10) : 0;
  if (live >= options_.max_feeds_per_user) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "FEED_LIMIT_REACHED",
                     absl::StrCat("a user has at most ", options_.max_feeds_per_user,
                                  " calendar feeds; delete one first"));
  }
  LS_ASSIGN_OR_RETURN(const std::string feed_id, NewFeedId());
  LS_ASSIGN_OR_RETURN(const std::string token, NewToken());
  const std::string hash = Sha256Hex(token);
  const absl::Time now = clock_->Now();
  feed.set_name(absl::StrCat(r.parent(), "/calendarFeeds/", feed_id));
  *feed.mutable_create_time() = ToProto(now);

  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = feed.SerializeAsString();
  m.writes.push_back({FeedKey(user, feed_id), feed.SerializeAsString(), 0});
  m.writes.push_back({SecretKey(user, feed_id), hash, 0});
  m.writes.push_back({TokenKey(hash), feed.name(), 0});
  m.writes.push_back({CountKey(user), std::to_string(live + 1), count ? count->version : 0});
  m.index_ops.push_back({ListKey(user), ListMember(now, feed_id), false});
  LS_RETURN_IF_ERROR(Publish(&m, p, r.request_id(), feed, NotifyEvent::kCalendarFeedCreated));
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, docs_.Commit(m));
  LS_RETURN_IF_ERROR(Committed(outcome));
  if (outcome.kind == CommitOutcome::Kind::kReplayed) return ParseFeed(outcome.response);
  feed.set_secret_url(Url(token));
  return feed;
}

absl::StatusOr<fv1::ListCalendarFeedsResponse> FeedManager::List(const Principal& p,
                                                                 const fv1::ListCalendarFeedsRequest& r) {
  LS_ASSIGN_OR_RETURN(const std::string user, CheckParent(p, M("ListCalendarFeeds"), r.parent(), "parent"));
  LS_ASSIGN_OR_RETURN(PageTokenCodec codec, Codec());
  LS_ASSIGN_OR_RETURN(PageRequest page, codec.Parse(r, p));
  LS_ASSIGN_OR_RETURN(std::vector<std::string> members,
                      docs_.IndexRange(ListKey(user), page.after, page.page_size + 1));
  fv1::ListCalendarFeedsResponse out;
  const bool more = static_cast<int>(members.size()) > page.page_size;
  if (more) members.resize(static_cast<size_t>(page.page_size));
  std::vector<std::string> keys;
  for (const std::string& member : members) {
    keys.push_back(FeedKey(user, member.substr(member.find('|') + 1)));
  }
  LS_ASSIGN_OR_RETURN(std::vector<std::optional<StoredDoc>> docs, docs_.GetMany(keys));
  for (const auto& doc : docs) {
    if (!doc) continue;
    LS_ASSIGN_OR_RETURN(fv1::CalendarFeed feed, ParseFeed(doc->data));
    LS_RETURN_IF_ERROR(Freshen(&feed));
    *out.add_calendar_feeds() = std::move(feed);
  }
  if (more && !members.empty()) out.set_next_page_token(codec.Make(r, p, members.back()));
  return out;
}

absl::StatusOr<fv1::CalendarFeed> FeedManager::Rotate(const Principal& p, const fv1::RotateCalendarFeedRequest& r) {
  LS_ASSIGN_OR_RETURN(auto ids, ParseFeedName(r.name()));
  const auto& [user, feed_id] = ids;
  LS_RETURN_IF_ERROR(CheckParent(p, M("RotateCalendarFeed"), absl::StrCat("users/", user), "name").status());
  const std::string idem = r.request_id().empty() ? "" : IdemKey("RotateCalendarFeed", p, r.request_id());
  const std::string fingerprint = Sha256Hex(absl::StrCat(ActorName(p), "|", r.SerializeAsString()));
  if (!idem.empty()) {
    LS_ASSIGN_OR_RETURN(std::optional<std::string> replay, docs_.FindReplay(idem, fingerprint));
    if (replay) return ParseFeed(*replay);
  }
  LS_ASSIGN_OR_RETURN(auto docs, docs_.GetMany({FeedKey(user, feed_id), SecretKey(user, feed_id)}));
  if (!docs[0] || !docs[1]) return FeedNotFound();
  LS_ASSIGN_OR_RETURN(fv1::CalendarFeed feed, ParseFeed(docs[0]->data));
  if (feed.has_delete_time()) return FeedNotFound();
  LS_RETURN_IF_ERROR(Freshen(&feed));
  const std::string old_hash = docs[1]->data;
  LS_ASSIGN_OR_RETURN(std::optional<StoredDoc> old_token, docs_.Get(TokenKey(old_hash)));
  LS_ASSIGN_OR_RETURN(const std::string token, NewToken());
  const std::string hash = Sha256Hex(token);
  *feed.mutable_rotate_time() = ToProto(clock_->Now());

  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = feed.SerializeAsString();
  m.writes.push_back({FeedKey(user, feed_id), feed.SerializeAsString(), docs[0]->version});
  m.writes.push_back({SecretKey(user, feed_id), hash, docs[1]->version});
  if (old_token) m.writes.push_back({TokenKey(old_hash), "", old_token->version});
  m.writes.push_back({TokenKey(hash), feed.name(), 0});
  LS_RETURN_IF_ERROR(Publish(&m, p, r.request_id(), feed, NotifyEvent::kCalendarFeedRotated));
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, docs_.Commit(m));
  LS_RETURN_IF_ERROR(Committed(outcome));
  if (outcome.kind == CommitOutcome::Kind::kReplayed) return ParseFeed(outcome.response);
  feed.set_secret_url(Url(token));
  return feed;
}

absl::StatusOr<fv1::CalendarFeed> FeedManager::Delete(const Principal& p, const fv1::DeleteCalendarFeedRequest& r) {
  LS_ASSIGN_OR_RETURN(auto ids, ParseFeedName(r.name()));
  const auto& [user, feed_id] = ids;
  LS_RETURN_IF_ERROR(CheckParent(p, M("DeleteCalendarFeed"), absl::StrCat("users/", user), "name").status());
  const std::string idem = r.request_id().empty() ? "" : IdemKey("DeleteCalendarFeed", p, r.request_id());
  const std::string fingerprint = Sha256Hex(absl::StrCat(ActorName(p), "|", r.SerializeAsString()));
  if (!idem.empty()) {
    LS_ASSIGN_OR_RETURN(std::optional<std::string> replay, docs_.FindReplay(idem, fingerprint));
    if (replay) return ParseFeed(*replay);
  }
  LS_ASSIGN_OR_RETURN(auto docs,
                      docs_.GetMany({FeedKey(user, feed_id), SecretKey(user, feed_id), CountKey(user)}));
  if (!docs[0] || !docs[1]) return FeedNotFound();
  LS_ASSIGN_OR_RETURN(fv1::CalendarFeed feed, ParseFeed(docs[0]->data));
  if (feed.has_delete_time()) return FeedNotFound();
  LS_RETURN_IF_ERROR(Freshen(&feed));
  const std::string old_hash = docs[1]->data;
  LS_ASSIGN_OR_RETURN(std::optional<StoredDoc> old_token, docs_.Get(TokenKey(old_hash)));
  const int64_t live = docs[2] ? std::strtoll(docs[2]->data.c_str(), nullptr, 10) : 1;
  *feed.mutable_delete_time() = ToProto(clock_->Now());

  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = feed.SerializeAsString();
  m.writes.push_back({FeedKey(user, feed_id), feed.SerializeAsString(), docs[0]->version});
  m.writes.push_back({SecretKey(user, feed_id), "", docs[1]->version});
  if (old_token) m.writes.push_back({TokenKey(old_hash), "", old_token->version});
  m.writes.push_back({CountKey(user), std::to_string(live > 0 ? live - 1 : 0), docs[2] ? docs[2]->version : 0});
  m.index_ops.push_back({ListKey(user), ListMember(FromProto(feed.create_time()), feed_id), true});
  LS_RETURN_IF_ERROR(Publish(&m, p, r.request_id(), feed, NotifyEvent::kCalendarFeedDeleted));
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, docs_.Commit(m));
  LS_RETURN_IF_ERROR(Committed(outcome));
  if (outcome.kind == CommitOutcome::Kind::kReplayed) return ParseFeed(outcome.response);
  return feed;
}

absl::Status FeedManager::Freshen(fv1::CalendarFeed* feed) const {
  if (feed->kind() != fv1::CalendarFeed::INSTRUMENT) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(std::optional<InstrumentParties> parties,
                      projection_->LatestParties(IdOf(feed->instrument())));
  if (!parties) return absl::OkStatus();
  const std::string& org = feed->owner_organization();
  feed->set_shows_details(!org.empty() && (org == parties->owner || org == parties->op));
  return absl::OkStatus();
}

absl::StatusOr<fv1::CalendarFeedContent> FeedManager::Content(const fv1::GetCalendarFeedContentRequest& r) {
  if (r.token().empty() || r.token().size() > 128) {
    return InvalidField("token", "the token of the feed's secret URL (the part before \".ics\")");
  }
  const std::string hash = Sha256Hex(r.token());
  LS_ASSIGN_OR_RETURN(std::optional<StoredDoc> owner, docs_.Get(TokenKey(hash)));
  if (!owner || owner->data.empty()) return FeedNotFound();
  auto ids = ParseFeedName(owner->data);
  if (!ids.ok()) return FeedNotFound();
  LS_ASSIGN_OR_RETURN(auto docs, docs_.GetMany({FeedKey(ids->first, ids->second), SecretKey(ids->first, ids->second)}));
  if (!docs[0] || !docs[1] || docs[1]->data.size() != hash.size() ||
      CRYPTO_memcmp(docs[1]->data.data(), hash.data(), hash.size()) != 0) {
    return FeedNotFound();
  }
  LS_ASSIGN_OR_RETURN(fv1::CalendarFeed feed, ParseFeed(docs[0]->data));
  if (feed.has_delete_time()) return FeedNotFound();
  // The feed lives as long as its user: a disabled or removed user's URL
  // stops, and an instrument's feed names people only while its user still
  // belongs to the owner's organisation.
  absl::StatusOr<FeedUserInfo> who = instruments_->LookupUser(absl::StrCat("users/", ids->first));
  if (!who.ok()) {
    if (who.status().code() == absl::StatusCode::kNotFound) return FeedNotFound();
    return who.status();
  }
  if (who->disabled) return FeedNotFound();
  if (!feed.owner_organization().empty() && who->organization != feed.owner_organization()) {
    feed.clear_owner_organization();
  }
  LS_ASSIGN_OR_RETURN(std::string body, Render(feed));
  fv1::CalendarFeedContent out;
  out.set_content_type("text/calendar; charset=utf-8");
  out.set_etag(Sha256Hex(body));
  out.set_body(std::move(body));
  return out;
}

absl::StatusOr<std::string> FeedManager::Render(const fv1::CalendarFeed& feed) const {
  LS_ASSIGN_OR_RETURN(auto ids, ParseFeedName(feed.name()));
  RenderContext ctx;
  ctx.instrument_feed = feed.kind() == fv1::CalendarFeed::INSTRUMENT;
  ctx.feed_user = absl::StrCat("users/", ids.first);
  ctx.owner_organization = feed.owner_organization();
  ctx.console_url = console_url_;
  ctx.host = std::string(absl::StripPrefix(absl::StripPrefix(console_url_, "https://"), "http://"));
  ctx.host = ctx.host.substr(0, ctx.host.find('/'));
  if (ctx.host.empty()) ctx.host = "labshare";
  // The owner's language: their notification settings (the mail module's
  // "{notify}:settings:<user>"), otherwise the service's default.
  LS_ASSIGN_OR_RETURN(RedisValue lang,
                      redis_->Command({"HGET", absl::StrCat("{notify}:settings:", ids.first), "language"}));
  if (lang.is_error()) return RedisErrorStatus(lang);
  const std::string language = lang.is_nil() || lang.str.empty() ? options_.default_language : lang.str;
  ctx.words = language == "zh-CN" ? &kChinese : &kEnglish;
  std::vector<FeedEntry> entries;
  if (ctx.instrument_feed) {
    LS_ASSIGN_OR_RETURN(entries, projection_->InstrumentEntries(IdOf(feed.instrument())));
  } else {
    LS_ASSIGN_OR_RETURN(entries, projection_->UserEntries(ids.first));
  }
  ical::Calendar cal;
  cal.name = feed.display_name();
  cal.refresh = options_.refresh;
  std::map<std::string, std::string> zones;  // stored zone name -> TZID used
  for (const FeedEntry& e : entries) {
    ical::Event ev = EventOf(e, ctx);
    ev.tzid = ZoneOf(e.time_zone, options_.default_time_zone, &zones, &cal);
    cal.events.push_back(std::move(ev));
  }
  return ical::Render(cal);
}

}  // namespace labshare::notify
