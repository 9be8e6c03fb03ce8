// Sign-in at the consortium's OpenID Connect provider with openid-client:
// the authorization code flow with PKCE (S256), state and nonce, as a public
// client (no secret). The provider's TLS certificate may be signed by a
// private CA (--oidc_ca_file): every request to the provider (discovery,
// key set, token endpoint) then goes through a fetch that trusts that CA and
// nothing else changes.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import * as client from 'openid-client';

export interface OidcOptions {
  issuer: URL;
  clientId: string;
  caFile?: string | undefined;
  redirectUri: string;
  timeoutMs?: number;
}

// A fetch for openid-client over node:https that trusts the given CA as well
// as Node's public roots (an agent's `ca` replaces the roots: with the
// private CA alone, a provider with a publicly trusted certificate would fail
// discovery). Only what the library sends: a method, headers, a
// string/URLSearchParams body, no redirects followed.
export function caFetch(ca: Buffer, timeoutMs: number): client.CustomFetch {
  const agent = new https.Agent({ ca: [...tls.rootCertificates, ca], keepAlive: true, maxSockets: 16 });
  return (url, options) =>
    new Promise<Response>((resolve, reject) => {
      const u = new URL(url);
      const body = options.body === undefined || options.body === null ? undefined
        : typeof options.body === 'string' ? options.body
        : options.body instanceof URLSearchParams ? options.body.toString()
        : undefined;
      if (options.body !== undefined && options.body !== null && body === undefined) {
        reject(new TypeError('caFetch: unsupported request body'));
        return;
      }
      const headers: Record<string, string> = { ...options.headers };
      if (body !== undefined) {
        if (options.body instanceof URLSearchParams && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
          headers['content-type'] = 'application/x-www-form-urlencoded;charset=UTF-8';
        }
        headers['content-length'] = String(Buffer.byteLength(body));
      }
      const lib = u.protocol === 'https:' ? https : http;
      const req = lib.request(u, {
        method: options.method,
        headers,
        ...(u.protocol === 'https:' ? { agent } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        timeout: timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 1024 * 1024) req.destroy(new Error('the provider answered more than 1 MiB'));
          else chunks.push(c);
        });
        res.on('end', () => {
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (Array.isArray(v)) for (const x of v) h.append(k, x);
            else if (v !== undefined) h.set(k, v);
          }
          const status = res.statusCode ?? 502;
          const noBody = status === 204 || status === 304 || options.method === 'HEAD';
          resolve(new Response(noBody ? null : Buffer.concat(chunks), { status, statusText: res.statusMessage ?? '', headers: h }));
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer from ${u.origin} within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
}

export class Oidc {
  private config: Promise<client.Configuration> | undefined;

  constructor(private readonly opts: OidcOptions) {}

  // Discovery once; a failure is not cached (the provider may start later).
  configuration(): Promise<client.Configuration> {
    if (!this.config) {
      const timeoutMs = this.opts.timeoutMs ?? 10_000;
      // openid-client 6 does not check the signature of an ID token from
      // the token endpoint (TLS to that endpoint vouches for it here);
      // inventory verifies it against the provider's key set at
      // ExchangeToken before anyone is signed in. (enableNonRepudiationChecks
      // would add a key-set fetch to every sign-in that can fail on its own:
      // one sign-in in a CI run of 2026-12-07 failed with PROVIDER_UNAVAILABLE
      // with it, so it is not used.)
      const execute = this.opts.issuer.protocol === 'http:' ? [client.allowInsecureRequests] : [];
      const options: client.DiscoveryRequestOptions = {
        execute,
        timeout: Math.ceil(timeoutMs / 1000),
        ...(this.opts.caFile ? { [client.customFetch]: caFetch(fs.readFileSync(this.opts.caFile), timeoutMs) } : {}),
      };
      this.config = client.discovery(this.opts.issuer, this.opts.clientId, undefined, client.None(), options);
      this.config.catch(() => {
        this.config = undefined;
      });
    }
    return this.config;
  }

  async authorizationUrl(p: { state: string; nonce: string; codeVerifier: string }): Promise<URL> {
    const config = await this.configuration();
    return client.buildAuthorizationUrl(config, {
      redirect_uri: this.opts.redirectUri,
      scope: 'openid email profile',
      response_type: 'code',
      state: p.state,
      nonce: p.nonce,
      code_challenge: await client.calculatePKCECodeChallenge(p.codeVerifier),
      code_challenge_method: 'S256',
    });
  }

  // The callback: checks state, exchanges the code with the verifier, checks
  // the ID token (signature against the provider's key set, issuer,
  // audience, nonce, expiry). Returns the raw ID token for ExchangeToken
  // (which verifies it again, against inventory's own copy of the key set).
  async finish(callbackUrl: URL, p: { state: string; nonce: string; codeVerifier: string }): Promise<string> {
    const config = await this.configuration();
    const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: p.codeVerifier,
      expectedState: p.state,
      expectedNonce: p.nonce,
      idTokenExpected: true,
    });
    if (!tokens.id_token) throw new Error('the provider answered no ID token');
    return tokens.id_token;
  }

  // Where to send the browser to end its session at the provider
  // (RP-initiated logout), or undefined when the provider offers none.
  // client_id and post_logout_redirect_uri only: no id_token_hint, since
  // this URL stays in the browser's history and an ID token is a credential
  // (the provider then asks to confirm, which it does anyway).
  async endSessionUrl(postLogoutRedirectUri: string): Promise<URL | undefined> {
    const config = await this.configuration();
    if (!config.serverMetadata().end_session_endpoint) return undefined;
    return client.buildEndSessionUrl(config, { client_id: this.opts.clientId, post_logout_redirect_uri: postLogoutRedirectUri });
  }
}

export const randomState = client.randomState;
export const randomNonce = client.randomNonce;
export const randomCodeVerifier = client.randomPKCECodeVerifier;
export { AuthorizationResponseError } from 'openid-client';
