/**
 * OpenAI's names for what a job makes: `ft:{base}:{org}:{suffix}:{id8}` (an empty suffix leaves its
 * segment empty) and `...:ckpt-step-{N}` for a checkpoint. id8 is taken from the job's id, so one
 * job's names are the same however often it is resumed.
 */
export function fineTunedModelName(job: { id: string; model: string; user_provided_suffix: string | null }, orgName: string): string {
  const id8 = job.id.slice(job.id.indexOf('-') + 1).slice(0, 8);
  return `ft:${job.model}:${orgName}:${job.user_provided_suffix ?? ''}:${id8}`;
}

export const checkpointModelName = (fineTunedModel: string, step: number) => `${fineTunedModel}:ckpt-step-${step}`;
