#!/bin/bash
# Validates the deployment files offline:
# - deploy/docker-compose.yml with `docker-compose config`;
# - the kustomize output of deploy/k8s (base and the demo overlay) against
#   the Kubernetes API schemas of the npm package kubernetes-models;
# - deploy/systemd units with `systemd-analyze verify`, failing on any warning.
# usage: tests/deploy/validate_deploy.sh BUILD_DIR   (for the binaries the units start)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== docker-compose"
cp "$root/deploy/docker-compose.yml" "$work/"
echo "compose-validation-key-0123456789abcdef" > "$work/token.key"
docker-compose -f "$work/docker-compose.yml" config -q
echo "docker-compose.yml: valid"

echo "== kubernetes"
(cd "$work" && npm install --no-audit --no-fund --silent --no-save kubernetes-models@5 js-yaml@4 >/dev/null)
cp "$root/deploy/k8s/validate.mjs" "$work/"
kubectl kustomize "$root/deploy/k8s/overlays/demo" > "$work/demo.yaml"
node "$work/validate.mjs" < "$work/demo.yaml"
# The base alone (its Secret comes from the operator).
kubectl kustomize "$root/deploy/k8s/base" | node "$work/validate.mjs" | tail -1
# What the probes and security settings must be, on every workload.
python3 - "$work/demo.yaml" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
docs = text.split("\n---\n")
workloads = [d for d in docs if re.search(r"^kind: (Deployment|StatefulSet)$", d, re.M)]
assert len(workloads) == 5, len(workloads)
for d in workloads:
    name = re.search(r"^  name: (\S+)$", d, re.M).group(1)
    for needle in ["readOnlyRootFilesystem: true", "runAsNonRoot: true", "readinessProbe:", "livenessProbe:",
                   "limits:", "requests:"]:
        assert needle in d, f"{name}: missing {needle}"
    if "kind: Deployment" in d:
        assert "grpc:" in d, f"{name}: gRPC probes expected"
services = [d for d in docs if re.search(r"^kind: Service$", d, re.M)]
assert len(services) == 5 and all("clusterIP: None" in s for s in services), "headless Services expected"
print("workloads: probes, limits, non-root, read-only root filesystem: ok; Services headless: ok")
PY

echo "== systemd"
mkdir -p "$work/units" "$work/bin"
for s in inventory booking billing usage; do ln -s "$build/bin/labshare-$s" "$work/bin/labshare-$s"; done
for f in "$root"/deploy/systemd/*.service; do
  sed "s|/usr/local/bin/|$work/bin/|" "$f" > "$work/units/$(basename "$f")"
done
if ! systemd-analyze verify "$work"/units/*.service > "$work/verify.log" 2>&1 || [ -s "$work/verify.log" ]; then
  cat "$work/verify.log"
  echo "systemd units: warnings or errors"
  exit 1
fi
echo "systemd units: verified, no warnings"
