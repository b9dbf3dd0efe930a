import type { CreateTableBuilder, Kysely, Migration } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

/**
 * Versioned migrations, applied in name order and recorded by Kysely's migrator in
 * `kysely_migration`. Never edit one that has shipped: add the next.
 */
export function migrations(dialect: Dialect): Record<string, Migration> {
  // The one column type the two databases spell differently.
  const withSeq = <T extends string>(table: CreateTableBuilder<T, never>) =>
    dialect === 'postgres'
      ? table.addColumn('seq', 'serial', (c) => c.primaryKey())
      : table.addColumn('seq', 'integer', (c) => c.primaryKey().autoIncrement());

  return {
    '0001_initial': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('organizations')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('api_keys')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('key_hash', 'text', (c) => c.notNull().unique())
          .addColumn('key_prefix', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();

        await withSeq(db.schema.createTable('files'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('filename', 'text', (c) => c.notNull())
          .addColumn('purpose', 'text', (c) => c.notNull())
          .addColumn('bytes', 'bigint', (c) => c.notNull())
          .addColumn('sha256', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('status_details', 'text')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint')
          .addColumn('deleted_at', 'bigint')
          .execute();
        await db.schema.createIndex('files_by_org').on('files').columns(['org_id', 'seq']).execute();

        await withSeq(db.schema.createTable('jobs'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('training_file', 'text', (c) => c.notNull())
          .addColumn('validation_file', 'text')
          .addColumn('suffix', 'text')
          .addColumn('seed', 'bigint', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('method', 'text', (c) => c.notNull())
          .addColumn('error', 'text')
          .addColumn('fine_tuned_model', 'text')
          .addColumn('trained_tokens', 'bigint')
          .addColumn('result_files', 'text', (c) => c.notNull())
          .addColumn('estimated_finish', 'bigint')
          .addColumn('metadata', 'text')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('finished_at', 'bigint')
          .execute();
        await db.schema.createIndex('jobs_by_org').on('jobs').columns(['org_id', 'seq']).execute();

        await db.schema
          .createTable('job_metadata')
          .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
          .addColumn('key', 'text', (c) => c.notNull())
          .addColumn('value', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('job_metadata_pk', ['job_id', 'key'])
          .execute();
        await db.schema.createIndex('job_metadata_by_pair').on('job_metadata').columns(['key', 'value']).execute();

        await withSeq(db.schema.createTable('job_events'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('level', 'text', (c) => c.notNull())
          .addColumn('message', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('data', 'text')
          .execute();
        await db.schema.createIndex('job_events_by_job').on('job_events').columns(['job_id', 'seq']).execute();

        await withSeq(db.schema.createTable('job_checkpoints'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('fine_tuned_model_checkpoint', 'text', (c) => c.notNull())
          .addColumn('step_number', 'integer', (c) => c.notNull())
          .addColumn('metrics', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createIndex('job_checkpoints_by_job')
          .on('job_checkpoints')
          .columns(['job_id', 'seq'])
          .execute();

        await db.schema
          .createTable('fine_tuned_models')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
          .addColumn('base_model', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('path', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema
          .createIndex('fine_tuned_models_by_org')
          .on('fine_tuned_models')
          .columns(['org_id', 'created_at'])
          .execute();
      },
    },
    '0002_validation_reports': {
      async up(db: Kysely<any>) {
        // The dataset doctor's report of a job's files, kept as the JSON the API serves.
        await db.schema
          .createTable('job_validation_reports')
          .addColumn('job_id', 'text', (c) => c.primaryKey().references('jobs.id'))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('report', 'text', (c) => c.notNull())
          .execute();
      },
    },
    '0004_notifications_usage': {
      async up(db: Kysely<any>) {
        await db.schema.alterTable('organizations').addColumn('email', 'text').execute();

        await withSeq(db.schema.createTable('webhook_endpoints'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('secret', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('webhook_endpoints_by_org').on('webhook_endpoints').columns(['org_id', 'seq']).execute();

        await db.schema
          .createTable('job_notifications')
          .addColumn('job_id', 'text', (c) => c.primaryKey().references('jobs.id'))
          .addColumn('event_id', 'text', (c) => c.notNull())
          .addColumn('event_type', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();
        // Jobs that finished before notifications existed are not announced now, years late.
        const finished = await db
          .selectFrom('jobs')
          .select(['id', 'status'])
          .where('status', 'in', ['succeeded', 'failed', 'cancelled'])
          .execute();
        const now = Math.floor(Date.now() / 1000);
        for (let i = 0; i < finished.length; i += 500) {
          await db
            .insertInto('job_notifications')
            .values(
              finished.slice(i, i + 500).map((job: { id: string; status: string }) => ({
                job_id: job.id,
                event_id: `evt_none_${job.id}`,
                event_type: `fine_tuning.job.${job.status}`,
                created_at: now,
              })),
            )
            .execute();
        }

        await withSeq(db.schema.createTable('notification_deliveries'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('channel', 'text', (c) => c.notNull())
          .addColumn('endpoint_id', 'text')
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('payload', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull())
          .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
          .addColumn('last_error', 'text')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('finished_at', 'bigint')
          .execute();
        await db.schema
          .createIndex('notification_deliveries_due')
          .on('notification_deliveries')
          .columns(['status', 'next_attempt_at'])
          .execute();
        await db.schema.createIndex('notification_deliveries_by_job').on('notification_deliveries').columns(['job_id']).execute();

        await withSeq(db.schema.createTable('usage_records'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('month', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('source_id', 'text')
          .addColumn('tokens', 'bigint', (c) => c.notNull())
          .addColumn('input_tokens', 'bigint', (c) => c.notNull())
          .addColumn('output_tokens', 'bigint', (c) => c.notNull())
          .addColumn('cost_micros', 'bigint', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('usage_records_by_org_month').on('usage_records').columns(['org_id', 'month']).execute();
        // Recording the same job (or request) twice is a no-op; null source ids never collide.
        await db.schema.createIndex('usage_records_by_source').on('usage_records').columns(['kind', 'source_id']).unique().execute();
      },
    },
    '0005_api_key_lifecycle': {
      async up(db: Kysely<any>) {
        // Keys made before keys had names and roles could do everything: they stay owners.
        await db.schema.alterTable('api_keys').addColumn('name', 'text', (c) => c.notNull().defaultTo('')).execute();
        await db.schema.alterTable('api_keys').addColumn('role', 'text', (c) => c.notNull().defaultTo('owner')).execute();
        await db.schema.alterTable('api_keys').addColumn('last_used_at', 'bigint').execute();
        await db.schema.alterTable('api_keys').addColumn('revoked_at', 'bigint').execute();
        await db.schema.createIndex('api_keys_by_org').on('api_keys').columns(['org_id', 'created_at']).execute();
      },
    },
    '0006_job_metrics': {
      async up(db: Kysely<any>) {
        // A job's steps by number: the curve from step N on is an index range, however long the job.
        await db.schema
          .createTable('job_metrics')
          .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
          .addColumn('step', 'integer', (c) => c.notNull())
          .addColumn('event_id', 'text', (c) => c.notNull())
          .addColumn('data', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('job_metrics_pk', ['job_id', 'step'])
          .execute();
        // A long job's few message events, listed without passing its many step events.
        await db.schema.createIndex('job_events_by_job_type').on('job_events').columns(['job_id', 'type', 'seq']).execute();
        // The steps recorded before, from their metrics events, a batch at a time.
        for (let after = 0; ; ) {
          const events: Array<{ seq: number; id: string; job_id: string; data: string | null }> = await db
            .selectFrom('job_events')
            .select(['seq', 'id', 'job_id', 'data'])
            .where('type', '=', 'metrics')
            .where('seq', '>', after)
            .orderBy('seq', 'asc')
            .limit(1000)
            .execute();
          if (events.length === 0) break;
          after = events.at(-1)!.seq;
          const rows = events.flatMap((event) => {
            const step = event.data === null ? undefined : (JSON.parse(event.data) as { step?: unknown }).step;
            return typeof step === 'number' ? [{ job_id: event.job_id, step, event_id: event.id, data: event.data }] : [];
          });
          if (rows.length) await db.insertInto('job_metrics').values(rows).onConflict((c) => c.columns(['job_id', 'step']).doNothing()).execute();
        }
      },
    },
    // Stored Responses API responses (issue 16), each with the conversation that continues it.
    '0007_stored_responses': {
      async up(db: Kysely<any>) {
        await withSeq(db.schema.createTable('responses'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('response', 'text', (c) => c.notNull())
          .addColumn('conversation', 'text', (c) => c.notNull())
          .execute();
      },
    },
    '0008_model_exports': {
      async up(db: Kysely<any>) {
        await withSeq(db.schema.createTable('model_exports'))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id'))
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('format', 'text', (c) => c.notNull())
          .addColumn('quantization', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('progress', 'real', (c) => c.notNull())
          .addColumn('stage', 'text')
          .addColumn('checks', 'text')
          .addColumn('error_code', 'text')
          .addColumn('error_message', 'text')
          .addColumn('bytes', 'bigint')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('finished_at', 'bigint')
          .execute();
        await db.schema.createIndex('model_exports_by_org').on('model_exports').columns(['org_id', 'seq']).execute();
      },
    },
    // Training on other hosts (issue 21): the workers, and the lease a running job is held by.
    '0010_workers': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('workers')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('pid', 'integer', (c) => c.notNull())
          .addColumn('capabilities', 'text', (c) => c.notNull())
          .addColumn('slots', 'integer', (c) => c.notNull())
          .addColumn('started_at', 'bigint', (c) => c.notNull())
          .addColumn('heartbeat_at', 'bigint', (c) => c.notNull())
          .addColumn('stopped_at', 'bigint')
          .execute();
        await db.schema.alterTable('jobs').addColumn('lease_worker', 'text').execute();
        await db.schema.alterTable('jobs').addColumn('lease_token', 'text').execute();
        await db.schema.alterTable('jobs').addColumn('lease_expires_at', 'bigint').execute();
        await db.schema.alterTable('jobs').addColumn('memory_needed', 'bigint').execute();
        // The claim reads the queue oldest first by status.
        await db.schema.createIndex('jobs_by_status').on('jobs').columns(['status', 'seq']).execute();
      },
    },
    '0011_training_store': {
      async up(db: Kysely<any>) {
        // Where a job's training arrays and the checkpoint it resumes from are in the folder store.
        await db.schema.alterTable('jobs').addColumn('train_arrays', 'text').execute();
        await db.schema.alterTable('jobs').addColumn('valid_arrays', 'text').execute();
        await db.schema.alterTable('jobs').addColumn('resume_step', 'integer').execute();
        await db.schema.alterTable('jobs').addColumn('resume_location', 'text').execute();
      },
    },
    // Full fine-tuning sharded across a worker's GPUs (issue 21): the part of a job's memory that splits.
    '0013_memory_sharded': {
      async up(db: Kysely<any>) {
        await db.schema.alterTable('jobs').addColumn('memory_sharded', 'bigint').execute();
      },
    },
  };
}
