use super::*;
use crate::core::config::Config;
use serde_json::json;

fn config() -> Config {
    let doc = json!({
        "providers": {
            "groq": {"keys": [{"id": "g", "secret": "G"}]},
            "together": {"keys": [{"id": "t", "secret": "T"}], "pass_fields": ["metadata"]}
        },
        "routes": {"fast": ["groq/x"]},
        "gateway": {"auth": false}
    });
    Config::parse(&doc.to_string(), |_| None).unwrap()
}

fn chat_of(request: Value) -> Value {
    let body = request.to_string();
    let req = ResponsesRequest::parse(body.as_bytes()).unwrap();
    serde_json::from_slice(&req.to_chat().unwrap()).unwrap()
}

#[test]
fn a_plain_request_becomes_a_chat_completion() {
    let chat = chat_of(json!({
        "model": "fast", "instructions": "Be brief.", "input": "hi",
        "max_output_tokens": 50, "temperature": 0.2, "stream": true,
        "reasoning": {"effort": "low"}, "metadata": {"a": "b"}
    }));
    assert_eq!(
        chat,
        json!({
            "model": "fast",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "max_completion_tokens": 50, "temperature": 0.2, "reasoning_effort": "low",
            "metadata": {"a": "b"},
            "stream": true, "stream_options": {"include_usage": true}
        })
    );
}

#[test]
fn items_tools_and_formats_become_their_chat_forms() {
    let chat = chat_of(json!({
        "model": "fast",
        "input": [
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "weather in"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"c\":\"Oslo\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It rains."}]}
        ],
        "tools": [{"type": "function", "name": "weather", "description": "d",
                   "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "rules"},
            {"role": "user", "content": [
                {"type": "text", "text": "weather in"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"c\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {"role": "assistant", "content": "It rains."}
        ])
    );
    assert_eq!(
        chat["tools"],
        json!([{"type": "function", "function": {"name": "weather", "description": "d",
                 "parameters": {"type": "object"}, "strict": true}}])
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "weather"}})
    );
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(
        chat_of(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}))
            ["response_format"],
        json!({"type": "json_object"})
    );
}

#[test]
fn what_only_a_provider_keeps_is_named() {
    let native_only = |request: Value| {
        let body = request.to_string();
        ResponsesRequest::parse(body.as_bytes())
            .unwrap()
            .native_only
    };
    let base = |extra: Value| {
        let mut r = json!({"model": "fast", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    assert_eq!(native_only(base(json!({}))), None);
    assert_eq!(
        native_only(base(json!({"store": false, "previous_response_id": null}))),
        None
    );
    for (extra, param) in [
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"store": true}), "store"),
        (json!({"background": true}), "background"),
        (json!({"conversation": "conv_1"}), "conversation"),
        (
            json!({"tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}),
            "tools[1].type",
        ),
    ] {
        assert_eq!(
            native_only(base(extra.clone())).as_deref(),
            Some(param),
            "{extra}"
        );
    }
    for (bad, param) in [
        (json!({"input": "hi"}), "model"),
        (json!({"model": "m"}), "input"),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
        ),
        (json!({"model": "m", "input": 3}), "input"),
    ] {
        let body = bad.to_string();
        let err = ResponsesRequest::parse(body.as_bytes())
            .and_then(|r| r.to_chat())
            .unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some(param)), "{bad}");
    }
}

#[test]
fn a_native_body_is_the_clients_with_the_providers_model() {
    let c = config();
    let body = r#"{"model":"fast","input":[{"role":"user","content":"hi"}],"metadata":{"k":"v"},"store":false,"temperature":1.50,"service_tier":"auto"}"#;
    let req = ResponsesRequest::parse(body.as_bytes()).unwrap();
    let to_groq = String::from_utf8(req.native_body(&c.providers[0], "llama-x", None)).unwrap();
    // Byte for byte, but the model; the guarded fields withheld; nothing stored with the
    // router's key.
    assert_eq!(
        to_groq,
        r#"{"model":"llama-x","input":[{"role":"user","content":"hi"}],"temperature":1.50,"store":false}"#
    );
    // Together may get the metadata; a tier replaces the client's.
    let text = String::from_utf8(req.native_body(&c.providers[1], "m", Some("flex"))).unwrap();
    assert_eq!(
        text,
        r#"{"model":"m","input":[{"role":"user","content":"hi"}],"metadata":{"k":"v"},"temperature":1.50,"service_tier":"flex","store":false}"#
    );
}

#[test]
fn state_a_provider_keeps_needs_the_operators_leave() {
    let doc = json!({
        "providers": {
            "openai": {"keys": [{"id": "o", "secret": "O"}]},
            "keeper": {"preset": "openai", "keys": [{"id": "k", "secret": "K"}],
                       "pass_fields": ["store", "previous_response_id", "builtin_tools"]},
            "groq": {"keys": [{"id": "g", "secret": "G"}]}
        },
        "routes": {"fast": ["openai/m"]},
        "gateway": {"auth": false}
    });
    let c = Config::parse(&doc.to_string(), |_| None).unwrap();
    let by_name = |n: &str| c.providers.iter().find(|p| p.name == n).unwrap();
    let (openai, keeper, groq) = (by_name("openai"), by_name("keeper"), by_name("groq"));
    fn req(body: &str) -> ResponsesRequest<'_> {
        ResponsesRequest::parse(body.as_bytes()).unwrap()
    }
    let plain = req(r#"{"model":"m","input":"x"}"#);
    assert!(plain.served_by(openai) && plain.served_by(groq));
    for (body, field) in [
        (
            r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#,
            "previous_response_id",
        ),
        (r#"{"model":"m","input":"x","store":true}"#, "store"),
        (
            r#"{"model":"m","input":"x","tools":[{"type":"file_search"}]}"#,
            "builtin_tools",
        ),
    ] {
        let r = req(body);
        assert_eq!(r.state_field(), Some(field));
        assert!(
            !r.served_by(openai),
            "{body}: a native provider without leave"
        );
        assert!(!r.served_by(groq), "{body}");
        assert!(r.served_by(keeper), "{body}");
    }
    // With leave, the client's own `store` passes as written.
    let stored = req(r#"{"model":"m","input":"x","store":true,"previous_response_id":"resp_1"}"#);
    let text = String::from_utf8(stored.native_body(keeper, "m", None)).unwrap();
    assert_eq!(
        text,
        r#"{"model":"m","input":"x","store":true,"previous_response_id":"resp_1"}"#
    );
    let text = String::from_utf8(
        req(r#"{"model":"m","input":"x","store":false}"#).native_body(openai, "m", None),
    )
    .unwrap();
    assert_eq!(text, r#"{"model":"m","input":"x","store":false}"#);
}

fn meta() -> Meta {
    let body = json!({"model": "fast", "input": "hi", "instructions": "Be brief.",
                      "tools": [{"type": "function", "name": "f"}]})
    .to_string();
    let req = ResponsesRequest::parse(body.as_bytes()).unwrap();
    Meta {
        id: "resp_1".to_owned(),
        created_at: 1_700_000_000,
        echo: req.echo(),
    }
}

#[test]
fn a_chat_answer_becomes_a_response_object() {
    let chat = json!({
        "id": "c", "object": "chat.completion", "model": "llama-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 4}}
    });
    let out: Value =
        serde_json::from_slice(&response_from_chat(chat.to_string().as_bytes(), &meta()).unwrap())
            .unwrap();
    assert_eq!(out["object"], "response");
    assert_eq!(out["id"], "resp_1");
    assert_eq!(out["status"], "completed");
    assert_eq!(out["model"], "llama-x");
    assert_eq!(out["instructions"], "Be brief.");
    assert_eq!(out["tools"], json!([{"type": "function", "name": "f"}]));
    assert_eq!(out["text"], json!({"format": {"type": "text"}}));
    assert_eq!(
        out["output"],
        json!([
            {"type": "message", "id": "msg_resp_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
            {"type": "function_call", "id": "fc_resp_1_0", "call_id": "call_9", "name": "f",
             "arguments": "{\"a\":1}", "status": "completed"}
        ])
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
               "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 15})
    );
    let cut = json!({"model": "m", "choices": [{"finish_reason": "length",
                     "message": {"role": "assistant", "content": "abc"}}]});
    let out: Value =
        serde_json::from_slice(&response_from_chat(cut.to_string().as_bytes(), &meta()).unwrap())
            .unwrap();
    assert_eq!(
        (out["status"].clone(), out["incomplete_details"].clone()),
        (json!("incomplete"), json!({"reason": "max_output_tokens"}))
    );
    assert!(response_from_chat(b"{\"error\":{}}", &meta()).is_none());
}

/// The events of a translated stream: (type, data) in order.
fn translate(chunks: &[&str]) -> (Vec<(String, Value)>, bool) {
    let mut events = Events::new(meta());
    let mut out = Vec::new();
    for c in chunks {
        events.push(c.as_bytes(), &mut out);
    }
    events.end(&mut out);
    let text = String::from_utf8(out).unwrap();
    let parsed = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (head, data) = e.split_once('\n').unwrap();
            let kind = head.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], kind.as_str());
            (kind, data)
        })
        .collect();
    (parsed, events.complete())
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "model": "llama-x",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

#[test]
fn a_chat_stream_becomes_the_responses_events_in_order() {
    let stream = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hel"}), None),
        chunk(json!({"content": "lo"}), None),
        chunk(json!({}), Some("stop")),
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n".to_owned(),
    ];
    let whole = stream.concat();
    // Cut anywhere, the same events.
    let (events, complete) = translate(&[&whole]);
    for size in [1, 7, 50] {
        let parts: Vec<&str> = whole
            .as_bytes()
            .chunks(size)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(translate(&parts).0, events, "chunks of {size}");
    }
    assert!(complete);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let seq: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..10).collect::<Vec<u64>>());
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["model"], "llama-x");
    assert_eq!(events[4].1["delta"], "Hel");
    assert_eq!(events[6].1["text"], "Hello");
    let done = &events[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["usage"]["input_tokens"], 3);
    assert_eq!(done["usage"]["total_tokens"], 5);
}

#[test]
fn tool_calls_stream_as_function_call_items() {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        if let Some(name) = name {
            function["name"] = name.into();
        }
        let mut c = json!({"index": index, "type": "function", "function": function});
        if let Some(id) = id {
            c["id"] = id.into();
        }
        chunk(json!({"tool_calls": [c]}), None)
    };
    let stream = [
        chunk(json!({"content": "Checking."}), None),
        call(0, Some("call_a"), Some("weather"), ""),
        call(0, None, None, "{\"city\":"),
        call(0, None, None, "\"Oslo\"}"),
        call(1, Some("call_b"), Some("time"), "{}"),
        chunk(json!({}), Some("tool_calls")),
        "data: [DONE]\n\n".to_owned(),
    ];
    let (events, complete) = translate(&stream.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(complete);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[8].1["output_index"], 1);
    assert_eq!(events[8].1["item"]["call_id"], "call_a");
    assert_eq!(events[11].1["arguments"], "{\"city\":\"Oslo\"}");
    let output = &events[17].1["response"]["output"];
    assert_eq!(output[1]["name"], "weather");
    assert_eq!(output[2]["call_id"], "call_b");
    assert_eq!(output[2]["arguments"], "{}");
}

#[test]
fn a_cut_or_failing_stream_ends_with_the_error_event() {
    for stream in [
        vec![chunk(json!({"content": "Hel"}), None)],
        vec![
            chunk(json!({"content": "Hel"}), None),
            "data: {\"error\":{\"message\":\"x\"}}\n\n".to_owned(),
        ],
        vec![
            chunk(json!({"content": "Hel"}), None),
            "data: not json\n\n".to_owned(),
        ],
    ] {
        let (events, complete) = translate(&stream.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!complete);
        let (kind, last) = events.last().unwrap();
        assert_eq!(kind, "error");
        assert!(last["code"]
            .as_str()
            .unwrap()
            .starts_with("upstream_stream_"));
        assert!(!events.iter().any(|(k, _)| k == "response.completed"));
    }
    // The fixed event of a passed-through stream parses as the API's error event.
    let data: Value = serde_json::from_str(
        INTERRUPTED_EVENT
            .strip_prefix("event: error\ndata: ")
            .unwrap()
            .trim_end(),
    )
    .unwrap();
    assert_eq!(
        (data["type"].clone(), data["code"].clone()),
        (json!("error"), json!("upstream_stream_interrupted"))
    );
}

#[test]
fn schemas_and_tool_parameters_keep_the_clients_bytes() {
    // Not in alphabetical order: a model writes structured output in its schema's order.
    let schema = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}"#;
    let body = format!(
        r#"{{"model":"fast","input":"x","text":{{"format":{{"type":"json_schema","name":"p","schema":{schema},"strict":true}}}},"tools":[{{"type":"function","name":"f","parameters":{schema}}}]}}"#
    );
    let req = ResponsesRequest::parse(body.as_bytes()).unwrap();
    let chat = String::from_utf8(req.to_chat().unwrap()).unwrap();
    assert!(
        chat.contains(&format!(
            r#""response_format":{{"type":"json_schema","json_schema":{{"name":"p","schema":{schema},"strict":true}}}}"#
        )),
        "{chat}"
    );
    assert!(
        chat.contains(&format!(
            r#""tools":[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]"#
        )),
        "{chat}"
    );
}
