import type { SelectQueryBuilder } from 'kysely';
import { invalidRequest } from '../errors.js';

export interface PageRequest {
  /** Id of the last item the client has seen; the page starts after it. */
  after?: string | undefined;
  limit: number;
  order: 'asc' | 'desc';
}

export interface Page<T> {
  data: T[];
  hasMore: boolean;
}

/**
 * Keyset pagination over `seq`: one indexed range scan however deep the page, and exact
 * under concurrent inserts. `scope` is the query already narrowed to what the caller may see,
 * so a cursor id from another organization is simply not found. `cursors` may be wider than
 * `scope`: a client deleting items as it pages still names them as cursors.
 */
export async function pageBySeq<Row extends { id: string; seq: number }>(
  scope: SelectQueryBuilder<any, any, Row>,
  request: PageRequest,
  cursors: SelectQueryBuilder<any, any, { id: string; seq: number }> = scope,
): Promise<Page<Row>> {
  let query = scope;
  if (request.after !== undefined) {
    const cursor = await cursors.where('id', '=', request.after).executeTakeFirst();
    if (!cursor) throw invalidRequest(`Invalid 'after': ${request.after} is not an item of this list.`, 'after');
    query = query.where('seq', request.order === 'desc' ? '<' : '>', cursor.seq);
  }
  const rows = await query.orderBy('seq', request.order).limit(request.limit + 1).execute();
  return { data: rows.slice(0, request.limit), hasMore: rows.length > request.limit };
}

export const mapPage = <A, B>(page: Page<A>, convert: (item: A) => B): Page<B> => ({
  data: page.data.map(convert),
  hasMore: page.hasMore,
});
