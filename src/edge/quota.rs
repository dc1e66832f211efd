//! The quota ledger's home: a SQLite-backed Durable Object per provider, and the Worker's calls
//! to it.
//!
//! The object holds one [`Ledger`] for every organization of its provider. Each call carries
//! one [`Command`]; the object loads the ledger, applies the command and stores the result with
//! synchronous SQLite calls and no `.await` in between, so concurrent requests cannot interleave
//! and over-admit. Time is the object's own clock, the same for every caller.

use std::cell::RefCell;

use worker::{
    durable_object, js_sys, wasm_bindgen, DurableObject, Env, Headers, Method, Request,
    RequestInit, Response, Result, SqlStorage, State,
};

use crate::core::error::RouterError;
use crate::core::quota::{self, Command, Ledger, Reply};

/// The binding name of the quota objects in wrangler.toml.
pub const BINDING: &str = "QUOTA";

#[durable_object]
pub struct QuotaObject {
    sql: SqlStorage,
    /// The ledger as last stored, so that a hot object reads SQLite once.
    ledger: RefCell<Option<Ledger>>,
}

#[derive(serde::Deserialize)]
struct Row {
    state: String,
}

impl QuotaObject {
    fn load(&self) -> Result<Ledger> {
        if let Some(ledger) = self.ledger.borrow().as_ref() {
            return Ok(ledger.clone());
        }
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
            None,
        )?;
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT state FROM ledger WHERE id = 1", None)?
            .to_array()?;
        Ok(match rows.first() {
            Some(row) => serde_json::from_str(&row.state).unwrap_or_default(),
            None => Ledger::default(),
        })
    }

    fn store(&self, ledger: Ledger) -> Result<()> {
        let state =
            serde_json::to_string(&ledger).map_err(|e| worker::Error::from(e.to_string()))?;
        self.sql.exec(
            "INSERT INTO ledger (id, state) VALUES (1, ?) \
             ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            vec![state.into()],
        )?;
        *self.ledger.borrow_mut() = Some(ledger);
        Ok(())
    }
}

impl DurableObject for QuotaObject {
    fn new(state: State, _env: Env) -> Self {
        Self {
            sql: state.storage().sql(),
            ledger: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let command: Command = match req.json().await {
            Ok(c) => c,
            Err(e) => return Response::error(format!("bad command: {e}"), 400),
        };
        // From here to the reply: synchronous, so no other request interleaves.
        let writes = command.writes();
        let mut ledger = self.load()?;
        let reply = quota::apply(&mut ledger, command, js_sys::Date::now() as u64);
        if writes {
            self.store(ledger)?;
        }
        Response::from_json(&reply)
    }
}

/// Sends one command to the quota object of `provider` and returns its reply.
pub async fn call(
    env: &Env,
    provider: &str,
    command: &Command,
) -> std::result::Result<Reply, RouterError> {
    let failed = |what: &str| RouterError::Internal {
        detail: format!("quota object: {what}"),
    };
    let body = serde_json::to_string(command).map_err(|_| failed("encoding"))?;
    let stub = env
        .durable_object(BINDING)
        .and_then(|ns| ns.id_from_name(provider)?.get_stub())
        .map_err(|_| failed("no QUOTA binding"))?;
    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .map_err(|_| failed("headers"))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    let request =
        Request::new_with_init("https://quota.internal/", &init).map_err(|_| failed("request"))?;
    let mut resp = stub
        .fetch_with_request(request)
        .await
        .map_err(|_| failed("unreachable"))?;
    if resp.status_code() != 200 {
        return Err(failed("refused the command"));
    }
    resp.json::<Reply>().await.map_err(|_| failed("bad reply"))
}
