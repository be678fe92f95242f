import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { btrfsSupport, checkHost, versionAtLeast } from './check.js';
import { runtimeMissing } from './errors.js';
import { ALL_CAPABILITIES, availableCapabilities, bundleConfig, createInRoot, makeBundle } from './runc.js';
import { runScript, writeRunScript } from './script.js';
import {
  assertCanReexec,
  inUserNamespace,
  needsReexec,
  REEXEC_ENV,
  reexecArgs,
  subidRange,
  USERNS_HELPER_ENV,
  uidMapIsIdentity,
  unshareFlags,
  unshareHasMapAuto,
  usernsHelper,
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
        '/sys bind /sys rbind,nosuid,noexec,nodev,rro',
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

  it('builds the newuidmap fallback command line: an unmapped namespace where sh waits for its maps', () => {
    const r = reexecArgs(['node', '/x/bin/run', 'build'], {
      mode: 'userns',
      helper: 'newuidmap',
      execPath: '/n',
      execArgv: [],
    });
    expect(r.args.slice(0, 6)).toEqual(['--user', '--mount', '--fork', '--', '/bin/sh', '-c']);
    expect(r.args[6]).toContain('read -r go <&3');
    expect(r.args[6]).toContain('exec "$0" "$@"');
    expect(r.args.slice(7)).toEqual(['/n', '/x/bin/run', 'build']);
    expect(unshareFlags('userns', 'newuidmap')).not.toContain('--map-auto');
    // root needs no maps: same command whatever the helper
    expect(
      reexecArgs(['node', 's'], { mode: 'mountns', helper: 'newuidmap', execPath: '/n', execArgv: [] }).args,
    ).toEqual(['--mount', '--fork', '--', '/n', 's']);
  });

  it('probes unshare for --map-auto and lets STACKER_USERNS_HELPER force the helper', async () => {
    const fresh = join(tmp, 'unshare-new');
    const old = join(tmp, 'unshare-old');
    await writeFile(fresh, '\0map-root-user\0map-auto\0map-users\0', { mode: 0o755 });
    await writeFile(old, '\0map-root-user\0map-current-user\0', { mode: 0o755 });
    expect(unshareHasMapAuto(fresh)).toBe(true);
    expect(unshareHasMapAuto(old)).toBe(false);
    expect(usernsHelper({}, fresh)).toBe('unshare');
    expect(usernsHelper({}, old)).toBe('newuidmap');
    expect(usernsHelper({ [USERNS_HELPER_ENV]: 'newuidmap' }, fresh)).toBe('newuidmap');
    expect(usernsHelper({ [USERNS_HELPER_ENV]: 'unshare' }, old)).toBe('unshare');
    expect(() => usernsHelper({ [USERNS_HELPER_ENV]: 'bogus' }, fresh)).toThrow(
      /^STACKER_USERNS_HELPER=bogus is not known; .*run `stacker check` for details\.$/,
    );
  });

  describe('assertCanReexec says what is missing in one sentence pointing at stacker check', () => {
    let files: { subuid: string; subgid: string; empty: string; passwd: string; bin: string };
    beforeAll(async () => {
      const d = join(tmp, 'assert');
      await mkdir(join(d, 'bin'), { recursive: true });
      files = {
        subuid: join(d, 'subuid'),
        subgid: join(d, 'subgid'),
        empty: join(d, 'empty'),
        passwd: join(d, 'passwd'),
        bin: join(d, 'bin'),
      };
      await writeFile(files.subuid, 'alice:100000:65536\n');
      await writeFile(files.subgid, 'alice:100000:65536\n');
      await writeFile(files.empty, '');
      await writeFile(files.passwd, 'alice:x:1500:1500::/home/alice:/bin/sh\n');
      // executable but neither setuid nor with file capabilities
      for (const t of ['newuidmap', 'newgidmap'])
        await writeFile(join(d, 'bin', t), '#!/bin/sh\n', { mode: 0o755 });
    });
    const oneSentence = /^[^\n]*run `stacker check` for details\.$/;
    const real = (t: string) => (t === 'unshare' ? '/usr/bin/unshare' : `/usr/bin/${t}`);
    const message = (f: () => void): string => {
      try {
        f();
      } catch (e) {
        return (e as Error).message;
      }
      throw new Error('no error');
    };

    it('no subuid range', () => {
      const m = message(() =>
        assertCanReexec('userns', {
          user: 'alice',
          subuidFile: files.empty,
          subgidFile: files.subgid,
          passwdFile: files.passwd,
          lookup: real,
        }),
      );
      expect(m).toMatch(/^user alice has no range in \/etc\/subuid; /);
      expect(m).toMatch(oneSentence);
    });

    it('no subgid range', () => {
      const m = message(() =>
        assertCanReexec('userns', {
          user: 'alice',
          subuidFile: files.subuid,
          subgidFile: files.empty,
          passwdFile: files.passwd,
          lookup: real,
        }),
      );
      expect(m).toMatch(/^user alice has no range in \/etc\/subgid; /);
      expect(m).toMatch(oneSentence);
    });

    const ranges = () => ({
      user: 'alice',
      subuidFile: files.subuid,
      subgidFile: files.subgid,
      passwdFile: files.passwd,
    });

    it('newuidmap missing', () => {
      const m = message(() =>
        assertCanReexec('userns', { ...ranges(), lookup: (t) => (t === 'unshare' ? real(t) : undefined) }),
      );
      expect(m).toMatch(/^newuidmap was not found; install the `uidmap` package/);
      expect(m).toMatch(oneSentence);
    });

    it('newuidmap not setuid', () => {
      const m = message(() =>
        assertCanReexec('userns', {
          ...ranges(),
          lookup: (t) => (t === 'unshare' ? real(t) : join(files.bin, t)),
        }),
      );
      expect(m).toContain(`${join(files.bin, 'newuidmap')} is neither setuid root nor has file capabilities`);
      expect(m).toMatch(oneSentence);
    });

    it('unshare missing, also for root', () => {
      const m = message(() => assertCanReexec('mountns', { lookup: () => undefined }));
      expect(m).toMatch(/^unshare was not found/);
      expect(m).toMatch(oneSentence);
    });

    it('passes when everything is there', () => {
      expect(() => assertCanReexec('userns', { ...ranges(), lookup: real })).not.toThrow();
    });
  });

  it('a missing OCI runtime names the knobs that exist: STACKER_RUNTIME and the config key runtime', () => {
    const m = runtimeMissing('crun').message;
    expect(m).toContain('STACKER_RUNTIME');
    expect(m).toContain('`runtime` key of the config file');
    expect(m).not.toContain('--runtime');
    expect(m).toMatch(/^the OCI runtime `crun` was not found; [^\n]*run `stacker check` for details\.$/);
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

describe('btrfs support (optional)', () => {
  it('is reported without failing when btrfs-progs or the kernel module are absent', async () => {
    const none = join(tmp, 'no-such-file');
    const absent = await btrfsSupport(false, {
      lookup: () => undefined,
      procFilesystems: none,
      modulesDir: none,
    });
    expect(absent).toMatchObject({ name: 'btrfs', ok: true, optional: true, present: false });
    expect(absent.detail).toMatch(/^no btrfs, mkfs\.btrfs; kernel \S+ has no btrfs \(optional: /);
    expect(absent.fix).toContain('install btrfs-progs');
    // with --storage-type=btrfs it is required
    expect(
      await btrfsSupport(true, { lookup: () => undefined, procFilesystems: none, modulesDir: none }),
    ).toMatchObject({ ok: false, present: false });
  });

  it('finds the tools and a loadable module', async () => {
    const mods = join(tmp, 'modules');
    await mkdir(mods, { recursive: true });
    await writeFile(
      join(mods, 'modules.dep'),
      'kernel/fs/btrfs/btrfs.ko.xz: kernel/lib/raid6/raid6_pq.ko.xz\n',
    );
    const fs = join(tmp, 'filesystems');
    await writeFile(fs, 'nodev\tproc\n\text4\n');
    const item = await btrfsSupport(false, {
      lookup: (t) => `/x/${t}`,
      procFilesystems: fs,
      modulesDir: mods,
    });
    expect(item).toMatchObject({ ok: true, present: true });
    expect(item.detail).toContain(
      'btrfs-progs (/x/btrfs, /x/mkfs.btrfs); kernel btrfs (module, loaded on first mount)',
    );
  });

  it('on this machine (btrfs-progs is installed for the btrfs e2e tests)', async () => {
    expect(await btrfsSupport()).toMatchObject({ ok: true, present: true });
  });
});

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

  it.runIf(isRoot && haveTestUser)('tries the namespace with newuidmap when told to', () => {
    const script = `import(${JSON.stringify(join(pkg, 'dist/index.js'))}).then(async (m) => console.log(JSON.stringify(await m.checkHost())))`;
    const out = execFileSync(
      'runuser',
      [
        '-u',
        TEST_USER,
        '--',
        'env',
        `${USERNS_HELPER_ENV}=newuidmap`,
        process.execPath,
        '--input-type=module',
        '-e',
        script,
      ],
      { cwd: '/tmp', encoding: 'utf8' },
    );
    const items = JSON.parse(out) as { name: string; ok: boolean; detail: string }[];
    expect(items.filter((i) => !i.ok)).toEqual([]);
    expect(items.find((i) => i.name === 'unshare')?.detail).toContain(
      'id maps written by newuidmap/newgidmap',
    );
    expect(items.find((i) => i.name === 'user namespace')?.detail).toBe(
      'unshare --user --mount --fork works (maps by newuidmap/newgidmap)',
    );
    expect(items.find((i) => i.name === 'overlay (userxattr)')?.ok).toBe(true);
  });
});

interface Run {
  code: number | null;
  lines: string[];
}

/** Run the fixture (as the test user when we are root), optionally SIGTERM-ing it. */
function runFixture(
  script: string,
  opts: { asTestUser: boolean; termAfterLine?: string; env?: Record<string, string> },
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const dir = join(tmp, `run-${Math.random().toString(16).slice(2)}`);
    execFileSync('mkdir', ['-m', '777', dir]);
    const [cmd, args] = opts.asTestUser
      ? ['runuser', ['-u', TEST_USER, '--', process.execPath, fixture, dir, script]]
      : [process.execPath, [fixture, dir, script]];
    const env = { ...process.env, ...opts.env };
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

describe('the newuidmap fallback', () => {
  it.runIf(isRoot && haveTestUser)(
    'runs a command as uid 0 with the caller and its subordinate range mapped',
    () => {
      const script = `import(${JSON.stringify(join(pkg, 'dist/index.js'))}).then(async (m) => {
        const c = await m.spawnUnshared(['sh', '-c', 'cat /proc/self/uid_map; id -u; id -g; grep CapEff /proc/self/status'], { mode: 'userns', helper: 'newuidmap' });
        c.on('exit', (code) => process.exit(code ?? 99));
      })`;
      const out = execFileSync(
        'runuser',
        ['-u', TEST_USER, '--', process.execPath, '--input-type=module', '-e', script],
        { cwd: '/tmp', encoding: 'utf8' },
      );
      const uid = execFileSync('id', ['-u', TEST_USER], { encoding: 'utf8' }).trim();
      const lines = out.trim().split('\n');
      expect(lines.slice(0, 4).map((l) => l.trim().split(/\s+/).join(' '))).toEqual([
        `0 ${uid} 1`,
        '1 100000 65536',
        '0',
        '0',
      ]);
      // it exec'd after the maps were written, so it kept root's capabilities in the namespace
      expect(lines[4]).toMatch(/^CapEff:\s*0*1f*$/);
      expect(lines[4]).not.toMatch(/^CapEff:\s*0+$/);
    },
  );
});

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

  it.runIf(isRoot && haveTestUser)(
    'with STACKER_USERNS_HELPER=newuidmap, maps ids with newuidmap/newgidmap and runc still runs',
    async () => {
      const r = await runFixture('id -u; cat /proc/self/uid_map /proc/self/gid_map; exit 6', {
        asTestUser: true,
        env: { [USERNS_HELPER_ENV]: 'newuidmap' },
      });
      expect(r.lines).toEqual([
        'inUserNamespace: true',
        'out: 0',
        'out:          0       1001          1',
        'out:          1     100000      65536',
        'out:          0       1001          1',
        'out:          1     100000      65536',
      ]);
      expect(r.code).toBe(6);
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

  it.runIf(isRoot && haveTestUser)('forwards SIGTERM the same way with the newuidmap helper', async () => {
    const r = await runFixture('echo started; sleep 60; echo not-reached', {
      asTestUser: true,
      termAfterLine: 'out: started',
      env: { [USERNS_HELPER_ENV]: 'newuidmap' },
    });
    expect(r.lines).toEqual(['inUserNamespace: true', 'out: started', 'got SIGTERM']);
    expect(r.code).toBe(137);
  });
});
