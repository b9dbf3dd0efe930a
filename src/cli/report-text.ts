import path from 'node:path';
import type { DatasetReport, TokenCounts } from '../datasets/doctor.js';
import type { Location } from '../datasets/findings.js';

/** How many findings of one category the text report lists (the JSON report keeps more). */
const LISTED = 5;

const number = (value: number) => value.toLocaleString('en-US');
const where = (location: Location) =>
  [
    location.line === null ? null : `line ${location.line}`,
    location.message_index === null ? null : `message ${location.message_index}`,
    location.field === null ? null : `field ${location.field}`,
  ]
    .filter(Boolean)
    .join(', ');

const FORMATS = { chat: 'chat', prompt_completion: 'prompt/completion', preference: 'preference' } as const;

/** The doctor's report for a person at a terminal. */
export function renderReport(report: DatasetReport, options: { file: string; validationFile?: string; color: boolean }): string {
  const out: string[] = [];
  out.push(...fileSection(report, path.basename(options.file)));
  if (report.validation && options.validationFile) {
    out.push('', ...fileSection(report.validation, path.basename(options.validationFile)));
  }
  out.push('');
  const model = report.billing_tokenizer;
  if (Object.keys(report.token_counts).length === 0) {
    out.push('Tokens not counted (--no-tokens): no billing tokens or cost worked out.');
  } else {
    out.push(
      `Epochs: ${report.n_epochs} · billing tokens: ${number(report.billing_tokens)} (${model}, each example counted up to the context of ${number(report.context)}) · charged: ${number(report.charged_tokens)}`,
    );
    out.push(`Estimated cost: $${report.estimated_cost_usd.toFixed(2)} at $${report.prices.training_per_1k} per 1K training tokens`);
  }
  if (report.shown_examples.length) out.push('', ...shownExamples(report, options.color));
  out.push('', report.can_train ? 'The file can train.' : 'The file cannot train: fix the errors above.');
  return out.join('\n');
}

function fileSection(report: DatasetReport, name: string): string[] {
  const out: string[] = [];
  const format = report.format ? `${FORMATS[report.format]} format` : 'format unknown';
  out.push(`${name} (${report.role}): ${format}, ${number(report.n_examples)} example${report.n_examples === 1 ? '' : 's'}`);
  out.push(...findingsSection('Errors', report.errors, report.error_counts));
  out.push(...findingsSection('Warnings', report.warnings, report.warning_counts));
  out.push(...screeningSection(report));
  const tokenizers = Object.keys(report.token_counts);
  if (Object.values(report.token_counts).some((counts) => counts.distributions.total_tokens)) {
    out.push('', 'Per example                  min      p5  median    mean     p95     max');
    const messages = report.token_counts[tokenizers[0]!]!.distributions.messages;
    if (messages) out.push(row('messages', messages));
    for (const name of tokenizers) {
      const counts = report.token_counts[name]!;
      if (counts.distributions.total_tokens) out.push(row(`tokens (${name})`, counts.distributions.total_tokens));
      if (counts.distributions.assistant_tokens) out.push(row(`trained (${name})`, counts.distributions.assistant_tokens));
    }
    out.push('', `Totals: ${tokenizers.map((name) => totals(name, report.token_counts[name]!)).join('; ')}`);
  }
  return out;
}

function row(label: string, d: { min: number; p5: number; median: number; mean: number; p95: number; max: number }): string {
  const cell = (value: number) => number(Math.round(value * 10) / 10).padStart(7);
  return `  ${label.padEnd(25)}${[d.min, d.p5, d.median, d.mean, d.p95, d.max].map(cell).join(' ')}`;
}

const totals = (name: string, counts: TokenCounts) => `${number(counts.total)} tokens, ${number(counts.trained)} trained (${name})`;

function findingsSection(
  title: string,
  findings: ReadonlyArray<Location & { category: string; message: string }>,
  counts: Partial<Record<string, number>>,
): string[] {
  const entries = Object.entries(counts) as Array<[string, number]>;
  if (entries.length === 0) return [];
  const out = ['', `${title} (${number(entries.reduce((sum, [, n]) => sum + n, 0))})`];
  for (const [category, count] of entries) {
    out.push(`  ${category} (${number(count)})`);
    const listed = findings.filter((finding) => finding.category === category).slice(0, LISTED);
    for (const finding of listed) {
      const location = where(finding);
      out.push(`    ${location ? `${location}: ` : ''}${finding.message}`);
    }
    if (count > listed.length) out.push(`    … and ${number(count - listed.length)} more`);
  }
  return out;
}

function screeningSection(report: DatasetReport): string[] {
  const { screening } = report;
  const entries = Object.entries(screening.counts) as Array<[string, number]>;
  if (entries.length === 0) return ['', 'Screening: nothing found.'];
  const out = ['', `Screening (${entries.map(([category, n]) => `${category}: ${number(n)}`).join(', ')})`];
  for (const finding of screening.findings.slice(0, LISTED * 2)) {
    out.push(`  ${where(finding)}: ${finding.category} (${finding.action}) ${finding.excerpt}`);
  }
  if (screening.message) out.push(`  ${screening.message}`);
  return out;
}

const GREEN = '\u001b[32m';
const DIM = '\u001b[2m';
const RESET = '\u001b[0m';

/** The first examples as the model sees them; what it learns to say is green on a terminal, in [[ ]] elsewhere. */
function shownExamples(report: DatasetReport, color: boolean): string[] {
  const out = [`What the model is trained on (${report.billing_tokenizer}; ${color ? 'trained tokens in green' : 'trained tokens in [[ ]]'}):`];
  for (const example of report.shown_examples) {
    const text = example.segments
      .map(({ text, trained }) => (trained ? (color ? `${GREEN}${text}${RESET}` : `[[${text}]]`) : color ? `${DIM}${text}${RESET}` : text))
      .join('');
    out.push('', `── line ${example.line} ──`, text);
  }
  return out;
}
