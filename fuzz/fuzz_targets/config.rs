//! Arbitrary UTF-8 text as the `ROUTER_CONFIG` document, every secret set to "k": validation
//! never panics, whatever it accepts or refuses.
#![no_main]

use edge_router::core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = Config::parse(text, |_| Some("k".to_owned())) {
        // The accessors the router calls on every request.
        for name in config.model_names() {
            let _ = config.targets(name);
            let _ = config.is_alias(name);
        }
    }
});
