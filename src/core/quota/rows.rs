//! The bank's storage: one SQLite row per model (`books`) and one for the organization
//! (`org`: its key blocks, the next lease id, the batches applied), each as JSON text. Reading
//! them back never fails a call: a row that cannot be read is rebuilt empty (the providers'
//! headers restore its counts) and reported, and what the configuration no longer names is
//! pruned.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bank::{Applied, Dirty, KeyBlock, ModelBooks, OrgLedger};
use crate::core::config::Config;

/// The tables, created on first use.
pub const CREATE: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS books (model TEXT PRIMARY KEY, state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS org (id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
];
pub const SELECT_BOOKS: &str = "SELECT model, state FROM books";
pub const SELECT_ORG: &str = "SELECT state FROM org WHERE id = 1";
pub const UPSERT_BOOKS: &str = "INSERT INTO books (model, state) VALUES (?, ?) \
     ON CONFLICT(model) DO UPDATE SET state = excluded.state";
pub const DELETE_BOOKS: &str = "DELETE FROM books WHERE model = ?";
pub const UPSERT_ORG: &str = "INSERT INTO org (id, state) VALUES (1, ?) \
     ON CONFLICT(id) DO UPDATE SET state = excluded.state";

/// A `books` row.
#[derive(Debug, Deserialize)]
pub struct BooksRow {
    pub model: String,
    pub state: String,
}

/// The `org` row.
#[derive(Debug, Deserialize)]
pub struct OrgRow {
    pub state: String,
}

/// The organization's own row: its key blocks and the next lease id.
#[derive(Serialize, Deserialize, Default)]
struct OrgState {
    blocks: Vec<KeyBlock>,
    next_lease_id: u64,
    #[serde(default)]
    applied: BTreeMap<String, Applied>,
}

/// A row that could not be read, and was rebuilt empty.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The model, or `org`.
    pub row: String,
    pub error: String,
}

/// The books from their rows, the rows to write back (those rebuilt), and those unreadable.
pub fn decode(books: Vec<BooksRow>, org: Option<OrgRow>) -> (OrgLedger, Dirty, Vec<Unreadable>) {
    let mut ledger = OrgLedger::default();
    let mut dirty = Dirty::default();
    let mut unreadable = Vec::new();
    for row in books {
        let model_books = serde_json::from_str::<ModelBooks>(&row.state).unwrap_or_else(|e| {
            unreadable.push(Unreadable {
                row: row.model.clone(),
                error: e.to_string(),
            });
            dirty.models.insert(row.model.clone());
            ModelBooks::default()
        });
        ledger.models.insert(row.model, model_books);
    }
    if let Some(row) = org {
        let state = serde_json::from_str::<OrgState>(&row.state).unwrap_or_else(|e| {
            unreadable.push(Unreadable {
                row: "org".to_owned(),
                error: e.to_string(),
            });
            dirty.meta = true;
            OrgState::default()
        });
        ledger.blocks = state.blocks;
        ledger.next_lease_id = state.next_lease_id;
        ledger.applied = state.applied;
    }
    (ledger, dirty, unreadable)
}

/// One write of the rows `dirty` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// [`UPSERT_BOOKS`] of a model's books.
    Books { model: String, state: String },
    /// [`DELETE_BOOKS`] of a model no longer kept.
    Delete { model: String },
    /// [`UPSERT_ORG`].
    Org { state: String },
}

/// The writes that store the rows `dirty` names.
pub fn encode(ledger: &OrgLedger, dirty: &Dirty) -> Result<Vec<Write>, serde_json::Error> {
    let mut writes = Vec::new();
    for model in &dirty.models {
        writes.push(match ledger.models.get(model) {
            Some(books) => Write::Books {
                model: model.clone(),
                state: serde_json::to_string(books)?,
            },
            None => Write::Delete {
                model: model.clone(),
            },
        });
    }
    if dirty.meta {
        let state = OrgState {
            blocks: ledger.blocks.clone(),
            next_lease_id: ledger.next_lease_id,
            applied: ledger.applied.clone(),
        };
        writes.push(Write::Org {
            state: serde_json::to_string(&state)?,
        });
    }
    Ok(writes)
}

/// The models with limits and the key ids that `shard` (`provider/org`) has in `config`, for
/// pruning; `None` for a shard name that is not one.
pub fn configured(config: &Config, shard: &str) -> Option<(Vec<String>, Vec<String>)> {
    let (provider, org) = shard.split_once('/')?;
    // A caller's bank (`core::caller`) keeps books on whoever calls: nothing to prune.
    if provider == crate::core::caller::BANKS {
        return None;
    }
    let Some(p) = config.providers.iter().find(|p| p.name == provider) else {
        return Some((Vec::new(), Vec::new()));
    };
    let keys: Vec<String> = p
        .keys
        .iter()
        .filter(|k| k.org == org)
        .map(|k| k.id.clone())
        .collect();
    let models = if keys.is_empty() {
        Vec::new()
    } else {
        p.limits.keys().cloned().collect()
    };
    Some((models, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_an_unreadable_one_is_rebuilt_and_rewritten() {
        let mut ledger = OrgLedger::default();
        ledger.models.insert("m".to_owned(), ModelBooks::default());
        ledger.next_lease_id = 7;
        let mut dirty = Dirty::default();
        dirty.models.insert("m".to_owned());
        dirty.models.insert("gone".to_owned());
        dirty.meta = true;
        let writes = encode(&ledger, &dirty).unwrap();
        assert_eq!(writes.len(), 3);
        assert!(writes.contains(&Write::Delete {
            model: "gone".to_owned()
        }));
        let (books, org) = writes
            .into_iter()
            .fold((Vec::new(), None), |(mut b, o), w| {
                match w {
                    Write::Books { model, state } => b.push(BooksRow { model, state }),
                    Write::Org { state } => return (b, Some(OrgRow { state })),
                    Write::Delete { .. } => {}
                }
                (b, o)
            });
        let (back, clean, unreadable) = decode(books, org);
        assert_eq!(back.next_lease_id, 7);
        assert!(back.models.contains_key("m"));
        assert_eq!(clean, Dirty::default());
        assert!(unreadable.is_empty());

        let broken = vec![BooksRow {
            model: "m".to_owned(),
            state: "{not json".to_owned(),
        }];
        let (back, dirty, unreadable) = decode(
            broken,
            Some(OrgRow {
                state: "[]".to_owned(),
            }),
        );
        assert!(back.models.contains_key("m"));
        assert!(dirty.models.contains("m") && dirty.meta);
        assert_eq!(
            unreadable
                .iter()
                .map(|u| u.row.as_str())
                .collect::<Vec<_>>(),
            ["m", "org"]
        );
    }
}
