/** Summary of a per-example quantity, as the guide's script prints it (with true percentiles). */
export interface Distribution {
  count: number;
  min: number;
  max: number;
  mean: number;
  median: number;
  p5: number;
  p95: number;
  /** Round-edged bins from below `min` to `max`, empty ones included, for drawing. */
  histogram: HistogramBin[];
}

/** Examples whose value lies from `from` to `to`, both included (the values are whole counts). */
export interface HistogramBin {
  from: number;
  to: number;
  count: number;
}

/** At most this many bins: enough for a shape, few enough to read on a phone. */
export const MAX_HISTOGRAM_BINS = 20;

/**
 * Per-example counts kept as a histogram (value -> how many examples), so memory grows with the
 * number of distinct lengths, not of examples, and the percentiles are still exact.
 */
export class Samples {
  private readonly counts = new Map<number, number>();
  private total = 0;
  private sum = 0;

  push(value: number): void {
    this.counts.set(value, (this.counts.get(value) ?? 0) + 1);
    this.total++;
    this.sum += value;
  }

  get count(): number {
    return this.total;
  }

  summary(): Distribution | null {
    if (this.total === 0) return null;
    const values = [...this.counts.keys()].sort((a, b) => a - b);
    // The value at each 0-based rank, walking the cumulative counts once per rank asked.
    const at = (rank: number) => {
      let seen = 0;
      for (const value of values) {
        seen += this.counts.get(value)!;
        if (rank < seen) return value;
      }
      return values[values.length - 1]!;
    };
    const quantile = (q: number) => {
      const rank = (this.total - 1) * q;
      const low = at(Math.floor(rank));
      return round(low + (at(Math.min(Math.floor(rank) + 1, this.total - 1)) - low) * (rank - Math.floor(rank)));
    };
    return {
      count: this.total,
      min: values[0]!,
      max: values[values.length - 1]!,
      mean: round(this.sum / this.total),
      median: quantile(0.5),
      p5: quantile(0.05),
      p95: quantile(0.95),
      histogram: this.histogram(values[0]!, values[values.length - 1]!),
    };
  }

  /** Bins of a round width (1, 2, 5 times a power of ten) starting at a multiple of it, so edges read as plain numbers. */
  private histogram(min: number, max: number): HistogramBin[] {
    const low = Math.floor(min);
    const high = Math.floor(max);
    const roundWidth = (step: number) => [1, 2, 5][step % 3]! * 10 ** Math.floor(step / 3);
    let step = 0;
    while (Math.floor(high / roundWidth(step)) - Math.floor(low / roundWidth(step)) + 1 > MAX_HISTOGRAM_BINS) step++;
    const width = roundWidth(step);
    const start = Math.floor(low / width) * width;
    const bins = Array.from({ length: Math.floor((high - start) / width) + 1 }, (_, i) => ({
      from: start + i * width,
      to: start + (i + 1) * width - 1,
      count: 0,
    }));
    for (const [value, count] of this.counts) bins[Math.floor((Math.floor(value) - start) / width)]!.count += count;
    return bins;
  }
}

/** Linear interpolation between closest ranks (numpy's default), on sorted values. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  const rank = (sorted.length - 1) * q;
  const low = Math.floor(rank);
  const high = Math.min(low + 1, sorted.length - 1);
  return round(sorted[low]! + (sorted[high]! - sorted[low]!) * (rank - low));
}

const round = (value: number) => Math.round(value * 100) / 100;

/** OpenAI's public rule for `n_epochs: "auto"`: aim at 3 epochs, at least 100 and at most 25,000 examples seen. */
export function autoEpochs(nExamples: number): number {
  if (nExamples <= 0) return 1;
  if (nExamples * 3 < 100) return Math.min(25, Math.floor(100 / nExamples));
  if (nExamples * 3 > 25_000) return Math.max(1, Math.floor(25_000 / nExamples));
  return 3;
}

/** Dollars per 1,000 tokens. Defaults are the guide's: training 0.008, input 0.012, output 0.016. */
export interface Prices {
  training_per_1k: number;
  input_per_1k: number;
  output_per_1k: number;
}

export const DEFAULT_PRICES: Prices = { training_per_1k: 0.008, input_per_1k: 0.012, output_per_1k: 0.016 };

/** Billed tokens times epochs at the training price, to the cent's hundredth as OpenAI's dashboard shows. */
export function trainingCost(chargedTokens: number, prices: Prices): number {
  return Math.round((chargedTokens / 1000) * prices.training_per_1k * 10_000) / 10_000;
}
