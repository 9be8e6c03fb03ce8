#include "services/archive/archive.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/log.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "common/time_zone.h"
#include "labshare/billing/v1/billing.pb.h"
#include "labshare/booking/v1/booking.pb.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_store.h"
#include "services/booking/booking_common.h"
#include "services/booking/booking_lists.h"
#include "services/booking/redis_booking_store.h"
#include "services/usage/audit_chain.h"

namespace labshare::archive {

namespace uv1 = labshare::usage::v1;
namespace bv1 = labshare::booking::v1;
namespace bk = labshare::booking;
using google::protobuf::Struct;
using google::protobuf::Value;

std::string ManifestKey(int year) { return absl::StrCat("{usage}:archive:", year); }

namespace {

constexpr int64_t kClockSkewMs = 60 * 1000;
const char kZeroHash[] = "0000000000000000000000000000000000000000000000000000000000000000";

// ------------------------------------------------------------ JSON lines

const Value* Field(const Struct& s, const char* name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? nullptr : &it->second;
}

bool Int(const Value* v, int64_t* out) {
  if (v == nullptr || v->kind_case() != Value::kNumberValue) return false;
  const double d = v->number_value();
  if (d != std::floor(d) || std::fabs(d) > 9.0e15) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

bool Str(const Value* v, std::string* out) {
  if (v == nullptr || v->kind_case() != Value::kStringValue) return false;
  *out = v->string_value();
  return true;
}

bool IsHashHex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool ParseLine(absl::string_view line, Struct* out) {
  google::protobuf::util::JsonParseOptions o;
  return google::protobuf::util::JsonStringToMessage(std::string(line), out, o).ok();
}

bool Time(const Struct& s, const char* name, google::protobuf::Timestamp* t) {
  const Value* v = Field(s, name);
  if (v == nullptr || v->kind_case() != Value::kStructValue) return false;
  int64_t sec = 0, nanos = 0;
  if (!Int(Field(v->struct_value(), "seconds"), &sec) || !Int(Field(v->struct_value(), "nanos"), &nanos)) {
    return false;
  }
  t->set_seconds(sec);
  t->set_nanos(static_cast<int32_t>(nanos));
  return true;
}

std::vector<absl::string_view> Lines(absl::string_view file) {
  std::vector<absl::string_view> lines = absl::StrSplit(file, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

std::string Sha256Hex(absl::string_view data) {
  usage::Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

absl::Status Precondition(absl::string_view what) { return absl::FailedPreconditionError(what); }

// ------------------------------------------------------------ files

// Writes <path>.tmp piece by piece (hashing what it writes); Commit fsyncs
// and renames it to <path>. Dropped before Commit: the .tmp goes.
class FileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<FileWriter>> Open(const std::string& path) {
    std::unique_ptr<FileWriter> w(new FileWriter(path));
    w->fd_ = open(w->tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (w->fd_ < 0) return absl::InternalError(absl::StrCat("open ", w->tmp_, ": ", strerror(errno)));
    return w;
  }
  ~FileWriter() {
    if (fd_ >= 0) {
      close(fd_);
      unlink(tmp_.c_str());
    }
  }
  absl::Status Append(absl::string_view data) {
    sha_.Update(data);
    buffer_.append(data.data(), data.size());
    return buffer_.size() >= (1 << 20) ? Flush() : absl::OkStatus();
  }
  // The file's SHA-256 (hex) once it is durably in place.
  absl::StatusOr<std::string> Commit() {
    LS_RETURN_IF_ERROR(Flush());
    if (fsync(fd_) != 0) return absl::InternalError(absl::StrCat("fsync ", tmp_, ": ", strerror(errno)));
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) return absl::InternalError(absl::StrCat("close ", tmp_, ": ", strerror(errno)));
    if (rename(tmp_.c_str(), path_.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("rename ", tmp_, ": ", strerror(errno)));
    }
    // The rename itself must survive a power cut before Redis forgets
    // anything: fsync the directory.
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
    const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return absl::InternalError(absl::StrCat("open ", dir, ": ", strerror(errno)));
    const int synced = fsync(dfd);
    close(dfd);
    if (synced != 0) return absl::InternalError(absl::StrCat("fsync ", dir, ": ", strerror(errno)));
    return sha_.HexDigest();
  }

 private:
  explicit FileWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {}
  absl::Status Flush() {
    size_t done = 0;
    while (done < buffer_.size()) {
      const ssize_t w = write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return absl::InternalError(absl::StrCat("write ", tmp_, ": ", strerror(errno)));
      done += static_cast<size_t>(w);
    }
    buffer_.clear();
    return absl::OkStatus();
  }
  std::string path_, tmp_;
  int fd_ = -1;
  std::string buffer_;
  usage::Sha256 sha_;
};

// Calls fn for every line (without its '\n'); returns the file's SHA-256
// (hex). fn returning false stops the reading (the digest is then of what
// was read).
absl::StatusOr<std::string> ForEachLine(const std::string& path,
                                        const std::function<bool(absl::string_view)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::DataLossError(absl::StrCat("cannot read the archive file ", path));
  usage::Sha256 sha;
  std::string line;
  bool stopped = false;
  while (std::getline(in, line)) {
    sha.Update(line);
    if (!in.eof()) sha.Update("\n");
    if (!fn(line)) {
      stopped = true;
      break;
    }
  }
  // A read error is not the end of the file.
  if (in.bad() || (!stopped && !in.eof())) {
    return absl::DataLossError(absl::StrCat("reading the archive file ", path, " failed"));
  }
  return sha.HexDigest();
}

// ------------------------------------------------------------ consumers

int64_t IdMs(const std::string& id) {
  int64_t ms = 0;
  if (!absl::SimpleAtoi(id.substr(0, id.find('-')), &ms)) return 0;
  return ms;
}

struct ConsumerState {
  // Every entry of every outbox stream before this moment (ms) has been
  // delivered to and acknowledged by every group; max: all of them.
  int64_t safe_ms = std::numeric_limits<int64_t>::max();
  std::string laggard;  // "<stream>/<group>" that sets safe_ms
  std::vector<std::string> streams;
};

absl::StatusOr<std::vector<std::string>> OutboxStreams(RedisPool* pool) {
  std::set<std::string> out;
  std::string cursor = "0";
  do {
    LS_ASSIGN_OR_RETURN(RedisValue r,
                        pool->Command({"SCAN", cursor, "MATCH", "*:outbox", "COUNT", "1000", "TYPE", "stream"}));
    if (!r.is_array() || r.elements.size() != 2) return absl::InternalError("unexpected SCAN reply");
    cursor = r.elements[0].str;
    for (const auto& k : r.elements[1].elements) out.insert(k.str);
  } while (cursor != "0");
  return std::vector<std::string>(out.begin(), out.end());
}

absl::StatusOr<ConsumerState> Consumers(RedisPool* pool) {
  ConsumerState st;
  LS_ASSIGN_OR_RETURN(st.streams, OutboxStreams(pool));
  for (const auto& stream : st.streams) {
    LS_ASSIGN_OR_RETURN(RedisValue groups, pool->Command({"XINFO", "GROUPS", stream}));
    if (!groups.is_array()) return absl::InternalError(absl::StrCat("XINFO GROUPS ", stream, ": unexpected reply"));
    for (const auto& g : groups.elements) {
      std::string name, last = "0-0";
      int64_t pending = 0;
      for (size_t i = 0; i + 1 < g.elements.size(); i += 2) {
        if (g.elements[i].str == "name") name = g.elements[i + 1].str;
        if (g.elements[i].str == "pending") pending = g.elements[i + 1].integer;
        if (g.elements[i].str == "last-delivered-id") last = g.elements[i + 1].str;
      }
      int64_t bound = std::numeric_limits<int64_t>::max();
      if (pending > 0) {
        LS_ASSIGN_OR_RETURN(RedisValue p, pool->Command({"XPENDING", stream, name}));
        if (p.is_array() && p.elements.size() >= 2 && !p.elements[1].is_nil()) {
          bound = std::min(bound, IdMs(p.elements[1].str));
        }
      }
      LS_ASSIGN_OR_RETURN(RedisValue next, pool->Command({"XRANGE", stream, "(" + last, "+", "COUNT", "1"}));
      if (next.is_array() && !next.elements.empty()) bound = std::min(bound, IdMs(next.elements[0].elements[0].str));
      if (bound < st.safe_ms) {
        st.safe_ms = bound;
        st.laggard = absl::StrCat(stream, " group ", name);
      }
    }
  }
  return st;
}

// ------------------------------------------------------------ audit

std::string Hex(absl::string_view b) { return absl::BytesToHexString(b); }

// The archived range: [base + 1, first entry appended at or after the cut).
struct AuditRange {
  int64_t start = 1, end = 1;
  std::string base_hash;  // raw; empty when base is 0
};

absl::StatusOr<AuditRange> FindAuditRange(usage::AuditChain& chain, int64_t cut_ms, int batch) {
  LS_ASSIGN_OR_RETURN(uv1::AuditAnchor base, chain.ArchivedBase());
  LS_ASSIGN_OR_RETURN(uv1::AuditChainHead head, chain.Head());
  // Where each entry up to that head is stored (audit_chain.h: segments).
  LS_ASSIGN_OR_RETURN(usage::AuditSegmentView segments, chain.Segments());
  AuditRange r;
  r.start = base.sequence() + 1;
  r.base_hash = base.hash();
  r.end = r.start;
  while (r.end <= head.sequence()) {
    std::vector<std::vector<std::string>> gets;
    for (int64_t s = r.end; s <= head.sequence() && s < r.end + batch; ++s) {
      gets.push_back({"GET", usage::audit_keys::Entry(segments.SegmentOf(s), s)});
    }
    LS_ASSIGN_OR_RETURN(auto replies, chain.pool()->Pipeline(gets));
    for (size_t i = 0; i < replies.size(); ++i) {
      uv1::AuditEntry e;
      if (replies[i].is_nil() || !e.ParseFromString(replies[i].str)) {
        return absl::DataLossError(absl::StrCat("audit entry ", r.end, " is missing; run VerifyAuditChain"));
      }
      if (absl::ToUnixMillis(FromProto(e.append_time())) >= cut_ms) return r;
      ++r.end;
    }
  }
  return r;
}

// ------------------------------------------------------------ bookings

bool Final(bv1::Booking::State s) {
  return s == bv1::Booking::COMPLETED || s == bv1::Booking::CANCELLED || s == bv1::Booking::MISSED ||
         s == bv1::Booking::REJECTED || s == bv1::Booking::EXPIRED;
}

struct StoredBooking {
  int partition = 0;
  std::string id;
  int64_t version = 0;
  std::string data;
  bv1::Booking booking;
};

// Calls fn for each booking whose reserved interval starts before the cut
// (with from_cut: at or after it), partition by partition, reading the
// listing index {bk:P}:ls:b:all (score: reserved start) in batches from a
// (score, ids at that score) cursor. (The caller looks at the end.)
absl::Status ForEachListedBooking(RedisPool* pool, int64_t cut_ms, bool from_cut, int batch,
                                  const std::function<absl::Status(const StoredBooking&)>& fn) {
  const std::string max = from_cut ? "+inf" : absl::StrCat("(", cut_ms);
  for (int p = 0; p < bk::kPartitions; ++p) {
    std::string min = from_cut ? std::to_string(cut_ms) : "-inf";
    std::set<std::string> seen_at_min;
    while (true) {
      const size_t limit = seen_at_min.size() + static_cast<size_t>(batch);
      LS_ASSIGN_OR_RETURN(RedisValue r,
                          pool->Command({"ZRANGEBYSCORE", bk::keys::ListAll(p, 'b'), min, max,
                                         "WITHSCORES", "LIMIT", "0", std::to_string(limit)}));
      if (!r.is_array() || r.elements.size() % 2 != 0) return absl::InternalError("unexpected ZRANGEBYSCORE reply");
      std::vector<std::pair<std::string, std::string>> fresh;  // (id, score)
      for (size_t i = 0; i < r.elements.size(); i += 2) {
        const std::string& id = r.elements[i].str;
        const std::string& score = r.elements[i + 1].str;
        if (score == min && seen_at_min.count(id) > 0) continue;
        fresh.emplace_back(id, score);
      }
      if (fresh.empty()) break;
      std::vector<std::vector<std::string>> gets;
      for (const auto& f : fresh) gets.push_back({"HMGET", bk::keys::Booking(p, f.first), "d", "v"});
      LS_ASSIGN_OR_RETURN(auto docs, pool->Pipeline(gets));
      for (size_t i = 0; i < docs.size(); ++i) {
        if (!docs[i].is_array() || docs[i].elements.size() != 2 || docs[i].elements[0].is_nil()) continue;
        StoredBooking b;
        b.partition = p;
        b.id = fresh[i].first;
        b.data = docs[i].elements[0].str;
        absl::SimpleAtoi(docs[i].elements[1].str, &b.version);
        if (!b.booking.ParseFromString(b.data)) {
          return absl::DataLossError(absl::StrCat("booking ", b.id, " does not parse"));
        }
        LS_RETURN_IF_ERROR(fn(b));
      }
      const std::string last = fresh.back().second;
      if (last != min) seen_at_min.clear();
      for (const auto& f : fresh) {
        if (f.second == last) seen_at_min.insert(f.first);
      }
      min = last;
      if (r.elements.size() / 2 < limit) break;
    }
  }
  return absl::OkStatus();
}

std::string BookingLine(const StoredBooking& b) {
  return absl::StrCat("{\"partition\":", b.partition, ",\"booking\":\"bookings/", JsonEscape(b.id),
                      "\",\"version\":", b.version, ",\"document\":\"", absl::Base64Escape(b.data),
                      "\",\"sha256\":\"", Sha256Hex(b.data), "\"}\n");
}

// A booking line of a verified file.
absl::StatusOr<StoredBooking> ParseBookingLine(absl::string_view line) {
  Struct s;
  std::string name, doc;
  int64_t p = 0;
  if (!ParseLine(line, &s) || !Int(Field(s, "partition"), &p) || !Str(Field(s, "booking"), &name) ||
      !Str(Field(s, "document"), &doc) || p < 0 || p >= bk::kPartitions) {
    return absl::DataLossError("bookings file: malformed line");
  }
  StoredBooking b;
  b.partition = static_cast<int>(p);
  b.id = bk::IdOf(name);
  if (!absl::Base64Unescape(doc, &b.data) || !b.booking.ParseFromString(b.data)) {
    return absl::DataLossError("bookings file: a document does not parse");
  }
  return b;
}

// Removes one booking's keys and index members (each command idempotent).
// Returns how many keys went away entirely.
absl::StatusOr<int64_t> RemoveBooking(RedisPool* pool, const StoredBooking& b) {
  const int p = b.partition;
  const std::string instr = bk::IdOf(b.booking.instrument());
  // Its calendar entry (a member that carries its end; an older version's
  // calendar is folded first): the store's step, before the document goes.
  LS_RETURN_IF_ERROR(bk::BookingStore(pool).RemoveCalendarEntry(
      p, instr, b.id, absl::ToUnixMillis(FromProto(b.booking.blocked_interval().start_time()))));
  std::vector<std::vector<std::string>> cmds = {
      {"DEL", bk::keys::Booking(p, b.id)},
      {"ZREM", bk::keys::ByInstrument(p, instr), b.id},
      {"ZREM", bk::keys::Due(p), b.id},
  };
  for (const auto& k : bk::BookingListingKeys(p, b.booking, "")) cmds.push_back({"ZREM", k, b.id});
  std::vector<std::string> touched;
  for (const auto& c : cmds) touched.push_back(c[1]);
  // Usage's closed marker of its session (services/usage/usage_figures.h):
  // every event of an archived booking was applied by usage, and the
  // outboxes are trimmed below the cut, so no check-in of it can come back.
  cmds.push_back({"HDEL", "{usage}:closed", b.booking.name()});
  LS_ASSIGN_OR_RETURN(auto replies, pool->Pipeline(cmds));
  for (const auto& r : replies) {
    if (r.is_error()) return absl::InternalError(absl::StrCat("removing booking ", b.id, ": ", r.str));
  }
  int64_t gone = replies.empty() ? 0 : replies[0].integer;
  // The reservation of a client-chosen id ({bk:ids}) stays: the id is never
  // given to a new booking, so a rerun of this removal can only ever touch
  // the archived booking, and charges, invoices and audit entries that name
  // bookings/<id> keep naming one booking.
  // Keys emptied by the removal (Redis deletes an empty ZSET / HASH).
  std::vector<std::vector<std::string>> exists;
  for (size_t i = 1; i < touched.size(); ++i) {
    if (replies[i].integer > 0) exists.push_back({"EXISTS", touched[i]});
  }
  if (!exists.empty()) {
    LS_ASSIGN_OR_RETURN(auto ex, pool->Pipeline(exists));
    for (const auto& e : ex) gone += e.integer == 0 ? 1 : 0;
  }
  return gone;
}

// The listing index of the instrument's operator organisation is not named
// by the booking document: after the removals, every "{bk:P}:ls:b:org:*"
// member before the cut whose document is gone is removed too (what is
// left before the cut is bookings that span it, and dangling members).
absl::StatusOr<int64_t> SweepOrgIndexes(RedisPool* pool, int64_t cut_ms, int batch) {
  std::set<std::string> index_keys;
  std::string cursor = "0";
  do {
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"SCAN", cursor, "MATCH", "{bk:*}:ls:b:org:*", "COUNT", "1000",
                                                     "TYPE", "zset"}));
    if (!r.is_array() || r.elements.size() != 2) return absl::InternalError("unexpected SCAN reply");
    cursor = r.elements[0].str;
    for (const auto& k : r.elements[1].elements) index_keys.insert(k.str);
  } while (cursor != "0");
  int64_t removed = 0;
  for (const auto& key : index_keys) {
    int p = -1;
    for (int q = 0; q < bk::kPartitions; ++q) {
      if (absl::StartsWith(key, bk::keys::Tag(q) + ":")) p = q;
    }
    if (p < 0) continue;
    std::string min = "-inf";
    std::set<std::string> seen_at_min;
    while (true) {
      const size_t limit = seen_at_min.size() + static_cast<size_t>(batch);
      LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"ZRANGEBYSCORE", key, min, absl::StrCat("(", cut_ms),
                                                       "WITHSCORES", "LIMIT", "0", std::to_string(limit)}));
      if (!r.is_array() || r.elements.size() % 2 != 0) return absl::InternalError("unexpected ZRANGEBYSCORE reply");
      std::vector<std::pair<std::string, std::string>> fresh;
      for (size_t i = 0; i < r.elements.size(); i += 2) {
        if (r.elements[i + 1].str == min && seen_at_min.count(r.elements[i].str) > 0) continue;
        fresh.emplace_back(r.elements[i].str, r.elements[i + 1].str);
      }
      if (fresh.empty()) break;
      std::vector<std::vector<std::string>> exists;
      for (const auto& f : fresh) exists.push_back({"EXISTS", bk::keys::Booking(p, f.first)});
      LS_ASSIGN_OR_RETURN(auto ex, pool->Pipeline(exists));
      std::vector<std::string> zrem = {"ZREM", key};
      for (size_t i = 0; i < ex.size(); ++i) {
        if (ex[i].integer == 0) zrem.push_back(fresh[i].first);
      }
      if (zrem.size() > 2) {
        LS_ASSIGN_OR_RETURN(RedisValue z, pool->Command(zrem));
        removed += z.integer;
      }
      const std::string last = fresh.back().second;
      if (last != min) seen_at_min.clear();
      for (const auto& f : fresh) {
        if (f.second == last) seen_at_min.insert(f.first);
      }
      min = last;
      if (r.elements.size() / 2 < limit) break;
    }
  }
  return removed;
}

// ------------------------------------------------------------ leases and service orders

absl::Status ForEachIndexMemberBefore(RedisPool* pool, const std::string& key, int64_t cut_ms, int batch,
                                      const std::function<absl::Status(const std::vector<std::string>&)>& fn,
                                      bool from_cut = false, bool nanos = false);

// A lease or service order as it is written to its file.
struct StoredRecord {
  int partition = 0;
  std::string id;
  int64_t version = 0;
  std::string data;
};

bool FinalLease(bv1::Lease::State s) {
  return s == bv1::Lease::CLOSED || s == bv1::Lease::REJECTED || s == bv1::Lease::CANCELLED;
}
bool FinalOrder(bv1::ServiceOrder::State s) {
  return s == bv1::ServiceOrder::COMPLETED || s == bv1::ServiceOrder::CANCELLED;
}

// The ids of a score index with a score before cut_ms, in batches.
absl::Status ForEachScoredBefore(RedisPool* pool, const std::string& key, int64_t cut_ms, int batch,
                                 const std::function<absl::Status(const std::vector<std::string>&)>& fn) {
  std::string min = "-inf";
  std::set<std::string> seen_at_min;
  while (true) {
    const size_t limit = seen_at_min.size() + static_cast<size_t>(batch);
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"ZRANGEBYSCORE", key, min, absl::StrCat("(", cut_ms),
                                                     "WITHSCORES", "LIMIT", "0", std::to_string(limit)}));
    if (!r.is_array() || r.elements.size() % 2 != 0) return absl::InternalError("unexpected ZRANGEBYSCORE reply");
    std::vector<std::pair<std::string, std::string>> fresh;
    for (size_t i = 0; i < r.elements.size(); i += 2) {
      if (r.elements[i + 1].str == min && seen_at_min.count(r.elements[i].str) > 0) continue;
      fresh.emplace_back(r.elements[i].str, r.elements[i + 1].str);
    }
    if (fresh.empty()) return absl::OkStatus();
    std::vector<std::string> ids;
    for (const auto& f : fresh) ids.push_back(f.first);
    LS_RETURN_IF_ERROR(fn(ids));
    const std::string last = fresh.back().second;
    if (last != min) seen_at_min.clear();
    for (const auto& f : fresh) {
      if (f.second == last) seen_at_min.insert(f.first);
    }
    min = last;
    if (r.elements.size() / 2 < limit) return absl::OkStatus();
  }
}

// The ids of a DocStore-shaped index ("<ms, 15 digits>|<id>") before cut_ms.
absl::Status ForEachLexBefore(RedisPool* pool, const std::string& key, int64_t cut_ms, int batch,
                              const std::function<absl::Status(const std::vector<std::string>&)>& fn) {
  return ForEachIndexMemberBefore(pool, key, cut_ms, batch, [&](const std::vector<std::string>& members) {
    std::vector<std::string> ids;
    for (const auto& m : members) ids.push_back(m.substr(m.find('|') + 1));
    return fn(ids);
  });
}

// Loads documents of partition p and calls take(record) for each present.
absl::Status LoadRecords(RedisPool* pool, int p, const std::vector<std::string>& ids,
                         std::string (*doc_key)(int, absl::string_view),
                         const std::function<absl::Status(StoredRecord)>& take) {
  std::vector<std::vector<std::string>> gets;
  for (const auto& id : ids) gets.push_back({"HMGET", doc_key(p, id), "d", "v"});
  LS_ASSIGN_OR_RETURN(auto docs, pool->Pipeline(gets));
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!docs[i].is_array() || docs[i].elements.size() != 2 || docs[i].elements[0].is_nil()) continue;
    StoredRecord r;
    r.partition = p;
    r.id = ids[i];
    r.data = docs[i].elements[0].str;
    absl::SimpleAtoi(docs[i].elements[1].str, &r.version);
    LS_RETURN_IF_ERROR(take(std::move(r)));
  }
  return absl::OkStatus();
}

// Final leases (CLOSED, REJECTED, CANCELLED) and service orders
// (COMPLETED, CANCELLED) whose last change was before the cut and is
// applied by every consumer; `kept` counts the others read.
struct LeasesAndOrders {
  std::vector<StoredRecord> leases, orders;
  int64_t leases_kept = 0, orders_kept = 0;
  // The bookings of leases and orders that stay: a lease or order
  // transition loads its booking, so the booking stays with it.
  std::set<std::string> keep_bookings;
};

absl::StatusOr<LeasesAndOrders> SelectLeasesAndOrders(RedisPool* pool, int64_t cut_ms, int64_t safe_ms, int batch,
                                                      const std::set<std::string>& billed_leases,
                                                      const std::set<std::string>& billed_orders) {
  LeasesAndOrders out;
  for (int p = 0; p < bk::kPartitions; ++p) {
    LS_RETURN_IF_ERROR(ForEachScoredBefore(pool, bk::keys::ListAll(p, 'l'), cut_ms, batch,
                                           [&](const std::vector<std::string>& ids) {
                                             return LoadRecords(pool, p, ids, bk::keys::Lease, [&](StoredRecord r) {
                                               bv1::Lease l;
                                               if (!l.ParseFromString(r.data)) {
                                                 return absl::DataLossError(
                                                     absl::StrCat("lease ", r.id, " does not parse"));
                                               }
                                               const int64_t changed = absl::ToUnixMillis(FromProto(l.update_time()));
                                               // (r.id is also the id of the lease's booking.)
                                               if (FinalLease(l.state()) && changed < cut_ms && changed < safe_ms &&
                                                   billed_leases.count(r.id) == 0) {
                                                 out.leases.push_back(std::move(r));
                                               } else {
                                                 ++out.leases_kept;
                                                 // A lease's booking id is the lease id
                                                 // (CreateLease); its booking field says the same.
                                                 out.keep_bookings.insert(r.id);
                                                 if (!l.booking().empty()) out.keep_bookings.insert(bk::IdOf(l.booking()));
                                               }
                                               return absl::OkStatus();
                                             });
                                           }));
    LS_RETURN_IF_ERROR(ForEachLexBefore(pool, bk::keys::ListAll(p, 'o'), cut_ms, batch,
                                        [&](const std::vector<std::string>& ids) {
                                          return LoadRecords(pool, p, ids, bk::keys::Order, [&](StoredRecord r) {
                                            bv1::ServiceOrder o;
                                            if (!o.ParseFromString(r.data)) {
                                              return absl::DataLossError(
                                                  absl::StrCat("service order ", r.id, " does not parse"));
                                            }
                                            const int64_t changed = absl::ToUnixMillis(FromProto(o.update_time()));
                                            if (FinalOrder(o.state()) && changed < cut_ms && changed < safe_ms &&
                                                billed_orders.count(r.id) == 0) {
                                              out.orders.push_back(std::move(r));
                                            } else {
                                              ++out.orders_kept;
                                              if (!o.booking().empty()) out.keep_bookings.insert(bk::IdOf(o.booking()));
                                            }
                                            return absl::OkStatus();
                                          });
                                        }));
  }
  return out;
}

std::string RecordLine(const StoredRecord& r, absl::string_view field, absl::string_view collection) {
  return absl::StrCat("{\"partition\":", r.partition, ",\"", field, "\":\"", collection, "/", JsonEscape(r.id),
                      "\",\"version\":", r.version, ",\"document\":\"", absl::Base64Escape(r.data),
                      "\",\"sha256\":\"", Sha256Hex(r.data), "\"}\n");
}

// Writes a records file: header, one line per record (each ends in '\n'),
// trailer with the count.
absl::StatusOr<std::unique_ptr<FileWriter>> WriteRecords(const std::string& path, const std::string& format,
                                                         const std::string& count_field, int year, int64_t cut_ms,
                                                         const std::vector<std::string>& lines) {
  LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> w, FileWriter::Open(path));
  usage::Sha256 sum;
  auto put = [&](const std::string& line) {
    sum.Update(line);
    return w->Append(line);
  };
  LS_RETURN_IF_ERROR(put(absl::StrCat("{\"format\":\"", format, "\",\"version\":1,\"year\":", year,
                                      ",\"cut_ms\":", cut_ms, "}\n")));
  for (const auto& line : lines) LS_RETURN_IF_ERROR(put(line));
  LS_RETURN_IF_ERROR(w->Append(absl::StrCat("{\"trailer\":true,\"", count_field, "\":", lines.size(),
                                            ",\"sha256\":\"", sum.HexDigest(), "\"}\n")));
  return w;
}

std::vector<std::string> RecordLines(const std::vector<StoredRecord>& records, absl::string_view field,
                                     absl::string_view collection) {
  std::vector<std::string> lines;
  for (const auto& r : records) lines.push_back(RecordLine(r, field, collection));
  return lines;
}

// A record line of a verified file: partition, id (after the collection),
// document.
absl::StatusOr<StoredRecord> ParseRecordLine(absl::string_view line, const char* field) {
  Struct s;
  std::string name, doc;
  int64_t p = 0;
  if (!ParseLine(line, &s) || !Int(Field(s, "partition"), &p) || !Str(Field(s, field), &name) ||
      !Str(Field(s, "document"), &doc) || p < 0 || p >= bk::kPartitions) {
    return absl::DataLossError("archive file: malformed line");
  }
  StoredRecord r;
  r.partition = static_cast<int>(p);
  r.id = bk::IdOf(name);
  if (!absl::Base64Unescape(doc, &r.data)) return absl::DataLossError("archive file: a document does not decode");
  return r;
}

// Removes the documents and their index members named by a verified
// leases / orders file; the operator organisations' indexes (not named by
// the documents) are swept after. Returns the keys that went away.
absl::StatusOr<int64_t> RemoveRecords(RedisPool* pool, const std::string& path, bool orders) {
  int64_t gone = 0;
  absl::Status bad = absl::OkStatus();
  int64_t line_no = 0;
  LS_RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line) {
                       ++line_no;
                       if (line_no == 1 || absl::StartsWith(line, "{\"trailer\"")) return true;
                       absl::StatusOr<StoredRecord> r = ParseRecordLine(line, orders ? "service_order" : "lease");
                       if (!r.ok()) {
                         bad = r.status();
                         return false;
                       }
                       const int p = r->partition;
                       std::vector<std::vector<std::string>> cmds;
                       std::string order_name;
                       if (orders) {
                         bv1::ServiceOrder o;
                         if (!o.ParseFromString(r->data)) {
                           bad = absl::DataLossError("orders file: a document does not parse");
                           return false;
                         }
                         cmds.push_back({"DEL", bk::keys::Order(p, r->id)});
                         const std::string member = bk::keys::IndexMember(
                             absl::ToUnixMillis(FromProto(o.create_time())), r->id);
                         for (const auto& op : bk::OrderListingOps(p, o, "")) cmds.push_back({"ZREM", op.key, member});
                         cmds.push_back({"ZREM", bk::keys::Orders(p, bk::IdOf(o.instrument())), member});
                         order_name = o.name();
                       } else {
                         bv1::Lease l;
                         if (!l.ParseFromString(r->data)) {
                           bad = absl::DataLossError("leases file: a document does not parse");
                           return false;
                         }
                         cmds.push_back({"DEL", bk::keys::Lease(p, r->id)});
                         for (const auto& k : bk::LeaseListingKeys(p, l, "")) cmds.push_back({"ZREM", k, r->id});
                       }
                       const size_t indexes = cmds.size();
                       if (orders) {
                         // Usage's markers of the order (services/usage/usage_figures.h):
                         // its first acceptance and its outage count. A final order's
                         // events were all applied by usage and the outboxes are trimmed
                         // below the cut, so none of its events can come back.
                         cmds.push_back({"HDEL", "{usage}:tsorder", order_name});
                         cmds.push_back({"HDEL", "{usage}:tsout", order_name});
                       }
                       absl::StatusOr<std::vector<RedisValue>> replies = pool->Pipeline(cmds);
                       if (!replies.ok()) {
                         bad = replies.status();
                         return false;
                       }
                       gone += (*replies)[0].integer;
                       std::vector<std::vector<std::string>> exists;
                       for (size_t i = 1; i < indexes; ++i) {
                         if ((*replies)[i].integer > 0) exists.push_back({"EXISTS", cmds[i][1]});
                       }
                       if (!exists.empty()) {
                         absl::StatusOr<std::vector<RedisValue>> ex = pool->Pipeline(exists);
                         if (!ex.ok()) {
                           bad = ex.status();
                           return false;
                         }
                         for (const auto& e : *ex) gone += e.integer == 0 ? 1 : 0;
                       }
                       return true;
                     }).status());
  LS_RETURN_IF_ERROR(bad);
  return gone;
}

// The operator organisations' lease and order indexes: members before the
// cut whose document is gone.
absl::StatusOr<int64_t> SweepLeaseAndOrderOrgIndexes(RedisPool* pool, int64_t cut_ms, int batch) {
  int64_t removed = 0;
  for (const char kind : {'l', 'o'}) {
    std::set<std::string> index_keys;
    std::string cursor = "0";
    do {
      LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"SCAN", cursor, "MATCH", absl::StrCat("{bk:*}:ls:", std::string(1, kind), ":org:*"),
                                                       "COUNT", "1000", "TYPE", "zset"}));
      if (!r.is_array() || r.elements.size() != 2) return absl::InternalError("unexpected SCAN reply");
      cursor = r.elements[0].str;
      for (const auto& k : r.elements[1].elements) index_keys.insert(k.str);
    } while (cursor != "0");
    for (const auto& key : index_keys) {
      int p = -1;
      for (int q = 0; q < bk::kPartitions; ++q) {
        if (absl::StartsWith(key, bk::keys::Tag(q) + ":")) p = q;
      }
      if (p < 0) continue;
      auto sweep = [&](const std::vector<std::string>& members, const std::vector<std::string>& ids) -> absl::Status {
        std::vector<std::vector<std::string>> exists;
        for (const auto& id : ids) exists.push_back({"EXISTS", kind == 'l' ? bk::keys::Lease(p, id) : bk::keys::Order(p, id)});
        LS_ASSIGN_OR_RETURN(auto ex, pool->Pipeline(exists));
        std::vector<std::string> zrem = {"ZREM", key};
        for (size_t i = 0; i < ex.size(); ++i) {
          if (ex[i].integer == 0) zrem.push_back(members[i]);
        }
        if (zrem.size() > 2) {
          LS_ASSIGN_OR_RETURN(RedisValue z, pool->Command(zrem));
          removed += z.integer;
        }
        return absl::OkStatus();
      };
      if (kind == 'l') {
        LS_RETURN_IF_ERROR(ForEachScoredBefore(pool, key, cut_ms, batch, [&](const std::vector<std::string>& ids) {
          return sweep(ids, ids);
        }));
      } else {
        LS_RETURN_IF_ERROR(ForEachIndexMemberBefore(pool, key, cut_ms, batch, [&](const std::vector<std::string>& members) {
          std::vector<std::string> ids;
          for (const auto& m : members) ids.push_back(m.substr(m.find('|') + 1));
          return sweep(members, ids);
        }));
      }
    }
  }
  return removed;
}

// ------------------------------------------------------------ projects

// A project as it is written to its file: the document, and its budget
// counters ({bk:P}:budget:<id> of every partition, fields
// "<instrument>:budget|committed|used" in ms and
// "<instrument>:budget_version", the project version the budget was
// written from), which go with it.
struct StoredProject {
  std::string id;
  int64_t version = 0;
  std::string data;
  std::map<std::string, int64_t> counters;
};

struct ProjectSelection {
  std::vector<StoredProject> projects;
  int64_t kept = 0;
};

// The projects final by their own fields: the period ended at or before the
// cut (half-open: it lies in the closed years), the last change before the
// cut and applied by every consumer. `kept` counts the others.
absl::StatusOr<ProjectSelection> FinalProjects(RedisPool* pool, int64_t cut_ms, int64_t safe_ms, int batch) {
  ProjectSelection out;
  std::string min = "-";
  while (true) {
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"ZRANGEBYLEX", bk::keys::Projects(), min, "+", "LIMIT", "0",
                                                     std::to_string(batch)}));
    if (!r.is_array()) return absl::InternalError("unexpected ZRANGEBYLEX reply");
    if (r.elements.empty()) return out;
    std::vector<std::vector<std::string>> gets;
    for (const auto& e : r.elements) gets.push_back({"HMGET", bk::keys::Project(e.str), "d", "v"});
    LS_ASSIGN_OR_RETURN(auto docs, pool->Pipeline(gets));
    for (size_t i = 0; i < docs.size(); ++i) {
      if (!docs[i].is_array() || docs[i].elements.size() != 2 || docs[i].elements[0].is_nil()) continue;
      StoredProject sp;
      sp.id = r.elements[i].str;
      sp.data = docs[i].elements[0].str;
      absl::SimpleAtoi(docs[i].elements[1].str, &sp.version);
      bv1::Project project;
      if (!project.ParseFromString(sp.data)) return absl::DataLossError(absl::StrCat("project ", sp.id, " does not parse"));
      const int64_t ended = absl::ToUnixMillis(FromProto(project.period().end_time()));
      const int64_t changed = absl::ToUnixMillis(FromProto(project.update_time()));
      if (ended <= cut_ms && changed < cut_ms && changed < safe_ms) {
        out.projects.push_back(std::move(sp));
      } else {
        ++out.kept;
      }
    }
    if (static_cast<int>(r.elements.size()) < batch) return out;
    min = "(" + r.elements.back().str;
  }
}

// Keeps the selected projects that something staying in Redis names
// (`named`: bookings, charges) or whose counters still hold committed time
// (a booking holding hours), and reads the budget counters of the others.
absl::Status SettleProjects(RedisPool* pool, const std::set<std::string>& named, ProjectSelection* sel) {
  std::vector<StoredProject> go;
  for (auto& sp : sel->projects) {
    if (named.count(sp.id) > 0) {
      ++sel->kept;
      continue;
    }
    std::vector<std::vector<std::string>> reads;
    for (int p = 0; p < bk::kPartitions; ++p) reads.push_back({"HGETALL", bk::keys::Budget(p, sp.id)});
    LS_ASSIGN_OR_RETURN(auto replies, pool->Pipeline(reads));
    bool holding = false;
    for (int p = 0; p < bk::kPartitions; ++p) {
      const RedisValue& h = replies[p];
      const std::string key = bk::keys::Budget(p, sp.id);
      if (h.is_error() || !h.is_array()) {
        return absl::DataLossError(absl::StrCat("reading ", key, ": ", h.is_error() ? h.str : "not a hash"));
      }
      for (size_t i = 0; i + 1 < h.elements.size(); i += 2) {
        int64_t ms = 0;
        if (!absl::SimpleAtoi(h.elements[i + 1].str, &ms)) {
          return absl::DataLossError(absl::StrCat(key, " field ", h.elements[i].str, " holds '",
                                                  h.elements[i + 1].str, "', not a number of milliseconds"));
        }
        sp.counters[h.elements[i].str] = ms;
        holding |= absl::EndsWith(h.elements[i].str, ":committed") && ms != 0;
      }
    }
    if (holding) {
      ++sel->kept;
      continue;
    }
    go.push_back(std::move(sp));
  }
  sel->projects = std::move(go);
  return absl::OkStatus();
}

std::string ProjectLine(const StoredProject& sp) {
  std::string counters;
  for (const auto& [field, ms] : sp.counters) {
    absl::StrAppend(&counters, counters.empty() ? "" : ",", "\"", JsonEscape(field), "\":", ms);
  }
  return absl::StrCat("{\"project\":\"projects/", JsonEscape(sp.id), "\",\"version\":", sp.version,
                      ",\"document\":\"", absl::Base64Escape(sp.data), "\",\"sha256\":\"", Sha256Hex(sp.data),
                      "\",\"budget_counters\":{", counters, "}}\n");
}

// One project, in {booking}: its id's reservation first, in its committed
// form (v 2, d = the project's name) when missing (a project created before
// reservations) or still a claim next to the committed document (committed
// by a replica of the previous version, e.g. the retry of a crashed claim):
// a claim left behind would let its owner's request_id claim the id again
// once the document is gone. Then, if the document is still at the version
// archived, the document and its listing index member. KEYS: document,
// reservation, index; ARGV: version, id, name.
// Returns 1 removed, 2 gone already (an earlier run), 0 kept (changed since
// the export, e.g. its period extended: a later year archives it).
const RedisScript& RemoveProjectScript() {
  static const RedisScript* s = new RedisScript(R"lua(
local held = redis.call('HGET', KEYS[2], 'd')
if not held or string.sub(held, 1, 6) == 'claim:' then redis.call('HSET', KEYS[2], 'v', 2, 'd', ARGV[3]) end
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return 2 end
if v ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
)lua");
  return *s;
}

absl::Status Stop(const ArchiveOptions& o, absl::string_view stage);

struct ProjectRemoval {
  int64_t gone = 0;     // keys that went away
  int64_t changed = 0;  // changed since the export: kept
};

// Removes the projects a verified projects file names, one Lua step each,
// then the budget counters of those that went (a crash between leaves
// counters no booking can reach; the rerun finds the project gone and
// removes them). Runs after the billing removal: a project that a charge
// of the billing file names stays (counted as changed) while that charge
// is still in Redis (its group kept whole, e.g. corrected after the
// export), so billing never names a project that is gone; the same answer
// on every rerun. `charges`: project id -> charge keys (ChargeKeysByProject).
absl::StatusOr<ProjectRemoval> RemoveProjects(RedisPool* pool, const std::string& path, const ArchiveOptions& o,
                                              const std::map<std::string, std::vector<std::string>>& charges) {
  ProjectRemoval out;
  absl::Status bad = absl::OkStatus();
  int64_t line_no = 0;
  auto remove = [&](absl::string_view line) -> absl::Status {
    Struct s;
    std::string name;
    int64_t version = 0;
    if (!ParseLine(line, &s) || !Str(Field(s, "project"), &name) || !Int(Field(s, "version"), &version) ||
        !absl::StartsWith(name, "projects/")) {
      return absl::DataLossError("projects file: malformed line");
    }
    const std::string id = bk::IdOf(name);
    if (auto it = charges.find(id); it != charges.end()) {
      std::vector<std::vector<std::string>> exists;
      for (const auto& key : it->second) exists.push_back({"EXISTS", key});
      LS_ASSIGN_OR_RETURN(auto replies, pool->Pipeline(exists));
      for (const auto& e : replies) {
        if (e.is_error()) return absl::InternalError(absl::StrCat("EXISTS on a charge of ", name, ": ", e.str));
        if (e.integer != 0) {
          ++out.changed;
          return absl::OkStatus();
        }
      }
    }
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Eval(RemoveProjectScript(),
                                                 {bk::keys::Project(id), bk::keys::ProjectIdReservation(id),
                                                  bk::keys::Projects()},
                                                 {std::to_string(version), id, name}));
    if (r.integer == 0) {
      ++out.changed;
      return absl::OkStatus();
    }
    if (r.integer == 1) {
      ++out.gone;
      LS_ASSIGN_OR_RETURN(RedisValue left, pool->Command({"EXISTS", bk::keys::Projects()}));
      if (left.integer == 0) ++out.gone;
    }
    LS_RETURN_IF_ERROR(Stop(o, "project_step"));
    std::vector<std::vector<std::string>> dels;
    for (int p = 0; p < bk::kPartitions; ++p) dels.push_back({"DEL", bk::keys::Budget(p, id)});
    LS_ASSIGN_OR_RETURN(auto deleted, pool->Pipeline(dels));
    for (const auto& d : deleted) out.gone += d.integer;
    return Stop(o, "project_removed");
  };
  LS_RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line) {
                       ++line_no;
                       if (line_no == 1 || absl::StartsWith(line, "{\"trailer\"")) return true;
                       bad = remove(line);
                       return bad.ok();
                     }).status());
  LS_RETURN_IF_ERROR(bad);
  return out;
}

// ------------------------------------------------------------ billing

namespace bl = labshare::billing;
namespace blv1 = labshare::billing::v1;

// billing_invoices.cc's "posting|payer" -> invoice id of the issued (not
// void) invoice carrying that payer's lines of the posting.
constexpr char kInvoicedPostings[] = "{billing}:invoicedpost";
constexpr char kCarriedForward[] = "carried-forward-";

struct BillingDoc {
  std::string kind;  // "charge" / "posting"
  std::string id, member;  // id, index member
  int64_t version = 0;
  std::string data;
};

struct BillingSelection {
  std::vector<BillingDoc> charges, postings;
  // Per account list key, the lines taken (in list order).
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> lines;  // key -> (posting id, line)
  int64_t ledger_lines = 0;
  // Per account list key: the carried-forward lines the fold takes with the
  // archived ones (those before the last archived line), summed per
  // (counterparty, currency): {debit, credit}.
  std::map<std::string, std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>>> opening;
  // Created before the cut but not final (an invoice line not on a paid
  // invoice, a held deposit, a lease still out, a correction after the cut).
  int64_t charges_kept = 0, postings_kept = 0;
  // Ids of the leases, service orders, bookings and projects that a charge
  // or posting staying in Redis names (kept, or after the cut): they stay
  // too, so billing never names a lease, order, booking or project that is
  // gone. (A lease's booking id is the lease id; a posting names a project
  // only through its charge, which stays with it.)
  std::set<std::string> keep_leases, keep_orders, keep_bookings, keep_projects;
};

// Members of a "<ms, 15 digits>|<id>" index before cut_ms, in order
// (with `nanos`, of billing's "<ns, 19 digits>|<id>" index: before cut_ms
// to the nanosecond). With `from_cut`, the members at or after cut_ms
// instead.
absl::Status ForEachIndexMemberBefore(RedisPool* pool, const std::string& key, int64_t cut_ms, int batch,
                                      const std::function<absl::Status(const std::vector<std::string>&)>& fn,
                                      bool from_cut, bool nanos) {
  const std::string cut =
      nanos ? bl::keys::IndexMember(absl::FromUnixMillis(cut_ms), "") : absl::StrFormat("%015d|", cut_ms);
  std::string min = from_cut ? "[" + cut : "-";
  const std::string max = from_cut ? "+" : "(" + cut;
  while (true) {
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"ZRANGEBYLEX", key, min, max, "LIMIT", "0",
                                                     std::to_string(batch)}));
    if (!r.is_array()) return absl::InternalError("unexpected ZRANGEBYLEX reply");
    std::vector<std::string> members;
    for (const auto& e : r.elements) members.push_back(e.str);
    if (members.empty()) return absl::OkStatus();
    LS_RETURN_IF_ERROR(fn(members));
    if (static_cast<int>(members.size()) < batch) return absl::OkStatus();
    min = "(" + members.back();
  }
}

absl::StatusOr<std::vector<BillingDoc>> LoadIndexedDocs(RedisPool* pool, const std::string& kind, int64_t cut_ms,
                                                        int batch, bool from_cut = false) {
  std::vector<BillingDoc> out;
  LS_RETURN_IF_ERROR(ForEachIndexMemberBefore(
      pool, bl::keys::Index(kind), cut_ms, batch, [&](const std::vector<std::string>& members) -> absl::Status {
        std::vector<std::vector<std::string>> gets;
        for (const auto& m : members) gets.push_back({"HMGET", bl::keys::Doc(kind, m.substr(m.find('|') + 1)), "d", "v"});
        LS_ASSIGN_OR_RETURN(auto docs, pool->Pipeline(gets));
        for (size_t i = 0; i < docs.size(); ++i) {
          if (!docs[i].is_array() || docs[i].elements.size() != 2 || docs[i].elements[0].is_nil()) continue;
          BillingDoc d;
          d.kind = kind;
          d.member = members[i];
          d.id = members[i].substr(members[i].find('|') + 1);
          d.data = docs[i].elements[0].str;
          absl::SimpleAtoi(docs[i].elements[1].str, &d.version);
          out.push_back(std::move(d));
        }
        return absl::OkStatus();
      }, from_cut, /*nanos=*/true));
  return out;
}

// A document by key, parsed; nullopt when absent.
template <typename T>
absl::StatusOr<std::optional<T>> LoadDoc(RedisPool* pool, const std::string& key) {
  LS_ASSIGN_OR_RETURN(RedisValue d, pool->Command({"HGET", key, "d"}));
  if (d.is_nil()) return std::optional<T>();
  T out;
  if (!out.ParseFromString(d.str)) return absl::DataLossError(absl::StrCat(key, " does not parse"));
  return std::optional<T>(std::move(out));
}

// The year of a "YYYY-MM" period; 0 when malformed.
int PeriodYear(const std::string& period) {
  int y = 0;
  if (period.size() != 7 || !absl::SimpleAtoi(period.substr(0, 4), &y)) return 0;
  return y;
}

// "<ms>|<posting>|<counterparty>|<currency>|<signed>"
struct LedgerLine {
  int64_t ms = 0;
  std::string posting, counterparty, currency;
  int64_t amount = 0;
};
std::optional<LedgerLine> ParseLedgerLine(absl::string_view s) {
  std::vector<std::string> f = absl::StrSplit(s, '|');
  LedgerLine l;
  if (f.size() != 5 || !absl::SimpleAtoi(f[0], &l.ms) || !absl::SimpleAtoi(f[4], &l.amount)) return std::nullopt;
  l.posting = f[1];
  l.counterparty = f[2];
  l.currency = f[3];
  return l;
}

// What of billing closed before billing_cut_ms may leave Redis (archive.h,
// "billing"), or a refusal when something of year `year` is not final.
absl::StatusOr<BillingSelection> SelectBilling(RedisPool* pool, int year, int64_t cut_ms, int batch) {
  // ---- refusals: invoices and settlements of the year's periods
  std::map<std::string, blv1::Invoice::State> invoice_state;  // id -> state
  {
    std::string after = "-";
    while (true) {
      LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"ZRANGEBYLEX", bl::keys::Index("invoice"), after, "+", "LIMIT",
                                                       "0", std::to_string(batch)}));
      if (!r.is_array() || r.elements.empty()) break;
      std::vector<std::string> ids;
      std::vector<std::vector<std::string>> gets;
      for (const auto& e : r.elements) {
        const std::vector<std::string> f = absl::StrSplit(e.str, '|');
        int64_t seq = 0;
        if (f.size() != 2 || !absl::SimpleAtoi(f[1], &seq)) continue;
        ids.push_back(absl::AsciiStrToLower(absl::StrFormat("%s-%06d", f[0], seq)));
        gets.push_back({"HGET", bl::keys::Doc("invoice", ids.back()), "d"});
      }
      LS_ASSIGN_OR_RETURN(auto docs, pool->Pipeline(gets));
      for (size_t i = 0; i < docs.size(); ++i) {
        blv1::Invoice inv;
        if (docs[i].is_nil() || !inv.ParseFromString(docs[i].str)) continue;
        invoice_state[ids[i]] = inv.state();
        const int py = PeriodYear(inv.period());
        if (inv.state() == blv1::Invoice::ISSUED && py != 0 && py <= year) {
          return Precondition(absl::StrCat(inv.name(), " (", inv.period(), ") is issued and not paid: ",
                                           "record its payment, mark it paid or void it first"));
        }
      }
      if (static_cast<int>(r.elements.size()) < batch) break;
      after = "(" + r.elements.back().str;
    }
  }
  std::map<std::string, blv1::Settlement::State> settlement_state;
  {
    std::string after = "-";
    while (true) {
      LS_ASSIGN_OR_RETURN(RedisValue r, pool->Command({"ZRANGEBYLEX", bl::keys::Index("settlement"), after, "+",
                                                       "LIMIT", "0", std::to_string(batch)}));
      if (!r.is_array() || r.elements.empty()) break;
      std::vector<std::string> ids;
      std::vector<std::vector<std::string>> gets;
      for (const auto& e : r.elements) {
        ids.push_back(e.str.substr(e.str.rfind('|') + 1));
        gets.push_back({"HGET", bl::keys::Doc("settlement", ids.back()), "d"});
      }
      LS_ASSIGN_OR_RETURN(auto docs, pool->Pipeline(gets));
      for (size_t i = 0; i < docs.size(); ++i) {
        blv1::Settlement s;
        if (docs[i].is_nil() || !s.ParseFromString(docs[i].str)) continue;
        settlement_state[ids[i]] = s.state();
        const int py = PeriodYear(s.period());
        if (s.state() == blv1::Settlement::COMPUTED && py != 0 && py <= year) {
          return Precondition(absl::StrCat(s.name(), " (", s.period(), ") is computed and not cleared: ",
                                           "pay its transfers first"));
        }
      }
      if (static_cast<int>(r.elements.size()) < batch) break;
      after = "(" + r.elements.back().str;
    }
  }

  // ---- candidates: postings and charges created before the cut
  LS_ASSIGN_OR_RETURN(std::vector<BillingDoc> posting_docs, LoadIndexedDocs(pool, "posting", cut_ms, batch));
  LS_ASSIGN_OR_RETURN(std::vector<BillingDoc> charge_docs, LoadIndexedDocs(pool, "charge", cut_ms, batch));
  std::map<std::string, blv1::Posting> postings;  // name -> posting
  std::map<std::string, blv1::Charge> charges;    // name -> charge
  std::map<std::string, size_t> posting_at, charge_at;
  for (size_t i = 0; i < posting_docs.size(); ++i) {
    blv1::Posting p;
    if (!p.ParseFromString(posting_docs[i].data)) {
      return absl::DataLossError(absl::StrCat("posting ", posting_docs[i].id, " does not parse"));
    }
    posting_at["postings/" + posting_docs[i].id] = i;
    postings["postings/" + posting_docs[i].id] = std::move(p);
  }
  for (size_t i = 0; i < charge_docs.size(); ++i) {
    blv1::Charge c;
    if (!c.ParseFromString(charge_docs[i].data)) {
      return absl::DataLossError(absl::StrCat("charge ", charge_docs[i].id, " does not parse"));
    }
    charge_at["charges/" + charge_docs[i].id] = i;
    charges["charges/" + charge_docs[i].id] = std::move(c);
  }

  // Leases still out: their rent charges stay (billing charges each period
  // once, by looking for the charge).
  std::set<std::string> leases_out;
  {
    LS_ASSIGN_OR_RETURN(RedisValue h, pool->Command({"HGETALL", bl::keys::Doc("leases", "out")}));
    for (size_t i = 0; i + 1 < h.elements.size(); i += 2) {
      if (!h.elements[i + 1].str.empty()) leases_out.insert(h.elements[i].str);
    }
  }
  std::map<std::string, bool> deposit_held;  // deposit id -> HELD
  auto held = [&](const std::string& id) -> absl::StatusOr<bool> {
    auto it = deposit_held.find(id);
    if (it != deposit_held.end()) return it->second;
    LS_ASSIGN_OR_RETURN(auto d, LoadDoc<blv1::Deposit>(pool, bl::keys::Doc("deposit", id)));
    const bool h = d && d->state() == blv1::Deposit::HELD;
    deposit_held[id] = h;
    return h;
  };
  auto invoice_paid = [&](const std::string& id) {
    auto it = invoice_state.find(id);
    return it != invoice_state.end() && it->second == blv1::Invoice::PAID;
  };

  // ---- each item closed on its own
  std::map<std::string, bool> closed;  // name -> closed
  for (const auto& [name, p] : postings) {
    bool ok = true;
    const std::string id = bk::IdOf(name);
    if (!p.deposit().empty()) {
      LS_ASSIGN_OR_RETURN(bool h, held(bk::IdOf(p.deposit())));
      ok &= !h;
    }
    if (p.kind() == blv1::PAYMENT) {
      if (!p.payment().empty()) {
        LS_ASSIGN_OR_RETURN(auto pay, LoadDoc<blv1::Payment>(pool, bl::keys::Doc("payment", bk::IdOf(p.payment()))));
        if (pay && !pay->invoice().empty()) ok &= invoice_paid(bk::IdOf(pay->invoice()));
        if (pay && !pay->settlement().empty()) {
          auto it = settlement_state.find(bk::IdOf(pay->settlement()));
          ok &= it != settlement_state.end() && it->second == blv1::Settlement::CLEARED;
        }
      }
    } else if (p.kind() != blv1::SETTLEMENT_NETTING) {
      // Every line an invoice draft would take (billing_invoices.cc Draft)
      // is on a paid invoice.
      std::set<std::string> payers;
      for (const auto& e : p.entries()) {
        auto ref = bl::ParseAccountName(e.account());
        if (!ref.ok()) continue;
        const bool credit = e.credit().amount_minor() != 0;
        if ((ref->kind == blv1::PAYABLE && p.kind() != blv1::DEPOSIT_APPLICATION) ||
            (ref->kind == blv1::DEPOSIT_LODGED && credit && p.kind() == blv1::DEPOSIT_APPLICATION)) {
          payers.insert(ref->owner);
        }
      }
      if (!payers.empty()) {
        std::vector<std::string> cmd = {"HMGET", kInvoicedPostings};
        for (const auto& payer : payers) cmd.push_back(id + "|" + payer);
        LS_ASSIGN_OR_RETURN(RedisValue v, pool->Command(cmd));
        for (const auto& e : v.elements) ok &= !e.is_nil() && invoice_paid(e.str);
      }
    }
    closed[name] = ok;
  }
  for (const auto& [name, c] : charges) {
    bool ok = true;
    if (c.fee_kind() == blv1::DEPOSIT && !c.lease().empty()) {
      LS_ASSIGN_OR_RETURN(bool h, held(bk::IdOf(c.lease())));
      ok &= !h;
    }
    if (c.fee_kind() == blv1::LEASE_PERIOD && leases_out.count(bk::IdOf(c.lease())) > 0) ok = false;
    closed[name] = ok;
  }

  // ---- groups: a charge with its postings and every correction, and a
  // posting with its corrections, leave together or not at all.
  std::map<std::string, std::string> parent;
  std::function<std::string(const std::string&)> find = [&](const std::string& x) -> std::string {
    auto it = parent.find(x);
    if (it == parent.end()) {
      parent[x] = x;
      return x;
    }
    if (it->second == x) return x;
    const std::string root = find(it->second);
    parent[x] = root;
    return root;
  };
  auto unite = [&](const std::string& a, const std::string& b) {
    if (a.empty() || b.empty()) return;
    const std::string ra = find(a), rb = find(b);
    if (ra != rb) parent[ra] = rb;
  };
  for (const auto& [name, p] : postings) {
    find(name);
    unite(name, p.charge());
    unite(name, p.corrects());
    for (const auto& c : p.corrected_by()) unite(name, c);
  }
  for (const auto& [name, c] : charges) {
    find(name);
    unite(name, c.posting());
    for (const auto& s : c.subsidy_postings()) unite(name, s);
    for (const auto& s : c.corrections()) unite(name, s);
  }
  // Members not among the candidates: still in Redis (after the cut, or not
  // closed on their own) keeps the group; gone (an earlier archive) does not.
  std::map<std::string, bool> group_closed;
  for (const auto& [name, unused] : parent) {
    const std::string root = find(name);
    if (group_closed.count(root) == 0) group_closed[root] = true;
    auto c = closed.find(name);
    if (c != closed.end()) {
      if (!c->second) group_closed[root] = false;
      continue;
    }
    const bool is_charge = absl::StartsWith(name, "charges/");
    LS_ASSIGN_OR_RETURN(RedisValue ex, pool->Command({"EXISTS", bl::keys::Doc(is_charge ? "charge" : "posting",
                                                                              bk::IdOf(name))}));
    if (ex.integer != 0) group_closed[root] = false;
  }

  BillingSelection out;
  std::set<std::string> taken_postings;
  std::set<std::string> accounts;
  for (const auto& [name, i] : charge_at) {
    if (group_closed[find(name)]) out.charges.push_back(charge_docs[i]);
  }
  for (const auto& [name, i] : posting_at) {
    if (!group_closed[find(name)]) continue;
    out.postings.push_back(posting_docs[i]);
    taken_postings.insert(posting_docs[i].id);
    for (const auto& e : postings[name].entries()) accounts.insert(bl::keys::Account(e.account()));
  }
  // ---- what stays names leases, orders and bookings: they stay
  auto name_charge = [&](const blv1::Charge& c) {
    if (!c.lease().empty()) out.keep_leases.insert(bk::IdOf(c.lease()));
    if (!c.service_order().empty()) out.keep_orders.insert(bk::IdOf(c.service_order()));
    if (!c.booking().empty()) out.keep_bookings.insert(bk::IdOf(c.booking()));
    if (!c.project().empty()) out.keep_projects.insert(bk::IdOf(c.project()));
  };
  auto name_posting = [&](const blv1::Posting& p) {
    // A deposit's id is its lease's.
    if (!p.deposit().empty()) out.keep_leases.insert(bk::IdOf(p.deposit()));
  };
  for (const auto& [name, c] : charges) {
    if (!group_closed[find(name)]) name_charge(c);
  }
  for (const auto& [name, p] : postings) {
    if (!group_closed[find(name)]) name_posting(p);
  }
  {
    LS_ASSIGN_OR_RETURN(std::vector<BillingDoc> later, LoadIndexedDocs(pool, "charge", cut_ms, batch, true));
    for (const auto& d : later) {
      blv1::Charge c;
      if (c.ParseFromString(d.data)) name_charge(c);
    }
  }
  {
    LS_ASSIGN_OR_RETURN(std::vector<BillingDoc> later, LoadIndexedDocs(pool, "posting", cut_ms, batch, true));
    for (const auto& d : later) {
      blv1::Posting p;
      if (p.ParseFromString(d.data)) name_posting(p);
    }
  }
  out.charges_kept = static_cast<int64_t>(charge_docs.size() - out.charges.size());
  out.postings_kept = static_cast<int64_t>(posting_docs.size() - out.postings.size());
  // ---- their ledger lines, as the account lists hold them
  std::map<std::string, int64_t> lines_per_posting, sum_per_posting;
  for (const auto& key : accounts) {
    LS_ASSIGN_OR_RETURN(RedisValue l, pool->Command({"LRANGE", key, "0", "-1"}));
    auto& opening = out.opening[key];
    std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> pending;  // since the last taken
    for (const auto& e : l.elements) {
      std::optional<LedgerLine> line = ParseLedgerLine(e.str);
      if (!line) continue;
      if (absl::StartsWith(line->posting, kCarriedForward)) {
        auto& dc = pending[{line->counterparty, line->currency}];
        (line->amount > 0 ? dc.first : dc.second) += line->amount > 0 ? line->amount : -line->amount;
        continue;
      }
      if (taken_postings.count(line->posting) == 0) continue;
      for (const auto& [k, dc] : pending) {
        opening[k].first += dc.first;
        opening[k].second += dc.second;
      }
      pending.clear();
      out.lines[key].emplace_back(line->posting, e.str);
      ++out.ledger_lines;
      ++lines_per_posting[line->posting];
      sum_per_posting[line->posting] += line->amount;
    }
  }
  for (const auto& d : out.postings) {
    const int entries = postings["postings/" + d.id].entries_size();
    if (lines_per_posting[d.id] != entries || sum_per_posting[d.id] != 0) {
      return absl::DataLossError(absl::StrCat("the ledger lines of postings/", d.id, " (", lines_per_posting[d.id],
                                              ", sum ", sum_per_posting[d.id], ") do not match its ", entries,
                                              " entries; nothing archived"));
    }
  }
  return out;
}

std::string BillingDocLine(const BillingDoc& d) {
  return absl::StrCat("{\"kind\":\"", d.kind, "\",\"key\":\"", JsonEscape(bl::keys::Doc(d.kind, d.id)),
                      "\",\"index_member\":\"", JsonEscape(d.member), "\",\"version\":", d.version,
                      ",\"document\":\"", absl::Base64Escape(d.data), "\",\"sha256\":\"", Sha256Hex(d.data),
                      "\"}\n");
}

// One account list's carried-forward totals, before the fold (what earlier
// years left there that the fold takes) and after it (those plus the
// archived lines): per (counterparty, currency), debit and credit.
using DebitCredit = std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>>;
std::string CarriedForwardRecord(const std::string& key, const DebitCredit& before,
                                 const std::vector<std::pair<std::string, std::string>>& lines) {
  DebitCredit after = before;
  for (const auto& [posting, text] : lines) {
    std::optional<LedgerLine> l = ParseLedgerLine(text);
    if (!l) continue;
    auto& dc = after[{l->counterparty, l->currency}];
    if (l->amount > 0) {
      dc.first += l->amount;
    } else {
      dc.second -= l->amount;
    }
  }
  auto list = [](const DebitCredit& m) {
    std::string out = "[";
    for (const auto& [k, dc] : m) {
      if (out.size() > 1) out += ",";
      absl::StrAppend(&out, "{\"counterparty\":\"", JsonEscape(k.first), "\",\"currency\":\"", JsonEscape(k.second),
                      "\",\"debit\":", dc.first, ",\"credit\":", dc.second, "}");
    }
    return out + "]";
  };
  return absl::StrCat("{\"kind\":\"carried_forward\",\"key\":\"", JsonEscape(key), "\",\"before\":", list(before),
                      ",\"after\":", list(after), "}\n");
}

std::string LedgerLineRecord(const std::string& key, const std::string& posting, const std::string& line) {
  return absl::StrCat("{\"kind\":\"ledger_line\",\"key\":\"", JsonEscape(key), "\",\"posting\":\"",
                      JsonEscape(posting), "\",\"document\":\"", absl::Base64Escape(line), "\",\"sha256\":\"",
                      Sha256Hex(line), "\"}\n");
}

// The removal's own record in {billing} (written in the same Lua steps as
// what it records, so a rerun knows exactly what went):
//   "g:<group>"  1: the group's documents went; 0: kept (a member changed
//                since the export);
//   "l:<account key>"  archived lines of that list folded so far;
//   "lists_folded"     lists whose archived lines are all folded.
std::string BillingRemovalKey(int year) { return absl::StrCat("{billing}:archive:", year); }

// One group, all or none: KEYS[1] the removal record, KEYS[2] the charge
// index, KEYS[3] the posting index, KEYS[4] {billing}:invoicedpost,
// KEYS[4 + i] a document; ARGV[1] the group's field, ARGV[2] n,
// ARGV[2 + i] a version, ARGV[2 + n + i] an index member ("c|..." or
// "p|..."), ARGV[3 + 2n...] the invoicedpost fields. Every member still at
// the version archived (or already gone): every one goes with its index
// member and markers; otherwise none. Returns the decision (1 gone, 0
// kept), recorded; 3 / 2 when an earlier run decided (gone / kept).
const RedisScript& RemoveGroupScript() {
  static const RedisScript* s = new RedisScript(R"lua(
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done then return tonumber(done) + 2 end
local n = tonumber(ARGV[2])
for i = 1, n do
  local v = redis.call('HGET', KEYS[4 + i], 'v')
  if v and v ~= ARGV[2 + i] then
    redis.call('HSET', KEYS[1], ARGV[1], 0)
    return 0
  end
end
for i = 1, n do
  redis.call('DEL', KEYS[4 + i])
  local m = ARGV[2 + n + i]
  local idx = KEYS[3]
  if string.sub(m, 1, 1) == 'c' then idx = KEYS[2] end
  redis.call('ZREM', idx, string.sub(m, 3))
end
for i = 3 + 2 * n, #ARGV do redis.call('HDEL', KEYS[4], ARGV[i]) end
redis.call('HSET', KEYS[1], ARGV[1], 1)
return 1
)lua");
  return *s;
}

// One chunk of one account list: the list's first N elements (as read;
// billing only appends) replaced by `replacement`, with the count of
// archived lines folded ("l:<key>" of the removal record) moved from
// ARGV[2] to ARGV[3], and "lists_folded" counted when ARGV[4] is 1: all in
// the same step. KEYS[1] the list, KEYS[2] the record; ARGV[5] the field;
// ARGV[6...] the prefix, then the replacement. Returns 1, or 0 when the list
// or the record moved.
const RedisScript& FoldScript() {
  static const RedisScript* s = new RedisScript(R"lua(
local n = tonumber(ARGV[1])
local at = tonumber(redis.call('HGET', KEYS[2], ARGV[5]) or '0')
if at ~= tonumber(ARGV[2]) then return 0 end
local cur = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #cur ~= n then return 0 end
for i = 1, n do
  if cur[i] ~= ARGV[5 + i] then return 0 end
end
redis.call('LTRIM', KEYS[1], n, -1)
for i = #ARGV, n + 6, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3])
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[2], 'lists_folded', 1) end
return 1
)lua");
  return *s;
}

struct FoldResult {
  int64_t steps = 0, carried = 0, emptied = 0;
};

constexpr int kFoldChunk = 512;     // archived lines folded per Lua step
constexpr int kFoldReadPage = 1024;  // list elements read per LRANGE

// Folds, in one account list, the archived lines of removed groups
// (`archived`, in list order, as the file holds them) and any earlier
// carried-forward lines before them into one carried-forward line per
// (counterparty, currency, side): debits and credits apart, so debit and
// credit totals stay what they were. Each carried-forward line is dated at
// the last line it folds. In steps of at most kFoldChunk archived lines:
// each step's Lua script gets only the list's prefix up to its last
// archived line (what earlier steps left there: their carried-forward
// lines and the lines kept between, then the next chunk), never the whole
// list. The record counts the archived lines folded, so a rerun goes on
// from there.
absl::StatusOr<FoldResult> FoldAccount(RedisPool* pool, const std::string& key, const std::string& record,
                                       const std::vector<std::string>& archived, int year) {
  FoldResult out;
  const std::string field = "l:" + key;
  int attempts = 0;
  while (true) {
    LS_ASSIGN_OR_RETURN(RedisValue at_v, pool->Command({"HGET", record, field}));
    int64_t at = 0;
    if (!at_v.is_nil()) absl::SimpleAtoi(at_v.str, &at);
    if (at >= static_cast<int64_t>(archived.size())) return out;
    const size_t want = std::min(archived.size(), static_cast<size_t>(at) + kFoldChunk);
    // The prefix up to the chunk's last archived line, read in pages.
    std::vector<std::string> prefix;
    std::vector<bool> fold;
    size_t next = static_cast<size_t>(at);
    int64_t offset = 0;
    bool list_end = false;
    while (next < want && !list_end) {
      LS_ASSIGN_OR_RETURN(RedisValue l, pool->Command({"LRANGE", key, std::to_string(offset),
                                                       std::to_string(offset + kFoldReadPage - 1)}));
      list_end = static_cast<int>(l.elements.size()) < kFoldReadPage;
      offset += static_cast<int64_t>(l.elements.size());
      for (auto& e : l.elements) {
        if (next >= want) break;
        const bool f = e.str == archived[next];
        if (f) ++next;
        prefix.push_back(std::move(e.str));
        fold.push_back(f);
      }
    }
    if (next < want) {
      return absl::DataLossError(absl::StrCat(key, " holds only part of the archived lines; nothing more folded"));
    }
    const bool last = want == archived.size();
    struct Sum {
      int64_t ms = 0, amount = 0;
    };
    std::map<std::tuple<std::string, std::string, int>, Sum> sums;  // (counterparty, currency, side)
    std::vector<std::pair<int64_t, std::string>> kept;                 // kept (ms, line), in order
    for (size_t i = 0; i < prefix.size(); ++i) {
      std::optional<LedgerLine> line = ParseLedgerLine(prefix[i]);
      if (!line) {
        kept.emplace_back(0, prefix[i]);
        continue;
      }
      if (fold[i] || absl::StartsWith(line->posting, kCarriedForward)) {
        Sum& s = sums[{line->counterparty, line->currency, line->amount > 0 ? 0 : 1}];
        s.ms = std::max(s.ms, line->ms);
        s.amount += line->amount;
      } else {
        kept.emplace_back(line->ms, prefix[i]);
      }
    }
    std::vector<std::pair<int64_t, std::string>> merged;
    for (const auto& [k, s] : sums) {
      if (s.amount == 0) continue;
      merged.emplace_back(s.ms, absl::StrCat(s.ms, "|", kCarriedForward, year, "|", std::get<0>(k), "|",
                                             std::get<1>(k), "|", s.amount));
    }
    const size_t carried = merged.size();
    // Carried-forward lines first among equal times; time order otherwise.
    merged.insert(merged.end(), kept.begin(), kept.end());
    std::stable_sort(merged.begin(), merged.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> args = {std::to_string(prefix.size()), std::to_string(at), std::to_string(want),
                                     last ? "1" : "0", field};
    for (auto& p : prefix) args.push_back(std::move(p));
    for (auto& m : merged) args.push_back(std::move(m.second));
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Eval(FoldScript(), {key, record}, args));
    if (r.integer == 1) {
      ++out.steps;
      if (last) {
        out.carried = static_cast<int64_t>(carried);
        LS_ASSIGN_OR_RETURN(RedisValue ex, pool->Command({"EXISTS", key}));
        out.emptied = ex.integer == 0 ? 1 : 0;
      }
      attempts = 0;
      continue;
    }
    if (++attempts >= 10) {
      return absl::AbortedError(absl::StrCat(key, " kept changing while it was folded; rerun"));
    }
  }
}

struct BillingRemoval {
  int64_t gone = 0, changed = 0;
};

absl::Status Stop(const ArchiveOptions& o, absl::string_view stage);

// The removal of a verified billing file, group by group (a charge with its
// postings and every correction; a posting with its corrections): each
// group in one Lua step in {billing}, all or none (every member still at
// the version archived, else the group stays whole, e.g. corrected since
// the export), with its index members and invoiced-line markers, recorded
// in {billing}:archive:<Y>. Only then each account list folds the lines of
// the postings whose group went (never of one that stayed), in bounded
// steps, each step recording its progress. Each step is idempotent; a rerun
// picks up where a crash left.
absl::StatusOr<BillingRemoval> RemoveBilling(RedisPool* pool, const std::string& path, const ArchiveOptions& o) {
  BillingRemoval out;
  const std::string record = BillingRemovalKey(o.year);
  struct Doc {
    std::string kind, key, member, name;
    int64_t version = 0;
    std::vector<std::string> links;     // names it groups with
    std::vector<std::string> invoiced;  // "<posting>|<org>" fields
  };
  std::vector<Doc> docs;
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> lines;  // key -> (posting id, line)
  absl::Status bad = absl::OkStatus();
  LS_RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line) {
                       Struct s;
                       std::string kind;
                       if (!ParseLine(line, &s) || !Str(Field(s, "kind"), &kind)) return true;  // header, trailer
                       if (kind == "carried_forward") return true;
                       std::string key, b64, doc;
                       if (!Str(Field(s, "key"), &key) || !Str(Field(s, "document"), &b64) ||
                           !absl::Base64Unescape(b64, &doc)) {
                         bad = absl::DataLossError("billing file: malformed record");
                         return false;
                       }
                       if (kind == "ledger_line") {
                         std::string posting;
                         if (!Str(Field(s, "posting"), &posting)) {
                           bad = absl::DataLossError("billing file: malformed ledger line record");
                           return false;
                         }
                         lines[key].emplace_back(posting, doc);
                         return true;
                       }
                       if (kind != "charge" && kind != "posting") return true;
                       Doc d;
                       d.kind = kind;
                       d.key = key;
                       if (!Str(Field(s, "index_member"), &d.member) || !Int(Field(s, "version"), &d.version)) {
                         bad = absl::DataLossError("billing file: malformed document record");
                         return false;
                       }
                       if (kind == "charge") {
                         blv1::Charge c;
                         if (!c.ParseFromString(doc)) {
                           bad = absl::DataLossError("billing file: a charge does not parse");
                           return false;
                         }
                         d.name = c.name();
                         d.links.push_back(c.posting());
                         for (const auto& x : c.subsidy_postings()) d.links.push_back(x);
                         for (const auto& x : c.corrections()) d.links.push_back(x);
                       } else {
                         blv1::Posting p;
                         if (!p.ParseFromString(doc)) {
                           bad = absl::DataLossError("billing file: a posting does not parse");
                           return false;
                         }
                         d.name = p.name();
                         d.links.push_back(p.charge());
                         d.links.push_back(p.corrects());
                         for (const auto& x : p.corrected_by()) d.links.push_back(x);
                         std::set<std::string> owners;
                         for (const auto& e : p.entries()) {
                           auto ref = bl::ParseAccountName(e.account());
                           if (ref.ok() && bl::IsOrganizationName(ref->owner)) owners.insert(ref->owner);
                         }
                         for (const auto& owner : owners) {
                           d.invoiced.push_back(absl::StrCat(bk::IdOf(p.name()), "|", owner));
                         }
                       }
                       docs.push_back(std::move(d));
                       return true;
                     }).status());
  LS_RETURN_IF_ERROR(bad);

  // ---- groups, as the selection formed them (members not in the file are
  // gone already: the selection kept a group with a member in Redis).
  std::map<std::string, std::string> parent;
  std::function<std::string(const std::string&)> find = [&](const std::string& x) -> std::string {
    auto it = parent.find(x);
    if (it == parent.end() || it->second == x) return x;
    const std::string root = find(it->second);
    parent[x] = root;
    return root;
  };
  std::set<std::string> in_file;
  for (const auto& d : docs) {
    in_file.insert(d.name);
    parent.emplace(d.name, d.name);
  }
  for (const auto& d : docs) {
    for (const auto& l : d.links) {
      if (l.empty() || in_file.count(l) == 0) continue;
      std::string a = find(d.name), b = find(l);
      if (a == b) continue;
      if (b < a) std::swap(a, b);
      parent[b] = a;  // the smallest name is the root: the same every run
    }
  }
  std::map<std::string, std::vector<const Doc*>> groups;  // root -> members, in file order
  for (const auto& d : docs) groups[find(d.name)].push_back(&d);

  std::set<std::string> removed_postings;  // ids
  for (const auto& [root, members] : groups) {
    std::vector<std::string> keys = {record, bl::keys::Index("charge"), bl::keys::Index("posting"),
                                     kInvoicedPostings};
    std::vector<std::string> args = {"g:" + root, std::to_string(members.size())};
    for (const Doc* d : members) {
      keys.push_back(d->key);
      args.push_back(std::to_string(d->version));
    }
    for (const Doc* d : members) args.push_back(absl::StrCat(d->kind == "charge" ? "c" : "p", "|", d->member));
    for (const Doc* d : members) args.insert(args.end(), d->invoiced.begin(), d->invoiced.end());
    LS_ASSIGN_OR_RETURN(RedisValue r, pool->Eval(RemoveGroupScript(), keys, args));
    if (r.integer == 1 || r.integer == 3) {
      for (const Doc* d : members) {
        if (d->kind == "posting") removed_postings.insert(bk::IdOf(d->name));
      }
      if (r.integer == 1) out.gone += static_cast<int64_t>(members.size());
    } else {
      out.changed += static_cast<int64_t>(members.size());
    }
    LS_RETURN_IF_ERROR(Stop(o, "billing_removed_group"));
  }
  LS_RETURN_IF_ERROR(Stop(o, "billing_removed"));

  // ---- the ledger lines of the postings that went, folded list by list.
  for (const auto& [key, recs] : lines) {
    std::vector<std::string> archived;
    for (const auto& [posting, line] : recs) {
      if (removed_postings.count(posting) > 0) archived.push_back(line);
    }
    if (archived.empty()) continue;
    LS_ASSIGN_OR_RETURN(FoldResult f, FoldAccount(pool, key, record, archived, o.year));
    out.gone += f.emptied;
    LS_RETURN_IF_ERROR(Stop(o, "billing_folded_list"));
  }
  return out;
}

// The charges of a verified billing file that name a project: project id
// -> their document keys.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ChargeKeysByProject(const std::string& path) {
  std::map<std::string, std::vector<std::string>> out;
  absl::Status bad = absl::OkStatus();
  LS_RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line) {
                       Struct s;
                       std::string kind, key, b64, doc;
                       if (!ParseLine(line, &s) || !Str(Field(s, "kind"), &kind) || kind != "charge") return true;
                       blv1::Charge c;
                       if (!Str(Field(s, "key"), &key) || !Str(Field(s, "document"), &b64) ||
                           !absl::Base64Unescape(b64, &doc) || !c.ParseFromString(doc)) {
                         bad = absl::DataLossError("billing file: malformed charge record");
                         return false;
                       }
                       if (!c.project().empty()) out[bk::IdOf(c.project())].push_back(key);
                       return true;
                     }).status());
  LS_RETURN_IF_ERROR(bad);
  return out;
}

// One Lua step in {usage}: the manifest, and the base moved forward.
const RedisScript& CommitScript() {
  static const RedisScript* s = new RedisScript(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[2], 'seq', ARGV[1], 'hash', ARGV[2]) end
return 1
)lua");
  return *s;
}

std::string Get(const std::map<std::string, std::string>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? "" : it->second;
}

absl::Status Stop(const ArchiveOptions& o, absl::string_view stage) {
  return o.stop_for_testing ? o.stop_for_testing(stage) : absl::OkStatus();
}

}  // namespace

// ============================================================ verification

namespace {

// deploy/verify_audit.py, line by line.
class AuditVerifier {
 public:
  explicit AuditVerifier(std::optional<std::pair<int64_t, std::string>> anchor) : anchor_(std::move(anchor)) {}

  // False once broken (or after the trailer, when another line comes).
  bool Line(absl::string_view line) {
    if (done_) return false;
    if (!header_) return Header(line);
    Struct o;
    if (!ParseLine(line, &o)) return Broken(seq_, "malformed");
    if (trailer_) return Broken(seq_, "data_after_trailer");
    if (Field(o, "trailer") != nullptr) {
      if (seq_ < end_) return Broken(seq_, "sequence_gap");
      int64_t entries = 0, last = 0;
      std::string last_hash;
      const Value* t = Field(o, "trailer");
      if (t->kind_case() != Value::kBoolValue || !t->bool_value() || !Int(Field(o, "entries"), &entries) ||
          entries != end_ - start_ || !Int(Field(o, "last_sequence"), &last) || last != end_ - 1 ||
          !Str(Field(o, "last_hash"), &last_hash) || last_hash != prev_) {
        return Broken(end_ - 1, "trailer_mismatch");
      }
      trailer_ = true;
      return true;
    }
    int64_t s = 0;
    if (!Int(Field(o, "sequence"), &s)) return Broken(seq_, "malformed");
    if (s != seq_ || seq_ >= end_) return Broken(seq_, "sequence_gap");
    uv1::AuditEntry e;
    e.set_sequence(s);
    std::string payload_b64, prev_hex, hash_hex;
    if (!Str(Field(o, "source_service"), e.mutable_source_service()) ||
        !Str(Field(o, "event_id"), e.mutable_event_id()) || !Str(Field(o, "event_type"), e.mutable_event_type()) ||
        !Str(Field(o, "payload_type"), e.mutable_payload_type()) || !Time(o, "event_time", e.mutable_event_time()) ||
        !Time(o, "append_time", e.mutable_append_time()) || !Str(Field(o, "payload"), &payload_b64) ||
        !absl::Base64Unescape(payload_b64, e.mutable_payload()) || !Str(Field(o, "previous_hash"), &prev_hex) ||
        !IsHashHex(prev_hex) || !Str(Field(o, "hash"), &hash_hex) || !IsHashHex(hash_hex)) {
      return Broken(seq_, "malformed");
    }
    e.set_previous_hash(absl::HexStringToBytes(prev_hex));
    const std::string h = Hex(usage::AuditHashV1(e));
    if (h != hash_hex) return Broken(seq_, "hash_mismatch");
    if (prev_hex != prev_) return Broken(seq_, "link_mismatch");
    if (anchor_ && anchor_->first == seq_ && Hex(anchor_->second) != h) return Broken(seq_, "anchor_mismatch");
    prev_ = h;
    ++seq_;
    ++verdict_.entries;
    return true;
  }

  FileVerdict Finish() {
    if (done_) return verdict_;
    if (!header_) {
      Broken(0, "malformed");
    } else if (!trailer_) {
      Broken(seq_, "no_trailer");
    } else {
      verdict_.ok = true;
      verdict_.last_sequence = end_ - 1;
      verdict_.last_hash_hex = prev_;
    }
    return verdict_;
  }

 private:
  bool Header(absl::string_view line) {
    header_ = true;
    Struct h;
    int64_t version = 0;
    std::string format, algorithm;
    if (!ParseLine(line, &h) || !Str(Field(h, "format"), &format) || format != "labshare-audit-jsonl" ||
        !Int(Field(h, "version"), &version) || version != 1 || !Int(Field(h, "start_sequence"), &start_) ||
        !Int(Field(h, "end_sequence"), &end_) || start_ < 1 || end_ <= start_ ||
        !Str(Field(h, "previous_hash"), &prev_) || !IsHashHex(prev_)) {
      return Broken(start_, "malformed");
    }
    if (!Str(Field(h, "algorithm"), &algorithm) || algorithm != "SHA-256") return Broken(start_, "unknown_algorithm");
    if (start_ == 1 && prev_ != kZeroHash) return Broken(1, "link_mismatch");
    if (anchor_ && anchor_->first == start_ - 1 && start_ > 1 && Hex(anchor_->second) != prev_) {
      return Broken(start_ - 1, "anchor_mismatch");
    }
    seq_ = start_;
    return true;
  }
  bool Broken(int64_t at, const char* kind) {
    done_ = true;
    verdict_.ok = false;
    verdict_.broken_at = at;
    verdict_.kind = kind;
    return false;
  }

  std::optional<std::pair<int64_t, std::string>> anchor_;
  bool header_ = false, trailer_ = false, done_ = false;
  int64_t start_ = 0, end_ = 0, seq_ = 0;
  std::string prev_;
  FileVerdict verdict_;
};

// The bookings file, line by line: header, each document's SHA-256, the
// trailer's count and the SHA-256 of every byte before it.
// What the bookings and billing verifiers share: the line count, the
// trailer seen, the first break (kind and line) and the verdict.
class JsonlVerifierBase {
 public:
  FileVerdict Finish() {
    if (done_) return verdict_;
    if (!trailer_) {
      Broken("no_trailer");
    } else {
      verdict_.ok = true;
    }
    return verdict_;
  }

 protected:
  bool Broken(const char* kind) {
    done_ = true;
    verdict_.ok = false;
    verdict_.broken_at = line_no_;
    verdict_.kind = kind;
    return false;
  }
  int64_t line_no_ = 0;
  bool trailer_ = false, done_ = false;
  usage::Sha256 sha_;
  FileVerdict verdict_;
};

class BookingsVerifier : public JsonlVerifierBase {
 public:
  BookingsVerifier(std::string format = "labshare-bookings-jsonl", std::string count_field = "bookings")
      : format_(std::move(format)), count_field_(std::move(count_field)) {}
  bool Line(absl::string_view line) {
    if (done_) return false;
    ++line_no_;
    Struct o;
    if (!ParseLine(line, &o)) return Broken("malformed");
    if (trailer_) return Broken("data_after_trailer");
    if (line_no_ == 1) {
      std::string format;
      if (!Str(Field(o, "format"), &format) || format != format_) return Broken("malformed");
    } else if (Field(o, "trailer") != nullptr) {
      int64_t n = 0;
      std::string sum;
      if (!Int(Field(o, count_field_.c_str()), &n) || n != verdict_.entries || !Str(Field(o, "sha256"), &sum) ||
          sum != sha_.HexDigest()) {
        return Broken("trailer_mismatch");
      }
      trailer_ = true;
      return true;
    } else {
      std::string doc_b64, doc, sum;
      if (!Str(Field(o, "document"), &doc_b64) || !absl::Base64Unescape(doc_b64, &doc) ||
          !Str(Field(o, "sha256"), &sum)) {
        return Broken("malformed");
      }
      if (Sha256Hex(doc) != sum) return Broken("hash_mismatch");
      if (count_field_ == "projects") {
        // The removal acts on "project" and "version", which the SHA-256
        // does not cover: the name must be the document's, once.
        bv1::Project project;
        std::string name;
        int64_t version = 0;
        if (!ProjectCountersOk(Field(o, "budget_counters")) || !project.ParseFromString(doc) ||
            !Str(Field(o, "project"), &name) || name != project.name() || !Int(Field(o, "version"), &version) ||
            version < 1) {
          return Broken("malformed");
        }
        if (!projects_seen_.insert(name).second) return Broken("duplicate");
      }
      ++verdict_.entries;
    }
    sha_.Update(line);
    sha_.Update("\n");
    return true;
  }

 private:
  // A project's budget counters: non-negative integers (ms), nothing
  // committed (a project that goes holds no booking's hours).
  static bool ProjectCountersOk(const Value* v) {
    if (v == nullptr || v->kind_case() != Value::kStructValue) return false;
    for (const auto& [field, ms] : v->struct_value().fields()) {
      int64_t n = 0;
      if (!Int(&ms, &n) || n < 0 || (absl::EndsWith(field, ":committed") && n != 0)) return false;
    }
    return true;
  }
  std::string format_, count_field_;
  std::set<std::string> projects_seen_;
};

// The billing file, line by line: header, each record's SHA-256, every
// archived posting's ledger lines summing to zero (debits = credits), the
// trailer's counts and the SHA-256 of every byte before it.
class BillingVerifier : public JsonlVerifierBase {
 public:
  bool Line(absl::string_view line) {
    if (done_) return false;
    ++line_no_;
    Struct o;
    if (!ParseLine(line, &o)) return Broken("malformed");
    if (trailer_) return Broken("data_after_trailer");
    if (line_no_ == 1) {
      std::string format;
      if (!Str(Field(o, "format"), &format) || format != "labshare-billing-jsonl" ||
          !Int(Field(o, "cut_ms"), &cut_ms_)) {
        return Broken("malformed");
      }
    } else if (Field(o, "trailer") != nullptr) {
      int64_t c = 0, p = 0, l = 0, lists = 0;
      std::string sum;
      if (!Int(Field(o, "charges"), &c) || c != verdict_.charges || !Int(Field(o, "postings"), &p) ||
          p != verdict_.postings || !Int(Field(o, "ledger_lines"), &l) || l != verdict_.ledger_lines ||
          !Int(Field(o, "lists"), &lists) || lists != lists_ || !Str(Field(o, "sha256"), &sum) ||
          sum != sha_.HexDigest()) {
        return Broken("trailer_mismatch");
      }
      for (const auto& [posting, s] : sums_) {
        if (s != 0 || postings_.count(posting) == 0) return Broken("unbalanced_posting");
      }
      // Every posting has exactly its entries as lines.
      for (const auto& [posting, want] : entries_) {
        auto it = seen_.find(posting);
        if (it == seen_.end() || it->second != want) return Broken("ledger_mismatch");
      }
      for (const auto& [posting, got] : seen_) {
        if (entries_.count(posting) == 0) return Broken("ledger_mismatch");
      }
      // Every archived charge's postings are archived with it.
      for (const auto& name : required_) {
        if (postings_.count(name.substr(name.rfind('/') + 1)) == 0) return Broken("missing_posting");
      }
      trailer_ = true;
      return true;
    } else {
      std::string kind;
      if (!Str(Field(o, "kind"), &kind)) return Broken("malformed");
      if (kind == "carried_forward") {
        if (!CarriedForward(o)) return false;
      } else {
        std::string doc_b64, doc, sum, key;
        if (!Str(Field(o, "document"), &doc_b64) || !absl::Base64Unescape(doc_b64, &doc) ||
            !Str(Field(o, "sha256"), &sum) || !Str(Field(o, "key"), &key)) {
          return Broken("malformed");
        }
        if (Sha256Hex(doc) != sum) return Broken("hash_mismatch");
        if (kind == "charge" || kind == "posting") {
          if (!seen_keys_.insert(key).second) return Broken("duplicate");
          std::string member;
          int64_t ms = 0;
          // "<ns, 19 digits>|<id>"; files written before billing indexed
          // to the nanosecond: "<ms, 15 digits>|<id>".
          if (!Str(Field(o, "index_member"), &member) || !absl::SimpleAtoi(member.substr(0, member.find('|')), &ms) ||
              ms < 0) {
            return Broken("malformed");
          }
          if (member.find('|') == 19) ms /= 1000000;
          if (ms >= cut_ms_) return Broken("after_cut");
        }
        if (kind == "charge") {
          blv1::Charge c;
          if (!c.ParseFromString(doc)) return Broken("malformed");
          if (!c.posting().empty()) required_.insert(c.posting());
          for (const auto& x : c.subsidy_postings()) required_.insert(x);
          for (const auto& x : c.corrections()) required_.insert(x);
          ++verdict_.charges;
        } else if (kind == "posting") {
          blv1::Posting p;
          if (!p.ParseFromString(doc)) return Broken("malformed");
          const std::string id = key.substr(key.rfind(':') + 1);
          std::map<std::string, int64_t> per_currency;
          auto& want = entries_[id];
          for (const auto& e : p.entries()) {
            const int64_t d = e.debit().amount_minor(), cr = e.credit().amount_minor();
            if (d < 0 || cr < 0 || (d == 0) == (cr == 0)) return Broken("unbalanced_posting");
            const std::string& currency = d != 0 ? e.debit().currency_code() : e.credit().currency_code();
            per_currency[currency] += d - cr;
            want.insert(absl::StrCat(e.account(), "|", e.counterparty(), "|", currency, "|", d - cr));
          }
          for (const auto& [unused, v] : per_currency) {
            if (v != 0) return Broken("unbalanced_posting");
          }
          if (p.entries_size() < 2) return Broken("unbalanced_posting");
          postings_.insert(id);
          ++verdict_.postings;
        } else if (kind == "ledger_line") {
          constexpr absl::string_view kPrefix = "{billing}:acct:";
          std::string posting;
          std::optional<LedgerLine> l = ParseLedgerLine(doc);
          if (!l || !absl::StartsWith(key, kPrefix) || !Str(Field(o, "posting"), &posting)) {
            return Broken("malformed");
          }
          if (posting != l->posting) return Broken("ledger_mismatch");
          if (l->ms >= cut_ms_) return Broken("after_cut");
          sums_[l->posting] += l->amount;
          seen_[l->posting].insert(
              absl::StrCat(key.substr(kPrefix.size()), "|", l->counterparty, "|", l->currency, "|", l->amount));
          auto& dc = list_[key][{l->counterparty, l->currency}];
          (l->amount > 0 ? dc.first : dc.second) += l->amount > 0 ? l->amount : -l->amount;
          ++verdict_.ledger_lines;
        } else {
          return Broken("malformed");
        }
      }
      ++verdict_.entries;
    }
    sha_.Update(line);
    sha_.Update("\n");
    return true;
  }

 private:
  using DebitCredit = std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>>;
  // {"counterparty","currency","debit","credit"}...; false when malformed.
  static bool Totals(const Value* v, DebitCredit* out) {
    if (v == nullptr || v->kind_case() != Value::kListValue) return false;
    for (const auto& x : v->list_value().values()) {
      if (x.kind_case() != Value::kStructValue) return false;
      std::string cp, cur;
      int64_t d = 0, c = 0;
      if (!Str(Field(x.struct_value(), "counterparty"), &cp) || !Str(Field(x.struct_value(), "currency"), &cur) ||
          !Int(Field(x.struct_value(), "debit"), &d) || !Int(Field(x.struct_value(), "credit"), &c)) {
        return false;
      }
      auto& dc = (*out)[{cp, cur}];
      dc.first += d;
      dc.second += c;
    }
    return true;
  }
  // A list's carried-forward totals: after = before + its archived lines.
  bool CarriedForward(const Struct& o) {
    std::string key;
    DebitCredit before, after;
    if (!Str(Field(o, "key"), &key) || !Totals(Field(o, "before"), &before) || !Totals(Field(o, "after"), &after) ||
        !cf_keys_.insert(key).second) {
      return Broken("malformed");
    }
    DebitCredit want = before;
    for (const auto& [k, dc] : list_[key]) {
      want[k].first += dc.first;
      want[k].second += dc.second;
    }
    if (want != after) return Broken("carried_forward_mismatch");
    ++lists_;
    return true;
  }
  int64_t cut_ms_ = 0, lists_ = 0;
  std::set<std::string> postings_, required_, seen_keys_, cf_keys_;
  std::map<std::string, int64_t> sums_;
  std::map<std::string, std::multiset<std::string>> entries_, seen_;  // posting id -> account|cp|currency|signed
  std::map<std::string, DebitCredit> list_;                           // account key -> its archived lines
};

}  // namespace

FileVerdict VerifyAuditExport(absl::string_view file, std::optional<std::pair<int64_t, std::string>> anchor) {
  AuditVerifier v(std::move(anchor));
  for (absl::string_view line : Lines(file)) {
    if (!v.Line(line)) break;
  }
  return v.Finish();
}

FileVerdict VerifyBookingsExport(absl::string_view file) {
  BookingsVerifier v;
  for (absl::string_view line : Lines(file)) {
    if (!v.Line(line)) break;
  }
  return v.Finish();
}

FileVerdict VerifyBillingExport(absl::string_view file) {
  BillingVerifier v;
  for (absl::string_view line : Lines(file)) {
    if (!v.Line(line)) break;
  }
  return v.Finish();
}

absl::StatusOr<FileVerdict> VerifyBillingExportFile(const std::string& path, std::string* sha256_hex) {
  BillingVerifier v;
  LS_ASSIGN_OR_RETURN(std::string sha, ForEachLine(path, [&](absl::string_view line) { return v.Line(line); }));
  if (sha256_hex != nullptr) *sha256_hex = sha;
  return v.Finish();
}

absl::StatusOr<FileVerdict> VerifyAuditExportFile(const std::string& path,
                                                  std::optional<std::pair<int64_t, std::string>> anchor,
                                                  std::string* sha256_hex) {
  AuditVerifier v(std::move(anchor));
  LS_ASSIGN_OR_RETURN(std::string sha, ForEachLine(path, [&](absl::string_view line) { return v.Line(line); }));
  if (sha256_hex != nullptr) *sha256_hex = sha;
  return v.Finish();
}

absl::StatusOr<FileVerdict> VerifyRecordsExportFile(const std::string& path, absl::string_view kind,
                                                    std::string* sha256_hex) {
  BookingsVerifier v(absl::StrCat("labshare-", kind, "-jsonl"), std::string(kind));
  LS_ASSIGN_OR_RETURN(std::string sha, ForEachLine(path, [&](absl::string_view line) { return v.Line(line); }));
  if (sha256_hex != nullptr) *sha256_hex = sha;
  return v.Finish();
}

absl::StatusOr<FileVerdict> VerifyBookingsExportFile(const std::string& path, std::string* sha256_hex) {
  BookingsVerifier v;
  LS_ASSIGN_OR_RETURN(std::string sha, ForEachLine(path, [&](absl::string_view line) { return v.Line(line); }));
  if (sha256_hex != nullptr) *sha256_hex = sha;
  return v.Finish();
}

// ============================================================ ArchiveYear

absl::StatusOr<ArchiveResult> ArchiveYear(RedisPool* pool, const ArchiveOptions& o) {
  if (o.year < 1970 || o.year > 9999) return absl::InvalidArgumentError("year: 1970..9999");
  if (o.dir.empty()) return absl::InvalidArgumentError("dir: where the archive files go");
  const int batch = std::max(1, o.batch);
  SystemClock system_clock;
  const Clock* clock = o.clock != nullptr ? o.clock : &system_clock;
  const absl::Time cut = absl::FromCivil(absl::CivilYear(o.year + 1), absl::UTCTimeZone());
  const int64_t cut_ms = absl::ToUnixMillis(cut);
  usage::AuditChain chain(pool, PageTokenCodec(std::string(32, 'a')));
  absl::TimeZone billing_zone;
  if (!LoadIanaTimeZone(o.billing_time_zone, &billing_zone)) {
    return absl::InvalidArgumentError(
        absl::StrCat("billing_time_zone: not an IANA time zone name: ", o.billing_time_zone));
  }
  const absl::Time billing_cut = absl::FromCivil(absl::CivilYear(o.year + 1), billing_zone);
  const int64_t billing_cut_ms = absl::ToUnixMillis(billing_cut);

  ArchiveResult result;
  result.audit_file = absl::StrCat(o.dir, "/audit-", o.year, ".jsonl");
  result.bookings_file = absl::StrCat(o.dir, "/bookings-", o.year, ".jsonl");
  result.billing_file = absl::StrCat(o.dir, "/billing-", o.year, ".jsonl");
  result.leases_file = absl::StrCat(o.dir, "/leases-", o.year, ".jsonl");
  result.orders_file = absl::StrCat(o.dir, "/orders-", o.year, ".jsonl");
  result.projects_file = absl::StrCat(o.dir, "/projects-", o.year, ".jsonl");
  const std::string manifest_key = ManifestKey(o.year);

  auto read_manifest = [&]() -> absl::StatusOr<std::map<std::string, std::string>> {
    LS_ASSIGN_OR_RETURN(RedisValue m, pool->Command({"HGETALL", manifest_key}));
    std::map<std::string, std::string> out;
    for (size_t i = 0; i + 1 < m.elements.size(); i += 2) out[m.elements[i].str] = m.elements[i + 1].str;
    return out;
  };
  LS_ASSIGN_OR_RETURN(auto manifest, read_manifest());
  auto fill = [&](const std::map<std::string, std::string>& m) {
    absl::SimpleAtoi(Get(m, "audit_start"), &result.audit_start);
    absl::SimpleAtoi(Get(m, "audit_end"), &result.audit_end);
    absl::SimpleAtoi(Get(m, "bookings"), &result.bookings);
    absl::SimpleAtoi(Get(m, "outbox_entries_trimmed"), &result.outbox_entries_trimmed);
    absl::SimpleAtoi(Get(m, "keys_deleted"), &result.keys_deleted);
    result.audit_last_hash = Get(m, "audit_last_hash");
    result.audit_sha256 = Get(m, "audit_sha256");
    result.bookings_sha256 = Get(m, "bookings_sha256");
    absl::SimpleAtoi(Get(m, "billing_charges"), &result.billing_charges);
    absl::SimpleAtoi(Get(m, "billing_postings"), &result.billing_postings);
    absl::SimpleAtoi(Get(m, "billing_ledger_lines"), &result.billing_ledger_lines);
    absl::SimpleAtoi(Get(m, "billing_lists_folded"), &result.billing_lists_folded);
    absl::SimpleAtoi(Get(m, "billing_charges_kept"), &result.billing_charges_kept);
    absl::SimpleAtoi(Get(m, "billing_postings_kept"), &result.billing_postings_kept);
    absl::SimpleAtoi(Get(m, "billing_changed_kept"), &result.billing_changed_kept);
    result.billing_sha256 = Get(m, "billing_sha256");
    if (!Get(m, "billing_file").empty()) result.billing_file = Get(m, "billing_file");
    absl::SimpleAtoi(Get(m, "leases"), &result.leases);
    absl::SimpleAtoi(Get(m, "orders"), &result.orders);
    absl::SimpleAtoi(Get(m, "leases_kept"), &result.leases_kept);
    absl::SimpleAtoi(Get(m, "bookings_kept"), &result.bookings_kept);
    absl::SimpleAtoi(Get(m, "orders_kept"), &result.orders_kept);
    result.leases_sha256 = Get(m, "leases_sha256");
    result.orders_sha256 = Get(m, "orders_sha256");
    if (!Get(m, "leases_file").empty()) result.leases_file = Get(m, "leases_file");
    if (!Get(m, "orders_file").empty()) result.orders_file = Get(m, "orders_file");
    absl::SimpleAtoi(Get(m, "projects"), &result.projects);
    absl::SimpleAtoi(Get(m, "projects_kept"), &result.projects_kept);
    absl::SimpleAtoi(Get(m, "projects_changed_kept"), &result.projects_changed_kept);
    result.projects_sha256 = Get(m, "projects_sha256");
    if (!Get(m, "projects_file").empty()) result.projects_file = Get(m, "projects_file");
  };
  if (Get(manifest, "state") == "done") {
    fill(manifest);
    result.already_done = true;
    return result;
  }

  if (manifest.empty()) {
    // ---- preconditions
    if (cut > clock->Now()) {
      return Precondition(absl::StrCat("year ", o.year, " is open: it ends at ", absl::FormatTime(cut),
                                       ", after the platform clock (", absl::FormatTime(clock->Now()), ")"));
    }
    if (billing_cut > clock->Now()) {
      return Precondition(absl::StrCat("year ", o.year, " is open: its billing year ends at ",
                                       absl::FormatTime(billing_cut), " (", o.billing_time_zone,
                                       "), after the platform clock (", absl::FormatTime(clock->Now()), ")"));
    }
    LS_ASSIGN_OR_RETURN(ConsumerState consumers, Consumers(pool));
    // A minute past the cut: an event appended to the audit trail just
    // before the cut may carry a stream id just after it (clocks differ);
    // it must be acknowledged too, or a redelivery would append it again
    // once its apply-once marker is archived.
    if (consumers.safe_ms < cut_ms + kClockSkewMs) {
      return Precondition(absl::StrCat("consumer ", consumers.laggard,
                                       " has not acknowledged every event before the end of ", o.year,
                                       ": rerun when it has caught up"));
    }
    LS_ASSIGN_OR_RETURN(AuditRange audit, FindAuditRange(chain, cut_ms, batch));
    std::string last_hex = audit.base_hash.empty() ? std::string(kZeroHash) : Hex(audit.base_hash);
    if (audit.end > audit.start) {
      LS_ASSIGN_OR_RETURN(std::optional<uv1::AuditEntry> last, chain.Get(audit.end - 1));
      if (!last) return absl::DataLossError(absl::StrCat("audit entry ", audit.end - 1, " is missing"));
      last_hex = Hex(last->hash());
    }

    // ---- billing: what may leave, or a refusal (before any file is written)
    LS_ASSIGN_OR_RETURN(BillingSelection billing, SelectBilling(pool, o.year, billing_cut_ms, batch));
    // ---- leases and service orders: which go, and whose bookings stay
    // (a lease or order a staying charge names stays, and its booking)
    LS_ASSIGN_OR_RETURN(LeasesAndOrders lo, SelectLeasesAndOrders(pool, cut_ms, consumers.safe_ms, batch,
                                                                  billing.keep_leases, billing.keep_orders));
    lo.keep_bookings.insert(billing.keep_bookings.begin(), billing.keep_bookings.end());
    // ---- projects final by their own fields; those something staying names
    // stay (charges here, bookings below)
    LS_ASSIGN_OR_RETURN(ProjectSelection projects, FinalProjects(pool, cut_ms, consumers.safe_ms, batch));
    std::set<std::string> named_projects = billing.keep_projects;
    auto name_project = [&](const StoredBooking& b) {
      if (!b.booking.project().empty()) named_projects.insert(bk::IdOf(b.booking.project()));
    };

    // ---- the bookings file, checking each booking as it goes (a refusal
    // leaves no file)
    LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> bw, FileWriter::Open(result.bookings_file));
    usage::Sha256 body;
    auto put = [&](const std::string& line) {
      body.Update(line);
      return bw->Append(line);
    };
    LS_RETURN_IF_ERROR(put(absl::StrCat("{\"format\":\"labshare-bookings-jsonl\",\"version\":1,\"year\":", o.year,
                                        ",\"cut_ms\":", cut_ms, ",\"audit_last_sequence\":", audit.end - 1,
                                        ",\"audit_last_hash\":\"", last_hex, "\"}\n")));
    int64_t count = 0, bookings_kept = 0;
    LS_RETURN_IF_ERROR(ForEachListedBooking(pool, cut_ms, false, batch, [&](const StoredBooking& b) -> absl::Status {
      if (absl::ToUnixMillis(FromProto(b.booking.reserved_interval().end_time())) >= cut_ms) {
        name_project(b);  // spans the cut: stays
        return absl::OkStatus();
      }
      if (lo.keep_bookings.count(b.id) > 0) {
        name_project(b);
        ++bookings_kept;
        return absl::OkStatus();
      }
      if (!Final(b.booking.state())) {
        return Precondition(absl::StrCat("booking ", b.id, " ended in or before ", o.year, " but is still ",
                                         bv1::Booking::State_Name(b.booking.state()),
                                         ": close it (the sweep or check-out) first"));
      }
      if (absl::ToUnixMillis(FromProto(b.booking.update_time())) >= consumers.safe_ms) {
        return Precondition(absl::StrCat("the last change of booking ", b.id, " is not yet applied by ",
                                         consumers.laggard, " (billing / audit): rerun later"));
      }
      ++count;
      return put(BookingLine(b));
    }));
    LS_RETURN_IF_ERROR(bw->Append(absl::StrCat("{\"trailer\":true,\"bookings\":", count, ",\"sha256\":\"",
                                               body.HexDigest(), "\"}\n")));
    // The bookings after the cut, read only when a project may still go
    // (every booking of the new year is read: see the limit in archive.h).
    bool may_go = false;
    for (const auto& sp : projects.projects) may_go |= named_projects.count(sp.id) == 0;
    if (may_go) {
      LS_RETURN_IF_ERROR(ForEachListedBooking(pool, cut_ms, true, batch, [&](const StoredBooking& b) {
        name_project(b);
        return absl::OkStatus();
      }));
    }
    LS_RETURN_IF_ERROR(SettleProjects(pool, named_projects, &projects));
    std::vector<std::string> project_lines;
    for (const auto& sp : projects.projects) project_lines.push_back(ProjectLine(sp));
    LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> projects_w,
                        WriteRecords(result.projects_file, "labshare-projects-jsonl", "projects", o.year, cut_ms,
                                     project_lines));

    // ---- the audit file: ExportAuditTrail's JSONL, streamed
    LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> aw, FileWriter::Open(result.audit_file));
    if (audit.end > audit.start) {
      LS_ASSIGN_OR_RETURN(usage::AuditExportSummary summary,
                          chain.ExportJsonl(audit.start, audit.end,
                                            [&](absl::string_view piece) { return aw->Append(piece); }));
      if (summary.entries != audit.end - audit.start || Hex(summary.last_hash) != last_hex) {
        return absl::DataLossError("the audit trail changed while it was exported; nothing removed");
      }
    }
    // ---- leases and service orders (files written below)
    LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> leases_w,
                        WriteRecords(result.leases_file, "labshare-leases-jsonl", "leases", o.year, cut_ms,
                                     RecordLines(lo.leases, "lease", "leases")));
    LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> orders_w,
                        WriteRecords(result.orders_file, "labshare-orders-jsonl", "orders", o.year, cut_ms,
                                     RecordLines(lo.orders, "service_order", "serviceOrders")));

    // ---- the billing file
    LS_ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> lw, FileWriter::Open(result.billing_file));
    {
      usage::Sha256 lsum;
      auto lput = [&](const std::string& line) {
        lsum.Update(line);
        return lw->Append(line);
      };
      LS_RETURN_IF_ERROR(lput(absl::StrCat("{\"format\":\"labshare-billing-jsonl\",\"version\":1,\"year\":", o.year,
                                           ",\"cut_ms\":", billing_cut_ms, ",\"time_zone\":\"",
                                           JsonEscape(o.billing_time_zone), "\",\"audit_last_sequence\":", audit.end - 1,
                                           ",\"audit_last_hash\":\"", last_hex, "\"}\n")));
      for (const auto& d : billing.charges) LS_RETURN_IF_ERROR(lput(BillingDocLine(d)));
      for (const auto& d : billing.postings) LS_RETURN_IF_ERROR(lput(BillingDocLine(d)));
      for (const auto& [key, lines] : billing.lines) {
        for (const auto& [posting, line] : lines) LS_RETURN_IF_ERROR(lput(LedgerLineRecord(key, posting, line)));
        LS_RETURN_IF_ERROR(lput(CarriedForwardRecord(key, billing.opening[key], lines)));
      }
      LS_RETURN_IF_ERROR(lw->Append(absl::StrCat("{\"trailer\":true,\"charges\":", billing.charges.size(),
                                                 ",\"postings\":", billing.postings.size(), ",\"ledger_lines\":",
                                                 billing.ledger_lines, ",\"lists\":", billing.lines.size(),
                                                 ",\"sha256\":\"", lsum.HexDigest(), "\"}\n")));
    }
    LS_ASSIGN_OR_RETURN(const std::string bookings_sha, bw->Commit());
    LS_ASSIGN_OR_RETURN(const std::string audit_sha, aw->Commit());
    LS_ASSIGN_OR_RETURN(const std::string billing_sha, lw->Commit());
    LS_ASSIGN_OR_RETURN(const std::string leases_sha, leases_w->Commit());
    LS_ASSIGN_OR_RETURN(const std::string orders_sha, orders_w->Commit());
    LS_ASSIGN_OR_RETURN(const std::string projects_sha, projects_w->Commit());

    // ---- read back and verify
    if (audit.end > audit.start) {
      std::optional<std::pair<int64_t, std::string>> anchor;
      if (audit.start > 1) anchor = std::make_pair(audit.start - 1, audit.base_hash);
      std::string sha;
      LS_ASSIGN_OR_RETURN(FileVerdict fv, VerifyAuditExportFile(result.audit_file, anchor, &sha));
      if (!fv.ok || fv.entries != audit.end - audit.start || fv.last_hash_hex != last_hex || sha != audit_sha) {
        return absl::DataLossError(absl::StrCat("the written audit archive does not verify: ", fv.kind, " at ",
                                                fv.broken_at, "; nothing removed"));
      }
    }
    {
      std::string sha;
      LS_ASSIGN_OR_RETURN(FileVerdict bv, VerifyBookingsExportFile(result.bookings_file, &sha));
      if (!bv.ok || bv.entries != count || sha != bookings_sha) {
        return absl::DataLossError(absl::StrCat("the written bookings archive does not verify: ", bv.kind,
                                                "; nothing removed"));
      }
    }
    {
      std::string sha;
      LS_ASSIGN_OR_RETURN(FileVerdict lv, VerifyBillingExportFile(result.billing_file, &sha));
      if (!lv.ok || lv.charges != static_cast<int64_t>(billing.charges.size()) ||
          lv.postings != static_cast<int64_t>(billing.postings.size()) ||
          lv.ledger_lines != billing.ledger_lines || sha != billing_sha) {
        return absl::DataLossError(absl::StrCat("the written billing archive does not verify: ", lv.kind,
                                                "; nothing removed"));
      }
    }
    for (const auto& [path, kind, count, want_sha] :
         {std::make_tuple(result.leases_file, "leases", lo.leases.size(), leases_sha),
          std::make_tuple(result.orders_file, "orders", lo.orders.size(), orders_sha),
          std::make_tuple(result.projects_file, "projects", projects.projects.size(), projects_sha)}) {
      std::string sha;
      LS_ASSIGN_OR_RETURN(FileVerdict rv, VerifyRecordsExportFile(path, kind, &sha));
      if (!rv.ok || rv.entries != static_cast<int64_t>(count) || sha != want_sha) {
        return absl::DataLossError(absl::StrCat("the written ", kind, " archive does not verify: ", rv.kind,
                                                "; nothing removed"));
      }
    }
    LS_RETURN_IF_ERROR(Stop(o, "exported"));

    // ---- the cut: manifest and base, one step
    std::vector<std::string> args = {std::to_string(audit.end - 1), absl::HexStringToBytes(last_hex)};
    const std::map<std::string, std::string> fields = {
        {"state", "removing"},
        {"cut_ms", std::to_string(cut_ms)},
        {"audit_start", std::to_string(audit.start)},
        {"audit_end", std::to_string(audit.end)},
        {"audit_last_hash", last_hex},
        {"audit_file", result.audit_file},
        {"audit_sha256", audit_sha},
        {"bookings", std::to_string(count)},
        {"bookings_file", result.bookings_file},
        {"bookings_sha256", bookings_sha},
        {"billing_cut_ms", std::to_string(billing_cut_ms)},
        {"billing_file", result.billing_file},
        {"billing_sha256", billing_sha},
        {"billing_charges", std::to_string(billing.charges.size())},
        {"billing_postings", std::to_string(billing.postings.size())},
        {"billing_ledger_lines", std::to_string(billing.ledger_lines)},
        {"billing_charges_kept", std::to_string(billing.charges_kept)},
        {"billing_postings_kept", std::to_string(billing.postings_kept)},
        {"leases", std::to_string(lo.leases.size())},
        {"leases_kept", std::to_string(lo.leases_kept)},
        {"bookings_kept", std::to_string(bookings_kept)},
        {"leases_file", result.leases_file},
        {"leases_sha256", leases_sha},
        {"orders", std::to_string(lo.orders.size())},
        {"orders_kept", std::to_string(lo.orders_kept)},
        {"orders_file", result.orders_file},
        {"orders_sha256", orders_sha},
        {"projects", std::to_string(projects.projects.size())},
        {"projects_kept", std::to_string(projects.kept)},
        {"projects_file", result.projects_file},
        {"projects_sha256", projects_sha},
    };
    for (const auto& [k, v] : fields) {
      args.push_back(k);
      args.push_back(v);
    }
    LS_RETURN_IF_ERROR(
        pool->Eval(CommitScript(), {manifest_key, usage::audit_keys::Base()}, args).status());
    LS_RETURN_IF_ERROR(Stop(o, "manifest"));
    LS_ASSIGN_OR_RETURN(manifest, read_manifest());
  }

  // ---- state "removing": the files must still be what was recorded
  fill(manifest);
  int64_t cut_recorded = 0;
  absl::SimpleAtoi(Get(manifest, "cut_ms"), &cut_recorded);
  const std::string audit_path = Get(manifest, "audit_file");
  const std::string bookings_path = Get(manifest, "bookings_file");
  {
    std::string audit_sha, bookings_sha;
    FileVerdict fv;
    if (result.audit_end > result.audit_start) {
      LS_ASSIGN_OR_RETURN(fv, VerifyAuditExportFile(audit_path, std::nullopt, &audit_sha));
    } else {
      LS_ASSIGN_OR_RETURN(audit_sha, ForEachLine(audit_path, [](absl::string_view) { return true; }));
      fv.ok = true;
      fv.last_sequence = result.audit_end - 1;
      fv.last_hash_hex = result.audit_last_hash;
    }
    LS_ASSIGN_OR_RETURN(FileVerdict bv, VerifyBookingsExportFile(bookings_path, &bookings_sha));
    if (audit_sha != result.audit_sha256 || bookings_sha != result.bookings_sha256) {
      return absl::DataLossError(absl::StrCat("the archive files of ", o.year,
                                              " changed since they were verified (SHA-256 differs from the "
                                              "manifest); nothing removed"));
    }
    if (!fv.ok || fv.last_sequence != result.audit_end - 1 || fv.last_hash_hex != result.audit_last_hash) {
      return absl::DataLossError(absl::StrCat("the audit archive of ", o.year, " does not verify: ", fv.kind,
                                              " at ", fv.broken_at, "; nothing removed"));
    }
    if (!bv.ok || bv.entries != result.bookings) {
      return absl::DataLossError("the bookings archive does not verify; nothing removed");
    }
    for (const auto& [kind, count, want_sha] : {std::make_tuple("leases", result.leases, result.leases_sha256),
                                                std::make_tuple("orders", result.orders, result.orders_sha256),
                                                std::make_tuple("projects", result.projects, result.projects_sha256)}) {
      const std::string path = Get(manifest, absl::StrCat(kind, "_file"));
      if (path.empty()) continue;
      std::string sha;
      LS_ASSIGN_OR_RETURN(FileVerdict rv, VerifyRecordsExportFile(path, kind, &sha));
      if (sha != want_sha) {
        return absl::DataLossError(absl::StrCat("the ", kind, " archive of ", o.year,
                                                " changed since it was verified (SHA-256 differs from the "
                                                "manifest); nothing removed"));
      }
      if (!rv.ok || rv.entries != count) {
        return absl::DataLossError(absl::StrCat("the ", kind, " archive of ", o.year, " does not verify: ", rv.kind,
                                                "; nothing removed"));
      }
    }
    if (!Get(manifest, "billing_file").empty()) {
      std::string billing_sha;
      LS_ASSIGN_OR_RETURN(FileVerdict lv, VerifyBillingExportFile(Get(manifest, "billing_file"), &billing_sha));
      if (billing_sha != result.billing_sha256) {
        return absl::DataLossError(absl::StrCat("the billing archive of ", o.year,
                                                " changed since it was verified (SHA-256 differs from the "
                                                "manifest); nothing removed"));
      }
      if (!lv.ok || lv.charges != result.billing_charges || lv.postings != result.billing_postings ||
          lv.ledger_lines != result.billing_ledger_lines) {
        return absl::DataLossError(absl::StrCat("the billing archive of ", o.year, " does not verify: ", lv.kind,
                                                " at line ", lv.broken_at, "; nothing removed"));
      }
    }
  }

  int64_t gone = 0;
  // Audit entries, their markers and index members, each in its segment's
  // keys (audit_chain.h); the entry goes last, so a crash leaves it for the
  // rerun to find.
  LS_ASSIGN_OR_RETURN(usage::AuditSegmentView segments, chain.Segments());
  for (int64_t first = result.audit_start; first < result.audit_end; first += batch) {
    std::vector<std::vector<std::string>> gets;
    for (int64_t s = first; s < result.audit_end && s < first + batch; ++s) {
      gets.push_back({"GET", usage::audit_keys::Entry(segments.SegmentOf(s), s)});
    }
    LS_ASSIGN_OR_RETURN(auto entries, pool->Pipeline(gets));
    std::vector<std::vector<std::string>> cmds;
    std::vector<std::string> index_keys;
    for (size_t i = 0; i < entries.size(); ++i) {
      uv1::AuditEntry e;
      if (entries[i].is_nil() || !e.ParseFromString(entries[i].str)) continue;  // removed by an earlier run
      const std::string seq = std::to_string(e.sequence());
      const int64_t segment = segments.SegmentOf(e.sequence());
      cmds.push_back({"HDEL", usage::audit_keys::Applied(segment),
                      usage::audit_keys::AppliedField(e.source_service(), e.event_id())});
      std::vector<std::string> idx = {usage::audit_keys::Index(segment, "event", e.event_id())};
      if (!e.actor().empty()) idx.push_back(usage::audit_keys::Index(segment, "actor", e.actor()));
      if (!e.request_id().empty()) idx.push_back(usage::audit_keys::Index(segment, "request", e.request_id()));
      for (const auto& r : e.resources()) idx.push_back(usage::audit_keys::Index(segment, "resource", r));
      for (const auto& k : idx) {
        cmds.push_back({"ZREM", k, seq});
        index_keys.push_back(k);
      }
    }
    if (!cmds.empty()) {
      LS_ASSIGN_OR_RETURN(auto replies, pool->Pipeline(cmds));
      for (const auto& r : replies) {
        if (r.is_error()) return absl::InternalError(absl::StrCat("removing audit entries: ", r.str));
      }
      std::sort(index_keys.begin(), index_keys.end());
      index_keys.erase(std::unique(index_keys.begin(), index_keys.end()), index_keys.end());
      std::vector<std::vector<std::string>> exists;
      for (const auto& k : index_keys) exists.push_back({"EXISTS", k});
      LS_ASSIGN_OR_RETURN(auto ex, pool->Pipeline(exists));
      for (const auto& e : ex) gone += e.integer == 0 ? 1 : 0;
    }
    std::vector<std::vector<std::string>> dels;
    for (const auto& g : gets) dels.push_back({"DEL", g[1]});
    LS_ASSIGN_OR_RETURN(auto deleted, pool->Pipeline(dels));
    for (const auto& d : deleted) gone += d.integer;
    LS_RETURN_IF_ERROR(Stop(o, "removed_batch"));
  }
  absl::Status removal = absl::OkStatus();
  int64_t line_no = 0;
  LS_RETURN_IF_ERROR(ForEachLine(bookings_path, [&](absl::string_view line) {
                       ++line_no;
                       if (line_no == 1 || absl::StartsWith(line, "{\"trailer\"")) return true;
                       absl::StatusOr<StoredBooking> b = ParseBookingLine(line);
                       if (!b.ok()) {
                         removal = b.status();
                         return false;
                       }
                       absl::StatusOr<int64_t> g = RemoveBooking(pool, *b);
                       if (!g.ok()) {
                         removal = g.status();
                         return false;
                       }
                       gone += *g;
                       return true;
                     }).status());
  LS_RETURN_IF_ERROR(removal);
  LS_RETURN_IF_ERROR(SweepOrgIndexes(pool, cut_recorded, batch).status());
  for (const auto& [kind, orders] : {std::make_pair("leases", false), std::make_pair("orders", true)}) {
    const std::string path = Get(manifest, absl::StrCat(kind, "_file"));
    if (path.empty()) continue;
    LS_ASSIGN_OR_RETURN(int64_t g, RemoveRecords(pool, path, orders));
    gone += g;
  }
  if (!Get(manifest, "leases_file").empty()) {
    LS_RETURN_IF_ERROR(SweepLeaseAndOrderOrgIndexes(pool, cut_recorded, batch).status());
  }
  int64_t changed = 0;
  std::map<std::string, std::vector<std::string>> project_charges;
  if (!Get(manifest, "billing_file").empty()) {
    LS_ASSIGN_OR_RETURN(BillingRemoval br, RemoveBilling(pool, Get(manifest, "billing_file"), o));
    gone += br.gone;
    changed = br.changed;
    LS_ASSIGN_OR_RETURN(project_charges, ChargeKeysByProject(Get(manifest, "billing_file")));
  }
  // After billing: a project stays while a charge of the billing file that
  // names it stays.
  int64_t projects_changed = 0;
  if (!Get(manifest, "projects_file").empty()) {  // (a manifest of an older version has none)
    LS_ASSIGN_OR_RETURN(ProjectRemoval pr, RemoveProjects(pool, Get(manifest, "projects_file"), o, project_charges));
    gone += pr.gone;
    projects_changed = pr.changed;
  }
  // Outboxes below the cut: every group acknowledged them (checked before
  // the manifest was written; groups only move forward).
  int64_t trimmed = 0;
  // Checked again here (a rerun may come days later, a group may have been
  // reset): outboxes are trimmed only below what every group has consumed.
  LS_ASSIGN_OR_RETURN(ConsumerState now, Consumers(pool));
  if (now.safe_ms < cut_recorded) {
    return Precondition(absl::StrCat("outbox ", now.laggard, " is behind the cut now; nothing trimmed"));
  }
  for (const auto& s : now.streams) {
    LS_ASSIGN_OR_RETURN(RedisValue t, pool->Command({"XTRIM", s, "MINID", std::to_string(cut_recorded)}));
    if (t.is_error()) return absl::InternalError(absl::StrCat("XTRIM ", s, ": ", t.str));
    trimmed += t.integer;
  }
  // Counts add up over reruns.
  int64_t before_gone = 0, before_trimmed = 0;
  absl::SimpleAtoi(Get(manifest, "keys_deleted"), &before_gone);
  absl::SimpleAtoi(Get(manifest, "outbox_entries_trimmed"), &before_trimmed);
  result.keys_deleted = before_gone + gone;
  result.outbox_entries_trimmed = before_trimmed + trimmed;
  {
    LS_ASSIGN_OR_RETURN(RedisValue f, pool->Command({"HGET", BillingRemovalKey(o.year), "lists_folded"}));
    result.billing_lists_folded = 0;
    if (!f.is_nil()) absl::SimpleAtoi(f.str, &result.billing_lists_folded);
  }
  result.billing_changed_kept = changed;
  result.projects_changed_kept = projects_changed;
  LS_RETURN_IF_ERROR(pool->Command({"HSET", manifest_key, "state", "done", "keys_deleted",
                                    std::to_string(result.keys_deleted), "outbox_entries_trimmed",
                                    std::to_string(result.outbox_entries_trimmed), "billing_lists_folded",
                                    std::to_string(result.billing_lists_folded), "billing_changed_kept",
                                    std::to_string(result.billing_changed_kept), "projects_changed_kept",
                                    std::to_string(result.projects_changed_kept)})
                         .status());
  return result;
}

}  // namespace labshare::archive
