//! Successful answers at the edge: the first chunk is read here (so that an answer that is no
//! answer still fails over), then `stream.js` has the runtime pipe the rest to the client
//! natively and reports the body's last bytes when it is over.

use wasm_bindgen_futures::JsFuture;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsCast, JsValue};
use worker::{js_sys, web_sys};

#[wasm_bindgen(module = "/src/edge/stream.js")]
extern "C" {
    #[wasm_bindgen(js_name = openBody)]
    fn open_body(body: &web_sys::ReadableStream) -> js_sys::Promise;
    #[wasm_bindgen(js_name = cancelBody)]
    fn cancel_body(reader: &JsValue);
    #[wasm_bindgen(js_name = handOn)]
    fn hand_on_body(
        body: &JsValue,
        reader: &JsValue,
        first: &JsValue,
        interrupted: Option<String>,
        keep_tail: bool,
        abort: &web_sys::AbortController,
    ) -> js_sys::Array;
}

/// An upstream body whose first chunk has been read, and nothing sent yet.
pub struct Opened {
    body: JsValue,
    reader: JsValue,
    first: Option<js_sys::Uint8Array>,
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

/// Reads the first chunk of `body`.
pub async fn open(body: &web_sys::ReadableStream) -> Opened {
    let pair = JsFuture::from(open_body(body))
        .await
        .ok()
        .map(|v| v.unchecked_into::<js_sys::Array>());
    match pair {
        Some(parts) => Opened {
            body: parts.get(0),
            reader: parts.get(1),
            first: parts.get(2).dyn_into::<js_sys::Uint8Array>().ok(),
        },
        None => Opened {
            body: JsValue::UNDEFINED,
            reader: JsValue::UNDEFINED,
            first: None,
        },
    }
}

impl Opened {
    /// A copy of the start of the first chunk (up to `max` bytes); `None` when the body ended
    /// or failed before it.
    pub fn first_bytes(&self, max: usize) -> Option<Vec<u8>> {
        self.first.as_ref().map(|chunk| {
            let end = chunk.length().min(u32::try_from(max).unwrap_or(u32::MAX));
            chunk.subarray(0, end).to_vec()
        })
    }

    /// Drops the stream: the upstream is told to stop.
    pub fn cancel(self) {
        if !self.reader.is_undefined() {
            cancel_body(&self.reader);
        }
    }

    /// Hands the body on: the client's body, and a promise of how it ended. For an event
    /// stream, `interrupted` is written to the client when the upstream fails or ends without
    /// `data: [DONE]`. With `keep_tail` (or for an event stream), the ending reports the body's
    /// last bytes. A client that goes away aborts the upstream call through `abort`.
    pub fn hand_on(
        self,
        interrupted: Option<&str>,
        keep_tail: bool,
        abort: &web_sys::AbortController,
    ) -> (web_sys::ReadableStream, js_sys::Promise) {
        let first: JsValue = self.first.map_or(JsValue::UNDEFINED, Into::into);
        let pair = hand_on_body(
            &self.body,
            &self.reader,
            &first,
            interrupted.map(str::to_owned),
            keep_tail,
            abort,
        );
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

    fn body(text: &str) -> web_sys::ReadableStream {
        web_sys::Response::new_with_opt_str(Some(text))
            .unwrap()
            .body()
            .unwrap()
    }

    fn abort() -> web_sys::AbortController {
        web_sys::AbortController::new().unwrap()
    }

    async fn text_of(stream: web_sys::ReadableStream) -> String {
        let resp: worker::Response = web_sys::Response::new_with_opt_readable_stream(Some(&stream))
            .unwrap()
            .into();
        let mut resp = resp;
        resp.text().await.unwrap()
    }

    #[wasm_bindgen_test]
    async fn a_complete_stream_is_handed_on_unchanged() {
        let sent = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
        let opened = open(&body(sent)).await;
        assert_eq!(opened.first_bytes(8).unwrap(), b"data: {\"");
        let (readable, finished) = opened.hand_on(Some(INTERRUPTED_EVENT), false, &abort());
        assert_eq!(text_of(readable).await, sent);
        let end = ended(finished).await.unwrap();
        assert!(end.complete);
        assert_eq!(end.tail, sent.as_bytes());
    }

    #[wasm_bindgen_test]
    async fn a_stream_without_done_gets_the_interrupted_event() {
        let sent = "data: {\"choices\":[]}\n\n";
        let (readable, finished) =
            open(&body(sent))
                .await
                .hand_on(Some(INTERRUPTED_EVENT), false, &abort());
        assert_eq!(
            text_of(readable).await,
            format!("{sent}{INTERRUPTED_EVENT}")
        );
        assert!(!ended(finished).await.unwrap().complete);
    }

    #[wasm_bindgen_test]
    async fn a_json_body_gets_nothing_appended() {
        let sent = r#"{"id":"c","usage":{"prompt_tokens":3}}"#;
        let (readable, finished) = open(&body(sent)).await.hand_on(None, true, &abort());
        assert_eq!(text_of(readable).await, sent);
        let end = ended(finished).await.unwrap();
        assert!(end.complete);
        assert_eq!(end.tail, sent.as_bytes());
    }

    #[wasm_bindgen_test]
    async fn without_a_tail_a_json_body_is_handed_on_and_reports_only_its_start() {
        let sent = r#"{"id":"c"}"#;
        let (readable, finished) = open(&body(sent)).await.hand_on(None, false, &abort());
        assert_eq!(text_of(readable).await, sent);
        let end = ended(finished).await.unwrap();
        assert!(end.complete);
        assert!(!end.client_gone);
    }

    #[wasm_bindgen_test]
    async fn an_empty_body_has_no_first_chunk() {
        let opened = open(&body("")).await;
        assert_eq!(opened.first_bytes(10), None);
        opened.cancel();
    }
}
