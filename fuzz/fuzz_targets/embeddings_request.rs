//! Arbitrary bytes as a `POST /v1/embeddings` body: parsing never panics, a parsed request
//! survives a serialize / re-parse round trip unchanged, and a refusal is a well-formed 4xx
//! OpenAI error.
#![no_main]

use edge_router::core::error::RouterError;
use edge_router::core::request::EmbeddingsRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match EmbeddingsRequest::parse(data) {
        Ok(req) => {
            let bytes = serde_json::to_vec(&req).expect("a parsed request serializes");
            let again = EmbeddingsRequest::parse(&bytes).expect("a serialized request parses");
            assert_eq!(req, again, "round trip changed the request");
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
