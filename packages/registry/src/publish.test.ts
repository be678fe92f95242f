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

  it('publishes every --layer-type: NAME-squashfs goes to TAG-squashfs, as stacker names it', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    const src = new MemoryStore();
    const app = await seedImage(src, 'app', [randomBytes(40)]);
    // the squashfs flavour, which the build tags NAME-squashfs
    const sq = await seedImage(src, 'app-squashfs', [randomBytes(30)]);
    await seedImage(src, 'tool', [randomBytes(10)]);
    const { lines, log } = recorder();
    const one = [{ path: '/p/stacker.yaml', layers: [{ name: 'app', buildOnly: false }] }];
    const done = await publish({
      files: one,
      source: src,
      url: `docker://${r.host}/p`,
      tags: ['v1', 'latest'],
      layerTypes: ['tar', 'squashfs'],
      skipTls: true,
      log,
      client: { credentialFiles: [] },
    });
    expect(done.map((d) => d.destination)).toEqual([
      `docker://${r.host}/p/app:v1`,
      `docker://${r.host}/p/app:latest`,
      `docker://${r.host}/p/app:v1-squashfs`,
      `docker://${r.host}/p/app:latest-squashfs`,
    ]);
    expect(lines).toContain(
      `publishing /p/stacker.yaml app-squashfs to docker://${r.host}/p/app:v1-squashfs`,
    );
    const tags = r.manifests.get('p/app')!;
    expect(digestOf(tags.get('v1')!.bytes)).toBe(app.descriptor.digest);
    expect(digestOf(tags.get('latest-squashfs')!.bytes)).toBe(sq.descriptor.digest);

    // squashfs only, to an oci: layout: NAME_TAG-squashfs
    const out = new MemoryStore();
    await publish({
      files: one,
      source: src,
      url: 'oci:/out',
      tags: ['v1'],
      layerTypes: ['squashfs'],
      openLayout: async () => out,
    });
    expect([...out.tags.keys()]).toEqual(['app_v1-squashfs']);
    expect(out.tags.get('app_v1-squashfs')?.digest).toBe(sq.descriptor.digest);

    // a stanza without its squashfs image is refused before anything is pushed
    const before = r.requests.length;
    await expect(
      publish({
        files,
        source: src,
        url: `docker://${r.host}/q`,
        tags: ['v1'],
        layerTypes: ['squashfs'],
        skipTls: true,
        client: { credentialFiles: [] },
      }),
    ).rejects.toThrow(
      'layer needs to be rebuilt before publishing: tool has no squashfs image (tool-squashfs) in the OCI layout /memory; run stacker build --layer-type squashfs first',
    );
    expect(r.requests.length).toBe(before);
  });

  it('refuses stale stanzas before pushing anything, unless forced', async () => {
    const r = await new FakeRegistry().start();
    running.push(r);
    const src = new MemoryStore();
    await seedImage(src, 'app', [randomBytes(10)]);
    const tool = await seedImage(src, 'tool', [randomBytes(10)]);
    const seen: string[] = [];
    const check = async (s: {
      file: string;
      name: string;
      layerType: string;
      descriptor: { digest: string };
    }) => {
      seen.push(`${s.file} ${s.name} ${s.layerType} ${s.descriptor.digest}`);
      return s.name === 'tool' ? 'changed in /p/stacker.yaml since it was built' : undefined;
    };
    const opts = {
      files,
      source: src,
      url: `docker://${r.host}/p`,
      tags: ['v1'],
      skipTls: true,
      check,
      client: { credentialFiles: [] },
    };
    await expect(publish(opts)).rejects.toThrow(
      'layer needs to be rebuilt before publishing: tool changed in /p/stacker.yaml since it was built; run stacker build first, or publish it as it was built with --force',
    );
    expect(seen).toContain(`/p/stacker.yaml tool tar ${tool.descriptor.digest}`);
    expect(r.requests).toEqual([]);
    const { lines, log } = recorder();
    const done = await publish({ ...opts, force: true, log });
    expect(lines).toContain(
      'publishing tool as it was built, though changed in /p/stacker.yaml since it was built (--force)',
    );
    expect(done.map((d) => d.name)).toEqual(['app', 'tool']);
  });

  it('with bearer tokens, the password is in no log line, result, manifest or blob', async () => {
    const password = 'S3cret-Bearer-Pass';
    const r = await new FakeRegistry({ auth: 'bearer', users: { alice: password } }).start();
    running.push(r);
    const src = new MemoryStore();
    await seedImage(src, 'app', [randomBytes(30)]);
    await seedImage(src, 'tool', [randomBytes(30)]);
    const lines: string[] = [];
    const rec = (...m: unknown[]) =>
      lines.push(m.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(' '));
    const log = { debug: rec, info: rec, warn: rec, error: rec };
    const done = await publish({
      files,
      source: src,
      url: `docker://${r.host}/p`,
      tags: ['v1'],
      skipTls: true,
      username: 'alice',
      password,
      log,
      client: { credentialFiles: [] },
    });
    expect(done.length).toBe(2);
    expect(r.tokenRequests.length).toBeGreaterThan(0);
    const secrets = [password, Buffer.from(`alice:${password}`).toString('base64')];
    const everything = [
      ...lines,
      JSON.stringify(done),
      ...[...r.manifests.values()].flatMap((m) => [...m.values()].map((v) => v.bytes.toString('latin1'))),
      ...[...r.blobs.values()].map((b) => b.toString('latin1')),
    ].join('\n');
    expect(lines.length).toBeGreaterThan(5);
    for (const s of secrets) expect(everything).not.toContain(s);
    // a wrong password says which user, never the password
    const wrong = 'Wr0ng-Bearer-Pass';
    const e = await publish({
      files,
      source: src,
      url: `docker://${r.host}/q`,
      tags: ['v1'],
      skipTls: true,
      username: 'alice',
      password: wrong,
      client: { credentialFiles: [] },
    }).catch((x: Error) => x);
    expect(String(e)).toContain('401 unauthorized');
    expect(String(e)).toContain('"alice"');
    expect(String(e)).not.toContain(wrong);
  });
});
