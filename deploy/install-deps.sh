#!/bin/bash
# Installs the Debian bookworm packages LabShare builds and runs with.
# Skips apt when everything is already there (unless FORCE_APT=1).
set -euo pipefail
# Node.js >= 20.19 (services/console/package.json "engines"; the console's
# build, the demo OpenID provider, the deployment validation). Debian
# bookworm's nodejs is 18, so it is never installed from here: stop first,
# before apt, with how to get a current one.
node_version="$(node --version 2>/dev/null || true)"
node_major="$(echo "$node_version" | sed -n 's/^v\([0-9]*\)\..*/\1/p')"
node_minor="$(echo "$node_version" | sed -n 's/^v[0-9]*\.\([0-9]*\)\..*/\1/p')"
if [ -z "$node_major" ] || [ "$node_major" -lt 20 ] || { [ "$node_major" -eq 20 ] && [ "${node_minor:-0}" -lt 19 ]; }; then
  cat >&2 <<EOF
install-deps.sh: LabShare needs Node.js 20.19 or newer (20 or 22 LTS); found ${node_version:-no node on PATH}.
Debian bookworm's nodejs package is 18 and too old. Install one of:
  - NodeSource's Node.js 20 or 22 for Debian (https://github.com/nodesource/distributions:
    the node_20.x or node_22.x apt repository, package nodejs, which brings npm);
  - Debian 13 (trixie) or later, whose nodejs is 20.19 (apt-get install nodejs npm);
  - the official binaries from https://nodejs.org/ on PATH.
Then run deploy/install-deps.sh again.
EOF
  exit 1
fi
packages=(
  cmake g++ make pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libhiredis-dev redis-server redis-tools libjemalloc-dev
  libabsl-dev libgtest-dev libgmock-dev
  golang-github-gogo-googleapis-dev libssl-dev prometheus-cpp-dev
  python3 python3-grpcio python3-protobuf python3-cryptography tzdata
  libjwt-dev libjansson-dev libcurl4-openssl-dev openssl curl
  docker-compose systemd iproute2
  python3-aiosmtpd
  libcairo2-dev libpango1.0-dev fonts-noto-cjk poppler-utils
)
# (python3: deploy/demo-scenario.sh and the tests; the service image has
# none, and deploy/demo-extras.sh, which could run there, needs only bash and
# date. python3-aiosmtpd: the development SMTP sink of deploy/run-local.sh and the
# mail tests. libcairo2-dev, libpango1.0-dev, fonts-noto-cjk: labshare-billing renders
# invoice PDFs with cairo + pango in Noto Sans CJK; poppler-utils: the tests
# read them back with pdftotext.)
# The browser tests' own (tests/run-all.sh sets LABSHARE_TEST_DEPS=1):
# Debian's chromium for Playwright and a CJK font for the Chinese screens.
if [ "${LABSHARE_TEST_DEPS:-0}" = 1 ]; then
  packages+=(chromium fonts-noto-cjk)
fi
# Calendar feeds: parsed by a real iCalendar parser (tests/notify/feed_module_test).
if [ "${LABSHARE_TEST_DEPS:-0}" = 1 ]; then
  packages+=(python3-icalendar)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Tools that may come from elsewhere on the machine (a newer Node.js brings
# its own npm, which Debian's npm package would conflict with): only when the
# command is missing. (Node.js itself is checked above.)
for tool in npm:npm kubectl:kubernetes-client; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -eq 0 ] && [ "${FORCE_APT:-0}" != 1 ]; then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
