// The gateway's side of the platform: one gRPC transport per service, over
// mutual TLS (the console's certificate, the platform CA) unless the address
// is loopback and no certificate was given. Plaintext off loopback is refused,
// as in the C++ services (PLAINTEXT_REFUSED).
import fs from 'node:fs';
import type { Transport } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';

export interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

export function hostOf(address: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address);
  if (!m || !m[1]) throw new Error(`bad address "${address}": want host:port`);
  return m[1];
}

export function upstreamTransport(address: string, tls: TlsFiles): Transport {
  const host = hostOf(address);
  if (!tls.ca) {
    if (!isLoopbackHost(host)) {
      throw new Error(`PLAINTEXT_REFUSED: ${address} is not loopback; give --tls_ca (and the console's --tls_cert/--tls_key)`);
    }
    return createGrpcTransport({ baseUrl: `http://${address}` });
  }
  return createGrpcTransport({
    baseUrl: `https://${address}`,
    nodeOptions: {
      ca: fs.readFileSync(tls.ca),
      ...(tls.cert ? { cert: fs.readFileSync(tls.cert) } : {}),
      ...(tls.key ? { key: fs.readFileSync(tls.key) } : {}),
    },
  });
}
