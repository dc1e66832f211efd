// Signed user tokens end to end. An app's backend (tokens-fake.mjs) mints tokens and publishes
// its keys; a page of the app gets one and streams a chat in headless Chromium; the router
// refuses every bad token before anything reaches a provider, fetches the JWKS again only when
// it must, limits each caller (user or gateway key) by its tier, tells it its own limits, and
// keeps usage books that equal what the fake providers served.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import {
  ALL_SECRETS,
  GATEWAY_KEY,
  launchChromium,
  readError,
  startFakeUpstream,
  startPageServer,
  startRouter,
  twoProviderConfig,
} from "./harness.mjs";
import {
  ANSWER,
  AUDIENCE,
  ISSUER,
  PROVIDER_LIMITS,
  answerWithUsage,
  b64url,
  chat,
  chatBody,
  chunkEvent,
  jwt,
  signerFor,
  startIssuer,
  streamedText,
  usageChunks,
} from "./tokens-fake.mjs";

const ADMIN_KEY = "sk-admin-usage-books-0123";
const sha256 = (text) => createHash("sha256").update(text).digest("hex");
/** The gateway key as the usage books name it. */
const KEY_SUBJECT = `key:${sha256(GATEWAY_KEY).slice(0, 12)}`;
/** An origin CORS allows that no page is served from: a token bound to it is used elsewhere. */
const OTHER_ORIGIN = "http://127.0.0.1:9";
const FAST = "groq/llama-3.1-8b-instant";
const SLOW = "together/meta-llama/Llama-3.3-70B-Instruct-Turbo";
/**
 * Picodollars per token: the groq preset's published price ($0.05 and $0.08 per million, cached
 * input as input), and the price configured for Together below.
 */
const PICO_PER_TOKEN = {
  [FAST]: { input: 50_000n, cached: 50_000n, output: 80_000n },
  [SLOW]: { input: 880_000n, cached: 440_000n, output: 1_200_000n },
};
const ASYMMETRIC = ["RS256", "ES256", "EdDSA"];
/** A model at $1 a token. */
const PRICEY = "together/pricey-model";

let page, issuer, groq, together, router, browser;

before(async () => {
  page = await startPageServer();
  issuer = await startIssuer({ pageOrigin: page.origin });
  groq = await startFakeUpstream({ maxRequests: 300, lifetimeMs: 300_000 });
  together = await startFakeUpstream({ maxRequests: 300, lifetimeMs: 300_000 });
  answerWithUsage(groq, "groq");
  answerWithUsage(together, "openai");
  const base = twoProviderConfig(groq, together, { cors_origins: [page.origin, OTHER_ORIGIN], key_tier: "keys" });
  // The provider's own limits are not under test: high enough never to refuse.
  base.providers.groq.limits = { "llama-3.1-8b-instant": { rpm: 100_000, rpd: 1_000_000, tpm: 100_000_000, tpd: 1_000_000_000 } };
  // A model priced so that an answer or two cost more than 2^53 picodollars (about $9,007).
  base.routes.pricey = [PRICEY];
  const config = {
    ...base,
    users: {
      algorithms: ["HS256", "RS256", "ES256", "EdDSA"],
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks_url: issuer.jwksUrl,
      jwks_refresh_min_s: 60,
      jwks_max_age_s: 600,
      routes_claim: "routes",
      tier_claim: "tier",
      origin_claim: "origin",
    },
    tiers: {
      minute: { requests_per_minute: 2 },
      tiny: { spend_per_day_usd: 0.000001 },
      metered: { requests_per_minute: 5, tokens_per_minute: 100_000 },
      keys: { requests_per_minute: 3 },
    },
    prices: { [SLOW]: { input: 0.88, cached_input: 0.44, output: 1.2 }, [PRICEY]: { input: 1e6, output: 1e6 } },
    // A caller's bank answers its first booking, however slow the machine (a booking not
    // answered in time lets the request through).
    failover: { quota_timeout_ms: 5_000 },
  };
  router = await startRouter(
    { ROUTER_CONFIG: config, ...ALL_SECRETS, USER_TOKEN_SECRET: issuer.secret, ADMIN_KEY_HASHES: sha256(ADMIN_KEY) },
    { clock: true, secrets: [ADMIN_KEY] },
  );
  // Tokens are minted on the router's clock, which the tests move forward.
  issuer.setClock(() => router.now());
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await router?.dispose();
  await Promise.all([groq?.close(), together?.close(), issuer?.close(), page?.close()]);
});

/** Forgets the providers' calls. */
function resetProviders() {
  groq.reset();
  together.reset();
}

/** Every call the providers received since the last reset. */
const upstreamCalls = () => [...groq.calls, ...together.calls];

/**
 * In a page of the app's origin: gets a token from the app's backend (`query`: its `sub`, `alg`,
 * `origin`), then sends `body` to the router with fetch and reads the answer as it streams.
 */
async function chatFromPage(query, body) {
  const tab = await browser.newPage();
  try {
    await tab.goto(`${page.origin}/`);
    const got = await tab.evaluate(
      async ({ issuerUrl, routerUrl, query, body }) => {
        try {
          const { token } = await (await fetch(`${issuerUrl}/token?${new URLSearchParams(query)}`)).json();
          const res = await fetch(`${routerUrl}/v1/chat/completions`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify(body),
          });
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          let text = "";
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
          }
          return { status: res.status, contentType: res.headers.get("content-type"), text };
        } catch (e) {
          return { failed: String(e) };
        }
      },
      { issuerUrl: issuer.url, routerUrl: router.url, query, body },
    );
    // What the page saw joins the harness's check that no secret leaks.
    router.seen.push(got.text ?? "");
    return got;
  } finally {
    await tab.close();
  }
}

/** Checks a refusal: its status, code and message, and that no provider was called. */
async function assertRefused(res, status, code, message) {
  const error = await readError(assert, res);
  assert.equal(res.status, status, error.message);
  assert.equal(error.code, code);
  assert.match(error.message, message);
  assert.deepEqual(upstreamCalls(), [], "nothing reached a provider");
  return error;
}

test("a page of the app gets a token from its backend and streams a chat with it", async () => {
  resetProviders();
  const got = await chatFromPage({ sub: "pam", alg: "ES256" }, chatBody("user:pam", "fast", { stream: true }));
  assert.equal(got.failed, undefined, got.failed);
  assert.equal(got.status, 200, got.text);
  assert.match(got.contentType ?? "", /^text\/event-stream/);
  assert.equal(streamedText(got.text), ANSWER);
  assert.match(got.text, /data: \[DONE\]\n\n$/);
  assert.equal(issuer.stats.tokenRequests, 1);
  assert.equal(groq.calls.length, 1);
});

test("a page cannot use a token bound to another origin", async () => {
  resetProviders();
  const got = await chatFromPage({ sub: "pam", origin: OTHER_ORIGIN }, chatBody("user:pam", "fast", { stream: true }));
  assert.equal(got.failed, undefined, got.failed);
  assert.equal(got.status, 403);
  const { error } = JSON.parse(got.text);
  assert.equal(error.code, "token_origin_mismatch");
  assert.equal(error.message, `This token is bound to the origin ${OTHER_ORIGIN} and cannot be used from ${page.origin}.`);
  assert.deepEqual(upstreamCalls(), []);
});

test("a token bound to the app's origin is refused from another allowed origin", async () => {
  resetProviders();
  const token = issuer.mint({ sub: "pam", claims: { origin: page.origin } });
  const res = await chat(router, token, chatBody("user:pam", "fast"), { origin: OTHER_ORIGIN });
  await assertRefused(res, 403, "token_origin_mismatch", new RegExp(`bound to the origin ${page.origin} and cannot be used from ${OTHER_ORIGIN}`));
});

/** Claims that make a token unacceptable, and the reason the router gives. */
const BAD_CLAIMS = [
  ["expired an hour ago", () => ({ iat: nowS() - 7_200, exp: nowS() - 3_600 }), /not accepted: it expired 36\d\d s ago\.$/],
  ["not valid for another hour (nbf)", () => ({ nbf: nowS() + 3_600 }), /not accepted: it is not valid yet \(`nbf` is 3\d\d\d s ahead\)\.$/],
  ["without exp", () => ({ exp: undefined }), /not accepted: it has no `exp`/],
  ["for another audience", () => ({ aud: "someone-else" }), /not accepted: its audience \(`aud`\) does not include `edge-router`\.$/],
  ["from another issuer", () => ({ iss: "https://evil.example.test" }), /not accepted: its issuer \(`iss`\) is not `https:\/\/app\.example\.test`\.$/],
];

/** The router's time, in seconds. */
const nowS = () => Math.floor(router.now() / 1000);

for (const [what, claims, reason] of BAD_CLAIMS) {
  test(`a token ${what} is refused with 401 and reaches no provider`, async () => {
    resetProviders();
    for (const alg of ["HS256", "EdDSA"]) {
      const res = await chat(router, issuer.mint({ sub: "mallory", alg, claims: claims() }), chatBody("user:mallory", "fast"));
      await assertRefused(res, 401, "invalid_token", reason);
    }
  });
}

test("a token signed with a key not the issuer's is refused: signature does not verify", async () => {
  resetProviders();
  const forgeries = [issuer.mint({ sub: "mallory", alg: "HS256", signWith: "a-guessed-secret" })];
  for (const alg of ASYMMETRIC) {
    // A key pair of the forger's own, under the issuer's published kid.
    const { privateKey } =
      alg === "RS256"
        ? generateKeyPairSync("rsa", { modulusLength: 2048 })
        : alg === "ES256"
          ? generateKeyPairSync("ec", { namedCurve: "P-256" })
          : generateKeyPairSync("ed25519");
    forgeries.push(issuer.mint({ sub: "mallory", alg, signWith: privateKey }));
  }
  // A genuine token whose payload was changed after signing.
  const [head, , sig] = issuer.mint({ sub: "bob" }).split(".");
  const claims = { iss: ISSUER, aud: AUDIENCE, sub: "mallory", exp: nowS() + 300 };
  forgeries.push(`${head}.${b64url(claims)}.${sig}`);
  for (const token of forgeries) {
    const res = await chat(router, token, chatBody("user:mallory", "fast"));
    await assertRefused(res, 401, "invalid_token", /^The user token is not accepted: its signature does not verify\.$/);
  }
});

test("an unsigned token (alg none) is refused: the algorithm is not accepted", async () => {
  resetProviders();
  const claims = { iss: ISSUER, aud: AUDIENCE, sub: "mallory", exp: nowS() + 300 };
  const genuine = issuer.mint({ sub: "mallory" });
  const unsigned = [
    jwt({ alg: "none", typ: "JWT" }, claims, null),
    // The issuer's own signature kept, the header switched to none.
    `${b64url({ alg: "none", typ: "JWT", kid: issuer.key("RS256").kid })}.${b64url(claims)}.${genuine.split(".")[2]}`,
  ];
  for (const token of unsigned) {
    const res = await chat(router, token, chatBody("user:mallory", "fast"));
    await assertRefused(res, 401, "invalid_token", /its algorithm `none` is not accepted here \(accepted: HS256, RS256, ES256, EdDSA\)/);
  }
  for (const alg of ["None", "NONE", "HS512", "RS512"]) {
    const res = await chat(router, jwt({ alg, typ: "JWT" }, claims, null), chatBody("user:mallory", "fast"));
    await assertRefused(res, 401, "invalid_token", new RegExp(`its algorithm \`${alg}\` is not accepted`));
  }
});

test("a token switched to HS256 and signed with a published public key is refused", async () => {
  resetProviders();
  const claims = { iss: ISSUER, aud: AUDIENCE, sub: "mallory", exp: nowS() + 300 };
  for (const alg of ASYMMETRIC) {
    const key = issuer.key(alg);
    const { kid, alg: _, use, ...params } = key.jwk;
    const sorted = Object.fromEntries(Object.entries(params).sort(([a], [b]) => a.localeCompare(b)));
    // Every text of the public key a verifier might take for an HMAC secret: its PEM, the JWK as
    // published, and the JWK's public parameters alone (as a verifier may keep them).
    const secrets = [key.pem, key.pem.trim(), JSON.stringify(key.jwk), JSON.stringify(params), JSON.stringify(sorted)];
    for (const secret of secrets) {
      const token = jwt({ alg: "HS256", typ: "JWT", kid }, claims, signerFor("HS256", secret));
      const res = await chat(router, token, chatBody("user:mallory", "fast"));
      await assertRefused(res, 401, "invalid_token", /its signature does not verify/);
    }
  }
});

test("a token whose routes claim lacks the model is refused with 403; a listed one is served", async () => {
  resetProviders();
  const token = issuer.mint({ sub: "rita", alg: "ES256", claims: { routes: ["fast"] } });
  const res = await chat(router, token, chatBody("user:rita", "slow"));
  await assertRefused(res, 403, "model_not_allowed", /^This token does not allow the model `slow` \(allowed: fast\)\.$/);
  const ok = await chat(router, token, chatBody("user:rita", "fast"));
  assert.equal(ok.status, 200, await ok.clone().text());
  await ok.json();
  assert.equal(groq.calls.length, 1);
});

test("after a key rotation, a token with the new kid makes the router fetch the JWKS again", async () => {
  resetProviders();
  // Past the floor between fetches, whatever came before.
  router.advance(61_000);
  const old = issuer.mint({ sub: "olga", alg: "RS256" });
  assert.equal((await chat(router, old, chatBody("user:olga", "fast"))).status, 200);
  const kid = issuer.rotate("RS256");
  router.advance(61_000);
  const fetches = issuer.stats.jwksFetches;
  const fresh = issuer.mint({ sub: "olga", alg: "RS256" });
  const res = await chat(router, fresh, chatBody("user:olga", "fast"));
  assert.equal(res.status, 200, await res.clone().text());
  await res.json();
  assert.equal(issuer.stats.jwksFetches, fetches + 1, `the unknown kid ${kid} made one fetch`);
  assert.equal(groq.calls.length, 2);
  // The old key is no longer published: its tokens are refused once the router has the new set.
  resetProviders();
  const stale = await chat(router, old, chatBody("user:olga", "fast"));
  await assertRefused(stale, 401, "invalid_token", /no published key with `kid` rs256-1 verifies RS256 tokens/);
});

test("a flood of tokens with made-up kids costs at most one JWKS fetch per floor", async () => {
  resetProviders();
  const key = issuer.key("ES256").privateKey;
  const flood = (round) =>
    Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        chat(router, issuer.mint({ sub: "mallory", alg: "ES256", header: { kid: `made-up-${round}-${i}` }, signWith: key }), chatBody("user:mallory", "fast")),
      ),
    );
  // Within the floor of the last fetch: no fetch at all.
  let fetches = issuer.stats.jwksFetches;
  for (const res of await flood(1)) await assertRefused(res, 401, "invalid_token", /no published key with `kid` made-up-1-\d+ verifies ES256 tokens/);
  assert.equal(issuer.stats.jwksFetches, fetches, "no fetch within the floor");
  // Past it: one fetch for the whole flood.
  router.advance(61_000);
  fetches = issuer.stats.jwksFetches;
  for (const res of await flood(2)) await assertRefused(res, 401, "invalid_token", /no published key with `kid` made-up-2-\d+/);
  assert.equal(issuer.stats.jwksFetches, fetches + 1, "one fetch for twenty unknown kids");
  // A genuine token still passes, with no fetch.
  const res = await chat(router, issuer.mint({ sub: "olga", alg: "ES256" }), chatBody("user:olga", "fast"));
  assert.equal(res.status, 200);
  await res.json();
  assert.equal(issuer.stats.jwksFetches, fetches + 1);
});

test("with the JWKS endpoint down, tokens whose key is cached still verify", async () => {
  resetProviders();
  try {
    for (const mode of ["503", "close"]) {
      issuer.setDown(mode);
      // Past the cache's age: the router tries to fetch the set again, and fails.
      router.advance(601_000);
      const fetches = issuer.stats.jwksFetches;
      for (const alg of ASYMMETRIC) {
        const res = await chat(router, issuer.mint({ sub: "olga", alg }), chatBody("user:olga", "fast"));
        assert.equal(res.status, 200, `${mode} ${alg}: ${await res.clone().text()}`);
        await res.json();
      }
      assert.equal(issuer.stats.jwksFetches, fetches + 1, `${mode}: one try, within the floor`);
      // A key the router never had cannot be verified while the endpoint is down.
      router.advance(61_000);
      const kid = `published-while-down-${mode}`;
      const res = await chat(router, issuer.mint({ sub: "olga", alg: "EdDSA", header: { kid } }), chatBody("user:olga", "fast"));
      const error = await readError(assert, res);
      assert.equal(res.status, 401);
      assert.match(error.message, new RegExp(`no published key with \`kid\` ${kid} verifies EdDSA tokens`));
      assert.equal(issuer.stats.jwksFetches, fetches + 2, `${mode}: the unknown kid tried once more, past the floor`);
    }
    assert.ok(router.logs.some((l) => l.includes("jwks_unreachable")), "the failed fetch is logged");
  } finally {
    issuer.setDown(null);
  }
  assert.equal(groq.calls.length, 6);
});

/** `n` chat requests one after the other; their responses, bodies read. */
async function requests(credential, subject, n, options = {}) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const res = await chat(router, credential, chatBody(subject, options.model ?? "fast", options));
    out.push({ res, text: await res.text() });
  }
  return out;
}

test("a user over the per-minute request limit gets 429; another user of the same tier is served", async () => {
  resetProviders();
  router.toNextMinute(100);
  const ann = issuer.mint({ sub: "ann", alg: "EdDSA", claims: { tier: "minute" } });
  const cid = issuer.mint({ sub: "cid", alg: "HS256", claims: { tier: "minute" } });
  const served = await requests(ann, "user:ann", 2);
  assert.deepEqual(served.map((r) => r.res.status), [200, 200]);
  const over = await chat(router, ann, chatBody("user:ann", "fast"));
  const error = await readError(assert, over);
  assert.equal(over.status, 429);
  assert.equal(error.code, "caller_rate_limited");
  const retry = Number(over.headers.get("retry-after"));
  assert.ok(retry >= 1 && retry <= 60, `retry-after ${over.headers.get("retry-after")}`);
  assert.equal(error.message, `The user ann is over the requests per minute limit of tier \`minute\` (2); retry in ${retry} s.`);
  assert.equal(groq.calls.length, 2, "the refused request reached no provider");
  const other = await requests(cid, "user:cid", 2);
  assert.deepEqual(other.map((r) => r.res.status), [200, 200], "cid has limits of its own");
  assert.equal(groq.calls.length, 4);
});

test("a user over the daily spend budget gets 429 budget_exceeded; a user without one is served", async () => {
  resetProviders();
  const bea = issuer.mint({ sub: "bea", alg: "RS256", claims: { tier: "tiny" } });
  const [first] = await requests(bea, "user:bea", 1);
  assert.equal(first.res.status, 200, first.text);
  // That answer cost more than the budget of a millionth of a dollar.
  assert.ok(cost(FAST, groq.calls[0].served) > 1_000_000n);
  const over = await chat(router, bea, chatBody("user:bea", "fast"));
  const error = await readError(assert, over);
  assert.equal(over.status, 429, error.message);
  assert.equal(error.code, "budget_exceeded");
  const retry = Number(over.headers.get("retry-after"));
  assert.ok(retry >= 1 && retry <= 86_400, `retry-after ${over.headers.get("retry-after")}`);
  assert.match(error.message, /^The user bea is over the spend per day budget of tier `tiny` \(\$0\.000001\); retry in \d+ s\.$/);
  assert.equal(groq.calls.length, 1);
  const [other] = await requests(issuer.mint({ sub: "cid", alg: "RS256" }), "user:cid", 1, { model: "slow" });
  assert.equal(other.res.status, 200);
});

test("gateway keys are limited by gateway.key_tier", async () => {
  resetProviders();
  router.toNextMinute(100);
  const served = await requests(GATEWAY_KEY, KEY_SUBJECT, 3);
  assert.deepEqual(served.map((r) => r.res.status), [200, 200, 200]);
  const over = await chat(router, GATEWAY_KEY, chatBody(KEY_SUBJECT, "fast"));
  const error = await readError(assert, over);
  assert.equal(over.status, 429);
  assert.equal(error.code, "caller_rate_limited");
  assert.equal(
    error.message,
    `The gateway key ${KEY_SUBJECT.slice(4)} is over the requests per minute limit of tier \`keys\` (3); retry in ${over.headers.get("retry-after")} s.`,
  );
  assert.equal(groq.calls.length, 3);
});

/** The `x-ratelimit-*` headers of a response, by name. */
const rateHeaders = (res) => Object.fromEntries([...res.headers].filter(([name]) => name.startsWith("x-ratelimit-")));

test("a caller's answers carry its own x-ratelimit headers, never the provider's", async () => {
  resetProviders();
  router.toNextMinute(100);
  const dee = issuer.mint({ sub: "dee", alg: "ES256", claims: { tier: "metered" } });
  const seen = [];
  for (const stream of [false, true, false]) {
    const res = await chat(router, dee, chatBody("user:dee", stream ? "slow" : "fast", { stream }));
    assert.equal(res.status, 200);
    await res.text();
    seen.push(rateHeaders(res));
  }
  for (const headers of seen) {
    assert.deepEqual(Object.keys(headers).sort(), [
      "x-ratelimit-limit-requests",
      "x-ratelimit-limit-tokens",
      "x-ratelimit-remaining-requests",
      "x-ratelimit-remaining-tokens",
      "x-ratelimit-reset-requests",
      "x-ratelimit-reset-tokens",
    ]);
    assert.equal(headers["x-ratelimit-limit-requests"], "5");
    assert.equal(headers["x-ratelimit-limit-tokens"], "100000");
    assert.match(headers["x-ratelimit-reset-requests"], /^\d+s$/);
    for (const [name, value] of Object.entries(PROVIDER_LIMITS)) assert.notEqual(headers[name], value, `${name} is the provider's`);
  }
  assert.deepEqual(
    seen.map((h) => h["x-ratelimit-remaining-requests"]),
    ["4", "3", "2"],
  );
  const tokensLeft = seen.map((h) => Number(h["x-ratelimit-remaining-tokens"]));
  assert.ok(tokensLeft[0] < 100_000 && tokensLeft[1] < tokensLeft[0] && tokensLeft[2] < tokensLeft[1], `${tokensLeft}`);
  // A caller without a tier is told nothing, and the provider's headers stay behind too.
  const free = await chat(router, issuer.mint({ sub: "fay", alg: "HS256" }), chatBody("user:fay", "fast"));
  await free.text();
  assert.deepEqual(rateHeaders(free), {});
});

test("a stream's usage chunk reaches only a client that asked for it", async () => {
  resetProviders();
  const gus = issuer.mint({ sub: "gus", alg: "EdDSA" });
  const cases = [
    // [route, the client asks for the usage, the provider is asked for it]
    ["slow", false, true],
    ["slow", true, true],
    ["fast", false, false],
    ["fast", true, true],
  ];
  for (const [route, includeUsage, upstreamAsked] of cases) {
    const fake = route === "slow" ? together : groq;
    fake.reset();
    const res = await chat(router, gus, chatBody("user:gus", route, { stream: true, includeUsage }));
    assert.equal(res.status, 200);
    const text = await res.text();
    const label = `${route}, usage asked by the client: ${includeUsage}`;
    assert.equal(streamedText(text), ANSWER, label);
    assert.match(text, /data: \[DONE\]\n\n$/, label);
    assert.equal(fake.calls.length, 1);
    const [call] = fake.calls;
    assert.equal(call.json.stream_options?.include_usage === true, upstreamAsked, `${label}: the provider's request`);
    const chunks = usageChunks(text);
    if (includeUsage) {
      assert.equal(chunks.length, 1, `${label}: the client keeps its usage chunk`);
      assert.equal(chunks[0].usage.prompt_tokens, call.served.prompt_tokens);
      assert.equal(chunks[0].usage.completion_tokens, call.served.completion_tokens);
    } else {
      assert.deepEqual(chunks, [], `${label}: no usage chunk the client did not ask for`);
    }
  }
});

/** What `usage` costs at `model`'s price, in picodollars. */
function cost(model, usage) {
  const p = PICO_PER_TOKEN[model];
  const cached = BigInt(usage.cached_tokens);
  const fresh = BigInt(usage.prompt_tokens) - cached;
  return fresh * p.input + cached * p.cached + BigInt(usage.completion_tokens) * p.output;
}

/** Picodollars as the CSV writes dollars: exact, no trailing zeros. */
function dollars(pico) {
  const whole = pico / 1_000_000_000_000n;
  const frac = (pico % 1_000_000_000_000n).toString().padStart(12, "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
}

/**
 * The books the fakes' calls add up to, per caller and model: `subject\nmodel` to
 * {requests, prompt_tokens, cached_tokens, completion_tokens, spend (picodollars)}.
 */
function expectedBooks(callsByModel) {
  const books = new Map();
  for (const [model, calls] of Object.entries(callsByModel)) {
    for (const call of calls) {
      const key = `${call.subject}\n${model}`;
      const line = books.get(key) ?? { requests: 0, prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0, spend: 0n };
      line.requests += 1;
      line.prompt_tokens += call.served.prompt_tokens;
      line.cached_tokens += call.served.cached_tokens;
      line.completion_tokens += call.served.completion_tokens;
      line.spend += cost(model, call.served);
      books.set(key, line);
    }
  }
  return books;
}

/** `GET /v1/router/usage` with `credential`: the response, and its text. */
async function usage(credential, query = "") {
  const res = await router.fetch(`/v1/router/usage${query}`, { headers: { authorization: `Bearer ${credential}` } });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return { res, text };
}

/** The rows of a usage answer that carry served requests, as `subject\nmodel` to counts. */
function servedRows(rows) {
  const out = new Map();
  for (const row of rows.filter((r) => r.requests > 0)) {
    const key = `${row.subject}\n${row.model}`;
    const line = out.get(key) ?? { requests: 0, prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0, spend_usd: 0 };
    for (const name of ["requests", "prompt_tokens", "cached_tokens", "completion_tokens", "spend_usd"]) line[name] += row[name];
    out.set(key, line);
  }
  return out;
}

test("the usage books equal what the providers served, per caller and model, for admins and each caller", async () => {
  router.toNextMinute(100);
  const eve = issuer.mint({ sub: "eve", alg: "RS256" });
  const hal = issuer.mint({ sub: "hal", alg: "HS256", claims: { tier: "metered" } });
  const mix = [
    [eve, "user:eve", "fast", { stream: false }],
    [eve, "user:eve", "fast", { stream: true }],
    [eve, "user:eve", "slow", { stream: true }],
    [eve, "user:eve", "slow", { stream: false }],
    [eve, "user:eve", "slow", { stream: true, includeUsage: true }],
    [hal, "user:hal", "slow", { stream: true }],
    [hal, "user:hal", "fast", { stream: true, includeUsage: true }],
    [hal, "user:hal", "slow", { stream: false }],
    [GATEWAY_KEY, KEY_SUBJECT, "slow", { stream: true }],
  ];
  for (const [credential, subject, model, options] of mix) {
    const res = await chat(router, credential, chatBody(subject, model, options));
    assert.equal(res.status, 200, `${subject} ${model}`);
    await res.text();
  }
  // Every answer the fakes gave in this file, the tests before this one included.
  const expected = expectedBooks({ [FAST]: groq.ledger, [SLOW]: together.ledger });
  const subjects = new Set([...expected.keys()].map((k) => k.split("\n")[0]));
  assert.ok(subjects.size >= 10, [...subjects].join(" "));

  // A streamed answer is booked once it has ended: the books are read until they have it.
  let rows = [];
  for (let i = 0; i < 50; i++) {
    rows = JSON.parse((await usage(ADMIN_KEY)).text).rows.filter((r) => subjects.has(r.subject));
    const got = servedRows(rows);
    if ([...expected].every(([key, line]) => got.get(key)?.requests === line.requests)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const got = servedRows(rows);
  assert.deepEqual([...got.keys()].sort(), [...expected.keys()].sort());
  for (const [key, line] of expected) {
    const row = got.get(key);
    const label = key.replace("\n", " ");
    assert.deepEqual(
      [row.requests, row.prompt_tokens, row.cached_tokens, row.completion_tokens],
      [line.requests, line.prompt_tokens, line.cached_tokens, line.completion_tokens],
      label,
    );
    assert.ok(Math.abs(row.spend_usd - Number(line.spend) / 1e12) < 1e-15, `${label}: spend ${row.spend_usd} = tokens x price`);
  }
  const fresh = rows.filter((r) => ["user:eve", "user:hal"].includes(r.subject));
  assert.deepEqual(fresh.map((r) => r.errors), fresh.map(() => 0), "none of eve's and hal's requests failed");

  // The CSV export has the same lines, spend exact.
  const { res: csvRes, text: csv } = await usage(ADMIN_KEY, "?format=csv");
  assert.match(csvRes.headers.get("content-type") ?? "", /^text\/csv/);
  const [header, ...lines] = csv.trimEnd().split("\n");
  assert.equal(header, "day,subject,model,requests,errors,prompt_tokens,cached_tokens,completion_tokens,spend_usd");
  const csvRows = lines
    .map((l) => l.split(","))
    .filter(([, subject]) => subjects.has(subject))
    .map(([day, subject, model, ...n]) => ({ day, subject, model, n }));
  assert.deepEqual(
    csvRows.map((r) => [r.day, r.subject, r.model, ...r.n.slice(0, 5).map(Number)]),
    rows.map((r) => [r.day, r.subject, r.model, r.requests, r.errors, r.prompt_tokens, r.cached_tokens, r.completion_tokens]),
  );
  // Each line's spend (its day's, when the router's clock passed midnight) is the exact sum of
  // its answers' costs.
  if (new Set(rows.map((r) => r.day)).size === 1) {
    for (const r of csvRows.filter((r) => Number(r.n[0]) > 0)) {
      assert.equal(r.n[5], dollars(expected.get(`${r.subject}\n${r.model}`).spend), `${r.subject} ${r.model}`);
    }
  }

  // Each caller reads its own lines only, the same as the admin's.
  for (const [credential, subject] of [
    [eve, "user:eve"],
    [hal, "user:hal"],
    [GATEWAY_KEY, KEY_SUBJECT],
  ]) {
    const own = JSON.parse((await usage(credential)).text).rows;
    assert.deepEqual([...new Set(own.map((r) => r.subject))], [subject], `${subject} sees its own lines only`);
    assert.deepEqual(own, rows.filter((r) => r.subject === subject), subject);
  }
});

test("a caller's spend past 2^53 picodollars (about $9,007) is booked and read exactly", async () => {
  // Past 2^53 a JavaScript number no longer holds a count exactly, and the runtime refuses to
  // read one as an integer. The together fake answers with the prompt tokens asked for.
  let promptTokens = 0;
  together.answer(() => ({
    status: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      id: "chatcmpl-pricey",
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: ANSWER }, finish_reason: "stop" }],
      usage: { prompt_tokens: promptTokens, completion_tokens: 0, total_tokens: promptTokens },
    }),
  }));
  const rex = issuer.mint({ sub: "rex", alg: "HS256" });
  const spentBy = async (tokens, label) => {
    promptTokens = tokens;
    const res = await chat(router, rex, chatBody("user:rex", "pricey"));
    assert.equal(res.status, 200, label);
    await res.text();
    // The usage endpoint sends what the isolate holds before it reads the books.
    const { text } = await usage(rex, "?format=csv");
    return text.split("\n").find((l) => l.includes(PRICEY))?.split(",");
  };
  // $5,000: under 2^53 picodollars.
  let line = await spentBy(5_000, "the first answer");
  assert.deepEqual([line?.[3], line?.at(-1)], ["1", "5000"], "the first answer is booked");
  // The books' sum passes 2^53: $10,000.
  line = await spentBy(5_000, "the second answer");
  assert.deepEqual([line?.[3], line?.at(-1)], ["2", "10000"], "a sum past 2^53 is booked and read");
  // One answer past 2^53 on its own: $10,000 more.
  line = await spentBy(10_000, "the third answer");
  assert.deepEqual([line?.[3], line?.at(-1)], ["3", "20000"], "an answer past 2^53 is booked");
  // Nothing was booked twice meanwhile.
  line = (await usage(rex, "?format=csv")).text.split("\n").find((l) => l.includes(PRICEY))?.split(",");
  assert.deepEqual([line?.[3], line?.at(-1)], ["3", "20000"]);
});

test("a short stream sent whole (its content-length in one chunk) loses the usage chunk the client did not ask for", async () => {
  together.reset();
  together.answer((call) => {
    const body = JSON.parse(call.body);
    const chunk = (fields) => chunkEvent("chatcmpl-short", fields);
    const usage = { prompt_tokens: 11, completion_tokens: 3, total_tokens: 14 };
    const events = [
      chunk({ choices: [{ index: 0, delta: { content: ANSWER }, finish_reason: "stop" }] }),
      body.stream_options?.include_usage ? chunk({ choices: [], usage }) : "",
      "data: [DONE]\n\n",
    ];
    // One chunk that holds its whole content-length (as a cache or a buffering proxy sends it).
    const text = events.join("");
    const headers = { "content-type": "text/event-stream", "content-length": String(Buffer.byteLength(text)) };
    return { status: 200, headers, body: text };
  });
  const sam = issuer.mint({ sub: "sam", alg: "HS256" });
  for (const includeUsage of [false, true]) {
    const res = await chat(router, sam, chatBody("user:sam", "slow", { stream: true, includeUsage }));
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.equal(streamedText(text), ANSWER);
    assert.match(text, /data: \[DONE\]\n\n$/);
    assert.equal(JSON.parse(together.calls.at(-1).body).stream_options?.include_usage, true, "the router asks for the usage");
    assert.equal(usageChunks(text).length, includeUsage ? 1 : 0, `usage asked by the client: ${includeUsage}`);
  }
});

test("a stream longer than the copy's limit (1 MiB) is booked with its usage and spend", async () => {
  // About 7,200 events of a word each (1.1 MiB): the copy read for the usage is dropped past 1 MiB.
  const served = { prompt_tokens: 1234, completion_tokens: 6000, total_tokens: 7234 };
  together.answer((call) => {
    const body = JSON.parse(call.body);
    const chunk = (fields) => chunkEvent("chatcmpl-long", { model: "m", ...fields });
    const word = chunk({ choices: [{ index: 0, delta: { content: " word" }, finish_reason: null }], usage: null });
    const parts = Array.from({ length: 16 }, () => word.repeat(450));
    parts.push(chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }));
    if (body.stream_options?.include_usage) parts.push(chunk({ choices: [], usage: served }));
    parts.push("data: [DONE]\n\n");
    return { status: 200, headers: { "content-type": "text/event-stream" }, body: parts };
  });
  const lee = issuer.mint({ sub: "lee", alg: "HS256" });
  for (const includeUsage of [false, true]) {
    const res = await chat(router, lee, chatBody("user:lee", "slow", { stream: true, includeUsage }));
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(text.length > 1 << 20, `${text.length} bytes`);
    assert.match(text, /data: \[DONE\]\n\n$/);
    assert.equal(usageChunks(text).length, includeUsage ? 1 : 0);
  }
  let row;
  for (let i = 0; i < 30; i++) {
    row = JSON.parse((await usage(lee)).text).rows.find((r) => r.model === SLOW);
    if (row?.requests >= 2) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(row?.requests, 2);
  assert.deepEqual([row.prompt_tokens, row.completion_tokens], [2 * 1234, 2 * 6000], "both answers' usage");
  const spend = 2n * (1234n * PICO_PER_TOKEN[SLOW].input + 6000n * PICO_PER_TOKEN[SLOW].output);
  assert.ok(Math.abs(row.spend_usd - Number(spend) / 1e12) < 1e-12, `spend ${row.spend_usd}`);
});

test("a stream cut before its usage is booked at the estimate, not for free", async () => {
  // The upstream sends a chunk, then its connection is cut: the usage chunk never comes (as when
  // the client leaves, which aborts the upstream call).
  together.answer(() => ({
    status: 200,
    headers: { "content-type": "text/event-stream" },
    body: [chunkEvent("c", { choices: [{ index: 0, delta: { content: "Hi" } }] })],
    cut: true,
  }));
  try {
    const cutShort = issuer.mint({ sub: "cut-short", alg: "HS256" });
    const body = { ...chatBody("user:cut-short", "slow", { stream: true }), max_tokens: 300 };
    const res = await chat(router, cutShort, body);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /upstream_stream_interrupted/);
    let row;
    for (let i = 0; i < 50 && !row; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      row = JSON.parse((await usage(cutShort)).text).rows.find((r) => r.model === SLOW && r.requests === 1);
    }
    assert.ok(row, "the answer is in the user's books");
    // The estimate: the prompt's, and the 300 output tokens asked for.
    assert.equal(row.completion_tokens, 300);
    assert.ok(row.prompt_tokens > 0);
    const spend = BigInt(row.prompt_tokens) * PICO_PER_TOKEN[SLOW].input + 300n * PICO_PER_TOKEN[SLOW].output;
    assert.ok(Math.abs(row.spend_usd - Number(spend) / 1e12) < 1e-12, `spend ${row.spend_usd}`);
  } finally {
    answerWithUsage(together, "openai");
  }
});
