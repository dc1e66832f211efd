// The Responses API fakes are faithful before they judge the router: the official openai client
// (whose stream helper checks every event against the item it belongs to) parses all the native
// fake sends, plain, streamed, with a function tool and with a JSON schema; and it parses the
// chat-only fake's completions and chunk streams (tool calls split over chunks included).
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import {
  CALL_ID,
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
} from "./responses-fake.mjs";

const KEY = "sk-fake-provider-key-1234";

describe("the native Responses fake, read by the openai client", () => {
  let fake;
  let client;
  before(async () => {
    fake = await startNativeResponsesFake({ key: KEY });
    client = new OpenAI({ apiKey: KEY, baseURL: fake.baseUrl, maxRetries: 0 });
  });
  after(() => fake.close());
  beforeEach(() => fake.reset());

  test("responses.create, plain", async () => {
    const res = await client.responses.create({ model: "gpt-test", input: "hi", instructions: "Be brief." });
    assert.equal(res.object, "response");
    assert.equal(res.status, "completed");
    assert.equal(res.output_text, TEXT);
    assert.equal(res.model, "gpt-test");
    assert.equal(res.instructions, "Be brief.");
    assert.equal(res.usage.total_tokens, USAGE.total_tokens);
    assert.equal(fake.calls.length, 1);
    assert.equal(fake.calls[0].path, "/v1/responses");
    assert.equal(fake.calls[0].headers.authorization, `Bearer ${KEY}`);
    assert.deepEqual(fake.calls[0].body, { model: "gpt-test", input: "hi", instructions: "Be brief." });
  });

  test("a wrong key is a 401 the client raises", async () => {
    const wrong = new OpenAI({ apiKey: "sk-wrong", baseURL: fake.baseUrl, maxRetries: 0 });
    await assert.rejects(wrong.responses.create({ model: "m", input: "hi" }), (e) => e instanceof OpenAI.AuthenticationError);
  });

  test("responses.create with stream: true, every event in order", async () => {
    const stream = await client.responses.create({ model: "gpt-test", input: "hi", stream: true });
    const events = [];
    for await (const e of stream) events.push(e);
    assert.deepEqual(
      events.map((e) => e.type),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        ...TEXT_DELTAS.map(() => "response.output_text.delta"),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
      ],
    );
    assert.deepEqual(
      events.map((e) => e.sequence_number),
      events.map((_, i) => i),
    );
    assert.deepEqual(
      events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta),
      TEXT_DELTAS,
    );
    assert.equal(events.at(-1).response.usage.output_tokens, USAGE.output_tokens);
  });

  test("responses.stream(...).finalResponse() and its text deltas", async () => {
    const stream = client.responses.stream({ model: "gpt-test", input: "hi" });
    const deltas = [];
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    assert.equal(final.output_text, TEXT);
    assert.deepEqual(deltas, TEXT_DELTAS);
    assert.equal(final.status, "completed");
  });

  test("a function tool: the call, streamed or not, and the second turn with its output", async () => {
    const input = "What is the weather in Paris?";
    const res = await client.responses.create({ model: "gpt-test", input, tools: [WEATHER_TOOL] });
    const call = res.output.find((o) => o.type === "function_call");
    assert.equal(call.name, "get_weather");
    assert.equal(call.call_id, CALL_ID);
    assert.deepEqual(JSON.parse(call.arguments), { city: "Paris" });

    const final = await client.responses.stream({ model: "gpt-test", input, tools: [WEATHER_TOOL] }).finalResponse();
    const streamed = final.output.find((o) => o.type === "function_call");
    assert.equal(streamed.name, "get_weather");
    assert.equal(streamed.arguments, call.arguments);
    // The SDK parses the arguments of a strict function tool.
    assert.deepEqual(streamed.parsed_arguments, { city: "Paris" });

    const second = await client.responses.create({
      model: "gpt-test",
      tools: [WEATHER_TOOL],
      input: [
        { role: "user", content: input },
        { type: "function_call", call_id: call.call_id, name: call.name, arguments: call.arguments },
        { type: "function_call_output", call_id: call.call_id, output: "18 C and sunny" },
      ],
    });
    assert.equal(second.output_text, "The tool said: 18 C and sunny");
  });

  test("a JSON schema text.format: an object matching it, parsed by responses.parse and the stream helper", async () => {
    const text = { format: { type: "json_schema", name: "person", schema: PERSON_SCHEMA, strict: true } };
    const res = await client.responses.parse({ model: "gpt-test", input: "Invent a person", text });
    assert.deepEqual(res.output_parsed, exampleOf(PERSON_SCHEMA, "value"));
    assert.deepEqual(res.output_parsed, { name: "name example", age: 42, tags: ["tags example"] });
    const final = await client.responses.stream({ model: "gpt-test", input: "Invent a person", text }).finalResponse();
    assert.deepEqual(final.output_parsed, res.output_parsed);
  });

  test("the suite's stream checker accepts the fake's streams, text and function call", async () => {
    const post = async (body) => {
      const res = await fetch(`${fake.baseUrl}/responses`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ model: "m", stream: true, ...body }),
      });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type"), /^text\/event-stream/);
      return res.text();
    };
    const text = checkResponsesStream(parseEvents(await post({ input: "hi" })));
    assert.deepEqual(text.textDeltas, TEXT_DELTAS);
    assert.equal(text.response.usage.total_tokens, USAGE.total_tokens);
    const call = checkResponsesStream(parseEvents(await post({ input: "What is the weather in Paris?", tools: [WEATHER_TOOL] })));
    assert.deepEqual(
      call.items.map((i) => [i.type, i.name, i.call_id, i.arguments]),
      [["function_call", "get_weather", CALL_ID, '{"city":"Paris"}']],
    );
    assert.ok(call.argumentDeltas.length > 1, "the arguments arrive in several deltas");
    // And it rejects a stream that is not in order.
    const events = parseEvents(await post({ input: "hi" }));
    events.events.splice(3, 1);
    assert.throws(() => checkResponsesStream(events));
  });

  test("a cut stream: the client sees the first event, then the connection fails", async () => {
    fake.cutStreams();
    const stream = await client.responses.create({ model: "gpt-test", input: "hi", stream: true });
    const types = [];
    await assert.rejects(async () => {
      for await (const e of stream) types.push(e.type);
    });
    assert.deepEqual(types, ["response.created"]);
    assert.equal(fake.calls[0].cut, true);
  });

  test("an output limit under SHORT_LIMIT: an incomplete answer, its stream closed by response.incomplete", async () => {
    const res = await client.responses.create({ model: "m", input: "hi", max_output_tokens: 2 });
    assert.equal(res.status, "incomplete");
    assert.deepEqual(res.incomplete_details, { reason: "max_output_tokens" });
    assert.equal(res.output_text, TEXT_DELTAS[0]);
    const stream = await client.responses.create({ model: "m", input: "hi", max_output_tokens: 2, stream: true });
    const types = [];
    for await (const e of stream) types.push(e.type);
    assert.equal(types.at(-1), "response.incomplete");
    const final = await client.responses.stream({ model: "m", input: "hi", max_output_tokens: 2 }).finalResponse();
    assert.equal(final.status, "incomplete");
    assert.equal(final.output_text, TEXT_DELTAS[0]);
  });

  test("truncateStreams: a clean end before response.completed", async () => {
    fake.truncateStreams(3);
    const stream = await client.responses.create({ model: "m", input: "hi", stream: true });
    const types = [];
    for await (const e of stream) types.push(e.type);
    assert.deepEqual(types, ["response.created", "response.in_progress", "response.output_item.added"]);
    assert.equal(fake.calls[0].truncated, true);
  });

  test("failNext: a 503 the client raises, then the fake serves again", async () => {
    fake.failNext(503);
    await assert.rejects(client.responses.create({ model: "m", input: "hi" }), (e) => e.status === 503);
    assert.equal((await client.responses.create({ model: "m", input: "hi" })).output_text, TEXT);
  });
});

describe("the chat-only fake, read by the openai client", () => {
  let fake;
  let client;
  before(async () => {
    fake = await startChatOnlyFake({ key: KEY });
    client = new OpenAI({ apiKey: KEY, baseURL: fake.baseUrl, maxRetries: 0 });
  });
  after(() => fake.close());
  beforeEach(() => fake.reset());

  test("chat.completions.create, plain and streamed (usage only when asked)", async () => {
    const res = await client.chat.completions.create({ model: "llama", messages: [{ role: "user", content: "hi" }] });
    assert.equal(res.choices[0].message.content, TEXT);
    assert.equal(res.usage.total_tokens, USAGE.total_tokens);

    const stream = await client.chat.completions.create({
      model: "llama",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const deltas = [];
    let usage = null;
    for await (const c of stream) {
      if (c.choices[0]?.delta?.content) deltas.push(c.choices[0].delta.content);
      if (c.usage) usage = c.usage;
    }
    assert.deepEqual(deltas, TEXT_DELTAS);
    assert.equal(usage.prompt_tokens, USAGE.input_tokens);

    const bare = await client.chat.completions.create({ model: "llama", messages: [{ role: "user", content: "hi" }], stream: true });
    for await (const c of bare) assert.equal(c.usage, undefined);
  });

  test("a tool call split over chunks, assembled by the stream helper; the tool result turn", async () => {
    const tools = [{ type: "function", function: { name: "get_weather", parameters: WEATHER_TOOL.parameters } }];
    const messages = [{ role: "user", content: "What is the weather in Paris?" }];
    const completion = await client.chat.completions.stream({ model: "llama", messages, tools }).finalChatCompletion();
    const call = completion.choices[0].message.tool_calls[0];
    assert.equal(call.id, CALL_ID);
    assert.equal(call.function.name, "get_weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
    assert.equal(completion.choices[0].finish_reason, "tool_calls");

    const second = await client.chat.completions.create({
      model: "llama",
      tools,
      messages: [...messages, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "18 C and sunny" }],
    });
    assert.equal(second.choices[0].message.content, "The tool said: 18 C and sunny");
  });

  test("response_format json_schema: an object matching the schema", async () => {
    const res = await client.chat.completions.create({
      model: "llama",
      messages: [{ role: "user", content: "Invent a person" }],
      response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON_SCHEMA, strict: true } },
    });
    assert.deepEqual(JSON.parse(res.choices[0].message.content), { name: "name example", age: 42, tags: ["tags example"] });
  });

  test("an output limit under SHORT_LIMIT: finish_reason length; truncateStreams: no [DONE]", async () => {
    const res = await client.chat.completions.create({ model: "llama", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    assert.equal(res.choices[0].finish_reason, "length");
    assert.equal(res.choices[0].message.content, TEXT_DELTAS[0]);
    fake.truncateStreams(2);
    const r = await fetch(`${fake.baseUrl}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: "llama", messages: [{ role: "user", content: "hi" }], stream: true }),
    });
    const text = await r.text();
    assert.equal(text.split("\n\n").filter(Boolean).length, 2);
    assert.ok(!text.includes("[DONE]"));
  });

  test("a cut stream and a failure on cue", async () => {
    fake.cutStreams();
    const stream = await client.chat.completions.create({ model: "llama", messages: [{ role: "user", content: "hi" }], stream: true });
    let chunks = 0;
    await assert.rejects(async () => {
      for await (const _ of stream) chunks++;
    });
    assert.equal(chunks, 1);
    fake.reset();
    fake.failNext(503);
    await assert.rejects(client.chat.completions.create({ model: "llama", messages: [{ role: "user", content: "hi" }] }), (e) => e.status === 503);
  });
});
