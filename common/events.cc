#include "common/events.h"

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
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

absl::StatusOr<int> EventConsumer::Apply(const RedisValue& entries, const Handler& handler) {
  int acked = 0;
  for (const RedisValue& entry : entries.elements) {
    // entry: [id, [field, value, ...]]; a deleted entry has a nil body.
    if (entry.elements.size() != 2) continue;
    StreamEvent event;
    event.stream_id = entry.elements[0].str;
    const auto& fields = entry.elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "type") event.type = fields[i + 1].str;
      if (fields[i].str == "payload") event.payload = fields[i + 1].str;
    }
    absl::Status applied = handler(event);
    if (!applied.ok()) {
      LogWarning("event not applied; left pending",
                 {{"stream", options_.stream}, {"id", event.stream_id},
                  {"error", applied.ToString()}});
      continue;
    }
    LS_ASSIGN_OR_RETURN(RedisValue ack, pool_->Command({"XACK", options_.stream, options_.group,
                                                        event.stream_id}));
    if (ack.type == RedisValue::Type::kInteger) acked += static_cast<int>(ack.integer);
  }
  return acked;
}

absl::StatusOr<int> EventConsumer::PollOnce(const Handler& handler) {
  const std::string count = std::to_string(options_.batch);
  int acked = 0;
  // 1. Our own pending entries (after a restart of this consumer).
  LS_ASSIGN_OR_RETURN(RedisValue own,
                      pool_->Command({"XREADGROUP", "GROUP", options_.group, options_.consumer,
                                      "COUNT", count, "STREAMS", options_.stream, "0"}));
  if (own.type == RedisValue::Type::kArray && !own.elements.empty()) {
    LS_ASSIGN_OR_RETURN(int n, Apply(own.elements[0].elements[1], handler));
    acked += n;
  }
  // 2. Entries another consumer took and left idle.
  LS_ASSIGN_OR_RETURN(
      RedisValue claimed,
      pool_->Command({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer,
                      std::to_string(absl::ToInt64Milliseconds(options_.reclaim_idle)), "0-0",
                      "COUNT", count}));
  if (claimed.type == RedisValue::Type::kArray && claimed.elements.size() >= 2) {
    LS_ASSIGN_OR_RETURN(int n, Apply(claimed.elements[1], handler));
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
  LS_ASSIGN_OR_RETURN(RedisValue fresh, pool_->Command(read));
  if (fresh.is_error()) {
    LogError("XREADGROUP failed", {{"stream", options_.stream}, {"error", fresh.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read event stream");
  }
  if (fresh.type == RedisValue::Type::kArray && !fresh.elements.empty()) {
    LS_ASSIGN_OR_RETURN(int n, Apply(fresh.elements[0].elements[1], handler));
    acked += n;
  }
  return acked;
}

}  // namespace labshare
