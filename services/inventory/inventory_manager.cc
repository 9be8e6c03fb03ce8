#include "services/inventory/inventory_manager.h"

#include <algorithm>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <google/protobuf/util/field_mask_util.h>
#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "common/auth.h"
#include "common/events.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/inventory/identity_store.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::inventory {
namespace {

using google::protobuf::FieldMask;
using google::protobuf::util::FieldMaskUtil;

constexpr int kCommitAttempts = 5;
constexpr int kIndexBatch = 200;
// A page stops after examining this many entries, so a filter matching
// nothing still answers quickly; the token continues from there.
constexpr int kScanLimit = 5000;

absl::Status ScopeDenied(std::string message) {
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE", message);
}

bool SeesEverything(const Principal& p) {
  return p.HasAnyRole({Role::kConsortiumAdmin, Role::kAuditor, Role::kService});
}

// An organisation's fapiao details (taxpayer id, bank account, address and
// phone) are read only by its own billing admins, the consortium's admins
// and auditors and the platform's services (billing copies them onto
// invoices); everyone else gets the organisation without them.
v1::Organization Redacted(const Principal& p, v1::Organization o) {
  if (SeesEverything(p)) return o;
  if (p.HasRole(Role::kMemberBillingAdmin) && ActorOrganization(p) == o.name()) return o;
  o.clear_invoicing_details();
  return o;
}

// CONSORTIUM_ADMIN, or FACILITY_STAFF of the instrument's owner or operator.
absl::Status RequireStaffOf(const Principal& p, const v1::Instrument& in) {
  if (p.HasRole(Role::kConsortiumAdmin)) return absl::OkStatus();
  const std::string org = ActorOrganization(p);
  if (p.HasRole(Role::kFacilityStaff) && !org.empty() &&
      (org == in.owner_organization() || org == in.operator_organization())) {
    return absl::OkStatus();
  }
  return ScopeDenied(absl::StrCat("only the staff of ", in.owner_organization(),
                                  " or its operator may manage ", in.name()));
}

absl::Status EtagMismatch() {
  return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH",
                   "the resource changed since it was read; read it again and retry");
}

absl::Status CheckEtag(const std::string& given, int64_t version) {
  if (!given.empty() && given != std::to_string(version)) return EtagMismatch();
  return absl::OkStatus();
}

absl::Status NoChange(std::string message) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "NO_CHANGE", message);
}

using UpdatePaths = absl::Span<const char* const>;

// The paths an update changes: its update_mask, or, when that is empty, the
// listed paths whose field the request sets (AIP-134's implied mask; a field
// left at its default, e.g. false or "", is not touched: to clear one, name
// it in the mask).
FieldMask MaskOrImplied(const google::protobuf::Message& update, const FieldMask& mask, UpdatePaths allowed) {
  if (!mask.paths().empty()) return mask;
  FieldMask implied;
  const auto* descriptor = update.GetDescriptor();
  const auto* reflection = update.GetReflection();
  for (const char* path : allowed) {
    const auto* field = descriptor->FindFieldByName(path);
    if (field == nullptr) continue;
    if (field->is_repeated() ? reflection->FieldSize(update, field) > 0 : reflection->HasField(update, field)) {
      implied.add_paths(path);
    }
  }
  return implied;
}

absl::Status ValidateMask(const FieldMask& mask, UpdatePaths allowed) {
  if (mask.paths().empty()) {
    return InvalidField("update_mask", absl::StrCat("nothing to update: name the fields in update_mask or set "
                                                    "at least one of: ",
                                                    absl::StrJoin(allowed, ", ")),
                        "INVALID_UPDATE_MASK");
  }
  std::set<std::string> ok(allowed.begin(), allowed.end());
  for (const auto& path : mask.paths()) {
    if (!ok.count(path)) {
      return InvalidField("update_mask",
                          absl::StrCat("'", path, "' cannot be updated; allowed: ",
                                       absl::StrJoin(allowed, ", ")),
                          "INVALID_UPDATE_MASK");
    }
  }
  return absl::OkStatus();
}

template <typename T>
void ApplyMask(const T& source, const FieldMask& mask, T* target) {
  FieldMaskUtil::MergeOptions options;
  options.set_replace_message_fields(true);
  options.set_replace_repeated_fields(true);
  FieldMaskUtil::MergeMessageTo(source, mask, options, target);
}

// Ids from create requests: the client's, validated, or a fresh one.
absl::StatusOr<std::string> ChooseId(const std::string& given, absl::string_view field,
                                     absl::string_view prefix) {
  if (given.empty()) return NewId(prefix);
  if (!ValidId(given)) {
    return InvalidField(std::string(field), "must match [a-z0-9][a-z0-9-]{0,62}");
  }
  return given;
}

absl::Status AlreadyExists(absl::string_view reason, const std::string& name) {
  return MakeError(absl::StatusCode::kAlreadyExists, reason, name + " already exists",
                   {{"name", name}});
}

void Stamp(google::protobuf::Timestamp* create, google::protobuf::Timestamp* update, absl::Time now,
           bool creating) {
  if (creating) *create = ToProto(now);
  if (update != nullptr) *update = ToProto(now);
}

// types.proto: damaged data is INTERNAL CORRUPT_DOCUMENT, never skipped.
absl::Status Parse(google::protobuf::Message& out, const std::string& bytes) {
  if (out.ParseFromString(bytes)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored record is unreadable");
}

// Every member of a sorted-set index, in batches of kIndexBatch, in order.
absl::Status ForEachIndexBatch(const DocStore& docs, const std::string& index,
                               const std::function<absl::Status(const std::vector<std::string>&)>& fn) {
  std::string after;
  while (true) {
    LS_ASSIGN_OR_RETURN(auto members, docs.IndexRange(index, after, kIndexBatch));
    if (members.empty()) break;
    after = members.back();
    LS_RETURN_IF_ERROR(fn(members));
    if (static_cast<int>(members.size()) < kIndexBatch) break;
  }
  return absl::OkStatus();
}

// The members of an index in order, however many, up to the first one
// `before_end` refuses (when given: an index sorted by time read up to a
// time).
absl::StatusOr<std::vector<std::string>> IndexMembers(
    const DocStore& docs, const std::string& index,
    const std::function<bool(const std::string&)>& before_end = nullptr) {
  std::vector<std::string> out;
  std::string after;
  while (true) {
    LS_ASSIGN_OR_RETURN(auto members, docs.IndexRange(index, after, kIndexBatch));
    for (auto& m : members) {
      if (before_end && !before_end(m)) return out;
      out.push_back(std::move(m));
    }
    if (static_cast<int>(members.size()) < kIndexBatch) return out;
    after = out.back();
  }
}

}  // namespace

// ================================================================ plumbing

template <typename T>
bool InventoryManager::Unchanged(const T& merged, const Loaded<T>& current) {
  return google::protobuf::util::MessageDifferencer::Equals(merged, current.value);
}

template <typename T>
InventoryManager::Plan<T> InventoryManager::AnswerStored(const std::string& key, Loaded<T> current) {
  Plan<T> plan;
  plan.write_nothing = true;
  plan.mutation.guards.push_back({key, current.version});
  plan.response = std::move(current.value);
  return plan;
}

template <typename Resp>
absl::StatusOr<Resp> InventoryManager::Commit(
    const Principal& p, absl::string_view method, const google::protobuf::Message& request,
    const std::string& request_id, const std::function<absl::StatusOr<Plan<Resp>>()>& plan_fn) {
  const std::string idem = request_id.empty() ? "" : keys::Idempotency(method, request_id);
  // The answer is kept for its caller: the fingerprint binds the request to
  // the actor and its organisation, so another caller presenting the same
  // request_id and content is REQUEST_ID_REUSED, never given an answer its
  // own scope may forbid. Records written before the binding (fingerprint
  // of the request alone) are still replayed until they expire (TTL).
  const std::string fingerprint =
      RequestFingerprint(absl::StrCat(method, "\n", ActorName(p), "\n", ActorOrganization(p)), request);
  const std::string unbound_fingerprint = RequestFingerprint(method, request);
  auto replay = [](const std::string& bytes) -> absl::StatusOr<Resp> {
    Resp r;
    if (!r.ParseFromString(bytes)) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "stored answer unreadable");
    }
    return r;
  };
  LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint, unbound_fingerprint));
  if (seen) return replay(*seen);

  for (int attempt = 0; attempt < kCommitAttempts; ++attempt) {
    LS_ASSIGN_OR_RETURN(Plan<Resp> plan, plan_fn());
    // Nothing to change: no event, but a request_id still keeps this answer
    // (a retry gets it, other content under the id REQUEST_ID_REUSED).
    if (plan.write_nothing && idem.empty()) return std::move(plan.response);
    // The time the plan stamped the resource with (its update_time, the
    // change's change_time), not a later reading of the clock.
    const auto event_time = ToProto(plan.now == absl::InfinitePast() ? clock_->Now() : plan.now);
    auto fill_header = [&](v1::InventoryEvent& event) {
      auto* header = event.mutable_header();
      header->set_event_id(NewEventId());
      *header->mutable_event_time() = event_time;
      header->set_request_id(request_id);
      header->set_actor(ActorName(p));
      header->set_actor_organization(ActorOrganization(p));
      header->set_trace_id(p.trace_id);
    };
    fill_header(plan.event);
    Mutation& m = plan.mutation;
    for (auto& more : plan.more_events) {
      fill_header(more);
      m.more_events.push_back({v1::InventoryEvent::descriptor()->full_name(), more.SerializeAsString()});
    }
    m.idempotency_key = idem;
    m.fingerprint = fingerprint;
    m.response = SerializeDeterministic(plan.response);
    if (!plan.write_nothing) {
      m.outbox_key = keys::Outbox();
      m.event_type = v1::InventoryEvent::descriptor()->full_name();
      m.event_payload = plan.event.SerializeAsString();
    }
    if (before_commit_for_testing_) before_commit_for_testing_(method);
    LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
    switch (outcome.kind) {
      case CommitOutcome::Kind::kApplied: return std::move(plan.response);
      case CommitOutcome::Kind::kReplayed: return replay(outcome.response);
      case CommitOutcome::Kind::kRequestReused: return RequestIdReused();
      case CommitOutcome::Kind::kConflict:
        if (!plan.on_conflict.ok() && !m.writes.empty() && outcome.conflict_key == m.writes.front().key) {
          return plan.on_conflict;
        }
        break;  // somebody else wrote first: read again
    }
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the resource is being changed concurrently; retry with the same request_id");
}

template <typename Resp>
absl::Status InventoryManager::MoveInstrumentsToOperator(const std::string& facility_id,
                                                         const std::string& operator_org, absl::Time now,
                                                         Plan<Resp>* plan) {
  const std::string index = keys::FacilityInstruments(facility_id);
  int64_t members = 0;
  std::string after;
  while (true) {
    LS_ASSIGN_OR_RETURN(auto ids, store_->docs().IndexRange(index, after, kIndexBatch));
    if (ids.empty()) break;
    members += static_cast<int64_t>(ids.size());
    after = ids.back();
    std::vector<std::string> doc_keys;
    doc_keys.reserve(ids.size());
    for (const auto& id : ids) doc_keys.push_back(keys::Instrument(id));
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!docs[i]) continue;
      v1::Instrument in;
      LS_RETURN_IF_ERROR(Parse(in, docs[i]->data));
      if (in.operator_organization() == operator_org) continue;
      in.set_operator_organization(operator_org);
      *in.mutable_update_time() = ToProto(now);
      in.set_etag(std::to_string(docs[i]->version + 1));
      plan->mutation.writes.push_back({doc_keys[i], in.SerializeAsString(), docs[i]->version});
      v1::InventoryEvent event;
      auto* changed = event.mutable_instrument_changed();
      changed->set_kind(v1::UPDATED);
      *changed->mutable_instrument() = std::move(in);
      plan->more_events.push_back(std::move(event));
    }
    if (static_cast<int>(ids.size()) < kIndexBatch) break;
  }
  plan->mutation.guards.push_back({index, members, /*count=*/true});
  return absl::OkStatus();
}

template <typename T, typename Resp>
absl::StatusOr<Resp> InventoryManager::ListFromIndex(
    const Principal& caller, const google::protobuf::Message& request, const std::string& index,
    const std::function<std::string(const std::string&)>& key_of,
    const std::function<bool(const T&)>& keep, const std::function<void(Resp&, T)>& add) {
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(request, caller));
  Resp resp;
  // `after` is where the next page would start: the last entry examined
  // that the page does not still owe. A full page looks on for one more
  // match (without taking it) so the last page of a filtered list carries
  // no token; the scan limit ends the look as it ends a sparse page.
  std::string after = page.after;
  int count = 0;
  int scanned = 0;
  bool more = false;       // a match past the page exists, or the scan stopped early
  bool exhausted = false;  // the index has nothing after `after`
  while (!more && !exhausted && scanned < kScanLimit) {
    LS_ASSIGN_OR_RETURN(auto members, store_->docs().IndexRange(index, after, kIndexBatch));
    std::vector<std::string> doc_keys;
    doc_keys.reserve(members.size());
    for (const auto& m : members) doc_keys.push_back(key_of(m));
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    for (size_t i = 0; i < members.size() && !more; ++i) {
      if (docs[i]) {
        T value;
        LS_RETURN_IF_ERROR(Parse(value, docs[i]->data));
        if (keep(value)) {
          if (count == page.page_size) {
            more = true;  // the next page starts here: `after` stays before it
            break;
          }
          add(resp, std::move(value));
          ++count;
        }
      }
      ++scanned;
      after = members[i];
    }
    if (static_cast<int>(members.size()) < kIndexBatch) exhausted = true;
  }
  if (!exhausted && scanned >= kScanLimit) more = true;
  if (more && !after.empty()) resp.set_next_page_token(page_tokens_.Make(request, caller, after));
  return resp;
}

// ================================================================ organisations

absl::StatusOr<v1::Organization> InventoryManager::CreateOrganization(
    const Principal& p, const v1::CreateOrganizationRequest& r) {
  return Commit<v1::Organization>(p, "CreateOrganization", r, r.request_id(),
                                  [&]() -> absl::StatusOr<Plan<v1::Organization>> {
    // The Errors list's order: the organisation's own fields (display_name,
    // type, size_class), the id, the initial membership, then the
    // invoicing details.
    v1::Organization org = r.organization();
    if (org.membership_state() == v1::MEMBERSHIP_STATE_UNSPECIFIED) {
      org.set_membership_state(v1::APPLICANT);
    }
    LS_RETURN_IF_ERROR(ValidateOrganizationFields(org));
    LS_ASSIGN_OR_RETURN(std::string id, ChooseId(r.organization_id(), "organization_id", "org"));
    LS_RETURN_IF_ERROR(ValidateInitialMembership(org));
    if (org.membership_state() != v1::MEMBER && !org.tier().empty()) {
      return InvalidField("organization.tier", "only members have a tier");
    }
    LS_RETURN_IF_ERROR(ValidateInvoicingDetails(org.invoicing_details()));
    const absl::Time now = clock_->Now();
    org.set_name("organizations/" + id);
    Stamp(org.mutable_create_time(), org.mutable_update_time(), now, true);
    org.set_etag("1");

    v1::MembershipChange change;
    change.set_name(org.name() + "/membershipChanges/1");
    change.set_to_state(org.membership_state());
    change.set_to_tier(org.tier());
    change.set_reason("registered");
    change.set_actor(ActorName(p));
    *change.mutable_change_time() = ToProto(now);

    Plan<v1::Organization> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Org(id), org.SerializeAsString(), 0});
    plan.mutation.index_ops.push_back({keys::Orgs(), id});
    plan.mutation.appends.push_back({keys::Membership(id), change.SerializeAsString()});
    auto* ev = plan.event.mutable_organization_changed();
    ev->set_kind(v1::CREATED);
    *ev->mutable_organization() = org;
    plan.response = std::move(org);
    plan.on_conflict = AlreadyExists("ORGANIZATION_EXISTS", "organizations/" + id);
    return plan;
  });
}

absl::StatusOr<v1::Organization> InventoryManager::GetOrganization(
    const Principal& p, const v1::GetOrganizationRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.name(), "organizations", "name"));
  LS_ASSIGN_OR_RETURN(auto org, store_->Load<v1::Organization>(keys::Org(id), "ORGANIZATION_NOT_FOUND", r.name()));
  return Redacted(p, std::move(org.value));
}

absl::StatusOr<v1::ListOrganizationsResponse> InventoryManager::ListOrganizations(
    const Principal& p, const v1::ListOrganizationsRequest& r) {
  if (!v1::MembershipState_IsValid(r.membership_state())) {
    return InvalidField("membership_state", "not a MembershipState value");
  }
  if (!v1::OrganizationType_IsValid(r.type())) return InvalidField("type", "not an OrganizationType value");
  if (!v1::SizeClass_IsValid(r.size_class())) return InvalidField("size_class", "not a SizeClass value");
  return ListFromIndex<v1::Organization, v1::ListOrganizationsResponse>(
      p, r, keys::Orgs(), [](const std::string& id) { return keys::Org(id); },
      [&](const v1::Organization& o) {
        return (r.membership_state() == 0 || o.membership_state() == r.membership_state()) &&
               (r.type() == 0 || o.type() == r.type()) &&
               (r.tier().empty() || o.tier() == r.tier()) &&
               (r.size_class() == 0 || o.size_class() == r.size_class());
      },
      [&](v1::ListOrganizationsResponse& resp, v1::Organization o) {
        *resp.add_organizations() = Redacted(p, std::move(o));
      });
}

absl::StatusOr<v1::Organization> InventoryManager::UpdateOrganization(
    const Principal& p, const v1::UpdateOrganizationRequest& r) {
  return Commit<v1::Organization>(p, "UpdateOrganization", r, r.request_id(),
                                  [&]() -> absl::StatusOr<Plan<v1::Organization>> {
    static constexpr const char* kPaths[] = {"display_name", "type",   "size_class",       "state_owned",
                                             "foreign",      "sector", "invoicing_details"};
    const FieldMask mask = MaskOrImplied(r.organization(), r.update_mask(), kPaths);
    // A member's billing admin keeps its own organisation's fapiao details;
    // every other path is the consortium admin's (the role may not). The
    // permission comes before validation (types.proto), the name's too: a
    // path but invoicing_details is ROLE_NOT_ALLOWED and a name but the
    // caller's own organisation (a malformed one too) ORGANIZATION_SCOPE.
    if (!p.HasRole(Role::kConsortiumAdmin)) {
      for (const auto& path : mask.paths()) {
        if (path != "invoicing_details") {
          return MakeError(absl::StatusCode::kPermissionDenied, "ROLE_NOT_ALLOWED",
                           "a billing admin may update only invoicing_details; '" + path +
                               "' is the consortium admin's",
                           {{"method", "/labshare.inventory.v1.InventoryService/UpdateOrganization"}, {"path", path}});
        }
      }
      if (r.organization().name() != ActorOrganization(p)) {
        return ScopeDenied("a billing admin may update only its own organisation's invoicing details");
      }
    }
    LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.organization().name(), "organizations", "organization.name"));
    LS_RETURN_IF_ERROR(ValidateMask(mask, kPaths));
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Organization>(keys::Org(id), "ORGANIZATION_NOT_FOUND", r.organization().name()));
    LS_RETURN_IF_ERROR(CheckEtag(r.organization().etag(), current.version));
    v1::Organization org = current.value;
    ApplyMask(r.organization(), mask, &org);
    // An empty invoicing_details clears it: no empty message is stored, and
    // one stored so (by an earlier clear) reads as none.
    auto clear_empty = [](v1::Organization& o) {
      if (o.has_invoicing_details() && o.invoicing_details().ByteSizeLong() == 0) o.clear_invoicing_details();
    };
    clear_empty(org);
    LS_RETURN_IF_ERROR(ValidateOrganization(org, org.display_name() != current.value.display_name()));
    Loaded<v1::Organization> as_read = current;
    clear_empty(as_read.value);
    if (Unchanged(org, as_read)) return AnswerStored(keys::Org(id), std::move(current));
    const absl::Time now = clock_->Now();
    *org.mutable_update_time() = ToProto(now);
    org.set_etag(std::to_string(current.version + 1));
    Plan<v1::Organization> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Org(id), org.SerializeAsString(), current.version});
    auto* ev = plan.event.mutable_organization_changed();
    ev->set_kind(v1::UPDATED);
    *ev->mutable_organization() = org;
    plan.response = std::move(org);
    if (!r.organization().etag().empty()) plan.on_conflict = EtagMismatch();
    return plan;
  });
}

absl::StatusOr<v1::Organization> InventoryManager::ChangeMembership(
    const Principal& p, const v1::ChangeMembershipRequest& r) {
  return Commit<v1::Organization>(p, "ChangeMembership", r, r.request_id(),
                                  [&]() -> absl::StatusOr<Plan<v1::Organization>> {
    LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.name(), "organizations", "name"));
    const v1::MembershipState to = r.membership_state();
    if (to == v1::MEMBERSHIP_STATE_UNSPECIFIED || !v1::MembershipState_IsValid(to)) {
      return InvalidField("membership_state", "name the new membership state");
    }
    if (r.reason().empty()) {
      return InvalidField("reason", "say why the membership changes (kept in the history)");
    }
    if (!r.tier().empty() && to != v1::MEMBER) {
      return InvalidField("tier", "only members have a tier");
    }
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Organization>(keys::Org(id), "ORGANIZATION_NOT_FOUND", r.name()));
    LS_RETURN_IF_ERROR(CheckEtag(r.etag(), current.version));
    v1::Organization org = current.value;
    const v1::MembershipState from = org.membership_state();
    const std::string new_tier = r.tier().empty() ? org.tier() : r.tier();
    // The move itself first (NO_CHANGE, TRANSITION_NOT_ALLOWED), whatever
    // the tier; then whether the MEMBER it ends in has one.
    if (from == to) {
      if (to != v1::MEMBER || new_tier == org.tier()) {
        return NoChange(absl::StrCat(r.name(), " is already ", v1::MembershipState_Name(to),
                                     to == v1::MEMBER ? " in tier " + org.tier() : ""));
      }
    } else if (!MembershipTransitionAllowed(from, to)) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "TRANSITION_NOT_ALLOWED",
                       absl::StrCat("membership cannot go from ", v1::MembershipState_Name(from),
                                    " to ", v1::MembershipState_Name(to)),
                       {{"from", v1::MembershipState_Name(from)}, {"to", v1::MembershipState_Name(to)}});
    }
    if (to == v1::MEMBER && new_tier.empty()) {
      return InvalidField("tier", "a MEMBER needs a tier, e.g. CORE or GENERAL");
    }
    LS_ASSIGN_OR_RETURN(RedisValue len, store_->docs().pool()->Command({"LLEN", keys::Membership(id)}));
    const absl::Time now = clock_->Now();
    v1::MembershipChange change;
    change.set_name(absl::StrCat(r.name(), "/membershipChanges/", len.integer + 1));
    change.set_from_state(from);
    change.set_to_state(to);
    change.set_from_tier(org.tier());
    change.set_to_tier(new_tier);
    change.set_reason(r.reason());
    change.set_actor(ActorName(p));
    *change.mutable_change_time() = ToProto(now);
    org.set_membership_state(to);
    org.set_tier(new_tier);
    *org.mutable_update_time() = ToProto(now);
    org.set_etag(std::to_string(current.version + 1));

    Plan<v1::Organization> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Org(id), org.SerializeAsString(), current.version});
    plan.mutation.appends.push_back({keys::Membership(id), change.SerializeAsString()});
    auto* ev = plan.event.mutable_membership_changed();
    *ev->mutable_organization() = org;
    *ev->mutable_change() = std::move(change);
    plan.response = std::move(org);
    if (!r.etag().empty()) plan.on_conflict = EtagMismatch();
    return plan;
  });
}

absl::StatusOr<v1::ListMembershipChangesResponse> InventoryManager::ListMembershipChanges(
    const Principal& p, const v1::ListMembershipChangesRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.parent(), "organizations", "parent"));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  LS_RETURN_IF_ERROR(store_->Load<v1::Organization>(keys::Org(id), "ORGANIZATION_NOT_FOUND", r.parent()).status());
  int64_t start = 0;
  if (!page.after.empty() && !absl::SimpleAtoi(page.after, &start)) {
    return InvalidField("page_token", "malformed", "INVALID_PAGE_TOKEN");
  }
  LS_ASSIGN_OR_RETURN(auto items, store_->docs().ListRange(keys::Membership(id), start, page.page_size + 1));
  v1::ListMembershipChangesResponse resp;
  for (size_t i = 0; i < items.size() && static_cast<int>(i) < page.page_size; ++i) {
    LS_RETURN_IF_ERROR(Parse(*resp.add_membership_changes(), items[i]));
  }
  if (static_cast<int>(items.size()) > page.page_size) {
    resp.set_next_page_token(page_tokens_.Make(r, p, std::to_string(start + page.page_size)));
  }
  return resp;
}

// ================================================================ users

absl::StatusOr<v1::User> InventoryManager::CreateUser(const Principal& p,
                                                      const v1::CreateUserRequest& r) {
  return Commit<v1::User>(p, "CreateUser", r, r.request_id(),
                          [&]() -> absl::StatusOr<Plan<v1::User>> {
    LS_ASSIGN_OR_RETURN(std::string id, ChooseId(r.user_id(), "user_id", "user"));
    v1::User user = r.user();
    LS_ASSIGN_OR_RETURN(std::string org_id, ParseName(user.organization(), "organizations", "user.organization"));
    LS_RETURN_IF_ERROR(ValidateUser(user));
    LS_RETURN_IF_ERROR(store_->Load<v1::Organization>(keys::Org(org_id), "ORGANIZATION_NOT_FOUND", user.organization()).status());
    user.set_name("users/" + id);
    const absl::Time now = clock_->Now();
    Stamp(user.mutable_create_time(), user.mutable_update_time(), now, true);
    user.set_etag("1");
    Plan<v1::User> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::User(id), user.SerializeAsString(), 0});
    plan.mutation.index_ops.push_back({keys::Users(), id});
    AddSignInIndexOps(v1::User(), user, id, &plan.mutation.index_ops);
    auto* ev = plan.event.mutable_user_changed();
    ev->set_kind(v1::CREATED);
    *ev->mutable_user() = user;
    plan.response = std::move(user);
    plan.on_conflict = AlreadyExists("USER_EXISTS", "users/" + id);
    return plan;
  });
}

absl::StatusOr<v1::User> InventoryManager::GetUser(const Principal& p, const v1::GetUserRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.name(), "users", "name"));
  LS_ASSIGN_OR_RETURN(auto user, store_->Load<v1::User>(keys::User(id), "USER_NOT_FOUND", r.name()));
  if (!SeesEverything(p) && user.value.organization() != ActorOrganization(p)) {
    return ScopeDenied("you may read only users of your own organisation");
  }
  return std::move(user.value);
}

absl::StatusOr<v1::ListUsersResponse> InventoryManager::ListUsers(const Principal& p,
                                                                  const v1::ListUsersRequest& r) {
  if (!SeesEverything(p) && (r.organization().empty() || r.organization() != ActorOrganization(p))) {
    return ScopeDenied("set organization to your own organisation to list its users");
  }
  if (!r.organization().empty()) {
    LS_RETURN_IF_ERROR(ParseName(r.organization(), "organizations", "organization").status());
  }
  if (!labshare::type::v1::Role_IsValid(r.role())) return InvalidField("role", "unknown role");
  return ListFromIndex<v1::User, v1::ListUsersResponse>(
      p, r, keys::Users(), [](const std::string& id) { return keys::User(id); },
      [&](const v1::User& u) {
        if (!r.organization().empty() && u.organization() != r.organization()) return false;
        if (r.role() == 0) return true;
        for (int role : u.roles()) {
          if (role == r.role()) return true;
        }
        return false;
      },
      [](v1::ListUsersResponse& resp, v1::User u) { *resp.add_users() = std::move(u); });
}

absl::StatusOr<v1::User> InventoryManager::UpdateUser(const Principal& p,
                                                      const v1::UpdateUserRequest& r) {
  return Commit<v1::User>(p, "UpdateUser", r, r.request_id(),
                          [&]() -> absl::StatusOr<Plan<v1::User>> {
    LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.user().name(), "users", "user.name"));
    static constexpr const char* kPaths[] = {"display_name", "email", "roles", "disabled", "external_subject"};
    const FieldMask mask = MaskOrImplied(r.user(), r.update_mask(), kPaths);
    LS_RETURN_IF_ERROR(ValidateMask(mask, kPaths));
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::User>(keys::User(id), "USER_NOT_FOUND", r.user().name()));
    LS_RETURN_IF_ERROR(CheckEtag(r.user().etag(), current.version));
    v1::User user = current.value;
    ApplyMask(r.user(), mask, &user);
    LS_RETURN_IF_ERROR(ValidateUser(user, user.email() != current.value.email(),
                                    user.external_subject() != current.value.external_subject()));
    if (Unchanged(user, current)) return AnswerStored(keys::User(id), std::move(current));
    const absl::Time now = clock_->Now();
    *user.mutable_update_time() = ToProto(now);
    user.set_etag(std::to_string(current.version + 1));
    Plan<v1::User> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::User(id), user.SerializeAsString(), current.version});
    AddSignInIndexOps(current.value, user, id, &plan.mutation.index_ops);
    auto* ev = plan.event.mutable_user_changed();
    ev->set_kind(v1::UPDATED);
    *ev->mutable_user() = user;
    plan.response = std::move(user);
    if (!r.user().etag().empty()) plan.on_conflict = EtagMismatch();
    return plan;
  });
}

// ================================================================ facilities

absl::StatusOr<v1::Facility> InventoryManager::CreateFacility(const Principal& p,
                                                              const v1::CreateFacilityRequest& r) {
  return Commit<v1::Facility>(p, "CreateFacility", r, r.request_id(),
                              [&]() -> absl::StatusOr<Plan<v1::Facility>> {
    LS_ASSIGN_OR_RETURN(std::string id, ChooseId(r.facility_id(), "facility_id", "fac"));
    v1::Facility f = r.facility();
    LS_ASSIGN_OR_RETURN(std::string owner, ParseName(f.owner_organization(), "organizations", "facility.owner_organization"));
    if (f.operator_organization().empty()) f.set_operator_organization(f.owner_organization());
    if (f.time_zone().empty()) f.set_time_zone(kDefaultFacilityTimeZone);
    LS_ASSIGN_OR_RETURN(std::string op, ParseName(f.operator_organization(), "organizations", "facility.operator_organization"));
    LS_RETURN_IF_ERROR(ValidateFacility(f));
    LS_RETURN_IF_ERROR(store_->Load<v1::Organization>(keys::Org(owner), "ORGANIZATION_NOT_FOUND", f.owner_organization()).status());
    LS_RETURN_IF_ERROR(store_->Load<v1::Organization>(keys::Org(op), "ORGANIZATION_NOT_FOUND", f.operator_organization()).status());
    f.set_name("facilities/" + id);
    const absl::Time now = clock_->Now();
    Stamp(f.mutable_create_time(), f.mutable_update_time(), now, true);
    f.set_etag("1");
    Plan<v1::Facility> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Facility(id), f.SerializeAsString(), 0});
    plan.mutation.index_ops.push_back({keys::Facilities(), id});
    auto* ev = plan.event.mutable_facility_changed();
    ev->set_kind(v1::CREATED);
    *ev->mutable_facility() = f;
    plan.response = std::move(f);
    plan.on_conflict = AlreadyExists("FACILITY_EXISTS", "facilities/" + id);
    return plan;
  });
}

absl::StatusOr<v1::Facility> InventoryManager::GetFacility(const Principal&,
                                                           const v1::GetFacilityRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.name(), "facilities", "name"));
  LS_ASSIGN_OR_RETURN(auto f, store_->Load<v1::Facility>(keys::Facility(id), "FACILITY_NOT_FOUND", r.name()));
  return std::move(f.value);
}

absl::StatusOr<v1::ListFacilitiesResponse> InventoryManager::ListFacilities(
    const Principal& p, const v1::ListFacilitiesRequest& r) {
  if (!r.owner_organization().empty()) {
    LS_RETURN_IF_ERROR(ParseName(r.owner_organization(), "organizations", "owner_organization").status());
  }
  return ListFromIndex<v1::Facility, v1::ListFacilitiesResponse>(
      p, r, keys::Facilities(), [](const std::string& id) { return keys::Facility(id); },
      [&](const v1::Facility& f) {
        return r.owner_organization().empty() || f.owner_organization() == r.owner_organization();
      },
      [](v1::ListFacilitiesResponse& resp, v1::Facility f) { *resp.add_facilities() = std::move(f); });
}

absl::StatusOr<v1::Facility> InventoryManager::UpdateFacility(const Principal& p,
                                                              const v1::UpdateFacilityRequest& r) {
  return Commit<v1::Facility>(p, "UpdateFacility", r, r.request_id(),
                              [&]() -> absl::StatusOr<Plan<v1::Facility>> {
    LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.facility().name(), "facilities", "facility.name"));
    static constexpr const char* kPaths[] = {"display_name", "address",       "operator_organization",
                                             "funder",       "access_policy", "time_zone"};
    const FieldMask mask = MaskOrImplied(r.facility(), r.update_mask(), kPaths);
    LS_RETURN_IF_ERROR(ValidateMask(mask, kPaths));
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Facility>(keys::Facility(id), "FACILITY_NOT_FOUND", r.facility().name()));
    LS_RETURN_IF_ERROR(CheckEtag(r.facility().etag(), current.version));
    v1::Facility f = current.value;
    ApplyMask(r.facility(), mask, &f);
    // Facility.time_zone: cleared, the site is in the default zone again,
    // as at creation (the stored record says which, never "").
    if (f.time_zone().empty()) f.set_time_zone(kDefaultFacilityTimeZone);
    // Facility.operator_organization "defaults to the owner": cleared (named
    // in the mask, left empty), the owner runs the site again, as at creation.
    if (f.operator_organization().empty()) f.set_operator_organization(f.owner_organization());
    LS_ASSIGN_OR_RETURN(std::string op, ParseName(f.operator_organization(), "organizations", "facility.operator_organization"));
    LS_RETURN_IF_ERROR(ValidateFacility(f, f.time_zone() != current.value.time_zone()));
    LS_RETURN_IF_ERROR(store_->Load<v1::Organization>(keys::Org(op), "ORGANIZATION_NOT_FOUND", f.operator_organization()).status());
    // A record from before time_zone (stored as "") means the default zone:
    // filling it in alone is no change.
    Loaded<v1::Facility> as_read = current;
    if (as_read.value.time_zone().empty()) as_read.value.set_time_zone(kDefaultFacilityTimeZone);
    if (Unchanged(f, as_read)) return AnswerStored(keys::Facility(id), std::move(current));
    const absl::Time now = clock_->Now();
    *f.mutable_update_time() = ToProto(now);
    f.set_etag(std::to_string(current.version + 1));
    Plan<v1::Facility> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Facility(id), f.SerializeAsString(), current.version});
    // An instrument's operator is its facility's: a new operator takes over
    // every instrument in this same step.
    if (f.operator_organization() != current.value.operator_organization()) {
      LS_RETURN_IF_ERROR(MoveInstrumentsToOperator(id, f.operator_organization(), now, &plan));
    }
    auto* ev = plan.event.mutable_facility_changed();
    ev->set_kind(v1::UPDATED);
    *ev->mutable_facility() = f;
    plan.response = std::move(f);
    if (!r.facility().etag().empty()) plan.on_conflict = EtagMismatch();
    return plan;
  });
}

// ================================================================ instruments

absl::StatusOr<v1::Instrument> InventoryManager::CreateInstrument(
    const Principal& p, const v1::CreateInstrumentRequest& r) {
  return Commit<v1::Instrument>(p, "CreateInstrument", r, r.request_id(),
                                [&]() -> absl::StatusOr<Plan<v1::Instrument>> {
    v1::Instrument in = r.instrument();
    // The scope first (the comment's "checked first"): staff naming any
    // organisation but their own, well-formed or not, are out of scope.
    if (!p.HasRole(Role::kConsortiumAdmin) && ActorOrganization(p) != in.owner_organization()) {
      return ScopeDenied("facility staff register instruments of their own organisation only");
    }
    LS_ASSIGN_OR_RETURN(std::string owner, ParseName(in.owner_organization(), "organizations", "instrument.owner_organization"));
    LS_ASSIGN_OR_RETURN(std::string id, ChooseId(r.instrument_id(), "instrument_id", "instr"));
    LS_ASSIGN_OR_RETURN(std::string fac, ParseName(in.facility(), "facilities", "instrument.facility"));
    LS_RETURN_IF_ERROR(ValidateInstrument(in));
    // The Errors list's order: FACILITY_NOT_FOUND, then ORGANIZATION_NOT_FOUND.
    LS_ASSIGN_OR_RETURN(auto facility, store_->Load<v1::Facility>(keys::Facility(fac), "FACILITY_NOT_FOUND", in.facility()));
    LS_RETURN_IF_ERROR(store_->Load<v1::Organization>(keys::Org(owner), "ORGANIZATION_NOT_FOUND", in.owner_organization()).status());
    // An organisation registers instruments only in a facility it owns or
    // runs (the guard below keeps the operator read here until the commit).
    const v1::Facility& site = facility.value;
    if (in.owner_organization() != site.owner_organization() &&
        in.owner_organization() != site.operator_organization()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "FACILITY_OWNER_MISMATCH",
                       absl::StrCat(in.facility(), " is owned by ", site.owner_organization(), " and run by ",
                                    site.operator_organization(), ", not by ", in.owner_organization(),
                                    "; register the instrument in a facility of its owner"),
                       {{"facility", in.facility()},
                        {"owner_organization", site.owner_organization()},
                        {"operator_organization", site.operator_organization()}});
    }
    in.set_name("instruments/" + id);
    in.set_operator_organization(facility.value.operator_organization());
    in.set_state(v1::ACTIVE);
    const absl::Time now = clock_->Now();
    Stamp(in.mutable_create_time(), in.mutable_update_time(), now, true);
    in.set_etag("1");
    Plan<v1::Instrument> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Instrument(id), in.SerializeAsString(), 0});
    plan.mutation.index_ops.push_back({keys::Instruments(), id});
    plan.mutation.index_ops.push_back({keys::FacilityInstruments(fac), id});
    // The operator copied above is still the facility's when this commits.
    plan.mutation.guards.push_back({keys::Facility(fac), facility.version});
    auto* ev = plan.event.mutable_instrument_changed();
    ev->set_kind(v1::CREATED);
    *ev->mutable_instrument() = in;
    plan.response = std::move(in);
    plan.on_conflict = AlreadyExists("INSTRUMENT_EXISTS", "instruments/" + id);
    return plan;
  });
}

absl::StatusOr<v1::Instrument> InventoryManager::GetInstrument(const Principal&,
                                                               const v1::GetInstrumentRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.name(), "instruments", "name"));
  LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(id), "INSTRUMENT_NOT_FOUND", r.name()));
  return std::move(in.value);
}

absl::StatusOr<v1::ListInstrumentsResponse> InventoryManager::ListInstruments(
    const Principal& p, const v1::ListInstrumentsRequest& r) {
  if (!r.owner_organization().empty()) {
    LS_RETURN_IF_ERROR(ParseName(r.owner_organization(), "organizations", "owner_organization").status());
  }
  if (!r.facility().empty()) LS_RETURN_IF_ERROR(ParseName(r.facility(), "facilities", "facility").status());
  if (!labshare::type::v1::SharingMode_IsValid(r.mode())) return InvalidField("mode", "not a SharingMode value");
  if (!v1::InstrumentState_IsValid(r.state())) return InvalidField("state", "not an InstrumentState value");
  return ListFromIndex<v1::Instrument, v1::ListInstrumentsResponse>(
      p, r, keys::Instruments(), [](const std::string& id) { return keys::Instrument(id); },
      [&](const v1::Instrument& in) {
        return (r.owner_organization().empty() || in.owner_organization() == r.owner_organization()) &&
               (r.facility().empty() || in.facility() == r.facility()) &&
               (r.category().empty() || in.category() == r.category()) &&
               (r.mode() == 0 || FindMode(in, r.mode()) != nullptr) &&
               (r.state() == 0 || in.state() == r.state());
      },
      [](v1::ListInstrumentsResponse& resp, v1::Instrument in) {
        *resp.add_instruments() = std::move(in);
      });
}

namespace {
// The id after the last separator (either index format: see RateSortKey).
std::string RateIdOf(const std::string& member) {
  return member.substr(member.find_last_of(std::string("|") + kRateKeySeparator) + 1);
}

// FAILED_PRECONDITION RATE_CARD_CONFLICT when a line of `rates` that
// LookupRate may still pick at `now` or later fits `before` but not
// `after`; the message names each conflict (currency or unit), how many
// lines and which.
absl::Status RatesFitChange(const std::string& instrument, const std::vector<v1::Rate>& rates,
                            const v1::Instrument& before, const v1::Instrument& after, absl::Time now) {
  std::vector<std::pair<std::string, std::vector<std::string>>> conflicts;  // why, line names
  for (const v1::Rate* rate : RatesInForceOrLater(rates, now)) {
    std::string why = RateConflictWithChange(*rate, before, after);
    if (why.empty()) continue;
    auto it = std::find_if(conflicts.begin(), conflicts.end(), [&](const auto& c) { return c.first == why; });
    if (it == conflicts.end()) it = conflicts.insert(conflicts.end(), {std::move(why), {}});
    it->second.push_back(rate->name());
  }
  if (conflicts.empty()) return absl::OkStatus();
  std::vector<std::string> parts;
  for (const auto& [why, names] : conflicts) {
    constexpr size_t kNamed = 3;
    std::string listed = absl::StrJoin(names.begin(), names.begin() + std::min(names.size(), kNamed), ", ");
    if (names.size() > kNamed) absl::StrAppend(&listed, ", ...");
    parts.push_back(absl::StrCat(names.size(), names.size() == 1 ? " line " : " lines ", why, " (", listed, ")"));
  }
  return MakeError(absl::StatusCode::kFailedPrecondition, "RATE_CARD_CONFLICT",
                   absl::StrCat("rate lines in force or taking effect later would no longer fit ", instrument, ": ",
                                absl::StrJoin(parts, "; "),
                                ". CreateRate takes lines only in the instrument's currency and units, and these "
                                "lines stay in force until a later line of theirs replaces them: keep the currency, "
                                "unit or rate basis they are in (a catalogue entry under a new entry_id may take "
                                "another unit)"),
                   {{"rate", conflicts.front().second.front()}});
}
}  // namespace

absl::StatusOr<v1::Instrument> InventoryManager::UpdateInstrument(
    const Principal& p, const v1::UpdateInstrumentRequest& r) {
  return Commit<v1::Instrument>(p, "UpdateInstrument", r, r.request_id(),
                                [&]() -> absl::StatusOr<Plan<v1::Instrument>> {
    LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.instrument().name(), "instruments", "instrument.name"));
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Instrument>(keys::Instrument(id), "INSTRUMENT_NOT_FOUND", r.instrument().name()));
    LS_RETURN_IF_ERROR(RequireStaffOf(p, current.value));
    static constexpr const char* kPaths[] = {"display_name",      "category",      "original_value",       "modes",
                                             "service_catalogue", "access_policy", "daily_available_hours"};
    const FieldMask mask = MaskOrImplied(r.instrument(), r.update_mask(), kPaths);
    LS_RETURN_IF_ERROR(ValidateMask(mask, kPaths));
    LS_RETURN_IF_ERROR(CheckEtag(r.instrument().etag(), current.version));
    if (current.value.state() == v1::RETIRED) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INSTRUMENT_RETIRED",
                       r.instrument().name() + " is retired and cannot change");
    }
    v1::Instrument in = current.value;
    ApplyMask(r.instrument(), mask, &in);
    LS_RETURN_IF_ERROR(ValidateInstrument(in));
    const absl::Time now = clock_->Now();
    // Then the rate lines: none LookupRate may still pick (in force now or
    // later) may be left in a currency or unit CreateRate would refuse.
    std::optional<int64_t> rate_lines;
    if (RatePricingChanged(current.value, in)) {
      LS_ASSIGN_OR_RETURN(auto members, IndexMembers(store_->docs(), keys::Rates(id)));
      std::vector<std::string> rate_keys;
      for (const auto& m : members) rate_keys.push_back(keys::Rate(id, RateIdOf(m)));
      LS_ASSIGN_OR_RETURN(auto loaded, store_->LoadMany<v1::Rate>(rate_keys));
      std::vector<v1::Rate> rates;
      for (auto& l : loaded) rates.push_back(std::move(l.value));
      LS_RETURN_IF_ERROR(RatesFitChange(r.instrument().name(), rates, current.value, in, now));
      rate_lines = static_cast<int64_t>(members.size());
    }
    if (Unchanged(in, current)) return AnswerStored(keys::Instrument(id), std::move(current));
    *in.mutable_update_time() = ToProto(now);
    in.set_etag(std::to_string(current.version + 1));
    Plan<v1::Instrument> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Instrument(id), in.SerializeAsString(), current.version});
    // No line was added since they were read (lines are never removed): a
    // CreateRate between the read and this step sends the update back to
    // read them again.
    if (rate_lines) plan.mutation.guards.push_back({keys::Rates(id), *rate_lines, /*count=*/true});
    auto* ev = plan.event.mutable_instrument_changed();
    ev->set_kind(v1::UPDATED);
    *ev->mutable_instrument() = in;
    plan.response = std::move(in);
    if (!r.instrument().etag().empty()) plan.on_conflict = EtagMismatch();
    return plan;
  });
}

absl::StatusOr<v1::Instrument> InventoryManager::SetInstrumentState(
    const Principal& p, const v1::SetInstrumentStateRequest& r) {
  return Commit<v1::Instrument>(p, "SetInstrumentState", r, r.request_id(),
                                [&]() -> absl::StatusOr<Plan<v1::Instrument>> {
    LS_ASSIGN_OR_RETURN(std::string id, ParseName(r.name(), "instruments", "name"));
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Instrument>(keys::Instrument(id), "INSTRUMENT_NOT_FOUND", r.name()));
    LS_RETURN_IF_ERROR(RequireStaffOf(p, current.value));
    if (r.state() == v1::INSTRUMENT_STATE_UNSPECIFIED || !v1::InstrumentState_IsValid(r.state())) {
      return InvalidField("state", "choose ACTIVE, MAINTENANCE or RETIRED");
    }
    LS_RETURN_IF_ERROR(CheckEtag(r.etag(), current.version));
    const v1::InstrumentState from = current.value.state();
    if (from == r.state()) {
      return NoChange(absl::StrCat(r.name(), " is already ", v1::InstrumentState_Name(from)));
    }
    if (!InstrumentTransitionAllowed(from, r.state())) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "TRANSITION_NOT_ALLOWED",
                       absl::StrCat("an instrument cannot go from ", v1::InstrumentState_Name(from),
                                    " to ", v1::InstrumentState_Name(r.state())));
    }
    v1::Instrument in = current.value;
    in.set_state(r.state());
    const absl::Time now = clock_->Now();
    *in.mutable_update_time() = ToProto(now);
    in.set_etag(std::to_string(current.version + 1));
    Plan<v1::Instrument> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Instrument(id), in.SerializeAsString(), current.version});
    auto* ev = plan.event.mutable_instrument_changed();
    ev->set_kind(v1::STATE_CHANGED);
    *ev->mutable_instrument() = in;
    ev->set_previous_state(from);
    ev->set_reason(r.reason());
    plan.response = std::move(in);
    if (!r.etag().empty()) plan.on_conflict = EtagMismatch();
    return plan;
  });
}

// ================================================================ rate cards

absl::StatusOr<v1::Rate> InventoryManager::CreateRate(const Principal& p,
                                                      const v1::CreateRateRequest& r) {
  return Commit<v1::Rate>(p, "CreateRate", r, r.request_id(),
                          [&]() -> absl::StatusOr<Plan<v1::Rate>> {
    LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.parent(), "instruments", "parent"));
    const absl::Time now = clock_->Now();
    v1::Rate rate = r.rate();
    if (!rate.has_effective_time()) *rate.mutable_effective_time() = ToProto(now);
    // A line may take effect in the past (a rate history, a correction):
    // billing stores the price of every charge it posts, so charges already
    // posted keep theirs; uses priced later read the line in force then.
    // The Errors list's order: the line's own fields, then what needs the
    // instrument (its currency; INSTRUMENT_NOT_FOUND,
    // SERVICE_ENTRY_NOT_FOUND before MODE_NOT_OFFERED; then the unit
    // against the entry or the lease rules).
    LS_RETURN_IF_ERROR(ValidateRateFields(rate));
    LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.parent()));
    LS_RETURN_IF_ERROR(ValidateRateCurrency(rate, in.value));
    if (!rate.service_entry_id().empty()) {
      bool found = false;
      for (const auto& e : in.value.service_catalogue()) found |= e.entry_id() == rate.service_entry_id();
      if (!found) {
        return MakeError(absl::StatusCode::kNotFound, "SERVICE_ENTRY_NOT_FOUND",
                         absl::StrCat(r.parent(), " has no catalogue entry '", rate.service_entry_id(), "'"));
      }
    }
    if (FindMode(in.value, rate.mode()) == nullptr) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "MODE_NOT_OFFERED",
                       absl::StrCat(r.parent(), " does not offer ",
                                    labshare::type::v1::SharingMode_Name(rate.mode()),
                                    "; add the mode to the instrument first"));
    }
    // Then the unit against what the line prices: the entry's unit, the
    // lease rules' rate basis.
    LS_RETURN_IF_ERROR(ValidateRateUnitFor(rate, in.value));
    // The id is derived from the line's key and time, so two lines for the
    // same key and effective time collide (RATE_EXISTS) atomically.
    const std::string key_without_id = RateIdSeed(rate);
    const std::string rate_id =
        "r-" + RequestFingerprint(key_without_id, rate.effective_time()).substr(0, 16);
    rate.set_name(absl::StrCat(r.parent(), "/rates/", rate_id));
    *rate.mutable_create_time() = ToProto(now);
    Plan<v1::Rate> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Rate(instr_id, rate_id), rate.SerializeAsString(), 0});
    plan.mutation.index_ops.push_back({keys::Rates(instr_id), RateSortKey(rate, rate_id)});
    // Its currency, modes and catalogue are still the ones checked.
    plan.mutation.guards.push_back({keys::Instrument(instr_id), in.version});
    auto* ev = plan.event.mutable_rate_created();
    ev->set_instrument(r.parent());
    *ev->mutable_rate() = rate;
    plan.response = std::move(rate);
    plan.on_conflict = MakeError(absl::StatusCode::kAlreadyExists, "RATE_EXISTS",
                                 "a line for this mode, payer class, tier and entry already takes "
                                 "effect at that time; choose another effective_time");
    return plan;
  });
}

absl::StatusOr<v1::Rate> InventoryManager::GetRate(const Principal&, const v1::GetRateRequest& r) {
  LS_ASSIGN_OR_RETURN(auto ids, ParseChildName(r.name(), "instruments", "rates", "name"));
  LS_ASSIGN_OR_RETURN(auto rate, store_->Load<v1::Rate>(keys::Rate(ids.first, ids.second), "RATE_NOT_FOUND", r.name()));
  return std::move(rate.value);
}

absl::StatusOr<v1::ListRatesResponse> InventoryManager::ListRates(const Principal& p,
                                                                  const v1::ListRatesRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.parent(), "instruments", "parent"));
  if (!labshare::type::v1::SharingMode_IsValid(r.mode())) return InvalidField("mode", "not a SharingMode value");
  LS_RETURN_IF_ERROR(page_tokens_.Parse(r, p).status());  // the request first, then the lookup
  LS_RETURN_IF_ERROR(store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.parent()).status());
  return ListFromIndex<v1::Rate, v1::ListRatesResponse>(
      p, r, keys::Rates(instr_id),
      [&](const std::string& member) { return keys::Rate(instr_id, RateIdOf(member)); },
      [&](const v1::Rate& rate) { return r.mode() == 0 || rate.mode() == r.mode(); },
      [](v1::ListRatesResponse& resp, v1::Rate rate) { *resp.add_rates() = std::move(rate); });
}

absl::StatusOr<v1::LookupRateResponse> InventoryManager::LookupRate(
    const Principal&, const v1::LookupRateRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.instrument(), "instruments", "instrument"));
  LS_ASSIGN_OR_RETURN(std::string payer_id, ParseName(r.payer_organization(), "organizations", "payer_organization"));
  if (r.mode() == labshare::type::v1::SHARING_MODE_UNSPECIFIED) return InvalidField("mode", "required");
  if (!labshare::type::v1::SharingMode_IsValid(r.mode())) {
    return InvalidField("mode", "must be ON_SITE, LEASE, JOINT_RESEARCH or TECHNICAL_SERVICE");
  }
  if (!labshare::type::v1::PayerClass_IsValid(r.payer_class())) {
    return InvalidField("payer_class", "must be OWNER, MEMBER or NON_MEMBER, or unset");
  }
  LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.instrument()));
  LS_ASSIGN_OR_RETURN(auto payer, store_->Load<v1::Organization>(keys::Org(payer_id), "ORGANIZATION_NOT_FOUND", r.payer_organization()));
  LS_ASSIGN_OR_RETURN(auto members, IndexMembers(store_->docs(), keys::Rates(instr_id)));
  std::vector<std::string> rate_keys;
  for (const auto& m : members) rate_keys.push_back(keys::Rate(instr_id, RateIdOf(m)));
  LS_ASSIGN_OR_RETURN(auto loaded, store_->LoadMany<v1::Rate>(rate_keys));
  std::vector<v1::Rate> rates;
  for (auto& l : loaded) rates.push_back(std::move(l.value));
  // The class and tier the caller recorded (a booking's), else the
  // organisation's now.
  const bool recorded = r.payer_class() != labshare::type::v1::PAYER_CLASS_UNSPECIFIED;
  const PayerClass cls = recorded ? r.payer_class() : PayerClassFor(payer.value, in.value);
  const std::string& tier = recorded ? r.payer_tier() : payer.value.tier();
  // An unset time means now.
  const absl::Time at = r.has_time() ? FromProto(r.time()) : clock_->Now();
  // service_entry_id prices a TECHNICAL_SERVICE entry; other modes ignore it.
  const std::string entry = r.mode() == labshare::type::v1::TECHNICAL_SERVICE ? r.service_entry_id() : "";
  const v1::Rate* rate = FindRate(rates, r.mode(), cls, tier, entry, at);
  if (rate == nullptr) {
    return MakeError(absl::StatusCode::kNotFound, "NO_RATE",
                     absl::StrCat("no ", labshare::type::v1::PayerClass_Name(cls), " rate for ",
                                  labshare::type::v1::SharingMode_Name(r.mode()), " on ",
                                  r.instrument(), " is in force at that time"));
  }
  v1::LookupRateResponse resp;
  *resp.mutable_rate() = *rate;
  resp.set_payer_class(cls);
  return resp;
}

// ================================================================ qualifications

absl::StatusOr<v1::Qualification> InventoryManager::GrantQualification(
    const Principal& p, const v1::GrantQualificationRequest& r) {
  return Commit<v1::Qualification>(p, "GrantQualification", r, r.request_id(),
                                   [&]() -> absl::StatusOr<Plan<v1::Qualification>> {
    // The scope (staff of the instrument's owner or operator) needs the
    // instrument; it comes before the user's name is validated (types.proto).
    LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.instrument(), "instruments", "instrument"));
    LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.instrument()));
    LS_RETURN_IF_ERROR(RequireStaffOf(p, in.value));
    LS_ASSIGN_OR_RETURN(std::string user_id, ParseName(r.user(), "users", "user"));
    LS_ASSIGN_OR_RETURN(auto user, store_->Load<v1::User>(keys::User(user_id), "USER_NOT_FOUND", r.user()));
    // The Errors list's order: MODE_NOT_OFFERED, INSTRUMENT_RETIRED, USER_DISABLED.
    if (FindMode(in.value, labshare::type::v1::ON_SITE) == nullptr) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "MODE_NOT_OFFERED",
                       r.instrument() + " offers no on-site use, so it needs no qualification");
    }
    if (in.value.state() == v1::RETIRED) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INSTRUMENT_RETIRED", r.instrument() + " is retired");
    }
    if (user.value.disabled()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "USER_DISABLED", r.user() + " is disabled");
    }
    const std::string key = keys::Qualification(instr_id, user_id);
    LS_ASSIGN_OR_RETURN(auto existing, store_->Find<v1::Qualification>(key));
    const absl::Time now = clock_->Now();
    v1::Qualification q = existing ? existing->value : v1::Qualification();
    q.set_name(absl::StrCat(r.instrument(), "/qualifications/", user_id));
    q.set_user(r.user());
    q.set_instrument(r.instrument());
    *q.mutable_grant_time() = ToProto(now);
    q.set_granted_by(ActorName(p));
    q.set_revoked(false);
    q.set_note(r.note());
    q.clear_state();
    q.clear_expire_time();
    Plan<v1::Qualification> plan;
    plan.now = now;
    plan.mutation.writes.push_back({key, q.SerializeAsString(), existing ? existing->version : 0});
    plan.mutation.index_ops.push_back({keys::InstrumentQualifications(instr_id), user_id});
    plan.mutation.index_ops.push_back({keys::UserQualifications(user_id), instr_id});
    // The instrument (scope, mode, state, validity) and the user (disabled)
    // are still as checked.
    plan.mutation.guards.push_back({keys::Instrument(instr_id), in.version});
    plan.mutation.guards.push_back({keys::User(user_id), user.version});
    ComputeQualificationState(q, QualificationValidityDays(in.value), now);
    auto* ev = plan.event.mutable_qualification_changed();
    ev->set_kind(existing ? v1::UPDATED : v1::CREATED);
    *ev->mutable_qualification() = q;
    plan.response = std::move(q);
    return plan;
  });
}

absl::StatusOr<v1::Qualification> InventoryManager::RevokeQualification(
    const Principal& p, const v1::RevokeQualificationRequest& r) {
  return Commit<v1::Qualification>(p, "RevokeQualification", r, r.request_id(),
                                   [&]() -> absl::StatusOr<Plan<v1::Qualification>> {
    LS_ASSIGN_OR_RETURN(auto ids, ParseChildName(r.name(), "instruments", "qualifications", "name"));
    LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(ids.first), "INSTRUMENT_NOT_FOUND", "instruments/" + ids.first));
    LS_RETURN_IF_ERROR(RequireStaffOf(p, in.value));
    const std::string key = keys::Qualification(ids.first, ids.second);
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Qualification>(key, "QUALIFICATION_NOT_FOUND", r.name()));
    if (current.value.revoked()) return NoChange(r.name() + " is already revoked");
    v1::Qualification q = current.value;
    q.set_revoked(true);
    if (!r.reason().empty()) q.set_note(r.reason());
    Plan<v1::Qualification> plan;
    plan.now = clock_->Now();
    plan.mutation.writes.push_back({key, q.SerializeAsString(), current.version});
    plan.mutation.guards.push_back({keys::Instrument(ids.first), in.version});  // scope, validity
    ComputeQualificationState(q, QualificationValidityDays(in.value), plan.now);
    auto* ev = plan.event.mutable_qualification_changed();
    ev->set_kind(v1::STATE_CHANGED);
    *ev->mutable_qualification() = q;
    plan.response = std::move(q);
    return plan;
  });
}

absl::StatusOr<v1::Qualification> InventoryManager::GetQualification(
    const Principal&, const v1::GetQualificationRequest& r) {
  LS_ASSIGN_OR_RETURN(auto ids, ParseChildName(r.name(), "instruments", "qualifications", "name"));
  // The parent first: a missing instrument is INSTRUMENT_NOT_FOUND (contract).
  LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(ids.first), "INSTRUMENT_NOT_FOUND", "instruments/" + ids.first));
  LS_ASSIGN_OR_RETURN(auto q, store_->Load<v1::Qualification>(keys::Qualification(ids.first, ids.second), "QUALIFICATION_NOT_FOUND", r.name()));
  ComputeQualificationState(q.value, QualificationValidityDays(in.value), clock_->Now());
  return std::move(q.value);
}

absl::StatusOr<v1::ListQualificationsResponse> InventoryManager::ListQualifications(
    const Principal& p, const v1::ListQualificationsRequest& r) {
  std::string index;
  std::function<std::string(const std::string&)> key_of;
  std::string user_id;
  if (!r.user().empty()) {
    LS_ASSIGN_OR_RETURN(user_id, ParseName(r.user(), "users", "user"));
  }
  if (r.parent() == "instruments/-") {
    if (user_id.empty()) return InvalidField("user", "required when parent is instruments/-");
    index = keys::UserQualifications(user_id);
    key_of = [user_id](const std::string& instr) { return keys::Qualification(instr, user_id); };
  } else {
    LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.parent(), "instruments", "parent"));
    index = keys::InstrumentQualifications(instr_id);
    key_of = [instr_id](const std::string& user) { return keys::Qualification(instr_id, user); };
  }
  LS_ASSIGN_OR_RETURN(
      auto resp,
      (ListFromIndex<v1::Qualification, v1::ListQualificationsResponse>(
          p, r, index, key_of,
          [&](const v1::Qualification& q) { return r.user().empty() || q.user() == r.user(); },
          [](v1::ListQualificationsResponse& out, v1::Qualification q) {
            *out.add_qualifications() = std::move(q);
          })));
  // State depends on each instrument's validity rule, read in one round trip.
  std::vector<std::string> instr_keys;
  for (const auto& q : resp.qualifications()) {
    instr_keys.push_back(keys::Instrument(q.instrument().substr(q.instrument().find('/') + 1)));
  }
  LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(instr_keys));
  const absl::Time now = clock_->Now();
  for (int i = 0; i < resp.qualifications_size(); ++i) {
    v1::Instrument in;
    if (docs[static_cast<size_t>(i)]) LS_RETURN_IF_ERROR(Parse(in, docs[static_cast<size_t>(i)]->data));
    ComputeQualificationState(*resp.mutable_qualifications(i), QualificationValidityDays(in), now);
  }
  return resp;
}

absl::StatusOr<v1::Qualification> InventoryManager::RecordQualificationUse(
    const Principal& p, const v1::RecordQualificationUseRequest& r) {
  return Commit<v1::Qualification>(p, "RecordQualificationUse", r, r.request_id(),
                                   [&]() -> absl::StatusOr<Plan<v1::Qualification>> {
    LS_ASSIGN_OR_RETURN(auto ids, ParseChildName(r.name(), "instruments", "qualifications", "name"));
    if (!r.has_use_time()) return InvalidField("use_time", "required");
    if (r.has_use_start_time() && FromProto(r.use_start_time()) > FromProto(r.use_time())) {
      return InvalidField("use_start_time", "must not be after use_time (the use begins before it ends)");
    }
    LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(ids.first), "INSTRUMENT_NOT_FOUND", "instruments/" + ids.first));
    const std::string key = keys::Qualification(ids.first, ids.second);
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::Qualification>(key, "QUALIFICATION_NOT_FOUND", r.name()));
    v1::Qualification q = current.value;
    const int validity = QualificationValidityDays(in.value);
    // Lapsed by the time this use began (its state at use_start_time when
    // given, else at use_time): only a new grant renews a lapsed
    // qualification, a later use does not. A session that began while it
    // was valid renews it although it lapsed during the session. A revoked
    // one is not valid at any time: only a grant restores it.
    v1::Qualification at_use = q;
    ComputeQualificationState(at_use, validity,
                              FromProto(r.has_use_start_time() ? r.use_start_time() : r.use_time()));
    const bool lapsed = at_use.state() != v1::VALID;
    // A use before the current grant was made under an earlier one (a late
    // report after a re-grant): the grant already restarted the validity.
    const bool before_grant = q.has_grant_time() && FromProto(r.use_time()) < FromProto(q.grant_time());
    if (lapsed || before_grant ||
        (q.has_last_use_time() && FromProto(r.use_time()) <= FromProto(q.last_use_time()))) {
      // An older use, one before the grant, or one after the lapse or the
      // revocation changes nothing: answer with the current state. A use
      // after now is taken as given (booking reports check-outs, which
      // are never ahead of its clock).
      ComputeQualificationState(q, validity, clock_->Now());
      Plan<v1::Qualification> unchanged;
      unchanged.write_nothing = true;
      unchanged.mutation.guards.push_back({key, current.version});
      unchanged.mutation.guards.push_back({keys::Instrument(ids.first), in.version});
      unchanged.response = std::move(q);
      return unchanged;
    }
    *q.mutable_last_use_time() = r.use_time();
    Plan<v1::Qualification> plan;
    plan.now = clock_->Now();
    plan.mutation.writes.push_back({key, q.SerializeAsString(), current.version});
    plan.mutation.guards.push_back({keys::Instrument(ids.first), in.version});  // the validity applied
    ComputeQualificationState(q, validity, plan.now);
    auto* ev = plan.event.mutable_qualification_changed();
    ev->set_kind(v1::UPDATED);
    *ev->mutable_qualification() = q;
    plan.response = std::move(q);
    return plan;
  });
}

// ================================================================ maintenance

absl::StatusOr<v1::MaintenanceWindow> InventoryManager::CreateMaintenanceWindow(
    const Principal& p, const v1::CreateMaintenanceWindowRequest& r) {
  return Commit<v1::MaintenanceWindow>(p, "CreateMaintenanceWindow", r, r.request_id(),
                                       [&]() -> absl::StatusOr<Plan<v1::MaintenanceWindow>> {
    LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.parent(), "instruments", "parent"));
    LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.parent()));
    LS_RETURN_IF_ERROR(RequireStaffOf(p, in.value));
    v1::MaintenanceWindow w = r.maintenance_window();
    LS_RETURN_IF_ERROR(ValidateMaintenanceWindow(w));
    if (in.value.state() == v1::RETIRED) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INSTRUMENT_RETIRED", r.parent() + " is retired");
    }
    const std::string id = NewId("mw");
    w.set_name(absl::StrCat(r.parent(), "/maintenanceWindows/", id));
    w.set_state(v1::SCHEDULED);
    const absl::Time now = clock_->Now();
    *w.mutable_create_time() = ToProto(now);
    w.set_created_by(ActorName(p));
    Plan<v1::MaintenanceWindow> plan;
    plan.now = now;
    plan.mutation.writes.push_back({keys::Window(instr_id, id), w.SerializeAsString(), 0});
    plan.mutation.index_ops.push_back({keys::Windows(instr_id), WindowSortKey(w, id)});
    plan.mutation.guards.push_back({keys::Instrument(instr_id), in.version});  // scope, not retired
    auto* ev = plan.event.mutable_maintenance_window_changed();
    ev->set_kind(v1::CREATED);
    ev->set_instrument(r.parent());
    *ev->mutable_maintenance_window() = w;
    plan.response = std::move(w);
    return plan;
  });
}

absl::StatusOr<v1::MaintenanceWindow> InventoryManager::GetMaintenanceWindow(
    const Principal&, const v1::GetMaintenanceWindowRequest& r) {
  LS_ASSIGN_OR_RETURN(auto ids, ParseChildName(r.name(), "instruments", "maintenanceWindows", "name"));
  LS_ASSIGN_OR_RETURN(auto w, store_->Load<v1::MaintenanceWindow>(keys::Window(ids.first, ids.second), "MAINTENANCE_WINDOW_NOT_FOUND", r.name()));
  return std::move(w.value);
}

absl::StatusOr<v1::ListMaintenanceWindowsResponse> InventoryManager::ListMaintenanceWindows(
    const Principal& p, const v1::ListMaintenanceWindowsRequest& r) {
  LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.parent(), "instruments", "parent"));
  const bool ranged = r.has_range();
  absl::Time from = absl::InfinitePast(), to = absl::InfiniteFuture();
  if (ranged) {
    if (!r.range().has_start_time() || !r.range().has_end_time() ||
        FromProto(r.range().end_time()) <= FromProto(r.range().start_time())) {
      return InvalidField("range", "needs start_time before end_time");
    }
    from = FromProto(r.range().start_time());
    to = FromProto(r.range().end_time());
  }
  LS_RETURN_IF_ERROR(page_tokens_.Parse(r, p).status());  // the request first, then the lookup
  LS_RETURN_IF_ERROR(store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.parent()).status());
  return ListFromIndex<v1::MaintenanceWindow, v1::ListMaintenanceWindowsResponse>(
      p, r, keys::Windows(instr_id),
      [&](const std::string& member) {
        return keys::Window(instr_id, member.substr(member.rfind('|') + 1));
      },
      [&](const v1::MaintenanceWindow& w) {
        if (!r.include_cancelled() && w.state() == v1::CANCELLED) return false;
        return FromProto(w.interval().start_time()) < to && from < FromProto(w.interval().end_time());
      },
      [](v1::ListMaintenanceWindowsResponse& resp, v1::MaintenanceWindow w) {
        *resp.add_maintenance_windows() = std::move(w);
      });
}

absl::StatusOr<v1::MaintenanceWindow> InventoryManager::CancelMaintenanceWindow(
    const Principal& p, const v1::CancelMaintenanceWindowRequest& r) {
  return Commit<v1::MaintenanceWindow>(p, "CancelMaintenanceWindow", r, r.request_id(),
                                       [&]() -> absl::StatusOr<Plan<v1::MaintenanceWindow>> {
    LS_ASSIGN_OR_RETURN(auto ids, ParseChildName(r.name(), "instruments", "maintenanceWindows", "name"));
    LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(ids.first), "INSTRUMENT_NOT_FOUND", "instruments/" + ids.first));
    LS_RETURN_IF_ERROR(RequireStaffOf(p, in.value));
    const std::string key = keys::Window(ids.first, ids.second);
    LS_ASSIGN_OR_RETURN(auto current, store_->Load<v1::MaintenanceWindow>(key, "MAINTENANCE_WINDOW_NOT_FOUND", r.name()));
    if (current.value.state() == v1::CANCELLED) return NoChange(r.name() + " is already cancelled");
    v1::MaintenanceWindow w = current.value;
    w.set_state(v1::CANCELLED);
    Plan<v1::MaintenanceWindow> plan;
    plan.mutation.writes.push_back({key, w.SerializeAsString(), current.version});
    plan.mutation.guards.push_back({keys::Instrument(ids.first), in.version});  // the scope
    auto* ev = plan.event.mutable_maintenance_window_changed();
    ev->set_kind(v1::STATE_CHANGED);
    ev->set_instrument("instruments/" + ids.first);
    *ev->mutable_maintenance_window() = w;
    plan.response = std::move(w);
    return plan;
  });
}

// ================================================================ access

absl::StatusOr<v1::CheckAccessResponse> InventoryManager::CheckAccess(
    const Principal& p, const v1::CheckAccessRequest& r) {
  // The scope first, on the names as given (types.proto: before
  // validation): a LAB_USER checks for themselves, paid by their own
  // organisation (as CreateBooking lets them book), so a malformed or
  // another user, or another payer, is ORGANIZATION_SCOPE.
  const bool for_anyone =
      p.HasAnyRole({Role::kFacilityStaff, Role::kConsortiumAdmin, Role::kAuditor, Role::kService});
  if (!for_anyone && r.user() != "users/" + p.user_id) {
    return ScopeDenied("lab users may check access for themselves only");
  }
  if (!for_anyone && !r.payer_organization().empty() && r.payer_organization() != ActorOrganization(p)) {
    return ScopeDenied("lab users may check access paid by their own organisation only");
  }
  LS_ASSIGN_OR_RETURN(std::string user_id, ParseName(r.user(), "users", "user"));
  LS_ASSIGN_OR_RETURN(std::string instr_id, ParseName(r.instrument(), "instruments", "instrument"));
  // Every name of the request is checked (INVALID_NAME) before anything is
  // read (USER_NOT_FOUND): the payer's too, when the request names one.
  if (!r.payer_organization().empty()) {
    LS_RETURN_IF_ERROR(ParseName(r.payer_organization(), "organizations", "payer_organization").status());
  }
  if (r.mode() == labshare::type::v1::SHARING_MODE_UNSPECIFIED ||
      !labshare::type::v1::SharingMode_IsValid(r.mode())) {
    return InvalidField("mode", "choose ON_SITE, LEASE, JOINT_RESEARCH or TECHNICAL_SERVICE");
  }
  if (!r.interval().has_start_time() || !r.interval().has_end_time() ||
      FromProto(r.interval().end_time()) <= FromProto(r.interval().start_time())) {
    return InvalidField("interval", "needs start_time before end_time (half-open [start, end))");
  }
  LS_ASSIGN_OR_RETURN(auto user, store_->Load<v1::User>(keys::User(user_id), "USER_NOT_FOUND", r.user()));
  const std::string payer_name = r.payer_organization().empty() ? user.value.organization() : r.payer_organization();
  LS_ASSIGN_OR_RETURN(std::string payer_id, ParseName(payer_name, "organizations", "payer_organization"));
  LS_ASSIGN_OR_RETURN(auto in, store_->Load<v1::Instrument>(keys::Instrument(instr_id), "INSTRUMENT_NOT_FOUND", r.instrument()));
  // Everything else in one round trip.
  LS_ASSIGN_OR_RETURN(std::string fac_id, ParseName(in.value.facility(), "facilities", "facility"));
  LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany({keys::Org(payer_id), keys::Facility(fac_id),
                                                         keys::Qualification(instr_id, user_id)}));
  if (!docs[0]) {
    return MakeError(absl::StatusCode::kNotFound, "ORGANIZATION_NOT_FOUND", payer_name + " does not exist");
  }
  v1::Organization payer;
  v1::Facility facility;
  v1::Qualification qualification;
  LS_RETURN_IF_ERROR(Parse(payer, docs[0]->data));
  if (docs[1]) LS_RETURN_IF_ERROR(Parse(facility, docs[1]->data));
  if (docs[2]) LS_RETURN_IF_ERROR(Parse(qualification, docs[2]->data));

  // Every line and every window starting before the interval ends, however
  // many the history holds.
  LS_ASSIGN_OR_RETURN(auto rate_members, IndexMembers(store_->docs(), keys::Rates(instr_id)));
  const absl::Time end = FromProto(r.interval().end_time());
  LS_ASSIGN_OR_RETURN(
      auto window_members,
      IndexMembers(store_->docs(), keys::Windows(instr_id), [end](const std::string& m) {
        // Members sort by start: later ones cannot overlap the interval.
        // Their whole seconds suffice (any format: see WindowSortKey).
        return absl::FromUnixSeconds(WindowMemberStartSeconds(m)) < end;
      }));
  std::vector<std::string> rate_keys, window_keys;
  for (const auto& m : rate_members) rate_keys.push_back(keys::Rate(instr_id, RateIdOf(m)));
  for (const auto& m : window_members) window_keys.push_back(keys::Window(instr_id, m.substr(m.rfind('|') + 1)));
  LS_ASSIGN_OR_RETURN(auto rates, store_->LoadMany<v1::Rate>(rate_keys));
  LS_ASSIGN_OR_RETURN(auto windows, store_->LoadMany<v1::MaintenanceWindow>(window_keys));

  AccessFacts facts;
  facts.user = &user.value;
  facts.payer = &payer;
  facts.instrument = &in.value;
  facts.facility = &facility;
  facts.qualification = docs[2] ? &qualification : nullptr;
  for (auto& l : rates) facts.rates.push_back(std::move(l.value));
  for (auto& l : windows) facts.windows.push_back(std::move(l.value));
  return EvaluateAccess(facts, r, clock_->Now());
}

// ================================================================ migration

namespace {
// Replaces an index member with another in one step, only if the old one
// was still there (a second migration running at the same time moves it
// once).
const RedisScript& MoveIndexMember() {
  static const RedisScript* const kMove = new RedisScript(R"lua(
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], 0, ARGV[2])
  return 1
end
return 0
)lua");
  return *kMove;
}
}  // namespace

absl::StatusOr<int> InventoryManager::MigrateRateIndexes() {
  // Members of an earlier format ('|'-separated; whole seconds) become
  // RateSortKey's, computed from the line they name; members already of
  // that format are left as they are, and so are members whose line is
  // gone.
  int moved = 0;
  auto migrate = [&](const std::string& instr_id, const std::vector<std::string>& members) -> absl::Status {
    std::vector<std::string> old_members, doc_keys;
    for (const auto& m : members) {
      if (IsRateSortKey(m)) continue;
      old_members.push_back(m);
      doc_keys.push_back(keys::Rate(instr_id, RateIdOf(m)));
    }
    if (doc_keys.empty()) return absl::OkStatus();
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    for (size_t i = 0; i < old_members.size(); ++i) {
      if (!docs[i]) continue;
      v1::Rate rate;
      LS_RETURN_IF_ERROR(Parse(rate, docs[i]->data));
      const std::string& m = old_members[i];
      const std::string key = RateSortKey(rate, RateIdOf(m));
      if (key == m) continue;  // a tier with '|' in it: already right
      LS_ASSIGN_OR_RETURN(RedisValue reply,
                          store_->docs().pool()->Eval(MoveIndexMember(), {keys::Rates(instr_id)}, {m, key}));
      moved += static_cast<int>(reply.integer);
    }
    return absl::OkStatus();
  };
  LS_RETURN_IF_ERROR(ForEachIndexBatch(store_->docs(), keys::Instruments(), [&](const std::vector<std::string>& ids) {
    for (const auto& instr_id : ids) {
      // A member moved while paging and met again is of the new format.
      LS_RETURN_IF_ERROR(ForEachIndexBatch(store_->docs(), keys::Rates(instr_id),
                                           [&](const std::vector<std::string>& members) {
                                             return migrate(instr_id, members);
                                           }));
    }
    return absl::OkStatus();
  }));
  return moved;
}

absl::StatusOr<int> InventoryManager::MigrateWindowIndexes() {
  // One member at a time (MoveIndexMember). Candidates: members of the
  // first format (no '.' in the start) and members starting before 1970
  // (a leading '-': "%020d" or WindowSortKey's; the key computed from the
  // window decides); the others are WindowSortKey's already.
  int moved = 0;
  auto migrate = [&](const std::string& instr_id, const std::vector<std::string>& members) -> absl::Status {
    const std::string index = keys::Windows(instr_id);
    std::vector<std::string> old_members, doc_keys;
    for (const auto& m : members) {
      const size_t bar = m.rfind('|');
      if (bar == std::string::npos) continue;
      if (m.find('.') < bar && m[0] != '-') continue;  // already migrated
      old_members.push_back(m);
      doc_keys.push_back(keys::Window(instr_id, m.substr(bar + 1)));
    }
    if (doc_keys.empty()) return absl::OkStatus();
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    for (size_t i = 0; i < old_members.size(); ++i) {
      if (!docs[i]) continue;
      v1::MaintenanceWindow w;
      LS_RETURN_IF_ERROR(Parse(w, docs[i]->data));
      const std::string& m = old_members[i];
      const std::string key = WindowSortKey(w, m.substr(m.rfind('|') + 1));
      if (key == m) continue;  // before 1970, of WindowSortKey's format already
      LS_ASSIGN_OR_RETURN(RedisValue reply, store_->docs().pool()->Eval(MoveIndexMember(), {index}, {m, key}));
      moved += static_cast<int>(reply.integer);
    }
    return absl::OkStatus();
  };
  LS_RETURN_IF_ERROR(ForEachIndexBatch(store_->docs(), keys::Instruments(), [&](const std::vector<std::string>& ids) {
    for (const auto& instr_id : ids) {
      LS_RETURN_IF_ERROR(ForEachIndexBatch(store_->docs(), keys::Windows(instr_id),
                                           [&](const std::vector<std::string>& members) {
                                             return migrate(instr_id, members);
                                           }));
    }
    return absl::OkStatus();
  }));
  return moved;
}

absl::StatusOr<int> InventoryManager::BackfillFacilityInstruments() {
  int examined = 0;
  LS_RETURN_IF_ERROR(ForEachIndexBatch(store_->docs(), keys::Instruments(), [&](const std::vector<std::string>& ids) {
    std::vector<std::string> doc_keys;
    doc_keys.reserve(ids.size());
    for (const auto& id : ids) doc_keys.push_back(keys::Instrument(id));
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    std::vector<std::vector<std::string>> adds;
    for (size_t i = 0; i < ids.size(); ++i) {
      ++examined;
      v1::Instrument in;
      if (!docs[i] || !in.ParseFromString(docs[i]->data)) continue;
      auto fac = ParseName(in.facility(), "facilities", "facility");
      if (!fac.ok()) continue;
      adds.push_back({"ZADD", keys::FacilityInstruments(*fac), "0", ids[i]});
    }
    std::vector<RedisValue> replies;
    if (!adds.empty()) {
      LS_ASSIGN_OR_RETURN(replies, store_->docs().pool()->Pipeline(adds));
    }
    for (const auto& reply : replies) {
      if (reply.is_error()) {
        return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "a facility's instrument index could not be written");
      }
    }
    return absl::OkStatus();
  }));
  return examined;
}

}  // namespace labshare::inventory
