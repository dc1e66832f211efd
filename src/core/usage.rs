//! The usage books: per caller, per day and model, the requests, tokens (prompt, cached,
//! completion), spend and errors; the spend budgets they enforce; and what the usage endpoint
//! renders of them.
//!
//! The books live in Durable Objects sharded by caller ([`shard_of`]). An isolate gathers what
//! its requests used in a [`Tally`] and sends it in batches in the background; each reply tells
//! it what the callers in the batch have spent, so that a budget is checked against what the
//! isolate holds, with no call on the request path in the common case. Time is an input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::access::PICO;
use super::config::{Price, Tier};
use super::error::RouterError;
use super::quota::ledger::DAY_MS;
use super::quota::Usage;

/// How many objects hold the usage books.
pub const SHARDS: u64 = 16;
/// A batch waits at most this long before it is sent.
pub const FLUSH_MS: u64 = 1_000;
/// What an isolate knows of a caller's spend is asked for again after this long.
pub const SPEND_TRUST_MS: u64 = 60_000;
/// A flush still waiting after this long is taken as lost (the background work it ran in was
/// cut off, its timer with it), so that it no longer holds back every later flush.
pub const FLUSH_LOST_MS: u64 = 30_000;

/// The counts of one line of the books.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests a provider answered.
    pub requests: u64,
    /// Requests that ended in an error (the router's own refusals included).
    pub errors: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Picodollars (10^-12 USD).
    pub spend: u64,
}

impl Counts {
    /// One request: served with `usage` at `price` (a request), or failed (an error).
    pub fn of(usage: Option<&Usage>, price: Option<&Price>, error: bool) -> Counts {
        let usage = usage.copied().unwrap_or_default();
        Counts {
            requests: u64::from(!error),
            errors: u64::from(error),
            prompt_tokens: usage.prompt_tokens,
            cached_tokens: usage.cached_tokens,
            completion_tokens: usage.completion_tokens,
            spend: price.map_or(0, |p| cost(p, &usage)),
        }
    }

    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.spend = self.spend.saturating_add(other.spend);
    }
}

/// What `usage` costs at `price`, in picodollars: cached prompt tokens at the cached price.
pub fn cost(price: &Price, usage: &Usage) -> u64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let fresh = usage.prompt_tokens - cached;
    fresh
        .saturating_mul(price.input)
        .saturating_add(cached.saturating_mul(price.cached_input))
        .saturating_add(usage.completion_tokens.saturating_mul(price.output))
}

/// One line of the books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub subject: String,
    /// `provider/model` that served, or the model asked for when none did.
    pub model: String,
    /// (Nested, not flattened: serde's flatten buffers every value through its generic
    /// `Content` type, which costs bundle bytes.)
    pub counts: Counts,
}

/// What a caller has spent this day and this month, in picodollars.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub subject: String,
    pub day: String,
    pub day_spend: u64,
    pub month_spend: u64,
}

/// A call to a usage object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds these lines; answered with what their callers spent today and this month.
    Record { rows: Vec<Row>, today: String },
    /// What these callers spent.
    Spent {
        subjects: Vec<String>,
        today: String,
    },
    /// The lines from `from` to `to` (days, inclusive), of one caller or all.
    Query {
        from: String,
        to: String,
        subject: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Spent(Vec<Spent>),
    Rows(Vec<Row>),
}

/// The object that keeps `subject`'s books (`usage/0` to `usage/15`).
pub fn shard_of(subject: &str) -> String {
    // FNV-1a: stable across isolates and builds.
    let hash = subject.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("usage/{}", hash % SHARDS)
}

/// Every usage object's name.
pub fn all_shards() -> Vec<String> {
    (0..SHARDS).map(|n| format!("usage/{n}")).collect()
}

/// The UTC day of `now_ms`, `YYYY-MM-DD`.
pub fn day_of(now_ms: u64) -> String {
    let days = i64::try_from(now_ms / DAY_MS).unwrap_or(0);
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The time until the end of the UTC day of `now_ms`, and until the end of its month.
fn until_day_end(now_ms: u64) -> u64 {
    DAY_MS - now_ms % DAY_MS
}

fn until_month_end(now_ms: u64) -> u64 {
    let mut end = now_ms - now_ms % DAY_MS + DAY_MS;
    let month = &day_of(now_ms)[..7];
    // At most 31 steps.
    while day_of(end).starts_with(month) {
        end += DAY_MS;
    }
    end - now_ms
}

/// What an isolate knows of one caller's spend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Known {
    day: String,
    day_spend: u64,
    month_spend: u64,
    at_ms: u64,
}

/// What one isolate has to report, and what it knows of callers' spend.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pending: BTreeMap<(String, String, String), Counts>,
    since_ms: Option<u64>,
    known: BTreeMap<String, Known>,
    /// When a flush began waiting for the batch to be due.
    waiting_since_ms: Option<u64>,
}

impl Tally {
    /// Adds one request's counts (`model` is `provider/model`).
    pub fn record(&mut self, subject: &str, model: &str, counts: Counts, now_ms: u64) {
        let day = day_of(now_ms);
        if let Some(known) = self.known.get_mut(subject) {
            if known.day == day {
                known.day_spend = known.day_spend.saturating_add(counts.spend);
                known.month_spend = known.month_spend.saturating_add(counts.spend);
            }
        }
        self.pending
            .entry((day, subject.to_owned(), model.to_owned()))
            .or_default()
            .add(&counts);
        self.since_ms.get_or_insert(now_ms);
    }

    /// Whether a flush is waiting for the batch to be due (and will send it).
    pub fn flush_waiting(&self, now_ms: u64) -> bool {
        self.waiting_since_ms
            .is_some_and(|s| now_ms < s.saturating_add(FLUSH_LOST_MS))
    }

    /// Claims the wait for the batch: false when another flush holds it.
    pub fn wait_to_flush(&mut self, now_ms: u64) -> bool {
        let free = !self.flush_waiting(now_ms);
        if free {
            self.waiting_since_ms = Some(now_ms);
        }
        free
    }

    /// The waiting flush is about to send the batch: the next one may wait.
    pub fn flush_woke(&mut self) {
        self.waiting_since_ms = None;
    }

    /// When the next batch is due (`None`: nothing to send).
    pub fn due_at(&self) -> Option<u64> {
        self.since_ms.map(|s| s + FLUSH_MS)
    }

    /// Takes what is pending, as one command per usage object.
    pub fn take(&mut self, now_ms: u64) -> Vec<(String, Command)> {
        self.since_ms = None;
        let mut by_shard: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for ((day, subject, model), counts) in std::mem::take(&mut self.pending) {
            by_shard.entry(shard_of(&subject)).or_default().push(Row {
                day,
                subject,
                model,
                counts,
            });
        }
        let today = day_of(now_ms);
        by_shard
            .into_iter()
            .map(|(shard, rows)| {
                let command = Command::Record {
                    rows,
                    today: today.clone(),
                };
                (shard, command)
            })
            .collect()
    }

    /// A batch that could not be sent: kept for the next one.
    pub fn put_back(&mut self, command: Command, now_ms: u64) {
        if let Command::Record { rows, .. } = command {
            for row in rows {
                self.pending
                    .entry((row.day, row.subject, row.model))
                    .or_default()
                    .add(&row.counts);
            }
            self.since_ms.get_or_insert(now_ms);
        }
    }

    /// What a usage object said the callers have spent (what is still pending here comes on
    /// top).
    pub fn learned(&mut self, spent: &[Spent], now_ms: u64) {
        for s in spent {
            let local: u64 = self
                .pending
                .iter()
                .filter(|((day, subject, _), _)| *subject == s.subject && *day == s.day)
                .map(|(_, c)| c.spend)
                .sum();
            self.known.insert(
                s.subject.clone(),
                Known {
                    day: s.day.clone(),
                    day_spend: s.day_spend.saturating_add(local),
                    month_spend: s.month_spend.saturating_add(local),
                    at_ms: now_ms,
                },
            );
        }
    }

    /// Whether the caller's spend must be asked for before its budget can be checked: never
    /// learned, learned on another day, or too long ago.
    pub fn must_ask(&self, subject: &str, now_ms: u64) -> bool {
        self.known.get(subject).is_none_or(|k| {
            k.day != day_of(now_ms) || now_ms >= k.at_ms.saturating_add(SPEND_TRUST_MS)
        })
    }

    /// Checks `tier`'s budgets against what the isolate knows `subject` has spent.
    pub fn check_budget(
        &self,
        subject: &str,
        describe: &str,
        tier_name: &str,
        tier: &Tier,
        now_ms: u64,
    ) -> Result<(), RouterError> {
        let Some(known) = self.known.get(subject).filter(|k| k.day == day_of(now_ms)) else {
            return Ok(());
        };
        // The month first: when it is spent, the day's end brings no room.
        let over = [
            (
                "spend per month",
                tier.spend_per_month,
                known.month_spend,
                until_month_end(now_ms),
            ),
            (
                "spend per day",
                tier.spend_per_day,
                known.day_spend,
                until_day_end(now_ms),
            ),
        ]
        .into_iter()
        .find(|(_, budget, spent, _)| budget.is_some_and(|b| *spent >= b));
        match over {
            Some((limit, budget, _, wait_ms)) => Err(RouterError::CallerLimited {
                limit: limit.to_owned(),
                caller: describe.to_owned(),
                tier: tier_name.to_owned(),
                amount: format!("${}", dollars(budget.unwrap_or(0))),
                retry_after_s: wait_ms.div_ceil(1_000).max(1),
                budget: true,
            }),
            None => Ok(()),
        }
    }

    /// What the isolate knows `subject` has left of its budgets: (day, month) in picodollars.
    pub fn budget_left(&self, subject: &str, tier: &Tier, now_ms: u64) -> [Option<u64>; 2] {
        let known = self
            .known
            .get(subject)
            .filter(|k| k.day == day_of(now_ms))
            .cloned()
            .unwrap_or_default();
        [
            tier.spend_per_day
                .map(|b| b.saturating_sub(known.day_spend)),
            tier.spend_per_month
                .map(|b| b.saturating_sub(known.month_spend)),
        ]
    }
}

/// Picodollars as dollars, with up to 12 decimals and no trailing zeros.
pub fn dollars(pico: u64) -> String {
    let whole = pico / 1_000_000_000_000;
    let frac = pico % 1_000_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:012}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// What `GET /v1/router/usage` was asked: the days, and JSON or CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: String,
    pub to: String,
    pub csv: bool,
}

/// Reads the usage endpoint's query string (`from`, `to`: `YYYY-MM-DD`, default this month so
/// far; `format`: `json` or `csv`).
pub fn parse_query(query: &str, now_ms: u64) -> Result<Query, RouterError> {
    let today = day_of(now_ms);
    let mut q = Query {
        from: format!("{}-01", &today[..7]),
        to: today,
        csv: false,
    };
    let bad = |param: &str, message: String| RouterError::InvalidRequest {
        message,
        param: Some(param.to_owned()),
        code: "invalid_value",
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "from" | "to" => {
                let ok = value.len() == 10
                    && value.bytes().enumerate().all(|(i, b)| match i {
                        4 | 7 => b == b'-',
                        _ => b.is_ascii_digit(),
                    });
                if !ok {
                    return Err(bad(name, format!("`{name}` must be a day, YYYY-MM-DD")));
                }
                if name == "from" {
                    q.from = value.to_owned();
                } else {
                    q.to = value.to_owned();
                }
            }
            "format" => {
                q.csv = match value {
                    "csv" => true,
                    "json" => false,
                    _ => return Err(bad(name, "`format` must be json or csv".to_owned())),
                }
            }
            _ => return Err(bad(name, format!("unknown parameter `{name}`"))),
        }
    }
    Ok(q)
}

/// The usage endpoint's JSON: the lines in order (day, caller, model), spend in dollars.
pub fn to_json(query: &Query, rows: &[Row]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "day": r.day,
                "subject": r.subject,
                "model": r.model,
                "requests": r.counts.requests,
                "errors": r.counts.errors,
                "prompt_tokens": r.counts.prompt_tokens,
                "cached_tokens": r.counts.cached_tokens,
                "completion_tokens": r.counts.completion_tokens,
                "spend_usd": r.counts.spend as f64 / PICO,
            })
        })
        .collect();
    serde_json::json!({"from": query.from, "to": query.to, "rows": rows}).to_string()
}

/// The same lines as CSV, with a header line; spend in dollars, exact.
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "day,subject,model,requests,errors,prompt_tokens,cached_tokens,completion_tokens,spend_usd\n",
    );
    for r in rows {
        let c = &r.counts;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.day,
            csv_field(&r.subject),
            csv_field(&r.model),
            c.requests,
            c.errors,
            c.prompt_tokens,
            c.cached_tokens,
            c.completion_tokens,
            dollars(c.spend)
        ));
    }
    out
}

/// A CSV field, quoted when it must be; a leading `=`, `+`, `-` or `@` is prefixed with `'` so
/// that a spreadsheet does not run a user id as a formula.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Merges lines of the same day, caller and model (from several objects), in order.
pub fn merge(rows: Vec<Row>) -> Vec<Row> {
    let mut merged: BTreeMap<(String, String, String), Counts> = BTreeMap::new();
    for row in rows {
        merged
            .entry((row.day, row.subject, row.model))
            .or_default()
            .add(&row.counts);
    }
    merged
        .into_iter()
        .map(|((day, subject, model), counts)| Row {
            day,
            subject,
            model,
            counts,
        })
        .collect()
}

/// The SQL of a usage object.
pub mod sql {
    pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS usage (day TEXT NOT NULL, subject TEXT \
        NOT NULL, model TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL, \
        prompt INTEGER NOT NULL, cached INTEGER NOT NULL, completion INTEGER NOT NULL, spend \
        INTEGER NOT NULL, PRIMARY KEY (day, subject, model))";
    /// The spend (picodollars) crosses as text both ways: past 2^53 (about $9,007) a
    /// JavaScript number no longer holds it exactly, and the runtime refuses to read one as an
    /// integer.
    pub const ADD: &str =
        "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS INTEGER)) ON CONFLICT \
        (day, subject, model) DO UPDATE SET requests = requests + excluded.requests, errors = \
        errors + excluded.errors, prompt = prompt + excluded.prompt, cached = cached + \
        excluded.cached, completion = completion + excluded.completion, spend = spend + \
        excluded.spend";
    /// A caller's spend on one day (`?2`) and in its month (`?3`, `YYYY-MM-%`).
    pub const SPENT: &str = "SELECT CAST(COALESCE(SUM(CASE WHEN day = ?2 THEN spend ELSE 0 \
        END), 0) AS TEXT) AS day_spend, CAST(COALESCE(SUM(spend), 0) AS TEXT) AS month_spend \
        FROM usage WHERE subject = ?1 AND day LIKE ?3";
    pub const QUERY: &str = "SELECT day, subject, model, requests, errors, prompt, cached, \
        completion, CAST(spend AS TEXT) AS spend FROM usage WHERE day >= ?1 AND day <= ?2 ORDER \
        BY day, subject, model";
    pub const QUERY_ONE: &str = "SELECT day, subject, model, requests, errors, prompt, cached, \
        completion, CAST(spend AS TEXT) AS spend FROM usage WHERE day >= ?1 AND day <= ?2 AND \
        subject = ?3 ORDER BY day, subject, model";
}

#[cfg(test)]
mod tests;
