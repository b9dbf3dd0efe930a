import { get, type List, type MonthUsage } from '../api.js';
import { ErrorMessage, Loading, PageHeader } from '../components/common.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { count, dollars } from '../format.js';

const monthName = (month: string) =>
  new Date(`${month}-01T00:00:00Z`).toLocaleDateString(undefined, { year: 'numeric', month: 'long', timeZone: 'UTC' });

export function UsagePage() {
  const usage = useLoad((signal) => get<List<MonthUsage>>('/usage', undefined, signal), []);
  const months = usage.data?.data;
  const highest = Math.max(0, ...(months ?? []).map((month) => month.total_cost));
  const share = (cost: number) => `${highest ? (cost / highest) * 100 : 0}%`;
  const columns: Array<Column<MonthUsage>> = [
    { label: 'Month', rowHeader: true, title: true, cell: (month) => monthName(month.month) },
    { label: 'Jobs', number: true, cell: (month) => count(month.training_jobs) },
    { label: 'Training tokens', number: true, cell: (month) => count(month.training_tokens) },
    { label: 'Training', number: true, cell: (month) => dollars(month.training_cost) },
    { label: 'Input tokens', number: true, cell: (month) => count(month.inference_input_tokens) },
    { label: 'Output tokens', number: true, cell: (month) => count(month.inference_output_tokens) },
    { label: 'Inference', number: true, cell: (month) => dollars(month.inference_cost) },
    { label: 'Total', number: true, cell: (month) => <strong>{dollars(month.total_cost)}</strong> },
    {
      label: 'Share of the highest month',
      hiddenLabel: true,
      decorative: true,
      title: true,
      class: 'bar-cell',
      cell: (month) => (
        <>
          <span class="bar training" style={{ width: share(month.training_cost) }} />
          <span class="bar inference" style={{ width: share(month.inference_cost) }} />
        </>
      ),
    },
  ];

  return (
    <>
      <PageHeader title="Usage" />
      <p class="muted">
        Training is charged for the tokens trained (tokens times epochs) of jobs that succeed; chat and completions for the tokens read and written. Prices
        are the server's (<code>prices</code> in <code>config.json</code>).
      </p>
      <ErrorMessage error={usage.error} />
      {!months ? (
        !usage.error && <Loading what="usage" />
      ) : months.length === 0 ? (
        <p class="muted">Nothing used yet.</p>
      ) : (
        <ListTable label="Usage per month" rows={months} rowKey={(month) => month.month} columns={columns}>
          <p class="legend muted" aria-hidden="true">
            <span class="bar training" /> training <span class="bar inference" /> inference, against the most expensive month
          </p>
        </ListTable>
      )}
    </>
  );
}
