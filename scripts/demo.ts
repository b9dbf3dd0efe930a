/**
 * The README's first command: a tunelab server on a fresh home folder, and the guide's example
 * run against it through the official SDK, offline, on the built-in base model `tunelab-tiny`: the
 * dataset doctor checks the file, the job's files are validated, it trains (the loss falls), it
 * ends with an `ft:` model, its checkpoints and its result file, and the base model and the
 * fine-tune answer the same questions side by side.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveHome } from '../src/config.js';
import { locateEnginePython } from '../src/engine/setup.js';

const root = path.resolve(import.meta.dirname, '..');
const cli = path.join(root, 'dist/cli/main.js');
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-demo-'));
const port = 18000 + Math.floor(Math.random() * 1000);
const baseURL = `http://127.0.0.1:${port}/v1`;

// Whatever server and key the caller's environment names (OpenAI's own, say) is not this demo's.
const { OPENAI_API_KEY: _k, OPENAI_BASE_URL: _u, TUNELAB_API_KEY: _t, TUNELAB_BASE_URL: _b, ...cleanEnv } = process.env;

const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', env: { ...cleanEnv, ...env } });
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${args.join(' ')} exited with ${code}`))));
  });

// The engine's environment is the user's own (made once in ~/.tunelab, or $TUNELAB_PYTHON), not
// one per demo: the demo's fresh home is for its data.
console.log('# tunelab setup   (the engine\'s Python environment: made on the first run, checked after)');
await run([cli, 'setup']);
const enginePython = locateEnginePython(resolveHome());

console.log(`\n# tunelab serve --home ${home} --port ${port}`);
const server = spawn(process.execPath, [cli, 'serve', '--home', home, '--port', String(port)], {
  env: { ...process.env, TUNELAB_LOG_LEVEL: 'warn', ...(enginePython ? { TUNELAB_PYTHON: enginePython } : {}) },
  stdio: 'inherit',
});
const stop = () => server.exitCode === null && server.kill('SIGTERM');
process.on('exit', stop);

try {
  const keyFile = path.join(home, 'api-key');
  for (let waited = 0; !(await fetch(`${baseURL}/models`).then(() => true, () => false)); waited += 100) {
    if (waited > 60000) throw new Error('the server did not start');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const apiKey = fs.readFileSync(keyFile, 'utf8').trim();
  console.log(`API key written to ${keyFile}\n`);

  console.log('# tunelab models list   (tunelab-tiny was made on first start)');
  await run([cli, 'models', 'list', '--home', home]);

  const dataset = path.resolve(root, 'examples/data/weather-jokes.jsonl');
  console.log('\n# tunelab validate weather-jokes.jsonl --model tunelab-tiny --show 1');
  await run([cli, 'validate', dataset, '--model', 'tunelab-tiny', '--show', '1', '--home', home]);

  console.log(`\n# the guide, through the official openai SDK (OPENAI_BASE_URL=${baseURL})`);
  await run([path.join(root, 'node_modules/tsx/dist/cli.mjs'), path.join(root, 'examples/guide.ts'), dataset, 'tunelab-tiny'], {
    OPENAI_BASE_URL: baseURL,
    OPENAI_API_KEY: apiKey,
  });

  // The CLI finds the server and its key through the home folder.
  console.log(`\n# tunelab jobs list --home ${home}`);
  await run([cli, 'jobs', 'list', '--home', home]);
  console.log(`\n# tunelab usage --home ${home}`);
  await run([cli, 'usage', '--home', home]);
  console.log(`\nDone. The home folder is ${home}: the fine-tune is in adapters/, its training log in work/.`);
  console.log(`To see the job's loss curve and compare the two models in the dashboard: npx tunelab serve --home ${home}`);
  console.log(`then open http://127.0.0.1:8000/ui/ and sign in with the key in ${keyFile}.`);
} finally {
  stop();
}
