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
use super::quota::{self, Command, ModelOption, Reply, Step, Ticket};
use super::route::{self, Choice};

/// Subrequests one request may make on the Workers free plan. An attempt costs one, its quota
/// reservation one, and the reservation's settlement (after the response) one more.
pub const SUBREQUEST_LIMIT: u32 = 50;

/// The least time worth giving an attempt: with less left of the deadline, the request gives up
/// rather than start a call it would abort at once.
pub const MIN_ATTEMPT_MS: u64 = 20;

/// One attempt, as the log line and the `x-router-failover` header report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// The key's id from the configuration, never the key.
    pub key_id: String,
    pub outcome: &'static str,
    /// Time to the outcome (response headers, or a stream's first event).
    pub ms: u64,
}

/// What the edge should do next.
#[derive(Debug)]
pub enum Next<'c> {
    /// Ask `provider`'s quota object to book the request (then [`Planner::on_reply`]).
    Reserve {
        provider: &'c Provider,
        command: Box<Command>,
    },
    /// Send the request with this key, aborting it after `timeout_ms` without an answer (then
    /// [`Planner::record`]).
    Send {
        choice: Choice<'c>,
        ticket: Option<Ticket>,
        timeout_ms: u64,
    },
    /// Nothing is left to try: answer with this error, and release the reservation (with its
    /// provider's name) made for an attempt that no longer fits the deadline, if any.
    GiveUp(RouterError, Option<(&'c str, Ticket)>),
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

/// The failures seen so far, for the error when nothing is left.
#[derive(Debug, Default)]
struct Failures {
    /// The earliest time some refused or full candidate has room again.
    room_at_ms: Option<u64>,
    too_large: Option<RouterError>,
    not_served: Option<RouterError>,
    server_status: Option<u16>,
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

/// The attempt plan of one request.
#[derive(Debug)]
pub struct Planner<'c> {
    config: &'c Config,
    settings: Failover,
    steps: Vec<Step<'c>>,
    cursor: usize,
    /// Steps whose quota object could not be reached: served without booking.
    unbooked: Vec<bool>,
    /// A reservation just made, to be sent next.
    pending: Option<(Choice<'c>, Ticket)>,
    tokens: u64,
    deadline_at_ms: u64,
    subrequests: u32,
    /// The timeout the last attempt was given.
    last_timeout_ms: u64,
    /// (provider, key id, model) already tried: key ids are unique within a provider only.
    tried: Vec<(&'c str, &'c str, &'c str)>,
    /// (provider, key id) refused with 401/403.
    disabled_keys: Vec<(&'c str, &'c str)>,
    /// (provider, organization, model) refused with 429 or billing.
    refused: Vec<(&'c str, &'c str, &'c str)>,
    /// (provider, model) that will not serve this request.
    dropped_models: Vec<(&'c str, &'c str)>,
    dropped_providers: Vec<&'c str>,
    attempts: Vec<Attempt>,
    failures: Failures,
}

impl<'c> Planner<'c> {
    /// Plans a request of `tokens` (estimated) over `targets`, the classifier's candidates in
    /// order, starting at `now_ms` with `deadline_ms` to find an answer.
    pub fn new(
        config: &'c Config,
        targets: &[&'c Target],
        prefix_hash: u64,
        tokens: u64,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Self {
        let steps = quota::plan(config, targets, prefix_hash);
        let mut failures = Failures::default();
        for step in &steps {
            let missing: Vec<String> = match step {
                Step::Direct(target) => config
                    .providers
                    .get(target.provider)
                    .map(|p| {
                        p.keys
                            .iter()
                            .filter(|k| k.value.is_none())
                            .map(|k| k.secret_name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                Step::Reserve {
                    missing_secrets, ..
                } => missing_secrets.clone(),
            };
            for name in missing {
                if !failures.missing_secrets.contains(&name) {
                    failures.missing_secrets.push(name);
                }
            }
        }
        Planner {
            config,
            settings: config.failover,
            unbooked: vec![false; steps.len()],
            steps,
            cursor: 0,
            pending: None,
            tokens,
            deadline_at_ms: now_ms.saturating_add(deadline_ms),
            subrequests: 0,
            last_timeout_ms: 0,
            tried: Vec::new(),
            disabled_keys: Vec::new(),
            refused: Vec::new(),
            dropped_models: Vec::new(),
            dropped_providers: Vec::new(),
            attempts: Vec::new(),
            failures,
        }
    }

    /// The attempts made so far.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// What is left of the request's deadline at `now_ms`: a quota call must fit in it too.
    pub fn time_left(&self, now_ms: u64) -> u64 {
        self.deadline_at_ms.saturating_sub(now_ms)
    }
}

/// The `x-router-failover` header: the attempts that failed before the answer, in order, as
/// `provider/model@key=outcome`; `None` when the first attempt answered.
pub fn failover_header(attempts: &[Attempt]) -> Option<String> {
    let failed: Vec<String> = attempts
        .iter()
        .filter(|a| a.outcome != "success")
        .map(|a| format!("{}/{}@{}={}", a.provider, a.model, a.key_id, a.outcome))
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

impl<'c> Planner<'c> {
    /// The next thing to do at `now_ms`.
    pub fn next(&mut self, now_ms: u64, breakers: &mut Breakers) -> Next<'c> {
        let out_of_time = self.time_left(now_ms) < MIN_ATTEMPT_MS;
        if let Some((choice, ticket)) = self.pending.take() {
            if out_of_time {
                self.failures.timeout = true;
                let provider: &'c str = &choice.provider.name;
                return Next::GiveUp(self.give_up(now_ms), Some((provider, ticket)));
            }
            return self.send(choice, Some(ticket), now_ms, breakers);
        }
        if out_of_time {
            self.failures.timeout = true;
            return Next::GiveUp(self.give_up(now_ms), None);
        }
        loop {
            // An attempt may need a reservation, itself and a settlement.
            if self.attempts.len() >= self.settings.max_attempts as usize
                || self.subrequests + 3 > SUBREQUEST_LIMIT
            {
                return Next::GiveUp(self.give_up(now_ms), None);
            }
            let Some(step) = self.steps.get(self.cursor) else {
                return Next::GiveUp(self.give_up(now_ms), None);
            };
            let unbooked = self.unbooked.get(self.cursor).copied().unwrap_or(false);
            match step {
                Step::Direct(target) => {
                    let target: &'c Target = target;
                    if let Some(choice) = self.first_key(&[target], now_ms, breakers) {
                        return self.send(choice, None, now_ms, breakers);
                    }
                }
                Step::Reserve { targets, .. } if unbooked => {
                    let targets = targets.clone();
                    if let Some(choice) = self.first_key(&targets, now_ms, breakers) {
                        return self.send(choice, None, now_ms, breakers);
                    }
                }
                Step::Reserve { provider, .. } => {
                    let provider: &'c Provider = provider;
                    let command = if self.provider_open(&provider.name, now_ms, breakers) {
                        self.reservation(provider)
                    } else {
                        None
                    };
                    if let Some(command) = command {
                        self.subrequests += 1;
                        return Next::Reserve {
                            provider,
                            command: Box::new(command),
                        };
                    }
                }
            }
            self.cursor += 1;
        }
    }

    /// The quota object's answer to the last [`Next::Reserve`]. Returns a ticket the edge must
    /// release: one booked for a model or key this configuration does not know (which only a
    /// configuration changed under the object can cause).
    pub fn on_reply(&mut self, reply: Reply) -> Option<Ticket> {
        let Some(Step::Reserve {
            provider, targets, ..
        }) = self.steps.get(self.cursor)
        else {
            return None;
        };
        let provider: &'c Provider = provider;
        match reply {
            Reply::Reserved {
                model,
                key_id,
                ticket,
                ..
            } => {
                let target = targets.iter().find(|t| t.model == model);
                let key = provider.keys.iter().find(|k| k.id == key_id);
                if let (Some(target), Some(key)) = (target, key) {
                    if let Some(secret) = &key.value {
                        self.pending = Some((
                            Choice {
                                target,
                                provider,
                                key,
                                secret,
                            },
                            ticket,
                        ));
                        return None;
                    }
                }
                self.cursor += 1;
                Some(ticket)
            }
            // No time at all: every key the object was offered is disabled (401/403).
            Reply::NoRoom { until_ms: u64::MAX } => {
                for key in &provider.keys {
                    if !self.failures.auth_secrets.contains(&key.secret_name) {
                        self.failures.auth_secrets.push(key.secret_name.clone());
                    }
                }
                self.cursor += 1;
                None
            }
            Reply::NoRoom { until_ms } => {
                earliest(&mut self.failures.room_at_ms, until_ms);
                self.cursor += 1;
                None
            }
            Reply::Done | Reply::Status { .. } => {
                self.cursor += 1;
                None
            }
        }
    }

    /// The quota object for the last [`Next::Reserve`] could not be reached. The ledger is
    /// advisory: the step's candidates are tried without booking.
    pub fn on_unreachable(&mut self) {
        if let Some(flag) = self.unbooked.get_mut(self.cursor) {
            *flag = true;
        }
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
        let model: &'c str = &choice.target.model;
        self.attempts.push(Attempt {
            provider: provider.to_owned(),
            model: model.to_owned(),
            key_id: choice.key.id.clone(),
            outcome: outcome.name(),
            ms,
        });
        // A timeout counts against the provider only when it had the whole attempt timeout: one
        // cut short by the deadline (or a client's latency budget) says nothing of it.
        let cut_short =
            *outcome == Outcome::Timeout && self.last_timeout_ms < self.settings.attempt_timeout_ms;
        breakers.record(
            provider,
            outcome.is_provider_failure() && !cut_short,
            now_ms,
            &self.settings,
        );
        let f = &mut self.failures;
        match outcome {
            Outcome::Success => return Verdict::Serve,
            Outcome::Rejected(err) => return Verdict::Return(err.clone()),
            Outcome::RateLimited(refusal) | Outcome::Billing(refusal) => {
                self.refused.push((provider, &choice.key.org, model));
                earliest(&mut f.room_at_ms, quota::cooldown_until(refusal, now_ms));
            }
            Outcome::Auth { status } => {
                self.disabled_keys.push((provider, &choice.key.id));
                f.auth_status = Some(*status);
                if !f.auth_secrets.contains(&choice.key.secret_name) {
                    f.auth_secrets.push(choice.key.secret_name.clone());
                }
            }
            Outcome::TooLarge(err) => {
                self.dropped_models.push((provider, model));
                f.too_large = Some(err.clone());
            }
            Outcome::NotServed(err) => {
                self.dropped_models.push((provider, model));
                f.not_served = Some(err.clone());
            }
            Outcome::Capacity => {
                self.dropped_models.push((provider, model));
                f.server_status = Some(498);
            }
            Outcome::ServerError { status } => {
                self.dropped_providers.push(provider);
                f.server_status = Some(*status);
            }
            Outcome::BadAnswer => {
                self.dropped_providers.push(provider);
                f.server_status.get_or_insert(200);
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

    fn send(
        &mut self,
        choice: Choice<'c>,
        ticket: Option<Ticket>,
        now_ms: u64,
        breakers: &mut Breakers,
    ) -> Next<'c> {
        self.subrequests += if ticket.is_some() { 2 } else { 1 };
        breakers.sent(&choice.provider.name, now_ms);
        self.tried
            .push((&choice.provider.name, &choice.key.id, &choice.target.model));
        self.last_timeout_ms = self.settings.attempt_timeout_ms.min(self.time_left(now_ms));
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
        !self.dropped_models.contains(&(provider, model))
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
                c.target.model.as_str(),
            );
            self.model_open(p, m)
                && self.provider_open(p, now_ms, breakers)
                && !self.refused.contains(&(p, c.key.org.as_str(), m))
                && !self.disabled_keys.contains(&(p, k))
                && !self.tried.contains(&(p, k, m))
        })
    }

    /// The reservation command for the current step (a [`Step::Reserve`] of `provider`),
    /// without what this request already used; `None` when nothing is left to book there.
    fn reservation(&self, provider: &Provider) -> Option<Command> {
        let Some(Step::Reserve {
            options,
            candidates,
            ..
        }) = self.steps.get(self.cursor)
        else {
            return None;
        };
        let name = provider.name.as_str();
        let candidates: Vec<quota::OwnedCandidate> = candidates
            .iter()
            .filter(|c| !self.disabled_keys.contains(&(name, c.key_id.as_str())))
            .cloned()
            .collect();
        let options: Vec<ModelOption> = options
            .iter()
            .filter(|o| self.model_open(name, &o.model))
            .filter_map(|o| {
                let mut skip: Vec<String> = Vec::new();
                for (p, org, model) in &self.refused {
                    if *p == name && *model == o.model {
                        skip.push((*org).to_owned());
                    }
                }
                for (p, key, model) in &self.tried {
                    if *p == name && *model == o.model {
                        skip.push((*key).to_owned());
                    }
                }
                // A model on which every candidate is skipped is not worth a quota call.
                let left = candidates
                    .iter()
                    .any(|c| !skip.iter().any(|s| *s == c.org || *s == c.key_id));
                left.then(|| ModelOption { skip, ..o.clone() })
            })
            .collect();
        if options.is_empty() {
            return None;
        }
        Some(Command::Reserve {
            options,
            tokens: self.tokens,
            candidates,
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
        if let Some(status) = f.server_status {
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

    /// Whether `provider`'s circuit is open (skipped) at `now_ms`.
    pub fn is_open(&self, provider: &str, now_ms: u64) -> bool {
        let b = self.get(provider);
        b.open_until_ms != 0 && now_ms < b.open_until_ms
    }
}

#[cfg(test)]
mod tests;
