#!/usr/bin/env node
import { Command } from 'commander';
import OpenAI from 'openai';
import { ServiceError } from '../errors.js';
import { adminCommands } from './admin.js';
import { apiCommands } from './api-commands.js';
import { serveCommand } from './serve.js';

const program = new Command('tunelab').description('Self-hosted fine-tuning with OpenAI\'s API').showHelpAfterError();
serveCommand(program);
const models = program.command('models').description('base models and fine-tunes');
adminCommands(program, models);
apiCommands(program, models);

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof OpenAI.APIError) {
    const param = (error.error as { param?: string } | undefined)?.param;
    console.error(`error: ${error.message}${param ? ` (param: ${param})` : ''}`);
  } else if (error instanceof ServiceError || error instanceof Error) {
    console.error(`error: ${error.message}`);
  } else throw error;
  process.exitCode = 1;
}
