// `stacker plugins` as the unprivileged user, with a third-party source: the
// @stacker/source-debian package is packed, installed from its tarball with no registry
// (the npm registry is pointed at a dead port), used to build a Debian base with
// mmdebstrap that runs `hello`, then uninstalled, after which the same stacker file fails
// naming the plugin to install.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chownTree,
  IS_ROOT,
  REPO,
  type Result,
  removeWorkdir,
  stacker,
  TEST_USER,
  workdir,
  write,
} from './harness.js';
import { layersOf, stackTraceLines } from './oci-tools.js';

const PLUGIN = '@stacker/source-debian';
// nothing listens there: an install that needed the registry would fail
const OFFLINE = { STACKER_NPM_REGISTRY: 'http://127.0.0.1:9/' };
const HOME = IS_ROOT ? `/home/${TEST_USER}` : (process.env.HOME ?? '/tmp');
const DATA_DIR = join(HOME, '.local/share/stacker');

const HELLO = `hello:
  from:
    type: debian
    suite: bookworm
    variant: minbase
    packages: [hello]
  run: hello | tee /hello.txt
`;

let dir: string;
let packDir: string;
let tgz: string;

function plugins(args: string[], env: Record<string, string> = OFFLINE): Result {
  return stacker(['plugins', ...args], { cwd: dir, env });
}

const hasMmdebstrap = (() => {
  try {
    execFileSync('mmdebstrap', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

beforeAll(() => {
  dir = workdir('stacker-e2e-plugins-');
  packDir = mkdtempSync(join(tmpdir(), 'stacker-e2e-pack-'));
  const out = execFileSync('npm', ['pack', '--pack-destination', packDir, '--json'], {
    cwd: join(REPO, 'plugins/source-debian'),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  tgz = join(packDir, JSON.parse(out)[0].filename);
  chownTree(packDir);
  // a left-over from an interrupted run
  plugins(['uninstall', PLUGIN]);
});

afterAll(() => {
  if (dir) {
    plugins(['uninstall', PLUGIN]);
    removeWorkdir(dir);
  }
  if (packDir) rmSync(packDir, { recursive: true, force: true });
});

describe('stacker plugins', () => {
  it('packs the plugin self-contained: no runtime dependencies, the oclif.stacker declaration', () => {
    const listing = execFileSync('tar', ['tzf', tgz], { encoding: 'utf8' }).split('\n');
    expect(listing).toContain('package/dist/index.js');
    const pjson = JSON.parse(
      execFileSync('tar', ['xzOf', tgz, 'package/package.json'], { encoding: 'utf8' }),
    );
    expect(pjson.dependencies ?? {}).toEqual({});
    expect(pjson.oclif.stacker).toEqual({ sources: ['debian'], module: './dist/index.js' });
  });

  it('installs from the tarball without a registry, into the data dir, and lists it', () => {
    const r = plugins(['install', `file:${tgz}`]);
    expect(r.output).not.toMatch(/Warning|ERR!/);
    expect(r.code).toBe(0);
    expect(existsSync(join(DATA_DIR, 'node_modules', PLUGIN, 'dist/index.js'))).toBe(true);
    const list = plugins([]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/@stacker\/source-debian 0\.1\.0/);
    // stacker's global flags before `plugins` are accepted (and have nothing to do there)
    const withFlags = stacker(['--debug', 'plugins'], { cwd: dir, env: OFFLINE });
    expect(withFlags.code).toBe(0);
    expect(withFlags.stdout).toMatch(/@stacker\/source-debian/);
    expect(plugins(['--core']).stdout).toMatch(/@stacker\/source-tar .*\(core\)/);
  });

  it('updates installed plugins without a registry', () => {
    const r = plugins(['update']);
    expect(r.code).toBe(0);
    expect(plugins([]).stdout).toMatch(/@stacker\/source-debian 0\.1\.0/);
  });

  it("puts a plugin's from: errors at file:line:col, like core keys, before any work", () => {
    write(join(dir, 'typo.yaml'), HELLO.replace('packages:', 'packges:'));
    const r = stacker(['build', '-f', 'typo.yaml'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /typo\.yaml:6:5: unknown key "packges" in the from of layer "hello"; use one of: type, suite, variant, packages, mirror/,
    );
    write(join(dir, 'bad-variant.yaml'), HELLO.replace('variant: minbase', 'variant: tiny'));
    const v = stacker(['build', '-f', 'bad-variant.yaml'], { cwd: dir });
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(
      /bad-variant\.yaml:5:5: hello: from\.variant: variant: one of extract, .*minbase/,
    );
    expect(stackTraceLines(r.output + v.output)).toEqual([]);
  });

  it.skipIf(!hasMmdebstrap)(
    'builds a Debian base with mmdebstrap and runs its package',
    () => {
      write(join(dir, 'stacker.yaml'), HELLO);
      const r = stacker(['build'], { cwd: dir });
      expect(r.output).toMatch(/making a Debian bookworm \(minbase, hello, \w+\) base with mmdebstrap/);
      expect(r.output).toMatch(/Hello, world!/);
      expect(r.output).toMatch(/filesystem hello built successfully/);
      expect(r.code).toBe(0);
      // the base layer and the run's layer, read back by skopeo
      expect(layersOf(join(dir, 'oci'), 'hello')).toHaveLength(2);
      const cached = join(dir, '.stacker/sources/debian');
      expect(
        readFileSync(join(cached, execFileSync('ls', [cached], { encoding: 'utf8' }).trim())).length,
      ).toBeGreaterThan(1_000_000);
      // a second build reuses the cached tarball: no mmdebstrap
      const again = stacker(['build', '--no-cache'], { cwd: dir });
      expect(again.code).toBe(0);
      expect(again.output).not.toMatch(/mmdebstrap/);
      expect(again.output).toMatch(/Hello, world!/);
    },
    290_000,
  );

  it('uninstalls; then the same stacker file fails naming the plugin that provides the type', () => {
    write(join(dir, 'stacker.yaml'), HELLO);
    const u = plugins(['uninstall', PLUGIN]);
    expect(u.code).toBe(0);
    expect(plugins([]).stdout).toMatch(/No plugins installed/);
    expect(existsSync(join(DATA_DIR, 'node_modules', PLUGIN))).toBe(false);
    const r = stacker(['build'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /stacker\.yaml:3:5: hello: unknown source type "debian": known source types are [a-z, ]*\btar\b[a-z, ]*; the plugin @stacker\/source-debian provides it \(stacker plugins install @stacker\/source-debian, or from a stacker checkout: npm pack \.\/plugins\/source-debian, then stacker plugins install file:<the \.tgz it wrote>\)/,
    );
    expect(stackTraceLines(r.output)).toEqual([]);
  });

  it('links a plugin directory, and unlinks it', () => {
    const l = plugins(['link', join(REPO, 'plugins/source-debian'), '--no-install']);
    expect(l.code).toBe(0);
    expect(plugins([]).stdout).toMatch(/@stacker\/source-debian 0\.1\.0 \(link\)/);
    const u = plugins(['unlink', PLUGIN]);
    expect(u.code).toBe(0);
    expect(plugins([]).stdout).toMatch(/No plugins installed/);
  });

  it('looks an npm name up in the registry and fails cleanly when it cannot reach it', () => {
    const r = plugins(['install', '@stacker/source-nonexistent'], {
      ...OFFLINE,
      npm_config_fetch_retries: '0',
    });
    expect(r.code).not.toBe(0);
    expect(stackTraceLines(r.output)).toEqual([]);
    expect(existsSync(join(DATA_DIR, 'node_modules/@stacker/source-nonexistent'))).toBe(false);
  });
});
