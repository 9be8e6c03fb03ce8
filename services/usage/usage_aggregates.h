// The report aggregates of the usage figures: maintained in the same Lua step
// that folds each event (usage_figures.cc, FoldScript), so that reports over
// whole months and years read a few small hashes instead of unioning the
// served-user sets of every instrument at query time.
//
// Redis layout (hash tag {usage}); P is a period "m<YYYYMM>" or "y<YYYY>":
//   {usage}:a:<instr>:<P>   HASH "<counter>|<mode>" -> sum over the user
//                           organisations (counters of usage_figures.h), and
//                           "ext|<mode>": eff of user organisations other than
//                           the instrument's owner; "has|<mode>" = 1 when the
//                           mode has served users only (rebuilt data)
//   {usage}:ad:<P>          HASH "<scope>|<name>" -> exact distinct count, name
//                           users, ext_users, sme_users, orgs, ext_orgs,
//                           sme_orgs, startup_orgs; scope "i:<instr>", "p"
//                           (platform-wide), and for years also "o:<owner>",
//                           "f:<facility>", "c:<category>", "md:<mode>"
//   {usage}:au:<P>          HASH "<scope>|<user>" -> flags 1 served, 2 through an
//                           external organisation, 4 through an SME: the
//                           first-seen markers (a bit set for the first time
//                           adds 1 to the matching count in ad)
//   {usage}:ao:<P>          HASH "<scope>|<organisation>" -> flags 1, 2 external,
//                           4 SME, 8 start-up; likewise
//   {usage}:ai:<P>          HASH instrument id -> 1: the instruments counted in P
//   {usage}:agg:ip:<instr>  HASH P -> 1: the periods the instrument is counted in
//                           (an attribute change invalidates only these:
//                           built[P] = -1)
//   {usage}:iattr           HASH instrument id -> "<owner>\x1f<facility>\x1f<category>",
//                           the attributes the aggregates were folded with
//   {usage}:agg             HASH gen: bumped when the size class of an
//                           organisation already counted changes (every
//                           period); layout: "2" once the data of the old
//                           layout is registered; ipindex: "1" once every
//                           instrument's periods are indexed (agg:ip; before,
//                           an instrument's attribute change bumps gen too)
//   {usage}:agg:built       HASH P -> gen its aggregates are exact for ("-1":
//                           never built). Reports use the aggregates of P only
//                           when it equals gen; otherwise they compute from the
//                           counters and sets as before, and the service
//                           rebuilds P (RebuildStaleAggregates) in bounded Lua
//                           steps from those counters and sets, under a lease
//                           ("r<gen>:<owner>" while a rebuild runs)
//   {usage}:rb:<P>, {usage}:rb:<P>:pend  a rebuild in progress: its cursor and
//                           lease (usage_aggregates.cc)
//   {usage}:agg:orgsseen    HASH organisation -> 1: counted in some aggregate
//   {usage}:agg:unknown     HASH instrument id -> 1: folded before its attributes
#ifndef LABSHARE_SERVICES_USAGE_USAGE_AGGREGATES_H_
#define LABSHARE_SERVICES_USAGE_USAGE_AGGREGATES_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
#include "labshare/inventory/v1/inventory.pb.h"

namespace labshare::usage::agg {

inline constexpr char kState[] = "{usage}:agg";
inline constexpr char kBuilt[] = "{usage}:agg:built";
inline constexpr char kAttributes[] = "{usage}:iattr";
inline constexpr char kOrgsSeen[] = "{usage}:agg:orgsseen";
inline constexpr char kUnknown[] = "{usage}:agg:unknown";

inline std::string MonthPeriod(absl::CivilMonth m) { return absl::StrFormat("m%04d%02d", m.year(), m.month()); }
inline std::string YearPeriod(absl::CivilYear y) { return absl::StrFormat("y%04d", y.year()); }
inline std::string InstrumentKey(absl::string_view id, absl::string_view period) {
  return absl::StrCat("{usage}:a:", id, ":", period);
}
inline std::string DistinctKey(absl::string_view period) { return absl::StrCat("{usage}:ad:", period); }
inline std::string UserFlagsKey(absl::string_view period) { return absl::StrCat("{usage}:au:", period); }
inline std::string OrgFlagsKey(absl::string_view period) { return absl::StrCat("{usage}:ao:", period); }
inline std::string ContributorsKey(absl::string_view period) { return absl::StrCat("{usage}:ai:", period); }
inline std::string PeriodsKey(absl::string_view id) { return absl::StrCat("{usage}:agg:ip:", id); }
inline std::string Attributes(const labshare::inventory::v1::Instrument& in) {
  return absl::StrCat(in.owner_organization(), "\x1f", in.facility(), "\x1f", in.category());
}

}  // namespace labshare::usage::agg

#endif  // LABSHARE_SERVICES_USAGE_USAGE_AGGREGATES_H_
