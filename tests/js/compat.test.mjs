// Compatibility of a Corral node (bench app) with the official socket.io-client: each transport
// alone, the polling→websocket upgrade, acks in both directions, binary attachments, and rooms.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { startNode, stopAllNodes, withNodeLogs } from "./support/node.mjs";
import { ClientPool, Recorder, WAIT_MS, ack, checkAsk, comparable, connected, nextEvent } from "./support/clients.mjs";

const NODE_ID = "compat-1";
const clients = new ClientPool();
let node;

before(async () => {
  node = await startNode({ app: "bench", nodeId: NODE_ID });
});

after(async () => {
  clients.closeAll();
  await stopAllNodes();
});

/** Arguments of every JSON type, several at once. */
const JSON_ARGS = [1, "two", { three: [3, 3.5, -4] }, null, true, false, "héllo ✓ 🚀", []];

describe("polling only", () => {
  test(
    "connects, greets with the node id, echoes several arguments and never upgrades",
    withNodeLogs(async () => {
      const socket = clients.open(node.url(), { transports: ["polling"] });
      const engine = socket.io.engine;
      let upgradeAttempts = 0;
      engine.on("upgrading", () => upgradeAttempts++);
      const hello = nextEvent(socket, "hello");
      await connected(socket);
      assert.deepEqual((await hello)[0], { node: NODE_ID });
      assert.equal(engine.transport.name, "polling");

      assert.deepEqual(await ack(socket, "echo", ...JSON_ARGS), JSON_ARGS);
      assert.deepEqual(await ack(socket, "echo", "again"), ["again"]);

      // An upgrade probe starts as soon as the engine opens; two round trips later none began.
      assert.equal(upgradeAttempts, 0);
      assert.equal(engine.transport.name, "polling");
      socket.disconnect();
    }),
  );
});

describe("websocket only", () => {
  let wsNode;
  before(async () => {
    wsNode = await startNode({ app: "bench", nodeId: "compat-ws", args: ["--transports", "websocket"] });
  });
  after(() => wsNode?.stop());

  test(
    "a websocket client connects and echoes",
    withNodeLogs(async () => {
      const { socket, greeting } = await clients.connect(wsNode.url(), { transports: ["websocket"] }, "hello");
      assert.deepEqual(greeting, { node: "compat-ws" });
      assert.equal(socket.io.engine.transport.name, "websocket");
      assert.deepEqual(await ack(socket, "echo", ...JSON_ARGS), JSON_ARGS);
      socket.disconnect();
    }),
  );

  test(
    "a polling-only client cannot connect",
    withNodeLogs(async () => {
      const socket = clients.open(wsNode.url(), { transports: ["polling"] });
      await assert.rejects(connected(socket), /connect_error/);
      assert.equal(socket.connected, false);
      socket.disconnect();
    }),
  );
});

test(
  "default transports: starts on polling, upgrades to websocket, and still works after",
  withNodeLogs(async () => {
    const socket = clients.open(node.url());
    const engine = socket.io.engine;
    // The engine is created synchronously by io(): this is the transport it opens with.
    assert.equal(engine.transport.name, "polling");
    const upgraded = nextEvent(engine, "upgrade", { label: 'waiting for the engine "upgrade" event' });
    await connected(socket);
    const [transport] = await upgraded;
    assert.equal(transport.name, "websocket");
    assert.equal(engine.transport.name, "websocket");

    assert.deepEqual(await ack(socket, "echo", ...JSON_ARGS), JSON_ARGS);
    const bytes = Uint8Array.of(0, 1, 2, 253, 254, 255);
    assert.deepEqual(comparable(await ack(socket, "echo", bytes)), comparable([bytes]));
    socket.disconnect();
  }),
);

for (const transport of ["polling", "websocket"]) {
  describe(`acks over ${transport}`, () => {
    test(
      "client → server: emitWithAck and a multi-argument ack",
      withNodeLogs(async () => {
        const { socket } = await clients.connect(node.url(), { transports: [transport] });
        assert.equal(await socket.timeout(WAIT_MS).emitWithAck("echo", "ping"), "ping");
        assert.deepEqual(await ack(socket, "echo", "a", 2, { c: [3] }), ["a", 2, { c: [3] }]);
        assert.deepEqual(await ack(socket, "echo"), []);
        socket.disconnect();
      }),
    );

    test(
      "server → client: `ask` asks the client with an ack and relays its answer",
      withNodeLogs(async () => {
        const { socket } = await clients.connect(node.url(), { transports: [transport] });
        await checkAsk(socket);
        socket.disconnect();
      }),
    );
  });

  describe(`binary over ${transport}`, () => {
    test(
      "echo returns top-level and nested binary byte-identical",
      withNodeLogs(async () => {
        const { socket } = await clients.connect(node.url(), { transports: [transport] });
        const every = Uint8Array.from({ length: 256 }, (_, i) => i);
        // Below the 100 kB payload limit even base64-encoded in a polling request.
        const big = randomBytes(32 * 1024);
        const args = [
          every,
          { text: "x", nested: { buf: Buffer.from("héllo"), list: [1, Buffer.from([0, 255]), "y"] } },
          big,
          new Uint8Array(0),
        ];
        const reply = await ack(socket, "echo", ...args);
        assert.deepEqual(comparable(reply), comparable(args));
        socket.disconnect();
      }),
    );

    test(
      "publish delivers a binary payload to another room member",
      withNodeLogs(async () => {
        const room = `binary-${transport}`;
        const { socket: sender } = await clients.connect(node.url(), { transports: [transport] });
        const { socket: receiver } = await clients.connect(node.url(), { transports: [transport] });
        const messages = new Recorder(receiver, "message");
        await ack(sender, "join", room);
        await ack(receiver, "join", room);

        const payload = { image: randomBytes(1024), caption: "a picture", parts: [Uint8Array.of(7, 8, 9)] };
        assert.deepEqual(await ack(sender, "publish", room, payload), [{ node: NODE_ID }]);
        const received = await messages.wait();
        assert.deepEqual(comparable(received), comparable([room, payload]));
        sender.disconnect();
        receiver.disconnect();
      }),
    );
  });
}

describe("rooms", () => {
  test(
    "publish reaches every member of the room, sender included, and no one else",
    withNodeLogs(async () => {
      const [a, b, c] = await Promise.all([1, 2, 3].map(() => clients.connect(node.url()))).then((all) =>
        all.map(({ socket }) => socket),
      );
      const [aMessages, bMessages, cMessages] = [a, b, c].map((s) => new Recorder(s, "message"));
      assert.deepEqual(await ack(a, "join", "r1"), [{ room: "r1", node: NODE_ID }]);
      assert.deepEqual(await ack(b, "join", "r1"), [{ room: "r1", node: NODE_ID }]);
      assert.deepEqual(await ack(c, "join", "r2"), [{ room: "r2", node: NODE_ID }]);

      assert.deepEqual(await ack(a, "publish", "r1", "hi"), [{ node: NODE_ID }]);
      assert.deepEqual(await aMessages.wait(), ["r1", "hi"]);
      assert.deepEqual(await bMessages.wait(), ["r1", "hi"]);
      // The server queued the broadcast before acking the publish, and one client's packets
      // arrive in order: once c's own echo comes back, a message for c would have come first.
      await ack(c, "echo", "barrier");
      assert.deepEqual(cMessages.received, []);
      for (const s of [a, b, c]) s.disconnect();
    }),
  );

  test(
    "leave stops delivery to the leaver only",
    withNodeLogs(async () => {
      const { socket: a } = await clients.connect(node.url());
      const { socket: b } = await clients.connect(node.url());
      const [aMessages, bMessages] = [a, b].map((s) => new Recorder(s, "message"));
      await ack(a, "join", "r3");
      await ack(b, "join", "r3");
      await ack(a, "publish", "r3", "before");
      await bMessages.wait((_, text) => text === "before");

      assert.deepEqual(await ack(b, "leave", "r3"), [{ room: "r3" }]);
      await ack(a, "publish", "r3", "after");
      await aMessages.wait((_, text) => text === "after");
      await ack(b, "echo", "barrier"); // as above: anything sent to b arrived before this ack
      assert.deepEqual(bMessages.received, [["r3", "before"]]);
      a.disconnect();
      b.disconnect();
    }),
  );

  test(
    "malformed join, leave and publish are answered with {error}",
    withNodeLogs(async () => {
      const { socket } = await clients.connect(node.url());
      for (const [event, ...args] of [
        ["join", 42],
        ["join", { room: "r1" }],
        ["leave", ["r1"]],
        ["publish", "r1"],
        ["publish", 7, "payload"],
      ]) {
        const reply = await ack(socket, event, ...args);
        assert.equal(reply.length, 1, `${event}(${JSON.stringify(args)}) acks one argument`);
        assert.equal(typeof reply[0]?.error, "string", `${event}(${JSON.stringify(args)}) → ${JSON.stringify(reply)}`);
        assert.notEqual(reply[0].error, "");
      }
      socket.disconnect();
    }),
  );
});
