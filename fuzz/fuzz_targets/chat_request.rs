//! Arbitrary bytes as a `POST /v1/chat/completions` body: parsing never panics, a parsed request
//! survives a serialize / re-parse round trip unchanged, and a refusal is a well-formed 4xx
//! OpenAI error.
#![no_main]

use edge_router::core::request::ChatRequest;
use edge_router::core::route::chat_needs;
use libfuzzer_sys::fuzz_target;

mod common;
use common::check_error;

fuzz_target!(|data: &[u8]| {
    match ChatRequest::parse(data) {
        Ok(req) => {
            let bytes = serde_json::to_vec(&req).expect("a parsed request serializes");
            let mut again = ChatRequest::parse(&bytes).expect("a serialized request parses");
            // `prompt_tokens` is estimated from the bytes parsed, not serialized: the serialized
            // body (other whitespace, key order, escapes) may well estimate differently.
            again.prompt_tokens = req.prompt_tokens;
            assert_eq!(req, again, "round trip changed the request");
            let _ = chat_needs(&req);
        }
        Err(err) => check_error(&err),
    }
});
