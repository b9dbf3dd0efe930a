import { useEffect, useState } from 'preact/hooks';
import type { ModelExport } from '../../export/exports.js';
import { download, get, post } from '../api.js';
import { ErrorMessage } from './common.js';

const CHOICES = [
  { label: 'Merged weights (Hugging Face)', body: { format: 'merged' } },
  { label: 'LoRA adapter (PEFT)', body: { format: 'peft' } },
  { label: 'GGUF f16 (llama.cpp, Ollama)', body: { format: 'gguf', quantization: 'f16' } },
  { label: 'GGUF q8_0 (llama.cpp, Ollama)', body: { format: 'gguf', quantization: 'q8_0' } },
  { label: 'GGUF q4_k_m (llama.cpp, Ollama)', body: { format: 'gguf', quantization: 'q4_k_m' } },
  { label: 'Base GGUF f16 + LoRA GGUF adapter', body: { format: 'gguf_lora', quantization: 'f16' } },
] as const;

const POLL_MS = 1000;

/** What a base model exports as: it has no adapter, and its folder already is a Hugging Face one. */
const BASE_CHOICES = CHOICES.filter((c) => c.body.format === 'gguf');

/** Export a fine-tune or, with `base`, a base model (`POST /v1/exports`), follow its progress, and download the archive. */
export function ExportMenu({ model, base = false }: { model: string; base?: boolean }) {
  const choices = base ? BASE_CHOICES : CHOICES;
  const [choice, setChoice] = useState(0);
  const [current, setCurrent] = useState<ModelExport>();
  const [error, setError] = useState<Error>();
  const running = current?.status === 'queued' || current?.status === 'running';

  useEffect(() => {
    if (!running || !current) return;
    const timer = setTimeout(() => get<ModelExport>(`/exports/${current.id}`).then(setCurrent, setError), POLL_MS);
    return () => clearTimeout(timer);
  }, [current, running]);

  const start = () => {
    setError(undefined);
    post<ModelExport>('/exports', { model, ...choices[choice]!.body }).then(setCurrent, setError);
  };
  return (
    <div class="export-menu">
      <select aria-label={`Export format of ${model}`} value={choice} disabled={running} onChange={(event) => setChoice(Number(event.currentTarget.value))}>
        {choices.map((c, i) => (
          <option key={c.label} value={i}>
            {c.label}
          </option>
        ))}
      </select>{' '}
      <button class="secondary" disabled={running} onClick={start}>
        Export
      </button>
      {running && (
        <span aria-live="polite">
          {' '}
          <progress value={current.progress} max={1} aria-label="Export progress" /> {current.stage ?? current.status}
        </span>
      )}
      {current?.status === 'succeeded' && (
        <>
          {' '}
          <button class="secondary" aria-label={`Download ${current.filename}`} onClick={() => download(`/exports/${current.id}/content`, current.filename).catch(setError)}>
            Download
          </button>
        </>
      )}
      <ErrorMessage error={error ?? (current?.error ? `Export failed: ${current.error.message}` : undefined)} />
    </div>
  );
}
