//! Every way a request can fail, and how each one looks to an OpenAI client.
//!
//! One enum holds all of the router's failures. Each variant knows its HTTP status, its OpenAI
//! `type` and `code`, and its message; the edge renders it with [`RouterError::to_json`] in one
//! place, so no `Err` ever escapes the fetch handler as a bare 500. Messages never carry a key or
//! an upstream's account details.

use serde::Serialize;

/// The name of the Worker secret that holds the upstream provider's API key.
pub const UPSTREAM_KEY_SECRET: &str = "UPSTREAM_API_KEY";

/// A failure, typed by who caused it: the client, the router's configuration, or the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    /// No route for this path.
    NotFound { method: String, path: String },
    /// The path exists but not for this method.
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    /// The body is not a JSON object.
    InvalidJson { detail: String },
    /// A secret the router needs is not set.
    MissingSecret { name: &'static str },
    /// A configuration value is present but unusable.
    InvalidConfig { path: String, detail: String },
    /// The upstream refused the request itself (4xx other than auth and rate limits). Its own
    /// OpenAI-format message, type, param and code are kept when it sent them.
    UpstreamRejected {
        status: u16,
        message: String,
        kind: String,
        param: Option<String>,
        code: Option<String>,
    },
    /// The upstream is rate limiting the router's key.
    UpstreamRateLimited { retry_after_s: Option<u64> },
    /// The upstream refused the router's own key (401/403): a configuration problem.
    UpstreamAuth { status: u16 },
    /// The upstream failed (5xx, or a status that makes no sense for this call).
    UpstreamFailed { status: u16 },
    /// The upstream could not be reached at all.
    UpstreamUnreachable,
    /// The runtime failed underneath the router (a JS exception in the glue).
    Internal { detail: String },
}

/// The wire shape: `{"error":{"message","type","param","code"}}`.
#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl RouterError {
    /// The HTTP status the client sees.
    pub fn status(&self) -> u16 {
        match self {
            RouterError::NotFound { .. } => 404,
            RouterError::MethodNotAllowed { .. } => 405,
            RouterError::InvalidJson { .. } => 400,
            RouterError::MissingSecret { .. } | RouterError::InvalidConfig { .. } => 503,
            RouterError::UpstreamRejected { status, .. } => *status,
            RouterError::UpstreamRateLimited { .. } => 429,
            RouterError::UpstreamAuth { .. }
            | RouterError::UpstreamFailed { .. }
            | RouterError::UpstreamUnreachable => 502,
            RouterError::Internal { .. } => 500,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(&self) -> &str {
        match self {
            RouterError::NotFound { .. }
            | RouterError::MethodNotAllowed { .. }
            | RouterError::InvalidJson { .. } => "invalid_request_error",
            RouterError::MissingSecret { .. } | RouterError::InvalidConfig { .. } => {
                "configuration_error"
            }
            RouterError::UpstreamRejected { kind, .. } => kind,
            RouterError::UpstreamRateLimited { .. } => "rate_limit_error",
            RouterError::UpstreamAuth { .. }
            | RouterError::UpstreamFailed { .. }
            | RouterError::UpstreamUnreachable => "upstream_error",
            RouterError::Internal { .. } => "server_error",
        }
    }

    /// The OpenAI error `code`: a stable, machine-readable reason.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            RouterError::NotFound { .. } => "unknown_url",
            RouterError::MethodNotAllowed { .. } => "method_not_allowed",
            RouterError::InvalidJson { .. } => "invalid_json",
            RouterError::MissingSecret { .. } => "missing_secret",
            RouterError::InvalidConfig { .. } => "invalid_config",
            RouterError::UpstreamRejected { code, .. } => return code.as_deref(),
            RouterError::UpstreamRateLimited { .. } => "rate_limit_exceeded",
            RouterError::UpstreamAuth { .. } => "upstream_auth_failed",
            RouterError::UpstreamFailed { .. } => "upstream_failed",
            RouterError::UpstreamUnreachable => "upstream_unreachable",
            RouterError::Internal { .. } => "internal_error",
        })
    }

    /// The OpenAI error `param`: which part of the request is at fault, when one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            RouterError::UpstreamRejected { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// A sentence a developer can act on.
    pub fn message(&self) -> String {
        match self {
            RouterError::NotFound { method, path } => format!(
                "Unknown URL ({method} {path}). This router serves POST /v1/chat/completions."
            ),
            RouterError::MethodNotAllowed {
                method,
                path,
                allow,
            } => format!("Method {method} is not allowed on {path}; use {allow}."),
            RouterError::InvalidJson { detail } => {
                format!("The request body must be a JSON object: {detail}.")
            }
            RouterError::MissingSecret { name } => format!(
                "The router has no provider key: the secret {name} is not set. Locally, add \
                 {name}=... to .dev.vars; when deployed, run `wrangler secret put {name}`."
            ),
            RouterError::InvalidConfig { path, detail } => {
                format!("The router's configuration is invalid at {path}: {detail}.")
            }
            RouterError::UpstreamRejected { message, .. } => message.clone(),
            RouterError::UpstreamRateLimited { retry_after_s } => match retry_after_s {
                Some(s) => format!("The upstream provider is rate limiting; retry in {s} s."),
                None => "The upstream provider is rate limiting; retry later.".to_owned(),
            },
            RouterError::UpstreamAuth { status } => format!(
                "The upstream provider refused the router's API key (HTTP {status}); the \
                 operator should check the secret {UPSTREAM_KEY_SECRET}."
            ),
            RouterError::UpstreamFailed { status } => {
                format!("The upstream provider failed with HTTP {status}.")
            }
            RouterError::UpstreamUnreachable => {
                "The upstream provider could not be reached.".to_owned()
            }
            RouterError::Internal { detail } => format!("Internal router error: {detail}."),
        }
    }

    /// Headers that belong with this error (`allow` on 405, `retry-after` on 429).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RouterError::MethodNotAllowed { allow, .. } => vec![("allow", (*allow).to_owned())],
            RouterError::UpstreamRateLimited {
                retry_after_s: Some(s),
            } => vec![("retry-after", s.to_string())],
            _ => Vec::new(),
        }
    }

    /// The OpenAI-format JSON body.
    pub fn to_json(&self) -> String {
        let message = self.message();
        let envelope = Envelope {
            error: Body {
                message: &message,
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        // Serializing plain strings cannot fail; keep a literal fallback all the same.
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#
                .to_owned()
        })
    }
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for RouterError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parsed(e: &RouterError) -> Value {
        serde_json::from_str(&e.to_json()).unwrap()
    }

    #[test]
    fn every_error_renders_the_openai_shape() {
        let all = [
            RouterError::NotFound {
                method: "GET".into(),
                path: "/x".into(),
            },
            RouterError::MethodNotAllowed {
                method: "GET".into(),
                path: "/v1/chat/completions".into(),
                allow: "POST",
            },
            RouterError::InvalidJson {
                detail: "EOF".into(),
            },
            RouterError::MissingSecret {
                name: UPSTREAM_KEY_SECRET,
            },
            RouterError::InvalidConfig {
                path: "UPSTREAM_BASE_URL".into(),
                detail: "empty".into(),
            },
            RouterError::UpstreamRejected {
                status: 400,
                message: "bad".into(),
                kind: "invalid_request_error".into(),
                param: None,
                code: None,
            },
            RouterError::UpstreamRateLimited {
                retry_after_s: None,
            },
            RouterError::UpstreamAuth { status: 401 },
            RouterError::UpstreamFailed { status: 500 },
            RouterError::UpstreamUnreachable,
            RouterError::Internal {
                detail: "js".into(),
            },
        ];
        for e in &all {
            let v = parsed(e);
            let err = v.get("error").unwrap().as_object().unwrap();
            let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["code", "message", "param", "type"], "{e:?}");
            assert!(!err["message"].as_str().unwrap().is_empty(), "{e:?}");
            assert!(!err["type"].as_str().unwrap().is_empty(), "{e:?}");
            assert!((400..600).contains(&e.status()), "{e:?}");
        }
    }

    #[test]
    fn missing_secret_names_the_secret_and_both_ways_to_set_it() {
        let e = RouterError::MissingSecret {
            name: UPSTREAM_KEY_SECRET,
        };
        let msg = e.message();
        assert!(msg.contains("UPSTREAM_API_KEY"));
        assert!(msg.contains(".dev.vars"));
        assert!(msg.contains("wrangler secret put UPSTREAM_API_KEY"));
        assert_eq!(e.status(), 503);
        assert_eq!(e.code(), Some("missing_secret"));
    }

    #[test]
    fn upstream_rejection_keeps_the_upstreams_fields() {
        let e = RouterError::UpstreamRejected {
            status: 422,
            message: "messages[0].role is invalid".into(),
            kind: "invalid_request_error".into(),
            param: Some("messages".into()),
            code: Some("invalid_value".into()),
        };
        let v = parsed(&e);
        assert_eq!(e.status(), 422);
        assert_eq!(v["error"]["message"], "messages[0].role is invalid");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["code"], "invalid_value");
    }

    #[test]
    fn null_code_and_param_render_as_null() {
        let e = RouterError::UpstreamRejected {
            status: 400,
            message: "m".into(),
            kind: "invalid_request_error".into(),
            param: None,
            code: None,
        };
        let v = parsed(&e);
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["code"].is_null());
    }

    #[test]
    fn rate_limit_carries_retry_after() {
        let e = RouterError::UpstreamRateLimited {
            retry_after_s: Some(7),
        };
        assert_eq!(e.headers(), vec![("retry-after", "7".to_owned())]);
        assert_eq!(e.status(), 429);
        assert!(e.message().contains("7 s"));
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let e = RouterError::MethodNotAllowed {
            method: "GET".into(),
            path: "/v1/chat/completions".into(),
            allow: "POST",
        };
        assert_eq!(e.headers(), vec![("allow", "POST".to_owned())]);
    }

    #[test]
    fn messages_escape_quotes_in_json() {
        let e = RouterError::InvalidJson {
            detail: "unexpected \"x\"".into(),
        };
        assert_eq!(
            parsed(&e)["error"]["message"],
            "The request body must be a JSON object: unexpected \"x\"."
        );
    }
}
