#include "common/redis_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, redis_user, "",
          "Redis ACL user this service connects as (deploy/redis-acl.sh creates one per service); "
          "needs --redis_password_file.");
ABSL_FLAG(std::string, redis_password_file, "",
          "File holding the Redis password (mode 0600 or 0400, one line). Without --redis_user: "
          "the default user's password (requirepass).");

namespace labshare {

absl::Status RedisCredentialsFromFlags(RedisOptions* options) {
  return LoadRedisCredentials(absl::GetFlag(FLAGS_redis_user),
                              absl::GetFlag(FLAGS_redis_password_file), options);
}

}  // namespace labshare
