/* biome-ignore-all lint/suspicious/noTemplateCurlyInString: stacker's ${{VAR}} placeholders are the data under test */
// Property tests: whatever text a user (or a typo) puts in a stacker file, the parser and the
// substitution engine either give a model or fail with a UserError that names file:line:col.
// Never a TypeError, a stack overflow or an error without a place.
import { isUserError } from '@stacker/plugin-api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { layerKeys } from './schema.js';
import { parseStackerText } from './stackerfile.js';
import { substitute } from './substitute.js';

const FILE = '/fuzz/stacker.yaml';
const PLACE = /^\/fuzz\/stacker\.yaml:\d+:\d+: /;
const SCALE = Number(process.env.STACKER_FUZZ_SCALE ?? 1);
export const FUZZ_RUNS = { text: 3000 * SCALE, stanzas: 800 * SCALE, substitution: 2000 * SCALE };

/** Parse, and check that any failure is a UserError with a place. */
function parseOrPlacedError(text: string, substitutions: Record<string, string> = {}): void {
  try {
    const f = parseStackerText(text, FILE, { substitutions });
    // the model is usable: every layer has a name, a from and a canonical form
    for (const l of f.layers) {
      expect(typeof l.name).toBe('string');
      expect(typeof l.canonical).toBe('string');
    }
  } catch (e) {
    if (!isUserError(e))
      throw new Error(`not a UserError for ${JSON.stringify(text)}: ${String(e)}`, { cause: e });
    if (!PLACE.test(e.message))
      throw new Error(`no file:line:col in ${JSON.stringify(e.message)} for ${JSON.stringify(text)}`);
  }
}

// YAML-ish fragments: the characters and tokens that make YAML interesting.
const token = fc.constantFrom(
  ':',
  ': ',
  '- ',
  '\n',
  '\n  ',
  '\n    ',
  '  ',
  '"',
  "'",
  '{',
  '}',
  '[',
  ']',
  ',',
  '#',
  '&a ',
  '*a',
  '!!str ',
  '!!binary ',
  '|',
  '>',
  '? ',
  '---\n',
  '...\n',
  '%YAML 1.1\n',
  '<<: *a\n',
  '\t',
  '\\',
  '${{X}}',
  '${{Y:def}}',
  '${{',
  '}}',
  '$X',
  'from',
  'type',
  'docker',
  'tar',
  'built',
  'scratch',
  'url',
  'tag',
  'run',
  'imports',
  'import',
  'path',
  'dest',
  'hash',
  'mode',
  'binds',
  'config',
  'prerequisites',
  'build_only',
  'environment',
  'labels',
  'null',
  '~',
  'true',
  'yes',
  '0x1f',
  '1e400',
  '-1',
  '0777',
  'stacker://a/b',
  '/etc/x',
  '../..',
  'a:b',
  '\u00e9',
  '\u0000',
  '\ufeff',
);
const yamlish = fc
  .array(fc.oneof(token, fc.string({ maxLength: 6 })), { maxLength: 40 })
  .map((a) => a.join(''));

// Stanzas with the right keys and random values of every shape.
const scalarValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom('/abs/path', 'rel/path', 'stacker://other/x', 'https://h/f.tgz', '../up', 'a:b'),
);
const value = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalarValue,
    fc.array(tie('v'), { maxLength: 3 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...layerKeys), fc.string({ maxLength: 5 })), tie('v'), {
      maxKeys: 3,
    }),
  ),
})).v;
const fromValue = fc.oneof(
  value,
  fc.record(
    {
      type: fc.constantFrom('docker', 'tar', 'oci', 'built', 'scratch', 'nope'),
      url: scalarValue,
      tag: scalarValue,
      insecure: fc.oneof(fc.boolean(), scalarValue),
    },
    { requiredKeys: ['type'] },
  ),
);
const stanza = fc
  .dictionary(fc.constantFrom(...layerKeys), value, { maxKeys: 6 })
  .chain((body) => fromValue.map((from) => ({ from, ...body })));
const file = fc.dictionary(
  fc.oneof(fc.constantFrom('a', 'b', 'config', 'x:y', ''), fc.string({ maxLength: 8 })),
  fc.oneof(stanza, value),
  { minKeys: 1, maxKeys: 4 },
);

describe('stacker file parser under random input', () => {
  it('random YAML-ish text: a model or a placed UserError', () => {
    fc.assert(
      fc.property(
        yamlish,
        fc.dictionary(fc.constantFrom('X', 'Y', 'Z'), fc.string({ maxLength: 8 })),
        (t, subs) => parseOrPlacedError(t, subs),
      ),
      // counterexamples found by earlier runs stay in every run
      { numRuns: FUZZ_RUNS.text, examples: [['? <<: *a\n', {}]] },
    );
  });

  it('random stanzas: a model or a placed UserError', () => {
    fc.assert(
      fc.property(file, (f) => parseOrPlacedError(stringify(f, { version: '1.1' }))),
      { numRuns: FUZZ_RUNS.stanzas },
    );
  });

  it('random stanzas, mutated as text: a model or a placed UserError', () => {
    fc.assert(
      fc.property(file, fc.nat(), fc.oneof(token, fc.string({ maxLength: 3 })), (f, at, insert) => {
        const text = stringify(f, { version: '1.1' });
        const i = at % (text.length + 1);
        parseOrPlacedError(text.slice(0, i) + insert + text.slice(i));
      }),
      { numRuns: FUZZ_RUNS.stanzas },
    );
  });
});

describe('substitution under random input', () => {
  const name = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.-]{0,6}$/);
  it('replaces every given placeholder, or fails with a placed UserError', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            token,
            fc.string({ maxLength: 5 }),
            name.map((n) => `\${{${n}}}`),
          ),
          { maxLength: 30 },
        ),
        fc.dictionary(name, fc.string({ maxLength: 10 })),
        (parts, values) => {
          const text = parts.join('');
          const map = new Map(Object.entries(values));
          try {
            const out = substitute(text, FILE, map);
            // every offset of the output maps back into the original text
            for (let i = 0; i <= out.text.length; i += 7) {
              const p = out.map.originalPosition(i);
              expect(p.line).toBeGreaterThanOrEqual(1);
              expect(p.col).toBeGreaterThanOrEqual(1);
            }
          } catch (e) {
            if (!isUserError(e)) throw e;
            expect(e.message).toMatch(PLACE);
          }
        },
      ),
      { numRuns: FUZZ_RUNS.substitution },
    );
  });
});
