/* biome-ignore-all lint/suspicious/noTemplateCurlyInString: stacker's ${{VAR}} placeholders are the data under test */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from './errors.js';
import { parseStackerText } from './stackerfile.js';
import { parseSubstituteFlag, readSubstituteFile, resolveSubstitutions, substitute } from './substitute.js';
import { userErrorOf, yaml } from './test-helpers.js';

const F = '/proj/stacker.yaml';

describe('parseSubstituteFlag', () => {
  it('splits at the first =', () => {
    expect(parseSubstituteFlag('A=b=c')).toEqual(['A', 'b=c']);
    expect(parseSubstituteFlag('EMPTY=')).toEqual(['EMPTY', '']);
  });
  it('rejects a flag without = or without a key', () => {
    for (const bad of ['NOEQUALS', '=value']) {
      const e = userErrorOf(() => parseSubstituteFlag(bad));
      expect(e.code).toBe(ErrorCodes.substituteFlag);
      expect(e.message).toBe(
        `invalid substitution "${bad}": --substitute expects KEY=VALUE with a non-empty KEY; write it as --substitute NAME=value.`,
      );
    }
  });
});

describe('substitute', () => {
  const vals = (o: Record<string, string>) => new Map(Object.entries(o));

  it('replaces ${{VAR}} and uses defaults only when no value is given', () => {
    const r = substitute('a ${{ONE}} ${{TWO:3}} ${{THREE:}} ${{ONE:ignored}}', F, vals({ ONE: '1' }));
    expect(r.text).toBe('a 1 3  1');
  });

  it('a default may contain colons, the name ends at the first one', () => {
    expect(substitute('${{URL:docker://x:1}}', F, vals({})).text).toBe('docker://x:1');
  });

  it('an empty value given wins over the default', () => {
    expect(substitute('[${{X:dflt}}]', F, vals({ X: '' })).text).toBe('[]');
  });

  it('a missing value without default names the variable and where it is', () => {
    const e = userErrorOf(() => substitute('a: b\nc: x ${{NOPE}}\n', F, vals({})));
    expect(e.code).toBe(ErrorCodes.substitutionMissing);
    expect(e.place).toEqual({ file: F, line: 2, col: 6 });
    expect(e.message).toBe(
      '/proj/stacker.yaml:2:6: no value for substitution ${{NOPE}}; pass --substitute NOPE=... (or put NOPE in a --substitute-file), or give a default with ${{NOPE:default}}.',
    );
  });

  it('reports the missing one at its original column even after earlier replacements on the line', () => {
    const e = userErrorOf(() =>
      substitute('x: ${{A}}${{A}} ${{B}}\n', F, vals({ A: 'a-much-longer-value' })),
    );
    expect(e.place).toEqual({ file: F, line: 1, col: 17 });
  });

  it('$VAR and ${VAR} of a given substitution are errors that say what to write', () => {
    const e1 = userErrorOf(() => substitute('run: echo $FOO\n', F, vals({ FOO: 'bar' })));
    expect(e1.code).toBe(ErrorCodes.substitutionShellStyle);
    expect(e1.message).toBe(
      '/proj/stacker.yaml:1:11: "FOO=bar" was provided as a substitution and unsupported placeholder "$FOO" was found; replace "$FOO" with "${{FOO}}" to use the substitution (or stop passing FOO).',
    );
    const e2 = userErrorOf(() => substitute('a: 1\nrun: echo ${FOO}/x\n', F, vals({ FOO: 'bar' })));
    expect(e2.place).toEqual({ file: F, line: 2, col: 11 });
    expect(e2.message).toContain(
      'unsupported placeholder "${FOO}" was found; replace "${FOO}" with "${{FOO}}"',
    );
    const e3 = userErrorOf(() => substitute('run: ${FOO:dflt}\n', F, vals({ FOO: 'bar' })));
    expect(e3.message).toContain('placeholder "${FOO:dflt}"');
  });

  it('shell-style names that were not given, or longer names, are left alone', () => {
    expect(substitute('run: echo $FOOBAR ${OTHER} $HOME ${{FOO}}', F, vals({ FOO: 'x' })).text).toBe(
      'run: echo $FOOBAR ${OTHER} $HOME x',
    );
  });

  it('maps positions after a substitution back to the original text', () => {
    const r = substitute('a: ${{V}}\nb: c\n', F, vals({ V: 'multi\nline\nvalue' }));
    const bOffset = r.text.indexOf('b: c');
    expect(r.map.position(bOffset)).toEqual({ line: 2, col: 1 });
    expect(r.map.position(r.text.indexOf('line'))).toEqual({ line: 1, col: 4 });
    expect(r.map.position(r.text.indexOf('c\n'))).toEqual({ line: 2, col: 4 });
  });
});

describe('substitution sources', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stackerfile-subs-'));
  const f1 = join(dir, 'one.yaml');
  const f2 = join(dir, 'two.yaml');
  writeFileSync(f1, 'A: from-file-1\nB: from-file-1\nN: 1.50\nE:\n');
  writeFileSync(f2, 'B: from-file-2\nC: from-file-2\n');

  it('reads a substitute file, keeping scalars as written', () => {
    expect(readSubstituteFile(f1)).toEqual({ A: 'from-file-1', B: 'from-file-1', N: '1.50', E: '' });
  });

  it('flags win over files, later files over earlier ones, everything over built-ins', () => {
    const m = resolveSubstitutions({
      builtins: { STACKER_OCI_DIR: '/b/oci', A: 'builtin', D: 'builtin' },
      substituteFiles: [f1, f2],
      substitutions: { C: 'flag' },
    });
    expect(Object.fromEntries(m)).toEqual({
      STACKER_OCI_DIR: '/b/oci',
      A: 'from-file-1',
      B: 'from-file-2',
      C: 'flag',
      D: 'builtin',
      N: '1.50',
      E: '',
    });
  });

  it('a substitute file that is not a mapping is an error at its place', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, '- a\n- b\n');
    const e = userErrorOf(() => readSubstituteFile(bad));
    expect(e.code).toBe(ErrorCodes.substituteFile);
    expect(e.message).toBe(
      `${bad}:1:1: substitute file is not a mapping; write it as a YAML mapping of NAME: value lines.`,
    );
  });

  it('parseStackerText applies CLI > file > built-in', () => {
    const text = yaml`
      l:
        from:
          type: oci
          url: \${{STACKER_OCI_DIR}}/\${{A}}/\${{C}}
    `;
    const sf = parseStackerText(text, F, {
      builtins: { STACKER_OCI_DIR: '/oci', A: 'nope' },
      substituteFiles: [f1, f2],
      substitutions: { C: 'cli' },
    });
    expect(sf.layers[0].from.url).toBe('/oci/from-file-1/cli');
    const sf2 = parseStackerText(text, F, {
      builtins: { STACKER_OCI_DIR: '/oci' },
      substituteFiles: [f1, f2],
      substitutions: { A: 'cli-a', C: 'c' },
    });
    expect(sf2.layers[0].from.url).toBe('/oci/cli-a/c');
  });

  it('built-ins count as given substitutions for the $VAR check, as in stacker', () => {
    const text = 'l:\n  from: {type: scratch}\n  run: ls $STACKER_ROOTFS_DIR\n';
    const e = userErrorOf(() => parseStackerText(text, F, { builtins: { STACKER_ROOTFS_DIR: '/r' } }));
    expect(e.place).toEqual({ file: F, line: 3, col: 11 });
    expect(e.message).toContain(
      '"STACKER_ROOTFS_DIR=/r" was provided as a substitution and unsupported placeholder "$STACKER_ROOTFS_DIR"',
    );
  });

  it('records the substituted text as raw, and positions after multi-line values stay right', () => {
    const sf = parseStackerText('l:\n  from: {type: ${{T}}}\n  run: x\n', F, { substitutions: { T: 'oci' } });
    expect(sf.raw).toBe('l:\n  from: {type: oci}\n  run: x\n');
    const text = 'l:\n  from: {type: ${{T}}}\n  run: |\n    ${{SCRIPT}}\n  bogus: 1\n';
    const opts = { substitutions: { T: 'a-long-type-name', SCRIPT: 'one\n    two\n    three' } };
    const e = userErrorOf(() => parseStackerText(text, F, opts));
    expect(e.place).toEqual({ file: F, line: 5, col: 3, stanza: 'l', key: 'bogus' });
    expect(e.message.startsWith('/proj/stacker.yaml:5:3: unknown key "bogus" in layer "l"')).toBe(true);
  });
});
