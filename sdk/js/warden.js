// Helpers for writing Warden tasks in JavaScript (built with componentize-js).
//
// The WIT contract in sdk/wit/warden.wit is the real SDK: componentize-js turns its
// imports into the `warden:task/*` modules used below. This file wraps them so a task reads
// like ordinary JavaScript: inputs are plain values, host errors are `WardenError`s, and
// the task is an ordinary function.
//
// A task never sees a secret: `credentials.acquire` returns a *handle*, which is passed back
// to `ssh` and `transfer` calls; the host authenticates, checks the grant, redacts, audits.
//
//   import { task, params, log, credentials, ssh } from './warden.js';
//   export const run = task(() => {
//     const cred = credentials.acquire(params.text('credential'));
//     const out = ssh.exec(params.text('target'), cred, 'uname -a');
//     log.info('ran uname');
//     return out.stdoutText().trim();
//   });
//
// Build: componentize-js --wit sdk/wit --world-name task \
//          -d stdio random clocks http fetch-event -o task.wasm app.js

import * as rawParams from 'warden:task/params@0.1.0';
import * as rawLog from 'warden:task/log@0.1.0';
import * as rawCredentials from 'warden:task/credentials@0.1.0';
import * as rawSsh from 'warden:task/ssh@0.1.0';
import * as rawTransfer from 'warden:task/transfer@0.1.0';

/** A host function failed. `kind` is the WIT error case (`denied`, `not-found`, ...). */
export class WardenError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.detail = message;
  }
}

/** Calls a raw binding, turning its error variant into a WardenError. */
function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const error = e && e.payload !== undefined ? e.payload : e;
    if (error && typeof error.tag === 'string') {
      throw new WardenError(error.tag, String(error.val));
    }
    throw e;
  }
}

/**
 * Wraps a `() => string` function as the task's exported `run`: its return value is the
 * run's result; any thrown error ends the run as failed with the error's message.
 */
export function task(fn) {
  return () => {
    let result;
    try {
      result = fn();
    } catch (e) {
      throw e instanceof Error ? e.message : String(e);
    }
    if (typeof result !== 'string') {
      throw `task returned ${typeof result}, expected a string`;
    }
    return result;
  };
}

function plain(value) {
  // integers arrive as BigInt (s64); small ones become numbers.
  if (value.tag === 'integer') {
    const n = value.val;
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(n)
      : n;
  }
  return value.val;
}

function typed(name, kind, fallback) {
  const value = params.get(name);
  if (value === undefined) {
    if (fallback === undefined) throw new Error(`input \`${name}\` is required`);
    return fallback;
  }
  const ok = kind === 'list' ? Array.isArray(value) : typeof value === kind;
  if (!ok) throw new Error(`input \`${name}\` is not a ${kind}`);
  return value;
}

/** The run's inputs as plain values (validated by the host against the manifest). */
export const params = {
  /** One input, or undefined when absent. */
  get(name) {
    const value = rawParams.get(name);
    return value === undefined || value === null ? undefined : plain(value);
  },
  /** Every input, as an object. */
  all() {
    return Object.fromEntries(rawParams.all().map((p) => [p.name, plain(p.value)]));
  },
  text: (name, fallback) => typed(name, 'string', fallback),
  integer: (name, fallback) => typed(name, 'number', fallback),
  flag: (name, fallback) => typed(name, 'boolean', fallback),
  textList: (name, fallback) => typed(name, 'list', fallback),
};

/** The run's event log (redacted and audited by the host). */
export const log = {
  trace: (message) => rawLog.write('trace', message),
  debug: (message) => rawLog.write('debug', message),
  info: (message) => rawLog.write('info', message),
  warn: (message) => rawLog.write('warn', message),
  error: (message) => rawLog.write('error', message),
};

/** Credential handles: they name a secret; they never hold it. */
export const credentials = {
  /** A handle to the named credential; throws WardenError (denied, not-found). */
  acquire: (name) => call(rawCredentials.acquire, name),
};

const decoder = new TextDecoder();

function output(raw) {
  return {
    exitStatus: raw.exitStatus,
    exitSignal: raw.exitSignal,
    stdout: raw.stdout,
    stderr: raw.stderr,
    stdoutTruncated: raw.stdoutTruncated,
    stderrTruncated: raw.stderrTruncated,
    get ok() {
      return raw.exitStatus === 0;
    },
    stdoutText: () => decoder.decode(raw.stdout),
    stderrText: () => decoder.decode(raw.stderr),
  };
}

function options({ sudo = false, stdin, timeoutMs } = {}) {
  return { sudo, stdin, timeoutMs };
}

/** Commands on targets over SSH (host key pinned, output capped and redacted by the host). */
export const ssh = {
  /** Runs `command` on `target`; throws WardenError if it could not run at all. */
  exec: (target, credential, command, opts) =>
    output(call(rawSsh.exec, target, credential, command, options(opts))),
  /** Runs `command` on every target at once: [{ target, output } | { target, error }]. */
  execMany(targets, credential, command, opts) {
    return rawSsh.execMany(targets, credential, command, options(opts)).map((r) =>
      r.outcome.tag === 'ok'
        ? { target: r.target, output: output(r.outcome.val) }
        : { target: r.target, error: new WardenError(r.outcome.val.tag, String(r.outcome.val.val)) },
    );
  },
};

const encoder = new TextEncoder();

/** Files on targets over SFTP, limited to the path prefixes the run's grant names. */
export const transfer = {
  /** Writes `contents` (string or Uint8Array) to the absolute `path`; returns bytes written. */
  upload(target, credential, path, contents, mode = 0o644) {
    const bytes = typeof contents === 'string' ? encoder.encode(contents) : contents;
    return Number(call(rawTransfer.upload, target, credential, path, bytes, mode));
  },
  /** Reads the whole file at the absolute `path` (size capped by the host). */
  download: (target, credential, path) => call(rawTransfer.download, target, credential, path),
  /** Like download, decoded as UTF-8. */
  downloadText: (target, credential, path) => decoder.decode(transfer.download(target, credential, path)),
};
