// POST /v1/chat/completions forwarded to one upstream, seen from the client and from the fake.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { UPSTREAM_KEY, readError, startFakeUpstream, startRouter } from "./harness.mjs";

const COMPLETION = JSON.stringify({
  id: "chatcmpl-1",
  object: "chat.completion",
  created: 1700000000,
  model: "llama-3.1-8b-instant",
  choices: [{ index: 0, message: { role: "assistant", content: "Hi!" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
});

const REQUEST = JSON.stringify({
  model: "llama-3.1-8b-instant",
  messages: [{ role: "user", content: "Say hi, en français: « é »" }],
  temperature: 0.2,
});

let fake;
let router;
// Every body the router sent to the client, to prove no key leaks across the suite.
const seenByClient = [];

async function post(body, headers = {}) {
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
  const text = await res.clone().text();
  seenByClient.push(text, JSON.stringify([...res.headers]));
  return res;
}

before(async () => {
  fake = await startFakeUpstream();
  router = await startRouter({ UPSTREAM_BASE_URL: fake.baseUrl, UPSTREAM_API_KEY: UPSTREAM_KEY });
});

after(async () => {
  await router?.dispose();
  await fake?.close();
});

beforeEach(() => {
  fake.reset();
  fake.answer(() => ({
    status: 200,
    headers: { "content-type": "application/json", "x-request-id": "req_abc" },
    body: COMPLETION,
  }));
});

describe("forwarding", () => {
  test("reaches the upstream with the right path, body and key; the answer comes back unchanged", async () => {
    const res = await post(REQUEST, {
      authorization: "Bearer client-gateway-token",
      cookie: "session=client",
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), COMPLETION);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(res.headers.get("x-request-id"), "req_abc");

    assert.equal(fake.calls.length, 1);
    const [call] = fake.calls;
    assert.equal(call.method, "POST");
    assert.equal(call.path, "/v1/chat/completions");
    assert.equal(call.body, REQUEST);
    assert.equal(call.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
    assert.equal(call.headers["content-type"], "application/json");
    assert.equal(call.headers.cookie, undefined);
  });

  test("the client's own Authorization is never forwarded", async () => {
    await post(REQUEST, { authorization: "Bearer sk-client-should-stay-here" });
    assert.equal(fake.calls.length, 1);
    const sent = JSON.stringify(fake.calls[0].headers);
    assert.ok(!sent.includes("sk-client-should-stay-here"), sent);
  });

  test("upstream cookies are not passed to the client", async () => {
    fake.answer(() => ({
      status: 200,
      headers: { "content-type": "application/json", "set-cookie": "__cf_bm=upstream" },
      body: COMPLETION,
    }));
    const res = await post(REQUEST);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("set-cookie"), null);
    assert.equal(await res.text(), COMPLETION);
  });

  test("a streamed answer is handed through chunk by chunk, unchanged", async () => {
    const events = [
      'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
      'data: {"choices":[{"delta":{"content":"!"}}]}\n\n',
      "data: [DONE]\n\n",
    ];
    fake.answer(() => ({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: events,
    }));
    const res = await post(JSON.stringify({ ...JSON.parse(REQUEST), stream: true }), {
      accept: "text/event-stream",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    assert.equal(await res.text(), events.join(""));
    assert.equal(fake.calls[0].headers.accept, "text/event-stream");
  });
});

describe("upstream errors come back in the OpenAI format", () => {
  test("a 400 keeps the upstream's message, type, param and code", async () => {
    fake.answer(() => ({
      status: 400,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        error: {
          message: "'logprobs' is not supported with this model",
          type: "invalid_request_error",
          param: "logprobs",
          code: "unsupported_parameter",
        },
      }),
    }));
    const res = await post(REQUEST);
    assert.equal(res.status, 400);
    assert.deepEqual(await readError(assert, res), {
      message: "'logprobs' is not supported with this model",
      type: "invalid_request_error",
      param: "logprobs",
      code: "unsupported_parameter",
    });
  });

  test("a 429 is a rate-limit error with retry-after, without the upstream's account details", async () => {
    fake.answer(() => ({
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
    }));
    const res = await post(REQUEST);
    assert.equal(res.status, 429);
    assert.equal(res.headers.get("retry-after"), "7");
    const err = await readError(assert, res);
    assert.equal(err.type, "rate_limit_error");
    assert.equal(err.code, "rate_limit_exceeded");
    assert.ok(!err.message.includes("org_01secret"), err.message);
  });

  test("a 500 becomes a 502 upstream error", async () => {
    fake.answer(() => ({ status: 500, headers: { "content-type": "text/html" }, body: "<h1>oops</h1>" }));
    const res = await post(REQUEST);
    assert.equal(res.status, 502);
    const err = await readError(assert, res);
    assert.equal(err.type, "upstream_error");
    assert.equal(err.code, "upstream_failed");
    assert.match(err.message, /HTTP 500/);
  });

  test("a 401 for the router's key is a 502 naming the secret, never the key", async () => {
    fake.answer(() => ({
      status: 401,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ error: { message: `Invalid API Key ${UPSTREAM_KEY}`, type: "invalid_request_error", code: "invalid_api_key" } }),
    }));
    const res = await post(REQUEST);
    assert.equal(res.status, 502);
    const err = await readError(assert, res);
    assert.equal(err.code, "upstream_auth_failed");
    assert.match(err.message, /UPSTREAM_API_KEY/);
  });

  test("a 404 without a JSON body still gets an OpenAI-format error", async () => {
    fake.answer(() => ({ status: 404, body: "Not Found" }));
    const res = await post(REQUEST);
    assert.equal(res.status, 404);
    const err = await readError(assert, res);
    assert.equal(err.type, "invalid_request_error");
    assert.match(err.message, /HTTP 404/);
  });
});

describe("bad requests never reach the upstream", () => {
  const cases = [
    ["malformed JSON", "{\"model\": ", 400, "invalid_json"],
    ["an empty body", "", 400, "invalid_json"],
    ["a JSON array", "[]", 400, "invalid_json"],
  ];
  for (const [name, body, status, code] of cases) {
    test(name, async () => {
      const res = await post(body);
      assert.equal(res.status, status);
      const err = await readError(assert, res);
      assert.equal(err.type, "invalid_request_error");
      assert.equal(err.code, code);
      assert.equal(fake.calls.length, 0);
    });
  }

  test("an unknown path is a 404", async () => {
    const res = await router.fetch("/v1/engines", { method: "POST", body: "{}" });
    assert.equal(res.status, 404);
    const err = await readError(assert, res);
    assert.equal(err.code, "unknown_url");
    assert.equal(fake.calls.length, 0);
  });

  test("a wrong method is a 405 with allow", async () => {
    const res = await router.fetch("/v1/chat/completions");
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "POST");
    const err = await readError(assert, res);
    assert.equal(err.code, "method_not_allowed");
    assert.equal(fake.calls.length, 0);
  });
});

test("GET /healthz answers without calling the upstream", async () => {
  const res = await router.fetch("/healthz");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: "ok" });
  assert.equal(fake.calls.length, 0);
});

test("no response the client saw contains the upstream key", () => {
  assert.ok(seenByClient.length > 10);
  for (const text of seenByClient) {
    assert.ok(!text.includes(UPSTREAM_KEY), text);
  }
});
