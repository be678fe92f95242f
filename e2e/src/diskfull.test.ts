// Disk full while writing a blob: the OCI layout lives on a 20 MB ext4 loop mount and a
// stanza writes 40 MB of incompressible data. The build fails with one clear sentence, the
// layout still validates (the earlier tag intact, no temp file left), and a build that
// fits succeeds afterwards.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLayout } from './crash-tools.js';
import { BUSYBOX_TAR, chownTree, IS_ROOT, removeWorkdir, stacker, workdir, write } from './harness.js';
import { stackTraceLines } from './oci-tools.js';

const SMALL = `
small:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: echo small > /small
`;

describe.runIf(IS_ROOT)('disk full under the OCI layout', () => {
  let dir: string;
  let mnt: string;
  let mounted = false;

  beforeAll(() => {
    dir = workdir('stacker-diskfull-');
    mnt = join(dir, 'small-fs');
    mkdirSync(mnt);
    const img = join(dir, 'fs.img');
    execFileSync('truncate', ['-s', '20M', img]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', img]);
    execFileSync('mount', ['-o', 'loop', img, mnt]);
    mounted = true;
    copyFileSync(BUSYBOX_TAR, join(dir, 'busybox.tar.gz'));
    chownTree(dir);
  });

  afterAll(() => {
    if (mounted) spawnSync('umount', ['-l', mnt]);
    if (dir) removeWorkdir(dir);
  });

  it('fails clearly, leaves the layout valid, and the next build that fits works', () => {
    const oci = join(mnt, 'oci');
    write(join(dir, 'stacker.yaml'), SMALL);
    const first = stacker(['build', '--oci-dir', oci], { cwd: dir });
    expect(first.code, first.output).toBe(0);

    write(
      join(dir, 'stacker.yaml'),
      `${SMALL}
huge:
  from:
    type: built
    tag: small
  run: head -c 40000000 /dev/urandom > /huge.bin
`,
    );
    const full = stacker(['build', '--oci-dir', oci], { cwd: dir });
    expect(full.code).toBe(1);
    expect(full.stderr).toMatch(
      /no space left on the file system of the OCI layout \S+ while writing a blob/,
    );
    expect(stackTraceLines(full.output)).toEqual([]);
    const check = checkLayout(oci);
    expect(check.problems).toEqual([]);
    expect(check.tags).toEqual(['small']);
    expect(check.tempFiles).toEqual([]);

    write(
      join(dir, 'stacker.yaml'),
      `${SMALL}
fits:
  from:
    type: built
    tag: small
  run: head -c 1000000 /dev/urandom > /fits.bin
`,
    );
    const after = stacker(['build', '--oci-dir', oci], { cwd: dir });
    expect(after.code, after.output).toBe(0);
    const again = checkLayout(oci);
    expect(again.problems).toEqual([]);
    expect(again.tags).toEqual(['fits', 'small']);
    rmSync(join(dir, 'fs.img'), { force: true });
  });
});
