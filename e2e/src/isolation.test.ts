// Isolation: a `run` step sees and changes only its rootfs, binds and imports. Writes to
// /tmp stay in the image, the host's home is not there, /stacker/imports is read-only, the
// host environment is not passed on beyond the passthrough list, host processes are not in
// its /proc, /sys is read-only, and an import `dest` or a stacker:// path never leads out of
// the rootfs, however many `..` or symlinks it uses.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLayout, processesOf } from './crash-tools.js';
import {
  BUSYBOX_TAR,
  chownTree,
  IS_ROOT,
  removeWorkdir,
  stacker,
  USER_IDS,
  workdir,
  write,
} from './harness.js';
import { unpack } from './oci-tools.js';

const MARK = randomBytes(4).toString('hex');
const HOST_TMP = `/tmp/stacker-iso-${MARK}`;
const HOST_DIR = `/tmp/stacker-iso-dir-${MARK}`;
const HOME = IS_ROOT ? '/home/stacker-test' : (process.env.HOME ?? '/tmp');
const HOME_SECRET = join(HOME, `.stacker-iso-secret-${MARK}`);
/** The argv[0] of a host process (the test user's own) that a run step must not see. */
const HOST_PROC = `stacker-iso-proc-${MARK}`;
/** A pattern for it that does not match itself (grep's own command line holds the pattern). */
const HOST_PROC_RE = `stacker-iso-proc-[${MARK[0]}]${MARK.slice(1)}`;

describe('isolation of run steps and imports', () => {
  let dir: string;
  let out: string;
  let code: number;
  let hostProc: ChildProcess;

  beforeAll(() => {
    // a host process of the same user, with a command line no one else has
    hostProc = spawn('setpriv', [
      `--reuid=${USER_IDS.uid}`,
      `--regid=${USER_IDS.gid}`,
      '--clear-groups',
      'sh',
      '-c',
      'sleep 600; :',
      HOST_PROC,
    ]);
    dir = workdir('stacker-iso-');
    copyFileSync(BUSYBOX_TAR, join(dir, 'busybox.tar.gz'));
    write(join(dir, 'input.txt'), 'imported\n');
    for (const n of ['a', 'b', 'c']) write(join(dir, `${n}.txt`), `${n}\n`);
    // a host directory the test user may write to: an escape would show up in it
    mkdirSync(HOST_DIR, { recursive: true });
    writeFileSync(join(HOST_DIR, 'hostfile'), 'host secret\n');
    writeFileSync(HOME_SECRET, 'home secret\n');
    chownTree(HOST_DIR);
    write(
      join(dir, 'stacker.yaml'),
      `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: |
    mkdir -p /tmp
    ln -s ${HOST_DIR} /hostlink
    ln -s ../../../../../../..${HOST_DIR} /rellink
probe:
  from:
    type: built
    tag: base
  imports:
    - ./input.txt
    - path: ./a.txt
      dest: /../../../..${HOST_DIR}/via-dotdot
    - path: ./b.txt
      dest: /hostlink/via-abs-symlink
    - path: ./c.txt
      dest: /rellink/via-rel-symlink
  run: |
    echo x > ${HOST_TMP}
    echo "home: $(ls -a ${HOME} 2>&1 | tr '\\n' ' ')"
    if [ -e ${HOME_SECRET} ]; then echo HOME-VISIBLE; else echo HOME-HIDDEN; fi
    if touch /stacker/imports/new 2>/dev/null; then echo IMPORTS-WRITABLE; else echo IMPORTS-RO; fi
    if echo more >> /stacker/imports/input.txt 2>/dev/null; then echo IMPORT-CHANGED; else echo IMPORT-KEPT; fi
    env | sed 's/^/ENV /'
    ls ${HOST_DIR} | sed 's/^/INSIDE-HOSTDIR /'
    sh -c 'sleep 30; :' ${HOST_PROC} &
    sleep 0.2
    echo "PROC-SEEN $(for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '${HOST_PROC_RE}')"
    kill $!
    awk '$2 == "/sys" || $2 ~ "^/sys/" { print "SYSMOUNT " $2 " " $4 }' /proc/mounts
    if touch /sys/stacker-iso 2>/dev/null || mkdir /sys/fs/cgroup/stacker-iso 2>/dev/null; then echo SYS-WRITABLE; else echo SYS-KEPT; fi
`,
    );
    const r = stacker(['build'], {
      cwd: dir,
      env: {
        FOO_SECRET: `hunter2-${MARK}`,
        HOME_SECRET: `home-secret-${MARK}`,
        HTTP_PROXY: 'http://proxy.invalid:3128',
        TERM: 'dumb',
      },
    });
    out = r.output;
    code = r.code;
  });

  afterAll(() => {
    hostProc?.kill('SIGKILL');
    rmSync(HOST_TMP, { force: true });
    rmSync(HOST_DIR, { recursive: true, force: true });
    rmSync(HOME_SECRET, { force: true });
    if (dir) removeWorkdir(dir);
  });

  it('builds', () => {
    expect(code, out).toBe(0);
  });

  it('a write to /tmp stays in the image', () => {
    expect(existsSync(HOST_TMP)).toBe(false);
    const rootfs = unpack(dir, 'oci', 'probe', join(dir, 'unpacked'));
    expect(readFileSync(join(rootfs, HOST_TMP.slice(1)), 'utf8')).toBe('x\n');
  });

  it("the host's home is not visible", () => {
    expect(out).toMatch(/^probe: HOME-HIDDEN$/m);
    expect(out).not.toMatch(/^probe: HOME-VISIBLE$/m);
    const listing = out.split('\n').find((l) => l.startsWith('probe: home: '));
    expect(listing).toBeDefined();
    expect(listing).not.toContain(`.stacker-iso-secret-${MARK}`);
  });

  it('/stacker/imports is read-only and the host copy is untouched', () => {
    expect(out).toContain('IMPORTS-RO');
    expect(out).toContain('IMPORT-KEPT');
    expect(readFileSync(join(dir, 'input.txt'), 'utf8')).toBe('imported\n');
  });

  it('only the passthrough list of the host environment gets in', () => {
    const env = out
      .split('\n')
      .map((l) => /^probe: ENV (\w+)=(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => m[1]);
    expect(env).toContain('HTTP_PROXY');
    expect(env).toContain('STACKER_LAYER_NAME');
    expect(env).not.toContain('FOO_SECRET');
    expect(env).not.toContain('HOME_SECRET');
    expect(out).not.toContain(`hunter2-${MARK}`);
    expect(out).not.toContain(`home-secret-${MARK}`);
  });

  it("host processes, even the same user's, are not in the run step's /proc", () => {
    // the host process was alive all along, and the step's /proc is a live one
    expect(processesOf(HOST_PROC).length).toBeGreaterThan(0);
    // the step started one process with that command line itself: it sees that one only
    expect(out).toMatch(/^probe: PROC-SEEN 1$/m);
  });

  it('/sys is read-only inside, submounts included', () => {
    const mounts = out
      .split('\n')
      .map((l) => /^probe: SYSMOUNT (\S+) (\S+)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null);
    expect(mounts.map((m) => m[1])).toContain('/sys');
    for (const [, where, opts] of mounts) expect(opts.split(',')[0], where).toBe('ro');
    expect(out).toMatch(/^probe: SYS-KEPT$/m);
  });

  it('import dests with ".." or through symlinks to host paths land inside the rootfs', () => {
    // the host directory has only what the test put there
    expect(readdirSync(HOST_DIR)).toEqual(['hostfile']);
    // the run step saw the rootfs's own directory of that name, with the three imports
    const inside = out
      .split('\n')
      .map((l) => /^probe: INSIDE-HOSTDIR (\S+)$/.exec(l)?.[1])
      .filter(Boolean)
      .sort();
    expect(inside).toEqual(['via-abs-symlink', 'via-dotdot', 'via-rel-symlink']);
    expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);
  });

  it('a stacker:// import through a symlink to a host path does not read the host', () => {
    const d = workdir('stacker-iso-import-');
    try {
      copyFileSync(BUSYBOX_TAR, join(d, 'busybox.tar.gz'));
      write(
        join(d, 'stacker.yaml'),
        `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: ln -s ${HOST_DIR} /hostlink
thief:
  from:
    type: built
    tag: base
  imports:
    - stacker://base/hostlink/hostfile
  run: cat /stacker/imports/hostfile
`,
      );
      chownTree(d);
      const r = stacker(['build'], { cwd: d });
      expect(r.code).toBe(1);
      expect(r.output).toContain('/hostlink/hostfile does not exist in base');
      expect(r.output).not.toContain('host secret');
      write(
        join(d, 'stacker.yaml'),
        readFileSync(join(d, 'stacker.yaml'), 'utf8').replace(
          'stacker://base/hostlink/hostfile',
          `stacker://base/../../../..${HOST_DIR}/hostfile`,
        ),
      );
      const r2 = stacker(['build'], { cwd: d });
      expect(r2.code).toBe(1);
      expect(r2.output).toMatch(/does not exist in base/);
      expect(r2.output).not.toContain('host secret');
    } finally {
      removeWorkdir(d);
    }
  });
});

void USER_IDS;
