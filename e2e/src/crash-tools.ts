// Helpers for the crash, fault and isolation tests: the CLI started in the background (so
// it can be killed), and a layout check done with sha256sum, umoci and skopeo.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, IS_ROOT, TEST_USER, USER_IDS } from './harness.js';
import { blobPath, sha256, tool, umociLs } from './oci-tools.js';

export interface Running {
  child: ChildProcess;
  /** The `node bin/run.js` process (setpriv and env exec into it, so it is the child itself). */
  pid: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the match once the output matches `re`; rejects if the process ends first
   * or `timeoutMs` passes. */
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<RegExpExecArray>;
  /** Everything the process wrote before it died has been read (its pipes closed, or 2 s
   * after it exited if something it left behind still holds them). */
  drained: () => Promise<void>;
}

/** `stacker ARGS` as the test user, in the background, in a process group of its own. */
export function startStacker(args: string[], cwd: string, env: Record<string, string> = {}): Running {
  const envArgs = Object.entries({
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: IS_ROOT ? `/home/${TEST_USER}` : (process.env.HOME ?? '/tmp'),
    LANG: 'C.UTF-8',
    ...env,
  }).map(([k, v]) => `${k}=${v}`);
  const cmd = ['env', '-i', ...envArgs, process.execPath, CLI, ...args];
  const [file, argv] = IS_ROOT
    ? ['setpriv', [`--reuid=${USER_IDS.uid}`, `--regid=${USER_IDS.gid}`, '--init-groups', ...cmd]]
    : [cmd[0], cmd.slice(1)];
  const child = spawn(file, argv as string[], { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const watchers = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d;
    for (const w of watchers) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let hasExited = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      hasExited = true;
      for (const w of watchers) w();
      resolve({ code, signal });
    }),
  );
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const waitFor = (re: RegExp, timeoutMs = 240_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(
        () => done(new Error(`no ${re} in ${timeoutMs} ms:\n${out.slice(-3000)}`)),
        timeoutMs,
      );
      const done = (err?: Error, m?: RegExpExecArray) => {
        clearTimeout(timer);
        watchers.delete(check);
        if (err) reject(err);
        else resolve(m as RegExpExecArray);
      };
      const check = () => {
        const m = re.exec(out);
        if (m) done(undefined, m);
        else if (hasExited) done(new Error(`the process ended before ${re} appeared:\n${out.slice(-3000)}`));
      };
      watchers.add(check);
      check();
    });
  const drained = async () => {
    await exited;
    await Promise.race([closed, sleep(2000)]);
  };
  return { child, pid: child.pid as number, output: () => out, exited, waitFor, drained };
}

/** Mount points (of this, the host's, mount namespace) at or below `dir`. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)));
}

/** SIGKILL the whole process group of a started stacker (a crash: nothing may clean up). */
export function killGroup(r: Running, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(-r.pid, signal);
  } catch {
    /* already gone */
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pids of processes whose command line contains `needle` or whose cwd is below `dir`. */
export function processesOf(needle: string, dir?: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${p}/cwd`);
      } catch {
        /* not ours to read */
      }
      if (cmd.includes(needle) || (dir && (cwd === dir || cwd.startsWith(`${dir}/`)))) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * Pids of processes whose command line contains `needle` and whose mount table names a path
 * below `dir` (a step's container mounts its rootfs and imports from there): the steps of
 * builds in `dir`, not those of other tests running at the same time.
 */
export function stepProcessesIn(dir: string, needle: string): number[] {
  return processesOf(needle).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/mountinfo`, 'utf8').includes(`${dir}/`);
    } catch {
      return false; // gone
    }
  });
}

/** Containers runc still knows of in a state dir (as the test user, who owns it). */
export function runcContainers(stateDir: string): string[] {
  if (!existsSync(stateDir)) return [];
  const argv = ['runc', '--root', stateDir, 'list', '-q'];
  const r = IS_ROOT
    ? spawnSync('runuser', ['-u', TEST_USER, '--', ...argv], { encoding: 'utf8' })
    : spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`runc list failed: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean);
}

export interface LayoutCheck {
  tags: string[];
  blobs: number;
  problems: string[];
  tempFiles: string[];
}

/**
 * Check an OCI layout the way a stranger would: index.json parses, every blob it reaches is
 * present with the size its descriptor says and hashes (sha256sum) to its digest, `umoci
 * ls` lists it and `skopeo inspect` reads every tag.
 */
export function checkLayout(layout: string): LayoutCheck {
  const problems: string[] = [];
  const seen = new Set<string>();
  // no oci-layout yet (killed before the layout was made): nothing to be broken
  if (!existsSync(join(layout, 'oci-layout'))) return { tags: [], blobs: 0, problems, tempFiles: [] };
  let index: {
    manifests?: Array<{
      digest: string;
      size: number;
      mediaType?: string;
      annotations?: Record<string, string>;
    }>;
  };
  try {
    index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  } catch (e) {
    return { tags: [], blobs: 0, problems: [`index.json: ${(e as Error).message}`], tempFiles: [] };
  }
  const visit = (d: { digest: string; size: number; mediaType?: string }, json: boolean) => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    const p = blobPath(layout, d.digest);
    if (!existsSync(p)) {
      problems.push(`missing blob ${d.digest}`);
      return;
    }
    const size = statSync(p).size;
    if (size !== d.size) problems.push(`blob ${d.digest} has ${size} bytes, descriptor says ${d.size}`);
    const hex = sha256(p);
    if (`sha256:${hex}` !== d.digest) problems.push(`blob ${d.digest} hashes to ${hex}`);
    if (!json) return;
    const m = JSON.parse(readFileSync(p, 'utf8'));
    if (m.config) visit(m.config, false);
    for (const l of m.layers ?? []) visit(l, false);
    for (const c of m.manifests ?? []) visit(c, true);
  };
  for (const d of index.manifests ?? []) visit(d, true);
  let tags: string[] = [];
  try {
    tags = umociLs(layout);
    for (const t of tags) tool('skopeo', ['inspect', `oci:${layout}:${t}`]);
  } catch (e) {
    problems.push((e as Error).message);
  }
  const tempFiles = [join(layout, 'blobs'), join(layout, 'blobs', 'sha256'), layout].flatMap((d) =>
    existsSync(d) ? readdirSync(d).filter((n) => n.includes('.tmp-') || n.startsWith('.tmp')) : [],
  );
  return { tags, blobs: seen.size, problems, tempFiles };
}
