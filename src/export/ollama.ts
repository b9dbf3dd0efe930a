import type { ModelTokenizer } from '../tokenizer/model-tokenizer.js';

export interface RunInstructions {
  /** The exported model's name for Ollama: letters, digits, dots, dashes. */
  name: string;
  ggufFile: string;
  /** A GGUF LoRA adapter applied over `ggufFile`, or null. */
  adapterFile: string | null;
  tokenizer: ModelTokenizer;
  /** The chat template's source, to tell its family. */
  chatTemplate: string;
  /** The one system message every training example began with, if there was one. */
  system: string | null;
}

/** Whether the template takes `enable_thinking` (Qwen3): tunelab trains and serves with thinking off. */
export const hasThinkingSwitch = (template: string) => template.includes('enable_thinking');

const quoted = (text: string) => `"""${text.replaceAll('"""', '\\"\\"\\"')}"""`;

/**
 * The turn format in Ollama's template language, for the families written out here (ChatML:
 * Qwen2, Qwen3, tunelab-tiny); null for others, whose Modelfile then leaves TEMPLATE to what
 * Ollama reads from the GGUF's own chat template. Qwen3's template renders an empty thinking
 * block after the assistant header when thinking is off, as tunelab trained it.
 */
export function ollamaTemplate(chatTemplate: string): string | null {
  if (!chatTemplate.includes('<|im_start|>')) return null;
  const thinking = hasThinkingSwitch(chatTemplate) ? '<think>\n\n</think>\n\n' : '';
  return `{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n${thinking}`;
}

/** An Ollama Modelfile: FROM the GGUF (and ADAPTER, the LoRA one), the turn format, a stop per end-of-turn token, the job's system message. */
export function modelfile(run: RunInstructions): string {
  const lines = [`FROM ./${run.ggufFile}`];
  if (run.adapterFile) lines.push(`ADAPTER ./${run.adapterFile}`);
  const template = ollamaTemplate(run.chatTemplate);
  if (template) lines.push(`TEMPLATE ${quoted(template)}`);
  for (const token of run.tokenizer.endOfTurnTokens) lines.push(`PARAMETER stop ${JSON.stringify(token)}`);
  if (run.system !== null) lines.push(`SYSTEM ${quoted(run.system)}`);
  return `${lines.join('\n')}\n`;
}

/** The export's README: what it is, and the command that runs it in Ollama and in llama.cpp. */
export function readme(run: RunInstructions, summary: string): string {
  // llama.cpp's switch for `enable_thinking: false` (its --chat-template-kwargs spelling is deprecated).
  const thinking = hasThinkingSwitch(run.chatTemplate) ? ' --reasoning off' : '';
  const system = run.system !== null ? ` -sys ${JSON.stringify(run.system)}` : '';
  return [
    `# ${run.name}`,
    '',
    summary,
    '',
    '## Ollama',
    '',
    '```sh',
    `ollama create ${run.name} -f Modelfile && ollama run ${run.name}`,
    '```',
    '',
    '## llama.cpp',
    '',
    '```sh',
    `llama-cli -m ${run.ggufFile}${run.adapterFile ? ` --lora ${run.adapterFile}` : ''} --jinja${thinking}${system}`,
    '```',
    '',
    "`--jinja` renders the chat template embedded in the GGUF, the one the model was trained with.",
    '',
  ].join('\n');
}
