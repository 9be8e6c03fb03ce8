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
# free loopback ports below the ephemeral range for the services, the OpenID
# provider and their metrics ports (tests/support/free_ports.py)
read -r base redis_port < <(python3 "$root/tests/support/free_ports.py" 0 1 2 3 4 5 6 7 100 101 102 103 106)
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
