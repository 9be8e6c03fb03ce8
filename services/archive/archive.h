// Archival of a closed year (labshare-archive): export the year's audit
// entries, finished bookings and settled billing to files, verify the
// files, record the cut, and only then remove the archived items from Redis.
//
// What "year Y" takes (cumulative: whatever an earlier run did not take):
//   audit  the entries after the archived base ({usage}:audit:base, see
//          audit_chain.h) up to the last one appended before Y+1-01-01 UTC
//          (the cut), as AUDIT_EXPORT_FORMAT_JSONL, the file
//          deploy/verify_audit.py and the service's export use:
//          <dir>/audit-<Y>.jsonl. Its first entry links to the base's hash
//          (the header's previous_hash), its last hash becomes the new base.
//   bookings  every booking whose reserved interval ended before the cut
//          and that is still in Redis: <dir>/bookings-<Y>.jsonl (format
//          below). Removed with it: the document, its calendar entry
//          (ZSET and end), its by-instrument and listing index members
//          (all, user, owner, payer and cost-share organisations), its due
//          entry, its {bk:ids} lookup and usage's closed marker of its
//          session ({usage}:closed, usage_figures.h); then every organisation listing
//          index ({bk:P}:ls:b:org:*, which includes the operator's, not
//          named by the document) loses its members before the cut whose
//          document is gone.
//   billing  (billing-<Y>.jsonl, below) billing's year ends at the billing
//          cut: Y+1-01-01 00:00 in the consortium time zone of billing
//          periods (ArchiveOptions::billing_time_zone, the billing
//          service's --time_zone), so every period of Y ends at or before
//          it. A posting created before the billing cut is final when
//            - PAYMENT: its payment's invoice is PAID, or its settlement
//              CLEARED (a payment of neither: final);
//            - SETTLEMENT_NETTING: always (written when its settlement
//              cleared);
//            - any other kind: every line an invoice draft would take from
//              it (billing_invoices.cc Draft: its PAYABLE entries, and the
//              DEPOSIT_LODGED credit of a DEPOSIT_APPLICATION) is on an
//              issued invoice ({billing}:invoicedpost "<posting>|<payer>")
//              that is PAID. A voided invoice gives its lines back to the
//              next issue, so they are final only once re-issued and paid;
//              a line never invoiced keeps its posting;
//            - and, naming a deposit, the deposit is no longer HELD.
//          A charge created before the billing cut is final unless it is a
//          DEPOSIT whose deposit is still HELD, or LEASE_PERIOD rent of a
//          lease still out ({billing}:leases:out: billing charges each
//          period once by looking for the charge).
//          A charge, its CHARGE / SUBSIDY postings and every correction of
//          any of them (Charge.posting, subsidy_postings, corrections;
//          Posting.charge, corrects, corrected_by) leave together or not at
//          all: one member that is not final, or still in Redis but created
//          after the billing cut, keeps the whole group (so a correction
//          never loses what it corrects, and PostCorrection's "already
//          reversed" check keeps seeing its reversal). Members gone already
//          (an earlier year) do not count.
//          What goes, group by group, each group in one Lua step in
//          {billing}, all or none: every member still at the version
//          archived, else the whole group stays (e.g. corrected after the
//          export: PostCorrection then finds every member, so a reversal
//          reverses the subsidies and the cap and marks the charge
//          REVERSED); its charge and posting documents, their index
//          members ({billing}:charges, :postings) and their
//          "<posting>|<org>" fields of {billing}:invoicedpost. The decision
//          is recorded in the same step in {billing}:archive:<Y> ("g:<the
//          group's smallest member name>" 1 gone / 0 kept). Then, only for
//          the postings whose group went, their ledger lines in
//          {billing}:acct:<account>: a group that stayed keeps its lines
//          and markers, and a later year archives it whole. The lines are
//          not simply deleted: each account list is rewritten in Lua steps
//          (checked against the list's prefix as read; billing only
//          appends) of at most 512 archived lines each, that replace the
//          archived lines, and any earlier carried-forward lines before
//          them, with carried-forward lines
//            "<ms>|carried-forward-<Y>|<counterparty>|<currency>|<sum>"
//          one per (counterparty, currency, side): debits and credits
//          apart, so every debit and credit total stays what it was; <ms>
//          is the time of the last line it folds (before the billing cut),
//          and the list stays in time order. There is no posting document
//          of that name, so invoice drafts skip these lines.
//          What stays, and answers exactly as before (tests/archive): the
//          balances ({billing}:bal, untouched), GetAccountBalance (without
//          as_of_time, or at or after the billing cut; with or without
//          counterparty), ListBalances, GetOrganizationStatement of an
//          interval starting at or after the billing cut, invoices (their
//          documents carry their lines; {billing}:invoiced, :voided, :seq),
//          drafts of open periods and the late lines of closed ones,
//          payments, settlements, deposits, subsidy pools and their caps,
//          {billing}:applied (a redelivered booking event is still applied
//          once), {billing}:idem:* (retries replay; they expire after 30
//          days anyway), {billing}:leases:out, and every charge and
//          posting not final. What changes: reads of the archived year
//          itself (GetCharge / GetPosting of an archived item: NOT_FOUND;
//          ListCharges, ListPostings, GetOwnerIncomeReport, statements and
//          as_of balances inside the year answer from what stays: the rest
//          is in the file) and PostCorrection of an archived posting
//          (POSTING_NOT_FOUND).
//          Each fold step records in the same step how many archived lines
//          of the list are folded ("l:<list key>") and, at the last,
//          counts the list ("lists_folded"), so a rerun goes on from there.
//          A step's script gets the list's prefix up to its last archived
//          line only (earlier steps' carried-forward lines, the lines kept
//          between, the chunk), never the whole list.
//          Limit: the selection holds the year's candidate charges and
//          postings in memory and reads every touched account list whole
//          (outside Lua); the removal holds the file's documents' names.
//   leases  (leases-<Y>.jsonl, the bookings file's format with "lease":
//          "leases/<id>", header format "labshare-leases-jsonl", trailer
//          count "leases") every lease whose term started before the cut
//          ({bk:P}:ls:l:all), that is final (CLOSED, REJECTED, CANCELLED)
//          and whose last change (update_time) was before the cut and is
//          applied by every consumer. Removed: the document and its
//          listing index members; the operator organisations' lease
//          indexes are swept like the bookings'. A lease not final is kept
//          (not refused: an overdue or returned-but-unsettled lease is
//          ongoing business), and so is its booking: lease transitions
//          load it (CloseLease after a return). Kept too, with its
//          booking (a lease's booking id is the lease id): a lease that a
//          charge or posting staying in billing names (Charge.lease, a
//          posting's deposit: kept charges and postings of the year, and
//          every one after the billing cut), e.g. a deposit line never
//          invoiced or a damage charge not yet paid; the same for service
//          orders (Charge.service_order, e.g. a late-cancellation fee) and
//          bookings (Charge.booking). Billing is selected first. The id stays reserved
//          ({bk:ids}) when it was chosen.
//   service orders  (orders-<Y>.jsonl, "service_order":
//          "serviceOrders/<id>", format "labshare-orders-jsonl", count
//          "orders") every order created before the cut ({bk:P}:ls:o:all)
//          that is COMPLETED or CANCELLED, last changed before the cut and
//          applied by every consumer. Removed: the document, its listing
//          index members (all, instrument, organisations, the older
//          {bk:P}:orders:<instr>), operator indexes swept. An order not
//          final (DISPUTED, in progress...) is kept with its booking.
//   projects  (projects-<Y>.jsonl: the leases file's format without
//          "partition", with "project": "projects/<id>" and
//          "budget_counters": {"<instrument>:budget|committed|used": ms,
//                              "<instrument>:budget_version": version}
//          (the project's counters, which go with it); header format
//          "labshare-projects-jsonl", trailer count "projects") every
//          joint-research project ({booking}:projects) that is final: its
//          period ended at or before the cut (half-open: no booking of it
//          can start any more), its last change (update_time) was before
//          the cut and is applied by every consumer, no budget counter
//          holds committed time, and nothing staying in Redis names it: a
//          booking (Booking.project) that stays (it spans the cut or
//          starts after it, or it is kept with its lease, order or a
//          charge; leases and orders name a project only through their
//          booking), or a charge (Charge.project) that stays in billing (a
//          posting only through its charge, which stays with it). Kept
//          otherwise, not refused (ongoing business). Removed, one Lua step
//          per project in {booking}: the document and its member of
//          {booking}:projects, if the document is still at the version
//          archived (else it stays, counted in projects_changed_kept: e.g.
//          its period extended after the export; a later year takes it);
//          the same step writes the id's reservation
//          ({booking}:projectid:<id>, see redis_booking_store.h) if it is
//          missing (a project created before reservations), so the id is
//          never free: CreateProject with it answers PROJECT_EXISTS (a
//          booking replica of an older version checks only the document:
//          none may run by then). Then
//          its budget counters {bk:P}:budget:<id> (every partition). Its
//          history is in the audit trail (ProjectCreated / ProjectUpdated).
//          Limit: when a project may go, every booking starting after the
//          cut is read once (only its project field is kept).
//   not archived: usage's figures.
//   outboxes  every "*:outbox" stream is trimmed below the cut (XTRIM
//          MINID): the events of the year, already applied by every
//          consumer group.
//
// Refused (FAILED_PRECONDITION, nothing written or removed):
//   - the year is open: the cut is after the platform clock;
//   - a booking that ended before the cut is not final (COMPLETED,
//     CANCELLED, MISSED, REJECTED, EXPIRED);
//   - an invoice of a period of Y (or earlier) is ISSUED (not paid, not
//     void): "<invoice> (<period>) is issued and not paid: record its
//     payment, mark it paid or void it first";
//   - a settlement of a period of Y (or earlier) is COMPUTED (transfers
//     open): "<settlement> (<period>) is computed and not cleared: pay its
//     transfers first";
//   - a consumer group of an outbox stream (billing, usage, notify...) has
//     not acknowledged every event up to a minute past the cut (clock skew
//     between services and Redis), or the last event of an archived booking
//     (its update_time): it is not billed / audited yet. The archived audit
//     entries' apply-once markers are removed with them, so no archived
//     event may still be redelivered.
//
// Steps and reruns (idempotent; the manifest {usage}:archive:<Y> is a HASH
// with state, ranges, file names and SHA-256s):
//   1. no manifest: write the six files (to .tmp, fsync, rename), read
//      them back and verify them (VerifyAuditExportFile: the chain from the
//      base; the bookings and billing files' own checksums, the billing
//      ledger balancing), then in one Lua step write the manifest (state
//      "removing") and move the base to the archive's last entry. From
//      here Redis verifies from the new base.
//   2. state "removing": read the files again, check their SHA-256 against
//      the manifest and verify them again (a file changed since is refused:
//      DATA_LOSS, nothing removed), then remove in batches (each removal is
//      idempotent: DEL, HDEL, ZREM), remove billing's groups (stage
//      "billing_removed_group" after each, "billing_removed" after all:
//      a group with a member changed since the export stays whole and is
//      counted in billing_changed_kept, by documents), fold the lists'
//      lines of the groups that went (stage "billing_folded_list" after
//      each list; folding changes no balance), then the projects one step
//      each (a project that a charge of the billing file names stays while
//      that charge is still in Redis, counted in projects_changed_kept:
//      billing never names a project that is gone; stage "project_step"
//      after the step, before the counters go, "project_removed" after; a
//      rerun finds a removed one gone and removes its counters again),
//      trim the outboxes, set state "done". A budget counter that does not
//      read as a number stops the export (DATA_LOSS naming the key).
//   3. state "done": nothing to do (ArchiveResult::already_done).
// A crash anywhere resumes at the state recorded: rerun the same command.
//
// bookings-<Y>.jsonl: one JSON object per line:
//   {"format":"labshare-bookings-jsonl","version":1,"year":Y,"cut_ms":...,
//    "audit_last_sequence":K,"audit_last_hash":"<hex>"}
//   {"partition":P,"booking":"bookings/<id>","version":V,
//    "document":"<base64 Booking bytes>","sha256":"<hex of the bytes>"}...
//   {"trailer":true,"bookings":n,"sha256":"<hex of every byte before this line>"}
// The booking's history itself is in the audit trail (every BookingEvent
// carries the booking), which is what verify_audit.py proves.
//
// billing-<Y>.jsonl: one JSON object per line (deploy/verify_archive.py):
//   {"format":"labshare-billing-jsonl","version":1,"year":Y,"cut_ms":<billing cut>,
//    "time_zone":"Asia/Shanghai","audit_last_sequence":K,"audit_last_hash":"<hex>"}
//   {"kind":"charge"|"posting","key":"{billing}:<kind>:<id>","index_member":"<ns, 19 digits>|<id>" (files of
//    an earlier version: "<ms, 15 digits>|<id>"),
//    "version":V,"document":"<base64 Charge / Posting bytes>","sha256":"<hex of the bytes>"}...
//   {"kind":"ledger_line","key":"{billing}:acct:<account>","posting":"<id>",
//    "document":"<base64 of the list element>","sha256":"<hex>"}...
//   {"kind":"carried_forward","key":"{billing}:acct:<account>",
//    "before":[{"counterparty":"..","currency":"CNY","debit":d,"credit":c}...],
//    "after":[...]}   (after each list's ledger lines)
//   {"trailer":true,"charges":c,"postings":p,"ledger_lines":l,"lists":n,"sha256":"<hex of every byte before>"}
// Charges first, then postings, then the ledger lines grouped by account in
// list order, each list followed by its carried-forward totals: "before"
// the carried-forward lines the fold takes with the archived ones (earlier
// years', before the list's last archived line), "after" those plus the
// archived lines, per (counterparty, currency), debits and credits apart:
// after the removal the list's carried-forward-<Y> lines are exactly
// "after" (when no group stayed because it changed: billing_changed_kept 0;
// a group that stayed keeps its lines, named by "g:" 0 in
// {billing}:archive:<Y>). The header's audit anchor is the audit file's
// last entry (as the bookings header). Every archived posting's lines are
// exactly its entries (and so sum to zero), checked before the file is
// written and by both verifiers (VerifyBillingExport decodes the postings
// as verify_archive.py does), which also check: every charge, posting and
// ledger line before cut_ms, no charge or posting twice, a ledger line
// record's "posting" its line's, every posting an archived charge names
// archived with it, each list's after = before + its lines.
//
// Redis user: this tool touches booking's, billing's, usage's and every
// outbox's keys;
// it runs as an administrator, not as a service's ACL user.
#ifndef LABSHARE_SERVICES_ARCHIVE_ARCHIVE_H_
#define LABSHARE_SERVICES_ARCHIVE_ARCHIVE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "common/redis.h"

namespace labshare::archive {

std::string ManifestKey(int year);  // {usage}:archive:<year>

struct ArchiveOptions {
  int year = 0;
  std::string dir;  // where audit-, bookings-, billing-, leases-, orders- and projects-<Y>.jsonl go
  const Clock* clock = nullptr;  // the platform clock; nullptr: system clock
  int batch = 256;
  // Billing's periods are months in the consortium time zone (the billing
  // service's --time_zone): billing's year ends at 1 January of the next
  // year there.
  std::string billing_time_zone = "Asia/Shanghai";
  // Tests: called with a stage name ("exported", "manifest", "removed_batch",
  // "billing_removed_group", "billing_removed", "billing_folded_list",
  // "project_step", "project_removed");
  // a non-OK status stops the run there (a crash).
  std::function<absl::Status(absl::string_view stage)> stop_for_testing;
};

struct ArchiveResult {
  bool already_done = false;
  int64_t audit_start = 0;      // first archived sequence
  int64_t audit_end = 0;        // exclusive; == start: no entry
  std::string audit_last_hash;  // hex; the new base
  int64_t bookings = 0;
  int64_t outbox_entries_trimmed = 0;
  int64_t keys_deleted = 0;  // keys that went away entirely (DEL / emptied)
  std::string audit_file, bookings_file;
  std::string audit_sha256, bookings_sha256;
  // Billing (see "billing" above).
  int64_t billing_charges = 0, billing_postings = 0, billing_ledger_lines = 0;
  int64_t billing_charges_kept = 0, billing_postings_kept = 0;  // of the year, not final: stay
  int64_t billing_lists_folded = 0;     // account lists that got carried-forward lines
  int64_t billing_changed_kept = 0;     // documents of groups changed after the export: left in Redis
  std::string billing_file, billing_sha256;
  // Leases and service orders (see "leases" above).
  int64_t leases = 0, orders = 0, leases_kept = 0, orders_kept = 0;
  int64_t bookings_kept = 0;  // ended and final, but their lease or order is not

  std::string leases_file, orders_file, leases_sha256, orders_sha256;
  // Projects (see "projects" above): archived, kept (not final, or named by
  // what stays), in the file but changed since the export (left in Redis).
  int64_t projects = 0, projects_kept = 0, projects_changed_kept = 0;
  std::string projects_file, projects_sha256;
};

absl::StatusOr<ArchiveResult> ArchiveYear(RedisPool* pool, const ArchiveOptions& options);

// The offline check of an AUDIT_EXPORT_FORMAT_JSONL file, as
// deploy/verify_audit.py does it: header, every entry's AUDIT_V1 hash, every
// link, sequence numbers, trailer; with an anchor (sequence, 32-byte hash) at
// start - 1 the header's previous_hash must equal it.
struct FileVerdict {
  bool ok = false;
  int64_t entries = 0;
  int64_t last_sequence = 0;
  std::string last_hash_hex;
  int64_t broken_at = 0;
  std::string kind;  // "" when ok; else the verifier's kind, lowercase
  int64_t charges = 0, postings = 0, ledger_lines = 0;  // the billing file's records
};
FileVerdict VerifyAuditExport(absl::string_view file,
                              std::optional<std::pair<int64_t, std::string>> anchor = std::nullopt);
// The bookings file: header, per line the document's SHA-256, trailer count
// and checksum. ok=false with kind and broken_at (line number) otherwise.
FileVerdict VerifyBookingsExport(absl::string_view file);
// The same, reading a file line by line (archives are large); sha256_hex
// (optional) receives the SHA-256 of what was read.
absl::StatusOr<FileVerdict> VerifyAuditExportFile(const std::string& path,
                                                  std::optional<std::pair<int64_t, std::string>> anchor,
                                                  std::string* sha256_hex = nullptr);
absl::StatusOr<FileVerdict> VerifyBookingsExportFile(const std::string& path, std::string* sha256_hex = nullptr);
// The billing file: header, per record the document's SHA-256, every
// archived posting's ledger lines summing to zero, trailer counts and
// checksum (kinds: malformed, hash_mismatch, unbalanced_posting,
// ledger_mismatch, carried_forward_mismatch, after_cut, duplicate,
// missing_posting, trailer_mismatch, data_after_trailer, no_trailer).
FileVerdict VerifyBillingExport(absl::string_view file);
// The leases / orders / projects file (kind "leases", "orders" or
// "projects"): as the bookings file; a project record's budget_counters
// must be non-negative integers, committed 0, its "project" the document's
// name and its "version" an integer >= 1 (kind malformed), and no project
// appears twice (kind duplicate).
absl::StatusOr<FileVerdict> VerifyRecordsExportFile(const std::string& path, absl::string_view kind,
                                                    std::string* sha256_hex = nullptr);
absl::StatusOr<FileVerdict> VerifyBillingExportFile(const std::string& path, std::string* sha256_hex = nullptr);

}  // namespace labshare::archive

#endif  // LABSHARE_SERVICES_ARCHIVE_ARCHIVE_H_
