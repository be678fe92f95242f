import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { gzip as gzipCb, type ZlibOptions } from 'node:zlib';

/** Uncompressed bytes per gzip member: the output does not depend on how input arrives. */
export const GZIP_BLOCK = 1 << 20;

/**
 * One block as one gzip member. The output buffer holds a whole member (incompressible data
 * grows by a few bytes per 16 KiB): zlib's default 16 KiB chunks meant a callback and a
 * copy on the main thread for every 16 KiB out. Same bytes either way.
 */
function gzipAsync(data: Buffer, options: ZlibOptions): Promise<Buffer> {
  const chunkSize = Math.max(options.chunkSize ?? 0, data.length + (data.length >> 6) + 1024);
  return new Promise((resolve, reject) =>
    gzipCb(data, { ...options, chunkSize }, (e, out) => (e ? reject(e) : resolve(out))),
  );
}

/**
 * gzip on every core: the input is cut into GZIP_BLOCK-byte blocks, each compressed on its
 * own on libuv's thread pool (up to `jobs` at a time) and written out in order as one gzip
 * member. A gzip file may hold several members (RFC 1952, section 2.2); every gzip reader
 * (Go's compress/gzip used by containerd, umoci and skopeo, zlib, GNU gzip, busybox)
 * decompresses them as one stream. The cut points depend only on the bytes, so the same
 * tar always gives the same blob. Costs about 1% of compression for restarting the window
 * every MiB; memory stays at about `jobs` blocks.
 */
export function createParallelGzip(
  options: ZlibOptions & { jobs?: number; blockSize?: number } = {},
): Transform {
  const { jobs = Math.max(1, availableParallelism()), blockSize = GZIP_BLOCK, ...zlib } = options;
  let parts: Buffer[] = [];
  let partBytes = 0;
  /** Compressions started and not yet pushed, in output order. */
  const queue: Promise<Buffer>[] = [];
  let members = 0;

  const startBlock = (block: Buffer) => {
    const p = gzipAsync(block, zlib);
    p.catch(() => {}); // reported when its turn comes
    queue.push(p);
    members++;
  };

  /** Push finished members in order; wait while `jobs` are running. */
  const drain = async (t: Transform, all: boolean) => {
    while (queue.length > 0 && (all || queue.length >= jobs)) {
      const out = await (queue.shift() as Promise<Buffer>);
      t.push(out);
    }
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      let data = chunk;
      const blocks: Buffer[] = [];
      while (partBytes + data.length >= blockSize) {
        const take = blockSize - partBytes;
        parts.push(data.subarray(0, take));
        blocks.push(Buffer.concat(parts, blockSize));
        parts = [];
        partBytes = 0;
        data = data.subarray(take);
      }
      if (data.length > 0) {
        // keep a copy: the writer may reuse its buffer once we call back
        parts.push(Buffer.from(data));
        partBytes += data.length;
      }
      (async () => {
        for (const b of blocks) {
          startBlock(b);
          await drain(this, false);
        }
      })().then(() => cb(), cb);
    },
    flush(cb: TransformCallback) {
      (async () => {
        // an empty stream still gets one (empty) member: a valid gzip file
        if (partBytes > 0 || members === 0) startBlock(Buffer.concat(parts, partBytes));
        parts = [];
        partBytes = 0;
        await drain(this, true);
      })().then(() => cb(), cb);
    },
  });
}
