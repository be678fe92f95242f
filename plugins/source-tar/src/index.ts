import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import {
  type Descriptor,
  MEDIA_TYPES,
  type Source,
  type SourceContext,
  UserError,
} from '@stacker/plugin-api';
import { z } from 'zod';

const schema = z.looseObject({
  type: z.literal('tar'),
  url: z.string().min(1, 'url: the path or http(s) address of the tarball'),
});
type TarFrom = z.infer<typeof schema>;

function isHttp(u: string) {
  return /^https?:\/\//i.test(u);
}

/** Downloads under way in this process, by destination: two stanzas on one URL share one. */
const inflight = new Map<string, Promise<string>>();

/** An http(s) tarball is downloaded once into the source cache; a partial file never counts. */
function fetchOnce(url: string, ctx: SourceContext): Promise<string> {
  const dir = join(ctx.cacheDir, 'tar', createHash('sha256').update(url).digest('hex').slice(0, 32));
  const dest = join(dir, basename(new URL(url).pathname) || 'base.tar');
  let p = inflight.get(dest);
  if (!p) {
    p = download(url, dir, dest, ctx).finally(() => inflight.delete(dest));
    inflight.set(dest, p);
  }
  return p;
}

async function download(url: string, dir: string, dest: string, ctx: SourceContext): Promise<string> {
  try {
    await fsp.access(dest);
    return dest;
  } catch {
    /* download it */
  }
  await fsp.mkdir(dir, { recursive: true });
  ctx.log.info(`downloading ${url}`);
  const fail = (why: string) =>
    new UserError(
      'tar-download',
      `couldn't download ${url} for ${ctx.stanza}: ${why}; check from.url and the network`,
      {
        stanza: ctx.stanza,
        key: 'from.url',
      },
    );
  let res: Response;
  try {
    res = await fetch(url, { signal: ctx.signal });
  } catch (e) {
    throw fail((e as Error).message);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => {});
    throw fail(`HTTP ${res.status} ${res.statusText}`.trim());
  }
  const total = Number(res.headers.get('content-length') ?? 0);
  let done = 0;
  const tmp = `${dest}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
    if (ctx.progress) {
      body.on('data', (chunk: Buffer) => {
        done += chunk.length;
        ctx.progress?.(url, done, total);
      });
    }
    await pipeline(body, createWriteStream(tmp));
    ctx.progress?.(url, done, total || done);
  } catch (e) {
    // an interrupted download leaves nothing behind
    await fsp.rm(tmp, { force: true });
    if (ctx.signal.aborted) throw e;
    throw fail((e as Error).message);
  }
  await fsp.rename(tmp, dest);
  return dest;
}

async function localPath(from: TarFrom, ctx: SourceContext): Promise<string> {
  if (isHttp(from.url)) return fetchOnce(from.url, ctx);
  const p = ctx.resolvePath(from.url.replace(/^file:\/\//, ''));
  try {
    const st = await fsp.stat(p);
    if (!st.isFile()) throw new Error('not a file');
  } catch {
    throw new UserError('tar-missing', `${ctx.stanza}: the base tarball ${p} does not exist; fix from.url`, {
      stanza: ctx.stanza,
      key: 'from.url',
    });
  }
  return p;
}

interface Memo {
  digest: string;
  size: number;
}

async function memoFile(path: string, ctx: SourceContext): Promise<{ file: string; stamp: string }> {
  const st = await fsp.stat(path);
  const stamp = [st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs].join(':');
  const name = `${createHash('sha256').update(path).digest('hex').slice(0, 32)}.json`;
  return { file: join(ctx.cacheDir, 'tar-digests', name), stamp };
}

async function readMemo(path: string, ctx: SourceContext): Promise<Memo | undefined> {
  const { file, stamp } = await memoFile(path, ctx);
  try {
    const m = JSON.parse(await fsp.readFile(file, 'utf8'));
    if (m.stamp === stamp && typeof m.digest === 'string' && typeof m.size === 'number') return m;
  } catch {
    /* not imported yet */
  }
  return undefined;
}

async function writeMemo(path: string, ctx: SourceContext, memo: Memo): Promise<void> {
  const { file, stamp } = await memoFile(path, ctx);
  await fsp.mkdir(dirname(file), { recursive: true });
  // unique: two stanzas on one tarball resolve it at the same time
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify({ path, stamp, ...memo }));
  await fsp.rename(tmp, file);
}

async function magic(path: string): Promise<Buffer> {
  const fh = await fsp.open(path, 'r');
  try {
    const b = Buffer.alloc(6);
    await fh.read(b, 0, 6, 0);
    return b;
  } finally {
    await fh.close();
  }
}

/**
 * `from: {type: tar, url: ...}`: a root filesystem tarball (plain or gzip). A gzip tarball
 * is used as the layer blob as it is (hard-linked when it can be, never recompressed);
 * a plain one is compressed once while it streams into the blob store.
 */
export const tarSource: Source<TarFrom> = {
  type: 'tar',
  schema,
  async identity(from, ctx) {
    const p = await localPath(from, ctx);
    const h = createHash('sha256');
    await pipeline(createReadStream(p), h);
    return `tar:sha256:${h.digest('hex')}`;
  },
  async resolve(from, ctx) {
    const p = await localPath(from, ctx);
    // A tarball already imported and unchanged since (same inode, size and times) is not
    // read again: its blob is looked up by the digest remembered for it.
    const memo = await readMemo(p, ctx);
    if (memo && (await ctx.blobs.has(memo.digest))) {
      const layer = { mediaType: MEDIA_TYPES.layerGzip, digest: memo.digest, size: memo.size };
      return ctx.imageFromLayers([layer], `tar:${memo.digest}`);
    }
    const m = await magic(p);
    let layer: Descriptor;
    if (m[0] === 0x1f && m[1] === 0x8b) {
      layer = await ctx.blobs.putFile(p, MEDIA_TYPES.layerGzip);
    } else if (
      m.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) ||
      (m[0] === 0x28 && m[1] === 0xb5)
    ) {
      throw new UserError(
        'tar-format',
        `${ctx.stanza}: ${p} is xz or zstd compressed; use a plain or gzip tarball`,
        {
          stanza: ctx.stanza,
          key: 'from.url',
        },
      );
    } else {
      layer = await ctx.blobs.putStream(
        createReadStream(p).pipe(createGzip({ level: 6, chunkSize: 1 << 18 })),
        MEDIA_TYPES.layerGzip,
      );
    }
    await writeMemo(p, ctx, { digest: layer.digest, size: layer.size });
    return ctx.imageFromLayers([layer], `tar:${layer.digest}`);
  },
};

export const sources = [tarSource];
