// End-to-end overhead of the router: the release build (build/) in workerd through Miniflare,
// a fake upstream on 127.0.0.1 that answers at once, and a load generator with a fixed
// concurrency. The same requests go straight to the fake, through a trivial pass-through
// Worker (the baseline), and through the router to a provider without tracked limits and to a
// Groq-style provider with limits (one quota-object call before the upstream call, one
// settlement after). Three scenarios: a non-streamed answer, a streamed one of 20 chunks and a
// streamed one of 200 (the fake streams one chunk per `max_tokens`). Reported per scenario:
// req/s, latency percentiles, the router's overhead over the fake, and workerd's CPU time per
// request (from /proc, user and system) against the baseline's.
//
//   node bench/overhead.mjs [--json FILE]      (scripts/bench.sh builds first and runs this)
//
// BENCH_REQUESTS (2000; BENCH_LONG_REQUESTS, 500, for the long stream), BENCH_WARMUP (200) and
// BENCH_CONCURRENCY (8) change the load; BENCH_SERIAL (300; a third for the long stream)
// requests also go one at a time, for latency without queueing. BENCH_STREAM_CHUNKS (20) and
// BENCH_LONG_STREAM_CHUNKS (200) set the streams' lengths. The targets
// take turns in BENCH_ROUNDS (4) rounds, and each measured batch waits (up to
// BENCH_QUIET_WAIT_MS, 20 s) until other processes leave the machine quiet, so that a shared
// machine's load lands on every target alike; the load that was there is reported. Every
// request must succeed; any failure stops the run with a non-zero exit.
import { execFileSync, fork } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";

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
/** Requests sent one at a time after the load, for latency without queueing. */
const SERIAL = int("BENCH_SERIAL", 300);
/** Chunks of the streamed answers: a short answer, and a long one (the fake streams as many
 * chunks as the request's `max_tokens`, one token a chunk, as providers roughly do). */
const CHUNKS = int("BENCH_STREAM_CHUNKS", 20);
const LONG_CHUNKS = int("BENCH_LONG_STREAM_CHUNKS", 200);
/** The scenarios: how the answer comes, how long it is, how many requests measure it. */
const SCENARIOS = [
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
/** Each target's requests are sent in this many turns, the targets taking turns. */
const ROUNDS = int("BENCH_ROUNDS", 4);
/** Round `round`'s share of `n` requests. */
const share = (n, round) => Math.floor((n * (round + 1)) / ROUNDS) - Math.floor((n * round) / ROUNDS);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Other processes' load under which the machine counts as quiet, in cores, and how long to
 * wait for it before each measured batch. */
const QUIET_CORES = 0.25;
const QUIET_WAIT_MS = int("BENCH_QUIET_WAIT_MS", 20_000);
/** Time left after a batch for work the router does after answering (the settlement). */
const SETTLE_MS = 300;
/** The free plan's CPU time per request. */
const FREE_PLAN_CPU_MS = 10;

const GATEWAY_KEY = "sk-bench-gateway-0123456789";
const GATEWAY_HASH = createHash("sha256").update(GATEWAY_KEY).digest("hex");

/** A typical small chat request (a system prompt, one question, a token limit). */
function chatBody(model, stream, maxTokens) {
  return JSON.stringify({
    model,
    messages: [
      { role: "system", content: "You are a careful analyst. Answer in two sentences." },
      {
        role: "user",
        content:
          "Could you look at the numbers from last quarter and tell me whether the trend in churn is real, " +
          "or just noise from the pricing change in March?",
      },
    ],
    max_tokens: maxTokens,
    temperature: 0.2,
    ...(stream ? { stream: true } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// Processes: the fake upstream, and workerd's CPU time from /proc.

function startFake(maxRequests) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(HERE, "fake-upstream.mjs"), [String(maxRequests), "600000"], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`the fake upstream exited early (${code})`)));
    child.once("message", ({ port }) => {
      resolve({
        origin: `http://127.0.0.1:${port}`,
        stop() {
          child.removeAllListeners("exit");
          if (child.connected) child.disconnect();
        },
      });
    });
  });
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** `/proc/<pid>/stat`: parent pid, and user + system CPU time in clock ticks. */
function procStat(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const comm = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // After the name: state(3) ppid(4) ... utime(14) stime(15), counted from 1 in proc(5).
    const [user, sys] = [Number(fields[11]), Number(fields[12])];
    return { pid, comm, ppid: Number(fields[1]), user, sys, ticks: user + sys };
  } catch {
    return null;
  }
}

/** The workerd processes below this one in the process tree. */
function workerdPids() {
  const all = fs
    .readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map((d) => procStat(Number(d)))
    .filter(Boolean);
  const children = new Map();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const found = [];
  const queue = [process.pid];
  while (queue.length) {
    for (const child of children.get(queue.shift()) ?? []) {
      if (child.comm.startsWith("workerd")) found.push(child.pid);
      queue.push(child.pid);
    }
  }
  return found;
}

/** User and system CPU time of `pids`, in milliseconds. */
function cpuMs(pids) {
  const stats = pids.map(procStat).filter(Boolean);
  const ms = (key) => stats.reduce((sum, p) => sum + p[key], 0) * (1000 / CLK_TCK);
  return { user: ms("user"), sys: ms("sys") };
}

/** Busy clock ticks of the whole machine, from the first line of /proc/stat. */
function machineBusyTicks() {
  const [, user, nice, system, , , irq, softirq, steal] = fs
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

/** One request; resolves with its timings in ms (headers, first and last body byte). */
function once(agent, url, body, headers) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - start) / 1e6;
    const req = http.request(url, { method: "POST", agent, headers: { ...headers, "content-length": Buffer.byteLength(body) } }, (res) => {
      const headersMs = ms();
      let firstMs = null;
      const parts = [];
      res.on("data", (c) => {
        firstMs ??= ms();
        parts.push(c);
      });
      res.on("end", () => resolve({ status: res.statusCode, headersMs, firstMs: firstMs ?? headersMs, lastMs: ms(), text: Buffer.concat(parts).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Sends `n` requests with CONCURRENCY in flight; fails on any answer that is not a complete
 * success. */
async function batch(agent, url, body, headers, n, stream, concurrency = CONCURRENCY) {
  let next = 0;
  const results = [];
  const worker = async () => {
    while (next < n) {
      next++;
      const r = await once(agent, url, body, headers);
      const complete = stream ? r.text.trimEnd().endsWith("data: [DONE]") : r.text.includes('"choices"');
      if (r.status !== 200 || !complete) {
        throw new Error(`${url}: HTTP ${r.status}, ${stream ? "stream" : "body"} ${JSON.stringify(r.text.slice(0, 300))}`);
      }
      results.push(r);
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { results, seconds };
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

const TARGETS = ["fake", "baseline", "router", "router_groq"];
const LABELS = {
  fake: "fake upstream, direct",
  baseline: "pass-through Worker",
  router: "router, no limits",
  router_groq: "router, Groq + ledger",
};
const total = TARGETS.length * SCENARIOS.reduce((sum, sc) => sum + WARMUP + sc.requests + sc.serial, 0);
const fake = await startFake(total + 10);
/** The load from outside the benchmark during each measured batch, in cores. */
const foreign = [];
/** Batches that started without the machine getting quiet first. */
let noisy = 0;
const cleanups = [() => fake.stop()];
let exitCode = 0;
try {
  const config = {
    providers: {
      // No tracked limits: the first key, no quota-object call.
      together: { base_url: `${fake.origin}/v1`, keys: [{ id: "together-1", secret: "TOGETHER_API_KEY" }] },
      // Groq's dialect and limits (raised so that the run never hits them): one quota-object
      // call to reserve, one after the answer to settle.
      groq: {
        base_url: `${fake.origin}/v1`,
        keys: [
          { id: "groq-1", secret: "GROQ_KEY_1", org: "org-a" },
          { id: "groq-2", secret: "GROQ_KEY_2", org: "org-b" },
        ],
        limits: { "llama-3.1-8b-instant": { rpm: 1_000_000, rpd: 100_000_000, tpm: 1_000_000_000, tpd: 100_000_000_000 } },
      },
    },
    routes: { fast: ["groq/llama-3.1-8b-instant"], slow: ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo"] },
  };
  const router = await startWorker({
    modules: [
      { type: "ESModule", path: path.join(ROOT, "build/index.js") },
      { type: "CompiledWasm", path: path.join(ROOT, "build/index_bg.wasm") },
    ],
    modulesRoot: ROOT,
    bindings: {
      ROUTER_CONFIG: config,
      GATEWAY_KEY_HASHES: GATEWAY_HASH,
      TOGETHER_API_KEY: "tg-bench-key",
      GROQ_KEY_1: "gsk-bench-key-1",
      GROQ_KEY_2: "gsk-bench-key-2",
    },
    durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true } },
  });
  cleanups.push(() => router.dispose());
  const baseline = await startWorker({
    modules: [{ type: "ESModule", path: path.join(HERE, "baseline-worker.mjs") }],
    modulesRoot: HERE,
    bindings: { UPSTREAM: fake.origin },
  });
  cleanups.push(() => baseline.dispose());

  const auth = { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` };
  // Cold start: workerd up, then the first request (the configuration is parsed, the quota
  // object created), and what compiling the wasm alone takes in V8 (Node's, not workerd's).
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
  const plan = {
    fake: { url: `${fake.origin}/v1/chat/completions`, model: "fast", headers: { "content-type": "application/json" }, pids: [] },
    baseline: { url: `${baseline.origin}/v1/chat/completions`, model: "fast", headers: auth, pids: baseline.pids },
    router: { url: `${router.origin}/v1/chat/completions`, model: "slow", headers: auth, pids: router.pids },
    router_groq: { url: `${router.origin}/v1/chat/completions`, model: "fast", headers: auth, pids: router.pids },
  };

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
    scenarios: {},
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
      };
      await batch(acc[target].agent, t.url, acc[target].body, t.headers, WARMUP, stream);
    }
    await sleep(SETTLE_MS);
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of TARGETS) {
        const t = plan[target];
        const a = acc[target];
        const n = share(requests, round);
        if (!(await awaitQuiet())) noisy++;
        const before = { cpu: cpuMs(t.pids), load: foreignLoad() };
        const { results, seconds } = await batch(a.agent, t.url, a.body, t.headers, n, stream);
        await sleep(SETTLE_MS);
        const after = cpuMs(t.pids);
        a.cpu.user += after.user - before.cpu.user;
        a.cpu.sys += after.sys - before.cpu.sys;
        foreign.push(before.load.since());
        a.seconds += seconds;
        a.results.push(...results);
        const serial = await batch(a.agent, t.url, a.body, t.headers, share(serialRequests, round), stream, 1);
        a.serial.push(...serial.results);
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
      };
      process.stderr.write(`  ${label.padEnd(22)} ${LABELS[target].padEnd(22)} ${(requests / a.seconds).toFixed(0)} req/s\n`);
    }
    // Overhead of each Worker over the fake, and of the router over the pass-through Worker.
    const s = out.scenarios[mode];
    for (const target of ["baseline", "router", "router_groq"]) {
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
  }
  out.foreign_load_cores = {
    max: Math.max(...foreign),
    mean: foreign.reduce((a, b) => a + b, 0) / foreign.length,
    batches: foreign.length,
    started_noisy: noisy,
  };
  if (jsonOut) {
    fs.mkdirSync(path.dirname(jsonOut), { recursive: true });
    fs.writeFileSync(jsonOut, JSON.stringify(out, null, 2));
  }
  printTable(out);
} catch (err) {
  console.error(`overhead: ${err.stack ?? err}`);
  exitCode = 1;
} finally {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch {
      // Already gone.
    }
  }
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
  const head = ["scenario", "target", "req/s", "p50", "p90", "p99", "+p50", "+p99", "x p50", "1-by-1 p50", "+p50", "CPU ms/req", "user", "own CPU", "own user"];
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
      `Worker (the free plan allows ${out.free_plan_cpu_ms} ms per request)`,
  );
}
