import { describe, expect, it } from 'vitest';
import { ErrorCodes } from './errors.js';
import { parseStackerText } from './stackerfile.js';
import { userErrorOf, yaml } from './test-helpers.js';

const F = '/proj/sub/stacker.yaml';
const parse = (text: string, opts = {}) => parseStackerText(text, F, opts);
const one = (text: string, opts = {}) => {
  const sf = parse(text, opts);
  expect(sf.layers).toHaveLength(1);
  return sf.layers[0];
};
const err = (text: string, opts = {}) => userErrorOf(() => parse(text, opts));
const HASH = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b856';

describe('layers and defaults', () => {
  it('keeps file order and fills defaults', () => {
    const sf = parse(yaml`
      zeta:
        from:
          type: scratch
      alpha:
        from:
          type: built
          tag: zeta
    `);
    expect(sf.path).toBe(F);
    expect(sf.dir).toBe('/proj/sub');
    expect(sf.prerequisites).toEqual([]);
    expect(sf.layers.map((l) => l.name)).toEqual(['zeta', 'alpha']);
    const z = sf.layers[0];
    expect(z).toEqual({
      name: 'zeta',
      place: { file: F, line: 1, col: 1, stanza: 'zeta' },
      from: { type: 'scratch' },
      imports: [],
      importsForm: 'none',
      run: [],
      generateLabels: [],
      environment: {},
      labels: {},
      annotations: {},
      volumes: [],
      buildOnly: false,
      binds: [],
      overlayDirs: [],
      buildEnv: {},
      canonical: z.canonical,
    });
    expect(z.canonical).toBe(
      '{"annotations":{},"binds":[],"buildEnv":{},"buildOnly":false,"environment":{},"from":{"type":"scratch"},"generateLabels":[],"imports":[],"importsForm":"none","labels":{},"name":"zeta","overlayDirs":[],"run":[],"volumes":[]}',
    );
    expect(sf.layers[1].place).toEqual({ file: F, line: 4, col: 1, stanza: 'alpha' });
    expect(sf.layers[1].from).toEqual({ type: 'built', tag: 'zeta' });
  });

  it('an empty file has no layers', () => {
    expect(parse('').layers).toEqual([]);
    expect(parse('# only a comment\n').layers).toEqual([]);
  });

  it('canonical is independent of key order and changes with content', () => {
    const a = one('l:\n  run: [a]\n  from: {type: oci, url: x}\n');
    const b = one('l:\n  from: {url: x, type: oci}\n  run: a\n');
    const c = one('l:\n  from: {url: y, type: oci}\n  run: a\n');
    expect(a.canonical).toBe(b.canonical);
    expect(a.canonical).not.toBe(c.canonical);
  });
});

describe('from', () => {
  it('keeps the common keys and any plugin keys', () => {
    const l = one(yaml`
      l:
        from:
          type: docker
          url: docker://alpine:3.19
          insecure: true
          suite: bookworm
          extra: {a: [1, 2]}
    `);
    expect(l.from).toEqual({
      type: 'docker',
      url: 'docker://alpine:3.19',
      insecure: true,
      suite: 'bookworm',
      extra: { a: [1, 2] },
    });
  });

  it('any type string is allowed (plugins add types)', () => {
    expect(one('l:\n  from: {type: debootstrap, suite: x}\n').from).toEqual({
      type: 'debootstrap',
      suite: 'x',
    });
  });

  it('placeOf points plugins at any key of from', () => {
    const sf = parse('l:\n  from:\n    type: deb\n    suite: 12\n');
    expect(sf.placeOf('l', ['from', 'suite'])).toEqual({
      file: F,
      line: 4,
      col: 5,
      stanza: 'l',
      key: 'from.suite',
    });
    expect(sf.placeOf('l', ['from'])).toEqual({ file: F, line: 2, col: 3, stanza: 'l', key: 'from' });
    expect(sf.placeOf('l', [])).toEqual({ file: F, line: 1, col: 1, stanza: 'l' });
    // a key that is not there: the deepest part that is
    expect(sf.placeOf('l', ['from', 'nope'])).toEqual({
      file: F,
      line: 3,
      col: 5,
      stanza: 'l',
      key: 'from.nope',
    });
    expect(sf.placeOf('missing', ['x'])).toEqual({ file: F, stanza: 'missing', key: 'x' });
  });

  it('a missing from is an error at the layer name', () => {
    const e = err('a:\n  from: {type: scratch}\nl:\n  run: echo\n');
    expect(e.code).toBe(ErrorCodes.missingKey);
    expect(e.place).toMatchObject({ file: F, line: 3, col: 1, stanza: 'l' });
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:3:1: layer "l" has no "from"; add `from:` (a mapping with at least `type:` (docker, oci, tar, built or scratch)).',
    );
  });

  it('a from without type is an error', () => {
    const e = err('l:\n  from:\n    url: x\n');
    expect(e.code).toBe(ErrorCodes.missingKey);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:2:3: layer "l" key "from" has no "type"; add `type:` (a string such as docker, oci, tar, built or scratch).',
    );
    const e2 = err('l:\n  from:\n    type:\n');
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:2:3: layer "l" key "from" has no "type"; add `type:` with docker, oci, tar, built or scratch.',
    );
  });

  it('built needs a tag', () => {
    const e = err('l:\n  from:\n    type: built\n');
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:2:3: layer "l" key "from" has no "tag"; add `tag:` naming the layer to build on (from tag cannot be empty for image type "built").',
    );
  });

  it('wrong types of the common keys', () => {
    const e = err('l:\n  from:\n    type: docker\n    insecure: maybe\n');
    expect(e.code).toBe(ErrorCodes.wrongType);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:4:15: layer "l" key "from.insecure" must be true or false, not the string "maybe"; change its value.',
    );
    const e2 = err('l:\n  from:\n    type: docker\n    url: [a]\n');
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:4:10: layer "l" key "from.url" must be a string, not a list; change its value.',
    );
    const e3 = err('l:\n  from: docker://x\n');
    expect(e3.message).toBe(
      '/proj/sub/stacker.yaml:2:9: layer "l" key "from" must be a mapping with at least `type:` (docker, oci, tar, built or scratch), not the string "docker://x"; change its value.',
    );
  });

  it('YAML 1.1 booleans work like in stacker', () => {
    expect(one('l:\n  from: {type: docker, url: x, insecure: yes}\n').from.insecure).toBe(true);
  });
});

describe('imports', () => {
  it('a single string', () => {
    const l = one('l:\n  from: {type: scratch}\n  imports: ./a.txt\n');
    expect(l.imports).toEqual([{ path: '/proj/sub/a.txt' }]);
    expect(l.importsForm).toBe('imports');
  });

  it('a list of strings and maps; URLs and stacker:// stay as written, trailing / kept', () => {
    const l = one(yaml`
      l:
        from: {type: scratch}
        imports:
          - dir/
          - /abs/file
          - https://example.com/x.tgz
          - stacker://other/usr/bin/tool
          - path: conf.json
            hash: SHA256:${HASH.toUpperCase()}
            dest: /etc/app/
            mode: 0644
            uid: 1000
            gid: 0
          - path: stacker://other/f
            hash: sha256:${HASH.toUpperCase()}
    `);
    expect(l.imports).toEqual([
      { path: '/proj/sub/dir/' },
      { path: '/abs/file' },
      { path: 'https://example.com/x.tgz' },
      { path: 'stacker://other/usr/bin/tool' },
      { path: '/proj/sub/conf.json', hash: HASH, dest: '/etc/app/', mode: 0o644, uid: 1000, gid: 0 },
      { path: 'stacker://other/f', hash: HASH },
    ]);
  }, 10_000);

  it('legacy import is the same list, remembered as import, with a deprecation warning', () => {
    const sf = parse(
      'l:\n  from: {type: scratch}\n  import:\n    - a\n    - path: b\n      hash: ' + HASH + '\n',
    );
    expect(sf.layers[0].imports).toEqual([{ path: '/proj/sub/a' }, { path: '/proj/sub/b', hash: HASH }]);
    expect(sf.layers[0].importsForm).toBe('import');
    expect(sf.warnings).toEqual([
      {
        place: { file: F, line: 3, col: 3, stanza: 'l', key: 'import' },
        message:
          "'import' directive used in layer 'l' is deprecated; change 'import' to 'imports' and '/stacker' to '/stacker/imports'.",
      },
    ]);
  });

  it('import and imports together is an error', () => {
    const e = err('l:\n  from: {type: scratch}\n  import: a\n  imports: b\n');
    expect(e.code).toBe(ErrorCodes.importBothForms);
    expect(e.place).toMatchObject({ file: F, line: 4, col: 3, stanza: 'l' });
    expect(e.message).toBe(
      "/proj/sub/stacker.yaml:4:3: layer \"l\" cannot have both 'import' and 'imports'; move every entry to 'imports' (files then appear under /stacker/imports instead of /stacker).",
    );
  });

  it('a bad hash is not valid', () => {
    const e = err('l:\n  from: {type: scratch}\n  imports:\n    - path: f\n      hash: 1234abcdef\n');
    expect(e.code).toBe(ErrorCodes.importHash);
    expect(e.place).toMatchObject({ file: F, line: 5, col: 13, stanza: 'l', key: 'imports[0].hash' });
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:5:13: layer "l" key "imports[0].hash": given hash 1234abcdef is not valid; write the file\'s sha256 as 64 hex digits, optionally prefixed with "sha256:".',
    );
    const bad = [`${HASH}0`, `md5:${HASH}`, `${HASH.slice(1)}g`];
    for (const h of bad)
      expect(
        err(`l:\n  from: {type: scratch}\n  imports:\n    - path: f\n      hash: "${h}"\n`).message,
      ).toContain('is not valid');
  });

  it('a relative dest is an error', () => {
    const e = err('l:\n  from: {type: scratch}\n  imports:\n    - path: f\n      dest: usr/bin\n');
    expect(e.code).toBe(ErrorCodes.importDest);
    expect(e.place).toMatchObject({ file: F, line: 5, col: 13 });
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:5:13: layer "l" key "imports[0].dest" "usr/bin" is relative, but \'dest\' path cannot be relative; write an absolute path inside the image such as "/usr/bin".',
    );
  });

  it('unknown keys, missing path, wrong types inside an import', () => {
    const e = err('l:\n  from: {type: scratch}\n  imports:\n    - path: f\n      owner: 1\n');
    expect(e.code).toBe(ErrorCodes.unknownKey);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:5:7: unknown key "owner" in layer "l" under "imports[0]"; remove it or use one of: path, hash, dest, mode, uid, gid.',
    );
    const e2 = err('l:\n  from: {type: scratch}\n  imports:\n    - hash: ' + HASH + '\n');
    expect(e2.code).toBe(ErrorCodes.missingKey);
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:4:7: layer "l" key "imports[0]" has no "path"; add `path:` (a string).',
    );
    const e3 = err('l:\n  from: {type: scratch}\n  imports:\n    - path: f\n      uid: -1\n');
    expect(e3.message).toBe(
      '/proj/sub/stacker.yaml:5:12: layer "l" key "imports[0].uid" must be a non-negative integer, not the number -1; change its value.',
    );
    const e4 = err('l:\n  from: {type: scratch}\n  imports:\n    - path: f\n      mode: rw\n');
    expect(e4.message).toBe(
      '/proj/sub/stacker.yaml:5:13: layer "l" key "imports[0].mode" must be a non-negative integer such as 0644, not the string "rw"; change its value.',
    );
    const e5 = err('l:\n  from: {type: scratch}\n  imports:\n    - [a]\n');
    expect(e5.message).toBe(
      '/proj/sub/stacker.yaml:4:7: layer "l" key "imports[0]" must be a path or a mapping of path, hash, dest, mode, uid, gid, not a list; change its value.',
    );
    const e6 = err('l:\n  from: {type: scratch}\n  imports: {path: x}\n');
    expect(e6.message).toBe(
      '/proj/sub/stacker.yaml:3:12: layer "l" key "imports" must be a path, or a list whose items are paths or mappings of path, hash, dest, mode, uid, gid, not a mapping; change its value.',
    );
  });

  it('--require-hash rejects remote imports without hash', () => {
    const text = 'l:\n  from: {type: scratch}\n  imports:\n    - local\n    - https://x/y\n';
    expect(one(text).imports).toHaveLength(2);
    const e = err(text, { requireHash: true });
    expect(e.place).toMatchObject({ line: 5, col: 7 });
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:5:7: layer "l" key "imports[1]" is remote import https://x/y without a hash, which --require-hash forbids; add `hash:` with its sha256.',
    );
  });
});

describe('run, generate_labels, cmd, entrypoint, full_command', () => {
  it('run and generate_labels: a string is one script, a list is several', () => {
    const l = one(
      'l:\n  from: {type: scratch}\n  run: |\n    a\n    b\n  generate_labels:\n    - x\n    - z\n',
    );
    expect(l.run).toEqual(['a\nb\n']);
    expect(l.generateLabels).toEqual(['x', 'z']);
    expect(
      one('l:\n  from: {type: scratch}\n  generate_labels: echo hi > /oci-labels/x\n').generateLabels,
    ).toEqual(['echo hi > /oci-labels/x']);
  });

  it('a non-string run item is an error at the item', () => {
    const e = err('l:\n  from: {type: scratch}\n  run:\n    - ok\n    - 3\n');
    expect(e.code).toBe(ErrorCodes.wrongType);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:5:7: layer "l" key "run[1]" must be a string, not the number 3; quote the value to make it a string.',
    );
    // YAML 1.1 (like stacker's parser): a bare y is a boolean
    expect(err('l:\n  from: {type: scratch}\n  run: [x, y]\n').message).toBe(
      '/proj/sub/stacker.yaml:3:12: layer "l" key "run[1]" must be a string, not the boolean true; quote the value to make it a string.',
    );
    const e2 = err('l:\n  from: {type: scratch}\n  run: {a: b}\n');
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:3:8: layer "l" key "run" must be a string or a list of strings, not a mapping; change its value.',
    );
  });

  it('cmd/entrypoint/full_command: strings are shell-split, lists kept, empty is null', () => {
    const l = one(String.raw`l:
  from: {type: scratch}
  cmd: /bin/sh -c "echo \"hi\" there" 'single \ kept' a\ b ""
  entrypoint: [/usr/bin/tini, "--"]
`);
    expect(l.cmd).toEqual(['/bin/sh', '-c', 'echo "hi" there', 'single \\ kept', 'a b']);
    expect(l.entrypoint).toEqual(['/usr/bin/tini', '--']);
    expect(l.fullCommand).toBeUndefined();
    const l2 = one('l:\n  from: {type: scratch}\n  cmd:\n  full_command: /app --flag\n');
    expect(l2.cmd).toBeNull();
    expect('entrypoint' in l2).toBe(false);
    expect(l2.fullCommand).toEqual(['/app', '--flag']);
  });

  it('an unclosed quote in cmd is an error', () => {
    const e = err('l:\n  from: {type: scratch}\n  cmd: echo "oops\n');
    expect(e.code).toBe(ErrorCodes.badValue);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:3:8: layer "l" key "cmd" can\'t be split into words (no closing quotation); close the quote or write it as a list of strings.',
    );
  });
});

describe('maps and lists of strings', () => {
  it('environment, labels, annotations, build_env: scalars become their text as written', () => {
    const l = one(yaml`
      l:
        from: {type: scratch}
        environment:
          PATH: /bin:/usr/bin
          N: 1.10
          B: true
          Y: yes
          H: 0x1F
          EMPTY:
          Q: "quoted # not a comment"
        labels:
          org.example.version: 2
        annotations:
          a.b.c: abc_val
        build_env:
          GOFLAGS: -mod=vendor
    `);
    expect(l.environment).toEqual({
      PATH: '/bin:/usr/bin',
      N: '1.10',
      B: 'true',
      Y: 'yes',
      H: '0x1F',
      EMPTY: '',
      Q: 'quoted # not a comment',
    });
    expect(l.labels).toEqual({ 'org.example.version': '2' });
    expect(l.annotations).toEqual({ 'a.b.c': 'abc_val' });
    expect(l.buildEnv).toEqual({ GOFLAGS: '-mod=vendor' });
  });

  it('a list as a map value is an error', () => {
    const e = err('l:\n  from: {type: scratch}\n  labels:\n    a: [1]\n');
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:4:8: layer "l" key "labels.a" must be a string, not a list; change its value.',
    );
    const e2 = err('l:\n  from: {type: scratch}\n  environment: [A=1]\n');
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:3:16: layer "l" key "environment" must be a mapping of NAME: value, not a list; change its value.',
    );
  });

  it('volumes and build_env_passthrough are lists', () => {
    const l = one(
      'l:\n  from: {type: scratch}\n  volumes: [/data, /var/log]\n  build_env_passthrough: ["HTTPS?_PROXY", ".*"]\n',
    );
    expect(l.volumes).toEqual(['/data', '/var/log']);
    expect(l.buildEnvPassthrough).toEqual(['HTTPS?_PROXY', '.*']);
    expect(one('l:\n  from: {type: scratch}\n').buildEnvPassthrough).toBeUndefined();
    const e = err('l:\n  from: {type: scratch}\n  volumes: /data\n');
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:3:12: layer "l" key "volumes" must be a list of paths, not the string "/data"; change its value.',
    );
  });

  it('working_dir, runtime_user, build_only, os, arch', () => {
    const l = one(
      'l:\n  from: {type: scratch}\n  working_dir: /app\n  runtime_user: 1000\n  build_only: true\n  os: linux\n  arch: arm64\n',
    );
    expect(l).toMatchObject({
      workingDir: '/app',
      runtimeUser: '1000',
      buildOnly: true,
      os: 'linux',
      arch: 'arm64',
    });
    const e = err('l:\n  from: {type: scratch}\n  build_only: "true"\n');
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:3:15: layer "l" key "build_only" must be true or false, not the string "true"; change its value.',
    );
  });

  it('an empty os or arch is an error', () => {
    const e = err('l:\n  from: {type: scratch}\n  os:\n');
    expect(e.code).toBe(ErrorCodes.emptyValue);
    expect(e.place).toMatchObject({ file: F, line: 3, col: 3, stanza: 'l', key: 'os' });
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:3:3: layer "l" key "os" value cannot be empty; set it (e.g. `os: linux`) or remove the key to use the host\'s.',
    );
    expect(err('l:\n  from: {type: scratch}\n  arch: ""\n').message).toBe(
      '/proj/sub/stacker.yaml:3:3: layer "l" key "arch" value cannot be empty; set it (e.g. `arch: amd64`) or remove the key to use the host\'s.',
    );
  });
});

describe('binds and overlay_dirs', () => {
  it('the three bind forms', () => {
    const l = one(yaml`
      l:
        from: {type: scratch}
        binds:
          - /zomg
          - /foo/bar -> /bar/baz
          - source: /src
            dest: /dst
          - source: rel
    `);
    expect(l.binds).toEqual([
      { source: '/zomg', dest: '/zomg' },
      { source: '/foo/bar', dest: '/bar/baz' },
      { source: '/src', dest: '/dst' },
      { source: '/proj/sub/rel', dest: '/proj/sub/rel' },
    ]);
  });

  it('a bad bind string, a bind without source', () => {
    const e = err('l:\n  from: {type: scratch}\n  binds:\n    - /a => /b\n');
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:4:7: layer "l" key "binds[0]" "/a => /b" is not a valid bind; write `/path`, `/source -> /dest` or a mapping with source and dest.',
    );
    const e2 = err('l:\n  from: {type: scratch}\n  binds:\n    - dest: /b\n');
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:4:7: layer "l" key "binds[0]" has no "source"; add `source:` (a string).',
    );
  });

  it('overlay_dirs default dest is /', () => {
    const l = one(
      'l:\n  from: {type: scratch}\n  overlay_dirs:\n    - source: d\n    - {source: /e, dest: /usr/local}\n',
    );
    expect(l.overlayDirs).toEqual([
      { source: '/proj/sub/d', dest: '/' },
      { source: '/e', dest: '/usr/local' },
    ]);
  });
});

describe('structure errors', () => {
  it('unknown layer key, at the key', () => {
    const e = err('l:\n  from: {type: scratch}\n  runn: echo\n');
    expect(e.code).toBe(ErrorCodes.unknownKey);
    expect(e.place).toEqual({ file: F, line: 3, col: 3, stanza: 'l', key: 'runn' });
    expect(e.message).toMatch(
      /^\/proj\/sub\/stacker\.yaml:3:3: unknown key "runn" in layer "l"; remove it or use one of: from, import, imports, overlay_dirs, run, cmd, /,
    );
  });

  it('reports the first problem in file order', () => {
    const e = err('l:\n  zzz: 1\n  from: {type: scratch}\n  aaa: 2\n');
    expect(e.place).toMatchObject({ line: 2, col: 3 });
  });

  it('a top-level key that is not a mapping', () => {
    const e = err('l: just a string\n');
    expect(e.code).toBe(ErrorCodes.wrongType);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:1:1: layer "l" must be a mapping of keys such as `from:` and `run:`, not the string "just a string"; indent its keys under the name (the top-level key `config` is reserved for `prerequisites`).',
    );
    expect(err('a:\n  from: {type: scratch}\nb:\n').message).toContain(
      '/proj/sub/stacker.yaml:3:1: layer "b" must be a mapping of keys such as `from:` and `run:`, not empty;',
    );
    expect(err('- a\n- b\n').message).toBe(
      '/proj/sub/stacker.yaml:1:1: the stacker file must be a mapping of layer names to layer definitions; write it as `name:` followed by indented keys such as `from:`.',
    );
  });

  it('a colon in a layer name is forbidden', () => {
    const e = err('"busybox:with:colon":\n  from: {type: scratch}\n');
    expect(e.code).toBe(ErrorCodes.forbiddenName);
    expect(e.place).toEqual({ file: F, line: 1, col: 1, stanza: 'busybox:with:colon' });
    expect(e.message).toBe(
      "/proj/sub/stacker.yaml:1:1: using ':' in the layer name \"busybox:with:colon\" is forbidden due to overlay constraints; rename the layer without ':'.",
    );
    expect(err('a:b:\n  from: {type: scratch}\n').message).toContain('forbidden');
  });

  it('duplicate layer names in one file', () => {
    const e = err('same:\n  from: {type: scratch}\nsame:\n  from: {type: scratch}\n');
    expect(e.code).toBe(ErrorCodes.duplicateLayer);
    expect(e.place).toEqual({ file: F, line: 3, col: 1, stanza: 'same' });
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:3:1: duplicate layer name "same": it is already defined at /proj/sub/stacker.yaml:1:1; rename one of them.',
    );
  });

  it('duplicate keys inside a layer', () => {
    const e = err('l:\n  from: {type: scratch}\n  run: a\n  run: b\n');
    expect(e.code).toBe(ErrorCodes.duplicateKey);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:4:3: layer "l" key "run" appears twice in the same mapping; remove one of them.',
    );
  });

  it('YAML syntax errors name the place', () => {
    const e = err('l:\n  from: {type: scratch\n  run: x\n');
    expect(e.code).toBe(ErrorCodes.syntax);
    expect(e.message).toMatch(
      /^\/proj\/sub\/stacker\.yaml:\d+:\d+: the stacker file is not valid YAML \(.+\); fix the syntax at this place\.$/,
    );
  });

  it('a non-string layer name', () => {
    const e = err('[a, b]:\n  from: {type: scratch}\n');
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:1:1: a layer name must be a string, not a mapping; quote the name.',
    );
    expect(err('12:\n  from: {type: scratch}\n').message).toBe(
      '/proj/sub/stacker.yaml:1:1: a layer name must be a string, not the number 12; quote the name.',
    );
  });
});

describe('config', () => {
  it('prerequisites are made absolute against the file, and config is not a layer', () => {
    const sf = parse(
      'config:\n  prerequisites:\n    - ../folder2/stacker.yaml\n    - /abs/s.yaml\nl:\n  from: {type: scratch}\n',
    );
    expect(sf.prerequisites).toEqual(['/proj/folder2/stacker.yaml', '/abs/s.yaml']);
    expect(sf.layers.map((l) => l.name)).toEqual(['l']);
    expect(sf.placeOf('config', ['prerequisites', 1])).toEqual({
      file: F,
      line: 4,
      col: 7,
      stanza: 'config',
      key: 'prerequisites[1]',
    });
  });

  it('unknown keys and wrong types in config', () => {
    const e = err('config:\n  prerequisite: [a]\n');
    expect(e.code).toBe(ErrorCodes.unknownKey);
    expect(e.message).toBe(
      '/proj/sub/stacker.yaml:2:3: unknown key "prerequisite" in "config"; remove it or use one of: prerequisites.',
    );
    const e2 = err('config:\n  prerequisites: a.yaml\n');
    expect(e2.message).toBe(
      '/proj/sub/stacker.yaml:2:18: key "config.prerequisites" must be a list of paths to other stacker files, not the string "a.yaml"; change its value.',
    );
    const e3 = err('config:\n  from: {type: scratch}\n');
    expect(e3.message).toContain('unknown key "from" in "config"');
  });
});

describe('YAML features stacker files use', () => {
  it('anchors, aliases and merge keys', () => {
    const sf = parse(yaml`
      base: &base
        from: {type: oci, url: "oci:x"}
        environment: &env
          A: "1"
      child:
        <<: *base
        environment:
          <<: *env
          B: "2"
        run: [echo]
    `);
    expect(sf.layers[1].from).toEqual({ type: 'oci', url: 'oci:x' });
    expect(sf.layers[1].environment).toEqual({ B: '2', A: '1' });
    expect(sf.layers[1].run).toEqual(['echo']);
  });

  it('a complex key is named by its text, even when its own merge key cannot merge', () => {
    // `? <<: *a` is a key that is itself a mapping whose merge source is a scalar: converting
    // that key to JS throws inside the YAML library, which must not escape as a crash.
    const e = userErrorOf(() =>
      parse('a:\n  from: {type: scratch}\n  labels: {x: &a 1}\n? <<: *a\n: {from: {type: scratch}}\n'),
    );
    expect(e.message).toMatch(/^\/proj\/sub\/stacker\.yaml:4:5: a layer name must be a string/);
    const e2 = userErrorOf(() => parse('? <<: *a\n'));
    expect(e2.message).toMatch(/^\/proj\/sub\/stacker\.yaml:1:\d+: /);
  });
});

describe('YAML 1.1 scalars', () => {
  it('timestamps stay as written', () => {
    const l = one(
      'l:\n  from: {type: scratch, when: 2024-01-02}\n  run: [2024-01-02]\n  labels: {d: 2024-01-02}\n',
    );
    expect(l.from.when).toBe('2024-01-02');
    expect(l.run).toEqual(['2024-01-02']);
    expect(l.labels).toEqual({ d: '2024-01-02' });
  });
});
