import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/** The dashboard: built from src/ui into dist/ui, which the server serves at /ui/. */
export default defineConfig({
  root: fileURLToPath(new URL('./src/ui', import.meta.url)),
  // Relative, like the API's address in api.ts: the dashboard works under whatever prefix a proxy gives the server.
  base: './',
  logLevel: 'warn',
  build: {
    outDir: fileURLToPath(new URL('./dist/ui', import.meta.url)),
    emptyOutDir: true,
    // Served from the user's own machine: nothing is fetched from elsewhere, and old browsers are not a concern.
    target: 'es2022',
  },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
});
