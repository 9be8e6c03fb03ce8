#include "services/notify/feed_projection.h"

#include <openssl/sha.h>

#include <algorithm>
#include <chrono>

#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "common/time_zone.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
namespace inv = labshare::inventory::v1;

constexpr char kEntryPrefix[] = "{notify}:feed:e:";
constexpr int64_t kMarkerTtlSeconds = 30 * 24 * 3600;

std::string IdOf(absl::string_view name) {
  const size_t slash = name.rfind('/');
  return std::string(slash == absl::string_view::npos ? name : name.substr(slash + 1));
}

// NOT_FOUND (INSTRUMENT_NOT_FOUND) passes through; anything else is, for
// the caller of a feed method, inventory not answering (a refused
// certificate is an operator's matter: logged, not shown).
absl::Status Downstream(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) return FromGrpcStatus(s);
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    LogWarning("feeds: inventory refused a lookup",
               {{"code", CodeName(static_cast<absl::StatusCode>(s.error_code()))}, {"message", s.error_message()}});
  }
  return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                   "the inventory service cannot be reached; retry the request");
}

class InventoryDirectory final : public InstrumentDirectory {
 public:
  InventoryDirectory(std::shared_ptr<grpc::Channel> channel, const Clock* wall, const FeedOptions& options)
      : stub_(channel ? inv::InventoryService::NewStub(std::move(channel)) : nullptr),
        wall_(wall),
        options_(options) {}

  absl::StatusOr<InstrumentInfo> Lookup(const std::string& instrument) override {
    if (stub_ == nullptr) {  // started without --inventory
      return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                       "the inventory service is not configured; retry later");
    }
    const absl::Time now = wall_->Now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(instrument);
      if (it != cache_.end() && now - it->second.fetched < options_.instrument_cache_ttl) return it->second.info;
    }
    inv::GetInstrumentRequest ireq;
    ireq.set_name(instrument);
    inv::Instrument in;
    {
      auto ctx = Context();
      grpc::Status s = stub_->GetInstrument(ctx.get(), ireq, &in);
      if (!s.ok()) return Downstream(s);
    }
    InstrumentInfo info;
    info.name = in.name();
    info.display_name = in.display_name().empty() ? IdOf(in.name()) : in.display_name();
    info.owner_organization = in.owner_organization();
    info.operator_organization = in.operator_organization();
    info.time_zone = options_.default_time_zone;
    if (!in.facility().empty()) {
      inv::GetFacilityRequest freq;
      freq.set_name(in.facility());
      inv::Facility f;
      auto ctx = Context();
      grpc::Status s = stub_->GetFacility(ctx.get(), freq, &f);
      if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) return Downstream(s);
      if (s.ok()) {
        if (!f.time_zone().empty()) info.time_zone = f.time_zone();
        info.location = f.display_name();
        if (!f.address().empty()) absl::StrAppend(&info.location, info.location.empty() ? "" : ", ", f.address());
      }
    }
    absl::TimeZone probe;
    if (!LoadIanaTimeZone(info.time_zone, &probe)) info.time_zone = options_.default_time_zone;
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() > 10000) cache_.clear();
    cache_[instrument] = {info, now};
    return info;
  }

  // A short cache (feeds.proto: inventory is asked at most once a minute
  // per user): a disabled user's or a leaver's feed stops within a minute.
  // A user inventory no longer has is kept as such for that minute too (a
  // removed user's feed URL, still polled by calendar applications, does
  // not ask inventory on every fetch); one added back is asked about again
  // after it. At most 10000 users, cleared when full.
  absl::StatusOr<FeedUserInfo> LookupUser(const std::string& user) override {
    if (stub_ == nullptr) {
      return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                       "the inventory service is not configured; retry later");
    }
    const absl::Time now = wall_->Now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = users_.find(user);
      if (it != users_.end() && now - it->second.fetched < absl::Minutes(1)) {
        if (!it->second.found) return UserNotFound();
        return it->second.info;
      }
    }
    inv::GetUserRequest req;
    req.set_name(user);
    inv::User u;
    auto ctx = Context();
    grpc::Status s = stub_->GetUser(ctx.get(), req, &u);
    if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) return Downstream(s);
    const bool found = s.ok();
    FeedUserInfo info{u.organization(), u.disabled()};
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (users_.size() > 10000) users_.clear();
      users_[user] = {info, now, found};
    }
    if (!found) return UserNotFound();
    return info;
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.inventory_timeout)));
    return ctx;
  }

  struct Cached {
    InstrumentInfo info;
    absl::Time fetched;
  };
  std::unique_ptr<inv::InventoryService::Stub> stub_;
  const Clock* wall_;
  FeedOptions options_;
  std::mutex mu_;
  std::map<std::string, Cached> cache_;
  static absl::Status UserNotFound() {
    return MakeError(absl::StatusCode::kNotFound, "USER_NOT_FOUND", "inventory has no such user");
  }
  struct CachedUser {
    FeedUserInfo info;
    absl::Time fetched;
    bool found = true;  // false: inventory answered NOT_FOUND
  };
  std::map<std::string, CachedUser> users_;
};

// The booking snapshot an event carries, if any.
const bk::Booking* BookingOf(const bk::BookingEvent& e) {
  switch (e.payload_case()) {
    case bk::BookingEvent::kBookingCreated: return &e.booking_created().booking();
    case bk::BookingEvent::kBookingConfirmed: return &e.booking_confirmed().booking();
    case bk::BookingEvent::kBookingApproved: return &e.booking_approved().booking();
    case bk::BookingEvent::kBookingRejected: return &e.booking_rejected().booking();
    case bk::BookingEvent::kBookingCancelled: return &e.booking_cancelled().booking();
    case bk::BookingEvent::kBookingCheckedIn: return &e.booking_checked_in().booking();
    case bk::BookingEvent::kBookingCheckedOut: return &e.booking_checked_out().booking();
    case bk::BookingEvent::kBookingMissed: return &e.booking_missed().booking();
    case bk::BookingEvent::kBookingExpired: return &e.booking_expired().booking();
    case bk::BookingEvent::kBookingIntervalChanged: return &e.booking_interval_changed().booking();
    default: return nullptr;
  }
}

// What a calendar shows of a booking; SEQUENCE grows when it changes.
std::string Signature(const bk::Booking& b, const InstrumentInfo& info) {
  auto t = [](const google::protobuf::Timestamp& ts) { return absl::StrCat(ts.seconds(), ".", ts.nanos()); };
  return Sha256Hex(absl::StrJoin(
      {std::to_string(static_cast<int>(b.state())), t(b.reserved_interval().start_time()),
       t(b.reserved_interval().end_time()), t(b.blocked_interval().start_time()),
       t(b.blocked_interval().end_time()), b.user(), b.payer_organization(), b.operator_user(), b.purpose(),
       info.display_name, info.location, info.time_zone},
      std::string(1, '\0')));
}

const RedisScript& ApplyScript() {
  static const RedisScript* const kScript = new RedisScript(absl::StrCat(kApplyOnceLua, R"lua(
-- KEYS: marker, entry, index...; ARGV: marker ttl, ut, sig, score, cutoff,
-- member, entry prefix, then field/value pairs.
if not apply_once(KEYS[1], tonumber(ARGV[1])) then return 0 end
local entry = KEYS[2]
local cur = redis.call('HMGET', entry, 'ut', 'seq', 'sig', 'ix')
if cur[1] and tonumber(cur[1]) > tonumber(ARGV[2]) then return 2 end
local seq = 0
if cur[2] then
  seq = tonumber(cur[2])
  if cur[3] ~= ARGV[3] then seq = seq + 1 end
end
local member = ARGV[6]
local new_ix = {}
local ixs = {}
for i = 3, #KEYS do
  new_ix[KEYS[i]] = true
  table.insert(ixs, KEYS[i])
end
if cur[4] then
  for k in string.gmatch(cur[4], '%S+') do
    if not new_ix[k] then redis.call('ZREM', k, member) end
  end
end
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], ARGV[4], member) end
local fields = {'ut', ARGV[2], 'seq', tostring(seq), 'sig', ARGV[3], 'ix', table.concat(ixs, ' ')}
for i = 8, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('HSET', entry, unpack(fields))
-- The window: entries of these indexes that ended before the cutoff.
for i = 3, #KEYS do
  local old = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[5], 'LIMIT', 0, 100)
  for _, m in ipairs(old) do
    local ekey = ARGV[7] .. m
    local eix = redis.call('HGET', ekey, 'ix')
    if eix then
      for k in string.gmatch(eix, '%S+') do redis.call('ZREM', k, m) end
    end
    redis.call('ZREM', KEYS[i], m)
    redis.call('DEL', ekey)
  end
end
return 1
)lua"));
  return *kScript;
}

}  // namespace

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

std::unique_ptr<InstrumentDirectory> NewInventoryDirectory(std::shared_ptr<grpc::Channel> channel,
                                                           const Clock* wall, const FeedOptions& options) {
  return std::make_unique<InventoryDirectory>(std::move(channel), wall, options);
}

FeedProjection::FeedProjection(RedisPool* redis, const Clock* clock, InstrumentDirectory* instruments,
                               FeedOptions options)
    : redis_(redis), clock_(clock), instruments_(instruments), options_(std::move(options)) {}

absl::Status FeedProjection::FollowOperator(const StreamEvent& event) {
  inv::InventoryEvent e;
  if (!e.ParseFromString(event.payload)) {
    LogWarning("feeds: undecodable inventory event skipped", {{"stream_id", event.stream_id}});
    return absl::OkStatus();
  }
  if (!e.has_instrument_changed()) return absl::OkStatus();
  const inv::Instrument& in = e.instrument_changed().instrument();
  int64_t etag = 0;
  if (!IsResourceName(in.name(), "instruments") || !absl::SimpleAtoi(in.etag(), &etag)) {
    LogWarning("feeds: instrument event without a name or a numeric etag skipped",
               {{"stream_id", event.stream_id}, {"instrument", in.name()}});
    return absl::OkStatus();
  }
  // The record only moves forward (a redelivered or late older event
  // changes nothing).
  static const RedisScript* const kScript = new RedisScript(R"lua(
local cur = redis.call('HGET', KEYS[1], 'etag')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'etag', ARGV[1], 'op', ARGV[2], 'own', ARGV[3])
return 1
)lua");
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Eval(*kScript, {OperatorKey(IdOf(in.name()))},
                                                 {std::to_string(etag), in.operator_organization(),
                                                  in.owner_organization()}));
  if (v.is_error()) {
    LogError("feeds: operator script failed", {{"error", v.str}, {"stream_id", event.stream_id}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "the instrument's operator could not be stored");
  }
  return absl::OkStatus();
}

absl::Status FeedProjection::Apply(const StreamEvent& event) {
  if (event.type == "labshare.inventory.v1.InventoryEvent") return FollowOperator(event);
  if (event.type != "labshare.booking.v1.BookingEvent") return absl::OkStatus();
  bk::BookingEvent e;
  if (!e.ParseFromString(event.payload)) {
    LogWarning("feeds: undecodable booking event skipped", {{"stream_id", event.stream_id}});
    return absl::OkStatus();
  }
  const bk::Booking* b = BookingOf(e);
  if (b == nullptr) return absl::OkStatus();  // leases, orders, quotas: their bookings say it all
  const std::string& event_id = e.header().event_id();
  if (event_id.empty() || !ValidResourceId(event_id) || !IsResourceName(b->name(), "bookings") ||
      !IsResourceName(b->instrument(), "instruments") || (!b->user().empty() && !IsResourceName(b->user(), "users")) ||
      (!b->operator_user().empty() && !IsResourceName(b->operator_user(), "users"))) {
    LogWarning("feeds: booking event with a malformed name skipped",
               {{"stream_id", event.stream_id}, {"booking", b->name()}});
    return absl::OkStatus();
  }
  auto info = instruments_->Lookup(b->instrument());
  if (!info.ok()) {
    if (info.status().code() != absl::StatusCode::kNotFound) return info.status();
    // An instrument inventory no longer knows: its id, the default zone.
    InstrumentInfo unknown;
    unknown.name = b->instrument();
    unknown.display_name = IdOf(b->instrument());
    unknown.owner_organization = b->instrument_owner();
    unknown.time_zone = options_.default_time_zone;
    info = unknown;
  }
  const std::string booking_id = IdOf(b->name());
  std::vector<std::string> keys = {absl::StrCat("{notify}:feed:done:", event_id),
                                   absl::StrCat(kEntryPrefix, booking_id),
                                   absl::StrCat("{notify}:feed:i:", IdOf(b->instrument()))};
  for (const std::string* user : {&b->user(), &b->operator_user()}) {
    if (user->empty()) continue;
    std::string key = absl::StrCat("{notify}:feed:u:", IdOf(*user));
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
  }
  const absl::Time update = FromProto(b->update_time());
  const absl::Time end = FromProto(b->blocked_interval().end_time()) > FromProto(b->reserved_interval().end_time())
                             ? FromProto(b->blocked_interval().end_time())
                             : FromProto(b->reserved_interval().end_time());
  const absl::Time cutoff = clock_->Now() - options_.past_window;
  std::vector<std::string> args = {std::to_string(kMarkerTtlSeconds),
                                   std::to_string(absl::ToUnixMicros(update)),
                                   Signature(*b, *info),
                                   std::to_string(absl::ToUnixSeconds(end)),
                                   std::to_string(absl::ToUnixSeconds(cutoff)),
                                   booking_id,
                                   kEntryPrefix,
                                   "b", b->SerializeAsString(),
                                   "ev", std::to_string(absl::ToUnixMicros(FromProto(e.header().event_time()))),
                                   "tz", info->time_zone,
                                   "in", info->display_name,
                                   "loc", info->location,
                                   "op", info->operator_organization};
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Eval(ApplyScript(), keys, args));
  if (v.is_error()) {
    LogError("feeds: apply script failed", {{"error", v.str}, {"stream_id", event.stream_id}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "the feed entry could not be stored");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<FeedEntry>> FeedProjection::UserEntries(const std::string& user_id) const {
  return Entries(absl::StrCat("{notify}:feed:u:", user_id));
}

absl::StatusOr<std::vector<FeedEntry>> FeedProjection::InstrumentEntries(const std::string& instrument_id) const {
  LS_ASSIGN_OR_RETURN(std::vector<FeedEntry> entries, Entries(absl::StrCat("{notify}:feed:i:", instrument_id)));
  // The operator as of the latest InstrumentChanged, over what each entry
  // recorded when its booking last changed.
  LS_ASSIGN_OR_RETURN(std::optional<InstrumentParties> parties, LatestParties(instrument_id));
  if (parties) {
    for (FeedEntry& e : entries) e.operator_organization = parties->op;
  }
  return entries;
}

absl::StatusOr<std::optional<InstrumentParties>> FeedProjection::LatestParties(
    const std::string& instrument_id) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"HMGET", OperatorKey(instrument_id), "etag", "op", "own"}));
  if (!v.is_array() || v.elements.size() != 3) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "the instrument's operator could not be read");
  }
  if (v.elements[0].is_nil()) return std::optional<InstrumentParties>();
  return std::optional<InstrumentParties>(InstrumentParties{v.elements[2].str, v.elements[1].str});
}

std::string FeedProjection::OperatorKey(const std::string& instrument_id) {
  return absl::StrCat("{notify}:feed:op:", instrument_id);
}

absl::StatusOr<std::vector<FeedEntry>> FeedProjection::Entries(const std::string& index) const {
  const absl::Time cutoff = clock_->Now() - options_.past_window;
  // The latest max_events by end time.
  LS_ASSIGN_OR_RETURN(RedisValue ids,
                      redis_->Command({"ZREVRANGEBYSCORE", index, "+inf",
                                       std::to_string(absl::ToUnixSeconds(cutoff)), "LIMIT", "0",
                                       std::to_string(options_.max_events)}));
  if (!ids.is_array()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "the feed index could not be read");
  }
  std::vector<std::vector<std::string>> commands;
  for (const RedisValue& id : ids.elements) {
    commands.push_back({"HMGET", absl::StrCat(kEntryPrefix, id.str), "b", "seq", "ev", "in", "loc", "op", "tz"});
  }
  std::vector<FeedEntry> out;
  if (commands.empty()) return out;
  LS_ASSIGN_OR_RETURN(std::vector<RedisValue> rows, redis_->Pipeline(commands));
  for (const RedisValue& row : rows) {
    if (!row.is_array() || row.elements.size() != 7 || row.elements[0].is_nil()) continue;  // trimmed meanwhile
    FeedEntry entry;
    if (!entry.booking.ParseFromString(row.elements[0].str)) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a feed entry could not be read");
    }
    entry.sequence = std::strtoll(row.elements[1].str.c_str(), nullptr, 10);
    entry.stamp = absl::FromUnixMicros(std::strtoll(row.elements[2].str.c_str(), nullptr, 10));
    entry.instrument_display_name = row.elements[3].str;
    entry.location = row.elements[4].str;
    entry.operator_organization = row.elements[5].str;
    entry.time_zone = row.elements[6].str;
    out.push_back(std::move(entry));
  }
  std::sort(out.begin(), out.end(), [](const FeedEntry& a, const FeedEntry& b) {
    const auto as = FromProto(a.booking.reserved_interval().start_time());
    const auto bs = FromProto(b.booking.reserved_interval().start_time());
    if (as != bs) return as < bs;
    return a.booking.name() < b.booking.name();
  });
  return out;
}

}  // namespace labshare::notify
