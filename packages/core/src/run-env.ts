import type { ImageConfig } from '@stacker/plugin-api';
import { DEFAULT_PATH } from '@stacker/runtime';
import type { Layer } from '@stacker/stackerfile';

/** Host variables a `run` step sees when the stanza has no build_env_passthrough. */
const PASSTHROUGH_DEFAULT = [
  /^(HTTP_PROXY|HTTPS_PROXY|FTP_PROXY|NO_PROXY|http_proxy|https_proxy|ftp_proxy|no_proxy)$/,
  /^TERM$/,
  /^SOURCE_DATE_EPOCH$/,
];

/**
 * The environment of a stanza's container (its `run` steps, and `stacker chroot`): the
 * base image's Env, the stanza's `environment`, the passed-through host variables, then
 * `build_env`, STACKER_LAYER_NAME and a default PATH.
 */
export function runEnvironment(
  layer: Layer,
  baseConfig: ImageConfig | undefined,
  hostEnv: NodeJS.ProcessEnv = process.env,
): string[] {
  const env = new Map<string, string>();
  for (const e of baseConfig?.config?.Env ?? []) {
    const i = e.indexOf('=');
    env.set(e.slice(0, i < 0 ? e.length : i), i < 0 ? '' : e.slice(i + 1));
  }
  for (const [k, v] of Object.entries(layer.environment)) env.set(k, v);
  const patterns = layer.buildEnvPassthrough
    ? layer.buildEnvPassthrough.map((p) => new RegExp(`^(?:${p})$`))
    : PASSTHROUGH_DEFAULT;
  for (const [k, v] of Object.entries(hostEnv)) {
    if (v !== undefined && patterns.some((p) => p.test(k))) env.set(k, v);
  }
  for (const [k, v] of Object.entries(layer.buildEnv)) env.set(k, v);
  env.set('STACKER_LAYER_NAME', layer.name);
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH.slice('PATH='.length));
  return [...env].map(([k, v]) => `${k}=${v}`);
}
