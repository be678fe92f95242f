// The benchmark suite: every workload of tools/bench/workloads, built by stacker, buildah and
// the native-tools floor in the same run, interleaved (the order of the tools rotates from
// run to run), each run timed from outside as the unprivileged build user. For each workload
// and tool: the median wall time, the peak RSS of the whole process tree (GNU time's %M: the
// largest of every process waited for) and the bytes written to the disk under the work dir
// (/sys/class/block/DEV/stat, with a sync before and after the run). Writes the table, the
// ratios and the targets of issue #10 into docs/performance.md (the rest of that file comes
// from tools/bench/notes.md).
//
// Run it through tools/bench/suite.sh (npm run bench), which sets up the host first:
//   node tools/bench/suite.mjs [--runs N] [--only w1,w2] [--tools t1,t2] [--out FILE|-]

import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

const repo = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: process.env.BENCH_RUNS ?? '3' },
    only: { type: 'string' },
    tools: { type: 'string', default: 'stacker,buildah,floor' },
    out: { type: 'string', default: join(repo, 'docs/performance.md') },
    work: { type: 'string', default: '/var/tmp/stacker-bench' },
    user: { type: 'string', default: process.env.STACKER_TEST_USER ?? 'stacker-test' },
    view: { type: 'string', default: process.env.BENCH_REPO_VIEW ?? repo },
  },
});

/** The workloads of issue #10, in the order of the table. */
const WORKLOADS = [
  { id: 'seed', label: '(a) examples/seed, cold', nonce: false },
  { id: 'cold', label: '(b) Debian minbase + 2 derived, cold', nonce: false },
  { id: 'warm', label: '(c) the same, base built, derived changed', nonce: true },
  { id: 'derive20', label: '(d) 20 images derived from the built Debian base', nonce: true },
  { id: 'noop', label: '(e) no-op rebuild of (b)', nonce: false },
  { id: 'tree500', label: '(f) one step writing a 500 MB tree (11,675 files)', nonce: false },
];
/** Not a tool matrix: tools/bench/btrfs-vs-overlay.sh, stacker on both storage drivers. */
const BTRFS = { id: 'btrfs', label: '(d) on btrfs: per-image cost against the base size' };
const runs = Number(opts.runs);
if (!Number.isInteger(runs) || runs < 1)
  throw new Error(`--runs must be a positive integer, not ${opts.runs}`);
const tools = opts.tools.split(',');
const only = opts.only ? new Set(opts.only.split(',')) : undefined;
const workloads = WORKLOADS.filter((w) => !only || only.has(w.id));
const withBtrfs = (!only || only.has(BTRFS.id)) && tools.includes('stacker');
if (only)
  for (const id of only)
    if (id !== BTRFS.id && !WORKLOADS.some((w) => w.id === id)) throw new Error(`unknown workload ${id}`);

const work = opts.work;
// The previous run's state is set aside, not deleted: creating files on this disk is slow for
// minutes after a big delete (tools/bench/notes.md), which would tax the first runs. Set-aside
// state is deleted after this run's measurements.
if (fs.existsSync(work)) fs.renameSync(work, `${work}.old-${Date.now()}`);
fs.mkdirSync(work, { recursive: true, mode: 0o755 });
execFileSync('chown', [`${opts.user}:`, work]);
const env = {
  PATH: process.env.PATH,
  HOME: execFileSync('getent', ['passwd', opts.user], { encoding: 'utf8' }).split(':')[5],
  LANG: 'C.UTF-8',
  FIXTURES: join(opts.view, 'build/fixtures'),
  REPO: opts.view,
  WORKLOADS: join(opts.view, 'tools/bench/workloads'),
  TRASH: join(work, 'trash'),
};
fs.mkdirSync(env.TRASH);
execFileSync('chown', [`${opts.user}:`, env.TRASH]);
const runner = (tool) => join(opts.view, 'tools/bench/tools', `${tool}.sh`);
const state = (tool, w) => join(work, tool, w);

function asUser(args, extraEnv, stdio = 'pipe') {
  return spawnSync(
    'runuser',
    ['-u', opts.user, '--', 'env', '-i', ...envList({ ...env, ...extraEnv }), ...args],
    {
      stdio,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    },
  );
}
const envList = (e) => Object.entries(e).map(([k, v]) => `${k}=${v}`);

function check(res, what) {
  if (res.status !== 0) {
    process.stderr.write(`${res.stdout ?? ''}${res.stderr ?? ''}`.split('\n').slice(-40).join('\n'));
    throw new Error(`${what} failed (exit ${res.status ?? res.signal})`);
  }
  return res;
}

/** The block device under the work dir and its sectors-written counter. */
const device = (() => {
  const src = execFileSync('findmnt', ['-n', '-o', 'SOURCE', '-T', work], { encoding: 'utf8' }).trim();
  const name = basename(src.replace(/\[.*$/, ''));
  return fs.existsSync(`/sys/class/block/${name}/stat`) ? name : undefined;
})();
function sectorsWritten() {
  if (!device) return 0;
  return Number(fs.readFileSync(`/sys/class/block/${device}/stat`, 'utf8').trim().split(/\s+/)[6]);
}
const sync = () => execFileSync('sync');

/** One timed run: wall seconds, peak RSS in bytes, bytes written to the disk. */
function timed(tool, w, nonce) {
  const dir = state(tool, w.id);
  check(
    asUser(['bash', runner(tool), w.id, 'prepare', dir], { BENCH_NONCE: nonce }),
    `${tool} ${w.id} prepare`,
  );
  sync();
  const rssFile = join(work, 'rss');
  const before = sectorsWritten();
  const t0 = process.hrtime.bigint();
  const res = spawnSync(
    '/usr/bin/time',
    [
      '-f',
      '%M',
      '-o',
      rssFile,
      'runuser',
      '-u',
      opts.user,
      '--',
      'env',
      '-i',
      ...envList({ ...env, BENCH_NONCE: nonce }),
      'bash',
      runner(tool),
      w.id,
      'run',
      dir,
    ],
    { stdio: 'pipe', encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  check(res, `${tool} ${w.id} run`);
  sync();
  const written = (sectorsWritten() - before) * 512;
  const rss = Number(fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop()) * 1024;
  return { wall, rss, written };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// --- set-up of each tool (as root), then the runs ---------------------------------------
for (const tool of tools) {
  const dir = join(work, tool);
  fs.mkdirSync(dir, { recursive: true });
  check(
    spawnSync('bash', [runner(tool), '-', 'setup', dir], {
      env: { ...process.env, ...env },
      encoding: 'utf8',
    }),
    `${tool} setup`,
  );
  execFileSync('chown', ['-R', `${opts.user}:`, dir]);
}

const results = {}; // results[workload][tool] = [{wall, rss, written}]
const started = new Date();
for (const w of workloads) {
  results[w.id] = Object.fromEntries(tools.map((t) => [t, []]));
  for (let r = 0; r < runs; r++) {
    const order = tools.map((_, i) => tools[(i + r) % tools.length]);
    for (const tool of order) {
      const nonce = w.nonce ? `${r}-${Date.now()}` : 'fixed';
      const m = timed(tool, w, nonce);
      results[w.id][tool].push(m);
      process.stderr.write(
        `${w.id} run ${r + 1}/${runs} ${tool}: ${m.wall.toFixed(2)} s, ${(m.rss / 2 ** 20).toFixed(0)} MB RSS, ${(m.written / 1e6).toFixed(0)} MB written\n`,
      );
    }
  }
}
// the state is left for a look; removed at the next run (and by suite.sh on exit)

// btrfs against overlay: 20 images derived from a big and a small base, on each driver
let btrfs;
if (withBtrfs) {
  const jsonFile = join(work, 'btrfs.json');
  const res = spawnSync('bash', [join(repo, 'tools/bench/btrfs-vs-overlay.sh')], {
    env: { ...process.env, STACKER_BENCH_NO_BUILD: '1', BTRFS_BENCH_JSON: jsonFile },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  check(res, 'tools/bench/btrfs-vs-overlay.sh');
  btrfs = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
  btrfs.table = res.stdout
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .join('\n');
  process.stderr.write(`${btrfs.table}\n`);
}

// --- the report -----------------------------------------------------------------------
const summary = (w, t) => {
  const ms = results[w][t];
  return {
    wall: median(ms.map((m) => m.wall)),
    rss: Math.max(...ms.map((m) => m.rss)),
    written: median(ms.map((m) => m.written)),
  };
};
const fmtS = (s) => (s < 10 ? s.toFixed(2) : s.toFixed(1));
const fmtMB = (b) => `${Math.round(b / 1e6)}`;
const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');

const rows = [];
const head = ['workload', ...tools.map((t) => `${t} s`)];
if (tools.includes('stacker')) {
  for (const t of tools) if (t !== 'stacker') head.push(`stacker / ${t}`);
}
head.push(...tools.map((t) => `${t} peak RSS MB`), ...tools.map((t) => `${t} MB written`));
rows.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
for (const w of workloads) {
  const s = Object.fromEntries(tools.map((t) => [t, summary(w.id, t)]));
  const cells = [w.label, ...tools.map((t) => fmtS(s[t].wall))];
  if (tools.includes('stacker'))
    for (const t of tools) if (t !== 'stacker') cells.push(ratio(s.stacker.wall, s[t].wall));
  cells.push(...tools.map((t) => fmtMB(s[t].rss)), ...tools.map((t) => fmtMB(s[t].written)));
  rows.push(`| ${cells.join(' | ')} |`);
}

// the targets of issue #10, checked against this run
const targets = [];
const get = (w, t) => (results[w]?.[t]?.length ? summary(w, t) : undefined);
const target = (what, ok, detail) =>
  targets.push(`| ${what} | ${detail} | ${ok === undefined ? 'not measured' : ok ? 'met' : '**missed**'} |`);
{
  const b = get('cold', 'stacker'),
    bb = get('cold', 'buildah'),
    bf = get('cold', 'floor');
  target(
    '(b) ≤ 0.65× buildah',
    b && bb ? b.wall <= 0.65 * bb.wall : undefined,
    b && bb ? ratio(b.wall, bb.wall) : '',
  );
  target(
    '(b) ≤ 1.15× the floor',
    b && bf ? b.wall <= 1.15 * bf.wall : undefined,
    b && bf ? ratio(b.wall, bf.wall) : '',
  );
  for (const id of ['warm', 'derive20']) {
    const s = get(id, 'stacker'),
      bu = get(id, 'buildah');
    target(
      `(${id === 'warm' ? 'c' : 'd'}) ≤ 0.3× buildah`,
      s && bu ? s.wall <= 0.3 * bu.wall : undefined,
      s && bu ? ratio(s.wall, bu.wall) : '',
    );
  }
  const e = get('noop', 'stacker');
  target('(e) under 0.5 s', e ? e.wall < 0.5 : undefined, e ? `${e.wall.toFixed(2)} s` : '');
  const f = get('tree500', 'stacker');
  target('(f) peak RSS under 300 MB', f ? f.rss < 300 * 2 ** 20 : undefined, f ? `${fmtMB(f.rss)} MB` : '');
  // "independent of the base's size": per image on the big base within 25% of the small one
  const per = (base, k) => btrfs?.rows.find((r) => r.base === base && r.driver === 'btrfs')?.[k];
  const pairs = ['perImage1', 'perImage2'].map((k) => [per('debian-minbase', k), per('busybox', k)]);
  const measured = btrfs && pairs.every(([a, b]) => a > 0 && b > 0);
  target(
    '(d) on btrfs: per-image cost independent of the base size (big base ≤ 1.25× small)',
    measured ? pairs.every(([a, b]) => a <= 1.25 * b) : undefined,
    measured
      ? pairs
          .map(([a, b]) => `${a.toFixed(3)} s vs ${b.toFixed(3)} s (${ratio(a, b)})`)
          .join('; ')
          .concat(` for ${btrfs.entries['debian-minbase']} vs ${btrfs.entries.busybox} entries`)
      : '',
  );
}

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const version = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split('\n')[0] : 'not installed';
};
const report = `# Performance

Generated by \`npm run bench\` (tools/bench/suite.sh → tools/bench/suite.mjs) on ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC;
do not edit the tables by hand, rerun the suite. The hand-written part below the tables is
tools/bench/notes.md.

## Stacker, buildah and the native-tools floor

${runs} interleaved run${runs > 1 ? 's' : ''} of each workload per tool; wall time is the median, peak RSS the largest
of the runs (the whole process tree), bytes written the median of what reached the disk
(${device ? `/sys/class/block/${device}/stat` : 'no block device found: 0'}, synced before and after each run). The workloads and the
runner contract are in tools/bench/workloads/README.md; the peers:

- **stacker**: this checkout's CLI, default overlay storage, as the unprivileged user.
- **buildah**: ${version('buildah', ['--version'])}, rootless \`buildah build --layers\`, runc, overlay
  storage, every image pushed to an OCI layout (tools/bench/tools/buildah.sh).
- **floor**: the same work by native tools in one user namespace: \`tar -x\` of the base,
  overlayfs + chroot for the steps, \`tar -c | pigz\` of each upper dir, \`sha256sum\`
  (tools/bench/tools/floor.sh). No manifests, no config, no cache: a lower bound.

${rows.join('\n')}

${
  btrfs
    ? `### btrfs against overlay

tools/bench/btrfs-vs-overlay.sh, in the same run: ${btrfs.images} images derived from one base (each
\`echo $i > /etc/derived\`), built with \`--jobs 1\` as the unprivileged user, on a btrfs loop mount
(\`loop,user_subvol_rm_allowed\`) and on overlay. Round 1 derives them from the cached base,
round 2 changes all of them; per image is the median gap between two images' \`built
successfully\` lines (start-up excluded).

${btrfs.table}

`
    : ''
}### Targets (issue #10)

| target | this run | |
|---|---|---|
${targets.join('\n')}

Machine: ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, node ${process.version},
disk ${device ?? 'unknown'}; load average at the end ${os
  .loadavg()
  .map((l) => l.toFixed(2))
  .join(' ')}.

Rerun: \`sudo npm run bench\` (or \`sudo bash tools/bench/suite.sh --runs 5 --only cold,noop\`).

`;
const notes = fs.readFileSync(join(repo, 'tools/bench/notes.md'), 'utf8');
for (const old of fs.readdirSync(join(work, '..'))) {
  if (!old.startsWith(`${basename(work)}.old-`)) continue;
  // subuid-owned files: removed from inside the user namespace, then the rest as root
  spawnSync('runuser', [
    '-u',
    opts.user,
    '--',
    'unshare',
    '--user',
    '--map-auto',
    '--map-root-user',
    'rm',
    '-rf',
    join(work, '..', old),
  ]);
  fs.rmSync(join(work, '..', old), { recursive: true, force: true });
}
if (opts.out === '-') process.stdout.write(report);
else {
  fs.writeFileSync(opts.out, `${report}${notes}`);
  process.stderr.write(`wrote ${opts.out}\n`);
}
if (opts.out !== '-')
  process.stdout.write(
    `${rows.join('\n')}\n\n| target | this run | |\n|---|---|---|\n${targets.join('\n')}\n`,
  );
