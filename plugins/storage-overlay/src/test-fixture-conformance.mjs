// Test fixture (plain JS; needs the compiled dist of this package and @stacker/plugin-api):
// runs the storage conformance kit against the overlay driver in DIR and prints the results
// as JSON. Run it as root of a user namespace (or as real root in a mount namespace):
//   unshare --user --map-auto --map-root-user --mount --fork node test-fixture-conformance.mjs DIR
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger } from '@stacker/plugin-api';
import { directoryUnpack, runStorageConformanceStandalone } from '@stacker/plugin-api/conformance';
import { overlayFactory } from '../dist/index.js';

const parent = process.argv[2];
let checked = false;
const results = await runStorageConformanceStandalone(async () => {
  const rootsDir = await mkdtemp(join(parent, 'roots-'));
  const ctx = { rootsDir, log: silentLogger, unpack: directoryUnpack };
  if (!checked) await overlayFactory.check(ctx);
  checked = true;
  const driver = await overlayFactory.create(ctx);
  return {
    driver,
    ctx,
    // cleanup() unmounts everything; the rest is plain directories.
    dispose: async () => {
      await driver.cleanup();
      await rm(rootsDir, { recursive: true, force: true });
    },
  };
});
console.log(JSON.stringify(results));
