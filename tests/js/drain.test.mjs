// The drain on SIGTERM as clients see it: readiness turns 503, the leave logic runs (chat "user
// left"), transports close without a Socket.IO disconnect so socket.io-client reconnects by
// itself, the process exits 0 within --drain-timeout, and the same clients land on a new node
// started on the same port.

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";

import { startNode, stopAllNodes, withNodeLogs } from "./support/node.mjs";
import { ClientPool, Recorder, WAIT_MS, ack, connected, nextEvent, withTimeout } from "./support/clients.mjs";

const DRAIN_TIMEOUT_MS = 5_000;
/**
 * Slack on top of --drain-timeout for the exit to be seen: the node's deadline starts when it
 * handles the signal, and the process still has to exit and be reaped.
 */
const EXIT_SLACK_MS = 500;
/** Client options: reconnect fast, forever, as a browser tab would. */
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300 };

const clients = new ClientPool();

after(async () => {
  clients.closeAll();
  await stopAllNodes();
});

/** Retries `probe` until it returns a truthy value; for states that have no event to await. */
async function eventually(probe, { timeoutMs, intervalMs = 20, what }) {
  const deadline = performance.now() + timeoutMs;
  let last;
  while (performance.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
}

test(
  "while draining, /readyz is 503 (draining), new handshakes are refused and connected clients are still served",
  withNodeLogs(async () => {
    // Long enough for the checks below on a loaded machine, which all must fit in it.
    const GRACE_MS = 2_000;
    const node = await startNode({
      app: "bench",
      nodeId: "drain-ready",
      args: ["--drain-timeout", `${DRAIN_TIMEOUT_MS}ms`, "--drain-grace", `${GRACE_MS}ms`],
    });
    const ready = await node.get("/readyz");
    assert.deepEqual([ready.status, ready.body.status, ready.body.node_id], [200, "ready", "drain-ready"]);
    const { socket } = await clients.connect(node.url(), { transports: ["websocket"] });

    const signalledAt = performance.now();
    node.terminate();
    // The signal is handled asynchronously: wait for its first visible effect, well within the grace.
    const notReady = await eventually(
      async () => {
        const res = await node.get("/readyz");
        return res.status === 503 ? res : null;
      },
      { timeoutMs: GRACE_MS / 2, what: "/readyz to turn 503 after SIGTERM" },
    );
    assert.deepEqual([notReady.body.status, notReady.body.reason], ["not_ready", "draining"]);

    const handshake = await node.get("/socket.io/?EIO=4&transport=polling");
    assert.equal(handshake.status, 503, `a new Engine.IO handshake while draining: ${JSON.stringify(handshake.body)}`);
    // Still inside the grace period: the existing session works.
    assert.ok(performance.now() - signalledAt < GRACE_MS, "the checks above outlasted the grace period");
    assert.deepEqual(await ack(socket, "echo", "still served"), ["still served"]);

    const status = await node.waitForExit(DRAIN_TIMEOUT_MS + EXIT_SLACK_MS);
    assert.deepEqual(status, { code: 0, signal: null });
    socket.disconnect();
  }),
);

test(
  "SIGTERM hands clients off: leave logic runs, they reconnect by themselves to a new node on the same port",
  withNodeLogs(async (t) => {
    const drainArgs = ["--drain-timeout", `${DRAIN_TIMEOUT_MS}ms`, "--drain-grace", "300ms"];
    const old = await startNode({ app: "chat", nodeId: "drain-old", args: drainArgs });

    // alice on WebSocket (after the upgrade), bob on long-polling: both transports are handed off.
    const alice = clients.open(old.url(), RECONNECT);
    const aliceUpgraded = nextEvent(alice.io.engine, "upgrade");
    const bob = clients.open(old.url(), { ...RECONNECT, transports: ["polling"] });
    await Promise.all([connected(alice), connected(bob), aliceUpgraded]);
    assert.equal(alice.io.engine.transport.name, "websocket");
    assert.equal(bob.io.engine.transport.name, "polling");
    await ack(alice, "join", { nickname: "alice", room: "d1" });
    await ack(bob, "join", { nickname: "bob", room: "d1" });

    const leftForAlice = new Recorder(alice, "user left");
    const leftForBob = new Recorder(bob, "user left");
    const welcomes = [alice, bob].map((s) => new Recorder(s, "welcome"));
    // What each client saw when it lost the node: the reason, and whether it will reconnect.
    const lost = [alice, bob].map((s) =>
      nextEvent(s, "disconnect", { timeoutMs: DRAIN_TIMEOUT_MS }).then(([reason]) => ({ reason, active: s.active })),
    );
    const retrying = [alice, bob].map((s) => nextEvent(s.io, "reconnect_attempt", { timeoutMs: DRAIN_TIMEOUT_MS }));
    // Awaited below; if an earlier step fails first, don't also report these as unhandled.
    for (const pending of [...lost, ...retrying]) pending.catch(() => {});

    const signalledAt = performance.now();
    old.terminate();

    // The leave logic ran for both: each hears the other leave the room (one member left).
    assert.deepEqual((await leftForBob.wait())[0], { nickname: "alice", room: "d1", members: 1 });
    assert.deepEqual((await leftForAlice.wait())[0], { nickname: "bob", room: "d1", members: 1 });

    // "transport close" when the close packet reaches the client. A polling client whose next
    // poll arrives after the session is gone (its last poll carried "user left") gets
    // "Session ID unknown" instead, which socket.io-client reports as "transport error". Either way
    // it reconnects; "io server disconnect" (a Socket.IO-level disconnect) would stop it.
    for (const [i, name] of ["alice", "bob"].entries()) {
      const { reason, active } = await lost[i];
      t.diagnostic(`${name} lost the draining node: "${reason}", active=${active}`);
      assert.notEqual(reason, "io server disconnect", `${name} was disconnected at the Socket.IO level`);
      assert.ok(["transport close", "transport error"].includes(reason), `${name}'s disconnect reason: ${reason}`);
      assert.equal(active, true, `${name} should be reconnecting after "${reason}"`);
      await retrying[i];
    }

    const status = await old.waitForExit(DRAIN_TIMEOUT_MS + EXIT_SLACK_MS);
    const drainMs = performance.now() - signalledAt;
    assert.deepEqual(status, { code: 0, signal: null }, old.logText());
    assert.ok(drainMs <= DRAIN_TIMEOUT_MS + EXIT_SLACK_MS, `exited ${Math.round(drainMs)} ms after SIGTERM`);
    t.diagnostic(`old node exited ${Math.round(drainMs)} ms after SIGTERM`);

    // A replacement on the same address: the clients, still retrying, find it on their own.
    const replacement = await startNode({ app: "chat", nodeId: "drain-new", listen: old.listen });
    assert.equal(replacement.listen, old.listen);
    for (const [i, name] of ["alice", "bob"].entries()) {
      const [greeting] = await welcomes[i].wait(({ node }) => node === "drain-new", {
        timeoutMs: WAIT_MS,
        label: `${name} reconnecting to the new node`,
      });
      assert.deepEqual(greeting, { node: "drain-new" });
    }
    await withTimeout(Promise.all([connected(alice), connected(bob)]), WAIT_MS, "both clients connected");
    // Since the drain began, each client was greeted exactly once: by the new node.
    for (const recorder of welcomes) {
      assert.deepEqual(recorder.received, [[{ node: "drain-new" }]]);
    }
    alice.disconnect();
    bob.disconnect();
  }),
);
