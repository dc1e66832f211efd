use super::*;
use crate::core::config::access::usd;
use crate::core::config::Limits;

const DAY: u64 = 86_400_000;
/// 2026-12-03T12:00:00Z.
const NOON: u64 = 1_796_299_200_000;

fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
    }
}

/// A tier of budgets only: a cent a day, a dollar a month.
fn budgets() -> Tier {
    Tier {
        limits: Limits::default(),
        spend_per_day: Some(usd(0.01)),
        spend_per_month: Some(usd(1.0)),
    }
}

/// What bob's usage object says he spent today (at NOON) and this month.
fn bob_spent(day_spend: u64, month_spend: u64) -> Spent {
    Spent {
        subject: "user:bob".into(),
        day: day_of(NOON),
        day_spend,
        month_spend,
    }
}

#[test]
fn days_are_utc_dates() {
    assert_eq!(day_of(0), "1970-01-01");
    assert_eq!(day_of(NOON), "2026-12-03");
    assert_eq!(day_of(NOON - NOON % DAY - 1), "2026-12-02");
    assert_eq!(day_of(951_782_400_000), "2000-02-29");
    assert_eq!(until_month_end(NOON), 28 * DAY + DAY / 2);
}

#[test]
fn cached_tokens_are_priced_as_cached() {
    // gpt-oss-120b on Groq: $0.15 in, $0.075 cached, $0.60 out per million.
    let price = Price::per_million(0.15, Some(0.075), 0.60);
    let spend = cost(&price, &usage(1_000_000, 400_000, 1_000_000));
    assert_eq!(spend, usd(0.6 * 0.15 + 0.4 * 0.075 + 0.60));
    let counts = Counts::of(Some(&usage(10, 0, 20)), Some(&price), false);
    assert_eq!((counts.requests, counts.errors), (1, 0));
    let failed = Counts::of(None, Some(&price), true);
    assert_eq!((failed.requests, failed.errors, failed.spend), (0, 1, 0));
}

#[test]
fn a_budget_refuses_once_spent_and_names_itself() {
    let tier = budgets();
    let mut tally = Tally::default();
    assert!(tally.must_ask("user:bob", NOON));
    tally.learned(&[bob_spent(usd(0.009), usd(0.5))], NOON);
    assert!(!tally.must_ask("user:bob", NOON + 1_000));
    assert!(tally
        .check_budget("user:bob", "user bob", "free", &tier, NOON)
        .is_ok());
    // This isolate's own spending counts at once.
    let counts = Counts {
        requests: 1,
        spend: usd(0.001),
        ..Counts::default()
    };
    tally.record("user:bob", "groq/m", counts, NOON);
    let err = tally
        .check_budget("user:bob", "user bob", "free", &tier, NOON)
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (429, Some("budget_exceeded")));
    assert!(
        err.message().contains("spend per day budget"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("$0.01"), "{}", err.message());
    assert_eq!(err.headers(), vec![("retry-after", "43200".to_owned())]);
    // Another caller is unaffected; a new day asks again.
    assert!(tally
        .check_budget("user:carol", "user carol", "free", &tier, NOON)
        .is_ok());
    assert!(tally.must_ask("user:bob", NOON + DAY));
}

#[test]
fn a_spent_month_says_to_retry_at_the_months_end_even_when_the_day_is_spent_too() {
    let tier = budgets();
    let mut tally = Tally::default();
    tally.learned(&[bob_spent(usd(0.02), usd(1.0))], NOON);
    let err = tally
        .check_budget("user:bob", "user bob", "free", &tier, NOON)
        .unwrap_err();
    // At the day's end the month is still spent: the retry is at the month's (2027-01-01).
    assert!(
        err.message().contains("spend per month budget"),
        "{}",
        err.message()
    );
    let month_end_s = (until_month_end(NOON) / 1_000).to_string();
    assert_eq!(month_end_s, (28 * 86_400 + 43_200).to_string());
    assert_eq!(err.headers(), vec![("retry-after", month_end_s)]);
}

#[test]
fn what_is_pending_goes_to_each_callers_object_and_comes_back_on_failure() {
    let mut tally = Tally::default();
    assert_eq!(tally.due_at(), None);
    let one = Counts {
        requests: 1,
        prompt_tokens: 5,
        ..Counts::default()
    };
    tally.record("user:a", "groq/m", one, NOON);
    tally.record("user:a", "groq/m", one, NOON + 10);
    tally.record("user:b", "groq/m", one, NOON + 20);
    assert_eq!(tally.due_at(), Some(NOON + FLUSH_MS));
    let batches = tally.take(NOON + FLUSH_MS);
    let rows: Vec<&Row> = batches
        .iter()
        .flat_map(|(_, c)| match c {
            Command::Record { rows, .. } => rows.iter(),
            _ => panic!("{c:?}"),
        })
        .collect();
    assert_eq!(rows.len(), 2);
    let a = rows.iter().find(|r| r.subject == "user:a").unwrap();
    assert_eq!((a.counts.requests, a.counts.prompt_tokens), (2, 10));
    for (shard, c) in &batches {
        if let Command::Record { rows, .. } = c {
            assert!(rows.iter().all(|r| shard_of(&r.subject) == *shard));
        }
    }
    assert_eq!(tally.due_at(), None);
    for (_, c) in batches {
        tally.put_back(c, NOON + 2_000);
    }
    let again = tally.take(NOON + 3_000);
    let total: u64 = again
        .iter()
        .map(|(_, c)| match c {
            Command::Record { rows, .. } => rows.iter().map(|r| r.counts.requests).sum(),
            _ => 0,
        })
        .sum();
    assert_eq!(total, 3);
}

#[test]
fn a_flush_that_never_wakes_does_not_stop_the_later_ones() {
    let mut tally = Tally::default();
    assert!(tally.wait_to_flush(NOON));
    // Another request's background work leaves it to the one waiting.
    assert!(!tally.wait_to_flush(NOON + FLUSH_MS));
    assert!(tally.flush_waiting(NOON + FLUSH_MS));
    // The waiting flush's timer was cut off with its request's background work: it never
    // wakes. Past FLUSH_LOST_MS another flush takes over rather than none ever running again.
    assert!(!tally.flush_waiting(NOON + FLUSH_LOST_MS));
    assert!(tally.wait_to_flush(NOON + FLUSH_LOST_MS));
    tally.flush_woke();
    assert!(!tally.flush_waiting(NOON + FLUSH_LOST_MS));
    assert!(tally.wait_to_flush(NOON + FLUSH_LOST_MS + 1));
}

#[test]
fn shards_are_stable_and_spread() {
    assert_eq!(shard_of("user:alice"), shard_of("user:alice"));
    let used: std::collections::BTreeSet<String> =
        (0..200).map(|i| shard_of(&format!("user:{i}"))).collect();
    assert_eq!(used.len() as u64, SHARDS);
    assert_eq!(all_shards().len() as u64, SHARDS);
}

#[test]
fn the_query_names_days_and_a_format() {
    let q = parse_query("", NOON).unwrap();
    assert_eq!(
        (q.from.as_str(), q.to.as_str(), q.csv),
        ("2026-12-01", "2026-12-03", false)
    );
    let q = parse_query("from=2026-11-01&to=2026-11-30&format=csv", NOON).unwrap();
    assert_eq!(
        (q.from.as_str(), q.to.as_str(), q.csv),
        ("2026-11-01", "2026-11-30", true)
    );
    for bad in ["from=yesterday", "format=xml", "user=x", "to=2026-1-01"] {
        let err = parse_query(bad, NOON).unwrap_err();
        assert_eq!(err.status(), 400, "{bad}");
    }
}

#[test]
fn json_and_csv_say_the_same() {
    let rows = merge(vec![
        Row {
            day: "2026-12-03".into(),
            subject: "user:a,b".into(),
            model: "groq/m".into(),
            counts: Counts {
                requests: 1,
                prompt_tokens: 10,
                completion_tokens: 20,
                spend: 2_100_000,
                ..Counts::default()
            },
        },
        Row {
            day: "2026-12-03".into(),
            subject: "user:a,b".into(),
            model: "groq/m".into(),
            counts: Counts {
                requests: 2,
                errors: 1,
                ..Counts::default()
            },
        },
        Row {
            day: "2026-12-03".into(),
            subject: "=cmd".into(),
            model: "groq/m".into(),
            counts: Counts::default(),
        },
    ]);
    assert_eq!(rows.len(), 2);
    let csv = to_csv(&rows);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "day,subject,model,requests,errors,prompt_tokens,cached_tokens,completion_tokens,spend_usd"
    );
    assert_eq!(lines[1], "2026-12-03,'=cmd,groq/m,0,0,0,0,0,0");
    assert_eq!(
        lines[2],
        "2026-12-03,\"user:a,b\",groq/m,3,1,10,0,20,0.0000021"
    );
    let q = parse_query("", NOON).unwrap();
    let json: serde_json::Value = serde_json::from_str(&to_json(&q, &rows)).unwrap();
    assert_eq!(json["rows"][1]["requests"], 3);
    assert_eq!(json["rows"][1]["spend_usd"], 0.0000021);
}
