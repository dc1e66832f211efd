//! What every request target checks of a refusal.

use edge_router::core::error::RouterError;

/// A refusal renders as an OpenAI error object with a 4xx status.
pub fn check_error(err: &RouterError) {
    let json: serde_json::Value =
        serde_json::from_str(&err.to_json()).expect("the error renders as JSON");
    assert!(json["error"].is_object(), "no `error` object: {json}");
    let status = err.status();
    assert!((400..=499).contains(&status), "status {status} for {err:?}");
}
