// What the benchmarks share: the gateway key they configure, the chat request they send, the
// fake upstream they start (bench/fake-upstream.mjs, in a process of its own), and workerd's
// CPU time read from /proc.
import { execFileSync, fork } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** What Groq sends on every answer (its dialect: requests per day, tokens per minute). */
export const RATE_HEADERS = {
  "x-ratelimit-limit-requests": "14400",
  "x-ratelimit-remaining-requests": "14370",
  "x-ratelimit-reset-requests": "2m59.56s",
  "x-ratelimit-limit-tokens": "6000",
  "x-ratelimit-remaining-tokens": "5997",
  "x-ratelimit-reset-tokens": "30ms",
};

export const GATEWAY_KEY = "sk-bench-gateway-0123456789";
export const GATEWAY_HASH = createHash("sha256").update(GATEWAY_KEY).digest("hex");

/** A typical small chat request (a system prompt, one question, a token limit). */
export function chatBody(model, stream, maxTokens) {
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

/** Starts bench/fake-upstream.mjs, which stops by itself after `maxRequests` requests, after
 * `lifetimeMs`, or when this process goes away. */
export function startFake(maxRequests, lifetimeMs = 600_000) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(HERE, "fake-upstream.mjs"), [String(maxRequests), String(lifetimeMs)], {
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

export const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** `/proc/<pid>/stat`: name, parent pid, and user + system CPU time in clock ticks. */
export function procStat(pid) {
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
export function workerdPids() {
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

/** The router's configuration in the benchmarks, every provider pointing at the fake at
 * `origin`. The slow path: Together, with no tracked limits, so the first key and no quota
 * work at all. The fast path: Groq's dialect and limits on two organizations, raised so far
 * above any load here that leases are always granted (a lease is at most 1/16 of a window's
 * limit), so requests are admitted from the isolate's lease with no call to the bank. */
export function routerConfig(origin) {
  return {
    // BENCH_CHECK_EVENTS=1: every event of a stream checked before it is handed on.
    ...(process.env.BENCH_CHECK_EVENTS === "1" ? { failover: { check_stream_events: true } } : {}),
    providers: {
      together: { base_url: `${origin}/v1`, keys: [{ id: "together-1", secret: "TOGETHER_API_KEY" }] },
      groq: {
        base_url: `${origin}/v1`,
        keys: [
          { id: "groq-1", secret: "GROQ_KEY_1", org: "org-a" },
          { id: "groq-2", secret: "GROQ_KEY_2", org: "org-b" },
        ],
        limits: { "llama-3.1-8b-instant": { rpm: 1_000_000, rpd: 100_000_000, tpm: 1_000_000_000, tpd: 100_000_000_000 } },
      },
    },
    routes: { fast: ["groq/llama-3.1-8b-instant"], slow: ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo"] },
  };
}

/** The secrets `routerConfig` names, as bindings. */
export const ROUTER_SECRETS = {
  GATEWAY_KEY_HASHES: GATEWAY_HASH,
  TOGETHER_API_KEY: "tg-bench-key",
  GROQ_KEY_1: "gsk-bench-key-1",
  GROQ_KEY_2: "gsk-bench-key-2",
};

/** Runs each cleanup, the last added first; one that fails (its process already gone) does not
 * stop the others. */
export async function disposeAll(cleanups) {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch {
      // Already gone.
    }
  }
}

/** Writes `out` as JSON to `file`, making its folder. */
export function writeJson(file, out) {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(out, null, 2));
}
