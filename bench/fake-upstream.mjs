// A fake OpenAI-compatible upstream for the overhead benchmark, in a process of its own so that
// it does not share an event loop with the load generator. It answers every POST at once: a
// fixed chat completion, or for `"stream": true` an event stream of 20 chunks and `[DONE]`, with
// Groq's rate-limit headers. It listens on 127.0.0.1 only, reports its port to the parent over
// IPC, and exits by itself after `maxRequests` requests, after `lifetimeMs`, or when the parent
// goes away.
//
//   fork("bench/fake-upstream.mjs", [maxRequests, lifetimeMs])
import http from "node:http";

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

const CHUNKS = 20;
const STREAM = (() => {
  const words = "The churn trend is real and it started well before the pricing change in March .".split(" ");
  const parts = [];
  for (let i = 0; i < CHUNKS; i++) {
    const delta = i === 0 ? { role: "assistant", content: "" } : { content: `${words[i % words.length]} ` };
    const chunk = {
      id: "chatcmpl-bench",
      object: "chat.completion.chunk",
      created: 1_795_437_296,
      model: "bench-model",
      choices: [{ index: 0, delta, finish_reason: i === CHUNKS - 1 ? "stop" : null }],
    };
    parts.push(`data: ${JSON.stringify(chunk)}\n\n`);
  }
  parts.push("data: [DONE]\n\n");
  return parts;
})();

// What Groq sends on every answer (its dialect: requests per day, tokens per minute).
const RATE_HEADERS = {
  "x-ratelimit-limit-requests": "14400",
  "x-ratelimit-remaining-requests": "14370",
  "x-ratelimit-reset-requests": "2m59.56s",
  "x-ratelimit-limit-tokens": "6000",
  "x-ratelimit-remaining-tokens": "5997",
  "x-ratelimit-reset-tokens": "30ms",
};

let served = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    served++;
    const body = Buffer.concat(chunks).toString("utf8");
    if (body.includes('"stream":true')) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...RATE_HEADERS });
      for (const part of STREAM) res.write(part);
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
