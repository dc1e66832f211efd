// Prints the one table scripts/bench.sh ends with: criterion medians of the core, the
// end-to-end overhead and CPU figures (bench/overhead.mjs's JSON), and the bundle size
// (scripts/size.sh's output), with the machine they came from.
//
//   node bench/report.mjs <criterion dir> <overhead.json> <size log>
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [criterionDir, overheadFile, sizeLog] = process.argv.slice(2);

/** The core benchmarks, as criterion names them (group/id), with what each measures. */
const CORE = [
  ["classify/1KB", "classify, 1 KB body"],
  ["classify/16KB", "classify, 16 KB body"],
  ["classify/128KB", "classify, 128 KB body"],
  ["parse_and_classify/1KB", "parse + classify, 1 KB body"],
  ["parse_and_classify/16KB", "parse + classify, 16 KB body"],
  ["parse_and_classify/128KB", "parse + classify, 128 KB body"],
  ["quota/isolate_admit_and_settle_from_lease", "quota, isolate: admit from a lease + settle (no call)"],
  ["quota/bank_reserve_step", "quota, bank call: Reserve (decode, apply, encode)"],
  ["quota/bank_exchange_step", "quota, bank call: Exchange (decode, apply, encode)"],
  ["headers/report_groq", "ratelimit::report, Groq headers"],
  ["headers/report_openai", "ratelimit::report, OpenAI headers"],
  ["headers/refusal_groq_429", "ratelimit::refusal, Groq 429 body"],
  ["headers/parse_retry_after", "outcome::parse_retry_after(\"6.78\")"],
  ["headers/go_duration", "ratelimit::go_duration_ms(\"2m59.56s\")"],
];

function duration(ns) {
  if (ns < 1_000) return `${ns.toPrecision(3)} ns`;
  if (ns < 1_000_000) return `${(ns / 1_000).toPrecision(3)} µs`;
  return `${(ns / 1_000_000).toPrecision(3)} ms`;
}

function median(id) {
  try {
    const est = JSON.parse(fs.readFileSync(path.join(criterionDir, id, "new", "estimates.json"), "utf8"));
    return duration(est.median.point_estimate);
  } catch {
    return "(not measured)";
  }
}

const rows = [];
const add = (section, item, value) => rows.push([section, item, value]);
/** Rows about the machine's state, printed last. */
const machine = [];

for (const [id, label] of CORE) add("core (criterion median)", label, median(id));
if (process.env.BENCH_CRITERION_OTHER_LOAD) {
  machine.push(["machine", "other processes' load while criterion ran", `${process.env.BENCH_CRITERION_OTHER_LOAD} cores on average`]);
}

const ms = (v) => `${v.toFixed(2)} ms`;
/** A difference, with its sign. */
const delta = (v) => `${v < 0 ? "-" : "+"}${ms(Math.abs(v))}`;
let overhead = null;
try {
  overhead = JSON.parse(fs.readFileSync(overheadFile, "utf8"));
} catch {
  add("end to end", "(not measured)", "");
}
if (overhead) {
  const o = overhead;
  const section = `e2e, ${o.concurrency} in flight`;
  const all = Object.values(o.scenarios).flatMap((s) => Object.values(s));
  for (const r of all) {
    const metrics = r.stream ? [["ttfb", "1st byte"], ["latency", "last byte"]] : [["latency", "answer"]];
    for (const [i, [key, what]] of metrics.entries()) {
      const l = r[`${key}_ms`];
      let value = `p50 ${ms(l.p50)}, p90 ${ms(l.p90)}, p99 ${ms(l.p99)}`;
      if (i === 0) value = `${r.rps.toFixed(0)} req/s; ${value}`;
      if (r.overhead) {
        const d = r.overhead[key];
        value += `; ${delta(d.p50_ms)} p50, ${delta(d.p99_ms)} p99, x${d.p50_ratio.toFixed(2)}`;
      }
      add(section, `${r.scenario}, ${r.label}, ${what}`, value);
    }
  }
  for (const r of all) {
    const metrics = r.stream ? [["ttfb", "1st byte"], ["latency", "last byte"]] : [["latency", "answer"]];
    for (const [key, what] of metrics) {
      const l = r[`serial_${key}_ms`];
      let value = `p50 ${ms(l.p50)}, p99 ${ms(l.p99)}`;
      if (r.overhead) value += `; ${delta(r.overhead[`serial_${key}`].p50_ms)} p50`;
      add("e2e, one at a time", `${r.scenario}, ${r.label}, ${what}`, value);
    }
  }
  for (const r of all) {
    if (r.cpu_ms_per_request === null) continue;
    let value = `${ms(r.cpu_ms_per_request)} (user ${ms(r.cpu_user_ms_per_request)})`;
    if (r.own_cpu_ms_per_request !== undefined) {
      const own = r.own_cpu_ms_per_request;
      value +=
        `; over the pass-through Worker ${ms(own)} (user ${ms(r.own_cpu_user_ms_per_request)}) = ` +
        `${((own / o.free_plan_cpu_ms) * 100).toFixed(0)} % of ${o.free_plan_cpu_ms} ms`;
    }
    add("workerd CPU per request", `${r.scenario}, ${r.label}`, value);
  }
  // The fast path against the slow one, and how its answers were booked (bench/overhead.mjs's
  // `fast_vs_slow` and `goals`; absent from older JSON).
  const pct = (v) => `${(v * 100).toFixed(1)} %`;
  const met = (g) => (g ? ` (goal ${g.goal}: ${g.met ? "met" : "NOT met"})` : "");
  for (const [mode, c] of Object.entries(o.fast_vs_slow ?? {})) {
    const goals = mode === "json" ? o.goals : {};
    const d = c.serial_p50_added_ms;
    const what = o.scenarios[mode].router_groq.stream ? "last byte" : "answer";
    add(
      "e2e, fast vs slow",
      `${c.scenario}, one at a time, p50 added over the fake (${what})`,
      `pass-through ${delta(d.baseline)}, slow ${delta(d.slow)}, fast ${delta(d.fast)}; ` +
        `fast - slow ${delta(c.serial_fast_minus_slow_p50_ms)}${met(goals.fast_minus_slow_p50_ms)}`,
    );
    add(
      "e2e, fast vs slow",
      `${c.scenario}, req/s with ${o.concurrency} in flight`,
      `pass-through ${c.rps.baseline.toFixed(0)}, slow ${c.rps.slow.toFixed(0)}, fast ${c.rps.fast.toFixed(0)} = ` +
        `${pct(c.fast_rps_share_of_slow)} of slow${met(goals.fast_rps_share_of_slow)}`,
    );
    const q = o.scenarios[mode].router_groq.quota;
    add(
      "e2e, fast vs slow",
      `${c.scenario}, fast answers with no bank call`,
      `${pct(q.loaded.no_sync_share)} with ${o.concurrency} in flight` +
        (q.loaded.after_batch_start?.requests
          ? ` (${pct(q.loaded.after_batch_start.no_sync_share)} past each batch's first 500 ms)`
          : q.loaded.after_batch_start
            ? " (every batch shorter than 500 ms)"
            : "") +
        `, ${pct(q.serial.no_sync_share)} one at a time; ${JSON.stringify(q.loaded.modes)}`,
    );
  }
  if (o.goals) {
    const g = o.goals;
    add(
      "e2e, fast vs slow",
      "non-streamed, no bank call, goal",
      `${pct(g.no_sync_share_loaded.value)} with ${o.concurrency} in flight${met(g.no_sync_share_loaded)}, ` +
        `${pct(g.no_sync_share_serial.value)} one at a time${met(g.no_sync_share_serial)}`,
    );
  }
  const fl = o.foreign_load_cores;
  machine.push([
    "machine",
    "other processes' load during the e2e batches",
    `${fl.mean.toFixed(2)} cores on average, ${fl.max.toFixed(2)} at most; ` +
      `${fl.started_noisy} of ${fl.batches} batches started before the machine was quiet`,
  ]);
  add("cold start", "workerd ready (router)", `${o.cold.workerd_ready_ms.toFixed(0)} ms`);
  add("cold start", "workerd ready (pass-through Worker)", `${o.cold.baseline_workerd_ready_ms.toFixed(0)} ms`);
  add("cold start", "first request (config parse, first bank call)", ms(o.cold.first_request_ms));
  add("cold start", "WebAssembly.compile of the wasm (Node's V8)", ms(o.cold.wasm_compile_ms));
}

try {
  const log = fs.readFileSync(sizeLog, "utf8");
  const bundle = log.match(/^bundle\s+([\d.]+)\s+([\d.]+)/m);
  const wasm = log.match(/^index_bg\.wasm\s+([\d.]+)\s+([\d.]+)/m);
  const budget = log.match(/^gzip budget\s+([\d.]+) KiB: ([\d.]+) KiB left/m);
  const over = log.match(/^size: .*$/m);
  if (bundle) add("bundle", "worker JS + wasm", `${bundle[1]} KiB raw, ${bundle[2]} KiB gzip`);
  if (wasm) add("bundle", "of which wasm", `${wasm[1]} KiB raw, ${wasm[2]} KiB gzip`);
  if (budget) add("bundle", "gzip budget (scripts/size.sh)", `${budget[1]} KiB, ${budget[2]} KiB left`);
  if (over) add("bundle", "gzip budget (scripts/size.sh)", `OVER: ${over[0]}`);
} catch {
  add("bundle", "(not measured)", "");
}

rows.push(...machine);

const cpuModel = (() => {
  try {
    return fs.readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.*)$/m)?.[1] ?? os.cpus()[0]?.model;
  } catch {
    return os.cpus()[0]?.model ?? "unknown CPU";
  }
})();
const rustc = (() => {
  try {
    return execFileSync("rustc", ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return "rustc ?";
  }
})();

const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), ["section", "figure", "value"][i].length));
const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
console.log(
  `\nedge-router benchmarks, ${new Date().toISOString().slice(0, 16)}Z: ${os.availableParallelism()} cores (${cpuModel}), ` +
    `load average before the run ${process.env.BENCH_LOADAVG_START ?? "?"}, ${rustc}, Node ${process.versions.node}`,
);
console.log(line(["section", "figure", "value"]));
console.log(line(widths.map((w) => "-".repeat(w))));
let last = null;
for (const r of rows) {
  console.log(line([r[0] === last ? "" : r[0], r[1], r[2]]));
  last = r[0];
}
