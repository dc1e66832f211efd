//! The Worker's `fetch` handler: walks a request through the core, step by step, and does the
//! I/O in between. Every failure becomes an OpenAI-format error response here; no `Err` reaches
//! the runtime, which would answer with a bare 500.

use std::cell::RefCell;
use std::rc::Rc;

use worker::{event, Context, Env, Fetch, Method, Request, Response};

use super::http;
use super::quota as quota_object;
use crate::core::config::Target;
use crate::core::config::{Config, CONFIG_VAR};
use crate::core::endpoint::{self, Endpoint};
use crate::core::error::RouterError;
use crate::core::quota::{self, Command, Reply, Step, Ticket};
use crate::core::ratelimit::{self, Refusal, Report};
use crate::core::request::{ChatRequest, EmbeddingsRequest};
use crate::core::route::Choice;
use crate::core::{adapt, auth, classify, cors, models, outcome, route, upstream};

thread_local! {
    /// The configuration, parsed once per isolate (vars and secrets are fixed for its life).
    static CONFIG: RefCell<Option<Rc<Result<Config, RouterError>>>> = const { RefCell::new(None) };
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let method = req.method().to_string();
    let path = req.path();
    // The body, if the router refuses the request before reading it (see `http::drain`).
    let unread_body = req.inner().body();
    let declared_len = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|l| l.trim().parse::<usize>().ok());
    // Headers every response gets once the router knows them (CORS, the routing decision),
    // errors included.
    let mut explain: Vec<(&'static str, String)> = Vec::new();
    let mut resp = match serve(req, &env, &ctx, &mut explain).await {
        Ok(resp) => resp,
        Err(err) => {
            log_error(&method, &path, &err);
            if let Some(body) = unread_body {
                if declared_len.is_none_or(|l| l <= DRAIN_LIMIT) {
                    http::drain(body, DRAIN_LIMIT).await;
                }
            }
            http::error_response(&err)?
        }
    };
    http::add_headers(&mut resp, &explain)?;
    Ok(resp)
}

async fn serve(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    explain: &mut Vec<(&'static str, String)>,
) -> Result<Response, RouterError> {
    let config = config(env);
    let config = config.as_ref().as_ref().map_err(Clone::clone)?;
    // A handle on the same JS object, so the body can be read while headers are consulted.
    let headers = req.headers().clone();
    let origin = headers.get("origin").ok().flatten();
    let allowed_origin = cors::check(&config.gateway.cors, origin.as_deref())?;
    let method = req.method();
    // Every answer to an allowed origin, errors such as 404 and 405 included, is readable by
    // the page; a preflight carries its own CORS headers.
    if method != Method::Options {
        if let Some(origin) = allowed_origin {
            explain.extend(cors::response_headers(origin));
        }
    }
    let endpoint = endpoint::resolve(method.as_ref(), &req.path())?;
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

    let authorization = headers.get("authorization").ok().flatten();
    if endpoint == Endpoint::Status {
        auth::check(&config.gateway.admin, authorization.as_deref())?;
        return status(env, config).await;
    }
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
            let output = request
                .requested_output_tokens()
                .unwrap_or(config.classifier.default_output_tokens);
            let needed = request.prompt_tokens.saturating_add(output);
            // Only models with prompt caching use the prefix; hashing it costs a serialization.
            let prefix = if decision
                .targets
                .iter()
                .any(|t| quota::caches_prompts(&t.model))
            {
                quota::prefix_hash(&request)
            } else {
                0
            };
            let (choice, ticket, calls) =
                pick(env, config, &decision.targets, needed, prefix).await?;
            explain.push(("x-router-quota-calls", calls.to_string()));
            let outbound = match adapt::chat(request, choice.provider, &choice.target.model) {
                Ok(body) => body,
                Err(err) => {
                    // Nothing will be sent: give the reservation back.
                    if let Some(ticket) = ticket {
                        settle_later(ctx, env, &choice, ticket, Aftermath::Nothing);
                    }
                    return Err(err);
                }
            };
            let (result, after) = forward(
                &req,
                &choice,
                "/chat/completions",
                outbound,
                ticket.is_some(),
                explain,
            )
            .await;
            if let Some(ticket) = ticket {
                settle_later(ctx, env, &choice, ticket, after);
            }
            result
        }
        Endpoint::Embeddings => {
            let body = read_body(&mut req, config).await?;
            let request = EmbeddingsRequest::parse(&body)?;
            let choice = route::embeddings(config, &request)?;
            let outbound = adapt::embeddings(request, &choice.target.model)?;
            forward(&req, &choice, "/embeddings", outbound, false, explain)
                .await
                .0
        }
        Endpoint::Health | Endpoint::Preflight | Endpoint::Status => Err(RouterError::Internal {
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
    // Read no further than the limit: a chunked body of any size costs at most the limit.
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    http::read_capped(req.stream(), cap)
        .await?
        .map_err(|()| too_large)
}

/// The largest unread request body drained before an error answer; a larger one (a 413 by
/// `content-length`) is left to the connection.
const DRAIN_LIMIT: usize = 1 << 20;

/// The longest answer whose copy is read for its usage; a longer one settles on the estimate.
const MAX_USAGE_BODY: usize = 16 << 20;

/// How much of an upstream failure's body is read.
const MAX_FAILURE_BODY: usize = 64 * 1024;

/// What the ledger should learn once a request has its answer.
enum Aftermath {
    /// The provider answered: its rate-limit headers, and the rest of a JSON body to read the
    /// real usage from (a copy of the stream the client reads).
    Answered {
        report: Report,
        usage_body: Option<worker::web_sys::ReadableStream>,
    },
    /// A 429.
    Refused { refusal: Refusal, report: Report },
    /// A 401/403: the key is refused.
    Disabled { status: u16 },
    /// Nothing reached the provider, or it failed without spending.
    Nothing,
}

/// Sends the request upstream and hands a success through untouched; a failure's body is read
/// and mapped to the client-facing error. Also says what the ledger should learn.
async fn forward(
    client: &Request,
    choice: &Choice<'_>,
    endpoint: &str,
    body: Vec<u8>,
    reserved: bool,
    explain: &mut Vec<(&'static str, String)>,
) -> (Result<Response, RouterError>, Aftermath) {
    explain.push(("x-router-provider", choice.provider.name.clone()));
    explain.push(("x-router-model", choice.target.model.clone()));
    let accept = client.headers().get("accept").ok().flatten();
    let outbound = upstream::request(choice, endpoint, accept.as_deref());
    let request = match http::upstream_request(&outbound, body) {
        Ok(r) => r,
        Err(e) => return (Err(e), Aftermath::Nothing),
    };
    let Ok(mut resp) = Fetch::Request(request).send().await else {
        return (Err(RouterError::UpstreamUnreachable), Aftermath::Nothing);
    };
    let status = resp.status_code();
    let headers = resp.headers().clone();
    let header = |name: &str| headers.get(name).ok().flatten();
    let retry_after = header("retry-after");
    let verdict = outcome::classify(status, retry_after.as_deref());
    let report = {
        let values: Vec<(String, String)> = headers
            .entries()
            .filter(|(k, _)| k.starts_with("x-ratelimit") || k.starts_with("x-tokenlimit"))
            .collect();
        ratelimit::report(choice.provider.dialect, |name| {
            values
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        })
    };
    if verdict == outcome::Outcome::Success {
        // A JSON answer carries its usage; when a reservation waits for it, the client's stream
        // is teed so that the router reads a copy after the response is sent. Other answers and
        // event streams are handed through untouched.
        let json = reserved && header("content-type").is_some_and(|ct| ct.contains("json"));
        let (resp, usage_body) = if json {
            match http::tee(resp) {
                Ok((resp, copy)) => (Ok(resp), Some(copy)),
                Err(e) => (Err(e), None),
            }
        } else {
            (http::client_response(resp), None)
        };
        return (resp, Aftermath::Answered { report, usage_body });
    }
    // A failure body the runtime cannot read still yields the error the status implies; only
    // its start is read (a message is capped at 2 KB anyway).
    let failure_body = match http::read_capped(resp.stream(), MAX_FAILURE_BODY).await {
        Ok(Ok(bytes)) => bytes,
        _ => Vec::new(),
    };
    let after = match verdict {
        outcome::Outcome::RateLimited { .. } => Aftermath::Refused {
            refusal: ratelimit::refusal(retry_after.as_deref(), &failure_body),
            report,
        },
        outcome::Outcome::Auth => Aftermath::Disabled { status },
        outcome::Outcome::ClientError => Aftermath::Answered {
            report,
            usage_body: None,
        },
        _ => Aftermath::Nothing,
    };
    let result = match outcome::into_error(verdict, status, &failure_body, &choice.key.secret_name)
    {
        Some(err) => Err(err),
        None => http::client_response(resp),
    };
    (result, after)
}

/// Chooses the candidate and key for a request by walking the core's plan: a target whose
/// provider tracks no limits takes its first usable key; a run of targets of a provider that
/// does is booked with one call to its quota object. Returns the choice, the reservation to
/// settle, and how many quota calls were made.
async fn pick<'c>(
    env: &Env,
    config: &'c Config,
    targets: &[&'c Target],
    tokens: u64,
    prefix_hash: u64,
) -> Result<(Choice<'c>, Option<Ticket>, u32), RouterError> {
    let mut calls = 0;
    let mut earliest: Option<u64> = None;
    let mut missing: Vec<String> = Vec::new();
    let mut refused_secrets: Vec<String> = Vec::new();
    for step in quota::plan(config, targets, prefix_hash) {
        match step {
            Step::Direct(target) => match route::first_usable(config, &[target]) {
                Ok(choice) => return Ok((choice, None, calls)),
                Err(RouterError::MissingSecret { names }) => missing.extend(names),
                Err(e) => return Err(e),
            },
            Step::Reserve {
                provider,
                targets,
                options,
                candidates,
                missing_secrets,
            } => {
                missing.extend(missing_secrets);
                if candidates.is_empty() {
                    continue;
                }
                let command = Command::Reserve {
                    options,
                    tokens,
                    candidates,
                };
                calls += 1;
                // The ledger is advisory: if its object cannot be reached, the request goes on
                // with the first usable key rather than failing.
                let reply = match quota_object::call(env, &provider.name, &command).await {
                    Ok(reply) => reply,
                    Err(err) => {
                        log_error("-", "(quota reserve)", &err);
                        match route::first_usable(config, &targets) {
                            Ok(choice) => return Ok((choice, None, calls)),
                            Err(_) => continue,
                        }
                    }
                };
                match reply {
                    Reply::Reserved {
                        model,
                        key_id,
                        ticket,
                        ..
                    } => {
                        let target = targets.iter().find(|t| t.model == model);
                        let key = provider.keys.iter().find(|k| k.id == key_id);
                        if let (Some(target), Some(key)) = (target, key) {
                            if let Some(secret) = &key.value {
                                let choice = Choice {
                                    target,
                                    provider,
                                    key,
                                    secret,
                                };
                                return Ok((choice, Some(ticket), calls));
                            }
                        }
                    }
                    // No time at all: every key the object was offered is disabled (401/403).
                    Reply::NoRoom { until_ms: u64::MAX } => {
                        refused_secrets.extend(provider.keys.iter().map(|k| k.secret_name.clone()));
                    }
                    Reply::NoRoom { until_ms } => {
                        earliest = Some(earliest.map_or(until_ms, |e| e.min(until_ms)));
                    }
                    Reply::Done | Reply::Status { .. } => {}
                }
            }
        }
    }
    if let Some(until_ms) = earliest {
        let now = worker::js_sys::Date::now() as u64;
        let wait = until_ms.saturating_sub(now).div_ceil(1_000);
        return Err(RouterError::QuotaExhausted {
            retry_after_s: Some(wait.clamp(1, outcome::MAX_RETRY_AFTER_S)),
        });
    }
    if !refused_secrets.is_empty() {
        // An operator's problem, not a quota one: say which secrets hold refused keys.
        return Err(RouterError::UpstreamAuth {
            status: 401,
            secret: refused_secrets.join(", "),
        });
    }
    let mut names: Vec<String> = Vec::new();
    for name in missing {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Err(RouterError::MissingSecret { names })
}

/// `GET /v1/router/status`: the books of every provider that tracks limits, one quota call
/// each.
async fn status(env: &Env, config: &Config) -> Result<Response, RouterError> {
    let mut providers = serde_json::Map::new();
    for provider in config.providers.iter().filter(|p| !p.limits.is_empty()) {
        if let Reply::Status { now_ms, ledger } =
            quota_object::call(env, &provider.name, &Command::Status).await?
        {
            let view = quota::status_view(&ledger, &provider.limits, now_ms);
            providers.insert(provider.name.clone(), view);
        }
    }
    let body = serde_json::json!({ "providers": providers }).to_string();
    http::json_response(200, &body)
}

/// Tells the quota object what happened, after the response is sent (`wait_until`): it adds
/// no latency.
fn settle_later(ctx: &Context, env: &Env, choice: &Choice<'_>, ticket: Ticket, after: Aftermath) {
    let env = env.clone();
    let provider = choice.provider.name.clone();
    let key_id = choice.key.id.clone();
    ctx.wait_until(async move {
        let command = match after {
            Aftermath::Answered { report, usage_body } => {
                let usage = match usage_body {
                    Some(stream) => http::read_stream(&stream, MAX_USAGE_BODY)
                        .await
                        .and_then(|bytes| quota::usage_from_body(&bytes)),
                    None => None,
                };
                Command::Settle {
                    ticket,
                    usage,
                    report: Some(report),
                }
            }
            Aftermath::Refused { refusal, report } => Command::Refused {
                ticket,
                refusal,
                report: Some(report),
            },
            Aftermath::Disabled { status } => Command::Disable {
                ticket,
                key_id,
                status,
            },
            Aftermath::Nothing => Command::Release { ticket },
        };
        if let Err(err) = quota_object::call(&env, &provider, &command).await {
            log_error("-", "(quota settle)", &err);
        }
    });
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
