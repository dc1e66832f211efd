// Shared pieces of the end-to-end suite: the release build loaded in workerd through Miniflare,
// and a fake OpenAI-compatible upstream on 127.0.0.1 that the test controls and that records
// every call it receives.
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The key the router holds for the fake upstream; a test asserts it never leaks. */
export const UPSTREAM_KEY = "sk-upstream-test-0123456789";

/**
 * Starts the built Worker (build/index.js + build/index_bg.wasm) in workerd with the given vars
 * and secrets, exactly as `wrangler deploy` would ship it.
 */
export async function startRouter(bindings) {
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      modules: [
        { type: "ESModule", path: path.join(ROOT, "build/index.js") },
        { type: "CompiledWasm", path: path.join(ROOT, "build/index_bg.wasm") },
      ],
      modulesRoot: ROOT,
      compatibilityDate: "2026-11-01",
      bindings,
    }),
  );
  await mf.ready;
  return {
    /** Calls the router over HTTP as a client would. */
    fetch: (p, init) => mf.dispatchFetch(new URL(p, "http://router.test").href, init),
    dispose: () => mf.dispose(),
  };
}

/**
 * A fake upstream on 127.0.0.1. `respond(call)` returns `{status, headers, body}` (body a string
 * or an array of chunks written with a pause between them). It stops by itself after
 * `maxRequests` calls or `lifetimeMs`, whichever comes first.
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
      const { status, headers = {}, body = "" } = respond(call);
      res.writeHead(status, headers);
      if (Array.isArray(body)) {
        for (const part of body) {
          res.write(part);
          await new Promise((r) => setTimeout(r, 10));
        }
        res.end();
      } else {
        res.end(body);
      }
      if (calls.length >= maxRequests) server.close();
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
