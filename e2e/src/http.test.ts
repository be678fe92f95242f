// http(s) sources and imports against a local web server: downloaded once and kept in the
// stacker dir, a changed remote import rebuilds, hashes and --require-hash, failed downloads.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeWorkdir, stacker, workdir, write } from './harness.js';
import { entry, makeBusybox, readText, topLayer, unpack } from './oci-tools.js';

/**
 * The web server runs in its own process: the harness runs stacker synchronously, which
 * would stall a server in this one. It serves `<dir>/<path>` with a strong ETag, counts
 * requests per method and path, and reports them at `/__counts`.
 */
const SERVER = `
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const root = process.argv[1];
const counts = {};
const server = http.createServer((req, res) => {
  if (req.url === '/__counts') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(counts));
    return;
  }
  const key = req.method + ' ' + req.url;
  counts[key] = (counts[key] || 0) + 1;
  let body;
  try {
    body = fs.readFileSync(path.join(root, path.normalize(decodeURIComponent(req.url))));
  } catch {
    res.writeHead(404, 'Not Found');
    res.end('not found');
    return;
  }
  const etag = '"' + crypto.createHash('sha256').update(body).digest('hex').slice(0, 16) + '"';
  res.writeHead(200, { 'content-length': body.length, etag });
  res.end(req.method === 'HEAD' ? undefined : body);
});
server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
`;

let server: ChildProcess;
let served: string;
let base: string;

async function startServer(): Promise<void> {
  served = mkdtempSync(join(tmpdir(), 'stacker-http-served-'));
  server = spawn(process.execPath, ['-e', SERVER, served], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    server.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    server.once('exit', (code) => reject(new Error(`the test web server exited (${code})`)));
  });
  base = `http://127.0.0.1:${port}`;
}

async function counts(): Promise<Record<string, number>> {
  return (await fetch(`${base}/__counts`)).json() as Promise<Record<string, number>>;
}

const serve = (name: string, text: string) => writeFileSync(join(served, name), text);
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

function built(output: string): string[] {
  return [...output.matchAll(/^filesystem (\S+) built successfully$/gm)].map((m) => m[1]).sort();
}

function cached(output: string): string[] {
  return [...output.matchAll(/^found cached layer (\S+)$/gm)].map((m) => m[1]).sort();
}

/** Every path under `dir`, relative (the test runs as root: it can read the test user's files). */
function allFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true }).map(String);
}

let dir: string;

beforeAll(async () => {
  await startServer();
  dir = workdir('stacker-e2e-http-');
  makeBusybox(join(dir, 'busybox.tar.gz'));
  copyFileSync(join(dir, 'busybox.tar.gz'), join(served, 'busybox.tar.gz'));
});

afterAll(() => {
  if (server.exitCode === null) server.kill();
  rmSync(served, { recursive: true, force: true });
  removeWorkdir(dir);
});

describe('http downloads', () => {
  const yaml = () => `
one:
  from:
    type: tar
    url: ${base}/busybox.tar.gz
  run: echo one > /one
two:
  from:
    type: tar
    url: ${base}/busybox.tar.gz
  run: echo two > /two
imp:
  from:
    type: built
    tag: one
  imports:
    - ${base}/data.txt
  run: cp /stacker/imports/data.txt /data.txt
`;

  beforeAll(() => {
    serve('data.txt', 'version one\n');
    write(join(dir, 'stacker.yaml'), yaml());
  });

  it('downloads a tar base once for two stanzas, and an import once', async () => {
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual(['imp', 'one', 'two']);
    const c = await counts();
    expect(c['GET /busybox.tar.gz']).toBe(1);
    expect(c['GET /data.txt']).toBe(1);
    expect(readText(join(unpack(dir, join(dir, 'oci'), 'imp', join(dir, 'u1')), 'data.txt'))).toBe(
      'version one\n',
    );
    // kept in the stacker dir
    expect(allFiles(join(dir, '.stacker')).some((f) => f.startsWith('downloads/'))).toBe(true);
  });

  it('a second build downloads nothing and uses the cache', async () => {
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(cached(r.output)).toEqual(['imp', 'one', 'two']);
    const c = await counts();
    expect(c['GET /busybox.tar.gz']).toBe(1);
    expect(c['GET /data.txt']).toBe(1);
    // the import was asked whether it changed
    expect(c['HEAD /data.txt']).toBeGreaterThanOrEqual(1);
  });

  it('a changed remote import rebuilds its stanza on the next build', async () => {
    serve('data.txt', 'version two\n');
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual(['imp']);
    expect(cached(r.output)).toEqual(['one', 'two']);
    expect((await counts())['GET /data.txt']).toBe(2);
    expect(readText(join(unpack(dir, join(dir, 'oci'), 'imp', join(dir, 'u2')), 'data.txt'))).toBe(
      'version two\n',
    );
    const again = stacker(['build'], { cwd: dir });
    expect(cached(again.output)).toEqual(['imp', 'one', 'two']);
  });
});

describe('hashes of http imports', () => {
  const stanza = (name: string, extra: string) => `
${name}:
  from:
    type: tar
    url: ./busybox.tar.gz
  imports:
    - path: ${base}/hashed.txt
${extra}  run: cp /stacker/imports/hashed.txt /hashed.txt
`;

  beforeAll(() => serve('hashed.txt', 'hashed content\n'));

  it('--require-hash refuses an http import without a hash', async () => {
    const before = (await counts())['GET /hashed.txt'] ?? 0;
    write(join(dir, 'nohash.yaml'), stanza('nohash', ''));
    const r = stacker(['build', '--require-hash', '-f', 'nohash.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toMatch(new RegExp(`remote import ${base}/hashed.txt without a hash.*--require-hash`));
    expect((await counts())['GET /hashed.txt'] ?? 0).toBe(before);
  });

  it('--require-hash accepts one with the right hash', () => {
    write(join(dir, 'righthash.yaml'), stanza('righthash', `      hash: ${sha256('hashed content\n')}\n`));
    const r = stacker(['build', '--require-hash', '-f', 'righthash.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual(['righthash']);
  });

  it('a wrong hash fails the build', () => {
    const wrong = 'b'.repeat(64);
    write(join(dir, 'wronghash.yaml'), stanza('wronghash', `      hash: ${wrong}\n`));
    const r = stacker(['build', '-f', 'wronghash.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(`${wrong} is different than the actual hash ${sha256('hashed content\n')}`);
  });
});

describe('failed downloads', () => {
  it('a 404 import is a clear error naming the URL and leaves no partial file', () => {
    write(
      join(dir, 'missing.yaml'),
      `missing:\n  from:\n    type: tar\n    url: ./busybox.tar.gz\n  imports:\n    - ${base}/nothing-here.txt\n  run: echo never\n`,
    );
    const r = stacker(['build', '-f', 'missing.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(`couldn't download ${base}/nothing-here.txt for missing: HTTP 404 Not Found`);
    expect(allFiles(join(dir, '.stacker')).filter((f) => f.includes('partial'))).toEqual([]);
  });

  it('a 404 tar base is a clear error naming the URL and leaves no partial file', () => {
    write(join(dir, 'nobase.yaml'), `nobase:\n  from:\n    type: tar\n    url: ${base}/nothing.tar.gz\n`);
    const r = stacker(['build', '-f', 'nobase.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(`couldn't download ${base}/nothing.tar.gz for nobase: HTTP 404 Not Found`);
    expect(allFiles(join(dir, '.stacker')).filter((f) => f.includes('partial'))).toEqual([]);
  });
});

describe('import dest rules', () => {
  it('an import with a dest is not also under /stacker/imports; mode applies without dest; dir/ imports entries', () => {
    serve('tool.sh', '#!/bin/sh\necho tool\n');
    mkdirSync(join(dir, 'conf.d'), { recursive: true });
    write(join(dir, 'conf.d', 'a.conf'), 'a\n');
    write(join(dir, 'conf.d', 'b.conf'), 'b\n');
    write(join(dir, 'plain.txt'), 'plain\n');
    write(
      join(dir, 'dest.yaml'),
      `dests:
  from:
    type: tar
    url: ./busybox.tar.gz
  imports:
    - path: ${base}/tool.sh
      dest: /usr/local/bin/tool
      mode: 0755
    - path: ./conf.d/
      dest: /etc/app
    - path: ./plain.txt
      mode: 0600
  run: |
    ls -a /stacker/imports > /imports.list
    stat -c %a /stacker/imports/plain.txt > /plain.mode
`,
    );
    const r = stacker(['build', '-f', 'dest.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const entries = topLayer(join(dir, 'oci'), 'dests');
    expect(entry(entries, 'usr/local/bin/tool')?.mode).toBe('-rwxr-xr-x');
    expect(entry(entries, 'etc/app/a.conf')).toBeDefined();
    expect(entry(entries, 'etc/app/b.conf')).toBeDefined();
    expect(entry(entries, 'etc/app/conf.d')).toBeUndefined();
    const root = unpack(dir, join(dir, 'oci'), 'dests', join(dir, 'u-dests'));
    expect(readText(join(root, 'imports.list')).split('\n').filter(Boolean).sort()).toEqual([
      '.',
      '..',
      'plain.txt',
    ]);
    expect(readText(join(root, 'plain.mode')).trim()).toBe('600');
  });
});
