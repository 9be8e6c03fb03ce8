// Flags: defaults, sizes and durations, and the refusals at start.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configFromFlags, FlagError, parseBytes, parseDurationMs, parseFlags } from '../flags.js';

const base = ['--listen=127.0.0.1:8080', '--inventory=127.0.0.1:1', '--booking=127.0.0.1:2', '--billing=127.0.0.1:3', '--usage=127.0.0.1:4', '--notify=127.0.0.1:5'];
const cfg = (...extra: string[]) => configFromFlags(parseFlags([...base, ...extra]), '/web');
const refused = (message: RegExp, ...extra: string[]) =>
  assert.throws(() => cfg(...extra), (e: unknown) => e instanceof FlagError && message.test(e.message));

describe('flags', () => {
  it('has the documented defaults', () => {
    const c = cfg();
    assert.equal(c.publicUrl.href, 'http://127.0.0.1:8080/');
    assert.equal(c.bodyLimitBytes, 1024 * 1024);
    assert.equal(c.upstreamTimeoutMs, 15_000);
    assert.equal(c.sessionIdleTimeoutMs, 30 * 60_000);
    assert.equal(c.refreshMarginMs, 60_000);
    assert.deepEqual(c.rateLimit, { perSecond: 20, burst: 60 });
    assert.deepEqual(c.addressRateLimit, { perSecond: 500, burst: 1500 });
    assert.deepEqual(c.loginRateLimit, { perSecond: 2, burst: 40 });
    assert.equal(c.trustedProxies, undefined);
    assert.equal(c.maxSessions, 20_000);
    assert.equal(c.maxSessionsPerUser, 10);
    assert.equal(c.maxBodyBytesInFlight, 64 * 1024 * 1024);
    assert.equal(c.maxPendingBodiesPerAddress, 32);
    assert.equal(c.bodyReadTimeoutMs, 15_000);
    assert.equal(c.maxConnectionsPerAddress, 256);
    assert.equal(c.shutdownDrainMs, 5000);
    assert.equal(c.shutdownGraceMs, 10_000);
    assert.equal(c.accessLogSample, 1);
    assert.equal(c.webRoot, '/web');
    assert.equal(c.upstreams.notify, '127.0.0.1:5');
    assert.equal(c.oidc, undefined);
    assert.equal(c.https, undefined);
  });

  it('reads sizes and durations', () => {
    assert.equal(parseBytes('x', '512KiB'), 512 * 1024);
    assert.equal(parseBytes('x', '2MB'), 2 * 1024 * 1024);
    assert.equal(parseBytes('x', '4096'), 4096);
    assert.equal(parseDurationMs('x', '250ms'), 250);
    assert.equal(parseDurationMs('x', '1.5s'), 1500);
    assert.equal(parseDurationMs('x', '30m'), 1_800_000);
    assert.equal(parseDurationMs('x', '12h'), 43_200_000);
    assert.equal(parseDurationMs('x', '7'), 7000);
    assert.throws(() => parseDurationMs('x', '5 minutes'), FlagError);
    assert.throws(() => parseBytes('x', '1GB'), FlagError);
    const c = cfg('--body_limit=64KiB', '--upstream_timeout=2s', '--session_idle_timeout=1h', '--rate_limit_rps=0',
      '--oidc_issuer=https://id.example.org', '--oidc_ca_file=/dev/null');
    assert.equal(c.bodyLimitBytes, 65536);
    assert.equal(c.upstreamTimeoutMs, 2000);
    assert.equal(c.sessionIdleTimeoutMs, 3_600_000);
    assert.equal(c.rateLimit.perSecond, 0);
    assert.equal(c.oidc?.clientId, 'labshare-console');
    assert.equal(c.oidc?.issuer.href, 'https://id.example.org/');
  });

  it('refuses what cannot work or would be unsafe', () => {
    refused(/^PLAINTEXT_REFUSED: /, '--listen=0.0.0.0:8080');
    assert.throws(() => configFromFlags(parseFlags(['--listen=10.0.0.1:80', ...base.slice(1)]), '/web'), /PLAINTEXT_REFUSED/);
    refused(/--public_url: must be https:\/\//, '--public_url=http://console.example.org');
    refused(/--public_url: the console is served at the root/, '--public_url=https://example.org/console');
    refused(/--oidc_issuer: must be https:\/\//, '--oidc_issuer=http://id.example.org');
    refused(/--https_cert and --https_key go together/, '--https_cert=/dev/null');
    refused(/--tls_cert and --tls_key go together/, '--tls_cert=/dev/null');
    refused(/--tls_cert needs --tls_ca/, '--tls_cert=/dev/null', '--tls_key=/dev/null');
    refused(/--tls_ca: cannot read \/nonexistent/, '--tls_ca=/nonexistent');
    refused(/--body_limit: from 1KiB to 64MiB/, '--body_limit=100');
    refused(/--max_body_bytes_in_flight: from --body_limit \(2097152 bytes\) to 4096MiB/, '--body_limit=2MiB', '--max_body_bytes_in_flight=1MiB');
    refused(/--max_pending_bodies_per_address: want a number from 1 to/, '--max_pending_bodies_per_address=0');
    refused(/--body_read_timeout: at least 100 ms/, '--body_read_timeout=10ms');
    refused(/--max_sessions_per_user: want a number from 1 to 1000/, '--max_sessions_per_user=0');
    const c = cfg('--max_body_bytes_in_flight=256MiB', '--max_pending_bodies_per_address=8', '--body_read_timeout=5s',
      '--max_connections_per_address=0', '--max_sessions_per_user=3');
    assert.deepEqual([c.maxBodyBytesInFlight, c.maxPendingBodiesPerAddress, c.bodyReadTimeoutMs, c.maxConnectionsPerAddress, c.maxSessionsPerUser],
      [256 * 1024 * 1024, 8, 5000, 0, 3]);
    refused(/--access_log_sample: want a number from 0 to 1/, '--access_log_sample=2');
    assert.throws(() => parseFlags(['--nope=1']), /unknown flag --nope/);
    assert.throws(() => parseFlags(['listen']), /unknown argument "listen"/);
    assert.throws(() => configFromFlags(parseFlags(base.slice(1)), '/web'), /--listen is required/);
    refused(/--booking: want HOST:PORT/, '--booking=nowhere');
    refused(/--notify: want HOST:PORT/, '--notify=nowhere');
    assert.throws(() => configFromFlags(parseFlags(base.filter((f) => !f.startsWith('--notify='))), '/web'), /--notify is required/);
    assert.throws(() => configFromFlags(parseFlags([...base, '--notify=10.0.0.9:50057']), '/web'), /PLAINTEXT_REFUSED: --notify=10\.0\.0\.9:50057 is not loopback/);
  });
});
