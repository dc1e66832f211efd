//! The Worker's `fetch` handler: walks a request through the core, step by step, and does the
//! I/O in between. Every failure becomes an OpenAI-format error response here; no `Err` reaches
//! the runtime, which would answer with a bare 500. Every request ends with one JSON log line.

use std::cell::RefCell;
use std::rc::Rc;

use worker::wasm_bindgen::JsValue;
use worker::{event, web_sys, Context, Env};

use super::attempts::{self, now_ms, Job, Reply, Trace};
use super::http;
use super::quota as quota_object;
use crate::core::config::{Config, CONFIG_VAR};
use crate::core::endpoint::{self, Endpoint};
use crate::core::error::RouterError;
use crate::core::failover;
use crate::core::quota::{self, status as quota_status, Command, Reply as BankReply, Shard};
use crate::core::request::{ChatRequest, EmbeddingsRequest};
use crate::core::{adapt, auth, classify, cors, models, route};

thread_local! {
    /// The configuration, parsed once per isolate (vars and secrets are fixed for its life).
    static CONFIG: RefCell<Option<Rc<Result<Config, RouterError>>>> = const { RefCell::new(None) };
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let started = now_ms();
    let method = req.method();
    let path = path_of(&req.url());
    let headers = req.headers();
    // The body, if the router refuses the request before reading it (see `http::drain`).
    let unread_body = req.body();
    let declared_len =
        http::header(&headers, "content-length").and_then(|l| l.trim().parse::<usize>().ok());
    // Headers every response gets once the router knows them (CORS, the routing decision),
    // errors included.
    let mut explain: Vec<(&'static str, String)> = Vec::new();
    let mut trace = Trace {
        started_ms: started,
        ..Trace::default()
    };
    let result = serve(&req, &method, &path, &env, &ctx, &mut explain, &mut trace).await;
    let (reply, failure) = match result {
        Ok(reply) => (reply, None),
        Err(err) => {
            if let Some(body) = unread_body {
                if declared_len.is_none_or(|l| l <= DRAIN_LIMIT) {
                    http::drain(body, DRAIN_LIMIT).await;
                }
            }
            explain.push(("content-type", "application/json".to_owned()));
            explain.extend(err.headers());
            (
                fixed(err.status(), JsValue::from_str(&err.to_json())),
                Some(err),
            )
        }
    };
    let total_ms = now_ms().saturating_sub(started);
    explain.extend(trace_headers(&trace, total_ms));
    log_request(
        &method,
        &path,
        reply.status,
        failure.as_ref(),
        &explain,
        &trace,
        total_ms,
    );
    http::respond(reply.status, &reply.headers, &explain, &reply.body)
        .map_err(|e| worker::Error::RustError(e.message()))
}

/// The path of a request URL (`https://host/v1/chat/completions?x` → `/v1/chat/completions`).
fn path_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("/").to_owned()
}

async fn serve(
    req: &web_sys::Request,
    method: &str,
    path: &str,
    env: &Env,
    ctx: &Context,
    explain: &mut Vec<(&'static str, String)>,
    trace: &mut Trace,
) -> Result<Reply, RouterError> {
    let config = config(env);
    let config = config.as_ref().as_ref().map_err(Clone::clone)?;
    let headers = req.headers();
    let header = |name: &str| http::header(&headers, name);
    let origin = header("origin");
    let allowed_origin = cors::check(&config.gateway.cors, origin.as_deref())?;
    // Every answer to an allowed origin, errors such as 404 and 405 included, is readable by
    // the page; a preflight carries its own CORS headers.
    if method != "OPTIONS" {
        if let Some(origin) = allowed_origin {
            explain.extend(cors::response_headers(origin));
        }
    }
    let endpoint = endpoint::resolve(method, path)?;
    match endpoint {
        Endpoint::Preflight => {
            let requested = header("access-control-request-headers");
            // The preflight headers already carry the origin.
            explain.extend(match &origin {
                Some(o) => cors::preflight_headers(o, requested.as_deref()),
                None => vec![("allow", "GET, POST, OPTIONS".to_owned())],
            });
            return Ok(fixed(204, JsValue::UNDEFINED));
        }
        Endpoint::Health => return Ok(json(r#"{"status":"ok"}"#, explain)),
        _ => {}
    }

    let authorization = header("authorization");
    if endpoint == Endpoint::Status {
        auth::check(&config.gateway.admin, authorization.as_deref())?;
        return Ok(json(&status(env, config).await?, explain));
    }
    auth::check(&config.gateway.auth, authorization.as_deref())?;

    match endpoint {
        Endpoint::Models => Ok(json(&models::list_json(config), explain)),
        Endpoint::ChatCompletions => {
            let body = read_body(req, &header, config).await?;
            let mut request = ChatRequest::parse(&body)?;
            drop(body);
            let path_hint = header(classify::PATH_HEADER);
            let budget_hint = header(classify::BUDGET_HEADER);
            let hints = classify::Hints {
                path: path_hint.as_deref(),
                latency_budget_ms: budget_hint.as_deref(),
            };
            let decision = classify::classify(config, &request, hints)?;
            explain.push(("x-router-path", decision.path.name().to_owned()));
            explain.push(("x-router-reason", decision.reason_header()));
            let output = request
                .requested_output_tokens()
                .unwrap_or(config.classifier.default_output_tokens);
            // Only models with prompt caching use the prefix; hashing it costs a serialization.
            let prefix_hash = if decision
                .targets
                .iter()
                .any(|t| quota::caches_prompts(&t.model))
            {
                quota::prefix_hash(&request)
            } else {
                0
            };
            let job = Job {
                endpoint: "/chat/completions",
                accept: header("accept"),
                tokens: request.prompt_tokens.saturating_add(output),
                prefix_hash,
                deadline_ms: deadline_ms(config, budget_hint.as_deref()),
            };
            trace.classify_ms = Some(now_ms().saturating_sub(trace.started_ms));
            let result = attempts::run(env, ctx, config, &decision.targets, &job, trace, |c| {
                adapt::chat(&mut request, c.provider, &c.target.model)
            })
            .await;
            explain.extend(served_by(trace));
            explain.push(("x-router-quota", trace.booked.name().to_owned()));
            explain.push(("x-router-quota-calls", trace.quota_calls.to_string()));
            result
        }
        Endpoint::Embeddings => {
            let body = read_body(req, &header, config).await?;
            let mut request = EmbeddingsRequest::parse(&body)?;
            drop(body);
            let targets = route::embeddings(config, &request)?;
            let budget_hint = header(classify::BUDGET_HEADER);
            let job = Job {
                endpoint: "/embeddings",
                accept: header("accept"),
                tokens: 0,
                prefix_hash: 0,
                deadline_ms: deadline_ms(config, budget_hint.as_deref()),
            };
            trace.classify_ms = Some(now_ms().saturating_sub(trace.started_ms));
            let result = attempts::run(env, ctx, config, &targets, &job, trace, |c| {
                adapt::embeddings(&mut request, &c.target.model)
            })
            .await;
            explain.extend(served_by(trace));
            result
        }
        Endpoint::Health | Endpoint::Preflight | Endpoint::Status => Err(RouterError::Internal {
            detail: "endpoint answered above".to_owned(),
        }),
    }
}

/// A reply of the router's own; its headers are the router's (`explain`).
fn fixed(status: u16, body: JsValue) -> Reply {
    Reply {
        status,
        headers: String::new(),
        body,
    }
}

/// A JSON reply of the router's own.
fn json(body: &str, explain: &mut Vec<(&'static str, String)>) -> Reply {
    explain.push(("content-type", "application/json".to_owned()));
    fixed(200, JsValue::from_str(body))
}

/// Reads the body once, refusing a non-JSON content type (415) and anything over the limit
/// (413), by `content-length` before reading when the client sent one.
async fn read_body(
    req: &web_sys::Request,
    header: &impl Fn(&str) -> Option<String>,
    config: &Config,
) -> Result<Vec<u8>, RouterError> {
    if let Some(ct) = header("content-type") {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(RouterError::UnsupportedMediaType {
                content_type: media.chars().take(100).collect(),
            });
        }
    }
    let limit = config.gateway.max_body_bytes;
    let too_large = RouterError::BodyTooLarge { limit };
    let declared = header("content-length").and_then(|l| l.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => return Err(too_large),
        // Its length known and within the limit: one read.
        Some(_) => return http::read_whole(req).await,
        None => {}
    }
    // Keep no more than the limit: a chunked body of any size costs at most the limit in
    // memory. Past it, the rest is drained like any refused body, so that the client can read
    // the 413 on a connection still in order.
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    http::read_capped(req.body(), cap, cap.max(DRAIN_LIMIT))
        .await?
        .map_err(|()| too_large)
}

/// The largest unread request body drained before an error answer; a larger one (a 413 by
/// `content-length`) is left to the connection.
const DRAIN_LIMIT: usize = 1 << 20;

/// `GET /v1/router/status`: the books of every organization of every provider that tracks
/// limits (one call to each bank), the leases out, and what this isolate holds.
async fn status(env: &Env, config: &Config) -> Result<String, RouterError> {
    let mut providers = serde_json::Map::new();
    for provider in config.providers.iter().filter(|p| !p.limits.is_empty()) {
        let mut orgs = serde_json::Map::new();
        let mut blocked = Vec::new();
        let mut now = now_ms();
        for offer in quota::offers(provider) {
            let shard = Shard::new(&provider.name, &offer.org);
            if let BankReply::Status { now_ms, ledger } =
                quota_object::call(env, &shard, &Command::Status).await?
            {
                now = now_ms;
                let view = quota_status::org_view(&ledger, &provider.limits, now_ms);
                orgs.insert(offer.org.clone(), view);
                blocked.extend(quota_status::blocked_keys(&ledger, now_ms));
            }
        }
        let (holder, leases) = quota_object::HOLDINGS.with(|h| {
            let h = h.borrow();
            let leases: Vec<serde_json::Value> = h
                .leases(&provider.name)
                .into_iter()
                .map(|(org, l)| {
                    serde_json::json!({
                        "organization": org,
                        "model": l.model,
                        "requests_left": l.requests_left,
                        "tokens_left": l.tokens_left,
                        "expires_at_ms": l.expires_at_ms,
                    })
                })
                .collect();
            (h.holder().to_owned(), leases)
        });
        providers.insert(
            provider.name.clone(),
            serde_json::json!({
                "now_ms": now,
                "organizations": orgs,
                "disabled_keys": blocked,
                "isolate": {"holder": holder, "leases": leases},
            }),
        );
    }
    Ok(serde_json::json!({ "providers": providers }).to_string())
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
            let line = serde_json::json!({
                "event": "configuration_invalid",
                "code": err.code(),
                "message": err.message(),
            });
            worker::console_error!("{line}");
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

/// The request's deadline: the configured one, shortened by the client's latency budget.
fn deadline_ms(config: &Config, budget_header: Option<&str>) -> u64 {
    let deadline = config.failover.deadline_ms;
    classify::latency_budget_ms(budget_header)
        .filter(|b| *b > 0)
        .map_or(deadline, |b| b.min(deadline))
}

/// `x-router-provider` and `x-router-model`: who answered (or, for an error, who was tried
/// last).
fn served_by(trace: &Trace) -> Vec<(&'static str, String)> {
    match trace.attempts.last() {
        Some(last) => vec![
            ("x-router-provider", last.provider.clone()),
            ("x-router-model", last.model.clone()),
        ],
        None => Vec::new(),
    }
}

/// `x-router-attempts`, `x-router-failover` and `Server-Timing` (the router's phases, for
/// browser devtools) for a request that reached the attempt loop.
fn trace_headers(trace: &Trace, total_ms: u64) -> Vec<(&'static str, String)> {
    let Some(classify_ms) = trace.classify_ms else {
        return Vec::new();
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
    if let Some(failover) = failover::failover_header(&trace.attempts) {
        out.push(("x-router-failover", failover));
    }
    out
}

/// One JSON line per request: what was asked, how it was routed, each attempt (provider, model,
/// key id, outcome, time) and the answer. Never a key, a prompt or a body; the operator's own
/// mistakes (configuration, secrets) carry the message that says how to fix them.
fn log_request(
    method: &str,
    path: &str,
    status: u16,
    failure: Option<&RouterError>,
    explain: &[(&'static str, String)],
    trace: &Trace,
    total_ms: u64,
) {
    let header = |name: &str| {
        explain
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let message = match failure {
        Some(err @ (RouterError::InvalidConfig { .. } | RouterError::MissingSecret { .. })) => {
            Some(err.message())
        }
        _ => None,
    };
    let line = serde_json::json!({
        "event": "request",
        "quota": header("x-router-quota"),
        "method": method,
        "path": path,
        "status": status,
        "code": failure.and_then(RouterError::code),
        "message": message,
        "route": header("x-router-path"),
        "reason": header("x-router-reason"),
        "attempts": trace.attempts,
        "quota_calls": trace.quota_calls,
        "ms": total_ms,
    });
    if status >= 500 {
        worker::console_error!("{line}");
    } else {
        worker::console_log!("{line}");
    }
}
