//! Arbitrary bytes as a `POST /v1/chat/completions` body: parsing never panics, a parsed request
//! survives a serialize / re-parse round trip unchanged, and a refusal is a well-formed 4xx
//! OpenAI error.
#![no_main]

use edge_router::core::error::RouterError;
use edge_router::core::request::ChatRequest;
use edge_router::core::route::chat_needs;
use libfuzzer_sys::fuzz_target;

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

fn check_error(err: &RouterError) {
    let json: serde_json::Value =
        serde_json::from_str(&err.to_json()).expect("the error renders as JSON");
    assert!(json["error"].is_object(), "no `error` object: {json}");
    let status = err.status();
    assert!((400..=499).contains(&status), "status {status} for {err:?}");
}
