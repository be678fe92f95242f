// Bundles, after tsc. Loading a few hundred small modules (yaml, zod, oclif, our packages)
// is most of what a cached build costs; a bundled file loads in a fraction of that.
//  - dist/fast.cjs (+ .cache): build and recursive-build on the fast path (src/fast-path.ts),
//    run by bin/run.js with V8's code cache (src/fast-load.ts)
//  - dist/launch.cjs: what bin/run.js needs before it knows what to run (src/launch.ts)
//  - dist/commands/{build,recursive-build}.js in place, for oclif (the other way in): oclif
//    itself stays external there (its Command class must be the one the host loaded), and
//    plugins are imported from their own packages.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
// CommonJS dependencies bundled into an ES module still call require() for builtins
const requireBanner =
  "import { createRequire as __stackerRequire } from 'node:module'; const require = __stackerRequire(import.meta.url);";

// dist/fast.cjs: the fast path of build and recursive-build (src/fast-path.ts) as one file,
// with everything they load: the parts of oclif a command needs (not its Config and plugin
// discovery), zod, yaml, our packages, and the core plugins that provide sources and
// storage, which share all of that with the engine instead of loading their own copies.
// A bundled plugin is used only while its files are the ones bundled (their hashes are
// written into the bundle), so a plugin rebuilt on its own is imported from its package.
const pjson = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
const packageDir = (name) => {
  for (let dir = root; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'node_modules', name, 'package.json'))) return join(dir, 'node_modules', name);
    if (dir === dirname(dir)) throw new Error(`bundle.mjs: ${name} is not installed`);
  }
};
const plugins = [];
for (const name of pjson.oclif.plugins) {
  const dir = packageDir(name);
  const pj = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (pj.oclif?.stacker?.module)
    plugins.push({ name, dir: realpathSync(dir), module: pj.oclif.stacker.module });
}
const entry = [
  "export { runFast } from './dist/fast-build.js';",
  "export { warmUp } from './dist/fast-warmup.js';",
  'export const bundledPlugins = {',
  ...plugins.map(
    (p) =>
      `  ${JSON.stringify(p.name)}: { load: () => import(${JSON.stringify(p.name)}), module: ${JSON.stringify(p.module)}, files: __STACKER_BUNDLED_FILES__[${JSON.stringify(p.name)}] ?? {} },`,
  ),
  '};',
].join('\n');
const out = `${root}dist/fast.cjs`;
const result = await build({
  stdin: { contents: entry, resolveDir: root, sourcefile: 'fast-entry.js', loader: 'js' },
  outfile: out,
  bundle: true,
  platform: 'node',
  // CommonJS, run by dist/fast-load.js through vm.Script: the one way Node 20 takes a code cache
  format: 'cjs',
  target: 'node20',
  // no comments or indentation: a third less to read and parse (names stay as they are)
  minifyWhitespace: true,
  // ASCII only, so that dist/fast-load.js reads it as latin1, a one-byte string (half the
  // memory, and no UTF-8 decoding); esbuild leaves regular expression literals as they are
  charset: 'ascii',
  // Node 20 breaks import() in a script compiled from a code cache ("A dynamic import
  // callback was not specified"): what is not bundled is require()d instead (which takes
  // ES modules too since Node 20.19); plugins that are not bundled are imported by bin/run.js
  supported: { 'dynamic-import': false },
  sourcemap: false,
  logLevel: 'warning',
  metafile: true,
  write: false,
  absWorkingDir: root,
  // loaded for a terminal only, or oclif's TypeScript support (never used here)
  external: ['pino-pretty', 'typescript', 'ts-node', 'tsx', 'source-map-support'],
  define: { 'import.meta.url': '__stackerImportMetaUrl' },
  banner: { js: "const __stackerImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [
    {
      // @oclif/core's index loads all of oclif (help, ux, its node version check): take
      // only the modules a command needs
      name: 'oclif-core-parts',
      setup(b) {
        b.onResolve({ filter: /^@oclif\/core$/ }, () => ({ path: `${root}scripts/oclif-parts.cjs` }));
      },
    },
    {
      // Modules a cached build never uses, loaded when one of their functions is first
      // used: the native xattr module (unpacking, diffs), zlib (layers), readline (prompts)
      name: 'lazy-externals',
      setup(b) {
        const lazy = ['@napi-rs/xattr', 'node:zlib', 'zlib', 'node:readline', 'readline'];
        const requireHere = createRequire(`${root}package.json`);
        b.onResolve({ filter: /^(@napi-rs\/xattr|(node:)?(zlib|readline))$/ }, (args) =>
          args.namespace === 'stacker-lazy-external'
            ? { path: args.path, external: true }
            : { path: args.path, namespace: 'stacker-lazy-external' },
        );
        b.onLoad({ filter: /.*/, namespace: 'stacker-lazy-external' }, (args) => {
          if (!lazy.includes(args.path)) throw new Error(`bundle.mjs: ${args.path} is not lazy`);
          const keys = Object.keys(requireHere(args.path));
          return {
            loader: 'js',
            resolveDir: root,
            contents: `let m;
const load = () => (m ??= require(${JSON.stringify(args.path)}));
for (const k of ${JSON.stringify(keys)}) Object.defineProperty(module.exports, k, { enumerable: true, get: () => load()[k] });`,
          };
        });
      },
    },
    {
      // One copy of a package that npm installed twice at the same version (yaml, under
      // packages/cli and packages/stackerfile): the same code, read and compiled once
      name: 'dedupe',
      setup(b) {
        const seen = new Map();
        b.onResolve({ filter: /^[^./]/ }, async (args) => {
          if (args.pluginData === 'dedupe' || args.namespace !== 'file' || args.path.startsWith('node:'))
            return undefined;
          const r = await b.resolve(args.path, {
            kind: args.kind,
            importer: args.importer,
            resolveDir: args.resolveDir,
            pluginData: 'dedupe',
          });
          const m = /^(.*[\\/]node_modules[\\/](?:@[^\\/]+[\\/])?[^\\/]+)[\\/]/.exec(r.path);
          if (r.errors.length > 0 || r.external || !m) return r;
          const pj = JSON.parse(readFileSync(join(m[1], 'package.json'), 'utf8'));
          const key = `${pj.name}@${pj.version}`;
          if (!seen.has(key)) seen.set(key, m[1]);
          const canonical = join(seen.get(key), relative(m[1], r.path));
          return existsSync(canonical) ? { ...r, path: canonical } : r;
        });
      },
    },
    {
      // What oclif's Command and handle() load only for Command.run (config, with its
      // plugin discovery) and for help after an error: loaded when first used instead
      name: 'oclif-lazy',
      setup(b) {
        const lazy = [
          [/[\\/]@oclif[\\/]core[\\/]lib[\\/]command\.js$/, './config'],
          [/[\\/]@oclif[\\/]core[\\/]lib[\\/]errors[\\/]handle\.js$/, '../help/index'],
        ];
        b.onResolve({ filter: /^\.\.?\/(config|help\/index)$/ }, (args) => {
          if (!lazy.some(([importer, spec]) => importer.test(args.importer) && spec === args.path))
            return undefined;
          return { path: join(args.resolveDir, args.path), namespace: 'stacker-lazy' };
        });
        b.onLoad({ filter: /.*/, namespace: 'stacker-lazy' }, (args) => ({
          resolveDir: dirname(args.path),
          loader: 'js',
          contents: `let m;
const load = () => (m ??= require(${JSON.stringify(`./${basename(args.path)}`)}));
module.exports = new Proxy({}, {
  get: (_, k) => load()[k],
  has: (_, k) => k in load(),
  ownKeys: () => Reflect.ownKeys(load()),
  getOwnPropertyDescriptor: (_, k) => {
    const d = Reflect.getOwnPropertyDescriptor(load(), k);
    return d && { ...d, configurable: true };
  },
});`,
        }));
      },
    },
  ],
});
// each bundled plugin's own files, hashed as they were bundled
const files = Object.fromEntries(plugins.map((p) => [p.name, {}]));
for (const input of Object.keys(result.metafile.inputs)) {
  if (!existsSync(join(root, input))) continue; // the generated entry
  const abs = realpathSync(join(root, input));
  for (const p of plugins) {
    if (!abs.startsWith(p.dir + sep)) continue;
    files[p.name][relative(p.dir, abs)] = createHash('sha256').update(readFileSync(abs)).digest('hex');
  }
}
for (const p of plugins) {
  const mod = relative(p.dir, join(p.dir, p.module));
  if (!files[p.name][mod]) throw new Error(`bundle.mjs: ${p.name}'s module ${p.module} is not in the bundle`);
}
const text =
  `const __STACKER_BUNDLED_FILES__ = ${JSON.stringify(files)};\n${result.outputFiles[0].text}`.replace(
    /[^\x00-\x7f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
writeFileSync(out, text);
// V8's code cache of the bundle, made by a node with no flags, as bin/run.js runs it, after
// a warm-up that runs what a cached build runs (src/fast-warmup.ts)
const env = { ...process.env };
delete env.NODE_OPTIONS;
execFileSync(process.execPath, [`${root}scripts/code-cache.mjs`, out], { env, stdio: 'inherit' });

// dist/launch.cjs: what bin/run.js loads first (src/launch.ts)
await build({
  entryPoints: [`${root}dist/launch.js`],
  outfile: `${root}dist/launch.cjs`,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: false,
  logLevel: 'warning',
  define: { 'import.meta.url': '__stackerImportMetaUrl' },
  banner: { js: "const __stackerImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
});

// after dist/fast.cjs, which bundles the plain modules
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
    banner: { js: requireBanner },
  });
}
