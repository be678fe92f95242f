import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';

// build_only stanzas are built like any other but not tagged in the OCI layout. Their
// manifest is remembered here, by stanza name, so that `stacker chroot` and `stacker grab`
// can use them as stacker users expect (stacker keeps their rootfs in its roots dir).

function recordPath(stackerDir: string, name: string): string {
  const id = createHash('sha256').update(name).digest('hex').slice(0, 32);
  return join(stackerDir, 'build-only', `${id}.json`);
}

/** Remember the manifest of build_only stanza `name` (a no-op when it is already that one). */
export async function rememberBuildOnly(stackerDir: string, name: string, manifest: string): Promise<void> {
  const file = recordPath(stackerDir, name);
  const text = `${JSON.stringify({ name, manifest })}\n`;
  if ((await fsp.readFile(file, 'utf8').catch(() => undefined)) === text) return;
  await fsp.mkdir(join(stackerDir, 'build-only'), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, text);
  await fsp.rename(tmp, file);
}

/** The manifest digest last built for build_only stanza `name`, if any. */
export async function buildOnlyManifest(stackerDir: string, name: string): Promise<string | undefined> {
  try {
    const v = JSON.parse(await fsp.readFile(recordPath(stackerDir, name), 'utf8')) as {
      name?: unknown;
      manifest?: unknown;
    };
    if (v.name === name && typeof v.manifest === 'string' && /^sha256:[0-9a-f]{64}$/.test(v.manifest))
      return v.manifest;
  } catch {
    /* never built here, or unreadable: not known */
  }
  return undefined;
}
