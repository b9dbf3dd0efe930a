import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { type Services, buildApi } from './api/app.js';
import { DEFAULT_MAX_UPLOAD_BYTES, type HomeLayout, homeLayout } from './config.js';
import { LocalBlobStore } from './files/blob-store.js';
import { DiskSpace } from './files/disk.js';
import { writePrivateFile } from './files/durable.js';
import { FileService } from './files/files.js';
import { LocalFolderStore } from './files/folder-store.js';
import { useEnginePython } from './engine/python.js';
import { ServePool } from './engine/serve-pool.js';
import { locateEnginePython } from './engine/setup.js';
import { ExportService } from './export/exports.js';
import { InferenceService } from './inference/inference.js';
import { EngineBackend } from './inference/engine-backend.js';
import { LlamaCppBackend } from './inference/llamacpp-backend.js';
import { ModelServing } from './inference/serving.js';
import { type BackendSetting, type ServingSettings, loadServingSettings } from './inference/settings.js';
import { ResponseService } from './responses/responses.js';
import { sweepEndedJobs } from './jobs/clean-up.js';
import { FileValidation } from './jobs/file-validation.js';
import { JobService } from './jobs/jobs.js';
import { setUpRunner } from './jobs/runner-setup.js';
import { StoredFolders } from './jobs/stored-folders.js';
import { DEFAULT_LEASE_MS } from './jobs/leases.js';
import { WorkerRegistry, serverWorkerId } from './jobs/workers.js';
import { FileReports } from './datasets/file-reports.js';
import { ModelTokenizers } from './datasets/model-tokenizers.js';
import { loadDatasetSettings } from './datasets/settings.js';
import { UploadChecks } from './datasets/upload-checks.js';
import { BaseModelRegistry } from './models/base-models.js';
import { trainingTimeEstimator } from './models/catalog.js';
import { ModelPullService, loadPullOrganizations } from './models/model-pulls.js';
import { ModelService } from './models/models.js';
import { TINY_MODEL_NAME, ensureTinyModel } from './models/tiny-model.js';
import { type DeliveryOptions, NotificationService } from './notifications/notifications.js';
import { loadSmtpSettings } from './notifications/settings.js';
import { smtpMailer } from './notifications/smtp.js';
import { Administrators, OrgService } from './orgs/orgs.js';
import { SecretBox } from './store/secret-box.js';
import { type Store, openStore } from './store/store.js';
import { UsageService } from './usage/usage.js';

export interface ServerOptions {
  home: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** A `postgres://` URL; the SQLite file in the home folder when absent. */
  database?: string | undefined;
  maxUploadBytes?: number;
  logger?: FastifyServerOptions['logger'];
  /** Jobs trained at once, one engine process each (default 1: a CPU host has one engine's worth of cores). */
  engineSlots?: number;
  /** How long a job's lease lasts without a heartbeat (default 30 s); workers (`tunelab worker`) take over after it. */
  leaseMs?: number;
  /** Make the built-in base model `tunelab-tiny` on first start (default true). */
  builtinModels?: boolean;
  /** Webhook retry schedule and timeout (tests use milliseconds). */
  notifications?: DeliveryOptions;
  /** Model servers for chat and completions; over `<home>/config.json`'s `serving` section. */
  serving?: Partial<ServingSettings>;
  /** The backend for models config.json does not place (`tunelab serve` on a host without a GPU: auto). */
  defaultBackend?: BackendSetting['backend'];
}

export interface RunningServer {
  /** Where the OpenAI SDK points: `http://host:port/v1`. */
  baseURL: string;
  home: HomeLayout;
  services: Services;
  app: FastifyInstance;
  close(): Promise<void>;
}

const EXPIRED_FILES_SWEEP_MS = 10 * 60 * 1000;

/** Opens (or creates) a home folder and serves it. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const home = homeLayout(options.home);
  // Everything the server writes (the database, its WAL, uploaded files, checkpoints) is its own:
  // other local users may not read training data or secrets.
  process.umask(0o077);
  fs.mkdirSync(home.root, { recursive: true, mode: 0o700 });
  fs.chmodSync(home.root, 0o700);
  // `tunelab serve` runs setup first when there is none; without one, jobs fail with what to do.
  const python = locateEnginePython(home.root);
  if (python) useEnginePython(python);
  const store = await openStore(options.database ?? home.database);
  try {
    return await serve(store, home, options);
  } catch (error) {
    await store.close();
    throw error;
  }
}

async function serve(store: Store, home: HomeLayout, options: ServerOptions): Promise<RunningServer> {
  const orgs = new OrgService(store.db);
  const files = new FileService(store.db, new LocalBlobStore(home.blobs));
  const baseModels = new BaseModelRegistry(home.models);
  const folders = new LocalFolderStore(home.store);
  const stored = new StoredFolders(store.db);
  const models = new ModelService(store.db, baseModels, { folders, fetched: path.join(home.work, 'models') });
  const jobs = new JobService(store.db, files, baseModels, models);
  const workers = new WorkerRegistry(store.db, options.leaseMs ?? DEFAULT_LEASE_MS);
  const logError = (message: string, error: unknown) => app.log.error({ err: error }, message);
  const smtp = loadSmtpSettings(home.root);
  const secrets = await SecretBox.load(home.secretKeyFile);
  const notifications = new NotificationService(store.db, secrets, smtp ? await smtpMailer(smtp) : null, logError, options.notifications);
  const datasetSettings = loadDatasetSettings(home.root);
  const tokenizers = new ModelTokenizers();
  const fileReports = new FileReports(files, baseModels, datasetSettings, tokenizers, trainingTimeEstimator(home.root));
  const usage = new UsageService(store.db, datasetSettings.prices, logError);
  const serving = { ...loadServingSettings(home.root, options.defaultBackend), ...options.serving };
  const servePool = new ServePool({ ...serving, logDir: home.logs });
  const llamacpp = new LlamaCppBackend({ maxBatch: serving.maxBatch, idleMs: serving.idleMs, maxModels: serving.maxModels, threads: serving.backends.threads });
  // The exports service is made below; a model's GGUF is looked up only once requests come.
  const modelServing = new ModelServing(models, new EngineBackend(servePool), llamacpp, serving.backends, (org, model, quantization) =>
    exports.servingGguf(org, model, quantization),
  );
  const inference = new InferenceService(modelServing, usage, logError);
  const administrators = new Administrators(loadPullOrganizations(home.root));
  const pulls = new ModelPullService(baseModels, administrators);
  const responses = new ResponseService(store.db, inference);
  const exports = new ExportService({ db: store.db, models, baseModels, jobs, files, servePool, home, log: logError });
  const services: Services = { orgs, files, fileReports, models, pulls, jobs, notifications, usage, inference, responses, exports, workers, administrators };
  const maxUploadBytes = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const disk = new DiskSpace(home.root, home.diskReserve);
  await disk.setAside();
  const app = buildApi(services, { maxUploadBytes, disk, logger: options.logger ?? false });
  const validation = new FileValidation(jobs, files, datasetSettings, tokenizers, path.join(home.work, 'validation'), { folders, stored }, disk, (message, error) =>
    app.log.error({ err: error }, message),
  );

  if (await orgs.isEmpty()) {
    // The file is written before the key commits: a start cut short leaves an empty organization
    // table, and the next start makes both again.
    const { organization } = await orgs.createKey('personal', {
      name: 'first key',
      beforeCommit: (key) => writePrivateFile(home.apiKeyFile, `${key}\n`),
    });
    app.log.info(`Created organization "${organization.name}" (${organization.id}); its API key is in ${home.apiKeyFile}`);
  }
  await files.sweep();
  await sweepEndedJobs(store.db, { folders, stored });
  if (options.builtinModels ?? true) {
    // Made once (a few seconds: a tokenizer and random weights), so the guide runs offline from the first start.
    await ensureTinyModel(home.models).catch((error) =>
      app.log.warn({ err: error }, `The built-in model ${TINY_MODEL_NAME} could not be made; other base models still work`),
    );
  }
  const uploadChecks = new UploadChecks(files, datasetSettings, (message, error) => app.log.error({ err: error }, message));
  files.onStored(() => uploadChecks.kick());
  uploadChecks.kick();
  // Jobs a restart interrupted while their files were being checked are checked again.
  jobs.onChange((job) => validation.jobChanged(job));
  validation.kick();
  const { runner } = setUpRunner({
    db: store.db,
    services: { jobs, models, files, orgs, disk, folders, stored },
    home,
    workerId: serverWorkerId(home.root),
    workers,
    slots: options.engineSlots ?? 1,
    scratch: home.work,
    leaseMs: options.leaseMs ?? DEFAULT_LEASE_MS,
    log: logError,
  });
  // Finished jobs are announced and charged once; the sweeps catch what a restart came between.
  jobs.onChange((job) => {
    notifications.jobChanged(job);
    usage.jobChanged(job);
  });
  await usage.sweep();
  await notifications.sealStoredSecrets();
  await notifications.sweep(jobs);
  const sweeper = setInterval(() => {
    files.deleteExpired().catch((error) => app.log.error({ err: error }, 'deleting expired files failed'));
  }, EXPIRED_FILES_SWEEP_MS);
  sweeper.unref();

  const host = options.host ?? '127.0.0.1';
  await app.listen({ host, port: options.port ?? 8000 });
  // Once listening (a port in use stops the start before any engine runs): jobs a dead server left
  // running continue from their last checkpoint, and queued jobs start.
  await runner.recover();
  await runner.start();
  await exports.recover();
  const { port } = app.server.address() as AddressInfo;
  // A server listening on every address is reached locally on loopback.
  const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const baseURL = `http://${reachable}:${port}/v1`;
  await writePrivateFile(home.baseUrlFile, `${baseURL}\n`);
  notifications.start();
  return {
    baseURL,
    home,
    services,
    app,
    close: async () => {
      clearInterval(sweeper);
      await uploadChecks.stop();
      await validation.stop();
      await runner.stop();
      await notifications.stop();
      await app.close();
      await exports.stop();
      await modelServing.close();
      await store.close();
    },
  };
}
