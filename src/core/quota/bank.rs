//! The bank: the books of one organization of one provider (a shard), as its Durable Object
//! holds them. It books requests synchronously, grants leases (slices of what is left, booked
//! up front), takes back what isolates return, and learns what they report in batches.
//!
//! The invariant, per model and window: what the books show (spent, reserved and leased, all
//! booked alike) never exceeds the limit through the router's own bookings, so no interleaving
//! of isolates can over-admit. A lease's unused part is given back when its isolate returns it;
//! until then it stays booked, which is the safe side.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::lease::{Lease, Want, LEASE_SHARE, LEASE_TTL_MS, MIN_LEASE_REQUESTS};
use super::ledger::{bookable_tokens, minute_end, signed, Books, NoRoom, Windows, DAY_MS};
use super::wire::{Batch, KeyCard, ModelOption, Ticket};

/// How long a key refused with 401 (or 403, for one model) stays out when its secret does not
/// change. After that it is tried again; another refusal blocks it again.
pub const KEY_BLOCK_MS: u64 = 15 * 60_000;

/// A lease the bank granted and has not seen returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: u64,
    pub requests: u64,
    pub tokens: u64,
    pub windows: Windows,
    pub granted_at_ms: u64,
    pub expires_at_ms: u64,
}

/// The books of one model, and the leases out on it, by holder (an isolate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBooks {
    pub books: Books,
    #[serde(default)]
    pub leases: BTreeMap<String, Vec<LeaseRecord>>,
}

/// A key the provider refused: 401 for every model, 403 for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBlock {
    pub key_id: String,
    /// The fingerprint of the secret that was refused: a new secret under the same id is a
    /// new key, and is not blocked.
    pub fingerprint: String,
    pub status: u16,
    /// `None` for every model (401), else the one model (403).
    pub model: Option<String>,
    pub until_ms: u64,
}

impl KeyBlock {
    /// Whether this block keeps `key` out of `model` at `now_ms`.
    pub fn blocks(&self, key: &KeyCard, model: &str, now_ms: u64) -> bool {
        self.key_id == key.id
            && self.fingerprint == key.fingerprint
            && self.model.as_deref().is_none_or(|m| m == model)
            && now_ms < self.until_ms
    }
}

/// What an operation changed, so that only that is stored: the rows of these models, and the
/// organization's own row (key blocks, the lease counter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    pub models: BTreeSet<String>,
    pub meta: bool,
}

/// The last batch the bank applied from a holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub seq: u64,
    pub at_ms: u64,
}

/// What the bank holds for one organization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgLedger {
    pub models: BTreeMap<String, ModelBooks>,
    pub blocks: Vec<KeyBlock>,
    pub next_lease_id: u64,
    /// By holder: each batch is applied once.
    #[serde(default)]
    pub applied: BTreeMap<String, Applied>,
}

/// What a synchronous booking found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booking {
    Booked {
        model: String,
        key_id: String,
        ticket: Ticket,
    },
    /// Every model was full or cooling down: the earliest time one has room.
    NoRoom { until_ms: u64 },
    /// Every key offered is blocked (401/403) on every model offered.
    NoKey,
}

impl OrgLedger {
    /// The books of `model` (empty ones when nothing was booked yet).
    pub fn books(&self, model: &str) -> Books {
        self.models.get(model).map(|m| m.books).unwrap_or_default()
    }

    fn model_mut(&mut self, model: &str, dirty: &mut Dirty) -> &mut ModelBooks {
        dirty.models.insert(model.to_owned());
        self.models.entry(model.to_owned()).or_default()
    }

    /// The first of `keys` not blocked on `model`.
    fn usable_key<'k>(&self, keys: &'k [KeyCard], model: &str, now_ms: u64) -> Option<&'k KeyCard> {
        keys.iter()
            .find(|k| !self.blocks.iter().any(|b| b.blocks(k, model, now_ms)))
    }

    /// Books one request of `tokens` on the first of `options` with room and a usable key.
    pub fn reserve(
        &mut self,
        options: &[ModelOption],
        keys: &[KeyCard],
        tokens: u64,
        now_ms: u64,
        dirty: &mut Dirty,
    ) -> Booking {
        let mut earliest: Option<u64> = None;
        for option in options {
            let Some(key) = self.usable_key(keys, &option.model, now_ms) else {
                continue;
            };
            let tokens = bookable_tokens(&option.limits, tokens);
            match self
                .books(&option.model)
                .room(&option.limits, 1, tokens, now_ms)
            {
                Ok(_) => {
                    let key_id = key.id.clone();
                    let books = &mut self.model_mut(&option.model, dirty).books;
                    let windows = books.book(1, tokens, now_ms);
                    return Booking::Booked {
                        model: option.model.clone(),
                        key_id,
                        ticket: Ticket::bank(&option.model, tokens, windows),
                    };
                }
                Err(NoRoom { until_ms }) => {
                    earliest = Some(earliest.map_or(until_ms, |e| e.min(until_ms)));
                }
            }
        }
        match earliest {
            Some(until_ms) => Booking::NoRoom { until_ms },
            None => Booking::NoKey,
        }
    }

    /// Grants `holder` a lease on `want.model`: at most [`LEASE_SHARE`] of each window's
    /// limit and half of what is left on it, booked now; none when that is less than
    /// [`MIN_LEASE_REQUESTS`] requests (or their tokens), while the model cools down, or when
    /// no key of the organization may serve it.
    pub fn grant(
        &mut self,
        holder: &str,
        want: &Want,
        keys: &[KeyCard],
        now_ms: u64,
        dirty: &mut Dirty,
    ) -> Option<Lease> {
        self.usable_key(keys, &want.model, now_ms)?;
        let limits = &want.limits;
        let books = self.books(&want.model);
        if books.cooldown_until_ms > now_ms {
            return None;
        }
        let (left_requests, left_tokens) = books.left(limits, now_ms);
        // What this holder already holds, in leases not returned from the current windows,
        // counts against its share: one isolate never holds more than 1/16 of a window.
        let (held_requests, held_tokens) = self
            .models
            .get(&want.model)
            .and_then(|m| m.leases.get(holder))
            .into_iter()
            .flatten()
            .filter(|r| r.windows.current(now_ms))
            .fold((0u64, 0u64), |(r, t), l| {
                (r.saturating_add(l.requests), t.saturating_add(l.tokens))
            });
        let cap =
            |limit: Option<u64>, held: u64| limit.map(|l| (l / LEASE_SHARE).saturating_sub(held));
        let slice = |want: u64, left: Option<u64>, caps: [Option<u64>; 2]| {
            let mut n = want;
            if let Some(left) = left {
                n = n.min(left / 2);
            }
            caps.into_iter().flatten().fold(n, u64::min)
        };
        let requests = slice(
            want.requests,
            left_requests,
            [
                cap(limits.rpm, held_requests),
                cap(limits.rpd, held_requests),
            ],
        );
        let tokens = slice(
            want.tokens,
            left_tokens,
            [cap(limits.tpm, held_tokens), cap(limits.tpd, held_tokens)],
        );
        // Tokens for two requests of the average size the holder asked for.
        let per_request = want.tokens / want.requests.max(1);
        if requests < MIN_LEASE_REQUESTS || tokens < per_request.saturating_mul(MIN_LEASE_REQUESTS)
        {
            return None;
        }
        let id = self.next_lease_id;
        self.next_lease_id += 1;
        dirty.meta = true;
        let expires_at_ms = now_ms.saturating_add(LEASE_TTL_MS).min(minute_end(now_ms));
        let entry = self.model_mut(&want.model, dirty);
        let windows = entry.books.book(requests, tokens, now_ms);
        entry
            .leases
            .entry(holder.to_owned())
            .or_default()
            .push(LeaseRecord {
                id,
                requests,
                tokens,
                windows,
                granted_at_ms: now_ms,
                expires_at_ms,
            });
        Some(Lease {
            id,
            model: want.model.clone(),
            requests_left: requests,
            tokens_left: tokens,
            windows,
            expires_at_ms,
        })
    }

    /// Applies what an isolate reports: leases returned, real usage and give-backs, the
    /// providers' headers, 429 cooldowns and refused keys.
    pub fn absorb(&mut self, holder: &str, batch: &Batch, now_ms: u64, dirty: &mut Dirty) {
        if batch.seq != 0 {
            // A holder sends its batches one at a time, in order, and sends one again only
            // after a failure: one not newer than the last applied has landed already.
            if self.applied.get(holder).is_some_and(|a| a.seq >= batch.seq) {
                return;
            }
            self.applied.insert(
                holder.to_owned(),
                Applied {
                    seq: batch.seq,
                    at_ms: now_ms,
                },
            );
            dirty.meta = true;
        }
        for back in &batch.returns {
            let entry = self.model_mut(&back.model, dirty);
            let held = entry.leases.get_mut(holder);
            // Only a lease the bank knows is taken back, and only once.
            let record = held.and_then(|h| {
                let i = h.iter().position(|r| r.id == back.id)?;
                Some(h.remove(i))
            });
            if let Some(record) = record {
                let requests = back.requests_left.min(record.requests);
                let tokens = back.tokens_left.min(record.tokens);
                entry
                    .books
                    .shift(record.windows, -signed(requests), -signed(tokens));
            }
            if entry.leases.get(holder).is_some_and(Vec::is_empty) {
                entry.leases.remove(holder);
            }
        }
        for delta in &batch.deltas {
            let entry = self.model_mut(&delta.model, dirty);
            entry
                .books
                .shift(delta.windows, delta.requests, delta.tokens);
        }
        for (model, report) in &batch.reports {
            self.model_mut(model, dirty).books.observe(report, now_ms);
        }
        for cooldown in &batch.cooldowns {
            let entry = self.model_mut(&cooldown.model, dirty);
            entry.books.cool_down(cooldown.until_ms);
        }
        for refused in &batch.refused_keys {
            self.blocks
                .retain(|b| !(b.key_id == refused.key.id && b.model == refused.model));
            self.blocks.push(KeyBlock {
                key_id: refused.key.id.clone(),
                fingerprint: refused.key.fingerprint.clone(),
                status: refused.status,
                model: refused.model.clone(),
                until_ms: now_ms.saturating_add(KEY_BLOCK_MS),
            });
            dirty.meta = true;
        }
    }

    /// Forgets what no longer matters: models and keys the configuration no longer names,
    /// blocks that ended, and leases whose day has ended (nothing they booked still counts).
    /// `models` and `keys` are `None` when the configuration is not known here.
    pub fn prune(
        &mut self,
        models: Option<&[String]>,
        keys: Option<&[String]>,
        now_ms: u64,
        dirty: &mut Dirty,
    ) {
        let day = now_ms - now_ms % DAY_MS;
        for (model, entry) in self.models.iter_mut() {
            let before = entry.leases.values().map(Vec::len).sum::<usize>();
            for held in entry.leases.values_mut() {
                held.retain(|r| r.windows.day_start_ms >= day);
            }
            entry.leases.retain(|_, held| !held.is_empty());
            if entry.leases.values().map(Vec::len).sum::<usize>() != before {
                dirty.models.insert(model.clone());
            }
        }
        if let Some(models) = models {
            let gone: Vec<String> = self
                .models
                .keys()
                .filter(|m| !models.contains(m))
                .cloned()
                .collect();
            for model in gone {
                self.models.remove(&model);
                dirty.models.insert(model);
            }
        }
        // A holder not heard from for a day is gone (isolates do not live that long).
        let holders = self.applied.len();
        self.applied
            .retain(|_, a| a.at_ms.saturating_add(DAY_MS) > now_ms);
        if self.applied.len() != holders {
            dirty.meta = true;
        }
        let count = self.blocks.len();
        self.blocks
            .retain(|b| b.until_ms > now_ms && keys.is_none_or(|keys| keys.contains(&b.key_id)));
        if self.blocks.len() != count {
            dirty.meta = true;
        }
    }
}
