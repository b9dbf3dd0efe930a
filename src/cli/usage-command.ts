import type { Command } from 'commander';
import type { MonthUsage } from '../usage/usage.js';
import { connect } from './client.js';
import { printJson, printTable } from './output.js';

const money = (dollars: number) => `$${dollars.toFixed(4)}`;

/** `tunelab usage`: the key's organization's tokens and cost per month, from `GET /v1/usage`. */
export function usageCommand(program: Command): void {
  program
    .command('usage')
    .description('training and inference tokens and their cost, per month')
    .option('--month <YYYY-MM>', 'one month only')
    .option('--home <dir>', 'home folder holding the api-key file (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the API objects as JSON')
    .action(async (options: { month?: string; home?: string; json?: boolean }) => {
      const client = await connect(options.home);
      const list = await client.get<{ data: MonthUsage[] }>('/usage', { query: options.month ? { month: options.month } : {} });
      if (options.json) return printJson(list.data);
      printTable(
        list.data.map((m) => ({
          month: m.month,
          jobs: m.training_jobs,
          training_tokens: m.training_tokens,
          training_cost: money(m.training_cost),
          inference_tokens: m.inference_input_tokens + m.inference_output_tokens,
          inference_cost: money(m.inference_cost),
          total_cost: money(m.total_cost),
        })),
        ['month', 'jobs', 'training_tokens', 'training_cost', 'inference_tokens', 'inference_cost', 'total_cost'],
      );
    });
}
