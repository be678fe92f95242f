import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { overlayTarToOci } from './overlay-tar.js';
import { END_OF_ARCHIVE, encodeHeader, paddingFor, type TarHeader } from './tar-header.js';
import { readTar } from './tar-reader.js';

function tarOf(entries: Array<TarHeader & { content?: string }>): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.content ?? '');
    parts.push(encodeHeader({ ...e, size: body.length }));
    if (e.type === 'file') parts.push(body, Buffer.alloc(paddingFor(body.length)));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

async function listing(s: Readable): Promise<string[]> {
  const out: string[] = [];
  for await (const { header, body } of readTar(s)) {
    let content = '';
    for await (const c of body) content += c.toString();
    const x = header.xattrs ? ` ${[...header.xattrs.keys()].sort().join(',')}` : '';
    out.push(`${header.type} ${header.name}${content ? ` =${content}` : ''}${x}`);
  }
  return out;
}

const base = { mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1 };

describe('overlayTarToOci', () => {
  it('turns 0/0 character devices into .wh. files and an opaque xattr into .wh..wh..opq', async () => {
    const tar = tarOf([
      { ...base, name: './', type: 'directory' },
      {
        ...base,
        name: 'd/',
        type: 'directory',
        xattrs: new Map([['user.overlay.opaque', Buffer.from('y')]]),
      },
      {
        ...base,
        name: 'd/new',
        type: 'file',
        content: 'new\n',
        xattrs: new Map([['user.keep', Buffer.from('1')]]),
      },
      { ...base, name: 'etc/', type: 'directory' },
      { ...base, name: 'etc/passwd', type: 'char', devmajor: 0, devminor: 0 },
      { ...base, name: 'dev/null', type: 'char', devmajor: 1, devminor: 3 },
      { ...base, name: 'hl', type: 'hardlink', linkname: 'd/new' },
    ]);
    expect(await listing(overlayTarToOci(Readable.from([tar])))).toEqual([
      'directory d/',
      'file d/.wh..wh..opq',
      'file d/new =new\n user.keep',
      'directory etc/',
      'file etc/.wh.passwd',
      'char dev/null',
      'hardlink hl',
    ]);
  });

  it.runIf(process.geteuid?.() === 0 && existsSync('/usr/bin/sqfs2tar') && existsSync('/usr/bin/mksquashfs'))(
    'reads a squashfs with overlay whiteouts through sqfs2tar',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'overlay-tar-'));
      try {
        const root = join(dir, 'root');
        mkdirSync(join(root, 'opaque'), { recursive: true });
        writeFileSync(join(root, 'opaque/kept'), 'kept\n');
        execFileSync('setfattr', ['-n', 'user.overlay.opaque', '-v', 'y', join(root, 'opaque')]);
        execFileSync('mknod', [join(root, 'deleted'), 'c', '0', '0']);
        execFileSync('mksquashfs', [root, join(dir, 'l.sqfs'), '-noappend', '-quiet', '-no-progress']);
        const child = spawn('sqfs2tar', [join(dir, 'l.sqfs')], { stdio: ['ignore', 'pipe', 'inherit'] });
        expect(await listing(overlayTarToOci(child.stdout))).toEqual([
          'file .wh.deleted',
          'directory opaque/',
          'file opaque/.wh..wh..opq',
          'file opaque/kept =kept\n',
        ]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
