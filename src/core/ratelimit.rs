//! What providers say about their own rate limits: the `x-ratelimit-*` headers of every
//! response, in each provider's dialect, and the window named in a 429's body.
//!
//! Foreign text, so every parser is small, pure, capped in what it accepts and returns `None`
//! rather than guessing. Durations come back in milliseconds.

use serde::{Deserialize, Serialize};

use super::config::RateLimitDialect;
use super::outcome::MAX_RETRY_AFTER_S;

/// The longest duration accepted from a provider (one week); anything longer is refused.
const MAX_DURATION_MS: u64 = 7 * 24 * 3_600_000;

/// Parses a Go-style duration as Groq and OpenAI send it: `2m59.56s`, `7.66s`, `399ms`,
/// `1h2m3s`, `6m0s`, `0s`, `1.5h`. Units: `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; fractions
/// allowed on every component; rounded up to whole milliseconds.
pub fn go_duration_ms(raw: &str) -> Option<u64> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 40 {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let (num, after) = rest.split_at(num_len);
        if num.matches('.').count() > 1 || num.starts_with('.') && num.len() == 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let ns_per_unit = match unit {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total_ns += value * ns_per_unit;
        rest = next;
    }
    to_ms(total_ns / 1e6)
}

/// The one parser of `retry-after`: seconds given as a number (integer or fractional), rounded
/// up to whole milliseconds and capped at a day ([`MAX_RETRY_AFTER_S`]). HTTP dates are not
/// used by the providers the router talks to and yield `None`.
pub fn retry_after_ms(raw: &str) -> Option<u64> {
    let secs = seconds(raw, 32)?;
    to_ms(secs.min(MAX_RETRY_AFTER_S as f64) * 1_000.0)
}

/// Parses seconds given as a number (`60`, `6.78`, `0.5`), as Cerebras' resets are sent,
/// rounded up to whole milliseconds.
pub fn seconds_ms(raw: &str) -> Option<u64> {
    to_ms(seconds(raw, 32)? * 1_000.0)
}

/// A plain non-negative number of seconds (`60`, `6.78`): digits and a dot only, at most
/// `max_len` characters, finite.
pub fn seconds(raw: &str, max_len: usize) -> Option<f64> {
    let s = raw.trim();
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn to_ms(ms: f64) -> Option<u64> {
    if !ms.is_finite() || ms < 0.0 || ms > MAX_DURATION_MS as f64 {
        return None;
    }
    // Bounded above, so the cast is exact.
    Some(ms.ceil() as u64)
}

fn count(raw: &str) -> Option<u64> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    // Some providers send counts as floats ("5999.0").
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = s.parse().ok()?;
    (0.0..1e18).contains(&f).then(|| f.floor() as u64)
}

/// One rate-limit window as a provider reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowReport {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the window has room again.
    pub reset_ms: Option<u64>,
}

impl WindowReport {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset_ms.is_none()
    }
}

/// Everything a response's headers say about the key's limits, by window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub requests_minute: Option<WindowReport>,
    pub requests_day: Option<WindowReport>,
    pub tokens_minute: Option<WindowReport>,
    pub tokens_day: Option<WindowReport>,
}

/// Where a dialect reports one window: its limit, remaining and reset headers, and how the
/// reset is written.
struct Spec {
    window: Window,
    limit: &'static str,
    remaining: &'static str,
    reset: &'static str,
    reset_parser: fn(&str) -> Option<u64>,
}

const fn spec(
    window: Window,
    [limit, remaining, reset]: [&'static str; 3],
    reset_parser: fn(&str) -> Option<u64>,
) -> Spec {
    Spec {
        window,
        limit,
        remaining,
        reset,
        reset_parser,
    }
}

const OPENAI_REQUESTS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const OPENAI_TOKENS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// Mistral's and Cerebras' per-minute token headers.
const TOKENS_MINUTE: [&str; 3] = [
    "x-ratelimit-limit-tokens-minute",
    "x-ratelimit-remaining-tokens-minute",
    "x-ratelimit-reset-tokens-minute",
];

/// The headers each dialect sends, by window.
fn specs(dialect: RateLimitDialect) -> &'static [Spec] {
    use Window::*;
    const GROQ: &[Spec] = &[
        // Groq: the `requests` headers are the per-day window, the `tokens` ones per minute.
        spec(RequestsDay, OPENAI_REQUESTS, go_duration_ms),
        spec(TokensMinute, OPENAI_TOKENS, go_duration_ms),
    ];
    const OPENAI: &[Spec] = &[
        spec(RequestsMinute, OPENAI_REQUESTS, go_duration_ms),
        spec(TokensMinute, OPENAI_TOKENS, go_duration_ms),
    ];
    const MISTRAL: &[Spec] = &[
        spec(
            RequestsMinute,
            [
                "x-ratelimit-limit-req-minute",
                "x-ratelimit-remaining-req-minute",
                "x-ratelimit-reset-req-minute",
            ],
            seconds_ms,
        ),
        spec(TokensMinute, TOKENS_MINUTE, seconds_ms),
    ];
    // Together: a request rate and a token rate, resets in seconds.
    const TOGETHER: &[Spec] = &[
        spec(
            RequestsMinute,
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
            ],
            seconds_ms,
        ),
        spec(
            TokensMinute,
            [
                "x-tokenlimit-limit",
                "x-tokenlimit-remaining",
                "x-tokenlimit-reset",
            ],
            seconds_ms,
        ),
    ];
    // Fireworks reports prompt and generated token limits separately; the prompt one is the
    // one a request's size is checked against.
    const FIREWORKS: &[Spec] = &[
        spec(RequestsMinute, OPENAI_REQUESTS, seconds_ms),
        spec(
            TokensMinute,
            [
                "x-ratelimit-limit-tokens-prompt",
                "x-ratelimit-remaining-tokens-prompt",
                "x-ratelimit-reset-tokens-prompt",
            ],
            seconds_ms,
        ),
    ];
    const CEREBRAS: &[Spec] = &[
        spec(
            RequestsDay,
            [
                "x-ratelimit-limit-requests-day",
                "x-ratelimit-remaining-requests-day",
                "x-ratelimit-reset-requests-day",
            ],
            seconds_ms,
        ),
        spec(TokensMinute, TOKENS_MINUTE, seconds_ms),
    ];
    match dialect {
        RateLimitDialect::Groq => GROQ,
        RateLimitDialect::OpenAi => OPENAI,
        RateLimitDialect::Mistral => MISTRAL,
        RateLimitDialect::Together => TOGETHER,
        RateLimitDialect::Fireworks => FIREWORKS,
        RateLimitDialect::Cerebras => CEREBRAS,
        RateLimitDialect::None => &[],
    }
}

/// Reads the rate-limit headers of a response in `dialect`. `header` returns a header's value
/// by lower-case name.
pub fn report<'a>(dialect: RateLimitDialect, header: impl Fn(&str) -> Option<&'a str>) -> Report {
    let mut report = Report::default();
    for s in specs(dialect) {
        let w = WindowReport {
            limit: header(s.limit).and_then(count),
            remaining: header(s.remaining).and_then(count),
            reset_ms: header(s.reset).and_then(s.reset_parser),
        };
        if w.is_empty() {
            continue;
        }
        let slot = match s.window {
            Window::RequestsMinute => &mut report.requests_minute,
            Window::RequestsDay => &mut report.requests_day,
            Window::TokensMinute => &mut report.tokens_minute,
            Window::TokensDay => &mut report.tokens_day,
        };
        *slot = Some(w);
    }
    report
}

/// The window a rate limit was hit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    RequestsMinute,
    RequestsDay,
    TokensMinute,
    TokensDay,
}

/// What a 429 says: which window, when to come back, and whether it is billing rather than rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub window: Option<Window>,
    pub retry_after_ms: Option<u64>,
    /// OpenAI's `insufficient_quota`: out of credit, not out of rate. Retrying soon never helps.
    pub billing: bool,
}

/// Reads a 429: the `retry-after` header (seconds) and the body's window and "try again in"
/// duration (Groq: `... on tokens per minute (TPM): Limit 6000, Used 3513, Requested 3166.
/// Please try again in 6.78s.`). The header wins over the body when both give a time.
pub fn refusal(retry_after: Option<&str>, body: &[u8]) -> Refusal {
    let start = body.get(..body.len().min(4_096)).unwrap_or_default();
    // The cut at 4 KiB may fall inside a character: keep the valid text before it.
    let text = match std::str::from_utf8(start) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&start[..e.valid_up_to()]).unwrap_or_default(),
    };
    let window = [
        ("(RPM)", Window::RequestsMinute),
        ("(RPD)", Window::RequestsDay),
        ("(TPM)", Window::TokensMinute),
        ("(TPD)", Window::TokensDay),
    ]
    .into_iter()
    .find(|(tag, _)| text.contains(tag))
    .map(|(_, w)| w);
    let body_wait = text
        .find("try again in ")
        .map(|i| &text[i + "try again in ".len()..])
        .and_then(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == 'µ'))
                .unwrap_or(rest.len());
            // "6.78s." ends the sentence with a dot that is not part of the duration.
            go_duration_ms(rest[..end].trim_end_matches('.'))
        });
    Refusal {
        window,
        retry_after_ms: retry_after
            .and_then(retry_after_ms)
            .or(body_wait.map(|ms| ms.min(MAX_RETRY_AFTER_S * 1_000))),
        billing: text.contains("insufficient_quota"),
    }
}

#[cfg(test)]
mod tests;
