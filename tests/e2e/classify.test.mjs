// The fast/slow decision seen from a client: which fake is called, and the headers that say why.
import { after, before, beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { GATEWAY_KEY, startTwoProviders } from "./harness.mjs";

let scenario;
let groq;
let together;
let router;

const OK = JSON.stringify({ id: "c", object: "chat.completion", choices: [] });

before(async () => {
  scenario = await startTwoProviders();
  ({ groq, together, router } = scenario);
});

after(() => scenario?.close());

beforeEach(() => {
  scenario.reset();
  for (const fake of [groq, together]) {
    fake.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK }));
  }
});

async function chat(body, headers = {}) {
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}`, ...headers },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res;
}

const short = [{ role: "user", content: "Extract the city: 'I live in Lyon.'" }];
const long = [{ role: "user", content: "Summarize this report. ".repeat(350) }];

test("a short structured request takes the fast path to Groq", async () => {
  const res = await chat({ model: "auto", messages: short, response_format: { type: "json_object" } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-router-path"), "fast");
  assert.equal(res.headers.get("x-router-reason"), "auto,structured");
  assert.equal(res.headers.get("x-router-provider"), "groq");
  assert.equal(groq.calls.length, 1);
  assert.equal(together.calls.length, 0);
  assert.equal(JSON.parse(groq.calls[0].body).model, "llama-3.1-8b-instant");
});

test("a long request takes the slow path to the GPU provider", async () => {
  const res = await chat({ model: "auto", messages: long });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-router-path"), "slow");
  assert.equal(res.headers.get("x-router-reason"), "auto,long_prompt");
  assert.equal(res.headers.get("x-router-provider"), "together");
  assert.equal(groq.calls.length, 0);
  assert.equal(together.calls.length, 1);
});

test("the path header overrides the router's choice for auto", async () => {
  const res = await chat({ model: "auto", messages: short }, { "x-router-path": "slow" });
  assert.equal(res.headers.get("x-router-path"), "slow");
  assert.equal(res.headers.get("x-router-reason"), "auto,header_slow");
  assert.equal(together.calls.length, 1);
});

test("a tight latency budget sends a long request to the fast path", async () => {
  const res = await chat({ model: "auto", messages: long }, { "x-router-latency-budget-ms": "800" });
  assert.equal(res.headers.get("x-router-path"), "fast");
  assert.equal(res.headers.get("x-router-reason"), "auto,tight_budget");
  assert.equal(groq.calls.length, 1);
});

test("model fast with an image falls back to the slow path with a reason, not an error", async () => {
  const messages = [
    { role: "user", content: [{ type: "text", text: "what is this?" }, { type: "image_url", image_url: { url: "https://example.com/a.png" } }] },
  ];
  const res = await chat({ model: "fast", messages });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-router-path"), "slow");
  assert.equal(res.headers.get("x-router-reason"), "model_fast,needs_vision,fallback_slow");
  assert.equal(groq.calls.length, 0);
  assert.equal(together.calls.length, 1);
});

test("the decision headers are on upstream errors too", async () => {
  groq.answer(() => ({ status: 500, body: "boom" }));
  together.answer(() => ({ status: 500, body: "boom" }));
  const res = await chat({ model: "auto", messages: short });
  assert.equal(res.status, 502);
  assert.equal(res.headers.get("x-router-path"), "fast");
  assert.equal(res.headers.get("x-router-reason"), "auto,short");
});
