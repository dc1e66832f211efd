// What the load layer's tests share: a seeded generator, fake upstreams on 127.0.0.1 that answer
// as a test decides and count what they answered, the answers' shapes, and the accounting of
// every upstream call against what the clients saw.
import assert from "node:assert/strict";
import http from "node:http";

/** A small deterministic generator, so that a run's faults can be replayed. */
export function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

export const completion = (who) =>
  JSON.stringify({
    id: `chatcmpl-${who}`,
    object: "chat.completion",
    model: who,
    choices: [{ index: 0, message: { role: "assistant", content: '{"ok":true}' }, finish_reason: "stop" }],
    usage: { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 },
  });
export const chunk = (text) => `data: ${JSON.stringify({ id: "s", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: text } }] })}\n\n`;

/**
 * A fake upstream whose answer comes from `decide(call)`: `{label, status, headers, body}` with
 * body a string or an array of chunks; `hang`, `cut`, `delayMs` as faults. Counts each answer by
 * its label, and the calls the router abandoned before their end (by label). Closes by itself
 * after `limit` calls or when the test ends.
 */
export async function fake(name, decide, limit) {
  const stats = { name, calls: 0, answers: {}, abandoned: {} };
  const count = (m, what) => (m[what] = (m[what] ?? 0) + 1);
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on("data", (c) => parts.push(c));
    req.on("end", async () => {
      stats.calls += 1;
      if (stats.calls >= limit) server.close();
      const call = { headers: req.headers, body: JSON.parse(Buffer.concat(parts).toString("utf8")) };
      const a = decide(call);
      count(stats.answers, a.label);
      res.on("close", () => {
        if (!res.writableFinished) count(stats.abandoned, a.label);
      });
      if (a.hang) return; // the router's attempt timeout aborts it
      if (a.delayMs) await new Promise((r) => setTimeout(r, a.delayMs));
      if (res.destroyed) return;
      res.writeHead(a.status, a.headers ?? {});
      if (Array.isArray(a.body)) {
        for (const part of a.body) {
          if (res.destroyed) return;
          res.write(part);
          await new Promise((r) => setTimeout(r, 2));
        }
        if (a.cut) res.socket?.destroy();
        else res.end();
      } else {
        res.end(a.body ?? "");
      }
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const timer = setTimeout(() => server.close(), 10 * 60_000);
  timer.unref();
  return {
    stats,
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    close() {
      clearTimeout(timer);
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

export const json = (label, status, body, headers = {}) => ({ label, status, headers: { "content-type": "application/json", ...headers }, body });
export const events = (label, body, extra = {}) => ({ label, status: 200, headers: { "content-type": "text/event-stream" }, body, ...extra });

/** `provider/model=outcome, ...` (models hold slashes, outcomes do not). */
export function failedAttempts(header) {
  if (!header) return [];
  return header.split(", ").map((a) => ({ provider: a.slice(0, a.indexOf("/")), outcome: a.slice(a.lastIndexOf("=") + 1) }));
}

/**
 * The attempt a hedge made the router give up (`x-router-hedged: after=..ms; won=first|hedge`):
 * one call of the provider that served (a hedge stays with its provider), with the outcome
 * `cancelled`; none when nothing was hedged or neither attempt answered (both are then in
 * x-router-failover).
 */
export function cancelledAttempts(hedged, provider) {
  if (!hedged || !provider || hedged.endsWith("won=neither")) return [];
  return [{ provider, outcome: "cancelled" }];
}

export const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/**
 * Every call each fake received, as the clients saw it (`served`, or the outcome named in
 * x-router-failover), against what the fake says it answered, mapped through `outcomeOf`
 * (provider -> label -> outcome). An answer a fake gave at once can still reach the router after
 * its attempt timeout if the machine stalls: the router then rightly reports a timeout and goes
 * on. Such a stall moves one call from its category to `timeout` and nothing else (`stalls`).
 */
export function accountCalls(results, fakes, outcomeOf) {
  const seen = Object.fromEntries(Object.keys(fakes).map((p) => [p, {}]));
  const tally = (m, k) => (m[k] = (m[k] ?? 0) + 1);
  for (const r of results) {
    if (r.status === 200 && r.provider) tally(seen[r.provider] ?? (seen[r.provider] = {}), "served");
    for (const f of r.failed) tally(seen[f.provider] ?? (seen[f.provider] = {}), f.outcome);
  }
  const expected = Object.fromEntries(
    Object.entries(fakes).map(([p, f]) => [p, Object.entries(f.stats.answers).reduce((m, [label, n]) => ((m[outcomeOf[p][label] ?? label] = (m[outcomeOf[p][label] ?? label] ?? 0) + n), m), {})]),
  );
  const stalls = Object.fromEntries(Object.keys(fakes).map((p) => [p, (seen[p].timeout ?? 0) - (expected[p].timeout ?? 0)]));
  return { seen, expected, stalls };
}

/**
 * Asserts [accountCalls]' result: every call a fake received was handed on to exactly one client
 * or named as a failed attempt with the outcome its fault calls for (no answer dropped, none
 * handed on twice, no fault misread), exactly but for machine stalls, each of which turns one
 * call of another category into a timeout, and for hedges: an attempt cancelled because the
 * other answered first is an answer of the fake's (often a hang) that no client saw, or a call
 * that never reached the fake.
 */
export function assertAccounted(fakes, { seen, expected, stalls }) {
  for (const p of Object.keys(fakes)) {
    const cancelled = seen[p].cancelled ?? 0;
    if (cancelled === 0 && stalls[p] === 0) {
      assert.deepEqual(seen[p], expected[p], `${p}: every call accounted for, as clients saw it`);
      continue;
    }
    if (cancelled === 0) assert.ok(stalls[p] > 0, `${p}: fewer timeouts (${seen[p].timeout ?? 0}) than hangs (${expected[p].timeout ?? 0})`);
    // The calls of each other category that no client saw as what the fake gave.
    let moved = 0;
    for (const c of new Set([...Object.keys(seen[p]), ...Object.keys(expected[p])])) {
      if (c === "timeout" || c === "cancelled") continue;
      assert.ok((seen[p][c] ?? 0) <= (expected[p][c] ?? 0), `${p}: more ${c} seen (${seen[p][c]}) than the fake gave (${expected[p][c] ?? 0})`);
      moved += (expected[p][c] ?? 0) - (seen[p][c] ?? 0);
    }
    if (cancelled === 0) {
      assert.equal(moved, stalls[p], `${p}: every call accounted for, as clients saw it, but for ${stalls[p]} that came too late`);
      continue;
    }
    const unseen = moved - stalls[p];
    assert.ok(unseen >= 0 && unseen <= cancelled, `${p}: ${unseen} of the fake's answers seen by no client, for ${cancelled} attempts cancelled by hedges`);
  }
}
