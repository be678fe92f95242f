// The packages as libraries: each packs with `npm pack` with its exports and types, and
// every one installs from its tarball (workspace deps at 0.1.0 resolved from the local
// tarballs, third-party ones from the registry) into a scratch project, where each is
// imported, each plugin's module exports the types its package.json declares, and the
// ```js examples of every README run as written; the OCI layout a script writes is read
// back with skopeo and umoci.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX_TAR, IS_ROOT, REPO } from './harness.js';
import { skopeo, umociLs } from './oci-tools.js';
import { haveRegistry, type Running, startRegistry, stopRegistry } from './registry-server.js';

interface PackResult {
  name: string;
  filename: string;
  files: Array<{ path: string }>;
}

/** Every workspace package. */
const LIBRARIES = workspaces().map((w) => w.name);

let scratch: string;
let packs: PackResult[];

function workspaces(): Array<{ name: string; dir: string; pjson: any }> {
  const out = [];
  for (const parent of ['packages', 'plugins']) {
    for (const d of execFileSync('ls', [join(REPO, parent)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)) {
      const dir = join(REPO, parent, d);
      try {
        const pjson = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
        out.push({ name: pjson.name as string, dir, pjson });
      } catch {
        /* not a package */
      }
    }
  }
  return out;
}

/** The libraries and every workspace package they need, transitively. */
function closure(names: string[]): string[] {
  const all = new Map(workspaces().map((w) => [w.name, w]));
  const seen = new Set<string>();
  const visit = (n: string) => {
    if (seen.has(n)) return;
    seen.add(n);
    for (const dep of Object.keys(all.get(n)?.pjson.dependencies ?? {})) if (all.has(dep)) visit(dep);
  };
  for (const n of names) visit(n);
  return [...seen].sort();
}

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 240_000,
  });
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'stacker-e2e-libraries-'));
  mkdirSync(join(scratch, 'packs'));
  const ws = closure(LIBRARIES).flatMap((n) => ['-w', n]);
  packs = JSON.parse(npm(['pack', ...ws, '--json', '--pack-destination', join(scratch, 'packs')], REPO));
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('packages as libraries', () => {
  it('every package packs with its exports and types', () => {
    const problems: string[] = [];
    const ws = workspaces();
    const all = JSON.parse(
      npm(['pack', '--dry-run', '--json', '--ignore-scripts', ...ws.flatMap((w) => ['-w', w.name])], REPO),
    ) as PackResult[];
    for (const w of ws) {
      const { pjson } = w;
      if (!pjson.exports) problems.push(`${w.name}: no exports`);
      if (!pjson.types) problems.push(`${w.name}: no types`);
      const packed = all.find((p) => p.name === w.name);
      if (!packed) {
        problems.push(`${w.name}: npm pack gave nothing`);
        continue;
      }
      const files = new Set(packed.files.map((f) => f.path));
      const want: string[] = [pjson.types];
      for (const [sub, target] of Object.entries(pjson.exports ?? {})) {
        if (typeof target === 'string') want.push(target);
        else {
          const t = target as { types?: string; import?: string };
          if (!t.types) problems.push(`${w.name}: export ${sub} has no types`);
          want.push(t.types ?? '', t.import ?? '');
        }
      }
      for (const f of want.filter(Boolean)) {
        if (!files.has(f.replace(/^\.\//, ''))) problems.push(`${w.name}: ${f} is not in its npm pack`);
      }
      if (!files.has('README.md')) problems.push(`${w.name}: no README.md in its npm pack`);
    }
    expect(problems).toEqual([]);
  });

  it('installs from the tarballs alone (workspace deps from the local tarballs)', () => {
    expect(packs.map((p) => p.name).sort()).toEqual(closure(LIBRARIES));
    writeFileSync(
      join(scratch, 'package.json'),
      JSON.stringify({ name: 'scratch', version: '1.0.0', private: true, type: 'module' }),
    );
    const tarballs = packs.map((p) => `./packs/${p.filename}`);
    npm(['install', ...tarballs], scratch);
    const lock = JSON.parse(readFileSync(join(scratch, 'package-lock.json'), 'utf8'));
    for (const name of closure(LIBRARIES)) {
      const entry = lock.packages[`node_modules/${name}`];
      expect(entry?.resolved ?? '', name).toMatch(/^file:packs\//);
      // no second copy fetched from a registry for a dependent package
      const nested = Object.keys(lock.packages).filter((k) => k.endsWith(`/node_modules/${name}`));
      expect(nested, name).toEqual([]);
    }
  });

  it('runs the README examples: an OCI layout that skopeo and umoci read, a parsed stacker file', () => {
    mkdirSync(join(scratch, 'rootfs/etc'), { recursive: true });
    writeFileSync(join(scratch, 'rootfs/etc/motd'), 'hello from a library\n');
    writeFileSync(
      join(scratch, 'example.mjs'),
      `import { MEDIA_TYPES, isUserError } from '@stacker/plugin-api';
import { OciLayout, putLayer, walkDirectory } from '@stacker/oci';
import { dependenciesOf, parseStackerText } from '@stacker/stackerfile';

const layout = await OciLayout.init('oci');
const { descriptor, diffId } = await putLayer(layout, walkDirectory('rootfs'), {
  compression: 'gzip',
  sourceDateEpoch: 0,
});
const config = await layout.putConfig({
  architecture: 'amd64',
  os: 'linux',
  config: { Cmd: ['/bin/sh'] },
  rootfs: { type: 'layers', diff_ids: [diffId] },
});
const manifest = await layout.putManifest({
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.manifest,
  config,
  layers: [descriptor],
});
await layout.tag('example:latest', manifest);

const sf = parseStackerText(
  'app:\\n  from:\\n    type: built\\n    tag: base\\n  run: echo hi\\n  entrypoint: /usr/bin/app --config "/etc/app conf"\\n',
  '/src/app/stacker.yaml',
);
let error;
try {
  parseStackerText('app:\\n  from:\\n    type: tar\\n    url: ./x.tar\\n  bogus: 1\\n', '/src/app/stacker.yaml');
} catch (e) {
  error = { user: isUserError(e), message: e.message };
}
console.log(JSON.stringify({
  manifest: manifest.digest,
  layer: descriptor.digest,
  problems: await layout.validate(),
  layers: sf.layers.map((l) => l.name),
  entrypoint: sf.layers[0].entrypoint,
  deps: dependenciesOf(sf.layers[0]),
  error,
}));
`,
    );
    const out = JSON.parse(
      execFileSync(process.execPath, ['example.mjs'], { cwd: scratch, encoding: 'utf8' }),
    );
    expect(out.problems).toEqual([]);
    expect(out.layers).toEqual(['app']);
    expect(out.entrypoint).toEqual(['/usr/bin/app', '--config', '/etc/app conf']);
    expect(JSON.stringify(out.deps)).toMatch(/base/);
    expect(out.error.user).toBe(true);
    expect(out.error.message).toMatch(/^\/src\/app\/stacker\.yaml:5:3: unknown key "bogus"/);

    const layout = join(scratch, 'oci');
    expect(umociLs(layout)).toEqual(['example:latest']);
    const inspected = skopeo(layout, 'example:latest');
    expect(inspected.Digest).toBe(out.manifest);
    expect(inspected.Layers).toEqual([out.layer]);
    const files = execFileSync('tar', ['tzf', join(layout, 'blobs/sha256', out.layer.slice(7))], {
      encoding: 'utf8',
    });
    expect(files).toMatch(/etc\/motd/);
  });

  it('type-checks a consumer against the packed types', () => {
    writeFileSync(
      join(scratch, 'consumer.ts'),
      `import { type Source, UserError } from '@stacker/plugin-api';
import { checkSource } from '@stacker/plugin-api/source-kit';
import { OciLayout } from '@stacker/oci';
import { parseStackerText } from '@stacker/stackerfile';
export const s: Source = { type: 'x', schema: null as any, resolve: async () => { throw new UserError('x', 'y'); } };
export const parse: typeof parseStackerText = parseStackerText;
export const open: typeof OciLayout.init = OciLayout.init;
export const kit = checkSource;
`,
    );
    writeFileSync(
      join(scratch, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(REPO, 'node_modules/@types')],
        },
        files: ['consumer.ts'],
      }),
    );
    execFileSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], {
      cwd: scratch,
      encoding: 'utf8',
    });
  });
});

/** The line of a node failure that says what went wrong. */
function errorLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  return lines.find((l) => /^\w*Error\b|^Error \[/.test(l)) ?? lines.slice(-3).join(' | ');
}

/** The ```js blocks of a README, in order. */
function jsBlocks(readme: string): string[] {
  const blocks: string[] = [];
  const re = /^```js\n([\s\S]*?)^```/gm;
  for (let m = re.exec(readme); m; m = re.exec(readme)) blocks.push(m[1]);
  return blocks;
}

interface Example {
  /** why this example is not run here (and where what it shows is tested instead) */
  skip?: string;
  args?: string[];
  /** run in a private mount namespace (it mounts) */
  mounts?: boolean;
  code?: number;
  out?: RegExp[];
}

describe('every package from its tarball', () => {
  let registry: Running | undefined;
  const examples: Record<string, Example[]> = {
    '@stacker/core': [
      { out: [/\[ 'centos', 'boot', 'web' \]/, /\[ \[ 'centos' \], \[ 'boot', 'web' \] \]/] },
      { skip: 'a whole build needs a stacker.yaml, a base and a user namespace: e2e/src/build.test.ts' },
    ],
    '@stacker/oci': [{ args: ['rootfs', 'oci2'], out: [/problems: \[\]/] }, {}],
    '@stacker/registry': [{ out: [/ is sha256:[0-9a-f]{64}; \d+ blobs downloaded/] }],
    '@stacker/runtime': [{ code: 3, out: [/container: uid=0\b/] }],
    '@stacker/plugin-api': [{ mounts: true, out: [/^ok /m] }, { out: [/./] }],
    '@stacker/storage-overlay': [{ mounts: true, out: [/add new/, /delete sources\.list\.d/] }],
    '@stacker/storage-btrfs': [
      { skip: 'needs a btrfs mount: e2e/src/btrfs.test.ts runs it on a loop mount' },
    ],
    '@stacker/stackerfile': [{ out: [/LOG_LEVEL: 'debug'/, /unknown key "runn"/] }],
    '@stacker/cli': [{ out: [/stackerDir: '\/tmp\/w\/\.stacker'/] }],
    '@stacker/source-oci': [{ out: [/tag: 'v1:rc'/] }],
    '@stacker/source-built': [{ out: [/\[ 'centos' \]/] }],
  };

  beforeAll(async () => {
    if (!scratch) return;
    const all = join(scratch, 'all');
    mkdirSync(all, { recursive: true });
    writeFileSync(
      join(all, 'package.json'),
      JSON.stringify({ name: 'scratch-all', version: '1.0.0', private: true, type: 'module' }),
    );
    npm(['install', ...packs.map((p) => join(scratch, 'packs', p.filename))], all);
    // what the examples read
    mkdirSync(join(all, 'rootfs/etc'), { recursive: true });
    writeFileSync(join(all, 'rootfs/etc/motd'), 'hello\n');
    copyFileSync(BUSYBOX_TAR, join(all, 'layer.tar.gz'));
    copyFileSync(BUSYBOX_TAR, join(all, 'rootfs.tar.gz'));
    cpSync(join(REPO, 'examples/seed'), join(all, 'examples/seed'), { recursive: true });
    if (haveRegistry) registry = await startRegistry(join(scratch, 'registry'), 'open');
  }, 300_000);

  afterAll(async () => {
    if (registry) await stopRegistry(registry);
  });

  it('imports every package; each plugin module exports the types its package.json declares', () => {
    const problems: string[] = [];
    for (const w of workspaces()) {
      const decl = w.pjson.oclif?.stacker ?? {};
      const r = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const m = await import(${JSON.stringify(w.name)});
console.log(JSON.stringify({ keys: Object.keys(m), sources: (m.sources ?? []).map((s) => s.type), storage: (m.storage ?? []).map((s) => s.type) }));`,
        ],
        { cwd: join(scratch, 'all'), encoding: 'utf8' },
      );
      if (r.status !== 0) {
        problems.push(`${w.name}: import failed: ${errorLine(r.stderr)}`);
        continue;
      }
      const got = JSON.parse(r.stdout);
      if (got.keys.length === 0) problems.push(`${w.name}: exports nothing`);
      for (const kind of ['sources', 'storage'] as const) {
        const want = [...(decl[kind] ?? [])].sort();
        if (JSON.stringify([...got[kind]].sort()) !== JSON.stringify(want)) {
          problems.push(
            `${w.name}: declares ${kind} ${JSON.stringify(want)} but exports ${JSON.stringify(got[kind])}`,
          );
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it.runIf(IS_ROOT && haveRegistry)(
    "runs every README's js examples as written",
    () => {
      const all = join(scratch, 'all');
      // the registry example pulls what the oci example wrote, pushed with skopeo
      const ran: string[] = [];
      const problems: string[] = [];
      for (const w of workspaces()) {
        const blocks = jsBlocks(readFileSync(join(w.dir, 'README.md'), 'utf8'));
        const want = examples[w.name] ?? [];
        blocks.forEach((code, i) => {
          const ex = want[i] ?? {};
          if (ex.skip) return;
          const file = join(all, `${w.name.replace(/\W+/g, '-')}-${i}.mjs`);
          writeFileSync(file, code);
          let args = ex.args ?? [];
          if (w.name === '@stacker/registry') {
            execFileSync('skopeo', [
              'copy',
              '--dest-tls-verify=false',
              `oci:${join(all, 'oci2')}:example:latest`,
              `docker://127.0.0.1:${registry!.port}/example:latest`,
            ]);
            args = [`docker://127.0.0.1:${registry!.port}/example:latest`, 'pulled', 'ex'];
          }
          const cmd = ex.mounts ? 'unshare' : process.execPath;
          const argv = ex.mounts ? ['--mount', '--fork', process.execPath, file, ...args] : [file, ...args];
          const r = spawnSync(cmd, argv, { cwd: all, encoding: 'utf8', timeout: 120_000 });
          ran.push(`${w.name}#${i}`);
          const out = `${r.stdout}${r.stderr}`;
          if (r.status !== (ex.code ?? 0)) {
            problems.push(`${w.name} example ${i + 1}: exit ${r.status}: ${errorLine(out)}`);
            return;
          }
          for (const re of ex.out ?? [])
            if (!re.test(out)) problems.push(`${w.name} example ${i + 1}: no ${re} in ${out}`);
        });
      }
      expect(problems).toEqual([]);
      // every README with examples had them run or said why not
      for (const w of workspaces()) {
        const n = jsBlocks(readFileSync(join(w.dir, 'README.md'), 'utf8')).length;
        for (let i = 0; i < n; i++) {
          const ex = examples[w.name]?.[i];
          expect(ex?.skip !== undefined || ran.includes(`${w.name}#${i}`), `${w.name}#${i}`).toBe(true);
        }
      }
      expect(ran.length).toBeGreaterThanOrEqual(12);
    },
    300_000,
  );
});
