import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger } from '@stacker/plugin-api';
import {
  type ConformanceResult,
  directoryUnpack,
  runStorageConformance,
} from '@stacker/plugin-api/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BtrfsDriver } from './driver.js';
import { btrfsFactory } from './factory.js';
import {
  buildIfStale,
  haveTestUser,
  isRoot,
  type LoopBtrfs,
  makeLoopBtrfs,
  pkg,
  repo,
  runFixture,
  TEST_USER,
} from './test-loop-btrfs.js';

// Needs a btrfs: made here on a loop device, so only as root (CI runs tests as root).
let fs: LoopBtrfs | undefined;
beforeAll(() => {
  if (!isRoot) return;
  buildIfStale(join(repo, 'packages', 'plugin-api'), true);
  fs = makeLoopBtrfs();
}, 120_000);
afterAll(() => fs?.dispose());

async function destroy(driver: BtrfsDriver, rootsDir: string): Promise<void> {
  await driver.cleanup();
  for (const id of await readdir(driver.snapshotsDir)) {
    const meta = JSON.parse(await readFile(join(driver.snapshotsDir, id, 'meta.json'), 'utf8')) as {
      name: string;
    };
    await driver.remove(meta.name);
  }
  await rm(rootsDir, { recursive: true, force: true });
}

runStorageConformance(
  async () => {
    const rootsDir = await mkdtemp(join(fs!.dirFor('root', 'direct'), 'roots-'));
    const ctx = { rootsDir, log: silentLogger, unpack: directoryUnpack };
    const driver = (await btrfsFactory.create(ctx)) as BtrfsDriver;
    return { driver, ctx, dispose: () => destroy(driver, rootsDir) };
  },
  { describe: isRoot ? describe : describe.skip, it, expect },
  { name: 'btrfs storage conformance, as real root' },
);

describe('btrfs storage conformance, unprivileged in a user namespace', () => {
  it.runIf(isRoot && haveTestUser())(
    'passes every test of the kit',
    () => {
      buildIfStale(pkg, true);
      const results = runFixture(
        join(pkg, 'src', 'test-fixture-conformance.mjs'),
        [fs!.dirFor(TEST_USER, 'user')],
        'user',
      ) as ConformanceResult[];
      expect(results.length).toBeGreaterThanOrEqual(12);
      expect(results.filter((r) => !r.ok)).toEqual([]);
    },
    180_000,
  );
});
