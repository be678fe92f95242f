import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { UserError } from '@stacker/plugin-api';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/** The config file stacker reads (`--config`, default ~/.config/stacker/conf.yaml). */
const configFile = z
  .object({
    work_dir: z.string().optional(),
    stacker_dir: z.string().optional(),
    oci_dir: z.string().optional(),
    rootfs_dir: z.string().optional(),
    roots_dir: z.string().optional(),
    storage_type: z.string().optional(),
    runtime: z.string().optional(),
    jobs: z.number().int().positive().optional(),
  })
  .strict();

/**
 * Where stacker looks for its config file without --config: `$XDG_CONFIG_HOME/conf.yaml`
 * when XDG_CONFIG_HOME is set (stacker's own rule: no `stacker/` below it), else
 * `~/.config/stacker/conf.yaml`.
 */
export function defaultConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_CONFIG_HOME) return join(env.XDG_CONFIG_HOME, 'conf.yaml');
  return join(env.HOME || homedir(), '.config', 'stacker', 'conf.yaml');
}

export interface GlobalFlagValues {
  'work-dir'?: string;
  'stacker-dir'?: string;
  'oci-dir'?: string;
  'roots-dir'?: string;
  config?: string;
  'storage-type'?: string;
}

export interface Settings {
  /** The work dir (--work-dir or `work_dir`), absolute; '' when neither is given. */
  workDir?: string;
  stackerDir: string;
  ociDir: string;
  rootsDir: string;
  storageType: string;
  runtime: string;
  jobs?: number;
  configPath: string;
  sourceDateEpoch?: number;
}

/**
 * Flags win over the config file, which wins over the defaults (stacker's rules): a
 * directory the config file names is used as it is, one left to its default goes under
 * the work dir; relative paths are taken from `cwd`. STACKER_RUNTIME wins over `runtime`.
 */
export function resolveSettings(flags: GlobalFlagValues, cwd = process.cwd(), env = process.env): Settings {
  const configPath = flags.config ?? defaultConfigPath(env);
  let file: z.infer<typeof configFile> = {};
  if (existsSync(configPath)) {
    let raw: unknown;
    try {
      raw = parseYaml(readFileSync(configPath, 'utf8')) ?? {};
    } catch (e) {
      throw new UserError('config', `${configPath}: not valid YAML: ${(e as Error).message}`, {
        file: configPath,
      });
    }
    const parsed = configFile.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new UserError(
        'config',
        `${configPath}: ${issue.path.join('.') || 'top level'}: ${issue.message} (known keys: ${Object.keys(configFile.shape).join(', ')})`,
        { file: configPath },
      );
    }
    file = parsed.data;
  }
  // a config file that does not exist, even one named by --config, is no config (as in stacker)
  const workDir = flags['work-dir'] ?? file.work_dir;
  const pick = (flag: string | undefined, fromFile: string | undefined, dflt: string) => {
    if (flag !== undefined) return resolve(cwd, flag);
    if (fromFile !== undefined) return resolve(cwd, fromFile);
    return resolve(cwd, workDir ?? '.', dflt);
  };
  const rootsDir = pick(flags['roots-dir'], file.rootfs_dir ?? file.roots_dir, 'roots');
  if (rootsDir.includes(':')) {
    throw new UserError(
      'config',
      `roots dir ${rootsDir} must not contain ':' (forbidden by overlayfs mount options)`,
    );
  }
  const settings: Settings = {
    workDir: workDir === undefined || workDir === '' ? '' : resolve(cwd, workDir),
    stackerDir: pick(flags['stacker-dir'], file.stacker_dir, '.stacker'),
    ociDir: pick(flags['oci-dir'], file.oci_dir, 'oci'),
    rootsDir,
    storageType: flags['storage-type'] ?? file.storage_type ?? 'overlay',
    runtime: env.STACKER_RUNTIME ?? file.runtime ?? 'runc',
    jobs: file.jobs,
    configPath,
  };
  const sde = env.SOURCE_DATE_EPOCH;
  if (sde !== undefined && sde !== '') {
    if (!/^\d+$/.test(sde)) {
      throw new UserError(
        'source-date-epoch',
        `invalid SOURCE_DATE_EPOCH value ${JSON.stringify(sde)}: it must be a whole number of seconds since 1970`,
      );
    }
    settings.sourceDateEpoch = Number(sde);
  }
  return settings;
}

export function isAbsolutePath(p: string): boolean {
  return isAbsolute(p);
}
