use super::*;

#[test]
fn go_durations() {
    let cases: &[(&str, Option<u64>)] = &[
        // Real values from Groq and OpenAI responses.
        ("2m59.56s", Some(179_560)),
        ("7.66s", Some(7_660)),
        ("399ms", Some(399)),
        ("1m47.5854s", Some(107_586)),
        ("6m0s", Some(360_000)),
        ("20ms", Some(20)),
        ("1s", Some(1_000)),
        ("0s", Some(0)),
        ("0", Some(0)),
        ("86.4ms", Some(87)),
        ("1h2m3s", Some(3_723_000)),
        ("1.5h", Some(5_400_000)),
        ("23h59m59.999s", Some(86_399_999)),
        ("500us", Some(1)),
        ("500µs", Some(1)),
        ("1500ns", Some(1)),
        (" 7.66s ", Some(7_660)),
        // Refused.
        ("", None),
        ("s", None),
        ("7.66", None),
        ("7.66x", None),
        ("1d", None),
        ("-1s", None),
        ("1..2s", None),
        (".s", None),
        ("1m-2s", None),
        ("200h", None),
        ("9999999999999999999h", None),
        ("NaNs", None),
        ("1e3s", None),
        ("1 s", None),
        ("1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m1m", None),
    ];
    for (raw, want) in cases {
        assert_eq!(go_duration_ms(raw), *want, "{raw:?}");
    }
}

#[test]
fn seconds() {
    let cases: &[(&str, Option<u64>)] = &[
        ("60", Some(60_000)),
        ("6.78", Some(6_780)),
        ("0.5", Some(500)),
        ("0", Some(0)),
        ("1.0001", Some(1_001)),
        ("604800", Some(604_800_000)),
        ("604801", None),
        ("", None),
        ("-1", None),
        ("1e2", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("inf", None),
    ];
    for (raw, want) in cases {
        assert_eq!(seconds_ms(raw), *want, "{raw:?}");
    }
}

fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn window(
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_ms: Option<u64>,
) -> Option<WindowReport> {
    Some(WindowReport {
        limit,
        remaining,
        reset_ms,
    })
}

#[test]
fn groq_requests_are_per_day_and_tokens_per_minute() {
    let h = [
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-remaining-requests", "14370"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-tokens", "5997"),
        ("x-ratelimit-reset-tokens", "30ms"),
    ];
    let r = report(RateLimitDialect::Groq, headers(&h));
    assert_eq!(
        r.requests_day,
        window(Some(14_400), Some(14_370), Some(179_560))
    );
    assert_eq!(r.tokens_minute, window(Some(6_000), Some(5_997), Some(30)));
    assert_eq!((r.requests_minute, r.tokens_day), (None, None));
}

#[test]
fn openai_headers_are_per_minute() {
    let h = [
        ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-remaining-requests", "4999"),
        ("x-ratelimit-reset-requests", "12ms"),
        ("x-ratelimit-limit-tokens", "800000"),
        ("x-ratelimit-remaining-tokens", "799985"),
        ("x-ratelimit-reset-tokens", "1ms"),
    ];
    let r = report(RateLimitDialect::OpenAi, headers(&h));
    assert_eq!(
        r.requests_minute,
        window(Some(5_000), Some(4_999), Some(12))
    );
    assert_eq!(
        r.tokens_minute,
        window(Some(800_000), Some(799_985), Some(1))
    );
    assert_eq!(r.requests_day, None);
}

#[test]
fn mistral_together_fireworks_cerebras() {
    let mistral = [
        ("x-ratelimit-limit-tokens-minute", "500000"),
        ("x-ratelimit-remaining-tokens-minute", "499900"),
        ("x-ratelimit-limit-req-minute", "60"),
        ("x-ratelimit-remaining-req-minute", "59"),
        ("x-ratelimit-limit-tokens-month", "1000000000"),
    ];
    let r = report(RateLimitDialect::Mistral, headers(&mistral));
    assert_eq!(r.tokens_minute, window(Some(500_000), Some(499_900), None));
    assert_eq!(r.requests_minute, window(Some(60), Some(59), None));

    let together = [
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "9"),
        ("x-ratelimit-reset", "1"),
        ("x-tokenlimit-limit", "200000.0"),
        ("x-tokenlimit-remaining", "199123.5"),
    ];
    let r = report(RateLimitDialect::Together, headers(&together));
    assert_eq!(r.requests_minute, window(Some(10), Some(9), Some(1_000)));
    assert_eq!(r.tokens_minute, window(Some(200_000), Some(199_123), None));

    let fireworks = [
        ("x-ratelimit-limit-tokens-prompt", "20000"),
        ("x-ratelimit-limit-tokens-generated", "10000"),
        ("x-ratelimit-remaining-tokens-prompt", "19500"),
    ];
    let r = report(RateLimitDialect::Fireworks, headers(&fireworks));
    assert_eq!(r.tokens_minute, window(Some(20_000), Some(19_500), None));

    let cerebras = [
        ("x-ratelimit-limit-requests-day", "14400"),
        ("x-ratelimit-remaining-requests-day", "14398"),
        ("x-ratelimit-reset-requests-day", "33011.382867097855"),
        ("x-ratelimit-limit-tokens-minute", "60000"),
        ("x-ratelimit-remaining-tokens-minute", "59800"),
        ("x-ratelimit-reset-tokens-minute", "11.382867097854614"),
    ];
    let r = report(RateLimitDialect::Cerebras, headers(&cerebras));
    assert_eq!(
        r.requests_day,
        window(Some(14_400), Some(14_398), Some(33_011_383))
    );
    assert_eq!(
        r.tokens_minute,
        window(Some(60_000), Some(59_800), Some(11_383))
    );
}

#[test]
fn garbage_and_absent_headers_report_nothing() {
    let h = [
        ("x-ratelimit-limit-requests", "lots"),
        ("x-ratelimit-remaining-requests", "-5"),
        ("x-ratelimit-reset-requests", "soon"),
    ];
    assert_eq!(
        report(RateLimitDialect::Groq, headers(&h)),
        Report::default()
    );
    assert_eq!(
        report(RateLimitDialect::Groq, headers(&[])),
        Report::default()
    );
    // DeepInfra and OpenRouter send none; even if something looks familiar, nothing is read.
    let h = [("x-ratelimit-limit-requests", "100")];
    assert_eq!(
        report(RateLimitDialect::None, headers(&h)),
        Report::default()
    );
}

#[test]
fn groq_429_bodies() {
    let tpm = br#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 3513, Requested 3166. Please try again in 6.79s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing","type":"tokens","code":"rate_limit_exceeded"}}"#;
    assert_eq!(
        refusal(None, tpm),
        Refusal {
            window: Some(Window::TokensMinute),
            retry_after_ms: Some(6_790),
            billing: false
        }
    );
    // The header wins when both give a time.
    assert_eq!(refusal(Some("7"), tpm).retry_after_ms, Some(7_000));
    let rpd = br#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01abc` service tier `on_demand` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 1m26.4s.","type":"requests","code":"rate_limit_exceeded"}}"#;
    assert_eq!(
        refusal(None, rpd),
        Refusal {
            window: Some(Window::RequestsDay),
            retry_after_ms: Some(86_400),
            billing: false
        }
    );
    let rpm = br#"{"error":{"message":"... on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2s.","type":"requests"}}"#;
    assert_eq!(refusal(None, rpm).window, Some(Window::RequestsMinute));
    let tpd = br#"{"error":{"message":"... on tokens per day (TPD): Limit 500000, Used 499000, Requested 2000. Please try again in 2h52m48s."}}"#;
    let r = refusal(None, tpd);
    assert_eq!(
        (r.window, r.retry_after_ms),
        (Some(Window::TokensDay), Some(10_368_000))
    );
}

#[test]
fn openai_billing_and_foreign_bodies() {
    let billing = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    assert_eq!(
        refusal(None, billing),
        Refusal {
            window: None,
            retry_after_ms: None,
            billing: true
        }
    );
    for body in [
        &b""[..],
        b"<html>429 Too Many Requests</html>",
        b"\xff\xfe",
        br#"[{"error":{"code":429}}]"#,
    ] {
        assert_eq!(
            refusal(Some("3"), body),
            Refusal {
                window: None,
                retry_after_ms: Some(3_000),
                billing: false
            }
        );
    }
    assert_eq!(
        refusal(None, b"Please try again in forever."),
        Refusal::default()
    );
}

#[test]
fn retry_after_is_read_in_seconds_rounded_up_to_the_millisecond_and_capped_at_a_day() {
    let cases: &[(&str, Option<u64>)] = &[
        ("0", Some(0)),
        ("7", Some(7_000)),
        (" 12 ", Some(12_000)),
        ("6.78", Some(6_780)),
        ("0.0001", Some(1)),
        ("86400", Some(86_400_000)),
        ("999999999", Some(86_400_000)),
        ("", None),
        ("-1", None),
        ("abc", None),
        ("1e3", None),
        ("NaN", None),
        ("inf", None),
        ("1.2.3", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("123456789012345678901234567890123", None),
    ];
    for (raw, want) in cases {
        assert_eq!(retry_after_ms(raw), *want, "{raw:?}");
    }
    // A refusal's wait comes from the same parser, cap included.
    assert_eq!(
        refusal(Some("999999999"), b"").retry_after_ms,
        Some(86_400_000)
    );
    // So does a wait named in the body.
    let body = b"Rate limit reached. Please try again in 150h0m0s.";
    assert_eq!(refusal(None, body).retry_after_ms, Some(86_400_000));
}
