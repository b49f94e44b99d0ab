// Starts `corral node` as a real child process for the JavaScript tests: OS-picked port read back
// from the node's JSON log, the log kept for failure messages, and nothing left running after a
// test file ends.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The repository root (this file is `<repo>/tests/js/support/node.mjs`). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** The `corral` binary under test: `$CORRAL_BIN`, else the debug build. */
export const corralBin = process.env.CORRAL_BIN ?? join(repoRoot, "target/debug/corral");

/** How long a node may take to print "node listening". */
const START_TIMEOUT_MS = 20_000;

/** Every node started by this test process that has not exited yet. */
const running = new Set();
/** Every node started by this test process, for failure diagnostics. */
const started = [];

// Last resort if a test file dies without running its hooks: `exit` handlers must be synchronous,
// so this only sends SIGKILL.
process.on("exit", () => {
  for (const node of running) node.child.kill("SIGKILL");
});

function assertBinary() {
  if (!existsSync(corralBin)) {
    throw new Error(`corral binary not found at ${corralBin}: run \`cargo build\` or set CORRAL_BIN`);
  }
}

/**
 * The environment for a node: ours without `CORRAL_*` settings (they would silently change what
 * the flags below configure), with a log level verbose enough for failure messages.
 */
function nodeEnv() {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith("CORRAL_") && key !== "RUST_LOG"),
  );
  env.CORRAL_LOG = "info,corral_node=debug";
  return env;
}

/** A running `corral node` process. */
export class CorralNode {
  constructor(child, args) {
    this.child = child;
    this.args = args;
    /** Raw stderr/stdout lines, in order. */
    this.lines = [];
    /** The log lines that parsed as JSON. */
    this.logs = [];
    this.exitStatus = null;
    this.listeners = new Set();
    this.exited = new Promise((resolve) => {
      const exit = (code, signal) => {
        this.exitStatus ??= { code, signal };
        running.delete(this);
        resolve(this.exitStatus);
      };
      child.on("exit", exit);
      child.on("error", (err) => {
        this.record(`[spawn error] ${err.message}`);
        // A process that never started emits no `exit`.
        if (child.pid === undefined) exit(null, null);
      });
    });
    // `close` comes after `exit`, once stdout and stderr are drained: every log line is in.
    this.closed = new Promise((resolve) => child.on("close", () => resolve(this.exitStatus)));
    for (const stream of [child.stderr, child.stdout]) {
      createInterface({ input: stream }).on("line", (line) => this.record(line));
    }
  }

  record(line) {
    this.lines.push(line);
    let json = null;
    try {
      json = JSON.parse(line);
    } catch {
      // Not JSON (e.g. a panic message): kept as a raw line only.
    }
    if (json) {
      this.logs.push(json);
      for (const listener of this.listeners) listener(json);
    }
  }

  /** The whole log, for assertion messages. */
  logText() {
    return `corral ${this.args.join(" ")}\n${this.lines.join("\n")}`;
  }

  /**
   * Resolves with the first log entry (past or future) for which `predicate` is true; rejects
   * after `timeoutMs`, or if the process exits first, with the log attached.
   */
  waitForLog(predicate, { timeoutMs = 10_000, what = "log line" } = {}) {
    const found = this.logs.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const done = (fn, value) => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        fn(value);
      };
      const listener = (json) => {
        if (predicate(json)) done(resolve, json);
      };
      const timer = setTimeout(
        () => done(reject, new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.logText()}`)),
        timeoutMs,
      );
      this.listeners.add(listener);
      this.closed.then((status) => {
        done(reject, new Error(`node exited (${JSON.stringify(status)}) before ${what}\n${this.logText()}`));
      });
    });
  }

  /** `http://127.0.0.1:PORT` + `path`. */
  url(path = "") {
    return `http://${this.listen}${path}`;
  }

  /** GET `path` on the node; resolves with `{status, body}` (body parsed when JSON). */
  async get(path) {
    const res = await fetch(this.url(path), { signal: AbortSignal.timeout(5_000) });
    const text = await res.text();
    let body = text;
    if (res.headers.get("content-type")?.startsWith("application/json")) body = JSON.parse(text);
    return { status: res.status, body, headers: res.headers };
  }

  /** Sends SIGTERM, as an orchestrator stopping the node would. */
  terminate() {
    this.child.kill("SIGTERM");
  }

  /**
   * Resolves with `{code, signal}` once the process exited, or rejects after `timeoutMs`
   * (the process is left running; `stop` kills it).
   */
  waitForExit(timeoutMs) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`node still running ${timeoutMs} ms later\n${this.logText()}`)),
        timeoutMs,
      );
    });
    return Promise.race([this.exited, timeout]).finally(() => clearTimeout(timer));
  }

  /** Kills the process if it still runs and waits until it is gone. Safe to call twice. */
  async stop() {
    if (this.exitStatus === null) this.child.kill("SIGKILL");
    await this.exited;
  }
}

/**
 * Starts `corral --log-format json node --listen <listen> --app <app> [--node-id] [...args]`
 * and resolves once it listens. `node.listen` is the `IP:PORT` it bound, `node.port` the port,
 * `node.nodeId` the id it reported.
 */
export async function startNode({ app = "chat", nodeId, listen = "127.0.0.1:0", args = [], cwd = repoRoot } = {}) {
  assertBinary();
  const argv = ["--log-format", "json", "node", "--listen", listen, "--app", app];
  if (nodeId) argv.push("--node-id", nodeId);
  argv.push(...args);
  const child = spawn(corralBin, argv, { cwd, env: nodeEnv(), stdio: ["ignore", "pipe", "pipe"] });
  const node = new CorralNode(child, argv);
  running.add(node);
  started.push(node);
  try {
    const ready = await node.waitForLog((l) => l.message === "node listening", {
      timeoutMs: START_TIMEOUT_MS,
      what: '"node listening"',
    });
    node.listen = ready.listen;
    node.port = Number(ready.listen.split(":").pop());
    node.nodeId = ready.node_id;
    return node;
  } catch (err) {
    await node.stop();
    throw err;
  }
}

/** Stops every node this process started (for `after` hooks). */
export async function stopAllNodes() {
  await Promise.all([...running].map((node) => node.stop()));
}

/**
 * Wraps a test function so that, when it fails, the logs of the nodes started so far (their last
 * `tail` lines) are printed as test diagnostics: a timeout alone rarely says why.
 */
export function withNodeLogs(fn, { tail = 40 } = {}) {
  return async (t) => {
    try {
      return await fn(t);
    } catch (err) {
      for (const node of started) {
        const lines = node.lines.slice(-tail);
        t.diagnostic(`log of corral ${node.args.join(" ")} (last ${lines.length} lines):\n${lines.join("\n")}`);
      }
      throw err;
    }
  };
}
