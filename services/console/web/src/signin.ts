// Why a sign-in failed: the gateway sends the person back to
// "/#/?signin_error=CODE" (services/console/README.md lists the codes); the
// welcome page says it as a sentence. Reasons that inventory answered
// (USER_NOT_REGISTERED, USER_DISABLED, ...) use the sentences of reasons.ts.
import { hasMessage, registerMessages, t } from './i18n';

registerMessages({
  en: {
    'signin.error.ACCESS_DENIED': 'Sign-in was cancelled at the identity provider.',
    'signin.error.PROVIDER_ERROR': 'The identity provider reported an error. Please try again.',
    'signin.error.PROVIDER_UNAVAILABLE': 'The identity provider cannot be reached right now. Please try again shortly.',
    'signin.error.SIGN_IN_FAILED': 'Sign-in could not be completed: the answer from the identity provider did not check out. Please sign in again.',
    'signin.error.SIGN_IN_EXPIRED': 'This sign-in took too long or was started in another window. Please sign in again.',
    'signin.error.SERVICE_UNAVAILABLE': 'The platform cannot be reached right now. Please try again shortly.',
    'signin.error.INVALID_RETURN_TO': 'Sign-in was asked to return to a page that is not part of this console. Please sign in from here.',
    'signin.error.SESSIONS_FULL': 'The console cannot take more people signed in at the moment. Please try again later; if this persists, tell the platform operator.',
    'signin.error.other': 'Sign-in failed. Please try again.',
  },
  'zh-CN': {
    'signin.error.ACCESS_DENIED': '已在身份提供方取消登录。',
    'signin.error.PROVIDER_ERROR': '身份提供方返回错误，请重试。',
    'signin.error.PROVIDER_UNAVAILABLE': '暂时无法连接身份提供方，请稍后再试。',
    'signin.error.SIGN_IN_FAILED': '登录未能完成：身份提供方的应答未通过校验，请重新登录。',
    'signin.error.SIGN_IN_EXPIRED': '本次登录耗时过长或是在其他窗口发起的，请重新登录。',
    'signin.error.SERVICE_UNAVAILABLE': '平台暂时无法访问，请稍后再试。',
    'signin.error.INVALID_RETURN_TO': '登录请求要返回的页面不属于本控制台，请在此处重新登录。',
    'signin.error.SESSIONS_FULL': '控制台当前无法容纳更多登录用户，请稍后再试；如持续出现，请联系平台运维人员。',
    'signin.error.other': '登录失败，请重试。',
  },
});

// The sentence for the sign-in error named in the current hash, or "".
export function signInErrorSentence(hash: string): string {
  const q = hash.indexOf('?');
  const code = q < 0 ? null : new URLSearchParams(hash.slice(q + 1)).get('signin_error');
  if (!code) return '';
  if (hasMessage(`signin.error.${code}`)) return t(`signin.error.${code}`);
  if (hasMessage(`reason.${code}`)) return t(`reason.${code}`);
  return t('signin.error.other');
}
