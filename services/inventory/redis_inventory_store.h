// Where the inventory lives in Redis, and typed access to it.
//
// Every key carries the hash tag {inventory}: the catalogue is small and
// read-mostly, and one slot lets any mutation (documents, indexes, history,
// idempotency record and outbox event) commit in one Lua step.
//
//   {inventory}:org:<id>                 Organization     index {inventory}:orgs
//   {inventory}:org:<id>:membership      list of MembershipChange
//   {inventory}:user:<id>                User             index {inventory}:users
//   {inventory}:users:by_subject         "<external_subject>\n<id>" (sign-in lookup)
//   {inventory}:users:by_email           "<lowercased email>\n<id>"  (sign-in lookup)
//   {inventory}:refresh:<sha256 hex>     refresh token record   (identity_store.h)
//   {inventory}:refresh_family:<id>      live sign-in session   (identity_store.h)
//   {inventory}:refresh_used:<id>        a session's used tokens (identity_store.h)
//   {inventory}:facility:<id>            Facility         index {inventory}:facilities
//   {inventory}:facility:<id>:instruments  ids of the facility's instruments (sorted set;
//                                        CreateInstrument adds, BackfillFacilityInstruments
//                                        fills it for instruments registered before it)
//   {inventory}:instr:<id>               Instrument       index {inventory}:instruments
//   {inventory}:rate:<instr>:<id>        Rate             index {inventory}:instr:<id>:rates
//   {inventory}:qual:<instr>:<user>      Qualification    indexes ...:instr:<id>:quals, ...:user:<id>:quals
//   {inventory}:mw:<instr>:<id>          MaintenanceWindow index {inventory}:instr:<id>:windows
//   {inventory}:idem:<method>:<request id>  idempotency record
//   {inventory}:outbox                   event stream (InventoryEvent)
#ifndef LABSHARE_SERVICES_INVENTORY_REDIS_INVENTORY_STORE_H_
#define LABSHARE_SERVICES_INVENTORY_REDIS_INVENTORY_STORE_H_

#include <optional>
#include <string>
#include <vector>

#include "common/doc_store.h"
#include "common/error.h"

namespace labshare::inventory {

namespace keys {
std::string Org(absl::string_view id);
std::string Orgs();
std::string Membership(absl::string_view org_id);
std::string User(absl::string_view id);
std::string Users();
// Sign-in lookup indexes (members "<value>\n<user id>", all scores 0).
std::string UsersBySubject();
std::string UsersByEmail();
std::string LookupMember(absl::string_view value, absl::string_view user_id);
std::string Facility(absl::string_view id);
std::string Facilities();
std::string FacilityInstruments(absl::string_view facility_id);
std::string Instrument(absl::string_view id);
std::string Instruments();
std::string Rate(absl::string_view instrument_id, absl::string_view rate_id);
std::string Rates(absl::string_view instrument_id);
std::string Qualification(absl::string_view instrument_id, absl::string_view user_id);
std::string InstrumentQualifications(absl::string_view instrument_id);
std::string UserQualifications(absl::string_view user_id);
std::string Window(absl::string_view instrument_id, absl::string_view window_id);
std::string Windows(absl::string_view instrument_id);
std::string Idempotency(absl::string_view method, absl::string_view request_id);
std::string Outbox();
}  // namespace keys

template <typename T>
struct Loaded {
  T value;
  int64_t version = 0;
};

// Typed reads over DocStore. Thread-safe.
class InventoryStore {
 public:
  explicit InventoryStore(RedisPool* pool) : docs_(pool) {}

  template <typename T>
  absl::StatusOr<std::optional<Loaded<T>>> Find(const std::string& key) const {
    LS_ASSIGN_OR_RETURN(auto doc, docs_.Get(key));
    if (!doc) return std::optional<Loaded<T>>();
    return Decode<T>(*doc);
  }

  // NOT_FOUND with `reason` when absent.
  template <typename T>
  absl::StatusOr<Loaded<T>> Load(const std::string& key, absl::string_view reason,
                                 absl::string_view what) const {
    LS_ASSIGN_OR_RETURN(auto found, Find<T>(key));
    if (!found) {
      return MakeError(absl::StatusCode::kNotFound, reason, std::string(what) + " does not exist");
    }
    return *std::move(found);
  }

  // Absent documents are skipped.
  template <typename T>
  absl::StatusOr<std::vector<Loaded<T>>> LoadMany(const std::vector<std::string>& keys) const {
    LS_ASSIGN_OR_RETURN(auto docs, docs_.GetMany(keys));
    std::vector<Loaded<T>> out;
    for (const auto& d : docs) {
      if (!d) continue;
      LS_ASSIGN_OR_RETURN(auto loaded, Decode<T>(*d));
      out.push_back(std::move(loaded));
    }
    return out;
  }

  const DocStore& docs() const { return docs_; }

 private:
  template <typename T>
  static absl::StatusOr<Loaded<T>> Decode(const StoredDoc& doc) {
    Loaded<T> out;
    if (!out.value.ParseFromString(doc.data)) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "a stored record is unreadable");
    }
    out.version = doc.version;
    return out;
  }

  DocStore docs_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_REDIS_INVENTORY_STORE_H_
