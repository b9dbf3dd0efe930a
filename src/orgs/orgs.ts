import { createHash } from 'node:crypto';
import { ServiceError, invalidRequest } from '../errors.js';
import { newId, randomToken, unixSeconds } from '../ids.js';
import type { Db } from '../store/store.js';

export interface Organization {
  id: string;
  name: string;
}

export interface CreatedKey {
  key: string;
  organization: Organization;
}

const ORG_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** Organizations and their API keys: who a request is, and which wall it stands behind. */
export class OrgService {
  constructor(private readonly db: Db) {}

  async isEmpty(): Promise<boolean> {
    const row = await this.db.selectFrom('organizations').select('id').limit(1).executeTakeFirst();
    return row === undefined;
  }

  /**
   * Makes a key for the organization `name`, creating the organization when it is new.
   * `beforeCommit` runs inside the transaction: if it throws, neither key nor organization is kept.
   */
  async createKey(orgName: string, beforeCommit?: (key: string) => Promise<void>): Promise<CreatedKey> {
    if (!ORG_NAME.test(orgName)) {
      throw invalidRequest(
        `Organization name "${orgName}" must be 1 to 64 characters of lowercase letters, digits, "-" and "_".`,
        'org',
      );
    }
    const key = `sk-tl-${randomToken(40)}`;
    const now = unixSeconds();
    const organization = await this.db.transaction().execute(async (trx) => {
      let org = await trx.selectFrom('organizations').select(['id', 'name']).where('name', '=', orgName).executeTakeFirst();
      if (!org) {
        org = { id: newId('org-'), name: orgName };
        await trx.insertInto('organizations').values({ ...org, created_at: now }).execute();
      }
      await trx
        .insertInto('api_keys')
        .values({ id: newId('key_'), org_id: org.id, key_hash: hashKey(key), key_prefix: key.slice(0, 10), created_at: now })
        .execute();
      await beforeCommit?.(key);
      return org;
    });
    return { key, organization };
  }

  /** The organization's name, as fine-tuned model names carry it. */
  async name(orgId: string): Promise<string> {
    const org = await this.db.selectFrom('organizations').select('name').where('id', '=', orgId).executeTakeFirstOrThrow();
    return org.name;
  }

  async authenticate(key: string): Promise<Organization> {
    const org = await this.db
      .selectFrom('api_keys')
      .innerJoin('organizations', 'organizations.id', 'api_keys.org_id')
      .select(['organizations.id', 'organizations.name'])
      .where('api_keys.key_hash', '=', hashKey(key))
      .executeTakeFirst();
    if (!org) {
      const shown = key.length > 10 ? `${key.slice(0, 6)}****${key.slice(-4)}` : '****';
      throw new ServiceError('authentication', `Incorrect API key provided: ${shown}.`, { code: 'invalid_api_key' });
    }
    return org;
  }
}
