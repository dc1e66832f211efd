//! Arbitrary bytes as the start and the tail of an upstream answer, for each kind of body: the
//! scanner that decides whether a first chunk is an answer, and the reader of the usage in the
//! last bytes, never panic; a usage found is one the body states; the start of a well-formed
//! answer is never refused.
#![no_main]

use edge_router::core::stream::{Body, FIRST_CHUNK_READ};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [Body::Events, Body::Json, Body::Other] {
        let start = &data[..data.len().min(FIRST_CHUNK_READ)];
        let _ = kind.start_fails(start);
        if let Some(usage) = kind.usage(data) {
            // The numbers come from the body: their digits are in it.
            let digits = usage.prompt_tokens.to_string();
            assert!(
                data.windows(digits.len()).any(|w| w == digits.as_bytes()),
                "usage {usage:?} not in the body"
            );
        }
    }
    // Whatever follows, an answer that opens as a chat completion or its first event is not
    // refused.
    let mut json = br#"{"id":"chatcmpl-1","object":"chat.completion","x":"#.to_vec();
    json.extend_from_slice(data);
    assert!(!Body::Json.start_fails(&json[..json.len().min(FIRST_CHUNK_READ)]));
    let mut events = b"data: {\"id\":\"c\",\"choices\":[]}\n\n".to_vec();
    events.extend_from_slice(data);
    assert!(!Body::Events.start_fails(&events[..events.len().min(FIRST_CHUNK_READ)]));
    // Bytes after `[DONE]` or an error event's start cannot make it pass.
    let mut done = b"data: [DONE]\n\n".to_vec();
    done.extend_from_slice(data);
    assert!(Body::Events.start_fails(&done[..done.len().min(FIRST_CHUNK_READ)]));
});
