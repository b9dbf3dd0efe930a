import { get, type List, type MonthUsage } from '../api.js';
import { ErrorMessage, Loading, PageHeader } from '../components/common.js';
import { useLoad } from '../components/use-load.js';
import { count, dollars } from '../format.js';

const monthName = (month: string) =>
  new Date(`${month}-01T00:00:00Z`).toLocaleDateString(undefined, { year: 'numeric', month: 'long', timeZone: 'UTC' });

export function UsagePage() {
  const usage = useLoad((signal) => get<List<MonthUsage>>('/usage', undefined, signal), []);
  const months = usage.data?.data;
  const highest = Math.max(0, ...(months ?? []).map((month) => month.total_cost));

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
        <div class="table-scroll">
          <table class="list cards" aria-label="Usage per month">
            <thead>
              <tr>
                <th scope="col">Month</th>
                <th scope="col" class="number">Jobs</th>
                <th scope="col" class="number">Training tokens</th>
                <th scope="col" class="number">Training</th>
                <th scope="col" class="number">Input tokens</th>
                <th scope="col" class="number">Output tokens</th>
                <th scope="col" class="number">Inference</th>
                <th scope="col" class="number">Total</th>
                <th scope="col">
                  <span class="visually-hidden">Share of the highest month</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {months.map((month) => (
                <tr key={month.month}>
                  <th scope="row" class="card-title">
                    {monthName(month.month)}
                  </th>
                  <td class="number" data-label="Jobs">
                    {count(month.training_jobs)}
                  </td>
                  <td class="number" data-label="Training tokens">
                    {count(month.training_tokens)}
                  </td>
                  <td class="number" data-label="Training">
                    {dollars(month.training_cost)}
                  </td>
                  <td class="number" data-label="Input tokens">
                    {count(month.inference_input_tokens)}
                  </td>
                  <td class="number" data-label="Output tokens">
                    {count(month.inference_output_tokens)}
                  </td>
                  <td class="number" data-label="Inference">
                    {dollars(month.inference_cost)}
                  </td>
                  <td class="number" data-label="Total">
                    <strong>{dollars(month.total_cost)}</strong>
                  </td>
                  <td class="bar-cell card-title" aria-hidden="true">
                    <span class="bar training" style={{ width: `${highest ? (month.training_cost / highest) * 100 : 0}%` }} />
                    <span class="bar inference" style={{ width: `${highest ? (month.inference_cost / highest) * 100 : 0}%` }} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p class="legend muted" aria-hidden="true">
            <span class="bar training" /> training <span class="bar inference" /> inference, against the most expensive month
          </p>
        </div>
      )}
    </>
  );
}
