import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import { errors } from './errors.js';
import { type Replacement, SourceMap } from './source-map.js';

/** The substitution values a stacker file sees, by where they come from. */
export interface SubstitutionSources {
  /** `--substitute K=V` flags; they win over everything else. */
  substitutions?: Record<string, string>;
  /** `--substitute-file` YAML maps of `K: V`; a later file wins over an earlier one. */
  substituteFiles?: string[];
  /** Values the host provides, e.g. STACKER_ROOTFS_DIR, STACKER_STACKER_DIR, STACKER_OCI_DIR;
   * every other source wins over these. */
  builtins?: Record<string, string>;
}

/** `K=V` -> [K, V]; the value may contain `=` and may be empty, the key may not. */
export function parseSubstituteFlag(arg: string): [string, string] {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw errors.badSubstituteFlag(arg);
  return [arg.slice(0, eq), arg.slice(eq + 1)];
}

/** Reads a `--substitute-file`: a YAML mapping whose scalar values become strings as written. */
export function readSubstituteFile(path: string): Record<string, string> {
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw errors.substituteFile({ file }, `${file} couldn't be read (${(e as Error).message})`);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, version: '1.1', uniqueKeys: false });
  const at = (offset: number) => ({ file, ...lineCounter.linePos(offset) });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    throw errors.substituteFile(at(e.pos[0]), `is not valid YAML (${e.message.split('\n')[0]})`);
  }
  const out: Record<string, string> = {};
  if (doc.contents === null) return out;
  if (!isMap(doc.contents)) throw errors.substituteFile(at(doc.contents.range?.[0] ?? 0), 'is not a mapping');
  for (const pair of doc.contents.items) {
    const k = pair.key;
    const v = pair.value;
    if (!isScalar(k)) throw errors.substituteFile(at(0), 'has a key that is not a plain name');
    const key = k.source ?? String(k.value);
    if (v !== null && !isScalar(v)) {
      throw errors.substituteFile(
        at((v as { range?: number[] }).range?.[0] ?? k.range?.[0] ?? 0),
        `value of ${key} is not a plain value`,
      );
    }
    out[key] =
      v === null || v.value === null
        ? ''
        : typeof v.value === 'string'
          ? v.value
          : (v.source ?? String(v.value));
  }
  return out;
}

/** Merges the sources: flags win over files, files over built-ins. */
export function resolveSubstitutions(sources: SubstitutionSources): Map<string, string> {
  const merged = new Map<string, string>();
  for (const [k, v] of Object.entries(sources.builtins ?? {})) merged.set(k, v);
  for (const f of sources.substituteFiles ?? []) {
    for (const [k, v] of Object.entries(readSubstituteFile(f))) merged.set(k, v);
  }
  for (const [k, v] of Object.entries(sources.substitutions ?? {})) merged.set(k, v);
  return merged;
}

export interface Substituted {
  text: string;
  map: SourceMap;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Replaces `${{NAME}}` and `${{NAME:default}}` placeholders in raw stacker file text, before
 * any YAML parsing (as stacker does). Shell-style `$NAME` / `${NAME}` for a NAME that was given
 * as a substitution is an error, so a `run:` script never silently means something else.
 */
export function substitute(text: string, file: string, values: Map<string, string>): Substituted {
  const original = new SourceMap(text, []);

  let firstBad: { offset: number; name: string; found: string } | undefined;
  for (const name of values.keys()) {
    if (name === '') continue;
    const n = escapeRegExp(name);
    const re = new RegExp(`\\$${n}(?![A-Za-z0-9_])|\\$\\{${n}(?::[^}]*)?\\}`, 'g');
    const m = re.exec(text);
    if (m && (!firstBad || m.index < firstBad.offset)) firstBad = { offset: m.index, name, found: m[0] };
  }
  if (firstBad) {
    throw errors.shellStylePlaceholder(
      { file, ...original.originalPosition(firstBad.offset) },
      firstBad.name,
      values.get(firstBad.name) ?? '',
      firstBad.found,
    );
  }

  const replacements: Replacement[] = [];
  const placeholder = /\$\{\{([^}]*)\}\}/g;
  let out = '';
  let last = 0;
  for (let m = placeholder.exec(text); m !== null; m = placeholder.exec(text)) {
    const inner = m[1];
    const colon = inner.indexOf(':');
    const name = colon < 0 ? inner : inner.slice(0, colon);
    let value = values.get(name);
    if (value === undefined) {
      if (colon < 0) throw errors.missingSubstitution({ file, ...original.originalPosition(m.index) }, name);
      value = inner.slice(colon + 1);
    }
    out += text.slice(last, m.index);
    replacements.push({
      origStart: m.index,
      origEnd: m.index + m[0].length,
      newStart: out.length,
      newEnd: out.length + value.length,
    });
    out += value;
    last = m.index + m[0].length;
  }
  out += text.slice(last);
  return { text: out, map: new SourceMap(text, replacements) };
}
