import type { Command } from 'commander';
import type OpenAI from 'openai';
import type { FineTuningJobEvent } from 'openai/resources/fine-tuning/jobs/jobs';
import { connect } from './client.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const POLL_MS = 1000;

/** `tunelab jobs follow ID`: the job's events as they come, and a bar with step, loss and time left. */
export function followCommand(jobs: Command): void {
  jobs
    .command('follow')
    .argument('<id>')
    .description('follow a job until it ends: its events, and a progress bar with step, loss and time left')
    .option('--home <dir>', 'home folder holding the api-key file (default $TUNELAB_HOME or ~/.tunelab)')
    .action(async (id: string, options: { home?: string }) => {
      const client = await connect(options.home);
      const view = await progressView();
      const seen = new Set<string>();
      for (;;) {
        const job = await client.fineTuning.jobs.retrieve(id);
        for (const event of await newEvents(client, id, seen)) {
          if (event.type === 'metrics') view.step(event, job.estimated_finish ?? null);
          else view.log(event.message);
        }
        if (FINISHED.has(job.status)) {
          view.stop();
          if (job.status === 'succeeded') console.log(`${job.id} succeeded: ${job.fine_tuned_model} (${job.trained_tokens} trained tokens)`);
          else console.log(`${job.id} ${job.status}${job.error ? `: ${job.error.message}` : ''}`);
          process.exitCode = job.status === 'succeeded' ? 0 : 1;
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    });
}

interface Metrics {
  step: number;
  total_steps: number;
  train_loss?: number | null;
}

/** Events not shown yet, oldest first (the API lists newest first). */
async function newEvents(client: OpenAI, jobId: string, seen: Set<string>): Promise<FineTuningJobEvent[]> {
  const fresh: FineTuningJobEvent[] = [];
  for await (const event of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) {
    if (seen.has(event.id)) break;
    seen.add(event.id);
    fresh.push(event);
  }
  return fresh.reverse();
}

interface ProgressView {
  log(line: string): void;
  step(event: FineTuningJobEvent, estimatedFinish: number | null): void;
  stop(): void;
}

/** A live bar on a terminal; plain lines where stderr is a pipe or a CI log. */
async function progressView(): Promise<ProgressView> {
  if (!process.stderr.isTTY) {
    return { log: (line) => console.log(line), step: (event) => console.log(event.message), stop() {} };
  }
  const { default: cliProgress } = await import('cli-progress');
  const bars = new cliProgress.MultiBar(
    { format: 'step {value}/{total} [{bar}] loss {loss} | {left}', stream: process.stderr, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  let bar: ReturnType<typeof bars.create> | null = null;
  return {
    log: (line) => bars.log(`${line}\n`),
    step: (event, estimatedFinish) => {
      const m = event.data as Metrics;
      const payload = { loss: formatLoss(m.train_loss), left: timeLeft(estimatedFinish) };
      bar ??= bars.create(m.total_steps, 0, payload);
      bar.update(m.step, payload);
    },
    stop: () => bars.stop(),
  };
}

const formatLoss = (loss: number | null | undefined) => (typeof loss === 'number' ? loss.toFixed(4) : 'n/a');

function timeLeft(estimatedFinish: number | null): string {
  if (estimatedFinish === null) return 'time left unknown';
  const seconds = Math.max(0, estimatedFinish - Math.floor(Date.now() / 1000));
  return seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s left` : `${seconds} s left`;
}
