//! Step 10: the upstream's answer, classified once into a typed result.
//!
//! [`classify`] looks only at the status and `retry-after`, so a success is handed through
//! without its body ever being read. Only a failure's body is read, and only to recover the
//! upstream's OpenAI-format message for errors that are the client's to fix.

use serde::Deserialize;

use super::error::RouterError;
use super::ratelimit::{self, Refusal};

/// The longest `retry-after` the router repeats to a client (one day).
pub const MAX_RETRY_AFTER_S: u64 = 86_400;

/// What one upstream attempt came to. The failover policy (`core::failover`) matches on it; the
/// ledger learns from it; the log names it ([`Outcome::name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: hand the response to the client as it is.
    Success,
    /// 429: this organization is out of quota on this model for now.
    RateLimited(Refusal),
    /// Out of credit (`insufficient_quota`, 402): retrying soon never helps this organization.
    Billing(Refusal),
    /// 413: the request is larger than this model's per-minute window; another model may take it.
    TooLarge(RouterError),
    /// 404: this provider does not serve the model (or the path); another provider may.
    NotServed(RouterError),
    /// Groq's 498 `capacity_exceeded`: this model is out of capacity, not the request at fault.
    Capacity,
    /// 5xx, or a status that makes no sense for an API call (1xx, 3xx).
    ServerError { status: u16 },
    /// No response headers (for a stream: no first event) within the attempt's time.
    Timeout,
    /// The connection failed: refused, reset, or the response could not be read.
    Transport,
    /// A 2xx whose start is no answer, found before any of it reached the client: an event
    /// stream that failed, ended or opened with an error event, a JSON body that is not JSON or
    /// is an error object (see `core::stream`).
    BadAnswer,
    /// 401/403: the router's key is wrong or revoked.
    Auth { status: u16 },
    /// Any other 4xx (400, 422, ...): the request itself is refused, and another provider would
    /// refuse it too. Returned to the client at once.
    Rejected(RouterError),
}

impl Outcome {
    /// A stable name for logs and the `x-router-failover` header.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RateLimited(_) => "rate_limited",
            Outcome::Billing(_) => "billing",
            Outcome::TooLarge(_) => "too_large",
            Outcome::NotServed(_) => "not_served",
            Outcome::Capacity => "capacity",
            Outcome::ServerError { .. } => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Transport => "transport",
            Outcome::BadAnswer => "bad_answer",
            Outcome::Auth { .. } => "auth",
            Outcome::Rejected(_) => "rejected",
        }
    }

    /// Whether the outcome says the provider itself is failing (what the circuit breaker
    /// counts), as opposed to an answer about this key, this request or this model.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            Outcome::ServerError { .. }
                | Outcome::Capacity
                | Outcome::Timeout
                | Outcome::Transport
                | Outcome::BadAnswer
        )
    }
}

/// A call that failed: a timeout when its clock had run out (which aborted it), otherwise
/// `cause`.
pub fn failed(ran_out: bool, cause: Outcome) -> Outcome {
    if ran_out {
        Outcome::Timeout
    } else {
        cause
    }
}

/// Whether a status is a success, which is handed through without its body being read.
pub fn is_success(status: u16) -> bool {
    (200..=299).contains(&status)
}

/// Classifies an upstream response from its status, its `retry-after` header and, for a
/// failure, the start of its body (a success's body is never read: pass an empty one).
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        429 => {
            let refusal = ratelimit::refusal(retry_after, body);
            if refusal.billing {
                Outcome::Billing(refusal)
            } else {
                Outcome::RateLimited(refusal)
            }
        }
        402 => Outcome::Billing(Refusal {
            billing: true,
            ..ratelimit::refusal(retry_after, body)
        }),
        401 | 403 => Outcome::Auth { status },
        413 => Outcome::TooLarge(rejected(status, body)),
        404 => Outcome::NotServed(rejected(status, body)),
        498 => Outcome::Capacity,
        400..=499 => Outcome::Rejected(rejected(status, body)),
        _ => Outcome::ServerError { status },
    }
}

/// Seconds from `now_ms` until `until_ms`, rounded up, as a `retry-after` value: at least 1,
/// at most [`MAX_RETRY_AFTER_S`].
pub fn retry_after_s(until_ms: u64, now_ms: u64) -> u64 {
    until_ms
        .saturating_sub(now_ms)
        .div_ceil(1_000)
        .clamp(1, MAX_RETRY_AFTER_S)
}

#[derive(Deserialize)]
struct UpstreamEnvelope {
    error: UpstreamBody,
}

#[derive(Deserialize)]
struct UpstreamBody {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    param: Option<String>,
    code: Option<serde_json::Value>,
}

/// Longest upstream message repeated to the client; longer ones are cut at a char boundary.
const MAX_MESSAGE: usize = 2_000;

fn rejected(status: u16, body: &[u8]) -> RouterError {
    let parsed = serde_json::from_slice::<UpstreamEnvelope>(body).ok();
    let (message, kind, param, code) = match parsed {
        Some(UpstreamEnvelope { error }) => (
            error.message,
            error.kind,
            error.param,
            // Some providers send numeric codes; keep them as text.
            error.code.and_then(|c| match c {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        ),
        None => (None, None, None, None),
    };
    let message = message
        .filter(|m| !m.trim().is_empty())
        .map(|m| truncate(scrub_accounts(&m), MAX_MESSAGE))
        .unwrap_or_else(|| format!("The upstream provider rejected the request (HTTP {status})."));
    // Only OpenAI's own error types pass; a provider's private ones (Groq's `tokens` on a
    // too-large request) would surprise clients that switch on `type`.
    let kind = kind
        .filter(|k| KNOWN_TYPES.contains(&k.as_str()))
        .unwrap_or_else(|| "invalid_request_error".to_owned());
    RouterError::UpstreamRejected {
        status,
        message,
        kind,
        param: param.map(|p| scrub_accounts(&p)),
        code: code.map(|c| scrub_accounts(&c)),
    }
}

/// The error types OpenAI's API returns, which clients may switch on.
const KNOWN_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "server_error",
    "api_error",
];

/// Prefixes of account ids (Groq names the organization in its 413 and 429 texts) and of API
/// keys (a provider may echo a key it refused); a word starting with one and going on for more
/// than three characters is replaced.
const REDACTED_PREFIXES: [&str; 10] = [
    "org_", "org-", "proj_", "user-", "sk-", "sk_", "gsk_", "gsk-", "fw_", "tgp_",
];

/// Replaces account identifiers and key-shaped strings in a provider's message wherever they
/// stand: a word is a run of letters, digits, `_` and `-`, so `[org_…]`, `organization=org_…`
/// and `key: gsk_…` are all caught.
fn scrub_accounts(message: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        let lower = word.to_ascii_lowercase();
        let redacted = REDACTED_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p) && word.len() > p.len() + 3);
        out.push_str(if redacted { "[redacted]" } else { word });
        // Then the run of other characters up to the next word.
        let gap = after.find(is_word).unwrap_or(after.len());
        out.push_str(&after[..gap]);
        rest = &after[gap..];
    }
    out
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_the_clock_ran_out_is_a_timeout() {
        assert_eq!(failed(true, Outcome::Transport), Outcome::Timeout);
        assert_eq!(failed(false, Outcome::BadAnswer), Outcome::BadAnswer);
    }

    #[test]
    fn classify_table() {
        let groq_429 = br#"{"error":{"message":"Rate limit reached for model `m` in organization `org_x` on tokens per minute (TPM): Limit 6000, Used 5000, Requested 3000. Please try again in 6.78s.","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let billing = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let cases: &[(u16, Option<&str>, &[u8], &str)] = &[
            (200, None, b"", "success"),
            (201, None, b"", "success"),
            (429, Some("7"), b"", "rate_limited"),
            (429, None, groq_429, "rate_limited"),
            (429, None, billing, "billing"),
            (402, None, b"", "billing"),
            (401, None, b"", "auth"),
            (403, None, b"", "auth"),
            (400, None, b"", "rejected"),
            (422, None, b"", "rejected"),
            (418, None, b"", "rejected"),
            (404, None, b"", "not_served"),
            (413, None, b"", "too_large"),
            (498, None, b"", "capacity"),
            (500, None, b"", "server_error"),
            (502, None, b"", "server_error"),
            (503, Some("3"), b"", "server_error"),
            (302, None, b"", "server_error"),
            (101, None, b"", "server_error"),
        ];
        for (status, ra, body, want) in cases {
            assert_eq!(
                classify(*status, *ra, body).name(),
                *want,
                "{status} {ra:?}"
            );
        }
        // The refusal keeps what the 429 said of when to come back.
        match classify(429, Some("7"), b"") {
            Outcome::RateLimited(r) => assert_eq!(r.retry_after_ms, Some(7_000)),
            other => panic!("{other:?}"),
        }
        match classify(429, None, groq_429) {
            Outcome::RateLimited(r) => assert_eq!(r.retry_after_ms, Some(6_780)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn provider_failures_are_what_the_breaker_counts() {
        for (outcome, counts) in [
            (classify(500, None, b""), true),
            (classify(498, None, b""), true),
            (Outcome::Timeout, true),
            (Outcome::Transport, true),
            (Outcome::BadAnswer, true),
            (classify(429, None, b""), false),
            (classify(401, None, b""), false),
            (classify(400, None, b""), false),
            (classify(413, None, b""), false),
            (Outcome::Success, false),
        ] {
            assert_eq!(outcome.is_provider_failure(), counts, "{outcome:?}");
        }
    }

    #[test]
    fn retry_after_seconds_round_up_and_stay_in_bounds() {
        assert_eq!(retry_after_s(10_001, 0), 11);
        assert_eq!(retry_after_s(5, 10), 1);
        assert_eq!(retry_after_s(u64::MAX, 0), MAX_RETRY_AFTER_S);
    }

    #[test]
    fn client_error_keeps_the_upstream_openai_error() {
        let body = br#"{"error":{"message":"'messages' must contain at least one message","type":"invalid_request_error","param":"messages","code":"invalid_value","extra":1}}"#;
        let err = rejected(400, body);
        assert_eq!(
            err,
            RouterError::UpstreamRejected {
                status: 400,
                message: "'messages' must contain at least one message".into(),
                kind: "invalid_request_error".into(),
                param: Some("messages".into()),
                code: Some("invalid_value".into()),
            }
        );
    }

    #[test]
    fn client_error_with_a_foreign_body_gets_a_generic_message() {
        for body in [
            &b"<html>Bad Request</html>"[..],
            b"",
            br#"{"detail":"nope"}"#,
            br#"{"error":"plain string"}"#,
            br#"{"error":{"message":"   "}}"#,
        ] {
            let err = rejected(404, body);
            assert_eq!(err.status(), 404);
            assert_eq!(err.kind(), "invalid_request_error");
            assert!(err.message().contains("HTTP 404"), "{}", err.message());
        }
    }

    #[test]
    fn groq_413_keeps_its_meaning_but_not_the_organization() {
        let body = br#"{"error":{"message":"Request too large for model `llama-3.1-8b-instant` in organization `org_01jabcdef123` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 12328, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let err = rejected(413, body);
        let json = err.to_json();
        assert!(!json.contains("org_01jabcdef123"), "{json}");
        assert!(json.contains("organization `[redacted]`"), "{json}");
        assert!(json.contains("Limit 6000, Requested 12328"), "{json}");
        assert_eq!(err.kind(), "invalid_request_error");
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn scrubbing_leaves_ordinary_words() {
        assert_eq!(
            scrub_accounts("organization org_x is fine"),
            "organization org_x is fine"
        );
        assert_eq!(
            scrub_accounts("project proj_abcdef, user-12345678."),
            "project [redacted], [redacted]."
        );
        assert_eq!(scrub_accounts("résumé ünïcode"), "résumé ünïcode");
        assert_eq!(
            scrub_accounts("a task-oriented user-x skill"),
            "a task-oriented user-x skill"
        );
    }

    #[test]
    fn scrubbing_catches_ids_and_keys_inside_words() {
        let cases: &[(&str, &str)] = &[
            ("limit for [org_01jabcdef]", "limit for [[redacted]]"),
            ("organization=org_01jabcdef;", "organization=[redacted];"),
            (
                "Invalid API Key gsk_abcdef0123456789",
                "Invalid API Key [redacted]",
            ),
            (
                "key 'sk-proj-abc123def456' refused",
                "key '[redacted]' refused",
            ),
            ("Bearer SK-ABCDEF123456", "Bearer [redacted]"),
            ("(fw_3ZsecretKey)", "([redacted])"),
            ("ünï org_12345 ü", "ünï [redacted] ü"),
        ];
        for (raw, want) in cases {
            assert_eq!(scrub_accounts(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn numeric_codes_become_text() {
        let body = br#"{"error":{"message":"m","type":"t","code":400}}"#;
        let err = rejected(400, body);
        assert_eq!(err.code(), Some("400"));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        let err = rejected(400, body.as_bytes());
        let msg = err.message();
        assert!(msg.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(msg.ends_with('…'));
    }

    #[test]
    fn a_429_body_never_reaches_the_client() {
        // A 429 body names the provider's organization; only its timing is kept.
        let body = br#"{"error":{"message":"Rate limit reached in organization `org_123`. Please try again in 2s."}}"#;
        let outcome = classify(429, None, body);
        assert!(!format!("{outcome:?}").contains("org_123"));
    }
}
