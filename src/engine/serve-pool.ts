import fs from 'node:fs';
import path from 'node:path';
import { GenerationError, type ServeInfo, ServeProcess } from './serve-process.js';

export interface ServePoolOptions {
  /** Where each model server's log goes (`serve-<folder name>.log`). */
  logDir: string;
  /** A model server with no request for this long exits, giving its memory back. */
  idleMs: number;
  /** How long a request waits for its model to load before it is refused (it keeps loading for the next one). */
  loadTimeoutMs: number;
  /** Sequences one model server decodes at once; more wait their turn inside it. */
  maxBatch: number;
  /** LoRA adapters a model server keeps loaded, least recently used dropped first. */
  maxAdapters: number;
  /**
   * Model servers running at once: starting another first stops the least recently used idle
   * one (each full fine-tune and each of its checkpoints is a model folder of its own).
   */
  maxModels: number;
}

export const DEFAULT_SERVE_POOL: Omit<ServePoolOptions, 'logDir'> = {
  idleMs: 10 * 60 * 1000,
  loadTimeoutMs: 5 * 60 * 1000,
  maxBatch: 16,
  maxAdapters: 8,
  maxModels: 4,
};

/** A model server lent to one request; `release` when the request is over. */
export interface ServeLease {
  process: ServeProcess;
  info: ServeInfo;
  release(): void;
}

interface Entry {
  process: ServeProcess;
  leases: number;
  idleTimer: NodeJS.Timeout | null;
  lastUsed: number;
}

/**
 * One engine `serve` process per model folder, started by the first request for it and shared by
 * every later one (base models and their LoRA fine-tunes share their base's; a full fine-tune is
 * a model folder of its own). Idle processes exit after `idleMs`; a dead one is replaced by the
 * next request.
 */
export class ServePool {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly options: ServePoolOptions) {}

  async acquire(modelDir: string, signal?: AbortSignal): Promise<ServeLease> {
    if (this.closed) throw new GenerationError('engine_stopped', 'the server is shutting down.');
    if (signal?.aborted) throw new GenerationError('cancelled', 'The request was cancelled.');
    const entry = this.entry(modelDir);
    entry.leases++;
    entry.lastUsed = performance.now();
    if (entry.idleTimer) clearTimeout(entry.idleTimer);
    entry.idleTimer = null;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      entry.leases--;
      entry.lastUsed = performance.now();
      if (entry.leases === 0 && this.entries.get(modelDir) === entry) {
        entry.idleTimer = setTimeout(() => this.retire(modelDir, entry), this.options.idleMs);
        entry.idleTimer.unref();
      }
    };
    try {
      const info = await waitFor(entry.process.ready, this.options.loadTimeoutMs, signal);
      return { process: entry.process, info, release };
    } catch (error) {
      release();
      throw error;
    }
  }

  /** The model servers running, and how many generations each is working on. */
  status(): Array<{ modelDir: string; generations: number }> {
    return [...this.entries].map(([modelDir, entry]) => ({ modelDir, generations: entry.process.active }));
  }

  async close(): Promise<void> {
    this.closed = true;
    const entries = [...this.entries.entries()];
    await Promise.all(entries.map(([dir, entry]) => this.retire(dir, entry)));
  }

  private entry(modelDir: string): Entry {
    const existing = this.entries.get(modelDir);
    if (existing?.process.alive) return existing;
    if (this.entries.size >= this.options.maxModels) {
      const idle = [...this.entries].filter(([, e]) => e.leases === 0).sort(([, a], [, b]) => a.lastUsed - b.lastUsed)[0];
      // None idle: all are answering someone, and this request is served too rather than refused.
      if (idle) void this.retire(idle[0], idle[1]);
    }
    fs.mkdirSync(this.options.logDir, { recursive: true });
    const process = ServeProcess.start({
      modelDir,
      logPath: path.join(this.options.logDir, `serve-${path.basename(modelDir)}.log`),
      maxBatch: this.options.maxBatch,
      maxAdapters: this.options.maxAdapters,
    });
    const entry: Entry = { process, leases: 0, idleTimer: null, lastUsed: performance.now() };
    this.entries.set(modelDir, entry);
    process.exited.then(() => {
      if (entry.idleTimer) clearTimeout(entry.idleTimer);
      if (this.entries.get(modelDir) === entry) this.entries.delete(modelDir);
    });
    return entry;
  }

  private async retire(modelDir: string, entry: Entry): Promise<void> {
    if (entry.idleTimer) clearTimeout(entry.idleTimer);
    if (this.entries.get(modelDir) === entry) this.entries.delete(modelDir);
    await entry.process.stop();
  }
}

function waitFor(ready: Promise<ServeInfo>, timeoutMs: number, signal: AbortSignal | undefined): Promise<ServeInfo> {
  return new Promise<ServeInfo>((resolve, reject) => {
    const timer = setTimeout(() => {
      done();
      const seconds = Math.round(timeoutMs / 1000);
      reject(new GenerationError('model_loading', `The model is still loading after ${seconds} s; try again shortly.`));
    }, timeoutMs);
    const abort = () => {
      done();
      reject(new GenerationError('cancelled', 'The request was cancelled.'));
    };
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
    };
    signal?.addEventListener('abort', abort, { once: true });
    ready.then(
      (info) => {
        done();
        resolve(info);
      },
      (error: unknown) => {
        done();
        reject(error);
      },
    );
  });
}
