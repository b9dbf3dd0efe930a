import { useEffect, useState } from 'preact/hooks';

/**
 * Pages are addressed by the URL's fragment (`#/jobs/ftjob-...`): the server serves one static
 * page at /ui/, and a reload or a shared link lands on the same page.
 */
export interface Route {
  /** The path's parts, decoded: `#/jobs/ftjob-1` is ['jobs', 'ftjob-1']. */
  parts: string[];
  query: URLSearchParams;
}

export function currentRoute(): Route {
  const [path = '', query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  return { parts: path.split('/').filter(Boolean).map(decodePart), query: new URLSearchParams(query) };
}

/** A malformed escape (`%E0`) is kept as written, so the page says there is no such page rather than failing. */
function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const changed = () => setRoute(currentRoute());
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}

/** A link to a page: `href('jobs', id)`, with an optional query. */
export function href(...parts: Array<string | Record<string, string>>): string {
  const query = parts.find((part): part is Record<string, string> => typeof part === 'object');
  const path = parts.filter((part): part is string => typeof part === 'string').map(encodeURIComponent).join('/');
  return `#/${path}${query ? `?${new URLSearchParams(query)}` : ''}`;
}

export function navigate(to: string): void {
  location.hash = to;
}
