// What we write must be accepted by real OCI clients, not only by our own reader.
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { MEDIA_TYPES } from '@stacker/plugin-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LayerEntry, sortChanges } from './changes.js';
import { putLayer } from './layer-writer.js';
import { OciLayout } from './layout.js';
import { type Fixture, LONG_DIR, makeFixture, run, tempDir, walkChanges } from './test-fixtures.js';

const TAG = 'app:1.0';
let dir: string;
let fx: Fixture;
let oci: string;
let manifestDigest: string;
let layerDigests: string[];

beforeAll(async () => {
  dir = await tempDir();
  fx = await makeFixture(join(dir, 'rootfs'));
  oci = join(dir, 'oci');
  const layout = await OciLayout.init(oci);

  const first: LayerEntry[] = await walkChanges(fx.root);
  if (!fx.chownOk) {
    first.push({
      kind: 'synthetic',
      header: { name: 'data/x70000', type: 'file', mode: 0o640, uid: 70000, gid: 70001, size: 15, mtime: 0 },
      content: Buffer.from('owned by 70000\n'),
    });
  }
  const l1 = await putLayer(layout, sortChanges(first), { sourceDateEpoch: 1_700_000_000 });

  // Layer 2: delete `gone`, make `olddir` opaque with one new file.
  await fsp.writeFile(join(dir, 'new'), 'fresh\n');
  const l2 = await putLayer(
    layout,
    sortChanges([
      { kind: 'delete', path: 'gone' },
      { kind: 'opaque', path: 'olddir' },
      { kind: 'add', path: 'olddir', source: join(fx.root, 'olddir') },
      { kind: 'add', path: 'olddir/new', source: join(dir, 'new') },
    ]),
  );
  const config = await layout.putConfig({
    architecture: 'amd64',
    os: 'linux',
    created: '2023-11-14T22:13:20Z',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/tool'] },
    rootfs: { type: 'layers', diff_ids: [l1.diffId, l2.diffId] },
    history: [{ created_by: 'layer 1' }, { created_by: 'layer 2' }],
  });
  const manifest = await layout.putManifest({
    schemaVersion: 2,
    config,
    layers: [l1.descriptor, l2.descriptor],
  });
  await layout.tag(TAG, manifest);
  manifestDigest = manifest.digest;
  layerDigests = [l1.descriptor.digest, l2.descriptor.digest];
  expect(await layout.validate()).toEqual([]);
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('real clients read our layouts', () => {
  it('skopeo inspect sees the tagged image and its layers', async () => {
    const { stdout } = await run('skopeo', ['inspect', `oci:${oci}:${TAG}`]);
    const info = JSON.parse(stdout);
    expect(info.Digest).toBe(manifestDigest);
    expect(info.Layers).toEqual(layerDigests);
    expect(info.Architecture).toBe('amd64');
    expect(info.Env).toEqual(['PATH=/bin']);
    const raw = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${oci}:${TAG}`])).stdout);
    expect(raw.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual([
      MEDIA_TYPES.layerGzip,
      MEDIA_TYPES.layerGzip,
    ]);
  });

  it('umoci unpack --rootless applies both layers: files, hard link, symlink, whiteouts', async () => {
    const bundle = join(dir, 'bundle');
    await run('umoci', ['unpack', '--rootless', '--image', `${oci}:${TAG}`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    expect(await fsp.readFile(join(rootfs, 'etc/hosts.txt'), 'utf8')).toBe('127.0.0.1 localhost\n');
    const a = await fsp.stat(join(rootfs, 'etc/hosts.txt'));
    const b = await fsp.stat(join(rootfs, 'etc/hard'));
    expect(b.ino).toBe(a.ino);
    expect(await fsp.readlink(join(rootfs, 'etc/link'))).toBe('hosts.txt');
    expect((await fsp.stat(join(rootfs, 'bin/tool'))).mode & 0o7777).toBe(0o4755);
    expect(await fsp.readFile(join(rootfs, `${LONG_DIR}/a-file-with-a-long-name.txt`), 'utf8')).toBe(
      'deep\n',
    );
    expect(await fsp.readFile(join(rootfs, 'data/x70000'), 'utf8')).toBe('owned by 70000\n');
    expect((await fsp.stat(join(rootfs, 'data/big'))).size).toBe(300 * 1024);
    // Whiteouts from layer 2 applied onto layer 1.
    await expect(fsp.lstat(join(rootfs, 'gone'))).rejects.toThrow(/ENOENT/);
    expect(await fsp.readdir(join(rootfs, 'olddir'))).toEqual(['new']);
    // Rootless, umoci keeps the original owner in a user.rootlesscontainers protobuf xattr.
    const owner = await getAttribute(join(rootfs, 'data/x70000'), 'user.rootlesscontainers');
    expect(owner && decodeVarintFields(owner)).toEqual({ 1: 70000, 2: 70001 });
    // ... and our v2 file capability in its mtree manifest.
    const mtreeName = (await fsp.readdir(bundle)).find((n) => n.endsWith('.mtree')) as string;
    const mtree = await fsp.readFile(join(bundle, mtreeName), 'utf8');
    if (fx.capOk) expect(mtree).toMatch(/tool .*xattr\.security\.capability=AQAAAgAEAAAAAAAAAAAAAAAAAAA=/);
  });
});

/** field number -> value for a protobuf message made only of varint fields. */
function decodeVarintFields(buf: Buffer): Record<number, number> {
  const out: Record<number, number> = {};
  let i = 0;
  const varint = (): number => {
    let value = 0;
    let shift = 0;
    while (true) {
      const b = buf[i++];
      value += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return value;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = varint();
    out[key >> 3] = varint();
  }
  return out;
}
