//! Upstream answers at the edge, read in `runtime.js`: the call and the start of its answer in
//! one step (so that an answer that is no answer still fails over; a short JSON answer whole),
//! then the rest handed to the client by the runtime, with only its last bytes kept for the
//! usage, so a long answer costs the isolate a few blocks, not its length.

use wasm_bindgen_futures::JsFuture;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsCast, JsValue};
use worker::{js_sys, web_sys};

use crate::core::upstream::UpstreamRequest;

#[wasm_bindgen(module = "/src/edge/runtime.js")]
extern "C" {
    #[wasm_bindgen(js_name = call, catch)]
    fn call_js(
        url: &str,
        lines: &str,
        body: &js_sys::Uint8Array,
        abort: &web_sys::AbortController,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_name = readOn)]
    fn read_on_js(reader: &JsValue, first: &js_sys::Uint8Array, whole: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_name = cancelBody)]
    fn cancel_body(reader: &JsValue);
    #[wasm_bindgen(js_name = handOn)]
    fn hand_on_body(
        body: &JsValue,
        reader: &JsValue,
        start: &JsValue,
        interrupted: Option<String>,
        check: bool,
        abort: &web_sys::AbortController,
        ends: &JsValue,
        drop_usage: bool,
        keep_tail: bool,
    ) -> js_sys::Array;
    #[wasm_bindgen(js_name = withoutUsage)]
    fn without_usage(bytes: &js_sys::Uint8Array) -> js_sys::Uint8Array;
    #[wasm_bindgen(js_name = translate)]
    fn translate_body(
        body: &JsValue,
        reader: &JsValue,
        start: &JsValue,
        step: &JsValue,
        abort: &web_sys::AbortController,
    ) -> js_sys::Array;
}

/// An upstream answer whose headers and start have been read, and nothing sent yet.
pub struct Opened {
    pub status: u16,
    /// Its headers, as [`Lines`](crate::core::upstream::Lines) text.
    pub headers: String,
    body: JsValue,
    reader: JsValue,
    start: Option<js_sys::Uint8Array>,
    /// Whether `start` is the whole body (or there is no body).
    pub whole: bool,
    /// When the headers came, on the router's clock.
    pub headers_at_ms: Option<u64>,
    /// Whether the usage-only chunk of an event stream is kept from the client (the router
    /// asked for it; the client did not).
    pub drop_usage: bool,
    /// Whether the client's branch keeps the last bytes too, so that the usage is known after
    /// the copy is dropped (a body past its limit): the caller's books wait for it.
    pub keep_tail: bool,
}

/// How a handed-on body ended.
pub struct Ended {
    /// Its last bytes (at most 16 KiB), for the usage.
    pub tail: Vec<u8>,
    /// Whether it ended properly (an event stream: with `data: [DONE]`); otherwise the client
    /// got the interrupted event, or a failed body.
    pub complete: bool,
    /// Whether the client went away before the end (then the upstream was cancelled).
    pub client_gone: bool,
}

/// Sends the upstream call (the core's URL and headers, the body bytes as they are, copied into
/// the runtime here), aborted through `abort`, and reads its headers and first chunk; `None`
/// when it failed before its headers.
pub async fn call(
    out: &UpstreamRequest,
    body: &[u8],
    abort: &web_sys::AbortController,
) -> Option<Opened> {
    let promise = call_js(&out.url, &out.header_lines(), &body.into(), abort).ok()?;
    let parts: js_sys::Array = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    Some(Opened {
        status: parts.get(0).as_f64().map_or(0, |s| s as u16),
        headers: parts.get(1).as_string().unwrap_or_default(),
        body: parts.get(2),
        reader: parts.get(3),
        start: parts.get(4).dyn_into::<js_sys::Uint8Array>().ok(),
        whole: parts.get(5).as_bool().unwrap_or(false),
        headers_at_ms: parts.get(6).as_f64().map(|ms| ms as u64),
        drop_usage: false,
        keep_tail: false,
    })
}

impl Opened {
    /// Whether the answer has a body at all (a 204 has none).
    pub fn has_body(&self) -> bool {
        !self.body.is_null() && !self.body.is_undefined()
    }

    /// Reads on until the body ends, while it stays within `whole` bytes: then `start` is all
    /// of it. A body that fails meanwhile is left with nothing read.
    pub async fn read_on(&mut self, whole: usize) {
        let Some(first) = self.start.as_ref().filter(|_| !self.whole) else {
            return;
        };
        let read = JsFuture::from(read_on_js(&self.reader, first, whole as f64)).await;
        let parts = read.ok().and_then(|v| v.dyn_into::<js_sys::Array>().ok());
        match parts {
            Some(parts) => {
                self.start = parts.get(0).dyn_into::<js_sys::Uint8Array>().ok();
                self.whole = parts.get(1).as_bool().unwrap_or(false);
            }
            None => self.start = None,
        }
    }

    /// A copy of the first `max` bytes read; `None` when the body ended or failed before them.
    pub fn first_bytes(&self, max: usize) -> Option<Vec<u8>> {
        self.start.as_ref().map(|chunk| {
            let end = chunk.length().min(u32::try_from(max).unwrap_or(u32::MAX));
            chunk.subarray(0, end).to_vec()
        })
    }

    /// A copy of the last `max` bytes read.
    pub fn last_bytes(&self, max: usize) -> Vec<u8> {
        self.start.as_ref().map_or_else(Vec::new, |chunk| {
            let len = chunk.length();
            let from = len.saturating_sub(u32::try_from(max).unwrap_or(u32::MAX));
            chunk.subarray(from, len).to_vec()
        })
    }

    /// The bytes read, as the runtime holds them (for a whole body, the client's answer:
    /// without the usage chunk when `drop_usage`).
    pub fn bytes(&self) -> JsValue {
        match &self.start {
            Some(b) if self.drop_usage => without_usage(b).into(),
            Some(b) => b.clone().into(),
            None => JsValue::UNDEFINED,
        }
    }

    /// Drops the rest of the body: the upstream is told to stop.
    pub fn cancel(self) {
        if !self.whole && !self.reader.is_undefined() && !self.reader.is_null() {
            cancel_body(&self.reader);
        }
    }

    /// Hands the body on: the client's body, and a promise of how it ended. For an event
    /// stream, `interrupted` is written to the client when the upstream fails or ends without
    /// `data: [DONE]` (or, with `ends`, without one of those events). A client that goes away
    /// aborts the upstream call through `abort`.
    pub fn hand_on(
        self,
        interrupted: Option<&str>,
        check: bool,
        abort: &web_sys::AbortController,
        ends: Option<&[&str]>,
    ) -> (web_sys::ReadableStream, js_sys::Promise) {
        let start: JsValue = self.start.map_or(JsValue::UNDEFINED, Into::into);
        let ends: JsValue = match ends {
            Some(ends) => ends
                .iter()
                .map(|e| JsValue::from_str(e))
                .collect::<js_sys::Array>()
                .into(),
            None => JsValue::NULL,
        };
        let pair = hand_on_body(
            &self.body,
            &self.reader,
            &start,
            interrupted.map(str::to_owned),
            check && interrupted.is_some(),
            abort,
            &ends,
            self.drop_usage,
            self.keep_tail,
        );
        (pair.get(0).unchecked_into(), pair.get(1).unchecked_into())
    }

    /// Hands the body on through `step`, a translation of each chunk (see `translate` in
    /// runtime.js): the client's body, and a promise of how the upstream's ended.
    pub fn translate(
        self,
        step: JsValue,
        abort: &web_sys::AbortController,
    ) -> (web_sys::ReadableStream, js_sys::Promise) {
        let start: JsValue = self.start.map_or(JsValue::UNDEFINED, Into::into);
        let pair = translate_body(&self.body, &self.reader, &start, &step, abort);
        (pair.get(0).unchecked_into(), pair.get(1).unchecked_into())
    }
}

/// Waits for a handed-on body to end.
pub async fn ended(finished: js_sys::Promise) -> Option<Ended> {
    let report = JsFuture::from(finished).await.ok()?;
    let tail = js_sys::Reflect::get(&report, &JsValue::from_str("tail"))
        .ok()?
        .dyn_into::<js_sys::Uint8Array>()
        .ok()?
        .to_vec();
    let flag = |name: &str| {
        js_sys::Reflect::get(&report, &JsValue::from_str(name))
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    Some(Ended {
        tail,
        complete: flag("complete"),
        client_gone: flag("clientGone"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stream::INTERRUPTED_EVENT;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// A body of several chunks, as an upstream sends one.
    fn chunked(chunks: &[&str]) -> web_sys::ReadableStream {
        let parts = js_sys::Array::new();
        for c in chunks {
            parts.push(&JsValue::from_str(c));
        }
        let blob = web_sys::Blob::new_with_str_sequence(&parts).unwrap();
        web_sys::Response::new_with_opt_blob(Some(&blob))
            .unwrap()
            .body()
            .unwrap()
    }

    /// What `call` gives for an answer with `body`: its first chunk read.
    async fn opened(body: web_sys::ReadableStream) -> Opened {
        let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let read = JsFuture::from(reader.read()).await.unwrap();
        let done = js_sys::Reflect::get(&read, &"done".into()).unwrap();
        let value = js_sys::Reflect::get(&read, &"value".into()).unwrap();
        Opened {
            status: 200,
            headers: String::new(),
            body: body.into(),
            reader: reader.into(),
            start: value.dyn_into::<js_sys::Uint8Array>().ok(),
            whole: done.as_bool().unwrap_or(false),
            headers_at_ms: None,
            drop_usage: false,
            keep_tail: false,
        }
    }

    fn abort() -> web_sys::AbortController {
        web_sys::AbortController::new().unwrap()
    }

    async fn text_of(stream: web_sys::ReadableStream) -> String {
        let resp = web_sys::Response::new_with_opt_readable_stream(Some(&stream)).unwrap();
        let text = JsFuture::from(resp.text().unwrap()).await.unwrap();
        text.as_string().unwrap()
    }

    #[wasm_bindgen_test]
    async fn a_complete_stream_is_handed_on_unchanged() {
        let sent = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
        let opened = opened(chunked(&[sent])).await;
        assert!(!opened.whole);
        assert_eq!(opened.first_bytes(8).unwrap(), b"data: {\"");
        let (readable, finished) = opened.hand_on(Some(INTERRUPTED_EVENT), false, &abort(), None);
        assert_eq!(text_of(readable).await, sent);
        let end = ended(finished).await.unwrap();
        assert!(end.complete);
        assert_eq!(end.tail, sent.as_bytes());
    }

    #[wasm_bindgen_test]
    async fn a_stream_without_done_gets_the_interrupted_event() {
        let sent = "data: {\"choices\":[]}\n\n";
        let (readable, finished) =
            opened(chunked(&[sent]))
                .await
                .hand_on(Some(INTERRUPTED_EVENT), false, &abort(), None);
        assert_eq!(
            text_of(readable).await,
            format!("{sent}{INTERRUPTED_EVENT}")
        );
        assert!(!ended(finished).await.unwrap().complete);
    }

    #[wasm_bindgen_test]
    async fn a_short_json_body_is_read_on_to_its_end() {
        let sent = r#"{"id":"c","usage":{"prompt_tokens":3}}"#;
        let mut opened = opened(chunked(&[sent])).await;
        opened.read_on(1024).await;
        assert!(opened.whole);
        assert_eq!(opened.last_bytes(8), &sent.as_bytes()[sent.len() - 8..]);
        let bytes = opened.bytes().dyn_into::<js_sys::Uint8Array>().unwrap();
        assert_eq!(bytes.to_vec(), sent.as_bytes());
    }

    #[wasm_bindgen_test]
    async fn a_json_body_longer_than_whole_is_handed_on_from_what_was_read() {
        let long = "x".repeat(3000);
        let chunks = ["{\"a\":\"", long.as_str(), "\",", "\"b\":1}"];
        let mut opened = opened(chunked(&chunks)).await;
        opened.read_on(100).await;
        assert!(!opened.whole);
        let (readable, finished) = opened.hand_on(None, false, &abort(), None);
        assert_eq!(text_of(readable).await, chunks.concat());
        let end = ended(finished).await.unwrap();
        assert!(end.complete);
        assert!(!end.client_gone);
        assert!(end.tail.ends_with(b"\"b\":1}"));
    }

    #[wasm_bindgen_test]
    async fn only_the_last_bytes_of_a_long_body_are_kept() {
        let chunk = "y".repeat(10_000);
        let chunks: Vec<&str> = std::iter::repeat_n(chunk.as_str(), 10)
            .chain(["data: [DONE]\n\n"])
            .collect();
        let (readable, finished) =
            opened(chunked(&chunks))
                .await
                .hand_on(Some(INTERRUPTED_EVENT), false, &abort(), None);
        assert_eq!(text_of(readable).await.len(), 100_000 + 14);
        let end = ended(finished).await.unwrap();
        assert!(end.complete);
        assert!(end.tail.len() >= crate::core::stream::TAIL_BYTES);
        assert!(end.tail.ends_with(b"data: [DONE]\n\n"));
    }

    /// The upstream call, to a `data:` URL (the one kind of answer Node's fetch gives offline):
    /// its status, its headers and body as `call` reads them.
    async fn call_to(url: &str) -> Option<Opened> {
        let out = UpstreamRequest {
            url: url.to_owned(),
            headers: vec![("content-type", "application/json".to_owned())],
        };
        call(&out, b"{}", &abort()).await
    }

    #[wasm_bindgen_test]
    async fn call_reads_the_status_headers_and_first_chunk() {
        let sent = "data: {}\n\ndata: [DONE]\n\n";
        let opened = call_to(&format!(
            "data:text/event-stream,{}",
            String::from(js_sys::encode_uri_component(sent))
        ))
        .await
        .unwrap();
        assert_eq!(opened.status, 200);
        assert_eq!(opened.headers, "content-type\ntext/event-stream\n");
        assert!(opened.has_body());
        assert!(!opened.whole, "no content-length: the end is not known yet");
        assert_eq!(opened.first_bytes(6).unwrap(), b"data: ");
        let (readable, finished) = opened.hand_on(Some(INTERRUPTED_EVENT), false, &abort(), None);
        assert_eq!(text_of(readable).await, sent);
        assert!(ended(finished).await.unwrap().complete);
    }

    #[wasm_bindgen_test]
    async fn an_empty_answer_has_no_first_chunk_and_is_whole() {
        // What the attempt then takes for an answer that is no answer (it fails over).
        let opened = call_to("data:application/json,").await.unwrap();
        assert_eq!(opened.status, 200);
        assert!(opened.has_body());
        assert!(opened.whole);
        assert_eq!(opened.first_bytes(10), None);
        opened.cancel();
    }

    #[wasm_bindgen_test]
    async fn a_call_that_fails_before_its_headers_is_none() {
        assert!(call_to("ftp://upstream.invalid/").await.is_none());
    }
}
