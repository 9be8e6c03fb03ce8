#!/bin/bash
# End to end: Redis and the four services as separate processes (the local
# launcher, on free loopback ports, in demo time, every port over TLS, Redis
# with ACL users, the OpenID provider), the demo consortium, and the demo
# scenario through the labshare client with signed-in personas; asserts the
# month's invoice amounts, the settlement and the utilisation figures.
#
# usage: tests/e2e/demo_test.sh BUILD_DIR   (BUILD_DIR/bin holds the binaries)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
read -r base redis_port < <(python3 - <<'PY'
import socket
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
# five consecutive free ports for the services and the OpenID provider (and +100 metrics ports)
import random
while True:
    b = random.randint(20000, 40000)
    ok = True
    for p in [b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 100, b + 101, b + 102, b + 103, b + 106]:
        s = socket.socket()
        try: s.bind(("127.0.0.1", p))
        except OSError: ok = False
        finally: s.close()
    if ok: break
print(b, free())
PY
)
LABSHARE_BUILD_DIR="$build" LABSHARE_NO_BUILD=1 LABSHARE_BASE_PORT="$base" LABSHARE_REDIS_PORT="$redis_port" \
LABSHARE_DATA_DIR="$work/data" LABSHARE_CLOCK_FILE="$work/clock" \
  "$root/deploy/run-local.sh" --fresh --then "$root/deploy/demo-scenario.sh" > "$work/out" 2>&1 || {
  echo "the demo failed:"; cat "$work/out"
  for f in "$work"/data/*.log; do echo "--- $f"; tail -20 "$f"; done
  exit 1
}
cat "$work/out"
out="$work/out"
source "$here/expect_demo.sh"
# The console's HTTP API, called as a member firm's script does (curl with
# the token of `labshare token`): the booking as the service answers it, and
# 401 without a token.
expect http_api_booking_state COMPLETED
expect http_api_without_token 401
exit $fail
