import { UserError } from '@stacker/plugin-api';

/** What the scheduler needs to know of a stanza. */
export interface DagNode {
  name: string;
  /** Stanza this one is `built` from, if any. */
  baseTag?: string;
  /** `stacker://layer/path` imports, as written. */
  stackerImports: string[];
}

export interface BuildPlan {
  /** A deterministic serial order: file order, each stanza after what it needs. */
  order: string[];
  /** Waves that may run in parallel: every stanza of a wave depends only on earlier waves. */
  waves: string[][];
  /** Direct dependencies of each stanza. */
  needs: Map<string, string[]>;
}

export interface PlanLog {
  info(msg: string): void;
}

function stackerImportLayer(url: string): string | undefined {
  const m = /^stacker:\/\/([^/]+)\//.exec(url);
  return m ? m[1] : undefined;
}

/**
 * Order stanzas so that every one comes after its `built` base and the layers its
 * `stacker://` imports read. Follows stacker's algorithm and words: repeated passes in
 * file order; what is left over is reported one line per stanza
 * (`couldn't find dependencies for web: stacker://foo/bar, base layer centos2`) and the
 * build fails with `couldn't resolve some dependencies`. A cycle is left over the same way.
 */
export function planBuild(
  nodes: DagNode[],
  log?: PlanLog,
  available: ReadonlySet<string> = new Set(),
): BuildPlan {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const needs = new Map<string, string[]>();
  for (const n of nodes) {
    const deps = new Set<string>();
    if (n.baseTag !== undefined) deps.add(n.baseTag);
    for (const u of n.stackerImports) {
      const l = stackerImportLayer(u);
      if (l !== undefined) deps.add(l);
    }
    // stanzas of stacker files built earlier (prerequisites) are already there
    needs.set(
      n.name,
      [...deps].filter((d) => byName.has(d) || !available.has(d)),
    );
  }

  // Serial order exactly as stacker computes it: repeated passes in file order, where a
  // stanza accepted earlier in a pass already counts for the ones after it.
  const done = new Set<string>();
  const order: string[] = [];
  for (let progress = true; progress; ) {
    progress = false;
    for (const n of nodes) {
      if (done.has(n.name) || !needs.get(n.name)!.every((d) => done.has(d))) continue;
      order.push(n.name);
      done.add(n.name);
      progress = true;
    }
  }
  // Waves for the parallel scheduler: each wave needs only earlier waves.
  const waves: string[][] = [];
  const placed = new Set<string>();
  for (;;) {
    const wave = order.filter((n) => !placed.has(n) && needs.get(n)!.every((d) => placed.has(d)));
    if (wave.length === 0) break;
    for (const n of wave) placed.add(n);
    waves.push(wave);
  }

  if (done.size !== nodes.length) {
    const lines: string[] = [];
    for (const n of nodes) {
      if (done.has(n.name)) continue;
      const missing: string[] = [];
      const have = (d: string) => done.has(d) || (!byName.has(d) && available.has(d));
      for (const u of n.stackerImports) {
        const l = stackerImportLayer(u);
        if (l === undefined || !have(l)) missing.push(u);
      }
      if (n.baseTag !== undefined && !have(n.baseTag)) missing.push(`base layer ${n.baseTag}`);
      const line = `couldn't find dependencies for ${n.name}: ${missing.join(', ')}`;
      lines.push(line);
      log?.info(line);
    }
    const unknown = nodes.flatMap((n) => needs.get(n.name)!.filter((d) => !byName.has(d)));
    const why = unknown.length
      ? ` (no stanza named ${[...new Set(unknown)].join(', ')})`
      : ' (a dependency cycle)';
    throw new UserError('dependencies', `couldn't resolve some dependencies${why}: ${lines.join('; ')}`);
  }
  return { order, waves, needs };
}

/** Order stacker files so that each comes after its `config.prerequisites`. */
export function orderFiles(files: { path: string; prerequisites: string[] }[]): string[] {
  const known = new Map(files.map((f) => [f.path, f]));
  const out: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (p: string, chain: string[]) => {
    const s = state.get(p);
    if (s === 'done') return;
    if (s === 'visiting') {
      throw new UserError('prerequisites', `stacker files require each other: ${[...chain, p].join(' -> ')}`);
    }
    state.set(p, 'visiting');
    for (const q of known.get(p)?.prerequisites ?? []) {
      if (!known.has(q)) {
        throw new UserError('prerequisites', `${p} requires ${q}, which was not loaded`);
      }
      visit(q, [...chain, p]);
    }
    state.set(p, 'done');
    out.push(p);
  };
  for (const f of files) visit(f.path, []);
  return out;
}
