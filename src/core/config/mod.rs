//! Step 2: the router's configuration, validated once per isolate.
//!
//! The operator writes one declarative document (`ROUTER_CONFIG` in `wrangler.toml`, a TOML
//! table or a JSON string). The `raw` module reads it strictly (unknown fields are errors); [`Config::parse`]
//! validates it into the configuration the router uses, naming the path of every error
//! (`providers.groq.keys[2].secret`). Keys are read from Worker secrets only and held in
//! [`Secret`], whose `Debug` and `Display` print a redaction.

pub mod access;
mod presets;
mod raw;

use std::collections::BTreeMap;

pub use access::{Alg, Jwk, Price, Tier, Users};
pub use presets::{Preset, PRESETS, PRICES_TAKEN};
use raw::{RawClassifier, RawConfig, RawFailover, RawGateway, RawLimits, RawProvider};

/// The Worker var that holds the configuration.
pub const CONFIG_VAR: &str = "ROUTER_CONFIG";

/// The largest body limit an operator may configure (the runtime's own limit is 100 MB).
const MAX_BODY_LIMIT: u64 = 100 * 1024 * 1024;

/// A secret value. It can be used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a provider can serve. Requests that need a capability go only to providers that have
/// it (see `core::adapt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Chat,
    Streaming,
    Tools,
    JsonSchema,
    Vision,
    /// `input_audio` message parts.
    Audio,
    Embeddings,
    /// `logprobs: true` / `top_logprobs`.
    Logprobs,
    /// A non-empty `logit_bias`.
    LogitBias,
    /// `n` greater than 1.
    MultipleChoices,
    /// `messages[].name`.
    MessageName,
    /// OpenAI's Responses API (`/responses`) of its own (`core::responses`).
    Responses,
}

impl Capability {
    const ALL: [(Capability, &'static str); 12] = [
        (Capability::Chat, "chat"),
        (Capability::Streaming, "streaming"),
        (Capability::Tools, "tools"),
        (Capability::JsonSchema, "json_schema"),
        (Capability::Vision, "vision"),
        (Capability::Audio, "audio"),
        (Capability::Embeddings, "embeddings"),
        (Capability::Logprobs, "logprobs"),
        (Capability::LogitBias, "logit_bias"),
        (Capability::MultipleChoices, "n"),
        (Capability::MessageName, "message_name"),
        (Capability::Responses, "responses"),
    ];

    /// The name used in the configuration and in error messages.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("unknown", |(_, n)| n)
    }

    fn from_name(name: &str) -> Option<Capability> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(u16);

impl Capabilities {
    pub fn of(caps: &[Capability]) -> Self {
        Capabilities(caps.iter().fold(0, |acc, c| acc | c.bit()))
    }

    pub fn has(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }
}

/// Which field a provider reads the output-token limit from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    pub fn name(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// Which requests write the per-request log line (`gateway.log_requests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestLog {
    /// Every request.
    #[default]
    All,
    /// Only a request answered with an error (4xx, 5xx), or one whose attempts failed before
    /// one served it (a failover): what an operator has to look into. A request served by its
    /// first attempt is explained by its response headers alone.
    Failures,
}

/// How a provider reports its rate limits in response headers (read by the quota ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitDialect {
    /// `x-ratelimit-*-requests` is the per-day window, `-tokens` the per-minute one.
    Groq,
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, per minute.
    OpenAi,
    /// `x-ratelimit-*-tokens-minute`, `-req-minute` (the `-month` window is not tracked).
    Mistral,
    /// `x-ratelimit-limit`, `-remaining`, `-reset`, `x-tokenlimit-*`.
    Together,
    /// `x-ratelimit-*-tokens-prompt` (the `-generated` limit is not tracked), `-requests`.
    Fireworks,
    /// `x-ratelimit-*-requests-day`, `-tokens-minute`, float-second resets.
    Cerebras,
    /// No rate-limit headers.
    None,
}

/// The fingerprint of a secret: the first 16 hex digits of its SHA-256.
fn fingerprint(secret: &str) -> String {
    let mut hex = super::auth::hash_hex(secret);
    hex.truncate(16);
    hex
}

/// Rate limits of one model at one provider, per organization, and the model's largest output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub tpd: Option<u64>,
    /// The most output tokens the model produces (its `max_completion_tokens`): a request
    /// asking for more is the router's own 400, before any booking or upstream call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// One API key of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    /// Keys of one organization share one quota.
    pub org: String,
    /// The Worker secret holding the key.
    pub secret_name: String,
    /// `None` when the secret is not set: the key is skipped and, if no key is left, the error
    /// names the secret.
    pub value: Option<Secret>,
    /// A fingerprint of the secret (the start of its SHA-256), so that the quota bank knows a
    /// rotated key from the one a provider refused without ever holding either.
    pub fingerprint: String,
}

/// One OpenAI-compatible provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    /// Without a trailing slash, e.g. `https://api.groq.com/openai/v1`.
    pub base_url: String,
    pub capabilities: Capabilities,
    pub max_tokens_field: MaxTokensField,
    pub dialect: RateLimitDialect,
    pub keys: Vec<Key>,
    /// Per model id.
    pub limits: BTreeMap<String, Limits>,
    /// Guarded request fields this provider may receive from clients.
    pub pass_fields: Vec<String>,
    /// Whether it serves the Batch API (`core::batch`).
    pub batch: bool,
    /// What its models' tokens cost, per model id: the preset's published prices, then
    /// `[prices."provider/model"]`.
    pub prices: BTreeMap<String, Price>,
}

impl Provider {
    /// The first key whose secret is set.
    pub fn usable_key(&self) -> Option<(&Key, &Secret)> {
        self.keys
            .iter()
            .find_map(|k| k.value.as_ref().map(|v| (k, v)))
    }
}

/// A provider and the model name it knows, on a service tier if the route names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into [`Config::providers`].
    pub provider: usize,
    /// The provider's model id, as sent upstream.
    pub model: String,
    /// The `service_tier` the router asks the provider for (Groq's `flex`), if any.
    pub tier: Option<String>,
    /// What the quota ledger, the planner and the reports call the target: `model`, or
    /// `model:flex` on flex, whose limits are its own ([`books_name`]).
    pub name: String,
}

/// The service tiers a target may name: Groq's (`flex`, `on_demand`, `auto`, `performance`)
/// and OpenAI's (`auto`, `default`, `flex`, `priority`).
pub const SERVICE_TIERS: [&str; 6] = [
    "flex",
    "on_demand",
    "auto",
    "performance",
    "default",
    "priority",
];

/// Flex's limits against on-demand's, when the configuration gives flex none of its own: Groq
/// documents about ten times the on-demand limits.
pub const FLEX_LIMIT_FACTOR: u64 = 10;

/// The name a target's model is booked under on a tier: flex, whose limits are its own, has
/// books of its own; every other tier shares the model's (Groq's `auto` spends on-demand's
/// limits first, and booking it apart would admit twice what on-demand allows).
pub fn books_name(model: &str, tier: Option<&str>) -> String {
    match tier {
        Some("flex") => format!("{model}:flex"),
        _ => model.to_owned(),
    }
}

/// Which browser origins may call the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

impl CorsOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayAuth {
    /// Anyone may call (local development only).
    Disabled,
    /// A bearer key whose SHA-256 is in `hashes`, read from the secret `secret`. Empty when the
    /// secret is not set: then every request is refused with an error naming it.
    Keys {
        secret: String,
        hashes: Vec<[u8; 32]>,
    },
    /// The secret is set but unusable (admin keys only: it refuses the status page alone).
    Broken { error: ConfigError },
}

/// Thresholds of the fast/slow classifier (see `core::classify` and docs/routing.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classifier {
    /// `auto` requests with at most this many estimated prompt tokens are short.
    pub fast_max_prompt_tokens: u64,
    /// ... and at most this many requested output tokens.
    pub fast_max_output_tokens: u64,
    /// The output tokens assumed when a request sets no `max_tokens`.
    pub default_output_tokens: u64,
    /// The fast models' context window.
    pub fast_context_tokens: u64,
    /// A latency budget (header `x-router-latency-budget-ms`) at or under this sends `auto`
    /// requests that fit the fast path there, short or not.
    pub tight_latency_budget_ms: u64,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier {
            fast_max_prompt_tokens: 2_000,
            fast_max_output_tokens: 1_024,
            default_output_tokens: 1_024,
            fast_context_tokens: 131_072,
            tight_latency_budget_ms: 2_000,
        }
    }
}

/// How hard the router tries before it answers with an error (see `core::failover` and
/// docs/failover.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// Upstream calls one request may make. Each may cost up to three subrequests (the call, a
    /// quota reservation, its settlement), and the free plan allows 50 per request.
    pub max_attempts: u32,
    /// How long one attempt may wait for the upstream's response headers (for a stream, its
    /// first event) before it is aborted and the next candidate is tried.
    pub attempt_timeout_ms: u64,
    /// The same for a request on the fast path, whose callers are latency-critical and whose
    /// answers are short: the shorter of this and `attempt_timeout_ms`. Once the router has
    /// learned a target's time to first byte, this is the ceiling of that target's timeout
    /// (three times its p90, see `core::latency`).
    pub fast_attempt_timeout_ms: u64,
    /// The least a learned fast-path timeout may be.
    pub fast_attempt_floor_ms: u64,
    /// The share of fast-path requests (in percent) that may start a hedge: a second attempt
    /// when the first has no first byte by its target's learned p90. 0 turns hedging off.
    pub hedge_percent: u32,
    /// Whether a hedge may go to another provider (one that bills the request anew); by default
    /// only to another organization of the same provider.
    pub hedge_across_providers: bool,
    /// Whether every event of a stream handed on is checked before it reaches the client (a
    /// malformed one ends the stream with the error event instead), at a JavaScript step per
    /// chunk; off, only the first chunk's events are checked and the rest is piped natively.
    pub check_stream_events: bool,
    /// How long the router may spend on a request before it must have an answer to send.
    pub deadline_ms: u64,
    /// Consecutive failures (5xx, 498, timeouts after the whole attempt timeout, transport
    /// errors, bad answers) that open a provider's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit skips the provider before one probe request is let through.
    pub breaker_cooldown_ms: u64,
    /// How long a synchronous call to the quota bank may take before the request goes on
    /// without it (booked on the isolate's own snapshot); a late booking is given back.
    pub quota_timeout_ms: u64,
}

/// The largest share of fast-path requests that may be hedged: past it, hedges would double
/// the load they are meant to spare.
pub const MAX_HEDGE_PERCENT: u32 = 50;

/// The most attempts a request may make: 15 attempts of three subrequests each stay within
/// the free plan's 50.
pub const MAX_ATTEMPTS_LIMIT: u32 = 15;

impl Default for Failover {
    fn default() -> Self {
        Failover {
            max_attempts: 6,
            attempt_timeout_ms: 30_000,
            fast_attempt_timeout_ms: 5_000,
            fast_attempt_floor_ms: 1_000,
            hedge_percent: 5,
            hedge_across_providers: false,
            check_stream_events: false,
            deadline_ms: 60_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
            quota_timeout_ms: 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub auth: GatewayAuth,
    /// Who may read the status endpoint: always keys (never disabled), separate from `auth`.
    pub admin: GatewayAuth,
    pub cors: CorsOrigins,
    pub max_body_bytes: u64,
    /// Whether clients see key ids in `x-router-failover` (admins always do).
    pub expose_key_ids: bool,
    /// Which requests write the log line.
    pub log_requests: RequestLog,
    /// How long a request body may take to arrive.
    pub body_timeout_ms: u64,
    /// The most choices (`n`) one chat request may ask for ...
    pub max_n: u64,
    /// ... or one sent to a route named here.
    pub max_n_per_route: BTreeMap<String, u64>,
    /// The largest output-token limit a chat request may ask for.
    pub max_output_tokens: u64,
    /// The tier of gateway keys not in `key_tiers`.
    pub key_tier: Option<String>,
    /// Tiers by gateway key id.
    pub key_tiers: BTreeMap<String, String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub gateway: Gateway,
    pub classifier: Classifier,
    pub failover: Failover,
    pub providers: Vec<Provider>,
    /// Signed user tokens, when the configuration accepts them.
    pub users: Option<Users>,
    /// What bounds callers, by tier name.
    pub tiers: BTreeMap<String, Tier>,
    /// Router model name (an alias such as `fast`, or a concrete model id) -> targets in order
    /// of preference.
    models: BTreeMap<String, Vec<Target>>,
    /// The names of [`Self::models`] in listing order: aliases first, then concrete ids.
    listing: Vec<String>,
    /// How many of `listing` are aliases.
    aliases: usize,
    /// The routes whose targets are tried in order of their learned latency
    /// (`order = "latency"`).
    by_latency: Vec<String>,
}

/// A configuration error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub detail: String,
}

impl ConfigError {
    fn at(path: impl Into<String>, detail: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

impl Config {
    /// Parses and validates the configuration document; `secret` returns a Worker secret's
    /// value, `None` when it is not set.
    pub fn parse(
        json: &str,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            // A syntax error has no meaningful path; a shape error names the field.
            let path = e.path().to_string();
            let path = if path == "." || !e.inner().is_data() {
                CONFIG_VAR.to_owned()
            } else {
                path
            };
            let data = e.inner().is_data();
            let detail = e.into_inner().to_string();
            // A field's error is located by its path; serde's position would point into the
            // JSON that a TOML table became, not into wrangler.toml.
            let detail = match detail.split_once(" at line ") {
                Some((head, _)) if data => head.to_owned(),
                _ => detail,
            };
            ConfigError::at(path, detail)
        })?;
        de.end()
            .map_err(|e| ConfigError::at(CONFIG_VAR, e.to_string()))?;
        build(raw, &secret)
    }

    /// The targets that serve `model`, in order of preference; `None` for an unknown model.
    pub fn targets(&self, model: &str) -> Option<&[Target]> {
        self.models.get(model).map(Vec::as_slice)
    }

    /// Whether `route`'s targets are tried in order of their learned p90 to first byte.
    pub fn orders_by_latency(&self, route: &str) -> bool {
        self.by_latency.iter().any(|r| r == route)
    }

    /// Every model name a client may ask for, aliases first.
    pub fn model_names(&self) -> &[String] {
        &self.listing
    }

    /// Whether `name` is a route name (`fast`, `auto`, ...) rather than a provider's model id.
    pub fn is_alias(&self, name: &str) -> bool {
        self.listing.iter().take(self.aliases).any(|n| n == name)
    }
}

fn build(raw: RawConfig, secret: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let gateway = build_gateway(raw.gateway, secret)?;
    let classifier = build_classifier(&raw.classifier)?;
    let failover = build_failover(&raw.failover)?;
    if raw.providers.is_empty() {
        return Err(ConfigError::at(
            "providers",
            "at least one provider is required",
        ));
    }
    let providers = raw
        .providers
        .into_iter()
        .map(|(name, p)| build_provider(name, p, secret))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(route) = gateway
        .max_n_per_route
        .keys()
        .find(|r| !raw.routes.contains_key(*r))
    {
        return Err(ConfigError::at(
            format!("gateway.max_n_per_route.{route}"),
            "not the name of a route in `routes`",
        ));
    }
    let mut providers = providers;
    for (name, price) in access::build_prices(raw.prices)? {
        let (provider, model) = name.split_once('/').unwrap_or_default();
        let Some(p) = providers.iter_mut().find(|p| p.name == provider) else {
            return Err(ConfigError::at(
                format!("prices.{name}"),
                format!("no provider `{provider}`"),
            ));
        };
        p.prices.insert(model.to_owned(), price);
    }
    let tiers = access::build_tiers(raw.tiers)?;
    for (path, tier) in gateway
        .key_tier
        .iter()
        .map(|t| ("gateway.key_tier".to_owned(), t))
        .chain(
            gateway
                .key_tiers
                .iter()
                .map(|(k, t)| (format!("gateway.key_tiers.{k}"), t)),
        )
    {
        if !tiers.contains_key(tier) {
            return Err(ConfigError::at(
                path,
                format!("`{tier}` is not a tier in `tiers`"),
            ));
        }
    }
    let users = match raw.users {
        Some(users) => Some(access::build_users(users, &tiers, secret)?),
        None => None,
    };
    let (routes, by_latency) = route_tables(raw.routes)?;
    let (models, listing, aliases) = build_models(routes, &mut providers)?;
    Ok(Config {
        gateway,
        classifier,
        failover,
        providers,
        users,
        tiers,
        models,
        listing,
        aliases,
        by_latency,
    })
}

fn build_gateway(
    raw: RawGateway,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Gateway, ConfigError> {
    check_secret_name("gateway.keys_secret", &raw.keys_secret)?;
    check_secret_name("gateway.admin_keys_secret", &raw.admin_keys_secret)?;
    let local_dev = is_local_dev(secret(LOCAL_DEV_VAR).as_deref());
    let parse_hashes = |name: &str, value: &str| parse_hashes(name, value, local_dev);
    // A broken admin secret only closes the status page; client traffic goes on.
    let admin =
        match secret(&raw.admin_keys_secret).map(|v| parse_hashes(&raw.admin_keys_secret, &v)) {
            Some(Err(error)) => GatewayAuth::Broken { error },
            parsed => GatewayAuth::Keys {
                hashes: parsed.and_then(Result::ok).unwrap_or_default(),
                secret: raw.admin_keys_secret,
            },
        };
    let auth = if raw.auth {
        let hashes = match secret(&raw.keys_secret) {
            Some(value) => parse_hashes(&raw.keys_secret, &value)?,
            None => Vec::new(),
        };
        GatewayAuth::Keys {
            secret: raw.keys_secret,
            hashes,
        }
    } else {
        GatewayAuth::Disabled
    };
    let cors = if raw.cors_origins.iter().any(|o| o == "*") {
        CorsOrigins::Any
    } else {
        for (i, origin) in raw.cors_origins.iter().enumerate() {
            check_origin(&format!("gateway.cors_origins[{i}]"), origin)?;
        }
        CorsOrigins::List(raw.cors_origins)
    };
    if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_BODY_LIMIT {
        return Err(ConfigError::at(
            "gateway.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_LIMIT}"),
        ));
    }
    if !(1..=MAX_WAIT_MS).contains(&raw.body_timeout_ms) {
        return Err(ConfigError::at(
            "gateway.body_timeout_ms",
            format!("must be between 1 and {MAX_WAIT_MS}"),
        ));
    }
    if !(1..=MAX_N).contains(&raw.max_n) {
        return Err(ConfigError::at(
            "gateway.max_n",
            format!("must be between 1 and {MAX_N}"),
        ));
    }
    for (route, n) in &raw.max_n_per_route {
        if !(1..=MAX_N).contains(n) {
            return Err(ConfigError::at(
                format!("gateway.max_n_per_route.{route}"),
                format!("must be between 1 and {MAX_N}"),
            ));
        }
    }
    if !(1..=MAX_OUTPUT_TOKENS_LIMIT).contains(&raw.max_output_tokens) {
        return Err(ConfigError::at(
            "gateway.max_output_tokens",
            format!("must be between 1 and {MAX_OUTPUT_TOKENS_LIMIT}"),
        ));
    }
    Ok(Gateway {
        auth,
        admin,
        cors,
        max_body_bytes: raw.max_body_bytes,
        expose_key_ids: raw.expose_key_ids,
        log_requests: raw.log_requests,
        body_timeout_ms: raw.body_timeout_ms,
        max_n: raw.max_n,
        max_n_per_route: raw.max_n_per_route,
        max_output_tokens: raw.max_output_tokens,
        key_tier: raw.key_tier,
        key_tiers: raw.key_tiers,
    })
}

fn build_classifier(raw: &RawClassifier) -> Result<Classifier, ConfigError> {
    let d = Classifier::default();
    let c = Classifier {
        fast_max_prompt_tokens: raw
            .fast_max_prompt_tokens
            .unwrap_or(d.fast_max_prompt_tokens),
        fast_max_output_tokens: raw
            .fast_max_output_tokens
            .unwrap_or(d.fast_max_output_tokens),
        default_output_tokens: raw.default_output_tokens.unwrap_or(d.default_output_tokens),
        fast_context_tokens: raw.fast_context_tokens.unwrap_or(d.fast_context_tokens),
        tight_latency_budget_ms: raw
            .tight_latency_budget_ms
            .unwrap_or(d.tight_latency_budget_ms),
    };
    for (name, value) in [
        ("fast_max_prompt_tokens", c.fast_max_prompt_tokens),
        ("fast_max_output_tokens", c.fast_max_output_tokens),
        ("default_output_tokens", c.default_output_tokens),
        ("fast_context_tokens", c.fast_context_tokens),
    ] {
        if value == 0 {
            return Err(ConfigError::at(
                format!("classifier.{name}"),
                "must be greater than 0",
            ));
        }
    }
    Ok(c)
}

fn build_failover(raw: &RawFailover) -> Result<Failover, ConfigError> {
    let d = Failover::default();
    let f = Failover {
        max_attempts: raw.max_attempts.unwrap_or(d.max_attempts),
        attempt_timeout_ms: raw.attempt_timeout_ms.unwrap_or(d.attempt_timeout_ms),
        fast_attempt_timeout_ms: raw
            .fast_attempt_timeout_ms
            .unwrap_or(d.fast_attempt_timeout_ms),
        fast_attempt_floor_ms: raw.fast_attempt_floor_ms.unwrap_or(d.fast_attempt_floor_ms),
        hedge_percent: raw.hedge_percent.unwrap_or(d.hedge_percent),
        hedge_across_providers: raw
            .hedge_across_providers
            .unwrap_or(d.hedge_across_providers),
        check_stream_events: raw.check_stream_events.unwrap_or(d.check_stream_events),
        deadline_ms: raw.deadline_ms.unwrap_or(d.deadline_ms),
        breaker_failures: raw.breaker_failures.unwrap_or(d.breaker_failures),
        breaker_cooldown_ms: raw.breaker_cooldown_ms.unwrap_or(d.breaker_cooldown_ms),
        quota_timeout_ms: raw.quota_timeout_ms.unwrap_or(d.quota_timeout_ms),
    };
    let at = |name: &str, detail: String| ConfigError::at(format!("failover.{name}"), detail);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&f.max_attempts) {
        return Err(at(
            "max_attempts",
            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
        ));
    }
    // Workers let work go on for 30 s after the response; a longer wait is an operator's
    // choice, but one of zero would refuse every request.
    for (name, value) in [
        ("attempt_timeout_ms", f.attempt_timeout_ms),
        ("fast_attempt_timeout_ms", f.fast_attempt_timeout_ms),
        ("deadline_ms", f.deadline_ms),
        ("breaker_cooldown_ms", f.breaker_cooldown_ms),
        ("quota_timeout_ms", f.quota_timeout_ms),
    ] {
        if value == 0 || value > MAX_WAIT_MS {
            return Err(at(name, format!("must be between 1 and {MAX_WAIT_MS}")));
        }
    }
    if f.hedge_percent > MAX_HEDGE_PERCENT {
        return Err(at(
            "hedge_percent",
            format!("must be between 0 and {MAX_HEDGE_PERCENT}"),
        ));
    }
    if f.fast_attempt_floor_ms > MAX_WAIT_MS {
        return Err(at(
            "fast_attempt_floor_ms",
            format!("must be at most {MAX_WAIT_MS}"),
        ));
    }
    if f.breaker_failures == 0 {
        return Err(at("breaker_failures", "must be greater than 0".to_owned()));
    }
    Ok(f)
}

/// Request fields that change what a provider bills, stores or routes to (OpenAI's
/// `service_tier`, `store` and `metadata`; OpenRouter's `models`, `provider`, `route`,
/// `transforms` and `plugins`). A client's are withheld from every provider whose
/// `pass_fields` does not name them; any other field passes as the client wrote it.
pub const GUARDED_FIELDS: [&str; 8] = [
    "service_tier",
    "store",
    "metadata",
    "models",
    "provider",
    "route",
    "transforms",
    "plugins",
];

/// What a provider's own Responses API keeps for the key it is called with (stored responses
/// and what refers to them, background runs, stored prompts) or runs with it (its built-in
/// tools: `builtin_tools`). The router calls with its own key for every client, so these reach
/// only providers whose `pass_fields` names them; without `store` there, a Responses call is
/// sent with `store: false`.
pub const RESPONSES_STATE: [&str; 6] = [
    "store",
    "previous_response_id",
    "conversation",
    "prompt",
    "background",
    "builtin_tools",
];

/// The highest `gateway.max_n` accepted.
const MAX_N: u64 = 128;
/// The highest `gateway.max_output_tokens` accepted.
const MAX_OUTPUT_TOKENS_LIMIT: u64 = 10_000_000;

/// The longest timeout or cooldown the configuration accepts (one hour).
const MAX_WAIT_MS: u64 = 3_600_000;

/// The admin keys' secret unless `gateway.admin_keys_secret` names another.
pub const ADMIN_KEYS_SECRET: &str = "ADMIN_KEY_HASHES";

/// The var that marks a local-development run (`.dev.vars`, read by `wrangler dev` only): the
/// example key hashes of `.dev.vars.example` are accepted only there.
pub const LOCAL_DEV_VAR: &str = "ROUTER_LOCAL_DEV";

/// Whether the value of [`LOCAL_DEV_VAR`] marks local development.
pub fn is_local_dev(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim() == "1")
}

/// The hashes `.dev.vars.example` ships, of the published keys `sk-local-dev` and
/// `sk-local-admin`: anyone could present those keys to a deployment that kept them.
pub(crate) const EXAMPLE_HASHES: [&str; 2] = [
    "39f9742666377d1b2d177efec3c73c95112c6c70f9ffe9b49abd1a2523295b86",
    "dd64c8e8eaafa1abb74fd2a2ccad64f4dcb9f2bd6fae158f50e000958395a29e",
];

/// Parses a key-hash secret: SHA-256 hashes in hex, separated by commas or whitespace. The
/// example hashes are refused unless `local_dev`. Errors never quote the secret's content.
fn parse_hashes(
    secret_name: &str,
    value: &str,
    local_dev: bool,
) -> Result<Vec<[u8; 32]>, ConfigError> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, hex)| {
            let at = || format!("secrets.{secret_name}[{i}]");
            if !local_dev && EXAMPLE_HASHES.iter().any(|e| e.eq_ignore_ascii_case(hex)) {
                return Err(ConfigError::at(
                    at(),
                    format!(
                        "the example hash from .dev.vars.example, of a published key: store the \
                         hash of a key of your own (allowed only with {LOCAL_DEV_VAR}=1, for \
                         local development)"
                    ),
                ));
            }
            decode_hex32(hex).ok_or_else(|| {
                ConfigError::at(
                    at(),
                    "not a SHA-256 hash in hex (64 hex digits); store hashes, not keys",
                )
            })
        })
        .collect()
}

pub(crate) fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

pub(crate) fn check_secret_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        // The value is not repeated: an operator may have pasted a key where its name belongs.
        Err(ConfigError::at(
            path,
            format!(
                "not a secret name ({} characters; use A-Z, 0-9 and _, the name of a secret, \
                 never the secret itself)",
                name.chars().count()
            ),
        ))
    }
}

fn check_origin(path: &str, origin: &str) -> Result<(), ConfigError> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(()),
        _ => Err(ConfigError::at(
            path,
            format!("`{origin}` is not an origin (scheme://host[:port], no path) or \"*\""),
        )),
    }
}

fn build_provider(
    name: String,
    raw: RawProvider,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let at = |field: &str| format!("providers.{name}{field}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::at(
            at(""),
            "a provider's name uses a-z, 0-9, - and _",
        ));
    }
    let preset = match &raw.preset {
        Some(p) => Some(presets::find(p).ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            ConfigError::at(
                at(".preset"),
                format!("no preset `{p}`; known: {}", known.join(", ")),
            )
        })?),
        None => presets::find(&name),
    };
    let base_url = match (&raw.base_url, preset) {
        (Some(url), _) => validate_base_url(&at(".base_url"), url)?,
        (None, Some(p)) => p.base_url.to_owned(),
        (None, None) => {
            return Err(ConfigError::at(
                at(""),
                "not a preset name: set `preset` or `base_url`",
            ))
        }
    };
    let capabilities = match &raw.capabilities {
        Some(names) => {
            let mut caps = Vec::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                caps.push(Capability::from_name(n).ok_or_else(|| {
                    let known: Vec<&str> = Capability::ALL.iter().map(|(_, n)| *n).collect();
                    ConfigError::at(
                        at(&format!(".capabilities[{i}]")),
                        format!("unknown capability `{n}`; known: {}", known.join(", ")),
                    )
                })?);
            }
            Capabilities::of(&caps)
        }
        None => Capabilities::of(preset.map_or(
            &[
                Capability::Chat,
                Capability::Streaming,
                Capability::Tools,
                Capability::JsonSchema,
            ][..],
            |p| p.capabilities,
        )),
    };
    let max_tokens_field = match raw.max_tokens_field.as_deref() {
        Some("max_tokens") => MaxTokensField::MaxTokens,
        Some("max_completion_tokens") => MaxTokensField::MaxCompletionTokens,
        Some(other) => {
            return Err(ConfigError::at(
                at(".max_tokens_field"),
                format!("`{other}` is neither max_tokens nor max_completion_tokens"),
            ))
        }
        None => preset.map_or(MaxTokensField::MaxTokens, |p| p.max_tokens_field),
    };
    let mut keys: Vec<Key> = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.into_iter().enumerate() {
        let path = at(&format!(".keys[{i}]"));
        if k.id.trim().is_empty() {
            return Err(ConfigError::at(format!("{path}.id"), "must not be empty"));
        }
        if keys.iter().any(|prev| prev.id == k.id) {
            return Err(ConfigError::at(
                format!("{path}.id"),
                format!("duplicate key id `{}`", k.id),
            ));
        }
        check_secret_name(&format!("{path}.secret"), &k.secret)?;
        let value = secret(&k.secret)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(Secret);
        let fingerprint = value
            .as_ref()
            .map(|v: &Secret| fingerprint(v.expose()))
            .unwrap_or_default();
        keys.push(Key {
            org: k.org.unwrap_or_else(|| k.id.clone()),
            id: k.id,
            secret_name: k.secret,
            value,
            fingerprint,
        });
    }
    if keys.is_empty() {
        return Err(ConfigError::at(at(".keys"), "at least one key is required"));
    }
    let mut limits: BTreeMap<String, Limits> = preset
        .map(|p| {
            p.limits
                .iter()
                .map(|(m, l)| ((*m).to_owned(), *l))
                .collect()
        })
        .unwrap_or_default();
    for (
        model,
        RawLimits {
            rpm,
            rpd,
            tpm,
            tpd,
            max_output_tokens,
        },
    ) in raw.limits
    {
        let entry = limits.entry(model).or_default();
        entry.rpm = rpm.or(entry.rpm);
        entry.rpd = rpd.or(entry.rpd);
        entry.tpm = tpm.or(entry.tpm);
        entry.tpd = tpd.or(entry.tpd);
        entry.max_output_tokens = max_output_tokens.or(entry.max_output_tokens);
    }
    for (i, field) in raw.pass_fields.iter().enumerate() {
        let known =
            GUARDED_FIELDS.contains(&field.as_str()) || RESPONSES_STATE.contains(&field.as_str());
        if !known {
            return Err(ConfigError::at(
                at(&format!(".pass_fields[{i}]")),
                format!(
                    "`{}` is not a guarded field (fields other than these pass anyway): {}, {}",
                    field.chars().take(64).collect::<String>(),
                    GUARDED_FIELDS.join(", "),
                    RESPONSES_STATE[1..].join(", ")
                ),
            ));
        }
    }
    Ok(Provider {
        dialect: preset.map_or(RateLimitDialect::OpenAi, |p| p.dialect),
        name,
        base_url,
        capabilities,
        max_tokens_field,
        keys,
        limits,
        pass_fields: raw.pass_fields,
        batch: raw.batch.unwrap_or(preset.is_some_and(|p| p.batch)),
        prices: preset.map(presets::prices).unwrap_or_default(),
    })
}

type Models = (BTreeMap<String, Vec<Target>>, Vec<String>, usize);

/// Each route's targets, and the routes that order them by latency.
type Routes = (BTreeMap<String, Vec<raw::RawTarget>>, Vec<String>);

fn route_tables(routes: BTreeMap<String, raw::RawRoute>) -> Result<Routes, ConfigError> {
    let mut targets = BTreeMap::new();
    let mut by_latency = Vec::new();
    for (name, route) in routes {
        let path = format!("routes.{name}");
        let list = match route {
            raw::RawRoute::Targets(list) => list,
            raw::RawRoute::Table(mut table) => {
                if let Some(key) = table
                    .keys()
                    .find(|k| !matches!(k.as_str(), "targets" | "order"))
                {
                    return Err(ConfigError::at(
                        format!("{path}.{key}"),
                        "unknown key; a route's table takes `targets` and `order`",
                    ));
                }
                match table.get("order").map(|o| o.as_str()) {
                    None | Some(Some("configured")) => {}
                    Some(Some("latency")) => by_latency.push(name.clone()),
                    Some(_) => {
                        return Err(ConfigError::at(
                            format!("{path}.order"),
                            "must be \"configured\" or \"latency\"",
                        ))
                    }
                }
                let list = table.remove("targets").unwrap_or(serde_json::Value::Null);
                serde_json::from_value(list).map_err(|_| {
                    ConfigError::at(
                        format!("{path}.targets"),
                        "must be a list of targets (\"provider/model\" or tables)",
                    )
                })?
            }
        };
        targets.insert(name, list);
    }
    Ok((targets, by_latency))
}

fn build_models(
    routes: BTreeMap<String, Vec<raw::RawTarget>>,
    providers: &mut [Provider],
) -> Result<Models, ConfigError> {
    if routes.is_empty() {
        return Err(ConfigError::at("routes", "at least one route is required"));
    }
    let mut models: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    let mut listing = Vec::new();
    for (name, targets) in &routes {
        let path = format!("routes.{name}");
        if name.trim().is_empty() {
            return Err(ConfigError::at(path, "a route needs a name"));
        }
        if targets.is_empty() {
            return Err(ConfigError::at(path, "a route needs at least one target"));
        }
        let mut parsed: Vec<Target> = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            let target = parse_target(&format!("{path}[{i}]"), t, providers)?;
            if let Some(provider) = providers.get_mut(target.provider) {
                tier_limits(provider, &target);
            }
            if !parsed.contains(&target) {
                parsed.push(target);
            }
        }
        models.insert(name.clone(), parsed);
        listing.push(name.clone());
    }
    // `auto` defaults to the fast route, then the slow one (the classifier refines this).
    if !models.contains_key("auto") {
        let mut auto: Vec<Target> = Vec::new();
        for t in ["fast", "slow"]
            .iter()
            .filter_map(|r| models.get(*r))
            .flatten()
        {
            if !auto.contains(t) {
                auto.push(t.clone());
            }
        }
        if !auto.is_empty() {
            models.insert("auto".to_owned(), auto);
            listing.insert(0, "auto".to_owned());
        }
    }
    let aliases = listing.len();
    // Every concrete model a route names can be asked for by its own id.
    let concrete: Vec<Target> = routes
        .keys()
        .filter_map(|r| models.get(r))
        .flatten()
        .cloned()
        .collect();
    for t in concrete {
        if routes.contains_key(&t.model) {
            continue;
        }
        let entry = models.entry(t.model.clone()).or_default();
        if entry.is_empty() {
            listing.push(t.model.clone());
        }
        if !entry.contains(&t) {
            entry.push(t);
        }
    }
    Ok((models, listing, aliases))
}

/// A route's target: `provider/model` (split at the first slash: model ids may contain
/// slashes), or a table with that as `target` and optionally a `service_tier`.
fn parse_target(
    path: &str,
    raw: &raw::RawTarget,
    providers: &[Provider],
) -> Result<Target, ConfigError> {
    let (name, tier) = match raw {
        raw::RawTarget::Name(name) => (name.as_str(), None),
        raw::RawTarget::Table(table) => {
            if let Some(key) = table
                .keys()
                .find(|k| !matches!(k.as_str(), "target" | "service_tier"))
            {
                return Err(ConfigError::at(
                    format!("{path}.{key}"),
                    "unknown key; a target's table takes `target` and `service_tier`",
                ));
            }
            let name = table
                .get("target")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| {
                    ConfigError::at(
                        format!("{path}.target"),
                        "required: the target as `provider/model`",
                    )
                })?;
            let tier = match table.get("service_tier") {
                None => None,
                Some(value) => Some(
                    value
                        .as_str()
                        .filter(|t| SERVICE_TIERS.contains(t))
                        .ok_or_else(|| {
                            ConfigError::at(
                                format!("{path}.service_tier"),
                                format!("not a service tier; known: {}", SERVICE_TIERS.join(", ")),
                            )
                        })?
                        .to_owned(),
                ),
            };
            (name, tier)
        }
    };
    let (provider_name, model) = name
        .split_once('/')
        .filter(|(p, m)| !p.is_empty() && !m.is_empty())
        .ok_or_else(|| ConfigError::at(path, format!("`{name}` is not `provider/model`")))?;
    let provider = providers
        .iter()
        .position(|p| p.name == provider_name)
        .ok_or_else(|| ConfigError::at(path, format!("no provider named `{provider_name}`")))?;
    Ok(Target {
        provider,
        name: books_name(model, tier.as_deref()),
        model: model.to_owned(),
        tier,
    })
}

/// Gives flex's books the limits they are booked against, unless the configuration sets them
/// (`limits."model:flex"`): [`FLEX_LIMIT_FACTOR`] times the model's. A model with no limits
/// leaves its flex tier untracked too.
fn tier_limits(provider: &mut Provider, target: &Target) {
    if target.name == target.model || provider.limits.contains_key(&target.name) {
        return;
    }
    let Some(base) = provider.limits.get(&target.model).copied() else {
        return;
    };
    let scale = |l: Option<u64>| l.map(|v| v.saturating_mul(FLEX_LIMIT_FACTOR));
    provider.limits.insert(
        target.name.clone(),
        Limits {
            rpm: scale(base.rpm),
            rpd: scale(base.rpd),
            tpm: scale(base.tpm),
            tpd: scale(base.tpd),
            max_output_tokens: base.max_output_tokens,
        },
    );
}

/// Accepts an absolute https URL without query or fragment and drops a trailing slash; plain
/// http only to a loopback host (a local fake or proxy), since the key would cross in the clear.
fn validate_base_url(path: &str, raw: &str) -> Result<String, ConfigError> {
    let invalid = |detail: &str| ConfigError::at(path, detail);
    let url = raw.trim();
    let (rest, plain) = match url.strip_prefix("https://") {
        Some(rest) => (rest, false),
        None => (
            url.strip_prefix("http://")
                .ok_or_else(|| invalid("it must start with https://"))?,
            true,
        ),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("it has no host"));
    }
    if plain && !is_loopback(rest) {
        return Err(invalid(
            "http:// would send the provider key in the clear: use https:// (plain http is \
             accepted only for a loopback host: localhost, 127.0.0.1, [::1])",
        ));
    }
    if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err(invalid(
            "it must be a plain base URL without query, fragment or spaces",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether the authority at the start of `rest` (up to its path) is a loopback host.
fn is_loopback(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    // No user info: `http://127.0.0.1@evil.example` is evil.example.
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
