// Lists across instruments: ListBookings, ListLeases and ListServiceOrders
// with every filter optional, scoped to the caller, ordered and paged.
//
// Indexes. A booking, lease or order lives in its instrument's partition
// {bk:P}, and the one Lua step that creates it runs there; so the listing
// indexes it writes in that same step are per partition too:
//   bookings {bk:P}:ls:b:all, :ls:b:user:<user>, :ls:b:org:<org> for each of
//            the instrument's owner and operator (at booking time, then
//            re-filed on each operator change), the payer
//            and every cost-share participant. Score: reserved start (ms),
//            member: the id; Redis orders ties by member, i.e. by name.
//   leases   {bk:P}:ls:l:all, :ls:l:org:<org> (owner, operator, lessee).
//            Score: term start. (A lease's booking is in the booking
//            indexes as well.)
//   orders   {bk:P}:ls:o:all, :ls:o:org:<org> (owner, operator, client),
//            :ls:o:instr:<instrument>; DocStore's shape (members
//            "<create ms, 15 digits>|<id>" at score 0, so by create time).
// and, by instrument, the existing {bk:P}:bystart:<instrument>.
// The "org" index is exactly what FACILITY_STAFF of that organisation may
// see, and a superset of what its billing admin may; "user" is a lab user's.
//
// Reading. A page reads one index name in all 16 partitions and merges
// them (k-way by (ms, id)): each partition answers at most the wanted count
// after the cursor, so the merged head is exact. Which index name: among
// those that hold every possible answer (one per filter that names an
// instrument, user or organisation, and the caller's scope), the one with
// the fewest entries (ZCARD). Index membership never changes after creation
// (user, payer, owner and start are fixed), except the operator's "org"
// entries, which RefileOperator moves when the instrument's operator
// changes (so the "org" index may lag the operator: staff scope is checked
// on every document, OwnsOrOperates); state and end do change, so state,
// time range and the rest are checked on the documents read, and a call
// reads at most kListScanBudget index entries: a page may be short, with a
// token to go on. A time range bounds the scores to [range start - the
// longest span of any booking (keys::ListSpan), range end).
//
// The alternative, indexes per (scope, state) kept in step by every
// transition, would make every update step write index entries too; the
// filters the contract names are few and the scan is bounded, so no.
#ifndef LABSHARE_SERVICES_BOOKING_BOOKING_LISTS_H_
#define LABSHARE_SERVICES_BOOKING_BOOKING_LISTS_H_

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/auth.h"
#include "common/doc_store.h"
#include "labshare/booking/v1/booking.pb.h"
#include "services/booking/inventory_client.h"
#include "services/booking/redis_booking_store.h"

namespace labshare::booking {

// Index entries one call reads at most.
constexpr int kListScanBudget = 2000;

// Index keys of a new booking / lease (all in partition p).
std::vector<std::string> BookingListingKeys(int p, const labshare::booking::v1::Booking& b,
                                            const std::string& operator_org);
std::vector<std::string> LeaseListingKeys(int p, const labshare::booking::v1::Lease& l,
                                          const std::string& operator_org);
// Index entries of a new order (DocStore index operations).
std::vector<IndexOp> OrderListingOps(int p, const labshare::booking::v1::ServiceOrder& o,
                                     const std::string& operator_org);

// A source set covering a whole index name: one source per partition.
std::vector<ListingSource> EveryPartition(char kind, const std::string& dimension, const std::string& id,
                                          bool lex = false);

struct ListQuery {
  // Alternatives, each holding every possible answer; the smallest is read.
  std::vector<std::vector<ListingSource>> candidates;
  bool descending = false;
  // Scores read: [lo_ms, hi_ms). With widen_by_span, lo_ms is a range start
  // that a booking beginning up to the longest span earlier may overlap.
  int64_t lo_ms = std::numeric_limits<int64_t>::min();
  int64_t hi_ms = std::numeric_limits<int64_t>::max();
  bool widen_by_span = false;
  // The document of an entry.
  std::string (*doc_key)(int, absl::string_view) = nullptr;
  int page_size = 50;
  std::string after;  // the page token's position ("" first page)
  // RunListingAsync only: when set, each page's `take` calls run through it
  // (a take that may block: never on a pipeline thread); an error status
  // (refused) ends the listing with it.
  std::function<absl::Status(std::function<void()>)> offload;
};

// Runs a query: `take` gets each document in list order and answers whether
// it went on the page (parsing and filtering are the caller's; it may move
// the bytes away). Returns the position for the next page token ("" at the
// end).
absl::StatusOr<std::string> RunListing(const BookingStore& store, const ListQuery& q,
                                       const std::function<absl::StatusOr<bool>(std::string& data)>& take);

// The same on the store's pipeline: every step is one round trip (per
// shard), `take` and `done` run on pipeline threads (inline without a
// pipeline); `take` is called in list order, one call at a time.
void RunListingAsync(const BookingStore& store, ListQuery q,
                     std::function<absl::StatusOr<bool>(std::string& data)> take,
                     std::function<void(absl::StatusOr<std::string>)> done);

// "start_time" / "start_time asc" / "start_time desc" (field `what`; ""
// means the default): whether descending, else INVALID_ARGUMENT.
absl::StatusOr<bool> ParseOrderBy(const std::string& order_by, absl::string_view field_name,
                                  bool default_descending);

// A list's page_size: negative is INVALID_FIELD page_size (as
// PageTokenCodec::Parse answers it), checked with the request's other
// numbers (types.proto): before the scope and every other check.
absl::Status CheckPageSize(int32_t page_size);

// Who the caller is for lists.
struct ListScope {
  bool all = false;       // CONSORTIUM_ADMIN, AUDITOR, SERVICE
  bool lab_user = false;  // their own (bookings), their organisation's (leases, orders)
  bool billing = false;   // their organisation's
  bool staff = false;     // their organisation's instruments and their organisation's own
  std::string self;       // "users/<id>"
  std::string org;        // "organizations/<id>" or ""
};
ListScope ScopeOf(const Principal& p);

// Whether an organisation owns or operates an instrument (inventory asked
// once per instrument; an unknown instrument: no).
class OwnsOrOperates {
 public:
  OwnsOrOperates(InventoryClient* inventory, std::string org) : inventory_(inventory), org_(std::move(org)) {}
  absl::StatusOr<bool> operator()(const std::string& instrument);

 private:
  InventoryClient* inventory_;
  std::string org_;
  std::map<std::string, bool> known_;
};

// Fills the booking indexes of bookings, leases and orders created before
// the indexes existed (idempotent; ZADD of what the create step writes).
// `operator_of` answers an instrument's operator organisation. After one
// complete pass sets {booking}:migrated:lists and only checks it (so
// replicas of a version without these indexes must be gone by then: what
// they create later is not indexed). Returns how many documents it indexed.
absl::StatusOr<int64_t> MigrateListings(
    const BookingStore& store, const std::function<absl::StatusOr<std::string>(const std::string&)>& operator_of);

// An instrument's operator changed (or may have): re-files the "org"
// listing entries of its bookings, leases and orders from the operator
// its record (keys::ListOperator) names to `operator_org`, inventory's
// operator at instrument etag `etag` (InstrumentChanged). The documents
// are the source of truth: each one's entries are those BookingListingKeys,
// LeaseListingKeys and OrderListingOps give it with the new operator, less
// those the old one gave it, so an organisation that is also the owner,
// payer, cost-share participant, lessee or client keeps its entries. The
// instrument's documents are read in batches of `batch` (by reserved start
// from {bk:P}:bystart, orders from {bk:P}:ls:o:instr), each batch written
// by one step that first checks the record has not moved; the last step
// sets the record. Idempotent and safe to repeat after a failure at any
// point (every write is a ZADD or ZREM); an event older than the record
// (etag) changes nothing, and a record with the same operator only takes
// the new etag. Without a record (data of a version before the records)
// the old operators are looked for: each batch asks which organisations
// having "org" indexes in the partition (ListingOrgs), or announced by a
// re-filing of the instrument since, hold its entries (ZMSCORE), and
// re-files from those. A later change announced meanwhile stops an earlier
// one (that one re-files every document). Returns how many documents were
// looked at.
struct RefileOptions {
  int batch = 256;
  // Tests: stop with UNAVAILABLE after this many steps, as a crash would
  // (0: no limit).
  int max_steps = 0;
  // ListingOrgs of every partition, read once by a caller re-filing many
  // instruments; null: read (one SCAN) when an instrument has no record.
  const std::vector<std::vector<std::string>>* orgs = nullptr;
};
absl::StatusOr<int64_t> RefileOperator(const BookingStore& store, const std::string& instrument_id, int64_t etag,
                                       const std::string& operator_org, const RefileOptions& options = {});
// Per partition, the organisations (names) that have an "org" listing
// index there (SCAN over the keys; partition -1: all partitions).
absl::StatusOr<std::vector<std::vector<std::string>>> ListingOrgs(const BookingStore& store, int partition = -1);

// Start-up (data of versions before the re-filing, or before the
// ListOperator records): every instrument with bookings or orders
// (SCAN of the {bk:P}:bystart: and :ls:o:instr: indexes) whose record is
// missing or names another operator than inventory's now (`current`:
// operator and etag; nullopt: the instrument is gone, skipped) is re-filed
// by RefileOperator at that etag. Once: then the marker
// {booking}:migrated:refile; idempotent, and safe beside another replica's
// pass and InstrumentChanged re-filings (each step checks the record).
// Returns how many instruments it re-filed.
struct CurrentOperator {
  std::string org;
  int64_t etag = 0;
};
absl::StatusOr<int64_t> RefileStaleOperators(
    const BookingStore& store,
    const std::function<absl::StatusOr<std::optional<CurrentOperator>>(const std::string&)>& current,
    const RefileOptions& options = {});

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_BOOKING_LISTS_H_
