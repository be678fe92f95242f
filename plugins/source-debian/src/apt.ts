import { readFileSync } from 'node:fs';

/** Where Debian is fetched from when `from.mirror` is not given: the host's own apt mirror
 * (the first non-security `URIs:` of a deb822 sources file, or `deb` line of the classic
 * list), as that is the one this machine is known to reach. */
export const FALLBACK_MIRROR = 'http://deb.debian.org/debian';

const SOURCES_FILES = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list'];

export function mirrorFromSources(text: string): string | undefined {
  // deb822: stanzas separated by blank lines, `Key: value` fields
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (name: string) =>
      stanza
        .match(new RegExp(`^${name}:[ \\t]*(.*)$`, 'mi'))?.[1]
        ?.trim()
        .split(/\s+/) ?? [];
    const types = field('Types');
    const uris = field('URIs').filter((u) => !/security/.test(u));
    const suites = field('Suites');
    if (types.includes('deb') && uris.length > 0 && !suites.every((s) => /-security$/.test(s)))
      return uris[0];
  }
  // one-line style: deb [options] URI suite components…
  for (const line of text.split('\n')) {
    const m = line.match(/^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/);
    if (m && !/security/.test(m[1]) && !/-security$/.test(m[2])) return m[1];
  }
  return undefined;
}

export function defaultMirror(files = SOURCES_FILES): string {
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    const m = mirrorFromSources(text);
    if (m) return m.replace(/\/+$/, '');
  }
  return FALLBACK_MIRROR;
}

/** OCI architecture names (GOARCH) to Debian's. */
const DEBIAN_ARCH: Record<string, string> = {
  amd64: 'amd64',
  arm64: 'arm64',
  arm: 'armhf',
  '386': 'i386',
  ppc64le: 'ppc64el',
  s390x: 's390x',
  riscv64: 'riscv64',
  mips64le: 'mips64el',
  loong64: 'loong64',
};

export function debianArch(ociArch: string): string | undefined {
  return DEBIAN_ARCH[ociArch];
}
