// Registries misbehave: 5xx and 429 answers, cut connections, blobs cut off, corrupt or too
// long. Each is retried a bounded number of times and then fails with one clear sentence;
// a blob whose bytes are wrong is never stored, whatever the fault.
import { randomBytes } from 'node:crypto';
import { isUserError } from '@stacker/plugin-api';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { RegistryClient } from './client.js';
import { pullImage } from './copy.js';
import { digestOf, FakeRegistry, type Fault, MemoryStore } from './fake-registry.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const SCALE = Number(process.env.STACKER_FUZZ_SCALE ?? 1);
export const FAULT_RUNS = 60 * SCALE;
const running: FakeRegistry[] = [];
afterEach(async () => {
  while (running.length) await running.pop()!.stop();
});

async function seeded() {
  const r = await new FakeRegistry().start();
  running.push(r);
  const layers = [randomBytes(70_000), randomBytes(3000)].map((b) => ({
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    digest: r.putBlob('app', b),
    size: b.length,
  }));
  const cfg = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { diff_ids: [] } }));
  const config = {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: r.putBlob('app', cfg),
    size: cfg.length,
  };
  r.putManifest('app', 'v1', { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }, OCI_MANIFEST);
  return { r, layers };
}

const client = (r: FakeRegistry, retries = 3) =>
  new RegistryClient({ registry: r.host, insecure: true, retryDelayMs: 1, retries, credentialFiles: [] });

/** Every blob the store holds has the digest it is stored under. */
function allVerified(store: MemoryStore): void {
  for (const [d, b] of store.blobs) expect(digestOf(b.bytes)).toBe(d);
}

describe('registry faults', () => {
  it.each([500, 502, 503, 429] as const)(
    'retries HTTP %i on manifests and blobs, then pulls',
    async (status) => {
      const { r } = await seeded();
      const left = new Map<string, number>();
      r.fault = (_m, path) => {
        const n = left.get(path) ?? 0;
        left.set(path, n + 1);
        return n < 2 ? status : undefined;
      };
      const store = new MemoryStore();
      await pullImage(client(r), 'app', 'v1', store as any);
      allVerified(store);
      expect(r.injected[String(status)]).toBeGreaterThanOrEqual(6);
    },
  );

  it('gives up on a registry that always fails, in one sentence naming the attempts', async () => {
    const { r } = await seeded();
    r.fault = (_m, path) => (path.includes('/blobs/') ? 500 : undefined);
    const store = new MemoryStore();
    const e = await pullImage(client(r, 2), 'app', 'v1', store as any).catch((x) => x);
    expect(isUserError(e)).toBe(true);
    expect(e.message).toMatch(/failed after 3 attempts: HTTP 500 \(FAULT: injected 500\)\.$/);
    expect(e.message.split('\n')).toHaveLength(1);
    allVerified(store);
  });

  it.each(['reset', 'truncate'] as const)('retries a %s blob download from the start', async (kind) => {
    const { r, layers } = await seeded();
    let faults = 0;
    r.fault = (m, path) =>
      m === 'GET' && path.endsWith(layers[0].digest) && faults++ < 2 ? kind : undefined;
    const store = new MemoryStore();
    await pullImage(client(r), 'app', 'v1', store as any);
    allVerified(store);
    expect(store.blobs.has(layers[0].digest)).toBe(true);
    expect(faults).toBe(3);
  });

  it.each(['corrupt', 'extra'] as const)('never stores a %s blob, and says so', async (kind) => {
    const { r, layers } = await seeded();
    r.fault = (m, path) => (m === 'GET' && path.endsWith(layers[1].digest) ? kind : undefined);
    const store = new MemoryStore();
    const e = await pullImage(client(r), 'app', 'v1', store as any).catch((x) => x);
    expect(isUserError(e)).toBe(true);
    expect(e.message).toMatch(kind === 'corrupt' ? /is different than the actual hash/ : /bytes/);
    expect(store.blobs.has(layers[1].digest)).toBe(false);
    allVerified(store);
  });

  it('random fault schedules: a verified image or a clear error, never a wrong blob', async () => {
    const fault = fc.option(
      fc.constantFrom<Fault>('reset', 'truncate', 'corrupt', 'extra', 500, 503, 429, 404),
      {
        freq: 2,
      },
    );
    let injected = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fault, { minLength: 1, maxLength: 12 }), async (plan) => {
        const { r } = await seeded();
        let i = 0;
        r.fault = () => plan[i++ % plan.length] ?? undefined;
        const store = new MemoryStore();
        try {
          await pullImage(client(r, 2), 'app', 'v1', store as any);
        } catch (e) {
          if (!isUserError(e)) throw e;
          expect((e as Error).message).not.toMatch(/\n/);
        }
        allVerified(store);
        injected += Object.values(r.injected).reduce((a, b) => a + b, 0);
        await r.stop();
        running.splice(running.indexOf(r), 1);
      }),
      { numRuns: FAULT_RUNS },
    );
    expect(injected).toBeGreaterThan(FAULT_RUNS);
    console.log(`registry faults injected: ${injected}`);
  });
});
