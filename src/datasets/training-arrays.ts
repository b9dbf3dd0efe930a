import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes design.md's training arrays as NumPy `.npy` files, streamed: `input_ids.npy` (int32, all
 * examples concatenated), `loss_mask.npy` (uint8, 1 where the token is trained) and `offsets.npy`
 * (int64, n_examples + 1). The shape goes in a fixed-size header that is filled in at the end, so
 * a file of any size is written with small, constant buffers.
 */
export class TrainingArraysWriter {
  private readonly ids = new Int32Array(CHUNK);
  private readonly mask = new Uint8Array(CHUNK);
  private readonly offsets = new BigInt64Array(CHUNK);
  private filled = 0;
  private offsetsFilled = 0;
  private examples = 0;
  private tokens = 0;

  private constructor(
    private readonly dir: string,
    private readonly files: { ids: fs.FileHandle; mask: fs.FileHandle; offsets: fs.FileHandle },
  ) {}

  static async create(dir: string): Promise<TrainingArraysWriter> {
    await fs.mkdir(dir, { recursive: true });
    const open = (name: string) => fs.open(path.join(dir, name), 'w');
    const files = { ids: await open('input_ids.npy'), mask: await open('loss_mask.npy'), offsets: await open('offsets.npy') };
    for (const file of Object.values(files)) await file.write(Buffer.alloc(HEADER_BYTES));
    const writer = new TrainingArraysWriter(dir, files);
    writer.offsets[writer.offsetsFilled++] = 0n;
    return writer;
  }

  async add(ids: readonly number[], mask: readonly number[]): Promise<void> {
    for (let i = 0; i < ids.length; i++) {
      if (this.filled === CHUNK) await this.flushTokens();
      this.ids[this.filled] = ids[i]!;
      this.mask[this.filled] = mask[i]!;
      this.filled++;
    }
    this.tokens += ids.length;
    this.examples++;
    if (this.offsetsFilled === CHUNK) await this.flushOffsets();
    this.offsets[this.offsetsFilled++] = BigInt(this.tokens);
  }

  /** Completes the headers and syncs everything to disk. */
  async finish(): Promise<{ examples: number; tokens: number }> {
    await this.flushTokens();
    await this.flushOffsets();
    await this.files.ids.write(npyHeader('<i4', this.tokens), 0, HEADER_BYTES, 0);
    await this.files.mask.write(npyHeader('|u1', this.tokens), 0, HEADER_BYTES, 0);
    await this.files.offsets.write(npyHeader('<i8', this.examples + 1), 0, HEADER_BYTES, 0);
    for (const file of Object.values(this.files)) {
      await file.sync();
      await file.close();
    }
    return { examples: this.examples, tokens: this.tokens };
  }

  /** Closes and removes what was written (the files turned out not to train). */
  async discard(): Promise<void> {
    await Promise.allSettled(Object.values(this.files).map((file) => file.close()));
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  private async flushTokens(): Promise<void> {
    if (this.filled === 0) return;
    await this.files.ids.write(new Uint8Array(this.ids.buffer, 0, this.filled * 4));
    await this.files.mask.write(this.mask.subarray(0, this.filled));
    this.filled = 0;
  }

  private async flushOffsets(): Promise<void> {
    if (this.offsetsFilled === 0) return;
    await this.files.offsets.write(new Uint8Array(this.offsets.buffer, 0, this.offsetsFilled * 8));
    this.offsetsFilled = 0;
  }
}

const CHUNK = 256 * 1024;
/** NumPy format 1.0 header, padded to a fixed size (a multiple of 64, as the format asks). */
const HEADER_BYTES = 128;

function npyHeader(descr: string, length: number): Buffer {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${length},), }`;
  const header = Buffer.alloc(HEADER_BYTES, 0x20);
  Buffer.from([0x93]).copy(header, 0);
  header.write('NUMPY', 1, 'latin1');
  header[6] = 1;
  header[7] = 0;
  header.writeUInt16LE(HEADER_BYTES - 10, 8);
  header.write(dict, 10, 'latin1');
  header[HEADER_BYTES - 1] = 0x0a;
  return header;
}
