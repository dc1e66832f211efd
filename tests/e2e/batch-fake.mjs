// A provider's Batch API on 127.0.0.1, in OpenAI's format (as Groq, OpenAI and Together serve
// it): files uploaded as multipart JSONL, batches created, polled (in progress, then completed
// with an output file), cancelled, and their output read. It checks the router's key on every
// call, and records what it received. It stops by itself after `maxRequests` calls or
// `lifetimeMs`.
import http from "node:http";

/**
 * Starts the fake. `key` is the only API key it accepts. Uploads are parsed as they arrive,
 * a line at a time (a 100 MB file is never held whole): `uploads[i]` has the file's `id`,
 * `lines` (the number of request lines), `models` (each model id and its count), `bytes`,
 * and the first `keep` lines themselves (`kept`: custom_id and body). `aborted` counts uploads
 * that never finished (the caller gave up mid-way).
 */
export async function startBatchFake({ key, maxRequests = 200, lifetimeMs = 300_000, keep = 5_000 } = {}) {
  const calls = [];
  const uploads = [];
  const files = new Map();
  const batches = new Map();
  let aborted = 0;
  let seq = 0;
  const now = () => Math.floor(Date.now() / 1000);
  const json = (res, status, body) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const fileObject = (f) => ({
    id: f.id,
    object: "file",
    bytes: f.bytes,
    created_at: f.created_at,
    filename: f.filename,
    purpose: f.purpose,
    status: "processed",
  });

  async function upload(req, res) {
    const boundary = /boundary=("?)([^";]+)\1/.exec(req.headers["content-type"] ?? "")?.[2];
    if (!boundary) return json(res, 400, { error: { message: "not multipart", type: "invalid_request_error" } });
    const parsed = { id: `file-${++seq}`, lines: 0, models: {}, bytes: 0, kept: [], purpose: null, filename: null };
    // The body, read as it comes: parts split at the boundary, the file's lines counted one by one.
    const delimiter = Buffer.from(`\r\n--${boundary}`);
    let pending = Buffer.from("\r\n");
    let part = null;
    let inHeaders = false;
    let lineBuf = "";
    const onLine = (line) => {
      if (!line.trim()) return;
      const request = JSON.parse(line);
      parsed.lines++;
      const model = request.body?.model;
      parsed.models[model] = (parsed.models[model] ?? 0) + 1;
      if (parsed.kept.length < keep) parsed.kept.push({ custom_id: request.custom_id, body: request.body });
    };
    const onContent = (text, last) => {
      if (part === "file") {
        parsed.bytes += Buffer.byteLength(text);
        lineBuf += text;
        const lines = lineBuf.split("\n");
        lineBuf = last ? "" : lines.pop();
        for (const l of lines) onLine(l);
      } else if (part === "purpose") {
        parsed.purpose = (parsed.purpose ?? "") + text;
      }
    };
    let finished = false;
    try {
      for await (const chunk of req) {
        pending = Buffer.concat([pending, chunk]);
        for (;;) {
          if (inHeaders) {
            const end = pending.indexOf("\r\n\r\n");
            if (end < 0) break;
            const headers = pending.subarray(0, end).toString();
            part = /name="([^"]+)"/.exec(headers)?.[1] ?? null;
            parsed.filename ??= /filename="([^"]+)"/.exec(headers)?.[1] ?? null;
            pending = pending.subarray(end + 4);
            inHeaders = false;
            continue;
          }
          const at = pending.indexOf(delimiter);
          if (at < 0) {
            // Keep what may be the start of the delimiter.
            const safe = Math.max(0, pending.length - delimiter.length);
            if (part) onContent(pending.subarray(0, safe).toString(), false);
            pending = pending.subarray(safe);
            break;
          }
          if (part) onContent(pending.subarray(0, at).toString(), true);
          pending = pending.subarray(at + delimiter.length);
          if (pending.subarray(0, 2).toString() === "--") {
            finished = true;
            pending = Buffer.alloc(0);
            break;
          }
          pending = pending.subarray(2);
          inHeaders = true;
          part = null;
        }
      }
    } catch {
      aborted++;
      return;
    }
    if (!finished) {
      aborted++;
      return json(res, 400, { error: { message: "incomplete multipart body", type: "invalid_request_error" } });
    }
    parsed.created_at = now();
    uploads.push(parsed);
    files.set(parsed.id, parsed);
    json(res, 200, fileObject(parsed));
  }

  async function readJson(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    return JSON.parse(Buffer.concat(chunks).toString() || "{}");
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://fake");
    const call = { method: req.method, path: url.pathname, authorization: req.headers.authorization };
    calls.push(call);
    if (calls.length >= maxRequests) server.close();
    req.on("aborted", () => {
      call.aborted = true;
    });
    if (req.headers.authorization !== `Bearer ${key}`) {
      return json(res, 401, { error: { message: "Invalid API Key", type: "invalid_request_error", code: "invalid_api_key" } });
    }
    const p = url.pathname;
    let m;
    if (req.method === "POST" && p === "/v1/files") return upload(req, res);
    if (req.method === "POST" && p === "/v1/batches") {
      const body = await readJson(req);
      if (!files.has(body.input_file_id)) {
        return json(res, 404, { error: { message: `No such File object: ${body.input_file_id}`, type: "invalid_request_error" } });
      }
      const batch = {
        id: `batch_${++seq}`,
        object: "batch",
        endpoint: body.endpoint,
        input_file_id: body.input_file_id,
        completion_window: body.completion_window,
        status: "validating",
        output_file_id: null,
        error_file_id: null,
        created_at: now(),
        request_counts: { total: files.get(body.input_file_id).lines, completed: 0, failed: 0 },
        metadata: body.metadata ?? null,
        polls: 0,
      };
      batches.set(batch.id, batch);
      const { polls, ...shown } = batch;
      return json(res, 200, shown);
    }
    if (req.method === "GET" && (m = /^\/v1\/batches\/([^/]+)$/.exec(p))) {
      const batch = batches.get(m[1]);
      if (!batch) return json(res, 404, { error: { message: "No batch found", type: "invalid_request_error" } });
      batch.polls++;
      if (batch.status !== "cancelling") {
        if (batch.polls === 1) batch.status = "in_progress";
        else if (batch.status !== "completed") {
          const input = files.get(batch.input_file_id);
          const out = {
            id: `file-out-${++seq}`,
            purpose: "batch_output",
            filename: "batch_output.jsonl",
            created_at: now(),
            content: input.kept
              .map((l, i) =>
                JSON.stringify({
                  id: `batch_req_${i}`,
                  custom_id: l.custom_id,
                  response: {
                    status_code: 200,
                    request_id: `req_${i}`,
                    body: {
                      id: `chatcmpl-${i}`,
                      object: "chat.completion",
                      model: l.body.model,
                      choices: [{ index: 0, message: { role: "assistant", content: `answer ${l.custom_id}` }, finish_reason: "stop" }],
                      usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
                    },
                  },
                  error: null,
                }),
              )
              .join("\n") + "\n",
          };
          out.bytes = Buffer.byteLength(out.content);
          files.set(out.id, out);
          batch.status = "completed";
          batch.output_file_id = out.id;
          batch.request_counts.completed = input.lines;
        }
      }
      const { polls, ...shown } = batch;
      return json(res, 200, shown);
    }
    if (req.method === "POST" && (m = /^\/v1\/batches\/([^/]+)\/cancel$/.exec(p))) {
      const batch = batches.get(m[1]);
      if (!batch) return json(res, 404, { error: { message: "No batch found", type: "invalid_request_error" } });
      batch.status = "cancelling";
      const { polls, ...shown } = batch;
      return json(res, 200, shown);
    }
    if (req.method === "GET" && (m = /^\/v1\/files\/([^/]+)\/content$/.exec(p))) {
      const file = files.get(m[1]);
      if (!file?.content) return json(res, 404, { error: { message: "No such file", type: "invalid_request_error" } });
      res.writeHead(200, { "content-type": "application/octet-stream" });
      return res.end(file.content);
    }
    if (req.method === "GET" && (m = /^\/v1\/files\/([^/]+)$/.exec(p))) {
      const file = files.get(m[1]);
      if (!file) return json(res, 404, { error: { message: "No such file", type: "invalid_request_error" } });
      return json(res, 200, fileObject(file));
    }
    json(res, 404, { error: { message: `unknown ${req.method} ${p}`, type: "invalid_request_error" } });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const timer = setTimeout(() => server.close(), lifetimeMs);
  timer.unref();
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    calls,
    uploads,
    get aborted() {
      return aborted;
    },
    close() {
      clearTimeout(timer);
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
