// Shared pieces of the end-to-end suite: the release build loaded in workerd through Miniflare,
// and a fake OpenAI-compatible upstream on 127.0.0.1 that the test controls and that records
// every call it receives.
import { createHash } from "node:crypto";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The keys the router holds for the fake upstreams; tests assert they never leak. */
export const GROQ_KEY = "gsk-test-groq-0123456789";
export const TOGETHER_KEY = "tg-test-together-0123456789";
/** The gateway key clients present; the router holds only its SHA-256. */
export const GATEWAY_KEY = "sk-gateway-test-abcdef";
export const GATEWAY_HASH = createHash("sha256").update(GATEWAY_KEY).digest("hex");

/** Every secret value used by the suite, for the leak checks. */
export const SECRET_VALUES = [GROQ_KEY, TOGETHER_KEY, GATEWAY_KEY];

/**
 * A configuration with a Groq fake on the fast path and a Together fake on the slow path,
 * plus an embeddings route to Together.
 */
export function twoProviderConfig(groq, together, gateway = {}) {
  return {
    gateway,
    providers: {
      groq: { base_url: groq.baseUrl, keys: [{ id: "groq-1", secret: "GROQ_API_KEY", org: "org-a" }] },
      together: { base_url: together.baseUrl, keys: [{ id: "together-1", secret: "TOGETHER_API_KEY" }] },
    },
    routes: {
      fast: ["groq/llama-3.1-8b-instant"],
      slow: ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo"],
      embed: ["together/BAAI/bge-base-en-v1.5"],
    },
  };
}

export const ALL_SECRETS = {
  GROQ_API_KEY: GROQ_KEY,
  TOGETHER_API_KEY: TOGETHER_KEY,
  GATEWAY_KEY_HASHES: GATEWAY_HASH,
};

/**
 * The usual scenario: a Groq fake, a Together fake, and a router configured with
 * [twoProviderConfig] and every secret. `gateway` adds gateway settings; `asJsonString` passes
 * the configuration as a JSON string var instead of an object (a TOML table).
 */
export async function startTwoProviders({ gateway = {}, asJsonString = false } = {}) {
  const groq = await startFakeUpstream();
  const together = await startFakeUpstream();
  const config = twoProviderConfig(groq, together, gateway);
  const router = await startRouter({
    ROUTER_CONFIG: asJsonString ? JSON.stringify(config) : config,
    ...ALL_SECRETS,
  });
  return {
    groq,
    together,
    router,
    /** Forgets the calls the fakes recorded. */
    reset() {
      groq.reset();
      together.reset();
    },
    async close() {
      await router.dispose();
      await groq.close();
      await together.close();
    },
  };
}

/**
 * Starts the built Worker (build/index.js + build/index_bg.wasm) in workerd with the given vars
 * and secrets, exactly as `wrangler deploy` would ship it. Everything the Worker logs is kept
 * in `logs`. `persistDir` keeps the Durable Objects' storage on disk there.
 */
export async function startRouter(bindings, { persistDir } = {}) {
  const logs = [];
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      modules: [
        { type: "ESModule", path: path.join(ROOT, "build/index.js") },
        { type: "CompiledWasm", path: path.join(ROOT, "build/index_bg.wasm") },
      ],
      modulesRoot: ROOT,
      compatibilityDate: "2026-11-01",
      bindings,
      // As in wrangler.toml; with `persistDir`, the objects' SQLite state survives a restart.
      durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true } },
      ...(persistDir ? { resourcePersistencePath: persistDir } : {}),
      handleStructuredLogs: (log) => logs.push(typeof log === "string" ? log : JSON.stringify(log)),
    }),
  );
  const url = await mf.ready;
  // What clients saw through `fetch` below, checked for keys when the router is disposed.
  const seen = [];
  return {
    /** The router's real HTTP address on 127.0.0.1, for SDKs and browsers. */
    url: url.href.replace(/\/$/, ""),
    logs,
    seen,
    /** Calls the router over HTTP as a client would. */
    async fetch(p, init) {
      const res = await mf.dispatchFetch(new URL(p, "http://router.test").href, init);
      seen.push(JSON.stringify([...res.headers]), await res.clone().text());
      return res;
    },
    /** Stops workerd, then fails if any response or log line carried a secret value. */
    async dispose() {
      await mf.dispose();
      assertNoSecrets([...seen, ...logs]);
    },
  };
}

/** Fails if any text contains one of the suite's secret values (keys or gateway keys). */
export function assertNoSecrets(texts) {
  for (const text of texts) {
    for (const secret of SECRET_VALUES) {
      if (text.includes(secret)) throw new Error(`a secret value leaked into: ${text.slice(0, 300)}`);
    }
  }
}

/**
 * A fake upstream on 127.0.0.1. `respond(call)` returns `{status, headers, body}` (body a string
 * or an array of chunks written with a pause between them). Faults: `hang: true` never answers
 * (until the caller gives up or the fake closes); `delayMs` waits before answering; `cut: true`
 * destroys the connection after the chunks instead of ending the response. Each call records
 * `aborted` when the caller closed the connection before the answer was complete. It stops by
 * itself after `maxRequests` calls or `lifetimeMs`, whichever comes first.
 */
export async function startFakeUpstream({ maxRequests = 100, lifetimeMs = 120_000 } = {}) {
  const calls = [];
  let respond = () => ({
    status: 200,
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const call = {
        method: req.method,
        path: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      calls.push(call);
      call.aborted = false;
      res.on("close", () => {
        if (!res.writableFinished) call.aborted = true;
      });
      const { status, headers = {}, body = "", hang = false, delayMs = 0, cut = false } = respond(call);
      if (calls.length >= maxRequests) server.close();
      if (hang) return;
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      if (res.destroyed) return;
      res.writeHead(status, headers);
      if (Array.isArray(body)) {
        for (const part of body) {
          res.write(part);
          await new Promise((r) => setTimeout(r, 10));
        }
        if (cut) res.socket?.destroy();
        else res.end();
      } else {
        res.end(body);
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const timer = setTimeout(() => server.close(), lifetimeMs);
  timer.unref();
  const { port } = server.address();
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    calls,
    /** Sets how the fake answers from now on. */
    answer(fn) {
      respond = fn;
    },
    reset() {
      calls.length = 0;
    },
    close() {
      clearTimeout(timer);
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Reads an OpenAI-format error response and checks its shape. */
export async function readError(assert, res) {
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.message.length > 0);
  return body.error;
}
