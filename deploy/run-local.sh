#!/bin/bash
# Starts the whole platform on this machine, everything over TLS: installs
# what is missing, builds (Release), creates the secrets (development CA and
# a certificate per service, the token signing key and its JWKS, Redis ACL
# users, the audit signing key; deploy/make-secrets.sh), starts Redis (ACL
# users only, the default user off, append-only file fsynced on every write:
# a crash of Redis loses no acknowledged write), the OpenID
# provider with the demo consortium's people (deploy/oidc), the four
# services and the console (services/console: web app and HTTP API), loads
# the demo consortium, prints how to sign in, and runs until
# Ctrl-C, then stops everything gracefully.
#
# usage: deploy/run-local.sh [--fresh] [--then COMMAND]
#   --fresh         start from empty data (and new keys)
#   --then COMMAND  run COMMAND (e.g. deploy/demo-scenario.sh) once the
#                   platform is up, then stop everything and exit with its code
#
# Ports: LABSHARE_BASE_PORT (default 50051) for inventory, +1 booking,
# +2 billing, +3 usage, +4 the OpenID provider, +5 the console (HTTP on
# loopback), +6 notify, +7 the development SMTP sink (mails as files in
# LABSHARE_DATA_DIR/mail/); metrics on +100..+103 and +106; Redis on LABSHARE_REDIS_PORT (default
# 56379, loopback only, the one plaintext port). Data and secrets live in
# LABSHARE_DATA_DIR (default deploy/.data).
# LABSHARE_BUILD_DIR: where the binaries are (default build-release, built
# here unless LABSHARE_NO_BUILD=1; the console is then built only when its
# sources are newer than its build). LABSHARE_CLOCK_FILE: demo time; every
# service reads "now" from that file (deploy/demo-scenario.sh moves it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${LABSHARE_BUILD_DIR:-$root/build-release}"
base="${LABSHARE_BASE_PORT:-50051}"
redis_port="${LABSHARE_REDIS_PORT:-56379}"
data="${LABSHARE_DATA_DIR:-$root/deploy/.data}"
then_cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) rm -rf "$data" ;;
    --then) then_cmd="$2"; shift ;;
    *) echo "usage: $0 [--fresh] [--then COMMAND]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$data"
data="$(cd "$data" && pwd)"
bin="$build/bin"

if [ "${LABSHARE_NO_BUILD:-0}" != 1 ]; then
  "$root/deploy/install-deps.sh"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLABSHARE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j2 --target labshare-inventory labshare-booking labshare-billing \
    labshare-usage labshare-notify labshare-token labshare-demo-seed labshare
fi
[ -d "$root/deploy/oidc/node_modules" ] || (cd "$root/deploy/oidc" && npm ci --no-audit --no-fund --silent)
# The console (gateway and web app): its packages and its build.
console="$root/services/console"
[ -d "$console/node_modules" ] || (cd "$console" && npm ci --no-audit --no-fund --silent)
# With LABSHARE_NO_BUILD=1 (scripts/dev-platform.sh, the e2e tests) the
# console is still built again when its build is missing or older than a
# source of it (server/, web/, the protos: scripts/dist-stale.sh), so that
# nobody runs an old console; a current build is used as it is. One build
# at a time (platforms started side by side share the directory).
if [ "${LABSHARE_NO_BUILD:-0}" != 1 ]; then
  (cd "$console" && npm run --silent build >/dev/null)
elif "$console/scripts/dist-stale.sh" >/dev/null; then
  mkdir -p "$console/dist"
  (
    flock 9
    if stale="$("$console/scripts/dist-stale.sh")"; then
      echo "building the console: $stale"
      cd "$console" && npm run --silent build >/dev/null
    fi
  ) 9>"$console/dist/.build.lock"
fi
clock=()
if [ -n "${LABSHARE_CLOCK_FILE:-}" ]; then
  # Demo time starts on Monday 2027-03-01, 08:00 in Shanghai.
  [ -s "$LABSHARE_CLOCK_FILE" ] || echo 2027-03-01T08:00:00+08:00 > "$LABSHARE_CLOCK_FILE"
  clock=(--clock_file="$LABSHARE_CLOCK_FILE")
fi

# Secrets: generated once, kept with the data, never in the source.
secrets="$data/secrets"
pki="$secrets/pki"
LABSHARE_BIN="$bin" "$root/deploy/make-secrets.sh" "$secrets"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
wait_for() {  # file pattern what
  for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "$3 did not start:"; tail -20 "$1" "${1%.out}.log" 2>/dev/null; exit 1
}

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$data" --aclfile "$secrets/redis/users.acl" \
  --appendonly yes --appendfsync always --save '' --hash-max-listpack-value 1024 >"$data/redis.log" 2>&1 &
pids+=($!)
wait_for "$data/redis.log" "Ready to accept connections" Redis

# The OpenID provider: the demo consortium's people (deploy/oidc/demo-accounts.json).
mkdir -p "$data/oidc"
console_url="http://127.0.0.1:$((base + 5))"
node "$root/deploy/oidc/server.mjs" --listen="127.0.0.1:$((base + 4))" \
  --console_redirect_uri="$console_url/auth/callback" --accounts="$root/deploy/oidc/demo-accounts.json" --keys="$data/oidc/keys.json" \
  --tls_cert="$pki/oidc.crt" --tls_key="$pki/oidc.key" >"$data/oidc.out" 2>"$data/oidc.log" &
pids+=($!)
wait_for "$data/oidc.out" "^listening on" "the OpenID provider"
issuer="$(sed -n 's/^listening on //p' "$data/oidc.out" | head -1)"

tls=(--tls_ca="$pki/ca.crt" --jwks="$secrets/jwks.json")
start() {  # name port_offset [extra flags]
  local name=$1 off=$2; shift 2
  "$bin/labshare-$name" --listen="127.0.0.1:$((base + off))" --metrics_listen="127.0.0.1:$((base + 100 + off))" \
    --tls_cert="$pki/$name.crt" --tls_key="$pki/$name.key" "${tls[@]}" \
    --redis="127.0.0.1:$redis_port" --redis_user="$name" --redis_password_file="$secrets/redis/$name.password" \
    "${clock[@]}" "$@" >"$data/$name.out" 2>"$data/$name.log" &
  pids+=($!)
}
start inventory 0 --token_signing_key_file="$secrets/token-signing.pem" \
  --oidc_issuer="$issuer" --oidc_ca_file="$pki/ca.crt"
start booking 1 --inventory="127.0.0.1:$base" ${LABSHARE_CLOCK_FILE:+--sweep_interval=1s --inventory_cache_ttl=0s}
start billing 2 --inventory="127.0.0.1:$base" ${LABSHARE_CLOCK_FILE:+--lease_period_interval=1s}
start usage 3 --audit_signing_key_file="$secrets/audit-signing.pem"
# --- notify (issue 16): a development SMTP sink on loopback that keeps every
# mail as a file in $data/mail/ (tests/notify/smtp_sink.py, python3-aiosmtpd),
# and labshare-notify (port +6, metrics +106) sending to it.
mkdir -p "$data/mail"
/usr/bin/python3 "$root/tests/notify/smtp_sink.py" --dir="$data/mail" --listen="127.0.0.1:$((base + 7))" \
  >"$data/smtp.out" 2>"$data/smtp.log" &
pids+=($!)
wait_for "$data/smtp.out" "^listening on" "the SMTP sink"
start notify 6 --inventory="127.0.0.1:$base" --smtp="127.0.0.1:$((base + 7))" --console_url="$console_url" \
  --mail_from=labshare@localhost --webhook_secret_key_file="$secrets/webhook-secret.key" \
  ${LABSHARE_CLOCK_FILE:+--reminder_lead=1h --mail_retry_initial=1s}
# The console: the web app and the HTTP API, over mutual TLS to the services
# with the signed-in person's token (plain HTTP on loopback only).
node "$console/dist/server/main.js" --listen="127.0.0.1:$((base + 5))" --public_url="$console_url" \
  --inventory="127.0.0.1:$base" --booking="127.0.0.1:$((base + 1))" --billing="127.0.0.1:$((base + 2))" \
  --usage="127.0.0.1:$((base + 3))" --notify="127.0.0.1:$((base + 6))" \
  --tls_ca="$pki/ca.crt" --tls_cert="$pki/console.crt" --tls_key="$pki/console.key" \
  --oidc_issuer="$issuer" --oidc_client_id=labshare-console --oidc_ca_file="$pki/ca.crt" \
  >"$data/console.out" 2>"$data/console.log" &
pids+=($!)
for name in inventory booking billing usage notify console; do
  wait_for "$data/$name.out" "^listening on" "$name"
  echo "$name: $(head -1 "$data/$name.out")  (logs: $data/$name.log)"
done

# The client's settings: addresses, the CA, the provider (labshare login).
cat > "$data/labshare.conf" <<CONF
inventory = 127.0.0.1:$base
booking = 127.0.0.1:$((base + 1))
billing = 127.0.0.1:$((base + 2))
usage = 127.0.0.1:$((base + 3))
tls_ca = $pki/ca.crt
issuer = $issuer
oidc_ca_file = $pki/ca.crt
CONF
export LABSHARE_CONFIG="$data/labshare.conf"

# Bootstrap: the demo data goes in with a short-lived admin token minted
# from the signing key itself (labshare-token --signing_key_file), as an
# operator would for the very first administrator; everyone else signs in.
export LABSHARE_TOKEN="$("$bin/labshare-token" --signing_key_file="$secrets/token-signing.pem" \
  --user=admin --org=zju --roles=consortium_admin --ttl=10m)"
"$bin/labshare-demo-seed" --inventory="127.0.0.1:$base" --tls_ca="$pki/ca.crt" "${clock[@]}"
LABSHARE_BIN="$bin" "$root/deploy/demo-extras.sh"
unset LABSHARE_TOKEN

if [ -n "$then_cmd" ]; then
  set +e
  LABSHARE_BIN="$bin" LABSHARE_DATA_DIR="$data" LABSHARE_TLS_CA="$pki/ca.crt" LABSHARE_ISSUER="$issuer" \
    LABSHARE_CONSOLE_URL="$console_url" bash -c "$then_cmd"
  rc=$?
  exit $rc
fi
cat <<MSG

LabShare is running.
  The console: open $console_url and sign in as one of the demo people
  (password demo-<name>):
    li-wei      lab user, NanoCraft (SME)       chen-jing  lab user, BioTek
    wang-fang   facility staff + lab user, ZJU  zhao-lei   facility staff, SJTU
    sun-mei     billing admin, NanoCraft        admin      consortium admin
    auditor     auditor (funder liaison)
Every service port is over TLS (development CA: $pki/ca.crt).
  inventory / booking / billing / usage  127.0.0.1:$base .. 127.0.0.1:$((base + 3))
  notify (mail)                          127.0.0.1:$((base + 6)); every mail lands as a file in $data/mail/
                                         (the development SMTP sink on 127.0.0.1:$((base + 7)))
  OpenID provider                        $issuer  (the demo people: deploy/oidc/demo-accounts.json)
  metrics                                https://127.0.0.1:$((base + 100))/metrics .. $((base + 103))
  Redis                                  127.0.0.1:$redis_port, ACL users only (operators: --user admin, password in $secrets/redis/admin.password)
Keys and certificates: $secrets (token signing key: inventory only; jwks.json: every service).
Sign in and try the client:
  export LABSHARE_CONFIG=$data/labshare.conf PATH=$bin:\$PATH
  labshare login                  # opens the provider's page; sign in e.g. as li-wei
  labshare whoami
  labshare inventory ListInstruments
Press Ctrl-C to stop.
MSG
wait "${pids[2]}"  # inventory
