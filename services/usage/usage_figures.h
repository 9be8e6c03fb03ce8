// The usage figures: events of inventory, booking and billing folded into
// per-instrument day and month counters as they arrive, and the figures of
// usage.proto ("Definitions") computed from those counters, never from raw
// history.
//
// Redis layout (hash tag {usage}):
//   {usage}:applied                   HASH "<source>|<event id>" -> 1: folded once
//   {usage}:instr                     HASH instrument id -> Instrument (latest)
//   {usage}:orgs                      HASH organisation name -> size class
//   {usage}:mw:<instr>                HASH window id -> "<start ms>|<end ms>" (scheduled windows)
//   {usage}:d:<instr>:<YYYYMMDD>      HASH counters of one day, fields
//   {usage}:m:<instr>:<YYYYMM>        HASH the same counters per month
//        "<counter>|<mode>|<user organisation>" -> integer, counters:
//        eff (seconds in use), bk (bookings), done (completed bookings),
//        miss, late, canc (user-side cancellations), out (outage
//        cancellations), rej (rejected requests), inc (service income,
//        minor units), pen (of which fees), sub (of which subsidised),
//        ink (in-kind contribution)
//   {usage}:ud:<instr>:<YYYYMMDD>, {usage}:um:<instr>:<YYYYMM>
//                                     SET "<mode>|<user org>|<user>" served
// A day or month is a calendar day or month in the reporting time zone.
#ifndef LABSHARE_SERVICES_USAGE_USAGE_FIGURES_H_
#define LABSHARE_SERVICES_USAGE_USAGE_FIGURES_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/redis.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "labshare/usage/v1/usage.pb.h"

namespace labshare::usage {

namespace v1 = labshare::usage::v1;

class UsageFigures {
 public:
  // pool and clock must outlive this. Thread-safe.
  UsageFigures(RedisPool* pool, const Clock* clock, absl::TimeZone zone, std::string currency = "CNY",
               int default_lease_hours_per_day = 8);

  // Folds one outbox entry of `source` ("inventory", "booking", "billing")
  // exactly once (keyed by source and event id, in the same step as its
  // counters). Events that change no figure are recorded as seen only.
  absl::Status Fold(absl::string_view source, const StreamEvent& event);

  absl::StatusOr<v1::GetUsageFiguresResponse> GetUsageFigures(const Principal& p, const v1::GetUsageFiguresRequest& r);
  absl::StatusOr<v1::QueryUsageResponse> QueryUsage(const Principal& p, const v1::QueryUsageRequest& r);

 private:
  struct Instr {
    labshare::inventory::v1::Instrument instrument;
    std::vector<std::pair<absl::Time, absl::Time>> windows;
  };
  struct Partial;  // the figures of one instrument, bucket and user-side key, before ratios
  absl::StatusOr<std::map<std::string, Instr>> Instruments(const v1::UsageFilter& f) const;
  absl::Status CheckRange(const labshare::type::v1::Interval& range, absl::CivilDay* from, absl::CivilDay* to) const;
  absl::Status Scope(const Principal& p, const v1::UsageFilter& f) const;
  // Rows of [from, to) grouped by `dims`, bucketed by `granularity`.
  absl::StatusOr<std::vector<v1::UsageRow>> Compute(absl::CivilDay from, absl::CivilDay to,
                                                    v1::PeriodGranularity granularity,
                                                    const std::vector<v1::Dimension>& dims,
                                                    const v1::UsageFilter& f, bool owner_view) const;
  v1::ComputationInfo Info(absl::Time range_end) const;

  RedisPool* pool_;
  const Clock* clock_;
  absl::TimeZone zone_;
  std::string currency_;
  int default_lease_hours_;
};

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_USAGE_FIGURES_H_
