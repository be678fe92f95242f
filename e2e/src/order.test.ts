// `stacker build --order-only`, global flags before the command, and the bare `stacker`
// command list: what scripts written for the Go stacker rely on.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownTree, REPO, removeWorkdir, stacker, workdir, write } from './harness.js';
import { stackTraceLines } from './oci-tools.js';

let dir: string;
let file: string;

beforeAll(() => {
  dir = workdir('stacker-e2e-order-', join(REPO, 'examples/seed'));
  file = join(dir, 'stacker.yaml');
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

/** Index of the first line naming the stanza as a word. */
function lineOf(all: string[], stanza: string): number {
  return all.findIndex((l) => new RegExp(`(^|\\s)${stanza}(\\s|$)`).test(l));
}

function expectOrderOutput(stdout: string): void {
  const all = lines(stdout);
  expect(all.slice(-2)).toEqual(['stacker build order:', `0 build ${file}: requires: []`]);
  const body = all.slice(0, -2);
  const centos = lineOf(body, 'centos');
  const boot = lineOf(body, 'boot');
  const web = lineOf(body, 'web');
  expect(centos).toBeGreaterThanOrEqual(0);
  expect(boot).toBeGreaterThan(centos);
  expect(web).toBeGreaterThan(centos);
}

describe('stacker build --order-only', () => {
  it('prints centos before boot and web, then one line per stacker file', () => {
    const r = stacker(['build', '--order-only', '-f', 'stacker.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expectOrderOutput(r.stdout);
  });

  it('builds nothing', () => {
    stacker(['build', '--order-only', '-f', 'stacker.yaml'], { cwd: dir });
    expect(existsSync(join(dir, 'oci', 'index.json'))).toBe(false);
  });

  it('takes an absolute -f from another directory and prints that path', () => {
    const r = stacker(['build', '--order-only', '-f', file], { cwd: '/' });
    expect(r.code, r.output).toBe(0);
    expectOrderOutput(r.stdout);
  });

  it('accepts --debug before the command', () => {
    const r = stacker(['--debug', 'build', '--order-only', '-f', 'stacker.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expectOrderOutput(r.stdout);
    expect(r.output).toContain('stacker version');
  });

  it('accepts --debug after the command', () => {
    const r = stacker(['build', '--order-only', '-f', 'stacker.yaml', '--debug'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expectOrderOutput(r.stdout);
  });

  it('accepts --work-dir and --oci-dir before the command', () => {
    const r = stacker(
      ['--work-dir', join(dir, 'W'), '--oci-dir', 'X', 'build', '--order-only', '-f', 'stacker.yaml'],
      {
        cwd: dir,
      },
    );
    expect(r.code, r.output).toBe(0);
    expectOrderOutput(r.stdout);
  });

  it('accepts every global directory flag before the command', () => {
    const r = stacker(
      [
        '--work-dir',
        join(dir, 'W2'),
        '--roots-dir',
        'R',
        '--stacker-dir',
        'S',
        '--oci-dir',
        'O',
        '--no-progress',
        'build',
        '--order-only',
        '-f',
        'stacker.yaml',
      ],
      { cwd: dir },
    );
    expect(r.code, r.output).toBe(0);
    expectOrderOutput(r.stdout);
  });
});

describe('global flags on a real build', () => {
  it('--work-dir W --oci-dir X puts .stacker and roots under W, the layout at X', () => {
    const sub = join(dir, 'flags');
    const w = join(sub, 'W');
    // a tiny scratch image: no base to unpack, no run
    mkdirSync(sub);
    write(join(sub, 'f.txt'), 'hello\n');
    write(
      join(sub, 'stacker.yaml'),
      'one:\n  from:\n    type: scratch\n  imports:\n    - path: ./f.txt\n      dest: /f.txt\n',
    );
    chownTree(sub);
    const r = stacker(['--work-dir', w, '--oci-dir', 'X', 'build', '-f', 'stacker.yaml'], { cwd: sub });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('filesystem one built successfully');
    expect(existsSync(join(w, '.stacker'))).toBe(true);
    expect(existsSync(join(w, 'roots'))).toBe(true);
    expect(existsSync(join(sub, 'X', 'index.json'))).toBe(true);
    expect(existsSync(join(sub, 'oci'))).toBe(false);
    expect(existsSync(join(w, 'oci'))).toBe(false);
    expect(existsSync(join(sub, '.stacker'))).toBe(false);
  });
});

describe('stacker with no command', () => {
  it('prints the command list under a COMMANDS heading', () => {
    const r = stacker([], { cwd: dir });
    expect(r.output).toMatch(/^COMMANDS$/m);
    const commands = r.output.slice(r.output.indexOf('COMMANDS'));
    expect(commands).toMatch(/^\s+build\s/m);
    expect(commands).toMatch(/^\s+check\s/m);
    expect(stackTraceLines(r.output)).toEqual([]);
    expect(r.output).not.toMatch(/\bError:/);
    expect(r.code).toBe(0);
  });
});
