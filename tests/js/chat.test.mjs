// The chat app's protocol as the official socket.io-client sees it: greeting, join validation,
// presence with member counts, and who gets a chat message (the room, minus the sender).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { startNode, stopAllNodes, withNodeLogs } from "./support/node.mjs";
import { ClientPool, Recorder, ack } from "./support/clients.mjs";

const NODE_ID = "chat-1";
const clients = new ClientPool();
let node;

before(async () => {
  node = await startNode({ app: "chat", nodeId: NODE_ID });
});

after(async () => {
  clients.closeAll();
  await stopAllNodes();
});

/** A connected chat client, greeted with `welcome`. */
async function member() {
  const { socket, greeting } = await clients.connect(node.url(), {}, "welcome");
  assert.deepEqual(greeting, { node: NODE_ID });
  return socket;
}

/** Asserts an ack is a single `{error: "<non-empty text>"}`. */
function assertError(reply, what) {
  assert.equal(reply.length, 1, `${what}: ${JSON.stringify(reply)}`);
  assert.deepEqual(Object.keys(reply[0] ?? {}), ["error"], `${what}: ${JSON.stringify(reply)}`);
  assert.ok(typeof reply[0].error === "string" && reply[0].error.length > 0, `${what}: ${JSON.stringify(reply)}`);
}

test(
  "join validation: a blank nickname is refused with {error} and joins nothing",
  withNodeLogs(async () => {
    const socket = await member();
    assertError(await ack(socket, "join", { nickname: "", room: "v1" }), "empty nickname");
    assertError(await ack(socket, "join", { nickname: "   ", room: "v1" }), "blank nickname");
    assertError(await ack(socket, "join", { room: "v1" }), "no nickname");
    assertError(await ack(socket, "join", { nickname: "x".repeat(33), room: "v1" }), "33-character nickname");
    // Refused joins leave the socket outside any room: sending is still refused.
    assertError(await ack(socket, "chat message", "hello?"), "chat message after a refused join");
    socket.disconnect();
  }),
);

test(
  "sending before joining is refused with {error}",
  withNodeLogs(async () => {
    const socket = await member();
    assertError(await ack(socket, "chat message", "too early"), "chat message before join");
    socket.disconnect();
  }),
);

test(
  "the room defaults to lobby",
  withNodeLogs(async () => {
    const socket = await member();
    assert.deepEqual(await ack(socket, "join", { nickname: "nomad" }), [{ room: "lobby", members: 1 }]);
    socket.disconnect();
  }),
);

test(
  "user joined / user left reach the rest of the room with the member count",
  withNodeLogs(async () => {
    const [alice, bob, carol] = await Promise.all([member(), member(), member()]);
    const aliceJoined = new Recorder(alice, "user joined");
    const aliceLeft = new Recorder(alice, "user left");
    const bobJoined = new Recorder(bob, "user joined");

    assert.deepEqual(await ack(alice, "join", { nickname: "alice", room: "p1" }), [{ room: "p1", members: 1 }]);
    assert.deepEqual(await ack(bob, "join", { nickname: "bob", room: "p1" }), [{ room: "p1", members: 2 }]);
    assert.deepEqual((await aliceJoined.wait())[0], { nickname: "bob", room: "p1", members: 2 });
    // "user joined" is broadcast before the join is acked; bob's ack arrived, so bob was skipped.
    assert.deepEqual(bobJoined.received, []);

    assert.deepEqual(await ack(carol, "join", { nickname: "carol", room: "p2" }), [{ room: "p2", members: 1 }]);
    // Anything the server sent alice before this ack has arrived (one client's packets are in order).
    await ack(alice, "join", { nickname: "alice", room: "p1" });
    assert.equal(aliceJoined.received.length, 1, `alice saw only bob: ${JSON.stringify(aliceJoined.received)}`);

    bob.disconnect();
    assert.deepEqual((await aliceLeft.wait())[0], { nickname: "bob", room: "p1", members: 1 });
    alice.disconnect();
    carol.disconnect();
  }),
);

test(
  "a chat message reaches the other members of the room, not the sender, not another room",
  withNodeLogs(async () => {
    const [alice, bob, carol] = await Promise.all([member(), member(), member()]);
    const [aliceGot, bobGot, carolGot] = [alice, bob, carol].map((s) => new Recorder(s, "chat message"));
    await ack(alice, "join", { nickname: "alice", room: "m1" });
    await ack(bob, "join", { nickname: "bob", room: "m1" });
    await ack(carol, "join", { nickname: "carol", room: "m2" });

    const sentAt = Date.now();
    assert.deepEqual(await ack(alice, "chat message", "  hello bob  "), [{ ok: true }]);
    // The broadcast is queued before the ack: had alice been included, it would have come first.
    assert.deepEqual(aliceGot.received, []);

    const [message] = await bobGot.wait();
    const receivedAt = Date.now();
    assert.deepEqual(Object.keys(message).sort(), ["nickname", "text", "time"]);
    assert.equal(message.nickname, "alice");
    assert.equal(message.text, "hello bob", "the text is trimmed");
    // Server epoch milliseconds; same host, same clock (a few ms of slack for rounding).
    assert.ok(
      Number.isInteger(message.time) && message.time >= sentAt - 5 && message.time <= receivedAt + 5,
      `time ${message.time} not within [${sentAt}, ${receivedAt}]`,
    );

    // carol's own ack comes after anything the server sent her earlier.
    assert.deepEqual(await ack(carol, "chat message", "anyone?"), [{ ok: true }]);
    assert.deepEqual(carolGot.received, []);
    assert.equal(bobGot.received.length, 1, "bob got alice's message once, and not carol's");
    for (const s of [alice, bob, carol]) s.disconnect();
  }),
);

test(
  "typing hints reach the rest of the room",
  withNodeLogs(async () => {
    const [alice, bob] = await Promise.all([member(), member()]);
    const bobTyping = new Recorder(bob, "typing");
    await ack(alice, "join", { nickname: "alice", room: "t1" });
    await ack(bob, "join", { nickname: "bob", room: "t1" });
    alice.emit("typing", true);
    assert.deepEqual((await bobTyping.wait())[0], { nickname: "alice", typing: true });
    alice.emit("typing", false);
    assert.deepEqual((await bobTyping.wait(({ typing }) => !typing))[0], { nickname: "alice", typing: false });
    alice.disconnect();
    bob.disconnect();
  }),
);
