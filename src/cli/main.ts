#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { ServiceError } from '../errors.js';
import { adminCommands } from './admin.js';
import { notificationAdminCommands } from './admin-notifications.js';
import { apiCommands } from './api-commands.js';
import { chatCommand } from './chat-command.js';
import { exportCommands } from './export-command.js';
import { datasetCommands, USAGE_ERROR, UsageError } from './dataset-commands.js';
import { serveCommand } from './serve.js';
import { setupCommand } from './setup-command.js';
import { usageCommand } from './usage-command.js';
import { workerCommand, workersCommand } from './worker.js';

const program = new Command('tunelab')
  .description('Self-hosted fine-tuning with OpenAI\'s API')
  .showHelpAfterError()
  // Usage errors exit 2, so scripts can tell "you called me wrong" from "the file cannot train" (1).
  .exitOverride();
setupCommand(program);
serveCommand(program);
workerCommand(program);
workersCommand(program);
datasetCommands(program);
const models = program.command('models').description('base models and fine-tunes');
adminCommands(program, models);
apiCommands(program, models);
notificationAdminCommands(program);
usageCommand(program);
chatCommand(program);
exportCommands(program);

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof CommanderError) {
    // Commander has printed its message (or the help) already.
    process.exitCode = error.exitCode === 0 ? 0 : USAGE_ERROR;
  } else if (error instanceof UsageError) {
    console.error(`error: ${error.message}`);
    process.exitCode = USAGE_ERROR;
  } else if (error instanceof (await import('openai')).APIError) {
    const param = (error.error as { param?: string } | undefined)?.param;
    console.error(`error: ${error.message}${param ? ` (param: ${param})` : ''}`);
    process.exitCode = 1;
  } else if (error instanceof ServiceError || error instanceof Error) {
    console.error(`error: ${error.message}`);
    process.exitCode = 1;
  } else throw error;
}
