// The shell: sign-in page, languages, sign-out.
import { expect, test } from '@playwright/test';
import { consoleUrl, shot, signInAs } from './fixtures';

test('a visitor sees the sign-in page in English and in Chinese', async ({ page }) => {
  await page.goto(consoleUrl());
  await expect(page.getByRole('heading', { name: 'LabShare' })).toBeVisible();
  await shot(page, 'signed-out-en');
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByRole('button', { name: '登录' }).first()).toBeVisible();
  await shot(page, 'signed-out-zh');
});

test('a lab user signs in and sees who they are', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/', { strict: true });
  await expect(page.getByTestId('who')).toContainText('Li Wei');
  await shot(page, 'home-lab-user');
});

test('signing out ends the session at the provider too: Sign in asks for the password again', async ({ page }) => {
  test.skip(process.env.LABSHARE_E2E_AUTH === 'bearer', 'needs the real sign-in');
  const origin = new URL(consoleUrl()).origin;
  await signInAs(page, 'li-wei', '#/', { strict: true });
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  // The provider's sign-out page (RP-initiated logout), then back to the console.
  const yes = page.getByRole('button', { name: 'Yes, sign me out' });
  await expect(yes).toBeVisible();
  expect(new URL(page.url()).origin).not.toBe(origin);
  await shot(page, 'provider-sign-out');
  await yes.click();
  await page.waitForURL((u) => u.origin === origin);
  await expect(page.getByTestId('sign-in').first()).toBeVisible();
  const session = await page.request.get(`${origin}/auth/session`);
  expect(await session.json()).toEqual({ signedIn: false, roles: [] });
  // Sign in again: the provider's login page, not a silent sign-in.
  await page.getByTestId('sign-in').first().click();
  await expect(page.getByLabel('Email or username')).toBeVisible();
  expect(new URL(page.url()).origin).not.toBe(origin);
  await expect(page.getByTestId('who')).toHaveCount(0);
});

test('after a route change focus is on the new page; a screen that fails to load offers a reload', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/', { strict: true });
  await page.getByRole('navigation').getByRole('link', { name: 'My bookings' }).click();
  await expect(page).toHaveURL(/#\/lab\/bookings/);
  await expect(page.locator('main')).toBeFocused();
  // The screen's code cannot be fetched (the connection dropped): no endless "Loading…".
  await page.route('**/assets/instruments-*.js', (route) => route.abort('failed'));
  await page.getByRole('navigation').getByRole('link', { name: 'Find instruments' }).click();
  await expect(page.getByTestId('error')).toContainText('This page could not be loaded');
  await expect(page.getByRole('button', { name: 'Reload' })).toBeVisible();
});

test('at phone width the destinations open with the Menu button and fold again on the new page', async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await signInAs(page, 'li-wei', '#/');
  const nav = page.getByRole('navigation', { name: 'main' });
  const bookings = nav.getByRole('link', { name: 'My bookings' });
  await expect(bookings).toBeHidden();
  const menu = nav.getByRole('button', { name: 'Menu' });
  await expect(menu).toHaveAttribute('aria-expanded', 'false');
  await menu.click();
  await expect(menu).toHaveAttribute('aria-expanded', 'true');
  await shot(page, 'nav-phone-open');
  await bookings.click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('My bookings, leases and orders');
  await expect(bookings).toBeHidden();
  // The language and the session stay in reach without opening the menu.
  await expect(page.getByTestId('language')).toBeVisible();
  await expect(page.getByTestId('who')).toBeVisible();
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
});
