// The packages as libraries: each packs with `npm pack` with its exports and types, and
// @stacker/plugin-api, @stacker/oci and @stacker/stackerfile install from their tarballs
// (workspace deps at 0.1.0 resolved from the local tarballs, third-party ones from the
// registry) into a scratch project whose script runs the README examples; the OCI layout
// it writes is read back with skopeo and umoci.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from './harness.js';
import { skopeo, umociLs } from './oci-tools.js';

interface PackResult {
  name: string;
  filename: string;
  files: Array<{ path: string }>;
}

const LIBRARIES = ['@stacker/plugin-api', '@stacker/oci', '@stacker/stackerfile'];

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
