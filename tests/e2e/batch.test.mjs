// The Batch API through the router, with the official openai npm client: upload a JSONL whose
// lines name the router's routes, create a batch, poll it, read its output, cancel one; another
// gateway key sees none of it; a line no provider serves is refused before any file is made.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import OpenAI, { toFile } from "openai";
import { GATEWAY_KEY, startRouter } from "./harness.mjs";
import { startBatchFake } from "./batch-fake.mjs";

const GROQ_KEY = "gsk-batch-test-4242";
const OTHER_KEY = "sk-gateway-other-777";
const hash = (k) => createHash("sha256").update(k).digest("hex");
const MODEL = "llama-3.1-8b-instant";

let fake;
let router;
let client;
let other;

before(async () => {
  fake = await startBatchFake({ key: GROQ_KEY });
  const config = {
    providers: {
      groq: { base_url: fake.baseUrl, keys: [{ id: "g1", secret: "GROQ_K" }] },
      // No batches at this provider: a route that starts with it sends its files to Groq.
      fireworks: { base_url: "http://127.0.0.1:9/v1", keys: [{ id: "f1", secret: "FW_K" }] },
    },
    routes: { fast: [`groq/${MODEL}`], slow: ["fireworks/m-f", "groq/llama-3.3-70b-versatile"] },
  };
  router = await startRouter(
    {
      ROUTER_CONFIG: config,
      GATEWAY_KEY_HASHES: `${hash(GATEWAY_KEY)},${hash(OTHER_KEY)}`,
      GROQ_K: GROQ_KEY,
      FW_K: "fw-batch-test-5151",
    },
    { secrets: [OTHER_KEY] },
  );
  client = new OpenAI({ apiKey: GATEWAY_KEY, baseURL: `${router.url}/v1`, maxRetries: 0 });
  other = new OpenAI({ apiKey: OTHER_KEY, baseURL: `${router.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await router?.dispose();
  await fake?.close();
});

function jsonl(n, modelOf) {
  let out = "";
  for (let i = 0; i < n; i++) {
    out +=
      JSON.stringify({
        custom_id: `req-${i}`,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model: modelOf(i), messages: [{ role: "user", content: `question ${i}` }], max_tokens: 16 },
      }) + "\n";
  }
  return out;
}

test("a batch of 1,000 lines with route names: upload, create, poll, read the output", async () => {
  const text = jsonl(1000, (i) => (i % 2 ? "fast" : MODEL));
  const file = await client.files.create({ file: await toFile(Buffer.from(text), "batch.jsonl"), purpose: "batch" });
  assert.equal(file.object, "file");
  assert.equal(file.purpose, "batch");
  // The provider received every line, each with its own model id, custom ids in order.
  const upload = fake.uploads.at(-1);
  assert.equal(file.id, upload.id);
  assert.equal(upload.lines, 1000);
  assert.deepEqual(upload.models, { [MODEL]: 1000 });
  assert.deepEqual(
    upload.kept.map((l) => l.custom_id),
    Array.from({ length: 1000 }, (_, i) => `req-${i}`),
  );
  assert.equal(upload.kept[1].body.messages[0].content, "question 1");
  // With the router's key, never the client's.
  assert.ok(fake.calls.every((c) => c.authorization === `Bearer ${GROQ_KEY}`));

  assert.equal((await client.files.retrieve(file.id)).id, file.id);
  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: "/v1/chat/completions",
    completion_window: "24h",
  });
  assert.equal(created.input_file_id, file.id);
  let batch = created;
  const polled = [];
  while (batch.status !== "completed") {
    batch = await client.batches.retrieve(created.id);
    polled.push(batch.status);
    assert.ok(polled.length < 5, `still ${batch.status}`);
  }
  assert.deepEqual(polled, ["in_progress", "completed"]);
  assert.equal(batch.request_counts.total, 1000);
  const output = await (await client.files.content(batch.output_file_id)).text();
  const lines = output.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 1000);
  assert.deepEqual(
    lines.map((l) => l.custom_id),
    Array.from({ length: 1000 }, (_, i) => `req-${i}`),
  );
  assert.equal(lines[7].response.body.choices[0].message.content, "answer req-7");

  // Another gateway key finds none of it.
  for (const attempt of [
    () => other.batches.retrieve(created.id),
    () => other.batches.cancel(created.id),
    () => other.files.content(batch.output_file_id),
    () => other.files.retrieve(file.id),
    () => other.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" }),
  ]) {
    const calls = fake.calls.length;
    await assert.rejects(attempt, (e) => e.status === 404 && e.error?.code === "not_found");
    assert.equal(fake.calls.length, calls, "the provider was not asked");
  }
  // The gateway admits the scheme in any case; the owner is still the key, whatever its case.
  const raw = (key, scheme) =>
    router.fetch(`/v1/files/${file.id}`, { headers: { authorization: `${scheme} ${key}` } });
  const mine = await raw(GATEWAY_KEY, "bearer");
  assert.equal(mine.status, 200);
  await mine.body?.cancel();
  const theirs = await raw(OTHER_KEY, "bearer");
  assert.equal(theirs.status, 404);
  await theirs.body?.cancel();
  // Its owner may cancel it.
  const cancelled = await client.batches.cancel(created.id);
  assert.equal(cancelled.status, "cancelling");
});

test("a file whose first route starts with a provider without batches goes to the next that has them", async () => {
  const file = await client.files.create({
    file: await toFile(Buffer.from(jsonl(3, () => "slow")), "slow.jsonl"),
    purpose: "batch",
  });
  assert.equal(fake.uploads.at(-1).id, file.id);
  assert.deepEqual(fake.uploads.at(-1).models, { "llama-3.3-70b-versatile": 3 });
});

test("a line no provider of the file serves is a 400 naming it, and the provider keeps no file", async () => {
  const before = fake.uploads.length;
  const text = jsonl(50, (i) => (i === 42 ? "no-such-route" : "fast"));
  await assert.rejects(
    client.files.create({ file: await toFile(Buffer.from(text), "bad.jsonl"), purpose: "batch" }),
    (e) => e.status === 400 && e.error?.param === "file" && /Line 43 .*no-such-route/.test(e.message),
  );
  // A model of the other provider cannot join a file that goes to Groq either.
  await assert.rejects(
    client.files.create({
      file: await toFile(Buffer.from(jsonl(2, (i) => (i ? "m-f" : "fast"))), "mixed.jsonl"),
      purpose: "batch",
    }),
    (e) => e.status === 400 && /Line 2 /.test(e.message),
  );
  assert.equal(fake.uploads.length, before, "no file was completed at the provider");
  // Files for other purposes are not the router's to keep.
  await assert.rejects(
    client.files.create({ file: await toFile(Buffer.from(jsonl(2, () => "fast")), "x.jsonl"), purpose: "fine-tune" }),
    (e) => e.status === 400 && /purpose/.test(e.message),
  );
  assert.equal(fake.uploads.length, before);
});

test("an unknown batch, an id that could leave the path, and the wrong method", async () => {
  await assert.rejects(client.batches.retrieve("batch_nobody"), (e) => e.status === 404 && e.error?.code === "not_found");
  const res = await router.fetch("/v1/files/../v1/batches", { headers: { authorization: `Bearer ${GATEWAY_KEY}` } });
  assert.equal(res.status, 404);
  await res.body?.cancel();
  const put = await router.fetch("/v1/batches/batch_1", { method: "DELETE", headers: { authorization: `Bearer ${GATEWAY_KEY}` } });
  assert.equal(put.status, 405);
  assert.equal(put.headers.get("allow"), "GET");
  await put.body?.cancel();
  const anon = await router.fetch("/v1/batches/batch_1");
  assert.equal(anon.status, 401);
  await anon.body?.cancel();
});
