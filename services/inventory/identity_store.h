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
//   {inventory}:refresh_family:<family> "1" while the session lives,   TTL = refresh TTL
//   {inventory}:refresh_used:<family>   hash <sha256 hex> -> user: the tokens the session used up
// Rotate() is one Lua step: the presented token must be active in a live
// family; its record goes, its hash joins the family's used set, a new
// active token of the same family is written, and the family's TTL restarts
// (the used set's too). A token in the used set of a live family is a reuse
// for as long as the session lives, however many rotations ago it was used:
// presenting it deletes the family, and every token of that session stops
// working. A token that names a live family but that the family never
// issued (forged) is unknown, not a reuse.
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

  // A new session for `user_id`: its first refresh token.
  absl::StatusOr<std::string> StartSession(absl::string_view user_id, absl::Duration ttl) const;

  struct Rotation {
    enum class Kind { kRotated, kInvalid, kReused };
    Kind kind = Kind::kInvalid;
    std::string user_id;    // kRotated, kReused
    std::string new_token;  // kRotated
  };
  absl::StatusOr<Rotation> Rotate(absl::string_view refresh_token, absl::Duration ttl) const;

  // The user of `refresh_token` if it is active in a live session, else ""
  // (unknown, malformed, used, or its session ended). Reads only.
  absl::StatusOr<std::string> ActiveTokenUser(absl::string_view refresh_token) const;

  // Ends the session of `refresh_token` (a token of the session must be
  // presented, used or not). Unknown tokens change nothing.
  absl::Status RevokeSession(absl::string_view refresh_token) const;

 private:
  absl::StatusOr<std::vector<v1::User>> Lookup(const std::string& index, absl::string_view value) const;

  RedisPool* pool_;
  const InventoryStore* store_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_IDENTITY_STORE_H_
