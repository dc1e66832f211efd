// Groq's flex tier in front of on-demand: a 498 moves the request to on-demand on the same
// organization at once, with no GPU call, and each tier is booked on its own books.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { GATEWAY_HASH, GATEWAY_KEY, startFakeUpstream, startRouter } from "./harness.mjs";

const MODEL = "llama-3.1-8b-instant";
const ADMIN_KEY = "sk-admin-flex-test-55";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
const KEYS = { GROQ_K1: "gsk-flex-k1-aaaa", GROQ_K3: "gsk-flex-k3-cccc", TOGETHER_K: "tg-flex-dddd" };
const ORG_OF = { GROQ_K1: "org-a", GROQ_K3: "org-b" };
const OK = JSON.stringify({
  id: "c",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
});
const CAPACITY = JSON.stringify({
  error: { message: "Flex tier capacity exceeded. Try again later.", type: "service_unavailable", code: "capacity_exceeded" },
});

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const keyOf = (call) => Object.entries(KEYS).find(([, v]) => call.headers.authorization === `Bearer ${v}`)?.[0];
const tierOf = (call) => JSON.parse(call.body).service_tier;

test("flex answers 498: on-demand on the same organization serves, no GPU call, each tier on its own books", async () => {
  const groq = await startFakeUpstream({ maxRequests: 200 });
  const together = await startFakeUpstream({ maxRequests: 10 });
  cleanups.push(() => groq.close(), () => together.close());
  // Every third flex call is out of capacity.
  let flexCalls = 0;
  groq.answer((call) => {
    if (tierOf(call) === "flex" && ++flexCalls % 3 === 0) {
      return { status: 498, headers: { "content-type": "application/json" }, body: CAPACITY };
    }
    return { status: 200, headers: { "content-type": "application/json" }, body: OK };
  });
  together.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK }));
  // Limits small enough that every request books with the bank (no lease), so that the books
  // count requests exactly.
  const window = { rpd: 10_000, tpm: 1_000_000, tpd: 10_000_000 };
  const config = {
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: [
          { id: "k1", secret: "GROQ_K1", org: "org-a" },
          { id: "k3", secret: "GROQ_K3", org: "org-b" },
        ],
        limits: { [MODEL]: { rpm: 30, ...window }, [`${MODEL}:flex`]: { rpm: 60, ...window } },
      },
      together: { base_url: together.baseUrl, keys: [{ id: "t", secret: "TOGETHER_K" }] },
    },
    routes: {
      fast: [{ target: `groq/${MODEL}`, service_tier: "flex" }, `groq/${MODEL}`],
      slow: ["together/m-t"],
    },
  };
  const router = await startRouter(
    { ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, ADMIN_KEY_HASHES: ADMIN_HASH, ...KEYS },
    { clock: true, secrets: [ADMIN_KEY] },
  );
  cleanups.push(() => router.dispose());
  router.toNextMinute();

  const REQUESTS = 24;
  const answers = [];
  for (let i = 0; i < REQUESTS; i++) {
    const before = groq.calls.length;
    const res = await router.fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
      // A client's own tier is not the router's to pass on here (no pass_fields).
      body: JSON.stringify({ model: "fast", service_tier: "on_demand", messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), OK);
    answers.push({ res, calls: groq.calls.slice(before) });
  }
  assert.equal(together.calls.length, 0, "no GPU call");

  let fellBack = 0;
  for (const { res, calls } of answers) {
    assert.equal(tierOf(calls[0]), "flex", "flex is tried first");
    if (calls.length === 1) {
      assert.equal(res.headers.get("x-router-tier"), "flex");
      assert.equal(res.headers.get("x-router-failover"), null);
      continue;
    }
    fellBack++;
    assert.equal(calls.length, 2);
    // On demand, at once, on the organization whose flex was full.
    assert.equal(tierOf(calls[1]), undefined, "the on-demand call asks for no tier");
    assert.equal(ORG_OF[keyOf(calls[1])], ORG_OF[keyOf(calls[0])]);
    assert.equal(res.headers.get("x-router-tier"), null);
    assert.equal(res.headers.get("x-router-model"), MODEL);
    assert.equal(res.headers.get("x-router-failover"), `groq/${MODEL}:flex=capacity`);
    assert.equal(res.headers.get("x-router-attempts"), "2");
  }
  assert.equal(fellBack, REQUESTS / 3);

  // The books of each tier, per organization, are what the fake served.
  const served = {};
  for (const { calls } of answers) {
    // The call that served is the last one; a 498 books nothing.
    const call = calls.at(-1);
    const key = `${ORG_OF[keyOf(call)]} ${tierOf(call) === "flex" ? `${MODEL}:flex` : MODEL}`;
    served[key] = (served[key] ?? 0) + 1;
  }
  const res = await router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const books = (await res.json()).providers.groq.organizations;
  const booked = {};
  for (const [org, models] of Object.entries(books)) {
    for (const model of [MODEL, `${MODEL}:flex`]) {
      const used = models[model]?.requests_per_minute?.used ?? 0;
      if (used) booked[`${org} ${model}`] = used;
    }
  }
  assert.deepEqual(booked, served);
  assert.equal(books["org-a"][`${MODEL}:flex`].requests_per_minute.limit, 60);
  assert.equal(books["org-a"][MODEL].requests_per_minute.limit, 30);
});
