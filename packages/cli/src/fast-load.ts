import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import vm from 'node:vm';

/**
 * Loads dist/fast.cjs, the bundle of the fast path (fast-path.ts), with V8's code cache
 * that the build made for it (dist/fast.cjs.cache, see scripts/bundle.mjs): compiling
 * the bundle's two megabytes, and then the functions a build calls, is otherwise a third
 * of what a cached build costs, and Node 20 caches no compiled code by itself. A cache that
 * does not fit (another node, other V8 flags) is rejected by V8, and the bundle is
 * compiled as usual.
 */

export interface LoadedBundle {
  exports: Record<string, unknown>;
  script: vm.Script;
}

/** The bundle as a CommonJS function (the code cache is of this very text). */
function wrap(source: string): string {
  return `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
}

export function loadBundle(file: string, opts: { cache?: boolean } = {}): LoadedBundle {
  // ASCII only (scripts/bundle.mjs escapes the rest): latin1 makes a one-byte string
  const source = readFileSync(file, 'latin1');
  let cachedData: Buffer | undefined;
  if (opts.cache !== false) {
    try {
      cachedData = readFileSync(`${file}.cache`);
    } catch {
      // no cache: compile
    }
  }
  // no import() in the bundle (scripts/bundle.mjs): none would work once it is cached
  const script = new vm.Script(wrap(source), { filename: file, cachedData });
  const fn = script.runInThisContext() as (...args: unknown[]) => void;
  const module = { exports: {} as Record<string, unknown> };
  fn.call(module.exports, module.exports, createRequire(file), module, file, dirname(file));
  return { exports: module.exports, script };
}
