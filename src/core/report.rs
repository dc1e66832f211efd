//! Step 13: what the client and the operator see of a request's journey: the response headers
//! that explain it (`x-router-*`, `Server-Timing`) and the one JSON log line per request (per
//! failing request with `gateway.log_requests = "failures"`).

use serde::Serialize;

use super::config::RequestLog;
use super::error::RouterError;
use super::failover::{self, Attempt, Booked};

/// What the attempt loop did, for the response headers and the log line.
#[derive(Debug, Default)]
pub struct Trace {
    /// When the request arrived.
    pub started_ms: u64,
    /// Time to the routing decision; `None` until the request reaches the attempt loop.
    pub classify_ms: Option<u64>,
    /// Synchronous calls to the quota bank.
    pub quota_calls: u32,
    pub quota_ms: u64,
    pub upstream_ms: u64,
    pub attempts: Vec<Attempt>,
    /// How the last attempt was booked.
    pub booked: Booked,
    /// The hedge the request started, if any.
    pub hedged: Option<Hedged>,
}

/// A hedge: a second attempt started when the first had no first byte by its target's learned
/// p90 (`core::latency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hedged {
    /// When it started, after the first attempt.
    pub after_ms: u64,
    /// Which attempt answered the client.
    pub won: HedgeWinner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeWinner {
    /// The attempt that was hedged answered first after all.
    First,
    /// The hedge did.
    Hedge,
    /// Neither: both failed, and the request went on to the next candidate.
    Neither,
}

impl HedgeWinner {
    fn name(self) -> &'static str {
        match self {
            HedgeWinner::First => "first",
            HedgeWinner::Hedge => "hedge",
            HedgeWinner::Neither => "neither",
        }
    }
}

impl Trace {
    /// Whether an attempt failed (a failover happened, or nothing served the request).
    pub fn had_failed_attempt(&self) -> bool {
        self.attempts.iter().any(|a| a.outcome != "success")
    }
}

/// Headers as the router adds them to a response.
pub type Headers = Vec<(&'static str, String)>;

/// After the attempt loop: who answered (`x-router-provider`, `x-router-model`, and
/// `x-router-tier` when the target named a service tier; for an error, who was tried last) and, for requests the quota ledger may book (`quota`), how it booked
/// them (`x-router-quota`, `x-router-quota-calls`).
pub fn served(trace: &Trace, quota: bool) -> Headers {
    let mut out = Headers::new();
    // The attempt that answered (a hedge's loser is listed after it), else the last tried.
    let answered = trace.attempts.iter().rev().find(|a| a.outcome == "success");
    if let Some(last) = answered.or(trace.attempts.last()) {
        out.push(("x-router-provider", last.provider.clone()));
        out.push(("x-router-model", last.model.clone()));
        if let Some(tier) = &last.tier {
            out.push(("x-router-tier", tier.clone()));
        }
    }
    if quota {
        out.push(("x-router-quota", trace.booked.name().to_owned()));
        out.push(("x-router-quota-calls", trace.quota_calls.to_string()));
    }
    out
}

/// `x-router-attempts`, `x-router-failover` (key ids `with_key_ids`) and `Server-Timing` (the
/// router's phases, for browser devtools) for a request that reached the attempt loop; none for
/// one that did not.
pub fn timing(trace: &Trace, total_ms: u64, with_key_ids: bool) -> Headers {
    let Some(classify_ms) = trace.classify_ms else {
        return Headers::new();
    };
    let mut out = vec![
        ("x-router-attempts", trace.attempts.len().to_string()),
        (
            "server-timing",
            format!(
                "classify;dur={classify_ms}, quota;dur={}, upstream;dur={}, router;dur={total_ms}",
                trace.quota_ms, trace.upstream_ms
            ),
        ),
    ];
    if let Some(failover) = failover::failover_header(&trace.attempts, with_key_ids) {
        out.push(("x-router-failover", failover));
    }
    if let Some(hedged) = trace.hedged {
        let value = format!("after={}ms; won={}", hedged.after_ms, hedged.won.name());
        out.push(("x-router-hedged", value));
    }
    out
}

/// What a request was, as the log line reports it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub failure: Option<&'a RouterError>,
    pub total_ms: u64,
}

/// The request's JSON log line, and whether it is an error's (status 500 and up): what was
/// asked, how it was routed (from the response headers in `explain`), each attempt (provider,
/// model, key id, outcome, time) and the answer. Never a key, a prompt or a body; the
/// operator's own mistakes (configuration, secrets) carry the message that says how to fix
/// them. With `mode` [`RequestLog::Failures`], none for a request its first attempt served.
pub fn log_line(
    request: &Request<'_>,
    explain: &[(&'static str, String)],
    trace: &Trace,
    mode: RequestLog,
) -> Option<(String, bool)> {
    if mode == RequestLog::Failures && request.status < 400 && !trace.had_failed_attempt() {
        return None;
    }
    let header = |name: &str| {
        explain
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let failure = request.failure;
    let message = match failure {
        Some(err) if err.is_operators() => Some(err.message()),
        _ => None,
    };
    let line = Line {
        event: "request",
        quota: header("x-router-quota"),
        method: request.method,
        path: request.path,
        status: request.status,
        code: failure.and_then(RouterError::code),
        message,
        route: header("x-router-path"),
        reason: header("x-router-reason"),
        attempts: &trace.attempts,
        quota_calls: trace.quota_calls,
        hedged: trace.hedged,
        ms: request.total_ms,
    };
    // Plain fields and strings: serializing them cannot fail.
    let text = serde_json::to_string(&line).unwrap_or_default();
    Some((text, request.status >= 500))
}

/// The log line's fields, written in one pass (no map built first).
#[derive(Serialize)]
struct Line<'a> {
    event: &'static str,
    quota: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    code: Option<&'a str>,
    message: Option<String>,
    route: Option<&'a str>,
    reason: Option<&'a str>,
    attempts: &'a [Attempt],
    quota_calls: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    hedged: Option<Hedged>,
    ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn attempt(provider: &str, outcome: &'static str) -> Attempt {
        Attempt {
            provider: provider.to_owned(),
            model: "m".to_owned(),
            tier: None,
            key_id: "k1".to_owned(),
            outcome,
            ms: 3,
        }
    }

    #[test]
    fn headers_name_who_answered_and_how_it_was_booked() {
        let trace = Trace {
            classify_ms: Some(1),
            attempts: vec![
                attempt("groq", "rate_limited"),
                attempt("together", "success"),
            ],
            booked: Booked::Lease,
            ..Trace::default()
        };
        let served = served(&trace, true);
        assert_eq!(
            served,
            [
                ("x-router-provider", "together".to_owned()),
                ("x-router-model", "m".to_owned()),
                ("x-router-quota", "lease".to_owned()),
                ("x-router-quota-calls", "0".to_owned()),
            ]
        );
        let timing = super::timing(&trace, 9, false);
        assert_eq!(timing[0], ("x-router-attempts", "2".to_owned()));
        assert!(timing[1].1.ends_with("router;dur=9"));
        // Clients see who failed and how, not which key.
        assert_eq!(
            timing[2],
            ("x-router-failover", "groq/m=rate_limited".to_owned())
        );
        let for_admin = super::timing(&trace, 9, true);
        assert_eq!(
            for_admin[2],
            ("x-router-failover", "groq/m@k1=rate_limited".to_owned())
        );
        // A hedged request names the hedge, and who answered is the winner, not the attempt
        // cancelled after it.
        let hedged = Trace {
            classify_ms: Some(1),
            attempts: vec![attempt("together", "success"), attempt("groq", "cancelled")],
            hedged: Some(Hedged {
                after_ms: 92,
                won: HedgeWinner::Hedge,
            }),
            ..Trace::default()
        };
        assert_eq!(super::served(&hedged, false)[0].1, "together");
        let timing = super::timing(&hedged, 9, false);
        assert_eq!(timing.len(), 3, "{timing:?}");
        assert_eq!(
            timing[2],
            ("x-router-hedged", "after=92ms; won=hedge".to_owned())
        );
        let request = Request {
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            failure: None,
            total_ms: 120,
        };
        let (line, _) = log_line(&request, &[], &hedged, RequestLog::All).unwrap();
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            line["hedged"],
            serde_json::json!({"after_ms": 92, "won": "hedge"})
        );
        // A request refused before the attempt loop has no timing headers.
        assert!(super::timing(&Trace::default(), 9, true).is_empty());
    }

    #[test]
    fn the_log_line_reports_the_route_and_the_attempts_and_flags_errors() {
        let trace = Trace {
            attempts: vec![attempt("groq", "success")],
            ..Trace::default()
        };
        let explain = [("x-router-path", "fast".to_owned())];
        let request = Request {
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            failure: None,
            total_ms: 4,
        };
        let (line, error) = log_line(&request, &explain, &trace, RequestLog::All).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(!error);
        assert_eq!(v["route"], "fast");
        assert_eq!(v["attempts"][0]["key_id"], "k1");
        let failed = Request {
            status: 503,
            failure: Some(&RouterError::MissingSecret {
                names: vec!["GROQ_KEY".to_owned()],
            }),
            ..request
        };
        let (line, error) = log_line(&failed, &[], &trace, RequestLog::All).unwrap();
        assert!(error);
        assert!(line.contains("GROQ_KEY"), "{line}");
    }

    #[test]
    fn with_failures_only_a_request_served_at_once_writes_no_line() {
        let served = Trace {
            attempts: vec![attempt("groq", "success")],
            ..Trace::default()
        };
        let ok = Request {
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            failure: None,
            total_ms: 4,
        };
        assert!(log_line(&ok, &[], &served, RequestLog::All).is_some());
        assert!(log_line(&ok, &[], &served, RequestLog::Failures).is_none());
        // A failover that ended in a success is written: an attempt failed.
        let failover = Trace {
            attempts: vec![
                attempt("groq", "rate_limited"),
                attempt("together", "success"),
            ],
            ..Trace::default()
        };
        let (line, _) = log_line(&ok, &[], &failover, RequestLog::Failures).unwrap();
        assert!(line.contains("rate_limited"), "{line}");
        // So is any error answer, the router's own refusals (no attempt) included.
        let refused = Request {
            status: 401,
            failure: Some(&RouterError::Unauthorized { presented: true }),
            ..ok
        };
        assert!(log_line(&refused, &[], &Trace::default(), RequestLog::Failures).is_some());
    }
}
