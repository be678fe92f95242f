// A tiny tar builder for tests (not part of the build): entries are encoded with the
// package's own encodeHeader and nothing checks the names, which is the point.
import { END_OF_ARCHIVE, encodeHeader, paddingFor, type TarHeader } from './tar-header.js';

export type EntrySpec = Partial<TarHeader> & { name: string; content?: string | Buffer };

/** The bytes of one entry: its header blocks, then its content padded to a block. */
export function tarEntry(s: EntrySpec): Buffer {
  const content = typeof s.content === 'string' ? Buffer.from(s.content) : (s.content ?? Buffer.alloc(0));
  const type = s.type ?? (s.name.endsWith('/') ? 'directory' : 'file');
  const header = encodeHeader({
    mode: type === 'directory' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    mtime: 1_000_000,
    ...s,
    type,
    size: s.size ?? content.length,
  });
  if (content.length === 0 || type !== 'file') return header;
  return Buffer.concat([header, content, Buffer.alloc(paddingFor(content.length))]);
}

/** A whole archive, end blocks included. */
export function tarBytes(...specs: EntrySpec[]): Buffer {
  return Buffer.concat([...specs.map(tarEntry), END_OF_ARCHIVE]);
}
