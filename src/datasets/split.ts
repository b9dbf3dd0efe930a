import fs from 'node:fs';
import path from 'node:path';

export interface SplitResult {
  trainingFile: string;
  validationFile: string;
  training: number;
  validation: number;
}

/**
 * Splits a JSONL file into a training and a validation file, as the guide advises before training:
 * the examples are shuffled with the seed (the same seed gives the same split), a `fraction` of
 * them go to validation (at least one when there are two or more). Lines are copied byte for byte
 * and read back by offset, so a file of any size splits with memory for its offsets only.
 */
export function splitDataset(file: string, options: { fraction: number; seed: number; outDir?: string }): SplitResult {
  if (!(options.fraction > 0 && options.fraction < 1)) throw new Error(`--validation must be a fraction between 0 and 1, like 0.1; it is ${options.fraction}.`);
  const lines = lineOffsets(file);
  const count = lines.length / 2;
  if (count < 2) throw new Error(`${file} has ${count} example(s): at least 2 are needed to split.`);
  const nValidation = Math.min(count - 1, Math.max(1, Math.round(count * options.fraction)));
  const order = shuffled(count, options.seed);

  const parsed = path.parse(file);
  const outDir = options.outDir ?? parsed.dir;
  const trainingFile = path.join(outDir, `${parsed.name}.train.jsonl`);
  const validationFile = path.join(outDir, `${parsed.name}.valid.jsonl`);
  const input = fs.openSync(file, 'r');
  try {
    copyLines(input, lines, order.subarray(nValidation), trainingFile);
    copyLines(input, lines, order.subarray(0, nValidation), validationFile);
  } finally {
    fs.closeSync(input);
  }
  return { trainingFile, validationFile, training: count - nValidation, validation: nValidation };
}

/** [start, end) byte offsets of every non-blank line, flattened. */
function lineOffsets(file: string): Float64Array {
  let offsets = new Float64Array(2048);
  let used = 0;
  const fd = fs.openSync(file, 'r');
  const buffer = Buffer.alloc(1 << 20);
  let position = 0;
  let lineStart = 0;
  let blank = true;
  const end = (lineEnd: number) => {
    if (!blank) {
      if (used + 2 > offsets.length) {
        const grown = new Float64Array(offsets.length * 2);
        grown.set(offsets);
        offsets = grown;
      }
      offsets[used++] = lineStart;
      offsets[used++] = lineEnd;
    }
    blank = true;
  };
  try {
    for (let read = fs.readSync(fd, buffer, 0, buffer.length, position); read > 0; read = fs.readSync(fd, buffer, 0, buffer.length, position)) {
      // A byte-order mark belongs to the file, not to its first example (which may not stay first).
      if (position === 0 && buffer[0] === 0xef && buffer[1] === 0xbb && buffer[2] === 0xbf) lineStart = 3;
      for (let i = position === 0 ? lineStart : 0; i < read; i++) {
        const byte = buffer[i]!;
        if (byte === 0x0a) {
          end(position + i);
          lineStart = position + i + 1;
        } else if (byte !== 0x20 && byte !== 0x09 && byte !== 0x0d) blank = false;
      }
      position += read;
    }
    end(position);
  } finally {
    fs.closeSync(fd);
  }
  return offsets.subarray(0, used);
}

function copyLines(input: number, offsets: Float64Array, order: Uint32Array, target: string): void {
  const output = fs.openSync(target, 'w');
  try {
    for (const index of order) {
      const start = offsets[index * 2]!;
      let line = Buffer.alloc(offsets[index * 2 + 1]! - start);
      fs.readSync(input, line, 0, line.length, start);
      if (line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
      fs.writeSync(output, line);
      fs.writeSync(output, '\n');
    }
  } finally {
    fs.closeSync(output);
  }
}

/** A permutation of 0..n-1 by Fisher-Yates with mulberry32, a small PRNG whose sequence depends only on the seed. */
function shuffled(n: number, seed: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}
