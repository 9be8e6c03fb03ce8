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
