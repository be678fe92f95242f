// Test fixture (plain JS, run with node after `tsc -p tsconfig.build.json`): re-executes
// itself inside the user namespace, makes a busybox rootfs in DIR and runs SCRIPT there
// under runc; prints the container's lines prefixed with `out: ` and exits with its code.
//   node test-fixture-run.mjs DIR SCRIPT
// SIGTERM aborts the container (it is killed and deleted) and exits with its status.
import { copyFile, mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import {
  inUserNamespace,
  makeBundle,
  needsReexec,
  reexecInUserNamespace,
  runContainer,
} from '../dist/index.js';

if (needsReexec()) process.exit(await reexecInUserNamespace());

const [dir, script] = process.argv.slice(2);
console.log(`inUserNamespace: ${inUserNamespace()}`);
const rootfs = join(dir, 'rootfs');
await mkdir(join(rootfs, 'bin'), { recursive: true });
await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
for (const applet of ['sh', 'id', 'cat', 'ls', 'echo', 'touch', 'mount', 'sleep']) {
  await symlink('busybox', join(rootfs, 'bin', applet));
}
const bundle = join(dir, 'bundle');
await makeBundle({
  bundle,
  rootfs,
  args: ['/bin/sh', '-c', script],
  binds: [{ source: dir, dest: '/mnt/host', readonly: true }],
});
// A SIGTERM forwarded from the outer process aborts the run: runContainer kills it.
const abort = new AbortController();
process.on('SIGTERM', () => {
  console.log('got SIGTERM');
  abort.abort();
});
const code = await runContainer({
  signal: abort.signal,
  stateDir: join(dir, 'state'),
  bundle,
  id: `fixture-${process.pid}`,
  stdout: (line) => console.log(`out: ${line}`),
  stderr: (line) => console.log(`err: ${line}`),
});
process.exit(code);
