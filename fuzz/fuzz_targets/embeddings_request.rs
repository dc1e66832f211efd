//! Arbitrary bytes as a `POST /v1/embeddings` body: parsing never panics, a parsed request
//! survives a serialize / re-parse round trip unchanged, and a refusal is a well-formed 4xx
//! OpenAI error.
#![no_main]

use edge_router::core::request::EmbeddingsRequest;
use libfuzzer_sys::fuzz_target;

mod common;
use common::check_error;

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
