// A V8 CPU profile of the router's isolate in workerd under load, wasm frames included, and
// where the time goes: per function (self and inclusive) and per bucket (JS glue, wasm, runtime
// natives, GC, idle; and the router's concerns: the Rust `fetch` handler, serde, the log line,
// Headers, Response construction, runtime.js, Date.now, timers, AbortController).
//
// The release build (build/) runs in workerd through Miniflare, as in bench/overhead.mjs, with
// workerd's inspector on (127.0.0.1, a free port). After a warm-up the script attaches to the
// router's isolate (inspector target `core:user:`) over the Chrome DevTools Protocol, starts
// the sampling profiler, sends the measured requests, stops it, saves the .cpuprofile (open it
// in Chrome DevTools' Performance panel, or speedscope) and prints the tables.
//
//   node bench/profile.mjs [--model slow|fast] [--stream] [--chunks 20] [--requests 3000]
//        [--warmup 300] [--concurrency 8] [--interval 50] [--out FILE] [--json FILE]
//        [--build DIR] [--no-compare] [--top-self 40] [--top-total 30]
//   node bench/profile.mjs --analyze FILE.cpuprofile [--requests N]   (tables of a saved one)
//
// --model slow: Together, no quota tracking (the non-streamed chat path with no quota work);
// --model fast: Groq with the quota ledger. --stream: streamed answers of --chunks chunks.
// --interval: the sampling interval in µs. Before profiling, the same N requests run once
// without the profiler (unless --no-compare), for workerd's CPU per request from /proc with
// and without it. --build: another build directory (e.g. one built with NO_MINIFY=1). Needs build/ (scripts/build.sh); wasm names come
// from the module's name section, which scripts/build.sh keeps only with WASM_NAMES=1 (build
// with `WASM_NAMES=1 bash scripts/build.sh` before profiling; the deployed build has none).
// JS names in build/index.js are minified unless it was built with NO_MINIFY=1; the script
// labels the wasm-bindgen shims (`__wbg_*`) with the Rust import they serve, read from the
// name section, and runtime.js's functions by its export map, so both builds read alike.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CLK_TCK, GATEWAY_KEY, ROUTER_SECRETS, chatBody, disposeAll, procStat, routerConfig, startFake, workerdPids } from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");

// ---------------------------------------------------------------------------------------------
// Options.

function parseArgs(argv) {
  const o = {
    model: "slow",
    stream: false,
    chunks: 20,
    requests: 3000,
    warmup: 300,
    concurrency: 8,
    interval: 50,
    out: null,
    json: null,
    analyze: null,
    build: path.join(ROOT, "build"),
    topSelf: 40,
    topTotal: 30,
    compare: true,
    worker: null,
  };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not '${v}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--model": o.model = next(); break;
      case "--stream": o.stream = true; break;
      case "--chunks": o.chunks = num(a, next()); break;
      case "--requests": o.requests = num(a, next()); break;
      case "--warmup": o.warmup = num(a, next()); break;
      case "--concurrency": o.concurrency = num(a, next()); break;
      case "--interval": o.interval = num(a, next()); break;
      case "--out": o.out = path.resolve(next()); break;
      case "--json": o.json = path.resolve(next()); break;
      case "--analyze": o.analyze = path.resolve(next()); break;
      case "--build": o.build = path.resolve(next()); break;
      case "--top-self": o.topSelf = num(a, next()); break;
      case "--top-total": o.topTotal = num(a, next()); break;
      case "--no-compare": o.compare = false; break;
      case "--worker": o.worker = path.resolve(next()); break;
      case "-h":
      case "--help":
        console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\nimport ")[0]);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option '${a}' (see --help)`);
    }
  }
  if (!["slow", "fast"].includes(o.model)) throw new Error(`--model must be slow or fast, not '${o.model}'`);
  const who = o.worker ? path.basename(o.worker, ".mjs") : o.model;
  o.out ??= path.join(ROOT, "target/profile", `${who}-${o.stream ? `stream${o.chunks}` : "json"}.cpuprofile`);
  return o;
}

// ---------------------------------------------------------------------------------------------
// Names: the wasm name section (function names, and for the wasm-bindgen imports the Rust
// path of the binding they serve), and index.js (runtime.js's exports, minified or not).

function readLeb(buf, pos) {
  let result = 0;
  let shift = 0;
  for (;;) {
    const b = buf[pos++];
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (!(b & 0x80)) return [result, pos];
  }
}

/** Function names from the wasm module's `name` section ([] when it has none). */
function wasmFunctionNames(file) {
  const buf = fs.readFileSync(file);
  let pos = 8;
  const names = [];
  while (pos < buf.length) {
    const id = buf[pos++];
    let size;
    [size, pos] = readLeb(buf, pos);
    const end = pos + size;
    if (id === 0) {
      let nlen;
      let p;
      [nlen, p] = readLeb(buf, pos);
      const secName = buf.toString("utf8", p, p + nlen);
      p += nlen;
      if (secName === "name") {
        while (p < end) {
          const sub = buf[p++];
          let subSize;
          [subSize, p] = readLeb(buf, p);
          const subEnd = p + subSize;
          if (sub === 1) {
            let count;
            [count, p] = readLeb(buf, p);
            for (let k = 0; k < count; k++) {
              let idx;
              let len;
              [idx, p] = readLeb(buf, p);
              [len, p] = readLeb(buf, p);
              names.push([idx, buf.toString("utf8", p, p + len)]);
              p += len;
            }
          }
          p = subEnd;
        }
      }
    }
    pos = end;
  }
  return names;
}

/** Drops Rust's `::h<16 hex>` hash suffix. */
const stripHash = (name) => name.replace(/::h[0-9a-f]{16}$/, "");

/** For each wasm-bindgen shim (`__wbg_<name>_<hash>`), the Rust path of the import it serves
 * (`web_sys::features::gen_Headers::Headers::set`). */
function shimMap(wasmNames) {
  const map = new Map();
  for (const [, name] of wasmNames) {
    const m = name.match(/^(.*)::(__wbg_[A-Za-z0-9_]+?_[0-9a-f]{16})(::h[0-9a-f]{16})?$/);
    if (m) map.set(m[2], m[1]);
  }
  return map;
}

/** index.js: its text, where runtime.js's code lies in it, and its minified export names. */
function glueInfo(file) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) lineStarts.push(i + 1);
  // Unminified, esbuild marks each module with a `// path` comment; minified, the snippet
  // module comes first, before wasm-bindgen's glue (which starts with `__worker_init_state`).
  let streamRange = null;
  const marker = text.match(/^\/\/ .*runtime\.js$/m);
  if (marker) {
    const rest = text.slice(marker.index + marker[0].length);
    const nextMod = rest.search(/^\/\/ \S+\.(m?js|ts)$/m);
    streamRange = [marker.index, nextMod < 0 ? text.length : marker.index + marker[0].length + nextMod];
  } else {
    const initAt = text.indexOf("__worker_init_state");
    if (initAt > 0 && /handOn/.test(text.slice(0, initAt))) streamRange = [0, initAt];
  }
  // Minified: `{call:()=>ue,cancelBody:()=>be,handOn:()=>D,...}`.
  const renamed = new Map();
  for (const m of text.matchAll(/([A-Za-z_$][\w$]*):\(\)=>([A-Za-z_$][\w$]*)/g)) {
    const exported = ["call", "readOn", "respond", "headerLines", "handOn", "cancelBody", "readCapped", "startClock", "stopClock"];
    if (exported.includes(m[1])) renamed.set(m[2], m[1]);
  }
  return {
    text,
    offset: (line, col) => (lineStarts[line] ?? 0) + col,
    inStream: (off) => streamRange !== null && off >= streamRange[0] && off < streamRange[1],
    renamed,
  };
}

// ---------------------------------------------------------------------------------------------
// The analysis.

/** What a call frame is: its kind, a label, and the text the buckets match on. */
function describer(names) {
  const { shims, glue } = names;
  const cache = new Map();
  return (cf) => {
    const key = `${cf.functionName}|${cf.url}|${cf.lineNumber}|${cf.columnNumber}`;
    let d = cache.get(key);
    if (d) return d;
    const fn = cf.functionName;
    const url = cf.url ?? "";
    if (fn === "(idle)") d = { kind: "idle", label: "(idle)" };
    else if (fn === "(garbage collector)") d = { kind: "gc", label: "(garbage collector)" };
    else if (fn === "(program)") d = { kind: "program", label: "(program)" };
    else if (fn === "(root)") d = { kind: "root", label: "(root)" };
    else if (url.startsWith("wasm://")) {
      const name = stripHash(fn.replace(/^\$/, ""));
      d = { kind: "wasm", label: name, match: name };
    } else if (url === "") {
      d = { kind: "native", label: `${fn || "(anonymous)"} [native]`, match: fn };
    } else if (/index\.js$/.test(url)) {
      const off = glue.offset(cf.lineNumber, cf.columnNumber);
      if (glue.inStream(off)) {
        const name = glue.renamed.get(fn) ?? fn;
        const snippet = glue.text.slice(off, off + 48).replace(/\s+/g, " ");
        d = { kind: "stream", label: `runtime.js ${name || "(anonymous)"} @${cf.lineNumber + 1}:${cf.columnNumber + 1} ${JSON.stringify(snippet)}`, match: `runtime.js ${name}` };
      } else if (fn.startsWith("__wbg_")) {
        const rust = shims.get(fn);
        const body = glue.text.slice(off, off + 90).replace(/\s+/g, " ");
        d = { kind: "glue", label: `${fn.replace(/_[0-9a-f]{16}$/, "")} (${rust ? rust.replace(/^web_sys::features::gen_\w+::/, "") : body})`, match: `${fn} ${rust ?? ""} ${body}` };
      } else {
        const snippet = glue.text.slice(off, off + 48).replace(/\s+/g, " ");
        d = { kind: "glue", label: `${fn || "(anonymous)"} index.js:${cf.lineNumber + 1}:${cf.columnNumber + 1} ${JSON.stringify(snippet)}`, match: `${fn} ${snippet}` };
      }
    } else {
      d = { kind: "otherjs", label: `${fn || "(anonymous)"} ${url.split("/").pop()}:${cf.lineNumber + 1}`, match: `${fn} ${url}` };
    }
    cache.set(key, d);
    return d;
  };
}

/** The router's concerns: a sample counts for one when any frame on its stack matches. */
const CONCERNS = [
  ["Rust fetch handler (edge::entry, all below it)", (d) => d.kind === "wasm" && /edge_router::edge::entry::/.test(d.match)],
  ["any wasm on the stack (Rust and all it calls)", (d) => d.kind === "wasm"],
  ["JSON parse (serde::de / serde_json::de)", (d) => d.kind === "wasm" && /serde_json::de|serde::de::|serde_path_to_error|Deserialize|deserialize/.test(d.match)],
  ["JSON serialize (serde::ser / serde_json::ser)", (d) => d.kind === "wasm" && /serde_json::ser|serde::ser::|Serialize|serialize|to_string|to_vec/.test(d.match) && !/Deserialize|deserialize/.test(d.match)],
  ["log line (log_request, console.log)", (d) => (d.kind === "wasm" && /log_request|console_log|console::log/.test(d.match)) || (d.kind === "glue" && /console::log|console\.log|log_1|log_/.test(d.match) && /console/.test(d.match))],
  ["Headers (web_sys Headers, worker::headers)", (d) => (d.kind === "wasm" && /worker::headers::|gen_Headers|add_headers|Headers/.test(d.match)) || (d.kind === "glue" && /gen_Headers|Headers::|new Headers/.test(d.match)) || (d.kind === "glue" && /::headers(::|$| )/.test(d.match))],
  ["Response construction (Response::new*, worker::response)", (d) => (d.kind === "wasm" && /worker::response::|Response::from|Response::ok|Response::error|json_response/.test(d.match)) || (d.kind === "glue" && /gen_Response::Response::new|new Response/.test(d.match))],
  ["runtime.js (call, readOn, respond, handOn, the clock)", (d) => d.kind === "stream"],
  ["Date.now", (d) => (d.kind === "glue" && /Date::now|Date\.now/.test(d.match)) || (d.kind === "wasm" && /now_ms/.test(d.match))],
  ["setTimeout / Delay", (d) => (d.kind === "glue" && /set_timeout|setTimeout|clear_timeout|clearTimeout/.test(d.match)) || (d.kind === "wasm" && /worker::delay::|Delay/.test(d.match))],
  ["AbortController / AbortSignal", (d) => (d.kind === "glue" && /AbortController|AbortSignal|new AbortController/.test(d.match)) || (d.kind === "wasm" && /worker::abort::|AbortController|AbortSignal/.test(d.match))],
  ["subrequest fetch (Fetch::send, fetch_with_request)", (d) => (d.kind === "glue" && /fetch_with|Fetch::|\bfetch\(/.test(d.match)) || (d.kind === "wasm" && /worker::global::Fetch|fetch_with/.test(d.match))],
  ["request body read (read_body / read_capped / arrayBuffer / text)", (d) => (d.kind === "wasm" && /read_body|read_capped|read_stream/.test(d.match)) || (d.kind === "glue" && /array_buffer|arrayBuffer|::text$|::text /.test(d.match))],
  ["classify / route / adapt / config (core)", (d) => d.kind === "wasm" && /edge_router::core::(classify|route|adapt|request|tokens|config)/.test(d.match)],
  ["quota (core::quota, edge::quota)", (d) => d.kind === "wasm" && /edge_router::(core|edge)::quota/.test(d.match)],
  ["auth (sha2)", (d) => d.kind === "wasm" && /sha2::|edge_router::core::auth/.test(d.match)],
  ["wasm-bindgen-futures task queue (microtasks)", (d) => d.kind === "wasm" && /wasm_bindgen_futures|js_sys::futures/.test(d.match)],
];

const ENTRY = { kind: "native", label: "(runtime entry: unnamed native below the root) [native]", match: "" };

/** Aggregates a .cpuprofile: per function (self, total), per leaf kind, per concern. */
function analyze(profile, names) {
  const describe = describer(names);
  const nodes = new Map();
  const parent = new Map();
  for (const n of profile.nodes) {
    nodes.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const { samples, timeDeltas } = profile;
  // A sample lasts until the next one; the last, the mean.
  const total = profile.endTime - profile.startTime;
  const dur = new Float64Array(samples.length);
  for (let i = 0; i < samples.length; i++) dur[i] = i + 1 < samples.length ? timeDeltas[i + 1] : total / samples.length;
  // Per node: its description and the distinct function labels on its stack (root side).
  const stackOf = new Map();
  const stack = (id) => {
    let s = stackOf.get(id);
    if (s) return s;
    const frames = [];
    for (let x = id; x !== undefined; x = parent.get(x)) {
      const cf = nodes.get(x).callFrame;
      // An unnamed native right below the root: the runtime (C++) entering the isolate (an I/O
      // completion, a timer, a promise resolved from C++); its self time is runtime work.
      frames.push(parent.get(x) === profile.nodes[0].id && cf.url === "" && cf.functionName === "" ? ENTRY : describe(cf));
    }
    const labels = [...new Set(frames.map((f) => f.label))];
    // For a native leaf: the nearest JS or wasm frame that called it.
    const caller = frames[0].kind === "native" ? frames.slice(1).find((f) => f.kind !== "native" && f.kind !== "root") : undefined;
    const concerns = CONCERNS.map(([, test]) => frames.some(test));
    s = { leaf: frames[0], labels, concerns, caller };
    stackOf.set(id, s);
    return s;
  };
  const self = new Map();
  const incl = new Map();
  const kinds = {};
  const concernTime = CONCERNS.map(() => 0);
  const nativeByCaller = new Map();
  let busy = 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) {
    const t = dur[i];
    const s = stack(samples[i]);
    sum += t;
    kinds[s.leaf.kind] = (kinds[s.leaf.kind] ?? 0) + t;
    if (s.leaf.kind === "idle") continue;
    busy += t;
    self.set(s.leaf.label, (self.get(s.leaf.label) ?? 0) + t);
    if (s.leaf.kind === "native") {
      const k = `${s.leaf.label}  <-  ${s.caller?.label ?? "(runtime)"}`;
      nativeByCaller.set(k, (nativeByCaller.get(k) ?? 0) + t);
    }
    for (const l of s.labels) if (l !== "(root)") incl.set(l, (incl.get(l) ?? 0) + t);
    s.concerns.forEach((hit, k) => {
      if (hit) concernTime[k] += t;
    });
  }
  const kindOf = new Map();
  for (const s of stackOf.values()) kindOf.set(s.leaf.label, s.leaf.kind);
  return {
    samples: samples.length,
    sampledUs: sum,
    busyUs: busy,
    kinds,
    self: [...self].sort((a, b) => b[1] - a[1]),
    incl: [...incl].sort((a, b) => b[1] - a[1]),
    concerns: CONCERNS.map(([name], k) => [name, concernTime[k]]),
    nativeByCaller: [...nativeByCaller].sort((a, b) => b[1] - a[1]),
    kindOf,
  };
}

const KIND_LABELS = {
  wasm: "wasm (Rust)",
  glue: "JS glue (index.js: wasm-bindgen shims, worker-build wrapper)",
  stream: "JS runtime.js (call, readOn, respond, handOn, the clock)",
  otherjs: "JS, other scripts (runtime internals)",
  native: "runtime natives / V8 builtins called from JS",
  program: "(program): runtime C++ outside JS",
  gc: "(garbage collector)",
  idle: "(idle)",
};

function printReport(a, o, extra = {}) {
  const n = o.requests;
  const us = (t) => (t / n).toFixed(1);
  const pctBusy = (t) => `${((100 * t) / a.busyUs).toFixed(1)} %`;
  const lines = [];
  const p = (s = "") => lines.push(s);
  p(`samples: ${a.samples}, sampled ${(a.sampledUs / 1000).toFixed(0)} ms, busy (not idle) ${(a.busyUs / 1000).toFixed(0)} ms` +
    ` over ${n} requests: ${us(a.busyUs)} µs of the router isolate's CPU per request (profiler on)`);
  p("  (sample durations are wall-clock time of the isolate's thread: on a busy machine they include time it was descheduled)");
  if (extra.workerdCpuMsPerRequest !== undefined) {
    p(`workerd process CPU per request (from /proc: every isolate, the HTTP and I/O): ${extra.workerdCpuMsPerRequest.toFixed(3)} ms profiled, ` +
      `${extra.reqPerSec.toFixed(0)} req/s` +
      (extra.unprofiled
        ? `; unprofiled batch of ${extra.unprofiled.requests}: ${extra.unprofiled.cpuMsPerRequest.toFixed(3)} ms, ${extra.unprofiled.reqPerSec.toFixed(0)} req/s`
        : ""));
  }
  p();
  p("Where the samples' leaf frames are (share of busy time; per request):");
  const kindRows = Object.entries(a.kinds).sort((x, y) => y[1] - x[1]);
  for (const [k, t] of kindRows) {
    const share = k === "idle" ? `${((100 * t) / a.sampledUs).toFixed(1)} % of all` : pctBusy(t);
    p(`  ${(KIND_LABELS[k] ?? k).padEnd(62)} ${share.padStart(16)}  ${us(t).padStart(7)} µs`);
  }
  p();
  p("The router's concerns (inclusive: any frame on the stack matches; overlapping; share of busy time; per request):");
  for (const [name, t] of a.concerns) p(`  ${name.padEnd(70)} ${pctBusy(t).padStart(8)}  ${us(t).padStart(7)} µs`);
  const table = (title, rows, top) => {
    p();
    p(title);
    p(`  ${"self %".padStart(7)} ${"total %".padStart(8)} ${"self µs/req".padStart(11)}  kind     function`);
    const selfOf = new Map(a.self);
    const inclOf = new Map(a.incl);
    for (const [label] of rows.slice(0, top)) {
      const s = selfOf.get(label) ?? 0;
      const t = inclOf.get(label) ?? 0;
      const kind = a.kindOf.get(label) ?? (label.endsWith("[native]") ? "native" : /index\.js|__wbg_|stream\.js/.test(label) ? "js" : "wasm");
      p(`  ${pctBusy(s).padStart(7)} ${pctBusy(t).padStart(8)} ${us(s).padStart(11)}  ${kind.padEnd(8)} ${label.length > 160 ? `${label.slice(0, 157)}...` : label}`);
    }
  };
  table(`Top ${o.topSelf} by self time:`, a.self, o.topSelf);
  table(`Top ${o.topTotal} by total (inclusive) time:`, a.incl, o.topTotal);
  p();
  p("Natives' self time by their nearest JS or wasm caller (top 25):");
  for (const [k, t] of a.nativeByCaller.slice(0, 25)) p(`  ${pctBusy(t).padStart(7)} ${us(t).padStart(8)} µs  ${k.length > 200 ? `${k.slice(0, 197)}...` : k}`);
  console.log(lines.join("\n"));
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// The run: the fake upstream, the router in workerd with its inspector, the load.


const cpuMs = (pids) => pids.map(procStat).filter(Boolean).reduce((s, q) => s + q.ticks, 0) * (1000 / CLK_TCK);

function once(agent, url, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent, headers: { ...headers, "content-length": Buffer.byteLength(body) } }, (res) => {
      const parts = [];
      res.on("data", (c) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode, provider: res.headers["x-router-provider"], text: Buffer.concat(parts).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** `n` requests with `concurrency` in flight; every one must be a complete success served by
 * `provider`. */
async function batch(agent, url, body, headers, n, concurrency, stream, provider) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const r = await once(agent, url, body, headers);
      const complete = stream ? r.text.trimEnd().endsWith("data: [DONE]") : r.text.includes('"choices"');
      if (r.status !== 200 || !complete) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.text.slice(0, 300))}`);
      if (provider && r.provider !== provider) throw new Error(`served by '${r.provider}', not '${provider}'`);
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** A Chrome DevTools Protocol session over the inspector's WebSocket. */
async function cdp(wsUrl) {
  const ws = new WebSocket(wsUrl);
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", () => reject(new Error(`cannot connect to ${wsUrl}`)), { once: true });
  });
  let id = 0;
  const pending = new Map();
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(typeof ev.data === "string" ? ev.data : Buffer.from(ev.data).toString("utf8"));
    if (msg.id !== undefined && pending.has(msg.id)) {
      const { resolve, reject, method } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(`${method}: ${JSON.stringify(msg.error)}`));
      else resolve(msg.result);
    }
  });
  return {
    send(method, params = {}) {
      return new Promise((resolve, reject) => {
        const mid = ++id;
        pending.set(mid, { resolve, reject, method });
        ws.send(JSON.stringify({ id: mid, method, params }));
      });
    },
    close: () => ws.close(),
  };
}

async function run(o, names) {
  const { Miniflare, convertV4MiniflareOptions } = await import("miniflare");
  const cleanups = [];
  try {
    // Lifetime: the fake stops by itself well after a slow run would end.
    const fake = await startFake(o.warmup + o.requests * (o.compare ? 2 : 1) + 50, 15 * 60_000);
    cleanups.push(() => fake.stop());
    const config = routerConfig(fake.origin);
    const before = new Set(workerdPids());
    // The router, or with --worker a plain Worker (the pass-through or the rewriting one) that
    // sends to the fake, for a profile to set beside the router's.
    const loaded = o.worker
      ? {
          modules: [{ type: "ESModule", path: o.worker }],
          modulesRoot: path.dirname(o.worker),
          bindings: { UPSTREAM: fake.origin },
        }
      : {
          modules: [
            { type: "ESModule", path: path.join(o.build, "index.js") },
            { type: "CompiledWasm", path: path.join(o.build, "index_bg.wasm") },
          ],
          modulesRoot: path.dirname(o.build),
          bindings: { ROUTER_CONFIG: config, ...ROUTER_SECRETS },
          durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true }, USAGE: { className: "UsageObject", useSQLite: true } },
        };
    const mf = new Miniflare(
      convertV4MiniflareOptions({
        ...loaded,
        compatibilityDate: "2026-11-01",
        // workerd's inspector, on 127.0.0.1 and a free port.
        inspectorPort: 0,
        handleStructuredLogs: () => {},
      }),
    );
    cleanups.push(() => mf.dispose());
    const url = await mf.ready;
    const pids = workerdPids().filter((q) => !before.has(q));
    const inspector = await mf.getInspectorURL();
    const targets = await (await fetch(`http://${inspector.host}/json/list`)).json();
    // The router is Miniflare's unnamed user worker; `core:entry` is Miniflare's own router.
    const target = targets.find((t) => t.id === "core:user:") ?? targets.find((t) => t.id.startsWith("core:user:"));
    if (!target) throw new Error(`no router target among ${targets.map((t) => t.id).join(", ")}`);

    const provider = o.worker ? null : o.model === "slow" ? "together" : "groq";
    const endpoint = `${url.origin}/v1/chat/completions`;
    const headers = { "content-type": "application/json", authorization: `Bearer ${GATEWAY_KEY}` };
    const body = chatBody(o.model, o.stream, o.stream ? o.chunks : 128);
    const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
    process.stderr.write(`profile: router at ${url.origin}, inspector target ${target.id}; warming up (${o.warmup})\n`);
    await batch(agent, endpoint, body, headers, o.warmup, o.concurrency, o.stream, provider);
    await new Promise((r) => setTimeout(r, 300));
    // The same load without the profiler, for its overhead.
    let unprofiled = null;
    if (o.compare) {
      process.stderr.write(`profile: ${o.requests} requests without the profiler\n`);
      const c0 = cpuMs(pids);
      const s0 = await batch(agent, endpoint, body, headers, o.requests, o.concurrency, o.stream, provider);
      unprofiled = { requests: o.requests, cpuMsPerRequest: (cpuMs(pids) - c0) / o.requests, reqPerSec: o.requests / s0 };
      await new Promise((r) => setTimeout(r, 300));
    }

    const session = await cdp(target.webSocketDebuggerUrl);
    await session.send("Profiler.enable");
    await session.send("Profiler.setSamplingInterval", { interval: o.interval });
    await session.send("Profiler.start");
    const cpuBefore = cpuMs(pids);
    process.stderr.write(`profile: profiling ${o.requests} requests (${o.concurrency} in flight, ${o.interval} µs sampling)\n`);
    const seconds = await batch(agent, endpoint, body, headers, o.requests, o.concurrency, o.stream, provider);
    const cpuAfter = cpuMs(pids);
    const { profile } = await session.send("Profiler.stop");
    session.close();
    agent.destroy();
    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(o.out, JSON.stringify(profile));
    process.stderr.write(`profile: saved ${o.out}\n`);
    return {
      profile,
      extra: { workerdCpuMsPerRequest: (cpuAfter - cpuBefore) / o.requests, reqPerSec: o.requests / seconds, seconds, unprofiled },
    };
  } finally {
    await disposeAll(cleanups);
  }
}

// ---------------------------------------------------------------------------------------------

let exitCode = 0;
try {
  const o = parseArgs(process.argv.slice(2));
  const wasmFile = path.join(o.build, "index_bg.wasm");
  const wasmNames = fs.existsSync(wasmFile) ? wasmFunctionNames(wasmFile) : [];
  if (wasmNames.length === 0) {
    process.stderr.write(`profile: ${wasmFile} has no name section: wasm frames will show as wasm-function[N]\n`);
  }
  const names = { shims: shimMap(wasmNames), glue: glueInfo(path.join(o.build, "index.js")) };
  let profile;
  let extra = {};
  if (o.analyze) {
    profile = JSON.parse(fs.readFileSync(o.analyze, "utf8"));
  } else {
    ({ profile, extra } = await run(o, names));
  }
  console.log(
    `\n${o.analyze ? `profile ${o.analyze}` : `model ${o.model}, ${o.stream ? `streamed (${o.chunks} chunks)` : "non-streamed"}`}, ` +
      `${o.requests} requests, ${o.concurrency} in flight, sampling every ${o.interval} µs (requested)`,
  );
  const a = analyze(profile, names);
  const text = printReport(a, o, extra);
  if (o.json) {
    fs.mkdirSync(path.dirname(o.json), { recursive: true });
    fs.writeFileSync(o.json, JSON.stringify({ options: o, extra, ...a, kindOf: undefined, report: text }, null, 2));
  }
} catch (err) {
  console.error(`profile: ${err.stack ?? err}`);
  exitCode = 1;
}
process.exit(exitCode);
