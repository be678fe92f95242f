import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Flags } from '@oclif/core';
import { OciLayout } from '@stacker/oci';
import {
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  isUserError,
  UserError,
} from '@stacker/plugin-api';
import { publish } from '@stacker/registry';
import { canonicalJson, parseStackerText, type StackerFile } from '@stacker/stackerfile';
import type { Logger } from 'pino';
import { StackerCommand } from '../base-command.js';
import { ProgressView, wantLiveView } from '../progress.js';
import type { Settings } from '../settings.js';
import { loadStackerFiles, stackerFileFlag, stackerFileFlags } from '../stackerfiles.js';
import { STACKER_VERSION } from '../version.js';

export default class Publish extends StackerCommand {
  static override summary = 'publishes OCI images previously built from one or more stacker yaml files';
  static override description =
    'Sends every stanza of the stacker file that is not build_only, as built in the OCI layout, to URL/NAME:TAG (docker://) or URL:NAME_TAG (oci:DIR) for every --tag. Only the blobs the destination lacks are sent.';
  static override examples = [
    '<%= config.bin %> publish --url docker://registry.example:5000/project --tag v1',
    '<%= config.bin %> publish --url oci:out --tag latest --image app',
    '<%= config.bin %> publish --url docker://localhost:5000/p --tag v1 --skip-tls --show-only',
  ];

  static override flags = {
    ...stackerFileFlag,
    ...stackerFileFlags,
    url: Flags.string({
      required: true,
      description: 'url where to publish the OCI images (docker://HOST[:PORT]/PATH or oci:DIR)',
    }),
    tag: Flags.string({
      multiple: true,
      description: 'tag to be used when publishing; can be supplied multiple times',
    }),
    username: Flags.string({ description: 'username for the registry where the OCI images are published' }),
    password: Flags.string({ description: 'password for the registry where the OCI images are published' }),
    'skip-tls': Flags.boolean({
      description:
        "skip tls verify on upstream registry: don't check its certificate, and use plain http when it has no TLS",
    }),
    image: Flags.string({
      multiple: true,
      description: 'publish only this layer; can be supplied multiple times',
    }),
    force: Flags.boolean({
      description:
        'publish the images present in the OCI layout even when they need to be rebuilt, skipping layers that were never built',
    }),
    'show-only': Flags.boolean({
      description: 'show the images to be published without actually publishing them',
    }),
    'layer-type': Flags.string({
      multiple: true,
      default: ['tar'],
      options: ['tar', 'squashfs'],
      description: 'layer type to publish; can be supplied multiple times',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Publish);
    // on a terminal every upload gets a byte bar; otherwise one log line per blob says its size
    const view = !flags['show-only'] && wantLiveView(flags) ? new ProgressView() : undefined;
    this.setUp(flags, view);
    const { files, dummies } = await this.readFiles(flags);
    const source = await OciLayout.open(this.settings.ociDir).catch((e: Error) => {
      throw new UserError(
        'publish',
        `nothing to publish: ${e.message.replace(/\.$/, '')}; run stacker build first`,
      );
    });
    const ac = new AbortController();
    let stoppedBy: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals) => {
      this.logger.info(`received ${sig}, stopping the publish`);
      stoppedBy = sig;
      ac.abort();
    };
    // \`on\`, not \`once\`: while a listener of ours is registered, execa's signal-exit hook
    // leaves the signal to us; with none it re-raises it and the process dies mid-upload.
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    view?.start();
    try {
      await publish({
        files: files.map((f) => ({
          path: f.path,
          layers: f.layers.map((l) => ({ name: l.name, buildOnly: l.buildOnly })),
        })),
        source,
        url: flags.url,
        tags: flags.tag ?? [],
        images: flags.image,
        force: flags.force,
        showOnly: flags['show-only'],
        username: flags.username,
        password: flags.password,
        skipTls: flags['skip-tls'],
        layerTypes: flags['layer-type'],
        check: staleness(files, source, this.settings, this.logger, dummies),
        openLayout: (dir) => OciLayout.init(dir),
        log: this.logger,
        signal: ac.signal,
        onProgress: view
          ? (p) => view.transfer({ ...p, label: `${p.repository} ${p.digest.slice(0, 19)}` })
          : undefined,
      });
    } catch (e) {
      // stopped by a signal: nothing half-done is left behind; exit as the shell expects
      if (stoppedBy) this.exit(stoppedBy === 'SIGINT' ? 130 : 143);
      throw e;
    } finally {
      view?.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    if (stoppedBy) this.exit(stoppedBy === 'SIGINT' ? 130 : 143);
  }

  /**
   * The stacker files, as stacker's publish reads them: a `${{VAR}}` without a value is not
   * an error but becomes "dummy" (publish needs the layer names, not every value).
   */
  private async readFiles(
    flags: Parameters<typeof loadStackerFiles>[1] & { 'stacker-file': string },
  ): Promise<{ files: StackerFile[]; dummies: string[] }> {
    const dummies: string[] = [];
    for (;;) {
      try {
        const substitute = [...(flags.substitute ?? []), ...dummies.map((d) => `${d}=dummy`)];
        const files = await loadStackerFiles(
          [flags['stacker-file']],
          { ...flags, substitute },
          this.settings,
        );
        return { files, dummies };
      } catch (e) {
        const m = isUserError(e) ? /no value for substitution \$\{\{([^}:]+)\}\}/.exec(e.message) : null;
        if (!m || dummies.includes(m[1]) || dummies.length >= 100) throw e;
        this.logger.debug(`no value for \${{${m[1]}}}: publishing with "dummy" in its place`);
        dummies.push(m[1]);
      }
    }
  }
}

/** The annotation stacker build records the stacker file in (any namespace). */
function recordedStackerFile(manifest: ImageManifest): string | undefined {
  for (const [k, v] of Object.entries(manifest.annotations ?? {})) {
    if (k.endsWith('.stacker.stacker_yaml') && typeof v === 'string') return v;
  }
  return undefined;
}

interface CacheRecord {
  layer?: Descriptor;
  created?: string;
}

/**
 * The build cache's record of each stanza (read only; `.stacker/build.cache` as the build
 * writes it), or undefined when there is none this stacker would use.
 */
async function readCacheRecords(stackerDir: string): Promise<Record<string, CacheRecord> | undefined> {
  const { CACHE_FORMAT } = await import('@stacker/core');
  try {
    const f = JSON.parse(await readFile(join(stackerDir, 'build.cache'), 'utf8')) as {
      format?: unknown;
      stackerVersion?: unknown;
      entries?: unknown;
    };
    if (f.format !== CACHE_FORMAT || f.stackerVersion !== STACKER_VERSION) return undefined;
    if (f.entries === null || typeof f.entries !== 'object') return undefined;
    return f.entries as Record<string, CacheRecord>;
  } catch {
    return undefined;
  }
}

/**
 * Why the image of a stanza in the layout is not what \`stacker build\` would make now, as
 * far as can be told without resolving bases again (stacker's own publish asks its build
 * cache the same): the stanza, or a stanza it is built on, is defined differently in the
 * stacker file than in the copy of the file recorded in the image; a stanza it is built on
 * was rebuilt since (its image is no longer the base of this one); the build cache has no
 * entry for it, or one for another build than the image tagged.
 */
function staleness(
  files: StackerFile[],
  layout: OciLayout,
  settings: Settings,
  log: Logger,
  dummies: string[],
): (stanza: {
  file: string;
  name: string;
  layerType: string;
  descriptor: Descriptor;
}) => Promise<string | undefined> {
  const byName = new Map(files.flatMap((f) => f.layers.map((l) => [l.name, { file: f, layer: l }] as const)));
  let cache: Promise<Record<string, CacheRecord> | undefined> | undefined;
  const memo = new Map<string, Promise<string | undefined>>();
  const hint = dummies.length
    ? ` (publish put "dummy" in place of ${dummies.map((d) => `\${{${d}}}`).join(', ')}: pass the --substitute values of the build)`
    : '';

  const check = async (name: string, descriptor: Descriptor): Promise<string | undefined> => {
    const def = byName.get(name);
    if (!def) return undefined;
    const manifest = await layout.readJson<ImageManifest>(descriptor.digest);
    const recorded = recordedStackerFile(manifest);
    if (recorded === undefined) return `has no record of the stacker file it was built from in its image`;
    let then: StackerFile;
    try {
      then = parseStackerText(recorded, def.file.path);
    } catch (e) {
      log.debug(`the stacker file recorded in ${descriptor.digest} does not parse: ${(e as Error).message}`);
      return `was built from a stacker file that can no longer be read`;
    }
    // the stanza and the stanzas of the same file it is built on, as they were then
    const was = new Map(then.layers.map((l) => [l.name, l.canonical]));
    for (let cur: string | undefined = name, depth = 0; cur && depth < 100; depth++) {
      const now = byName.get(cur);
      if (!now || now.file.path !== def.file.path) break;
      if (was.get(cur) !== now.layer.canonical) {
        return cur === name
          ? `changed in ${def.file.path} since it was built${hint}`
          : `is built on ${cur}, which changed in ${def.file.path} since${hint}`;
      }
      cur = now.layer.from.type === 'built' ? String(now.layer.from.tag) : undefined;
    }
    // a base built by stacker: its current image must be the base of this one
    if (def.layer.from.type === 'built') {
      const parent = String(def.layer.from.tag);
      const pdesc = await layout.findTag(parent);
      if (pdesc) {
        const pm = await layout.readJson<ImageManifest>(pdesc.digest);
        const prefix = manifest.layers.slice(0, pm.layers.length).map((l) => l.digest);
        if (prefix.join() !== pm.layers.map((l) => l.digest).join())
          return `is built on ${parent}, which was rebuilt since`;
        const why = await checked(parent, pdesc);
        if (why !== undefined) return `is built on ${parent}, which ${why}`;
      }
    }
    cache ??= readCacheRecords(settings.stackerDir);
    const records = await cache;
    const entry = records && Object.hasOwn(records, name) ? records[name] : undefined;
    if (!entry) return `has no entry in the build cache ${join(settings.stackerDir, 'build.cache')}`;
    const config = await layout.readJson<ImageConfig>(manifest.config.digest);
    const last = manifest.layers.at(-1)?.digest;
    if ((entry.layer && entry.layer.digest !== last) || (entry.created && entry.created !== config.created))
      return `is not the last build of it in the build cache (the OCI layout holds an older one)`;
    return undefined;
  };
  const checked = (name: string, descriptor: Descriptor) => {
    let p = memo.get(name);
    if (!p) {
      p = check(name, descriptor);
      memo.set(name, p);
    }
    return p;
  };
  /** A squashfs (or other) image of a stanza must have been made from its current tar image. */
  const flavourCheck = async (name: string, layerType: string, flavour: Descriptor) => {
    const tar = await layout.findTag(name);
    if (!tar) return undefined;
    const [tm, fm] = await Promise.all([
      layout.readJson<ImageManifest>(tar.digest),
      layout.readJson<ImageManifest>(flavour.digest),
    ]);
    const [tc, fc] = await Promise.all([
      layout.readJson<ImageConfig>(tm.config.digest),
      layout.readJson<ImageConfig>(fm.config.digest),
    ]);
    const older = `is older than ${name}, its tar image`;
    const bare = (c: ImageConfig) => canonicalJson({ ...c, rootfs: null });
    if (tm.layers.length !== fm.layers.length || bare(tc) !== bare(fc)) return older;
    // the converter's record of each tar layer names the layer made of it
    for (let i = 0; i < tm.layers.length; i++) {
      const hex = tm.layers[i].digest.replace(/^sha256:/, '');
      const made = await readFile(join(settings.stackerDir, layerType, `${hex}.json`), 'utf8')
        .then((t) => (JSON.parse(t) as { digest?: unknown }).digest)
        .catch(() => undefined);
      if (
        typeof made === 'string' &&
        made !== fm.layers[i].digest &&
        fm.layers[i].digest !== tm.layers[i].digest
      )
        return older;
    }
    return undefined;
  };
  return ({ name, layerType, descriptor }) =>
    layerType === 'tar' ? checked(name, descriptor) : flavourCheck(name, layerType, descriptor);
}
