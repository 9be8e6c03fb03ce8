// Browser tests: Debian's chromium (never a downloaded browser) against the
// real platform: run-local.sh's Redis, OpenID provider, four services and
// console gateway, after the demo month (deploy/demo-scenario.sh).
// LABSHARE_CONSOLE_URL + LABSHARE_E2E_DATA: use a platform already running
// (scripts/dev-platform.sh) instead of starting one.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: '.',
  testMatch: /.*\.spec\.ts$/,
  globalSetup: './global-setup.ts',
  outputDir: '../test-results/output',
  timeout: 90_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    browserName: 'chromium',
    viewport: { width: 1280, height: 860 },
    ignoreHTTPSErrors: true, // the provider's development CA
    locale: 'en-GB',
    timezoneId: 'Europe/Berlin', // not the facility's zone: times must still show in Shanghai time
    trace: 'off',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    },
  },
});
