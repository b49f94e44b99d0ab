// The chat page in a real browser (headless Chromium via playwright-core): two users in one room,
// both upgraded to WebSocket, one sends a message and the other sees it. Screenshots of both
// pages go to test-results/ when it fails.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";

import { WAIT_MS, launchChromium, withChatPages } from "./support/browser.mjs";
import { repoRoot, startNode, stopAllNodes, withNodeLogs } from "./support/node.mjs";

const NODE_ID = "browser-1";

let node;
let browser;

before(async () => {
  node = await startNode({
    app: "chat",
    nodeId: NODE_ID,
    // Absolute, so the page gets the official bundle whatever the working directory.
    args: ["--client-bundle", join(repoRoot, "node_modules/socket.io-client/dist/socket.io.min.js")],
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopAllNodes();
});

test(
  "two browsers in one room: a message typed by alice appears at bob's, and as hers at alice's",
  withNodeLogs((t) =>
    withChatPages(
      t,
      {
        browser,
        server: node,
        nodeIds: [NODE_ID],
        label: "GET /",
        screenshot: (name) => (name === "alice" ? "chat.png" : `chat-${name}.png`),
      },
      async ({ open, pages, problems }) => {
        await open("alice", "r1");
        await open("bob", "r1");
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
      },
    ),
  ),
);
