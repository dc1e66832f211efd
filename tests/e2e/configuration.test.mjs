// The router without a working configuration still starts and says what to fix.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readError, startFakeUpstream, startRouter } from "./harness.mjs";

const BODY = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] });

test("without the provider key, a request gets a 503 naming the secret and how to set it", async () => {
  const fake = await startFakeUpstream();
  const router = await startRouter({ UPSTREAM_BASE_URL: fake.baseUrl });
  try {
    const health = await router.fetch("/healthz");
    assert.equal(health.status, 200);
    await health.arrayBuffer();

    const res = await router.fetch("/v1/chat/completions", { method: "POST", body: BODY });
    assert.equal(res.status, 503);
    const err = await readError(assert, res);
    assert.equal(err.type, "configuration_error");
    assert.equal(err.code, "missing_secret");
    assert.match(err.message, /UPSTREAM_API_KEY/);
    assert.match(err.message, /\.dev\.vars/);
    assert.match(err.message, /wrangler secret put UPSTREAM_API_KEY/);
    assert.equal(fake.calls.length, 0);
  } finally {
    await router.dispose();
    await fake.close();
  }
});

test("an invalid base URL is a 503 naming the variable", async () => {
  const router = await startRouter({ UPSTREAM_BASE_URL: "api.example.com/v1", UPSTREAM_API_KEY: "k" });
  try {
    const res = await router.fetch("/v1/chat/completions", { method: "POST", body: BODY });
    assert.equal(res.status, 503);
    const err = await readError(assert, res);
    assert.equal(err.code, "invalid_config");
    assert.match(err.message, /UPSTREAM_BASE_URL/);
  } finally {
    await router.dispose();
  }
});

test("an unreachable upstream is a 502 upstream_unreachable", async () => {
  // A port that was just free: nothing listens there any more.
  const fake = await startFakeUpstream();
  const baseUrl = fake.baseUrl;
  await fake.close();
  const router = await startRouter({ UPSTREAM_BASE_URL: baseUrl, UPSTREAM_API_KEY: "k" });
  try {
    const res = await router.fetch("/v1/chat/completions", { method: "POST", body: BODY });
    assert.equal(res.status, 502);
    const err = await readError(assert, res);
    assert.equal(err.code, "upstream_unreachable");
  } finally {
    await router.dispose();
  }
});
