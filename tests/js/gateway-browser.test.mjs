// The chat demo behind the gateway in a real browser (headless Chromium via playwright-core):
// `corral up` runs a gateway and three chat nodes; two users in two browser contexts land on
// different nodes, both upgrade to WebSocket through the gateway, and a message typed by one
// appears at the other (across nodes). Screenshots go to test-results/ when it fails.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { WAIT_MS, launchChromium, withChatPages } from "./support/browser.mjs";
import { startUp, stopAllProcesses, withGatewayLogs } from "./support/gateway.mjs";

/** Users opened at most while looking for two on different nodes. */
const MAX_USERS = 8;

let up;
let browser;

before(async () => {
  up = await startUp({ nodes: 3 });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopAllProcesses();
});

test(
  "two browsers behind the gateway land on different nodes, upgrade to WebSocket and chat across nodes",
  withGatewayLogs((t) =>
    withChatPages(
      t,
      {
        browser,
        server: up,
        nodeIds: up.nodeIds,
        label: "GET / through the gateway",
        screenshot: (name) => `gateway-chat-${name}.png`,
      },
      async ({ open, pages, problems }) => {
        const room = "gw-room";
        const seen = [];
        let pair = null;
        for (let i = 1; i <= MAX_USERS && !pair; i++) {
          const nickname = `user${i}`;
          const node = await open(nickname, room);
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
      },
    ),
  ),
);
