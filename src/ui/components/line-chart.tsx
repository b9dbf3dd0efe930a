import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './line-chart.css';

export interface ChartSeries {
  label: string;
  /** One value per x; null where the series has none (a loss evaluated every few steps). */
  values: Array<number | null>;
  /** A CSS colour; `var(--name)` is looked up in the stylesheet, as a canvas knows no variables. */
  color: string;
  /** Drawn against the right-hand axis, for a quantity on another scale. */
  right?: boolean;
  /** Few points among many steps: drawn as dots joined across the gaps. */
  sparse?: boolean;
  digits?: number;
}

export interface LineChartProps {
  /** The chart's caption and accessible name. */
  title: string;
  x: number[];
  xLabel: string;
  /** Where the x axis ends even before the data gets there, so a growing curve fills a fixed frame. */
  xMax?: number;
  leftLabel: string;
  rightLabel?: string;
  /** A fixed range for the right axis (an accuracy's 0 to 1), rather than one fitted to the data. */
  rightRange?: [number, number];
  series: ChartSeries[];
  height?: number;
}

const cssColor = (element: Element, color: string) => {
  const variable = /^var\((--[\w-]+)\)$/.exec(color)?.[1];
  return variable ? getComputedStyle(element).getPropertyValue(variable).trim() : color;
};

const COMPACT_BELOW = 560;

/** Away from the cursor, the legend tells the latest values: where a running job has got to. */
const showLatest = (plot: uPlot) => {
  const points = plot.data[0].length;
  if (plot.cursor.idx === null && points > 0) plot.setLegend({ idx: points - 1 }, false);
};

const formatted = (value: number | null | undefined, digits = 4) => (value === null || value === undefined ? '—' : value.toFixed(digits));

/**
 * Lines over a shared x axis (steps, say), drawn with uPlot, as wide as its container. The plot is
 * built once per set of series and given new data in place, so a curve that grows while a job runs
 * keeps the reader's hidden series and cursor. The data is also a table, for those who cannot see it.
 */
export function LineChart({ title, x, xLabel, xMax, leftLabel, rightLabel, rightRange, series, height = 300 }: LineChartProps) {
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // Below this width the axes drop their titles (the legend names the series) to leave room for the lines.
  const [compact, setCompact] = useState(false);
  const latestXMax = useRef(xMax);
  latestXMax.current = xMax;
  const data: uPlot.AlignedData = [x, ...series.map((s) => s.values)];
  const empty = x.length === 0;
  // What the plot is built from; data alone changes in place.
  const shape = JSON.stringify([series.map((s) => [s.label, s.color, s.right, s.sparse, s.digits]), xLabel, leftLabel, rightLabel, rightRange, height, empty, compact]);

  useLayoutEffect(() => {
    const element = holder.current;
    if (!element || empty) return;
    const muted = cssColor(element, 'var(--muted)');
    const grid = { stroke: cssColor(element, 'var(--line)'), width: 1 };
    const axis = { stroke: muted, grid, ticks: grid, ...(compact ? { size: 40 } : {}) };
    const title = (label: string | undefined) => (compact ? {} : { label });
    const created = new uPlot(
      {
        width: element.clientWidth,
        height: compact ? Math.round(height * 0.75) : height,
        scales: {
          x: { time: false, range: (_, min, max) => [Math.min(min, 1), Math.max(max, latestXMax.current ?? max)] },
          ...(rightRange ? { right: { range: rightRange } } : {}),
        },
        axes: [
          { ...axis, ...title(xLabel), size: 36 },
          { ...axis, ...title(leftLabel), scale: 'left' },
          ...(rightLabel ? [{ ...axis, ...title(rightLabel), scale: 'right', side: 1, grid: { show: false } }] : []),
        ],
        series: [
          { label: xLabel },
          ...series.map((s) => {
            const stroke = cssColor(element, s.color);
            return {
              label: s.label,
              scale: s.right ? 'right' : 'left',
              stroke,
              width: 2,
              spanGaps: s.sparse,
              points: s.sparse ? { show: true, size: 6, fill: stroke } : { show: false },
              value: (_: uPlot, value: number | null) => formatted(value, s.digits),
            };
          }),
        ],
        legend: { live: true },
        hooks: { ready: [showLatest], setData: [showLatest], setCursor: [showLatest] },
      },
      data,
      element,
    );
    plot.current = created;
    const resized = new ResizeObserver(() => {
      const width = element.clientWidth;
      if (width === 0) return;
      if (width < COMPACT_BELOW !== compact) setCompact(width < COMPACT_BELOW);
      else if (width !== created.width) created.setSize({ width, height: created.height });
    });
    resized.observe(element);
    return () => {
      resized.disconnect();
      created.destroy();
      plot.current = null;
    };
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data);
  });

  return (
    <figure class="line-chart" data-points={x.length}>
      <figcaption>{title}</figcaption>
      {empty ? (
        <p class="muted">No points yet.</p>
      ) : (
        <div ref={holder} class="line-chart-plot" role="img" aria-label={`${title}: ${x.length} points; the table below holds them.`} />
      )}
      <DataTable x={x} xLabel={xLabel} series={series} />
    </figure>
  );
}

/** Rendered only while open: a long run has thousands of steps. */
function DataTable({ x, xLabel, series }: Pick<LineChartProps, 'x' | 'xLabel' | 'series'>) {
  const [open, setOpen] = useState(false);
  return (
    <details onToggle={(event) => setOpen(event.currentTarget.open)}>
      <summary>Show as table</summary>
      {open && (
        <div class="table-scroll line-chart-table">
          <table class="list">
            <thead>
              <tr>
                <th scope="col" class="number">
                  {xLabel}
                </th>
                {series.map((s) => (
                  <th key={s.label} scope="col" class="number">
                    {s.label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {x.map((value, row) => (
                <tr key={value}>
                  <th scope="row" class="number">
                    {value}
                  </th>
                  {series.map((s) => (
                    <td key={s.label} class="number">
                      {formatted(s.values[row], s.digits)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </details>
  );
}
