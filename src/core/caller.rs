//! Step 4, continued: who the caller is once authenticated (a user from a token, a gateway
//! key, or anyone when auth is off), and the caller's own limits: its tier's four windows,
//! booked in the quota ledger's machinery (a bank per caller, leases in the isolate, no call in
//! the common case), and its spend budgets ([`super::usage`]).

use super::config::{Config, Limits, Tier};
use super::error::RouterError;
use super::quota::ledger::{bookable_tokens, minute_end, window_start, Books, DAY_MS, MINUTE_MS};
use super::quota::{KeyCard, ModelOption, Offer, Shard};
use super::token::Identity;

/// The "provider" of callers' banks: one bank (Durable Object) per caller, `~callers/<subject>`,
/// so that no object is shared by many callers. Provider names cannot start with `~`.
pub const BANKS: &str = "~callers";
/// The one "model" a caller's bank keeps books on.
pub const MODEL: &str = "calls";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off (local development).
    Open,
    /// A gateway key, by its id (the first 12 hex digits of its SHA-256).
    Key { id: String },
    /// A user, from a verified token.
    User(Identity),
}

impl Caller {
    /// The caller's name in the usage books and its bank's: `user:<id>`, `key:<id>`, `open`.
    pub fn subject(&self) -> String {
        match self {
            Caller::Open => "open".to_owned(),
            Caller::Key { id } => format!("key:{id}"),
            Caller::User(identity) => format!("user:{}", identity.user),
        }
    }

    /// The caller as an error message names it.
    pub fn describe(&self) -> String {
        match self {
            Caller::Open => "caller".to_owned(),
            Caller::Key { id } => format!("gateway key {id}"),
            Caller::User(identity) => format!("user {}", identity.user),
        }
    }

    /// The caller's tier, if it has one the configuration defines. A token naming an unknown
    /// tier gets the default tier.
    pub fn tier<'c>(&self, config: &'c Config) -> Option<(&'c str, &'c Tier)> {
        let name = match self {
            Caller::Open => None,
            Caller::Key { id } => config
                .gateway
                .key_tiers
                .get(id)
                .or(config.gateway.key_tier.as_ref()),
            Caller::User(identity) => identity
                .tier
                .as_ref()
                .filter(|t| config.tiers.contains_key(*t))
                .or(config.users.as_ref().and_then(|u| u.default_tier.as_ref())),
        }?;
        config
            .tiers
            .get_key_value(name)
            .map(|(n, t)| (n.as_str(), t))
    }

    /// The routes a user's token allows (`None`: any).
    pub fn routes(&self) -> Option<&[String]> {
        match self {
            Caller::User(identity) => identity.routes.as_deref(),
            _ => None,
        }
    }

    /// The caller's bank.
    pub fn shard(&self) -> Shard {
        Shard::new(BANKS, &self.subject())
    }

    /// What a booking offers the caller's bank: one "organization" (the caller) with one "key".
    pub fn offers(&self) -> Vec<Offer> {
        vec![Offer {
            org: self.subject(),
            keys: vec![card()],
        }]
    }
}

/// The one key card of a caller's bank.
pub fn card() -> KeyCard {
    KeyCard {
        id: "caller".to_owned(),
        fingerprint: String::new(),
    }
}

/// The booking option of a caller's bank.
pub fn option(tier: &Tier) -> ModelOption {
    ModelOption {
        model: MODEL.to_owned(),
        limits: tier.limits,
    }
}

/// The refusal for a caller whose books have no room for a request of `tokens` at `now_ms`:
/// which window is full (the day's first: waiting out a minute would not help), and when it has
/// room again (`until_ms`, from the books, or the window's end).
pub fn refusal(
    caller: &Caller,
    tier_name: &str,
    limits: &Limits,
    books: &Books,
    tokens: u64,
    until_ms: u64,
    now_ms: u64,
) -> RouterError {
    let tokens = bookable_tokens(limits, tokens);
    let day_end = window_start(now_ms, DAY_MS) + DAY_MS;
    let windows = [
        (
            "requests per day",
            limits.rpd,
            books.rpd,
            DAY_MS,
            1,
            day_end,
        ),
        (
            "tokens per day",
            limits.tpd,
            books.tpd,
            DAY_MS,
            tokens,
            day_end,
        ),
        (
            "requests per minute",
            limits.rpm,
            books.rpm,
            MINUTE_MS,
            1,
            minute_end(now_ms),
        ),
        (
            "tokens per minute",
            limits.tpm,
            books.tpm,
            MINUTE_MS,
            tokens,
            minute_end(now_ms),
        ),
    ];
    let full = windows.iter().find(|(_, limit, counter, len, need, _)| {
        limit.is_some_and(|l| counter.current(now_ms, *len).saturating_add(*need) > l)
    });
    // Full on no window the isolate can see (the bank's own view said so): the minute.
    let (limit, amount, end) = match full {
        Some((name, limit, _, _, _, end)) => (*name, *limit, *end),
        None => ("requests per minute", limits.rpm, until_ms),
    };
    let until_ms = until_ms.max(end).max(now_ms);
    RouterError::CallerLimited {
        limit: limit.to_owned(),
        caller: caller.describe(),
        tier: tier_name.to_owned(),
        amount: amount.map_or_else(|| "its limit".to_owned(), |a| a.to_string()),
        retry_after_s: until_ms.saturating_sub(now_ms).div_ceil(1_000).max(1),
        budget: false,
    }
}

/// The `x-ratelimit-*` headers that tell a caller its own limits (never the router's
/// providers'): per minute for requests and tokens, from its books at `now_ms`.
pub fn headers(limits: &Limits, books: &Books, now_ms: u64) -> Vec<(&'static str, String)> {
    let (requests_left, tokens_left) = books.left(limits, now_ms);
    let reset = format!(
        "{}s",
        minute_end(now_ms).saturating_sub(now_ms).div_ceil(1_000)
    );
    let mut out = Vec::new();
    if let (Some(limit), Some(left)) = (limits.rpm, requests_left) {
        out.push(("x-ratelimit-limit-requests", limit.to_string()));
        out.push(("x-ratelimit-remaining-requests", left.to_string()));
        out.push(("x-ratelimit-reset-requests", reset.clone()));
    }
    if let (Some(limit), Some(left)) = (limits.tpm, tokens_left) {
        out.push(("x-ratelimit-limit-tokens", limit.to_string()));
        out.push(("x-ratelimit-remaining-tokens", left.to_string()));
        out.push(("x-ratelimit-reset-tokens", reset));
    }
    out
}

#[cfg(test)]
mod tests;
