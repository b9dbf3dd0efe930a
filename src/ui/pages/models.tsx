import { useEffect, useState } from 'preact/hooks';
import { del, get, listAll, post, type FineTuningJob, type List, type Model, type ModelDeleted } from '../api.js';
import { ErrorMessage, Loading, PageHeader } from '../components/common.js';
import { ExportMenu } from '../components/export-menu.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { bytes, dateTime } from '../format.js';
import { href } from '../router.js';

/** What an `ft:` name says: `ft:{base}:{org}:{suffix}:{id8}`, and `:ckpt-step-{N}` for a checkpoint. */
export function parseFineTunedName(id: string): { base: string; id8: string; step: number | null } | null {
  const parts = id.split(':');
  const step = /^ckpt-step-(\d+)$/.exec(parts.at(-1) ?? '')?.[1];
  if (step !== undefined) parts.pop();
  // Read from the right: a base model's name is the one part that may hold a colon.
  if (parts[0] !== 'ft' || parts.length < 5) return null;
  return { base: parts.slice(1, -3).join(':'), id8: parts.at(-1)!, step: step === undefined ? null : Number(step) };
}

export type ModelKind = 'base' | 'fine-tune' | 'checkpoint';

export function modelKind(model: Model): ModelKind {
  if (model.owned_by === 'system') return 'base';
  return (parseFineTunedName(model.id)?.step ?? null) === null ? 'fine-tune' : 'checkpoint';
}

/** The job that made a fine-tune or checkpoint: its name carries the first 8 characters of the job's id. */
export const jobOf = (jobs: FineTuningJob[], modelId: string) => {
  const id8 = parseFineTunedName(modelId)?.id8;
  return id8 ? jobs.find((job) => job.id.slice(job.id.indexOf('-') + 1).startsWith(id8)) : undefined;
};

/** What a base model's arrival check found (ours, on /v1/models). */
interface BaseModelDetails {
  parameters: number | null;
  context_length: number | null;
  dtype: string | null;
  memory_bytes: { serve: number; train_lora: number; train_full: number } | null;
}

/** A pull from the Hugging Face Hub (ours: /v1/models/pulls). */
interface ModelPull {
  id: string;
  repo: string;
  status: 'running' | 'succeeded' | 'failed';
  received_bytes: number;
  total_bytes: number | null;
  model: string | null;
  error: { message: string } | null;
}

const parameters = (n: number | null | undefined) =>
  n === null || n === undefined ? '—' : n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)}M`;

const details = (model: Model) => (model as Model & { details?: BaseModelDetails }).details;

const BASE_COLUMNS: Array<Column<Model>> = [
  { label: 'Model', class: 'mono', title: true, cell: (model) => model.id },
  {
    label: 'Parameters',
    cell: (model) => {
      const known = details(model);
      return known ? `${parameters(known.parameters)} ${known.dtype ?? ''}` : '—';
    },
  },
  { label: 'Context', cell: (model) => details(model)?.context_length?.toLocaleString('en-US') ?? '—' },
  {
    label: 'Memory to serve / train (LoRA)',
    cell: (model) => {
      const memory = details(model)?.memory_bytes;
      return memory ? `${bytes(memory.serve)} / ${bytes(memory.train_lora)}` : '—';
    },
  },
  { label: 'Added', cell: (model) => dateTime(model.created) },
  {
    label: 'Try it',
    cell: (model) => (
      <a href={href('playground', { left: model.id })} aria-label={`Open ${model.id} in the playground`}>
        Playground
      </a>
    ),
  },
  { label: 'Export', cell: (model) => <ExportMenu model={model.id} base /> },
];

/** `mayPull`: the key's organization may add base models (it administers the server). */
export function ModelsPage({ mayPull }: { mayPull: boolean }) {
  const loaded = useLoad(async (signal) => {
    const [models, jobs] = await Promise.all([get<List<Model>>('/models', undefined, signal), listAll<FineTuningJob>('/fine_tuning/jobs', {}, signal)]);
    return { models: models.data, jobs };
  }, []);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [error, setError] = useState<Error>();

  const remove = async (id: string) => {
    if (!confirm(`Delete ${id}? Its weights are removed from the server; this cannot be undone.`)) return;
    setDeleting(id);
    setError(undefined);
    try {
      await del<ModelDeleted>(`/models/${encodeURIComponent(id)}`);
      loaded.reload();
    } catch (failure) {
      setError(failure as Error);
    } finally {
      setDeleting(null);
    }
  };

  const { models, jobs } = loaded.data ?? { models: [], jobs: [] };
  const base = models.filter((model) => modelKind(model) === 'base');
  const tuned = models.filter((model) => modelKind(model) !== 'base').sort((a, b) => b.created - a.created || a.id.localeCompare(b.id));
  const tunedColumns: Array<Column<Model>> = [
    { label: 'Model', class: 'mono wrap', title: true, cell: (model) => model.id },
    {
      label: 'Kind',
      cell: (model) => (modelKind(model) === 'checkpoint' ? `checkpoint, step ${parseFineTunedName(model.id)!.step}` : 'fine-tune'),
    },
    {
      label: 'Job',
      cell: (model) => {
        const job = jobOf(jobs, model.id);
        return job ? <a href={href('jobs', job.id)}>{job.id}</a> : '—';
      },
    },
    { label: 'Created', cell: (model) => dateTime(model.created) },
    {
      label: 'Actions',
      title: true,
      cell: (model) => (
        <div class="actions">
          <a
            class="button secondary"
            href={href('playground', { left: parseFineTunedName(model.id)?.base ?? jobOf(jobs, model.id)?.model ?? model.id, right: model.id })}
            aria-label={`Compare ${model.id} with its base model in the playground`}
          >
            Compare
          </a>
          <button class="danger" disabled={deleting === model.id} onClick={() => remove(model.id)} aria-label={`Delete ${model.id}`}>
            {deleting === model.id ? 'Deleting…' : 'Delete'}
          </button>
        </div>
      ),
    },
  ];

  return (
    <>
      <PageHeader title="Models" />
      <ErrorMessage error={loaded.error ?? error} />
      {!loaded.data ? (
        !loaded.error && <Loading what="models" />
      ) : (
        <>
          <h2>Base models</h2>
          {mayPull && <PullForm onPulled={loaded.reload} />}
          <ListTable label="Base models" rows={base} rowKey={(model) => model.id} columns={BASE_COLUMNS} />

          <h2>Fine-tuned models</h2>
          {tuned.length === 0 ? (
            <p class="muted">No fine-tuned models yet: a job that succeeds makes one, and its checkpoints are models too.</p>
          ) : (
            <ListTable label="Fine-tuned models" rows={tuned} rowKey={(model) => model.id} columns={tunedColumns} />
          )}
        </>
      )}
    </>
  );
}

/** Pulls a model from the Hugging Face Hub into the server, showing its bytes as they arrive. */
function PullForm({ onPulled }: { onPulled: () => void }) {
  const [repo, setRepo] = useState('');
  const [name, setName] = useState('');
  const [pull, setPull] = useState<ModelPull | null>(null);
  const [error, setError] = useState<Error>();

  useEffect(() => {
    if (pull?.status !== 'running') return;
    const timer = setTimeout(async () => {
      try {
        const next = await get<ModelPull>(`/models/pulls/${pull.id}`);
        setPull(next);
        if (next.status === 'succeeded') onPulled();
      } catch (failure) {
        setError(failure as Error);
      }
    }, 500);
    return () => clearTimeout(timer);
  }, [pull]);

  const start = async (event: Event) => {
    event.preventDefault();
    setError(undefined);
    try {
      setPull(await post<ModelPull>('/models/pulls', { repo: repo.trim(), ...(name.trim() && { name: name.trim() }) }));
    } catch (failure) {
      setError(failure as Error);
    }
  };

  const running = pull?.status === 'running';
  return (
    <form class="pull-form" onSubmit={start} aria-label="Pull a base model">
      <label>
        Hugging Face model
        <input value={repo} placeholder="Qwen/Qwen2.5-0.5B-Instruct" required disabled={running} onInput={(e) => setRepo(e.currentTarget.value)} />
      </label>
      <label>
        Name (optional)
        <input value={name} placeholder="qwen2.5-0.5b-instruct" disabled={running} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={running || !repo.trim()}>
        {running ? 'Pulling…' : 'Pull'}
      </button>
      {pull && (
        <div class="upload-progress" aria-live="polite">
          {pull.status === 'running' && (
            <>
              <span>Pulling {pull.repo}</span>
              <progress max={pull.total_bytes || 1} value={pull.received_bytes} aria-label={`Pulling ${pull.repo}`} />
              <span class="muted">{pull.total_bytes === null ? 'reading its files…' : `${bytes(pull.received_bytes)} of ${bytes(pull.total_bytes)}`}</span>
            </>
          )}
          {pull.status === 'succeeded' && <span>Pulled {pull.repo}: it is the base model {pull.model}.</span>}
        </div>
      )}
      <ErrorMessage error={pull?.status === 'failed' ? pull.error?.message : error} />
    </form>
  );
}
