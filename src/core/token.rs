//! Step 4, for apps: signed user tokens. An app's backend (or its identity provider) issues a
//! short-lived JWT; the app sends it as `Authorization: Bearer`. This module reads the token,
//! decides which algorithm and key may verify it (the configuration's, never the token's
//! choice), and checks its claims; the edge verifies the signature with WebCrypto.
//!
//! Time is an input.

use serde_json::{Map, Value};

use super::config::{Alg, Jwk, Secret, Users};
use super::error::RouterError;

/// A token's parts, before its signature is verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Token<'t> {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'t str,
    pub signature: Vec<u8>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub tier: Option<String>,
    /// The routes and models the user may call; `None`: any.
    pub routes: Option<Vec<String>>,
}

/// The key a token is verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'c> {
    /// HS256: the configured secret.
    Secret(&'c Secret),
    /// A published key.
    Public(&'c Jwk),
}

/// Whether a bearer credential is a JWT rather than a gateway key: three base64url parts, the
/// first a JSON object (`eyJ`).
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ")
        && credential.bytes().filter(|b| *b == b'.').count() == 2
        && credential
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn invalid(reason: impl Into<String>) -> RouterError {
    RouterError::InvalidToken {
        reason: reason.into(),
    }
}

/// Splits and decodes a token; checks nothing yet.
pub fn parse(token: &str) -> Result<Token<'_>, RouterError> {
    let mut parts = token.splitn(3, '.');
    let (Some(head), Some(body), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("not a JWT (three dot-separated parts)"));
    };
    let json = |part: &str, what: &str| -> Result<Map<String, Value>, RouterError> {
        let bytes =
            base64url(part).ok_or_else(|| invalid(format!("its {what} is not base64url")))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(invalid(format!("its {what} is not a JSON object"))),
        }
    };
    let header = json(head, "header")?;
    let claims = json(body, "payload")?;
    let signature = base64url(sig).ok_or_else(|| invalid("its signature is not base64url"))?;
    let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_owned);
    if header.contains_key("crit") {
        return Err(invalid("it names critical header extensions (`crit`)"));
    }
    Ok(Token {
        alg: text("alg").ok_or_else(|| invalid("its header names no `alg`"))?,
        kid: text("kid"),
        claims,
        signing_input: &token[..head.len() + 1 + body.len()],
        signature,
    })
}

/// The algorithm a token may be verified with: its `alg`, if the configuration accepts it.
/// `none` and anything unlisted are refused, whatever the token says.
pub fn algorithm(users: &Users, token: &Token<'_>) -> Result<Alg, RouterError> {
    Alg::parse(&token.alg)
        .filter(|a| users.algorithms.contains(a))
        .ok_or_else(|| {
            let accepted: Vec<&str> = users.algorithms.iter().map(|a| a.name()).collect();
            invalid(format!(
                "its algorithm `{}` is not accepted here (accepted: {})",
                token.alg,
                accepted.join(", ")
            ))
        })
}

/// What a key lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'c> {
    Found(KeyRef<'c>),
    /// No published key with the token's `kid` suits its algorithm: the JWKS may have been
    /// rotated, so it is fetched again (within its floor) before the token is refused.
    Unknown,
}

/// The key for `alg` and `kid`: the configured secret for HS256 (never a published key, so a
/// public key can never serve as an HMAC secret); for the others, a key of `keys` (inline and
/// fetched) whose type, curve and own `alg` suit the algorithm, with the token's `kid` (or the
/// only suitable key, when the token names none).
pub fn key_for<'c>(
    users: &'c Users,
    alg: Alg,
    kid: Option<&str>,
    keys: &'c [Jwk],
) -> Result<Lookup<'c>, RouterError> {
    if alg == Alg::Hs256 {
        return match &users.secret {
            Some(secret) => Ok(Lookup::Found(KeyRef::Secret(secret))),
            None => Err(RouterError::MissingSecret {
                names: vec![users.secret_name.clone()],
            }),
        };
    }
    let suitable = users.jwks.iter().chain(keys).filter(|k| k.suits(alg));
    let found = match kid {
        Some(kid) => suitable.into_iter().find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let all: Vec<&Jwk> = suitable.collect();
            match all.as_slice() {
                [one] => Some(*one),
                [] => None,
                _ => return Err(invalid("it names no `kid`, and several keys could sign it")),
            }
        }
    };
    Ok(found.map_or(Lookup::Unknown, |k| Lookup::Found(KeyRef::Public(k))))
}

/// Checks a verified token's claims at `now_s` (seconds since the epoch): `exp` (required),
/// `nbf`, `iss`, `aud`, the user claim, and the origin it is bound to, which must equal the
/// request's `Origin` when the request has one.
pub fn check_claims(
    users: &Users,
    claims: &Map<String, Value>,
    now_s: u64,
    origin: Option<&str>,
) -> Result<Identity, RouterError> {
    let leeway = users.leeway_s;
    let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t as i64);
    let now = i64::try_from(now_s).unwrap_or(i64::MAX);
    let skew = i64::try_from(leeway).unwrap_or(0);
    match time("exp") {
        None => return Err(invalid("it has no `exp` (tokens must expire)")),
        Some(exp) if exp.saturating_add(skew) <= now => {
            return Err(invalid(format!(
                "it expired {} s ago",
                now.saturating_sub(exp)
            )))
        }
        Some(_) => {}
    }
    if claims.contains_key("nbf") && time("nbf").is_none() {
        return Err(invalid("its `nbf` is not a number of seconds"));
    }
    if let Some(nbf) = time("nbf") {
        if nbf.saturating_sub(skew) > now {
            return Err(invalid(format!(
                "it is not valid yet (`nbf` is {} s ahead)",
                nbf.saturating_sub(now)
            )));
        }
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(users.issuer.as_str()) {
        return Err(invalid(format!(
            "its issuer (`iss`) is not `{}`",
            users.issuer
        )));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == users.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&users.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(invalid(format!(
            "its audience (`aud`) does not include `{}`",
            users.audience
        )));
    }
    let user = match claims.get(&users.user_claim) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(invalid(format!(
                "it names no user (claim `{}`)",
                users.user_claim
            )))
        }
    };
    if let (Some(claim), Some(origin)) = (&users.origin_claim, origin) {
        if let Some(bound) = claims.get(claim).and_then(Value::as_str) {
            if bound.trim_end_matches('/') != origin.trim_end_matches('/') {
                return Err(RouterError::TokenNotAllowed {
                    code: "token_origin_mismatch",
                    message: format!(
                        "This token is bound to the origin {bound} and cannot be used from \
                         {origin}."
                    ),
                });
            }
        }
    }
    let tier = users
        .tier_claim
        .as_ref()
        .and_then(|c| claims.get(c))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| users.default_tier.clone());
    let routes = match users.routes_claim.as_ref().map(|c| claims.get(c)) {
        None | Some(None) => None,
        Some(Some(Value::Array(list))) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(Some(Value::String(s))) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Some(Some(_)) => return Err(invalid("its routes claim is not a list of names")),
    };
    Ok(Identity { user, tier, routes })
}

/// Whether a user whose token lists `routes` may call `model`.
pub fn allows(routes: Option<&[String]>, model: &str) -> Result<(), RouterError> {
    match routes {
        Some(list) if !list.iter().any(|r| r == model) => Err(RouterError::TokenNotAllowed {
            code: "model_not_allowed",
            message: format!(
                "This token does not allow the model `{model}` (allowed: {}).",
                list.join(", ")
            ),
        }),
        _ => Ok(()),
    }
}

/// An isolate's copy of the issuer's JWKS, and when to fetch it again.
#[derive(Debug, Clone, Default)]
pub struct JwksCache {
    pub keys: Vec<Jwk>,
    /// When the keys were fetched (0: never).
    pub fetched_ms: u64,
    /// When a fetch was last tried, successful or not.
    pub tried_ms: u64,
}

impl JwksCache {
    /// Whether to fetch the JWKS now: never fetched; too old; or a key not found (`missing`).
    /// Never twice within the floor, so a flood of tokens with made-up `kid`s costs one fetch
    /// per floor, and a JWKS endpoint that is down does not stop tokens whose key is cached.
    pub fn should_fetch(&self, users: &Users, missing: bool, now_ms: u64) -> bool {
        let floor_passed =
            self.tried_ms == 0 || now_ms >= self.tried_ms.saturating_add(users.jwks_refresh_min_ms);
        let stale =
            self.fetched_ms == 0 || now_ms >= self.fetched_ms.saturating_add(users.jwks_max_age_ms);
        users.jwks_url.is_some() && floor_passed && (missing || stale)
    }

    /// A fetch's result: the new keys, or `None` (failed: the cached keys stay).
    pub fn fetched(&mut self, keys: Option<Vec<Jwk>>, now_ms: u64) {
        self.tried_ms = now_ms;
        if let Some(keys) = keys {
            self.keys = keys;
            self.fetched_ms = now_ms;
        }
    }
}

/// Decodes base64url without padding (padding is tolerated).
pub fn base64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // A lone trailing character carries fewer than 8 bits: not valid base64.
    (text.len() % 4 != 1).then_some(out)
}

#[cfg(test)]
mod tests;
