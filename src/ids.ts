import { randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Random base62 text; 24 characters carry about 143 bits, as unguessable as OpenAI's ids. */
export function randomToken(length = 24): string {
  // 248 is the largest multiple of 62 below 256: rejecting bytes above it keeps every character equally likely.
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

export const newId = (prefix: 'file-' | 'ftjob-' | 'ftevent-' | 'ftckpt_' | 'org-' | 'key_' | 'req_') =>
  prefix + randomToken();

export const unixSeconds = (date = Date.now()) => Math.floor(date / 1000);
