//! The Worker's `fetch` handler: walks a request through the core, step by step, and does the
//! I/O in between. Every failure becomes an OpenAI-format error response here; no `Err` reaches
//! the runtime, which would answer with a bare 500.

use std::cell::RefCell;
use std::rc::Rc;

use worker::{event, Context, Env, Fetch, Request, Response};

use super::http;
use crate::core::config::{Config, CONFIG_VAR};
use crate::core::endpoint::{self, Endpoint};
use crate::core::error::RouterError;
use crate::core::request::{ChatRequest, EmbeddingsRequest};
use crate::core::route::Choice;
use crate::core::{adapt, auth, classify, cors, models, outcome, route, upstream};

thread_local! {
    /// The configuration, parsed once per isolate (vars and secrets are fixed for its life).
    static CONFIG: RefCell<Option<Rc<Result<Config, RouterError>>>> = const { RefCell::new(None) };
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let method = req.method().to_string();
    let path = req.path();
    // Headers every response gets once the router knows them (CORS, the routing decision),
    // errors included.
    let mut explain: Vec<(&'static str, String)> = Vec::new();
    let mut resp = match serve(req, &env, &mut explain).await {
        Ok(resp) => resp,
        Err(err) => {
            log_error(&method, &path, &err);
            http::error_response(&err)?
        }
    };
    http::add_headers(&mut resp, &explain)?;
    Ok(resp)
}

async fn serve(
    mut req: Request,
    env: &Env,
    explain: &mut Vec<(&'static str, String)>,
) -> Result<Response, RouterError> {
    let endpoint = endpoint::resolve(req.method().as_ref(), &req.path())?;
    let config = config(env);
    let config = config.as_ref().as_ref().map_err(Clone::clone)?;
    // A handle on the same JS object, so the body can be read while headers are consulted.
    let headers = req.headers().clone();
    let origin = headers.get("origin").ok().flatten();
    let allowed_origin = cors::check(&config.gateway.cors, origin.as_deref())?;

    match endpoint {
        Endpoint::Preflight => {
            let requested = headers.get("access-control-request-headers").ok().flatten();
            let preflight = match &origin {
                Some(o) => cors::preflight_headers(o, requested.as_deref()),
                None => vec![("allow", "GET, POST, OPTIONS".to_owned())],
            };
            // The preflight headers already carry the origin.
            return http::empty_response(204, &preflight);
        }
        Endpoint::Health => return http::json_response(200, r#"{"status":"ok"}"#),
        _ => {}
    }

    if let Some(origin) = allowed_origin {
        explain.extend(cors::response_headers(origin));
    }
    let authorization = headers.get("authorization").ok().flatten();
    auth::check(&config.gateway.auth, authorization.as_deref())?;

    match endpoint {
        Endpoint::Models => http::json_response(200, &models::list_json(config)),
        Endpoint::ChatCompletions => {
            let body = read_body(&mut req, config).await?;
            let request = ChatRequest::parse(&body)?;
            let path_hint = headers.get(classify::PATH_HEADER).ok().flatten();
            let budget_hint = headers.get(classify::BUDGET_HEADER).ok().flatten();
            let hints = classify::Hints {
                path: path_hint.as_deref(),
                latency_budget_ms: budget_hint.as_deref(),
            };
            let decision = classify::classify(config, &request, hints)?;
            explain.push(("x-router-path", decision.path.name().to_owned()));
            explain.push(("x-router-reason", decision.reason_header()));
            let choice = route::first_usable(config, &decision.targets)?;
            let outbound = adapt::chat(request, choice.provider, &choice.target.model)?;
            forward(&req, &choice, "/chat/completions", outbound, explain).await
        }
        Endpoint::Embeddings => {
            let body = read_body(&mut req, config).await?;
            let request = EmbeddingsRequest::parse(&body)?;
            let choice = route::embeddings(config, &request)?;
            let outbound = adapt::embeddings(request, &choice.target.model)?;
            forward(&req, &choice, "/embeddings", outbound, explain).await
        }
        Endpoint::Health | Endpoint::Preflight => Err(RouterError::Internal {
            detail: "endpoint answered above".to_owned(),
        }),
    }
}

/// Reads the body once, refusing a non-JSON content type (415) and anything over the limit
/// (413), by `content-length` before reading when the client sent one.
async fn read_body(req: &mut Request, config: &Config) -> Result<Vec<u8>, RouterError> {
    let headers = req.headers();
    if let Some(ct) = headers.get("content-type").ok().flatten() {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(RouterError::UnsupportedMediaType {
                content_type: media.chars().take(100).collect(),
            });
        }
    }
    let limit = config.gateway.max_body_bytes;
    let too_large = RouterError::BodyTooLarge { limit };
    let declared = headers.get("content-length").ok().flatten();
    if declared
        .and_then(|l| l.trim().parse::<u64>().ok())
        .is_some_and(|l| l > limit)
    {
        return Err(too_large);
    }
    let body = req.bytes().await.map_err(http::internal)?;
    if body.len() as u64 > limit {
        return Err(too_large);
    }
    Ok(body)
}

/// Sends the request upstream and hands a success through untouched; a failure's body is read
/// and mapped to the client-facing error.
async fn forward(
    client: &Request,
    choice: &Choice<'_>,
    endpoint: &str,
    body: Vec<u8>,
    explain: &mut Vec<(&'static str, String)>,
) -> Result<Response, RouterError> {
    explain.push(("x-router-provider", choice.provider.name.clone()));
    explain.push(("x-router-model", choice.target.model.clone()));
    let accept = client.headers().get("accept").ok().flatten();
    let outbound = upstream::request(choice, endpoint, accept.as_deref());
    let request = http::upstream_request(&outbound, body)?;
    let mut resp = Fetch::Request(request)
        .send()
        .await
        .map_err(|_| RouterError::UpstreamUnreachable)?;
    let status = resp.status_code();
    let retry_after = resp.headers().get("retry-after").ok().flatten();
    let verdict = outcome::classify(status, retry_after.as_deref());
    if verdict == outcome::Outcome::Success {
        return http::client_response(resp);
    }
    // A failure body the runtime cannot read still yields the error the status implies.
    let failure_body = resp.bytes().await.unwrap_or_default();
    match outcome::into_error(verdict, status, &failure_body, &choice.key.secret_name) {
        Some(err) => Err(err),
        None => http::client_response(resp),
    }
}

/// The cached configuration, parsed on first use. A broken configuration is logged once and
/// answered with a clear 503 on every request, rather than crashing the isolate.
fn config(env: &Env) -> Rc<Result<Config, RouterError>> {
    CONFIG.with(|cell| {
        if let Some(cached) = cell.borrow().as_ref() {
            return Rc::clone(cached);
        }
        let parsed = Rc::new(load_config(env));
        if let Err(err) = parsed.as_ref() {
            log_error("-", "(configuration)", err);
        }
        *cell.borrow_mut() = Some(Rc::clone(&parsed));
        parsed
    })
}

fn load_config(env: &Env) -> Result<Config, RouterError> {
    let text = http::config_text(env, CONFIG_VAR)?.ok_or_else(|| RouterError::InvalidConfig {
        path: CONFIG_VAR.to_owned(),
        detail: "it is not set; define it in wrangler.toml [vars] (see docs/configuration.md)"
            .to_owned(),
    })?;
    Config::parse(&text, |name| env.secret(name).ok().map(|v| v.to_string())).map_err(|e| {
        RouterError::InvalidConfig {
            path: e.path,
            detail: e.detail,
        }
    })
}

/// One JSON line per failed request: what and why, never a key or a body. The operator's own
/// mistakes (configuration, secrets) carry the message that says how to fix them.
fn log_error(method: &str, path: &str, err: &RouterError) {
    let message = match err {
        RouterError::InvalidConfig { .. } | RouterError::MissingSecret { .. } => {
            Some(err.message())
        }
        _ => None,
    };
    let line = serde_json::json!({
        "event": "request_failed",
        "method": method,
        "path": path,
        "status": err.status(),
        "code": err.code(),
        "message": message,
    });
    worker::console_error!("{line}");
}
