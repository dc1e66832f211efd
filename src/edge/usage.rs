//! The usage books' Durable Object: one per shard of callers (see `core::usage`), SQLite-backed,
//! one line per day, caller and model. It applies one command per call (record a batch of
//! lines, say what callers spent, read lines back), with no `.await` inside, so calls never
//! interleave.

use std::cell::RefCell;

use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue,
    State,
};

use crate::core::usage::{self, Command, Counts, Reply, Row, Spent};
/// The usage books of the callers whose subjects hash to one shard: a SQLite-backed Durable
/// Object, one line per day, caller and model.
#[durable_object]
pub struct UsageObject {
    sql: SqlStorage,
    ready: RefCell<bool>,
}

#[derive(serde::Deserialize)]
struct SpentRow {
    /// Picodollars, as text (see `usage::sql::ADD`).
    day_spend: String,
    month_spend: String,
}

#[derive(serde::Deserialize)]
struct LineRow {
    day: String,
    subject: String,
    model: String,
    requests: i64,
    errors: i64,
    prompt: i64,
    cached: i64,
    completion: i64,
    spend: String,
}

/// A spend the books read as text (see `usage::sql::ADD`).
fn picodollars(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

impl UsageObject {
    fn spent(&self, subject: &str, today: &str) -> Result<Spent> {
        let month = format!("{}%", today.get(..8).unwrap_or(today));
        let rows: Vec<SpentRow> = self
            .sql
            .exec(
                usage::sql::SPENT,
                vec![subject.into(), today.into(), month.into()],
            )?
            .to_array()?;
        let row = rows.into_iter().next();
        Ok(Spent {
            subject: subject.to_owned(),
            day: today.to_owned(),
            day_spend: row.as_ref().map_or(0, |r| picodollars(&r.day_spend)),
            month_spend: row.map_or(0, |r| picodollars(&r.month_spend)),
        })
    }

    fn apply(&self, command: Command) -> Result<Reply> {
        if !self.ready.replace(true) {
            self.sql.exec(usage::sql::CREATE, None)?;
        }
        Ok(match command {
            Command::Record { rows, today } => {
                let subjects = self.record(rows)?;
                Reply::Spent(self.spent_all(&subjects, &today)?)
            }
            Command::Spent { subjects, today } => Reply::Spent(self.spent_all(&subjects, &today)?),
            Command::Query { from, to, subject } => Reply::Rows(self.query(from, to, subject)?),
        })
    }

    /// Adds `rows` to the books; the callers they name, each once.
    fn record(&self, rows: Vec<Row>) -> Result<Vec<String>> {
        let n = |v: u64| SqlStorageValue::from(i64::try_from(v).unwrap_or(i64::MAX));
        let mut subjects: Vec<String> = Vec::new();
        for row in rows {
            let c = row.counts;
            self.sql.exec(
                usage::sql::ADD,
                vec![
                    row.day.into(),
                    row.subject.clone().into(),
                    row.model.into(),
                    n(c.requests),
                    n(c.errors),
                    n(c.prompt_tokens),
                    n(c.cached_tokens),
                    n(c.completion_tokens),
                    c.spend.to_string().into(),
                ],
            )?;
            if !subjects.contains(&row.subject) {
                subjects.push(row.subject);
            }
        }
        Ok(subjects)
    }

    fn spent_all(&self, subjects: &[String], today: &str) -> Result<Vec<Spent>> {
        subjects.iter().map(|s| self.spent(s, today)).collect()
    }

    /// The lines from day `from` to day `to`, of one caller or of all.
    fn query(&self, from: String, to: String, subject: Option<String>) -> Result<Vec<Row>> {
        let cursor = match subject {
            Some(s) => self.sql.exec(
                usage::sql::QUERY_ONE,
                vec![from.into(), to.into(), s.into()],
            )?,
            None => self
                .sql
                .exec(usage::sql::QUERY, vec![from.into(), to.into()])?,
        };
        let lines: Vec<LineRow> = cursor.to_array()?;
        let u = |v: i64| v.max(0) as u64;
        Ok(lines
            .into_iter()
            .map(|l| Row {
                day: l.day,
                subject: l.subject,
                model: l.model,
                counts: Counts {
                    requests: u(l.requests),
                    errors: u(l.errors),
                    prompt_tokens: u(l.prompt),
                    cached_tokens: u(l.cached),
                    completion_tokens: u(l.completion),
                    spend: picodollars(&l.spend),
                },
            })
            .collect())
    }
}

impl DurableObject for UsageObject {
    fn new(state: State, _env: Env) -> Self {
        Self {
            sql: state.storage().sql(),
            ready: RefCell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // Parsed as text: the runtime's JSON would hold a spend past 2^53 as an inexact number,
        // which serde then refuses as an integer.
        let command = req
            .text()
            .await
            .and_then(|t| Ok(serde_json::from_str::<Command>(&t)?));
        let command = match command {
            Ok(c) => c,
            Err(e) => return Response::error(format!("bad command: {e}"), 400),
        };
        // One command, with no `.await` inside: calls never interleave.
        let reply = self.apply(command)?;
        Response::from_json(&reply)
    }
}
