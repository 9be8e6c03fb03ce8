#include "services/booking/inventory_events.h"

#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::booking {

EventConsumer::Handler InventoryEventHandler(BookingManager* manager) {
  return [manager](const StreamEvent& e) -> absl::Status {
    labshare::inventory::v1::InventoryEvent event;
    if (e.type != labshare::inventory::v1::InventoryEvent::descriptor()->full_name() ||
        !event.ParseFromString(e.payload)) {
      return absl::OkStatus();  // not ours to understand: acknowledge and move on
    }
    if (!event.has_maintenance_window_changed()) return absl::OkStatus();
    Principal service;
    service.user_id = "booking";
    service.roles = {Role::kService};
    v1::ApplyMaintenanceWindowRequest r;
    r.set_maintenance_window(event.maintenance_window_changed().maintenance_window().name());
    return manager->ApplyMaintenanceWindow(service, r).status();
  };
}

}  // namespace labshare::booking
