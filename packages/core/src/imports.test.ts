import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUserError, type Logger, silentLogger } from '@stacker/plugin-api';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  destinationOf,
  HttpDownloads,
  type ImportContext,
  type ImportSpec,
  placeImport,
  type StagedImport,
  stageImports,
} from './imports.js';

const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

const staged = (dest: string, name = 'file'): StagedImport => ({
  spec: { path: `/src/${name}`, dest },
  staged: `/stage/${name}`,
  name,
  contents: false,
});

describe('import dest never names a host path', () => {
  it.each([
    ['/etc/app.conf', '/etc/app.conf'],
    ['/opt/', '/opt/file'],
    ['/../../../etc/x', '/etc/x'],
    ['/a/../../b/', '/b/file'],
    ['/a/./b/../c', '/a/c'],
    ['/../', '/file'],
  ])('%j lands at %j inside the rootfs', (dest, want) => {
    expect(destinationOf(staged(dest))).toBe(want);
  });

  it.each(['/..', '/a/..', '/../..', '/.'])('%j names the root: refused by name', (dest) => {
    let err: unknown;
    try {
      destinationOf(staged(dest));
    } catch (e) {
      err = e;
    }
    expect(isUserError(err)).toBe(true);
    expect((err as Error).message).toMatch(/names the root of the image/);
  });
});

describe('stacker:// import paths', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'core-imports-'));
  });
  afterEach(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const ctx = (asked: string[]) => ({
    stanza: 'child',
    resolvePath: (p: string) => join(dir, p),
    stageDir: join(dir, 'stage', 'child'),
    downloadDir: join(dir, 'downloads'),
    requireHash: false,
    log: silentLogger,
    copyFromLayer: async (_layer: string, path: string, dest: string) => {
      asked.push(path);
      await fsp.writeFile(dest, 'copied');
    },
  });

  it('normalises ".." within the layer and stages under the stage dir', async () => {
    const asked: string[] = [];
    const out = await stageImports([{ path: 'stacker://base/../../etc/../usr/bin/tool' }], ctx(asked));
    expect(asked).toEqual(['/usr/bin/tool']);
    expect(out[0].staged).toBe(join(dir, 'stage', 'child', 'tool'));
    expect(await fsp.readdir(dir)).toEqual(['stage']);
  });

  it.each(['stacker://base/..', 'stacker://base/', 'stacker://base/a/../..'])(
    'refuses %j, which names the layer root',
    async (path) => {
      const asked: string[] = [];
      await expect(stageImports([{ path }], ctx(asked))).rejects.toSatisfy(
        (e: unknown) => isUserError(e) && /names the root of base/.test((e as Error).message),
      );
      expect(asked).toEqual([]);
    },
  );
});

describe('import dest of a directory written with a trailing /', () => {
  const contents = (dest: string): StagedImport => ({
    spec: { path: '/src/dir/', dest },
    staged: '/stage/dir',
    name: 'dir',
    contents: true,
  });
  it.each([
    ['/opt/x', '/opt/x'],
    ['/opt/x/', '/opt/x'],
    ['/', '/'],
    ['/../etc/', '/etc'],
  ])('%j: the entries go into %j', (dest, want) => {
    expect(destinationOf(contents(dest))).toBe(want);
  });
});

describe('staging', () => {
  let dir: string;
  let src: string;
  beforeEach(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'core-stage-'));
    src = join(dir, 'src');
    await fsp.mkdir(join(src, 'tree', 'sub'), { recursive: true });
    await fsp.writeFile(join(src, 'file.txt'), 'file\n');
    await fsp.chmod(join(src, 'file.txt'), 0o644);
    await fsp.writeFile(join(src, 'tree', 'a'), 'a\n');
    await fsp.writeFile(join(src, 'tree', 'sub', 'b'), 'b\n');
    await fsp.chmod(join(src, 'tree', 'sub'), 0o750);
    await fsp.symlink('a', join(src, 'tree', 'link'));
  });
  afterEach(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const ctx = (layerRoot?: string): ImportContext => ({
    stanza: 'web',
    resolvePath: (p: string) => join(src, p),
    stageDir: join(dir, 'imports', 'web'),
    copyDir: join(dir, 'imports-copy', 'web'),
    downloadDir: join(dir, 'downloads'),
    requireHash: false,
    log: silentLogger,
    copyFromLayer: async (_layer: string, path: string, dest: string) => {
      await fsp.cp(join(layerRoot ?? '/nonexistent', path), dest, {
        recursive: true,
        verbatimSymlinks: true,
      });
    },
  });
  const stage = (specs: ImportSpec[], c = ctx()) => stageImports(specs, c);

  it('applies mode, uid and gid also to an import without dest (as under /stacker/imports)', async () => {
    const [imp] = await stage([{ path: 'file.txt', mode: 0o600, uid: 1000, gid: 1001 }]);
    expect(imp.staged).toBe(join(dir, 'imports', 'web', 'file.txt'));
    const st = await fsp.stat(imp.staged);
    expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o600, 1000, 1001]);
  });

  it('gives a directory import’s mode to its files, its ids to everything, never its mode to directories', async () => {
    const [imp] = await stage([{ path: 'tree', mode: 0o600, uid: 1000 }]);
    const top = await fsp.stat(imp.staged);
    const sub = await fsp.stat(join(imp.staged, 'sub'));
    const a = await fsp.stat(join(imp.staged, 'a'));
    const b = await fsp.stat(join(imp.staged, 'sub', 'b'));
    const link = await fsp.lstat(join(imp.staged, 'link'));
    expect(sub.mode & 0o7777).toBe(0o750);
    expect(top.isDirectory() && (top.mode & 0o100) !== 0).toBe(true);
    expect([a.mode & 0o7777, b.mode & 0o7777]).toEqual([0o600, 0o600]);
    expect([top.uid, sub.uid, a.uid, b.uid, link.uid]).toEqual([1000, 1000, 1000, 1000, 1000]);
    expect(link.isSymbolicLink()).toBe(true);
  });

  it('stages an import with a dest outside /stacker/imports, under the name of its dest', async () => {
    const out = await stage([
      { path: 'file.txt', dest: '/etc/app.conf' },
      { path: 'file.txt', dest: '/opt/' },
      { path: 'file.txt' },
    ]);
    expect(await fsp.readdir(join(dir, 'imports', 'web'))).toEqual(['file.txt']);
    expect(out[0].staged).toBe(join(dir, 'imports-copy', 'web', '0', 'app.conf'));
    expect(destinationOf(out[0])).toBe('/etc/app.conf');
    expect(out[1].staged).toBe(join(dir, 'imports-copy', 'web', '1', 'file.txt'));
    expect(destinationOf(out[1])).toBe('/opt/file.txt');
    expect(destinationOf(out[2])).toBeUndefined();
  });

  it('a rebuild drops what the previous one staged', async () => {
    await stage([{ path: 'file.txt', dest: '/x' }, { path: 'tree' }]);
    await stage([{ path: 'file.txt' }]);
    expect(await fsp.readdir(join(dir, 'imports', 'web'))).toEqual(['file.txt']);
    await expect(fsp.access(join(dir, 'imports-copy', 'web'))).rejects.toThrow();
  });

  it('`path: dir/` without dest puts the entries of dir directly under /stacker/imports', async () => {
    const [imp] = await stage([{ path: 'tree/', uid: 1000 }]);
    expect(imp.contents).toBe(true);
    expect((await fsp.readdir(join(dir, 'imports', 'web'))).sort()).toEqual(['a', 'link', 'sub']);
    expect((await fsp.stat(join(dir, 'imports', 'web', 'sub', 'b'))).uid).toBe(1000);
    // the staging dir itself is not the import's: its owner is untouched
    expect((await fsp.stat(join(dir, 'imports', 'web'))).uid).toBe(0);
  });

  it('`path: dir/` entries clash by name with other imports', async () => {
    await fsp.writeFile(join(src, 'a'), 'other a\n');
    const e = await rejection(stage([{ path: 'a' }, { path: 'tree/' }]));
    expect(isUserError(e) && e.message).toMatch(/web imports two things named a/);
  });

  it('`path: dir/` with a dest imports the entries into dest', async () => {
    const [imp] = await stage([{ path: 'tree/', dest: '/opt/app' }]);
    expect(imp.contents).toBe(true);
    expect(destinationOf(imp)).toBe('/opt/app');
    expect((await fsp.readdir(imp.staged)).sort()).toEqual(['a', 'link', 'sub']);
    expect(await fsp.readdir(join(dir, 'imports', 'web'))).toEqual([]);
  });

  it('a directory without / and a dest keeps being the directory itself', async () => {
    const [imp] = await stage([{ path: 'tree', dest: '/opt/' }]);
    expect(imp.contents).toBe(false);
    expect(destinationOf(imp)).toBe('/opt/tree');
  });

  describe('a stacker:// import whose last component is a symlink', () => {
    it('is refused when it has a hash: the link is not followed to a host file', async () => {
      const layer = join(dir, 'layer');
      await fsp.mkdir(join(layer, 'bin'), { recursive: true });
      // on the host this link points at a real file whose hash is given: it must not count
      const hostFile = join(src, 'file.txt');
      await fsp.symlink(hostFile, join(layer, 'bin', 'tool'));
      const e = await rejection(
        stage([{ path: 'stacker://build/bin/tool', hash: sha256('file\n') }], ctx(layer)),
      );
      expect(isUserError(e)).toBe(true);
      expect(e.message).toContain(`import stacker://build/bin/tool of web is a symlink (to ${hostFile})`);
      expect(e.message).toContain('a hash can only be checked for a regular file');
    });

    it('is staged as a symlink without a hash', async () => {
      const layer = join(dir, 'layer');
      await fsp.mkdir(join(layer, 'bin'), { recursive: true });
      await fsp.symlink('/dev/zero', join(layer, 'bin', 'tool'));
      const [imp] = await stage([{ path: 'stacker://build/bin/tool' }], ctx(layer));
      expect(await fsp.readlink(imp.staged)).toBe('/dev/zero');
    });

    it('a regular file in the layer is checked against its hash', async () => {
      const layer = join(dir, 'layer');
      await fsp.mkdir(join(layer, 'bin'), { recursive: true });
      await fsp.writeFile(join(layer, 'bin', 'tool'), 'tool\n');
      await stage([{ path: 'stacker://build/bin/tool', hash: sha256('tool\n') }], ctx(layer));
      const e = await rejection(stage([{ path: 'stacker://build/bin/tool', hash: sha256('x') }], ctx(layer)));
      expect(e.message).toContain('is different than the actual hash');
    });
  });
});

describe('placing an import in the rootfs', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'core-place-'));
  });
  afterEach(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('merges a directory into one already there, replaces files, keeps modes and ids', async () => {
    const src = join(dir, 'src');
    const root = join(dir, 'root');
    await fsp.mkdir(join(src, 'etc'), { recursive: true });
    await fsp.writeFile(join(src, 'etc', 'new.conf'), 'new\n');
    await fsp.writeFile(join(src, 'etc', 'same.conf'), 'imported\n');
    await fsp.chmod(join(src, 'etc', 'new.conf'), 0o640);
    await fsp.chown(join(src, 'etc', 'new.conf'), 1000, 1000);
    await fsp.mkdir(join(root, 'etc'), { recursive: true });
    await fsp.writeFile(join(root, 'etc', 'kept.conf'), 'kept\n');
    await fsp.writeFile(join(root, 'etc', 'same.conf'), 'old\n');
    await fsp.chmod(join(root, 'etc'), 0o711);
    await placeImport(join(src, 'etc'), join(root, 'etc'));
    expect((await fsp.readdir(join(root, 'etc'))).sort()).toEqual(['kept.conf', 'new.conf', 'same.conf']);
    expect(await fsp.readFile(join(root, 'etc', 'same.conf'), 'utf8')).toBe('imported\n');
    const st = await fsp.stat(join(root, 'etc', 'new.conf'));
    expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o640, 1000, 1000]);
    expect((await fsp.stat(join(root, 'etc'))).mode & 0o7777).toBe(0o711);
  });

  it('replaces a symlink in the rootfs instead of writing through it', async () => {
    const src = join(dir, 'src');
    const root = join(dir, 'root');
    const outside = join(dir, 'outside');
    await fsp.mkdir(join(src, 'd'), { recursive: true });
    await fsp.writeFile(join(src, 'd', 'f'), 'x\n');
    await fsp.mkdir(outside);
    await fsp.mkdir(root);
    await fsp.symlink(outside, join(root, 'd'));
    await placeImport(join(src, 'd'), join(root, 'd'));
    expect((await fsp.lstat(join(root, 'd'))).isDirectory()).toBe(true);
    expect(await fsp.readdir(outside)).toEqual([]);
  });
});

describe('http(s) imports', () => {
  let server: Server;
  let base: string;
  let dir: string;
  const files = new Map<string, { body: Buffer; etag?: string; lastModified?: string }>();
  const requests: string[] = [];
  /** Paths whose GET sends half the body, then drops the connection. */
  const truncated = new Set<string>();

  beforeAll(async () => {
    server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      const f = files.get(req.url ?? '');
      if (!f) {
        res.writeHead(404, 'Not Found').end('no');
        return;
      }
      const headers: Record<string, string> = { 'content-length': String(f.body.length) };
      if (f.etag) headers.etag = f.etag;
      if (f.lastModified) headers['last-modified'] = f.lastModified;
      res.writeHead(200, headers);
      if (req.method === 'HEAD') res.end();
      else if (truncated.has(req.url ?? '')) {
        res.write(f.body.subarray(0, f.body.length >> 1));
        setTimeout(() => res.destroy(), 20);
      } else res.end(f.body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });
  beforeEach(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'core-http-'));
    files.clear();
    requests.length = 0;
    truncated.clear();
  });
  afterEach(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const count = (what: string) => requests.filter((r) => r === what).length;
  const downloads = (log: Logger = silentLogger) => new HttpDownloads(join(dir, 'downloads'), log, undefined);
  const ctx = (requireHash = false): ImportContext => ({
    stanza: 'web',
    resolvePath: (p: string) => p,
    stageDir: join(dir, 'imports', 'web'),
    downloadDir: join(dir, 'downloads'),
    requireHash,
    log: silentLogger,
    copyFromLayer: async () => {},
  });
  /** Every file under the download dir, relative. */
  async function downloadFiles(): Promise<string[]> {
    try {
      return (await fsp.readdir(join(dir, 'downloads'), { recursive: true })).map(String).sort();
    } catch {
      return [];
    }
  }

  it('downloads once, and reuses the copy while the ETag is the same (one HEAD per build)', async () => {
    files.set('/f.txt', { body: Buffer.from('one\n'), etag: '"v1"' });
    const first = await downloads().get(`${base}/f.txt`, 'web');
    expect(first.sha256).toBe(sha256('one\n'));
    expect(first.name).toBe('f.txt');
    const d = downloads();
    const again = await d.get(`${base}/f.txt`, 'web');
    await d.get(`${base}/f.txt`, 'web'); // same build: not even a HEAD
    expect(again.sha256).toBe(first.sha256);
    expect([count('GET /f.txt'), count('HEAD /f.txt')]).toEqual([1, 1]);
  });

  it('downloads again when the server has new content, and drops the old copy', async () => {
    files.set('/f.txt', { body: Buffer.from('one\n'), etag: '"v1"' });
    await downloads().get(`${base}/f.txt`, 'web');
    files.set('/f.txt', { body: Buffer.from('two\n'), etag: '"v2"' });
    const got = await downloads().get(`${base}/f.txt`, 'web');
    expect(got.sha256).toBe(sha256('two\n'));
    expect(await fsp.readFile(got.file, 'utf8')).toBe('two\n');
    expect(count('GET /f.txt')).toBe(2);
    expect((await downloadFiles()).filter((f) => f.endsWith(sha256('one\n')))).toEqual([]);
  });

  it('uses Last-Modified and length when there is no ETag', async () => {
    files.set('/f.txt', { body: Buffer.from('one\n'), lastModified: 'Mon, 01 Jan 2024 00:00:00 GMT' });
    await downloads().get(`${base}/f.txt`, 'web');
    await downloads().get(`${base}/f.txt`, 'web');
    expect(count('GET /f.txt')).toBe(1);
    files.set('/f.txt', { body: Buffer.from('six\n'), lastModified: 'Tue, 02 Jan 2024 00:00:00 GMT' });
    expect((await downloads().get(`${base}/f.txt`, 'web')).sha256).toBe(sha256('six\n'));
    expect(count('GET /f.txt')).toBe(2);
  });

  it('downloads again (and sees a change of the same size) when the server says nothing about versions', async () => {
    files.set('/f.txt', { body: Buffer.from('one\n') });
    await downloads().get(`${base}/f.txt`, 'web');
    files.set('/f.txt', { body: Buffer.from('two\n') });
    expect((await downloads().get(`${base}/f.txt`, 'web')).sha256).toBe(sha256('two\n'));
    expect(count('GET /f.txt')).toBe(2);
  });

  it('uses the copy it has when the server cannot be reached, with a warning', async () => {
    const other = createServer((_q, r) => r.end('offline\n'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(other.address() as AddressInfo).port}/o.txt`;
    await downloads().get(url, 'web');
    await new Promise((r) => other.close(r));
    const warnings: string[] = [];
    const log: Logger = {
      ...silentLogger,
      warn: (m: unknown) => {
        warnings.push(String(m));
      },
    };
    expect((await downloads(log).get(url, 'web')).sha256).toBe(sha256('offline\n'));
    expect(warnings).toEqual([expect.stringContaining(`couldn't check ${url} for changes`)]);
  });

  it('a 404 is a clear error naming the URL, and leaves no partial file', async () => {
    const e = await rejection(stageImports([{ path: `${base}/missing.txt` }], ctx()));
    expect(isUserError(e)).toBe(true);
    expect(e.message).toBe(
      `couldn't download ${base}/missing.txt for web: HTTP 404 Not Found; check the URL and the network`,
    );
    expect((await downloadFiles()).filter((f) => f.includes('partial'))).toEqual([]);
  });

  it('a download cut short fails and leaves no partial file', async () => {
    files.set('/big.bin', { body: Buffer.alloc(1 << 20, 7) });
    truncated.add('/big.bin');
    const e = await rejection(downloads().get(`${base}/big.bin`, 'web'));
    expect(isUserError(e) && e.message).toContain(`couldn't download ${base}/big.bin for web`);
    expect((await downloadFiles()).filter((f) => !f.endsWith('/') && !/^[0-9a-f]{32}$/.test(f))).toEqual([]);
  });

  it('stages the download under its URL name and checks its hash', async () => {
    files.set('/dir/tool.sh', { body: Buffer.from('echo hi\n'), etag: '"t"' });
    const [imp] = await stageImports([{ path: `${base}/dir/tool.sh`, hash: sha256('echo hi\n') }], ctx());
    expect(imp.staged).toBe(join(dir, 'imports', 'web', 'tool.sh'));
    expect(await fsp.readFile(imp.staged, 'utf8')).toBe('echo hi\n');
    const e = await rejection(stageImports([{ path: `${base}/dir/tool.sh`, hash: 'a'.repeat(64) }], ctx()));
    expect(e.message).toContain(
      `the hash in the stacker file ${'a'.repeat(64)} is different than the actual hash ${sha256('echo hi\n')}`,
    );
  });

  it('--require-hash refuses an http import without hash before downloading it', async () => {
    files.set('/f.txt', { body: Buffer.from('one\n') });
    const e = await rejection(stageImports([{ path: `${base}/f.txt` }], ctx(true)));
    expect(isUserError(e) && e.message).toBe(
      `import ${base}/f.txt of web has no hash, and --require-hash was given; add a hash: to it`,
    );
    expect(requests).toEqual([]);
    await stageImports([{ path: `${base}/f.txt`, hash: sha256('one\n') }], ctx(true));
  });
});
