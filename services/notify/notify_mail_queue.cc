#include "services/notify/notify_mail_queue.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/doc_store.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/notify/notify_mail_kinds.h"
#include "services/notify/notify_module.h"

namespace labshare::notify {
namespace {

// The subject digests were made with before MakeDigests stored their own
// (it was set at their first attempt).
constexpr char kDigestPlaceholderSubject[] = "digest";

std::string K(absl::string_view suffix) { return absl::StrCat(kMailPrefix, suffix); }
std::string Ms(absl::Time t) { return absl::StrCat(absl::ToUnixMillis(t)); }
absl::Time FromMs(const std::string& s) {
  int64_t v = 0;
  return absl::SimpleAtoi(s, &v) ? absl::FromUnixMillis(v) : absl::UnixEpoch();
}

Fields ToFields(const RedisValue& v) {
  Fields f;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) f[v.elements[i].str] = v.elements[i + 1].str;
  return f;
}

absl::Status ScriptStatus(const absl::StatusOr<RedisValue>& r) {
  if (!r.ok()) return r.status();
  if (r->is_error()) return RedisErrorStatus(*r);
  return absl::OkStatus();
}

// The dead-letter indexes (lex-ordered zsets, score 0, members
// "<dead_ms, 13 digits>|<id>", dead_ms on the domain clock): every dead
// letter, by organisation, by reason, and by both. A page of
// ListDeadLetters is one ZRANGE ... BYLEX REV LIMIT on one of them.
constexpr char kDeadIndexLua[] = R"lua(
local function dl_member(ms, id)
  ms = tostring(ms or '0')
  if #ms < 13 then ms = string.rep('0', 13 - #ms) .. ms end
  return ms .. '|' .. id
end
local function dl_index(p, id, org, reason, ms, add)
  local m = dl_member(ms, id)
  org = org or ''
  reason = reason or ''
  for _, k in ipairs({p .. 'dl:all', p .. 'dl:o:' .. org, p .. 'dl:r:' .. reason, p .. 'dl:or:' .. org .. '|' .. reason}) do
    if add then redis.call('ZADD', k, 0, m) else redis.call('ZREM', k, m) end
  end
end
)lua";

// The request records of the mail mutations (UpdateNotificationSettings,
// Unsubscribe, ReplayDeadLetter): key req:<actor>:<request id> holds
// "<fingerprint>\n<answer>" (records written before answers were kept: the
// fingerprint alone) for keep_s seconds, kRequestRecordRetention as every
// service's (0: without expiry; a replay's record, kept while its message
// exists: see replays_release). request_seen answers nil when there is no
// record (or no request id), {'again', answer} for the same request and
// 'reused' for other content; request_keep writes the record.
constexpr char kRequestRecordLua[] = R"lua(
local function request_seen(key, rid, fp)
  if rid == '' then return nil end
  local seen = redis.call('GET', key)
  if not seen then return nil end
  local nl = string.find(seen, '\n', 1, true)
  local f, answer = seen, ''
  if nl then f, answer = string.sub(seen, 1, nl - 1), string.sub(seen, nl + 1) end
  if f == fp then return {'again', answer} end
  return 'reused'
end
local function request_keep(key, rid, fp, answer, keep_s)
  if rid == '' then return end
  keep_s = tonumber(keep_s)
  if keep_s > 0 then
    redis.call('SET', key, fp .. '\n' .. answer, 'EX', keep_s)
  else
    redis.call('SET', key, fp .. '\n' .. answer)
  end
end
)lua";

// The request records of a message's replays (replays:<id>, a set of their
// keys) have no expiry while the message exists: a retry answers the first
// answer also once the message was removed (notify.proto). When the
// message gets its removal time (sent: the retention) or is removed (a dead
// letter past its retention), each record is kept keep_s seconds more from
// now, and the set goes.
constexpr char kReplayRecordsLua[] = R"lua(
local function replays_release(p, id, keep_s)
  local set = p .. 'replays:' .. id
  for _, k in ipairs(redis.call('SMEMBERS', set)) do redis.call('EXPIRE', k, keep_s) end
  redis.call('DEL', set)
end
)lua";

// kRequestRecordRetention in seconds, for the scripts.
std::string KeepSeconds() { return absl::StrCat(absl::ToInt64Seconds(kRequestRecordRetention)); }

std::string RequestKey(const std::string& actor, const std::string& request_id) {
  return K(absl::StrCat("req:", actor, ":", request_id));
}

// The reply of a step that checks a request record first: true when the
// step ran; false for a retry of the same request, its first answer in
// `*replayed_answer` (empty for records kept before answers were);
// FAILED_PRECONDITION (REQUEST_ID_REUSED) for other content.
absl::StatusOr<bool> RequestOutcome(const RedisValue& r, std::string* replayed_answer) {
  if (r.is_array() && r.elements.size() == 2 && r.elements[0].str == "again") {
    if (replayed_answer != nullptr) *replayed_answer = r.elements[1].str;
    return false;
  }
  if (r.str == "reused") return RequestIdReused();
  return true;
}

const RedisScript kEnqueue(std::string(kDeadIndexLua) + R"lua(
-- KEYS: msg, due, digest list, digests, dead, outbox; ARGV: id, digest(0|1), wall_ms, digest_due_ms, user_id,
-- domain_ms, refused reason ('': queued), refused error, refused event payload, prefix, fields...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local refused = ARGV[7] ~= ''
local state = refused and 'DEAD' or (ARGV[2] == '1' and 'DIGEST' or 'QUEUED')
local args = {'state', state, 'attempts', '0', 'create_ms', ARGV[6]}
for i = 11, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
if refused then
  redis.call('HSET', KEYS[1], 'reason', ARGV[7], 'error', ARGV[8], 'dead_ms', ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
  dl_index(ARGV[10], ARGV[1], redis.call('HGET', KEYS[1], 'org'), ARGV[7], ARGV[6], true)
  redis.call('XADD', KEYS[6], '*', 'type', 'labshare.notify.v1.NotifyEvent', 'payload', ARGV[9])
elseif ARGV[2] == '1' then
  redis.call('RPUSH', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[5])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
)lua");

const RedisScript kSetSendingSubject(R"lua(
-- KEYS: msg; ARGV: subject
if redis.call('HGET', KEYS[1], 'state') ~= 'SENDING' then return 0 end
redis.call('HSET', KEYS[1], 'subject', ARGV[1])
return 1
)lua");

const RedisScript kClaim(R"lua(
-- KEYS: due, inflight; ARGV: wall_ms, consumer, limit, prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local k = ARGV[4] .. 'msg:' .. id
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', k, 'state', 'SENDING', 'owner', ARGV[2], 'claim_ms', ARGV[1])
  redis.call('HINCRBY', k, 'attempts', 1)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
end
return ids
)lua");

const RedisScript kFinish(std::string(kDeadIndexLua) + kReplayRecordsLua + R"lua(
-- KEYS: msg, due, inflight, dead, outbox; ARGV: id, consumer, outcome, wall_ms, retry_ms, error, reason,
-- payload, retention_s, claim_ms ('' = any), domain_ms (dead_ms), prefix, request records' keep_s
local f = redis.call('HMGET', KEYS[1], 'state', 'owner', 'claim_ms')
if f[1] ~= 'SENDING' or f[2] ~= ARGV[2] then return {0, ''} end
if ARGV[10] ~= '' and f[3] ~= ARGV[10] then return {0, ''} end
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] == 'sent' then
  redis.call('HSET', KEYS[1], 'state', 'SENT', 'sent_ms', ARGV[4])
  redis.call('HDEL', KEYS[1], 'owner')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[9]))
  replays_release(ARGV[12], ARGV[1], tonumber(ARGV[9]) + tonumber(ARGV[13]))
elseif ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[1], 'state', 'QUEUED', 'error', ARGV[6])
  redis.call('HDEL', KEYS[1], 'owner')
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'state', 'DEAD', 'error', ARGV[6], 'reason', ARGV[7], 'dead_ms', ARGV[11])
  redis.call('HDEL', KEYS[1], 'owner')
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
  dl_index(ARGV[12], ARGV[1], redis.call('HGET', KEYS[1], 'org'), ARGV[7], ARGV[11], true)
  redis.call('XADD', KEYS[5], '*', 'type', 'labshare.notify.v1.NotifyEvent', 'payload', ARGV[8])
end
return {1, redis.call('HGET', KEYS[1], 'kind') or ''}
)lua");

const RedisScript kReplay(std::string(kDeadIndexLua) + kRequestRecordLua + R"lua(
-- KEYS: msg, due, dead, outbox, request record; ARGV: id, actor, request_id, wall_ms, payload, domain_ms,
-- prefix, fingerprint, answer, dead_ms the answer was made from
local seen = request_seen(KEYS[5], ARGV[3], ARGV[8])
if seen then return seen end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
-- Gone when the caller loaded it (and so not scoped): loaded and scoped again.
if ARGV[10] == 'gone' then return 'conflict' end
local f = redis.call('HMGET', KEYS[1], 'state', 'replay_req', 'org', 'reason', 'dead_ms', 'replayed_by')
-- Replayed under this request id, by this caller, by a version that kept
-- the request id in the message only. Another caller's same id is that
-- caller's own request (types.proto): it replays, or is NOT_A_DEAD_LETTER.
if ARGV[3] ~= '' and f[2] == ARGV[3] and f[6] == ARGV[2] then return 'legacy' end
if f[1] ~= 'DEAD' then return 'notdead' end
if (f[5] or '') ~= ARGV[10] then return 'conflict' end
redis.call('ZREM', KEYS[3], ARGV[1])
dl_index(ARGV[7], ARGV[1], f[3], f[4], f[5], false)
redis.call('HSET', KEYS[1], 'state', 'QUEUED', 'attempts', '0', 'replay_ms', ARGV[6], 'replayed_by', ARGV[2],
           'replay_req', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('XADD', KEYS[4], '*', 'type', 'labshare.notify.v1.NotifyEvent', 'payload', ARGV[5])
-- Last: a write above failing on a damaged key keeps no answer to replay.
-- Kept while the message exists (no expiry), listed with it.
request_keep(KEYS[5], ARGV[3], ARGV[8], ARGV[9], 0)
if ARGV[3] ~= '' then redis.call('SADD', ARGV[7] .. 'replays:' .. ARGV[1], KEYS[5]) end
return 'ok'
)lua");

// KEYS: dl:all, dead; ARGV: prefix, cutoff ("<13 digits>|"), limit,
// request records' keep_s. Dead letters that died before the cutoff
// (domain clock) go, with their message and index entries (the request
// records of their replays kept keep_s more); an index entry of a message
// that is no longer a dead letter only leaves the indexes.
const RedisScript kPruneDead(std::string(kDeadIndexLua) + kReplayRecordsLua + R"lua(
local old = redis.call('ZRANGE', KEYS[1], '-', '(' .. ARGV[2], 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for _, m in ipairs(old) do
  local id = string.sub(m, 15)
  local msg = ARGV[1] .. 'msg:' .. id
  local f = redis.call('HMGET', msg, 'state', 'org', 'reason', 'dead_ms')
  if f[1] == 'DEAD' and dl_member(f[4], id) == m then
    dl_index(ARGV[1], id, f[2], f[3], f[4], false)
    redis.call('ZREM', KEYS[2], id)
    redis.call('DEL', msg)
    replays_release(ARGV[1], id, tonumber(ARGV[4]))
    removed = removed + 1
  else
    -- Not that dead letter any more: the entry leaves every index.
    redis.call('ZREM', KEYS[1], m)
    local o = f[2] or ''
    local r = f[3] or ''
    redis.call('ZREM', ARGV[1] .. 'dl:o:' .. o, m)
    redis.call('ZREM', ARGV[1] .. 'dl:r:' .. r, m)
    redis.call('ZREM', ARGV[1] .. 'dl:or:' .. o .. '|' .. r, m)
  end
end
return {removed, #old}
)lua");

// KEYS: dead, marker; ARGV: prefix, cursor score ('' = from the start),
// cursor id, limit, migration ('1': a no-op once the marker is set, which
// is set after the last). One step of a walk of "dead" in (score, id) order
// (a replay between steps removes a member without shifting the rest):
// indexes each DEAD member (adding is idempotent). Returns {score, id} of
// the last member seen, or {} at the end.
const RedisScript kIndexDead(std::string(kDeadIndexLua) + R"lua(
local migration = ARGV[5] == '1'
if migration and redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local lim = tonumber(ARGV[4])
local batch = {}
local min = '-inf'
if ARGV[2] ~= '' then
  -- Members of the cursor's score after its id (same score: by member).
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])) do
    if m > ARGV[3] then batch[#batch + 1] = {m, ARGV[2]} end
  end
  min = '(' .. ARGV[2]
end
local rest = redis.call('ZRANGEBYSCORE', KEYS[1], min, '+inf', 'WITHSCORES', 'LIMIT', 0, lim)
for i = 1, #rest, 2 do batch[#batch + 1] = {rest[i], rest[i + 1]} end
for _, e in ipairs(batch) do
  local msg = ARGV[1] .. 'msg:' .. e[1]
  local f = redis.call('HMGET', msg, 'state', 'org', 'reason', 'dead_ms')
  if f[1] == 'DEAD' then
    if not f[4] then
      f[4] = e[2]
      redis.call('HSET', msg, 'dead_ms', f[4])
    end
    dl_index(ARGV[1], e[1], f[2], f[3], f[4], true)
  end
end
if #rest < 2 * lim then
  if migration then redis.call('SET', KEYS[2], '1') end
  return {}
end
return {batch[#batch][2], batch[#batch][1]}
)lua");

const RedisScript kSchedule(std::string(kApplyOnceLua) + R"lua(
-- KEYS: marker, sched; ARGV: prefix, type, payload, n_add, version, (member, fire_ms)*, remove members...
-- version: the resource's update_time (us) in the event ('' = unknown). Per
-- member the newest version applied is kept (schedver:<member>, also after
-- a removal, as a tombstone): an older event processed later is ignored.
if not apply_once(KEYS[1], 2592000) then return 0 end
local v = ARGV[5]
local function newer(m)
  if v == '' then return true end
  local cur = redis.call('GET', ARGV[1] .. 'schedver:' .. m)
  if cur and tonumber(cur) > tonumber(v) then return false end
  redis.call('SET', ARGV[1] .. 'schedver:' .. m, v, 'EX', 2592000)
  return true
end
local n = tonumber(ARGV[4])
local i = 6
for _ = 1, n do
  local m = ARGV[i]
  if newer(m) then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], m)
    redis.call('HSET', ARGV[1] .. 'schedev:' .. m, 'type', ARGV[2], 'payload', ARGV[3])
  end
  i = i + 2
end
for j = i, #ARGV do
  if newer(ARGV[j]) then
    redis.call('ZREM', KEYS[2], ARGV[j])
    redis.call('DEL', ARGV[1] .. 'schedev:' .. ARGV[j])
  end
end
return 1
)lua");

const RedisScript kClaimSchedules(R"lua(
-- KEYS: sched, claimed; ARGV: domain_ms, wall_ms, stale_ms, limit, prefix
local out = {}
local function take(m, fire)
  local ev = redis.call('HMGET', ARGV[5] .. 'schedev:' .. m, 'type', 'payload')
  redis.call('ZADD', KEYS[2], ARGV[2], m)
  out[#out + 1] = m
  out[#out + 1] = ev[1] or ''
  out[#out + 1] = ev[2] or ''
  out[#out + 1] = fire
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('HSET', ARGV[5] .. 'schedev:' .. due[i], 'fire', due[i + 1])
  take(due[i], due[i + 1])
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(stale) do
  take(m, redis.call('HGET', ARGV[5] .. 'schedev:' .. m, 'fire') or '0')
end
return out
)lua");

const RedisScript kFinishSchedule(R"lua(
-- KEYS: claimed, schedev, sched; ARGV: member
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZSCORE', KEYS[3], ARGV[1]) == false then redis.call('DEL', KEYS[2]) end
return 1
)lua");

const RedisScript kDigests(R"lua(
-- KEYS: digests, due; ARGV: domain_ms, wall_ms, limit, prefix, retention_s, subject_en, subject_zh
-- (the subjects with "{n}" where the number of parts goes: DigestSubject)
-- Everything is read and checked before anything is written.
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local made = 0
for i = 1, #users, 2 do
  local u, score = users[i], users[i + 1]
  local list = ARGV[4] .. 'digest:' .. u
  local ids = redis.call('LRANGE', list, 0, -1)
  -- The parts still there (a part may have expired); the recipient from
  -- the first of them.
  local parts, f = {}, nil
  for _, p in ipairs(ids) do
    local pf = redis.call('HMGET', ARGV[4] .. 'msg:' .. p, 'user', 'org', 'email', 'name', 'lang', 'tz')
    if pf[1] and pf[3] then
      parts[#parts + 1] = p
      if not f then f = pf end
    end
  end
  redis.call('ZREM', KEYS[1], u)
  redis.call('DEL', list)
  if f then
    local id = 'dg-' .. u .. '-' .. score
    -- The subject the send renders (RenderDigest: "en", else zh-CN), stored
    -- now: a digest that dies before its first attempt shows it too.
    local subject = (f[5] == 'en') and ARGV[6] or ARGV[7]
    local at = string.find(subject, '{n}', 1, true)
    if at then subject = string.sub(subject, 1, at - 1) .. #parts .. string.sub(subject, at + 3) end
    redis.call('HSET', ARGV[4] .. 'msg:' .. id, 'kind', 'DIGEST', 'user', f[1], 'org', f[2] or '', 'email', f[3],
               'name', f[4] or '', 'lang', f[5] or '', 'tz', f[6] or '', 'parts', table.concat(parts, ','),
               'state', 'QUEUED', 'attempts', '0', 'create_ms', ARGV[1], 'event', 'digest:' .. u .. ':' .. score,
               'subject', subject)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    for _, p in ipairs(parts) do
      redis.call('HSET', ARGV[4] .. 'msg:' .. p, 'state', 'IN_DIGEST', 'digest', id)
      redis.call('EXPIRE', ARGV[4] .. 'msg:' .. p, tonumber(ARGV[5]))
    end
    made = made + 1
  end
end
return made
)lua");

const RedisScript kPutSettings(std::string(kRequestRecordLua) + R"lua(
-- KEYS: settings, req, outbox; ARGV: expected_etag, request_id, fingerprint, payload, client_etag, answer,
-- request record's keep_s, fields...
local seen = request_seen(KEYS[2], ARGV[2], ARGV[3])
if seen then return seen end
local etag = redis.call('HGET', KEYS[1], 'etag') or ''
if ARGV[5] ~= '' and ARGV[5] ~= etag then return 'etag' end
if etag ~= ARGV[1] then return 'conflict' end
local args = {}
for i = 8, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(args))
request_keep(KEYS[2], ARGV[2], ARGV[3], ARGV[6], ARGV[7])
redis.call('XADD', KEYS[3], '*', 'type', 'labshare.notify.v1.NotifyEvent', 'payload', ARGV[4])
return 'ok'
)lua");

// KEYS: request record; ARGV: request_id, fingerprint, answer, keep_s. The
// record of a mutation that found nothing to change.
const RedisScript kKeepRequest(std::string(kRequestRecordLua) + R"lua(
local seen = request_seen(KEYS[1], ARGV[1], ARGV[2])
if seen then return seen end
request_keep(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 'ok'
)lua");

// The request record, read only ('none': no record).
const RedisScript kFindRequest(std::string(kRequestRecordLua) + R"lua(
return request_seen(KEYS[1], ARGV[1], ARGV[2]) or 'none'
)lua");

}  // namespace

std::string MessageId(absl::string_view event_id, absl::string_view kind, absl::string_view recipient,
                      absl::string_view discriminator) {
  const std::string in = absl::StrCat(event_id, "\n", kind, "\n", recipient, "\n", discriminator);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), 16));
}

bool ValidMessageId(absl::string_view id) {
  if (ValidResourceId(id)) return true;
  if (!absl::ConsumePrefix(&id, "dg-")) return false;
  // The user id may itself hold '-': the due time is after the last one.
  const size_t dash = id.rfind('-');
  if (dash == absl::string_view::npos) return false;
  const absl::string_view user = id.substr(0, dash), due = id.substr(dash + 1);
  return ValidResourceId(user) && !due.empty() && due.size() <= 19 &&
         std::all_of(due.begin(), due.end(), [](char c) { return c >= '0' && c <= '9'; });
}

v1::DeadLetter DeadLetterFromFields(const std::string& id, const Fields& f) {
  auto get = [&](const char* k) {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
  };
  v1::DeadLetter d;
  d.set_name("deadLetters/" + id);
  Kind kind = v1::NOTIFICATION_KIND_UNSPECIFIED;
  v1::NotificationKind_Parse(get("kind"), &kind);
  d.set_kind(kind);
  d.set_recipient(get("user"));
  d.set_recipient_organization(get("org"));
  d.set_email(get("email"));
  d.set_subject(get("subject"));
  // A digest stored before its subject was set when it was made carries the
  // placeholder "digest" (until its first attempt): the subject it has.
  if (kind == v1::DIGEST && d.subject() == kDigestPlaceholderSubject) {
    const std::vector<absl::string_view> parts = absl::StrSplit(get("parts"), ',', absl::SkipEmpty());
    d.set_subject(DigestSubject(get("lang"), absl::StrCat(parts.size())));
  }
  v1::DeadLetter::Reason reason = v1::DeadLetter::REASON_UNSPECIFIED;
  v1::DeadLetter_Reason_Parse(get("reason"), &reason);
  d.set_reason(reason);
  d.set_last_error(get("error"));
  int attempts = 0;
  (void)absl::SimpleAtoi(get("attempts"), &attempts);
  d.set_attempts(attempts);
  d.set_event_id(get("event"));
  if (!get("create_ms").empty()) *d.mutable_create_time() = ToProto(FromMs(get("create_ms")));
  if (!get("dead_ms").empty()) *d.mutable_dead_time() = ToProto(FromMs(get("dead_ms")));
  if (!get("replay_ms").empty()) *d.mutable_replay_time() = ToProto(FromMs(get("replay_ms")));
  d.set_replayed_by(get("replayed_by"));
  return d;
}

std::string NotifyEventPayload(v1::NotifyEvent event, absl::Time when, const std::string& actor,
                               const std::string& request_id, const std::string& actor_organization,
                               const std::string& trace_id) {
  auto* h = event.mutable_header();
  h->set_event_id(NewEventId());
  *h->mutable_event_time() = ToProto(when);
  h->set_actor(actor);
  h->set_actor_organization(actor_organization);
  h->set_request_id(request_id);
  h->set_trace_id(trace_id);
  return event.SerializeAsString();
}

absl::StatusOr<bool> MailQueue::Enqueue(const std::string& id, const Fields& fields, bool digest,
                                        absl::Time digest_due, absl::Time wall_now, absl::Time domain_now,
                                        const Refused* refused) {
  const std::string user = fields.count("user") ? fields.at("user") : "";
  const std::string user_id(absl::StripPrefix(user, "users/"));
  std::vector<std::string> args = {id,
                                   digest ? "1" : "0",
                                   Ms(wall_now),
                                   Ms(digest_due),
                                   user_id,
                                   Ms(domain_now),
                                   refused ? v1::DeadLetter::Reason_Name(refused->reason) : "",
                                   refused ? refused->error : "",
                                   refused ? refused->event_payload : "",
                                   kMailPrefix};
  for (const auto& [k, v] : fields) {
    args.push_back(k);
    args.push_back(v);
  }
  auto r = redis_->Eval(kEnqueue,
                        {K("msg:" + id), K("due"), K("digest:" + user_id), K("digests"), K("dead"), kNotifyOutbox},
                        args);
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  if (r->integer == 1 && metrics_ != nullptr) {
    const std::string kind = fields.count("kind") ? fields.at("kind") : "";
    if (refused != nullptr) {
      metrics_->MailDeadLettered(kind, v1::DeadLetter::Reason_Name(refused->reason));
    } else {
      metrics_->MailQueued(kind);
    }
  }
  return r->integer == 1;
}

absl::Status MailQueue::SetSendingSubject(const std::string& id, const std::string& subject) {
  return ScriptStatus(redis_->Eval(kSetSendingSubject, {K("msg:" + id)}, {subject}));
}

absl::StatusOr<std::vector<std::string>> MailQueue::Claim(const std::string& consumer, absl::Time wall_now,
                                                          int limit) {
  auto r = redis_->Eval(kClaim, {K("due"), K("inflight")}, {Ms(wall_now), consumer, absl::StrCat(limit), kMailPrefix});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  std::vector<std::string> ids;
  for (const auto& e : r->elements) ids.push_back(e.str);
  return ids;
}

absl::StatusOr<Fields> MailQueue::Load(const std::string& id) {
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"HGETALL", K("msg:" + id)}));
  if (v.is_error()) return RedisErrorStatus(v);
  return ToFields(v);
}

absl::Status MailQueue::Finish(const std::string& id, const std::string& consumer, Outcome outcome,
                               absl::Time wall_now, absl::Time retry_at, const std::string& error,
                               v1::DeadLetter::Reason reason, const std::string& event_payload,
                               absl::Duration retention, absl::Time domain_now) {
  const char* o = outcome == Outcome::kSent ? "sent" : outcome == Outcome::kRetry ? "retry" : "dead";
  auto r = redis_->Eval(kFinish, {K("msg:" + id), K("due"), K("inflight"), K("dead"), kNotifyOutbox},
                        {id, consumer, o, Ms(wall_now), Ms(retry_at), error, v1::DeadLetter::Reason_Name(reason),
                         event_payload, absl::StrCat(absl::ToInt64Seconds(retention)), "", Ms(domain_now),
                         kMailPrefix, KeepSeconds()});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  if (r->elements.size() != 2 || r->elements[0].integer != 1 || metrics_ == nullptr) return absl::OkStatus();
  const std::string& kind = r->elements[1].str;
  switch (outcome) {
    case Outcome::kSent:
      metrics_->MailSent(kind);
      break;
    case Outcome::kRetry:
      metrics_->MailFailed(kind);
      metrics_->MailRetried(kind);
      break;
    case Outcome::kDead:
      metrics_->MailFailed(kind);
      metrics_->MailDeadLettered(kind, v1::DeadLetter::Reason_Name(reason));
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<int> MailQueue::RecoverInFlight(const std::string& consumer, absl::Time stale_before,
                                               absl::Time wall_now, absl::Time domain_now,
                                               const std::set<std::string>* handed) {
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"ZRANGE", K("inflight"), "0", "-1", "WITHSCORES"}));
  if (v.is_error()) return RedisErrorStatus(v);
  int moved = 0;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) {
    const std::string& id = v.elements[i].str;
    LS_ASSIGN_OR_RETURN(Fields f, Load(id));
    if (f["state"] != "SENDING") {
      (void)redis_->Command({"ZREM", K("inflight"), id});
      continue;
    }
    const bool mine = f["owner"] == consumer;
    if (!mine && FromMs(f["claim_ms"]) > stale_before) continue;
    if (mine && handed != nullptr && handed->count(id) == 0) {
      // Claimed by this running process and never given to the mail
      // server: due again, as if the claim had not happened.
      auto r = redis_->Eval(kFinish, {K("msg:" + id), K("due"), K("inflight"), K("dead"), kNotifyOutbox},
                            {id, f["owner"], "retry", Ms(wall_now), Ms(wall_now), f["error"], "", "", "0",
                             f["claim_ms"], Ms(domain_now), kMailPrefix, KeepSeconds()});
      LS_RETURN_IF_ERROR(ScriptStatus(r));
      continue;
    }
    f["state"] = "DEAD";
    const std::string uncertain = v1::DeadLetter::Reason_Name(v1::DeadLetter::DELIVERY_UNCERTAIN);
    f["reason"] = uncertain;
    f["dead_ms"] = Ms(domain_now);
    f["error"] = "the process sending it stopped during the attempt; it may or may not have been delivered";
    v1::NotifyEvent ev;
    *ev.mutable_mail_dead_lettered()->mutable_dead_letter() = DeadLetterFromFields(id, f);
    const std::string payload = NotifyEventPayload(ev, domain_now, "services/notify", "", "", f["trace"]);
    auto r = redis_->Eval(kFinish, {K("msg:" + id), K("due"), K("inflight"), K("dead"), kNotifyOutbox},
                          {id, f["owner"], "dead", Ms(wall_now), "0", f["error"], uncertain, payload, "0",
                           f["claim_ms"], Ms(domain_now), kMailPrefix, KeepSeconds()});
    LS_RETURN_IF_ERROR(ScriptStatus(r));
    if (r->elements.size() == 2 && r->elements[0].integer == 1) {
      ++moved;
      if (metrics_ != nullptr) metrics_->MailDeadLettered(r->elements[1].str, uncertain);
    }
  }
  return moved;
}

std::string DeadLetterCursor(absl::Time dead, const std::string& id) {
  return absl::StrFormat("%013d|%s", std::max<int64_t>(absl::ToUnixMillis(dead), 0), id);
}

absl::StatusOr<std::vector<MailQueue::DeadRow>> MailQueue::ListDead(const std::string& after, int limit,
                                                                    const std::string& organization,
                                                                    v1::DeadLetter::Reason reason) {
  const std::string r = reason == v1::DeadLetter::REASON_UNSPECIFIED ? "" : v1::DeadLetter::Reason_Name(reason);
  const std::string index = organization.empty() && r.empty() ? K("dl:all")
                            : r.empty()                       ? K("dl:o:" + organization)
                            : organization.empty()            ? K("dl:r:" + r)
                                                              : K(absl::StrCat("dl:or:", organization, "|", r));
  // A page costs one range read of `limit` + 1 entries and their messages,
  // whatever the number of dead letters (more reads only past stale
  // entries). The cursor still works when its dead letter left meanwhile
  // (replayed, or past the retention). An entry whose message is not that
  // dead letter any more (not DEAD, another dead_ms, organisation or reason:
  // a stale or duplicate entry) is skipped and removed from this index.
  std::vector<DeadRow> out;
  std::string max = after.empty() ? "+" : "(" + after;
  while (static_cast<int>(out.size()) < limit + 1) {
    const int want = limit + 1 - static_cast<int>(out.size());
    LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"ZRANGE", index, max, "-", "BYLEX", "REV", "LIMIT", "0",
                                                       absl::StrCat(want)}));
    if (v.is_error()) return RedisErrorStatus(v);
    for (const auto& e : v.elements) {
      max = "(" + e.str;
      const size_t bar = e.str.find('|');
      DeadRow row;
      bool valid = bar != std::string::npos;
      if (valid) {
        row.id = e.str.substr(bar + 1);
        row.cursor = e.str;
        LS_ASSIGN_OR_RETURN(row.fields, Load(row.id));
        std::string ms = row.fields.count("dead_ms") ? row.fields["dead_ms"] : "0";
        if (ms.size() < 13) ms = std::string(13 - ms.size(), '0') + ms;
        valid = row.fields["state"] == "DEAD" && absl::StrCat(ms, "|", row.id) == e.str &&
                (organization.empty() || row.fields["org"] == organization) &&
                (r.empty() || row.fields["reason"] == r);
      }
      if (!valid) {
        LS_RETURN_IF_ERROR(redis_->Command({"ZREM", index, e.str}).status());
        continue;
      }
      out.push_back(std::move(row));
    }
    if (static_cast<int>(v.elements.size()) < want) break;  // the index's end
  }
  return out;
}

absl::StatusOr<int> MailQueue::PruneDead(absl::Time domain_cutoff, int limit) {
  const std::string cutoff = DeadLetterCursor(domain_cutoff, "");
  auto r = redis_->Eval(kPruneDead, {K("dl:all"), K("dead")},
                        {kMailPrefix, cutoff, absl::StrCat(limit), KeepSeconds()});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  if (r->elements.size() != 2) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected reply");
  const int removed = static_cast<int>(r->elements[0].integer);
  if (removed > 0 && metrics_ != nullptr) metrics_->MailDeadLettersRemoved(removed);
  return removed;
}

absl::StatusOr<std::string> MailQueue::IndexDeadStep(const std::string& cursor, int step, bool migration) {
  const size_t bar = cursor.find('|');
  const std::string score = bar == std::string::npos ? "" : cursor.substr(0, bar);
  const std::string id = bar == std::string::npos ? "" : cursor.substr(bar + 1);
  auto r = redis_->Eval(kIndexDead, {K("dead"), K("dl:indexed")},
                        {kMailPrefix, score, id, absl::StrCat(step), migration ? "1" : "0"});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  if (r->elements.size() != 2) return std::string();
  return absl::StrCat(r->elements[0].str, "|", r->elements[1].str);
}

absl::Status MailQueue::IndexDeadLetters(int step, const std::function<void()>& between_steps) {
  std::string cursor;
  while (true) {
    LS_ASSIGN_OR_RETURN(cursor, IndexDeadStep(cursor, step, true));
    if (cursor.empty()) return absl::OkStatus();
    if (between_steps) between_steps();
  }
}

absl::StatusOr<v1::DeadLetter> MailQueue::Replay(const std::string& id, const std::string& actor,
                                                 const std::string& request_id, absl::Time wall_now,
                                                 absl::Time domain_now, const std::string& actor_organization,
                                                 const std::function<absl::Status(const Fields&)>& allowed,
                                                 const std::string& trace_id) {
  // The request's content is the message it names (ReplayDeadLetterRequest:
  // name and request_id).
  const std::string fingerprint = absl::StrCat("ReplayDeadLetter:", id);
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(Fields f, Load(id));
    if (allowed && !f.empty()) LS_RETURN_IF_ERROR(allowed(f));
    // The event shows the dead letter replayed (its attempts as it died);
    // the answer, kept with the request id, the message as the step
    // leaves it (attempts start over).
    Fields after = f;
    after["replay_ms"] = Ms(domain_now);
    after["replayed_by"] = actor;
    v1::NotifyEvent ev;
    *ev.mutable_dead_letter_replayed()->mutable_dead_letter() = DeadLetterFromFields(id, after);
    after["attempts"] = "0";
    const v1::DeadLetter answer = DeadLetterFromFields(id, after);
    const std::string payload = NotifyEventPayload(ev, domain_now, actor, request_id, actor_organization, trace_id);
    auto r = redis_->Eval(kReplay, {K("msg:" + id), K("due"), K("dead"), kNotifyOutbox, RequestKey(actor, request_id)},
                          {id, actor, request_id, Ms(wall_now), payload, Ms(domain_now), kMailPrefix, fingerprint,
                           answer.SerializeAsString(),
                           // Gone when loaded: one written since is a conflict (loaded and scoped again).
                           f.empty() ? "gone" : f.count("dead_ms") ? f["dead_ms"] : ""});
    LS_RETURN_IF_ERROR(ScriptStatus(r));
    std::string replayed;
    LS_ASSIGN_OR_RETURN(const bool ran, RequestOutcome(*r, &replayed));
    v1::DeadLetter first;
    if (!ran && !replayed.empty() && first.ParseFromString(replayed)) return first;
    if (r->str == "conflict") continue;  // it died again meanwhile: the answer from the new fields
    if (r->str == "missing") {
      return MakeError(absl::StatusCode::kNotFound, "DEAD_LETTER_NOT_FOUND", "no such dead letter");
    }
    if (r->str == "notdead") {
      return MakeError(absl::StatusCode::kFailedPrecondition, "NOT_A_DEAD_LETTER",
                       "the message is not a dead letter (queued or delivered)");
    }
    if (!ran || r->str == "legacy") {  // a record without its answer: the message as it is now
      LS_ASSIGN_OR_RETURN(Fields now, Load(id));
      return DeadLetterFromFields(id, now);
    }
    return answer;
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the dead letter changed meanwhile; retry with the same request_id");
}

absl::Status MailQueue::ApplySchedule(const std::string& event_id, const StreamEvent& e,
                                      const std::vector<std::pair<std::string, absl::Time>>& add,
                                      const std::vector<std::string>& remove, absl::Time version) {
  if (add.empty() && remove.empty()) return absl::OkStatus();
  const std::string v = version == absl::InfinitePast() ? "" : absl::StrCat(absl::ToUnixMicros(version));
  std::vector<std::string> args = {kMailPrefix, e.type, e.payload, absl::StrCat(add.size()), v};
  for (const auto& [m, t] : add) {
    args.push_back(m);
    args.push_back(Ms(t));
  }
  for (const auto& m : remove) args.push_back(m);
  return ScriptStatus(redis_->Eval(kSchedule, {K("ev:" + event_id), K("sched")}, args));
}

absl::StatusOr<std::vector<MailQueue::Fired>> MailQueue::ClaimSchedules(absl::Time domain_now, absl::Time wall_now,
                                                                        absl::Time stale_before, int limit) {
  auto r = redis_->Eval(kClaimSchedules, {K("sched"), K("schedclaimed")},
                        {Ms(domain_now), Ms(wall_now), Ms(stale_before), absl::StrCat(limit), kMailPrefix});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  std::vector<Fired> out;
  for (size_t i = 0; i + 3 < r->elements.size(); i += 4) {
    Fired f;
    f.member = r->elements[i].str;
    f.event.type = r->elements[i + 1].str;
    f.event.payload = r->elements[i + 2].str;
    f.fire = FromMs(r->elements[i + 3].str);
    out.push_back(std::move(f));
  }
  return out;
}

absl::Status MailQueue::FinishSchedule(const std::string& member) {
  return ScriptStatus(
      redis_->Eval(kFinishSchedule, {K("schedclaimed"), K("schedev:" + member), K("sched")}, {member}));
}

absl::StatusOr<int> MailQueue::MakeDigests(absl::Time domain_now, absl::Time wall_now, int limit) {
  auto r = redis_->Eval(kDigests, {K("digests"), K("due")},
                        {Ms(domain_now), Ms(wall_now), absl::StrCat(limit), kMailPrefix, absl::StrCat(30 * 86400),
                         DigestSubject("en", "{n}"), DigestSubject("zh-CN", "{n}")});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  return static_cast<int>(r->integer);
}

absl::StatusOr<Fields> MailQueue::Settings(const std::string& user_id) {
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"HGETALL", absl::StrCat(kSettingsPrefix, user_id)}));
  if (v.is_error()) return RedisErrorStatus(v);
  return ToFields(v);
}

absl::StatusOr<bool> MailQueue::PutSettings(const std::string& user_id, const Fields& fields,
                                            const std::string& expected_etag, const std::string& actor,
                                            const std::string& request_id,
                                            const std::string& fingerprint, const std::string& event_payload,
                                            const std::string& client_etag, const std::string& answer,
                                            std::string* replayed_answer) {
  std::vector<std::string> args = {expected_etag, request_id, fingerprint, event_payload, client_etag, answer,
                                   KeepSeconds()};
  for (const auto& [k, v] : fields) {
    args.push_back(k);
    args.push_back(v);
  }
  auto r = redis_->Eval(kPutSettings, {absl::StrCat(kSettingsPrefix, user_id), RequestKey(actor, request_id), kNotifyOutbox},
                        args);
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  LS_ASSIGN_OR_RETURN(const bool ran, RequestOutcome(*r, replayed_answer));
  if (!ran) return false;
  if (r->str == "etag") {
    return MakeError(absl::StatusCode::kFailedPrecondition, "ETAG_MISMATCH",
                     "the settings changed since they were read; read them again");
  }
  if (r->str == "conflict") {
    return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                     "the settings changed meanwhile; retry with the same request_id");
  }
  return true;
}

absl::StatusOr<bool> MailQueue::KeepRequest(const std::string& actor, const std::string& request_id,
                                            const std::string& fingerprint, const std::string& answer,
                                            std::string* replayed_answer) {
  if (request_id.empty()) return true;
  auto r = redis_->Eval(kKeepRequest, {RequestKey(actor, request_id)}, {request_id, fingerprint, answer, KeepSeconds()});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  return RequestOutcome(*r, replayed_answer);
}

absl::StatusOr<bool> MailQueue::FindRequest(const std::string& actor, const std::string& request_id,
                                            const std::string& fingerprint, std::string* replayed_answer) {
  if (request_id.empty()) return true;
  auto r = redis_->Eval(kFindRequest, {RequestKey(actor, request_id)}, {request_id, fingerprint});
  LS_RETURN_IF_ERROR(ScriptStatus(r));
  return RequestOutcome(*r, replayed_answer);
}

absl::StatusOr<std::string> MailQueue::UnsubscribeKey() {
  unsigned char fresh[32];
  if (RAND_bytes(fresh, sizeof fresh) != 1) {
    return MakeError(absl::StatusCode::kInternal, "TOKEN_CRYPTO_FAILURE", "no random bytes");
  }
  const std::string hex = absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(fresh), sizeof fresh));
  LS_ASSIGN_OR_RETURN(RedisValue set, redis_->Command({"SET", K("unsubkey"), hex, "NX"}));
  if (set.is_error()) return RedisErrorStatus(set);
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"GET", K("unsubkey")}));
  if (v.is_error() || v.is_nil()) return RedisErrorStatus(v);
  return absl::HexStringToBytes(v.str);
}

absl::StatusOr<absl::Time> MailQueue::LegacyUnsubscribeExpiry(absl::Time first) {
  LS_ASSIGN_OR_RETURN(RedisValue set, redis_->Command({"SET", K("unsublegacy"), Ms(first), "NX"}));
  if (set.is_error()) return RedisErrorStatus(set);
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command({"GET", K("unsublegacy")}));
  if (v.is_error() || v.is_nil()) return RedisErrorStatus(v);
  return FromMs(v.str);
}

}  // namespace labshare::notify
