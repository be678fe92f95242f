// Test fixture (plain JS; needs the compiled dist of this package and @stacker/plugin-api):
// runs the storage conformance kit against the btrfs driver in DIR (on a btrfs mounted with
// user_subvol_rm_allowed) and prints the results as JSON. Meant for a user namespace:
//   unshare --user --map-auto --map-root-user --mount --fork node test-fixture-conformance.mjs DIR
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger } from '@stacker/plugin-api';
import { directoryUnpack, runStorageConformanceStandalone } from '@stacker/plugin-api/conformance';
import { btrfsFactory } from '../dist/index.js';

const parent = process.argv[2];
let checked = false;
const results = await runStorageConformanceStandalone(async () => {
  const rootsDir = await mkdtemp(join(parent, 'roots-'));
  const ctx = { rootsDir, log: silentLogger, unpack: directoryUnpack };
  if (!checked) await btrfsFactory.check(ctx);
  checked = true;
  const driver = await btrfsFactory.create(ctx);
  return { driver, ctx, dispose: () => destroy(driver, rootsDir) };
});
console.log(JSON.stringify(results));

// Everything goes: active snapshots by cleanup(), committed ones by remove() (read-only
// subvolumes cannot be removed with rm).
async function destroy(driver, rootsDir) {
  await driver.cleanup();
  for (const id of await readdir(driver.snapshotsDir)) {
    const meta = JSON.parse(await readFile(join(driver.snapshotsDir, id, 'meta.json'), 'utf8'));
    await driver.remove(meta.name);
  }
  await rm(rootsDir, { recursive: true, force: true });
}
