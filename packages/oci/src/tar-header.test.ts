import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { decodeHeader, END_OF_ARCHIVE, encodeHeader, type TarHeader } from './tar-header.js';
import { readTar } from './tar-reader.js';
import { BINARY_XATTR, run, tempDir } from './test-fixtures.js';

function archive(headers: Array<{ h: TarHeader; content?: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  for (const { h, content } of headers) {
    parts.push(encodeHeader(h));
    if (content) parts.push(content, Buffer.alloc((512 - (content.length % 512)) % 512));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

const base: TarHeader = { name: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1000 };

describe('tar headers', () => {
  it('writes a plain ustar header with octal fields, empty uname/gname and a valid checksum', () => {
    const block = encodeHeader({
      ...base,
      name: 'etc/passwd',
      mode: 0o4755,
      uid: 1000,
      gid: 100,
      size: 5,
      mtime: 0o1234567,
    });
    expect(block.length).toBe(512);
    expect(block.toString('latin1', 0, 10)).toBe('etc/passwd');
    expect(block.toString('latin1', 100, 108)).toBe('0004755\0');
    expect(block.toString('latin1', 108, 116)).toBe('0001750\0');
    expect(block.toString('latin1', 257, 265)).toBe('ustar\u000000');
    expect(block.subarray(265, 329).every((b) => b === 0)).toBe(true);
    const raw = decodeHeader(block);
    expect(raw).toMatchObject({
      name: 'etc/passwd',
      mode: 0o4755,
      uid: 1000,
      gid: 100,
      size: 5,
      mtime: 0o1234567,
      typeflag: '0',
    });
  });

  it('rejects a header whose checksum is wrong', () => {
    const block = encodeHeader(base);
    block[0] ^= 1;
    expect(() => decodeHeader(block)).toThrow(/checksum/);
  });

  it('splits names over prefix/name and uses PAX beyond that', async () => {
    const split = `${'a'.repeat(120)}/${'b'.repeat(90)}`;
    const huge = `${'x'.repeat(200)}/${'y'.repeat(150)}`;
    const blockSplit = encodeHeader({ ...base, name: split });
    expect(blockSplit.length).toBe(512); // fits ustar: no PAX
    expect(encodeHeader({ ...base, name: huge }).length).toBeGreaterThan(512);
    const buf = archive([
      { h: { ...base, name: split } },
      { h: { ...base, name: huge } },
      { h: { ...base, name: 'l', type: 'symlink', linkname: `/${'t'.repeat(300)}` } },
      { h: { ...base, name: 'ünïcode' } },
    ]);
    const names: string[] = [];
    for await (const e of readTar(Readable.from([buf]))) names.push(e.header.linkname ?? e.header.name);
    expect(names).toEqual([split, huge, `/${'t'.repeat(300)}`, 'ünïcode']);
  });

  it('carries uids beyond the octal limit and binary xattrs through PAX, readable by GNU tar', async () => {
    const xattrs = new Map([
      ['user.bin', BINARY_XATTR],
      ['security.capability', Buffer.from('0100000200040000000000000000000000000000', 'hex')],
    ]);
    const buf = archive([
      { h: { ...base, name: 'big-ids', uid: 70000, gid: 70001, size: 3 }, content: Buffer.from('abc') },
      { h: { ...base, name: 'huge-ids', uid: 3_000_000, gid: 4_000_000 } },
      { h: { ...base, name: 'x', xattrs } },
    ]);
    const seen: TarHeader[] = [];
    const bodies: string[] = [];
    for await (const e of readTar(Readable.from([buf]))) {
      seen.push(e.header);
      const chunks: Buffer[] = [];
      for await (const c of e.body) chunks.push(c);
      bodies.push(Buffer.concat(chunks).toString());
    }
    expect(seen[0]).toMatchObject({ uid: 70000, gid: 70001, size: 3 });
    expect(bodies[0]).toBe('abc');
    expect(seen[1]).toMatchObject({ uid: 3_000_000, gid: 4_000_000 });
    expect(seen[2].xattrs?.get('user.bin')?.equals(BINARY_XATTR)).toBe(true);
    expect(seen[2].xattrs?.get('security.capability')?.toString('hex')).toBe(
      '0100000200040000000000000000000000000000',
    );

    const dir = await tempDir();
    await fsp.writeFile(join(dir, 'a.tar'), buf);
    const { stdout } = await run('tar', ['--numeric-owner', '-tvf', join(dir, 'a.tar')]);
    expect(stdout).toMatch(/70000\/70001 .* big-ids/);
    expect(stdout).toMatch(/3000000\/4000000 .* huge-ids/);
    await fsp.rm(dir, { recursive: true });
  });

  it('lets an unread body be skipped and reports a truncated archive', async () => {
    const buf = archive([
      { h: { ...base, name: 'a', size: 700 }, content: Buffer.alloc(700, 1) },
      { h: { ...base, name: 'b', size: 1 }, content: Buffer.from('z') },
    ]);
    const names: string[] = [];
    for await (const e of readTar(Readable.from([buf.subarray(0, 100), buf.subarray(100)])))
      names.push(e.header.name);
    expect(names).toEqual(['a', 'b']);
    const truncated = async () => {
      for await (const e of readTar(Readable.from([buf.subarray(0, 900)])))
        for await (const _ of e.body) void _;
    };
    await expect(truncated()).rejects.toThrow(/ends inside a file/);
  });
});
