//! Step 10: the upstream's answer, classified once into a typed result.
//!
//! [`classify`] looks only at the status and `retry-after`, so a success is handed through
//! without its body ever being read. Only a failure's body is read, and only to recover the
//! upstream's OpenAI-format message for errors that are the client's to fix.

use serde::Deserialize;

use super::error::RouterError;
use super::ratelimit;

/// The longest `retry-after` the router repeats to a client (one day).
pub const MAX_RETRY_AFTER_S: u64 = 86_400;

/// What an upstream response means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: hand the response to the client as it is.
    Success,
    /// 429: the router's key is out of quota for now.
    RateLimited { retry_after_s: Option<u64> },
    /// 401/403: the router's key is wrong or revoked.
    Auth,
    /// Any other 4xx: the request itself was refused; the client must change it.
    ClientError,
    /// 5xx, Groq's 498 (out of capacity), or a status that makes no sense for an API call
    /// (1xx, 3xx).
    ServerError,
}

/// Classifies an upstream response from its status and its `retry-after` header.
pub fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        429 => Outcome::RateLimited {
            retry_after_s: retry_after.and_then(parse_retry_after),
        },
        401 | 403 => Outcome::Auth,
        // Groq's `capacity_exceeded`: the provider is out of capacity, not the request at fault.
        498 => Outcome::ServerError,
        400..=499 => Outcome::ClientError,
        _ => Outcome::ServerError,
    }
}

/// Parses `retry-after` given in seconds (integer or fractional, rounded up), capped at
/// [`MAX_RETRY_AFTER_S`]. HTTP dates are not used by the providers the router talks to and
/// yield `None`.
pub fn parse_retry_after(raw: &str) -> Option<u64> {
    // Bounded above, so the cast is exact.
    ratelimit::seconds(raw, 32).map(|secs| secs.ceil().min(MAX_RETRY_AFTER_S as f64) as u64)
}

/// The client-facing error for a non-success outcome; `None` for [`Outcome::Success`].
/// `body` is the upstream's response body, read only for failures; `secret` names the Worker
/// secret of the key that was used.
pub fn into_error(outcome: Outcome, status: u16, body: &[u8], secret: &str) -> Option<RouterError> {
    Some(match outcome {
        Outcome::Success => return None,
        Outcome::RateLimited { retry_after_s } => {
            RouterError::UpstreamRateLimited { retry_after_s }
        }
        Outcome::Auth => RouterError::UpstreamAuth {
            status,
            secret: secret.to_owned(),
        },
        Outcome::ServerError => RouterError::UpstreamFailed { status },
        Outcome::ClientError => rejected(status, body),
    })
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

/// Replaces account identifiers in a provider's message (`org_01abc…`, `proj_…`, `user-…`):
/// Groq names the organization in its 413 and 429 texts.
fn scrub_accounts(message: &str) -> String {
    message
        .split_inclusive(|c: char| c.is_whitespace() || "`'\",.:;()".contains(c))
        .map(|piece| {
            let word =
                piece.trim_end_matches(|c: char| c.is_whitespace() || "`'\",.:;()".contains(c));
            let tail = &piece[word.len()..];
            let account = ["org_", "org-", "proj_", "user-"]
                .iter()
                .any(|p| word.starts_with(p) && word.len() > p.len() + 3);
            if account {
                format!("[redacted]{tail}")
            } else {
                piece.to_owned()
            }
        })
        .collect()
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
    fn classify_table() {
        let cases: &[(u16, Option<&str>, Outcome)] = &[
            (200, None, Outcome::Success),
            (201, None, Outcome::Success),
            (
                429,
                Some("7"),
                Outcome::RateLimited {
                    retry_after_s: Some(7),
                },
            ),
            (
                429,
                None,
                Outcome::RateLimited {
                    retry_after_s: None,
                },
            ),
            (401, None, Outcome::Auth),
            (403, None, Outcome::Auth),
            (400, None, Outcome::ClientError),
            (404, None, Outcome::ClientError),
            (413, None, Outcome::ClientError),
            (422, None, Outcome::ClientError),
            (500, None, Outcome::ServerError),
            (502, None, Outcome::ServerError),
            (503, Some("3"), Outcome::ServerError),
            (498, None, Outcome::ServerError),
            (418, None, Outcome::ClientError),
            (302, None, Outcome::ServerError),
            (101, None, Outcome::ServerError),
        ];
        for (status, ra, want) in cases {
            assert_eq!(classify(*status, *ra), *want, "{status} {ra:?}");
        }
    }

    #[test]
    fn retry_after_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("7", Some(7)),
            (" 12 ", Some(12)),
            ("6.78", Some(7)),
            ("0.1", Some(1)),
            ("86400", Some(86_400)),
            ("999999999", Some(86_400)),
            ("", None),
            ("-1", None),
            ("abc", None),
            ("1e3", None),
            ("NaN", None),
            ("inf", None),
            ("1.2.3", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("123456789012345678901234567890123", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_retry_after(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn client_error_keeps_the_upstream_openai_error() {
        let body = br#"{"error":{"message":"'messages' must contain at least one message","type":"invalid_request_error","param":"messages","code":"invalid_value","extra":1}}"#;
        let err = into_error(Outcome::ClientError, 400, body, "K").unwrap();
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
            let err = into_error(Outcome::ClientError, 404, body, "K").unwrap();
            assert_eq!(err.status(), 404);
            assert_eq!(err.kind(), "invalid_request_error");
            assert!(err.message().contains("HTTP 404"), "{}", err.message());
        }
    }

    #[test]
    fn groq_413_keeps_its_meaning_but_not_the_organization() {
        let body = br#"{"error":{"message":"Request too large for model `llama-3.1-8b-instant` in organization `org_01jabcdef123` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 12328, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let err = into_error(Outcome::ClientError, 413, body, "K").unwrap();
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
    }

    #[test]
    fn numeric_codes_become_text() {
        let body = br#"{"error":{"message":"m","type":"t","code":400}}"#;
        let err = into_error(Outcome::ClientError, 400, body, "K").unwrap();
        assert_eq!(err.code(), Some("400"));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        let err = into_error(Outcome::ClientError, 400, body.as_bytes(), "K").unwrap();
        let msg = err.message();
        assert!(msg.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(msg.ends_with('…'));
    }

    #[test]
    fn failures_other_than_client_errors_ignore_the_body() {
        // A 429 body names the provider's organization; it must not reach the client.
        let body = br#"{"error":{"message":"Rate limit reached in organization `org_123`"}}"#;
        let err = into_error(
            Outcome::RateLimited {
                retry_after_s: Some(3),
            },
            429,
            body,
            "K",
        )
        .unwrap();
        assert!(!err.to_json().contains("org_123"));
        assert_eq!(err.headers(), vec![("retry-after", "3".to_owned())]);
        assert_eq!(
            into_error(Outcome::ServerError, 503, body, "K").unwrap(),
            RouterError::UpstreamFailed { status: 503 }
        );
        assert_eq!(
            into_error(Outcome::Auth, 401, body, "K").unwrap(),
            RouterError::UpstreamAuth {
                status: 401,
                secret: "K".into()
            }
        );
        assert_eq!(into_error(Outcome::Success, 200, body, "K"), None);
    }
}
