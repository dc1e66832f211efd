//! Benchmarks of the core's hot path: classification alone, and parse + classify, on chat
//! request bodies of about 1 KB, 16 KB and 128 KB; the quota ledger: an isolate admitting from
//! its lease and settling (the fast path's whole quota cost), and one bank call as its Durable
//! Object runs it (decode the command, apply, encode the changed row and the reply); and the
//! readers of the providers' rate-limit headers and 429 bodies. Run:
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
use edge_router::core::quota::bank::Dirty;
use edge_router::core::quota::lease::Want;
use edge_router::core::quota::{
    apply, Admission, Command, Effect, Holdings, KeyCard, ModelOption, Offer, OrgLedger, Reply,
    Shard, Usage,
};
use edge_router::core::ratelimit::retry_after_ms;
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
        let bytes = body(size);
        let req = ChatRequest::parse(&bytes).unwrap();
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

/// Groq's free-plan limits, raised so that the benchmark always finds room.
fn limits() -> Limits {
    Limits {
        rpm: Some(30_000_000),
        rpd: Some(14_400_000_000),
        tpm: Some(6_000_000_000),
        tpd: Some(500_000_000_000),
        max_output_tokens: Some(131_072),
    }
}

/// Two keys in each of four organizations.
fn offers() -> Vec<Offer> {
    (0..4)
        .map(|org| Offer {
            org: format!("org-{org}"),
            keys: (0..2)
                .map(|k| KeyCard {
                    id: format!("groq-{}", org * 2 + k),
                    fingerprint: format!("{:016x}", org * 2 + k),
                })
                .collect(),
        })
        .collect()
}

/// One organization's bank with traffic: spent on both models in the current minute and day,
/// leases out to a few isolates, and one key refused.
fn busy_bank() -> OrgLedger {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    let keys = &offers()[0].keys;
    for model in MODELS {
        let option = ModelOption {
            model: model.to_owned(),
            limits: limits(),
        };
        for _ in 0..40 {
            let _ = bank.reserve(
                std::slice::from_ref(&option),
                keys,
                900,
                NOW_MS - 20_000,
                &mut dirty,
            );
        }
        for holder in 0..8 {
            let want = Want {
                model: model.to_owned(),
                limits: limits(),
                requests: 100,
                tokens: 100_000,
            };
            let _ = bank.grant(
                &format!("i-{holder}"),
                &want,
                keys,
                NOW_MS - 1_000,
                &mut dirty,
            );
        }
    }
    bank
}

/// An isolate that holds a large lease on organization 0 for the first model.
fn isolate_with_lease() -> Holdings {
    let mut h = Holdings::new("i-bench");
    let mut bank = OrgLedger::default();
    let o = offers();
    let shard = Shard::new("groq", "org-0");
    // Enough traffic for the isolate to want a lease, then the background call that gets it.
    for i in 0..4 {
        if let Admission::Ask { keys, .. } =
            h.admit("groq", &o[..1], MODELS[0], &limits(), 900, None, NOW_MS + i)
        {
            let option = ModelOption {
                model: MODELS[0].to_owned(),
                limits: limits(),
            };
            let call = h.reserve(&shard, vec![option], keys, 900, NOW_MS + i);
            let reply = apply(&mut bank, call.command, NOW_MS + i, &mut Dirty::default());
            h.answered(&shard, call.id, &reply, NOW_MS + i);
        }
    }
    for call in h.due(NOW_MS + 5) {
        let reply = apply(&mut bank, call.command, NOW_MS + 5, &mut Dirty::default());
        h.answered(&call.shard, call.id, &reply, NOW_MS + 5);
    }
    h
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

/// What a bank's Durable Object does with one call, SQLite aside: decode the command, apply it
/// to the cached books, encode the rows it changed and the reply.
fn bank_step(bank: &mut OrgLedger, command_json: &str) -> (Vec<String>, String) {
    let command: Command = serde_json::from_str(command_json).unwrap();
    let mut dirty = Dirty::default();
    let reply = apply(bank, command, NOW_MS, &mut dirty);
    let rows = dirty
        .models
        .iter()
        .filter_map(|m| bank.models.get(m))
        .map(|b| serde_json::to_string(b).unwrap())
        .collect();
    (rows, serde_json::to_string(&reply).unwrap())
}

fn quota_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("quota");
    // The fast path's quota cost in the isolate: choose the organization, spend from the lease,
    // and settle the answer's usage into the lease. No call, no await.
    let o = offers();
    let holdings = isolate_with_lease();
    let shard = Shard::new("groq", "org-0");
    let key = o[0].keys[0].clone();
    let usage = Usage {
        prompt_tokens: 812,
        cached_tokens: 256,
        completion_tokens: 173,
    };
    group.bench_function("isolate_admit_and_settle_from_lease", |b| {
        b.iter_batched(
            || holdings.clone(),
            |mut h| {
                let ticket = admit_from_lease(&mut h, &o);
                h.settle(
                    &shard,
                    &key,
                    ticket,
                    Effect::Spent,
                    Some(usage),
                    None,
                    NOW_MS + 10,
                );
                h
            },
            BatchSize::SmallInput,
        )
    });
    // One bank call, as its object runs it.
    let bank = busy_bank();
    let option = ModelOption {
        model: MODELS[0].to_owned(),
        limits: limits(),
    };
    let reserve = Command::Reserve {
        holder: "i-bench".into(),
        batch: Default::default(),
        options: vec![option],
        keys: o[0].keys.clone(),
        tokens: 850,
    };
    let mut h = isolate_with_lease();
    let ticket = admit_from_lease(&mut h, &o);
    h.settle(
        &shard,
        &key,
        ticket,
        Effect::NotSpent,
        None,
        Some(report(RateLimitDialect::Groq, lookup(&groq_headers()))),
        NOW_MS + 10,
    );
    let exchange = h
        .due(NOW_MS + 5_000)
        .into_iter()
        .map(|c| c.command)
        .next()
        .unwrap();
    assert!(matches!(reply_of(&bank, &reserve), Reply::Reserved { .. }));
    for (label, command) in [
        ("bank_reserve_step", &reserve),
        ("bank_exchange_step", &exchange),
    ] {
        let json = serde_json::to_string(command).unwrap();
        group.bench_function(label, |b| {
            b.iter_batched(
                || bank.clone(),
                |mut bank| bank_step(&mut bank, black_box(&json)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// One request of the isolate, from its lease.
fn admit_from_lease(h: &mut Holdings, o: &[Offer]) -> edge_router::core::quota::Ticket {
    let admitted = h.admit(
        "groq",
        &o[..1],
        MODELS[0],
        &limits(),
        900,
        None,
        NOW_MS + 10,
    );
    let Admission::Admitted { ticket, .. } = admitted else {
        panic!("the lease has room: {admitted:?}")
    };
    ticket
}

fn reply_of(bank: &OrgLedger, command: &Command) -> Reply {
    apply(
        &mut bank.clone(),
        command.clone(),
        NOW_MS,
        &mut Dirty::default(),
    )
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
    group.bench_function("retry_after_ms", |b| {
        b.iter(|| retry_after_ms(black_box("6.78")))
    });
    group.bench_function("go_duration", |b| {
        b.iter(|| go_duration_ms(black_box("2m59.56s")))
    });
    group.finish();
}

criterion_group!(core, benches, quota_benches, header_benches);
criterion_main!(core);
