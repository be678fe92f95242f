// Exported as `@stacker/registry/testing`: a fake registry for the tests of plugins that
// talk to registries. Never used by stacker itself.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

/**
 * A tiny in-process registry speaking enough of the distribution API for unit tests:
 * blobs (HEAD/GET, uploads monolithic and chunked, cross-repository mounts), manifests by
 * tag and digest, basic or bearer auth, and injectable faults. Not a registry to trust.
 */
export interface FakeRegistryOptions {
  auth?: 'none' | 'basic' | 'bearer';
  users?: Record<string, string>;
  /** With bearer auth: may anonymous users pull? */
  anonymousPull?: boolean;
  /** Serve https with this key and certificate (PEM) instead of plain http. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /**
   * With bearer auth: what the token service answers instead of a token (any JSON value,
   * e.g. `null`), to test clients against broken token services.
   */
  tokenAnswer?: unknown;
}

interface Upload {
  repo: string;
  chunks: Buffer[];
  size: number;
}

export class FakeRegistry {
  readonly blobs = new Map<string, Buffer>();
  readonly repoBlobs = new Map<string, Set<string>>();
  readonly manifests = new Map<string, Map<string, { bytes: Buffer; mediaType: string }>>();
  readonly uploads = new Map<string, Upload>();
  /** `METHOD path` of every request, in order. */
  readonly requests: string[] = [];
  readonly tokenRequests: string[] = [];
  /** Answer the next N registry requests with 503. */
  failNext = 0;
  /** The `Retry-After` header of those 503 answers, if any. */
  retryAfter?: string;
  /** Cut the connection of the next N requests. */
  resetNext = 0;
  /** Serve these blobs with wrong content. */
  readonly corrupt = new Set<string>();
  /** Serve these blobs cut off halfway (once each), then correctly. */
  readonly truncateOnce = new Set<string>();
  /**
   * Decide a fault for each registry request (after the counters above): cut the
   * connection, answer with a status, or for blob GETs serve them cut off, corrupt, or
   * with bytes too many. `undefined` serves the request normally.
   */
  fault?: (method: string, path: string) => Fault | undefined;
  /** Faults injected by `fault`, by kind. */
  readonly injected: Record<string, number> = {};
  private server!: Server;
  port = 0;

  constructor(private readonly opts: FakeRegistryOptions = {}) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** `https` with the `tls` option, else `http`. */
  get scheme(): 'http' | 'https' {
    return this.opts.tls ? 'https' : 'http';
  }

  async start(): Promise<this> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((e) => {
        res.statusCode = 500;
        res.end(String(e));
      });
    };
    this.server = this.opts.tls
      ? createTlsServer({ key: this.opts.tls.key, cert: this.opts.tls.cert }, handler)
      : createServer(handler);
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  // ---- seeding --------------------------------------------------------------------------

  putBlob(repo: string, bytes: Buffer): string {
    const d = digestOf(bytes);
    this.blobs.set(d, bytes);
    this.repo(repo).add(d);
    return d;
  }

  putManifest(
    repo: string,
    ref: string,
    value: unknown,
    mediaType: string,
  ): { digest: string; size: number; bytes: Buffer } {
    const bytes = Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));
    const d = digestOf(bytes);
    const m = this.manifestsOf(repo);
    m.set(ref, { bytes, mediaType });
    m.set(d, { bytes, mediaType });
    return { digest: d, size: bytes.length, bytes };
  }

  repo(name: string): Set<string> {
    let s = this.repoBlobs.get(name);
    if (!s) {
      s = new Set();
      this.repoBlobs.set(name, s);
    }
    return s;
  }

  manifestsOf(repo: string): Map<string, { bytes: Buffer; mediaType: string }> {
    let m = this.manifests.get(repo);
    if (!m) {
      m = new Map();
      this.manifests.set(repo, m);
    }
    return m;
  }

  // ---- serving --------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${this.host}`);
    const body = await readBody(req);
    if (url.pathname === '/token') return this.token(req, url, res);
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (this.resetNext > 0) {
      this.resetNext--;
      req.socket.destroy();
      return;
    }
    if (this.failNext > 0) {
      this.failNext--;
      if (this.retryAfter !== undefined) res.setHeader('retry-after', this.retryAfter);
      json(res, 503, { errors: [{ code: 'UNAVAILABLE', message: 'try later' }] });
      return;
    }
    const fault = this.fault?.(req.method ?? 'GET', url.pathname);
    if (fault !== undefined) this.injected[String(fault)] = (this.injected[String(fault)] ?? 0) + 1;
    if (fault === 'reset') {
      req.socket.destroy();
      return;
    }
    if (typeof fault === 'number') {
      json(res, fault, { errors: [{ code: 'FAULT', message: `injected ${fault}` }] });
      return;
    }
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      if (!this.authorized(req, res, undefined, 'pull')) return;
      json(res, 200, {});
      return;
    }
    let m = /^\/v2\/(.+)\/blobs\/uploads\/(.*)$/.exec(url.pathname);
    if (m) return this.upload(req, res, url, m[1], m[2], body);
    m = /^\/v2\/(.+)\/(blobs|manifests)\/([^/]+)$/.exec(url.pathname);
    if (!m) {
      json(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: 'no route' }] });
      return;
    }
    const [, repo, kind, ref] = m;
    const write =
      req.method === 'PUT' || req.method === 'POST' || req.method === 'PATCH' || req.method === 'DELETE';
    if (!this.authorized(req, res, repo, write ? 'push' : 'pull')) return;
    if (kind === 'blobs') {
      const bytes = this.blobs.get(ref);
      if (!bytes || !this.repo(repo).has(ref)) {
        json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] });
        return;
      }
      res.setHeader('docker-content-digest', ref);
      res.setHeader('content-type', 'application/octet-stream');
      if (req.method === 'HEAD') {
        res.setHeader('content-length', bytes.length);
        res.statusCode = 200;
        res.end();
        return;
      }
      let out = bytes;
      if (this.corrupt.has(ref) || fault === 'corrupt') out = Buffer.from(bytes.map((b) => b ^ 1));
      if (fault === 'extra') out = Buffer.concat([bytes, Buffer.from('trailing garbage')]);
      if (this.truncateOnce.has(ref) || fault === 'truncate') {
        this.truncateOnce.delete(ref);
        res.writeHead(200, { 'content-length': bytes.length });
        res.write(bytes.subarray(0, Math.floor(bytes.length / 2)));
        setTimeout(() => req.socket.destroy(), 10);
        return;
      }
      res.writeHead(200, { 'content-length': out.length });
      res.end(out);
      return;
    }
    // manifests
    const manifests = this.manifestsOf(repo);
    if (req.method === 'PUT') {
      const d = digestOf(body);
      const mediaType = (req.headers['content-type'] ?? '').split(';')[0];
      const parsed = JSON.parse(body.toString('utf8')) as {
        config?: { digest: string };
        layers?: Array<{ digest: string }>;
      };
      for (const b of [parsed.config, ...(parsed.layers ?? [])]) {
        if (b && !this.repo(repo).has(b.digest)) {
          json(res, 400, {
            errors: [{ code: 'MANIFEST_BLOB_UNKNOWN', message: `blob unknown: ${b.digest}` }],
          });
          return;
        }
      }
      manifests.set(ref, { bytes: body, mediaType });
      manifests.set(d, { bytes: body, mediaType });
      res.setHeader('docker-content-digest', d);
      res.setHeader('location', `/v2/${repo}/manifests/${d}`);
      res.statusCode = 201;
      res.end();
      return;
    }
    const found = manifests.get(ref);
    if (!found) {
      json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
      return;
    }
    res.setHeader('content-type', found.mediaType);
    res.setHeader('docker-content-digest', digestOf(found.bytes));
    res.setHeader('content-length', found.bytes.length);
    res.statusCode = 200;
    res.end(req.method === 'HEAD' ? undefined : found.bytes);
  }

  private upload(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    repo: string,
    id: string,
    body: Buffer,
  ): void {
    if (!this.authorized(req, res, repo, 'push', url.searchParams.get('from') ?? undefined)) return;
    if (req.method === 'POST' && id === '') {
      const mount = url.searchParams.get('mount');
      const from = url.searchParams.get('from');
      if (mount && from && this.repo(from).has(mount)) {
        this.repo(repo).add(mount);
        res.setHeader('location', `/v2/${repo}/blobs/${mount}`);
        res.setHeader('docker-content-digest', mount);
        res.statusCode = 201;
        res.end();
        return;
      }
      const uuid = randomUUID();
      this.uploads.set(uuid, { repo, chunks: [], size: 0 });
      res.setHeader('location', `/v2/${repo}/blobs/uploads/${uuid}?_state=abc`);
      res.setHeader('range', '0-0');
      res.statusCode = 202;
      res.end();
      return;
    }
    const up = this.uploads.get(id);
    if (!up || up.repo !== repo) {
      json(res, 404, { errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'upload unknown' }] });
      return;
    }
    if (req.method === 'PATCH') {
      const range = req.headers['content-range'];
      if (range) {
        const start = Number(String(range).split('-')[0]);
        if (start !== up.size) {
          json(res, 416, { errors: [{ code: 'BLOB_UPLOAD_INVALID', message: 'bad range' }] });
          return;
        }
      }
      up.chunks.push(body);
      up.size += body.length;
      res.setHeader('location', `/v2/${repo}/blobs/uploads/${id}?_state=p${up.size}`);
      res.setHeader('range', `0-${up.size - 1}`);
      res.statusCode = 202;
      res.end();
      return;
    }
    if (req.method === 'PUT') {
      up.chunks.push(body);
      const all = Buffer.concat(up.chunks);
      const want = url.searchParams.get('digest');
      this.uploads.delete(id);
      if (digestOf(all) !== want) {
        json(res, 400, { errors: [{ code: 'DIGEST_INVALID', message: 'digest did not match' }] });
        return;
      }
      this.blobs.set(want, all);
      this.repo(repo).add(want);
      res.setHeader('location', `/v2/${repo}/blobs/${want}`);
      res.setHeader('docker-content-digest', want);
      res.statusCode = 201;
      res.end();
      return;
    }
    json(res, 405, {});
  }

  private authorized(
    req: IncomingMessage,
    res: ServerResponse,
    repo: string | undefined,
    action: 'pull' | 'push',
    from?: string,
  ): boolean {
    const auth = this.opts.auth ?? 'none';
    if (auth === 'none') return true;
    const header = req.headers.authorization ?? '';
    if (auth === 'basic') {
      const user = this.basicUser(header);
      if (user) return true;
      res.setHeader('www-authenticate', 'Basic realm="fake"');
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
      return false;
    }
    // bearer: the token is base64 JSON of the granted scopes
    const m = /^Bearer (.+)$/.exec(header);
    if (m) {
      try {
        const granted = JSON.parse(Buffer.from(m[1], 'base64').toString('utf8')) as string[];
        const ok = (r: string, a: string) =>
          granted.some((g) => g === `repository:${r}:${a}` || g === `repository:${r}:pull,push`);
        if ((!repo || ok(repo, action)) && (!from || ok(from, 'pull'))) return true;
      } catch {
        // fall through to the challenge
      }
    }
    const scope = repo ? `repository:${repo}:${action === 'push' ? 'pull,push' : 'pull'}` : '';
    res.setHeader(
      'www-authenticate',
      `Bearer realm="${this.scheme}://${this.host}/token",service="fake",scope="${scope}"`,
    );
    json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
    return false;
  }

  private basicUser(header: string): string | undefined {
    const m = /^Basic (.+)$/.exec(header);
    if (!m) return undefined;
    const [user, ...rest] = Buffer.from(m[1], 'base64').toString('utf8').split(':');
    return this.opts.users?.[user] === rest.join(':') ? user : undefined;
  }

  private token(req: IncomingMessage, url: URL, res: ServerResponse): void {
    this.tokenRequests.push(url.search);
    const header = req.headers.authorization ?? '';
    const user = this.basicUser(header);
    if (header && !user) {
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
      return;
    }
    if ('tokenAnswer' in this.opts) {
      json(res, 200, this.opts.tokenAnswer);
      return;
    }
    const scopes = url.searchParams.getAll('scope');
    const granted = scopes
      .flatMap((s) => {
        if (user) return [s];
        if (this.opts.anonymousPull) return [s.replace(/:pull,push$/, ':pull')];
        return [];
      })
      .filter(Boolean);
    json(res, 200, { token: Buffer.from(JSON.stringify(granted)).toString('base64'), expires_in: 300 });
  }
}

/** A fault the fake registry can inject: a cut connection, an HTTP status, or bad blob bytes. */
export type Fault = 'reset' | 'truncate' | 'corrupt' | 'extra' | number;

export function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const b = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': b.length });
  res.end(b);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A BlobStore in memory that trusts what it is given (no verification of its own), so that
 * tests see what the client itself checks.
 */
export class MemoryStore {
  readonly blobs = new Map<string, { bytes: Buffer; mediaType: string }>();
  readonly tags = new Map<string, import('@stacker/plugin-api').Descriptor>();
  dir = '/memory';
  puts = 0;

  async has(digest: string): Promise<boolean> {
    return this.blobs.has(digest);
  }
  async putStream(
    stream: import('node:stream').Readable,
    mediaType: string,
    expected: { digest?: string; size?: number } = {},
  ): Promise<import('@stacker/plugin-api').Descriptor> {
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    const digest = expected.digest ?? digestOf(bytes);
    this.blobs.set(digest, { bytes, mediaType });
    this.puts++;
    return { mediaType, digest, size: bytes.length };
  }
  async putFile(
    path: string,
    mediaType: string,
    expected: { digest?: string; size?: number } = {},
  ): Promise<import('@stacker/plugin-api').Descriptor> {
    const { createReadStream } = await import('node:fs');
    return this.putStream(createReadStream(path), mediaType, expected);
  }
  async putJson(value: unknown, mediaType: string) {
    const { Readable } = await import('node:stream');
    return this.putStream(Readable.from([Buffer.from(JSON.stringify(value))]), mediaType);
  }
  async open(digest: string): Promise<import('node:stream').Readable> {
    const { Readable } = await import('node:stream');
    const b = this.blobs.get(digest);
    if (!b) throw new Error(`no blob ${digest}`);
    return Readable.from([b.bytes]);
  }
  async readJson<T>(digest: string): Promise<T> {
    const b = this.blobs.get(digest);
    if (!b) throw new Error(`no blob ${digest}`);
    return JSON.parse(b.bytes.toString('utf8')) as T;
  }
  path(digest: string): string {
    return `/memory/${digest}`;
  }
  async tag(name: string, d: import('@stacker/plugin-api').Descriptor): Promise<void> {
    this.tags.set(name, d);
  }
  async findTag(name: string) {
    return this.tags.get(name);
  }
}

/** An image (config + layers + manifest) in `store`, tagged `tag`; returns its descriptor. */
export async function seedImage(
  store: MemoryStore,
  tag: string,
  layers: Buffer[],
  opts: { docker?: boolean } = {},
) {
  const { Readable } = await import('node:stream');
  const put = (bytes: Buffer, mediaType: string) => store.putStream(Readable.from([bytes]), mediaType);
  const layerDescs = [];
  for (const l of layers) {
    layerDescs.push(
      await put(
        l,
        opts.docker
          ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
          : 'application/vnd.oci.image.layer.v1.tar+gzip',
      ),
    );
  }
  const config = {
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: layerDescs.map((d) => d.digest) },
    config: { Env: [`TAG=${tag}`] },
  };
  const configDesc = await put(
    Buffer.from(JSON.stringify(config)),
    opts.docker
      ? 'application/vnd.docker.container.image.v1+json'
      : 'application/vnd.oci.image.config.v1+json',
  );
  const mediaType = opts.docker
    ? 'application/vnd.docker.distribution.manifest.v2+json'
    : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = { schemaVersion: 2, mediaType, config: configDesc, layers: layerDescs };
  const m = await put(Buffer.from(JSON.stringify(manifest)), mediaType);
  await store.tag(tag, m);
  return { descriptor: m, manifest, config: configDesc, layers: layerDescs };
}
