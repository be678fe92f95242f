import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MEDIA_TYPES } from './oci-types.js';
import type { Source } from './source.js';
import { checkSource } from './source-kit.js';

// an empty tar is two zero blocks
const EMPTY_TAR = Buffer.alloc(1024);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'source-kit-test-'));
  await writeFile(join(dir, 'rootfs.tar.gz'), gzipSync(EMPTY_TAR));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const schema = z.strictObject({ type: z.literal('file'), path: z.string().min(1) });

const good: Source<z.infer<typeof schema>> = {
  type: 'file',
  schema,
  async identity(from) {
    return `file:${from.path}`;
  },
  async resolve(from, ctx) {
    const layer = await ctx.blobs.putFile(ctx.resolvePath(from.path), MEDIA_TYPES.layerGzip);
    return ctx.imageFromLayers([layer], `file:${from.path}`);
  },
};

const opts = () => ({
  valid: [{ type: 'file', path: 'rootfs.tar.gz' }],
  invalid: [{ type: 'file' }, { type: 'file', path: 'x', extra: 1 }],
  context: { stackerFile: join(dir, 'stacker.yaml') },
});

describe('checkSource', () => {
  it('passes a well-behaved source', async () => {
    const r = await checkSource(good, opts());
    expect(r.base?.manifest.layers).toHaveLength(1);
    expect(r.checks.join('\n')).toMatch(/second resolve/);
  });

  it('rejects an object that is not a source', async () => {
    await expect(checkSource({ type: 'file', schema }, opts())).rejects.toThrow(/resolve must be a function/);
  });

  it('rejects a schema that accepts what it should not', async () => {
    const loose = { ...good, schema: z.looseObject({ type: z.literal('file'), path: z.string() }) };
    await expect(checkSource(loose, opts())).rejects.toThrow(/accepts .*extra/);
  });

  it('finds a config whose diff id is wrong', async () => {
    const bad: Source = {
      ...good,
      async resolve(from, ctx) {
        const base = await good.resolve(from, ctx);
        const config = {
          ...base.config,
          rootfs: { type: 'layers' as const, diff_ids: [`sha256:${'0'.repeat(64)}`] },
        };
        const cdesc = await ctx.blobs.putJson(config, MEDIA_TYPES.config);
        const manifest = { ...base.manifest, config: cdesc };
        const mdesc = await ctx.blobs.putJson(manifest, MEDIA_TYPES.manifest);
        return { ...base, config, manifest, manifestDigest: mdesc.digest };
      },
    };
    await expect(checkSource(bad, opts())).rejects.toThrow(/diff id/);
  });

  it('finds a layer that is not in the blob store', async () => {
    const bad: Source = {
      ...good,
      async resolve(from, ctx) {
        const base = await good.resolve(from, ctx);
        const ghost = await ctx.blobs.putStream(Readable.from([Buffer.from('x')]), MEDIA_TYPES.layerTar);
        await rm(ctx.blobs.path(ghost.digest));
        return { ...base, manifest: { ...base.manifest, layers: [ghost] } };
      },
    };
    await expect(checkSource(bad, opts())).rejects.toThrow(/stored manifest|not in the blob store/);
  });

  it('finds an identity that changes between resolves', async () => {
    let n = 0;
    const bad: Source = {
      ...good,
      identity: undefined,
      async resolve(from, ctx) {
        const layer = await ctx.blobs.putFile(ctx.resolvePath(from.path), MEDIA_TYPES.layerGzip);
        n += 1;
        return ctx.imageFromLayers([layer], `file:${n}`);
      },
    };
    await expect(checkSource(bad, opts())).rejects.toThrow(/not idempotent/);
  });
});
