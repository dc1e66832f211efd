//! Step 1 of a request's journey: which of the router's endpoints a method and path name.
//!
//! Matching is exact on the path (no query string reaches here). An unknown path is a 404 and a
//! known path with the wrong method a 405 with `allow`, both in the OpenAI error format.
//! `OPTIONS` on any known path is a CORS preflight.

use super::error::RouterError;

/// The endpoints the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`: forwarded upstream.
    ChatCompletions,
    /// `POST /v1/embeddings`: forwarded to a provider with embeddings.
    Embeddings,
    /// `POST /v1/responses`: OpenAI's Responses API, passed to providers that serve it and
    /// translated for the others (`core::responses`).
    Responses,
    /// `GET /v1/models`: the models the configuration offers.
    Models,
    /// `GET /healthz`: liveness, answered by the router itself, without auth.
    Health,
    /// `GET /v1/router/status`: the quota books, for operators (admin key).
    Status,
    /// `GET /v1/router/usage`: the usage books (every caller's with an admin key, the
    /// caller's own otherwise).
    Usage,
    /// `GET /router`: the operator page, which reads the status (and usage) with the admin key
    /// its reader types in; the page itself carries no data and needs no key.
    Page,
    /// `/v1/files...` and `/v1/batches...`: the Batch API, passed to a provider
    /// (`core::batch` names the call).
    Batch,
    /// `OPTIONS` on any route: a CORS preflight.
    Preflight,
}

/// Every route: path, method it accepts, endpoint.
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("/v1/chat/completions", "POST", Endpoint::ChatCompletions),
    ("/v1/embeddings", "POST", Endpoint::Embeddings),
    ("/v1/responses", "POST", Endpoint::Responses),
    ("/v1/models", "GET", Endpoint::Models),
    ("/healthz", "GET", Endpoint::Health),
    ("/v1/router/status", "GET", Endpoint::Status),
    ("/v1/router/usage", "GET", Endpoint::Usage),
    ("/router", "GET", Endpoint::Page),
];

/// The path of a request URL (`https://host/v1/chat/completions?x` → `/v1/chat/completions`).
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("/")
}

/// The query string of a request URL, without its `?` (empty when there is none).
pub fn query_of(url: &str) -> &str {
    let url = url.split('#').next().unwrap_or(url);
    url.split_once('?').map_or("", |(_, q)| q)
}

/// Resolves a request line to an endpoint, or to the 404/405 the client should see.
pub fn resolve(method: &str, path: &str) -> Result<Endpoint, RouterError> {
    if super::batch::is_batch_path(path) {
        return Ok(match method {
            "OPTIONS" => Endpoint::Preflight,
            _ => Endpoint::Batch,
        });
    }
    let Some(&(_, allow, endpoint)) = ROUTES.iter().find(|(p, _, _)| *p == path) else {
        return Err(RouterError::NotFound {
            method: method.to_owned(),
            path: path.to_owned(),
        });
    };
    if method == "OPTIONS" {
        return Ok(Endpoint::Preflight);
    }
    allowed(method, path, allow).map(|()| endpoint)
}

/// Whether `method` may call a path that takes `allow`; else the 405 with `allow`. HEAD is GET
/// without a body (the runtime drops the body for us).
pub fn allowed(method: &str, path: &str, allow: &'static str) -> Result<(), RouterError> {
    if method == allow || (allow == "GET" && method == "HEAD") {
        Ok(())
    } else {
        Err(RouterError::MethodNotAllowed {
            method: method.to_owned(),
            path: path.to_owned(),
            allow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_of_a_url() {
        assert_eq!(
            path_of("https://r.example/v1/chat/completions?x=1"),
            "/v1/chat/completions"
        );
        assert_eq!(path_of("http://127.0.0.1:8787/healthz#top"), "/healthz");
        assert_eq!(path_of("https://r.example"), "/");
    }

    #[test]
    fn routes_table() {
        let cases: &[(&str, &str, Result<Endpoint, u16>)] = &[
            (
                "POST",
                "/v1/chat/completions",
                Ok(Endpoint::ChatCompletions),
            ),
            ("GET", "/healthz", Ok(Endpoint::Health)),
            ("HEAD", "/healthz", Ok(Endpoint::Health)),
            ("GET", "/v1/chat/completions", Err(405)),
            ("PUT", "/v1/chat/completions", Err(405)),
            ("HEAD", "/v1/chat/completions", Err(405)),
            ("POST", "/healthz", Err(405)),
            ("POST", "/v1/embeddings", Ok(Endpoint::Embeddings)),
            ("GET", "/v1/embeddings", Err(405)),
            ("GET", "/v1/models", Ok(Endpoint::Models)),
            ("POST", "/v1/models", Err(405)),
            ("OPTIONS", "/v1/chat/completions", Ok(Endpoint::Preflight)),
            ("OPTIONS", "/v1/models", Ok(Endpoint::Preflight)),
            ("OPTIONS", "/nope", Err(404)),
            ("GET", "/v1/router/status", Ok(Endpoint::Status)),
            ("POST", "/v1/router/status", Err(405)),
            ("GET", "/router", Ok(Endpoint::Page)),
            ("HEAD", "/router", Ok(Endpoint::Page)),
            ("POST", "/router", Err(405)),
            ("OPTIONS", "/router", Ok(Endpoint::Preflight)),
            ("GET", "/router/", Err(404)),
            ("POST", "/v1/chat/completions/", Err(404)),
            ("POST", "/chat/completions", Err(404)),
            ("POST", "/v1/completions", Err(404)),
            ("GET", "/", Err(404)),
            ("GET", "", Err(404)),
        ];
        for (method, path, want) in cases {
            let got = resolve(method, path).map_err(|e| e.status());
            assert_eq!(&got, want, "{method} {path}");
        }
    }

    #[test]
    fn method_not_allowed_names_the_allowed_method() {
        let err = resolve("GET", "/v1/chat/completions").unwrap_err();
        assert_eq!(err.headers(), vec![("allow", "POST".to_owned())]);
        assert!(err.message().contains("use POST"));
    }

    #[test]
    fn not_found_names_the_request_line() {
        let err = resolve("DELETE", "/nope").unwrap_err();
        assert_eq!(err.code(), Some("unknown_url"));
        assert!(err.message().contains("DELETE /nope"));
    }
}
