import { closeSync, fstatSync, lstatSync, openSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants } from 'node:zlib';
import type { BlobStore } from '@stacker/plugin-api';
import { type Descriptor, type Logger, MEDIA_TYPES, silentLogger } from '@stacker/plugin-api';
import type { LayerEntry } from './changes.js';
import { cleanPath, entryTarPath } from './changes.js';
import { HashingStream } from './digest.js';
import { badChanges, fileChanged } from './errors.js';
import { createParallelGzip } from './parallel-gzip.js';
import { END_OF_ARCHIVE, encodeHeader, paddingFor, type TarHeader } from './tar-header.js';
import { readLayerXattrs } from './xattrs.js';

export interface WriteLayerOptions {
  /** Clamp every mtime to at most this (seconds since the epoch). */
  sourceDateEpoch?: number;
  log?: Logger;
}

/** The gzip level used for layers; fixed so that the same tar always compresses the same. */
export const GZIP_LEVEL = 6;

const READ_CHUNK = 1 << 20;

/**
 * Turn a stream of changes into an uncompressed layer tar, entry by entry in the order
 * received (give them sorted: see sortChanges). File contents are streamed from disk.
 */
export function writeLayer(
  entries: AsyncIterable<LayerEntry> | Iterable<LayerEntry>,
  options: WriteLayerOptions = {},
): Readable {
  return Readable.from(generateLayer(entries, options), { objectMode: false, highWaterMark: READ_CHUNK });
}

async function* generateLayer(
  entries: AsyncIterable<LayerEntry> | Iterable<LayerEntry>,
  options: WriteLayerOptions,
): AsyncGenerator<Buffer> {
  const log = options.log ?? silentLogger;
  const epoch = options.sourceDateEpoch;
  const clamp = (mtime: number): number => (epoch !== undefined && mtime > epoch ? epoch : mtime);
  const links = new Map<string, string>(); // dev:ino -> first tar path

  for await (const entry of entries) {
    if (entry.kind === 'delete' || entry.kind === 'opaque') {
      const name = entryTarPath(entry);
      yield encodeHeader({
        name,
        type: 'file',
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: clamp(epoch ?? 0),
      });
      continue;
    }
    if (entry.kind === 'synthetic') {
      const h = entry.header;
      const path = cleanPath(h.name);
      if (path === '') continue;
      const content = entry.content ?? Buffer.alloc(0);
      if (h.type === 'file' && content.length !== h.size)
        throw badChanges(`synthetic ${path} has ${content.length} bytes of content but size ${h.size}`);
      const header: TarHeader = {
        ...h,
        name: h.type === 'directory' ? `${path}/` : path,
        size: h.type === 'file' ? h.size : 0,
        mtime: clamp(h.mtime),
        linkname: h.type === 'hardlink' && h.linkname ? cleanPath(h.linkname) : h.linkname,
      };
      yield encodeHeader(header);
      if (h.type === 'file' && content.length > 0) {
        yield content;
        const pad = paddingFor(content.length);
        if (pad) yield Buffer.alloc(pad);
      }
      continue;
    }

    const path = cleanPath(entry.path);
    if (path === '') continue; // the root directory itself is not an entry
    // metadata calls are synchronous: microseconds each, where a thread-pool trip per
    // entry cost more than the call on layers of thousands of files
    const st = lstatSync(entry.source);
    const base = {
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtime: clamp(Math.floor(st.mtimeMs / 1000)),
      size: 0,
    };
    if (st.isSocket()) {
      log.debug({ path }, 'sockets cannot be stored in a layer; skipped');
      continue;
    }
    if (!st.isDirectory() && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const first = links.get(key);
      if (first !== undefined) {
        yield encodeHeader({ ...base, name: path, type: 'hardlink', linkname: first });
        continue;
      }
      links.set(key, path);
    }
    const xattrs = await readLayerXattrs(entry.source);
    if (st.isDirectory()) {
      yield encodeHeader({ ...base, name: `${path}/`, type: 'directory', xattrs });
    } else if (st.isSymbolicLink()) {
      yield encodeHeader({
        ...base,
        name: path,
        type: 'symlink',
        linkname: readlinkSync(entry.source),
        xattrs,
      });
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const { major, minor } = splitDev(st);
      yield encodeHeader({
        ...base,
        name: path,
        type: st.isCharacterDevice() ? 'char' : 'block',
        devmajor: major,
        devminor: minor,
        xattrs,
      });
    } else if (st.isFIFO()) {
      yield encodeHeader({ ...base, name: path, type: 'fifo', xattrs });
    } else {
      yield encodeHeader({ ...base, name: path, type: 'file', size: st.size, xattrs });
      yield* fileContent(entry.source, st.size);
    }
  }
  yield END_OF_ARCHIVE;
}

/** Files up to this size are read with synchronous calls, in one read. */
const SMALL_FILE = 256 << 10;

async function* fileContent(source: string, size: number): AsyncGenerator<Buffer> {
  if (size <= SMALL_FILE) {
    yield smallFileContent(source, size);
    const pad = paddingFor(size);
    if (pad) yield Buffer.alloc(pad);
    return;
  }
  const fh = await open(source, 'r');
  try {
    let done = 0;
    while (done < size) {
      const want = Math.min(READ_CHUNK, size - done);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await fh.read(buf, 0, want, done);
      if (bytesRead === 0) throw fileChanged(source);
      done += bytesRead;
      yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
    }
    const probe = Buffer.alloc(1);
    if ((await fh.read(probe, 0, 1, size)).bytesRead !== 0) throw fileChanged(source);
  } finally {
    await fh.close();
  }
  const pad = paddingFor(size);
  if (pad) yield Buffer.alloc(pad);
}

/**
 * A small file's content in one buffer: open, one read (and a probe for growth), close,
 * without a thread-pool trip for each (page-cache reads of a few KiB take microseconds).
 */
function smallFileContent(source: string, size: number): Buffer {
  const fd = openSync(source, 'r');
  try {
    const buf = Buffer.allocUnsafe(size + 1);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, buf, done, size + 1 - done, done);
      if (n === 0) throw fileChanged(source);
      done += n;
    }
    // one byte more than lstat said, or a shorter file: it changed while being read
    if (done > size || readSync(fd, buf, size, 1, size) !== 0 || fstatSync(fd).size !== size)
      throw fileChanged(source);
    return buf.subarray(0, size);
  } finally {
    closeSync(fd);
  }
}

/** Linux's dev_t encoding (glibc's major()/minor()). */
function splitDev(st: Stats): { major: number; minor: number } {
  const dev = BigInt(st.rdev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

export interface PutLayerOptions extends WriteLayerOptions {
  compression?: 'gzip' | 'none';
  /** Media type of the blob; defaults to the OCI tar or tar+gzip layer type. */
  mediaType?: string;
}

export interface PutLayerResult {
  /** The blob as stored (compressed when gzip). */
  descriptor: Descriptor;
  /** sha256 of the uncompressed tar, for the config's rootfs.diff_ids. */
  diffId: string;
}

/**
 * Write a layer straight into a blob store: tar -> (diffID hash) -> gzip -> blob (digest),
 * all in one streaming pass.
 */
export async function putLayer(
  store: BlobStore,
  entries: AsyncIterable<LayerEntry> | Iterable<LayerEntry>,
  options: PutLayerOptions = {},
): Promise<PutLayerResult> {
  const compression = options.compression ?? 'gzip';
  const tar = writeLayer(entries, options);
  const diff = new HashingStream();
  const gzip =
    compression === 'gzip'
      ? createParallelGzip({ level: GZIP_LEVEL, memLevel: 8, strategy: zlibConstants.Z_DEFAULT_STRATEGY })
      : undefined;
  const out = gzip ?? diff;
  const piped = (gzip ? pipeline(tar, diff, gzip) : pipeline(tar, diff)).catch((e) => {
    out.destroy(e);
    throw e;
  });
  const mediaType = options.mediaType ?? (gzip ? MEDIA_TYPES.layerGzip : MEDIA_TYPES.layerTar);
  // Both sides settle before we answer; the store's error comes first: when the write side
  // fails (a full disk), the tar side only sees its stream destroyed with that same error.
  const [stored, made] = await Promise.allSettled([store.putStream(out, mediaType), piped]);
  if (stored.status === 'rejected') throw stored.reason;
  if (made.status === 'rejected') throw made.reason;
  return { descriptor: stored.value, diffId: diff.digest() };
}
