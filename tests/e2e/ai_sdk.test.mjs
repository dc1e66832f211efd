// The Vercel AI SDK against the router: `createOpenAI` with the router's base URL, and its
// default OpenAI model (`openai("fast")`), which speaks the Responses API. generateText,
// streamText and a tool call, through a chat-only provider (the router translates) and through
// a native one (it passes through). The same calls against the native fake directly come first:
// they show the fake is what the AI SDK expects of OpenAI.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";
import { GATEWAY_KEY } from "./harness.mjs";
import {
  CALL_ID,
  MODELS,
  NATIVE_KEY,
  TEXT,
  TEXT_DELTAS,
  USAGE,
  WEATHER_TOOL,
  bothFakes,
  startResponsesRouter,
} from "./responses-fake.mjs";

const WEATHER = "What is the weather in Paris?";
const tools = () => ({
  get_weather: tool({ description: WEATHER_TOOL.description, inputSchema: jsonSchema(WEATHER_TOOL.parameters) }),
});

const fakes = bothFakes(500);

/**
 * The three calls, against `openai` (a provider made by createOpenAI). `calls()` are the
 * requests the provider behind it received; `kind` says what it should have received.
 */
function suite(getOpenai, calls, kind) {
  test("generateText: the text, the finish reason, the usage", async () => {
    const result = await generateText({ model: getOpenai()("fast"), system: "Be brief.", prompt: "hi" });
    assert.equal(result.text, TEXT);
    assert.equal(result.finishReason, "stop");
    assert.equal(result.usage.inputTokens, USAGE.input_tokens);
    assert.equal(result.usage.outputTokens, USAGE.output_tokens);
    assert.equal(calls().length, 1);
    const call = calls()[0];
    if (kind === "chat") {
      assert.equal(call.path, "/v1/chat/completions");
      // The AI SDK sends the system prompt as an input item of its own.
      assert.deepEqual(
        call.body.messages.map((m) => [m.role, textOf(m.content)]),
        [
          ["system", "Be brief."],
          ["user", "hi"],
        ],
      );
    } else {
      assert.equal(call.path, "/v1/responses", "openai(model) speaks the Responses API");
    }
  });

  test("streamText: the text as it arrives, then the finish reason", async () => {
    const result = streamText({ model: getOpenai()("fast"), prompt: "hi" });
    const chunks = [];
    for await (const t of result.textStream) chunks.push(t);
    assert.deepEqual(
      chunks.filter((c) => c !== ""),
      TEXT_DELTAS,
    );
    assert.equal(await result.text, TEXT);
    assert.equal(await result.finishReason, "stop");
    assert.equal((await result.usage).outputTokens, USAGE.output_tokens);
    assert.equal(calls()[0].body.stream, true);
  });

  test("a tool with an input schema: the call's name and input, plain and streamed", async () => {
    const result = await generateText({ model: getOpenai()("fast"), prompt: WEATHER, tools: tools() });
    assert.equal(result.finishReason, "tool-calls");
    assert.deepEqual(
      result.toolCalls.map((c) => [c.toolName, c.toolCallId, c.input]),
      [["get_weather", CALL_ID, { city: "Paris" }]],
    );
    const sent = calls()[0].body;
    if (kind === "chat") {
      assert.deepEqual(
        sent.tools.map((t) => [t.type, t.function.name, t.function.parameters.properties]),
        [["function", "get_weather", WEATHER_TOOL.parameters.properties]],
      );
    } else {
      assert.deepEqual(
        sent.tools.map((t) => [t.type, t.name]),
        [["function", "get_weather"]],
      );
    }

    const streamed = streamText({ model: getOpenai()("fast"), prompt: WEATHER, tools: tools() });
    const parts = [];
    for await (const part of streamed.fullStream) {
      if (part.type === "tool-call") parts.push([part.toolName, part.input]);
      if (part.type === "error") throw part.error;
    }
    assert.deepEqual(parts, [["get_weather", { city: "Paris" }]]);
    assert.equal(await streamed.finishReason, "tool-calls");
  });
}

const textOf = (content) => (typeof content === "string" ? content : (content ?? []).map((p) => p.text ?? "").join(""));

describe("the native fake directly, as the AI SDK's OpenAI provider", () => {
  suite(
    () => createOpenAI({ apiKey: NATIVE_KEY, baseURL: fakes.native.baseUrl }),
    () => fakes.native.calls,
    "native",
  );
});

for (const kind of ["chat", "native"]) {
  describe(`through the router, ${kind === "chat" ? "translated for a chat-only provider" : "passed through to a native provider"}`, () => {
    let router;
    let openai;
    before(async () => {
      router = await startResponsesRouter(kind, fakes);
      // The SDK's fetch, keeping what the client saw for the harness's key-leak check.
      const recorded = async (url, init) => {
        const res = await fetch(url, init);
        router.seen.push(JSON.stringify([...res.headers]), await res.clone().text());
        return res;
      };
      openai = createOpenAI({ apiKey: GATEWAY_KEY, baseURL: `${router.url}/v1`, fetch: recorded });
    });
    after(() => router?.dispose());
    suite(
      () => openai,
      () => fakes[kind].calls,
      kind,
    );
    test("the provider's own model id reached it", async () => {
      await generateText({ model: openai("fast"), prompt: "hi" });
      const body = fakes[kind].calls[0].body;
      assert.equal(body.model, MODELS[kind].fast);
    });
  });
}
