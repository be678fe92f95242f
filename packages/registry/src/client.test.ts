import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { type BlobProgress, formatBytes, RegistryClient, retryAfterMs } from './client.js';
import { pullImage, pushImage } from './copy.js';
import { digestOf, FakeRegistry, MemoryStore, seedImage } from './fake-registry.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const running: FakeRegistry[] = [];

async function registry(opts?: ConstructorParameters<typeof FakeRegistry>[0]) {
  const r = await new FakeRegistry(opts).start();
  running.push(r);
  return r;
}
afterEach(async () => {
  while (running.length) await running.pop()!.stop();
});

function client(r: FakeRegistry, extra: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}) {
  return new RegistryClient({
    registry: r.host,
    insecure: true,
    retryDelayMs: 1,
    credentialFiles: [],
    ...extra,
  });
}

/** An image in the fake registry at repo:tag; returns its parts. */
function seedRemote(
  r: FakeRegistry,
  repo: string,
  tag: string,
  opts: { docker?: boolean; layers?: Buffer[] } = {},
) {
  const layers = (opts.layers ?? [randomBytes(3000), randomBytes(5000)]).map((b) => ({
    mediaType: opts.docker
      ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
      : 'application/vnd.oci.image.layer.v1.tar+gzip',
    digest: r.putBlob(repo, b),
    size: b.length,
  }));
  const configBytes = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }),
  );
  const config = {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: r.putBlob(repo, configBytes),
    size: configBytes.length,
  };
  const mediaType = opts.docker ? DOCKER_MANIFEST : OCI_MANIFEST;
  const m = r.putManifest(repo, tag, { schemaVersion: 2, mediaType, config, layers }, mediaType);
  return { ...m, config, layers };
}

describe('pulling', () => {
  it('pulls manifest, config and layers into the store, and skips what is there', async () => {
    const r = await registry();
    const img = seedRemote(r, 'lib/busybox', 'latest', { docker: true });
    const store = new MemoryStore();
    const c = client(r);
    const got = await pullImage(c, 'lib/busybox', 'latest', store as any);
    expect(got.manifestDigest).toBe(img.digest);
    expect(got.manifestMediaType).toBe(DOCKER_MANIFEST);
    expect(got.manifest.layers.map((l) => l.mediaType)).toEqual([
      'application/vnd.docker.image.rootfs.diff.tar.gzip',
      'application/vnd.docker.image.rootfs.diff.tar.gzip',
    ]);
    expect(store.blobs.get(img.digest)?.bytes.equals(img.bytes)).toBe(true);
    for (const l of img.layers) expect(digestOf(store.blobs.get(l.digest)!.bytes)).toBe(l.digest);
    expect(got.pulled.length).toBe(3);
    r.requests.length = 0;
    const again = await pullImage(c, 'lib/busybox', 'latest', store as any);
    expect(again.pulled).toEqual([]);
    expect(r.requests.filter((q) => q.includes('/blobs/'))).toEqual([]);
  });

  it('picks the platform from an index', async () => {
    const r = await registry();
    const amd = seedRemote(r, 'multi', 'amd');
    const arm = seedRemote(r, 'multi', 'arm');
    r.putManifest(
      'multi',
      'latest',
      {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          {
            mediaType: OCI_MANIFEST,
            digest: arm.digest,
            size: arm.size,
            platform: { os: 'linux', architecture: 'arm64' },
          },
          {
            mediaType: OCI_MANIFEST,
            digest: amd.digest,
            size: amd.size,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      },
      'application/vnd.oci.image.index.v1+json',
    );
    const c = client(r);
    expect((await c.getImage('multi', 'latest', { os: 'linux', architecture: 'arm64' })).raw.digest).toBe(
      arm.digest,
    );
    expect((await c.getImage('multi', 'latest', { os: 'linux', architecture: 'amd64' })).raw.digest).toBe(
      amd.digest,
    );
    expect(await c.resolveDigest('multi', 'latest', { os: 'linux', architecture: 'arm64' })).toBe(arm.digest);
    await expect(c.getImage('multi', 'latest', { os: 'linux', architecture: 's390x' })).rejects.toThrow(
      /has no image for linux\/s390x \(it has linux\/arm64, linux\/amd64\)/,
    );
  });

  it('says which tag is missing', async () => {
    const r = await registry();
    seedRemote(r, 'proj/a', 'v1');
    await expect(client(r).getImage('proj/a', 'v9')).rejects.toThrow(
      `registry ${r.host} repository proj/a has no tag "v9" (404 not found).`,
    );
  });

  it('never stores a blob whose digest is wrong, and names both digests', async () => {
    const r = await registry();
    const img = seedRemote(r, 'a', 'latest');
    r.corrupt.add(img.layers[1].digest);
    const store = new MemoryStore();
    const err = await pullImage(client(r), 'a', 'latest', store as any).catch((e) => e);
    expect(err.message).toContain(`the expected hash ${img.layers[1].digest}`);
    expect(err.message).toMatch(/is different than the actual hash sha256:[0-9a-f]{64}; nothing was stored/);
    expect(err.userError).toBe(true);
    expect(store.blobs.has(img.layers[1].digest)).toBe(false);
  });

  it('retries a download that breaks off, and 5xx answers', async () => {
    const r = await registry();
    const img = seedRemote(r, 'a', 'latest', { layers: [randomBytes(200_000)] });
    r.truncateOnce.add(img.layers[0].digest);
    r.failNext = 2;
    const store = new MemoryStore();
    await pullImage(client(r), 'a', 'latest', store as any);
    expect(digestOf(store.blobs.get(img.layers[0].digest)!.bytes)).toBe(img.layers[0].digest);
  });

  it('waits as long as a 503 says in Retry-After before trying again', async () => {
    const r = await registry();
    seedRemote(r, 'a', 'latest');
    r.failNext = 1;
    r.retryAfter = '1';
    const t0 = Date.now();
    expect((await client(r).getImage('a', 'latest')).manifest.layers.length).toBe(2);
    // retryDelayMs is 1 ms in these tests: only the header makes it wait a second
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    expect(retryAfterMs('2')).toBe(2000);
    expect(retryAfterMs(new Date(Date.now() + 5000).toUTCString())).toBeGreaterThan(3000);
    expect(retryAfterMs('3600')).toBe(60_000);
    expect(retryAfterMs('soon')).toBeUndefined();
    expect(retryAfterMs(null)).toBeUndefined();
  });

  it('gives up after a bounded number of retries with one sentence', async () => {
    const r = await registry();
    seedRemote(r, 'a', 'latest');
    r.failNext = 100;
    await expect(client(r, { retries: 2 }).getImage('a', 'latest')).rejects.toThrow(
      `registry ${r.host} repository a: fetching tag "latest" failed after 3 attempts: HTTP 503 (UNAVAILABLE: try later).`,
    );
    r.failNext = 0;
    r.resetNext = 1;
    expect((await client(r).getImage('a', 'latest')).manifest.layers.length).toBe(2);
  });

  it('says when a registry does not speak TLS, without retrying', async () => {
    const r = await registry();
    seedRemote(r, 'a', 'latest');
    const c = new RegistryClient({ registry: r.host, retryDelayMs: 1, credentialFiles: [] });
    await expect(c.getImage('a', 'latest')).rejects.toThrow(
      /repository a: fetching tag "latest" failed \(ERR_SSL_WRONG_VERSION_NUMBER\): the registry does not seem to speak TLS; use --skip-tls/,
    );
    expect(r.requests).toEqual([]);
  });

  it('says when nothing listens', async () => {
    const r = await registry();
    const host = r.host;
    await r.stop();
    running.pop();
    const c = new RegistryClient({
      registry: host,
      insecure: true,
      retries: 1,
      retryDelayMs: 1,
      credentialFiles: [],
    });
    await expect(c.getImage('a', 'latest')).rejects.toThrow(
      /repository a: fetching tag "latest" failed after 2 attempts: .*ECONNREFUSED/,
    );
  });
});

describe('authentication', () => {
  it('gets bearer tokens from the challenge and caches them per scope', async () => {
    const r = await registry({ auth: 'bearer', users: { alice: 'pw' } });
    seedRemote(r, 'a', 'latest');
    const c = client(r, { username: 'alice', password: 'pw' });
    const store = new MemoryStore();
    await pullImage(c, 'a', 'latest', store as any);
    await pullImage(c, 'a', 'latest', store as any);
    expect(r.tokenRequests).toEqual(['?service=fake&scope=repository%3Aa%3Apull']);
  });

  it('401 names the credentials tried, never the password', async () => {
    const r = await registry({ auth: 'bearer', users: { alice: 'pw' } });
    seedRemote(r, 'a', 'latest');
    const err = await client(r, { username: 'alice', password: 'wrong-secret' })
      .getImage('a', 'latest')
      .catch((e) => e);
    expect(err.message).toContain(
      `registry ${r.host} repository a: fetching tag "latest" was refused (401 unauthorized) with the credentials of user "alice" from --username/--password`,
    );
    expect(err.message).not.toContain('wrong-secret');
    const anon = await client(r)
      .getImage('a', 'latest')
      .catch((e) => e);
    expect(anon.message).toContain('was refused (401 unauthorized) with no credentials');
  });

  it('does basic auth when the registry asks for it', async () => {
    const r = await registry({ auth: 'basic', users: { bob: 'pw' } });
    seedRemote(r, 'a', 'latest');
    expect(
      (await client(r, { username: 'bob', password: 'pw' }).getImage('a', 'latest')).manifest.layers.length,
    ).toBe(2);
    const err = await client(r, { username: 'bob', password: 'nope' })
      .getImage('a', 'latest')
      .catch((e) => e);
    expect(err.message).toMatch(/refused \(401 unauthorized\) with the credentials of user "bob"/);
    expect(err.message).not.toContain('nope');
  });
});

describe('pushing', () => {
  it('uploads monolithic and chunked blobs, then the manifest byte for byte', async () => {
    const r = await registry({ auth: 'bearer', users: { alice: 'pw' } });
    const src = new MemoryStore();
    const img = await seedImage(src, 'one', [randomBytes(100), randomBytes(70_000)]);
    const c = client(r, { username: 'alice', password: 'pw', chunkThreshold: 1000, chunkSize: 16_000 });
    const s = await pushImage(src as any, img.descriptor, c, 'proj/one', ['v1', 'v2']);
    expect(s.pushed.sort()).toEqual([img.config.digest, ...img.layers.map((l) => l.digest)].sort());
    expect(r.requests.filter((q) => q.startsWith('PATCH')).length).toBe(5);
    for (const l of img.layers) expect(digestOf(r.blobs.get(l.digest)!)).toBe(l.digest);
    const m = r.manifests.get('proj/one')!;
    expect(digestOf(m.get('v1')!.bytes)).toBe(img.descriptor.digest);
    expect(digestOf(m.get('v2')!.bytes)).toBe(img.descriptor.digest);
  });

  it('skips blobs the repository has and mounts those of another repository', async () => {
    const r = await registry({ auth: 'bearer', users: { alice: 'pw' } });
    const src = new MemoryStore();
    const img = await seedImage(src, 'one', [randomBytes(100), randomBytes(200)]);
    const c = client(r, { username: 'alice', password: 'pw' });
    await pushImage(src as any, img.descriptor, c, 'proj/a', ['v1']);
    r.requests.length = 0;
    const again = await pushImage(src as any, img.descriptor, c, 'proj/a', ['v1']);
    expect(again.pushed).toEqual([]);
    expect(again.existing.length).toBe(3);
    expect(r.requests.filter((q) => q.startsWith('POST') || q.startsWith('PATCH'))).toEqual([]);
    const other = await pushImage(src as any, img.descriptor, c, 'proj/b', ['v1']);
    expect(other.mounted.length).toBe(3);
    expect(other.pushed).toEqual([]);
    expect(
      r.requests.some((q) => q.includes(`mount=${encodeURIComponent(img.layers[0].digest)}&from=proj%2Fa`)),
    ).toBe(true);
  });

  it('restarts an upload after a 5xx', async () => {
    const r = await registry();
    const src = new MemoryStore();
    const img = await seedImage(src, 'one', [randomBytes(5000)]);
    const c = client(r, { chunkThreshold: 1000, chunkSize: 2000 });
    const real = r.requests;
    let patches = 0;
    const origPush = real.push.bind(real);
    real.push = (...items: string[]) => {
      if (items[0].startsWith('PATCH') && ++patches === 2) r.failNext = 1;
      return origPush(...items);
    };
    await pushImage(src as any, img.descriptor, c, 'x', ['latest']);
    expect(digestOf(r.blobs.get(img.layers[0].digest)!)).toBe(img.layers[0].digest);
  });
});

describe('progress', () => {
  /** The reports for each digest, in order. */
  function collect() {
    const seen = new Map<string, BlobProgress[]>();
    const onProgress = (p: BlobProgress) => {
      const list = seen.get(p.digest) ?? [];
      list.push(p);
      seen.set(p.digest, list);
    };
    return { seen, onProgress };
  }
  function rising(list: BlobProgress[]): boolean {
    return list.every((p, i) => i === 0 || p.done >= list[i - 1].done);
  }

  it('reports bytes of every download, ending at the size', async () => {
    const r = await registry();
    const img = seedRemote(r, 'lib/bb', 'latest', { layers: [randomBytes(600_000)] });
    const { seen, onProgress } = collect();
    await pullImage(client(r), 'lib/bb', 'latest', new MemoryStore() as any, { onProgress });
    const layer = seen.get(img.layers[0].digest)!;
    expect(layer.length).toBeGreaterThan(1);
    expect(rising(layer)).toBe(true);
    expect(layer.at(-1)).toMatchObject({
      direction: 'pull',
      repository: 'lib/bb',
      done: 600_000,
      total: 600_000,
    });
    expect(seen.get(img.config.digest)!.at(-1)!.done).toBe(img.config.size);
  });

  it('reports bytes of monolithic and chunked uploads from the client option, nothing for skipped blobs', async () => {
    const r = await registry();
    const src = new MemoryStore();
    const img = await seedImage(src, 'one', [randomBytes(1_000_000), randomBytes(3_000_000)]);
    const { seen, onProgress } = collect();
    const c = client(r, { chunkThreshold: 2_000_000, chunkSize: 1_000_000, onProgress });
    await pushImage(src as any, img.descriptor, c, 'p', ['v1']);
    for (const l of img.layers) {
      const list = seen.get(l.digest)!;
      expect(list.length).toBeGreaterThan(3);
      expect(rising(list)).toBe(true);
      expect(list[0].done).toBe(0);
      expect(list.at(-1)).toMatchObject({ direction: 'push', done: l.size, total: l.size });
    }
    seen.clear();
    await pushImage(src as any, img.descriptor, c, 'p', ['v1']);
    expect(seen.size).toBe(0);
  });

  it('formats sizes for people', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(31_457_280)).toBe('30 MiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
  });
});

describe('streams', () => {
  it('openBlob streams verified content', async () => {
    const r = await registry();
    const img = seedRemote(r, 'a', 'latest');
    const s = await client(r).openBlob('a', img.layers[0]);
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    expect(digestOf(Buffer.concat(chunks))).toBe(img.layers[0].digest);
    r.corrupt.add(img.layers[0].digest);
    const bad = await client(r).openBlob('a', img.layers[0]);
    await expect(
      (async () => {
        for await (const _ of bad);
      })(),
    ).rejects.toThrow(/different than the actual hash/);
    expect(Readable).toBeDefined();
  });
});
