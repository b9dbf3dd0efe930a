import { isUtf8 } from 'node:buffer';

/** One non-blank line of a JSONL file, decoded (`raw`: its bytes, valid until the next batch), or the reason it could not be. */
export type JsonlLine =
  | { line: number; text: string; bytes: number; raw: Buffer }
  | { line: number; invalidUtf8: { byteOffset: number }; bytes: number };

const NEWLINE = 0x0a;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Splits a byte stream into lines, numbered from 1 as an editor numbers them, in batches (one per
 * chunk read) so a large file costs one await per chunk rather than per line. Blank lines are
 * skipped but counted; `\r\n` endings and a UTF-8 byte-order mark at the start are tolerated.
 */
export async function* readJsonlLines(input: AsyncIterable<Buffer | Uint8Array>): AsyncGenerator<JsonlLine[]> {
  let lineNumber = 0;
  let carry: Buffer | null = null;
  let first = true;

  /** `valid`: the bytes are known to be UTF-8 already, so the faster decoder that does not check them is safe. */
  const decode = (raw: Buffer, valid: boolean): JsonlLine | null => {
    lineNumber++;
    let start = 0;
    let end = raw.length;
    if (first) {
      first = false;
      if (raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf) start = 3;
    }
    while (end > start && isSpace(raw[end - 1]!)) end--;
    while (start < end && isSpace(raw[start]!)) start++;
    if (start === end) return null;
    const bytes = raw.subarray(start, end);
    try {
      return { line: lineNumber, text: valid ? bytes.toString('utf8') : utf8.decode(bytes), bytes: bytes.length, raw: bytes };
    } catch {
      return { line: lineNumber, invalidUtf8: { byteOffset: firstInvalidUtf8Byte(bytes) + start }, bytes: bytes.length };
    }
  };

  for await (const chunk of input) {
    let buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (carry) {
      buffer = Buffer.concat([carry, buffer]);
      carry = null;
    }
    const batch: JsonlLine[] = [];
    // One check for all the chunk's whole lines (a newline byte is never inside a UTF-8 sequence);
    // lines are checked one by one only in a chunk where something is wrong.
    const valid = isUtf8(buffer.subarray(0, buffer.lastIndexOf(NEWLINE) + 1));
    let from = 0;
    for (let at = buffer.indexOf(NEWLINE, from); at >= 0; at = buffer.indexOf(NEWLINE, from)) {
      const line = decode(buffer.subarray(from, at), valid);
      if (line) batch.push(line);
      from = at + 1;
    }
    // Copy the tail so the chunk it came from can be collected.
    if (from < buffer.length) carry = Buffer.from(buffer.subarray(from));
    if (batch.length) yield batch;
  }
  if (carry) {
    const line = decode(carry, false);
    if (line) yield [line];
  }
}

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0d || byte === 0x0a;
}

/** Byte offset of the first byte that breaks UTF-8 (only called on lines that do). */
function firstInvalidUtf8Byte(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const byte = bytes[i]!;
    const length = byte < 0x80 ? 1 : byte >= 0xc2 && byte <= 0xdf ? 2 : byte >= 0xe0 && byte <= 0xef ? 3 : byte >= 0xf0 && byte <= 0xf4 ? 4 : 0;
    if (length === 0 || i + length > bytes.length) return i;
    for (let k = 1; k < length; k++) if ((bytes[i + k]! & 0xc0) !== 0x80) return i;
    if (length > 1 && !utf8Valid(bytes.subarray(i, i + length))) return i;
    i += length;
  }
  return i;
}

function utf8Valid(sequence: Uint8Array): boolean {
  try {
    utf8.decode(sequence);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether the first bytes of a file are JSON lines: the first line that is not blank opens a JSON
 * object. Content decides, not the name: the 2023 SDK named every upload `file`. A file whose first
 * line is longer than `head` is given the benefit of the doubt; the full check reads it all.
 */
export function startsLikeJsonLines(head: Buffer): boolean {
  const text = head.toString('utf8').replace(/^\uFEFF/, '');
  const first = text.split('\n').find((line) => line.trim() !== '');
  return first === undefined || first.trimStart().startsWith('{');
}
