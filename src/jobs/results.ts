const COLUMNS = ['step', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_mean_token_accuracy'] as const;

/** Where each column's value is in a metrics event's data. */
const SOURCE: Record<(typeof COLUMNS)[number], string> = {
  step: 'step',
  train_loss: 'train_loss',
  train_accuracy: 'train_mean_token_accuracy',
  valid_loss: 'valid_loss',
  valid_mean_token_accuracy: 'valid_mean_token_accuracy',
};

/** The job's result file, as OpenAI's: one row per step, empty cells where nothing was computed. */
export function resultsCsv(metrics: Array<Record<string, unknown>>): string {
  const rows = metrics.map((data) =>
    COLUMNS.map((column) => {
      const value = data[SOURCE[column]];
      return typeof value === 'number' && Number.isFinite(value) ? String(value) : '';
    }).join(','),
  );
  return `${[COLUMNS.join(','), ...rows].join('\n')}\n`;
}
