// Booking's view of inventory: gRPC reads with a cache, so a booking costs
// no inventory round trip when the catalogue is warm. Each replica follows
// inventory's outbox (InventoryCacheWatcher, inventory_events.h) and drops
// what an event changed (a suspended member, a revoked qualification) as
// soon as it is published; entries also expire after `ttl`, a bound for
// anything an event could not name.
#ifndef LABSHARE_SERVICES_BOOKING_INVENTORY_CLIENT_H_
#define LABSHARE_SERVICES_BOOKING_INVENTORY_CLIENT_H_

#include <memory>
#include <shared_mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::booking {

namespace inv = labshare::inventory::v1;

class InventoryClient {
 public:
  // clock must outlive the client. Thread-safe. The channel proves
  // booking's identity to inventory (its client certificate); calls carry
  // no bearer token.
  // Pages of instruments (Instruments) are kept for page_ttl (at most
  // ttl): a new instrument, which no event removes from a cached page,
  // shows in a search at most that late.
  InventoryClient(std::shared_ptr<grpc::Channel> channel, const Clock* clock,
                  absl::Duration ttl = absl::Seconds(5), absl::Duration page_ttl = absl::Seconds(5));

  // Forgets the cached objects an inventory event changed (all of them for
  // an event it does not know). Returns how many entries went.
  size_t Invalidate(const inv::InventoryEvent& event);
  void InvalidateAll();

  // Errors pass through from inventory (NOT_FOUND INSTRUMENT_NOT_FOUND, ...);
  // an unreachable inventory is UNAVAILABLE INVENTORY_UNAVAILABLE. The
  // shared objects are the cache's own, parsed once: the hot path reads
  // them without copying.
  template <typename T>
  using Shared = std::shared_ptr<const T>;
  absl::StatusOr<Shared<inv::Instrument>> Instrument(const std::string& name);
  absl::StatusOr<Shared<inv::Facility>> Facility(const std::string& name);
  absl::StatusOr<Shared<inv::User>> User(const std::string& name);
  absl::StatusOr<Shared<inv::Organization>> Organization(const std::string& name);
  // Null when the user was never qualified on the instrument.
  absl::StatusOr<Shared<inv::Qualification>> Qualification(const std::string& instrument,
                                                           const std::string& user);
  absl::StatusOr<Shared<inv::ListRatesResponse>> Rates(const std::string& instrument);
  absl::StatusOr<Shared<inv::ListMaintenanceWindowsResponse>> Windows(const std::string& instrument);

  // Copies, for code off the hot path.
  absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name);
  absl::StatusOr<inv::Facility> GetFacility(const std::string& name);
  absl::StatusOr<inv::User> GetUser(const std::string& name);
  absl::StatusOr<inv::Organization> GetOrganization(const std::string& name);
  // nullopt when the user was never qualified on the instrument.
  absl::StatusOr<std::optional<inv::Qualification>> FindQualification(const std::string& instrument,
                                                                      const std::string& user);
  absl::StatusOr<std::vector<inv::Rate>> ListRates(const std::string& instrument);
  absl::StatusOr<std::vector<inv::MaintenanceWindow>> ListMaintenanceWindows(
      const std::string& instrument);

  // Not cached: one page of instruments (category, facility, mode filters).
  absl::StatusOr<inv::ListInstrumentsResponse> ListInstruments(const inv::ListInstrumentsRequest& request);
  // The same page, cached per request (page token and size included) like
  // the objects above but for page_ttl; any instrument event forgets every
  // cached page. At
  // most kMaxCachedPages pages of kMaxCachedPageBytes in all (key and
  // page) are kept (beyond: all are forgotten); a request whose key is
  // over kMaxPageKeyBytes, or a page over a sixteenth of the bytes, is
  // answered but not kept.
  static constexpr size_t kMaxCachedPages = 1024;
  static constexpr size_t kMaxCachedPageBytes = size_t{32} << 20;
  static constexpr size_t kMaxPageKeyBytes = 1024;
  absl::StatusOr<Shared<inv::ListInstrumentsResponse>> Instruments(const inv::ListInstrumentsRequest& request);

  // While a CacheOnly lives on a thread, a lookup of that thread that would
  // call inventory (a miss, or any uncached method) does not: it fails at once (UNAVAILABLE
  // INVENTORY_UNAVAILABLE) and missed() turns true. Code that must not
  // block (a gRPC callback or pipeline thread) runs a read-only step under
  // one and, when something was missed, runs the step again where it may
  // block (BlockingExecutor). Scopes nest; each reports the misses made
  // while it lived.
  class CacheOnly {
   public:
    CacheOnly();
    ~CacheOnly();
    CacheOnly(const CacheOnly&) = delete;
    CacheOnly& operator=(const CacheOnly&) = delete;
    bool missed() const;

   private:
    CacheOnly* outer_;
    bool missed_ = false;
    friend class InventoryClient;
  };

  // Not cached: the window as it is now.
  absl::StatusOr<inv::MaintenanceWindow> GetMaintenanceWindow(const std::string& name);

  // Not cached: tells inventory the user used the instrument (at check-out):
  // a session from use_start (its check-in) to use_time (its end).
  absl::Status RecordQualificationUse(const std::string& instrument, const std::string& user,
                                      absl::Time use_start, absl::Time use_time, const std::string& request_id);

 private:
  // Returns the cached object for key, or calls fetch and caches its answer
  // (a null answer is cached too: "does not exist").
  using Any = std::shared_ptr<const google::protobuf::Message>;
  absl::StatusOr<Any> Cached(const std::string& key, const std::function<absl::StatusOr<Any>()>& fetch);
  std::unique_ptr<grpc::ClientContext> Context();
  // INVENTORY_UNAVAILABLE and a miss under a CacheOnly; else OK.
  static absl::Status MayCall();

  std::unique_ptr<inv::InventoryService::Stub> stub_;
  const Clock* clock_;
  const absl::Duration ttl_;
  const absl::Duration page_ttl_;
  // Read on every booking request by several threads at once: readers
  // share the lock, and a lookup is one hash probe.
  std::shared_mutex mu_;
  struct Entry {
    Any message;
    absl::Time fetched;
  };
  absl::flat_hash_map<std::string, Entry> cache_;  // guarded by mu_
  size_t pages_ = 0;  // guarded by mu_: cache_'s "Instruments?" entries
  size_t page_bytes_ = 0;  // guarded by mu_: their keys and pages
  void ForgetPagesLocked();  // mu_ held exclusively
  static size_t PageBytes(const std::string& key, const Any& page);
  uint64_t generation_ = 0;  // guarded by mu_: invalidations so far
};

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_INVENTORY_CLIENT_H_
