import { Readable } from 'node:stream';
import { END_OF_ARCHIVE, encodeHeader, paddingFor, type TarHeader } from './tar-header.js';
import { readTar, type TarLimits } from './tar-reader.js';

/** The xattr overlayfs (with `userxattr`) marks an opaque directory with, and its trusted twin. */
const OPAQUE_XATTRS = ['user.overlay.opaque', 'trusted.overlay.opaque'];

function isOverlayWhiteout(h: TarHeader): boolean {
  return h.type === 'char' && (h.devmajor ?? 0) === 0 && (h.devminor ?? 0) === 0;
}

/** An empty root-owned file: an OCI whiteout or opaque marker. */
function marker(name: string, mtime: number): Buffer {
  return encodeHeader({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtime });
}

/**
 * A tar in overlayfs' whiteout style (a deleted path is a 0/0 character device, an opaque
 * directory carries `user.overlay.opaque=y`: what stacker's squashfs layers hold, as read
 * by `sqfs2tar`) as an OCI layer tar: `.wh.NAME` for a deletion, `DIR/.wh..wh..opq` after
 * an opaque directory, the overlay xattrs dropped. Everything else is copied entry by
 * entry, content streamed.
 */
export function overlayTarToOci(input: Readable | AsyncIterable<Buffer>, limits: TarLimits = {}): Readable {
  async function* convert(): AsyncGenerator<Buffer> {
    for await (const { header, body } of readTar(input, limits)) {
      const name = header.name.replace(/^\.\//, '');
      // the root (`./`) says nothing a layer needs
      if (name === '') continue;
      if (isOverlayWhiteout(header)) {
        const path = name.replace(/\/$/, '');
        const slash = path.lastIndexOf('/');
        yield marker(`${path.slice(0, slash + 1)}.wh.${path.slice(slash + 1)}`, header.mtime);
        continue;
      }
      let opaque = false;
      let xattrs = header.xattrs;
      if (xattrs && OPAQUE_XATTRS.some((k) => xattrs?.has(k))) {
        opaque =
          header.type === 'directory' &&
          OPAQUE_XATTRS.some((k) => xattrs?.get(k)?.toString('latin1') === 'y');
        xattrs = new Map(
          [...xattrs].filter(([k]) => !k.startsWith('user.overlay.') && !k.startsWith('trusted.overlay.')),
        );
      }
      const out: TarHeader = { ...header, name, xattrs: xattrs && xattrs.size > 0 ? xattrs : undefined };
      yield encodeHeader(out);
      if (header.type === 'file') {
        let n = 0;
        for await (const chunk of body) {
          n += chunk.length;
          yield chunk;
        }
        const pad = paddingFor(n);
        if (pad > 0) yield Buffer.alloc(pad);
      }
      if (opaque) {
        const dir = name.endsWith('/') ? name : `${name}/`;
        yield marker(`${dir}.wh..wh..opq`, header.mtime);
      }
    }
    yield END_OF_ARCHIVE;
  }
  return Readable.from(convert(), { objectMode: false });
}
