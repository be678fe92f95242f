// Helpers that read stacker's output back with tools nobody here wrote: skopeo, umoci,
// tar, sha256sum, runc. Nothing in here parses OCI JSON or tar by itself beyond what those
// tools print.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, chownTree, REPO } from './harness.js';

/** Run a host tool as ourselves (root in CI); throws with its output when it fails. */
export function tool(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): string {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    input: opts.input,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Make the busybox base rootfs tarball at `dest` with tools/make-busybox-rootfs.sh, owned by the test user. */
export function makeBusybox(dest: string): void {
  tool('bash', [join(REPO, 'tools/make-busybox-rootfs.sh'), dest]);
  chownTree(dest);
}

export function sha256(path: string): string {
  return tool('sha256sum', [path]).split(/\s+/)[0];
}

/** `skopeo inspect oci:LAYOUT:TAG` (raw manifest with `raw`, image config with `config`). */
export function skopeo(layout: string, tag: string, what: 'inspect' | 'raw' | 'config' = 'inspect'): any {
  const extra = what === 'raw' ? ['--raw'] : what === 'config' ? ['--config'] : [];
  return JSON.parse(tool('skopeo', ['inspect', ...extra, `oci:${layout}:${tag}`]));
}

/** The tags of a layout, as `umoci ls` prints them. */
export function umociLs(layout: string): string[] {
  return tool('umoci', ['ls', '--layout', layout])
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
}

/** Layer digests of an image (skopeo's view). */
export function layersOf(layout: string, tag: string): string[] {
  return skopeo(layout, tag).Layers as string[];
}

export function blobPath(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return join(layout, 'blobs', alg, hex);
}

export interface TarEntry {
  mode: string;
  uid: number;
  gid: number;
  size: number;
  /** The name without a trailing `/`. */
  name: string;
  type: string;
  /** Target of a symlink (`->`) or hard link (`link to`). */
  link?: string;
  line: string;
}

/** `tar tzv --numeric-owner -f BLOB`, one entry a line, parsed into fields. */
export function tarList(blob: string): TarEntry[] {
  const out = tool('tar', ['tzv', '--numeric-owner', '-f', blob]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = /^(\S+)\s+(\d+)\/(\d+)\s+(\d+)\s+\S+\s+\S+\s+(.*)$/.exec(line);
      if (!m) throw new Error(`can't read tar line: ${line}`);
      let rest = m[5];
      let link: string | undefined;
      const hard = rest.indexOf(' link to ');
      const sym = rest.indexOf(' -> ');
      if (hard >= 0) {
        link = rest.slice(hard + ' link to '.length);
        rest = rest.slice(0, hard);
      } else if (sym >= 0) {
        link = rest.slice(sym + ' -> '.length);
        rest = rest.slice(0, sym);
      }
      return {
        mode: m[1],
        type: m[1][0],
        uid: Number(m[2]),
        gid: Number(m[3]),
        size: Number(m[4]),
        name: rest.replace(/^\.\//, '').replace(/\/$/, ''),
        link,
        line,
      };
    });
}

/** The tar listing of an image's last layer. */
export function topLayer(layout: string, tag: string): TarEntry[] {
  return tarList(blobPath(layout, layersOf(layout, tag).at(-1)!));
}

export function entry(entries: TarEntry[], name: string): TarEntry | undefined {
  return entries.find((e) => e.name === name);
}

/** `umoci unpack --rootless --image LAYOUT:TAG DEST`, as the test user; returns DEST/rootfs. */
export function unpack(cwd: string, layout: string, tag: string, dest: string): string {
  const r = asUser('umoci', ['unpack', '--rootless', '--image', `${layout}:${tag}`, dest], { cwd });
  if (r.code !== 0) throw new Error(`umoci unpack ${layout}:${tag} failed:\n${r.output}`);
  const rootfs = join(dest, 'rootfs');
  if (!existsSync(rootfs)) throw new Error(`umoci unpack made no ${rootfs}`);
  return rootfs;
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

/** Entries of an image's layer that come before their own parent directory. */
export function childrenBeforeParents(entries: TarEntry[]): string[] {
  const seen = new Set<string>();
  const names = new Set(entries.map((e) => e.name));
  const bad: string[] = [];
  for (const e of entries) {
    const slash = e.name.lastIndexOf('/');
    if (slash > 0) {
      const parent = e.name.slice(0, slash);
      if (names.has(parent) && !seen.has(parent)) bad.push(`${e.name} before ${parent}/`);
    }
    seen.add(e.name);
  }
  return bad;
}

/** Lines of output that look like a JavaScript stack trace. */
export function stackTraceLines(output: string): string[] {
  return output.split('\n').filter((l) => /^\s+at\s.+(\(.*:\d+:\d+\)|:\d+:\d+)$/.test(l));
}
