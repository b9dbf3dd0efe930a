/** Summary of a per-example quantity, as the guide's script prints it (with true percentiles). */
export interface Distribution {
  count: number;
  min: number;
  max: number;
  mean: number;
  median: number;
  p5: number;
  p95: number;
}

/** Per-example values kept as 32-bit integers, so a million examples cost 4 MB per quantity. */
export class Samples {
  private values = new Uint32Array(1024);
  private length = 0;

  push(value: number): void {
    if (this.length === this.values.length) {
      const grown = new Uint32Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = value;
  }

  get count(): number {
    return this.length;
  }

  summary(): Distribution | null {
    if (this.length === 0) return null;
    const sorted = this.values.slice(0, this.length).sort();
    let sum = 0;
    for (const value of sorted) sum += value;
    return {
      count: sorted.length,
      min: sorted[0]!,
      max: sorted[sorted.length - 1]!,
      mean: round(sum / sorted.length),
      median: percentile(sorted, 0.5),
      p5: percentile(sorted, 0.05),
      p95: percentile(sorted, 0.95),
    };
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
