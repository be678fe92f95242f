import { orderFiles, planBuild } from '@stacker/core/dag';
import type { StackerFile } from '@stacker/stackerfile';

/**
 * What `build --order-only` prints: the stanza order inside each file, then, last, stacker's
 * own lines (`stacker build order:` and `N build PATH: requires: [...]`) that scripts read.
 */
export function formatOrder(files: StackerFile[], info?: (m: string) => void): string[] {
  const order = orderFiles(files.map((f) => ({ path: f.path, prerequisites: f.prerequisites })));
  const byPath = new Map(files.map((f) => [f.path, f]));
  const lines: string[] = [];
  const available = new Set<string>();
  for (const p of order) {
    const f = byPath.get(p)!;
    const plan = planBuild(
      f.layers.map((l) => ({
        name: l.name,
        baseTag: l.from.type === 'built' ? String(l.from.tag) : undefined,
        stackerImports: l.imports.map((i) => i.path).filter((x) => x.startsWith('stacker://')),
      })),
      info ? { info } : undefined,
      available,
    );
    for (const l of f.layers) available.add(l.name);
    lines.push(`${p}:`);
    plan.order.forEach((name, i) => {
      const needs = plan.needs.get(name) ?? [];
      lines.push(`  ${i} ${name}${needs.length ? ` (after ${needs.join(', ')})` : ''}`);
    });
  }
  lines.push('stacker build order:');
  order.forEach((p, i) => {
    lines.push(`${i} build ${p}: requires: [${byPath.get(p)!.prerequisites.join(' ')}]`);
  });
  return lines;
}
