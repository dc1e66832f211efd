//! Regressions found by fuzzing the rate-limit readers (`fuzz/fuzz_targets/rate_limit_headers.rs`).

use edge_router::core::ratelimit::{refusal, Refusal, Window};

/// A Groq 429 body padded with `x` to `pad` bytes, then `é"}}`.
fn groq_429_padded(pad: usize) -> Vec<u8> {
    let mut body = br#"{"error":{"message":"Rate limit reached on tokens per minute (TPM): Limit 6000, Used 3513, Requested 3166. Please try again in 6.78s. "#.to_vec();
    body.resize(pad, b'x');
    body.extend_from_slice("é\"}}".as_bytes());
    assert!(std::str::from_utf8(&body).is_ok());
    body
}

const TPM_WAIT: Refusal = Refusal {
    window: Some(Window::TokensMinute),
    retry_after_ms: Some(6_780),
    billing: false,
};

/// `refusal` reads the first 4 KiB of a 429 body. When that cut fell inside a multi-byte
/// character, the whole prefix was thrown away as invalid UTF-8, and with it the window and the
/// wait the body names: the organization then cooled down for the default 10 s instead of until
/// the provider's time. Any valid UTF-8 body longer than 4 KiB whose byte 4096 is the middle of
/// a character did this. (The fuzz seed `regression-utf8-cut.txt` holds the same input.)
#[test]
fn a_429_body_cut_inside_a_character_keeps_its_window_and_wait() {
    // 'é' takes bytes 4095 and 4096: the read stops between them.
    assert_eq!(refusal(None, &groq_429_padded(4_095)), TPM_WAIT);
}

/// The same body one byte shorter, cut on a character boundary, is read.
#[test]
fn a_429_body_cut_on_a_character_boundary_keeps_its_window_and_wait() {
    assert_eq!(refusal(None, &groq_429_padded(4_094)), TPM_WAIT);
}
