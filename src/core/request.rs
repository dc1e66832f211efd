//! Step 5: the client's body, parsed once into typed requests.
//!
//! Only the fields the router decides on are typed; every other field, known to OpenAI today or
//! added tomorrow, is kept in `extra` and passed on, so a new parameter is never dropped. Errors
//! say what is wrong and where (`param` is a path such as `messages[2].role`), in the OpenAI
//! error format, never as a 500.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::RouterError;
use super::tokens;

/// `POST /v1/chat/completions`.
///
/// Message contents and every field the router does not decide on stay as the client wrote
/// them ([`Raw`]): checked as JSON, never decoded into a tree nor copied (they borrow the body's
/// bytes), and written back byte for byte, so parsing a long prompt costs about a scan of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest<'a> {
    pub model: String,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Json<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat<'a>>,
    /// Every other field, passed on unchanged.
    #[serde(flatten)]
    pub extra: Raw<'a>,
    /// Estimated prompt tokens of the whole body (messages, tools, schemas), set by
    /// [`ChatRequest::parse`] from the bytes it parsed.
    #[serde(skip)]
    pub prompt_tokens: u64,
}

/// One chat message: its role and name typed, its `content` and everything else as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message<'a> {
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The content as written (a string, an array of parts, or `null`); `None` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Json<'a>>,
    #[serde(flatten)]
    pub extra: Raw<'a>,
}

/// A JSON value kept as the client wrote it, borrowed from the body.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Json<'a>(pub &'a RawValue);

impl<'a> Json<'a> {
    /// The value's JSON text.
    pub fn text(&self) -> &'a str {
        self.0.get()
    }
}

impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(Json)
    }
}

/// Fields kept as the client wrote them, in its order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw<'a>(pub Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Raw<'a> {
    /// The field `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// The media a chat request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Media {
    pub images: bool,
    pub audio: bool,
}

/// `response_format`: its `type` read, the whole object kept as the client wrote it, and
/// written back so: a model writes structured output in its schema's key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ResponseFormat<'a> {
    #[serde(skip)]
    pub kind: String,
    pub raw: Json<'a>,
}

impl<'de> Deserialize<'de> for ResponseFormat<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(rename = "type")]
            kind: String,
        }
        let raw = Json::deserialize(d)?;
        let Kind { kind } = serde_json::from_str(raw.text()).map_err(|e| {
            if e.to_string().starts_with("missing field `type`") {
                de::Error::missing_field("type")
            } else {
                de::Error::custom(e)
            }
        })?;
        Ok(ResponseFormat { kind, raw })
    }
}

/// A map key, borrowed from the body when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Key<'de> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(k) => k,
            Key::Owned(k) => k,
        }
    }

    fn into_cow(self) -> Cow<'de, str> {
        match self {
            Key::Borrowed(k) => Cow::Borrowed(k),
            Key::Owned(k) => Cow::Owned(k),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Sets a field read once; a second one is an error, as for a derived `Deserialize`.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Deserialize<'de> for ChatRequest<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ChatVisitor;
        impl<'de> Visitor<'de> for ChatVisitor {
            type Value = ChatRequest<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat completion request object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ChatRequest<'de>, A::Error> {
                let (mut model, mut messages) = (None, None);
                let (mut stream, mut max_tokens, mut max_completion_tokens) = (None, None, None);
                let (mut n, mut logprobs, mut top_logprobs) = (None, None, None);
                let (mut logit_bias, mut tools, mut response_format) = (None, None, None);
                let mut extra = Raw::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "model" => once(&mut model, map.next_value()?, "model")?,
                        "messages" => once(&mut messages, map.next_value()?, "messages")?,
                        "stream" => once(&mut stream, map.next_value()?, "stream")?,
                        "max_tokens" => once(&mut max_tokens, map.next_value()?, "max_tokens")?,
                        "max_completion_tokens" => once(
                            &mut max_completion_tokens,
                            map.next_value()?,
                            "max_completion_tokens",
                        )?,
                        "n" => once(&mut n, map.next_value()?, "n")?,
                        "logprobs" => once(&mut logprobs, map.next_value()?, "logprobs")?,
                        "top_logprobs" => {
                            once(&mut top_logprobs, map.next_value()?, "top_logprobs")?
                        }
                        "logit_bias" => once(&mut logit_bias, map.next_value()?, "logit_bias")?,
                        "tools" => once(&mut tools, map.next_value()?, "tools")?,
                        "response_format" => {
                            once(&mut response_format, map.next_value()?, "response_format")?
                        }
                        _ => {
                            let value = map.next_value()?;
                            extra.0.push((key.into_cow(), value));
                        }
                    }
                }
                Ok(ChatRequest {
                    model: model.ok_or_else(|| de::Error::missing_field("model"))?,
                    messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
                    stream: stream.flatten(),
                    max_tokens: max_tokens.flatten(),
                    max_completion_tokens: max_completion_tokens.flatten(),
                    n: n.flatten(),
                    logprobs: logprobs.flatten(),
                    top_logprobs: top_logprobs.flatten(),
                    logit_bias: logit_bias.flatten(),
                    tools: tools.flatten(),
                    response_format: response_format.flatten(),
                    extra,
                    prompt_tokens: 0,
                })
            }
        }
        d.deserialize_map(ChatVisitor)
    }
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Message<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'de>, A::Error> {
                let (mut role, mut name, mut content) = (None, None, None);
                let mut extra = Raw::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "role" => once(&mut role, map.next_value()?, "role")?,
                        "name" => once(&mut name, map.next_value::<Option<String>>()?, "name")?,
                        "content" => once(&mut content, map.next_value()?, "content")?,
                        _ => {
                            let value = map.next_value()?;
                            extra.0.push((key.into_cow(), value));
                        }
                    }
                }
                Ok(Message {
                    role: role.ok_or_else(|| de::Error::missing_field("role"))?,
                    name: name.flatten(),
                    content,
                    extra,
                })
            }
        }
        d.deserialize_map(MessageVisitor)
    }
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl<'a> ChatRequest<'a> {
    /// Parses and checks a chat request body; the request borrows from it.
    pub fn parse(body: &'a [u8]) -> Result<Self, RouterError> {
        let mut req: ChatRequest = parse_json(body)?;
        check_model(&req.model)?;
        req.prompt_tokens = tokens::estimate(body);
        if req.messages.is_empty() {
            return Err(RouterError::InvalidRequest {
                message: "`messages` must contain at least one message.".to_owned(),
                param: Some("messages".to_owned()),
                code: "invalid_value",
            });
        }
        if req.n == Some(0) {
            return Err(RouterError::InvalidRequest {
                message: "`n` must be at least 1.".to_owned(),
                param: Some("n".to_owned()),
                code: "invalid_value",
            });
        }
        Ok(req)
    }

    /// Whether the client asked for a streamed answer.
    pub fn streams(&self) -> bool {
        self.stream == Some(true)
    }

    /// Which media the messages carry, from the types of their content parts (only a content
    /// that is an array of parts is read again).
    pub fn media(&self) -> Media {
        #[derive(Deserialize)]
        struct Part {
            #[serde(rename = "type", default)]
            kind: Option<String>,
        }
        let mut media = Media::default();
        let parts = self
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .filter(|c| c.text().trim_start().starts_with('['))
            .filter_map(|c| serde_json::from_str::<Vec<Json>>(c.text()).ok())
            .flatten()
            .filter_map(|part| serde_json::from_str::<Part>(part.text()).ok());
        for part in parts {
            match part.kind.as_deref() {
                Some("image_url") => media.images = true,
                Some("input_audio") => media.audio = true,
                _ => {}
            }
        }
        media
    }

    /// The output tokens the client asked for, if it set a limit.
    pub fn requested_output_tokens(&self) -> Option<u64> {
        match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl EmbeddingsRequest {
    /// Parses and checks an embeddings request body.
    pub fn parse(body: &[u8]) -> Result<Self, RouterError> {
        let req: EmbeddingsRequest = parse_json(body)?;
        check_model(&req.model)?;
        let empty = match &req.input {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => {
                return Err(RouterError::InvalidRequest {
                    message: "`input` must be a string or an array.".to_owned(),
                    param: Some("input".to_owned()),
                    code: "invalid_type",
                })
            }
        };
        if empty {
            return Err(RouterError::InvalidRequest {
                message: "`input` must not be empty.".to_owned(),
                param: Some("input".to_owned()),
                code: "invalid_value",
            });
        }
        Ok(req)
    }
}

fn check_model(model: &str) -> Result<(), RouterError> {
    if model.trim().is_empty() {
        return Err(RouterError::InvalidRequest {
            message: "`model` must not be empty.".to_owned(),
            param: Some("model".to_owned()),
            code: "invalid_value",
        });
    }
    Ok(())
}

/// Deserializes one JSON object, mapping syntax errors to `invalid_json` and shape errors to
/// `invalid_request_error` with the path of the offending field.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RouterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RouterError::InvalidJson {
            detail: "the body is empty".to_owned(),
        });
    }
    // JSON text is UTF-8 (RFC 8259); say so plainly rather than with a parser position.
    let text = std::str::from_utf8(body).map_err(|e| RouterError::InvalidJson {
        detail: format!(
            "the body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ),
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(RouterError::InvalidJson {
            detail: "expected a JSON object".to_owned(),
        });
    }
    // The common case, a valid body, goes without tracking the path; a body that fails is read
    // again with it, so that the error names the field.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
    de.end().map_err(|e| RouterError::InvalidJson {
        detail: e.to_string(),
    })?;
    Ok(value)
}

fn shape_error(err: serde_path_to_error::Error<serde_json::Error>) -> RouterError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        return RouterError::InvalidJson {
            detail: inner.to_string(),
        };
    }
    // serde_json appends " at line L column C"; the path says more.
    let text = inner.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let mut param = if path == "." { None } else { Some(path) };
    let code = if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|s| s.strip_suffix('`'))
    {
        param = Some(match param {
            Some(p) => format!("{p}.{field}"),
            None => field.to_owned(),
        });
        "missing_required_parameter"
    } else if text.starts_with("invalid type") {
        "invalid_type"
    } else {
        "invalid_value"
    };
    let message = match &param {
        Some(p) => format!("Invalid `{p}`: {text}."),
        None => format!("Invalid request: {text}."),
    };
    RouterError::InvalidRequest {
        message,
        param,
        code,
    }
}

/// A JSON object's fields in order, each value kept as written (for bodies the router rewrites
/// a field or two of: batch lines, Responses requests).
#[derive(Debug, Clone)]
pub(crate) struct RawObject<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// The field `key`, as written.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(RawObject(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A JSON object of `fields` (a key, and its value as JSON text), in order, compactly: the one
/// writer of the objects the router rewrites a field or two of (batch lines, Responses bodies
/// and their chat form), each value kept as written.
pub(crate) fn object_text<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A key as JSON; a string always serializes.
        if let Ok(k) = serde_json::to_string(key) {
            out.push_str(&k);
        }
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ChatRequest<'_>, RouterError> {
        ChatRequest::parse(body.as_bytes())
    }

    fn invalid(body: &str) -> (Option<String>, &'static str) {
        match chat(body) {
            Err(RouterError::InvalidRequest { param, code, .. }) => (param, code),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_request_and_keeps_unknown_fields() {
        let body = r#"{"model":"fast","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"}],"name":"ann"}],
            "stream":true,"max_tokens":64,"n":1,"logprobs":false,"tools":[{"type":"function"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"x"}},
            "temperature":0.2,"seed":7,"future_param":{"a":[1]}}"#;
        let r = chat(body).unwrap();
        assert_eq!(r.model, "fast");
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].role, Role::User);
        assert_eq!(r.messages[1].name.as_deref(), Some("ann"));
        assert!(r.streams());
        assert_eq!(r.max_tokens, Some(64));
        assert_eq!(r.response_format.as_ref().unwrap().kind, "json_schema");
        assert_eq!(r.extra.get("temperature").unwrap().text(), "0.2");
        assert_eq!(r.extra.get("future_param").unwrap().text(), r#"{"a":[1]}"#);
        assert_eq!(
            r.messages[1].content.as_ref().unwrap().text(),
            r#"[{"type":"text","text":"hi"}]"#
        );
        // Serializing gives back every field.
        let back: Value = serde_json::to_value(&r).unwrap();
        let orig: Value = serde_json::from_str(body).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn bad_shapes_name_the_param_and_the_code() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
                "missing_required_parameter",
            ),
            (
                r#"{"model":"m"}"#,
                Some("messages"),
                "missing_required_parameter",
            ),
            (
                r#"{"model":"m","messages":[]}"#,
                Some("messages"),
                "invalid_value",
            ),
            (
                r#"{"model":"","messages":[{"role":"user"}]}"#,
                Some("model"),
                "invalid_value",
            ),
            (
                r#"{"model":5,"messages":[{"role":"user"}]}"#,
                Some("model"),
                "invalid_type",
            ),
            (
                r#"{"model":"m","messages":"hi"}"#,
                Some("messages"),
                "invalid_type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"},{"role":"robot"}]}"#,
                Some("messages[1].role"),
                "invalid_value",
            ),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages[0].role"),
                "missing_required_parameter",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":"many"}"#,
                Some("max_tokens"),
                "invalid_type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#,
                Some("max_tokens"),
                "invalid_value",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                Some("stream"),
                "invalid_type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"n":0}"#,
                Some("n"),
                "invalid_value",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"response_format":{}}"#,
                Some("response_format.type"),
                "missing_required_parameter",
            ),
        ];
        for (body, param, code) in cases {
            let (p, c) = invalid(body);
            assert_eq!(p.as_deref(), *param, "{body}");
            assert_eq!(c, *code, "{body}");
        }
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        for body in [
            "",
            "  ",
            "{",
            "[]",
            "\"x\"",
            "null",
            r#"{"model":"m","messages":[{"role":"user"}]} {}"#,
            "model=auto",
            "{\"model\":\"m\",}",
        ] {
            match chat(body) {
                Err(RouterError::InvalidJson { .. }) => {}
                other => panic!("{body:?}: {other:?}"),
            }
        }
        match ChatRequest::parse(b"{\"model\":\"\xff\"}") {
            Err(RouterError::InvalidJson { detail }) => assert!(detail.contains("not UTF-8")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn detects_images() {
        let with = chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}}]}]}"#).unwrap();
        assert_eq!(
            with.media(),
            Media {
                images: true,
                audio: false
            }
        );
        let without =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"image_url"}]}"#).unwrap();
        assert_eq!(without.media(), Media::default());
    }

    /// Found by the `embeddings_request` fuzz target: an integer beyond u64 became a float
    /// whose re-parse differed, so a forwarded body could change a number it carried.
    #[test]
    fn regression_fuzz_big_integers_round_trip_exactly() {
        for body in [
            &br#"{"model":"e","input":[1111111111111111111112]}"#[..],
            br#"{"model":"e","input":[[0,1111111111111111111112,3]],"k":1e400000}"#,
            br#"{"model":"e","input":"x","dimensions":0.30000000000000004}"#,
        ] {
            let Ok(req) = EmbeddingsRequest::parse(body) else {
                continue;
            };
            let again = EmbeddingsRequest::parse(&serde_json::to_vec(&req).unwrap()).unwrap();
            assert_eq!(req, again, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn embeddings() {
        let r =
            EmbeddingsRequest::parse(br#"{"model":"e","input":["a","b"],"dimensions":8}"#).unwrap();
        assert_eq!(r.extra["dimensions"], 8);
        for (body, param) in [
            (&br#"{"model":"e"}"#[..], "input"),
            (br#"{"model":"e","input":""}"#, "input"),
            (br#"{"model":"e","input":[]}"#, "input"),
            (br#"{"model":"e","input":3}"#, "input"),
            (br#"{"input":"x"}"#, "model"),
        ] {
            match EmbeddingsRequest::parse(body) {
                Err(RouterError::InvalidRequest { param: p, .. }) => {
                    assert_eq!(p.as_deref(), Some(param))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
