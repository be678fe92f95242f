import { defineConfig } from 'vitest/config';

// One config for the whole repo: unit tests live beside the code in packages/ and
// plugins/; e2e/ runs the compiled CLI as the unprivileged test user.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts', 'plugins/*/src/**/*.test.ts'],
          setupFiles: ['tools/test-support/fuzz-seed.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['e2e/src/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
