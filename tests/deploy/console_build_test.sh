#!/bin/bash
# deploy/run-local.sh with LABSHARE_NO_BUILD=1 (services/console/scripts/
# dev-platform.sh, the e2e tests) reused services/console/dist whenever it
# existed, also when server/ or web/ had changed since: developers and
# probes ran an old console. Now the console is built again when a source
# (server/, web/, proto/, scripts/gen.sh, package.json, package-lock.json)
# is newer than its build, and not when the build is current.
# Runs run-local.sh's console step itself (the lines from "# The console
# (gateway and web app)" to "clock=()") in a made-up tree, with an `npm` on
# PATH that only records the build; and scripts/dist-stale.sh on its own.
# usage: tests/deploy/console_build_test.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/labshare-console-build-XXXXXX)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# The made-up repository: a console with sources, node_modules and a build.
fake="$work/repo"
console="$fake/services/console"
mkdir -p "$console/server" "$console/web/src" "$console/scripts" "$console/node_modules/x" "$console/gen" \
  "$console/dist/server" "$console/dist/web" "$fake/proto/labshare/x/v1"
cp "$root/services/console/scripts/dist-stale.sh" "$console/scripts/"
for f in server/main.ts web/src/app.tsx scripts/gen.sh package.json package-lock.json node_modules/x/index.js gen/x_pb.ts; do
  echo "// $f" > "$console/$f"
done
echo 'syntax = "proto3";' > "$fake/proto/labshare/x/v1/x.proto"
# Sources made 3 days ago, the build 2 days ago.
built() {
  touch -d '3 days ago' "$console"/server/*.ts "$console"/web/src/app.tsx "$console"/scripts/gen.sh \
    "$console"/package*.json "$fake/proto/labshare/x/v1/x.proto"
  touch -d '2 days ago' "$console/dist/server/main.js" "$console/dist/web/index.html"
}
built

# npm: records "npm <args>" and, for a build, writes dist as the real one does.
mkdir -p "$work/bin"
cat > "$work/bin/npm" <<EOF
#!/bin/bash
echo "npm \$*" >> "$work/npm.calls"
if [ "\$*" = "run --silent build" ]; then touch "$console/dist/server/main.js" "$console/dist/web/index.html"; fi
EOF
chmod +x "$work/bin/npm"
step="$work/console-step.sh"
{
  echo 'set -euo pipefail'
  echo "root='$fake'"
  sed -n '/^# The console (gateway and web app)/,/^clock=()/p' "$root/deploy/run-local.sh" | sed '$d'
} > "$step"
grep -q 'dist-stale.sh' "$step" || fail "run-local.sh's console step does not ask scripts/dist-stale.sh"
builds() {  # runs the step; prints how many builds it made
  rm -f "$work/npm.calls"
  PATH="$work/bin:$PATH" LABSHARE_NO_BUILD=1 bash "$step" >/dev/null
  if [ -f "$work/npm.calls" ]; then grep -c 'run --silent build' "$work/npm.calls" || true; else echo 0; fi
}

# Current: used as it is (and dist-stale.sh says so: exit 1, nothing printed).
[ "$(builds)" = 0 ] || fail "a current build was built again"
if out="$("$console/scripts/dist-stale.sh")"; then fail "dist-stale.sh calls a current build stale: $out"; fi
# node_modules and gen/ (made by the build) newer than dist: still current.
touch "$console/node_modules/x/index.js" "$console/gen/x_pb.ts"
[ "$(builds)" = 0 ] || fail "a newer node_modules or gen/ file made a build"

# Each kind of source newer than the build (made 2 days ago): built again,
# once; then current.
for src in server/main.ts web/src/app.tsx scripts/gen.sh package.json package-lock.json ../../proto/labshare/x/v1/x.proto; do
  built
  touch -d '1 day ago' "$console/$src"
  out="$("$console/scripts/dist-stale.sh")" || fail "dist-stale.sh: $src newer than dist is not stale"
  case "$out" in *"$(basename "$src")"*) ;; *) fail "dist-stale.sh names '$out', not $src" ;; esac
  [ "$(builds)" = 1 ] || fail "$src newer than dist: the console was not built again"
  [ "$(builds)" = 0 ] || fail "after the build of $src: built again"
done
# A new file in server/ counts too.
built
echo '// new' > "$console/server/new.ts"
touch -d '1 hour ago' "$console/server/new.ts"
[ "$(builds)" = 1 ] || fail "a new server file: the console was not built again"

# No build at all: built.
rm -f "$console/dist/web/index.html"
"$console/scripts/dist-stale.sh" >/dev/null || fail "dist-stale.sh: a missing dist/web/index.html is not stale"
[ "$(builds)" = 1 ] || fail "a missing build was not made"

# Without LABSHARE_NO_BUILD: always built, as before.
rm -f "$work/npm.calls"
PATH="$work/bin:$PATH" LABSHARE_NO_BUILD=0 bash "$step" >/dev/null
[ "$(grep -c 'run --silent build' "$work/npm.calls")" = 1 ] || fail "without LABSHARE_NO_BUILD the console was not built"

echo "console build: current reused, stale (server, web, proto, gen.sh, package files, new file, missing) rebuilt once: ok"
