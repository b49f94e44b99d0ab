// Event-driven waits for the official socket.io-client: await an event, an ack or a connection
// with a timeout whose error says what was awaited, and a pool that disconnects every client a
// test file opened.

import assert from "node:assert/strict";
import { io } from "socket.io-client";

/** Default bound of every wait: generous for a loaded CI machine, short next to the test timeout. */
export const WAIT_MS = 10_000;

/** Rejects with `Error(label)` if `promise` has not settled after `ms`. */
export function withTimeout(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the argument list of the next `event` on `emitter` (a socket.io-client Socket,
 * Manager or engine) for which `predicate` is true. Listen before triggering the event.
 */
export function nextEvent(emitter, event, { timeoutMs = WAIT_MS, predicate = () => true, label } = {}) {
  let listener;
  const received = new Promise((resolve) => {
    listener = (...args) => {
      if (predicate(...args)) resolve(args);
    };
    emitter.on(event, listener);
  });
  return withTimeout(received, timeoutMs, label ?? `waiting for "${event}"`).finally(() =>
    emitter.off(event, listener),
  );
}

/**
 * Emits `event` with `args` and resolves with ALL the arguments of the ack (`emitWithAck` keeps
 * only the first). Rejects if no ack comes within `timeoutMs`.
 */
export function ack(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(WAIT_MS).emit(event, ...args, (err, ...reply) => {
      if (err) reject(new Error(`no ack to "${event}" within ${WAIT_MS} ms (${err.message})`));
      else resolve(reply);
    });
  });
}

/**
 * Records every `event` a socket receives, so a test can await one and later check what else
 * arrived (or did not).
 */
export class Recorder {
  constructor(socket, event) {
    this.event = event;
    /** Argument lists, in arrival order. */
    this.received = [];
    this.waiters = [];
    socket.on(event, (...args) => {
      this.received.push(args);
      this.waiters = this.waiters.filter((w) => !w(args));
    });
  }

  /** Resolves with the first recorded argument list (past or future) matching `predicate`. */
  wait(predicate = () => true, { timeoutMs = WAIT_MS, label } = {}) {
    const past = this.received.find((args) => predicate(...args));
    if (past) return Promise.resolve(past);
    const future = new Promise((resolve) => {
      this.waiters.push((args) => {
        if (!predicate(...args)) return false;
        resolve(args);
        return true;
      });
    });
    return withTimeout(future, timeoutMs, label ?? `waiting for "${this.event}"`);
  }
}

/** The socket.io-client sockets of one test file; `closeAll` in an `after` hook. */
export class ClientPool {
  constructor() {
    this.sockets = new Set();
  }

  /**
   * `io(url, {forceNew: true, reconnection: false, ...opts})`, recorded for cleanup. Returns at
   * once: attach listeners (e.g. for the server's greeting) before awaiting `connected`.
   */
  open(url, opts = {}) {
    const socket = io(url, { forceNew: true, reconnection: false, ...opts });
    this.sockets.add(socket);
    return socket;
  }

  /**
   * Opens a client and resolves once it is connected, with the greeting event `greeting`
   * (e.g. "hello") already received: `{socket, greeting}` (the greeting's first argument).
   */
  async connect(url, opts = {}, greeting = null) {
    const socket = this.open(url, opts);
    const greeted = greeting ? nextEvent(socket, greeting) : null;
    greeted?.catch(() => {}); // awaited below; don't report it unhandled if connecting fails first
    await connected(socket);
    return { socket, greeting: greeted ? (await greeted)[0] : undefined };
  }

  /** Disconnects every client (safe to call twice). */
  closeAll() {
    for (const socket of this.sockets) socket.disconnect();
    this.sockets.clear();
  }
}

/**
 * Resolves when `socket` is connected. Without reconnection, the first `connect_error` rejects
 * (with reconnection the client retries, so only the timeout does).
 */
export function connected(socket, { timeoutMs = WAIT_MS } = {}) {
  if (socket.connected) return Promise.resolve(socket);
  let onConnect;
  let onError;
  const result = new Promise((resolve, reject) => {
    onConnect = () => resolve(socket);
    onError = (err) => {
      if (!socket.io.reconnection()) reject(new Error(`connect_error: ${err.message}`));
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
  return withTimeout(result, timeoutMs, "waiting for the client to connect").finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/**
 * Binary values as comparable plain data: socket.io-client hands back binary as `Buffer` in
 * Node, whatever was sent (Uint8Array, Buffer), so both sides are mapped to their hex bytes.
 * A value that came back as anything but binary (an array of numbers, a string, a placeholder
 * object) maps to something else and fails the comparison.
 */
export function comparable(value) {
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    return { binary: Buffer.from(value.buffer ?? value, value.byteOffset, value.byteLength).toString("hex") };
  }
  if (Array.isArray(value)) return value.map(comparable);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, comparable(v)]));
  }
  return value;
}

/**
 * Checks the bench protocol's `ask` on a connected `socket`: the server asks the client with an
 * ack and relays the client's answer, arguments (binary too) unchanged both ways.
 */
export async function checkAsk(socket) {
  const asked = [];
  socket.on("ask", (...args) => {
    // With an ack request, socket.io-client passes the ack callback as the last argument.
    const answer = typeof args.at(-1) === "function" ? args.pop() : null;
    asked.push(args);
    answer?.("answer", { got: args.length }, Buffer.from("ok"));
  });
  const reply = await ack(socket, "ask", "question", 42, { nested: true });
  assert.deepEqual(asked, [["question", 42, { nested: true }]]);
  assert.deepEqual(comparable(reply), comparable(["answer", { got: 3 }, Buffer.from("ok")]));
}
