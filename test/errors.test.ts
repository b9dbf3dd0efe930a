import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_MODEL, type TestServer, startTestServer, weatherJokes } from './support/server.js';

let t: TestServer;
let key: string;
let trainingFile: string;
beforeAll(async () => {
  t = await startTestServer();
  key = t.client.apiKey!;
  trainingFile = (await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' })).id;
});
afterAll(() => t.cleanup());

/** A raw request, for what the SDK would never send. */
async function raw(method: string, path: string, init: { body?: BodyInit; headers?: Record<string, string> } = {}) {
  const response = await fetch(`${t.server.baseURL}${path}`, {
    method,
    body: init.body ?? null,
    headers: { authorization: `Bearer ${key}`, ...init.headers },
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as { error: Record<string, unknown> } };
}

const rejection = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as InstanceType<typeof OpenAI.APIError>);

describe('errors in OpenAI form', () => {
  it('refuses a missing or wrong API key with AuthenticationError', async () => {
    const wrong = await rejection(t.clientFor('sk-tl-not-a-real-key-0000').files.list());
    expect(wrong).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(wrong?.code).toBe('invalid_api_key');
    expect(wrong?.message).toContain('Incorrect API key provided');

    const missing = await fetch(`${t.server.baseURL}/files`);
    expect(missing.status).toBe(401);
    expect(((await missing.json()) as { error: { message: string } }).error.message).toContain("You didn't provide an API key");
  });

  it('answers unknown ids with NotFoundError naming the object', async () => {
    const file = await rejection(t.client.files.retrieve('file-doesnotexist'));
    expect(file).toBeInstanceOf(OpenAI.NotFoundError);
    expect(file?.message).toContain('No such File object: file-doesnotexist');
    expect(file?.param).toBe('file_id');
    expect(await rejection(t.client.files.content('file-doesnotexist'))).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await rejection(t.client.files.delete('file-doesnotexist'))).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await rejection(t.client.fineTuning.jobs.retrieve('ftjob-nope'))).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await rejection(t.client.fineTuning.jobs.listEvents('ftjob-nope'))).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await rejection(t.client.fineTuning.jobs.checkpoints.list('ftjob-nope'))).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await rejection(t.client.fineTuning.jobs.cancel('ftjob-nope'))).toBeInstanceOf(OpenAI.NotFoundError);
    const model = await rejection(t.client.models.retrieve('ft:nothing:personal::abcdefgh'));
    expect(model).toMatchObject({ status: 404, code: 'model_not_found' });
    expect(model?.error).toMatchObject({ message: 'The model `ft:nothing:personal::abcdefgh` does not exist or you do not have access to it.' });
  });

  it('answers unknown routes with a 404 body, all four fields present', async () => {
    const response = await raw('GET', '/no/such/thing');
    expect(response.status).toBe(404);
    expect(response.body).toEqual({
      error: { message: 'Invalid URL (GET /v1/no/such/thing)', type: 'invalid_request_error', param: null, code: null },
    });
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
  });

  it('names the problem in a malformed JSON body', async () => {
    const response = await raw('POST', '/fine_tuning/jobs', {
      body: '{"model": "x", ',
      headers: { 'content-type': 'application/json' },
    });
    expect(response.status).toBe(400);
    expect(response.body.error.message).toMatch(/could not parse the JSON body/);
    expect(response.body.error).toHaveProperty('param', null);
  });

  it('refuses uploads that are not multipart, lack a field, or are empty', async () => {
    const json = await raw('POST', '/files', { body: '{"purpose":"fine-tune"}', headers: { 'content-type': 'application/json' } });
    expect(json.status).toBe(400);
    expect(json.body.error).toMatchObject({ param: 'file', message: expect.stringContaining('multipart/form-data') });

    const text = await raw('POST', '/files', { body: 'hello', headers: { 'content-type': 'text/plain' } });
    expect(text.status).toBe(400);
    expect(text.body.error).toMatchObject({ param: 'file', message: expect.stringContaining('multipart/form-data') });

    const xml = await raw('POST', '/fine_tuning/jobs', { body: '<job/>', headers: { 'content-type': 'application/xml' } });
    expect(xml.status).toBe(400);
    expect(xml.body.error.message).toContain('Content-Type');

    const noPurpose = new FormData();
    noPurpose.append('file', new Blob(['{"messages":[]}\n']), 'a.jsonl');
    expect((await raw('POST', '/files', { body: noPurpose })).body.error).toMatchObject({
      param: 'purpose',
      message: "Missing required parameter: 'purpose'.",
    });

    const noFile = new FormData();
    noFile.append('purpose', 'fine-tune');
    expect((await raw('POST', '/files', { body: noFile })).body.error).toMatchObject({ param: 'file' });

    const badPurpose = await rejection(t.client.files.create({ file: weatherJokes(), purpose: 'homework' as 'fine-tune' }));
    expect(badPurpose).toBeInstanceOf(OpenAI.BadRequestError);
    expect(badPurpose).toMatchObject({ param: 'purpose', code: 'invalid_value' });

    const empty = await rejection(t.client.files.create({ file: new File([], 'empty.jsonl'), purpose: 'fine-tune' }));
    expect(empty).toMatchObject({ status: 400, param: 'file', message: expect.stringContaining('empty') });

    const notJsonl = await rejection(t.client.files.create({ file: new File(['x'], 'data.csv'), purpose: 'fine-tune' }));
    expect(notJsonl).toMatchObject({ status: 400, param: 'file', message: expect.stringContaining("'data.csv' is not JSON lines") });

    const expiry = await rejection(
      t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune', expires_after: { anchor: 'created_at', seconds: 60 } }),
    );
    expect(expiry).toMatchObject({ status: 400, param: 'seconds' });

    expect((await t.client.files.list()).data.map((f) => f.id)).toEqual([trainingFile]);
  });

  it.each([
    [{ model: 'gpt-9' }, 'model', 'not available for fine-tuning'],
    [{ training_file: 'file-missing' }, 'training_file', 'no such file file-missing'],
    [{ validation_file: 'file-missing' }, 'validation_file', 'no such file file-missing'],
    [{ suffix: 'x'.repeat(65) }, 'suffix', '1 to 64 characters'],
    [{ suffix: 'has space' }, 'suffix', '1 to 64 characters'],
    [{ suffix: '' }, 'suffix', '1 to 64 characters'],
    [{ seed: -1 }, 'seed', 'expected number to be >=0'],
    [{ seed: 'seven' }, 'seed', 'expected number, received string'],
    [{ hyperparameters: { n_epochs: 0 } }, 'hyperparameters.n_epochs', 'expected number to be >=1'],
    [{ hyperparameters: { n_epochs: 2.5 } }, 'hyperparameters.n_epochs', 'whole number'],
    [{ hyperparameters: { batch_size: 1000 } }, 'hyperparameters.batch_size', 'expected number to be <=256'],
    [{ hyperparameters: { learning_rate_multiplier: 0 } }, 'hyperparameters.learning_rate_multiplier', 'expected number to be >0'],
    [{ hyperparameters: { n_epochs: 'many' } }, 'hyperparameters.n_epochs', 'expected number, received string'],
    [{ method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.1 } } } }, 'training_file', "holds chat examples, but method 'dpo' trains on preference pairs"],
    [{ method: { type: 'dpo', dpo: { hyperparameters: { beta: 3 } } } }, 'method.dpo.hyperparameters.beta', 'expected number to be <=2'],
    [{ hyperparameters: { n_epochs: 2 }, method: { type: 'dpo' } }, 'hyperparameters', "supervised fine-tuning's; give DPO's in 'method.dpo.hyperparameters'"],
    [{ method: { type: 'reinforcement' } }, 'method.type', "'reinforcement' is not supported yet"],
    [
      { hyperparameters: { n_epochs: 2 }, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3 } } } },
      'hyperparameters',
      'not both',
    ],
    [{ integrations: [{ type: 'wandb', wandb: { project: 'p' } }] }, 'integrations', 'not supported'],
    [{ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }, 'metadata', '16 pairs'],
    [{ learning_rate: 0.1 }, 'learning_rate', 'Unrecognized request argument supplied: learning_rate'],
  ])('refuses a job with %j, naming %s', async (change, param, message) => {
    const body = { model: BASE_MODEL, training_file: trainingFile, ...change } as OpenAI.FineTuning.JobCreateParams;
    const error = await rejection(t.client.fineTuning.jobs.create(body));
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error?.param).toBe(param);
    expect(error?.message).toContain(message);
    expect(error?.headers?.get('x-should-retry')).toBe('false');
  });

  it('refuses a job on a file uploaded for another purpose, and a job without a model', async () => {
    const batch = await t.client.files.create({ file: new File(['{}\n'], 'requests.jsonl'), purpose: 'batch' });
    const error = await rejection(t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: batch.id }));
    expect(error).toMatchObject({ status: 400, param: 'training_file', message: expect.stringContaining("purpose 'batch'") });

    const missing = await raw('POST', '/fine_tuning/jobs', {
      body: JSON.stringify({ training_file: trainingFile }),
      headers: { 'content-type': 'application/json' },
    });
    expect(missing.body.error).toMatchObject({ param: 'model', message: "Missing required parameter: 'model'." });
    await t.client.files.delete(batch.id);
  });

  it('answers what Fastify and the form parser refuse as 400s in OpenAI form, never as retried 500s', async () => {
    const form = (parts: string[], boundary = 'b0undary') => ({
      body: parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('') + `--${boundary}--\r\n`,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    });
    const field = (name: string, value: string) => `Content-Disposition: form-data; name="${name}"\r\n\r\n${value}`;
    const cases = {
      'too many fields': form(Array.from({ length: 12 }, (_, i) => field(`f${i}`, 'x'))),
      'two files': form([
        'Content-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{}',
        'Content-Disposition: form-data; name="file"; filename="b.jsonl"\r\n\r\n{}',
      ]),
      'a cut-off form': {
        body: `--b0undary\r\n${field('purpose', 'fine-tune')}\r\n--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{"messa`,
        headers: { 'content-type': 'multipart/form-data; boundary=b0undary' },
      },
      'no boundary': { body: 'nothing', headers: { 'content-type': 'multipart/form-data' } },
    };
    for (const [name, request] of Object.entries(cases)) {
      const response = await raw('POST', '/files', request);
      expect({ name, status: response.status }).toEqual({ name, status: 400 });
      expect(Object.keys(response.body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
      expect(response.headers.get('x-should-retry')).toBe('false');
    }
    expect((await t.client.files.list()).data.map((f) => f.id)).toEqual([trainingFile]);

    const proto = await raw('POST', '/fine_tuning/jobs', {
      body: '{"__proto__": {"x": 1}, "model": "m", "training_file": "f"}',
      headers: { 'content-type': 'application/json' },
    });
    expect(proto.status).toBe(400);
  });

  it('answers an undecodable URL in OpenAI form, with a request id', async () => {
    const response = await raw('GET', '/files/%E0%A4%A');
    expect(response.status).toBe(400);
    expect(response.body.error).toMatchObject({ type: 'invalid_request_error', message: expect.stringContaining('URL') });
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
  });

  it('refuses out-of-range list parameters', async () => {
    const error = await rejection(t.client.fineTuning.jobs.list({ limit: 0 }));
    expect(error).toMatchObject({ status: 400, param: 'limit' });
    expect(await rejection(t.client.fineTuning.jobs.list({ after: 'ftjob-unknown' }))).toMatchObject({ status: 400, param: 'after' });
    const purposes = await raw('GET', '/files?purpose=fine-tune&purpose=batch');
    expect(purposes).toMatchObject({ status: 400, body: { error: { param: 'purpose' } } });
  });
});
