import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@stacker/plugin-api';
import { digestOf, FakeRegistry, MemoryStore } from '@stacker/registry/testing';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { dockerSource } from './index.js';

// the source keeps pulled blobs in <cacheDir>/layer-bases
const cacheDir = mkdtempSync(join(tmpdir(), 'source-docker-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

const running: FakeRegistry[] = [];
afterEach(async () => {
  while (running.length) await running.pop()!.stop();
});

function ctx(blobs: MemoryStore, signal = new AbortController().signal) {
  return {
    stanza: 'base',
    stackerFile: '/p/stacker.yaml',
    resolvePath: (p: string) => p,
    cacheDir,
    blobs: blobs as any,
    platform: { os: 'linux', architecture: 'amd64' },
    log: silentLogger,
    builtImage: async () => {
      throw new Error('no');
    },
    imageFromLayers: async () => {
      throw new Error('no');
    },
    signal,
  };
}

function seed(r: FakeRegistry, tag: string) {
  const layer = randomBytes(1000);
  const l = {
    mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
    digest: r.putBlob('lib/bb', layer),
    size: layer.length,
  };
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [l.digest] },
      config: { Env: [tag] },
    }),
  );
  const c = {
    mediaType: 'application/vnd.docker.container.image.v1+json',
    digest: r.putBlob('lib/bb', cfg),
    size: cfg.length,
  };
  const mt = 'application/vnd.docker.distribution.manifest.v2+json';
  return r.putManifest('lib/bb', tag, { schemaVersion: 2, mediaType: mt, config: c, layers: [l] }, mt);
}

describe('docker source', () => {
  it('validates from:', () => {
    expect(
      dockerSource.schema.safeParse({ type: 'docker', url: 'docker://h/x', insecure: true }).success,
    ).toBe(true);
    expect(
      dockerSource.schema.safeParse({ type: 'docker', url: 'docker://h/x', insecure: 'yes' }).success,
    ).toBe(false);
  });

  it('resolves a registry image into the blob store, docker media types kept', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    const m = seed(r, 'latest');
    const store = new MemoryStore();
    const from = { type: 'docker' as const, url: `docker://${r.host}/lib/bb:latest`, insecure: true };
    const base = await dockerSource.resolve(from, ctx(store));
    expect(base.manifestDigest).toBe(m.digest);
    expect(base.identity).toBe(m.digest);
    expect(base.layers[0].mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    expect(digestOf(store.blobs.get(m.digest)!.bytes)).toBe(m.digest);
    expect(base.config.rootfs.diff_ids.length).toBe(1);
    expect(await dockerSource.identity!(from, ctx(store))).toBe(m.digest);
    // the tag moves: identity notices
    const m2 = seed(r, 'latest');
    expect(await dockerSource.identity!(from, ctx(store))).toBe(m2.digest);
  });

  it('reports byte progress of its downloads through ctx.progress, when the host has it', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    const m = seed(r, 'latest');
    const from = { type: 'docker' as const, url: `docker://${r.host}/lib/bb:latest`, insecure: true };
    const calls: Array<[string, number, number]> = [];
    const c = {
      ...ctx(new MemoryStore()),
      progress: (l: string, d: number, t: number) => calls.push([l, d, t]),
    };
    await dockerSource.resolve(from, c);
    const labels = [...new Set(calls.map(([l]) => l))];
    expect(labels.length).toBe(2); // config and layer; the manifest is not a blob download
    for (const l of labels) {
      expect(l).toMatch(/^sha256:[0-9a-f]{12}$/);
      const last = calls.filter(([x]) => x === l).at(-1)!;
      expect(last[1]).toBe(last[2]);
    }
    expect(m.digest).toMatch(/^sha256:/);
    // without the hook (an older host) it works the same
    await dockerSource.resolve(from, ctx(new MemoryStore()));
  });

  it('errors name the stanza, the registry and the tag', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    seed(r, 'latest');
    const from = { type: 'docker' as const, url: `docker://${r.host}/lib/bb:nope`, insecure: true };
    await expect(dockerSource.resolve(from, ctx(new MemoryStore()))).rejects.toThrow(
      `base: registry ${r.host} repository lib/bb has no tag "nope" (404 not found).`,
    );
    await expect(
      dockerSource.resolve({ ...from, url: 'docker://h/UPPER' }, ctx(new MemoryStore())),
    ).rejects.toThrow(/^base: "docker:\/\/h\/UPPER" is not a valid/);
  });
});
