use super::*;
use crate::core::config::Config;
use crate::core::quota::{Holdings, Source};

fn config(extra: serde_json::Value) -> Config {
    let mut doc = serde_json::json!({
        "providers": {"groq": {"keys": [{"id": "g1", "secret": "GROQ_KEY"}]}},
        "routes": {"fast": ["groq/llama-3.1-8b-instant"]},
        "tiers": {
            "free": {"requests_per_minute": 2, "tokens_per_day": 1000, "spend_per_day_usd": 0.5},
            "team": {"requests_per_minute": 100},
        },
        "users": {"algorithms": ["HS256"], "issuer": "i", "audience": "a", "default_tier": "free"},
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    Config::parse(&doc.to_string(), |name| {
        (name == "GROQ_KEY").then(|| "x".to_owned())
    })
    .unwrap()
}

fn user(name: &str, tier: Option<&str>) -> Caller {
    Caller::User(Identity {
        user: name.to_owned(),
        tier: tier.map(str::to_owned),
        routes: None,
    })
}

#[test]
fn each_caller_has_a_subject_and_a_bank_of_its_own() {
    assert_eq!(user("alice", None).subject(), "user:alice");
    assert_eq!(Caller::Key { id: "3f2a".into() }.subject(), "key:3f2a");
    assert_eq!(user("alice", None).shard().name(), "~callers/user:alice");
    assert_ne!(user("alice", None).shard(), user("bob", None).shard());
}

#[test]
fn tiers_come_from_the_token_the_default_or_the_keys_setting() {
    let c = config(serde_json::json!({
        "gateway": {"key_tier": "team", "key_tiers": {"abcdef012345": "free"}}
    }));
    assert_eq!(user("a", Some("team")).tier(&c).map(|t| t.0), Some("team"));
    // A tier the configuration does not define: the default.
    assert_eq!(user("a", Some("gold")).tier(&c).map(|t| t.0), Some("free"));
    assert_eq!(user("a", None).tier(&c).map(|t| t.0), Some("free"));
    let key = |id: &str| Caller::Key { id: id.into() };
    assert_eq!(key("abcdef012345").tier(&c).map(|t| t.0), Some("free"));
    assert_eq!(key("999999999999").tier(&c).map(|t| t.0), Some("team"));
    assert_eq!(Caller::Open.tier(&c), None);
    let err = Config::parse(
        &serde_json::json!({
            "providers": {"groq": {"keys": [{"id": "g1", "secret": "GROQ_KEY"}]}},
            "routes": {"fast": ["groq/llama-3.1-8b-instant"]},
            "gateway": {"key_tier": "nope"},
        })
        .to_string(),
        |_| None,
    )
    .unwrap_err();
    assert_eq!(err.path, "gateway.key_tier");
}

#[test]
fn a_caller_over_its_minute_is_refused_naming_the_limit_and_another_is_not() {
    let c = config(serde_json::json!({}));
    let (name, tier) = user("alice", None).tier(&c).unwrap();
    let mut banks = crate::core::quota::Banks::default();
    let mut holdings = Holdings::new("i-1");
    let now = 120_000;
    let mut book = |holdings: &mut Holdings, who: &Caller| {
        let shard = who.shard();
        match holdings.admit(BANKS, &who.offers(), MODEL, &tier.limits, 10, None, now) {
            crate::core::quota::Admission::Ask { keys, .. } => {
                let call = holdings.reserve(&shard, vec![option(tier)], keys, 10, now);
                let id = call.id;
                let reply = banks.call(&shard, call.command, now);
                holdings.answered(&shard, id, &reply, now);
                match reply {
                    crate::core::quota::Reply::Reserved { ticket, .. } => Ok(ticket),
                    crate::core::quota::Reply::NoRoom { until_ms, .. } => Err(until_ms),
                    other => panic!("{other:?}"),
                }
            }
            crate::core::quota::Admission::Admitted { ticket, .. } => Ok(ticket),
            crate::core::quota::Admission::Full { until_ms } => Err(until_ms),
            other => panic!("{other:?}"),
        }
    };
    let alice = user("alice", None);
    let bob = user("bob", None);
    // Two a minute: too few to lease, each booked with the caller's bank.
    for _ in 0..2 {
        let ticket = book(&mut holdings, &alice).unwrap();
        assert!(matches!(ticket.source, Source::Bank));
    }
    let until = book(&mut holdings, &alice).unwrap_err();
    let books = holdings.books(&alice.shard(), MODEL, now);
    let err = refusal(&alice, name, &tier.limits, &books, 10, until, now);
    assert_eq!(err.status(), 429);
    assert_eq!(err.code(), Some("caller_rate_limited"));
    assert!(
        err.message().contains("requests per minute"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("user alice"));
    assert_eq!(err.headers(), vec![("retry-after", "60".to_owned())]);
    // Another user is unaffected.
    assert!(book(&mut holdings, &bob).is_ok());
    // The caller's own headers: its minute.
    let h = headers(&tier.limits, &books, now);
    assert!(h.contains(&("x-ratelimit-limit-requests", "2".to_owned())));
    assert!(h.contains(&("x-ratelimit-remaining-requests", "0".to_owned())));
}

#[test]
fn the_day_is_named_before_the_minute() {
    let c = config(serde_json::json!({}));
    let (name, tier) = user("alice", None).tier(&c).unwrap();
    let mut books = Books::default();
    books.book(1, 995, 10_000);
    let err = refusal(
        &user("alice", None),
        name,
        &tier.limits,
        &books,
        10,
        0,
        10_000,
    );
    assert!(
        err.message().contains("tokens per day"),
        "{}",
        err.message()
    );
    assert_eq!(
        err.headers(),
        vec![("retry-after", (86_400 - 10).to_string())]
    );
}
