// labshare-console: the web console and the HTTP API gateway.
//   node dist/server/main.js --listen=127.0.0.1:8080 --public_url=http://127.0.0.1:8080 \
//     --inventory=HOST:PORT --booking=HOST:PORT --billing=HOST:PORT --usage=HOST:PORT --notify=HOST:PORT \
//     [--tls_ca=PEM --tls_cert=console.crt --tls_key=console.key] \
//     [--oidc_issuer=URL --oidc_client_id=labshare-console --oidc_ca_file=PEM] [--https_cert=PEM --https_key=PEM] ...
// (all flags: flags.ts USAGE, README.md). Prints "listening on URL" once it
// accepts connections; SIGTERM/SIGINT stop it gracefully.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configFromFlags, FlagError, parseFlags, USAGE } from './flags.js';
import { listen } from './gateway.js';
import { logLine } from './errors.js';

async function main(): Promise<void> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  let cfg;
  try {
    cfg = configFromFlags(parseFlags(process.argv.slice(2)), path.join(here, '..', 'web'));
  } catch (err) {
    if (err instanceof FlagError) {
      process.stderr.write(`labshare-console: ${err.message}\n${USAGE}\n`);
      process.exit(2);
    }
    throw err;
  }
  const running = await listen(cfg);
  const stop = (signal: string) => {
    logLine({ level: 'info', msg: 'stopping', signal });
    running.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Start discovery at the provider early; a failure is retried at sign-in.
  running.gateway.auth.oidc?.configuration().catch((err: unknown) => {
    logLine({ level: 'warn', msg: 'OpenID provider not reachable yet; retried at the next sign-in', error: String(err) });
  });
  logLine({ level: 'info', msg: 'listening', url: running.url, public_url: running.gateway.auth.publicOrigin, https: !!cfg.https });
  process.stdout.write(`listening on ${running.url}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`labshare-console: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
