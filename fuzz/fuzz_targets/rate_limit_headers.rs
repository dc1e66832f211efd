//! Arbitrary provider responses as the quota ledger reads them: a header block (`name: value`
//! lines), a blank line, then a 429 body. Every header value goes through the duration and
//! seconds parsers, the block through `ratelimit::report` in every dialect, `retry-after` and
//! the body through `ratelimit::refusal`, and what comes out through the ledger. Nothing may
//! panic, and what is parsed stays within the caps the router promises.
#![no_main]

use edge_router::core::config::{Limits, RateLimitDialect};
use edge_router::core::outcome::MAX_RETRY_AFTER_S;
use edge_router::core::quota::ledger::{cooldown_until, Books, BILLING_COOLDOWN_MS};
use edge_router::core::ratelimit::{
    go_duration_ms, refusal, report, retry_after_ms, seconds_ms, Refusal, Report, WindowReport,
};
use libfuzzer_sys::fuzz_target;

/// The longest duration the ratelimit parsers accept (one week, `MAX_DURATION_MS` there).
const MAX_DURATION_MS: u64 = 7 * 24 * 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// How much of a 429 body `refusal` reads.
const BODY_READ: usize = 4_096;
/// A realistic clock (2026-11-23T12:34:56.789Z).
const NOW_MS: u64 = 1_795_437_296_789;

const DIALECTS: [RateLimitDialect; 7] = [
    RateLimitDialect::Groq,
    RateLimitDialect::OpenAi,
    RateLimitDialect::Mistral,
    RateLimitDialect::Together,
    RateLimitDialect::Fireworks,
    RateLimitDialect::Cerebras,
    RateLimitDialect::None,
];

fuzz_target!(|data: &[u8]| {
    // Header block, blank line, body: the shape of an HTTP response.
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    // Header values reach the Worker as JS strings, so as text.
    let head = String::from_utf8_lossy(head);
    let headers: Vec<(String, &str)> = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);

    for (_, value) in &headers {
        check_value(value);
    }

    for dialect in DIALECTS {
        let r = report(dialect, header);
        check_report(dialect, &r, headers.is_empty());
        check_ledger(&r, None);
    }

    let retry_after = header("retry-after");
    let r = refusal(retry_after, body);
    check_refusal(retry_after, body, &r);
    check_ledger(&report(RateLimitDialect::Groq, header), Some(&r));
});

/// The parsers of one header value: capped, and the two readings of seconds agree.
fn check_value(value: &str) {
    if let Some(ms) = go_duration_ms(value) {
        assert!(ms <= MAX_DURATION_MS, "go duration {value:?} -> {ms} ms");
    }
    let ms = seconds_ms(value);
    if let Some(ms) = ms {
        assert!(ms <= MAX_DURATION_MS, "seconds {value:?} -> {ms} ms");
    }
    let wait = retry_after_ms(value);
    if let Some(wait) = wait {
        assert!(
            wait <= MAX_RETRY_AFTER_S * 1_000,
            "retry-after {value:?} -> {wait} ms"
        );
    }
    // Below the cap, retry-after is the same reading of seconds as a reset.
    if let (Some(ms), Some(wait)) = (ms, wait) {
        if wait < MAX_RETRY_AFTER_S * 1_000 {
            assert_eq!(ms, wait, "{value:?}: {ms} ms as a reset, {wait} ms as retry-after");
        }
    }
}

fn check_report(dialect: RateLimitDialect, r: &Report, no_headers: bool) {
    if no_headers || dialect == RateLimitDialect::None {
        assert_eq!(
            *r,
            Report::default(),
            "{dialect:?} read headers that are not there"
        );
    }
    for w in [
        r.requests_minute,
        r.requests_day,
        r.tokens_minute,
        r.tokens_day,
    ]
    .into_iter()
    .flatten()
    {
        let WindowReport {
            limit,
            remaining,
            reset_ms,
        } = w;
        assert!(
            limit.is_some() || remaining.is_some() || reset_ms.is_some(),
            "{dialect:?}: an empty window is reported"
        );
        if let Some(ms) = reset_ms {
            assert!(ms <= MAX_DURATION_MS, "{dialect:?}: reset in {ms} ms");
        }
    }
}

fn check_refusal(retry_after: Option<&str>, body: &[u8], r: &Refusal) {
    if let Some(ms) = r.retry_after_ms {
        assert!(ms <= MAX_DURATION_MS, "wait {ms} ms");
    }
    // The header wins over the body whenever it gives a time.
    if let Some(ms) = retry_after.and_then(retry_after_ms) {
        assert_eq!(
            r.retry_after_ms,
            Some(ms),
            "retry-after {retry_after:?} ignored"
        );
    }
    // Whatever a well-formed body names in the part that is read is seen.
    if std::str::from_utf8(body).is_ok() {
        let read = &body[..body.len().min(BODY_READ)];
        let has = |needle: &str| read.windows(needle.len()).any(|w| w == needle.as_bytes());
        if has("insufficient_quota") {
            assert!(r.billing, "billing refusal missed: {r:?}");
        }
        if ["(RPM)", "(RPD)", "(TPM)", "(TPD)"].into_iter().any(has) {
            assert!(r.window.is_some(), "window missed: {r:?}");
        }
    }
}

/// What the ledger does with the report (and a refusal): no panic, and a cooldown that ends
/// within the longest wait a refusal can ask for.
fn check_ledger(report: &Report, refused: Option<&Refusal>) {
    let limits = Limits {
        rpm: Some(30),
        rpd: Some(14_400),
        tpm: Some(6_000),
        tpd: Some(500_000),
        max_output_tokens: None,
    };
    let mut books = Books::default();
    assert!(books.room(&limits, 1, 100, NOW_MS).is_ok(), "empty books have room");
    let windows = books.book(1, 100, NOW_MS);
    books.observe(report, NOW_MS);
    let Some(refusal) = refused else {
        books.shift(windows, -1, -100);
        return;
    };
    books.cool_down(cooldown_until(refusal, NOW_MS));
    books.shift(windows, -1, -100);
    let until = books.cooldown_until_ms;
    let longest = MAX_DURATION_MS.max(BILLING_COOLDOWN_MS).max(DAY_MS);
    assert!(until <= NOW_MS + longest, "cooled down until {until}");
    if refusal.billing {
        assert!(
            books
                .room(&limits, 1, 1, NOW_MS + BILLING_COOLDOWN_MS - 1)
                .is_err(),
            "a billing refusal left room within the hour"
        );
    }
}
