// Three-node Corral clusters for the cross-node JavaScript tests, one starter per bus driver:
// `memory` (the `cluster` example: three nodes in one process on an in-process bus), `nats` (a
// real nats-server and three `corral node` processes) and `redis` (a real redis-server and the
// `cluster` example with its Redis driver). Each resolves with
// `{driver, nodes: [{nodeId, url, listen}], stop(), logs(tail)}` once every node listens, and
// cleans up whatever it started if it fails; `waitForMesh` then waits until every node sees the
// other two. Nothing is left running: `stop()` sends SIGTERM and falls back to SIGKILL, and the
// test process kills what is left when it exits.
//
// The process layer here serves gateway.mjs too: {@link Proc} (any child process that is not
// `corral node`), {@link cleanEnv}, {@link freePort}, {@link startNatsServer}, `HEARTBEAT`,
// `START_TIMEOUT_MS` and `sleep`.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

import { CorralNode, repoRoot, startNode } from "./node.mjs";
import { ClientPool, ack } from "./clients.mjs";

/** The `cluster` example binary: `$CORRAL_CLUSTER_BIN`, else the debug build. */
export const clusterBin = process.env.CORRAL_CLUSTER_BIN ?? join(repoRoot, "target/debug/examples/cluster");
/** `nats-server`: `$NATS_SERVER`, else the project-local one `scripts/setup` installs. */
export const natsServerBin = process.env.NATS_SERVER ?? join(repoRoot, ".venv/bin/nats-server");
/** `redis-server`: `$REDIS_SERVER`, else the one on PATH (Debian's). */
export const redisServerBin = process.env.REDIS_SERVER ?? "redis-server";

/** Heartbeats of every cluster here: a node sees the others within a few hundred ms. */
export const HEARTBEAT = ["--heartbeat-interval", "200ms", "--heartbeat-timeout", "1s"];
/** How long starting a process (binary start, bind, first output) may take on a loaded machine. */
export const START_TIMEOUT_MS = 20_000;
/** How long a process may take to exit after SIGTERM before it gets SIGKILL. */
const STOP_GRACE_MS = 7_000;
/** How long the nodes may take to see each other (heartbeat interval 200 ms). */
const MESH_TIMEOUT_MS = 15_000;

/** Every process started here that has not exited yet. */
const live = new Set();

// Last resort if a test file dies without running its hooks (`exit` handlers must be
// synchronous, so only SIGKILL). `corral node` processes are covered by node.mjs's own handler.
process.on("exit", () => {
  for (const proc of live) proc.child.kill("SIGKILL");
});

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A child process that is not `corral node` (the cluster example, nats-server, redis-server,
 * `corral gateway`), with the same log capture and waits as {@link CorralNode}; killed when the
 * test process exits, if it still runs.
 */
export class Proc extends CorralNode {
  constructor(name, child, args) {
    super(child, args);
    this.name = name;
    live.add(this);
    this.exited.then(() => live.delete(this));
  }

  logText() {
    return `${this.name} ${this.args.join(" ")}\n${this.lines.join("\n")}`;
  }

  /** SIGTERM (and closes stdin, which the cluster example also takes as "stop"), then SIGKILL. */
  async shutdown(graceMs = STOP_GRACE_MS) {
    if (this.exitStatus === null) {
      this.child.stdin?.end();
      this.child.kill("SIGTERM");
    }
    await this.waitForExit(graceMs).catch(() => this.stop());
  }
}

/** `corral node` processes stop the same way: SIGTERM (drain), then SIGKILL. */
async function shutdownNode(node, graceMs = STOP_GRACE_MS) {
  if (node.exitStatus === null) node.terminate();
  await node.waitForExit(graceMs).catch(() => node.stop());
}

/** Our environment without `CORRAL_*` settings, which would change what the flags configure. */
export function cleanEnv(extra = {}) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith("CORRAL_") && key !== "RUST_LOG"),
  );
  return { ...env, ...extra };
}

function spawnProc(name, bin, args, { stdin = "ignore", cwd = repoRoot, env = cleanEnv() } = {}) {
  const child = spawn(bin, args, { cwd, env, stdio: [stdin, "pipe", "pipe"] });
  // A pipe to a process that already exited would otherwise throw EPIPE at the test process.
  child.stdin?.on("error", () => {});
  return new Proc(name, child, args);
}

/** A TCP port that was free a moment ago (bound to port 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.setTimeout(1_000);
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.on("connect", () => done(true));
    socket.on("error", () => done(false));
    socket.on("timeout", () => done(false));
  });
}

/**
 * Starts a broker or proxy (`args(port)` on a free port, or on `port`) and resolves with
 * `{proc, port}` once it accepts TCP connections. A port taken by someone else between
 * `freePort` and the bind makes the process exit: that is retried on another port (not with a
 * fixed `port`).
 */
export async function startBroker(name, bin, args, { port: fixedPort, attempts = 3 } = {}) {
  if (bin.includes("/") && !existsSync(bin)) {
    throw new Error(`${name} not found at ${bin} (run ./scripts/setup --test, or set its environment variable)`);
  }
  let lastError;
  for (let attempt = 1; attempt <= (fixedPort ? 1 : attempts); attempt++) {
    const port = fixedPort ?? (await freePort());
    const proc = spawnProc(name, bin, args(port), { cwd: tmpdir() });
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      // Checked before and after connecting: a port someone else owns also accepts connections.
      if (proc.exitStatus !== null) break;
      if ((await canConnect(port)) && proc.exitStatus === null) return { proc, port };
      if (performance.now() > deadline) {
        await proc.shutdown();
        throw new Error(`${name} not accepting connections on port ${port} after ${START_TIMEOUT_MS} ms\n${proc.logText()}`);
      }
      await sleep(50);
    }
    await proc.closed;
    lastError = new Error(`${name} exited (${JSON.stringify(proc.exitStatus)}) before accepting connections\n${proc.logText()}`);
  }
  throw lastError;
}

/**
 * A nats-server on a free port (127.0.0.1 only); resolves with `{proc, port, url}` once it
 * accepts connections.
 */
export async function startNatsServer() {
  const { proc, port } = await startBroker("nats-server", natsServerBin, (p) => ["-p", String(p), "-a", "127.0.0.1"]);
  return { proc, port, url: `nats://127.0.0.1:${port}` };
}

/** `{nodeId, url, listen}` of a node listening on `listen` (`IP:PORT`). */
function nodeEntry(nodeId, listen) {
  return { nodeId, listen, url: `http://${listen}` };
}

/**
 * Runs the `cluster` example with `args` and resolves with its process and its three nodes once
 * it printed `{"node_id":"<prefix>-N","listen":…}` for each. Its stdin stays piped and open: the
 * example stops when it closes, so it cannot outlive this process.
 */
async function startClusterBinary(driver, prefix, args) {
  if (!existsSync(clusterBin)) {
    throw new Error(`cluster example not found at ${clusterBin}: run \`cargo build --examples\` or set CORRAL_CLUSTER_BIN`);
  }
  const argv = ["--nodes", "3", "--app", "cluster-check", "--id-prefix", prefix, ...HEARTBEAT, ...args];
  const proc = spawnProc(`cluster (${driver})`, clusterBin, argv, { stdin: "pipe", env: cleanEnv({ RUST_LOG: "info" }) });
  try {
    const nodes = [];
    for (let i = 1; i <= 3; i++) {
      const nodeId = `${prefix}-${i}`;
      const line = await proc.waitForLog((l) => l.node_id === nodeId && typeof l.listen === "string", {
        timeoutMs: START_TIMEOUT_MS,
        what: `the address of node ${nodeId}`,
      });
      nodes.push(nodeEntry(nodeId, line.listen));
    }
    return { proc, nodes };
  } catch (err) {
    await proc.shutdown();
    throw err;
  }
}

/** The common shape of a started cluster. */
function cluster(driver, nodes, processes, stop) {
  let stopped = null;
  return {
    driver,
    nodes,
    processes,
    /** Stops everything (safe to call twice). */
    stop: () => (stopped ??= stop()),
    /** The last `tail` lines of every process, for failure diagnostics. */
    logs(tail = 40) {
      return processes
        .map((p) => {
          const lines = p.lines.slice(-tail);
          const name = p.name ?? `corral ${p.args.join(" ")}`;
          return `log of ${name} (last ${lines.length} lines):\n${lines.join("\n")}`;
        })
        .join("\n\n");
    },
  };
}

/** Three nodes of the `cluster` example sharing its in-process memory bus. */
export async function startMemoryCluster({ prefix = "mem" } = {}) {
  const { proc, nodes } = await startClusterBinary("memory", prefix, ["--driver", "memory"]);
  return cluster("memory", nodes, [proc], () => proc.shutdown());
}

/** A nats-server on a free port and three `corral node --adapter nats` processes on it. */
export async function startNatsCluster({ prefix = "nats" } = {}) {
  const { proc: server, url } = await startNatsServer();
  const args = ["--adapter", "nats", "--nats", url, ...HEARTBEAT];
  const started = await Promise.allSettled(
    [1, 2, 3].map((i) => startNode({ app: "cluster-check", nodeId: `${prefix}-${i}`, args })),
  );
  const nodes = started.filter((s) => s.status === "fulfilled").map((s) => s.value);
  // Nodes first, so they say goodbye through the broker; then the broker.
  const stop = async () => {
    await Promise.all(nodes.map((n) => shutdownNode(n)));
    await server.shutdown();
  };
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    await stop();
    throw failed.reason;
  }
  const entries = nodes.map((n) => nodeEntry(n.nodeId, n.listen));
  return cluster("nats", entries, [server, ...nodes], stop);
}

/**
 * A redis-server on a free port and the `cluster` example with `--driver redis` on it. Until the
 * example has a Redis driver it refuses `--driver redis`: that fails here, with a message saying
 * so, rather than skipping.
 */
/** A redis-server on 127.0.0.1 (a free port, or `port`), without persistence: `{proc, port, url}`. */
export async function startRedisServer({ port } = {}) {
  const args = (p) => ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const started = await startBroker("redis-server", redisServerBin, args, { port });
  return { ...started, url: `redis://127.0.0.1:${started.port}` };
}

export async function startRedisCluster({ prefix = "redis" } = {}) {
  const { proc: server, port } = await startRedisServer();
  let started;
  try {
    started = await startClusterBinary("redis", prefix, ["--driver", "redis", "--redis-url", `redis://127.0.0.1:${port}`]);
  } catch (err) {
    await server.shutdown();
    // clap names the first argument it does not know: `--redis-url`, or the value `redis`.
    if (/unexpected argument '--redis-url'|invalid value 'redis'/.test(err.message)) {
      throw new Error(
        `the cluster example has no Redis driver yet: it refuses \`--driver redis --redis-url …\` (${clusterBin}; rebuild with \`cargo build --examples\` once examples/cluster/redis.rs lands)\n${err.message}`,
      );
    }
    throw err;
  }
  const { proc, nodes } = started;
  const stop = async () => {
    await proc.shutdown();
    await server.shutdown();
  };
  return cluster("redis", nodes, [server, proc], stop);
}

/** The starters by driver name. */
export const startCluster = {
  memory: startMemoryCluster,
  nats: startNatsCluster,
  redis: startRedisCluster,
};

/**
 * Resolves once every node of `cluster` lists exactly the cluster's three nodes, all ready, in
 * answer to the cluster-check `nodes` request. Membership has no event a client can await, so
 * this asks every 100 ms; rejects after `timeoutMs` with the last answers.
 */
export async function waitForMesh(cluster, { timeoutMs = MESH_TIMEOUT_MS } = {}) {
  const expected = cluster.nodes.map((n) => n.nodeId).sort();
  const pool = new ClientPool();
  try {
    const sockets = await Promise.all(
      cluster.nodes.map(async (n) => (await pool.connect(n.url, { transports: ["websocket"] }, "hello")).socket),
    );
    const deadline = performance.now() + timeoutMs;
    let last = [];
    for (;;) {
      last = await Promise.all(sockets.map(async (s) => (await ack(s, "nodes"))[0]));
      const meshed = last.every(
        (list) =>
          Array.isArray(list) &&
          JSON.stringify(list.map((n) => n.node_id).sort()) === JSON.stringify(expected) &&
          list.every((n) => n.state === "ready"),
      );
      if (meshed) return last;
      if (performance.now() > deadline) {
        throw new Error(
          `the ${cluster.driver} nodes did not all see ${expected.join(", ")} within ${timeoutMs} ms; ` +
            `last answers of \`nodes\`: ${JSON.stringify(last)}`,
        );
      }
      await sleep(100);
    }
  } finally {
    pool.closeAll();
  }
}
