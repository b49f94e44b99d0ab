// The chat page in a real browser for the JavaScript tests: headless Chromium (via playwright-core)
// with the flags a test machine needs, a chat page opened as one user in its own browser context
// and awaited until it joined over WebSocket, and screenshots of every page in test-results/ when
// a test fails.

import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

import { repoRoot } from "./node.mjs";

/** How long one expected change of a page (a text, a message, a button) may take. */
export const WAIT_MS = 15_000;
/** Where the screenshots of a failed test go. */
export const RESULTS = join(repoRoot, "test-results");

/** Launches headless Chromium: `$CHROMIUM`, else Debian's `/usr/bin/chromium`. */
export function launchChromium() {
  return chromium.launch({
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
}

/** Resolves once the text of `selector` on `page` is exactly `text`. */
export function textIs(page, selector, text) {
  return page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want, [selector, text], {
    timeout: WAIT_MS,
  });
}

/**
 * Opens the chat of `server` (anything with a `url(path)`) as `nickname` in `room`, in its own
 * context of `browser` (own cookies and storage, like another user), and waits until it joined
 * over WebSocket on one of `nodeIds`; resolves with the node it shows. The page goes into
 * `pages[nickname]` before any wait (for the screenshot if one fails); its page errors and
 * console errors go into `problems`. `label` names the page load in the status check's message.
 */
async function openChat({ browser, server, nodeIds, label }, { pages, problems }, nickname, room) {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages[nickname] = page;
  page.on("pageerror", (err) => problems.push(`${nickname}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`${nickname}: console error: ${msg.text()} (${msg.location().url})`);
  });
  const res = await page.goto(server.url(`/?nickname=${nickname}&room=${room}`));
  assert.equal(res.status(), 200, `${label} for ${nickname}`);
  await textIs(page, "#state", "connected");
  await page.waitForFunction((ids) => ids.includes(document.querySelector("#node")?.textContent), nodeIds, {
    timeout: WAIT_MS,
  });
  await textIs(page, "#transport", "websocket");
  await textIs(page, "#room", room);
  await page.locator("#send").waitFor({ state: "visible", timeout: WAIT_MS });
  return page.locator("#node").textContent();
}

/**
 * Runs `body({open, pages, problems})` for test `t`. `open(nickname, room)` opens the chat of
 * `chat.server` in `chat.browser` as another user and resolves with the node it shows once the
 * page joined over WebSocket on one of `chat.nodeIds` (`chat.label`, e.g. "GET /", names the page
 * load in failure messages); `pages` holds the pages by nickname, `problems` their page and
 * console errors. The pages are closed afterwards. When it fails, each page's screenshot goes to
 * `test-results/<chat.screenshot(nickname)>` and the browser problems seen are printed as test
 * diagnostics.
 */
export async function withChatPages(t, chat, body) {
  const problems = [];
  const pages = {};
  try {
    return await body({ open: (nickname, room) => openChat(chat, { pages, problems }, nickname, room), pages, problems });
  } catch (err) {
    await mkdir(RESULTS, { recursive: true });
    for (const [name, page] of Object.entries(pages)) {
      const path = join(RESULTS, chat.screenshot(name));
      await page.screenshot({ path, fullPage: true }).catch(() => {});
      t.diagnostic(`screenshot of ${name}'s page: ${path}`);
    }
    if (problems.length) t.diagnostic(`browser problems:\n${problems.join("\n")}`);
    throw err;
  } finally {
    for (const page of Object.values(pages)) await page.context().close();
  }
}
