import type { ServePool } from '../engine/serve-pool.js';
import type { GenerateRequest } from '../engine/serve-process.js';
import type { BackendLease, TokenRequest } from './backend.js';
import { larkGrammar } from './grammars.js';

/** tunelab's engine: one `serve` process per model folder (`ServePool`), LoRA adapters applied per request. */
export class EngineBackend {
  constructor(private readonly pool: ServePool) {}

  async acquire(weights: string, adapter: string | null, signal?: AbortSignal): Promise<BackendLease> {
    const lease = await this.pool.acquire(weights, signal);
    return {
      info: lease.info,
      release: lease.release,
      generator: { generate: (request, cancel) => lease.process.generate(engineRequest(request, adapter), cancel) },
    };
  }

  status(): Array<{ modelDir: string; generations: number }> {
    return this.pool.status();
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

function engineRequest(request: TokenRequest, adapter: string | null): GenerateRequest {
  const { constraint, ...rest } = request;
  return { ...rest, adapter, grammar: constraint ? larkGrammar(constraint) : null };
}
