// `POST /v1/responses` through the router, seen by the official openai client and over raw
// HTTP, with three routers in front of two fakes (responses-fake.mjs):
// - "native": its provider serves the Responses API itself; the request passes with only the
//   model replaced, and the answer comes back as the provider sent it, byte for byte;
// - "chat": its provider serves chat completions only; the request is translated into one and
//   the answer back into a Response object or the Responses events;
// - "mixed": both, for failover from one kind to the other and for the requests only a native
//   provider can serve.
// Both fakes answer the same questions alike, so the client must see the same output through
// either provider.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { GATEWAY_KEY, gate, readError } from "./harness.mjs";
import {
  CALL_ID,
  CHAT_KEY,
  MODELS,
  NATIVE_KEY,
  PERSON_SCHEMA,
  TEXT,
  TEXT_DELTAS,
  USAGE,
  WEATHER_TOOL,
  checkResponsesStream,
  exampleOf,
  parseEvents,
  startChatOnlyFake,
  startNativeResponsesFake,
  startResponsesRouter,
} from "./responses-fake.mjs";

const KINDS = ["native", "chat"];
const PROVIDER = { native: "openai", chat: "chatonly" };
const WEATHER = "What is the weather in Paris?";
const PERSON = { type: "json_schema", name: "person", schema: PERSON_SCHEMA, strict: true };
const PERSON_EXAMPLE = exampleOf(PERSON_SCHEMA, "value");

let native;
let chat;
const routers = {};
const clients = {};

/** The fake behind a kind of router. */
const fakeOf = (kind) => ({ native, chat })[kind];

/** The SDK's fetch for router `r`, keeping what the client saw for the key-leak check. */
const recorded = (r) => async (url, init) => {
  const res = await fetch(url, init);
  r.seen.push(JSON.stringify([...res.headers]), await res.clone().text());
  return res;
};

before(async () => {
  native = await startNativeResponsesFake({ key: NATIVE_KEY, maxRequests: 1_000 });
  chat = await startChatOnlyFake({ key: CHAT_KEY, maxRequests: 1_000 });
  for (const kind of [...KINDS, "mixed"]) {
    routers[kind] = await startResponsesRouter(kind, { native, chat });
    clients[kind] = new OpenAI({ apiKey: GATEWAY_KEY, baseURL: `${routers[kind].url}/v1`, maxRetries: 0, fetch: recorded(routers[kind]) });
  }
});

after(async () => {
  for (const r of Object.values(routers)) await r.dispose();
  await native?.close();
  await chat?.close();
});

beforeEach(() => {
  native.reset();
  chat.reset();
  // A fresh minute on every router's clock: no test inherits another's quota or cooldowns.
  for (const r of Object.values(routers)) r.advance(60_000);
});

/** `POST /v1/responses` to router `kind` with the gateway key (or the given headers). */
function post(kind, body, headers = { authorization: `Bearer ${GATEWAY_KEY}` }) {
  return routers[kind].fetch("/v1/responses", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** The text of a chat message's content, whether a string or parts. */
const textOf = (content) => (typeof content === "string" ? content : (content ?? []).map((p) => p.text ?? "").join(""));

/** What a client takes from a Response: text, function calls, usage. */
const gist = (r) => ({
  status: r.status,
  output_text: r.output_text,
  calls: r.output.filter((o) => o.type === "function_call").map((o) => ({ call_id: o.call_id, name: o.name, arguments: o.arguments })),
  usage: { input_tokens: r.usage?.input_tokens, output_tokens: r.usage?.output_tokens, total_tokens: r.usage?.total_tokens },
});

/** The events of a stream that ended with the router's error event, and that error. */
function interrupted(text) {
  const parsed = parseEvents(text);
  assert.ok(parsed.complete, `the stream ends at an event's end: ${JSON.stringify(text.slice(-200))}`);
  const last = parsed.events.at(-1);
  assert.equal(last.event, "error", `the last event is an error event: ${text.slice(-300)}`);
  assert.deepEqual(Object.keys(last.data).sort(), ["code", "message", "param", "sequence_number", "type"]);
  assert.equal(last.data.type, "error");
  assert.equal(last.data.code, "upstream_stream_interrupted");
  assert.equal(last.data.param, null);
  assert.ok(typeof last.data.message === "string" && last.data.message.length > 0);
  assert.ok(Number.isInteger(last.data.sequence_number) && last.data.sequence_number >= 0);
  const prior = parsed.events.slice(0, -1);
  for (const e of prior) {
    assert.notEqual(e.data?.type, "response.completed", "no response.completed before the error");
    assert.notEqual(e.data?.type, "error");
  }
  return { prior, error: last.data };
}

for (const kind of KINDS) {
  const fake = () => fakeOf(kind);
  const models = MODELS[kind];
  describe(`through the ${kind === "native" ? "native Responses" : "chat-only"} provider`, () => {
    test("responses.create, plain: the answer, the router's headers, what the provider received", async () => {
      const client = clients[kind];
      const { data, response } = await client.responses
        .create({ model: "fast", input: "hi", instructions: "Be brief.", max_output_tokens: 64 })
        .withResponse();
      assert.equal(data.object, "response");
      assert.equal(data.status, "completed");
      assert.equal(data.output_text, TEXT);
      assert.deepEqual(gist(data).usage, USAGE);
      assert.equal(response.headers.get("x-router-provider"), PROVIDER[kind]);
      assert.equal(response.headers.get("x-router-model"), models.fast);
      assert.equal(fake().calls.length, 1);
      const call = fake().calls[0];
      if (kind === "native") {
        assert.equal(call.path, "/v1/responses");
        assert.equal(call.headers.authorization, `Bearer ${NATIVE_KEY}`);
        // Only the model differs from what the client wrote, in the client's order.
        // As written, with the provider's model id, and nothing stored with the router's key.
        assert.equal(
          call.raw,
          JSON.stringify({ model: models.fast, input: "hi", instructions: "Be brief.", max_output_tokens: 64, store: false }),
        );
      } else {
        assert.equal(call.path, "/v1/chat/completions");
        assert.equal(call.headers.authorization, `Bearer ${CHAT_KEY}`);
        assert.equal(call.body.model, models.fast);
        assert.deepEqual(call.body.messages, [
          { role: "system", content: "Be brief." },
          { role: "user", content: "hi" },
        ]);
        assert.equal(call.body.max_tokens, 64, "max_output_tokens becomes the provider's max_tokens");
        for (const field of ["input", "instructions", "max_output_tokens", "max_completion_tokens", "stream_options"]) {
          assert.ok(!(field in call.body), `no ${field} in the chat request: ${call.raw}`);
        }
        assert.ok(!call.body.stream, "not a stream");
      }
    });

    test("the raw JSON answer: as the native provider sent it, or a Response object in full", async () => {
      const res = await post(kind, { model: "fast", input: "hi" });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
      const text = await res.text();
      if (kind === "native") {
        assert.equal(text, fake().calls[0].sent[0]);
        return;
      }
      const r = JSON.parse(text);
      assert.equal(r.object, "response");
      assert.ok(typeof r.id === "string" && r.id.length > 0);
      assert.equal(typeof r.created_at, "number");
      assert.equal(r.status, "completed");
      assert.equal(r.output.length, 1);
      const [item] = r.output;
      assert.equal(item.type, "message");
      assert.equal(item.role, "assistant");
      assert.equal(item.status, "completed");
      assert.ok(typeof item.id === "string" && item.id.length > 0);
      assert.equal(item.content.length, 1);
      assert.equal(item.content[0].type, "output_text");
      assert.equal(item.content[0].text, TEXT);
      assert.ok(Array.isArray(item.content[0].annotations), "an output_text part has its annotations list");
      assert.deepEqual(
        { input_tokens: r.usage.input_tokens, output_tokens: r.usage.output_tokens, total_tokens: r.usage.total_tokens },
        USAGE,
      );
    });

    test("stream: true over raw HTTP: every event in order, a text delta per upstream chunk", async () => {
      const res = await post(kind, { model: "fast", input: "hi", stream: true });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
      assert.equal(res.headers.get("x-router-provider"), PROVIDER[kind]);
      const text = await res.text();
      const { textDeltas, response } = checkResponsesStream(parseEvents(text));
      assert.deepEqual(
        textDeltas.filter((d) => d !== ""),
        TEXT_DELTAS,
        "one text delta per upstream chunk",
      );
      assert.deepEqual(gist({ ...response, output_text: "" }).usage, USAGE);
      const call = fake().calls[0];
      assert.equal(call.body.stream, true);
      if (kind === "native") {
        assert.equal(text, call.sent.join(""), "the provider's stream, byte for byte");
      } else {
        assert.deepEqual(call.body.stream_options, { include_usage: true });
      }
    });

    test("a stream reaches the client event by event, not when the provider has finished", async () => {
      const g = gate();
      // The native fake holds response.completed; the chat-only one its finishing chunk (then
      // come the usage chunk and [DONE]).
      fake().gateStreams(g, kind === "native" ? -1 : -3);
      const res = await post(kind, { model: "fast", input: "hi", stream: true });
      assert.equal(res.status, 200);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      const deltas = () =>
        parseEvents(text.slice(0, text.lastIndexOf("\n\n") + 2))
          .events.filter((e) => e.data?.type === "response.output_text.delta")
          .map((e) => e.data.delta)
          .join("");
      while (deltas() !== TEXT) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      g.open();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      assert.equal(g.openedInTime, true, "every text delta reached the client while the provider held the rest");
      checkResponsesStream(parseEvents(text));
    });

    test("the SDK's stream: iterated event by event, and responses.stream().finalResponse()", async () => {
      const client = clients[kind];
      const stream = await client.responses.create({ model: "fast", input: "hi", stream: true });
      const types = [];
      let text = "";
      for await (const e of stream) {
        types.push(e.type);
        if (e.type === "response.output_text.delta") text += e.delta;
      }
      assert.equal(text, TEXT);
      assert.deepEqual(types.slice(0, 2), ["response.created", "response.in_progress"]);
      assert.equal(types.at(-1), "response.completed");

      const helper = client.responses.stream({ model: "fast", input: "hi" });
      const deltas = [];
      helper.on("response.output_text.delta", (e) => deltas.push(e.delta));
      const final = await helper.finalResponse();
      assert.equal(final.output_text, TEXT);
      assert.equal(deltas.join(""), TEXT);
      assert.equal(final.status, "completed");
      assert.deepEqual(gist(final).usage, USAGE);
    });

    test("a function tool: the call (plain and streamed), then its output sent back in a second turn", async () => {
      const client = clients[kind];
      const first = await client.responses.create({ model: "fast", input: WEATHER, tools: [WEATHER_TOOL], tool_choice: "auto" });
      assert.deepEqual(gist(first).calls, [{ call_id: CALL_ID, name: "get_weather", arguments: '{"city":"Paris"}' }]);
      const sent = fake().calls[0].body;
      if (kind === "native") {
        assert.deepEqual(sent, { model: models.fast, input: WEATHER, tools: [WEATHER_TOOL], tool_choice: "auto", store: false });
      } else {
        assert.deepEqual(sent.tools, [
          {
            type: "function",
            function: {
              name: WEATHER_TOOL.name,
              description: WEATHER_TOOL.description,
              parameters: WEATHER_TOOL.parameters,
              strict: true,
            },
          },
        ]);
        // Structured outputs follow a schema's key order: the router keeps the client's.
        assert.equal(
          JSON.stringify(sent.tools[0].function.parameters),
          JSON.stringify(WEATHER_TOOL.parameters),
          "the tool's parameters schema in the client's key order",
        );
        assert.equal(sent.tool_choice, "auto");
        assert.deepEqual(sent.messages, [{ role: "user", content: WEATHER }]);
      }

      // Streamed: over raw HTTP, then with the SDK's helper (which parses strict tools' arguments).
      const res = await post(kind, { model: "fast", input: WEATHER, tools: [WEATHER_TOOL], stream: true });
      const streamed = checkResponsesStream(parseEvents(await res.text()));
      assert.deepEqual(
        streamed.items.map((i) => [i.type, i.call_id, i.name, i.arguments]),
        [["function_call", CALL_ID, "get_weather", '{"city":"Paris"}']],
      );
      if (kind === "chat") assert.ok(streamed.argumentDeltas.length > 1, "one arguments delta per upstream chunk");
      const final = await client.responses.stream({ model: "fast", input: WEATHER, tools: [WEATHER_TOOL] }).finalResponse();
      const call = final.output.find((o) => o.type === "function_call");
      assert.equal(call.name, "get_weather");
      assert.deepEqual(call.parsed_arguments, { city: "Paris" });

      // The second turn: the first answer's output, then the tool's result.
      fake().reset();
      const second = await client.responses.create({
        model: "fast",
        tools: [WEATHER_TOOL],
        input: [
          { role: "user", content: WEATHER },
          ...first.output,
          { type: "function_call_output", call_id: CALL_ID, output: "18 C and sunny" },
        ],
      });
      assert.equal(second.output_text, "The tool said: 18 C and sunny");
      const turn = fake().calls[0].body;
      if (kind === "native") {
        assert.equal(turn.input.at(-1).type, "function_call_output");
        assert.equal(turn.model, models.fast);
      } else {
        assert.deepEqual(
          turn.messages.map((m) => m.role),
          ["user", "assistant", "tool"],
        );
        assert.deepEqual(turn.messages[1].tool_calls, [
          { id: CALL_ID, type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
        ]);
        assert.equal(turn.messages[2].tool_call_id, CALL_ID);
        assert.equal(textOf(turn.messages[2].content), "18 C and sunny");
      }
    });

    test("a JSON schema text.format: parsed output, plain and streamed", async () => {
      const client = clients[kind];
      const parsed = await client.responses.parse({ model: "fast", input: "Invent a person", text: { format: PERSON } });
      assert.deepEqual(parsed.output_parsed, PERSON_EXAMPLE);
      const body = fake().calls[0].body;
      if (kind === "native") {
        assert.deepEqual(body.text, { format: PERSON });
      } else {
        assert.deepEqual(body.response_format, {
          type: "json_schema",
          json_schema: { name: "person", schema: PERSON_SCHEMA, strict: true },
        });
        assert.ok(!("text" in body), "no text field in the chat request");
        // A model writes the object's keys in the schema's order: the router keeps the client's.
        assert.equal(
          JSON.stringify(body.response_format.json_schema.schema),
          JSON.stringify(PERSON_SCHEMA),
          "the JSON schema in the client's key order",
        );
      }
      const final = await client.responses.stream({ model: "fast", input: "Invent a person", text: { format: PERSON } }).finalResponse();
      assert.deepEqual(final.output_parsed, PERSON_EXAMPLE);
    });

    test("a stream cut after its first byte ends with the error event, never a clean end", async () => {
      // Cut after the first text delta ("Hello"), then after the very first chunk.
      fake().cutStreams(kind === "native" ? 5 : 2);
      const res = await post(kind, { model: "fast", input: "hi", stream: true });
      assert.equal(res.status, 200);
      const text = await res.text();
      const { prior, error } = interrupted(text);
      assert.equal(fake().calls.length, 1, "after the first byte there is no failover");
      assert.equal(fake().calls[0].cut, true);
      const deltas = prior.filter((e) => e.data.type === "response.output_text.delta").map((e) => e.data.delta);
      assert.equal(deltas.join(""), "Hello", "what came before the cut reached the client");
      if (kind === "native") {
        assert.ok(text.startsWith(fake().calls[0].sent.join("")), "the provider's events before the cut, as sent");
        const last = Math.max(...prior.map((e) => e.data.sequence_number));
        assert.ok(error.sequence_number > last, `the error event's sequence_number ${error.sequence_number} follows the provider's last, ${last}`);
      } else {
        assert.deepEqual(
          [...prior.map((e) => e.data.sequence_number), error.sequence_number],
          [...prior.keys(), prior.length],
          "the error event takes the next sequence number",
        );
      }

      fake().reset();
      fake().cutStreams(1);
      const early = await post(kind, { model: "fast", input: "hi", stream: true });
      assert.equal(early.status, 200);
      interrupted(await early.text());
    });

    test("a stream that ends cleanly but early, without its closing event, ends with the error event", async () => {
      // Native: response.created, response.in_progress, output_item.added; chat: the role
      // chunk, "Hello" and " from", then the end, without [DONE].
      fake().truncateStreams(3);
      const res = await post(kind, { model: "fast", input: "hi", stream: true });
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.equal(fake().calls[0].truncated, true);
      const { prior } = interrupted(text);
      if (kind === "native") assert.ok(text.startsWith(fake().calls[0].sent.join("")), "the provider's events, as sent, before the error");
      else assert.ok(prior.length > 0, "the events before the end reached the client");
    });

    test("a cut stream is an error for the SDK: iterating raises it, and so does finalResponse()", async () => {
      const client = clients[kind];
      fake().cutStreams(kind === "native" ? 5 : 2);
      const stream = await client.responses.create({ model: "fast", input: "hi", stream: true });
      const types = [];
      await assert.rejects(
        (async () => {
          for await (const e of stream) types.push(e.type);
        })(),
        (err) => err instanceof OpenAI.APIError && err.code === "upstream_stream_interrupted",
      );
      assert.ok(types.includes("response.output_text.delta"), types.join(","));
      assert.ok(!types.includes("response.completed"));
      await assert.rejects(
        client.responses.stream({ model: "fast", input: "hi" }).finalResponse(),
        (err) => err instanceof OpenAI.APIError && err.code === "upstream_stream_interrupted",
      );
    });

    test("routing: auto takes the fast path, a concrete model id its own provider model", async () => {
      const auto = await post(kind, { model: "auto", input: "hi" });
      assert.equal(auto.status, 200);
      assert.equal(auto.headers.get("x-router-path"), "fast");
      await auto.text();
      assert.equal(fake().calls[0].body.model, models.fast);
      const concrete = await post(kind, { model: models.slow, input: "hi" });
      assert.equal(concrete.status, 200);
      assert.equal(concrete.headers.get("x-router-model"), models.slow);
      await concrete.text();
      assert.equal(fake().calls[1].body.model, models.slow);
    });

    test("quota: the same books as chat completions, a 429 with retry-after when spent", async () => {
      const r = routers[kind];
      r.toNextMinute(100);
      for (let i = 0; i < 2; i++) {
        const res = await post(kind, { model: "limited", input: "hi" });
        assert.equal(res.status, 200);
        await res.text();
      }
      const res = await post(kind, { model: "limited", input: "hi" });
      assert.equal(res.status, 429);
      assert.ok(Number(res.headers.get("retry-after")) > 0, "a retry-after");
      const err = await readError(assert, res);
      assert.equal(err.code, "quota_exhausted");
      assert.equal(fake().calls.length, 2);
    });

    test("auth and unknown models: OpenAI-format errors, the provider never asked", async () => {
      const anonymous = await post(kind, { model: "fast", input: "hi" }, {});
      assert.equal(anonymous.status, 401);
      await readError(assert, anonymous);
      await assert.rejects(
        new OpenAI({ apiKey: "sk-wrong-key", baseURL: `${routers[kind].url}/v1`, maxRetries: 0 }).responses.create({ model: "fast", input: "hi" }),
        (err) => err instanceof OpenAI.AuthenticationError && err.code === "invalid_api_key",
      );
      await assert.rejects(
        clients[kind].responses.create({ model: "no-such-model", input: "hi" }),
        (err) => err instanceof OpenAI.NotFoundError && err.code === "model_not_found" && err.param === "model",
      );
      assert.equal(fake().calls.length, 0);
    });
  });
}

test("the same questions get the same answers through either provider", async () => {
  const ask = {
    plain: { model: "fast", input: "hi" },
    call: { model: "fast", input: WEATHER, tools: [WEATHER_TOOL] },
    json: { model: "fast", input: "Invent a person", text: { format: PERSON } },
  };
  for (const [name, params] of Object.entries(ask)) {
    const [a, b] = await Promise.all(KINDS.map((k) => clients[k].responses.create(params)));
    // (A schema whose keys the router reorders gets its answer's keys in that order.)
    assert.deepEqual(gist(b), gist(a), name);
    const [sa, sb] = await Promise.all(KINDS.map((k) => clients[k].responses.stream(params).finalResponse()));
    assert.deepEqual(gist(sb), gist(sa), `${name}, streamed`);
    assert.deepEqual(gist(sa), gist(a), `${name}: streamed as plain`);
  }
});

describe("translation to chat completions, in detail", () => {
  test("input items: text and image parts, an earlier assistant answer, instructions first", async () => {
    const res = await clients.chat.responses.create({
      model: "fast",
      instructions: "Describe pictures.",
      input: [
        {
          role: "user",
          content: [
            { type: "input_text", text: "What is this?" },
            { type: "input_image", image_url: "https://example.com/cat.png", detail: "auto" },
          ],
        },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "A cat.", annotations: [] }] },
        { role: "user", content: "Thanks" },
      ],
    });
    assert.equal(res.output_text, TEXT);
    const { messages } = chat.calls[0].body;
    assert.deepEqual(
      messages.map((m) => m.role),
      ["system", "user", "assistant", "user"],
    );
    assert.equal(textOf(messages[0].content), "Describe pictures.");
    const parts = messages[1].content;
    assert.ok(Array.isArray(parts), "a user message with an image keeps its parts");
    assert.deepEqual(parts[0], { type: "text", text: "What is this?" });
    assert.equal(parts[1].type, "image_url");
    assert.equal(parts[1].image_url.url, "https://example.com/cat.png");
    assert.equal(textOf(messages[2].content), "A cat.");
    assert.equal(textOf(messages[3].content), "Thanks");
  });

  test("tool_choice, reasoning.effort, json_object and the output limit in the chat forms", async () => {
    await clients.chat.responses.create({
      model: "fast",
      input: WEATHER,
      tools: [WEATHER_TOOL],
      tool_choice: { type: "function", name: "get_weather" },
      reasoning: { effort: "low" },
      max_output_tokens: 100,
    });
    let body = chat.calls[0].body;
    assert.deepEqual(body.tool_choice, { type: "function", function: { name: "get_weather" } });
    assert.equal(body.reasoning_effort, "low");
    assert.ok(!("reasoning" in body));
    assert.equal(body.max_tokens, 100);

    await clients.chat.responses.create({ model: "fast", input: "JSON please", tools: [WEATHER_TOOL], tool_choice: "required", text: { format: { type: "json_object" } } });
    body = chat.calls[1].body;
    assert.equal(body.tool_choice, "required");
    assert.deepEqual(body.response_format, { type: "json_object" });

    // The mixed router's chat-only provider reads max_completion_tokens.
    native.failNext(503);
    await clients.mixed.responses.create({ model: "fast", input: "hi", max_output_tokens: 77 });
    body = chat.calls[2].body;
    assert.equal(body.max_completion_tokens, 77);
    assert.ok(!("max_tokens" in body));
  });

  test("what only a provider with the Responses API can keep is a 400 naming the parameter", async () => {
    const cases = [
      [{ previous_response_id: "resp_abc123" }, "previous_response_id"],
      [{ store: true }, "store"],
      [{ background: true }, "background"],
      [{ conversation: "conv_abc123" }, "conversation"],
      [{ tools: [{ type: "web_search" }] }, "tools[0].type"],
      [{ tools: [WEATHER_TOOL, { type: "web_search" }] }, "tools[1].type"],
    ];
    for (const [extra, param] of cases) {
      const res = await post("chat", { model: "fast", input: "hi", ...extra });
      assert.equal(res.status, 400, JSON.stringify(extra));
      const err = await readError(assert, res);
      assert.equal(err.type, "invalid_request_error");
      assert.equal(err.param, param, JSON.stringify(extra));
    }
    await assert.rejects(
      clients.chat.responses.create({ model: "fast", input: "hi", previous_response_id: "resp_abc123" }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === "previous_response_id",
    );
    assert.equal(chat.calls.length, 0, "the provider was never asked");
    // store: false keeps nothing: it is served, and the guarded fields stay with the router.
    const ok = await post("chat", { model: "fast", input: "hi", store: false, metadata: { team: "a" } });
    assert.equal(ok.status, 200);
    await ok.text();
    assert.ok(!("store" in chat.calls[0].body) && !("metadata" in chat.calls[0].body), chat.calls[0].raw);
  });
});

describe("passthrough to the native provider, in detail", () => {
  test("what a provider keeps for the router's key needs the operator's leave: a 400 without it, as written with it", async () => {
    // The router calls with one key for all its clients: a client's previous_response_id could
    // be another client's. Without pass_fields naming the parameter, it is refused.
    for (const [extra, param] of [
      [{ previous_response_id: "resp_abc123" }, "previous_response_id"],
      [{ background: true }, "background"],
      [{ store: true }, "store"],
      [{ tools: [{ type: "web_search" }] }, "tools[0].type"],
    ]) {
      await assert.rejects(
        clients.native.responses.create({ model: "fast", input: "and then?", ...extra }),
        (e) => e.status === 400 && e.error?.param === param && e.error?.code === "unsupported_parameter",
      );
    }
    assert.equal(native.calls.length, 0, "nothing reached the provider");
    // The mixed router's `openai` has the operator's leave (its pass_fields name them).
    const params = {
      model: "fast",
      input: "and then?",
      previous_response_id: "resp_abc123",
      tools: [{ type: "web_search" }],
      background: true,
    };
    const res = await clients.mixed.responses.create(params);
    assert.equal(res.output_text, TEXT);
    assert.deepEqual(native.calls[0].body, { ...params, model: MODELS.native.fast });
  });

  test("a stream closed by response.incomplete is complete: handed on as it is, no error event", async () => {
    const res = await post("native", { model: "fast", input: "hi", max_output_tokens: 2, stream: true });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.equal(text, native.calls[0].sent.join(""));
    assert.equal(parseEvents(text).events.at(-1).event, "response.incomplete");
    const final = await clients.native.responses.stream({ model: "fast", input: "hi", max_output_tokens: 2 }).finalResponse();
    assert.equal(final.status, "incomplete");
  });

  test("guarded fields are withheld unless the provider's pass_fields names them", async () => {
    const params = { model: "fast", input: "hi", store: false, metadata: { team: "a" } };
    await clients.native.responses.create(params);
    assert.deepEqual(native.calls[0].body, { model: MODELS.native.fast, input: "hi", store: false });
    // The mixed router's `openai` passes store and metadata.
    await clients.mixed.responses.create(params);
    assert.deepEqual(native.calls[1].body, { ...params, model: MODELS.native.fast });
  });
});

describe("mixed providers: failover across kinds, native-only requests", () => {
  test("the native provider answers 503 before its first byte: the chat-only one serves, translated", async () => {
    native.failNext(503);
    const { data, response } = await clients.mixed.responses.create({ model: "fast", input: "hi" }).withResponse();
    assert.equal(data.output_text, TEXT);
    assert.equal(response.headers.get("x-router-provider"), "chatonly");
    assert.equal(response.headers.get("x-router-attempts"), "2");
    assert.equal(response.headers.get("x-router-failover"), `openai/${MODELS.native.fast}=server_error`);
    assert.equal(native.calls.length, 1);
    assert.equal(chat.calls.length, 1);
    assert.equal(chat.calls[0].path, "/v1/chat/completions");

    native.failNext(503);
    const res = await post("mixed", { model: "fast", input: "hi", stream: true });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-router-provider"), "chatonly");
    const { textDeltas } = checkResponsesStream(parseEvents(await res.text()));
    assert.equal(textDeltas.join(""), TEXT);
  });

  test("the chat-only provider answers 503: the native one serves, its answer untouched", async () => {
    chat.failNext(503);
    const res = await post("mixed", { model: "slow", input: "hi", stream: true });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-router-provider"), "openai");
    assert.equal(res.headers.get("x-router-failover"), `chatonly/${MODELS.chat.slow}=server_error`);
    assert.equal(await res.text(), native.calls[0].sent.join(""));
    assert.equal(native.calls[0].body.model, MODELS.native.slow);
  });

  test("a request only a native provider can serve goes only to native providers", async () => {
    // `slow` starts with the chat-only provider; the request skips it.
    const { data, response } = await clients.mixed.responses
      .create({ model: "slow", input: "and then?", previous_response_id: "resp_abc123" })
      .withResponse();
    assert.equal(data.output_text, TEXT);
    assert.equal(response.headers.get("x-router-provider"), "openai");
    assert.equal(chat.calls.length, 0);
    assert.equal(native.calls[0].body.previous_response_id, "resp_abc123");

    // And when the native provider fails, it does not fall back to translation.
    native.failNext(503);
    const res = await post("mixed", { model: "slow", input: "search", tools: [{ type: "web_search" }] });
    assert.ok(res.status >= 500, `status ${res.status}`);
    await readError(assert, res);
    assert.equal(chat.calls.length, 0);
    assert.equal(native.calls.length, 2);
  });
});
