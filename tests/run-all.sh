#!/bin/bash
# The whole test suite: installs what is missing, builds with warnings as
# errors and AddressSanitizer + UndefinedBehaviorSanitizer, runs every test.
# Tests start their own redis-server on free loopback ports.
# Usage: tests/run-all.sh [BUILD_DIR]   (default: build-test)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-test}"
LABSHARE_TEST_DEPS=1 "$root/deploy/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLABSHARE_WERROR=ON -DLABSHARE_SANITIZE=ON \
  -DLABSHARE_SHARED_LIBS=ON -DLABSHARE_TEST_PCH=ON >/dev/null
cmake --build "$build" -j2
# The development OpenID provider's packages, once, before tests that start it
# run in parallel (the identity and end-to-end tests would otherwise each run
# `npm ci` in the same folder).
[ -d "$root/deploy/oidc/node_modules/oidc-provider" ] ||
  (cd "$root/deploy/oidc" && npm ci --no-audit --no-fund --silent)
# The console (services/console): its packages once, then one build (types
# generated from proto/, the gateway, the web app) before console_gateway_test
# and the browser tests use it. No browser is downloaded (Debian's chromium).
[ -d "$root/services/console/node_modules" ] ||
  (cd "$root/services/console" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
(cd "$root/services/console" && npm run --silent build >/dev/null)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd "$build"
ctest --output-on-failure -j2 --timeout 600
