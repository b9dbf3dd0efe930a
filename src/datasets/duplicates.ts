import { createHash } from 'node:crypto';

/**
 * Remembers each example by a 64-bit digest in an open-addressing table of typed arrays (12 bytes
 * a slot: the digest's two halves and the line), so a file of millions of examples is checked for
 * exact duplicates in tens of megabytes rather than the hundreds a Map of them would take.
 */
export class DuplicateFinder {
  private low = new Uint32Array(1 << 16);
  private high = new Uint32Array(1 << 16);
  /** 0 marks an empty slot: lines are numbered from 1. */
  private lines = new Uint32Array(1 << 16);
  private used = 0;

  /** The line of an earlier identical example, or null (and this one is remembered). */
  check(bytes: Uint8Array, line: number): number | null {
    const digest = createHash('sha1').update(bytes).digest();
    const low = digest.readUInt32LE(0);
    const high = digest.readUInt32LE(4);
    const slot = this.find(low, high);
    if (this.lines[slot] !== 0) return this.lines[slot]!;
    this.put(slot, low, high, line);
    // Linear probing stays short up to 7/8 full; growing later keeps millions of examples near 100 MB.
    if (++this.used * 8 > this.lines.length * 7) this.grow();
    return null;
  }

  /** The slot holding this digest, or the empty slot where it belongs. */
  private find(low: number, high: number): number {
    const mask = this.lines.length - 1;
    let slot = low & mask;
    while (this.lines[slot] !== 0 && (this.low[slot] !== low || this.high[slot] !== high)) slot = (slot + 1) & mask;
    return slot;
  }

  private put(slot: number, low: number, high: number, line: number): void {
    this.low[slot] = low;
    this.high[slot] = high;
    this.lines[slot] = line;
  }

  private grow(): void {
    const old = { low: this.low, high: this.high, lines: this.lines };
    const size = old.lines.length * 2;
    [this.low, this.high, this.lines] = [new Uint32Array(size), new Uint32Array(size), new Uint32Array(size)];
    for (let i = 0; i < old.lines.length; i++) {
      if (old.lines[i] !== 0) this.put(this.find(old.low[i]!, old.high[i]!), old.low[i]!, old.high[i]!, old.lines[i]!);
    }
  }
}
