// The router without a working configuration still starts and says what to fix.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ALL_SECRETS,
  GATEWAY_HASH,
  GATEWAY_KEY,
  readError,
  startFakeUpstream,
  startRouter,
  twoProviderConfig,
} from "./harness.mjs";

const BODY = JSON.stringify({ model: "fast", messages: [{ role: "user", content: "hi" }] });
const AUTHED = {
  method: "POST",
  headers: { authorization: `Bearer ${GATEWAY_KEY}`, "content-type": "application/json" },
  body: BODY,
};

async function withRouter(bindings, fn) {
  const groq = await startFakeUpstream();
  const together = await startFakeUpstream();
  const router = await startRouter(bindings(groq, together));
  try {
    await fn(router, groq, together);
  } finally {
    await router.dispose();
    await groq.close();
    await together.close();
  }
}

test("without any secret the router starts, and a request names the secret to set", async () => {
  await withRouter(
    (g, t) => ({ ROUTER_CONFIG: twoProviderConfig(g, t) }),
    async (router, groq) => {
      const health = await router.fetch("/healthz");
      assert.equal(health.status, 200);
      await health.arrayBuffer();
      const res = await router.fetch("/v1/chat/completions", AUTHED);
      assert.equal(res.status, 503);
      const err = await readError(assert, res);
      assert.equal(err.type, "configuration_error");
      assert.equal(err.code, "missing_secret");
      assert.match(err.message, /GATEWAY_KEY_HASHES/);
      assert.match(err.message, /\.dev\.vars/);
      assert.match(err.message, /wrangler secret put GATEWAY_KEY_HASHES/);
      assert.equal(groq.calls.length, 0);
    },
  );
});

test("without the provider key, a request gets a 503 naming the provider's secret", async () => {
  await withRouter(
    (g, t) => ({ ROUTER_CONFIG: twoProviderConfig(g, t), GATEWAY_KEY_HASHES: GATEWAY_HASH }),
    async (router, groq) => {
      const res = await router.fetch("/v1/chat/completions", AUTHED);
      assert.equal(res.status, 503);
      const err = await readError(assert, res);
      assert.equal(err.code, "missing_secret");
      assert.match(err.message, /GROQ_API_KEY/);
      assert.match(err.message, /wrangler secret put GROQ_API_KEY/);
      assert.equal(groq.calls.length, 0);
      assert.ok(router.logs.some((l) => l.includes("missing_secret") && l.includes("GROQ_API_KEY")), router.logs.join("\n"));
    },
  );
});

test("an invalid configuration is refused with its path, in the response and in the log", async () => {
  await withRouter(
    (g, t) => {
      const config = twoProviderConfig(g, t);
      config.providers.groq.keys[0].secrt = "typo";
      return { ROUTER_CONFIG: config, ...ALL_SECRETS };
    },
    async (router) => {
      for (let i = 0; i < 2; i++) {
        const res = await router.fetch("/v1/chat/completions", AUTHED);
        assert.equal(res.status, 503);
        const err = await readError(assert, res);
        assert.equal(err.code, "invalid_config");
        assert.match(err.message, /providers\.groq\.keys\[0\]\.secrt/);
      }
      const health = await router.fetch("/healthz");
      assert.equal(health.status, 503, "health reports the broken configuration");
      await health.arrayBuffer();
      assert.ok(router.logs.some((l) => l.includes("providers.groq.keys[0].secrt")), router.logs.join("\n"));
    },
  );
});

test("a missing configuration names ROUTER_CONFIG", async () => {
  const router = await startRouter({ ...ALL_SECRETS });
  try {
    const res = await router.fetch("/v1/chat/completions", AUTHED);
    assert.equal(res.status, 503);
    const err = await readError(assert, res);
    assert.match(err.message, /ROUTER_CONFIG/);
  } finally {
    await router.dispose();
  }
});

test("upstreams that cannot be reached are a 502 upstream_unreachable", async () => {
  // Ports that were just free: nothing listens there any more.
  const gone = await startFakeUpstream();
  await gone.close();
  const gone2 = await startFakeUpstream();
  await gone2.close();
  await withRouter(
    () => ({ ROUTER_CONFIG: twoProviderConfig(gone, gone2), ...ALL_SECRETS }),
    async (router) => {
      const res = await router.fetch("/v1/chat/completions", AUTHED);
      assert.equal(res.status, 502);
      const err = await readError(assert, res);
      assert.equal(err.code, "upstream_unreachable");
    },
  );
});

test("the example gateway key from .dev.vars.example works only where ROUTER_LOCAL_DEV=1", async () => {
  // The hash of the published key `sk-local-dev`, as .dev.vars.example ships it.
  const exampleHash = "39f9742666377d1b2d177efec3c73c95112c6c70f9ffe9b49abd1a2523295b86";
  const request = { ...AUTHED, headers: { ...AUTHED.headers, authorization: "Bearer sk-local-dev" } };
  for (const localDev of [false, true]) {
    await withRouter(
      (groq, together) => ({
        ROUTER_CONFIG: twoProviderConfig(groq, together),
        ...ALL_SECRETS,
        GATEWAY_KEY_HASHES: exampleHash,
        ...(localDev ? { ROUTER_LOCAL_DEV: "1" } : {}),
      }),
      async (router, groq) => {
        groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: '{"id":"ok","choices":[]}' }));
        const res = await router.fetch("/v1/chat/completions", request);
        if (localDev) {
          assert.equal(res.status, 200);
          await res.arrayBuffer();
        } else {
          assert.equal(res.status, 503);
          const err = await readError(assert, res);
          assert.equal(err.code, "invalid_config");
          assert.match(err.message, /example hash from \.dev\.vars\.example/);
          assert.equal(groq.calls.length, 0);
        }
      },
    );
  }
});

test("a provider reached over plain http on a host other than loopback is refused", async () => {
  await withRouter(
    (groq, together) => {
      const config = twoProviderConfig(groq, together);
      config.providers.together.base_url = "http://api.together.example/v1";
      return { ROUTER_CONFIG: config, ...ALL_SECRETS };
    },
    async (router) => {
      const res = await router.fetch("/v1/chat/completions", AUTHED);
      assert.equal(res.status, 503);
      const err = await readError(assert, res);
      assert.equal(err.code, "invalid_config");
      assert.match(err.message, /providers\.together\.base_url/);
    },
  );
});
