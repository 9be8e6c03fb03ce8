// Versioned documents in Redis with atomic, idempotent, event-publishing commits.
//
// A document is a Redis hash {d: bytes, v: version}; version 0 means absent.
// Commit() applies a whole mutation in one Lua step: it first checks the
// idempotency record (same request: replay; same id, other content:
// REQUEST_REUSED), then every write's expected version (compare-and-set),
// and only then writes documents, index entries, list appends, the outbox
// event and the idempotency record. A rejected commit writes nothing.
//
// Keys are chosen by the caller and must share one hash tag, so that the
// step also works on Redis Cluster.
#ifndef LABSHARE_COMMON_DOC_STORE_H_
#define LABSHARE_COMMON_DOC_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/redis.h"

namespace labshare {

// How long a request_id's record (the request's fingerprint and first
// answer) is kept after the request was answered: types.proto's 7 days.
// DocStore's default, and notify's own request records (mail settings,
// Unsubscribe, ReplayDeadLetter).
inline constexpr absl::Duration kRequestRecordRetention = absl::Hours(24 * 7);

struct StoredDoc {
  std::string data;
  int64_t version = 0;
};

struct DocWrite {
  std::string key;
  std::string data;
  // 0: the document must not exist yet; n: it must be at version n.
  // It is written at expected_version + 1.
  int64_t expected_version = 0;
};

// Sorted-set entry: an index entry (score 0: members ordered by bytes), or,
// with a score, a member of a set ordered by that score (e.g. a due time in
// ms; ZADD moves a member already there to the new score).
struct IndexOp {
  std::string key;
  std::string member;
  bool remove = false;
  int64_t score = 0;  // written when added
};

struct ListAppend {
  std::string key;
  std::string value;
};

// A precondition the step checks and does not write: a document still at
// `expected` (its version; 0: absent), or, with `count`, a sorted set that
// still has `expected` members (with `min_score`, members of score
// min_score or more). Failing, the commit is a kConflict on `key`.
struct DocGuard {
  std::string key;
  int64_t expected = 0;
  bool count = false;
  std::optional<int64_t> min_score = std::nullopt;
};

// A counter in a hash field moved by the step (HINCRBY).
struct HashIncrement {
  std::string key;
  std::string field;
  int64_t delta = 0;
};

struct OutboxEvent {
  std::string type;
  std::string payload;
};

struct Mutation {
  std::string idempotency_key;  // empty: not idempotent
  std::string fingerprint;      // of the request, to detect reuse of an id
  std::string response;         // returned to a replay of the same request
  std::vector<DocWrite> writes;
  std::vector<IndexOp> index_ops;
  std::vector<ListAppend> appends;
  std::string outbox_key;  // stream; empty: no event
  std::string event_type;
  std::string event_payload;
  // Further events on outbox_key, after event_payload's, in this order.
  std::vector<OutboxEvent> more_events;
  std::vector<DocGuard> guards;
  // Applied after the writes, in this order.
  std::vector<HashIncrement> increments;
  // Documents among `writes` that may be their own request's record (field
  // f, as booking's create step writes them): one whose record holds no
  // answer yet (no field r) keeps its state before this write as that
  // answer, so a retry of the request still gets its first answer.
  std::vector<std::string> keep_first_answer;
};

struct CommitOutcome {
  enum class Kind { kApplied, kReplayed, kConflict, kRequestReused };
  Kind kind = Kind::kApplied;
  std::string response;      // kReplayed: the stored response
  std::string conflict_key;  // kConflict: the document whose version moved
  std::string stream_id;     // kApplied: outbox entry id
};

class DocStore {
 public:
  // pool must outlive the store. Thread-safe.
  explicit DocStore(RedisPool* pool, absl::Duration idempotency_ttl = kRequestRecordRetention);

  absl::StatusOr<std::optional<StoredDoc>> Get(const std::string& key) const;
  // One round trip.
  absl::StatusOr<std::vector<std::optional<StoredDoc>>> GetMany(
      const std::vector<std::string>& keys) const;
  // Members of an index after `after` (exclusive; empty: from the start).
  absl::StatusOr<std::vector<std::string>> IndexRange(const std::string& key,
                                                      const std::string& after,
                                                      int limit) const;
  // Elements [start, start+count) of a list.
  absl::StatusOr<std::vector<std::string>> ListRange(const std::string& key, int64_t start,
                                                     int64_t count) const;
  // The stored response for an idempotency key, if the fingerprint matches
  // (or `also_accepted`, when not empty: a record of an earlier fingerprint
  // form); FAILED_PRECONDITION REQUEST_ID_REUSED if it does not; nullopt if
  // none.
  absl::StatusOr<std::optional<std::string>> FindReplay(const std::string& idempotency_key,
                                                        const std::string& fingerprint,
                                                        const std::string& also_accepted = "") const;

  absl::StatusOr<CommitOutcome> Commit(const Mutation& mutation) const;

  RedisPool* pool() const { return pool_; }

 private:
  RedisPool* pool_;
  int64_t idempotency_ttl_seconds_;
};

// The error returned for a request id reused with other content.
absl::Status RequestIdReused();

}  // namespace labshare

#endif  // LABSHARE_COMMON_DOC_STORE_H_
