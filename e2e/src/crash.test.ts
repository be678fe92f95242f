// Crashes: a build killed with SIGKILL in each named phase — unpacking a base of a few
// thousand files, running, diffing, writing the layer blob, updating index.json — and a
// publish killed while it uploads a layer, never leave a layout that fails to validate, a
// lock or a mount that blocks the next build, or a cache entry whose blobs are gone. Every
// kill is triggered by the line (with --debug) that announces its phase, and counts only if
// the build was still in that phase when it died: killed by the signal, the phase's closing
// line never written. SIGTERM/SIGINT stop a build cleanly, during a run step or while a big
// layer blob is written: exit 143/130, no container, bundle, temp file or process left.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkLayout,
  killGroup,
  mountsUnder,
  processesOf,
  type Running,
  runcContainers,
  sleep,
  startStacker,
  stepProcessesIn,
} from './crash-tools.js';
import { BUSYBOX_TAR, chownTree, IS_ROOT, removeWorkdir, stacker, workdir, write } from './harness.js';
import { blobPath, layersOf } from './oci-tools.js';
import { haveRegistry, startRegistry, stopRegistry, tagDigest } from './registry-server.js';

const STACKER_YAML = `
big:
  from:
    type: tar
    url: ./big.tgz
  run: |
    echo phase-run-start
    set +x
    mkdir -p /many
    i=0; while [ $i -lt 3000 ]; do echo $i > /many/f$i; i=$((i+1)); done
    sleep 1
    head -c 6000000 /stacker/imports/random.bin > /blob.bin
    echo phase-run-end
  imports:
    - ./random.bin
child:
  from:
    type: built
    tag: big
  run: cat /blob.bin /blob.bin > /twice.bin
`;

/** How long index.json's temp is held before its rename (the layout's test hook). */
const INDEX_PAUSE_MS = 3000;

/** A phase of the build: the --debug line that opens it and the one that closes it. */
interface Phase {
  start: RegExp;
  end: RegExp;
  env?: Record<string, string>;
}

const PHASES = {
  // a base layer unpacked into a snapshot (while it is hashed, or from the layout's blob)
  unpack: { start: /^unpacking a layer into snapshot \S+$/m, end: /^unpacked snapshot /m },
  run: { start: /^big: phase-run-start$/m, end: /^big: phase-run-end$/m },
  diff: { start: /^diffing big$/m, end: /^diffed big: /m },
  'blob write': { start: /^writing the layer of big$/m, end: /^wrote layer sha256:[0-9a-f]{64} of big$/m },
  // a temp index.json written and held (test hook in the layout), not yet renamed
  'index update': {
    start: /^test pause: \S+\/index\.json\.tmp-\S+ written, not renamed yet$/m,
    end: /^updated index\.json$/m,
    env: { _STACKER_TEST_INDEX_PAUSE_MS: String(INDEX_PAUSE_MS) },
  },
} satisfies Record<string, Phase>;
type PhaseName = keyof typeof PHASES;

/**
 * The kill points: a phase, and when in it (a fraction of the phase's duration in a
 * calibration build). `fresh` removes roots/ first (and with `all`, .stacker/ and oci/ too)
 * so that the base is unpacked again.
 */
const KILL_POINTS: Array<{ phase: PhaseName; at: number; fresh?: 'roots' | 'all' }> = [
  { phase: 'unpack', at: 0.1, fresh: 'all' },
  { phase: 'unpack', at: 0.5, fresh: 'roots' },
  { phase: 'unpack', at: 0.8, fresh: 'roots' },
  { phase: 'run', at: 0.1 },
  { phase: 'run', at: 0.6 },
  { phase: 'diff', at: 0 },
  { phase: 'diff', at: 0.4 },
  { phase: 'blob write', at: 0.1 },
  { phase: 'blob write', at: 0.5 },
  { phase: 'index update', at: 0 },
  { phase: 'index update', at: 0.5 },
];

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

function dirEntries(path: string): string[] {
  return existsSync(path) ? readdirSync(path) : [];
}

describe.runIf(IS_ROOT)('crashes and signals', () => {
  let dir: string;
  const durations: Partial<Record<PhaseName, number>> = {};
  const stats = {
    coldMs: 0,
    killPoints: 0,
    kills: 0,
    missedPhase: 0,
    inPhase: {} as Record<string, number>,
    validated: 0,
    blobsHashed: 0,
    tempFilesSeen: 0,
    containersOutlivingKill: 0,
  };

  beforeAll(() => {
    dir = workdir('stacker-crash-');
    makeBigBase(dir);
    write(join(dir, 'stacker.yaml'), STACKER_YAML);
    chownTree(dir);
  });

  afterAll(() => {
    console.log(`crash stats: ${JSON.stringify({ ...stats, durations })}`);
    if (dir) removeWorkdir(dir);
  });

  function build(args: string[] = ['build']): string {
    const r = stacker(args, { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).not.toMatch(/couldn't acquire lock/);
    return r.output;
  }

  function clear(what: 'roots' | 'all'): void {
    // (a build's mounts live in its own mount namespace: nothing to unmount here)
    for (const d of what === 'all' ? ['roots', '.stacker', 'oci'] : ['roots'])
      rmSync(join(dir, d), { recursive: true, force: true });
  }

  /** A cold --debug build, timing each phase between its opening and closing lines. */
  async function calibrate(): Promise<void> {
    const t0 = Date.now();
    const run = startStacker(['--debug', 'build'], dir);
    const timings = (Object.keys(PHASES) as PhaseName[])
      .filter((p) => p !== 'index update')
      .map(async (p) => {
        await run.waitFor(PHASES[p].start);
        const t = Date.now();
        await run.waitFor(PHASES[p].end);
        durations[p] = Date.now() - t;
      });
    const ended = await run.exited;
    await run.drained();
    expect(ended.code, run.output()).toBe(0);
    await Promise.all(timings);
    durations['index update'] = INDEX_PAUSE_MS;
    stats.coldMs = Date.now() - t0;
  }

  /** What is left after a kill: a layout that validates, no live lock owner, no mount. */
  async function checkAfterKill(run: Running, what: string): Promise<void> {
    await sleep(200);
    // a step's container is a session of its own; the next build removes any that survive
    stats.containersOutlivingKill += stepProcessesIn(dir, '/stacker/.stacker-run').length;
    const check = checkLayout(join(dir, 'oci'));
    expect(check.problems, `after a kill ${what}:\n${run.output().slice(-2000)}`).toEqual([]);
    stats.validated++;
    stats.blobsHashed += check.blobs;
    stats.tempFilesSeen += check.tempFiles.length;
    // a lock left behind names a dead process: the next build takes it over
    for (const lock of [join(dir, '.stacker/.lock'), join(dir, 'roots/.lock')]) {
      const pid = lockOwner(lock);
      if (pid === undefined || !Number.isFinite(pid)) continue;
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      expect(alive(pid), `lock owner ${pid} of ${lock} outlived the kill ${what}`).toBe(false);
    }
    expect(mountsUnder(dir), `mounts left by the kill ${what}`).toEqual([]);
  }

  /** The next build works, the layout validates with both tags, and every layer the cache
   * handed back has its blobs. */
  function rebuildAndValidate(what: string): void {
    const out = build();
    const check = checkLayout(join(dir, 'oci'));
    expect(check.problems, `rebuild after a kill ${what}`).toEqual([]);
    expect(check.tags).toEqual(['big', 'child']);
    expect(check.tempFiles).toEqual([]);
    // the killed build's step bundles are gone with its containers
    expect(dirEntries(join(dir, '.stacker/bundles'))).toEqual([]);
    for (const m of out.matchAll(/^found cached layer (\S+)$/gm)) {
      for (const layer of layersOf(join(dir, 'oci'), m[1]))
        expect(existsSync(blobPath(join(dir, 'oci'), layer)), `${m[1]} layer ${layer}`).toBe(true);
    }
  }

  /** One SIGKILL `delay` ms after `phase` opened; whether the build was still in it. */
  async function killIn(phase: PhaseName, delay: number, what: string): Promise<boolean> {
    const p: Phase = PHASES[phase];
    const run = startStacker(['--debug', 'build', '--no-cache'], dir, p.env);
    await run.waitFor(p.start);
    if (delay > 0) await sleep(delay);
    killGroup(run);
    const ended = await run.exited;
    await run.drained();
    stats.kills++;
    // it was running when the signal came (an exit of its own has a code, no signal) ...
    expect(ended.signal, `${what}: ${run.output().slice(-2000)}`).toBe('SIGKILL');
    await checkAfterKill(run, what);
    // ... and still in the phase: everything it wrote before dying has been read
    return !p.end.test(run.output());
  }

  it('survives SIGKILL in every phase of a build; the next build always works', async () => {
    await calibrate();
    clear('all');
    for (const [i, point] of KILL_POINTS.entries()) {
      const planned = Math.round((durations[point.phase] ?? 0) * point.at);
      // a phase quicker this time than in the calibration: try again, earlier in it
      let landed = false;
      for (const delay of [...new Set([planned, Math.round(planned / 3), 0])]) {
        if (point.fresh) clear(point.fresh);
        const what = `#${i + 1} in ${point.phase}, ${delay} ms after it began`;
        landed = await killIn(point.phase, delay, what);
        rebuildAndValidate(what);
        if (landed) break;
        stats.missedPhase++;
      }
      expect(landed, `kill point #${i + 1} never landed in ${point.phase}`).toBe(true);
      stats.killPoints++;
      stats.inPhase[point.phase] = (stats.inPhase[point.phase] ?? 0) + 1;
    }
    build(['build', '--no-cache']);
    const check = checkLayout(join(dir, 'oci'));
    expect(check.problems).toEqual([]);
    expect(check.tags).toEqual(['big', 'child']);
    // temp files of killed writers are removed by the next build
    expect(check.tempFiles).toEqual([]);
    // no active snapshot survives the final build (driver.cleanup ran at its start)
    expect(dirEntries(join(dir, 'roots/overlay/active'))).toEqual([]);
    expect(dirEntries(join(dir, '.stacker/bundles'))).toEqual([]);
    expect(runcContainers(join(dir, '.stacker/runc'))).toEqual([]);
    expect(stepProcessesIn(dir, '/stacker/.stacker-run')).toEqual([]);
    expect(stats.killPoints).toBe(KILL_POINTS.length);
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

  it.skipIf(!haveRegistry)(
    'survives SIGKILL while publishing a layer; the next publish completes',
    async () => {
      build();
      const base = workdir('stacker-crash-registry-');
      const registry = await startRegistry(base, 'reg');
      try {
        const args = [
          '--debug',
          'publish',
          '--url',
          `docker://${registry.host}/crash`,
          '--tag',
          'v1',
          '--skip-tls',
        ];
        const run = startStacker(args, dir);
        // the big layer (millions of bytes) has started to travel
        const started = await run.waitFor(/^pushing blob sha256:([0-9a-f]{64}) \(\d{7,} bytes/m);
        killGroup(run);
        const ended = await run.exited;
        await run.drained();
        expect(ended.signal, run.output()).toBe('SIGKILL');
        stats.kills++;
        // still uploading it: the upload's closing PUT ?digest=<that blob> never answered
        const closing = new RegExp(`^PUT \\S+digest=sha256(:|%3A)${started[1]}\\S* -> 20\\d$`, 'm');
        expect(run.output()).not.toMatch(closing);
        stats.inPhase.push = 1;
        expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);
        stats.validated++;
        const again = stacker(args.slice(1), { cwd: dir });
        expect(again.code, again.output).toBe(0);
        for (const tag of ['big', 'child']) {
          const local = tagDigest(join(dir, 'oci'), tag)!;
          expect(again.output).toContain(
            `published ${tag} to docker://${registry.host}/crash/${tag}:v1 (${local})`,
          );
          const back = join(base, `back-${tag}`);
          execFileSync('skopeo', [
            '--insecure-policy',
            'copy',
            '--src-tls-verify=false',
            `docker://${registry.host}/crash/${tag}:v1`,
            `oci:${back}:${tag}`,
          ]);
          expect(tagDigest(back, tag)).toBe(local);
          expect(checkLayout(back).problems).toEqual([]);
        }
      } finally {
        await stopRegistry(registry);
        removeWorkdir(base);
      }
    },
  );

  it.each([
    ['SIGTERM', 'run', 143],
    ['SIGINT', 'run', 130],
    ['SIGTERM', 'blob write', 143],
    ['SIGINT', 'blob write', 130],
  ] as const)(
    '%s during a %s step: exit %i, no container, bundle, temp file or process left',
    async (sig, phase, want) => {
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
    ${phase === 'run' ? 'echo started-sleeping\n    sleep 37' : 'head -c 60000000 /dev/urandom > /big.bin'}
`,
        );
        chownTree(dir);
        const run = startStacker(['--debug', 'build'], dir);
        const before = phase === 'run' ? /^sleeper: started-sleeping$/m : /^writing the layer of sleeper$/m;
        await run.waitFor(before);
        if (phase === 'run') {
          for (let i = 0; i < 50 && stepProcessesIn(dir, 'sleep 37').length === 0; i++) await sleep(100);
          expect(stepProcessesIn(dir, 'sleep 37').length).toBeGreaterThan(0);
        } else {
          await sleep(100); // the blob's temp file is being written
          expect(run.output()).not.toMatch(/^wrote layer \S+ of sleeper$/m);
        }
        const t0 = Date.now();
        process.kill(run.pid, sig); // the parent `node bin/run.js`, as a supervisor would
        const ended = await run.exited;
        const took = Date.now() - t0;
        expect(ended.code, run.output()).toBe(want);
        expect(run.output()).toContain(`received ${sig}, stopping the build`);
        // a run step is killed at once; a layer being written is finished first (seconds)
        expect(took).toBeLessThan(phase === 'run' ? 5000 : 30_000);
        await sleep(200);
        expect(stepProcessesIn(dir, 'sleep 37')).toEqual([]);
        expect(processesOf(`${dir}/`, dir)).toEqual([]);
        expect(runcContainers(join(dir, '.stacker/runc'))).toEqual([]);
        expect(dirEntries(join(dir, '.stacker/bundles'))).toEqual([]);
        expect(dirEntries(join(dir, 'roots/overlay/active'))).toEqual([]);
        expect(mountsUnder(dir)).toEqual([]);
        expect(existsSync(join(dir, '.stacker/.lock'))).toBe(false);
        expect(existsSync(join(dir, 'roots/.lock'))).toBe(false);
        const check = checkLayout(join(dir, 'oci'));
        expect(check.problems).toEqual([]);
        expect(check.tempFiles).toEqual([]);
      } finally {
        removeWorkdir(dir);
      }
    },
  );
});
