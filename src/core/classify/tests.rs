use super::*;
use serde_json::{json, Value};

fn config_with(routes: Value, groq_caps: Option<Value>) -> Config {
    let mut groq = json!({"keys": [{"id": "g", "secret": "G"}]});
    if let Some(caps) = groq_caps {
        groq["capabilities"] = caps;
    }
    let doc = json!({
        "providers": {
            "groq": groq,
            "together": {"keys": [{"id": "t", "secret": "T"}]},
            "openai": {"keys": [{"id": "o", "secret": "O"}]}
        },
        "routes": routes
    });
    Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| "k".into())
    })
    .unwrap()
}

fn config() -> Config {
    config_with(
        json!({
            "fast": ["groq/llama-3.1-8b-instant"],
            "slow": ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "openai/gpt-4o-mini"],
            "scout": ["groq/meta-llama/llama-4-scout-17b-16e-instruct"]
        }),
        None,
    )
}

/// About `n` estimated tokens of plain English words.
fn words(n: usize) -> String {
    "word ".repeat(n * 10 / 14)
}

fn request(model: &str, extra: Value) -> ChatRequest<'static> {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    // The request borrows its body; a test's may live as long as the test run.
    ChatRequest::parse(Box::leak(body.to_string().into_boxed_str()).as_bytes()).unwrap()
}

fn image() -> Value {
    json!([{"role": "user", "content": [{"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
}

fn audio() -> Value {
    json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
}

fn long(tokens: usize) -> Value {
    json!([{"role": "user", "content": words(tokens)}])
}

struct Case {
    name: &'static str,
    model: &'static str,
    extra: Value,
    path_header: Option<&'static str>,
    budget: Option<&'static str>,
    path: Path,
    reasons: &'static str,
    first: &'static str,
}

fn case(
    name: &'static str,
    model: &'static str,
    extra: Value,
    path: Path,
    reasons: &'static str,
    first: &'static str,
) -> Case {
    Case {
        name,
        model,
        extra,
        path_header: None,
        budget: None,
        path,
        reasons,
        first,
    }
}

fn with_header(mut c: Case, header: &'static str) -> Case {
    c.path_header = Some(header);
    c
}

fn with_budget(mut c: Case, budget: &'static str) -> Case {
    c.budget = Some(budget);
    c
}

use Path::{Fast, Slow};

fn cases() -> Vec<Case> {
    vec![
        case(
            "short plain text",
            "auto",
            json!({}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "json_object",
            "auto",
            json!({"response_format": {"type": "json_object"}}),
            Fast,
            "auto,structured",
            "groq",
        ),
        case(
            "json_schema",
            "auto",
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            Fast,
            "auto,structured",
            "groq",
        ),
        case(
            "plain text response_format",
            "auto",
            json!({"response_format": {"type": "text"}}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "tools",
            "auto",
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            Fast,
            "auto,structured",
            "groq",
        ),
        case(
            "tool_choice alone",
            "auto",
            json!({"tool_choice": "none"}),
            Fast,
            "auto,structured",
            "groq",
        ),
        case(
            "empty tools list",
            "auto",
            json!({"tools": []}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "streaming short",
            "auto",
            json!({"stream": true}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "long prompt",
            "auto",
            json!({"messages": long(3_000)}),
            Slow,
            "auto,long_prompt",
            "together",
        ),
        case(
            "long structured prompt stays fast",
            "auto",
            json!({"messages": long(3_000), "tools": [{"type": "function"}]}),
            Fast,
            "auto,structured",
            "groq",
        ),
        case(
            "long output max_tokens",
            "auto",
            json!({"max_tokens": 4_000}),
            Slow,
            "auto,long_output",
            "together",
        ),
        case(
            "long output max_completion_tokens",
            "auto",
            json!({"max_completion_tokens": 4_000}),
            Slow,
            "auto,long_output",
            "together",
        ),
        case(
            "the smaller of both limits counts",
            "auto",
            json!({"max_tokens": 4_000, "max_completion_tokens": 100}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "image",
            "auto",
            json!({"messages": image()}),
            Slow,
            "auto,needs_vision",
            "together",
        ),
        case(
            "audio goes to the one slow provider that takes it",
            "auto",
            json!({"messages": audio()}),
            Slow,
            "auto,needs_audio",
            "openai",
        ),
        case(
            "logprobs",
            "auto",
            json!({"logprobs": true}),
            Slow,
            "auto,needs_logprobs",
            "together",
        ),
        case(
            "top_logprobs",
            "auto",
            json!({"top_logprobs": 3}),
            Slow,
            "auto,needs_logprobs",
            "together",
        ),
        case(
            "logit_bias",
            "auto",
            json!({"logit_bias": {"1": 5}}),
            Slow,
            "auto,needs_logit_bias",
            "together",
        ),
        case(
            "n above 1",
            "auto",
            json!({"n": 2}),
            Slow,
            "auto,needs_n",
            "together",
        ),
        case(
            "logprobs false is stripped, not a need",
            "auto",
            json!({"logprobs": false}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "n of 1 is stripped, not a need",
            "auto",
            json!({"n": 1}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "empty logit_bias is stripped",
            "auto",
            json!({"logit_bias": {}}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "messages[].name is stripped",
            "auto",
            json!({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}),
            Fast,
            "auto,short",
            "groq",
        ),
        case(
            "context overflow",
            "auto",
            json!({"messages": long(140_000)}),
            Slow,
            "auto,exceeds_fast_context",
            "together",
        ),
        case(
            "over one minute of TPM",
            "auto",
            json!({"messages": long(5_200)}),
            Slow,
            "auto,exceeds_fast_tpm",
            "together",
        ),
        case(
            "structured but over TPM",
            "auto",
            json!({"messages": long(5_200), "response_format": {"type": "json_object"}}),
            Slow,
            "auto,exceeds_fast_tpm",
            "together",
        ),
        case(
            "short prompt, output over TPM",
            "auto",
            json!({"max_tokens": 7_000}),
            Slow,
            "auto,exceeds_fast_tpm",
            "together",
        ),
        with_budget(
            case(
                "tight budget with a long prompt",
                "auto",
                json!({"messages": long(3_000)}),
                Fast,
                "auto,tight_budget",
                "groq",
            ),
            "500",
        ),
        with_budget(
            case(
                "loose budget changes nothing",
                "auto",
                json!({"messages": long(3_000)}),
                Slow,
                "auto,long_prompt",
                "together",
            ),
            "60000",
        ),
        with_budget(
            case(
                "unparsable budget is ignored",
                "auto",
                json!({}),
                Fast,
                "auto,short",
                "groq",
            ),
            "soon",
        ),
        with_budget(
            case(
                "tight budget cannot carry an image",
                "auto",
                json!({"messages": image()}),
                Slow,
                "auto,needs_vision",
                "together",
            ),
            "100",
        ),
        with_header(
            case(
                "header fast with a long prompt",
                "auto",
                json!({"messages": long(3_000)}),
                Fast,
                "auto,header_fast",
                "groq",
            ),
            "fast",
        ),
        with_header(
            case(
                "header slow with a short prompt",
                "auto",
                json!({}),
                Slow,
                "auto,header_slow",
                "together",
            ),
            "slow",
        ),
        with_header(
            case(
                "header is case- and space-insensitive",
                "auto",
                json!({}),
                Slow,
                "auto,header_slow",
                "together",
            ),
            " SLOW ",
        ),
        with_header(
            case(
                "invalid header is reported and ignored",
                "auto",
                json!({}),
                Fast,
                "auto,header_invalid,short",
                "groq",
            ),
            "turbo",
        ),
        with_header(
            case(
                "header fast cannot carry an image",
                "auto",
                json!({"messages": image()}),
                Slow,
                "auto,header_fast,needs_vision,fallback_slow",
                "together",
            ),
            "fast",
        ),
        with_header(
            case(
                "header fast over TPM falls back",
                "auto",
                json!({"messages": long(5_200)}),
                Slow,
                "auto,header_fast,exceeds_fast_tpm,fallback_slow",
                "together",
            ),
            "fast",
        ),
        case("model fast", "fast", json!({}), Fast, "model_fast", "groq"),
        case(
            "model fast with a long prompt is honoured",
            "fast",
            json!({"messages": long(3_000)}),
            Fast,
            "model_fast",
            "groq",
        ),
        case(
            "model fast with an image falls back",
            "fast",
            json!({"messages": image()}),
            Slow,
            "model_fast,needs_vision,fallback_slow",
            "together",
        ),
        case(
            "model fast with logprobs falls back",
            "fast",
            json!({"logprobs": true}),
            Slow,
            "model_fast,needs_logprobs,fallback_slow",
            "together",
        ),
        case(
            "model fast over context falls back",
            "fast",
            json!({"messages": long(140_000)}),
            Slow,
            "model_fast,exceeds_fast_context,fallback_slow",
            "together",
        ),
        with_header(
            case(
                "model fast wins over a header",
                "fast",
                json!({}),
                Fast,
                "model_fast,header_ignored",
                "groq",
            ),
            "slow",
        ),
        case(
            "model slow",
            "slow",
            json!({}),
            Slow,
            "model_slow",
            "together",
        ),
        case(
            "model slow with json",
            "slow",
            json!({"response_format": {"type": "json_object"}}),
            Slow,
            "model_slow",
            "together",
        ),
        case(
            "pinned Groq model",
            "llama-3.1-8b-instant",
            json!({}),
            Fast,
            "model_pinned",
            "groq",
        ),
        case(
            "pinned GPU model",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            json!({}),
            Slow,
            "model_pinned",
            "together",
        ),
        case(
            "pinned route other than fast/slow",
            "scout",
            json!({}),
            Slow,
            "model_pinned",
            "groq",
        ),
        with_header(
            case(
                "pinned model wins over a header",
                "llama-3.1-8b-instant",
                json!({}),
                Fast,
                "model_pinned,header_ignored",
                "groq",
            ),
            "slow",
        ),
    ]
}

fn run<'c>(config: &'c Config, c: &Case) -> Result<Decision<'c>, RouterError> {
    let req = request(c.model, c.extra.clone());
    classify(
        config,
        &req,
        Hints {
            path: c.path_header,
            latency_budget_ms: c.budget,
        },
    )
}

#[test]
fn decision_table() {
    let config = config();
    let table = cases();
    assert!(table.len() >= 40);
    for c in &table {
        let d = run(&config, c).unwrap_or_else(|e| panic!("{}: {e:?}", c.name));
        assert_eq!(d.path, c.path, "{}", c.name);
        assert_eq!(d.reason_header(), c.reasons, "{}", c.name);
        let first = &config.providers[d.targets[0].provider].name;
        assert_eq!(first, c.first, "{}", c.name);
    }
}

#[test]
fn every_reason_code_is_reached() {
    let config = config();
    let mut seen: Vec<String> = cases()
        .iter()
        .flat_map(|c| {
            run(&config, c)
                .unwrap()
                .reason_header()
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // The reasons that need another configuration.
    let no_fast = config_with(json!({"slow": ["together/m"]}), None);
    seen.extend(
        classify(&no_fast, &request("auto", json!({})), Hints::default())
            .unwrap()
            .reason_header()
            .split(',')
            .map(str::to_owned),
    );
    let no_slow = config_with(json!({"fast": ["groq/llama-3.1-8b-instant"]}), None);
    seen.extend(
        classify(
            &no_slow,
            &request("auto", json!({"messages": long(3_000)})),
            Hints::default(),
        )
        .unwrap()
        .reason_header()
        .split(',')
        .map(str::to_owned),
    );
    let no_tools = config_with(
        json!({"fast": ["groq/x"], "slow": ["together/y"]}),
        Some(json!(["chat", "streaming"])),
    );
    seen.extend(
        classify(
            &no_tools,
            &request("auto", json!({"tools": [{"type": "function"}]})),
            Hints::default(),
        )
        .unwrap()
        .reason_header()
        .split(',')
        .map(str::to_owned),
    );
    let all = [
        Reason::Auto,
        Reason::ModelFast,
        Reason::ModelSlow,
        Reason::ModelPinned,
        Reason::HeaderFast,
        Reason::HeaderSlow,
        Reason::HeaderInvalid,
        Reason::HeaderIgnored,
        Reason::TightBudget,
        Reason::Structured,
        Reason::Short,
        Reason::LongPrompt,
        Reason::LongOutput,
        Reason::NeedsVision,
        Reason::NeedsAudio,
        Reason::NeedsLogprobs,
        Reason::NeedsLogitBias,
        Reason::NeedsN,
        Reason::NeedsOther,
        Reason::ExceedsFastContext,
        Reason::ExceedsFastTpm,
        Reason::FallbackSlow,
        Reason::NoFastRoute,
        Reason::NoSlowRoute,
    ];
    for r in all {
        assert!(
            seen.iter().any(|s| s == r.code()),
            "{} is never produced",
            r.code()
        );
    }
}

#[test]
fn missing_routes_are_reported() {
    let no_fast = config_with(json!({"slow": ["together/m"]}), None);
    let d = classify(&no_fast, &request("auto", json!({})), Hints::default()).unwrap();
    assert_eq!(
        (d.path, d.reason_header().as_str()),
        (Slow, "auto,short,no_fast_route")
    );
    let no_slow = config_with(json!({"fast": ["groq/llama-3.1-8b-instant"]}), None);
    let d = classify(
        &no_slow,
        &request("auto", json!({"messages": long(3_000)})),
        Hints::default(),
    )
    .unwrap();
    assert_eq!(
        (d.path, d.reason_header().as_str()),
        (Fast, "auto,long_prompt,no_slow_route")
    );
    // Without a slow route, what the fast route cannot hold has nowhere to go.
    let err = classify(
        &no_slow,
        &request("auto", json!({"messages": image()})),
        Hints::default(),
    )
    .unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(err.message().contains("vision"), "{}", err.message());
}

#[test]
fn without_fast_and_slow_routes_every_name_is_its_own_route() {
    let c = config_with(
        json!({"auto": ["together/m"], "fast-ish": ["groq/x"]}),
        None,
    );
    let d = classify(&c, &request("auto", json!({})), Hints::default()).unwrap();
    assert_eq!(d.reason_header(), "model_pinned");
    assert_eq!(d.targets[0].model, "m");
    let err = classify(&c, &request("fast", json!({})), Hints::default()).unwrap_err();
    assert_eq!(err.status(), 404);
}

#[test]
fn a_fast_only_configuration_refuses_what_it_cannot_hold_in_the_clients_terms() {
    let c = config_with(json!({"fast": ["groq/llama-3.1-8b-instant"]}), None);
    let err = classify(
        &c,
        &request("auto", json!({"messages": long(140_000)})),
        Hints::default(),
    )
    .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (400, Some("context_length_exceeded"))
    );
    assert_eq!(err.param(), Some("messages"));
    // Over the estimated TPM but with nowhere else to go: Groq decides.
    let d = classify(
        &c,
        &request("auto", json!({"messages": long(5_200)})),
        Hints::default(),
    )
    .unwrap();
    assert_eq!(
        (d.path, d.reason_header().as_str()),
        (Fast, "auto,long_prompt,no_slow_route")
    );
}

#[test]
fn the_fast_path_needs_one_target_with_every_need() {
    // Groq (with vision added) reads images, Cerebras gives logprobs, neither does both.
    let doc = json!({
        "providers": {
            "groq": {"capabilities": ["chat", "vision"], "keys": [{"id": "g", "secret": "G"}]},
            "cerebras": {"keys": [{"id": "c", "secret": "C"}]},
            "together": {"keys": [{"id": "t", "secret": "T"}]}
        },
        "routes": {"fast": ["groq/a", "cerebras/b"], "slow": ["together/c"]}
    });
    let c = Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| "k".into())
    })
    .unwrap();
    let req = request("auto", json!({"messages": image(), "logprobs": true}));
    let d = classify(&c, &req, Hints::default()).unwrap();
    assert_eq!(
        (d.path, d.reason_header().as_str()),
        (Slow, "auto,needs_logprobs")
    );
    assert_eq!(d.targets.len(), 1);
}

#[test]
fn a_fast_provider_without_tools_sends_tools_to_the_slow_path() {
    let c = config_with(
        json!({"fast": ["groq/x"], "slow": ["together/y"]}),
        Some(json!(["chat", "streaming"])),
    );
    let d = classify(
        &c,
        &request("auto", json!({"tools": [{"type": "function"}]})),
        Hints::default(),
    )
    .unwrap();
    assert_eq!(
        (d.path, d.reason_header().as_str()),
        (Slow, "auto,needs_other")
    );
}

#[test]
fn candidates_fall_back_to_the_other_route_only_when_it_fits() {
    let config = config();
    let names = |d: &Decision| -> Vec<String> {
        d.targets
            .iter()
            .map(|t| config.providers[t.provider].name.clone())
            .collect()
    };
    let fast = classify(&config, &request("auto", json!({})), Hints::default()).unwrap();
    assert_eq!(names(&fast), ["groq", "together", "openai"]);
    let slow_fits = classify(
        &config,
        &request("auto", json!({"messages": long(3_000)})),
        Hints::default(),
    )
    .unwrap();
    assert_eq!(names(&slow_fits), ["together", "openai", "groq"]);
    for blocked in [
        json!({"messages": image()}),
        json!({"messages": long(5_200)}),
        json!({"logprobs": true}),
    ] {
        let d = classify(&config, &request("auto", blocked.clone()), Hints::default()).unwrap();
        assert_eq!(names(&d), ["together", "openai"], "{blocked}");
    }
    // Only candidates that can serve the request are listed.
    let d = classify(
        &config,
        &request("auto", json!({"messages": audio()})),
        Hints::default(),
    )
    .unwrap();
    assert_eq!(names(&d), ["openai"]);
}

#[test]
fn pinned_models_that_cannot_serve_are_a_400_and_unknown_ones_a_404() {
    let config = config();
    let err = classify(
        &config,
        &request("llama-3.1-8b-instant", json!({"messages": image()})),
        Hints::default(),
    )
    .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(err.code(), Some("unsupported_parameter"));
    let err = classify(&config, &request("gpt-9", json!({})), Hints::default()).unwrap_err();
    assert_eq!(err.status(), 404);
}

#[test]
fn thresholds_come_from_the_configuration() {
    let doc = json!({
        "classifier": {"fast_max_prompt_tokens": 10, "tight_latency_budget_ms": 50},
        "providers": {"groq": {"keys": [{"id": "g", "secret": "G"}]}, "together": {"keys": [{"id": "t", "secret": "T"}]}},
        "routes": {"fast": ["groq/llama-3.1-8b-instant"], "slow": ["together/m"]}
    });
    let c = Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| "k".into())
    })
    .unwrap();
    let req = request("auto", json!({"messages": long(100)}));
    assert_eq!(
        classify(&c, &req, Hints::default())
            .unwrap()
            .reason_header(),
        "auto,long_prompt"
    );
    let hints = Hints {
        path: None,
        latency_budget_ms: Some("100"),
    };
    assert_eq!(
        classify(&c, &req, hints).unwrap().reason_header(),
        "auto,long_prompt"
    );
    let hints = Hints {
        path: None,
        latency_budget_ms: Some("50"),
    };
    assert_eq!(
        classify(&c, &req, hints).unwrap().reason_header(),
        "auto,tight_budget"
    );
}

fn routes(c: &Config) -> Routes<'_> {
    Routes {
        fast: c.targets("fast").unwrap_or_default(),
        slow: c.targets("slow").unwrap_or_default(),
    }
}

#[test]
fn wanted_reads_the_model_name_and_the_path_header() {
    let c = config();
    let r = routes(&c);
    let hints = |path| Hints {
        path,
        latency_budget_ms: None,
    };
    let mut reasons = Vec::new();
    assert_eq!(
        wanted("auto", &r, hints(Some(" FAST ")), &mut reasons),
        Some(Some(Path::Fast))
    );
    assert_eq!(reasons, [Reason::Auto, Reason::HeaderFast]);
    let mut reasons = Vec::new();
    assert_eq!(
        wanted("auto", &r, hints(Some("soon")), &mut reasons),
        Some(None)
    );
    assert_eq!(reasons, [Reason::Auto, Reason::HeaderInvalid]);
    let mut reasons = Vec::new();
    assert_eq!(
        wanted("slow", &r, hints(Some("fast")), &mut reasons),
        Some(Some(Path::Slow))
    );
    assert_eq!(reasons, [Reason::ModelSlow, Reason::HeaderIgnored]);
    let mut reasons = Vec::new();
    assert_eq!(wanted("scout", &r, hints(None), &mut reasons), None);
    assert_eq!(reasons, [Reason::ModelPinned]);
    // With neither route, `auto` is a name like any other.
    let bare = config_with(json!({"auto": ["groq/x"]}), None);
    let mut reasons = Vec::new();
    assert_eq!(
        wanted("auto", &routes(&bare), hints(None), &mut reasons),
        None
    );
}

#[test]
fn fit_names_what_the_fast_route_cannot_hold() {
    let c = config_with(
        json!({"fast": ["groq/llama-3.1-8b-instant"], "slow": ["together/m"]}),
        Some(json!(["chat", "streaming"])),
    );
    let r = routes(&c);
    let small = fit(&c, &r, &[Capability::Chat], 100);
    assert_eq!(small.blocker(), None);
    let tools = fit(&c, &r, &[Capability::Chat, Capability::Tools], 100);
    assert_eq!(tools.missing, Some(Capability::Tools));
    let huge = fit(&c, &r, &[Capability::Chat], u64::MAX / 2);
    assert!(huge.exceeds_context);
    assert_eq!(huge.blocker(), Some(Reason::ExceedsFastContext));
}

#[test]
fn path_for_falls_back_when_the_fast_route_cannot_hold_it_or_is_missing() {
    let c = config();
    let r = routes(&c);
    let blocked = Fit {
        missing: Some(Capability::Vision),
        exceeds_context: false,
        exceeds_tpm: false,
    };
    let fits = Fit {
        missing: None,
        exceeds_context: false,
        exceeds_tpm: false,
    };
    let never = |_: &mut Vec<Reason>| -> Path { unreachable!("not auto") };
    let mut reasons = Vec::new();
    assert_eq!(
        path_for(Some(Path::Fast), &blocked, &r, &mut reasons, never),
        Path::Slow
    );
    assert_eq!(reasons, [Reason::NeedsVision, Reason::FallbackSlow]);
    let mut reasons = Vec::new();
    assert_eq!(
        path_for(None, &fits, &r, &mut reasons, |_| Path::Fast),
        Path::Fast
    );
    let slow_only = config_with(json!({"slow": ["together/m"]}), None);
    let mut reasons = Vec::new();
    assert_eq!(
        path_for(
            Some(Path::Fast),
            &fits,
            &routes(&slow_only),
            &mut reasons,
            never
        ),
        Path::Slow
    );
    assert_eq!(reasons, [Reason::NoFastRoute]);
}

#[test]
fn candidates_are_the_paths_route_then_the_other_where_it_fits() {
    let c = config();
    let r = routes(&c);
    let fits = Fit {
        missing: None,
        exceeds_context: false,
        exceeds_tpm: false,
    };
    let names = |ts: Vec<&Target>| -> Vec<String> {
        ts.iter()
            .map(|t| format!("{}/{}", c.providers.get(t.provider).unwrap().name, t.model))
            .collect()
    };
    let fast_first = names(candidates(&c, Path::Fast, &r, &fits, &[Capability::Chat]));
    assert_eq!(
        fast_first,
        [
            "groq/llama-3.1-8b-instant",
            "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "openai/gpt-4o-mini"
        ]
    );
    let too_long = Fit {
        exceeds_context: true,
        ..fits
    };
    let slow_only = names(candidates(
        &c,
        Path::Slow,
        &r,
        &too_long,
        &[Capability::Chat],
    ));
    assert_eq!(
        slow_only,
        [
            "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "openai/gpt-4o-mini"
        ]
    );
}
