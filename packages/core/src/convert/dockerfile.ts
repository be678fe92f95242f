import { UserError } from '@stacker/plugin-api';

/** One instruction of a Dockerfile, continuation lines joined. */
export interface Instruction {
  /** Upper case: FROM, RUN, ... */
  keyword: string;
  /** `--name=value` flags before the arguments (COPY --from=..., FROM --platform=...). */
  flags: Record<string, string>;
  /** The arguments as written (continuations joined, leading space trimmed). */
  rest: string;
  /** The exec (JSON array) form's arguments, when the instruction uses it. */
  json?: string[];
  /** Line where the instruction starts (1-based). */
  line: number;
  /** The instruction as written on its first line, for messages. */
  original: string;
}

export function dockerfileError(file: string, line: number, message: string): UserError {
  return new UserError('dockerfile', `${file}:${line}: ${message}`, { file, line });
}

const FLAG_KEYWORDS = new Set(['FROM', 'RUN', 'COPY', 'ADD', 'HEALTHCHECK']);

/**
 * Split a Dockerfile into instructions the way Docker's parser does: `# escape=` parser
 * directive, comment lines (also inside continuations), the escape character at the end
 * of a line continues it, blank lines inside a continuation are skipped. Heredocs are
 * refused (they have no stacker equivalent this converter knows).
 */
export function parseDockerfile(text: string, file = 'Dockerfile'): Instruction[] {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  let escapeChar = '\\';
  let i = 0;
  // parser directives: only at the very top, before any comment or instruction
  for (; i < lines.length; i++) {
    const m = /^\s*#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(lines[i]);
    if (!m) break;
    if (m[1].toLowerCase() === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`')
        throw dockerfileError(file, i + 1, `invalid escapeChar character ${m[2]}`);
      escapeChar = m[2];
    }
  }
  const out: Instruction[] = [];
  while (i < lines.length) {
    const first = lines[i];
    const startLine = i + 1;
    i++;
    if (/^\s*$/.test(first) || /^\s*#/.test(first)) continue;
    let logical = first;
    // a line ending in the escapeChar character continues on the next non-comment line
    while (endsWithEscape(logical, escapeChar)) {
      logical = logical.replace(/\s*$/, '').slice(0, -1);
      while (i < lines.length && (/^\s*#/.test(lines[i]) || /^\s*$/.test(lines[i]))) i++;
      if (i >= lines.length) break;
      logical += lines[i];
      i++;
    }
    const m = /^\s*(\S+)\s*([\s\S]*)$/.exec(logical);
    if (!m) continue;
    const keyword = m[1].toUpperCase();
    let rest = m[2].trim();
    const flags: Record<string, string> = {};
    if (FLAG_KEYWORDS.has(keyword)) {
      for (;;) {
        const f = /^--([A-Za-z][A-Za-z0-9-]*)(?:=(\S*))?\s*/.exec(rest);
        if (!f) break;
        flags[f[1]] = f[2] ?? 'true';
        rest = rest.slice(f[0].length);
      }
    }
    if (
      /<<-?["']?[A-Za-z_][A-Za-z0-9_]*["']?/.test(rest) &&
      (keyword === 'RUN' || keyword === 'COPY' || keyword === 'ADD')
    ) {
      const hd = /<<-?["']?([A-Za-z_][A-Za-z0-9_]*)/.exec(rest);
      // `cat <<EOF` inside a RUN that continues with escapes is a shell heredoc Docker
      // would also see as its own: refuse both
      if (hd)
        throw dockerfileError(
          file,
          startLine,
          `${keyword} with a heredoc (<<${hd[1]}) has no stacker equivalent; write the commands out`,
        );
    }
    let json: string[] | undefined;
    if (rest.startsWith('[')) {
      try {
        const v = JSON.parse(rest) as unknown;
        if (Array.isArray(v) && v.every((x) => typeof x === 'string')) json = v;
      } catch {
        /* shell form that happens to start with [ */
      }
    }
    out.push({ keyword, flags, rest, json, line: startLine, original: first.trim() });
  }
  return out;
}

function endsWithEscape(s: string, escapeChar: string): boolean {
  const t = s.replace(/\s*$/, '');
  if (!t.endsWith(escapeChar)) return false;
  // an escaped escapeChar character (`\\`) does not continue the line
  let n = 0;
  for (let k = t.length - 1; k >= 0 && t[k] === escapeChar; k--) n++;
  return n % 2 === 1;
}

/**
 * Split `KEY=value KEY2="quoted value"` (ENV, LABEL, ARG) into pairs, unquoting as the
 * shell would. The legacy `ENV KEY value with spaces` form gives one pair.
 */
export function parseKeyValues(rest: string, legacyAllowed: boolean): [string, string][] {
  const words = splitWords(rest);
  if (words.length > 0 && !words[0].raw.includes('=')) {
    if (!legacyAllowed) return words.map((w) => [w.value, ''] as [string, string]);
    const sp = /^(\S+)\s+([\s\S]*)$/.exec(rest.trim());
    if (!sp) return [[rest.trim(), '']];
    return [[sp[1], unquote(sp[2].trim())]];
  }
  return words.map((w) => {
    const eq = w.value.indexOf('=');
    return eq < 0 ? [w.value, ''] : [w.value.slice(0, eq), w.value.slice(eq + 1)];
  });
}

/** Words split on unquoted whitespace; quotes removed, backslash escapes applied. */
export function splitWords(s: string): { raw: string; value: string }[] {
  const out: { raw: string; value: string }[] = [];
  let i = 0;
  while (i < s.length) {
    while (i < s.length && /\s/.test(s[i])) i++;
    if (i >= s.length) break;
    const start = i;
    let value = '';
    let quote: string | undefined;
    while (i < s.length && (quote || !/\s/.test(s[i]))) {
      const c = s[i];
      if (quote) {
        if (c === quote) quote = undefined;
        else if (c === '\\' && quote === '"' && i + 1 < s.length) value += s[++i];
        else value += c;
      } else if (c === '"' || c === "'") quote = c;
      else if (c === '\\' && i + 1 < s.length) value += s[++i];
      else value += c;
      i++;
    }
    out.push({ raw: s.slice(start, i), value });
  }
  return out;
}

function unquote(s: string): string {
  const w = splitWords(s);
  return w.length === 1 ? w[0].value : s;
}
