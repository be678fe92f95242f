import type { Descriptor, ImageConfig, ImageManifest } from '@stacker/plugin-api';
import type { OciLayout } from './layout.js';

/** What `stacker inspect` shows of one tag. */
export interface ImageReport {
  tag: string;
  digest: string;
  mediaType: string;
  layers: { digest: string; size: number; mediaType: string }[];
  annotations: Record<string, string>;
  config: ImageConfig;
}

/** The report of each tag of the layout (or only of `tag`), in index.json order. */
export async function inspectLayout(layout: OciLayout, tag?: string): Promise<ImageReport[]> {
  const tags = tag === undefined ? await layout.listTags() : [tag];
  const out: ImageReport[] = [];
  for (const t of tags) {
    const img = await layout.readImage(t);
    const manifest: ImageManifest = img.manifest;
    out.push({
      tag: t,
      digest: img.manifestDigest,
      mediaType: manifest.mediaType ?? img.descriptor.mediaType,
      layers: manifest.layers.map((l: Descriptor) => ({
        digest: l.digest,
        size: l.size,
        mediaType: l.mediaType,
      })),
      annotations: manifest.annotations ?? {},
      config: img.config,
    });
  }
  return out;
}

/** Sizes as stacker prints them (go-humanize: SI units, e.g. `1.2 MB`). */
export function humanBytes(n: number): string {
  if (n < 10) return `${n} B`;
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  const e = Math.min(Math.floor(Math.log(n) / Math.log(1000)), units.length - 1);
  const v = n / 1000 ** e;
  const s = v < 10 ? (Math.floor(v * 10 + 0.5) / 10).toFixed(1) : String(Math.floor(v + 0.5));
  return `${s} ${units[e]}`;
}

/**
 * stacker's inspect output: the tag, one line per layer (short digest, size, media type),
 * the manifest annotations (multi-line values indented), then the image config as JSON.
 */
export function formatReport(r: ImageReport): string {
  const lines = [r.tag];
  r.layers.forEach((l, i) => {
    lines.push(
      `\tlayer ${i}: ${l.digest.split(':')[1].slice(0, 12)}... (${humanBytes(l.size)}, ${l.mediaType})`,
    );
  });
  const keys = Object.keys(r.annotations).sort();
  if (keys.length) {
    lines.push('Annotations:');
    for (const k of keys) {
      const v = r.annotations[k];
      if (v.includes('\n')) {
        lines.push(`  ${k}: |`);
        for (const l of v.replace(/\n$/, '').split('\n')) lines.push(`    ${l}`);
      } else lines.push(`  ${k}: ${v}`);
    }
  }
  lines.push('Image config:');
  lines.push(JSON.stringify(r.config, null, 2));
  return `${lines.join('\n')}\n`;
}
