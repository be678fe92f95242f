import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Place } from '@stacker/plugin-api';
import { isMap, isScalar } from 'yaml';
import { errors } from './errors.js';
import { normaliseLayer } from './layer.js';
import { configSchema } from './schema.js';
import { resolveSubstitutions, substitute } from './substitute.js';
import type { Layer, ParseManyOptions, ParseOptions, StackerFile, Warning } from './types.js';
import { absolutify } from './urls.js';
import { check, describeValue } from './validate.js';
import { YamlTree } from './yaml-tree.js';

const CONFIG_KEY = 'config';

/** Reads and parses one stacker file. */
export async function parseStackerFile(path: string, opts: ParseOptions = {}): Promise<StackerFile> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw errors.readFile(file, e);
  }
  return parseStackerText(text, file, opts);
}

/**
 * Parses stacker file text: substitution on the raw text, YAML (1.1, like stacker), then
 * validation of every stanza. `path` names the file in errors and anchors relative paths.
 */
export function parseStackerText(text: string, path: string, opts: ParseOptions = {}): StackerFile {
  const file = resolve(path);
  const dir = dirname(file);
  const values = resolveSubstitutions(opts);
  const sub = substitute(text, file, values);
  const tree = new YamlTree(file, sub.text, sub.map);
  const warnings: Warning[] = [];
  const layers: Layer[] = [];
  let prerequisites: string[] = [];

  const root = tree.root;
  if (root !== null && !(isScalar(root) && root.value === null)) {
    if (!isMap(root)) throw errors.notAMapping(tree.placeOfNode(root), 'the stacker file');
    const seen = new Map<string, Place>();
    for (const entry of tree.entries(root)) {
      const keyPlace = tree.placeOfNode(entry.keyNode);
      const keyNode = tree.resolve(entry.keyNode);
      if (!isScalar(keyNode) || (typeof keyNode.value !== 'string' && keyNode.value !== null)) {
        throw errors.layerNameNotString(keyPlace, describeValue(isScalar(keyNode) ? keyNode.value : {}));
      }
      const name = entry.key;
      const first = seen.get(name);
      if (first) throw errors.duplicateLayerInFile(keyPlace, name, first);
      seen.set(name, keyPlace);

      if (name === CONFIG_KEY) {
        const plain = tree.toPlain(entry.value, undefined, [CONFIG_KEY]);
        const cfg = check(configSchema, {
          tree,
          entry: CONFIG_KEY,
          stanza: undefined,
          prefix: [CONFIG_KEY],
          value: plain,
        });
        prerequisites = (cfg?.prerequisites ?? []).map((_, i) => {
          const p = tree.scalarText(tree.nodeAt(CONFIG_KEY, ['prerequisites', i]) ?? null) ?? '';
          return absolutify(p, dir);
        });
        continue;
      }

      if (name.includes(':')) throw errors.forbiddenLayerName({ ...keyPlace, stanza: name }, name);
      const value = tree.resolve(entry.value);
      if (!isMap(value)) {
        const got =
          value === null || (isScalar(value) && value.value === null)
            ? 'empty'
            : describeValue(tree.toPlain(value, name, []));
        throw errors.layerNotMapping({ ...keyPlace, stanza: name }, name, got);
      }
      layers.push(normaliseLayer(tree, name, entry.keyNode, value, dir, opts, warnings));
    }
  }

  return {
    path: file,
    dir,
    prerequisites,
    layers,
    placeOf: (stanza, keyPath) => tree.placeOf(stanza, keyPath),
    raw: sub.text,
    warnings,
  };
}

/**
 * Parses several stacker files (and, unless told not to, every prerequisite they name,
 * recursively, each file once). Files come back prerequisites first. Layer names must be
 * unique across all of them.
 */
export async function parseMany(paths: string[], opts: ParseManyOptions = {}): Promise<StackerFile[]> {
  const follow = opts.followPrerequisites ?? true;
  const out: StackerFile[] = [];
  const visiting = new Set<string>();
  const done = new Set<string>();

  const visit = async (path: string, from?: Place): Promise<void> => {
    const file = resolve(path);
    if (done.has(file) || visiting.has(file)) return;
    visiting.add(file);
    let sf: StackerFile;
    if (from) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (e) {
        throw errors.prerequisiteUnreadable(from, file, e);
      }
      sf = parseStackerText(text, file, opts);
    } else {
      sf = await parseStackerFile(file, opts);
    }
    if (follow) {
      for (let i = 0; i < sf.prerequisites.length; i++) {
        await visit(sf.prerequisites[i], sf.placeOf(CONFIG_KEY, ['prerequisites', i]));
      }
    }
    visiting.delete(file);
    done.add(file);
    out.push(sf);
  };
  for (const p of paths) await visit(p);

  const owners = new Map<string, Layer>();
  for (const sf of out) {
    for (const layer of sf.layers) {
      const first = owners.get(layer.name);
      if (first) throw errors.duplicateLayerAcrossFiles(layer.place, layer.name, first.place);
      owners.set(layer.name, layer);
    }
  }
  return out;
}
