import { describe, expect, it } from 'vitest';
import { ShellSplitError, shellSplit } from './shlex.js';

describe('shellSplit (stacker cmd/entrypoint rules)', () => {
  it.each([
    ['a b  c', ['a', 'b', 'c']],
    ['  leading and trailing  ', ['leading', 'and', 'trailing']],
    ['tab\tand\nnewline', ['tab', 'and', 'newline']],
    [`'single "quoted" $x'`, ['single "quoted" $x']],
    [`"double 'quoted'"`, ["double 'quoted'"]],
    [String.raw`"a \"b\" \\ \n"`, [String.raw`a "b" \ \n`]],
    [String.raw`'no \escape'`, [String.raw`no \escape`]],
    [String.raw`a\ b c\\d`, ['a b', String.raw`c\d`]],
    [`pre"mid dle"post`, ['premid dlepost']],
    [`a "" b ''`, ['a', 'b']],
    ['/bin/sh -c "echo $HOME; ls"', ['/bin/sh', '-c', 'echo $HOME; ls']],
    ['', []],
  ])('%s', (input, expected) => {
    expect(shellSplit(input)).toEqual(expected);
  });

  it('unclosed quotes and a trailing backslash are errors', () => {
    expect(() => shellSplit('"abc')).toThrow(new ShellSplitError('No closing quotation'));
    expect(() => shellSplit("x 'abc")).toThrow(new ShellSplitError('No closing quotation'));
    expect(() => shellSplit('abc\\')).toThrow(new ShellSplitError('No escaped character'));
  });
});
