// The official Python client (`openai`, in .venv, installed by scripts/setup.sh from
// tests/e2e/requirements.txt) against the router's /v1/responses: tests/e2e/python_sdk.py runs
// its scenarios and prints what it saw as JSON; the assertions are here. Through a chat-only
// provider (translated) and a native one (passed through). The same script against the native
// fake directly comes first, to show the fake is what the client expects.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GATEWAY_KEY } from "./harness.mjs";
import {
  CALL_ID,
  NATIVE_KEY,
  TEXT,
  TEXT_DELTAS,
  USAGE,
  bothFakes,
  startResponsesRouter,
} from "./responses-fake.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const PYTHON = path.join(ROOT, ".venv/bin/python");
const SCRIPT = path.join(ROOT, "tests/e2e/python_sdk.py");

/** Runs the script's `scenarios` against `baseUrl` with `apiKey`; its JSON output, parsed. */
function python(baseUrl, apiKey, scenarios) {
  if (!existsSync(PYTHON)) {
    throw new Error(`${PYTHON} is missing: run scripts/setup.sh (it makes the .venv with the openai Python client)`);
  }
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [SCRIPT, baseUrl, ...scenarios],
      {
        timeout: 60_000,
        // Only what the client needs: no proxy, no stray OpenAI settings from the environment.
        env: { PATH: process.env.PATH, OPENAI_API_KEY: apiKey, PYTHONDONTWRITEBYTECODE: "1", NO_PROXY: "*" },
      },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`python_sdk.py ${scenarios.join(" ")} failed (${err.message}):\n${stderr}`));
        try {
          resolve({ result: JSON.parse(stdout), stdout, stderr });
        } catch {
          reject(new Error(`python_sdk.py printed no JSON:\n${stdout}\n${stderr}`));
        }
      },
    );
  });
}

const fakes = bothFakes(200);

/**
 * The scenarios' assertions; `run(scenarios)` runs the script against one endpoint. `provider`
 * is the x-router-provider expected (null without a router); `fake()` is the fake behind it.
 * The cut is the router's to report: at the fake itself it is a broken connection.
 */
function suite(run, provider, fake) {
  test("responses.create: plain, streamed event by event, and the stream helper's final response", async () => {
    const { plain, stream, helper } = await run(["plain", "stream", "helper"]);
    assert.equal(plain.object, "response");
    assert.equal(plain.status, "completed");
    assert.equal(plain.output_text, TEXT);
    assert.deepEqual(plain.usage, USAGE);
    if (provider) assert.equal(plain.provider, provider);

    assert.deepEqual(stream.types.slice(0, 4), [
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
    ]);
    assert.deepEqual(stream.types.slice(-4), [
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    assert.deepEqual(
      stream.sequence_numbers,
      stream.types.map((_, i) => i),
    );
    assert.equal(stream.text, TEXT);
    assert.deepEqual(stream.usage, USAGE);

    assert.deepEqual(
      helper.deltas.filter((d) => d !== ""),
      TEXT_DELTAS,
    );
    assert.equal(helper.output_text, TEXT);
    assert.equal(helper.status, "completed");
  });

  test("a function tool, then its output in a second turn", async () => {
    const { tool } = await run(["tool"]);
    assert.deepEqual(tool.calls, [{ name: "get_weather", call_id: CALL_ID, arguments: { city: "Paris" } }]);
    assert.equal(tool.second, "The tool said: 18 C and sunny");
  });

  if (!provider) return;
  test("a stream cut after its first byte ends with the error event; the helper has no final response", async () => {
    fake().cutStreams(fake() === fakes.native ? 5 : 2);
    const { cut } = await run(["cut"]);
    assert.equal(cut.types.at(-1), "error");
    assert.ok(cut.types.includes("response.output_text.delta"), cut.types.join(","));
    assert.ok(!cut.types.includes("response.completed"));
    assert.deepEqual(cut.last, { type: "error", code: "upstream_stream_interrupted" });
    assert.notEqual(cut.final, "returned", "the helper must not return a final response for a cut stream");
  });
}

describe("the native fake directly, read by the Python client", () => {
  const run = async (scenarios) => (await python(fakes.native.baseUrl, NATIVE_KEY, scenarios)).result;
  suite(run, null, () => fakes.native);
});

for (const kind of ["chat", "native"]) {
  describe(`the Python client through the router, ${kind === "chat" ? "translated for a chat-only provider" : "passed through to a native provider"}`, () => {
    let router;
    before(async () => {
      router = await startResponsesRouter(kind, fakes);
    });
    after(() => router?.dispose());
    const run = async (scenarios) => {
      const { result, stdout, stderr } = await python(`${router.url}/v1`, GATEWAY_KEY, scenarios);
      // What the client saw, for the harness's key-leak check.
      router.seen.push(stdout, stderr);
      return result;
    };
    suite(run, kind === "chat" ? "chatonly" : "openai", () => fakes[kind]);
  });
}
