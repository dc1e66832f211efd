// A fake OpenAI-compatible upstream for the overhead benchmark, in a process of its own so that
// it does not share an event loop with the load generator. It answers every POST at once: a
// fixed chat completion, or for `"stream": true` an event stream of as many chunks as the
// request's `max_tokens` (the last with Groq's `x_groq.usage`) and `[DONE]`, both with Groq's
// rate-limit headers. It listens on 127.0.0.1 only, reports its port to the parent over IPC, and
// exits by itself after `maxRequests` requests, after `lifetimeMs`, or when the parent goes away.
//
//   fork("bench/fake-upstream.mjs", [maxRequests, lifetimeMs])
import http from "node:http";
import { RATE_HEADERS } from "./common.mjs";

const maxRequests = Number(process.argv[2] ?? 50_000);
const lifetimeMs = Number(process.argv[3] ?? 600_000);

const COMPLETION = JSON.stringify({
  id: "chatcmpl-bench",
  object: "chat.completion",
  created: 1_795_437_296,
  model: "bench-model",
  choices: [
    {
      index: 0,
      message: { role: "assistant", content: "The churn trend is real: it started before the pricing change." },
      finish_reason: "stop",
    },
  ],
  usage: { prompt_tokens: 61, completion_tokens: 14, total_tokens: 75 },
});

// A streamed answer of `chunks` chunks, one token each, the last with Groq's `x_groq.usage`,
// then `[DONE]`; made once per length.
const streams = new Map();
function stream(chunks) {
  if (streams.has(chunks)) return streams.get(chunks);
  const words = "The churn trend is real and it started well before the pricing change in March .".split(" ");
  const parts = [];
  for (let i = 0; i < chunks; i++) {
    const delta = i === 0 ? { role: "assistant", content: "" } : { content: `${words[i % words.length]} ` };
    const last = i === chunks - 1;
    const chunk = {
      id: "chatcmpl-bench",
      object: "chat.completion.chunk",
      created: 1_795_437_296,
      model: "bench-model",
      choices: [{ index: 0, delta, finish_reason: last ? "stop" : null }],
      ...(last
        ? { x_groq: { id: "req_bench", usage: { prompt_tokens: 61, completion_tokens: chunks, total_tokens: 61 + chunks } } }
        : {}),
    };
    parts.push(`data: ${JSON.stringify(chunk)}\n\n`);
  }
  parts.push("data: [DONE]\n\n");
  streams.set(chunks, parts);
  return parts;
}


let served = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    served++;
    let request = {};
    try {
      request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      // Not JSON: answered like any other request.
    }
    if (request.stream === true) {
      // As many chunks as tokens asked for (the router may rename the field), 2 to 5000.
      const asked = Number(request.max_tokens ?? request.max_completion_tokens) || 20;
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...RATE_HEADERS });
      for (const part of stream(Math.min(5000, Math.max(2, asked)))) res.write(part);
      res.end();
    } else {
      res.writeHead(200, { "content-type": "application/json", ...RATE_HEADERS });
      res.end(COMPLETION);
    }
    if (served >= maxRequests) stop();
  });
});
server.keepAliveTimeout = 30_000;

function stop() {
  server.close();
  server.closeAllConnections();
  process.disconnect?.();
}

server.listen(0, "127.0.0.1", () => {
  process.send?.({ port: server.address().port });
});
setTimeout(stop, lifetimeMs).unref();
process.on("disconnect", () => {
  server.close();
  server.closeAllConnections();
});
