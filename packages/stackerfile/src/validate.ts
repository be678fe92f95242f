import type { Place, UserError } from '@stacker/plugin-api';
import type { z } from 'zod';
import { errors } from './errors.js';
import { allowedKeys, expectedForms, patternOf } from './schema.js';
import type { KeyPath } from './types.js';
import type { YamlTree } from './yaml-tree.js';

/** Where a zod schema is applied: a layer (stanza = its name) or the `config` entry. */
export interface Target {
  tree: YamlTree;
  /** Top-level key the value sits under (layer name or `config`). */
  entry: string;
  /** Stanza named in messages (undefined for `config`). */
  stanza: string | undefined;
  /** Path prefix used in messages and patterns (`['config']` for the config entry). */
  prefix: KeyPath;
  value: unknown;
}

type Issue = z.core.$ZodIssue;

export function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'empty';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Date) return `a date (${v.toISOString().slice(0, 10)})`;
  switch (typeof v) {
    case 'string':
      return `the string "${v.length > 40 ? `${v.slice(0, 37)}...` : v}"`;
    case 'number':
    case 'bigint':
      return `the number ${String(v)}`;
    case 'boolean':
      return `the boolean ${v}`;
    default:
      return 'a mapping';
  }
}

function valueAt(value: unknown, path: KeyPath): { found: boolean; value: unknown } {
  let cur = value;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur as object, k))
      return { found: false, value: undefined };
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return { found: true, value: cur };
}

/** The most specific issue inside a union: the branch that got furthest into the value. */
function narrow(issue: Issue, path: KeyPath): { issue: Issue; path: KeyPath } {
  if (issue.code !== 'invalid_union' || !('errors' in issue) || issue.errors.length === 0)
    return { issue, path };
  let best: { score: number; issue: Issue } | undefined;
  for (const branch of issue.errors) {
    for (const sub of branch) {
      const score = sub.code === 'invalid_type' && sub.path.length === 0 ? 0 : 1 + sub.path.length;
      if (!best || score > best.score) best = { score, issue: sub };
    }
  }
  if (!best || best.score === 0) return { issue, path };
  return narrow(best.issue, [...path, ...(best.issue.path as KeyPath)]);
}

function expectedFor(path: KeyPath, issue: Issue): string {
  const form = expectedForms[patternOf(path)];
  if (form) return form;
  if (issue.code === 'invalid_type') {
    const e = issue.expected;
    if (e === 'string') return 'a string';
    if (e === 'number') return 'a number';
    if (e === 'boolean') return 'true or false';
    if (e === 'array') return 'a list';
    if (e === 'object' || e === 'record') return 'a mapping';
  }
  if (
    issue.code === 'invalid_union' &&
    issue.errors.some((b) => b.some((x) => x.code === 'invalid_type' && x.expected === 'string'))
  ) {
    return 'a string';
  }
  return 'a plain value';
}

function toError(t: Target, issue: Issue): { place: Place; error: UserError } {
  const narrowed = narrow(issue, issue.path as KeyPath);
  const rel = narrowed.path;
  const full = [...t.prefix, ...rel];
  const is = narrowed.issue;
  const keyPlace = (p: KeyPath) => t.tree.placeOf(t.entry, p);
  const valuePlace = (p: KeyPath) => t.tree.valuePlaceOf(t.entry, p);

  if (is.code === 'unrecognized_keys') {
    const key = is.keys[0];
    const place = keyPlace([...rel, key]);
    return {
      place,
      error: errors.unknownKey(place, t.stanza, [...full, key], allowedKeys[patternOf(full)] ?? []),
    };
  }
  const at = valueAt(t.value, rel);
  if (!at.found) {
    const parent = rel.slice(0, -1);
    const place = keyPlace(parent);
    const missing = String(rel[rel.length - 1]);
    const hint = `add \`${missing}:\` (${expectedFor(full, is)})`;
    return { place, error: errors.missingKey(place, t.stanza, [...t.prefix, ...parent], missing, hint) };
  }
  const place = valuePlace(rel);
  const expected = expectedFor(full, is);
  const v = at.value;
  // YAML 1.1 reads `y`, `on`, `1.0` as non-strings, as stacker does: quoting is the fix.
  const quote =
    expected.startsWith('a string') && (typeof v === 'number' || typeof v === 'boolean' || v instanceof Date);
  const fix = quote ? 'quote the value to make it a string' : 'change its value';
  return { place, error: errors.wrongType(place, t.stanza, full, expected, describeValue(v), fix) };
}

function before(a: Place, b: Place): boolean {
  return (a.line ?? 0) < (b.line ?? 0) || ((a.line ?? 0) === (b.line ?? 0) && (a.col ?? 0) < (b.col ?? 0));
}

/** Parses with zod; on failure throws the user error for the issue that comes first in the file. */
export function check<T>(schema: z.ZodType<T>, t: Target): T {
  const r = schema.safeParse(t.value);
  if (r.success) return r.data;
  let first: { place: Place; error: UserError } | undefined;
  for (const issue of r.error.issues) {
    const e = toError(t, issue);
    if (!first || before(e.place, first.place)) first = e;
  }
  throw first!.error;
}
