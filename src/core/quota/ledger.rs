//! The counters: one organization's books on one model, on four fixed windows (requests and
//! tokens, per minute and per day), and whether a request fits them.
//!
//! Windows are fixed and aligned (a minute starts at a multiple of 60 s, a day at midnight
//! UTC); a counter from an earlier window reads as zero. Counters never go below zero, and a
//! booking never puts more than a window's limit on it.

use serde::{Deserialize, Serialize};

use crate::core::config::Limits;
use crate::core::ratelimit::{Refusal, Report, Window, WindowReport};

pub const MINUTE_MS: u64 = 60_000;
pub const DAY_MS: u64 = 86_400_000;
/// How long a billing refusal (`insufficient_quota`) keeps an organization out.
pub const BILLING_COOLDOWN_MS: u64 = 3_600_000;
/// The wait assumed after a 429 that says nothing of when to come back.
pub const DEFAULT_COOLDOWN_MS: u64 = 10_000;

/// An amount as a signed change to a counter (saturating: no amount booked comes near it).
pub fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The start of the window of length `len_ms` that contains `now_ms`.
pub fn window_start(now_ms: u64, len_ms: u64) -> u64 {
    now_ms - now_ms % len_ms
}

/// The end of the minute containing `now_ms` (a day ends on a minute's end too).
pub fn minute_end(now_ms: u64) -> u64 {
    window_start(now_ms, MINUTE_MS) + MINUTE_MS
}

/// A counter on one fixed window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Start of the window the count belongs to.
    pub start_ms: u64,
    pub used: u64,
}

impl Counter {
    /// The count in the window containing `now_ms` (zero if the counter is from an older one).
    pub fn current(&self, now_ms: u64, len_ms: u64) -> u64 {
        if self.start_ms == window_start(now_ms, len_ms) {
            self.used
        } else {
            0
        }
    }

    fn add(&mut self, now_ms: u64, len_ms: u64, amount: u64) {
        let start = window_start(now_ms, len_ms);
        if self.start_ms != start {
            *self = Counter {
                start_ms: start,
                used: 0,
            };
        }
        self.used = self.used.saturating_add(amount);
    }

    /// Adds a signed amount to the window starting at `start_ms`, and only to it: a count from
    /// a window that has ended no longer matters.
    fn shift(&mut self, start_ms: u64, amount: i64) {
        if self.start_ms == start_ms {
            self.used = self.used.saturating_add_signed(amount);
        } else if amount > 0 && start_ms > self.start_ms {
            // Spending reported for a window this counter has not seen yet.
            *self = Counter {
                start_ms,
                used: amount.unsigned_abs(),
            };
        }
    }

    /// Raises the count to at least `floor` in the window containing `now_ms`.
    fn raise_to(&mut self, now_ms: u64, len_ms: u64, floor: u64) {
        if floor > self.current(now_ms, len_ms) {
            *self = Counter {
                start_ms: window_start(now_ms, len_ms),
                used: floor,
            };
        }
    }
}

/// The minute and day windows a booking was made in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Windows {
    pub minute_start_ms: u64,
    pub day_start_ms: u64,
}

impl Windows {
    pub fn at(now_ms: u64) -> Self {
        Windows {
            minute_start_ms: window_start(now_ms, MINUTE_MS),
            day_start_ms: window_start(now_ms, DAY_MS),
        }
    }

    /// Whether `now_ms` still falls in these windows.
    pub fn current(&self, now_ms: u64) -> bool {
        *self == Windows::at(now_ms)
    }
}

/// Why a request does not fit now, and when it will.
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

/// The tokens a request may book: never more than the smallest token window's limit, so that
/// no single request (a `max_tokens` of 10^15) can fill a window on its own beyond its limit.
/// The provider has the last word on such a request, and its real usage settles the books.
pub fn bookable_tokens(limits: &Limits, tokens: u64) -> u64 {
    [limits.tpm, limits.tpd]
        .into_iter()
        .flatten()
        .fold(tokens, u64::min)
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

impl Books {
    /// Whether `requests` and `tokens` fit `limits` now: `Ok(headroom)` with the smallest
    /// fraction left on any window after them (in thousandths, for ranking), or when they
    /// would fit.
    pub fn room(
        &self,
        limits: &Limits,
        requests: u64,
        tokens: u64,
        now_ms: u64,
    ) -> Result<u64, NoRoom> {
        if self.cooldown_until_ms > now_ms {
            return Err(NoRoom {
                until_ms: self.cooldown_until_ms,
            });
        }
        let tokens = bookable_tokens(limits, tokens);
        let windows = [
            (limits.rpm, self.rpm, MINUTE_MS, requests),
            (limits.rpd, self.rpd, DAY_MS, requests),
            (limits.tpm, self.tpm, MINUTE_MS, tokens),
            (limits.tpd, self.tpd, DAY_MS, tokens),
        ];
        let mut headroom = 1_000;
        let mut until: Option<u64> = None;
        for (limit, counter, len, need) in windows {
            let Some(limit) = limit else { continue };
            let used = counter.current(now_ms, len);
            if used.saturating_add(need) > limit {
                let next = window_start(now_ms, len) + len;
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

    /// What is left on each kind of window now: (requests, tokens), `None` where no window of
    /// that kind is limited.
    pub fn left(&self, limits: &Limits, now_ms: u64) -> (Option<u64>, Option<u64>) {
        let left = |limit: Option<u64>, c: &Counter, len| {
            limit.map(|l| l.saturating_sub(c.current(now_ms, len)))
        };
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (
            min(
                left(limits.rpm, &self.rpm, MINUTE_MS),
                left(limits.rpd, &self.rpd, DAY_MS),
            ),
            min(
                left(limits.tpm, &self.tpm, MINUTE_MS),
                left(limits.tpd, &self.tpd, DAY_MS),
            ),
        )
    }

    /// Books `requests` and `tokens` on every window now (the caller checked the room).
    pub fn book(&mut self, requests: u64, tokens: u64, now_ms: u64) -> Windows {
        self.rpm.add(now_ms, MINUTE_MS, requests);
        self.rpd.add(now_ms, DAY_MS, requests);
        self.tpm.add(now_ms, MINUTE_MS, tokens);
        self.tpd.add(now_ms, DAY_MS, tokens);
        Windows::at(now_ms)
    }

    /// Shifts what was booked in `windows` by a signed amount: negative gives back, positive
    /// records spending the books did not have (real usage above the estimate, or requests
    /// sent while the bank could not be reached).
    pub fn shift(&mut self, windows: Windows, requests: i64, tokens: i64) {
        self.rpm.shift(windows.minute_start_ms, requests);
        self.rpd.shift(windows.day_start_ms, requests);
        self.tpm.shift(windows.minute_start_ms, tokens);
        self.tpd.shift(windows.day_start_ms, tokens);
    }

    /// Learns from a response's rate-limit headers: a window whose provider reports less
    /// remaining than the books think is raised to the provider's count. Never lowered.
    pub fn observe(&mut self, report: &Report, now_ms: u64) {
        let spent = |w: &Option<WindowReport>| -> Option<u64> {
            let w = w.as_ref()?;
            Some(w.limit?.saturating_sub(w.remaining?))
        };
        for (window, counter, len) in [
            (&report.requests_minute, &mut self.rpm, MINUTE_MS),
            (&report.requests_day, &mut self.rpd, DAY_MS),
            (&report.tokens_minute, &mut self.tpm, MINUTE_MS),
            (&report.tokens_day, &mut self.tpd, DAY_MS),
        ] {
            if let Some(s) = spent(window) {
                counter.raise_to(now_ms, len, s);
            }
        }
    }

    /// These books with `other`'s current counts added (an isolate's own bookings on top of
    /// the bank's view), and the later cooldown.
    pub fn plus(&self, other: &Books, now_ms: u64) -> Books {
        let sum = |a: &Counter, b: &Counter, len| Counter {
            start_ms: window_start(now_ms, len),
            used: a
                .current(now_ms, len)
                .saturating_add(b.current(now_ms, len)),
        };
        Books {
            rpm: sum(&self.rpm, &other.rpm, MINUTE_MS),
            rpd: sum(&self.rpd, &other.rpd, DAY_MS),
            tpm: sum(&self.tpm, &other.tpm, MINUTE_MS),
            tpd: sum(&self.tpd, &other.tpd, DAY_MS),
            cooldown_until_ms: self.cooldown_until_ms.max(other.cooldown_until_ms),
        }
    }

    /// No request before `until_ms` (kept if a later cooldown already runs).
    pub fn cool_down(&mut self, until_ms: u64) {
        self.cooldown_until_ms = self.cooldown_until_ms.max(until_ms);
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
            Some(Window::RequestsMinute | Window::TokensMinute) => minute_end(now_ms),
            Some(Window::RequestsDay | Window::TokensDay) => window_start(now_ms, DAY_MS) + DAY_MS,
            None => now_ms.saturating_add(DEFAULT_COOLDOWN_MS),
        }
    }
}
