use super::*;
use crate::core::config::RateLimitDialect;
use crate::core::ratelimit::{refusal, report};

const T0: u64 = 1_763_900_000_000 - 1_763_900_000_000 % DAY_MS; // midnight UTC

fn groq_8b() -> Limits {
    Limits {
        rpm: Some(30),
        rpd: Some(14_400),
        tpm: Some(6_000),
        tpd: Some(500_000),
    }
}

fn small() -> Limits {
    Limits {
        rpm: Some(10),
        rpd: Some(100),
        tpm: Some(1_000),
        tpd: Some(5_000),
    }
}

#[test]
fn exactly_the_limit_is_admitted_within_a_minute() {
    let mut l = Ledger::default();
    let admitted = (0..50)
        .filter(|i| l.reserve("org", "m", &small(), 10, T0 + i * 100).is_ok())
        .count();
    assert_eq!(admitted, 10);
    // The next minute has room again, the day keeps counting.
    assert!(l.reserve("org", "m", &small(), 10, T0 + MINUTE_MS).is_ok());
    assert_eq!(l.books("org", "m").rpd.used, 11);
}

#[test]
fn no_room_says_when() {
    let mut l = Ledger::default();
    for _ in 0..10 {
        let _ = l.reserve("org", "m", &small(), 1, T0 + 5_000).unwrap();
    }
    assert_eq!(
        l.room("org", "m", &small(), 1, T0 + 59_999),
        Err(NoRoom {
            until_ms: T0 + MINUTE_MS
        })
    );
    // A request larger than the minute's whole budget fits an empty minute, and only that.
    assert!(l.room("org", "m", &small(), 1_001, T0 + MINUTE_MS).is_ok());
    let _ = l
        .reserve("org", "m", &small(), 1_001, T0 + MINUTE_MS)
        .unwrap();
    assert_eq!(
        l.room("org", "m", &small(), 1, T0 + MINUTE_MS + 1),
        Err(NoRoom {
            until_ms: T0 + 2 * MINUTE_MS
        })
    );
}

#[test]
fn tokens_limit_admission_and_day_window_rolls_at_midnight() {
    let mut l = Ledger::default();
    let lim = small();
    let _ = l.reserve("o", "m", &lim, 900, T0 + 1_000).unwrap();
    assert!(
        l.reserve("o", "m", &lim, 200, T0 + 2_000).is_err(),
        "tpm 900 + 200 > 1000"
    );
    assert!(l.reserve("o", "m", &lim, 100, T0 + 2_000).is_ok());
    // Fill the day: 5000 tokens.
    let mut t = T0 + MINUTE_MS;
    let mut day_tokens = 1_000;
    while day_tokens + 1_000 <= 5_000 {
        let _ = l.reserve("o", "m", &lim, 1_000, t).unwrap();
        day_tokens += 1_000;
        t += MINUTE_MS;
    }
    assert_eq!(
        l.room("o", "m", &lim, 1, t),
        Err(NoRoom {
            until_ms: T0 + DAY_MS
        })
    );
    assert!(
        l.reserve("o", "m", &lim, 1_000, T0 + DAY_MS).is_ok(),
        "a new day"
    );
}

#[test]
fn settle_replaces_the_estimate_and_skips_cached_tokens() {
    let mut l = Ledger::default();
    let ticket = l.reserve("o", "m", &groq_8b(), 2_000, T0).unwrap();
    l.settle(
        ticket,
        Usage {
            prompt_tokens: 900,
            cached_tokens: 400,
            completion_tokens: 100,
        },
    );
    let b = l.books("o", "m");
    assert_eq!((b.tpm.used, b.tpd.used, b.rpm.used), (600, 600, 1));
}

#[test]
fn settling_after_the_window_rolled_touches_only_the_old_window() {
    let mut l = Ledger::default();
    let ticket = l.reserve("o", "m", &groq_8b(), 2_000, T0 + 59_000).unwrap();
    let _ = l.reserve("o", "m", &groq_8b(), 50, T0 + 61_000).unwrap();
    l.settle(
        ticket,
        Usage {
            prompt_tokens: 100,
            cached_tokens: 0,
            completion_tokens: 0,
        },
    );
    let b = l.books("o", "m");
    assert_eq!(b.tpm.used, 50, "the new minute is untouched");
    assert_eq!(b.tpd.used, 150, "the day has the real usage");
}

#[test]
fn release_returns_everything_and_never_goes_negative() {
    let mut l = Ledger::default();
    let ticket = l.reserve("o", "m", &groq_8b(), 500, T0).unwrap();
    l.release(ticket.clone());
    let b = l.books("o", "m");
    assert_eq!(
        (b.rpm.used, b.rpd.used, b.tpm.used, b.tpd.used),
        (0, 0, 0, 0)
    );
    // A second release of the same ticket (a bug elsewhere) cannot go below zero.
    l.release(ticket);
    let b = l.books("o", "m");
    assert_eq!((b.rpm.used, b.tpm.used), (0, 0));
}

#[test]
fn headers_tighten_the_books_never_loosen() {
    let mut l = Ledger::default();
    let _ = l.reserve("o", "m", &groq_8b(), 100, T0).unwrap();
    let h = [
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-remaining-requests", "14000"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-tokens", "1000"),
        ("x-ratelimit-reset-tokens", "50s"),
    ];
    let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    l.observe("o", "m", &report(RateLimitDialect::Groq, get), T0 + 10);
    let b = l.books("o", "m");
    assert_eq!((b.rpd.used, b.tpm.used), (400, 5_000));
    assert!(l.room("o", "m", &groq_8b(), 1_500, T0 + 20).is_err());
    // A later report that says more is left does not undo what the ledger knows.
    let h2 = [
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-tokens", "5900"),
    ];
    let get2 = |n: &str| h2.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    l.observe("o", "m", &report(RateLimitDialect::Groq, get2), T0 + 30);
    assert_eq!(l.books("o", "m").tpm.used, 5_000);
}

#[test]
fn a_429_cools_down_by_retry_after_window_or_default() {
    let body = br#"{"error":{"message":"... on tokens per minute (TPM): Limit 6000, Used 5900, Requested 300. Please try again in 6.78s."}}"#;
    let cases: Vec<(Refusal, u64)> = vec![
        (refusal(Some("7"), body), T0 + 1_000 + 7_000),
        (refusal(None, body), T0 + 1_000 + 6_780),
        (
            Refusal {
                window: Some(Window::TokensMinute),
                retry_after_ms: None,
                billing: false,
            },
            T0 + MINUTE_MS,
        ),
        (
            Refusal {
                window: Some(Window::RequestsDay),
                retry_after_ms: None,
                billing: false,
            },
            T0 + DAY_MS,
        ),
        (Refusal::default(), T0 + 1_000 + DEFAULT_COOLDOWN_MS),
        (
            Refusal {
                window: None,
                retry_after_ms: Some(5),
                billing: true,
            },
            T0 + 1_000 + BILLING_COOLDOWN_MS,
        ),
    ];
    for (r, until) in cases {
        let mut l = Ledger::default();
        l.refused("o", "m", &r, T0 + 1_000);
        assert_eq!(
            l.room("o", "m", &groq_8b(), 1, T0 + 1_000),
            Err(NoRoom { until_ms: until }),
            "{r:?}"
        );
        assert!(l.room("o", "m", &groq_8b(), 1, until).is_ok(), "{r:?}");
    }
}

#[test]
fn choose_by_headroom_skipping_full_cooled_and_disabled() {
    let mut l = Ledger::default();
    let lim = small();
    let a = Candidate {
        org: "org-a",
        key_id: "a1",
    };
    let b = Candidate {
        org: "org-b",
        key_id: "b1",
    };
    let c = Candidate {
        org: "org-c",
        key_id: "c1",
    };
    // org-a has used 8 of 10 requests, org-b 2.
    for _ in 0..8 {
        let _ = l.reserve("org-a", "m", &lim, 1, T0).unwrap();
    }
    for _ in 0..2 {
        let _ = l.reserve("org-b", "m", &lim, 1, T0).unwrap();
    }
    assert_eq!(choose(&l, &[a, b], "m", &lim, 1, None, T0), Ok(b));
    l.refused(
        "org-b",
        "m",
        &Refusal {
            window: None,
            retry_after_ms: Some(30_000),
            billing: false,
        },
        T0,
    );
    assert_eq!(choose(&l, &[a, b], "m", &lim, 1, None, T0), Ok(a));
    l.disable_key("a1", 401);
    assert_eq!(
        choose(&l, &[a, b], "m", &lim, 1, None, T0),
        Err(NoRoom {
            until_ms: T0 + 30_000
        })
    );
    assert_eq!(choose(&l, &[a, b, c], "m", &lim, 1, None, T0), Ok(c));
}

#[test]
fn the_same_prefix_stays_on_the_same_organization_while_it_has_room() {
    let lim = Limits {
        rpm: Some(1_000),
        ..Limits::default()
    };
    let orgs = [
        Candidate {
            org: "org-a",
            key_id: "a",
        },
        Candidate {
            org: "org-b",
            key_id: "b",
        },
        Candidate {
            org: "org-c",
            key_id: "c",
        },
    ];
    let mut l = Ledger::default();
    let prefix = 0x1234_5678_9abc_def0;
    let first = choose(&l, &orgs, "gpt-oss", &lim, 1, Some(prefix), T0).unwrap();
    for i in 0..50 {
        let _ = l.reserve(first.org, "gpt-oss", &lim, 1, T0 + i).unwrap();
        assert_eq!(
            choose(&l, &orgs, "gpt-oss", &lim, 1, Some(prefix), T0 + i).unwrap(),
            first
        );
    }
    // Different prefixes spread across the organizations.
    let mut seen = std::collections::BTreeSet::new();
    for p in 0..64u64 {
        seen.insert(
            choose(&Ledger::default(), &orgs, "gpt-oss", &lim, 1, Some(p), T0)
                .unwrap()
                .org,
        );
    }
    assert_eq!(seen.len(), 3);
    // When the preferred organization is out of room, another takes over.
    l.refused(first.org, "gpt-oss", &Refusal::default(), T0 + 100);
    assert_ne!(
        choose(&l, &orgs, "gpt-oss", &lim, 1, Some(prefix), T0 + 100)
            .unwrap()
            .org,
        first.org
    );
}

#[test]
fn the_ledger_round_trips_through_json() {
    let mut l = Ledger::default();
    let _ = l.reserve("o", "m", &groq_8b(), 10, T0).unwrap();
    l.disable_key("k", 403);
    let json = serde_json::to_string(&l).unwrap();
    assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), l);
}

#[test]
fn commands_round_trip_and_apply() {
    let mut l = Ledger::default();
    let reserve = Command::Reserve {
        options: vec![ModelOption {
            model: "m".into(),
            limits: small(),
            prefix_hash: None,
            skip: Vec::new(),
        }],
        tokens: 100,
        candidates: vec![
            OwnedCandidate {
                org: "a".into(),
                key_id: "a1".into(),
            },
            OwnedCandidate {
                org: "b".into(),
                key_id: "b1".into(),
            },
        ],
    };
    let wire = serde_json::to_string(&reserve).unwrap();
    assert!(wire.contains(r#""op":"reserve""#), "{wire}");
    let reply = apply(&mut l, serde_json::from_str(&wire).unwrap(), T0);
    let Reply::Reserved {
        org,
        key_id,
        ticket,
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!((org.as_str(), key_id.as_str()), ("a", "a1"));
    // A 429 on org a: released, cooled down; the next reservation goes to b.
    let refusal = Refusal {
        window: Some(Window::RequestsMinute),
        retry_after_ms: Some(20_000),
        billing: false,
    };
    assert_eq!(
        apply(
            &mut l,
            Command::Refused {
                ticket,
                refusal,
                report: None
            },
            T0 + 10
        ),
        Reply::Done
    );
    assert_eq!(l.books("a", "m").rpm.used, 0);
    let Reply::Reserved { org, ticket, .. } = apply(&mut l, reserve.clone(), T0 + 20) else {
        panic!()
    };
    assert_eq!(org, "b");
    // A 401 on b's key disables it; nothing is left.
    apply(
        &mut l,
        Command::Disable {
            ticket,
            key_id: "b1".into(),
            status: 401,
        },
        T0 + 30,
    );
    assert_eq!(
        apply(&mut l, reserve, T0 + 40),
        Reply::NoRoom {
            until_ms: T0 + 10 + 20_000
        }
    );
    let Reply::Status { ledger, .. } = apply(&mut l, Command::Status, T0 + 50) else {
        panic!()
    };
    assert_eq!(ledger.disabled_keys.get("b1"), Some(&401));
    assert!(!Command::Status.writes());
}

#[test]
fn prefix_hash_follows_the_static_prefix_only() {
    use crate::core::request::ChatRequest;
    let req = |system: &str, user: &str| {
        let body = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]});
        ChatRequest::parse(body.to_string().as_bytes()).unwrap()
    };
    assert_eq!(
        prefix_hash(&req("be brief", "hi")),
        prefix_hash(&req("be brief", "other question"))
    );
    assert_ne!(
        prefix_hash(&req("be brief", "hi")),
        prefix_hash(&req("be long", "hi"))
    );
    assert!(caches_prompts("openai/gpt-oss-120b") && caches_prompts("moonshotai/kimi-k2-instruct"));
    assert!(!caches_prompts("llama-3.1-8b-instant"));
}

#[test]
fn status_view_shows_windows_cooldowns_and_key_ids() {
    let mut l = Ledger::default();
    let _ = l.reserve("org-a", "m", &small(), 7, T0 + 1_000).unwrap();
    l.refused(
        "org-a",
        "m",
        &Refusal {
            window: None,
            retry_after_ms: Some(5_000),
            billing: false,
        },
        T0 + 1_000,
    );
    l.disable_key("k2", 401);
    let limits = BTreeMap::from([("m".to_owned(), small())]);
    let v = status_view(&l, &limits, T0 + 2_000);
    let m = &v["organizations"]["org-a"]["m"];
    assert_eq!(
        m["requests_per_minute"],
        serde_json::json!({"used": 1, "limit": 10, "resets_at_ms": T0 + MINUTE_MS})
    );
    assert_eq!(m["tokens_per_day"]["used"], 7);
    assert_eq!(m["cooldown_until_ms"], T0 + 6_000);
    assert_eq!(
        v["disabled_keys"],
        serde_json::json!([{"key_id": "k2", "status": 401}])
    );
}

#[test]
fn settle_then_observe_keeps_the_stricter_count() {
    let mut l = Ledger::default();
    let ticket = l.reserve("o", "m", &groq_8b(), 1_050, T0).unwrap();
    let report = Report {
        tokens_minute: Some(WindowReport {
            limit: Some(6_000),
            remaining: Some(5_000),
            reset_ms: None,
        }),
        ..Report::default()
    };
    let usage = Usage {
        prompt_tokens: 10,
        cached_tokens: 0,
        completion_tokens: 2,
    };
    apply(
        &mut l,
        Command::Settle {
            ticket,
            usage: Some(usage),
            report: Some(report),
        },
        T0 + 5,
    );
    assert_eq!(
        l.books("o", "m").tpm.used,
        1_000,
        "the provider's count wins over 12"
    );
}

#[test]
fn one_reservation_tries_the_models_in_order() {
    let mut l = Ledger::default();
    let tight = Limits {
        rpm: Some(1),
        ..Limits::default()
    };
    let command = Command::Reserve {
        options: vec![
            ModelOption {
                model: "first".into(),
                limits: tight,
                prefix_hash: None,
                skip: Vec::new(),
            },
            ModelOption {
                model: "second".into(),
                limits: tight,
                prefix_hash: None,
                skip: Vec::new(),
            },
        ],
        tokens: 1,
        candidates: vec![OwnedCandidate {
            org: "a".into(),
            key_id: "a1".into(),
        }],
    };
    let models: Vec<String> = (0..3)
        .map(|_| match apply(&mut l, command.clone(), T0) {
            Reply::Reserved { model, .. } => model,
            Reply::NoRoom { until_ms } => format!("no room until {}", until_ms - T0),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(models, ["first", "second", "no room until 60000"]);
}

#[test]
fn plan_groups_consecutive_targets_of_a_tracked_provider() {
    use crate::core::config::Config;
    let doc = serde_json::json!({
        "providers": {
            "groq": {"keys": [{"id": "g1", "secret": "G1", "org": "a"}, {"id": "g2", "secret": "G2", "org": "b"}]},
            "together": {"keys": [{"id": "t", "secret": "T"}]}
        },
        "routes": {"fast": ["groq/llama-3.1-8b-instant", "groq/openai/gpt-oss-20b", "together/x", "groq/qwen/qwen3-32b", "groq/untracked"]}
    });
    let c = Config::parse(&doc.to_string(), |n| (n == "G1").then(|| "k".into())).unwrap();
    let targets: Vec<&crate::core::config::Target> = c.targets("fast").unwrap().iter().collect();
    let steps = plan(&c, &targets, 42);
    let shape: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::Direct(t) => format!("direct {}", t.model),
            Step::Reserve {
                provider,
                options,
                candidates,
                missing_secrets,
                ..
            } => {
                let models: Vec<String> = options
                    .iter()
                    .map(|o| {
                        format!(
                            "{}{}",
                            o.model,
                            if o.prefix_hash.is_some() { "#" } else { "" }
                        )
                    })
                    .collect();
                let keys: Vec<&str> = candidates.iter().map(|k| k.key_id.as_str()).collect();
                format!(
                    "reserve {} {:?} keys {:?} missing {:?}",
                    provider.name, models, keys, missing_secrets
                )
            }
        })
        .collect();
    assert_eq!(
        shape,
        [
            r#"reserve groq ["llama-3.1-8b-instant", "openai/gpt-oss-20b#"] keys ["g1"] missing ["G2"]"#,
            "direct x",
            r#"reserve groq ["qwen/qwen3-32b"] keys ["g1"] missing ["G2"]"#,
            "direct untracked",
        ]
    );
}
