#include "services/usage/audit_chain.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/lua_guards.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "common/secret_file.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "labshare/type/v1/types.pb.h"
#include "labshare/usage/v1/usage_events.pb.h"

namespace labshare::usage {

namespace v1 = labshare::usage::v1;
using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

const char kAuditHashDomain[] = "LABSHARE-AUDIT-V1";
constexpr char kAuditHeadDomain[] = "LABSHARE-AUDIT-HEAD-V1";

namespace audit_keys {
std::string Head() { return "{usage}:audit:head"; }
std::string Entry(int64_t sequence) { return absl::StrCat("{usage}:audit:entry:", sequence); }
std::string Applied() { return "{usage}:audit:applied"; }
std::string Base() { return "{usage}:audit:base"; }
std::string AppliedField(absl::string_view source_service, absl::string_view event_id) {
  return absl::StrCat(source_service, "|", event_id);
}
std::string Index(absl::string_view kind, absl::string_view value) {
  return absl::StrCat("{usage}:audit:idx:", kind, ":", value);
}
namespace {
std::string Prefix(int64_t segment) {
  return segment == 0 ? std::string("{usage}:audit:") : absl::StrCat("{au:", segment, "}:audit:");
}
}  // namespace
std::string Head(int64_t segment) { return absl::StrCat(Prefix(segment), "head"); }
std::string Entry(int64_t segment, int64_t sequence) { return absl::StrCat(Prefix(segment), "entry:", sequence); }
std::string Applied(int64_t segment) { return absl::StrCat(Prefix(segment), "applied"); }
std::string Index(int64_t segment, absl::string_view kind, absl::string_view value) {
  return absl::StrCat(Prefix(segment), "idx:", kind, ":", value);
}
std::string Segments() { return "{usage}:audit:segments"; }
}  // namespace audit_keys

int64_t AuditSegmentView::SegmentOf(int64_t sequence) const {
  // The last segment starting at or before `sequence`.
  auto it = std::upper_bound(segments.begin(), segments.end(), sequence,
                             [](int64_t s, const Segment& seg) { return s < seg.first; });
  if (it == segments.begin()) return 0;
  return std::prev(it)->number;
}

namespace {

constexpr size_t kHashBytes = 32;

// ------------------------------------------------------------ hashing

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>(static_cast<unsigned char>((v >> shift) & 0xffu)));
  }
}

void PutU64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>(static_cast<unsigned char>((v >> shift) & 0xffu)));
  }
}

void PutBlob(std::string* out, absl::string_view bytes) {
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes.data(), bytes.size());
}

void PutTimestamp(std::string* out, const google::protobuf::Timestamp& t) {
  PutU64(out, static_cast<uint64_t>(t.seconds()));  // two's complement
  PutU32(out, static_cast<uint32_t>(t.nanos()));
}


std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

// ------------------------------------------------------------ decoding

// Pulls the generated code of every event type into binaries that link this
// library (static libraries only contribute objects something refers to), so
// that the generated pool knows them.
void EnsureEventTypesLinked() {
  static const bool linked = [] {
    return labshare::inventory::v1::InventoryEvent::descriptor() != nullptr &&
           labshare::booking::v1::BookingEvent::descriptor() != nullptr &&
           labshare::billing::v1::BillingEvent::descriptor() != nullptr &&
           labshare::usage::v1::UsageEvent::descriptor() != nullptr &&
           labshare::notify::v1::NotifyEvent::descriptor() != nullptr;
  }();
  (void)linked;
}

bool IsCollection(absl::string_view s) {
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

bool IsId(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  return true;
}

// "collection/id" or "collection/id/collection/id...".
bool LooksLikeResourceName(absl::string_view s) {
  if (s.size() > 512) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(s, '/');
  if (parts.size() < 2 || parts.size() % 2 != 0) return false;
  for (size_t i = 0; i < parts.size(); i += 2) {
    if (!IsCollection(parts[i]) || !IsId(parts[i + 1])) return false;
  }
  return true;
}

// "users/u1/notificationSettings": a name followed by one more collection
// segment (a singleton, AIP-156).
bool LooksLikeSingletonName(absl::string_view s) {
  const size_t slash = s.rfind('/');
  return slash != absl::string_view::npos && s.size() <= 512 && IsCollection(s.substr(slash + 1)) &&
         LooksLikeResourceName(s.substr(0, slash));
}

void AddOnce(std::string value, std::vector<std::string>* out) {
  if (std::find(out->begin(), out->end(), value) == out->end()) out->push_back(std::move(value));
}

// A string that looks like a name is kept only if it is a well-formed one;
// others ("instruments/../organizations/x", "organizations/*") are counted
// in `rejected` and never indexed. A singleton's name is kept with its
// parent's (usage.proto, AuditEntry.resources).
void AddResource(const std::string& value, std::vector<std::string>* out, std::vector<std::string>* rejected) {
  if (LooksLikeResourceName(value)) {
    if (!ValidResourceName(value)) {
      rejected->push_back(value);
      return;
    }
    AddOnce(value, out);
    return;
  }
  if (!LooksLikeSingletonName(value)) return;
  if (!ValidSingletonName(value)) {
    rejected->push_back(value);
    return;
  }
  AddOnce(value, out);
  AddOnce(value.substr(0, value.rfind('/')), out);
}

// String fields of `m` and, when depth is 0, of its direct submessages.
void CollectResources(const Message& m, int depth, std::vector<std::string>* out,
                      std::vector<std::string>* rejected) {
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING && f->type() == FieldDescriptor::TYPE_STRING) {
      if (f->is_repeated()) {
        for (int i = 0; i < r->FieldSize(m, f); ++i) AddResource(r->GetRepeatedString(m, f, i), out, rejected);
      } else {
        AddResource(r->GetString(m, f), out, rejected);
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && depth == 0 && !f->is_map()) {
      if (f->is_repeated()) {
        for (int i = 0; i < r->FieldSize(m, f); ++i) {
          CollectResources(r->GetRepeatedMessage(m, f, i), depth + 1, out, rejected);
        }
      } else {
        CollectResources(r->GetMessage(m, f), depth + 1, out, rejected);
      }
    }
  }
}

absl::Status Undecodable(absl::string_view why) {
  return MakeError(absl::StatusCode::kInvalidArgument, "UNDECODABLE_EVENT",
                   absl::StrCat("the event cannot be appended to the audit trail: ", why));
}

absl::Status StorageError(absl::string_view what) {
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", what);
}

absl::Status Corrupted(absl::string_view what) {
  return MakeError(absl::StatusCode::kInternal, "AUDIT_CORRUPTED",
                   absl::StrCat(what, "; run VerifyAuditChain"));
}

bool IsActorName(absl::string_view s) { return IsResourceName(s, "users") || IsResourceName(s, "services"); }

bool ValidSourceService(absl::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

// ------------------------------------------------------------ filters

bool TimeBefore(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  return a.seconds() != b.seconds() ? a.seconds() < b.seconds() : a.nanos() < b.nanos();
}

bool InInterval(const google::protobuf::Timestamp& t, const labshare::type::v1::Interval& i) {
  if (i.has_start_time() && TimeBefore(t, i.start_time())) return false;
  if (i.has_end_time() && !TimeBefore(t, i.end_time())) return false;
  return true;
}

bool Contains(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

bool Matches(const v1::ListAuditEntriesRequest& q, const v1::AuditEntry& e) {
  if (!q.source_services().empty() && !Contains(q.source_services(), e.source_service())) return false;
  if (!q.event_types().empty() && !Contains(q.event_types(), e.event_type())) return false;
  if (!q.event_id().empty() && q.event_id() != e.event_id()) return false;
  if (!q.actor().empty() && q.actor() != e.actor()) return false;
  if (!q.actor_organization().empty() && q.actor_organization() != e.actor_organization()) return false;
  if (!q.request_id().empty() && q.request_id() != e.request_id()) return false;
  if (!q.resource().empty() && !Contains(e.resources(), q.resource())) return false;
  if (q.has_append_interval() && !InInterval(e.append_time(), q.append_interval())) return false;
  if (q.has_event_interval() && !InInterval(e.event_time(), q.event_interval())) return false;
  return true;
}

// ------------------------------------------------------------ export

std::string JsonString(absl::string_view s) { return absl::StrCat("\"", JsonEscape(s), "\""); }

std::string JsonTime(const google::protobuf::Timestamp& t) {
  return absl::StrCat("{\"seconds\":", t.seconds(), ",\"nanos\":", t.nanos(), "}");
}

std::string EntryLine(const v1::AuditEntry& e) {
  return absl::StrCat(
      "{\"sequence\":", e.sequence(), ",\"source_service\":", JsonString(e.source_service()),
      ",\"event_id\":", JsonString(e.event_id()), ",\"event_type\":", JsonString(e.event_type()),
      ",\"payload_type\":", JsonString(e.payload_type()), ",\"event_time\":", JsonTime(e.event_time()),
      ",\"append_time\":", JsonTime(e.append_time()), ",\"payload\":\"", absl::Base64Escape(e.payload()),
      "\",\"previous_hash\":\"", Hex(e.previous_hash()), "\",\"hash\":\"", Hex(e.hash()),
      "\",\"actor\":", JsonString(e.actor()), ",\"actor_organization\":",
      JsonString(e.actor_organization()), "}\n");
}

// ------------------------------------------------------------ Lua

// Both append steps run in one segment's slot (audit_chain.h's layout): every
// key is that segment's; a closed segment's head answers STALE, as a moved
// head does (the appender then goes on in the next segment).
// KEYS: 1 head, 2 applied markers, 3 the new entry, 4.. index sets.
// ARGV: 1 marker field, 2 expected head sequence, 3 expected head hash ('' for
//       an empty chain), 4 new sequence, 5 entry bytes, 6 new hash,
//       7 append seconds, 8 append nanos, 9 head signature ('' unsigned),
//       10 signing key id.
const RedisScript& AppendScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
local done = redis.call('HGET', KEYS[2], ARGV[1])
if done then return {'APPLIED', done} end
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash', 'closed')
if (head[1] or '0') ~= ARGV[2] or (head[2] or '') ~= ARGV[3] or head[3] then return {'STALE'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'CORRUPT'} end
-- Nothing below may fail (Redis does not roll back): the indexes are sorted sets.
for i = 4, #KEYS do
  if not ls_type_is(KEYS[i], 'zset') then return redis.error_reply('WRONGTYPE ' .. KEYS[i]) end
end
redis.call('SET', KEYS[3], ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[1], 'seq', ARGV[4], 'hash', ARGV[6], 'at_s', ARGV[7], 'at_n', ARGV[8])
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'sig', ARGV[9], 'kid', ARGV[10])
else
  redis.call('HDEL', KEYS[1], 'sig', 'kid')
end
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[4]) end
return {'OK'}
)lua");
  return *s;
}

// AppendScript for several entries chained in one step. KEYS: 1 head, 2
// applied markers, then per entry its key and its index sets. ARGV: 1
// expected head sequence, 2 expected head hash, 3 entries, 4 append seconds
// and 5 nanos of the last entry, 6 head signature ('' unsigned), 7 key id,
// then per entry: marker, sequence, bytes, hash, number of index sets.
// STALE when the head moved or an entry's marker appeared meanwhile.
const RedisScript& AppendBatchScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash', 'closed')
if (head[1] or '0') ~= ARGV[1] or (head[2] or '') ~= ARGV[2] or head[3] then return {'STALE'} end
local n = tonumber(ARGV[3])
-- The markers and entry keys of the whole batch checked at once (one HMGET,
-- one EXISTS); only when one is found, entry by entry for the reply.
local markers, entry_keys = {}, {}
local p, k = 8, 3
for i = 1, n do
  markers[i], entry_keys[i] = ARGV[p], KEYS[k]
  k = k + 1 + tonumber(ARGV[p + 4])
  p = p + 5
end
local found = false
for i = 1, n, 1000 do
  local j = math.min(n, i + 999)
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(markers, i, j))) do
    if v then found = true end
  end
  if redis.call('EXISTS', unpack(entry_keys, i, j)) > 0 then found = true end
end
local checked = {}
p, k = 8, 3
for i = 1, n do
  local nidx = tonumber(ARGV[p + 4])
  if found then
    if redis.call('HEXISTS', KEYS[2], ARGV[p]) == 1 then return {'STALE'} end
    if redis.call('EXISTS', KEYS[k]) == 1 then return {'CORRUPT', ARGV[p + 1]} end
  end
  -- Nothing below may fail (Redis does not roll back): the indexes are sorted sets.
  for j = 1, nidx do
    local key = KEYS[k + j]
    if not checked[key] then
      if not ls_type_is(key, 'zset') then return redis.error_reply('WRONGTYPE ' .. key) end
      checked[key] = true
    end
  end
  p = p + 5
  k = k + 1 + nidx
end
-- The writes: an entry key each, the markers in one HSET, one ZADD per index.
local last_seq, last_hash
local applied, zadds, zkeys = {}, {}, {}
p, k = 8, 3
for i = 1, n do
  local seq, nidx = ARGV[p + 1], tonumber(ARGV[p + 4])
  redis.call('SET', KEYS[k], ARGV[p + 2])
  applied[#applied + 1] = ARGV[p]
  applied[#applied + 1] = seq
  for j = 1, nidx do
    local key = KEYS[k + j]
    local z = zadds[key]
    if not z then
      z = {}
      zadds[key] = z
      zkeys[#zkeys + 1] = key
    end
    z[#z + 1] = seq
    z[#z + 1] = seq
  end
  last_seq, last_hash = seq, ARGV[p + 3]
  p = p + 5
  k = k + 1 + nidx
end
for i = 1, #applied, 2000 do redis.call('HSET', KEYS[2], unpack(applied, i, math.min(#applied, i + 1999))) end
for _, key in ipairs(zkeys) do
  local z = zadds[key]
  for i = 1, #z, 2000 do redis.call('ZADD', key, unpack(z, i, math.min(#z, i + 1999))) end
end
redis.call('HSET', KEYS[1], 'seq', last_seq, 'hash', last_hash, 'at_s', ARGV[4], 'at_n', ARGV[5])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'sig', ARGV[6], 'kid', ARGV[7])
else
  redis.call('HDEL', KEYS[1], 'sig', 'kid')
end
return {'OK'}
)lua");
  return *s;
}

// Closes a segment at its head: KEYS 1 the segment's head, 2 (segment 0
// only) the entry key after the head, which gets "closed" so that a replica
// of a version without segments cannot append there. ARGV: 1 expected head
// sequence, 2 expected head hash. OK also when it is closed already.
const RedisScript& CloseSegmentScript() {
  static const RedisScript* s = new RedisScript(R"lua(
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash', 'closed')
if head[3] then return {'OK'} end
if (head[1] or '0') ~= ARGV[1] or (head[2] or '') ~= ARGV[2] then return {'STALE'} end
if KEYS[2] then redis.call('SET', KEYS[2], 'closed', 'NX') end
redis.call('HSET', KEYS[1], 'closed', '1')
return {'OK'}
)lua");
  return *s;
}

// Opens a segment: KEYS 1 its head, created only if absent. ARGV: 1 its
// first sequence, 2..5 the previous segment's final seq, hash, at_s, at_n,
// 6 signature ('' unsigned), 7 key id. EXISTS when another step opened it.
const RedisScript& OpenSegmentScript() {
  static const RedisScript* s = new RedisScript(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return {'EXISTS'} end
redis.call('HSET', KEYS[1], 'first', ARGV[1], 'seq', ARGV[2], 'hash', ARGV[3], 'at_s', ARGV[4], 'at_n', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'sig', ARGV[6], 'kid', ARGV[7]) end
return {'OK'}
)lua");
  return *s;
}

absl::StatusOr<int64_t> IntegerOrZero(const RedisValue& v) {
  if (v.is_nil()) return 0;
  int64_t out = 0;
  if (v.type != RedisValue::Type::kString || !absl::SimpleAtoi(v.str, &out)) {
    return StorageError("unexpected storage reply");
  }
  return out;
}

// The replies of `cmds`: a plain command when there is one, else one
// pipeline.
absl::StatusOr<std::vector<RedisValue>> CommandsIn(RedisPool* pool, const std::vector<std::vector<std::string>>& cmds) {
  if (cmds.size() != 1) return pool->Pipeline(cmds);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool->Command(cmds[0]));
  std::vector<RedisValue> out;
  out.push_back(std::move(v));
  return out;
}

}  // namespace

// ============================================================ free functions

bool ValidSingletonName(absl::string_view name) {
  const size_t slash = name.rfind('/');
  return slash != absl::string_view::npos && name.size() <= 512 && ValidCollection(name.substr(slash + 1)) &&
         ValidResourceName(name.substr(0, slash));
}

std::string AuditHashInput(const v1::AuditEntry& e) {
  std::string in;
  in.reserve(128 + e.payload().size() + e.source_service().size() + e.event_id().size() +
             e.event_type().size() + e.payload_type().size());
  in.append(kAuditHashDomain, sizeof(kAuditHashDomain) - 1);
  PutU64(&in, static_cast<uint64_t>(e.sequence()));
  PutBlob(&in, e.source_service());
  PutBlob(&in, e.event_id());
  PutBlob(&in, e.event_type());
  PutBlob(&in, e.payload_type());
  PutTimestamp(&in, e.event_time());
  PutTimestamp(&in, e.append_time());
  PutBlob(&in, e.payload());
  in.append(e.previous_hash());
  return in;
}

std::string AuditHashV1(const v1::AuditEntry& entry) {
  Sha256 sha;
  sha.Update(AuditHashInput(entry));
  return sha.Final();
}

absl::StatusOr<DecodedEvent> DecodeEvent(absl::string_view payload_type, absl::string_view payload) {
  EnsureEventTypesLinked();
  if (payload_type.empty()) return Undecodable("the stream entry has no type");
  const Descriptor* desc =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(std::string(payload_type));
  if (desc == nullptr) return Undecodable(absl::StrCat("unknown message type ", payload_type));
  const Message* prototype = google::protobuf::MessageFactory::generated_factory()->GetPrototype(desc);
  if (prototype == nullptr) return Undecodable(absl::StrCat("no generated class for ", payload_type));
  std::unique_ptr<Message> msg(prototype->New());
  if (payload.size() > static_cast<size_t>(INT32_MAX) ||
      !msg->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return Undecodable(absl::StrCat("the payload is not a valid ", payload_type));
  }
  const FieldDescriptor* hf = desc->FindFieldByName("header");
  if (hf == nullptr || hf->is_repeated() || hf->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE ||
      hf->message_type() != labshare::type::v1::EventHeader::descriptor()) {
    return Undecodable(absl::StrCat(payload_type, " has no EventHeader field \"header\""));
  }
  const Reflection* r = msg->GetReflection();
  labshare::type::v1::EventHeader header;
  header.CopyFrom(r->GetMessage(*msg, hf));
  if (header.event_id().empty()) return Undecodable("the event header has no event_id");

  DecodedEvent out;
  out.event_id = header.event_id();
  // A header time that is no valid Timestamp (nanos outside 0..999999999,
  // seconds outside the years 1..9999) is taken as missing, (0, 0): hashed
  // as given, a negative nanos would be u32 here and refused by an offline
  // verifier (deploy/verify_audit.py, struct ">I"). usage.proto, AuditEntry.
  if (const auto& t = header.event_time(); t.nanos() >= 0 && t.nanos() <= 999999999 &&
                                           t.seconds() >= -62135596800 && t.seconds() <= 253402300799) {
    out.event_time = t;
  }
  // Copied for filtering and indexing only when well-formed (the payload
  // keeps whatever the source wrote).
  if (IsActorName(header.actor())) {
    out.actor = header.actor();
  } else if (!header.actor().empty()) {
    out.rejected_names.push_back(header.actor());
  }
  if (IsResourceName(header.actor_organization(), "organizations")) {
    out.actor_organization = header.actor_organization();
  } else if (!header.actor_organization().empty()) {
    out.rejected_names.push_back(header.actor_organization());
  }
  out.request_id = header.request_id();
  if (const auto* oneof = desc->FindOneofByName("payload")) {
    if (const FieldDescriptor* set = r->GetOneofFieldDescriptor(*msg, oneof)) {
      if (set->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        out.event_type = set->message_type()->full_name();
        CollectResources(r->GetMessage(*msg, set), 0, &out.resources, &out.rejected_names);
      } else {
        out.event_type = set->full_name();
      }
    }
  }
  return out;
}

// ------------------------------------------------------------ signed head

std::string AuditHeadSigningInput(int64_t sequence, absl::string_view hash) {
  std::string out(kAuditHeadDomain);
  PutU64(&out, static_cast<uint64_t>(sequence));
  out.append(hash.data(), hash.size());
  return out;
}

namespace {

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

absl::Status InvalidAuditKey(absl::string_view why) {
  return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_AUDIT_KEY",
                   absl::StrCat("audit signing key: ", why,
                                "; make one with `openssl genpkey -algorithm ed25519 -out audit.pem` "
                                "(or -algorithm EC -pkeyopt ec_paramgen_curve:P-256)"));
}

// Ed25519 or EC on P-256; anything else is refused.
absl::Status CheckKeyType(EVP_PKEY* key, bool* ed25519) {
  if (EVP_PKEY_is_a(key, "ED25519")) {
    *ed25519 = true;
    return absl::OkStatus();
  }
  *ed25519 = false;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) == 1 &&
        (absl::string_view(group, len) == "prime256v1" || absl::string_view(group, len) == "P-256")) {
      return absl::OkStatus();
    }
    return InvalidAuditKey("an EC key must be on the P-256 curve");
  }
  return InvalidAuditKey(absl::StrCat("the key is ", EVP_PKEY_get0_type_name(key) != nullptr
                                                         ? EVP_PKEY_get0_type_name(key)
                                                         : "of an unknown type",
                                      ", not Ed25519 or ECDSA P-256"));
}

}  // namespace

AuditSigningKey::AuditSigningKey(EVP_PKEY* key, bool can_sign) : key_(key), can_sign_(can_sign), ed25519_(false) {}

AuditSigningKey::~AuditSigningKey() { EVP_PKEY_free(key_); }

absl::StatusOr<std::shared_ptr<const AuditSigningKey>> AuditSigningKey::FromPrivateKeyPem(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return InvalidAuditKey("out of memory");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) return InvalidAuditKey("not a PEM private key (an encrypted key is not supported)");
  std::shared_ptr<AuditSigningKey> out(new AuditSigningKey(key, true));
  LS_RETURN_IF_ERROR(CheckKeyType(key, &out->ed25519_));
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  if (len <= 0) return InvalidAuditKey("cannot encode its public key");
  Sha256 id;
  id.Update(absl::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)));
  OPENSSL_free(der);
  out->key_id_ = id.HexDigest();
  return std::shared_ptr<const AuditSigningKey>(std::move(out));
}

absl::StatusOr<std::shared_ptr<const AuditSigningKey>> AuditSigningKey::FromPrivateKeyFile(const std::string& path) {
  LS_ASSIGN_OR_RETURN(std::string pem, ReadSecretFile(path, "audit signing key"));
  absl::StatusOr<std::shared_ptr<const AuditSigningKey>> key = FromPrivateKeyPem(pem);
  WipeSecret(pem);
  return key;
}

absl::StatusOr<std::shared_ptr<const AuditSigningKey>> AuditSigningKey::FromPublicKeyPem(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return InvalidAuditKey("out of memory");
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) return InvalidAuditKey("not a PEM public key");
  std::shared_ptr<AuditSigningKey> out(new AuditSigningKey(key, false));
  LS_RETURN_IF_ERROR(CheckKeyType(key, &out->ed25519_));
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  if (len <= 0) return InvalidAuditKey("cannot encode the public key");
  Sha256 id;
  id.Update(absl::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)));
  OPENSSL_free(der);
  out->key_id_ = id.HexDigest();
  return std::shared_ptr<const AuditSigningKey>(std::move(out));
}

std::string AuditSigningKey::PublicKeyPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_PUBKEY(bio.get(), key_) != 1) return "";
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : "";
}

absl::StatusOr<std::string> AuditSigningKey::SignHead(int64_t sequence, absl::string_view hash) const {
  const std::string input = AuditHeadSigningInput(sequence, hash);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t len = 0;
  std::string sig;
  if (can_sign_ && ctx != nullptr &&
      EVP_DigestSignInit(ctx.get(), nullptr, ed25519_ ? nullptr : EVP_sha256(), nullptr, key_) == 1 &&
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size()) == 1) {
    sig.resize(len);
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1) {
      sig.resize(len);
      return sig;
    }
  }
  LogError("signing the audit head failed", {{"sequence", std::to_string(sequence)}});
  return MakeError(absl::StatusCode::kInternal, "AUDIT_SIGNING_FAILED", "the audit head could not be signed");
}

bool AuditSigningKey::VerifyHead(int64_t sequence, absl::string_view hash, absl::string_view signature) const {
  if (signature.empty()) return false;
  const std::string input = AuditHeadSigningInput(sequence, hash);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  return ctx != nullptr &&
         EVP_DigestVerifyInit(ctx.get(), nullptr, ed25519_ ? nullptr : EVP_sha256(), nullptr, key_) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
}

std::string AuditSourceForStream(absl::string_view stream) {
  if (stream == "{inventory}:outbox") return "inventory";
  if (stream == "{booking}:outbox") return "booking";
  if (stream == "{billing}:outbox") return "billing";
  if (stream == "{usage}:outbox") return "usage";
  if (stream == "{notify}:outbox") return "notify";
  if (absl::StartsWith(stream, "{bk:") && absl::EndsWith(stream, "}:outbox")) {
    absl::string_view p = stream.substr(4, stream.size() - 4 - 8);
    int partition = 0;
    if (!p.empty() && absl::SimpleAtoi(p, &partition) && partition >= 0) return "booking";
  }
  return "";
}

// ============================================================ AuditChain

AuditChain::AuditChain(RedisPool* pool, PageTokenCodec page_tokens, AuditChainOptions options)
    : pool_(pool), page_tokens_(std::move(page_tokens)), options_(std::move(options)), clock_(options_.clock ? options_.clock : &system_clock_) {
  if (options_.batch_size < 1) options_.batch_size = 1;
  if (options_.export_batch_size < 1) options_.export_batch_size = 1;
  if (options_.max_append_attempts < 1) options_.max_append_attempts = 1;
  if (options_.list_scan_budget < 1) options_.list_scan_budget = 1;
  if (options_.segment_entries < 1) options_.segment_entries = 1;
  EnsureEventTypesLinked();
}

// ------------------------------------------------------------ segments

AuditSegmentView AuditChain::ViewOf(const std::vector<KnownSegment>& known) {
  AuditSegmentView view;
  view.segments.reserve(known.size());
  for (const KnownSegment& k : known) view.segments.push_back({k.number, k.first});
  return view;
}

absl::StatusOr<std::vector<AuditChain::KnownSegment>> AuditChain::KnownSegments() const {
  {
    absl::MutexLock lock(&segments_mu_);
    if (!segments_.empty()) return segments_;
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"ZRANGE", audit_keys::Segments(), "0", "-1", "WITHSCORES"}));
  if (!v.is_array() || v.elements.size() % 2 != 0) return StorageError("unexpected storage reply");
  std::vector<KnownSegment> known = {KnownSegment{}};
  for (size_t i = 0; i < v.elements.size(); i += 2) {
    int64_t number = 0;
    double first = 0;
    if (!absl::SimpleAtoi(v.elements[i].str, &number) || !absl::SimpleAtod(v.elements[i + 1].str, &first)) {
      return Corrupted("the audit segment directory is unreadable");
    }
    known.push_back({number, static_cast<int64_t>(first), std::nullopt});
  }
  // Segments are opened one after the other: 1, 2, 3... each starting after
  // the one before.
  for (size_t i = 1; i < known.size(); ++i) {
    if (known[i].number != static_cast<int64_t>(i) || known[i].first <= known[i - 1].first) {
      return Corrupted("the audit segment directory is not a sequence of segments");
    }
  }
  absl::MutexLock lock(&segments_mu_);
  if (segments_.empty()) segments_ = std::move(known);
  return segments_;
}

void AuditChain::LearnSegment(int64_t number, int64_t first) const {
  absl::MutexLock lock(&segments_mu_);
  if (!segments_.empty() && segments_.back().number + 1 == number && segments_.back().first < first) {
    segments_.push_back({number, first, std::nullopt});
  }
}

void AuditChain::ForgetSegments() const {
  absl::MutexLock lock(&segments_mu_);
  segments_.clear();
}

absl::StatusOr<AuditChain::HeadRead> AuditChain::ReadHead() const {
  // A known segment whose head is gone: the storage was reset under this
  // object (tests flush it): start again from the directory.
  for (int round = 0; round < 3; ++round) {
    LS_ASSIGN_OR_RETURN(std::vector<KnownSegment> known, KnownSegments());
    while (true) {
      const int64_t k = known.back().number;
      // The head, then whether a next segment exists: if not, the head read
      // was the chain's when it was read (a segment is opened only after the
      // one before is closed, its head final).
      LS_ASSIGN_OR_RETURN(std::vector<RedisValue> r,
                          pool_->Pipeline({{"HMGET", audit_keys::Head(k), "seq", "hash", "at_s", "at_n", "sig", "kid"},
                                           {"HMGET", audit_keys::Head(k + 1), "first"}}));
      if (r.size() != 2 || !r[0].is_array() || r[0].elements.size() != 6 || !r[1].is_array() ||
          r[1].elements.size() != 1) {
        return StorageError("unexpected storage reply");
      }
      if (!r[1].elements[0].is_nil()) {
        LS_ASSIGN_OR_RETURN(int64_t first, IntegerOrZero(r[1].elements[0]));
        if (first <= known.back().first) {
          return Corrupted(absl::StrCat("audit segment ", k + 1, " starts before segment ", k));
        }
        known.push_back({k + 1, first, std::nullopt});
        LearnSegment(k + 1, first);
        continue;
      }
      if (k > 0 && r[0].elements[0].is_nil()) {
        ForgetSegments();
        break;
      }
      const std::vector<RedisValue>& h = r[0].elements;
      HeadRead out;
      LS_ASSIGN_OR_RETURN(int64_t seq, IntegerOrZero(h[0]));
      LS_ASSIGN_OR_RETURN(int64_t at_s, IntegerOrZero(h[2]));
      LS_ASSIGN_OR_RETURN(int64_t at_n, IntegerOrZero(h[3]));
      out.head.set_sequence(seq);
      if (seq > 0) {
        out.head.set_hash(h[1].str);
        out.head.mutable_append_time()->set_seconds(at_s);
        out.head.mutable_append_time()->set_nanos(static_cast<int32_t>(at_n));
        if (h[4].type == RedisValue::Type::kString) out.head.set_signature(h[4].str);
        if (h[5].type == RedisValue::Type::kString) out.head.set_key_id(h[5].str);
      }
      out.view = ViewOf(known);
      return out;
    }
  }
  return Corrupted("the head of the audit trail's newest segment is missing");
}

absl::StatusOr<AuditSegmentView> AuditChain::Segments() const {
  LS_ASSIGN_OR_RETURN(HeadRead r, ReadHead());
  return std::move(r.view);
}

absl::Status AuditChain::CloseSegment(int64_t segment, int64_t seq, const std::string& hash, bool* stale) {
  std::vector<std::string> keys = {audit_keys::Head(segment)};
  if (segment == 0) keys.push_back(audit_keys::Entry(0, seq + 1));
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(CloseSegmentScript(), keys, {std::to_string(seq), hash}));
  if (!v.is_array() || v.elements.empty()) return StorageError("unexpected storage reply");
  *stale = v.elements[0].str == "STALE";
  if (!*stale && v.elements[0].str != "OK") return StorageError("unexpected storage reply");
  return absl::OkStatus();
}

absl::StatusOr<AuditChain::Target> AuditChain::PrepareTarget(const std::vector<std::string>& markers,
                                                             std::optional<absl::Time> earliest_event) {
  const int64_t capacity = options_.segment_entries;
  // Each pass either answers or moves on by one step (a segment closed,
  // found or opened, or a lost compare-and-set); a pass that finds nothing
  // to do twice in a row is another replica's progress.
  for (int pass = 0; pass < options_.max_append_attempts + 8; ++pass) {
    LS_ASSIGN_OR_RETURN(std::vector<KnownSegment> known, KnownSegments());
    // The final append_time of the closed segments (immutable), once.
    std::vector<size_t> unknown;
    for (size_t j = 0; j + 1 < known.size(); ++j) {
      if (!known[j].last_append) unknown.push_back(j);
    }
    if (!unknown.empty() && !markers.empty()) {
      std::vector<std::vector<std::string>> reads;
      for (size_t j : unknown) reads.push_back({"HMGET", audit_keys::Head(known[j].number), "at_s", "at_n"});
      LS_ASSIGN_OR_RETURN(std::vector<RedisValue> times, pool_->Pipeline(reads));
      if (times.size() != unknown.size()) return StorageError("unexpected storage reply");
      absl::MutexLock lock(&segments_mu_);
      for (size_t u = 0; u < unknown.size(); ++u) {
        const RedisValue& t = times[u];
        if (!t.is_array() || t.elements.size() != 2) return StorageError("unexpected storage reply");
        LS_ASSIGN_OR_RETURN(int64_t at_s, IntegerOrZero(t.elements[0]));
        LS_ASSIGN_OR_RETURN(int64_t at_n, IntegerOrZero(t.elements[1]));
        const absl::Time at = absl::FromUnixSeconds(at_s) + absl::Nanoseconds(at_n);
        known[unknown[u]].last_append = at;
        if (unknown[u] < segments_.size() && segments_[unknown[u]].number == known[unknown[u]].number) {
          segments_[unknown[u]].last_append = at;
        }
      }
    }
    const int64_t k = known.back().number;
    const int64_t first = known.back().first;
    // The earlier segments that could hold one of the markers: the previous
    // one always, older ones whose last entry is recent enough.
    std::vector<int64_t> earlier;
    if (!markers.empty()) {
      for (size_t j = 0; j + 1 < known.size(); ++j) {
        const bool previous = j + 2 == known.size();
        if (previous || !earliest_event || !known[j].last_append ||
            *known[j].last_append >= *earliest_event - options_.marker_skew) {
          earlier.push_back(known[j].number);
        }
      }
    }
    std::vector<std::vector<std::string>> reads = {
        {"HMGET", audit_keys::Head(k), "seq", "hash", "closed", "at_s", "at_n", "sig", "kid"}};
    auto marker_read = [&markers](int64_t segment) {
      std::vector<std::string> cmd = {"HMGET", audit_keys::Applied(segment)};
      cmd.insert(cmd.end(), markers.begin(), markers.end());
      return cmd;
    };
    if (!markers.empty()) reads.push_back(marker_read(k));
    for (int64_t j : earlier) reads.push_back(marker_read(j));
    LS_ASSIGN_OR_RETURN(std::vector<RedisValue> r, pool_->Pipeline(reads));
    if (r.size() != reads.size() || !r[0].is_array() || r[0].elements.size() != 7) {
      return StorageError("unexpected storage reply");
    }
    for (size_t i = 1; i < r.size(); ++i) {
      if (!r[i].is_array() || r[i].elements.size() != markers.size()) return StorageError("unexpected storage reply");
    }
    const std::vector<RedisValue>& h = r[0].elements;
    if (k > 0 && h[0].is_nil()) {  // reset under this object
      ForgetSegments();
      continue;
    }
    LS_ASSIGN_OR_RETURN(int64_t head_seq, IntegerOrZero(h[0]));
    const std::string head_hash = h[1].is_nil() ? "" : h[1].str;
    if (head_seq > 0 && head_hash.size() != kHashBytes) return Corrupted("the audit head has no valid hash");
    if (head_seq < 0 || head_seq == std::numeric_limits<int64_t>::max()) {
      return Corrupted(absl::StrCat("the audit head sequence ", head_seq, " cannot be followed"));
    }
    if (!h[2].is_nil()) {
      // Closed: the next segment, found (and recorded in the directory if a
      // crash left it out) or opened from this one's final head.
      LS_ASSIGN_OR_RETURN(RedisValue next, pool_->Command({"HGET", audit_keys::Head(k + 1), "first"}));
      int64_t next_first = head_seq + 1;
      if (!next.is_nil()) {
        LS_ASSIGN_OR_RETURN(next_first, IntegerOrZero(next));
      } else {
        if (options_.segment_step_for_testing) LS_RETURN_IF_ERROR(options_.segment_step_for_testing("open", k + 1));
        LS_ASSIGN_OR_RETURN(
            RedisValue opened,
            pool_->Eval(OpenSegmentScript(), {audit_keys::Head(k + 1)},
                        {std::to_string(next_first), std::to_string(head_seq), head_hash,
                         h[3].is_nil() ? "0" : h[3].str, h[4].is_nil() ? "0" : h[4].str,
                         h[5].is_nil() ? "" : h[5].str, h[6].is_nil() ? "" : h[6].str}));
        if (!opened.is_array() || opened.elements.empty()) return StorageError("unexpected storage reply");
        if (opened.elements[0].str == "EXISTS") continue;  // another replica opened it: read it
        if (opened.elements[0].str != "OK") return StorageError("unexpected storage reply");
        if (options_.segment_step_for_testing) LS_RETURN_IF_ERROR(options_.segment_step_for_testing("opened", k + 1));
      }
      if (next_first <= first) return Corrupted(absl::StrCat("audit segment ", k + 1, " starts before segment ", k));
      LS_RETURN_IF_ERROR(
          pool_->Command({"ZADD", audit_keys::Segments(), "NX", std::to_string(next_first), std::to_string(k + 1)})
              .status());
      LearnSegment(k + 1, next_first);
      continue;
    }
    const int64_t held = std::max<int64_t>(0, head_seq - first + 1);
    if (held >= capacity) {
      bool stale = false;
      if (options_.segment_step_for_testing) LS_RETURN_IF_ERROR(options_.segment_step_for_testing("close", k));
      LS_RETURN_IF_ERROR(CloseSegment(k, head_seq, head_hash, &stale));
      continue;  // closed (or moved: read again)
    }
    Target t;
    t.segment = k;
    t.head_seq = head_seq;
    t.head_hash = head_hash;
    t.room = capacity - held;
    t.found.resize(markers.size());
    for (size_t i = 1; i < r.size(); ++i) {
      for (size_t m = 0; m < markers.size(); ++m) {
        if (t.found[m] || r[i].elements[m].is_nil()) continue;
        LS_ASSIGN_OR_RETURN(int64_t seq, IntegerOrZero(r[i].elements[m]));
        t.found[m] = seq;
      }
    }
    return t;
  }
  return MakeError(absl::StatusCode::kAborted, "AUDIT_CONTENTION",
                   "other replicas kept appending to the audit trail; retry the event later");
}

absl::StatusOr<AppendResult> AuditChain::Append(absl::string_view source_service,
                                                const StreamEvent& event) {
  if (!ValidSourceService(source_service)) {
    return InvalidField("source_service",
                        "must be a service name such as \"booking\": 1 to 64 lowercase letters, "
                        "digits, '_' or '-'");
  }
  LS_ASSIGN_OR_RETURN(DecodedEvent decoded, DecodeEvent(event.type, event.payload));
  if (!decoded.rejected_names.empty()) {
    LogWarning("event names malformed resources; recorded in the audit trail, not indexed under them",
               {{"source_service", std::string(source_service)},
                {"event_id", decoded.event_id},
                {"malformed_names", std::to_string(decoded.rejected_names.size())},
                {"first", decoded.rejected_names[0].substr(0, 120)}});
  }
  absl::MutexLock lock(&append_mu_);
  for (int attempt = 0; attempt < options_.max_append_attempts; ++attempt) {
    bool stale = false;
    absl::StatusOr<AppendResult> r = AppendOnce(source_service, event, decoded, &stale);
    if (!r.ok() || !stale) return r;
  }
  LogWarning("audit append gave up after repeated concurrent appends",
             {{"source_service", std::string(source_service)}, {"event_id", decoded.event_id}});
  return MakeError(absl::StatusCode::kAborted, "AUDIT_CONTENTION",
                   "other replicas kept appending to the audit trail; retry the event later");
}

absl::StatusOr<AppendResult> AuditChain::AppendOnce(absl::string_view source_service,
                                                    const StreamEvent& event,
                                                    const DecodedEvent& decoded, bool* stale) {
  *stale = false;
  const std::string marker = audit_keys::AppliedField(source_service, decoded.event_id);
  std::optional<absl::Time> event_time;
  if (decoded.event_time.seconds() != 0 || decoded.event_time.nanos() != 0) {
    event_time = FromProto(decoded.event_time);
  }
  // The head of the segment to append to, and the marker there or in an
  // earlier segment that could hold it.
  LS_ASSIGN_OR_RETURN(Target target, PrepareTarget({marker}, event_time));
  auto stored = [&](int64_t seq) -> absl::StatusOr<AppendResult> {
    LS_ASSIGN_OR_RETURN(std::optional<v1::AuditEntry> entry, Get(seq));
    if (!entry) return Corrupted(absl::StrCat("audit entry ", seq, " is missing"));
    AppendResult out;
    out.appended = false;
    out.entry = *std::move(entry);
    return out;
  };
  if (target.found[0]) return stored(*target.found[0]);

  const int64_t head_seq = target.head_seq;
  const std::string& head_hash = target.head_hash;
  const int64_t segment = target.segment;

  v1::AuditEntry e;
  const int64_t seq = head_seq + 1;
  e.set_name(absl::StrCat("auditEntries/", seq));
  e.set_sequence(seq);
  e.set_source_service(std::string(source_service));
  e.set_event_id(decoded.event_id);
  e.set_event_type(decoded.event_type);
  e.set_payload_type(event.type);
  if (decoded.event_time.seconds() != 0 || decoded.event_time.nanos() != 0) {
    *e.mutable_event_time() = decoded.event_time;
  }
  *e.mutable_append_time() = ToProto(clock_->Now());
  e.set_payload(event.payload);
  e.set_previous_hash(head_seq == 0 ? std::string(kHashBytes, '\0') : head_hash);
  e.set_algorithm(v1::HASH_ALGORITHM_SHA256);
  e.set_actor(decoded.actor);
  e.set_actor_organization(decoded.actor_organization);
  e.set_request_id(decoded.request_id);
  for (const auto& r : decoded.resources) e.add_resources(r);
  e.set_hash(AuditHashV1(e));
  std::string signature;
  if (options_.signing_key != nullptr) {
    LS_ASSIGN_OR_RETURN(signature, options_.signing_key->SignHead(seq, e.hash()));
  }

  std::vector<std::string> keys = {audit_keys::Head(segment), audit_keys::Applied(segment),
                                   audit_keys::Entry(segment, seq), audit_keys::Index(segment, "event", e.event_id())};
  if (!e.actor().empty()) keys.push_back(audit_keys::Index(segment, "actor", e.actor()));
  if (!e.request_id().empty()) keys.push_back(audit_keys::Index(segment, "request", e.request_id()));
  for (const auto& r : e.resources()) keys.push_back(audit_keys::Index(segment, "resource", r));
  std::vector<std::string> args = {marker,
                                   std::to_string(head_seq),
                                   head_hash,
                                   std::to_string(seq),
                                   e.SerializeAsString(),
                                   e.hash(),
                                   std::to_string(e.append_time().seconds()),
                                   std::to_string(e.append_time().nanos()),
                                   signature,
                                   options_.signing_key != nullptr ? options_.signing_key->key_id() : ""};
  if (options_.before_commit_for_testing) options_.before_commit_for_testing();
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(AppendScript(), keys, args));
  if (!v.is_array() || v.elements.empty()) return StorageError("unexpected storage reply");
  const std::string& tag = v.elements[0].str;
  if (tag == "OK") {
    AppendResult out;
    out.appended = true;
    out.entry = std::move(e);
    return out;
  }
  if (tag == "APPLIED" && v.elements.size() == 2) {
    LS_ASSIGN_OR_RETURN(int64_t applied_at, IntegerOrZero(v.elements[1]));
    return stored(applied_at);
  }
  if (tag == "STALE") {
    *stale = true;
    return AppendResult{};
  }
  if (tag == "CORRUPT") return Corrupted(absl::StrCat("audit entry ", seq, " exists beyond the head"));
  return StorageError("unexpected storage reply");
}

std::vector<absl::StatusOr<AppendResult>> AuditChain::AppendBatch(absl::string_view source_service,
                                                                   const std::vector<StreamEvent>& events) {
  std::vector<absl::StatusOr<AppendResult>> out(events.size(), AppendResult{});
  if (events.empty()) return out;
  if (!ValidSourceService(source_service)) {
    for (auto& r : out) {
      r = InvalidField("source_service",
                       "must be a service name such as \"booking\": 1 to 64 lowercase letters, "
                       "digits, '_' or '-'");
    }
    return out;
  }
  std::vector<std::optional<DecodedEvent>> decoded(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    absl::StatusOr<DecodedEvent> d = DecodeEvent(events[i].type, events[i].payload);
    if (!d.ok()) {
      out[i] = d.status();
      continue;
    }
    if (!d->rejected_names.empty()) {
      LogWarning("event names malformed resources; recorded in the audit trail, not indexed under them",
                 {{"source_service", std::string(source_service)},
                  {"event_id", d->event_id},
                  {"malformed_names", std::to_string(d->rejected_names.size())},
                  {"first", d->rejected_names[0].substr(0, 120)}});
    }
    decoded[i] = *std::move(d);
  }
  absl::MutexLock lock(&append_mu_);
  // Each step commits what fits in the current segment (a batch reaching the
  // end of one goes on in the next); a lost compare-and-set is a failed
  // attempt, retried.
  std::vector<bool> done(events.size(), false);
  auto pending = [&] {
    for (size_t i = 0; i < events.size(); ++i) {
      if (decoded[i] && !done[i]) return true;
    }
    return false;
  };
  for (int attempt = 0; attempt < options_.max_append_attempts;) {
    bool stale = false;
    absl::Status s = AppendBatchOnce(source_service, events, decoded, &out, &done, &stale);
    if (!s.ok()) {
      for (size_t i = 0; i < events.size(); ++i) {
        if (decoded[i] && !done[i]) out[i] = s;
      }
      return out;
    }
    if (!pending()) return out;
    if (stale) ++attempt;
  }
  LogWarning("audit append gave up after repeated concurrent appends",
             {{"source_service", std::string(source_service)}, {"events", std::to_string(events.size())}});
  for (size_t i = 0; i < events.size(); ++i) {
    if (decoded[i] && !done[i]) {
      out[i] = MakeError(absl::StatusCode::kAborted, "AUDIT_CONTENTION",
                         "other replicas kept appending to the audit trail; retry the event later");
    }
  }
  return out;
}

absl::Status AuditChain::AppendBatchOnce(absl::string_view source_service, const std::vector<StreamEvent>& events,
                                         const std::vector<std::optional<DecodedEvent>>& decoded,
                                         std::vector<absl::StatusOr<AppendResult>>* out, std::vector<bool>* done,
                                         bool* stale) {
  *stale = false;
  std::vector<size_t> todo;
  std::vector<std::string> markers(events.size());
  std::vector<std::string> fields;
  // The earliest event_time of the batch (none when an event has none):
  // which earlier segments' markers are read.
  std::optional<absl::Time> earliest;
  bool untimed = false;
  for (size_t i = 0; i < events.size(); ++i) {
    if (!decoded[i] || (*done)[i]) continue;
    markers[i] = audit_keys::AppliedField(source_service, decoded[i]->event_id);
    fields.push_back(markers[i]);
    todo.push_back(i);
    const google::protobuf::Timestamp& t = decoded[i]->event_time;
    if (t.seconds() == 0 && t.nanos() == 0) {
      untimed = true;
    } else if (!earliest || FromProto(t) < *earliest) {
      earliest = FromProto(t);
    }
  }
  if (todo.empty()) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(Target target, PrepareTarget(fields, untimed ? std::nullopt : earliest));
  const int64_t segment = target.segment;
  int64_t head_seq = target.head_seq;
  std::string head_hash = target.head_hash;
  const int64_t expected_seq = head_seq;
  const std::string expected_hash = head_hash;
  // Appended before: the stored entries, read together.
  std::vector<std::pair<size_t, int64_t>> before;  // (event, sequence)
  // Appended now, in order; a repeated marker in the batch is a redelivery of
  // the first.
  std::vector<v1::AuditEntry> entries;
  std::vector<size_t> entry_event;
  absl::flat_hash_map<std::string, size_t> fresh;  // marker -> index in entries
  std::vector<std::pair<size_t, size_t>> repeats;   // (event, index in entries)
  for (size_t t = 0; t < todo.size(); ++t) {
    const size_t i = todo[t];
    if (target.found[t]) {
      before.emplace_back(i, *target.found[t]);
      continue;
    }
    if (auto it = fresh.find(markers[i]); it != fresh.end()) {
      repeats.emplace_back(i, it->second);
      continue;
    }
    // The segment is full: the rest goes to the next one (a next step).
    if (static_cast<int64_t>(entries.size()) >= target.room) continue;
    if (head_seq < 0 || head_seq == std::numeric_limits<int64_t>::max()) {
      return Corrupted(absl::StrCat("the audit head sequence ", head_seq, " cannot be followed"));
    }
    const DecodedEvent& d = *decoded[i];
    const StreamEvent& event = events[i];
    v1::AuditEntry e;
    const int64_t seq = head_seq + 1;
    e.set_name(absl::StrCat("auditEntries/", seq));
    e.set_sequence(seq);
    e.set_source_service(std::string(source_service));
    e.set_event_id(d.event_id);
    e.set_event_type(d.event_type);
    e.set_payload_type(event.type);
    if (d.event_time.seconds() != 0 || d.event_time.nanos() != 0) *e.mutable_event_time() = d.event_time;
    *e.mutable_append_time() = ToProto(clock_->Now());
    e.set_payload(event.payload);
    e.set_previous_hash(head_seq == 0 ? std::string(kHashBytes, '\0') : head_hash);
    e.set_algorithm(v1::HASH_ALGORITHM_SHA256);
    e.set_actor(d.actor);
    e.set_actor_organization(d.actor_organization);
    e.set_request_id(d.request_id);
    for (const auto& r : d.resources) e.add_resources(r);
    e.set_hash(AuditHashV1(e));
    head_seq = seq;
    head_hash = e.hash();
    fresh[markers[i]] = entries.size();
    entries.push_back(std::move(e));
    entry_event.push_back(i);
  }
  if (!entries.empty()) {
    const v1::AuditEntry& last = entries.back();
    std::string signature;
    if (options_.signing_key != nullptr) {
      LS_ASSIGN_OR_RETURN(signature, options_.signing_key->SignHead(last.sequence(), last.hash()));
    }
    std::vector<std::string> keys = {audit_keys::Head(segment), audit_keys::Applied(segment)};
    std::vector<std::string> args = {std::to_string(expected_seq),
                                     expected_hash,
                                     std::to_string(entries.size()),
                                     std::to_string(last.append_time().seconds()),
                                     std::to_string(last.append_time().nanos()),
                                     signature,
                                     options_.signing_key != nullptr ? options_.signing_key->key_id() : ""};
    for (size_t j = 0; j < entries.size(); ++j) {
      const v1::AuditEntry& e = entries[j];
      keys.push_back(audit_keys::Entry(segment, e.sequence()));
      const size_t first_index = keys.size();
      keys.push_back(audit_keys::Index(segment, "event", e.event_id()));
      if (!e.actor().empty()) keys.push_back(audit_keys::Index(segment, "actor", e.actor()));
      if (!e.request_id().empty()) keys.push_back(audit_keys::Index(segment, "request", e.request_id()));
      for (const auto& r : e.resources()) keys.push_back(audit_keys::Index(segment, "resource", r));
      args.push_back(markers[entry_event[j]]);
      args.push_back(std::to_string(e.sequence()));
      args.push_back(e.SerializeAsString());
      args.push_back(e.hash());
      args.push_back(std::to_string(keys.size() - first_index));
    }
    if (options_.before_commit_for_testing) options_.before_commit_for_testing();
    LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(AppendBatchScript(), keys, args));
    if (!v.is_array() || v.elements.empty()) return StorageError("unexpected storage reply");
    const std::string& tag = v.elements[0].str;
    if (tag == "STALE") {
      *stale = true;
      return absl::OkStatus();
    }
    if (tag == "CORRUPT") {
      return Corrupted(absl::StrCat("audit entry ", v.elements.size() > 1 ? v.elements[1].str : "?",
                                    " exists beyond the head"));
    }
    if (tag != "OK") return StorageError("unexpected storage reply");
  }
  // Committed: the new entries (and repeats of them in the batch) answer OK
  // whatever happens next.
  for (size_t j = 0; j < entries.size(); ++j) {
    AppendResult r;
    r.appended = true;
    r.entry = entries[j];
    (*out)[entry_event[j]] = std::move(r);
    (*done)[entry_event[j]] = true;
  }
  for (const auto& [i, j] : repeats) {
    AppendResult r;
    r.appended = false;
    r.entry = entries[j];
    (*out)[i] = std::move(r);
    (*done)[i] = true;
  }
  // The stored entries of events appended before: a failure to read them
  // answers only those events with it.
  if (!before.empty()) {
    std::vector<int64_t> seqs;
    for (const auto& [i, seq] : before) seqs.push_back(seq);
    absl::StatusOr<std::vector<std::optional<v1::AuditEntry>>> stored = [&]() -> absl::StatusOr<std::vector<std::optional<v1::AuditEntry>>> {
      LS_ASSIGN_OR_RETURN(HeadRead h, ReadHead());
      return GetMany(h.view, seqs);
    }();
    for (size_t j = 0; j < before.size(); ++j) {
      (*done)[before[j].first] = true;
      if (!stored.ok()) {
        (*out)[before[j].first] = stored.status();
      } else if (!(*stored)[j]) {
        (*out)[before[j].first] = Corrupted(absl::StrCat("audit entry ", before[j].second, " is missing"));
      } else {
        AppendResult r;
        r.appended = false;
        r.entry = *std::move((*stored)[j]);
        (*out)[before[j].first] = std::move(r);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AuditAnchor> AuditChain::ArchivedBase() const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HMGET", audit_keys::Base(), "seq", "hash"}));
  if (!v.is_array() || v.elements.size() != 2) return StorageError("unexpected storage reply");
  v1::AuditAnchor base;
  LS_ASSIGN_OR_RETURN(int64_t seq, IntegerOrZero(v.elements[0]));
  if (seq < 0 || (seq > 0 && (v.elements[1].is_nil() || v.elements[1].str.size() != kHashBytes))) {
    return Corrupted("the archived base of the audit trail has no valid hash");
  }
  base.set_sequence(seq);
  if (seq > 0) base.set_hash(v.elements[1].str);
  return base;
}

absl::StatusOr<v1::AuditChainHead> AuditChain::Head() const {
  LS_ASSIGN_OR_RETURN(HeadRead r, ReadHead());
  return std::move(r.head);
}

absl::StatusOr<std::optional<v1::AuditEntry>> AuditChain::Get(int64_t sequence) const {
  LS_ASSIGN_OR_RETURN(HeadRead head, ReadHead());
  LS_ASSIGN_OR_RETURN(auto entries, GetMany(head.view, {sequence}));
  return std::move(entries[0]);
}

absl::StatusOr<std::vector<std::optional<v1::AuditEntry>>> AuditChain::GetMany(
    const AuditSegmentView& view, const std::vector<int64_t>& sequences) const {
  std::vector<std::optional<v1::AuditEntry>> out(sequences.size());
  if (sequences.empty()) return out;
  // One MGET per segment (one slot each), in one round trip.
  std::vector<std::vector<std::string>> cmds;
  std::vector<std::vector<size_t>> positions;
  std::vector<int64_t> segment_of_cmd;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t segment = view.SegmentOf(sequences[i]);
    size_t c = 0;
    while (c < cmds.size() && segment_of_cmd[c] != segment) ++c;
    if (c == cmds.size()) {
      cmds.push_back({"MGET"});
      positions.emplace_back();
      segment_of_cmd.push_back(segment);
    }
    cmds[c].push_back(audit_keys::Entry(segment, sequences[i]));
    positions[c].push_back(i);
  }
  LS_ASSIGN_OR_RETURN(std::vector<RedisValue> replies, CommandsIn(pool_, cmds));
  if (replies.size() != cmds.size()) return StorageError("unexpected storage reply");
  for (size_t c = 0; c < cmds.size(); ++c) {
    const RedisValue& v = replies[c];
    if (!v.is_array() || v.elements.size() != positions[c].size()) return StorageError("unexpected storage reply");
    for (size_t m = 0; m < positions[c].size(); ++m) {
      const size_t i = positions[c][m];
      if (v.elements[m].type != RedisValue::Type::kString) continue;
      v1::AuditEntry e;
      if (e.ParseFromString(v.elements[m].str)) {
        out[i] = std::move(e);
      } else {
        LogError("stored audit entry does not parse", {{"sequence", std::to_string(sequences[i])}});
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> AuditChain::IndexMembers(const AuditSegmentView& view, absl::string_view kind,
                                                              absl::string_view value, int64_t lo, int64_t hi,
                                                              bool descending, int want) const {
  std::vector<int64_t> out;
  // The segments' parts of [lo, hi), in the order of the scan.
  struct Part {
    int64_t segment, lo, hi;
  };
  std::vector<Part> parts;
  const auto& segs = view.segments;
  for (size_t i = 0; i < segs.size(); ++i) {
    const int64_t a = std::max(lo, segs[i].first);
    const int64_t b = i + 1 < segs.size() ? std::min(hi, segs[i + 1].first) : hi;
    if (a < b) parts.push_back({segs[i].number, a, b});
  }
  if (descending) std::reverse(parts.begin(), parts.end());
  // A few segments per round trip: a sparse filter crosses many.
  constexpr size_t kSegmentsPerTrip = 8;
  for (size_t p = 0; p < parts.size() && static_cast<int>(out.size()) < want; p += kSegmentsPerTrip) {
    std::vector<std::vector<std::string>> cmds;
    const std::string limit = std::to_string(want - static_cast<int>(out.size()));
    for (size_t q = p; q < parts.size() && q < p + kSegmentsPerTrip; ++q) {
      const std::string key = audit_keys::Index(parts[q].segment, kind, value);
      if (descending) {
        cmds.push_back({"ZREVRANGEBYSCORE", key, std::to_string(parts[q].hi - 1), std::to_string(parts[q].lo),
                        "LIMIT", "0", limit});
      } else {
        cmds.push_back({"ZRANGEBYSCORE", key, std::to_string(parts[q].lo), std::to_string(parts[q].hi - 1),
                        "LIMIT", "0", limit});
      }
    }
    LS_ASSIGN_OR_RETURN(std::vector<RedisValue> replies, CommandsIn(pool_, cmds));
    for (const RedisValue& v : replies) {
      if (!v.is_array()) return StorageError("unexpected storage reply");
      for (const auto& m : v.elements) {
        int64_t seq = 0;
        if (static_cast<int>(out.size()) < want && absl::SimpleAtoi(m.str, &seq)) out.push_back(seq);
      }
    }
  }
  return out;
}

// ------------------------------------------------------------ List

absl::StatusOr<v1::ListAuditEntriesResponse> AuditChain::List(const Principal& caller,
                                                              const v1::ListAuditEntriesRequest& q) const {
  if (q.start_sequence() < 0) return InvalidField("start_sequence", "must not be negative (0: from the first entry)");
  if (q.end_sequence() < 0) return InvalidField("end_sequence", "must not be negative (0: up to the head)");
  if (q.start_sequence() > 0 && q.end_sequence() > 0 && q.end_sequence() <= q.start_sequence()) {
    return InvalidField("end_sequence", "must be greater than start_sequence (half-open range)");
  }
  for (const auto& [field, interval] : {std::make_pair("append_interval", &q.append_interval()),
                                        std::make_pair("event_interval", &q.event_interval())}) {
    if (interval->has_start_time() && interval->has_end_time() &&
        !TimeBefore(interval->start_time(), interval->end_time())) {
      return InvalidField(absl::StrCat(field, ".end_time"), "must be after start_time (half-open interval)");
    }
  }
  if (!q.resource().empty() && !ValidSingletonName(q.resource())) {
    LS_RETURN_IF_ERROR(CheckResourceName(q.resource(), "resource"));
  }
  if (!q.actor().empty() && !IsActorName(q.actor())) {
    return InvalidField("actor", "must be 'users/{id}' or 'services/{id}' (id: [a-z0-9][a-z0-9-]{0,62})",
                        "INVALID_NAME");
  }
  if (!q.actor_organization().empty()) {
    LS_RETURN_IF_ERROR(ParseResourceName(q.actor_organization(), "organizations", "actor_organization").status());
  }
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(q, caller));
  int64_t after = 0;
  if (!page.after.empty() && (!absl::SimpleAtoi(page.after, &after) || after < 1)) {
    return InvalidField("page_token", "not a token from the previous page of this same query; start again "
                        "without page_token", "INVALID_PAGE_TOKEN");
  }

  v1::ListAuditEntriesResponse resp;
  LS_ASSIGN_OR_RETURN(HeadRead head_read, ReadHead());
  *resp.mutable_head() = head_read.head;
  const AuditSegmentView& view = head_read.view;
  const int64_t head = resp.head().sequence();
  LS_ASSIGN_OR_RETURN(v1::AuditAnchor base, ArchivedBase());
  if (options_.after_base_for_testing) options_.after_base_for_testing();
  int64_t lo = std::max<int64_t>({q.start_sequence(), 1, base.sequence() + 1});
  int64_t hi = head + 1;  // exclusive
  if (q.end_sequence() > 0) hi = std::min(hi, q.end_sequence());
  if (after > 0) {
    if (q.descending()) {
      hi = std::min(hi, after);
    } else {
      lo = std::max(lo, after + 1);
    }
  }

  // The index to go through (one per segment), if a filter has one.
  std::string index_kind, index_value;
  if (!q.event_id().empty()) {
    index_kind = "event", index_value = q.event_id();
  } else if (!q.request_id().empty()) {
    index_kind = "request", index_value = q.request_id();
  } else if (!q.resource().empty()) {
    index_kind = "resource", index_value = q.resource();
  } else if (!q.actor().empty()) {
    index_kind = "actor", index_value = q.actor();
  }
  const bool indexed = !index_kind.empty();
  const bool basic = q.view() != v1::AUDIT_ENTRY_VIEW_FULL;
  int scanned = 0;
  int64_t last_examined = 0;
  // A full page looks on (within the scan budget) for one more match without
  // taking it, so that the last page of a filtered list carries no token: a
  // token is set when that match exists (the next page starts there) or the
  // budget stopped the scan with entries left in range.
  bool more = false;
  while (lo < hi && scanned < options_.list_scan_budget && !more) {
    const int want = std::min(options_.batch_size, options_.list_scan_budget - scanned);
    std::vector<int64_t> candidates;
    if (!indexed) {
      for (int i = 0; i < want && lo + i < hi; ++i) {
        candidates.push_back(q.descending() ? hi - 1 - i : lo + i);
      }
    } else {
      LS_ASSIGN_OR_RETURN(candidates, IndexMembers(view, index_kind, index_value, lo, hi, q.descending(), want));
    }
    // A short answer from an index: nothing more in range once these are consumed.
    const bool index_exhausted = indexed && static_cast<int>(candidates.size()) < want;
    if (candidates.empty()) {
      lo = hi;
      break;
    }
    LS_ASSIGN_OR_RETURN(auto entries, GetMany(view, candidates));
    for (size_t i = 0; i < candidates.size(); ++i) {
      auto& e = entries[i];
      // Every sequence after the archived ones up to the head has an entry
      // (no gaps): one missing, unreadable or carrying another sequence is
      // damage, whatever the filters (they cannot be judged on it), as in
      // ExportAuditTrail; unless labshare-archive took it meanwhile (the
      // base moved past it since it was read).
      const bool readable = e && e->sequence() == candidates[i];
      bool archived = false;
      if (!readable) {
        if (candidates[i] > base.sequence()) {
          LS_ASSIGN_OR_RETURN(base, ArchivedBase());
        }
        archived = candidates[i] <= base.sequence();
        if (!archived) {
          if (resp.entries_size() >= page.page_size) {
            more = true;  // the next page starts at it (and answers the damage)
            break;
          }
          return Corrupted(absl::StrCat("audit entry ", candidates[i], " is missing or unreadable"));
        }
      }
      const bool match = readable && Matches(q, *e);
      if (match && resp.entries_size() >= page.page_size) {
        more = true;  // not examined: the next page starts at it
        break;
      }
      ++scanned;
      last_examined = candidates[i];
      if (q.descending()) {
        hi = candidates[i];
      } else {
        lo = candidates[i] + 1;
      }
      if (!match) continue;
      if (basic) e->clear_payload();
      *resp.add_entries() = *std::move(e);
    }
    if (index_exhausted && last_examined == candidates.back()) lo = hi;
  }
  // Without `more`, the scan ended on the range (no token) or on the budget
  // (entries left in range: a token to go on from).
  if (lo < hi && last_examined > 0) {
    resp.set_next_page_token(page_tokens_.Make(q, caller, std::to_string(last_examined)));
  }
  return resp;
}

// ------------------------------------------------------------ Verify

namespace {

// The first of VerifyAuditChain's and the exports' INVALID_FIELD checks.
absl::Status CheckNotNegative(int64_t start_sequence, int64_t end_sequence) {
  if (start_sequence < 0) return InvalidField("start_sequence", "must not be negative (0: from the first entry)");
  if (end_sequence < 0) return InvalidField("end_sequence", "must not be negative (0: up to the head)");
  return absl::OkStatus();
}

// The caller's deadline (real time, as gRPC's; not the chain's clock),
// checked before each batch Verify reads.
absl::Status CheckDeadline(absl::Time deadline) {
  if (absl::Now() < deadline) return absl::OkStatus();
  return MakeError(absl::StatusCode::kDeadlineExceeded, "DEADLINE_EXCEEDED",
                   "the deadline passed before the range was verified; verify it in smaller ranges "
                   "(start_sequence, end_sequence) or allow more time");
}

}  // namespace

absl::StatusOr<AuditChain::Range> AuditChain::ResolveRange(int64_t start_sequence,
                                                           int64_t end_sequence) const {
  LS_RETURN_IF_ERROR(CheckNotNegative(start_sequence, end_sequence));
  // The request's own values first (VerifyAuditChain's comment: INVALID_FIELD
  // before OUT_OF_RANGE), whatever the chain holds.
  if (start_sequence > 0 && end_sequence > 0 && end_sequence <= start_sequence) {
    return InvalidField("end_sequence", "must be greater than start_sequence (half-open range)");
  }
  Range range;
  LS_ASSIGN_OR_RETURN(range.base, ArchivedBase());
  if (options_.after_base_for_testing) options_.after_base_for_testing();
  LS_ASSIGN_OR_RETURN(HeadRead head_read, ReadHead());
  range.head = std::move(head_read.head);
  range.view = std::move(head_read.view);
  const int64_t head = range.head.sequence();
  range.start = start_sequence == 0 ? range.base.sequence() + 1 : start_sequence;
  if (range.start <= range.base.sequence()) {
    return MakeError(absl::StatusCode::kOutOfRange, "SEQUENCE_OUT_OF_RANGE",
                     absl::StrCat("entries up to ", range.base.sequence(),
                                  " were archived to a file (labshare-archive); start at ",
                                  range.base.sequence() + 1, " or 0"),
                     {{"head_sequence", std::to_string(head)},
                      {"first_sequence", std::to_string(range.base.sequence() + 1)}});
  }
  // Start 0 on a chain with no entry after the archived ones is beyond the
  // head too, whatever the end.
  if (range.start > head) {
    return MakeError(absl::StatusCode::kOutOfRange, "SEQUENCE_OUT_OF_RANGE",
                     absl::StrCat("start_sequence ", range.start, " is beyond the head of the audit trail (",
                                  head, ")"),
                     {{"head_sequence", std::to_string(head)}});
  }
  // Start 0 with an end at or before the first entry still in storage.
  if (end_sequence > 0 && end_sequence <= range.start) {
    return InvalidField("end_sequence",
                        absl::StrCat("must be greater than the start (", range.start,
                                     ", the first entry still in storage; half-open range)"));
  }
  range.end = end_sequence == 0 ? head + 1 : std::min(end_sequence, head + 1);
  return range;
}

absl::StatusOr<v1::VerifyAuditChainResponse> AuditChain::Verify(const v1::VerifyAuditChainRequest& request,
                                                                absl::Time deadline) const {
  return Verify(request.start_sequence(), request.end_sequence(),
                std::vector<v1::AuditAnchor>(request.anchors().begin(), request.anchors().end()), deadline);
}

absl::StatusOr<bool> AuditChain::ArchivedSince(int64_t sequence, v1::AuditAnchor* base) const {
  if (sequence <= base->sequence()) return true;
  LS_ASSIGN_OR_RETURN(*base, ArchivedBase());
  return sequence <= base->sequence();
}

absl::StatusOr<v1::VerifyAuditChainResponse> AuditChain::Verify(
    int64_t start_sequence, int64_t end_sequence, const std::vector<v1::AuditAnchor>& anchors,
    absl::Time deadline) const {
  // The request's own values in the comment's order: a negative sequence,
  // the anchors, then end <= start (ResolveRange).
  LS_RETURN_IF_ERROR(CheckNotNegative(start_sequence, end_sequence));
  for (size_t i = 0; i < anchors.size(); ++i) {
    if (anchors[i].sequence() < 1) {
      return InvalidField(absl::StrCat("anchors[", i, "].sequence"), "must be 1 or more");
    }
    if (anchors[i].hash().size() != kHashBytes) {
      return InvalidField(absl::StrCat("anchors[", i, "].hash"), "must be a 32-byte SHA-256 digest");
    }
  }
  // labshare-archive moves the base (to its last entry) before it removes
  // entries, so a pass that met a removed entry sees a base past it, and the
  // next pass starts after it: each pass starts on a later base.
  while (true) {
    bool archived = false;
    LS_ASSIGN_OR_RETURN(v1::VerifyAuditChainResponse resp,
                        VerifyOnce(start_sequence, end_sequence, anchors, deadline, &archived));
    if (!archived) return resp;
  }
}

absl::StatusOr<v1::VerifyAuditChainResponse> AuditChain::VerifyOnce(int64_t start_sequence, int64_t end_sequence,
                                                                    const std::vector<v1::AuditAnchor>& anchors,
                                                                    absl::Time deadline, bool* archived) const {
  LS_ASSIGN_OR_RETURN(Range range, ResolveRange(start_sequence, end_sequence));
  for (size_t i = 0; i < anchors.size(); ++i) {
    if (anchors[i].sequence() > range.head.sequence()) {
      return MakeError(absl::StatusCode::kOutOfRange, "SEQUENCE_OUT_OF_RANGE",
                       absl::StrCat("anchors[", i, "] is beyond the head of the audit trail (",
                                    range.head.sequence(), ")"),
                       {{"head_sequence", std::to_string(range.head.sequence())}});
    }
    // Archived (labshare-archive) and no longer held: only the last archived
    // entry's hash is, recorded with the base, and checked below.
    if (anchors[i].sequence() < range.base.sequence()) {
      return MakeError(absl::StatusCode::kOutOfRange, "SEQUENCE_OUT_OF_RANGE",
                       absl::StrCat("anchors[", i, "] (", anchors[i].sequence(), ") is in a year archived to a ",
                                    "file (labshare-archive, entries up to ", range.base.sequence(),
                                    "); check it against the archive file (deploy/verify_audit.py --anchor) or "
                                    "give an anchor at ", range.base.sequence(), " or later"),
                       {{"head_sequence", std::to_string(range.head.sequence())},
                        {"first_sequence", std::to_string(range.base.sequence() + 1)}});
    }
  }

  v1::VerifyAuditChainResponse resp;
  resp.set_start_sequence(range.start);
  resp.set_end_sequence(range.end);
  *resp.mutable_head() = range.head;
  *resp.mutable_verify_time() = ToProto(clock_->Now());
  auto fail = [&resp](int64_t seq, v1::BreakKind kind, std::string expected, std::string actual) {
    resp.set_result(v1::BROKEN);
    auto* b = resp.mutable_first_break();
    b->set_sequence(seq);
    b->set_kind(kind);
    b->set_expected_hash(std::move(expected));
    b->set_actual_hash(std::move(actual));
    return resp;
  };

  // The link of the range's first entry: against the stored hash of the one
  // before it (outside the range, trusted).
  std::string prev;
  bool have_prev = false;
  if (range.start == 1) {
    prev.assign(kHashBytes, '\0');
    have_prev = true;
  } else if (range.start - 1 == range.base.sequence()) {
    // The anchor recorded when the entries before were archived.
    prev = range.base.hash();
    have_prev = true;
  } else {
    LS_ASSIGN_OR_RETURN(auto link, GetMany(range.view, {range.start - 1}));
    const std::optional<v1::AuditEntry>& before = link[0];
    if (before && before->sequence() == range.start - 1) {
      prev = before->hash();
      have_prev = true;
    }
  }

  int64_t checked = 0;
  for (int64_t first = range.start; first < range.end; first += options_.batch_size) {
    LS_RETURN_IF_ERROR(CheckDeadline(deadline));
    std::vector<int64_t> seqs;
    for (int64_t s = first; s < range.end && s < first + options_.batch_size; ++s) seqs.push_back(s);
    LS_ASSIGN_OR_RETURN(auto entries, GetMany(range.view, seqs));
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int64_t n = seqs[i];
      const auto& e = entries[i];
      if (!e || e->sequence() != n) {
        v1::AuditAnchor now = range.base;
        LS_ASSIGN_OR_RETURN(*archived, ArchivedSince(n, &now));
        return fail(n, v1::SEQUENCE_GAP, "", "");
      }
      if (e->algorithm() != v1::HASH_ALGORITHM_SHA256) return fail(n, v1::UNKNOWN_ALGORITHM, "", "");
      std::string recomputed = AuditHashV1(*e);
      if (recomputed != e->hash()) return fail(n, v1::HASH_MISMATCH, std::move(recomputed), e->hash());
      if (have_prev && e->previous_hash() != prev) return fail(n, v1::LINK_MISMATCH, prev, e->previous_hash());
      prev = e->hash();
      have_prev = true;
      resp.set_entries_checked(++checked);
    }
  }
  // A range to the head: the head must be its last entry (signed or not)
  // and, with a key, carry a valid signature, or the chain was rewritten by
  // someone without the key.
  const v1::AuditChainHead& head = range.head;
  if (head.sequence() > 0 && range.end == head.sequence() + 1) {
    const bool is_last = prev == head.hash();
    if (!is_last || (options_.signing_key != nullptr &&
                     !options_.signing_key->VerifyHead(head.sequence(), head.hash(), head.signature()))) {
      LogWarning(is_last ? "audit head signature does not verify" : "audit head is not the last entry's hash",
                 {{"sequence", std::to_string(head.sequence())},
                  {"signed", head.signature().empty() ? "no" : "yes"},
                  {"key_id", head.key_id()}});
      return fail(head.sequence(), v1::HEAD_SIGNATURE_INVALID, prev, head.hash());
    }
  }

  std::vector<v1::AuditAnchor> sorted = anchors;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const v1::AuditAnchor& a, const v1::AuditAnchor& b) { return a.sequence() < b.sequence(); });
  for (size_t first = 0; first < sorted.size(); first += static_cast<size_t>(options_.batch_size)) {
    LS_RETURN_IF_ERROR(CheckDeadline(deadline));
    std::vector<int64_t> seqs;
    for (size_t i = first; i < sorted.size() && i < first + static_cast<size_t>(options_.batch_size); ++i) {
      seqs.push_back(sorted[i].sequence());
    }
    LS_ASSIGN_OR_RETURN(auto entries, GetMany(range.view, seqs));
    for (size_t i = 0; i < seqs.size(); ++i) {
      const v1::AuditAnchor& a = sorted[first + i];
      const auto& e = entries[i];
      if (a.sequence() == range.base.sequence()) {
        // The last archived entry: the hash recorded when it was archived
        // (whether or not the entry itself is still being removed).
        if (range.base.hash() != a.hash()) {
          return fail(a.sequence(), v1::ANCHOR_MISMATCH, a.hash(), range.base.hash());
        }
        resp.set_anchors_checked(resp.anchors_checked() + 1);
        continue;
      }
      if (!e || e->sequence() != a.sequence()) {
        v1::AuditAnchor now = range.base;
        LS_ASSIGN_OR_RETURN(*archived, ArchivedSince(a.sequence(), &now));
        return fail(a.sequence(), v1::SEQUENCE_GAP, "", "");
      }
      if (e->hash() != a.hash()) return fail(a.sequence(), v1::ANCHOR_MISMATCH, a.hash(), e->hash());
      resp.set_anchors_checked(resp.anchors_checked() + 1);
    }
  }
  resp.set_result(v1::VERIFIED);
  return resp;
}

// ------------------------------------------------------------ Export

absl::StatusOr<AuditExportSummary> AuditChain::ExportJsonl(
    int64_t start_sequence, int64_t end_sequence,
    const std::function<absl::Status(absl::string_view piece)>& sink, size_t chunk_bytes) const {
  // Each piece reaches the reader as it is given to `sink`.
  auto delivered = [&sink](absl::string_view piece) -> absl::StatusOr<bool> {
    LS_RETURN_IF_ERROR(sink(piece));
    return true;
  };
  // As Verify: each pass that starts again starts on a later base.
  while (true) {
    bool archived = false;
    LS_ASSIGN_OR_RETURN(AuditExportSummary summary,
                        ExportJsonlOnce(start_sequence, end_sequence, delivered, chunk_bytes, &archived));
    if (!archived) return summary;
  }
}

absl::StatusOr<AuditExportSummary> AuditChain::ExportJsonlOnce(
    int64_t start_sequence, int64_t end_sequence,
    const std::function<absl::StatusOr<bool>(absl::string_view piece)>& sink, size_t chunk_bytes,
    bool* archived, const std::function<absl::Status()>& resolved) const {
  LS_ASSIGN_OR_RETURN(Range range, ResolveRange(start_sequence, end_sequence));
  if (resolved) LS_RETURN_IF_ERROR(resolved());
  AuditExportSummary summary;
  summary.start_sequence = range.start;
  summary.end_sequence = range.end;
  summary.last_sequence = range.end - 1;

  std::string previous_hash(kHashBytes, '\0');
  if (range.start > 1 && range.start - 1 == range.base.sequence()) {
    previous_hash = range.base.hash();
  } else if (range.start > 1) {
    LS_ASSIGN_OR_RETURN(auto link, GetMany(range.view, {range.start - 1}));
    std::optional<v1::AuditEntry>& before = link[0];
    if (!before || before->sequence() != range.start - 1) {
      v1::AuditAnchor now = range.base;
      LS_ASSIGN_OR_RETURN(*archived, ArchivedSince(range.start - 1, &now));
      if (*archived) return AuditExportSummary{};  // ignored: the export starts again
      return Corrupted(absl::StrCat("audit entry ", range.start - 1,
                                    " (the link into the exported range) is missing"));
    }
    previous_hash = before->hash();
  }
  // Something reached the reader (as the sink reports: a piece it holds
  // back has not): the export cannot start again.
  bool sent = false;

  Sha256 file_hash;
  std::string buffer;
  auto flush = [&]() -> absl::Status {
    if (buffer.empty()) return absl::OkStatus();
    file_hash.Update(buffer);
    summary.total_bytes += static_cast<int64_t>(buffer.size());
    absl::StatusOr<bool> out = sink(buffer);
    buffer.clear();
    if (!out.ok()) return out.status();
    sent = sent || *out;
    return absl::OkStatus();
  };
  auto line = [&](const std::string& text) -> absl::Status {
    buffer += text;
    if (buffer.size() >= chunk_bytes) return flush();
    return absl::OkStatus();
  };

  LS_RETURN_IF_ERROR(line(absl::StrCat(
      "{\"format\":\"labshare-audit-jsonl\",\"version\":1,\"algorithm\":\"SHA-256\",\"start_sequence\":",
      range.start, ",\"end_sequence\":", range.end, ",\"previous_hash\":\"", Hex(previous_hash),
      "\",\"exported_at\":\"",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", clock_->Now(), absl::UTCTimeZone()), "\"}\n")));
  for (int64_t first = range.start; first < range.end; first += options_.export_batch_size) {
    std::vector<int64_t> seqs;
    for (int64_t s = first; s < range.end && s < first + options_.export_batch_size; ++s) seqs.push_back(s);
    LS_ASSIGN_OR_RETURN(auto entries, GetMany(range.view, seqs));
    for (size_t i = 0; i < seqs.size(); ++i) {
      // A gap would leave the file and its trailer disagreeing on what was
      // exported: the chain is damaged, as for a missing link entry.
      if (!entries[i] || entries[i]->sequence() != seqs[i]) {
        v1::AuditAnchor now = range.base;
        LS_ASSIGN_OR_RETURN(bool gone, ArchivedSince(seqs[i], &now));
        if (gone && !sent) {
          *archived = true;
          return AuditExportSummary{};  // ignored: the export starts again
        }
        if (gone) {
          return MakeError(absl::StatusCode::kOutOfRange, "SEQUENCE_OUT_OF_RANGE",
                           absl::StrCat("entries up to ", now.sequence(),
                                        " were archived to a file (labshare-archive) while this export ran; "
                                        "export again from ",
                                        now.sequence() + 1, " or 0"),
                           {{"head_sequence", std::to_string(range.head.sequence())},
                            {"first_sequence", std::to_string(now.sequence() + 1)}});
        }
        return Corrupted(absl::StrCat("audit entry ", seqs[i], " (inside the exported range) is missing or unreadable"));
      }
      if (seqs[i] == range.end - 1) summary.last_hash = entries[i]->hash();
      ++summary.entries;
      LS_RETURN_IF_ERROR(line(EntryLine(*entries[i])));
    }
  }
  std::string signed_head;
  if (range.end == range.head.sequence() + 1 && !range.head.signature().empty()) {
    summary.head_signature = range.head.signature();
    summary.head_key_id = range.head.key_id();
    signed_head = absl::StrCat(",\"head_signature\":\"", absl::Base64Escape(summary.head_signature),
                               "\",\"key_id\":", JsonString(summary.head_key_id));
  }
  LS_RETURN_IF_ERROR(line(absl::StrCat("{\"trailer\":true,\"entries\":", range.end - range.start,
                                       ",\"last_sequence\":", range.end - 1, ",\"last_hash\":\"",
                                       Hex(summary.last_hash), "\"", signed_head, "}\n")));
  LS_RETURN_IF_ERROR(flush());
  summary.sha256_hex = Hex(file_hash.Final());
  return summary;
}

absl::StatusOr<std::string> AuditChain::ExportJsonlString(int64_t start_sequence, int64_t end_sequence) const {
  std::string out;
  LS_RETURN_IF_ERROR(ExportJsonl(start_sequence, end_sequence, [&out](absl::string_view piece) {
                       out.append(piece.data(), piece.size());
                       return absl::OkStatus();
                     }).status());
  return out;
}

absl::Status AuditChain::ExportAuditTrail(
    const v1::ExportAuditTrailRequest& request,
    const std::function<absl::Status(const v1::ExportAuditTrailResponse&)>& send, size_t chunk_bytes,
    AuditExportSummary* summary_out, const std::function<absl::Status()>& validated) const {
  if (request.format() != v1::AUDIT_EXPORT_FORMAT_JSONL) {
    return InvalidField("format", "must be AUDIT_EXPORT_FORMAT_JSONL");
  }
  // Each piece is held back until the next one arrives, so that the last
  // message can carry the trailer: a piece held back has not reached the
  // client, and while nothing has, entries archived meanwhile make the
  // export start again (on what is stored then, from offset 0) rather than
  // end with SEQUENCE_OUT_OF_RANGE.
  std::optional<v1::ExportAuditTrailResponse> pending;
  int64_t offset = 0;
  bool written = false;  // a message went to `send`
  auto hold = [&](absl::string_view piece) -> absl::StatusOr<bool> {
    if (pending) {
      written = true;
      LS_RETURN_IF_ERROR(send(*pending));
    }
    pending.emplace();
    pending->set_data(std::string(piece));
    pending->set_offset(offset);
    offset += static_cast<int64_t>(piece.size());
    return written;
  };
  // `validated` once, on the first pass (a pass that starts again is the
  // same export).
  bool was_validated = false;
  auto resolved = [&]() -> absl::Status {
    if (was_validated || !validated) return absl::OkStatus();
    was_validated = true;
    return validated();
  };
  AuditExportSummary summary;
  while (true) {
    pending.reset();  // a pass that starts again sent nothing
    offset = 0;
    bool archived = false;
    LS_ASSIGN_OR_RETURN(summary, ExportJsonlOnce(request.start_sequence(), request.end_sequence(), hold,
                                                 chunk_bytes, &archived, resolved));
    if (!archived) break;
  }
  if (!pending) pending.emplace();
  auto* trailer = pending->mutable_trailer();
  trailer->set_row_count(summary.entries);
  trailer->set_total_bytes(summary.total_bytes);
  trailer->set_sha256_hex(summary.sha256_hex);
  pending->mutable_last_entry()->set_sequence(summary.last_sequence);
  pending->mutable_last_entry()->set_hash(summary.last_hash);
  if (summary_out != nullptr) *summary_out = std::move(summary);
  return send(*pending);
}

}  // namespace labshare::usage
