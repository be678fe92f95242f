import { createHash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BlobStore,
  type Descriptor,
  type ImageManifest,
  isUserError,
  type Logger,
  silentLogger,
  UserError,
} from '@stacker/plugin-api';
import {
  type Challenge,
  type CredentialLookup,
  describeCredentials,
  findCredentials,
  parseChallenges,
} from './credentials.js';
import {
  badResponse,
  blobUnknown,
  denied,
  digestMismatch,
  manifestUnknown,
  noPlatform,
  sizeMismatch,
  tlsFailure,
  unauthorized,
  unreachable,
  unsupported,
  type Where,
} from './errors.js';
import {
  hostPlatform,
  isImageManifestMediaType,
  isIndexMediaType,
  isSchema1,
  MANIFEST_ACCEPT,
} from './media-types.js';
import { DOCKER_HUB, DOCKER_HUB_ENDPOINT, type ImageReference } from './reference.js';

export interface RegistryClientOptions {
  /** The registry as the user wrote it (host[:port], `docker.io` for Docker Hub). */
  registry: string;
  /** host[:port] requests go to; defaults to `registry` (registry-1.docker.io for Docker Hub). */
  endpoint?: string;
  /**
   * Don't verify the registry's TLS certificate, and talk plain http when it does not speak
   * TLS at all (decided by the first request, then kept): stacker's `insecure: true` and
   * `--skip-tls`, as containers/image treats an insecure registry.
   */
  insecure?: boolean;
  /** Explicit credentials; otherwise the standard credential files are read. */
  username?: string;
  password?: string;
  /** Credential files to read instead of the standard ones (see credentialFiles()). */
  credentialFiles?: string[];
  env?: NodeJS.ProcessEnv;
  /** Retries after a connection failure or a 5xx/429 answer (default 4), with backoff from retryDelayMs (default 250). */
  retries?: number;
  retryDelayMs?: number;
  /**
   * Blobs up to this size are uploaded in one PUT, bigger ones in PATCH chunks (default
   * `$STACKER_REGISTRY_CHUNK_THRESHOLD`, else 32 MiB).
   */
  chunkThreshold?: number;
  /** Size of one PATCH chunk (default `$STACKER_REGISTRY_CHUNK_SIZE`, else 16 MiB). */
  chunkSize?: number;
  log?: Logger;
  signal?: AbortSignal;
  userAgent?: string;
  /** For tests: the fetch to use. */
  fetch?: typeof fetch;
  /** Byte progress of every blob download and upload (a per-call `onProgress` wins). */
  onProgress?: ProgressListener;
}

/** Where a blob transfer stands: `done` of `total` bytes received or sent. */
export interface BlobProgress {
  direction: 'pull' | 'push';
  registry: string;
  repository: string;
  digest: string;
  done: number;
  total: number;
}

/**
 * Called as the bytes of a blob go by: often (once per network chunk, so rendering should
 * throttle), starting again from 0 when a broken-off transfer is retried, and with `done
 * === total` once the registry has the blob or the store holds it.
 */
export type ProgressListener = (p: BlobProgress) => void;

/** A manifest or index exactly as the registry sent it. */
export interface RawManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface ResolvedImage {
  /** The image manifest (after picking a platform from an index). */
  manifest: ImageManifest;
  raw: RawManifest;
  /** The index or manifest list the reference pointed at, when it was one. */
  index?: RawManifest;
}

export type PushResult = 'exists' | 'mounted' | 'uploaded';

const MAX_MANIFEST = 4 * 1024 * 1024;

/** A failure worth trying again: a reset connection, a 5xx answer. */
class TransientError extends Error {
  /** How long the registry asked us to wait (`Retry-After`), if it did. */
  retryAfterMs?: number;
}

/** The longest `Retry-After` honoured: a registry asking for more gets our own backoff. */
const MAX_RETRY_AFTER_MS = 60_000;

/** `Retry-After` in milliseconds (seconds or an HTTP date), undefined when absent or odd. */
export function retryAfterMs(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  const ms = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** A TLS failure (no TLS on the other side, an untrusted certificate): retrying won't help. */
function tlsCause(e: unknown): string | undefined {
  for (let c: any = e, depth = 0; c && depth < 5; c = c.cause, depth++) {
    const code = typeof c.code === 'string' ? c.code : '';
    if (
      code.startsWith('ERR_SSL') ||
      code.startsWith('ERR_TLS') ||
      /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)
    ) {
      return code;
    }
  }
  return undefined;
}

function networkCause(e: unknown): string | undefined {
  if (tlsCause(e)) return undefined;
  for (let c: any = e, depth = 0; c && depth < 5; c = c.cause, depth++) {
    if (typeof c.code === 'string' && NETWORK_CODES.has(c.code)) return c.message || c.code;
    if (c instanceof Error && (c.message === 'terminated' || c.message === 'other side closed')) {
      const inner = c.cause as { message?: string } | undefined;
      return inner?.message ?? c.message;
    }
  }
  if (e instanceof TypeError && e.message === 'fetch failed') {
    const cause = (e as { cause?: { message?: string } }).cause;
    return cause?.message ?? e.message;
  }
  return undefined;
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function mediaTypeOf(res: Response): string | undefined {
  const ct = res.headers.get('content-type');
  return ct ? ct.split(';')[0].trim() : undefined;
}

async function drain(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // nothing to do: the body is gone either way
  }
}

/** Longest registry-supplied detail quoted in an error message. */
const MAX_DETAIL = 300;

/**
 * `errors[0].code: message` of a registry's JSON error body (the distribution spec's
 * shape), if it has one; strings only, cut to a readable length, whatever else it holds.
 */
export function errorDetailOf(text: string): string | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (body === null || typeof body !== 'object') return undefined;
  const errors = (body as { errors?: unknown }).errors;
  const e: unknown = Array.isArray(errors) ? errors[0] : undefined;
  if (e === null || typeof e !== 'object') return undefined;
  const { code, message } = e as { code?: unknown; message?: unknown };
  const parts = [code, message].filter((p): p is string => typeof p === 'string' && p.trim() !== '');
  if (parts.length === 0) return undefined;
  const detail = parts.join(': ').replace(/\s+/g, ' ').trim();
  return detail.length > MAX_DETAIL ? `${detail.slice(0, MAX_DETAIL)}…` : detail;
}

async function errorDetail(res: Response): Promise<string | undefined> {
  try {
    return errorDetailOf(await res.text());
  } catch {
    return undefined;
  }
}

/**
 * The token of a token service's answer (`token`, else the OAuth2 `access_token`) and its
 * lifetime in seconds, or a reason why the answer is unusable.
 */
export function tokenOf(body: unknown): { token: string; expiresIn?: number } | { error: string } {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    return { error: 'the answer is not a JSON object' };
  const { token, access_token: access, expires_in: expiresIn } = body as Record<string, unknown>;
  const t = typeof token === 'string' && token !== '' ? token : access;
  if (typeof t !== 'string' || t === '') return { error: 'the answer has no token' };
  // it goes into an Authorization header: visible ASCII only (RFC 6750's token68 and then some)
  if (!/^[\x21-\x7e]+$/.test(t)) return { error: 'the token has characters a header cannot carry' };
  return {
    token: t,
    expiresIn: typeof expiresIn === 'number' && Number.isFinite(expiresIn) ? expiresIn : undefined,
  };
}

/** A size from the environment (`$NAME`, bytes, or with a K/M/G suffix), if it is set and valid. */
function sizeFromEnv(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name]?.trim();
  if (!v) return undefined;
  const m = /^(\d+)\s*([kmg]?)(i?b)?$/i.exec(v);
  if (!m) {
    throw new UserError(
      'registry-env',
      `$${name} is ${JSON.stringify(v)}, not a size; give a number of bytes (or with K, M or G)`,
    );
  }
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * mult;
}

/** undici's fetch with certificate verification off, loaded on first use by insecure clients only. */
let insecureFetch: Promise<typeof fetch> | undefined;
function loadInsecureFetch(): Promise<typeof fetch> {
  insecureFetch ??= import('undici').then(({ Agent, fetch: undiciFetch }) => {
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    return ((input: unknown, init?: RequestInit) =>
      undiciFetch(input as Parameters<typeof undiciFetch>[0], {
        ...(init as Parameters<typeof undiciFetch>[1]),
        dispatcher,
      })) as unknown as typeof fetch;
  });
  return insecureFetch;
}

/**
 * A client of one registry speaking the OCI distribution API. Authentication follows the
 * registry's `WWW-Authenticate` challenge (bearer tokens from its token service, cached per
 * scope until they expire, or basic auth), with explicit credentials or those of the
 * standard files. Blobs are streamed and checked against their digest before they are
 * stored; uploads skip blobs the repository has and mount those another repository of the
 * same registry has.
 */
export class RegistryClient {
  readonly registry: string;
  readonly endpoint: string;
  /** https, or http once an insecure client found that the registry does not speak TLS. */
  private scheme: 'https' | 'http' = 'https';
  /** An insecure client has yet to learn whether the registry speaks TLS. */
  private probing: boolean;
  private readonly log: Logger;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly chunkThreshold: number;
  private readonly chunkSize: number;
  private readonly lookups = new Map<string, CredentialLookup>();
  private readonly tokens = new Map<string, { token: string; expires: number }>();
  private bearer?: Challenge;
  private basicWanted = false;
  /** digest -> a repository of this registry known to hold it (for cross-repository mounts). */
  private readonly known = new Map<string, string>();

  constructor(private readonly opts: RegistryClientOptions) {
    this.registry = opts.registry;
    this.endpoint = opts.endpoint ?? (opts.registry === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : opts.registry);
    this.probing = opts.insecure === true;
    this.log = opts.log ?? silentLogger;
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 250;
    const env = opts.env ?? process.env;
    this.chunkThreshold =
      opts.chunkThreshold ?? sizeFromEnv(env, 'STACKER_REGISTRY_CHUNK_THRESHOLD') ?? 32 * 1024 * 1024;
    this.chunkSize = Math.max(
      1,
      opts.chunkSize ?? sizeFromEnv(env, 'STACKER_REGISTRY_CHUNK_SIZE') ?? 16 * 1024 * 1024,
    );
  }

  /** Where requests go: `https://ENDPOINT`, or `http://ENDPOINT` for an insecure registry without TLS. */
  get baseUrl(): string {
    return `${this.scheme}://${this.endpoint}`;
  }

  /** The fetch to use: the test's, else undici's without certificate checks when insecure, else Node's. */
  private fetcher(): Promise<typeof fetch> | typeof fetch {
    if (this.opts.fetch) return this.opts.fetch;
    return this.opts.insecure ? loadInsecureFetch() : fetch;
  }

  /**
   * One fetch of a registry URL. An insecure client that has not yet talked to the registry
   * tries https (any certificate) first and, when the other side does not speak TLS,
   * plain http; the scheme that answered is kept for every later request.
   */
  private async exchange(url: string, init: () => RequestInit): Promise<Response> {
    const doFetch = await this.fetcher();
    const origin = `https://${this.endpoint}/`;
    if (!this.probing || !url.startsWith(origin)) return doFetch(url, init());
    let res: Response;
    try {
      res = await doFetch(url, init());
    } catch (e) {
      if (!tlsCause(e) || this.opts.signal?.aborted) throw e;
      const plain = `http://${this.endpoint}/${url.slice(origin.length)}`;
      try {
        res = await doFetch(plain, init());
      } catch (e2) {
        // a connection failure over http too is worth another try (from https again)
        const cause = networkCause(e2);
        if (cause !== undefined && !this.opts.signal?.aborted)
          throw new TransientError(`${cause} (over https: ${tlsCause(e)})`);
        throw e; // http did not work either: the TLS failure is the one to report
      }
      this.log.debug(`${this.registry} does not speak TLS (${tlsCause(e)}): using plain http`);
      this.scheme = 'http';
      this.probing = false;
      return res;
    }
    this.probing = false;
    return res;
  }

  static forReference(
    ref: ImageReference,
    opts: Omit<RegistryClientOptions, 'registry' | 'endpoint'> = {},
  ): RegistryClient {
    return new RegistryClient({ ...opts, registry: ref.registry, endpoint: ref.endpoint });
  }

  /** Remember that `repository` holds `digest`, so a push to another repository can mount it. */
  noteBlob(repository: string, digest: string): void {
    if (!this.known.has(digest)) this.known.set(digest, repository);
  }

  // ---- manifests ------------------------------------------------------------------------

  /** The manifest or index `reference` (a tag or digest) names, verified against its digest. */
  async getRawManifest(repository: string, reference: string): Promise<RawManifest> {
    const w = this.where(repository);
    const what = `fetching ${describeRef(reference)}`;
    const res = await this.request(repository, 'pull', what, {
      method: 'GET',
      path: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
    });
    if (res.status === 404) {
      await drain(res);
      throw manifestUnknown(w, reference);
    }
    await this.expect(res, [200], repository, what);
    const bytes = await readLimited(res, MAX_MANIFEST, () =>
      badResponse(w, what, `the manifest is larger than ${MAX_MANIFEST} bytes`),
    );
    const digest = sha256(bytes);
    if (reference.startsWith('sha256:') && reference !== digest)
      throw digestMismatch(w, `manifest ${reference}`, reference, digest);
    const header = res.headers.get('docker-content-digest');
    if (header?.startsWith('sha256:') && header !== digest)
      throw digestMismatch(w, `the manifest of ${describeRef(reference)}`, header, digest);
    let mediaType = mediaTypeOf(res);
    let parsed: { mediaType?: string; schemaVersion?: number };
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw badResponse(w, what, `the manifest is not JSON (${(e as Error).message})`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      throw badResponse(w, what, 'the manifest is not a JSON object');
    if (
      typeof parsed.mediaType === 'string' &&
      !isIndexMediaType(mediaType) &&
      !isImageManifestMediaType(mediaType)
    ) {
      mediaType = parsed.mediaType;
    }
    if (isSchema1(mediaType) || parsed.schemaVersion === 1) {
      throw unsupported(
        w,
        `${describeRef(reference)} is a docker schema 1 manifest, which is not supported; push it again with a current client`,
      );
    }
    if (!isIndexMediaType(mediaType) && !isImageManifestMediaType(mediaType)) {
      // registries that answer application/json: decide by shape
      mediaType = Array.isArray((parsed as { manifests?: unknown }).manifests)
        ? 'application/vnd.oci.image.index.v1+json'
        : 'application/vnd.oci.image.manifest.v1+json';
    }
    this.log.debug(`${this.registry}/${repository}: ${describeRef(reference)} is ${digest} (${mediaType})`);
    return { bytes, mediaType: mediaType!, digest };
  }

  /**
   * The image `reference` names; an index or manifest list is resolved to the entry for
   * `platform` (default: this machine's).
   */
  async getImage(
    repository: string,
    reference: string,
    platform?: { os: string; architecture: string; variant?: string },
  ): Promise<ResolvedImage> {
    const w = this.where(repository);
    let raw = await this.getRawManifest(repository, reference);
    let index: RawManifest | undefined;
    for (let depth = 0; isIndexMediaType(raw.mediaType); depth++) {
      if (depth >= 2)
        throw unsupported(w, `${describeRef(reference)} is an index of indexes, which is not supported`);
      index = raw;
      const pick = this.pickPlatform(w, reference, raw, platform);
      raw = await this.getRawManifest(repository, pick.digest);
    }
    const manifest = JSON.parse(raw.bytes.toString('utf8')) as ImageManifest;
    const isDescriptor = (d: unknown) =>
      d !== null &&
      typeof d === 'object' &&
      typeof (d as Descriptor).digest === 'string' &&
      /^sha256:[a-f0-9]{64}$/.test((d as Descriptor).digest) &&
      Number.isSafeInteger((d as Descriptor).size) &&
      (d as Descriptor).size >= 0;
    if (
      !isDescriptor(manifest.config) ||
      !Array.isArray(manifest.layers) ||
      !manifest.layers.every(isDescriptor)
    ) {
      throw badResponse(
        w,
        `fetching ${describeRef(reference)}`,
        'the manifest has no valid config and layers descriptors',
      );
    }
    return { manifest, raw, index };
  }

  /**
   * The digest of the image manifest `reference` names for `platform`, as cheaply as the
   * registry allows (a HEAD when the tag is a plain manifest).
   */
  async resolveDigest(
    repository: string,
    reference: string,
    platform?: { os: string; architecture: string },
  ): Promise<string> {
    const head = await this.headManifest(repository, reference);
    if (head && isImageManifestMediaType(head.mediaType)) return head.digest;
    return (await this.getImage(repository, reference, platform)).raw.digest;
  }

  /** HEAD of a manifest: its digest and media type, undefined when the registry lacks it. */
  async headManifest(
    repository: string,
    reference: string,
  ): Promise<{ digest: string; mediaType?: string; size?: number } | undefined> {
    const what = `checking ${describeRef(reference)}`;
    const res = await this.request(repository, 'pull', what, {
      method: 'HEAD',
      path: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
    });
    await drain(res);
    if (res.status === 404) return undefined;
    await this.expect(res, [200], repository, what);
    const digest = res.headers.get('docker-content-digest');
    if (!digest) return undefined;
    const size = Number(res.headers.get('content-length'));
    return { digest, mediaType: mediaTypeOf(res), size: Number.isFinite(size) ? size : undefined };
  }

  /** Upload a manifest under `reference` (a tag, or its digest); returns its digest. */
  async putManifest(
    repository: string,
    reference: string,
    bytes: Buffer,
    mediaType: string,
  ): Promise<string> {
    const w = this.where(repository);
    const what = `pushing the manifest of ${describeRef(reference)}`;
    const digest = sha256(bytes);
    const res = await this.request(repository, 'pull,push', what, {
      method: 'PUT',
      path: `/v2/${repository}/manifests/${reference}`,
      headers: { 'content-type': mediaType },
      body: () => bytes,
    });
    await this.expect(res, [200, 201, 202], repository, what);
    await drain(res);
    const header = res.headers.get('docker-content-digest');
    if (header?.startsWith('sha256:') && header !== digest)
      throw digestMismatch(w, `the manifest of ${describeRef(reference)}`, digest, header);
    return digest;
  }

  // ---- blobs ----------------------------------------------------------------------------

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const what = `checking blob ${digest}`;
    const res = await this.request(repository, 'pull', what, {
      method: 'HEAD',
      path: `/v2/${repository}/blobs/${digest}`,
    });
    await drain(res);
    if (res.status === 404) return false;
    await this.expect(res, [200, 307], repository, what);
    this.noteBlob(repository, digest);
    return true;
  }

  /**
   * Download a blob into `store`, unless it is there already. The bytes are hashed on the
   * way in: a download that breaks off is retried from the start, and one whose digest or
   * size is wrong is never stored.
   */
  async pullBlob(
    repository: string,
    desc: Descriptor,
    store: BlobStore,
    opts: { onProgress?: ProgressListener } = {},
  ): Promise<'present' | 'pulled'> {
    if (await store.has(desc.digest)) return 'present';
    const w = this.where(repository);
    const what = `pulling blob ${desc.digest}`;
    const progress = this.progress('pull', repository, desc, opts.onProgress);
    await this.withRetries(w, what, async () => {
      const res = await this.send(repository, 'pull', what, {
        method: 'GET',
        path: `/v2/${repository}/blobs/${desc.digest}`,
      });
      if (res.status === 404) {
        await drain(res);
        throw blobUnknown(w, desc.digest);
      }
      await this.failTransient(res);
      await this.expect(res, [200], repository, what);
      if (!res.body) throw badResponse(w, what, 'the answer has no body');
      const source = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
      const check = verifier(w, `blob ${desc.digest}`, desc.digest, desc.size, progress);
      source.on('error', (e) => check.destroy(e));
      try {
        await store.putStream(source.pipe(check), desc.mediaType, { digest: desc.digest, size: desc.size });
      } catch (e) {
        source.destroy();
        if (!isUserError(e) && networkCause(e)) throw new TransientError(networkCause(e));
        throw e;
      }
    });
    progress?.(desc.size);
    this.noteBlob(repository, desc.digest);
    this.log.debug(`pulled blob ${desc.digest} (${desc.size} bytes) from ${this.registry}/${repository}`);
    return 'pulled';
  }

  /** A verified stream of a blob (it fails at its end if the digest is wrong). */
  async openBlob(repository: string, desc: Descriptor): Promise<Readable> {
    const w = this.where(repository);
    const what = `pulling blob ${desc.digest}`;
    const res = await this.request(repository, 'pull', what, {
      method: 'GET',
      path: `/v2/${repository}/blobs/${desc.digest}`,
    });
    if (res.status === 404) {
      await drain(res);
      throw blobUnknown(w, desc.digest);
    }
    await this.expect(res, [200], repository, what);
    const source = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
    const check = verifier(w, `blob ${desc.digest}`, desc.digest, desc.size);
    source.on('error', (e) => check.destroy(e));
    return source.pipe(check);
  }

  /**
   * Upload a blob unless the repository has it: a HEAD first, then a mount from another
   * repository of this registry known to hold it, else an upload (one PUT up to
   * `chunkThreshold` bytes, PATCH chunks above). `open` is called once per attempt.
   */
  async pushBlob(
    repository: string,
    desc: Descriptor,
    open: () => Promise<Readable>,
    opts: { onProgress?: ProgressListener } = {},
  ): Promise<PushResult> {
    if (await this.hasBlob(repository, desc.digest)) return 'exists';
    const w = this.where(repository);
    const what = `pushing blob ${desc.digest}`;
    const progress = this.progress('push', repository, desc, opts.onProgress);
    const from = this.known.get(desc.digest);
    const result = await this.withRetries(w, what, async (): Promise<PushResult> => {
      let location: string | undefined;
      if (from && from !== repository) {
        const q = new URLSearchParams({ mount: desc.digest, from });
        const res = await this.send(
          repository,
          'pull,push',
          what,
          { method: 'POST', path: `/v2/${repository}/blobs/uploads/?${q}` },
          [`repository:${from}:pull`],
        );
        await drain(res);
        if (res.status === 201) {
          this.log.info(`mounted blob ${desc.digest} from ${from} into ${this.registry}/${repository}`);
          return 'mounted';
        }
        await this.failTransient(res);
        if (res.status === 202) location = res.headers.get('location') ?? undefined;
        else await this.expect(res, [202], repository, what);
      }
      if (!location) {
        const res = await this.send(repository, 'pull,push', what, {
          method: 'POST',
          path: `/v2/${repository}/blobs/uploads/`,
        });
        await this.failTransient(res);
        await this.expect(res, [202], repository, what);
        await drain(res);
        location = res.headers.get('location') ?? undefined;
        if (!location) throw badResponse(w, what, 'the registry started an upload but sent no Location');
      }
      this.log.info(
        `pushing blob ${desc.digest} (${desc.size} bytes, ${formatBytes(desc.size)}) to ${this.registry}/${repository}`,
      );
      progress?.(0);
      const stream = await open();
      try {
        if (desc.size <= this.chunkThreshold) {
          const body = await readAll(stream, desc.size + 1);
          if (body.length !== desc.size) throw sizeMismatch(w, `blob ${desc.digest}`, desc.size, body.length);
          const res = await this.send(repository, 'pull,push', what, {
            method: 'PUT',
            url: withDigest(this.absolute(location), desc.digest),
            headers: { 'content-type': 'application/octet-stream' },
            body: () => body,
            onSent: progress,
          });
          await this.failTransient(res);
          await this.expect(res, [201, 204], repository, what);
          await drain(res);
        } else {
          let offset = 0;
          for await (const chunk of rechunk(stream, this.chunkSize)) {
            const start = offset;
            const end = offset + chunk.length - 1;
            const res = await this.send(repository, 'pull,push', what, {
              method: 'PATCH',
              url: this.absolute(location),
              headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${end}` },
              body: () => chunk,
              onSent: progress && ((n) => progress(start + n)),
            });
            await this.failTransient(res);
            await this.expect(res, [202, 204], repository, what);
            await drain(res);
            location = res.headers.get('location') ?? location;
            offset = end + 1;
          }
          if (offset !== desc.size) throw sizeMismatch(w, `blob ${desc.digest}`, desc.size, offset);
          const res = await this.send(repository, 'pull,push', what, {
            method: 'PUT',
            url: withDigest(this.absolute(location), desc.digest),
            headers: { 'content-type': 'application/octet-stream' },
            body: () => Buffer.alloc(0),
          });
          await this.failTransient(res);
          await this.expect(res, [201, 204], repository, what);
          await drain(res);
        }
      } finally {
        stream.destroy();
      }
      return 'uploaded';
    });
    if (result === 'uploaded') progress?.(desc.size);
    this.noteBlob(repository, desc.digest);
    return result;
  }

  // ---- requests, retries and authentication --------------------------------------------

  /** `done` bytes of `desc` reported to the listener (per call, else the client's), if any. */
  private progress(
    direction: BlobProgress['direction'],
    repository: string,
    desc: Descriptor,
    listener = this.opts.onProgress,
  ): ((done: number) => void) | undefined {
    if (!listener) return undefined;
    const base = { direction, registry: this.registry, repository, digest: desc.digest, total: desc.size };
    return (done) => listener({ ...base, done });
  }

  private where(repository: string): Where {
    return { registry: this.registry, repository };
  }

  private absolute(location: string): string {
    return new URL(location, this.baseUrl).toString();
  }

  private credentials(repository: string): CredentialLookup {
    let l = this.lookups.get(repository);
    if (!l) {
      l = findCredentials(this.registry, repository, {
        username: this.opts.username,
        password: this.opts.password,
        files: this.opts.credentialFiles,
        env: this.opts.env,
      });
      this.lookups.set(repository, l);
    }
    return l;
  }

  /** Run `fn`, again after a transient failure (with doubling delays), at most retries+1 times. */
  private async withRetries<T>(w: Where, what: string, fn: () => Promise<T>): Promise<T> {
    let attempt = 0;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        const transient =
          e instanceof TransientError ? e.message : !isUserError(e) ? networkCause(e) : undefined;
        if (transient === undefined) throw e;
        attempt++;
        if (attempt > this.retries || this.opts.signal?.aborted)
          throw unreachable(w, what, transient, attempt);
        // the registry's Retry-After when it gave one, else exponential backoff with
        // jitter (so that parallel uploads that failed together do not retry together)
        const asked = e instanceof TransientError ? e.retryAfterMs : undefined;
        const delay = Math.round(
          asked ?? this.retryDelayMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5),
        );
        this.log.debug(`${this.registry}/${w.repository}: ${what}: ${transient}; trying again in ${delay}ms`);
        await sleep(delay, undefined, { signal: this.opts.signal });
      }
    }
  }

  /** One exchange with retries on connection failures and 5xx/429 answers. */
  private request(
    repository: string,
    actions: string,
    what: string,
    init: RequestInit2,
    extraScopes: string[] = [],
  ): Promise<Response> {
    return this.withRetries(this.where(repository), what, async () => {
      const res = await this.send(repository, actions, what, init, extraScopes);
      await this.failTransient(res);
      return res;
    });
  }

  private async failTransient(res: Response): Promise<void> {
    if (res.status >= 500 || res.status === 429) {
      const detail = await errorDetail(res);
      const err = new TransientError(`HTTP ${res.status}${detail ? ` (${detail})` : ''}`);
      err.retryAfterMs = retryAfterMs(res.headers.get('retry-after'));
      throw err;
    }
  }

  /** Throw the user error that fits an unexpected status. */
  private async expect(res: Response, ok: number[], repository: string, what: string): Promise<void> {
    if (ok.includes(res.status)) return;
    const w = this.where(repository);
    const detail = await errorDetail(res);
    const tried = describeCredentials(this.credentials(repository));
    if (res.status === 401) throw unauthorized(w, what, tried, detail);
    if (res.status === 403) throw denied(w, what, res.status, tried, detail);
    throw badResponse(w, what, `unexpected HTTP ${res.status}${detail ? ` (${detail})` : ''}`);
  }

  /**
   * One HTTP exchange, authenticated: a bearer token for the scope when the registry asked
   * for tokens before, basic auth when it asked for that; a 401 is answered once by
   * following its challenge. Connection failures become TransientError.
   */
  private async send(
    repository: string,
    actions: string,
    what: string,
    init: RequestInit2,
    extraScopes: string[] = [],
  ): Promise<Response> {
    const scopes = [`repository:${repository}:${actions}`, ...extraScopes];
    // a path is put under the base URL at each round: the first one may settle the scheme
    const url = init.url;
    for (let round = 0; ; round++) {
      const headers: Record<string, string> = {
        'user-agent': this.opts.userAgent ?? 'stacker',
        ...(init.headers ?? {}),
      };
      const auth = await this.authorization(repository, scopes, what);
      if (auth) headers.authorization = auth;
      const body = init.body?.();
      let res: Response;
      try {
        const progressed = body !== undefined && body.length > 0 && init.onSent !== undefined;
        if (progressed) headers['content-length'] = String(body.length);
        res = await this.exchange(
          url ?? `${this.baseUrl}${init.path}`,
          () =>
            ({
              method: init.method,
              headers,
              body:
                body === undefined
                  ? undefined
                  : progressed
                    ? countedBody(body, init.onSent!)
                    : new Uint8Array(body.buffer, body.byteOffset, body.length),
              redirect: 'follow',
              signal: this.opts.signal,
              ...(progressed ? { duplex: 'half' } : {}),
            }) as RequestInit,
        );
      } catch (e) {
        const tls = tlsCause(e);
        if (tls) throw tlsFailure(this.where(repository), what, tls, this.opts.insecure);
        const cause = networkCause(e);
        if (cause !== undefined && !this.opts.signal?.aborted) throw new TransientError(cause);
        throw e;
      }
      this.log.debug(`${init.method} ${url ?? `${this.baseUrl}${init.path}`} -> ${res.status}`);
      if (res.status !== 401 || round > 0) return res;
      const challenges = parseChallenges(res.headers.get('www-authenticate') ?? '');
      const bearer = challenges.find((c) => c.scheme === 'bearer');
      const basic = challenges.find((c) => c.scheme === 'basic');
      if (bearer?.params.realm) {
        this.bearer = bearer;
        // the registry may name a scope we did not think of: ask for both
        const wanted =
          bearer.params.scope && !scopes.includes(bearer.params.scope)
            ? [...scopes, bearer.params.scope]
            : scopes;
        this.tokens.delete(scopes.join(' '));
        await drain(res);
        await this.fetchToken(repository, scopes.join(' '), wanted, what);
        continue;
      }
      if (basic && !this.basicWanted && this.credentials(repository).credentials) {
        this.basicWanted = true;
        await drain(res);
        continue;
      }
      return res;
    }
  }

  private async authorization(
    repository: string,
    scopes: string[],
    what: string,
  ): Promise<string | undefined> {
    if (this.bearer) {
      const key = scopes.join(' ');
      let t = this.tokens.get(key);
      if (!t || t.expires <= Date.now()) t = await this.fetchToken(repository, key, scopes, what);
      return t.token ? `Bearer ${t.token}` : undefined;
    }
    if (this.basicWanted) {
      const c = this.credentials(repository).credentials;
      if (c) return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
    }
    return undefined;
  }

  private async fetchToken(
    repository: string,
    key: string,
    scopes: string[],
    what: string,
  ): Promise<{ token: string; expires: number }> {
    const challenge = this.bearer!;
    const w = this.where(repository);
    let url: URL;
    try {
      url = new URL(challenge.params.realm);
    } catch {
      url = new URL('invalid:');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw badResponse(
        w,
        what,
        `the registry sent ${JSON.stringify(challenge.params.realm.slice(0, 200))} as its token service (realm), which is not an http(s) URL`,
      );
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const lookup = this.credentials(repository);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'stacker' };
    if (lookup.credentials) {
      headers.authorization = `Basic ${Buffer.from(`${lookup.credentials.username}:${lookup.credentials.password}`).toString('base64')}`;
    }
    const tokenWhat = `${what}: getting a token from ${url.origin}${url.pathname}`;
    const res = await this.withRetries(w, tokenWhat, async () => {
      let r: Response;
      try {
        r = await (await this.fetcher())(url, { headers, signal: this.opts.signal });
      } catch (e) {
        const tls = tlsCause(e);
        if (tls) throw tlsFailure(w, tokenWhat, tls, this.opts.insecure);
        const cause = networkCause(e);
        if (cause !== undefined) throw new TransientError(cause);
        throw e;
      }
      await this.failTransient(r);
      return r;
    });
    if (res.status === 401 || res.status === 403) {
      const detail = await errorDetail(res);
      throw unauthorized(
        w,
        what,
        describeCredentials(lookup),
        detail ?? `the token service answered ${res.status}`,
      );
    }
    if (res.status !== 200) {
      await drain(res);
      throw badResponse(w, tokenWhat, `unexpected HTTP ${res.status}`);
    }
    let body: unknown;
    try {
      body = await res.json();
    } catch (e) {
      throw badResponse(w, tokenWhat, `the answer is not JSON (${(e as Error).message})`);
    }
    const got = tokenOf(body);
    if ('error' in got) throw badResponse(w, tokenWhat, got.error);
    // expire a little early so a token never runs out between check and use
    const life = Math.min(86400, Math.max(10, got.expiresIn ?? 60));
    const t = { token: got.token, expires: Date.now() + (life - 5) * 1000 };
    this.tokens.set(key, t);
    return t;
  }

  private pickPlatform(
    w: Where,
    reference: string,
    index: RawManifest,
    platform?: { os: string; architecture: string; variant?: string },
  ): Descriptor {
    const want: { os: string; architecture: string; variant?: string } = platform ?? hostPlatform();
    let list: Descriptor[];
    try {
      const manifests = (JSON.parse(index.bytes.toString('utf8')) as { manifests?: unknown }).manifests;
      list = Array.isArray(manifests) ? manifests : [];
    } catch {
      list = [];
    }
    // entries a registry sends are checked before they are used to build a request
    list = list.filter(
      (d): d is Descriptor =>
        d !== null &&
        typeof d === 'object' &&
        typeof d.digest === 'string' &&
        /^sha256:[a-f0-9]{64}$/.test(d.digest) &&
        (d.platform === undefined || (d.platform !== null && typeof d.platform === 'object')),
    );
    const matches = list.filter(
      (d) =>
        d.platform?.os === want.os &&
        d.platform?.architecture === want.architecture &&
        (!want.variant || d.platform?.variant === want.variant),
    );
    // prefer a plain entry over attestations and the like
    const pick = matches.find((d) => isImageManifestMediaType(d.mediaType)) ?? matches[0];
    if (!pick) {
      const available = list
        .filter((d) => d.platform)
        .map(
          (d) =>
            `${d.platform!.os}/${d.platform!.architecture}${d.platform!.variant ? `/${d.platform!.variant}` : ''}`,
        );
      throw noPlatform(w, describeRef(reference), `${want.os}/${want.architecture}`, [...new Set(available)]);
    }
    return pick;
  }
}

interface RequestInit2 {
  method: string;
  /** Path below the registry's base URL, or a full URL (upload locations). */
  path?: string;
  url?: string;
  headers?: Record<string, string>;
  /** Called for every attempt, so that a retried request sends its body again. */
  body?: () => Buffer;
  /** Told how many bytes of the body have gone out so far (the body is then streamed). */
  onSent?: (sent: number) => void;
}

/** Slices handed to the connection at a time when sending with progress. */
const SEND_SLICE = 256 * 1024;

/** `bytes` as a stream of slices, reporting how far the connection has taken it. */
function countedBody(bytes: Buffer, onSent: (sent: number) => void): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (offset >= bytes.length) {
          controller.close();
          return;
        }
        const end = Math.min(bytes.length, offset + SEND_SLICE);
        controller.enqueue(new Uint8Array(bytes.buffer, bytes.byteOffset + offset, end - offset));
        onSent(offset);
        offset = end;
      },
    },
    { highWaterMark: 0 },
  );
}

/** 1536 -> "1.5 KiB": sizes for people (log lines and progress bars). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

function describeRef(reference: string): string {
  return reference.startsWith('sha256:') ? `manifest ${reference}` : `tag ${JSON.stringify(reference)}`;
}

function withDigest(location: string, digest: string): string {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u.toString();
}

/** A pass-through that fails the stream when the bytes are not `digest`/`size`. */
function verifier(
  w: Where,
  what: string,
  digest: string,
  size: number,
  onBytes?: (seen: number) => void,
): Transform {
  const hash = createHash('sha256');
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _e, cb: TransformCallback) {
      seen += chunk.length;
      if (seen > size) {
        cb(sizeMismatch(w, what, size, seen));
        return;
      }
      onBytes?.(seen);
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      if (seen !== size) {
        cb(sizeMismatch(w, what, size, seen));
        return;
      }
      const actual = `sha256:${hash.digest('hex')}`;
      cb(actual === digest ? null : digestMismatch(w, what, digest, actual));
    },
  });
}

async function readLimited(res: Response, limit: number, tooBig: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  if (!res.body) return Buffer.alloc(0);
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += chunk.length;
    if (n > limit) {
      await res.body.cancel().catch(() => {});
      throw tooBig();
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

async function readAll(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += (chunk as Buffer).length;
    chunks.push(chunk as Buffer);
    if (n >= limit) break;
  }
  return Buffer.concat(chunks);
}

/** The stream cut into buffers of exactly `size` bytes (the last one shorter). */
async function* rechunk(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    let chunk = c as Buffer;
    while (chunk.length > 0) {
      const take = Math.min(size - n, chunk.length);
      pending.push(chunk.subarray(0, take));
      n += take;
      chunk = chunk.subarray(take);
      if (n === size) {
        yield Buffer.concat(pending);
        pending = [];
        n = 0;
      }
    }
  }
  if (n > 0) yield Buffer.concat(pending);
}
