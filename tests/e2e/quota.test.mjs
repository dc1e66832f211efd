// The quota ledger seen from outside: which key each request used at the fake, what the client
// got when no key had room, and what survives a restart.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { GATEWAY_HASH, GATEWAY_KEY, readError, startFakeUpstream, startRouter } from "./harness.mjs";

const MODEL = "llama-3.1-8b-instant";
const ADMIN_KEY = "sk-admin-test-987";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
const KEYS = { GROQ_K1: "gsk-k1-aaaa", GROQ_K2: "gsk-k2-bbbb", GROQ_K3: "gsk-k3-cccc" };
const OK = JSON.stringify({
  id: "c",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
});

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A Groq fake and a router whose only route is Groq, with three keys in two organizations. */
async function setup(limits, { persistDir, fake } = {}) {
  const groq = fake ?? (await startFakeUpstream({ maxRequests: 200 }));
  groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK }));
  const config = {
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: [
          { id: "k1", secret: "GROQ_K1", org: "org-a" },
          { id: "k2", secret: "GROQ_K2", org: "org-a" },
          { id: "k3", secret: "GROQ_K3", org: "org-b" },
        ],
        limits: { [MODEL]: limits },
      },
    },
    routes: { fast: [`groq/${MODEL}`] },
  };
  const router = await startRouter(
    { ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, ADMIN_KEY_HASHES: ADMIN_HASH, ...KEYS },
    { persistDir, clock: true, secrets: [ADMIN_KEY] },
  );
  return { groq, router };
}

async function chat(router) {
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
    body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }] }),
  });
  return { res, body: await res.text() };
}

async function status(router) {
  const res = await router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  assert.equal(res.status, 200);
  return (await res.json()).providers.groq;
}

/** Settlement happens after the response (wait_until): poll the status page until it shows. */
async function eventually(router, predicate) {
  for (let i = 0; i < 100; i++) {
    if (predicate(await status(router))) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail("the ledger never showed the expected state");
}

const keyOf = (call) => Object.entries(KEYS).find(([, v]) => call.headers.authorization === `Bearer ${v}`)?.[0];

test("requests spread by headroom across organizations, one key per organization, then 429 with retry-after", async () => {
  const { groq, router } = await setup({ rpd: 3, rpm: 1000, tpm: 100000, tpd: 1000000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  // Two minutes before midnight UTC on the router's clock, when the day windows end.
  const DAY = 86_400_000;
  router.advance(DAY - (router.now() % DAY) - 120_000);
  const dayEnd = router.now() - (router.now() % DAY) + DAY;
  const results = [];
  for (let i = 0; i < 6; i++) {
    const { res } = await chat(router);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-router-quota-calls"), "1");
    results.push(keyOf(groq.calls[i]));
  }
  // Headroom alternates the organizations; k2 shares org-a's quota with k1, so it is not used.
  assert.deepEqual(results, ["GROQ_K1", "GROQ_K3", "GROQ_K1", "GROQ_K3", "GROQ_K1", "GROQ_K3"]);
  const sent = router.now();
  const { res, body } = await chat(router);
  const answered = router.now();
  assert.equal(res.status, 429);
  const err = JSON.parse(body).error;
  assert.equal(err.code, "quota_exhausted");
  // The daily window is what is full: retry at midnight UTC, in whole seconds rounded up.
  const retry = Number(res.headers.get("retry-after"));
  const [soonest, latest] = [Math.ceil((dayEnd - answered) / 1000), Math.ceil((dayEnd - sent) / 1000)];
  assert.ok(retry >= soonest && retry <= latest, `retry-after ${retry}, expected ${soonest}..${latest}`);
  assert.equal(groq.calls.length, 6, "the seventh request never reached Groq");
  const s = await status(router);
  assert.equal(s.organizations["org-a"][MODEL].requests_per_day.used, 3);
  assert.equal(s.organizations["org-b"][MODEL].requests_per_day.limit, 3);
  assert.equal(s.organizations["org-a"][MODEL].requests_per_day.resets_at_ms, dayEnd);
  // A new day, a new window.
  router.advance(dayEnd - router.now() + 1_000);
  assert.equal((await chat(router)).res.status, 200);
  assert.equal(groq.calls.length, 7);
});

test("a retry-after of a week cools an organization down for a day at most", async () => {
  const { groq, router } = await setup({ rpm: 1000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  groq.answer((call) =>
    keyOf(call) === "GROQ_K1"
      ? { status: 429, headers: { "content-type": "application/json", "retry-after": "604800" }, body: '{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}' }
      : { status: 200, headers: { "content-type": "application/json" }, body: OK },
  );
  const sent = router.now();
  assert.equal((await chat(router)).res.status, 200);
  await eventually(router, (s) => s.organizations["org-a"]?.[MODEL]?.cooldown_until_ms > s.now_ms);
  const until = (await status(router)).organizations["org-a"][MODEL].cooldown_until_ms;
  assert.ok(until <= router.now() + 86_400_000 && until >= sent + 86_400_000, `cooldown until ${until}, ${until - sent} ms after the request`);
  // A day later the organization is called again.
  router.advance(86_400_000 + 1_000);
  groq.reset();
  groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK }));
  for (let i = 0; i < 2 && !groq.calls.some((c) => keyOf(c) === "GROQ_K1"); i++) await chat(router);
  assert.ok(groq.calls.some((c) => keyOf(c) === "GROQ_K1"), "org-a serves again after a day");
});

test("a 429 moves the request to the other organization, which cools down the first for the next ones", async () => {
  const { groq, router } = await setup({ rpm: 1000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  groq.answer((call) =>
    keyOf(call) === "GROQ_K1"
      ? {
          status: 429,
          headers: { "content-type": "application/json", "retry-after": "30" },
          body: JSON.stringify({ error: { message: "Rate limit reached ... on requests per minute (RPM)", type: "requests", code: "rate_limit_exceeded" } }),
        }
      : { status: 200, headers: { "content-type": "application/json" }, body: OK },
  );
  const first = await chat(router);
  assert.equal(first.res.status, 200);
  assert.equal(first.body, OK);
  // k2 shares org-a's quota: the retry goes to org-b.
  assert.deepEqual(groq.calls.map(keyOf), ["GROQ_K1", "GROQ_K3"]);
  assert.equal(first.res.headers.get("x-router-attempts"), "2");
  assert.equal(first.res.headers.get("x-router-failover"), `groq/${MODEL}=rate_limited`);
  assert.equal(first.res.headers.get("x-router-quota-calls"), "2");
  await eventually(router, (s) => s.organizations["org-a"]?.[MODEL]?.cooldown_until_ms > s.now_ms);
  const second = await chat(router);
  assert.equal(second.res.status, 200);
  assert.equal(second.res.headers.get("x-router-attempts"), "1");
  assert.equal(keyOf(groq.calls[2]), "GROQ_K3");
});

test("a 401 disables the key; the organization's other key serves the next request", async () => {
  const { groq, router } = await setup({ rpm: 1000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  groq.answer((call) =>
    keyOf(call) === "GROQ_K1"
      ? { status: 401, headers: { "content-type": "application/json" }, body: '{"error":{"message":"Invalid API Key","code":"invalid_api_key"}}' }
      : { status: 200, headers: { "content-type": "application/json" }, body: OK },
  );
  // The request itself fails over to another key.
  const first = await chat(router);
  assert.equal(first.res.status, 200);
  assert.equal(keyOf(groq.calls[0]), "GROQ_K1");
  assert.equal(first.res.headers.get("x-router-failover"), `groq/${MODEL}=auth`);
  await eventually(router, (s) => s.disabled_keys.some((k) => k.key_id === "k1"));
  const s = await status(router);
  assert.deepEqual(
    s.disabled_keys.map(({ key_id, status }) => ({ key_id, status })),
    [{ key_id: "k1", status: 401 }],
  );
  assert.deepEqual(Object.keys(s.disabled_keys[0]).sort(), ["key_id", "model", "status", "until_ms"]);
  assert.ok(!JSON.stringify(s).includes(KEYS.GROQ_K1), "the status page shows key ids, never keys");
  for (let i = 0; i < 4; i++) assert.equal((await chat(router)).res.status, 200);
  assert.ok(!groq.calls.slice(1).map(keyOf).includes("GROQ_K1"), "k1 is not used again");
  assert.equal(groq.calls.length, 6);
});

test("50 concurrent requests against an RPM of 10 per organization: exactly 10 reach each", async () => {
  const groq = await startFakeUpstream({ maxRequests: 200 });
  // Tokens are plentiful here: only the request windows bind.
  const { router } = await setup({ rpm: 10, tpm: 10_000_000 }, { fake: groq });
  cleanups.push(() => router.dispose(), () => groq.close());
  // All in one minute window: the router's clock starts it at the start of a minute.
  router.toNextMinute();
  const statuses = await Promise.all(
    Array.from({ length: 50 }, async () => {
      const res = await router.fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
        body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }] }),
      });
      await res.arrayBuffer();
      return res.status;
    }),
  );
  const byKey = {};
  for (const c of groq.calls) byKey[keyOf(c)] = (byKey[keyOf(c)] ?? 0) + 1;
  // Two organizations, each with an RPM of 10.
  assert.deepEqual(byKey, { GROQ_K1: 10, GROQ_K3: 10 });
  assert.equal(statuses.filter((s) => s === 200).length, 20);
  assert.equal(statuses.filter((s) => s === 429).length, 30);
});

test("the ledger survives a restart on the same storage", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "edge-router-quota-"));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const groq = await startFakeUpstream({ maxRequests: 50 });
  cleanups.push(() => groq.close());
  const limits = { rpd: 1, rpm: 1000 };
  let { router } = await setup(limits, { persistDir: dir, fake: groq });
  assert.equal((await chat(router)).res.status, 200);
  assert.equal((await chat(router)).res.status, 200);
  await router.dispose();
  ({ router } = await setup(limits, { persistDir: dir, fake: groq }));
  cleanups.push(() => router.dispose());
  const s = await status(router);
  assert.equal(s.organizations["org-a"][MODEL].requests_per_day.used, 1);
  assert.equal(s.organizations["org-b"][MODEL].requests_per_day.used, 1);
  const third = await chat(router);
  assert.equal(third.res.status, 429);
  assert.equal(groq.calls.length, 2);
});

test("the status page needs the admin key, not a gateway key", async () => {
  const { groq, router } = await setup({ rpm: 10 });
  cleanups.push(() => router.dispose(), () => groq.close());
  for (const auth of [undefined, `Bearer ${GATEWAY_KEY}`]) {
    const res = await router.fetch("/v1/router/status", { headers: auth ? { authorization: auth } : {} });
    assert.equal(res.status, 401);
    await readError(assert, res);
  }
});

test("after the response, the estimate is replaced by the real usage and the provider's headers", async () => {
  const { groq, router } = await setup({ rpm: 1000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  // The per-minute count is read after settlement: all in one minute on the router's clock.
  router.toNextMinute();
  groq.answer(() => ({
    status: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      id: "c",
      object: "chat.completion",
      choices: [],
      usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12, prompt_tokens_details: { cached_tokens: 4 } },
    }),
  }));
  const { res, body } = await chat(router);
  assert.equal(res.status, 200);
  assert.match(body, /"cached_tokens":4/, "the client still gets the whole body");
  // 10 prompt - 4 cached + 2 completion.
  await eventually(router, (s) => s.organizations["org-a"]?.[MODEL]?.tokens_per_minute.used === 8);
  // Groq's own headers say more of the day is spent than the ledger knows: the stricter wins.
  groq.answer(() => ({
    status: 200,
    headers: {
      "content-type": "application/json",
      "x-ratelimit-limit-requests": "14400",
      "x-ratelimit-remaining-requests": "14000",
      "x-ratelimit-limit-tokens": "6000",
      "x-ratelimit-remaining-tokens": "5000",
      "x-ratelimit-reset-tokens": "7.66s",
    },
    body: OK,
  }));
  await chat(router);
  await eventually(router, (s) => {
    const b = s.organizations["org-b"]?.[MODEL];
    return b?.requests_per_day.used === 400 && b?.tokens_per_minute.used === 1000;
  });
});

test("a streamed answer settles with the usage of its last chunk, after the client has it", async () => {
  const { groq, router } = await setup({ rpm: 1000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  // The per-minute count is read after settlement: all in one minute on the router's clock.
  router.toNextMinute();
  const stream = [
    'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n',
    'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":30,"completion_tokens":9,"total_tokens":39}}}\n\n',
    "data: [DONE]\n\n",
  ];
  groq.answer(() => ({ status: 200, headers: { "content-type": "text/event-stream" }, body: stream }));
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
    body: JSON.stringify({ model: "fast", stream: true, max_tokens: 500, messages: [{ role: "user", content: "hi" }] }),
  });
  assert.equal(await res.text(), stream.join(""));
  // The booking was the estimate (> 500 tokens); after the stream it is the real 39.
  await eventually(router, (s) => s.organizations["org-a"]?.[MODEL]?.tokens_per_minute.used === 39);
});

test("when the provider has refused every key, the client gets a 502, not a 429, and the log names the secrets", async () => {
  const { groq, router } = await setup({ rpm: 1000 });
  cleanups.push(() => router.dispose(), () => groq.close());
  groq.answer(() => ({ status: 403, headers: { "content-type": "application/json" }, body: '{"error":{"message":"forbidden"}}' }));
  // One request tries each key once.
  const first = await chat(router);
  assert.equal(first.res.status, 502);
  assert.equal(first.res.headers.get("x-router-attempts"), "3");
  assert.deepEqual(groq.calls.map(keyOf).sort(), ["GROQ_K1", "GROQ_K2", "GROQ_K3"]);
  await eventually(router, (s) => s.disabled_keys.length === 3);
  const { res, body } = await chat(router);
  assert.equal(res.status, 502);
  const err = JSON.parse(body).error;
  assert.equal(err.code, "upstream_auth_failed");
  assert.doesNotMatch(err.message, /GROQ_K/, "the secrets' names are the operator's");
  const lines = router.logs.filter((l) => l.includes("upstream_auth_failed"));
  assert.ok(lines.some((l) => /GROQ_K1, GROQ_K2, GROQ_K3/.test(l)), router.logs.join("\n"));
  assert.equal(groq.calls.length, 3, "the second request was not sent");
});
