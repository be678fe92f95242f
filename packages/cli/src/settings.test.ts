import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfigPath, resolveSettings } from './settings.js';

let tmp: string;
let home: string;
const cwd = '/work/here';

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'stacker-settings-'));
  home = join(tmp, 'home');
  mkdirSync(join(home, '.config', 'stacker'), { recursive: true });
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function config(name: string, text: string): string {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
}

describe('defaultConfigPath', () => {
  it('is ~/.config/stacker/conf.yaml, or conf.yaml right in XDG_CONFIG_HOME as stacker has it', () => {
    expect(defaultConfigPath({ HOME: '/home/u' })).toBe('/home/u/.config/stacker/conf.yaml');
    expect(defaultConfigPath({ HOME: '/home/u', XDG_CONFIG_HOME: '/xdg' })).toBe('/xdg/conf.yaml');
  });
});

describe('resolveSettings', () => {
  it('defaults to .stacker, oci and roots in the current directory', () => {
    const s = resolveSettings({}, cwd, { HOME: join(tmp, 'nohome') });
    expect(s).toMatchObject({
      workDir: '',
      stackerDir: '/work/here/.stacker',
      ociDir: '/work/here/oci',
      rootsDir: '/work/here/roots',
      storageType: 'overlay',
      runtime: 'runc',
    });
  });

  it('reads stacker_dir, oci_dir and rootfs_dir from ~/.config/stacker/conf.yaml', () => {
    writeFileSync(
      join(home, '.config', 'stacker', 'conf.yaml'),
      'stacker_dir: /c/stacker\noci_dir: rel-oci\nrootfs_dir: /c/roots\n',
    );
    const s = resolveSettings({}, cwd, { HOME: home });
    expect(s.configPath).toBe(join(home, '.config', 'stacker', 'conf.yaml'));
    expect(s.stackerDir).toBe('/c/stacker');
    expect(s.ociDir).toBe('/work/here/rel-oci');
    expect(s.rootsDir).toBe('/c/roots');
  });

  it('reads $XDG_CONFIG_HOME/conf.yaml when XDG_CONFIG_HOME is set', () => {
    const xdg = join(tmp, 'xdg');
    mkdirSync(xdg, { recursive: true });
    writeFileSync(join(xdg, 'conf.yaml'), 'oci_dir: /from/xdg\n');
    expect(resolveSettings({}, cwd, { HOME: home, XDG_CONFIG_HOME: xdg }).ociDir).toBe('/from/xdg');
  });

  it('flags win over the config file', () => {
    const c = config(
      'flags.yaml',
      'stacker_dir: /c/stacker\noci_dir: /c/oci\nrootfs_dir: /c/roots\nwork_dir: /c/work\n',
    );
    const s = resolveSettings(
      {
        config: c,
        'stacker-dir': 'f-stacker',
        'oci-dir': '/f/oci',
        'roots-dir': '/f/roots',
        'work-dir': '/f/work',
      },
      cwd,
      {},
    );
    expect(s).toMatchObject({
      workDir: '/f/work',
      stackerDir: '/work/here/f-stacker',
      ociDir: '/f/oci',
      rootsDir: '/f/roots',
    });
  });

  it('work_dir holds the directories the config file leaves to their defaults', () => {
    const c = config('work.yaml', 'work_dir: /w\noci_dir: /elsewhere/oci\n');
    const s = resolveSettings({ config: c }, cwd, {});
    expect(s).toMatchObject({
      workDir: '/w',
      stackerDir: '/w/.stacker',
      ociDir: '/elsewhere/oci',
      rootsDir: '/w/roots',
    });
    // --work-dir wins over work_dir
    expect(resolveSettings({ config: c, 'work-dir': 'mine' }, cwd, {}).stackerDir).toBe(
      '/work/here/mine/.stacker',
    );
  });

  it('a --config file that does not exist is no config, as in stacker', () => {
    const s = resolveSettings({ config: join(tmp, 'missing.yaml') }, cwd, {});
    expect(s.ociDir).toBe('/work/here/oci');
    expect(s.configPath).toBe(join(tmp, 'missing.yaml'));
  });

  it('names the file and the key for a bad config', () => {
    expect(() => resolveSettings({ config: config('bad.yaml', 'oci_dri: x\n') }, cwd, {})).toThrow(
      /bad\.yaml: .*oci_dri.*known keys: work_dir, stacker_dir, oci_dir, rootfs_dir/,
    );
    expect(() => resolveSettings({ config: config('notyaml.yaml', 'a: [\n') }, cwd, {})).toThrow(
      /not valid YAML/,
    );
  });

  it('STACKER_RUNTIME wins over the runtime key, which wins over runc', () => {
    const c = config('runtime.yaml', 'runtime: crun\nstorage_type: btrfs\n');
    expect(resolveSettings({ config: c }, cwd, {}).runtime).toBe('crun');
    expect(resolveSettings({ config: c }, cwd, { STACKER_RUNTIME: '/opt/runc' }).runtime).toBe('/opt/runc');
    expect(resolveSettings({ config: c }, cwd, {}).storageType).toBe('btrfs');
    expect(resolveSettings({ config: c, 'storage-type': 'overlay' }, cwd, {}).storageType).toBe('overlay');
  });

  it('SOURCE_DATE_EPOCH must be whole seconds', () => {
    expect(resolveSettings({}, cwd, { SOURCE_DATE_EPOCH: '1600000000' }).sourceDateEpoch).toBe(1600000000);
    expect(() => resolveSettings({}, cwd, { SOURCE_DATE_EPOCH: '12x' })).toThrow(/invalid SOURCE_DATE_EPOCH/);
  });

  it("refuses a roots dir with ':' (overlay's option separator)", () => {
    expect(() => resolveSettings({ 'roots-dir': '/a:b' }, cwd, {})).toThrow(/must not contain ':'/);
  });
});

describe('built-in substitutions', () => {
  it('STACKER_WORK_DIR is the work dir (empty without one), next to the other directories', async () => {
    const { loadStackerFiles } = await import('./stackerfiles.js');
    const file = config(
      'subst.yaml',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: stacker's substitution syntax
      'l:\n  from: {type: scratch}\n  run: echo "${{STACKER_WORK_DIR}}|${{STACKER_OCI_DIR}}"\n',
    );
    const withWork = await loadStackerFiles([file], {}, resolveSettings({ 'work-dir': '/w' }, cwd, {}));
    expect(withWork[0].layers[0].run).toEqual(['echo "/w|/w/oci"']);
    const without = await loadStackerFiles([file], {}, resolveSettings({}, cwd, {}));
    expect(without[0].layers[0].run).toEqual(['echo "|/work/here/oci"']);
  });
});
