//! Step 11: streamed answers. An event stream is handed to the client without the router
//! reading it (the edge pipes it in JavaScript and appends [`INTERRUPTED_EVENT`] when it ends
//! without `data: [DONE]`); only its first chunk (before anything is sent, so that an error
//! event still fails over) and its last bytes (after the end, for the usage) are read, by the
//! functions here.

use super::quota::Usage;

/// The error event sent to a client whose stream the upstream cut or ended without
/// `data: [DONE]`, after some of it was already sent: OpenAI's SDKs raise an error on a data
/// event carrying `error`, so the client never mistakes the cut for a complete answer.
pub const INTERRUPTED_EVENT: &str = "data: {\"error\":{\"message\":\"The upstream provider's \
    stream ended before it was complete; the response is cut short.\",\"type\":\"server_error\",\
    \"param\":null,\"code\":\"upstream_stream_interrupted\"}}\n\n";

/// Whether the first chunk of an event stream is an error rather than the answer: its first
/// data event carries `error` (OpenRouter and Groq report failures this way with a 200), or
/// the chunk has no event at all.
pub fn first_chunk_fails(chunk: &[u8]) -> bool {
    let text = String::from_utf8_lossy(chunk);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(':') || line.starts_with("event:") {
            continue;
        }
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            // Done before any answer: nothing to hand on.
            return true;
        }
        return serde_json::from_str::<serde_json::Value>(data)
            .ok()
            .is_some_and(|v| v.get("error").is_some_and(|e| !e.is_null()));
    }
    // Only comments (keep-alives) so far: the stream is alive.
    false
}

/// The usage a stream reported in its last events: a final `usage` chunk, or Groq's
/// `x_groq.usage` on the chunk with `finish_reason`. The last one found wins.
pub fn usage_from_tail(tail: &[u8]) -> Option<Usage> {
    let text = String::from_utf8_lossy(tail);
    text.lines().rev().find_map(|line| {
        let data = line.trim().strip_prefix("data:")?.trim_start();
        if !data.contains("usage") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(data).ok()?;
        let usage = v
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| v.get("x_groq")?.get("usage"))?;
        let n = |field: &str| usage.get(field).and_then(serde_json::Value::as_u64);
        Some(Usage {
            prompt_tokens: n("prompt_tokens")?,
            completion_tokens: n("completion_tokens").unwrap_or(0),
            cached_tokens: usage
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
        })
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
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["code"], "upstream_stream_interrupted");
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"].as_str().unwrap().len() > 20);
    }

    #[test]
    fn first_chunk_table() {
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
            // A first chunk cut inside the event is not an error by itself.
            ("data: {\"id\":\"c\",\"choi", false),
            ("", false),
        ];
        for (chunk, fails) in cases {
            assert_eq!(first_chunk_fails(chunk.as_bytes()), *fails, "{chunk:?}");
        }
    }

    #[test]
    fn usage_from_groq_and_openai_tails() {
        let groq = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"r\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            usage_from_tail(groq.as_bytes()),
            Some(Usage {
                prompt_tokens: 12,
                cached_tokens: 0,
                completion_tokens: 30
            })
        );
        let openai = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":64}}}\n\ndata: [DONE]\n\n";
        let u = usage_from_tail(openai.as_bytes()).unwrap();
        assert_eq!(u.counted(), 41);
        // A tail cut inside the usage event, or without one, yields nothing.
        assert_eq!(usage_from_tail(b"data: {\"usage\":{\"prompt_tok"), None);
        assert_eq!(usage_from_tail(b"data: {\"choices\":[]}\n\n"), None);
        assert_eq!(usage_from_tail(&[0xff, 0xfe, b'\n']), None);
    }
}
