import type { Descriptor, ImageConfig, ImageManifest } from '@stacker/plugin-api';
import { hostPlatform, MEDIA_TYPES } from '@stacker/plugin-api';

/** The parts of a stanza that shape the image config. */
export interface ConfigInputs {
  environment: Record<string, string>;
  labels: Record<string, string>;
  volumes: string[];
  cmd?: string[] | null;
  entrypoint?: string[] | null;
  fullCommand?: string[];
  workingDir?: string;
  runtimeUser?: string;
  os?: string;
  arch?: string;
}

export { hostPlatform };

/** Env list merge: later values replace earlier ones with the same name, order kept. */
export function mergeEnv(base: string[], add: Record<string, string>): string[] {
  const out = new Map<string, string>();
  for (const e of base) {
    const i = e.indexOf('=');
    out.set(i < 0 ? e : e.slice(0, i), i < 0 ? '' : e.slice(i + 1));
  }
  for (const [k, v] of Object.entries(add)) out.set(k, v);
  return [...out].map(([k, v]) => `${k}=${v}`);
}

export function isoTime(epochSeconds: number | undefined, now = new Date()): string {
  const d = epochSeconds === undefined ? now : new Date(epochSeconds * 1000);
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The config of a stanza's image: the base's config with the stanza's settings applied as
 * stacker applies them. Env, Labels and Volumes merge into the base's; Cmd and Entrypoint
 * are the stanza's own (a base's command is not inherited: it would run the wrong program
 * for the new image); `full_command` sets Entrypoint and clears Cmd.
 */
export function buildImageConfig(
  base: ImageConfig | undefined,
  s: ConfigInputs,
  layer: { diffId: string } | undefined,
  meta: { created: string; createdBy: string; author: string },
): ImageConfig {
  const host = hostPlatform();
  const bc = base?.config ?? {};
  const config: NonNullable<ImageConfig['config']> = {};
  const env = mergeEnv(bc.Env ?? [], s.environment);
  if (!env.some((e) => e.startsWith('PATH='))) {
    env.unshift('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  }
  config.Env = env;
  const user = s.runtimeUser ?? bc.User;
  if (user) config.User = user;
  if (bc.ExposedPorts) config.ExposedPorts = bc.ExposedPorts;
  if (s.fullCommand) {
    config.Entrypoint = s.fullCommand;
  } else {
    if (s.entrypoint) config.Entrypoint = s.entrypoint;
    if (s.cmd) config.Cmd = s.cmd;
  }
  const volumes: Record<string, object> = { ...(bc.Volumes ?? {}) };
  for (const v of s.volumes) volumes[v] = {};
  if (Object.keys(volumes).length) config.Volumes = Object.fromEntries(Object.entries(volumes).sort());
  const workingDir = s.workingDir ?? bc.WorkingDir;
  if (workingDir) config.WorkingDir = workingDir;
  const labels = { ...(bc.Labels ?? {}), ...s.labels };
  if (Object.keys(labels).length) config.Labels = Object.fromEntries(Object.entries(labels).sort());
  if (bc.StopSignal) config.StopSignal = bc.StopSignal;

  const diffIds = [...(base?.rootfs.diff_ids ?? [])];
  if (layer) diffIds.push(layer.diffId);
  // As stacker: the image is for the platform the stanza names, else for this machine (it
  // was built here, its run steps ran here), whatever the base image says.
  const architecture = s.arch ?? host.architecture;
  const os = s.os ?? host.os;
  // a variant (arm's v7, v8) only means something for the architecture it came with
  const variant = base?.variant && base.architecture === architecture ? base.variant : undefined;
  return {
    created: meta.created,
    author: meta.author,
    architecture,
    os,
    ...(variant ? { variant } : {}),
    config,
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: [
      ...(base?.history ?? []),
      {
        created: meta.created,
        created_by: meta.createdBy,
        author: meta.author,
        ...(layer ? {} : { empty_layer: true }),
      },
    ],
  };
}

export function buildManifest(
  config: Descriptor,
  layers: Descriptor[],
  annotations: Record<string, string>,
): ImageManifest {
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config,
    layers,
  };
  if (Object.keys(annotations).length) m.annotations = Object.fromEntries(Object.entries(annotations).sort());
  return m;
}
