// labshare-archive: archive a closed year to verifiable files, then remove it
// from Redis (services/archive/archive.h says what, when and how).
//
//   labshare-archive --year=2026 --dir=/srv/labshare/archive [--redis=H:P | --redis_cluster ... |
//                    --redis_sentinels=...] [--redis_user=... --redis_password_file=...]
//
// Prints one line and exits 0 ("archived ..." or "already archived ..."),
// 1 when refused or failed (the reason on stderr; rerun the same command
// after a crash), 2 for bad arguments. Check the audit file offline with
//   python3 deploy/verify_audit.py <dir>/audit-<year>.jsonl
// and, for the second and later years, --anchor <previous last sequence>:<hash>;
// the bookings, billing, leases, orders and projects files with
//   python3 deploy/verify_archive.py <dir>/billing-<year>.jsonl
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/server.h"
#include "services/archive/archive.h"

ABSL_FLAG(int, year, 0, "The closed year to archive (UTC).");
ABSL_FLAG(std::string, dir, "",
          "Directory for audit-, bookings-, billing-, leases-, orders- and projects-<year>.jsonl.");
ABSL_FLAG(std::string, billing_time_zone, "Asia/Shanghai",
          "The consortium time zone of billing periods (the billing service's --time_zone): billing's year "
          "ends at 1 January of the next year there.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("labshare-archive --year=YYYY --dir=DIR [--redis=HOST:PORT]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_year) == 0 || absl::GetFlag(FLAGS_dir).empty()) {
    std::fprintf(stderr, "usage: labshare-archive --year=YYYY --dir=DIR [--redis=HOST:PORT]\n");
    return 2;
  }
  labshare::RedisPool pool(labshare::RedisOptionsFromFlags());
  std::unique_ptr<labshare::Clock> clock = labshare::ClockFromFlags();
  labshare::archive::ArchiveOptions options;
  options.year = absl::GetFlag(FLAGS_year);
  options.dir = absl::GetFlag(FLAGS_dir);
  options.clock = clock.get();
  options.billing_time_zone = absl::GetFlag(FLAGS_billing_time_zone);
  auto r = labshare::archive::ArchiveYear(&pool, options);
  if (!r.ok()) {
    std::fprintf(stderr, "labshare-archive: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  const std::string entries =
      r->audit_end > r->audit_start
          ? absl::StrCat("audit entries ", r->audit_start, "..", r->audit_end - 1, " (last hash ", r->audit_last_hash,
                         ")")
          : std::string("no audit entries (the audit file is empty)");
  std::printf("%s %d: %s, %lld bookings (%lld kept with their lease or order), %lld leases (%lld kept), "
              "%lld service orders (%lld kept), %lld projects (%lld kept; changed since the export, kept: %lld), "
              "billing %lld charges, %lld postings, %lld ledger lines "
              "(%lld account lists carried forward; kept, not final: %lld charges, %lld postings; "
              "changed since the export, kept: %lld), %lld outbox entries trimmed, "
              "%lld keys deleted; files %s (sha256 %s), %s (sha256 %s), %s (sha256 %s), %s (sha256 %s), "
              "%s (sha256 %s), %s (sha256 %s)\n",
              r->already_done ? "already archived" : "archived", options.year, entries.c_str(),
              static_cast<long long>(r->bookings), static_cast<long long>(r->bookings_kept),
              static_cast<long long>(r->leases), static_cast<long long>(r->leases_kept),
              static_cast<long long>(r->orders), static_cast<long long>(r->orders_kept),
              static_cast<long long>(r->projects), static_cast<long long>(r->projects_kept),
              static_cast<long long>(r->projects_changed_kept),
              static_cast<long long>(r->billing_charges),
              static_cast<long long>(r->billing_postings), static_cast<long long>(r->billing_ledger_lines),
              static_cast<long long>(r->billing_lists_folded), static_cast<long long>(r->billing_charges_kept),
              static_cast<long long>(r->billing_postings_kept), static_cast<long long>(r->billing_changed_kept),
              static_cast<long long>(r->outbox_entries_trimmed), static_cast<long long>(r->keys_deleted),
              r->audit_file.c_str(), r->audit_sha256.c_str(), r->bookings_file.c_str(), r->bookings_sha256.c_str(),
              r->billing_file.c_str(), r->billing_sha256.c_str(), r->leases_file.c_str(), r->leases_sha256.c_str(),
              r->orders_file.c_str(), r->orders_sha256.c_str(), r->projects_file.c_str(),
              r->projects_sha256.c_str());
  return 0;
}
