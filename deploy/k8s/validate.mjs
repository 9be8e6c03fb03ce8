// Validates rendered Kubernetes manifests (YAML on stdin, several documents)
// against the Kubernetes API schemas shipped by the npm package
// kubernetes-models, offline. Prints one line per object; exits 1 if any
// object is invalid or of an unknown kind. Run it from a directory where
// kubernetes-models and js-yaml are installed (ES modules resolve from the
// script's own directory), e.g. as tests/deploy/validate_deploy.sh does:
//   cp deploy/k8s/validate.mjs $DIR && kubectl kustomize deploy/k8s/overlays/demo | node $DIR/validate.mjs
import { readFileSync } from 'node:fs';
import yaml from 'js-yaml';

const input = readFileSync(0, 'utf8');
let failed = false;
let count = 0;
for (const doc of yaml.loadAll(input)) {
  if (!doc) continue;
  // kustomize folds long Secret values over lines; the API server's base64
  // decoder (Go) skips the newlines, the schema's "byte" format does not.
  if (doc.kind === 'Secret' && doc.data) {
    for (const k of Object.keys(doc.data)) doc.data[k] = doc.data[k].replace(/\s+/g, '');
  }
  const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : ['', doc.apiVersion];
  const modulePath = group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
  const ns = doc.metadata?.namespace ? `${doc.metadata.namespace}/` : '';
  const id = `${doc.kind} ${ns}${doc.metadata?.name}`;
  let Model;
  try {
    Model = (await import(`${modulePath}/${doc.kind}`))[doc.kind];
  } catch {
    Model = undefined;
  }
  if (!Model) {
    console.log(`UNKNOWN ${doc.apiVersion} ${id}`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${doc.apiVersion} ${id}`);
    count++;
  } catch (e) {
    console.log(`INVALID ${doc.apiVersion} ${id}: ${e.message}`);
    failed = true;
  }
}
console.log(failed ? 'kubernetes manifests: INVALID' : `kubernetes manifests: ${count} valid`);
process.exit(failed ? 1 : 0);
