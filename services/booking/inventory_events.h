// Booking's reaction to inventory events: a maintenance window declared or
// cancelled is applied to the calendar (BookingManager::ApplyMaintenanceWindow,
// once per event through the consumer group), an instrument's change is
// recorded (BookingManager::RecordInstrumentChange: the sweep's view of its
// past states) and its operator change re-files its listings
// (BookingManager::FollowInstrumentOperator),
// and every replica drops from
// its inventory cache what an event changed (InventoryCacheWatcher).
#ifndef LABSHARE_SERVICES_BOOKING_INVENTORY_EVENTS_H_
#define LABSHARE_SERVICES_BOOKING_INVENTORY_EVENTS_H_

#include "common/events.h"
#include "services/booking/booking_manager.h"
#include "services/booking/inventory_client.h"

namespace labshare::booking {

// The consumer group booking reads "{inventory}:outbox" with.
constexpr char kInventoryEventsGroup[] = "booking";

// Idempotent: applying a window twice changes nothing the second time; an
// InstrumentChanged re-files the instrument's listing entries under its
// operator (BookingManager::FollowInstrumentOperator), the event
// acknowledged only once that is complete (an error leaves it pending).
EventConsumer::Handler InventoryEventHandler(BookingManager* manager, RefileOptions refile = {});

// Follows "{inventory}:outbox" for one replica's cache: not as a consumer
// group (each event goes to one group member; every replica must see every
// change), but from where the stream ended when the watcher started.
// Not thread-safe: one thread polls.
class InventoryCacheWatcher {
 public:
  // redis and client must outlive the watcher.
  InventoryCacheWatcher(RedisPool* redis, InventoryClient* client) : redis_(redis), client_(client) {}
  // The first call finds the end of the stream and empties the cache (what
  // was cached before may predate that end); later calls read what was
  // published since, waiting up to `wait` for something new, and invalidate.
  // Returns how many events were read.
  absl::StatusOr<int> Poll(absl::Duration wait);

 private:
  RedisPool* redis_;
  InventoryClient* client_;
  std::string last_id_;  // empty until positioned
};

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_INVENTORY_EVENTS_H_
