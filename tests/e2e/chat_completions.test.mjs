// POST /v1/chat/completions: routed by model, adapted per provider, forwarded, answered.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  GATEWAY_KEY,
  gate,
  GROQ_KEY,
  readError,
  startTwoProviders,
  TOGETHER_KEY,
} from "./harness.mjs";

const COMPLETION = JSON.stringify({
  id: "chatcmpl-1",
  object: "chat.completion",
  created: 1700000000,
  model: "llama-3.1-8b-instant",
  choices: [{ index: 0, message: { role: "assistant", content: "Hi!" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
});

const REQUEST = {
  model: "fast",
  messages: [{ role: "user", content: "Say hi, en français: « é »" }],
  temperature: 0.2,
};

let groq;
let together;
let router;

async function post(body, headers = {}, to = router) {
  const res = await to.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}`, ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return res;
}

function answerOk(fake, body = COMPLETION, headers = {}) {
  fake.answer(() => ({
    status: 200,
    headers: { "content-type": "application/json", "x-request-id": "req_abc", ...headers },
    body,
  }));
}

let scenario;

before(async () => {
  scenario = await startTwoProviders();
  ({ groq, together, router } = scenario);
});

after(() => scenario?.close());

beforeEach(() => {
  scenario.reset();
  answerOk(groq);
  answerOk(together);
});

describe("forwarding", () => {
  test("reaches the fast-path upstream with its model, the body and the router's key; the answer comes back unchanged", async () => {
    const res = await post(REQUEST, { cookie: "session=client" });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), COMPLETION);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(res.headers.get("x-request-id"), "req_abc");
    assert.equal(res.headers.get("x-router-provider"), "groq");
    assert.equal(res.headers.get("x-router-model"), "llama-3.1-8b-instant");

    assert.equal(groq.calls.length, 1);
    assert.equal(together.calls.length, 0);
    const [call] = groq.calls;
    assert.equal(call.method, "POST");
    assert.equal(call.path, "/v1/chat/completions");
    assert.deepEqual(JSON.parse(call.body), { ...REQUEST, model: "llama-3.1-8b-instant" });
    assert.equal(call.headers.authorization, `Bearer ${GROQ_KEY}`);
    assert.equal(call.headers["content-type"], "application/json");
    assert.equal(call.headers.cookie, undefined);
  });

  test("the client's gateway key is never forwarded", async () => {
    await post(REQUEST);
    const sent = JSON.stringify(groq.calls[0].headers);
    assert.ok(!sent.includes(GATEWAY_KEY), sent);
  });

  test("the slow alias goes to the GPU provider with its own key and model id", async () => {
    const res = await post({ ...REQUEST, model: "slow" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-router-provider"), "together");
    assert.equal(groq.calls.length, 0);
    assert.equal(together.calls.length, 1);
    assert.equal(together.calls[0].headers.authorization, `Bearer ${TOGETHER_KEY}`);
    assert.equal(JSON.parse(together.calls[0].body).model, "meta-llama/Llama-3.3-70B-Instruct-Turbo");
  });

  test("a concrete model id is served by the provider that has it", async () => {
    const res = await post({ ...REQUEST, model: "meta-llama/Llama-3.3-70B-Instruct-Turbo" });
    assert.equal(res.status, 200);
    assert.equal(together.calls.length, 1);
  });

  test("unknown fields are passed on; Groq gets max_completion_tokens and no messages[].name", async () => {
    await post({
      ...REQUEST,
      max_tokens: 64,
      n: 1,
      messages: [{ role: "user", content: "hi", name: "ann" }],
      seed: 7,
      a_future_parameter: { nested: [1, 2] },
    });
    const sent = JSON.parse(groq.calls[0].body);
    assert.equal(sent.max_completion_tokens, 64);
    assert.equal(sent.max_tokens, undefined);
    assert.equal(sent.n, undefined);
    assert.deepEqual(sent.messages, [{ role: "user", content: "hi" }]);
    assert.equal(sent.seed, 7);
    assert.deepEqual(sent.a_future_parameter, { nested: [1, 2] });
  });

  test("logprobs, which Groq rejects, routes the request to a provider that serves it", async () => {
    const res = await post({ ...REQUEST, model: "auto", logprobs: true, top_logprobs: 2, max_completion_tokens: 10 });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-router-provider"), "together");
    assert.equal(groq.calls.length, 0);
    const sent = JSON.parse(together.calls[0].body);
    assert.equal(sent.logprobs, true);
    assert.equal(sent.top_logprobs, 2);
    assert.equal(sent.max_tokens, 10);
  });

  test("a pinned model that cannot serve a need is a 400 that says which, and nothing is sent", async () => {
    const res = await post({ ...REQUEST, model: "llama-3.1-8b-instant", n: 2 });
    assert.equal(res.status, 400);
    const err = await readError(assert, res);
    assert.equal(err.code, "unsupported_parameter");
    assert.match(err.message, /\bn\b/);
    assert.equal(groq.calls.length + together.calls.length, 0);
  });

  test("only the upstream headers on the allowlist reach the client: no cookie, server, proxy, CORS or rate-limit header", async () => {
    const upstream = {
      "set-cookie": "__cf_bm=upstream",
      server: "cloudflare",
      via: "1.1 upstream-proxy",
      "cf-ray": "8f1e2d3c4b5a6978-SJC",
      "access-control-allow-origin": "*",
      "access-control-allow-credentials": "true",
      "x-ratelimit-limit-requests": "14400",
      "x-ratelimit-remaining-tokens": "5000",
      "openai-organization": "org-router-account",
      "x-groq-region": "us-west-1",
      "openai-processing-ms": "42",
    };
    for (const stream of [false, true]) {
      if (stream) {
        groq.answer(() => ({ status: 200, headers: { "content-type": "text/event-stream", "x-request-id": "req_abc", ...upstream }, body: ['data: {"choices":[]}\n\n', "data: [DONE]\n\n"] }));
      } else {
        answerOk(groq, COMPLETION, upstream);
      }
      const res = await post({ ...REQUEST, stream });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      for (const name of Object.keys(upstream).filter((n) => n !== "openai-processing-ms")) {
        assert.equal(res.headers.get(name), null, `${name} reached the client (stream: ${stream})`);
      }
      assert.equal(res.headers.get("x-request-id"), "req_abc");
      assert.equal(res.headers.get("openai-processing-ms"), "42");
    }
  });

  test("a streamed answer is handed through chunk by chunk, unchanged", async () => {
    const events = [
      'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
      'data: {"choices":[{"delta":{"content":" there"}}]}\n\n',
      'data: {"choices":[{"delta":{"content":"!"}}]}\n\n',
      "data: [DONE]\n\n",
    ];
    // The fake sends the rest only once the client has the first two events: the first is the
    // router's own read, the second comes through the hand-on (a copy that waited for a block
    // of bytes once held it back).
    const held = gate();
    groq.answer(() => ({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: [events[0], events[1], held.part(events[2]), events[3]],
    }));
    const res = await post({ ...REQUEST, stream: true }, { accept: "text/event-stream" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    while (text.length < events[0].length + events[1].length) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    assert.equal(text, events[0] + events[1], "the first two events reached the client on their own");
    held.open();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    assert.equal(held.openedInTime, true, "the client had the first event while the upstream held the rest");
    assert.equal(text, events.join(""));
    assert.equal(groq.calls[0].headers.accept, "text/event-stream");
  });
});

describe("upstream errors come back in the OpenAI format", () => {
  test("a 400 keeps the upstream's message, type, param and code", async () => {
    groq.answer(() => ({
      status: 400,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        error: {
          message: "'response_format' is not supported with tools",
          type: "invalid_request_error",
          param: "response_format",
          code: "unsupported_parameter",
        },
      }),
    }));
    const res = await post(REQUEST);
    assert.equal(res.status, 400);
    assert.deepEqual(await readError(assert, res), {
      message: "'response_format' is not supported with tools",
      type: "invalid_request_error",
      param: "response_format",
      code: "unsupported_parameter",
    });
  });


  test("account ids and key-shaped strings in an upstream's message are redacted wherever they stand", async () => {
    groq.answer(() => ({
      status: 400,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        error: {
          message: "Bad request for [org_01jabcdef] (organization=org_01jabcdef); key gsk_abcdef0123456789 and sk-proj-abc123def456 refused",
          type: "invalid_request_error",
          code: "invalid_value",
        },
      }),
    }));
    const res = await post(REQUEST);
    assert.equal(res.status, 400);
    const err = await readError(assert, res);
    assert.equal(err.message, "Bad request for [[redacted]] (organization=[redacted]); key [redacted] and [redacted] refused");
  });

  // Failures that another provider might not have fail over to the slow path first: these make
  // both fakes fail, to see what the client gets when nothing is left.
  test("a 500 from every provider becomes a 502 upstream error", async () => {
    const oops = () => ({ status: 500, headers: { "content-type": "text/html" }, body: "<h1>oops</h1>" });
    groq.answer(oops);
    together.answer(oops);
    const res = await post(REQUEST);
    assert.equal(res.status, 502);
    const err = await readError(assert, res);
    assert.equal(err.type, "upstream_error");
    assert.equal(err.code, "upstream_failed");
    assert.match(err.message, /HTTP 500/);
  });


  test("a 404 without a JSON body still gets an OpenAI-format error", async () => {
    groq.answer(() => ({ status: 404, body: "Not Found" }));
    together.answer(() => ({ status: 404, body: "Not Found" }));
    const res = await post(REQUEST);
    assert.equal(res.status, 404);
    const err = await readError(assert, res);
    assert.equal(err.type, "invalid_request_error");
    assert.match(err.message, /HTTP 404/);
  });

  // A 401 disables Groq's only key and a 429 cools its organization down: each of these two
  // has a router of its own, so no other test sees what it leaves behind.
  test("a 401 for the router's keys is a 502 that names the secrets in the log only, never the keys", async (t) => {
    const { groq, together, router } = await ownScenario(t);
    const refused = () => ({
      status: 401,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ error: { message: `Invalid API Key ${GROQ_KEY}`, type: "invalid_request_error", code: "invalid_api_key" } }),
    });
    groq.answer(refused);
    together.answer(refused);
    const res = await post(REQUEST, {}, router);
    assert.equal(res.status, 502);
    const err = await readError(assert, res);
    assert.equal(err.code, "upstream_auth_failed");
    // The secrets' names are the operator's: in the log, not in the client's answer.
    assert.doesNotMatch(err.message, /GROQ_API_KEY|TOGETHER_API_KEY/);
    assert.ok(router.logs.some((l) => /upstream_auth_failed/.test(l) && /GROQ_API_KEY, TOGETHER_API_KEY/.test(l)), router.logs.join("\n"));
    assert.equal(res.headers.get("x-router-attempts"), "2");
  });
  test("a 429 is a rate-limit error with retry-after, without the upstream's account details", async (t) => {
    const { groq, together, router } = await ownScenario(t);
    const tooMany = () => ({
      status: 429,
      headers: { "content-type": "application/json", "retry-after": "7" },
      body: JSON.stringify({
        error: {
          message:
            "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01secret` on tokens per minute (TPM)",
          type: "tokens",
          code: "rate_limit_exceeded",
        },
      }),
    });
    groq.answer(tooMany);
    together.answer(tooMany);
    const res = await post(REQUEST, {}, router);
    assert.equal(res.status, 429);
    assert.equal(res.headers.get("retry-after"), "7");
    const err = await readError(assert, res);
    assert.equal(err.type, "rate_limit_error");
    assert.equal(err.code, "quota_exhausted");
    assert.ok(!err.message.includes("org_01secret"), err.message);
  });
});

/** A Groq fake, a Together fake and a router of the test's own, stopped when it ends. */
async function ownScenario(t) {
  const own = await startTwoProviders();
  t.after(() => own.close());
  return own;
}

describe("what reaches the provider", () => {
  test("billing, storage and routing fields a client sends are withheld from the provider; other fields pass", async () => {
    const res = await post({ ...REQUEST, service_tier: "flex", store: true, metadata: { team: "x" }, models: ["a", "b"], provider: { order: ["c"] }, route: "fallback", seed: 7, user: "u-1" });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    const sent = JSON.parse(groq.calls[0].body);
    for (const field of ["service_tier", "store", "metadata", "models", "provider", "route"]) {
      assert.equal(sent[field], undefined, `${field} reached the provider`);
    }
    assert.equal(sent.seed, 7);
    assert.equal(sent.user, "u-1");
  });

  test("n and max_tokens over the gateway's bounds are refused before anything is sent", async () => {
    for (const [extra, param] of [[{ n: 9, model: "slow" }, "n"], [{ max_tokens: 200_000 }, "max_tokens"]]) {
      const res = await post({ ...REQUEST, ...extra });
      assert.equal(res.status, 400);
      const err = await readError(assert, res);
      assert.equal(err.code, "invalid_value");
      assert.equal(err.param, param);
    }
    assert.equal(groq.calls.length + together.calls.length, 0);
  });
});
