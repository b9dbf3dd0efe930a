import OpenAI from 'openai';

/** The API error a request ends in; a request that succeeds fails the test. */
export async function refusal(request: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const outcome = await request.then(
    () => null,
    (error: unknown) => error,
  );
  if (!(outcome instanceof OpenAI.APIError)) throw new Error(`expected an API error, got ${String(outcome)}`);
  return outcome;
}
