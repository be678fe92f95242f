/**
 * JSON with object keys sorted at every level and `undefined` members left out, so equal
 * stanzas give equal strings whatever order their keys were written in.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => (x === undefined ? null : sortKeys(x)));
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'bigint') return v.toString();
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined)
        Object.defineProperty(out, k, {
          value: sortKeys(x),
          enumerable: true,
          writable: true,
          configurable: true,
        });
    }
    return out;
  }
  return v;
}
