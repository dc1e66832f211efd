//! Step 11: the attempt loop. Which upstream call to make next, and what one call's outcome
//! means for the request.
//!
//! [`Planner`] is pure: the edge asks it for the [`Next`] thing to do (book quota with a
//! provider's ledger, send an attempt, or give up with an error), does that I/O, and reports
//! back ([`Planner::on_reply`], [`Planner::record`]). The policy, in order:
//!
//! - the candidates are tried in the classifier's order (the chosen path, then the other path
//!   where the request fits it); a provider that tracks limits books a key with room first;
//! - a 429 or billing refusal skips that organization on that model, so the next key of
//!   another organization is tried, then the next candidate;
//! - 401/403 skips the key for the rest of the request (the ledger disables it);
//! - 413, 404 and 498 skip that model; 5xx, timeouts, transport failures and streams that fail
//!   before their first event skip the provider, and count towards its circuit breaker;
//! - any other 4xx goes back to the client at once: another provider would refuse it too;
//! - a (key, model) pair is tried at most once, attempts are capped, and every attempt fits in
//!   the request's deadline and the runtime's subrequest limit;
//! - nothing ever sleeps: when no candidate is left, the error says when one will have room.

use super::config::{Config, Failover, Provider, Target};
use super::error::RouterError;
use super::outcome::{self, Outcome};
use super::quota::{
    self, Admission, Call, Effect, Holdings, Offer, Reply, Shard, Source, Step, Ticket,
};
use super::route::{self, Choice};

/// Subrequests one request may make on the Workers free plan. An attempt costs one, and a
/// synchronous booking with the quota bank one more.
pub const SUBREQUEST_LIMIT: u32 = 50;

/// The least time worth giving an attempt: with less left of the deadline, the request gives up
/// rather than start a call it would abort at once.
pub const MIN_ATTEMPT_MS: u64 = 20;

/// One attempt, as the log line and the `x-router-failover` header report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// The service tier the target asked for, if it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The key's id from the configuration, never the key.
    pub key_id: String,
    pub outcome: &'static str,
    /// Time to the outcome (response headers, or a stream's first event).
    pub ms: u64,
}

/// The outcome of an attempt given up because another answered first.
pub const CANCELLED: &str = "cancelled";

/// What the edge should do next.
#[derive(Debug)]
pub enum Next<'c> {
    /// Book the request with this organization's quota bank (then [`Planner::on_reply`], or
    /// [`Planner::on_unreachable`] if it does not answer in time).
    Reserve(Box<Call>),
    /// Send the request with this key, aborting it after `timeout_ms` without an answer (then
    /// [`Planner::record`], and the ticket settled with the outcome's [`Effect`]).
    Send {
        choice: Choice<'c>,
        ticket: Option<Ticket>,
        timeout_ms: u64,
    },
    /// Nothing is left to try: answer with this error.
    GiveUp(RouterError),
}

/// What an attempt's outcome means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand this answer to the client.
    Serve,
    /// Return this error to the client without trying anything else.
    Return(RouterError),
    /// Try the next candidate.
    Retry,
}

/// How the request that was sent last was booked, for `x-router-quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Booked {
    /// The provider tracks no limits for the model.
    #[default]
    None,
    /// From the isolate's lease: no call to the bank.
    Lease,
    /// With the bank, synchronously.
    Bank,
    /// On the isolate's own snapshot: the bank did not answer in time.
    Advisory,
}

impl Booked {
    pub fn name(self) -> &'static str {
        match self {
            Booked::None => "none",
            Booked::Lease => "lease",
            Booked::Bank => "bank",
            Booked::Advisory => "advisory",
        }
    }
}

/// What failed at a provider that answered: the last one, for the error when nothing is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProviderFailure {
    Status(u16),
    /// Groq's 498.
    Capacity,
    /// A 2xx whose start was no answer.
    BadAnswer,
}

/// The failures seen so far, for the error when nothing is left.
#[derive(Debug, Default)]
struct Failures {
    /// The earliest time some refused or full candidate has room again.
    room_at_ms: Option<u64>,
    too_large: Option<RouterError>,
    not_served: Option<RouterError>,
    provider: Option<ProviderFailure>,
    transport: bool,
    timeout: bool,
    breaker_until_ms: Option<u64>,
    auth_status: Option<u16>,
    auth_secrets: Vec<String>,
    missing_secrets: Vec<String>,
}

fn earliest(slot: &mut Option<u64>, at: u64) {
    *slot = Some(slot.map_or(at, |e| e.min(at)));
}

fn add_secret(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_owned());
    }
}

/// A key of a provider (key ids are unique within a provider only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyAt<'c> {
    provider: &'c str,
    key: &'c str,
}

/// A key used on a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyOnModel<'c> {
    key: KeyAt<'c>,
    model: &'c str,
}

/// An organization of a provider on a model: what a 429 refuses, and a bank's booking covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OrgOnModel<'c> {
    provider: &'c str,
    org: &'c str,
    model: &'c str,
}

/// A model at a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelAt<'c> {
    provider: &'c str,
    model: &'c str,
}

/// A synchronous booking under way: with which bank (and which call), for which model of the
/// current step.
#[derive(Debug, Clone)]
struct Asking {
    shard: Shard,
    call: u64,
    option: usize,
}

/// The attempt plan of one request.
#[derive(Debug)]
pub struct Planner<'c> {
    config: &'c Config,
    settings: Failover,
    steps: Vec<Step<'c>>,
    cursor: usize,
    /// A booking just made, to be sent next.
    pending: Option<(Choice<'c>, Ticket)>,
    asking: Option<Asking>,
    tokens: u64,
    prefix_hash: u64,
    deadline_at_ms: u64,
    subrequests: u32,
    /// The timeout the last attempt was given.
    last_timeout_ms: u64,
    /// The timeout an attempt is given (as the deadline allows).
    attempt_timeout_ms: u64,
    /// Whether an attempt that times out counts against its provider's circuit breaker.
    timeout_blames_provider: bool,
    booked: Booked,
    tried: Vec<KeyOnModel<'c>>,
    /// Keys refused with 401 (every model) ...
    refused_keys: Vec<KeyAt<'c>>,
    /// ... or 403 (one model).
    refused_on_model: Vec<KeyOnModel<'c>>,
    /// Organizations refused with 429 or billing, or whose bank had no room.
    full: Vec<OrgOnModel<'c>>,
    dropped_models: Vec<ModelAt<'c>>,
    dropped_providers: Vec<&'c str>,
    /// The organization whose tier (flex) just answered 498: the same model on another tier
    /// is booked there first, since its other tiers' limits are its own.
    tier_full: Option<OrgOnModel<'c>>,
    attempts: Vec<Attempt>,
    failures: Failures,
    /// While a hedge is looked for: books only from what the isolate holds, never asking a bank.
    hedging: bool,
    /// The hedge under way, and how it was booked (the request's booking if it wins).
    hedge: Option<(KeyOnModel<'c>, Booked)>,
}

impl<'c> Planner<'c> {
    /// Plans a request of `tokens` (estimated) over `targets`, the classifier's candidates in
    /// order, starting at `now_ms` with `deadline_ms` to find an answer. `prefix_hash` keeps
    /// requests with one prompt prefix on one organization for models with prompt caching.
    pub fn new(
        config: &'c Config,
        targets: &[&'c Target],
        prefix_hash: u64,
        tokens: u64,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Self {
        let steps = quota::plan(config, targets);
        let mut failures = Failures::default();
        for step in &steps {
            let provider = match step {
                Step::Direct(target) => config.providers.get(target.provider),
                Step::Book { provider, .. } => Some(*provider),
            };
            for key in provider.iter().flat_map(|p| &p.keys) {
                if key.value.is_none() {
                    add_secret(&mut failures.missing_secrets, &key.secret_name);
                }
            }
        }
        Planner {
            config,
            settings: config.failover,
            steps,
            cursor: 0,
            pending: None,
            asking: None,
            tokens,
            prefix_hash,
            deadline_at_ms: now_ms.saturating_add(deadline_ms),
            subrequests: 0,
            last_timeout_ms: 0,
            attempt_timeout_ms: config.failover.attempt_timeout_ms,
            timeout_blames_provider: true,
            booked: Booked::None,
            tried: Vec::new(),
            refused_keys: Vec::new(),
            refused_on_model: Vec::new(),
            full: Vec::new(),
            dropped_models: Vec::new(),
            dropped_providers: Vec::new(),
            tier_full: None,
            attempts: Vec::new(),
            failures,
            hedging: false,
            hedge: None,
        }
    }

    /// The attempts made so far.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// How the last attempt was booked.
    pub fn booked(&self) -> Booked {
        self.booked
    }

    /// What is left of the request's deadline at `now_ms`.
    pub fn time_left(&self, now_ms: u64) -> u64 {
        self.deadline_at_ms.saturating_sub(now_ms)
    }

    /// How long a synchronous booking may take at `now_ms`: its own timeout, within the
    /// deadline.
    pub fn quota_timeout_ms(&self, now_ms: u64) -> u64 {
        self.settings.quota_timeout_ms.min(self.time_left(now_ms))
    }
}

/// The `x-router-failover` header: the attempts that failed before the answer, in order, as
/// `provider/model=outcome` (`provider/model:tier=outcome` on a named service tier), or `provider/model@key=outcome` `with_key_ids` (operators choose
/// key ids freely, and may put account names in them: clients see them only when the
/// configuration says so or the caller is an admin); `None` when the first attempt answered.
pub fn failover_header(attempts: &[Attempt], with_key_ids: bool) -> Option<String> {
    let failed: Vec<String> = attempts
        .iter()
        .filter(|a| a.outcome != "success" && a.outcome != CANCELLED)
        .map(|a| {
            let tier = a.tier.as_deref().map_or(String::new(), |t| format!(":{t}"));
            match with_key_ids {
                true => format!(
                    "{}/{}{tier}@{}={}",
                    a.provider, a.model, a.key_id, a.outcome
                ),
                false => format!("{}/{}{tier}={}", a.provider, a.model, a.outcome),
            }
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

/// The quota bank's shard and key card of a choice.
pub fn shard_of(choice: &Choice<'_>) -> (Shard, quota::KeyCard) {
    (
        Shard::new(&choice.provider.name, &choice.key.org),
        quota::KeyCard {
            id: choice.key.id.clone(),
            fingerprint: choice.key.fingerprint.clone(),
        },
    )
}

impl<'c> Planner<'c> {
    /// The next thing to do at `now_ms`.
    pub fn next(
        &mut self,
        now_ms: u64,
        breakers: &mut Breakers,
        holdings: &mut Holdings,
    ) -> Next<'c> {
        let out_of_time = self.time_left(now_ms) < MIN_ATTEMPT_MS;
        if let Some((choice, ticket)) = self.pending.take() {
            if !out_of_time {
                return self.send(choice, Some(ticket), now_ms, breakers);
            }
            // Booked, but no time left to send it: given back.
            let (shard, key) = shard_of(&choice);
            holdings.settle(&shard, &key, ticket, Effect::NotSpent, None, None, now_ms);
        }
        if out_of_time {
            self.failures.timeout = true;
            return Next::GiveUp(self.give_up(now_ms));
        }
        loop {
            // An attempt may need a booking and itself.
            if self.attempts.len() >= self.settings.max_attempts as usize
                || self.subrequests + 2 > SUBREQUEST_LIMIT
            {
                return Next::GiveUp(self.give_up(now_ms));
            }
            if self.cursor >= self.steps.len() {
                return Next::GiveUp(self.give_up(now_ms));
            }
            if let Some(next) = self.try_step(now_ms, breakers, holdings) {
                return next;
            }
            self.cursor += 1;
        }
    }

    /// Books the request on the current step's provider: from a lease, or by asking one
    /// organization's bank; `None` when no model of the step can take it.
    fn book(
        &mut self,
        provider: &'c Provider,
        now_ms: u64,
        breakers: &mut Breakers,
        holdings: &mut Holdings,
    ) -> Option<Next<'c>> {
        let Some(Step::Book {
            targets,
            options,
            offers,
            caching,
            ..
        }) = self.steps.get(self.cursor)
        else {
            return None;
        };
        // Owned here so that the planner's books may change while the step is read.
        let (targets, options, offers, caching) = (
            targets.clone(),
            options.clone(),
            offers.clone(),
            caching.clone(),
        );
        let name: &'c str = &provider.name;
        for (i, option) in options.iter().enumerate() {
            let target: &'c Target = targets.get(i)?;
            let model: &'c str = &target.name;
            if !self.model_open(name, model) {
                continue;
            }
            let offers = self.offers_left(name, model, &offers);
            if offers.is_empty() {
                continue;
            }
            let prefix = caching
                .get(i)
                .copied()
                .unwrap_or(false)
                .then_some(self.prefix_hash);
            let mut admit = |offers: &[Offer]| {
                holdings.admit(
                    name,
                    offers,
                    model,
                    &option.limits,
                    self.tokens,
                    prefix,
                    now_ms,
                )
            };
            // After a tier's 498, the same organization on this model's other tier first.
            let same_org: Vec<Offer> = match self.tier_full {
                Some(full) if full.provider == name && full.model == target.model.as_str() => {
                    offers
                        .iter()
                        .filter(|o| o.org == full.org)
                        .cloned()
                        .collect()
                }
                _ => Vec::new(),
            };
            let (admission, offers) = match same_org.is_empty() {
                false => match admit(&same_org) {
                    Admission::Full { .. } | Admission::NoKey => (admit(&offers), offers),
                    admitted => (admitted, same_org),
                },
                true => (admit(&offers), offers),
            };
            match admission {
                Admission::Admitted {
                    org,
                    key_id,
                    ticket,
                } => {
                    let org = &offers.get(org)?.org;
                    let key = provider
                        .keys
                        .iter()
                        .find(|k| k.id == key_id && &k.org == org)?;
                    let secret = key.value.as_ref()?;
                    let choice = Choice {
                        target,
                        provider,
                        key,
                        secret,
                    };
                    return Some(self.send(choice, Some(ticket), now_ms, breakers));
                }
                // A hedge does not wait for a bank.
                Admission::Ask { .. } if self.hedging => continue,
                Admission::Ask { org, keys } => {
                    let shard = Shard::new(name, &offers.get(org)?.org);
                    let call =
                        holdings.reserve(&shard, vec![option.clone()], keys, self.tokens, now_ms);
                    self.subrequests += 1;
                    self.asking = Some(Asking {
                        shard,
                        call: call.id,
                        option: i,
                    });
                    return Some(Next::Reserve(Box::new(call)));
                }
                Admission::Full { until_ms } => earliest(&mut self.failures.room_at_ms, until_ms),
                Admission::NoKey => {
                    for key in provider.keys.iter().filter(|k| k.value.is_some()) {
                        add_secret(&mut self.failures.auth_secrets, &key.secret_name);
                    }
                }
            }
        }
        None
    }

    /// The organizations of a step this request may still book on `model`, each with the keys
    /// it may still use there.
    fn offers_left(&self, provider: &'c str, model: &'c str, offers: &[Offer]) -> Vec<Offer> {
        offers
            .iter()
            .filter(|o| {
                !self
                    .full
                    .iter()
                    .any(|f| f.provider == provider && f.model == model && f.org == o.org.as_str())
            })
            .filter_map(|o| {
                let keys: Vec<quota::KeyCard> = o
                    .keys
                    .iter()
                    .filter(|k| self.key_usable(provider, &k.id, model))
                    .cloned()
                    .collect();
                (!keys.is_empty()).then(|| Offer {
                    org: o.org.clone(),
                    keys,
                })
            })
            .collect()
    }

    fn key_usable(&self, provider: &str, key: &str, model: &str) -> bool {
        let at = |k: &KeyAt<'_>| k.provider == provider && k.key == key;
        !self.refused_keys.iter().any(at)
            && !self
                .refused_on_model
                .iter()
                .chain(&self.tried)
                .any(|t| at(&t.key) && t.model == model)
    }

    /// The bank's answer to the last [`Next::Reserve`].
    pub fn on_reply(&mut self, reply: Reply, holdings: &mut Holdings, now_ms: u64) {
        let Some(asking) = self.asking.take() else {
            return;
        };
        holdings.answered(&asking.shard, asking.call, &reply, now_ms);
        let Some(Step::Book {
            provider, targets, ..
        }) = self.steps.get(self.cursor)
        else {
            return;
        };
        let provider: &'c Provider = provider;
        let Some(target) = targets.get(asking.option).copied() else {
            return;
        };
        let model: &'c str = &target.name;
        let Some(org) = provider
            .keys
            .iter()
            .find(|k| k.org == asking.shard.org)
            .map(|k| k.org.as_str())
        else {
            return;
        };
        let full = OrgOnModel {
            provider: &provider.name,
            org,
            model,
        };
        match reply {
            Reply::Reserved { key_id, ticket, .. } => {
                let key = provider
                    .keys
                    .iter()
                    .find(|k| k.id == key_id && k.org == org);
                match key.and_then(|k| k.value.as_ref().map(|s| (k, s))) {
                    Some((key, secret)) if ticket.model == target.name => {
                        self.pending = Some((
                            Choice {
                                target,
                                provider,
                                key,
                                secret,
                            },
                            ticket,
                        ));
                    }
                    // Booked for a key or model this configuration does not know (the
                    // configuration changed under the bank): given back.
                    _ => {
                        let card = quota::KeyCard {
                            id: key_id,
                            fingerprint: String::new(),
                        };
                        holdings.settle(
                            &asking.shard,
                            &card,
                            ticket,
                            Effect::NotSpent,
                            None,
                            None,
                            now_ms,
                        );
                        self.full.push(full);
                    }
                }
            }
            Reply::NoRoom { until_ms, .. } => {
                earliest(&mut self.failures.room_at_ms, until_ms);
                self.full.push(full);
            }
            Reply::NoKey { .. } => {
                for key in provider
                    .keys
                    .iter()
                    .filter(|k| k.org == org && k.value.is_some())
                {
                    add_secret(&mut self.failures.auth_secrets, &key.secret_name);
                }
                self.full.push(full);
            }
            Reply::Exchanged { .. } | Reply::Status { .. } => self.full.push(full),
        }
    }

    /// The bank for the last [`Next::Reserve`] did not answer in time (or failed: the edge
    /// tells the holdings which). The books are advisory: the request goes on, booked on the
    /// isolate's own snapshot.
    pub fn on_unreachable(&mut self, holdings: &mut Holdings, now_ms: u64) {
        if self.asking.take().is_some() {
            holdings.slow(now_ms);
        }
    }

    /// Each attempt waits at most `timeout_ms` for the upstream's headers and first chunk (the
    /// job's: shorter on the fast path); `timeout_blames_provider` says whether one that runs
    /// out counts towards the provider's circuit breaker. A non-streamed request on the slow
    /// path waits for its whole answer before the first byte, so its timeout may only mean the
    /// answer is long, and a few clients asking for long answers must not open the circuit for
    /// everyone.
    pub fn with_attempts(mut self, timeout_ms: u64, timeout_blames_provider: bool) -> Self {
        self.attempt_timeout_ms = timeout_ms;
        self.timeout_blames_provider = timeout_blames_provider;
        self
    }

    /// Records an attempt's outcome (after `ms`) and says what to do with it.
    pub fn record(
        &mut self,
        choice: &Choice<'c>,
        outcome: &Outcome,
        ms: u64,
        now_ms: u64,
        breakers: &mut Breakers,
    ) -> Verdict {
        let provider: &'c str = &choice.provider.name;
        let model: &'c str = &choice.target.name;
        let key = KeyAt {
            provider,
            key: &choice.key.id,
        };
        self.attempts.push(Attempt {
            provider: provider.to_owned(),
            model: choice.target.model.clone(),
            tier: choice.target.tier.clone(),
            key_id: choice.key.id.clone(),
            outcome: outcome.name(),
            ms,
        });
        // A timeout counts against the provider only when it had the whole attempt timeout: one
        // cut short by the deadline (or a client's latency budget) says nothing of it.
        // Nor does one of a request whose answer may simply be long (see `with_attempts`).
        let timeout = *outcome == Outcome::Timeout;
        let cut_short = timeout && self.last_timeout_ms < self.attempt_timeout_ms;
        // A 498 on a tier with books of its own (flex) is that tier's capacity running out, as
        // it is documented to, not the provider failing.
        let own_tier = choice.target.name != choice.target.model;
        let tier_capacity = *outcome == Outcome::Capacity && own_tier;
        let blamed = (!timeout || (self.timeout_blames_provider && !cut_short)) && !tier_capacity;
        breakers.record(
            provider,
            outcome.is_provider_failure() && blamed,
            now_ms,
            &self.settings,
        );
        let f = &mut self.failures;
        match outcome {
            Outcome::Success => {
                if let Some((hedge, booked)) = self.hedge {
                    if hedge.key == key && hedge.model == model {
                        self.booked = booked;
                    }
                }
                return Verdict::Serve;
            }
            Outcome::Rejected(err) => return Verdict::Return(err.clone()),
            Outcome::RateLimited(refusal) | Outcome::Billing(refusal) => {
                self.full.push(OrgOnModel {
                    provider,
                    org: &choice.key.org,
                    model,
                });
                earliest(&mut f.room_at_ms, quota::cooldown_until(refusal, now_ms));
            }
            Outcome::Auth { status } => {
                if *status == 401 {
                    self.refused_keys.push(key);
                } else {
                    self.refused_on_model.push(KeyOnModel { key, model });
                }
                f.auth_status = Some(*status);
                add_secret(&mut f.auth_secrets, &choice.key.secret_name);
            }
            Outcome::TooLarge(err) => {
                self.dropped_models.push(ModelAt { provider, model });
                f.too_large = Some(err.clone());
            }
            Outcome::NotServed(err) => {
                self.dropped_models.push(ModelAt { provider, model });
                f.not_served = Some(err.clone());
            }
            Outcome::Capacity => {
                self.dropped_models.push(ModelAt { provider, model });
                f.provider = Some(ProviderFailure::Capacity);
                if own_tier {
                    self.tier_full = Some(OrgOnModel {
                        provider,
                        org: &choice.key.org,
                        model: &choice.target.model,
                    });
                }
            }
            Outcome::ServerError { status } => {
                self.dropped_providers.push(provider);
                f.provider = Some(ProviderFailure::Status(*status));
            }
            Outcome::BadAnswer => {
                self.dropped_providers.push(provider);
                f.provider.get_or_insert(ProviderFailure::BadAnswer);
            }
            Outcome::Timeout => {
                self.dropped_providers.push(provider);
                f.timeout = true;
            }
            Outcome::Transport => {
                self.dropped_providers.push(provider);
                f.transport = true;
            }
        }
        Verdict::Retry
    }

    /// A hedge for `first`, an attempt still under way with no first byte: the next candidate
    /// this request may send at once, booked from what the isolate holds (a lease, or a
    /// provider without limits), never asking a bank. It is another organization of `first`'s
    /// provider, or with `across` any other candidate. `None` when there is none, or no attempt
    /// or subrequest is left for it; the plan goes on from where it was either way (the hedge
    /// counts as tried).
    pub fn next_hedge(
        &mut self,
        first: &Choice<'c>,
        across: bool,
        now_ms: u64,
        breakers: &mut Breakers,
        holdings: &mut Holdings,
    ) -> Option<Next<'c>> {
        // The attempt under way is not recorded yet: it counts here.
        if self.pending.is_some()
            || self.time_left(now_ms) < MIN_ATTEMPT_MS
            || self.attempts.len() + 2 > self.settings.max_attempts as usize
            || self.subrequests + 2 > SUBREQUEST_LIMIT
        {
            return None;
        }
        let (cursor, booked, last_timeout_ms) = (self.cursor, self.booked, self.last_timeout_ms);
        let same_org = OrgOnModel {
            provider: &first.provider.name,
            org: &first.key.org,
            model: &first.target.name,
        };
        self.full.push(same_org);
        self.hedging = true;
        let mut found = None;
        while let Some(provider) = self.step_provider() {
            if across || provider == first.provider.name {
                found = self.try_step(now_ms, breakers, holdings);
                if found.is_some() {
                    break;
                }
            }
            self.cursor += 1;
        }
        self.hedging = false;
        if let Some(at) = self.full.iter().rposition(|f| *f == same_org) {
            self.full.remove(at);
        }
        if let Some(Next::Send { choice, .. }) = &found {
            let hedge = KeyOnModel {
                key: KeyAt {
                    provider: &choice.provider.name,
                    key: &choice.key.id,
                },
                model: &choice.target.name,
            };
            self.hedge = Some((hedge, self.booked));
        }
        (self.cursor, self.booked, self.last_timeout_ms) = (cursor, booked, last_timeout_ms);
        found
    }

    /// What the current step offers now: a send, or (for a provider that books) a bank call;
    /// `None` when it has nothing left for this request.
    fn try_step(
        &mut self,
        now_ms: u64,
        breakers: &mut Breakers,
        holdings: &mut Holdings,
    ) -> Option<Next<'c>> {
        match self.steps.get(self.cursor)? {
            Step::Direct(target) => {
                let target: &'c Target = target;
                let choice = self.first_key(&[target], now_ms, breakers)?;
                Some(self.send(choice, None, now_ms, breakers))
            }
            Step::Book { provider, .. } => {
                let provider: &'c Provider = provider;
                if !self.provider_open(&provider.name, now_ms, breakers) {
                    return None;
                }
                self.book(provider, now_ms, breakers, holdings)
            }
        }
    }

    /// The provider of the current step; `None` past the last step.
    fn step_provider(&self) -> Option<&'c str> {
        match self.steps.get(self.cursor)? {
            Step::Direct(target) => {
                let target: &'c Target = target;
                self.config
                    .providers
                    .get(target.provider)
                    .map(|p| p.name.as_str())
            }
            Step::Book { provider, .. } => {
                let provider: &'c Provider = provider;
                Some(provider.name.as_str())
            }
        }
    }

    /// An attempt given up because another answered first (a hedge, or the attempt it
    /// hedged): listed, but no failure of its provider.
    pub fn record_cancelled(&mut self, choice: &Choice<'c>, ms: u64) {
        self.attempts.push(Attempt {
            provider: choice.provider.name.clone(),
            model: choice.target.model.clone(),
            tier: choice.target.tier.clone(),
            key_id: choice.key.id.clone(),
            outcome: CANCELLED,
            ms,
        });
    }

    fn send(
        &mut self,
        choice: Choice<'c>,
        ticket: Option<Ticket>,
        now_ms: u64,
        breakers: &mut Breakers,
    ) -> Next<'c> {
        self.subrequests += 1;
        breakers.sent(&choice.provider.name, now_ms);
        self.tried.push(KeyOnModel {
            key: KeyAt {
                provider: &choice.provider.name,
                key: &choice.key.id,
            },
            model: &choice.target.name,
        });
        self.booked = match ticket.as_ref().map(|t| t.source) {
            None => Booked::None,
            Some(Source::Lease { .. }) => Booked::Lease,
            Some(Source::Bank) => Booked::Bank,
            Some(Source::Advisory) => Booked::Advisory,
        };
        self.last_timeout_ms = self.attempt_timeout_ms.min(self.time_left(now_ms));
        Next::Send {
            choice,
            ticket,
            timeout_ms: self.last_timeout_ms,
        }
    }

    /// Whether `provider` may be called now: not dropped by this request, and its circuit not
    /// open.
    fn provider_open(&mut self, provider: &str, now_ms: u64, breakers: &Breakers) -> bool {
        if self.dropped_providers.contains(&provider) {
            return false;
        }
        match breakers.allows(provider, now_ms, &self.settings) {
            Ok(()) => true,
            Err(until) => {
                earliest(&mut self.failures.breaker_until_ms, until);
                false
            }
        }
    }

    fn model_open(&self, provider: &str, model: &str) -> bool {
        !self
            .dropped_models
            .iter()
            .any(|m| m.provider == provider && m.model == model)
    }

    /// The first usable key, without booking, of the first of `targets` that has one this
    /// request has not used up.
    fn first_key(
        &mut self,
        targets: &[&'c Target],
        now_ms: u64,
        breakers: &Breakers,
    ) -> Option<Choice<'c>> {
        route::usable_keys(self.config, targets).find(|c| {
            let (p, k, m) = (
                c.provider.name.as_str(),
                c.key.id.as_str(),
                c.target.name.as_str(),
            );
            self.model_open(p, m)
                && self.provider_open(p, now_ms, breakers)
                && !self
                    .full
                    .iter()
                    .any(|f| f.provider == p && f.org == c.key.org && f.model == m)
                && self.key_usable(p, k, m)
        })
    }

    /// The error when nothing is left: quota first (it says when to come back), then what the
    /// providers said of the request, then their failures, then the operator's problems.
    fn give_up(&self, now_ms: u64) -> RouterError {
        let f = &self.failures;
        if let Some(at) = f.room_at_ms {
            return RouterError::QuotaExhausted {
                retry_after_s: Some(outcome::retry_after_s(at, now_ms)),
            };
        }
        if let Some(err) = f.too_large.as_ref().or(f.not_served.as_ref()) {
            return err.clone();
        }
        if let Some(failure) = f.provider {
            let status = match failure {
                ProviderFailure::Status(status) => status,
                ProviderFailure::Capacity => 498,
                // The provider answered 2xx, with no answer in it.
                ProviderFailure::BadAnswer => 200,
            };
            return RouterError::UpstreamFailed { status };
        }
        if f.transport {
            return RouterError::UpstreamUnreachable;
        }
        if f.timeout {
            return RouterError::UpstreamTimeout;
        }
        if let Some(until) = f.breaker_until_ms {
            return RouterError::ProvidersUnavailable {
                retry_after_s: outcome::retry_after_s(until, now_ms),
            };
        }
        if !f.auth_secrets.is_empty() {
            return RouterError::UpstreamAuth {
                status: f.auth_status.unwrap_or(401),
                secret: f.auth_secrets.join(", "),
            };
        }
        RouterError::MissingSecret {
            names: f.missing_secrets.clone(),
        }
    }
}

/// One provider's circuit: closed, open until a time, or half open with one probe out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Breaker {
    failures: u32,
    /// 0 while closed.
    open_until_ms: u64,
    /// When the probe of a half-open circuit was sent.
    probe_since_ms: Option<u64>,
}

/// A circuit that is not closed, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Circuit {
    pub provider: String,
    pub state: CircuitState,
    /// Provider failures in a row, the ones that opened the circuit included.
    pub failures: u32,
    /// Until when the provider is skipped without a call; then one request probes it.
    pub open_until_ms: u64,
    /// When the probe of a half-open circuit went out, while the others wait for it.
    pub probe_sent_at_ms: Option<u64>,
}

/// Where a circuit that is not closed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Skipped without a call until `open_until_ms`.
    Open,
    /// Past its cooldown: the next request is its probe (or the probe is out).
    HalfOpen,
}

/// The circuit breakers of every provider, kept by the caller across requests (per isolate at
/// the edge) and passed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breakers {
    by_provider: Vec<(String, Breaker)>,
}

impl Breakers {
    fn get(&self, provider: &str) -> Breaker {
        self.by_provider
            .iter()
            .find(|(p, _)| p == provider)
            .map(|(_, b)| *b)
            .unwrap_or_default()
    }

    fn get_mut(&mut self, provider: &str) -> &mut Breaker {
        let i = match self.by_provider.iter().position(|(p, _)| p == provider) {
            Some(i) => i,
            None => {
                self.by_provider
                    .push((provider.to_owned(), Breaker::default()));
                self.by_provider.len() - 1
            }
        };
        &mut self.by_provider[i].1
    }

    /// Whether `provider` may be called at `now_ms`; otherwise when it may be again. A half-open
    /// circuit lets one probe through; a probe that never reports back frees the slot after a
    /// cooldown.
    pub fn allows(&self, provider: &str, now_ms: u64, settings: &Failover) -> Result<(), u64> {
        let b = self.get(provider);
        if b.open_until_ms == 0 {
            return Ok(());
        }
        if now_ms < b.open_until_ms {
            return Err(b.open_until_ms);
        }
        match b.probe_since_ms {
            Some(since) if now_ms < since.saturating_add(settings.breaker_cooldown_ms) => {
                Err(since.saturating_add(settings.breaker_cooldown_ms))
            }
            _ => Ok(()),
        }
    }

    /// A request goes out to `provider`: if its circuit is half open, this is the probe.
    pub fn sent(&mut self, provider: &str, now_ms: u64) {
        let b = self.get_mut(provider);
        if b.open_until_ms != 0 && now_ms >= b.open_until_ms {
            b.probe_since_ms = Some(now_ms);
        }
    }

    /// An attempt's result: a provider failure counts towards opening the circuit (a failed
    /// probe opens it again at once); any other answer closes it.
    pub fn record(&mut self, provider: &str, failure: bool, now_ms: u64, settings: &Failover) {
        let b = self.get_mut(provider);
        if !failure {
            *b = Breaker::default();
            return;
        }
        b.failures = b.failures.saturating_add(1);
        if b.open_until_ms != 0 || b.failures >= settings.breaker_failures {
            b.open_until_ms = now_ms.saturating_add(settings.breaker_cooldown_ms);
            b.probe_since_ms = None;
        }
    }

    /// The circuits that are not closed at `now_ms`, by provider name: what the status page
    /// shows of this isolate's breakers.
    pub fn not_closed(&self, now_ms: u64, settings: &Failover) -> Vec<Circuit> {
        let mut circuits: Vec<Circuit> = self
            .by_provider
            .iter()
            .filter(|(_, b)| b.open_until_ms != 0)
            .map(|(provider, b)| {
                let half_open = now_ms >= b.open_until_ms;
                let probe_out = b
                    .probe_since_ms
                    .filter(|&since| since.saturating_add(settings.breaker_cooldown_ms) > now_ms);
                Circuit {
                    provider: provider.clone(),
                    state: if half_open {
                        CircuitState::HalfOpen
                    } else {
                        CircuitState::Open
                    },
                    failures: b.failures,
                    open_until_ms: b.open_until_ms,
                    probe_sent_at_ms: probe_out.filter(|_| half_open),
                }
            })
            .collect();
        circuits.sort_by(|a, b| a.provider.cmp(&b.provider));
        circuits
    }

    /// Whether `provider`'s circuit is open (skipped) at `now_ms`, as the tests read it.
    #[cfg(test)]
    pub fn is_open(&self, provider: &str, now_ms: u64) -> bool {
        let b = self.get(provider);
        b.open_until_ms != 0 && now_ms < b.open_until_ms
    }
}

#[cfg(test)]
mod tests;
