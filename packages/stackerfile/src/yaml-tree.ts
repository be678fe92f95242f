import type { Place } from '@stacker/plugin-api';
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type Scalar,
} from 'yaml';
import { errors, formatKeyPath } from './errors.js';
import type { SourceMap } from './source-map.js';

export type KeyPath = (string | number)[];

export interface Entry {
  key: string;
  keyNode: Node;
  value: Node | null;
}

/**
 * The parsed YAML of one stacker file, with everything needed to point at a place in the
 * original (pre-substitution) text: key and value nodes by path, aliases and `<<` merge keys
 * resolved the way Go's yaml.v2 (YAML 1.1) resolves them.
 */
export class YamlTree {
  readonly doc: Document;

  constructor(
    readonly file: string,
    private readonly text: string,
    private readonly map: SourceMap,
  ) {
    const lineCounter = new LineCounter();
    // YAML 1.1 like stacker's yaml.v2: `yes` is true, `0644` is octal, `<<` merges.
    this.doc = parseDocument(text, { lineCounter, version: '1.1', uniqueKeys: false, prettyErrors: false });
    const e = this.doc.errors[0];
    if (e)
      throw errors.yamlSyntax(
        this.placeOfOffset(e.pos[0]),
        e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, ''),
      );
  }

  get root(): Node | null {
    return this.resolve(this.doc.contents as Node | null);
  }

  placeOfOffset(offset: number): Place {
    return { file: this.file, ...this.map.position(offset) };
  }

  placeOfNode(node: Node | null | undefined, fallback?: Place): Place {
    const start = node?.range?.[0];
    if (start === undefined) return fallback ?? { file: this.file };
    return this.placeOfOffset(start);
  }

  resolve(node: Node | null | undefined): Node | null {
    let n: unknown = node ?? null;
    for (let i = 0; i < 100 && isAlias(n); i++) n = n.resolve(this.doc) ?? null;
    return (n as Node | null) ?? null;
  }

  /** Text of a scalar key or value as yaml.v2 sees it when decoding into a Go string. */
  scalarText(node: Node | null): string | undefined {
    const n = this.resolve(node);
    if (n === null) return '';
    if (!isScalar(n)) return undefined;
    const v = (n as Scalar).value;
    if (v === null || v === undefined) return '';
    if (typeof v === 'string') return v;
    return n.source ?? String(v);
  }

  /** The key/value pairs of a mapping, merge keys expanded (explicit keys win), in file order. */
  entries(mapNode: Node): Entry[] {
    const node = this.resolve(mapNode);
    if (!isMap(node)) return [];
    const own: Entry[] = [];
    const merged: Entry[] = [];
    for (const pair of node.items) {
      const keyNode = pair.key as Node;
      if (isScalar(keyNode) && typeof keyNode.value === 'symbol') {
        const v = this.resolve(pair.value as Node);
        const sources = isSeq(v) ? v.items.map((i) => this.resolve(i as Node)) : [v];
        for (const src of sources) {
          if (src && isMap(src)) merged.push(...this.entries(src));
        }
        continue;
      }
      own.push({ key: this.keyText(keyNode), keyNode, value: (pair.value as Node | null) ?? null });
    }
    const seen = new Set(own.map((e) => e.key));
    for (const e of merged) {
      if (!seen.has(e.key)) {
        seen.add(e.key);
        own.push(e);
      }
    }
    return own;
  }

  /**
   * Text of a key. A complex key (`? {a: 1}`, `? [x]`) is named by its source text: converting
   * it to JS would apply its own merge keys, which can fail (`? <<: *a` with `a` a scalar), and
   * the callers only need a name to compare and to report.
   */
  keyText(keyNode: Node | null): string {
    const n = this.resolve(keyNode);
    if (n === null) return '';
    const s = this.scalarText(n);
    if (s !== undefined) return s;
    const r = n.range;
    return r ? this.text.slice(r[0], r[1]).trim() : '?';
  }

  /**
   * Plain JS value of a node (as the YAML 1.1 schema resolves scalars), checking for duplicate
   * keys on the way so they are reported where they are.
   */
  toPlain(node: Node | null, stanza: string | undefined, path: KeyPath): unknown {
    const n = this.resolve(node);
    if (n === null) return null;
    // yaml.v2 hands timestamps to stacker as the text written; so do we.
    if (isScalar(n)) return n.value instanceof Date ? (n.source ?? n.value.toISOString()) : (n.value ?? null);
    if (isSeq(n)) return n.items.map((item, i) => this.toPlain(item as Node, stanza, [...path, i]));
    if (isMap(n)) {
      const out: [string, unknown][] = [];
      const seen = new Set<string>();
      for (const e of this.entries(n)) {
        if (seen.has(e.key)) throw errors.duplicateKey(this.placeOfNode(e.keyNode), stanza, [...path, e.key]);
        seen.add(e.key);
        out.push([e.key, this.toPlain(e.value, stanza, [...path, e.key])]);
      }
      return Object.fromEntries(out);
    }
    return null;
  }

  /** The key node (for a mapping key) and value node at `path` below `node`, as deep as exists. */
  locate(
    node: Node | null,
    path: KeyPath,
  ): { keyNode?: Node; item?: Node | null; found: boolean; deepest?: Node } {
    let cur = this.resolve(node);
    let keyNode: Node | undefined;
    let item: Node | null | undefined = cur;
    let deepest: Node | undefined = cur ?? undefined;
    for (let i = 0; i < path.length; i++) {
      const k = path[i];
      if (typeof k === 'number') {
        if (!isSeq(cur) || k < 0 || k >= cur.items.length) return { found: false, deepest };
        item = cur.items[k] as Node;
        keyNode = undefined;
      } else {
        if (!isMap(cur)) return { found: false, deepest };
        const e = this.entries(cur).find((x) => x.key === k);
        if (!e) return { found: false, deepest };
        keyNode = e.keyNode;
        item = e.value;
      }
      deepest = (item ?? keyNode) as Node | undefined;
      if (i < path.length - 1) cur = this.resolve(item);
    }
    return { keyNode, item, found: true, deepest };
  }

  /** The top-level entry of a stanza. */
  stanzaEntry(stanza: string): Entry | undefined {
    const root = this.root;
    if (!isMap(root)) return undefined;
    return this.entries(root).find((e) => e.key === stanza);
  }

  /**
   * Where a key of a stanza is: the key itself when the path ends with a mapping key, the
   * list item when it ends with an index; when the path does not exist, the deepest part that does.
   */
  placeOf(stanza: string, keyPath: KeyPath): Place {
    const key = formatKeyPath(keyPath) || undefined;
    const entry = this.stanzaEntry(stanza);
    if (!entry) return { file: this.file, stanza, key };
    const base = this.placeOfNode(entry.keyNode);
    if (keyPath.length === 0) return { ...base, stanza };
    const loc = this.locate(entry.value, keyPath);
    const node = loc.found ? (loc.keyNode ?? loc.item) : loc.deepest;
    return { ...this.placeOfNode(node, base), stanza, key };
  }

  /** Where a value is (falls back to its key when the value is empty). */
  valuePlaceOf(stanza: string, keyPath: KeyPath): Place {
    const key = formatKeyPath(keyPath) || undefined;
    const entry = this.stanzaEntry(stanza);
    if (!entry) return { file: this.file, stanza, key };
    const loc = this.locate(entry.value, keyPath);
    if (loc.found && loc.item?.range) return { ...this.placeOfNode(loc.item), stanza, key };
    return this.placeOf(stanza, keyPath);
  }

  /** Node of a value below a stanza (aliases resolved). */
  nodeAt(stanza: string, keyPath: KeyPath): Node | null | undefined {
    const entry = this.stanzaEntry(stanza);
    if (!entry) return undefined;
    const loc = this.locate(entry.value, keyPath);
    return loc.found ? this.resolve(loc.item ?? null) : undefined;
  }
}
