import { describe, expect, it } from 'vitest';
import { normaliseArgv } from './argv.js';

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
  it('keeps topic commands together', () => {
    expect(normaliseArgv(['--debug', 'plugins', 'install', 'file:x.tgz'])).toEqual([
      'plugins',
      'install',
      '--debug',
      'file:x.tgz',
    ]);
  });
  it('drops global flags when there is no command, so the command list shows', () => {
    expect(normaliseArgv(['--debug'])).toEqual([]);
    expect(normaliseArgv(['--debug', '--help'])).toEqual(['--help']);
  });
});
