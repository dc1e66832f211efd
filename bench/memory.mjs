// How much the router's isolate grows while one large answer passes through it. The release
// build (build/) runs in workerd through Miniflare, as in bench/overhead.mjs, next to the
// pass-through Worker (bench/baseline-worker.mjs) as the reference; a fake upstream on
// 127.0.0.1 (this same file, forked with `--fake`) answers with one large body: an event stream
// of many `chat.completion.chunk` events of about MEM_EVENT_BYTES each, ending with a usage chunk
// and `data: [DONE]`, or a non-streamed chat completion of the same size whose content is sent in
// chunks of MEM_JSON_CHUNK_BYTES (its `usage` last, as OpenAI's format puts it).
//
// Each answer goes, one request at a time, to the pass-through Worker, to the router's slow path
// (model "slow": Together, no tracked limits, so no quota booking) and to its fast path (model
// "fast": Groq with the quota ledger, whose booking waits for the usage in the last bytes).
// Either way the router hands a body this long on through the runtime's pipe and reads a copy
// of its first MiB for its end (src/edge/runtime.js), read by a
// client that reads as fast as it can ("fast") and by one that reads MEM_SLOW_READ_BYTES every
// MEM_SLOW_INTERVAL_MS ("slow"). For each run the Worker's workerd process and its isolate are
// measured:
//   - before: after a full garbage collection (a heap snapshot through the V8 inspector, which
//     collects all garbage first; HeapProfiler.collectGarbage only answers once the isolate
//     runs), the isolate's JS heap (`Runtime.getHeapUsage`: usedSize; backingStorageSize, the
//     ArrayBuffers' backing stores, which live outside the JS heap) and the process's VmRSS;
//   - peak: the highest of each, sampled every MEM_SAMPLE_MS while the answer passes (and the
//     kernel's VmHWM of the process, reset through /proc/<pid>/clear_refs before each run);
//   - after: once the answer is over and MEM_SETTLE_MS have passed, after a full collection.
// The client counts every byte and checks the end (`data: [DONE]` for an event stream, the
// closing usage object for JSON) against what the fake sent; anything short fails the run.
//
//   node bench/memory.mjs [--json FILE]      (after scripts/build.sh; Node 22 from env.sh)
//
// MEM_SIZE_MB (50, MiB) sets the answer's size; MEM_EVENT_BYTES (1024) an event's; MEM_JSON_CHUNK_BYTES
// (65536) the fake's writes of the JSON answer; MEM_SLOW_READ_BYTES (65536) and MEM_SLOW_INTERVAL_MS
// (10) the slow client's pace (about 6.4 MB/s by default); MEM_SAMPLE_MS (50) the sampling;
// MEM_SETTLE_MS (1000) the wait before "after"; MEM_REPEATS (1) how many times each run is made.
// MEM_ANSWERS (sse,json), MEM_CLIENTS (fast,slow) and MEM_TARGETS (baseline,router_slow,
// router_fast) choose the runs. Each run gets a fresh workerd (warmed up with three small answers)
// so that memory a run before it freed but kept resident cannot hide its growth;
// MEM_FRESH_WORKERD=0 keeps one workerd per Worker for all runs instead. The fake and workerd listen on 127.0.0.1 only; the fake exits by
// itself after its requests, after its lifetime, or when this process goes away.
import { fork } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GATEWAY_KEY, RATE_HEADERS, ROUTER_SECRETS, disposeAll, routerConfig, workerdPids, writeJson } from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");
const MiB = 1024 * 1024;

const int = (name, fallback) => {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not '${raw}'`);
  return n;
};
const list = (name, fallback, allowed) => {
  const items = (process.env[name] || fallback).split(",").map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    if (!allowed.includes(item)) throw new Error(`${name}: '${item}' is not one of ${allowed.join(", ")}`);
  }
  return items;
};

// ---------------------------------------------------------------------------------------------
// The answers, built the same way by the fake (to send them) and by the client (to check them).

/** Requests asking for at most this many tokens get a small answer (the warm-up); the large
 * answer is asked for with BIG_MAX_TOKENS (the fake sends its size whatever the limit says). */
const SMALL_MAX_TOKENS = 16;
const BIG_MAX_TOKENS = 4096;


const TEXT = "The churn trend is real and it started well before the pricing change in March. ";
/** `n` characters of plain text (no character JSON would escape). */
const filler = (n) => TEXT.repeat(Math.ceil(n / TEXT.length) + 1).slice(0, n);

/**
 * The parts of an answer of about `size` bytes: `{ head, body, repeat, tail }`, sent as `head`,
 * then `body` `repeat` times, then `tail`. An event stream: the role chunk, `repeat` content
 * events of `eventBytes` each, the last chunk with the usage (both `usage` and Groq's
 * `x_groq.usage`), `data: [DONE]`. JSON: a chat completion whose content is `repeat` pieces of
 * `chunkBytes`, `usage` last.
 */
function answerParts(kind, size, eventBytes, chunkBytes) {
  const base = { id: "chatcmpl-memory", created: 1_795_437_296, model: "bench-model" };
  if (kind === "sse") {
    const event = (chunk) => `data: ${JSON.stringify({ ...base, object: "chat.completion.chunk", ...chunk })}\n\n`;
    const empty = event({ choices: [{ index: 0, delta: { content: "" }, finish_reason: null }] });
    const body = event({
      choices: [{ index: 0, delta: { content: filler(Math.max(1, eventBytes - empty.length)) }, finish_reason: null }],
    });
    const repeat = Math.max(1, Math.floor(size / body.length));
    const usage = { prompt_tokens: 61, completion_tokens: repeat, total_tokens: 61 + repeat };
    return {
      head: event({ choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] }),
      body,
      repeat,
      tail:
        event({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage, x_groq: { id: "req_memory", usage } }) +
        "data: [DONE]\n\n",
    };
  }
  const repeat = Math.max(1, Math.floor(size / chunkBytes));
  const tokens = Math.ceil((repeat * chunkBytes) / 4);
  return {
    head: `{"id":"${base.id}","object":"chat.completion","created":${base.created},"model":"${base.model}","choices":[{"index":0,"message":{"role":"assistant","content":"`,
    body: filler(chunkBytes),
    repeat,
    tail: `"},"finish_reason":"stop"}],"usage":${JSON.stringify({ prompt_tokens: 61, completion_tokens: tokens, total_tokens: 61 + tokens })}}`,
  };
}

const partsBytes = (p) => Buffer.byteLength(p.head) + Buffer.byteLength(p.body) * p.repeat + Buffer.byteLength(p.tail);

// ---------------------------------------------------------------------------------------------
// The fake upstream (`node bench/memory.mjs --fake SIZE EVENT_BYTES CHUNK_BYTES MAX_REQUESTS
// LIFETIME_MS`, forked with IPC): every POST gets the large answer (an event stream for
// `"stream": true`, else JSON) written with back-pressure, or a small one when the request asks
// for at most SMALL_MAX_TOKENS tokens.

function runFake([size, eventBytes, chunkBytes, maxRequests, lifetimeMs]) {
  const cache = new Map();
  const parts = (kind, bytes) => {
    const key = `${kind}/${bytes}`;
    if (!cache.has(key)) {
      const p = answerParts(kind, bytes, Number(eventBytes), Number(chunkBytes));
      cache.set(key, { head: Buffer.from(p.head), body: Buffer.from(p.body), repeat: p.repeat, tail: Buffer.from(p.tail) });
    }
    return cache.get(key);
  };
  let served = 0;
  let open = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      served++;
      open++;
      let request = {};
      try {
        request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        // Not JSON: the large JSON answer.
      }
      const kind = request.stream === true ? "sse" : "json";
      const asked = Number(request.max_tokens ?? request.max_completion_tokens) || Infinity;
      const p = parts(kind, asked <= SMALL_MAX_TOKENS ? 4096 : Number(size));
      res.writeHead(200, {
        "content-type": kind === "sse" ? "text/event-stream" : "application/json",
        ...(kind === "sse" ? { "cache-control": "no-cache" } : {}),
        ...RATE_HEADERS,
      });
      let gone = false;
      res.on("close", () => (gone = true));
      const write = (buf) =>
        res.write(buf)
          ? null
          : new Promise((resolve) => {
              const done = () => {
                res.off("drain", done);
                res.off("close", done);
                resolve();
              };
              res.on("drain", done);
              res.on("close", done);
            });
      // Events: about 64 KiB of them per write (the network cuts them anyway); JSON: one piece
      // per write.
      const perWrite = kind === "sse" ? Math.max(1, Math.floor(65536 / p.body.length)) : 1;
      const group = Buffer.concat(Array.from({ length: perWrite }, () => p.body));
      await write(p.head);
      let left = p.repeat;
      while (left > 0 && !gone) {
        const n = Math.min(perWrite, left);
        const wait = write(n === perWrite ? group : group.subarray(0, n * p.body.length));
        left -= n;
        if (wait) await wait;
      }
      if (!gone) res.end(p.tail);
      open--;
      if (served >= Number(maxRequests) && open === 0) stop();
    });
  });
  function stop() {
    server.close();
    server.closeAllConnections();
    if (process.connected) process.disconnect();
  }
  server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }));
  setTimeout(stop, Number(lifetimeMs)).unref();
  process.on("disconnect", () => {
    server.close();
    server.closeAllConnections();
  });
}

if (process.argv[2] === "--fake") {
  runFake(process.argv.slice(3));
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

async function main() {
  const { Miniflare, convertV4MiniflareOptions } = await import("miniflare");

  const SIZE = int("MEM_SIZE_MB", 50) * MiB;
  const EVENT_BYTES = int("MEM_EVENT_BYTES", 1024);
  const JSON_CHUNK_BYTES = int("MEM_JSON_CHUNK_BYTES", 65536);
  const SLOW_READ_BYTES = int("MEM_SLOW_READ_BYTES", 65536);
  const SLOW_INTERVAL_MS = int("MEM_SLOW_INTERVAL_MS", 10);
  const SAMPLE_MS = int("MEM_SAMPLE_MS", 50);
  const SETTLE_MS = int("MEM_SETTLE_MS", 1000);
  const REPEATS = int("MEM_REPEATS", 1);
  /** 1: a fresh workerd for every run, so that memory an earlier run left resident (freed but
   * kept by the allocator) does not hide this run's growth; 0: one per Worker for all runs. */
  const FRESH = (process.env.MEM_FRESH_WORKERD ?? "1") !== "0";
  const ANSWERS = list("MEM_ANSWERS", "sse,json", ["sse", "json"]);
  const CLIENTS = list("MEM_CLIENTS", "fast,slow", ["fast", "slow"]);
  const TARGETS = list("MEM_TARGETS", "baseline,router_slow,router_fast", ["baseline", "router_slow", "router_fast"]);
  const jsonOut = (() => {
    const i = process.argv.indexOf("--json");
    return i >= 0 ? process.argv[i + 1] : null;
  })();

  const LABELS = { baseline: "pass-through Worker", router_slow: "router slow", router_fast: "router fast" };
  const ANSWER_LABELS = { sse: "event stream", json: "JSON" };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const expected = {};
  for (const kind of ["sse", "json"]) {
    const p = answerParts(kind, SIZE, EVENT_BYTES, JSON_CHUNK_BYTES);
    expected[kind] = { bytes: partsBytes(p), tail: p.tail, events: kind === "sse" ? p.repeat + 2 : null };
  }

  // The fake: the runs, the warm-up, and room to spare; it lives as long as the slowest
  // imaginable run needs, and stops when this process goes away.
  const runs = ANSWERS.length * CLIENTS.length * TARGETS.length * REPEATS;
  const slowSeconds = SIZE / ((SLOW_READ_BYTES * 1000) / SLOW_INTERVAL_MS);
  const lifetimeMs = Math.ceil(60_000 + runs * (slowSeconds + 30) * 1000);
  const fake = await new Promise((resolve, reject) => {
    const child = fork(
      fileURLToPath(import.meta.url),
      ["--fake", SIZE, EVENT_BYTES, JSON_CHUNK_BYTES, runs * 4 + 20, lifetimeMs].map(String),
      { stdio: ["ignore", "inherit", "inherit", "ipc"] },
    );
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`the fake upstream exited early (${code})`)));
    child.once("message", ({ port }) =>
      resolve({
        origin: `http://127.0.0.1:${port}`,
        stop() {
          child.removeAllListeners("exit");
          if (child.connected) child.disconnect();
        },
      }),
    );
  });
  const cleanups = [() => fake.stop()];

  // -------------------------------------------------------------------------------------------
  // workerd: its processes from /proc, its isolate through the V8 inspector.

  /** VmRSS and VmHWM of a process, in bytes. */
  function rss(pid) {
    const text = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key) => Number(text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  }
  /** Resets the process's VmHWM to its current RSS; says whether it could. */
  function resetHwm(pid) {
    try {
      fs.writeFileSync(`/proc/${pid}/clear_refs`, "5");
      return true;
    } catch {
      return false;
    }
  }

  /** A CDP session with one Worker's isolate (`core:user:<name>`). */
  async function inspect(mf, name) {
    const port = (await mf.getInspectorURL()).port;
    // Node 22's WebSocket (scripts/env.sh puts it first on PATH); the `ws` package elsewhere.
    const Socket = globalThis.WebSocket ?? (await import("ws")).WebSocket;
    const ws = new Socket(`ws://127.0.0.1:${port}/core:user:${name}`);
    const pending = new Map();
    let next = 0;
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.id !== undefined && pending.has(m.id)) {
        pending.get(m.id)(m);
        pending.delete(m.id);
      }
    };
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`the inspector of '${name}' is unreachable on port ${port}`));
    });
    const call = (method, params = {}, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const id = ++next;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${method}: no answer from the inspector in ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, (m) => {
          clearTimeout(timer);
          if (m.error) reject(new Error(`${method}: ${m.error.message}`));
          else resolve(m.result);
        });
        ws.send(JSON.stringify({ id, method, params }));
      });
    return {
      heap: () => call("Runtime.getHeapUsage"),
      /** A full collection: a heap snapshot collects all garbage first (its chunks, sent as
       * events, are dropped). */
      gc: () => call("HeapProfiler.takeHeapSnapshot", { reportProgress: false, captureNumericValue: false }, 120_000),
      close: () => ws.close(),
    };
  }

  async function startWorker(options) {
    const before = new Set(workerdPids());
    const mf = new Miniflare(
      convertV4MiniflareOptions({ compatibilityDate: "2026-11-01", handleStructuredLogs: () => {}, inspectorPort: 0, ...options }),
    );
    const url = await mf.ready;
    const pids = workerdPids().filter((p) => !before.has(p));
    if (pids.length !== 1) throw new Error(`expected one new workerd process below this one, found ${pids.length}`);
    const inspector = await inspect(mf, "");
    return { origin: url.origin, pid: pids[0], inspector, dispose: () => mf.dispose() };
  }

  // The router's log: its per-request lines (kept, the last one per run is reported) and others.
  const routerLogs = [];
  const routerOther = [];
  const routerLog = (log) => {
    const text = typeof log === "string" ? log : String(log?.message ?? JSON.stringify(log));
    (text.includes('"event":"request"') ? routerLogs : routerOther).push(text);
  };

  let exitCode = 0;
  try {
    const config = routerConfig(fake.origin);
    const startRouter = () =>
      startWorker({
        modules: [
          { type: "ESModule", path: path.join(ROOT, "build/index.js") },
          { type: "CompiledWasm", path: path.join(ROOT, "build/index_bg.wasm") },
        ],
        modulesRoot: ROOT,
        bindings: {
          ROUTER_CONFIG: config,
          ...ROUTER_SECRETS,
        },
        durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true }, USAGE: { className: "UsageObject", useSQLite: true } },
        handleStructuredLogs: routerLog,
      });
    const startBaseline = () =>
      startWorker({
        modules: [{ type: "ESModule", path: path.join(HERE, "baseline-worker.mjs") }],
        modulesRoot: HERE,
        bindings: { UPSTREAM: fake.origin },
      });
    /** The Worker a run measures: a fresh workerd per run (FRESH), or one per Worker for all. */
    const shared = {};
    const live = new Set();
    cleanups.push(async () => {
      for (const w of live) {
        w.inspector.close();
        await w.dispose();
      }
    });
    async function workerFor(target) {
      const which = target === "baseline" ? "baseline" : "router";
      if (!FRESH && shared[which]) return shared[which];
      const w = await (which === "baseline" ? startBaseline() : startRouter());
      live.add(w);
      if (!FRESH) shared[which] = w;
      return w;
    }
    async function release(w) {
      if (!FRESH) return;
      live.delete(w);
      w.inspector.close();
      await w.dispose();
    }

    const auth = { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` };
    const plan = {
      baseline: { model: "fast", provider: null },
      router_slow: { model: "slow", provider: "together" },
      router_fast: { model: "fast", provider: "groq" },
    };
    const body = (model, stream, maxTokens) =>
      JSON.stringify({
        model,
        messages: [
          { role: "system", content: "You are a careful analyst." },
          { role: "user", content: "Write down everything you know about churn." },
        ],
        max_tokens: maxTokens,
        ...(stream ? { stream: true } : {}),
      });

    /** One request, read by a `fast` or `slow` client; resolves with what it got. */
    function request(worker, target, kind, client, maxTokens) {
      const t = plan[target];
      const payload = body(t.model, kind === "sse", maxTokens);
      return new Promise((resolve, reject) => {
        const start = process.hrtime.bigint();
        const req = http.request(
          `${worker.origin}/v1/chat/completions`,
          { method: "POST", agent: false, headers: { ...auth, "content-length": Buffer.byteLength(payload) } },
          (res) => {
            let bytes = 0;
            let last = Buffer.alloc(0);
            let chunks = 0;
            let allowance = SLOW_READ_BYTES;
            let paused = false;
            const timer =
              client === "slow"
                ? setInterval(() => {
                    allowance = SLOW_READ_BYTES;
                    if (paused) {
                      paused = false;
                      res.resume();
                    }
                  }, SLOW_INTERVAL_MS)
                : null;
            res.on("data", (c) => {
              bytes += c.length;
              chunks++;
              last = Buffer.concat([last, c]).subarray(-4096);
              if (timer) {
                allowance -= c.length;
                if (allowance <= 0) {
                  paused = true;
                  res.pause();
                }
              }
            });
            const finish = (error) => {
              if (timer) clearInterval(timer);
              resolve({
                status: res.statusCode,
                provider: res.headers["x-router-provider"] ?? null,
                quota: res.headers["x-router-quota"] ?? null,
                bytes,
                chunks,
                tail: last.toString("utf8"),
                seconds: Number(process.hrtime.bigint() - start) / 1e9,
                error: error ? String(error.message ?? error) : null,
              });
            };
            res.on("end", () => finish(null));
            res.on("error", finish);
            res.on("aborted", () => finish(new Error("aborted")));
          },
        );
        req.on("error", reject);
        req.end(payload);
      });
    }

    /** Whether a response is the whole answer the fake sent; a reason when not. */
    function check(target, kind, r, exp) {
      if (r.status !== 200) return `HTTP ${r.status}: ${r.tail.slice(0, 200)}`;
      if (r.error) return `the body failed: ${r.error}`;
      if (plan[target].provider && r.provider !== plan[target].provider) return `served by '${r.provider}', not '${plan[target].provider}'`;
      if (kind === "sse" && !r.tail.trimEnd().endsWith("data: [DONE]")) return `the stream does not end with [DONE]: ${JSON.stringify(r.tail.slice(-200))}`;
      if (!r.tail.endsWith(exp.tail.slice(-Math.min(exp.tail.length, 4096)))) return `the body's end is not the fake's: ${JSON.stringify(r.tail.slice(-200))}`;
      if (r.bytes !== exp.bytes) return `${r.bytes} bytes, not the ${exp.bytes} sent`;
      return null;
    }

    // Warm-up, before each run: small answers of the run's kind through its target (the router
    // parses its configuration, the quota bank's object is created, the code paths are compiled).
    async function warmUp(worker, target, kind) {
      for (let i = 0; i < 3; i++) {
        const r = await request(worker, target, kind, "fast", SMALL_MAX_TOKENS);
        const exp = answerParts(kind, 4096, EVENT_BYTES, JSON_CHUNK_BYTES);
        const why = check(target, kind, r, { bytes: partsBytes(exp), tail: exp.tail });
        if (why) throw new Error(`warm-up, ${target} ${kind}: ${why}`);
      }
    }

    /** The isolate's heap and the process's RSS, after a full collection. */
    async function settled(worker) {
      await worker.inspector.gc();
      await sleep(200);
      const h = await worker.inspector.heap();
      return { heap_used: h.usedSize, heap_total: h.totalSize, backing: h.backingStorageSize ?? null, rss: rss(worker.pid).rss };
    }

    const results = [];
    let hwmResettable = true;
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const kind of ANSWERS) {
        for (const client of CLIENTS) {
          for (const target of TARGETS) {
            const worker = await workerFor(target);
            await warmUp(worker, target, kind);
            await sleep(SETTLE_MS);
            const before = await settled(worker);
            hwmResettable = resetHwm(worker.pid) && hwmResettable;
            const peak = { heap_used: before.heap_used, heap_total: before.heap_total, backing: before.backing, js: before.heap_used + (before.backing ?? 0), rss: before.rss };
            let samples = 0;
            let heapSamples = 0;
            let heapPending = false;
            const sampler = setInterval(() => {
              samples++;
              peak.rss = Math.max(peak.rss, rss(worker.pid).rss);
              if (heapPending) return;
              heapPending = true;
              worker.inspector
                .heap()
                .then((h) => {
                  heapSamples++;
                  peak.heap_used = Math.max(peak.heap_used, h.usedSize);
                  peak.heap_total = Math.max(peak.heap_total, h.totalSize);
                  if (h.backingStorageSize !== undefined) peak.backing = Math.max(peak.backing, h.backingStorageSize);
                  peak.js = Math.max(peak.js, h.usedSize + (h.backingStorageSize ?? 0));
                })
                .catch(() => {})
                .finally(() => (heapPending = false));
            }, SAMPLE_MS);
            const logsBefore = routerLogs.length;
            const r = await request(worker, target, kind, client, BIG_MAX_TOKENS);
            clearInterval(sampler);
            const hwm = rss(worker.pid).hwm;
            const why = check(target, kind, r, expected[kind]);
            if (why) throw new Error(`${LABELS[target]}, ${ANSWER_LABELS[kind]}, ${client} client: ${why}`);
            await sleep(SETTLE_MS);
            const after = await settled(worker);
            const log = target === "baseline" ? null : routerLogs.slice(logsBefore).at(-1) ?? null;
            const row = {
              repeat,
              answer: kind,
              client,
              target,
              label: LABELS[target],
              provider: r.provider,
              quota: r.quota,
              bytes: r.bytes,
              events: expected[kind].events,
              complete: true,
              seconds: r.seconds,
              mb_per_s: r.bytes / MiB / r.seconds,
              samples,
              heap_samples: heapSamples,
              before,
              peak: { ...peak, hwm: hwmResettable ? hwm : null },
              after,
              growth: {
                rss: peak.rss - before.rss,
                hwm: hwmResettable ? hwm - before.rss : null,
                heap_used: peak.heap_used - before.heap_used,
                backing: before.backing === null ? null : peak.backing - before.backing,
                js: peak.js - (before.heap_used + (before.backing ?? 0)),
                rss_after: after.rss - before.rss,
              },
              router_log: log,
            };
            results.push(row);
            await release(worker);
            const m = (v) => (v / MiB).toFixed(1);
            process.stderr.write(
              `  ${ANSWER_LABELS[kind].padEnd(12)} ${`${client} client`.padEnd(11)} ${LABELS[target].padEnd(19)} ` +
                `${m(r.bytes)} MiB in ${r.seconds.toFixed(1)} s; RSS +${m(row.growth.rss)} MiB, JS heap+backing +${m(row.growth.js)} MiB\n`,
            );
          }
        }
      }
    }

    const out = {
      size_bytes: SIZE,
      event_bytes: EVENT_BYTES,
      json_chunk_bytes: JSON_CHUNK_BYTES,
      slow_client: { read_bytes: SLOW_READ_BYTES, interval_ms: SLOW_INTERVAL_MS },
      sample_ms: SAMPLE_MS,
      settle_ms: SETTLE_MS,
      repeats: REPEATS,
      fresh_workerd_per_run: FRESH,
      expected_bytes: { sse: expected.sse.bytes, json: expected.json.bytes },
      sse_events: expected.sse.events,
      hwm_resettable: hwmResettable,
      results,
      router_other_log_lines: routerOther.slice(0, 20),
    };
    if (jsonOut) {
      writeJson(jsonOut, out);
    }
    printTable(out);
  } catch (err) {
    console.error(`memory: ${err.stack ?? err}`);
    exitCode = 1;
  } finally {
    await disposeAll(cleanups);
  }
  process.exit(exitCode);

  function printTable(out) {
    const m = (v) => (v === null || v === undefined ? "" : (v / MiB).toFixed(1));
    const d = (v) => (v === null || v === undefined ? "" : `${v < 0 ? "" : "+"}${(v / MiB).toFixed(1)}`);
    console.log(
      `\none answer of ${m(out.size_bytes)} MiB at a time (event stream: ${out.sse_events} events of ~${out.event_bytes} B, ` +
        `${m(out.expected_bytes.sse)} MiB; JSON: ${m(out.expected_bytes.json)} MiB written in ${out.json_chunk_bytes} B pieces); ` +
        `slow client: ${out.slow_client.read_bytes} B every ${out.slow_client.interval_ms} ms; sampled every ${out.sample_ms} ms; MiB`,
    );
    const head = ["answer", "client", "target", "s", "MiB/s", "RSS before", "peak", "after", "peak-before", "HWM-before", "heap before", "peak", "after", "backing before", "peak", "after", "JS peak-before"];
    const rows = out.results.map((r) => [
      ANSWER_LABELS[r.answer] + (out.repeats > 1 ? ` #${r.repeat + 1}` : ""),
      r.client,
      r.label,
      r.seconds.toFixed(1),
      r.mb_per_s.toFixed(1),
      m(r.before.rss),
      m(r.peak.rss),
      m(r.after.rss),
      d(r.growth.rss),
      d(r.growth.hwm),
      m(r.before.heap_used),
      m(r.peak.heap_used),
      m(r.after.heap_used),
      m(r.before.backing),
      m(r.peak.backing),
      m(r.after.backing),
      d(r.growth.js),
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells) => cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
    console.log(line(head));
    for (const r of rows) console.log(line(r));
    console.log(
      "RSS: workerd's VmRSS (the whole process: the Worker's isolate and Miniflare's own), before the answer (after a full GC), " +
        `its peak sampled every ${out.sample_ms} ms, and after (once over, after a full GC);\n` +
        "HWM-before: the kernel's peak RSS (VmHWM, reset before each run) minus RSS before" +
        (out.hwm_resettable ? "" : " (VmHWM could not be reset here: not shown)") +
        ";\nheap: the isolate's JS heap in use (Runtime.getHeapUsage usedSize); backing: its ArrayBuffers' backing stores " +
        "(backingStorageSize, off the JS heap); JS peak-before: the peak of heap+backing minus its value before.\n" +
        "Every answer arrived whole: byte count equal to the fake's, ending with data: [DONE] (event stream) or the usage object (JSON).",
    );
  }
}
