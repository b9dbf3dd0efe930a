import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from '../api.js';

export interface Loaded<T> {
  data: T | undefined;
  error: Error | undefined;
  reload: () => void;
}

/** A result with the deps it was loaded for: what was loaded for another file or model is not shown under this one. */
interface Outcome<T> {
  deps: unknown[];
  data?: T;
  error?: Error;
}

/**
 * Data a page shows: loaded when the page opens (and when `deps` change), again on `reload()`,
 * and every `everyMs` while `poll.while(data)` holds (a running job's page, say). A failed poll
 * keeps the last data and shows the error beside it; a 4xx other than 429 stops the polling.
 */
export function useLoad<T>(
  load: (signal: AbortSignal) => Promise<T>,
  deps: unknown[],
  poll?: { everyMs: number; while: (data: T) => boolean },
): Loaded<T> {
  const [outcome, setOutcome] = useState<Outcome<T>>({ deps });
  const [generation, setGeneration] = useState(0);
  const latest = useRef(load);
  latest.current = load;

  useEffect(() => {
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const value = await latest.current(abort.signal);
        if (abort.signal.aborted) return;
        setOutcome({ deps, data: value });
        if (poll?.while(value)) timer = setTimeout(run, poll.everyMs);
      } catch (failure) {
        if (abort.signal.aborted) return;
        setOutcome((last) => ({ deps, data: sameDeps(last.deps, deps) ? last.data : undefined, error: failure as Error }));
        if (poll && retriable(failure)) timer = setTimeout(run, poll.everyMs);
      }
    };
    run();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [...deps, generation]);

  const current = sameDeps(outcome.deps, deps);
  return {
    data: current ? outcome.data : undefined,
    error: current ? outcome.error : undefined,
    reload: useCallback(() => setGeneration((n) => n + 1), []),
  };
}

const sameDeps = (a: unknown[], b: unknown[]) => a.length === b.length && a.every((value, i) => Object.is(value, b[i]));

/** A refusal (a job or file that is not there, a bad request) stays one: asking again every few seconds changes nothing. */
const retriable = (failure: unknown) => !(failure instanceof ApiError && failure.status >= 400 && failure.status < 500 && failure.status !== 429);
