// An instrument category ("electron-microscopy": a key the consortium's
// administrators type, Instrument.category in inventory.proto) as words in the
// person's language: the consortium's usual categories have their words here;
// any other reads as its key with spaces ("Surface analysis").
import { hasMessage, registerMessages, t } from './i18n';

registerMessages({
  en: {
    'category.cell-analysis': 'Cell analysis',
    'category.clean-room': 'Clean room',
    'category.deposition': 'Deposition',
    'category.electrical-test': 'Electrical testing',
    'category.electron-microscopy': 'Electron microscopy',
    'category.environmental-test': 'Environmental testing',
    'category.etching': 'Etching',
    'category.genomics': 'Genomics',
    'category.imaging': 'Imaging',
    'category.lithography': 'Lithography',
    'category.mass-spectrometry': 'Mass spectrometry',
    'category.materials-characterisation': 'Materials characterisation',
    'category.nmr': 'NMR',
    'category.optical-microscopy': 'Optical microscopy',
    'category.pilot-line': 'Pilot line',
    'category.precision-machining': 'Precision machining',
    'category.profilometry': 'Profilometry',
    'category.spectroscopy': 'Spectroscopy',
    'category.surface-analysis': 'Surface analysis',
  },
  'zh-CN': {
    'category.cell-analysis': '细胞分析',
    'category.clean-room': '洁净室',
    'category.deposition': '薄膜沉积',
    'category.electrical-test': '电学测试',
    'category.electron-microscopy': '电子显微镜',
    'category.environmental-test': '环境试验',
    'category.etching': '刻蚀',
    'category.genomics': '基因组学',
    'category.imaging': '成像',
    'category.lithography': '光刻',
    'category.mass-spectrometry': '质谱',
    'category.materials-characterisation': '材料表征',
    'category.nmr': '核磁共振',
    'category.optical-microscopy': '光学显微镜',
    'category.pilot-line': '中试线',
    'category.precision-machining': '精密加工',
    'category.profilometry': '形貌测量',
    'category.spectroscopy': '光谱分析',
    'category.surface-analysis': '表面分析',
  },
});

export function categoryLabel(key: string): string {
  if (!key) return '—';
  if (hasMessage(`category.${key}`)) return t(`category.${key}`);
  const words = key.replace(/[-_]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
