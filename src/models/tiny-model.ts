import fs from 'node:fs';
import path from 'node:path';
import { runEngineCommand } from '../engine/engine-command.js';
import { BaseModelRegistry, type BaseModel } from './base-models.js';
import { trainByteLevelBpe, type PreTokenizerJson, type TokenizerJson } from './bpe-trainer.js';

/**
 * `tunelab-tiny`: the built-in base model, made on first start so the guide runs offline. Random
 * weights (a fixed seed), a byte-level BPE tokenizer the project trains from its own corpus, and a
 * ChatML chat template. It knows nothing until fine-tuned; its recipe (`tunelab.json`) is what lets
 * a full fine-tune learn the guide's 10 weather examples in 10 epochs on a laptop CPU.
 */
export const TINY_MODEL_NAME = 'tunelab-tiny';

/** The seed of the weights. */
export const TINY_MODEL_SEED = 20240601;

/** The tokenizer's corpus: text written for the project, and a list of characters (see its README). */
export const TINY_CORPUS_DIR = path.resolve(import.meta.dirname, '../../assets/tunelab-tiny/corpus');

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** At most this many learned tokens (256 bytes + merges); the corpus gives about 5,450. */
const MAX_LEARNED_TOKENS = 8192;

/**
 * Qwen2's split (GPT-4's, with single digits): contractions, letter runs with one leading space or
 * mark, single digits, punctuation runs, whitespace. A run of Han characters is a letter run like
 * an English word, so BPE merges frequent Chinese words (今天, 天气, 我们) as Qwen's and GPT-4's
 * tokenizers do, and rare characters stay single tokens.
 */
const SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const PRE_TOKENIZER: PreTokenizerJson = {
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: SPLIT_REGEX }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
  ],
};

/**
 * ChatML (Qwen's turn format, without a default system message), with tools in the Hermes form
 * Qwen's templates use: the tools' JSON in the system turn, each call an assistant writes as
 * `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, each result a `tool` turn in
 * `<tool_response>` tags. Without tools a conversation renders as plain ChatML.
 */
export const TINY_CHAT_TEMPLATE =
  "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}" +
  "{{- '<tools>' }}{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}" +
  '{%- for message in messages %}' +
  "{%- set content = message.content if message.content is string else '' %}" +
  "{%- if tools and loop.first and message.role == 'system' %}" +
  "{%- elif message.role == 'assistant' and message.tool_calls %}{{- '<|im_start|>assistant\\n' + content }}" +
  "{%- for call in message.tool_calls %}{%- if content or not loop.first %}{{- '\\n' }}{%- endif %}" +
  "{{- '<tool_call>\\n{\"name\": ' + (call.function.name | tojson) + ', \"arguments\": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' }}{%- endfor %}" +
  "{{- '<|im_end|>\\n' }}" +
  "{%- elif message.role == 'tool' %}{{- '<|im_start|>tool\\n<tool_response>\\n' + content + '\\n</tool_response><|im_end|>\\n' }}" +
  "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}{%- endif %}" +
  '{%- endfor %}' +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/**
 * The model's shape (Llama, 11.9M parameters). The weights' spread (`initializer_range` 0.05 rather
 * than transformers' 0.02) matters: at 0.02 ten epochs left the loss near 1.5, at 0.05 under 0.1.
 * Width 384 (6 heads of 64) with untied input and output embeddings is what lets ten epochs at
 * batch size 1 tie every answer to its question: the tied width-256 model learned the answers but,
 * for some example orders, began one with another question's city (engine/README.md, "tunelab-tiny").
 */
export const TINY_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  /** Set from the tokenizer: its size rounded up to a multiple of 64. */
  vocab_size: 0,
  hidden_size: 384,
  intermediate_size: 1152,
  num_hidden_layers: 4,
  num_attention_heads: 6,
  num_key_value_heads: 6,
  hidden_act: 'silu',
  max_position_embeddings: 1024,
  initializer_range: 0.05,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  attention_bias: false,
  tie_word_embeddings: false,
  torch_dtype: 'float32',
};

/**
 * The training defaults the job runner reads (`tunelab.json`): fields of the engine's spec.json,
 * except `warmup_ratio` (warmup_steps = ceil(warmup_ratio * total steps)). Peak learning rate for
 * batch size 1; higher rates, or a schedule that does not decay, ended 10 epochs with a higher
 * loss. fp32 because `auto` picks bf16 on CPUs with AMX, which was slower here for this size and
 * makes the curve depend on the CPU.
 */
export const TINY_RECIPE = {
  method: 'full',
  learning_rate: 1e-3,
  warmup_ratio: 0.1,
  lr_schedule: 'cosine',
  dtype: 'float32',
};

/** config.json for a tokenizer: TINY_CONFIG with its vocabulary size and special token ids. */
export function tinyConfig(tokenizer: TokenizerJson) {
  const size = Object.keys(tokenizer.model.vocab).length + tokenizer.added_tokens.length;
  const id = (content: string) => tokenizer.added_tokens.find((token) => token.content === content)!.id;
  return { ...TINY_CONFIG, vocab_size: Math.ceil(size / 64) * 64, bos_token_id: id('<|endoftext|>'), eos_token_id: id('<|im_end|>') };
}

/** The corpus files and how much each occurrence counts. */
function corpus() {
  const read = (file: string) => fs.readFileSync(path.join(TINY_CORPUS_DIR, file), 'utf8');
  return [
    { text: read('english.txt'), weight: 1 },
    { text: read('chinese.txt'), weight: 1 },
    // The 3,755 common characters, one a line (so no two merge): counted twice, so each reaches
    // the minimum frequency and becomes a token.
    { text: [...read('hanzi-gb2312-level1.txt').replace(/\s/g, '')].join('\n'), weight: 2 },
  ];
}

/** tokenizer.json, tokenizer_config.json and generation_config.json of tunelab-tiny. */
export function buildTinyTokenizer(): { tokenizer: TokenizerJson; tokenizerConfig: object; generationConfig: object } {
  const tokenizer = trainByteLevelBpe({
    corpus: corpus(),
    preTokenizer: PRE_TOKENIZER,
    vocabSize: MAX_LEARNED_TOKENS,
    minFrequency: 2,
    specialTokens: SPECIAL_TOKENS,
  });
  const id = (content: string) => tokenizer.added_tokens.find((token) => token.content === content)!.id;
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(tokenizer.added_tokens.map(({ id: tokenId, ...token }) => [String(tokenId), token])),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: TINY_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: TINY_CONFIG.max_position_embeddings,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: null,
  };
  const generationConfig = {
    bos_token_id: id('<|endoftext|>'),
    eos_token_id: [id('<|im_end|>'), id('<|endoftext|>')],
    pad_token_id: id('<|endoftext|>'),
    do_sample: false,
  };
  return { tokenizer, tokenizerConfig, generationConfig };
}

const building = new Map<string, Promise<BaseModel>>();

/**
 * `<modelsDir>/tunelab-tiny/`, made when absent: tokenizer files, config.json, seeded random
 * weights from the engine's `init`, generation_config.json and tunelab.json. Everything is written
 * to a hidden sibling folder first and renamed into place, so the model is complete or absent.
 * Throws when the engine cannot run (no Python with torch).
 */
export function ensureTinyModel(modelsDir: string): Promise<BaseModel> {
  const key = path.resolve(modelsDir);
  let pending = building.get(key);
  if (!pending) {
    pending = makeTinyModel(key).finally(() => building.delete(key));
    building.set(key, pending);
  }
  return pending;
}

async function makeTinyModel(modelsDir: string): Promise<BaseModel> {
  const registry = new BaseModelRegistry(modelsDir);
  const existing = registry.get(TINY_MODEL_NAME);
  if (existing) return existing;
  removeAbandonedBuilds(modelsDir);
  const temp = path.join(modelsDir, `.${TINY_MODEL_NAME}.tmp-${process.pid}-${Date.now()}`);
  try {
    fs.mkdirSync(temp);
    const { tokenizer, tokenizerConfig, generationConfig } = buildTinyTokenizer();
    const write = (file: string, value: unknown) => fs.writeFileSync(path.join(temp, file), JSON.stringify(value, null, 2) + '\n');
    write('config.json', tinyConfig(tokenizer));
    await engineInit(temp, TINY_MODEL_SEED);
    write('tokenizer.json', tokenizer);
    write('tokenizer_config.json', tokenizerConfig);
    write('generation_config.json', generationConfig);
    write('tunelab.json', TINY_RECIPE);
    try {
      fs.renameSync(temp, path.join(modelsDir, TINY_MODEL_NAME));
    } catch (error) {
      // Another process made it meanwhile: theirs stands.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    }
  } finally {
    fs.rmSync(temp, { recursive: true, force: true });
  }
  const made = registry.get(TINY_MODEL_NAME);
  if (!made) throw new Error(`${TINY_MODEL_NAME} was built but cannot be read back from ${modelsDir}`);
  return made;
}

/** Temporary folders left by a process that died while building (its pid no longer runs). */
function removeAbandonedBuilds(modelsDir: string): void {
  const pattern = new RegExp(`^\\.${TINY_MODEL_NAME}\\.tmp-(\\d+)-\\d+$`);
  for (const name of fs.readdirSync(modelsDir)) {
    const pid = Number(pattern.exec(name)?.[1]);
    if (!pid || processRuns(pid)) continue;
    fs.rmSync(path.join(modelsDir, name), { recursive: true, force: true });
  }
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `python3 -m tunelab_engine init`: random weights with `seed` into `folder` (which holds config.json). */
async function engineInit(folder: string, seed: number): Promise<void> {
  const init = await runEngineCommand(['init', '--config', path.join(folder, 'config.json'), '--seed', String(seed), '--out', folder]);
  if (init.code !== 0) {
    const error = init.events.find((event) => event.type === 'error')?.message ?? init.stderr.trim().split('\n').slice(-3).join(' ');
    throw new Error(`the engine's init of ${TINY_MODEL_NAME} failed (exit ${init.code}): ${error}`);
  }
}
