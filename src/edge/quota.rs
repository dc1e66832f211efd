//! The quota bank's home: a SQLite-backed Durable Object per provider and organization (named
//! `provider/org`), and the isolate's calls to it: synchronous bookings raced against their own
//! timeout, and the background work that keeps the isolate's leases and reports flowing.
//!
//! The object keeps the books in memory and in one SQLite row per model (plus one for the
//! organization's key blocks); each call applies one [`Command`] with no `.await` between
//! reading and storing, so calls never interleave, and stores only the rows it changed.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use futures::channel::oneshot;
use worker::{
    durable_object, js_sys, wasm_bindgen, Context, Delay, DurableObject, Env, Request, Response,
    Result, SqlStorage, State,
};

use super::http;
use crate::core::error::RouterError;
use crate::core::quota::bank::Dirty;
use crate::core::quota::upkeep::{After, Upkeep};
use crate::core::quota::{apply, rows, Call, Command, Holdings, OrgLedger, Reply, Shard};

/// The binding name of the quota banks in wrangler.toml.
pub const BINDING: &str = "QUOTA";
/// The header that names a call's shard (`provider/org`), for the object's own use.
const SHARD_HEADER: &str = "x-quota-shard";

thread_local! {
    /// This isolate's leases, snapshot and reports, under a random holder id.
    pub static HOLDINGS: RefCell<Holdings> = RefCell::new(Holdings::new(holder_id()));
    /// The background work's schedule.
    static UPKEEP: Cell<Upkeep> = const { Cell::new(Upkeep::new()) };
}

use super::http::now_ms;

/// A random id for this isolate, as the bank knows it.
fn holder_id() -> String {
    let n = (js_sys::Math::random() * 2f64.powi(48)) as u64;
    format!("i-{n:012x}")
}

#[durable_object]
pub struct QuotaObject {
    sql: SqlStorage,
    env: Env,
    /// The books, loaded once per object.
    ledger: RefCell<Option<OrgLedger>>,
}

impl QuotaObject {
    /// Loads the books from storage ([`rows::decode`]): an unreadable row is logged and rebuilt,
    /// and what the configuration no longer names is pruned.
    fn load(&self, shard: &str) -> Result<(OrgLedger, Dirty)> {
        for create in rows::CREATE {
            self.sql.exec(create, None)?;
        }
        let books: Vec<rows::BooksRow> = self.sql.exec(rows::SELECT_BOOKS, None)?.to_array()?;
        let org: Vec<rows::OrgRow> = self.sql.exec(rows::SELECT_ORG, None)?.to_array()?;
        let (mut ledger, mut dirty, unreadable) = rows::decode(books, org.into_iter().next());
        for row in unreadable {
            let line = serde_json::json!({
                "event": "quota_state_unreadable",
                "shard": shard,
                "row": row.row,
                "error": row.error,
            });
            worker::console_error!("{line}");
        }
        let configured = http::load_config(&self.env)
            .ok()
            .and_then(|config| rows::configured(&config, shard));
        let (models, keys) = configured.unzip();
        ledger.prune(models.as_deref(), keys.as_deref(), now_ms(), &mut dirty);
        Ok((ledger, dirty))
    }

    /// Stores the rows `dirty` names.
    fn store(&self, ledger: &OrgLedger, dirty: &Dirty) -> Result<()> {
        let writes = rows::encode(ledger, dirty).map_err(|e| worker::Error::from(e.to_string()))?;
        for write in writes {
            match write {
                rows::Write::Books { model, state } => self
                    .sql
                    .exec(rows::UPSERT_BOOKS, vec![model.into(), state.into()])?,
                rows::Write::Delete { model } => {
                    self.sql.exec(rows::DELETE_BOOKS, vec![model.into()])?
                }
                rows::Write::Org { state } => {
                    self.sql.exec(rows::UPSERT_ORG, vec![state.into()])?
                }
            };
        }
        Ok(())
    }
}

impl DurableObject for QuotaObject {
    fn new(state: State, env: Env) -> Self {
        Self {
            sql: state.storage().sql(),
            env,
            ledger: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        http::sync_test_clock(&self.env).await;
        let shard = req.headers().get(SHARD_HEADER)?.unwrap_or_default();
        let command: Command = match req.json().await {
            Ok(c) => c,
            Err(e) => return Response::error(format!("bad command: {e}"), 400),
        };
        // From here to the reply: synchronous, so no other call interleaves.
        let cached = self.ledger.borrow_mut().take();
        let (mut ledger, mut dirty) = match cached {
            Some(ledger) => (ledger, Dirty::default()),
            None => self.load(&shard)?,
        };
        let writes = command.writes();
        let reply = apply(&mut ledger, command, now_ms(), &mut dirty);
        let stored = if writes || dirty != Dirty::default() {
            self.store(&ledger, &dirty)
        } else {
            Ok(())
        };
        // Books that could not be stored are not kept either: the next call starts again from
        // what storage holds, and the caller sends its batch again.
        if stored.is_ok() {
            *self.ledger.borrow_mut() = Some(ledger);
        }
        stored?;
        Response::from_json(&reply)
    }
}

/// Sends one command to `shard`'s bank and returns its reply.
pub async fn call(
    env: &Env,
    shard: &Shard,
    command: &Command,
) -> std::result::Result<Reply, RouterError> {
    let name = shard.name();
    http::call_object(env, BINDING, &name, Some((SHARD_HEADER, &name)), command)
        .await
        .map_err(|e| RouterError::Internal {
            detail: match e {
                http::ObjectError::NoBinding => "quota bank: no QUOTA binding".to_owned(),
                http::ObjectError::Failed(what) => format!("quota bank: {what}"),
            },
        })
}

/// A synchronous booking, given `timeout_ms`: `None` when the bank failed or was too slow.
/// The call itself runs on (`wait_until`): a booking that answers after the request stopped
/// waiting is given back, and a batch that never landed is kept for the next call.
pub async fn reserve(env: &Env, ctx: &Context, booking: Call, timeout_ms: u64) -> Option<Reply> {
    let (tx, rx) = oneshot::channel::<Reply>();
    let env = env.clone();
    ctx.wait_until(async move {
        let Call { shard, command, id } = booking;
        match call(&env, &shard, &command).await {
            Ok(reply) => {
                if let Err(reply) = tx.send(reply) {
                    HOLDINGS.with(|h| h.borrow_mut().late(&shard, id, &reply, now_ms()));
                    log_quota("quota_late", &shard, None);
                }
            }
            Err(err) => {
                HOLDINGS.with(|h| h.borrow_mut().failed(&shard, id, now_ms()));
                log_quota("quota_unreachable", &shard, Some(&err));
            }
        }
    });
    let timer = Delay::from(Duration::from_millis(timeout_ms));
    futures::pin_mut!(timer);
    match futures::future::select(rx, timer).await {
        futures::future::Either::Left((Ok(reply), _)) => Some(reply),
        _ => None,
    }
}

/// After a request: sends at once what is due (a lease that ran low is renewed before the next
/// look of the background work, which sleeps), and starts the background work (renewing and
/// returning leases, sending reports) if it is not running and there is something to do.
pub fn maintain(env: &Env, ctx: &Context) {
    let calls = HOLDINGS.with(|h| h.borrow_mut().due(now_ms()));
    if !calls.is_empty() {
        let env = env.clone();
        ctx.wait_until(async move { exchange(&env, calls).await });
    }
    if !needs_maintenance() {
        return;
    }
    let env = env.clone();
    ctx.wait_until(async move { maintenance(&env).await });
}

/// Sends background calls, one per bank, and takes their replies in.
async fn exchange(env: &Env, calls: Vec<Call>) {
    let runs = calls
        .into_iter()
        .map(|Call { shard, command, id }| async move {
            let result = call(env, &shard, &command).await;
            HOLDINGS.with(|h| {
                let mut h = h.borrow_mut();
                match &result {
                    Ok(reply) => h.answered(&shard, id, reply, now_ms()),
                    Err(_) => h.failed(&shard, id, now_ms()),
                }
            });
            if let Err(err) = result {
                log_quota("quota_unreachable", &shard, Some(&err));
            }
        });
    futures::future::join_all(runs).await;
}

fn needs_maintenance() -> bool {
    let now = now_ms();
    let work = HOLDINGS.with(|h| h.borrow().next_wake(now).is_some());
    UPKEEP.get().should_start(now, work)
}

/// The background work itself ([`Upkeep`] keeps its schedule), run inside some request's
/// `wait_until`: what is due is sent and the replies taken in, until nothing is held or its
/// run is over.
pub async fn maintenance(env: &Env) {
    if !needs_maintenance() {
        return;
    }
    let mut upkeep = UPKEEP.get();
    upkeep.start(now_ms());
    UPKEEP.set(upkeep);
    loop {
        let calls = HOLDINGS.with(|h| h.borrow_mut().due(now_ms()));
        exchange(env, calls).await;
        let now = now_ms();
        let wake = HOLDINGS.with(|h| h.borrow().next_wake(now));
        let mut upkeep = UPKEEP.get();
        let after = upkeep.after_look(now, wake);
        UPKEEP.set(upkeep);
        match after {
            After::Sleep(ms) => Delay::from(Duration::from_millis(ms)).await,
            After::Stop => break,
            After::Surrender => {
                let calls = HOLDINGS.with(|h| {
                    let mut h = h.borrow_mut();
                    h.surrender(now);
                    h.due(now)
                });
                exchange(env, calls).await;
                break;
            }
        }
    }
    UPKEEP.set(Upkeep::new());
}

fn log_quota(event: &str, shard: &Shard, err: Option<&RouterError>) {
    let line = serde_json::json!({
        "event": event,
        "shard": shard.name(),
        "code": err.and_then(RouterError::code),
    });
    worker::console_error!("{line}");
}
