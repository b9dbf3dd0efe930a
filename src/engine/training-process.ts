import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import readline from 'node:readline';
import { type EngineEvent, parseEngineEvent } from './protocol.js';
import { engineEnv, enginePython } from './python.js';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface TrainingProcessOptions {
  specPath: string;
  /** The engine's stderr goes here, appended, so a run after a restart adds to the same log. */
  logPath: string;
  /** Holds the process id while it runs, so a server that restarts after a crash can stop an orphan. */
  pidPath: string;
  /**
   * Processes training the job together, one per GPU (default 1). More than one run under
   * `torchrun --nproc-per-node N` (engine/tunelab_engine/distributed.py); rank 0 speaks the events.
   */
  processes?: number;
}

const KEPT_LOG_LINES = 8;
/** How long the processes of a job under torchrun may take to stop after a SIGTERM: a step and a checkpoint of a large model. */
const STOP_SECONDS = 3600;

/**
 * `python3 -m tunelab_engine train --spec SPEC` as a child process: its events as they come, its
 * log kept on disk and its last lines in memory (they name the cause when it dies).
 */
export class TrainingProcess {
  readonly exited: Promise<Exit>;
  private readonly recentLog: string[] = [];

  private constructor(
    private readonly child: ChildProcess,
    options: TrainingProcessOptions,
  ) {
    const log = fs.createWriteStream(options.logPath, { flags: 'a' });
    // A full disk loses the log file, not the server.
    log.on('error', (error) => this.recentLog.push(`(the engine log could not be written: ${error.message})`));
    const lines = readline.createInterface({ input: child.stderr!, crlfDelay: Infinity });
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      this.recentLog.push(line);
      if (this.recentLog.length > KEPT_LOG_LINES) this.recentLog.shift();
    });
    const spawned = new Promise<void>((resolve) => child.once('spawn', resolve));
    this.exited = new Promise<Exit>((resolve) => {
      child.once('error', (error) => {
        this.recentLog.push(`could not start the engine: ${error.message}`);
        resolve({ code: null, signal: null });
      });
      child.once('exit', () => this.signal('SIGKILL'));
      child.once('close', (code, signal) => resolve({ code, signal }));
    }).then(async (exit) => {
      await new Promise<void>((resolve) => log.end(resolve));
      await fsp.rm(options.pidPath, { force: true });
      return exit;
    });
    spawned.then(() => fs.writeFileSync(options.pidPath, `${child.pid}\n${options.specPath}\n`)).catch(() => {});
  }

  static start(options: TrainingProcessOptions): TrainingProcess {
    const processes = options.processes ?? 1;
    // torchrun passes a SIGTERM on to its processes and kills them after --shutdown-timeout (30 s by
    // default); they finish their step and write a checkpoint first, which may take longer.
    const launcher =
      processes > 1 ? ['-m', 'torch.distributed.run', '--standalone', `--nproc-per-node=${processes}`, `--shutdown-timeout=${STOP_SECONDS}`] : [];
    const child = spawn(enginePython(), [...launcher, '-m', 'tunelab_engine', 'train', '--spec', options.specPath], {
      env: engineEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C meant for the server does not reach it, and a signal to the
      // group reaches whatever it started (workers holding its pipes open would otherwise hang the job).
      detached: true,
    });
    return new TrainingProcess(child, options);
  }

  /** The events, in order, until the engine's stdout closes. A line that is not an event is logged. */
  async *events(): AsyncGenerator<EngineEvent> {
    const lines = readline.createInterface({ input: this.child.stdout!, crlfDelay: Infinity });
    for await (const line of lines) {
      if (!line.trim()) continue;
      const event = parseEngineEvent(line);
      if (event) yield event;
      else this.recentLog.push(line);
    }
  }

  /** SIGTERM: the engine finishes its step, writes a checkpoint, says `cancelled` and exits. */
  stop(): void {
    this.signal('SIGTERM');
  }

  kill(): void {
    this.signal('SIGKILL');
  }

  private signal(signal: NodeJS.Signals): void {
    if (this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      // the group is gone
    }
  }

  /** The engine's last log lines, for a failed job's message. */
  lastLogLines(): string[] {
    return [...this.recentLog];
  }
}

/**
 * Stops an engine a crashed server left behind, if the pid file names one that is still running
 * this spec (a pid alone may have been reused by then), and waits until it is gone.
 */
export async function stopOrphan(pidPath: string): Promise<void> {
  let pid: number;
  let specPath: string;
  try {
    const [first, second] = fs.readFileSync(pidPath, 'utf8').split('\n');
    pid = Number(first);
    specPath = second ?? '';
  } catch {
    return;
  }
  if (Number.isInteger(pid) && pid > 0 && runsSpec(pid, specPath)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    for (let waited = 0; waited < 5000 && runsSpec(pid, specPath); waited += 50) await new Promise((r) => setTimeout(r, 50));
  }
  await fsp.rm(pidPath, { force: true });
}

function runsSpec(pid: number, specPath: string): boolean {
  try {
    const commandLine = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return commandLine.includes('tunelab_engine') && commandLine.includes(specPath);
  } catch {
    // No /proc (not Linux): trust the pid file when the process exists.
    if (process.platform === 'linux') return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
}
