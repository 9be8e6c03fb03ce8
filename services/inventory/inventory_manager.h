// The inventory's use cases. Takes and returns contract messages, returns
// absl::Status with ErrorInfo reasons; knows nothing of gRPC.
//
// Every mutation: replay check by request_id, then read, check scope,
// validate, and commit documents + indexes + event + idempotency record in
// one atomic step (compare-and-set on every document read: a document
// written carries its expected version, one read for a decision a guard;
// only documents read for their existence alone, which nothing deletes,
// go unguarded). A rejected request writes nothing. Thread-safe.
#ifndef LABSHARE_SERVICES_INVENTORY_INVENTORY_MANAGER_H_
#define LABSHARE_SERVICES_INVENTORY_INVENTORY_MANAGER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/page_token.h"
#include "common/token.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/inventory/redis_inventory_store.h"

namespace labshare::inventory {

class InventoryManager {
 public:
  // store and clock must outlive the manager. page_tokens: see page_token.h
  // (main derives it from the token key; tests pass a fixed key).
  InventoryManager(InventoryStore* store, const Clock* clock, PageTokenCodec page_tokens)
      : store_(store), clock_(clock), page_tokens_(std::move(page_tokens)) {}

  // Organisations.
  absl::StatusOr<v1::Organization> CreateOrganization(const Principal& p, const v1::CreateOrganizationRequest& r);
  absl::StatusOr<v1::Organization> GetOrganization(const Principal& p, const v1::GetOrganizationRequest& r);
  absl::StatusOr<v1::ListOrganizationsResponse> ListOrganizations(const Principal& p, const v1::ListOrganizationsRequest& r);
  absl::StatusOr<v1::Organization> UpdateOrganization(const Principal& p, const v1::UpdateOrganizationRequest& r);
  absl::StatusOr<v1::Organization> ChangeMembership(const Principal& p, const v1::ChangeMembershipRequest& r);
  absl::StatusOr<v1::ListMembershipChangesResponse> ListMembershipChanges(const Principal& p, const v1::ListMembershipChangesRequest& r);

  // Users.
  absl::StatusOr<v1::User> CreateUser(const Principal& p, const v1::CreateUserRequest& r);
  absl::StatusOr<v1::User> GetUser(const Principal& p, const v1::GetUserRequest& r);
  absl::StatusOr<v1::ListUsersResponse> ListUsers(const Principal& p, const v1::ListUsersRequest& r);
  absl::StatusOr<v1::User> UpdateUser(const Principal& p, const v1::UpdateUserRequest& r);

  // Facilities.
  absl::StatusOr<v1::Facility> CreateFacility(const Principal& p, const v1::CreateFacilityRequest& r);
  absl::StatusOr<v1::Facility> GetFacility(const Principal& p, const v1::GetFacilityRequest& r);
  absl::StatusOr<v1::ListFacilitiesResponse> ListFacilities(const Principal& p, const v1::ListFacilitiesRequest& r);
  absl::StatusOr<v1::Facility> UpdateFacility(const Principal& p, const v1::UpdateFacilityRequest& r);

  // Instruments.
  absl::StatusOr<v1::Instrument> CreateInstrument(const Principal& p, const v1::CreateInstrumentRequest& r);
  absl::StatusOr<v1::Instrument> GetInstrument(const Principal& p, const v1::GetInstrumentRequest& r);
  absl::StatusOr<v1::ListInstrumentsResponse> ListInstruments(const Principal& p, const v1::ListInstrumentsRequest& r);
  absl::StatusOr<v1::Instrument> UpdateInstrument(const Principal& p, const v1::UpdateInstrumentRequest& r);
  absl::StatusOr<v1::Instrument> SetInstrumentState(const Principal& p, const v1::SetInstrumentStateRequest& r);

  // Rate cards.
  absl::StatusOr<v1::Rate> CreateRate(const Principal& p, const v1::CreateRateRequest& r);
  absl::StatusOr<v1::Rate> GetRate(const Principal& p, const v1::GetRateRequest& r);
  absl::StatusOr<v1::ListRatesResponse> ListRates(const Principal& p, const v1::ListRatesRequest& r);
  absl::StatusOr<v1::LookupRateResponse> LookupRate(const Principal& p, const v1::LookupRateRequest& r);

  // Qualifications.
  absl::StatusOr<v1::Qualification> GrantQualification(const Principal& p, const v1::GrantQualificationRequest& r);
  absl::StatusOr<v1::Qualification> RevokeQualification(const Principal& p, const v1::RevokeQualificationRequest& r);
  absl::StatusOr<v1::Qualification> GetQualification(const Principal& p, const v1::GetQualificationRequest& r);
  absl::StatusOr<v1::ListQualificationsResponse> ListQualifications(const Principal& p, const v1::ListQualificationsRequest& r);
  absl::StatusOr<v1::Qualification> RecordQualificationUse(const Principal& p, const v1::RecordQualificationUseRequest& r);

  // Maintenance windows.
  absl::StatusOr<v1::MaintenanceWindow> CreateMaintenanceWindow(const Principal& p, const v1::CreateMaintenanceWindowRequest& r);
  absl::StatusOr<v1::MaintenanceWindow> GetMaintenanceWindow(const Principal& p, const v1::GetMaintenanceWindowRequest& r);
  absl::StatusOr<v1::ListMaintenanceWindowsResponse> ListMaintenanceWindows(const Principal& p, const v1::ListMaintenanceWindowsRequest& r);
  absl::StatusOr<v1::MaintenanceWindow> CancelMaintenanceWindow(const Principal& p, const v1::CancelMaintenanceWindowRequest& r);

  // Access.
  absl::StatusOr<v1::CheckAccessResponse> CheckAccess(const Principal& p, const v1::CheckAccessRequest& r);

  // Start-up migration: puts every instrument into its facility's index
  // (keys::FacilityInstruments), which UpdateFacility reads to move a
  // facility's instruments to a new operator. Instruments registered before
  // the index existed are missing from it; adding is idempotent. Returns
  // how many instruments were examined.
  absl::StatusOr<int> BackfillFacilityInstruments();
  // Rewrites rate index members of the first format into RateSortKey's
  // (ListRates' order); returns how many moved. Idempotent.
  absl::StatusOr<int> MigrateRateIndexes();
  // Rewrites window index members of the earlier formats (whole seconds;
  // before 1970, seconds padded with "%020d", which sorted -10 before -100)
  // into WindowSortKey's (start to the nanosecond and in time order before
  // 1970, ListMaintenanceWindows' order); returns how many moved.
  // Idempotent.
  absl::StatusOr<int> MigrateWindowIndexes();

  // Tests only: runs `hook` (with the method's name) in every mutation
  // between its reads and its atomic step, so that a test can change what
  // was read in between. Set it before the calls it is for; not
  // synchronised with calls in flight.
  void SetBeforeCommitHookForTesting(std::function<void(absl::string_view method)> hook) {
    before_commit_for_testing_ = std::move(hook);
  }

 private:
  // What a mutation will write, decided from the state it read.
  template <typename Resp>
  struct Plan {
    Mutation mutation;  // documents, indexes, appends
    Resp response;
    v1::InventoryEvent event;  // payload set; header filled by Commit
    // Further events of the same step (headers filled by Commit too).
    std::vector<v1::InventoryEvent> more_events;
    // Returned instead of retrying when the first written document moved
    // (e.g. ALREADY_EXISTS on create, ETAG_MISMATCH when the caller named an
    // etag); any other conflict is read again.
    absl::Status on_conflict;
    // The request changes nothing: answer `response`, write no event.
    bool write_nothing = false;
    // The service clock's time the plan stamped its times with
    // (update_time, create_time, change_time): the events' event_time
    // (EventHeader: the time of the state change). Unset (InfinitePast):
    // Commit reads the clock.
    absl::Time now = absl::InfinitePast();
  };

  // An update whose merged resource equals the stored one changes nothing
  // (inventory_events.proto: such a call publishes no event).
  template <typename T>
  static bool Unchanged(const T& merged, const Loaded<T>& current);
  // The plan of such an update: nothing written (etag and update_time
  // stay), no event; the stored resource is the answer, kept under a
  // request_id like any other (guarded: a change meanwhile reads again).
  template <typename T>
  static Plan<T> AnswerStored(const std::string& key, Loaded<T> current);

  // Runs plan_fn, commits, retries on concurrent modification; replays a
  // request_id seen before.
  template <typename Resp>
  absl::StatusOr<Resp> Commit(const Principal& p, absl::string_view method,
                              const google::protobuf::Message& request,
                              const std::string& request_id,
                              const std::function<absl::StatusOr<Plan<Resp>>()>& plan_fn);

  // Moves every instrument of a facility to `operator_org` within `plan`
  // (the facility's own write comes first): a compare-and-set write and an
  // InstrumentChanged UPDATED event per instrument whose operator differs,
  // and a guard on the facility's instrument index, so an instrument
  // registered meanwhile makes the step read again.
  template <typename Resp>
  absl::Status MoveInstrumentsToOperator(const std::string& facility_id, const std::string& operator_org,
                                         absl::Time now, Plan<Resp>* plan);

  template <typename T, typename Resp>
  absl::StatusOr<Resp> ListFromIndex(const Principal& caller, const google::protobuf::Message& request,
                                     const std::string& index,
                                     const std::function<std::string(const std::string&)>& key_of,
                                     const std::function<bool(const T&)>& keep,
                                     const std::function<void(Resp&, T)>& add);

  InventoryStore* store_;
  const Clock* clock_;
  PageTokenCodec page_tokens_;
  std::function<void(absl::string_view method)> before_commit_for_testing_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_INVENTORY_MANAGER_H_
