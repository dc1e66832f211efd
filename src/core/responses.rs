//! Step 5 for `POST /v1/responses`: OpenAI's Responses API, served two ways.
//!
//! - To a provider that serves it (the `responses` capability: Groq, OpenAI) the request passes
//!   as the client wrote it, with the provider's model id ([`ResponsesRequest::native_body`]),
//!   and the answer comes back untouched.
//! - To any other provider it goes as a chat completion ([`ResponsesRequest::to_chat`]), and the
//!   answer is translated back: a JSON chat completion into a Response object
//!   ([`response_from_chat`]), an event stream chunk by chunk into the Responses events, in the
//!   order the SDKs expect ([`Events`]).
//!
//! The chat form is also what the classifier and the router's checks read, so a Responses
//! request is routed, booked and failed over exactly as a chat completion. What the router
//! cannot keep (stored responses, `previous_response_id`, background runs, built-in tools) is
//! served only by providers with the API of their own ([`ResponsesRequest::native_only`]).

use serde_json::{json, Map, Value};

use super::config::{Capability, Provider, GUARDED_FIELDS, RESPONSES_STATE};
use super::error::RouterError;
use super::request::{object_text, RawObject};

mod events;
#[cfg(test)]
mod tests;

pub use events::Events;

/// The event a client gets when the upstream cuts a Responses stream after its first byte:
/// the API's own error event, so that the SDKs raise it rather than end cleanly.
pub const INTERRUPTED_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"code\":\
    \"upstream_stream_interrupted\",\"message\":\"The upstream provider's stream ended before it \
    was complete; the response is cut short.\",\"param\":null,\"sequence_number\":0}\n\n";

/// What marks a complete Responses stream: its last event is one of these.
pub const END_EVENTS: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// A Responses request: its fields as the client wrote them, the few the router reads.
#[derive(Debug)]
pub struct ResponsesRequest<'a> {
    fields: RawObject<'a>,
    pub model: String,
    pub stream: bool,
    /// The parameter that only a provider with the Responses API of its own can serve, if the
    /// request uses one.
    pub native_only: Option<String>,
}

fn invalid(message: impl Into<String>, param: &str) -> RouterError {
    RouterError::InvalidRequest {
        message: message.into(),
        param: Some(param.to_owned()),
        code: "invalid_value",
    }
}

fn missing(message: &str, param: &str) -> RouterError {
    RouterError::InvalidRequest {
        message: message.to_owned(),
        param: Some(param.to_owned()),
        code: "missing_required_parameter",
    }
}

impl<'a> ResponsesRequest<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, RouterError> {
        let fields: RawObject<'a> =
            serde_json::from_slice(body).map_err(|e| RouterError::InvalidJson {
                detail: e.to_string(),
            })?;
        let value = |name: &str| fields.get(name).map(|v| v.get());
        let model = match value("model").map(serde_json::from_str::<String>) {
            Some(Ok(model)) if !model.is_empty() => model,
            Some(_) => return Err(invalid("`model` must be a model name.", "model")),
            None => return Err(missing("`model` is required: a string.", "model")),
        };
        if value("input").is_none() {
            return Err(missing(
                "`input` is required: a string or a list of input items.",
                "input",
            ));
        }
        let stream = value("stream") == Some("true");
        let truthy = |name: &str| value(name).is_some_and(|v| v != "false" && v != "null");
        let mut native_only = ["previous_response_id", "conversation", "prompt"]
            .into_iter()
            .find(|p| truthy(p))
            .map(str::to_owned);
        if native_only.is_none() && value("store") == Some("true") {
            native_only = Some("store".to_owned());
        }
        if native_only.is_none() && value("background") == Some("true") {
            native_only = Some("background".to_owned());
        }
        if native_only.is_none() {
            if let Some(tools) = value("tools") {
                let tools: Vec<Value> = serde_json::from_str(tools)
                    .map_err(|_| invalid("`tools` must be a list of tools.", "tools"))?;
                native_only = tools
                    .iter()
                    .position(|t| t.get("type").and_then(Value::as_str) != Some("function"))
                    .map(|i| format!("tools[{i}].type"));
            }
        }
        Ok(ResponsesRequest {
            fields,
            model,
            stream,
            native_only,
        })
    }

    fn get(&self, name: &str) -> Option<Value> {
        self.fields
            .get(name)
            .and_then(|v| serde_json::from_str(v.get()).ok())
    }

    /// The body for a provider that serves the Responses API itself: as written, with its
    /// model id, on the target's service `tier`, without the guarded fields it may not get.
    pub fn native_body(&self, provider: &Provider, model: &str, tier: Option<&str>) -> Vec<u8> {
        let model = Value::String(model.to_owned()).to_string();
        let tier = tier.map(|t| Value::String(t.to_owned()).to_string());
        let passes = |k: &str| provider.pass_fields.iter().any(|f| f == k);
        // Without `store` in pass_fields, nothing is stored with the router's key.
        let no_store = !passes("store");
        let mut fields: Vec<(&str, &str)> = self
            .fields
            .0
            .iter()
            .filter(|(k, _)| {
                let guarded = (GUARDED_FIELDS.contains(&k.as_ref())
                    || RESPONSES_STATE.contains(&k.as_ref()))
                    && !passes(k);
                let replaced = tier.is_some() && k == "service_tier";
                !(guarded || replaced)
            })
            .map(|(k, v)| match k.as_ref() {
                "model" => ("model", model.as_str()),
                k => (k, v.get()),
            })
            .collect();
        if let Some(tier) = &tier {
            fields.push(("service_tier", tier));
        }
        if no_store {
            fields.push(("store", "false"));
        }
        object_text(fields).into_bytes()
    }

    /// The `pass_fields` name a provider must have for [`Self::native_only`]: the parameter
    /// itself, or `builtin_tools` for a tool that is not a function.
    pub fn state_field(&self) -> Option<&str> {
        let param = self.native_only.as_deref()?;
        Some(match param.starts_with("tools[") {
            true => "builtin_tools",
            false => param,
        })
    }

    /// Whether `provider` may serve this request: any provider, unless it asks for what only a
    /// provider's own Responses API keeps, which needs that API and the operator's leave.
    pub fn served_by(&self, provider: &Provider) -> bool {
        match self.state_field() {
            None => true,
            Some(field) => native(provider) && provider.pass_fields.iter().any(|f| f == field),
        }
    }

    /// The request as a chat completion, for providers without the Responses API (and for the
    /// router's own routing and checks). Tool parameters and JSON schemas keep the client's
    /// bytes, key order included: a model writes structured output in its schema's order.
    pub fn to_chat(&self) -> Result<Vec<u8>, RouterError> {
        // (field, its JSON text), in order.
        let mut chat: Vec<(&str, String)> = vec![
            ("model", Value::String(self.model.clone()).to_string()),
            ("messages", Value::Array(self.messages()?).to_string()),
        ];
        if let Some(tools) = self.fields.get("tools") {
            let tools: Vec<RawObject<'_>> = serde_json::from_str(tools.get())
                .map_err(|_| invalid("`tools` must be a list of tools.", "tools"))?;
            if !tools.is_empty() {
                let tools: Vec<String> = tools.iter().map(chat_tool).collect();
                chat.push(("tools", format!("[{}]", tools.join(","))));
            }
        }
        if let Some(choice) = self.get("tool_choice") {
            chat.push(("tool_choice", chat_tool_choice(&choice).to_string()));
        }
        if let Some(text) = self.fields.get("text") {
            let text: RawObject<'_> = serde_json::from_str(text.get())
                .map_err(|_| invalid("`text` must be an object.", "text"))?;
            if let Some(format) = text.get("format") {
                let format: RawObject<'_> = serde_json::from_str(format.get())
                    .map_err(|_| invalid("`text.format` must be an object.", "text.format"))?;
                if let Some(format) = chat_format(&format)? {
                    chat.push(("response_format", format));
                }
            }
        }
        if let Some(max) = self.get("max_output_tokens").filter(|v| !v.is_null()) {
            chat.push(("max_completion_tokens", max.to_string()));
        }
        if let Some(effort) = self
            .get("reasoning")
            .and_then(|r| r.get("effort").cloned())
            .filter(|e| !e.is_null())
        {
            chat.push(("reasoning_effort", effort.to_string()));
        }
        for name in [
            "temperature",
            "top_p",
            "parallel_tool_calls",
            "user",
            "seed",
            "service_tier",
            "metadata",
        ] {
            if let Some(value) = self.fields.get(name).filter(|v| v.get() != "null") {
                chat.push((name, value.get().to_owned()));
            }
        }
        if self.stream {
            chat.push(("stream", "true".to_owned()));
            chat.push(("stream_options", r#"{"include_usage":true}"#.to_owned()));
        }
        Ok(object_text(chat.iter().map(|(k, v)| (*k, v.as_str()))).into_bytes())
    }

    /// `instructions` and `input` as chat messages.
    fn messages(&self) -> Result<Vec<Value>, RouterError> {
        let mut messages = Vec::new();
        if let Some(Value::String(instructions)) = self.get("instructions") {
            messages.push(json!({"role": "system", "content": instructions}));
        }
        match self.get("input") {
            Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    input_item(item, i, &mut messages)?;
                }
            }
            _ => {
                return Err(invalid(
                    "`input` must be a string or a list of input items.",
                    "input",
                ))
            }
        }
        Ok(messages)
    }

    /// The fields a Response object repeats from its request.
    pub fn echo(&self) -> Map<String, Value> {
        let mut echo = Map::new();
        for (name, default) in [
            ("instructions", Value::Null),
            ("max_output_tokens", Value::Null),
            ("parallel_tool_calls", Value::Bool(true)),
            ("temperature", Value::Null),
            ("tool_choice", Value::String("auto".into())),
            ("tools", Value::Array(Vec::new())),
            ("top_p", Value::Null),
            ("metadata", json!({})),
            ("user", Value::Null),
        ] {
            echo.insert(name.into(), self.get(name).unwrap_or(default));
        }
        let format = self
            .get("text")
            .and_then(|t| t.get("format").cloned())
            .unwrap_or_else(|| json!({"type": "text"}));
        echo.insert("text".into(), json!({ "format": format }));
        echo
    }
}

/// One input item as chat messages: a message (its parts as chat parts), a function call (an
/// assistant message's tool call, joined to the one before it), a function call's output (a
/// tool message). Reasoning items are the model's own and are dropped.
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), RouterError> {
    let param = |field: &str| format!("input[{i}]{field}");
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role =
                match item.get("role").and_then(Value::as_str) {
                    Some(role @ ("user" | "assistant" | "system")) => role,
                    Some("developer") => "system",
                    _ => return Err(invalid(
                        "An input message needs a `role`: user, assistant, system or developer.",
                        &param(".role"),
                    )),
                };
            let content = match item.get("content") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(Value::Array(parts)) => {
                    let mut out = Vec::with_capacity(parts.len());
                    for (j, part) in parts.iter().enumerate() {
                        out.push(chat_part(part, &param(&format!(".content[{j}]")))?);
                    }
                    // An assistant's turn in chat is text.
                    if role == "assistant" {
                        let text: String = out
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect();
                        Value::String(text)
                    } else {
                        Value::Array(out)
                    }
                }
                _ => {
                    return Err(invalid(
                        "An input message needs `content`: a string or a list of parts.",
                        &param(".content"),
                    ))
                }
            };
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let text = |f: &str| item.get(f).and_then(Value::as_str).map(str::to_owned);
            let (Some(call_id), Some(name)) = (text("call_id"), text("name")) else {
                return Err(invalid(
                    "A function_call item needs `call_id` and `name`.",
                    &param(""),
                ));
            };
            let call = json!({
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": text("arguments").unwrap_or_default()},
            });
            let joins = messages.last_mut().filter(|m| {
                m.get("role").and_then(Value::as_str) == Some("assistant")
                    && m.get("tool_calls").is_some()
            });
            match joins
                .and_then(|m| m.get_mut("tool_calls"))
                .and_then(Value::as_array_mut)
            {
                Some(calls) => calls.push(call),
                None => messages.push(json!({
                    "role": "assistant", "content": null, "tool_calls": [call],
                })),
            }
        }
        "function_call_output" => {
            let call_id = item.get("call_id").and_then(Value::as_str);
            let Some(call_id) = call_id else {
                return Err(invalid(
                    "A function_call_output item needs `call_id`.",
                    &param(".call_id"),
                ));
            };
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        "reasoning" => {}
        other => {
            return Err(invalid(
                format!(
                    "Input items of type `{}` are not served here (they refer to state kept by \
                     a provider).",
                    other.chars().take(64).collect::<String>()
                ),
                &param(".type"),
            ))
        }
    }
    Ok(())
}

/// A message part as a chat part.
fn chat_part(part: &Value, param: &str) -> Result<Value, RouterError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "input_text" | "output_text" | "text" => Ok(json!({
            "type": "text",
            "text": part.get("text").and_then(Value::as_str).unwrap_or_default(),
        })),
        "input_image" => {
            let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                return Err(invalid(
                    "An input_image part is served with an `image_url` (a URL or a data URL); \
                     file ids refer to a provider's stored files.",
                    &format!("{param}.image_url"),
                ));
            };
            let mut image = json!({ "url": url });
            if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        _ => Err(invalid(
            format!(
                "Message parts of type `{}` are not served here.",
                kind.chars().take(64).collect::<String>()
            ),
            &format!("{param}.type"),
        )),
    }
}

/// A Responses function tool as a chat tool, its fields as the client wrote them.
fn chat_tool(tool: &RawObject<'_>) -> String {
    let function: Vec<(&str, String)> = ["name", "description", "parameters", "strict"]
        .into_iter()
        .filter_map(|name| {
            let value = tool.get(name).filter(|v| v.get() != "null")?;
            Some((name, value.get().to_owned()))
        })
        .collect();
    format!(
        r#"{{"type":"function","function":{}}}"#,
        object_text(function.iter().map(|(k, v)| (*k, v.as_str())))
    )
}

fn chat_tool_choice(choice: &Value) -> Value {
    match choice.get("type").and_then(Value::as_str) {
        Some("function") => json!({
            "type": "function",
            "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)},
        }),
        _ => choice.clone(),
    }
}

/// `text.format` as a chat `response_format`, as JSON text (`None` for plain text); a schema
/// as the client wrote it.
fn chat_format(format: &RawObject<'_>) -> Result<Option<String>, RouterError> {
    let kind = format
        .get("type")
        .and_then(|t| serde_json::from_str::<String>(t.get()).ok());
    match kind.as_deref() {
        Some("text") | None => Ok(None),
        Some("json_object") => Ok(Some(r#"{"type":"json_object"}"#.to_owned())),
        Some("json_schema") => {
            let schema: Vec<(&str, String)> = ["name", "schema", "strict", "description"]
                .into_iter()
                .filter_map(|name| {
                    let value = format.get(name).filter(|v| v.get() != "null")?;
                    Some((name, value.get().to_owned()))
                })
                .collect();
            Ok(Some(format!(
                r#"{{"type":"json_schema","json_schema":{}}}"#,
                object_text(schema.iter().map(|(k, v)| (*k, v.as_str())))
            )))
        }
        Some(other) => Err(invalid(
            format!(
                "`text.format` of type `{}` is not served.",
                other.chars().take(64).collect::<String>()
            ),
            "text.format.type",
        )),
    }
}

/// Whether `provider` serves the Responses API itself.
pub fn native(provider: &Provider) -> bool {
    provider.capabilities.has(Capability::Responses)
}

/// What a translated Response says of itself: its id, when it was made, and the fields it
/// repeats from the request.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created_at: u64,
    pub echo: Map<String, Value>,
}

impl Meta {
    /// A Response object with this id, model, status, output and usage.
    fn response(&self, model: &str, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), Value::String(self.id.clone()));
        r.insert("object".into(), "response".into());
        r.insert("created_at".into(), self.created_at.into());
        r.insert("status".into(), status.into());
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert("model".into(), model.into());
        r.insert("output".into(), Value::Array(output));
        r.insert("previous_response_id".into(), Value::Null);
        r.insert("reasoning".into(), json!({"effort": null, "summary": null}));
        r.insert("store".into(), Value::Bool(false));
        r.insert("truncation".into(), "disabled".into());
        r.insert("usage".into(), usage);
        for (k, v) in &self.echo {
            r.insert(k.clone(), v.clone());
        }
        Value::Object(r)
    }
}

/// A chat completion's usage as a Response's.
fn usage_of(chat: &Value) -> Value {
    let Some(u) = chat.get("usage").filter(|u| u.is_object()) else {
        return Value::Null;
    };
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(u.pointer("/prompt_tokens_details/cached_tokens"))},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(u.pointer("/completion_tokens_details/reasoning_tokens"))},
        "total_tokens": n(u.get("total_tokens")).max(input + output),
    })
}

/// Why a chat completion stopped, as a Response's status and `incomplete_details`.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A message output item holding `text`.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn function_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// A JSON chat completion as a Response object; `None` when it is not one.
pub fn response_from_chat(chat: &[u8], meta: &Meta) -> Option<Vec<u8>> {
    let chat: Value = serde_json::from_slice(chat).ok()?;
    let choice = chat.get("choices")?.get(0)?;
    let message = choice.get("message")?;
    let mut output = Vec::new();
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        output.push(message_item(&format!("msg_{}", meta.id), text, "completed"));
    }
    for (i, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or_default();
        output.push(function_item(
            &format!("fc_{}_{i}", meta.id),
            field("/id"),
            field("/function/name"),
            field("/function/arguments"),
            "completed",
        ));
    }
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (status, incomplete) = status_of(choice.get("finish_reason").and_then(Value::as_str));
    let mut response = meta.response(model, status, output, usage_of(&chat));
    response["incomplete_details"] = incomplete;
    serde_json::to_vec(&response).ok()
}

/// Writes `value` as one server-sent event of `kind`.
fn event(out: &mut Vec<u8>, kind: &str, value: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // A Value always serializes.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}
