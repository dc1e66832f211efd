// Two fake providers on 127.0.0.1 for the Responses API tests, answering the same questions the
// same way, each in its own protocol:
// - a native one, serving `POST /v1/responses` as OpenAI does: Response objects, and for
//   `stream: true` the typed event stream (response.created ... response.completed);
// - a chat-only one, serving `POST /v1/chat/completions`: chat completions, and `data:` chunk
//   streams ending with `data: [DONE]` (usage in a last chunk when asked, tool calls split over
//   several chunks).
// What they answer depends on the request ([decide]): a tool result in the last turn is quoted
// back; a function tool with a question about the weather is called; a JSON schema format gets
// a JSON object matching it; anything else gets [TEXT]. Both record every request (path,
// headers, parsed body), can fail the next requests with a status or cut a stream after its
// first chunks, and stop by themselves after `maxRequests` calls or `lifetimeMs`. Each call
// keeps what the fake sent back (`sent`: the JSON text, or the stream's chunks), so that a
// passthrough can be checked byte for byte.
import { after, before, beforeEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { GATEWAY_HASH, startRouter } from "./harness.mjs";

/** The plain answer, and how a stream splits it. */
export const TEXT = "Hello from the fake model.";
export const TEXT_DELTAS = ["Hello", " from", " the", " fake", " model."];
/** The call both fakes make for a weather question. */
export const CALL_ID = "call_weather_0001";
/** A function tool in the Responses API's shape; both fakes call it for a weather question. */
export const WEATHER_TOOL = {
  type: "function",
  name: "get_weather",
  description: "The current weather in a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  },
  strict: true,
};

/** A schema for structured-output tests; both fakes answer it with [exampleOf]. */
export const PERSON_SCHEMA = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer" }, tags: { type: "array", items: { type: "string" } } },
  required: ["name", "age", "tags"],
  additionalProperties: false,
};

/** An output limit below this cuts the answer short: `[TEXT_DELTAS[0]]`, incomplete. */
export const SHORT_LIMIT = 5;

/** What both fakes report, so that a translated answer can be compared with a native one. */
export const USAGE = { input_tokens: 11, output_tokens: 7, total_tokens: 18 };

/**
 * What a model would say to a conversation, in neutral terms: `{kind: "text", text, deltas}` or
 * `{kind: "call", name, callId, arguments, deltas}`. `turn` holds `lastUser` (the text of the
 * last user turn), `toolResult` (the output of a tool result that ends the conversation, else
 * null), `functions` (names of the function tools offered) and `format` (`{type, schema}` or
 * null).
 */
export function decide({ lastUser, toolResult, functions, format, limit }) {
  if (limit != null && limit < SHORT_LIMIT) {
    return { kind: "text", text: TEXT_DELTAS[0], deltas: [TEXT_DELTAS[0]], incomplete: true };
  }
  if (toolResult != null) {
    const text = `The tool said: ${toolResult}`;
    return { kind: "text", text, deltas: splitIn(text, 3) };
  }
  const city = /weather\b.*?\bin ([A-Z][a-z]+)/i.exec(lastUser ?? "")?.[1];
  if (functions.length > 0 && city) {
    const args = JSON.stringify({ city });
    return { kind: "call", name: functions[0], callId: CALL_ID, arguments: args, deltas: splitIn(args, 3) };
  }
  if (format?.type === "json_schema") {
    const text = JSON.stringify(exampleOf(format.schema ?? {}, "value"));
    return { kind: "text", text, deltas: splitIn(text, 4) };
  }
  if (format?.type === "json_object") {
    const text = JSON.stringify({ answer: TEXT });
    return { kind: "text", text, deltas: splitIn(text, 4) };
  }
  return { kind: "text", text: TEXT, deltas: TEXT_DELTAS };
}

/** A value that satisfies `schema` (the JSON Schema subset structured outputs accept). */
export function exampleOf(schema, key) {
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if ("const" in schema) return schema.const;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (schema.anyOf) return exampleOf(schema.anyOf[0], key);
  switch (type) {
    case "object":
      return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([k, s]) => [k, exampleOf(s, k)]));
    case "array":
      return [exampleOf(schema.items ?? {}, key)];
    case "integer":
      return 42;
    case "number":
      return 4.5;
    case "boolean":
      return true;
    case "null":
      return null;
    default:
      return `${key} example`;
  }
}

function splitIn(text, n) {
  const size = Math.ceil(text.length / n);
  const parts = [];
  for (let i = 0; i < text.length; i += size) parts.push(text.slice(i, i + size));
  return parts;
}

/** The text of a message's content: a string, or parts with `text`. */
function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p?.text === "string" ? p.text : "")).join("");
  return "";
}

/** A Responses API request in the neutral terms of [decide]. */
export function turnOfResponses(body) {
  const items = typeof body.input === "string" ? [{ role: "user", content: body.input }] : (body.input ?? []);
  const last = items.at(-1);
  const users = items.filter((i) => (i.type ?? "message") === "message" && i.role === "user");
  const format = body.text?.format;
  return {
    lastUser: textOf(users.at(-1)?.content),
    toolResult: last?.type === "function_call_output" ? textOf(last.output) : null,
    functions: (body.tools ?? []).filter((t) => t.type === "function").map((t) => t.name),
    format: format && format.type !== "text" ? format : null,
    limit: body.max_output_tokens ?? null,
  };
}

/** A chat completions request in the neutral terms of [decide]. */
export function turnOfChat(body) {
  const messages = body.messages ?? [];
  const last = messages.at(-1);
  const rf = body.response_format;
  return {
    lastUser: textOf(messages.filter((m) => m.role === "user").at(-1)?.content),
    toolResult: last?.role === "tool" ? textOf(last.content) : null,
    functions: (body.tools ?? []).filter((t) => t.type === "function").map((t) => t.function?.name),
    format: rf?.type === "json_schema" ? { type: "json_schema", schema: rf.json_schema?.schema } : rf?.type === "json_object" ? rf : null,
    limit: body.max_completion_tokens ?? body.max_tokens ?? null,
  };
}

/**
 * The server both fakes share: records each call, applies the fault set with `failNext` or
 * `cutStreams`, and hands the rest to `serve(call, out)`, where `out` writes a JSON answer or
 * an event stream (`out.stream(chunks)`, cut after its first chunks when asked).
 */
async function startServer({ path: servedPath, key, maxRequests, lifetimeMs, serve }) {
  const calls = [];
  let failures = [];
  let cut = 0;
  let truncate = 0;
  let held = null;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        body = null;
      }
      const call = { method: req.method, path: req.url, headers: req.headers, raw, body, aborted: false, sent: null, cut: false, truncated: false };
      calls.push(call);
      if (calls.length >= maxRequests) server.close();
      res.on("close", () => {
        if (!res.writableFinished) call.aborted = true;
      });
      const json = (status, value, headers = {}) => {
        res.writeHead(status, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(value));
      };
      if (key && req.headers.authorization !== `Bearer ${key}`) {
        return json(401, { error: { message: "Invalid API key", type: "invalid_request_error", param: null, code: "invalid_api_key" } });
      }
      if (req.method !== "POST" || req.url !== servedPath) {
        return json(404, { error: { message: `No route ${req.method} ${req.url}`, type: "invalid_request_error", param: null, code: "unknown_url" } });
      }
      if (!body || typeof body !== "object") {
        return json(400, { error: { message: "We could not parse the JSON body of your request.", type: "invalid_request_error", param: null, code: null } });
      }
      const failure = failures.shift();
      if (failure) {
        return json(failure.status, {
          error: { message: failure.message ?? `The fake is failing with ${failure.status}`, type: "server_error", param: null, code: null },
        }, failure.headers);
      }
      const out = {
        json: (value) => {
          call.sent = [JSON.stringify(value)];
          json(200, value);
        },
        async stream(events) {
          res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
          call.sent = [];
          for (const [i, event] of events.entries()) {
            if (held && i === (held.before + events.length) % events.length) {
              // Held until the test saw what came before (or the gate's own time runs out).
              await held.gate.part("")();
            }
            res.write(event);
            call.sent.push(event);
            if (cut && i === cut - 1) {
              // Long enough for what was sent to reach the client before the cut.
              await new Promise((r) => setTimeout(r, 100));
              call.cut = true;
              res.socket?.destroy();
              return;
            }
            if (truncate && i === truncate - 1) {
              call.truncated = true;
              break;
            }
            await new Promise((r) => setTimeout(r, 5));
          }
          res.end();
        },
      };
      serve(call, out);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const timer = setTimeout(() => {
    server.closeAllConnections();
    server.close();
  }, lifetimeMs);
  timer.unref();
  const { port } = server.address();
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    calls,
    /** The parsed bodies of the calls received so far. */
    bodies: () => calls.map((c) => c.body),
    /** The next `times` requests get `status` (with an OpenAI-format error body). */
    failNext(status, times = 1, headers = {}) {
      for (let i = 0; i < times; i++) failures.push({ status, headers });
    },
    /**
     * From now on (until `reset`), every stream is cut after its first `afterChunks` chunks
     * (events, for the native fake); each call records what was sent in `sent` and `cut`.
     */
    cutStreams(afterChunks = 1) {
      cut = afterChunks;
    },
    /**
     * From now on (until `reset`), every stream ends cleanly after its first `afterChunks`
     * chunks, without its closing event (`response.completed`, `data: [DONE]`).
     */
    truncateStreams(afterChunks) {
      truncate = afterChunks;
    },
    /**
     * From now on (until `reset`), a stream's chunk `before` (negative: counted from the end,
     * -1 the last) waits for `gate` (harness.mjs [gate]) to open; `gate.openedInTime` then says
     * whether the client had everything sent before it while the fake still held that chunk.
     */
    gateStreams(gate, before = -1) {
      held = { gate, before };
    },
    /** Forgets the calls and the faults. */
    reset() {
      calls.length = 0;
      failures = [];
      cut = 0;
      truncate = 0;
      held = null;
    },
    close() {
      clearTimeout(timer);
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const sse = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/**
 * The native Responses provider. `key`, if given, is the only API key it accepts. Ids are
 * numbered per fake (`resp_fake_1`, `msg_fake_1`, `fc_fake_1`), so each answer has its own.
 */
export async function startNativeResponsesFake({ key, maxRequests = 200, lifetimeMs = 300_000 } = {}) {
  let n = 0;
  return startServer({
    path: "/v1/responses",
    key,
    maxRequests,
    lifetimeMs,
    serve(call, out) {
      const req = call.body;
      const id = ++n;
      const answer = decide(turnOfResponses(req));
      const createdAt = Math.floor(Date.now() / 1000);
      const final = answer.incomplete ? "incomplete" : "completed";
      const item =
        answer.kind === "text"
          ? {
              id: `msg_fake_${id}`,
              type: "message",
              status: final,
              role: "assistant",
              content: [{ type: "output_text", annotations: [], logprobs: [], text: answer.text }],
            }
          : {
              id: `fc_fake_${id}`,
              type: "function_call",
              status: "completed",
              arguments: answer.arguments,
              call_id: answer.callId,
              name: answer.name,
            };
      const response = (status, output, usage) => ({
        id: `resp_fake_${id}`,
        object: "response",
        created_at: createdAt,
        status,
        background: false,
        completed_at: status === "completed" ? createdAt : null,
        error: null,
        incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
        instructions: req.instructions ?? null,
        max_output_tokens: req.max_output_tokens ?? null,
        max_tool_calls: null,
        model: req.model,
        output,
        parallel_tool_calls: req.parallel_tool_calls ?? true,
        previous_response_id: null,
        reasoning: { effort: req.reasoning?.effort ?? null, summary: null },
        service_tier: "default",
        store: req.store ?? false,
        temperature: req.temperature ?? 1,
        text: { format: req.text?.format ?? { type: "text" }, verbosity: "medium" },
        tool_choice: req.tool_choice ?? "auto",
        tools: req.tools ?? [],
        top_p: req.top_p ?? 1,
        truncation: "disabled",
        usage,
        user: null,
        metadata: req.metadata ?? {},
      });
      const usage = {
        input_tokens: USAGE.input_tokens,
        input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
        output_tokens: USAGE.output_tokens,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: USAGE.total_tokens,
      };
      if (!req.stream) return out.json(response(final, [item], usage));

      let seq = 0;
      const ev = (type, data) => sse(type, { ...data, sequence_number: seq++ });
      const events = [
        ev("response.created", { response: response("in_progress", [], null) }),
        ev("response.in_progress", { response: response("in_progress", [], null) }),
      ];
      if (answer.kind === "text") {
        const open = { ...item, status: "in_progress", content: [] };
        const part = { type: "output_text", annotations: [], logprobs: [], text: "" };
        const at = { item_id: item.id, output_index: 0, content_index: 0 };
        events.push(ev("response.output_item.added", { output_index: 0, item: open }));
        events.push(ev("response.content_part.added", { ...at, part }));
        for (const delta of answer.deltas) events.push(ev("response.output_text.delta", { ...at, delta, logprobs: [] }));
        events.push(ev("response.output_text.done", { ...at, text: answer.text, logprobs: [] }));
        events.push(ev("response.content_part.done", { ...at, part: { ...part, text: answer.text } }));
      } else {
        const at = { item_id: item.id, output_index: 0 };
        events.push(ev("response.output_item.added", { output_index: 0, item: { ...item, status: "in_progress", arguments: "" } }));
        for (const delta of answer.deltas) events.push(ev("response.function_call_arguments.delta", { ...at, delta }));
        events.push(ev("response.function_call_arguments.done", { ...at, arguments: answer.arguments }));
      }
      events.push(ev("response.output_item.done", { output_index: 0, item }));
      events.push(ev(`response.${final}`, { response: response(final, [item], usage) }));
      return out.stream(events);
    },
  });
}

/** The chat-completions-only provider. `key`, if given, is the only API key it accepts. */
export async function startChatOnlyFake({ key, maxRequests = 200, lifetimeMs = 300_000 } = {}) {
  let n = 0;
  return startServer({
    path: "/v1/chat/completions",
    key,
    maxRequests,
    lifetimeMs,
    serve(call, out) {
      const req = call.body;
      const id = `chatcmpl-fake-${++n}`;
      const created = Math.floor(Date.now() / 1000);
      const answer = decide(turnOfChat(req));
      const usage = {
        prompt_tokens: USAGE.input_tokens,
        completion_tokens: USAGE.output_tokens,
        total_tokens: USAGE.total_tokens,
      };
      const finish = answer.incomplete ? "length" : answer.kind === "text" ? "stop" : "tool_calls";
      if (!req.stream) {
        const message =
          answer.kind === "text"
            ? { role: "assistant", content: answer.text, refusal: null }
            : {
                role: "assistant",
                content: null,
                refusal: null,
                tool_calls: [{ id: answer.callId, type: "function", function: { name: answer.name, arguments: answer.arguments } }],
              };
        return out.json({
          id,
          object: "chat.completion",
          created,
          model: req.model,
          choices: [{ index: 0, message, logprobs: null, finish_reason: finish }],
          usage,
          system_fingerprint: null,
        });
      }
      const chunk = (choices, extra = {}) =>
        `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: req.model, system_fingerprint: null, choices, ...extra })}\n\n`;
      const delta = (d, finishReason = null) => chunk([{ index: 0, delta: d, logprobs: null, finish_reason: finishReason }]);
      const events = [];
      if (answer.kind === "text") {
        events.push(delta({ role: "assistant", content: "", refusal: null }));
        for (const d of answer.deltas) events.push(delta({ content: d }));
      } else {
        events.push(delta({ role: "assistant", content: null, refusal: null }));
        events.push(
          delta({ tool_calls: [{ index: 0, id: answer.callId, type: "function", function: { name: answer.name, arguments: "" } }] }),
        );
        for (const d of answer.deltas) events.push(delta({ tool_calls: [{ index: 0, function: { arguments: d } }] }));
      }
      events.push(delta({}, finish));
      // As OpenAI does: usage only when asked for, in a last chunk without choices.
      if (req.stream_options?.include_usage) events.push(chunk([], { usage }));
      events.push("data: [DONE]\n\n");
      return out.stream(events);
    },
  });
}

/**
 * Both fakes for a test file: started before its tests (each taking up to `maxRequests`), their
 * calls forgotten before each test, closed after. `native` and `chat` are set once started.
 */
export function bothFakes(maxRequests) {
  const fakes = { native: null, chat: null };
  before(async () => {
    fakes.native = await startNativeResponsesFake({ key: NATIVE_KEY, maxRequests });
    fakes.chat = await startChatOnlyFake({ key: CHAT_KEY, maxRequests });
  });
  after(async () => {
    await fakes.native?.close();
    await fakes.chat?.close();
  });
  beforeEach(() => {
    fakes.native.reset();
    fakes.chat.reset();
  });
  return fakes;
}

/**
 * An event stream's text as its events: `{event, data}` per block (`data` parsed from JSON when
 * it is JSON, else the text). `complete` says whether the text ended at a block's end.
 */
export function parseEvents(text) {
  const blocks = text.split("\n\n");
  const complete = blocks.at(-1) === "";
  if (complete) blocks.pop();
  const events = blocks.map((block) => {
    let event = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    const joined = data.join("\n");
    let parsed = joined;
    try {
      parsed = JSON.parse(joined);
    } catch {}
    return { event, data: parsed };
  });
  return { events, complete };
}

/**
 * Checks a complete Responses event stream against the order the SDKs rely on, and returns what
 * it carried: `items` (each output item as done), `textDeltas`, `argumentDeltas` and the
 * completed `response`. Every event is `event: <type>` with a data object of that type, the
 * sequence numbers run 0, 1, 2, ...; the stream opens with response.created and
 * response.in_progress; each output item is added, filled (a message: one output_text part,
 * its deltas and their done events; a function call: its arguments' deltas and done) and done,
 * every event naming the item's id and index; response.completed closes it with the items done
 * and the usage.
 */
export function checkResponsesStream({ events, complete }) {
  assert.ok(complete, "the stream ends at the end of an event");
  assert.ok(events.length >= 3, `too few events: ${JSON.stringify(events)}`);
  for (const [i, { event, data }] of events.entries()) {
    assert.equal(typeof data, "object", `event ${i} carries a JSON object: ${JSON.stringify(data)}`);
    assert.equal(event, data.type, `event ${i}: the event line names the data's type`);
    assert.equal(data.sequence_number, i, `event ${i} (${data.type}) has sequence_number ${i}`);
  }
  const list = events.map((e) => e.data);
  let at = 0;
  const next = (type) => {
    const e = list[at];
    assert.equal(e?.type, type, `event ${at}: expected ${type}, got ${e?.type} (types: ${list.map((x) => x.type).join(", ")})`);
    at++;
    return e;
  };
  const created = next("response.created");
  assert.equal(created.response.object, "response");
  assert.equal(created.response.status, "in_progress");
  const responseId = created.response.id;
  assert.equal(next("response.in_progress").response.id, responseId);
  const items = [];
  const textDeltas = [];
  const argumentDeltas = [];
  while (list[at]?.type === "response.output_item.added") {
    const index = items.length;
    const added = next("response.output_item.added");
    assert.equal(added.output_index, index);
    const { id } = added.item;
    assert.ok(typeof id === "string" && id.length > 0, "an output item has an id");
    const ofItem = (e) => {
      assert.equal(e.item_id, id, `${e.type} names its item`);
      assert.equal(e.output_index, index, `${e.type} names its output index`);
      return e;
    };
    if (added.item.type === "message") {
      assert.equal(added.item.role, "assistant");
      assert.deepEqual(added.item.content, []);
      const part = ofItem(next("response.content_part.added"));
      assert.equal(part.content_index, 0);
      assert.equal(part.part.type, "output_text");
      assert.equal(part.part.text, "");
      let text = "";
      while (list[at]?.type === "response.output_text.delta") {
        const d = ofItem(next("response.output_text.delta"));
        assert.equal(d.content_index, 0);
        textDeltas.push(d.delta);
        text += d.delta;
      }
      assert.ok(textDeltas.length > 0, "at least one text delta");
      assert.equal(ofItem(next("response.output_text.done")).text, text);
      const partDone = ofItem(next("response.content_part.done"));
      assert.equal(partDone.part.type, "output_text");
      assert.equal(partDone.part.text, text);
      const done = next("response.output_item.done");
      assert.equal(done.output_index, index);
      assert.equal(done.item.id, id);
      assert.equal(done.item.type, "message");
      assert.equal(done.item.status, "completed");
      assert.deepEqual(
        done.item.content.map((c) => [c.type, c.text]),
        [["output_text", text]],
      );
      items.push(done.item);
    } else if (added.item.type === "function_call") {
      const { call_id: callId, name } = added.item;
      assert.ok(typeof callId === "string" && callId.length > 0, "a function call has a call_id");
      assert.ok(typeof name === "string" && name.length > 0, "a function call has a name");
      let args = "";
      while (list[at]?.type === "response.function_call_arguments.delta") {
        const d = ofItem(next("response.function_call_arguments.delta"));
        argumentDeltas.push(d.delta);
        args += d.delta;
      }
      assert.ok(argumentDeltas.length > 0, "at least one arguments delta");
      assert.equal(ofItem(next("response.function_call_arguments.done")).arguments, args);
      const done = next("response.output_item.done");
      assert.equal(done.output_index, index);
      assert.equal(done.item.id, id);
      assert.equal(done.item.type, "function_call");
      assert.equal(done.item.status, "completed");
      assert.equal(done.item.call_id, callId);
      assert.equal(done.item.name, name);
      assert.equal(done.item.arguments, args);
      items.push(done.item);
    } else {
      assert.fail(`an output item of an unexpected type: ${added.item.type}`);
    }
  }
  assert.ok(items.length > 0, "at least one output item");
  const completed = next("response.completed");
  assert.equal(at, list.length, "response.completed is the last event");
  const response = completed.response;
  assert.equal(response.id, responseId);
  assert.equal(response.object, "response");
  assert.equal(response.status, "completed");
  assert.deepEqual(response.output, items);
  for (const k of ["input_tokens", "output_tokens", "total_tokens"]) {
    assert.equal(typeof response.usage?.[k], "number", `usage.${k} in response.completed`);
  }
  return { items, textDeltas, argumentDeltas, response };
}

/** The API keys the routers hold for the two fakes. */
export const NATIVE_KEY = "sk-native-responses-5150";
export const CHAT_KEY = "sk-chat-only-provider-6160";

/** The model ids behind each route, for each kind of provider. */
export const MODELS = {
  native: { fast: "gpt-4.1-mini", slow: "gpt-4.1", limited: "gpt-limited" },
  chat: { fast: "llama-3.1-8b-instant", slow: "llama-3.3-70b-versatile", limited: "llama-limited" },
};

/** The provider entries: `openai` serves the Responses API natively, `chatonly` does not. */
function providers({ native, chat }, { chatFields = {}, nativeFields = {} } = {}) {
  return {
    ...(native && {
      openai: {
        base_url: native.baseUrl,
        keys: [{ id: "openai-1", secret: "OPENAI_K" }],
        capabilities: ["chat", "streaming", "tools", "json_schema", "vision", "responses"],
        limits: { [MODELS.native.limited]: { rpm: 2, rpd: 1_000, tpm: 1_000_000, tpd: 10_000_000 } },
        ...nativeFields,
      },
    }),
    ...(chat && {
      chatonly: {
        base_url: chat.baseUrl,
        keys: [{ id: "chat-1", secret: "CHAT_K" }],
        // The Responses API's image parts need "vision"; nothing here serves `responses`.
        capabilities: ["chat", "streaming", "tools", "json_schema", "vision"],
        limits: { [MODELS.chat.limited]: { rpm: 2, rpd: 1_000, tpm: 1_000_000, tpd: 10_000_000 } },
        ...chatFields,
      },
    }),
  };
}

/**
 * A router in front of the fakes. `kind`:
 * - "native": only the native fake (`openai`), on routes fast, slow and limited (2 a minute);
 * - "chat": only the chat-only fake (`chatonly`), on the same routes;
 * - "mixed": both, the native first on `fast`, the chat-only first on `slow`; here `chatonly`
 *   reads `max_completion_tokens` and `openai` may receive `store` and `metadata`.
 * `fakes` is `{native, chat}`; the router's clock is the test's (`advance`, `toNextMinute`).
 */
export async function startResponsesRouter(kind, fakes) {
  const { native, chat } = fakes;
  let config;
  if (kind === "native" || kind === "chat") {
    const m = MODELS[kind];
    const p = kind === "native" ? "openai" : "chatonly";
    config = {
      providers: providers(kind === "native" ? { native } : { chat }),
      routes: { fast: [`${p}/${m.fast}`], slow: [`${p}/${m.slow}`], limited: [`${p}/${m.limited}`] },
    };
  } else if (kind === "mixed") {
    config = {
      failover: { breaker_failures: 1_000 },
      providers: providers(fakes, {
        chatFields: { max_tokens_field: "max_completion_tokens" },
        // The operator's leave for what the provider keeps for the router's key.
        nativeFields: {
          pass_fields: ["store", "metadata", "previous_response_id", "conversation", "prompt", "background", "builtin_tools"],
        },
      }),
      routes: {
        fast: [`openai/${MODELS.native.fast}`, `chatonly/${MODELS.chat.fast}`],
        slow: [`chatonly/${MODELS.chat.slow}`, `openai/${MODELS.native.slow}`],
      },
    };
  } else {
    throw new TypeError(`kind: native, chat or mixed, not ${kind}`);
  }
  return startRouter(
    { ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: GATEWAY_HASH, OPENAI_K: NATIVE_KEY, CHAT_K: CHAT_KEY },
    { clock: true },
  );
}
