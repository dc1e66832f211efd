use super::*;
use crate::core::config::access::{build_users, parse_jwks, RawUsers};
use std::collections::BTreeMap;

fn users(algorithms: &[&str]) -> Users {
    let raw: RawUsers = serde_json::from_value(serde_json::json!({
        "algorithms": algorithms,
        "issuer": "https://app.example",
        "audience": "router",
        "jwks": {"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "ed-1"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa-1", "alg": "RS256"},
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "ec-1"},
        ]},
        "routes_claim": "routes",
        "tier_claim": "tier",
        "origin_claim": "origin",
    }))
    .unwrap();
    build_users(raw, &BTreeMap::new(), &|name| {
        (name == "USER_TOKEN_SECRET").then(|| "hs-secret".to_owned())
    })
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn jwt(header: serde_json::Value, claims: serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(b"sig")
    )
}

fn claims(extra: serde_json::Value) -> Map<String, Value> {
    let mut c = serde_json::json!({
        "iss": "https://app.example", "aud": "router", "sub": "alice", "exp": 1_000_100
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.as_object().unwrap().clone()
}

fn reason(err: RouterError) -> String {
    match err {
        RouterError::InvalidToken { reason } => reason,
        other => panic!("not a token refusal: {other:?}"),
    }
}

#[test]
fn base64url_round_trips_and_refuses_what_is_not() {
    for len in 0..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(base64url(&b64(&bytes)).unwrap(), bytes, "{len}");
    }
    assert_eq!(base64url("aGk=").unwrap(), b"hi");
    assert!(base64url("a+b/").is_none());
    assert!(base64url("abcde").is_none());
}

#[test]
fn a_jwt_is_told_from_a_gateway_key() {
    let token = jwt(serde_json::json!({"alg": "HS256"}), serde_json::json!({}));
    assert!(looks_like_jwt(&token));
    assert!(!looks_like_jwt("sk-gw-0123456789"));
    assert!(!looks_like_jwt("eyJ.only-two"));
    assert!(!looks_like_jwt("eyJ a.b.c"));
}

#[test]
fn parse_reads_the_header_and_what_the_signature_covers() {
    let token = jwt(
        serde_json::json!({"alg": "EdDSA", "kid": "ed-1"}),
        serde_json::json!({"sub": "alice"}),
    );
    let parsed = parse(&token).unwrap();
    assert_eq!(parsed.alg, "EdDSA");
    assert_eq!(parsed.kid.as_deref(), Some("ed-1"));
    assert_eq!(parsed.signature, b"sig");
    assert_eq!(
        parsed.signing_input,
        token.rsplit_once('.').unwrap().0,
        "the signature covers header.payload as sent"
    );
    let crit = jwt(
        serde_json::json!({"alg": "HS256", "crit": ["exp"]}),
        serde_json::json!({}),
    );
    assert!(reason(parse(&crit).unwrap_err()).contains("crit"));
    assert!(reason(parse("eyJ.e30.x").unwrap_err()).contains("header"));
}

#[test]
fn the_algorithm_is_the_configurations_never_the_tokens() {
    let only_ed = users(&["EdDSA"]);
    for alg in ["none", "None", "HS256", "RS256", "HS512"] {
        let token = jwt(serde_json::json!({"alg": alg}), serde_json::json!({}));
        let err = algorithm(&only_ed, &parse(&token).unwrap()).unwrap_err();
        assert!(reason(err).contains("not accepted"), "{alg}");
    }
    let token = jwt(serde_json::json!({"alg": "EdDSA"}), serde_json::json!({}));
    assert_eq!(algorithm(&only_ed, &parse(&token).unwrap()), Ok(Alg::EdDsa));
}

#[test]
fn hmac_uses_the_secret_and_never_a_published_key() {
    let u = users(&["HS256", "RS256"]);
    match key_for(&u, Alg::Hs256, Some("rsa-1"), &[]).unwrap() {
        Lookup::Found(KeyRef::Secret(s)) => assert_eq!(s.expose(), "hs-secret"),
        other => panic!("{other:?}"),
    }
    let mut no_secret = u.clone();
    no_secret.secret = None;
    assert!(matches!(
        key_for(&no_secret, Alg::Hs256, None, &[]),
        Err(RouterError::MissingSecret { .. })
    ));
}

#[test]
fn a_public_key_must_suit_the_algorithm_and_the_kid() {
    let u = users(&["RS256", "ES256", "EdDSA"]);
    let found = |alg, kid| match key_for(&u, alg, kid, &[]).unwrap() {
        Lookup::Found(KeyRef::Public(k)) => k.kid.clone(),
        _ => None,
    };
    assert_eq!(found(Alg::EdDsa, Some("ed-1")).as_deref(), Some("ed-1"));
    assert_eq!(found(Alg::Rs256, Some("rsa-1")).as_deref(), Some("rsa-1"));
    assert_eq!(found(Alg::Es256, Some("ec-1")).as_deref(), Some("ec-1"));
    // A key of another type under the token's kid is not used.
    assert_eq!(found(Alg::Rs256, Some("ed-1")), None);
    assert_eq!(found(Alg::EdDsa, Some("rotated")), None);
    // Without a kid: the one suitable key.
    assert_eq!(found(Alg::EdDsa, None).as_deref(), Some("ed-1"));
    // Fetched keys count too.
    let fetched = parse_jwks(&serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": "BB", "kid": "ed-2"},
        {"kty": "OKP", "crv": "Ed25519", "x": "CC", "kid": "enc", "use": "enc"},
        {"kty": "OKP", "crv": "Ed25519", "x": "DD", "d": "secret", "kid": "private"},
    ]}))
    .unwrap();
    assert_eq!(fetched.len(), 1, "encryption and private keys are left out");
    assert!(matches!(
        key_for(&u, Alg::EdDsa, Some("ed-2"), &fetched),
        Ok(Lookup::Found(_))
    ));
    assert_eq!(
        fetched[0].public,
        r#"{"crv":"Ed25519","kty":"OKP","x":"BB"}"#
    );
}

#[test]
fn claims_are_checked_with_leeway() {
    let u = users(&["HS256"]);
    let now = 1_000_000;
    let ok = check_claims(
        &u,
        &claims(serde_json::json!({"tier": "pro", "routes": ["fast"]})),
        now,
        None,
    )
    .unwrap();
    assert_eq!(ok.user, "alice");
    assert_eq!(ok.tier.as_deref(), Some("pro"));
    assert_eq!(ok.routes, Some(vec!["fast".to_owned()]));
    let refused =
        |extra: serde_json::Value| reason(check_claims(&u, &claims(extra), now, None).unwrap_err());
    assert!(refused(serde_json::json!({"exp": now - 31})).contains("expired 31 s ago"));
    // Within the leeway (30 s).
    assert!(check_claims(&u, &claims(serde_json::json!({"exp": now - 29})), now, None).is_ok());
    assert!(refused(serde_json::json!({"nbf": now + 60})).contains("not valid yet"));
    assert!(check_claims(&u, &claims(serde_json::json!({"nbf": now + 20})), now, None).is_ok());
    assert!(refused(serde_json::json!({"iss": "https://evil.example"})).contains("issuer"));
    assert!(refused(serde_json::json!({"aud": "other"})).contains("audience"));
    assert!(check_claims(
        &u,
        &claims(serde_json::json!({"aud": ["x", "router"]})),
        now,
        None
    )
    .is_ok());
    assert!(refused(serde_json::json!({"sub": ""})).contains("names no user"));
    let mut no_exp = claims(serde_json::json!({}));
    no_exp.remove("exp");
    assert!(reason(check_claims(&u, &no_exp, now, None).unwrap_err()).contains("no `exp`"));
}

#[test]
fn far_dates_do_not_overflow() {
    let u = users(&["HS256"]);
    let now = 1_000_000;
    // Java's Long.MAX_VALUE as a "never" (and larger): far in the future, not expired.
    for exp in [serde_json::json!(i64::MAX), serde_json::json!(1e300)] {
        let c = claims(serde_json::json!({ "exp": exp }));
        assert!(check_claims(&u, &c, now, None).is_ok(), "exp {exp}");
    }
    for nbf in [serde_json::json!(i64::MIN), serde_json::json!(-1e300)] {
        let c = claims(serde_json::json!({ "nbf": nbf }));
        assert!(check_claims(&u, &c, now, None).is_ok(), "nbf {nbf}");
    }
    let c = claims(serde_json::json!({ "exp": i64::MIN }));
    assert!(reason(check_claims(&u, &c, now, None).unwrap_err()).contains("expired"));
    let c = claims(serde_json::json!({ "nbf": i64::MAX }));
    assert!(reason(check_claims(&u, &c, now, None).unwrap_err()).contains("not valid yet"));
}

#[test]
fn an_nbf_that_is_not_a_number_is_not_ignored() {
    let u = users(&["HS256"]);
    // A date as text (a library's, or a hand-made token's) says "not before" all the same.
    for nbf in [
        serde_json::json!("2099-01-01T00:00:00Z"),
        serde_json::json!("4070908800"),
    ] {
        let c = claims(serde_json::json!({ "nbf": nbf }));
        let refused = reason(check_claims(&u, &c, 1_000_000, None).unwrap_err());
        assert!(refused.contains("`nbf`"), "{refused}");
    }
}

#[test]
fn a_token_bound_to_an_origin_is_refused_from_another() {
    let u = users(&["HS256"]);
    let bound = claims(serde_json::json!({"origin": "https://app.example"}));
    assert!(check_claims(&u, &bound, 1_000_000, Some("https://app.example")).is_ok());
    // No Origin (a server, curl): the binding is for browsers.
    assert!(check_claims(&u, &bound, 1_000_000, None).is_ok());
    let err = check_claims(&u, &bound, 1_000_000, Some("https://evil.example")).unwrap_err();
    assert_eq!(err.status(), 403);
    assert_eq!(err.code(), Some("token_origin_mismatch"));
}

#[test]
fn routes_limit_the_models_a_user_may_call() {
    let routes = vec!["fast".to_owned()];
    assert!(allows(Some(&routes), "fast").is_ok());
    assert!(allows(None, "slow").is_ok());
    let err = allows(Some(&routes), "slow").unwrap_err();
    assert_eq!((err.status(), err.code()), (403, Some("model_not_allowed")));
}

#[test]
fn the_jwks_is_fetched_on_a_missing_kid_at_most_once_per_floor() {
    let mut u = users(&["EdDSA"]);
    u.jwks_url = Some("https://app.example/jwks.json".to_owned());
    let mut cache = JwksCache::default();
    assert!(cache.should_fetch(&u, false, 1_000), "never fetched");
    cache.fetched(Some(Vec::new()), 1_000);
    assert!(!cache.should_fetch(&u, true, 30_000), "within the floor");
    assert!(
        cache.should_fetch(&u, true, 61_000),
        "a missing kid after the floor"
    );
    assert!(
        !cache.should_fetch(&u, false, 61_000),
        "fresh and nothing missing"
    );
    // A failed fetch keeps the keys.
    cache.fetched(Some(parse_jwks(&serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A", "kid": "k"}]})).unwrap()), 70_000);
    cache.fetched(None, 200_000);
    assert_eq!(cache.keys.len(), 1);
    assert!(!cache.should_fetch(&u, true, 230_000));
    assert!(
        cache.should_fetch(&u, false, 70_000 + 3_600_000),
        "stale after max age"
    );
}

#[test]
fn the_users_section_is_checked_where_it_is_wrong() {
    let base = serde_json::json!({
        "providers": {"groq": {"keys": [{"id": "g1", "secret": "GROQ_KEY"}]}},
        "routes": {"fast": ["groq/llama-3.1-8b-instant"]},
    });
    let parse = |users: serde_json::Value| {
        let mut doc = base.clone();
        doc["users"] = users;
        crate::core::config::Config::parse(&doc.to_string(), |_| None)
    };
    let at = |users: serde_json::Value| parse(users).unwrap_err().path;
    let ok = serde_json::json!({"algorithms": ["HS256"], "issuer": "i", "audience": "a"});
    assert!(parse(ok.clone()).is_ok());
    let with = |k: &str, v: serde_json::Value| {
        let mut u = ok.clone();
        u[k] = v;
        u
    };
    assert_eq!(
        at(with("algorithms", serde_json::json!(["none"]))),
        "users.algorithms[0]"
    );
    assert_eq!(
        at(with("algorithms", serde_json::json!([]))),
        "users.algorithms"
    );
    assert_eq!(
        at(with("algorithms", serde_json::json!(["ES256"]))),
        "users.jwks"
    );
    assert_eq!(
        at(with(
            "jwks_url",
            serde_json::json!("http://issuer.example/jwks")
        )),
        "users.jwks_url"
    );
    assert!(parse(with(
        "jwks_url",
        serde_json::json!("http://127.0.0.1:9/jwks")
    ))
    .is_ok());
    assert_eq!(
        at(with("default_tier", serde_json::json!("gold"))),
        "users.default_tier"
    );
    assert_eq!(
        at(with("audience", serde_json::json!(" "))),
        "users.audience"
    );
}
