// Joint-research projects: participants with cost shares, a period and hour
// budgets per instrument. The project document lives under {booking}; its
// budget counters live in each instrument's partition (see
// redis_booking_store.h) so that a booking checks and commits budget in the
// same step that takes the slot.
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include <google/protobuf/util/field_mask_util.h>

#include "absl/random/random.h"
#include "absl/time/clock.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/events.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/booking/booking_common.h"
#include "services/booking/booking_lists.h"
#include "services/booking/booking_manager.h"
#include "services/inventory/inventory_rules.h"

namespace labshare::booking {
namespace {

using labshare::inventory::FindMode;
using labshare::inventory::ParseName;

// How long an UpdateProject's fences hold bookings of the project off when
// the updater dies before lifting them. An updater must commit within it
// (its checks are a few reads); a pause longer than this between its
// fences and its commit could let a booking checked against the old
// document through.
constexpr absl::Duration kProjectFenceTtl = absl::Seconds(30);

// A fence's owner: random, in [1, 2^52) (an exact Lua number).
int64_t NewFenceOwner() {
  thread_local absl::BitGen gen;
  return absl::Uniform<int64_t>(gen, 1, int64_t{1} << 52);
}

absl::Status Invalid(absl::string_view reason, std::string field, std::string message) {
  return InvalidFields({{std::move(field), std::move(message)}}, reason);
}

// A project's period or a filter's range: both ends set, start before end.
absl::Status CheckInterval(const labshare::type::v1::Interval& i, const std::string& field) {
  if (!i.has_start_time() || !i.has_end_time() || FromProto(i.end_time()) <= FromProto(i.start_time())) {
    return InvalidField(field, "needs start_time before end_time (half-open [start, end))", "INVALID_INTERVAL");
  }
  return absl::OkStatus();
}

// Fills computed shares and checks the participants.
absl::Status ComputeShares(v1::Project& project) {
  auto* ps = project.mutable_participants();
  if (ps->size() < 2) {
    return Invalid("TEMPLATE_PARTICIPANT_COUNT", "project.participants", "a joint project has at least two participants");
  }
  std::set<std::string> seen;
  int leads = 0;
  for (const auto& p : *ps) {
    LS_RETURN_IF_ERROR(ParseName(p.organization(), "organizations", "project.participants.organization").status());
    if (!seen.insert(p.organization()).second) {
      return Invalid("DUPLICATE_PARTICIPANT", "project.participants", p.organization() + " is listed twice");
    }
    leads += p.lead();
  }
  if (leads > 1) return Invalid("INVALID_FIELD", "project.participants", "at most one lead participant");
  const auto tmpl = project.cost_share_template() == v1::Project::COST_SHARE_TEMPLATE_UNSPECIFIED
                        ? v1::Project::CUSTOM
                        : project.cost_share_template();
  project.set_cost_share_template(tmpl);
  if (tmpl == v1::Project::CUSTOM) {
    int64_t sum = 0;
    for (const auto& p : *ps) {
      if (p.share_bps() <= 0) {
        return Invalid("SHARES_NOT_10000", "project.participants.share_bps", "every CUSTOM share must be positive");
      }
      sum += p.share_bps();
    }
    if (sum != 10000) {
      return Invalid("SHARES_NOT_10000", "project.participants.share_bps",
                     absl::StrCat("shares sum to ", sum, " basis points; they must sum to exactly 10000"));
    }
    return absl::OkStatus();
  }
  for (const auto& p : *ps) {
    if (p.share_bps() != 0) {
      return Invalid("INVALID_FIELD", "project.participants.share_bps", "the template computes the shares; send 0");
    }
  }
  if (tmpl == v1::Project::ONE_THIRD_TWO_THIRDS) {
    if (ps->size() != 2) {
      return Invalid("TEMPLATE_PARTICIPANT_COUNT", "project.participants", "ONE_THIRD_TWO_THIRDS needs exactly two participants");
    }
    (*ps)[0].set_share_bps(3333);
    (*ps)[1].set_share_bps(6667);
    return absl::OkStatus();
  }
  // EQUAL_SPLIT: the remainder one basis point at a time, in list order.
  const int n = ps->size();
  for (int i = 0; i < n; ++i) (*ps)[i].set_share_bps(10000 / n + (i < 10000 % n ? 1 : 0));
  return absl::OkStatus();
}

// The project's holding bookings (PENDING_APPROVAL, CONFIRMED, CHECKED_IN)
// on the instruments `project` budgets. They lie inside its period, so the
// calendar over the period holds them all; an instrument whose budget
// counter commits nothing has none and is not read.
absl::StatusOr<std::vector<v1::Booking>> HoldingBookingsOf(const BookingStore& store, const v1::Project& project) {
  std::vector<v1::Booking> out;
  const std::string id = IdOf(project.name());
  const int64_t from_ms = Ms(FromProto(project.period().start_time()));
  const int64_t to_ms = Ms(FromProto(project.period().end_time()));
  for (const auto& budget : project.instrument_budgets()) {
    const std::string instrument_id = IdOf(budget.instrument());
    LS_ASSIGN_OR_RETURN(auto use, store.GetBudget(id, instrument_id));
    if (use.committed_ms <= 0) continue;
    const int partition = keys::Partition(instrument_id);
    LS_ASSIGN_OR_RETURN(auto entries, store.CalendarRange(partition, instrument_id, from_ms, to_ms));
    std::vector<std::string> ids;
    for (const auto& e : entries) ids.push_back(e.booking_id);
    LS_ASSIGN_OR_RETURN(auto docs, store.GetMany(partition, ids));
    for (const auto& doc : docs) {
      v1::Booking b;
      if (!doc || !b.ParseFromString(doc->data) || b.project() != project.name()) continue;
      if (b.state() == v1::Booking::PENDING_APPROVAL || b.state() == v1::Booking::CONFIRMED ||
          b.state() == v1::Booking::CHECKED_IN) {
        out.push_back(std::move(b));
      }
    }
  }
  return out;
}

// UpdateProject's checks against the holding bookings of `current`: none
// may be paid by a participant `updated` no longer has, nor lie outside its
// period.
absl::Status CheckHoldingBookings(const BookingStore& store, const v1::Project& current,
                                  const v1::Project& updated) {
  std::set<std::string> kept;
  for (const auto& part : updated.participants()) kept.insert(part.organization());
  const absl::Time start = FromProto(updated.period().start_time());
  const absl::Time end = FromProto(updated.period().end_time());
  LS_ASSIGN_OR_RETURN(std::vector<v1::Booking> holding, HoldingBookingsOf(store, current));
  for (const auto& b : holding) {
    if (!kept.count(b.payer_organization())) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "PARTICIPANT_HAS_BOOKINGS",
                       absl::StrCat(b.payer_organization(), " pays for ", b.name(), " (",
                                    v1::Booking::State_Name(b.state()),
                                    "); it stays a participant until its bookings are finished or cancelled"),
                       {{"booking", b.name()}});
    }
    if (FromProto(b.reserved_interval().start_time()) < start || FromProto(b.reserved_interval().end_time()) > end) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "BOOKINGS_OUTSIDE_PERIOD",
                       absl::StrCat(b.name(), " (", v1::Booking::State_Name(b.state()),
                                    ") would lie outside the new period; keep the period around it or cancel it"),
                       {{"booking", b.name()}});
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status BookingManager::CompleteProject(v1::Project& project, bool check_instruments,
                                             bool check_participants) {
  if (project.title().empty()) return InvalidField("project.title", "required");
  LS_RETURN_IF_ERROR(ComputeShares(project));
  LS_RETURN_IF_ERROR(CheckInterval(project.period(), "project.period"));
  if (project.instrument_budgets().empty()) {
    return InvalidField("project.instrument_budgets", "budget at least one instrument");
  }
  std::set<std::string> instruments;
  for (auto& b : *project.mutable_instrument_budgets()) {
    LS_RETURN_IF_ERROR(ParseName(b.instrument(), "instruments", "project.instrument_budgets.instrument").status());
    if (!instruments.insert(b.instrument()).second) {
      return Invalid("DUPLICATE_INSTRUMENT", "project.instrument_budgets", b.instrument() + " is listed twice");
    }
    if (FromProto(b.budget()) <= absl::ZeroDuration()) {
      return InvalidField("project.instrument_budgets.budget", "must be positive");
    }
    b.clear_used();
    b.clear_committed();
    if (!check_instruments) continue;  // as stored, instrument_owner included
    LS_ASSIGN_OR_RETURN(inv::Instrument instrument, inventory_->GetInstrument(b.instrument()));
    if (FindMode(instrument, labshare::type::v1::JOINT_RESEARCH) == nullptr) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "MODE_NOT_OFFERED",
                       b.instrument() + " does not offer JOINT_RESEARCH");
    }
    b.set_instrument_owner(instrument.owner_organization());
  }
  if (!check_participants) return absl::OkStatus();
  for (const auto& p : project.participants()) {
    LS_RETURN_IF_ERROR(inventory_->GetOrganization(p.organization()).status());
  }
  return absl::OkStatus();
}

v1::Project::State BookingManager::ProjectState(const v1::Project& project) const {
  return ProjectState(project, clock_->Now());
}

v1::Project::State BookingManager::ProjectState(const v1::Project& project, absl::Time now) const {
  if (now < FromProto(project.period().start_time())) return v1::Project::PLANNED;
  if (now < FromProto(project.period().end_time())) return v1::Project::ACTIVE;
  return v1::Project::ENDED;
}

absl::Status BookingManager::FillProjectUse(v1::Project& project) const {
  project.set_state(ProjectState(project));
  const std::string id = IdOf(project.name());
  for (auto& b : *project.mutable_instrument_budgets()) {
    LS_ASSIGN_OR_RETURN(auto use, store_->GetBudget(id, IdOf(b.instrument())));
    *b.mutable_used() = ToProto(absl::Milliseconds(use.used_ms));
    *b.mutable_committed() = ToProto(absl::Milliseconds(use.committed_ms));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Project> BookingManager::LoadProject(const std::string& name, int64_t* version,
                                                        absl::string_view field) const {
  LS_ASSIGN_OR_RETURN(std::string id, ParseName(name, "projects", field));
  LS_ASSIGN_OR_RETURN(auto doc, store_->docs().Get(keys::Project(id)));
  if (!doc) {
    // A reservation made by a create (not a claim only) outlives an archived
    // project's document.
    LS_ASSIGN_OR_RETURN(auto reservation, store_->docs().Get(keys::ProjectIdReservation(id)));
    if (reservation && !absl::StartsWith(reservation->data, "claim:")) {
      return MakeError(absl::StatusCode::kNotFound, "PROJECT_NOT_FOUND",
                       name + " was archived (labshare-archive moved it to a projects-<year>.jsonl file); "
                       "its id stays taken");
    }
    return MakeError(absl::StatusCode::kNotFound, "PROJECT_NOT_FOUND", name + " does not exist");
  }
  v1::Project project;
  if (!project.ParseFromString((*doc).data)) {
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored project is unreadable");
  }
  if (version != nullptr) *version = doc->version;
  return project;
}

absl::StatusOr<v1::Project> BookingManager::CreateProject(const Principal& p,
                                                          const v1::CreateProjectRequest& r) {
  std::string id = r.project_id();
  if (id.empty()) {
    id = labshare::inventory::NewId("prj");
  } else {
    LS_RETURN_IF_ERROR(CheckIdPattern("project_id", id));
  }
  const std::string idem = r.request_id().empty() ? "" : keys::ProjectIdempotency("CreateProject", r.request_id());
  const std::string fingerprint = RequestFingerprint("CreateProject", r, ActorName(p));
  LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
  if (seen) {
    v1::Project replay;
    replay.ParseFromString(*seen);
    return replay;
  }
  v1::Project project = r.project();
  LS_RETURN_IF_ERROR(CompleteProject(project));
  const absl::Time now = clock_->Now();
  project.set_name("projects/" + id);
  *project.mutable_create_time() = ToProto(now);
  *project.mutable_update_time() = ToProto(now);
  project.set_etag("1");
  project.set_state(ProjectState(project, now));
  // The id is taken when its document or its reservation exists: a project
  // created before reservations has only its document, an archived one only
  // its reservation. The first step claims the reservation for this request
  // (or answers its replay), so that only one of concurrent creates of an id
  // writes budget counters: a refused create leaves the winner's alone. The
  // same request_id resumes after a crash past the claim.
  const absl::Status exists =
      MakeError(absl::StatusCode::kAlreadyExists, "PROJECT_EXISTS",
                project.name() + " is taken: a project has or had this id (an archived project keeps it); "
                "choose another project_id");
  const std::string owner = idem.empty() ? labshare::inventory::NewId("claim") : idem;
  LS_ASSIGN_OR_RETURN(auto claim, store_->ClaimProjectId(idem, fingerprint, id, owner));
  switch (claim.kind) {
    case BookingStore::ProjectClaim::Kind::kClaimed: break;
    case BookingStore::ProjectClaim::Kind::kReplayed: {
      v1::Project replay;
      replay.ParseFromString(claim.response);
      return replay;
    }
    case BookingStore::ProjectClaim::Kind::kRequestReused: return RequestIdReused();
    case BookingStore::ProjectClaim::Kind::kTaken:
      if (!claim.claim_only) return exists;
      return MakeError(absl::StatusCode::kAlreadyExists, "PROJECT_EXISTS",
                       project.name() + " is taken: another request is creating a project with this id, or a "
                       "create of it failed (only that create's request_id can finish it); choose another "
                       "project_id");
  }
  // Budgets before the commit: a crash between leaves counters of a project
  // that does not exist, which no booking can reach, and a claim only this
  // request_id can resume. Written whatever their stamp: the claim makes
  // this request the id's only writer, and a resumed claim (possibly with
  // another body, after the record's window) replaces the budgets of its
  // crashed attempt, stamped 1 as well.
  LS_RETURN_IF_ERROR(SetProjectBudgets(project, {}, 1, /*overwrite=*/true));
  // Answered as GetProject answers it: a new project's budgets are neither
  // used nor committed (explicit zeros; the use lives in the counters, not
  // in the document).
  const v1::Project stored = project;
  for (auto& b : *project.mutable_instrument_budgets()) {
    *b.mutable_used() = ToProto(absl::ZeroDuration());
    *b.mutable_committed() = ToProto(absl::ZeroDuration());
  }
  v1::BookingEvent event = Event(p, r.request_id(), now);  // its create_time
  *event.mutable_project_created()->mutable_project() = project;
  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = SerializeDeterministic(project);
  // The new document and the id's reservation, claimed above (version 1),
  // in one step with the event; otherwise nothing is written (kConflict).
  m.writes.push_back({keys::Project(id), stored.SerializeAsString(), 0});
  m.writes.push_back({keys::ProjectIdReservation(id), project.name(), 1});
  m.index_ops.push_back({keys::Projects(), id});
  m.outbox_key = keys::ProjectOutbox();
  m.event_type = v1::BookingEvent::descriptor()->full_name();
  m.event_payload = event.SerializeAsString();
  return CommitProject(m, project, exists);
}

absl::StatusOr<v1::Project> BookingManager::CommitProject(const Mutation& m, const v1::Project& project,
                                                          absl::Status on_conflict) {
  LS_ASSIGN_OR_RETURN(CommitOutcome outcome, store_->docs().Commit(m));
  switch (outcome.kind) {
    case CommitOutcome::Kind::kApplied: return project;
    case CommitOutcome::Kind::kReplayed: {
      v1::Project replay;
      replay.ParseFromString(outcome.response);
      return replay;
    }
    case CommitOutcome::Kind::kRequestReused: return RequestIdReused();
    case CommitOutcome::Kind::kConflict: break;
  }
  return on_conflict;
}

bool BookingManager::MaySeeProject(const Principal& p, const v1::Project& project) {
  // GetProject's scope in BookingPolicy(): participants' users and billing
  // admins; staff of a budgeted instrument's owner.
  ScopeFacts facts;
  for (const auto& part : project.participants()) facts.parties.push_back(part.organization());
  for (const auto& b : project.instrument_budgets()) facts.owners.push_back(b.instrument_owner());
  return CheckScope("GetProject", p, facts).ok();
}

absl::StatusOr<v1::Project> BookingManager::GetProject(const Principal& p, const v1::GetProjectRequest& r) {
  LS_ASSIGN_OR_RETURN(v1::Project project, LoadProject(r.name(), nullptr, "name"));
  if (!MaySeeProject(p, project)) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                     "only participants, the budgeted instruments' staff and administrators see a project");
  }
  LS_RETURN_IF_ERROR(FillProjectUse(project));
  return project;
}

absl::StatusOr<v1::ListProjectsResponse> BookingManager::ListProjects(const Principal& p,
                                                                      const v1::ListProjectsRequest& r) {
  // A participant filter narrows what the caller may see (scoped as
  // GetProject): a partner organisation is a useful filter for a member's
  // own projects, so it is never refused for being another organisation.
  LS_RETURN_IF_ERROR(CheckPageSize(r.page_size()));
  if (!r.participant().empty()) {
    LS_RETURN_IF_ERROR(ParseName(r.participant(), "organizations", "participant").status());
  }
  if (!r.instrument().empty()) LS_RETURN_IF_ERROR(ParseName(r.instrument(), "instruments", "instrument").status());
  for (int i = 0; i < r.states_size(); ++i) {  // an entry is named by its index
    const int s = r.states(i);
    if (s == v1::Project::STATE_UNSPECIFIED || !v1::Project::State_IsValid(s)) {
      return InvalidField(absl::StrCat("states[", i, "]"), "not a project state");
    }
  }
  if (r.has_time_range()) LS_RETURN_IF_ERROR(CheckInterval(r.time_range(), "time_range"));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  v1::ListProjectsResponse resp;
  std::string after = page.after;
  bool more = true;
  while (more && resp.projects_size() < page.page_size) {
    LS_ASSIGN_OR_RETURN(auto ids, store_->docs().IndexRange(keys::Projects(), after, 200));
    std::vector<std::string> doc_keys;
    for (const auto& id : ids) doc_keys.push_back(keys::Project(id));
    LS_ASSIGN_OR_RETURN(auto docs, store_->docs().GetMany(doc_keys));
    size_t i = 0;
    for (; i < ids.size() && resp.projects_size() < page.page_size; ++i) {
      after = ids[i];
      v1::Project project;
      if (!docs[i] || !project.ParseFromString(docs[i]->data) || !MaySeeProject(p, project)) continue;
      project.set_state(ProjectState(project));
      bool keep = r.participant().empty();
      for (const auto& part : project.participants()) keep |= part.organization() == r.participant();
      bool has_instrument = r.instrument().empty();
      for (const auto& b : project.instrument_budgets()) has_instrument |= b.instrument() == r.instrument();
      keep &= has_instrument;
      if (!r.states().empty()) {
        keep &= std::find(r.states().begin(), r.states().end(), project.state()) != r.states().end();
      }
      if (r.has_time_range()) {
        keep &= FromProto(project.period().start_time()) < FromProto(r.time_range().end_time()) &&
                FromProto(r.time_range().start_time()) < FromProto(project.period().end_time());
      }
      if (!keep) continue;
      LS_RETURN_IF_ERROR(FillProjectUse(project));
      *resp.add_projects() = std::move(project);
    }
    more = i < ids.size() || ids.size() == 200;
  }
  if (more && !after.empty()) resp.set_next_page_token(page_tokens_.Make(r, p, after));
  return resp;
}

absl::StatusOr<v1::Project> BookingManager::UpdateProject(const Principal& p,
                                                          const v1::UpdateProjectRequest& r) {
  // A lost compare-and-set reads the project again: with an etag the change
  // that won makes it ETAG_MISMATCH, without one the update applies to what
  // is stored now (a retry of the same request replays).
  // Another update's fences (held for the few milliseconds of its checks
  // and commit) are waited for, with backoff, for about two seconds: then
  // this update reads the project again, as after a lost compare-and-set.
  int waits = 0;
  for (int attempt = 1;; ++attempt) {
    bool fenced_out = false;
    absl::StatusOr<v1::Project> out = UpdateProjectOnce(p, r, &fenced_out);
    if (fenced_out && waits < kFenceWaits) {
      thread_local absl::BitGen gen;
      const int64_t cap_us = std::min<int64_t>(int64_t{1000} << std::min(waits, 6), 50000);
      absl::SleepFor(absl::Microseconds(absl::Uniform<int64_t>(gen, cap_us / 2, cap_us)));
      ++waits;
      --attempt;  // not a lost compare-and-set
      continue;
    }
    if (out.ok() || ErrorReason(out.status()) != "CONCURRENT_MODIFICATION" || attempt == 5) return out;
  }
}

absl::StatusOr<v1::Project> BookingManager::UpdateProjectOnce(const Principal& p, const v1::UpdateProjectRequest& r,
                                                              bool* fenced_out) {
  static const std::set<std::string> kPaths = {"title", "description", "external_reference",
                                               "participants", "cost_share_template", "period",
                                               "instrument_budgets"};
  if (r.update_mask().paths().empty()) {
    return InvalidField("update_mask", "name the fields to update", "INVALID_UPDATE_MASK");
  }
  for (const auto& path : r.update_mask().paths()) {
    if (!kPaths.count(path)) {
      return InvalidField("update_mask", "'" + path + "' cannot be updated", "INVALID_UPDATE_MASK");
    }
  }
  const std::string idem = r.request_id().empty() ? "" : keys::ProjectIdempotency("UpdateProject", r.request_id());
  const std::string fingerprint = RequestFingerprint("UpdateProject", r, ActorName(p));
  LS_ASSIGN_OR_RETURN(auto seen, store_->docs().FindReplay(idem, fingerprint));
  if (seen) {
    v1::Project replay;
    replay.ParseFromString(*seen);
    // A crash after the commit may have left the counters behind: written
    // again at the replayed version (a later version's stay), unless the
    // project was archived since (its counters went with it). An
    // instrument the update dropped is not known here (the replay holds
    // the new document only): its counter keeps its budget, which no
    // booking reaches (the document no longer budgets it).
    auto still = store_->docs().Get(keys::Project(IdOf(replay.name())));
    if (!still.ok()) return still.status();
    int64_t at = 0;
    if (*still && absl::SimpleAtoi(replay.etag(), &at)) LS_RETURN_IF_ERROR(SetProjectBudgets(replay, {}, at));
    return replay;
  }
  int64_t version = 0;
  LS_ASSIGN_OR_RETURN(v1::Project current, LoadProject(r.project().name(), &version, "project.name"));
  if (!r.project().etag().empty() && r.project().etag() != std::to_string(version)) {
    return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH", "the project changed; read it again");
  }
  v1::Project project = current;
  google::protobuf::util::FieldMaskUtil::MergeOptions options;
  options.set_replace_repeated_fields(true);
  options.set_replace_message_fields(true);
  google::protobuf::util::FieldMaskUtil::MergeMessageTo(r.project(), r.update_mask(), options, &project);
  // Stored participants of a template project carry the shares the template
  // computed: unless the caller sends participants, a template computes them
  // again (a mask of title alone, or a switch to another template).
  const bool sent_participants =
      std::find(r.update_mask().paths().begin(), r.update_mask().paths().end(), "participants") !=
      r.update_mask().paths().end();
  if (!sent_participants && project.cost_share_template() != v1::Project::CUSTOM &&
      project.cost_share_template() != v1::Project::COST_SHARE_TEMPLATE_UNSPECIFIED) {
    for (auto& participant : *project.mutable_participants()) participant.set_share_bps(0);
  }
  // Inventory is asked again only about what the mask changes: the budgeted
  // instruments (JOINT_RESEARCH still offered) with instrument_budgets, the
  // participant organisations with participants. A title change on a
  // project whose instrument no longer offers the mode still succeeds.
  const auto& paths = r.update_mask().paths();
  const bool sent_budgets = std::find(paths.begin(), paths.end(), "instrument_budgets") != paths.end();
  LS_RETURN_IF_ERROR(CompleteProject(project, sent_budgets, sent_participants));
  // Bookings of the project are held off while the update checks and
  // commits: a fence on its budget of every instrument it budgets or will
  // budget (in order, so that two updates meet on the first), which a
  // create step meets (CounterCharge::project_version). The checks below
  // therefore see every booking that will ever have been checked against
  // the document they replace. The fences are lifted with the budgets of
  // the version committed, or, when the update fails, of the document as
  // it is then; an updater that dies leaves them to lapse.
  std::set<std::string> instrument_set;
  for (const auto& b : current.instrument_budgets()) instrument_set.insert(IdOf(b.instrument()));
  for (const auto& b : project.instrument_budgets()) instrument_set.insert(IdOf(b.instrument()));
  const std::vector<std::string> fenced(instrument_set.begin(), instrument_set.end());
  const std::string id = IdOf(project.name());
  const int64_t owner = NewFenceOwner();
  LS_ASSIGN_OR_RETURN(const bool fenced_all, FenceProject(id, fenced, owner));
  if (!fenced_all) {
    *fenced_out = true;
    return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                     "another update of " + current.name() + " is under way; retry with the same request_id");
  }
  absl::StatusOr<v1::Project> out = UpdateProjectFenced(p, r, current, version, std::move(project));
  if (!out.ok()) {
    // The fences go with the budgets of the document as it is now. When
    // that cannot be read, the commit may have happened all the same (its
    // answer lost): the fences are left to lapse, since lifting them
    // without the new version would let a booking checked against the old
    // document through.
    int64_t now_version = 0;
    absl::StatusOr<v1::Project> now = LoadProject(current.name(), &now_version, "project.name");
    const absl::Status lifted =
        now.ok() || absl::IsNotFound(now.status())
            ? LiftProjectFences(id, fenced, owner, now.ok() ? *now : v1::Project(), now.ok() ? now_version : 0)
            : now.status();
    if (!lifted.ok()) {
      LogWarning("project fences left to lapse", {{"project", current.name()}, {"error", lifted.ToString()}});
    }
    return out;
  }
  int64_t at = 0;
  if (!absl::SimpleAtoi(out->etag(), &at) || at <= 0) {
    LogWarning("project fences left to lapse", {{"project", current.name()}, {"error", "etag " + out->etag()}});
    return out;
  }
  LS_RETURN_IF_ERROR(LiftProjectFences(id, fenced, owner, *out, at));
  return out;
}

absl::StatusOr<bool> BookingManager::FenceProject(const std::string& project_id,
                                                  const std::vector<std::string>& instruments, int64_t owner) {
  for (size_t i = 0; i < instruments.size(); ++i) {
    absl::StatusOr<bool> fenced = store_->FenceBudget(project_id, instruments[i], owner, kProjectFenceTtl);
    if (!fenced.ok() || !*fenced) {
      // The fences set so far go (no budget written); when that fails too
      // they lapse.
      const std::vector<std::string> set(instruments.begin(), instruments.begin() + static_cast<std::ptrdiff_t>(i));
      const absl::Status lifted = LiftProjectFences(project_id, set, owner, v1::Project(), 0);
      if (!lifted.ok()) {
        LogWarning("project fences left to lapse", {{"project", project_id}, {"error", lifted.ToString()}});
      }
      if (!fenced.ok()) return fenced.status();
      return false;
    }
  }
  return true;
}

absl::Status BookingManager::LiftProjectFences(const std::string& project_id,
                                               const std::vector<std::string>& instruments, int64_t owner,
                                               const v1::Project& project, int64_t version) const {
  std::map<std::string, int64_t> budgets;
  for (const auto& b : project.instrument_budgets()) {
    budgets[IdOf(b.instrument())] = absl::ToInt64Milliseconds(FromProto(b.budget()));
  }
  for (const auto& instrument : instruments) {
    const auto it = budgets.find(instrument);
    LS_RETURN_IF_ERROR(store_->LiftBudgetFence(project_id, instrument, owner, it == budgets.end() ? 0 : it->second,
                                               version));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Project> BookingManager::UpdateProjectFenced(const Principal& p,
                                                                const v1::UpdateProjectRequest& r,
                                                                const v1::Project& current, int64_t version,
                                                                v1::Project project) {
  const auto& paths = r.update_mask().paths();
  const bool sent_participants = std::find(paths.begin(), paths.end(), "participants") != paths.end();
  const std::string idem = r.request_id().empty() ? "" : keys::ProjectIdempotency("UpdateProject", r.request_id());
  const std::string fingerprint = RequestFingerprint("UpdateProject", r, ActorName(p));
  // Holding bookings keep their payer a participant and the period around them.
  if (std::find(paths.begin(), paths.end(), "participants") != paths.end() ||
      std::find(paths.begin(), paths.end(), "period") != paths.end()) {
    LS_RETURN_IF_ERROR(CheckHoldingBookings(*store_, current, project));
  }
  // A budget never drops below what is used and committed; an instrument with
  // holding bookings stays (one with used hours only may go: its use is
  // history).
  const std::string id = IdOf(project.name());
  std::map<std::string, std::optional<int64_t>> budgets;  // nullopt: removed
  for (const auto& b : project.instrument_budgets()) {
    budgets[IdOf(b.instrument())] = absl::ToInt64Milliseconds(FromProto(b.budget()));
  }
  for (const auto& b : current.instrument_budgets()) budgets.emplace(IdOf(b.instrument()), std::nullopt);
  std::map<std::string, std::pair<int64_t, int64_t>> use_of;  // used, committed
  for (const auto& [instrument, budget_ms] : budgets) {
    LS_ASSIGN_OR_RETURN(auto use, store_->GetBudget(id, instrument));
    use_of[instrument] = {use.used_ms, use.committed_ms};
    const int64_t held = budget_ms ? use.used_ms + use.committed_ms : use.committed_ms;
    if (budget_ms.value_or(0) < held) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "BUDGET_BELOW_COMMITTED",
                       budget_ms ? absl::StrCat("instruments/", instrument, " has ",
                                                absl::FormatDuration(absl::Milliseconds(held)), " used or committed")
                                 : absl::StrCat("instruments/", instrument, " has holding bookings (",
                                                absl::FormatDuration(absl::Milliseconds(held)),
                                                " committed); it stays in the project"));
    }
  }
  // The answer (its event and its replay too) shows the use, as GetProject.
  for (auto& b : *project.mutable_instrument_budgets()) {
    const auto& [used_ms, committed_ms] = use_of[IdOf(b.instrument())];
    *b.mutable_used() = ToProto(absl::Milliseconds(used_ms));
    *b.mutable_committed() = ToProto(absl::Milliseconds(committed_ms));
  }
  // One clock reading: update_time, the state it is in, and the event's time.
  const absl::Time now = clock_->Now();
  *project.mutable_update_time() = ToProto(now);
  project.set_etag(std::to_string(version + 1));
  project.set_state(ProjectState(project, now));
  v1::BookingEvent event = Event(p, r.request_id(), now);
  auto* updated = event.mutable_project_updated();
  *updated->mutable_project() = project;
  *updated->mutable_update_mask() = r.update_mask();
  // Set when the shares may have changed (booking_events.proto).
  if (sent_participants || std::find(paths.begin(), paths.end(), "cost_share_template") != paths.end()) {
    *updated->mutable_previous_participants() = current.participants();
  }
  Mutation m;
  m.idempotency_key = idem;
  m.fingerprint = fingerprint;
  m.response = SerializeDeterministic(project);
  v1::Project stored = project;  // the use lives in the counters, not in the document
  for (auto& b : *stored.mutable_instrument_budgets()) {
    b.clear_used();
    b.clear_committed();
  }
  m.writes.push_back({keys::Project(id), stored.SerializeAsString(), version});
  m.outbox_key = keys::ProjectOutbox();
  m.event_type = v1::BookingEvent::descriptor()->full_name();
  m.event_payload = event.SerializeAsString();
  // The counters follow the committed document, at its version, as the
  // fences are lifted (UpdateProjectOnce): a conflicted update writes none,
  // and a late write of an older version never overwrites a newer budget.
  // (Until they are written, bookings see the previous budget.)
  if (project_interleave_) project_interleave_("update:" + project.name());
  return CommitProject(m, project, MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                                             "the project changed concurrently; read it again and retry"));
}

absl::Status BookingManager::SetProjectBudgets(const v1::Project& project, const std::vector<std::string>& dropped,
                                               int64_t version, bool overwrite) const {
  const std::string id = IdOf(project.name());
  std::map<std::string, int64_t> budgets;
  for (const auto& b : project.instrument_budgets()) {
    budgets[IdOf(b.instrument())] = absl::ToInt64Milliseconds(FromProto(b.budget()));
  }
  for (const auto& instrument : dropped) budgets.emplace(instrument, 0);  // no longer budgeted
  for (const auto& [instrument, budget_ms] : budgets) {
    LS_RETURN_IF_ERROR(store_->SetBudget(id, instrument, budget_ms, version, overwrite));
  }
  return absl::OkStatus();
}

}  // namespace labshare::booking
