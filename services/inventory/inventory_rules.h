// The inventory's rules as pure functions: validation, transitions, rate
// lookup, qualification expiry and the access decision. No I/O, no clock:
// "now" is a parameter. Every rejection is an absl::Status with a reason.
#ifndef LABSHARE_SERVICES_INVENTORY_INVENTORY_RULES_H_
#define LABSHARE_SERVICES_INVENTORY_INVENTORY_RULES_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.pb.h"

namespace labshare::inventory {

using labshare::type::v1::PayerClass;
using labshare::type::v1::SharingMode;

// Resource ids: [a-z0-9][a-z0-9-]{0,62}.
bool ValidId(absl::string_view id);
// A fresh random id with a readable prefix, e.g. "org-3f9a0c1d2e4b".
std::string NewId(absl::string_view prefix);

// "organizations/acme" -> "acme". INVALID_ARGUMENT (INVALID_NAME) naming
// `field` otherwise.
absl::StatusOr<std::string> ParseName(absl::string_view name, absl::string_view collection,
                                      absl::string_view field);
// "instruments/i/rates/r" -> {"i", "r"}.
absl::StatusOr<std::pair<std::string, std::string>> ParseChildName(absl::string_view name,
                                                                   absl::string_view collection,
                                                                   absl::string_view child,
                                                                   absl::string_view field);

// ------------------------------------------------------------ organisations
bool MembershipTransitionAllowed(v1::MembershipState from, v1::MembershipState to);
// ValidateOrganizationFields, then ValidateInvoicingDetails.
absl::Status ValidateOrganization(const v1::Organization& org, bool check_name_characters = true);
// display_name, type and size_class (every violation among them at once).
// `check_name_characters`: display_name's control and text-direction
// character check (UpdateOrganization: only when the name changes, so an
// organisation stored with such a name before the check can still be
// updated otherwise).
absl::Status ValidateOrganizationFields(const v1::Organization& org, bool check_name_characters = true);
// The fapiao fields (inventory.proto InvoicingDetails); an empty message is
// valid. INVALID_ARGUMENT: INVALID_TAXPAYER_ID for the taxpayer id,
// INVALID_FIELD for the others.
absl::Status ValidateInvoicingDetails(const v1::InvoicingDetails& details);
// Why `code` is not a unified social credit code (GB 32100-2015), or "".
std::string UnifiedSocialCreditCodeProblem(absl::string_view code);
// Initial state on creation (after defaulting): APPLICANT, MEMBER (with a
// tier) or NON_MEMBER.
absl::Status ValidateInitialMembership(const v1::Organization& org);

// ------------------------------------------------------------ users, facilities
// `check_email`, `check_subject`: the strict address and external subject
// checks (UpdateUser: only when the value changes, so a user stored with
// an old, now refused value can still be disabled or renamed).
absl::Status ValidateUser(const v1::User& user, bool check_email = true, bool check_subject = true);
// A facility created without a time zone gets the consortium's.
inline constexpr char kDefaultFacilityTimeZone[] = "Asia/Shanghai";
// `check_zone`: the IANA name check (UpdateFacility: only when the zone
// changes, so a facility stored with "localtime" before the check can still
// be renamed; readers fall back to the default zone for it).
absl::Status ValidateFacility(const v1::Facility& facility, bool check_zone = true);

// ------------------------------------------------------------ instruments
absl::Status ValidateMoney(const labshare::type::v1::Money& money, absl::string_view field,
                           bool required);
absl::Status ValidateInstrument(const v1::Instrument& instrument);
bool InstrumentTransitionAllowed(v1::InstrumentState from, v1::InstrumentState to);
// The offering for a mode, or nullptr.
const v1::ModeOffering* FindMode(const v1::Instrument& instrument, SharingMode mode);
// The slot rules of `mode`'s offering; empty rules (all defaults) when the
// instrument no longer offers it (an order or booking made before).
const v1::SlotRules& SlotRulesOf(const v1::Instrument& instrument, SharingMode mode);
const v1::AccessPolicy& EffectivePolicy(const v1::Instrument& instrument,
                                        const v1::Facility& facility);

// ------------------------------------------------------------ rates
// ValidateRateFields, ValidateRateCurrency, then ValidateRateUnitFor.
absl::Status ValidateRate(const v1::Rate& rate, const v1::Instrument& instrument);
// The unit against what the line prices on this instrument (INVALID_FIELD
// rate.unit): a TECHNICAL_SERVICE line naming a catalogue entry is in the
// entry's unit (RATE_PER_SAMPLE for PER_SAMPLE, RATE_PER_TEST for
// PER_TEST; PER_HOUR lines name no entry), a LEASE line in its lease
// rules' rate_basis (RATE_PER_DAY for PER_DAY, RATE_PER_MONTH for
// PER_MONTH). An entry or offering the instrument lacks is not checked
// here (SERVICE_ENTRY_NOT_FOUND, MODE_NOT_OFFERED).
absl::Status ValidateRateUnitFor(const v1::Rate& rate, const v1::Instrument& instrument);
// What needs no instrument: mode, payer class, tier, price, effective_time,
// tax rate, unit and service entry fitting the mode.
absl::Status ValidateRateFields(const v1::Rate& rate);
// The price in the instrument's currency.
absl::Status ValidateRateCurrency(const v1::Rate& rate, const v1::Instrument& instrument);
// Index member ordering rates by key (mode, payer class, tier, entry), then
// effective time to the nanosecond (before 1970 too), then id. Fields are
// separated by kRateKeySeparator, a byte below every character a tier or
// entry id holds, so a key sorts before its extensions ("" before "CORE"
// before "CORE2"; "xrd" before "xrd-fast"). The time is "<seconds, 20
// characters>.<nanos, 9 digits>". Members of the earlier formats ('|'
// between the fields; whole seconds only) are rewritten by
// InventoryManager::MigrateRateIndexes.
inline constexpr char kRateKeySeparator = '\x01';
std::string RateSortKey(const v1::Rate& rate, absl::string_view rate_id);
// Whether an index member is of RateSortKey's format (not an earlier one).
bool IsRateSortKey(absl::string_view member);
// What a rate's id is derived from: the key and time as the first index
// format wrote them ('|'-separated), so ids and RATE_EXISTS stay as they were.
std::string RateIdSeed(const v1::Rate& rate);
// OWNER if the payer owns the instrument, MEMBER if its membership_state
// is MEMBER, NON_MEMBER otherwise.
PayerClass PayerClassFor(const v1::Organization& payer, const v1::Instrument& instrument);
// The line in force at `at` for (mode, class, tier, entry): the latest
// effective_time <= at. MEMBER falls back from the tier's line to the line
// without tier. nullptr when nothing is in force.
const v1::Rate* FindRate(const std::vector<v1::Rate>& rates, SharingMode mode, PayerClass cls,
                         absl::string_view tier, absl::string_view service_entry_id, absl::Time at);

// The lines LookupRate may still pick at `now` or later: for each key
// (mode, payer class, tier, entry) the one FindRate finds in force at `now`
// and every line taking effect after `now`. A line a later one replaced
// by `now` (it ended before now) is not among them. In `rates`' order.
std::vector<const v1::Rate*> RatesInForceOrLater(const std::vector<v1::Rate>& rates, absl::Time now);
// Whether `after` prices differently from `before` what a rate line may
// price: the currency of original_value, the unit of a catalogue entry
// (an entry `after` adds included), or the LEASE rate_basis (the LEASE
// offering added included). Nothing else decides whether a line fits
// (ValidateRateCurrency, ValidateRateUnitFor).
bool RatePricingChanged(const v1::Instrument& before, const v1::Instrument& after);
// Why `rate`, a line that fits `before` (CreateRate would take it there:
// ValidateRateCurrency, ValidateRateUnitFor), would not fit `after`, e.g.
// "priced in CNY, not the new currency USD"; "" when it fits `after`, or
// did not fit `before` either (a line stored before the check).
std::string RateConflictWithChange(const v1::Rate& rate, const v1::Instrument& before,
                                   const v1::Instrument& after);

// ------------------------------------------------------------ qualifications
// Fills state and expire_time as of `now`. validity_days 0: never lapses.
void ComputeQualificationState(v1::Qualification& q, int validity_days, absl::Time now);
int QualificationValidityDays(const v1::Instrument& instrument);

// ------------------------------------------------------------ maintenance
absl::Status ValidateMaintenanceWindow(const v1::MaintenanceWindow& window);
// A window's member of its instrument's index (ListMaintenanceWindows'
// "by start" order): "<start seconds, 20 characters>.<start nanos, 9
// digits>|<window id>", the seconds as RateSortKey writes them (in time
// order before 1970 too). Members of the earlier formats are rewritten by
// InventoryManager::MigrateWindowIndexes: the first ("<seconds>|<id>",
// whole seconds only) and, before 1970, the second ("%020d" seconds, which
// sorted -10 before -100).
std::string WindowSortKey(const v1::MaintenanceWindow& window, absl::string_view window_id);
// The whole seconds of the start a window index member names, of any of
// those formats.
int64_t WindowMemberStartSeconds(absl::string_view member);

// ------------------------------------------------------------ access
bool PolicyAllows(const v1::AccessPolicy& policy, const v1::Organization& payer);

struct AccessFacts {
  const v1::User* user = nullptr;
  const v1::Organization* payer = nullptr;
  const v1::Instrument* instrument = nullptr;
  const v1::Facility* facility = nullptr;
  const v1::Qualification* qualification = nullptr;  // nullptr: none granted
  std::vector<v1::Rate> rates;
  std::vector<v1::MaintenanceWindow> windows;  // scheduled ones
  // The calendar block the booking would hold: the reserved interval (a
  // lease: its term) with its buffers (SlotRules.buffer; a lease's handover
  // and return buffers). A scheduled window over any of it denies
  // DURING_MAINTENANCE, as the window hits the booking once it reaches the
  // calendar. Unset (has_blocked false): the request's interval alone.
  bool has_blocked = false;
  absl::Time blocked_start;
  absl::Time blocked_end;
};

// When a booking in `offering`'s mode, made at `now` by a payer of class
// `cls`, may lie: the one definition of notice and horizon, used by access
// checks (CreateBooking, RequestLease, CheckAccess) and by booking's
// availability answers alike. The reserved interval (a lease: its term)
// must start at or after earliest_start and end at or before latest_end.
// Slot modes: now + min_notice; now + the horizon of the payer's class:
// MEMBER the horizon of `tier` (the payer's Organization.tier) in
// SlotRules.tier_horizons, else member_horizon (an empty tier: always
// member_horizon); OWNER the longest of member_horizon and every tier
// horizon; NON_MEMBER non_member_horizon (0: latest_end is now, so nothing
// fits, and EvaluateAccess denies every interval BEYOND_HORIZON, also one
// that ends by now); `tier` counts only for MEMBER. LEASE: now + the handover buffer (the
// calendar block may not begin in the past); the horizon is how far ahead a
// lease may start (latest_start = now + horizon), so the latest end is that
// plus the longest term (max_term_days); no limit (absl::InfiniteFuture())
// when the lease rules set no horizon.
struct BookingWindow {
  absl::Time earliest_start;
  absl::Time latest_end;
  absl::Time latest_start = absl::InfiniteFuture();  // LEASE only
  // The tier whose SlotRules.tier_horizons entry set latest_end (MEMBER
  // only); empty when member_horizon or non_member_horizon did.
  std::string horizon_tier;
};
// The first SCHEDULED window of `windows` (any range of MaintenanceWindow)
// overlapping [start, end), half-open; nullptr when none does. What the
// access check denies as DURING_MAINTENANCE over a booking's whole block,
// and ExtendLease over the block's extension.
template <typename Windows>
const v1::MaintenanceWindow* ScheduledWindowOver(const Windows& windows, absl::Time start, absl::Time end) {
  for (const v1::MaintenanceWindow& w : windows) {
    if (w.state() == v1::SCHEDULED && FromProto(w.interval().start_time()) < end &&
        start < FromProto(w.interval().end_time())) {
      return &w;
    }
  }
  return nullptr;
}

BookingWindow BookingWindowFor(const v1::ModeOffering& offering, PayerClass cls, absl::string_view tier,
                               absl::Time now);

// The whole decision: every denial that applies, the payer class and rate.
v1::CheckAccessResponse EvaluateAccess(const AccessFacts& facts,
                                       const v1::CheckAccessRequest& request, absl::Time now);

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_INVENTORY_RULES_H_
