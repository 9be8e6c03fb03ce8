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
#   warning, and their LoadCredential= files present in that layout; the
#   Redis settings for systemd hosts (redis-labshare.conf) read by a real
#   redis-server;
# - issue 15: durable Redis everywhere (appendfsync always in the launcher,
#   compose and every Kubernetes Redis node); the Kubernetes Redis as a
#   master, two replicas and three sentinels that the services reach with
#   --redis_sentinels and --redis_wait_replicas=1, and the ACL users that
#   needs; liveness (the process answers) apart from readiness (Redis and
#   the services it needs); PodDisruptionBudgets; no fixed host port on a
#   compose service that scales; the kustomize files rendered alike by
#   Debian's kubectl 1.20 (kustomize 2.0; unpacked from its package with
#   apt-get download when the kubectl on PATH is another) and the one on
#   PATH; .dockerignore; the image's build and runtime package lists (the
#   runtime libraries by ldd of BUILD_DIR's binaries).
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
for name in ["inventory", "booking", "billing", "usage", "notify"]:
    cmd = " ".join(c["services"][name]["command"])
    for flag in ["--tls_cert=", "--tls_key=", "--tls_ca=", "--jwks=", "--redis_user=", "--redis_password_file="]:
        assert flag in cmd, f"compose {name}: missing {flag}"
    mounted = {s["source"] for s in c["services"][name]["secrets"]}
    assert ("token_signing_key" in mounted) == (name == "inventory"), f"compose {name}: signing key is inventory's only"
assert "--aclfile" in c["services"]["redis"]["command"], "compose redis: no ACL file"
# Webhook signing secrets sealed in Redis with the notifier's key, which no
# other service mounts.
assert "--webhook_secret_key_file=/run/secrets/webhook_secret_key" in c["services"]["notify"]["command"], \
    "compose notify: no --webhook_secret_key_file"
for name, svc in c["services"].items():
    mounted = {s["source"] if isinstance(s, dict) else s for s in svc.get("secrets", [])}
    assert ("webhook_secret_key" in mounted) == (name == "notify"), f"compose {name}: the webhook key is notify's only"
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
# The demo consortium, loaded once inventory is healthy by a one-shot
# container (the demo people can sign in); the signing key goes to inventory
# and to it only (it mints the bootstrap token).
seed = c["services"]["demo-seed"]
seed_cmd = " ".join(seed["command"] if isinstance(seed["command"], list) else [seed["command"]])
assert "labshare-demo-seed --inventory=inventory:50051 --tls_ca=/run/secrets/ca_crt" in seed_cmd, seed_cmd
assert "labshare-token --signing_key_file=/run/secrets/token_signing_key" in seed_cmd and "consortium_admin" in seed_cmd, seed_cmd
assert seed["depends_on"]["inventory"]["condition"] == "service_healthy", "compose demo-seed: after inventory is healthy"
assert seed.get("restart") in ("no", None), "compose demo-seed: runs once"
for name, svc in c["services"].items():
    mounted = {s["source"] if isinstance(s, dict) else s for s in svc.get("secrets", [])}
    assert ("token_signing_key" in mounted) == (name in ("inventory", "demo-seed")), \
        f"compose {name}: the signing key is inventory's and the demo seed's only"
print("docker-compose.yml: valid; secrets, TLS and Redis users: ok; console: mTLS, HTTPS, sign-in, no signing key: ok; "
      "demo seed once inventory is healthy: ok")
# Issue 15. One Redis, durable: every acknowledged write fsynced.
rc = c["services"]["redis"]["command"]
assert rc[rc.index("--appendonly") + 1] == "yes" and rc[rc.index("--appendfsync") + 1] == "always", \
    f"compose redis: appendonly yes, appendfsync always: {rc}"
def fixed_host_port(p):  # "H:C", "IP:H:C" or {published: H} publish a fixed host port; "C", "IP::C" do not
    if isinstance(p, dict):
        return p.get("published") not in (None, "", 0)
    parts = str(p).split("/")[0].split(":")
    return len(parts) >= 2 and parts[-2] != ""
for name, port in [("inventory", 50051), ("booking", 50052), ("billing", 50053), ("usage", 50054), ("notify", 50055)]:
    svc = c["services"][name]
    # docker-compose up --scale NAME=3: a fixed host port would clash.
    fixed = [p for p in svc.get("ports", []) if fixed_host_port(p)]
    assert not fixed, f"compose {name}: scales, so no fixed host port: {fixed}"
    assert "container_name" not in svc, f"compose {name}: a container_name cannot scale"
    cmd = svc["command"]
    assert f"--listen=0.0.0.0:{port}" in cmd and "--redis=redis:6379" in cmd, f"compose {name}: {cmd}"
    # Readiness only: compose restarts a container when its process exits
    # (liveness is the process), never for an unhealthy check.
    test = svc["healthcheck"]["test"]
    assert "health" in test and "--liveness" not in test and f"localhost:{port}" in test, f"compose {name}: {test}"
    assert svc.get("restart") == "unless-stopped", f"compose {name}: restart policy"
print("compose: Redis appendfsync always; inventory, booking, billing, usage, notify scale (no fixed host port); "
      "health checks are readiness, restarts follow the process: ok")
PY
grep -q -- "--appendfsync always" "$root/deploy/run-local.sh" && ! grep -q -- "--appendfsync everysec" "$root/deploy/run-local.sh" \
  || { echo "deploy/run-local.sh: Redis must run with --appendfsync always"; exit 1; }
echo "run-local.sh: Redis appendfsync always: ok"

echo "== kubernetes"
(cd "$work" && npm install --no-audit --no-fund --silent --no-save kubernetes-models@5 js-yaml@4 >/dev/null)
cp "$root/deploy/k8s/validate.mjs" "$work/"
cp -r "$root/deploy/k8s" "$work/k8s"
rm -rf "$work/k8s/overlays/demo/secrets"
cp -r "$secrets" "$work/k8s/overlays/demo/secrets"
# The kubectl on PATH and Debian's (kubernetes-client 1.20, kustomize 2.0:
# what install-deps.sh installs on a fresh machine) must render the same
# objects. When PATH has another kubectl, Debian's is unpacked from its
# package (apt-get download into the temporary directory).
kubectl kustomize "$work/k8s/overlays/demo" > "$work/demo.yaml" 2> "$work/kustomize.err" \
  || { cat "$work/kustomize.err"; exit 1; }
kubectl kustomize "$root/deploy/k8s/base" > "$work/base.yaml" 2> "$work/kustomize.err" \
  || { cat "$work/kustomize.err"; exit 1; }
path_kubectl="$(readlink -f "$(command -v kubectl)")"
if dpkg -S "$path_kubectl" 2>/dev/null | grep -q '^kubernetes-client:'; then
  echo "kubectl on PATH is Debian's ($(kubectl version --client 2>/dev/null | sed 's/.*GitVersion:"\([^"]*\)".*/\1/' | head -1)); no other to compare with"
else
  debian_kubectl="$work/kubernetes-client/usr/bin/kubectl"
  mkdir -p "$work/download"
  (cd "$work/download" && apt-get download -qq kubernetes-client 2>/dev/null) \
    || { echo "cannot fetch Debian's kubernetes-client (apt-get update first?)"; exit 1; }
  dpkg -x "$work"/download/kubernetes-client_*.deb "$work/kubernetes-client"
  echo "kubectl on PATH: $(kubectl version --client 2>/dev/null | head -1); Debian's: $("$debian_kubectl" version --client 2>/dev/null | sed 's/.*GitVersion:"\([^"]*\)".*/\1/')"
  "$debian_kubectl" kustomize "$work/k8s/overlays/demo" > "$work/demo-debian.yaml"
  "$debian_kubectl" kustomize "$root/deploy/k8s/base" > "$work/base-debian.yaml"
  python3 - "$work" <<'PY'
import json, re, sys, yaml
def load(path):
    text = open(path).read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    # Generated names end in a content hash that differs between versions.
    for d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):
            m = re.fullmatch(r"(.*)-[a-z0-9]{10}", d["metadata"]["name"])
            if m:
                text = text.replace(d["metadata"]["name"], m.group(1))
    out = {}
    for d in yaml.safe_load_all(text):
        if not d:
            continue
        if d["kind"] == "Secret":  # so does the folding of long values
            d["data"] = {k: re.sub(r"\s+", "", v) for k, v in d.get("data", {}).items()}
        for k in ("annotations", "labels"):  # kustomize 2.0 writes empty ones
            if d["metadata"].get(k) == {}:
                del d["metadata"][k]
        out[(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])] = d
    return out
for name in ("demo", "base"):
    new, old = load(f"{sys.argv[1]}/{name}.yaml"), load(f"{sys.argv[1]}/{name}-debian.yaml")
    assert set(new) == set(old), f"{name}: objects differ: {sorted(set(new) ^ set(old))}"
    for k in new:
        assert new[k] == old[k], f"{name}: {k} differs:\n{json.dumps(new[k], sort_keys=True)}\n{json.dumps(old[k], sort_keys=True)}"
    print(f"kustomize {name}: {len(new)} objects, the same from Debian's kubectl 1.20 and the kubectl on PATH")
PY
fi
node "$work/validate.mjs" < "$work/demo.yaml"
# The base alone (its Secrets come from the operator).
node "$work/validate.mjs" < "$work/base.yaml" | tail -1
python3 - "$work/demo.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
# redis, redis-sentinel, four services, the notifier, the console, the demo OpenID provider
assert len(workloads) == 9, sorted(d["metadata"]["name"] for d in workloads)
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
    if name in ("inventory", "booking", "billing", "usage", "notify"):
        args = " ".join(main["args"])
        for flag in ["--tls_cert=", "--tls_key=", "--tls_ca=", "--jwks=", "--redis_user=" + name,
                     "--redis_password_file="]:
            assert flag in args, f"{name}: missing {flag}"
        assert ("--token_signing_key_file" in args) == (name == "inventory"), f"{name}: signing key is inventory's only"
        probe = main["readinessProbe"]["exec"]["command"]
        assert probe[0] == "labshare" and any(a.startswith("--tls_ca=") for a in probe) and "health" in probe, \
            f"{name}: readiness through labshare health over TLS"
    if name in ("redis", "redis-sentinel"):
        script = "/scripts/redis-start.sh" if name == "redis" else "/scripts/sentinel-start.sh"
        assert main["command"] == ["sh", script], f"{name}: command {main['command']}"
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
for name, s in secrets.items():
    assert ("webhook-secret.key" in s["data"]) == (name == "labshare-notify"), f"{name}: the webhook key is notify's only"
notify_pod = next(d for d in workloads if d["metadata"]["name"] == "notify")["spec"]["template"]["spec"]
assert "--webhook_secret_key_file=/run/labshare/webhook-secret.key" in notify_pod["containers"][0]["args"], \
    "notify: no --webhook_secret_key_file"
assert "webhook-secret.key" in notify_pod["initContainers"][0]["command"], "notify: the webhook key is not copied 0600"
assert set(secrets["labshare-console"]["data"]) == {"tls.crt", "tls.key", "ca.crt"}, \
    f"labshare-console: its certificate and the CA only, got {sorted(secrets['labshare-console']['data'])}"
services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
assert len(services) == 9, sorted(services)
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
# Every Secret a pod mounts (Deployments, StatefulSets, CronJobs, Jobs) is
# generated by the demo overlay with the keys the pod reads, and every one the
# base's pods mount is among those the base tells the operator to create.
python3 - "$work/demo.yaml" "$work/base.yaml" "$root/deploy/k8s/base/kustomization.yaml" <<'PY'
import re, sys, yaml
def pods(docs):
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            yield f"{d['kind']} {d['metadata']['name']}", spec["template"]["spec"]
def used(pod):  # secret name -> keys read (None: the whole Secret)
    out = {}
    for v in pod.get("volumes", []):
        if "secret" in v:
            keys = [i["key"] for i in v["secret"].get("items", [])] or None
            out.setdefault(v["secret"]["secretName"], set()).update(keys or [None])
    for c in pod.get("initContainers", []) + pod["containers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                out.setdefault(ref["name"], set()).add(ref["key"])
    return out
demo = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
made = {d["metadata"]["name"]: set(d.get("data", {})) for d in demo if d["kind"] == "Secret"}
for who, pod in pods(demo):
    for name, keys in used(pod).items():
        assert name in made, f"demo {who}: mounts Secret {name}, which the demo overlay does not generate"
        missing = {k for k in keys if k} - made[name]
        assert not missing, f"demo {who}: Secret {name} lacks {sorted(missing)}"
base = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
text = open(sys.argv[3]).read()
documented = set(re.findall(r"create secret generic (labshare-[a-z-]+)", text))
for loop in re.findall(r"for s in ([a-z ]+); do", text):  # ... create secret generic labshare-$s
    documented |= {f"labshare-{s}" for s in loop.split()}
for who, pod in pods(base):
    for name in used(pod):
        assert name in documented, f"base {who}: Secret {name} is not in base/kustomization.yaml's list to create"
print(f"Secrets: every one a pod mounts is generated by the demo overlay ({len(made)}) and listed in the base: ok")
# Images: the base names a version tag (IfNotPresent keeps a pinned build);
# the demo runs the locally built :latest, never pulled.
for where, docs in (("base", base), ("demo", demo)):
    for who, pod in pods(docs):
        for c in pod.get("initContainers", []) + pod["containers"]:
            name, _, tag = c["image"].rpartition(":")
            if name.split("/")[-1] not in ("labshare", "labshare-console", "labshare-oidc"):
                continue
            assert c.get("imagePullPolicy") == "IfNotPresent", f"{where} {who}: {c['image']} {c.get('imagePullPolicy')}"
            if where == "base":
                assert tag and tag != "latest", f"base {who}/{c['name']}: {c['image']}: a version tag, not latest"
            else:
                assert tag == "latest", f"demo {who}/{c['name']}: {c['image']}"
print("images: the base's by version tag, the demo's the local :latest, IfNotPresent: ok")
# The demo overlay seeds the demo consortium once inventory answers; the
# base (production) does not.
jobs = {d["metadata"]["name"]: d for d in demo if d["kind"] == "Job"}
assert "demo-seed" in jobs, f"demo: no demo-seed Job ({sorted(jobs)})"
seed = jobs["demo-seed"]["spec"]["template"]["spec"]
script = " ".join(seed["containers"][0]["command"])
for part in ["health inventory:50051", "labshare-token --signing_key_file=/run/labshare/token-signing.pem",
             "labshare-demo-seed --inventory=inventory:50051 --tls_ca=/etc/labshare/ca.crt"]:
    assert part in script, f"demo-seed: {part}: {script}"
assert seed["restartPolicy"] == "OnFailure" and seed["securityContext"]["runAsNonRoot"] is True, "demo-seed: pod"
assert seed["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True, "demo-seed: read-only root"
assert not [d for d in base if d["kind"] == "Job"], "base: no demo seed"
print("demo: the demo-seed Job seeds once inventory answers; the base has none: ok")
PY
# Issue 15: Redis HA, durability, probes and disruption budgets, in the demo
# rendering and in the base (the replica counts an operator starts from).
python3 - "$work/demo.yaml" "$work/base.yaml" "$secrets" <<'PY'
import sys, yaml
secrets_dir = sys.argv[3]
for path in sys.argv[1:3]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kind = lambda k: {d["metadata"]["name"]: d for d in docs if d["kind"] == k}
    workloads = {**kind("Deployment"), **kind("StatefulSet")}
    config = next(d for n, d in kind("ConfigMap").items() if n.startswith("labshare-config"))["data"]
    scripts = next(d for n, d in kind("ConfigMap").items() if n.startswith("redis-scripts"))["data"]
    where = "demo" if path == sys.argv[1] else "base"
    # Redis: 3 nodes, 3 sentinels; every node durable, replicated as the
    # replication user, announced by its DNS name; the master refuses writes
    # no replica follows.
    redis, sentinel = workloads["redis"], workloads["redis-sentinel"]
    assert redis["spec"]["replicas"] == 3 and sentinel["spec"]["replicas"] == 3, f"{where}: 3 Redis nodes, 3 sentinels"
    node = scripts["redis-start.sh"]
    for line in ['echo "appendonly yes"', 'echo "appendfsync always"', 'echo "min-replicas-to-write 1"',
                 'echo "min-replicas-max-lag 10"', 'echo "masteruser replication"',
                 'echo "replica-announce-ip $announce"', 'echo "aclfile $secrets/users.acl"', "replication.password",
                 'echo "replicaof ', 'echo "maxmemory $maxmemory"', 'echo "maxmemory-policy noeviction"']:
        assert line in node, f"{where}: redis-start.sh lacks {line}"
    assert "everysec" not in node, f"{where}: redis-start.sh: everysec"
    env = {e["name"]: e.get("value") for e in redis["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env.get("REDIS_ANNOUNCE") == "$(POD_NAME).redis", f"{where}: redis announces $(POD_NAME).redis: {env}"
    # maxmemory from the container's own limit (the kernel kills a Redis that
    # outgrows it, on a fork, instead of Redis refusing writes).
    limit = next(e for e in redis["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "REDIS_MEMORY_LIMIT")
    assert limit["valueFrom"]["resourceFieldRef"] == {"containerName": "redis", "resource": "limits.memory"}, \
        f"{where}: REDIS_MEMORY_LIMIT {limit}"
    sent = scripts["sentinel-start.sh"]
    for line in ['echo "sentinel resolve-hostnames yes"', 'echo "sentinel announce-hostnames yes"',
                 'echo "sentinel announce-ip $announce"', 'echo "sentinel auth-user $master_name sentinel"',
                 '${master##*:} 2"', 'master_name="${REDIS_MASTER_NAME:-labshare}"', "--sentinel"]:
        assert line in sent, f"{where}: sentinel-start.sh lacks {line}"
    env = {e["name"]: e.get("value") for e in sentinel["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env.get("SENTINEL_ANNOUNCE") == "$(POD_NAME).redis-sentinel", f"{where}: sentinel announce {env}"
    for svc in ("redis", "redis-sentinel"):
        spec = kind("Service")[svc]["spec"]
        assert spec.get("clusterIP") == "None" and spec.get("publishNotReadyAddresses") is True, \
            f"{where}: Service {svc} headless, publishing pods before they are ready"
    want = ",".join(f"redis-sentinel-{i}.redis-sentinel:26379" for i in range(3))
    assert config.get("redis_sentinels") == want, f"{where}: redis_sentinels {config.get('redis_sentinels')}"
    assert "redis_address" not in config, f"{where}: no single Redis address"
    pdbs = kind("PodDisruptionBudget")
    for name, d in workloads.items():
        pod = d["spec"]["template"]["spec"]
        main = pod["containers"][0]
        live, ready = main["livenessProbe"], main["readinessProbe"]
        assert live != ready, f"{where} {name}: liveness must not be the readiness check"
        if name in ("inventory", "booking", "billing", "usage", "notify"):
            args = main["args"]
            for flag in ["--redis_sentinels=$(REDIS_SENTINELS)", "--redis_sentinel_master=labshare",
                         "--redis_wait_replicas=1"]:
                assert flag in args, f"{where} {name}: missing {flag}"
            assert not any(a.startswith("--redis=") for a in args), f"{where} {name}: --redis with Sentinel"
            port = {"inventory": 50051, "booking": 50052, "billing": 50053, "usage": 50054, "notify": 50055}[name]
            tls = "--tls_ca=/etc/labshare/ca.crt"
            assert ready["exec"]["command"] == ["labshare", tls, "health", f"localhost:{port}"], f"{where} {name}: readiness"
            assert live["exec"]["command"] == ["labshare", tls, "health", "--liveness", f"localhost:{port}"], \
                f"{where} {name}: liveness"
            assert main["startupProbe"]["exec"]["command"] == live["exec"]["command"], f"{where} {name}: startup probe"
            assert live["timeoutSeconds"] >= 5 and ready["timeoutSeconds"] >= 5, f"{where} {name}: probe timeouts"
        # A disruption budget for every workload that runs more than one pod,
        # and for Redis and the sentinels whatever their count.
        if d["spec"].get("replicas", 1) > 1 or name in ("redis", "redis-sentinel"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            match = [p for p in pdbs.values()
                     if all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())]
            assert len(match) == 1, f"{where} {name}: {len(match)} PodDisruptionBudgets"
            assert match[0]["spec"].get("maxUnavailable") == 1, f"{where} {name}: maxUnavailable 1"
    secrets = kind("Secret")
    if secrets:
        assert set(secrets["labshare-redis"]["data"]) == {"users.acl", "probe.password", "replication.password"}, \
            sorted(secrets["labshare-redis"]["data"])
        assert set(secrets["labshare-redis-sentinel"]["data"]) == {"sentinel.password"}, \
            sorted(secrets["labshare-redis-sentinel"]["data"])
    print(f"{where}: Redis 3 nodes (appendfsync always, min-replicas-to-write 1, replication user, DNS names) "
          f"and 3 sentinels (host names, ACL user); services through Sentinel with WAIT 1; liveness apart from "
          f"readiness; {len(pdbs)} PodDisruptionBudgets: ok")
# The ACL: the client's own commands for every service; replication and
# sentinel users.
acl = {l.split()[1]: l.split() for l in open(f"{secrets_dir}/redis/users.acl")}
for user in ("inventory", "booking", "billing", "usage", "notify"):
    for cmd in ("+role", "+wait", "+cluster|slots", "+asking"):
        assert cmd in acl[user], f"users.acl {user}: {cmd}"
assert {"+psync", "+replconf", "+ping"} <= set(acl["replication"]), "users.acl: replication user"
assert {"+slaveof", "+config|rewrite", "+subscribe", "+publish", "+info", "+role"} <= set(acl["sentinel"]), \
    "users.acl: sentinel user"
print("users.acl: ROLE, WAIT, CLUSTER SLOTS, ASKING for the services; replication and sentinel users: ok")
PY

echo "== image"
python3 - "$root" "$build" <<'PY'
import os, re, subprocess, sys
root, build = sys.argv[1:3]
# .dockerignore: present, leaving out what must never reach the build
# context, and keeping every file in git.
patterns = [l.strip() for l in open(f"{root}/.dockerignore") if l.strip() and not l.startswith("#")]
def rx(p):
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out + "$")
rules = [(p.startswith("!"), rx(p.lstrip("!").strip("/"))) for p in patterns]
def ignored(path):  # Docker: the last matching rule wins; a directory's rule covers what is in it
    parts, result = path.split("/"), False
    for neg, r in rules:
        if any(r.match("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = not neg
    return result
for path in [".git/HEAD", "build/bin/labshare", "build-release/CMakeCache.txt", "build-test/bin/labshare-booking",
             "deploy/.data/secrets/token-signing.pem", "deploy/.data/appendonlydir/appendonly.aof.1.incr.aof",
             "deploy/.data/redis.log", "deploy/secrets/redis/users.acl", "deploy/k8s/overlays/demo/secrets/jwks.json",
             "node_modules/x/index.js", "services/console/node_modules/vite/package.json",
             "deploy/oidc/node_modules/a/b.js", "services/console/dist/server/main.js",
             "services/console/test-results/run/trace.zip", "services/console/playwright-report/index.html",
             "tests/e2e/test-results/x.txt", "dump.rdb", "secrets/pki/ca.key", "x/booking.password"]:
    assert ignored(path), f".dockerignore: {path} would be in the build context"
tracked = subprocess.run(["git", "-C", root, "ls-files"], capture_output=True, text=True)
if tracked.returncode == 0 and tracked.stdout:
    files = tracked.stdout.split()
    kept = [f for f in files if ignored(f)]
    assert not kept, f".dockerignore leaves out files in git: {kept[:10]}"
    print(f".dockerignore: .git, build trees, deploy/.data, secrets, node_modules, console dist, test results "
          f"left out; all {len(files)} files in git kept: ok")
else:
    print(".dockerignore: .git, build trees, deploy/.data, secrets, node_modules, console dist, test results "
          "left out: ok")
# deploy/docker/Dockerfile: the packages each stage installs.
stages = open(f"{root}/deploy/docker/Dockerfile").read().split("\nFROM ")
def installs(stage):
    m = re.search(r"apt-get install -y --no-install-recommends ([^&]*)&&", stage.replace("\\\n", " "))
    return set(m.group(1).split()) if m else set()
build_pkgs = installs(next(st for st in stages if st.split("\n")[0].endswith(" AS build")))
runtime_pkgs = installs(stages[-1])
assert stages[-1].startswith("debian:bookworm-slim"), "runtime stage: debian:bookworm-slim"
listed = set(re.search(r"packages=\(([^)]*)\)", open(f"{root}/deploy/install-deps.sh").read()).group(1).split())
assert build_pkgs and build_pkgs <= listed, f"build stage installs what install-deps.sh does not: {sorted(build_pkgs - listed)}"
for tool in ("redis-server", "nodejs", "npm", "docker-compose", "systemd", "chromium", "libgtest-dev", "python3-grpcio"):
    assert tool not in build_pkgs, f"build stage: {tool} is not needed to build"
assert runtime_pkgs and not [p for p in runtime_pkgs if p.endswith("-dev")], f"runtime stage: {sorted(runtime_pkgs)}"
# Every shared library the built binaries load, by Debian package (less the
# sanitizers' runtimes of a test build and the slim base's libc). The test
# build links the project's own libraries shared (LABSHARE_SHARED_LIBS; the
# image's are static): their own needs count in their place.
def needed(path):
    return re.findall(r"NEEDED.*\[(.*)\]", subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout)
libs = {}  # resolved path -> the sonames that name it
for b in ["labshare", "labshare-inventory", "labshare-booking", "labshare-billing", "labshare-usage", "labshare-notify", "labshare-token",
          "labshare-demo-seed"]:
    path = f"{build}/bin/{b}"
    assert os.path.exists(path), f"{path}: build it first"
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    names, seen = needed(path), set()
    while names:
        n = names.pop()
        if n in seen:
            continue
        seen.add(n)
        assert n in resolved, f"{b}: ldd does not find {n}"
        if n.startswith("liblabshare_"):
            names += needed(resolved[n])
        else:
            libs.setdefault(os.path.realpath(resolved[n]), set()).add(n)
# dpkg -S, once: "package[:arch]: path" per file (merged /usr: the package
# may list /lib/... for /usr/lib/...).
queries = {q: real for real in libs for q in (real, real.replace("/usr/lib/", "/lib/", 1))}
owners = subprocess.run(["dpkg", "-S", *queries], capture_output=True, text=True).stdout
need = {}
for line in owners.splitlines():
    pkgs, file = line.split(": ", 1)
    if file in queries:
        for n in libs[queries[file]]:
            need.setdefault(pkgs.split(":")[0].split(",")[0], set()).add(n)
found = {n for ns in need.values() for n in ns}
assert found == {n for ns in libs.values() for n in ns}, \
    f"no package owns {sorted({n for ns in libs.values() for n in ns} - found)}"
base = {"libc6", "libgcc-s1"}
sanitizers = {p for p in need if re.fullmatch(r"lib(asan|ubsan|lsan|tsan)\d+", p)}
missing = sorted(set(need) - runtime_pkgs - base - sanitizers)
assert not missing, f"runtime stage lacks {missing}: { {p: sorted(need[p]) for p in missing} }"
print(f"Dockerfile: build stage {len(build_pkgs)} packages (all in install-deps.sh, no runtime or test tools); "
      f"runtime bookworm-slim, {len(runtime_pkgs)} packages, covering every library of the binaries "
      f"({', '.join(sorted(set(need) - base - sanitizers))}): ok")
PY

echo "== install-deps"
# A Node.js older than the console's engines (>= 20.19; Debian bookworm's is
# 18) stops deploy/install-deps.sh before apt, saying how to get one.
mkdir -p "$work/old-node"
for v in v18.20.4 v20.18.1; do
  printf '#!/bin/sh\necho %s\n' "$v" > "$work/old-node/node"
  chmod +x "$work/old-node/node"
  if PATH="$work/old-node:$PATH" bash "$root/deploy/install-deps.sh" > "$work/install-deps.out" 2>&1; then
    echo "install-deps.sh accepted Node $v"; exit 1
  fi
  grep -q "needs Node.js 20.19 or newer" "$work/install-deps.out" && grep -q "NodeSource" "$work/install-deps.out" \
    || { cat "$work/install-deps.out"; echo "install-deps.sh: no clear message for Node $v"; exit 1; }
done
grep -q "node:nodejs" "$root/deploy/install-deps.sh" && { echo "install-deps.sh installs Debian's nodejs (18 on bookworm)"; exit 1; }
echo "install-deps.sh: stops on Node 18 and 20.18 with how to get 20.19+, never installs Debian's nodejs: ok"

echo "== systemd"
mkdir -p "$work/units" "$work/bin"
for s in inventory booking billing usage notify; do ln -s "$build/bin/labshare-$s" "$work/bin/labshare-$s"; done
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
# The Redis settings for systemd hosts (deploy/systemd/redis-labshare.conf,
# included last from Debian's redis.conf): a real redis-server reads them.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$work/redis-host"
{ echo "port $port"; echo "bind 127.0.0.1"; echo "dir $work/redis-host"; echo "daemonize no"
  echo "include $work/redis-labshare.conf"; } > "$work/redis-host/redis.conf"
sed "s|^aclfile .*|aclfile $secrets/redis/users.acl|" "$root/deploy/systemd/redis-labshare.conf" > "$work/redis-labshare.conf"
redis-server "$work/redis-host/redis.conf" > "$work/redis-host/log" 2>&1 &
redis_pid=$!
as_admin() { REDISCLI_AUTH="$(cat "$secrets/redis/admin.password")" redis-cli --no-auth-warning --user admin -p "$port" "$@"; }
for _ in $(seq 100); do as_admin ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
got="$(for k in appendonly appendfsync save hash-max-listpack-value maxmemory-policy; do as_admin config get "$k" | tail -1; done | tr '\n' ' ')"
default_user="$(redis-cli -p "$port" ping 2>&1 || true)"
kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
[ "$got" = "yes always  1024 noeviction " ] || { cat "$work/redis-host/log"; echo "redis-labshare.conf: got '$got'"; exit 1; }
case "$default_user" in *NOAUTH*|*WRONGPASS*|*"no password"*|*"Authentication required"*) ;;
  *) echo "redis-labshare.conf: the default user answers: $default_user"; exit 1 ;; esac
echo "redis-labshare.conf: appendonly yes, appendfsync always, no RDB saves, hash-max-listpack-value 1024, noeviction, ACL users only: ok"
