/* biome-ignore-all lint/suspicious/noTemplateCurlyInString: stacker's ${{VAR}} placeholders are the output */
import { statSync } from 'node:fs';
import { posix, resolve } from 'node:path';
import { stringify } from 'yaml';
import {
  dockerfileError,
  type Instruction,
  parseDockerfile,
  parseKeyValues,
  splitWords,
} from './dockerfile.js';

export interface ConvertOptions {
  /** Name of the Dockerfile, for messages. */
  file?: string;
  /** The build context: where COPY/ADD sources are (default: the Dockerfile's directory). */
  contextDir?: string;
}

export interface ConvertResult {
  /** The stacker file's text. */
  stackerYaml: string;
  /** Detected substitutions (`--substitute-file` content); empty when there are none. */
  substitutions: Record<string, string>;
  /** Things converted with a loss, each naming its line (EXPOSE, ...). */
  warnings: string[];
}

interface Stage {
  name: string;
  /** Index of the stage in the file (COPY --from=0 names it). */
  index: number;
  /** The alias given with AS, if any. */
  alias?: string;
  out: Record<string, unknown>;
  run: string[];
  env: Map<string, string>;
  user?: string;
  workdir?: string;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Instructions stacker has nothing for: refused with the line, as the user must decide. */
const NO_EQUIVALENT: Record<string, string> = {
  ONBUILD: 'stacker images carry no triggers for images built from them',
  HEALTHCHECK: 'stacker image configs have no health check',
  SHELL: 'stacker runs every run step with /bin/sh; rewrite the RUN lines for sh',
  STOPSIGNAL: 'stacker image configs have no stop signal',
};

/**
 * Dockerfile -> stacker.yaml, after stacker's `convert` (experimental, best-effort): one
 * stanza per stage; the last stage is named `${{IMAGE}}` (IMAGE=app in the substitutions)
 * unless it has an AS name, earlier stages are build_only; a base image's type and url are
 * substitutions (BASE_TYPE=docker, BASE_URL=docker://IMAGE for the stage, so another base
 * can be given with --substitute); ARGs become substitutions; RUN lines run with `sh -e -c`
 * (as the USER's uid and gid after a USER line, see asUser); COPY/ADD become imports with a dest; ENV, LABEL, WORKDIR,
 * USER, ENTRYPOINT, CMD and VOLUME go to the image config. Instructions without an
 * equivalent are errors naming their line.
 */
export function convertDockerfile(text: string, opts: ConvertOptions = {}): ConvertResult {
  const file = opts.file ?? 'Dockerfile';
  const context = opts.contextDir ?? '.';
  const instructions = parseDockerfile(text, file);
  const subs: Record<string, string> = {};
  const warnings: string[] = [];
  const args = new Map<string, string | undefined>();
  const stages: Stage[] = [];
  const fromCount = instructions.filter((i) => i.keyword === 'FROM').length;
  let stage: Stage | undefined;

  const fail = (ins: Instruction, why: string) =>
    dockerfileError(file, ins.line, `${ins.keyword} (${ins.original}): ${why}`);
  /** $ARG and ${ARG} of known ARGs -> ${{ARG}}; other ${...} forms stay for the shell. */
  const withArgs = (s: string) =>
    s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a: string, b: string) =>
      args.has(a ?? b) ? `\${{${a ?? b}}}` : m,
    );
  /** Expand variables as Docker does for ENV/WORKDIR/COPY values: stage env, then ARGs. */
  const expand = (s: string, st: Stage) =>
    s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:[-+][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a, mod, b) => {
      const name = (a ?? b) as string;
      if (args.has(name) && !st.env.has(name)) return `\${{${name}}}`;
      const v = st.env.get(name) ?? (name === 'PATH' ? DEFAULT_PATH : undefined);
      if (mod) {
        if (mod.startsWith(':-')) return v ? v : mod.slice(2);
        if (mod.startsWith(':+')) return v ? mod.slice(2) : '';
      }
      if (v !== undefined) return v;
      return m;
    });

  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      stage = fromStage(ins, stages.length, fromCount, stages, subs, args, fail, withArgs);
      stages.push(stage);
      continue;
    }
    if (ins.keyword === 'ARG') {
      for (const [k, v] of parseKeyValues(ins.rest, false)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw fail(ins, `${k} is not a valid ARG name`);
        args.set(k, v);
        // an ARG without a default is empty in Docker unless given with --build-arg
        if (!(k in subs) || v !== '') subs[k] = v;
      }
      continue;
    }
    if (NO_EQUIVALENT[ins.keyword]) throw fail(ins, `no stacker equivalent: ${NO_EQUIVALENT[ins.keyword]}`);
    if (!stage) throw fail(ins, 'comes before the first FROM');
    const st = stage;
    switch (ins.keyword) {
      case 'RUN': {
        for (const f of Object.keys(ins.flags)) throw fail(ins, `RUN --${f} has no stacker equivalent`);
        const cmd = ins.json ? ins.json.map(shQuote).join(' ') : withArgs(ins.rest);
        const cd = st.workdir ? `cd ${shQuote(st.workdir)} && ` : '';
        st.run.push(st.user ? asUser(st.user, cd + cmd) : `sh -e -c ${shQuote(cd + cmd)}`);
        break;
      }
      case 'ENV': {
        const pairs = parseKeyValues(ins.rest, true);
        if (pairs.length === 0) throw fail(ins, 'needs KEY=value');
        const env = field<Record<string, string>>(st.out, 'environment', {});
        for (const [k, v] of pairs) {
          const value = expand(v, st);
          st.env.set(k, value);
          env[k] = value;
        }
        break;
      }
      case 'LABEL': {
        const labels = field<Record<string, string>>(st.out, 'labels', {});
        for (const [k, v] of parseKeyValues(ins.rest, false)) labels[k] = expand(v, st);
        break;
      }
      case 'MAINTAINER': {
        const ann = field<Record<string, string>>(st.out, 'annotations', {});
        const key = 'org.opencontainers.image.authors';
        ann[key] = ann[key] ? `${ann[key]},${ins.rest}` : ins.rest;
        break;
      }
      case 'WORKDIR': {
        const dir = expand(ins.rest.trim(), st);
        st.workdir = posix.isAbsolute(dir) ? posix.normalize(dir) : posix.join(st.workdir ?? '/', dir);
        st.run.push(`mkdir -p ${shQuote(st.workdir)}`);
        st.out.working_dir = st.workdir;
        break;
      }
      case 'USER': {
        const user = expand(ins.rest.trim(), st);
        if (!user) throw fail(ins, 'needs a user');
        st.user = user;
        st.out.runtime_user = user;
        break;
      }
      case 'ENTRYPOINT':
      case 'CMD': {
        const value = ins.json ?? ['/bin/sh', '-c', ins.rest];
        st.out[ins.keyword === 'CMD' ? 'cmd' : 'entrypoint'] = value;
        break;
      }
      case 'VOLUME': {
        const vols = ins.json ?? splitWords(ins.rest).map((w) => w.value);
        const list = field<string[]>(st.out, 'volumes', []);
        for (const v of vols) list.push(expand(v, st));
        break;
      }
      case 'EXPOSE':
        warnings.push(
          `${file}:${ins.line}: EXPOSE ${ins.rest}: ignored, stacker image configs have no exposed ports`,
        );
        break;
      case 'COPY':
      case 'ADD':
        copyToImports(ins, st, stages, context, fail, expand, withArgs);
        break;
      default:
        throw fail(ins, `unknown instruction ${ins.keyword}`);
    }
  }
  if (stages.length === 0) throw dockerfileError(file, 1, 'no FROM: nothing to convert');

  const doc: Record<string, unknown> = {};
  for (const s of stages) {
    if (s.run.length) s.out.run = s.run;
    doc[s.name] = order(s.out);
  }
  return {
    stackerYaml: stringify(doc, { lineWidth: 0 }),
    substitutions: subs,
    warnings,
  };
}

function fromStage(
  ins: Instruction,
  index: number,
  fromCount: number,
  stages: Stage[],
  subs: Record<string, string>,
  args: Map<string, string | undefined>,
  fail: (ins: Instruction, why: string) => Error,
  withArgs: (s: string) => string,
): Stage {
  const words = splitWords(ins.rest).map((w) => w.value);
  let alias: string | undefined;
  if (words.length === 3 && words[1].toLowerCase() === 'as') alias = words[2];
  else if (words.length !== 1) throw fail(ins, 'expected FROM IMAGE [AS NAME]');
  const last = index === fromCount - 1;
  const name = alias ?? (last ? '${{IMAGE}}' : `stage${index}`);
  if (name === '${{IMAGE}}') subs.IMAGE = 'app';
  if (name.includes(':'))
    throw fail(ins, `stage name ${name} contains ':', which stacker forbids in layer names`);
  const out: Record<string, unknown> = {};
  const image = words[0];
  const earlier = stages.find((s) => s.alias === image || String(s.index) === image);
  if (earlier) {
    out.from = { type: 'built', tag: earlier.name };
  } else if (image.toLowerCase() === 'scratch') {
    out.from = { type: 'scratch' };
  } else {
    // BASE, or <STAGE>_BASE: given once in the substitutions, overridable with --substitute
    const prefix = alias
      ? `${alias.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_BASE`
      : last
        ? 'BASE'
        : `STAGE${index}_BASE`;
    let url = withArgs(image);
    // a base named by an ARG alone: its default is the image
    const argOnly = /^\$\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}$/.exec(url);
    if (argOnly && args.get(argOnly[1])) url = args.get(argOnly[1]) as string;
    subs[`${prefix}_TYPE`] = 'docker';
    subs[`${prefix}_URL`] = url.includes('://') ? url : `docker://${url}`;
    out.from = { type: `\${{${prefix}_TYPE}}`, url: `\${{${prefix}_URL}}` };
  }
  const platform = ins.flags.platform;
  if (platform) {
    const [os, arch] = platform.split('/');
    if (!os || !arch || platform.includes('$'))
      throw fail(ins, `--platform=${platform} has no stacker equivalent; use os/arch`);
    out.os = os;
    out.arch = arch;
  }
  if (!last) out.build_only = true;
  return { name, index, alias, out, run: [], env: new Map() };
}

function copyToImports(
  ins: Instruction,
  st: Stage,
  stages: Stage[],
  context: string,
  fail: (ins: Instruction, why: string) => Error,
  expand: (s: string, st: Stage) => string,
  withArgs: (s: string) => string,
): void {
  const parts = ins.json ?? splitWords(ins.rest).map((w) => w.value);
  if (parts.length < 2) throw fail(ins, 'needs a source and a destination');
  const dest0 = expand(parts[parts.length - 1], st);
  const sources = parts.slice(0, -1).map((s) => withArgs(s));
  let dest = posix.isAbsolute(dest0) ? dest0 : posix.join(st.workdir ?? '/', dest0);
  if (dest0.endsWith('/') && !dest.endsWith('/')) dest += '/';
  if (sources.length > 1 && !dest.endsWith('/')) dest += '/';
  const flags = { ...ins.flags };
  const spec: { uid?: number; gid?: number; mode?: number } = {};
  if (flags.chown !== undefined) {
    const [u, g] = flags.chown.split(':');
    if (!/^\d+$/.test(u) || (g !== undefined && !/^\d+$/.test(g))) {
      throw fail(ins, `--chown=${flags.chown}: stacker imports take numeric ids only`);
    }
    spec.uid = Number(u);
    if (g !== undefined) spec.gid = Number(g);
    delete flags.chown;
  }
  if (flags.chmod !== undefined) {
    if (!/^[0-7]{3,4}$/.test(flags.chmod))
      throw fail(ins, `--chmod=${flags.chmod}: only octal modes have a stacker equivalent`);
    spec.mode = Number.parseInt(flags.chmod, 8);
    delete flags.chmod;
  }
  const fromStageName = flags.from;
  delete flags.from;
  for (const f of Object.keys(flags)) throw fail(ins, `${ins.keyword} --${f} has no stacker equivalent`);
  const imports = field<Record<string, unknown>[]>(st.out, 'imports', []);
  for (const src of sources) {
    if (/[*?[]/.test(src))
      throw fail(ins, `wildcard source ${src}: stacker imports name single paths; list the files`);
    let path: string;
    let isDir = false;
    if (fromStageName !== undefined) {
      const from = stages.find((s) => s.alias === fromStageName || String(s.index) === fromStageName);
      if (!from)
        throw fail(ins, `--from=${fromStageName}: only earlier stages of this file can be copied from`);
      path = `stacker://${from.name}${posix.normalize(`/${src}`)}`;
      isDir = src.endsWith('/');
    } else if (/^https?:\/\//.test(src)) {
      if (ins.keyword === 'COPY') throw fail(ins, 'COPY cannot fetch URLs; use ADD');
      path = src;
    } else {
      const rel = posix
        .normalize(src)
        .replace(/^\/+/, '')
        .replace(/(.)\/+$/, '$1');
      if (rel.startsWith('..')) throw fail(ins, `${src} is outside the build context`);
      path = rel === '.' ? './' : `./${rel}`;
      try {
        isDir = statSync(resolve(context, rel)).isDirectory();
      } catch {
        // not there now: it may be by build time; treat it as a file
      }
      if (ins.keyword === 'ADD' && !isDir && /\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz)$/.test(rel)) {
        // ADD unpacks local archives: import it, then unpack it where it would land
        imports.push({ path });
        const name = posix.basename(rel);
        const target = dest.endsWith('/') ? dest : `${dest}/`;
        st.run.push(
          `mkdir -p ${shQuote(target)} && tar -xf ${shQuote(`/stacker/imports/${name}`)} -C ${shQuote(target)}`,
        );
        continue;
      }
    }
    // Docker copies a directory's content into dest; stacker puts a directory at dest
    // itself when dest has no trailing slash
    const d = isDir ? dest.replace(/\/+$/, '') || '/' : dest;
    if (d === '/')
      throw fail(ins, `copying ${src} over / has no stacker equivalent; copy it to a directory below /`);
    imports.push({ path, dest: d, ...spec });
  }
}

const KEY_ORDER = [
  'from',
  'os',
  'arch',
  'build_only',
  'imports',
  'environment',
  'run',
  'labels',
  'annotations',
  'volumes',
  'working_dir',
  'runtime_user',
  'entrypoint',
  'cmd',
];

function order(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of KEY_ORDER) if (k in o) out[k] = o[k];
  return out;
}

/** `o[key]`, created as `empty` first when missing. */
function field<T>(o: Record<string, unknown>, key: string, empty: T): T {
  if (!(key in o)) o[key] = empty;
  return o[key] as T;
}

/** Quote for POSIX sh: plain words as they are, everything else in single quotes. */
export function shQuote(s: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A RUN line as Docker runs it after `USER spec`: as that user, whatever its login shell
 * (`nologin` users are common for services). A name goes through `su -s /bin/sh` (every
 * base has su). A numeric uid (Docker needs no passwd entry for it; gid 0 then, as Docker)
 * or a `user:group` spec needs a tool that sets ids: util-linux's setpriv, else coreutils'
 * `chroot --userspec` (busybox has neither in a usable form; the run step then fails
 * naming the option it lacks).
 */
export function asUser(spec: string, script: string): string {
  const [user, group] = spec.split(':');
  const numeric = (x: string) => /^\d+$/.test(x);
  if (group === undefined && !numeric(user)) return `su -s /bin/sh -p ${shQuote(user)} -c ${shQuote(script)}`;
  const uid = numeric(user) ? user : `"$(id -u ${shQuote(user)})"`;
  const gid =
    group === undefined
      ? `"$(id -g ${shQuote(user)} 2>/dev/null || echo 0)"`
      : numeric(group)
        ? group
        : `"$(sed -n 's/^${group.replace(/[^\w.-]/g, '')}:[^:]*:\\([0-9]*\\):.*/\\1/p' /etc/group)"`;
  const inner = `sh -e -c ${shQuote(script)}`;
  return (
    `if setpriv --reuid=0 --regid=0 --clear-groups true 2>/dev/null; ` +
    `then setpriv --reuid=${uid} --regid=${gid} --clear-groups -- ${inner}; ` +
    `else chroot --userspec=${uid}:${gid} / ${inner}; fi`
  );
}
