import fs from 'node:fs';
import type { Command } from 'commander';
import { DEFAULT_MAX_UPLOAD_BYTES, parseByteSize, resolveHome } from '../config.js';
import { ensureEngineEnvironment } from './setup-command.js';

export function serveCommand(program: Command): void {
  program
    .command('serve')
    .description('start the server (SQLite and blobs in the home folder unless told otherwise)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on', (v) => Number.parseInt(v, 10), 8000)
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--database <url>', 'a postgres:// URL instead of the SQLite file in the home folder', process.env.TUNELAB_DATABASE_URL)
    .option(
      '--max-upload-size <size>',
      'largest accepted upload, e.g. 512MB or 2GB',
      parseByteSize,
      process.env.TUNELAB_MAX_UPLOAD_SIZE ? parseByteSize(process.env.TUNELAB_MAX_UPLOAD_SIZE) : DEFAULT_MAX_UPLOAD_BYTES,
    )
    .option(
      '--slots <n>',
      'fine-tuning jobs trained at once, one engine process each (0: this server trains nothing)',
      (v) => Number.parseInt(v, 10),
      process.env.TUNELAB_ENGINE_SLOTS ? Number.parseInt(process.env.TUNELAB_ENGINE_SLOTS, 10) : 1,
    )
    .action(async (options: { host: string; port: number; home?: string; database?: string; maxUploadSize: number; slots: number }) => {
      const home = resolveHome(options.home);
      await ensureEngineEnvironment(home);
      // Loaded here: the other commands need none of the server's modules.
      const { startServer } = await import('../server.js');
      const server = await startServer({
        home,
        host: options.host,
        port: options.port,
        database: options.database,
        maxUploadBytes: options.maxUploadSize,
        engineSlots: options.slots,
        // Without a GPU (NVIDIA's or AMD's device files), llama.cpp answers a model with a GGUF export
        // faster than the engine does (bench/results/serve-backends.json), unless config.json says otherwise.
        defaultBackend: fs.existsSync('/dev/nvidiactl') || fs.existsSync('/dev/kfd') ? 'engine' : 'auto',
        logger: { level: process.env.TUNELAB_LOG_LEVEL ?? 'info' },
      });
      server.app.log.info(`tunelab serving ${server.home.root} at ${server.baseURL}`);
      server.app.log.info(`Dashboard: ${new URL('/ui/', server.baseURL).href} (sign in with the key in ${server.home.apiKeyFile})`);
      const stop = async () => {
        await server.close();
        process.exit(0);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
