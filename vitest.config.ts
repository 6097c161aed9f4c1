import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

// One graphql instance: Node loads graphql's CommonJS entry for Apollo, and vite would otherwise
// pick the ESM one (package.json "module") for our sources; graphql's instanceof checks then fail.
const resolve = { alias: [{ find: /^graphql$/, replacement: createRequire(new URL('./gateway/package.json', import.meta.url)).resolve('graphql') }] };

// CI asks for a JSON report as well (its closing line states the counts); `pnpm test` stays plain.
const jsonReport = process.env.VITEST_JSON_REPORT;

export default defineConfig({
  test: {
    reporters: jsonReport ? ['default', ['json', { outputFile: jsonReport }]] : ['default'],
    projects: [
      {
        resolve,
        test: {
          name: 'unit',
          include: ['**/test/**/*.test.ts'],
          exclude: ['**/node_modules/**', '**/*.int.test.ts', '**/*.e2e.test.ts'],
        },
      },
      {
        resolve,
        test: {
          name: 'integration',
          include: ['**/test/**/*.int.test.ts', '**/test/**/*.e2e.test.ts'],
          exclude: ['**/node_modules/**'],
          // Real PostgreSQL and RabbitMQ on 2 cores: one file at a time keeps timings honest.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
