import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHost, versionAtLeast } from './check.js';
import { ALL_CAPABILITIES, availableCapabilities, bundleConfig, createInRoot, makeBundle } from './runc.js';
import { runScript, writeRunScript } from './script.js';
import {
  inUserNamespace,
  needsReexec,
  REEXEC_ENV,
  reexecArgs,
  subidRange,
  uidMapIsIdentity,
  unshareFlags,
} from './userns.js';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = dirname(here);
const fixture = join(here, 'test-fixture-run.mjs');
const isRoot = process.geteuid?.() === 0;
const TEST_USER = 'stacker-test';
const haveTestUser = readFileSync('/etc/passwd', 'utf8')
  .split('\n')
  .some((l) => l.startsWith(`${TEST_USER}:`));

/** Compile `dir` unless its dist is newer than every source file (nx builds before tests). */
function buildIfStale(dir: string): void {
  const out = join(dir, 'dist', 'index.js');
  const built = existsSync(out) ? statSync(out).mtimeMs : 0;
  const src = join(dir, 'src');
  const stale = readdirSync(src).some(
    (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && statSync(join(src, f)).mtimeMs > built,
  );
  if (stale)
    execFileSync('npx', ['tsc', '-p', join(dir, 'tsconfig.build.json')], { cwd: dir, stdio: 'inherit' });
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'stacker-runtime-test-'));
  await chmod(tmp, 0o777);
  // The fixtures run the compiled package.
  buildIfStale(pkg);
}, 120_000);
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('script', () => {
  it('prefixes #!/bin/sh -xe unless the script has its own interpreter', () => {
    expect(runScript(['echo a', 'echo b'])).toBe('#!/bin/sh -xe\necho a\necho b\n');
    expect(runScript('echo a\n')).toBe('#!/bin/sh -xe\necho a\n');
    expect(runScript(['#!/bin/bash', 'echo a'])).toBe('#!/bin/bash\necho a\n');
    expect(runScript([])).toBe('#!/bin/sh -xe\n');
  });

  it('writes an executable .stacker-run.sh', async () => {
    const p = await writeRunScript(join(tmp, 'imports'), ['true']);
    expect(p).toBe(join(tmp, 'imports', '.stacker-run.sh'));
    expect(await readFile(p, 'utf8')).toBe('#!/bin/sh -xe\ntrue\n');
    expect((await stat(p)).mode & 0o777).toBe(0o755);
  });
});

describe('bundle config', () => {
  const base = { bundle: '/b', rootfs: '/r', args: ['/bin/sh', '-c', 'id'] };

  it('has the mounts, namespaces and process of a build step', () => {
    const c = bundleConfig({ ...base, resolvConf: false }) as any;
    expect(c.ociVersion).toBe('1.0.2');
    expect(c.root).toEqual({ path: '/r', readonly: false });
    expect(c.hostname).toBe('stacker');
    expect(c.process.args).toEqual(['/bin/sh', '-c', 'id']);
    expect(c.process.user).toEqual({ uid: 0, gid: 0 });
    expect(c.process.cwd).toBe('/');
    expect(c.process.terminal).toBe(false);
    expect(c.process.env).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
    expect(c.linux.namespaces).toEqual([
      { type: 'pid' },
      { type: 'mount' },
      { type: 'ipc' },
      { type: 'uts' },
    ]);
    expect(c.linux).not.toHaveProperty('cgroupsPath');
    expect(c.linux).not.toHaveProperty('resources');
    expect(c.linux).not.toHaveProperty('uidMappings');
    expect(c.mounts.map((m: any) => `${m.destination} ${m.type} ${m.source} ${m.options.join(',')}`)).toEqual(
      [
        '/proc proc proc nosuid,noexec,nodev',
        '/dev tmpfs tmpfs nosuid,strictatime,mode=755,size=65536k',
        '/dev/null bind /dev/null bind,nosuid',
        '/dev/zero bind /dev/zero bind,nosuid',
        '/dev/full bind /dev/full bind,nosuid',
        '/dev/random bind /dev/random bind,nosuid',
        '/dev/urandom bind /dev/urandom bind,nosuid',
        '/dev/pts devpts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620',
        '/dev/shm tmpfs shm nosuid,noexec,nodev,mode=1777,size=65536k',
        '/dev/mqueue mqueue mqueue nosuid,noexec,nodev',
        '/sys bind /sys rbind,nosuid,noexec,nodev,ro',
      ],
    );
  });

  it('takes user, cwd, env, hostname, terminal, binds and resolv.conf', () => {
    const c = bundleConfig({
      ...base,
      user: { uid: 1000, gid: 100 },
      cwd: '/work',
      env: ['A=1'],
      hostname: 'h',
      terminal: true,
      resolvConf: true,
      binds: [
        { source: '/src', dest: '/stacker/imports', readonly: true },
        { source: '/x', dest: '/y' },
      ],
    }) as any;
    expect(c.process.user).toEqual({ uid: 1000, gid: 100 });
    expect(c.process.cwd).toBe('/work');
    expect(c.process.env).toEqual(['A=1']);
    expect(c.process.terminal).toBe(true);
    expect(c.hostname).toBe('h');
    const tail = c.mounts
      .slice(-3)
      .map((m: any) => `${m.destination} ${m.type} ${m.source} ${m.options.join(',')}`);
    const resolv = existsSync('/etc/resolv.conf')
      ? ['/etc/resolv.conf bind /etc/resolv.conf bind,ro,nosuid,nodev,noexec']
      : [];
    expect(tail.slice(3 - resolv.length - 2)).toEqual([
      ...resolv,
      '/stacker/imports bind /src rbind,ro',
      '/y bind /x rbind',
    ]);
  });

  it('refuses relative bind destinations and rootfs', () => {
    expect(() => bundleConfig({ ...base, binds: [{ source: '/a', dest: 'rel' }] })).toThrow(
      /must be an absolute path/,
    );
    expect(() => bundleConfig({ ...base, binds: [{ source: '/a', dest: '/x/../../etc' }] })).toThrow(
      /must be an absolute path/,
    );
    expect(() => bundleConfig({ ...base, rootfs: 'r' })).toThrow(/absolute/);
  });

  it('limits capabilities to the bounding set', () => {
    expect(availableCapabilities('CapBnd:\t0000000000000003\n')).toEqual(['CAP_CHOWN', 'CAP_DAC_OVERRIDE']);
    expect(availableCapabilities('CapBnd:\t000001ffffffffff\n')).toEqual(ALL_CAPABILITIES);
    expect(ALL_CAPABILITIES).toHaveLength(41);
  });

  it('writes config.json and creates bind mount points inside the rootfs only', async () => {
    const root = join(tmp, 'bundle-rootfs');
    await mkdir(join(root, 'etc'), { recursive: true });
    await symlink('/', join(root, 'abs-escape'));
    await symlink('../../..', join(root, 'etc', 'rel-escape'));
    const srcDir = join(tmp, 'bind-src');
    await mkdir(srcDir);
    await writeFile(join(tmp, 'bind-file'), 'x');
    const bundle = join(tmp, 'bundle');
    await makeBundle({
      bundle,
      rootfs: root,
      args: ['true'],
      binds: [
        { source: srcDir, dest: '/abs-escape/made-dir' },
        { source: join(tmp, 'bind-file'), dest: '/etc/rel-escape/made-file' },
      ],
    });
    const written = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
    expect(written.root.path).toBe(root);
    expect((await stat(join(root, 'made-dir'))).isDirectory()).toBe(true);
    expect((await stat(join(root, 'made-file'))).isFile()).toBe(true);
    expect(existsSync('/made-dir')).toBe(false);
    expect(await createInRoot(root, '/a/b/../c', true)).toBe(join(root, 'a', 'c'));
  });
});

describe('user namespace helpers', () => {
  it('reads subordinate ranges by name or uid', async () => {
    const f = join(tmp, 'subuid');
    const passwd = join(tmp, 'passwd');
    await writeFile(f, '# comment\nalice:100000:65536\n2000:300000:1000\nbad:x:y\n');
    await writeFile(passwd, 'alice:x:1500:1500::/home/alice:/bin/sh\nbob:x:2000:2000::/home/bob:/bin/sh\n');
    expect(subidRange('alice', 'uid', { file: f, passwdFile: passwd })).toEqual({
      start: 100000,
      count: 65536,
    });
    expect(subidRange(1500, 'uid', { file: f, passwdFile: passwd })).toEqual({ start: 100000, count: 65536 });
    expect(subidRange('bob', 'uid', { file: f, passwdFile: passwd })).toEqual({ start: 300000, count: 1000 });
    expect(subidRange('carol', 'uid', { file: f, passwdFile: passwd })).toBeUndefined();
    expect(subidRange('bad', 'uid', { file: f, passwdFile: passwd })).toBeUndefined();
    expect(subidRange('alice', 'uid', { file: join(tmp, 'missing') })).toBeUndefined();
  });

  it('reads this machine’s ranges for the test user', () => {
    if (!haveTestUser) return;
    expect(subidRange(TEST_USER, 'uid')).toEqual({ start: 100000, count: 65536 });
    expect(subidRange(TEST_USER, 'gid')).toEqual({ start: 100000, count: 65536 });
  });

  it('tells the identity map from a user namespace map', () => {
    expect(uidMapIsIdentity('         0          0 4294967295\n')).toBe(true);
    expect(uidMapIsIdentity('         0       1001          1\n         1     100000      65535\n')).toBe(
      false,
    );
    expect(inUserNamespace({ [REEXEC_ENV]: 'userns' })).toBe(true);
    expect(needsReexec({})).toBe(true);
    expect(needsReexec({ [REEXEC_ENV]: 'mountns' })).toBe(false);
    expect(needsReexec({ [REEXEC_ENV]: 'userns' })).toBe(false);
  });

  it('builds the unshare command line', () => {
    const user = reexecArgs(['/usr/bin/node', '/x/bin/run', 'build', '-f', 'a b'], {
      mode: 'userns',
      execPath: '/n',
      execArgv: ['--enable-source-maps'],
    });
    expect(user.command).toMatch(/(^|\/)unshare$/);
    expect(user.args).toEqual([
      '--user',
      '--map-auto',
      '--map-root-user',
      '--mount',
      '--fork',
      '--',
      '/n',
      '--enable-source-maps',
      '/x/bin/run',
      'build',
      '-f',
      'a b',
    ]);
    const root = reexecArgs(['node', 's'], { mode: 'mountns', execPath: '/n', execArgv: [] });
    expect(root.args).toEqual(['--mount', '--fork', '--', '/n', 's']);
    expect(unshareFlags('mountns')).toEqual(['--mount', '--fork']);
  });

  it('compares versions', () => {
    expect(versionAtLeast('2.38.1', [2, 38])).toBe(true);
    expect(versionAtLeast('2.37.4', [2, 38])).toBe(false);
    expect(versionAtLeast('6.18.44-fc-v782', [5, 11])).toBe(true);
    expect(versionAtLeast('5.10.0', [5, 11])).toBe(false);
    expect(versionAtLeast('', [1])).toBe(false);
  });
});

const NAMES = ['subuid range', 'subgid range', 'newuidmap', 'newgidmap', 'unshare', 'runc'];

describe('checkHost on this machine', () => {
  it('finds everything in place for the current user', async () => {
    const items = await checkHost();
    const nsName = isRoot ? 'mount namespace' : 'user namespace';
    expect(items.map((i) => i.name)).toEqual([...NAMES, nsName, 'whiteouts', 'overlay (userxattr)']);
    expect(items.filter((i) => !i.ok)).toEqual([]);
    expect(items.find((i) => i.name === 'runc')?.detail).toMatch(/runc version \d/);
  });

  it.runIf(isRoot && haveTestUser)('finds everything in place for the unprivileged test user', () => {
    const script = `import(${JSON.stringify(join(pkg, 'dist/index.js'))}).then(async (m) => console.log(JSON.stringify(await m.checkHost())))`;
    const out = execFileSync(
      'runuser',
      ['-u', TEST_USER, '--', process.execPath, '--input-type=module', '-e', script],
      { cwd: '/tmp', encoding: 'utf8' },
    );
    const items = JSON.parse(out) as { name: string; ok: boolean; detail: string }[];
    expect(items.map((i) => i.name)).toEqual([
      ...NAMES,
      'user namespace',
      'whiteouts',
      'overlay (userxattr)',
    ]);
    expect(items.filter((i) => !i.ok)).toEqual([]);
    expect(items[0].detail).toBe(`${TEST_USER}:100000:65536 in /etc/subuid`);
  });
});

interface Run {
  code: number | null;
  lines: string[];
}

/** Run the fixture (as the test user when we are root), optionally SIGTERM-ing it. */
function runFixture(script: string, opts: { asTestUser: boolean; termAfterLine?: string }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const dir = join(tmp, `run-${Math.random().toString(16).slice(2)}`);
    execFileSync('mkdir', ['-m', '777', dir]);
    const [cmd, args] = opts.asTestUser
      ? ['runuser', ['-u', TEST_USER, '--', process.execPath, fixture, dir, script]]
      : [process.execPath, [fixture, dir, script]];
    const env = { ...process.env };
    delete env[REEXEC_ENV];
    const child = spawn(cmd as string, args as string[], {
      cwd: '/tmp',
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines: string[] = [];
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i = buf.indexOf('\n');
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if (opts.termAfterLine && line === opts.termAfterLine) {
          // runuser -> node (outer): signal the outer node as a user's `kill` would.
          const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
          const outer = opts.asTestUser ? Number(kids.split(/\s+/)[0]) : (child.pid as number);
          process.kill(outer, 'SIGTERM');
        }
        i = buf.indexOf('\n');
      }
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, lines }));
  });
}

describe('runc in a busybox rootfs', () => {
  it.runIf(isRoot && haveTestUser)(
    'runs as uid 0 of the user namespace, unprivileged, and passes the exit code on',
    async () => {
      const r = await runFixture('id; cat /proc/self/uid_map; ls /mnt/host; exit 7', { asTestUser: true });
      expect(r.lines).toEqual([
        'inUserNamespace: true',
        'out: uid=0 gid=0',
        'out:          0       1001          1',
        'out:          1     100000      65535',
        'out: bundle',
        'out: rootfs',
        'out: state',
      ]);
      expect(r.code).toBe(7);
    },
  );

  it.runIf(!isRoot)('runs as uid 0 of the user namespace as the current user', async () => {
    const r = await runFixture('id; exit 5', { asTestUser: false });
    expect(r.lines.slice(0, 2)).toEqual(['inUserNamespace: true', 'out: uid=0 gid=0']);
    expect(r.code).toBe(5);
  });

  it.runIf(isRoot)('runs as real root with only a private mount namespace', async () => {
    const r = await runFixture('id; cat /proc/self/uid_map; exit 3', { asTestUser: false });
    expect(r.lines).toEqual([
      'inUserNamespace: false',
      'out: uid=0 gid=0',
      'out:          0          0 4294967295',
    ]);
    expect(r.code).toBe(3);
  });

  it.runIf(isRoot && haveTestUser)(
    'forwards SIGTERM into the namespace, where aborting kills the container',
    async () => {
      const r = await runFixture('echo started; sleep 60; echo not-reached', {
        asTestUser: true,
        termAfterLine: 'out: started',
      });
      expect(r.lines).toEqual(['inUserNamespace: true', 'out: started', 'got SIGTERM']);
      expect(r.code).toBe(137);
    },
  );
});
