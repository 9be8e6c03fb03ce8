// The audit trail of the usage service: every event of every service,
// appended exactly once to a SHA-256 hash chain in Redis (AUDIT_V1, see
// AuditEntry in proto/labshare/usage/v1/usage.proto).
//
// Redis layout. The chain is one sequence with one head, stored in segments
// of at most S entries (AuditChainOptions::segment_entries, default 2^20),
// each under its own hash tag, so that the trail spreads over every master
// of a Redis Cluster while every append stays one atomic step in one slot.
// Segment 0 is under {usage} with the key names the trail always had (a
// chain of fewer than S entries looks exactly as before segments); segment
// k >= 1 is under {au:<k>} with the same key kinds ("<seg>" below is
// "{usage}" for segment 0, "{au:<k>}" for k >= 1):
//
//   <seg>:audit:head                HASH  seq   -> sequence of the newest entry
//                                         hash  -> its hash (32 raw bytes)
//                                         at_s, at_n -> its append_time
//                                         sig   -> signature of (seq, hash) by
//                                                  the usage service's key
//                                                  (AuditHeadSigningInput)
//                                         kid   -> that key's id
//                                         first -> the segment's first
//                                                  sequence (k >= 1; segment 0
//                                                  starts at 1)
//                                         closed -> "1" once the segment is
//                                                  full: no step appends to it
//                                                  any more
//                                   (segment 0's absent: empty chain, sequence
//                                   0; sig and kid absent when the chain is
//                                   unsigned). A segment is opened with a copy
//                                   of the previous segment's final head (seq,
//                                   hash, at_s, at_n, sig, kid: the chain's
//                                   head then) and first = seq + 1. The
//                                   chain's head is the newest segment's.
//   <seg>:audit:entry:<seq>         STRING serialized AuditEntry, FULL view
//                                   (payload included, exactly the bytes of the
//                                   source's outbox entry), <seq> in decimal
//   <seg>:audit:applied             HASH  "<source_service>|<event_id>" -> seq:
//                                   the apply-once markers of the segment's
//                                   entries (never expire; removed only with
//                                   archived entries)
//   <seg>:audit:idx:event:<event_id>     ZSET of sequences (member = score =
//   <seg>:audit:idx:actor:<actor>        sequence): secondary indexes for the
//   <seg>:audit:idx:request:<request_id> exact-match filters of
//   <seg>:audit:idx:resource:<name>      ListAuditEntries, per segment
//   {usage}:audit:segments          ZSET  member k (decimal), score: segment
//                                   k's first sequence, k >= 1 (absent while
//                                   the chain has one segment). Written after
//                                   the segment's head (ZADD NX), so it may
//                                   lag one segment behind after a crash:
//                                   readers probe <seg k+1>:audit:head forward
//                                   from its last member, and the next append
//                                   repairs it. Segment k ends where segment
//                                   k + 1 starts (segment 0 of a chain older
//                                   than segments may hold more than S).
//   {usage}:audit:entry:<n + 1>     "closed", written when segment 0 is closed
//                                   at sequence n: a replica of a version
//                                   without segments then fails its append
//                                   there (AUDIT_CORRUPTED, nothing written)
//                                   instead of forking the chain in segment 0
//   {usage}:audit:base              HASH  seq, hash: the last entry archived to
//                                   a file (services/archive, labshare-archive)
//                                   and its hash; entries up to seq, their
//                                   markers and index members are gone from
//                                   Redis (segment heads stay). Absent:
//                                   nothing archived (0). Verify, List and
//                                   exports start after it and link the first
//                                   remaining entry to it.
//
// Segments are storage, not format: the entries, their hashes, the signed
// head, the JSONL export and deploy/verify_audit.py are those of one chain.
// Reads map each sequence to its segment through the directory (cached: it
// only grows) and the probe.
//
// A new segment: when the current segment k holds S entries (counted from
// its first sequence) or is closed, the appender (1) closes k (one step in
// k's slot: a compare-and-set on its head that sets "closed"), (2) opens
// k + 1 (one step in {au:<k+1>}: its head created only if absent, from k's
// final head), (3) adds k + 1 to the directory (ZADD NX in {usage}), and then
// appends in k + 1 as always. Each step is idempotent, and a crash between
// them is repaired by the next appender (a closed segment without a
// successor is opened; a successor missing from the directory is found by
// the probe and added). Two replicas opening k + 1 at once: one creates the
// head, the other finds it and goes on. A batch reaching the end of a
// segment is committed in one step per segment.
//
// Exactly once across segments: an append step checks the event's marker
// in its own segment atomically. The earlier segments are closed, hence
// immutable, and their markers are read before the step: the previous
// segment's always, and those of every older segment whose last
// append_time is at or after the event's header event_time minus
// AuditChainOptions::marker_skew (1 h; an event without event_time checks
// every segment). So an event is appended at most once provided its first
// append came no earlier than marker_skew before its event_time (the usage
// service's clock not behind the source's by more than that; redeliveries
// carry the same header). Markers removed by labshare-archive are covered by
// its own rule (every consumer acknowledged the archived year).
//
// Rolling upgrade from a version without segments: nothing is rewritten, and
// segment 0 keeps its entries; with an old chain of S entries or more the
// first append of this version closes segment 0 (see the "closed" entry
// above, which stops old replicas from appending there).
//
// Appending (SHA-256 is computed here, Redis' Lua has none): read the head
// and the marker; compute hash(n + 1) over the new entry; then one Lua step
// answers "already appended" if the marker exists, answers "stale" if the
// head is no longer (n, hash(n)) (compare-and-set: another replica appended
// first), and otherwise writes the entry, the marker, the indexes and the new
// head together. A stale step writes nothing and the append is retried with
// the new head. Appends from one AuditChain object are serialized by a local
// mutex, so only different processes (replicas) race through the CAS.
//
// The signed head: with a signing key (AuditChainOptions::signing_key, the
// usage service's --audit_signing_key_file), every append signs the new head
// (sequence, hash) and stores the signature in the same compare-and-set step.
// Someone who can write to Redis can recompute a consistent hash chain, but
// not the head's signature: Verify (to the head) and deploy/verify_audit.py
// --public_key report the rewrite (BreakKind HEAD_SIGNATURE_INVALID). What a
// signature cannot show is a chain cut back to an earlier head whose
// signature the writer kept: anchors (AuditAnchor) are for that. Only the
// head is signed: after a key rotation (or on a chain written unsigned) the
// next append signs with the new key.
//
// Thread-safe. The RPC layer (roles, request_id idempotency, publishing
// AuditVerificationRun / ReportExported) is the service's job, not this
// class's.
#ifndef LABSHARE_SERVICES_USAGE_AUDIT_CHAIN_H_
#define LABSHARE_SERVICES_USAGE_AUDIT_CHAIN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include <openssl/evp.h>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/page_token.h"
#include "common/redis.h"
#include "labshare/usage/v1/usage.pb.h"

namespace labshare::usage {

namespace audit_keys {
// Segment 0's keys (the names of the trail before segments).
std::string Head();                                  // {usage}:audit:head
std::string Entry(int64_t sequence);                 // {usage}:audit:entry:<seq>
std::string Applied();                               // {usage}:audit:applied
std::string Base();                                  // {usage}:audit:base
std::string AppliedField(absl::string_view source_service, absl::string_view event_id);
// kind: "event", "actor", "request", "resource".
std::string Index(absl::string_view kind, absl::string_view value);
// Segment `segment`'s keys: segment 0's above for 0, "{au:<k>}:audit:..." for k >= 1.
std::string Head(int64_t segment);
std::string Entry(int64_t segment, int64_t sequence);
std::string Applied(int64_t segment);
std::string Index(int64_t segment, absl::string_view kind, absl::string_view value);
std::string Segments();                              // {usage}:audit:segments
}  // namespace audit_keys

// Where the segments of the chain start (audit_chain.h's layout), as known
// when a head was read: every sequence up to that head maps to its segment.
struct AuditSegmentView {
  struct Segment {
    int64_t number = 0;  // k
    int64_t first = 1;   // its first sequence
  };
  std::vector<Segment> segments;  // ascending; segments[0] is segment 0 (first 1)
  // The segment holding `sequence` (the last one starting at or before it).
  int64_t SegmentOf(int64_t sequence) const;
};

// "LABSHARE-AUDIT-V1".
extern const char kAuditHashDomain[];

// Incremental SHA-256 through OpenSSL's EVP interface (the audit chain's
// hash, and the checksums of exported files).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }
  // The 32-byte digest; ends the hash.
  std::string Final() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, digest, &len);
    return std::string(reinterpret_cast<const char*>(digest), len);
  }
  std::string HexDigest() { return absl::BytesToHexString(Final()); }

 private:
  EVP_MD_CTX* ctx_;
};

// The exact byte string AUDIT_V1 hashes for `entry` (its sequence,
// source_service, event_id, event_type, payload_type, event_time,
// append_time, payload and previous_hash; previous_hash is used as stored,
// whatever its length). Other fields are ignored.
std::string AuditHashInput(const labshare::usage::v1::AuditEntry& entry);
// SHA-256 of AuditHashInput: 32 raw bytes.
std::string AuditHashV1(const labshare::usage::v1::AuditEntry& entry);

// A singleton's name (AIP-156): a well-formed resource name
// (ValidResourceName) followed by "/{singleton}", a lowerCamelCase collection
// id, e.g. "users/u1/notificationSettings"; at most 512 bytes. Indexed with
// its parent (AuditEntry.resources) and accepted as ListAuditEntries'
// resource.
bool ValidSingletonName(absl::string_view name);

// What an event says about itself, decoded generically from its payload.
struct DecodedEvent {
  std::string event_id;
  std::string event_type;  // full name of the message set in oneof "payload"; "" if none
  google::protobuf::Timestamp event_time;  // (0, 0) when the header has none or an invalid one
  std::string actor;
  std::string actor_organization;
  std::string request_id;
  std::vector<std::string> resources;  // distinct, in order of discovery
  // Name-like strings that are not well-formed names (common/resource_name.h),
  // including a malformed actor or actor_organization (then left empty):
  // never indexed or copied into the entry.
  std::vector<std::string> rejected_names;
};

// Parses `payload` as the message named `payload_type` (any message compiled
// into this binary; all LabShare event types are), and reads its field 1
// "header" (labshare.type.v1.EventHeader) and the oneof "payload".
// resources (best effort): every string value that looks like a resource
// name ("collection/id", possibly nested "a/1/b/2") in singular or repeated
// string fields of the event message and of its direct submessages (header
// excluded), e.g. booking.name, booking.instrument, booking.user, and that is
// a well-formed name (ValidResourceName: no "..", no "*"); a singleton's
// name (ValidSingletonName, e.g. "users/u1/notificationSettings") is listed
// with its parent ("users/u1") after it; the others go to rejected_names.
// actor and actor_organization likewise.
// INVALID_ARGUMENT, reason UNDECODABLE_EVENT: unknown type, bytes that do not
// parse, no "header" field of type EventHeader, or an empty event_id.
absl::StatusOr<DecodedEvent> DecodeEvent(absl::string_view payload_type,
                                         absl::string_view payload);

// The bytes signed for a head: "LABSHARE-AUDIT-HEAD-V1", the sequence as
// 8 bytes big-endian, then the 32-byte hash.
std::string AuditHeadSigningInput(int64_t sequence, absl::string_view hash);

// The usage service's audit key: an Ed25519 or ECDSA P-256 key (OpenSSL EVP).
// Ed25519 signs the input itself (64-byte signature); ECDSA signs its
// SHA-256 (DER signature). Thread-safe after construction.
class AuditSigningKey {
 public:
  // From a PKCS#8 / traditional private key PEM. INVALID_ARGUMENT, reason
  // INVALID_AUDIT_KEY, for anything else (other key types, RSA, P-384...).
  static absl::StatusOr<std::shared_ptr<const AuditSigningKey>> FromPrivateKeyPem(absl::string_view pem);
  // From a file, read through ReadSecretFile (0600 enforced; its reasons).
  static absl::StatusOr<std::shared_ptr<const AuditSigningKey>> FromPrivateKeyFile(const std::string& path);
  // A public key PEM (SubjectPublicKeyInfo): verifies only.
  static absl::StatusOr<std::shared_ptr<const AuditSigningKey>> FromPublicKeyPem(absl::string_view pem);
  ~AuditSigningKey();
  AuditSigningKey(const AuditSigningKey&) = delete;
  AuditSigningKey& operator=(const AuditSigningKey&) = delete;

  bool can_sign() const { return can_sign_; }
  // Lowercase hex SHA-256 of the public key's DER SubjectPublicKeyInfo.
  const std::string& key_id() const { return key_id_; }
  // The public key as PEM (for verifiers).
  std::string PublicKeyPem() const;
  // INTERNAL (AUDIT_SIGNING_FAILED) when the key cannot sign.
  absl::StatusOr<std::string> SignHead(int64_t sequence, absl::string_view hash) const;
  bool VerifyHead(int64_t sequence, absl::string_view hash, absl::string_view signature) const;

 private:
  AuditSigningKey(EVP_PKEY* key, bool can_sign);
  EVP_PKEY* key_;
  bool can_sign_;
  bool ed25519_;
  std::string key_id_;
};

// The source service of an outbox stream: "{inventory}:outbox" -> "inventory",
// "{bk:7}:outbox" and "{booking}:outbox" -> "booking", "{billing}:outbox" ->
// "billing", "{usage}:outbox" -> "usage"; "" for anything else.
std::string AuditSourceForStream(absl::string_view stream);

struct AuditChainOptions {
  // Stamps append_time and verify_time; must outlive the chain.
  // nullptr: a SystemClock owned by the chain.
  const Clock* clock = nullptr;
  // Attempts of the read-head / compare-and-set cycle before giving up with
  // ABORTED (reason AUDIT_CONTENTION); each failed attempt means another
  // replica appended.
  int max_append_attempts = 1000;
  // Entries read per Redis round trip by List and Verify.
  int batch_size = 256;
  // Entries read per round trip by an export. Smaller: an export whose
  // client reads slowly holds one such batch (and the chunk being written)
  // while it waits, and hundreds of exports may be waiting.
  int export_batch_size = 32;
  // At most this many entries are examined by one List call; a page that is
  // not full when the budget runs out still carries a next_page_token.
  int list_scan_budget = 5000;
  // Signs every new head and checks the head's signature in Verify and
  // exports it. nullptr: an unsigned chain (tests that do not care; the
  // service refuses to start so unless given --audit_unsigned).
  std::shared_ptr<const AuditSigningKey> signing_key;
  // Entries per segment (S, audit_chain.h's layout): a new segment starts
  // when the current one holds this many. Every replica should use the same
  // value (a smaller one elsewhere only makes segments shorter: a closed
  // segment takes no more entries whatever S a replica has).
  int64_t segment_entries = int64_t{1} << 20;
  // Earlier segments whose markers are checked before an append: the
  // previous one, and every older one whose last append_time is at or after
  // the event's event_time minus this.
  absl::Duration marker_skew = absl::Hours(1);
  // Tests only: called between reading the head and the compare-and-set
  // step, to interleave another appender deterministically.
  std::function<void()> before_commit_for_testing;
  // Tests only: called at the steps of a segment change: "close" before
  // closing segment `segment`, "open" before opening it, "opened" after its
  // head was written and before the directory records it. An error stops
  // the append there with that status (a crash between two steps).
  std::function<absl::Status(absl::string_view step, int64_t segment)> segment_step_for_testing;
  // Tests only: called by List, Verify and exports after they read the
  // archived base and before they read entries, to interleave
  // labshare-archive deterministically.
  std::function<void()> after_base_for_testing;
};

struct AppendResult {
  // False: (source_service, event_id) was appended before (a redelivery);
  // nothing was written and `entry` is the one stored then.
  bool appended = false;
  // FULL view.
  labshare::usage::v1::AuditEntry entry;
};

// Counts and fingerprint of a JSONL export (AuditExportFormat in usage.proto).
struct AuditExportSummary {
  int64_t start_sequence = 0;
  int64_t end_sequence = 0;   // exclusive
  int64_t entries = 0;        // entry lines written (end - start unless entries are missing)
  int64_t total_bytes = 0;    // of the whole file
  std::string sha256_hex;     // of the whole file, lowercase
  int64_t last_sequence = 0;  // end - 1
  std::string last_hash;      // stored hash at last_sequence, 32 raw bytes
  // The signed head, when the export ends at the head and it is signed.
  std::string head_signature;
  std::string head_key_id;
};

class AuditChain {
 public:
  // pool must outlive the chain.
  // page_tokens: see page_token.h (main derives it from the token key;
  // tests pass a fixed key).
  AuditChain(RedisPool* pool, PageTokenCodec page_tokens, AuditChainOptions options = {});
  AuditChain(const AuditChain&) = delete;
  AuditChain& operator=(const AuditChain&) = delete;

  // Appends one outbox event of `source_service` ("inventory", "booking",
  // "billing", "usage": lowercase letters, digits, '_' or '-') exactly once,
  // keyed by (source_service, header.event_id). event.type is the payload's
  // full message name; event.payload is stored and hashed as given.
  // Errors: INVALID_ARGUMENT (INVALID_FIELD for source_service;
  // UNDECODABLE_EVENT, see DecodeEvent: the event can never be appended;
  // ApplyEvent logs and acknowledges it, usage_events.proto), ABORTED (AUDIT_CONTENTION), INTERNAL
  // (STORAGE_ERROR, AUDIT_CORRUPTED: an entry exists beyond the head),
  // UNAVAILABLE (STORAGE_UNAVAILABLE; retrying is safe).
  absl::StatusOr<AppendResult> Append(absl::string_view source_service,
                                      const StreamEvent& event);

  // Append for several events of `source_service` at once: one result per
  // event, in order. The new entries are chained in one Lua step (one
  // compare-and-set of the head, retried as a whole when another replica
  // appended first) and are exactly the entries Append one by one would
  // write: the same sequences, append times taken per entry, hashes, and the
  // head signed once, for the last entry. A batch that reaches the end of a
  // segment is committed in one such step per segment (each all or
  // nothing, each signing its last entry). A repeated event (appended
  // before, or twice in the batch) answers appended = false with the stored
  // entry; an undecodable event answers its error and takes no sequence. A
  // storage error or corruption before a step's commit answers every
  // decodable event not committed by an earlier step of the batch with it;
  // nothing of theirs is then written. Once a step is committed its new
  // entries answer OK; failing to read the stored entry of an event
  // appended before answers only that event with the error.
  std::vector<absl::StatusOr<AppendResult>> AppendBatch(absl::string_view source_service,
                                                        const std::vector<StreamEvent>& events);

  // The anchor recorded at the last archival cut (sequence 0, no hash: none).
  absl::StatusOr<labshare::usage::v1::AuditAnchor> ArchivedBase() const;

  // The newest entry; sequence 0 and no hash for an empty chain.
  absl::StatusOr<labshare::usage::v1::AuditChainHead> Head() const;

  // Where the segments start, as of a head read now (labshare-archive).
  absl::StatusOr<AuditSegmentView> Segments() const;

  // One stored entry (FULL view), or nullopt if there is none at `sequence`.
  absl::StatusOr<std::optional<labshare::usage::v1::AuditEntry>> Get(int64_t sequence) const;

  // ListAuditEntries without the role check. Entries beyond the head read at
  // the start of the call are not returned. Filters by event_id, request_id,
  // resource or actor go through an index; the others are applied to the
  // entries read. Errors: INVALID_ARGUMENT (INVALID_NAME: resource, actor
  // or actor_organization not a well-formed name; INVALID_FIELD: negative
  // sequences or page_size, end_sequence <= start_sequence when both set, an
  // append/event interval whose end is not after its start;
  // INVALID_PAGE_TOKEN); INTERNAL (AUDIT_CORRUPTED: a sequence the page
  // reaches, after the archived ones and up to that head, has no entry, one
  // that does not parse or one of another sequence, whatever the filters; a
  // full page stops before it with a next_page_token).
  // Page tokens are bound to `caller`.
  absl::StatusOr<labshare::usage::v1::ListAuditEntriesResponse> List(
      const Principal& caller, const labshare::usage::v1::ListAuditEntriesRequest& request) const;

  // VerifyAuditChain without the role check, request_id handling and event:
  // start 0 means the first entry still in Redis (1, or ArchivedBase + 1,
  // whose link is checked against the base's hash); a start at or before
  // the archived base is OUT_OF_RANGE (SEQUENCE_OUT_OF_RANGE); end 0 means head + 1, and an end beyond head + 1 is
  // clamped to it (the response says which range was verified). For the
  // range's first entry n > 1, the link is checked against the stored hash
  // of entry n - 1 (trusted, not recomputed; skipped if it is missing).
  // Per entry, in order: SEQUENCE_GAP, UNKNOWN_ALGORITHM, HASH_MISMATCH,
  // LINK_MISMATCH. A range that ends at the head is then tied to the head:
  // HEAD_SIGNATURE_INVALID at the head's sequence when the head's hash is
  // not the last entry's (checked on an unsigned chain too) or, with a
  // signing key, its signature is missing or not valid under the key.
  // Anchors are checked, in sequence order, only when the range is intact.
  // entries_checked / anchors_checked count what passed before the first
  // break. `deadline` (real time, e.g. the gRPC caller's) is checked before
  // each batch of entries or anchors is read: DEADLINE_EXCEEDED (reason
  // DEADLINE_EXCEEDED) once it has passed.
  // Errors, in this order: INVALID_ARGUMENT (INVALID_FIELD: negative
  // sequences, anchor sequence < 1 or hash not 32 bytes, end <= start when
  // both are nonzero); OUT_OF_RANGE (SEQUENCE_OUT_OF_RANGE: a start at or before the
  // archived base, then a start beyond the head, including start 0 on a
  // chain with no entry after the base); INVALID_FIELD (start 0 and an end at
  // or before the first stored entry); SEQUENCE_OUT_OF_RANGE (an anchor
  // beyond the head or before the archived base). Entries labshare-archive
  // removes while the call runs are no break: the check starts again on
  // what is then stored (the errors above as for a call made then).
  absl::StatusOr<labshare::usage::v1::VerifyAuditChainResponse> Verify(
      int64_t start_sequence, int64_t end_sequence,
      const std::vector<labshare::usage::v1::AuditAnchor>& anchors,
      absl::Time deadline = absl::InfiniteFuture()) const;
  absl::StatusOr<labshare::usage::v1::VerifyAuditChainResponse> Verify(
      const labshare::usage::v1::VerifyAuditChainRequest& request,
      absl::Time deadline = absl::InfiniteFuture()) const;

  // Writes [start, end) as AUDIT_EXPORT_FORMAT_JSONL (usage.proto,
  // AuditExportFormat): header line, one line per entry, trailer line. The
  // range defaults and validation are Verify's; the end is pinned before the
  // first line. `sink` receives consecutive pieces of the file, each made of
  // whole lines (at most about chunk_bytes unless one line is longer); a
  // failing sink stops the export with its status. Entries are written as
  // stored; a missing or unreadable entry of the range stops the export with
  // INTERNAL (AUDIT_CORRUPTED), as a missing link entry does; unless
  // labshare-archive removed it while the export ran: then the export starts
  // again on what is stored if nothing reached `sink` yet, and otherwise
  // stops with OUT_OF_RANGE (SEQUENCE_OUT_OF_RANGE, metadata head_sequence
  // and first_sequence), as an export started then would.
  absl::StatusOr<AuditExportSummary> ExportJsonl(
      int64_t start_sequence, int64_t end_sequence,
      const std::function<absl::Status(absl::string_view piece)>& sink,
      size_t chunk_bytes = 64 * 1024) const;
  // The whole file in memory (tests, small ranges, the CLI).
  absl::StatusOr<std::string> ExportJsonlString(int64_t start_sequence,
                                                int64_t end_sequence) const;
  // ExportAuditTrail without the role check and event: the same file as
  // ExportAuditTrailResponse messages (data, offset; the last message also
  // carries the trailer and last_entry). INVALID_ARGUMENT (INVALID_FIELD)
  // also when format is unspecified. `summary`, when given, receives the
  // range exported before the last message is sent (so that `send` can
  // record the export before the client gets the trailer). Each piece is
  // held back until the next one: entries archived meanwhile make the
  // export start again while no message has gone to `send`, and end it
  // with SEQUENCE_OUT_OF_RANGE after (as ExportJsonl, counting messages
  // sent, not pieces made). `validated`, when given, is called once, when
  // the request is valid and its range resolved and before any entry is
  // read; an error from it ends the export (the service takes its export
  // slot there, EXPORT_LIMIT).
  absl::Status ExportAuditTrail(
      const labshare::usage::v1::ExportAuditTrailRequest& request,
      const std::function<absl::Status(const labshare::usage::v1::ExportAuditTrailResponse&)>& send,
      size_t chunk_bytes = 64 * 1024, AuditExportSummary* summary = nullptr,
      const std::function<absl::Status()>& validated = nullptr) const;

  RedisPool* pool() const { return pool_; }

 private:
  struct Range {
    int64_t start = 0;
    int64_t end = 0;  // exclusive
    labshare::usage::v1::AuditChainHead head;
    labshare::usage::v1::AuditAnchor base;
    AuditSegmentView view;  // as of `head`
  };
  // A segment as this object knows it: where it starts and, once it is
  // closed (then immutable), the append_time of its last entry.
  struct KnownSegment {
    int64_t number = 0;
    int64_t first = 1;
    std::optional<absl::Time> last_append;
  };
  struct HeadRead {
    labshare::usage::v1::AuditChainHead head;
    AuditSegmentView view;
  };
  // The chain's head: the newest segment's, found from the known segments
  // by probing the next segment's head.
  absl::StatusOr<HeadRead> ReadHead() const;
  // The segments known so far (the directory, loaded when none is known).
  absl::StatusOr<std::vector<KnownSegment>> KnownSegments() const;
  void LearnSegment(int64_t number, int64_t first) const;
  void ForgetSegments() const;
  static AuditSegmentView ViewOf(const std::vector<KnownSegment>& known);
  // Where an append goes now: an open segment with room, its head, and the
  // markers (given fields) found in it or in the earlier segments that could
  // hold them. Closes a full segment and opens the next one on the way.
  struct Target {
    int64_t segment = 0;
    int64_t head_seq = 0;
    std::string head_hash;
    int64_t room = 0;  // entries the segment still takes
    std::vector<std::optional<int64_t>> found;  // per marker: its sequence
  };
  absl::StatusOr<Target> PrepareTarget(const std::vector<std::string>& markers,
                                       std::optional<absl::Time> earliest_event);
  // Closes segment k at (seq, hash); *stale when its head moved.
  absl::Status CloseSegment(int64_t segment, int64_t seq, const std::string& hash, bool* stale);
  absl::StatusOr<Range> ResolveRange(int64_t start_sequence, int64_t end_sequence) const;
  // Whether `sequence`, missing or unreadable, was removed by labshare-archive
  // after `base` was read (the stored base has moved to it or past it);
  // `base` is updated to the stored one.
  absl::StatusOr<bool> ArchivedSince(int64_t sequence, labshare::usage::v1::AuditAnchor* base) const;
  // One pass of Verify; *archived: an entry it needed was archived meanwhile
  // (the answer is then meaningless: start again).
  absl::StatusOr<labshare::usage::v1::VerifyAuditChainResponse> VerifyOnce(
      int64_t start_sequence, int64_t end_sequence,
      const std::vector<labshare::usage::v1::AuditAnchor>& anchors, absl::Time deadline,
      bool* archived) const;
  // One pass of ExportJsonl; *archived as for VerifyOnce, set only while
  // nothing has reached the reader. `sink` answers whether something has
  // by now (this piece or an earlier one: a sink may hold a piece back).
  // `resolved`, when given, is called right after the range is resolved.
  absl::StatusOr<AuditExportSummary> ExportJsonlOnce(
      int64_t start_sequence, int64_t end_sequence,
      const std::function<absl::StatusOr<bool>(absl::string_view piece)>& sink, size_t chunk_bytes,
      bool* archived, const std::function<absl::Status()>& resolved = nullptr) const;
  // Entries at the given sequences, nullopt where none is stored (or it does
  // not parse).
  absl::StatusOr<std::vector<std::optional<labshare::usage::v1::AuditEntry>>> GetMany(
      const AuditSegmentView& view, const std::vector<int64_t>& sequences) const;
  // Members of the index (kind, value) in [lo, hi), ascending or
  // descending, at most `want`, across the segments of `view`.
  absl::StatusOr<std::vector<int64_t>> IndexMembers(const AuditSegmentView& view, absl::string_view kind,
                                                    absl::string_view value, int64_t lo, int64_t hi,
                                                    bool descending, int want) const;
  absl::StatusOr<AppendResult> AppendOnce(absl::string_view source_service,
                                          const StreamEvent& event, const DecodedEvent& decoded,
                                          bool* stale);

  // One step of AppendBatch over the events not `done` yet: commits what
  // fits in the current segment and marks what it answered done.
  absl::Status AppendBatchOnce(absl::string_view source_service, const std::vector<StreamEvent>& events,
                               const std::vector<std::optional<DecodedEvent>>& decoded,
                               std::vector<absl::StatusOr<AppendResult>>* out, std::vector<bool>* done,
                               bool* stale);

  RedisPool* pool_;
  PageTokenCodec page_tokens_;
  AuditChainOptions options_;
  SystemClock system_clock_;
  const Clock* clock_;
  absl::Mutex append_mu_;
  mutable absl::Mutex segments_mu_;
  mutable std::vector<KnownSegment> segments_ ABSL_GUARDED_BY(segments_mu_);
};

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_AUDIT_CHAIN_H_
