// The contract's "Roles:" lines and each service's policy table must say the
// same thing. Every rpc comment in proto/labshare/*/v1/*.proto is parsed into
// a normal form (role -> scope bits: self, party, owner, any) and compared
// with XxxPolicy().rules(); a difference, an rpc without a "Roles:" line, an
// rpc missing from a table or a table entry for no rpc fails. Phrases the
// parser does not know fail too: a new wording must be given its meaning
// here, on purpose.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "google/protobuf/descriptor.h"
#include "services/billing/billing_service.h"
#include "services/booking/booking_service.h"
#include "services/inventory/identity_service.h"
#include "services/inventory/inventory_service.h"
#include "services/notify/notify_mail_module.h"
#include "services/notify/webhook_manager.h"
#include "services/notify/feed_manager.h"
#include "services/usage/usage_service.h"

namespace labshare {
namespace {

using Entry = std::map<Role, unsigned>;

const std::vector<Role>& Roles() {
  static const std::vector<Role> kAll = {Role::kLabUser, Role::kFacilityStaff, Role::kMemberBillingAdmin,
                                         Role::kConsortiumAdmin, Role::kAuditor, Role::kService};
  return kAll;
}

std::optional<Role> ContractRole(absl::string_view name) {
  static const std::map<std::string, Role, std::less<>> kNames = {
      {"LAB_USER", Role::kLabUser},       {"FACILITY_STAFF", Role::kFacilityStaff},
      {"MEMBER_BILLING_ADMIN", Role::kMemberBillingAdmin}, {"CONSORTIUM_ADMIN", Role::kConsortiumAdmin},
      {"AUDITOR", Role::kAuditor},        {"SERVICE", Role::kService}};
  auto it = kNames.find(name);
  if (it == kNames.end()) return std::nullopt;
  return it->second;
}

std::string Show(const Entry& e) {
  std::vector<std::string> parts;
  for (const auto& [role, scope] : e) {
    std::vector<std::string> s;
    if (scope & kScopeAny) s.push_back("any");
    if (scope & kScopeSelf) s.push_back("self");
    if (scope & kScopeParty) s.push_back("party");
    if (scope & kScopeOwner) s.push_back("owner");
    if (scope & kScopePayer) s.push_back("payer");
    parts.push_back(absl::StrCat(RoleName(role), ":", absl::StrJoin(s, "|")));
  }
  return parts.empty() ? "(nobody)" : absl::StrJoin(parts, " ");
}

// What a qualifier after a list of roles means. kScopeAny for none.
std::optional<unsigned> Qualifier(absl::string_view q) {
  static const std::map<std::string, unsigned, std::less<>> kMeaning = {
      {"", kScopeAny},
      {"for anyone", kScopeAny},
      {"for themselves", kScopeSelf},
      // The caller's organisation is a party of the resource or of the filter.
      // The caller's organisation pays (a cost-sharing participant does not).
      {"of the paying organisation", kScopePayer},
      {"of the paying organisation or a cost-sharing participant", kScopeParty},
      {"of the lessee organisation", kScopeParty},
      {"of the client organisation", kScopeParty},
      {"of a participant organisation", kScopeParty},
      {"of that organisation", kScopeParty},
      {"of the account's organisation", kScopeParty},
      {"of an organisation that owns one of its entries' accounts", kScopeParty},
      {"of the payee organisation", kScopeParty},
      {"of the payer or payee", kScopeParty},
      {"of the payer or of a payee", kScopeParty},
      {"for their organisation", kScopeParty},
      {"for their own organisation", kScopeParty},
      {"only users of their own organisation", kScopeParty},
      {"must filter by their own organisation", kScopeParty},
      {"scoped to their own organisation", kScopeParty},
      {"scoped to its own row or column", kScopeParty},
      {"its own row", kScopeParty},
      {"with filter.owner_organizations = [own]", kScopeParty},
      {"with scope.owner_organizations = [own]", kScopeParty},
      // The caller's organisation owns or operates the instrument.
      {"of the owner", kScopeOwner},
      {"of the owner organisation", kScopeOwner},
      {"of the owner or operator", kScopeOwner},
      {"of the owner of a budgeted instrument", kScopeOwner},
      // Both.
      {"of the payer, the owner or a split participant", kScopeParty | kScopeOwner},
      {"of the owner or lessee", kScopeParty | kScopeOwner},
      {"of the owner or client", kScopeParty | kScopeOwner},
      {"of the owner or operator and of the paying organisation", kScopeParty | kScopeOwner},
      {"for instruments its organisation owns or operates and for its own organisation",
       kScopeParty | kScopeOwner},
  };
  auto it = kMeaning.find(q);
  if (it == kMeaning.end()) return std::nullopt;
  return it->second;
}

// A clause that narrows what a list returns without changing who may call.
bool Narrowing(absl::string_view q) {
  for (absl::string_view prefix : {"are narrowed", "is narrowed", "narrowed", "must filter"}) {
    if (absl::StartsWith(q, prefix)) return true;
  }
  return false;
}

std::string StripParentheses(absl::string_view in) {
  std::string out;
  int depth = 0;
  for (char c : in) {
    if (c == '(') ++depth;
    else if (c == ')') --depth;
    else if (depth == 0) out.push_back(c);
  }
  std::string collapsed;
  for (char c : out) {
    if (c == ' ' && (collapsed.empty() || collapsed.back() == ' ')) continue;
    collapsed.push_back(c);
  }
  // "X ." or "X ," left by a removed parenthesis.
  return std::regex_replace(collapsed, std::regex(" ([.,;])"), "$1");
}

struct Rpc {
  std::string service;  // full name
  std::string method;
  std::string roles;    // text after "Roles:" up to "Errors:"
  bool has_roles = false;
  bool and_errors = false;  // "Roles and errors: as X"
};

std::vector<Rpc> ReadProto(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::string package, service;
  std::vector<Rpc> out;
  static const std::regex kPackage(R"(^package ([\w.]+);)"), kService(R"(^service (\w+) \{)"),
      kRpc(R"(^\s*rpc (\w+)\()");
  std::smatch m;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (std::regex_search(lines[i], m, kPackage)) package = m[1];
    if (std::regex_search(lines[i], m, kService)) service = absl::StrCat(package, ".", std::string(m[1]));
    if (!std::regex_search(lines[i], m, kRpc)) continue;
    std::vector<std::string> comment;
    for (size_t j = i; j-- > 0;) {
      absl::string_view t = absl::StripAsciiWhitespace(lines[j]);
      if (!absl::ConsumePrefix(&t, "//")) break;
      comment.insert(comment.begin(), std::string(absl::StripAsciiWhitespace(t)));
    }
    Rpc rpc;
    rpc.service = service;
    rpc.method = m[1];
    const std::string text = absl::StrJoin(comment, " ");
    size_t at = text.find("Roles:");
    size_t skip = 6;
    if (at == std::string::npos) {
      at = text.find("Roles and errors:");
      skip = 17;
      rpc.and_errors = true;
    }
    if (at != std::string::npos) {
      rpc.has_roles = true;
      std::string rest = text.substr(at + skip);
      const size_t errors = rest.find("Errors:");
      if (errors != std::string::npos) rest = rest.substr(0, errors);
      rpc.roles = std::string(absl::StripAsciiWhitespace(rest));
    }
    out.push_back(std::move(rpc));
  }
  return out;
}

// The normal form of one "Roles:" text; `known` resolves "as X".
absl::StatusOr<Entry> Normalise(const Rpc& rpc, const std::map<std::string, Entry>& known) {
  std::string text = StripParentheses(rpc.roles);
  while (!text.empty() && (text.back() == '.' || text.back() == ' ')) text.pop_back();
  Entry e;
  std::vector<std::string> clauses = absl::StrSplit(text, "; ");
  for (size_t c = 0; c < clauses.size(); ++c) {
    std::string clause(absl::StripAsciiWhitespace(clauses[c]));
    absl::string_view v = clause;
    if (absl::ConsumePrefix(&v, "as ")) {
      // "as X" or "as X, narrowed to ..." (a list narrowed like X's reads).
      const std::string other(v.substr(0, v.find_first_of(", ")));
      auto it = known.find(other);
      if (it == known.end()) return absl::NotFoundError(absl::StrCat("\"as ", other, "\": no such rpc before it"));
      for (const auto& [role, scope] : it->second) e[role] |= scope;
      absl::string_view tail = v.substr(other.size());
      if (rpc.and_errors || tail.empty() || absl::StartsWith(tail, ", narrowed")) continue;
      return absl::InvalidArgumentError(absl::StrCat("unknown tail after \"as ", other, "\": ", tail));
    }
    // "Roles and errors: as X; <more errors>": the rest is about errors.
    if (rpc.and_errors && c > 0) break;
    if (rpc.and_errors) return absl::InvalidArgumentError("\"Roles and errors:\" must start with \"as X\"");
    if (v == "any authenticated caller") {
      for (Role r : Roles()) e[r] |= kScopeAny;
      continue;
    }
    if (absl::StartsWith(v, "the \"-\" parents only ")) continue;  // which accounts, not who
    if (v == "the booking's user") {
      e[Role::kLabUser] |= kScopeSelf;
      continue;
    }
    if (absl::ConsumePrefix(&v, "owner staff")) {
      if (!v.empty() && !absl::StartsWith(v, " for any")) {
        return absl::InvalidArgumentError(absl::StrCat("unknown qualifier of owner staff: ", v));
      }
      e[Role::kFacilityStaff] |= kScopeOwner;
      continue;
    }
    std::vector<Role> subjects;
    if (absl::ConsumePrefix(&v, "others ")) {
      for (Role r : Roles()) {
        if (!e.count(r)) subjects.push_back(r);
      }
    } else {
      static const std::regex kList(R"(^([A-Z_]+(?:(?:, | and |, and )[A-Z_]+)*)\b ?(.*)$)");
      std::smatch m;
      std::string s(v);
      if (!std::regex_match(s, m, kList)) {
        return absl::InvalidArgumentError(absl::StrCat("clause names no role: \"", clause, "\""));
      }
      const std::string names = m[1];
      for (absl::string_view name : absl::StrSplit(names, ", ")) {
        for (absl::string_view n : absl::StrSplit(name, " and ")) {
          auto role = ContractRole(absl::StripPrefix(n, "and "));
          if (!role) return absl::InvalidArgumentError(absl::StrCat("unknown role ", n, " in \"", clause, "\""));
          subjects.push_back(*role);
        }
      }
      clause = m[2];
      v = clause;
    }
    const bool admitted = std::all_of(subjects.begin(), subjects.end(), [&](Role r) { return e.count(r) > 0; });
    if (Narrowing(v) && admitted) continue;  // who may call is said before
    auto scope = Qualifier(v);
    if (!scope) return absl::InvalidArgumentError(absl::StrCat("unknown qualifier \"", v, "\"; give it a meaning"));
    for (Role r : subjects) e[r] |= *scope;
  }
  return e;
}

struct Service {
  const char* proto;
  const char* name;
  const MethodPolicy* policy;
};

class AuthzContract : public ::testing::TestWithParam<const char*> {};

const std::map<std::string, Service>& Services() {
  static const auto* kServices = new std::map<std::string, Service>{
      {"inventory", {"labshare/inventory/v1/inventory.proto", "labshare.inventory.v1.InventoryService",
                     &inventory::InventoryPolicy()}},
      {"booking", {"labshare/booking/v1/booking.proto", "labshare.booking.v1.BookingService",
                   &booking::BookingPolicy()}},
      {"billing", {"labshare/billing/v1/billing.proto", "labshare.billing.v1.BillingService",
                   &billing::BillingPolicy()}},
      {"usage", {"labshare/usage/v1/usage.proto", "labshare.usage.v1.UsageService", &usage::UsagePolicy()}},
      {"identity", {"labshare/identity/v1/identity.proto", "labshare.identity.v1.IdentityService",
                    &inventory::IdentityPolicy()}},
      {"notify", {"labshare/notify/v1/notify.proto", "labshare.notify.v1.NotificationService",
                  &notify::MailPolicy()}},
      {"webhooks", {"labshare/notify/v1/webhooks.proto", "labshare.notify.v1.WebhookService",
                    &notify::WebhookPolicy()}},
      {"feeds", {"labshare/notify/v1/feeds.proto", "labshare.notify.v1.CalendarFeedService",
                 &notify::FeedPolicy()}},
  };
  return *kServices;
}

TEST_P(AuthzContract, PolicyTableSaysWhatTheRolesLinesSay) {
  const Service& svc = Services().at(GetParam());
  const std::vector<Rpc> rpcs = ReadProto(absl::StrCat(LABSHARE_PROTO_DIR, "/", svc.proto));
  const auto* descriptor = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(svc.name);
  ASSERT_NE(descriptor, nullptr);
  ASSERT_EQ(rpcs.size(), static_cast<size_t>(descriptor->method_count())) << "the parser missed an rpc";
  std::map<std::string, Entry> contract;
  const std::string prefix = absl::StrCat("/", svc.name, "/");
  for (const Rpc& rpc : rpcs) {
    ASSERT_EQ(rpc.service, svc.name);
    EXPECT_TRUE(rpc.has_roles) << rpc.method << " has no \"Roles:\" line";
    if (!rpc.has_roles) continue;
    // Sign-in itself: no credentials (MethodPolicy::AllowUnauthenticated).
    const bool anyone = rpc.roles == "anyone, without a LabShare token.";
    EXPECT_EQ(svc.policy->AllowsUnauthenticated(prefix + rpc.method), anyone)
        << rpc.method << ": the table's AllowUnauthenticated differs from its \"Roles:\" line";
    if (anyone) continue;
    auto e = Normalise(rpc, contract);
    EXPECT_TRUE(e.ok()) << rpc.method << ": " << e.status() << "\n  in: " << rpc.roles;
    if (e.ok()) contract[rpc.method] = *e;
  }
  std::map<std::string, Entry> table;
  for (const auto& [method, entry] : svc.policy->rules()) {
    ASSERT_TRUE(absl::StartsWith(method, prefix)) << method;
    table[method.substr(prefix.size())] = entry;
  }
  for (const auto& [method, entry] : contract) {
    auto it = table.find(method);
    if (it == table.end()) {
      ADD_FAILURE() << method << " is missing from the policy table; contract: " << Show(entry);
      continue;
    }
    EXPECT_EQ(Show(it->second), Show(entry)) << method << ": table (left) differs from its \"Roles:\" line";
  }
  for (const auto& [method, entry] : table) {
    EXPECT_TRUE(contract.count(method)) << method << " is in the table but is no rpc with a \"Roles:\" line";
  }
}

INSTANTIATE_TEST_SUITE_P(AllServices, AuthzContract,
                         ::testing::Values("inventory", "booking", "billing", "usage", "identity", "notify",
                                           "webhooks", "feeds"),
                         [](const auto& info) { return std::string(info.param); });

// The parser itself, on the phrases that carry meaning.
TEST(AuthzContractParser, ReadsRolesScopesAndReferences) {
  std::map<std::string, Entry> known;
  Rpc get{"s", "GetThing", "LAB_USER and MEMBER_BILLING_ADMIN of the lessee organisation; owner staff; "
                           "CONSORTIUM_ADMIN, AUDITOR, SERVICE.", true, false};
  auto e = Normalise(get, known);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(Show(*e), "lab_user:party facility_staff:owner member_billing_admin:party consortium_admin:any "
                      "auditor:any service:any");
  known["GetThing"] = *e;
  Rpc list{"s", "ListThings", "as GetThing, narrowed to the caller's organisation for MEMBER_BILLING_ADMIN.",
           true, false};
  auto l = Normalise(list, known);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(Show(*l), Show(*e));
  Rpc unknown{"s", "X", "LAB_USER of the neighbouring organisation.", true, false};
  EXPECT_FALSE(Normalise(unknown, known).ok());
  Rpc self{"s", "Y", "the booking's user (ON_SITE); SERVICE.", true, false};
  auto y = Normalise(self, known);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(Show(*y), "lab_user:self service:any");
}

}  // namespace
}  // namespace labshare
