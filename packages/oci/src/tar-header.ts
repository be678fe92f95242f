// POSIX ustar + PAX header encoding and decoding. Done by hand rather than with tar-stream
// because tar-stream clamps large uids/gids and decodes PAX values as UTF-8, which corrupts
// binary xattrs such as security.capability.

import { badTar } from './errors.js';

export type EntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  /** Root-relative path without a leading slash; directories end with `/`. */
  name: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (no file-type bits). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of content (regular files only). */
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Symlink target, or for hardlinks the root-relative path of the first link. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, values byte-for-byte. */
  xattrs?: Map<string, Buffer>;
}

const BLOCK = 512;
export const TAR_BLOCK = BLOCK;
const XATTR_PREFIX = 'SCHILY.xattr.';

const TYPEFLAGS: Record<EntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};

/** The bytes that end a tar archive. */
export const END_OF_ARCHIVE = Buffer.alloc(BLOCK * 2);

export function paddingFor(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** Encode the header blocks (a PAX extended header first when needed) of one entry. */
export function encodeHeader(h: TarHeader): Buffer {
  const pax: Array<[string, Buffer]> = [];
  const nameBytes = Buffer.from(h.name, 'utf8');
  let nameField: Buffer = nameBytes;
  let prefixField: Buffer = Buffer.alloc(0);
  const split = isAscii(nameBytes) ? splitName(nameBytes) : undefined;
  if (split) {
    nameField = split.name;
    prefixField = split.prefix;
  } else {
    pax.push(['path', nameBytes]);
    nameField = nameBytes.subarray(0, 100);
  }
  const linkBytes = Buffer.from(h.linkname ?? '', 'utf8');
  let linkField: Buffer = linkBytes;
  if (linkBytes.length > 100 || !isAscii(linkBytes)) {
    pax.push(['linkpath', linkBytes]);
    linkField = linkBytes.subarray(0, 100);
  }
  const size = h.type === 'file' ? h.size : 0;
  const numeric = (key: string, value: number, width: number): number => {
    if (Number.isInteger(value) && value >= 0 && value <= maxOctal(width)) return value;
    pax.push([key, Buffer.from(String(value))]);
    return 0;
  };
  const sizeField = numeric('size', size, 12);
  const uidField = numeric('uid', h.uid, 8);
  const gidField = numeric('gid', h.gid, 8);
  const mtimeField = numeric('mtime', Math.floor(h.mtime), 12);
  if (h.xattrs) {
    for (const key of [...h.xattrs.keys()].sort())
      pax.push([XATTR_PREFIX + key, h.xattrs.get(key) as Buffer]);
  }

  const block = Buffer.alloc(BLOCK);
  writeBytes(block, 0, 100, nameField);
  writeOctal(block, 100, 8, h.mode & 0o7777);
  writeOctal(block, 108, 8, uidField);
  writeOctal(block, 116, 8, gidField);
  writeOctal(block, 124, 12, sizeField);
  writeOctal(block, 136, 12, mtimeField);
  block.write(TYPEFLAGS[h.type], 156, 'latin1');
  writeBytes(block, 157, 100, linkField);
  block.write('ustar\u000000', 257, 'latin1');
  // uname (265) and gname (297) stay empty.
  if (h.type === 'char' || h.type === 'block') {
    writeOctal(block, 329, 8, h.devmajor ?? 0);
    writeOctal(block, 337, 8, h.devminor ?? 0);
  }
  writeBytes(block, 345, 155, prefixField);
  writeChecksum(block);

  if (pax.length === 0) return block;
  const body = encodePaxRecords(pax);
  const paxHeader = Buffer.alloc(BLOCK);
  writeBytes(paxHeader, 0, 100, Buffer.from('././@PaxHeader'));
  writeOctal(paxHeader, 100, 8, 0o644);
  writeOctal(paxHeader, 108, 8, 0);
  writeOctal(paxHeader, 116, 8, 0);
  writeOctal(paxHeader, 124, 12, body.length);
  writeOctal(paxHeader, 136, 12, 0);
  paxHeader.write('x', 156, 'latin1');
  paxHeader.write('ustar\u000000', 257, 'latin1');
  writeChecksum(paxHeader);
  return Buffer.concat([paxHeader, body, Buffer.alloc(paddingFor(body.length)), block]);
}

/** `"<len> <key>=<value>\n"` records; the length counts itself. */
export function encodePaxRecords(records: Array<[string, Buffer]>): Buffer {
  const out: Buffer[] = [];
  for (const [key, value] of records) {
    const rest = Buffer.byteLength(key) + value.length + 3; // ' ' '=' '\n'
    let len = rest + String(rest).length;
    if (String(len).length !== String(rest).length) len = rest + String(len).length;
    out.push(Buffer.from(`${len} ${key}=`), value, Buffer.from('\n'));
  }
  return Buffer.concat(out);
}

export function decodePaxRecords(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < buf.length) {
    if (buf[pos] === 0) break; // some writers pad with NULs
    const space = buf.indexOf(0x20, pos);
    if (space < 0) throw badTar('a PAX record has no length');
    const len = Number.parseInt(buf.toString('latin1', pos, space), 10);
    if (!Number.isInteger(len) || len <= space - pos || pos + len > buf.length)
      throw badTar('a PAX record has a bad length');
    const record = buf.subarray(space + 1, pos + len);
    if (record[record.length - 1] !== 0x0a) throw badTar('a PAX record does not end with a newline');
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw badTar('a PAX record has no "="');
    out.set(record.toString('utf8', 0, eq), Buffer.from(record.subarray(eq + 1, record.length - 1)));
    pos += len;
  }
  return out;
}

/** The fields of one raw header block, before PAX or GNU long-name records apply. */
export interface RawHeader {
  name: string;
  nameBytes: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  devmajor: number;
  devminor: number;
}

/** Decode a header block; `null` for an all-zero block (end of archive). */
export function decodeHeader(block: Buffer): RawHeader | null {
  if (block.length !== BLOCK) throw badTar('truncated header');
  let unsigned = 0;
  let signed = 0;
  let any = 0;
  for (let i = 0; i < BLOCK; i++) {
    const raw = block[i];
    any |= raw;
    const b = i >= 148 && i < 156 ? 0x20 : raw;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (any === 0) return null;
  const stored = parseNumeric(block.subarray(148, 156));
  if (stored !== unsigned && stored !== signed) throw badTar('a header checksum does not match');
  const magic = block.toString('latin1', 257, 263);
  let nameBytes = cString(block.subarray(0, 100));
  if (magic === 'ustar\u0000') {
    const prefix = cString(block.subarray(345, 500));
    if (prefix.length > 0) nameBytes = Buffer.concat([prefix, Buffer.from('/'), nameBytes]);
  }
  return {
    name: nameBytes.toString('utf8'),
    nameBytes,
    mode: parseNumeric(block.subarray(100, 108)),
    uid: parseNumeric(block.subarray(108, 116)),
    gid: parseNumeric(block.subarray(116, 124)),
    size: parseNumeric(block.subarray(124, 136)),
    mtime: parseNumeric(block.subarray(136, 148)),
    typeflag: block.toString('latin1', 156, 157),
    linkname: cString(block.subarray(157, 257)).toString('utf8'),
    devmajor: parseNumeric(block.subarray(329, 337)),
    devminor: parseNumeric(block.subarray(337, 345)),
  };
}

export function xattrsFromPax(pax: ReadonlyMap<string, Buffer>): Map<string, Buffer> | undefined {
  let out: Map<string, Buffer> | undefined;
  for (const [key, value] of pax) {
    if (key.startsWith(XATTR_PREFIX)) {
      out ??= new Map();
      out.set(key.slice(XATTR_PREFIX.length), value);
    }
  }
  return out;
}

function cString(field: Buffer): Buffer {
  const nul = field.indexOf(0);
  return nul < 0 ? field : field.subarray(0, nul);
}

/** Octal (space/NUL terminated) or GNU base-256 numbers. */
function parseNumeric(field: Buffer): number {
  if (field[0] & 0x80) {
    // base-256, two's complement; first byte's top bit is the marker
    const negative = (field[0] & 0x40) !== 0;
    let value = 0;
    for (let i = 0; i < field.length; i++) {
      let byte = field[i];
      if (i === 0 && !negative) byte &= 0x7f;
      if (negative) byte ^= 0xff;
      value = value * 256 + byte;
    }
    return negative ? -(value + 1) : value;
  }
  // octal digits, with NULs and spaces allowed around them
  let start = 0;
  let end = field.length;
  while (start < end && (field[start] === 0 || field[start] === 0x20)) start++;
  while (end > start && (field[end - 1] === 0 || field[end - 1] === 0x20)) end--;
  let value = 0;
  for (let i = start; i < end; i++) {
    const d = field[i] - 0x30;
    if (d < 0 || d > 7) {
      throw badTar(`a numeric header field holds ${JSON.stringify(field.toString('latin1', start, end))}`);
    }
    value = value * 8 + d;
  }
  return value;
}

function maxOctal(width: number): number {
  return 8 ** (width - 1) - 1;
}

function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  block.write(`${value.toString(8).padStart(width - 1, '0')}\u0000`, offset, width, 'latin1');
}

function writeBytes(block: Buffer, offset: number, width: number, bytes: Buffer): void {
  bytes.copy(block, offset, 0, Math.min(width, bytes.length));
}

function writeChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i];
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
}

function isAscii(bytes: Buffer): boolean {
  for (const b of bytes) if (b > 0x7f) return false;
  return true;
}

/** Fit a name into ustar's name (100) and prefix (155) fields, splitting at a slash. */
function splitName(bytes: Buffer): { name: Buffer; prefix: Buffer } | undefined {
  if (bytes.length <= 100) return { name: bytes, prefix: Buffer.alloc(0) };
  // A trailing slash (directory) stays with the name part.
  for (let i = Math.min(bytes.length - 2, 155); i > 0; i--) {
    if (bytes[i] !== 0x2f) continue;
    const name = bytes.subarray(i + 1);
    if (name.length > 100) return undefined; // a shorter prefix only makes it longer
    if (name.length > 0) return { name, prefix: bytes.subarray(0, i) };
  }
  return undefined;
}
