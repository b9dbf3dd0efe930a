import fs from 'node:fs';
import path from 'node:path';

type NpyType = 'int32' | 'uint8' | 'int64';
const DESCR: Record<NpyType, string> = { int32: '<i4', uint8: '|u1', int64: '<i8' };

/** A 1-D .npy file (format version 1.0): magic, header dict padded to 64 bytes, little-endian data. */
export function writeNpy(file: string, type: NpyType, values: number[]): void {
  let header = `{'descr': '${DESCR[type]}', 'fortran_order': False, 'shape': (${values.length},), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix.writeUInt8(1, 6);
  prefix.writeUInt8(0, 7);
  prefix.writeUInt16LE(header.length, 8);
  let data: Buffer;
  if (type === 'int32') data = Buffer.from(new Int32Array(values).buffer);
  else if (type === 'uint8') data = Buffer.from(new Uint8Array(values).buffer);
  else data = Buffer.from(new BigInt64Array(values.map(BigInt)).buffer);
  fs.writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]));
}

/** The engine's training arrays (design.md) for tokenized examples. */
export function writeTrainingArrays(dir: string, examples: { ids: number[]; mask: number[] }[]): void {
  fs.mkdirSync(dir, { recursive: true });
  const offsets = [0];
  for (const example of examples) offsets.push(offsets[offsets.length - 1]! + example.ids.length);
  writeNpy(path.join(dir, 'input_ids.npy'), 'int32', examples.flatMap((e) => e.ids));
  writeNpy(path.join(dir, 'loss_mask.npy'), 'uint8', examples.flatMap((e) => e.mask));
  writeNpy(path.join(dir, 'offsets.npy'), 'int64', offsets);
}
