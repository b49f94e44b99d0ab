// The chat page in a real browser (headless Chromium via playwright-core): two users in one room,
// both upgraded to WebSocket, one sends a message and the other sees it. Screenshots of both
// pages go to test-results/ when it fails.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

import { repoRoot, startNode, stopAllNodes, withNodeLogs } from "./support/node.mjs";

const NODE_ID = "browser-1";
const WAIT_MS = 15_000;
const RESULTS = join(repoRoot, "test-results");

let node;
let browser;

before(async () => {
  node = await startNode({
    app: "chat",
    nodeId: NODE_ID,
    // Absolute, so the page gets the official bundle whatever the working directory.
    args: ["--client-bundle", join(repoRoot, "node_modules/socket.io-client/dist/socket.io.min.js")],
  });
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
  await stopAllNodes();
});

/** Resolves once the text of `selector` on `page` is exactly `text`. */
function textIs(page, selector, text) {
  return page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want, [selector, text], {
    timeout: WAIT_MS,
  });
}

/**
 * Opens the chat as `nickname` in `room`, in its own browser context (own cookies and storage,
 * like a second user), and waits until it joined over WebSocket on our node.
 */
async function openChat(nickname, room, { pages, problems }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages[nickname] = page; // registered first, for the screenshot if a wait below fails
  page.on("pageerror", (err) => problems.push(`${nickname}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") {
      problems.push(`${nickname}: console error: ${msg.text()} (${msg.location().url})`);
    }
  });
  const res = await page.goto(node.url(`/?nickname=${nickname}&room=${room}`));
  assert.equal(res.status(), 200, `GET / for ${nickname}`);
  await textIs(page, "#state", "connected");
  await textIs(page, "#node", NODE_ID);
  await textIs(page, "#transport", "websocket");
  await textIs(page, "#room", room);
  await page.locator("#send").waitFor({ state: "visible", timeout: WAIT_MS });
}

test(
  "two browsers in one room: a message typed by alice appears at bob's, and as hers at alice's",
  withNodeLogs(async (t) => {
    const problems = [];
    const pages = {};
    try {
      await openChat("alice", "r1", { pages, problems });
      await openChat("bob", "r1", { pages, problems });
      // alice hears bob join: both are in the room before anyone speaks.
      await pages.alice.locator("#messages li.notice", { hasText: "bob joined" }).waitFor({ timeout: WAIT_MS });

      const text = `hello from alice ${Date.now()}`;
      await pages.alice.locator("#input").fill(text);
      await pages.alice.locator("#input").press("Enter");

      const atBob = pages.bob.locator("#messages li", { hasText: text });
      await atBob.waitFor({ timeout: WAIT_MS });
      assert.equal(await atBob.count(), 1);
      assert.equal(await atBob.locator("span.who").textContent(), "alice");
      assert.equal(await atBob.evaluate((li) => li.classList.contains("mine")), false);

      const atAlice = pages.alice.locator("#messages li.mine", { hasText: text });
      await atAlice.waitFor({ timeout: WAIT_MS });
      assert.equal(await atAlice.count(), 1);
      assert.equal(await atAlice.locator("span.who").textContent(), "alice");
      // The sender shows its own message once: the server does not echo it back.
      assert.equal(await pages.alice.locator("#messages li", { hasText: text }).count(), 1);
      assert.equal(await pages.alice.locator("#input").inputValue(), "", "the input is cleared after sending");

      assert.deepEqual(problems, []);
    } catch (err) {
      await mkdir(RESULTS, { recursive: true });
      for (const [name, page] of Object.entries(pages)) {
        const path = join(RESULTS, name === "alice" ? "chat.png" : `chat-${name}.png`);
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
