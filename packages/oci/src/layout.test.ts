import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isUserError, MEDIA_TYPES } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OciLayout, REF_NAME } from './layout.js';
import { collect, tempDir } from './test-fixtures.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
let dir: string;
let layout: OciLayout;

beforeEach(async () => {
  dir = await tempDir();
  layout = await OciLayout.init(join(dir, 'oci'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function image(tag: string, layerText: string) {
  const layer = await layout.putStream(Readable.from([Buffer.from(layerText)]), MEDIA_TYPES.layerTar);
  const config = await layout.putConfig({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
  });
  const manifest = await layout.putManifest({ schemaVersion: 2, config, layers: [layer] });
  await layout.tag(tag, manifest);
  return { layer, config, manifest };
}

describe('OciLayout', () => {
  it('creates oci-layout, index.json and blobs/sha256, and refuses what is not a layout', async () => {
    expect(JSON.parse(await fsp.readFile(join(dir, 'oci', 'oci-layout'), 'utf8'))).toEqual({
      imageLayoutVersion: '1.0.0',
    });
    expect(JSON.parse(await fsp.readFile(join(dir, 'oci', 'index.json'), 'utf8'))).toMatchObject({
      schemaVersion: 2,
      manifests: [],
    });
    expect((await fsp.stat(join(dir, 'oci', 'blobs', 'sha256'))).isDirectory()).toBe(true);
    await expect(OciLayout.open(dir)).rejects.toSatisfy(isUserError);
    await OciLayout.open(join(dir, 'oci'));
  });

  it('stores streamed blobs under their sha256 and checks the expected digest and size', async () => {
    const data = Buffer.alloc(200_000, 7);
    const d = await layout.putStream(Readable.from([data.subarray(0, 5), data.subarray(5)]), 'x/y');
    expect(d).toEqual({ mediaType: 'x/y', digest: sha(data), size: data.length });
    expect((await fsp.readFile(layout.path(d.digest))).equals(data)).toBe(true);
    expect(await layout.has(d.digest)).toBe(true);
    // Already present: drained and verified.
    expect(
      await layout.putStream(Readable.from([data]), 'x/y', { digest: d.digest, size: data.length }),
    ).toEqual(d);
    await expect(
      layout.putStream(Readable.from([Buffer.from('nope')]), 'x/y', { digest: d.digest }),
    ).rejects.toThrow(/is different than the actual hash/);
    await expect(layout.putStream(Readable.from([Buffer.from('abc')]), 'x/y', { size: 4 })).rejects.toThrow(
      /3 bytes but 4/,
    );
    await expect(
      layout.putStream(Readable.from([Buffer.from('abc')]), 'x/y', { digest: 'sha256:xyz' }),
    ).rejects.toThrow(/is not valid/);
    // Failed writes leave no temp files behind.
    expect((await fsp.readdir(join(dir, 'oci', 'blobs'))).filter((n) => n !== 'sha256')).toEqual([]);
    expect(await fsp.readdir(join(dir, 'oci', 'blobs', 'sha256'))).toEqual([d.digest.slice(7)]);
  });

  it('puts files by hard link when it can, verifying the digest', async () => {
    const file = join(dir, 'layer.tar');
    await fsp.writeFile(file, 'layer bytes');
    const d = await layout.putFile(file, MEDIA_TYPES.layerTar, { digest: sha('layer bytes') });
    expect(d.digest).toBe(sha('layer bytes'));
    expect((await fsp.stat(layout.path(d.digest))).ino).toBe((await fsp.stat(file)).ino);
    await fsp.writeFile(join(dir, 'other'), 'other');
    await expect(
      layout.putFile(join(dir, 'other'), MEDIA_TYPES.layerTar, { digest: sha('different') }),
    ).rejects.toThrow(/different than/);
    expect(await layout.has(sha('other'))).toBe(false);
  });

  it('writes canonical JSON and reads it back', async () => {
    const d = await layout.putJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: 'x' } }, 'application/json');
    expect(await fsp.readFile(layout.path(d.digest), 'utf8')).toBe(
      '{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}',
    );
    expect(await layout.readJson(d.digest)).toEqual({ a: { c: 'x', d: [1, { y: 2, z: 1 }] }, b: 1 });
    const again = await layout.putJson({ a: { c: 'x', d: [1, { y: 2, z: 1 }] }, b: 1 }, 'application/json');
    expect(again.digest).toBe(d.digest);
  });

  it('open() fails at the end of a blob whose content no longer matches', async () => {
    const d = await layout.putJson({ hello: 'world' }, 'application/json');
    expect((await collect(await layout.open(d.digest))).toString()).toBe('{"hello":"world"}');
    await fsp.writeFile(layout.path(d.digest), '{"hello":"w0rld"}');
    await expect(collect(await layout.open(d.digest))).rejects.toThrow(/different than the actual hash/);
    await expect(layout.open(sha('missing'))).rejects.toThrow(/is missing/);
  });

  it('tags with colons, moves, lists, resolves and untags', async () => {
    const a = await image('app:1.0', 'a');
    const b = await image('base_latest', 'b');
    expect(await layout.listTags()).toEqual(['app:1.0', 'base_latest']);
    expect((await layout.resolveTag('app:1.0')).digest).toBe(a.manifest.digest);
    const read = await layout.readImage('app:1.0');
    expect(read.manifestDigest).toBe(a.manifest.digest);
    expect(read.config.rootfs.diff_ids).toEqual([a.layer.digest]);
    expect(read.manifest.mediaType).toBe(MEDIA_TYPES.manifest);
    await layout.tag('app:1.0', b.manifest);
    const index = JSON.parse(await fsp.readFile(join(dir, 'oci', 'index.json'), 'utf8'));
    expect(
      index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations[REF_NAME]),
    ).toEqual(['app:1.0', 'base_latest']);
    expect(index.manifests[0].digest).toBe(b.manifest.digest);
    expect(await layout.untag('app:1.0')).toBe(true);
    expect(await layout.untag('app:1.0')).toBe(false);
    await expect(layout.resolveTag('app:1.0')).rejects.toThrow(/is not in the OCI layout/);
    await expect(layout.tag('bad tag', b.manifest)).rejects.toSatisfy(isUserError);
  });

  it('serializes concurrent index updates and replaces index.json atomically', async () => {
    const { manifest } = await image('first', 'x');
    const other = await OciLayout.open(join(dir, 'oci')); // a second object on the same layout
    const names = Array.from({ length: 40 }, (_, i) => `t:${i}`);
    let reads = 0;
    let stop = false;
    // A reader polling index.json must always see complete JSON.
    const poller = (async () => {
      while (!stop) {
        JSON.parse(await fsp.readFile(join(dir, 'oci', 'index.json'), 'utf8'));
        reads++;
      }
    })();
    await Promise.all(names.map((n, i) => (i % 2 ? layout : other).tag(n, manifest)));
    stop = true;
    await poller;
    expect(reads).toBeGreaterThan(0);
    expect((await layout.listTags()).sort()).toEqual(['first', ...names].sort());
    expect((await fsp.readdir(join(dir, 'oci'))).sort()).toEqual(['blobs', 'index.json', 'oci-layout']);
  });

  it('gc removes unreferenced blobs and stale temp files, keeping everything reachable', async () => {
    const kept = await image('keep', 'kept layer');
    const dropped = await image('drop', 'dropped layer');
    const loose = await layout.putJson({ loose: true }, 'application/json');
    const stale = join(dir, 'oci', 'blobs', '.tmp-1-dead');
    await fsp.writeFile(stale, 'partial');
    const old = new Date(Date.now() - 3_600_000);
    await fsp.utimes(stale, old, old);
    const fresh = join(dir, 'oci', 'blobs', '.tmp-2-live');
    await fsp.writeFile(fresh, 'in progress');
    await layout.untag('drop');
    const result = await layout.gc();
    expect(result.removed).toEqual(
      [dropped.layer.digest, dropped.config.digest, dropped.manifest.digest, loose.digest].sort(),
    );
    expect(result.tempFiles).toEqual(['.tmp-1-dead']);
    for (const d of [kept.layer, kept.config, kept.manifest]) expect(await layout.has(d.digest)).toBe(true);
    await expect(fsp.stat(fresh)).resolves.toBeTruthy();
    expect(await layout.validate()).toEqual([]);
  });

  it('validate finds missing, truncated and corrupted blobs', async () => {
    const a = await image('a', 'layer a');
    const b = await image('b', 'layer b!');
    expect(await layout.validate()).toEqual([]);
    await fsp.writeFile(layout.path(a.layer.digest), 'layer A'); // same size, other bytes
    await fsp.writeFile(layout.path(b.layer.digest), 'short');
    await fsp.rm(layout.path(b.config.digest));
    const problems = await layout.validate();
    expect(problems.map((p) => [p.digest, p.problem]).sort()).toEqual(
      [
        [a.layer.digest, 'digest'],
        [b.layer.digest, 'size'],
        [b.layer.digest, 'digest'],
        [b.config.digest, 'missing'],
      ].sort(),
    );
  });
});
