import { ServiceError } from '../errors.js';
import type { ModelService, ServableModel } from '../models/models.js';
import type { BackendLease, ServingChoice } from './backend.js';
import type { EngineBackend } from './engine-backend.js';
import type { LlamaCppBackend } from './llamacpp-backend.js';
import type { BackendSetting, BackendSettings } from './settings.js';

/** A model's newest succeeded GGUF export (of that quantization, or any when null), as a file llama.cpp loads. */
export type GgufLocator = (orgId: string, model: string, quantization: string | null) => Promise<{ path: string; quantization: string } | null>;

/** A model as it will be answered: by which backend, and how to borrow it. */
export interface ServedModel {
  model: ServableModel;
  choice: ServingChoice;
  acquire(signal?: AbortSignal): Promise<BackendLease>;
}

/**
 * Which backend answers each model (`serving.backend` and `serving.models` in config.json): the
 * engine, or llama.cpp on the model's GGUF export; `auto` takes llama.cpp where the model has a
 * GGUF export and the engine elsewhere.
 */
export class ModelServing {
  constructor(
    private readonly models: ModelService,
    private readonly engine: EngineBackend,
    private readonly llamacpp: LlamaCppBackend,
    private readonly settings: BackendSettings,
    private readonly ggufs: GgufLocator,
  ) {}

  async resolve(orgId: string, id: string): Promise<ServedModel> {
    const model = await this.models.servable(orgId, id);
    const setting: BackendSetting = this.settings.models[id] ?? { backend: this.settings.backend, quantization: this.settings.quantization };
    if (setting.backend !== 'engine') {
      const gguf = await this.ggufs(orgId, id, setting.quantization);
      if (gguf) {
        return {
          model,
          choice: { backend: 'llamacpp', quantization: gguf.quantization },
          acquire: (signal) => this.llamacpp.acquire(gguf.path, signal),
        };
      }
      if (setting.backend === 'llamacpp') {
        const quantization = setting.quantization ?? 'gguf';
        throw new ServiceError(
          'unavailable',
          `The model \`${id}\` is to be served by llama.cpp (config.json, serving), but it has no finished ${quantization} GGUF export: ` +
            `create one with \`tunelab export ${id} --format gguf${setting.quantization ? ` --quantization ${setting.quantization}` : ''}\`.`,
          { param: 'model', code: 'gguf_export_missing' },
        );
      }
    }
    return {
      model,
      choice: { backend: 'engine', quantization: null },
      acquire: (signal) => this.engine.acquire(model.weights, model.adapter, signal),
    };
  }

  /** The models loaded by either backend, and how many generations each is working on. */
  status(): Array<{ modelDir: string; generations: number }> {
    return [...this.engine.status(), ...this.llamacpp.status()];
  }

  async close(): Promise<void> {
    await Promise.all([this.engine.close(), this.llamacpp.close()]);
  }
}
