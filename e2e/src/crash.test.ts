// Crashes: a build killed with SIGKILL at many points (unpacking a base of a few thousand
// files, running, diffing, writing blobs, updating index.json) never leaves a layout that
// fails to validate, a lock or a mount that blocks the next build, or a cache entry whose
// blobs are gone. SIGTERM stops a build cleanly: exit 143, no container, no process left.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLayout, killGroup, processesOf, runcContainers, sleep, startStacker } from './crash-tools.js';
import { BUSYBOX_TAR, chownTree, IS_ROOT, removeWorkdir, stacker, workdir, write } from './harness.js';
import { layersOf } from './oci-tools.js';

/** The kill offsets, as fractions of a cold build's duration. */
const KILL_POINTS = [0.04, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

const STACKER_YAML = `
big:
  from:
    type: tar
    url: ./big.tgz
  run: |
    mkdir -p /many
    i=0; while [ $i -lt 800 ]; do echo $i > /many/f$i; i=$((i+1)); done
    sleep 1
    head -c 6000000 /stacker/imports/random.bin > /blob.bin
  imports:
    - ./random.bin
child:
  from:
    type: built
    tag: big
  run: cat /blob.bin /blob.bin > /twice.bin
`;

/** busybox plus a few thousand files from /usr/share: a base that takes a while to unpack. */
function makeBigBase(dir: string): void {
  const tree = join(dir, 'big-tree');
  mkdirSync(tree);
  execFileSync('tar', ['xzf', BUSYBOX_TAR, '-C', tree]);
  execFileSync('sh', ['-c', `tar cf - -C / usr/share/man/man3 usr/share/zoneinfo | tar xf - -C '${tree}'`]);
  execFileSync('tar', ['czf', join(dir, 'big.tgz'), '-C', tree, '.']);
  rmSync(tree, { recursive: true, force: true });
  execFileSync('sh', ['-c', `head -c 8000000 /dev/urandom > '${join(dir, 'random.bin')}'`]);
}

function setUp(dir: string): void {
  makeBigBase(dir);
  write(join(dir, 'stacker.yaml'), STACKER_YAML);
  chownTree(dir);
}

function lockOwner(path: string): number | undefined {
  try {
    return Number.parseInt(readFileSync(path, 'utf8'), 10);
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

describe.runIf(IS_ROOT)('crashes and signals', () => {
  let dir: string;
  const stats = {
    coldMs: 0,
    warmMs: 0,
    killPoints: 0,
    validated: 0,
    blobsHashed: 0,
    tempFilesSeen: 0,
    containersOutlivingKill: 0,
  };

  beforeAll(() => {
    dir = workdir('stacker-crash-');
    setUp(dir);
  });

  afterAll(() => {
    console.log(`crash stats: ${JSON.stringify(stats)}`);
    if (dir) removeWorkdir(dir);
  });

  /** Start a build, SIGKILL its whole process group after `ms`, then check what is left. */
  async function killAt(ms: number, args: string[]): Promise<void> {
    const run = startStacker(args, dir);
    await sleep(ms);
    killGroup(run);
    const ended = await run.exited;
    stats.killPoints++;
    await sleep(200);
    // a step's container is a session of its own; the next build removes any that survive
    stats.containersOutlivingKill += processesOf('/stacker/.stacker-run').length;
    const check = checkLayout(join(dir, 'oci'));
    expect(check.problems, `after a kill at ${ms} ms (${ended.signal ?? ended.code})`).toEqual([]);
    stats.validated++;
    stats.blobsHashed += check.blobs;
    stats.tempFilesSeen += check.tempFiles.length;
    // a lock left behind names a dead process: the next build takes it over
    for (const lock of [join(dir, '.stacker/.lock'), join(dir, 'roots/.lock')]) {
      const pid = lockOwner(lock);
      if (pid === undefined || !Number.isFinite(pid)) continue;
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      expect(alive(pid), `lock owner ${pid} of ${lock} outlived the kill`).toBe(false);
    }
  }

  function build(args: string[] = ['build']): number {
    const t0 = Date.now();
    const r = stacker(args, { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).not.toMatch(/couldn't acquire lock/);
    return Date.now() - t0;
  }

  it('survives SIGKILL at every kill point; the next build always works', async () => {
    // calibrate on a cold build, then start again from nothing
    stats.coldMs = build();
    // (the build's mounts lived in its own mount namespace: nothing to unmount here)
    for (const d of ['roots', '.stacker', 'oci']) rmSync(join(dir, d), { recursive: true, force: true });
    // cold: killed while the base of a few thousand files is unpacked, or just after
    for (const point of KILL_POINTS.slice(0, 3)) await killAt(Math.round(stats.coldMs * point), ['build']);
    // warm, on a layout with tags: killed while running, diffing, writing blobs, tagging
    build();
    stats.warmMs = build(['build', '--no-cache']);
    for (const point of KILL_POINTS.slice(3)) {
      await killAt(Math.round(stats.warmMs * point), ['build', '--no-cache']);
      expect(checkLayout(join(dir, 'oci')).tags).toEqual(['big', 'child']);
    }
    build(['build', '--no-cache']);
    const check = checkLayout(join(dir, 'oci'));
    expect(check.problems).toEqual([]);
    expect(check.tags).toEqual(['big', 'child']);
    // temp files of killed writers are removed by the next build
    expect(check.tempFiles).toEqual([]);
    // no active snapshot survives the final build (driver.cleanup ran at its start)
    const active = join(dir, 'roots/overlay/active');
    expect(existsSync(active) ? readdirSync(active) : []).toEqual([]);
    expect(runcContainers(join(dir, '.stacker/runc'))).toEqual([]);
    expect(processesOf('/stacker/.stacker-run')).toEqual([]);
  });

  it('never reuses a cache entry whose blobs were deleted by hand', () => {
    build();
    const top = layersOf(join(dir, 'oci'), 'child').at(-1)!;
    unlinkSync(join(dir, 'oci/blobs', top.replace(':', '/')));
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/found cached layer big/);
    expect(r.output).not.toMatch(/found cached layer child/);
    expect(r.output).toMatch(/filesystem child built successfully/);
    expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);
  });

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)(
    '%s during a run step: exit %i within seconds, no container and no process left',
    async (sig, want) => {
      const dir = workdir('stacker-signal-');
      try {
        copyFileSync(BUSYBOX_TAR, join(dir, 'busybox.tar.gz'));
        write(
          join(dir, 'stacker.yaml'),
          `
sleeper:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: |
    echo started-sleeping
    sleep 37
`,
        );
        chownTree(dir);
        const run = startStacker(['build'], dir);
        for (let i = 0; i < 300 && !run.output().includes('started-sleeping'); i++) await sleep(100);
        expect(run.output()).toContain('started-sleeping');
        for (let i = 0; i < 50 && processesOf('sleep 37').length === 0; i++) await sleep(100);
        expect(processesOf('sleep 37').length).toBeGreaterThan(0);
        const t0 = Date.now();
        process.kill(run.pid, sig); // the parent `node bin/run.js`, as a supervisor would
        const ended = await run.exited;
        const took = Date.now() - t0;
        expect(ended.code, run.output()).toBe(want);
        expect(took).toBeLessThan(5000);
        await sleep(200);
        expect(processesOf('sleep 37')).toEqual([]);
        expect(processesOf(`${dir}/`, dir)).toEqual([]);
        expect(runcContainers(join(dir, '.stacker/runc'))).toEqual([]);
        const active = join(dir, 'roots/overlay/active');
        expect(existsSync(active) ? readdirSync(active) : []).toEqual([]);
        expect(existsSync(join(dir, '.stacker/.lock'))).toBe(false);
        expect(existsSync(join(dir, 'roots/.lock'))).toBe(false);
        expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);
      } finally {
        removeWorkdir(dir);
      }
    },
  );
});
