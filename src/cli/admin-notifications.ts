import type { Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import type { NotificationService } from '../notifications/notifications.js';
import { isoTime, printTable } from './output.js';

interface AdminOptions {
  org: string;
  home?: string;
  database?: string;
}

const adminOptions = (command: Command) =>
  command
    .option('--org <name>', 'organization name', 'personal')
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--database <url>', 'a postgres:// URL instead of the SQLite file in the home folder', process.env.TUNELAB_DATABASE_URL);

/** Opens the home's database, finds the organization, and hands both to `work`. */
async function withOrg(options: AdminOptions, work: (notifications: NotificationService, orgId: string) => Promise<void>) {
  const [{ openStore }, { NotificationService }, { SecretBox }] = await Promise.all([
    import('../store/store.js'),
    import('../notifications/notifications.js'),
    import('../store/secret-box.js'),
  ]);
  const home = homeLayout(resolveHome(options.home));
  const secrets = await SecretBox.load(home.secretKeyFile);
  const store = await openStore(options.database ?? home.database);
  try {
    const org = await store.db.selectFrom('organizations').select('id').where('name', '=', options.org).executeTakeFirst();
    if (!org) throw new Error(`No organization named "${options.org}" (tunelab keys create --org ${options.org} makes one).`);
    await work(new NotificationService(store.db, secrets, null), org.id);
  } finally {
    await store.close();
  }
}

/**
 * `tunelab admin ...`: an organization's notification settings, written straight into the home
 * folder's database as `keys create` does. The server reads them when a job finishes.
 */
export function notificationAdminCommands(program: Command): void {
  const admin = program.command('admin').description("an organization's notification settings (webhooks, e-mail)");
  const webhooks = admin.command('webhooks').description('URLs that receive fine_tuning.job.succeeded|failed|cancelled events');

  adminOptions(webhooks.command('add').argument('<url>').description('add an endpoint; prints its signing secret, shown only now')).action(
    (url: string, options: AdminOptions) =>
      withOrg(options, async (notifications, orgId) => {
        const endpoint = await notifications.addEndpoint(orgId, url);
        console.error(`Webhook ${endpoint.id} -> ${endpoint.url} for "${options.org}". Its signing secret (Standard Webhooks), shown only now:`);
        console.log(endpoint.secret);
      }),
  );

  adminOptions(webhooks.command('list').description("the organization's endpoints")).action((options: AdminOptions) =>
    withOrg(options, async (notifications, orgId) => {
      const endpoints = await notifications.listEndpoints(orgId);
      printTable(
        endpoints.map((e) => ({ ...e, created: isoTime(e.created_at) })),
        ['id', 'url', 'created'],
      );
    }),
  );

  adminOptions(webhooks.command('remove').argument('<id>').description('remove an endpoint; what was still to be sent to it is dropped')).action(
    (id: string, options: AdminOptions) =>
      withOrg(options, async (notifications, orgId) => {
        await notifications.removeEndpoint(orgId, id);
        console.log(`Removed ${id}`);
      }),
  );

  adminOptions(
    admin
      .command('org')
      .description('organization settings')
      .command('email')
      .argument('<address>', 'where job e-mails go, or "none" to stop them')
      .description('the address finished jobs are e-mailed to (when config.json has an smtp section)'),
  ).action((address: string, options: AdminOptions) =>
    withOrg(options, async (notifications, orgId) => {
      await notifications.setEmail(orgId, address === 'none' ? null : address);
      console.log(address === 'none' ? `No e-mails for "${options.org}"` : `Job e-mails for "${options.org}" go to ${address}`);
    }),
  );
}
