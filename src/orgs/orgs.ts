import { createHash } from 'node:crypto';
import type { Selectable } from 'kysely';
import { ServiceError, invalidRequest, noSuch } from '../errors.js';
import { newId, randomToken, unixSeconds } from '../ids.js';
import type { ApiKeyTable } from '../store/schema.js';
import type { Db } from '../store/store.js';

export interface Organization {
  id: string;
  name: string;
}

export type KeyRole = ApiKeyTable['role'];

/** Who made a request: the organization, and the key it came with. */
export interface Caller extends Organization {
  keyId: string;
  keyRole: KeyRole;
}

/**
 * The organizations that administer the server (config.json's models.pull_organizations): they add
 * the base models every organization shares and see the workers that train every organization's jobs.
 */
export class Administrators {
  constructor(private readonly names: readonly string[]) {}

  includes(org: Organization): boolean {
    return this.names.includes(org.name);
  }

  /** Throws `permission` unless `org` administers the server; `refused` says what it may not do, and why. */
  require(org: Organization, refused: string): void {
    if (!this.includes(org)) {
      throw new ServiceError('permission', `Organization "${org.name}" may not ${refused}. The administrator lists those that may in config.json (models.pull_organizations).`);
    }
  }
}

/** Ours (`GET /v1/organization`): whom a key speaks for and what it may do, so a client shows only what it may use. */
export interface OrganizationInfo {
  object: 'organization';
  id: string;
  name: string;
  /** The key's role: an owner manages the organization's keys. */
  key_role: KeyRole;
  /** Whether the organization administers the server: it may add base models and see the workers. */
  administrator: boolean;
}

export interface CreatedKey {
  key: string;
  /** The key as listings show it. */
  apiKey: ApiKey;
  organization: Organization;
}

/** Ours, shaped like OpenAI's project API keys: the key itself is shown only when made. */
export interface ApiKey {
  object: 'organization.api_key';
  id: string;
  name: string;
  /** The key's first characters and a mask, to tell keys apart. */
  redacted_value: string;
  role: KeyRole;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

export interface NewKeyOptions {
  name?: string | undefined;
  /** Default: `owner` for the key that creates the organization, `member` for later ones. */
  role?: KeyRole | undefined;
  /** Runs inside the transaction: if it throws, neither key nor organization is kept. */
  beforeCommit?: (key: string) => Promise<void>;
}

const ORG_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const KEY_NAME = /^[\p{L}\p{N} ._-]{0,64}$/u;
/** `last_used_at` is rewritten at most this often per key: a write per request would cost every GET one. */
const LAST_USED_RESOLUTION_S = 60;

const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** Organizations and their API keys: who a request is, and which wall it stands behind. */
export class OrgService {
  constructor(private readonly db: Db) {}

  async isEmpty(): Promise<boolean> {
    const row = await this.db.selectFrom('organizations').select('id').limit(1).executeTakeFirst();
    return row === undefined;
  }

  /** Makes a key for the organization `name`, creating the organization when it is new. */
  async createKey(orgName: string, options: NewKeyOptions = {}): Promise<CreatedKey> {
    if (!ORG_NAME.test(orgName)) {
      throw invalidRequest(
        `Organization name "${orgName}" must be 1 to 64 characters of lowercase letters, digits, "-" and "_".`,
        'org',
      );
    }
    checkKeyName(options.name ?? '');
    return this.db.transaction().execute(async (trx) => {
      let organization = await trx.selectFrom('organizations').select(['id', 'name']).where('name', '=', orgName).executeTakeFirst();
      const isNew = !organization;
      if (!organization) {
        organization = { id: newId('org-'), name: orgName };
        await trx.insertInto('organizations').values({ ...organization, created_at: unixSeconds() }).execute();
      }
      const made = await this.insertKey(trx, organization.id, options.name ?? '', options.role ?? (isNew ? 'owner' : 'member'));
      await options.beforeCommit?.(made.key);
      return { ...made, organization };
    });
  }

  /** The organization's keys, oldest first, revoked ones included (they say when). */
  async listKeys(orgId: string): Promise<ApiKey[]> {
    const rows = await this.db.selectFrom('api_keys').selectAll().where('org_id', '=', orgId).orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    return rows.map(toApiKey);
  }

  /**
   * Revokes a key: its next request is refused (a stream already answering may finish). The
   * organization's last owner key stays, or nobody could manage its keys through the API.
   */
  async revokeKey(orgId: string, keyId: string): Promise<ApiKey> {
    return this.db.transaction().execute(async (trx) => {
      const row = await this.liveKey(trx, orgId, keyId);
      if (row.role === 'owner') {
        const owners = await trx
          .selectFrom('api_keys')
          .select('id')
          .where('org_id', '=', orgId)
          .where('role', '=', 'owner')
          .where('revoked_at', 'is', null)
          .execute();
        if (owners.length === 1) {
          throw invalidRequest(`${keyId} is the organization's last owner key: rotate it instead, or make another owner key first.`, 'key_id', 'last_owner_key');
        }
      }
      const revokedAt = unixSeconds();
      await trx.updateTable('api_keys').set({ revoked_at: revokedAt }).where('id', '=', keyId).execute();
      return toApiKey({ ...row, revoked_at: revokedAt });
    });
  }

  /** A new key with the old one's name and role; the old one is revoked in the same transaction. */
  async rotateKey(orgId: string, keyId: string): Promise<CreatedKey & { replaced: ApiKey }> {
    return this.db.transaction().execute(async (trx) => {
      const row = await this.liveKey(trx, orgId, keyId);
      const revokedAt = unixSeconds();
      await trx.updateTable('api_keys').set({ revoked_at: revokedAt }).where('id', '=', keyId).execute();
      const made = await this.insertKey(trx, orgId, row.name, row.role);
      const organization = await trx.selectFrom('organizations').select(['id', 'name']).where('id', '=', orgId).executeTakeFirstOrThrow();
      return { ...made, organization, replaced: toApiKey({ ...row, revoked_at: revokedAt }) };
    });
  }

  /** The organization named `name`, for the administrator's commands. */
  async byName(name: string): Promise<Organization> {
    const org = await this.db.selectFrom('organizations').select(['id', 'name']).where('name', '=', name).executeTakeFirst();
    if (!org) throw new ServiceError('not_found', `No organization named "${name}" (tunelab keys create --org ${name} makes one).`, { param: 'org' });
    return org;
  }

  /** Which of the organization's keys `key` is, revoked or not: the CLI's rotate finds the key file's key by it. */
  async keyIdOf(key: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('api_keys').select('id').where('key_hash', '=', hashKey(key)).executeTakeFirst();
    return row?.id;
  }

  private async insertKey(trx: Db, orgId: string, name: string, role: KeyRole): Promise<{ key: string; apiKey: ApiKey }> {
    const key = `sk-tl-${randomToken(40)}`;
    const row = {
      id: newId('key_'),
      org_id: orgId,
      key_hash: hashKey(key),
      key_prefix: key.slice(0, 10),
      name,
      role,
      created_at: unixSeconds(),
      last_used_at: null,
      revoked_at: null,
    };
    await trx.insertInto('api_keys').values(row).execute();
    return { key, apiKey: toApiKey(row) };
  }

  private async liveKey(trx: Db, orgId: string, keyId: string): Promise<Selectable<ApiKeyTable>> {
    const row = await trx.selectFrom('api_keys').selectAll().where('id', '=', keyId).where('org_id', '=', orgId).executeTakeFirst();
    if (!row) throw noSuch('ApiKey', keyId, 'key_id');
    if (row.revoked_at !== null) throw invalidRequest(`${keyId} was revoked already.`, 'key_id', 'key_revoked');
    return row;
  }

  /** The organization's name, as fine-tuned model names carry it. */
  async name(orgId: string): Promise<string> {
    const org = await this.db.selectFrom('organizations').select('name').where('id', '=', orgId).executeTakeFirstOrThrow();
    return org.name;
  }

  /** Who a key is; a revoked or unknown key is refused as OpenAI refuses one. */
  async authenticate(key: string): Promise<Caller> {
    const row = await this.db
      .selectFrom('api_keys')
      .innerJoin('organizations', 'organizations.id', 'api_keys.org_id')
      .select(['organizations.id', 'organizations.name', 'api_keys.id as keyId', 'api_keys.role as keyRole', 'api_keys.last_used_at'])
      .where('api_keys.key_hash', '=', hashKey(key))
      .where('api_keys.revoked_at', 'is', null)
      .executeTakeFirst();
    if (!row) {
      const shown = key.length > 10 ? `${key.slice(0, 6)}****${key.slice(-4)}` : '****';
      throw new ServiceError('authentication', `Incorrect API key provided: ${shown}.`, { code: 'invalid_api_key' });
    }
    const now = unixSeconds();
    if (row.last_used_at === null || now - row.last_used_at >= LAST_USED_RESOLUTION_S) {
      // Bookkeeping: a request is not refused because its key's last use could not be written (a full disk).
      await this.db
        .updateTable('api_keys')
        .set({ last_used_at: now })
        .where('id', '=', row.keyId)
        .execute()
        .catch(() => {});
    }
    return { id: row.id, name: row.name, keyId: row.keyId, keyRole: row.keyRole };
  }
}

function checkKeyName(name: string): void {
  if (!KEY_NAME.test(name)) throw invalidRequest(`Key name "${name}" must be at most 64 letters, digits, spaces, ".", "_" and "-".`, 'name');
}

const toApiKey = (row: Omit<Selectable<ApiKeyTable>, 'org_id' | 'key_hash'>): ApiKey => ({
  object: 'organization.api_key',
  id: row.id,
  name: row.name,
  redacted_value: `${row.key_prefix}****`,
  role: row.role,
  created_at: row.created_at,
  last_used_at: row.last_used_at,
  revoked_at: row.revoked_at,
});
