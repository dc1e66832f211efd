// The latency-aware fast path seen from outside: one router, a Groq fake with two
// organizations, one of which has a slow tail. The router learns each target's time to first
// byte from its own attempts; a fast-path attempt with no first byte by the learned p90 is
// hedged with the other organization, within the configured share of requests. What each test
// checks is what clients got (status, time to the response, `x-router-hedged`) and what the
// fake received (its calls, by organization through each call's key).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { GATEWAY_HASH, GATEWAY_KEY, startFakeUpstream, startRouter } from "./harness.mjs";

const MODEL = "llama-3.1-8b-instant";
const ADMIN_KEY = "sk-admin-latency-7342";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
const ORGS = {
  "org-a": { id: "ka", secret: "GROQ_ORG_A", value: "gsk-latency-org-a-1111" },
  "org-b": { id: "kb", secret: "GROQ_ORG_B", value: "gsk-latency-org-b-2222" },
};
/** Windows too large to bind: every request is admitted from the isolate's leases. */
const PLENTY = { rpm: 1_000_000, rpd: 10_000_000, tpm: 1_000_000_000, tpd: 10_000_000_000 };
/** Requests measured per run, and sent first to learn the latency and take leases. */
const MEASURED = 2000;
const WARMUP = 300;
const IN_FLIGHT = 8;
/** The slow tail: every SLOW_EVERY-th call to organization a waits SLOW_MS. */
const SLOW_EVERY = 10;
const SLOW_MS = 600;
/** The share of requests that may be hedged, in the run with hedging. */
const HEDGE_PERCENT = 20;

const OK = JSON.stringify({
  id: "c",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
});

const orgOf = (call) =>
  Object.entries(ORGS).find(([, k]) => call.headers.authorization === `Bearer ${k.value}`)?.[0] ?? "unknown key";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A Groq fake whose organization a answers every SLOW_EVERY-th call after SLOW_MS. */
async function slowTailGroq() {
  const groq = await startFakeUpstream({ maxRequests: 2 * (MEASURED + WARMUP) * 2, lifetimeMs: 300_000 });
  let callsToA = 0;
  groq.answer((call) => {
    const slow = orgOf(call) === "org-a" && callsToA++ % SLOW_EVERY === 0;
    return { status: 200, headers: { "content-type": "application/json" }, body: OK, delayMs: slow ? SLOW_MS : 0 };
  });
  return groq;
}

async function latencyRouter(t, groq, failover) {
  const orgs = Object.keys(ORGS);
  const router = await startRouter(
    {
      ROUTER_CONFIG: {
        failover,
        providers: {
          groq: {
            base_url: groq.baseUrl,
            keys: orgs.map((org) => ({ id: ORGS[org].id, secret: ORGS[org].secret, org })),
            limits: { [MODEL]: PLENTY },
          },
        },
        routes: { fast: [`groq/${MODEL}`] },
      },
      GATEWAY_KEY_HASHES: GATEWAY_HASH,
      ADMIN_KEY_HASHES: ADMIN_HASH,
      ...Object.fromEntries(orgs.map((org) => [ORGS[org].secret, ORGS[org].value])),
    },
    { secrets: [ADMIN_KEY, GATEWAY_KEY] },
  );
  t.after(() => router.dispose());
  return router;
}

/** One fast-path chat request: its status, its time to the response headers, its headers. */
async function chat(router) {
  const started = performance.now();
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
    body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }], max_tokens: 16 }),
  });
  const ttfbMs = performance.now() - started;
  const text = await res.text();
  return { status: res.status, ttfbMs, text, hedged: res.headers.get("x-router-hedged"), headers: res.headers };
}

async function chatMany(router, total) {
  const answers = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < total) {
        next++;
        answers.push(await chat(router));
      }
    }),
  );
  return answers;
}

function p99(answers) {
  const sorted = answers.map((a) => a.ttfbMs).sort((a, b) => a - b);
  return sorted[Math.ceil(sorted.length * 0.99) - 1];
}

async function status(router) {
  const res = await router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `status: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** Warms a router up, then measures MEASURED requests; what the clients and the fake saw. */
async function measure(t, failover) {
  const groq = await slowTailGroq();
  t.after(() => groq.close());
  const router = await latencyRouter(t, groq, failover);
  const warm = await chatMany(router, WARMUP);
  for (const a of warm) assert.equal(a.status, 200, a.text.slice(0, 300));
  const before = groq.calls.length;
  const answers = await chatMany(router, MEASURED);
  for (const a of answers) assert.equal(a.status, 200, a.text.slice(0, 300));
  return { router, groq, answers, calls: groq.calls.length - before };
}

test("hedging halves the fast path's p99 time to first byte under one organization's slow tail, within its share of extra calls", async (t) => {
  const plain = await measure(t, { hedge_percent: 0 });
  const hedged = await measure(t, { hedge_percent: HEDGE_PERCENT });
  const [p99Plain, p99Hedged] = [p99(plain.answers), p99(hedged.answers)];
  const hedges = hedged.answers.filter((a) => a.hedged !== null);
  t.diagnostic(
    `p99 time to first byte: ${p99Plain.toFixed(1)} ms without hedging, ${p99Hedged.toFixed(1)} ms with; ` +
      `upstream calls for ${MEASURED} requests: ${plain.calls} and ${hedged.calls}; ${hedges.length} hedged ` +
      `(won by the hedge: ${hedges.filter((a) => a.hedged.endsWith("won=hedge")).length})`,
  );

  // Without hedging nothing is hedged, and each request is one call.
  assert.equal(plain.answers.filter((a) => a.hedged !== null).length, 0);
  assert.equal(plain.calls, MEASURED);
  assert.ok(p99Plain >= SLOW_MS, `without hedging the tail shows: p99 ${p99Plain} ms`);

  assert.ok(p99Hedged <= p99Plain / 2, `p99 ${p99Hedged} ms with hedging, ${p99Plain} ms without`);
  // Each hedge is at most one extra call (one cancelled before its request was all sent never
  // reaches the fake), and hedges stay within their share (the budget's burst of 2 on top).
  const extra = hedged.calls - MEASURED;
  assert.ok(extra > 0 && extra <= hedges.length, `${extra} extra calls for ${hedges.length} hedges`);
  assert.ok(hedges.length <= (MEASURED * HEDGE_PERCENT) / 100 + 2, `${hedges.length} hedges`);
  // A hedge goes to the other organization, and the header says who answered.
  for (const a of hedges) assert.match(a.hedged, /^after=\d+ms; won=(first|hedge|neither)$/);
  assert.ok(hedges.some((a) => a.hedged.endsWith("won=hedge")), "some hedges answered first");
  const winners = hedges.filter((a) => a.hedged.endsWith("won=hedge"));
  for (const a of winners) assert.equal(a.headers.get("x-router-failover"), null, "a cancelled attempt is no failure");

  // No over-admission: each request is on the organizations' day books once, the cancelled
  // attempts given back.
  const served = WARMUP + MEASURED;
  let seen;
  for (let i = 0; i < 100; i++) {
    const s = await status(hedged.router);
    const day = Object.keys(ORGS).map((org) => s.providers.groq.organizations?.[org]?.[MODEL]?.requests_per_day.used ?? 0);
    seen = { day, served };
    if (day[0] + day[1] === served) break;
    await sleep(100);
  }
  assert.equal(seen.day[0] + seen.day[1], served, `the day's books: ${JSON.stringify(seen)}`);

  // The status page shows what the isolate learned.
  const learned = (await status(hedged.router)).latency[`groq/${MODEL}`]?.json;
  assert.ok(learned, "the latency of the fast path's target is on the status page");
  assert.ok(learned.first_byte_p90_ms > 0 && learned.first_byte_p90_ms < SLOW_MS, JSON.stringify(learned));
});

test("a route ordered by latency moves to its fastest target once each is learned", async (t) => {
  const groq = await startFakeUpstream({ maxRequests: 100 });
  const together = await startFakeUpstream({ maxRequests: 100 });
  t.after(() => Promise.all([groq.close(), together.close()]));
  groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK, delayMs: 150 }));
  together.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK }));
  const router = await startRouter(
    {
      ROUTER_CONFIG: {
        providers: {
          groq: { base_url: groq.baseUrl, keys: [{ id: "ka", secret: "GROQ_ORG_A" }] },
          together: { base_url: together.baseUrl, keys: [{ id: "t1", secret: "TOGETHER_KEY" }] },
        },
        routes: { fast: { order: "latency", targets: [`groq/${MODEL}`, "together/meta-llama/Llama-3.3-70B-Instruct-Turbo"] } },
      },
      GATEWAY_KEY_HASHES: GATEWAY_HASH,
      ADMIN_KEY_HASHES: ADMIN_HASH,
      GROQ_ORG_A: ORGS["org-a"].value,
      TOGETHER_KEY: "tg-latency-order-3333",
    },
    { secrets: [ADMIN_KEY, GATEWAY_KEY] },
  );
  t.after(() => router.dispose());
  const servedBy = [];
  for (let i = 0; i < 40; i++) {
    const a = await chat(router);
    assert.equal(a.status, 200, a.text.slice(0, 300));
    servedBy.push(a.headers.get("x-router-provider"));
  }
  t.diagnostic(`served by, in order: ${servedBy.join(" ")}`);
  // The configured order first, while nothing is learned; each target is tried until its
  // latency is known; then the faster one serves.
  assert.equal(servedBy[0], "groq");
  assert.ok(servedBy.includes("together"));
  assert.deepEqual(new Set(servedBy.slice(-20)), new Set(["together"]));
  assert.ok(groq.calls.length <= 10, `${groq.calls.length} calls to the slow target`);
});
