/**
 * Splits a `cmd:` / `entrypoint:` / `full_command:` string into words the way stacker does
 * (POSIX shell-like lexing, whitespace split): single quotes are literal, double quotes let a
 * backslash escape only `"` and `\`, a backslash outside quotes escapes the next character,
 * and empty words (such as `""`) are dropped.
 */
export class ShellSplitError extends Error {}

const SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;

export function shellSplit(s: string): string[] {
  const words: string[] = [];
  let token = '';
  let quoted = false;
  let inWord = false;
  // mode: 'ws' between words, 'word' inside one, '"' / "'" inside quotes
  let mode: 'ws' | 'word' | '"' | "'" = 'ws';
  const chars = Array.from(s);
  const flush = () => {
    if (token !== '') words.push(token);
    token = '';
    quoted = false;
    inWord = false;
  };
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    if (mode === "'" || mode === '"') {
      quoted = true;
      if (c === mode) {
        mode = 'word';
      } else if (mode === '"' && c === '\\') {
        if (i + 1 >= chars.length) throw new ShellSplitError('No escaped character');
        const next = chars[++i];
        if (next !== '\\' && next !== '"') token += '\\';
        token += next;
      } else {
        token += c;
      }
      continue;
    }
    if (SPACE.test(c)) {
      if (mode === 'word' && (token !== '' || quoted)) flush();
      else if (mode === 'ws') flush();
      mode = 'ws';
      continue;
    }
    if (c === '\\') {
      if (i + 1 >= chars.length) throw new ShellSplitError('No escaped character');
      token += chars[++i];
      mode = 'word';
      inWord = true;
      continue;
    }
    if (c === '"' || c === "'") {
      mode = c;
      inWord = true;
      continue;
    }
    token += c;
    mode = 'word';
    inWord = true;
  }
  if (mode === '"' || mode === "'") throw new ShellSplitError('No closing quotation');
  if (inWord || token !== '') flush();
  return words;
}
