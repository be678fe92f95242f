import * as fsp from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { UserError } from '@stacker/plugin-api';
import { type Bind, DEFAULT_PATH, makeBundle, runContainer } from '@stacker/runtime';
import type { Layer } from '@stacker/stackerfile';
import { runEnvironment } from './run-env.js';
import { shortId } from './snapshots.js';
import type { Workspace } from './workspace.js';

export interface ChrootOptions {
  /** The tag of the built image to start from. */
  tag: string;
  /** The command and its arguments (stacker's default: /bin/sh). */
  cmd: string[];
  /** The stanza of the stacker file for `tag`, when there is one: its binds, environment
   * and staged imports are set up as for its `run` steps. */
  layer?: Layer;
  /** Directory relative bind sources are resolved against (the stacker file's). */
  fileDir?: string;
  stackerDir: string;
  runtime: string;
  /** Give the process a terminal (default: when stdin is one). */
  terminal?: boolean;
}

/**
 * Run `cmd` in a throwaway writable snapshot of a built image, with stdio attached to
 * ours; resolves to the command's exit code. Nothing it changes reaches the image.
 */
export async function chroot(ws: Workspace, opts: ChrootOptions): Promise<number> {
  const { layer } = opts;
  return ws.withThrowawaySnapshot(opts.tag, async (rootfs, image) => {
    const binds: Bind[] = [];
    if (layer) {
      const importDir = join(opts.stackerDir, 'imports', layer.name);
      if (await isDir(importDir)) {
        binds.push(
          layer.importsForm === 'import'
            ? { source: importDir, dest: '/stacker', readonly: true }
            : { source: importDir, dest: '/stacker/imports', readonly: true },
        );
      }
      for (const b of layer.binds) {
        const source = resolvePath(opts.fileDir ?? process.cwd(), b.source);
        try {
          await fsp.access(source);
        } catch {
          throw new UserError(
            'bind',
            `${layer.name}: bind source ${b.source} does not exist on this machine`,
            {
              stanza: layer.name,
              key: 'binds',
            },
          );
        }
        binds.push({ source, dest: b.dest, readonly: false });
      }
    }
    const env = layer
      ? runEnvironment(layer, image.config)
      : [
          ...(image.config.config?.Env ?? []),
          ...(image.config.config?.Env?.some((e) => e.startsWith('PATH=')) ? [] : [DEFAULT_PATH]),
          ...(process.env.TERM ? [`TERM=${process.env.TERM}`] : []),
        ];
    const id = `stacker-chroot-${opts.tag.replace(/[^A-Za-z0-9_.-]/g, '_')}-${shortId()}`;
    const bundle = join(opts.stackerDir, 'bundles', id);
    try {
      await makeBundle({
        bundle,
        rootfs,
        args: opts.cmd,
        env,
        cwd: '/',
        hostname: opts.tag.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63) || 'stacker',
        binds,
        terminal: opts.terminal ?? Boolean(process.stdin.isTTY),
      });
      return await runContainer({
        runtime: opts.runtime,
        stateDir: join(opts.stackerDir, 'runc'),
        bundle,
        id,
        stdin: 'inherit',
        stdout: 'inherit',
        stderr: 'inherit',
      });
    } finally {
      await fsp.rm(bundle, { recursive: true, force: true });
    }
  });
}

async function isDir(p: string): Promise<boolean> {
  return (await fsp.stat(p).catch(() => undefined))?.isDirectory() ?? false;
}
