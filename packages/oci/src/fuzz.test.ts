// Property tests of the tar reader and the unpacker: random bytes and random mutations of
// valid tars (plain and gzip) give entries or a typed UserError (OCI_BAD_TAR,
// OCI_LAYER_TOO_BIG, OCI_UNSAFE_PATH), never a TypeError, a RangeError or a hang; and an
// unpack of a mutated tar never touches anything outside its destination.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { isUserError } from '@stacker/plugin-api';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from './errors.js';
import { readTar } from './tar-reader.js';
import { tempDir } from './test-fixtures.js';
import { type EntrySpec, tarBytes } from './test-tar.js';
import { unpackLayer } from './unpack.js';

const SCALE = Number(process.env.STACKER_FUZZ_SCALE ?? 1);
export const FUZZ_RUNS = { random: 1500 * SCALE, mutated: 2000 * SCALE, unpack: 250 * SCALE };
const TYPED = new Set<string>([ERROR_CODES.badTar, ERROR_CODES.layerTooBig, ERROR_CODES.unsafePath]);
const LIMITS = { maxEntries: 10_000, maxBytes: 1 << 20 };

async function readAll(bytes: Buffer, chunk: number): Promise<number> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
  let n = 0;
  try {
    for await (const e of readTar(Readable.from(chunks), LIMITS)) {
      n++;
      // half of the bodies are read, half skipped: both paths must hold up
      if (n % 2 === 0) for await (const _ of e.body) void _;
    }
  } catch (e) {
    if (!isUserError(e) || !TYPED.has(e.code)) throw new Error(`untyped error: ${String(e)}`, { cause: e });
  }
  return n;
}

const name = fc.oneof(
  fc.constantFrom('a', 'a/b', 'd/', 'd/e/f', '../x', '/abs', '.wh.a', 'd/.wh..wh..opq', 'l', 'h'),
  fc.string({ minLength: 1, maxLength: 120 }),
);
const entry: fc.Arbitrary<EntrySpec> = fc.oneof(
  fc.record({ name, content: fc.uint8Array({ maxLength: 700 }).map((u) => Buffer.from(u)) }),
  fc.record({ name, type: fc.constant('directory' as const) }),
  fc.record({ name, type: fc.constant('symlink' as const), linkname: name }),
  fc.record({ name, type: fc.constant('hardlink' as const), linkname: name }),
  fc.record({ name, type: fc.constantFrom('char' as const, 'fifo' as const), devmajor: fc.nat(255) }),
  fc.record({
    name,
    content: fc.string({ maxLength: 20 }),
    uid: fc.nat(),
    gid: fc.nat(),
    mode: fc.nat(0o7777),
    mtime: fc.integer({ min: 0, max: 2 ** 34 }),
    xattrs: fc
      .dictionary(fc.constantFrom('user.a', 'user.b', 'trusted.x'), fc.uint8Array({ maxLength: 10 }))
      .map((d) => new Map(Object.entries(d).map(([k, v]) => [k, Buffer.from(v)]))),
  }),
);
const validTar = fc.array(entry, { maxLength: 8 }).map((specs) => tarBytes(...specs));

const mutation = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom('flip', 'set', 'truncate', 'insert', 'zero-block', 'octal'),
  byte: fc.nat(255),
  len: fc.integer({ min: 1, max: 600 }),
});
function mutate(b: Buffer, ms: Array<{ at: number; kind: string; byte: number; len: number }>): Buffer {
  let out = Buffer.from(b);
  for (const m of ms) {
    const i = out.length ? m.at % out.length : 0;
    switch (m.kind) {
      case 'flip':
        if (out.length) out[i] ^= 1 << (m.byte % 8);
        break;
      case 'set':
        if (out.length) out[i] = m.byte;
        break;
      case 'truncate':
        out = out.subarray(0, i);
        break;
      case 'insert':
        out = Buffer.concat([out.subarray(0, i), Buffer.alloc(m.len % 64, m.byte), out.subarray(i)]);
        break;
      case 'zero-block':
        out.fill(0, i - (i % 512), Math.min(out.length, i - (i % 512) + 512));
        break;
      case 'octal': {
        // a plausible-looking but wrong number in a header field, checksum fixed up
        const block = i - (i % 512);
        if (block + 512 > out.length) break;
        const field = [100, 108, 116, 124, 136][m.byte % 5];
        out.write(
          `${(m.at * 7919).toString(8).slice(0, 11).padStart(11, '0')}\u0000`,
          block + field,
          'latin1',
        );
        if (m.len % 2) out[block + field] = 0xff; // base-256
        out.fill(0x20, block + 148, block + 156);
        let sum = 0;
        for (let k = block; k < block + 512; k++) sum += out[k];
        out.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, block + 148, 8, 'latin1');
        break;
      }
    }
  }
  return out;
}

describe('tar reader under random input', () => {
  it('random bytes: entries or a typed error', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 3000 }),
        fc.integer({ min: 1, max: 1024 }),
        async (u, chunk) => {
          await readAll(Buffer.from(u), chunk);
        },
      ),
      { numRuns: FUZZ_RUNS.random },
    );
  });

  it('random bytes after a gzip magic: entries or a typed error', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 500 }), async (u) => {
        await readAll(Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.from(u)]), 64);
      }),
      { numRuns: Math.ceil(FUZZ_RUNS.random / 3) },
    );
  });

  it('mutated valid tars (plain and gzip): entries or a typed error', async () => {
    await fc.assert(
      fc.asyncProperty(
        validTar,
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 4096 }),
        async (tar, ms, gz, chunk) => {
          const mutated = mutate(tar, ms);
          await readAll(gz ? gzipSync(mutated) : mutated, chunk);
          if (gz) await readAll(mutate(gzipSync(tar), ms), chunk);
        },
      ),
      { numRuns: FUZZ_RUNS.mutated },
    );
  });

  it('valid tars read back entry for entry', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { maxLength: 6 }), async (specs) => {
        const n = await readAll(tarBytes(...specs), 512);
        expect(n).toBe(specs.length);
      }),
      { numRuns: 300 * SCALE },
    );
  });
});

/** Placeholders in names and link targets, replaced per case (see `resolveSpecs`). */
const SIDE_ABS = '@SIDE@';
const hostileName = fc.constantFrom('../side/x', '../sibling.txt', 'l/file', 'l/../../side/y', 'h');
const hostileLink = fc.constantFrom(
  SIDE_ABS,
  `${SIDE_ABS}/../sibling.txt`,
  '../side',
  '../../side',
  '..',
  '/',
);
/** Sequences that try to leave the rootfs one level up, into the watched siblings. */
const escapes: fc.Arbitrary<EntrySpec[]> = fc.oneof(
  // a symlink to an absolute (host) path, then a file written through it
  fc.record({ link: hostileLink, via: fc.constantFrom('l/file', 'l/sub/file', 'l') }).map(({ link, via }) => [
    { name: 'l', type: 'symlink' as const, linkname: link },
    { name: via, content: 'escaped' },
  ]),
  fc.record({ name: hostileName, content: fc.constant('escaped') }).map((e) => [e]),
  fc
    .record({ link: hostileLink })
    .map(({ link }) => [{ name: 'h', type: 'hardlink' as const, linkname: link }]),
  fc
    .record({ link: hostileLink })
    .map(({ link }) => [
      { name: 'd', type: 'symlink' as const, linkname: link },
      { name: 'd/', type: 'directory' as const, mode: 0o777, mtime: 7 },
      { name: 'd/.wh.sibling.txt' },
    ]),
);
/** Random entries with escape attempts mixed in. */
const hostileSpecs = fc
  .tuple(fc.array(entry, { maxLength: 6 }), fc.array(escapes, { maxLength: 2 }), fc.nat())
  .map(([plain, esc, at]) => {
    const out = [...plain];
    for (const e of esc) out.splice(out.length ? at % (out.length + 1) : 0, 0, ...e);
    return out;
  });

/** The entries with `@SIDE@` pointing at this case's watched sibling directory. */
function resolveSpecs(specs: EntrySpec[], side: string): EntrySpec[] {
  const sub = (v: string | undefined) => v?.split(SIDE_ABS).join(side);
  return specs.map((e) => ({ ...e, name: sub(e.name) as string, linkname: sub(e.linkname) }));
}

describe('unpack under random input', () => {
  let dir: string;
  // Everything under dir but the rootfs being written, without following symlinks (an
  // unpacked rootfs may hold a symlink to "/", and readdir({recursive}) on Node 20 follows
  // it): names, types, modes, sizes, times, link targets and file contents.
  const listing = (skip: string) => {
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const d of fs.readdirSync(join(dir, rel), { withFileTypes: true })) {
        const p = rel ? `${rel}/${d.name}` : d.name;
        if (p === skip) continue;
        const st = fs.lstatSync(join(dir, p));
        let what = `${p} ${st.mode.toString(8)} ${st.uid}:${st.gid}`;
        if (d.isSymbolicLink()) what += ` -> ${fs.readlinkSync(join(dir, p))}`;
        else if (d.isFile()) what += ` ${st.size} ${st.mtimeMs} ${fs.readFileSync(join(dir, p), 'latin1')}`;
        out.push(what);
        if (d.isDirectory()) walk(p);
      }
    };
    walk('');
    return out.sort().join('\n');
  };
  /** A case's destination roots/<i>/rootfs, with watched siblings next to it. */
  const prepare = (i: number) => {
    const caseDir = join(dir, 'roots', String(i));
    fs.mkdirSync(join(caseDir, 'side'), { recursive: true });
    fs.writeFileSync(join(caseDir, 'sibling.txt'), 'keep');
    fs.writeFileSync(join(caseDir, 'side', 'a'), 'keep');
    return {
      caseDir,
      rootfs: join(caseDir, 'rootfs'),
      skip: `roots/${i}/rootfs`,
      side: join(caseDir, 'side'),
    };
  };
  /** Unpack `tar` into a fresh case; whether anything outside its rootfs changed. */
  let n = 0;
  const unpackCase = async (
    tar: (side: string) => Buffer,
    unpack: (tar: Buffer, rootfs: string) => Promise<void>,
  ): Promise<string | undefined> => {
    const c = prepare(n++);
    const before = listing(c.skip);
    try {
      await unpack(tar(c.side), c.rootfs);
    } catch (e) {
      if (!isUserError(e) || !TYPED.has(e.code)) throw new Error(`untyped error: ${String(e)}`, { cause: e });
    }
    const after = listing(c.skip);
    // rm does not follow the symlinks inside: only this case's files go
    fs.rmSync(c.caseDir, { recursive: true, force: true });
    return after === before ? undefined : after;
  };
  const ours = (tar: Buffer, rootfs: string) =>
    unpackLayer(Readable.from([tar]), rootfs, { whiteouts: 'delete', limits: LIMITS });

  beforeAll(async () => {
    dir = await tempDir('oci-fuzz-');
    await fsp.mkdir(join(dir, 'outside', 'd'), { recursive: true });
    await fsp.writeFile(join(dir, 'outside', 'a'), 'keep');
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('the check sees a file written through a symlink to an absolute path', async () => {
    // a naive unpacker that follows the link on the host: the check must notice
    const naive = async (_tar: Buffer, rootfs: string) => {
      await fsp.mkdir(rootfs, { recursive: true });
      await fsp.symlink(join(rootfs, '..', 'side'), join(rootfs, 'l'));
      await fsp.writeFile(join(rootfs, 'l', 'file'), 'escaped');
    };
    expect(await unpackCase(() => Buffer.alloc(0), naive)).toContain('side/file');
    const dotdot = async (_tar: Buffer, rootfs: string) => {
      await fsp.mkdir(rootfs, { recursive: true });
      await fsp.writeFile(join(rootfs, '..', 'sibling.txt'), 'escaped');
    };
    expect(await unpackCase(() => Buffer.alloc(0), dotdot)).toContain('sibling.txt 100644 0:0 7 ');
  });

  it('mutated tars with escape attempts unpack or fail typed, and nothing outside the rootfs changes', async () => {
    const absoluteThenFile: EntrySpec[] = [
      { name: 'l', type: 'symlink', linkname: SIDE_ABS },
      { name: 'l/file', content: 'escaped' },
    ];
    await fc.assert(
      fc.asyncProperty(hostileSpecs, fc.array(mutation, { maxLength: 3 }), async (specs, ms) => {
        const changed = await unpackCase((side) => mutate(tarBytes(...resolveSpecs(specs, side)), ms), ours);
        expect(changed).toBeUndefined();
        expect(fs.readFileSync(join(dir, 'outside', 'a'), 'utf8')).toBe('keep');
      }),
      { numRuns: FUZZ_RUNS.unpack, examples: [[absoluteThenFile, []]] },
    );
  });
});
