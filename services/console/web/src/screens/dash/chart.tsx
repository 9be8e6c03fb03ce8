// Apache ECharts, imported modularly (only the charts, components and the
// renderer the dashboard uses) and only from the dashboard's lazily loaded
// screens, so the console's first load stays small.
import { useEffect, useRef } from 'preact/hooks';
import * as echarts from 'echarts/core';
import { BarChart, HeatmapChart, LineChart, PieChart, ScatterChart } from 'echarts/charts';
import {
  AriaComponent, GridComponent, LegendComponent, MarkLineComponent, TooltipComponent, VisualMapComponent,
} from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';
import type { EChartsCoreOption } from 'echarts/core';

echarts.use([
  BarChart, LineChart, PieChart, HeatmapChart, ScatterChart,
  GridComponent, TooltipComponent, LegendComponent, MarkLineComponent, VisualMapComponent, AriaComponent,
  CanvasRenderer,
]);

export type ChartOption = EChartsCoreOption;

export const FONT = 'system-ui, "Noto Sans CJK SC", "PingFang SC", sans-serif';
export const COLORS = ['#1f5fbf', '#e07b00', '#1e7a3c', '#8e44ad', '#b3261e', '#00838f', '#6d4c41'];

// One chart. `label` names it for screen readers (role="img"); the numbers
// themselves are in the table next to it. data-rendered="true" once ECharts
// has finished drawing (tests and screenshots wait for it).
export function EChart({ option, height, label, testid }: { option: ChartOption; height: number; label: string; testid?: string }) {
  const ref = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts>();
  useEffect(() => {
    const el = ref.current!;
    const c = echarts.init(el, undefined, { renderer: 'canvas' });
    chart.current = c;
    c.on('finished', () => el.setAttribute('data-rendered', 'true'));
    const ro = new ResizeObserver(() => c.resize());
    ro.observe(el);
    return () => {
      ro.disconnect();
      c.dispose();
      chart.current = undefined;
    };
  }, []);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    ref.current?.setAttribute('data-rendered', 'false');
    c.setOption({
      color: COLORS,
      textStyle: { fontFamily: FONT },
      animationDuration: 300,
      aria: { enabled: false },
      ...option,
    }, true);
    c.resize();
  }, [option]);
  return <div ref={ref} class="dash-chart" style={{ height: `${height}px` }} role="img" aria-label={label} data-testid={testid ?? 'chart'} />;
}

// Phone width: shorter category labels, fewer ticks.
export function narrow(): boolean {
  return typeof window !== 'undefined' && window.innerWidth < 640;
}
