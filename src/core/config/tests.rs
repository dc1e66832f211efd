use super::*;
use serde_json::json;

const HASH_A: &str = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b";

fn secrets(name: &str) -> Option<String> {
    match name {
        "GROQ_KEY_1" => Some("gsk_one".into()),
        "GROQ_KEY_2" => Some(" gsk_two \n".into()),
        "TOGETHER_KEY" => Some("tg_key".into()),
        "GATEWAY_KEY_HASHES" => Some(format!("{HASH_A}, {}", HASH_A.to_uppercase())),
        _ => None,
    }
}

fn minimal() -> serde_json::Value {
    json!({
        "providers": {
            "groq": {"keys": [
                {"id": "g1", "secret": "GROQ_KEY_1", "org": "org-a"},
                {"id": "g2", "secret": "GROQ_KEY_2", "org": "org-a"},
                {"id": "g3", "secret": "GROQ_KEY_3", "org": "org-b"}
            ]},
            "together": {"keys": [{"id": "t1", "secret": "TOGETHER_KEY"}]}
        },
        "routes": {
            "fast": ["groq/llama-3.1-8b-instant"],
            "slow": ["together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "groq/llama-3.3-70b-versatile"]
        }
    })
}

fn parse(v: &serde_json::Value) -> Result<Config, ConfigError> {
    Config::parse(&v.to_string(), secrets)
}

#[test]
fn a_minimal_config_gets_the_presets() {
    let c = parse(&minimal()).unwrap();
    let groq = &c.providers[0];
    assert_eq!(groq.name, "groq");
    assert_eq!(groq.base_url, "https://api.groq.com/openai/v1");
    assert_eq!(groq.dialect, RateLimitDialect::Groq);
    assert_eq!(groq.max_tokens_field, MaxTokensField::MaxCompletionTokens);
    assert!(groq.capabilities.has(Capability::Tools));
    assert!(!groq.capabilities.has(Capability::Logprobs));
    assert_eq!(
        groq.limits["llama-3.1-8b-instant"],
        Limits {
            rpm: Some(30),
            rpd: Some(14_400),
            tpm: Some(6_000),
            tpd: Some(500_000),
            max_output_tokens: Some(131_072),
        }
    );
    let together = &c.providers[1];
    assert_eq!(together.base_url, "https://api.together.xyz/v1");
    assert_eq!(together.max_tokens_field, MaxTokensField::MaxTokens);
    assert!(together.capabilities.has(Capability::Embeddings));
}

#[test]
fn keys_are_grouped_by_organization_and_read_from_secrets() {
    let c = parse(&minimal()).unwrap();
    let keys = &c.providers[0].keys;
    assert_eq!(keys.len(), 3);
    assert_eq!(
        (keys[0].org.as_str(), keys[1].org.as_str()),
        ("org-a", "org-a")
    );
    assert_eq!(keys[2].org, "org-b");
    assert_eq!(keys[1].value.as_ref().unwrap().expose(), "gsk_two");
    assert_eq!(
        keys[2].value, None,
        "an unset secret leaves the key unusable"
    );
    // The org defaults to the key's id.
    assert_eq!(c.providers[1].keys[0].org, "t1");
    assert_eq!(c.providers[0].usable_key().unwrap().0.id, "g1");
}

#[test]
fn routes_map_aliases_and_concrete_models() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(
        c.model_names(),
        [
            "auto",
            "fast",
            "slow",
            "llama-3.1-8b-instant",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "llama-3.3-70b-versatile"
        ]
    );
    let slow = c.targets("slow").unwrap();
    assert_eq!(slow.len(), 2);
    assert_eq!(c.providers[slow[0].provider].name, "together");
    assert_eq!(slow[0].model, "meta-llama/Llama-3.3-70B-Instruct-Turbo");
    let auto: Vec<&str> = c
        .targets("auto")
        .unwrap()
        .iter()
        .map(|t| t.model.as_str())
        .collect();
    assert_eq!(
        auto,
        [
            "llama-3.1-8b-instant",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "llama-3.3-70b-versatile"
        ]
    );
    assert_eq!(c.targets("llama-3.3-70b-versatile").unwrap().len(), 1);
    assert!(c.targets("gpt-4").is_none());
    assert!(c.is_alias("fast") && c.is_alias("auto"));
    assert!(!c.is_alias("llama-3.1-8b-instant"));
}

#[test]
fn gateway_defaults_and_hashes() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.gateway.max_body_bytes, 1 << 20);
    assert_eq!(c.gateway.cors, CorsOrigins::List(vec![]));
    match &c.gateway.auth {
        GatewayAuth::Keys { secret, hashes } => {
            assert_eq!(secret, "GATEWAY_KEY_HASHES");
            assert_eq!(hashes.len(), 2);
            assert_eq!(hashes[0], hashes[1], "hex is case-insensitive");
            assert_eq!(hashes[0][0], 0x6b);
        }
        other => panic!("{other:?}"),
    }
    let mut v = minimal();
    v["gateway"] = json!({"auth": false, "cors_origins": ["*"], "max_body_bytes": 4096});
    let c = parse(&v).unwrap();
    assert_eq!(c.gateway.auth, GatewayAuth::Disabled);
    assert!(c.gateway.cors.allows("https://anything.example"));
    // Every request is logged unless the operator says otherwise.
    assert_eq!(c.gateway.log_requests, RequestLog::All);
    v["gateway"] = json!({"log_requests": "failures"});
    assert_eq!(
        parse(&v).unwrap().gateway.log_requests,
        RequestLog::Failures
    );
}

#[test]
fn overrides_beat_presets() {
    let mut v = minimal();
    v["providers"]["groq"]["base_url"] = json!("http://127.0.0.1:9999/openai/v1/");
    v["providers"]["groq"]["capabilities"] = json!(["chat", "logprobs"]);
    v["providers"]["groq"]["max_tokens_field"] = json!("max_tokens");
    v["providers"]["groq"]["limits"] =
        json!({"llama-3.1-8b-instant": {"rpm": 5}, "new-model": {"tpm": 100}});
    let c = parse(&v).unwrap();
    let g = &c.providers[0];
    assert_eq!(g.base_url, "http://127.0.0.1:9999/openai/v1");
    assert!(g.capabilities.has(Capability::Logprobs));
    assert!(!g.capabilities.has(Capability::Streaming));
    assert_eq!(g.max_tokens_field, MaxTokensField::MaxTokens);
    assert_eq!(g.limits["llama-3.1-8b-instant"].rpm, Some(5));
    assert_eq!(g.limits["llama-3.1-8b-instant"].tpm, Some(6_000));
    assert_eq!(g.limits["new-model"].tpm, Some(100));
}

#[test]
fn a_custom_provider_names_a_preset_or_a_base_url() {
    let mut v = minimal();
    v["providers"]["local"] =
        json!({"base_url": "http://127.0.0.1:1/v1", "keys": [{"id": "l", "secret": "LOCAL"}]});
    v["providers"]["groq2"] = json!({"preset": "groq", "keys": [{"id": "x", "secret": "X"}]});
    let c = parse(&v).unwrap();
    let local = c.providers.iter().find(|p| p.name == "local").unwrap();
    assert_eq!(local.dialect, RateLimitDialect::OpenAi);
    assert!(local.capabilities.has(Capability::Chat));
    let groq2 = c.providers.iter().find(|p| p.name == "groq2").unwrap();
    assert_eq!(groq2.base_url, "https://api.groq.com/openai/v1");
}

#[test]
fn every_error_names_its_path() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"providers": {}, "routes": {}, "extra": 1}), "extra"),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["keys"][2]["secrt"] = json!("X");
                v
            },
            "providers.groq.keys[2].secrt",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["keys"][1]["secret"] = json!(7);
                v
            },
            "providers.groq.keys[1].secret",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["keys"][2]["secret"] = json!("lower-case");
                v
            },
            "providers.groq.keys[2].secret",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["keys"][1]["id"] = json!("g1");
                v
            },
            "providers.groq.keys[1].id",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["keys"] = json!([]);
                v
            },
            "providers.groq.keys",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["preset"] = json!("grok");
                v
            },
            "providers.groq.preset",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["base_url"] = json!("ftp://x");
                v
            },
            "providers.groq.base_url",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["capabilities"] = json!(["chat", "telepathy"]);
                v
            },
            "providers.groq.capabilities[1]",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["max_tokens_field"] = json!("tokens");
                v
            },
            "providers.groq.max_tokens_field",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["groq"]["limits"] = json!({"m": {"rpx": 1}});
                v
            },
            "providers.groq.limits.m.rpx",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["mystery"] = json!({"keys": [{"id": "m", "secret": "M"}]});
                v
            },
            "providers.mystery",
        ),
        (
            {
                let mut v = minimal();
                v["providers"]["Bad Name"] =
                    json!({"preset": "groq", "keys": [{"id": "m", "secret": "M"}]});
                v
            },
            "providers.Bad Name",
        ),
        (
            {
                let mut v = minimal();
                v["routes"]["slow"][1] = json!("nobody/model");
                v
            },
            "routes.slow[1]",
        ),
        (
            {
                let mut v = minimal();
                v["routes"]["fast"][0] = json!("groq");
                v
            },
            "routes.fast[0]",
        ),
        (
            {
                let mut v = minimal();
                v["routes"]["fast"] = json!([]);
                v
            },
            "routes.fast",
        ),
        (
            {
                let mut v = minimal();
                v["routes"] = json!({});
                v
            },
            "routes",
        ),
        (
            json!({"providers": {}, "routes": {"a": ["x/y"]}}),
            "providers",
        ),
        (
            {
                let mut v = minimal();
                v["gateway"] =
                    json!({"cors_origins": ["https://ok.example", "https://bad.example/path"]});
                v
            },
            "gateway.cors_origins[1]",
        ),
        (
            {
                let mut v = minimal();
                v["gateway"] = json!({"max_body_bytes": 0});
                v
            },
            "gateway.max_body_bytes",
        ),
        (
            {
                let mut v = minimal();
                v["gateway"] = json!({"keys_secret": "bad name"});
                v
            },
            "gateway.keys_secret",
        ),
        (
            {
                let mut v = minimal();
                v["gateway"] = json!({"log_requests": "some"});
                v
            },
            "gateway.log_requests",
        ),
        (
            {
                let mut v = minimal();
                v["gateway"] = json!({"keys_secret": "WRONG_HASHES"});
                v
            },
            "secrets.WRONG_HASHES[0]",
        ),
    ];
    let lookup = |name: &str| match name {
        "WRONG_HASHES" => Some("sk-a-raw-key-not-a-hash".to_owned()),
        other => secrets(other),
    };
    for (v, want) in cases {
        let err = Config::parse(&v.to_string(), lookup).unwrap_err();
        assert_eq!(err.path, want, "{v}: {err:?}");
        assert!(!err.detail.is_empty());
        assert!(!err.detail.contains("sk-a-raw-key"), "{err:?}");
        assert!(!err.detail.contains("lower-case"), "{err:?}");
    }
}

#[test]
fn not_json_is_an_error_at_the_root() {
    for bad in ["", "{", "[]", "{} {}"] {
        let err = Config::parse(bad, secrets).unwrap_err();
        assert_eq!(err.path, "ROUTER_CONFIG", "{bad:?}");
    }
}

#[test]
fn secrets_never_print() {
    let c = parse(&minimal()).unwrap();
    let printed = format!("{c:?}");
    for value in ["gsk_one", "gsk_two", "tg_key"] {
        assert!(!printed.contains(value), "{value}");
    }
    assert!(printed.contains("[redacted]"));
}

#[test]
fn a_broken_admin_secret_closes_only_the_status_page() {
    let lookup = |name: &str| match name {
        "ADMIN_KEY_HASHES" => Some("not-a-hash".to_owned()),
        other => secrets(other),
    };
    let c = Config::parse(&minimal().to_string(), lookup).unwrap();
    assert!(matches!(c.gateway.auth, GatewayAuth::Keys { .. }));
    match &c.gateway.admin {
        GatewayAuth::Broken { error } => {
            assert_eq!(error.path, "secrets.ADMIN_KEY_HASHES[0]");
            assert!(!error.detail.contains("not-a-hash"));
        }
        other => panic!("{other:?}"),
    }
    let err = crate::core::auth::check(&c.gateway.admin, Some("Bearer x")).unwrap_err();
    assert_eq!((err.status(), err.code()), (503, Some("invalid_config")));
}

#[test]
fn plain_http_is_accepted_for_loopback_hosts_only() {
    for (url, ok) in [
        ("https://api.example.com/v1", true),
        ("http://127.0.0.1:8080/v1", true),
        ("http://127.9.0.1/v1", true),
        ("http://localhost:9999", true),
        ("http://LOCALHOST/v1", true),
        ("http://[::1]:8080/v1", true),
        ("http://api.example.com/v1", false),
        ("http://10.0.0.1/v1", false),
        ("http://127.0.0.1.evil.example/v1", false),
        ("http://127.0.0.1@evil.example/v1", false),
        ("http://localhost.evil.example/v1", false),
        ("ftp://127.0.0.1/v1", false),
    ] {
        let mut v = minimal();
        v["providers"]["together"]["base_url"] = json!(url);
        match parse(&v) {
            Ok(_) => assert!(ok, "{url} was accepted"),
            Err(e) => {
                assert!(!ok, "{url} was refused: {e:?}");
                assert_eq!(e.path, "providers.together.base_url", "{url}");
            }
        }
    }
}

#[test]
fn the_example_key_hashes_are_refused_outside_local_development() {
    let example = "39f9742666377d1b2d177efec3c73c95112c6c70f9ffe9b49abd1a2523295b86";
    let admin_example = "dd64c8e8eaafa1abb74fd2a2ccad64f4dcb9f2bd6fae158f50e000958395a29e";
    let with = |local_dev: bool, gateway: &str, admin: &str| {
        let (gateway, admin) = (gateway.to_owned(), admin.to_owned());
        Config::parse(&minimal().to_string(), move |name| match name {
            "GATEWAY_KEY_HASHES" => Some(gateway.clone()),
            "ADMIN_KEY_HASHES" => Some(admin.clone()),
            LOCAL_DEV_VAR if local_dev => Some("1".into()),
            other => secrets(other),
        })
    };
    // A deployment that kept the example gateway hash does not start.
    let err = with(false, &format!("{HASH_A},{example}"), HASH_A).unwrap_err();
    assert_eq!(err.path, "secrets.GATEWAY_KEY_HASHES[1]");
    assert!(err.detail.contains("example"), "{}", err.detail);
    assert!(!err.detail.contains(example), "the hash is not quoted");
    // The example admin hash closes the status page only.
    let c = with(false, HASH_A, admin_example).unwrap();
    assert!(matches!(c.gateway.admin, GatewayAuth::Broken { .. }));
    // Local development (`.dev.vars`) takes both.
    let c = with(true, example, admin_example).unwrap();
    assert!(matches!(c.gateway.admin, GatewayAuth::Keys { ref hashes, .. } if hashes.len() == 1));
}

#[test]
fn max_n_per_route_names_routes_and_stays_in_range() {
    let mut v = minimal();
    v["gateway"] = json!({"max_n_per_route": {"slow": 2}});
    assert_eq!(parse(&v).unwrap().gateway.max_n_per_route["slow"], 2);
    v["gateway"] = json!({"max_n_per_route": {"nowhere": 2}});
    assert_eq!(
        parse(&v).unwrap_err().path,
        "gateway.max_n_per_route.nowhere"
    );
    v["gateway"] = json!({"max_n_per_route": {"slow": 0}});
    assert_eq!(parse(&v).unwrap_err().path, "gateway.max_n_per_route.slow");
}

#[test]
fn a_route_target_may_name_a_service_tier() {
    let mut v = minimal();
    v["routes"]["fast"] = json!([
        {"target": "groq/llama-3.1-8b-instant", "service_tier": "flex"},
        {"target": "groq/llama-3.1-8b-instant", "service_tier": "on_demand"},
        "groq/llama-3.1-8b-instant"
    ]);
    let c = parse(&v).unwrap();
    let fast = c.targets("fast").unwrap();
    let seen: Vec<(&str, Option<&str>, &str)> = fast
        .iter()
        .map(|t| (t.model.as_str(), t.tier.as_deref(), t.name.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "llama-3.1-8b-instant",
                Some("flex"),
                "llama-3.1-8b-instant:flex"
            ),
            (
                "llama-3.1-8b-instant",
                Some("on_demand"),
                "llama-3.1-8b-instant"
            ),
            ("llama-3.1-8b-instant", None, "llama-3.1-8b-instant"),
        ]
    );
    // The concrete id offers every tier the routes name, and is listed once.
    assert_eq!(c.targets("llama-3.1-8b-instant").unwrap().len(), 3);
    let listed = c
        .model_names()
        .iter()
        .filter(|n| *n == "llama-3.1-8b-instant");
    assert_eq!(listed.count(), 1);
    for (target, path) in [
        (
            json!({"target": "groq/x", "service_tier": "turbo"}),
            "routes.fast[0].service_tier",
        ),
        (
            json!({"target": "groq/x", "tier": "flex"}),
            "routes.fast[0].tier",
        ),
        (json!({"service_tier": "flex"}), "routes.fast[0].target"),
        (json!({"target": "nobody/x"}), "routes.fast[0]"),
    ] {
        let mut v = minimal();
        v["routes"]["fast"] = json!([target]);
        assert_eq!(parse(&v).unwrap_err().path, path, "{target}");
    }
}
