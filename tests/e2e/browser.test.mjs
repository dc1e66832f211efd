// A browser app on an allowed origin calls the router with fetch (streaming) and reads the
// router's headers; a page on another origin is refused. Headless Chromium (Debian's package)
// driven by playwright-core; pages are served from 127.0.0.1.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { GATEWAY_KEY, gate, launchChromium, startPageServer, startTwoProviders } from "./harness.mjs";

const EVENTS = [
  'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
  'data: {"choices":[{"delta":{"content":" browser"}}]}\n\n',
  "data: [DONE]\n\n",
];

let scenario, groq, router, allowed, denied, browser;

before(async () => {
  allowed = await startPageServer();
  denied = await startPageServer();
  scenario = await startTwoProviders({ gateway: { cors_origins: [allowed.origin] } });
  ({ groq, router } = scenario);
  groq.answer(() => ({ status: 200, headers: { "content-type": "text/event-stream" }, body: EVENTS }));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await scenario?.close();
  await allowed?.close();
  await denied?.close();
});

/**
 * Runs a streaming chat call with fetch inside a page of `origin`; the page calls `onFirst`
 * (in Node) once it has read its first chunk, and waits for it before reading on.
 */
async function callFrom(origin, key, onFirst = () => {}) {
  const page = await browser.newPage();
  try {
    await page.exposeFunction("firstChunkRead", onFirst);
    await page.goto(`${origin}/`);
    const result = await page.evaluate(
      async ({ url, key }) => {
        try {
          const res = await fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            body: JSON.stringify({ model: "fast", stream: true, messages: [{ role: "user", content: "hi" }] }),
          });
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          let text = "";
          let first = null;
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
            if (first === null) {
              first = text;
              await window.firstChunkRead();
            }
          }
          const headers = JSON.stringify([...res.headers]);
          return {
            status: res.status,
            provider: res.headers.get("x-router-provider"),
            quota: res.headers.get("x-router-quota"),
            text,
            first,
            headers,
          };
        } catch (e) {
          return { failed: String(e) };
        }
      },
      { url: router.url, key },
    );
    // What the page saw joins the harness's key-leak check.
    router.seen.push(result.text ?? "", result.headers ?? "");
    return result;
  } finally {
    await page.close();
  }
}

test("an allowed origin streams a completion and reads the router's headers", async () => {
  groq.reset();
  // The fake sends the rest only once the page has read the first event.
  const held = gate();
  groq.answer(() => ({ status: 200, headers: { "content-type": "text/event-stream" }, body: [EVENTS[0], held.part(EVENTS[1]), EVENTS[2]] }));
  const got = await callFrom(allowed.origin, GATEWAY_KEY, () => held.open());
  assert.equal(got.failed, undefined, got.failed);
  assert.equal(got.status, 200);
  assert.equal(got.provider, "groq", "x-router-provider is exposed to scripts");
  assert.match(got.quota ?? "", /^(lease|bank)$/, "x-router-quota is exposed to scripts");
  assert.equal(got.text, EVENTS.join(""));
  assert.equal(got.first, EVENTS[0], "the page read the first event on its own");
  assert.equal(held.openedInTime, true, "the page had the first event while the upstream held the rest");
  assert.equal(groq.calls.length, 1);
});

test("an allowed origin can read an error's status and body", async () => {
  groq.reset();
  const page = await browser.newPage();
  try {
    await page.goto(`${allowed.origin}/`);
    const got = await page.evaluate(async (url) => {
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer wrong", "content-type": "application/json" },
        body: "{}",
      });
      return { status: res.status, body: await res.json() };
    }, router.url);
    assert.equal(got.status, 401);
    assert.equal(got.body.error.code, "invalid_api_key");
  } finally {
    await page.close();
  }
  assert.equal(groq.calls.length, 0);
});

test("another origin is refused by the browser and nothing reaches the upstream", async () => {
  groq.reset();
  const got = await callFrom(denied.origin, GATEWAY_KEY);
  assert.match(got.failed ?? "", /TypeError|Failed to fetch/);
  assert.equal(groq.calls.length, 0);
});
