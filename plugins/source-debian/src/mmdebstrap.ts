import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { Logger } from '@stacker/plugin-api';

export interface MmdebstrapRequest {
  suite: string;
  variant: string;
  packages: string[];
  mirror: string;
  arch: string;
}

export function mmdebstrapArgs(r: MmdebstrapRequest): string[] {
  return [
    // the build already runs as root of stacker's user namespace: mmdebstrap's unshare
    // mode nests one more namespace inside it and needs no privilege or subuid of its own
    '--mode=unshare',
    `--variant=${r.variant}`,
    `--architectures=${r.arch}`,
    ...(r.packages.length > 0 ? [`--include=${r.packages.join(',')}`] : []),
    r.suite,
    '-', // the tarball goes to stdout, gzip'd on its way to disk
    r.mirror,
  ];
}

export class MmdebstrapError extends Error {
  constructor(
    message: string,
    readonly missing = false,
  ) {
    super(message);
  }
}

/** Run mmdebstrap, writing its tarball, gzip'd, to `dest`. Its `I:` lines go to the debug
 * log; on failure the error carries its last lines (the `E:` ones say why). */
export async function runMmdebstrap(
  r: MmdebstrapRequest,
  dest: string,
  opts: { log: Logger; signal?: AbortSignal; command?: string },
): Promise<void> {
  const command = opts.command ?? process.env.STACKER_MMDEBSTRAP ?? 'mmdebstrap';
  const child = spawn(command, mmdebstrapArgs(r), {
    stdio: ['ignore', 'pipe', 'pipe'],
    signal: opts.signal,
    env: { ...process.env, LC_ALL: 'C.UTF-8' },
  });
  const tail: string[] = [];
  let partial = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      opts.log.debug(`mmdebstrap: ${line}`);
      tail.push(line);
      if (tail.length > 30) tail.shift();
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const written = pipeline(child.stdout, createGzip({ level: 6 }), createWriteStream(dest));
  let status: { code: number | null; signal: NodeJS.Signals | null };
  try {
    [status] = await Promise.all([exited, written]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' && err.path === command)
      throw new MmdebstrapError(`${command} is not installed`, true);
    if (err.name === 'AbortError') throw e;
    throw new MmdebstrapError(`${command} failed: ${err.message}`);
  }
  if (partial.trim()) tail.push(partial);
  if (status.code !== 0) {
    const errors = tail.filter((l) => /^E: /.test(l));
    const why = (errors.length > 0 ? errors : tail.slice(-5)).join(' | ') || 'no output';
    const how = status.signal ? `was killed by ${status.signal}` : `exited with ${status.code}`;
    throw new MmdebstrapError(`${command} ${how}: ${why}`);
  }
}
