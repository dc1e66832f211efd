//! Benchmarks of the core's hot path: classification alone, and parse + classify, on chat
//! request bodies of about 1 KB, 16 KB and 128 KB; the quota ledger's reserve and settle, alone
//! and as the Durable Object runs them (decode the command, apply, encode the ledger and the
//! reply); and the readers of the providers' rate-limit headers and 429 bodies. Run:
//! `cargo bench --bench core` (or `npm run bench`, which also runs the end-to-end benchmark);
//! docs/performance.md holds the latest medians.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a benchmark: a broken fixture should fail loudly"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use edge_router::core::classify::{classify, Hints};
use edge_router::core::config::{Config, Limits, RateLimitDialect};
use edge_router::core::outcome::parse_retry_after;
use edge_router::core::quota::{apply, Command, Ledger, ModelOption, OwnedCandidate, Reply, Usage};
use edge_router::core::ratelimit::{go_duration_ms, refusal, report};
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

/// 2026-11-23T12:34:56.789Z, in the middle of a minute and of a day.
const NOW_MS: u64 = 1_795_437_296_789;
const MODELS: [&str; 2] = ["llama-3.1-8b-instant", "openai/gpt-oss-20b"];

/// Groq's free-plan limits of the two models, raised so that the benchmark always finds room.
fn model_options() -> Vec<ModelOption> {
    MODELS
        .iter()
        .zip([Some(0x5eed_u64), None])
        .map(|(model, prefix_hash)| ModelOption {
            model: (*model).to_owned(),
            limits: Limits {
                rpm: Some(30_000),
                rpd: Some(14_400_000),
                tpm: Some(6_000_000),
                tpd: Some(500_000_000),
            },
            prefix_hash,
            skip: Vec::new(),
        })
        .collect()
}

/// Two keys in each of four organizations.
fn candidates() -> Vec<OwnedCandidate> {
    (0..8)
        .map(|i| OwnedCandidate {
            org: format!("org-{}", i / 2),
            key_id: format!("groq-{i}"),
        })
        .collect()
}

/// A ledger with traffic: every organization has spent on both models in the current minute and
/// day (unevenly, so ranking has work to do), and one key has been refused.
fn busy_ledger() -> Ledger {
    let mut ledger = Ledger::default();
    let options = model_options();
    for round in 0..40_u64 {
        for org in 0..4_u64 {
            if round % (org + 1) != 0 {
                continue;
            }
            for option in &options {
                let name = format!("org-{org}");
                let ticket = ledger
                    .reserve(&name, &option.model, &option.limits, 900, NOW_MS - 20_000)
                    .unwrap();
                let usage = Usage {
                    prompt_tokens: 700,
                    cached_tokens: 100,
                    completion_tokens: 150 + round,
                };
                ledger.settle(ticket, usage);
            }
        }
    }
    ledger.disable_key("groq-3", 401);
    ledger
}

fn groq_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-remaining-requests", "14370"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-tokens", "5997"),
        ("x-ratelimit-reset-tokens", "30ms"),
    ]
}

fn openai_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-remaining-requests", "4999"),
        ("x-ratelimit-reset-requests", "12ms"),
        ("x-ratelimit-limit-tokens", "800000"),
        ("x-ratelimit-remaining-tokens", "799985"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]
}

/// The header lookup the Worker hands to `report`: a scan of the response's rate-limit headers.
fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

const GROQ_429: &[u8] = br#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 3513, Requested 3166. Please try again in 6.79s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing","type":"tokens","code":"rate_limit_exceeded"}}"#;

/// What the quota object does with one call, SQLite aside: decode the command, apply it to a
/// copy of the cached ledger, encode the ledger to store and the reply.
fn object_step(cached: &Ledger, command_json: &str) -> (String, String) {
    let command: Command = serde_json::from_str(command_json).unwrap();
    let mut ledger = cached.clone();
    let reply = apply(&mut ledger, command, NOW_MS);
    (
        serde_json::to_string(&ledger).unwrap(),
        serde_json::to_string(&reply).unwrap(),
    )
}

fn quota_benches(c: &mut Criterion) {
    let ledger = busy_ledger();
    let reserve = Command::Reserve {
        options: model_options(),
        tokens: 850,
        candidates: candidates(),
    };
    let ticket = match apply(&mut ledger.clone(), reserve.clone(), NOW_MS) {
        Reply::Reserved { ticket, .. } => ticket,
        other => panic!("the busy ledger has room: {other:?}"),
    };
    let settle = Command::Settle {
        ticket,
        usage: Some(Usage {
            prompt_tokens: 812,
            cached_tokens: 256,
            completion_tokens: 173,
        }),
        report: Some(report(RateLimitDialect::Groq, lookup(&groq_headers()))),
    };

    let mut group = c.benchmark_group("quota");
    for (label, command) in [("reserve", &reserve), ("settle", &settle)] {
        // A fresh copy of the ledger for every call, made outside the measurement.
        group.bench_function(label, |b| {
            b.iter_batched(
                || (ledger.clone(), command.clone()),
                |(mut ledger, command)| {
                    let reply = apply(&mut ledger, command, black_box(NOW_MS));
                    (ledger, reply)
                },
                BatchSize::SmallInput,
            )
        });
        let json = serde_json::to_string(command).unwrap();
        group.bench_function(format!("{label}_object_step"), |b| {
            b.iter(|| object_step(black_box(&ledger), black_box(&json)))
        });
    }
    group.finish();
}

fn header_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    for (label, dialect, headers) in [
        ("report_groq", RateLimitDialect::Groq, groq_headers()),
        ("report_openai", RateLimitDialect::OpenAi, openai_headers()),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| report(black_box(dialect), lookup(black_box(&headers))))
        });
    }
    group.bench_function("refusal_groq_429", |b| {
        b.iter(|| refusal(black_box(Some("7")), black_box(GROQ_429)))
    });
    group.bench_function("parse_retry_after", |b| {
        b.iter(|| parse_retry_after(black_box("6.78")))
    });
    group.bench_function("go_duration", |b| {
        b.iter(|| go_duration_ms(black_box("2m59.56s")))
    });
    group.finish();
}

criterion_group!(core, benches, quota_benches, header_benches);
criterion_main!(core);
