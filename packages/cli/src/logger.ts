import { createWriteStream, type WriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';

export interface LogOptions {
  debug: boolean;
  quiet: boolean;
  json: boolean;
  logFile?: string;
  level?: string;
  timestamps: boolean;
  /** Where plain lines go instead of stderr (the live progress view, on a terminal). */
  out?: { write(line: string): void };
}

/**
 * A sink that prints each pino record as stacker does: the message alone, one line, so that
 * scripts written against stacker's output keep matching.
 */
function plainSink(out: { write(s: string): unknown }, timestamps: boolean) {
  return {
    write(line: string) {
      let rec: { msg?: string; time?: number; err?: { message?: string; stack?: string }; stanza?: string };
      try {
        rec = JSON.parse(line);
      } catch {
        out.write(line);
        return;
      }
      let msg = rec.msg ?? '';
      if (rec.err?.message && !msg.includes(rec.err.message)) msg += `: ${rec.err.message}`;
      const ts = timestamps && rec.time ? `${new Date(rec.time).toISOString()} ` : '';
      out.write(`${ts}${msg}\n`);
    },
  };
}

export interface CreatedLogger {
  log: Logger;
  close(): Promise<void>;
}

export function createLogger(opts: LogOptions): CreatedLogger {
  const level = opts.quiet ? 'fatal' : (opts.level ?? (opts.debug ? 'debug' : 'info'));
  const streams: pino.StreamEntry[] = [];
  let file: WriteStream | undefined;
  if (opts.logFile) {
    // stacker logs to the file instead of stderr; the file always gets the whole story
    file = createWriteStream(opts.logFile, { flags: 'w' });
    const fileLevel = opts.quiet ? 'fatal' : 'debug';
    streams.push({ level: fileLevel as pino.Level, stream: opts.json ? file : plainSink(file, true) });
  } else if (opts.json) {
    streams.push({ level: level as pino.Level, stream: process.stderr });
  } else if (opts.out) {
    streams.push({ level: level as pino.Level, stream: plainSink(opts.out, opts.timestamps) });
  } else if (process.stderr.isTTY) {
    streams.push({
      level: level as pino.Level,
      // loaded only for a terminal: it is a large module
      stream: (createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty'))({
        sync: true,
        destination: 2,
        ignore: 'pid,hostname,stanza',
        translateTime: 'HH:MM:ss',
      }),
    });
  } else {
    streams.push({ level: level as pino.Level, stream: plainSink(process.stderr, opts.timestamps) });
  }
  const minLevel = streams.some((s) => s.level === 'debug') ? 'debug' : level;
  const log = pino({ level: minLevel, base: undefined }, pino.multistream(streams));
  return {
    log,
    close: () =>
      new Promise<void>((res) => {
        if (!file) return res();
        file.end(() => res());
      }),
  };
}
