//! Benchmarks of the core's hot path: classification alone, and parse + classify, on chat
//! request bodies of about 1 KB, 16 KB and 128 KB. Run: `cargo bench --bench core` (or
//! `npm run bench`); docs/routing.md holds the latest medians.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a broken fixture should fail loudly"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edge_router::core::classify::{classify, Hints};
use edge_router::core::config::Config;
use edge_router::core::request::ChatRequest;
use serde_json::json;

fn config() -> Config {
    let doc = json!({
        "providers": {
            "groq": {"keys": [{"id": "g1", "secret": "G1", "org": "a"}, {"id": "g2", "secret": "G2", "org": "b"}]},
            "together": {"keys": [{"id": "t", "secret": "T"}]},
            "openai": {"keys": [{"id": "o", "secret": "O"}]}
        },
        "routes": {
            "fast": ["groq/llama-3.1-8b-instant", "groq/openai/gpt-oss-20b"],
            "slow": ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "openai/gpt-4o-mini"]
        }
    });
    Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| "k".to_owned())
    })
    .unwrap()
}

/// A realistic chat body of about `size` bytes: a system prompt, a tool, a JSON-mode request and
/// alternating turns of prose until the size is reached.
fn body(size: usize) -> Vec<u8> {
    let turn = "Could you look at the numbers from last quarter and tell me whether the trend in \
                churn is real, or just noise from the pricing change in March? ";
    let mut messages =
        vec![json!({"role": "system", "content": "You are a careful analyst. Answer in JSON."})];
    let mut i = 0;
    while serde_json::to_vec(&messages).unwrap().len() < size.saturating_sub(400) {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": turn}));
        i += 1;
    }
    serde_json::to_vec(&json!({
        "model": "auto",
        "messages": messages,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "max_tokens": 256,
        "temperature": 0.2
    }))
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let config = config();
    let sizes = [("1KB", 1_024), ("16KB", 16 * 1_024), ("128KB", 128 * 1_024)];

    let mut group = c.benchmark_group("classify");
    for (label, size) in sizes {
        let req = ChatRequest::parse(&body(size)).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(label), &req, |b, req| {
            b.iter(|| classify(black_box(&config), black_box(req), Hints::default()).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse_and_classify");
    for (label, size) in sizes {
        let bytes = body(size);
        group.bench_with_input(BenchmarkId::from_parameter(label), &bytes, |b, bytes| {
            b.iter(|| {
                let req = ChatRequest::parse(black_box(bytes)).unwrap();
                classify(&config, &req, Hints::default())
                    .map(|d| d.path)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(core, benches);
criterion_main!(core);
