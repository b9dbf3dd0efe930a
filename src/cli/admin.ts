import type { Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import { baseModelCommands } from './model-commands.js';

/**
 * Commands that change the server's own home folder directly (keys, base models): they are an
 * administrator's, so they do not go through the API a key-holder uses.
 */
export function adminCommands(program: Command, models: Command): void {
  program
    .command('keys')
    .description('API keys and organizations')
    .command('create')
    .description('create an API key, and its organization if it is new; prints the key')
    .requiredOption('--org <name>', 'organization name')
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--database <url>', 'a postgres:// URL instead of the SQLite file in the home folder', process.env.TUNELAB_DATABASE_URL)
    .action(async (options: { org: string; home?: string; database?: string }) => {
      const [{ openStore }, { OrgService }] = await Promise.all([import('../store/store.js'), import('../orgs/orgs.js')]);
      const store = await openStore(options.database ?? homeLayout(resolveHome(options.home)).database);
      try {
        const { key, organization } = await new OrgService(store.db).createKey(options.org);
        console.error(`API key for organization "${organization.name}" (${organization.id}); it is shown only now:`);
        console.log(key);
      } finally {
        await store.close();
      }
    });

  baseModelCommands(models);
}
