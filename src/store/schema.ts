import type { Generated } from 'kysely';

/**
 * Tables as the query layer sees them. Everything is stored in types both SQLite and PostgreSQL
 * hold the same way: text, integers, JSON as text. `seq` is an insertion counter that orders
 * lists and makes `after=<id>` cursors exact even when two rows share a created_at second.
 */
export interface Database {
  organizations: OrganizationTable;
  api_keys: ApiKeyTable;
  files: FileTable;
  jobs: JobTable;
  job_metadata: JobMetadataTable;
  job_events: JobEventTable;
  job_metrics: JobMetricsTable;
  job_checkpoints: JobCheckpointTable;
  job_validation_reports: JobValidationReportTable;
  fine_tuned_models: FineTunedModelTable;
  webhook_endpoints: WebhookEndpointTable;
  job_notifications: JobNotificationTable;
  notification_deliveries: NotificationDeliveryTable;
  usage_records: UsageRecordTable;
  responses: StoredResponseTable;
  model_exports: ModelExportTable;
  workers: WorkerTable;
}

/** A process that trains jobs: the server's own runner, or `tunelab worker` on any host. */
export interface WorkerTable {
  id: string;
  host: string;
  pid: number;
  /** JSON: what it can hold (src/jobs/capabilities.ts). */
  capabilities: string;
  slots: number;
  started_at: number;
  /** Ms, the database's clock. */
  heartbeat_at: number;
  stopped_at: number | null;
}

export interface OrganizationTable {
  id: string;
  name: string;
  created_at: number;
  /** Where job notifications are e-mailed (when SMTP is configured); null for none. */
  email: string | null;
}

export interface ApiKeyTable {
  id: string;
  org_id: string;
  /** sha256 of the key: keys are long random strings, so a fast hash is as safe as a slow one. */
  key_hash: string;
  /** The first characters, so a person can tell keys apart in a listing. */
  key_prefix: string;
  /** A person's name for it ("ci", "laptop"); '' when none was given. */
  name: string;
  /** `owner` keys may list, revoke and rotate the organization's keys; `member` keys use the API. */
  role: 'owner' | 'member';
  created_at: number;
  /** Unix seconds, to the minute: written at most once a minute per key. */
  last_used_at: number | null;
  /** A revoked key is refused from its next request on; the row stays so listings can show it. */
  revoked_at: number | null;
}

export interface FileTable {
  seq: Generated<number>;
  id: string;
  org_id: string;
  filename: string;
  purpose: string;
  bytes: number;
  sha256: string;
  status: 'uploaded' | 'processed' | 'error';
  status_details: string | null;
  created_at: number;
  expires_at: number | null;
  /** Deleted rows stay, without their bytes, so a client paging past one still finds its place. */
  deleted_at: number | null;
}

export interface JobTable {
  seq: Generated<number>;
  id: string;
  org_id: string;
  model: string;
  training_file: string;
  validation_file: string | null;
  suffix: string | null;
  seed: number;
  status: string;
  /** JSON: the normalized `method` object, hyperparameters included. */
  method: string;
  /** JSON: `{code, message, param}` or null. */
  error: string | null;
  fine_tuned_model: string | null;
  trained_tokens: number | null;
  /** JSON: array of file ids. */
  result_files: string;
  estimated_finish: number | null;
  /** JSON: the metadata object as given, or null. */
  metadata: string | null;
  created_at: number;
  finished_at: number | null;
  /** The worker whose lease holds the job (claimed, or running on it), and until when (ms, the database's clock). */
  lease_worker: Generated<string | null>;
  /** Changes with every claim: a write for the job that names an older token is refused (fencing). */
  lease_token: Generated<string | null>;
  lease_expires_at: Generated<number | null>;
  /** Bytes of memory training the job takes, estimated when it is queued: only a worker that has them takes it. */
  memory_needed: Generated<number | null>;
  /** Locations in the folder store (src/files/folder-store.ts) of the training arrays, once the files are validated. */
  train_arrays: Generated<string | null>;
  valid_arrays: Generated<string | null>;
  /** The newest checkpoint recorded under the job's lease: its step and location in the folder store. */
  resume_step: Generated<number | null>;
  resume_location: Generated<string | null>;
  /** Of memory_needed, the bytes that split across the GPUs training the job together (FSDP's shards); 0 when each holds all. */
  memory_sharded: Generated<number | null>;
}

/** One row per metadata pair, so `metadata[k]=v` filters are plain indexed SQL on both databases. */
export interface JobMetadataTable {
  job_id: string;
  key: string;
  value: string;
}

export interface JobEventTable {
  seq: Generated<number>;
  id: string;
  job_id: string;
  created_at: number;
  level: 'info' | 'warn' | 'error';
  message: string;
  type: 'message' | 'metrics';
  /** JSON or null. */
  data: string | null;
}

/** One row per training step: the metrics event's data again, keyed by step, for the curve. */
export interface JobMetricsTable {
  job_id: string;
  step: number;
  /** The step's metrics event, rewritten with it when an evaluation joins the step. */
  event_id: string;
  /** JSON: the step's metrics, as its event's data. */
  data: string;
}

export interface JobCheckpointTable {
  seq: Generated<number>;
  id: string;
  job_id: string;
  created_at: number;
  fine_tuned_model_checkpoint: string;
  step_number: number;
  /** JSON: the metrics at that step. */
  metrics: string;
}

export interface FineTunedModelTable {
  id: string;
  org_id: string;
  job_id: string;
  base_model: string;
  kind: 'fine-tune' | 'checkpoint';
  /** Folder of the adapter (PEFT layout) or of the full model. */
  path: string;
  created_at: number;
}

export interface JobValidationReportTable {
  job_id: string;
  created_at: number;
  /** JSON: the dataset doctor's report. */
  report: string;
}

/** A URL an organization's job events are POSTed to, signed with its secret (Standard Webhooks). */
export interface WebhookEndpointTable {
  seq: Generated<number>;
  id: string;
  org_id: string;
  url: string;
  /** `whsec_` + base64 of 32 random bytes; the HMAC key is the decoded bytes. */
  secret: string;
  created_at: number;
}

/**
 * One row per finished job whose notifications were enqueued: written in the transaction that
 * enqueues its deliveries, so a job is announced once whatever restarts in between.
 */
export interface JobNotificationTable {
  job_id: string;
  /** `evt_...`: the event's id in every webhook body. */
  event_id: string;
  event_type: string;
  created_at: number;
}

/** One message to one place (a webhook endpoint or an e-mail address), retried until it goes or gives up. */
export interface NotificationDeliveryTable {
  seq: Generated<number>;
  /** `wh_...`: the `webhook-id` header, the same on every attempt so receivers can drop repeats. */
  id: string;
  job_id: string;
  org_id: string;
  channel: 'webhook' | 'email';
  /** The webhook endpoint (its secret signs each attempt); null for e-mail. */
  endpoint_id: string | null;
  /** The URL or the e-mail address, as it was when the event was enqueued. */
  target: string;
  /** Webhook: the event's JSON body, sent byte for byte on every attempt. E-mail: JSON `{subject, text}`. */
  payload: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  /** Milliseconds since the epoch. */
  next_attempt_at: number;
  last_error: string | null;
  created_at: number;
  finished_at: number | null;
}

/**
 * Usage, one row per charged thing: a succeeded job's trained tokens (kind `training`, source_id
 * the job id, tokens = trained_tokens, input/output 0) or, later, chat requests (kind `inference`,
 * tokens = input_tokens + output_tokens). Summed per organization and month.
 */
export interface UsageRecordTable {
  seq: Generated<number>;
  id: string;
  org_id: string;
  /** `YYYY-MM`, UTC, of when the usage happened (a job's finished_at). */
  month: string;
  kind: 'training' | 'inference';
  /** The base model trained, or the model that answered. */
  model: string;
  /** What the row is for (a job id, a request id): unique per kind, so recording twice is a no-op. Null when not tracked. */
  source_id: string | null;
  tokens: number;
  input_tokens: number;
  output_tokens: number;
  /** Millionths of a dollar: integers add up exactly on both databases. */
  cost_micros: number;
  created_at: number;
}

/** A stored Responses API response. */
export interface StoredResponseTable {
  seq: Generated<number>;
  id: string;
  org_id: string;
  created_at: number;
  /** JSON: the Response object as it was answered. */
  response: string;
  /** JSON: the chat messages of its conversation through its output, which `previous_response_id` continues. */
  conversation: string;
}

/** An export of a fine-tune (`tunelab export`, `/v1/exports`): a background task and its archive. */
export interface ModelExportTable {
  seq: Generated<number>;
  id: string;
  org_id: string;
  model: string;
  format: 'peft' | 'merged' | 'gguf' | 'gguf_lora';
  /** GGUF only: f16, bf16, q8_0. */
  quantization: string | null;
  status: 'queued' | 'running' | 'succeeded' | 'failed';
  /** 0..1, and what runs now. */
  progress: number;
  stage: string | null;
  /** JSON: the comparison with tunelab's own serving (GGUF), null before it ran. */
  checks: string | null;
  error_code: string | null;
  error_message: string | null;
  /** The archive's size once made. */
  bytes: number | null;
  created_at: number;
  finished_at: number | null;
}
