// Failover seen from outside: fakes that count their calls and misbehave on cue, and what the
// client saw for each scenario. Groq has two organizations (one key each) on the fast path; two
// GPU providers serve the slow path.
import { after, before, beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import OpenAI from "openai";
import { GATEWAY_HASH, GATEWAY_KEY, readError, startFakeUpstream, startRouter } from "./harness.mjs";

const FAST = "llama-3.1-8b-instant";
const ADMIN_KEY = "sk-admin-failover-1";
const KEYS = {
  GROQ_A: "gsk-failover-a-1111",
  GROQ_B: "gsk-failover-b-2222",
  TOGETHER_KEY: "tg-failover-3333",
  FIREWORKS_KEY: "fw-failover-4444",
};
const ATTEMPT_TIMEOUT_MS = 600;

let groq, together, fireworks, router;

before(async () => {
  [groq, together, fireworks] = await Promise.all([0, 1, 2].map(() => startFakeUpstream({ maxRequests: 400 })));
  const config = {
    // The circuit breaker has its own test and router below; here it stays out of the way.
    failover: { attempt_timeout_ms: ATTEMPT_TIMEOUT_MS, deadline_ms: 5_000, breaker_failures: 1_000 },
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: [
          { id: "groq-a", secret: "GROQ_A", org: "org-a" },
          { id: "groq-b", secret: "GROQ_B", org: "org-b" },
        ],
        // Room for every test here: the free plan's 30 requests a minute would be spent by
        // the suite itself, and these tests are about failover, not quota.
        limits: { [FAST]: { rpm: 10_000, rpd: 100_000, tpm: 10_000_000, tpd: 100_000_000 } },
      },
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] },
      fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
    },
    routes: {
      fast: [`groq/${FAST}`],
      slow: ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "fireworks/accounts/fireworks/models/llama-v3p3-70b-instruct"],
    },
  };
  router = await startRouter(
    {
      ROUTER_CONFIG: config,
      GATEWAY_KEY_HASHES: GATEWAY_HASH,
      ADMIN_KEY_HASHES: createHash("sha256").update(ADMIN_KEY).digest("hex"),
      ...KEYS,
    },
    { clock: true, secrets: [ADMIN_KEY] },
  );
});

after(async () => {
  await router.dispose();
  for (const fake of [groq, together, fireworks]) await fake.close();
});

const json = (body, status = 200, headers = {}) => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});
const answer = (who) => json({ id: who, object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: who }, finish_reason: "stop" }], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } });
const tooMany = (seconds) => json({ error: { message: "Rate limit reached for model in organization `org_01secret` on requests per minute (RPM)", type: "requests", code: "rate_limit_exceeded" } }, 429, { "retry-after": String(seconds) });
const events = (...data) => data.map((d) => `data: ${typeof d === "string" ? d : JSON.stringify(d)}\n\n`);
const chunk = (content) => ({ id: "s", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content } }] });
const sse = (body, extra = {}) => ({ status: 200, headers: { "content-type": "text/event-stream" }, body, ...extra });

const keyOf = (call) => Object.entries(KEYS).find(([, v]) => call.headers.authorization === `Bearer ${v}`)?.[0];

// Every fake serves by default; each test sets the faults it needs. The cooldowns a test leaves
// behind (a 429's retry-after, at most 40 s here) are over by the next test: the router's clock
// moves a minute forward before each, so no test depends on another or waits.
beforeEach(() => {
  router.advance(60_000);
  groq.answer(() => answer("groq"));
  together.answer(() => answer("together"));
  fireworks.answer(() => answer("fireworks"));
  for (const fake of [groq, together, fireworks]) fake.reset();
});

async function chat(body = {}, headers = {}) {
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}`, ...headers },
    body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }], ...body }),
  });
  return res;
}

const servedBy = async (res) => (await res.json()).id;

test("a 400 is returned at once, without failover", async () => {
  groq.answer(() => json({ error: { message: "messages: bad role", type: "invalid_request_error", param: "messages", code: "invalid_value" } }, 400));
  const res = await chat();
  assert.equal(res.status, 400);
  const err = await readError(assert, res);
  assert.equal(err.code, "invalid_value");
  assert.equal(groq.calls.length, 1);
  assert.equal(together.calls.length + fireworks.calls.length, 0);
  assert.equal(res.headers.get("x-router-attempts"), "1");
});

test("a 5xx from a GPU provider moves to the next GPU provider", async () => {
  together.answer(() => json({ error: { message: "The server is overloaded" } }, 503));
  const res = await chat({ model: "slow" });
  assert.equal(res.status, 200);
  assert.equal(await servedBy(res), "fireworks");
  assert.equal(together.calls.length, 1);
  assert.equal(fireworks.calls.length, 1);
  assert.equal(groq.calls.length, 0, "the slow path's own candidates come first");
  assert.equal(res.headers.get("x-router-provider"), "fireworks");
  assert.equal(res.headers.get("x-router-attempts"), "2");
  assert.match(res.headers.get("x-router-failover"), /^together\/[^@]+=server_error$/);
  // The body went out adapted for each provider: its own model id.
  assert.equal(JSON.parse(together.calls[0].body).model, "meta-llama/Llama-3.3-70B-Instruct-Turbo");
  assert.equal(JSON.parse(fireworks.calls[0].body).model, "accounts/fireworks/models/llama-v3p3-70b-instruct");
});

test("a 413 on the fast path goes to the slow path", async () => {
  groq.answer(() => json({ error: { message: "Request too large for model on tokens per minute (TPM): Limit 6000, Requested 12328", type: "tokens", code: "rate_limit_exceeded" } }, 413));
  const res = await chat();
  assert.equal(res.status, 200);
  assert.equal(await servedBy(res), "together");
  assert.equal(groq.calls.length, 1, "the other Groq organization has the same per-model limit");
  assert.equal(res.headers.get("x-router-path"), "fast");
  assert.match(res.headers.get("x-router-failover"), new RegExp(`^groq/${FAST}=too_large$`));
});

test("a redirect is not followed: the router's key never reaches the other origin, and the next provider serves", async (t) => {
  const elsewhere = await startFakeUpstream({ maxRequests: 10 });
  t.after(() => elsewhere.close());
  elsewhere.answer(() => answer("elsewhere"));
  for (const status of [301, 302, 307, 308]) {
    groq.reset();
    groq.answer(() => ({ status, headers: { location: `${elsewhere.baseUrl}/chat/completions` }, body: "" }));
    const res = await chat();
    assert.equal(res.status, 200);
    assert.equal(await servedBy(res), "together");
    // A 3xx counts as a server error: the provider is skipped for this request.
    assert.equal(groq.calls.length, 1);
    assert.match(res.headers.get("x-router-failover"), new RegExp(`^groq/${FAST}=server_error$`));
    assert.equal(res.headers.get("location"), null);
  }
  assert.equal(elsewhere.calls.length, 0, "nothing, and no key, went to the redirect's target");
});

test("a 200 whose body is not JSON, or is an error object, fails over", async () => {
  for (const garbage of ["<html><body>502 Bad Gateway</body></html>", '{"error":{"message":"upstream timed out"}}']) {
    groq.reset();
    groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: garbage }));
    const res = await chat();
    assert.equal(res.status, 200);
    assert.equal(await servedBy(res), "together");
    assert.equal(groq.calls.length, 1);
    assert.match(res.headers.get("x-router-failover"), /=bad_answer$/);
  }
});

test("a hanging upstream is aborted after the attempt timeout and the next one serves", async () => {
  groq.answer(() => ({ hang: true }));
  const res = await chat();
  assert.equal(res.status, 200);
  assert.equal(await servedBy(res), "together");
  assert.match(res.headers.get("x-router-failover"), new RegExp(`^groq/${FAST}=timeout$`));
  assert.equal(groq.calls.length, 1, "a timeout skips the provider");
  // The router gave up on the connection rather than leaving it running.
  for (let i = 0; i < 50 && !groq.calls[0].aborted; i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(groq.calls[0].aborted, "the timed-out attempt was aborted");
  // The router waited the attempt timeout for Groq before it moved on (a lower bound only).
  const timing = res.headers.get("server-timing");
  assert.match(timing, /classify;dur=\d+, quota;dur=\d+, upstream;dur=(\d+), router;dur=\d+/);
  assert.ok(Number(/upstream;dur=(\d+)/.exec(timing)[1]) >= ATTEMPT_TIMEOUT_MS, timing);
});

/** A router of the test's own over the three fakes, with `failover` settings; stopped when the test ends. */
async function ownRouter(t, failover) {
  const config = {
    failover,
    providers: {
      groq: { base_url: groq.baseUrl, keys: [{ id: "groq-a", secret: "GROQ_A", org: "org-a" }], limits: { [FAST]: { rpm: 10_000, rpd: 100_000, tpm: 10_000_000, tpd: 100_000_000 } } },
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] },
      fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
    },
    routes: { fast: [`groq/${FAST}`], slow: ["together/m-t", "fireworks/m-f"] },
  };
  const own = await startRouter({ ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, ...KEYS });
  t.after(() => own.dispose());
  return (body = {}) =>
    own.fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
      body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }], ...body }),
    });
}

test("the fast path's attempts time out at fast_attempt_timeout_ms, well within a deadline the slow path's timeout would fill", async (t) => {
  // With the 30 s attempt timeout, Groq's hang would use up the 3 s deadline: a 504.
  const post = await ownRouter(t, { attempt_timeout_ms: 30_000, fast_attempt_timeout_ms: 400, deadline_ms: 3_000 });
  groq.answer(() => ({ hang: true }));
  const res = await post();
  assert.equal(res.status, 200);
  assert.equal(await servedBy(res), "together");
  assert.equal(res.headers.get("x-router-failover"), `groq/${FAST}=timeout`);
});

test("a non-streamed slow-path answer that outlasts the attempt timeout does not open the provider's circuit; a stream's slow start does", async (t) => {
  const post = await ownRouter(t, { attempt_timeout_ms: 300, breaker_failures: 1, breaker_cooldown_ms: 60_000 });
  together.answer(() => ({ hang: true }));
  for (let i = 1; i <= 2; i++) {
    const res = await post({ model: "slow" });
    assert.equal(await servedBy(res), "fireworks");
    assert.equal(together.calls.length, i, "Together is still tried: a long answer is no provider failure");
  }
  // A stream that has not started within the timeout is the provider's failure: the circuit opens.
  const streamed = await post({ model: "slow", stream: true });
  await streamed.arrayBuffer();
  assert.equal(together.calls.length, 3);
  await (await post({ model: "slow" })).arrayBuffer();
  assert.equal(together.calls.length, 3, "the open circuit skips Together");
});

test("x-router-failover names key ids only for an admin caller or when the configuration exposes them", async (t) => {
  const adminHash = createHash("sha256").update(ADMIN_KEY).digest("hex");
  const start = async (gateway) => {
    const config = {
      gateway,
      providers: {
        together: { base_url: together.baseUrl, keys: [{ id: "acct-acme-prod", secret: "TOGETHER_KEY" }] },
        fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
      },
      routes: { slow: ["together/m-t", "fireworks/m-f"] },
    };
    // The admin key is a gateway key too here, so that it can make a chat request.
    const own = await startRouter({ ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: `${GATEWAY_HASH},${adminHash}`, ADMIN_KEY_HASHES: adminHash, ...KEYS }, { secrets: [ADMIN_KEY] });
    t.after(() => own.dispose());
    return (key) =>
      own.fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: "slow", messages: [{ role: "user", content: "hi" }] }),
      });
  };
  together.answer(() => json({ error: { message: "boom" } }, 503));
  const hidden = await start({});
  const client = await hidden(GATEWAY_KEY);
  assert.equal(await servedBy(client), "fireworks");
  assert.equal(client.headers.get("x-router-failover"), "together/m-t=server_error");
  const admin = await hidden(ADMIN_KEY);
  await admin.arrayBuffer();
  assert.equal(admin.headers.get("x-router-failover"), "together/m-t@acct-acme-prod=server_error");
  const exposed = await (await start({ expose_key_ids: true }))(GATEWAY_KEY);
  await exposed.arrayBuffer();
  assert.equal(exposed.headers.get("x-router-failover"), "together/m-t@acct-acme-prod=server_error");
});

test("the client's latency budget caps the deadline: 504 when nothing answers in time", async () => {
  groq.answer(() => ({ hang: true }));
  together.answer(() => ({ hang: true }));
  const res = await chat({}, { "x-router-latency-budget-ms": "300" });
  assert.equal(res.status, 504);
  const err = await readError(assert, res);
  assert.equal(err.code, "upstream_timeout");
  // Without the budget, Groq's attempt would time out at 600 ms and Together would be tried
  // within the 5 s deadline: the budget left no time for a second attempt.
  assert.equal(groq.calls.length, 1);
  assert.equal(together.calls.length, 0, "no time was left for a second attempt");
});

test("a streaming request fails over before its first byte", async () => {
  groq.answer(() => tooMany(1));
  together.answer(() => sse([...events(chunk("Hel"), chunk("lo")), "data: [DONE]\n\n"]));
  const res = await chat({ stream: true }, { accept: "text/event-stream" });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  assert.equal(res.headers.get("x-router-provider"), "together");
  assert.equal(await res.text(), [...events(chunk("Hel"), chunk("lo")), "data: [DONE]\n\n"].join(""));
  assert.deepEqual(groq.calls.map(keyOf).sort(), ["GROQ_A", "GROQ_B"], "both organizations, once each");
  assert.equal(res.headers.get("x-router-attempts"), "3");
});

test("a stream whose first event is an error fails over too", async () => {
  groq.answer(() => sse(events({ error: { message: "Service Unavailable", type: "internal_server_error" } })));
  const res = await chat({ stream: true });
  assert.equal(res.status, 200);
  // Nothing of Groq's stream reached the client: Together's answer is all it got.
  assert.equal(await servedBy(res), "together");
  assert.equal(res.headers.get("x-router-provider"), "together");
  assert.match(res.headers.get("x-router-failover"), new RegExp(`^groq/${FAST}=bad_answer$`));
  assert.equal(groq.calls.length, 1);
});

test("a stream cut after its first byte ends with an explicit error event, and the SDK raises it", async () => {
  groq.answer(() => sse(events(chunk("Hel"), chunk("lo")), { cut: true }));
  const res = await chat({ stream: true });
  assert.equal(res.status, 200);
  const text = await res.text();
  // What the client got is what was sent, up to the cut (chunks still on their way when the
  // upstream fails may be lost), then the error event.
  assert.ok(text.startsWith(events(chunk("Hel")).join("")), text);
  assert.ok(!text.includes("[DONE]"), text);
  const last = text.trimEnd().split("\n\n").at(-1);
  const error = JSON.parse(last.replace(/^data: /, "")).error;
  assert.equal(error.code, "upstream_stream_interrupted");
  assert.equal(together.calls.length, 0, "after the first byte there is no failover");
  // The official SDK turns the event into an exception rather than a clean end.
  const client = new OpenAI({ apiKey: GATEWAY_KEY, baseURL: `${router.url}/v1`, maxRetries: 0 });
  const stream = await client.chat.completions.create({ model: "fast", messages: [{ role: "user", content: "x" }], stream: true });
  const got = [];
  await assert.rejects(
    (async () => {
      for await (const c of stream) got.push(c.choices[0].delta.content);
    })(),
    (err) => err instanceof OpenAI.APIError && /ended before it was complete/.test(err.message),
  );
  assert.equal(got[0], "Hel");
});

test("a JSON answer sent in parts reaches the client whole, as one piece", async () => {
  const whole = JSON.stringify({ id: "groq", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "x".repeat(5000) } }], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } });
  const parts = [whole.slice(0, 10), whole.slice(10, 3000), whole.slice(3000)];
  groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: parts }));
  const res = await chat();
  assert.equal(res.status, 200);
  assert.equal(await res.text(), whole);
  assert.equal(together.calls.length, 0);
});

test("a JSON answer with its content-length arrives whole, one part or several", async () => {
  const whole = JSON.stringify({ id: "groq", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "y".repeat(4000) } }], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } });
  const length = { "content-type": "application/json", "content-length": String(Buffer.byteLength(whole)) };
  for (const body of [whole, [whole.slice(0, 7), whole.slice(7, 2000), whole.slice(2000)]]) {
    groq.answer(() => ({ status: 200, headers: length, body }));
    const res = await chat();
    assert.equal(res.status, 200);
    assert.equal(await res.text(), whole);
  }
  assert.equal(together.calls.length, 0);
});

test("a JSON answer the upstream cuts before its end fails over: nothing of it was sent", async () => {
  const whole = JSON.stringify({ id: "groq", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "partial" } }] });
  groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: [whole.slice(0, 20), whole.slice(20, 40)], cut: true }));
  const res = await chat();
  assert.equal(res.status, 200);
  assert.equal(await servedBy(res), "together");
  assert.match(res.headers.get("x-router-failover"), /=bad_answer/);
});

test("a JSON answer truncated yet ended cleanly fails over, every time, to the other organization first", async () => {
  const whole = JSON.stringify({ id: "groq", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "partial" } }] });
  for (const headers of [{}, { "content-length": "40" }]) {
    groq.reset();
    groq.answer((call) => (keyOf(call) === "GROQ_A" ? { status: 200, headers: { "content-type": "application/json", ...headers }, body: whole.slice(0, 40) } : answer("groq-b")));
    const res = await chat();
    assert.equal(res.status, 200);
    const body = await res.text();
    assert.doesNotThrow(() => JSON.parse(body), body);
    assert.notEqual(JSON.parse(body).id, "groq", "the truncated answer never reached the client");
  }
});

test("an event stream whose first chunk holds a malformed event fails over", async () => {
  groq.answer(() => sse([`${events(chunk("Hel")).join("")}data: {"id":"s","choi\n\n`, ...events(chunk("lo")), "data: [DONE]\n\n"]));
  together.answer(() => sse([...events(chunk("fine")), "data: [DONE]\n\n"]));
  const res = await chat({ stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-router-provider"), "together");
  assert.equal(await res.text(), [...events(chunk("fine")), "data: [DONE]\n\n"].join(""));
  assert.match(res.headers.get("x-router-failover"), new RegExp(`^groq/${FAST}=bad_answer$`));
});

test("with check_stream_events, a malformed event after the first byte never reaches the client: the error event ends the stream", async (t) => {
  const post = await ownRouter(t, { check_stream_events: true });
  const good = [...events(chunk("Hel"))];
  groq.answer(() => sse([...good, 'data: {"id":"s","choi\n\n', ...events(chunk("lo")), "data: [DONE]\n\n"]));
  const res = await post({ stream: true });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.ok(text.startsWith(good.join("")), text);
  assert.ok(!text.includes('"choi\n'), `the malformed event reached the client: ${text}`);
  assert.ok(!text.includes("[DONE]"), text);
  assert.equal(JSON.parse(text.trimEnd().split("\n\n").at(-1).replace(/^data: /, "")).error.code, "upstream_stream_interrupted");
  // Without the option the stream is piped natively after its first chunk, as it came.
  const plain = await ownRouter(t, {});
  const unchecked = await (await plain({ stream: true })).text();
  assert.ok(unchecked.includes('"choi\n'), unchecked);
});

test("with check_stream_events, a healthy stream arrives unchanged, events split across chunks included", async (t) => {
  const post = await ownRouter(t, { check_stream_events: true });
  const whole = [...events(chunk("a"), chunk("b"), chunk("c")), "data: [DONE]\n\n"].join("");
  // Cut at odd places: inside an event, inside the blank line, inside [DONE].
  const parts = [whole.slice(0, 7), whole.slice(7, 60), whole.slice(60, whole.length - 5), whole.slice(whole.length - 5)];
  groq.answer(() => sse(parts));
  const res = await post({ stream: true });
  assert.equal(await res.text(), whole);
});

test("a complete stream whose [DONE] arrives byte by byte gets nothing appended", async () => {
  const sent = [...events(chunk("a"), chunk("b")), ..."data: [DONE]\n\n".split("")];
  groq.answer(() => sse(sent));
  const res = await chat({ stream: true });
  assert.equal(await res.text(), sent.join(""));
});

test("a stream that ends cleanly but without [DONE] gets the error event as well", async () => {
  groq.answer(() => sse(events(chunk("partial"))));
  const res = await chat({ stream: true });
  const text = await res.text();
  assert.ok(text.includes("upstream_stream_interrupted"), text);
});

test("every Groq organization refuses with 429 and a GPU provider serves", async () => {
  groq.answer(() => tooMany(2));
  const res = await chat();
  assert.equal(res.status, 200);
  assert.equal(await servedBy(res), "together");
  assert.deepEqual(groq.calls.map(keyOf).sort(), ["GROQ_A", "GROQ_B"]);
  assert.match(res.headers.get("x-router-failover"), new RegExp(`^groq/${FAST}=rate_limited, groq/${FAST}=rate_limited$`));
  // The organizations cool down for the retry-after they sent; until then Groq is not called.
  const next = await chat();
  assert.equal(await servedBy(next), "together");
  assert.equal(groq.calls.length, 2);
  // Once the retry-after is over, Groq is called again.
  router.advance(2_000);
  groq.answer(() => answer("groq"));
  assert.equal(await servedBy(await chat()), "groq");
  assert.equal(groq.calls.length, 3);
});

test("key 1 answers 429 and key 2 serves", async () => {
  // Whichever organization the ledger picks first is refused; the other one serves.
  groq.answer((call) => (groq.calls.length === 1 ? tooMany(2) : answer(`groq ${keyOf(call)}`)));
  const res = await chat();
  assert.equal(res.status, 200);
  const [first, second] = groq.calls.map(keyOf);
  assert.notEqual(first, second);
  assert.equal(await servedBy(res), `groq ${second}`);
  assert.equal(together.calls.length, 0);
  assert.equal(res.headers.get("x-router-attempts"), "2");
  // The refused organization cools down: until its retry-after is over, the other one serves.
  groq.reset();
  groq.answer((call) => answer(`groq ${keyOf(call)}`));
  const next = await chat();
  assert.equal(await servedBy(next), `groq ${second}`);
  assert.deepEqual(groq.calls.map(keyOf), [second]);
});

test("one JSON log line per request names each attempt by key id, never a key or the prompt", async () => {
  together.answer(() => json({ error: { message: "The server is overloaded" } }, 503));
  const before = router.logs.length;
  await chat({ model: "slow", messages: [{ role: "user", content: "a secret prompt" }] });
  const lines = router.logs.slice(before).filter((l) => l.includes('\\"event\\":\\"request\\"') || l.includes('"event":"request"'));
  assert.equal(lines.length, 1, router.logs.slice(before).join("\n"));
  assert.ok(!lines[0].includes("a secret prompt"));
  for (const key of Object.values(KEYS)) assert.ok(!lines[0].includes(key));
  const line = requestLine(lines[0]);
  assert.equal(line.status, 200);
  assert.deepEqual(
    line.attempts.map((a) => [a.provider, a.key_id, a.outcome]),
    [
      ["together", "together-1", "server_error"],
      ["fireworks", "fireworks-1", "success"],
    ],
  );
});

/** The request's log line as the router wrote it (Miniflare may wrap it in a log record). */
function requestLine(raw) {
  let v = JSON.parse(raw);
  for (let i = 0; i < 3 && v.event !== "request"; i++) {
    const inner = typeof v === "string" ? v : (v.message ?? v.msg ?? v.args?.[0] ?? v.data);
    v = typeof inner === "string" ? JSON.parse(inner) : inner;
  }
  return v;
}

test("when everything is rate limited the client gets 429 with the earliest retry-after", async () => {
  groq.answer(() => tooMany(40));
  together.answer(() => tooMany(7));
  fireworks.answer(() => tooMany(30));
  const res = await chat();
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "7");
  const err = await readError(assert, res);
  assert.equal(err.code, "quota_exhausted");
  assert.ok(!err.message.includes("org_01secret"));
  assert.equal(groq.calls.length + together.calls.length + fireworks.calls.length, 4);
});

test("when every provider fails with 5xx the client gets a 502, then open circuits skip them", async () => {
  // A router of its own, so that open circuits do not leak into the other tests.
  const config = {
    failover: { breaker_failures: 3, breaker_cooldown_ms: 60_000 },
    providers: {
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_KEY" }] },
      fireworks: { base_url: fireworks.baseUrl, keys: [{ id: "fireworks-1", secret: "FIREWORKS_KEY" }] },
    },
    routes: { slow: ["together/m-t", "fireworks/m-f"] },
  };
  const own = await startRouter({ ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, ...KEYS });
  try {
    const down = () => json({ error: { message: "boom" } }, 500);
    together.answer(down);
    fireworks.answer(down);
    const post = () =>
      own.fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` },
        body: JSON.stringify({ model: "slow", messages: [{ role: "user", content: "hi" }] }),
      });
    const res = await post();
    assert.equal(res.status, 502);
    const err = await readError(assert, res);
    assert.equal(err.code, "upstream_failed");
    assert.equal(together.calls.length + fireworks.calls.length, 2, "one attempt per provider");
    // Three failures in a row open a circuit (breaker_failures = 3) ...
    for (let i = 0; i < 2; i++) assert.equal((await post()).status, 502);
    assert.equal(together.calls.length + fireworks.calls.length, 6);
    // ... then the providers are skipped without a call, and the client learns when to retry.
    const skipped = await post();
    assert.equal(skipped.status, 503);
    assert.equal((await readError(assert, skipped)).code, "upstream_unavailable");
    const retry = Number(skipped.headers.get("retry-after"));
    assert.ok(retry > 50 && retry <= 60, `retry-after ${retry}`);
    assert.equal(together.calls.length + fireworks.calls.length, 6, "no call while the circuits are open");
  } finally {
    await own.dispose();
  }
});
