#include "services/inventory/inventory_rules.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/mail_address.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "common/time_zone.h"

namespace labshare::inventory {
namespace {

using labshare::type::v1::Money;
using v1::MembershipState;

std::string Pad(int64_t v) { return absl::StrFormat("%020d", v); }

std::string ModeName(SharingMode mode) { return labshare::type::v1::SharingMode_Name(mode); }

v1::Denial MakeDenial(v1::DenialCode code, std::string message) {
  v1::Denial d;
  d.set_code(code);
  d.set_message(std::move(message));
  return d;
}

absl::Status ValidatePolicy(const v1::AccessPolicy& p, const std::string& field) {
  for (int t : p.allowed_types()) {
    if (t == v1::ORGANIZATION_TYPE_UNSPECIFIED || !v1::OrganizationType_IsValid(t)) {
      return InvalidField(field + ".allowed_types", "must list valid organisation types");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDuration(const google::protobuf::Duration& d, const std::string& field) {
  if (d.seconds() < 0 || d.nanos() < 0) return InvalidField(field, "must not be negative");
  return absl::OkStatus();
}

absl::Status ValidateSlotRules(const v1::SlotRules& r, const std::string& f) {
  for (const auto& [d, name] :
       std::vector<std::pair<const google::protobuf::Duration*, std::string>>{
           {&r.min_block(), "min_block"},
           {&r.max_block(), "max_block"},
           {&r.member_horizon(), "member_horizon"},
           {&r.non_member_horizon(), "non_member_horizon"},
           {&r.min_notice(), "min_notice"},
           {&r.buffer(), "buffer"},
           {&r.approval_threshold(), "approval_threshold"},
           {&r.no_show_grace(), "no_show_grace"},
           {&r.late_cancel_notice(), "late_cancel_notice"},
           {&r.billing_unit(), "billing_unit"},
           {&r.minimum_charge(), "minimum_charge"},
           {&r.report_acceptance_period(), "report_acceptance_period"}}) {
    LS_RETURN_IF_ERROR(ValidateDuration(*d, f + "." + name));
  }
  const absl::Duration min_block = FromProto(r.min_block());
  const absl::Duration max_block = FromProto(r.max_block());
  if (max_block <= absl::ZeroDuration()) {
    return InvalidField(f + ".max_block", "must be positive (the longest bookable block)");
  }
  if (min_block > max_block) {
    return InvalidField(f + ".min_block", "must not exceed max_block");
  }
  if (FromProto(r.member_horizon()) <= absl::ZeroDuration()) {
    return InvalidField(f + ".member_horizon", "must be positive (how far ahead members book)");
  }
  if (FromProto(r.non_member_horizon()) > FromProto(r.member_horizon())) {
    return InvalidField(f + ".non_member_horizon",
                        "must not exceed member_horizon: members book further ahead");
  }
  std::set<std::string> tiers;
  for (int i = 0; i < r.tier_horizons_size(); ++i) {
    const v1::TierHorizon& th = r.tier_horizons(i);
    const std::string tf = absl::StrCat(f, ".tier_horizons[", i, "]");
    // A tier as ChangeMembership and CreateOrganization take one: any
    // non-empty name.
    if (th.tier().empty()) return InvalidField(tf + ".tier", "name the member tier, e.g. CORE or GENERAL");
    if (!tiers.insert(th.tier()).second) {
      return InvalidField(tf + ".tier", absl::StrCat("tier ", th.tier(), " has a horizon already"));
    }
    LS_RETURN_IF_ERROR(ValidateDuration(th.horizon(), tf + ".horizon"));
    if (!th.has_horizon() || FromProto(th.horizon()) <= absl::ZeroDuration()) {
      return InvalidField(tf + ".horizon", "must be positive (how far ahead members of the tier book)");
    }
    if (FromProto(th.horizon()) < FromProto(r.non_member_horizon())) {
      return InvalidField(tf + ".horizon",
                          "must not be shorter than non_member_horizon: members book at least as far ahead");
    }
  }
  if (r.billing_basis() == v1::BILLING_BASIS_UNSPECIFIED ||
      !v1::BillingBasis_IsValid(r.billing_basis())) {
    return InvalidField(f + ".billing_basis",
                        "choose RESERVED_TIME, ACTUAL_TIME or GREATER_OF_RESERVED_AND_ACTUAL");
  }
  // billing_unit: 0 (unset) bills the time as measured, without rounding.
  for (const auto& [bps, name] : std::vector<std::pair<int32_t, std::string>>{
           {r.missed_fee_bps(), "missed_fee_bps"}, {r.late_cancel_fee_bps(), "late_cancel_fee_bps"}}) {
    if (bps < 0 || bps > 10000) {
      return InvalidField(f + "." + name, "must be between 0 and 10000 basis points");
    }
  }
  if (r.qualification_validity_days() < 0) {
    return InvalidField(f + ".qualification_validity_days", "must not be negative");
  }
  // Bounded so that a report's deadline (its delivery + the period) is
  // always a time booking can store.
  const google::protobuf::Duration& period = r.report_acceptance_period();
  if (period.nanos() > 999999999) {
    return InvalidField(f + ".report_acceptance_period", "nanos must be less than one second");
  }
  if (FromProto(period) > absl::Hours(24 * 3650)) {
    return InvalidField(f + ".report_acceptance_period", "must be at most 3650 days");
  }
  return absl::OkStatus();
}

absl::Status ValidateLeaseRules(const v1::LeaseRules& r, const std::string& f) {
  if (r.min_term_days() < 1) return InvalidField(f + ".min_term_days", "must be at least 1");
  if (r.max_term_days() < r.min_term_days()) {
    return InvalidField(f + ".max_term_days", "must be at least min_term_days");
  }
  LS_RETURN_IF_ERROR(ValidateDuration(r.handover_buffer(), f + ".handover_buffer"));
  LS_RETURN_IF_ERROR(ValidateDuration(r.return_buffer(), f + ".return_buffer"));
  // Unset is no limit; a horizon set to zero (or less) would refuse every
  // lease, the owner's too (BookingWindowFor: a term must start by now +
  // horizon, and starts a handover buffer from now at the earliest).
  if (r.has_horizon() &&
      (r.horizon().seconds() < 0 || r.horizon().nanos() < 0 || FromProto(r.horizon()) <= absl::ZeroDuration())) {
    return InvalidField(f + ".horizon",
                        "must be positive (how far ahead a lease may start); leave it unset for no limit");
  }
  LS_RETURN_IF_ERROR(ValidateMoney(r.deposit(), f + ".deposit", false));
  if (r.rate_basis() == v1::LEASE_RATE_BASIS_UNSPECIFIED ||
      !v1::LeaseRateBasis_IsValid(r.rate_basis())) {
    return InvalidField(f + ".rate_basis", "choose PER_DAY or PER_MONTH");
  }
  if (r.counted_hours_per_day() < 0 || r.counted_hours_per_day() > 24) {
    return InvalidField(f + ".counted_hours_per_day", "must be between 0 and 24");
  }
  return absl::OkStatus();
}

}  // namespace

bool ValidId(absl::string_view id) { return ValidResourceId(id); }

std::string NewId(absl::string_view prefix) {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%s-%012x", prefix, absl::Uniform<uint64_t>(gen) & 0xffffffffffffULL);
}

absl::StatusOr<std::string> ParseName(absl::string_view name, absl::string_view collection,
                                      absl::string_view field) {
  return ParseResourceName(name, collection, field);
}

absl::StatusOr<std::pair<std::string, std::string>> ParseChildName(absl::string_view name,
                                                                   absl::string_view collection,
                                                                   absl::string_view child,
                                                                   absl::string_view field) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 4 || parts[0] != collection || parts[2] != child || !ValidId(parts[1]) ||
      !ValidId(parts[3])) {
    return InvalidField(std::string(field),
                        absl::StrCat("must be a resource name '", collection, "/{id}/", child,
                                     "/{id}', got '", name, "'"),
                        "INVALID_NAME");
  }
  return std::make_pair(std::string(parts[1]), std::string(parts[3]));
}

// ------------------------------------------------------------ organisations

bool MembershipTransitionAllowed(MembershipState from, MembershipState to) {
  switch (from) {
    case v1::APPLICANT: return to == v1::MEMBER || to == v1::NON_MEMBER;
    case v1::MEMBER: return to == v1::SUSPENDED || to == v1::EXITED;
    case v1::SUSPENDED: return to == v1::MEMBER || to == v1::EXITED;
    case v1::EXITED: return to == v1::APPLICANT;
    case v1::NON_MEMBER: return to == v1::APPLICANT;
    default: return false;
  }
}

namespace {

// True when `s` holds a control character (C0, DEL, C1), a Unicode line
// or paragraph separator (U+2028, U+2029: mandatory breaks to a renderer
// such as billing's pango) or a bidirectional control (Bidi_Control:
// U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069): on a printed
// fapiao block these could add official-looking lines or reverse digits.
bool HasControlCharacters(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    uint32_t cp = b;
    size_t n = 1;
    if (b >= 0xF0) {
      n = 4;
      cp = b & 0x07;
    } else if (b >= 0xE0) {
      n = 3;
      cp = b & 0x0F;
    } else if (b >= 0xC0) {
      n = 2;
      cp = b & 0x1F;
    }
    for (size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += n;
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0x061C || cp == 0x200E ||
        cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069)) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status ValidateOrganization(const v1::Organization& org, bool check_name_characters) {
  LS_RETURN_IF_ERROR(ValidateOrganizationFields(org, check_name_characters));
  return ValidateInvoicingDetails(org.invoicing_details());
}

absl::Status ValidateOrganizationFields(const v1::Organization& org, bool check_name_characters) {
  std::vector<FieldViolation> bad;
  // Characters, not bytes: Chinese names are three bytes a character.
  const size_t chars = static_cast<size_t>(std::count_if(
      org.display_name().begin(), org.display_name().end(),
      [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
  if (chars == 0 || chars > 200) {
    bad.push_back({"organization.display_name", "required, at most 200 characters"});
  } else if (check_name_characters && HasControlCharacters(org.display_name())) {
    // billing prints it on the fapiao's party block (简称), beside the
    // invoicing details, which hold none either.
    bad.push_back({"organization.display_name",
                   "one line without control or text-direction characters (line breaks included)"});
  }
  if (org.type() == v1::ORGANIZATION_TYPE_UNSPECIFIED || !v1::OrganizationType_IsValid(org.type())) {
    bad.push_back({"organization.type",
                   "choose ENTERPRISE, UNIVERSITY, RESEARCH_INSTITUTE, GOVERNMENT_AGENCY or "
                   "OTHER_ORGANIZATION"});
  }
  if (!v1::SizeClass_IsValid(org.size_class())) {
    bad.push_back({"organization.size_class", "unknown size class"});
  } else if (org.type() != v1::ENTERPRISE && org.size_class() != v1::SIZE_CLASS_UNSPECIFIED) {
    bad.push_back({"organization.size_class", "only enterprises have a size class"});
  }
  if (!bad.empty()) return InvalidFields(std::move(bad));
  return absl::OkStatus();
}

namespace {

size_t Utf8Chars(absl::string_view s) {
  return static_cast<size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

}  // namespace

std::string UnifiedSocialCreditCodeProblem(absl::string_view code) {
  // GB 32100-2015: 31 characters (digits and upper-case letters without
  // I, O, Z, S, V); characters 3-8 the administrative division (digits);
  // the 18th a check character over the first 17 with weights 3^(i-1) mod 31.
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
  static constexpr int kWeights[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
  if (code.size() != 18) {
    const size_t chars = Utf8Chars(code);
    if (chars != 18) return absl::StrCat("must be 18 characters (统一社会信用代码), got ", chars);
    // 18 characters, some not ASCII (e.g. a full-width digit): name the first.
    const size_t at = static_cast<size_t>(
        std::find_if(code.begin(), code.end(), [](char c) { return (static_cast<unsigned char>(c) & 0x80) != 0; }) -
        code.begin());
    return absl::StrCat("character ", Utf8Chars(code.substr(0, at)) + 1,
                        " must be a digit or an upper-case letter (ASCII, not full-width)");
  }
  int sum = 0;
  for (size_t i = 0; i < 18; ++i) {
    const char c = code[i];
    const char* at = (c == '\0') ? nullptr : std::strchr(kAlphabet, c);
    if (at == nullptr) {
      if (c >= 'a' && c <= 'z') {
        return absl::StrCat("character ", i + 1, " '", std::string(1, c), "' must be upper case");
      }
      if (c == 'I' || c == 'O' || c == 'Z' || c == 'S' || c == 'V') {
        return absl::StrCat("character ", i + 1, " '", std::string(1, c),
                            "' is not used in the code (no I, O, Z, S or V)");
      }
      return absl::StrCat("character ", i + 1, " must be a digit or an upper-case letter");
    }
    if (i >= 2 && i <= 7 && !(c >= '0' && c <= '9')) {
      return absl::StrCat("character ", i + 1, " '", std::string(1, c),
                          "' must be a digit (characters 3-8 are the administrative division code)");
    }
    if (i < 17) sum += static_cast<int>(at - kAlphabet) * kWeights[i];
  }
  const int check = (31 - sum % 31) % 31;
  if (code[17] != kAlphabet[check]) {
    return absl::StrCat("check character (18th) is '", std::string(1, code[17]), "', expected '",
                        std::string(1, kAlphabet[check]), "': a character was mistyped");
  }
  return "";
}

absl::Status ValidateInvoicingDetails(const v1::InvoicingDetails& d) {
  const std::string prefix = "organization.invoicing_details.";
  const bool any = !d.taxpayer_id().empty() || !d.legal_name().empty() || !d.registered_address().empty() || !d.phone().empty() ||
                   !d.bank_name().empty() || !d.bank_account().empty();
  if (!any) return absl::OkStatus();
  if (d.taxpayer_id().empty()) {
    return InvalidField(prefix + "taxpayer_id", "required when any invoicing detail is set", "INVALID_TAXPAYER_ID");
  }
  if (std::string problem = UnifiedSocialCreditCodeProblem(d.taxpayer_id()); !problem.empty()) {
    return InvalidField(prefix + "taxpayer_id", problem, "INVALID_TAXPAYER_ID");
  }
  std::vector<FieldViolation> bad;
  const size_t name = Utf8Chars(d.legal_name());
  if (name == 0 || name > 200) bad.push_back({prefix + "legal_name", "required, at most 200 characters"});
  const size_t address = Utf8Chars(d.registered_address());
  if (address == 0 || address > 200) bad.push_back({prefix + "registered_address", "required, at most 200 characters"});
  if (d.phone().size() > 40 ||
      !std::all_of(d.phone().begin(), d.phone().end(), [](char c) {
        return (c >= '0' && c <= '9') || c == ' ' || c == '+' || c == '-' || c == '(' || c == ')';
      })) {
    bad.push_back({prefix + "phone", "at most 40 characters of digits, spaces, +, -, ( and )"});
  }
  const size_t bank = Utf8Chars(d.bank_name());
  if (bank == 0 || bank > 100) bad.push_back({prefix + "bank_name", "required, at most 100 characters"});
  for (const auto& [field, value] : {std::pair<const char*, const std::string*>{"legal_name", &d.legal_name()},
                                     {"registered_address", &d.registered_address()},
                                     {"bank_name", &d.bank_name()}}) {
    if (HasControlCharacters(*value)) {
      bad.push_back({prefix + field, "no control or text-direction characters (line breaks included)"});
    }
  }
  const size_t digits = static_cast<size_t>(
      std::count_if(d.bank_account().begin(), d.bank_account().end(), [](char c) { return c >= '0' && c <= '9'; }));
  const bool only = std::all_of(d.bank_account().begin(), d.bank_account().end(),
                                [](char c) { return (c >= '0' && c <= '9') || c == ' '; });
  if (!only || digits < 6 || digits > 40 || d.bank_account().front() == ' ' || d.bank_account().back() == ' ') {
    bad.push_back({prefix + "bank_account", "6 to 40 digits, spaces allowed between groups"});
  }
  if (!bad.empty()) return InvalidFields(std::move(bad));
  return absl::OkStatus();
}

absl::Status ValidateInitialMembership(const v1::Organization& org) {
  switch (org.membership_state()) {
    case v1::APPLICANT:
    case v1::NON_MEMBER:
      return absl::OkStatus();
    case v1::MEMBER:
      if (org.tier().empty()) {
        return InvalidField("organization.tier", "a MEMBER needs a tier, e.g. CORE or GENERAL");
      }
      return absl::OkStatus();
    default:
      return InvalidField("organization.membership_state",
                          "a new organisation starts as APPLICANT, MEMBER or NON_MEMBER");
  }
}

// ------------------------------------------------------------ users, facilities

absl::Status ValidateUser(const v1::User& user, bool check_email, bool check_subject) {
  std::vector<FieldViolation> bad;
  if (user.display_name().empty()) bad.push_back({"user.display_name", "required"});
  // Mail headers are built from it (labshare-notify): nothing that could
  // inject one (line breaks, '<', '>', spaces, a second '@') is stored.
  if (std::string why; check_email && !user.email().empty() && !ValidMailAddress(user.email(), &why)) {
    bad.push_back({"user.email", absl::StrCat("must be a plain e-mail address (", why, ")")});
  }
  if (check_subject && (user.external_subject().size() > 255 || HasControlCharacters(user.external_subject()))) {
    bad.push_back({"user.external_subject",
                   "at most 255 bytes, no line break or other control or text-direction character"});
  }
  if (user.roles().empty()) bad.push_back({"user.roles", "at least one role is required"});
  std::set<int> seen;
  for (int r : user.roles()) {
    if (r == labshare::type::v1::ROLE_UNSPECIFIED || !labshare::type::v1::Role_IsValid(r)) {
      bad.push_back({"user.roles", "contains an unknown role"});
      break;
    }
    if (r == labshare::type::v1::SERVICE) {
      bad.push_back({"user.roles", "SERVICE is for service tokens, not people"});
      break;
    }
    if (!seen.insert(r).second) {
      bad.push_back({"user.roles", "lists a role twice"});
      break;
    }
  }
  if (!bad.empty()) return InvalidFields(std::move(bad));
  return absl::OkStatus();
}

absl::Status ValidateFacility(const v1::Facility& facility, bool check_zone) {
  if (facility.display_name().empty()) {
    return InvalidField("facility.display_name", "required");
  }
  absl::TimeZone zone;
  if (check_zone && !facility.time_zone().empty() && !LoadIanaTimeZone(facility.time_zone(), &zone)) {
    return InvalidField("facility.time_zone",
                        "unknown time zone \"" + facility.time_zone() + "\"; use an IANA name such as Asia/Shanghai");
  }
  return ValidatePolicy(facility.access_policy(), "facility.access_policy");
}

// ------------------------------------------------------------ instruments

absl::Status ValidateMoney(const Money& money, absl::string_view field, bool required) {
  const std::string f(field);
  if (!required && money.currency_code().empty() && money.amount_minor() == 0) {
    return absl::OkStatus();
  }
  const std::string& c = money.currency_code();
  if (c.size() != 3 || !std::all_of(c.begin(), c.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; })) {
    return InvalidField(f + ".currency_code", "must be an ISO 4217 code such as CNY");
  }
  if (money.amount_minor() < 0) return InvalidField(f + ".amount_minor", "must not be negative");
  return absl::OkStatus();
}

absl::Status ValidateInstrument(const v1::Instrument& in) {
  if (in.display_name().empty()) return InvalidField("instrument.display_name", "required");
  if (in.category().empty()) {
    return InvalidField("instrument.category", "required, e.g. electron-microscopy");
  }
  LS_RETURN_IF_ERROR(ValidateMoney(in.original_value(), "instrument.original_value", true));
  if (in.daily_available_hours() < 1 || in.daily_available_hours() > 24) {
    return InvalidField("instrument.daily_available_hours", "must be between 1 and 24");
  }
  if (in.modes().empty()) {
    return InvalidField("instrument.modes", "offer at least one sharing mode");
  }
  std::set<int> modes;
  for (int i = 0; i < in.modes_size(); ++i) {
    const auto& m = in.modes(i);
    const std::string f = absl::StrCat("instrument.modes[", i, "]");
    if (m.mode() == labshare::type::v1::SHARING_MODE_UNSPECIFIED ||
        !labshare::type::v1::SharingMode_IsValid(m.mode())) {
      return InvalidField(f + ".mode", "choose ON_SITE, LEASE, JOINT_RESEARCH or TECHNICAL_SERVICE");
    }
    if (!modes.insert(m.mode()).second) {
      return InvalidField(f + ".mode", absl::StrCat(ModeName(m.mode()), " is offered twice"));
    }
    if (m.mode() == labshare::type::v1::LEASE) {
      if (m.has_slot_rules()) return InvalidField(f + ".slot_rules", "LEASE uses lease_rules");
      if (!m.has_lease_rules()) return InvalidField(f + ".lease_rules", "required for LEASE");
      LS_RETURN_IF_ERROR(ValidateLeaseRules(m.lease_rules(), f + ".lease_rules"));
    } else {
      if (m.has_lease_rules()) return InvalidField(f + ".lease_rules", "only for LEASE");
      if (!m.has_slot_rules()) {
        return InvalidField(f + ".slot_rules", absl::StrCat("required for ", ModeName(m.mode())));
      }
      LS_RETURN_IF_ERROR(ValidateSlotRules(m.slot_rules(), f + ".slot_rules"));
      const auto& period = m.slot_rules().report_acceptance_period();
      if (m.mode() != labshare::type::v1::TECHNICAL_SERVICE && (period.seconds() != 0 || period.nanos() != 0)) {
        return InvalidField(f + ".slot_rules.report_acceptance_period",
                            absl::StrCat("only for TECHNICAL_SERVICE (reports of service orders), not ",
                                         ModeName(m.mode())));
      }
    }
  }
  std::set<std::string> entries;
  for (int i = 0; i < in.service_catalogue_size(); ++i) {
    const auto& e = in.service_catalogue(i);
    const std::string f = absl::StrCat("instrument.service_catalogue[", i, "]");
    if (!ValidId(e.entry_id())) return InvalidField(f + ".entry_id", "must match [a-z0-9][a-z0-9-]{0,62}");
    if (!entries.insert(e.entry_id()).second) return InvalidField(f + ".entry_id", "is listed twice");
    if (e.display_name().empty()) return InvalidField(f + ".display_name", "required");
    if (e.unit() == v1::SERVICE_UNIT_UNSPECIFIED || !v1::ServiceUnit_IsValid(e.unit())) {
      return InvalidField(f + ".unit", "choose PER_SAMPLE or PER_TEST");
    }
    LS_RETURN_IF_ERROR(ValidateDuration(e.instrument_time_per_unit(), f + ".instrument_time_per_unit"));
  }
  if (!in.service_catalogue().empty() && !modes.count(labshare::type::v1::TECHNICAL_SERVICE)) {
    return InvalidField("instrument.service_catalogue",
                        "a service catalogue needs the TECHNICAL_SERVICE mode");
  }
  return ValidatePolicy(in.access_policy(), "instrument.access_policy");
}

bool InstrumentTransitionAllowed(v1::InstrumentState from, v1::InstrumentState to) {
  if (from == v1::RETIRED) return false;
  return (from == v1::ACTIVE && (to == v1::MAINTENANCE || to == v1::RETIRED)) ||
         (from == v1::MAINTENANCE && (to == v1::ACTIVE || to == v1::RETIRED));
}

const v1::ModeOffering* FindMode(const v1::Instrument& instrument, SharingMode mode) {
  for (const auto& m : instrument.modes()) {
    if (m.mode() == mode) return &m;
  }
  return nullptr;
}

const v1::SlotRules& SlotRulesOf(const v1::Instrument& instrument, SharingMode mode) {
  static const v1::SlotRules* kNone = new v1::SlotRules();
  const v1::ModeOffering* m = FindMode(instrument, mode);
  return m ? m->slot_rules() : *kNone;
}

const v1::AccessPolicy& EffectivePolicy(const v1::Instrument& instrument,
                                        const v1::Facility& facility) {
  return instrument.has_access_policy() ? instrument.access_policy() : facility.access_policy();
}

// ------------------------------------------------------------ rates

absl::Status ValidateRate(const v1::Rate& rate, const v1::Instrument& instrument) {
  LS_RETURN_IF_ERROR(ValidateRateFields(rate));
  LS_RETURN_IF_ERROR(ValidateRateCurrency(rate, instrument));
  return ValidateRateUnitFor(rate, instrument);
}

absl::Status ValidateRateUnitFor(const v1::Rate& rate, const v1::Instrument& instrument) {
  // A line billing or a quote could never use as priced is refused: a
  // catalogue entry is priced in its own unit (billing charges an order in
  // the entry's unit), a lease in the unit of its lease rules' rate basis.
  if (rate.mode() == labshare::type::v1::TECHNICAL_SERVICE && !rate.service_entry_id().empty()) {
    for (const auto& e : instrument.service_catalogue()) {
      if (e.entry_id() != rate.service_entry_id()) continue;
      const v1::RateUnit want = e.unit() == v1::PER_TEST ? v1::RATE_PER_TEST : v1::RATE_PER_SAMPLE;
      if (rate.unit() != want) {
        return InvalidField("rate.unit", absl::StrCat("catalogue entry '", e.entry_id(), "' is priced ",
                                                      v1::ServiceUnit_Name(e.unit()), ": use ",
                                                      v1::RateUnit_Name(want)));
      }
    }
  }
  if (rate.mode() == labshare::type::v1::LEASE) {
    const v1::ModeOffering* m = FindMode(instrument, labshare::type::v1::LEASE);
    if (m != nullptr && m->lease_rules().rate_basis() != v1::LEASE_RATE_BASIS_UNSPECIFIED) {
      const v1::RateUnit want =
          m->lease_rules().rate_basis() == v1::PER_MONTH ? v1::RATE_PER_MONTH : v1::RATE_PER_DAY;
      if (rate.unit() != want) {
        return InvalidField("rate.unit", absl::StrCat("the instrument's lease rules have rate_basis ",
                                                      v1::LeaseRateBasis_Name(m->lease_rules().rate_basis()),
                                                      ": use ", v1::RateUnit_Name(want)));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRateCurrency(const v1::Rate& rate, const v1::Instrument& instrument) {
  if (rate.price().currency_code() != instrument.original_value().currency_code()) {
    return InvalidField("rate.price.currency_code",
                        absl::StrCat("must be the instrument's currency ",
                                     instrument.original_value().currency_code()));
  }
  return absl::OkStatus();
}

absl::Status ValidateRateFields(const v1::Rate& rate) {
  using labshare::type::v1::PayerClass_IsValid;
  if (rate.mode() == labshare::type::v1::SHARING_MODE_UNSPECIFIED ||
      !labshare::type::v1::SharingMode_IsValid(rate.mode())) {
    return InvalidField("rate.mode", "required");
  }
  if (rate.payer_class() == labshare::type::v1::PAYER_CLASS_UNSPECIFIED ||
      !PayerClass_IsValid(rate.payer_class())) {
    return InvalidField("rate.payer_class", "choose OWNER, MEMBER or NON_MEMBER");
  }
  if (!rate.tier().empty() && rate.payer_class() != labshare::type::v1::MEMBER) {
    return InvalidField("rate.tier", "only MEMBER lines name a tier");
  }
  LS_RETURN_IF_ERROR(ValidateMoney(rate.price(), "rate.price", true));
  if (!rate.has_effective_time()) return InvalidField("rate.effective_time", "required");
  if (rate.has_tax_rate_bps() && (rate.tax_rate_bps() < 0 || rate.tax_rate_bps() > 10000)) {
    return InvalidField("rate.tax_rate_bps", "between 0 and 10000 basis points (600 = 6 %), or unset");
  }
  const v1::RateUnit u = rate.unit();
  bool fits = false;
  switch (rate.mode()) {
    case labshare::type::v1::ON_SITE:
    case labshare::type::v1::JOINT_RESEARCH: fits = u == v1::PER_HOUR; break;
    case labshare::type::v1::LEASE: fits = u == v1::RATE_PER_DAY || u == v1::RATE_PER_MONTH; break;
    case labshare::type::v1::TECHNICAL_SERVICE:
      fits = u == v1::RATE_PER_SAMPLE || u == v1::RATE_PER_TEST || u == v1::PER_HOUR;
      break;
    default: break;
  }
  if (!fits) {
    return InvalidField("rate.unit", absl::StrCat(v1::RateUnit_Name(u), " does not fit mode ",
                                                  ModeName(rate.mode())));
  }
  if (rate.mode() != labshare::type::v1::TECHNICAL_SERVICE && !rate.service_entry_id().empty()) {
    return InvalidField("rate.service_entry_id", "only TECHNICAL_SERVICE lines name an entry");
  }
  if (rate.mode() == labshare::type::v1::TECHNICAL_SERVICE && u != v1::PER_HOUR &&
      rate.service_entry_id().empty()) {
    return InvalidField("rate.service_entry_id",
                        "per-sample and per-test lines name the catalogue entry they price");
  }
  return absl::OkStatus();
}

namespace {
std::string RateKeyPrefix(const v1::Rate& rate, char sep) {
  const absl::string_view s(&sep, 1);
  return absl::StrCat(absl::StrFormat("%02d", static_cast<int>(rate.mode())), s,
                      static_cast<int>(rate.payer_class()), s, rate.tier(), s, rate.service_entry_id(), s);
}

// Seconds that sort as bytes in numeric order, 20 characters: %020d when
// not negative (as the first formats wrote them); before 1970 '-' (below
// every digit) and 10^18 + seconds in 19 digits, so that -2 sorts before
// -1 (a valid Timestamp's seconds are above -10^12).
std::string SortableSeconds(int64_t seconds) {
  if (seconds >= 0) return Pad(seconds);
  return absl::StrFormat("-%019d", int64_t{1'000'000'000'000'000'000} + seconds);
}
}  // namespace

std::string RateSortKey(const v1::Rate& rate, absl::string_view rate_id) {
  const char sep = kRateKeySeparator;
  return absl::StrCat(RateKeyPrefix(rate, sep), SortableSeconds(rate.effective_time().seconds()), ".",
                      absl::StrFormat("%09d", rate.effective_time().nanos()), absl::string_view(&sep, 1), rate_id);
}

bool IsRateSortKey(absl::string_view member) {
  const size_t id_sep = member.rfind(kRateKeySeparator);
  if (id_sep == absl::string_view::npos || member.find('|') != absl::string_view::npos) return false;
  const size_t time_sep = member.rfind(kRateKeySeparator, id_sep == 0 ? 0 : id_sep - 1);
  if (time_sep == absl::string_view::npos || time_sep >= id_sep) return false;
  return member.substr(time_sep + 1, id_sep - time_sep - 1).find('.') != absl::string_view::npos;
}

std::string RateIdSeed(const v1::Rate& rate) {
  return absl::StrCat(RateKeyPrefix(rate, '|'), Pad(rate.effective_time().seconds()), "|");
}

PayerClass PayerClassFor(const v1::Organization& payer, const v1::Instrument& instrument) {
  if (payer.name() == instrument.owner_organization()) return labshare::type::v1::OWNER;
  if (payer.membership_state() == v1::MEMBER) return labshare::type::v1::MEMBER;
  return labshare::type::v1::NON_MEMBER;
}

const v1::Rate* FindRate(const std::vector<v1::Rate>& rates, SharingMode mode, PayerClass cls,
                         absl::string_view tier, absl::string_view service_entry_id,
                         absl::Time at) {
  auto latest = [&](absl::string_view want_tier) -> const v1::Rate* {
    const v1::Rate* best = nullptr;
    for (const auto& r : rates) {
      if (r.mode() != mode || r.payer_class() != cls || r.tier() != want_tier ||
          r.service_entry_id() != service_entry_id || FromProto(r.effective_time()) > at) {
        continue;
      }
      if (best == nullptr || FromProto(r.effective_time()) > FromProto(best->effective_time()) ||
          (FromProto(r.effective_time()) == FromProto(best->effective_time()) &&
           r.name() > best->name())) {
        best = &r;
      }
    }
    return best;
  };
  if (cls == labshare::type::v1::MEMBER && !tier.empty()) {
    if (const v1::Rate* r = latest(tier)) return r;
  }
  return latest("");
}

std::vector<const v1::Rate*> RatesInForceOrLater(const std::vector<v1::Rate>& rates, absl::Time now) {
  using Key = std::tuple<int, int, std::string, std::string>;
  auto key = [](const v1::Rate& r) { return Key{r.mode(), r.payer_class(), r.tier(), r.service_entry_id()}; };
  // FindRate's choice for each key: the latest effective_time <= now, the
  // greater name on a tie.
  std::map<Key, const v1::Rate*> in_force;
  for (const auto& r : rates) {
    const absl::Time t = FromProto(r.effective_time());
    if (t > now) continue;
    const v1::Rate*& best = in_force[key(r)];
    if (best == nullptr || t > FromProto(best->effective_time()) ||
        (t == FromProto(best->effective_time()) && r.name() > best->name())) {
      best = &r;
    }
  }
  std::vector<const v1::Rate*> out;
  for (const auto& r : rates) {
    if (FromProto(r.effective_time()) > now || in_force[key(r)] == &r) out.push_back(&r);
  }
  return out;
}

namespace {
v1::LeaseRateBasis LeaseBasisOf(const v1::Instrument& instrument) {
  const v1::ModeOffering* m = FindMode(instrument, labshare::type::v1::LEASE);
  return m == nullptr ? v1::LEASE_RATE_BASIS_UNSPECIFIED : m->lease_rules().rate_basis();
}

// The unit of catalogue entry `id`; SERVICE_UNIT_UNSPECIFIED when there is none.
v1::ServiceUnit EntryUnitOf(const v1::Instrument& instrument, absl::string_view id) {
  for (const auto& e : instrument.service_catalogue()) {
    if (e.entry_id() == id) return e.unit();
  }
  return v1::SERVICE_UNIT_UNSPECIFIED;
}
}  // namespace

bool RatePricingChanged(const v1::Instrument& before, const v1::Instrument& after) {
  if (before.original_value().currency_code() != after.original_value().currency_code()) return true;
  if (LeaseBasisOf(before) != LeaseBasisOf(after)) return true;
  for (const auto& e : after.service_catalogue()) {
    if (EntryUnitOf(before, e.entry_id()) != e.unit()) return true;
  }
  return false;
}

std::string RateConflictWithChange(const v1::Rate& rate, const v1::Instrument& before,
                                   const v1::Instrument& after) {
  if (ValidateRateCurrency(rate, before).ok() && !ValidateRateCurrency(rate, after).ok()) {
    return absl::StrCat("priced in ", rate.price().currency_code(), ", not the new currency ",
                        after.original_value().currency_code());
  }
  if (!ValidateRateUnitFor(rate, before).ok() || ValidateRateUnitFor(rate, after).ok()) return "";
  if (rate.mode() == labshare::type::v1::LEASE) {
    const v1::LeaseRateBasis basis = LeaseBasisOf(after);
    return absl::StrCat("LEASE in ", v1::RateUnit_Name(rate.unit()), ", not ",
                        v1::RateUnit_Name(basis == v1::PER_MONTH ? v1::RATE_PER_MONTH : v1::RATE_PER_DAY),
                        " (the new rate_basis ", v1::LeaseRateBasis_Name(basis), ")");
  }
  const v1::ServiceUnit unit = EntryUnitOf(after, rate.service_entry_id());
  return absl::StrCat("in ", v1::RateUnit_Name(rate.unit()), " for catalogue entry '", rate.service_entry_id(),
                      "', not ", v1::RateUnit_Name(unit == v1::PER_TEST ? v1::RATE_PER_TEST : v1::RATE_PER_SAMPLE),
                      " (its new unit ", v1::ServiceUnit_Name(unit), ")");
}

// ------------------------------------------------------------ qualifications

int QualificationValidityDays(const v1::Instrument& instrument) {
  const v1::ModeOffering* m = FindMode(instrument, labshare::type::v1::ON_SITE);
  return m ? m->slot_rules().qualification_validity_days() : 0;
}

void ComputeQualificationState(v1::Qualification& q, int validity_days, absl::Time now) {
  if (q.revoked()) {
    q.set_state(v1::REVOKED);
    q.clear_expire_time();
    return;
  }
  if (validity_days <= 0) {
    q.set_state(v1::VALID);
    q.clear_expire_time();
    return;
  }
  absl::Time base = FromProto(q.grant_time());
  if (q.has_last_use_time()) base = std::max(base, FromProto(q.last_use_time()));
  const absl::Time expire = base + absl::Hours(24) * validity_days;
  *q.mutable_expire_time() = ToProto(expire);
  q.set_state(now < expire ? v1::VALID : v1::EXPIRED);
}

// ------------------------------------------------------------ maintenance

absl::Status ValidateMaintenanceWindow(const v1::MaintenanceWindow& w) {
  if (!w.interval().has_start_time() || !w.interval().has_end_time()) {
    return InvalidField("maintenance_window.interval", "start_time and end_time are required");
  }
  if (FromProto(w.interval().end_time()) <= FromProto(w.interval().start_time())) {
    return InvalidField("maintenance_window.interval.end_time",
                        "must be after start_time (intervals are half-open [start, end))");
  }
  return absl::OkStatus();
}

std::string WindowSortKey(const v1::MaintenanceWindow& w, absl::string_view window_id) {
  return absl::StrCat(SortableSeconds(w.interval().start_time().seconds()), ".",
                      absl::StrFormat("%09d", w.interval().start_time().nanos()), "|", window_id);
}

int64_t WindowMemberStartSeconds(absl::string_view member) {
  const absl::string_view secs = member.substr(0, member.find_first_of(".|"));
  int64_t v = 0;
  if (secs.size() == 20 && secs[0] == '-' && secs[1] == '0' && secs[2] != '0') {
    // SortableSeconds before 1970: 10^18 + seconds after the '-' (a valid
    // Timestamp's seconds are above -10^12, so the second digit is a 9);
    // %020d wrote "-000...", as the whole-seconds formats did.
    if (absl::SimpleAtoi(secs.substr(1), &v)) return v - int64_t{1'000'000'000'000'000'000};
  }
  return absl::SimpleAtoi(secs, &v) ? v : 0;
}

// ------------------------------------------------------------ access

bool PolicyAllows(const v1::AccessPolicy& policy, const v1::Organization& payer) {
  if (payer.foreign() && !policy.allow_foreign()) return false;
  const bool member = payer.membership_state() == v1::MEMBER;
  if (member && !policy.allow_members()) return false;
  if (!member && !policy.allow_non_members()) return false;
  if (!policy.allowed_types().empty() &&
      std::find(policy.allowed_types().begin(), policy.allowed_types().end(), payer.type()) ==
          policy.allowed_types().end()) {
    return false;
  }
  return true;
}

BookingWindow BookingWindowFor(const v1::ModeOffering& offering, PayerClass cls, absl::string_view tier,
                               absl::Time now) {
  BookingWindow w;
  if (offering.mode() == labshare::type::v1::LEASE) {
    const auto& lr = offering.lease_rules();
    w.earliest_start = now + FromProto(lr.handover_buffer());
    if (lr.has_horizon()) {
      w.latest_start = now + FromProto(lr.horizon());
      w.latest_end = w.latest_start + absl::Hours(24) * std::max(lr.max_term_days(), 0);
    } else {
      w.latest_end = absl::InfiniteFuture();
    }
    return w;
  }
  const auto& sr = offering.slot_rules();
  w.earliest_start = now + FromProto(sr.min_notice());
  absl::Duration horizon = FromProto(sr.member_horizon());
  if (cls == labshare::type::v1::NON_MEMBER) {
    horizon = FromProto(sr.non_member_horizon());
  } else if (cls == labshare::type::v1::OWNER) {
    // The owner is never behind a member of any tier.
    for (const auto& th : sr.tier_horizons()) horizon = std::max(horizon, FromProto(th.horizon()));
  } else if (!tier.empty()) {
    for (const auto& th : sr.tier_horizons()) {
      if (th.tier() == tier) {
        horizon = FromProto(th.horizon());
        w.horizon_tier = th.tier();
        break;
      }
    }
  }
  w.latest_end = now + horizon;
  return w;
}

v1::CheckAccessResponse EvaluateAccess(const AccessFacts& facts,
                                       const v1::CheckAccessRequest& request, absl::Time now) {
  const v1::Instrument& instrument = *facts.instrument;
  const v1::Organization& payer = *facts.payer;
  v1::CheckAccessResponse out;
  out.set_payer_organization(payer.name());
  out.set_membership_state(payer.membership_state());
  out.set_tier(payer.tier());
  out.set_owner_organization(instrument.owner_organization());
  const PayerClass cls = PayerClassFor(payer, instrument);
  out.set_payer_class(cls);
  auto deny = [&](v1::DenialCode code, std::string message) {
    *out.add_denials() = MakeDenial(code, std::move(message));
  };

  if (facts.user->disabled()) deny(v1::USER_DISABLED, "the user account is disabled");
  if (instrument.state() != v1::ACTIVE) {
    deny(v1::INSTRUMENT_NOT_ACTIVE,
         absl::StrCat("the instrument is ", v1::InstrumentState_Name(instrument.state())));
  }
  // A suspended organisation is not refused: it books as NON_MEMBER (no
  // member price or priority; DOMAIN.md), so the access policy's
  // allow_non_members and the NON_MEMBER rate line decide.
  const bool owner = cls == labshare::type::v1::OWNER;
  if (!owner && !PolicyAllows(EffectivePolicy(instrument, *facts.facility), payer)) {
    // Named by the policy that refused: the instrument's own, or else its
    // facility's (EffectivePolicy).
    deny(v1::ACCESS_POLICY_FORBIDS,
         instrument.has_access_policy() ? "the instrument's access policy does not admit this organisation"
                                        : "the facility's access policy does not admit this organisation");
  }

  const absl::Time start = FromProto(request.interval().start_time());
  const absl::Time end = FromProto(request.interval().end_time());
  const v1::ModeOffering* offering = FindMode(instrument, request.mode());
  if (offering == nullptr) {
    deny(v1::MODE_NOT_OFFERED, absl::StrCat("the instrument does not offer ",
                                             ModeName(request.mode())));
  } else {
    *out.mutable_mode_offering() = *offering;
    bool approval = offering->approval_required() || request.mode() == labshare::type::v1::LEASE;
    const absl::Duration length = end - start;
    if (request.mode() == labshare::type::v1::LEASE) {
      const auto& lr = offering->lease_rules();
      const int64_t days = absl::ToInt64Hours(length) / 24;
      if (length < absl::Hours(24) * lr.min_term_days()) {
        deny(v1::BLOCK_TOO_SHORT, absl::StrCat("a lease runs at least ", lr.min_term_days(), " days"));
      }
      if (days > lr.max_term_days() || length > absl::Hours(24) * lr.max_term_days()) {
        deny(v1::BLOCK_TOO_LONG, absl::StrCat("a lease runs at most ", lr.max_term_days(), " days"));
      }
      const BookingWindow window = BookingWindowFor(*offering, cls, payer.tier(), now);
      if (start > window.latest_start) {
        deny(v1::BEYOND_HORIZON, absl::StrCat("a lease may start at most ",
                                              absl::FormatDuration(FromProto(lr.horizon())),
                                              " from now"));
      }
      if (start < window.earliest_start) {
        deny(v1::INSUFFICIENT_NOTICE,
             absl::StrCat("a lease term starts at least its handover buffer (",
                          absl::FormatDuration(FromProto(lr.handover_buffer())), ") from now"));
      }
    } else {
      const auto& sr = offering->slot_rules();
      if (length < FromProto(sr.min_block())) {
        deny(v1::BLOCK_TOO_SHORT, absl::StrCat("bookings last at least ",
                                                absl::FormatDuration(FromProto(sr.min_block()))));
      }
      if (length > FromProto(sr.max_block())) {
        deny(v1::BLOCK_TOO_LONG, absl::StrCat("bookings last at most ",
                                               absl::FormatDuration(FromProto(sr.max_block()))));
      }
      const bool member = cls != labshare::type::v1::NON_MEMBER;
      const BookingWindow window = BookingWindowFor(*offering, cls, payer.tier(), now);
      // SlotRules.non_member_horizon 0: a non-member may not book ahead at
      // all, so every interval is beyond it (also one ending by now).
      const bool closed = !member && FromProto(sr.non_member_horizon()) <= absl::ZeroDuration();
      if (closed) {
        deny(v1::BEYOND_HORIZON, "non-members may not book this instrument ahead (no non-member horizon)");
      } else if (end > window.latest_end) {
        deny(v1::BEYOND_HORIZON,
             absl::StrCat(!member                                  ? "non-members"
                          : cls == labshare::type::v1::OWNER        ? "the owner"
                          : !window.horizon_tier.empty()            ? absl::StrCat("members of tier ", window.horizon_tier)
                                                                    : "members",
                          " may book time ending at most ", absl::FormatDuration(window.latest_end - now),
                          " ahead"));
      }
      if (start < window.earliest_start) {
        deny(v1::INSUFFICIENT_NOTICE, absl::StrCat("book at least ",
                                                    absl::FormatDuration(FromProto(sr.min_notice())),
                                                    " before the start"));
      }
      const absl::Duration threshold = FromProto(sr.approval_threshold());
      if (threshold > absl::ZeroDuration() && length > threshold) approval = true;
      // The user's qualification is reported whenever there is one; it is
      // required (and its state denies) only when the ON_SITE rules give it
      // a validity.
      const int validity = sr.qualification_validity_days();
      if (request.mode() == labshare::type::v1::ON_SITE && facts.qualification != nullptr) {
        v1::Qualification q = *facts.qualification;
        ComputeQualificationState(q, validity, now);
        if (validity > 0 && q.state() == v1::REVOKED) {
          deny(v1::QUALIFICATION_REVOKED, "the user's qualification was revoked");
        } else if (validity > 0 && q.state() == v1::EXPIRED) {
          deny(v1::QUALIFICATION_EXPIRED,
               "the user's qualification lapsed without use; ask the facility staff to renew it");
        }
        *out.mutable_qualification() = std::move(q);
      } else if (request.mode() == labshare::type::v1::ON_SITE && validity > 0) {
        deny(v1::QUALIFICATION_MISSING,
             "the user has no qualification on this instrument; ask the facility staff");
      }
    }
    out.set_approval_required(approval);
  }
  // A window over the buffers hits the booking as one over its reserved
  // time does (SlotRules.buffer).
  const absl::Time block_start = facts.has_blocked ? facts.blocked_start : start;
  const absl::Time block_end = facts.has_blocked ? facts.blocked_end : end;
  if (const v1::MaintenanceWindow* w = ScheduledWindowOver(facts.windows, block_start, block_end)) {
    const bool buffer_only =
        !(FromProto(w->interval().start_time()) < end && start < FromProto(w->interval().end_time()));
    deny(v1::DURING_MAINTENANCE, absl::StrCat(buffer_only ? "the buffer overlaps" : "overlaps",
                                              " maintenance window ", w->name(),
                                              w->reason().empty() ? "" : ": ", w->reason()));
  }
  // A mode not offered has no rate lines (CreateRate refuses them): that
  // denial is MODE_NOT_OFFERED alone, not NO_RATE as well.
  // service_entry_id names a TECHNICAL_SERVICE catalogue entry; other
  // modes ignore it (their lines name no entry).
  const std::string entry =
      request.mode() == labshare::type::v1::TECHNICAL_SERVICE ? request.service_entry_id() : "";
  const v1::Rate* rate = offering == nullptr ? nullptr
                                             : FindRate(facts.rates, request.mode(), cls, payer.tier(), entry, start);
  if (rate != nullptr) {
    *out.mutable_rate() = *rate;
  } else if (!owner && offering != nullptr) {
    deny(v1::NO_RATE, absl::StrCat("no ", labshare::type::v1::PayerClass_Name(cls),
                                   " rate is in force for this mode at the start time"));
  }
  out.set_allowed(out.denials().empty());
  return out;
}

}  // namespace labshare::inventory
