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
  await signInAs(page, 'li-wei');
  await expect(page.getByTestId('who')).toContainText('Li Wei');
  await shot(page, 'home-lab-user');
});

test('after a route change focus is on the new page; a screen that fails to load offers a reload', async ({ page }) => {
  await signInAs(page, 'li-wei');
  await page.getByRole('navigation').getByRole('link', { name: 'My bookings' }).click();
  await expect(page).toHaveURL(/#\/lab\/bookings/);
  await expect(page.locator('main')).toBeFocused();
  // The screen's code cannot be fetched (the connection dropped): no endless "Loading…".
  await page.route('**/assets/instruments-*.js', (route) => route.abort('failed'));
  await page.getByRole('navigation').getByRole('link', { name: 'Find instruments' }).click();
  await expect(page.getByTestId('error')).toContainText('This page could not be loaded');
  await expect(page.getByRole('button', { name: 'Reload' })).toBeVisible();
});
