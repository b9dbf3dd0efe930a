import fs from 'node:fs';
import type { Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import { writePrivateFile } from '../files/durable.js';
import type { KeyRole, OrgService } from '../orgs/orgs.js';
import { isoTime, printJson, printTable } from './output.js';

interface KeyOptions {
  home?: string;
  database?: string;
}

const keyCommand = (command: Command) =>
  command
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--database <url>', 'a postgres:// URL instead of the SQLite file in the home folder', process.env.TUNELAB_DATABASE_URL);

/** Opens the home's database for the key commands. */
async function withOrgs(options: KeyOptions, work: (orgs: OrgService) => Promise<void>): Promise<void> {
  const [{ openStore }, { OrgService }] = await Promise.all([import('../store/store.js'), import('../orgs/orgs.js')]);
  const store = await openStore(options.database ?? homeLayout(resolveHome(options.home)).database);
  try {
    await work(new OrgService(store.db));
  } finally {
    await store.close();
  }
}
import { baseModelCommands } from './model-commands.js';

/**
 * Commands that change the server's own home folder directly (keys, base models): they are an
 * administrator's, so they do not go through the API a key-holder uses.
 */
export function adminCommands(program: Command, models: Command): void {
  const keys = program.command('keys').description("API keys and organizations (an owner key can do the same through /v1/organization/api_keys)");
  keyCommand(keys.command('create'))
    .description('create an API key, and its organization if it is new; prints the key')
    .requiredOption('--org <name>', 'organization name')
    .option('--name <name>', 'a name to tell the key by', '')
    .option('--role <role>', 'owner (may manage keys) or member; default owner for a new organization, member otherwise')
    .action(async (options: KeyOptions & { org: string; name: string; role?: string }) => {
      if (options.role !== undefined && options.role !== 'owner' && options.role !== 'member') throw new Error(`--role is owner or member, not ${options.role}`);
      await withOrgs(options, async (orgs) => {
        const { key, organization } = await orgs.createKey(options.org, { name: options.name, role: options.role as KeyRole | undefined });
        console.error(`API key for organization "${organization.name}" (${organization.id}); it is shown only now:`);
        console.log(key);
      });
    });
  keyCommand(keys.command('list'))
    .description("an organization's keys: prefix, name, role, created, last used, revoked")
    .option('--org <name>', 'organization name', 'personal')
    .option('--json', 'the key objects as JSON')
    .action(async (options: KeyOptions & { org: string; json?: boolean }) => {
      await withOrgs(options, async (orgs) => {
        const list = await orgs.listKeys((await orgs.byName(options.org)).id);
        if (options.json) return printJson(list);
        printTable(
          list.map((k) => ({
            id: k.id,
            key: k.redacted_value,
            name: k.name,
            role: k.role,
            created: isoTime(k.created_at),
            last_used: isoTime(k.last_used_at),
            revoked: isoTime(k.revoked_at),
          })),
          ['id', 'key', 'name', 'role', 'created', 'last_used', 'revoked'],
        );
      });
    });
  keyCommand(keys.command('revoke'))
    .description('revoke a key: its next request is refused')
    .argument('<key-id>', 'the key_... id `keys list` shows')
    .option('--org <name>', 'organization name', 'personal')
    .action(async (keyId: string, options: KeyOptions & { org: string }) => {
      await withOrgs(options, async (orgs) => {
        await orgs.revokeKey((await orgs.byName(options.org)).id, keyId);
        console.error(`Revoked ${keyId}.`);
      });
    });
  keyCommand(keys.command('rotate'))
    .description("replace a key by a new one with its name and role; prints the new key (and rewrites <home>/api-key if it held the old one)")
    .argument('<key-id>', 'the key_... id `keys list` shows')
    .option('--org <name>', 'organization name', 'personal')
    .action(async (keyId: string, options: KeyOptions & { org: string }) => {
      const home = homeLayout(resolveHome(options.home));
      await withOrgs(options, async (orgs) => {
        const inFile = fs.existsSync(home.apiKeyFile) ? await orgs.keyIdOf(fs.readFileSync(home.apiKeyFile, 'utf8').trim()) : undefined;
        const { key } = await orgs.rotateKey((await orgs.byName(options.org)).id, keyId);
        if (inFile === keyId) {
          await writePrivateFile(home.apiKeyFile, `${key}\n`);
          console.error(`Rotated ${keyId}; the new key is also in ${home.apiKeyFile}:`);
        } else console.error(`Rotated ${keyId}; the new key is shown only now:`);
        console.log(key);
      });
    });

  baseModelCommands(models);
}
