#!/bin/bash
# Validates the deployment files offline, with real secrets made by
# deploy/make-secrets.sh (CA, certificates, signing keys, Redis ACL):
# - deploy/docker-compose.yml with `docker-compose config`; every secret file
#   it mounts exists in the layout make-secrets.sh writes;
# - the kustomize output of deploy/k8s (base and the demo overlay, whose
#   Secrets are generated from those files) against the Kubernetes API
#   schemas of the npm package kubernetes-models, and what every workload
#   must have (probes over TLS, limits, non-root, read-only root filesystem,
#   Secrets mounted 0400, TLS/JWKS/Redis-user flags, the signing key in
#   inventory only, the Redis default user off; the console gateway with
#   mutual TLS to the services, HTTPS, sign-in at the provider, no signing
#   key or Redis password, probes on /healthz and /readyz);
# - deploy/systemd units with `systemd-analyze verify`, failing on any
#   warning, and their LoadCredential= files present in that layout.
# usage: tests/deploy/validate_deploy.sh BUILD_DIR   (for labshare-token and the binaries the units start)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
secrets="$work/secrets"
LABSHARE_BIN="$build/bin" "$root/deploy/make-secrets.sh" "$secrets" >/dev/null
grep -qx "user default off.*" "$secrets/redis/users.acl" || { echo "users.acl: the default user is not off"; exit 1; }

echo "== docker-compose"
mkdir -p "$work/compose"
cp "$root/deploy/docker-compose.yml" "$work/compose/"
ln -s "$secrets" "$work/compose/secrets"
docker-compose -f "$work/compose/docker-compose.yml" config > "$work/compose.yaml"
python3 - "$work/compose.yaml" <<'PY'
import os, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
for name, s in c["secrets"].items():
    assert os.path.isfile(s["file"]), f"secret {name}: {s['file']} is not made by deploy/make-secrets.sh"
for name in ["inventory", "booking", "billing", "usage"]:
    cmd = " ".join(c["services"][name]["command"])
    for flag in ["--tls_cert=", "--tls_key=", "--tls_ca=", "--jwks=", "--redis_user=", "--redis_password_file="]:
        assert flag in cmd, f"compose {name}: missing {flag}"
    mounted = {s["source"] for s in c["services"][name]["secrets"]}
    assert ("token_signing_key" in mounted) == (name == "inventory"), f"compose {name}: signing key is inventory's only"
assert "--aclfile" in c["services"]["redis"]["command"], "compose redis: no ACL file"
# The console gateway: mutual TLS to the services with its own certificate,
# HTTPS to browsers, sign-in at the provider, and no key it does not need.
con = c["services"]["console"]
cmd = con["command"]
assert cmd[:2] == ["node", "dist/server/main.js"], f"compose console: {cmd[:2]}"
args = dict(a[2:].split("=", 1) for a in cmd[2:])
for flag in ["tls_cert", "tls_key", "tls_ca", "https_cert", "https_key", "public_url", "oidc_issuer",
             "oidc_ca_file"]:
    assert args.get(flag), f"compose console: missing --{flag}"
assert args["public_url"].startswith("https://"), "compose console: public_url is not https"
assert args["oidc_client_id"] == "labshare-console", "compose console: oidc_client_id"
for up, port in [("inventory", 50051), ("booking", 50052), ("billing", 50053), ("usage", 50054)]:
    assert args.get(up) == f"{up}:{port}", f"compose console: --{up}"
    assert up in con["depends_on"], f"compose console: depends on {up}"
mounted = {s["source"]: s.get("target", s["source"]) for s in con["secrets"]}
assert mounted.get("console_crt") == "tls_crt" and mounted.get("console_key") == "tls_key", "compose console: its own certificate"
assert set(mounted) == {"console_crt", "console_key", "ca_crt"}, f"compose console: only its certificate and the CA, got {sorted(mounted)}"
assert args["tls_cert"] == "/run/secrets/tls_crt" and args["tls_key"] == "/run/secrets/tls_key", "compose console: mTLS files"
assert con.get("read_only") is True and con.get("user") not in (None, "0", "root"), "compose console: read-only, non-root"
assert "/readyz" in " ".join(con["healthcheck"]["test"]), "compose console: health check on /readyz"
published = [str(p.get("published")) if isinstance(p, dict) else str(p).split(":")[0] for p in con["ports"]]
assert published == ["8080"], f"compose console: published on 8080 for the browser, got {con['ports']}"
oidc = " ".join(c["services"]["oidc"]["command"])
assert f"--console_redirect_uri={args['public_url']}/auth/callback" in oidc, "compose oidc: the console's redirect URI"
print("docker-compose.yml: valid; secrets, TLS and Redis users: ok; console: mTLS, HTTPS, sign-in, no signing key: ok")
PY

echo "== kubernetes"
(cd "$work" && npm install --no-audit --no-fund --silent --no-save kubernetes-models@5 js-yaml@4 >/dev/null)
cp "$root/deploy/k8s/validate.mjs" "$work/"
cp -r "$root/deploy/k8s" "$work/k8s"
rm -rf "$work/k8s/overlays/demo/secrets"
cp -r "$secrets" "$work/k8s/overlays/demo/secrets"
kubectl kustomize "$work/k8s/overlays/demo" > "$work/demo.yaml"
node "$work/validate.mjs" < "$work/demo.yaml"
# The base alone (its Secrets come from the operator).
kubectl kustomize "$root/deploy/k8s/base" | node "$work/validate.mjs" | tail -1
python3 - "$work/demo.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
assert len(workloads) == 7, len(workloads)  # redis, four services, the console, the demo OpenID provider
for d in workloads:
    name, pod = d["metadata"]["name"], d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, f"{name}: runAsNonRoot"
    for c in pod.get("initContainers", []) + pod["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}: read-only root"
        assert c["resources"]["limits"] and c["resources"]["requests"], f"{name}/{c['name']}: resources"
    main = pod["containers"][0]
    assert "readinessProbe" in main and "livenessProbe" in main, f"{name}: probes"
    for v in pod.get("volumes", []):
        if "secret" in v:
            assert v["secret"].get("defaultMode") == 0o400, f"{name}: Secret {v['name']} not mounted 0400"
    if name in ("inventory", "booking", "billing", "usage"):
        args = " ".join(main["args"])
        for flag in ["--tls_cert=", "--tls_key=", "--tls_ca=", "--jwks=", "--redis_user=" + name,
                     "--redis_password_file="]:
            assert flag in args, f"{name}: missing {flag}"
        assert ("--token_signing_key_file" in args) == (name == "inventory"), f"{name}: signing key is inventory's only"
        probe = main["readinessProbe"]["exec"]["command"]
        assert probe[0] == "labshare" and any(a.startswith("--tls_ca=") for a in probe) and "health" in probe, \
            f"{name}: readiness through labshare health over TLS"
    if name == "redis":
        assert "--aclfile" in main["args"], "redis: no ACL file"
    if name == "console":
        assert main["command"] == ["node", "dist/server/main.js"], f"console: command {main['command']}"
        args = dict(a[2:].split("=", 1) for a in main["args"])
        for flag in ["tls_cert", "tls_key", "tls_ca", "https_cert", "https_key", "public_url", "oidc_issuer",
                     "oidc_ca_file"]:
            assert args.get(flag), f"console: missing --{flag}"
        assert args["oidc_client_id"] == "labshare-console", "console: oidc_client_id"
        for up, port in [("inventory", 50051), ("booking", 50052), ("billing", 50053), ("usage", 50054)]:
            assert args.get(up) == f"{up}:{port}", f"console: --{up}"
        assert not any(k.startswith(("token_signing", "redis", "jwks", "audit")) for k in args), \
            f"console: holds no signing key, Redis password or key set: {sorted(args)}"
        live, ready = main["livenessProbe"]["httpGet"], main["readinessProbe"]["httpGet"]
        assert (live["path"], live["scheme"]) == ("/healthz", "HTTPS"), f"console: liveness {live}"
        assert (ready["path"], ready["scheme"]) == ("/readyz", "HTTPS"), f"console: readiness {ready}"
        secret = next(v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v)
        assert secret == "labshare-console", f"console: mounts {secret}"
secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
for name, s in secrets.items():
    assert ("token-signing.pem" in s["data"]) == (name == "labshare-inventory"), f"{name}: signing key is inventory's only"
assert set(secrets["labshare-console"]["data"]) == {"tls.crt", "tls.key", "ca.crt"}, \
    f"labshare-console: its certificate and the CA only, got {sorted(secrets['labshare-console']['data'])}"
services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
assert len(services) == 7, sorted(services)
# gRPC clients balance over every pod themselves; browsers reach the console
# through a plain Service.
assert all(s["spec"].get("clusterIP") == "None" for n, s in services.items() if n != "console"), \
    "headless Services expected"
assert [p["targetPort"] for p in services["console"]["spec"]["ports"]] == ["https"], "console Service: https port"
oidc = next(d for d in workloads if d["metadata"]["name"] == "oidc")["spec"]["template"]["spec"]["containers"][0]
assert "--console_redirect_uri=$(CONSOLE_PUBLIC_URL)/auth/callback" in oidc["command"], "oidc: the console's redirect URI"
print("workloads: probes over TLS, limits, non-root, read-only root, Secrets 0400, TLS and Redis-user flags: ok; "
      "console: mTLS, HTTPS, sign-in, no signing key, /healthz and /readyz probes: ok")
PY

echo "== systemd"
mkdir -p "$work/units" "$work/bin"
for s in inventory booking billing usage; do ln -s "$build/bin/labshare-$s" "$work/bin/labshare-$s"; done
ln -s "$root/deploy/backup.sh" "$work/bin/labshare-backup"  # labshare-backup.service (plain Redis port, no TLS)
for f in "$root"/deploy/systemd/*.service; do
  sed "s|/usr/local/bin/|$work/bin/|" "$f" > "$work/units/$(basename "$f")"
  for cred in $(sed -n 's/^LoadCredential=[^:]*://p' "$f"); do
    [ -f "$secrets/${cred#/etc/labshare/}" ] || { echo "$(basename "$f"): $cred is not made by make-secrets.sh"; exit 1; }
  done
  [ "$(basename "$f")" = labshare-backup.service ] || grep -q -- "--tls_ca=%d/ca.crt" "$f" || { echo "$(basename "$f"): no TLS"; exit 1; }
done
cp "$root"/deploy/systemd/*.timer "$work/units/"
if ! systemd-analyze verify "$work"/units/*.service "$work"/units/*.timer > "$work/verify.log" 2>&1 || [ -s "$work/verify.log" ]; then
  cat "$work/verify.log"
  echo "systemd units: warnings or errors"
  exit 1
fi
echo "systemd units: verified, no warnings; credentials in place"
