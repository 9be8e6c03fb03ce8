#!/bin/bash
# For working on the console: the whole platform (deploy/run-local.sh) on
# free-ish ports from BASE, with the demo month played through
# (deploy/demo-scenario.sh, demo clock ends 2027-04-01 10:00 Shanghai), then
# keeps running until killed. The console is at http://127.0.0.1:$((BASE+5)).
# usage: scripts/dev-platform.sh BASE DATA_DIR   (binaries: LABSHARE_BUILD_DIR,
#        default <repo>/build-test; nothing C++ is built here; the console
#        is built when dist/ is missing or older than its sources,
#        scripts/dist-stale.sh)
# A token for a demo person, for scripts or Playwright's extraHTTPHeaders:
#   $LABSHARE_BUILD_DIR/bin/labshare-token --signing_key_file=DATA_DIR/secrets/token-signing.pem \
#     --user=li-wei --org=nanocraft --roles=lab_user --ttl=1h
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
base="${1:?usage: $0 BASE DATA_DIR}"
data="${2:?usage: $0 BASE DATA_DIR}"
mkdir -p "$data"
export LABSHARE_BUILD_DIR="${LABSHARE_BUILD_DIR:-$root/build-test}" LABSHARE_NO_BUILD=1
export LABSHARE_BASE_PORT="$base" LABSHARE_REDIS_PORT="$((base + 8))" LABSHARE_DATA_DIR="$data"
export LABSHARE_CLOCK_FILE="$data/clock"
export ASAN_OPTIONS="detect_leaks=0" UBSAN_OPTIONS="print_stacktrace=1"
exec "$root/deploy/run-local.sh" --fresh --then \
  "'$root/deploy/demo-scenario.sh' > '$data/demo.out' 2>&1 && echo \"demo month done; console at \$LABSHARE_CONSOLE_URL\" && sleep infinity"
