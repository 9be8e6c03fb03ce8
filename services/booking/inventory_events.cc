#include "services/booking/inventory_events.h"

#include "common/error.h"
#include "common/log.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::booking {

EventConsumer::Handler InventoryEventHandler(BookingManager* manager, RefileOptions refile) {
  return [manager, refile](const StreamEvent& e) -> absl::Status {
    labshare::inventory::v1::InventoryEvent event;
    if (e.type != labshare::inventory::v1::InventoryEvent::descriptor()->full_name()) {
      return absl::OkStatus();  // not ours to understand: acknowledge and move on
    }
    if (!event.ParseFromString(e.payload)) {
      // Can never be applied: acknowledged, and said (as usage and feeds do).
      LogWarning("booking: undecodable inventory event skipped",
                 {{"stream", "{inventory}:outbox"}, {"stream_id", e.stream_id}, {"type", e.type}});
      return absl::OkStatus();
    }
    if (event.has_instrument_changed()) {
      // First what changed when (the sweep judges a booking on its
      // instrument's state as check-in closed), then the listings.
      if (absl::Status recorded = manager->RecordInstrumentChange(event.instrument_changed()); !recorded.ok()) {
        return recorded;
      }
      return manager->FollowInstrumentOperator(event.instrument_changed().instrument(), refile);
    }
    if (!event.has_maintenance_window_changed()) return absl::OkStatus();
    Principal service;
    service.user_id = "booking";
    service.roles = {Role::kService};
    service.trace_id = event.header().trace_id();  // the cuts follow the window's request
    v1::ApplyMaintenanceWindowRequest r;
    r.set_maintenance_window(event.maintenance_window_changed().maintenance_window().name());
    // One application per inventory event: a redelivery (a crash before
    // the acknowledgement, two replicas claiming the entry) gets the first
    // answer instead of publishing another MaintenanceApplied.
    if (!event.header().event_id().empty()) r.set_request_id("inventory-event-" + event.header().event_id());
    // The events of the step name the inventory request that changed the
    // window (types.proto: "The request_id of the mutation that caused it").
    return manager->ApplyMaintenanceWindow(service, r, event.header().request_id()).status();
  };
}

namespace {
constexpr char kInventoryOutbox[] = "{inventory}:outbox";
}  // namespace

absl::StatusOr<int> InventoryCacheWatcher::Poll(absl::Duration wait) {
  if (last_id_.empty()) {
    LS_ASSIGN_OR_RETURN(RedisValue last, redis_->Command({"XREVRANGE", kInventoryOutbox, "+", "-", "COUNT", "1"}));
    if (last.type != RedisValue::Type::kArray) {
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected XREVRANGE reply");
    }
    last_id_ = last.elements.empty() || last.elements[0].elements.empty() ? "0-0" : last.elements[0].elements[0].str;
    client_->InvalidateAll();
    return 0;
  }
  std::vector<std::string> cmd = {"XREAD", "COUNT", "500"};
  const int64_t block_ms = absl::ToInt64Milliseconds(wait);
  if (block_ms > 0) {
    cmd.push_back("BLOCK");
    cmd.push_back(std::to_string(block_ms));
  }
  cmd.insert(cmd.end(), {"STREAMS", kInventoryOutbox, last_id_});
  LS_ASSIGN_OR_RETURN(RedisValue v, redis_->Command(cmd));
  if (v.is_nil()) return 0;  // nothing new within `wait`
  if (v.type != RedisValue::Type::kArray) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected XREAD reply");
  }
  int read = 0;
  for (const RedisValue& stream : v.elements) {  // [name, [[id, [field, value, ...]], ...]]
    if (stream.elements.size() != 2) continue;
    for (const RedisValue& entry : stream.elements[1].elements) {
      if (entry.elements.size() != 2) continue;
      last_id_ = entry.elements[0].str;
      ++read;
      labshare::inventory::v1::InventoryEvent event;  // an unreadable one empties the cache
      const auto& fields = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i].str == "payload" && !event.ParseFromString(fields[i + 1].str)) event.Clear();
      }
      client_->Invalidate(event);
    }
  }
  return read;
}

}  // namespace labshare::booking
