import { createHash } from 'node:crypto';

/**
 * OCI chain ids: the identity of a stack of layers, `chain(L0) = diffid(L0)` and
 * `chain(L0..n) = sha256(chain(L0..n-1) + " " + diffid(Ln))`. Snapshots are named by them,
 * so images sharing their lower layers share their snapshots.
 */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
}
