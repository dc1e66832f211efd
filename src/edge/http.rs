//! Conversions between the runtime's HTTP objects and the core's plain values. These are the
//! only functions that touch JS types; `wasm-bindgen-test` checks them under Node.

use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{js_sys, Env, Headers, Method, Request, RequestInit, RequestRedirect, Response};

use crate::core::error::RouterError;
use crate::core::upstream::{self, UpstreamRequest};

/// Wraps a runtime (JS) failure in the glue as the router's internal error.
pub fn internal(err: worker::Error) -> RouterError {
    RouterError::Internal {
        detail: err.to_string(),
    }
}

/// The outbound `Request`: the core's URL and headers, the client's body bytes unchanged.
pub fn upstream_request(out: &UpstreamRequest, body: Vec<u8>) -> Result<Request, RouterError> {
    let headers = Headers::new();
    for (name, value) in &out.headers {
        headers.set(name, value).map_err(internal)?;
    }
    let body = worker::js_sys::Uint8Array::from(body.as_slice());
    let mut init = RequestInit::new();
    // A redirect would turn the POST into a GET and, across origins, drop the key: the router
    // hands the provider's 3xx on as a failure instead of following it.
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual)
        .with_body(Some(body.into()));
    Request::new_with_init(&out.url, &init).map_err(internal)
}

/// The upstream's headers that may reach the client ([`upstream::passes_to_client`]).
pub fn client_headers(resp: &Response) -> Result<Headers, RouterError> {
    let headers = Headers::new();
    for (name, value) in resp.headers().entries() {
        if upstream::passes_to_client(&name) {
            headers.append(&name, &value).map_err(internal)?;
        }
    }
    Ok(headers)
}

/// The body of a response as a JS stream; `None` when it has none.
pub fn body_stream(resp: Response) -> Option<worker::web_sys::ReadableStream> {
    match resp.into_parts().1 {
        worker::ResponseBody::Stream(stream) => Some(stream),
        _ => None,
    }
}

/// A response whose body is a JS stream the router writes (a handed-on answer), or none.
pub fn stream_response(
    status: u16,
    headers: Headers,
    body: Option<worker::web_sys::ReadableStream>,
) -> Response {
    let builder = Response::builder()
        .with_status(status)
        .with_headers(headers);
    match body {
        Some(body) => builder.stream(body),
        None => builder.empty(),
    }
}

/// Reads a JS stream into bytes, up to `cap`: `None` when it is longer or cannot be read.
pub async fn read_stream(stream: &worker::web_sys::ReadableStream, cap: usize) -> Option<Vec<u8>> {
    let resp = worker::web_sys::Response::new_with_opt_readable_stream(Some(stream)).ok()?;
    let mut resp: Response = resp.into();
    read_capped(resp.stream(), cap, cap).await.ok()?.ok()
}

/// Reads a body stream until its end or until more than `cap` bytes arrived: `Ok(bytes)`, or
/// `Err(())` when the body is longer than `cap`. Past `cap`, nothing more is kept, but the rest
/// is read and discarded until `drain_to` bytes in all (see [`drain`]); with `drain_to` at
/// `cap` the rest is left unread. A missing body reads as empty.
pub async fn read_capped(
    stream: Result<worker::ByteStream, worker::Error>,
    cap: usize,
    drain_to: usize,
) -> Result<Result<Vec<u8>, ()>, RouterError> {
    use futures::StreamExt;
    // No body at all (an empty request, a 204) reads as empty.
    let Ok(mut stream) = stream else {
        return Ok(Ok(Vec::new()));
    };
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(internal)?);
        if out.len() > cap {
            let mut read = out.len();
            while read <= drain_to {
                match stream.next().await {
                    Some(Ok(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            return Ok(Err(()));
        }
    }
    Ok(Ok(out))
}

/// Reads and discards an unread request body of up to `cap` bytes. Answering a POST before
/// its body is read can close the connection under the client while it is still sending
/// (EPIPE instead of the error); draining lets the client read the answer.
pub async fn drain(body: worker::web_sys::ReadableStream, cap: usize) {
    if !body.locked() {
        let _ = read_stream(&body, cap).await;
    }
}

/// A JSON response with a fixed body.
pub fn json_response(status: u16, body: &str) -> Result<Response, RouterError> {
    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .map_err(internal)?;
    Ok(Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(body.as_bytes().to_vec()))
}

/// An empty response (a preflight answer) with the given headers.
pub fn empty_response(
    status: u16,
    headers: &[(&'static str, String)],
) -> Result<Response, RouterError> {
    let h = Headers::new();
    for (name, value) in headers {
        h.set(name, value).map_err(internal)?;
    }
    Ok(Response::builder()
        .with_status(status)
        .with_headers(h)
        .empty())
}

/// Adds headers to a response the router built (never to an immutable upstream one). `vary`
/// is appended to, so an upstream's own `Vary` stays; the others are set.
pub fn add_headers(resp: &mut Response, headers: &[(&'static str, String)]) -> worker::Result<()> {
    let h = resp.headers_mut();
    for (name, value) in headers {
        if *name == "vary" {
            h.append(name, value)?;
        } else {
            h.set(name, value)?;
        }
    }
    Ok(())
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

/// The OpenAI-format error response, with the headers that belong to the error.
pub fn error_response(err: &RouterError) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    for (name, value) in err.headers() {
        headers.set(name, &value)?;
    }
    Ok(Response::builder()
        .with_status(err.status())
        .with_headers(headers)
        .fixed(err.to_json().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn outbound() -> UpstreamRequest {
        let doc = r#"{"providers":{"groq":{"base_url":"http://127.0.0.1:9/v1",
            "keys":[{"id":"g","secret":"G"}]}},"routes":{"fast":["groq/m"]}}"#;
        let config = Config::parse(doc, |n| (n == "G").then(|| "sk-upstream".to_owned())).unwrap();
        let choice = crate::core::route::choose(&config, "fast", &[]).unwrap();
        upstream::request(&choice, "/chat/completions", Some("text/event-stream"))
    }

    #[wasm_bindgen_test]
    async fn upstream_request_carries_url_headers_and_the_exact_body() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"h\u00e9"}]}"#.to_vec();
        let mut req = upstream_request(&outbound(), body.clone()).unwrap();
        assert_eq!(
            req.url().unwrap().as_str(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(req.method(), Method::Post);
        let h = req.headers();
        assert_eq!(
            h.get("authorization").unwrap().as_deref(),
            Some("Bearer sk-upstream")
        );
        assert_eq!(
            h.get("content-type").unwrap().as_deref(),
            Some("application/json")
        );
        assert_eq!(
            h.get("accept").unwrap().as_deref(),
            Some("text/event-stream")
        );
        assert_eq!(h.get("cookie").unwrap(), None);
        assert_eq!(req.bytes().await.unwrap(), body);
    }

    #[wasm_bindgen_test]
    async fn a_handed_on_answer_keeps_status_and_body_and_drops_cookies() {
        let headers = Headers::new();
        headers.set("content-type", "application/json").unwrap();
        headers.set("x-request-id", "req_1").unwrap();
        headers.set("set-cookie", "__cf_bm=abc").unwrap();
        let upstream = Response::builder()
            .with_status(201)
            .with_headers(headers)
            .fixed(b"{\"id\":\"x\"}".to_vec());
        // Through a real JS Response, as `fetch` would hand it over.
        let upstream: Response = worker::web_sys::Response::from(upstream).into();
        let headers = client_headers(&upstream).unwrap();
        let status = upstream.status_code();
        let mut out = stream_response(status, headers, body_stream(upstream));
        assert_eq!(out.status_code(), 201);
        assert_eq!(
            out.headers().get("x-request-id").unwrap().as_deref(),
            Some("req_1")
        );
        assert_eq!(out.headers().get("set-cookie").unwrap(), None);
        assert_eq!(out.text().await.unwrap(), "{\"id\":\"x\"}");
    }

    #[wasm_bindgen_test]
    async fn error_response_is_openai_json_with_its_headers() {
        let err = RouterError::QuotaExhausted {
            retry_after_s: Some(9),
        };
        let mut resp = error_response(&err).unwrap();
        assert_eq!(resp.status_code(), 429);
        assert_eq!(
            resp.headers().get("retry-after").unwrap().as_deref(),
            Some("9")
        );
        assert_eq!(
            resp.headers().get("content-type").unwrap().as_deref(),
            Some("application/json")
        );
        let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "quota_exhausted");
    }

    #[wasm_bindgen_test]
    fn config_text_reads_strings_and_objects() {
        let env: Env = js_sys::Object::new().unchecked_into();
        let obj = js_sys::JSON::parse(r#"{"routes":{"fast":["groq/m"]}}"#).unwrap();
        js_sys::Reflect::set(&env, &"OBJ".into(), &obj).unwrap();
        js_sys::Reflect::set(&env, &"TEXT".into(), &r#"{"a":1}"#.into()).unwrap();
        assert_eq!(
            config_text(&env, "OBJ").unwrap().as_deref(),
            Some(r#"{"routes":{"fast":["groq/m"]}}"#)
        );
        assert_eq!(
            config_text(&env, "TEXT").unwrap().as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(config_text(&env, "MISSING").unwrap(), None);
    }

    #[wasm_bindgen_test]
    async fn preflight_and_added_headers() {
        let mut resp =
            empty_response(204, &[("access-control-max-age", "86400".to_owned())]).unwrap();
        assert_eq!(resp.status_code(), 204);
        add_headers(&mut resp, &[("vary", "Origin".to_owned())]).unwrap();
        assert_eq!(
            resp.headers().get("vary").unwrap().as_deref(),
            Some("Origin")
        );
        assert_eq!(
            resp.headers()
                .get("access-control-max-age")
                .unwrap()
                .as_deref(),
            Some("86400")
        );
        assert_eq!(resp.text().await.unwrap(), "");
    }

    #[wasm_bindgen_test]
    async fn json_response_sets_status_and_type() {
        let mut resp = json_response(200, r#"{"status":"ok"}"#).unwrap();
        assert_eq!(resp.status_code(), 200);
        assert_eq!(
            resp.headers().get("content-type").unwrap().as_deref(),
            Some("application/json")
        );
        assert_eq!(resp.text().await.unwrap(), r#"{"status":"ok"}"#);
    }
}
