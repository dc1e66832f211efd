//! Conversions between the runtime's HTTP objects and the core's plain values. These are the
//! only functions that touch JS types; `wasm-bindgen-test` checks them under Node. Each crosses
//! the boundary once: headers go as one string of [`Lines`], an answer is built in one call.

use wasm_bindgen_futures::JsFuture;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsCast, JsValue};
use worker::{js_sys, web_sys, Env};

use crate::core::config::{Config, CONFIG_VAR};
use crate::core::error::RouterError;

#[wasm_bindgen(module = "/src/edge/runtime.js")]
extern "C" {
    #[wasm_bindgen(js_name = headerLines)]
    fn header_lines(headers: &web_sys::Headers) -> String;
    #[wasm_bindgen(js_name = respond, catch)]
    fn respond_js(
        status: u16,
        upstream: &str,
        ours: &str,
        body: &JsValue,
    ) -> Result<web_sys::Response, JsValue>;
    #[wasm_bindgen(js_name = startClock)]
    fn start_clock(abort: &web_sys::AbortController, ms: f64, hedge_ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = hedgeAfter)]
    fn hedge_after_js(abort: &web_sys::AbortController) -> js_sys::Promise;
    #[wasm_bindgen(js_name = stopClock)]
    fn stop_clock(id: &JsValue);
    #[wasm_bindgen(js_name = now)]
    fn now_js() -> f64;
    #[wasm_bindgen(js_name = readTestClock)]
    fn read_test_clock(env: &JsValue) -> Option<js_sys::Promise>;
    #[wasm_bindgen(js_name = readCapped)]
    fn read_capped_js(
        body: Option<web_sys::ReadableStream>,
        cap: f64,
        drain_to: f64,
        ms: f64,
    ) -> js_sys::Promise;
    #[wasm_bindgen(js_name = readWhole)]
    fn read_whole_js(req: &web_sys::Request, ms: f64) -> js_sys::Promise;
}

/// Milliseconds since the epoch, from the router's clock: the runtime's, moved forward by a
/// `TEST_CLOCK` binding when one is bound (tests only).
pub fn now_ms() -> u64 {
    now_js() as u64
}

/// Takes in the test clock's offset when a `TEST_CLOCK` binding exists; without one (in
/// production) nothing is awaited.
pub async fn sync_test_clock(env: &Env) {
    let env: &JsValue = env.as_ref();
    if let Some(read) = read_test_clock(env) {
        let _ = JsFuture::from(read).await;
    }
}

/// An attempt's clock, kept by the runtime: when the time is up it aborts the call through its
/// controller, which fails whatever of the call is still awaited. Stopped when dropped. With
/// `hedge_ms`, the same timer first fires then, resolving the promise [`hedge_after`] gave for
/// the controller: an attempt that answers in time costs one timer, hedged or not.
pub struct Clock {
    id: JsValue,
    signal: web_sys::AbortSignal,
}

/// A promise that resolves when the clock of `controller`'s attempt reaches its hedge time
/// (asked for before the attempt starts); it never does when the attempt is decided first.
pub fn hedge_after(controller: &web_sys::AbortController) -> JsFuture {
    JsFuture::from(hedge_after_js(controller))
}

impl Clock {
    pub fn start(controller: &web_sys::AbortController, ms: u64, hedge_ms: Option<u64>) -> Clock {
        Clock {
            id: start_clock(controller, ms as f64, hedge_ms.map_or(0.0, |h| h as f64)),
            signal: controller.signal(),
        }
    }

    /// Whether the time ran out (a failure of the call is then a timeout).
    pub fn ran_out(&self) -> bool {
        self.signal.aborted()
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        stop_clock(&self.id);
    }
}

/// Wraps a runtime (JS) failure in the glue as the router's internal error.
pub fn internal(what: &str) -> RouterError {
    RouterError::Internal {
        detail: format!("the runtime failed {what}"),
    }
}

/// All of a request's or response's headers, as [`Lines`](crate::core::upstream::Lines) text,
/// in one call.
pub fn lines_of(headers: &web_sys::Headers) -> String {
    header_lines(headers)
}

/// The client's response: the upstream's headers that pass (`upstream`, [`Lines`] text), the
/// router's own (`ours`, which replace an upstream header of the same name but add to `vary`),
/// and a body (a byte array, a stream, a string, or none).
pub fn respond(
    status: u16,
    upstream: &str,
    ours: &[(&'static str, String)],
    body: &JsValue,
) -> Result<web_sys::Response, RouterError> {
    let ours = crate::core::upstream::lines(ours.iter().map(|(k, v)| (*k, v.as_str())));
    respond_js(status, upstream, &ours, body).map_err(|_| internal("building a response"))
}

/// Why a body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// It is longer than the cap.
    TooLarge,
    /// It did not arrive within the time given.
    Late,
}

/// Reads a body while it stays within `cap` bytes and arrives within `ms`: its bytes, or why
/// not. Past the cap, the rest is read and dropped up to `drain_to` bytes in all (see
/// [`drain`]).
pub async fn read_capped(
    body: Option<web_sys::ReadableStream>,
    cap: usize,
    drain_to: usize,
    ms: u64,
) -> Result<Result<Vec<u8>, Unread>, RouterError> {
    let read = JsFuture::from(read_capped_js(body, cap as f64, drain_to as f64, ms as f64))
        .await
        .map_err(|_| internal("reading a body"))?;
    bytes_of(read)
}

/// Reads a request body whose `content-length` is known to be within the limit, in one call,
/// if it arrives within `ms`.
pub async fn read_whole(req: &web_sys::Request, ms: u64) -> Result<Vec<u8>, RouterError> {
    let read = JsFuture::from(read_whole_js(req, ms as f64))
        .await
        .map_err(|_| internal("reading the body"))?;
    match bytes_of(read)? {
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(RouterError::BodyTimeout { ms }),
    }
}

/// A body read's result, from the runtime: bytes, `null` (too large) or `"late"`.
fn bytes_of(read: JsValue) -> Result<Result<Vec<u8>, Unread>, RouterError> {
    if read.is_null() {
        return Ok(Err(Unread::TooLarge));
    }
    if read.is_string() {
        return Ok(Err(Unread::Late));
    }
    read.dyn_into::<js_sys::Uint8Array>()
        .map(|bytes| Ok(bytes.to_vec()))
        .map_err(|_| internal("reading a body"))
}

/// Reads and discards an unread request body of up to `cap` bytes, for at most `ms`.
/// Answering a POST before its body is read can close the connection under the client while it
/// is still sending (EPIPE instead of the error); draining lets the client read the answer. A
/// client that trickles its body gets no more than `ms` of the invocation.
pub async fn drain(body: web_sys::ReadableStream, cap: usize, ms: u64) {
    if !body.locked() {
        let _ = read_capped(Some(body), cap, cap, ms).await;
    }
}

/// Why a call to a Durable Object failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectError {
    /// The Worker has no such binding.
    NoBinding,
    /// The call could not be made, or its answer was not the JSON expected.
    Failed(&'static str),
}

/// One JSON command to the Durable Object `name` of `binding`, with `header` (name, value) if
/// any, and its JSON reply.
pub async fn call_object<C: serde::Serialize, R: serde::de::DeserializeOwned>(
    env: &Env,
    binding: &str,
    name: &str,
    header: Option<(&str, &str)>,
    command: &C,
) -> Result<R, ObjectError> {
    use worker::{Headers, Method, Request, RequestInit};
    let failed = ObjectError::Failed;
    let body = serde_json::to_string(command).map_err(|_| failed("encoding"))?;
    let stub = env
        .durable_object(binding)
        .and_then(|ns| ns.id_from_name(name)?.get_stub())
        .map_err(|_| ObjectError::NoBinding)?;
    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .map_err(|_| failed("headers"))?;
    if let Some((header, value)) = header {
        headers.set(header, value).map_err(|_| failed("headers"))?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    let request =
        Request::new_with_init("https://object.internal/", &init).map_err(|_| failed("request"))?;
    let mut resp = stub
        .fetch_with_request(request)
        .await
        .map_err(|_| failed("unreachable"))?;
    if resp.status_code() != 200 {
        return Err(failed("refused the command"));
    }
    resp.json::<R>().await.map_err(|_| failed("bad reply"))
}

/// The router's configuration (`ROUTER_CONFIG`) and the secrets it names, parsed and checked;
/// an unset or broken one is the operator's error, saying how to fix it.
pub fn load_config(env: &Env) -> Result<Config, RouterError> {
    let text = config_text(env, CONFIG_VAR)?.ok_or_else(|| RouterError::InvalidConfig {
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

/// A var as JSON text: a string var as it is, an object var (a TOML table in wrangler.toml)
/// serialized; `None` when unset.
pub fn config_text(env: &Env, name: &str) -> Result<Option<String>, RouterError> {
    let value =
        js_sys::Reflect::get(env, &JsValue::from_str(name)).map_err(|_| RouterError::Internal {
            detail: format!("reading the binding {name}"),
        })?;
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    if let Some(text) = value.as_string() {
        return Ok(Some(text));
    }
    js_sys::JSON::stringify(&value)
        .ok()
        .and_then(|s| s.dyn_into::<js_sys::JsString>().ok())
        .map(|s| Some(String::from(s)))
        .ok_or_else(|| RouterError::Internal {
            detail: format!("serializing the binding {name}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    async fn text_of(resp: web_sys::Response) -> String {
        let text = JsFuture::from(resp.text().unwrap()).await.unwrap();
        text.as_string().unwrap()
    }

    fn stream_of(text: &str) -> web_sys::ReadableStream {
        web_sys::Response::new_with_opt_str(Some(text))
            .unwrap()
            .body()
            .unwrap()
    }

    #[wasm_bindgen_test]
    async fn an_answer_keeps_the_upstream_headers_and_ours_replace_or_add() {
        let upstream = crate::core::upstream::lines([
            ("content-type", "application/json"),
            ("x-request-id", "req_1"),
            ("vary", "Accept"),
            ("x-router-path", "spoofed"),
        ]);
        let ours = [
            ("x-router-path", "fast".to_owned()),
            ("vary", "Origin".to_owned()),
        ];
        let body = JsValue::from(js_sys::Uint8Array::from(&b"{\"id\":\"x\"}"[..]));
        let resp = respond(201, &upstream, &ours, &body).unwrap();
        assert_eq!(resp.status(), 201);
        let lines = lines_of(&resp.headers());
        let h = crate::core::upstream::Lines(&lines);
        assert_eq!(h.get("x-request-id"), Some("req_1"));
        assert_eq!(h.get("x-router-path"), Some("fast"));
        assert_eq!(h.get("vary"), Some("Accept, Origin"));
        assert_eq!(text_of(resp).await, "{\"id\":\"x\"}");
    }

    #[wasm_bindgen_test]
    async fn a_preflight_has_no_body_and_a_refusal_its_json() {
        // The router's 204 (a CORS preflight) carries no body at all: the runtime refuses to
        // build a 204 with one, even an empty one.
        let resp = respond(204, "", &[("allow", "GET".to_owned())], &JsValue::UNDEFINED).unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.body().is_none());
        let lines = lines_of(&resp.headers());
        assert_eq!(lines, "allow\nGET\n");
        // An error of the router's own: its headers only, its JSON as the body.
        let body = r#"{"error":{"message":"m","type":"t","param":null,"code":"c"}}"#;
        let ours = [
            ("content-type", "application/json".to_owned()),
            ("retry-after", "3".to_owned()),
        ];
        let resp = respond(429, "", &ours, &JsValue::from_str(body)).unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(
            lines_of(&resp.headers()),
            "content-type\napplication/json\nretry-after\n3\n"
        );
        assert_eq!(text_of(resp).await, body);
    }

    #[wasm_bindgen_test]
    fn lines_of_gives_the_core_lower_case_names_and_one_line_per_name() {
        // As the runtime hands them over: any case, a header sent twice.
        let headers = web_sys::Headers::new().unwrap();
        headers.append("X-Request-Id", "req_1").unwrap();
        headers.append("Vary", "Accept").unwrap();
        headers.append("vary", "Origin").unwrap();
        headers.append("Content-Type", "text/event-stream").unwrap();
        let lines = lines_of(&headers);
        assert_eq!(
            lines,
            "content-type\ntext/event-stream\nvary\nAccept, Origin\nx-request-id\nreq_1\n"
        );
        let h = crate::core::upstream::Lines(&lines);
        assert_eq!(h.get("Content-Type"), Some("text/event-stream"));
        assert_eq!(h.iter().count(), 3);
    }

    #[wasm_bindgen_test]
    async fn read_capped_keeps_at_most_the_cap() {
        let all = read_capped(Some(stream_of("0123456789")), 10, 10, 1_000)
            .await
            .unwrap();
        assert_eq!(all.unwrap(), b"0123456789");
        let over = read_capped(Some(stream_of("0123456789")), 9, 9, 1_000)
            .await
            .unwrap();
        assert_eq!(over, Err(Unread::TooLarge));
        let none = read_capped(None, 9, 9, 1_000).await.unwrap();
        assert_eq!(none.unwrap(), b"");
        // A body that never ends is given up after its time.
        let never = web_sys::ReadableStream::new().unwrap();
        let late = read_capped(Some(never), 9, 9, 20).await.unwrap();
        assert_eq!(late, Err(Unread::Late));
    }

    /// A configuration as wrangler.toml gives it, and the environment around it.
    const CONFIG: &str = r#"{"providers":{"groq":{"keys":[
        {"id":"g1","secret":"GROQ_KEY_1"},{"id":"g2","secret":"GROQ_KEY_2"}]}},
        "routes":{"fast":["groq/llama-3.1-8b-instant"],"slow":["groq/llama-3.3-70b-versatile"]}}"#;
    const HASH: &str = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b";

    /// An `Env` as the runtime gives one: vars (strings, or objects for TOML tables) and
    /// secrets (strings), by name.
    fn env_with(bindings: &[(&str, JsValue)]) -> Env {
        let env = js_sys::Object::new();
        for (name, value) in bindings {
            js_sys::Reflect::set(&env, &JsValue::from_str(name), value).unwrap();
        }
        env.unchecked_into()
    }

    fn invalid(result: Result<Config, RouterError>) -> (String, String) {
        match result {
            Err(RouterError::InvalidConfig { path, detail }) => (path, detail),
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    #[wasm_bindgen_test]
    fn a_config_loads_alike_from_a_json_string_and_from_a_table() {
        let secrets = || {
            [
                ("GROQ_KEY_1", JsValue::from_str("gsk_one")),
                ("GATEWAY_KEY_HASHES", JsValue::from_str(HASH)),
            ]
        };
        let [s1, s2] = secrets();
        let text = env_with(&[(CONFIG_VAR, JsValue::from_str(CONFIG)), s1, s2]);
        let [s1, s2] = secrets();
        let table = js_sys::JSON::parse(CONFIG).unwrap();
        let table = env_with(&[(CONFIG_VAR, table), s1, s2]);
        let from_text = load_config(&text).unwrap();
        assert_eq!(load_config(&table).unwrap(), from_text);
        // The secrets the configuration names come from the environment.
        let keys = &from_text.providers[0].keys;
        assert_eq!(keys[0].value.as_ref().map(|v| v.expose()), Some("gsk_one"));
        assert_eq!(keys[1].value, None, "GROQ_KEY_2 is not set");
        match &from_text.gateway.auth {
            crate::core::config::GatewayAuth::Keys { hashes, .. } => assert_eq!(hashes.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[wasm_bindgen_test]
    fn an_unset_config_names_the_var_and_where_to_set_it() {
        for env in [env_with(&[]), env_with(&[(CONFIG_VAR, JsValue::NULL)])] {
            let (path, detail) = invalid(load_config(&env));
            assert_eq!(path, CONFIG_VAR);
            assert!(detail.contains("not set"), "{detail}");
            assert!(detail.contains("wrangler.toml"), "{detail}");
        }
    }

    #[wasm_bindgen_test]
    fn a_broken_config_names_the_field_or_the_secret() {
        // A field of the wrong shape, in a table.
        let table = js_sys::JSON::parse(r#"{"routes":{"fast":5}}"#).unwrap();
        let (path, _) = invalid(load_config(&env_with(&[(CONFIG_VAR, table)])));
        assert_eq!(path, "routes.fast");
        // Text that is not JSON: the var itself.
        let text = JsValue::from_str("providers = {}");
        let (path, _) = invalid(load_config(&env_with(&[(CONFIG_VAR, text)])));
        assert_eq!(path, CONFIG_VAR);
        // A secret the configuration reads, broken.
        let env = env_with(&[
            (CONFIG_VAR, JsValue::from_str(CONFIG)),
            ("GATEWAY_KEY_HASHES", JsValue::from_str("not-a-hash")),
        ]);
        let (path, _) = invalid(load_config(&env));
        assert_eq!(path, "secrets.GATEWAY_KEY_HASHES[0]");
    }
}
