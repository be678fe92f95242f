// Helpers shared by the tests (not part of the build).
import { execFile } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Change } from '@stacker/plugin-api';
import { sortChanges } from './changes.js';

export const run = promisify(execFile);
export const isRoot = process.getuid?.() === 0;
/** Owner of the fixture files as seen by the tests: root inside the namespace is us outside. */
export const fixtureUid = isRoot ? 0 : (process.getuid?.() ?? 0);
export const fixtureGid = isRoot ? 0 : (process.getgid?.() ?? 0);
/** Setting arbitrary owners on unpack needs root (of a user namespace with those ids mapped). */
export const canChown = isRoot;

export async function tempDir(prefix = 'oci-test-'): Promise<string> {
  return fsp.mkdtemp(join(tmpdir(), prefix));
}

/** A v3 file capability (cap_net_bind_service, effective) with the given namespace root id. */
export function capabilityV3(rootid: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0x03000001, 0); // revision 3 | effective
  b.writeUInt32LE(1 << 10, 4); // permitted: CAP_NET_BIND_SERVICE
  b.writeUInt32LE(0, 8);
  b.writeUInt32LE(0, 12);
  b.writeUInt32LE(0, 16);
  b.writeUInt32LE(rootid, 20);
  return b;
}

export const BINARY_XATTR = Buffer.from([0x00, 0xff, 0x80, 0xc3, 0x28, 0x0a, 0x3d, 0x20]);
export const LONG_DIR = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(90)}`;

// Runs as a separate process so that, when the tests are not root, it can run as root of
// a user namespace (`unshare --user --map-root-user`), where chown and security.* work.
const FIXTURE_SCRIPT = `
const fs = require('node:fs');
const path = require('node:path');
const xattr = require(process.env.XATTR_MODULE);
const root = process.env.FIXTURE_ROOT;
const cap = Buffer.from(process.env.CAP_HEX, 'hex');
const bin = Buffer.from(process.env.BIN_HEX, 'hex');
const w = (p, c, m) => { fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true }); fs.writeFileSync(path.join(root, p), c); if (m !== undefined) fs.chmodSync(path.join(root, p), m); };
w('bin/tool', '#!/bin/sh\\necho tool\\n', 0o4755);
w('etc/hosts.txt', '127.0.0.1 localhost\\n', 0o644);
fs.linkSync(path.join(root, 'etc/hosts.txt'), path.join(root, 'etc/hard'));
fs.symlinkSync('hosts.txt', path.join(root, 'etc/link'));
w('data/attr', 'has xattrs\\n', 0o600);
xattr.setAttributeSync(path.join(root, 'data/attr'), 'user.test', bin);
let capOk = true;
try { xattr.setAttributeSync(path.join(root, 'bin/tool'), 'security.capability', cap); } catch (e) { capOk = false; }
const big = Buffer.alloc(300 * 1024); for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
w('data/big', big);
w('data/x70000', 'owned by 70000\\n', 0o640);
let chownOk = true;
try { fs.chownSync(path.join(root, 'data/x70000'), 70000, 70001); } catch (e) { chownOk = false; fs.rmSync(path.join(root, 'data/x70000')); }
fs.mkdirSync(path.join(root, 'tmp'), { mode: 0o1777 }); fs.chmodSync(path.join(root, 'tmp'), 0o1777);
w(process.env.LONG_DIR + '/a-file-with-a-long-name.txt', 'deep\\n');
w('gone', 'to be deleted\\n');
w('olddir/child', 'hidden by opaque\\n');
fs.mkdirSync(path.join(root, 'empty'));
const t = new Date('2001-02-03T04:05:06Z');
const walk = (d) => { for (const n of fs.readdirSync(d)) { const p = path.join(d, n); const st = fs.lstatSync(p); if (st.isDirectory()) walk(p); fs.lutimesSync(p, t, t); } };
walk(root); fs.utimesSync(root, t, t);
process.stdout.write(JSON.stringify({ capOk, chownOk }));
`;

export interface Fixture {
  root: string;
  /** Whether the v3 security.capability could be set (needs CAP_SETFCAP). */
  capOk: boolean;
  /** Whether data/x70000 could be owned by 70000 (else the tests add it synthetically). */
  chownOk: boolean;
}

/** Build the fixture tree; as root directly, otherwise inside a user namespace. */
export async function makeFixture(root: string): Promise<Fixture> {
  await fsp.mkdir(root, { recursive: true });
  const require = createRequire(import.meta.url);
  const env = {
    ...process.env,
    XATTR_MODULE: require.resolve('@napi-rs/xattr'),
    FIXTURE_ROOT: root,
    CAP_HEX: capabilityV3(1000).toString('hex'),
    BIN_HEX: BINARY_XATTR.toString('hex'),
    LONG_DIR,
  };
  const argv = [process.execPath, '-e', FIXTURE_SCRIPT];
  const [cmd, ...args] = isRoot ? argv : ['unshare', '--user', '--map-root-user', ...argv];
  const { stdout } = await run(cmd, args, { env });
  return { root, ...JSON.parse(stdout) };
}

/** `add` changes for every path below `root`, in layer order. */
export async function walkChanges(
  root: string,
  skip: (rel: string) => boolean = () => false,
): Promise<Change[]> {
  const out: Change[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of await fsp.readdir(join(root, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      if (skip(r)) continue;
      out.push({ kind: 'add', path: r, source: join(root, r) });
      if ((await fsp.lstat(join(root, r))).isDirectory()) await walk(r);
    }
  };
  await walk('');
  return sortChanges(out);
}

export async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}
