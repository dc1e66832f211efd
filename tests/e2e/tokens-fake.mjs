// Fakes for the user-token tests:
// - an app backend on 127.0.0.1 that mints JWTs with node:crypto (HS256 with a shared secret;
//   RS256, ES256 and EdDSA with key pairs of its own), publishes its public keys at
//   `/jwks.json` and gives a browser page a token at `/token` (CORS for the page's origin). The
//   test rotates a key to a new `kid`, takes the JWKS endpoint down (503, or a closed
//   connection), and reads how often the JWKS was fetched;
// - a chat answerer for the harness's fake upstreams, serving known usage (in the JSON answer,
//   in a stream's usage chunk when the request asks for it, in Groq's `x_groq.usage`) and the
//   provider's own rate-limit headers, and keeping what it served on each call;
// - the client's side: a chat call with a credential, and what a stream's events hold.
// The backend stops by itself after `maxRequests` requests or `lifetimeMs`.
import { createHmac, generateKeyPairSync, sign } from "node:crypto";
import http from "node:http";

/** The `iss` and `aud` of every token the backend mints. */
export const ISSUER = "https://app.example.test";
export const AUDIENCE = "edge-router";

/** The provider's own rate-limit headers on every answer: the client must never see them. */
/** Large, so that the router's own books of the provider never stand in a test's way. */
export const PROVIDER_LIMITS = {
  "x-ratelimit-limit-requests": "144000",
  "x-ratelimit-remaining-requests": "143999",
  "x-ratelimit-reset-requests": "6s",
  "x-ratelimit-limit-tokens": "60000000",
  "x-ratelimit-remaining-tokens": "59999990",
  "x-ratelimit-reset-tokens": "100ms",
};

const ASYMMETRIC = ["RS256", "ES256", "EdDSA"];

/** base64url of bytes or of a JSON value. */
export function b64url(value) {
  const bytes = Buffer.isBuffer(value) || value instanceof Uint8Array ? value : Buffer.from(JSON.stringify(value));
  return Buffer.from(bytes).toString("base64url");
}

/** A JWT of `header` and `claims`, signed by `signer(input)` (bytes; `null`: no signature). */
export function jwt(header, claims, signer) {
  const input = `${b64url(header)}.${b64url(claims)}`;
  const signature = signer ? signer(input) : Buffer.alloc(0);
  return `${input}.${b64url(signature)}`;
}

/** A signer for `alg`: with `key`, a secret (HS256) or a private KeyObject. */
export function signerFor(alg, key) {
  switch (alg) {
    case "HS256":
      return (input) => createHmac("sha256", key).update(input).digest();
    case "RS256":
      return (input) => sign("sha256", Buffer.from(input), key);
    case "ES256":
      // JWS wants r || s, not DER.
      return (input) => sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
    case "EdDSA":
      return (input) => sign(null, Buffer.from(input), key);
    default:
      throw new TypeError(`no signer for ${alg}`);
  }
}

/** A new key pair for `alg`, published under `kid`. */
export function keyPair(alg, kid) {
  const { privateKey, publicKey } =
    alg === "RS256"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : alg === "ES256"
        ? generateKeyPairSync("ec", { namedCurve: "P-256" })
        : generateKeyPairSync("ed25519");
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg, use: "sig" };
  return { alg, kid, privateKey, publicKey, jwk, pem: publicKey.export({ type: "spki", format: "pem" }) };
}

/**
 * The app backend. `pageOrigin` is the one origin whose pages may ask `/token` from a browser.
 * `now()` is the clock tokens are minted on (the router's test clock, when it moves).
 */
export async function startIssuer({ pageOrigin, now = Date.now, maxRequests = 400, lifetimeMs = 300_000 } = {}) {
  const secret = `hs256-app-secret-${Math.random().toString(36).slice(2)}`;
  const generation = { RS256: 1, ES256: 1, EdDSA: 1 };
  const current = Object.fromEntries(ASYMMETRIC.map((alg) => [alg, keyPair(alg, `${alg.toLowerCase()}-1`)]));
  const stats = { jwksFetches: 0, tokenRequests: 0 };
  let down = null;
  let requests = 0;
  let clock = now;

  /** Claims for `sub`, valid for `ttlS` from now, with `extra` on top (an undefined value removes one). */
  const claimsFor = (sub, extra, ttlS) => {
    const t = Math.floor(clock() / 1000);
    const claims = { iss: ISSUER, aud: AUDIENCE, sub, iat: t, exp: t + ttlS, ...extra };
    for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
    return claims;
  };

  const issuer = {
    secret,
    stats,
    /** The key each algorithm signs with now. */
    key: (alg) => current[alg],
    /** Replaces `alg`'s key with a new one under a new `kid` (the old one is no longer published). */
    rotate(alg) {
      generation[alg] += 1;
      current[alg] = keyPair(alg, `${alg.toLowerCase()}-${generation[alg]}`);
      return current[alg].kid;
    },
    /** Takes the JWKS endpoint down: "503", "close" (the connection is dropped), or null (up). */
    setDown(mode) {
      down = mode;
    },
    /** Mints tokens on another clock from now on. */
    setClock(fn) {
      clock = fn;
    },
    /**
     * A token for `sub`: signed with `alg`'s current key (or `signWith`, a secret or private key,
     * for forgeries), `claims` added to the usual ones, `header` fields added to
     * `{alg, typ, kid}`.
     */
    mint({ sub = "alice", alg = "RS256", claims = {}, header = {}, ttlS = 300, signWith } = {}) {
      const kid = alg === "HS256" ? undefined : current[alg]?.kid;
      const head = { alg, typ: "JWT", ...(kid ? { kid } : {}), ...header };
      const key = signWith ?? (alg === "HS256" ? secret : current[alg].privateKey);
      return jwt(head, claimsFor(sub, claims, ttlS), signerFor(alg, key));
    },
    jwks: () => ({ keys: ASYMMETRIC.map((alg) => current[alg].jwk) }),
  };

  const server = http.createServer((req, res) => {
    if (++requests >= maxRequests) server.close();
    const url = new URL(req.url, "http://issuer.test");
    if (url.pathname === "/jwks.json") {
      stats.jwksFetches += 1;
      if (down === "close") return req.socket.destroy();
      if (down === "503") {
        res.writeHead(503, { "content-type": "text/plain" });
        return res.end("down for maintenance");
      }
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=60" });
      return res.end(JSON.stringify(issuer.jwks()));
    }
    if (url.pathname === "/token") {
      // A page of the app's origin asks for a token bound to that origin (or, for a test, to
      // `origin`), signed with `alg`.
      stats.tokenRequests += 1;
      const origin = req.headers.origin;
      const cors = origin === pageOrigin ? { "access-control-allow-origin": origin, vary: "origin" } : {};
      const q = url.searchParams;
      const token = issuer.mint({
        sub: q.get("sub") ?? "page-user",
        alg: q.get("alg") ?? "ES256",
        claims: { origin: q.get("origin") ?? origin },
      });
      res.writeHead(200, { "content-type": "application/json", ...cors });
      return res.end(JSON.stringify({ token }));
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const timer = setTimeout(() => server.close(), lifetimeMs);
  timer.unref();
  const url = `http://127.0.0.1:${server.address().port}`;
  return Object.assign(issuer, {
    url,
    jwksUrl: `${url}/jwks.json`,
    close() {
      clearTimeout(timer);
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  });
}

/**
 * The usage a fake serves on its `n`th call (from 0): different on every call, so that a sum
 * that drops or repeats one is seen.
 */
export function usageOf(n) {
  return { prompt_tokens: 20 + 3 * n, completion_tokens: 5 + 2 * n, cached_tokens: n % 2 === 0 ? 0 : 8 };
}

/** The OpenAI form of a usage. */
function wireUsage(u) {
  return {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: u.prompt_tokens + u.completion_tokens,
    prompt_tokens_details: { cached_tokens: u.cached_tokens },
  };
}

/** One chat completion chunk as an event of a stream: `fields` after its `id` and `object`. */
export function chunkEvent(id, fields) {
  return `data: ${JSON.stringify({ id, object: "chat.completion.chunk", ...fields })}\n\n`;
}

/** The text every answer carries, and how a stream splits it. */
export const ANSWER = "Hello from the fake.";
const DELTAS = ["Hello", " from", " the", " fake."];

/**
 * Makes `fake` (the harness's startFakeUpstream) answer chat calls with known usage, as the
 * provider `dialect` does ("groq" adds `x_groq.usage` to a stream's last chunk; any stream
 * gets the usage chunk only when the request asks `stream_options.include_usage`), with
 * [PROVIDER_LIMITS] among its headers. Each call keeps its parsed body (`json`), who sent it
 * (`subject`: the first message's `[subject]` tag, see [chatBody]) and the usage served
 * (`served`); `fake.ledger` keeps every call answered, through the fake's resets.
 */
export function answerWithUsage(fake, dialect = "openai") {
  let n = 0;
  fake.ledger = [];
  fake.answer((call) => {
    const body = JSON.parse(call.body || "{}");
    const usage = usageOf(n++);
    const subject = /^\[(.+?)\]/.exec(body.messages?.[0]?.content ?? "")?.[1];
    Object.assign(call, { json: body, served: usage, subject });
    fake.ledger.push(call);
    const id = `chatcmpl-${n}`;
    if (!body.stream) {
      const answer = {
        id,
        object: "chat.completion",
        model: body.model,
        choices: [{ index: 0, message: { role: "assistant", content: ANSWER }, finish_reason: "stop" }],
        usage: wireUsage(usage),
      };
      return { status: 200, headers: { "content-type": "application/json", ...PROVIDER_LIMITS }, body: JSON.stringify(answer) };
    }
    const asked = body.stream_options?.include_usage === true;
    const chunk = (fields) => chunkEvent(id, { model: body.model, ...fields });
    // With the usage asked for, OpenAI's chunks carry `"usage": null` until the usage chunk.
    const nullUsage = asked ? { usage: null } : {};
    const events = DELTAS.map((content) => chunk({ choices: [{ index: 0, delta: { content } }], ...nullUsage }));
    const last = { choices: [{ index: 0, delta: {}, finish_reason: "stop" }], ...nullUsage };
    if (dialect === "groq") last.x_groq = { id: `req_${n}`, usage: wireUsage(usage) };
    events.push(chunk(last));
    if (asked) events.push(chunk({ choices: [], usage: wireUsage(usage) }));
    events.push("data: [DONE]\n\n");
    return { status: 200, headers: { "content-type": "text/event-stream", ...PROVIDER_LIMITS }, body: events };
  });
}

/**
 * A chat request for `model` from the caller the usage books call `subject` (`user:alice`,
 * `key:<id>`), tagged in its message so that the fakes know whom they served.
 */
export function chatBody(subject, model, { stream = false, includeUsage = false } = {}) {
  return {
    model,
    messages: [{ role: "user", content: `[${subject}] say hello` }],
    ...(stream ? { stream: true } : {}),
    ...(includeUsage ? { stream_options: { include_usage: true } } : {}),
  };
}

/** Calls the router's chat endpoint with `credential` (a token or a key) and `body`. */
export function chat(router, credential, body, headers = {}) {
  return router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** The `data:` payloads of an event stream's text, parsed (but `[DONE]`, kept as is). */
export function events(text) {
  return text
    .split(/\r?\n\r?\n/)
    .flatMap((event) => event.split(/\r?\n/).filter((line) => line.startsWith("data:")))
    .map((line) => line.slice(5).trim())
    .map((data) => (data === "[DONE]" ? data : JSON.parse(data)));
}

/** The usage-only chunks of an event stream's text (`"choices": []` with a usage). */
export function usageChunks(text) {
  return events(text).filter((e) => e !== "[DONE]" && Array.isArray(e.choices) && e.choices.length === 0 && e.usage);
}

/** The text an event stream's deltas spell. */
export function streamedText(text) {
  return events(text)
    .filter((e) => e !== "[DONE]")
    .map((e) => e.choices?.[0]?.delta?.content ?? "")
    .join("");
}
