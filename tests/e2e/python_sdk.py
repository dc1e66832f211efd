"""The official Python client against the router: run by python_sdk.test.mjs, which starts the
router and its fakes and asserts on the JSON this prints (one object, one key per scenario).

Usage: python_sdk.py BASE_URL SCENARIO...   (the gateway key in OPENAI_API_KEY)
Scenarios: plain, stream, helper, tool, cut.
"""

import json
import sys

from openai import OpenAI

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def usage(u):
    return None if u is None else {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def plain(client):
    raw = client.responses.with_raw_response.create(model="fast", input="hi")
    r = raw.parse()
    return {
        "object": r.object,
        "status": r.status,
        "output_text": r.output_text,
        "usage": usage(r.usage),
        "provider": raw.headers.get("x-router-provider"),
    }


def stream(client):
    events = list(client.responses.create(model="fast", input="hi", stream=True))
    return {
        "types": [e.type for e in events],
        "sequence_numbers": [e.sequence_number for e in events],
        "text": "".join(e.delta for e in events if e.type == "response.output_text.delta"),
        "usage": usage(events[-1].response.usage) if events[-1].type == "response.completed" else None,
    }


def helper(client):
    with client.responses.stream(model="fast", input="hi") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    return {"deltas": deltas, "output_text": final.output_text, "status": final.status}


def tool(client):
    first = client.responses.create(model="fast", input="What is the weather in Paris?", tools=[WEATHER_TOOL])
    calls = [o for o in first.output if o.type == "function_call"]
    second = client.responses.create(
        model="fast",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C and sunny"},
        ],
    )
    return {
        "calls": [{"name": c.name, "call_id": c.call_id, "arguments": json.loads(c.arguments)} for c in calls],
        "second": second.output_text,
    }


def cut(client):
    """The test cuts the provider's streams: what the client sees, and what the helper says."""
    events = list(client.responses.create(model="fast", input="hi", stream=True))
    last = events[-1]
    result = {"types": [e.type for e in events], "last": {"type": last.type, "code": getattr(last, "code", None)}}
    try:
        with client.responses.stream(model="fast", input="hi") as s:
            for _ in s:
                pass
            s.get_final_response()
        result["final"] = "returned"
    except Exception as err:  # noqa: BLE001 - the test asserts on which one
        result["final"] = type(err).__name__
    return result


def main():
    base_url, scenarios = sys.argv[1], sys.argv[2:]
    client = OpenAI(base_url=base_url, max_retries=0, timeout=30)
    known = {"plain": plain, "stream": stream, "helper": helper, "tool": tool, "cut": cut}
    print(json.dumps({name: known[name](client) for name in scenarios}))


if __name__ == "__main__":
    main()
