import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { MEDIA_TYPES, type Source, type SourceContext, UserError } from '@stacker/plugin-api';
import { z } from 'zod';
import { debianArch, defaultMirror } from './apt.js';
import { MmdebstrapError, type MmdebstrapRequest, runMmdebstrap } from './mmdebstrap.js';

export { debianArch, defaultMirror, mirrorFromSources } from './apt.js';
export { mmdebstrapArgs } from './mmdebstrap.js';

/** mmdebstrap's variants, smallest first (`-` is an alias of `debootstrap`). */
export const VARIANTS = [
  'extract',
  'custom',
  'essential',
  'apt',
  'required',
  'minbase',
  'buildd',
  'important',
  'debootstrap',
  'standard',
] as const;

// name, optional :arch, optional =version or /release (what apt-get install takes)
const PACKAGE = /^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+|\/[a-z0-9.-]+)?$/;

export const schema = z.strictObject({
  type: z.literal('debian'),
  suite: z
    .string({ error: 'suite: the Debian release to install, e.g. bookworm, trixie or stable' })
    .regex(/^[a-z][a-z0-9.-]*$/, 'suite: a Debian release name such as bookworm, trixie or stable'),
  variant: z.enum(VARIANTS, { error: `variant: one of ${VARIANTS.join(', ')}` }).default('minbase'),
  packages: z
    .array(z.string().regex(PACKAGE, 'not a Debian package name'), {
      error: 'packages: a list of Debian package names',
    })
    .default([]),
  mirror: z
    .url({ protocol: /^(https?|file)$/, error: 'mirror: an http(s) or file URL of a Debian archive' })
    .optional(),
});
export type DebianFrom = z.infer<typeof schema>;

/** The inputs that decide the base's contents, normalised. */
function request(from: DebianFrom, ctx: SourceContext): MmdebstrapRequest {
  const arch = debianArch(ctx.platform.architecture);
  if (!arch) {
    throw new UserError(
      'debian-arch',
      `${ctx.stanza}: Debian has no architecture for "${ctx.platform.architecture}"; set the stanza's arch to one Debian builds (amd64, arm64, arm, 386, ppc64le, s390x, riscv64)`,
      { stanza: ctx.stanza, key: 'arch' },
    );
  }
  return {
    suite: from.suite,
    variant: from.variant,
    packages: [...new Set(from.packages)].sort(),
    mirror: (from.mirror ?? defaultMirror()).replace(/\/+$/, ''),
    arch,
  };
}

function inputHash(r: MmdebstrapRequest): string {
  const canonical = JSON.stringify([r.suite, r.variant, r.packages, r.mirror, r.arch]);
  return createHash('sha256').update(canonical).digest('hex');
}

async function exists(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).size > 0;
  } catch {
    return false;
  }
}

// two stanzas of one build asking for the same base run mmdebstrap once
const inFlight = new Map<string, Promise<string>>();

/** The cached tarball for `r`, making it with mmdebstrap the first time. */
function tarball(r: MmdebstrapRequest, ctx: SourceContext): Promise<string> {
  const hash = inputHash(r);
  const dest = join(ctx.cacheDir, 'debian', `${hash}.tar.gz`);
  let p = inFlight.get(dest);
  if (!p) {
    p = make(r, dest, ctx).finally(() => inFlight.delete(dest));
    inFlight.set(dest, p);
  }
  return p;
}

async function make(r: MmdebstrapRequest, dest: string, ctx: SourceContext): Promise<string> {
  if (await exists(dest)) {
    ctx.log.debug(`using the cached Debian base ${dest}`);
    return dest;
  }
  await fsp.mkdir(join(ctx.cacheDir, 'debian'), { recursive: true });
  const what = `Debian ${r.suite} (${r.variant}${r.packages.length ? `, ${r.packages.join(' ')}` : ''}, ${r.arch})`;
  ctx.log.info(`making a ${what} base with mmdebstrap from ${r.mirror}; this takes a minute or two`);
  const tmp = `${dest}.partial-${process.pid}`;
  try {
    await runMmdebstrap(r, tmp, { log: ctx.log, signal: ctx.signal });
    await fsp.rename(tmp, dest);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    if (e instanceof MmdebstrapError) {
      const fix = e.missing
        ? 'install it (apt-get install mmdebstrap) and build again'
        : 'check the suite, the package names and that the mirror is reachable';
      throw new UserError(
        'debian-mmdebstrap',
        `${ctx.stanza}: couldn't make a ${what} base: ${e.message}; ${fix}`,
        {
          stanza: ctx.stanza,
          key: 'from',
        },
      );
    }
    throw e;
  }
  return dest;
}

/**
 * `from: {type: debian, suite: bookworm, variant: minbase, packages: [curl], mirror: URL}`:
 * a Debian root filesystem made from the archive with mmdebstrap, with no base image. The
 * tarball is cached under the source cache by a hash of its inputs (suite, variant, sorted
 * packages, mirror, architecture), so only the first build runs mmdebstrap; the same hash
 * is the base's identity for stacker's build cache.
 */
export const debianSource: Source<DebianFrom> = {
  type: 'debian',
  schema,
  async identity(from, ctx) {
    return `debian:sha256:${inputHash(request(from, ctx))}`;
  },
  async resolve(from, ctx) {
    const r = request(from, ctx);
    const path = await tarball(r, ctx);
    const layer = await ctx.blobs.putFile(path, MEDIA_TYPES.layerGzip);
    return ctx.imageFromLayers([layer], `debian:sha256:${inputHash(r)}`);
  },
};

export const sources = [debianSource];
