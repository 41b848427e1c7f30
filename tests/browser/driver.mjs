// Drives one headless Chromium page for Sluice's real-browser tests.
//
// The Rust tests (sluice-testkit's `browser` module) start this script and talk to it over
// stdin/stdout, one JSON object per line each way, so the test logic — processes, proxies,
// publishing, assertions — stays in Rust and this file only knows the browser:
//
//   {"cmd":"open","url":"http://…"}                        → {"ok":true}
//   {"cmd":"eval","expr":"window.sluiceDemo.received.length"} → {"ok":true,"value":12}
//   {"cmd":"wait","expr":"…","timeout_ms":10000}          → {"ok":true,"value":…} once truthy
//   {"cmd":"click","selector":"#drop"}                      → {"ok":true}
//   {"cmd":"fill","selector":"#pub-data","value":"…"}       → {"ok":true}
//   {"cmd":"screenshot","path":"target/…png"}              → {"ok":true}
//   {"cmd":"errors"}                                        → {"ok":true,"value":[page errors]}
//   {"cmd":"quit"}                                          → {"ok":true}, then exit
//
// A failed command answers {"ok":false,"error":"…"}. Chromium is Debian's (`/usr/bin/chromium`,
// or $SLUICE_CHROMIUM), never a downloaded one.

import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const executablePath = process.env.SLUICE_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  // The machine's network is closed: background networking would only produce refused
  // connections. No sandbox: CI runs as root.
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
page.on("console", (msg) => { if (msg.type() === "error") errors.push(`console: ${msg.text()}`); });

const reply = (answer) => process.stdout.write(`${JSON.stringify(answer)}\n`);

async function waitFor(expr, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await page.evaluate(expr);
    if (last) return { ok: true, value: last };
    if (Date.now() > deadline) return { ok: false, error: `timed out after ${timeoutMs} ms waiting for: ${expr}`, value: last };
    await new Promise((resolve) => setTimeout(resolve, 50)); // polling interval, not a sync point
  }
}

async function handle(command) {
  switch (command.cmd) {
    case "open":
      await page.goto(command.url, { waitUntil: "load" });
      return { ok: true };
    case "eval":
      return { ok: true, value: await page.evaluate(command.expr) };
    case "wait":
      return await waitFor(command.expr, command.timeout_ms ?? 10000);
    case "click":
      await page.click(command.selector);
      return { ok: true };
    case "fill":
      await page.fill(command.selector, command.value);
      return { ok: true };
    case "screenshot":
      mkdirSync(dirname(command.path), { recursive: true });
      await page.screenshot({ path: command.path, fullPage: true });
      return { ok: true };
    case "errors":
      return { ok: true, value: errors };
    case "quit":
      return { ok: true, quit: true };
    default:
      return { ok: false, error: `unknown command ${JSON.stringify(command.cmd)}` };
  }
}

reply({ ok: true, ready: true, chromium: browser.version() });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (err) {
    answer = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  reply(answer);
  if (answer.quit) break;
}
await browser.close();
// stdin is still open (the test holds it); end without waiting for it.
process.exit(0);
