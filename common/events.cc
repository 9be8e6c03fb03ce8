#include "common/events.h"

#include <algorithm>

#include "absl/random/random.h"
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

EventConsumer::EventConsumer(RedisPool* pool, ConsumerOptions options)
    : pool_(pool), options_(std::move(options)) {}

absl::Status EventConsumer::EnsureGroup() {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"XGROUP", "CREATE", options_.stream,
                                                    options_.group, "0", "MKSTREAM"}));
  if (v.is_error() && !absl::StartsWith(v.str, "BUSYGROUP")) {
    LogError("XGROUP CREATE failed", {{"stream", options_.stream}, {"error", v.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot create consumer group");
  }
  return absl::OkStatus();
}

absl::StatusOr<int> EventConsumer::ApplyBatch(const RedisValue& entries, const BatchHandler& handler) {
  std::vector<StreamEvent> events;
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
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "type") event.type = fields[i + 1].str;
      if (fields[i].str == "payload") event.payload = fields[i + 1].str;
    }
    events.push_back(std::move(event));
  }
  if (!deleted.empty()) {
    LogWarning("pending entries deleted from the stream before they were applied; acknowledged",
               {{"stream", options_.stream},
                {"group", options_.group},
                {"count", std::to_string(deleted.size())},
                {"ids", absl::StrJoin(deleted, ",")}});
  }
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
      LogWarning("event not applied; left pending",
                 {{"stream", options_.stream}, {"id", events[i].stream_id},
                  {"error", applied[i].ToString()}});
    }
  }
  if (ack.size() == 3) return 0;
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
  return v.type == RedisValue::Type::kInteger ? static_cast<int>(v.integer) : 0;
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
  // 1. Our own pending entries (after a restart of this consumer, or left
  // by a failed handler).
  if (own_pending_) {
    LS_ASSIGN_OR_RETURN(RedisValue own,
                        pool_->Command({"XREADGROUP", "GROUP", options_.group, options_.consumer,
                                        "COUNT", count, "STREAMS", options_.stream, "0"}));
    if (own.is_error()) {
      LogError("XREADGROUP failed", {{"stream", options_.stream}, {"error", own.str}});
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read event stream");
    }
    const bool empty = own.type != RedisValue::Type::kArray || own.elements.empty() ||
                       own.elements[0].elements.size() < 2 || own.elements[0].elements[1].elements.empty();
    if (empty) {
      own_pending_ = false;
    } else {
      LS_ASSIGN_OR_RETURN(int n, ApplyBatch(own.elements[0].elements[1], handler));
      acked += n;
    }
  }
  // 2. Entries another consumer took and left idle. own_pending_ is set
  // before each read that makes entries ours (XAUTOCLAIM, '>'): if its reply
  // is lost they are pending on this consumer and are read again first.
  bool pending_before = own_pending_;
  own_pending_ = true;
  LS_ASSIGN_OR_RETURN(
      RedisValue claimed,
      pool_->Command({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer,
                      std::to_string(absl::ToInt64Milliseconds(options_.reclaim_idle)), "0-0",
                      "COUNT", count}));
  own_pending_ = pending_before;
  if (claimed.type == RedisValue::Type::kArray && claimed.elements.size() >= 2 &&
      !claimed.elements[1].elements.empty()) {
    own_pending_ = true;  // until acknowledged, they are ours
    LS_ASSIGN_OR_RETURN(int n, ApplyBatch(claimed.elements[1], handler));
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
    LogError("XREADGROUP failed", {{"stream", options_.stream}, {"error", fresh.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read event stream");
  }
  if (fresh.type == RedisValue::Type::kArray && !fresh.elements.empty()) {
    LS_ASSIGN_OR_RETURN(int n, ApplyBatch(fresh.elements[0].elements[1], handler));
    acked += n;
  }
  return acked;
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
  Add(consumer->options().stream, [consumer, handler = std::move(handler)]() -> absl::StatusOr<int> {
    LS_RETURN_IF_ERROR(consumer->EnsureGroup());
    return consumer->PollOnce(handler);
  });
}

void ConsumerLoop::Add(EventConsumer* consumer, EventConsumer::BatchHandler handler) {
  Add(consumer->options().stream, [consumer, handler = std::move(handler)]() -> absl::StatusOr<int> {
    LS_RETURN_IF_ERROR(consumer->EnsureGroup());
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
