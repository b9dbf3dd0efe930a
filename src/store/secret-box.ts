import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { writePrivateFile } from '../files/durable.js';

const SEALED = 'aes-256-gcm:';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Secrets kept in the database (webhook signing secrets) are sealed with AES-256-GCM under a key
 * in the home folder (`secret-key`, mode 0600, beside `api-key`): a copy of the database alone,
 * a backup or a PostgreSQL dump, does not give them away. Each is bound to the row it belongs to,
 * so a sealed value copied onto another row does not open.
 */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** The home's key, made on first use. */
  static async load(keyFile: string): Promise<SecretBox> {
    if (!fs.existsSync(keyFile)) await writePrivateFile(keyFile, `${randomBytes(KEY_BYTES).toString('base64')}\n`);
    const key = Buffer.from(fs.readFileSync(keyFile, 'utf8').trim(), 'base64');
    if (key.length !== KEY_BYTES) throw new Error(`${keyFile} does not hold a ${KEY_BYTES}-byte key in base64`);
    return new SecretBox(key);
  }

  seal(secret: string, rowId: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv).setAAD(Buffer.from(rowId));
    const sealed = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
    return SEALED + Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64');
  }

  /** The secret; a value stored before secrets were sealed is returned as it is. */
  open(stored: string, rowId: string): string {
    if (!SecretBox.isSealed(stored)) return stored;
    const bytes = Buffer.from(stored.slice(SEALED.length), 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.key, bytes.subarray(0, IV_BYTES)).setAAD(Buffer.from(rowId));
    decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
  }

  static isSealed(stored: string): boolean {
    return stored.startsWith(SEALED);
  }
}
