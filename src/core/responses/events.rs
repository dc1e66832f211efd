//! A chat completion's event stream, translated chunk by chunk into the Responses API's events:
//! `response.created`, `response.in_progress`, then for each output item `output_item.added`,
//! its deltas (`output_text.delta` after `content_part.added`, or
//! `function_call_arguments.delta`) and its `.done` events, and last `response.completed` (or
//! `response.incomplete`) with the usage. A stream that ends without `data: [DONE]`, or carries an
//! error, ends with the API's `error` event instead, never a clean end.

use serde_json::{json, Value};

use super::{event, function_item, message_item, status_of, usage_of, Meta};

/// An output item being streamed.
#[derive(Debug)]
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        /// The tool call's index in the chat stream.
        index: u64,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The translation of one stream.
#[derive(Debug)]
pub struct Events {
    meta: Meta,
    model: String,
    seq: u64,
    started: bool,
    /// An unfinished line of the upstream stream.
    pending: Vec<u8>,
    /// Output items, finished ones first; only the last may be open.
    items: Vec<Item>,
    open: bool,
    finish_reason: Option<String>,
    usage: Value,
    /// The final events (or the error event) have been written.
    closed: bool,
    /// It was the error event.
    failed: bool,
}

/// The most of an unfinished line held: an upstream event larger than this is no chat chunk.
const MAX_LINE: usize = 1 << 20;

impl Events {
    pub fn new(meta: Meta) -> Self {
        Events {
            meta,
            model: String::new(),
            seq: 0,
            started: false,
            pending: Vec::new(),
            items: Vec::new(),
            open: false,
            finish_reason: None,
            usage: Value::Null,
            closed: false,
            failed: false,
        }
    }

    /// Translates one chunk of the upstream stream into `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(i) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = self.pending[start..start + i].to_vec();
            start += i + 1;
            self.line(&line, out);
            if self.closed {
                break;
            }
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE {
            self.fail(out, "upstream_stream_malformed");
        }
    }

    /// The upstream stream has ended (or failed): the final events if it was complete, the
    /// error event if not.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if !self.closed {
            self.fail(out, "upstream_stream_interrupted");
        }
    }

    /// Whether the translation ended with the final events.
    pub fn complete(&self) -> bool {
        self.closed && !self.failed
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            // Comments, `event:` and `id:` lines, blank lines.
            return;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.finish(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            self.fail(out, "upstream_stream_malformed");
            return;
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            self.fail(out, "upstream_stream_interrupted");
            return;
        }
        self.chunk(&chunk, out);
    }

    fn next(&mut self) -> u64 {
        let n = self.seq;
        self.seq += 1;
        n
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut value: Value) {
        value["type"] = kind.into();
        value["sequence_number"] = self.next().into();
        event(out, kind, &value);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self
            .meta
            .response(&self.model, "in_progress", Vec::new(), Value::Null);
        self.emit(out, "response.created", json!({ "response": response }));
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.model.is_empty() {
            if let Some(model) = chunk.get("model").and_then(Value::as_str) {
                self.model = model.to_owned();
            }
        }
        self.start(out);
        if let Some(usage) = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| chunk.pointer("/x_groq/usage"))
        {
            self.usage = usage_of(&json!({ "usage": usage }));
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let delta = choice.get("delta");
        if let Some(text) = delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.text(text, out);
        }
        for call in delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call(call, out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
    }

    fn output_index(&self) -> usize {
        self.items.len().saturating_sub(1)
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if !(self.open && matches!(self.items.last(), Some(Item::Message { .. }))) {
            self.close_item(out);
            let id = format!("msg_{}_{}", self.meta.id, self.items.len());
            self.items.push(Item::Message {
                id: id.clone(),
                text: String::new(),
            });
            self.open = true;
            let index = self.output_index();
            let item = json!({
                "type": "message", "id": id, "status": "in_progress", "role": "assistant",
                "content": [],
            });
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({
                    "item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }),
            );
        }
        let index = self.output_index();
        let Some(Item::Message { id, text: all }) = self.items.last_mut() else {
            return;
        };
        all.push_str(text);
        let id = id.clone();
        self.emit(
            out,
            "response.output_text.delta",
            json!({
                "item_id": id, "output_index": index, "content_index": 0, "delta": text,
                "logprobs": [],
            }),
        );
    }

    fn call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let same = matches!(self.items.last(), Some(Item::Call { index: i, .. }) if *i == index);
        if !(self.open && same) {
            self.close_item(out);
            let field = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or_default();
            let id = format!("fc_{}_{}", self.meta.id, self.items.len());
            let (call_id, name) = (field("/id").to_owned(), field("/function/name").to_owned());
            self.items.push(Item::Call {
                index,
                id: id.clone(),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: String::new(),
            });
            self.open = true;
            let item = function_item(&id, &call_id, &name, "", "in_progress");
            let output_index = self.output_index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
        }
        let Some(delta) = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        else {
            return;
        };
        let output_index = self.output_index();
        let Some(Item::Call { id, arguments, .. }) = self.items.last_mut() else {
            return;
        };
        arguments.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": output_index, "delta": delta}),
        );
    }

    /// The `.done` events of the open item.
    fn close_item(&mut self, out: &mut Vec<u8>) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.output_index();
        let Some(item) = self.items.last() else {
            return;
        };
        match item {
            Item::Message { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0, "text": text,
                        "logprobs": [],
                    }),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
                let item = message_item(&id, &text, "completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
            }
            Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                let item = function_item(id, call_id, name, arguments, "completed");
                let done = json!({
                    "item_id": id, "output_index": index, "name": name, "arguments": arguments,
                });
                self.emit(out, "response.function_call_arguments.done", done);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
            }
        }
    }

    /// `data: [DONE]`: the open item's `.done` events and the response's last event.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_item(out);
        let output: Vec<Value> = self
            .items
            .iter()
            .map(|item| match item {
                Item::Message { id, text } => message_item(id, text, "completed"),
                Item::Call {
                    id,
                    call_id,
                    name,
                    arguments,
                    ..
                } => function_item(id, call_id, name, arguments, "completed"),
            })
            .collect();
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let mut response = self
            .meta
            .response(&self.model, status, output, self.usage.clone());
        response["incomplete_details"] = incomplete;
        let kind = match status {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        self.emit(out, kind, json!({ "response": response }));
        self.closed = true;
    }

    /// The stream failed: the error event, and nothing after it.
    fn fail(&mut self, out: &mut Vec<u8>, code: &str) {
        let message = match code {
            "upstream_stream_malformed" => {
                "The upstream provider's stream carried an event that is not a chat chunk; the \
                 response is cut short."
            }
            _ => {
                "The upstream provider's stream ended before it was complete; the response is \
                 cut short."
            }
        };
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        self.failed = true;
        self.closed = true;
    }
}
