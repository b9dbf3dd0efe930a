import { execFileSync } from 'node:child_process';
import os from 'node:os';

/** What a worker can hold, recorded with it: a job goes only to a worker with the memory it needs. */
export interface Capabilities {
  cpus: number;
  cpu_model: string;
  memory_bytes: number;
  gpus: Array<{ name: string; memory_bytes: number }>;
}

/** This host's CPUs, RAM and NVIDIA GPUs (as `nvidia-smi` lists them; none without it). */
export function detectCapabilities(): Capabilities {
  return {
    cpus: os.availableParallelism(),
    cpu_model: os.cpus()[0]?.model ?? 'unknown',
    memory_bytes: os.totalmem(),
    gpus: nvidiaGpus(),
  };
}

function nvidiaGpus(): Capabilities['gpus'] {
  let listed: string;
  try {
    listed = execFileSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 10_000 });
  } catch {
    return [];
  }
  return listed
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [name, mebibytes] = line.split(',').map((field) => field.trim());
      return { name: name ?? 'unknown', memory_bytes: Number(mebibytes) * 1024 * 1024 };
    });
}

/**
 * The memory one process of a job may take on a worker: one GPU's (each process trains on one), or
 * the RAM without a GPU.
 */
export function memoryForOneJob(capabilities: Capabilities): number {
  return capabilities.gpus.length ? Math.min(...capabilities.gpus.map((gpu) => gpu.memory_bytes)) : capabilities.memory_bytes;
}

/**
 * Processes that train one job together (under torchrun, one per GPU): all of a worker's GPUs when
 * it trains one job at a time, else one.
 */
export function processesPerJob(capabilities: Capabilities, slots: number): number {
  return slots === 1 && capabilities.gpus.length > 1 ? capabilities.gpus.length : 1;
}
