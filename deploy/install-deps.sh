#!/bin/bash
# Installs the Debian bookworm packages LabShare builds and runs with.
# Skips apt when everything is already there (unless FORCE_APT=1).
set -euo pipefail
packages=(
  cmake g++ make pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libhiredis-dev redis-server redis-tools libjemalloc-dev
  libabsl-dev libgtest-dev libgmock-dev
  golang-github-gogo-googleapis-dev libssl-dev prometheus-cpp-dev
  python3-grpcio python3-protobuf python3-cryptography tzdata
  libjwt-dev libjansson-dev libcurl4-openssl-dev openssl curl
  docker-compose systemd iproute2
  python3-aiosmtpd
  libcairo2-dev libpango1.0-dev fonts-noto-cjk poppler-utils
)
# (python3-aiosmtpd: the development SMTP sink of deploy/run-local.sh and the
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
# command is missing.
for tool in node:nodejs npm:npm kubectl:kubernetes-client; do
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
