//! The Worker's `fetch` handler: walks a request through the core, step by step, and does the
//! I/O in between. Every failure becomes an OpenAI-format error response here; no `Err` reaches
//! the runtime, which would answer with a bare 500. Every request ends with one JSON log line
//! (with `gateway.log_requests = "failures"`, only errors and failovers).

use std::cell::RefCell;
use std::rc::Rc;

use worker::wasm_bindgen::JsValue;
use worker::{event, web_sys, Context, Env};

use super::attempts::{self, now_ms, Reply};
use super::quota as bank;
use super::{batch, caller, http};
use crate::core::config::{self, Config, RequestLog, ADMIN_KEYS_SECRET, LOCAL_DEV_VAR};
use crate::core::endpoint::{self, Endpoint};
use crate::core::error::RouterError;
use crate::core::job::{self, ClientHeaders, Prepared};
use crate::core::quota::{self, status as quota_status, Command, Reply as BankReply, Shard};
use crate::core::report::{self, Headers, Trace};
use crate::core::upstream::Lines;
use crate::core::{auth, classify, cors, latency, models, operator, token};

thread_local! {
    /// The configuration, parsed once per isolate (vars and secrets are fixed for its life).
    static CONFIG: RefCell<Option<Rc<Result<Config, RouterError>>>> = const { RefCell::new(None) };
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    http::sync_test_clock(&env).await;
    let started = now_ms();
    let method = req.method();
    let url = req.url();
    let path = endpoint::path_of(&url);
    // The body, if the router refuses the request before reading it (see `http::drain`).
    let unread_body = req.body();
    // The request's headers, read in one call.
    let lines = http::lines_of(&req.headers());
    let headers = Lines(&lines);
    let declared_len = headers
        .get("content-length")
        .and_then(|l| l.trim().parse::<usize>().ok());
    // Headers every response gets once the router knows them (CORS, the routing decision),
    // errors included.
    let mut explain = Headers::new();
    let mut trace = Trace {
        started_ms: started,
        ..Trace::default()
    };
    let incoming = Incoming {
        req: &req,
        method: &method,
        path,
        headers,
    };
    let result = serve(&incoming, &env, &ctx, &mut explain, &mut trace).await;
    let (reply, failure) = match result {
        Ok(reply) => (reply, None),
        Err(err) => {
            if let Some(body) = unread_body {
                if declared_len.is_none_or(|l| l <= DRAIN_LIMIT) {
                    http::drain(body, DRAIN_LIMIT, DRAIN_MS).await;
                }
            }
            explain.push(("content-type", "application/json".to_owned()));
            explain.extend(err.headers());
            let detailed = !err.is_operators() || operator_asks(&env, headers);
            (fixed(err.status(), &err.to_json_for(detailed)), Some(err))
        }
    };
    let total_ms = now_ms().saturating_sub(started);
    let key_ids = trace.had_failed_attempt() && key_ids_shown(&env, headers);
    explain.extend(report::timing(&trace, total_ms, key_ids));
    let request = report::Request {
        method: &method,
        path,
        status: reply.status,
        failure: failure.as_ref(),
        total_ms,
    };
    let mode = config(&env)
        .as_ref()
        .as_ref()
        .map_or(RequestLog::All, |c| c.gateway.log_requests);
    match report::log_line(&request, &explain, &trace, mode) {
        Some((line, true)) => web_sys::console::error_1(&line.into()),
        Some((line, false)) => web_sys::console::log_1(&line.into()),
        None => {}
    }
    http::respond(reply.status, &reply.headers, &explain, &reply.body)
        .map_err(|e| worker::Error::RustError(e.message()))
}

async fn serve(
    incoming: &Incoming<'_>,
    env: &Env,
    ctx: &Context,
    explain: &mut Headers,
    trace: &mut Trace,
) -> Result<Reply, RouterError> {
    let shared = config(env);
    let config = shared.as_ref().as_ref().map_err(Clone::clone)?;
    let (method, path) = (incoming.method, incoming.path);
    let header = |name: &str| incoming.headers.get(name);
    let origin = header("origin");
    let allowed_origin = cors::check(&config.gateway.cors, origin)?;
    // Every answer to an allowed origin, errors such as 404 and 405 included, is readable by
    // the page; a preflight carries its own CORS headers.
    if method != "OPTIONS" {
        if let Some(origin) = allowed_origin {
            explain.extend(cors::response_headers(origin));
        }
    }
    let endpoint = endpoint::resolve(method, path)?;
    let authorization = header("authorization");
    match endpoint {
        Endpoint::Preflight => {
            let requested = header("access-control-request-headers");
            // The preflight headers already carry the origin.
            explain.extend(match origin {
                Some(o) => cors::preflight_headers(o, requested),
                None => vec![("allow", "GET, POST, OPTIONS".to_owned())],
            });
            Ok(Reply {
                status: 204,
                headers: String::new(),
                body: JsValue::UNDEFINED,
            })
        }
        Endpoint::Health => Ok(json(r#"{"status":"ok"}"#, explain)),
        Endpoint::Status => {
            auth::check(&config.gateway.admin, authorization)?;
            Ok(json(&status(env, config).await?, explain))
        }
        Endpoint::Page => {
            explain.extend(operator::headers());
            Ok(fixed(200, operator::PAGE))
        }
        Endpoint::Models => {
            caller::identify(config, incoming.headers, ctx).await?;
            Ok(json(&models::list_json(config), explain))
        }
        Endpoint::Usage => {
            // An admin reads every caller's lines; anyone else their own.
            let subject = match auth::check(&config.gateway.admin, authorization) {
                Ok(()) => None,
                Err(_) => Some(
                    caller::identify(config, incoming.headers, ctx)
                        .await?
                        .subject(),
                ),
            };
            let url = incoming.req.url();
            let page = caller::usage_page(env, endpoint::query_of(&url), subject, explain).await?;
            Ok(fixed(200, &page))
        }
        Endpoint::Batch => {
            auth::check(&config.gateway.auth, authorization)?;
            batch::serve(incoming.req, method, path, incoming.headers, &shared, env).await
        }
        Endpoint::ChatCompletions | Endpoint::Embeddings | Endpoint::Responses => {
            let who = caller::identify(config, incoming.headers, ctx).await?;
            let call = Call {
                endpoint,
                config,
                env,
                ctx,
            };
            forward(incoming, call, who, explain, trace).await
        }
    }
}

/// A client's request, as the handler reads it.
struct Incoming<'r> {
    req: &'r web_sys::Request,
    method: &'r str,
    path: &'r str,
    headers: Lines<'r>,
}

/// What a forwarded request runs with.
struct Call<'a> {
    endpoint: Endpoint,
    config: &'a Config,
    env: &'a Env,
    ctx: &'a Context,
}

/// Reads, prepares and forwards a chat or embeddings request: the core prepares it, the
/// caller's limits admit it, the attempt loop finds it an answer.
async fn forward(
    incoming: &Incoming<'_>,
    call: Call<'_>,
    who: crate::core::caller::Caller,
    explain: &mut Headers,
    trace: &mut Trace,
) -> Result<Reply, RouterError> {
    let Call {
        endpoint,
        config,
        env,
        ctx,
    } = call;
    let header = |name: &str| incoming.headers.get(name);
    let declared = job::check_body(config, header("content-type"), header("content-length"))?;
    let body = read_body(incoming.req, declared, config).await?;
    let client = ClientHeaders {
        accept: header("accept"),
        path: header(classify::PATH_HEADER),
        latency_budget_ms: header(classify::BUDGET_HEADER),
    };
    // A Responses request is routed in its chat form, which lives as long as its body.
    let (native, chat_form) = match endpoint {
        Endpoint::Responses => {
            let (native, chat) = job::chat_form(&body)?;
            (Some(native), chat)
        }
        _ => (None, Vec::new()),
    };
    let Prepared {
        mut targets,
        job,
        mut payload,
        explain: decision,
    } = match native {
        Some(native) => job::prepare_responses(config, native, &chat_form, client)?,
        None => job::prepare(config, endpoint, &body, client)?,
    };
    // The payload borrows the body's bytes (message contents are never copied): both live
    // until the answer is found.
    explain.extend(decision);
    if let Some(route) = &job.latency_route {
        attempts::LATENCIES.with(|l| {
            let (l, now) = (&l.borrow(), now_ms());
            latency::order_route(config, route, &mut targets, l, job.kind, now);
        });
    }
    token::allows(who.routes(), &job.model)?;
    let held = caller::admit(env, ctx, config, who, &job, explain).await?;
    let billed = held.billed;
    trace.classify_ms = Some(now_ms().saturating_sub(trace.started_ms));
    let result = attempts::run(env, ctx, config, &targets, (&job, held), trace, |c| {
        payload.body_for(c, billed)
    })
    .await;
    explain.extend(report::served(trace, job.booked));
    result
}

/// A reply of the router's own (its headers are the router's, in `explain`).
fn fixed(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: String::new(),
        body: JsValue::from_str(body),
    }
}

/// A JSON reply of the router's own.
fn json(body: &str, explain: &mut Headers) -> Reply {
    explain.push(("content-type", "application/json".to_owned()));
    fixed(200, body)
}

/// Reads the body once: with its length `declared` (checked against the limit already), in one
/// call; otherwise keeping no more than the limit, so that a chunked body of any size costs at
/// most the limit in memory. Past it, the rest is drained like any refused body, so that the
/// client can read the 413 on a connection still in order.
async fn read_body(
    req: &web_sys::Request,
    declared: Option<u64>,
    config: &Config,
) -> Result<Vec<u8>, RouterError> {
    let ms = config.gateway.body_timeout_ms;
    if declared.is_some() {
        return http::read_whole(req, ms).await;
    }
    let limit = config.gateway.max_body_bytes;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    http::read_capped(req.body(), cap, cap.max(DRAIN_LIMIT), ms)
        .await?
        .map_err(|unread| match unread {
            http::Unread::TooLarge => RouterError::BodyTooLarge { limit },
            http::Unread::Late => RouterError::BodyTimeout { ms },
        })
}

/// Whether `x-router-failover` names key ids: when `gateway.expose_key_ids` says so, or for an
/// admin caller.
fn key_ids_shown(env: &Env, headers: Lines<'_>) -> bool {
    config(env).as_ref().as_ref().is_ok_and(|config| {
        config.gateway.expose_key_ids
            || auth::check(&config.gateway.admin, headers.get("authorization")).is_ok()
    })
}

/// Whether the caller may read the operator's own errors in full: in local development
/// (`ROUTER_LOCAL_DEV=1`), or with an admin key (checked against the admin secret as stored
/// even when the configuration itself is broken). Anyone else reads where to find them.
fn operator_asks(env: &Env, headers: Lines<'_>) -> bool {
    let var = |name: &str| env.secret(name).ok().map(|v| v.to_string());
    if config::is_local_dev(var(LOCAL_DEV_VAR).as_deref()) {
        return true;
    }
    let authorization = headers.get("authorization");
    match config(env).as_ref() {
        Ok(config) => auth::check(&config.gateway.admin, authorization).is_ok(),
        Err(_) => var(ADMIN_KEYS_SECRET).is_some_and(|h| auth::admits(&h, authorization)),
    }
}

/// The largest unread request body drained before an error answer; a larger one (a 413 by
/// `content-length`) is left to the connection.
const DRAIN_LIMIT: usize = 1 << 20;
/// How long an unread body is drained at most: a client that trickles it (one without a key
/// included) holds the invocation no longer.
const DRAIN_MS: u64 = 1_000;

/// `GET /v1/router/status`: the books of every organization of every provider that tracks
/// limits (one call to each bank), the leases out, and what this isolate holds: its leases, its
/// circuit breakers that are not closed, and the latency it learned per target.
async fn status(env: &Env, config: &Config) -> Result<String, RouterError> {
    let mut providers = serde_json::Map::new();
    for provider in config.providers.iter().filter(|p| !p.limits.is_empty()) {
        let mut ledgers = Vec::new();
        let mut now = now_ms();
        for offer in quota::offers(provider) {
            let shard = Shard::new(&provider.name, &offer.org);
            if let BankReply::Status { now_ms, ledger } =
                bank::call(env, &shard, &Command::Status).await?
            {
                now = now_ms;
                ledgers.push((offer.org.clone(), ledger));
            }
        }
        let view = bank::HOLDINGS.with(|h| {
            quota_status::provider_view(
                &provider.name,
                &provider.limits,
                &ledgers,
                now,
                &h.borrow(),
            )
        });
        providers.insert(provider.name.clone(), view);
    }
    let now = now_ms();
    let breakers = attempts::BREAKERS.with(|b| b.borrow().not_closed(now, &config.failover));
    let latency = attempts::LATENCIES.with(|l| l.borrow().status(now));
    let status = serde_json::json!({
        "now_ms": now,
        "providers": providers,
        "breakers": breakers,
        "latency": latency,
    });
    Ok(status.to_string())
}

/// The cached configuration, parsed on first use. A broken configuration is logged once and
/// answered with a clear 503 on every request, rather than crashing the isolate.
fn config(env: &Env) -> Rc<Result<Config, RouterError>> {
    CONFIG.with(|cell| {
        if let Some(cached) = cell.borrow().as_ref() {
            return Rc::clone(cached);
        }
        let parsed = Rc::new(http::load_config(env));
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
