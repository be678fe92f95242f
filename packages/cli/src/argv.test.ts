import { describe, expect, it } from 'vitest';
import { GLOBAL_BOOL_FLAGS, GLOBAL_VALUE_FLAGS, normaliseArgv } from './argv.js';
import { StackerCommand } from './base-command.js';

describe('normaliseArgv', () => {
  it('moves global flags from before the command to after it', () => {
    expect(normaliseArgv(['--debug', 'build', '-f', 'x.yaml'])).toEqual(['build', '--debug', '-f', 'x.yaml']);
    expect(
      normaliseArgv(['--work-dir', 'W', '--roots-dir=R', '--oci-dir', 'O', '-q', 'build', '--order-only']),
    ).toEqual(['build', '--work-dir', 'W', '--roots-dir=R', '--oci-dir', 'O', '-q', '--order-only']);
  });
  it('leaves argv alone when nothing precedes the command', () => {
    expect(normaliseArgv(['build', '--debug'])).toEqual(['build', '--debug']);
    expect(normaliseArgv([])).toEqual([]);
  });
  it('drops global flags before `plugins …` (oclif commands that do not know them)', () => {
    expect(normaliseArgv(['--debug', 'plugins', 'install', 'file:x.tgz'])).toEqual([
      'plugins',
      'install',
      'file:x.tgz',
    ]);
    expect(normaliseArgv(['--work-dir', 'W', 'plugins'])).toEqual(['plugins']);
  });
  it('drops global flags when there is no command, so the command list shows', () => {
    expect(normaliseArgv(['--debug'])).toEqual([]);
    expect(normaliseArgv(['--debug', '--help'])).toEqual(['--help']);
  });
  it('knows every global flag of the commands, so each works before the command too', () => {
    const missing: string[] = [];
    for (const [name, flag] of Object.entries(StackerCommand.baseFlags) as [string, any][]) {
      const set = flag.type === 'boolean' ? GLOBAL_BOOL_FLAGS : GLOBAL_VALUE_FLAGS;
      if (!set.has(`--${name}`)) missing.push(`--${name}`);
      if (flag.char && !set.has(`-${flag.char}`) && flag.type === 'boolean') missing.push(`-${flag.char}`);
      if (flag.allowNo && !set.has(`--no-${name}`)) missing.push(`--no-${name}`);
    }
    expect(missing).toEqual([]);
    expect(normaliseArgv(['--json', 'build'])).toEqual(['build', '--json']);
  });
});
