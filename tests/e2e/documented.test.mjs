// Behaviours that README.md and docs/*.md promise, each checked from outside: what a client got
// and what the fake upstreams received. Each test is named after the promise and starts its own
// router (and fakes), so none depends on another's state or on their order. Nothing sleeps past
// a timer: the router's test clock moves time forward, and effects that come after a response
// (`wait_until`) are polled for, in bounded loops.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { GATEWAY_HASH, GATEWAY_KEY, readError, startFakeUpstream, startRouter, startRouters } from "./harness.mjs";

const ADMIN_KEY = "sk-admin-documented-4242";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
/** The provider keys of this file's routers, by secret name. */
const KEYS = {
  GROQ_A: "gsk-documented-a-1111",
  GROQ_B: "gsk-documented-b-2222",
  GROQ_C: "gsk-documented-c-3333",
  TOGETHER_KEY: "tg-documented-4444",
  FIREWORKS_KEY: "fw-documented-5555",
};
const FAST = "llama-3.1-8b-instant";

const json = (body, status = 200, headers = {}) => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});
const completion = (who, usage = { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 }) =>
  json({ id: who, object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: who }, finish_reason: "stop" }], usage });
const serverError = () => json({ error: { message: "The server had an error" } }, 500);
const tooMany = (seconds) =>
  json({ error: { message: "Rate limit reached on requests per minute (RPM)", type: "requests", code: "rate_limit_exceeded" } }, 429, { "retry-after": String(seconds) });
const sse = (body, extra = {}) => ({ status: 200, headers: { "content-type": "text/event-stream" }, body, ...extra });
const event = (data) => `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
const chunk = (content) => ({ id: "s", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content } }], usage: null });

/** The secret name of the key a call carried. */
const keyOf = (call) => Object.entries(KEYS).find(([, v]) => call.headers.authorization === `Bearer ${v}`)?.[0];

/** Starts a router on `config` with this file's keys and the gateway and admin hashes; stopped (with the leak check) when the test ends. */
async function routerFor(t, config, { clock = false, persistDir } = {}) {
  const router = await startRouter(
    { ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, ADMIN_KEY_HASHES: ADMIN_HASH, ...KEYS },
    { clock, persistDir, secrets: [ADMIN_KEY] },
  );
  let disposed = false;
  t.after(() => (disposed ? undefined : router.dispose()));
  return Object.assign(router, {
    /** Disposes now (for a restart); the test's end then leaves it alone. */
    async stop() {
      disposed = true;
      await router.dispose();
    },
  });
}

/** A fake upstream, closed when the test ends. */
async function fake(t, answer) {
  const f = await startFakeUpstream({ maxRequests: 200 });
  if (answer) f.answer(answer);
  t.after(() => f.close());
  return f;
}

function post(router, path, body, headers = {}) {
  return router.fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}`, ...headers },
    body: JSON.stringify(body),
  });
}

const chat = (router, body = {}, headers = {}) =>
  post(router, "/v1/chat/completions", { model: "fast", messages: [{ role: "user", content: "hi" }], ...body }, headers);

async function status(router) {
  const res = await router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

/**
 * Polls `probe` (sync or async) until it returns a truthy value, at most `tries` times 20 ms
 * apart: for what the router does after its response (`wait_until`). Fails with `label` and
 * what `seen()` says.
 */
async function eventually(label, probe, { tries = 250, seen = () => "" } = {}) {
  for (let i = 0; i < tries; i++) {
    const result = await probe();
    if (result) return result;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`${label}: never happened ${seen()}`);
}

/**
 * The router's own JSON log lines among `logs`, as objects. Miniflare may wrap a line in a
 * log record (or its text in an array of arguments): the line is unwrapped from it.
 */
function logEvents(logs, name) {
  const out = [];
  for (const raw of logs) {
    let v;
    try {
      v = JSON.parse(raw);
    } catch {
      continue;
    }
    for (let i = 0; i < 4 && v && typeof v === "object" && v.event === undefined; i++) {
      const inner = v.message ?? v.msg ?? v.args?.[0] ?? v.data;
      try {
        v = typeof inner === "string" ? JSON.parse(inner) : inner;
      } catch {
        v = undefined;
      }
    }
    if (v && typeof v === "object" && (name === undefined || v.event === name)) out.push(v);
  }
  return out;
}

// 1. docs/failover.md ("An embeddings response carries the same ..."), README.md ("POST
//    /v1/embeddings goes to the providers on the model's route that have embeddings, in order,
//    with the same failover").
test("embeddings fail over like chat: a 5xx or 429 from the first provider, the next one serves, and the x-router-* headers say so", async (t) => {
  const together = await fake(t);
  const fireworks = await fake(t);
  const vector = (who) => json({ object: "list", model: who, data: [{ object: "embedding", index: 0, embedding: [0.5, 0.25] }] });
  fireworks.answer(() => vector("fireworks"));
  const router = await routerFor(t, {
    providers: {
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] },
      fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
    },
    routes: { embed: ["together/BAAI/bge-base-en-v1.5", "fireworks/nomic-ai/nomic-embed-text-v1.5"] },
  });
  const embed = () => post(router, "/v1/embeddings", { model: "embed", input: ["hello", "world"] });

  for (const [failure, outcome] of [
    [() => json({ error: { message: "overloaded" } }, 503), "server_error"],
    [() => tooMany(5), "rate_limited"],
  ]) {
    together.reset();
    fireworks.reset();
    together.answer(failure);
    const res = await embed();
    assert.equal(res.status, 200, outcome);
    assert.equal((await res.json()).model, "fireworks");
    assert.equal(together.calls.length, 1);
    assert.equal(fireworks.calls.length, 1);
    // Each provider got the body with its own model id, the input as the client sent it.
    assert.deepEqual(JSON.parse(together.calls[0].body), { model: "BAAI/bge-base-en-v1.5", input: ["hello", "world"] });
    assert.deepEqual(JSON.parse(fireworks.calls[0].body), { model: "nomic-ai/nomic-embed-text-v1.5", input: ["hello", "world"] });
    assert.equal(together.calls[0].path, "/v1/embeddings");
    assert.equal(fireworks.calls[0].path, "/v1/embeddings");
    assert.equal(res.headers.get("x-router-provider"), "fireworks");
    assert.equal(res.headers.get("x-router-model"), "nomic-ai/nomic-embed-text-v1.5");
    assert.equal(res.headers.get("x-router-attempts"), "2");
    assert.equal(res.headers.get("x-router-failover"), `together/BAAI/bge-base-en-v1.5=${outcome}`);
    assert.match(res.headers.get("server-timing"), /^classify;dur=\d+, quota;dur=\d+, upstream;dur=\d+, router;dur=\d+$/);
    // Not the classifier's headers, nor the quota ledger's: embeddings have neither.
    for (const name of ["x-router-path", "x-router-reason", "x-router-quota", "x-router-quota-calls"]) {
      assert.equal(res.headers.get(name), null, name);
    }
  }

  // When both fail, the error carries the same headers: who was tried last, and every failure.
  together.reset();
  fireworks.reset();
  together.answer(() => json({ error: { message: "overloaded" } }, 503));
  fireworks.answer(() => json({ error: { message: "overloaded" } }, 502));
  const res = await embed();
  assert.equal(res.status, 502);
  assert.equal((await readError(assert, res)).code, "upstream_failed");
  assert.equal(res.headers.get("x-router-provider"), "fireworks");
  assert.equal(res.headers.get("x-router-attempts"), "2");
  assert.equal(
    res.headers.get("x-router-failover"),
    "together/BAAI/bge-base-en-v1.5=server_error, fireworks/nomic-ai/nomic-embed-text-v1.5=server_error",
  );
});

// 2. docs/failover.md and docs/quota.md: `x-router-quota` is `none` when "the provider tracks
//    no limits for the model", and `x-router-quota-calls` counts the synchronous bank calls.
test("a provider without tracked limits is booked nowhere: x-router-quota none, x-router-quota-calls 0, in the log line too", async (t) => {
  const together = await fake(t, () => completion("together"));
  const router = await routerFor(t, {
    providers: { together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] } },
    routes: { slow: ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo"] },
  });
  for (let i = 0; i < 3; i++) {
    const before = router.logs.length;
    const res = await chat(router, { model: "slow" });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).id, "together");
    assert.equal(res.headers.get("x-router-quota"), "none");
    assert.equal(res.headers.get("x-router-quota-calls"), "0");
    const line = await eventually("the request's log line", () => logEvents(router.logs.slice(before), "request")[0]);
    assert.equal(line.quota, "none");
    assert.equal(line.quota_calls, 0);
  }
  assert.equal(together.calls.length, 3);
  // Nothing to show on the status page: no provider tracks limits.
  assert.deepEqual((await status(router)).providers, {});
});

// docs/configuration.md, `gateway.log_requests = "failures"`: a request its first attempt served
// writes no log line; an error answer and a failover do.
test("with log_requests = failures, only errors and failovers write the request's log line", async (t) => {
  let togetherCalls = 0;
  const together = await fake(t, () => (++togetherCalls === 1 ? completion("together") : serverError()));
  const fireworks = await fake(t, () => completion("fireworks"));
  const router = await routerFor(t, {
    gateway: { log_requests: "failures" },
    providers: {
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] },
      fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
    },
    routes: { slow: ["together/m-t", "fireworks/m-f"] },
  });
  const served = await chat(router, { model: "slow" });
  assert.equal(served.status, 200);
  assert.equal((await served.json()).id, "together");
  const refused = await chat(router, { model: "slow" }, { authorization: "Bearer sk-not-a-key" });
  assert.equal(refused.status, 401);
  await refused.arrayBuffer();
  const failover = await chat(router, { model: "slow" });
  assert.equal(failover.status, 200);
  assert.equal((await failover.json()).id, "fireworks");
  const lines = await eventually("two request lines", () => {
    const found = logEvents(router.logs, "request");
    return found.length >= 2 ? found : null;
  });
  // Lines come in order: the served request wrote none before the refusal's.
  assert.deepEqual(lines.map((l) => l.status), [401, 200]);
  assert.deepEqual(lines[1].attempts.map((a) => [a.provider, a.outcome]), [["together", "server_error"], ["fireworks", "success"]]);
});

// 3. docs/failover.md, "Circuit breaker": after `breaker_failures` failures in a row the circuit
//    opens for `breaker_cooldown_ms`; then one request probes the provider: a success (or any
//    answer that is no provider failure) closes it, another failure opens it again.
test("after the breaker's cooldown one request probes the provider: a success or a 400 closes the circuit, a failed probe opens it again at once", async (t) => {
  const COOLDOWN = 10_000;
  const together = await fake(t, serverError);
  const router = await routerFor(
    t,
    {
      failover: { breaker_failures: 2, breaker_cooldown_ms: COOLDOWN },
      providers: { together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] } },
      routes: { slow: ["together/m-t"] },
    },
    { clock: true },
  );
  const slow = () => chat(router, { model: "slow" });
  const openCircuit = async () => {
    const res = await slow();
    assert.equal(res.status, 503);
    assert.equal((await readError(assert, res)).code, "upstream_unavailable");
    assert.equal(res.headers.get("x-router-attempts"), "0");
    return Number(res.headers.get("retry-after"));
  };

  // Two failures in a row open the circuit; then the provider is skipped without a call.
  for (let i = 0; i < 2; i++) assert.equal((await slow()).status, 502);
  assert.equal(together.calls.length, 2);
  const retry = await openCircuit();
  assert.ok(retry >= 1 && retry <= COOLDOWN / 1000, `retry-after ${retry}`);
  // (The router's clock is the test clock's offset plus real time: half the cooldown leaves
  // the real time of a loaded machine plenty of room.)
  router.advance(COOLDOWN / 2);
  await openCircuit();
  assert.equal(together.calls.length, 2, "no call while the circuit is open");

  // Past the cooldown one request probes. While the probe is out, others are still skipped.
  router.advance(COOLDOWN / 2 + 1);
  let release;
  const held = new Promise((r) => (release = r));
  together.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: [async () => (await held, completion("probe").body)] }));
  const probe = slow();
  await eventually("the probe reached the provider", () => together.calls.length === 3);
  await openCircuit();
  release();
  const probed = await probe;
  assert.equal(probed.status, 200);
  assert.equal((await probed.json()).id, "probe");
  assert.equal(together.calls.length, 3, "one call: the probe");

  // The success closed the circuit: every request is sent again, and one failure no longer
  // opens it (it takes breaker_failures in a row again).
  together.answer(() => completion("together"));
  for (let i = 0; i < 3; i++) assert.equal((await slow()).status, 200);
  together.answer(serverError);
  assert.equal((await slow()).status, 502);
  together.answer(() => completion("together"));
  assert.equal((await slow()).status, 200);
  assert.equal(together.calls.length, 8);

  // Open it again, let the cooldown pass, and fail the probe: one failure re-opens it at once,
  // for another whole cooldown.
  together.answer(serverError);
  for (let i = 0; i < 2; i++) assert.equal((await slow()).status, 502);
  await openCircuit();
  router.advance(COOLDOWN + 1);
  const failedProbe = await slow();
  assert.equal(failedProbe.status, 502);
  assert.equal(together.calls.length, 11);
  together.answer(() => completion("together"));
  const reopened = await openCircuit();
  assert.ok(reopened > COOLDOWN / 2 / 1000 && reopened <= COOLDOWN / 1000, `a whole cooldown again: retry-after ${reopened}`);
  assert.equal(together.calls.length, 11, "the failed probe opened the circuit again");
  router.advance(COOLDOWN + 1);
  assert.equal((await slow()).status, 200, "the next probe succeeds and closes it");
  assert.equal(together.calls.length, 12);

  // A probe answered with something that is no provider failure (a 400) closes it as well.
  together.answer(serverError);
  for (let i = 0; i < 2; i++) assert.equal((await slow()).status, 502);
  await openCircuit();
  router.advance(COOLDOWN + 1);
  together.answer(() => json({ error: { message: "bad request", type: "invalid_request_error", param: null, code: null } }, 400));
  assert.equal((await slow()).status, 400);
  together.answer(serverError);
  assert.equal((await slow()).status, 502, "closed: one failure is not enough to open it");
  assert.equal(together.calls.length, 16);
});

// 4. docs/failover.md and src/edge/runtime.js (`handOn`): "A client that goes away aborts the
//    upstream call". A real HTTP client (Node's fetch on the router's address) reads the start
//    of a stream and aborts; the upstream, still streaming, sees its connection closed.
test("a client that goes away mid-stream aborts the upstream call", async (t) => {
  const groq = await fake(t);
  let written = 0;
  // A long answer, one chunk every 10 ms (the fake pauses between chunks): 20 s if nobody
  // stops it. Each chunk counts as written when the fake hands it to its socket. The runtime
  // learns that the client has gone only when what the router passes on can no longer be
  // delivered, some tens of KiB later (see docs/failover.md): chunks of 1 KiB keep that short.
  const TOKENS = 2_000;
  const PAD = "x".repeat(1_000);
  groq.answer(() =>
    sse([
      event(chunk("first")),
      ...Array.from({ length: TOKENS }, (_, i) => () => {
        // Once the router has hung up, the fake stops too (a promise that never settles holds
        // no timer), so the test does not outlive the answer's 20 s.
        if (groq.calls[0]?.aborted) return new Promise(() => {});
        written++;
        return event(chunk(` t${i} ${PAD}`));
      }),
      event("[DONE]"),
    ]),
  );
  const router = await routerFor(t, {
    providers: { groq: { base_url: groq.baseUrl, keys: [{ id: "groq-a", secret: "GROQ_A", org: "org-a" }], limits: { [FAST]: { rpm: 1000 } } } },
    routes: { fast: [`groq/${FAST}`] },
  });
  const client = new AbortController();
  const res = await fetch(`${router.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
    body: JSON.stringify({ model: "fast", stream: true, messages: [{ role: "user", content: "hi" }] }),
    signal: client.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /^data: /);
  client.abort();
  await reader.read().catch(() => {});
  await eventually("the upstream call was aborted", () => groq.calls[0]?.aborted, { tries: 500 });
  assert.equal(groq.calls.length, 1);
  assert.ok(written < TOKENS, `the upstream stopped early (${written} of ${TOKENS} chunks written)`);
});

// 5. docs/failover.md ("Streaming, and every other answer") and docs/errors.md ("An answer cut
//    after its first byte"): a JSON answer of up to 256 KiB is read whole, so one the upstream
//    cuts mid-way is a bad answer and fails over (the request's log line lists it); a longer
//    one is already handed on, so the client's read fails instead of returning a short body,
//    and the router logs `{"event":"answer_interrupted","provider":...}`.
test("a JSON answer cut mid-way: under 256 KiB it fails over, over 256 KiB the client's read fails and answer_interrupted is logged", async (t) => {
  const together = await fake(t);
  const fireworks = await fake(t, () => completion("fireworks"));
  const router = await routerFor(t, {
    providers: {
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] },
      fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
    },
    routes: { slow: ["together/m-t", "fireworks/m-f"] },
  });
  const opening = '{"id":"together","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"';
  const cutAfter = (parts) => ({ status: 200, headers: { "content-type": "application/json" }, body: parts, cut: true });

  // A short answer, cut: nothing of it reached the client, the next provider served.
  together.answer(() => cutAfter([opening, "x".repeat(2_000)]));
  let before = router.logs.length;
  const short = await chat(router, { model: "slow" });
  assert.equal(short.status, 200);
  assert.equal((await short.json()).id, "fireworks");
  assert.equal(short.headers.get("x-router-failover"), "together/m-t=bad_answer");
  const line = await eventually("the request's log line", () => logEvents(router.logs.slice(before), "request")[0]);
  assert.equal(line.status, 200);
  assert.deepEqual(
    line.attempts.map((a) => [a.provider, a.key_id, a.outcome]),
    [
      ["together", "together-1", "bad_answer"],
      ["fireworks", "fireworks-1", "success"],
    ],
  );
  assert.deepEqual(logEvents(router.logs.slice(before), "answer_interrupted"), [], "nothing was handed on");

  // A long answer (300 KiB before the cut): handed on from its start, then aborted.
  together.reset();
  fireworks.reset();
  const KIB_64 = "y".repeat(64 * 1024);
  together.answer(() => cutAfter([opening, KIB_64, KIB_64, KIB_64, KIB_64, KIB_64]));
  before = router.logs.length;
  const long = await chat(router, { model: "slow" });
  assert.equal(long.status, 200, "the status went out with the answer's start");
  assert.equal(long.headers.get("x-router-provider"), "together");
  const read = long.text();
  await assert.rejects(read, "the client's read fails rather than returning a short body");
  assert.equal(fireworks.calls.length, 0, "after the first byte there is no failover");
  const interrupted = await eventually("the answer_interrupted line", () => logEvents(router.logs.slice(before), "answer_interrupted")[0]);
  assert.deepEqual(interrupted, { event: "answer_interrupted", provider: "together" });
  const longLine = logEvents(router.logs.slice(before), "request")[0];
  assert.equal(longLine.status, 200);
  assert.deepEqual(longLine.attempts.map((a) => [a.provider, a.outcome]), [["together", "success"]]);
});

/**
 * One router whose quota bank is the harness's proxy (`startRouters`' `bank: "proxy"`), failing
 * from the start as `fail` says ("throw": the bank cannot be reached; "500": it answers badly).
 * Groq's fake serves, with one key per organization; stopped when the test ends.
 */
async function behindFailingBank(t, fail) {
  const groq = await fake(t, () => completion("groq"));
  const config = {
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: [
          { id: "groq-a", secret: "GROQ_A", org: "org-a" },
          { id: "groq-b", secret: "GROQ_B", org: "org-b" },
        ],
        limits: { [FAST]: { rpm: 1000 } },
      },
    },
    routes: { fast: [`groq/${FAST}`] },
  };
  const bindings = { ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, ADMIN_KEY_HASHES: ADMIN_HASH, GROQ_A: KEYS.GROQ_A, GROQ_B: KEYS.GROQ_B };
  const fleet = await startRouters(1, () => bindings, { bank: "proxy", bankState: { fail }, secrets: [ADMIN_KEY] });
  t.after(() => fleet.dispose());
  return { groq, fleet, router: fleet.routers[0] };
}

// 6. docs/quota.md ("The bank slower than failover.quota_timeout_ms or failing: the request
//    does not wait longer. It is booked on the isolate's own snapshot (x-router-quota:
//    advisory)") and docs/errors.md ("A quota bank that cannot be reached is logged on its own
//    line, {"event":"quota_unreachable","shard":"groq/<org>","code":...}; the request itself
//    goes on").
test("a quota bank that cannot be reached: the request is still served, booked advisory, and quota_unreachable names the shard", async (t) => {
  const { groq, fleet, router } = await behindFailingBank(t, "throw");
  const before = fleet.logs.length;
  const res = await chat(router);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).id, "groq");
  assert.equal(groq.calls.length, 1);
  assert.equal(res.headers.get("x-router-quota"), "advisory");
  assert.equal(res.headers.get("x-router-quota-calls"), "1", "one synchronous booking was tried");
  const org = keyOf(groq.calls[0]) === "GROQ_A" ? "org-a" : "org-b";
  const unreachable = await eventually("the quota_unreachable line", () => logEvents(fleet.logs.slice(before), "quota_unreachable")[0]);
  assert.deepEqual(unreachable, { event: "quota_unreachable", shard: `groq/${org}`, code: "internal_error" });
  const line = logEvents(fleet.logs.slice(before), "request")[0];
  assert.equal(line.status, 200);
  assert.equal(line.quota, "advisory");
  assert.equal(line.quota_calls, 1);
  // The bank really was called, and failed: the failure is the proxy's, not a missing binding.
  assert.ok((await fleet.bank.stats()).calls >= 1);
});

// 10a. docs/errors.md and docs/routing.md: in a configuration with a `fast` route and no
//     `slow` route, a chat request whose estimated prompt + requested output tokens exceed
//     `classifier.fast_context_tokens` is refused: 400 `invalid_request_error` /
//     `context_length_exceeded`, param `messages`, a message giving the estimate and the limit,
//     and nothing sent; such a request carries none of the attempt loop's headers.
test("fast-only configuration: a prompt over classifier.fast_context_tokens is a 400 context_length_exceeded, nothing sent", async (t) => {
  const LIMIT = 600;
  const groq = await fake(t, () => completion("groq"));
  const router = await routerFor(t, {
    classifier: { fast_context_tokens: LIMIT },
    providers: { groq: { base_url: groq.baseUrl, keys: [{ id: "groq-a", secret: "GROQ_A", org: "org-a" }], limits: { [FAST]: { rpm: 1000 } } } },
    routes: { fast: [`groq/${FAST}`] },
  });
  // Within the window: served.
  const small = await chat(router, { model: "auto", max_tokens: 100 });
  assert.equal(small.status, 200);
  assert.equal(groq.calls.length, 1);
  // 100 output tokens plus a prompt of some 2,000 words: over the 600.
  const long = "lorem ipsum dolor sit amet ".repeat(400);
  for (const model of ["auto", "fast", "slow"]) {
    const res = await chat(router, { model, max_tokens: 100, messages: [{ role: "user", content: long }] });
    assert.equal(res.status, 400, model);
    const err = await readError(assert, res);
    assert.equal(err.type, "invalid_request_error");
    assert.equal(err.code, "context_length_exceeded");
    assert.equal(err.param, "messages");
    const numbers = (err.message.match(/\d[\d,]*/g) ?? []).map((n) => Number(n.replaceAll(",", "")));
    assert.ok(numbers.includes(LIMIT), `the message gives the limit: ${err.message}`);
    assert.ok(numbers.some((n) => n > LIMIT), `the message gives the estimate: ${err.message}`);
    for (const name of ["x-router-attempts", "x-router-provider", "x-router-quota", "server-timing"]) {
      assert.equal(res.headers.get(name), null, name);
    }
  }
  assert.equal(groq.calls.length, 1, "nothing was sent");
});

// 10b. docs/errors.md: 500 `server_error` / `internal_error` when "on GET /v1/router/status a
//     quota bank could not be reached or answered badly".
test("GET /v1/router/status when a quota bank fails: 500 internal_error, whether it cannot be reached or answers badly", async (t) => {
  const { fleet, router } = await behindFailingBank(t, "throw");
  const page = () => router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  for (const fail of ["throw", "500"]) {
    await fleet.bank.set({ fail });
    const res = await page();
    assert.equal(res.status, 500, fail);
    const err = await readError(assert, res);
    assert.equal(err.type, "server_error");
    assert.equal(err.code, "internal_error");
  }
  // The same page once the bank answers again: the failure was the bank's.
  await fleet.bank.set({ fail: null });
  const res = await page();
  assert.equal(res.status, 200);
  assert.deepEqual(Object.keys((await res.json()).providers), ["groq"]);
});

// 7. docs/failover.md ("The last bytes (up to 16 KiB) of a body handed on, after the end, for
//    the usage: ... the final usage chunk of stream_options.include_usage") and docs/quota.md
//    ("the estimate is replaced by the real usage ... read from the answer's last bytes"): a
//    stream far longer than 16 KiB still settles on its final usage chunk.
test("a stream whose usage chunk comes after more than 16 KiB of content settles the books on that usage", async (t) => {
  const groq = await fake(t);
  const router = await routerFor(
    t,
    {
      providers: { groq: { base_url: groq.baseUrl, keys: [{ id: "groq-a", secret: "GROQ_A", org: "org-a" }], limits: { [FAST]: { rpm: 1000 } } } },
      routes: { fast: [`groq/${FAST}`] },
    },
    { clock: true },
  );
  // The booking and its settlement in one minute window, whatever the time of the wall clock:
  // a minute that ended between them would show neither.
  router.toNextMinute();
  // 64 chunks of about 1 KiB (some 70 KiB, several of the copy's 16 KiB blocks), each with
  // `usage: null` as OpenAI sends them, then the usage chunk and [DONE].
  const content = Array.from({ length: 64 }, (_, i) => event(chunk(`${i} ${"z".repeat(1_000)}`)));
  const usage = { prompt_tokens: 321, completion_tokens: 1_234, total_tokens: 1_555, prompt_tokens_details: { cached_tokens: 21 } };
  const sent = [...content, event({ id: "s", object: "chat.completion.chunk", choices: [], usage }), event("[DONE]")];
  assert.ok(sent.slice(0, -2).join("").length > 4 * 16 * 1024);
  groq.answer(() => sse(sent));
  const res = await chat(router, { stream: true, stream_options: { include_usage: true }, max_tokens: 4_000 });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-router-quota"), "bank");
  assert.equal(await res.text(), sent.join(""), "the client got the stream as it was sent");
  // The booking was the estimate (over the 4,000 output tokens asked for); once the stream has
  // ended it is the real usage: 321 - 21 cached + 1,234.
  let seen;
  await eventually(
    "the books show the stream's real usage",
    async () => {
      seen = (await status(router)).providers.groq;
      return seen.organizations["org-a"]?.[FAST]?.tokens_per_minute.used === 1_534;
    },
    { seen: () => JSON.stringify(seen.organizations) },
  );
  const books = seen.organizations["org-a"][FAST];
  assert.equal(books.tokens_per_day.used, 1_534);
  assert.equal(books.requests_per_minute.used, 1);
});

// 8. docs/configuration.md ("CORS": an allowed origin's responses get the CORS headers,
//    "errors included"; "only 503 invalid_config comes before [the origin check] (without a
//    configuration there is no allowlist); it carries no CORS headers") and docs/errors.md.
test("an allowed origin gets the CORS headers on 429, 502, 503 and 504 answers; the configuration error's 503 carries none", async (t) => {
  const ORIGIN = "https://app.example";
  // One provider per failure, each on a route of its own, so that no failure (a circuit
  // opened, a cooldown) touches another.
  const limited = await fake(t, () => tooMany(7));
  const failing = await fake(t, serverError);
  const hanging = await fake(t, () => ({ hang: true }));
  const unset = await fake(t, () => completion("unset"));
  const provider = (f, secret) => ({ base_url: f.baseUrl, keys: [{ id: `${secret.toLowerCase()}-1`, secret }] });
  const router = await routerFor(t, {
    gateway: { cors_origins: [ORIGIN] },
    failover: { breaker_failures: 1, breaker_cooldown_ms: 60_000 },
    providers: {
      limited: provider(limited, "TOGETHER_KEY"),
      failing: provider(failing, "FIREWORKS_KEY"),
      hanging: provider(hanging, "GROQ_A"),
      unset: provider(unset, "NOT_SET_ANYWHERE"),
    },
    routes: { r429: ["limited/m"], r5xx: ["failing/m"], r504: ["hanging/m"], nokey: ["unset/m"] },
  });
  const fromPage = (model, headers = {}) => chat(router, { model }, { origin: ORIGIN, ...headers });
  const expectCors = async (res, status, code) => {
    assert.equal(res.status, status, code);
    assert.equal((await readError(assert, res)).code, code);
    assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN, code);
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /retry-after, .*x-router-attempts/, code);
    assert.match(res.headers.get("vary") ?? "", /Origin/, code);
  };

  const limitedRes = await fromPage("r429");
  await expectCors(limitedRes, 429, "quota_exhausted");
  assert.equal(limitedRes.headers.get("retry-after"), "7");
  await expectCors(await fromPage("r5xx"), 502, "upstream_failed");
  // breaker_failures = 1: the failure opened the circuit, and the provider is now skipped.
  const open = await fromPage("r5xx");
  await expectCors(open, 503, "upstream_unavailable");
  assert.ok(Number(open.headers.get("retry-after")) > 0);
  await expectCors(await fromPage("nokey"), 503, "missing_secret");
  // The client's latency budget is the request's deadline: the hanging provider gets 300 ms.
  await expectCors(await fromPage("r504", { "x-router-latency-budget-ms": "300" }), 504, "upstream_timeout");
  assert.equal(limited.calls.length + failing.calls.length + hanging.calls.length, 3);
  assert.equal(unset.calls.length, 0);

  // A broken configuration: there is no allowlist to check the origin against, so the 503
  // goes out without CORS headers, on every path.
  const broken = await startRouter({ ROUTER_CONFIG: '{"gateway": {"cors_origins": ["https://app.example"]}, "providers": 7}' });
  t.after(() => broken.dispose());
  for (const [path, init] of [
    ["/v1/chat/completions", { method: "POST", headers: { origin: ORIGIN, "content-type": "application/json" }, body: "{}" }],
    ["/healthz", { headers: { origin: ORIGIN } }],
    ["/v1/models", { method: "OPTIONS", headers: { origin: ORIGIN, "access-control-request-method": "GET" } }],
  ]) {
    const res = await broken.fetch(path, init);
    assert.equal(res.status, 503, path);
    assert.equal((await readError(assert, res)).code, "invalid_config");
    for (const name of ["access-control-allow-origin", "access-control-expose-headers", "access-control-allow-methods"]) {
      assert.equal(res.headers.get(name), null, `${path}: ${name}`);
    }
  }
});

// 9. docs/quota.md: the bank's books are the truth ("the four windows of every model,
//    cooldowns, refused keys"), stored in SQLite ("one SQLite row per model (its books and
//    leases) and one for the organization (blocks, ...)"): a 429's cooldown (until
//    `retry-after`) and a key blocked by a 401 (15 minutes) outlive a restart on the same storage.
test("a 429's cooldown and a key blocked by a 401 survive a restart of the router on the same storage", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "edge-router-documented-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const groq = await fake(t, (call) => {
    if (keyOf(call) === "GROQ_A") return tooMany(600);
    if (keyOf(call) === "GROQ_B") return json({ error: { message: "Invalid API Key", code: "invalid_api_key" } }, 401);
    return completion(keyOf(call));
  });
  const config = {
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: [
          { id: "ka", secret: "GROQ_A", org: "org-a" },
          { id: "kb1", secret: "GROQ_B", org: "org-b" },
          { id: "kb2", secret: "GROQ_C", org: "org-b" },
        ],
        limits: { [FAST]: { rpm: 1000 } },
      },
    },
    routes: { fast: [`groq/${FAST}`] },
  };
  const groqStatus = async (router) => (await status(router)).providers.groq;
  const books = (s) => ({
    cooldown: s.organizations["org-a"]?.[FAST]?.cooldown_until_ms ?? null,
    blocked: s.disabled_keys.map(({ key_id, status, until_ms }) => ({ key_id, status, until_ms })),
  });

  const first = await routerFor(t, config, { persistDir: dir });
  const startedAt = Date.now();
  // Until both refusals have happened (the order of the organizations is the router's choice),
  // every request is served by the one key left, org-b's second.
  const called = (secret) => groq.calls.some((c) => keyOf(c) === secret);
  for (let i = 0; i < 4 && !(called("GROQ_A") && called("GROQ_B")); i++) {
    const res = await chat(first);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).id, "GROQ_C");
  }
  assert.ok(called("GROQ_A") && called("GROQ_B"));
  const before = await eventually("the bank shows the cooldown and the blocked key", async () => {
    const b = books(await groqStatus(first));
    return b.cooldown !== null && b.blocked.length === 1 ? b : null;
  });
  // 600 s from the 429, 15 minutes from the 401 (both happened between then and now).
  const within = (at, ms) => at >= startedAt + ms && at <= Date.now() + ms;
  assert.ok(within(before.cooldown, 600_000), JSON.stringify(before));
  assert.equal(before.blocked[0].key_id, "kb1");
  assert.equal(before.blocked[0].status, 401);
  assert.ok(within(before.blocked[0].until_ms, 15 * 60_000), JSON.stringify(before));
  await first.stop();

  const second = await routerFor(t, config, { persistDir: dir });
  assert.deepEqual(books(await groqStatus(second)), before, "the same cooldown and block, read back from storage");
  groq.reset();
  for (let i = 0; i < 4; i++) {
    const res = await chat(second);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).id, "GROQ_C");
    assert.equal(res.headers.get("x-router-failover"), null, "no refused call: the router knew before sending");
  }
  assert.deepEqual(groq.calls.map(keyOf), ["GROQ_C", "GROQ_C", "GROQ_C", "GROQ_C"]);
});
