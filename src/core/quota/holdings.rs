//! What one isolate holds of the quota: its snapshot of each organization's books (the bank's
//! view at the last call), its leases, and what it has to tell the bank. The fast path admits
//! requests from here with no call at all; the edge asks [`Holdings::due`] what to send in the
//! background (refills, returns, batched reports) and hands the replies back.
//!
//! Time is an input; the holder id (random per isolate) is given at creation.

use std::collections::BTreeMap;

use super::bank::KeyBlock;
use super::choose::rendezvous;
use super::effect::Effect;
use super::lease::{Lease, Rate};
use super::ledger::{bookable_tokens, signed, Books, NoRoom};
use super::wire::{Batch, Command, Cooldown, KeyCard, RefusedKey, Reply, Source, Ticket, View};
use super::Usage;
use crate::core::config::Limits;
use crate::core::ratelimit::Report;

/// How long a snapshot's "full" is believed without asking the bank: other isolates may have
/// given capacity back since. Cooldowns are believed until they end.
pub const VIEW_TRUST_MS: u64 = 1_000;
/// Reports wait at most this long to be sent together.
pub const FLUSH_MS: u64 = 1_000;
/// After the bank failed to answer in time, requests without a lease book on the isolate's
/// own snapshot for this long instead of waiting on it again.
pub const BANK_TROUBLE_MS: u64 = 5_000;
/// A call that has not come back after this long is given up: its batch is sent again (the
/// bank applies a batch once, by its sequence number, so a copy that landed is skipped).
const IN_FLIGHT_MS: u64 = 30_000;
/// After the bank granted no lease that was asked for, none is asked for again this long.
pub const WANT_BACKOFF_MS: u64 = 1_000;

/// One organization of one provider: one bank.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard {
    pub provider: String,
    pub org: String,
}

impl Shard {
    pub fn new(provider: &str, org: &str) -> Self {
        Shard {
            provider: provider.to_owned(),
            org: org.to_owned(),
        }
    }

    /// The bank's name (its Durable Object's).
    pub fn name(&self) -> String {
        format!("{}/{}", self.provider, self.org)
    }
}

/// An organization a request may book on, with the keys of it the request may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub org: String,
    pub keys: Vec<KeyCard>,
}

/// One call to a bank, as [`Holdings::due`] and [`Holdings::reserve`] make it: the edge sends
/// `command` and hands the reply (or the failure) back with `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub shard: Shard,
    pub command: Command,
    /// Which call this is, for [`Holdings::answered`], [`Holdings::failed`] and
    /// [`Holdings::late`]; 0 for a call that carries no batch of its own.
    pub id: u64,
}

/// How a request is admitted on one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// From the isolate's lease (or its own snapshot while the bank is unreachable): no call.
    Admitted {
        org: usize,
        key_id: String,
        ticket: Ticket,
    },
    /// No lease: book synchronously with this organization's bank, offering these keys.
    Ask { org: usize, keys: Vec<KeyCard> },
    /// No organization can take it now; the earliest time one may.
    Full { until_ms: u64 },
    /// Every key of every organization is refused (401/403).
    NoKey,
}

#[derive(Debug, Clone, Default)]
struct ModelState {
    limits: Limits,
    leases: Vec<Lease>,
    rate: Rate,
    /// What was admitted without the bank (it could not be reached), on top of the view, until
    /// the bank has acknowledged the batch of this sequence number, which reports it.
    advisory: Books,
    advisory_seq: u64,
    /// No lease is asked for before then (the bank granted none lately).
    want_backoff_until_ms: u64,
    /// This isolate's own 429s: it stops at once, before the bank hears of them.
    cooldown_until_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct ShardState {
    view: View,
    /// When the view arrived (this isolate's clock); 0: never.
    view_at_ms: u64,
    models: BTreeMap<String, ModelState>,
    /// Keys this isolate saw refused.
    blocks: Vec<KeyBlock>,
    /// The organization's keys, for lease grants.
    keys: Vec<KeyCard>,
    /// What the isolate has to tell the bank, gathered since the last call took a batch.
    batch: Batch,
    batch_since_ms: Option<u64>,
    urgent: bool,
    /// The sequence number the next batch taken gets (from 1); the bank applies each batch of
    /// a holder once.
    next_seq: u64,
    /// A batch whose call failed or was given up, sent again as it was (same sequence number)
    /// before anything newer.
    retry: Option<Batch>,
    /// Not before then: a failed call is not sent again at once.
    retry_at_ms: u64,
    /// The call under way, with the batch it carries, since then.
    in_flight: Option<InFlight>,
}

#[derive(Debug, Clone)]
struct InFlight {
    call: u64,
    batch: Batch,
    since_ms: u64,
}

impl ShardState {
    fn model(&mut self, model: &str, limits: &Limits) -> &mut ModelState {
        let state = self.models.entry(model.to_owned()).or_default();
        state.limits = *limits;
        state
    }

    fn blocked(&self, key: &KeyCard, model: &str, now_ms: u64) -> bool {
        self.view
            .blocks
            .iter()
            .chain(&self.blocks)
            .any(|b| b.blocks(key, model, now_ms))
    }

    fn note(&mut self, now_ms: u64) {
        self.batch_since_ms.get_or_insert(now_ms);
    }

    /// Whether a call of this shard is under way; one given up on (after [`IN_FLIGHT_MS`]) has
    /// its batch put up to be sent again.
    fn busy(&mut self, now_ms: u64) -> bool {
        match &self.in_flight {
            Some(f) if now_ms < f.since_ms.saturating_add(IN_FLIGHT_MS) => true,
            Some(_) => {
                self.give_up_call(now_ms);
                false
            }
            None => false,
        }
    }

    /// The call under way will not be heard from: its batch is sent again.
    fn give_up_call(&mut self, now_ms: u64) {
        if let Some(f) = self.in_flight.take() {
            if !f.batch.is_empty() {
                self.retry = Some(f.batch);
                self.retry_at_ms = now_ms.saturating_add(FLUSH_MS);
            }
        }
    }

    /// Takes the batch for call `call`: one to send again first, else what was gathered (with
    /// the next sequence number); nothing while another call of this shard is under way.
    fn take_batch(&mut self, call: u64, now_ms: u64) -> (Batch, u64) {
        if self.busy(now_ms) {
            return (Batch::default(), 0);
        }
        let batch = match self.retry.take() {
            Some(batch) => batch,
            None => {
                let mut batch = std::mem::take(&mut self.batch);
                self.batch_since_ms = None;
                self.urgent = false;
                if !batch.is_empty() {
                    batch.seq = self.next_seq.max(1);
                    self.next_seq = batch.seq + 1;
                }
                batch
            }
        };
        self.in_flight = Some(InFlight {
            call,
            batch: batch.clone(),
            since_ms: now_ms,
        });
        (batch, call)
    }

    /// The sequence number the batch now gathering will be sent with.
    fn pending_seq(&self) -> u64 {
        self.next_seq.max(1)
    }
}

/// One isolate's quota state.
#[derive(Debug, Clone)]
pub struct Holdings {
    holder: String,
    shards: BTreeMap<Shard, ShardState>,
    trouble_until_ms: u64,
    /// The last call id given out.
    calls: u64,
}

impl Holdings {
    pub fn new(holder: impl Into<String>) -> Self {
        Holdings {
            holder: holder.into(),
            shards: BTreeMap::new(),
            trouble_until_ms: 0,
            calls: 0,
        }
    }

    fn next_call(&mut self) -> u64 {
        self.calls += 1;
        self.calls
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The books of `model` at `shard` as this isolate sees them: the bank's view at the last
    /// call, with what it admitted on its own since.
    pub fn books(&self, shard: &Shard, model: &str, now_ms: u64) -> Books {
        let Some(state) = self.shards.get(shard) else {
            return Books::default();
        };
        let view = state.view.models.get(model).copied().unwrap_or_default();
        match state.models.get(model) {
            Some(m) => view.plus(&m.advisory, now_ms),
            None => view,
        }
    }

    /// Whether the bank failed lately: requests without a lease then book on the snapshot.
    pub fn bank_in_trouble(&self, now_ms: u64) -> bool {
        now_ms < self.trouble_until_ms
    }

    /// Admits a request of `tokens` on `model` of `provider`, choosing among `offers` (the
    /// organizations and keys the request may still use, in configuration order) by the
    /// snapshot: with a `prefix_hash` (prompt caching), the organization rendezvous hashing
    /// picks among those with room; otherwise one whose lease can take it, then the most
    /// headroom.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        provider: &str,
        offers: &[Offer],
        model: &str,
        limits: &Limits,
        tokens: u64,
        prefix_hash: Option<u64>,
        now_ms: u64,
    ) -> Admission {
        let tokens = bookable_tokens(limits, tokens);
        let trouble = self.bank_in_trouble(now_ms);
        // (offer index, usable keys, can the lease take it, headroom)
        let mut best: Option<(usize, Vec<KeyCard>, bool, u64)> = None;
        let mut earliest: Option<u64> = None;
        for (i, offer) in offers.iter().enumerate() {
            let shard = self
                .shards
                .entry(Shard::new(provider, &offer.org))
                .or_default();
            shard.keys.clone_from(&offer.keys);
            let keys: Vec<KeyCard> = offer
                .keys
                .iter()
                .filter(|k| !shard.blocked(k, model, now_ms))
                .cloned()
                .collect();
            if keys.is_empty() {
                continue;
            }
            let trusted = trouble || now_ms < shard.view_at_ms.saturating_add(VIEW_TRUST_MS);
            let mut books = shard.view.models.get(model).copied().unwrap_or_default();
            let state = shard.model(model, limits);
            books.cool_down(state.cooldown_until_ms);
            // A cooldown holds whatever the isolate holds: no lease is spent through it.
            if books.cooldown_until_ms > now_ms {
                let until_ms = books.cooldown_until_ms;
                earliest = Some(earliest.map_or(until_ms, |e| e.min(until_ms)));
                continue;
            }
            let books = books.plus(&state.advisory, now_ms);
            let leased = state
                .leases
                .iter()
                .any(|l| l.live(now_ms) && l.requests_left >= 1 && l.tokens_left >= tokens);
            let headroom = match books.room(limits, 1, tokens, now_ms) {
                Ok(h) => h,
                // A full window is believed only while the view is fresh (or the bank cannot be
                // asked); a lease that can take the request is the isolate's own to spend.
                Err(NoRoom { until_ms }) if !leased && trusted => {
                    earliest = Some(earliest.map_or(until_ms, |e| e.min(until_ms)));
                    continue;
                }
                Err(_) => 0,
            };
            let score = match prefix_hash {
                Some(h) => (false, rendezvous(h, &offer.org)),
                None => (leased, headroom),
            };
            if best.as_ref().is_none_or(|(_, _, l, h)| score > (*l, *h)) {
                best = Some((i, keys, score.0, score.1));
            }
        }
        let Some((i, keys, _, _)) = best else {
            return match earliest {
                Some(until_ms) => Admission::Full { until_ms },
                None => Admission::NoKey,
            };
        };
        let shard = self
            .shards
            .entry(Shard::new(provider, &offers[i].org))
            .or_default();
        let state = shard.model(model, limits);
        state.rate.admitted(tokens, now_ms);
        let key_id = keys.first().map(|k| k.id.clone()).unwrap_or_default();
        state.leases.sort_by_key(|l| l.expires_at_ms);
        let spent = state
            .leases
            .iter_mut()
            .find_map(|l| l.spend(tokens, now_ms).then_some(l));
        if let Some(lease) = spent {
            let ticket = Ticket {
                model: model.to_owned(),
                tokens,
                windows: lease.windows,
                source: Source::Lease { id: lease.id },
            };
            return Admission::Admitted {
                org: i,
                key_id,
                ticket,
            };
        }
        if trouble {
            let seq = shard.pending_seq();
            let state = shard.model(model, limits);
            let windows = state.advisory.book(1, tokens, now_ms);
            state.advisory_seq = seq;
            shard.batch.shift(model, windows, 1, signed(tokens));
            shard.note(now_ms);
            let ticket = Ticket {
                model: model.to_owned(),
                tokens,
                windows,
                source: Source::Advisory,
            };
            return Admission::Admitted {
                org: i,
                key_id,
                ticket,
            };
        }
        Admission::Ask { org: i, keys }
    }

    /// The synchronous booking call for `shard`, carrying what the isolate has to report.
    pub fn reserve(
        &mut self,
        shard: &Shard,
        options: Vec<super::ModelOption>,
        keys: Vec<KeyCard>,
        tokens: u64,
        now_ms: u64,
    ) -> Call {
        let call = self.next_call();
        let (batch, id) = self
            .shards
            .entry(shard.clone())
            .or_default()
            .take_batch(call, now_ms);
        Call {
            shard: shard.clone(),
            command: Command::Reserve {
                holder: self.holder.clone(),
                batch,
                options,
                keys,
                tokens,
            },
            id,
        }
    }

    /// The bank answered call `call` of `shard`: its view is the snapshot now, and the batch
    /// that call carried has landed.
    pub fn answered(&mut self, shard: &Shard, call: u64, reply: &Reply, now_ms: u64) {
        let view = match reply {
            Reply::Reserved { view, .. }
            | Reply::NoRoom { view, .. }
            | Reply::NoKey { view }
            | Reply::Exchanged { view, .. } => view,
            Reply::Status { .. } => return,
        };
        self.trouble_until_ms = 0;
        let state = self.shards.entry(shard.clone()).or_default();
        state.view = view.clone();
        state.view_at_ms = now_ms;
        if call != 0 && state.in_flight.as_ref().is_some_and(|f| f.call == call) {
            if let Some(landed) = state.in_flight.take() {
                // Admissions made without the bank are in its view once the batch that reports
                // them has landed.
                for model in state.models.values_mut() {
                    if landed.batch.seq != 0 && landed.batch.seq >= model.advisory_seq {
                        model.advisory = Books::default();
                    }
                }
            }
        }
        if let Reply::Exchanged { leases, wanted, .. } = reply {
            for lease in leases {
                if let Some(m) = state.models.get_mut(&lease.model) {
                    m.leases.push(lease.clone());
                }
            }
            // Asked for and not granted: not asked again for a while.
            for model in wanted
                .iter()
                .filter(|m| !leases.iter().any(|l| &l.model == *m))
            {
                if let Some(m) = state.models.get_mut(model) {
                    m.want_backoff_until_ms = now_ms.saturating_add(WANT_BACKOFF_MS);
                }
            }
        }
    }

    /// A bank did not answer in time: requests without a lease stop waiting on the bank for a
    /// while. The call may still land, so what it carried stays in flight until it answers
    /// ([`Holdings::late`]) or fails ([`Holdings::failed`]).
    pub fn slow(&mut self, now_ms: u64) {
        self.trouble_until_ms = now_ms.saturating_add(BANK_TROUBLE_MS);
    }

    /// Call `call` of `shard` failed: its batch is sent again, as it was, with the next call
    /// (the bank skips it if it had landed after all), and requests without a lease stop
    /// waiting on the bank for a while.
    pub fn failed(&mut self, shard: &Shard, call: u64, now_ms: u64) {
        self.slow(now_ms);
        if let Some(state) = self.shards.get_mut(shard) {
            if call != 0 && state.in_flight.as_ref().is_some_and(|f| f.call == call) {
                state.give_up_call(now_ms);
            }
        }
    }

    /// A synchronous booking that answered after the request gave up on it: what it booked is
    /// given back.
    pub fn late(&mut self, shard: &Shard, call: u64, reply: &Reply, now_ms: u64) {
        self.answered(shard, call, reply, now_ms);
        if let Reply::Reserved { ticket, .. } = reply {
            let state = self.shards.entry(shard.clone()).or_default();
            state
                .batch
                .shift(&ticket.model, ticket.windows, -1, -signed(ticket.tokens));
            state.note(now_ms);
            state.urgent = true;
        }
    }

    /// Books what happened to a request: `effect` of its outcome on `key`, the real usage if
    /// the answer reported it, the provider's headers. Give-backs to a lease the isolate still
    /// holds stay in the isolate; the rest goes to the bank with the next call.
    #[allow(clippy::too_many_arguments)]
    pub fn settle(
        &mut self,
        shard: &Shard,
        key: &KeyCard,
        ticket: Ticket,
        effect: Effect,
        usage: Option<Usage>,
        report: Option<Report>,
        now_ms: u64,
    ) {
        let state = self.shards.entry(shard.clone()).or_default();
        let model = ticket.model.clone();
        let (mut requests, mut tokens) = effect.shift(ticket.tokens, usage.map(|u| u.counted()));
        if let Source::Lease { id } = ticket.source {
            let lease = state
                .models
                .get_mut(&model)
                .and_then(|m| m.leases.iter_mut().find(|l| l.id == id));
            if let Some(lease) = lease {
                // Given back into the lease, which the bank still counts as booked.
                lease.requests_left = lease.requests_left.saturating_add_signed(-requests);
                requests = 0;
                if tokens <= 0 {
                    lease.tokens_left = lease.tokens_left.saturating_add(tokens.unsigned_abs());
                    tokens = 0;
                } else {
                    let taken = lease.tokens_left.min(tokens.unsigned_abs());
                    lease.tokens_left -= taken;
                    tokens -= signed(taken);
                }
            }
        }
        if requests != 0 || tokens != 0 {
            state.batch.shift(&model, ticket.windows, requests, tokens);
            state.note(now_ms);
            // Capacity given back is worth returning soon; the books running under the
            // provider's count can wait for the next call.
            state.urgent |= requests < 0;
        }
        if let Some(report) = report.filter(|r| *r != Report::default()) {
            state.batch.reports.insert(model.clone(), report);
            state.note(now_ms);
        }
        match effect {
            Effect::Refused(refusal) => {
                let until_ms = super::ledger::cooldown_until(&refusal, now_ms);
                if let Some(m) = state.models.get_mut(&model) {
                    m.cooldown_until_ms = m.cooldown_until_ms.max(until_ms);
                    // The lease is no use until the cooldown ends: give it back now.
                    for lease in m.leases.drain(..) {
                        state.batch.returns.push(lease.returned());
                    }
                }
                state.batch.cooldowns.push(Cooldown {
                    model: model.clone(),
                    until_ms,
                });
                state.note(now_ms);
                state.urgent = true;
            }
            Effect::KeyRefused { status } => {
                let model = (status != 401).then(|| model.clone());
                let block = KeyBlock {
                    key_id: key.id.clone(),
                    fingerprint: key.fingerprint.clone(),
                    status,
                    model: model.clone(),
                    until_ms: now_ms.saturating_add(super::bank::KEY_BLOCK_MS),
                };
                state
                    .blocks
                    .retain(|b| b.key_id != key.id || b.model != model);
                state.blocks.push(block);
                state.batch.refused_keys.push(RefusedKey {
                    key: key.clone(),
                    model,
                    status,
                });
                state.note(now_ms);
                state.urgent = true;
            }
            Effect::Spent | Effect::NotSpent | Effect::RequestOnly => {}
        }
    }

    /// The background calls to make now, one per bank at most: leases to renew or return,
    /// and reports that have waited long enough (or give capacity back).
    pub fn due(&mut self, now_ms: u64) -> Vec<Call> {
        let mut calls = Vec::new();
        let holder = self.holder.clone();
        let mut next_call = self.calls;
        for (shard, state) in self.shards.iter_mut() {
            if state.busy(now_ms) {
                continue;
            }
            let mut wants = Vec::new();
            let mut holding = false;
            for (model, m) in state.models.iter_mut() {
                let cooling = m.cooldown_until_ms > now_ms
                    || state
                        .view
                        .models
                        .get(model)
                        .is_some_and(|b| b.cooldown_until_ms > now_ms);
                // Leases that ended, are spent, or that a cooldown makes useless, go back.
                let (live, ended): (Vec<Lease>, Vec<Lease>) = m
                    .leases
                    .drain(..)
                    .partition(|l| l.live(now_ms) && !cooling && l.requests_left > 0);
                for lease in ended {
                    state.batch.returns.push(lease.returned());
                }
                m.leases = live;
                holding |= !m.leases.is_empty();
                if cooling {
                    continue;
                }
                if now_ms < m.want_backoff_until_ms {
                    continue;
                }
                let Some(want) = m.rate.want(model, &m.limits, now_ms) else {
                    continue;
                };
                // Limits too small to slice never get a lease: book each request instead.
                if !super::lease::sliceable(&want) {
                    continue;
                }
                // What the leases that will still be live in a moment hold.
                let lasting = m.leases.iter().filter(|l| l.renew_at_ms() > now_ms);
                let (requests, tokens) = lasting.fold((0u64, 0u64), |(r, t), l| {
                    (r + l.requests_left, t.saturating_add(l.tokens_left))
                });
                if requests * 2 < want.requests || tokens.saturating_mul(2) < want.tokens {
                    wants.push(want);
                }
            }
            let waited = state
                .batch_since_ms
                .is_some_and(|since| now_ms >= since.saturating_add(FLUSH_MS));
            let report = !state.batch.is_empty() && (state.urgent || waited);
            // An isolate spending a lease refreshes its view at least this often, so that a
            // cooldown or a refused key seen elsewhere reaches it soon.
            let stale = holding && now_ms >= state.view_at_ms.saturating_add(VIEW_TRUST_MS);
            let again = state.retry.is_some() && now_ms >= state.retry_at_ms;
            if wants.is_empty() && !report && !stale && !again && state.batch.returns.is_empty() {
                continue;
            }
            next_call += 1;
            let (batch, id) = state.take_batch(next_call, now_ms);
            calls.push(Call {
                shard: shard.clone(),
                command: Command::Exchange {
                    holder: holder.clone(),
                    batch,
                    wants,
                    keys: state.keys.clone(),
                },
                id,
            });
        }
        self.calls = next_call;
        calls
    }

    /// Gives every lease back and asks for nothing more: the background work is about to stop
    /// (its time is up), and nothing would return them on time otherwise. The next
    /// [`Holdings::due`] carries the returns.
    pub fn surrender(&mut self, now_ms: u64) {
        for state in self.shards.values_mut() {
            let mut returned = false;
            for m in state.models.values_mut() {
                for lease in m.leases.drain(..) {
                    state.batch.returns.push(lease.returned());
                    returned = true;
                }
                // Not asked for again in the call that returns them; the next request may.
                m.want_backoff_until_ms = now_ms.saturating_add(1);
            }
            if returned {
                state.note(now_ms);
                state.urgent = true;
            }
        }
    }

    /// When [`Holdings::due`] should be asked again; `None` when the isolate holds nothing and
    /// has nothing to tell (the background work may stop).
    pub fn next_wake(&self, now_ms: u64) -> Option<u64> {
        let mut wake: Option<u64> = None;
        let mut at = |t: u64| wake = Some(wake.map_or(t, |w| w.min(t)));
        for state in self.shards.values() {
            if state.in_flight.is_some() {
                at(now_ms.saturating_add(FLUSH_MS / 4));
                continue;
            }
            if state.retry.is_some() {
                at(state.retry_at_ms.max(now_ms));
            }
            if let Some(since) = state.batch_since_ms {
                at(if state.urgent {
                    now_ms
                } else {
                    since.saturating_add(FLUSH_MS)
                });
            }
            for m in state.models.values() {
                for lease in &m.leases {
                    // A renewal refused lately waits for its back-off; a lease is returned
                    // when it ends.
                    at(lease
                        .renew_at_ms()
                        .max(m.want_backoff_until_ms.min(lease.expires_at_ms))
                        .max(now_ms));
                }
                if m.rate.per_second(now_ms) > 0 {
                    at(now_ms.saturating_add(FLUSH_MS / 4));
                }
            }
        }
        wake
    }

    /// The leases this isolate holds, for the status page: (organization, lease).
    pub fn leases(&self, provider: &str) -> Vec<(&str, &Lease)> {
        self.shards
            .iter()
            .filter(|(s, _)| s.provider == provider)
            .flat_map(|(s, state)| {
                state
                    .models
                    .values()
                    .flat_map(|m| m.leases.iter())
                    .map(move |l| (s.org.as_str(), l))
            })
            .collect()
    }
}
