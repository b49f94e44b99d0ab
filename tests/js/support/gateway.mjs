// Support for the gateway's end-to-end tests: `corral gateway` as a real child process (its
// addresses read back from the "gateway listening" log line, the log kept for failure messages,
// nothing left running after a test file ends), a nats-server with three bench nodes on it, the
// admin API and /metrics, and a raw Engine.IO v4 long-polling session over plain HTTP for the
// cases where a test must choose which gateway (or which request) goes where. The child-process
// layer (`Proc`) and the nats-server starter are cluster.mjs's.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { corralBin, repoRoot, startNode } from "./node.mjs";
import { HEARTBEAT, Proc, START_TIMEOUT_MS, cleanEnv, sleep, startNatsServer } from "./cluster.mjs";
import { WAIT_MS } from "./clients.mjs";

/** Health checks every test gateway runs: a node's death or recovery is seen within ~0.5 s. */
export const FAST_HEALTH = ["--health-interval", "200ms", "--health-timeout", "200ms"];
/** The Engine.IO v4 record separator between packets of one polling payload. */
export const RS = "\x1e";
/** The body of Engine.IO's "Session ID unknown" refusal. */
export const SESSION_UNKNOWN = { code: 1, message: "Session ID unknown" };

/** Every gateway and broker started here that has not exited yet. */
const live = new Set();
/** Every gateway and broker started here, for failure diagnostics. */
const started = [];

/**
 * Counts `proc` among this module's processes, for {@link stopAllProcesses} and
 * {@link withGatewayLogs}. (cluster.mjs's {@link Proc} kills it when the test process exits.)
 */
function track(proc) {
  live.add(proc);
  started.push(proc);
  proc.exited.then(() => live.delete(proc));
  return proc;
}

/**
 * Retries `probe` until it returns a truthy value (which it resolves with), for states no event
 * announces; rejects after `timeoutMs` saying `what`, with the last value `describe` makes of it.
 */
export async function eventually(probe, { timeoutMs = WAIT_MS, intervalMs = 50, what, describe = null }) {
  const deadline = performance.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (performance.now() > deadline) {
      const detail = describe ? `; last: ${await describe()}` : "";
      throw new Error(`timed out after ${timeoutMs} ms: ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

/** A running `corral gateway`. */
export class Gateway extends Proc {
  constructor(child, args) {
    super("corral", child, args);
    track(this);
  }

  /** `http://<listen>` + `path`: where clients connect. */
  url(path = "") {
    return `http://${this.listen}${path}`;
  }

  /** `http://<admin>` + `path`. */
  adminUrl(path = "") {
    return `http://${this.admin}${path}`;
  }

  /**
   * A request to the admin listener; resolves with `{status, body, headers}` (body parsed when
   * JSON). `token` is sent as `Authorization: Bearer <token>`.
   */
  async adminRequest(method, path, { token } = {}) {
    const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
    const res = await fetch(this.adminUrl(path), { method, headers, signal: AbortSignal.timeout(WAIT_MS) });
    const text = await res.text();
    const json = res.headers.get("content-type")?.startsWith("application/json");
    return { status: res.status, body: json ? JSON.parse(text) : text, headers: res.headers };
  }

  /** The samples of `/metrics`: `{"name{labels}": value}`. */
  async metrics() {
    const { status, body } = await this.adminRequest("GET", "/metrics");
    if (status !== 200) throw new Error(`GET /metrics answered ${status}`);
    return parseMetrics(body);
  }

  /**
   * Resolves once the gateway's health check reported `health` (e.g. "Ready", "Down") for every
   * node of `nodeIds`, at or after log line `since` (an index into `this.logs`).
   */
  async waitForHealth(nodeIds, health, { since = 0, timeoutMs = WAIT_MS } = {}) {
    await Promise.all(
      nodeIds.map((id) =>
        this.waitForLog(
          (l) => l.message === "node health changed" && l.node === id && l.health === health && this.logs.indexOf(l) >= since,
          { timeoutMs, what: `the gateway's health check to report ${id} ${health}` },
        ),
      ),
    );
  }
}

/**
 * Wraps a test function so that, when it fails, the last `tail` log lines of the gateways (and
 * brokers) it started or that still run are printed as test diagnostics. Combine with
 * `withNodeLogs`.
 */
export function withGatewayLogs(fn, { tail = 40 } = {}) {
  return async (t) => {
    const first = started.length;
    try {
      return await fn(t);
    } catch (err) {
      for (const proc of started.filter((p, i) => i >= first || p.exitStatus === null)) {
        const lines = proc.lines.slice(-tail);
        t.diagnostic(`log of ${proc.name} ${proc.args.join(" ")} (last ${lines.length} lines):\n${lines.join("\n")}`);
      }
      throw err;
    }
  };
}

/** Prometheus text → `{"name{labels}": number}` (labels as printed). */
export function parseMetrics(text) {
  const samples = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples[line.slice(0, at)] = Number(line.slice(at + 1));
  }
  return samples;
}

/**
 * Runs `corral <argv>` (a gateway, alone or in `corral up`) with `CORRAL_LOG=<log>` and resolves
 * once it logged "gateway listening"; `gateway.listen` and `gateway.admin` are the bound
 * addresses. Then `ready(gateway)` runs; if anything fails, the process is stopped.
 */
async function spawnGateway(argv, log, ready) {
  if (!existsSync(corralBin)) {
    throw new Error(`corral binary not found at ${corralBin}: run \`cargo build\` or set CORRAL_BIN`);
  }
  const child = spawn(corralBin, argv, { cwd: repoRoot, env: cleanEnv({ CORRAL_LOG: log }), stdio: ["ignore", "pipe", "pipe"] });
  const gateway = new Gateway(child, argv);
  try {
    const line = await gateway.waitForLog((l) => l.message === "gateway listening", {
      timeoutMs: START_TIMEOUT_MS,
      what: '"gateway listening"',
    });
    gateway.listen = line.listen;
    gateway.admin = line.admin;
    await ready(gateway);
    return gateway;
  } catch (err) {
    await gateway.stop();
    throw err;
  }
}

/**
 * Starts `corral --log-format json gateway --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
 * --node ID=URL ... [...args]` in front of `nodes` (`{nodeId, listen}`, as `startNode` returns)
 * and resolves once it listens; `gateway.listen` and `gateway.admin` are the bound addresses.
 * With `ready` (default), also waits until its health check saw every node ready.
 */
export function startGateway({ nodes, args = [], ready = true } = {}) {
  const argv = ["--log-format", "json", "gateway", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
  for (const node of nodes) argv.push("--node", `${node.nodeId}=http://${node.listen}`);
  // A test gateway stops quickly when its test is done (SIGTERM, see `shutdown`).
  if (!args.includes("--drain-timeout")) argv.push("--drain-timeout", "2s");
  argv.push(...args);
  return spawnGateway(argv, "info,corral_gateway=debug", async (gateway) => {
    if (ready) await gateway.waitForHealth(nodes.map((n) => n.nodeId), "Ready");
  });
}

/**
 * Starts `corral --log-format json up --nodes <nodes> --listen 127.0.0.1:0 --admin-listen
 * 127.0.0.1:0 [...args]` (a gateway and its nodes in one process, `--affinity none`) in the
 * repository root, so the chat page finds the client bundle; resolves once the gateway listens
 * and its health check saw `node-1`..`node-<nodes>` ready. The result is a {@link Gateway}.
 */
export function startUp({ nodes = 3, args = [] } = {}) {
  const argv = ["--log-format", "json", "up", "--nodes", String(nodes), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", ...args];
  return spawnGateway(argv, "info", async (up) => {
    // `corral up` checks health every 2 s, the first check at once.
    up.nodeIds = Array.from({ length: nodes }, (_, i) => `node-${i + 1}`);
    await up.waitForHealth(up.nodeIds, "Ready");
  });
}

/** Stops every gateway and broker this process started (for `after` hooks). */
export async function stopAllProcesses() {
  await Promise.all([...live].map((proc) => proc.shutdown()));
}

/**
 * A nats-server on a free port (cluster.mjs's {@link startNatsServer}), stopped with the
 * gateways by {@link stopAllProcesses}; resolves with `{proc, url}` once it accepts connections.
 */
export async function startNats() {
  const { proc, url } = await startNatsServer();
  track(proc);
  return { proc, url };
}

/**
 * Three `corral node --app bench` processes, `<prefix>-1..3`, on NATS at `nats` (or alone, on
 * the memory adapter, without it), with `args` added; resolves with the nodes once each listens
 * and, on NATS, every node lists all three as ready in its `/cluster/nodes`.
 */
export async function startBenchNodes({ prefix, nats = null, args = [], count = 3 }) {
  const bus = nats ? ["--adapter", "nats", "--nats", nats, ...HEARTBEAT] : [];
  const results = await Promise.allSettled(
    Array.from({ length: count }, (_, i) => startNode({ app: "bench", nodeId: `${prefix}-${i + 1}`, args: [...bus, ...args] })),
  );
  const nodes = results.filter((s) => s.status === "fulfilled").map((s) => s.value);
  const failed = results.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw failed.reason;
  }
  if (nats) {
    const expected = JSON.stringify(nodes.map((n) => n.nodeId).sort());
    let last = [];
    await eventually(
      async () => {
        last = await Promise.all(nodes.map(async (n) => (await n.get("/cluster/nodes")).body));
        return last.every(
          (list) =>
            JSON.stringify(list.map((m) => m.node_id).sort()) === expected && list.every((m) => m.state === "ready"),
        );
      },
      { timeoutMs: 15_000, intervalMs: 100, what: `the nodes to see each other on NATS`, describe: () => JSON.stringify(last) },
    );
  }
  return nodes;
}

/** The node id a session token (`<node id>.<node sid>.<tag>`) or affinity cookie names. */
export function tokenNode(token) {
  return token.split(".")[0];
}

/** The value of cookie `name` among the `Set-Cookie` headers of `res` (a fetch Response). */
export function setCookie(res, name) {
  for (const header of res.headers.getSetCookie()) {
    const [pair] = header.split(";");
    const at = pair.indexOf("=");
    if (pair.slice(0, at).trim() === name) return { value: pair.slice(at + 1), header };
  }
  return null;
}

/** The Engine.IO packets of a polling payload. */
export function packets(text) {
  return text === "" ? [] : text.split(RS);
}

/**
 * A polling handshake on `base` (`http://host:port`); resolves with the response, its body, the
 * open packet and the token (`sid`). Throws, with the answer, unless it is a 200 open packet.
 */
export async function handshake(base, { headers = {}, query = "" } = {}) {
  const res = await fetch(`${base}/socket.io/?EIO=4&transport=polling${query}`, {
    headers,
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await res.text();
  if (res.status !== 200 || !text.startsWith("0{")) {
    throw new Error(`handshake on ${base} answered ${res.status}: ${text}`);
  }
  const open = JSON.parse(text.slice(1));
  return { res, text, open, token: open.sid, node: tokenNode(open.sid) };
}

/**
 * One Engine.IO long-polling session spoken over raw HTTP, so a test decides where each request
 * goes. Every packet a poll brought is kept in `received`; pings are answered (POST "3").
 */
export class RawSession {
  constructor(token) {
    this.token = token;
    /** Every packet polled so far, in order. */
    this.received = [];
  }

  /** Opens a session with a handshake on `base`. */
  static async open(base, opts) {
    const hs = await handshake(base, opts);
    const session = new RawSession(hs.token);
    session.handshake = hs;
    return session;
  }

  sessionUrl(base, token = this.token) {
    return `${base}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(token)}&t=${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  }

  /** POSTs `payload` (packets joined by the record separator); resolves with `{status, text}`. */
  async post(base, payload, { token } = {}) {
    const res = await fetch(this.sessionUrl(base, token), {
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8" },
      body: Array.isArray(payload) ? payload.join(RS) : payload,
      signal: AbortSignal.timeout(WAIT_MS),
    });
    return { status: res.status, text: await res.text(), headers: res.headers };
  }

  /**
   * One GET; resolves with `{status, text, packets}`. A 200's packets are recorded and its pings
   * answered on `base`. `signal` aborts it (the default bound is WAIT_MS).
   */
  async poll(base, { signal = AbortSignal.timeout(WAIT_MS), token } = {}) {
    const res = await fetch(this.sessionUrl(base, token), { signal });
    const text = await res.text();
    const got = res.status === 200 ? packets(text) : [];
    this.received.push(...got);
    if (got.includes("2")) {
      const pong = await this.post(base, "3");
      if (pong.status !== 200) throw new Error(`answering a ping on ${base}: ${pong.status} ${pong.text}`);
    }
    return { status: res.status, text, packets: got, headers: res.headers };
  }

  /**
   * Polls (on `bases` in turn) until a received packet matches `predicate`; resolves with it.
   * Any non-200 poll throws with the answer.
   */
  async pollUntil(bases, predicate, { timeoutMs = WAIT_MS, what = "a packet" } = {}) {
    const list = Array.isArray(bases) ? bases : [bases];
    const deadline = performance.now() + timeoutMs;
    for (let i = 0; ; i++) {
      const found = this.received.find(predicate);
      if (found !== undefined) return found;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms polling for ${what}; received ${JSON.stringify(this.received)}`);
      const base = list[i % list.length];
      const res = await this.poll(base, { signal: AbortSignal.timeout(Math.max(1, Math.ceil(left))) });
      if (res.status !== 200) throw new Error(`poll on ${base} answered ${res.status}: ${res.text}`);
    }
  }

  /** The Socket.IO event packets (`42[...]`) received, parsed: `[[event, ...args]]`. */
  events() {
    return this.received.filter((p) => p.startsWith("42")).map((p) => JSON.parse(p.slice(2)));
  }
}

/** Runs `task(i)` for i in 0..n-1 with at most `limit` running at once; resolves with the results. */
export async function mapLimit(n, limit, task) {
  const results = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return results;
}

/** Counts of each value of `list`: `{value: count}`. */
export function tally(list) {
  const counts = {};
  for (const item of list) counts[item] = (counts[item] ?? 0) + 1;
  return counts;
}
