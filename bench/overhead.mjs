// End-to-end overhead of the router: the release build (build/) in workerd through Miniflare,
// a fake upstream on 127.0.0.1 that answers at once, and a load generator with a fixed
// concurrency. The same requests go straight to the fake, through a trivial pass-through
// Worker (the baseline), and through the router on its two paths: `slow` (model "slow", a
// provider without tracked limits: no quota work at all) and `fast` (model "fast", Groq with
// the quota ledger: in the steady state each request is admitted from the isolate's lease,
// with no call to the bank; leases are renewed and usage reported in the background). Three
// scenarios: a non-streamed answer, a streamed one of 20 chunks and a streamed one of 200 (the
// fake streams one chunk per `max_tokens`). Reported per scenario: req/s, latency percentiles,
// the overhead over the fake, workerd's CPU time per request (from /proc, user and system)
// against the baseline's, and for the router how each measured request was booked (its
// `x-router-quota` and `x-router-quota-calls` headers): the share with `lease` and 0 calls is
// the share that made no synchronous bank call. A last table sets the fast path against the
// slow one (latency one at a time, req/s with 8 in flight, CPU, that share).
//
//   node bench/overhead.mjs [--json FILE]      (scripts/bench.sh builds first and runs this)
//
// BENCH_REQUESTS (2000; BENCH_LONG_REQUESTS, 500, for the long stream), BENCH_WARMUP (200) and
// BENCH_CONCURRENCY (8) change the load; BENCH_SERIAL (1000; a third for the long stream)
// requests also go one at a time, for latency without queueing. BENCH_STREAM_CHUNKS (20) and
// BENCH_LONG_STREAM_CHUNKS (200) set the streams' lengths; BENCH_SCENARIOS (json,stream,stream_long)
// picks the scenarios, and BENCH_CHECK_EVENTS=1 turns failover.check_stream_events on. The targets
// take turns in BENCH_ROUNDS (4) rounds, and each measured batch waits (up to
// BENCH_QUIET_WAIT_MS, 20 s) until other processes leave the machine quiet, so that a shared
// machine's load lands on every target alike; the load that was there is reported. Every
// request must succeed, and each router target must be served by the provider it is meant to
// measure; any failure stops the run with a non-zero exit.
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { CLK_TCK, GATEWAY_KEY, ROUTER_SECRETS, chatBody, disposeAll, procStat, routerConfig, startFake, workerdPids, writeJson } from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");

const int = (name, fallback) => {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not '${raw}'`);
  return n;
};
const REQUESTS = int("BENCH_REQUESTS", 2000);
/** Measured requests of the long-stream scenario, which takes ten times longer per request. */
const LONG_REQUESTS = int("BENCH_LONG_REQUESTS", 500);
const WARMUP = int("BENCH_WARMUP", 200);
const CONCURRENCY = int("BENCH_CONCURRENCY", 8);
/** Requests sent one at a time after the load, for latency without queueing (enough for a
 * median to a few hundredths of a millisecond: the fast path's goal is within 0.1 ms of the
 * slow path's). */
const SERIAL = int("BENCH_SERIAL", 1000);
/** Chunks of the streamed answers: a short answer, and a long one (the fake streams as many
 * chunks as the request's `max_tokens`, one token a chunk, as providers roughly do). */
const CHUNKS = int("BENCH_STREAM_CHUNKS", 20);
const LONG_CHUNKS = int("BENCH_LONG_STREAM_CHUNKS", 200);
/** The scenarios: how the answer comes, how long it is, how many requests measure it. */
const ALL_SCENARIOS = [
  { mode: "json", label: "non-streamed", stream: false, maxTokens: 128, requests: REQUESTS, serial: SERIAL },
  { mode: "stream", label: `streamed, ${CHUNKS} chunks`, stream: true, maxTokens: CHUNKS, requests: REQUESTS, serial: SERIAL },
  {
    mode: "stream_long",
    label: `streamed, ${LONG_CHUNKS} chunks`,
    stream: true,
    maxTokens: LONG_CHUNKS,
    requests: LONG_REQUESTS,
    serial: Math.max(1, Math.floor(SERIAL / 3)),
  },
];
/** BENCH_SCENARIOS (json,stream,stream_long) picks the scenarios to run. */
const SCENARIOS = ALL_SCENARIOS.filter((s) =>
  (process.env.BENCH_SCENARIOS || "json,stream,stream_long").split(",").includes(s.mode),
);
/** Each target's requests are sent in this many turns, the targets taking turns. */
const ROUNDS = int("BENCH_ROUNDS", 4);
/** Round `round`'s share of `n` requests. */
const share = (n, round) => Math.floor((n * (round + 1)) / ROUNDS) - Math.floor((n * round) / ROUNDS);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Other processes' load under which the machine counts as quiet, in cores, and how long to
 * wait for it before each measured batch. */
const QUIET_CORES = 0.25;
const QUIET_WAIT_MS = int("BENCH_QUIET_WAIT_MS", 20_000);
/** Time left after a batch for work the router does after answering (settlements, the
 * background lease renewals and reports). */
const SETTLE_MS = 300;
/** The free plan's CPU time per request. */
const FREE_PLAN_CPU_MS = 10;

/** For the status page (`GET /v1/router/status`), read once after each scenario, outside the
 * measured batches. */
const ADMIN_KEY = "sk-bench-admin-0123456789";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
/** The fast path's goals (issue: zero-hop quota), checked on the non-streamed answers: its
 * median one at a time at most this much above the slow path's, and its req/s with 8 in flight
 * at least this share of the slow path's. The no-bank-call share below which the run says so. */
const GOAL_FAST_MINUS_SLOW_MS = 0.1;
const GOAL_FAST_RPS_SHARE = 0.95;
const GOAL_NO_SYNC_SHARE = 0.95;

// ---------------------------------------------------------------------------------------------
// Processes: the fake upstream, and workerd's CPU time from /proc.

/** User and system CPU time of `pids`, in milliseconds. */
function cpuMs(pids) {
  const stats = pids.map(procStat).filter(Boolean);
  const ms = (key) => stats.reduce((sum, p) => sum + p[key], 0) * (1000 / CLK_TCK);
  return { user: ms("user"), sys: ms("sys") };
}

/** Busy clock ticks of the whole machine, from the first line of /proc/stat. */
function machineBusyTicks() {
  const [, user, nice, system, , irq, softirq, steal] = fs
    .readFileSync("/proc/stat", "utf8")
    .split("\n")[0]
    .trim()
    .split(/\s+/)
    .map(Number);
  return user + nice + system + irq + softirq + steal;
}

/** CPU ticks of this process and every process below it (load generator, fake, workerd). */
function ownTreeTicks() {
  const all = fs
    .readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map((d) => procStat(Number(d)))
    .filter(Boolean);
  const byPid = new Map(all.map((p) => [p.pid, p]));
  const inTree = (p) => {
    for (let q = p, hops = 0; q && hops < 64; q = byPid.get(q.ppid), hops++) {
      if (q.pid === process.pid) return true;
    }
    return false;
  };
  return all.filter(inTree).reduce((sum, p) => sum + p.ticks, 0);
}

/** Starts measuring the machine's load from outside this benchmark; `since()` gives it as a
 * share of one core since then. */
function foreignLoad() {
  const start = { busy: machineBusyTicks(), own: ownTreeTicks(), at: process.hrtime.bigint() };
  return {
    since() {
      const seconds = Number(process.hrtime.bigint() - start.at) / 1e9;
      const other = machineBusyTicks() - start.busy - (ownTreeTicks() - start.own);
      return Math.max(0, other / CLK_TCK / seconds);
    },
  };
}

/** Waits until processes outside the benchmark use less than QUIET_CORES (sampled over 300 ms),
 * for at most QUIET_WAIT_MS; says whether it got quiet. The machine may be shared: a compile
 * next door would otherwise land in one target's figures and not another's. */
async function awaitQuiet() {
  const deadline = Date.now() + QUIET_WAIT_MS;
  for (;;) {
    const load = foreignLoad();
    await sleep(300);
    if (load.since() < QUIET_CORES) return true;
    if (Date.now() > deadline) return false;
  }
}

/** Starts a Worker in workerd through Miniflare, as tests/e2e/harness.mjs does; returns its
 * address and the workerd processes it started. */
async function startWorker(options) {
  const before = new Set(workerdPids());
  const started = process.hrtime.bigint();
  const mf = new Miniflare(
    convertV4MiniflareOptions({ compatibilityDate: "2026-11-01", handleStructuredLogs: () => {}, ...options }),
  );
  const url = await mf.ready;
  const startupMs = Number(process.hrtime.bigint() - started) / 1e6;
  const pids = workerdPids().filter((p) => !before.has(p));
  if (pids.length === 0) throw new Error("no workerd process found below this one (is /proc readable?)");
  return { origin: url.origin, pids, startupMs, dispose: () => mf.dispose() };
}

// ---------------------------------------------------------------------------------------------
// The load generator.

/** One request; resolves with its timings in ms (headers, first and last body byte), when it
 * started (wall clock, ms), and the router's headers that say who served it and how its quota
 * was booked (undefined for the fake and the pass-through Worker). */
function once(agent, url, body, headers, method = "POST") {
  return new Promise((resolve, reject) => {
    const startedAt = Date.now();
    const start = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - start) / 1e6;
    const sent = body === null ? headers : { ...headers, "content-length": Buffer.byteLength(body) };
    const req = http.request(url, { method, agent, headers: sent }, (res) => {
      const headersMs = ms();
      let firstMs = null;
      const parts = [];
      res.on("data", (c) => {
        firstMs ??= ms();
        parts.push(c);
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode,
          startedAt,
          headersMs,
          firstMs: firstMs ?? headersMs,
          lastMs: ms(),
          provider: res.headers["x-router-provider"],
          quota: res.headers["x-router-quota"],
          quotaCalls: res.headers["x-router-quota-calls"],
          hedged: res.headers["x-router-hedged"],
          text: Buffer.concat(parts).toString("utf8"),
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body ?? undefined);
  });
}

/** Sends `n` requests with CONCURRENCY in flight; fails on any answer that is not a complete
 * success, or (with `provider`) that another provider served. Each result keeps its start
 * relative to the batch's (`atMs`) and its place in the order of sending (`index`); its body
 * text is dropped once checked. */
async function batch(agent, url, body, headers, n, stream, concurrency = CONCURRENCY, provider = null) {
  let next = 0;
  const results = [];
  const batchStart = Date.now();
  const worker = async () => {
    while (next < n) {
      const index = next++;
      const r = await once(agent, url, body, headers);
      const complete = stream ? r.text.trimEnd().endsWith("data: [DONE]") : r.text.includes('"choices"');
      if (r.status !== 200 || !complete) {
        throw new Error(`${url}: HTTP ${r.status}, ${stream ? "stream" : "body"} ${JSON.stringify(r.text.slice(0, 300))}`);
      }
      if (provider && r.provider !== provider) {
        throw new Error(`${url}: served by '${r.provider}', not by '${provider}' as this target must be`);
      }
      r.text = null;
      r.index = index;
      r.atMs = r.startedAt - batchStart;
      results.push(r);
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { results, seconds };
}

/** Within this long after its batch started, a request that had to call the bank counts as
 * one at the batch's start: the isolate's lease ran out or shrank while the target waited its
 * turn, and the background renewal (which looks every 250 ms) had not caught up yet. */
const BATCH_START_MS = 500;

/** How a set of router answers was booked: the count of each `x-router-quota` value with its
 * `x-router-quota-calls` ("lease/0", "bank/1", ...), and the share that made no synchronous
 * bank call (`lease` with 0 calls). For the others, where they fell: within BATCH_START_MS of
 * their batch's start, or within 1 s after a minute began (a lease never outlives the minute
 * it was cut from); and the first few, as (request's place in its batch, ms after its start). */
function booking(results) {
  const modes = {};
  let noSync = 0;
  let batchStart = 0;
  let minuteStart = 0;
  const examples = [];
  // Past each batch's first BATCH_START_MS: the isolate busy, as in a steady stream.
  let later = 0;
  let laterNoSync = 0;
  for (const r of results) {
    const mode = `${r.quota ?? "?"}/${r.quotaCalls ?? "?"}`;
    modes[mode] = (modes[mode] ?? 0) + 1;
    const lease = r.quota === "lease" && r.quotaCalls === "0";
    if (r.atMs >= BATCH_START_MS) {
      later++;
      if (lease) laterNoSync++;
    }
    if (lease) {
      noSync++;
      continue;
    }
    if (r.atMs < BATCH_START_MS) batchStart++;
    if (r.startedAt % 60_000 < 1_000) minuteStart++;
    if (examples.length < 20) examples.push([r.index, r.atMs]);
  }
  return {
    requests: results.length,
    // Requests whose slow attempt was hedged (the fast path; x-router-hedged).
    hedged: results.filter((r) => r.hedged).length,
    modes,
    no_sync: noSync,
    no_sync_share: results.length ? noSync / results.length : null,
    others_at_batch_start: batchStart,
    others_in_first_second_of_minute: minuteStart,
    others_examples: examples,
    after_batch_start: { requests: later, no_sync: laterNoSync, no_sync_share: later ? laterNoSync / later : null },
  };
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99) };
}

// ---------------------------------------------------------------------------------------------
// The run.

const jsonOut = (() => {
  const i = process.argv.indexOf("--json");
  return i >= 0 ? process.argv[i + 1] : null;
})();

// The targets' keys (also those of the JSON output) and labels. `router` is the router's slow
// path (model "slow": Together, a provider without tracked limits, so no quota work at all),
// `router_groq` its fast path (model "fast": Groq with the quota ledger).
const TARGETS = ["fake", "baseline", "rewrite", "router", "router_groq"];
const LABELS = {
  fake: "fake upstream, direct",
  baseline: "pass-through Worker",
  rewrite: "rewriting Worker",
  router: "router slow",
  router_groq: "router fast",
};
/** What each target's label means, printed under the tables. */
const LEGEND =
  "rewriting Worker: the floor for any router, JavaScript that parses the body, renames the model, re-serializes it and " +
  "sends it, and returns a JSON answer read whole (bench/rewrite-worker.mjs); router slow: model \"slow\", Together (no tracked limits: x-router-quota: none); router fast: model \"fast\", " +
  "Groq with the quota ledger (limits far above the load, so leases are granted)";
const total = TARGETS.length * SCENARIOS.reduce((sum, sc) => sum + WARMUP + sc.requests + sc.serial, 0);
// The fast path may hedge a slow attempt (failover.hedge_percent, 5 % of its requests by
// default, plus a burst of 2): each hedge is one more call to the fake.
const fake = await startFake(Math.ceil(total * 1.1) + 10);
/** The load from outside the benchmark during each measured batch, in cores. */
const foreign = [];
/** Batches that started without the machine getting quiet first. */
let noisy = 0;
/** The router's log lines other than the per-request one (`quota_unreachable`, `quota_late`,
 * ...), counted by event; a few kept as they came. */
const routerEvents = { counts: {}, samples: [] };
function routerLog(log) {
  const text = typeof log === "string" ? log : String(log?.message ?? JSON.stringify(log));
  if (text.includes('"event":"request"')) return;
  const event = text.match(/"event":"([^"]+)"/)?.[1] ?? "other";
  routerEvents.counts[event] = (routerEvents.counts[event] ?? 0) + 1;
  if (routerEvents.samples.length < 10) routerEvents.samples.push(text.slice(0, 400));
}
const cleanups = [() => fake.stop()];
let exitCode = 0;
try {
  const config = routerConfig(fake.origin);
  const router = await startWorker({
    modules: [
      { type: "ESModule", path: path.join(ROOT, "build/index.js") },
      { type: "CompiledWasm", path: path.join(ROOT, "build/index_bg.wasm") },
    ],
    modulesRoot: ROOT,
    bindings: {
      ROUTER_CONFIG: config,
      ...ROUTER_SECRETS,
      ADMIN_KEY_HASHES: ADMIN_HASH,
    },
    durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true }, USAGE: { className: "UsageObject", useSQLite: true } },
    handleStructuredLogs: routerLog,
  });
  cleanups.push(() => router.dispose());
  const baseline = await startWorker({
    modules: [{ type: "ESModule", path: path.join(HERE, "baseline-worker.mjs") }],
    modulesRoot: HERE,
    bindings: { UPSTREAM: fake.origin },
  });
  cleanups.push(() => baseline.dispose());
  const rewrite = await startWorker({
    modules: [{ type: "ESModule", path: path.join(HERE, "rewrite-worker.mjs") }],
    modulesRoot: HERE,
    bindings: { UPSTREAM: fake.origin },
  });
  cleanups.push(() => rewrite.dispose());

  const auth = { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` };
  // Cold start: workerd up, then the first request (the configuration is parsed; a quiet
  // isolate books with its organization's bank, whose object is created), and what compiling
  // the wasm alone takes in V8 (Node's, not workerd's).
  const coldAgent = new http.Agent({ keepAlive: false });
  const first = await once(coldAgent, `${router.origin}/v1/chat/completions`, chatBody("fast", false, 128), auth);
  if (first.status !== 200) throw new Error(`the first request got HTTP ${first.status}: ${first.text.slice(0, 300)}`);
  const wasm = fs.readFileSync(path.join(ROOT, "build/index_bg.wasm"));
  const compileStart = process.hrtime.bigint();
  await WebAssembly.compile(wasm);
  const cold = {
    workerd_ready_ms: router.startupMs,
    first_request_ms: first.lastMs,
    wasm_compile_ms: Number(process.hrtime.bigint() - compileStart) / 1e6,
    baseline_workerd_ready_ms: baseline.startupMs,
  };
  // `provider`: who must serve each of the target's answers (`x-router-provider`), checked on
  // every one.
  const plan = {
    fake: { url: `${fake.origin}/v1/chat/completions`, model: "fast", headers: { "content-type": "application/json" }, pids: [] },
    baseline: { url: `${baseline.origin}/v1/chat/completions`, model: "fast", headers: auth, pids: baseline.pids },
    rewrite: { url: `${rewrite.origin}/v1/chat/completions`, model: "fast", headers: auth, pids: rewrite.pids },
    router: { url: `${router.origin}/v1/chat/completions`, model: "slow", headers: auth, pids: router.pids, provider: "together" },
    router_groq: { url: `${router.origin}/v1/chat/completions`, model: "fast", headers: auth, pids: router.pids, provider: "groq" },
  };
  /** The quota books as the status page shows them (per organization: requests booked this
   * minute, leases out; the leases the answering isolate holds). */
  const adminAgent = new http.Agent({ keepAlive: false });
  async function quotaStatus() {
    const r = await once(adminAgent, `${router.origin}/v1/router/status`, null, { authorization: `Bearer ${ADMIN_KEY}` }, "GET");
    if (r.status !== 200) return { error: `HTTP ${r.status}: ${r.text.slice(0, 200)}` };
    const groq = JSON.parse(r.text).providers?.groq;
    const orgs = {};
    for (const [org, models] of Object.entries(groq?.organizations ?? {})) {
      const m = models["llama-3.1-8b-instant"];
      orgs[org] = m ? { requests_this_minute: m.requests_per_minute.used, leases_out: m.leases.length } : null;
    }
    const held = groq?.isolate?.leases ?? [];
    return {
      organizations: orgs,
      isolate_leases: held.length,
      isolate_requests_left: held.reduce((sum, l) => sum + l.requests_left, 0),
    };
  }

  const out = {
    requests: REQUESTS,
    long_requests: LONG_REQUESTS,
    chunks: CHUNKS,
    long_chunks: LONG_CHUNKS,
    warmup: WARMUP,
    serial: SERIAL,
    rounds: ROUNDS,
    concurrency: CONCURRENCY,
    clk_tck: CLK_TCK,
    free_plan_cpu_ms: FREE_PLAN_CPU_MS,
    cold,
    legend: LEGEND,
    scenarios: {},
    fast_vs_slow: {},
  };
  for (const { mode, label, stream, maxTokens, requests, serial: serialRequests } of SCENARIOS) {
    out.scenarios[mode] = {};
    // Rounds: each target gets its share of the requests in turn, so that a change in the
    // machine's load during the run touches every target alike.
    const acc = {};
    for (const target of TARGETS) {
      const t = plan[target];
      acc[target] = {
        body: chatBody(t.model, stream, maxTokens),
        agent: new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY }),
        results: [],
        serial: [],
        seconds: 0,
        cpu: { user: 0, sys: 0 },
        // Per measured batch: how long the target had been idle before it (waiting for the
        // other targets' turns), and how many of its answers were not booked from a lease.
        batches: [],
      };
      await batch(acc[target].agent, t.url, acc[target].body, t.headers, WARMUP, stream, CONCURRENCY, t.provider);
      acc[target].lastEnd = Date.now();
    }
    await sleep(SETTLE_MS);
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of TARGETS) {
        const t = plan[target];
        const a = acc[target];
        const n = share(requests, round);
        if (!(await awaitQuiet())) noisy++;
        const before = { cpu: cpuMs(t.pids), load: foreignLoad() };
        const idleMs = Date.now() - a.lastEnd;
        const { results, seconds } = await batch(a.agent, t.url, a.body, t.headers, n, stream, CONCURRENCY, t.provider);
        const synced = results.filter((r) => !(r.quota === "lease" && r.quotaCalls === "0")).length;
        // Past the batch's first BATCH_START_MS: the requests sent then, over the time left.
        const later = results.filter((r) => r.atMs >= BATCH_START_MS).length;
        const laterSeconds = seconds - BATCH_START_MS / 1000;
        a.batches.push({
          round,
          idle_ms: idleMs,
          requests: n,
          seconds,
          rps: n / seconds,
          rps_after_start: laterSeconds > 0.25 ? later / laterSeconds : null,
          not_from_lease: t.provider ? synced : null,
        });
        await sleep(SETTLE_MS);
        const after = cpuMs(t.pids);
        a.cpu.user += after.user - before.cpu.user;
        a.cpu.sys += after.sys - before.cpu.sys;
        foreign.push(before.load.since());
        a.seconds += seconds;
        a.results.push(...results);
        const serial = await batch(a.agent, t.url, a.body, t.headers, share(serialRequests, round), stream, 1, t.provider);
        a.serial.push(...serial.results);
        a.lastEnd = Date.now();
      }
    }
    for (const target of TARGETS) {
      const t = plan[target];
      const a = acc[target];
      a.agent.destroy();
      out.scenarios[mode][target] = {
        label: LABELS[target],
        scenario: label,
        stream,
        requests,
        rps: requests / a.seconds,
        // Non-streamed: the whole answer; streamed: first and last byte of the body.
        latency_ms: summary(a.results.map((r) => r.lastMs)),
        ttfb_ms: summary(a.results.map((r) => r.firstMs)),
        serial_latency_ms: summary(a.serial.map((r) => r.lastMs)),
        serial_ttfb_ms: summary(a.serial.map((r) => r.firstMs)),
        cpu_ms_per_request: t.pids.length ? (a.cpu.user + a.cpu.sys) / requests : null,
        cpu_user_ms_per_request: t.pids.length ? a.cpu.user / requests : null,
        cpu_sys_ms_per_request: t.pids.length ? a.cpu.sys / requests : null,
        batches: a.batches,
      };
      if (t.provider) {
        // How the measured requests were booked, with 8 in flight and one at a time.
        const quota = { loaded: booking(a.results), serial: booking(a.serial) };
        out.scenarios[mode][target].quota = quota;
        if (quota.loaded.hedged + quota.serial.hedged > 0) {
          process.stderr.write(`  ${label.padEnd(22)} ${LABELS[target].padEnd(22)} hedged: ${quota.loaded.hedged} of ${quota.loaded.requests} with 8 in flight, ${quota.serial.hedged} of ${quota.serial.requests} one at a time\n`);
        }
        if (target === "router") {
          const modes = Object.keys({ ...quota.loaded.modes, ...quota.serial.modes });
          if (modes.some((m) => m !== "none/0")) {
            throw new Error(`the slow path must do no quota work, but its answers say ${JSON.stringify(modes)}`);
          }
        }
      }
      process.stderr.write(`  ${label.padEnd(22)} ${LABELS[target].padEnd(22)} ${(requests / a.seconds).toFixed(0)} req/s\n`);
    }
    // Overhead of each Worker over the fake, and of the router over the pass-through Worker.
    const s = out.scenarios[mode];
    for (const target of ["baseline", "rewrite", "router", "router_groq"]) {
      const over = (key) => ({
        p50_ms: s[target][key].p50 - s.fake[key].p50,
        p99_ms: s[target][key].p99 - s.fake[key].p99,
        p50_ratio: s[target][key].p50 / s.fake[key].p50,
      });
      s[target].overhead = {
        latency: over("latency_ms"),
        ttfb: over("ttfb_ms"),
        serial_latency: over("serial_latency_ms"),
        serial_ttfb: over("serial_ttfb_ms"),
      };
      if (target !== "baseline") {
        s[target].own_cpu_ms_per_request = s[target].cpu_ms_per_request - s.baseline.cpu_ms_per_request;
        s[target].own_cpu_user_ms_per_request = s[target].cpu_user_ms_per_request - s.baseline.cpu_user_ms_per_request;
      }
    }
    s.router_groq.quota.status_after = await quotaStatus();
    // The fast path against the slow one (non-streamed: the whole answer; streamed: the last
    // byte), and both against the pass-through Worker.
    const key = "latency";
    const fast = s.router_groq;
    const slow = s.router;
    out.fast_vs_slow[mode] = {
      scenario: label,
      serial_p50_added_ms: {
        baseline: s.baseline.overhead[`serial_${key}`].p50_ms,
        slow: slow.overhead[`serial_${key}`].p50_ms,
        fast: fast.overhead[`serial_${key}`].p50_ms,
      },
      serial_fast_minus_slow_p50_ms: fast[`serial_${key}_ms`].p50 - slow[`serial_${key}_ms`].p50,
      rps: { baseline: s.baseline.rps, slow: slow.rps, fast: fast.rps },
      fast_rps_share_of_slow: fast.rps / slow.rps,
      cpu_ms_per_request: { baseline: s.baseline.cpu_ms_per_request, slow: slow.cpu_ms_per_request, fast: fast.cpu_ms_per_request },
      own_cpu_ms_per_request: { slow: slow.own_cpu_ms_per_request, fast: fast.own_cpu_ms_per_request },
      fast_no_sync_share: { loaded: fast.quota.loaded.no_sync_share, serial: fast.quota.serial.no_sync_share },
    };
  }
  // The goals, on the non-streamed answers (when that scenario ran: see BENCH_SCENARIOS).
  const json = out.fast_vs_slow.json;
  out.goals = !json ? null : {
    fast_minus_slow_p50_ms: { value: json.serial_fast_minus_slow_p50_ms, goal: `<= ${GOAL_FAST_MINUS_SLOW_MS} ms`, met: json.serial_fast_minus_slow_p50_ms <= GOAL_FAST_MINUS_SLOW_MS },
    fast_rps_share_of_slow: { value: json.fast_rps_share_of_slow, goal: `>= ${GOAL_FAST_RPS_SHARE * 100} %`, met: json.fast_rps_share_of_slow >= GOAL_FAST_RPS_SHARE },
    no_sync_share_loaded: { value: json.fast_no_sync_share.loaded, goal: `>= ${GOAL_NO_SYNC_SHARE * 100} %`, met: json.fast_no_sync_share.loaded >= GOAL_NO_SYNC_SHARE },
    no_sync_share_serial: { value: json.fast_no_sync_share.serial, goal: `>= ${GOAL_NO_SYNC_SHARE * 100} %`, met: json.fast_no_sync_share.serial >= GOAL_NO_SYNC_SHARE },
  };
  out.router_events = routerEvents;
  out.foreign_load_cores = {
    max: Math.max(...foreign),
    mean: foreign.reduce((a, b) => a + b, 0) / foreign.length,
    batches: foreign.length,
    started_noisy: noisy,
  };
  if (jsonOut) {
    writeJson(jsonOut, out);
  }
  printTable(out);
} catch (err) {
  console.error(`overhead: ${err.stack ?? err}`);
  exitCode = 1;
} finally {
  await disposeAll(cleanups);
}
process.exit(exitCode);

function printTable(out) {
  const f = (v, d = 2) => (v === null || v === undefined ? "" : v.toFixed(d));
  console.log(
    `\n${out.requests} requests per scenario (${out.long_requests} for the long stream) after ${out.warmup} of ` +
      `warm-up, ${out.concurrency} in flight, then ${out.serial} one at a time (a third for the long stream), ` +
      `in ${out.rounds} rounds; latency in ms`,
  );
  console.log(
    `load from other processes while measuring: ${f(out.foreign_load_cores.mean)} cores on average, ` +
      `${f(out.foreign_load_cores.max)} at most (of ${os.availableParallelism()}); ` +
      `${out.foreign_load_cores.started_noisy} of ${out.foreign_load_cores.batches} batches started without a quiet machine`,
  );
  const head = ["scenario", "target", "req/s", "p50", "p90", "p99", "+p50", "+p99", "x p50", "1-by-1 p50", "+p50", "CPU ms/req", "user", "own CPU", "own user", "no bank call", "1-by-1"];
  const pct = (v) => (v === null || v === undefined ? "" : `${(v * 100).toFixed(1)} %`);
  const rows = [];
  for (const s of Object.values(out.scenarios)) {
    for (const target of TARGETS) {
      const r = s[target];
      // Non-streamed: the whole answer. Streamed: the first byte of the body, then the last.
      const metrics = r.stream ? ["ttfb", "latency"] : ["latency"];
      for (const [i, key] of metrics.entries()) {
        const name = r.stream ? `${r.scenario}, ${key === "ttfb" ? "1st" : "last"} byte` : r.scenario;
        const loaded = r[`${key}_ms`];
        const serial = r[`serial_${key}_ms`];
        const o = r.overhead?.[key];
        const so = r.overhead?.[`serial_${key}`];
        rows.push([
          name,
          r.label,
          i === 0 ? f(r.rps, 0) : "",
          f(loaded.p50),
          f(loaded.p90),
          f(loaded.p99),
          f(o?.p50_ms),
          f(o?.p99_ms),
          f(o?.p50_ratio),
          f(serial.p50),
          f(so?.p50_ms),
          i === 0 ? f(r.cpu_ms_per_request) : "",
          i === 0 ? f(r.cpu_user_ms_per_request) : "",
          i === 0 ? f(r.own_cpu_ms_per_request) : "",
          i === 0 ? f(r.own_cpu_user_ms_per_request) : "",
          // The share of answers booked from a lease with no bank call (the fast path only).
          i === 0 && target === "router_groq" ? pct(r.quota.loaded.no_sync_share) : "",
          i === 0 && target === "router_groq" ? pct(r.quota.serial.no_sync_share) : "",
        ]);
      }
    }
  }
  const c = out.cold;
  console.log(
    `cold start: workerd ready in ${f(c.workerd_ready_ms, 0)} ms (pass-through Worker: ` +
      `${f(c.baseline_workerd_ready_ms, 0)} ms), first request ${f(c.first_request_ms, 1)} ms; ` +
      `compiling the wasm alone in Node's V8: ${f(c.wasm_compile_ms, 1)} ms`,
  );
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  console.log(
    "+p50, +p99, x p50: over the fake upstream called directly; 1-by-1: one request at a time;\n" +
      "CPU ms/req: workerd's user+system time per request (user: the user part); own CPU: router minus the pass-through " +
      `Worker (the free plan allows ${out.free_plan_cpu_ms} ms per request);\n` +
      `no bank call: share of the measured answers with x-router-quota: lease and x-router-quota-calls: 0, ${out.concurrency} in flight, then one at a time;\n` +
      out.legend,
  );

  // How the fast path's answers were booked, and where the others fell.
  console.log("\nfast path, how each measured answer was booked (x-router-quota/x-router-quota-calls):");
  for (const s of Object.values(out.scenarios)) {
    const q = s.router_groq.quota;
    for (const [what, b] of [[`${out.concurrency} in flight`, q.loaded], ["one at a time", q.serial]]) {
      const others = b.requests - b.no_sync;
      const later = b.after_batch_start;
      console.log(
        `  ${`${s.router_groq.scenario}, ${what}:`.padEnd(40)} ${JSON.stringify(b.modes)}; no bank call ${pct(b.no_sync_share)}` +
          (later.requests
            ? ` (${pct(later.no_sync_share)} of the ${later.requests} sent later than ${BATCH_START_MS} ms into their batch)`
            : ` (every batch lasted less than ${BATCH_START_MS} ms)`) +
          (others
            ? `; of the ${others} others, ${b.others_at_batch_start} in the first ${BATCH_START_MS} ms of their batch, ` +
              `${b.others_in_first_second_of_minute} in a minute's first second`
            : ""),
      );
    }
    console.log(
      `  ${`${s.router_groq.scenario}, per batch:`.padEnd(40)} ` +
        s.router_groq.batches.map((x) => `idle ${(x.idle_ms / 1000).toFixed(1)} s before, ${x.not_from_lease} of ${x.requests} not from a lease`).join("; "),
    );
    const rpsOf = (target) =>
      s[target].batches.map((x) => `${x.rps.toFixed(0)}${x.rps_after_start === null ? "" : ` (${x.rps_after_start.toFixed(0)})`}`).join(", ");
    const bracketed = ["router", "router_groq"].some((t) => s[t].batches.some((x) => x.rps_after_start !== null));
    console.log(
      `  ${`${s.router_groq.scenario}, req/s per batch:`.padEnd(40)} slow ${rpsOf("router")}; fast ${rpsOf("router_groq")}` +
        (bracketed ? ` (in brackets: past the batch's first ${BATCH_START_MS} ms)` : ""),
    );
    const st = q.status_after;
    if (st) console.log(`  ${`${s.router_groq.scenario}, status page after:`.padEnd(40)} ${JSON.stringify(st)}`);
  }
  const ev = out.router_events;
  console.log(`router log events other than requests: ${Object.keys(ev.counts).length ? JSON.stringify(ev.counts) : "none"}`);
  for (const line of ev.samples) console.log(`  ${line}`);

  // The fast path against the slow one, and the goals.
  console.log("\nfast path against slow path (1-by-1: p50 added over the fake, one request at a time; streamed: last byte):");
  const signed = (v) => `${v < 0 ? "" : "+"}${f(v)}`;
  const fhead = ["scenario", "1-by-1 +p50 pass-through", "slow", "fast", "fast - slow", `req/s ${out.concurrency} in flight: pass-through`, "slow", "fast", "fast/slow", "CPU ms/req: pass-through", "slow", "fast", `no bank call: ${out.concurrency} in flight`, "1-by-1"];
  const frows = Object.values(out.fast_vs_slow).map((c) => [
    c.scenario,
    f(c.serial_p50_added_ms.baseline),
    f(c.serial_p50_added_ms.slow),
    f(c.serial_p50_added_ms.fast),
    signed(c.serial_fast_minus_slow_p50_ms),
    f(c.rps.baseline, 0),
    f(c.rps.slow, 0),
    f(c.rps.fast, 0),
    pct(c.fast_rps_share_of_slow),
    f(c.cpu_ms_per_request.baseline),
    `${f(c.cpu_ms_per_request.slow)} (${signed(c.own_cpu_ms_per_request.slow)})`,
    `${f(c.cpu_ms_per_request.fast)} (${signed(c.own_cpu_ms_per_request.fast)})`,
    pct(c.fast_no_sync_share.loaded),
    pct(c.fast_no_sync_share.serial),
  ]);
  const fw = fhead.map((h, i) => Math.max(h.length, ...frows.map((r) => r[i].length)));
  const fline = (cells) => cells.map((c, i) => (i < 1 ? c.padEnd(fw[i]) : c.padStart(fw[i]))).join("  ");
  console.log(fline(fhead));
  for (const r of frows) console.log(fline(r));
  console.log("CPU: workerd's per request, (+ the router's own over the pass-through Worker)");
  const g = out.goals;
  if (!g) return;
  const verdict = (x) => (x.met ? "met" : "NOT met");
  console.log(
    `goals (non-streamed): fast - slow p50 one at a time ${f(g.fast_minus_slow_p50_ms.value)} ms (goal ${g.fast_minus_slow_p50_ms.goal}): ${verdict(g.fast_minus_slow_p50_ms)}; ` +
      `fast req/s ${pct(g.fast_rps_share_of_slow.value)} of slow (goal ${g.fast_rps_share_of_slow.goal}): ${verdict(g.fast_rps_share_of_slow)}; ` +
      `no bank call ${pct(g.no_sync_share_loaded.value)} with ${out.concurrency} in flight, ${pct(g.no_sync_share_serial.value)} one at a time ` +
      `(expected ${g.no_sync_share_loaded.goal}): ${verdict(g.no_sync_share_loaded)}, ${verdict(g.no_sync_share_serial)}`,
  );
}
