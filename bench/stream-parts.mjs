// What each part of handing a stream on costs in workerd, side by side in one run: five plain
// Workers (no router) each answer 1,500 event streams of 200 small chunks (8 in flight) from a
// fake upstream on 127.0.0.1, and workerd's CPU per stream is read from /proc:
//   pass        the upstream's body returned as it is (a native pump);
//   identity    piped into an IdentityTransformStream first (what lets the router append the
//               interrupted event at the end);
//   teeCancel   teed, the copy cancelled, the other branch piped as in `identity`;
//   teePoll     teed, the copy read as src/edge/runtime.js reads it (whatever it holds at each
//               BYOB read, a read every 20 ms while it trickles, at once once the stream is over);
//   teeAtLeast  teed, the copy read in 16 KiB readAtLeast blocks: cheaper, because it holds the
//               client's branch back, so the client gets the stream in bursts (the bug this
//               replaced).
//
//   node bench/stream-parts.mjs [variants...]     (Node 22 from scripts/env.sh; all by default)
//
// The fake upstream and workerd listen on 127.0.0.1 only; the script stops when done.
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import http from "node:http";
import fs from "node:fs";
import { workerdPids } from "./common.mjs";
const upstream = http.createServer(async (req, res) => {
  res.writeHead(200, { "content-type": "text/event-stream" });
  for (let i = 0; i < 200; i++) res.write(`data: {"i":${i},"pad":"${"x".repeat(60)}"}\n\n`);
  res.end("data: [DONE]\n\n");
});
upstream.keepAliveTimeout = 60000;
await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const up = `http://127.0.0.1:${upstream.address().port}/`;
const common = `
const after = (ms) => new Promise((r) => setTimeout(r, ms));
async function poll(copy, ended) { const reader = copy.getReader({ mode: "byob" }); let buf = new ArrayBuffer(65536); let n = 0;
  for (;;) { const r = await reader.read(new Uint8Array(buf)); if (r.done) return n; n += r.value.byteLength; buf = r.value.buffer; if (r.value.byteLength < 4096) await Promise.race([ended, after(20)]); } }
async function atLeast(copy) { const reader = copy.getReader({ mode: "byob" }); let n = 0;
  for (;;) { const v = new Uint8Array(16384); const r = await reader.readAtLeast(16384, v); if (r.value) n += r.value.byteLength; if (r.done) return n; } }
`;
const variants = {
  pass: `export default { async fetch() { return fetch("${up}"); } }`,
  identity: `export default { async fetch() { const resp = await fetch("${up}"); const { readable, writable } = new IdentityTransformStream(); resp.body.pipeTo(writable); return new Response(readable); } }`,
  teeCancel: `export default { async fetch() { const resp = await fetch("${up}"); const [a, b] = resp.body.tee(); b.cancel(); const { readable, writable } = new IdentityTransformStream(); a.pipeTo(writable); return new Response(readable); } }`,
  teePoll: common + `export default { async fetch(req, env, ctx) { const resp = await fetch("${up}"); const [a, b] = resp.body.tee(); let over; const ended = new Promise(r => over = r); const { readable, writable } = new IdentityTransformStream(); ctx.waitUntil((async () => { const t = poll(b, ended); await a.pipeTo(writable); over(); await t; })()); return new Response(readable); } }`,
  teeAtLeast: common + `export default { async fetch(req, env, ctx) { const resp = await fetch("${up}"); const [a, b] = resp.body.tee(); const { readable, writable } = new IdentityTransformStream(); ctx.waitUntil((async () => { const t = atLeast(b); await a.pipeTo(writable); await t; })()); return new Response(readable); } }`,
};
const ticks = (pid) => { const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return Number(f[11]) + Number(f[12]); };
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const get = (url) => new Promise((resolve, reject) => http.get(url, { agent }, (res) => { let n = 0; res.on("data", (c) => (n += c.length)); res.on("end", () => resolve(n)); }).on("error", reject));
const names = process.argv.length > 2 ? process.argv.slice(2) : Object.keys(variants);
for (const name of names) {
  const before = new Set(workerdPids());
  const mf = new Miniflare(convertV4MiniflareOptions({ modules: true, script: variants[name], compatibilityDate: "2026-11-01" }));
  const url = await mf.ready;
  const pids = workerdPids().filter((p) => !before.has(p));
  for (let i = 0; i < 100; i++) await get(url);
  const t0 = pids.reduce((s, p) => s + ticks(p), 0);
  const N = 1500; let inflight = [];
  const start = Date.now();
  for (let i = 0; i < N; i++) { inflight.push(get(url)); if (inflight.length >= 8) { await Promise.all(inflight); inflight = []; } }
  await Promise.all(inflight);
  await new Promise((r) => setTimeout(r, 300));
  const t1 = pids.reduce((s, p) => s + ticks(p), 0);
  console.log(name, "CPU ms/stream", ((t1 - t0) * 10 / N).toFixed(2), "req/s", (N / ((Date.now() - start) / 1000)).toFixed(0));
  await mf.dispose();
}
upstream.close(); agent.destroy();
