import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BYTE_VOCAB_SIZE, type ChatMessage, END_OF_TURN, decodeBytes, encodeChat, encodePrompt } from '../support/engine-byte-tokens.js';
import { writeTrainingArrays } from '../support/engine-npy.js';
import { ofType, runEngine } from '../support/engine-run.js';

/**
 * The guide's weather dataset, tokenized here (text never enters the engine), learned by a tiny
 * random model until greedy generation gives back every trained answer.
 */
const DATASET = path.resolve(import.meta.dirname, '../../examples/data/weather-jokes.jsonl');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-engine-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

// 0.9M parameters: from random weights this learns the 10 examples in about 25 epochs at batch size 1.
const TINY_CONFIG = {
  model_type: 'llama',
  vocab_size: BYTE_VOCAB_SIZE,
  hidden_size: 128,
  intermediate_size: 384,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  max_position_embeddings: 1024,
  tie_word_embeddings: true,
};

describe.skipIf(!fs.existsSync(DATASET))('engine memorizes weather-jokes.jsonl', () => {
  const conversations = fs
    .readFileSync(DATASET, 'utf8')
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => (JSON.parse(line) as { messages: ChatMessage[] }).messages);

  it('trains to a loss under 0.1 and greedy generation reproduces the answers', { timeout: 240_000 }, async () => {
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(TINY_CONFIG));
    const init = await runEngine(['init', '--config', path.join(dir, 'config.json'), '--seed', '0', '--out', path.join(dir, 'model')]);
    expect(init.code, init.stderr).toBe(0);

    writeTrainingArrays(path.join(dir, 'train'), conversations.map(encodeChat));
    const spec = {
      model: path.join(dir, 'model'),
      train_data: path.join(dir, 'train'),
      output_dir: path.join(dir, 'out'),
      work_dir: path.join(dir, 'work'),
      training: 'full',
      n_epochs: 30,
      batch_size: 1,
      learning_rate: 3e-3,
      warmup_steps: 10,
      seq_len: 512,
      seed: 0,
      dtype: 'float32',
    };
    fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify(spec));
    const train = await runEngine(['train', '--spec', path.join(dir, 'spec.json')]);
    expect(train.code, train.stderr).toBe(0);
    const steps = ofType(train.events, 'step');
    expect(steps).toHaveLength(300);
    // The mean over the last epoch, not one example's loss.
    const lastEpoch = steps.slice(-10).map((s) => s.train_loss!);
    expect(lastEpoch.reduce((a, b) => a + b, 0) / lastEpoch.length).toBeLessThan(0.1);
    expect(ofType(train.events, 'checkpoint')).toHaveLength(30);
    expect(train.events.at(-1)!.type).toBe('done');
    const done = ofType(train.events, 'done')[0]!;

    for (const messages of conversations) {
      const answer = messages.at(-1)!.content;
      const prompt = encodePrompt(messages.slice(0, -1));
      const run = await runEngine([
        'generate', '--model', String(done.path), '--input-ids', prompt.join(','),
        '--max-new-tokens', '200', '--stop-ids', String(END_OF_TURN), '--temperature', '0',
      ]);
      expect(run.code, run.stderr).toBe(0);
      const generated = ofType(run.events, 'generated')[0]!;
      expect(generated.finish_reason).toBe('stop');
      expect(decodeBytes(generated.output_ids)).toBe(answer);
    }
  });
});
