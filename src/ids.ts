import { randomFillSync } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

// Random bytes are drawn from the system in 4 KiB batches: one call per id costs more than the id.
const pool = Buffer.alloc(4096);
let used = pool.length;

function randomByte(): number {
  if (used === pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  return pool[used++]!;
}

/** Random base62 text; 24 characters carry about 143 bits, as unguessable as OpenAI's ids. */
export function randomToken(length = 24): string {
  let out = '';
  while (out.length < length) {
    const byte = randomByte();
    // 248 is the largest multiple of 62 below 256: rejecting bytes above it keeps every character equally likely.
    if (byte < 248) out += ALPHABET[byte % 62];
  }
  return out;
}

export const newId = (prefix: 'file-' | 'ftjob-' | 'ftevent-' | 'ftckpt_' | 'org-' | 'key_' | 'req_' | 'chatcmpl-' | 'cmpl-' | 'pull_' | 'call_' | 'resp_' | 'msg_' | 'fc_' | 'export-') =>
  prefix + randomToken();

export const unixSeconds = (date = Date.now()) => Math.floor(date / 1000);
