import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { examineFiles, trainingContext } from '../src/datasets/doctor.js';
import { DEFAULT_DATASET_SETTINGS } from '../src/datasets/settings.js';
import { checkModelFolder, modelContextLength } from '../src/models/base-models.js';
import { buildTinyTokenizer, ensureTinyModel, TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { encodeChat } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { ofType, runEngine } from './support/engine-run.js';

const DATASET = path.resolve(import.meta.dirname, '../examples/data/weather-jokes.jsonl');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-tiny-'));
const modelsDir = path.join(dir, 'models');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('tunelab-tiny', () => {
  let folder: string;
  let tokenizer: ModelTokenizer;

  beforeAll(async () => {
    folder = (await ensureTinyModel(modelsDir)).path;
    tokenizer = ModelTokenizer.load(folder);
  }, 120_000);

  it('is made once, complete, in Hugging Face layout, and reused', async () => {
    expect(folder).toBe(path.join(modelsDir, TINY_MODEL_NAME));
    expect(() => checkModelFolder(folder)).not.toThrow();
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'tunelab.json']) {
      expect(fs.existsSync(path.join(folder, file)), file).toBe(true);
    }
    // Only the model: the temporary build folder is gone.
    expect(fs.readdirSync(modelsDir)).toEqual([TINY_MODEL_NAME]);
    const config = JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8'));
    expect(config.model_type).toBe('llama');
    expect(config.vocab_size).toBeGreaterThanOrEqual(tokenizer.endOfTurnIds[0]! + 1);
    expect(modelContextLength(folder)).toBe(1024);
    expect(JSON.parse(fs.readFileSync(path.join(folder, 'tunelab.json'), 'utf8'))).toMatchObject({ method: 'full' });

    const weights = fs.statSync(path.join(folder, 'model.safetensors')).mtimeMs;
    const again = await ensureTinyModel(modelsDir);
    expect(again.path).toBe(folder);
    expect(fs.statSync(path.join(folder, 'model.safetensors')).mtimeMs).toBe(weights);
  });

  it('has a deterministic tokenizer with a few thousand tokens', () => {
    const first = buildTinyTokenizer().tokenizer;
    expect(JSON.stringify(first)).toBe(JSON.stringify(buildTinyTokenizer().tokenizer));
    expect(fs.readFileSync(path.join(folder, 'tokenizer.json'), 'utf8')).toBe(JSON.stringify(first, null, 2) + '\n');
    const size = Object.keys(first.model.vocab).length;
    expect(size).toBeGreaterThan(2000);
    expect(size).toBeLessThan(8192);
    expect(first.added_tokens.map((token) => token.content)).toEqual(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);
  });

  it('round-trips English, Chinese and any other string', () => {
    const texts = [
      'The weather today is mild and clear, with a light wind from the west.',
      '今年武汉的冬天冷不冷?',
      '深圳的冬天不冷,但我的冷笑话可能会让你打寒颤!',
      'naïve café, ünïcödé 😀 and control \u0001 characters\tand\r\nnewlines  ',
      '{"player": "Richardson", "sport": "athletics"}',
    ];
    for (const text of texts) expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    // Every common Chinese character (GB 2312 level 1) is one token, and frequent words merge as in
    // Qwen's and GPT-4's tokenizers; English words are mostly one or two tokens.
    const hanzi = fs.readFileSync(path.resolve(import.meta.dirname, '../assets/tunelab-tiny/corpus/hanzi-gb2312-level1.txt'), 'utf8').replace(/\s/g, '');
    expect([...hanzi]).toHaveLength(3755);
    for (const char of hanzi) expect(tokenizer.encode(char), char).toHaveLength(1);
    for (const word of ['今天', '天气', '我们', '时候']) expect(tokenizer.encode(word), word).toHaveLength(1);
    expect(tokenizer.encode('今年武汉的冬天冷不冷').length).toBeLessThan(10);
    expect(tokenizer.encode(' the weather today').length).toBeLessThanOrEqual(4);
    // Special tokens written in text are recognized as one id.
    expect(tokenizer.encode('<|im_start|>user\n')[0]).toBe(tokenizer.encode('<|im_start|>')[0]);
  });

  it('renders ChatML and trains the assistant content and <|im_end|>', () => {
    const messages = [
      { role: 'system', content: '你是一个会讲笑话的天气助理。' },
      { role: 'user', content: '今年武汉的冬天冷不冷?' },
      { role: 'assistant', content: '武汉的冬天很冷!' },
    ];
    expect(tokenizer.renderChat(messages, { addGenerationPrompt: false })).toBe(
      '<|im_start|>system\n你是一个会讲笑话的天气助理。<|im_end|>\n<|im_start|>user\n今年武汉的冬天冷不冷?<|im_end|>\n' +
        '<|im_start|>assistant\n武汉的冬天很冷!<|im_end|>\n',
    );
    expect(tokenizer.renderChat(messages.slice(0, 2), { addGenerationPrompt: true }).endsWith('<|im_start|>assistant\n')).toBe(true);

    expect(tokenizer.eosToken).toBe('<|im_end|>');
    const imEnd = tokenizer.encode('<|im_end|>')[0]!;
    expect(tokenizer.endOfTurnIds[0]).toBe(imEnd);
    const encoded = encodeChat(tokenizer, messages);
    const trained = encoded.ids.filter((_, i) => encoded.mask[i] === 1);
    expect(trained).toEqual([...tokenizer.encode('武汉的冬天很冷!'), imEnd]);
    // The prompt is exactly the untrained prefix of the training sequence.
    const prompt = encodeChat(tokenizer, messages.slice(0, 2), { addGenerationPrompt: true }).ids;
    expect(encoded.ids.slice(0, prompt.length)).toEqual(prompt);
    expect(encoded.mask.slice(0, prompt.length).every((bit) => bit === 0)).toBe(true);
  });

  it.skipIf(!fs.existsSync(DATASET))(
    'learns the weather dataset in 10 epochs at batch size 1 with its recipe, and answers the trained questions',
    { timeout: 600_000 },
    async () => {
      // As the job pipeline does it: the dataset doctor writes the arrays through the model's tokenizer.
      const work = path.join(dir, 'job');
      const report = await examineFiles(
        { training: () => fs.createReadStream(DATASET) },
        {
          model: { name: TINY_MODEL_NAME, tokenizer },
          context: trainingContext(modelContextLength(folder)),
          nEpochs: null,
          prices: DEFAULT_DATASET_SETTINGS.prices,
          screening: DEFAULT_DATASET_SETTINGS.screening,
          arraysDir: work,
        },
      );
      expect(report.can_train).toBe(true);
      // Every character of the dataset is in the vocabulary (none falls back to UTF-8 bytes).
      const text = fs.readFileSync(DATASET, 'utf8');
      for (const char of new Set(text.match(/\p{Script=Han}/gu))) expect(tokenizer.encode(char), char).toHaveLength(1);
      expect(report.n_epochs).toBe(10);

      // The runner's spec: tunelab.json's fields, warmup from its ratio, the rest at their defaults.
      const { warmup_ratio: warmupRatio, ...recipe } = JSON.parse(fs.readFileSync(path.join(folder, 'tunelab.json'), 'utf8'));
      const nEpochs = 10;
      const totalSteps = nEpochs * 10;
      const spec = {
        ...recipe,
        model: folder,
        train_data: path.join(work, 'train'),
        output_dir: path.join(work, 'out'),
        work_dir: work,
        n_epochs: nEpochs,
        batch_size: 1,
        warmup_steps: Math.ceil(warmupRatio * totalSteps),
      };
      fs.writeFileSync(path.join(work, 'spec.json'), JSON.stringify(spec));
      const train = await runEngine(['train', '--spec', path.join(work, 'spec.json')]);
      expect(train.code, train.stderr).toBe(0);
      const steps = ofType(train.events, 'step');
      expect(steps).toHaveLength(totalSteps);
      const lastEpoch = steps.filter((step) => step.epoch === nEpochs).map((step) => step.train_loss!);
      expect(lastEpoch.reduce((a, b) => a + b, 0) / lastEpoch.length).toBeLessThan(0.1);
      expect(train.events.at(-1)!.type).toBe('done');
      const done = ofType(train.events, 'done')[0]!;

      const conversations = fs
        .readFileSync(DATASET, 'utf8')
        .split('\n')
        .filter((line) => line.trim())
        .map((line) => (JSON.parse(line) as { messages: Array<{ role: string; content: string }> }).messages);
      const misses: string[] = [];
      for (const messages of conversations) {
        const prompt = encodeChat(tokenizer, messages.slice(0, -1), { addGenerationPrompt: true }).ids;
        const run = await runEngine([
          'generate', '--model', String(done.path), '--input-ids', prompt.join(','), '--max-new-tokens', '60',
          '--stop-ids', tokenizer.endOfTurnIds.join(','), '--temperature', '0',
        ]);
        expect(run.code, run.stderr).toBe(0);
        const answer = tokenizer.decode(ofType(run.events, 'generated')[0]!.output_ids);
        if (answer !== messages.at(-1)!.content) misses.push(`${messages.at(-1)!.content} -> ${answer}`);
      }
      // Every answer comes back exactly (engine/README.md, "tunelab-tiny", has the figures).
      expect(misses, misses.join('\n')).toEqual([]);
    },
  );
});
