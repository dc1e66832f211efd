//! The configuration as an operator writes it: plain serde structs that refuse unknown fields,
//! with defaults. [`super::Config::parse`] turns them into the validated configuration.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub classifier: RawClassifier,
    #[serde(default)]
    pub failover: RawFailover,
    pub providers: BTreeMap<String, RawProvider>,
    pub routes: BTreeMap<String, RawRoute>,
    /// Signed user tokens (`core::token`).
    #[serde(default)]
    pub users: Option<super::access::RawUsers>,
    /// What bounds each caller, by tier name.
    #[serde(default)]
    pub tiers: BTreeMap<String, super::access::RawTier>,
    /// Prices per `provider/model`, over the presets'.
    #[serde(default)]
    pub prices: BTreeMap<String, super::access::RawPrice>,
}

/// A route: its targets in order, or a table of `targets` and `order` (`"configured"`, the
/// default, or `"latency"`), whose keys [`super::Config::parse`] checks itself.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRoute {
    Targets(Vec<RawTarget>),
    Table(serde_json::Map<String, serde_json::Value>),
}

/// One target of a route: `"provider/model"`, or a table naming it with options
/// (`{ target = "groq/llama-3.1-8b-instant", service_tier = "flex" }`), whose keys
/// [`super::Config::parse`] checks itself so that an error names the key.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTarget {
    Name(String),
    Table(serde_json::Map<String, serde_json::Value>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Whether clients must present a gateway key. Default true.
    #[serde(default = "yes")]
    pub auth: bool,
    /// The secret holding the SHA-256 hashes (hex) of the accepted gateway keys.
    #[serde(default = "default_keys_secret")]
    pub keys_secret: String,
    /// The secret holding the SHA-256 hashes (hex) of the admin keys for the status endpoint.
    #[serde(default = "default_admin_secret")]
    pub admin_keys_secret: String,
    /// Origins allowed to call from a browser (`https://app.example.com`), or `"*"`.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Whether clients see key ids in `x-router-failover` (admins always do).
    #[serde(default)]
    pub expose_key_ids: bool,
    /// Which requests write the log line: `"all"` or `"failures"`.
    #[serde(default)]
    pub log_requests: super::RequestLog,
    /// How long a request body may take to arrive, in milliseconds.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// The most choices (`n`) one chat request may ask for.
    #[serde(default = "default_max_n")]
    pub max_n: u64,
    /// `max_n` for the requests of a route, by route name.
    #[serde(default)]
    pub max_n_per_route: BTreeMap<String, u64>,
    /// The largest output-token limit (`max_tokens`, `max_completion_tokens`) a chat request
    /// may ask for.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u64,
    /// The tier of every gateway key (none: gateway keys are not limited by the router).
    #[serde(default)]
    pub key_tier: Option<String>,
    /// The tier of a gateway key, by its id (the first 12 hex digits of its SHA-256).
    #[serde(default)]
    pub key_tiers: BTreeMap<String, String>,
}

impl Default for RawGateway {
    fn default() -> Self {
        RawGateway {
            auth: true,
            keys_secret: default_keys_secret(),
            admin_keys_secret: default_admin_secret(),
            cors_origins: Vec::new(),
            max_body_bytes: default_max_body(),
            expose_key_ids: false,
            log_requests: super::RequestLog::All,
            body_timeout_ms: default_body_timeout_ms(),
            max_n: default_max_n(),
            max_n_per_route: BTreeMap::new(),
            max_output_tokens: default_max_output_tokens(),
            key_tier: None,
            key_tiers: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_keys_secret() -> String {
    "GATEWAY_KEY_HASHES".to_owned()
}

fn default_admin_secret() -> String {
    super::ADMIN_KEYS_SECRET.to_owned()
}

/// 1 MiB: far above any chat request a browser or SDK sends, far below the runtime's limit.
fn default_max_body() -> u64 {
    1 << 20
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

fn default_max_n() -> u64 {
    8
}

fn default_max_output_tokens() -> u64 {
    131_072
}

/// Thresholds of the fast/slow classifier; each defaults as `Classifier::default` says.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassifier {
    pub fast_max_prompt_tokens: Option<u64>,
    pub fast_max_output_tokens: Option<u64>,
    pub default_output_tokens: Option<u64>,
    pub fast_context_tokens: Option<u64>,
    pub tight_latency_budget_ms: Option<u64>,
}

/// Attempts, deadlines and the circuit breaker; each defaults as `Failover::default` says.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    pub max_attempts: Option<u32>,
    pub attempt_timeout_ms: Option<u64>,
    pub fast_attempt_timeout_ms: Option<u64>,
    pub fast_attempt_floor_ms: Option<u64>,
    pub hedge_percent: Option<u32>,
    pub hedge_across_providers: Option<bool>,
    pub check_stream_events: Option<bool>,
    pub deadline_ms: Option<u64>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_ms: Option<u64>,
    pub quota_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// A built-in preset (`groq`, `together`, ...); defaults to the provider's own name.
    pub preset: Option<String>,
    pub base_url: Option<String>,
    /// Replaces the preset's capabilities.
    pub capabilities: Option<Vec<String>>,
    /// Replaces the preset's name of the output-token limit field.
    pub max_tokens_field: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// Per-model rate limits, overriding the preset's defaults.
    #[serde(default)]
    pub limits: BTreeMap<String, RawLimits>,
    /// Guarded request fields (billing, storage, routing: see `adapt::GUARDED`) that this
    /// provider may receive from clients.
    #[serde(default)]
    pub pass_fields: Vec<String>,
    /// Whether the provider serves the Batch API; defaults to the preset's.
    pub batch: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// A short name for logs and status pages; never the key.
    pub id: String,
    /// The Worker secret that holds the key.
    pub secret: String,
    /// The organization (account) the key belongs to; keys of one organization share one
    /// quota. Defaults to the key's own id.
    pub org: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub tpd: Option<u64>,
    pub max_output_tokens: Option<u64>,
}
