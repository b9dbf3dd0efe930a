import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type DatasetReport, examineFiles } from '../src/datasets/doctor.js';
import { DEFAULT_DATASET_SETTINGS } from '../src/datasets/settings.js';
import { autoEpochs, percentile, trainingCost, DEFAULT_PRICES } from '../src/datasets/stats.js';
import { encodeChat } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { runCli } from './support/cli.js';
import { writeModelFolder } from './support/model-folder.js';
import { readNpy } from './support/npy.js';
import { DATASETS, tempHome } from './support/server.js';

const home = tempHome();
const model = writeModelFolder(path.join(home, 'qwen3-tiny'));
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));

const dataset = (name: string) => path.join(DATASETS, name);
const validate = (...args: string[]) => runCli(['validate', ...args, '--home', home]);
const validateJson = async (...args: string[]) => {
  const result = await validate(...args, '--json');
  return { code: result.code, report: JSON.parse(result.stdout) as DatasetReport };
};

/** Writes a JSONL file of the given examples into the temporary home. */
function jsonl(name: string, examples: unknown[]): string {
  const file = path.join(home, name);
  fs.writeFileSync(file, examples.map((example) => JSON.stringify(example)).join('\n') + '\n');
  return file;
}

const chat = (question: string, answer: string, extra: Record<string, unknown> = {}) => ({
  messages: [
    { role: 'system', content: 'You answer briefly.' },
    { role: 'user', content: question },
    { role: 'assistant', content: answer, ...extra },
  ],
});
const tenDistinct = (make: (i: number) => unknown) => Array.from({ length: 10 }, (_, i) => make(i));

describe('tunelab validate', () => {
  it("passes the guide's weather dataset with its counts, 10 auto epochs and the cost", async () => {
    const { code, report } = await validateJson(dataset('weather-jokes.jsonl'), '--model', model);
    expect(code).toBe(0);
    expect(report).toMatchObject({ format: 'chat', n_examples: 10, can_train: true, errors: [], n_epochs: 10, billing_tokenizer: 'qwen3-tiny' });
    const own = report.token_counts['qwen3-tiny']!;
    const openai = report.token_counts.cl100k_base!;
    expect(own.distributions.messages).toMatchObject({ min: 3, max: 3 });
    expect(own.trained).toBeGreaterThan(0);
    expect(own.trained).toBeLessThan(own.total);
    expect(openai.total).toBeGreaterThan(own.total); // Chinese costs cl100k more tokens than Qwen's vocabulary
    expect(report.billing_tokens).toBe(own.total);
    expect(report.charged_tokens).toBe(own.total * 10);
    expect(report.estimated_cost_usd).toBeCloseTo((own.total * 10 * 0.008) / 1000, 4);
    for (const key of ['format', 'n_examples', 'errors', 'error_counts', 'warnings', 'token_counts', 'n_epochs', 'billing_tokens', 'charged_tokens', 'estimated_cost_usd', 'screening']) {
      expect(report).toHaveProperty(key);
    }
  });

  it("rejects the guide's sports file as printed, by line, column and a reason a person understands", async () => {
    const result = await validate(dataset('sports-headlines-as-printed.jsonl'));
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('line 1: Invalid JSON at column 135');
    expect(result.stdout).toContain('line 2: Invalid JSON at column 135');
    expect(result.stdout).toContain('a double quote inside a string must be written \\"');
    expect(result.stdout).toContain('where applicable: "⟨here⟩player"');
    expect(result.stdout).toContain('Training file has 2 example(s), but must have at least 10 examples');
    expect(result.stdout).toContain('The file cannot train');
  });

  it("refuses the Marv file with OpenAI's minimum-examples message", async () => {
    const { code, report } = await validateJson(dataset('marv.jsonl'));
    expect(code).toBe(1);
    expect(report.errors).toEqual([
      { line: null, message_index: null, field: null, category: 'invalid_n_examples', message: 'Training file has 3 example(s), but must have at least 10 examples' },
    ]);
  });

  it('shows exactly what is trained: the assistant content and its end-of-turn token', async () => {
    const result = await validate(dataset('weather-jokes.jsonl'), '--model', model, '--show', '1');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('[[今天北京的天气晴朗,就像我的心情一样明朗!<|im_end|>]]');
    expect(result.stdout).toContain('<|im_start|>user\n今天北京的天气怎么样?<|im_end|>\n<|im_start|>assistant\n');
    expect(result.stdout).not.toContain('── line 2 ──');
  });

  it('warns about missing system messages, duplicates, weight-0-only examples and cut examples', async () => {
    const examples = tenDistinct((i) => chat(`Question ${i}?`, `Answer ${i}. `.repeat(i === 3 ? 200 : 1)));
    examples[1] = { messages: [{ role: 'user', content: 'No system here?' }, { role: 'assistant', content: 'None.' }] };
    examples[5] = examples[4];
    examples[7] = chat('Context only?', 'Yes.', { weight: 0 });
    const { code, report } = await validateJson(jsonl('warnings.jsonl', examples), '--model', model, '--context', '300');
    expect(code).toBe(0);
    expect(report.warning_counts).toEqual({ missing_system_message: 1, duplicate_example: 1, no_trained_tokens: 1, too_long: 1 });
    const byCategory = Object.fromEntries(report.warnings.map((warning) => [warning.category, warning]));
    expect(byCategory.missing_system_message).toMatchObject({ line: 2 });
    expect(byCategory.duplicate_example).toMatchObject({ line: 6, message: 'The same example as line 5.' });
    expect(byCategory.no_trained_tokens).toMatchObject({ line: 8 });
    expect(byCategory.too_long).toMatchObject({ line: 4, message: expect.stringMatching(/^The example has [\d,]+ tokens; the context is 300, so the last [\d,]+ will be cut\.$/) });
    // Billing counts each example up to the context, as OpenAI does.
    const own = report.token_counts['qwen3-tiny']!;
    expect(report.billing_tokens).toBe(own.total - (own.distributions.total_tokens!.max - 300));
    // The weight-0 example trains nothing.
    expect(own.distributions.assistant_tokens!.min).toBe(0);
  });

  it('blocks a file holding a card number and a secret key, naming the lines', async () => {
    const examples = tenDistinct((i) => chat(`Question ${i}?`, `Answer ${i}.`));
    examples[3] = chat('My card?', 'It is 4111 1111 1111 1111.');
    examples[8] = chat('The key?', 'Use sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t.');
    examples[9] = chat('Mail?', 'Write to someone@example.com.');
    const result = await validate(jsonl('secrets.jsonl', examples));
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('Flagged lines: 4, 9');
    expect(result.stdout).not.toContain('4111 1111 1111 1111');
    const { report } = await validateJson(jsonl('secrets.jsonl', examples));
    expect(report.screening).toMatchObject({ blocked: true, flagged_lines: [4, 9], counts: { payment_card: 1, api_key: 1, email: 1 } });
    expect(report.screening.findings.find((finding) => finding.category === 'email')).toMatchObject({ line: 10, message_index: 2, field: 'content', action: 'warn' });
  });

  it('checks a validation file beside the training file, in the same format', async () => {
    const training = jsonl('train.jsonl', tenDistinct((i) => chat(`Q${i}?`, `A${i}.`)));
    const validation = jsonl('valid.jsonl', [{ prompt: 'Q?', completion: 'A.' }]);
    const { code, report } = await validateJson(training, '--validation-file', validation);
    expect(code).toBe(1);
    expect(report.can_train).toBe(false);
    expect(report.validation).toMatchObject({ role: 'validation', format: 'prompt_completion', n_examples: 1 });
    expect(report.validation!.errors[0]).toMatchObject({ category: 'mixed_formats', line: 1 });
  });

  it('counts prompt/completion files for base models, the end-of-sequence token trained', async () => {
    const file = jsonl('completions.jsonl', tenDistinct((i) => ({ prompt: `Item ${i} ->`, completion: ` value ${i}` })));
    const { code, report } = await validateJson(file, '--model', model);
    expect(code).toBe(0);
    expect(report.format).toBe('prompt_completion');
    const tokenizer = ModelTokenizer.load(model);
    const perExample = tokenizer.encode(' value 0').length + 1;
    expect(report.token_counts['qwen3-tiny']!.distributions.assistant_tokens).toMatchObject({ min: perExample, max: perExample });
  });

  it('says what is wrong with the command line, with exit code 2', async () => {
    expect(await validate(path.join(home, 'nope.jsonl'))).toMatchObject({ code: 2, stderr: expect.stringContaining('nope.jsonl: no such file') });
    expect(await validate(dataset('marv.jsonl'), '--model', 'no-such-model')).toMatchObject({ code: 2, stderr: expect.stringContaining('--model no-such-model') });
    expect((await validate(dataset('marv.jsonl'), '--context', 'lots')).code).toBe(2);
    expect((await runCli(['validate'])).code).toBe(2);
  });
});

describe('tunelab split', () => {
  it('shuffles with the seed into training and validation files that together hold every example once', async () => {
    const source = jsonl('all.jsonl', Array.from({ length: 40 }, (_, i) => chat(`Q${i}?`, `A${i}.`)));
    const outDir = path.join(home, 'split');
    fs.mkdirSync(outDir);
    const result = await runCli(['split', source, '--validation', '0.1', '--seed', '7', '--out-dir', outDir]);
    expect(result.code).toBe(0);
    const read = (name: string) => fs.readFileSync(path.join(outDir, name), 'utf8').trim().split('\n');
    const [training, validation] = [read('all.train.jsonl'), read('all.valid.jsonl')];
    expect([training.length, validation.length]).toEqual([36, 4]);
    const original = fs.readFileSync(source, 'utf8').trim().split('\n');
    expect([...training, ...validation].sort()).toEqual([...original].sort());
    expect(training).not.toEqual(original.filter((line) => training.includes(line))); // shuffled, not in file order

    await runCli(['split', source, '--validation', '0.1', '--seed', '7', '--out-dir', outDir]);
    expect(read('all.valid.jsonl')).toEqual(validation);
    await runCli(['split', source, '--validation', '0.1', '--seed', '8', '--out-dir', outDir]);
    expect(read('all.valid.jsonl')).not.toEqual(validation);
    expect((await runCli(['split', source, '--validation', '1.5'])).code).toBe(2);
  });
});

describe('the rules behind the numbers', () => {
  it("follows OpenAI's public rule for auto epochs", () => {
    expect([autoEpochs(3), autoEpochs(10), autoEpochs(33), autoEpochs(34), autoEpochs(1000), autoEpochs(8334), autoEpochs(100_000)]).toEqual([25, 10, 3, 3, 3, 2, 1]);
  });

  it('prices 100,000 tokens for 3 epochs at $2.40 with the guide\'s prices', () => {
    expect(trainingCost(100_000 * 3, DEFAULT_PRICES)).toBe(2.4);
  });

  it('takes true 5th and 95th percentiles (interpolated), not the 10th and 90th', () => {
    const values = Array.from({ length: 101 }, (_, i) => i * 10);
    expect([percentile(values, 0.05), percentile(values, 0.5), percentile(values, 0.95)]).toEqual([50, 500, 950]);
    expect(percentile([1, 2, 3, 4], 0.05)).toBe(1.15);
  });

  it('tokenizes a chat prompt exactly as the training prefix of the same conversation', () => {
    const tokenizer = ModelTokenizer.load(model);
    const conversation = [
      { role: 'system', content: '你是一个会讲笑话的天气助理。' },
      { role: 'user', content: '今年武汉的冬天冷不冷?' },
      { role: 'assistant', content: '冷,但我的笑话很暖。', weight: 0 },
      { role: 'user', content: 'And tomorrow?' },
      { role: 'assistant', content: 'Sunny, with a chance of puns.' },
    ];
    const training = encodeChat(tokenizer, conversation);
    const prompt = encodeChat(tokenizer, conversation.slice(0, 4), { addGenerationPrompt: true });
    expect(training.ids.slice(0, prompt.ids.length)).toEqual(prompt.ids);
    expect(prompt.mask.every((bit) => bit === 0)).toBe(true);
    const trained = training.ids.filter((_, i) => training.mask[i] === 1);
    expect(tokenizer.decode(trained)).toBe('Sunny, with a chance of puns.<|im_end|>');
    expect(training.ids.slice(prompt.ids.length).filter((_, i) => training.mask[prompt.ids.length + i] === 1)).toEqual(trained);
  });

  it('tokenizes SentencePiece-style (Metaspace) conversations exactly as the whole rendered text', () => {
    // A Mistral-style template over a small Metaspace tokenizer: "▁" marks the start of the input only.
    const tokenizer = ModelTokenizer.load(path.resolve(import.meta.dirname, 'fixtures/metaspace-tokenizer'));
    const conversation = [
      { role: 'user', content: 'Hello' },
      { role: 'assistant', content: 'Ok' },
      { role: 'user', content: 'Hello' },
      { role: 'assistant', content: 'Ok' },
    ];
    const encoded = encodeChat(tokenizer, conversation);
    expect(encoded.ids).toEqual(tokenizer.encode(tokenizer.renderChat(conversation, { addGenerationPrompt: false })));
    expect(encoded.ids.filter((_, i) => encoded.mask[i] === 1).map((id) => tokenizer.idToToken(id))).toEqual(['O', 'k', '</s>', 'O', 'k', '</s>']);
  });
});

describe('preference files', () => {
  it('renders both answers after the same conversation, trains only the answers, and bills the shared prompt once', async () => {
    const tokenizer = ModelTokenizer.load(model);
    const pair = (i: number) => ({
      input: {
        messages: [
          { role: 'system', content: 'You answer briefly.' },
          { role: 'user', content: `Question ${i}?` },
          { role: 'assistant', content: 'An earlier turn, context only.' },
          { role: 'user', content: 'And now?' },
        ],
      },
      preferred_output: [{ role: 'assistant', content: `A cheerful answer ${i}.` }],
      non_preferred_output: [{ role: 'assistant', content: `Dry ${i}.` }],
    });
    const file = jsonl('pairs.jsonl', tenDistinct(pair));
    const arraysDir = path.join(home, 'pair-arrays');
    const report = await examineFiles(
      { training: () => fs.createReadStream(file) },
      { model: { name: 'm', tokenizer }, context: 4096, nEpochs: 1, prices: DEFAULT_PRICES, screening: DEFAULT_DATASET_SETTINGS.screening, arraysDir, show: 1 },
    );
    expect(report.format).toBe('preference');
    expect(report.can_train).toBe(true);

    // The trainer's arrays: each pair as its preferred and its non-preferred sequence, in that order.
    const ids = readNpy(path.join(arraysDir, 'train', 'input_ids.npy')).values;
    const mask = readNpy(path.join(arraysDir, 'train', 'loss_mask.npy')).values;
    const offsets = readNpy(path.join(arraysDir, 'train', 'offsets.npy')).values;
    expect(offsets).toHaveLength(21);
    const sequence = (k: number) => ({ ids: ids.slice(offsets[k]!, offsets[k + 1]!), mask: mask.slice(offsets[k]!, offsets[k + 1]!) });
    const messages = pair(0).input.messages;
    const chosen = encodeChat(tokenizer, [...messages.map((m) => ({ ...m, weight: m.role === 'assistant' ? 0 : 1 })), { role: 'assistant', content: 'A cheerful answer 0.' }]);
    expect(sequence(0)).toEqual({ ids: chosen.ids, mask: chosen.mask });
    const prompt = encodeChat(tokenizer, messages, { addGenerationPrompt: true }).ids;
    for (const side of [sequence(0), sequence(1)]) {
      expect(side.ids.slice(0, prompt.length)).toEqual(prompt);
      // Only the answer trains: the earlier assistant turn is context.
      expect(side.mask.slice(0, prompt.length).every((bit) => bit === 0)).toBe(true);
      // The answer through its end of turn trains; what the template writes after it does not.
      expect(side.mask.slice(prompt.length).join('')).toMatch(/^1+0*$/);
    }

    const counts = report.token_counts.m!;
    const chosenTrained = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18].reduce((sum, k) => sum + sequence(k).mask.reduce((a, b) => a + b, 0), 0);
    expect(counts.preference?.chosen_trained).toBe(chosenTrained);
    expect(counts.trained).toBe(chosenTrained + counts.preference!.rejected_trained);
    expect(counts.preference!.shared_prompt).toBeGreaterThanOrEqual(10 * prompt.length);
    // Billed: both sequences, their shared prompt once.
    expect(report.billing_tokens).toBe(ids.length - counts.preference!.shared_prompt);
    expect(report.shown_examples[0]!.rejected_segments!.filter((s) => s.trained).map((s) => s.text).join('')).toContain('Dry 0.');
  });
});
