import type { Readable } from 'node:stream';
import { badTar, layerTooBig } from './errors.js';
import { layerGunzip } from './gunzip.js';
import {
  decodeHeader,
  decodePaxRecords,
  type EntryType,
  paddingFor,
  TAR_BLOCK,
  type TarHeader,
  xattrsFromPax,
} from './tar-header.js';

export interface TarEntry {
  header: TarHeader;
  /** The content of a regular file. Read it (or not) before asking for the next entry. */
  body: AsyncIterable<Buffer>;
}

const NO_RECORDS: ReadonlyMap<string, Buffer> = new Map();
const MAX_META = 16 << 20; // PAX and GNU long-name bodies are read whole; keep them sane

/**
 * Bounds on what one layer tar may hold, so that a hostile or broken layer (a tar bomb of
 * millions of entries, a header declaring a petabyte file) fails with a clear error rather
 * than filling the disk or running for hours.
 */
export interface TarLimits {
  /** Header blocks (entries, PAX and long-name records included). */
  maxEntries?: number;
  /** Bytes of content declared by all entries together. */
  maxBytes?: number;
}

export const LIMIT_ENV = {
  maxEntries: 'STACKER_LAYER_MAX_ENTRIES',
  maxBytes: 'STACKER_LAYER_MAX_BYTES',
} as const;

export const DEFAULT_TAR_LIMITS: Required<TarLimits> = {
  maxEntries: 4_000_000,
  maxBytes: 256 * 1024 ** 3,
};

/** The limits in force: explicit ones, else the environment's, else the defaults. */
export function tarLimits(
  explicit: TarLimits = {},
  env: NodeJS.ProcessEnv = process.env,
): Required<TarLimits> {
  const pick = (key: keyof TarLimits): number => {
    const given = explicit[key];
    if (given !== undefined) return given;
    const text = env[LIMIT_ENV[key]];
    if (text !== undefined && /^\d+$/.test(text.trim())) return Number(text.trim());
    return DEFAULT_TAR_LIMITS[key];
  };
  return { maxEntries: pick('maxEntries'), maxBytes: pick('maxBytes') };
}

/** Pulls exact byte counts out of a stream without gathering more than it must. */
class ByteReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private ended = false;
  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.source.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    return true;
  }

  /** Exactly n bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    while (this.pendingBytes < n && (await this.fill())) {}
    const head = this.pending[0];
    if (head !== undefined && head.length >= n) {
      // the common case: no copy
      const out = head.subarray(0, n);
      if (head.length === n) this.pending.shift();
      else this.pending[0] = head.subarray(n);
      this.pendingBytes -= n;
      return out;
    }
    // join only the chunks that hold the n bytes, not everything buffered
    const want = Math.min(n, this.pendingBytes);
    const out = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const chunk = this.pending[0];
      const take = Math.min(chunk.length, want - got);
      chunk.copy(out, got, 0, take);
      got += take;
      if (take === chunk.length) this.pending.shift();
      else this.pending[0] = chunk.subarray(take);
    }
    this.pendingBytes -= want;
    return out;
  }

  /** The next piece of at most `max` (> 0) bytes; fails if the stream ends first. */
  async nextChunk(max: number): Promise<Buffer> {
    if (this.pendingBytes === 0 && !(await this.fill())) throw badTar('the archive ends inside a file');
    const head = this.pending[0];
    if (head.length <= max) {
      this.pending.shift();
      this.pendingBytes -= head.length;
      return head;
    }
    this.pending[0] = head.subarray(max);
    this.pendingBytes -= max;
    return head.subarray(0, max);
  }

  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) left -= (await this.nextChunk(left)).length;
  }
}

/** The stream as raw tar: gunzipped first when it starts with the gzip magic. */
export async function* decompressIfGzip(
  stream: AsyncIterable<Buffer> | Iterable<Buffer>,
): AsyncGenerator<Buffer> {
  const it: AsyncIterator<Buffer> | Iterator<Buffer> =
    Symbol.asyncIterator in stream
      ? stream[Symbol.asyncIterator]()
      : (stream as Iterable<Buffer>)[Symbol.iterator]();
  const first: Buffer[] = [];
  let size = 0;
  let done = false;
  while (size < 2) {
    const next = await it.next();
    if (next.done) {
      done = true;
      break;
    }
    first.push(next.value);
    size += next.value.length;
  }
  async function* replay(): AsyncGenerator<Buffer> {
    yield* first;
    if (done) return;
    while (true) {
      const next = await it.next();
      if (next.done) return;
      yield next.value;
    }
  }
  const head = Buffer.concat(first);
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = layerGunzip();
    const feed = (async () => {
      try {
        for await (const chunk of replay()) {
          if (!gunzip.write(chunk)) await new Promise((r) => gunzip.once('drain', r));
        }
        gunzip.end();
      } catch (e) {
        gunzip.destroy(e as Error);
      }
    })();
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } catch (e) {
      throw badTar(`gzip data is corrupt (${(e as Error).message})`);
    }
    await feed;
  } else {
    yield* replay();
  }
}

/**
 * Read a tar (plain or gzip) entry by entry. PAX headers (including binary
 * `SCHILY.xattr.*` values) and GNU long names are folded into the entries they describe.
 */
export async function* readTar(
  stream: Readable | AsyncIterable<Buffer> | Iterable<Buffer>,
  limits: TarLimits = {},
): AsyncGenerator<TarEntry> {
  const { maxEntries, maxBytes } = tarLimits(limits);
  let entries = 0;
  let bytes = 0;
  const reader = new ByteReader(
    decompressIfGzip(stream as AsyncIterable<Buffer> | Iterable<Buffer>)[Symbol.asyncIterator](),
  );
  let global = new Map<string, Buffer>();
  let pax: Map<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;

  while (true) {
    const block = await reader.read(TAR_BLOCK);
    if (block.length === 0) return; // no end blocks: tolerated
    if (block.length < TAR_BLOCK) throw badTar('the archive ends inside a header');
    const raw = decodeHeader(block);
    if (raw === null) return; // first zero block: end of archive
    if (++entries > maxEntries)
      throw layerTooBig(`it has more than ${maxEntries} entries`, maxEntries, LIMIT_ENV.maxEntries);
    checkSize(raw.size, `entry ${JSON.stringify(raw.name)}`);
    const padded = raw.size + paddingFor(raw.size);

    if (raw.typeflag === 'x' || raw.typeflag === 'g' || raw.typeflag === 'L' || raw.typeflag === 'K') {
      if (raw.size > MAX_META) throw badTar('an extended header is too large');
      const body = await reader.read(padded);
      if (body.length < padded) throw badTar('the archive ends inside an extended header');
      const data = body.subarray(0, raw.size);
      if (raw.typeflag === 'x') pax = new Map([...(pax ?? []), ...decodePaxRecords(data)]);
      else if (raw.typeflag === 'g') global = new Map([...global, ...decodePaxRecords(data)]);
      else {
        const nul = data.indexOf(0);
        const text = (nul < 0 ? data : data.subarray(0, nul)).toString('utf8');
        if (raw.typeflag === 'L') longName = text;
        else longLink = text;
      }
      continue;
    }

    const ext = global.size === 0 && pax === undefined ? NO_RECORDS : new Map([...global, ...(pax ?? [])]);
    pax = undefined;
    let name = longName ?? raw.name;
    let linkname = longLink ?? raw.linkname;
    longName = longLink = undefined;
    const str = (key: string): string | undefined => ext.get(key)?.toString('utf8');
    const num = (key: string, fallback: number): number => {
      const v = str(key);
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!Number.isFinite(n)) throw badTar(`PAX ${key} is ${JSON.stringify(v)}`);
      return n;
    };
    name = str('path') ?? name;
    linkname = str('linkpath') ?? linkname;
    const size = num('size', raw.size);
    checkSize(size, `entry ${JSON.stringify(name)}`);
    const type = entryType(raw.typeflag, name);
    const header: TarHeader = {
      name,
      type,
      mode: raw.mode & 0o7777,
      uid: checkId(num('uid', raw.uid), 'uid', name),
      gid: checkId(num('gid', raw.gid), 'gid', name),
      size: type === 'file' ? size : 0,
      mtime: checkTime(Math.floor(num('mtime', raw.mtime)), name),
      linkname: type === 'symlink' || type === 'hardlink' ? linkname : undefined,
      devmajor: raw.devmajor,
      devminor: raw.devminor,
      xattrs: xattrsFromPax(ext),
    };
    // Content follows any header with a size, whatever its type; only files expose it.
    const dataSize = raw.typeflag === '1' || raw.typeflag === '2' || raw.typeflag === '5' ? 0 : size;
    bytes += dataSize;
    if (bytes > maxBytes) {
      throw layerTooBig(
        `entry ${JSON.stringify(name)} declares ${dataSize} bytes, bringing the layer to ${bytes} bytes`,
        maxBytes,
        LIMIT_ENV.maxBytes,
      );
    }
    let unread = dataSize;
    let opened = false;
    const fileBytes = type === 'file' ? dataSize : 0;
    // a plain iterator, not a generator: one promise per chunk, nothing more
    const body: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => {
        if (opened) throw new Error('a tar entry body can be read once');
        opened = true;
        let left = fileBytes;
        return {
          next: async (): Promise<IteratorResult<Buffer>> => {
            if (left === 0) return { done: true, value: undefined };
            const chunk = await reader.nextChunk(left);
            left -= chunk.length;
            unread -= chunk.length;
            return { done: false, value: chunk };
          },
        };
      },
    };
    yield { header, body };
    await reader.skip(unread + paddingFor(dataSize));
  }
}

/** A size from a header or PAX record must be a whole, non-negative, exact number. */
function checkSize(size: number, what: string): void {
  if (!Number.isSafeInteger(size) || size < 0) throw badTar(`${what} has an impossible size ${size}`);
}

function checkId(id: number, what: string, name: string): number {
  if (!Number.isInteger(id) || id < 0 || id > 0xfffffffe)
    throw badTar(`entry ${JSON.stringify(name)} has an impossible ${what} ${id}`);
  return id;
}

/** Seconds since the epoch within what file systems store (about ±292 billion years is not). */
function checkTime(t: number, name: string): number {
  if (!Number.isSafeInteger(t) || Math.abs(t) > 2 ** 40)
    throw badTar(`entry ${JSON.stringify(name)} has an impossible mtime ${t}`);
  return t;
}

function entryType(typeflag: string, name: string): EntryType {
  switch (typeflag) {
    case '0':
    case '\u0000':
    case '':
    case '7':
      return name.endsWith('/') ? 'directory' : 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'directory';
    case '6':
      return 'fifo';
    default:
      throw badTar(`entry ${JSON.stringify(name)} has unsupported type ${JSON.stringify(typeflag)}`);
  }
}
