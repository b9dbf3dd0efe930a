const COLUMNS = ['step', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_mean_token_accuracy'] as const;
/** A DPO job's file adds its pair metrics. */
const DPO_COLUMNS = ['train_reward_accuracy', 'train_reward_margin', 'train_chosen_reward', 'train_rejected_reward', 'valid_reward_accuracy', 'valid_reward_margin'] as const;

/** Where each column's value is in a metrics event's data (the rest are named as they are there). */
const SOURCE: Partial<Record<(typeof COLUMNS)[number], string>> = {
  train_accuracy: 'train_mean_token_accuracy',
};

/** The job's result file, as OpenAI's: one row per step, empty cells where nothing was computed. */
export function resultsCsv(metrics: Array<Record<string, unknown>>): string {
  const dpo = metrics.some((data) => 'train_reward_accuracy' in data);
  const columns: readonly string[] = dpo ? [...COLUMNS, ...DPO_COLUMNS] : COLUMNS;
  const rows = metrics.map((data) =>
    columns
      .map((column) => {
        const value = data[SOURCE[column as (typeof COLUMNS)[number]] ?? column];
        return typeof value === 'number' && Number.isFinite(value) ? String(value) : '';
      })
      .join(','),
  );
  return `${[columns.join(','), ...rows].join('\n')}\n`;
}
