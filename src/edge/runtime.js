// The few runtime calls of the request path, each made in one step from Rust (src/edge/http.rs
// and src/edge/stream.rs): headers cross as one string of lines, an answer is built in one
// call, and an upstream body is read and handed on here.

// How many of the last bytes of a handed-on body are reported for the usage and the end.
const TAIL_BYTES = 16384;

// All of `headers` as one string: `name\nvalue\n` per header (names lower-case; a value never
// holds a line break).
export function headerLines(headers) {
  let out = "";
  for (const [name, value] of headers) out += name + "\n" + value + "\n";
  return out;
}

// Calls `f(name, value)` for each header of `lines`.
function eachHeader(lines, f) {
  const parts = lines.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) f(parts[i], parts[i + 1]);
}

// The router's own request headers (each name once) as a plain object, the cheapest form for
// the runtime to take.
export function plainHeaders(lines) {
  const out = {};
  eachHeader(lines, (name, value) => {
    out[name] = value;
  });
  return out;
}

// The upstream call, up to the start of its answer, in one step: a POST of `body` (bytes) with
// the headers in `lines`, aborted through `abort` (its AbortController). A redirect is not
// followed (it would turn the POST into a GET and could drop the key across origins).
// Resolves to [status, headerLines, body, reader, first, done, headersAt]: the answer's first
// chunk (undefined when the body ended or failed before it), whether that is all of it (the
// stream ended, or the first chunk holds all the `content-length` of an unencoded body), and
// when the headers came (the router's clock: the learned latency to headers); to null when the
// call failed before its headers.
export async function call(url, lines, body, abort) {
  let resp;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers: plainHeaders(lines),
      body,
      redirect: "manual",
      signal: abort.signal,
    });
  } catch {
    return null;
  }
  const headersAt = now();
  const head = headerLines(resp.headers);
  const stream = resp.body;
  if (!stream) return [resp.status, head, null, undefined, undefined, true, headersAt];
  const reader = stream.getReader();
  let first;
  try {
    const r = await reader.read();
    if (r.done) return [resp.status, head, stream, reader, undefined, true, headersAt];
    first = r.value;
  } catch {
    return [resp.status, head, stream, reader, undefined, false, headersAt];
  }
  // The announced length counts the bytes as sent: only an unencoded body's chunks add up to it.
  const length = resp.headers.has("content-encoding")
    ? NaN
    : Number(resp.headers.get("content-length") ?? NaN);
  const whole = first.byteLength === length;
  // The body's end is read without waiting for it, so the runtime sees it finished (and may
  // keep the connection) rather than abandoned.
  if (whole) reader.read().catch(() => {});
  return [resp.status, head, stream, reader, first, whole, headersAt];
}

// Reads on from `first` until the body ends, while it stays within `whole` bytes: resolves to
// [bytes, done], with undefined bytes when the body fails.
export async function readOn(reader, first, whole) {
  const chunks = [first];
  let size = first.byteLength;
  while (size <= whole) {
    let r;
    try {
      r = await reader.read();
    } catch {
      return [undefined, false];
    }
    if (r.done) return [join(chunks, size), true];
    chunks.push(r.value);
    size += r.value.byteLength;
  }
  return [join(chunks, size), false];
}

// The client's response: `upstream` lines are appended as they are; `ours` (the router's own)
// replace an upstream header of the same name, except `vary`, which is added to.
export function respond(status, upstream, ours, body) {
  const headers = new Headers();
  eachHeader(upstream, (name, value) => headers.append(name, value));
  eachHeader(ours, (name, value) => {
    if (name === "vary") headers.append(name, value);
    else headers.set(name, value);
  });
  return new Response(body === undefined ? null : body, { status, headers });
}

// Cancels an upstream body that will not be handed on (a failover after its first chunk).
export function cancelBody(reader) {
  reader.cancel().catch(() => {});
}

// Hands `start` and the rest of `body` (its `reader`, released here) to the client. The runtime
// pipes the body natively (a native ReadableStream into an IdentityTransformStream): the
// client's chunks run no JavaScript and no WebAssembly. A native copy (a tee) is read
// alongside, a read per chunk as it comes (see readTail), for the last bytes, the usage in them
// and the end. The copy is read for COPY_LIMIT bytes at most and then dropped: while both branches are read, the one the client reads holds what it
// lags behind, so the limit bounds what a slow client can make the isolate hold; past it, the
// client's branch alone pulls the upstream, at the client's pace. Returns [readable, finished]:
// the client's body, and a promise of {tail, complete, clientGone} once the body is over (an
// empty tail when the copy was dropped and the last bytes are not known).
//
// For an event stream (`interrupted` given, an SSE error event), when the upstream fails or
// (its end known) ends without `data: [DONE]`, `interrupted` is written before the client's
// stream closes, so a cut never looks like a clean end. Another body that fails mid-way is
// aborted, so the client sees the failure rather than a short body. A client that goes away
// aborts the upstream call through `abort` (its AbortController).
//
// With `check` (failover.check_stream_events, event streams only), the client's branch passes
// through a JavaScript step that forwards only complete events whose data parses: a malformed
// event is never sent, and ends the stream with `interrupted` instead. It costs a step per
// chunk, which is why it is an option.
//
// `ends` (a Responses API event stream passed through) lists the events that end such a stream
// (it has no `data: [DONE]`): the copy's blocks are searched for them as they are read.
//
// `dropUsage` (the router asked for a chat stream's usage; the client did not): the usage-only
// chunk (`"choices": []` with a `usage`) is kept from the client, at a JavaScript step per
// chunk. The copy, read for the usage, still has it.
//
// `keepTail` (a caller's books wait for the usage): the client's branch keeps its last bytes
// too, at a JavaScript step per chunk, so that the usage of a body longer than COPY_LIMIT (the
// copy dropped) is still known when the body ends.
export function handOn(body, reader, start, interrupted, check, abort, ends, dropUsage, keepTail) {
  reader.releaseLock();
  const [branch, copy] = body.tee();
  const { readable, writable } = new Identity();
  const events = typeof interrupted === "string";
  const checked = { malformed: false };
  let toClient = events && check ? branch.pipeThrough(eventChecker(start, checked)) : branch;
  const passed = keepTail ? new Tail() : null;
  if (passed) {
    if (start) passed.push(start);
    toClient = toClient.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          passed.push(chunk.slice());
          controller.enqueue(chunk);
        },
      }),
    );
  }
  // What the client gets first (the start, without a usage chunk it did not ask for).
  let first = start;
  if (events && dropUsage) {
    const kept = withoutUsage(start.subarray(0, Math.max(lastEventEnd(start), 0)));
    const rest = unfinished(start);
    toClient = toClient.pipeThrough(usageDropper(start));
    first = join([kept, rest], kept.byteLength + rest.byteLength);
  }
  // At the start of a line: an event's text, which repeats the answer, holds no raw line break.
  const markers = ends ? ends.flatMap((e) => ["\nevent: " + e, `\ndata: {"type":"${e}"`, `\ndata:{"type":"${e}"`]) : null;
  let over;
  const ended = new Promise((resolve) => {
    over = resolve;
  });
  const tail = readTail(copy, markers, start, ended);
  return [readable, pipe(start, toClient, writable, tail, events ? interrupted : null, abort, checked, over, first, passed)];
}

// Hands `start` and the rest of `body` to the client through `step`, the core's translation
// of a chat event stream into the Responses API's events: `step(chunk)` gives the bytes to send
// for a chunk of the upstream, `step(undefined)` the last ones once the upstream has ended or
// failed (the final events, or the error event), with `complete` set on it when those were the
// final events. Returns [readable, finished] as handOn does:
// the usage and the end are read from the upstream's own last bytes, kept as they pass.
export function translate(body, reader, start, step, abort) {
  const { readable, writable } = new Identity();
  const finished = (async () => {
    const writer = writable.getWriter();
    const kept = new Tail();
    let clientGone = false;
    let upstreamFailed = false;
    // Whether the translation ended with its final events (not with the error event).
    let translated = false;
    const send = async (bytes) => {
      if (bytes.byteLength) await writer.write(bytes);
    };
    try {
      kept.push(start);
      await send(step(start));
      for (;;) {
        let r;
        try {
          r = await reader.read();
        } catch {
          upstreamFailed = true;
          break;
        }
        if (r.done) break;
        kept.push(r.value);
        await send(step(r.value));
      }
      const last = step(undefined);
      translated = last.complete === true;
      await send(last);
      await writer.close();
    } catch {
      clientGone = true;
      reader.cancel().catch(() => {});
      writer.abort(new Error("the client went away")).catch(() => {});
    }
    if (clientGone || upstreamFailed) abort.abort();
    const tail = lastBytes(kept.chunks);
    return { tail, complete: !clientGone && !upstreamFailed && translated, clientGone };
  })();
  return [readable, finished];
}

// The step of `check`: holds an event until its end (a blank line) has arrived, then forwards
// the complete events of each chunk if every `data:` line among them is JSON or [DONE], and
// errors (`checked.malformed`) at the first that is not. `start`, already sent (its complete
// events checked by the core), counts as received: its unfinished last event is held back
// only for the check, not sent again.
function eventChecker(start, checked) {
  const decoder = new TextDecoder();
  const refuse = (controller, why) => {
    checked.malformed = true;
    controller.error(new Error(why));
    return false;
  };
  return completeEvents(start, {
    // No event is that long: an upstream that never ends one is not an answer either.
    tooLong: (controller) => refuse(controller, "an event without end"),
    events(bytes, sent, end, controller) {
      if (!eventsParse(decoder.decode(bytes.subarray(0, end)))) return refuse(controller, "a malformed event");
      if (end > sent) controller.enqueue(bytes.slice(sent, end));
      return true;
    },
  });
}

// Keeps the usage-only chunk of a chat event stream from the client (see handOn): complete
// events pass as they are, but that one.
function usageDropper(start) {
  return completeEvents(start, {
    // An event that long passes as it is.
    tooLong: () => true,
    events(bytes, sent, end, controller) {
      // The first event's start went out already: its rest passes as it is.
      const first = sent > 0 ? firstEventEnd(bytes, sent, end) : 0;
      if (first > sent) controller.enqueue(bytes.slice(sent, first));
      const kept = withoutUsage(bytes.subarray(first, end));
      if (kept.byteLength > 0) controller.enqueue(kept);
      return true;
    },
  });
}

// A step over the complete events of the client's branch of an event stream, after `start`,
// which the client has already (its unfinished last event is held, and not sent again).
// `events(bytes, sent, end, controller)` gets the bytes up to the end of the last complete
// event, of which the client has the first `sent`, and enqueues what passes; false stops the
// stream. `tooLong(controller)` says whether an unfinished event longer than MAX_EVENT passes
// as if complete. An unfinished event at the end of the stream passes as it is.
function completeEvents(start, { events, tooLong }) {
  let held = unfinished(start);
  let sent = held.byteLength;
  return new TransformStream({
    transform(chunk, controller) {
      const bytes = held.byteLength > 0 ? join([held, chunk], held.byteLength + chunk.byteLength) : chunk;
      let end = lastEventEnd(bytes);
      if (end < 0) {
        if (bytes.byteLength <= MAX_EVENT) {
          held = bytes;
          return;
        }
        if (!tooLong(controller)) return;
        end = bytes.byteLength;
      }
      if (!events(bytes, sent, end, controller)) return;
      held = bytes.slice(end);
      sent = 0;
    },
    flush(controller) {
      // An unfinished last event: the stream ended without [DONE] (the error event follows).
      if (held.byteLength > sent) controller.enqueue(held.slice(sent));
    },
  });
}

// The index just past the first blank line at or after `from` (and before `to`), or `to`.
function firstEventEnd(bytes, from, to) {
  for (let i = Math.max(from, 1); i < to; i++) {
    if (bytes[i] === 10 && bytes[i - 1] === 10) return i + 1;
    if (bytes[i] === 10 && bytes[i - 1] === 13 && i >= 3 && bytes[i - 2] === 10 && bytes[i - 3] === 13) return i + 1;
  }
  return to;
}

// Complete events (`bytes` ends at an event's end, or is a part to pass whole, or a whole
// body) without the usage-only chunk. Most chunks are passed as the same bytes: only one naming
// `usage` with an empty `choices` is parsed.
const utf8 = new TextDecoder();
export function withoutUsage(bytes) {
  const text = utf8.decode(bytes);
  if (!text.includes('"usage"') || !/"choices"\s*:\s*\[\s*\]/.test(text)) return bytes;
  const events = text.split(/(?<=\r?\n\r?\n)/);
  const kept = events.filter((event) => !usageOnly(event));
  return kept.length === events.length ? bytes : new TextEncoder().encode(kept.join(""));
}

function usageOnly(event) {
  const data = event
    .split(/\r?\n/)
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).trimStart())
    .join("\n");
  if (!data.startsWith("{")) return false;
  try {
    const chunk = JSON.parse(data);
    return Array.isArray(chunk.choices) && chunk.choices.length === 0 && chunk.usage != null;
  } catch {
    return false;
  }
}

// The longest event the check holds while waiting for its end.
const MAX_EVENT = 1 << 20;

// The bytes after the last blank line (the event still arriving).
function unfinished(bytes) {
  const end = lastEventEnd(bytes);
  return end < 0 ? bytes.slice() : bytes.slice(end);
}

// The index just past the last blank line ("\n\n" or "\r\n\r\n") in `bytes`, or -1.
function lastEventEnd(bytes) {
  for (let i = bytes.byteLength - 1; i > 0; i--) {
    if (bytes[i] === 10 && (bytes[i - 1] === 10 || (bytes[i - 1] === 13 && i > 2 && bytes[i - 2] === 10))) return i + 1;
  }
  return -1;
}

// Whether every `data:` line of these complete events is JSON or [DONE].
function eventsParse(text) {
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed.startsWith("data:")) continue;
    const data = trimmed.slice(5).trim();
    if (data === "[DONE]") continue;
    try {
      JSON.parse(data);
    } catch {
      return false;
    }
  }
  return true;
}

// Workers' native byte stream; elsewhere (the wasm tests under Node) the standard one.
export const Identity = globalThis.IdentityTransformStream ?? TransformStream;

// How much of a handed-on body the copy reads for its end before it is dropped.
const COPY_LIMIT = 1 << 20;

// How long the copy is left to gather chunks between two reads of a trickle (a read of fewer
// than COPY_TRICKLE bytes: an answer coming a token at a time).
const COPY_POLL_MS = 20;
const COPY_TRICKLE = 4096;

// Reads the copy to its end: resolves to {blocks, cut, sawEnd, failed} (its last bytes, at
// least TAIL_BYTES of them when there are; whether the copy was dropped before the end; whether
// the body failed, what was read until then kept).
//
// Each read takes whatever the copy holds, up to 64 KiB into one reused buffer (a BYOB read,
// several chunks at once). After a read of a trickle the next one waits COPY_POLL_MS, or less
// once `ended` (the client's branch is over) resolves; after a larger one it follows at once.
// So an answer streamed a token at a time costs a read every COPY_POLL_MS rather than one a
// chunk, a fast body is read as it comes (the copy holds at most what arrives in COPY_POLL_MS
// after a trickle), and the end is known at once. A read that waits for a given amount instead (a BYOB
// readAtLeast of a block) holds the client's branch of the tee back until the block is full:
// the stream would reach the client in bursts.
//
// With `markers` (a stream whose end is an event, not `data: [DONE]`), `start` (read before
// the copy was made) and what is read, with the end of the read before for a marker cut between
// them, are searched for them: `sawEnd` says whether one was found; it is null without markers.
async function readTail(copy, markers, start, ended) {
  let reader;
  let buffer = null;
  try {
    reader = copy.getReader({ mode: "byob" });
    buffer = new ArrayBuffer(4 * TAIL_BYTES);
  } catch {
    reader = copy.getReader();
  }
  const tail = new Tail();
  let size = 0;
  const decoder = markers ? new TextDecoder() : null;
  let carry = decoder ? "\n" + decoder.decode(start, { stream: true }) : "";
  let sawEnd = decoder ? markers.some((m) => carry.includes(m)) : null;
  carry = carry.slice(-64);
  const result = (extra) => ({ blocks: tail.chunks, cut: false, sawEnd, ...extra });
  try {
    for (;;) {
      if (size >= COPY_LIMIT) {
        reader.cancel().catch(() => {});
        return result({ cut: true });
      }
      const r = buffer ? await reader.read(new Uint8Array(buffer)) : await reader.read();
      if (r.done) return result({});
      const got = r.value;
      size += got.byteLength;
      if (decoder && !sawEnd) {
        const text = carry + decoder.decode(got, { stream: true });
        sawEnd = markers.some((m) => text.includes(m));
        carry = text.slice(-64);
      }
      // Kept as a copy: the buffer is read into again.
      tail.push(got.slice());
      // Only a trickle waits: a read of more than a few KiB means the body is coming fast, and
      // the copy reads on at once so as not to lag (what it lags is held for it).
      if (buffer) buffer = got.buffer;
      if (got.byteLength < COPY_TRICKLE) await Promise.race([ended, after(COPY_POLL_MS)]);
    }
  } catch {
    return result({ failed: true });
  }
}

async function pipe(start, source, writable, tail, interrupted, abort, checked, over, first = start, passed = null) {
  let clientGone = false;
  let upstreamFailed = false;
  let pipeFailed = false;
  const writer = writable.getWriter();
  try {
    await writer.write(first);
  } catch {
    clientGone = true;
  }
  writer.releaseLock();
  if (!clientGone) {
    try {
      // Native to native: the runtime moves the chunks. The destination stays open after the
      // source ends or fails, for the closing event.
      await source.pipeTo(writable, { preventClose: true, preventAbort: true });
    } catch {
      pipeFailed = true;
    }
  }
  // The copy reads the rest at once.
  over();
  // Which side failed: a failing upstream fails the copy at once too; a client that left does
  // not, and the upstream call is then aborted rather than left to run to its end. A copy
  // already dropped cannot tell: the failure is taken as the upstream's.
  const end = pipeFailed ? await Promise.race([tail, after(100, "pending")]) : await tail;
  const settled = end !== "pending";
  const dropped = settled && end.cut;
  // A malformed event the check refused is the upstream's failure.
  if ((settled && end.failed) || (pipeFailed && dropped) || checked.malformed) upstreamFailed = true;
  else if (pipeFailed) clientGone = true;
  // A dropped copy's last bytes are the client's branch's, when it kept them and ran to its end.
  const fromClient = dropped && passed !== null && !pipeFailed;
  const known = settled && (!dropped || fromClient);
  const last = known ? lastBytes(fromClient ? passed.chunks : [start, ...end.blocks]) : new Uint8Array(0);
  const ended = !clientGone && !upstreamFailed;
  const responses = settled && end.sawEnd !== null;
  const done = responses ? end.sawEnd : endsWithDone(last);
  const complete = ended && (interrupted === null || !known || done);
  const closing = writable.getWriter();
  if (clientGone || upstreamFailed) abort.abort();
  const report = { tail: last, complete, clientGone };
  if (clientGone || (interrupted === null && upstreamFailed)) {
    closing.abort(new Error("the upstream answer was cut")).catch(() => {});
    return report;
  }
  try {
    if (!complete) {
      const event = responses ? nextInSequence(interrupted, last) : interrupted;
      await closing.write(new TextEncoder().encode(event));
    }
    await closing.close();
  } catch {
    report.clientGone = true;
  }
  return report;
}

// The Responses API's error event numbered after the last event in `last` (its events carry a
// `sequence_number`); as it is when none is found there.
function nextInSequence(event, last) {
  const numbers = [...new TextDecoder().decode(last).matchAll(/"sequence_number":\s*(\d+)/g)];
  if (numbers.length === 0) return event;
  const next = Number(numbers[numbers.length - 1][1]) + 1;
  return event.replace('"sequence_number":0', `"sequence_number":${next}`);
}

function after(ms, value) {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}

function join(chunks, size) {
  if (chunks.length === 1) return chunks[0];
  if (chunks.length === 0) return new Uint8Array(0);
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return all;
}

// The last chunks of a body as they pass: at least its last TAIL_BYTES, and only as many
// chunks as that takes.
class Tail {
  constructor() {
    this.chunks = [];
    this.size = 0;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.size += chunk.byteLength;
    while (this.chunks.length > 1 && this.size - this.chunks[0].byteLength >= TAIL_BYTES) {
      this.size -= this.chunks.shift().byteLength;
    }
  }
}

// The last TAIL_BYTES of the chunks kept.
function lastBytes(chunks) {
  const all = join(chunks, chunks.reduce((n, c) => n + c.byteLength, 0));
  return all.byteLength > TAIL_BYTES ? all.subarray(all.byteLength - TAIL_BYTES) : all;
}

function endsWithDone(bytes) {
  const text = new TextDecoder().decode(bytes.subarray(Math.max(0, bytes.length - 64))).trimEnd();
  return text.endsWith("data: [DONE]") || text.endsWith("data:[DONE]");
}

// What a body read resolves to when the body has not arrived by its time limit.
const LATE = "late";

// `read` (a promise), or LATE once `ms` have passed, when `giveUp` is called.
function within(read, ms, giveUp) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => {
      giveUp();
      resolve(LATE);
    }, ms);
  });
  return Promise.race([read, late]).finally(() => clearTimeout(timer));
}

// A request body whose length is known, in one call: its bytes, or LATE when it has not
// arrived within `ms` (a client trickling it holds no invocation longer than that).
export function readWhole(req, ms) {
  return within(
    req.arrayBuffer().then((b) => new Uint8Array(b)),
    ms,
    () => req.body?.cancel().catch(() => {}),
  );
}

// Reads a body to its end while it stays within `cap` bytes, within `ms`: resolves to its
// bytes; to null when it is longer (the rest is then read and dropped up to `drainTo` bytes in
// all, so that a client still sending can read the answer on a connection in order); to LATE
// when it has not ended in time; to undefined when it cannot be read. No body reads as empty.
export function readCapped(body, cap, drainTo, ms) {
  if (!body) return Promise.resolve(new Uint8Array(0));
  const reader = body.getReader();
  return within(readUpTo(reader, cap, drainTo), ms, () => reader.cancel().catch(() => {}));
}

async function readUpTo(reader, cap, drainTo) {
  const chunks = [];
  let size = 0;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) return join(chunks, size);
      size += r.value.byteLength;
      if (size > cap) {
        while (size <= drainTo) {
          const rest = await reader.read();
          if (rest.done) break;
          size += rest.value.byteLength;
        }
        reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(r.value);
    }
  } catch {
    return undefined;
  }
}

// An attempt's clock: after `ms`, aborts the call through `abort` (its AbortController), which
// fails whatever of it is still awaited (the headers, a body being read). Stopped with
// stopClock once the attempt is decided, before an answer is handed on. With `hedgeMs` (less
// than `ms`) and a hedge asked for (hedgeAfter), the one timer first fires at `hedgeMs`,
// resolving that promise, and then waits the rest: an attempt decided in time costs one timer.
export function startClock(abort, ms, hedgeMs) {
  const clock = { id: 0 };
  const hedge = abort.routerHedge;
  if (hedge && hedgeMs > 0 && hedgeMs < ms) {
    clock.id = setTimeout(() => {
      hedge();
      clock.id = setTimeout(() => abort.abort(), ms - hedgeMs);
    }, hedgeMs);
  } else {
    clock.id = setTimeout(() => abort.abort(), ms);
  }
  return clock;
}

export function stopClock(clock) {
  clearTimeout(clock.id);
}

// A promise that the clock of `abort`'s attempt resolves at its hedge time (see startClock).
export function hedgeAfter(abort) {
  return new Promise((resolve) => {
    abort.routerHedge = resolve;
  });
}

// The router's clock: the runtime's, plus an offset that only a `TEST_CLOCK` binding moves.
// Tests bind it to a function of their own that answers with the offset in milliseconds, so
// they move time forward (past a cooldown, to the start of a minute) instead of waiting for it.
// Without the binding the offset stays 0 and nothing is awaited.
let offset = 0;

export function now() {
  return Date.now() + offset;
}

// A promise that reads the test clock's offset, or undefined when there is no such binding.
export function readTestClock(env) {
  const clock = env.TEST_CLOCK;
  if (clock === undefined) return undefined;
  return clock.fetch("http://clock.test/").then(async (res) => {
    const ms = Number(await res.text());
    // Time never goes backwards.
    if (Number.isFinite(ms) && ms > offset) offset = ms;
  });
}

// Signed user tokens (`core::token`): verifies a JWS signature with WebCrypto. `material` is
// the HS256 secret, or a public JWK as JSON; imported keys are kept per isolate.
const cryptoKeys = new Map();
const ALGORITHMS = {
  HS256: [{ name: "HMAC", hash: "SHA-256" }, { name: "HMAC" }],
  RS256: [{ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
  ES256: [{ name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
  EdDSA: [{ name: "Ed25519" }, { name: "Ed25519" }],
};
export async function verifySignature(alg, material, input, signature) {
  const [importAs, verifyAs] = ALGORITHMS[alg] ?? [];
  if (!importAs) return false;
  try {
    const id = `${alg}\n${material}`;
    let key = cryptoKeys.get(id);
    if (!key) {
      key =
        alg === "HS256"
          ? await crypto.subtle.importKey("raw", new TextEncoder().encode(material), importAs, false, ["verify"])
          : await crypto.subtle.importKey("jwk", JSON.parse(material), importAs, false, ["verify"]);
      if (cryptoKeys.size >= 64) cryptoKeys.clear();
      cryptoKeys.set(id, key);
    }
    return await crypto.subtle.verify(verifyAs, key, signature, new TextEncoder().encode(input));
  } catch {
    return false;
  }
}

// A small document (an issuer's JWKS): its text, or null when it fails, is not a 200, takes
// longer than `ms` or is over 256 KiB.
export async function fetchText(url, ms) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    const response = await fetch(url, { signal: abort.signal, headers: { accept: "application/json" } });
    if (response.status !== 200) return null;
    const text = await response.text();
    return text.length > 262144 ? null : text;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}
