// Storage of sign-in: which user a provider's subject or email names, and
// the refresh tokens of sign-in sessions. All keys carry the {inventory} tag
// (see redis_inventory_store.h).
//
// Lookup indexes: sorted sets of "<value>\n<user id>" members, written in the
// same Lua step as the user (AddSignInIndexOps from CreateUser/UpdateUser);
// users stored before the indexes existed are added by BackfillSignInIndexes
// at start. A lookup loads the users it finds and keeps only those whose
// record still carries the value, so a stale member never signs anyone in.
//
// Refresh tokens: "lsr1.<family>.<secret>" (family: 16 random bytes, secret:
// 32, base64url). Only SHA-256 of the token is stored:
//   {inventory}:refresh:<sha256 hex>    hash {fam, user, state: active}, TTL = refresh TTL
//   {inventory}:refresh_family:<family> the session's start (Unix ms, by the
//                                       service clock) while it lives, TTL = refresh TTL
//   {inventory}:refresh_used:<family>   hash <sha256 hex> -> user: the tokens the session used up
// Every TTL is capped by what is left of the session's maximum age
// (SessionLimits::max_age from its start), so nothing of a session outlives
// it, and the used set holds at most the rotations of one maximum age.
// Rotate() is one Lua step: the presented token must be active in a live
// family that has not reached its maximum age; its record goes, its hash
// joins the family's used set, a new active token of the same family is
// written, and the family's TTL restarts (the used set's too). A session
// at its maximum age ends at its next refresh (kExpired: the family and its
// used set are deleted). A token in the used set of a live family is a reuse
// for as long as the session lives, however many rotations ago it was used:
// presenting it deletes the family, and every token of that session stops
// working. A token that names a live family but that the family never
// issued (forged) is unknown, not a reuse. A family stored before sessions
// had a start ("1") counts its age from its first refresh since.
//
// ID tokens: an ID token is exchanged once. The session of an exchange is
// started in the same Lua step that SET NXes
//   {inventory}:id_token_used:<sha256 hex of the token's signed part>   "1", TTL = until the token can no longer verify
// The signed part (header.payload) rather than the whole token: an ECDSA
// signature has a second valid form (s -> n - s), so the same token could be
// presented again with other bytes; its signed part cannot change without
// breaking the signature.
#ifndef LABSHARE_SERVICES_INVENTORY_IDENTITY_STORE_H_
#define LABSHARE_SERVICES_INVENTORY_IDENTITY_STORE_H_

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/doc_store.h"
#include "common/redis.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "services/inventory/redis_inventory_store.h"

namespace labshare::inventory {

// Emails compare case-insensitively (ASCII) and without surrounding blanks.
std::string NormalizeEmail(absl::string_view email);

// Index operations that move user `id` from `before`'s subject and email to
// `after`'s (an empty `before` for a new user).
void AddSignInIndexOps(const v1::User& before, const v1::User& after, absl::string_view id,
                       std::vector<IndexOp>* ops);

class IdentityStore {
 public:
  // pool and store must outlive this. Thread-safe.
  IdentityStore(RedisPool* pool, const InventoryStore* store) : pool_(pool), store_(store) {}

  // The users whose external_subject / normalised email is `value`.
  absl::StatusOr<std::vector<v1::User>> UsersWithSubject(absl::string_view subject) const;
  absl::StatusOr<std::vector<v1::User>> UsersWithEmail(absl::string_view email) const;

  // Adds every stored user to the lookup indexes (idempotent).
  absl::Status BackfillSignInIndexes() const;

  // How long the keys of a session live, at the service clock's `now`.
  struct SessionLimits {
    absl::Duration refresh_ttl;  // a refresh token's life unless used
    absl::Duration max_age;      // the session's whole life from its start
    absl::Time now;
  };

  // A new session for `user_id` starting at limits.now: its first refresh token.
  absl::StatusOr<std::string> StartSession(absl::string_view user_id, const SessionLimits& limits) const;

  // The ID token whose signed part (header.payload) is `signed_part`, used
  // up by a sign-in: remembered for `ttl` (until it can no longer verify).
  struct IdTokenUse {
    std::string signed_part;
    absl::Duration ttl;
  };
  // StartSession for the exchange of an ID token, once: "" (and nothing
  // written) when that ID token was exchanged before.
  absl::StatusOr<std::string> StartSession(absl::string_view user_id, const SessionLimits& limits,
                                           const IdTokenUse& id_token) const;
  // Whether the ID token with this signed part was exchanged. Reads only.
  absl::StatusOr<bool> IdTokenUsed(absl::string_view signed_part) const;

  struct Rotation {
    enum class Kind { kRotated, kInvalid, kReused, kExpired };
    Kind kind = Kind::kInvalid;
    std::string user_id;        // kRotated, kReused
    std::string new_token;      // kRotated
    absl::Time session_start;   // kRotated
  };
  absl::StatusOr<Rotation> Rotate(absl::string_view refresh_token, const SessionLimits& limits) const;

  // The user of `refresh_token` if it is active in a live session, else ""
  // (unknown, malformed, used, or its session ended). Reads only.
  absl::StatusOr<std::string> ActiveTokenUser(absl::string_view refresh_token) const;

  // Ends the session of `refresh_token` (a token of the session must be
  // presented, used or not). Unknown tokens change nothing.
  absl::Status RevokeSession(absl::string_view refresh_token) const;

 private:
  absl::StatusOr<std::string> Start(absl::string_view user_id, const SessionLimits& limits,
                                    const IdTokenUse* id_token) const;
  absl::StatusOr<std::vector<v1::User>> Lookup(const std::string& index, absl::string_view value) const;

  RedisPool* pool_;
  const InventoryStore* store_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_IDENTITY_STORE_H_
