import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { getAttribute } from '@napi-rs/xattr';
import type { Change } from '@stacker/plugin-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkChangeOrder, type LayerEntry, sortChanges } from './changes.js';
import { putLayer, writeLayer } from './layer-writer.js';
import { OciLayout } from './layout.js';
import type { TarHeader } from './tar-header.js';
import { readTar } from './tar-reader.js';
import {
  BINARY_XATTR,
  canChown,
  capabilityV3,
  collect,
  type Fixture,
  fixtureGid,
  fixtureUid,
  isRoot,
  LONG_DIR,
  makeFixture,
  tempDir,
  walkChanges,
} from './test-fixtures.js';
import { unpackLayer } from './unpack.js';
import { walkDirectory } from './walk.js';
import { capabilityToV2 } from './xattrs.js';

let dir: string;
let fx: Fixture;
const MTIME = Date.parse('2001-02-03T04:05:06Z') / 1000;
const synthetic70000: LayerEntry = {
  kind: 'synthetic',
  header: { name: 'data/x70000', type: 'file', mode: 0o640, uid: 70000, gid: 70001, size: 15, mtime: MTIME },
  content: Buffer.from('owned by 70000\n'),
};

/** All fixture entries, with the uid-70000 file made up when the fs could not chown. */
async function entries(): Promise<LayerEntry[]> {
  const list: LayerEntry[] = await walkChanges(fx.root);
  if (!fx.chownOk) list.push(synthetic70000);
  list.push({
    kind: 'synthetic',
    header: {
      name: 'dev/null',
      type: 'char',
      mode: 0o666,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: MTIME,
      devmajor: 1,
      devminor: 3,
    },
  });
  return sortChanges(list);
}

async function headersOf(tar: AsyncIterable<Buffer> | Buffer): Promise<Array<TarHeader & { body: string }>> {
  const out: Array<TarHeader & { body: string }> = [];
  const src = Buffer.isBuffer(tar) ? [tar] : tar;
  for await (const e of readTar(src as AsyncIterable<Buffer>))
    out.push({ ...e.header, body: (await collect(e.body)).toString('latin1') });
  return out;
}

beforeAll(async () => {
  dir = await tempDir();
  fx = await makeFixture(join(dir, 'rootfs'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('layer writer', () => {
  it('writes entries in order with the metadata of the files, and reads them back identically', async () => {
    const headers = await headersOf(writeLayer(await entries()));
    const byName = new Map(headers.map((h) => [h.name, h]));
    expect(headers.map((h) => h.name)).toEqual(
      [...headers.map((h) => h.name)].sort((a, b) => (a.replace(/\/$/, '') < b.replace(/\/$/, '') ? -1 : 1)),
    );
    expect(byName.get('bin/')).toMatchObject({ type: 'directory', mode: 0o755 });
    expect(byName.get('tmp/')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(byName.get('bin/tool')).toMatchObject({
      type: 'file',
      mode: 0o4755,
      uid: fixtureUid,
      gid: fixtureGid,
      mtime: MTIME,
      body: '#!/bin/sh\necho tool\n',
    });
    // The hard link: whichever name comes first holds the content, the other links to it.
    expect(byName.get('etc/hard')).toMatchObject({ type: 'file', body: '127.0.0.1 localhost\n' });
    expect(byName.get('etc/hosts.txt')).toMatchObject({ type: 'hardlink', linkname: 'etc/hard', size: 0 });
    expect(byName.get('etc/link')).toMatchObject({ type: 'symlink', linkname: 'hosts.txt' });
    expect(byName.get('data/x70000')).toMatchObject({ uid: 70000, gid: 70001, body: 'owned by 70000\n' });
    expect(byName.get('dev/null')).toMatchObject({ type: 'char', devmajor: 1, devminor: 3 });
    expect(byName.get(`${LONG_DIR}/a-file-with-a-long-name.txt`)).toMatchObject({ body: 'deep\n' });
    expect(byName.get('data/big')?.body.length).toBe(300 * 1024);
    expect(byName.get('data/attr')?.xattrs?.get('user.test')?.equals(BINARY_XATTR)).toBe(true);
    if (isRoot) expect(fx.capOk).toBe(true);
    if (fx.capOk) {
      const cap = byName.get('bin/tool')?.xattrs?.get('security.capability');
      expect(cap?.toString('hex')).toBe(capabilityToV2(capabilityV3(1000)).toString('hex'));
      expect(cap?.length).toBe(20);
      expect(cap?.readUInt32LE(0)).toBe(0x02000001);
    }
  });

  it('unpacks what it wrote into an identical tree (ids, modes, xattrs, links, mtimes)', async () => {
    const out = join(dir, 'unpacked');
    await unpackLayer(writeLayer(await entries()), out, { whiteouts: 'delete' });
    const again = await headersOf(writeLayer(await walkChanges(out)));
    const first = (await headersOf(writeLayer(await entries()))).filter((h) => h.type !== 'char');
    // Without root, owners cannot be set: compare everything else.
    const owners = (h: TarHeader) => (canChown ? h : { ...h, uid: 0, gid: 0 });
    expect(again.map(owners)).toEqual(first.map(owners));
    const hosts = await fsp.stat(join(out, 'etc/hosts.txt'));
    expect(hosts.ino).toBe((await fsp.stat(join(out, 'etc/hard'))).ino);
    if (canChown) expect((await fsp.stat(join(out, 'data/x70000'))).uid).toBe(70000);
    expect((await getAttribute(join(out, 'data/attr'), 'user.test'))?.equals(BINARY_XATTR)).toBe(true);
    expect((await fsp.stat(join(out, 'bin'))).mtimeMs).toBe(MTIME * 1000);
    await expect(fsp.stat(join(out, 'dev/null'))).rejects.toThrow(/ENOENT/); // devices are never created
  });

  it('writes whiteouts and opaque markers as the image spec says', async () => {
    const changes: Change[] = sortChanges([
      { kind: 'delete', path: 'etc/gone' },
      { kind: 'opaque', path: 'olddir' },
      { kind: 'add', path: 'olddir', source: join(fx.root, 'olddir') },
    ]);
    const headers = await headersOf(writeLayer(changes));
    expect(headers.map((h) => [h.name, h.type, h.size])).toEqual([
      ['etc/.wh.gone', 'file', 0],
      ['olddir/', 'directory', 0],
      ['olddir/.wh..wh..opq', 'file', 0],
    ]);
  });

  it('is deterministic and clamps mtimes to SOURCE_DATE_EPOCH', async () => {
    const store = await OciLayout.init(join(dir, 'det'));
    const a = await putLayer(store, await entries(), { compression: 'gzip' });
    const b = await putLayer(store, await entries(), { compression: 'gzip' });
    expect(b).toEqual(a);
    const blob = await fsp.readFile(store.path(a.descriptor.digest));
    expect([...blob.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 0]); // no FNAME flag
    expect([...blob.subarray(4, 8)]).toEqual([0, 0, 0, 0]); // mtime 0
    const tar = gunzipSync(blob);
    const { createHash } = await import('node:crypto');
    expect(a.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    expect(a.descriptor.digest).toBe(`sha256:${createHash('sha256').update(blob).digest('hex')}`);
    const plain = await putLayer(store, await entries(), { compression: 'none' });
    expect(plain.diffId).toBe(a.diffId);
    expect(plain.descriptor.digest).toBe(a.diffId);

    const epoch = MTIME - 1000;
    const clamped = await putLayer(store, await entries(), { sourceDateEpoch: epoch });
    expect(clamped.diffId).not.toBe(a.diffId);
    const headers = await headersOf(gunzipSync(await fsp.readFile(store.path(clamped.descriptor.digest))));
    expect(new Set(headers.map((h) => h.mtime))).toEqual(new Set([epoch]));
    const later = await headersOf(writeLayer(await entries(), { sourceDateEpoch: MTIME + 1000 }));
    expect(new Set(later.map((h) => h.mtime))).toEqual(new Set([MTIME])); // older stays as it is
    expect(await store.validate()).toEqual([]);
  });

  it('fails the layer when a file holds more than lstat said (it changed while being read)', async () => {
    // procfs files claim size 0 but have content: exactly what a file growing mid-read looks like.
    const stream = writeLayer([{ kind: 'add', path: 'status', source: '/proc/self/status' }]);
    await expect(collect(stream)).rejects.toThrow(/changed size/);
  });
});

describe('walkDirectory', () => {
  it('yields the tree in the order sortChanges gives', async () => {
    const walked: Change[] = [];
    for await (const c of walkDirectory(fx.root)) walked.push(c);
    expect(walked).toEqual(await walkChanges(fx.root));
    expect(walked.length).toBeGreaterThan(15);
  });
});

describe('sortChanges', () => {
  it('puts parents before children in directory-walk order and refuses duplicates', () => {
    const c = (path: string): Change => ({ kind: 'add', path, source: `/s/${path}` });
    const sorted = sortChanges([
      c('a.b'),
      c('a/b'),
      c('a'),
      c('B'),
      { kind: 'delete', path: 'a/c' },
      { kind: 'opaque', path: 'a' },
    ]);
    // Whiteouts sort by their tar names (a/.wh.c before a/b).
    expect(sorted.map((x) => `${x.kind}:${x.path}`)).toEqual([
      'add:B',
      'add:a',
      'opaque:a',
      'delete:a/c',
      'add:a/b',
      'add:a.b',
    ]);
    expect(() => sortChanges([c('x'), c('/x')])).toThrow(/appears twice/);
    expect(() => checkChangeOrder([c('a/b'), c('a')])).toThrow(/comes after/);
    expect(() => sortChanges([c('a/../b')])).toThrow(/\.\./);
  });
});
