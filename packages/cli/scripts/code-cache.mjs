// Write V8's code cache of the fast path's bundle (node scripts/code-cache.mjs dist/fast.cjs):
// the bundle is loaded as dist/fast-load.js loads it, then src/fast-warmup.ts runs what a
// cached build runs, so the cache holds that code compiled too, not only what loading
// compiles. A warm-up that fails costs speed only: the cache is written all the same.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadBundle } from '../dist/fast-load.js';
import { findFastPlugins } from '../dist/fast-path.js';

const file = process.argv[2];
const { exports, script } = loadBundle(file, { cache: false });
const home = mkdtempSync(join(tmpdir(), 'stacker-code-cache-'));
try {
  // the core plugins only, whatever this user installed
  const plugins = findFastPlugins(['build'], dirname(dirname(file)), { HOME: home });
  if (!plugins) throw new Error('the core plugins were not found');
  await exports.warmUp(plugins, exports.bundledPlugins, (url) => import(url));
} catch (e) {
  console.warn(`${file}.cache: the warm-up failed (${e?.message ?? e}); the cache holds less`);
} finally {
  rmSync(home, { recursive: true, force: true });
}
const data = script.createCachedData();
writeFileSync(`${file}.cache`, data);
console.log(`${file}.cache: ${Math.round(data.length / 1024)} KiB`);
