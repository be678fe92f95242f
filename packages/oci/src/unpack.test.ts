import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { getAttribute } from '@napi-rs/xattr';
import { type DriverContext, isUserError } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { END_OF_ARCHIVE, encodeHeader, paddingFor, type TarHeader } from './tar-header.js';
import { canChown, tempDir } from './test-fixtures.js';
import { unpackLayer } from './unpack.js';

// unpackLayer is what core hands storage drivers as DriverContext.unpack.
const asDriverUnpack: DriverContext['unpack'] = unpackLayer;
void asDriverUnpack;

type Spec = Partial<TarHeader> & { name: string; content?: string };

/** A tar made entry by entry, with no checks on names (that is the point). */
function tar(...specs: Spec[]): Readable {
  const parts: Buffer[] = [];
  for (const s of specs) {
    const content = Buffer.from(s.content ?? '');
    const type = s.type ?? (s.name.endsWith('/') ? 'directory' : 'file');
    parts.push(
      encodeHeader({
        mode: type === 'directory' ? 0o755 : 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_000_000,
        ...s,
        type,
        size: content.length,
      }),
    );
    if (content.length) parts.push(content, Buffer.alloc(paddingFor(content.length)));
  }
  parts.push(END_OF_ARCHIVE);
  return Readable.from([Buffer.concat(parts)]);
}

let dir: string;
let root: string;
let outside: string;
beforeEach(async () => {
  dir = await tempDir();
  root = join(dir, 'rootfs');
  outside = join(dir, 'outside');
  await fsp.mkdir(outside);
  await fsp.writeFile(join(outside, 'secret'), 'untouched');
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const read = (p: string) => fsp.readFile(join(root, p), 'utf8');
const exists = (p: string) =>
  fsp.lstat(p).then(
    () => true,
    () => false,
  );

describe('unpackLayer: staying inside the root', () => {
  it('refuses names with ".." components', async () => {
    await expect(
      unpackLayer(tar({ name: '../outside/x', content: 'pwned' }), root, { whiteouts: 'delete' }),
    ).rejects.toSatisfy((e: unknown) => isUserError(e) && /"\.\." component/.test((e as Error).message));
    await expect(
      unpackLayer(tar({ name: 'a/../../outside/y', content: 'pwned' }), root, { whiteouts: 'delete' }),
    ).rejects.toThrow(/\.\./);
    expect(await exists(join(outside, 'x'))).toBe(false);
    expect(await exists(join(outside, 'y'))).toBe(false);
  });

  it('puts absolute names below the root', async () => {
    const abs = join(outside, 'abs-file');
    await unpackLayer(tar({ name: abs, content: 'inside' }), root, { whiteouts: 'delete' });
    expect(await exists(abs)).toBe(false);
    expect(await read(abs)).toBe('inside');
  });

  it('resolves a symlinked parent inside the root, never following it out', async () => {
    await unpackLayer(
      tar(
        { name: 'abs', type: 'symlink', linkname: outside },
        { name: 'rel', type: 'symlink', linkname: '../../../../../../outside' },
        { name: 'abs/secret', content: 'via absolute link' },
        { name: 'rel/secret', content: 'via relative link' },
      ),
      root,
      { whiteouts: 'delete' },
    );
    expect(await fsp.readFile(join(outside, 'secret'), 'utf8')).toBe('untouched');
    expect(await read(join(outside, 'secret'))).toBe('via absolute link'); // root + outside path
    expect(await read('outside/secret')).toBe('via relative link'); // ".." stops at the root
  });

  it('replaces a symlink entry rather than writing through it', async () => {
    await unpackLayer(
      tar(
        { name: 'link', type: 'symlink', linkname: join(outside, 'secret') },
        { name: 'link', content: 'replaced' },
      ),
      root,
      { whiteouts: 'delete' },
    );
    expect(await fsp.readFile(join(outside, 'secret'), 'utf8')).toBe('untouched');
    expect((await fsp.lstat(join(root, 'link'))).isFile()).toBe(true);
    expect(await read('link')).toBe('replaced');
  });

  it('refuses hard links that leave the root or name nothing unpacked', async () => {
    await expect(
      unpackLayer(tar({ name: 'hl', type: 'hardlink', linkname: '../outside/secret' }), root, {
        whiteouts: 'delete',
      }),
    ).rejects.toThrow(/\.\./);
    await expect(
      unpackLayer(tar({ name: 'hl', type: 'hardlink', linkname: join(outside, 'secret') }), root, {
        whiteouts: 'delete',
      }),
    ).rejects.toThrow(/not a file unpacked so far/);
    await expect(
      unpackLayer(
        tar(
          { name: 'sl', type: 'symlink', linkname: outside },
          { name: 'hl', type: 'hardlink', linkname: 'sl/secret' },
        ),
        root,
        {
          whiteouts: 'delete',
        },
      ),
    ).rejects.toThrow(/not a file unpacked so far/);
    expect((await fsp.stat(join(outside, 'secret'))).nlink).toBe(1);
  });
});

describe('unpackLayer: layers on layers', () => {
  it('applies whiteouts and opaque directories, sparing what the same layer wrote', async () => {
    await unpackLayer(
      tar(
        { name: 'a/' },
        { name: 'a/x', content: 'x' },
        { name: 'a/sub/y', content: 'y' },
        { name: 'b/' },
        { name: 'b/z', content: 'z' },
        { name: 'keep' },
      ),
      root,
      { whiteouts: 'delete' },
    );
    await unpackLayer(
      tar(
        { name: 'a/' },
        { name: 'a/+early', content: 'same layer' },
        { name: 'a/.wh..wh..opq' },
        { name: 'a/new', content: 'n' },
        { name: '.wh.b' },
      ),
      root,
      { whiteouts: 'delete' },
    );
    expect((await fsp.readdir(join(root, 'a'))).sort()).toEqual(['+early', 'new']);
    expect(await exists(join(root, 'b'))).toBe(false);
    expect(await read('keep')).toBe('');
  });

  it('records whiteouts the overlayfs way in overlay mode', async () => {
    await unpackLayer(tar({ name: 'a/' }, { name: 'a/.wh..wh..opq' }, { name: '.wh.gone' }), root, {
      whiteouts: 'overlay',
    });
    const st = await fsp.lstat(join(root, 'gone'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0);
    expect((await getAttribute(join(root, 'a'), 'user.overlay.opaque'))?.toString()).toBe('y');
  });

  it('replaces entries of another type and lets later duplicates win', async () => {
    await unpackLayer(
      tar(
        { name: 'p/' },
        { name: 'p/child', content: 'c' },
        { name: 'q', content: 'file' },
        { name: 'a', content: 'A' },
        { name: 'b', type: 'hardlink', linkname: 'a' },
      ),
      root,
      { whiteouts: 'delete' },
    );
    await unpackLayer(
      tar(
        { name: 'p', content: 'now a file' },
        { name: 'q/' },
        { name: 'q/in', content: 'i' },
        { name: 'b', content: 'first' },
        { name: 'b', content: 'second' },
      ),
      root,
      { whiteouts: 'delete' },
    );
    expect(await read('p')).toBe('now a file');
    expect(await read('q/in')).toBe('i');
    expect(await read('b')).toBe('second');
    expect(await read('a')).toBe('A'); // the old hard link partner is not written through
  });

  it('accepts gzip, sets owners, modes and directory mtimes after their contents', async () => {
    const plain = tar(
      { name: './', mode: 0o711, mtime: 5 },
      { name: 'd/', mode: 0o2750, uid: 70000, gid: 70001, mtime: 12345 },
      { name: 'd/f', content: 'data', mode: 0o4711, uid: 70000, gid: 0, mtime: 777 },
      { name: 'd/l', type: 'symlink', linkname: 'f', uid: 70000, gid: 70001, mtime: 888 },
      { name: 'd/null', type: 'char', devmajor: 1, devminor: 3 },
      { name: 'd/fifo', type: 'fifo', mode: 0o600 },
    );
    const gz = gzipSync(Buffer.concat(await plain.toArray()));
    await unpackLayer(Readable.from([gz]), root, { whiteouts: 'delete' });
    const d = await fsp.stat(join(root, 'd'));
    const me = process.getuid?.() ?? 0;
    const id = (n: number) => (canChown ? n : me); // owners are only set with privilege
    expect([d.mode & 0o7777, d.uid, d.mtimeMs]).toEqual([0o2750, id(70000), 12_345_000]);
    if (canChown) expect(d.gid).toBe(70001);
    const f = await fsp.stat(join(root, 'd/f'));
    expect([f.mode & 0o7777, f.uid, f.mtimeMs]).toEqual([0o4711, id(70000), 777_000]);
    const l = await fsp.lstat(join(root, 'd/l'));
    expect([l.isSymbolicLink(), l.uid, l.mtimeMs]).toEqual([true, id(70000), 888_000]);
    expect((await fsp.lstat(join(root, 'd/fifo'))).isFIFO()).toBe(true);
    expect(await exists(join(root, 'd/null'))).toBe(false);
    const r = await fsp.stat(root);
    expect([r.mode & 0o7777, r.mtimeMs]).toEqual([0o711, 5000]);
  });

  it('reports a corrupt tar as a user error', async () => {
    const bad = Buffer.concat(await tar({ name: 'x', content: 'abc' }).toArray());
    bad[10] ^= 0xff;
    await expect(unpackLayer(Readable.from([bad]), root, { whiteouts: 'delete' })).rejects.toSatisfy(
      isUserError,
    );
  });
});
