// A Node.js socket.io server speaking Corral's bench protocol (docs/loadtest.md), so the load
// tester and the benchmarks can measure a reference Socket.IO server side by side with Corral.
//
// Configured by environment:
//   PORT        port to listen on; 0 (the default) lets the OS pick one
//   HOST        address to listen on (default 127.0.0.1)
//   NODE_ID     the id reported in `hello`, `join` and `publish` answers (default node-js-<port>)
//   DROP_EVERY  N > 0: a deliberately FAULTY mode, see `dropEvery` below (0 or unset: off)
//   REDIS_URL   e.g. redis://127.0.0.1:6379: cluster mode, see below (unset or empty: off)
//
// Cluster mode: with REDIS_URL set, rooms and broadcasts go through `@socket.io/redis-adapter`,
// so several of these processes on one Redis act as one server: a `publish` reaches the room's
// members on every process, each exactly once. Put them behind a proxy with sticky sessions
// (loadtest/peers/nginx) or give the load tester one --url per process. Without REDIS_URL the
// in-memory adapter of socket.io is used and nothing of Redis is even loaded. Startup waits for
// Redis (up to REDIS_CONNECT_TIMEOUT_MS, then exits 2); once up, losing Redis is logged on
// stderr and the clients reconnect on their own; publishes meanwhile reach this process's own
// members only.
//
// Once listening it prints one JSON line on stdout, e.g.
//   {"listen":"127.0.0.1:40123","node_id":"node-js-40123"}
// and nothing else there (diagnostics, including one line naming the adapter in use, go to
// stderr). SIGTERM (or SIGINT) closes every connection and exits 0.

import { createServer } from "node:http";
import { Server } from "socket.io";

/** How long `ask` waits for the client's answer (the protocol says 5 s). */
const ASK_TIMEOUT_MS = 5_000;
/** How long startup waits for Redis to accept both connections before giving up. */
const REDIS_CONNECT_TIMEOUT_MS = 10_000;

function fail(why) {
  console.error(`node-socketio peer: ${why}`);
  process.exit(2);
}

/** `process.env[name]` as an integer in [min, max], or `fallback` when unset or empty. */
function intEnv(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    fail(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(raw)}`);
  }
  return value;
}

const port = intEnv("PORT", 0, 0, 65535);
const host = process.env.HOST || "127.0.0.1";

// !!! TEST FIXTURE, NOT A BENCHMARK SETTING !!!
// With DROP_EVERY=N the server counts every single delivery of a `message` (one room member
// receiving one publish) across the whole process and silently skips every Nth one: that
// receiver never gets it while the other members do, and the publish is still acked as if all
// went well. It exists only so that tests can prove a completeness check really detects lost
// messages. Never measure a server running with it.
const dropEvery = intEnv("DROP_EVERY", 0, 0, Number.MAX_SAFE_INTEGER);
let deliveries = 0;
if (dropEvery) console.error(`node-socketio peer: FAULTY MODE: dropping every ${dropEvery}th message delivery`);

const redisUrl = process.env.REDIS_URL || "";
// The faulty mode counts and skips deliveries to this process's own sockets; messages relayed
// from other processes would bypass it, so its numbers would mean nothing in a cluster.
if (dropEvery && redisUrl) fail("DROP_EVERY is a single-process test fixture and cannot be combined with REDIS_URL");

/** `url` with its password (if any) masked, for logs. */
function redactUrl(url) {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.href;
  } catch {
    return url;
  }
}

/**
 * Connects the two Redis clients the adapter needs (one publishes, one subscribes) and resolves
 * with `{adapter, subClient, shown}` (the adapter factory for `new Server`, the subscriber, the
 * URL for logs) once both are connected. Exits 2 if REDIS_URL is unusable or Redis does not
 * answer within REDIS_CONNECT_TIMEOUT_MS.
 */
async function redisAdapter(url) {
  const shown = redactUrl(url);
  // Loaded only here: without REDIS_URL the peer is exactly the single-process server it was.
  const [{ createClient }, { createAdapter }] = await Promise.all([import("redis"), import("@socket.io/redis-adapter")]);
  let pubClient;
  try {
    // No offline queue: while Redis is away a PUBLISH fails at once instead of piling up in
    // memory and reaching the other processes late, long after the load tester gave up on it.
    pubClient = createClient({ url, disableOfflineQueue: true });
  } catch (err) {
    fail(`REDIS_URL ${JSON.stringify(shown)} is unusable: ${err.message}`);
  }
  const subClient = pubClient.duplicate();
  let lastError = null;
  for (const [role, client] of [["publisher", pubClient], ["subscriber", subClient]]) {
    // Without an `error` listener a lost connection would crash the process. The clients retry
    // every ≤ 500 ms while Redis is away: log each distinct error once per outage, not per try.
    let logged = null;
    client.on("error", (err) => {
      lastError = err;
      if (err.message === logged) return;
      logged = err.message;
      console.error(`node-socketio peer: redis ${role} (${shown}): ${err.message}`);
    });
    client.on("ready", () => {
      if (logged !== null) console.error(`node-socketio peer: redis ${role} (${shown}): connected again`);
      logged = null;
    });
  }
  // The adapter does not wait for (nor catch) its PUBLISHes: one failing while Redis is away
  // rejects a promise nobody handles, which would end the process. Log it instead, repeats of
  // the same error at most every 5 s (under load there is one per publish).
  const repeats = { message: null, at: 0, hidden: 0 };
  process.on("unhandledRejection", (err) => {
    const message = err?.message ?? String(err);
    const now = Date.now();
    if (message === repeats.message && now - repeats.at < 5_000) {
      repeats.hidden += 1;
      return;
    }
    const hidden = repeats.hidden ? ` (${repeats.hidden} more of the previous one not shown)` : "";
    Object.assign(repeats, { message, at: now, hidden: 0 });
    console.error(`node-socketio peer: unhandled rejection (a Redis command, typically): ${message}${hidden}`);
  });

  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no connection within ${REDIS_CONNECT_TIMEOUT_MS / 1000} s (last error: ${lastError?.message ?? "none"})`)),
      REDIS_CONNECT_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([Promise.all([pubClient.connect(), subClient.connect()]), deadline]);
  } catch (err) {
    fail(`cannot connect to Redis at ${shown}: ${err.message}`);
  } finally {
    clearTimeout(timer);
  }
  return { adapter: createAdapter(pubClient, subClient), subClient, shown };
}

const cluster = redisUrl ? await redisAdapter(redisUrl) : null;
const httpServer = createServer();
const io = new Server(httpServer, cluster ? { adapter: cluster.adapter } : {});
if (cluster) {
  // Creating the server created the main namespace and with it the adapter, which sent its
  // SUBSCRIBEs on the subscriber connection without waiting for them. Redis answers one
  // connection's commands in order, so once a SUBSCRIBE of our own sent after them is
  // confirmed, theirs are too: from the listen line on, no publish of another process is missed.
  const barrier = `corral-peer-startup#${process.pid}#${Date.now()}`;
  try {
    await cluster.subClient.subscribe(barrier, () => {});
    await cluster.subClient.unsubscribe(barrier);
  } catch (err) {
    fail(`cannot subscribe on Redis at ${cluster.shown}: ${err.message}`);
  }
  console.error(`node-socketio peer: adapter: @socket.io/redis-adapter on ${cluster.shown} (rooms and broadcasts shared with every peer on it)`);
} else {
  console.error("node-socketio peer: adapter: in-memory (this process only; set REDIS_URL to share rooms between processes)");
}
// Set once listening: the default depends on the port the OS picked.
let node;

/**
 * Splits an event's arguments into the data and the ack callback socket.io passes last when
 * the client asked for one; a client that did not gets a no-op, so handlers never throw.
 */
function withAck(args) {
  const ack = typeof args.at(-1) === "function" ? args.pop() : () => {};
  return [args, ack];
}

/** Emits `message (room, payload)` to every socket in `room`, the publisher included if in it. */
function deliver(room, payload) {
  if (!dropEvery) {
    io.to(room).emit("message", room, payload);
    return;
  }
  // Faulty mode: one emit per member so that single deliveries can be skipped. The room's
  // socket ids come in join order, which makes the skipped deliveries predictable in tests.
  for (const id of io.of("/").adapter.rooms.get(room) ?? []) {
    deliveries += 1;
    if (deliveries % dropEvery === 0) continue;
    io.of("/").sockets.get(id)?.emit("message", room, payload);
  }
}

io.on("connection", (socket) => {
  socket.emit("hello", { node });

  socket.on("join", (...raw) => {
    const [[room], ack] = withAck(raw);
    if (typeof room !== "string") return ack({ error: "join takes one argument: the room name (a string)" });
    socket.join(room);
    ack({ room, node });
  });

  socket.on("leave", (...raw) => {
    const [[room], ack] = withAck(raw);
    if (typeof room !== "string") return ack({ error: "leave takes one argument: the room name (a string)" });
    socket.leave(room);
    ack({ room });
  });

  socket.on("publish", (...raw) => {
    const [args, ack] = withAck(raw);
    const [room, payload] = args;
    if (args.length !== 2 || typeof room !== "string") {
      return ack({ error: "publish takes two arguments: the room name and a payload" });
    }
    // Queued to every member before the ack, as Corral does: a member that gets the ack of a
    // later request on its own socket has already received this message. In cluster mode that
    // holds for this process's members; the other processes get it through Redis, which keeps
    // one process's publishes in order.
    deliver(room, payload);
    ack({ node });
  });

  socket.on("echo", (...raw) => {
    const [args, ack] = withAck(raw);
    ack(...args);
  });

  // A server-to-client ack round trip: ask the sender, relay whatever it answers.
  socket.on("ask", (...raw) => {
    const [args, ack] = withAck(raw);
    socket.timeout(ASK_TIMEOUT_MS).emit("ask", ...args, (err, ...answer) => {
      if (err) ack({ error: `the client did not answer within ${ASK_TIMEOUT_MS / 1000} s` });
      else ack(...answer);
    });
  });
});

httpServer.on("error", (err) => fail(`cannot listen on ${host}:${port}: ${err.message}`));
httpServer.listen(port, host, () => {
  const { address, port: bound } = httpServer.address();
  node = process.env.NODE_ID || `node-js-${bound}`;
  const listen = address.includes(":") ? `[${address}]:${bound}` : `${address}:${bound}`;
  // The one line scripts and tests wait for.
  process.stdout.write(`${JSON.stringify({ listen, node_id: node })}\n`);
});

function shutdown() {
  // io.close() disconnects every client and closes the HTTP server; the timer only covers a
  // connection that would keep the server from closing. unref: it must not delay a clean exit.
  setTimeout(() => process.exit(0), 3_000).unref();
  io.close(() => process.exit(0));
}
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);
