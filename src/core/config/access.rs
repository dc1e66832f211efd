//! Who may call besides gateway keys, and what bounds each caller: signed user tokens
//! (`[users]`), the tiers that limit users and gateway keys (`[tiers.<name>]`), and what a
//! model's tokens cost (`[prices]`, over the presets' published prices).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{check_secret_name, ConfigError, Limits, Secret};

/// `[users]` as the operator writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    /// The signature algorithms accepted: any of HS256, RS256, ES256, EdDSA. A token's own
    /// `alg` only selects among these.
    pub algorithms: Vec<String>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (or contain).
    pub audience: String,
    /// The Worker secret holding the HS256 key.
    #[serde(default = "default_secret")]
    pub secret: String,
    /// Public keys inline, as a JWKS (`{ keys = [...] }`).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Where the issuer publishes its JWKS; fetched and cached.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The least time between two fetches of the JWKS (an unknown `kid` asks for one).
    #[serde(default = "default_refresh_s")]
    pub jwks_refresh_min_s: u64,
    /// A fetched JWKS is fetched again after this long.
    #[serde(default = "default_max_age_s")]
    pub jwks_max_age_s: u64,
    /// The clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// The claim naming the user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim listing the routes and models the user may call (absent: any).
    #[serde(default)]
    pub routes_claim: Option<String>,
    /// The claim naming the user's tier.
    #[serde(default)]
    pub tier_claim: Option<String>,
    /// The claim naming the one origin the token may be used from.
    #[serde(default)]
    pub origin_claim: Option<String>,
    /// The tier of a user whose token names none.
    #[serde(default)]
    pub default_tier: Option<String>,
}

fn default_secret() -> String {
    "USER_TOKEN_SECRET".to_owned()
}
fn default_refresh_s() -> u64 {
    60
}
fn default_max_age_s() -> u64 {
    3_600
}
fn default_leeway_s() -> u64 {
    30
}
fn default_user_claim() -> String {
    "sub".to_owned()
}

/// `[tiers.<name>]` as the operator writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub spend_per_day_usd: Option<f64>,
    pub spend_per_month_usd: Option<f64>,
}

/// `[prices."provider/model"]`: US dollars per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// A signature algorithm a token may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "HS256" => Alg::Hs256,
            "RS256" => Alg::Rs256,
            "ES256" => Alg::Es256,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The JWK key type (and curve) this algorithm verifies with; `None` for HMAC, whose key
    /// is the configured secret and never a published key.
    pub fn key_type(self) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            Alg::Hs256 => None,
            Alg::Rs256 => Some(("RSA", None)),
            Alg::Es256 => Some(("EC", Some("P-256"))),
            Alg::EdDsa => Some(("OKP", Some("Ed25519"))),
        }
    }
}

/// A public key from a JWKS, reduced to what verifies a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub kty: String,
    pub crv: Option<String>,
    /// The key's own `alg`, when it names one.
    pub alg: Option<String>,
    /// The key as JSON with its public parameters only (`kty`, `crv`, `n`, `e`, `x`, `y`), as
    /// WebCrypto imports it.
    pub public: String,
}

impl Jwk {
    /// Whether this key verifies `alg` signatures.
    pub fn suits(&self, alg: Alg) -> bool {
        let Some((kty, crv)) = alg.key_type() else {
            return false;
        };
        self.kty == kty
            && crv.is_none_or(|c| self.crv.as_deref() == Some(c))
            && self.alg.as_deref().is_none_or(|a| a == alg.name())
    }
}

/// Reads a JWKS document: its keys meant for signatures, in order. Keys of other types, with
/// private parts, or meant for encryption are left out; a document that is not a JWKS is an
/// error.
pub fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<Jwk>, String> {
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("not a JWKS: no `keys` array")?;
    let mut out = Vec::new();
    for key in keys {
        let Some(obj) = key.as_object() else { continue };
        let text = |name: &str| obj.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let Some(kty) = text("kty") else { continue };
        if text("use").is_some_and(|u| u != "sig") || obj.contains_key("d") {
            continue;
        }
        let mut public = serde_json::Map::new();
        for name in ["kty", "crv", "n", "e", "x", "y"] {
            if let Some(v) = obj.get(name) {
                public.insert(name.to_owned(), v.clone());
            }
        }
        out.push(Jwk {
            kid: text("kid"),
            kty,
            crv: text("crv"),
            alg: text("alg"),
            public: serde_json::Value::Object(public).to_string(),
        });
    }
    Ok(out)
}

/// Signed user tokens, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    pub algorithms: Vec<Alg>,
    pub issuer: String,
    pub audience: String,
    /// The HS256 key's secret: its name, and its value when set.
    pub secret_name: String,
    pub secret: Option<Secret>,
    pub jwks: Vec<Jwk>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_min_ms: u64,
    pub jwks_max_age_ms: u64,
    pub leeway_s: u64,
    pub user_claim: String,
    pub routes_claim: Option<String>,
    pub tier_claim: Option<String>,
    pub origin_claim: Option<String>,
    pub default_tier: Option<String>,
}

/// What bounds a caller: the four windows, and spend budgets in picodollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tier {
    pub limits: Limits,
    pub spend_per_day: Option<u64>,
    pub spend_per_month: Option<u64>,
}

impl Tier {
    /// Whether the tier limits anything on the four windows.
    pub fn has_windows(&self) -> bool {
        let l = &self.limits;
        l.rpm.is_some() || l.rpd.is_some() || l.tpm.is_some() || l.tpd.is_some()
    }
}

/// What a model's tokens cost, in picodollars (10^-12 USD) per token: a price of $1 per
/// million tokens is 10^6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Price {
    /// From US dollars per million tokens (cached input at the input price unless given).
    pub fn per_million(input: f64, cached_input: Option<f64>, output: f64) -> Price {
        let p = |usd: f64| (usd * 1e6).round() as u64;
        Price {
            input: p(input),
            cached_input: p(cached_input.unwrap_or(input)),
            output: p(output),
        }
    }
}

/// One picodollar per dollar.
pub const PICO: f64 = 1e12;

/// Dollars as picodollars (budgets).
pub fn usd(amount: f64) -> u64 {
    (amount * PICO).round() as u64
}

pub fn build_users(
    raw: RawUsers,
    tiers: &BTreeMap<String, Tier>,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Users, ConfigError> {
    let at = |name: &str, detail: String| ConfigError::at(format!("users.{name}"), detail);
    if raw.algorithms.is_empty() {
        return Err(at(
            "algorithms",
            "name at least one of HS256, RS256, ES256, EdDSA".to_owned(),
        ));
    }
    let mut algorithms = Vec::new();
    for (i, name) in raw.algorithms.iter().enumerate() {
        let alg = Alg::parse(name).ok_or_else(|| {
            at(
                &format!("algorithms[{i}]"),
                format!("`{name}` is not one of HS256, RS256, ES256, EdDSA"),
            )
        })?;
        algorithms.push(alg);
    }
    for (name, value) in [("issuer", &raw.issuer), ("audience", &raw.audience)] {
        if value.trim().is_empty() {
            return Err(at(name, "must not be empty".to_owned()));
        }
    }
    check_secret_name("users.secret", &raw.secret)?;
    let jwks = match &raw.jwks {
        Some(doc) => parse_jwks(doc).map_err(|e| at("jwks", e))?,
        None => Vec::new(),
    };
    if let Some(url) = &raw.jwks_url {
        let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
            .iter()
            .any(|p| url.starts_with(p));
        if !url.starts_with("https://") && !local {
            return Err(at(
                "jwks_url",
                "must be an https:// URL (http only on the loopback, for tests)".to_owned(),
            ));
        }
    }
    let asymmetric = algorithms.iter().any(|a| *a != Alg::Hs256);
    if asymmetric && jwks.is_empty() && raw.jwks_url.is_none() {
        return Err(at(
            "jwks",
            "RS256, ES256 and EdDSA need public keys: set `jwks` or `jwks_url`".to_owned(),
        ));
    }
    if raw.jwks_refresh_min_s == 0 || raw.jwks_max_age_s == 0 {
        return Err(at(
            "jwks_refresh_min_s",
            "jwks_refresh_min_s and jwks_max_age_s must be greater than 0".to_owned(),
        ));
    }
    if raw.leeway_s > 600 {
        return Err(at("leeway_s", "must be at most 600".to_owned()));
    }
    if let Some(tier) = &raw.default_tier {
        if !tiers.contains_key(tier) {
            return Err(at(
                "default_tier",
                format!("`{tier}` is not a tier in `tiers`"),
            ));
        }
    }
    Ok(Users {
        secret: secret(&raw.secret).map(Secret::new),
        secret_name: raw.secret,
        algorithms,
        issuer: raw.issuer,
        audience: raw.audience,
        jwks,
        jwks_url: raw.jwks_url,
        jwks_refresh_min_ms: raw.jwks_refresh_min_s.saturating_mul(1_000),
        jwks_max_age_ms: raw.jwks_max_age_s.saturating_mul(1_000),
        leeway_s: raw.leeway_s,
        user_claim: raw.user_claim,
        routes_claim: raw.routes_claim,
        tier_claim: raw.tier_claim,
        origin_claim: raw.origin_claim,
        default_tier: raw.default_tier,
    })
}

pub fn build_tiers(raw: BTreeMap<String, RawTier>) -> Result<BTreeMap<String, Tier>, ConfigError> {
    let mut tiers = BTreeMap::new();
    for (name, t) in raw {
        let spend = |field: &str, v: Option<f64>| match v {
            Some(usd_amount) if !(usd_amount.is_finite() && usd_amount >= 0.0) => {
                Err(ConfigError::at(
                    format!("tiers.{name}.{field}"),
                    "must be a sum of 0 or more",
                ))
            }
            Some(usd_amount) => Ok(Some(usd(usd_amount))),
            None => Ok(None),
        };
        let tier = Tier {
            limits: Limits {
                rpm: t.requests_per_minute,
                rpd: t.requests_per_day,
                tpm: t.tokens_per_minute,
                tpd: t.tokens_per_day,
                max_output_tokens: None,
            },
            spend_per_day: spend("spend_per_day_usd", t.spend_per_day_usd)?,
            spend_per_month: spend("spend_per_month_usd", t.spend_per_month_usd)?,
        };
        tiers.insert(name, tier);
    }
    Ok(tiers)
}

pub fn build_prices(
    raw: BTreeMap<String, RawPrice>,
) -> Result<BTreeMap<String, Price>, ConfigError> {
    let mut prices = BTreeMap::new();
    for (name, p) in raw {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !name.contains('/') {
            return Err(ConfigError::at(
                format!("prices.{name}"),
                "name a model as `provider/model`",
            ));
        }
        if !(ok(p.input) && ok(p.output) && p.cached_input.is_none_or(ok)) {
            return Err(ConfigError::at(
                format!("prices.{name}"),
                "prices are US dollars per million tokens, 0 or more",
            ));
        }
        prices.insert(name, Price::per_million(p.input, p.cached_input, p.output));
    }
    Ok(prices)
}
