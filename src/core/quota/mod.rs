//! The quota ledger: how much of each organization's limits is spent, per model, on four fixed
//! windows (requests and tokens, per minute and per day), and whether a request fits.
//!
//! Estimate, reserve, reconcile: [`Ledger::reserve`] books the estimated tokens and one request
//! before the call and hands back a [`Ticket`]; [`Ledger::settle`] replaces the estimate with the
//! real usage after it (cached prompt tokens do not count); [`Ledger::release`] returns a
//! reservation whose request never reached the provider. The providers' own headers tighten the
//! books ([`Ledger::observe`]: the stricter of the two wins), a 429 cools the organization and
//! model down ([`Ledger::refused`]), and a 401/403 disables a key ([`Ledger::disable_key`]).
//!
//! Time is an input (milliseconds since the epoch). Windows are fixed and aligned (a minute
//! starts at a multiple of 60 s, a day at midnight UTC); a counter from an earlier window reads as
//! zero. Counters never go below zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{Config, Limits, Provider, Target};
use super::ratelimit::{Refusal, Report, Window, WindowReport};

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// How long a billing refusal (`insufficient_quota`) keeps an organization out.
pub const BILLING_COOLDOWN_MS: u64 = 3_600_000;
/// The wait assumed after a 429 that says nothing of when to come back.
pub const DEFAULT_COOLDOWN_MS: u64 = 10_000;

/// A counter on one fixed window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Start of the window the count belongs to.
    pub start_ms: u64,
    pub used: u64,
}

impl Counter {
    fn window_start(now_ms: u64, len_ms: u64) -> u64 {
        now_ms - now_ms % len_ms
    }

    /// The count in the window containing `now_ms` (zero if the counter is from an older one).
    fn current(&self, now_ms: u64, len_ms: u64) -> u64 {
        if self.start_ms == Self::window_start(now_ms, len_ms) {
            self.used
        } else {
            0
        }
    }

    fn add(&mut self, now_ms: u64, len_ms: u64, amount: u64) {
        let start = Self::window_start(now_ms, len_ms);
        if self.start_ms != start {
            *self = Counter {
                start_ms: start,
                used: 0,
            };
        }
        self.used = self.used.saturating_add(amount);
    }

    /// Takes `amount` back, but only from the window it was booked in.
    fn sub(&mut self, booked_start_ms: u64, amount: u64) {
        if self.start_ms == booked_start_ms {
            self.used = self.used.saturating_sub(amount);
        }
    }

    /// Raises the count to at least `floor` in the window containing `now_ms`.
    fn raise_to(&mut self, now_ms: u64, len_ms: u64, floor: u64) {
        let current = self.current(now_ms, len_ms);
        if floor > current {
            *self = Counter {
                start_ms: Self::window_start(now_ms, len_ms),
                used: floor,
            };
        }
    }
}

/// The books of one organization on one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Books {
    pub rpm: Counter,
    pub rpd: Counter,
    pub tpm: Counter,
    pub tpd: Counter,
    /// No request until then (a 429 or a billing refusal).
    pub cooldown_until_ms: u64,
}

/// A reservation, to be settled with the real usage or released.
#[must_use = "a reservation must be settled or released, or it holds quota until its window ends"]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub org: String,
    pub model: String,
    pub tokens: u64,
    /// The windows the reservation was booked in (minute, day).
    pub minute_start_ms: u64,
    pub day_start_ms: u64,
}

/// Why a request does not fit an organization now, and when it will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    /// The earliest time at which the request could fit (ignoring other traffic).
    pub until_ms: u64,
}

/// Real usage of a finished request, from its `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens`: not counted towards Groq's limits.
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// The tokens that count towards the limits.
    pub fn counted(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cached_tokens)
            .saturating_add(self.completion_tokens)
    }
}

/// The books of every organization and model one ledger keeps, plus disabled keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// By organization, then model.
    pub books: BTreeMap<String, BTreeMap<String, Books>>,
    /// Key ids refused with 401/403, with the status.
    pub disabled_keys: BTreeMap<String, u16>,
}

impl Ledger {
    fn books_mut(&mut self, org: &str, model: &str) -> &mut Books {
        self.books
            .entry(org.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_default()
    }

    /// The books of `org` on `model` (empty ones when nothing was booked yet).
    pub fn books(&self, org: &str, model: &str) -> Books {
        self.books
            .get(org)
            .and_then(|m| m.get(model))
            .copied()
            .unwrap_or_default()
    }

    /// Whether a request of `tokens` fits `org`'s limits on `model` now: `Ok(headroom)` with the
    /// smallest fraction left on any window after it (in thousandths, for ranking), or when
    /// it would fit.
    pub fn room(
        &self,
        org: &str,
        model: &str,
        limits: &Limits,
        tokens: u64,
        now_ms: u64,
    ) -> Result<u64, NoRoom> {
        let b = self.books(org, model);
        if b.cooldown_until_ms > now_ms {
            return Err(NoRoom {
                until_ms: b.cooldown_until_ms,
            });
        }
        let windows = [
            (limits.rpm, b.rpm, MINUTE_MS, 1),
            (limits.rpd, b.rpd, DAY_MS, 1),
            (limits.tpm, b.tpm, MINUTE_MS, tokens),
            (limits.tpd, b.tpd, DAY_MS, tokens),
        ];
        let mut headroom = 1_000;
        let mut until: Option<u64> = None;
        for (limit, counter, len, need) in windows {
            let Some(limit) = limit else { continue };
            // A request larger than a whole window (the estimate runs high) fits an empty one:
            // the provider has the last word on it rather than the router refusing it forever.
            let need = need.min(limit);
            let used = counter.current(now_ms, len);
            if used.saturating_add(need) > limit {
                let next = Counter::window_start(now_ms, len) + len;
                until = Some(until.map_or(next, |u| u.max(next)));
                continue;
            }
            let left = limit - used - need;
            headroom = headroom.min(left.saturating_mul(1_000) / limit.max(1));
        }
        match until {
            Some(until_ms) => Err(NoRoom { until_ms }),
            None => Ok(headroom),
        }
    }

    /// Books one request and `tokens` on `org`'s windows for `model`, if it fits.
    pub fn reserve(
        &mut self,
        org: &str,
        model: &str,
        limits: &Limits,
        tokens: u64,
        now_ms: u64,
    ) -> Result<Ticket, NoRoom> {
        self.room(org, model, limits, tokens, now_ms)?;
        let b = self.books_mut(org, model);
        b.rpm.add(now_ms, MINUTE_MS, 1);
        b.rpd.add(now_ms, DAY_MS, 1);
        b.tpm.add(now_ms, MINUTE_MS, tokens);
        b.tpd.add(now_ms, DAY_MS, tokens);
        Ok(Ticket {
            org: org.to_owned(),
            model: model.to_owned(),
            tokens,
            minute_start_ms: Counter::window_start(now_ms, MINUTE_MS),
            day_start_ms: Counter::window_start(now_ms, DAY_MS),
        })
    }

    /// Replaces a reservation's estimate with the real usage (in the windows it was booked in).
    pub fn settle(&mut self, ticket: Ticket, usage: Usage) {
        let counted = usage.counted();
        let b = self.books_mut(&ticket.org, &ticket.model);
        for (counter, start) in [
            (&mut b.tpm, ticket.minute_start_ms),
            (&mut b.tpd, ticket.day_start_ms),
        ] {
            if counter.start_ms == start {
                counter.used = counter
                    .used
                    .saturating_sub(ticket.tokens)
                    .saturating_add(counted);
            }
        }
    }

    /// Returns a reservation whose request never reached the provider.
    pub fn release(&mut self, ticket: Ticket) {
        let b = self.books_mut(&ticket.org, &ticket.model);
        b.rpm.sub(ticket.minute_start_ms, 1);
        b.rpd.sub(ticket.day_start_ms, 1);
        b.tpm.sub(ticket.minute_start_ms, ticket.tokens);
        b.tpd.sub(ticket.day_start_ms, ticket.tokens);
    }

    /// Learns from a response's rate-limit headers: a window whose provider reports less
    /// remaining than the ledger thinks is raised to the provider's count.
    pub fn observe(&mut self, org: &str, model: &str, report: &Report, now_ms: u64) {
        let b = self.books_mut(org, model);
        let spent = |w: &Option<WindowReport>| -> Option<u64> {
            let w = w.as_ref()?;
            Some(w.limit?.saturating_sub(w.remaining?))
        };
        if let Some(s) = spent(&report.requests_minute) {
            b.rpm.raise_to(now_ms, MINUTE_MS, s);
        }
        if let Some(s) = spent(&report.requests_day) {
            b.rpd.raise_to(now_ms, DAY_MS, s);
        }
        if let Some(s) = spent(&report.tokens_minute) {
            b.tpm.raise_to(now_ms, MINUTE_MS, s);
        }
        if let Some(s) = spent(&report.tokens_day) {
            b.tpd.raise_to(now_ms, DAY_MS, s);
        }
    }

    /// A 429: the organization and model cool down until the provider says, or until the hit
    /// window ends, or for [`DEFAULT_COOLDOWN_MS`]; a billing refusal for
    /// [`BILLING_COOLDOWN_MS`].
    pub fn refused(&mut self, org: &str, model: &str, refusal: &Refusal, now_ms: u64) {
        let until = cooldown_until(refusal, now_ms);
        let b = self.books_mut(org, model);
        b.cooldown_until_ms = b.cooldown_until_ms.max(until);
    }

    /// A key the provider refused (401/403): not used again until the configuration changes.
    pub fn disable_key(&mut self, key_id: &str, status: u16) {
        self.disabled_keys.insert(key_id.to_owned(), status);
    }

    pub fn is_disabled(&self, key_id: &str) -> bool {
        self.disabled_keys.contains_key(key_id)
    }
}

/// When a refused organization may be asked again: a billing refusal after
/// [`BILLING_COOLDOWN_MS`]; otherwise when the provider said, or when the window it named ends,
/// or after [`DEFAULT_COOLDOWN_MS`].
pub fn cooldown_until(refusal: &Refusal, now_ms: u64) -> u64 {
    if refusal.billing {
        now_ms.saturating_add(BILLING_COOLDOWN_MS)
    } else if let Some(wait) = refusal.retry_after_ms {
        now_ms.saturating_add(wait)
    } else {
        match refusal.window {
            Some(Window::RequestsMinute | Window::TokensMinute) => {
                Counter::window_start(now_ms, MINUTE_MS) + MINUTE_MS
            }
            Some(Window::RequestsDay | Window::TokensDay) => {
                Counter::window_start(now_ms, DAY_MS) + DAY_MS
            }
            None => now_ms.saturating_add(DEFAULT_COOLDOWN_MS),
        }
    }
}

/// A candidate organization for a request: its name and one usable key of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub org: &'a str,
    pub key_id: &'a str,
}

/// Chooses the organization (and key) for a request among `candidates`, all for `model`.
///
/// Organizations without room are skipped. With a `prefix_hash` (a hash of the request's static
/// prefix, for models with prompt caching), the organization that wins rendezvous hashing on it
/// is kept while it has room, so that its cache hits; otherwise the one with the most headroom
/// wins (ties: the first). Without any room, the earliest time some candidate will have room.
pub fn choose<'a>(
    ledger: &Ledger,
    candidates: &[Candidate<'a>],
    model: &str,
    limits: &Limits,
    tokens: u64,
    prefix_hash: Option<u64>,
    now_ms: u64,
) -> Result<Candidate<'a>, NoRoom> {
    let mut best: Option<(u64, Candidate<'a>)> = None;
    let mut earliest: Option<u64> = None;
    for c in candidates {
        if ledger.is_disabled(c.key_id) {
            continue;
        }
        match ledger.room(c.org, model, limits, tokens, now_ms) {
            Ok(headroom) => {
                let score = match prefix_hash {
                    Some(h) => rendezvous(h, c.org),
                    None => headroom,
                };
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, *c));
                }
            }
            Err(NoRoom { until_ms }) => {
                earliest = Some(earliest.map_or(until_ms, |e| e.min(until_ms)));
            }
        }
    }
    match best {
        Some((_, c)) => Ok(c),
        None => Err(NoRoom {
            until_ms: earliest.unwrap_or(u64::MAX),
        }),
    }
}

/// Rendezvous (highest random weight) score of an organization for a prefix: stable for the
/// same pair, spread evenly across organizations. FNV-1a over the org name, mixed with the hash.
pub fn rendezvous(prefix_hash: u64, org: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ prefix_hash;
    for b in org.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final avalanche so that nearby prefix hashes give unrelated scores.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Whether a provider caches prompt prefixes for `model` (Groq: the gpt-oss family and
/// kimi-k2), so that requests with the same static prefix should stay on one organization.
pub fn caches_prompts(model: &str) -> bool {
    model.contains("gpt-oss") || model.contains("kimi-k2")
}

/// A hash of a chat request's static prefix: its leading system and developer messages, its
/// tools and its response format, which is what a prompt cache matches on.
pub fn prefix_hash(req: &super::request::ChatRequest) -> u64 {
    use super::request::Role;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for m in req
        .messages
        .iter()
        .take_while(|m| matches!(m.role, Role::System | Role::Developer))
    {
        feed(
            serde_json::to_string(&m.extra)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    feed(
        serde_json::to_string(&req.tools)
            .unwrap_or_default()
            .as_bytes(),
    );
    feed(
        serde_json::to_string(&req.response_format)
            .unwrap_or_default()
            .as_bytes(),
    );
    h
}

/// One provider's books for the status page: per organization and model, each window's
/// used / limit / reset time, the cooldown, and the disabled keys by id (never the keys).
pub fn status_view(
    ledger: &Ledger,
    limits: &BTreeMap<String, Limits>,
    now_ms: u64,
) -> serde_json::Value {
    use serde_json::json;
    let window = |counter: &Counter, limit: Option<u64>, len: u64| {
        json!({
            "used": counter.current(now_ms, len),
            "limit": limit,
            "resets_at_ms": Counter::window_start(now_ms, len) + len,
        })
    };
    let mut orgs = serde_json::Map::new();
    for (org, models) in &ledger.books {
        let mut per_model = serde_json::Map::new();
        for (model, b) in models {
            let l = limits.get(model).copied().unwrap_or_default();
            per_model.insert(
                model.clone(),
                json!({
                    "requests_per_minute": window(&b.rpm, l.rpm, MINUTE_MS),
                    "requests_per_day": window(&b.rpd, l.rpd, DAY_MS),
                    "tokens_per_minute": window(&b.tpm, l.tpm, MINUTE_MS),
                    "tokens_per_day": window(&b.tpd, l.tpd, DAY_MS),
                    "cooldown_until_ms": (b.cooldown_until_ms > now_ms).then_some(b.cooldown_until_ms),
                }),
            );
        }
        orgs.insert(org.clone(), serde_json::Value::Object(per_model));
    }
    let disabled: Vec<serde_json::Value> = ledger
        .disabled_keys
        .iter()
        .map(|(id, status)| json!({"key_id": id, "status": status}))
        .collect();
    json!({"now_ms": now_ms, "organizations": orgs, "disabled_keys": disabled})
}

/// An organization and key, owned, as the Worker sends them to the ledger's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedCandidate {
    pub org: String,
    pub key_id: String,
}

/// One step of finding a key for a request, in the candidates' order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'c> {
    /// A target whose provider tracks no limits for its model: its first usable key, no call.
    Direct(&'c Target),
    /// A run of consecutive targets of one provider that tracks their limits: one call to that
    /// provider's quota object, which books the first model with room.
    Reserve {
        provider: &'c Provider,
        targets: Vec<&'c Target>,
        /// The models of `targets`, in order, for [`Command::Reserve`].
        options: Vec<ModelOption>,
        /// The provider's usable keys with their organizations.
        candidates: Vec<OwnedCandidate>,
        /// Secrets of the provider's keys that are not set (for the error if nothing serves).
        missing_secrets: Vec<String>,
    },
}

/// Plans the steps for `targets` (the classifier's candidates, in order): consecutive targets
/// of one provider with tracked limits share one reservation call, so that a request makes one
/// quota call per such provider it may use, and none for providers that track nothing.
pub fn plan<'c>(config: &'c Config, targets: &[&'c Target], prefix_hash: u64) -> Vec<Step<'c>> {
    let mut steps: Vec<Step<'c>> = Vec::new();
    for target in targets {
        let Some(provider) = config.providers.get(target.provider) else {
            continue;
        };
        let Some(limits) = provider.limits.get(&target.model) else {
            steps.push(Step::Direct(target));
            continue;
        };
        let option = ModelOption {
            model: target.model.clone(),
            limits: *limits,
            prefix_hash: caches_prompts(&target.model).then_some(prefix_hash),
            skip: Vec::new(),
        };
        if let Some(Step::Reserve {
            provider: p,
            targets,
            options,
            ..
        }) = steps.last_mut()
        {
            if p.name == provider.name {
                targets.push(target);
                options.push(option);
                continue;
            }
        }
        // Every usable key, with its organization: the object ranks organizations (whose keys
        // share one quota) and skips keys it knows are disabled.
        let candidates = provider
            .keys
            .iter()
            .filter(|k| k.value.is_some())
            .map(|k| OwnedCandidate {
                org: k.org.clone(),
                key_id: k.id.clone(),
            })
            .collect();
        let missing_secrets = provider
            .keys
            .iter()
            .filter(|k| k.value.is_none())
            .map(|k| k.secret_name.clone())
            .collect();
        steps.push(Step::Reserve {
            provider,
            targets: vec![target],
            options: vec![option],
            candidates,
            missing_secrets,
        });
    }
    steps
}

/// One model a reservation may take, with its limits and, for models with prompt caching, the
/// hash of the request's static prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOption {
    pub model: String,
    pub limits: Limits,
    pub prefix_hash: Option<u64>,
    /// Organizations and keys (by name or id) not to book on this model: those a failed
    /// attempt of this request already used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
}

/// What the Worker asks of the object that holds a ledger. The object applies it with
/// [`apply`] in one synchronous step (no other request interleaves) and stores the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Book the request on the first of `options` (models, in order of preference) for which
    /// some organization among `candidates` has room.
    Reserve {
        options: Vec<ModelOption>,
        tokens: u64,
        candidates: Vec<OwnedCandidate>,
    },
    /// The request finished: real usage when known, and what the provider's headers said.
    Settle {
        ticket: Ticket,
        usage: Option<Usage>,
        report: Option<Report>,
    },
    /// The request never reached the provider, or the provider refused it without spending.
    Release { ticket: Ticket },
    /// A 429 from the provider for `org`'s key.
    Refused {
        ticket: Ticket,
        refusal: Refusal,
        report: Option<Report>,
    },
    /// A 401/403 for a key.
    Disable {
        ticket: Ticket,
        key_id: String,
        status: u16,
    },
    /// The whole ledger, for the status page.
    Status,
}

impl Command {
    /// Whether applying the command changes the ledger (and so must be stored).
    pub fn writes(&self) -> bool {
        !matches!(self, Command::Status)
    }
}

/// The object's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Reserved {
        model: String,
        org: String,
        key_id: String,
        ticket: Ticket,
    },
    NoRoom {
        until_ms: u64,
    },
    Done,
    Status {
        now_ms: u64,
        ledger: Ledger,
    },
}

/// Applies a command to a ledger at `now_ms`.
pub fn apply(ledger: &mut Ledger, command: Command, now_ms: u64) -> Reply {
    match command {
        Command::Reserve {
            options,
            tokens,
            candidates,
        } => {
            let mut earliest = u64::MAX;
            for option in options {
                let (model, limits) = (&option.model, &option.limits);
                let borrowed: Vec<Candidate<'_>> = candidates
                    .iter()
                    .filter(|c| !option.skip.iter().any(|s| *s == c.org || *s == c.key_id))
                    .map(|c| Candidate {
                        org: &c.org,
                        key_id: &c.key_id,
                    })
                    .collect();
                let chosen = choose(
                    ledger,
                    &borrowed,
                    model,
                    limits,
                    tokens,
                    option.prefix_hash,
                    now_ms,
                )
                .map(|c| (c.org.to_owned(), c.key_id.to_owned()));
                let (org, key_id) = match chosen {
                    Ok(pair) => pair,
                    Err(NoRoom { until_ms }) => {
                        earliest = earliest.min(until_ms);
                        continue;
                    }
                };
                match ledger.reserve(&org, model, limits, tokens, now_ms) {
                    Ok(ticket) => {
                        return Reply::Reserved {
                            model: option.model,
                            org,
                            key_id,
                            ticket,
                        }
                    }
                    Err(NoRoom { until_ms }) => earliest = earliest.min(until_ms),
                }
            }
            Reply::NoRoom { until_ms: earliest }
        }
        Command::Settle {
            ticket,
            usage,
            report,
        } => {
            // Usage first, then the provider's view: whichever says more is spent wins.
            let (org, model) = (ticket.org.clone(), ticket.model.clone());
            if let Some(usage) = usage {
                ledger.settle(ticket, usage);
            }
            if let Some(report) = report {
                ledger.observe(&org, &model, &report, now_ms);
            }
            Reply::Done
        }
        Command::Release { ticket } => {
            ledger.release(ticket);
            Reply::Done
        }
        Command::Refused {
            ticket,
            refusal,
            report,
        } => {
            if let Some(report) = report {
                ledger.observe(&ticket.org, &ticket.model, &report, now_ms);
            }
            ledger.refused(&ticket.org, &ticket.model, &refusal, now_ms);
            ledger.release(ticket);
            Reply::Done
        }
        Command::Disable {
            ticket,
            key_id,
            status,
        } => {
            ledger.disable_key(&key_id, status);
            ledger.release(ticket);
            Reply::Done
        }
        Command::Status => Reply::Status {
            now_ms,
            ledger: ledger.clone(),
        },
    }
}

#[cfg(test)]
mod tests;
