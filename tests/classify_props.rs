//! Property tests of the classifier: on any request the parser accepts it never panics, it is
//! deterministic, and a pinned model is honoured (every candidate serves that very model).

#![cfg(not(target_arch = "wasm32"))]
#![expect(
    clippy::unwrap_used,
    reason = "a test: a broken fixture should fail loudly"
)]

use edge_router::core::classify::{classify, Hints};
use edge_router::core::config::Config;
use edge_router::core::request::ChatRequest;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> Config {
    let doc = json!({
        "providers": {
            "groq": {"keys": [{"id": "g", "secret": "G"}]},
            "together": {"keys": [{"id": "t", "secret": "T"}]},
            "openai": {"keys": [{"id": "o", "secret": "O"}]}
        },
        "routes": {
            "fast": ["groq/llama-3.1-8b-instant", "groq/qwen/qwen3-32b"],
            "slow": ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "openai/gpt-4o-mini"],
            "vision": ["openai/gpt-4o"]
        }
    });
    Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| "k".to_owned())
    })
    .unwrap()
}

const MODELS: &[&str] = &[
    "auto",
    "fast",
    "slow",
    "vision",
    "llama-3.1-8b-instant",
    "qwen/qwen3-32b",
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "gpt-4o-mini",
    "gpt-4o",
    "unknown-model",
];
const PINNED: &[&str] = &[
    "llama-3.1-8b-instant",
    "qwen/qwen3-32b",
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "gpt-4o-mini",
    "gpt-4o",
];

fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9 ,.!?\\n\\u{4e00}-\\u{4e10}\\u{0400}-\\u{0410}]{0,400}".prop_map(Value::from),
        (1usize..4000).prop_map(|n| Value::from("word ".repeat(n))),
        Just(json!([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])),
        Just(json!([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}])),
        Just(json!([{"type": "text", "text": "hi"}])),
        Just(Value::Null),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ]),
        content(),
        prop::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(role, content, name)| {
            let mut m = json!({"role": role, "content": content});
            if let Some(n) = name {
                m["name"] = Value::from(n);
            }
            m
        })
}

prop_compose! {
    fn request_body(models: &'static [&'static str])(
        model in prop::sample::select(models),
        messages in prop::collection::vec(message(), 1..5),
        stream in prop::option::of(any::<bool>()),
        max_tokens in prop::option::of(0u64..200_000),
        max_completion_tokens in prop::option::of(0u64..200_000),
        n in prop::option::of(1u64..4),
        logprobs in prop::option::of(any::<bool>()),
        top_logprobs in prop::option::of(0u64..5),
        bias in any::<bool>(),
        tools in any::<bool>(),
        format in prop::option::of(prop::sample::select(vec!["text", "json_object", "json_schema"])),
    ) -> Value {
        let mut b = json!({"model": model, "messages": messages});
        if let Some(v) = stream { b["stream"] = v.into(); }
        if let Some(v) = max_tokens { b["max_tokens"] = v.into(); }
        if let Some(v) = max_completion_tokens { b["max_completion_tokens"] = v.into(); }
        if let Some(v) = n { b["n"] = v.into(); }
        if let Some(v) = logprobs { b["logprobs"] = v.into(); }
        if let Some(v) = top_logprobs { b["top_logprobs"] = v.into(); }
        if bias { b["logit_bias"] = json!({"42": -100}); }
        if tools { b["tools"] = json!([{"type": "function", "function": {"name": "f"}}]); }
        if let Some(f) = format { b["response_format"] = json!({"type": f}); }
        b
    }
}

fn hints() -> impl Strategy<Value = (Option<String>, Option<String>)> {
    (
        prop::option::of(prop_oneof![
            Just("fast".to_owned()),
            Just("slow".to_owned()),
            "\\PC{0,8}"
        ]),
        prop::option::of(prop_oneof![
            (0u64..100_000).prop_map(|n| n.to_string()),
            "\\PC{0,8}"
        ]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn total_and_deterministic(body in request_body(MODELS), (path, budget) in hints()) {
        let config = config();
        let text = body.to_string();
        let req = ChatRequest::parse(text.as_bytes()).unwrap();
        let h = Hints { path: path.as_deref(), latency_budget_ms: budget.as_deref() };
        let first = classify(&config, &req, h);
        let second = classify(&config, &req, h);
        prop_assert_eq!(&first, &second);
        if let Ok(d) = first {
            prop_assert!(!d.targets.is_empty());
            prop_assert!(!d.reasons.is_empty());
            // No candidate appears twice.
            for (i, t) in d.targets.iter().enumerate() {
                prop_assert!(!d.targets[i + 1..].contains(t));
            }
        }
    }

    #[test]
    fn honours_a_pinned_model(body in request_body(PINNED), (path, budget) in hints()) {
        let config = config();
        let text = body.to_string();
        let req = ChatRequest::parse(text.as_bytes()).unwrap();
        let h = Hints { path: path.as_deref(), latency_budget_ms: budget.as_deref() };
        match classify(&config, &req, h) {
            Ok(d) => {
                prop_assert!(d.targets.iter().all(|t| t.model == req.model));
                prop_assert_eq!(d.reasons[0].code(), "model_pinned");
            }
            // A pinned model that cannot serve the request is the client's to fix, never
            // silently swapped for another model.
            Err(e) => prop_assert_eq!(e.status(), 400),
        }
    }

    #[test]
    fn parse_then_classify_never_panics_on_mutated_bodies(
        body in request_body(MODELS),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        // Valid bodies with a few bytes overwritten: many still parse, with odd values.
        let config = config();
        let mut bytes = body.to_string().into_bytes();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(req) = ChatRequest::parse(&bytes) {
            if let Ok(d) = classify(&config, &req, Hints::default()) {
                prop_assert!(!d.targets.is_empty());
            }
        }
    }
}
