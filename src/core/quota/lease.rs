//! Leases: the slices of an organization's capacity that the bank grants one isolate for a few
//! seconds, so that the isolate admits requests with no call to the bank.
//!
//! Sizing: an isolate asks for what it would use in [`LEASE_HORIZON_MS`] at its recent rate;
//! the bank grants at most [`LEASE_SHARE`] of a window's limit and half of what is left on it,
//! and nothing below [`MIN_LEASE_REQUESTS`], so that small limits (a free plan's 30 requests a
//! minute) are booked one request at a time and stay exact. A lease expires after
//! [`LEASE_TTL_MS`] and never outlives the minute it was cut from.

use serde::{Deserialize, Serialize};

use super::ledger::Windows;
use crate::core::config::Limits;

/// A lease holds at most this fraction (1/n) of any window's limit.
pub const LEASE_SHARE: u64 = 16;
/// Below this many requests, no lease is granted: the isolate books synchronously. A window
/// whose 1/16 holds fewer (a limit under 64) is never leased: exactness matters more there.
pub const MIN_LEASE_REQUESTS: u64 = 4;
/// Below this many admissions a second, an isolate asks for no lease: it books each request.
pub const MIN_RATE: u64 = 2;
/// How long a lease may be spent.
pub const LEASE_TTL_MS: u64 = 5_000;
/// How far ahead a lease is sized: the requests the isolate would admit in this time.
pub const LEASE_HORIZON_MS: u64 = 2_000;
/// The most requests one lease asks for.
pub const MAX_LEASE_REQUESTS: u64 = 10_000;
/// A lease expiring within this time is renewed ahead, unless it ends with its minute (no
/// lease can last longer then).
pub const RENEW_AHEAD_MS: u64 = 1_000;

/// A lease as its isolate holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: u64,
    pub model: String,
    pub requests_left: u64,
    pub tokens_left: u64,
    /// The windows it was booked in: it is spent only while they are current.
    pub windows: Windows,
    pub expires_at_ms: u64,
}

impl Lease {
    /// Whether the lease may still be spent at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms && self.windows.current(now_ms)
    }

    /// When a renewal should be asked for: [`RENEW_AHEAD_MS`] before the lease ends, or at its
    /// end when it ends with its minute (a new lease could not last longer).
    pub fn renew_at_ms(&self) -> u64 {
        if self.expires_at_ms == super::ledger::minute_end(self.expires_at_ms - 1) {
            self.expires_at_ms
        } else {
            self.expires_at_ms.saturating_sub(RENEW_AHEAD_MS)
        }
    }

    /// What is left of the lease, to give back.
    pub fn returned(self) -> super::wire::LeaseReturn {
        super::wire::LeaseReturn {
            id: self.id,
            model: self.model,
            requests_left: self.requests_left,
            tokens_left: self.tokens_left,
        }
    }

    /// Spends one request of `tokens` if the lease has room for it.
    pub fn spend(&mut self, tokens: u64, now_ms: u64) -> bool {
        if !self.live(now_ms) || self.requests_left == 0 || self.tokens_left < tokens {
            return false;
        }
        self.requests_left -= 1;
        self.tokens_left -= tokens;
        true
    }
}

/// What an isolate asks the bank for, for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub model: String,
    pub limits: Limits,
    pub requests: u64,
    pub tokens: u64,
}

/// An isolate's recent rate of admissions on one organization and model, in buckets of one
/// second, and the average size of its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    bucket_start_ms: u64,
    this: u64,
    last: u64,
    /// Exponentially weighted average of the tokens booked per request.
    avg_tokens: u64,
}

const BUCKET_MS: u64 = 1_000;

impl Rate {
    fn roll(&mut self, now_ms: u64) {
        let start = now_ms - now_ms % BUCKET_MS;
        if start == self.bucket_start_ms {
            return;
        }
        self.last = if start == self.bucket_start_ms + BUCKET_MS {
            self.this
        } else {
            0
        };
        self.this = 0;
        self.bucket_start_ms = start;
    }

    /// One admission of `tokens`.
    pub fn admitted(&mut self, tokens: u64, now_ms: u64) {
        self.roll(now_ms);
        self.this += 1;
        self.avg_tokens = if self.avg_tokens == 0 {
            tokens
        } else {
            (self.avg_tokens.saturating_mul(7).saturating_add(tokens)) / 8
        };
    }

    /// Admissions per second lately: the busier of the last second and this one so far, which
    /// (from two admissions on) is scaled to a whole second, counted from at least its first
    /// 100 ms, so that an isolate that turns busy after a pause asks at once for a lease its new
    /// rate will need.
    pub fn per_second(&self, now_ms: u64) -> u64 {
        let mut r = *self;
        r.roll(now_ms);
        if r.this < MIN_RATE {
            return r.this.max(r.last);
        }
        let elapsed = (now_ms - r.bucket_start_ms).max(BUCKET_MS / 10);
        (r.this * BUCKET_MS / elapsed).max(r.last)
    }

    /// What to ask for: the requests of [`LEASE_HORIZON_MS`] at the recent rate, and their
    /// tokens; `None` while the isolate sees fewer than [`MIN_RATE`] a second (it books each
    /// request then).
    pub fn want(&self, model: &str, limits: &Limits, now_ms: u64) -> Option<Want> {
        let rate = self.per_second(now_ms);
        if rate < MIN_RATE {
            return None;
        }
        let requests = (rate * LEASE_HORIZON_MS / 1_000 + 1).min(MAX_LEASE_REQUESTS);
        Some(Want {
            model: model.to_owned(),
            limits: *limits,
            requests,
            tokens: requests.saturating_mul(self.avg_tokens.max(1)),
        })
    }
}

/// Whether `want`'s limits could ever give a lease: every limited window's slice (1/16 of it)
/// holds [`MIN_LEASE_REQUESTS`] requests of the average size asked for. Otherwise leases are
/// not asked for at all, and every request books with the bank.
pub fn sliceable(want: &Want) -> bool {
    let l = &want.limits;
    let per_request = want.tokens / want.requests.max(1);
    let requests = [l.rpm, l.rpd]
        .into_iter()
        .flatten()
        .all(|limit| limit / LEASE_SHARE >= MIN_LEASE_REQUESTS);
    let tokens = [l.tpm, l.tpd]
        .into_iter()
        .flatten()
        .all(|limit| limit / LEASE_SHARE >= per_request.saturating_mul(MIN_LEASE_REQUESTS));
    requests && tokens
}
