import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { type TestServer, onPostgres, startTestServer } from './support/server.js';

interface ApiKey {
  id: string;
  name: string;
  redacted_value: string;
  role: 'owner' | 'member';
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

const listKeys = async (client: OpenAI) => (await client.get<{ data: ApiKey[] }>('/organization/api_keys')).data;

const refused = (promise: Promise<unknown>) => promise.then(() => null, (error: unknown) => error as InstanceType<typeof OpenAI.APIError>);

describe('API keys through the API', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(() => t.cleanup());

  it('an owner lists the keys (prefix, name, created, last used); a member may not', async () => {
    await t.client.models.list();
    const [first] = await listKeys(t.client);
    expect(first).toMatchObject({ name: 'first key', role: 'owner', redacted_value: `${t.apiKey.slice(0, 10)}****`, revoked_at: null });
    expect(first!.last_used_at).toBeGreaterThanOrEqual(first!.created_at);
    expect(JSON.stringify(await listKeys(t.client))).not.toContain(t.apiKey.slice(10, 20));

    const { key } = await t.server.services.orgs.createKey('personal', { name: 'ci' });
    const member = t.clientFor(key);
    expect((await member.models.list()).data.length).toBeGreaterThan(0);
    const error = await refused(listKeys(member));
    expect(error).toMatchObject({ status: 403, code: 'insufficient_permissions' });
    // Oldest first; keys made in the same second may come in either order.
    expect((await listKeys(t.client)).map((k) => [k.name, k.role]).sort()).toEqual([
      ['ci', 'member'],
      ['first key', 'owner'],
    ]);
  });

  it('a revoked key is refused on its next request', async () => {
    const { key, apiKey } = await t.server.services.orgs.createKey('personal', { name: 'laptop' });
    const laptop = t.clientFor(key);
    await laptop.files.list();
    expect(await t.client.delete(`/organization/api_keys/${apiKey.id}`)).toEqual({ object: 'organization.api_key.deleted', id: apiKey.id, deleted: true });
    const error = await refused(laptop.files.list());
    expect(error).toMatchObject({ status: 401, code: 'invalid_api_key' });
    expect((await listKeys(t.client)).find((k) => k.id === apiKey.id)?.revoked_at).toBeGreaterThan(0);
    expect(await refused(t.client.delete(`/organization/api_keys/${apiKey.id}`))).toMatchObject({ status: 400, code: 'key_revoked' });
  });

  it("rotating gives a new key with the old one's name and role and refuses the old one; the last owner key cannot be revoked", async () => {
    const owner = (await listKeys(t.client)).find((k) => k.role === 'owner')!;
    expect(await refused(t.client.delete(`/organization/api_keys/${owner.id}`))).toMatchObject({ status: 400, code: 'last_owner_key' });
    const rotated = await t.client.post<ApiKey & { value: string; replaces: string }>(`/organization/api_keys/${owner.id}/rotate`);
    expect(rotated).toMatchObject({ name: 'first key', role: 'owner', replaces: owner.id });
    expect(rotated.value).toMatch(/^sk-tl-/);
    expect(await refused(t.client.models.list())).toMatchObject({ status: 401 });
    const renewed = t.clientFor(rotated.value);
    expect((await listKeys(renewed)).filter((k) => k.revoked_at === null).map((k) => k.name).sort()).toEqual(['ci', 'first key']);
    const other = t.clientFor((await t.server.services.orgs.createKey('other-corp')).key);
    expect(await refused(other.delete(`/organization/api_keys/${rotated.id}`))).toMatchObject({ status: 404 });
  });
});

describe.skipIf(onPostgres)('tunelab keys', () => {
  let t: TestServer;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    t = await startTestServer();
    const { OPENAI_API_KEY: _k, OPENAI_BASE_URL: _u, TUNELAB_API_KEY: _t, TUNELAB_BASE_URL: _b, TUNELAB_DATABASE_URL: _d, ...rest } = process.env;
    env = rest;
  });
  afterAll(() => t.cleanup());
  const tunelab = (...args: string[]) => runCli([...args, '--home', t.home], { env });

  it('lists, revokes and rotates keys in the home folder the server uses; rotate rewrites the api-key file that held the old key', async () => {
    const created = await tunelab('keys', 'create', '--org', 'personal', '--name', 'build box');
    expect(created.code).toBe(0);
    const buildKey = created.stdout.trim();
    const listed = await tunelab('keys', 'list');
    expect(listed.stdout).toMatch(/^ID\s+KEY\s+NAME\s+ROLE\s+CREATED\s+LAST_USED\s+REVOKED\n/);
    const rows = [...listed.stdout.matchAll(/^(key_\w+)\s+(sk-tl-\w{4}\*{4})\s+(first key|build box)\s+(owner|member)/gm)];
    expect(rows.map((m) => [m[3], m[4]]).sort()).toEqual([
      ['build box', 'member'],
      ['first key', 'owner'],
    ]);
    const idOf = (name: string) => rows.find((m) => m[3] === name)![1]!;

    expect(await tunelab('keys', 'revoke', idOf('build box'))).toMatchObject({ code: 0 });
    expect(await refused(t.clientFor(buildKey).models.list())).toMatchObject({ status: 401 });

    const rotated = await tunelab('keys', 'rotate', idOf('first key'));
    expect(rotated).toMatchObject({ code: 0, stderr: expect.stringContaining(`the new key is also in ${path.join(t.home, 'api-key')}`) });
    const newKey = rotated.stdout.trim();
    expect(fs.readFileSync(path.join(t.home, 'api-key'), 'utf8')).toBe(`${newKey}\n`);
    expect((fs.statSync(path.join(t.home, 'api-key')).mode & 0o777).toString(8)).toBe('600');
    expect(await refused(t.client.models.list())).toMatchObject({ status: 401 });
    expect((await t.clientFor(newKey).models.list()).data.length).toBeGreaterThan(0);
  });
});
