// Property tests of what the registry client parses from the outside world: the
// WWW-Authenticate header, image references the user writes, and manifests or indexes a
// registry answers with. Each gives a value or a UserError, never a TypeError.
import { createHash } from 'node:crypto';
import { isUserError } from '@stacker/plugin-api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { errorDetailOf, RegistryClient, tokenOf } from './client.js';
import { parseChallenges } from './credentials.js';
import { formatReference, parseImageReference } from './reference.js';

const SCALE = Number(process.env.STACKER_FUZZ_SCALE ?? 1);
export const FUZZ_RUNS = {
  challenges: 3000 * SCALE,
  references: 3000 * SCALE,
  manifests: 1500 * SCALE,
  tokens: 1500 * SCALE,
  errorBodies: 3000 * SCALE,
};

const challengeToken = fc.constantFrom(
  'Bearer',
  'Basic',
  'realm',
  'service',
  'scope',
  '=',
  '"',
  '\\',
  ',',
  ' ',
  '\t',
  'https://auth.example/token',
  'repository:a/b:pull,push',
  'error="insufficient_scope"',
);
describe('WWW-Authenticate parsing', () => {
  it('never throws, and gives lowercase schemes with string parameters', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(challengeToken, fc.string({ maxLength: 5 })), { maxLength: 25 }),
        (parts) => {
          const out = parseChallenges(parts.join(''));
          for (const c of out) {
            expect(c.scheme).toBe(c.scheme.toLowerCase());
            for (const v of Object.values(c.params)) expect(typeof v).toBe('string');
          }
        },
      ),
      { numRuns: FUZZ_RUNS.challenges },
    );
  });

  it('reads back what a well-formed header says', () => {
    const word = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
    fc.assert(
      fc.property(
        fc.dictionary(
          word,
          fc.string({ maxLength: 20 }).filter((s) => !s.includes('"') && !s.includes('\\')),
        ),
        (params) => {
          const header = `Bearer ${Object.entries(params)
            .map(([k, v]) => `${k}="${v}"`)
            .join(',')}`;
          const [c] = parseChallenges(header);
          expect(c.scheme).toBe('bearer');
          expect(c.params).toEqual(params);
        },
      ),
      { numRuns: 500 * SCALE },
    );
  });
});

const refToken = fc.constantFrom(
  'docker://',
  'localhost',
  'localhost:5000',
  'registry.example.com',
  '[::1]:5000',
  '/',
  ':',
  '@',
  'sha256:',
  'a'.repeat(64),
  'library',
  'busybox',
  'latest',
  '__',
  '-',
  '.',
  'A',
  '..',
  'oci://',
);
describe('image reference parsing', () => {
  it('gives a reference that formats and parses back to itself, or a UserError', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(refToken, fc.string({ maxLength: 4 })), { maxLength: 10 }), (parts) => {
        const input = parts.join('');
        for (const allowBare of [false, true]) {
          let ref: ReturnType<typeof parseImageReference>;
          try {
            ref = parseImageReference(input, { allowBare });
          } catch (e) {
            if (!isUserError(e)) throw e;
            expect(e.message).toMatch(/is not a valid image reference/);
            continue;
          }
          expect(ref.repository.length).toBeGreaterThan(0);
          expect(parseImageReference(formatReference(ref), { allowBare })).toEqual(ref);
        }
      }),
      { numRuns: FUZZ_RUNS.references },
    );
  });
});

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const digest = fc.oneof(
  fc.constant(`sha256:${'a'.repeat(64)}`),
  fc.string({ maxLength: 10 }),
  fc.integer(),
  fc.constant(null),
);
const json = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    fc.string({ maxLength: 8 }),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('v'), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 6 }), tie('v'), { maxKeys: 3 }),
  ),
})).v;
const descriptor = fc.oneof(
  json,
  fc.record(
    {
      mediaType: fc.oneof(fc.constantFrom(OCI_MANIFEST, OCI_INDEX, 'application/json'), json),
      digest,
      size: fc.oneof(fc.nat(), json),
      platform: fc.oneof(
        fc.record({
          os: fc.constantFrom('linux', 'windows'),
          architecture: fc.constantFrom('amd64', 'arm64'),
        }),
        json,
      ),
    },
    { requiredKeys: [] },
  ),
);
const manifestBody = fc.oneof(
  json,
  fc.record(
    {
      schemaVersion: fc.oneof(fc.constantFrom(1, 2), json),
      mediaType: fc.oneof(fc.constantFrom(OCI_MANIFEST, OCI_INDEX), json),
      config: descriptor,
      layers: fc.oneof(fc.array(descriptor, { maxLength: 3 }), json),
      manifests: fc.oneof(fc.array(descriptor, { maxLength: 3 }), json),
    },
    { requiredKeys: [] },
  ),
);

describe('manifest and index answers', () => {
  it('a registry answering anything gives an image or a UserError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            body: fc.oneof(
              manifestBody.map((v) => JSON.stringify(v)),
              fc.string({ maxLength: 40 }),
            ),
            contentType: fc.constantFrom(
              OCI_MANIFEST,
              OCI_INDEX,
              'application/vnd.docker.distribution.manifest.v2+json',
              'application/vnd.docker.distribution.manifest.list.v2+json',
              'application/vnd.docker.distribution.manifest.v1+prettyjws',
              'application/json',
              '',
            ),
            status: fc.constantFrom(200, 200, 200, 404, 400, 401, 403),
            digestHeader: fc.constantFrom('right', 'wrong', 'none'),
          }),
          { minLength: 1, maxLength: 3 },
        ),
        async (answers) => {
          let n = 0;
          const fakeFetch = (async () => {
            const a = answers[Math.min(n++, answers.length - 1)];
            const bytes = Buffer.from(a.body);
            const headers: Record<string, string> = {};
            if (a.contentType) headers['content-type'] = a.contentType;
            if (a.digestHeader !== 'none') {
              const d = createHash('sha256')
                .update(a.digestHeader === 'right' ? bytes : Buffer.from('x'))
                .digest('hex');
              headers['docker-content-digest'] = `sha256:${d}`;
            }
            return new Response(a.status === 200 ? bytes : '{"errors":[]}', { status: a.status, headers });
          }) as typeof fetch;
          const client = new RegistryClient({
            registry: 'fuzz.example',
            insecure: true,
            retries: 0,
            credentialFiles: [],
            fetch: fakeFetch,
          });
          try {
            const img = await client.getImage('repo', 'latest', { os: 'linux', architecture: 'amd64' });
            expect(typeof img.manifest.config.digest).toBe('string');
            expect(Array.isArray(img.manifest.layers)).toBe(true);
          } catch (e) {
            if (!isUserError(e)) throw e;
          }
        },
      ),
      { numRuns: FUZZ_RUNS.manifests },
    );
  });
});

// what a token service answers, and the JSON error bodies registries send with 4xx/5xx
const errorBody = fc.oneof(
  json,
  fc.record(
    {
      errors: fc.oneof(
        fc.array(
          fc.oneof(
            json,
            fc.record(
              {
                code: fc.oneof(fc.constantFrom('UNAUTHORIZED', 'DENIED', 'MANIFEST_UNKNOWN'), json),
                message: fc.oneof(fc.string({ maxLength: 400 }), json),
                detail: json,
              },
              { requiredKeys: [] },
            ),
          ),
          { maxLength: 3 },
        ),
        json,
      ),
    },
    { requiredKeys: [] },
  ),
);
const tokenBody = fc.oneof(
  json,
  fc.record(
    {
      token: fc.oneof(fc.constantFrom('dG9rZW4=', ''), fc.string({ maxLength: 12 }), json),
      access_token: fc.oneof(fc.constantFrom('dG9rZW4='), fc.string({ maxLength: 12 }), json),
      expires_in: fc.oneof(fc.integer(), fc.double(), json),
    },
    { requiredKeys: [] },
  ),
);

describe('token service answers and error bodies', () => {
  it('errorDetailOf gives a short string or nothing, for any text', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          errorBody.map((v) => JSON.stringify(v)),
          fc.string({ maxLength: 60 }),
        ),
        (text) => {
          const d = errorDetailOf(text);
          if (d !== undefined) {
            expect(typeof d).toBe('string');
            expect(d.length).toBeLessThanOrEqual(301);
            expect(d).not.toContain('[object Object]');
          }
        },
      ),
      { numRuns: FUZZ_RUNS.errorBodies },
    );
  });

  it('tokenOf gives a non-empty string token or a reason, for any JSON', () => {
    fc.assert(
      fc.property(tokenBody, (body) => {
        const t = tokenOf(body);
        if ('error' in t) expect(typeof t.error).toBe('string');
        else {
          expect(typeof t.token).toBe('string');
          expect(t.token.length).toBeGreaterThan(0);
          if (t.expiresIn !== undefined) expect(Number.isFinite(t.expiresIn)).toBe(true);
        }
      }),
      { numRuns: FUZZ_RUNS.errorBodies },
    );
  });

  it('a registry behind any token service, answering any error body, gives a result or a UserError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          realm: fc.constantFrom(
            'https://auth.example/token',
            'http://auth.example/t?x=1',
            'not a url',
            'ftp://x/',
            '',
          ),
          tokenStatus: fc.constantFrom(200, 200, 200, 401, 403, 404, 500),
          token: fc.oneof(
            tokenBody.map((v) => JSON.stringify(v)),
            fc.string({ maxLength: 20 }),
          ),
          status: fc.constantFrom(200, 400, 401, 403, 404, 500, 503),
          body: fc.oneof(
            errorBody.map((v) => JSON.stringify(v)),
            fc.string({ maxLength: 40 }),
          ),
        }),
        async (a) => {
          let n = 0;
          const fakeFetch = (async (input: string | URL) => {
            const url = String(input);
            if (url.includes('/v2/') && n++ === 0) {
              return new Response('{}', {
                status: 401,
                headers: { 'www-authenticate': `Bearer realm="${a.realm}",service="fuzz"` },
              });
            }
            if (!url.includes('/v2/')) return new Response(a.token, { status: a.tokenStatus });
            const manifest = JSON.stringify({
              schemaVersion: 2,
              mediaType: OCI_MANIFEST,
              config: { mediaType: 'x', digest: `sha256:${'a'.repeat(64)}`, size: 1 },
              layers: [],
            });
            return new Response(a.status === 200 ? manifest : a.body, {
              status: a.status,
              headers: { 'content-type': OCI_MANIFEST },
            });
          }) as typeof fetch;
          const client = new RegistryClient({
            registry: 'fuzz.example',
            retries: 0,
            credentialFiles: [],
            username: 'u',
            password: 'p',
            fetch: fakeFetch,
          });
          try {
            await client.getImage('repo', 'latest', { os: 'linux', architecture: 'amd64' });
          } catch (e) {
            if (!isUserError(e)) throw e;
            expect(e.message).toMatch(/^registry fuzz\.example repository repo[: ]/);
            expect(e.message).not.toContain('[object Object]');
          }
        },
      ),
      { numRuns: FUZZ_RUNS.tokens },
    );
  });
});
