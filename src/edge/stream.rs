//! Event streams at the edge: the first chunk is read here (so that a stream failing before
//! its first byte still fails over), then `stream.js` hands the rest to the client in
//! JavaScript and reports the stream's last bytes when it is over.

use wasm_bindgen_futures::JsFuture;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsCast, JsValue};
use worker::{js_sys, web_sys};

#[wasm_bindgen(module = "/src/edge/stream.js")]
extern "C" {
    #[wasm_bindgen(js_name = openEventStream)]
    fn open_event_stream(body: &web_sys::ReadableStream) -> js_sys::Promise;
    #[wasm_bindgen(js_name = cancelEventStream)]
    fn cancel_event_stream(reader: &JsValue);
    #[wasm_bindgen(js_name = guardEventStream)]
    fn guard_event_stream(first: &JsValue, reader: &JsValue, interrupted: &str) -> js_sys::Array;
}

/// An upstream event stream whose first chunk has been read, and nothing sent yet.
pub struct Opened {
    reader: JsValue,
    first: Option<js_sys::Uint8Array>,
}

/// How a handed-on stream ended.
pub struct Ended {
    /// Its last bytes (at most 16 KiB), for the usage.
    pub tail: Vec<u8>,
    /// Whether it ended with `data: [DONE]`; otherwise the client got the interrupted event.
    pub complete: bool,
}

/// Reads the first chunk of `body`.
pub async fn open(body: &web_sys::ReadableStream) -> Opened {
    let pair = JsFuture::from(open_event_stream(body))
        .await
        .ok()
        .map(|v| v.unchecked_into::<js_sys::Array>());
    match pair {
        Some(pair) => Opened {
            reader: pair.get(0),
            first: pair.get(1).dyn_into::<js_sys::Uint8Array>().ok(),
        },
        None => Opened {
            reader: JsValue::UNDEFINED,
            first: None,
        },
    }
}

impl Opened {
    /// A copy of the first chunk; `None` when the stream ended or failed before it.
    pub fn first_bytes(&self) -> Option<Vec<u8>> {
        self.first.as_ref().map(js_sys::Uint8Array::to_vec)
    }

    /// Drops the stream: the upstream is told to stop.
    pub fn cancel(self) {
        if !self.reader.is_undefined() {
            cancel_event_stream(&self.reader);
        }
    }

    /// Hands the stream on: the client's body, and a promise of how it ended. `interrupted` is
    /// written to the client when the upstream fails or ends without `data: [DONE]`.
    pub fn hand_on(self, interrupted: &str) -> (web_sys::ReadableStream, js_sys::Promise) {
        let first: JsValue = self.first.map_or(JsValue::UNDEFINED, Into::into);
        let pair = guard_event_stream(&first, &self.reader, interrupted);
        (pair.get(0).unchecked_into(), pair.get(1).unchecked_into())
    }
}

/// Waits for a handed-on stream to end.
pub async fn ended(finished: js_sys::Promise) -> Option<Ended> {
    let report = JsFuture::from(finished).await.ok()?;
    let tail = js_sys::Reflect::get(&report, &JsValue::from_str("tail"))
        .ok()?
        .dyn_into::<js_sys::Uint8Array>()
        .ok()?
        .to_vec();
    let complete = js_sys::Reflect::get(&report, &JsValue::from_str("complete"))
        .ok()?
        .as_bool()
        .unwrap_or(false);
    Some(Ended { tail, complete })
}
