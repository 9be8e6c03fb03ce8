// Where billing keeps the ledger in Redis, and the one atomic step that
// changes it.
//
// Everything is under the hash tag {billing}: the ledger must move money
// between any two organisations atomically, so it is one slot (on Redis
// Cluster, one shard; see README for scaling).
//
//   {billing}:applied              HASH booking event id -> stream id: events applied
//   {billing}:charge:<id>          Charge document {d, v}
//   {billing}:posting:<id>         Posting document
//   {billing}:deposit:<id>         Deposit document (id: the lease id)
//   {billing}:pool:<id>            SubsidyPool document
//   {billing}:invoice:<id>         Invoice document; {billing}:invoiced HASH
//                                  "<payer>|<period>|<currency>" -> invoice id
//   {billing}:voided               HASH "<payer>|<period>|<currency>" -> the last voided
//                                  invoice not re-issued yet ('' once re-issued)
//   {billing}:settlement:<id>      Settlement document
//   {billing}:invperiod:<period>|<currency>
//                                  ZSET the invoices of one period and currency
//                                  ("<series>|<number, 10 digits>", as :invoices)
//   {billing}:invperiods           HASH "n" -> how many invoices those ZSETs hold
//   {billing}:charges, :postings, :pools, :invoices, :settlements
//                                  ZSET indexes ("<ns, 19 digits>|<id>", lex order;
//                                  "<ms, 15 digits>|<id>" before, migrated at start)
//   {billing}:bal                  HASH "<account>|<counterparty>|<currency>" -> balance
//                                  in minor units, debit minus credit
//   {billing}:acct:<account>       LIST "<ms>|<posting id>|<counterparty>|<signed>"
//                                  (postings are never back-dated: time order)
//   {billing}:cap:<pool>           HASH "<org>|<cap period start ms>" -> granted
//   {billing}:poolchg              HASH pool id -> postings other than top-ups that
//                                  changed its balance (part of its etag)
//   {billing}:clock                HASH "t" -> the latest stamp of a dated step
//                                  (ClockStamp: 20 digits, ordered as the times)
//   {billing}:seq                  HASH invoice series -> last number
//   {billing}:idem:<method>:<id>   idempotency record
//   {billing}:outbox               STREAM of BillingEvent
#ifndef LABSHARE_SERVICES_BILLING_BILLING_STORE_H_
#define LABSHARE_SERVICES_BILLING_BILLING_STORE_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/doc_store.h"
#include "common/redis.h"

namespace labshare::billing {

namespace keys {
std::string Applied();
std::string Doc(absl::string_view kind, absl::string_view id);  // "{billing}:<kind>:<id>"
std::string Index(absl::string_view kind);                      // "{billing}:<kind>s"
std::string Balances();
std::string Account(absl::string_view account);
std::string Cap(absl::string_view pool_id);
// Hash, field "<pool id>": the cap_period_kind a pool had before its first
// change of it (CapField: the kind its cap usage of the old form counts for).
std::string CapLegacyKinds();
// Hash, field "g": bumped by every step that creates or updates a subsidy
// pool (the pool set and terms); a charge step checks it.
std::string PoolGeneration();
// Hash, field "<pool id>": how many postings other than top-ups (subsidies,
// their reversals, adjustments) changed that pool's balance; bumped in the
// posting's own step. A pool's etag is its document version plus this.
std::string PoolChanges();
std::string Sequences();
// ZSET of the issued invoices of one period and currency (every state),
// members as in Index("invoice") ("<series>|<number, 10 digits>"): written
// in IssueInvoice's step, read by ComputeSettlement.
std::string PeriodInvoices(absl::string_view period, absl::string_view currency);
// Hash, field "n": how many invoices the PeriodInvoices sets hold in all,
// each counted once. Below the size of Index("invoice"), some invoice was
// issued without its period's entry (before the sets existed, or by a
// replica that did not write them): BillingManager::IndexPeriodInvoices
// adds the missing ones. Field "unreadable": index members the last such
// walk found without a readable document (damaged data, logged), counted
// with "n" so that they do not make every later call walk again.
std::string PeriodInvoiceCount();
std::string Invoiced();
std::string Voided();
std::string Idempotency(absl::string_view method, absl::string_view request_id);
std::string Outbox();
// "<unix nanoseconds, 19 digits>|<id>": the members of the indexes listed
// by create time (postings, charges, deposits, payments; settlements after
// "<period>|"), whose text order is time order to the nanosecond, then id.
std::string IndexMember(absl::Time t, absl::string_view id);
// The milliseconds of an index member's time field of the earlier form
// (15 digits of unix milliseconds), nullopt for any other field.
// BillingManager::MigrateIndexMembers rewrites such members.
std::optional<int64_t> LegacyIndexMillis(absl::string_view time_field);
// Hash, field "t": the stamp of the latest dated step (LedgerStep::stamp).
std::string Clock();
}  // namespace keys

// A step's time as {billing}:clock holds it: 20 decimal digits whose text
// order is the order of the times (the nanoseconds since the epoch, sign
// bit flipped), so the step's Lua compares them as strings, exactly.
std::string ClockStamp(absl::Time t);
// The time of a ClockStamp; nullopt when `stamp` is not one.
std::optional<absl::Time> ParseClockStamp(absl::string_view stamp);

// The largest magnitude any ledger counter (balance, cap usage) may reach:
// 2^53 - 1, so that the step's Lua arithmetic is exact. A step that would
// take a counter beyond it writes nothing and fails with INVALID_ARGUMENT
// (INVALID_FIELD on LedgerStep::limit_field).
inline constexpr int64_t kMaxCounter = (int64_t{1} << 53) - 1;

// One atomic change of the ledger. Checks run first; if any fails nothing is
// written: the applied event, the idempotency record, the field, sum and
// version checks, the type of every key written, and every counter's range after all
// of the step's increments. Then every write, in order.
struct LedgerStep {
  // Booking event applied once: when set and already in {billing}:applied,
  // the step answers kAlreadyApplied and writes nothing.
  std::string applied_event_id;
  std::string applied_stream_id;
  // Idempotent RPCs.
  std::string idempotency_key;
  std::string fingerprint;
  std::string response;

  // Checks.
  struct FieldIs {  // HGET key field (absent: "0") == value
    std::string key, field, value;
  };
  std::vector<FieldIs> field_checks;
  // The sum of hash fields (each absent: 0, each an integer) is at most
  // `max`: a bound that still holds after a change that only lowered the
  // sum (a charge raising what a payer owes the payee leaves a payment's
  // bound valid, where an exact FieldIs would make the step stale).
  struct SumAtMost {
    std::string key;
    std::vector<std::string> fields;  // no field contains a newline
    int64_t max = 0;
  };
  std::vector<SumAtMost> sum_checks;
  struct VersionIs {  // a document's version (0: absent)
    std::string key;
    int64_t version = 0;
  };
  std::vector<VersionIs> version_checks;

  // Writes.
  struct Put {  // a document, at version + 1 of its check (or 1)
    std::string key, data;
    int64_t version = 1;
  };
  std::vector<Put> puts;
  struct Incr {
    std::string key, field;
    int64_t delta = 0;
  };
  std::vector<Incr> incrs;
  struct HashSet {
    std::string key, field, value;
  };
  std::vector<HashSet> hash_sets;
  struct IndexAdd {
    std::string key, member;
  };
  std::vector<IndexAdd> index_adds;
  std::vector<IndexAdd> index_removes;
  struct Append {
    std::string key, value;
  };
  std::vector<Append> appends;
  std::vector<std::string> events;  // serialized BillingEvent, in order

  // The request field blamed when a counter would leave +-kMaxCounter.
  std::string limit_field = "amount";

  // The step's time, for a step that writes what is dated and listed in
  // time order (postings, charges, payments, deposits, settlements: their
  // create_time, their index members, the account lines). Commit order is
  // time order across the ledger: the step is refused (kStale, nothing
  // written) when a step committed before it was stamped later, and once
  // written its stamp is the ledger's latest ({billing}:clock). So a reader
  // that has seen an entry of time T never later finds one dated before T
  // (a replica whose clock is behind, or a step built before another's
  // commit, takes a new stamp, BillingManager::StampNow, and retries).
  std::optional<absl::Time> stamp;
};

struct StepResult {
  enum class Kind { kApplied, kAlreadyApplied, kReplayed, kRequestReused, kStale };
  Kind kind = Kind::kApplied;
  std::string response;  // kReplayed
};

class BillingStore {
 public:
  explicit BillingStore(RedisPool* pool) : pool_(pool), docs_(pool) {}

  absl::StatusOr<StepResult> Apply(const LedgerStep& step) const;
  // Several steps in one Lua call, in order, each as Apply would (its own
  // checks before its own writes, so each is all or nothing). Stops after
  // the first step that answers neither kApplied nor kAlreadyApplied: the
  // answer holds one result per step that ran (the last one may be that
  // step's kStale or error); the steps after it were not tried.
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> ApplyMany(const std::vector<LedgerStep>& steps) const;

  const DocStore& docs() const { return docs_; }
  RedisPool* pool() const { return pool_; }
  // Hash fields, absent as 0.
  absl::StatusOr<std::vector<int64_t>> Counters(const std::string& key,
                                                const std::vector<std::string>& fields) const;
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> HashAll(const std::string& key) const;
  absl::StatusOr<std::vector<std::string>> List(const std::string& key) const;
  absl::StatusOr<bool> EventApplied(const std::string& event_id) const;
  // The latest stamp of a dated step this process wrote or was refused by
  // ({billing}:clock as last seen; InfinitePast before any): a new step is
  // stamped at or after it.
  absl::Time ClockFloor() const;

 private:
  RedisPool* pool_;
  DocStore docs_;
  // ClockFloor in unix nanoseconds; only rises.
  mutable std::atomic<int64_t> clock_floor_nanos_{std::numeric_limits<int64_t>::min()};
};

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_BILLING_STORE_H_
