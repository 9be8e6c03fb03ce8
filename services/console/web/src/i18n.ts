// Two languages, switchable; every screen registers its own strings.
//   registerMessages({ en: { 'bookings.title': 'My bookings' }, 'zh-CN': { 'bookings.title': '我的预约' } });
//   t('bookings.title'), t('calendar.free', { n: 3 })  ("{n} free")
import { signal } from './signal';

export type Lang = 'en' | 'zh-CN';
export const LANGS: Lang[] = ['en', 'zh-CN'];
type Dict = Record<string, string>;
const dicts: Record<Lang, Dict> = { en: {}, 'zh-CN': {} };

function initialLang(): Lang {
  const saved = localStorage.getItem('labshare.lang');
  if (saved === 'en' || saved === 'zh-CN') return saved;
  return navigator.language.toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}

export const lang = signal<Lang>(initialLang());
lang.subscribe((l) => {
  localStorage.setItem('labshare.lang', l);
  document.documentElement.lang = l;
});

export function registerMessages(m: Record<Lang, Dict>): void {
  Object.assign(dicts.en, m.en);
  Object.assign(dicts['zh-CN'], m['zh-CN']);
}

export function t(key: string, vars?: Record<string, string | number>): string {
  const s = dicts[lang.value][key] ?? dicts.en[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (_, k: string) => String(vars[k] ?? `{${k}}`)) : s;
}

export function hasMessage(key: string): boolean {
  return key in dicts[lang.value] || key in dicts.en;
}

// Words in a list, separated as the language writes them ("a, b"; "甲、乙").
export function listText(items: string[]): string {
  return items.join(lang.value === 'zh-CN' ? '、' : ', ');
}
