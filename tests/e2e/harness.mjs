// Shared pieces of the end-to-end suite: the release build loaded in workerd through Miniflare,
// a fake OpenAI-compatible upstream on 127.0.0.1 that the test controls and that records every
// call it receives, and for the browser tests a page server and headless Chromium.
import { createHash } from "node:crypto";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The build under test: `build/`, or `ROUTER_BUILD_DIR` (to show a test fails on a broken build). */
const BUILD = process.env.ROUTER_BUILD_DIR ? path.resolve(process.env.ROUTER_BUILD_DIR) : path.join(ROOT, "build");

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
 * in `logs`. `persistDir` keeps the Durable Objects' storage on disk there. `secrets` are the
 * gateway and admin keys the test sends, for the leak check at `dispose()` (the bindings' keys
 * and key hashes are in it already). `clock` binds the
 * router's test clock (`TEST_CLOCK`): the returned router's `advance(ms)` then moves the router's
 * time forward, so a test passes a cooldown or a minute window without waiting for it.
 */
export async function startRouter(bindings, { persistDir, clock = false, secrets = [] } = {}) {
  const logs = [];
  const testClock = new TestClock(clock);
  const serviceBindings = testClock.bindings();
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      modules: [
        { type: "ESModule", path: path.join(BUILD, "index.js") },
        { type: "CompiledWasm", path: path.join(BUILD, "index_bg.wasm") },
      ],
      modulesRoot: BUILD,
      compatibilityDate: "2026-11-01",
      bindings,
      serviceBindings,
      // As in wrangler.toml; with `persistDir`, the objects' SQLite state survives a restart.
      durableObjects: {
        QUOTA: { className: "QuotaObject", useSQLite: true },
        USAGE: { className: "UsageObject", useSQLite: true },
        BATCHES: { className: "BatchObject", useSQLite: true },
      },
      ...(persistDir ? { resourcePersistencePath: persistDir } : {}),
      handleStructuredLogs: (log) => logs.push(typeof log === "string" ? log : JSON.stringify(log)),
    }),
  );
  const url = await mf.ready;
  // What clients saw through `fetch` below, checked for keys when the router is disposed.
  const seen = [];
  const pending = [];
  return {
    /** The router's real HTTP address on 127.0.0.1, for SDKs and browsers. */
    url: url.href.replace(/\/$/, ""),
    logs,
    seen,
    /** Moves the router's clock `ms` forward (with `clock` only). */
    advance: (ms) => testClock.advance(ms),
    /** Moves the router's clock to `atMs` past the start of its next minute (with `clock`). */
    toNextMinute: (atMs) => testClock.toNextMinute(atMs),
    /** The router's time now (the test clock's, else the runtime's). */
    now: () => testClock.now(),
    /** Calls the router over HTTP as a client would. */
    async fetch(p, init) {
      const res = await mf.dispatchFetch(new URL(p, "http://router.test").href, init);
      seenLater(seen, pending, res);
      return res;
    },
    /** Stops workerd, then fails if any response or log line carried a secret value. */
    async dispose() {
      await Promise.all(pending);
      await mf.dispose();
      assertNoSecrets([...seen, ...logs], [...secrets, ...keyValuesOf(bindings)]);
    },
  };
}

/**
 * The routers' test clock: bound as `TEST_CLOCK`, a function that answers with how far the
 * test has moved time forward, in milliseconds. The router adds it to the runtime's clock.
 */
class TestClock {
  constructor(enabled) {
    this.enabled = enabled;
    this.offsetMs = 0;
  }

  bindings() {
    return this.enabled ? { TEST_CLOCK: () => new Response(String(this.offsetMs)) } : {};
  }

  advance(ms) {
    if (!this.enabled) throw new Error("the routers were not started with { clock: true }");
    if (!(ms >= 0)) throw new RangeError("time only moves forward");
    this.offsetMs += ms;
  }

  /** Moves time to `atMs` past the start of the next minute. */
  toNextMinute(atMs = 100) {
    this.advance(60_000 - (this.now() % 60_000) + atMs);
  }

  /** The routers' time now, in milliseconds since the epoch. */
  now() {
    return Date.now() + this.offsetMs;
  }
}

/**
 * A stand-in for the quota bank between the routers and the real one, in plain JS: a
 * `QuotaObject` that forwards each call to the real bank's object named by the call's
 * `x-quota-shard` header, after `delayMs`, or fails on cue (`fail: "throw"` throws, so the
 * router's call rejects; `fail: "500"` answers 500). Its state lives in the module, which the
 * object shares with the Worker's own fetch handler: `POST /__bank` with `{delayMs, fail}` sets
 * it, `GET /__bank` reads it with the counts of calls (`calls`, `inflight`, `by_shard`,
 * `unsharded` for calls without the header).
 */
const BANK_PROXY = `
import { DurableObject } from "cloudflare:workers";

let state = null;
const stats = { calls: 0, inflight: 0, unsharded: 0, by_shard: {} };
function current(env) {
  state ??= { delayMs: Number(env.BANK_DELAY_MS ?? 0), fail: env.BANK_FAIL || null };
  return state;
}

export class QuotaObject extends DurableObject {
  async fetch(request) {
    const { delayMs, fail } = current(this.env);
    stats.calls++;
    const shard = request.headers.get("x-quota-shard");
    if (!shard) {
      stats.unsharded++;
      console.error("bank proxy: a call without x-quota-shard: " + request.method + " " + request.url);
      return new Response("no x-quota-shard header", { status: 500 });
    }
    stats.by_shard[shard] = (stats.by_shard[shard] ?? 0) + 1;
    if (fail === "throw") throw new Error("the quota bank is unreachable (test)");
    if (fail === "500") return new Response("the quota bank is down (test)", { status: 500 });
    stats.inflight++;
    try {
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      const real = this.env.REAL;
      return await real.get(real.idFromName(shard)).fetch(request);
    } finally {
      stats.inflight--;
    }
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname !== "/__bank") return new Response("not found", { status: 404 });
    if (request.method === "POST") {
      const next = await request.json();
      state = { ...current(env), ...next };
    }
    return Response.json({ ...current(env), ...stats });
  },
};
`;

/** The secret values a router's bindings hold: every provider key's secret named in its config. */
function keyValuesOf(bindings) {
  // Every secret-like binding (keys, key hashes): any string other than the configuration that
  // is long enough not to occur by chance.
  const values = Object.entries(bindings)
    .filter(([name, value]) => name !== "ROUTER_CONFIG" && typeof value === "string" && value.length >= 12)
    .map(([, value]) => value);
  let config = bindings.ROUTER_CONFIG;
  if (typeof config === "string") {
    try {
      config = JSON.parse(config);
    } catch {
      return values;
    }
  }
  for (const provider of Object.values(config?.providers ?? {})) {
    for (const key of provider?.keys ?? []) {
      const value = bindings[key?.secret];
      if (typeof value === "string") values.push(value);
    }
  }
  return values;
}

/**
 * Several router isolates sharing one quota bank, in one workerd: `n` Workers `router-1` ..
 * `router-n`, each the release build with its own bindings (`bindingsFor(i)`, i from 1), whose
 * `QUOTA` binding names the `QuotaObject` class of a Worker called `bank`. The bank:
 * - `bank: "direct"` (default): `bank` is the same build, and its `QuotaObject` is the real one;
 * - `bank: "proxy"`: `bank` is [BANK_PROXY], which forwards to the real one in `bank-real`, with
 *   a delay or a failure set at run time by `fleet.bank.set({delayMs, fail})` (`fail`: null,
 *   "throw" or "500"); `bankState` is its state at start.
 * The bank Worker gets `bankBindings`, by default router 1's (in production the objects run in
 * the routers' own Worker, with the same vars and secrets). `buildDir` holds the build to load
 * (`index.js` and `index_bg.wasm`), `build/` by default.
 *
 * `routers[i].fetch(path, init)` calls router i+1 as a client would. `restart()` restarts workerd
 * (every Worker, the bank included) on the same storage, which needs `persistDir`. `dispose()`
 * stops workerd, then fails if any response a client saw or any log line carried a secret: the
 * suite's, every provider key the routers' configurations name, and `secrets` (gateway and
 * admin keys the test uses).
 */
export async function startRouters(
  n,
  bindingsFor,
  { bank = "direct", bankState = {}, bankBindings, persistDir, secrets = [], buildDir = BUILD, clock = false } = {},
) {
  if (!["direct", "proxy"].includes(bank)) throw new TypeError(`bank: "direct" or "proxy", not ${bank}`);
  const logs = [];
  const seen = [];
  const pending = [];
  const routerBindings = Array.from({ length: n }, (_, i) => bindingsFor(i + 1));
  const realBankBindings = bankBindings ?? routerBindings[0];
  const leakChecked = [...secrets, ...routerBindings.flatMap(keyValuesOf), ...keyValuesOf(realBankBindings)];
  const build = [
    { type: "ESModule", path: path.join(buildDir, "index.js") },
    { type: "CompiledWasm", path: path.join(buildDir, "index_bg.wasm") },
  ];
  const testClock = new TestClock(clock);
  // Every Worker (routers and bank) reads the same test clock.
  const common = { compatibilityDate: "2026-11-01", serviceBindings: testClock.bindings() };
  let proxyState = { delayMs: 0, fail: null, ...bankState };

  const options = () => {
    const workers = routerBindings.map((bindings, i) => ({
      ...common,
      name: `router-${i + 1}`,
      modules: build,
      modulesRoot: buildDir,
      // Requests to http://router-<i>.test/ go to this Worker.
      routes: [`router-${i + 1}.test/*`],
      bindings,
      durableObjects: { QUOTA: { className: "QuotaObject", scriptName: "bank", useSQLite: true } },
    }));
    const realBank = {
      ...common,
      name: bank === "direct" ? "bank" : "bank-real",
      modules: build,
      modulesRoot: buildDir,
      bindings: realBankBindings,
      // As in wrangler.toml: the object's SQLite storage survives a restart with `persistDir`.
      durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true }, USAGE: { className: "UsageObject", useSQLite: true } },
    };
    if (bank === "proxy") {
      workers.push({
        ...common,
        name: "bank",
        modules: true,
        script: BANK_PROXY,
        routes: ["bank.test/*"],
        bindings: {
          BANK_DELAY_MS: String(proxyState.delayMs ?? 0),
          BANK_FAIL: proxyState.fail ?? "",
        },
        durableObjects: {
          SELF: { className: "QuotaObject", useSQLite: true },
          REAL: { className: "QuotaObject", scriptName: "bank-real", useSQLite: true },
        },
      });
    }
    workers.push(realBank);
    return convertV4MiniflareOptions({
      workers,
      ...(persistDir ? { resourcePersistencePath: persistDir } : {}),
      handleStructuredLogs: (log) => logs.push(typeof log === "string" ? log : JSON.stringify(log)),
    });
  };

  const mf = new Miniflare(options());
  const url = await mf.ready;

  const routers = routerBindings.map((_, i) => {
    const name = `router-${i + 1}`;
    return {
      name,
      /** Calls this router as a client would. */
      async fetch(p, init) {
        const res = await mf.dispatchFetch(new URL(p, `http://${name}.test`).href, init);
        seenLater(seen, pending, res);
        return res;
      },
    };
  });

  const proxyCall = async (init) => {
    if (bank !== "proxy") throw new Error('the bank is not a proxy: start with {bank: "proxy"}');
    const res = await mf.dispatchFetch("http://bank.test/__bank", init);
    if (res.status !== 200) throw new Error(`bank proxy answered ${res.status}: ${await res.text()}`);
    return res.json();
  };

  return {
    routers,
    /**
     * The first router's real HTTP address on 127.0.0.1, for clients that need a socket (one
     * that hangs up mid-stream): a request whose host matches no route goes to the first Worker,
     * `router-1`. Read at start: `restart()` may move it. What such clients see is not in `seen`
     * (the leak check) unless they push it there.
     */
    url: url.href.replace(/\/$/, ""),
    logs,
    seen,
    /** Moves every router's clock `ms` forward (with `clock` only). */
    advance: (ms) => testClock.advance(ms),
    /** Moves every router's clock to `atMs` past the start of its next minute (with `clock`). */
    toNextMinute: (atMs) => testClock.toNextMinute(atMs),
    /** The router's time now (the test clock's, else the runtime's). */
    now: () => testClock.now(),
    bank: {
      /** Sets the proxy's delay and failure from now on: `{delayMs, fail}`. */
      async set(next) {
        proxyState = { ...proxyState, ...next };
        return proxyCall({ method: "POST", body: JSON.stringify(proxyState) });
      },
      /** The proxy's state and counts: `{delayMs, fail, calls, inflight, unsharded, by_shard}`. */
      stats() {
        return proxyCall({ method: "GET" });
      },
    },
    /** Restarts workerd, every Worker with it, on the same persisted storage. */
    async restart() {
      if (!persistDir) throw new Error("restart() keeps the bank's storage only with persistDir");
      await mf.setOptions(options());
      await mf.ready;
    },
    /** Stops workerd, then fails if any response or log line carried a secret value. */
    async dispose() {
      await Promise.all(pending);
      await mf.dispose();
      assertNoSecrets([...seen, ...logs], leakChecked);
    },
  };
}

/**
 * Records what the client got (headers, and the body read from a copy alongside the test's own
 * reading, so the test sees the answer arrive as the router sends it) for the leak check.
 */
function seenLater(seen, pending, res) {
  seen.push(JSON.stringify([...res.headers]));
  const copy = res.clone();
  pending.push(
    copy.text().then(
      (text) => seen.push(text),
      () => {},
    ),
  );
}

/**
 * Fails if any text contains one of the suite's secret values (keys or gateway keys), or one of
 * `extra` (the values a test gave its own routers).
 */
export function assertNoSecrets(texts, extra = []) {
  const secrets = [...SECRET_VALUES, ...extra.filter((s) => typeof s === "string" && s.length > 0)];
  for (const text of texts) {
    for (const secret of secrets) {
      if (text.includes(secret)) throw new Error(`a secret value leaked into: ${text.slice(0, 300)}`);
    }
  }
}

/**
 * Holds part of a fake's answer until the client shows it has what came before: `part(text)` is
 * a chunk for the fake's body that is written once `open()` is called, or after `maxWaitMs` so
 * that a router that buffers cannot hang the test. `openedInTime` then says which it was: true
 * when the client had the earlier chunks while the fake still held this one.
 */
export function gate(maxWaitMs = 5_000) {
  let open;
  const opened = new Promise((resolve) => (open = resolve));
  const g = {
    openedInTime: null,
    open: () => open(),
    part(text) {
      return async () => {
        let timer;
        const late = new Promise((resolve) => (timer = setTimeout(() => resolve(false), maxWaitMs)));
        g.openedInTime = await Promise.race([opened.then(() => true), late]);
        clearTimeout(timer);
        return text;
      };
    },
  };
  return g;
}

/**
 * A fake upstream on 127.0.0.1. `respond(call)` returns `{status, headers, body}` (body a string
 * or an array of chunks written with a pause between them; a chunk may be an async function,
 * whose result is written once it resolves: see [gate]). Faults: `hang: true` never answers
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
          res.write(typeof part === "function" ? await part() : part);
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

/**
 * Serves one blank page at / from 127.0.0.1, for a browser's page of an app's origin; stops by
 * itself after `maxRequests` requests.
 */
export async function startPageServer({ maxRequests = 20 } = {}) {
  let served = 0;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>app</title><p>app</p>");
    if (++served >= maxRequests) server.close();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * Headless Chromium (Debian's package, or `CHROMIUM_BIN`) driven by playwright-core, loaded only
 * by the tests that drive a browser.
 */
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
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
