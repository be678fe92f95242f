import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { digestOf, FakeRegistry, MemoryStore, seedImage } from './fake-registry.js';
import { publish } from './publish.js';

const running: FakeRegistry[] = [];
afterEach(async () => {
  while (running.length) await running.pop()!.stop();
});

function recorder() {
  const lines: string[] = [];
  const rec = (m: unknown) => lines.push(String(m));
  return { lines, log: { debug() {}, info: rec, warn: rec, error: rec } };
}

const files = [
  {
    path: '/p/stacker.yaml',
    layers: [
      { name: 'base', buildOnly: true },
      { name: 'app', buildOnly: false },
      { name: 'tool', buildOnly: false },
    ],
  },
];

describe('publish', () => {
  it('shows what it would publish, in stacker words', async () => {
    const src = new MemoryStore();
    await seedImage(src, 'app', [randomBytes(10)]);
    await seedImage(src, 'tool', [randomBytes(10)]);
    const { lines, log } = recorder();
    const done = await publish({
      files,
      source: src,
      url: 'docker://h:5000/proj/',
      tags: ['v1', 'latest'],
      showOnly: true,
      log,
    });
    expect(done).toEqual([]);
    expect(lines).toEqual([
      'will not publish: /p/stacker.yaml build_only base',
      'would publish: /p/stacker.yaml app to docker://h:5000/proj/app:v1',
      'would publish: /p/stacker.yaml app to docker://h:5000/proj/app:latest',
      'would publish: /p/stacker.yaml tool to docker://h:5000/proj/tool:v1',
      'would publish: /p/stacker.yaml tool to docker://h:5000/proj/tool:latest',
    ]);
    const oci = recorder();
    await publish({
      files,
      source: src,
      url: 'oci:/out',
      tags: ['v1'],
      images: ['tool'],
      showOnly: true,
      log: oci.log,
    });
    expect(oci.lines).toEqual([
      'will not publish: /p/stacker.yaml build_only base',
      'would publish: /p/stacker.yaml tool to oci:/out:tool_v1',
    ]);
  });

  it('refuses stanzas that were never built unless forced, and needs tags', async () => {
    const src = new MemoryStore();
    await seedImage(src, 'app', [randomBytes(10)]);
    await expect(
      publish({ files, source: src, url: 'docker://h/p', tags: ['v1'], showOnly: true }),
    ).rejects.toThrow(
      'layer needs to be rebuilt before publishing: tool is not in the OCI layout /memory; run stacker build first',
    );
    const { lines, log } = recorder();
    await publish({
      files,
      source: src,
      url: 'docker://h/p',
      tags: ['v1'],
      showOnly: true,
      force: true,
      log,
    });
    expect(lines).toContain('not publishing tool: it is not in the OCI layout /memory (never built)');
    await expect(publish({ files, source: src, url: 'docker://h/p', tags: [] })).rejects.toThrow(
      "can't save OCI images in /p/stacker.yaml since list of tags is empty",
    );
    await expect(publish({ files, source: src, url: 'ftp://x', tags: ['v1'] })).rejects.toThrow(
      /--url must be docker:/,
    );
    await expect(
      publish({ files, source: src, url: 'docker://h/p', tags: ['v1'], username: 'u' }),
    ).rejects.toThrow(/both --username and --password/);
  });

  it('pushes to NAME:TAG under the URL, and only missing blobs the second time', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    const src = new MemoryStore();
    const shared = randomBytes(500);
    const app = await seedImage(src, 'app', [shared, randomBytes(10)]);
    await seedImage(src, 'tool', [shared, randomBytes(20)]);
    const opts = {
      files,
      source: src,
      url: `docker://${r.host}/proj`,
      tags: ['v1'],
      skipTls: true,
      client: { credentialFiles: [] },
    };
    const first = await publish(opts);
    expect(first.map((p) => p.destination)).toEqual([
      `docker://${r.host}/proj/app:v1`,
      `docker://${r.host}/proj/tool:v1`,
    ]);
    expect(first[1].mounted).toEqual([digestOf(shared)]);
    expect(digestOf(r.manifests.get('proj/app')!.get('v1')!.bytes)).toBe(app.descriptor.digest);
    const second = await publish(opts);
    expect(second.flatMap((p) => [...p.pushed, ...p.mounted])).toEqual([]);
  });

  it('sends the blobs once for several tags', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    const src = new MemoryStore();
    const app = await seedImage(src, 'app', [randomBytes(50)]);
    await seedImage(src, 'tool', [randomBytes(50)]);
    const { lines, log } = recorder();
    await publish({
      files,
      source: src,
      url: `docker://${r.host}/p`,
      tags: ['v1', 'v2'],
      images: ['app'],
      skipTls: true,
      log,
      client: { credentialFiles: [] },
    });
    expect(lines.filter((l) => l.startsWith('publishing '))).toEqual([
      `publishing /p/stacker.yaml app to docker://${r.host}/p/app:v1`,
      `publishing /p/stacker.yaml app to docker://${r.host}/p/app:v2`,
    ]);
    expect(r.requests.filter((q) => q.startsWith('HEAD /v2/p/app/blobs/')).length).toBe(2);
    expect(digestOf(r.manifests.get('p/app')!.get('v2')!.bytes)).toBe(app.descriptor.digest);
  });

  it('copies into an oci layout as NAME_TAG', async () => {
    const src = new MemoryStore();
    const app = await seedImage(src, 'app', [randomBytes(10)]);
    await seedImage(src, 'tool', [randomBytes(10)]);
    const out = new MemoryStore();
    let opened = '';
    await publish({
      files,
      source: src,
      url: 'oci:/out',
      tags: ['v1'],
      openLayout: async (dir) => {
        opened = dir;
        return out;
      },
    });
    expect(opened).toBe('/out');
    expect(out.tags.get('app_v1')?.digest).toBe(app.descriptor.digest);
    expect([...out.tags.keys()]).toEqual(['app_v1', 'tool_v1']);
    expect(out.blobs.has(app.config.digest)).toBe(true);
  });
});
