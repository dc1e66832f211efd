//! Every way a request can fail, and how each one looks to an OpenAI client.
//!
//! One enum holds all of the router's failures. Each variant knows its HTTP status, its OpenAI
//! `type` and `code`, and its message; the edge renders it with [`RouterError::to_json`] in one
//! place, so no `Err` ever escapes the fetch handler as a bare 500. Messages never carry a key or
//! an upstream's account details.

use serde::Serialize;

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
    /// The body is JSON but not a valid request: a missing field, a wrong type, a bad value.
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    /// The body is larger than the configured limit.
    BodyTooLarge { limit: u64 },
    /// The body did not arrive within the configured time.
    BodyTimeout { ms: u64 },
    /// The body is declared as something other than JSON.
    UnsupportedMediaType { content_type: String },
    /// No gateway key, or one that is not accepted.
    Unauthorized { presented: bool },
    /// A user token that is not accepted (forged, expired, for another audience...).
    InvalidToken { reason: String },
    /// A valid user token that does not allow this call (another origin, a model it does not
    /// list).
    TokenNotAllowed { code: &'static str, message: String },
    /// The caller (a user or gateway key) is over one of its tier's limits.
    CallerLimited {
        /// `requests per minute`, `tokens per day`, `spend per day`, ...
        limit: String,
        /// What the caller is: `user alice`, `gateway key 3f2a9c1b7d4e`.
        caller: String,
        tier: String,
        /// The limit, as a figure (`10`, `$0.50`).
        amount: String,
        retry_after_s: u64,
        budget: bool,
    },
    /// A browser origin that the configuration does not allow.
    OriginNotAllowed { origin: String },
    /// No route serves this model.
    ModelNotFound { model: String },
    /// No file or batch of this id was made through the router with the caller's key.
    NoSuchObject { kind: &'static str, id: String },
    /// Routes exist for the model, but no provider on them can serve what the request needs.
    Unsupported { model: String, needs: &'static str },
    /// Secrets the router needs are not set (any one of them would do).
    MissingSecret { names: Vec<String> },
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
    /// No candidate has quota left for this request; some will after `retry_after_s`.
    QuotaExhausted { retry_after_s: Option<u64> },
    /// The upstream refused the router's own key (401/403): a configuration problem.
    UpstreamAuth { status: u16, secret: String },
    /// The upstream failed (5xx, or a status that makes no sense for this call).
    UpstreamFailed { status: u16 },
    /// The upstream could not be reached at all.
    UpstreamUnreachable,
    /// No upstream answered within the attempt timeout or the request's deadline.
    UpstreamTimeout,
    /// Every provider that could serve the request is skipped by its circuit breaker after
    /// repeated failures; one will be probed again after `retry_after_s`.
    ProvidersUnavailable { retry_after_s: u64 },
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
            RouterError::InvalidJson { .. }
            | RouterError::InvalidRequest { .. }
            | RouterError::Unsupported { .. } => 400,
            RouterError::BodyTooLarge { .. } => 413,
            RouterError::BodyTimeout { .. } => 408,
            RouterError::UnsupportedMediaType { .. } => 415,
            RouterError::Unauthorized { .. } | RouterError::InvalidToken { .. } => 401,
            RouterError::OriginNotAllowed { .. } | RouterError::TokenNotAllowed { .. } => 403,
            RouterError::CallerLimited { .. } => 429,
            RouterError::ModelNotFound { .. } | RouterError::NoSuchObject { .. } => 404,
            RouterError::MissingSecret { .. } | RouterError::InvalidConfig { .. } => 503,
            RouterError::UpstreamRejected { status, .. } => *status,
            RouterError::QuotaExhausted { .. } => 429,
            RouterError::UpstreamAuth { .. }
            | RouterError::UpstreamFailed { .. }
            | RouterError::UpstreamUnreachable => 502,
            RouterError::UpstreamTimeout => 504,
            RouterError::ProvidersUnavailable { .. } => 503,
            RouterError::Internal { .. } => 500,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(&self) -> &str {
        match self {
            RouterError::NotFound { .. }
            | RouterError::MethodNotAllowed { .. }
            | RouterError::InvalidJson { .. }
            | RouterError::InvalidRequest { .. }
            | RouterError::BodyTooLarge { .. }
            | RouterError::BodyTimeout { .. }
            | RouterError::UnsupportedMediaType { .. }
            | RouterError::Unauthorized { .. }
            | RouterError::InvalidToken { .. }
            | RouterError::ModelNotFound { .. }
            | RouterError::NoSuchObject { .. }
            | RouterError::Unsupported { .. } => "invalid_request_error",
            RouterError::OriginNotAllowed { .. } | RouterError::TokenNotAllowed { .. } => {
                "permission_error"
            }
            RouterError::CallerLimited { .. } => "rate_limit_error",
            RouterError::MissingSecret { .. } | RouterError::InvalidConfig { .. } => {
                "configuration_error"
            }
            RouterError::UpstreamRejected { kind, .. } => kind,
            RouterError::QuotaExhausted { .. } => "rate_limit_error",
            RouterError::UpstreamAuth { .. }
            | RouterError::UpstreamFailed { .. }
            | RouterError::UpstreamUnreachable
            | RouterError::UpstreamTimeout
            | RouterError::ProvidersUnavailable { .. } => "upstream_error",
            RouterError::Internal { .. } => "server_error",
        }
    }

    /// The OpenAI error `code`: a stable, machine-readable reason.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            RouterError::NotFound { .. } => "unknown_url",
            RouterError::MethodNotAllowed { .. } => "method_not_allowed",
            RouterError::InvalidJson { .. } => "invalid_json",
            RouterError::InvalidRequest { code, .. } => code,
            RouterError::BodyTooLarge { .. } => "request_too_large",
            RouterError::BodyTimeout { .. } => "request_timeout",
            RouterError::UnsupportedMediaType { .. } => "unsupported_media_type",
            RouterError::Unauthorized { presented: false } => "missing_api_key",
            RouterError::Unauthorized { presented: true } => "invalid_api_key",
            RouterError::OriginNotAllowed { .. } => "origin_not_allowed",
            RouterError::InvalidToken { .. } => "invalid_token",
            RouterError::TokenNotAllowed { code, .. } => code,
            RouterError::CallerLimited { budget: false, .. } => "caller_rate_limited",
            RouterError::CallerLimited { budget: true, .. } => "budget_exceeded",
            RouterError::ModelNotFound { .. } => "model_not_found",
            RouterError::NoSuchObject { .. } => "not_found",
            RouterError::Unsupported { .. } => "unsupported_parameter",
            RouterError::MissingSecret { .. } => "missing_secret",
            RouterError::InvalidConfig { .. } => "invalid_config",
            RouterError::UpstreamRejected { code, .. } => return code.as_deref(),
            RouterError::QuotaExhausted { .. } => "quota_exhausted",
            RouterError::UpstreamAuth { .. } => "upstream_auth_failed",
            RouterError::UpstreamFailed { .. } => "upstream_failed",
            RouterError::UpstreamUnreachable => "upstream_unreachable",
            RouterError::UpstreamTimeout => "upstream_timeout",
            RouterError::ProvidersUnavailable { .. } => "upstream_unavailable",
            RouterError::Internal { .. } => "internal_error",
        })
    }

    /// The OpenAI error `param`: which part of the request is at fault, when one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            RouterError::UpstreamRejected { param, .. }
            | RouterError::InvalidRequest { param, .. } => param.as_deref(),
            RouterError::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// A sentence a developer can act on.
    pub fn message(&self) -> String {
        match self {
            RouterError::NotFound { method, path } => format!(
                "Unknown URL ({method} {path}). This router serves /v1/chat/completions, \
                 /v1/responses, /v1/embeddings, /v1/models, /v1/files and /v1/batches."
            ),
            RouterError::MethodNotAllowed {
                method,
                path,
                allow,
            } => format!("Method {method} is not allowed on {path}; use {allow}."),
            RouterError::InvalidJson { detail } => {
                format!("The request body must be a JSON object: {detail}.")
            }
            RouterError::InvalidRequest { message, .. } => message.clone(),
            RouterError::BodyTooLarge { limit } => {
                format!("The request body is larger than this router accepts ({limit} bytes).")
            }
            RouterError::BodyTimeout { ms } => {
                format!("The request body did not arrive within {ms} ms.")
            }
            RouterError::UnsupportedMediaType { content_type } => format!(
                "Unsupported content-type `{content_type}`; send the body as application/json."
            ),
            RouterError::Unauthorized { presented: false } => {
                "Missing key: send `Authorization: Bearer <key>` (a gateway key; the status \
                 page takes an admin key)."
                    .to_owned()
            }
            RouterError::Unauthorized { presented: true } => {
                "Invalid key for this endpoint.".to_owned()
            }
            RouterError::InvalidToken { reason } => {
                format!("The user token is not accepted: {reason}.")
            }
            RouterError::TokenNotAllowed { message, .. } => message.clone(),
            RouterError::CallerLimited {
                limit,
                caller,
                tier,
                amount,
                retry_after_s,
                budget,
            } => {
                let what = if *budget { "budget" } else { "limit" };
                format!(
                    "The {caller} is over the {limit} {what} of tier `{tier}` ({amount}); \
                     retry in {retry_after_s} s."
                )
            }
            RouterError::OriginNotAllowed { origin } => format!(
                "Origin {origin} is not allowed to call this router (gateway.cors_origins)."
            ),
            RouterError::ModelNotFound { model } => format!(
                "The model `{model}` does not exist on this router; GET /v1/models lists them."
            ),
            RouterError::NoSuchObject { kind, id } => format!(
                "No {kind} found with id `{id}`: a file or batch is seen only with the key that \
                 created it through this router."
            ),
            RouterError::Unsupported { model, needs } => format!(
                "No provider configured for `{model}` supports {needs}, which this request uses."
            ),
            RouterError::MissingSecret { names } => {
                let name = names.first().map_or("(none)", String::as_str);
                let missing = match names.as_slice() {
                    [one] => format!("{one} is not set"),
                    _ => format!("none of {} is set", names.join(", ")),
                };
                format!(
                    "The router is missing a secret: {missing}. Locally, add {name}=... to \
                     .dev.vars; when deployed, run `wrangler secret put {name}`."
                )
            }
            RouterError::InvalidConfig { path, detail } => {
                format!(
                    "The router's configuration (ROUTER_CONFIG) is invalid at {path}: {detail}."
                )
            }
            RouterError::UpstreamRejected { message, .. } => message.clone(),
            RouterError::QuotaExhausted { retry_after_s } => match retry_after_s {
                Some(s) => format!(
                    "Every provider that can serve this request is out of quota; retry in {s} s."
                ),
                None => "Every provider that can serve this request is out of quota.".to_owned(),
            },
            RouterError::UpstreamAuth { status, secret } => format!(
                "The upstream provider refused the router's API key (HTTP {status}); the \
                 operator should check the secret {secret}."
            ),
            RouterError::UpstreamFailed { status } if (200..300).contains(status) => {
                "The upstream provider answered, but with no answer: an error event, an error \
                 object or a body that is not JSON."
                    .to_owned()
            }
            RouterError::UpstreamFailed { status } => {
                format!("The upstream provider failed with HTTP {status}.")
            }
            RouterError::UpstreamUnreachable => {
                "The upstream provider could not be reached.".to_owned()
            }
            RouterError::UpstreamTimeout => {
                "No upstream provider answered within the router's deadline.".to_owned()
            }
            RouterError::ProvidersUnavailable { retry_after_s } => format!(
                "Every provider that can serve this request is failing; retry in {retry_after_s} s."
            ),
            RouterError::Internal { detail } => format!("Internal router error: {detail}."),
        }
    }

    /// Headers that belong with this error (`allow` on 405, `retry-after` on 429).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RouterError::MethodNotAllowed { allow, .. } => vec![("allow", (*allow).to_owned())],
            RouterError::QuotaExhausted {
                retry_after_s: Some(s),
            }
            | RouterError::ProvidersUnavailable { retry_after_s: s }
            | RouterError::CallerLimited {
                retry_after_s: s, ..
            } => {
                vec![("retry-after", s.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// Whether the message speaks of the operator's setup (the configuration's paths, the names
    /// of the router's secrets): told in full only to admin callers and in local development,
    /// and always in the log.
    pub fn is_operators(&self) -> bool {
        matches!(
            self,
            RouterError::InvalidConfig { .. }
                | RouterError::MissingSecret { .. }
                | RouterError::UpstreamAuth { .. }
        )
    }

    /// The message anyone may read: for the operator's errors, one that says where the detail
    /// is without giving it.
    pub fn public_message(&self) -> String {
        match self {
            RouterError::InvalidConfig { .. } => "The router's configuration is invalid; its \
                operator finds where in the router's log (or in this answer with an admin key)."
                .to_owned(),
            RouterError::MissingSecret { .. } => "The router is missing a secret; its operator \
                finds which in the router's log (or in this answer with an admin key)."
                .to_owned(),
            RouterError::UpstreamAuth { status, .. } => format!(
                "The upstream provider refused the router's own API key (HTTP {status}); its \
                 operator finds which in the router's log."
            ),
            _ => self.message(),
        }
    }

    /// The OpenAI-format JSON body, with the full message when `detailed` (see
    /// [`RouterError::is_operators`]).
    pub fn to_json_for(&self, detailed: bool) -> String {
        if detailed {
            self.to_json()
        } else {
            self.render(&self.public_message())
        }
    }

    /// The OpenAI-format JSON body.
    pub fn to_json(&self) -> String {
        self.render(&self.message())
    }

    fn render(&self, message: &str) -> String {
        let envelope = Envelope {
            error: Body {
                message,
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
                names: vec!["GROQ_API_KEY".into()],
            },
            RouterError::InvalidRequest {
                message: "m".into(),
                param: Some("messages".into()),
                code: "invalid_type",
            },
            RouterError::BodyTooLarge { limit: 10 },
            RouterError::BodyTimeout { ms: 10 },
            RouterError::UnsupportedMediaType {
                content_type: "text/plain".into(),
            },
            RouterError::Unauthorized { presented: false },
            RouterError::Unauthorized { presented: true },
            RouterError::OriginNotAllowed {
                origin: "https://evil.example".into(),
            },
            RouterError::ModelNotFound { model: "x".into() },
            RouterError::Unsupported {
                model: "fast".into(),
                needs: "logprobs",
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
            RouterError::QuotaExhausted {
                retry_after_s: Some(3),
            },
            RouterError::UpstreamAuth {
                status: 401,
                secret: "GROQ_API_KEY".into(),
            },
            RouterError::UpstreamFailed { status: 500 },
            RouterError::UpstreamFailed { status: 200 },
            RouterError::UpstreamUnreachable,
            RouterError::UpstreamTimeout,
            RouterError::ProvidersUnavailable { retry_after_s: 30 },
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
            names: vec!["GROQ_API_KEY".into(), "GROQ_API_KEY_2".into()],
        };
        let msg = e.message();
        assert!(
            msg.contains("none of GROQ_API_KEY, GROQ_API_KEY_2 is set"),
            "{msg}"
        );
        assert!(msg.contains(".dev.vars"));
        assert!(msg.contains("wrangler secret put GROQ_API_KEY`"));
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
        let e = RouterError::QuotaExhausted {
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
    fn the_operators_errors_say_where_the_detail_is_without_giving_it() {
        for err in [
            RouterError::InvalidConfig {
                path: "providers.groq.keys[0].secret".into(),
                detail: "GROQ_KEY_1 is odd".into(),
            },
            RouterError::MissingSecret {
                names: vec!["GROQ_KEY_1".into()],
            },
            RouterError::UpstreamAuth {
                status: 401,
                secret: "GROQ_KEY_1".into(),
            },
        ] {
            assert!(err.is_operators());
            let public = err.to_json_for(false);
            assert!(!public.contains("GROQ_KEY_1"), "{public}");
            assert!(!public.contains("providers."), "{public}");
            assert!(public.contains("log"), "{public}");
            assert_eq!(err.to_json_for(true), err.to_json());
            assert!(err.to_json().contains("GROQ_KEY_1"));
            // Same status and code either way: a client can still tell what went wrong.
            let v: serde_json::Value = serde_json::from_str(&public).unwrap();
            assert_eq!(v["error"]["code"], err.code().unwrap());
        }
        let other = RouterError::UpstreamTimeout;
        assert!(!other.is_operators());
        assert_eq!(other.to_json_for(false), other.to_json());
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
