#include "common/events.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/log.h"

namespace labshare {

const char kApplyOnceLua[] = R"lua(
local function apply_once(marker_key, ttl_seconds)
  if redis.call('SET', marker_key, '1', 'NX', 'EX', ttl_seconds) then return true end
  return false
end
)lua";

std::string NewEventId() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

namespace {

// "ms-seq" (or "ms").
bool ParseId(absl::string_view id, uint64_t* ms, uint64_t* seq) {
  const size_t dash = id.find('-');
  *seq = 0;
  if (dash == absl::string_view::npos) return absl::SimpleAtoi(id, ms);
  return absl::SimpleAtoi(id.substr(0, dash), ms) && absl::SimpleAtoi(id.substr(dash + 1), seq);
}

constexpr char kPermanentPayload[] = "type.labshare.dev/labshare.PermanentEventFailure";

// The due pending entries of a list, claimed by the consumer (XCLAIM: the
// delivery count goes up, the idle time restarts); entries the stream no
// longer holds are acknowledged. KEYS[1] stream. ARGV: group, consumer,
// owner ('' any), min idle ms, scan start, scan count, claim count, retry
// initial ms, retry max ms. Answers {next start ('-': from the beginning
// again), {{id, {field, value...}}...}, {deleted id...}, entries scanned,
// error ('' or the error of XPENDING, e.g. NOGROUP)}.
const RedisScript& ClaimDueScript() {
  static const RedisScript* script = new RedisScript(R"lua(
local p
if ARGV[3] ~= '' then
  p = redis.pcall('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], ARGV[5], '+', ARGV[6], ARGV[3])
else
  p = redis.pcall('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], ARGV[5], '+', ARGV[6])
end
if type(p) == 'table' and p.err then return {'-', {}, {}, 0, p.err} end
local want, initial, max = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local claimed, deleted = {}, {}
local scanned, nextstart = 0, '-'
for _, e in ipairs(p) do
  scanned = scanned + 1
  local delay, n = initial, tonumber(e[4])
  local i = 1
  while i < n and delay < max do delay = delay * 2; i = i + 1 end
  if delay > max then delay = max end
  if tonumber(e[3]) >= delay then
    local r = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, e[1])
    if type(r[1]) == 'table' and type(r[1][2]) == 'table' then
      claimed[#claimed + 1] = r[1]
    else
      redis.call('XACK', KEYS[1], ARGV[1], e[1])
      deleted[#deleted + 1] = e[1]
    end
    if #claimed + #deleted >= want then
      nextstart = '(' .. e[1]
      break
    end
  end
  if scanned == #p and #p >= tonumber(ARGV[6]) then nextstart = '(' .. e[1] end
end
return {nextstart, claimed, deleted, scanned, ''}
)lua");
  return *script;
}

// Parks one pending entry: appended to the parking stream, then
// acknowledged; nothing when it is no longer pending (parked or
// acknowledged meanwhile). KEYS[1] stream, KEYS[2] parking stream. ARGV:
// group, consumer, id, reason, the entry's fields and values. Answers 1 when
// parked, 0 when not pending.
const RedisScript& ParkScript() {
  static const RedisScript* script = new RedisScript(R"lua(
-- Still pending with this consumer: one another replica claimed meanwhile
-- is its to apply or park.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
local t = redis.call('TIME')
local ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local args = {'XADD', KEYS[2], '*'}
for i = 5, #ARGV do args[#args + 1] = ARGV[i] end
for _, v in ipairs({'id', ARGV[3], 'group', ARGV[1], 'consumer', ARGV[2], 'reason', ARGV[4], 'time', ms}) do
  args[#args + 1] = v
end
redis.call(unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
)lua");
  return *script;
}

}  // namespace

std::string ParkingStream(const std::string& stream, const std::string& group) {
  return absl::StrCat(stream, ":parked:", group);
}

absl::Status PermanentEventFailure(absl::Status cause) {
  if (cause.ok()) cause = absl::InternalError("permanent event failure");
  cause.SetPayload(kPermanentPayload, absl::Cord("1"));
  return cause;
}

bool IsPermanentEventFailure(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kPermanentPayload).has_value();
}

EventConsumer::EventConsumer(RedisPool* pool, ConsumerOptions options)
    : pool_(pool), options_(std::move(options)) {
  if (options_.batch < 1) options_.batch = 1;
  if (options_.scan < options_.batch) options_.scan = options_.batch;
  if (options_.retry_initial < absl::ZeroDuration()) options_.retry_initial = absl::ZeroDuration();
  if (options_.retry_max < options_.retry_initial) options_.retry_max = options_.retry_initial;
}

absl::Status EventConsumer::EnsureGroup() {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"XGROUP", "CREATE", options_.stream,
                                                    options_.group, "0", "MKSTREAM"}));
  if (v.is_error() && !absl::StartsWith(v.str, "BUSYGROUP")) {
    LogError("XGROUP CREATE failed", {{"stream", options_.stream}, {"error", v.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot create consumer group");
  }
  group_ready_ = true;
  return absl::OkStatus();
}

absl::Status EventConsumer::Park(const std::string& id, const std::vector<std::string>& fields,
                                 const absl::Status& cause) {
  // "DATA_LOSS CORRUPT_EVENT: unreadable booking event 1-0" (no payloads).
  std::string reason = absl::StatusCodeToString(cause.code());
  if (const std::string r = ErrorReason(cause); !r.empty()) absl::StrAppend(&reason, " ", r);
  absl::StrAppend(&reason, ": ", cause.message());
  std::vector<std::string> args = {options_.group, options_.consumer, id, reason};
  args.insert(args.end(), fields.begin(), fields.end());
  const std::string parking = ParkingStream(options_.stream, options_.group);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(ParkScript(), {options_.stream, parking}, args));
  if (v.type == RedisValue::Type::kInteger && v.integer == 1) {
    parked_.fetch_add(1, std::memory_order_relaxed);
    LogError("event can never be applied; parked",
             {{"stream", options_.stream}, {"group", options_.group}, {"id", id},
              {"parking_stream", parking}, {"error", reason}});
  }
  return absl::OkStatus();
}

absl::StatusOr<int> EventConsumer::ApplyBatch(const RedisValue& entries, const BatchHandler& handler) {
  std::vector<StreamEvent> events;
  std::vector<std::vector<std::string>> raw;  // each event's fields and values
  std::vector<std::string> ack = {"XACK", options_.stream, options_.group};
  std::vector<std::string> deleted;
  events.reserve(entries.elements.size());
  for (const RedisValue& entry : entries.elements) {
    if (entry.elements.empty()) continue;
    // entry: [id, [field, value, ...]]; a deleted entry has a nil body:
    // nothing to apply, acknowledged (and logged below).
    if (entry.elements.size() != 2 || entry.elements[1].type != RedisValue::Type::kArray) {
      ack.push_back(entry.elements[0].str);
      deleted.push_back(entry.elements[0].str);
      continue;
    }
    StreamEvent event;
    event.stream_id = entry.elements[0].str;
    const auto& fields = entry.elements[1].elements;
    std::vector<std::string> kv;
    kv.reserve(fields.size());
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "type") event.type = fields[i + 1].str;
      if (fields[i].str == "payload") event.payload = fields[i + 1].str;
      kv.push_back(fields[i].str);
      kv.push_back(fields[i + 1].str);
    }
    events.push_back(std::move(event));
    raw.push_back(std::move(kv));
  }
  if (!deleted.empty()) {
    LogWarning("pending entries deleted from the stream before they were applied; acknowledged",
               {{"stream", options_.stream},
                {"group", options_.group},
                {"count", std::to_string(deleted.size())},
                {"ids", absl::StrJoin(deleted, ",")}});
  }
  int parked = 0;
  if (!events.empty()) {
    const std::vector<absl::Status> applied = handler(events);
    if (applied.size() != events.size()) {
      own_pending_ = true;
      LogError("batch handler answered the wrong number of statuses",
               {{"stream", options_.stream},
                {"entries", std::to_string(events.size())},
                {"statuses", std::to_string(applied.size())}});
      return absl::InternalError("event handler answered a wrong batch");
    }
    for (size_t i = 0; i < events.size(); ++i) {
      if (applied[i].ok()) {
        ack.push_back(events[i].stream_id);
        continue;
      }
      own_pending_ = true;
      failed_.fetch_add(1, std::memory_order_relaxed);
      if (IsPermanentEventFailure(applied[i])) {
        // Left pending (and retried later) if parking fails.
        const absl::Status p = Park(events[i].stream_id, raw[i], applied[i]);
        if (p.ok()) {
          ++parked;
        } else {
          LogWarning("event cannot be parked; left pending",
                     {{"stream", options_.stream}, {"id", events[i].stream_id}, {"error", p.ToString()}});
        }
        continue;
      }
      LogWarning("event not applied; left pending",
                 {{"stream", options_.stream}, {"group", options_.group}, {"id", events[i].stream_id},
                  {"error", applied[i].ToString()}});
    }
  }
  if (ack.size() == 3) return parked;
  // Set before the call: if the reply is lost (a transport error returns
  // here) the entries are still ours and pending, and are read again first.
  const bool pending_before = own_pending_;
  own_pending_ = true;
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command(ack));
  if (v.is_error()) {
    LogError("XACK failed", {{"stream", options_.stream}, {"error", v.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot acknowledge events");
  }
  own_pending_ = pending_before;
  return parked + (v.type == RedisValue::Type::kInteger ? static_cast<int>(v.integer) : 0);
}

absl::StatusOr<RedisValue> EventConsumer::ClaimDue(bool own, bool* none_pending) {
  std::string& cursor = own ? own_cursor_ : group_cursor_;
  const std::string start = cursor;
  LS_ASSIGN_OR_RETURN(
      RedisValue v,
      pool_->Eval(ClaimDueScript(), {options_.stream},
                  {options_.group, options_.consumer, own ? options_.consumer : "",
                   std::to_string(own ? 0 : absl::ToInt64Milliseconds(options_.reclaim_idle)), start,
                   std::to_string(options_.scan), std::to_string(options_.batch),
                   std::to_string(absl::ToInt64Milliseconds(options_.retry_initial)),
                   std::to_string(absl::ToInt64Milliseconds(options_.retry_max))}));
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 5) {
    LogError("pending-entry claim answered an unexpected reply", {{"stream", options_.stream}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read pending events");
  }
  if (!v.elements[4].str.empty()) {
    if (absl::StartsWith(v.elements[4].str, "NOGROUP")) group_ready_ = false;
    LogError("XPENDING failed", {{"stream", options_.stream}, {"group", options_.group},
                                 {"error", v.elements[4].str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read pending events");
  }
  cursor = v.elements[0].str;
  *none_pending = start == "-" && v.elements[3].integer == 0;
  if (!v.elements[2].elements.empty()) {
    std::vector<std::string> ids;
    for (const RedisValue& id : v.elements[2].elements) ids.push_back(id.str);
    LogWarning("pending entries deleted from the stream before they were applied; acknowledged",
               {{"stream", options_.stream},
                {"group", options_.group},
                {"count", std::to_string(ids.size())},
                {"ids", absl::StrJoin(ids, ",")}});
  }
  return std::move(v.elements[1]);
}

absl::StatusOr<int> EventConsumer::PollOnce(const Handler& handler) {
  return PollBatch([this, &handler](const std::vector<StreamEvent>& events) {
    std::vector<absl::Status> out;
    out.reserve(events.size());
    for (const StreamEvent& e : events) out.push_back(handler(e));
    return out;
  });
}

absl::StatusOr<int> EventConsumer::PollBatch(const BatchHandler& handler) {
  const std::string count = std::to_string(options_.batch);
  int acked = 0;
  // 1. Our own pending entries that are due again (after a restart of this
  // consumer, or left by a failed handler).
  if (own_pending_) {
    bool none = false;
    LS_ASSIGN_OR_RETURN(RedisValue own, ClaimDue(/*own=*/true, &none));
    if (none) {
      own_pending_ = false;
    } else if (!own.elements.empty()) {
      LS_ASSIGN_OR_RETURN(int n, ApplyBatch(own, handler));
      acked += n;
    }
  }
  // 2. Entries of the group left idle (another consumer's, dead or stuck),
  // once due. own_pending_ is set before each read that makes entries ours
  // (the claim, '>'): if its reply is lost they are pending on this
  // consumer and are read again first.
  bool pending_before = own_pending_;
  own_pending_ = true;
  bool unused = false;
  LS_ASSIGN_OR_RETURN(RedisValue claimed, ClaimDue(/*own=*/false, &unused));
  own_pending_ = pending_before;
  if (!claimed.elements.empty()) {
    own_pending_ = true;  // until acknowledged, they are ours
    LS_ASSIGN_OR_RETURN(int n, ApplyBatch(claimed, handler));
    acked += n;
  }
  // 3. New entries.
  std::vector<std::string> read = {"XREADGROUP", "GROUP", options_.group, options_.consumer,
                                   "COUNT", count};
  const int64_t block_ms = absl::ToInt64Milliseconds(options_.block);
  if (block_ms > 0) {
    read.push_back("BLOCK");
    read.push_back(std::to_string(block_ms));
  }
  read.insert(read.end(), {"STREAMS", options_.stream, ">"});
  pending_before = own_pending_;
  own_pending_ = true;
  LS_ASSIGN_OR_RETURN(RedisValue fresh, pool_->Command(read));
  own_pending_ = pending_before;
  if (fresh.is_error()) {
    if (absl::StartsWith(fresh.str, "NOGROUP")) group_ready_ = false;
    LogError("XREADGROUP failed", {{"stream", options_.stream}, {"error", fresh.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read event stream");
  }
  if (fresh.type == RedisValue::Type::kArray && !fresh.elements.empty()) {
    LS_ASSIGN_OR_RETURN(int n, ApplyBatch(fresh.elements[0].elements[1], handler));
    acked += n;
  }
  return acked;
}

// ------------------------------------------------------------ metrics

std::string RenderConsumerMetrics(RedisPool* pool, const std::vector<const EventConsumer*>& consumers) {
  std::string failed = "# HELP labshare_consumer_failed_entries_total Outbox entries whose handler failed in this process (parked ones included).\n"
                       "# TYPE labshare_consumer_failed_entries_total counter\n";
  std::string parked_total = "# HELP labshare_consumer_parked_entries_total Outbox entries this process parked (can never be applied).\n"
                             "# TYPE labshare_consumer_parked_entries_total counter\n";
  std::string parked = "# HELP labshare_consumer_parked_entries Entries in the group's parking stream (<stream>:parked:<group>).\n"
                       "# TYPE labshare_consumer_parked_entries gauge\n";
  std::string oldest = "# HELP labshare_consumer_oldest_pending_age_seconds Age of the oldest entry the group has pending (Redis clock; 0: none).\n"
                       "# TYPE labshare_consumer_oldest_pending_age_seconds gauge\n";
  int64_t errors = 0;
  // Redis's clock: stream ids come from it.
  int64_t now_ms = -1;
  if (auto t = pool->Command({"TIME"}); t.ok() && t->is_array() && t->elements.size() == 2) {
    int64_t sec = 0, usec = 0;
    if (absl::SimpleAtoi(t->elements[0].str, &sec) && absl::SimpleAtoi(t->elements[1].str, &usec)) {
      now_ms = sec * 1000 + usec / 1000;
    }
  }
  absl::flat_hash_set<std::string> seen;
  for (const EventConsumer* c : consumers) {
    const std::string& stream = c->options().stream;
    const std::string& group = c->options().group;
    if (!seen.insert(absl::StrCat(stream, "\n", group)).second) continue;
    const std::string labels = absl::StrCat("{stream=\"", stream, "\",group=\"", group, "\"}");
    absl::StrAppend(&failed, "labshare_consumer_failed_entries_total", labels, " ", c->failed_entries(), "\n");
    absl::StrAppend(&parked_total, "labshare_consumer_parked_entries_total", labels, " ", c->parked_entries(), "\n");
    auto len = pool->Command({"XLEN", ParkingStream(stream, group)});
    auto pending = pool->Command({"XPENDING", stream, group});
    if (!len.ok() || len->is_error() || !pending.ok() || pending->is_error() || now_ms < 0) {
      ++errors;
      continue;
    }
    absl::StrAppend(&parked, "labshare_consumer_parked_entries", labels, " ", len->integer, "\n");
    double age = 0;
    uint64_t ms = 0, seq = 0;
    if (pending->is_array() && pending->elements.size() >= 2 && pending->elements[0].integer > 0 &&
        ParseId(pending->elements[1].str, &ms, &seq) && static_cast<int64_t>(ms) < now_ms) {
      age = static_cast<double>(now_ms - static_cast<int64_t>(ms)) / 1000.0;
    }
    absl::StrAppend(&oldest, "labshare_consumer_oldest_pending_age_seconds", labels, " ", age, "\n");
  }
  return absl::StrCat(failed, parked_total, parked, oldest,
                      "# HELP labshare_consumer_scrape_errors Consumer groups whose figures could not be read at this scrape.\n"
                      "# TYPE labshare_consumer_scrape_errors gauge\n"
                      "labshare_consumer_scrape_errors ", errors, "\n");
}

// ------------------------------------------------------------ backoff

Backoff::Backoff(BackoffOptions options, uint64_t seed)
    : options_(options), rng_(seed != 0 ? seed : std::random_device{}()) {
  if (options_.initial <= absl::ZeroDuration()) options_.initial = absl::Milliseconds(1);
  if (options_.max < options_.initial) options_.max = options_.initial;
  if (options_.multiplier < 1.0) options_.multiplier = 1.0;
  options_.jitter = std::clamp(options_.jitter, 0.0, 1.0);
}

absl::Duration Backoff::Next() {
  absl::Duration d = options_.initial;
  for (int i = 0; i < failures_ && d < options_.max; ++i) d = d * options_.multiplier;
  d = std::min(d, options_.max);
  ++failures_;
  std::uniform_real_distribution<double> u(1.0 - options_.jitter, 1.0);
  return d * u(rng_);
}

// ------------------------------------------------------------ loop

ConsumerLoop::ConsumerLoop(ConsumerLoopOptions options)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock : &system_clock_),
      unavailable_(options_.backoff, options_.seed) {}

void ConsumerLoop::Add(std::string stream, Poll poll) {
  const uint64_t seed = options_.seed == 0 ? 0 : options_.seed + streams_.size();
  streams_.push_back(Stream{std::move(stream), std::move(poll), Backoff(options_.backoff, seed)});
}

void ConsumerLoop::Add(EventConsumer* consumer, EventConsumer::Handler handler) {
  consumers_.push_back(consumer);
  Add(consumer->options().stream, [consumer, handler = std::move(handler)]() -> absl::StatusOr<int> {
    if (!consumer->group_ready()) LS_RETURN_IF_ERROR(consumer->EnsureGroup());
    return consumer->PollOnce(handler);
  });
}

void ConsumerLoop::Add(EventConsumer* consumer, EventConsumer::BatchHandler handler) {
  consumers_.push_back(consumer);
  Add(consumer->options().stream, [consumer, handler = std::move(handler)]() -> absl::StatusOr<int> {
    if (!consumer->group_ready()) LS_RETURN_IF_ERROR(consumer->EnsureGroup());
    return consumer->PollBatch(handler);
  });
}

void ConsumerLoop::Warn(absl::string_view msg, const LogFields& fields) {
  if (options_.warn) {
    options_.warn(msg, fields);
  } else {
    LogWarning(msg, fields);
  }
}

absl::Duration ConsumerLoop::RunOnce() {
  if (clock_->Now() < paused_until_) return paused_until_ - clock_->Now();
  for (Stream& s : streams_) {
    if (stopped()) return absl::ZeroDuration();
    if (clock_->Now() < s.next_due) continue;
    absl::StatusOr<int> polled = s.poll();
    // A poll that fails while the process stops is not worth a line.
    if (stopped()) return absl::ZeroDuration();
    const absl::Time now = clock_->Now();
    if (!polled.ok() && polled.status().code() == absl::StatusCode::kUnavailable) {
      // The store itself: every stream would fail alike. Pause them all.
      const absl::Duration delay = unavailable_.Next();
      paused_until_ = now + delay;
      Warn(absl::StrCat(options_.name, ": event store unavailable; pausing all streams"),
           {{"stream", s.name},
            {"error", polled.status().ToString()},
            {"attempt", std::to_string(unavailable_.failures())},
            {"retry_in_ms", std::to_string(absl::ToInt64Milliseconds(delay))}});
      return delay;
    }
    if (polled.ok() && unavailable_.failures() > 0) {
      LogInfo(absl::StrCat(options_.name, ": event store available again"),
              {{"failed_attempts", std::to_string(unavailable_.failures())}});
      unavailable_.Reset();
    }
    if (polled.ok()) {
      if (s.backoff.failures() > 0) {
        LogInfo(absl::StrCat(options_.name, ": stream readable again"),
                {{"stream", s.name}, {"failed_attempts", std::to_string(s.backoff.failures())}});
      }
      s.backoff.Reset();
      s.next_due = absl::InfinitePast();
      continue;
    }
    const absl::Duration delay = s.backoff.Next();
    s.next_due = now + delay;
    Warn(absl::StrCat(options_.name, ": cannot read; retrying later"),
         {{"stream", s.name},
          {"error", polled.status().ToString()},
          {"attempt", std::to_string(s.backoff.failures())},
          {"retry_in_ms", std::to_string(absl::ToInt64Milliseconds(delay))}});
  }
  // The idle pace while some stream is healthy; otherwise until the first
  // failing stream is due again.
  const absl::Time now = clock_->Now();
  absl::Time first_due = absl::InfiniteFuture();
  for (const Stream& s : streams_) first_due = std::min(first_due, s.next_due);
  if (first_due == absl::InfiniteFuture()) return options_.idle;  // no stream
  return std::max(options_.idle, first_due - now);
}

void ConsumerLoop::Run() {
  while (!stopped()) {
    const absl::Duration wait = RunOnce();
    if (stopped()) break;
    if (options_.sleep) {
      options_.sleep(wait);
    } else {
      stop_.WaitForNotificationWithTimeout(wait);
    }
  }
}

}  // namespace labshare
