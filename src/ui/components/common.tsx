import type { ComponentChildren } from 'preact';
import { words } from '../format.js';

export function ErrorMessage({ error }: { error: Error | string | undefined | null }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {typeof error === 'string' ? error : error.message}
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return <p class="muted" aria-live="polite">Loading {what}…</p>;
}

const STATUS_TONE: Record<string, string> = {
  succeeded: 'good',
  failed: 'bad',
  cancelled: 'quiet',
  running: 'busy',
  paused: 'quiet',
  queued: 'busy',
  validating_files: 'busy',
  processed: 'good',
  error: 'bad',
  uploaded: 'quiet',
};

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge ${STATUS_TONE[status] ?? 'quiet'}`}>{words(status)}</span>;
}

export function PageHeader({ title, children }: { title: ComponentChildren; children?: ComponentChildren }) {
  return (
    <header class="page-header">
      <h1>{title}</h1>
      {children && <div class="actions">{children}</div>}
    </header>
  );
}

/** Label/value pairs, as a definition list. */
export function Facts({ facts }: { facts: Array<[string, ComponentChildren]> }) {
  return (
    <dl class="facts">
      {facts.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}
