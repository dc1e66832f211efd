// The router without a working configuration still starts and says what to fix.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
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
  const router = await startRouter(bindings(groq, together), { secrets: [ADMIN_KEY] });
  try {
    await fn(router, groq, together);
  } finally {
    await router.dispose();
    await groq.close();
    await together.close();
  }
}

const ADMIN_KEY = "sk-admin-configuration-1";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
const AS_ADMIN = { ...AUTHED, headers: { ...AUTHED.headers, authorization: `Bearer ${ADMIN_KEY}` } };

/**
 * The operator's own error, as each caller reads it: a client (with a gateway key or none) gets
 * the status and code with a message that says where to look, never the detail (`detail`, a
 * regex: a path, a secret's name); an admin caller and the log get the detail.
 */
async function assertOperatorError(router, { status, code, detail, admin = true, beforeAuth = true }) {
  // A caller without a key meets the error too when it comes before the key is checked.
  const anonymous = { ...AUTHED, headers: { "content-type": "application/json" } };
  for (const init of beforeAuth ? [AUTHED, anonymous] : [AUTHED]) {
    const res = await router.fetch("/v1/chat/completions", init);
    assert.equal(res.status, status);
    const err = await readError(assert, res);
    assert.equal(err.code, code);
    assert.doesNotMatch(err.message, detail, "a client reads the operator's detail");
    assert.match(err.message, /log/);
  }
  if (admin) {
    const res = await router.fetch("/v1/chat/completions", AS_ADMIN);
    assert.equal(res.status, status);
    assert.match((await readError(assert, res)).message, detail, "the admin reads the detail");
  }
  assert.ok(router.logs.some((l) => l.includes(code) && detail.test(l)), router.logs.join("\n"));
}

test("without any secret the router starts; a request says where to look, and names the secret in local development", async () => {
  await withRouter(
    (g, t) => ({ ROUTER_CONFIG: twoProviderConfig(g, t) }),
    async (router, groq) => {
      const health = await router.fetch("/healthz");
      assert.equal(health.status, 200);
      await health.arrayBuffer();
      await assertOperatorError(router, { status: 503, code: "missing_secret", detail: /GATEWAY_KEY_HASHES/, admin: false });
      assert.equal(groq.calls.length, 0);
    },
  );
  await withRouter(
    (g, t) => ({ ROUTER_CONFIG: twoProviderConfig(g, t), ROUTER_LOCAL_DEV: "1" }),
    async (router) => {
      const res = await router.fetch("/v1/chat/completions", AUTHED);
      assert.equal(res.status, 503);
      const err = await readError(assert, res);
      assert.equal(err.type, "configuration_error");
      assert.equal(err.code, "missing_secret");
      assert.match(err.message, /GATEWAY_KEY_HASHES/);
      assert.match(err.message, /\.dev\.vars/);
      assert.match(err.message, /wrangler secret put GATEWAY_KEY_HASHES/);
    },
  );
});

test("without the provider key, a request gets a 503; the log names the provider's secret", async () => {
  await withRouter(
    (g, t) => ({ ROUTER_CONFIG: twoProviderConfig(g, t), GATEWAY_KEY_HASHES: GATEWAY_HASH, ADMIN_KEY_HASHES: ADMIN_HASH }),
    async (router, groq) => {
      await assertOperatorError(router, { status: 503, code: "missing_secret", detail: /wrangler secret put GROQ_API_KEY/, beforeAuth: false, admin: false });
      const anonymous = await router.fetch("/v1/chat/completions", { ...AUTHED, headers: { "content-type": "application/json" } });
      assert.equal(anonymous.status, 401);
      await anonymous.arrayBuffer();
      assert.equal(groq.calls.length, 0);
    },
  );
});

test("an invalid configuration is refused: a 503 to clients, its path to the admin and in the log", async () => {
  await withRouter(
    (g, t) => {
      const config = twoProviderConfig(g, t);
      config.providers.groq.keys[0].secrt = "typo";
      return { ROUTER_CONFIG: config, ...ALL_SECRETS, ADMIN_KEY_HASHES: ADMIN_HASH };
    },
    async (router) => {
      for (let i = 0; i < 2; i++) {
        await assertOperatorError(router, { status: 503, code: "invalid_config", detail: /providers\.groq\.keys\[0\]\.secrt/ });
      }
      const health = await router.fetch("/healthz");
      assert.equal(health.status, 503, "health reports the broken configuration");
      assert.doesNotMatch(await health.text(), /secrt/, "health gives anyone no detail");
    },
  );
});

test("a missing configuration names ROUTER_CONFIG to the admin and in the log", async () => {
  const router = await startRouter({ ...ALL_SECRETS, ADMIN_KEY_HASHES: ADMIN_HASH }, { secrets: [ADMIN_KEY] });
  try {
    await assertOperatorError(router, { status: 503, code: "invalid_config", detail: /ROUTER_CONFIG/ });
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
          assert.ok(router.logs.some((l) => /example hash from \.dev\.vars\.example/.test(l)), router.logs.join("\n"));
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
      return { ROUTER_CONFIG: config, ...ALL_SECRETS, ADMIN_KEY_HASHES: ADMIN_HASH };
    },
    async (router) => {
      await assertOperatorError(router, { status: 503, code: "invalid_config", detail: /providers\.together\.base_url/ });
    },
  );
});
