// `insecure` (stacker's `insecure: true` and `--skip-tls`) against registries with a
// self-signed certificate and without TLS at all, the token service's answers, and the
// chunk sizes taken from the environment.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isUserError } from '@stacker/plugin-api';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from './client.js';
import { digestOf, FakeRegistry } from './fake-registry.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
let certDir: string;
let tls: { key: Buffer; cert: Buffer };

beforeAll(() => {
  // a certificate nobody trusts, made for this run
  certDir = mkdtempSync(join(tmpdir(), 'stacker-tls-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      join(certDir, 'key.pem'),
      '-out',
      join(certDir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  );
  tls = { key: readFileSync(join(certDir, 'key.pem')), cert: readFileSync(join(certDir, 'cert.pem')) };
});
afterAll(() => rmSync(certDir, { recursive: true, force: true }));

const running: FakeRegistry[] = [];
async function registry(opts?: ConstructorParameters<typeof FakeRegistry>[0]) {
  const r = await new FakeRegistry(opts).start();
  running.push(r);
  return r;
}
afterEach(async () => {
  while (running.length) await running.pop()!.stop();
});

function client(r: FakeRegistry, extra: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}) {
  return new RegistryClient({ registry: r.host, retryDelayMs: 1, credentialFiles: [], ...extra });
}

function seed(r: FakeRegistry, repo = 'lib/app', tag = 'v1') {
  const layer = randomBytes(2000);
  const l = {
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    digest: r.putBlob(repo, layer),
    size: 2000,
  };
  const cfg = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const c = {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: r.putBlob(repo, cfg),
    size: cfg.length,
  };
  return r.putManifest(
    repo,
    tag,
    { schemaVersion: 2, mediaType: OCI_MANIFEST, config: c, layers: [l] },
    OCI_MANIFEST,
  );
}

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (!isUserError(e)) throw e;
    return { code: e.code, message: e.message };
  }
  throw new Error('expected a failure');
}

describe('insecure registries', () => {
  it('a self-signed certificate is refused with a hint, unless insecure', async () => {
    const r = await registry({ tls });
    const m = seed(r);
    const e = await failure(client(r).getRawManifest('lib/app', 'v1'));
    expect(e.code).toBe('REGISTRY_TLS');
    expect(e.message).toMatch(
      new RegExp(
        `^registry ${r.host.replace(/\./g, '\\.')} repository lib/app: fetching tag "v1" failed \\([A-Z_]+\\): its TLS certificate is not trusted; .*--skip-tls \\(publish\\) or insecure: true \\(from:\\)\\.$`,
      ),
    );
    const c = client(r, { insecure: true });
    expect((await c.getRawManifest('lib/app', 'v1')).digest).toBe(m.digest);
    // still https: the certificate was not checked, the connection still encrypted
    expect(c.baseUrl).toBe(`https://${r.host}`);
    expect(r.requests).toContain('GET /v2/lib/app/manifests/v1');
  });

  it('an insecure client falls back to plain http, once, when the registry has no TLS', async () => {
    const r = await registry();
    const m = seed(r);
    const c = client(r, { insecure: true });
    expect(c.baseUrl).toBe(`https://${r.host}`);
    expect((await c.getRawManifest('lib/app', 'v1')).digest).toBe(m.digest);
    expect(c.baseUrl).toBe(`http://${r.host}`);
    // a whole push then goes over http without trying TLS again
    const bytes = randomBytes(100);
    expect(
      await c.pushBlob(
        'lib/other',
        { mediaType: 'application/octet-stream', digest: digestOf(bytes), size: 100 },
        async () => Readable.from([bytes]),
      ),
    ).toBe('uploaded');
    expect(r.blobs.get(digestOf(bytes))).toEqual(bytes);

    // without insecure, the same registry is a TLS error that says what to do
    const e = await failure(client(r).getRawManifest('lib/app', 'v1'));
    expect(e.code).toBe('REGISTRY_TLS');
    expect(e.message).toContain(
      'the registry does not seem to speak TLS; use --skip-tls (publish) or insecure: true (from:)',
    );
  });

  it('the token service of an insecure registry is reached without certificate checks too', async () => {
    const r = await registry({ tls, auth: 'bearer', users: { u: 'p' } });
    const m = seed(r);
    const c = client(r, { insecure: true, username: 'u', password: 'p' });
    expect((await c.getRawManifest('lib/app', 'v1')).digest).toBe(m.digest);
    expect(r.tokenRequests.length).toBeGreaterThan(0);
  });
});

describe('token service answers', () => {
  for (const [answer, why] of [
    [null, 'the answer is not a JSON object'],
    [42, 'the answer is not a JSON object'],
    [['t'], 'the answer is not a JSON object'],
    [{}, 'the answer has no token'],
    [{ token: 5 }, 'the answer has no token'],
    [{ token: '', access_token: { a: 1 } }, 'the answer has no token'],
  ] as const) {
    it(`${JSON.stringify(answer)} is an error naming the registry and the realm`, async () => {
      const r = await registry({ auth: 'bearer', anonymousPull: true, tokenAnswer: answer });
      seed(r);
      const e = await failure(client(r, { insecure: true }).getRawManifest('lib/app', 'v1'));
      expect(e.code).toBe('REGISTRY_BAD_RESPONSE');
      expect(e.message).toBe(
        `registry ${r.host} repository lib/app: fetching tag "v1": getting a token from http://${r.host}/token failed: ${why}.`,
      );
    });
  }

  it('an access_token is used when there is no token', async () => {
    const granted = Buffer.from(JSON.stringify(['repository:lib/app:pull'])).toString('base64');
    const r = await registry({ auth: 'bearer', tokenAnswer: { access_token: granted, expires_in: 'x' } });
    const m = seed(r);
    expect((await client(r, { insecure: true }).getRawManifest('lib/app', 'v1')).digest).toBe(m.digest);
  });
});

describe('chunk sizes from the environment', () => {
  it('STACKER_REGISTRY_CHUNK_THRESHOLD and _SIZE make a small blob go up in PATCH chunks', async () => {
    const r = await registry();
    const bytes = randomBytes(3500);
    const desc = { mediaType: 'application/octet-stream', digest: digestOf(bytes), size: bytes.length };
    const c = client(r, {
      insecure: true,
      env: { STACKER_REGISTRY_CHUNK_THRESHOLD: '1000', STACKER_REGISTRY_CHUNK_SIZE: '1k' },
    });
    expect(await c.pushBlob('lib/x', desc, async () => Readable.from([bytes]))).toBe('uploaded');
    expect(r.requests.filter((q) => q.startsWith('PATCH ')).length).toBe(4);
    expect(r.blobs.get(desc.digest)).toEqual(bytes);
    // and without them one PUT carries it
    const r2 = await registry();
    await client(r2, { insecure: true, env: {} }).pushBlob('lib/x', desc, async () => Readable.from([bytes]));
    expect(r2.requests.filter((q) => q.startsWith('PATCH ')).length).toBe(0);
  });

  it('a value that is not a size is an error naming the variable', () => {
    expect(
      () => new RegistryClient({ registry: 'h', env: { STACKER_REGISTRY_CHUNK_THRESHOLD: 'lots' } }),
    ).toThrow(
      '$STACKER_REGISTRY_CHUNK_THRESHOLD is "lots", not a size; give a number of bytes (or with K, M or G)',
    );
  });
});
