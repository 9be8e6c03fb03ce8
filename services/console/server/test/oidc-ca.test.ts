// caFetch (--oidc_ca_file): the provider's private CA is trusted next to
// Node's public roots, not instead of them (the deployments pass the
// platform's CA whichever provider they sign in at).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { caFetch } from '../oidc.js';
import { makePki } from './harness.js';

async function serve(pki: string): Promise<https.Server> {
  const server = https.createServer({
    cert: fs.readFileSync(path.join(pki, 'oidc.crt')),
    key: fs.readFileSync(path.join(pki, 'oidc.key')),
  }, (_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end('{"issuer":"x"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

describe('caFetch: the OpenID provider behind a private CA', () => {
  let pki: string;
  let other: string;
  let ours: https.Server;
  let theirs: https.Server;
  before(async () => {
    pki = makePki();
    other = makePki();
    ours = await serve(pki);
    theirs = await serve(other);
  });
  after(() => {
    ours?.close();
    theirs?.close();
  });

  it('trusts Node\'s public roots as well as the given CA', () => {
    const Real = https.Agent;
    const seen: https.AgentOptions[] = [];
    (https as unknown as { Agent: unknown }).Agent = class extends Real {
      constructor(options?: https.AgentOptions) {
        super(options);
        if (options) seen.push(options);
      }
    };
    const ca = fs.readFileSync(path.join(pki, 'ca.crt'));
    try {
      caFetch(ca, 1000);
    } finally {
      (https as unknown as { Agent: unknown }).Agent = Real;
    }
    assert.equal(seen.length, 1);
    const trusted = ([] as unknown[]).concat(seen[0]!.ca).map((c) => String(c).trim());
    assert.ok(tls.rootCertificates.length > 0);
    for (const root of tls.rootCertificates) assert.ok(trusted.includes(root.trim()), 'a public root is not trusted');
    assert.ok(trusted.includes(ca.toString().trim()), 'the given CA is not trusted');
  });

  it('reaches a provider whose certificate the CA signed', async () => {
    const f = caFetch(fs.readFileSync(path.join(pki, 'ca.crt')), 5000);
    const port = (ours.address() as AddressInfo).port;
    const res = await f(`https://localhost:${port}/.well-known/openid-configuration`, { method: 'GET', headers: {}, body: undefined, redirect: 'manual' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { issuer: 'x' });
  });

  it('refuses a certificate signed by another private CA', async () => {
    const f = caFetch(fs.readFileSync(path.join(pki, 'ca.crt')), 5000);
    const port = (theirs.address() as AddressInfo).port;
    await assert.rejects(f(`https://localhost:${port}/.well-known/openid-configuration`, { method: 'GET', headers: {}, body: undefined, redirect: 'manual' }));
  });
});
