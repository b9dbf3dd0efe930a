import { ServiceError, invalidRequest } from '../errors.js';
import type { FileService } from '../files/files.js';
import { modelContextLength, type BaseModelRegistry } from '../models/base-models.js';
import { examineFiles, trainingContext, type DatasetReport } from './doctor.js';
import type { ModelTokenizers } from './model-tokenizers.js';
import type { DatasetSettings } from './settings.js';

/** The dataset doctor's report on an uploaded file, as `GET /v1/files/{id}/report` returns it. */
export interface FileReport extends DatasetReport {
  object: 'file.report';
  file_id: string;
  /** The base model whose tokenizer and chat template counted the tokens; null: OpenAI's counts only. */
  model: string | null;
  /** LoRA training time of the charged tokens on this server, once its speed is measured (`tunelab models catalog --measure`); null otherwise. */
  estimated_duration_seconds: number | null;
}

export interface FileReportOptions {
  /** A base model's name; without one the report has OpenAI's counts only and shows no examples. */
  model: string | null;
  /** How many examples to render as the model sees them, trained tokens marked. */
  show: number;
  /** Stops the reading when nobody waits for the report any more. */
  signal?: AbortSignal;
}

/**
 * The doctor on a stored file before any job uses it: the same checks, counts and cost a job
 * would get with that base model, with the server's prices and screening policy. Reports are
 * not kept: a file is read afresh each time, so a changed price or policy shows at once.
 */
export class FileReports {
  constructor(
    private readonly files: FileService,
    private readonly baseModels: BaseModelRegistry,
    private readonly settings: DatasetSettings,
    private readonly tokenizers: ModelTokenizers,
    /** Seconds to train `tokens` on the model in `folder` here, or null when that cannot be told. */
    private readonly trainingTime: (folder: string, tokens: number) => number | null = () => null,
  ) {}

  async report(orgId: string, fileId: string, options: FileReportOptions): Promise<FileReport> {
    const file = await this.files.get(orgId, fileId);
    if (file.purpose !== 'fine-tune') {
      throw invalidRequest(
        `File ${fileId} has purpose '${file.purpose}': the dataset report reads fine-tuning files (purpose 'fine-tune', JSONL).`,
        'file_id',
        'invalid_file_purpose',
      );
    }
    const model = options.model === null ? null : this.baseModels.get(options.model);
    if (model === undefined) {
      throw new ServiceError(
        'not_found',
        `The base model \`${options.model}\` does not exist: the report counts tokens with a base model's tokenizer (those of GET /v1/models owned by "system").`,
        { param: 'model', code: 'model_not_found' },
      );
    }
    const report = await examineFiles(
      { training: () => this.files.bytes(orgId, fileId) },
      {
        model: model && { name: model.name, tokenizer: this.tokenizers.get(model.path) },
        context: trainingContext(model ? modelContextLength(model.path) : null),
        prices: this.settings.prices,
        screening: this.settings.screening,
        show: options.show,
        signal: options.signal,
      },
    );
    const estimated = model ? this.trainingTime(model.path, report.charged_tokens) : null;
    return { object: 'file.report', file_id: fileId, model: model?.name ?? null, estimated_duration_seconds: estimated, ...report };
  }
}
