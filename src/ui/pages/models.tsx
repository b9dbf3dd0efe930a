import { useEffect, useState } from 'preact/hooks';
import { ApiError, del, get, listAll, post, type FineTuningJob, type List, type Model, type ModelDeleted } from '../api.js';
import { ErrorMessage, Loading, PageHeader } from '../components/common.js';
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

export function ModelsPage() {
  const loaded = useLoad(async (signal) => {
    const [models, jobs, mayPull] = await Promise.all([
      get<List<Model>>('/models', undefined, signal),
      listAll<FineTuningJob>('/fine_tuning/jobs', {}, signal),
      // Only the organizations the administrator allows may add base models: the others get a 403 here.
      get<List<ModelPull>>('/models/pulls', undefined, signal).then(
        () => true,
        (error: unknown) => (error instanceof ApiError && error.status === 403 ? false : Promise.reject(error)),
      ),
    ]);
    return { models: models.data, jobs, mayPull };
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

  return (
    <>
      <PageHeader title="Models" />
      <ErrorMessage error={loaded.error ?? error} />
      {!loaded.data ? (
        !loaded.error && <Loading what="models" />
      ) : (
        <>
          <h2>Base models</h2>
          {loaded.data.mayPull && <PullForm onPulled={loaded.reload} />}
          <div class="table-scroll">
            <table class="list cards" aria-label="Base models">
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col">Parameters</th>
                  <th scope="col">Context</th>
                  <th scope="col">Memory to serve / train (LoRA)</th>
                  <th scope="col">Added</th>
                  <th scope="col">Try it</th>
                </tr>
              </thead>
              <tbody>
                {base.map((model) => {
                  const details = (model as Model & { details?: BaseModelDetails }).details;
                  return (
                  <tr key={model.id}>
                    <td class="mono card-title">{model.id}</td>
                    <td data-label="Parameters">{details ? `${parameters(details.parameters)} ${details.dtype ?? ''}` : '—'}</td>
                    <td data-label="Context">{details?.context_length?.toLocaleString('en-US') ?? '—'}</td>
                    <td data-label="Memory to serve / train (LoRA)">
                      {details?.memory_bytes ? `${bytes(details.memory_bytes.serve)} / ${bytes(details.memory_bytes.train_lora)}` : '—'}
                    </td>
                    <td data-label="Added">{dateTime(model.created)}</td>
                    <td data-label="Try it">
                      <a href={href('playground', { left: model.id })} aria-label={`Open ${model.id} in the playground`}>
                        Playground
                      </a>
                    </td>
                  </tr>
                  );
                })}
              </tbody>
            </table>
          </div>

          <h2>Fine-tuned models</h2>
          {tuned.length === 0 ? (
            <p class="muted">No fine-tuned models yet: a job that succeeds makes one, and its checkpoints are models too.</p>
          ) : (
            <div class="table-scroll">
              <table class="list cards" aria-label="Fine-tuned models">
                <thead>
                  <tr>
                    <th scope="col">Model</th>
                    <th scope="col">Kind</th>
                    <th scope="col">Job</th>
                    <th scope="col">Created</th>
                    <th scope="col">Actions</th>
                  </tr>
                </thead>
                <tbody>
                  {tuned.map((model) => {
                    const name = parseFineTunedName(model.id);
                    const job = jobOf(jobs, model.id);
                    return (
                      <tr key={model.id}>
                        <td class="mono wrap card-title">{model.id}</td>
                        <td data-label="Kind">{modelKind(model) === 'checkpoint' ? `checkpoint, step ${name!.step}` : 'fine-tune'}</td>
                        <td data-label="Job">{job ? <a href={href('jobs', job.id)}>{job.id}</a> : '—'}</td>
                        <td data-label="Created">{dateTime(model.created)}</td>
                        <td class="card-title">
                          <div class="actions">
                          <a
                            class="button secondary"
                            href={href('playground', { left: name?.base ?? job?.model ?? model.id, right: model.id })}
                            aria-label={`Compare ${model.id} with its base model in the playground`}
                          >
                            Compare
                          </a>
                          <button class="danger" disabled={deleting === model.id} onClick={() => remove(model.id)} aria-label={`Delete ${model.id}`}>
                            {deleting === model.id ? 'Deleting…' : 'Delete'}
                          </button>
                          </div>
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
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
