import fs from 'node:fs';
import { expect } from 'vitest';

/** Reads a NumPy .npy file as numpy.load would: the dtype and shape from its header, then the data. */
export function readNpy(file: string): { descr: string; shape: number[]; values: number[] } {
  const bytes = fs.readFileSync(file);
  expect(bytes.subarray(0, 6).toString('latin1')).toBe('\x93NUMPY');
  const headerLength = bytes.readUInt16LE(8);
  const header = bytes.subarray(10, 10 + headerLength).toString('latin1');
  const descr = /'descr': '([^']+)'/.exec(header)![1]!;
  const shape = /'shape': \(([^)]*)\)/.exec(header)![1]!.split(',').filter(Boolean).map(Number);
  const data = bytes.subarray(10 + headerLength);
  const array = { '<i4': Int32Array, '|u1': Uint8Array, '<i8': BigInt64Array }[descr]!;
  const typed = new array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  return { descr, shape, values: Array.from(typed as ArrayLike<number | bigint>, Number) };
}
