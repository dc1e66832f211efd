//! Step 5: the client's body, parsed once into typed requests.
//!
//! Only the fields the router decides on are typed; every other field, known to OpenAI today or
//! added tomorrow, is kept in `extra` and passed on, so a new parameter is never dropped. Errors
//! say what is wrong and where (`param` is a path such as `messages[2].role`), in the OpenAI
//! error format, never as a 500.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::RouterError;
use super::tokens;

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Every other field, passed on unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Estimated prompt tokens of the whole body (messages, tools, schemas), set by
    /// [`ChatRequest::parse`] from the bytes it parsed.
    #[serde(skip)]
    pub prompt_tokens: u64,
}

/// One chat message. `content` and everything else stay untyped in `extra`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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

/// `response_format`: its `type` typed, the rest (`json_schema`) kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// Parses and checks a chat request body.
    pub fn parse(body: &[u8]) -> Result<Self, RouterError> {
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

    /// Which media the messages carry, in one pass over their content parts.
    pub fn media(&self) -> Media {
        let mut media = Media::default();
        let parts = self
            .messages
            .iter()
            .filter_map(|m| m.extra.get("content").and_then(Value::as_array))
            .flatten();
        for part in parts {
            match part.get("type").and_then(Value::as_str) {
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
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RouterError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ChatRequest, RouterError> {
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
        assert_eq!(r.extra["temperature"], 0.2);
        assert_eq!(r.extra["future_param"]["a"][0], 1);
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
