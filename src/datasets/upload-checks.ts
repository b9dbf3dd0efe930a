import type { FileService } from '../files/files.js';
import { WorkLoop } from '../jobs/work-loop.js';
import { DEFAULT_CONTEXT, examineDataset } from './doctor.js';
import { describeError } from './findings.js';
import { Screener } from './screening.js';
import type { DatasetSettings } from './settings.js';

/**
 * The format check a fine-tune upload gets as soon as it is stored, as OpenAI's files become
 * `processed` or `error` seconds after upload: every line read and checked for the shape of an
 * example, with no model and no tokenizer (those are the job's business, as are too few examples
 * and screening, which depend on what the file is used for). Files a restart left unchecked are
 * checked on start.
 */
export class UploadChecks {
  private readonly loop = new WorkLoop(
    () => this.drain(),
    (error) => this.log('checking uploaded files failed', error),
  );
  private readonly abort = new AbortController();

  constructor(
    private readonly files: FileService,
    private readonly settings: DatasetSettings,
    private readonly log: (message: string, error?: unknown) => void,
  ) {}

  kick(): void {
    this.loop.kick();
  }

  async stop(): Promise<void> {
    const stopping = this.loop.stop();
    this.abort.abort();
    await stopping;
  }

  private async drain(): Promise<void> {
    for (const file of await this.files.unchecked()) {
      if (this.loop.stopped) return;
      try {
        const report = await examineDataset(this.files.bytes(file.org_id, file.id), {
          role: 'training',
          model: null,
          countTokens: false,
          context: DEFAULT_CONTEXT,
          prices: this.settings.prices,
          screener: new Screener(this.settings.screening),
          listLimit: 1,
          signal: this.abort.signal,
        });
        // Too few examples is about a training job, not the file: a validation file may hold one.
        const first = report.errors.find((error) => error.category !== 'invalid_n_examples');
        await this.files.setStatus(file.id, first ? 'error' : 'processed', first ? `Invalid file format. ${describeError(first)}` : null);
      } catch (error) {
        if (this.abort.signal.aborted) return;
        this.log(`checking ${file.id} failed`, error);
        // Not left `uploaded` for a client waiting on `processed`.
        await this.files.setStatus(file.id, 'error', `The file could not be checked: ${(error as Error).message}`);
      }
    }
  }
}
