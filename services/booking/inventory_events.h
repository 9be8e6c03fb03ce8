// Booking's reaction to inventory events: a maintenance window declared or
// cancelled is applied to the calendar (BookingManager::ApplyMaintenanceWindow).
// Other inventory events need nothing yet: the inventory cache expires.
#ifndef LABSHARE_SERVICES_BOOKING_INVENTORY_EVENTS_H_
#define LABSHARE_SERVICES_BOOKING_INVENTORY_EVENTS_H_

#include "common/events.h"
#include "services/booking/booking_manager.h"

namespace labshare::booking {

// The consumer group booking reads "{inventory}:outbox" with.
constexpr char kInventoryEventsGroup[] = "booking";

// Idempotent: applying a window twice changes nothing the second time.
EventConsumer::Handler InventoryEventHandler(BookingManager* manager);

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_INVENTORY_EVENTS_H_
