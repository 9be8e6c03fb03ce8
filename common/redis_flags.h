// Flags for the Redis ACL user every service connects as (see
// deploy/redis-acl.sh): --redis_user and --redis_password_file.
#ifndef LABSHARE_COMMON_REDIS_FLAGS_H_
#define LABSHARE_COMMON_REDIS_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "common/redis.h"

ABSL_DECLARE_FLAG(std::string, redis_user);
ABSL_DECLARE_FLAG(std::string, redis_password_file);

namespace labshare {

// LoadRedisCredentials(--redis_user, --redis_password_file, options).
absl::Status RedisCredentialsFromFlags(RedisOptions* options);

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_FLAGS_H_
