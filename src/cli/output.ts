/** Rows as aligned columns, for people; `--json` prints the API objects instead, for programs. */
export function printTable(rows: Record<string, unknown>[], columns: string[]): void {
  if (rows.length === 0) {
    console.log('(none)');
    return;
  }
  const cell = (value: unknown) => (value === null || value === undefined ? '-' : String(value));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(columns.map((c) => c.toUpperCase())));
  for (const row of rows) console.log(line(columns.map((c) => cell(row[c]))));
}

export const printJson = (value: unknown) => console.log(JSON.stringify(value, null, 2));

export const isoTime = (seconds: number | null | undefined) =>
  seconds ? new Date(seconds * 1000).toISOString().replace('.000Z', 'Z') : null;


/** "4.2 s", "42 s", "7.5 min", "2.1 h". */
export const durationText = (seconds: number) =>
  seconds < 120 ? `${seconds.toFixed(seconds < 10 ? 1 : 0)} s` : seconds < 7200 ? `${(seconds / 60).toFixed(1)} min` : `${(seconds / 3600).toFixed(1)} h`;
