// The Node.js socket.io peer server of the load tester (loadtest/peers/node-socketio): it must
// speak the bench protocol of docs/loadtest.md exactly as a Corral node does, start and stop
// the way scripts expect, and its DROP_EVERY fault mode must really lose messages. With
// REDIS_URL several peer processes must act as one server (rooms shared through Redis), also
// behind nginx with the configuration of loadtest/peers/nginx.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";

import { repoRoot } from "./support/node.mjs";
import { ClientPool, Recorder, ack, checkAsk, comparable, connected, nextEvent, withTimeout } from "./support/clients.mjs";
import { sleep, startBroker, startRedisServer } from "./support/cluster.mjs";

const PEER_DIR = join(repoRoot, "loadtest/peers/node-socketio");
const NODE_ID = "peer-test-1";
/** How long the peer may take to print its listen line. */
const START_TIMEOUT_MS = 20_000;
/** Environment variables the peer reads. */
const PEER_SETTINGS = ["PORT", "HOST", "NODE_ID", "DROP_EVERY", "REDIS_URL"];
/** The protocol's `ask` timeout. */
const ASK_TIMEOUT_MS = 5_000;

/** Every peer process this file started that has not exited yet. */
const running = new Set();
// Last resort if the file dies without running its hooks (`exit` handlers must be synchronous).
process.on("exit", () => {
  for (const peer of running) peer.child.kill("SIGKILL");
});

/**
 * Starts `node server.mjs` in the peer's directory with `env` added to ours and resolves once it
 * printed its listen line: `{child, lines, listen, nodeId, url, exited}`. Rejects (and kills the
 * process) if it exits or stays silent first, with its output attached.
 */
async function startPeer(env = {}) {
  if (!existsSync(join(PEER_DIR, "node_modules/socket.io"))) {
    throw new Error(`${PEER_DIR}/node_modules is missing: run ./scripts/setup`);
  }
  // Our environment without the peer's settings (a HOST set for something else would change
  // what it binds), then the test's.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([key]) => !PEER_SETTINGS.includes(key)));
  const child = spawn(process.execPath, ["server.mjs"], {
    cwd: PEER_DIR,
    env: { ...inherited, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const peer = { child, lines: [], exitStatus: null };
  running.add(peer);
  peer.exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      peer.exitStatus = { code, signal };
      running.delete(peer);
      resolve(peer.exitStatus);
    });
  });
  // `close` comes after `exit`, once stdout and stderr are drained: the whole output is in.
  const closed = new Promise((resolve) => child.on("close", resolve));
  createInterface({ input: child.stderr }).on("line", (line) => peer.lines.push(`[stderr] ${line}`));
  const stdout = createInterface({ input: child.stdout });
  const firstLine = new Promise((resolve, reject) => {
    stdout.once("line", resolve);
    closed.then(() => reject(new Error(`peer exited (${JSON.stringify(peer.exitStatus)}) before listening`)));
  });
  try {
    const line = await withTimeout(firstLine, START_TIMEOUT_MS, "waiting for the peer's listen line");
    peer.lines.push(line);
    peer.ready = JSON.parse(line);
    peer.listen = peer.ready.listen;
    peer.nodeId = peer.ready.node_id;
    peer.url = `http://${peer.listen}`;
    stdout.on("line", (l) => peer.lines.push(`[stdout] ${l}`));
    return peer;
  } catch (err) {
    await stopPeer(peer);
    err.message += `\n${peer.lines.join("\n")}`;
    throw err;
  }
}

/** Kills the peer if it still runs and waits until it is gone. Safe to call twice. */
async function stopPeer(peer) {
  if (peer.exitStatus === null) peer.child.kill("SIGKILL");
  await peer.exited;
}

const clients = new ClientPool();
let peer;

before(async () => {
  peer = await startPeer({ NODE_ID });
});

after(async () => {
  clients.closeAll();
  await Promise.all([...running].map(stopPeer));
});

/** `n` connected clients of `url`. */
async function connectAll(n, url = peer.url, opts = {}) {
  const all = await Promise.all(Array.from({ length: n }, () => clients.connect(url, opts)));
  return all.map(({ socket }) => socket);
}

test("prints one JSON line with the address it listens on and its node id", () => {
  assert.deepEqual(Object.keys(peer.ready).sort(), ["listen", "node_id"]);
  assert.match(peer.listen, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(peer.listen, "127.0.0.1:0");
  assert.equal(peer.nodeId, NODE_ID);
});

for (const transport of ["polling", "websocket"]) {
  test(`over ${transport}: greets with hello {node}, and acks join and leave`, async () => {
    const { socket, greeting } = await clients.connect(peer.url, { transports: [transport] }, "hello");
    assert.deepEqual(greeting, { node: NODE_ID });
    assert.deepEqual(await ack(socket, "join", "room-a"), [{ room: "room-a", node: NODE_ID }]);
    assert.deepEqual(await ack(socket, "leave", "room-a"), [{ room: "room-a" }]);
    // Leaving a room one is not in is not an error.
    assert.deepEqual(await ack(socket, "leave", "never-joined"), [{ room: "never-joined" }]);
    socket.disconnect();
  });
}

describe("publish", () => {
  test("reaches every member of the room, sender included, and no one in another room", async () => {
    const [a, b, c] = await connectAll(3);
    const [aMessages, bMessages, cMessages] = [a, b, c].map((s) => new Recorder(s, "message"));
    await ack(a, "join", "r1");
    await ack(b, "join", "r1");
    await ack(c, "join", "r2");

    const payload = { text: "hi", n: [1, 2.5, null], image: Buffer.from([0, 1, 254, 255]) };
    assert.deepEqual(await ack(a, "publish", "r1", payload), [{ node: NODE_ID }]);
    assert.deepEqual(comparable(await aMessages.wait()), comparable(["r1", payload]));
    assert.deepEqual(comparable(await bMessages.wait()), comparable(["r1", payload]));
    // The peer queues the broadcast before acking, and one socket's packets arrive in order: once
    // c's own echo comes back, a message for c would have come first.
    await ack(c, "echo", "barrier");
    assert.deepEqual(cMessages.received, []);
    for (const s of [a, b, c]) s.disconnect();
  });

  test("delivers every message, in order, also from a sender outside the room", async () => {
    const [sender, receiver] = await connectAll(2);
    const messages = new Recorder(receiver, "message");
    await ack(receiver, "join", "all");
    const count = 20;
    for (let i = 0; i < count; i++) assert.deepEqual(await ack(sender, "publish", "all", i), [{ node: NODE_ID }]);
    await ack(receiver, "echo", "barrier");
    assert.deepEqual(
      messages.received,
      Array.from({ length: count }, (_, i) => ["all", i]),
    );
    sender.disconnect();
    receiver.disconnect();
  });

  test("stops after leave, for the leaver only", async () => {
    const [a, b] = await connectAll(2);
    const [aMessages, bMessages] = [a, b].map((s) => new Recorder(s, "message"));
    await ack(a, "join", "r3");
    await ack(b, "join", "r3");
    await ack(a, "publish", "r3", "before");
    await bMessages.wait((_, text) => text === "before");
    await ack(b, "leave", "r3");
    await ack(a, "publish", "r3", "after");
    await aMessages.wait((_, text) => text === "after");
    await ack(b, "echo", "barrier");
    assert.deepEqual(bMessages.received, [["r3", "before"]]);
    a.disconnect();
    b.disconnect();
  });
});

test("echo acks with the same arguments: none, several JSON values, binary", async () => {
  const [socket] = await connectAll(1);
  assert.deepEqual(await ack(socket, "echo"), []);
  const json = [1, "two", { three: [3, 3.5, -4] }, null, true, false, "héllo ✓ 🚀", []];
  assert.deepEqual(await ack(socket, "echo", ...json), json);
  const binary = [
    Uint8Array.from({ length: 256 }, (_, i) => i),
    { nested: { buf: Buffer.from("héllo"), list: [1, Buffer.from([0, 255]), "y"] } },
    new Uint8Array(0),
  ];
  assert.deepEqual(comparable(await ack(socket, "echo", ...binary)), comparable(binary));
  socket.disconnect();
});

describe("ask", () => {
  test("asks the sender with an ack and relays its answer", async () => {
    const [socket] = await connectAll(1);
    await checkAsk(socket);
    socket.disconnect();
  });

  test("acks {error} once the client leaves the question unanswered for 5 s", async () => {
    const [socket] = await connectAll(1);
    const asked = nextEvent(socket, "ask"); // received, never answered
    const start = Date.now();
    const reply = await ack(socket, "ask", "silence");
    const elapsed = Date.now() - start;
    assert.deepEqual((await asked).slice(0, -1), ["silence"]);
    assert.equal(reply.length, 1);
    assert.equal(typeof reply[0]?.error, "string", JSON.stringify(reply));
    assert.ok(elapsed >= ASK_TIMEOUT_MS - 100, `answered after ${elapsed} ms, before the 5 s timeout`);
    socket.disconnect();
  });
});

test("malformed join, leave and publish are acked with {error}", async () => {
  const [socket] = await connectAll(1);
  for (const [event, ...args] of [
    ["join"],
    ["join", 42],
    ["join", { room: "r1" }],
    ["leave", ["r1"]],
    ["publish", "r1"],
    ["publish", 7, "payload"],
    ["publish", "r1", "payload", "extra"],
  ]) {
    const what = `${event}(${JSON.stringify(args).slice(1, -1)})`;
    const reply = await ack(socket, event, ...args);
    assert.equal(reply.length, 1, `${what} acks one argument`);
    assert.equal(typeof reply[0]?.error, "string", `${what} → ${JSON.stringify(reply)}`);
    assert.notEqual(reply[0].error, "");
  }
  socket.disconnect();
});

test("events sent without an ack are handled and leave the server working", async () => {
  const [socket] = await connectAll(1);
  const messages = new Recorder(socket, "message");
  socket.emit("join", "no-ack");
  socket.emit("join", 42);
  socket.emit("publish", "no-ack", "hello");
  socket.emit("echo", "x");
  socket.emit("ask", "x");
  socket.emit("leave", "no-ack");
  assert.deepEqual(await ack(socket, "echo", "still here"), ["still here"]);
  assert.deepEqual(messages.received, [["no-ack", "hello"]]);
  socket.disconnect();
});

describe("its own process", () => {
  test("NODE_ID defaults to node-js-<port>", async () => {
    const own = await startPeer({ NODE_ID: "" });
    try {
      assert.equal(own.nodeId, `node-js-${own.listen.split(":").pop()}`);
      const { greeting } = await clients.connect(own.url, {}, "hello");
      assert.deepEqual(greeting, { node: own.nodeId });
    } finally {
      await stopPeer(own);
    }
  });

  test("SIGTERM closes the connected clients and exits 0", async () => {
    const own = await startPeer();
    try {
      const sockets = [
        ...(await connectAll(1, own.url, { transports: ["polling"] })),
        ...(await connectAll(1, own.url, { transports: ["websocket"] })),
      ];
      const disconnects = sockets.map((s) => nextEvent(s, "disconnect"));
      own.child.kill("SIGTERM");
      assert.deepEqual(await withTimeout(own.exited, 5_000, "waiting for the peer to exit"), { code: 0, signal: null });
      await Promise.all(disconnects);
    } finally {
      await stopPeer(own);
    }
  });

  test("a bad setting is refused at startup", async () => {
    await assert.rejects(startPeer({ PORT: "not-a-port" }), /peer exited \(\{"code":2/);
    await assert.rejects(startPeer({ DROP_EVERY: "-1" }), /DROP_EVERY must be/);
  });
});

describe("DROP_EVERY (the deliberately faulty mode)", () => {
  let faulty;
  before(async () => {
    faulty = await startPeer({ NODE_ID: "faulty", DROP_EVERY: "2" });
  });
  after(() => faulty && stopPeer(faulty));

  test("silently skips every 2nd delivery: a receiver gets fewer messages than published", async () => {
    const [sender, receiver] = await connectAll(2, faulty.url);
    const messages = new Recorder(receiver, "message");
    await ack(receiver, "join", "lossy");
    const count = 10;
    // Every publish is still acked as if delivered: the loss is silent.
    for (let i = 0; i < count; i++) assert.deepEqual(await ack(sender, "publish", "lossy", i), [{ node: "faulty" }]);
    await ack(receiver, "echo", "barrier");
    const got = messages.received.map(([, i]) => i);
    assert.ok(got.length < count, `received ${got.length} of ${count}: nothing was dropped`);
    // The drop counter is per process and this peer served nothing else: the receiver, the only
    // member, missed exactly the 2nd, 4th, … publish.
    assert.deepEqual(got, [0, 2, 4, 6, 8]);
    sender.disconnect();
    receiver.disconnect();
  });

  test("with the sender in the room too, the room as a whole misses deliveries", async () => {
    const [a, b] = await connectAll(2, faulty.url);
    const [aMessages, bMessages] = [a, b].map((s) => new Recorder(s, "message"));
    await ack(a, "join", "lossy-2");
    await ack(b, "join", "lossy-2");
    const count = 10;
    for (let i = 0; i < count; i++) await ack(a, "publish", "lossy-2", i);
    await ack(a, "echo", "barrier");
    await ack(b, "echo", "barrier");
    const delivered = aMessages.received.length + bMessages.received.length;
    assert.equal(delivered, count, `${delivered} of ${2 * count} deliveries: every 2nd should be dropped`);
    a.disconnect();
    b.disconnect();
  });
});

// ---------------------------------------------------------------------------------------------
// Cluster mode (REDIS_URL) and nginx in front of it.

/** How long a cross-process delivery through Redis may take before it counts as missing. */
const CROSS_MS = 10_000;
/** How long a test waits before concluding that a message does NOT come (it takes ~1 ms). */
const ABSENCE_MS = 500;

/** Two peers sharing the Redis at `redisUrl`, with node ids `<prefix>-1` and `<prefix>-2`. */
async function startPeerPair(redisUrl, prefix) {
  const env = (i) => ({ NODE_ID: `${prefix}-${i}`, ...(redisUrl ? { REDIS_URL: redisUrl } : {}) });
  const started = await Promise.allSettled([startPeer(env(1)), startPeer(env(2))]);
  const peers = started.filter((s) => s.status === "fulfilled").map((s) => s.value);
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.all(peers.map(stopPeer));
    throw failed.reason;
  }
  return peers;
}

/** Resolves with the first line of `peer`'s output matching `pattern` (stderr is read apart from stdout). */
async function waitForLine(peer, pattern, timeoutMs = 5_000) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const line = peer.lines.find((l) => pattern.test(l));
    if (line) return line;
    if (performance.now() > deadline) {
      throw new Error(`no output line matching ${pattern} within ${timeoutMs} ms:\n${peer.lines.join("\n")}`);
    }
    await sleep(20);
  }
}

/**
 * `a` publishes `payload` into `room`, where `a` and `b` are members (on different peers): the
 * ack names `a`'s node, `a` gets its own copy, `b` gets exactly one. "Exactly" is proven with a
 * marker `a` publishes next: one sender's messages reach another process in order, so once the
 * marker is in, a second copy of `payload` would have been too.
 */
async function checkCrossDelivery(a, b, room, payload, marker) {
  const [aMessages, bMessages] = [a.socket, b.socket].map((s) => new Recorder(s, "message"));
  assert.deepEqual(await ack(a.socket, "publish", room, payload), [{ node: a.node }]);
  assert.deepEqual(comparable(await aMessages.wait()), comparable([room, payload]));
  await ack(a.socket, "publish", room, marker);
  await bMessages.wait((_, p) => p === marker, { timeoutMs: CROSS_MS, label: `marker ${marker} on ${b.node}` });
  assert.deepEqual(comparable(bMessages.received), comparable([[room, payload], [room, marker]]));
}

/** Connects to `url` and resolves with `{socket, node}`, the node being the one in `hello`. */
async function connectNode(url, opts = {}) {
  const { socket, greeting } = await clients.connect(url, opts, "hello");
  return { socket, node: greeting.node };
}

describe("REDIS_URL: several processes share rooms through @socket.io/redis-adapter", () => {
  let redis;
  let peers;
  before(async () => {
    redis = await startRedisServer();
    peers = await startPeerPair(redis.url, "redis");
  });
  after(async () => {
    clients.closeAll();
    await Promise.all((peers ?? []).map(stopPeer));
    await redis?.proc.shutdown();
  });

  test("says on stderr which adapter it uses, here and without REDIS_URL", async () => {
    for (const p of peers) await waitForLine(p, /^\[stderr\] node-socketio peer: adapter: @socket\.io\/redis-adapter on redis:\/\//);
    await waitForLine(peer, /^\[stderr\] node-socketio peer: adapter: in-memory/);
    // stdout still carries nothing but the listen line.
    assert.deepEqual(peers[0].ready, { listen: peers[0].listen, node_id: "redis-1" });
  });

  for (const [ta, tb] of [
    ["polling", "websocket"],
    ["websocket", "polling"],
  ]) {
    test(`a publish over ${ta} reaches a member on the other process (${tb}) exactly once, binary intact`, async () => {
      const a = await connectNode(peers[0].url, { transports: [ta] });
      const b = await connectNode(peers[1].url, { transports: [tb] });
      assert.deepEqual([a.node, b.node], ["redis-1", "redis-2"]);
      const room = `cross-${ta}`;
      assert.deepEqual(await ack(a.socket, "join", room), [{ room, node: "redis-1" }]);
      assert.deepEqual(await ack(b.socket, "join", room), [{ room, node: "redis-2" }]);
      const payload = { text: "héllo", n: [1, 2.5, null], image: Buffer.from([0, 1, 254, 255]) };
      await checkCrossDelivery(a, b, room, payload, "marker-1");
      // And the other way round.
      await checkCrossDelivery(b, a, room, "from b", "marker-2");
      a.socket.disconnect();
      b.socket.disconnect();
    });
  }

  test("every message of a sender on one process arrives once and in order on the other; other rooms get none", async () => {
    const sender = await connectNode(peers[0].url);
    const member = await connectNode(peers[1].url);
    const outsider = await connectNode(peers[1].url);
    const [memberMessages, outsiderMessages] = [member.socket, outsider.socket].map((s) => new Recorder(s, "message"));
    await ack(member.socket, "join", "ordered");
    await ack(outsider.socket, "join", "elsewhere");
    const count = 50;
    for (let i = 0; i < count; i++) assert.deepEqual(await ack(sender.socket, "publish", "ordered", i), [{ node: "redis-1" }]);
    await memberMessages.wait((_, i) => i === count - 1, { timeoutMs: CROSS_MS });
    // The outsider's room gets a marker after the rest: it comes after anything misrouted.
    await ack(sender.socket, "publish", "elsewhere", "marker");
    await outsiderMessages.wait((_, p) => p === "marker", { timeoutMs: CROSS_MS });
    assert.deepEqual(
      memberMessages.received,
      Array.from({ length: count }, (_, i) => ["ordered", i]),
    );
    assert.deepEqual(outsiderMessages.received, [["elsewhere", "marker"]]);
    for (const c of [sender, member, outsider]) c.socket.disconnect();
  });

  test("after leave, the other process's member gets nothing more", async () => {
    const a = await connectNode(peers[0].url);
    const b = await connectNode(peers[1].url);
    const bMessages = new Recorder(b.socket, "message");
    await ack(a.socket, "join", "leaving");
    await ack(b.socket, "join", "leaving");
    await ack(b.socket, "join", "barrier");
    await ack(a.socket, "publish", "leaving", "before");
    await bMessages.wait((_, p) => p === "before", { timeoutMs: CROSS_MS });
    await ack(b.socket, "leave", "leaving");
    await ack(a.socket, "publish", "leaving", "after");
    await ack(a.socket, "publish", "barrier", "marker");
    await bMessages.wait((_, p) => p === "marker", { timeoutMs: CROSS_MS });
    assert.deepEqual(bMessages.received, [["leaving", "before"], ["barrier", "marker"]]);
    a.socket.disconnect();
    b.socket.disconnect();
  });

  test("SIGTERM closes the clients and exits 0 in cluster mode too", async () => {
    const own = await startPeer({ NODE_ID: "redis-term", REDIS_URL: redis.url });
    try {
      const { socket } = await connectNode(own.url);
      const disconnected = nextEvent(socket, "disconnect");
      own.child.kill("SIGTERM");
      assert.deepEqual(await withTimeout(own.exited, 5_000, "waiting for the peer to exit"), { code: 0, signal: null });
      await disconnected;
    } finally {
      await stopPeer(own);
    }
  });

  test("a REDIS_URL that is not redis://, or DROP_EVERY with REDIS_URL, is refused at startup", async () => {
    await assert.rejects(startPeer({ REDIS_URL: "http://127.0.0.1:1" }), /peer exited \(\{"code":2[^]*REDIS_URL .* is unusable/);
    await assert.rejects(startPeer({ REDIS_URL: redis.url, DROP_EVERY: "2" }), /DROP_EVERY .* cannot be combined with REDIS_URL/);
  });
});

describe("without REDIS_URL", () => {
  test("two processes do NOT share rooms (what REDIS_URL changes is real)", async () => {
    // A Redis is running, as in cluster mode: only the missing REDIS_URL differs.
    const redis = await startRedisServer();
    let peers = [];
    try {
      peers = await startPeerPair(null, "alone");
      const a = await connectNode(peers[0].url);
      const b = await connectNode(peers[1].url);
      const [aMessages, bMessages] = [a.socket, b.socket].map((s) => new Recorder(s, "message"));
      await ack(a.socket, "join", "shared?");
      await ack(b.socket, "join", "shared?");
      assert.deepEqual(await ack(a.socket, "publish", "shared?", "from a"), [{ node: "alone-1" }]);
      assert.deepEqual(await ack(b.socket, "publish", "shared?", "from b"), [{ node: "alone-2" }]);
      await aMessages.wait((_, p) => p === "from a");
      await bMessages.wait((_, p) => p === "from b");
      // Through Redis the other copy would take about a millisecond.
      await sleep(ABSENCE_MS);
      assert.deepEqual(aMessages.received, [["shared?", "from a"]]);
      assert.deepEqual(bMessages.received, [["shared?", "from b"]]);
      a.socket.disconnect();
      b.socket.disconnect();
    } finally {
      await Promise.all(peers.map(stopPeer));
      await redis.proc.shutdown();
    }
  });
});

describe("REDIS_URL: Redis going away and coming back", () => {
  test("the peers keep serving their own members, log the loss, and share rooms again once Redis is back", async () => {
    let redis = await startRedisServer();
    const port = redis.port;
    let peers = [];
    try {
      peers = await startPeerPair(redis.url, "outage");
      const a = await connectNode(peers[0].url);
      const b = await connectNode(peers[1].url);
      const [aMessages, bMessages] = [a.socket, b.socket].map((s) => new Recorder(s, "message"));
      await ack(a.socket, "join", "r");
      await ack(b.socket, "join", "r");
      await checkCrossDelivery(a, b, "r", "before", "marker-before");

      await redis.proc.shutdown();
      await waitForLine(peers[0], /\[stderr\] node-socketio peer: redis (publisher|subscriber) .*: /);
      // Acked and delivered on its own process; lost for the other (logged, not queued).
      for (let i = 0; i < 5; i++) assert.deepEqual(await ack(a.socket, "publish", "r", `during-${i}`), [{ node: "outage-1" }]);
      await aMessages.wait((_, p) => p === "during-4");
      assert.equal(peers[0].exitStatus, null, "the peer must survive losing Redis");
      assert.equal(peers[1].exitStatus, null, "the peer must survive losing Redis");

      redis = await startRedisServer({ port });
      // The clients reconnect (≤ 500 ms between tries) and subscribe again: probe until through.
      const deadline = performance.now() + 15_000;
      for (let i = 0; ; i++) {
        await ack(a.socket, "publish", "r", `probe-${i}`);
        if (await bMessages.wait((_, p) => p === `probe-${i}`, { timeoutMs: 200 }).then(() => true, () => false)) break;
        assert.ok(performance.now() < deadline, `no cross-process delivery 15 s after Redis came back\n${peers[0].lines.join("\n")}`);
      }
      await waitForLine(peers[0], /redis (publisher|subscriber) .*: connected again/);
      assert.ok(!bMessages.received.some(([, p]) => String(p).startsWith("during-")), "publishes made while Redis was away arrived late");
      a.socket.disconnect();
      b.socket.disconnect();
    } finally {
      await Promise.all(peers.map(stopPeer));
      await redis.proc.shutdown();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// nginx (loadtest/peers/nginx/nginx.conf.template) in front of two cluster-mode peers.

/** The Debian package with the nginx binary (/usr/sbin/nginx); ./scripts/setup installs it. */
const NGINX_PACKAGE = "nginx";
const NGINX_TEMPLATE = join(repoRoot, "loadtest/peers/nginx/nginx.conf.template");

/** `$NGINX`, else `nginx` on PATH or in the sbin directories PATH may lack; null if none. */
function findNginx() {
  if (process.env.NGINX) return existsSync(process.env.NGINX) ? process.env.NGINX : null;
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  return dirs.map((dir) => join(dir, "nginx")).find((path) => path.startsWith("/") && existsSync(path)) ?? null;
}

/** The template with its three placeholders filled in, as README.md's `envsubst` line does. */
function renderNginxConf(vars) {
  const text = readFileSync(NGINX_TEMPLATE, "utf8").replace(/\$\{(LISTEN_PORT|PEER1_PORT|PEER2_PORT)\}/g, (_, name) =>
    String(vars[name]),
  );
  assert.doesNotMatch(text, /\$\{/, "the template has a placeholder this test does not fill in");
  return text;
}

/** Options making socket.io-client connect from `localAddress` (polling and WebSocket alike). */
const fromAddress = (localAddress) => ({ agent: new http.Agent({ localAddress }), localAddress });

describe("nginx in front of two REDIS_URL peers (loadtest/peers/nginx)", () => {
  let nginxBin;
  let prefix;
  let redis;
  let peers;
  let nginx;
  let url;
  /** A client source address that nginx routes to each peer: node id → 127.0.0.x. */
  const routes = new Map();

  before(async () => {
    nginxBin = findNginx();
    if (!nginxBin) {
      throw new Error(
        `nginx not found (${process.env.NGINX ? `NGINX=${process.env.NGINX}` : "not on PATH nor in /usr/sbin"}): install Debian's \`${NGINX_PACKAGE}\` package ` +
          `(apt-get install -y --no-install-recommends ${NGINX_PACKAGE}; ./scripts/setup should) or set NGINX to the binary`,
      );
    }
    prefix = mkdtempSync(join(tmpdir(), "corral-nginx-"));
    redis = await startRedisServer();
    peers = await startPeerPair(redis.url, "nginx");
    const conf = join(prefix, "nginx.conf");
    const ports = { PEER1_PORT: peers[0].listen.split(":").pop(), PEER2_PORT: peers[1].listen.split(":").pop() };
    nginx = await startBroker("nginx", nginxBin, (port) => {
      writeFileSync(conf, renderNginxConf({ ...ports, LISTEN_PORT: port }));
      return ["-e", "stderr", "-p", prefix, "-c", conf];
    });
    url = `http://127.0.0.1:${nginx.port}`;

    // `hash $remote_addr consistent` puts each address on one peer: find one for each.
    for (let i = 2; i < 64 && routes.size < 2; i++) {
      const address = `127.0.0.${i}`;
      const { socket, node } = await connectNode(url, { transports: ["websocket"], ...fromAddress(address) });
      socket.disconnect();
      if (!routes.has(node)) routes.set(node, address);
    }
  });

  after(async () => {
    clients.closeAll();
    await nginx?.proc.shutdown();
    await Promise.all((peers ?? []).map(stopPeer));
    await redis?.proc.shutdown();
    if (prefix) rmSync(prefix, { recursive: true, force: true });
  });

  test("nginx -t accepts the rendered template", () => {
    const conf = join(prefix, "nginx.conf");
    const check = spawnSync(nginxBin, ["-e", "stderr", "-t", "-p", prefix, "-c", conf], { encoding: "utf8" });
    assert.equal(check.status, 0, `nginx -t failed:\n${check.stderr}`);
    assert.match(check.stderr, /test is successful/);
  });

  test("spreads loopback clients over both peers by source address, and keeps each address on its peer", async () => {
    assert.deepEqual([...routes.keys()].sort(), ["nginx-1", "nginx-2"], `addresses 127.0.0.2-63 all went to one peer: ${JSON.stringify([...routes])}`);
    for (const [node, address] of routes) {
      for (const transports of [["polling"], ["websocket"]]) {
        const again = await connectNode(url, { transports, ...fromAddress(address) });
        assert.equal(again.node, node, `${address} over ${transports} went to ${again.node}, before to ${node}`);
        again.socket.disconnect();
      }
    }
  });

  for (const [what, opts] of [
    ["default transports (polling, then the upgrade to WebSocket)", {}],
    ["WebSocket only", { transports: ["websocket"] }],
  ]) {
    test(`${what}: a publish crosses from one peer to the other through nginx`, async () => {
      const [a, b] = await Promise.all(
        ["nginx-1", "nginx-2"].map((node) => connectNode(url, { ...opts, ...fromAddress(routes.get(node)) })),
      );
      assert.deepEqual([a.node, b.node], ["nginx-1", "nginx-2"]);
      for (const { socket } of [a, b]) {
        // The upgrade goes through nginx's Upgrade/Connection headers (or fails back to polling).
        if (socket.io.engine.transport.name !== "websocket") await nextEvent(socket.io.engine, "upgrade");
        assert.equal(socket.io.engine.transport.name, "websocket");
      }
      const room = `via-nginx-${opts.transports ? "ws" : "default"}`;
      await ack(a.socket, "join", room);
      await ack(b.socket, "join", room);
      await checkCrossDelivery(a, b, room, { n: 1, bytes: Buffer.from("through nginx") }, "marker-1");
      await checkCrossDelivery(b, a, room, "and back", "marker-2");
      a.socket.disconnect();
      b.socket.disconnect();
    });
  }

  test("long-polling only: large payloads both ways, across peers", async () => {
    const [a, b] = await Promise.all(
      ["nginx-1", "nginx-2"].map((node) => connectNode(url, { transports: ["polling"], ...fromAddress(routes.get(node)) })),
    );
    assert.deepEqual([a.node, b.node], ["nginx-1", "nginx-2"]);
    await ack(a.socket, "join", "big");
    await ack(b.socket, "join", "big");
    // 300 kB in a POST through nginx to peer 1, then in a long-polling GET from peer 2.
    await checkCrossDelivery(a, b, "big", "x".repeat(300_000), "marker");
    assert.equal(a.socket.io.engine.transport.name, "polling");
    a.socket.disconnect();
    b.socket.disconnect();
  });
});
