import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { lstat, mkdir, readlink, writeFile } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import { createInterface } from 'node:readline';
import { badBindDestination, runtimeMissing } from './errors.js';
import { signalNumber } from './userns.js';
import { which } from './which.js';

export interface Bind {
  /** Absolute host path. */
  source: string;
  /** Absolute path inside the container. */
  dest: string;
  readonly?: boolean;
}

export interface BundleOptions {
  /** Directory to write config.json into (created if missing). */
  bundle: string;
  /** Absolute path of the root filesystem; may live outside the bundle. */
  rootfs: string;
  args: string[];
  /** `NAME=value` strings; default a PATH only. */
  env?: string[];
  /** Working directory inside the container (default `/`). */
  cwd?: string;
  /** Ids the process runs as (default 0:0: builds run as root). */
  user?: { uid: number; gid: number; additionalGids?: number[] };
  hostname?: string;
  binds?: Bind[];
  /** Allocate a pseudo-terminal (stdin must be a terminal). */
  terminal?: boolean;
  readonlyRootfs?: boolean;
  /** Bind the host's /etc/resolv.conf read-only (default true, when the host has one). */
  resolvConf?: boolean;
  /** Capabilities of the process (default: all of ours, see availableCapabilities). */
  capabilities?: string[];
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// The process is root of the build's user namespace anyway; give it everything a root
// shell has there, as stacker does, so package managers can chown, mknod (they fail
// cleanly), setcap and so on.
export const ALL_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

// /dev/tty is left to the runtime, which binds it itself among its default devices: runc
// opens each default device path to create it, and opening an already bound /dev/tty
// without a controlling terminal fails with ENXIO.
/**
 * The capabilities this process may hand on: ALL_CAPABILITIES limited to our bounding set
 * (a container host, or root under a restricted parent, may lack some; runc refuses to
 * grant a capability it does not hold).
 */
export function availableCapabilities(status?: string): string[] {
  let text = status;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/status', 'utf8');
    } catch {
      return ALL_CAPABILITIES;
    }
  }
  const m = text.match(/^CapBnd:\s*([0-9a-f]+)$/m);
  if (!m) return ALL_CAPABILITIES;
  const mask = BigInt(`0x${m[1]}`);
  return ALL_CAPABILITIES.filter((_, i) => (mask >> BigInt(i)) & 1n);
}

const HOST_DEVICES = ['null', 'zero', 'full', 'random', 'urandom'];

interface Mount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** The OCI runtime config (config.json) for a build step; pure, for tests and callers. */
export function bundleConfig(opts: BundleOptions): Record<string, unknown> {
  if (!isAbsolute(opts.rootfs)) throw new Error(`rootfs must be an absolute path: ${opts.rootfs}`);
  const mounts: Mount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    ...HOST_DEVICES.filter((d) => existsSync(`/dev/${d}`)).map((d) => ({
      destination: `/dev/${d}`,
      type: 'bind',
      source: `/dev/${d}`,
      options: ['bind', 'nosuid'],
    })),
    // No gid=5: the tty group may not be mapped in the user namespace.
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // A fresh sysfs is refused without a network namespace of our own: bind the host's,
    // read-only with its submounts (cgroup, tracing): `ro` alone covers only the top.
    {
      destination: '/sys',
      type: 'bind',
      source: '/sys',
      options: ['rbind', 'nosuid', 'noexec', 'nodev', 'rro'],
    },
  ];
  if ((opts.resolvConf ?? true) && existsSync('/etc/resolv.conf')) {
    mounts.push({
      destination: '/etc/resolv.conf',
      type: 'bind',
      source: '/etc/resolv.conf',
      options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
  }
  for (const b of opts.binds ?? []) {
    if (!posix.isAbsolute(b.dest) || b.dest.split('/').includes('..')) throw badBindDestination(b.dest);
    mounts.push({
      destination: b.dest,
      type: 'bind',
      source: b.source,
      options: ['rbind', ...(b.readonly ? ['ro'] : [])],
    });
  }
  const caps = opts.capabilities ?? availableCapabilities();
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: opts.terminal ?? false,
      user: {
        uid: opts.user?.uid ?? 0,
        gid: opts.user?.gid ?? 0,
        ...(opts.user?.additionalGids ? { additionalGids: opts.user.additionalGids } : {}),
      },
      args: opts.args,
      env: opts.env ?? [DEFAULT_PATH],
      cwd: opts.cwd ?? '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, ambient: caps },
      noNewPrivileges: false,
    },
    root: { path: opts.rootfs, readonly: opts.readonlyRootfs ?? false },
    hostname: opts.hostname ?? 'stacker',
    mounts,
    linux: {
      // Host network as stacker does; no user namespace (we are already in one) and no
      // cgroups section (an unprivileged user has no cgroup to delegate).
      namespaces: [{ type: 'pid' }, { type: 'mount' }, { type: 'ipc' }, { type: 'uts' }],
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/**
 * Write `<bundle>/config.json` and create the extra binds' mount points in the rootfs
 * (resolved inside it: a symlink in the rootfs never leads out). Returns the config.
 */
export async function makeBundle(opts: BundleOptions): Promise<Record<string, unknown>> {
  const config = bundleConfig(opts);
  await mkdir(opts.bundle, { recursive: true });
  for (const b of opts.binds ?? []) {
    const isDir = statSync(b.source).isDirectory();
    await createInRoot(opts.rootfs, b.dest, isDir);
  }
  await writeFile(join(opts.bundle, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  return config;
}

/**
 * Make `path` (absolute inside `root`) exist as a directory or an empty file, following
 * symlinks as the container would see them: relative to `root`, never above it.
 */
export async function createInRoot(root: string, path: string, dir: boolean): Promise<string> {
  const todo = path.split('/').filter((c) => c && c !== '.');
  const done: string[] = [];
  let hops = 0;
  while (todo.length > 0) {
    const c = todo.shift() as string;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, c);
    const st = await lstat(host).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      if (++hops > 40) throw new Error(`too many symlinks resolving ${path} in ${root}`);
      const target = await readlink(host);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...target.split('/').filter((x) => x && x !== '.'));
      continue;
    }
    if (!st) {
      const last = todo.length === 0;
      if (last && !dir) await writeFile(host, '', { flag: 'wx', mode: 0o644 });
      else await mkdir(host, { mode: 0o755 });
    }
    done.push(c);
  }
  return join(root, ...done);
}

export type OutputHandling = 'inherit' | 'ignore' | ((line: string) => void);

export interface RunContainerOptions {
  /** `runc` (default), another name on PATH, or a path to an OCI runtime binary. */
  runtime?: string;
  /** The runtime's state directory (`--root`). */
  stateDir: string;
  bundle: string;
  /** Container id: unique among running containers in `stateDir`. */
  id: string;
  stdin?: 'inherit' | 'ignore';
  /** Where output goes: inherited, dropped, or handed over line by line. */
  stdout?: OutputHandling;
  stderr?: OutputHandling;
  /** Aborting kills the container; runContainer then resolves with its exit code. */
  signal?: AbortSignal;
}

/**
 * Run the bundle with the OCI runtime and resolve to the exit code of the container's
 * process (128 + signal number when it was killed). The container is always deleted
 * afterwards, whatever happened.
 */
export async function runContainer(opts: RunContainerOptions): Promise<number> {
  const runtime = which(opts.runtime ?? 'runc');
  if (!runtime) throw runtimeMissing(opts.runtime ?? 'runc');
  // imported here: loading execa is costly, and a build that runs nothing never needs it
  const { execa } = await import('execa');
  await mkdir(opts.stateDir, { recursive: true });
  const base = ['--root', opts.stateDir];
  const pipeOf = (h: OutputHandling | undefined) => (typeof h === 'function' ? 'pipe' : (h ?? 'inherit'));
  const child = execa(runtime, [...base, 'run', '--bundle', opts.bundle, opts.id], {
    stdin: opts.stdin ?? 'ignore',
    stdout: pipeOf(opts.stdout),
    stderr: pipeOf(opts.stderr),
    reject: false,
    stripFinalNewline: false,
    buffer: false,
  });
  const readers: Promise<void>[] = [];
  for (const [stream, handler] of [
    [child.stdout, opts.stdout],
    [child.stderr, opts.stderr],
  ] as const) {
    if (stream && typeof handler === 'function') {
      const rl = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
      readers.push(
        (async () => {
          for await (const line of rl) handler(line);
        })(),
      );
    }
  }
  let killing: Promise<unknown> | undefined;
  const kill = () => {
    killing = execa(runtime, [...base, 'kill', opts.id, 'KILL'], { reject: false }).then(() =>
      execa(runtime, [...base, 'delete', '--force', opts.id], { reject: false }),
    );
  };
  if (opts.signal?.aborted) kill();
  opts.signal?.addEventListener('abort', kill, { once: true });
  try {
    const result = await child;
    await Promise.all(readers);
    if (result.exitCode !== undefined) return result.exitCode;
    return 128 + (result.signal ? signalNumber(result.signal) : 0);
  } finally {
    opts.signal?.removeEventListener('abort', kill);
    await killing;
    await execa(runtime, [...base, 'delete', '--force', opts.id], { reject: false });
  }
}

/**
 * Kill and delete every container the runtime knows in `stateDir`. For a caller that holds
 * the state dir's lock: any container there belongs to a build that was killed (SIGKILL, a
 * crash) before it could delete its own, and may still be running a step.
 */
export async function cleanupContainers(opts: { runtime?: string; stateDir: string }): Promise<string[]> {
  const runtime = which(opts.runtime ?? 'runc');
  // runc keeps one directory per container: nothing there, nothing to ask runc about
  if (!runtime || !existsSync(opts.stateDir) || readdirSync(opts.stateDir).length === 0) return [];
  const run = (args: string[]) =>
    new Promise<string | undefined>((resolve) =>
      execFile(runtime, ['--root', opts.stateDir, ...args], (err, stdout) =>
        resolve(err ? undefined : stdout),
      ),
    );
  const ids = ((await run(['list', '-q'])) ?? '').split('\n').filter(Boolean);
  for (const id of ids) {
    await run(['kill', id, 'KILL']);
    await run(['delete', '--force', id]);
  }
  return ids;
}
