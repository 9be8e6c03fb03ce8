// The mail queue on Redis (keys "{notify}:mail:*", "{notify}:settings:*"),
// every change one Lua step (with its event on "{notify}:outbox" where it
// has one):
//   msg:<id>        hash: one mail to one person (rendered), its state
//                   QUEUED | DIGEST (waits for the user's digest) |
//                   IN_DIGEST | SENDING | SENT | DEAD
//   due             zset id -> when to try (wall clock, ms)
//   inflight        zset id -> when claimed (wall clock, ms)
//   dead            zset id -> when it died (wall clock, ms; the message's
//                   create_ms, dead_ms, replay_ms are domain clock)
//   dl:all, dl:o:<org>, dl:r:<reason>, dl:or:<org>|<reason>
//                   the dead letters' page indexes: lex-ordered members
//                   "<dead_ms, 13 digits>|<id>" (DeadLetterCursor)
//   dl:indexed      set once the dead letters written before the indexes
//                   are indexed (IndexDeadLetters)
//   digest:<user>   list of ids waiting for the user's digest
//   digests         zset user id -> when the digest is due (domain clock, ms)
//   sched           zset member -> when to fire (domain clock, ms)
//   schedev:<member> hash type/payload: the event that scheduled it
//   schedver:<member> the newest update_time (us) of the resource that
//                   changed the member (kept after removal; 30 days)
//   schedclaimed    zset member -> when claimed (wall clock, ms)
//   ev:<event id>   marker: the event's schedule changes were applied
//   unsubkey        the HMAC key of unsubscribe tokens (32 random bytes)
//   unsublegacy     when tokens without an expiry expire (domain ms)
//   req:<actor>:<request id> request fingerprint and first answer
//                   (idempotency of settings changes, unsubscribes and
//                   replays; request ids are the acting user's own: for an
//                   unsubscribe, the user of the token)
// A message's "trace" field is the EventHeader.trace_id of the event that
// caused it (absent for digests, which gather several): its MailDeadLettered
// carries it.
// A message id is derived from (event id, kind, recipient, discriminator):
// queueing checks and creates msg:<id> in one step, so one event never
// queues two mails for one person, whatever the redeliveries.
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_QUEUE_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_QUEUE_H_

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/events.h"
#include "common/redis.h"
#include "labshare/notify/v1/notify.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/notify/notify_metrics.h"

namespace labshare::notify {

inline constexpr char kMailPrefix[] = "{notify}:mail:";
inline constexpr char kSettingsPrefix[] = "{notify}:settings:";

using Fields = std::map<std::string, std::string>;

// Hex id of the mail for (event, kind, recipient, discriminator).
std::string MessageId(absl::string_view event_id, absl::string_view kind, absl::string_view recipient,
                      absl::string_view discriminator);

// True for an id a message can have: a resource id ([a-z0-9][a-z0-9-]{0,62},
// which the hex ids of MessageId are), or a digest's "dg-{user}-{due ms}"
// (MakeDigests), whose {user} is a user id of up to 63 characters, so the
// whole may be longer than a resource id.
bool ValidMessageId(absl::string_view id);

// A dead letter as the API shows it, from a message's fields (a digest
// stored by an older version with the placeholder subject "digest" shows
// the subject of its parts: DigestSubject).
v1::DeadLetter DeadLetterFromFields(const std::string& id, const Fields& f);

// "labshare.notify.v1.NotifyEvent" payload with a fresh event id;
// `actor_organization`: the caller's "organizations/{org}", if any.
std::string NotifyEventPayload(v1::NotifyEvent event, absl::Time when, const std::string& actor,
                               const std::string& request_id, const std::string& actor_organization = "",
                               const std::string& trace_id = "");

// The cursor of a dead letter in the page indexes.
std::string DeadLetterCursor(absl::Time dead, const std::string& id);

class MailQueue {
 public:
  explicit MailQueue(RedisPool* redis, NotifyMetrics* metrics = nullptr) : redis_(redis), metrics_(metrics) {}

  // A mail refused before it is queued (e.g. an address that could inject
  // headers): it becomes a dead letter at once, with its MailDeadLettered.
  struct Refused {
    v1::DeadLetter::Reason reason = v1::DeadLetter::REJECTED;
    std::string error;
    std::string event_payload;
  };
  // Queues `fields` (kind, user, org, email, name, subject, text, html,
  // unsub, event, lang, tz) as message `id` unless it exists. digest: waits
  // in the user's digest list, due at digest_due (domain). create_ms is
  // domain_now, the sending order wall_now. With `refused`: a dead letter
  // instead, never sent. True if written.
  absl::StatusOr<bool> Enqueue(const std::string& id, const Fields& fields, bool digest, absl::Time digest_due,
                               absl::Time wall_now, absl::Time domain_now, const Refused* refused = nullptr);

  // Sets the subject of a message being sent (a digest's, rendered again at
  // sending: a part may have expired since it was made); a no-op unless it
  // is SENDING.
  absl::Status SetSendingSubject(const std::string& id, const std::string& subject);

  // Claims up to `limit` due messages for `consumer` (state SENDING).
  absl::StatusOr<std::vector<std::string>> Claim(const std::string& consumer, absl::Time wall_now, int limit);
  // The fields of a message (empty when it does not exist).
  absl::StatusOr<Fields> Load(const std::string& id);

  enum class Outcome { kSent, kRetry, kDead };
  // The end of one attempt by `consumer` (a no-op when the message is no
  // longer its, e.g. recovered as uncertain meanwhile). kDead needs the
  // MailDeadLettered payload; kSent keeps the message `retention`.
  absl::Status Finish(const std::string& id, const std::string& consumer, Outcome outcome, absl::Time wall_now,
                      absl::Time retry_at, const std::string& error, v1::DeadLetter::Reason reason,
                      const std::string& event_payload, absl::Duration retention, absl::Time domain_now);

  // Messages left SENDING by `consumer` (a restart of the same process), or
  // by anyone and claimed before `stale_before`: to the dead letters as
  // DELIVERY_UNCERTAIN. Returns how many.
  //
  // `handed` (the running sender's own periodic check; nullptr at a
  // restart): the ids this process gave the mail server without recording
  // the outcome. Its other SENDING messages never reached the mail server
  // (the claim's answer was lost to a storage stall, or the sender failed
  // before sending): they are queued again, due at wall_now, not counted.
  absl::StatusOr<int> RecoverInFlight(const std::string& consumer, absl::Time stale_before, absl::Time wall_now,
                                      absl::Time domain_now, const std::set<std::string>* handed = nullptr);

  // Dead letters, newest first (by the domain time they died), after the
  // cursor `after` (a DeadRow's; empty: from the top), up to limit + 1 of
  // them, of one organisation and one reason when given. One index range
  // read and one read per row: O(page), not O(dead letters).
  struct DeadRow {
    std::string id;
    std::string cursor;  // DeadLetterCursor(dead_ms, id)
    Fields fields;
  };
  absl::StatusOr<std::vector<DeadRow>> ListDead(const std::string& after, int limit, const std::string& organization,
                                                v1::DeadLetter::Reason reason);
  // Removes up to `limit` dead letters (message and index entries) that
  // died before `domain_cutoff` (domain clock), oldest first; a replay of
  // one of them then answers DEAD_LETTER_NOT_FOUND. Returns how many went.
  absl::StatusOr<int> PruneDead(absl::Time domain_cutoff, int limit);
  // Indexes the dead letters written before the indexes existed, `step`
  // per Lua step, walking "dead" by (score, id); a no-op once done (marker
  // dl:indexed). `between_steps` (tests): called after each step but the last.
  absl::Status IndexDeadLetters(int step = 200, const std::function<void()>& between_steps = nullptr);
  // One step of that walk from `cursor` ("" = the start): indexes up to
  // about `step` DEAD members of "dead" (idempotent; also those an older
  // replica wrote without the indexes). Returns the next cursor, "" at the
  // end. `migration`: a no-op once dl:indexed is set, which the last step sets.
  absl::StatusOr<std::string> IndexDeadStep(const std::string& cursor, int step, bool migration);
  // DEAD -> QUEUED now; answers the dead letter as replayed. NOT_FOUND
  // (DEAD_LETTER_NOT_FOUND), FAILED_PRECONDITION (NOT_A_DEAD_LETTER). With
  // a request_id (one of `actor`'s): a replay of the same message again
  // answers the first answer, whatever happened since; of another message,
  // or another mutation's id, FAILED_PRECONDITION (REQUEST_ID_REUSED).
  // `allowed` (the caller's scope; none: anyone) is asked about the message
  // each time it is loaded, before anything else; a message that is gone is
  // not asked about (only the caller's own request record can answer for it).
  absl::StatusOr<v1::DeadLetter> Replay(const std::string& id, const std::string& actor,
                                        const std::string& request_id, absl::Time wall_now, absl::Time domain_now,
                                        const std::string& actor_organization = "",
                                        const std::function<absl::Status(const Fields&)>& allowed = nullptr,
                                        const std::string& trace_id = "");

  // Schedule changes of one event, applied once (marker per event id).
  // `version` is the update_time of the booking or lease in the event
  // (InfinitePast: unknown, always applied): a member changed by a newer
  // version (added or removed) ignores older ones processed later.
  absl::Status ApplySchedule(const std::string& event_id, const StreamEvent& e,
                             const std::vector<std::pair<std::string, absl::Time>>& add,
                             const std::vector<std::string>& remove, absl::Time version = absl::InfinitePast());
  struct Fired {
    std::string member;
    StreamEvent event;
    absl::Time fire;
  };
  // Claims members due by domain_now (and claims older than stale_before
  // that were never finished).
  absl::StatusOr<std::vector<Fired>> ClaimSchedules(absl::Time domain_now, absl::Time wall_now,
                                                   absl::Time stale_before, int limit);
  absl::Status FinishSchedule(const std::string& member);

  // Turns the due digests (domain_now) into QUEUED digest messages, each
  // with its subject (DigestSubject of its parts, in the recipient's
  // language). Returns how many.
  absl::StatusOr<int> MakeDigests(absl::Time domain_now, absl::Time wall_now, int limit);

  // Settings: the hash (empty when never set).
  absl::StatusOr<Fields> Settings(const std::string& user_id);
  // Writes `fields` when the current etag is `expected_etag`; ABORTED
  // (CONCURRENT_MODIFICATION) otherwise. With a request_id (one of `actor`'s,
  // the acting user's: another user's ids never collide): the same
  // fingerprint again is a no-op (returns false), another one is
  // FAILED_PRECONDITION (REQUEST_ID_REUSED); then a client_etag (the
  // caller's, when given) other than the current one is FAILED_PRECONDITION
  // (ETAG_MISMATCH). `answer` (the caller's reply) is kept with the request
  // id; a retry gets it back in `replayed_answer` (empty for records kept
  // before answers were).
  absl::StatusOr<bool> PutSettings(const std::string& user_id, const Fields& fields, const std::string& expected_etag,
                                   const std::string& actor, const std::string& request_id, const std::string& fingerprint,
                                   const std::string& event_payload, const std::string& client_etag = "",
                                   const std::string& answer = "", std::string* replayed_answer = nullptr);

  // The request record of a mutation that found nothing to change (an
  // Unsubscribe of a kind already off): true when kept (or no request_id);
  // false for a retry, its first answer in `*replayed_answer`;
  // FAILED_PRECONDITION (REQUEST_ID_REUSED) for other content.
  absl::StatusOr<bool> KeepRequest(const std::string& actor, const std::string& request_id,
                                   const std::string& fingerprint, const std::string& answer,
                                   std::string* replayed_answer);

  // The same answers as KeepRequest, keeping nothing: true when there is
  // no record (or no request_id).
  absl::StatusOr<bool> FindRequest(const std::string& actor, const std::string& request_id,
                                   const std::string& fingerprint, std::string* replayed_answer);

  // The unsubscribe-token key (created on first use).
  absl::StatusOr<std::string> UnsubscribeKey();
  // When tokens without an expiry (made before expiries) expire: `first`
  // when this is first asked, the stored answer afterwards (unsublegacy).
  absl::StatusOr<absl::Time> LegacyUnsubscribeExpiry(absl::Time first);

 private:
  RedisPool* redis_;
  NotifyMetrics* metrics_;  // counts what the steps did; may be null
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_QUEUE_H_
