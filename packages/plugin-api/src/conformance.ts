import { deepStrictEqual, strictEqual } from 'node:assert';
import { execFile } from 'node:child_process';
import {
  chmod,
  chown,
  cp,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { Change, Cleaner, DriverContext, StorageDriver, UnpackOptions } from './storage.js';

/**
 * A storage conformance kit: the behaviour every storage driver must have, as tests any
 * driver can run. It takes the test functions as parameters (vitest's or jest's
 * `describe`/`it`/`expect` fit, or the tiny runner below), so this package needs no test
 * framework, and it uses node builtins only.
 *
 *     runStorageConformance(async () => {
 *       const rootsDir = await mkdtemp(join(tmpdir(), 'roots-'));
 *       const ctx = { rootsDir, log: silentLogger, unpack: directoryUnpack };
 *       const driver = await myFactory.create(ctx);
 *       return { driver, ctx, dispose: () => rm(rootsDir, { recursive: true, force: true }) };
 *     }, { describe, it, expect });
 *
 * The tests run as root (of a user namespace, or real root): they chown files. The
 * driver's `ctx.unpack` must be `directoryUnpack` (or behave like it): the kit's "layer
 * tars" are streams that carry the path of a directory to copy.
 *
 * Changes are compared as `put PATH` (an add or a modify: drivers may tell them apart or
 * not), `delete PATH` and `opaque PATH`, in the order the driver gives them. The expected
 * lists include the unchanged directories that lead to a change: a layer needs them, and
 * drivers that agree on these lists write byte-identical layers.
 */

export interface ConformanceSubject {
  driver: StorageDriver & Partial<Cleaner>;
  ctx: DriverContext;
  /** Called after each test, also when it failed: remove everything the test made. */
  dispose(): Promise<void>;
}

/** What the kit needs from a test framework (a subset of vitest's API). */
export interface ConformanceTestApi {
  describe(name: string, fn: () => void): void;
  it(name: string, fn: () => Promise<void>, timeout?: number): void;
  expect(actual: unknown): { toEqual(expected: unknown): void; toBe(expected: unknown): void };
}

export interface ConformanceOptions {
  /** Title of the describe block (default: `storage conformance`). */
  name?: string;
  /** Per-test timeout in milliseconds (default 60 s). */
  timeout?: number;
}

/** A fake `DriverContext.unpack`: the "tar" stream carries the path of a directory, whose
 * contents are copied onto `dir` (modes, timestamps and symlinks kept). */
export async function directoryUnpack(
  layerTar: Readable,
  dir: string,
  options: UnpackOptions,
): Promise<void> {
  let src = '';
  for await (const chunk of layerTar) src += String(chunk);
  lastUnpackOptions = options;
  await cp(src, dir, { recursive: true, force: true, preserveTimestamps: true, verbatimSymlinks: true });
}

/** The options of the last `directoryUnpack` call (the kit checks the driver asks for a
 * whiteout style). */
let lastUnpackOptions: UnpackOptions | undefined;
const unpackOptionsSeen = (): UnpackOptions | undefined => lastUnpackOptions;

const run = promisify(execFile);

/** Changes as `put|delete|opaque PATH`; `put` sources must exist (lstat) and lie in `rootfs`
 * or the driver's own directories. */
async function changeList(driver: StorageDriver, key: string): Promise<string[]> {
  const out: string[] = [];
  for await (const c of driver.diff(key) as AsyncIterable<Change>) {
    if (c.kind === 'add' || c.kind === 'modify') {
      await lstat(c.source);
      out.push(`put ${c.path}`);
    } else out.push(`${c.kind} ${c.path}`);
  }
  return out;
}

async function changesByPath(driver: StorageDriver, key: string): Promise<Map<string, Change>> {
  const map = new Map<string, Change>();
  for await (const c of driver.diff(key) as AsyncIterable<Change>)
    map.set(`${c.kind === 'add' || c.kind === 'modify' ? 'put' : c.kind} ${c.path}`, c);
  return map;
}

function sourceOf(changes: Map<string, Change>, path: string): string {
  const c = changes.get(`put ${path}`);
  if (!c || (c.kind !== 'add' && c.kind !== 'modify'))
    throw new Error(`no add/modify change for ${path} (got: ${[...changes.keys()].join(', ')})`);
  return c.source;
}

/** Write a tree: keys are paths, a trailing `/` makes a directory, values are contents. */
async function writeTree(root: string, files: Record<string, string>): Promise<void> {
  for (const [p, content] of Object.entries(files)) {
    if (p.endsWith('/')) await mkdir(join(root, p), { recursive: true });
    else {
      await mkdir(join(root, p, '..'), { recursive: true });
      await writeFile(join(root, p), content);
    }
  }
}

/** Commit a base snapshot `name` holding `files`. */
async function base(
  driver: StorageDriver,
  name: string,
  files: Record<string, string>,
  parent?: string,
): Promise<void> {
  const key = `${name}-extract`;
  const rootfs = await driver.prepare(key, parent);
  await writeTree(rootfs, files);
  await driver.commit(name, key);
}

const BASE = {
  'bin/': '',
  'd/old': 'old\n',
  'd/sub/deep': 'deep\n',
  'etc/conf': 'one\n',
  'etc/same': 'same\n',
  'gone/sub/file': 'x\n',
  top: 'top\n',
};

/** Run the kit with `t` (vitest's `{ describe, it, expect }`, or `miniTestApi().api`). */
export function runStorageConformance(
  makeDriver: () => Promise<ConformanceSubject>,
  t: ConformanceTestApi,
  options: ConformanceOptions = {},
): void {
  const { expect } = t;
  const timeout = options.timeout ?? 60_000;
  const test = (title: string, fn: (s: ConformanceSubject) => Promise<void>) =>
    t.it(
      title,
      async () => {
        const s = await makeDriver();
        try {
          await fn(s);
        } finally {
          await s.dispose();
        }
      },
      timeout,
    );

  t.describe(options.name ?? 'storage conformance', () => {
    test('creates an empty active snapshot, diffs and commits it', async ({ driver }) => {
      const rootfs = await driver.prepare('k', undefined);
      expect(driver.rootfs('k')).toBe(rootfs);
      expect(await readdir(rootfs)).toEqual([]);
      expect(await changeList(driver, 'k')).toEqual([]);
      await writeTree(rootfs, { 'b/': '', 'a.b': 'x', 'a/c': 'y', é: '' });
      expect(await changeList(driver, 'k')).toEqual(['put a', 'put a/c', 'put a.b', 'put b', 'put é']);
      expect(await driver.exists('k')).toBe(false);
      await driver.commit('c1', 'k');
      expect(await driver.exists('c1')).toBe(true);
      expect(driver.rootfs('k')).toBe(undefined);
      expect(await failure(() => driver.prepare('c1-again', 'no-such-parent'))).toBe(true);
    });

    test('stacks snapshots: prepare on a parent, commit, prepare on the child', async ({ driver }) => {
      await base(driver, 'c1', { 'a/one': '1' });
      const r2 = await driver.prepare('k2', 'c1');
      expect(await readFile(join(r2, 'a/one'), 'utf8')).toBe('1');
      expect(await changeList(driver, 'k2')).toEqual([]);
      await writeFile(join(r2, 'a/two'), '2');
      expect(await failure(() => driver.prepare('k2', 'c1'))).toBe(true);
      await driver.commit('c2', 'k2');
      const r3 = await driver.prepare('k3', 'c2');
      expect((await readdir(join(r3, 'a'))).sort()).toEqual(['one', 'two']);
      expect(await changeList(driver, 'k3')).toEqual([]);
      // the parent is untouched by its children
      const r1 = await driver.prepare('k1', 'c1');
      expect(await readdir(join(r1, 'a'))).toEqual(['one']);
      // committing a name that exists drops the active snapshot and keeps the first
      await writeFile(join(r1, 'a/three'), '3');
      await driver.commit('c2', 'k1');
      expect(driver.rootfs('k1')).toBe(undefined);
      const r4 = await driver.prepare('k4', 'c2');
      expect((await readdir(join(r4, 'a'))).sort()).toEqual(['one', 'two']);
    });

    test('unpacks a layer through ctx.unpack', async ({ driver, ctx }) => {
      const src = join(ctx.rootsDir, `.conformance-layer-${process.pid}`);
      await writeTree(src, { 'usr/bin/tool': '#!/bin/sh\n', 'etc/': '' });
      await chmod(join(src, 'usr/bin/tool'), 0o755);
      const rootfs = await driver.prepare('x', undefined);
      lastUnpackOptions = undefined;
      await driver.unpackLayer('x', Readable.from([src]));
      expect(['delete', 'overlay'].includes(String(unpackOptionsSeen()?.whiteouts))).toBe(true);
      expect(await readFile(join(rootfs, 'usr/bin/tool'), 'utf8')).toBe('#!/bin/sh\n');
      expect(((await lstat(join(rootfs, 'usr/bin/tool'))).mode & 0o777).toString(8)).toBe('755');
      expect(await changeList(driver, 'x')).toEqual([
        'put etc',
        'put usr',
        'put usr/bin',
        'put usr/bin/tool',
      ]);
    });

    test('unpacks a layer onto an active snapshot that has a parent, and again after that', async ({
      driver,
      ctx,
    }) => {
      // how every layer after the first of a base image is applied
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      for (const [i, file] of ['usr/bin/one', 'usr/bin/two'].entries()) {
        const src = join(ctx.rootsDir, `.conformance-layer-${process.pid}-${i}`);
        await writeTree(src, { [file]: `${i}\n` });
        await driver.unpackLayer('k', Readable.from([src]));
      }
      const now = driver.rootfs('k') ?? rootfs;
      expect(await readFile(join(now, 'usr/bin/one'), 'utf8')).toBe('0\n');
      expect(await readFile(join(now, 'usr/bin/two'), 'utf8')).toBe('1\n');
      expect(await readFile(join(now, 'etc/conf'), 'utf8')).toBe('one\n');
      await writeFile(join(now, 'made-in-run'), 'x\n');
      expect(await changeList(driver, 'k')).toEqual([
        'put made-in-run',
        'put usr',
        'put usr/bin',
        'put usr/bin/one',
        'put usr/bin/two',
      ]);
      await driver.commit('c2', 'k');
    });

    test('reports a modified file with its new content, and the directories that lead to it', async ({
      driver,
    }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await writeFile(join(rootfs, 'etc/conf'), 'two\n', { flag: 'a' });
      await writeFile(join(rootfs, 'd/sub/deep'), 'DEEP\n');
      expect(await changeList(driver, 'k')).toEqual([
        'put d',
        'put d/sub',
        'put d/sub/deep',
        'put etc',
        'put etc/conf',
      ]);
      const changes = await changesByPath(driver, 'k');
      expect(await readFile(sourceOf(changes, 'etc/conf'), 'utf8')).toBe('one\ntwo\n');
      expect(await readFile(sourceOf(changes, 'd/sub/deep'), 'utf8')).toBe('DEEP\n');
    });

    test('reports deletions, only the top-most deleted path', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await rm(join(rootfs, 'top'));
      await rm(join(rootfs, 'gone'), { recursive: true });
      await rm(join(rootfs, 'd/old'));
      expect(await changeList(driver, 'k')).toEqual(['put d', 'delete d/old', 'delete gone', 'delete top']);
    });

    test('reports a directory replaced by a new one as opaque', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await rm(join(rootfs, 'd'), { recursive: true });
      await writeTree(rootfs, { 'd/new': 'new\n', 'd/sub/x': '' });
      expect(await changeList(driver, 'k')).toEqual([
        'put d',
        'opaque d',
        'put d/new',
        'put d/sub',
        'put d/sub/x',
      ]);
    });

    test('keeps hardlinks: both names, one inode', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await writeFile(join(rootfs, 'bin/h1'), 'linked\n');
      await link(join(rootfs, 'bin/h1'), join(rootfs, 'bin/h2'));
      expect(await changeList(driver, 'k')).toEqual(['put bin', 'put bin/h1', 'put bin/h2']);
      const changes = await changesByPath(driver, 'k');
      const a = await lstat(sourceOf(changes, 'bin/h1'));
      const b = await lstat(sourceOf(changes, 'bin/h2'));
      expect(a.ino === b.ino && a.dev === b.dev).toBe(true);
      expect(a.nlink).toBe(2);
    });

    test('reports new and re-pointed symlinks without following them', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      await driver.prepare('k0', 'c1').then(async (r) => {
        await symlink('/etc/conf', join(r, 'bin/link'));
        await driver.commit('c2', 'k0');
      });
      const rootfs = await driver.prepare('k', 'c2');
      await symlink('../nowhere/at/all', join(rootfs, 'bin/dangling'));
      await rm(join(rootfs, 'bin/link'));
      await symlink('/etc/same', join(rootfs, 'bin/link'));
      expect(await changeList(driver, 'k')).toEqual(['put bin', 'put bin/dangling', 'put bin/link']);
      const changes = await changesByPath(driver, 'k');
      expect(await readlink(sourceOf(changes, 'bin/dangling'))).toBe('../nowhere/at/all');
      expect(await readlink(sourceOf(changes, 'bin/link'))).toBe('/etc/same');
      expect((await lstat(sourceOf(changes, 'bin/link'))).isSymbolicLink()).toBe(true);
    });

    test('reports an ownership or mode change alone', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await chown(join(rootfs, 'etc/conf'), 1234, 2345);
      await chmod(join(rootfs, 'top'), 0o600);
      expect(await changeList(driver, 'k')).toEqual(['put etc', 'put etc/conf', 'put top']);
      const changes = await changesByPath(driver, 'k');
      const st = await lstat(sourceOf(changes, 'etc/conf'));
      expect(`${st.uid}:${st.gid}`).toBe('1234:2345');
      expect(await readFile(sourceOf(changes, 'etc/conf'), 'utf8')).toBe('one\n');
      expect(((await lstat(sourceOf(changes, 'top'))).mode & 0o777).toString(8)).toBe('600');
    });

    test('reports an xattr change alone (user.foo)', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await run('setfattr', ['-n', 'user.foo', '-v', 'bar', join(rootfs, 'etc/same')]);
      expect(await changeList(driver, 'k')).toEqual(['put etc', 'put etc/same']);
      const changes = await changesByPath(driver, 'k');
      const { stdout } = await run('getfattr', [
        '-h',
        '--only-values',
        '-n',
        'user.foo',
        sourceOf(changes, 'etc/same'),
      ]);
      expect(stdout).toBe('bar');
    });

    test('leaves nothing behind when prepare fails, and cleanup() drops active snapshots', async ({
      driver,
    }) => {
      expect(await failure(() => driver.prepare('k', 'no-such-parent'))).toBe(true);
      expect(driver.rootfs('k')).toBe(undefined);
      const rootfs = await driver.prepare('k', undefined); // the key is free again
      await writeTree(rootfs, { 'ro/in/f': 'x' });
      await driver.commit('c1', 'k');
      // a build killed halfway: an active snapshot holding read-only directories
      const left = await driver.prepare('left', 'c1');
      await writeTree(left, { 'more/in/g': 'y' });
      await chmod(join(left, 'more/in'), 0o500);
      await chmod(join(left, 'more'), 0o500);
      if (driver.cleanup) {
        await driver.cleanup();
        expect(driver.rootfs('left')).toBe(undefined);
        expect(await driver.exists('c1')).toBe(true);
        const again = await driver.prepare('left', 'c1');
        expect(await readFile(join(again, 'ro/in/f'), 'utf8')).toBe('x');
      }
    });

    test('removes active and committed snapshots, never a parent still in use', async ({ driver }) => {
      await base(driver, 'c1', BASE);
      const rootfs = await driver.prepare('k', 'c1');
      await chmod(join(rootfs, 'd/sub'), 0o500);
      expect(await failure(() => driver.remove('c1'))).toBe(true);
      expect(await driver.exists('c1')).toBe(true);
      await driver.remove('k');
      expect(driver.rootfs('k')).toBe(undefined);
      await driver.remove('c1');
      expect(await driver.exists('c1')).toBe(false);
      await driver.remove('c1');
      await driver.remove('never-existed');
      expect(await failure(() => driver.prepare('k2', 'c1'))).toBe(true);
    });
  });
}

async function failure(fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
    return false;
  } catch {
    return true;
  }
}

export interface ConformanceResult {
  name: string;
  ok: boolean;
  error?: string;
}

/**
 * A tiny test runner with the kit's `ConformanceTestApi` (node:assert underneath), for
 * running the kit where no test framework is at hand: in a child process inside a user
 * namespace, or in a plugin's own smoke test.
 *
 *     const results = await runStorageConformanceStandalone(makeDriver);
 *     // [{ name: 'storage conformance > creates …', ok: true }, …]
 */
export async function runStorageConformanceStandalone(
  makeDriver: () => Promise<ConformanceSubject>,
  options: ConformanceOptions = {},
): Promise<ConformanceResult[]> {
  const tests: { name: string; fn: () => Promise<void> }[] = [];
  const prefix: string[] = [];
  const api: ConformanceTestApi = {
    describe(name, fn) {
      prefix.push(name);
      try {
        fn();
      } finally {
        prefix.pop();
      }
    },
    it(name, fn) {
      tests.push({ name: [...prefix, name].join(' > '), fn });
    },
    expect(actual) {
      return {
        toEqual: (expected) => deepStrictEqual(actual, expected),
        toBe: (expected) => strictEqual(actual, expected),
      };
    },
  };
  runStorageConformance(makeDriver, api, options);
  const results: ConformanceResult[] = [];
  for (const t of tests) {
    try {
      await t.fn();
      results.push({ name: t.name, ok: true });
    } catch (e) {
      results.push({ name: t.name, ok: false, error: (e as Error).message });
    }
  }
  return results;
}
