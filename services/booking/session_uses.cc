#include "services/booking/session_uses.h"

#include "labshare/booking/v1/booking_events.pb.h"

namespace labshare::booking {

EventConsumer::Handler SessionUseHandler(BookingManager* manager) {
  return [manager](const StreamEvent& e) -> absl::Status {
    v1::BookingEvent event;
    if (e.type != v1::BookingEvent::descriptor()->full_name() || !event.ParseFromString(e.payload)) {
      return absl::OkStatus();  // not ours to understand: acknowledge and move on
    }
    return manager->DeliverSessionUse(event);
  };
}

ConsumerLoop::Poll SessionUsePoll(EventConsumer* consumer, BookingManager* manager) {
  return [consumer, handler = SessionUseHandler(manager)]() -> absl::StatusOr<int> {
    if (!consumer->group_ready()) {
      if (absl::Status group = consumer->EnsureGroup(); !group.ok()) return group;
    }
    absl::Status failed;
    absl::StatusOr<int> acked = consumer->PollOnce([&](const StreamEvent& e) {
      absl::Status s = handler(e);
      if (!s.ok() && failed.ok()) failed = s;
      return s;
    });
    if (!acked.ok()) return acked;
    if (!failed.ok()) {
      // Not the event store (UNAVAILABLE would pause every stream of the
      // loop as if Redis were down): this stream backs off.
      return absl::Status(failed.code() == absl::StatusCode::kUnavailable ? absl::StatusCode::kAborted : failed.code(),
                          "a qualification use is not delivered yet: " + failed.ToString());
    }
    return acked;
  };
}

}  // namespace labshare::booking
