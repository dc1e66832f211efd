// The two-level quota ledger seen from outside: several router isolates (Workers `router-1` ..
// `router-n` in one workerd) share one bank (the `QuotaObject` Durable Object, one object per
// provider and organization). What each test checks is what clients got (status, error code,
// `retry-after`, `x-router-quota`, `x-router-quota-calls`), what the fake Groq received (its
// calls, and through each call's key, the organization) and what the status page shows.
// Each test starts its own routers and fakes; none sleeps past a cooldown: they poll the status
// page in bounded loops.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { GATEWAY_HASH, GATEWAY_KEY, startFakeUpstream, startRouters } from "./harness.mjs";

const MODEL = "llama-3.1-8b-instant";
/** What the groq preset publishes as this model's largest output. */
const MAX_OUTPUT_TOKENS = 131072;
const ADMIN_KEY = "sk-admin-leases-5150";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
/** One key per organization. */
const ORGS = {
  "org-a": { id: "ka", secret: "GROQ_ORG_A", value: "gsk-leases-org-a-1111" },
  "org-b": { id: "kb", secret: "GROQ_ORG_B", value: "gsk-leases-org-b-2222" },
};
/** Windows too large to bind, for the tests where only one window should. */
const PLENTY = { rpm: 1_000_000, rpd: 10_000_000, tpm: 1_000_000_000, tpd: 10_000_000_000 };

const OK = JSON.stringify({
  id: "c",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
});
const ok = () => ({ status: 200, headers: { "content-type": "application/json" }, body: OK });
const badRequest = (message, param = null) => ({
  status: 400,
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ error: { message, type: "invalid_request_error", param } }),
});
const tooMany = (seconds) => ({
  status: 429,
  headers: { "content-type": "application/json", "retry-after": String(seconds) },
  body: JSON.stringify({
    error: { message: "Rate limit reached for model on requests per minute (RPM)", type: "requests", code: "rate_limit_exceeded" },
  }),
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The organization of a call the fake received, from the key it carried. */
const orgOf = (call) =>
  Object.entries(ORGS).find(([, k]) => call.headers.authorization === `Bearer ${k.value}`)?.[0] ?? "unknown key";

function callsByOrg(fake) {
  const counts = {};
  for (const call of fake.calls) counts[orgOf(call)] = (counts[orgOf(call)] ?? 0) + 1;
  return counts;
}

/** The output-token limit the router sent upstream (Groq's preset uses max_completion_tokens). */
const sentMaxTokens = (call) => {
  const body = JSON.parse(call.body || "{}");
  return body.max_completion_tokens ?? body.max_tokens;
};

/**
 * A fake Groq and `n` routers whose only route is Groq's `MODEL`, with one key per organization
 * in `orgs`. `limits` are the model's limits (null: the preset's). Stopped when the test ends,
 * with the leak check on everything the clients saw and every log line.
 */
async function fleet(t, n, limits, { orgs = ["org-a", "org-b"], failover, bank, bankState, persistDir } = {}) {
  const groq = await startFakeUpstream({ maxRequests: 1000 });
  groq.answer(ok);
  const config = {
    ...(failover ? { failover } : {}),
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: orgs.map((org) => ({ id: ORGS[org].id, secret: ORGS[org].secret, org })),
        ...(limits ? { limits: { [MODEL]: limits } } : {}),
      },
    },
    routes: { fast: [`groq/${MODEL}`] },
  };
  const bindings = {
    ROUTER_CONFIG: config,
    GATEWAY_KEY_HASHES: GATEWAY_HASH,
    ADMIN_KEY_HASHES: ADMIN_HASH,
    ...Object.fromEntries(orgs.map((org) => [ORGS[org].secret, ORGS[org].value])),
  };
  const routers = await startRouters(n, () => bindings, {
    bank,
    bankState,
    persistDir,
    secrets: [ADMIN_KEY, GATEWAY_KEY, ...Object.values(ORGS).map((k) => k.value)],
    clock: true,
  });
  t.after(async () => {
    try {
      await routers.dispose();
    } finally {
      await groq.close();
    }
  });
  return {
    groq,
    routers: routers.routers,
    bank: routers.bank,
    restart: () => routers.restart(),
    // Minute windows are aligned to the clock: tests that count a minute's admissions move
    // the routers' clock to the start of a minute first.
    toNextMinute: () => routers.toNextMinute(),
    now: () => routers.now(),
  };
}

/** One chat request; everything the client got, body read. */
async function chat(router, body = {}) {
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
    body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }], ...body }),
  });
  const text = await res.text();
  let error;
  if (res.status !== 200) {
    try {
      error = JSON.parse(text).error;
    } catch {
      error = { unparsed: text.slice(0, 200) };
    }
  }
  return {
    status: res.status,
    headers: res.headers,
    text,
    error,
    quota: res.headers.get("x-router-quota"),
    quotaCalls: res.headers.get("x-router-quota-calls"),
  };
}

/** Sends `total` requests through `router` with `inFlight` at a time; answers in send order. */
async function chatMany(router, total, inFlight, body = {}, during = () => {}) {
  const answers = new Array(total);
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < total) {
        const i = next++;
        answers[i] = await chat(router, body);
        await during(i);
      }
    }),
  );
  return answers;
}

async function status(router) {
  const res = await router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `status page: ${text.slice(0, 300)}`);
  return JSON.parse(text).providers.groq;
}

/** The status page's entry for `org` and `MODEL` (undefined before its first booking). */
const entry = (groqStatus, org) => groqStatus.organizations?.[org]?.[MODEL];

/**
 * Polls `check` (which returns `{ok, seen}`) until it holds `times` polls in a row, at most
 * `tries` polls `everyMs` apart; fails with what it saw last.
 */
async function eventually(what, check, { tries = 200, everyMs = 50, times = 1 } = {}) {
  let seen;
  let inARow = 0;
  for (let i = 0; i < tries; i++) {
    const result = await check();
    seen = result.seen;
    inARow = result.ok ? inARow + 1 : 0;
    if (inARow >= times) return seen;
    await sleep(everyMs);
  }
  assert.fail(`${what}: not seen after ${tries} polls; last seen: ${JSON.stringify(seen)}`);
}


/** The routers did call the bank (through the proxy), each call naming its object "groq/<org>". */
async function assertShardedCalls(bank) {
  const stats = await bank.stats();
  assert.ok(stats.calls > 0, "the routers called the bank");
  assert.equal(stats.unsharded, 0, "calls without x-quota-shard");
  for (const shard of Object.keys(stats.by_shard)) assert.ok(["groq/org-a", "groq/org-b"].includes(shard), `shard ${shard}`);
}

function assertQuotaExhausted(answer) {
  assert.equal(answer.status, 429, `expected 429, got ${answer.status}: ${answer.text.slice(0, 300)}`);
  assert.equal(answer.error?.code, "quota_exhausted");
  const retry = Number(answer.headers.get("retry-after"));
  assert.ok(Number.isInteger(retry) && retry >= 1, `retry-after: ${answer.headers.get("retry-after")}`);
  return retry;
}

test("4 routers x 50 concurrent requests at RPM 30 per organization: exactly 30 reach each organization, the rest get 429", async (t) => {
  // The bank is always waited for here: on a loaded machine 200 calls queued on one object can
  // outlast the default quota_timeout_ms, and a request that stops waiting goes on `advisory`,
  // which is allowed to over-admit (tested apart below). This test is about exact bookings.
  const f = await fleet(t, 4, { ...PLENTY, rpm: 30 }, { failover: { quota_timeout_ms: 30_000 } });
  f.toNextMinute();
  const minuteEnd = f.now() - (f.now() % 60_000) + 60_000;
  const started = f.now();
  const answers = await Promise.all(f.routers.flatMap((r) => Array.from({ length: 50 }, () => chat(r))));

  assert.deepEqual(callsByOrg(f.groq), { "org-a": 30, "org-b": 30 });
  const served = answers.filter((a) => a.status === 200);
  assert.equal(served.length, 60);
  for (const a of served) {
    // A lease would be at most 30/16 requests, fewer than 2: every admission is a booking,
    // with the organization the router chose, or then with the other one.
    assert.equal(a.quota, "bank");
    assert.ok(["1", "2"].includes(a.quotaCalls), `x-router-quota-calls: ${a.quotaCalls}`);
  }
  // Refused until the minute's end: retry-after counts the seconds to it, rounded up.
  const latest = Math.ceil((minuteEnd - started) / 1000);
  const soonest = Math.ceil((minuteEnd - f.now()) / 1000);
  for (const a of answers.filter((a) => a.status !== 200)) {
    const retry = assertQuotaExhausted(a);
    assert.ok(retry >= soonest && retry <= latest, `retry-after ${retry}, expected ${soonest}..${latest}`);
  }
  const s = await status(f.routers[3]);
  for (const org of ["org-a", "org-b"]) {
    assert.equal(entry(s, org).requests_per_minute.used, 30);
    assert.equal(entry(s, org).requests_per_minute.limit, 30);
    assert.deepEqual(entry(s, org).leases, []);
  }
});

/**
 * Organization A answers 429 (retry-after 30 s) from now on: requests go through router-1 (at most
 * `tries`) until one has met it, the request itself failing over to B, and then the bank shows
 * A's cooldown on the status page.
 */
async function refuseOrgA(f, tries) {
  f.groq.answer((call) => (orgOf(call) === "org-a" ? tooMany(30) : ok()));
  for (let i = 0; i < tries && !f.groq.calls.some((c) => orgOf(c) === "org-a"); i++) {
    assert.equal((await chat(f.routers[0])).status, 200);
  }
  assert.ok(f.groq.calls.some((c) => orgOf(c) === "org-a"), "router-1 tried organization A");
  await eventually("the bank shows A's cooldown", async () => {
    const s = await status(f.routers[0]);
    const a = entry(s, "org-a");
    return { ok: a?.cooldown_until_ms > s.now_ms + 20_000, seen: { now_ms: s.now_ms, a } };
  });
}

test("after a 429 on organization A, once the bank shows A's cooldown, no router sends to A", async (t) => {
  const f = await fleet(t, 4, { ...PLENTY, rpm: 30 });
  await refuseOrgA(f, 4);

  f.groq.reset();
  const answers = await Promise.all(f.routers.flatMap((r) => [chat(r), chat(r), chat(r)]));
  for (const a of answers) {
    assert.equal(a.status, 200);
    assert.equal(a.headers.get("x-router-attempts"), "1", "no attempt was spent on A");
  }
  assert.deepEqual(callsByOrg(f.groq), { "org-b": 12 });
});

test("after a 429 on organization A, routers holding leases on A send it at most one more request each", async (t) => {
  // Large windows: the routers hold leases, which the bank cannot call back.
  const f = await fleet(t, 4, { rpm: 100_000, rpd: 10_000_000, tpm: 1_000_000_000, tpd: 10_000_000_000 });
  await eventually(
    "the routers hold leases on organization A",
    async () => {
      await Promise.all(f.routers.map((r) => chatMany(r, 6, 2)));
      const a = entry(await status(f.routers[0]), "org-a");
      return { ok: (a?.leases ?? []).length >= 1, seen: a };
    },
    { tries: 10 },
  );
  f.groq.reset();
  await refuseOrgA(f, 10);

  f.groq.reset();
  const answers = await Promise.all(f.routers.map((r) => chatMany(r, 5, 1)));
  for (const a of answers.flat()) assert.equal(a.status, 200);
  const toA = f.groq.calls.filter((c) => orgOf(c) === "org-a").length;
  // router-1 knows already; each other router may learn it from its own 429, once (a lease is
  // not called back: the bank's cooldown reaches a lease holder at its next exchange).
  assert.ok(toA <= 3, `${toA} more calls reached organization A after the bank showed its cooldown`);
  assert.equal(callsByOrg(f.groq)["org-b"], 20);
});

test("max_tokens above the model's largest output: the router's own 400, nothing sent, the organization stays open", async (t) => {
  // The preset's limits, max_output_tokens included.
  const f = await fleet(t, 1, null, { orgs: ["org-a"] });
  const router = f.routers[0];
  // Groq's own answer to such a request.
  f.groq.answer((call) =>
    sentMaxTokens(call) > MAX_OUTPUT_TOKENS
      ? badRequest(`\`max_tokens\` must be less than or equal to \`${MAX_OUTPUT_TOKENS}\``, "max_tokens")
      : ok(),
  );
  const huge = 1_000_000_000_000_000;
  for (const body of [
    { model: MODEL, max_tokens: huge },
    { model: MODEL, max_tokens: huge, stream: true },
    { model: MODEL, max_completion_tokens: huge },
  ]) {
    const a = await chat(router, body);
    assert.equal(a.status, 400, `${JSON.stringify(body)}: ${a.text.slice(0, 300)}`);
    assert.match(a.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(a.error.type, "invalid_request_error");
    if ("max_tokens" in body) assert.equal(a.error.param, "max_tokens");
    else assert.match(a.error.param, /^max_(completion_)?tokens$/);
    assert.equal(a.quotaCalls ?? "0", "0", "no booking");
  }
  assert.equal(f.groq.calls.length, 0, "the fake received nothing");
  const before = entry(await status(router), "org-a");
  assert.equal(before?.requests_per_minute.used ?? 0, 0);
  assert.equal(before?.tokens_per_minute.used ?? 0, 0);

  for (let i = 0; i < 3; i++) {
    const a = await chat(router, { model: MODEL });
    assert.equal(a.status, 200, a.text.slice(0, 300));
  }
  assert.deepEqual(callsByOrg(f.groq), { "org-a": 3 });
});

test("an upstream 400 to a request just under the largest output gives its tokens back: the organization stays open", async (t) => {
  // TPM 135000: the rejected request's booking (131000 + its prompt) leaves less than the next
  // request needs (8000 + its prompt) unless it is given back. RPM 30: no leases.
  const f = await fleet(t, 1, { ...PLENTY, rpm: 30, tpm: 135_000 }, { orgs: ["org-a"] });
  const router = f.routers[0];
  f.groq.answer((call) =>
    sentMaxTokens(call) === 131_000 ? badRequest("messages[0].content: this content part is not supported", "messages") : ok(),
  );
  const rejected = await chat(router, { model: MODEL, max_tokens: 131_000 });
  assert.equal(rejected.status, 400, rejected.text.slice(0, 300));
  assert.equal(f.groq.calls.length, 1, "this one was sent: Groq itself refused it");
  assert.equal(orgOf(f.groq.calls[0]), "org-a");

  await eventually("the rejected request's tokens are given back", async () => {
    const a = entry(await status(router), "org-a");
    return { ok: a !== undefined && a.tokens_per_minute.used <= 135_000 - 9_000, seen: a };
  });
  for (let i = 0; i < 3; i++) {
    const a = await chat(router, { model: MODEL, max_tokens: 8_000 });
    assert.equal(a.status, 200, a.text.slice(0, 300));
  }
  assert.deepEqual(callsByOrg(f.groq), { "org-a": 4 });
});

test("at a large limit most requests are admitted from the isolate's lease, with no bank call", async (t) => {
  const limits = { rpm: 100_000, rpd: 10_000_000, tpm: 1_000_000_000, tpd: 10_000_000_000 };
  const f = await fleet(t, 1, limits, { orgs: ["org-a"] });
  const router = f.routers[0];
  const snapshots = [];
  const answers = await chatMany(router, 200, 8, {}, async (i) => {
    if (i === 100) snapshots.push(await status(router));
  });
  snapshots.push(await status(router));

  for (const a of answers) assert.equal(a.status, 200, a.text.slice(0, 300));
  assert.equal(f.groq.calls.length, answers.length, "one call at the fake per 200");
  assert.deepEqual(callsByOrg(f.groq), { "org-a": answers.length });
  const leased = answers.filter((a) => a.quota === "lease");
  for (const a of answers) assert.ok(["lease", "bank"].includes(a.quota), `x-router-quota: ${a.quota}`);
  for (const a of leased) assert.equal(a.quotaCalls, "0", "a request admitted from the lease makes no bank call");
  for (const a of answers.filter((a) => a.quota === "bank")) assert.ok(Number(a.quotaCalls) >= 1);
  assert.ok(leased.length >= answers.length / 2, `only ${leased.length} of ${answers.length} admitted from a lease`);

  const leases = snapshots.flatMap((s) => entry(s, "org-a")?.leases ?? []);
  assert.ok(leases.length >= 1, `no lease on the status page: ${JSON.stringify(snapshots.map((s) => entry(s, "org-a")))}`);
  for (const lease of leases) {
    assert.equal(typeof lease.holder, "string");
    assert.ok(lease.holder.length > 0);
    // Never more than 1/16 of any window's limit.
    assert.ok(lease.requests <= limits.rpm / 16, `lease of ${lease.requests} requests`);
    assert.ok(lease.tokens <= limits.tpm / 16, `lease of ${lease.tokens} tokens`);
    assert.ok(lease.expires_at_ms > lease.granted_at_ms);
  }
});

for (const fail of ["throw", "500"]) {
  test(`bank unreachable (${fail}): answered 200 with x-router-quota advisory, one isolate admits no more than RPM 5 per organization`, async (t) => {
    const f = await fleet(t, 1, { ...PLENTY, rpm: 5 }, { bank: "proxy", bankState: { fail } });
    const router = f.routers[0];
    f.toNextMinute();
    const answers = [];
    for (let i = 0; i < 14; i++) answers.push(await chat(router));

    await assertShardedCalls(f.bank);
    const byOrg = callsByOrg(f.groq);
    for (const org of ["org-a", "org-b"]) assert.ok((byOrg[org] ?? 0) <= 5, `${byOrg[org]} calls reached ${org}`);
    assert.deepEqual(Object.keys(byOrg).filter((o) => !ORGS[o]), []);
    const served = answers.filter((a) => a.status === 200);
    assert.equal(answers[0].status, 200, answers[0].text.slice(0, 300));
    assert.equal(served.length, f.groq.calls.length, "one call at the fake per 200");
    assert.ok(served.length >= 5, `only ${served.length} answered`);
    for (const a of served) assert.equal(a.quota, "advisory");
    for (const a of answers.filter((a) => a.status !== 200)) assertQuotaExhausted(a);
  });
}

test("bank slower than quota_timeout_ms: answered 200 advisory; late reservations are given back", async (t) => {
  // RPD 30: a lease would be under 2 requests, so every request books synchronously.
  const f = await fleet(t, 1, { ...PLENTY, rpd: 30 }, {
    failover: { quota_timeout_ms: 150 },
    bank: "proxy",
    bankState: { delayMs: 600 },
  });
  const router = f.routers[0];
  const answers = [];
  for (let i = 0; i < 6; i++) answers.push(await chat(router));
  for (const a of answers) {
    assert.equal(a.status, 200, a.text.slice(0, 300));
    assert.equal(a.quota, "advisory");
  }
  assert.equal(f.groq.calls.length, 6);

  await f.bank.set({ delayMs: 0 });
  const calls = { "org-a": 0, "org-b": 0, ...callsByOrg(f.groq) };
  // Each answer's real usage is 12 tokens: what is left once every estimate is settled.
  const tokens = Object.fromEntries(Object.entries(calls).map(([org, n]) => [org, 12 * n]));
  // Every call the proxy held has reached the bank, and the counts stay put for 10 polls.
  await eventually(
    "the bank's counts equal the calls that reached the fake",
    async () => {
      const { inflight } = await f.bank.stats();
      const s = await status(router);
      const used = {};
      const usedTokens = {};
      for (const org of Object.keys(calls)) {
        used[org] = entry(s, org)?.requests_per_day.used ?? 0;
        usedTokens[org] = entry(s, org)?.tokens_per_day.used ?? 0;
      }
      const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
      return {
        ok: inflight === 0 && same(used, calls) && same(usedTokens, tokens),
        seen: { used, calls, usedTokens, tokens, inflight },
      };
    },
    { tries: 300, times: 10 },
  );
  await assertShardedCalls(f.bank);
});

test("the bank restarted on its persisted storage keeps the counts of the calls made before", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "edge-router-leases-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // RPD 30: no leases, every admission booked with the bank, so the counts are exact.
  const f = await fleet(t, 2, { ...PLENTY, rpd: 30 }, { persistDir: dir });
  const dayCounts = async () => {
    const s = await status(f.routers[1]);
    return Object.fromEntries(["org-a", "org-b"].map((org) => [org, entry(s, org)?.requests_per_day.used ?? 0]));
  };
  const withZeros = (counts) => ({ "org-a": 0, "org-b": 0, ...counts });

  const first = (await Promise.all(f.routers.map((r) => chatMany(r, 3, 1)))).flat();
  for (const a of first) assert.equal(a.status, 200, a.text.slice(0, 300));
  const before = withZeros(callsByOrg(f.groq));
  assert.equal(f.groq.calls.length, 6);
  await eventually("the bank counted the calls before the restart", async () => {
    const used = await dayCounts();
    return { ok: JSON.stringify(used) === JSON.stringify(before), seen: { used, before } };
  });

  await f.restart();
  assert.deepEqual(await dayCounts(), before, "nothing lost, nothing counted twice");

  const second = (await Promise.all(f.routers.map((r) => chatMany(r, 3, 1)))).flat();
  for (const a of second) assert.equal(a.status, 200, a.text.slice(0, 300));
  const total = withZeros(callsByOrg(f.groq));
  assert.equal(f.groq.calls.length, 12);
  await eventually("the bank counted every call", async () => {
    const used = await dayCounts();
    return { ok: JSON.stringify(used) === JSON.stringify(total), seen: { used, total } };
  });
});
