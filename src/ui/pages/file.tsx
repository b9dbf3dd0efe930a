import { useState } from 'preact/hooks';
import type { FileReport } from '../../datasets/file-reports.js';
import type { DatasetError, DatasetWarning } from '../../datasets/findings.js';
import { downloadFile, get, type FileObject, type List, type Model } from '../api.js';
import { ErrorMessage, Facts, Loading, PageHeader, StatusBadge } from '../components/common.js';
import { Histogram } from '../components/histogram.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { bytes, count, counted, dateTime, dollars, words } from '../format.js';
import { href, navigate, useRoute } from '../router.js';
import { confirmAndDelete } from './files.js';
import './files.css';

/** Examples rendered as the model sees them: enough to check the masking at a glance. */
const SHOWN_EXAMPLES = 3;

/** Longer lists of warnings are folded, so a file with a warning per line does not bury the rest of the report. */
const FOLD_AFTER = 5;

/** The select's value for "no base model": OpenAI's counts only. */
const OPENAI_ONLY = '';

export function FilePage({ id }: { id: string }) {
  const route = useRoute();
  const file = useLoad((signal) => get<FileObject>(`/files/${encodeURIComponent(id)}`, undefined, signal), [id]);
  const baseModels = useLoad(
    (signal) => get<List<Model>>('/models', undefined, signal).then((list) => list.data.filter((model) => model.owned_by === 'system')),
    [],
  );
  // The model is in the address, so a reload or a shared link counts with the same one.
  const model = route.query.get('model') ?? baseModels.data?.[0]?.id ?? (baseModels.data ? OPENAI_ONLY : undefined);
  const readable = file.data?.purpose === 'fine-tune';
  const report = useLoad(
    (signal) =>
      model === undefined || !readable
        ? Promise.resolve(null)
        : get<FileReport>(`/files/${encodeURIComponent(id)}/report`, { model: model || undefined, show: SHOWN_EXAMPLES }, signal),
    [id, model, readable],
  );

  const [actionFailure, setActionFailure] = useState<Error | null>(null);
  const remove = async () => {
    if (!file.data) return;
    setActionFailure(null);
    try {
      if (await confirmAndDelete(file.data)) navigate(href('files'));
    } catch (error) {
      setActionFailure(error as Error);
    }
  };

  return (
    <>
      <p class="back">
        <a href={href('files')}>← All files</a>
      </p>
      <PageHeader title={file.data?.filename ?? id}>
        <label>
          Count with{' '}
          <select
            value={model ?? OPENAI_ONLY}
            disabled={!baseModels.data}
            onChange={(event) => navigate(href('files', id, { model: event.currentTarget.value }))}
          >
            {baseModels.data?.map((base) => (
              <option key={base.id} value={base.id}>
                {base.id}
              </option>
            ))}
            <option value={OPENAI_ONLY}>OpenAI's tokenizer only</option>
          </select>
        </label>
        <button class="secondary" onClick={() => file.data && downloadFile(file.data).then(() => setActionFailure(null), setActionFailure)} disabled={!file.data}>
          Download
        </button>
        <button class="danger" onClick={remove} disabled={!file.data}>
          Delete file
        </button>
      </PageHeader>
      <p class="file-id muted mono">{id}</p>
      <ErrorMessage error={file.error ?? baseModels.error ?? actionFailure} />
      {file.data && (
        <section class="panel report-facts">
          <Facts
            facts={[
              ['Purpose', file.data.purpose],
              ['Size', bytes(file.data.bytes)],
              ['Created', dateTime(file.data.created_at)],
              ['Status', <StatusBadge status={file.data.status} />],
              ...(file.data.status_details ? [['Status details', file.data.status_details] as [string, string]] : []),
            ]}
          />
        </section>
      )}
      {file.data && !readable && <p class="muted">The dataset report reads fine-tuning files; this one's purpose is {file.data.purpose}.</p>}
      <ErrorMessage error={report.error} />
      {readable && !report.data && !report.error && <Loading what={`the dataset report${model ? ` with ${model}'s tokenizer` : ''}`} />}
      {report.data && <ReportView report={report.data} />}
    </>
  );
}

function ReportView({ report }: { report: FileReport }) {
  const errorTotal = total(report.error_counts);
  const warningTotal = total(report.warning_counts);
  const billing = report.token_counts[report.billing_tokenizer];
  const distributions = billing?.distributions;
  return (
    <>
      <h2>Verdict</h2>
      <section class="panel verdict report-facts">
        <p>
          {report.can_train ? <span class="badge good">can train</span> : <span class="badge bad">cannot train</span>}{' '}
          {report.can_train
            ? `${count(report.n_examples)} examples${warningTotal ? `, ${counted(warningTotal, 'warning')} to look at` : ''}.`
            : errorTotal
              ? `${counted(errorTotal, 'error')}: fix them before a job can use this file.`
              : report.screening.message}
        </p>
        <Facts
          facts={[
            ['Format', report.format ?? '—'],
            ['Examples', count(report.n_examples)],
            ['Epochs', `${report.n_epochs} (auto)`],
            ['Context', `${count(report.context)} tokens`],
            [`Billing tokens (${report.billing_tokenizer})`, count(report.billing_tokens)],
            ['Charged tokens', `${count(report.charged_tokens)} (× ${report.n_epochs} epochs)`],
            ['Estimated cost', dollars(report.estimated_cost_usd)],
            ['Training price', `${dollars(report.prices.training_per_1k)} per 1K tokens`],
          ]}
        />
      </section>

      {errorTotal > 0 && (
        <Findings title="Errors" findings={report.errors} counts={report.error_counts} totalCount={errorTotal} tone="bad" />
      )}
      {warningTotal > 0 && (
        <Findings title="Warnings" findings={report.warnings} counts={report.warning_counts} totalCount={warningTotal} tone="busy" fold />
      )}

      <h2>Tokens</h2>
      {Object.keys(report.token_counts).length === 0 ? (
        <p class="muted">No tokens were counted.</p>
      ) : (
        <ListTable
          cards={false}
          class="token-counts"
          rows={Object.entries(report.token_counts)}
          rowKey={([name]) => name}
          columns={[
            {
              label: 'Tokenizer',
              cell: ([name]) => (
                <>
                  {name}
                  {name === report.billing_tokenizer && <span class="muted"> (billing)</span>}
                </>
              ),
            },
            { label: 'Total tokens', number: true, cell: ([, counts]) => count(counts.total) },
            { label: 'Trained tokens', number: true, cell: ([, counts]) => count(counts.trained) },
          ]}
        />
      )}
      {distributions && (distributions.messages || distributions.total_tokens || distributions.assistant_tokens) && (
        <>
          <h2>Distributions per example ({report.billing_tokenizer})</h2>
          <div class="histograms">
            {distributions.messages && <Histogram title="Messages per example" distribution={distributions.messages} unit="messages" />}
            {distributions.total_tokens && <Histogram title="Total tokens per example" distribution={distributions.total_tokens} unit="tokens" />}
            {distributions.assistant_tokens && (
              <Histogram title="Trained (assistant) tokens per example" distribution={distributions.assistant_tokens} unit="tokens" />
            )}
          </div>
        </>
      )}

      <h2>Screening</h2>
      <Screening report={report} />

      <h2>What the model trains on</h2>
      {report.shown_examples.length === 0 ? (
        <p class="muted">
          {report.model ? 'No example could be rendered: every one has an error.' : "Choose a base model to see examples through its chat template."}
        </p>
      ) : (
        <>
          <p class="muted">
            The first examples as {report.model} sees them, through its chat template: <mark class="trained">trained tokens</mark> are what the model
            learns to write; <span class="context">the rest</span> is context it reads.
          </p>
          {report.shown_examples.map((example) => (
            <figure key={example.line} class="shown-example">
              <figcaption>
                Line {example.line}
                {example.rejected_segments ? ': the preferred answer, then the non-preferred one after the same conversation' : ''}
              </figcaption>
              <Segments segments={example.segments} />
              {example.rejected_segments && <Segments segments={example.rejected_segments} />}
            </figure>
          ))}
        </>
      )}
    </>
  );
}

function Findings({
  title,
  findings,
  counts,
  totalCount,
  tone,
  fold = false,
}: {
  title: string;
  findings: Array<DatasetError | DatasetWarning>;
  counts: Partial<Record<string, number>>;
  totalCount: number;
  tone: 'bad' | 'busy';
  /** Fold a long table behind a summary: warnings inform, they do not stop a job. */
  fold?: boolean;
}) {
  return (
    <>
      <h2>
        {title} ({count(totalCount)})
      </h2>
      <ul class="category-counts" aria-label={`${title} by category`}>
        {Object.entries(counts).map(([category, n]) => (
          <li key={category} class={`badge ${tone}`}>
            {words(category)}: {count(n)}
          </li>
        ))}
      </ul>
      {findings.length < totalCount && <p class="muted">The first {count(findings.length)} are listed; the counts above are all of them.</p>}
      {fold && findings.length > FOLD_AFTER ? (
        <details class="findings-fold">
          <summary>
            Show the {count(findings.length)} listed {title.toLowerCase()}
          </summary>
          <FindingsTable findings={findings} />
        </details>
      ) : (
        <FindingsTable findings={findings} />
      )}
    </>
  );
}

const FINDING_COLUMNS: Array<Column<DatasetError | DatasetWarning>> = [
  { label: 'Line', number: true, cell: (finding) => finding.line ?? 'file' },
  { label: 'Message', number: true, cell: (finding) => finding.message_index ?? '—' },
  { label: 'Field', class: 'mono', cell: (finding) => finding.field ?? '—' },
  { label: 'Category', cell: (finding) => words(finding.category) },
  { label: 'Problem', class: 'problem', cell: (finding) => finding.message },
];

const SCREENING_COLUMNS: Array<Column<FileReport['screening']['findings'][number]>> = [
  { label: 'Line', number: true, cell: (finding) => finding.line ?? 'file' },
  { label: 'Field', class: 'mono', cell: (finding) => finding.field ?? '—' },
  { label: 'Category', cell: (finding) => words(finding.category) },
  { label: 'Action', cell: (finding) => finding.action },
  { label: 'Found', class: 'mono', cell: (finding) => finding.excerpt },
];

function FindingsTable({ findings }: { findings: Array<DatasetError | DatasetWarning> }) {
  return (
    <ListTable cards={false} class="findings" rows={findings} rowKey={(_, index) => index} columns={FINDING_COLUMNS} />
  );
}

function Screening({ report }: { report: FileReport }) {
  const { screening } = report;
  // Each category's action is the policy's, so any one listed finding tells it.
  const blocking = new Set<string>(screening.findings.filter((finding) => finding.action === 'block').map((finding) => finding.category));
  if (screening.findings.length === 0) {
    return <p class="muted">Nothing flagged: no e-mail addresses, phone or card numbers, ID numbers, keys or blocked terms.</p>;
  }
  return (
    <>
      {screening.blocked ? <p class="error">{screening.message}</p> : <p>Flagged for a look; nothing blocks training.</p>}
      <ul class="category-counts" aria-label="Screening flags by category">
        {Object.entries(screening.counts).map(([category, n]) => (
          <li key={category} class={`badge ${blocking.has(category) ? 'bad' : 'busy'}`}>
            {words(category)}: {count(n)}
          </li>
        ))}
      </ul>
      <ListTable cards={false} class="findings" rows={screening.findings} rowKey={(_, index) => index} columns={SCREENING_COLUMNS} />
    </>
  );
}

const total = (counts: Partial<Record<string, number>>) => Object.values(counts).reduce<number>((sum, n) => sum + (n ?? 0), 0);

function Segments({ segments }: { segments: Array<{ text: string; trained: boolean }> }) {
  return (
    <pre>
      {segments.map((segment, index) =>
        segment.trained ? (
          <mark key={index} class="trained">
            {segment.text}
          </mark>
        ) : (
          <span key={index} class="context">
            {segment.text}
          </span>
        ),
      )}
    </pre>
  );
}
