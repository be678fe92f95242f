// Layers made by someone who wants out of the rootfs, or wants to wear the machine down:
// every one is refused with a clear message or neutralised, and nothing outside the
// destination changes (the destination lives in a temp dir whose other contents are
// compared before and after each test).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { isUserError } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ERROR_CODES } from './errors.js';
import { encodeHeader, TAR_BLOCK } from './tar-header.js';
import { LIMIT_ENV, readTar } from './tar-reader.js';
import { tempDir } from './test-fixtures.js';
import { type EntrySpec, tarBytes, tarEntry } from './test-tar.js';
import { unpackLayer } from './unpack.js';

let dir: string;
let root: string;
let outside: string;
let before: string;

/** Every path below `dir` except the rootfs, with type, size, mode and mtime. */
function snapshotOutside(): string {
  const lines: string[] = [];
  const walk = (p: string, rel: string) => {
    for (const name of fs.readdirSync(p).sort()) {
      const full = join(p, name);
      const r = `${rel}/${name}`;
      if (full === root) continue;
      const st = fs.lstatSync(full);
      lines.push(`${r} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${st.nlink}`);
      if (st.isDirectory()) walk(full, r);
    }
  };
  walk(dir, '');
  return lines.join('\n');
}

beforeEach(async () => {
  dir = await tempDir('oci-hostile-');
  root = join(dir, 'rootfs');
  outside = join(dir, 'outside');
  await fsp.mkdir(join(outside, 'sub'), { recursive: true });
  await fsp.writeFile(join(outside, 'secret'), 'untouched');
  await fsp.writeFile(join(dir, 'sibling'), 'untouched');
  const t = new Date('2000-01-01T00:00:00Z');
  for (const p of [join(outside, 'secret'), join(outside, 'sub'), join(dir, 'sibling'), outside])
    await fsp.utimes(p, t, t);
  before = snapshotOutside();
});

afterEach(async () => {
  // the point of every test: whatever happened inside, nothing outside changed
  expect(snapshotOutside()).toBe(before);
  await fsp.rm(dir, { recursive: true, force: true });
});

const unpack = (specs: EntrySpec[], opts: Parameters<typeof unpackLayer>[2] = { whiteouts: 'delete' }) =>
  unpackLayer(Readable.from([tarBytes(...specs)]), root, opts);

/** Resolves to the UserError a promise rejects with (fails the test otherwise). */
async function userError(p: Promise<unknown>): Promise<Error & { code: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'expected a rejection').toBeDefined();
  expect(isUserError(e), `expected a UserError, got ${String(e)}`).toBe(true);
  return e as Error & { code: string };
}

const inRoot = (p: string) => fsp.readFile(join(root, p), 'utf8');
const exists = (p: string) => fs.existsSync(p) || lstatOk(p);
function lstatOk(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

describe('hostile layers: names', () => {
  it.each(['../escape', '../../escape', 'a/../../escape', './../escape', 'a/b/../../../escape'])(
    'refuses %j with a message naming the entry',
    async (name) => {
      const e = await userError(unpack([{ name, content: 'pwned' }]));
      expect(e.code).toBe(ERROR_CODES.unsafePath);
      expect(e.message).toContain(JSON.stringify(name));
      expect(e.message).toMatch(/"\.\." component/);
    },
  );

  it('puts absolute names below the root', async () => {
    await unpack([
      { name: `${outside}/secret`, content: 'inside' },
      { name: '/etc/passwd', content: 'root::0:0' },
      { name: '//double/slash', content: 'x' },
    ]);
    expect(await inRoot(`${outside}/secret`)).toBe('inside');
    expect(await inRoot('etc/passwd')).toBe('root::0:0');
    expect(await inRoot('double/slash')).toBe('x');
  });

  it('refuses a ".." hidden in a PAX path record', async () => {
    // a non-ASCII name is written as a PAX record by encodeHeader
    const e = await userError(unpack([{ name: '../\u00e9scape', content: 'pwned' }]));
    expect(e.message).toContain('../\u00e9scape');
    expect(e.message).toMatch(/"\.\." component/);
  });
});

describe('hostile layers: symlinks and hard links', () => {
  it('writes a file through a symlinked parent inside the root, never outside', async () => {
    await unpack([
      { name: 'up', type: 'symlink', linkname: '../../../../../..' },
      { name: 'abs', type: 'symlink', linkname: outside },
      { name: 'up/secret', content: 'via relative link' },
      { name: 'abs/secret', content: 'via absolute link' },
      { name: 'abs/sub/new', content: 'deep' },
    ]);
    expect(await inRoot('secret')).toBe('via relative link'); // ".." stops at the root
    expect(await inRoot(`${outside}/secret`)).toBe('via absolute link');
    expect(await inRoot(`${outside}/sub/new`)).toBe('deep');
  });

  it('follows a chain of symlinks that tries to climb out one step at a time', async () => {
    await unpack([
      { name: 'a/' },
      { name: 'a/b/' },
      { name: 'a/b/one', type: 'symlink', linkname: '..' },
      { name: 'a/two', type: 'symlink', linkname: 'b/one/..' },
      { name: 'three', type: 'symlink', linkname: 'a/two/../..' },
      { name: 'four', type: 'symlink', linkname: 'three/../../outside' },
      { name: 'four/secret', content: 'inside after all' },
      { name: 'three/x', content: 'x' },
    ]);
    expect(await inRoot('outside/secret')).toBe('inside after all');
    expect(await inRoot('x')).toBe('x');
  });

  it('stops a symlink loop with a clear error', async () => {
    const e = await userError(
      unpack([
        { name: 'a', type: 'symlink', linkname: 'b' },
        { name: 'b', type: 'symlink', linkname: 'a' },
        { name: 'a/file', content: 'never' },
      ]),
    );
    expect(e.code).toBe(ERROR_CODES.unsafePath);
    expect(e.message).toMatch(/too many levels of symbolic links/);
  });

  it('replaces a symlink named by a later entry instead of writing through it', async () => {
    await unpack([
      { name: 'passwd', type: 'symlink', linkname: join(outside, 'secret') },
      { name: 'passwd', content: 'replaced', mode: 0o600 },
      { name: 'dirlink', type: 'symlink', linkname: outside },
      { name: 'dirlink/', mode: 0o700 },
      { name: 'fifo', type: 'symlink', linkname: join(outside, 'secret') },
      { name: 'fifo', type: 'fifo' },
    ]);
    expect(await inRoot('passwd')).toBe('replaced');
    expect(fs.lstatSync(join(root, 'dirlink')).isDirectory()).toBe(true);
    expect(fs.lstatSync(join(root, 'fifo')).isFIFO()).toBe(true);
  });

  it('refuses hard links to paths outside, through symlinks, or to nothing', async () => {
    for (const linkname of ['../outside/secret', 'a/../../outside/secret']) {
      const e = await userError(unpack([{ name: 'hl', type: 'hardlink', linkname }]));
      expect(e.message).toMatch(/\.\./);
    }
    for (const linkname of [join(outside, 'secret'), 'out/secret', '/out/secret', '']) {
      const e = await userError(
        unpack([
          { name: 'out', type: 'symlink', linkname: outside },
          { name: 'hl', type: 'hardlink', linkname },
        ]),
      );
      expect(e.message).toMatch(/hard link/);
    }
    expect(fs.statSync(join(outside, 'secret')).nlink).toBe(1);
  });

  it('a hard link to a symlink links the symlink itself, not what it points at', async () => {
    await unpack([
      { name: 'sl', type: 'symlink', linkname: join(outside, 'secret') },
      { name: 'hl', type: 'hardlink', linkname: 'sl' },
    ]);
    expect(fs.lstatSync(join(root, 'hl')).isSymbolicLink()).toBe(true);
  });

  it('never sets a directory time through a symlink that replaced the directory', async () => {
    await unpack([
      { name: 'd/', mtime: 42 },
      { name: 'd/sub/', mtime: 43 },
      { name: '.wh.d' },
      { name: 'd', type: 'symlink', linkname: outside },
    ]);
    expect(fs.readlinkSync(join(root, 'd'))).toBe(outside);
  });
});

describe('hostile layers: odd entries', () => {
  it('carries no device nodes onto disk, and no error', async () => {
    await unpack([
      { name: 'dev/' },
      { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0 },
      { name: 'dev/mem', type: 'char', devmajor: 1, devminor: 1 },
      { name: 'dev/ok', content: 'file' },
    ]);
    expect(exists(join(root, 'dev/sda'))).toBe(false);
    expect(exists(join(root, 'dev/mem'))).toBe(false);
    expect(await inRoot('dev/ok')).toBe('file');
  });

  it('keeps setuid and setgid files as data with their modes', async () => {
    await unpack([
      { name: 'bin/' },
      { name: 'bin/su', content: '#!/bin/sh\n', mode: 0o4755 },
      { name: 'bin/wall', content: '#!/bin/sh\n', mode: 0o2755 },
    ]);
    expect(fs.statSync(join(root, 'bin/su')).mode & 0o7777).toBe(0o4755);
    expect(fs.statSync(join(root, 'bin/wall')).mode & 0o7777).toBe(0o2755);
  });

  it.each(['.wh...', 'a/.wh...', '.wh..', '.wh.'])('refuses the whiteout %j', async (name) => {
    const e = await userError(unpack([{ name: 'a/' }, { name }]));
    expect(e.code).toBe(ERROR_CODES.unsafePath);
  });

  it.each(['delete', 'overlay'] as const)(
    'keeps %s whiteouts of ".." and through symlinks inside',
    async (mode) => {
      const e = await userError(unpack([{ name: '../.wh.outside' }], { whiteouts: mode }));
      expect(e.message).toMatch(/"\.\." component/);
      await unpack(
        [
          { name: 'out', type: 'symlink', linkname: outside },
          { name: 'out/.wh.secret' },
          { name: 'out/.wh..wh..opq' },
        ],
        { whiteouts: mode },
      );
    },
  );

  it('lets the last of duplicate entries win, whatever their types', async () => {
    await unpack([
      { name: 'x', content: 'one' },
      { name: 'x/' },
      { name: 'x/child', content: 'c' },
      { name: 'x', type: 'symlink', linkname: outside },
      { name: 'x', content: 'last' },
      { name: 'y', content: 'a' },
      { name: 'y', content: 'b' },
    ]);
    expect(await inRoot('x')).toBe('last');
    expect(await inRoot('y')).toBe('b');
  });

  it('refuses GNU sparse files and other unknown types by name', async () => {
    const h = tarEntry({ name: 'sparse', content: 'abc' });
    h.write('S', 156, 'latin1');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < TAR_BLOCK; i++) sum += h[i];
    h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
    const e = await userError(
      unpackLayer(Readable.from([Buffer.concat([h, Buffer.alloc(1024)])]), root, {
        whiteouts: 'delete',
      }),
    );
    expect(e.message).toMatch(/unsupported type "S"/);
  });
});

describe('hostile layers: bombs', () => {
  /** A tar of `n` tiny entries, made lazily: the reader must stop long before the end. */
  function* manyEntries(n: number, produced: { count: number }): Generator<Buffer> {
    const block = 2000;
    for (let i = 0; i < n; i += block) {
      const parts: Buffer[] = [];
      for (let j = i; j < Math.min(n, i + block); j++) parts.push(tarEntry({ name: `d/f${j}` }));
      produced.count += parts.length;
      yield Buffer.concat(parts);
    }
  }

  it('stops a tar of millions of entries at the entry cap, with the knob to raise it', async () => {
    const produced = { count: 0 };
    const e = await userError(
      unpackLayer(Readable.from(manyEntries(5_000_000, produced)), root, {
        whiteouts: 'delete',
        limits: { maxEntries: 1000 },
      }),
    );
    expect(e.code).toBe(ERROR_CODES.layerTooBig);
    expect(e.message).toMatch(/more than 1000 entries/);
    expect(e.message).toContain(LIMIT_ENV.maxEntries);
    expect(produced.count).toBeLessThan(10_000);
  });

  it('takes the cap from the environment', async () => {
    const old = process.env[LIMIT_ENV.maxEntries];
    process.env[LIMIT_ENV.maxEntries] = '10';
    try {
      const specs = Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, content: 'x' }));
      const e = await userError(unpack(specs));
      expect(e.message).toMatch(/more than 10 entries/);
    } finally {
      if (old === undefined) delete process.env[LIMIT_ENV.maxEntries];
      else process.env[LIMIT_ENV.maxEntries] = old;
    }
  });

  it('stops a gzip bomb of zeros at the byte cap before writing it', async () => {
    // one entry declaring 64 MiB of zeros: 64 KiB gzipped
    const big = 64 * 1024 * 1024;
    const header = tarEntry({ name: 'zeros', size: big });
    const gz = gzipSync(Buffer.concat([header, Buffer.alloc(big), Buffer.alloc(1024)]));
    const e = await userError(
      unpackLayer(Readable.from([gz]), root, { whiteouts: 'delete', limits: { maxBytes: 1024 * 1024 } }),
    );
    expect(e.code).toBe(ERROR_CODES.layerTooBig);
    expect(e.message).toContain(LIMIT_ENV.maxBytes);
    expect(exists(join(root, 'zeros'))).toBe(false);
  });

  it('fails at once on a huge sparse-looking file whose content is absent', async () => {
    // PAX size of 1 PiB, no content at all: a clear error, not a hang or a full disk
    const header = encodeHeader({
      name: 'huge',
      type: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 2 ** 50,
      mtime: 0,
    });
    const started = Date.now();
    const e = await userError(unpackLayer(Readable.from([header]), root, { whiteouts: 'delete' }));
    expect(e.code).toBe(ERROR_CODES.layerTooBig);
    expect(e.message).toMatch(/declares 1125899906842624 bytes/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('says the archive is cut short when declared content is missing under the cap', async () => {
    const header = encodeHeader({
      name: 'short',
      type: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 10_000_000,
      mtime: 0,
    });
    const e = await userError(
      unpackLayer(Readable.from([header, Buffer.alloc(4096, 1)]), root, { whiteouts: 'delete' }),
    );
    expect(e.code).toBe(ERROR_CODES.badTar);
    expect(e.message).toMatch(/ends inside a file/);
  });

  it('refuses negative and fractional sizes from base-256 and PAX fields', async () => {
    const neg = tarEntry({ name: 'neg', content: 'abc' });
    neg.fill(0xff, 124, 136); // base-256 -1
    neg.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < TAR_BLOCK; i++) sum += neg[i];
    neg.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
    const e = await userError(unpackLayer(Readable.from([neg]), root, { whiteouts: 'delete' }));
    expect(e.message).toMatch(/impossible size -1/);
    const records = await collectErrors(
      readTar([tarEntry({ name: 'x', uid: 4294967296 }), Buffer.alloc(1024)]) as AsyncIterable<unknown>,
    );
    expect(records).toMatch(/impossible uid/);
  });
});

async function collectErrors(it: AsyncIterable<unknown>): Promise<string> {
  try {
    for await (const _ of it) {
      /* drain */
    }
    return '';
  } catch (e) {
    expect(isUserError(e)).toBe(true);
    return (e as Error).message;
  }
}
