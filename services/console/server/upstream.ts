// The gateway's side of the platform: one gRPC transport per service, over
// mutual TLS (the console's certificate, the platform CA) unless the address
// is loopback and no certificate was given. Plaintext off loopback is refused,
// as in the C++ services (PLAINTEXT_REFUSED), already by flags.ts (exit 2
// before listening) and again here.
//
// Each transport keeps one HTTP/2 session (Http2SessionManager) to its
// service and multiplexes every call on it; the session is opened on the
// first call, pinged while calls are open (a dead peer is found within
// pingInterval + pingTimeout) and closed by close() at shutdown. A session
// that is lost or was sent a GOAWAY is replaced on the next call; the calls
// a lost session had under way fail at once (node resets their streams
// with CANCEL: errors.ts fromUpstream answers UNAVAILABLE unless the caller
// canceled).
import fs from 'node:fs';
import type { Transport } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';

export interface TlsFiles {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export function hostOf(address: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address);
  if (!m || !m[1]) throw new Error(`bad address "${address}": want host:port`);
  return m[1];
}

export interface Upstream {
  transport: Transport;
  close(): void;
}

export function upstreamTransport(address: string, tls: TlsFiles): Upstream {
  const host = hostOf(address);
  let baseUrl: string;
  let nodeOptions: Record<string, unknown> = {};
  if (!tls.ca) {
    if (!isLoopbackHost(host)) {
      throw new Error(`PLAINTEXT_REFUSED: ${address} is not loopback; give --tls_ca (and the console's --tls_cert/--tls_key)`);
    }
    baseUrl = `http://${address}`;
  } else {
    baseUrl = `https://${address}`;
    nodeOptions = {
      ca: fs.readFileSync(tls.ca),
      ...(tls.cert ? { cert: fs.readFileSync(tls.cert) } : {}),
      ...(tls.key ? { key: fs.readFileSync(tls.key) } : {}),
    };
  }
  const sessionManager = new Http2SessionManager(
    baseUrl,
    { pingIntervalMs: 30_000, pingTimeoutMs: 10_000, idleConnectionTimeoutMs: 15 * 60_000 },
    nodeOptions,
  );
  const transport = createGrpcTransport({ baseUrl, sessionManager });
  return { transport, close: () => sessionManager.abort() };
}
