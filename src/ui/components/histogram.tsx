import type { Distribution, HistogramBin } from '../../datasets/stats.js';
import { count, counted } from '../format.js';

/** Axis labels that fit under the bars on a phone: about this many, whatever the number of bins. */
const MAX_AXIS_LABELS = 5;

const range = (bin: HistogramBin) => (bin.from === bin.to ? count(bin.from) : `${count(bin.from)}–${count(bin.to)}`);

/**
 * A distribution's histogram as plain bars in a grid: it takes the width it is given, stays sharp
 * at any size, and needs no chart library. The exact numbers are in each bar's tooltip, in the
 * summary line under it, and in the figure's label for screen readers.
 */
export function Histogram({ title, distribution, unit }: { title: string; distribution: Distribution; unit: string }) {
  const bins = distribution.histogram;
  const peak = Math.max(...bins.map((bin) => bin.count));
  // Single-value bins are labelled under their bar; wider ones at their left edge, every few bins.
  const every = Math.ceil(bins.length / MAX_AXIS_LABELS);
  const singleValues = bins.every((bin) => bin.from === bin.to);
  const described = bins
    .filter((bin) => bin.count > 0)
    .map((bin) => `${range(bin)} ${unit}: ${count(bin.count)}`)
    .join('; ');
  return (
    <figure class="histogram">
      <figcaption>{title}</figcaption>
      <div class="histogram-plot" role="img" aria-label={`${title}. Examples by ${unit}: ${described}.`}>
        <span class="histogram-peak" aria-hidden="true">
          {counted(peak, 'example')}
        </span>
        <div class="histogram-bars" style={{ gridTemplateColumns: `repeat(${bins.length}, minmax(0, 1fr))` }}>
          {bins.map((bin) => (
            <div
              key={bin.from}
              class="histogram-bar"
              style={{ height: `${(bin.count / peak) * 100}%` }}
              title={`${range(bin)} ${unit}: ${counted(bin.count, 'example')}`}
            />
          ))}
        </div>
        <div class={`histogram-axis${singleValues ? ' centered' : ''}`} style={{ gridTemplateColumns: `repeat(${bins.length}, minmax(0, 1fr))` }} aria-hidden="true">
          {bins.map((bin, index) => (
            <span key={bin.from}>{index % every === 0 ? count(bin.from) : ''}</span>
          ))}
        </div>
      </div>
      <p class="histogram-summary muted">
        min {count(distribution.min)} · median {count(distribution.median)} · mean {count(distribution.mean)} · p95 {count(distribution.p95)} · max{' '}
        {count(distribution.max)}
      </p>
    </figure>
  );
}
