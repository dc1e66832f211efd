// The router's face: models, embeddings, health, preflight, auth, and every kind of bad input.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {
  GATEWAY_KEY,
  readError,
  startTwoProviders,
  TOGETHER_KEY,
} from "./harness.mjs";

const MAX_BODY = 4096;
const ORIGIN = "https://app.example";
let groq;
let together;
let router;

function authed(body, headers = {}) {
  return {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}`, ...headers },
    body,
  };
}

let scenario;

before(async () => {
  // The configuration as a JSON string var here; the other files pass it as an object.
  scenario = await startTwoProviders({
    gateway: { max_body_bytes: MAX_BODY, cors_origins: [ORIGIN] },
    asJsonString: true,
  });
  ({ groq, together, router } = scenario);
});

after(() => scenario?.close());

beforeEach(() => scenario.reset());

function noUpstreamCalls() {
  assert.equal(groq.calls.length + together.calls.length, 0, "the fake upstreams received nothing");
}

test("GET /v1/models lists the aliases and every concrete model in OpenAI's list format", async () => {
  const res = await router.fetch("/v1/models", { headers: { authorization: `Bearer ${GATEWAY_KEY}` } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.object, "list");
  assert.deepEqual(
    body.data.map((m) => m.id),
    ["auto", "embed", "fast", "slow", "BAAI/bge-base-en-v1.5", "llama-3.1-8b-instant", "meta-llama/Llama-3.3-70B-Instruct-Turbo"],
  );
  for (const m of body.data) assert.equal(m.object, "model");
  noUpstreamCalls();
});

test("POST /v1/embeddings goes to the provider that has embeddings", async () => {
  const answer = JSON.stringify({ object: "list", data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }] });
  together.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: answer }));
  const res = await router.fetch("/v1/embeddings", authed(JSON.stringify({ model: "embed", input: "hello", dimensions: 2 })));
  assert.equal(res.status, 200);
  assert.equal(await res.text(), answer);
  assert.equal(together.calls.length, 1);
  assert.equal(together.calls[0].path, "/v1/embeddings");
  assert.equal(together.calls[0].headers.authorization, `Bearer ${TOGETHER_KEY}`);
  assert.deepEqual(JSON.parse(together.calls[0].body), { model: "BAAI/bge-base-en-v1.5", input: "hello", dimensions: 2 });
});

test("embeddings on a chat-only route is a 400 naming the capability", async () => {
  const res = await router.fetch("/v1/embeddings", authed(JSON.stringify({ model: "fast", input: "x" })));
  assert.equal(res.status, 400);
  const err = await readError(assert, res);
  assert.equal(err.code, "unsupported_parameter");
  assert.match(err.message, /embeddings/);
  noUpstreamCalls();
});

test("GET /healthz answers without auth and without calling upstream", async () => {
  const res = await router.fetch("/healthz");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: "ok" });
  noUpstreamCalls();
});

test("GET /router is the operator page: HTML without auth and without data; other methods are 405", async () => {
  const res = await router.fetch("/router");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(res.headers.get("content-security-policy"), /^default-src 'none';/);
  const page = await res.text();
  assert.match(page, /^<!doctype html>/);
  assert.ok(!page.includes("groq") && !page.includes("together"), "the page names no provider: it holds no data");
  const post = await router.fetch("/router", { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  assert.equal((await readError(assert, post)).code, "method_not_allowed");
  noUpstreamCalls();
});

describe("CORS", () => {
  test("a preflight from an allowed origin is answered for every route", async () => {
    for (const path of ["/v1/chat/completions", "/v1/models", "/v1/embeddings"]) {
      const res = await router.fetch(path, {
        method: "OPTIONS",
        headers: {
          origin: ORIGIN,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type, x-stainless-lang",
        },
      });
      assert.equal(res.status, 204, path);
      assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN);
      assert.match(res.headers.get("access-control-allow-methods"), /POST/);
      assert.equal(res.headers.get("access-control-allow-headers"), "authorization, content-type, x-stainless-lang");
      await res.arrayBuffer();
    }
    noUpstreamCalls();
  });

  test("responses to an allowed origin expose the router's headers, errors included", async () => {
    const res = await router.fetch("/v1/chat/completions", authed("{", { origin: ORIGIN }));
    assert.equal(res.status, 400);
    assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN);
    assert.match(res.headers.get("access-control-expose-headers"), /x-router-provider/);
    await res.arrayBuffer();
  });

  test("a 404, a 405 and /healthz are readable by an allowed origin too", async () => {
    for (const [path, init, status] of [
      ["/v1/nope", { method: "POST" }, 404],
      ["/v1/chat/completions", { method: "GET" }, 405],
      ["/healthz", {}, 200],
    ]) {
      const res = await router.fetch(path, { ...init, headers: { origin: ORIGIN } });
      assert.equal(res.status, status, path);
      assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN, path);
      await res.arrayBuffer();
    }
  });

  test("another origin is refused with a 403 and no CORS grant", async () => {
    const res = await router.fetch("/v1/chat/completions", authed(JSON.stringify({ model: "fast", messages: [{ role: "user", content: "x" }] }), { origin: "https://evil.example" }));
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    const err = await readError(assert, res);
    assert.equal(err.code, "origin_not_allowed");
    noUpstreamCalls();
  });
});

describe("gateway auth", () => {
  const body = JSON.stringify({ model: "fast", messages: [{ role: "user", content: "x" }] });
  const cases = [
    ["no Authorization header", {}, "missing_api_key"],
    ["a wrong gateway key", { authorization: "Bearer sk-wrong" }, "invalid_api_key"],
    ["a provider key instead of a gateway key", { authorization: `Bearer ${TOGETHER_KEY}` }, "invalid_api_key"],
    ["a non-bearer scheme", { authorization: `Basic ${GATEWAY_KEY}` }, "missing_api_key"],
  ];
  for (const [name, headers, code] of cases) {
    test(`${name} is a 401`, async () => {
      const res = await router.fetch("/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
      assert.equal(res.status, 401);
      const err = await readError(assert, res);
      assert.equal(err.code, code);
      noUpstreamCalls();
    });
  }

  test("GET /v1/models needs a gateway key too", async () => {
    const res = await router.fetch("/v1/models");
    assert.equal(res.status, 401);
    await res.arrayBuffer();
  });
});

describe("bad input gets a 4xx in the OpenAI format and never reaches a provider", () => {
  const valid = { model: "fast", messages: [{ role: "user", content: "hi" }] };
  const cases = [
    ["malformed JSON", "{\"model\": ", {}, 400, "invalid_json", null],
    ["an empty body", "", {}, 400, "invalid_json", null],
    ["a JSON array", "[]", {}, 400, "invalid_json", null],
    ["a body that is not UTF-8", Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]), {}, 400, "invalid_json", null],
    ["a missing model", JSON.stringify({ messages: valid.messages }), {}, 400, "missing_required_parameter", "model"],
    ["a model of the wrong type", JSON.stringify({ ...valid, model: 42 }), {}, 400, "invalid_type", "model"],
    ["missing messages", JSON.stringify({ model: "fast" }), {}, 400, "missing_required_parameter", "messages"],
    ["empty messages", JSON.stringify({ ...valid, messages: [] }), {}, 400, "invalid_value", "messages"],
    ["messages that are not a list", JSON.stringify({ ...valid, messages: "hi" }), {}, 400, "invalid_type", "messages"],
    ["an unknown role", JSON.stringify({ ...valid, messages: [valid.messages[0], { role: "wizard", content: "x" }] }), {}, 400, "invalid_value", "messages[1].role"],
    ["max_tokens of the wrong type", JSON.stringify({ ...valid, max_tokens: "lots" }), {}, 400, "invalid_type", "max_tokens"],
    ["an unknown model", JSON.stringify({ ...valid, model: "gpt-9" }), {}, 404, "model_not_found", "model"],
    ["a body over the limit", JSON.stringify({ ...valid, pad: "x".repeat(MAX_BODY) }), {}, 413, "request_too_large", null],
    ["a form-encoded body", "model=fast", { "content-type": "application/x-www-form-urlencoded" }, 415, "unsupported_media_type", null],
    ["a text/plain body", JSON.stringify(valid), { "content-type": "text/plain" }, 415, "unsupported_media_type", null],
  ];
  for (const [name, body, headers, status, code, param] of cases) {
    test(name, async () => {
      const res = await router.fetch("/v1/chat/completions", authed(body, headers));
      assert.equal(res.status, status);
      const err = await readError(assert, res);
      assert.equal(err.type, "invalid_request_error");
      assert.equal(err.code, code);
      assert.equal(err.param, param);
      noUpstreamCalls();
    });
  }

  test("a body over the limit without content-length (chunked) is a 413 too", async () => {
    const big = JSON.stringify({ model: "fast", messages: [{ role: "user", content: "y".repeat(MAX_BODY) }] });
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const res = await router.fetch("/v1/chat/completions", { ...authed(stream), duplex: "half" });
    assert.equal(res.status, 413);
    await res.arrayBuffer();
    noUpstreamCalls();
  });

  test("a refusal before the body is read still reaches a client that sends a large body", async () => {
    const big = JSON.stringify({ model: "fast", messages: [{ role: "user", content: "z".repeat(MAX_BODY - 100) }] });
    for (let i = 0; i < 5; i++) {
      for (const [path, headers, status] of [
        ["/v1/chat/completions", { authorization: "Bearer wrong" }, 401],
        ["/v1/nowhere", {}, 404],
        ["/v1/models", {}, 405],
      ]) {
        const res = await router.fetch(path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: big });
        assert.equal(res.status, status, path);
        await res.arrayBuffer();
      }
    }
    noUpstreamCalls();
  });

  test("a body that trickles in is cut off: 408 for a client with a key, the refusal at once for one without", async (t) => {
    const own = await startTwoProviders({ gateway: { body_timeout_ms: 300 } });
    t.after(() => own.close());
    // Sends the headers and the first bytes of a body that never ends, over a raw connection;
    // resolves with the status the router answers (or "none" if it never does).
    const trickle = (headers) =>
      new Promise((resolve, reject) => {
        const url = new URL(`${own.router.url}/v1/chat/completions`);
        const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers: { "content-type": "application/json", ...headers } });
        const giveUp = setTimeout(() => {
          req.destroy();
          resolve("none");
        }, 8_000);
        req.on("response", (res) => {
          clearTimeout(giveUp);
          const parts = [];
          res.on("data", (c) => parts.push(c));
          res.on("end", () => {
            req.destroy();
            resolve({ status: res.statusCode, body: Buffer.concat(parts).toString() });
          });
        });
        req.on("error", (e) => (e.code === "ECONNRESET" ? null : reject(e)));
        req.write('{"model":"fast","messages":[');
      });
    const withKey = await trickle({ authorization: `Bearer ${GATEWAY_KEY}`, "content-length": "100" });
    assert.notEqual(withKey, "none", "the router never answered a client with a key trickling its body");
    assert.equal(withKey.status, 408);
    assert.equal(JSON.parse(withKey.body).error.code, "request_timeout");
    const chunked = await trickle({ authorization: `Bearer ${GATEWAY_KEY}`, "transfer-encoding": "chunked" });
    assert.equal(chunked.status, 408);
    // Without a key: the 401 comes once the drain's own time is up, whatever the client does.
    const noKey = await trickle({ "transfer-encoding": "chunked" });
    assert.notEqual(noKey, "none", "the router never answered a client without a key trickling its body");
    assert.equal(noKey.status, 401);
    assert.equal(own.groq.calls.length + own.together.calls.length, 0);
  });

  test("an unknown path is a 404 and a wrong method a 405 with allow", async () => {
    let res = await router.fetch("/v1/engines", authed("{}"));
    assert.equal(res.status, 404);
    assert.equal((await readError(assert, res)).code, "unknown_url");
    res = await router.fetch("/v1/chat/completions", { headers: { authorization: `Bearer ${GATEWAY_KEY}` } });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "POST");
    assert.equal((await readError(assert, res)).code, "method_not_allowed");
    res = await router.fetch("/v1/models", authed("{}"));
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET");
    await res.arrayBuffer();
    noUpstreamCalls();
  });
});

