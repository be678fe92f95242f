import type { Place } from '@stacker/plugin-api';
import type { Node } from 'yaml';
import { canonicalJson } from './canonical.js';
import { errors } from './errors.js';
import { layerSchema } from './schema.js';
import { ShellSplitError, shellSplit } from './shlex.js';
import type {
  Bind,
  FromSpec,
  ImportSpec,
  KeyPath,
  Layer,
  OverlayDir,
  ParseOptions,
  Warning,
} from './types.js';
import { absolutify, urlScheme } from './urls.js';
import { check } from './validate.js';
import type { YamlTree } from './yaml-tree.js';

const HASH = /^(?:sha256:)?([0-9a-f]{64})$/i;

/** Turns one validated stanza into the normalised model. */
export function normaliseLayer(
  tree: YamlTree,
  name: string,
  keyNode: Node,
  valueNode: Node,
  dir: string,
  opts: ParseOptions,
  warnings: Warning[],
): Layer {
  const plain = tree.toPlain(valueNode, name, []);
  const v = check(layerSchema, { tree, entry: name, stanza: name, prefix: [], value: plain });
  const present = (k: string) => Object.hasOwn(plain as object, k);
  const place = (p: KeyPath): Place => tree.placeOf(name, p);
  const valuePlace = (p: KeyPath): Place => tree.valuePlaceOf(name, p);
  /** A scalar's text as written (stacker decodes these into Go strings). */
  const text = (p: KeyPath): string => tree.scalarText(tree.nodeAt(name, p) ?? null) ?? '';

  // from
  const fromPlain = v.from as Record<string, unknown>;
  const from: FromSpec = { ...fromPlain, type: text(['from', 'type']) };
  if (from.type === '')
    throw errors.missingKey(
      place(['from']),
      name,
      ['from'],
      'type',
      'add `type:` with docker, oci, tar, built or scratch',
    );
  for (const k of ['url', 'tag'] as const) if (Object.hasOwn(fromPlain, k)) from[k] = text(['from', k]);
  if (Object.hasOwn(fromPlain, 'insecure')) from.insecure = fromPlain.insecure === true;
  if (from.type === 'built' && !from.tag) {
    throw errors.missingKey(
      place(['from']),
      name,
      ['from'],
      'tag',
      'add `tag:` naming the layer to build on (from tag cannot be empty for image type "built")',
    );
  }

  // imports
  const nonEmpty = (x: string | unknown[] | null | undefined) =>
    x != null && (typeof x === 'string' || x.length > 0);
  if (nonEmpty(v.import) && nonEmpty(v.imports)) throw errors.importAndImports(place(['imports']), name);
  let importsForm: Layer['importsForm'] = 'none';
  let importsKey: 'import' | 'imports' = 'imports';
  let rawImports = v.imports;
  if (nonEmpty(v.import)) {
    importsForm = 'import';
    importsKey = 'import';
    rawImports = v.import;
    warnings.push({
      place: place(['import']),
      message: `'import' directive used in layer '${name}' is deprecated; change 'import' to 'imports' and '/stacker' to '/stacker/imports'.`,
    });
  } else if (nonEmpty(v.imports)) {
    importsForm = 'imports';
  }
  const written: ImportSpec[] = [];
  const list = rawImports == null ? [] : typeof rawImports === 'string' ? [rawImports] : rawImports;
  list.forEach((item, i) => {
    const base: KeyPath = typeof rawImports === 'string' ? [importsKey] : [importsKey, i];
    if (typeof item === 'string') {
      written.push({ path: item });
      return;
    }
    const spec: ImportSpec = { path: text([...base, 'path']) };
    if (spec.path === '')
      throw errors.missingKey(
        valuePlace(base),
        name,
        base,
        'path',
        'add `path:` with the file, directory or URL to import',
      );
    if (item.hash != null) {
      const h = text([...base, 'hash']);
      const m = HASH.exec(h);
      if (!m) throw errors.invalidHash(valuePlace([...base, 'hash']), name, [...base, 'hash'], h);
      spec.hash = m[1].toLowerCase();
    }
    if (item.dest != null) {
      const d = text([...base, 'dest']);
      if (d !== '') {
        if (!d.startsWith('/'))
          throw errors.relativeDest(valuePlace([...base, 'dest']), name, [...base, 'dest'], d);
        spec.dest = d;
      }
    }
    if (item.mode != null) spec.mode = item.mode;
    if (item.uid != null) spec.uid = item.uid;
    if (item.gid != null) spec.gid = item.gid;
    written.push(spec);
  });
  if (opts.requireHash) {
    written.forEach((imp, i) => {
      const scheme = urlScheme(imp.path);
      if ((scheme === 'http' || scheme === 'https') && !imp.hash) {
        const p: KeyPath = typeof rawImports === 'string' ? [importsKey] : [importsKey, i];
        throw errors.badValue(
          valuePlace(p),
          name,
          p,
          `is remote import ${imp.path} without a hash, which --require-hash forbids`,
          'add `hash:` with its sha256',
        );
      }
    });
  }

  // string-or-list keys
  const commands = (key: string, raw: string | string[] | null | undefined): string[] | null | undefined => {
    if (raw === undefined) return undefined;
    if (raw === null) return null;
    if (Array.isArray(raw)) return raw;
    try {
      return shellSplit(raw);
    } catch (e) {
      const why = e instanceof ShellSplitError ? e.message.toLowerCase() : String(e);
      throw errors.badValue(
        valuePlace([key]),
        name,
        [key],
        `can't be split into words (${why})`,
        'close the quote or write it as a list of strings',
      );
    }
  };
  const scripts = (raw: string | string[] | null | undefined): string[] =>
    raw == null ? [] : typeof raw === 'string' ? [raw] : raw;

  const stringMap = (
    key: string,
    raw: Record<string, unknown> | null | undefined,
  ): Record<string, string> => {
    const out: Record<string, string> = {};
    if (raw == null) return out;
    for (const k of Object.keys(raw)) {
      Object.defineProperty(out, k, {
        value: text([key, k]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  };
  const scalarList = (key: string, raw: unknown[] | null | undefined): string[] =>
    raw == null ? [] : raw.map((_, i) => text([key, i]));
  const optionalText = (key: string): string | undefined => {
    if (!present(key)) return undefined;
    const s = text([key]);
    return s === '' ? undefined : s;
  };

  // binds
  const binds: Bind[] = [];
  (v.binds ?? []).forEach((b, i) => {
    if (typeof b === 'string') {
      const toks = b.split(/\s+/).filter((t) => t !== '');
      if (toks.length === 1) binds.push({ source: toks[0], dest: toks[0] });
      else if (toks.length === 3 && toks[1] === '->') binds.push({ source: toks[0], dest: toks[2] });
      else
        throw errors.badValue(
          valuePlace(['binds', i]),
          name,
          ['binds', i],
          `"${b}" is not a valid bind`,
          'write `/path`, `/source -> /dest` or a mapping with source and dest',
        );
      return;
    }
    const source = text(['binds', i, 'source']);
    if (source === '')
      throw errors.missingKey(
        valuePlace(['binds', i]),
        name,
        ['binds', i],
        'source',
        'add `source:` with the host path',
      );
    const dest = b.dest == null ? '' : text(['binds', i, 'dest']);
    binds.push({ source, dest: dest === '' ? source : dest });
  });

  // overlay_dirs
  const overlayDirs: OverlayDir[] = [];
  (v.overlay_dirs ?? []).forEach((o, i) => {
    const source = text(['overlay_dirs', i, 'source']);
    if (source === '')
      throw errors.missingKey(
        valuePlace(['overlay_dirs', i]),
        name,
        ['overlay_dirs', i],
        'source',
        'add `source:` with the host directory',
      );
    const dest = o.dest == null ? '' : text(['overlay_dirs', i, 'dest']);
    overlayDirs.push({ source, dest: dest === '' ? '/' : dest });
  });

  // os / arch: present but empty is an error, as in stacker
  const platform = (key: 'os' | 'arch', example: string): string | undefined => {
    if (!present(key)) return undefined;
    const s = text([key]);
    if (s === '') throw errors.emptyValue(place([key]), name, key, example);
    return s;
  };

  if (v.bom !== undefined) {
    warnings.push({
      place: place(['bom']),
      message: `'bom' directive used in layer '${name}' is deprecated and ignored; remove it.`,
    });
  }

  const layer: Omit<Layer, 'canonical' | 'place'> = {
    name,
    from,
    imports: written,
    importsForm,
    run: scripts(v.run),
    generateLabels: scripts(v.generate_labels),
    cmd: commands('cmd', v.cmd),
    entrypoint: commands('entrypoint', v.entrypoint),
    fullCommand: commands('full_command', v.full_command) ?? undefined,
    environment: stringMap('environment', v.environment),
    labels: stringMap('labels', v.labels),
    annotations: stringMap('annotations', v.annotations),
    volumes: scalarList('volumes', v.volumes),
    workingDir: optionalText('working_dir'),
    runtimeUser: optionalText('runtime_user'),
    buildOnly: v.build_only === true,
    binds,
    overlayDirs,
    buildEnv: stringMap('build_env', v.build_env),
    buildEnvPassthrough:
      v.build_env_passthrough == null
        ? undefined
        : scalarList('build_env_passthrough', v.build_env_passthrough),
    os: platform('os', 'linux'),
    arch: platform('arch', 'amd64'),
  };
  for (const k of Object.keys(layer) as (keyof typeof layer)[]) if (layer[k] === undefined) delete layer[k];

  // The canonical form keeps paths as written, so moving the project keeps cache keys.
  const canonical = canonicalJson(layer);
  return {
    ...layer,
    place: { ...tree.placeOfNode(keyNode), stanza: name },
    imports: written.map((imp) => ({ ...imp, path: absolutify(imp.path, dir) })),
    binds: binds.map((b) => ({ source: absolutify(b.source, dir), dest: absolutify(b.dest, dir) })),
    overlayDirs: overlayDirs.map((o) => ({ source: absolutify(o.source, dir), dest: o.dest })),
    canonical,
  };
}
