import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createParallelGzip } from './parallel-gzip.js';

const BLOCK = 4096;

async function compress(data: Buffer, chunk: number, jobs: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) chunks.push(data.subarray(i, i + chunk));
  return buffer(Readable.from(chunks).pipe(createParallelGzip({ level: 6, jobs, blockSize: BLOCK })));
}

// half random (incompressible), half text: both kinds of deflate block
function sample(n: number): Buffer {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(Math.ceil(n / 88) + 1));
  return Buffer.concat([randomBytes(n >> 1), text]).subarray(0, n);
}

describe('parallel gzip', () => {
  for (const n of [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 10 * BLOCK + 17]) {
    it(`${n} bytes: gunzip gives them back, whatever the chunking, and the bytes do not depend on it`, async () => {
      const data = sample(n);
      const a = await compress(data, 1000, 2);
      const b = await compress(data, 7, 3);
      const c = await compress(data, 1 << 20, 1);
      expect(gunzipSync(a).equals(data)).toBe(true);
      expect(b.equals(a)).toBe(true);
      expect(c.equals(a)).toBe(true);
      // GNU gzip reads the members as one stream too
      expect(execFileSync('gzip', ['-dc'], { input: a }).equals(data)).toBe(true);
    });
  }

  it('cuts members every blockSize bytes of input', async () => {
    const out = await compress(sample(3 * BLOCK), 512, 2);
    let members = 0;
    for (let i = 0; i + 2 < out.length; i++)
      if (out[i] === 0x1f && out[i + 1] === 0x8b && out[i + 2] === 8) members++;
    expect(members).toBeGreaterThanOrEqual(3);
  });
});
