//! Step 3: browsers. Which origins may call, what a preflight answers, and which of the router's
//! headers scripts may read. Requests without an `Origin` (servers, SDKs, curl) are not
//! browser requests and pass.

use super::config::CorsOrigins;
use super::error::RouterError;

/// Response headers a script may read: the router's explanations and the rate-limit hints.
pub const EXPOSED_HEADERS: &str = "retry-after, x-request-id, x-router-provider, x-router-model, \
x-router-path, x-router-reason, x-router-attempts, x-router-failover, x-router-quota, \
x-router-quota-calls, x-router-tier, server-timing";

const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";
const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type, accept";

/// Checks a request's `Origin`; `Ok(Some(origin))` for an allowed browser origin.
pub fn check<'a>(
    allowed: &CorsOrigins,
    origin: Option<&'a str>,
) -> Result<Option<&'a str>, RouterError> {
    match origin {
        None => Ok(None),
        Some(o) if allowed.allows(o) => Ok(Some(o)),
        Some(o) => Err(RouterError::OriginNotAllowed {
            origin: o.chars().take(200).collect(),
        }),
    }
}

/// Headers for every response to an allowed origin.
pub fn response_headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-expose-headers", EXPOSED_HEADERS.to_owned()),
        ("vary", "Origin".to_owned()),
    ]
}

/// Headers for a preflight answer. The requested headers are echoed when they are plain
/// header names (SDKs send their own `x-*` headers), else a fixed list is allowed.
pub fn preflight_headers(
    origin: &str,
    requested_headers: Option<&str>,
) -> Vec<(&'static str, String)> {
    let allow_headers = requested_headers
        .map(str::trim)
        .filter(|h| !h.is_empty() && h.len() <= 2_000 && h.split(',').all(|n| is_token(n.trim())))
        .unwrap_or(DEFAULT_ALLOWED_HEADERS);
    vec![
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-allow-methods", ALLOWED_METHODS.to_owned()),
        ("access-control-allow-headers", allow_headers.to_owned()),
        ("access-control-max-age", "86400".to_owned()),
        ("vary", "Origin".to_owned()),
    ]
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> CorsOrigins {
        CorsOrigins::List(vec![
            "https://app.example".into(),
            "http://127.0.0.1:5173".into(),
        ])
    }

    #[test]
    fn origin_check() {
        assert_eq!(check(&list(), None), Ok(None));
        assert_eq!(
            check(&list(), Some("https://app.example")),
            Ok(Some("https://app.example"))
        );
        assert_eq!(
            check(&list(), Some("http://127.0.0.1:5173")),
            Ok(Some("http://127.0.0.1:5173"))
        );
        for bad in [
            "https://app.example.evil",
            "http://app.example",
            "null",
            "https://APP.example",
        ] {
            assert_eq!(
                check(&list(), Some(bad)).unwrap_err().status(),
                403,
                "{bad}"
            );
        }
        assert_eq!(check(&CorsOrigins::Any, Some("null")), Ok(Some("null")));
        assert!(check(&CorsOrigins::List(vec![]), Some("https://app.example")).is_err());
    }

    #[test]
    fn preflight_echoes_plain_header_names_only() {
        let h = preflight_headers(
            "https://app.example",
            Some("authorization, content-type, x-stainless-os"),
        );
        assert!(h.contains(&(
            "access-control-allow-headers",
            "authorization, content-type, x-stainless-os".into()
        )));
        assert!(h.contains(&("access-control-allow-origin", "https://app.example".into())));
        let h = preflight_headers("https://app.example", Some("bad header\r\nx: y"));
        assert!(h.contains(&(
            "access-control-allow-headers",
            DEFAULT_ALLOWED_HEADERS.into()
        )));
        let h = preflight_headers("https://app.example", None);
        assert!(h.contains(&(
            "access-control-allow-headers",
            DEFAULT_ALLOWED_HEADERS.into()
        )));
    }

    #[test]
    fn exposes_the_router_headers() {
        let h = response_headers("https://app.example");
        let exposed = &h
            .iter()
            .find(|(k, _)| *k == "access-control-expose-headers")
            .unwrap()
            .1;
        for name in [
            "retry-after",
            "x-router-provider",
            "x-router-model",
            "server-timing",
        ] {
            assert!(exposed.contains(name), "{name}");
        }
    }
}
