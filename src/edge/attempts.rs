//! The attempt loop at the edge: asks the core's [`Planner`] what to do next, does it (a quota
//! call, or an upstream call aborted when its clock runs out), reports the outcome back, and hands
//! the first success to the client. Nothing reaches the client before an attempt succeeds, so
//! every failover happens before the first byte.

use std::cell::RefCell;

use futures::future::{select, Either};

use worker::wasm_bindgen::{closure::Closure, JsCast, JsValue};
use worker::{js_sys, web_sys, Context, Env};

use super::caller::{self as callers, Held};
use super::quota::{self as bank, HOLDINGS};
use super::{http, stream};
use crate::core::config::{Config, Target};
use crate::core::error::RouterError;
use crate::core::failover::{self, Breakers, Next, Planner, Verdict};
use crate::core::job::{Job, Outgoing, Shape};
use crate::core::latency::{self, HedgeBudget, Latencies};
use crate::core::outcome::{self, Outcome};
use crate::core::quota::{Call, Effect, Ticket, Usage};
use crate::core::ratelimit::{self, Report};
use crate::core::report::{HedgeWinner, Hedged, Trace};
use crate::core::responses;
use crate::core::route::Choice;
use crate::core::stream::{Body, FIRST_CHUNK_READ, TAIL_BYTES};
use crate::core::upstream::{self, Lines};

thread_local! {
    /// The providers' circuit breakers, per isolate: no Durable Object round trip on the hot
    /// path, at the price of each isolate learning a provider's failures on its own.
    pub static BREAKERS: RefCell<Breakers> = RefCell::new(Breakers::default());
    /// What this isolate has learned of each target's time to first byte (`core::latency`).
    pub static LATENCIES: RefCell<Latencies> = RefCell::new(Latencies::default());
    /// The hedges this isolate may start.
    static HEDGES: RefCell<HedgeBudget> = RefCell::new(HedgeBudget::default());
}

/// How much of an upstream failure's body is read.
const MAX_FAILURE_BODY: usize = 64 * 1024;

/// What a translated Response says of itself: a new id, the time, and the request fields it
/// repeats.
fn meta(echo: serde_json::Map<String, serde_json::Value>) -> responses::Meta {
    let n = (js_sys::Math::random() * 2f64.powi(52)) as u64;
    responses::Meta {
        id: format!("resp_{n:013x}"),
        created_at: now_ms() / 1_000,
        echo,
    }
}

pub use super::http::now_ms;

/// What a successful attempt gives the client.
pub struct Reply {
    pub status: u16,
    /// The upstream's headers that pass to the client, as [`Lines`] text.
    pub headers: String,
    /// The body: the whole answer's bytes, or the stream it is handed on in, or nothing.
    pub body: JsValue,
}

/// Runs the attempts for `job` over `targets` until one succeeds or nothing is left;
/// `body_for` builds the upstream body for a choice.
pub async fn run<'c>(
    env: &Env,
    ctx: &Context,
    config: &'c Config,
    targets: &[&'c Target],
    (job, held): (&Job, Held),
    trace: &mut Trace,
    mut body_for: impl FnMut(&Choice<'c>) -> Result<Outgoing, RouterError>,
) -> Result<Reply, RouterError> {
    let mut held = Some(held);
    let mut planner = Planner::new(
        config,
        targets,
        job.prefix_hash,
        job.tokens,
        now_ms(),
        job.deadline_ms,
    )
    .with_attempts(job.attempt_timeout_ms, job.timeout_blames_provider);
    let io = Io { env, ctx };
    if job.fast {
        let share = f64::from(config.failover.hedge_percent) / 100.0;
        HEDGES.with(|h| h.borrow_mut().request(share));
    }
    let result = loop {
        let next = BREAKERS.with(|b| {
            HOLDINGS.with(|h| planner.next(now_ms(), &mut b.borrow_mut(), &mut h.borrow_mut()))
        });
        match next {
            Next::GiveUp(err) => break Err(err),
            Next::Reserve(call) => book(io, &mut planner, *call, trace).await,
            Next::Send {
                choice,
                ticket,
                timeout_ms,
            } => {
                let sent = Sent::new(config, job, choice, ticket, timeout_ms);
                let outgoing = body_for(&sent.choice);
                let run = Run {
                    io,
                    config,
                    job,
                    held: &mut held,
                    trace,
                };
                let step = match sent.hedge_after {
                    Some(_) => send_hedged(run, &mut planner, sent, outgoing, &mut body_for).await,
                    None => send(run, &mut planner, sent, outgoing).await,
                };
                if let Some(result) = step {
                    break result;
                }
            }
        }
    };
    trace.attempts = planner.attempts().to_vec();
    trace.booked = planner.booked();
    if let Some(held) = held {
        held.close(None, &job.model, None);
    }
    callers::flush_later(env, ctx);
    bank::maintain(env, ctx);
    result
}

/// The runtime an attempt does its I/O with.
#[derive(Clone, Copy)]
struct Io<'a> {
    env: &'a Env,
    ctx: &'a Context,
}

/// What the planner said to send.
struct Sent<'c> {
    choice: Choice<'c>,
    ticket: Option<Ticket>,
    timeout_ms: u64,
    /// When the attempt is hedged if it has no first byte yet (the fast path, once its
    /// target's latency is learned and hedging is on).
    hedge_after: Option<u64>,
}

impl<'c> Sent<'c> {
    /// The planner's send, with the fast path's timeout and hedge from the learned latency.
    fn new(
        config: &Config,
        job: &Job,
        choice: Choice<'c>,
        ticket: Option<Ticket>,
        timeout_ms: u64,
    ) -> Self {
        // The slow path keeps the planner's timeout and is never hedged.
        let (p90, timeout_ms) = match job.fast {
            true => {
                let p90 = LATENCIES.with(|l| {
                    let (provider, model) = (&choice.provider.name, &choice.target.name);
                    l.borrow().hedge_after(provider, model, job.kind, now_ms())
                });
                let floor = config.failover.fast_attempt_floor_ms;
                (p90, latency::first_byte_timeout(p90, floor, timeout_ms))
            }
            false => (None, timeout_ms),
        };
        let hedging = config.failover.hedge_percent > 0;
        Sent {
            choice,
            ticket,
            timeout_ms,
            hedge_after: p90.filter(|p| hedging && *p < timeout_ms),
        }
    }
}

/// What an attempt runs with: the runtime, the request's job and the caller's books, and the
/// request's trace.
struct Run<'r, 'c> {
    io: Io<'r>,
    config: &'c Config,
    job: &'r Job,
    held: &'r mut Option<Held>,
    trace: &'r mut Trace,
}

/// Books with a bank synchronously (nothing held covers the request), within what is left of
/// the quota's time, and tells the planner its reply (or that it could not be reached).
async fn book(io: Io<'_>, planner: &mut Planner<'_>, call: Call, trace: &mut Trace) {
    let started = now_ms();
    trace.quota_calls += 1;
    let timeout = planner.quota_timeout_ms(started);
    let reply = bank::reserve(io.env, io.ctx, call, timeout).await;
    trace.quota_ms += now_ms().saturating_sub(started);
    HOLDINGS.with(|h| {
        let mut h = h.borrow_mut();
        match reply {
            Some(reply) => planner.on_reply(reply, &mut h, now_ms()),
            None => planner.on_unreachable(&mut h, now_ms()),
        }
    });
}

/// Sends one attempt and records its outcome: the client's result when the planner's verdict
/// ends the run (served, or an error to return), `None` to go on with the next attempt.
async fn send<'c>(
    mut run: Run<'_, 'c>,
    planner: &mut Planner<'c>,
    sent: Sent<'c>,
    outgoing: Result<Outgoing, RouterError>,
) -> Option<Result<Reply, RouterError>> {
    let (sent, outgoing, controller, started) = match ready(&mut run, planner, sent, outgoing) {
        Ok(ready) => ready,
        Err(result) => return result,
    };
    let counted = counted(run.held);
    let taken = attempt(&sent, run.job, outgoing, counted, &controller).await;
    finish(&mut run, planner, sent, taken, started)
}

/// An attempt about to go out: what the planner said, its body, its controller, and when it
/// started.
type Ready<'c> = (Sent<'c>, Outgoing, web_sys::AbortController, u64);

/// What an attempt goes out with: its body and its controller, from now on. Else its result: a
/// body that could not be adapted is the client's error (the booking given back), a controller
/// the runtime could not make a transport failure.
fn ready<'c>(
    run: &mut Run<'_, 'c>,
    planner: &mut Planner<'c>,
    sent: Sent<'c>,
    outgoing: Result<Outgoing, RouterError>,
) -> Result<Ready<'c>, Option<Result<Reply, RouterError>>> {
    let outgoing = match outgoing {
        Ok(outgoing) => outgoing,
        Err(err) => {
            give_back(run.io, sent);
            return Err(Some(Err(err)));
        }
    };
    let started = now_ms();
    match web_sys::AbortController::new() {
        Ok(controller) => Ok((sent, outgoing, controller, started)),
        Err(_) => {
            let failed = Taken::failed(Outcome::Transport);
            Err(finish(run, planner, sent, failed, started))
        }
    }
}

/// Gives an attempt's booking back whole: it was never sent, or was cancelled.
fn give_back(io: Io<'_>, sent: Sent<'_>) {
    settle(
        io,
        &sent.choice,
        sent.ticket,
        Effect::NotSpent,
        Answer::Nothing,
        None,
    );
}

/// Whether the caller's books wait for the answer's usage, however long it is (a user's, or a
/// caller's with a tier): a step per chunk, which a gateway key without a tier does not pay,
/// even on a priced model.
fn counted(held: &Option<Held>) -> bool {
    held.as_ref().is_some_and(|h| h.billed)
}

/// Sends an attempt that is hedged if it has no first byte by its `hedge_after` (its target's
/// learned p90): then, within the isolate's hedge budget, the planner's next candidate that
/// needs no bank call goes out too. Whichever succeeds first is served and the other cancelled
/// (its booking given back); a failure is recorded and the other awaited.
async fn send_hedged<'c>(
    mut run: Run<'_, 'c>,
    planner: &mut Planner<'c>,
    first: Sent<'c>,
    outgoing: Result<Outgoing, RouterError>,
    body_for: &mut impl FnMut(&Choice<'c>) -> Result<Outgoing, RouterError>,
) -> Option<Result<Reply, RouterError>> {
    let (first, outgoing, first_abort, started) = match ready(&mut run, planner, first, outgoing) {
        Ok(ready) => ready,
        Err(result) => return result,
    };
    let counted = counted(run.held);
    // The attempt's own clock says when it is late: no timer of its own for the hedge.
    let late = http::hedge_after(&first_abort);
    let a = Box::pin(attempt(&first, run.job, outgoing, counted, &first_abort));
    let a = match select(a, late).await {
        Either::Left((taken, _)) => return finish(&mut run, planner, first, taken, started),
        Either::Right((_, a)) => a,
    };
    let hedge = match HEDGES.with(|h| h.borrow().ready()) {
        true => BREAKERS.with(|b| {
            HOLDINGS.with(|h| {
                let across = run.config.failover.hedge_across_providers;
                let (b, h) = (&mut b.borrow_mut(), &mut h.borrow_mut());
                planner.next_hedge(&first.choice, across, now_ms(), b, h)
            })
        }),
        false => None,
    };
    let Some(Next::Send {
        choice,
        ticket,
        timeout_ms,
    }) = hedge
    else {
        let taken = a.await;
        return finish(&mut run, planner, first, taken, started);
    };
    HEDGES.with(|h| h.borrow_mut().take());
    let second = Sent::new(run.config, run.job, choice, ticket, timeout_ms);
    let hedge_started = now_ms();
    let after_ms = hedge_started.saturating_sub(started);
    let hedged = |won| Some(Hedged { after_ms, won });
    run.trace.hedged = hedged(HedgeWinner::Neither);
    let (Ok(second_out), Ok(second_abort)) =
        (body_for(&second.choice), web_sys::AbortController::new())
    else {
        give_back(run.io, second);
        let taken = a.await;
        return finish(&mut run, planner, first, taken, started);
    };
    let b = Box::pin(attempt(
        &second,
        run.job,
        second_out,
        counted,
        &second_abort,
    ));
    let (first_done, taken, other) = match select(a, b).await {
        Either::Left((taken, b)) => (true, taken, b),
        Either::Right((taken, a)) => (false, taken, a),
    };
    let (winner, winner_started, loser, loser_started, loser_abort) = match first_done {
        true => (first, started, second, hedge_started, second_abort),
        false => (second, hedge_started, first, started, first_abort),
    };
    // Which attempt the one that answered first is, and the other.
    let (this, that) = match first_done {
        true => (HedgeWinner::First, HedgeWinner::Hedge),
        false => (HedgeWinner::Hedge, HedgeWinner::First),
    };
    // A success is served; a failure that ends the request (a client error) is returned. The
    // other attempt is then cancelled: its call aborted, its booking given back.
    let cancel = |planner: &mut Planner<'c>, io: Io<'_>, loser: Sent<'c>| {
        loser_abort.abort();
        let ms = now_ms().saturating_sub(loser_started);
        planner.record_cancelled(&loser.choice, ms);
        give_back(io, loser);
    };
    if taken.outcome == Outcome::Success {
        drop(other);
        run.trace.hedged = hedged(this);
        // The attempt that was hedged took at least this long: its tail is learned.
        if !first_done {
            let ms = now_ms().saturating_sub(loser_started);
            observe(run.job, &loser.choice, None, ms);
        }
        cancel(planner, run.io, loser);
        return finish(&mut run, planner, winner, taken, winner_started);
    }
    let result = finish(&mut run, planner, winner, taken, winner_started);
    if result.is_some() {
        drop(other);
        cancel(planner, run.io, loser);
        return result;
    }
    // The first to answer failed and the request goes on: the other is awaited.
    let taken = other.await;
    if taken.outcome == Outcome::Success {
        run.trace.hedged = hedged(that);
    }
    finish(&mut run, planner, loser, taken, loser_started)
}

/// Records an attempt's outcome, learns its latency, settles its booking and the caller's
/// books: the client's result when the planner's verdict ends the run, `None` to go on.
fn finish<'c>(
    run: &mut Run<'_, 'c>,
    planner: &mut Planner<'c>,
    sent: Sent<'c>,
    taken: Taken,
    started: u64,
) -> Option<Result<Reply, RouterError>> {
    let Sent { choice, ticket, .. } = sent;
    let Taken {
        outcome,
        reply: response,
        answer,
        headers_at_ms,
    } = taken;
    let ms = now_ms().saturating_sub(started);
    run.trace.upstream_ms += ms;
    if matches!(outcome, Outcome::Success | Outcome::Timeout) {
        let headers_ms = headers_at_ms.map(|at| at.saturating_sub(started));
        observe(run.job, &choice, headers_ms, ms);
    }
    let effect = Effect::of(&outcome);
    let verdict =
        BREAKERS.with(|b| planner.record(&choice, &outcome, ms, now_ms(), &mut b.borrow_mut()));
    // The answer the client gets closes its caller's books when its usage is known.
    let bill = match (&verdict, &response) {
        (Verdict::Serve, Some(_)) => run.held.take().map(|h| (h, run.job.model.as_str())),
        _ => None,
    };
    settle(run.io, &choice, ticket, effect, answer, bill);
    match (verdict, response) {
        (Verdict::Serve, Some(response)) => Some(Ok(response)),
        (Verdict::Serve, None) => Some(Err(RouterError::Internal {
            detail: "a success without a response".to_owned(),
        })),
        (Verdict::Return(err), _) => Some(Err(err)),
        (Verdict::Retry, _) => None,
    }
}

/// Learns how long an attempt of `choice` took to its headers and first byte.
fn observe(job: &Job, choice: &Choice<'_>, headers_ms: Option<u64>, first_ms: u64) {
    LATENCIES.with(|l| {
        let target = (
            choice.provider.name.as_str(),
            choice.target.name.as_str(),
            job.kind,
        );
        l.borrow_mut()
            .observe(target, headers_ms, first_ms, now_ms());
    });
}

/// What one attempt came to: its outcome, the client's reply when it is a success, what the
/// books may learn from the answer, and when its headers came.
struct Taken {
    outcome: Outcome,
    reply: Option<Reply>,
    answer: Answer,
    headers_at_ms: Option<u64>,
}

impl Taken {
    fn failed(outcome: Outcome) -> Taken {
        Taken {
            outcome,
            reply: None,
            answer: Answer::Nothing,
            headers_at_ms: None,
        }
    }
}

/// What an attempt's answer leaves to learn.
enum Answer {
    /// Nothing reached the provider, or nothing came back.
    Nothing,
    /// An answer whose headers are all there is to learn.
    Headers(Report),
    /// An answer read whole: its headers, and the usage in it when a booking waits for it.
    Whole {
        report: Report,
        usage: Option<Usage>,
    },
    /// An answer handed on: its headers now, its usage when it ends.
    Streamed {
        report: Report,
        finished: js_sys::Promise,
        kind: Body,
    },
}

/// Books what happened to an attempt in the isolate's holdings (`effect`, decided by the core
/// from the outcome); for an answer handed on, once it has ended and its usage is known, after
/// the response (`wait_until`). Nothing here waits on the bank: reports go in the background.
fn settle(
    io: Io<'_>,
    choice: &Choice<'_>,
    ticket: Option<Ticket>,
    effect: Effect,
    answer: Answer,
    bill: Option<(Held, &str)>,
) {
    let (shard, key) = failover::shard_of(choice);
    // What the served answer is billed as: its provider and model, at its price.
    let bill = bill.map(|(held, requested)| {
        let served = format!("{}/{}", choice.provider.name, choice.target.model);
        let price = choice.provider.prices.get(&choice.target.model).copied();
        (held, requested.to_owned(), served, price)
    });
    let record = move |usage: Option<Usage>, report: Option<Report>| {
        if let Some(ticket) = ticket {
            HOLDINGS.with(|h| {
                h.borrow_mut()
                    .settle(&shard, &key, ticket, effect, usage, report, now_ms());
            });
        }
        if let Some((held, requested, served, price)) = bill {
            held.close(Some((&served, price)), &requested, usage);
        }
    };
    match answer {
        Answer::Nothing => record(None, None),
        Answer::Headers(report) => record(None, Some(report)),
        Answer::Whole { report, usage } => record(usage, Some(report)),
        Answer::Streamed {
            report,
            finished,
            kind,
        } => {
            let env = io.env.clone();
            let provider = choice.provider.name.clone();
            io.ctx.wait_until(async move {
                let usage = answer_usage(finished, kind, &provider).await;
                record(usage, Some(report));
                callers::flush_when_due(&env).await;
                bank::maintenance(&env).await;
            });
        }
    }
}

/// One upstream call of `sent`: sent with the choice's key, aborted through `controller` if no
/// headers (for a stream, no first chunk; for a short JSON answer, not all of it) arrive within
/// its timeout. The future owns what it needs but the job, so that two of them (an attempt and
/// its hedge) can be raced. It comes to the outcome, the client's reply when it is a success,
/// what the books may learn from the answer (its usage, for the books of the provider and of
/// the caller; `counted`: the caller's books wait for it), and when the headers came.
fn attempt<'j>(
    sent: &Sent<'_>,
    job: &'j Job,
    outgoing: Outgoing,
    counted: bool,
    controller: &web_sys::AbortController,
) -> impl std::future::Future<Output = Taken> + 'j {
    let outbound = upstream::request(&sent.choice, outgoing.endpoint, job.accept.as_deref());
    let call = Upstream {
        outbound,
        dialect: sent.choice.provider.dialect,
        timeout_ms: sent.timeout_ms,
        hedge_ms: sent.hedge_after,
        counted,
    };
    call_upstream(call, job, outgoing, controller.clone())
}

/// An upstream call, as [`attempt`] prepares it.
struct Upstream {
    outbound: upstream::UpstreamRequest,
    dialect: crate::core::config::RateLimitDialect,
    timeout_ms: u64,
    /// When the clock resolves the attempt's hedge promise, if one was asked for.
    hedge_ms: Option<u64>,
    counted: bool,
}

async fn call_upstream(
    call: Upstream,
    job: &Job,
    outgoing: Outgoing,
    // The runtime's own controller: the clock, the hand-on when the client goes away, and a
    // hedge that answered first abort the call through it.
    controller: web_sys::AbortController,
) -> Taken {
    let Outgoing { body, shape, .. } = outgoing;
    let Upstream {
        outbound,
        dialect,
        timeout_ms,
        hedge_ms,
        counted,
    } = call;
    let clock = http::Clock::start(&controller, timeout_ms, hedge_ms);
    let opened = stream::call(&outbound, &body, &controller).await;
    drop(body);
    let Some(mut opened) = opened else {
        return Taken::failed(outcome::failed(clock.ran_out(), Outcome::Transport));
    };
    let headers_at_ms = opened.headers_at_ms;
    let lines = std::mem::take(&mut opened.headers);
    let headers = Lines(&lines);
    let report = ratelimit::report(dialect, |name| headers.get(name));
    if outcome::is_success(opened.status) {
        let kind = Body::of(headers.get("content-type").unwrap_or_default());
        let reply = Reply {
            status: opened.status,
            headers: headers.to_client(),
            body: JsValue::UNDEFINED,
        };
        let success = Success {
            opened,
            kind,
            reply,
            report,
            check_events: job.check_events,
            shape,
            counted,
        };
        let (outcome, reply, answer) = take(success, clock, &controller).await;
        return Taken {
            outcome,
            reply,
            answer,
            headers_at_ms,
        };
    }
    // Only the start of a failure's body is read (a message is capped at 2 KB anyway), within
    // what is left of the attempt's time.
    opened.read_on(MAX_FAILURE_BODY).await;
    let failure_body = opened.first_bytes(MAX_FAILURE_BODY).unwrap_or_default();
    let status = opened.status;
    opened.cancel();
    let verdict = outcome::classify(status, headers.get("retry-after"), &failure_body);
    Taken {
        outcome: verdict,
        reply: None,
        answer: Answer::Headers(report),
        headers_at_ms,
    }
}

/// A successful status, its answer not yet read.
struct Success {
    opened: stream::Opened,
    kind: Body,
    reply: Reply,
    report: Report,
    /// Whether every event of a stream handed on is checked.
    check_events: bool,
    /// What the answer is for the client (translated, for a Responses request served by chat).
    shape: Shape,
    /// Whether the caller's books wait for the answer's usage.
    counted: bool,
}

/// Takes a successful answer: its start is read before anything is sent, so that an answer
/// that is no answer still fails over; then it is sent whole (a short JSON answer) or handed
/// on.
async fn take(
    success: Success,
    clock: http::Clock,
    controller: &web_sys::AbortController,
) -> (Outcome, Option<Reply>, Answer) {
    let Success {
        mut opened,
        kind,
        mut reply,
        report,
        check_events,
        shape,
        counted,
    } = success;
    if !opened.has_body() {
        // No body at all (a 204): nothing to read, nothing to learn.
        return (Outcome::Success, Some(reply), Answer::Headers(report));
    }
    let taking = shape.taking(kind);
    if kind == Body::Json {
        opened.read_on(taking.whole).await;
    }
    // (All of a body read whole: a first chunk that held the whole `content-length` may pass
    // the cap.)
    let whole = (opened.whole && kind == Body::Json).then(|| opened.last_bytes(usize::MAX));
    let first = whole
        .is_none()
        .then(|| opened.first_bytes(FIRST_CHUNK_READ))
        .flatten();
    if taking.fails(kind, whole.as_deref(), first.as_deref()) {
        let outcome = outcome::failed(clock.ran_out(), Outcome::BadAnswer);
        opened.cancel();
        return (outcome, None, Answer::Nothing);
    }
    // Decided: from here on the answer is the client's, whatever its length.
    drop(clock);
    // The usage chunk the router asked for is kept from a client that did not, whether the
    // stream is handed on or came whole.
    opened.drop_usage = taking.drop_usage;
    opened.keep_tail = counted;
    if opened.whole {
        // A short answer, read whole: sent as bytes, its usage read at once.
        let usage = match &whole {
            Some(body) => kind.usage(&body[body.len().saturating_sub(TAIL_BYTES)..]),
            None => kind.usage(&opened.last_bytes(TAIL_BYTES)),
        };
        reply.body = match (&shape, &whole) {
            (Shape::FromChat(echo), Some(body)) => {
                match responses::response_from_chat(body, &meta(echo.clone())) {
                    Some(translated) => js_sys::Uint8Array::from(translated.as_slice()).into(),
                    None => {
                        let outcome = outcome::failed(false, Outcome::BadAnswer);
                        return (outcome, None, Answer::Nothing);
                    }
                }
            }
            _ => opened.bytes(),
        };
        return (
            Outcome::Success,
            Some(reply),
            Answer::Whole { report, usage },
        );
    }
    let (readable, finished) = match shape {
        Shape::FromChat(echo) if kind == Body::Events => {
            let mut events = responses::Events::new(meta(echo));
            let step =
                Closure::<dyn FnMut(JsValue) -> js_sys::Uint8Array>::new(move |chunk: JsValue| {
                    let mut out = Vec::new();
                    let end = match chunk.dyn_into::<js_sys::Uint8Array>() {
                        Ok(chunk) => {
                            events.push(&chunk.to_vec(), &mut out);
                            false
                        }
                        Err(_) => {
                            events.end(&mut out);
                            true
                        }
                    };
                    let bytes = js_sys::Uint8Array::from(out.as_slice());
                    if end {
                        // How the translation ended, for the log and the books.
                        let complete = JsValue::from_bool(events.complete());
                        let _ = js_sys::Reflect::set(&bytes, &"complete".into(), &complete);
                    }
                    bytes
                });
            opened.translate(step.into_js_value(), controller)
        }
        _ => opened.hand_on(taking.interrupted, check_events, controller, taking.ends),
    };
    reply.body = readable.into();
    let answer = Answer::Streamed {
        report,
        finished,
        kind,
    };
    (Outcome::Success, Some(reply), answer)
}

/// Waits for a handed-on answer to end and reads its usage; an answer that did not end properly
/// (the client got the interrupted event, or a failed body) is logged.
async fn answer_usage(finished: js_sys::Promise, kind: Body, provider: &str) -> Option<Usage> {
    let end = stream::ended(finished).await?;
    if !end.complete && !end.client_gone {
        let line = serde_json::json!({"event": "answer_interrupted", "provider": provider});
        worker::console_error!("{line}");
    }
    kind.usage(&end.tail)
}
