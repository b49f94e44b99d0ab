// A Node.js socket.io server speaking Corral's bench protocol (docs/loadtest.md), so the load
// tester and the benchmarks can measure a reference Socket.IO server side by side with Corral.
//
// Configured by environment:
//   PORT        port to listen on; 0 (the default) lets the OS pick one
//   HOST        address to listen on (default 127.0.0.1)
//   NODE_ID     the id reported in `hello`, `join` and `publish` answers (default node-js-<port>)
//   DROP_EVERY  N > 0: a deliberately FAULTY mode, see `dropEvery` below (0 or unset: off)
//
// Once listening it prints one JSON line on stdout, e.g.
//   {"listen":"127.0.0.1:40123","node_id":"node-js-40123"}
// and nothing else there (diagnostics go to stderr). SIGTERM (or SIGINT) closes every connection
// and exits 0.

import { createServer } from "node:http";
import { Server } from "socket.io";

/** How long `ask` waits for the client's answer (the protocol says 5 s). */
const ASK_TIMEOUT_MS = 5_000;

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

const httpServer = createServer();
const io = new Server(httpServer);
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
    // later request on its own socket has already received this message.
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
