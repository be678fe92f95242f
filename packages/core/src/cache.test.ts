import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import type { Logger } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  BuildCache,
  CACHE_FORMAT,
  type CacheEntry,
  hashLocalPath,
  type StanzaKeyParts,
  stanzaKey,
} from './cache.js';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(join(tmpdir(), 'core-cache-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('stanza cache key', () => {
  const parts: StanzaKeyParts = {
    stackerVersion: '1.0.0',
    canonical: '{"name":"web","run":["true"]}',
    base: 'tar:sha256:aaaa',
    imports: ['["file:100644:0:0:abc",null,null,null,null,null]'],
    sourceDateEpoch: 1700000000,
  };

  it('is the same for the same inputs', () => {
    expect(stanzaKey({ ...parts })).toBe(stanzaKey(parts));
  });

  it.each<[string, Partial<StanzaKeyParts>]>([
    ['SOURCE_DATE_EPOCH', { sourceDateEpoch: 1700000001 }],
    ['SOURCE_DATE_EPOCH unset', { sourceDateEpoch: undefined }],
    ['the base identity', { base: 'tar:sha256:bbbb' }],
    ['no base key', { base: undefined }],
    ['an import', { imports: ['["file:100644:0:0:abd",null,null,null,null,null]'] }],
    ['one more import', { imports: [...parts.imports, '["dir:x",null,null,null,null,null]'] }],
    ['the stanza', { canonical: '{"name":"web","run":["false"]}' }],
    ['the stacker version', { stackerVersion: '1.0.1' }],
  ])('changes with %s', (_what, change) => {
    expect(stanzaKey({ ...parts, ...change })).not.toBe(stanzaKey(parts));
  });
});

describe('import identity (hashLocalPath)', () => {
  async function tree(): Promise<string> {
    const root = join(dir, 'imp');
    await fsp.mkdir(join(root, 'sub'), { recursive: true });
    await fsp.writeFile(join(root, 'a.txt'), 'a\n');
    await fsp.writeFile(join(root, 'sub', 'b.txt'), 'b\n');
    await fsp.symlink('a.txt', join(root, 'link'));
    return root;
  }

  it('is unchanged when only mtimes change', async () => {
    const root = await tree();
    const before = await hashLocalPath(root);
    const later = new Date(Date.now() + 3_600_000);
    for (const p of [root, join(root, 'a.txt'), join(root, 'sub'), join(root, 'sub', 'b.txt')]) {
      await fsp.utimes(p, later, later);
    }
    await fsp.lutimes(join(root, 'link'), later, later);
    expect(await hashLocalPath(root)).toBe(before);
    const file = join(root, 'a.txt');
    const fileBefore = await hashLocalPath(file);
    await fsp.utimes(file, new Date(0), new Date(0));
    expect(await hashLocalPath(file)).toBe(fileBefore);
  });

  it.each<[string, (root: string) => Promise<void>]>([
    ['file content', (r) => fsp.writeFile(join(r, 'sub', 'b.txt'), 'B\n')],
    ['a file mode', (r) => fsp.chmod(join(r, 'a.txt'), 0o600)],
    ['a directory mode', (r) => fsp.chmod(join(r, 'sub'), 0o700)],
    ['the top directory mode', (r) => fsp.chmod(r, 0o700)],
    ['a file uid', (r) => fsp.chown(join(r, 'a.txt'), 1000, 0)],
    ['a directory gid', (r) => fsp.chown(join(r, 'sub'), 0, 1000)],
    ['a symlink owner', (r) => fsp.lchown(join(r, 'link'), 1000, 1000)],
    [
      'a link target',
      async (r) => {
        await fsp.unlink(join(r, 'link'));
        await fsp.symlink('sub/b.txt', join(r, 'link'));
      },
    ],
    ['an xattr of a file', async (r) => setAttributeSync(join(r, 'a.txt'), 'user.test', Buffer.from('1'))],
    ['an xattr of a directory', async (r) => setAttributeSync(join(r, 'sub'), 'user.test', Buffer.from('1'))],
    ['a new empty file', (r) => fsp.writeFile(join(r, 'sub', 'c'), '')],
  ])('of a directory changes with %s', async (_what, change) => {
    const root = await tree();
    const before = await hashLocalPath(root);
    await change(root);
    expect(await hashLocalPath(root)).not.toBe(before);
  });

  it.each<[string, (file: string) => Promise<void>]>([
    ['content', (f) => fsp.writeFile(f, 'other\n')],
    ['mode', (f) => fsp.chmod(f, 0o600)],
    ['uid', (f) => fsp.chown(f, 1000, 0)],
    ['gid', (f) => fsp.chown(f, 0, 1000)],
    ['an xattr', async (f) => setAttributeSync(f, 'user.test', Buffer.from('x'))],
  ])('of a single file changes with %s', async (_what, change) => {
    const file = join(dir, 'one.txt');
    await fsp.writeFile(file, 'one\n');
    await fsp.chown(file, 0, 0);
    const before = await hashLocalPath(file);
    await change(file);
    expect(await hashLocalPath(file)).not.toBe(before);
  });

  it('a file name with a newline cannot pose as two entries', async () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    await fsp.mkdir(a);
    await fsp.mkdir(b);
    await fsp.writeFile(join(a, 'x'), '');
    await fsp.writeFile(join(b, 'x 644'), '');
    expect(await hashLocalPath(a)).not.toBe(await hashLocalPath(b));
  });
});

describe('BuildCache.load', () => {
  const VERSION = '9.9.9';
  const entry: CacheEntry = {
    key: 'k1',
    layer: {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: `sha256:${'a'.repeat(64)}`,
      size: 3,
    },
    diffId: `sha256:${'b'.repeat(64)}`,
    generatedLabels: { a: 'b' },
    created: '2024-01-01T00:00:00Z',
  };

  function recorder(): Logger & { warnings: string[] } {
    const warnings: string[] = [];
    return {
      warnings,
      debug() {},
      info() {},
      warn(m: string) {
        warnings.push(m);
      },
      error() {},
    } as unknown as Logger & { warnings: string[] };
  }

  async function load(body: unknown) {
    await fsp.writeFile(join(dir, 'build.cache'), typeof body === 'string' ? body : JSON.stringify(body));
    const log = recorder();
    const cache = await BuildCache.load(dir, VERSION, log);
    return { cache, warnings: log.warnings };
  }

  it('reads back what it wrote', async () => {
    const log = recorder();
    const c = await BuildCache.load(dir, VERSION, log);
    await c.put('web', entry);
    const { cache, warnings } = await load(await fsp.readFile(join(dir, 'build.cache'), 'utf8'));
    expect(warnings).toEqual([]);
    expect(cache.get('web', 'k1')).toEqual(entry);
    expect(cache.get('web', 'k2')).toBeUndefined();
  });

  it('an entry without a layer is valid', async () => {
    const { cache, warnings } = await load({
      format: CACHE_FORMAT,
      stackerVersion: VERSION,
      entries: { e: { key: 'k', generatedLabels: {}, created: 'x' } },
    });
    expect(warnings).toEqual([]);
    expect(cache.get('e', 'k')).toBeDefined();
  });

  it('ignores a file of another version', async () => {
    const { cache, warnings } = await load({
      format: CACHE_FORMAT,
      stackerVersion: '0.0.1',
      entries: { web: entry },
    });
    expect(warnings).toEqual([
      expect.stringMatching(/ignoring the build cache .*: it was written by another stacker version/),
    ]);
    expect(cache.get('web', 'k1')).toBeUndefined();
  });

  const bad: [string, unknown][] = [
    ['not JSON', '{ nope'],
    ['JSON null', 'null'],
    ['an array', '[]'],
    ['entries null', { format: CACHE_FORMAT, stackerVersion: VERSION, entries: null }],
    ['entries missing', { format: CACHE_FORMAT, stackerVersion: VERSION }],
    ['entries an array', { format: CACHE_FORMAT, stackerVersion: VERSION, entries: [entry] }],
    ['an entry null', { format: CACHE_FORMAT, stackerVersion: VERSION, entries: { web: null } }],
    [
      'a key not a string',
      { format: CACHE_FORMAT, stackerVersion: VERSION, entries: { web: { ...entry, key: 1 } } },
    ],
    [
      'a layer not a descriptor',
      { format: CACHE_FORMAT, stackerVersion: VERSION, entries: { web: { ...entry, layer: 'x' } } },
    ],
    [
      'a layer digest that is a path',
      {
        format: CACHE_FORMAT,
        stackerVersion: VERSION,
        entries: { web: { ...entry, layer: { ...entry.layer, digest: 'sha256:../../etc' } } },
      },
    ],
    [
      'a layer without its diff id',
      { format: CACHE_FORMAT, stackerVersion: VERSION, entries: { web: { ...entry, diffId: undefined } } },
    ],
    [
      'labels null',
      {
        format: CACHE_FORMAT,
        stackerVersion: VERSION,
        entries: { web: { ...entry, generatedLabels: null } },
      },
    ],
    [
      'a label not a string',
      {
        format: CACHE_FORMAT,
        stackerVersion: VERSION,
        entries: { web: { ...entry, generatedLabels: { a: 1 } } },
      },
    ],
    [
      'created missing',
      { format: CACHE_FORMAT, stackerVersion: VERSION, entries: { web: { ...entry, created: undefined } } },
    ],
  ];

  it.each(bad)('ignores a file with %s with the corrupt warning, never a crash', async (_what, body) => {
    const { cache, warnings } = await load(body);
    expect(warnings).toEqual([
      expect.stringMatching(/ignoring the build cache .*build\.cache: it is corrupt/),
    ]);
    expect(cache.get('web', 'k1')).toBeUndefined();
    // and it can be written again
    await cache.put('web', entry);
    expect((await load(await fsp.readFile(join(dir, 'build.cache'), 'utf8'))).cache.get('web', 'k1')).toEqual(
      entry,
    );
  });
});
