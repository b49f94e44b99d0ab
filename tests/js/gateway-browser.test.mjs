// The chat demo behind the gateway in a real browser (headless Chromium via playwright-core):
// `corral up` runs a gateway and three chat nodes; two users in two browser contexts land on
// different nodes, both upgrade to WebSocket through the gateway, and a message typed by one
// appears at the other (across nodes). Screenshots go to test-results/ when it fails.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

import { repoRoot } from "./support/node.mjs";
import { startUp, stopAllProcesses, withGatewayLogs } from "./support/gateway.mjs";

const WAIT_MS = 15_000;
const RESULTS = join(repoRoot, "test-results");
/** Users opened at most while looking for two on different nodes. */
const MAX_USERS = 8;

let up;
let browser;

before(async () => {
  up = await startUp({ nodes: 3 });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await stopAllProcesses();
});

/** Resolves once the text of `selector` on `page` is exactly `text`. */
function textIs(page, selector, text) {
  return page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want, [selector, text], {
    timeout: WAIT_MS,
  });
}

/**
 * Opens the chat through the gateway as `nickname` in `room`, in its own browser context (own
 * cookies and storage, like another user), waits until it joined over WebSocket, and resolves
 * with the node it shows.
 */
async function openChat(nickname, room, { pages, problems }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages[nickname] = page; // registered first, for the screenshot if a wait below fails
  page.on("pageerror", (err) => problems.push(`${nickname}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`${nickname}: console error: ${msg.text()} (${msg.location().url})`);
  });
  const res = await page.goto(up.url(`/?nickname=${nickname}&room=${room}`));
  assert.equal(res.status(), 200, `GET / through the gateway for ${nickname}`);
  await textIs(page, "#state", "connected");
  await textIs(page, "#transport", "websocket");
  await textIs(page, "#room", room);
  await page.waitForFunction((ids) => ids.includes(document.querySelector("#node")?.textContent), up.nodeIds, {
    timeout: WAIT_MS,
  });
  await page.locator("#send").waitFor({ state: "visible", timeout: WAIT_MS });
  return page.locator("#node").textContent();
}

test(
  "two browsers behind the gateway land on different nodes, upgrade to WebSocket and chat across nodes",
  withGatewayLogs(async (t) => {
    const problems = [];
    const pages = {};
    const room = "gw-room";
    try {
      const seen = [];
      let pair = null;
      for (let i = 1; i <= MAX_USERS && !pair; i++) {
        const nickname = `user${i}`;
        const node = await openChat(nickname, room, { pages, problems });
        seen.push({ nickname, node });
        const other = seen.find((u) => u.node !== node);
        if (other) pair = [other, { nickname, node }];
      }
      t.diagnostic(`users and their nodes: ${JSON.stringify(seen)}`);
      assert.ok(pair, `${MAX_USERS} users, all on one node: ${JSON.stringify(seen)}`);
      const [alice, bob] = pair;
      const [atAlice, atBob] = [pages[alice.nickname], pages[bob.nickname]];
      assert.notEqual(alice.node, bob.node);

      // alice hears bob join from the other node: both are in the room before anyone speaks.
      // (`first()`: the page sends its join twice, once on submit and once on connect, and the
      // chat app can announce both when the two race on the node, see the report.)
      await atAlice.locator("#messages li.notice", { hasText: `${bob.nickname} joined` }).first().waitFor({ timeout: WAIT_MS });

      const text = `hello across nodes ${Date.now()}`;
      await atAlice.locator("#input").fill(text);
      await atAlice.locator("#input").press("Enter");
      const received = atBob.locator("#messages li", { hasText: text });
      await received.waitFor({ timeout: WAIT_MS });
      assert.equal(await received.count(), 1);
      assert.equal(await received.locator("span.who").textContent(), alice.nickname);
      await atAlice.locator("#messages li.mine", { hasText: text }).waitFor({ timeout: WAIT_MS });

      // And back, after the exchange: still WebSocket, still on their own nodes.
      const reply = `and back ${Date.now()}`;
      await atBob.locator("#input").fill(reply);
      await atBob.locator("#input").press("Enter");
      await atAlice.locator("#messages li", { hasText: reply }).waitFor({ timeout: WAIT_MS });
      for (const [user, page] of [
        [alice, atAlice],
        [bob, atBob],
      ]) {
        assert.equal(await page.locator("#transport").textContent(), "websocket", `${user.nickname}'s transport`);
        assert.equal(await page.locator("#node").textContent(), user.node, `${user.nickname}'s node`);
        assert.equal(await page.locator("#state").textContent(), "connected");
      }
      assert.deepEqual(problems, []);
    } catch (err) {
      await mkdir(RESULTS, { recursive: true });
      for (const [name, page] of Object.entries(pages)) {
        const path = join(RESULTS, `gateway-chat-${name}.png`);
        await page.screenshot({ path, fullPage: true }).catch(() => {});
        t.diagnostic(`screenshot of ${name}'s page: ${path}`);
      }
      if (problems.length) t.diagnostic(`browser problems:\n${problems.join("\n")}`);
      throw err;
    } finally {
      for (const page of Object.values(pages)) await page.context().close();
    }
  }),
);
