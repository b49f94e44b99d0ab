// The Node.js socket.io peer server of the load tester (loadtest/peers/node-socketio): it must
// speak the bench protocol of docs/loadtest.md exactly as a Corral node does, start and stop
// the way scripts expect, and its DROP_EVERY fault mode must really lose messages.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { repoRoot } from "./support/node.mjs";
import { ClientPool, Recorder, ack, checkAsk, comparable, connected, nextEvent, withTimeout } from "./support/clients.mjs";

const PEER_DIR = join(repoRoot, "loadtest/peers/node-socketio");
const NODE_ID = "peer-test-1";
/** How long the peer may take to print its listen line. */
const START_TIMEOUT_MS = 20_000;
/** Environment variables the peer reads. */
const PEER_SETTINGS = ["PORT", "HOST", "NODE_ID", "DROP_EVERY"];
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
