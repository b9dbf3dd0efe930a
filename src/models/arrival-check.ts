import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runEngineCommand } from '../engine/engine-command.js';
import { encodeChat } from '../tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import { readModelFacts, type ModelFacts } from './model-facts.js';

/** What was learned about a base model when it arrived; kept beside the registry and shown by `models list`. */
export interface ArrivalReport extends Partial<ModelFacts> {
  checkedAt: number;
  /** True when the tokenizer, the template and the engine all worked. */
  usable: boolean;
  /** Why it cannot be used, in words; null when usable. */
  problem: string | null;
  /** Whether the engine loaded it and generated (false when the host lacks the memory to try). */
  loaded: boolean;
  hasChatTemplate: boolean;
  /** Host memory when checked, for "fits on this host". */
  hostMemoryBytes: number;
}

const SAMPLE = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Is it cold in Wuhan this winter?' },
];

/**
 * Checks a model once, when it is added: its files are read, its tokenizer and chat template
 * render a conversation, and the engine loads it and generates two tokens from that prompt.
 * A failure is recorded with its reason instead of surfacing later in a job.
 */
export async function checkArrival(folder: string): Promise<ArrivalReport> {
  const hostMemoryBytes = os.totalmem();
  const report: ArrivalReport = { checkedAt: Math.floor(Date.now() / 1000), usable: false, problem: null, loaded: false, hasChatTemplate: false, hostMemoryBytes };
  try {
    Object.assign(report, readModelFacts(folder));
  } catch (error) {
    return { ...report, problem: `Its files cannot be read: ${(error as Error).message}` };
  }
  let ids: number[];
  try {
    const tokenizer = ModelTokenizer.load(folder);
    report.hasChatTemplate = tokenizer.hasChatTemplate;
    ids = tokenizer.hasChatTemplate ? encodeChat(tokenizer, SAMPLE, { addGenerationPrompt: true }).ids : tokenizer.encodeWithSpecialTokens(SAMPLE[1]!.content);
  } catch (error) {
    return { ...report, problem: `Its tokenizer or chat template fails: ${(error as Error).message}` };
  }
  // Loading what does not fit would take the host down with it; the figures say enough.
  if (report.memory && report.memory.serve > hostMemoryBytes * 0.8) {
    return { ...report, usable: true, problem: null };
  }
  const result = await runEngineCommand(['generate', '--model', folder, '--input-ids', ids.join(','), '--max-new-tokens', '2']);
  const generated = result.events.find((event) => event.type === 'generated');
  if (result.code !== 0 || !generated) {
    const error = result.events.find((event) => event.type === 'error');
    const reason = typeof error?.message === 'string' ? error.message : result.stderr.trim().split('\n').slice(-3).join(' ');
    return { ...report, problem: `The engine cannot load it: ${reason}` };
  }
  return { ...report, usable: true, loaded: true };
}

/** Reports live in `<models>/.checks/<name>.json`: a dot folder the registry does not list as a model. */
export function saveArrivalReport(modelsDir: string, name: string, report: ArrivalReport): void {
  const dir = path.join(modelsDir, '.checks');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(report, null, 2));
}

export function readArrivalReport(modelsDir: string, name: string): ArrivalReport | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(modelsDir, '.checks', `${name}.json`), 'utf8')) as ArrivalReport;
  } catch {
    return null;
  }
}
