import path from 'node:path';
import { defineConfig } from 'vitest/config';
import { findPostgresBin } from './test/support/postgres.js';

/** The tests that go through the store run once on SQLite and once on PostgreSQL, where one is at hand. */
const STORE_TESTS = ['guide', 'errors', 'isolation', 'pagination', 'restart', 'uploads', 'validation-pipeline', 'notifications', 'usage', 'jobs', 'keys', 'long-jobs', 'responses', 'workers'].map((name) => `test/${name}.test.ts`);
const postgresAvailable = Boolean(process.env.TUNELAB_TEST_POSTGRES_URL || findPostgresBin());
if (!postgresAvailable) {
  console.warn('PostgreSQL not found (apt-get install postgresql, or set TUNELAB_TEST_POSTGRES_URL): store tests run on SQLite only.');
}

// The engine's environment that `npm test` makes (scripts/test-prerequisites.sh), unless one is named.
const enginePython = process.env.TUNELAB_PYTHON ?? path.resolve(import.meta.dirname, '.venv/bin/python');

export default defineConfig({
  test: {
    env: { TUNELAB_PYTHON: enginePython },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: one file at a time keeps servers from starving each other.
    fileParallelism: false,
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['test/**/*.test.ts'] } },
      ...(postgresAvailable
        ? [
            {
              extends: true as const,
              test: {
                name: 'postgres',
                include: STORE_TESTS,
                env: { TUNELAB_TEST_DATABASE: 'postgres' },
                globalSetup: ['test/support/postgres-setup.ts'],
              },
            },
          ]
        : []),
    ],
  },
});
