import type { TestProject } from 'vitest/node';
import { findPostgresBin, startPostgres } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
  }
}

/** Global setup of the `postgres` test project: one cluster for the run, a database per test server. */
export default function setup(project: TestProject) {
  const given = process.env.TUNELAB_TEST_POSTGRES_URL;
  if (given) {
    project.provide('postgresUrl', given);
    return;
  }
  const postgres = startPostgres(findPostgresBin()!);
  project.provide('postgresUrl', postgres.adminUrl);
  return () => postgres.stop();
}
