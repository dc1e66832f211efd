//! The Batch API at the edge: each call passed to the provider that holds the file or batch,
//! with the router's key; an upload streamed there through the core's rewriter; and the
//! registry, a Durable Object per owner that remembers which provider and key made each file
//! and batch (so that later calls go to the same place, and nobody else's key finds them).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen_futures::JsFuture;
use worker::wasm_bindgen::{self, closure::Closure, prelude::wasm_bindgen, JsCast, JsValue};
use worker::{
    durable_object, js_sys, web_sys, DurableObject, Env, Request, Response, Result, State,
};

use super::attempts::Reply;
use super::http;
use crate::core::batch::{self, BatchIds, Call, Command, Kind, Record, Upload};
use crate::core::config::{Config, GatewayAuth, Provider, Secret};
use crate::core::error::RouterError;
use crate::core::upstream::Lines;

#[wasm_bindgen(module = "/src/edge/batch.js")]
extern "C" {
    #[wasm_bindgen(js_name = relay)]
    fn relay_js(method: &str, url: &str, lines: &str, body: &JsValue, ms: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_name = sourceOf)]
    fn source_of(body: &web_sys::ReadableStream) -> JsValue;
    #[wasm_bindgen(js_name = nextChunkWithin)]
    fn next_chunk_within(source: &JsValue, ms: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_name = drainSource)]
    fn drain_source(source: &JsValue, cap: f64, ms: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_name = upload)]
    fn upload_js(
        url: &str,
        lines: &str,
        source: &JsValue,
        first: &js_sys::Uint8Array,
        step: &Closure<Step>,
        ms: f64,
    ) -> js_sys::Promise;
}

/// The rewriter as the runtime calls it for each chunk of an upload (see `upload` in
/// batch.js): a chunk, `undefined` at the end or `null` to go on; the buffer to write into;
/// the bytes written, or -1 for a refused line.
type Step = dyn FnMut(JsValue, js_sys::Uint8Array) -> f64;

/// The binding name of the registries in wrangler.toml.
pub const BINDING: &str = "BATCHES";
/// How long an upload may take, from its first byte to the provider's answer.
const UPLOAD_MS: u64 = 15 * 60 * 1_000;
/// How long any other call may wait for the provider's headers.
const CALL_MS: u64 = 60_000;
/// The most of a provider's JSON answer (a file or batch object, a failure) that is read.
const MAX_ANSWER: usize = 1 << 20;
/// The largest body of a create call.
const MAX_CREATE: usize = 64 << 10;
/// What is left of a refused upload is read and dropped up to this much, for this long, so that
/// the client reads the 400 rather than a broken connection.
const DRAIN_BYTES: f64 = (1 << 20) as f64;
const DRAIN_MS: f64 = 1_000.0;

/// A call of the Batch API, from an authenticated client.
pub async fn serve(
    req: &web_sys::Request,
    method: &str,
    path: &str,
    headers: Lines<'_>,
    config: &Rc<Result<Config, RouterError>>,
    env: &Env,
) -> std::result::Result<Reply, RouterError> {
    let shared = Rc::clone(config);
    let config = config.as_ref().as_ref().map_err(Clone::clone)?;
    let call = batch::call_of(method, path)?;
    let keys = matches!(config.gateway.auth, GatewayAuth::Keys { .. });
    let owner = batch::owner_of(headers.get("authorization"), keys);
    match call {
        Call::Upload => upload(req, headers, shared, config, env, &owner).await,
        Call::Create => create(req, config, env, &owner).await,
        _ => existing(call, config, env, &owner).await,
    }
}

/// `POST /v1/files`: the body is read up to its first request line, which says where the file
/// goes; then the rest is streamed there through the rewriter.
async fn upload(
    req: &web_sys::Request,
    headers: Lines<'_>,
    shared: Rc<Result<Config, RouterError>>,
    config: &Config,
    env: &Env,
    owner: &str,
) -> std::result::Result<Reply, RouterError> {
    let content_type = headers.get("content-type");
    let mut rewriter = Upload::new(content_type)?;
    let body = req.body().ok_or_else(|| RouterError::InvalidRequest {
        message: "The upload has no body.".to_owned(),
        param: Some("file".to_owned()),
        code: "invalid_batch_file",
    })?;
    let source = source_of(&body);
    let mut first = Vec::new();
    let started = http::now_ms();
    while rewriter.provider().is_none() {
        let left = UPLOAD_MS.saturating_sub(http::now_ms().saturating_sub(started));
        let chunk = JsFuture::from(next_chunk_within(&source, left as f64))
            .await
            .map_err(|_| http::internal("reading the upload"))?;
        if chunk.is_string() {
            return Err(RouterError::BodyTimeout { ms: UPLOAD_MS });
        }
        let read = match chunk.dyn_into::<js_sys::Uint8Array>() {
            Ok(chunk) => rewriter.push(config, &chunk.to_vec(), &mut first),
            Err(_) => rewriter.finish(config, &mut first),
        };
        if let Err(err) = read {
            // The client reads its 400 on a connection still in order.
            let _ = JsFuture::from(drain_source(&source, DRAIN_BYTES, DRAIN_MS)).await;
            return Err(err);
        }
    }
    let provider = rewriter
        .provider()
        .and_then(|p| config.providers.get(p))
        .ok_or_else(|| http::internal("an upload without a provider"))?;
    let (key, secret) = batch::key_for(provider, None)?;
    let (path, _) = Call::Upload.upstream();
    let lines = batch::request_headers(secret, content_type);
    // The rest of the body through the rewriter, a chunk at a time; its refusal kept for the
    // client's answer.
    let refusal: Rc<RefCell<Option<RouterError>>> = Rc::new(RefCell::new(None));
    let step = {
        let refusal = Rc::clone(&refusal);
        // What the rewriter gave and the runtime has not taken yet, from `taken` on.
        let mut ready: Vec<u8> = Vec::new();
        let mut taken = 0;
        Closure::<Step>::new(move |chunk: JsValue, sink: js_sys::Uint8Array| {
            let Ok(config) = shared.as_ref() else {
                return -1.0;
            };
            if taken == ready.len() {
                ready.clear();
                taken = 0;
            }
            let done = if chunk.is_null() {
                Ok(())
            } else if chunk.is_undefined() {
                rewriter.finish(config, &mut ready)
            } else {
                let chunk: js_sys::Uint8Array = chunk.unchecked_into();
                rewriter.push(config, &chunk.to_vec(), &mut ready)
            };
            if let Err(err) = done {
                *refusal.borrow_mut() = Some(err);
                return -1.0;
            }
            let n = (ready.len() - taken).min(sink.length() as usize);
            sink.subarray(0, n as u32)
                .copy_from(&ready[taken..taken + n]);
            taken += n;
            n as f64
        })
    };
    let url = format!("{}{path}", provider.base_url);
    let first = js_sys::Uint8Array::from(first.as_slice());
    let sent = JsFuture::from(upload_js(
        &url,
        &lines,
        &source,
        &first,
        &step,
        UPLOAD_MS as f64,
    ))
    .await
    .map_err(|_| http::internal("the upload"))?;
    if sent.as_string().as_deref() == Some("refused") {
        let refused = refusal.borrow_mut().take();
        return Err(refused.unwrap_or_else(|| http::internal("an upload refused")));
    }
    if sent.as_string().as_deref() == Some("late") {
        return Err(RouterError::UpstreamTimeout);
    }
    let record = Record {
        provider: provider.name.clone(),
        key_id: key.id.clone(),
    };
    answer(&Call::Upload, sent, &record, provider, env, owner).await
}

/// `POST /v1/batches`: goes where its input file is.
async fn create(
    req: &web_sys::Request,
    config: &Config,
    env: &Env,
    owner: &str,
) -> std::result::Result<Reply, RouterError> {
    let body = match http::read_capped(req.body(), MAX_CREATE, MAX_CREATE, CALL_MS).await? {
        Ok(body) => body,
        Err(http::Unread::TooLarge) => {
            return Err(RouterError::BodyTooLarge {
                limit: MAX_CREATE as u64,
            })
        }
        Err(http::Unread::Late) => return Err(RouterError::BodyTimeout { ms: CALL_MS }),
    };
    let file = BatchIds::of(&body)
        .input_file_id
        .ok_or_else(|| RouterError::InvalidRequest {
            message: "A batch needs `input_file_id`: the id of a file uploaded through this \
                      router with `purpose` `batch`."
                .to_owned(),
            param: Some("input_file_id".to_owned()),
            code: "missing_required_parameter",
        })?;
    let record = lookup(env, owner, Kind::File, &file).await?;
    let provider = batch::provider_of(config, &record)?;
    let (_, secret) = batch::key_for(provider, Some(&record.key_id))?;
    let body = js_sys::Uint8Array::from(body.as_slice());
    let sent = relay(&Call::Create, provider, secret, Some(&body)).await?;
    answer(&Call::Create, sent, &record, provider, env, owner).await
}

/// A call on a file or batch the caller made: sent where it was made, with the same key.
async fn existing(
    call: Call<'_>,
    config: &Config,
    env: &Env,
    owner: &str,
) -> std::result::Result<Reply, RouterError> {
    let (kind, id) = call
        .object()
        .ok_or_else(|| http::internal("a batch call without an id"))?;
    let record = lookup(env, owner, kind, id).await?;
    let provider = batch::provider_of(config, &record)?;
    let (_, secret) = batch::key_for(provider, Some(&record.key_id))?;
    let sent = relay(&call, provider, secret, None).await?;
    answer(&call, sent, &record, provider, env, owner).await
}

/// The provider's answer for the client. A file's content is handed on as it streams; any
/// other success is a small JSON object, read whole so that the ids in it are registered before
/// the client can use them.
async fn answer(
    call: &Call<'_>,
    sent: JsValue,
    record: &Record,
    provider: &Provider,
    env: &Env,
    owner: &str,
) -> std::result::Result<Reply, RouterError> {
    if sent.is_null() || sent.is_undefined() {
        return Err(RouterError::UpstreamUnreachable);
    }
    let parts: js_sys::Array = sent.unchecked_into();
    let status = parts.get(0).as_f64().unwrap_or(0.0) as u16;
    let head = parts.get(1).as_string().unwrap_or_default();
    let body = parts.get(2).dyn_into::<web_sys::ReadableStream>().ok();
    let head = Lines(&head);
    if batch::hands_on(call, status) {
        return Ok(Reply {
            status,
            headers: head.to_client(),
            body: body.map_or(JsValue::UNDEFINED, JsValue::from),
        });
    }
    let bytes = match http::read_capped(body, MAX_ANSWER, MAX_ANSWER, CALL_MS).await? {
        Ok(bytes) => bytes,
        Err(_) => return Err(RouterError::UpstreamFailed { status }),
    };
    if !(200..300).contains(&status) {
        let secret = provider
            .keys
            .iter()
            .find(|k| k.id == record.key_id)
            .map_or("", |k| k.secret_name.as_str());
        return Err(batch::failure(
            call,
            status,
            head.get("retry-after"),
            &bytes,
            secret,
        ));
    }
    let records = batch::remembered(call, &bytes, record);
    if !records.is_empty() {
        registry(env, owner, &Command::Put { records }).await?;
    }
    Ok(Reply {
        status,
        headers: head.to_client(),
        body: js_sys::Uint8Array::from(bytes.as_slice()).into(),
    })
}

/// One call to the provider (not an upload).
async fn relay(
    call: &Call<'_>,
    provider: &Provider,
    secret: &Secret,
    body: Option<&js_sys::Uint8Array>,
) -> std::result::Result<JsValue, RouterError> {
    let (path, method) = call.upstream();
    let url = format!("{}{path}", provider.base_url);
    let content_type = body.map(|_| "application/json");
    let lines = batch::request_headers(secret, content_type);
    let body: JsValue = body.map_or(JsValue::UNDEFINED, |b| b.clone().into());
    JsFuture::from(relay_js(method, &url, &lines, &body, CALL_MS as f64))
        .await
        .map_err(|_| http::internal("a batch call"))
}

/// The record of the caller's file or batch `id`; a 404 when the caller has none.
async fn lookup(
    env: &Env,
    owner: &str,
    kind: Kind,
    id: &str,
) -> std::result::Result<Record, RouterError> {
    let name = batch::record_name(kind, id);
    let found = registry(env, owner, &Command::Get { name }).await?;
    found.ok_or_else(|| RouterError::NoSuchObject {
        kind: kind.name(),
        id: id.to_owned(),
    })
}

/// One call to `owner`'s registry.
async fn registry(
    env: &Env,
    owner: &str,
    command: &Command,
) -> std::result::Result<Option<Record>, RouterError> {
    http::call_object(env, BINDING, owner, None, command)
        .await
        .map_err(|e| match e {
            http::ObjectError::NoBinding => RouterError::InvalidConfig {
                path: format!("durable_objects.bindings.{BINDING}"),
                detail: "the Batch API needs the BATCHES Durable Object binding (class \
                         BatchObject), as in wrangler.toml"
                    .to_owned(),
            },
            http::ObjectError::Failed(what) => RouterError::Internal {
                detail: format!("batch registry: {what}"),
            },
        })
}

/// An owner's registry: `file:id` and `batch:id` to the provider and key that made them.
#[durable_object]
pub struct BatchObject {
    state: State,
}

impl DurableObject for BatchObject {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let command: Command = match req.json().await {
            Ok(c) => c,
            Err(e) => return Response::error(format!("bad command: {e}"), 400),
        };
        let storage = self.state.storage();
        match command {
            Command::Get { name } => {
                let text: Option<String> = storage.get(&name).await?;
                let record = text.and_then(|t| serde_json::from_str::<Record>(&t).ok());
                Response::from_json(&record)
            }
            Command::Put { records } => {
                for (name, record) in records {
                    let text = serde_json::to_string(&record)?;
                    storage.put(&name, text).await?;
                }
                Response::from_json(&None::<Record>)
            }
        }
    }
}
