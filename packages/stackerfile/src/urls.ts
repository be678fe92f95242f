import { isAbsolute, join, resolve } from 'node:path';
import type { Layer } from './types.js';

/** The scheme of `scheme://rest` (stacker's "dockerish" URLs), or undefined for a plain path. */
export function urlScheme(s: string): string | undefined {
  const i = s.indexOf('://');
  return i < 0 ? undefined : s.slice(0, i);
}

/** `stacker://layer/path/in/it` -> { layer, path: '/path/in/it' }; undefined for anything else. */
export function parseStackerUrl(s: string): { layer: string; path: string } | undefined {
  const prefix = 'stacker://';
  if (!s.startsWith(prefix)) return undefined;
  const rest = s.slice(prefix.length);
  const slash = rest.indexOf('/');
  const layer = slash < 0 ? rest : rest.slice(0, slash);
  if (layer === '') return undefined;
  return { layer, path: slash < 0 ? '' : rest.slice(slash) };
}

/** Local paths relative to `dir` become absolute (keeping a trailing `/`); URLs stay as written. */
export function absolutify(p: string, dir: string): string {
  if (urlScheme(p) !== undefined || isAbsolute(p)) return p;
  const abs = resolve(join(dir, p));
  return p.endsWith('/') && !abs.endsWith('/') ? `${abs}/` : abs;
}

/**
 * What a layer needs built before it: the `built` base, and the layers it copies from with
 * `stacker://` (in `imports`, or a `tar` base whose url is a `stacker://` URL).
 */
export function dependenciesOf(layer: Layer): { built: string[]; stackerImports: string[] } {
  const built: string[] = [];
  if (layer.from.type === 'built' && typeof layer.from.tag === 'string' && layer.from.tag !== '')
    built.push(layer.from.tag);
  const stackerImports: string[] = [];
  const add = (s: unknown) => {
    if (typeof s !== 'string') return;
    const u = parseStackerUrl(s);
    if (u && !stackerImports.includes(u.layer)) stackerImports.push(u.layer);
  };
  for (const imp of layer.imports) add(imp.path);
  if (layer.from.type === 'tar') add(layer.from.url);
  return { built, stackerImports };
}
