// Cross-node behaviour of a three-node Corral cluster as the official socket.io-client sees it,
// written once and run against every bus driver (memory, NATS, Redis): rooms, except, local,
// volatile, binary, broadcasts with acks, fetch_sockets and remote socket operations,
// socketsJoin/Leave, disconnect, rooms, dynamic namespaces, server-to-server events and
// membership. The nodes run `--app cluster-check`, which performs whatever cluster operation a
// client asks for (node/src/apps/cluster_check.rs). Clients connect straight to different nodes
// over different transports.
//
// `CLUSTER_DRIVERS=memory,nats` runs a subset (default: all three).
//
// How "X does not arrive" is proven without sleeping: see `barrier` below.

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { isDeepStrictEqual } from "node:util";

import { ClientPool, Recorder, WAIT_MS, ack, comparable, connected, nextEvent } from "./support/clients.mjs";
import { startCluster, waitForMesh } from "./support/cluster.mjs";

const DRIVERS = (process.env.CLUSTER_DRIVERS ?? "memory,nats,redis")
  .split(",")
  .map((d) => d.trim())
  .filter(Boolean);

/**
 * Bound of every wait for a delivery: cluster hops take milliseconds, and a failing case must
 * not eat much of the whole file's time budget (`--test-timeout` also bounds the file).
 */
const DELIVERY_MS = 5_000;

/** The ask timeout of the broadcast-with-acks case. */
const ASK_TIMEOUT_MS = 500;
/**
 * Upper bound of that ask's round trip: far below what ignoring the timeout costs (the node's
 * 5 s request timeout plus the 500 ms), loose enough for a loaded 2-core machine.
 */
const ASK_BOUND_MS = 4_000;

/**
 * Every event a test client records, from the moment it opens (so nothing can slip past a
 * recorder attached too late). Tests use distinct event names and unique data.
 */
const EVENTS = [
  "marker",
  "to-room",
  "except",
  "overlap",
  "everyone",
  "broadcast",
  "to",
  "local",
  "volatile",
  "binary",
  "ask",
  "remote-emit",
  "moved",
  "dyn",
  "relayed",
  "disconnect",
];

/** Client options per transport: one transport only, or the usual polling→websocket upgrade. */
const TRANSPORTS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: {},
};

/** A name no other test (or earlier run on the same cluster) uses. */
const unique = (what) => `${what}-${randomUUID().slice(0, 8)}`;

/** One socket.io-client socket on a known node, with a recorder for each of `EVENTS`. */
class Member {
  constructor(name, socket, node, transport) {
    this.name = name;
    this.socket = socket;
    this.node = node;
    this.transport = transport;
    this.recorders = new Map(EVENTS.map((event) => [event, new Recorder(socket, event)]));
    /**
     * A room of this socket alone, for barriers. (Socket.IO puts every socket in a room named
     * after its id; socketioxide does not, and the "rooms" case checks that separately.)
     */
    this.room = unique(`self-${name}`);
  }

  /** The socket id (set once connected; the same in every namespace of one connection). */
  get id() {
    return this.socket.id;
  }

  rec(event) {
    const recorder = this.recorders.get(event);
    if (!recorder) throw new Error(`"${event}" is not recorded: add it to EVENTS`);
    return recorder;
  }

  /** How many `event`s with exactly `data` arrived so far. */
  count(event, data) {
    return this.rec(event).received.filter(([d]) => isDeepStrictEqual(d, data)).length;
  }

  toString() {
    return `${this.name} (${this.node.nodeId}, ${this.transport})`;
  }
}

/** The cases, for the cluster `driver`. */
function clusterSuite(driver) {
  let cluster;
  const clients = new ClientPool();

  before(async () => {
    cluster = await startCluster[driver]();
    // Cases assume every node already routes to the other two.
    await waitForMesh(cluster);
  });

  // Every case starts with no client of an earlier case connected: "everyone" and "the node's
  // own sockets" then mean the case's own clients.
  afterEach(() => clients.closeAll());

  after(async () => {
    clients.closeAll();
    await cluster?.stop();
  });

  /** Wraps a case so that, when it fails, the cluster's logs come with the failure. */
  function check(fn) {
    return async (t) => {
      try {
        await fn(t);
      } catch (err) {
        if (cluster) t.diagnostic(cluster.logs());
        throw err;
      }
    };
  }

  /** Waits for `socket` to connect and greet, and checks the greeting names node and socket. */
  async function greeted(member) {
    const hello = nextEvent(member.socket, "hello", { label: `${member} waiting for "hello"` });
    hello.catch(() => {}); // awaited below; not unhandled if connecting fails first
    await connected(member.socket);
    const [greeting] = await hello;
    assert.deepEqual(greeting, { node: member.node.nodeId, id: member.socket.id }, `greeting of ${member}`);
    return member;
  }

  /**
   * Connects clients in parallel: `{name: [node index, transport]}` → `{name: Member}`.
   * Websocket-only and polling-only clients are checked to be on their transport.
   */
  async function connectAll(specs) {
    const members = await Promise.all(
      Object.entries(specs).map(async ([name, [index, transport]]) => {
        const node = cluster.nodes[index];
        const socket = clients.open(node.url, TRANSPORTS[transport]);
        const member = await greeted(new Member(name, socket, node, transport));
        if (transport !== "upgrade") assert.equal(socket.io.engine.transport.name, transport, `${member}`);
        assert.deepEqual(await req(member, "join", [member.room]), { node: node.nodeId }, `join of ${member}`);
        return [name, member];
      }),
    );
    return Object.fromEntries(members);
  }

  /** A socket of namespace `nsp` multiplexed on `parent`'s connection (same node, same transport). */
  async function inNamespace(parent, nsp, name) {
    const socket = parent.socket.io.socket(nsp);
    clients.sockets.add(socket);
    return greeted(new Member(name, socket, parent.node, parent.transport));
  }

  /** Sends request `event` and returns its single ack value. */
  async function req(member, event, ...args) {
    const reply = await ack(member.socket, event, ...args);
    assert.equal(reply.length, 1, `${event} from ${member}: one ack value, got ${JSON.stringify(reply)}`);
    return reply[0];
  }

  /** Sends a request acked `{ok: true}`. */
  async function reqOk(member, event, arg) {
    assert.deepEqual(await req(member, event, arg), { ok: true }, `${event} ${JSON.stringify(arg)} from ${member}`);
  }

  /** Joins each member to its rooms: `[[member, [rooms]], …]`. */
  async function joinAll(memberships) {
    await Promise.all(
      memberships.map(async ([member, rooms]) => {
        assert.deepEqual(await req(member, "join", rooms), { node: member.node.nodeId }, `join of ${member}`);
      }),
    );
  }

  /**
   * The barrier that proves a negative without sleeping. The node that performed an operation
   * sends a marker to every socket concerned, by the same path as the operation:
   * - `emit`: `io.to(<their own rooms>).emit` from `via`'s node. Its local sockets get it at once, in
   *   order after anything the operation queued for them before its ack; the other nodes get it
   *   as a broadcast request from the same node on the same bus subscription as the operation's
   *   (`{prefix}.ns.*.all`). The bus keeps one publisher's order, and each node handles what
   *   arrives one message at a time, in order, queueing a broadcast's packets for its sockets
   *   synchronously (adapter-nats cluster.rs, socketioxide-core recv_req). A socket's packets
   *   arrive in the order they were queued.
   * - `remote`: an emit on a fetched socket, which travels like the `remote` operations (on the
   *   per-node subscription, `{prefix}.ns.*.node.<uid>`).
   * So once a socket has its marker, whatever the operation sent it has arrived, and its
   * recorder holds it: counting then proves "exactly once" and "never".
   */
  async function barrier(via, targets, path = "emit") {
    const data = unique("marker");
    const rooms = targets.map((m) => m.room);
    if (path === "emit") {
      await reqOk(via, "emit", { rooms, event: "marker", data });
    } else if (path === "remote") {
      assert.deepEqual(await req(via, "remote", { rooms, op: "emit", event: "marker", data }), { count: targets.length });
    } else {
      throw new Error(`unknown barrier path ${path}`);
    }
    await Promise.all(
      targets.map((m) =>
        m.rec("marker").wait((d) => d === data, { timeoutMs: DELIVERY_MS, label: `${m} waiting for the barrier marker` }),
      ),
    );
  }

  /**
   * Asserts that `event` with `data` reaches every member of `to` exactly once and no member of
   * `notTo`: waits for each arrival, then, past a barrier from `via` (the socket whose node
   * performed the operation), counts.
   */
  async function expectDelivery({ event, data, to, notTo, via, path = "emit" }) {
    await Promise.all(
      to.map((m) =>
        m.rec(event).wait((d) => isDeepStrictEqual(d, data), {
          timeoutMs: DELIVERY_MS,
          label: `${m} waiting for "${event}" ${JSON.stringify(data)}`,
        }),
      ),
    );
    await barrier(via, [...to, ...notTo], path);
    for (const m of to) {
      assert.equal(m.count(event, data), 1, `${m} got "${event}" exactly once: ${JSON.stringify(m.rec(event).received)}`);
    }
    for (const m of notTo) {
      assert.equal(m.count(event, data), 0, `${m} must not get "${event}": ${JSON.stringify(m.rec(event).received)}`);
    }
  }

  /** Waits until each member is disconnected by the server ("io server disconnect"). */
  async function expectServerDisconnect(members) {
    await Promise.all(
      members.map(async (m) => {
        const [reason] = await m
          .rec("disconnect")
          .wait(() => true, { timeoutMs: DELIVERY_MS, label: `${m} waiting for "disconnect"` });
        assert.equal(reason, "io server disconnect", `disconnect reason of ${m}`);
        assert.equal(m.socket.connected, false, `${m} is disconnected`);
      }),
    );
  }

  /** Asserts each member is still connected and saw no disconnect (call after a barrier). */
  function expectStillConnected(members) {
    for (const m of members) {
      assert.equal(m.socket.connected, true, `${m} is still connected`);
      assert.deepEqual(m.rec("disconnect").received, [], `${m} saw no disconnect`);
    }
  }

  /** `[{id, node}]` sorted by id, as `fetch` answers. */
  const fetched = (members) =>
    members.map((m) => ({ id: m.id, node: m.node.nodeId })).sort((a, b) => a.id.localeCompare(b.id));
  const sortedById = (list) => [...list].sort((a, b) => a.id.localeCompare(b.id));

  // Six clients on three nodes, all transports: the layout of most cases.
  const SIX = {
    a1: [0, "websocket"],
    a2: [0, "polling"],
    b1: [1, "polling"],
    b2: [1, "websocket"],
    c1: [2, "websocket"],
    c2: [2, "upgrade"],
  };

  // 1. io.to(rooms).except(rooms).emit
  test(
    "to(room).emit reaches the room's sockets on all three nodes and no one else",
    check(async () => {
      const m = await connectAll(SIX);
      const room = unique("room");
      await joinAll([
        [m.a1, [room]],
        [m.b1, [room]],
        [m.c1, [room]],
      ]);
      const data = unique("to-room");
      // Sent by a non-member on node 1: the room's sockets are on 1, 2 and 3.
      await reqOk(m.a2, "emit", { rooms: [room], event: "to-room", data });
      await expectDelivery({ event: "to-room", data, to: [m.a1, m.b1, m.c1], notTo: [m.a2, m.b2, m.c2], via: m.a2 });
    }),
  );

  test(
    "except(room) removes that room's sockets, on every node",
    check(async () => {
      const m = await connectAll(SIX);
      const [room, excluded] = [unique("room"), unique("excluded")];
      await joinAll([
        [m.a1, [room]],
        [m.a2, [room, excluded]],
        [m.b1, [room, excluded]],
        [m.b2, [room]],
        [m.c1, [room]],
        [m.c2, [excluded]],
      ]);
      const data = unique("except");
      await reqOk(m.c2, "emit", { rooms: [room], except: [excluded], event: "except", data });
      await expectDelivery({ event: "except", data, to: [m.a1, m.b2, m.c1], notTo: [m.a2, m.b1, m.c2], via: m.c2 });
    }),
  );

  test(
    "to(several rooms): a socket in two of them gets the event once",
    check(async () => {
      const m = await connectAll(SIX);
      const [first, second] = [unique("first"), unique("second")];
      await joinAll([
        [m.a1, [first, second]],
        [m.b1, [first, second]],
        [m.c1, [first]],
        [m.b2, [second]],
        [m.c2, [second]],
      ]);
      const data = unique("overlap");
      await reqOk(m.b2, "emit", { rooms: [first, second], event: "overlap", data });
      await expectDelivery({ event: "overlap", data, to: [m.a1, m.b1, m.c1, m.b2, m.c2], notTo: [m.a2], via: m.b2 });
    }),
  );

  test(
    "no rooms means everyone, on every node (and except still applies)",
    check(async () => {
      const m = await connectAll(SIX);
      const all = Object.values(m);
      const data = unique("everyone");
      await reqOk(m.c1, "emit", { rooms: [], event: "everyone", data });
      await expectDelivery({ event: "everyone", data, to: all, notTo: [], via: m.c1 });

      const excluded = unique("excluded");
      await joinAll([
        [m.a2, [excluded]],
        [m.c2, [excluded]],
      ]);
      const rest = unique("everyone");
      await reqOk(m.c1, "emit", { rooms: [], except: [excluded], event: "everyone", data: rest });
      await expectDelivery({ event: "everyone", data: rest, to: [m.a1, m.b1, m.b2, m.c1], notTo: [m.a2, m.c2], via: m.c1 });
    }),
  );

  test(
    "to(<socket id>) reaches that socket, on whichever node it is",
    check(async () => {
      const m = await connectAll(SIX);
      // Socket.IO puts every socket in a room named after its id: io.to(socketId) is how one
      // socket is addressed (private messages).
      const data = unique("to-room");
      await reqOk(m.a1, "emit", { rooms: [m.b1.id, m.c2.id], event: "to-room", data });
      await expectDelivery({ event: "to-room", data, to: [m.b1, m.c2], notTo: [m.a1, m.a2, m.b2, m.c1], via: m.a1 });
    }),
  );

  // 2. socket.broadcast() and socket.to(rooms)
  test(
    "socket.broadcast() reaches everyone but the sender, on all nodes",
    check(async () => {
      const m = await connectAll(SIX);
      const data = unique("broadcast");
      await reqOk(m.b1, "broadcast", { event: "broadcast", data });
      await expectDelivery({
        event: "broadcast",
        data,
        to: [m.a1, m.a2, m.b2, m.c1, m.c2],
        notTo: [m.b1],
        via: m.b1,
      });
    }),
  );

  test(
    "socket.to(rooms) reaches the rooms minus the sender, on all nodes",
    check(async () => {
      const m = await connectAll(SIX);
      const [room, other] = [unique("room"), unique("other")];
      await joinAll([
        [m.a1, [room]],
        [m.b1, [room]],
        [m.b2, [room]],
        [m.c1, [room]],
        [m.c2, [other]],
      ]);
      const data = unique("to");
      await reqOk(m.b1, "to", { rooms: [room], event: "to", data });
      await expectDelivery({ event: "to", data, to: [m.a1, m.b2, m.c1], notTo: [m.b1, m.a2, m.c2], via: m.b1 });
    }),
  );

  // 3. local() and volatile()
  test(
    "local() reaches only the sockets of the node that emitted",
    check(async () => {
      const m = await connectAll(SIX);
      const room = unique("room");
      await joinAll([
        [m.a1, [room]],
        [m.a2, [room]],
        [m.b1, [room]],
        [m.c1, [room]],
      ]);
      const data = unique("local");
      await reqOk(m.a2, "emit", { rooms: [room], event: "local", data, local: true });
      // The barrier is a cluster-wide emit from node 1: a local() emit wrongly published to the
      // bus would have reached nodes 2 and 3 before it.
      await expectDelivery({ event: "local", data, to: [m.a1, m.a2], notTo: [m.b1, m.c1, m.b2, m.c2], via: m.a2 });

      const everyone = unique("local");
      await reqOk(m.b2, "emit", { rooms: [], event: "local", data: everyone, local: true });
      await expectDelivery({ event: "local", data: everyone, to: [m.b1, m.b2], notTo: [m.a1, m.a2, m.c1, m.c2], via: m.b2 });
    }),
  );

  test(
    "volatile() is delivered to connected websocket clients on the other nodes",
    check(async () => {
      const m = await connectAll(SIX);
      const room = unique("room");
      await joinAll([
        [m.a1, [room]],
        [m.b2, [room]],
        [m.c1, [room]],
      ]);
      const data = unique("volatile");
      await reqOk(m.a1, "emit", { rooms: [room], event: "volatile", data, volatile: true });
      await expectDelivery({ event: "volatile", data, to: [m.a1, m.b2, m.c1], notTo: [m.a2, m.b1, m.c2], via: m.a1 });
    }),
  );

  // 4. Binary
  test(
    "binary: nested and top-level Buffers arrive byte-identical on other nodes, over websocket and polling",
    check(async () => {
      const m = await connectAll(SIX);
      const room = unique("room");
      await joinAll([
        [m.a2, [room]],
        [m.b1, [room]],
        [m.b2, [room]],
        [m.c1, [room]],
      ]);
      const receivers = [m.a2, m.b1, m.b2, m.c1];
      const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const nested = {
        tag: unique("binary"),
        bytes: allBytes,
        list: [Buffer.from("héllo ✓"), { deep: randomBytes(4096) }, 42, null, "text"],
        pair: [randomBytes(1), randomBytes(3)],
      };
      const topLevel = randomBytes(20_000);

      /** Waits until every receiver got `sent` (binary compared byte for byte), once. */
      const expectBinary = async (sent, via) => {
        const want = comparable(sent);
        const matches = (d) => isDeepStrictEqual(comparable(d), want);
        await Promise.all(
          receivers.map((r) => r.rec("binary").wait(matches, { timeoutMs: DELIVERY_MS, label: `${r} waiting for the binary payload` })),
        );
        await barrier(via, [...receivers, m.a1, m.c2]);
        for (const r of receivers) {
          const got = r.rec("binary").received.filter(([d]) => matches(d));
          assert.equal(got.length, 1, `${r} got the payload once`);
          assert.equal(r.rec("binary").received.length, got.length, `${r} got nothing else on "binary"`);
        }
        for (const r of [m.a1, m.c2]) assert.deepEqual(r.rec("binary").received, [], `${r} is not in the room`);
      };

      // From node 1 over websocket.
      await reqOk(m.a1, "emit", { rooms: [room], event: "binary", data: nested });
      await expectBinary(nested, m.a1);
      for (const r of receivers) {
        const [[got]] = r.rec("binary").received;
        assert.ok(Buffer.isBuffer(got.bytes) && Buffer.isBuffer(got.list[1].deep), `${r} got Buffers`);
      }

      // A top-level Buffer, from node 3 over polling.
      for (const r of receivers) r.rec("binary").received.length = 0;
      await reqOk(m.c2, "emit", { rooms: [room], event: "binary", data: topLevel });
      await expectBinary(topLevel, m.c2);
      for (const r of receivers) assert.ok(Buffer.isBuffer(r.rec("binary").received[0][0]), `${r} got a Buffer`);
    }),
  );

  // 5. Broadcast with acks
  test(
    "broadcast with acks: one answer per socket on every node, and a timeout error for each socket that never acks",
    check(async () => {
      const m = await connectAll(SIX);
      const room = unique("room");
      const acking = [m.a1, m.b1, m.c1];
      const silent = [m.a2, m.c2];
      await joinAll([...acking, ...silent].map((s) => [s, [room]]));
      // Every client would answer if asked, naming itself; the silent ones never answer.
      for (const s of [...acking, m.b2]) s.socket.on("ask", (data, answer) => answer({ from: s.name, echo: data }));
      for (const s of silent) s.socket.on("ask", () => {});

      const data = unique("ask");
      const started = performance.now();
      const answers = await req(m.b2, "ask", { rooms: [room], event: "ask", data, timeout_ms: ASK_TIMEOUT_MS });
      const elapsed = performance.now() - started;

      assert.ok(Array.isArray(answers), `ask answers: ${JSON.stringify(answers)}`);
      assert.deepEqual(
        answers.map((a) => a.id).sort(),
        [...acking, ...silent].map((s) => s.id).sort(),
        `one answer per room socket, none for the asker b2: ${JSON.stringify(answers)}`,
      );
      const byId = new Map(answers.map((a) => [a.id, a]));
      for (const s of acking) {
        assert.deepEqual(byId.get(s.id), { id: s.id, ok: { from: s.name, echo: data } }, `answer of ${s}`);
      }
      for (const s of silent) {
        const answer = byId.get(s.id);
        assert.deepEqual(Object.keys(answer).sort(), ["error", "id"], `timeout of ${s}: ${JSON.stringify(answer)}`);
        assert.ok(typeof answer.error === "string" && answer.error.length > 0, `timeout of ${s}: ${JSON.stringify(answer)}`);
      }
      // The silent sockets' timeout ends the ask: not sooner, and not at the node's request timeout.
      assert.ok(elapsed >= ASK_TIMEOUT_MS - 10, `ask returned after ${elapsed.toFixed(0)} ms, before its ${ASK_TIMEOUT_MS} ms timeout`);
      assert.ok(elapsed < ASK_BOUND_MS, `ask took ${elapsed.toFixed(0)} ms: its ${ASK_TIMEOUT_MS} ms timeout was not honoured`);

      // Each room socket was asked once; b2, outside the room, never.
      await expectDelivery({ event: "ask", data, to: [...acking, ...silent], notTo: [m.b2], via: m.b2 });
    }),
  );

  // 6. fetch_sockets and remote socket operations
  test(
    "fetch_sockets returns the room's sockets on every node with their node ids",
    check(async () => {
      const m = await connectAll(SIX);
      const [room, empty] = [unique("room"), unique("empty")];
      const members = [m.a1, m.b1, m.b2, m.c1];
      await joinAll(members.map((s) => [s, [room]]));
      for (const asker of [m.a2, m.c2]) {
        assert.deepEqual(sortedById(await req(asker, "fetch", { rooms: [room] })), fetched(members), `fetch from ${asker}`);
        assert.deepEqual(await req(asker, "fetch", { rooms: [empty] }), [], `fetch of an empty room from ${asker}`);
      }
    }),
  );

  test(
    "emit on fetched remote sockets reaches them, and only them",
    check(async () => {
      const m = await connectAll(SIX);
      const room = unique("room");
      const members = [m.a1, m.b1, m.b2, m.c1];
      await joinAll(members.map((s) => [s, [room]]));
      const data = unique("remote-emit");
      assert.deepEqual(await req(m.a2, "remote", { rooms: [room], op: "emit", event: "remote-emit", data }), { count: 4 });
      await expectDelivery({ event: "remote-emit", data, to: members, notTo: [m.a2, m.c2], via: m.a2, path: "remote" });
    }),
  );

  test(
    "join and leave on fetched remote sockets change their rooms",
    check(async () => {
      const m = await connectAll(SIX);
      const [room, target, leavers] = [unique("room"), unique("target"), unique("leavers")];
      const members = [m.a1, m.b1, m.b2, m.c1];
      await joinAll([
        [m.a1, [room]],
        [m.b1, [room, leavers]],
        [m.b2, [room]],
        [m.c1, [room, leavers]],
      ]);

      // `remote` acks once node 1 has sent every join (`socket.join(room).await` on each fetched
      // socket). What node 1 does next (a fetch, an emit) must see them, as one Socket.IO
      // server's operations take effect in the order it made them.
      assert.deepEqual(await req(m.a2, "remote", { rooms: [room], op: "join", room: target }), { count: 4 });
      assert.deepEqual(sortedById(await req(m.a2, "fetch", { rooms: [target] })), fetched(members), "fetch after the join");
      const joined = unique("moved");
      await reqOk(m.a2, "emit", { rooms: [target], event: "moved", data: joined });
      await expectDelivery({ event: "moved", data: joined, to: members, notTo: [m.a2, m.c2], via: m.a2 });

      assert.deepEqual(await req(m.a2, "remote", { rooms: [leavers], op: "leave", room: target }), { count: 2 });
      assert.deepEqual(sortedById(await req(m.a2, "fetch", { rooms: [target] })), fetched([m.a1, m.b2]), "fetch after the leave");
      const left = unique("moved");
      await reqOk(m.a2, "emit", { rooms: [target], event: "moved", data: left });
      await expectDelivery({ event: "moved", data: left, to: [m.a1, m.b2], notTo: [m.b1, m.c1, m.a2, m.c2], via: m.a2 });
    }),
  );

  test(
    "disconnect on fetched remote sockets disconnects them (io server disconnect), and only them",
    check(async () => {
      const m = await connectAll(SIX);
      const [room, doomed] = [unique("room"), unique("doomed")];
      await joinAll([
        [m.a1, [room]],
        [m.b1, [room]],
        [m.b2, [room, doomed]],
        [m.c1, [room, doomed]],
      ]);
      assert.deepEqual(await req(m.a2, "remote", { rooms: [doomed], op: "disconnect" }), { count: 2 });
      await expectServerDisconnect([m.b2, m.c1]);
      // b1 shares node 2 with b2 and c2 node 3 with c1: the disconnect requests reached those
      // nodes before the barrier's.
      const survivors = [m.a1, m.a2, m.b1, m.c2];
      await barrier(m.a2, survivors, "remote");
      expectStillConnected(survivors);
      assert.deepEqual(sortedById(await req(m.a2, "fetch", { rooms: [room] })), fetched([m.a1, m.b1]), "fetch after the disconnect");
    }),
  );

  // 7. socketsJoin / socketsLeave / disconnect by room
  test(
    "sockets-join and sockets-leave move sockets of every node",
    check(async () => {
      const m = await connectAll(SIX);
      const [room, target, leavers] = [unique("room"), unique("target"), unique("leavers")];
      await joinAll([
        [m.a1, [room]],
        [m.b1, [room, leavers]],
        [m.c1, [room]],
      ]);

      await reqOk(m.c2, "sockets-join", { rooms: [room], room: target });
      const joined = unique("moved");
      await reqOk(m.c2, "emit", { rooms: [target], event: "moved", data: joined });
      await expectDelivery({ event: "moved", data: joined, to: [m.a1, m.b1, m.c1], notTo: [m.a2, m.b2, m.c2], via: m.c2 });

      await reqOk(m.c2, "sockets-leave", { rooms: [leavers], room: target });
      const left = unique("moved");
      await reqOk(m.c2, "emit", { rooms: [target], event: "moved", data: left });
      await expectDelivery({ event: "moved", data: left, to: [m.a1, m.c1], notTo: [m.b1, m.a2, m.b2, m.c2], via: m.c2 });
      assert.deepEqual(sortedById(await req(m.b2, "fetch", { rooms: [target] })), fetched([m.a1, m.c1]), "fetch of the target room");
    }),
  );

  test(
    "disconnect-sockets {rooms} disconnects the rooms' sockets on every node, the asker included, and no one else",
    check(async () => {
      const m = await connectAll(SIX);
      const doomed = unique("doomed");
      await joinAll([m.a2, m.b2, m.c2].map((s) => [s, [doomed]]));
      // c2 asks and is in the room: the ack comes first, then its own disconnect.
      assert.deepEqual(await req(m.c2, "disconnect-sockets", { rooms: [doomed] }), { ok: true });
      await expectServerDisconnect([m.a2, m.b2, m.c2]);
      // Nodes 1 and 2 disconnected theirs, so node 3 had published the request: the barrier from
      // node 3 comes after it everywhere.
      await barrier(m.c1, [m.a1, m.b1, m.c1]);
      expectStillConnected([m.a1, m.b1, m.c1]);
    }),
  );

  // 8. rooms
  test(
    "rooms lists the rooms of every node, once each, sorted",
    check(async () => {
      const m = await connectAll({ a1: [0, "websocket"], b1: [1, "polling"], c1: [2, "websocket"] });
      const prefix = unique("rooms");
      const [r1, r2, r3, shared, gone] = ["n1", "n2", "n3", "shared", "gone"].map((s) => `${prefix}-${s}`);
      await joinAll([
        [m.a1, [r1, shared]],
        [m.b1, [r2]],
        [m.c1, [r3, shared, gone]],
      ]);
      assert.deepEqual(await req(m.c1, "leave", [gone]), { node: m.c1.node.nodeId });

      const listed = [];
      for (const asker of [m.a1, m.b1, m.c1]) {
        const rooms = await req(asker, "rooms");
        assert.ok(Array.isArray(rooms), `rooms from ${asker}: ${JSON.stringify(rooms)}`);
        assert.deepEqual(rooms, [...rooms].sort(), `rooms from ${asker} are sorted`);
        assert.equal(new Set(rooms).size, rooms.length, `rooms from ${asker} are listed once each: ${JSON.stringify(rooms)}`);
        const ours = rooms.filter((r) => r.startsWith(prefix));
        assert.deepEqual(ours, [r1, r2, r3, shared].sort(), `this case's rooms from ${asker} (not "${gone}", left)`);
        for (const s of [m.a1, m.b1, m.c1]) assert.ok(rooms.includes(s.room), `rooms from ${asker} include ${s.room} of ${s}`);
        listed.push([asker, rooms]);
      }
      // Last, so that it does not hide the checks above: Socket.IO puts every socket in a room
      // named after its id (what makes io.to(socketId) reach it), so those are listed too.
      for (const [asker, rooms] of listed) {
        for (const s of [m.a1, m.b1, m.c1]) {
          assert.ok(rooms.includes(s.id), `rooms from ${asker} include the room named after ${s}'s id ${s.id}: ${JSON.stringify(rooms)}`);
        }
      }
    }),
  );

  // 9. Namespaces
  test(
    "dynamic namespace: emit-here reaches that namespace's sockets on every node, not / nor another namespace",
    check(async () => {
      const m = await connectAll({ a1: [0, "websocket"], b1: [1, "polling"], b2: [1, "websocket"], c1: [2, "websocket"] });
      // Namespace sockets share their / socket's connection (multiplexed, as socket.io-client does).
      const x1 = await inNamespace(m.a1, "/dyn-x", "x1");
      const x2 = await inNamespace(m.b1, "/dyn-x", "x2");
      const x3 = await inNamespace(m.c1, "/dyn-x", "x3");
      const y1 = await inNamespace(m.a1, "/dyn-y", "y1");
      const y3 = await inNamespace(m.c1, "/dyn-y", "y3");

      const data = unique("dyn");
      await reqOk(x1, "emit-here", { event: "dyn", data });
      await Promise.all(
        [x1, x2, x3].map((s) => s.rec("dyn").wait((d) => d === data, { timeoutMs: DELIVERY_MS, label: `${s} waiting for "dyn"` })),
      );
      // Node 1 published the /dyn-x request before acking; barriers from node 1 follow it on the
      // same subscription (`ns.*.all`): in / for the / sockets, in /dyn-y for the /dyn-y ones.
      const slash = [m.a1, m.b1, m.b2, m.c1];
      await barrier(m.a1, slash);
      const marker = unique("marker");
      await reqOk(y1, "emit-here", { event: "marker", data: marker });
      await Promise.all([y1, y3].map((s) => s.rec("marker").wait((d) => d === marker, { timeoutMs: DELIVERY_MS, label: `${s} waiting for the marker` })));

      for (const s of [x1, x2, x3]) assert.equal(s.count("dyn", data), 1, `${s} in /dyn-x got "dyn" once`);
      for (const s of [...slash, y1, y3]) {
        assert.equal(s.count("dyn", data), 0, `${s} (${s.socket.nsp}) must not get the /dyn-x event`);
      }
    }),
  );

  // 10. Server-to-server events
  test(
    "server-ask returns the other two nodes' answers; server-emit reaches the other nodes' sockets only",
    check(async () => {
      const m = await connectAll(SIX);
      const [self, ...others] = cluster.nodes.map((n) => n.nodeId);

      const data = { text: unique("ping"), list: [1, 2, 3] };
      const reply = await req(m.a1, "server-ask", { data, timeout_ms: 2_000 });
      assert.deepEqual(reply.missing, [], `no node missing: ${JSON.stringify(reply)}`);
      assert.deepEqual(
        [...reply.answers].sort((a, b) => a.data.node.localeCompare(b.data.node)),
        others.map((node) => ({ node, data: { node, echo: data } })),
        `answers of ${others.join(" and ")}, not ${self}: ${JSON.stringify(reply)}`,
      );

      const relayed = { text: unique("relay") };
      await reqOk(m.a1, "server-emit", { data: relayed });
      const expected = { from: self, data: relayed };
      const remote = [m.b1, m.b2, m.c1, m.c2];
      await Promise.all(
        remote.map((s) =>
          s.rec("relayed").wait((d) => isDeepStrictEqual(d, expected), { timeoutMs: DELIVERY_MS, label: `${s} waiting for "relayed"` }),
        ),
      );
      // Nodes 2 and 3 got node 1's event, so the bus had taken it, and delivered it to every
      // subscriber (node 1 too, were it to handle its own), before node 2 published the marker
      // below: node 1 handles events in arrival order, so a relay of its own would reach its
      // sockets before node 2's.
      const marker = { text: unique("marker") };
      await reqOk(m.b1, "server-emit", { data: marker });
      await Promise.all(
        [m.a1, m.a2].map((s) =>
          s.rec("relayed").wait((d) => isDeepStrictEqual(d, { from: others[0], data: marker }), {
            timeoutMs: DELIVERY_MS,
            label: `${s} waiting for node 2's relayed marker`,
          }),
        ),
      );
      for (const s of remote) assert.equal(s.count("relayed", expected), 1, `${s} got "relayed" once`);
      for (const s of [m.a1, m.a2]) assert.equal(s.count("relayed", expected), 0, `${s} is on the sender's node`);
    }),
  );

  // 11. Membership
  test(
    "nodes lists the three ready nodes, each with the address its clients connect to",
    check(async () => {
      const m = await connectAll({ a1: [0, "websocket"], b1: [1, "polling"], c1: [2, "upgrade"] });
      const expected = cluster.nodes.map((n) => ({ node_id: n.nodeId, address: n.listen, state: "ready" }));
      let uids;
      for (const asker of [m.a1, m.b1, m.c1]) {
        const nodes = await req(asker, "nodes");
        assert.ok(Array.isArray(nodes) && nodes.length === 3, `three nodes from ${asker}: ${JSON.stringify(nodes)}`);
        assert.equal(nodes[0].node_id, asker.node.nodeId, `${asker}'s node lists itself first`);
        const sorted = [...nodes].sort((a, b) => a.node_id.localeCompare(b.node_id));
        assert.deepEqual(
          sorted.map(({ node_id, address, state }) => ({ node_id, address, state })),
          expected,
          `nodes from ${asker}: ${JSON.stringify(nodes)}`,
        );
        for (const n of nodes) {
          assert.deepEqual(Object.keys(n).sort(), ["address", "connections", "node_id", "state", "uid"], JSON.stringify(n));
          assert.ok(Number.isInteger(n.connections) && n.connections >= 0, JSON.stringify(n));
          assert.ok(typeof n.uid === "string" && n.uid.length > 0, JSON.stringify(n));
        }
        // A node's own count is live: it includes this case's client on it.
        assert.ok(nodes[0].connections >= 1, `${asker}'s node counts its client: ${JSON.stringify(nodes[0])}`);
        const these = Object.fromEntries(sorted.map((n) => [n.node_id, n.uid]));
        assert.equal(new Set(Object.values(these)).size, 3, "distinct uids");
        if (uids) assert.deepEqual(these, uids, "every node agrees on the uids");
        uids = these;
      }
    }),
  );
}

for (const driver of DRIVERS) {
  if (!startCluster[driver]) throw new Error(`unknown driver ${driver} in CLUSTER_DRIVERS (memory, nats, redis)`);
  describe(`${driver} driver`, () => clusterSuite(driver));
}
