import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { badDigest } from './errors.js';

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** Throws a user error unless `digest` is `sha256:<64 lowercase hex>`; returns the hex part. */
export function digestHex(digest: string): string {
  if (typeof digest !== 'string' || !DIGEST_RE.test(digest)) throw badDigest(String(digest));
  return digest.slice(7);
}

export function isDigest(digest: unknown): digest is string {
  return typeof digest === 'string' && DIGEST_RE.test(digest);
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A pass-through stream that hashes and counts what flows through it. */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  size = 0;
  private result?: string;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    cb(null, chunk);
  }

  /** The digest; valid once the stream has ended. */
  digest(): string {
    if (!this.result) this.result = `sha256:${this.hash.digest('hex')}`;
    return this.result;
  }
}

/**
 * JSON with object keys sorted and no whitespace, so that equal values always give equal
 * bytes (and digests). Undefined members are dropped, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => (v === undefined ? null : sortKeys(v)));
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}
