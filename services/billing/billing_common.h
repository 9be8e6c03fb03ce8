// Small helpers shared by the billing use cases (charges, pools, invoices,
// payments, listings). Internal to the billing service.
#ifndef LABSHARE_SERVICES_BILLING_BILLING_COMMON_H_
#define LABSHARE_SERVICES_BILLING_BILLING_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_scope.h"
#include "services/billing/billing_store.h"

namespace labshare::billing {

inline constexpr char kDefaultCurrency[] = "CNY";

inline int64_t Ms(absl::Time t) { return absl::ToUnixMillis(t); }

// A pool's cap usage (keys::Cap) is kept per organisation and cap period,
// field "<organization>|<start ms>|<end ms>": both ends, so that a month, a
// quarter and a year starting alike (after a change of cap_period_kind)
// never share a counter. Usage recorded before (field "<organization>|<start
// ms>", LegacyCapField) counts for the kind the pool had then: the kind it
// has while keys::CapLegacyKinds holds none for it, else the kind held there
// (the one UpdateSubsidyPool replaced first).
inline std::string CapField(const std::string& organization, absl::Time start, absl::Time end) {
  return absl::StrCat(organization, "|", Ms(start), "|", Ms(end));
}
inline std::string LegacyCapField(const std::string& organization, absl::Time start) {
  return absl::StrCat(organization, "|", Ms(start));
}
// Whether a pool of cap period kind `kind` reads its legacy cap usage, given
// the kind keys::CapLegacyKinds holds for it (0: none).
inline bool ReadsLegacyCap(int64_t legacy_kind, int kind) { return legacy_kind == 0 || legacy_kind == kind; }
// The last segment of a resource name: "charges/c1" -> "c1". For names
// billing made or checked; a name from a request goes through NameId.
inline std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

// The id of a request's `name`, "{collection}/{id}" with a valid resource id
// ("charges/c1" -> "c1"); INVALID_ARGUMENT (INVALID_NAME) naming `name`
// otherwise ("charges/", "charges/x/c1", "invoices/A").
inline absl::StatusOr<std::string> NameId(const std::string& name, absl::string_view collection) {
  return ParseResourceName(name, collection, "name");
}

// A name in a request whose Errors list it under INVALID_FIELD (a pool to
// top up or update, the invoice or settlement a payment is for): `field`
// must be "{collection}/{id}".
inline absl::Status NameField(const std::string& name, absl::string_view collection, const std::string& field) {
  if (ParseResourceName(name, collection, field).ok()) return absl::OkStatus();
  return InvalidField(field, absl::StrCat("must be ", collection, "/{id}"));
}

inline bool SeesAll(const Principal& p) {
  return p.HasAnyRole({Role::kConsortiumAdmin, Role::kAuditor, Role::kService});
}

// `org` is a payee of the invoice: it has a PayeeBalance, or a line is owed
// to it (also a memo line only, such as a deposit it kept: Invoice's "payees
// named only by memo lines").
inline bool IsInvoicePayee(const v1::Invoice& inv, const std::string& org) {
  return std::any_of(inv.payees().begin(), inv.payees().end(),
                     [&](const v1::PayeeBalance& pb) { return pb.organization() == org; }) ||
         std::any_of(inv.lines().begin(), inv.lines().end(),
                     [&](const v1::InvoiceLine& l) { return l.payee_organization() == org; });
}

// `account` names, or at least begins like, an account of the caller's own
// organisation ("organizations/{own}/..."): what a member may name, checked
// before the name's form (a malformed name of its own is then INVALID_*).
inline bool IsOwnAccountName(const Principal& p, absl::string_view account) {
  return absl::StartsWith(account, absl::StrCat(ActorOrganization(p), "/"));
}

inline absl::Status OrgScope(absl::string_view what) {
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   absl::StrCat("you may see only your own organisation's ", what));
}

// The organisation a caller who does not see everything (a member billing
// admin, facility staff) is narrowed to: its token's, or PERMISSION_DENIED
// ORGANIZATION_SCOPE when the token names none (billing.proto: it "sees only
// its own organisation", and without one it has none to see; an unset filter
// must not widen to every organisation). "" for the all-seeing roles.
inline absl::StatusOr<std::string> OwnScope(const Principal& p, absl::string_view what) {
  if (SeesAll(p)) return std::string();
  std::string own = ActorOrganization(p);
  if (own.empty()) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     absl::StrCat("your token names no organisation, so there are no ", what,
                                  " of your own organisation to see"));
  }
  return own;
}

// Pages a list computed whole (reports, balances, pools): keeps only the page
// of `items` after page.after, a count of the items the previous pages
// returned, and returns the position after this page ("" at the end). The
// position comes out of a verified token; a bad one is INVALID_PAGE_TOKEN
// all the same.
template <typename T>
absl::StatusOr<std::string> KeepPage(const PageRequest& page, google::protobuf::RepeatedPtrField<T>* items) {
  int64_t start = 0;
  if (!page.after.empty() && (!absl::SimpleAtoi(page.after, &start) || start < 0)) {
    return InvalidField("page_token", "not a token from the previous page of this list; start again without page_token",
                        "INVALID_PAGE_TOKEN");
  }
  const int n = items->size();
  const int from = static_cast<int>(std::min<int64_t>(start, n));
  const int to = n - from > page.page_size ? from + page.page_size : n;
  items->DeleteSubrange(to, n - to);
  items->DeleteSubrange(0, from);
  return to < n ? std::to_string(to) : std::string();
}

// A list's `interval` filter, when set, must be a half-open interval with
// start_time before end_time (INVALID_FIELD).
inline absl::Status CheckIntervalFilter(bool has_interval, const labshare::type::v1::Interval& interval) {
  if (has_interval && FromProto(interval.end_time()) <= FromProto(interval.start_time())) {
    return InvalidField("interval", "needs start_time before end_time");
  }
  return absl::OkStatus();
}

inline absl::Status Conflict() {
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the ledger changed concurrently; retry with the same request_id");
}

template <typename T>
absl::StatusOr<T> Parse(const std::string& bytes) {
  T out;
  if (!out.ParseFromString(bytes)) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored document is unreadable");
  }
  return out;
}

// How many index entries past a full page a list examines for one more
// match before it answers a next_page_token anyway. types.proto's
// pagination does not promise that a token leads to a non-empty page, so a
// page that could not look far enough may be followed by an empty last one;
// the bound keeps a full page's cost at most this many more entries.
inline constexpr int kListLookAhead = 1000;

// Scans the index of `kind` after the page token, parsing each document as
// T and keeping those `keep` accepts (the caller's scope and the filters),
// up to the page size. A next_page_token only when another item `keep`
// accepts follows, looked for within kListLookAhead entries past the page
// (the last page of a filtered list carries none); when the look-ahead runs
// out, or meets a document it cannot read (the next page answers
// CORRUPT_DOCUMENT), the token is given all the same. The token resumes
// after the page's last item.
template <typename T, typename Resp>
absl::Status ScanIndex(const BillingStore& store, const PageTokenCodec& page_tokens, const Principal& caller,
                       absl::string_view kind, const google::protobuf::Message& request,
                       const std::function<std::string(const std::string& member)>& doc_id,
                       const std::function<bool(const T&)>& keep, google::protobuf::RepeatedPtrField<T>* out,
                       Resp* resp) {
  constexpr int kBatch = 500;
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens.Parse(request, caller));
  std::string after = page.after;
  // A page token of the earlier index form ("<ms, 15 digits>|<id>", from
  // before MigrateIndexMembers; settlements "<period>|<ms>|<id>") resumes
  // after its item as indexed now (at its create_time; at the start of its
  // millisecond when it is gone).
  if (kind != "invoice") {
    const size_t start = kind == "settlement" ? after.find('|') + 1 : 0;  // npos + 1 == 0: no period
    const size_t bar = start == 0 && kind == "settlement" ? std::string::npos : after.find('|', start);
    if (bar != std::string::npos) {
      if (const std::optional<int64_t> ms =
              keys::LegacyIndexMillis(absl::string_view(after).substr(start, bar - start))) {
        const std::string id = doc_id(after);
        absl::Time t = absl::FromUnixMillis(*ms);
        LS_ASSIGN_OR_RETURN(auto doc, store.docs().Get(keys::Doc(kind, id)));
        if (doc) {
          absl::StatusOr<T> item = Parse<T>(doc->data);
          if (item.ok() && item->has_create_time() && Ms(FromProto(item->create_time())) == *ms) {
            t = FromProto(item->create_time());
          }
        }
        after = after.substr(0, start) + keys::IndexMember(t, id);
      }
    }
  }
  std::string page_end;  // the member of the page's last item, once it is full
  int looked = 0;        // entries examined past the full page
  auto more = [&]() {
    resp->set_next_page_token(page_tokens.Make(request, caller, page_end));
    return absl::OkStatus();
  };
  while (true) {
    LS_ASSIGN_OR_RETURN(auto members, store.docs().IndexRange(keys::Index(kind), after, kBatch));
    std::vector<std::string> k;
    k.reserve(members.size());
    for (const auto& m : members) k.push_back(keys::Doc(kind, doc_id(m)));
    LS_ASSIGN_OR_RETURN(auto docs, store.docs().GetMany(k));
    for (size_t i = 0; i < members.size(); ++i) {
      const bool full = !page_end.empty();
      if (full && looked++ >= kListLookAhead) return more();
      after = members[i];
      if (!docs[i]) continue;
      absl::StatusOr<T> item = Parse<T>(docs[i]->data);
      if (!item.ok()) {
        if (full) return more();
        // An unreadable document on the page is CORRUPT_DOCUMENT, never
        // silently left out of the list.
        return item.status();
      }
      if (!keep(*item)) continue;
      if (full) return more();
      *out->Add() = *std::move(item);
      if (out->size() == page.page_size) page_end = after;
    }
    if (static_cast<int>(members.size()) < kBatch) return absl::OkStatus();
  }
}

// FNV-1a 64: stable ids and etags derived from content.
inline uint64_t Fnv(absl::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}
inline std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

// What a ledger step means for the caller: the applied answer, the stored
// first answer of a replay, REQUEST_ID_REUSED, or nullopt when a checked
// value or version moved (read again and retry).
template <typename T>
absl::StatusOr<std::optional<T>> Answer(const StepResult& result, T applied) {
  switch (result.kind) {
    case StepResult::Kind::kApplied: return std::optional<T>(std::move(applied));
    case StepResult::Kind::kReplayed: {
      LS_ASSIGN_OR_RETURN(T replay, Parse<T>(result.response));
      return std::optional<T>(std::move(replay));
    }
    case StepResult::Kind::kRequestReused: return RequestIdReused();
    default: return std::optional<T>();
  }
}

// The balances-hash field of a pool's funds (no counterparty).
inline std::string PoolFundsField(const v1::SubsidyPool& pool) {
  return absl::StrCat(AccountName(pool.name(), v1::POOL_FUNDS), "||", pool.currency_code());
}

// The header of an event published by a mutation of `p`.
inline v1::BillingEvent NewEvent(const Principal& p, absl::Time now, const std::string& request_id) {
  v1::BillingEvent e;
  e.mutable_header()->set_event_id(NewEventId());
  *e.mutable_header()->mutable_event_time() = ToProto(now);
  e.mutable_header()->set_actor(ActorName(p));
  e.mutable_header()->set_actor_organization(ActorOrganization(p));
  e.mutable_header()->set_request_id(request_id);
  e.mutable_header()->set_trace_id(p.trace_id);
  return e;
}

// The header of an event billing publishes by itself (charges of booking
// events, period rent): actor "services/billing", and the request_id and
// trace id of the booking event that caused it (types.proto EventHeader:
// "the request_id of the mutation that caused it"; "" when none did, as for
// the rent the period-end sweep posts).
inline v1::BillingEvent ServiceEvent(absl::Time now, const std::string& request_id, const std::string& trace_id) {
  v1::BillingEvent e;
  e.mutable_header()->set_event_id(NewEventId());
  *e.mutable_header()->mutable_event_time() = ToProto(now);
  e.mutable_header()->set_actor("services/billing");
  e.mutable_header()->set_request_id(request_id);
  e.mutable_header()->set_trace_id(trace_id);
  return e;
}

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_BILLING_COMMON_H_
