import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { ModelExport } from '../export/exports.js';
import { connect } from './client.js';
import { UsageError } from './dataset-commands.js';
import { printJson } from './output.js';

const POLL_MS = 1000;

interface ExportOptions {
  format: string;
  quantization?: string;
  out?: string;
  home?: string;
  json?: boolean;
}

/**
 * `tunelab export MODEL --format peft|merged|gguf|gguf_lora`: asks the server for an export (`/v1/exports`),
 * follows its progress, downloads the archive and unpacks it into `--out`. `tunelab setup --export`
 * installs what GGUF export needs on the server's own machine.
 */
export function exportCommands(program: Command): void {
  program
    .command('export')
    .argument('<model>', 'a fine-tune (ft:...), one of its checkpoints (ft:...:ckpt-step-N), or a base model (merged or gguf)')
    .description('export a fine-tune or a base model: a PEFT adapter, merged Hugging Face weights, or a GGUF for llama.cpp and Ollama')
    .requiredOption('--format <format>', 'peft, merged, gguf or gguf_lora (the base as GGUF and the adapter as a GGUF LoRA adapter)')
    .option('--quantization <q>', 'gguf only: f16 (default), bf16, q8_0, q4_k_m or f32')
    .option('--out <dir>', 'where to unpack it (default: a folder named after the model, here)')
    .option('--home <dir>', 'home folder holding the api-key file (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the finished export object as JSON')
    .action(async (model: string, options: ExportOptions) => {
      const client = await connect(options.home);
      const body = { model, format: options.format, ...(options.quantization ? { quantization: options.quantization } : {}) };
      let job = await client.post<ModelExport>('/exports', { body });
      let shown = '';
      while (job.status === 'queued' || job.status === 'running') {
        const line = `${job.status}${job.stage ? `: ${job.stage}` : ''} (${Math.round(job.progress * 100)}%)`;
        if (line !== shown) console.error(line);
        shown = line;
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        job = await client.get<ModelExport>(`/exports/${job.id}`);
      }
      if (job.status === 'failed') throw new Error(`export ${job.id} failed: ${job.error?.message ?? 'no reason given'}`);
      const out = path.resolve(options.out ?? job.filename.replace(/\.tar\.gz$/, ''));
      if (fs.existsSync(out) && fs.readdirSync(out).length) throw new UsageError(`${out} exists and is not empty; pick another --out`);
      fs.mkdirSync(out, { recursive: true });
      const response = await client.get<Response>(`/exports/${job.id}/content`, { __binaryResponse: true });
      const tar = await import('tar');
      // The archive holds one folder named after the model: its content goes into `out`.
      await pipeline(Readable.fromWeb(response.body as never), tar.x({ cwd: out, strip: 1 }));
      if (options.json) printJson(job);
      else {
        console.log(`Exported ${model} (${job.format}${job.quantization ? ` ${job.quantization}` : ''}) to ${out}`);
        if (job.checks) {
          const share = (job.checks.equal_token_share * 100).toFixed(1);
          console.log(`Checked with ${job.checks.runtime}: ${job.checks.prompts.length} prompts from the training file, ${share}% of tunelab's tokens equal.`);
        }
      }
    });
}
