import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';

/**
 * Tokenizers take a moment to load (Qwen's vocabulary is 150k entries): one per model folder,
 * shared by the job pipeline and the file reports so a model is loaded once per server.
 */
export class ModelTokenizers {
  private readonly loaded = new Map<string, ModelTokenizer>();

  get(folder: string): ModelTokenizer {
    let tokenizer = this.loaded.get(folder);
    if (!tokenizer) {
      tokenizer = ModelTokenizer.load(folder);
      this.loaded.set(folder, tokenizer);
    }
    return tokenizer;
  }
}
