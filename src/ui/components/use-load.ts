import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export interface Loaded<T> {
  data: T | undefined;
  error: Error | undefined;
  reload: () => void;
}

/**
 * Data a page shows: loaded when the page opens (and when `deps` change), again on `reload()`,
 * and every `everyMs` while `keepPolling(data)` holds (a running job's page, say). A failed poll
 * keeps the last data and shows the error beside it.
 */
export function useLoad<T>(
  load: (signal: AbortSignal) => Promise<T>,
  deps: unknown[],
  poll?: { everyMs: number; while: (data: T) => boolean },
): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<Error>();
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
        setData(value);
        setError(undefined);
        if (poll?.while(value)) timer = setTimeout(run, poll.everyMs);
      } catch (failure) {
        if (abort.signal.aborted) return;
        setError(failure as Error);
        if (poll) timer = setTimeout(run, poll.everyMs);
      }
    };
    run();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [...deps, generation]);

  return { data, error, reload: useCallback(() => setGeneration((n) => n + 1), []) };
}
