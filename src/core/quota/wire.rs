//! The protocol between an isolate and the bank (one Durable Object per provider and
//! organization): what the isolate asks ([`Command`]), what the bank answers ([`Reply`]), and
//! the bank's side of it ([`apply`]), one synchronous step per call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bank::{Booking, Dirty, KeyBlock, OrgLedger};
use super::lease::{Lease, Want};
use super::ledger::{Books, Windows};
use crate::core::config::Limits;
use crate::core::ratelimit::Report;

/// A key as the bank knows it: its id and a fingerprint of its secret (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCard {
    pub id: String,
    pub fingerprint: String,
}

/// One model a synchronous booking may take, with its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOption {
    pub model: String,
    pub limits: Limits,
}

/// Where a request's booking came from, which says where a give-back goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Booked synchronously by the bank.
    Bank,
    /// Spent from the isolate's lease of this id.
    Lease { id: u64 },
    /// Booked on the isolate's own snapshot while the bank could not be reached; reported to
    /// the bank afterwards.
    Advisory,
}

/// A request's booking: one request and `tokens` in `windows`, to be reconciled with what
/// happened.
#[must_use = "a booking must be settled, or it holds quota until its window ends"]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub model: String,
    pub tokens: u64,
    pub windows: Windows,
    pub source: Source,
}

impl Ticket {
    pub fn bank(model: &str, tokens: u64, windows: Windows) -> Self {
        Ticket {
            model: model.to_owned(),
            tokens,
            windows,
            source: Source::Bank,
        }
    }
}

/// A lease given back: what is left of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReturn {
    pub id: u64,
    pub model: String,
    pub requests_left: u64,
    pub tokens_left: u64,
}

/// A signed change to what was booked in `windows`: negative gives back, positive records
/// spending the bank did not book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub model: String,
    pub windows: Windows,
    pub requests: i64,
    pub tokens: i64,
}

/// A 429's cooldown on one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldown {
    pub model: String,
    pub until_ms: u64,
}

/// A key the provider refused: 401 (every model) or 403 (`model` only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedKey {
    pub key: KeyCard,
    pub model: Option<String>,
    pub status: u16,
}

/// What an isolate has to tell the bank, gathered between calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The holder's sequence number of this batch (from 1; 0 for an empty one): the bank
    /// applies each once, so a batch sent again after a failure that came after it landed is
    /// not applied twice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<LeaseReturn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
    /// The latest rate-limit headers per model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reports: BTreeMap<String, Report>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cooldowns: Vec<Cooldown>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_keys: Vec<RefusedKey>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.returns.is_empty()
            && self.deltas.is_empty()
            && self.reports.is_empty()
            && self.cooldowns.is_empty()
            && self.refused_keys.is_empty()
    }

    /// Adds a change, merged with one already there for the same model and windows.
    pub fn shift(&mut self, model: &str, windows: Windows, requests: i64, tokens: i64) {
        if requests == 0 && tokens == 0 {
            return;
        }
        match self
            .deltas
            .iter_mut()
            .find(|d| d.model == model && d.windows == windows)
        {
            Some(d) => {
                d.requests = d.requests.saturating_add(requests);
                d.tokens = d.tokens.saturating_add(tokens);
            }
            None => self.deltas.push(Delta {
                model: model.to_owned(),
                windows,
                requests,
                tokens,
            }),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The bank's books as an isolate sees them after a call: its snapshot of the organization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The bank's clock when it answered.
    pub now_ms: u64,
    pub models: BTreeMap<String, Books>,
    pub blocks: Vec<KeyBlock>,
}

impl View {
    fn of(ledger: &OrgLedger, now_ms: u64) -> Self {
        View {
            now_ms,
            models: ledger
                .models
                .iter()
                .map(|(m, b)| (m.clone(), b.books))
                .collect(),
            blocks: ledger.blocks.clone(),
        }
    }
}

/// What an isolate asks of the bank. Every command but `Status` carries the isolate's batch,
/// applied first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Book one request now on the first of `options` with room, with the first usable key.
    Reserve {
        holder: String,
        batch: Batch,
        options: Vec<ModelOption>,
        keys: Vec<KeyCard>,
        tokens: u64,
    },
    /// Take the batch in, and grant what leases can be granted.
    Exchange {
        holder: String,
        batch: Batch,
        wants: Vec<Want>,
        keys: Vec<KeyCard>,
    },
    /// The books, for the status page.
    Status,
}

impl Command {
    /// Whether applying the command may change the books (and so must be stored).
    pub fn writes(&self) -> bool {
        !matches!(self, Command::Status)
    }
}

/// The bank's answer; every one but `Status` carries the bank's view after the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Reserved {
        model: String,
        key_id: String,
        ticket: Ticket,
        view: View,
    },
    NoRoom {
        until_ms: u64,
        view: View,
    },
    /// Every key offered is refused on every model offered.
    NoKey {
        view: View,
    },
    Exchanged {
        leases: Vec<Lease>,
        /// The models leases were asked for (granted or not).
        wanted: Vec<String>,
        view: View,
    },
    Status {
        now_ms: u64,
        ledger: OrgLedger,
    },
}

/// Applies a command to the bank's books at `now_ms`, noting in `dirty` what changed.
pub fn apply(ledger: &mut OrgLedger, command: Command, now_ms: u64, dirty: &mut Dirty) -> Reply {
    match command {
        Command::Reserve {
            holder,
            batch,
            options,
            keys,
            tokens,
        } => {
            ledger.absorb(&holder, &batch, now_ms, dirty);
            match ledger.reserve(&options, &keys, tokens, now_ms, dirty) {
                Booking::Booked {
                    model,
                    key_id,
                    ticket,
                } => Reply::Reserved {
                    model,
                    key_id,
                    ticket,
                    view: View::of(ledger, now_ms),
                },
                Booking::NoRoom { until_ms } => Reply::NoRoom {
                    until_ms,
                    view: View::of(ledger, now_ms),
                },
                Booking::NoKey => Reply::NoKey {
                    view: View::of(ledger, now_ms),
                },
            }
        }
        Command::Exchange {
            holder,
            batch,
            wants,
            keys,
        } => {
            ledger.absorb(&holder, &batch, now_ms, dirty);
            let leases = wants
                .iter()
                .filter_map(|w| ledger.grant(&holder, w, &keys, now_ms, dirty))
                .collect();
            Reply::Exchanged {
                leases,
                wanted: wants.into_iter().map(|w| w.model).collect(),
                view: View::of(ledger, now_ms),
            }
        }
        Command::Status => Reply::Status {
            now_ms,
            ledger: ledger.clone(),
        },
    }
}
