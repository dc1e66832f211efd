//! The caller at the edge: a user token verified with WebCrypto (its JWKS fetched and cached
//! per isolate), the caller's own limits admitted from the isolate's holdings (its bank is
//! called only when nothing is held), and what each request used, gathered and sent to the
//! usage books in the background. The decisions are the core's (`token`, `caller`, `usage`).

use std::cell::RefCell;
use std::time::Duration;

use worker::wasm_bindgen::{self, prelude::wasm_bindgen};
use worker::{js_sys, Context, Delay, Env};

use super::http::{self, now_ms};
use super::quota::{self as bank, HOLDINGS};
use crate::core::caller::{self, Caller};
use crate::core::config::{access, Config, Jwk, Price, Users};
use crate::core::error::RouterError;
use crate::core::job::Job;
use crate::core::quota::{Admission, Effect, Reply as BankReply, Ticket, Usage};
use crate::core::token::{self, JwksCache, KeyRef, Lookup};
use crate::core::upstream::Lines;
use crate::core::usage::{self, Command, Counts, Reply, Row, Tally};
use crate::core::{auth, report};

#[wasm_bindgen(module = "/src/edge/runtime.js")]
extern "C" {
    #[wasm_bindgen(js_name = verifySignature)]
    fn verify_signature(
        alg: &str,
        material: &str,
        input: &str,
        signature: &[u8],
    ) -> js_sys::Promise;
    #[wasm_bindgen(js_name = fetchText)]
    fn fetch_text(url: &str, ms: f64) -> js_sys::Promise;
}

/// The binding name of the usage books in wrangler.toml.
pub const USAGE_BINDING: &str = "USAGE";
/// How long a JWKS fetch may take.
const JWKS_TIMEOUT_MS: f64 = 3_000.0;
/// How long a request waits for a usage object to say what its caller spent.
const SPENT_TIMEOUT_MS: u64 = 400;

thread_local! {
    /// The issuer's keys, as last fetched.
    static JWKS: RefCell<JwksCache> = RefCell::new(JwksCache::default());
    /// What this isolate's requests used, not yet sent; what it knows of callers' spend; and
    /// whether a flush waits to send it.
    static TALLY: RefCell<Tally> = RefCell::new(Tally::default());
}

/// Who is calling: a user with a token the configuration accepts, a gateway key, or anyone
/// when auth is off.
pub async fn identify(
    config: &Config,
    headers: Lines<'_>,
    ctx: &Context,
) -> std::result::Result<Caller, RouterError> {
    let authorization = headers.get("authorization");
    let credential = authorization.and_then(auth::bearer);
    match (&config.users, credential) {
        (Some(users), Some(credential)) if token::looks_like_jwt(credential) => {
            let identity = verify(users, credential, headers.get("origin"), ctx).await?;
            Ok(Caller::User(identity))
        }
        _ => auth::caller(&config.gateway.auth, authorization),
    }
}

/// Verifies a user token: algorithm and key from the configuration, the signature with
/// WebCrypto, then the claims.
async fn verify(
    users: &Users,
    credential: &str,
    origin: Option<&str>,
    ctx: &Context,
) -> std::result::Result<token::Identity, RouterError> {
    let parsed = token::parse(credential)?;
    let alg = token::algorithm(users, &parsed)?;
    let kid = parsed.kid.as_deref();
    let mut material = key_material(users, alg, kid)?;
    if material.is_none() {
        refresh_jwks(users, true).await;
        material = key_material(users, alg, kid)?;
    } else if JWKS.with(|c| c.borrow().should_fetch(users, false, now_ms())) {
        // A stale set is fetched again after the answer, not before it: the key found still
        // verifies this token.
        let users = users.clone();
        ctx.wait_until(async move { refresh_jwks(&users, false).await });
    }
    let Some(material) = material else {
        return Err(RouterError::InvalidToken {
            reason: format!(
                "no published key{} verifies {} tokens",
                kid.map(|k| format!(" with `kid` {k}")).unwrap_or_default(),
                alg.name()
            ),
        });
    };
    let verified = wasm_bindgen_futures::JsFuture::from(verify_signature(
        alg.name(),
        &material,
        parsed.signing_input,
        &parsed.signature,
    ))
    .await
    .ok()
    .and_then(|v| v.as_bool())
    .unwrap_or(false);
    if !verified {
        return Err(RouterError::InvalidToken {
            reason: "its signature does not verify".to_owned(),
        });
    }
    token::check_claims(users, &parsed.claims, now_ms() / 1_000, origin)
}

/// The key material for `alg` and `kid` (the secret, or a public key's JSON), if known.
fn key_material(
    users: &Users,
    alg: access::Alg,
    kid: Option<&str>,
) -> std::result::Result<Option<String>, RouterError> {
    JWKS.with(|cache| {
        let cache = cache.borrow();
        Ok(match token::key_for(users, alg, kid, &cache.keys)? {
            Lookup::Found(KeyRef::Secret(secret)) => Some(secret.expose().to_owned()),
            Lookup::Found(KeyRef::Public(jwk)) => Some(jwk.public.clone()),
            Lookup::Unknown => None,
        })
    })
}

/// Fetches the issuer's JWKS when the cache says to (`missing`: a token's key was not found);
/// a failed fetch keeps the keys already cached.
async fn refresh_jwks(users: &Users, missing: bool) {
    let Some(url) = &users.jwks_url else { return };
    let now = now_ms();
    if !JWKS.with(|c| c.borrow().should_fetch(users, missing, now)) {
        return;
    }
    // Marked as tried before the fetch, so that requests arriving meanwhile do not fetch too.
    JWKS.with(|c| c.borrow_mut().tried_ms = now);
    let text = wasm_bindgen_futures::JsFuture::from(fetch_text(url, JWKS_TIMEOUT_MS))
        .await
        .ok()
        .and_then(|v| v.as_string());
    let keys: Option<Vec<Jwk>> = text
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|doc| access::parse_jwks(&doc).ok());
    if keys.is_none() {
        let line = serde_json::json!({"event": "jwks_unreachable", "url": url});
        worker::console_error!("{line}");
    }
    JWKS.with(|c| c.borrow_mut().fetched(keys, now_ms()));
}

/// What a request holds of its caller's limits, until its answer is known.
pub struct Held {
    pub caller: Caller,
    ticket: Option<Ticket>,
    /// Whether the caller's books wait for the answer's usage: a user, or a caller with a
    /// tier.
    pub billed: bool,
    /// What the request is booked at until its usage is known.
    estimate: Usage,
}

/// Admits a request of `tokens` for `caller`: its tier's spend budgets (against what this
/// isolate knows it spent; asked for once when it knows nothing), then its windows (from the
/// isolate's lease, or booked with the caller's bank when nothing is held). Over a limit: a 429
/// naming it.
pub async fn admit(
    env: &Env,
    ctx: &Context,
    config: &Config,
    caller: Caller,
    job: &Job,
    explain: &mut report::Headers,
) -> std::result::Result<Held, RouterError> {
    match admit_within(env, ctx, config, &caller, job.tokens, explain).await {
        Ok((ticket, billed)) => Ok(Held {
            caller,
            ticket,
            billed,
            estimate: Usage {
                prompt_tokens: job.prompt_tokens,
                cached_tokens: 0,
                completion_tokens: job.tokens.saturating_sub(job.prompt_tokens),
            },
        }),
        Err(refused) => {
            // A refused request is an error in the caller's usage books.
            TALLY.with(|t| {
                let counts = Counts::of(None, None, true);
                t.borrow_mut()
                    .record(&caller.subject(), &job.model, counts, now_ms())
            });
            flush_later(env, ctx);
            Err(refused)
        }
    }
}

/// The booking of `caller`'s windows, and whether its books wait for the answer's usage (a
/// user's always, tier or not: apps are what the books are for; any caller's with a tier).
async fn admit_within(
    env: &Env,
    ctx: &Context,
    config: &Config,
    caller: &Caller,
    tokens: u64,
    explain: &mut report::Headers,
) -> std::result::Result<(Option<Ticket>, bool), RouterError> {
    let Some((tier_name, tier)) = caller.tier(config) else {
        return Ok((None, matches!(caller, Caller::User(_))));
    };
    let subject = caller.subject();
    if tier.spend_per_day.is_some() || tier.spend_per_month.is_some() {
        if TALLY.with(|t| t.borrow().must_ask(&subject, now_ms())) {
            ask_spent(env, &subject).await;
        }
        TALLY.with(|t| {
            t.borrow()
                .check_budget(&subject, &caller.describe(), tier_name, tier, now_ms())
        })?;
    }
    if !tier.has_windows() {
        return Ok((None, true));
    }
    let shard = caller.shard();
    let offers = caller.offers();
    let admission = HOLDINGS.with(|h| {
        h.borrow_mut().admit(
            caller::BANKS,
            &offers,
            caller::MODEL,
            &tier.limits,
            tokens,
            None,
            now_ms(),
        )
    });
    // The refusal, from the caller's books as this isolate sees them.
    let refuse = |until_ms: u64| {
        let books = HOLDINGS.with(|h| h.borrow().books(&shard, caller::MODEL, now_ms()));
        let limits = &tier.limits;
        caller::refusal(
            caller,
            tier_name,
            limits,
            &books,
            tokens,
            until_ms,
            now_ms(),
        )
    };
    let ticket = match admission {
        Admission::Admitted { ticket, .. } => Some(ticket),
        Admission::Full { until_ms } => return Err(refuse(until_ms)),
        // The caller's bank is never offered a key it refuses.
        Admission::NoKey => None,
        Admission::Ask { keys, .. } => {
            let call = HOLDINGS.with(|h| {
                h.borrow_mut()
                    .reserve(&shard, vec![caller::option(tier)], keys, tokens, now_ms())
            });
            let id = call.id;
            let timeout = config.failover.quota_timeout_ms;
            match bank::reserve(env, ctx, call, timeout).await {
                Some(reply) => {
                    HOLDINGS.with(|h| h.borrow_mut().answered(&shard, id, &reply, now_ms()));
                    match reply {
                        BankReply::Reserved { ticket, .. } => Some(ticket),
                        BankReply::NoRoom { until_ms, .. } => return Err(refuse(until_ms)),
                        _ => None,
                    }
                }
                // The bank could not say in time: the request goes on (a caller's limit is
                // the router's own policy; the providers' limits still hold).
                None => None,
            }
        }
    };
    let books = HOLDINGS.with(|h| h.borrow().books(&shard, caller::MODEL, now_ms()));
    explain.extend(caller::headers(&tier.limits, &books, now_ms()));
    Ok((ticket, true))
}

/// Asks the caller's usage object what it spent, within a short wait; a late or failed answer
/// leaves the budget unchecked for this request.
async fn ask_spent(env: &Env, subject: &str) {
    let command = Command::Spent {
        subjects: vec![subject.to_owned()],
        today: usage::day_of(now_ms()),
    };
    let name = usage::shard_of(subject);
    let call = http::call_object::<_, Reply>(env, USAGE_BINDING, &name, None, &command);
    let timer = Delay::from(Duration::from_millis(SPENT_TIMEOUT_MS));
    futures::pin_mut!(call);
    futures::pin_mut!(timer);
    if let futures::future::Either::Left((Ok(Reply::Spent(spent)), _)) =
        futures::future::select(call, timer).await
    {
        TALLY.with(|t| t.borrow_mut().learned(&spent, now_ms()));
    }
}

impl Held {
    /// The request is over: served by `served` (provider and model, at its price) with `usage`,
    /// or failed. Settles the caller's booking and adds the request to the usage books.
    pub fn close(
        self,
        served: Option<(&str, Option<Price>)>,
        requested: &str,
        usage: Option<Usage>,
    ) {
        let Held {
            caller,
            ticket,
            billed,
            estimate,
        } = self;
        if let Some(ticket) = ticket {
            let effect = if served.is_some() {
                Effect::Spent
            } else {
                Effect::NotSpent
            };
            HOLDINGS.with(|h| {
                h.borrow_mut().settle(
                    &caller.shard(),
                    &caller::card(),
                    ticket,
                    effect,
                    usage,
                    None,
                    now_ms(),
                )
            });
        }
        let (model, price, failed) = match served {
            Some((model, price)) => (model, price, false),
            None => (requested, None, true),
        };
        // A served answer whose usage never came (the client left, the stream was cut, the
        // provider sent none) is counted at the estimate where the caller's books wait for it:
        // leaving before the end must not make an answer free.
        let usage = match usage {
            None if billed && !failed => Some(estimate),
            usage => usage,
        };
        let counts = Counts::of(usage.as_ref(), price.as_ref(), failed);
        TALLY.with(|t| {
            t.borrow_mut()
                .record(&caller.subject(), model, counts, now_ms())
        });
    }
}

/// Sends what the isolate gathered once its batch is due, in the background of this request.
pub fn flush_later(env: &Env, ctx: &Context) {
    let nothing_to_do = TALLY.with(|t| {
        let t = t.borrow();
        t.due_at().is_none() || t.flush_waiting(now_ms())
    });
    if nothing_to_do {
        return;
    }
    let env = env.clone();
    ctx.wait_until(async move { flush_when_due(&env).await });
}

/// Waits until the pending batch is due and sends it, unless another request's background
/// work already does.
pub async fn flush_when_due(env: &Env) {
    if !TALLY.with(|t| t.borrow_mut().wait_to_flush(now_ms())) {
        return;
    }
    let due = TALLY.with(|t| t.borrow().due_at()).unwrap_or(0);
    let wait = due.saturating_sub(now_ms());
    if wait > 0 {
        Delay::from(Duration::from_millis(wait)).await;
    }
    TALLY.with(|t| t.borrow_mut().flush_woke());
    flush(env).await;
}

/// Sends every pending line now, one call per usage object, and learns what their callers
/// spent. A batch that fails is kept for the next.
pub async fn flush(env: &Env) {
    let batches = TALLY.with(|t| t.borrow_mut().take(now_ms()));
    let calls = batches.into_iter().map(|(name, command)| async move {
        let result = http::call_object::<_, Reply>(env, USAGE_BINDING, &name, None, &command).await;
        TALLY.with(|t| {
            let mut t = t.borrow_mut();
            match result {
                Ok(Reply::Spent(spent)) => t.learned(&spent, now_ms()),
                // A deployment without the USAGE binding keeps no usage books.
                Err(http::ObjectError::NoBinding) => {}
                _ => t.put_back(command, now_ms()),
            }
        });
    });
    futures::future::join_all(calls).await;
}

/// `GET /v1/router/usage`: every caller's lines for an admin, the caller's own otherwise.
pub async fn usage_page(
    env: &Env,
    query: &str,
    subject: Option<String>,
    explain: &mut report::Headers,
) -> std::result::Result<String, RouterError> {
    let q = usage::parse_query(query, now_ms())?;
    // What this isolate still holds is sent first, so that it is counted.
    flush(env).await;
    let shards = match &subject {
        Some(s) => vec![usage::shard_of(s)],
        None => usage::all_shards(),
    };
    let command = Command::Query {
        from: q.from.clone(),
        to: q.to.clone(),
        subject,
    };
    let calls = shards
        .iter()
        .map(|name| http::call_object::<_, Reply>(env, USAGE_BINDING, name, None, &command));
    let mut rows: Vec<Row> = Vec::new();
    for reply in futures::future::join_all(calls).await {
        match reply {
            Ok(Reply::Rows(part)) => rows.extend(part),
            _ => {
                return Err(RouterError::Internal {
                    detail: "usage books: an object did not answer".to_owned(),
                })
            }
        }
    }
    let rows = usage::merge(rows);
    Ok(if q.csv {
        explain.push(("content-type", "text/csv; charset=utf-8".to_owned()));
        usage::to_csv(&rows)
    } else {
        explain.push(("content-type", "application/json".to_owned()));
        usage::to_json(&q, &rows)
    })
}
