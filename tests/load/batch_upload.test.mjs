// A 100 MB batch file through the router: streamed from a client on 127.0.0.1 into the release
// build in workerd, rewritten line by line (route names to the provider's model id) and streamed
// on to a fake provider, with workerd's resident memory sampled all along. It asserts that every
// line arrived rewritten, in order and once, and that workerd's memory grew by at most
// UPLOAD_MEMORY_BOUND_MB (32 by default) over the whole upload: a router that held the file,
// or a copy of it, would grow by its 100 MB. Bounded: one upload, and the fake stops by itself.
//
// UPLOAD_MB changes the size (default 100).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import { once } from "node:events";
import { workerdPids } from "../../bench/common.mjs";
import { GATEWAY_HASH, GATEWAY_KEY, startRouter } from "../e2e/harness.mjs";
import { startBatchFake } from "../e2e/batch-fake.mjs";

const SIZE_MB = Number(process.env.UPLOAD_MB ?? 100);
const MEMORY_BOUND_MB = Number(process.env.UPLOAD_MEMORY_BOUND_MB ?? 32);
const MODEL = "llama-3.1-8b-instant";
const GROQ_KEY = "gsk-upload-test-9090";
const BOUNDARY = "----router-upload-test-b0undary";

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function workerdRss() {
  return workerdPids().reduce(
    (sum, pid) => sum + Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024,
    0,
  );
}

/** One request line of about 1 KiB, naming the `fast` route. */
function line(i) {
  const filler = "x".repeat(900 + (i % 97));
  return JSON.stringify({
    custom_id: `r-${i}`,
    method: "POST",
    url: "/v1/chat/completions",
    body: { model: "fast", messages: [{ role: "user", content: `${i} ${filler}` }], max_tokens: 8 },
  }) + "\n";
}

test(`a ${SIZE_MB} MB batch file streams through with bounded memory`, async () => {
  const fake = await startBatchFake({ key: GROQ_KEY, keep: 0, maxRequests: 10 });
  cleanups.push(() => fake.close());
  const router = await startRouter({
    ROUTER_CONFIG: {
      providers: { groq: { base_url: fake.baseUrl, keys: [{ id: "g1", secret: "GROQ_K" }] } },
      routes: { fast: [`groq/${MODEL}`] },
    },
    GATEWAY_KEY_HASHES: GATEWAY_HASH,
    GROQ_K: GROQ_KEY,
  });
  cleanups.push(() => router.dispose());
  // Warm the isolate (the wasm compiled, the configuration parsed) before the baseline.
  const warm = await fetch(`${router.url}/v1/batches/batch_warm`, { headers: { authorization: `Bearer ${GATEWAY_KEY}` } });
  assert.equal(warm.status, 404);
  await warm.arrayBuffer();
  const baseline = workerdRss();
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, workerdRss());
  }, 20);
  cleanups.push(() => clearInterval(sampler));

  const url = new URL(`${router.url}/v1/files`);
  const req = http.request({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: "POST",
    headers: {
      authorization: `Bearer ${GATEWAY_KEY}`,
      "content-type": `multipart/form-data; boundary=${BOUNDARY}`,
    },
  });
  const answered = once(req, "response");
  const write = async (text) => {
    if (!req.write(text)) await once(req, "drain");
  };
  const started = Date.now();
  await write(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n`);
  await write(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n` +
      `Content-Type: application/jsonl\r\n\r\n`,
  );
  let sent = 0;
  let lines = 0;
  let block = "";
  while (sent < SIZE_MB * 1024 * 1024) {
    const l = line(lines++);
    sent += l.length;
    block += l;
    if (block.length >= 256 * 1024) {
      await write(block);
      block = "";
    }
  }
  await write(block);
  await write(`\r\n--${BOUNDARY}--\r\n`);
  req.end();
  const [res] = await answered;
  const chunks = [];
  for await (const c of res) chunks.push(c);
  clearInterval(sampler);
  const seconds = (Date.now() - started) / 1000;
  const body = JSON.parse(Buffer.concat(chunks).toString());
  const upload = fake.uploads.at(-1);
  const growth = (peak - baseline) / 1024 / 1024;
  console.log(
    `batch upload: ${(sent / 1024 / 1024).toFixed(1)} MiB, ${lines} lines in ${seconds.toFixed(1)} s ` +
      `(${(sent / 1024 / 1024 / seconds).toFixed(1)} MiB/s); workerd RSS ${(baseline / 1024 / 1024).toFixed(1)} MiB ` +
      `before, peak +${growth.toFixed(1)} MiB (bound ${MEMORY_BOUND_MB})`,
  );
  assert.equal(res.statusCode, 200, JSON.stringify(body));
  assert.equal(body.id, upload.id);
  assert.equal(upload.lines, lines, "every line arrived once");
  assert.deepEqual(upload.models, { [MODEL]: lines }, "every line names the provider's model id");
  // Each line grew by the difference of the two names, and nothing else changed.
  assert.equal(upload.bytes, sent + lines * (MODEL.length - "fast".length));
  assert.ok(growth <= MEMORY_BOUND_MB, `workerd grew by ${growth.toFixed(1)} MiB during the upload`);
});
