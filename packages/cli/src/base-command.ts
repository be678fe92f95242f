import { Command, Errors, Flags } from '@oclif/core';
import { isUserError } from '@stacker/plugin-api';
import type { Logger } from 'pino';
import { type CreatedLogger, createLogger } from './logger.js';
import { type BundledPlugin, OclifPluginRegistry } from './plugins.js';
import { resolveSettings, type Settings } from './settings.js';
import { STACKER_VERSION } from './version.js';

/**
 * Every stacker command: stacker's global flags (accepted before the command too, see
 * argv.ts), config file + flag resolution, logging, and errors printed as one line with
 * exit code 1 (a stack trace only with --debug).
 */
export abstract class StackerCommand extends Command {
  static override baseFlags = {
    'work-dir': Flags.string({
      helpGroup: 'GLOBAL',
      description: "working directory for stacker's cache, OCI output and roots",
    }),
    'stacker-dir': Flags.string({
      helpGroup: 'GLOBAL',
      description: "directory for stacker's cache [default: .stacker]",
    }),
    'oci-dir': Flags.string({ helpGroup: 'GLOBAL', description: 'directory for OCI output [default: oci]' }),
    'roots-dir': Flags.string({
      helpGroup: 'GLOBAL',
      description: 'directory for the rootfs output [default: roots]',
    }),
    config: Flags.string({
      helpGroup: 'GLOBAL',
      description: 'stacker config file with defaults [default: ~/.config/stacker/conf.yaml]',
    }),
    debug: Flags.boolean({ helpGroup: 'GLOBAL', description: 'enable stacker debug mode' }),
    quiet: Flags.boolean({ char: 'q', helpGroup: 'GLOBAL', description: 'silence all logs' }),
    'log-file': Flags.string({ helpGroup: 'GLOBAL', description: 'log to a file instead of stderr' }),
    'log-level': Flags.string({
      helpGroup: 'GLOBAL',
      options: ['trace', 'debug', 'info', 'warn', 'error', 'fatal'],
      description: 'log level',
    }),
    'log-timestamp': Flags.boolean({ helpGroup: 'GLOBAL', description: 'prefix log lines with a timestamp' }),
    json: Flags.boolean({
      helpGroup: 'GLOBAL',
      description: 'JSON output: logs as pino JSON lines; inspect prints its report as one JSON array',
    }),
    'storage-type': Flags.string({
      helpGroup: 'GLOBAL',
      description: 'storage driver: overlay (default), btrfs, or one from a plugin',
    }),
    progress: Flags.boolean({
      helpGroup: 'GLOBAL',
      allowNo: true,
      description: 'show progress (default: when stdout is a terminal)',
    }),
    'internal-userns': Flags.boolean({ hidden: true }),
  };

  protected settings!: Settings;
  protected logger!: Logger;
  private created?: CreatedLogger;
  protected debugMode = false;
  private _registry?: OclifPluginRegistry;

  protected get registry(): OclifPluginRegistry {
    // the fast path's config carries the core plugins bundled with it (fast-build.ts)
    const fast = this.config as unknown as {
      bundledPlugins?: Record<string, BundledPlugin>;
      importModule?: (url: string) => Promise<unknown>;
    };
    this._registry ??= new OclifPluginRegistry(this.config, this.logger, {
      bundled: fast.bundledPlugins,
      importModule: fast.importModule,
    });
    return this._registry;
  }

  /** Resolve settings and start logging; every command calls this after parse(). */
  protected setUp(flags: Record<string, unknown>, out?: { write(line: string): void }): void {
    this.debugMode = Boolean(flags.debug);
    if (flags.debug && flags.quiet) {
      throw new Errors.CLIError("debug and quiet don't make sense together");
    }
    this.created = createLogger({
      debug: Boolean(flags.debug),
      quiet: Boolean(flags.quiet),
      json: Boolean(flags.json),
      logFile: flags['log-file'] as string | undefined,
      level: flags['log-level'] as string | undefined,
      timestamps: Boolean(flags['log-timestamp']),
      out,
    });
    this.logger = this.created.log;
    this.logger.debug(`stacker version ${STACKER_VERSION}`);
    this.settings = resolveSettings(flags as any);
  }

  protected showProgress(flags: { progress?: boolean }): boolean {
    if (flags.progress !== undefined) return flags.progress;
    return Boolean(process.stdout.isTTY);
  }

  protected override async finally(err: Error | undefined): Promise<any> {
    await this.created?.close();
    return super.finally(err);
  }

  protected override async catch(
    err: Error & { exitCode?: number; oclif?: { exit?: number } },
  ): Promise<any> {
    // oclif's own control flow (help, version, exit) passes through untouched
    if (err instanceof Errors.ExitError || (err as any).code === 'EEXIT') throw err;
    const message = err.message.replace(/^error: /i, '');
    if (this.logger && !isUserError(err) && this.debugMode) {
      this.logger.error({ err }, 'unexpected error');
    }
    process.stderr.write(`error: ${message}\n`);
    if (this.debugMode && err.stack && !isUserError(err)) process.stderr.write(`${err.stack}\n`);
    await this.created?.close();
    const code =
      typeof err.exitCode === 'number' && err.exitCode > 1 && !isUserError(err) && (err as any).signalExit
        ? err.exitCode
        : 1;
    this.exit(code);
  }
}
