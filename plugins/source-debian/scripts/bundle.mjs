// The published module is one file with @stacker/plugin-api and zod inside: the package
// then has no runtime dependencies, so `stacker plugins install file:…tgz` needs no
// registry (@stacker/plugin-api is a workspace package, not on npm). tsc writes the types.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/index.ts'],
  outfile: 'dist/index.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  legalComments: 'inline',
  logLevel: 'warning',
});
