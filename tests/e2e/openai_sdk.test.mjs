// The official `openai` npm client works against the router with only the base URL changed.
import { after, before, beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import {
  GATEWAY_KEY,
  GROQ_KEY,
  startTwoProviders,
} from "./harness.mjs";

let groq;
let together;
let router;
let client;

let scenario;

/** The SDK's fetch, keeping what the client saw for the harness's key-leak check. */
async function recorded(url, init) {
  const res = await fetch(url, init);
  router.seen.push(JSON.stringify([...res.headers]), await res.clone().text());
  return res;
}

before(async () => {
  scenario = await startTwoProviders();
  ({ groq, together, router } = scenario);
  client = new OpenAI({ apiKey: GATEWAY_KEY, baseURL: `${router.url}/v1`, maxRetries: 0, fetch: recorded });
});

after(() => scenario?.close());

beforeEach(() => scenario.reset());

test("chat.completions.create, non-streaming", async () => {
  groq.answer(() => ({
    status: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      id: "chatcmpl-sdk",
      object: "chat.completion",
      created: 1,
      model: "llama-3.1-8b-instant",
      choices: [{ index: 0, message: { role: "assistant", content: "Hello from the fake" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 },
    }),
  }));
  const { data, response } = await client.chat.completions
    .create({ model: "fast", messages: [{ role: "user", content: "hi" }], max_tokens: 16 })
    .withResponse();
  assert.equal(data.choices[0].message.content, "Hello from the fake");
  assert.equal(data.usage.total_tokens, 9);
  assert.equal(response.headers.get("x-router-provider"), "groq");
  assert.equal(groq.calls.length, 1);
  assert.equal(groq.calls[0].headers.authorization, `Bearer ${GROQ_KEY}`);
  assert.equal(JSON.parse(groq.calls[0].body).max_completion_tokens, 16);
});

test("chat.completions.create, streaming", async () => {
  const words = ["Stream", "ing", " works"];
  const events = words.map(
    (w, i) =>
      `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", choices: [{ index: 0, delta: { content: w }, finish_reason: i === words.length - 1 ? "stop" : null }] })}\n\n`,
  );
  groq.answer(() => ({
    status: 200,
    headers: { "content-type": "text/event-stream" },
    body: [...events, "data: [DONE]\n\n"],
  }));
  const stream = await client.chat.completions.create({
    model: "fast",
    messages: [{ role: "user", content: "stream please" }],
    stream: true,
  });
  const got = [];
  for await (const chunk of stream) got.push(chunk.choices[0]?.delta?.content ?? "");
  assert.deepEqual(got, words);
  assert.equal(JSON.parse(groq.calls[0].body).stream, true);
});

test("models.list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes("fast") && ids.includes("slow") && ids.includes("auto"), ids.join(","));
  assert.equal(groq.calls.length + together.calls.length, 0);
});

test("embeddings.create", async () => {
  together.answer(() => ({
    status: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      object: "list",
      model: "BAAI/bge-base-en-v1.5",
      data: [{ object: "embedding", index: 0, embedding: [0.5, -0.5] }],
      usage: { prompt_tokens: 1, total_tokens: 1 },
    }),
  }));
  const res = await client.embeddings.create({ model: "embed", input: "hello", encoding_format: "float" });
  assert.deepEqual(res.data[0].embedding, [0.5, -0.5]);
  assert.equal(together.calls.length, 1);
});

test("errors surface as the SDK's typed errors with the router's code", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.code === "model_not_found" && err.param === "model",
  );
  const wrongKey = new OpenAI({ apiKey: "sk-wrong", baseURL: `${router.url}/v1`, maxRetries: 0, fetch: recorded });
  await assert.rejects(
    wrongKey.chat.completions.create({ model: "fast", messages: [{ role: "user", content: "x" }] }),
    (err) => err instanceof OpenAI.AuthenticationError && err.code === "invalid_api_key",
  );
  const tooMany = () => ({ status: 429, headers: { "retry-after": "3", "content-type": "application/json" }, body: "{}" });
  groq.answer(tooMany);
  together.answer(tooMany);
  await assert.rejects(
    client.chat.completions.create({ model: "fast", messages: [{ role: "user", content: "x" }] }),
    (err) => err instanceof OpenAI.RateLimitError && err.headers.get("retry-after") === "3",
  );
});
