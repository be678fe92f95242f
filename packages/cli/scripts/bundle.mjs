// Bundle the commands that load the build engine into one file each. Loading a few
// hundred small modules (yaml, zod, execa, our packages) is most of what a cached build
// costs; one bundled file halves that. oclif itself stays external (its Command class
// must be the one the host loaded); plugins are still imported from their own packages.

import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
// recursive-build extends build: bundle it while build.js is still plain
for (const cmd of ['recursive-build', 'build']) {
  const file = `${root}dist/commands/${cmd}.js`;
  await build({
    entryPoints: [file],
    outfile: file,
    allowOverwrite: true,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: false,
    logLevel: 'warning',
    // zod and plugin-api stay shared with the plugins, which import them too
    external: ['@oclif/core', '@napi-rs/xattr', 'pino-pretty', 'zod', '@stacker/plugin-api'],
    // CommonJS dependencies bundled into an ES module still call require() for builtins
    banner: {
      js: "import { createRequire as __stackerRequire } from 'node:module'; const require = __stackerRequire(import.meta.url);",
    },
  });
}
