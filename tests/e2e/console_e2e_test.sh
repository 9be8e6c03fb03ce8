#!/bin/bash
# The web console in a real browser (Debian's chromium through Playwright,
# no downloaded browser) against the real platform: deploy/run-local.sh's
# Redis, OpenID provider, four services and console gateway on free loopback
# ports, after the demo month (services/console/e2e/global-setup.ts). Every
# view's screenshot is kept in services/console/test-results/screens/.
# usage: tests/e2e/console_e2e_test.sh BUILD_DIR   (BUILD_DIR/bin holds the binaries)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
console="$root/services/console"
[ -x /usr/bin/chromium ] || { echo "chromium is not installed (deploy/install-deps.sh installs it)"; exit 1; }
[ -f "$console/dist/server/main.js" ] && [ -f "$console/dist/web/index.html" ] ||
  { echo "the console is not built: cd services/console && npm ci && npm run build"; exit 1; }
cd "$console"
export LABSHARE_BUILD_DIR="$build" PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
unset LABSHARE_CONSOLE_URL LABSHARE_E2E_DATA LABSHARE_E2E_AUTH
rm -rf test-results
rc=0
npx --no-install playwright test --config e2e/playwright.config.ts || rc=$?
# A sign-in that had to be tried again (e2e/fixtures.ts signInAs): shown
# whether or not the run passed.
if [ -f test-results/sign-in-retries.log ]; then
  echo "--- sign-ins tried again (test-results/sign-in-retries.log):"
  cat test-results/sign-in-retries.log
fi
# A service that crashed or stopped on a sanitizer report or an undocumented
# error (e2e/global-setup.ts keepProblems): its log, and the test fails even
# if every browser test passed.
if [ -f test-results/platform-problems.log ]; then
  echo "--- a service of the platform crashed or reported a problem (test-results/platform-problems.log):"
  cat test-results/platform-problems.log
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
