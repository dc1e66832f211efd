use std::collections::BTreeMap;

use super::bank::{Booking, Dirty, KeyBlock, KEY_BLOCK_MS};
use super::holdings::{FLUSH_MS, VIEW_TRUST_MS};
use super::lease::{Want, LEASE_SHARE, LEASE_TTL_MS};
use super::ledger::{window_start, NoRoom, DAY_MS, MINUTE_MS};
use super::wire::{Batch, LeaseReturn, RefusedKey};
use super::*;
use crate::core::config::{Config, Limits, RateLimitDialect};
use crate::core::error::RouterError;
use crate::core::outcome::Outcome;
use crate::core::ratelimit::{refusal, report, Refusal};

const T0: u64 = 1_763_900_000_000 - 1_763_900_000_000 % DAY_MS; // midnight UTC

fn limits(rpm: u64, rpd: u64, tpm: u64, tpd: u64) -> Limits {
    Limits {
        rpm: Some(rpm),
        rpd: Some(rpd),
        tpm: Some(tpm),
        tpd: Some(tpd),
        max_output_tokens: None,
    }
}

fn groq_8b() -> Limits {
    limits(30, 14_400, 6_000, 500_000)
}

fn small() -> Limits {
    limits(10, 100, 1_000, 5_000)
}

fn large() -> Limits {
    limits(16_000, 1_000_000, 16_000_000, 1_000_000_000)
}

fn key(id: &str) -> KeyCard {
    KeyCard {
        id: id.to_owned(),
        fingerprint: format!("fp-{id}"),
    }
}

fn option(model: &str, l: Limits) -> ModelOption {
    ModelOption {
        model: model.to_owned(),
        limits: l,
    }
}

fn reserve(bank: &mut OrgLedger, model: &str, l: Limits, tokens: u64, now: u64) -> Booking {
    bank.reserve(
        &[option(model, l)],
        &[key("k")],
        tokens,
        now,
        &mut Dirty::default(),
    )
}

fn booked(b: &Booking) -> bool {
    matches!(b, Booking::Booked { .. })
}

// ---- the counters --------------------------------------------------------------------------

#[test]
fn exactly_the_limit_is_admitted_within_a_minute() {
    let mut bank = OrgLedger::default();
    let admitted = (0..50)
        .filter(|i| booked(&reserve(&mut bank, "m", small(), 10, T0 + i * 100)))
        .count();
    assert_eq!(admitted, 10);
    // The next minute has room again, the day keeps counting.
    assert!(booked(&reserve(
        &mut bank,
        "m",
        small(),
        10,
        T0 + MINUTE_MS
    )));
    assert_eq!(bank.books("m").rpd.used, 11);
}

#[test]
fn no_room_says_when_the_window_ends() {
    let mut bank = OrgLedger::default();
    for _ in 0..10 {
        assert!(booked(&reserve(&mut bank, "m", small(), 1, T0 + 5_000)));
    }
    assert_eq!(
        reserve(&mut bank, "m", small(), 1, T0 + 59_999),
        Booking::NoRoom {
            until_ms: T0 + MINUTE_MS
        }
    );
    assert_eq!(
        bank.books("m").room(&small(), 1, 1, T0 + 59_999),
        Err(NoRoom {
            until_ms: T0 + MINUTE_MS
        })
    );
}

#[test]
fn a_huge_request_books_no_more_than_the_smallest_token_window() {
    // The poisoning case: max_tokens of 10^15 once booked 10^15 on the minute and the day.
    let mut bank = OrgLedger::default();
    let Booking::Booked { ticket, .. } =
        reserve(&mut bank, "m", groq_8b(), 1_000_000_000_000_000, T0)
    else {
        panic!("an empty minute takes one request, whatever its size")
    };
    assert_eq!(ticket.tokens, 6_000, "capped at the minute's token limit");
    let b = bank.books("m");
    assert_eq!((b.tpm.used, b.tpd.used), (6_000, 6_000));
    // The minute is full; the next one serves normal requests, and the day is not poisoned.
    assert!(!booked(&reserve(&mut bank, "m", groq_8b(), 100, T0 + 1)));
    assert!(booked(&reserve(
        &mut bank,
        "m",
        groq_8b(),
        100,
        T0 + MINUTE_MS
    )));
    // Even given back twice over, a window never goes below zero.
    let mut b = bank.books("m");
    b.shift(Windows::at(T0 + MINUTE_MS), -5, -1_000_000);
    assert_eq!((b.rpm.used, b.tpm.used, b.tpd.used), (0, 0, 0));
    drop(ticket);
}

#[test]
fn tokens_limit_admission_and_the_day_rolls_at_midnight() {
    let mut bank = OrgLedger::default();
    assert!(booked(&reserve(&mut bank, "m", small(), 900, T0)));
    assert!(!booked(&reserve(&mut bank, "m", small(), 200, T0 + 1)));
    assert!(booked(&reserve(&mut bank, "m", small(), 100, T0 + 2)));
    // The day's tokens: 5,000; four more minutes of 1,000 fill it.
    for m in 1..5 {
        assert!(booked(&reserve(
            &mut bank,
            "m",
            small(),
            1_000,
            T0 + m * MINUTE_MS
        )));
    }
    assert_eq!(
        reserve(&mut bank, "m", small(), 1, T0 + 5 * MINUTE_MS),
        Booking::NoRoom {
            until_ms: T0 + DAY_MS
        }
    );
    assert!(booked(&reserve(&mut bank, "m", small(), 1, T0 + DAY_MS)));
}

#[test]
fn shifts_touch_only_the_window_they_were_booked_in() {
    let mut b = Books::default();
    let windows = b.book(1, 500, T0 + 59_000);
    // The minute rolled: giving back touches only the day.
    let mut later = b;
    later.book(1, 100, T0 + 61_000);
    later.shift(windows, -1, -500);
    assert_eq!(later.rpm.current(T0 + 61_000, MINUTE_MS), 1);
    assert_eq!(later.tpm.current(T0 + 61_000, MINUTE_MS), 100);
    assert_eq!(later.rpd.current(T0 + 61_000, DAY_MS), 1);
    assert_eq!(later.tpd.current(T0 + 61_000, DAY_MS), 100);
    // Spending reported for a window the books had not seen yet starts it.
    let mut fresh = Books::default();
    fresh.shift(Windows::at(T0 + 61_000), 2, 40);
    assert_eq!(fresh.rpm.current(T0 + 61_000, MINUTE_MS), 2);
}

#[test]
fn headers_tighten_the_books_never_loosen() {
    let mut b = Books::default();
    b.book(1, 100, T0);
    // Groq: requests are per day, tokens per minute.
    let r = report(RateLimitDialect::Groq, |n| match n {
        "x-ratelimit-limit-requests" => Some("14400"),
        "x-ratelimit-remaining-requests" => Some("14300"),
        "x-ratelimit-limit-tokens" => Some("6000"),
        "x-ratelimit-remaining-tokens" => Some("5990"),
        _ => None,
    });
    b.observe(&r, T0 + 1);
    assert_eq!(b.rpd.used, 100, "the provider has seen 100 requests today");
    assert_eq!(
        b.tpm.used, 100,
        "the books' 100 stand against the provider's 10"
    );
}

#[test]
fn a_429_cools_down_by_retry_after_window_or_default() {
    let now = T0 + 30_000;
    let retry = refusal(Some("7"), b"");
    assert_eq!(cooldown_until(&retry, now), now + 7_000);
    let tpm = refusal(
        None,
        b"Rate limit reached ... on tokens per minute (TPM): Limit 6000",
    );
    assert_eq!(cooldown_until(&tpm, now), T0 + MINUTE_MS);
    let rpd = refusal(None, b"... on requests per day (RPD): Limit 14400");
    assert_eq!(cooldown_until(&rpd, now), T0 + DAY_MS);
    assert_eq!(cooldown_until(&Refusal::default(), now), now + 10_000);
    let billing = Refusal {
        billing: true,
        ..Refusal::default()
    };
    assert_eq!(cooldown_until(&billing, now), now + 3_600_000);
}

// ---- the bank ------------------------------------------------------------------------------

#[test]
fn a_booking_takes_the_first_model_with_room_and_a_usable_key() {
    let mut bank = OrgLedger::default();
    let opts = [
        option("full", limits(1, 10, 1_000, 10_000)),
        option("m2", small()),
    ];
    let keys = [key("k1"), key("k2")];
    let mut dirty = Dirty::default();
    assert!(booked(&bank.reserve(&opts[..1], &keys, 1, T0, &mut dirty)));
    match bank.reserve(&opts, &keys, 1, T0, &mut dirty) {
        Booking::Booked { model, key_id, .. } => {
            assert_eq!((model.as_str(), key_id.as_str()), ("m2", "k1"))
        }
        other => panic!("{other:?}"),
    }
    // k1 refused with 401: k2 serves; both refused: no key at all (no made-up time).
    let refuse = |id: &str| RefusedKey {
        key: key(id),
        model: None,
        status: 401,
    };
    let batch = Batch {
        refused_keys: vec![refuse("k1")],
        ..Batch::default()
    };
    bank.absorb("h", &batch, T0, &mut dirty);
    assert!(dirty.meta, "the blocks' row is stored");
    match bank.reserve(&opts[1..], &keys, 1, T0, &mut dirty) {
        Booking::Booked { key_id, .. } => assert_eq!(key_id, "k2"),
        other => panic!("{other:?}"),
    }
    let batch = Batch {
        refused_keys: vec![refuse("k2")],
        ..Batch::default()
    };
    bank.absorb("h", &batch, T0, &mut dirty);
    assert_eq!(
        bank.reserve(&opts, &keys, 1, T0, &mut dirty),
        Booking::NoKey
    );
}

#[test]
fn a_refused_key_comes_back_with_a_new_secret_or_after_its_block() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    let batch = Batch {
        refused_keys: vec![
            RefusedKey {
                key: key("k1"),
                model: None,
                status: 401,
            },
            RefusedKey {
                key: key("k2"),
                model: Some("m1".into()),
                status: 403,
            },
        ],
        ..Batch::default()
    };
    bank.absorb("h", &batch, T0, &mut dirty);
    let only = |k: KeyCard, model: &str, now: u64, bank: &mut OrgLedger| {
        bank.reserve(
            &[option(model, large())],
            &[k],
            1,
            now,
            &mut Dirty::default(),
        )
    };
    assert_eq!(only(key("k1"), "m1", T0, &mut bank), Booking::NoKey);
    // The same id with a rotated secret is another key.
    let rotated = KeyCard {
        id: "k1".into(),
        fingerprint: "new".into(),
    };
    assert!(booked(&only(rotated, "m1", T0, &mut bank)));
    // A 403 is for one model only.
    assert_eq!(only(key("k2"), "m1", T0, &mut bank), Booking::NoKey);
    assert!(booked(&only(key("k2"), "m2", T0, &mut bank)));
    // After the block, the key is tried again; pruning forgets ended blocks.
    assert!(booked(&only(key("k1"), "m1", T0 + KEY_BLOCK_MS, &mut bank)));
    bank.prune(None, None, T0 + KEY_BLOCK_MS, &mut dirty);
    assert!(bank.blocks.is_empty());
}

fn want(model: &str, l: Limits, requests: u64, tokens_each: u64) -> Want {
    Want {
        model: model.to_owned(),
        limits: l,
        requests,
        tokens: requests * tokens_each,
    }
}

#[test]
fn leases_are_slices_booked_up_front_and_never_outlive_their_minute() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    let keys = [key("k")];
    let l = large();
    let lease = bank
        .grant(
            "h1",
            &want("m", l, 5_000, 100),
            &keys,
            T0 + 58_000,
            &mut dirty,
        )
        .unwrap();
    // At most 1/16 of the minute's 16,000 requests.
    assert_eq!(lease.requests_left, 16_000 / LEASE_SHARE);
    assert_eq!(lease.tokens_left, 5_000 * 100);
    assert_eq!(
        lease.expires_at_ms,
        T0 + MINUTE_MS,
        "cut at the minute's end"
    );
    let b = bank.books("m");
    assert_eq!((b.rpm.used, b.tpm.used), (1_000, 500_000), "booked at once");
    let lease = bank
        .grant("h2", &want("m", l, 10, 100), &keys, T0 + 60_000, &mut dirty)
        .unwrap();
    assert_eq!(lease.expires_at_ms, T0 + 60_000 + LEASE_TTL_MS);
    assert_eq!(bank.models["m"].leases.len(), 2, "one entry per holder");
}

#[test]
fn small_limits_get_no_lease_and_stay_exact() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    // 30 a minute: 1/16 is one request, below the minimum of two.
    assert_eq!(
        bank.grant(
            "h",
            &want("m", groq_8b(), 30, 10),
            &[key("k")],
            T0,
            &mut dirty
        ),
        None
    );
    // Nor while the model cools down, nor when no key may serve.
    let cool = Batch {
        cooldowns: vec![wire::Cooldown {
            model: "m".into(),
            until_ms: T0 + 5_000,
        }],
        ..Batch::default()
    };
    bank.absorb("h", &cool, T0, &mut dirty);
    assert_eq!(
        bank.grant(
            "h",
            &want("m", large(), 30, 10),
            &[key("k")],
            T0,
            &mut dirty
        ),
        None
    );
    assert_eq!(
        bank.grant("h", &want("m2", large(), 30, 10), &[], T0, &mut dirty),
        None
    );
}

#[test]
fn leases_take_half_of_what_is_left_so_the_last_requests_are_booked_one_by_one() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    let l = limits(1_600, 1_000_000, 100_000_000, 1_000_000_000);
    let keys = [key("k")];
    let mut granted = Vec::new();
    // One isolate holds at most 1/16: a second ask while it holds that gets nothing.
    assert!(bank
        .grant("h0", &want("m", l, 100, 1), &keys, T0, &mut dirty)
        .is_some());
    assert_eq!(
        bank.grant("h0", &want("m", l, 100, 1), &keys, T0, &mut dirty),
        None
    );
    granted.push(100);
    // Many isolates: 100 each (the cap of 1/16) while there is room, then half of what is left.
    let mut n = 1;
    while let Some(lease) = bank.grant(
        &format!("h{n}"),
        &want("m", l, 100, 1),
        &keys,
        T0,
        &mut dirty,
    ) {
        granted.push(lease.requests_left);
        n += 1;
    }
    assert_eq!(granted[..15], [100; 15], "{granted:?}");
    assert!(granted.windows(2).all(|w| w[0] >= w[1]));
    let left = 1_600 - granted.iter().sum::<u64>();
    assert!((1..8).contains(&left), "{granted:?}");
    // What no lease took is still there for synchronous bookings.
    for _ in 0..left {
        assert!(booked(&reserve(&mut bank, "m", l, 1, T0)));
    }
    assert!(!booked(&reserve(&mut bank, "m", l, 1, T0)));
}

#[test]
fn a_returned_lease_gives_back_what_is_left_once() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    let lease = bank
        .grant(
            "h",
            &want("m", large(), 100, 10),
            &[key("k")],
            T0,
            &mut dirty,
        )
        .unwrap();
    let back = Batch {
        returns: vec![LeaseReturn {
            id: lease.id,
            model: "m".into(),
            requests_left: 40,
            tokens_left: 400,
        }],
        ..Batch::default()
    };
    bank.absorb("h", &back, T0 + 1, &mut dirty);
    let b = bank.books("m");
    assert_eq!((b.rpm.used, b.tpm.used), (60, 600));
    // Again, or by another holder: ignored.
    bank.absorb("h", &back, T0 + 2, &mut dirty);
    bank.absorb("other", &back, T0 + 2, &mut dirty);
    assert_eq!(bank.books("m").rpm.used, 60);
    assert!(bank.models["m"].leases.is_empty());
}

#[test]
fn pruning_forgets_unconfigured_models_and_keys_and_ended_leases() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    let keys = [key("k")];
    assert!(booked(&reserve(&mut bank, "gone", small(), 1, T0)));
    let _ = bank.grant("h", &want("kept", large(), 10, 1), &keys, T0, &mut dirty);
    bank.absorb(
        "h",
        &Batch {
            refused_keys: vec![RefusedKey {
                key: key("removed"),
                model: None,
                status: 401,
            }],
            ..Batch::default()
        },
        T0,
        &mut dirty,
    );
    let mut dirty = Dirty::default();
    bank.prune(
        Some(&["kept".to_owned()]),
        Some(&["k".to_owned()]),
        T0 + DAY_MS,
        &mut dirty,
    );
    assert_eq!(bank.models.keys().collect::<Vec<_>>(), ["kept"]);
    assert!(bank.models["kept"].leases.is_empty(), "yesterday's lease");
    assert!(bank.blocks.is_empty());
    assert!(dirty.meta && dirty.models.contains("gone") && dirty.models.contains("kept"));
}

// ---- the isolate ---------------------------------------------------------------------------

fn offers(orgs: &[(&str, &[&str])]) -> Vec<Offer> {
    orgs.iter()
        .map(|(org, keys)| Offer {
            org: (*org).to_owned(),
            keys: keys.iter().map(|k| key(k)).collect(),
        })
        .collect()
}

/// One bank per organization and one isolate, wired as the edge wires them.
struct Wire {
    banks: Banks,
    h: Holdings,
}

impl Wire {
    fn new() -> Self {
        Wire {
            banks: Banks::default(),
            h: Holdings::new("iso"),
        }
    }

    /// Admits one request as the planner does: from a lease, or booked with the bank.
    fn admit(
        &mut self,
        offers: &[Offer],
        l: Limits,
        tokens: u64,
        now: u64,
    ) -> Option<(String, Ticket)> {
        let mut offers = offers.to_vec();
        loop {
            match self.h.admit("p", &offers, "m", &l, tokens, None, now) {
                Admission::Admitted { org, ticket, .. } => {
                    return Some((offers[org].org.clone(), ticket))
                }
                Admission::Ask { org, keys } => {
                    let shard = Shard::new("p", &offers[org].org);
                    let call = self
                        .h
                        .reserve(&shard, vec![option("m", l)], keys, tokens, now);
                    if let Reply::Reserved { ticket, .. } = self.send(call, now) {
                        return Some((shard.org, ticket));
                    }
                    offers.remove(org);
                }
                Admission::Full { .. } | Admission::NoKey => return None,
            }
        }
    }

    /// Sends a call to its bank and hands the reply back, as the edge does.
    fn send(&mut self, call: Call, now: u64) -> Reply {
        let reply = self.banks.call(&call.shard, call.command, now);
        self.h.answered(&call.shard, call.id, &reply, now);
        reply
    }

    /// Runs the background work once, as the edge's maintenance loop does.
    fn maintain(&mut self, now: u64) -> usize {
        let calls = self.h.due(now);
        let n = calls.len();
        for call in calls {
            self.send(call, now);
        }
        n
    }
}

#[test]
fn a_quiet_isolate_books_every_request_with_the_bank() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"]), ("b", &["k2"])]);
    let (org, ticket) = w.admit(&o, small(), 10, T0).unwrap();
    assert_eq!((org.as_str(), ticket.source), ("a", Source::Bank));
    // The view came back with the reply: org a has less headroom now, so b is asked next.
    let (org, _) = w.admit(&o, small(), 10, T0 + 1).unwrap();
    assert_eq!(org, "b");
}

#[test]
fn a_busy_isolate_admits_from_its_lease_with_no_call() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    for i in 0..3 {
        assert_eq!(
            w.admit(&o, large(), 10, T0 + i).unwrap().1.source,
            Source::Bank
        );
    }
    // Three a second is a rate worth a lease: the background work asks for one.
    assert_eq!(w.maintain(T0 + 3), 1);
    let bank_calls_before = w.banks.0["p/a"].books("m").rpm.used;
    let mut from_lease = 0;
    for i in 0..7 {
        let (_, t) = w.admit(&o, large(), 10, T0 + 10 + i).unwrap();
        if matches!(t.source, Source::Lease { .. }) {
            from_lease += 1;
        }
    }
    assert_eq!(from_lease, 7);
    assert_eq!(
        w.banks.0["p/a"].books("m").rpm.used,
        bank_calls_before,
        "nothing new was booked at the bank: the lease was booked up front"
    );
}

#[test]
fn give_backs_to_a_held_lease_stay_in_the_isolate() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    for i in 0..3 {
        let _ = w.admit(&o, large(), 10, T0 + i).unwrap();
    }
    w.maintain(T0 + 3);
    let (_, t) = w.admit(&o, large(), 10, T0 + 4).unwrap();
    let left = |w: &Wire| w.h.leases("p")[0].1.requests_left;
    let before = left(&w);
    let shard = Shard::new("p", "a");
    w.h.settle(&shard, &key("k1"), t, Effect::NotSpent, None, None, T0 + 5);
    assert_eq!(left(&w), before + 1);
    let (_, t) = w.admit(&o, large(), 10, T0 + 6).unwrap();
    // Real usage below the estimate: the difference is back in the lease's tokens.
    let tokens = w.h.leases("p")[0].1.tokens_left;
    let usage = Usage {
        prompt_tokens: 3,
        cached_tokens: 0,
        completion_tokens: 1,
    };
    w.h.settle(
        &shard,
        &key("k1"),
        t,
        Effect::Spent,
        Some(usage),
        None,
        T0 + 7,
    );
    assert_eq!(w.h.leases("p")[0].1.tokens_left, tokens + 6);
    assert!(
        w.h.due(T0 + 8).is_empty(),
        "nothing to tell the bank: the give-backs stayed in the lease"
    );
    // A lease holder still refreshes its view once it is old, with nothing else to say.
    let calls = w.h.due(T0 + 3 + VIEW_TRUST_MS);
    let [Call {
        command: Command::Exchange { batch, .. },
        ..
    }] = calls.as_slice()
    else {
        panic!("{calls:?}")
    };
    assert!(batch.is_empty());
}

#[test]
fn a_cooldown_seen_by_one_isolate_reaches_the_others_leases_within_a_refresh() {
    let mut bank = OrgLedger::default();
    let o = offers(&[("a", &["k1"]), ("b", &["k2"])]);
    let shard = Shard::new("p", "a");
    let mut one = Holdings::new("one");
    let call = |h: &mut Holdings, bank: &mut OrgLedger, now: u64| {
        for c in h.due(now) {
            let reply = apply(bank, c.command, now, &mut Dirty::default());
            h.answered(&c.shard, c.id, &reply, now);
        }
    };
    // Isolate one holds a lease on org a.
    for i in 0..3 {
        let Admission::Ask { keys, .. } = one.admit("p", &o[..1], "m", &large(), 10, None, T0 + i)
        else {
            panic!()
        };
        let c = one.reserve(&shard, vec![option("m", large())], keys, 10, T0 + i);
        let reply = apply(&mut bank, c.command, T0 + i, &mut Dirty::default());
        one.answered(&shard, c.id, &reply, T0 + i);
    }
    call(&mut one, &mut bank, T0 + 3);
    assert!(matches!(
        one.admit("p", &o, "m", &large(), 10, None, T0 + 4),
        Admission::Admitted { org: 0, .. }
    ));
    // Another isolate's 429 on org a reaches the bank.
    let cooldown = Batch {
        cooldowns: vec![wire::Cooldown {
            model: "m".into(),
            until_ms: T0 + 60_000,
        }],
        ..Batch::default()
    };
    bank.absorb("two", &cooldown, T0 + 5, &mut Dirty::default());
    // Isolate one learns it at its next refresh, stops spending the lease and returns it.
    call(&mut one, &mut bank, T0 + 3 + VIEW_TRUST_MS);
    assert!(matches!(
        one.admit("p", &o, "m", &large(), 10, None, T0 + 3 + VIEW_TRUST_MS),
        Admission::Ask { org: 1, .. }
    ));
    call(&mut one, &mut bank, T0 + 4 + VIEW_TRUST_MS);
    assert!(one.leases("p").is_empty());
    assert!(bank.models["m"].leases.is_empty());
}

#[test]
fn a_429_stops_the_isolate_at_once_and_returns_its_lease() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"]), ("b", &["k2"])]);
    for i in 0..3 {
        let _ = w.admit(&o, large(), 10, T0 + i).unwrap();
    }
    w.maintain(T0 + 3);
    let (org, t) = w.admit(&o, large(), 10, T0 + 4).unwrap();
    let shard = Shard::new("p", &org);
    let refused = Refusal {
        retry_after_ms: Some(30_000),
        ..Refusal::default()
    };
    w.h.settle(
        &shard,
        &key("k1"),
        t,
        Effect::Refused(refused),
        None,
        None,
        T0 + 5,
    );
    // The next request goes elsewhere at once, before the bank hears of it.
    let (next, _) = w.admit(&o, large(), 10, T0 + 6).unwrap();
    assert_ne!(next, org);
    // The report goes at once (urgent), with the lease's remainder.
    let calls = w.h.due(T0 + 6);
    let report = calls.into_iter().find(|c| c.shard == shard);
    let Some(report) = report else {
        panic!("no report")
    };
    let Command::Exchange { batch, wants, .. } = &report.command else {
        panic!("{report:?}")
    };
    assert_eq!(batch.cooldowns.len(), 1);
    assert_eq!(batch.returns.len(), 1);
    assert!(wants.is_empty(), "no lease while cooling down");
    let reply = w.send(report, T0 + 6);
    let Reply::Exchanged { view, .. } = reply else {
        panic!()
    };
    assert_eq!(view.models["m"].cooldown_until_ms, T0 + 5 + 30_000);
    assert_eq!(
        view.models["m"].rpm.used, 3,
        "three booked; the refused one went back into the lease, returned whole"
    );
}

#[test]
fn a_401_blocks_the_key_and_the_organizations_other_key_serves() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1", "k2"])]);
    let (_, t) = w.admit(&o, large(), 10, T0).unwrap();
    let shard = Shard::new("p", "a");
    w.h.settle(
        &shard,
        &key("k1"),
        t,
        Effect::KeyRefused { status: 401 },
        None,
        None,
        T0,
    );
    match w.h.admit("p", &o, "m", &large(), 10, None, T0 + 1) {
        Admission::Ask { keys, .. } => assert_eq!(keys, [key("k2")]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_snapshot_is_believed_briefly_then_the_bank_is_asked_again() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    for i in 0..10 {
        let _ = w.admit(&o, small(), 1, T0 + i).unwrap();
    }
    assert!(w.admit(&o, small(), 1, T0 + 20).is_none());
    assert!(matches!(
        w.h.admit("p", &o, "m", &small(), 1, None, T0 + 21),
        Admission::Full { until_ms } if until_ms == T0 + MINUTE_MS
    ));
    // Later, another isolate may have given some back: the bank is asked.
    assert!(matches!(
        w.h.admit("p", &o, "m", &small(), 1, None, T0 + 20 + VIEW_TRUST_MS),
        Admission::Ask { .. }
    ));
}

#[test]
fn idle_isolates_return_their_leases_and_then_hold_nothing() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    for i in 0..3 {
        let _ = w.admit(&o, large(), 10, T0 + i).unwrap();
    }
    w.maintain(T0 + 3);
    assert!(w.banks.0["p/a"].books("m").rpm.used > 3);
    // No traffic: the lease expires, is returned, and nothing is left to do.
    let later = T0 + 3 + LEASE_TTL_MS;
    assert_eq!(w.maintain(later), 1);
    assert_eq!(
        w.banks.0["p/a"].books("m").rpm.used,
        3,
        "the unused part came back"
    );
    assert!(w.h.leases("p").is_empty());
    assert_eq!(w.h.next_wake(later + 5_000), None);
}

#[test]
fn an_isolate_turning_busy_asks_for_the_lease_its_new_rate_needs() {
    let mut h = Holdings::new("iso");
    let o = offers(&[("a", &["k1"])]);
    // Eight requests in the first 25 ms of a second, after a pause.
    for i in 0..8 {
        let _ = h.admit("p", &o, "m", &large(), 10, None, T0 + 5_000 + i * 3);
    }
    let calls = h.due(T0 + 5_025);
    let [Call {
        command: Command::Exchange { wants, .. },
        ..
    }] = calls.as_slice()
    else {
        panic!("{calls:?}")
    };
    // 8 in the first 100 ms counted as 80 a second: two seconds of it.
    assert_eq!(wants[0].requests, 161);
    // One request alone is no rate: a quiet isolate books with the bank.
    let mut quiet = Holdings::new("quiet");
    let _ = quiet.admit("p", &o, "m", &large(), 10, None, T0);
    assert!(quiet.due(T0 + 1).is_empty());
}

#[test]
fn a_lease_that_ends_with_its_minute_is_not_renewed_over_and_over() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    let start = T0 + 58_000;
    for i in 0..3 {
        let _ = w.admit(&o, large(), 10, start + i).unwrap();
    }
    assert_eq!(w.maintain(start + 3), 1);
    let lease = w.h.leases("p")[0].1.clone();
    assert_eq!(lease.expires_at_ms, T0 + MINUTE_MS);
    // In the minute's last second, with traffic: no renewal could last longer, so none is
    // asked; the one call is the view's refresh, once its second is up.
    let mut calls = 0;
    for ms in (59_000..60_000).step_by(10) {
        // 20 requests a second, less than the lease was sized for.
        if ms % 50 == 0 {
            let _ = w.h.admit("p", &o, "m", &large(), 10, None, T0 + ms);
        }
        calls += w.maintain(T0 + ms);
    }
    assert_eq!(calls, 1);
    assert_eq!(w.h.leases("p").len(), 1);
    assert_eq!(
        w.banks.0["p/a"].models["m"]
            .leases
            .values()
            .flatten()
            .count(),
        1
    );
    // At the minute's turn it is returned and a new one asked for.
    let calls = w.h.due(T0 + MINUTE_MS);
    let [Call {
        command: Command::Exchange { batch, wants, .. },
        ..
    }] = calls.as_slice()
    else {
        panic!("{calls:?}")
    };
    assert_eq!((batch.returns.len(), wants.len()), (1, 1));
}

#[test]
fn a_failed_call_keeps_its_batch_and_a_late_booking_is_given_back() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    let shard = Shard::new("p", "a");
    let (_, t) = w.admit(&o, large(), 10, T0).unwrap();
    w.h.settle(&shard, &key("k1"), t, Effect::NotSpent, None, None, T0);
    let calls = w.h.due(T0);
    assert_eq!(calls.len(), 1, "a give-back goes soon");
    w.h.failed(&shard, calls[0].id, T0 + 1);
    assert!(w.h.bank_in_trouble(T0 + 1));
    // Tried again after a pause, not at once.
    assert!(w.h.due(T0 + 1).is_empty());
    let calls = w.h.due(T0 + 1 + FLUSH_MS);
    let [Call {
        command: Command::Exchange { batch, .. },
        ..
    }] = calls.as_slice()
    else {
        panic!("{calls:?}")
    };
    assert_eq!(batch.deltas[0].requests, -1, "sent again");
    // A call that timed out may still land: its batch is not sent twice.
    let mut w = Wire::new();
    let (_, t) = w.admit(&o, large(), 10, T0).unwrap();
    w.h.settle(&shard, &key("k1"), t, Effect::NotSpent, None, None, T0);
    let Admission::Ask { keys, .. } = w.h.admit("p", &o, "m", &large(), 10, None, T0 + 1) else {
        panic!()
    };
    let call =
        w.h.reserve(&shard, vec![option("m", large())], keys, 10, T0 + 1);
    w.h.slow(T0 + 400);
    assert!(w.h.due(T0 + 400 + FLUSH_MS).is_empty(), "still in flight");
    let reply = w.banks.call(&shard, call.command, T0 + 600);
    w.h.late(&shard, call.id, &reply, T0 + 600);
    w.maintain(T0 + 600);
    let bank = &w.banks.0["p/a"];
    let leased: u64 = bank.models["m"]
        .leases
        .values()
        .flatten()
        .map(|r| r.requests)
        .sum();
    assert_eq!(
        bank.books("m").rpm.used - leased,
        0,
        "given back once, the late one too (what a lease holds aside)"
    );
    // A booking that answered after the request stopped waiting.
    let mut w = Wire::new();
    let Admission::Ask { keys, .. } = w.h.admit("p", &o, "m", &large(), 10, None, T0) else {
        panic!()
    };
    let call =
        w.h.reserve(&shard, vec![option("m", large())], keys, 10, T0);
    let reply = w.banks.call(&shard, call.command, T0);
    w.h.late(&shard, call.id, &reply, T0 + 500);
    w.maintain(T0 + 500);
    assert_eq!(w.banks.0["p/a"].books("m").rpm.used, 0, "nothing leaked");
}

#[test]
fn a_batch_sent_again_after_a_failure_that_came_after_it_landed_is_applied_once() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    let shard = Shard::new("p", "a");
    let mut tickets = Vec::new();
    for i in 0..3 {
        tickets.push(w.admit(&o, small(), 1, T0 + i).unwrap().1);
    }
    // One of the three never reached the provider: given back.
    let t = tickets.pop().unwrap();
    w.h.settle(&shard, &key("k1"), t, Effect::NotSpent, None, None, T0 + 3);
    let calls = w.h.due(T0 + 3);
    let [call] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    // The bank applies it, and the reply is lost on the way back.
    let _ = w.banks.call(&call.shard, call.command.clone(), T0 + 3);
    w.h.failed(&shard, call.id, T0 + 4);
    assert_eq!(w.maintain(T0 + 4 + FLUSH_MS), 1, "sent again");
    assert_eq!(
        w.banks.0["p/a"].books("m").rpm.used,
        2,
        "given back once, not twice"
    );
}

#[test]
fn only_the_call_that_carried_a_batch_settles_it() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    let shard = Shard::new("p", "a");
    let (_, t1) = w.admit(&o, small(), 1, T0).unwrap();
    let (_, t2) = w.admit(&o, small(), 1, T0 + 1).unwrap();
    w.h.settle(&shard, &key("k1"), t1, Effect::NotSpent, None, None, T0 + 2);
    let e1 = w.h.due(T0 + 2).remove(0);
    // A synchronous booking goes out and answers while the first call is out: it carried no
    // batch, and settles nothing.
    let Admission::Ask { keys, .. } = w.h.admit("p", &o, "m", &small(), 1, None, T0 + 3) else {
        panic!()
    };
    let r =
        w.h.reserve(&shard, vec![option("m", small())], keys, 1, T0 + 3);
    assert_eq!(r.id, 0);
    w.send(r, T0 + 3);
    w.h.settle(&shard, &key("k1"), t2, Effect::NotSpent, None, None, T0 + 4);
    assert!(w.h.due(T0 + 4).is_empty(), "the first call is still out");
    // The first call fails after it landed: its own batch is sent again, and only it.
    let _ = w.banks.call(&e1.shard, e1.command.clone(), T0 + 5);
    w.h.failed(&shard, e1.id, T0 + 5);
    while w.maintain(T0 + 5 + FLUSH_MS) > 0 {}
    assert_eq!(
        w.banks.0["p/a"].books("m").rpm.used,
        1,
        "three booked, two given back, each once"
    );
}

#[test]
fn admissions_without_the_bank_count_until_the_bank_has_them() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    let shard = Shard::new("p", "a");
    // A call hangs; the isolate admits on its own meanwhile.
    let (_, t) = w.admit(&o, small(), 1, T0).unwrap();
    w.h.settle(&shard, &key("k1"), t, Effect::Spent, None, None, T0);
    let Admission::Ask { keys, .. } = w.h.admit("p", &o, "m", &small(), 1, None, T0 + 1) else {
        panic!()
    };
    let hung =
        w.h.reserve(&shard, vec![option("m", small())], keys, 1, T0 + 1);
    w.h.slow(T0 + 400);
    let advisory = (0..20)
        .filter(|i| {
            matches!(
                w.h.admit("p", &o, "m", &small(), 1, None, T0 + 500 + i),
                Admission::Admitted { .. }
            )
        })
        .count();
    assert_eq!(advisory, 9, "ten a minute, one booked before");
    // The trouble ends while the hung call is still out: a booking carries no batch, and the
    // bank's reply must not wipe what only the isolate knows.
    let Admission::Ask { keys, .. } = w.h.admit("p", &o, "m", &small(), 1, None, T0 + 6_000) else {
        panic!("the isolate still counts its own admissions")
    };
    let _ = keys;
    assert!(matches!(
        w.h.admit("p", &o, "m", &small(), 1, None, T0 + 6_000),
        Admission::Ask { .. }
    ));
    drop(hung);
}

#[test]
fn a_refused_renewal_backs_off_and_unsliceable_limits_ask_for_nothing() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    // A free plan's 30 a minute can never be leased: no background call after requests.
    for i in 0..5 {
        let _ = w.admit(&o, groq_8b(), 10, T0 + i).unwrap();
    }
    assert_eq!(w.maintain(T0 + 5), 0);
    // Leasable limits, but the window is nearly full: the bank grants nothing, and the
    // isolate does not ask again before the back-off.
    let mut w = Wire::new();
    let l = limits(1_600, 1_000_000, 100_000_000, 1_000_000_000);
    let keys = [key("k1")];
    let bank = w.banks.bank(&Shard::new("p", "a"));
    for _ in 0..1_595 {
        assert!(booked(&bank.reserve(
            &[option("m", l)],
            &keys,
            1,
            T0,
            &mut Dirty::default()
        )));
    }
    // Two requests: a rate worth a lease, and three left, half of which is too little.
    let _ = w.admit(&o, l, 1, T0 + 1).unwrap();
    let _ = w.admit(&o, l, 1, T0 + 2).unwrap();
    let calls: usize = (3..300).map(|ms| w.maintain(T0 + ms)).sum();
    assert_eq!(calls, 1, "one refused ask, then the back-off");
    assert!(w.h.next_wake(T0 + 300).is_none_or(|t| t >= T0 + 300));
}

#[test]
fn surrender_gives_every_lease_back_at_once() {
    let mut w = Wire::new();
    let o = offers(&[("a", &["k1"])]);
    for i in 0..3 {
        let _ = w.admit(&o, large(), 10, T0 + i).unwrap();
    }
    w.maintain(T0 + 3);
    assert!(!w.h.leases("p").is_empty());
    w.h.surrender(T0 + 10);
    assert_eq!(w.maintain(T0 + 10), 1);
    assert!(w.h.leases("p").is_empty());
    assert_eq!(
        w.banks.0["p/a"].books("m").rpm.used,
        3,
        "only what was spent stays booked"
    );
}

#[test]
fn without_the_bank_an_isolate_alone_never_exceeds_the_limits_as_last_seen() {
    let mut h = Holdings::new("iso");
    let o = offers(&[("a", &["k1"])]);
    let shard = Shard::new("p", "a");
    // The bank does not answer: trouble.
    h.slow(T0);
    let _ = &shard;
    let admitted = (0..30)
        .filter(|i| {
            matches!(
                h.admit("p", &o, "m", &small(), 1, None, T0 + i),
                Admission::Admitted { ref ticket, .. } if ticket.source == Source::Advisory
            )
        })
        .count();
    assert_eq!(
        admitted, 10,
        "the minute's limit, counted on the isolate's own books"
    );
    // What it admitted is reported when the bank is back.
    let calls = h.due(T0 + 30 + FLUSH_MS);
    let [Call {
        command: Command::Exchange { batch, .. },
        ..
    }] = calls.as_slice()
    else {
        panic!("{calls:?}")
    };
    assert_eq!(batch.deltas[0].requests, 10);
}

// ---- what outcomes mean, the wire, the status page ----------------------------------------

#[test]
fn every_outcome_has_one_effect_on_the_books() {
    let rejected = RouterError::UpstreamRejected {
        status: 400,
        message: "bad".into(),
        kind: "invalid_request_error".into(),
        param: None,
        code: None,
    };
    let r = Refusal::default();
    let cases = [
        (Outcome::Success, Effect::Spent),
        (Outcome::Timeout, Effect::Spent),
        (Outcome::BadAnswer, Effect::Spent),
        (Outcome::Rejected(rejected.clone()), Effect::RequestOnly),
        (Outcome::RateLimited(r), Effect::Refused(r)),
        (Outcome::Billing(r), Effect::Refused(r)),
        (
            Outcome::Auth { status: 403 },
            Effect::KeyRefused { status: 403 },
        ),
        (Outcome::TooLarge(rejected.clone()), Effect::NotSpent),
        (Outcome::NotServed(rejected), Effect::NotSpent),
        (Outcome::Capacity, Effect::NotSpent),
        (Outcome::ServerError { status: 503 }, Effect::NotSpent),
        (Outcome::Transport, Effect::NotSpent),
    ];
    for (outcome, effect) in cases {
        assert_eq!(Effect::of(&outcome), effect, "{outcome:?}");
    }
    assert_eq!(Effect::Spent.shift(100, Some(40)), (0, -60));
    assert_eq!(Effect::Spent.shift(100, Some(140)), (0, 40));
    assert_eq!(Effect::Spent.shift(100, None), (0, 0));
    assert_eq!(Effect::RequestOnly.shift(100, None), (0, -100));
    assert_eq!(Effect::NotSpent.shift(100, Some(5)), (-1, -100));
}

#[test]
fn commands_and_replies_round_trip_through_json() {
    let mut bank = OrgLedger::default();
    let cmd = Command::Reserve {
        holder: "iso".into(),
        batch: Batch::default(),
        options: vec![option("m", small())],
        keys: vec![key("k")],
        tokens: 12,
    };
    let text = serde_json::to_string(&cmd).unwrap();
    let back: Command = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cmd);
    let reply = apply(&mut bank, back, T0, &mut Dirty::default());
    let text = serde_json::to_string(&reply).unwrap();
    assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
    let want = want("m", large(), 10, 5);
    let _ = bank
        .grant("iso", &want, &[key("k")], T0, &mut Dirty::default())
        .unwrap();
    let status = apply(&mut bank, Command::Status, T0, &mut Dirty::default());
    let text = serde_json::to_string(&status).unwrap();
    assert_eq!(
        serde_json::from_str::<Reply>(&text).unwrap(),
        status,
        "with a lease out"
    );
    let Reply::Status { ledger, .. } = status else {
        panic!()
    };
    let text = serde_json::to_string(&ledger).unwrap();
    assert_eq!(serde_json::from_str::<OrgLedger>(&text).unwrap(), bank);
    assert!(!Command::Status.writes());
}

#[test]
fn the_status_view_shows_windows_leases_and_key_ids_never_secrets() {
    let mut bank = OrgLedger::default();
    let mut dirty = Dirty::default();
    assert!(booked(&reserve(&mut bank, "m", large(), 100, T0 + 1_000)));
    let lease = bank
        .grant(
            "iso-1",
            &want("m", large(), 10, 5),
            &[key("k")],
            T0 + 1_000,
            &mut dirty,
        )
        .unwrap();
    bank.blocks.push(KeyBlock {
        key_id: "k9".into(),
        fingerprint: "fp-secret".into(),
        status: 401,
        model: None,
        until_ms: T0 + 10_000,
    });
    let limits = BTreeMap::from([("m".to_owned(), large())]);
    let v = status::org_view(&bank, &limits, T0 + 2_000);
    assert_eq!(v["m"]["requests_per_minute"]["used"], 11);
    assert_eq!(v["m"]["requests_per_minute"]["limit"], 16_000);
    assert_eq!(
        v["m"]["requests_per_minute"]["resets_at_ms"],
        T0 + MINUTE_MS
    );
    assert_eq!(v["m"]["leases"][0]["holder"], "iso-1");
    assert_eq!(v["m"]["leases"][0]["requests"], lease.requests_left);
    let keys = serde_json::Value::from(status::blocked_keys(&bank, T0 + 2_000));
    assert_eq!(keys[0]["key_id"], "k9");
    assert!(!keys.to_string().contains("fp-secret"));
    assert_eq!(window_start(T0 + 2_000, MINUTE_MS), T0);
}

#[test]
fn prefix_hash_follows_the_static_prefix_only() {
    use crate::core::request::ChatRequest;
    let req = |system: &str, user: &str| {
        let body = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]});
        ChatRequest::parse(Box::leak(body.to_string().into_boxed_str()).as_bytes()).unwrap()
    };
    assert_eq!(
        prefix_hash(&req("be brief", "hi")),
        prefix_hash(&req("be brief", "other question"))
    );
    assert_ne!(
        prefix_hash(&req("be brief", "hi")),
        prefix_hash(&req("be long", "hi"))
    );
    assert!(caches_prompts("openai/gpt-oss-120b") && caches_prompts("moonshotai/kimi-k2-instruct"));
    assert!(!caches_prompts("llama-3.1-8b-instant"));
}

#[test]
fn the_same_prefix_stays_on_one_organization_while_it_has_room() {
    let mut h = Holdings::new("iso");
    let o = offers(&[("a", &["k1"]), ("b", &["k2"]), ("c", &["k3"])]);
    let pick = |h: &mut Holdings, prefix: u64| match h.admit(
        "p",
        &o,
        "m",
        &large(),
        1,
        Some(prefix),
        T0,
    ) {
        Admission::Ask { org, .. } => o[org].org.clone(),
        other => panic!("{other:?}"),
    };
    let first = pick(&mut h, 42);
    assert_eq!(pick(&mut h, 42), first);
    let spread: std::collections::BTreeSet<String> = (0..30).map(|p| pick(&mut h, p)).collect();
    assert_eq!(spread.len(), 3, "prefixes spread over every organization");
}

#[test]
fn plan_groups_consecutive_targets_of_a_tracked_provider() {
    let doc = serde_json::json!({
        "providers": {
            "groq": {"keys": [{"id": "g1", "secret": "G1", "org": "a"}, {"id": "g2", "secret": "G2", "org": "b"}, {"id": "g3", "secret": "G3", "org": "a"}]},
            "together": {"keys": [{"id": "t", "secret": "T"}]}
        },
        "routes": {"fast": ["groq/llama-3.1-8b-instant", "groq/openai/gpt-oss-20b", "together/x", "groq/qwen/qwen3-32b", "groq/untracked"]}
    });
    let c = Config::parse(&doc.to_string(), |n| {
        matches!(n, "G1" | "G3" | "T").then(|| "k".into())
    })
    .unwrap();
    let targets: Vec<&crate::core::config::Target> = c.targets("fast").unwrap().iter().collect();
    let shape: Vec<String> = plan(&c, &targets)
        .iter()
        .map(|s| match s {
            Step::Direct(t) => format!("direct {}", t.model),
            Step::Book {
                provider,
                options,
                offers,
                caching,
                ..
            } => {
                let models: Vec<String> = options
                    .iter()
                    .zip(caching)
                    .map(|(o, c)| format!("{}{}", o.model, if *c { "#" } else { "" }))
                    .collect();
                let orgs: Vec<String> = offers
                    .iter()
                    .map(|o| {
                        let keys: Vec<&str> = o.keys.iter().map(|k| k.id.as_str()).collect();
                        format!("{}={}", o.org, keys.join("+"))
                    })
                    .collect();
                format!("book {} {:?} {:?}", provider.name, models, orgs)
            }
        })
        .collect();
    assert_eq!(
        shape,
        [
            r#"book groq ["llama-3.1-8b-instant", "openai/gpt-oss-20b#"] ["a=g1+g3"]"#,
            "direct x",
            r#"book groq ["qwen/qwen3-32b"] ["a=g1+g3"]"#,
            "direct untracked",
        ]
    );
}
