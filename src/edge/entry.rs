//! The Worker's `fetch` handler: walks a request through the core, step by step, and does the
//! I/O in between. Every failure becomes an OpenAI-format error response here; no `Err` reaches
//! the runtime, which would answer with a bare 500.

use worker::{event, Context, Env, Fetch, Request, Response};

use super::http;
use crate::core::config::Settings;
use crate::core::endpoint::{self, Endpoint};
use crate::core::error::RouterError;
use crate::core::{outcome, request, upstream};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let method = req.method().to_string();
    let path = req.path();
    match handle(req, &env).await {
        Ok(resp) => Ok(resp),
        Err(err) => {
            log_error(&method, &path, &err);
            http::error_response(&err)
        }
    }
}

async fn handle(mut req: Request, env: &Env) -> Result<Response, RouterError> {
    match endpoint::resolve(req.method().as_ref(), &req.path())? {
        Endpoint::Health => http::json_response(200, r#"{"status":"ok"}"#),
        Endpoint::ChatCompletions => {
            let settings = Settings::from_lookup(|name| binding(env, name))?;
            let body = req.bytes().await.map_err(http::internal)?;
            request::check_json_object(&body)?;
            let accept = req.headers().get("accept").ok().flatten();
            let outbound = upstream::chat_completions(&settings.upstream, accept.as_deref());
            forward(&outbound, body).await
        }
    }
}

/// Sends the request upstream and hands a success through untouched; a failure's body is read
/// and mapped to the client-facing error.
async fn forward(
    outbound: &upstream::UpstreamRequest,
    body: Vec<u8>,
) -> Result<Response, RouterError> {
    let request = http::upstream_request(outbound, body)?;
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
    match outcome::into_error(verdict, status, &failure_body) {
        Some(err) => Err(err),
        None => http::client_response(resp),
    }
}

/// A var or secret, `None` when unset or not a string.
fn binding(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|v| v.to_string())
}

/// One JSON line per failed request: what and why, never a key or a body.
fn log_error(method: &str, path: &str, err: &RouterError) {
    let line = serde_json::json!({
        "event": "request_failed",
        "method": method,
        "path": path,
        "status": err.status(),
        "code": err.code(),
    });
    worker::console_error!("{line}");
}
