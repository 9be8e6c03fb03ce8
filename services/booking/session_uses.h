// The durable delivery of session uses to inventory: every check-out of an
// ON_SITE booking renews the user's qualification (RecordQualificationUse).
// The use is derived from the BookingCheckedOut event that the step ending
// the session wrote with it (one atomic step: no check-out without its
// event), read from the partitions' outboxes "{bk:P}:outbox" by booking's
// own consumer group; an entry inventory could not take stays pending and
// is delivered again (BookingManager::DeliverSessionUse), with the same
// request_id as the call made right after the check-out, so a redelivery
// records nothing twice.
#ifndef LABSHARE_SERVICES_BOOKING_SESSION_USES_H_
#define LABSHARE_SERVICES_BOOKING_SESSION_USES_H_

#include "common/events.h"
#include "services/booking/booking_manager.h"

namespace labshare::booking {

// The consumer group booking reads its own "{bk:P}:outbox" with.
constexpr char kSessionUsesGroup[] = "booking-uses";

// Idempotent: the event's use through BookingManager::DeliverSessionUse;
// other events (and unreadable ones) are acknowledged untouched.
EventConsumer::Handler SessionUseHandler(BookingManager* manager);

// One ConsumerLoop poll of `consumer` (one partition's outbox, group
// kSessionUsesGroup): EnsureGroup, then PollOnce(SessionUseHandler). A use
// inventory did not take fails the poll with the handler's error, after
// the others are acknowledged, so that the loop waits (backoff) before it
// offers the pending entry again instead of calling inventory every round.
// consumer and manager must outlive the loop.
ConsumerLoop::Poll SessionUsePoll(EventConsumer* consumer, BookingManager* manager);

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_SESSION_USES_H_
