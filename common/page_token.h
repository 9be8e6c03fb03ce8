// Pagination (AIP-158): page sizes, and page tokens bound to one list query
// and one caller.
//
// A token is base64url (no padding) of
//   version byte | first 16 bytes of HMAC-SHA-256(key, binding) | position
// where the position is what the list resumes after (the last member
// returned; only the list that issued it interprets it), and the binding,
// each part length-prefixed, is:
//   - the request's full message type name ("labshare.booking.v1.
//     ListQuotasRequest"): every list method has its own request type, so the
//     type names the method, and the service;
//   - the request with page_token and page_size cleared, serialized
//     deterministically: every filter, order and view field;
//   - the caller: user id, organisation and the sorted set of roles (not the
//     bearer token's expiry: a renewed token continues the same pages);
//   - the position.
// A token presented to another list, with other filters, by another caller,
// with any byte changed, truncated or made up fails the MAC: INVALID_ARGUMENT
// INVALID_PAGE_TOKEN. page_size may change between pages.
//
// 16 MAC bytes keep tokens short; forging one still means guessing 128 bits
// online. The position is readable (it is the last item the caller already
// received) but not changeable.
#ifndef LABSHARE_COMMON_PAGE_TOKEN_H_
#define LABSHARE_COMMON_PAGE_TOKEN_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <google/protobuf/message.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/redis.h"
#include "common/token.h"

namespace labshare {

// page_size 0 means the default; above the maximum it is clamped; negative
// is INVALID_ARGUMENT (INVALID_FIELD, field page_size).
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;

struct PageRequest {
  int page_size = kDefaultPageSize;
  std::string after;  // position after the previous page; empty: from the start
};

// Makes and checks page tokens with one secret key. Immutable and
// thread-safe; cheap to copy (copies share the key, wiped when the last one
// goes away). Managers take one by value in their constructor.
class PageTokenCodec {
 public:
  // The key must be secret and the same on every replica of a service (a
  // token from one replica continues on another). At least 32 bytes.
  explicit PageTokenCodec(std::string key);

  // The key a service's replicas share: 32 random bytes kept in Redis at
  // "<hash_tag>:page_token_key" (e.g. "{booking}:page_token_key", inside
  // the service's own hash tag, so its Redis user may read it and no other
  // service's can), created with SET NX by whichever replica starts first
  // and read by the others. Deleting the key (then restarting the service)
  // rotates it: outstanding page tokens stop working, which only makes
  // clients start their list again. Waits for Redis (start-up ordering, a
  // Redis that is down or not yet writable) up to `wait`, by default without
  // a deadline, logging a warning about every 10 s; the last Redis error
  // after `wait`. `stop` (if set) is asked before every retry: when it says
  // true, CANCELLED (the services pass ShutdownSignalPending, so SIGTERM
  // ends a process still waiting).
  static absl::StatusOr<PageTokenCodec> FromRedis(RedisPool* redis, absl::string_view hash_tag,
                                                  absl::Duration wait = absl::InfiniteDuration(),
                                                  const std::function<bool()>& stop = {});

  // The page size and the position of `list_request` (a List request with
  // int32 page_size and string page_token fields) made by `caller`.
  // INVALID_ARGUMENT: INVALID_FIELD for a negative page_size,
  // INVALID_PAGE_TOKEN for a token this codec did not issue for this request
  // and caller.
  absl::StatusOr<PageRequest> Parse(const google::protobuf::Message& list_request,
                                    const Principal& caller) const;

  // The next_page_token after `last` (non-empty) for `list_request` and
  // `caller`. page_token, page_size and resume_token of the request are
  // ignored (an export's resume_token is made the same way).
  std::string Make(const google::protobuf::Message& list_request, const Principal& caller,
                   absl::string_view last) const;

  // The position `token` carries when this codec made it for `request` and
  // `caller` (Make), exactly as made; nullopt otherwise. For tokens that are
  // not a request's page_token (an export's resume_token).
  std::optional<std::string> Open(const google::protobuf::Message& request, const Principal& caller,
                                  absl::string_view token) const;

 private:
  struct Key;
  std::string Mac(const google::protobuf::Message& list_request, const Principal& caller,
                  absl::string_view last) const;

  std::shared_ptr<const Key> key_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_PAGE_TOKEN_H_
