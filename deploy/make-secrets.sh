#!/bin/bash
# Every secret a LabShare deployment needs, in one directory (kept if they
# exist, so rerunning is harmless):
#   pki/                 development CA, a certificate + key per service and
#                        for the OpenID provider (deploy/dev-pki.sh)
#   token-signing.pem    the token signing key (inventory only)
#   jwks.json            its public key as a JWKS (every service)
#   redis/               Redis ACL users: users.acl and a password file per
#                        user (deploy/redis-acl.sh; users.acl is rewritten
#                        on every run, the passwords are kept)
#   audit-signing.pem    usage's audit head signing key, audit-public.pem
#                        its public key (deploy/verify_audit.py --public_key)
#   smtp.password        the notifier's password at the SMTP relay: a random
#                        placeholder; write your relay's password into it
#   webhook-secret.key   the notifier's AES-256 key (64 hex digits) sealing
#                        webhook signing secrets in Redis; keep it with the
#                        backups of Redis but never in them
# Private keys and passwords are mode 0600.
#
# usage: deploy/make-secrets.sh DIR [SAN...]   (SANs: see deploy/dev-pki.sh)
#   LABSHARE_BIN: where labshare-token is (default: on PATH)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: $0 DIR [SAN...]}"
shift
token_tool="${LABSHARE_BIN:+$LABSHARE_BIN/}labshare-token"
mkdir -p "$dir"
umask 077

"$here/dev-pki.sh" "$dir/pki" "$@" >/dev/null
if [ ! -s "$dir/token-signing.pem" ]; then
  "$token_tool" --generate_key="$dir/token-signing.pem" >/dev/null
fi
"$token_tool" --jwks "$dir/token-signing.pem" > "$dir/jwks.json.new"
mv "$dir/jwks.json.new" "$dir/jwks.json"
chmod 0644 "$dir/jwks.json"
# Always: it keeps every password and rewrites users.acl, so an upgrade that
# allows a service new commands (or adds a user) reaches existing secrets.
"$here/redis-acl.sh" "$dir/redis" >/dev/null
if [ ! -s "$dir/audit-signing.pem" ]; then
  openssl genpkey -algorithm ed25519 -out "$dir/audit-signing.pem" 2>/dev/null
  openssl pkey -in "$dir/audit-signing.pem" -pubout -out "$dir/audit-public.pem"
  chmod 0644 "$dir/audit-public.pem"
fi
if [ ! -s "$dir/smtp.password" ]; then
  openssl rand -hex 16 > "$dir/smtp.password"
fi
if [ ! -s "$dir/webhook-secret.key" ]; then
  openssl rand -hex 32 > "$dir/webhook-secret.key"
fi
echo "secrets in $dir: pki/, token-signing.pem, jwks.json, redis/, audit-signing.pem, smtp.password (replace with your relay's), webhook-secret.key"
