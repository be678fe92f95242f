// A base tarball imported for the first time: one decompression gives the diff id and the
// unpacked snapshot. The diff id must cover the whole tar (GNU tar pads past the
// end-of-archive blocks, which the unpacker never reads), the layer must be unpacked as a
// plain unpack would, and a failure on either side must be reported and leave nothing.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { OciLayout, unpackLayer } from '@stacker/oci';
import { MEDIA_TYPES } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { diffIdAwareBlobs, type LayerStager, rememberDiffId } from './diffid.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'stacker-diffid-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A stager unpacking into directories, recording what it was asked. */
function dirStager(known: Set<string> = new Set()) {
  const calls = { staged: [] as string[], offered: [] as [string, string][], dropped: [] as string[] };
  let n = 0;
  const stager: LayerStager = {
    has: async (diffId) => known.has(diffId),
    async stage(tar: Readable) {
      const key = join(dir, `staged-${++n}`);
      calls.staged.push(key);
      try {
        await unpackLayer(tar, key, { whiteouts: 'delete' });
      } catch (e) {
        rmSync(key, { recursive: true, force: true });
        throw e;
      }
      return key;
    },
    async offer(diffId, key) {
      calls.offered.push([diffId, key]);
    },
    async drop(key) {
      calls.dropped.push(key);
      rmSync(key, { recursive: true, force: true });
    },
  };
  return { stager, calls };
}

/** A gzip tarball of a small tree, as GNU tar makes it (padded to 10 KiB records). */
function tarball(): string {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'etc/deep'), { recursive: true });
  writeFileSync(join(src, 'etc/hostname'), 'box\n');
  writeFileSync(join(src, 'etc/deep/big'), Buffer.alloc(3 << 20, 7));
  const out = join(dir, 'base.tar.gz');
  execFileSync('tar', ['-czf', out, '--owner=0', '--group=0', '-C', src, 'etc']);
  return out;
}

async function put(stager: LayerStager | undefined) {
  const layout = await OciLayout.init(join(dir, 'oci'));
  const found: Promise<string>[] = [];
  const blobs = diffIdAwareBlobs(layout, join(dir, 'diffids'), (_d, id) => found.push(id), stager);
  return { blobs, found, layout };
}

describe('a gzip base tarball put into the layout', () => {
  it('is unpacked by the decompression that computes its diff id, trailing padding included', async () => {
    const file = tarball();
    const tarBytes = gunzipSync(readFileSync(file));
    expect(tarBytes.length % 10240).toBe(0); // GNU tar's records: zeros after the end blocks
    const expected = `sha256:${createHash('sha256').update(tarBytes).digest('hex')}`;
    const { stager, calls } = dirStager();
    const { blobs, found } = await put(stager);
    const [a, b] = await Promise.all([
      blobs.putFile(file, MEDIA_TYPES.layerGzip),
      blobs.putFile(file, MEDIA_TYPES.layerGzip),
    ]);
    expect(a.digest).toBe(b.digest);
    expect(await Promise.all(found)).toEqual([expected, expected]);
    // one unpack for both, offered under the diff id, with the tree as tar -x gives it
    expect(calls.staged).toHaveLength(1);
    expect(calls.offered).toEqual([[expected, calls.staged[0]]]);
    expect(readFileSync(join(calls.staged[0], 'etc/hostname'), 'utf8')).toBe('box\n');
    expect((await fsp.stat(join(calls.staged[0], 'etc/deep/big'))).size).toBe(3 << 20);
    // and remembered, as without a stager
    expect(readFileSync(join(dir, 'diffids', a.digest.slice('sha256:'.length)), 'utf8').trim()).toBe(
      expected,
    );
  });

  it('is not unpacked again when its diff id is remembered and that snapshot exists', async () => {
    const file = tarball();
    const digest = `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;
    const diffId = `sha256:${createHash('sha256')
      .update(gunzipSync(readFileSync(file)))
      .digest('hex')}`;
    await rememberDiffId(join(dir, 'diffids'), digest, diffId);
    const { stager, calls } = dirStager(new Set([diffId]));
    const { blobs, found } = await put(stager);
    await blobs.putFile(file, MEDIA_TYPES.layerGzip);
    expect(await found[0]).toBe(diffId);
    expect(calls.staged).toEqual([]);
  });

  it('a corrupt gzip fails the diff id and leaves no staged snapshot', async () => {
    const file = tarball();
    const bytes = readFileSync(file);
    const bad = join(dir, 'bad.tar.gz');
    writeFileSync(bad, Buffer.concat([bytes.subarray(0, bytes.length >> 1), Buffer.alloc(64, 0x55)]));
    const { stager, calls } = dirStager();
    const { blobs, found } = await put(stager);
    await blobs.putFile(bad, MEDIA_TYPES.layerGzip);
    await expect(found[0]).rejects.toThrow();
    expect(calls.offered).toEqual([]);
    for (const k of calls.staged) await expect(fsp.access(k)).rejects.toThrow();
  });

  it('a layer the unpacker refuses fails with the unpacker error, and nothing is offered', async () => {
    const src = join(dir, 'evil');
    mkdirSync(src);
    writeFileSync(join(src, 'x'), 'x');
    const file = join(dir, 'evil.tar.gz');
    // a member named ../<this test's dir>-escaped
    const escaped = `${basename(dir)}-escaped`;
    execFileSync('tar', ['-czf', file, '-P', '--transform', `s,^x$,../${escaped},`, '-C', src, 'x']);
    expect(execFileSync('tar', ['-tzf', file, '-P'], { encoding: 'utf8' })).toBe(`../${escaped}\n`);
    const { stager, calls } = dirStager();
    const { blobs, found } = await put(stager);
    await blobs.putFile(file, MEDIA_TYPES.layerGzip);
    await expect(found[0]).rejects.toMatchObject({ code: 'OCI_UNSAFE_PATH' });
    expect(calls.offered).toEqual([]);
    await expect(fsp.access(join(dir, '..', escaped))).rejects.toThrow();
    await expect(fsp.access(join(calls.staged[0], '..', escaped))).rejects.toThrow();
  });
});
