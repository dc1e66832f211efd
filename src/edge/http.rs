//! Conversions between the runtime's HTTP objects and the core's plain values. These are the
//! only functions that touch JS types; `wasm-bindgen-test` checks them under Node.

use worker::{Headers, Method, Request, RequestInit, Response};

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
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    Request::new_with_init(&out.url, &init).map_err(internal)
}

/// The upstream's response for the client: same status and body stream (never read in Rust),
/// headers filtered by [`upstream::passes_to_client`].
pub fn client_response(resp: Response) -> Result<Response, RouterError> {
    let headers = Headers::new();
    for (name, value) in resp.headers().entries() {
        if upstream::passes_to_client(&name) {
            headers.append(&name, &value).map_err(internal)?;
        }
    }
    let status = resp.status_code();
    let (_, body) = resp.into_parts();
    Ok(Response::builder()
        .with_status(status)
        .with_headers(headers)
        .body(body))
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
    use crate::core::config::{Secret, Upstream};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn outbound() -> UpstreamRequest {
        upstream::chat_completions(
            &Upstream {
                base_url: "http://127.0.0.1:9/v1".to_owned(),
                key: Secret::new("sk-upstream"),
            },
            Some("text/event-stream"),
        )
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
    async fn client_response_keeps_status_and_body_and_drops_cookies() {
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
        let mut out = client_response(upstream).unwrap();
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
        let err = RouterError::UpstreamRateLimited {
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
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
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
