//! Step 12: the answer, handed on. A successful body is passed to the client without the router
//! reading it: the edge pipes it in JavaScript. Only two pieces are read, by the functions here:
//! - its first chunk, before anything is sent, so that an answer that is no answer (an event
//!   stream opening with an error event, a JSON body that is not JSON) still fails over;
//! - its last bytes, after the end, for the real usage.
//!
//! An event stream that ends without `data: [DONE]` gets [`INTERRUPTED_EVENT`] appended.

use serde_json::Value;

use super::quota::Usage;

/// The error event sent to a client whose stream the upstream cut or ended without
/// `data: [DONE]`, after some of it was already sent: OpenAI's SDKs raise an error on a data
/// event carrying `error`, so the client never mistakes the cut for a complete answer.
pub const INTERRUPTED_EVENT: &str = "data: {\"error\":{\"message\":\"The upstream provider's \
    stream ended before it was complete; the response is cut short.\",\"type\":\"server_error\",\
    \"param\":null,\"code\":\"upstream_stream_interrupted\"}}\n\n";

/// How much of the first chunk is read (an error event or the start of a JSON body).
pub const FIRST_CHUNK_READ: usize = 4_096;

/// How many of a body's last bytes are read for its usage (the edge's `runtime.js` keeps as
/// many of a handed-on body).
pub const TAIL_BYTES: usize = 16_384;

/// A JSON answer up to this size is read whole before it is sent, as one piece: it is checked
/// entire, a failure mid-body still fails over, and its usage is known at once. A longer one is
/// handed on like a stream.
pub const WHOLE_JSON: usize = 256 * 1_024;

/// The kind of a successful body, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `text/event-stream`.
    Events,
    /// `application/json` (or any `+json`).
    Json,
    /// Anything else: handed on without a look.
    Other,
}

impl Body {
    pub fn of(content_type: &str) -> Body {
        if content_type.contains("text/event-stream") {
            Body::Events
        } else if content_type.contains("json") {
            Body::Json
        } else {
            Body::Other
        }
    }

    /// Whether the start of a body (up to [`FIRST_CHUNK_READ`] bytes of its first chunk) says
    /// it is not an answer: an event stream whose first event is an error or `[DONE]`, or a
    /// JSON body that is not an object or array, or is an error object.
    pub fn start_fails(self, start: &[u8]) -> bool {
        match self {
            Body::Events => events_start_fails(start),
            Body::Json => json_start_fails(start),
            Body::Other => false,
        }
    }

    /// Whether a body read whole is no answer: for JSON, a body that does not parse (cut short
    /// by the upstream yet ended cleanly). Its start was checked by [`Body::start_fails`].
    pub fn whole_fails(self, body: &[u8]) -> bool {
        self == Body::Json
            && serde_json::from_slice::<serde::de::IgnoredAny>(body.trim_ascii()).is_err()
    }

    /// The usage reported in a body's last bytes.
    pub fn usage(self, tail: &[u8]) -> Option<Usage> {
        match self {
            // The Responses API's last event repeats the whole answer: when its line starts
            // before the tail, its `usage` (near its end) is still there.
            Body::Events => usage_from_events(tail).or_else(|| usage_from_json(tail)),
            Body::Json => usage_from_json(tail),
            Body::Other => None,
        }
    }
}

/// An event stream's first chunk fails when its first data event is an error or `[DONE]`, or
/// when any complete event in it (one the chunk holds up to its blank line) carries data that is
/// not JSON. An event cut by the chunk's end is not judged.
fn events_start_fails(chunk: &[u8]) -> bool {
    let text = String::from_utf8_lossy(chunk);
    let text = text.replace("\r\n", "\n");
    let mut first = true;
    let mut events = text.split("\n\n").peekable();
    while let Some(event) = events.next() {
        // The last piece has no blank line after it: an event still on its way.
        let complete = events.peek().is_some();
        for line in event.lines() {
            let Some(data) = line.trim().strip_prefix("data:") else {
                // Comments (keep-alives), `event:` and `id:` lines.
                continue;
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                // Done before any answer: nothing to hand on.
                if first {
                    return true;
                }
                continue;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(v) if first && is_error(&v) => return true,
                Ok(_) => {}
                Err(_) if complete => return true,
                Err(_) => {}
            }
            first = false;
        }
    }
    // Only comments so far: the stream is alive.
    false
}

fn json_start_fails(start: &[u8]) -> bool {
    let trimmed = start.trim_ascii_start();
    match trimmed.first() {
        // `{"error": ...` as the first key, with a value other than `null`: some providers
        // answer a failure with a 200.
        Some(b'{') => trimmed[1..]
            .trim_ascii_start()
            .strip_prefix(b"\"error\"")
            .map(|rest| rest.trim_ascii_start())
            .and_then(|rest| rest.strip_prefix(b":"))
            .is_some_and(|value| !value.trim_ascii_start().starts_with(b"null")),
        Some(b'[') => false,
        // Only whitespace so far (a keep-alive before a slow answer): not decided yet, so not
        // refused.
        None => false,
        // HTML, plain text: not the JSON that was promised.
        Some(_) => true,
    }
}

/// An error in a stream's first event: a chat chunk's `error`, or the Responses API's `error`
/// and `response.failed` events.
fn is_error(v: &Value) -> bool {
    v.get("error").is_some_and(|e| !e.is_null())
        || matches!(
            v.get("type").and_then(Value::as_str),
            Some("error" | "response.failed")
        )
}

/// The usage in an event stream's last events: a final `usage` chunk, or Groq's `x_groq.usage`
/// on the chunk with `finish_reason`. The last one found wins.
fn usage_from_events(tail: &[u8]) -> Option<Usage> {
    let text = String::from_utf8_lossy(tail);
    text.lines().rev().find_map(|line| {
        let data = line.trim().strip_prefix("data:")?.trim_start();
        if !data.contains("usage") {
            return None;
        }
        let v: Value = serde_json::from_str(data).ok()?;
        // Chat chunks carry it at the top (Groq's in `x_groq`); the Responses API's last event
        // in its response.
        let usage = v
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| v.get("x_groq")?.get("usage"))
            .or_else(|| v.get("response")?.get("usage"))?;
        usage_of(usage)
    })
}

/// The usage in a JSON body's last bytes: the object after its last `"usage":` key (OpenAI's
/// format puts `usage` last; a whole body is its own tail).
fn usage_from_json(tail: &[u8]) -> Option<Usage> {
    let key = b"\"usage\"";
    let at = tail.windows(key.len()).rposition(|w| w == key)?;
    let rest = tail[at + key.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?;
    let value = serde_json::Deserializer::from_slice(rest)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    usage_of(&value)
}

/// A `usage` object, in chat's names or the Responses API's (`input_tokens`, ...).
fn usage_of(usage: &Value) -> Option<Usage> {
    let n = |field: &str| usage.get(field).and_then(Value::as_u64);
    let cached = |details: &str| {
        usage
            .get(details)
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
    };
    Some(Usage {
        prompt_tokens: n("prompt_tokens").or_else(|| n("input_tokens"))?,
        completion_tokens: n("completion_tokens")
            .or_else(|| n("output_tokens"))
            .unwrap_or(0),
        cached_tokens: cached("prompt_tokens_details")
            .or_else(|| cached("input_tokens_details"))
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_event_is_one_openai_error_event() {
        let data = INTERRUPTED_EVENT
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["code"], "upstream_stream_interrupted");
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"].as_str().unwrap().len() > 20);
    }

    #[test]
    fn kinds_from_content_type() {
        assert_eq!(Body::of("text/event-stream; charset=utf-8"), Body::Events);
        assert_eq!(Body::of("application/json"), Body::Json);
        assert_eq!(Body::of("application/problem+json"), Body::Json);
        assert_eq!(Body::of("text/plain"), Body::Other);
        assert!(!Body::Other.start_fails(b""));
    }

    #[test]
    fn event_stream_starts() {
        let cases: &[(&str, bool)] = &[
            (
                "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
                false,
            ),
            (": keep-alive\n\n", false),
            (
                ": OPENROUTER PROCESSING\n\ndata: {\"choices\":[]}\n\n",
                false,
            ),
            (
                "data: {\"error\":{\"message\":\"overloaded\",\"code\":502}}\n\n",
                true,
            ),
            (
                "event: error\ndata: {\"error\":{\"message\":\"x\"}}\n\n",
                true,
            ),
            ("data: {\"error\":null,\"choices\":[]}\n\n", false),
            ("data: [DONE]\n\n", true),
            ("data: {\"id\":\"c\",\"choi", false),
            ("", false),
            // A malformed event the chunk holds whole, first or later: no answer.
            ("data: {\"id\":\"c\",\"choi\n\n", true),
            ("data: {\"choices\":[]}\n\ndata: {oops}\n\n", true),
            ("data: {\"choices\":[]}\r\n\r\ndata: not json\r\n\r\n", true),
            // A later error event is the stream's own business once it has begun.
            (
                "data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n",
                false,
            ),
            ("data: {\"choices\":[]}\n\ndata: [DONE]\n\n", false),
            ("data: {\"choices\":[]}\n\ndata: {\"choi", false),
        ];
        for (chunk, fails) in cases {
            assert_eq!(
                Body::Events.start_fails(chunk.as_bytes()),
                *fails,
                "{chunk:?}"
            );
        }
    }

    #[test]
    fn json_starts() {
        let cases: &[(&str, bool)] = &[
            ("{\"id\":\"c\",\"object\":\"chat.completion\"", false),
            ("  \n{\"id\"", false),
            ("[1,2]", false),
            ("{\"error\":{\"message\":\"upstream timeout\"}}", true),
            ("{ \"error\": {\"message\": \"cut", true),
            ("{\"error\":null,\"id\":\"c\"}", false),
            ("{\"error\" : null, \"choices\":[{\"mess", false),
            ("{\"error\"", false),
            (
                "{\"id\":\"c\",\"error\":{\"message\":\"later keys are the answer's own\"}}",
                false,
            ),
            ("<html><body>502 Bad Gateway</body></html>", true),
            ("not json", true),
            ("\n  ", false),
            ("", false),
        ];
        for (start, fails) in cases {
            assert_eq!(
                Body::Json.start_fails(start.as_bytes()),
                *fails,
                "{start:?}"
            );
        }
    }

    #[test]
    fn whole_json_bodies_that_do_not_parse_fail() {
        let whole = "{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":\"hi\"}}]}\n";
        assert!(!Body::Json.whole_fails(whole.as_bytes()));
        assert!(Body::Json.whole_fails(&whole.as_bytes()[..30]));
        assert!(Body::Json.whole_fails(b""));
        assert!(Body::Json.whole_fails(b"{\"a\":1} trailing"));
        // Other kinds are not read whole.
        assert!(!Body::Events.whole_fails(b"data: {"));
    }

    #[test]
    fn usage_from_groq_and_openai_streams() {
        let groq = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"r\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            Body::Events.usage(groq.as_bytes()),
            Some(Usage {
                prompt_tokens: 12,
                cached_tokens: 0,
                completion_tokens: 30
            })
        );
        let openai = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":64}}}\n\ndata: [DONE]\n\n";
        assert_eq!(Body::Events.usage(openai.as_bytes()).unwrap().counted(), 41);
        assert_eq!(Body::Events.usage(b"data: {\"usage\":{\"prompt_tok"), None);
        assert_eq!(Body::Events.usage(b"data: {\"choices\":[]}\n\n"), None);
        assert_eq!(Body::Events.usage(&[0xff, 0xfe, b'\n']), None);
    }

    #[test]
    fn usage_of_a_responses_stream_whose_last_event_starts_before_the_tail() {
        let text = "x".repeat(40_000);
        let stream = format!(
            "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"content\":[{{\"text\":\"{text}\"}}]}}],\"usage\":{{\"input_tokens\":12,\"input_tokens_details\":{{\"cached_tokens\":2}},\"output_tokens\":9000,\"total_tokens\":9012}},\"user\":null}}}}\n\n"
        );
        let tail = &stream.as_bytes()[stream.len() - TAIL_BYTES..];
        assert_eq!(
            Body::Events.usage(tail),
            Some(Usage {
                prompt_tokens: 12,
                cached_tokens: 2,
                completion_tokens: 9000
            })
        );
        // A chat stream's `usage: null` chunks are no usage.
        assert_eq!(
            Body::Events.usage(b"data: {\"choices\":[],\"usage\":null}\n\n"),
            None
        );
    }

    #[test]
    fn usage_from_json_bodies_and_their_tails() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the word \"usage\" in text"}}],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100}}}"#;
        let u = Body::Json.usage(body).unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 120,
                cached_tokens: 100,
                completion_tokens: 30
            }
        );
        assert_eq!(u.counted(), 50);
        // Only the end of a long body is kept: the usage is still there.
        assert_eq!(Body::Json.usage(&body[40..]), Some(u));
        assert_eq!(
            Body::Json
                .usage(br#"{"usage":{"prompt_tokens":5}}"#)
                .unwrap()
                .counted(),
            5
        );
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            br#"{"usage":"x"}"#,
            br#"{"usage":null}"#,
            br#"{"usage": {"prompt_tok"#,
        ] {
            assert_eq!(
                Body::Json.usage(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
