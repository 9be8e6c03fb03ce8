#include "common/outbox_trim.h"

#include <algorithm>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/log.h"
#include "common/metrics.h"

ABSL_FLAG(absl::Duration, outbox_retention, absl::Hours(7 * 24),
          "Outbox entries every consumer group has acknowledged are trimmed once older than this "
          "(by Redis's clock); 0: never trimmed.");
ABSL_FLAG(absl::Duration, outbox_trim_interval, absl::Minutes(5), "How often owned outboxes are trimmed.");
ABSL_FLAG(std::vector<std::string>, outbox_retention_require_groups, std::vector<std::string>({"usage"}),
          "Consumer groups every outbox must have before anything of it is trimmed (comma-separated), "
          "in addition to the groups each owning service requires of each of its streams.");

namespace labshare {
namespace {

// KEYS[1] the stream. ARGV[1] the safety window in milliseconds, measured
// on Redis's own clock (TIME), the clock XADD '*' stamps the entry ids with:
// entries below "<TIME ms - window>-0" are old enough. ARGV[2..] required
// groups. Replies {trimmed, min id, '', held by} (held by: the group whose
// unacknowledged entries bound the cut below the window, '' when the window
// does) or {0, '', reason}.
const RedisScript& TrimScript() {
  static const RedisScript* s = new RedisScript(R"lua(
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', 'no stream'} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, '', 'no group'} end
local t = redis.call('TIME')
local cut_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
if cut_ms <= 0 then return {0, '', 'window before the epoch'} end
local window = string.format('%.0f', cut_ms) .. '-0'
local cut = window
local held = ''
local names = {}
for _, g in ipairs(groups) do
  local name, last, pending = nil, '0-0', 0
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'last-delivered-id' then last = g[i + 1]
    elseif g[i] == 'pending' then pending = tonumber(g[i + 1]) end
  end
  names[name] = true
  -- The first entry this group has not acknowledged: its oldest pending
  -- entry, else the one right after its last-delivered id.
  local lm, ls = parse(last)
  local bound = lm .. '-' .. (ls + 1)
  if pending > 0 then
    local p = redis.call('XPENDING', KEYS[1], name)
    if p[2] and less(p[2], bound) then bound = p[2] end
  end
  if less(bound, cut) then
    cut = bound
    held = name
  end
end
for i = 2, #ARGV do
  if not names[ARGV[i]] then return {0, '', 'missing group ' .. ARGV[i]} end
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', cut)
if held ~= '' then
  -- Held back only if entries older than the window remain.
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first == 0 or not less(first[1][1], window) then held = '' end
end
return {trimmed, cut, '', held}
)lua");
  return *s;
}

}  // namespace

bool ParseStreamId(const std::string& id, uint64_t* ms, uint64_t* seq) {
  std::vector<absl::string_view> parts = absl::StrSplit(id, '-');
  if (parts.empty() || parts.size() > 2 || !absl::SimpleAtoi(parts[0], ms)) return false;
  *seq = 0;
  return parts.size() == 1 || absl::SimpleAtoi(parts[1], seq);
}

OutboxTrimmer::OutboxTrimmer(RedisPool* pool, absl::Duration retention, std::vector<std::string> required_groups)
    : pool_(pool), retention_(retention), required_groups_(std::move(required_groups)) {}

absl::StatusOr<OutboxTrimResult> OutboxTrimmer::Trim(const std::string& stream,
                                                      const std::vector<std::string>& also_required) const {
  OutboxTrimResult out;
  if (retention_ <= absl::ZeroDuration()) {
    out.skipped = "retention off";
    return out;
  }
  // The window is applied inside the script on Redis's clock: the entry ids
  // come from it (XADD '*'), not from the platform clock (which may be a
  // demo clock far from real time).
  std::vector<std::string> args = {absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(retention_)))};
  args.insert(args.end(), required_groups_.begin(), required_groups_.end());
  args.insert(args.end(), also_required.begin(), also_required.end());
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(TrimScript(), {stream}, args));
  if (v.is_error() || v.type != RedisValue::Type::kArray || v.elements.size() < 2) {
    LogError("outbox trim failed", {{"stream", stream}, {"error", v.str}});
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot trim the outbox");
  }
  out.trimmed = v.elements[0].integer;
  out.min_id = v.elements[1].str;
  if (v.elements.size() > 2) out.skipped = v.elements[2].str;
  if (v.elements.size() > 3) out.held_by = v.elements[3].str;
  return out;
}

absl::StatusOr<int64_t> OutboxTrimmer::TrimAll(const std::vector<std::string>& streams) const {
  int64_t total = 0;
  for (const std::string& s : streams) {
    LS_ASSIGN_OR_RETURN(OutboxTrimResult r, Trim(s));
    total += r.trimmed;
  }
  return total;
}

absl::StatusOr<StreamLag> ReadStreamLag(RedisPool* pool, const std::string& stream, int64_t cap, int page) {
  StreamLag out;
  out.stream = stream;
  LS_ASSIGN_OR_RETURN(RedisValue len, pool->Command({"XLEN", stream}));
  LS_ASSIGN_OR_RETURN(RedisValue exists, pool->Command({"EXISTS", stream}));
  out.exists = exists.integer == 1;
  if (!out.exists) return out;
  out.length = len.integer;
  LS_ASSIGN_OR_RETURN(RedisValue groups, pool->Command({"XINFO", "GROUPS", stream}));
  if (groups.is_error() || groups.type != RedisValue::Type::kArray) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read the consumer groups");
  }
  for (const RedisValue& g : groups.elements) {
    GroupLag gl;
    gl.last_delivered_id = "0-0";
    bool known = false;  // Redis's own figure (entries-added - entries-read)
    for (size_t i = 0; i + 1 < g.elements.size(); i += 2) {
      const std::string& k = g.elements[i].str;
      const RedisValue& v = g.elements[i + 1];
      if (k == "name") gl.group = v.str;
      if (k == "last-delivered-id") gl.last_delivered_id = v.str;
      if (k == "pending") gl.pending = v.integer;
      if (k == "lag" && v.type == RedisValue::Type::kInteger) {
        gl.undelivered = v.integer;
        known = true;
      }
    }
    if (known) {
      out.groups.push_back(std::move(gl));
      continue;
    }
    // Redis cannot tell (entries-read unknown, e.g. after an AOF reload, or
    // a Redis before 7.0): the entries after last-delivered-id, counted up
    // to `cap` (a figure of `cap` means at least that many).
    gl.at_least = true;
    std::string from = "(" + gl.last_delivered_id;
    while (gl.undelivered < cap) {
      const int64_t want = std::min<int64_t>(page, cap - gl.undelivered);
      LS_ASSIGN_OR_RETURN(RedisValue r,
                          pool->Command({"XRANGE", stream, from, "+", "COUNT", std::to_string(want)}));
      if (r.type != RedisValue::Type::kArray || r.elements.empty()) break;
      gl.undelivered += static_cast<int64_t>(r.elements.size());
      from = "(" + r.elements.back().elements[0].str;
      if (static_cast<int64_t>(r.elements.size()) < want) {
        gl.at_least = false;
        break;
      }
    }
    if (gl.undelivered < cap) gl.at_least = false;
    out.groups.push_back(std::move(gl));
  }
  return out;
}

std::string RenderOutboxMetrics(RedisPool* pool, const std::vector<std::string>& streams) {
  std::string length = "# HELP labshare_outbox_length Entries an outbox stream holds.\n"
                       "# TYPE labshare_outbox_length gauge\n";
  std::string undelivered =
      "# HELP labshare_outbox_undelivered Entries after the consumer group's last-delivered id (Redis's figure; "
      "when Redis cannot tell, e.g. after an AOF reload, counted up to 10000: at least that many, see "
      "labshare_outbox_undelivered_at_least).\n"
      "# TYPE labshare_outbox_undelivered gauge\n";
  std::string pending = "# HELP labshare_outbox_pending Entries delivered to the group, not acknowledged.\n"
                        "# TYPE labshare_outbox_pending gauge\n";
  std::string lag = "# HELP labshare_outbox_lag Entries the group has not acknowledged (undelivered + pending).\n"
                    "# TYPE labshare_outbox_lag gauge\n";
  std::string at_least =
      "# HELP labshare_outbox_undelivered_at_least 1 when the undelivered figure is a lower bound (counted, capped).\n"
      "# TYPE labshare_outbox_undelivered_at_least gauge\n";
  int errors = 0;
  bool unavailable = false;
  for (const std::string& s : streams) {
    // Redis unreachable: the other streams are not tried (each would wait
    // for the command timeout), only counted.
    if (unavailable) {
      ++errors;
      continue;
    }
    auto l = ReadStreamLag(pool, s);
    if (!l.ok()) {
      ++errors;
      unavailable = l.status().code() == absl::StatusCode::kUnavailable ||
                    l.status().code() == absl::StatusCode::kDeadlineExceeded;
      continue;
    }
    if (!l->exists) continue;
    absl::StrAppend(&length, "labshare_outbox_length{stream=\"", s, "\"} ", l->length, "\n");
    for (const GroupLag& g : l->groups) {
      const std::string labels = absl::StrCat("{stream=\"", s, "\",group=\"", g.group, "\"} ");
      absl::StrAppend(&undelivered, "labshare_outbox_undelivered", labels, g.undelivered, "\n");
      absl::StrAppend(&at_least, "labshare_outbox_undelivered_at_least", labels, g.at_least ? 1 : 0, "\n");
      absl::StrAppend(&pending, "labshare_outbox_pending", labels, g.pending, "\n");
      absl::StrAppend(&lag, "labshare_outbox_lag", labels, g.lag(), "\n");
    }
  }
  return absl::StrCat(length, undelivered, at_least, pending, lag,
                      "# HELP labshare_outbox_scrape_errors Outbox streams that could not be read.\n"
                      "# TYPE labshare_outbox_scrape_errors gauge\n",
                      "labshare_outbox_scrape_errors ", errors, "\n");
}

std::vector<std::string> OutboxEveryStreamGroups() {
  return {kOutboxGroupUsage, kOutboxGroupNotifyMail, kOutboxGroupNotifyWebhooks, kOutboxGroupNotifyFeeds};
}

OutboxMaintenance::OutboxMaintenance(RedisPool* pool, std::vector<OutboxStream> streams)
    : pool_(pool), streams_(std::move(streams)), interval_(absl::GetFlag(FLAGS_outbox_trim_interval)) {
  std::vector<std::string> names;
  for (const OutboxStream& s : streams_) names.push_back(s.stream);
  collector_ = RegisterMetricsCollector([this, names] { return RenderOutboxMetrics(pool_, names); });
  const absl::Duration retention = absl::GetFlag(FLAGS_outbox_retention);
  if (retention <= absl::ZeroDuration()) return;
  // The flag's groups are required of every stream, in addition to each
  // stream's own.
  std::vector<std::string> required;
  for (const std::string& g : absl::GetFlag(FLAGS_outbox_retention_require_groups)) {
    if (!g.empty()) required.push_back(g);
  }
  trimmer_ = std::make_unique<OutboxTrimmer>(pool, retention, std::move(required));
  if (interval_ <= absl::ZeroDuration()) interval_ = absl::Minutes(5);
  thread_ = std::thread([this] {
    do {
      // What holds trimming back, one line per pass (so at most one per
      // interval): a required group missing, or a group whose
      // unacknowledged entries are older than the window.
      std::vector<std::string> held;
      for (const OutboxStream& s : streams_) {
        if (stop_.HasBeenNotified()) return;
        auto r = trimmer_->Trim(s.stream, s.required_groups);
        if (!r.ok()) {
          LogWarning("outbox trim", {{"stream", s.stream}, {"error", r.status().ToString()}});
          continue;
        }
        if (r->trimmed > 0) {
          LogInfo("outbox trimmed",
                  {{"stream", s.stream}, {"entries", std::to_string(r->trimmed)}, {"below", r->min_id}});
        }
        if (absl::StartsWith(r->skipped, "missing group")) held.push_back(absl::StrCat(s.stream, ": ", r->skipped));
        if (!r->held_by.empty()) held.push_back(absl::StrCat(s.stream, ": group ", r->held_by, " below ", r->min_id));
      }
      if (!held.empty()) LogInfo("outbox trim held back", {{"by", absl::StrJoin(held, "; ")}});
    } while (!stop_.WaitForNotificationWithTimeout(interval_));
  });
}

OutboxMaintenance::~OutboxMaintenance() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
  UnregisterMetricsCollector(collector_);
}

}  // namespace labshare

namespace labshare {

ConsumerMetrics::ConsumerMetrics(RedisPool* pool, std::vector<const EventConsumer*> consumers) {
  collector_ = RegisterMetricsCollector(
      [pool, consumers = std::move(consumers)] { return RenderConsumerMetrics(pool, consumers); });
}

ConsumerMetrics::~ConsumerMetrics() { UnregisterMetricsCollector(collector_); }

}  // namespace labshare
