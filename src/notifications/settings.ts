import os from 'node:os';
import { readHomeConfig } from '../config.js';

/** The `smtp` section of `<home>/config.json`: where job e-mails are sent through. */
export interface SmtpSettings {
  host: string;
  port: number;
  /** true: TLS from the start (port 465); false: plain, upgraded with STARTTLS when the server offers it. */
  secure: boolean;
  auth: { user: string; pass: string } | null;
  /** The From header, e.g. `"tunelab <tunelab@example.com>"`. */
  from: string;
}

/**
 * Reads the `smtp` section of `<home>/config.json`, null when there is none (no e-mail is sent):
 * `{"smtp": {"host": "smtp.example.com", "port": 587, "secure": false,
 *   "auth": {"user": "...", "pass": "..."}, "from": "tunelab <tunelab@example.com>"}}`.
 * A section that is there but wrong is an error naming the field.
 */
export function loadSmtpSettings(home: string): SmtpSettings | null {
  return readHomeConfig(home, (config) => parseSmtp(config.smtp), null);
}

const KEYS = ['host', 'port', 'secure', 'auth', 'from'];

function parseSmtp(section: unknown): SmtpSettings | null {
  if (section === undefined || section === null) return null;
  if (typeof section !== 'object' || Array.isArray(section)) throw new Error('smtp must be an object');
  const s = section as Record<string, unknown>;
  for (const key of Object.keys(s)) if (!KEYS.includes(key)) throw new Error(`smtp.${key} is not an SMTP setting (${KEYS.join(', ')})`);
  if (typeof s.host !== 'string' || s.host === '') throw new Error('smtp.host must be a host name');
  const secure = s.secure ?? false;
  if (typeof secure !== 'boolean') throw new Error('smtp.secure must be true or false');
  const port = s.port ?? (secure ? 465 : 587);
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error('smtp.port must be a port number');
  let auth: SmtpSettings['auth'] = null;
  if (s.auth !== undefined && s.auth !== null) {
    const a = s.auth as Record<string, unknown>;
    if (typeof a !== 'object' || typeof a.user !== 'string' || typeof a.pass !== 'string') {
      throw new Error('smtp.auth must be {"user": "...", "pass": "..."}');
    }
    auth = { user: a.user, pass: a.pass };
  }
  const from = s.from ?? `tunelab <tunelab@${os.hostname()}>`;
  if (typeof from !== 'string' || from === '') throw new Error('smtp.from must be an address, e.g. "tunelab <tunelab@example.com>"');
  return { host: s.host, port, secure, auth, from };
}
