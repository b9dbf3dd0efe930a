/**
 * Screening: what should not be trained into a model. Built-in detectors (e-mail addresses, phone
 * numbers, payment cards, PRC resident ID numbers, API keys, private keys), a configured term
 * blocklist, and optionally an external OpenAI-compatible `/v1/moderations` endpoint. Each category
 * warns or blocks; a blocking finding fails the job with `blockingMessage`.
 *
 * `scan` runs on every text of files up to 512 MB, so each detector is gated by a cheap substring
 * test, and every regex is linear (bounded repetitions, lookarounds instead of backtracking).
 */
import type { Location, ScreeningAction, ScreeningCategory, ScreeningFinding } from './findings.js';
import { SCREENING_CATEGORIES } from './findings.js';

export type DetectorCategory = Exclude<ScreeningCategory, 'moderation'>;

export interface ScreeningPolicy {
  actions: Record<DetectorCategory, ScreeningAction>;
  /** Terms matched case-insensitively as whole words where the term starts/ends with a word character (so CJK terms match anywhere). */
  blocklist: string[];
  moderation: { url: string; apiKey: string | null; model: string | null } | null;
}

const DETECTOR_CATEGORIES: readonly DetectorCategory[] = SCREENING_CATEGORIES.filter(
  (category): category is DetectorCategory => category !== 'moderation',
);

/** Defaults: api_key, private_key, payment_card, national_id block; email, phone warn; blocklist block (empty list). */
export const DEFAULT_SCREENING_POLICY: ScreeningPolicy = Object.freeze({
  actions: Object.freeze({
    email: 'warn',
    phone: 'warn',
    payment_card: 'block',
    national_id: 'block',
    api_key: 'block',
    private_key: 'block',
    blocklist: 'block',
  }) as Record<DetectorCategory, ScreeningAction>,
  blocklist: Object.freeze([]) as unknown as string[],
  moderation: null,
}) as ScreeningPolicy;

// ---------------------------------------------------------------------------------------------
// Configuration

const SECTION_KEYS = ['actions', 'blocklist', 'moderation_url', 'moderation_api_key', 'moderation_model'];

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalString(section: Record<string, unknown>, key: string): string | null {
  const value = section[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value.trim() === '') throw new Error(`screening.${key} must be a non-empty string`);
  return value;
}

/**
 * Reads the `screening` section of tunelab's config file (plain JSON: { actions?: {category:
 * "off"|"warn"|"block"}, blocklist?: string[], moderation_url?: string, moderation_api_key?: string,
 * moderation_model?: string }), filling defaults; throws an Error whose message names the bad field.
 */
export function parseScreeningPolicy(section: unknown): ScreeningPolicy {
  const actions = { ...DEFAULT_SCREENING_POLICY.actions };
  if (section === undefined || section === null) return { actions, blocklist: [], moderation: null };
  if (!isPlainObject(section)) throw new Error('screening must be an object');
  for (const key of Object.keys(section)) {
    if (!SECTION_KEYS.includes(key)) throw new Error(`screening.${key} is not a screening setting (${SECTION_KEYS.join(', ')})`);
  }

  if (section.actions !== undefined && section.actions !== null) {
    if (!isPlainObject(section.actions)) throw new Error('screening.actions must be an object of category: "off", "warn" or "block"');
    for (const [category, action] of Object.entries(section.actions)) {
      if (!(DETECTOR_CATEGORIES as readonly string[]).includes(category)) {
        throw new Error(`screening.actions.${category} is not a screening category (${DETECTOR_CATEGORIES.join(', ')})`);
      }
      if (action !== 'off' && action !== 'warn' && action !== 'block') {
        throw new Error(`screening.actions.${category} must be "off", "warn" or "block"`);
      }
      actions[category as DetectorCategory] = action;
    }
  }

  const blocklist: string[] = [];
  if (section.blocklist !== undefined && section.blocklist !== null) {
    if (!Array.isArray(section.blocklist)) throw new Error('screening.blocklist must be a list of strings');
    section.blocklist.forEach((term: unknown, index) => {
      if (typeof term !== 'string' || term.trim() === '') throw new Error(`screening.blocklist[${index}] must be a non-empty string`);
      blocklist.push(term.trim());
    });
  }

  const url = optionalString(section, 'moderation_url');
  const apiKey = optionalString(section, 'moderation_api_key');
  const model = optionalString(section, 'moderation_model');
  let moderation: ScreeningPolicy['moderation'] = null;
  if (url !== null) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`screening.moderation_url must be an http(s) URL, not ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new Error(`screening.moderation_url must be an http(s) URL, not ${JSON.stringify(url)}`);
    }
    moderation = { url, apiKey, model };
  } else if (apiKey !== null) {
    throw new Error('screening.moderation_api_key is set but screening.moderation_url is not');
  } else if (model !== null) {
    throw new Error('screening.moderation_model is set but screening.moderation_url is not');
  }
  return { actions, blocklist, moderation };
}

// ---------------------------------------------------------------------------------------------
// Detectors. Each returns the spans it matched; `scan` resolves overlaps by priority.

interface Match {
  category: DetectorCategory;
  start: number;
  end: number;
  excerpt: string;
}

const ELLIPSIS = '…';

// E-mail: found from each '@' outwards (linear, no regex backtracking over long runs).
const LOCAL_CHAR = /[A-Za-z0-9._%+\-]/;
const DOMAIN_CHAR = /[A-Za-z0-9.\-]/;
const DOMAIN_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const TLD = /^[A-Za-z]{2,24}$/;

/** File names such as `icon@2x.png` look like addresses; these "top-level domains" are file types. */
const FILE_EXTENSIONS = new Set(['png', 'jpg', 'jpeg', 'gif', 'svg', 'webp', 'bmp', 'ico', 'tif', 'tiff', 'pdf', 'heic', 'avif']);

function findEmails(text: string, out: Match[]): void {
  let at = text.indexOf('@');
  while (at !== -1) {
    let start = at;
    while (start > 0 && at - start <= 64 && LOCAL_CHAR.test(text[start - 1]!)) start--;
    // The run of address characters must end here, not be cut by the length limit.
    const bounded = start === 0 || !LOCAL_CHAR.test(text[start - 1]!);
    while (start < at && text[start] === '.') start++;
    let end = at + 1;
    while (end < text.length && end - at <= 255 && DOMAIN_CHAR.test(text[end]!)) end++;
    // A trailing dot or hyphen ends the sentence, not the address.
    while (end > at + 1 && (text[end - 1] === '.' || text[end - 1] === '-')) end--;
    const local = text.slice(start, at);
    const domain = text.slice(at + 1, end);
    const labels = domain.split('.');
    const tld = labels[labels.length - 1]!;
    const localOk = bounded && local.length > 0 && local.length <= 64 && !local.includes('..');
    const domainOk =
      labels.length >= 2 &&
      labels.every((label) => DOMAIN_LABEL.test(label)) &&
      TLD.test(tld) &&
      !FILE_EXTENSIONS.has(tld.toLowerCase()) &&
      (end >= text.length || !/[A-Za-z0-9_@]/.test(text[end]!));
    if (localOk && domainOk) {
      out.push({ category: 'email', start, end, excerpt: `${local[0]}${ELLIPSIS}@${domain}` });
      at = text.indexOf('@', end);
    } else {
      at = text.indexOf('@', at + 1);
    }
  }
}

const PRIVATE_KEY = /-----BEGIN (?:(?:RSA|EC|OPENSSH|DSA|ENCRYPTED) )?PRIVATE KEY-----/g;

function findPrivateKeys(text: string, out: Match[]): void {
  if (!text.includes('-----BEGIN')) return;
  for (const m of text.matchAll(PRIVATE_KEY)) {
    out.push({ category: 'private_key', start: m.index, end: m.index + m[0].length, excerpt: `${m[0]}${ELLIPSIS}` });
  }
}

interface KeyPattern {
  /** A literal every match contains, tested with `includes` before the regex runs. */
  gate: string;
  regex: RegExp;
  /** The part of the match that is the secret's fixed prefix (shown in the excerpt). */
  prefix: RegExp;
  accept?: (body: string) => boolean;
}

/**
 * OpenAI keys are random: a slug such as `sk-annual-report-for-2024` is not one. The body must mix
 * at least two of lowercase, uppercase and digits, and hold a run of 8 characters without `-`/`_`.
 */
function looksRandom(body: string): boolean {
  const classes = Number(/[a-z]/.test(body)) + Number(/[A-Z]/.test(body)) + Number(/[0-9]/.test(body));
  return classes >= 2 && /[A-Za-z0-9]{8}/.test(body);
}

const KEY_PATTERNS: KeyPattern[] = [
  {
    gate: 'sk-',
    regex: /(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}/g,
    prefix: /^sk-(?:proj-|svcacct-|admin-)?/,
    accept: looksRandom,
  },
  { gate: 'AKIA', regex: /(?<![A-Za-z0-9])AKIA[A-Z0-9]{16}(?![A-Za-z0-9])/g, prefix: /^AKIA/ },
  { gate: 'ASIA', regex: /(?<![A-Za-z0-9])ASIA[A-Z0-9]{16}(?![A-Za-z0-9])/g, prefix: /^ASIA/ },
  { gate: 'gh', regex: /(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])/g, prefix: /^gh[pousr]_/ },
  { gate: 'github_pat_', regex: /(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])/g, prefix: /^github_pat_/ },
  {
    gate: 'xox',
    regex: /(?<![A-Za-z0-9_-])xox[baprs]-[A-Za-z0-9-]{10,}/g,
    prefix: /^xox[baprs]-/,
    accept: (body) => /[0-9]/.test(body),
  },
  { gate: 'AIza', regex: /(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])/g, prefix: /^AIza/ },
];

function maskKey(key: string, prefix: string): string {
  const body = key.slice(prefix.length);
  return body.length >= 20 ? `${prefix}${body[0]}${ELLIPSIS}${body.slice(-4)}` : `${prefix}${ELLIPSIS}${body.slice(-2)}`;
}

function findApiKeys(text: string, out: Match[]): void {
  for (const pattern of KEY_PATTERNS) {
    if (!text.includes(pattern.gate)) continue;
    for (const m of text.matchAll(pattern.regex)) {
      const prefix = pattern.prefix.exec(m[0])![0];
      if (pattern.accept && !pattern.accept(m[0].slice(prefix.length))) continue;
      out.push({ category: 'api_key', start: m.index, end: m.index + m[0].length, excerpt: maskKey(m[0], prefix) });
    }
  }
}

// PRC resident identity numbers (GB 11643): 6-digit area, YYYYMMDD birth date, 3-digit sequence,
// ISO 7064 MOD 11-2 check character.
const PRC_ID = /(?<![A-Za-z0-9_])\d{17}[\dXx](?![A-Za-z0-9_])/g;
const PRC_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const PRC_ID_CHECK = '10X98765432';
const PRC_PROVINCES = new Set([
  11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64,
  65, 71, 81, 82, 83, 91,
]);

function plausibleBirthDate(yyyymmdd: string): boolean {
  const year = Number(yyyymmdd.slice(0, 4));
  const month = Number(yyyymmdd.slice(4, 6));
  const day = Number(yyyymmdd.slice(6, 8));
  if (year < 1900 || year > new Date().getUTCFullYear() || month < 1 || month > 12 || day < 1) return false;
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day > daysInMonth) return false;
  return Date.UTC(year, month - 1, day) <= Date.now();
}

/** Whether an 18-character string is a PRC resident ID number: province, birth date, check character. */
function isPrcResidentId(id: string): boolean {
  if (!/^\d{17}[\dXx]$/.test(id)) return false;
  if (!PRC_PROVINCES.has(Number(id.slice(0, 2)))) return false;
  if (!plausibleBirthDate(id.slice(6, 14))) return false;
  let sum = 0;
  for (let i = 0; i < 17; i++) sum += Number(id[i]) * PRC_ID_WEIGHTS[i]!;
  return PRC_ID_CHECK[sum % 11] === id[17]!.toUpperCase();
}

function findNationalIds(text: string, out: Match[]): void {
  for (const m of text.matchAll(PRC_ID)) {
    if (!isPrcResidentId(m[0])) continue;
    out.push({ category: 'national_id', start: m.index, end: m.index + 18, excerpt: `${m[0].slice(0, 3)}${ELLIPSIS}${m[0].slice(-2)}` });
  }
}

// Payment cards: 13-19 digits starting 2-6 (the issuers below), contiguous or in groups of 3+ split
// by one kind of separator (a space or a dash).
const CARD = /(?<![A-Za-z0-9_+.,\/-])[2-6]\d{2,18}(?:([ -])\d{3,18}(?:\1\d{3,18})*)?(?![A-Za-z0-9_]|[.,\/-]\d)/g;

function luhn(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

function knownIssuer(digits: string): boolean {
  const two = Number(digits.slice(0, 2));
  const four = Number(digits.slice(0, 4));
  const n = digits.length;
  if (digits[0] === '4') return n === 13 || n === 16 || n === 19; // Visa
  if (two >= 51 && two <= 55) return n === 16; // Mastercard
  if (four >= 2221 && four <= 2720) return n === 16; // Mastercard 2-series
  if (two === 34 || two === 37) return n === 15; // American Express
  if (four === 6011 || two === 65) return n >= 16; // Discover
  if (two === 62) return n >= 16; // UnionPay
  if (four >= 3528 && four <= 3589) return n >= 16; // JCB
  return false;
}

function findCards(text: string, out: Match[]): void {
  for (const m of text.matchAll(CARD)) {
    const raw = m[0];
    const separator = m[1];
    const digits = separator === undefined ? raw : raw.replaceAll(separator, '');
    if (digits.length < 13 || digits.length > 19) continue;
    if (!knownIssuer(digits) || !luhn(digits)) continue;
    // An 18-digit PRC ID number that happens to pass Luhn is an ID, not a card.
    if (separator === undefined && digits.length === 18 && isPrcResidentId(digits)) continue;
    const sep = separator ?? ' ';
    out.push({
      category: 'payment_card',
      start: m.index,
      end: m.index + raw.length,
      excerpt: `${digits.slice(0, 4)}${sep}${ELLIPSIS}${ELLIPSIS}${sep}${digits.slice(-4)}`,
    });
  }
}

// Phones. International: +<country><number>, 8-15 digits with spaces, dashes or parentheses.
const PHONE_INTERNATIONAL = /(?<![A-Za-z0-9_+])\+[1-9](?:[ \-()]{0,2}\d){7,14}(?![0-9])/g;
// North American: (555) 123-4567, 555-123-4567, optionally +1 / 1.
const PHONE_NANP = /(?<![A-Za-z0-9_+\-])(?:\+?1[ .-]?)?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d-)\d{3}-\d{4}(?![A-Za-z0-9_]|-\d)/g;
// Mainland China mobile: 1[3-9]xxxxxxxxx, optionally +86 / 0086 / 86, contiguous or 3-4-4.
const PHONE_CN = /(?<![A-Za-z0-9_+\-])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:\d{8}|([ -])\d{4}\1\d{4})(?![A-Za-z0-9_]|[.,\-]\d)/g;

function phoneExcerpt(raw: string): string {
  const digits = raw.replace(/\D/g, '');
  return `${raw.startsWith('+') ? '+' : ''}${digits.slice(0, 3)}${ELLIPSIS}${digits.slice(-2)}`;
}

function findPhones(text: string, out: Match[]): void {
  if (text.includes('+')) {
    for (const m of text.matchAll(PHONE_INTERNATIONAL)) {
      const raw = m[0].replace(/[ \-(]+$/, '');
      const digits = raw.replace(/\D/g, '').length;
      if (digits < 8 || digits > 15) continue;
      if (!balancedParentheses(raw)) continue;
      out.push({ category: 'phone', start: m.index, end: m.index + raw.length, excerpt: phoneExcerpt(raw) });
    }
  }
  if (text.includes('-')) {
    for (const m of text.matchAll(PHONE_NANP)) {
      out.push({ category: 'phone', start: m.index, end: m.index + m[0].length, excerpt: phoneExcerpt(m[0]) });
    }
  }
  for (const m of text.matchAll(PHONE_CN)) {
    const digits = m[0].replace(/\D/g, '');
    // 15000000000 is a number, not a phone: the subscriber part must not be one repeated digit.
    if (/^(\d)\1{7}$/.test(digits.slice(-8))) continue;
    out.push({ category: 'phone', start: m.index, end: m.index + m[0].length, excerpt: phoneExcerpt(m[0]) });
  }
}

function balancedParentheses(raw: string): boolean {
  let depth = 0;
  for (const ch of raw) {
    if (ch === '(') depth++;
    else if (ch === ')' && --depth < 0) return false;
  }
  return depth === 0;
}

// Blocklist. A word character is a letter, digit or underscore of a script written with spaces
// between words: Han, kana, Thai, ... terms have no word boundaries and match anywhere.
const WORD_CHAR =
  '[[\\p{L}\\p{N}\\p{M}_]--[\\p{sc=Han}\\p{sc=Hiragana}\\p{sc=Katakana}\\p{sc=Thai}\\p{sc=Lao}\\p{sc=Khmer}\\p{sc=Myanmar}]]';
const WORD_CHAR_RE = new RegExp(`^${WORD_CHAR}`, 'v');

function escapeRegExp(term: string): string {
  // Only syntax characters may be escaped outside a class in a `v` regex.
  return term.replace(/[\\^$.*+?()[\]{}|\/]/g, '\\$&');
}

function compileBlocklist(terms: string[]): RegExp | null {
  const unique = [...new Set(terms.map((term) => term.trim()).filter((term) => term.length > 0))];
  if (unique.length === 0) return null;
  // Longer terms first, so "category" is found where "cat" is also a term.
  unique.sort((a, b) => b.length - a.length);
  const alternatives = unique.map((term) => {
    const first = String.fromCodePoint(term.codePointAt(0)!);
    const last = [...term].at(-1)!;
    const before = WORD_CHAR_RE.test(first) ? `(?<!${WORD_CHAR})` : '';
    const after = WORD_CHAR_RE.test(last) ? `(?!${WORD_CHAR})` : '';
    return `${before}${escapeRegExp(term)}${after}`;
  });
  return new RegExp(alternatives.join('|'), 'giv');
}

// ---------------------------------------------------------------------------------------------
// The screener

/** When two detectors match overlapping text, the more specific wins. */
const PRIORITY: Record<DetectorCategory, number> = {
  private_key: 0,
  api_key: 1,
  email: 2,
  national_id: 3,
  payment_card: 4,
  phone: 5,
  blocklist: 6,
};

const HAS_DIGIT = /\d/;

interface Moderated {
  where: Location;
}

interface ModerationResult {
  flagged?: unknown;
  categories?: unknown;
}

export class Screener {
  private readonly actions: Record<DetectorCategory, ScreeningAction>;
  private readonly blocklist: RegExp | null;
  private readonly moderation: ScreeningPolicy['moderation'];
  private readonly fetch: typeof fetch;
  private readonly batchSize: number;
  private batchTexts: string[] = [];
  private batchWhere: Moderated[] = [];
  /** Batches are sent one at a time, as they fill, so a large file is not held in memory. */
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private moderationFindings: ScreeningFinding[] = [];
  private batchesInFlight = 0;

  constructor(policy: ScreeningPolicy, options: { fetch?: typeof fetch; batchSize?: number } = {}) {
    this.actions = { ...DEFAULT_SCREENING_POLICY.actions, ...policy.actions };
    this.blocklist = this.actions.blocklist === 'off' ? null : compileBlocklist(policy.blocklist);
    this.moderation = policy.moderation;
    this.fetch = options.fetch ?? globalThis.fetch;
    const batchSize = options.batchSize ?? 32;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error('batchSize must be a positive integer');
    this.batchSize = batchSize;
  }

  /** Runs the built-in detectors and the blocklist on one text; categories set to "off" are skipped. */
  scan(text: string, where: Location): ScreeningFinding[] {
    const on = this.actions;
    const matches: Match[] = [];
    if (on.private_key !== 'off') findPrivateKeys(text, matches);
    if (on.api_key !== 'off') findApiKeys(text, matches);
    if (on.email !== 'off' && text.includes('@')) findEmails(text, matches);
    if (HAS_DIGIT.test(text)) {
      if (on.national_id !== 'off') findNationalIds(text, matches);
      if (on.payment_card !== 'off') findCards(text, matches);
      if (on.phone !== 'off') findPhones(text, matches);
    }
    if (this.blocklist !== null) {
      for (const m of text.matchAll(this.blocklist)) {
        matches.push({ category: 'blocklist', start: m.index, end: m.index + m[0].length, excerpt: m[0] });
      }
    }
    if (matches.length === 0) return [];

    // Overlapping matches (a phone number inside an address, ...): the more specific detector wins.
    // The blocklist is about words, not secrets: its matches never hide, nor are hidden by, others.
    matches.sort((a, b) => a.start - b.start || PRIORITY[a.category] - PRIORITY[b.category]);
    const kept: Match[] = [];
    let last: Match | null = null;
    for (const match of matches) {
      if (match.category === 'blocklist') {
        kept.push(match);
      } else if (last === null || match.start >= last.end) {
        kept.push(match);
        last = match;
      } else if (PRIORITY[match.category] < PRIORITY[last.category]) {
        kept[kept.lastIndexOf(last)] = match;
        last = match;
      }
    }
    return kept.map((match) => ({
      line: where.line,
      message_index: where.message_index,
      field: where.field,
      category: match.category,
      action: on[match.category] as Exclude<ScreeningAction, 'off'>,
      excerpt: match.excerpt,
    }));
  }

  /** Queues one text for the external moderation endpoint; no-op when none is configured. */
  addForModeration(text: string, where: Location): void {
    if (this.moderation === null || text.trim() === '') return;
    this.batchTexts.push(text);
    this.batchWhere.push({ where: { line: where.line, message_index: where.message_index, field: where.field } });
    if (this.batchTexts.length >= this.batchSize) this.sendBatch();
  }

  /**
   * Resolves once at most one batch is waiting for the endpoint: the reader awaits it between
   * examples, so a slow endpoint slows the reading instead of piling the file up in memory.
   */
  async moderationCaughtUp(): Promise<void> {
    while (this.batchesInFlight > 1) await this.chain;
  }

  /** Sends what is queued and returns one "moderation" finding per flagged text; throws when the endpoint fails. */
  async flushModeration(): Promise<ScreeningFinding[]> {
    if (this.moderation === null) return [];
    this.sendBatch();
    await this.chain;
    const failure = this.failure;
    const findings = this.moderationFindings;
    this.failure = null;
    this.moderationFindings = [];
    if (failure) throw failure;
    return findings.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  }

  private sendBatch(): void {
    if (this.batchTexts.length === 0) return;
    const texts = this.batchTexts;
    const where = this.batchWhere;
    this.batchTexts = [];
    this.batchWhere = [];
    this.batchesInFlight++;
    this.chain = this.chain.then(async () => {
      if (this.failure) return;
      try {
        const results = await this.moderate(texts);
        results.forEach((result, i) => {
          if (result.flagged !== true) return;
          const categories = isPlainObject(result.categories)
            ? Object.entries(result.categories)
                .filter(([, flagged]) => flagged === true)
                .map(([name]) => name)
            : [];
          this.moderationFindings.push({
            ...where[i]!.where,
            category: 'moderation',
            action: 'block',
            excerpt: categories.length > 0 ? categories.join(', ') : 'flagged',
          });
        });
      } catch (error) {
        this.failure = error instanceof Error ? error : new Error(String(error));
      }
    }).finally(() => {
      this.batchesInFlight--;
    });
  }

  private async moderate(input: string[]): Promise<ModerationResult[]> {
    const { url, apiKey, model } = this.moderation!;
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (apiKey !== null) headers.authorization = `Bearer ${apiKey}`;
    const body = JSON.stringify(model !== null ? { input, model } : { input });
    let response: Response;
    try {
      response = await this.fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(120_000) });
    } catch (error) {
      const reason = error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error);
      throw new Error(`The moderation endpoint ${url} could not be reached: ${reason}`);
    }
    const text = await response.text().catch(() => '');
    if (!response.ok) {
      const detail = text.trim().slice(0, 200);
      throw new Error(`The moderation endpoint ${url} answered HTTP ${response.status}${detail ? `: ${detail}` : ''}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`The moderation endpoint ${url} answered HTTP ${response.status} with a body that is not JSON`);
    }
    const results = isPlainObject(parsed) ? parsed.results : undefined;
    if (!Array.isArray(results) || results.length !== input.length || !results.every(isPlainObject)) {
      throw new Error(
        `The moderation endpoint ${url} answered without one result per input (sent ${input.length}, expected {"results": [...]})`,
      );
    }
    return results as ModerationResult[];
  }
}

const MAX_LINES_NAMED = 20;

/**
 * "This file failed moderation safety checks (payment_card, api_key). Flagged lines: 4, 13" for the
 * blocking findings: lines sorted and unique, the first 20 then "and N more". Null when nothing blocks.
 */
export function blockingMessage(findings: ScreeningFinding[]): string | null {
  const blocking = findings.filter((finding) => finding.action === 'block');
  if (blocking.length === 0) return null;
  const categories = SCREENING_CATEGORIES.filter((category) => blocking.some((finding) => finding.category === category));
  const lines = [...new Set(blocking.map((finding) => finding.line).filter((line): line is number => line !== null))].sort(
    (a, b) => a - b,
  );
  let sentence = `This file failed moderation safety checks (${categories.join(', ')}).`;
  if (lines.length > 0) {
    const named = lines.slice(0, MAX_LINES_NAMED).join(', ');
    const more = lines.length > MAX_LINES_NAMED ? ` and ${lines.length - MAX_LINES_NAMED} more` : '';
    sentence += ` Flagged lines: ${named}${more}`;
  }
  return sentence;
}
