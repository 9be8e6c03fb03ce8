#!/bin/bash
# A development PKI with openssl: a CA and, for each service, a certificate
# with its SPIFFE identity (URI SAN spiffe://<trust domain>/<service>) and
# the names it is reached by (localhost, 127.0.0.1, its compose/Kubernetes
# service name), plus one for the OpenID provider (oidc, no SPIFFE identity).
# Keys are EC P-256, mode 0600. Existing files are kept, so rerunning is
# harmless; delete a pair to reissue it. Never use this CA in production.
#
# usage: deploy/dev-pki.sh DIR [SAN...]
#   SAN: extra subjectAltNames for every certificate issued now, e.g.
#        IP:10.0.0.5 or DNS:lab.example.org
#   LABSHARE_TRUST_DOMAIN (default labshare)
# Writes DIR/ca.crt, DIR/ca.key and DIR/<name>.crt, DIR/<name>.key.
set -euo pipefail
dir="${1:?usage: $0 DIR [SAN...]}"
shift
extra=""
for san in "$@"; do extra+=",$san"; done
domain="${LABSHARE_TRUST_DOMAIN:-labshare}"
mkdir -p "$dir"
umask 077

if [ ! -s "$dir/ca.crt" ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=LabShare development/CN=LabShare development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  chmod 0644 "$dir/ca.crt"
fi

for name in inventory booking billing usage console notify oidc; do
  [ -s "$dir/$name.crt" ] && [ -s "$dir/$name.key" ] && continue
  san="DNS:$name,DNS:localhost,IP:127.0.0.1,IP:::1$extra"
  [ "$name" = oidc ] || san="URI:spiffe://$domain/$name,$san"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=LabShare/CN=$name" \
    -keyout "$dir/$name.key" 2>/dev/null |
    openssl x509 -req -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 825 \
      -out "$dir/$name.crt" -extfile <(printf '%s\n' "subjectAltName=$san" \
        "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
  chmod 0644 "$dir/$name.crt"
done
echo "development PKI in $dir: ca.crt and a certificate + key per service (trust domain $domain)"
