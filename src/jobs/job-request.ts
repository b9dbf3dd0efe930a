import { z } from 'zod';

/**
 * What a valid `POST /v1/fine_tuning/jobs` body is, field by field: shapes and ranges only.
 * Whether the model and files exist is the job service's question.
 */
const auto = <T extends z.ZodTypeAny>(number: T) => z.union([z.literal('auto'), number]);

const nEpochs = auto(z.number().int('n_epochs must be a whole number').min(1).max(50));
const batchSize = auto(z.number().int('batch_size must be a whole number').min(1).max(256));
const learningRateMultiplier = auto(z.number().gt(0).max(10));

export const supervisedHyperparameters = z.strictObject({
  n_epochs: nEpochs.optional(),
  batch_size: batchSize.optional(),
  learning_rate_multiplier: learningRateMultiplier.optional(),
  // Ours: how the base model is trained. Absent: the base model's own default (LoRA for real models).
  lora_rank: z.number().int('lora_rank must be a whole number').min(1).max(256).optional(),
  lora_alpha: z.number().gt(0).max(1024).optional(),
  full: z.boolean().optional(),
});

const dpoHyperparameters = supervisedHyperparameters.extend({
  beta: auto(z.number().gt(0).max(2)).optional(),
});

const metadata = z
  .record(z.string().min(1).max(64), z.string().max(512, 'metadata values are at most 512 characters'))
  .refine((value) => Object.keys(value).length <= 16, 'metadata holds at most 16 pairs');

export const createJobRequest = z.strictObject({
  model: z.string().min(1, 'model is required'),
  training_file: z.string().min(1, 'training_file is required'),
  validation_file: z.string().min(1).nullish(),
  suffix: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'suffix must be 1 to 64 characters of letters, digits, "-" and "_"')
    .nullish(),
  seed: z.number().int().min(0).max(2147483647).nullish(),
  hyperparameters: supervisedHyperparameters.optional(),
  method: z
    .discriminatedUnion('type', [
      z.strictObject({
        type: z.literal('supervised'),
        supervised: z.strictObject({ hyperparameters: supervisedHyperparameters.optional() }).optional(),
      }),
      z.strictObject({
        type: z.literal('dpo'),
        dpo: z.strictObject({ hyperparameters: dpoHyperparameters.optional() }).optional(),
      }),
      z.looseObject({ type: z.literal('reinforcement') }),
    ])
    .optional(),
  integrations: z.array(z.looseObject({ type: z.string() })).nullish(),
  metadata: metadata.nullish(),
});

export type CreateJobRequest = z.infer<typeof createJobRequest>;
export type SupervisedHyperparameters = z.infer<typeof supervisedHyperparameters>;
export type DpoHyperparameters = z.infer<typeof dpoHyperparameters>;
