// Who the people are: users by name or by organisation and role, and
// display names of instruments, from labshare-inventory (as Role SERVICE,
// by this service's certificate), with a small cache.
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_PEOPLE_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_PEOPLE_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/token.h"

namespace grpc {
class Channel;
}

namespace labshare::notify {

struct Person {
  std::string name;  // "users/{id}"
  std::string display_name;
  std::string email;
  std::string organization;
  bool disabled = false;
  std::vector<Role> roles = {};  // as inventory has them
};

class People {
 public:
  virtual ~People() = default;
  // NOT_FOUND when the user does not exist.
  virtual absl::StatusOr<Person> User(const std::string& name) = 0;
  // As User, answered by `deadline` at the latest (DEADLINE_EXCEEDED when
  // the directory has not answered by then): for a lookup made on behalf of
  // a call that must answer within its own deadline. The default asks User
  // (for directories that answer at once).
  virtual absl::StatusOr<Person> UserWithin(const std::string& name, absl::Time deadline) {
    (void)deadline;
    return User(name);
  }
  // Users of `organization` ("" for all) holding `role`.
  virtual absl::StatusOr<std::vector<Person>> WithRole(const std::string& organization, Role role) = 0;
  // The instrument's display name (the name itself when unknown).
  virtual std::string InstrumentName(const std::string& name) = 0;
  // The organisation's display name ("organizations/{id}"; its id when
  // unknown or unset).
  virtual std::string OrganizationName(const std::string& name) {
    const size_t slash = name.rfind('/');
    return slash == std::string::npos ? name : name.substr(slash + 1);
  }
  // The IANA time zone of the instrument's facility ("" when unknown or
  // unset).
  virtual std::string InstrumentZone(const std::string& name) = 0;
  // The display name of the instrument's service catalogue entry
  // `entry_id` (the id itself when unknown or unset).
  virtual std::string ServiceEntryName(const std::string& instrument, const std::string& entry_id) {
    (void)instrument;
    return entry_id;
  }
  // A maintenance window's [start, end); NOT_FOUND when unknown.
  virtual absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string& name) = 0;
};

// `wall` times the cache entries (ttl 0: no cache).
std::unique_ptr<People> InventoryPeople(std::shared_ptr<grpc::Channel> inventory, const Clock* wall,
                                        absl::Duration ttl);

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_PEOPLE_H_
