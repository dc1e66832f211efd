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

function headersOf(lines, into) {
  const parts = lines.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) into.append(parts[i], parts[i + 1]);
  return into;
}

// The upstream call: a POST of `body` (bytes) with the headers in `lines`. A redirect is not
// followed (it would turn the POST into a GET and could drop the key across origins).
export function send(url, lines, body, signal) {
  return fetch(url, {
    method: "POST",
    headers: headersOf(lines, new Headers()),
    body,
    redirect: "manual",
    signal,
  });
}

// The client's response: `upstream` lines are appended as they are; `ours` (the router's own)
// replace an upstream header of the same name, except `vary`, which is added to.
export function respond(status, upstream, ours, body) {
  const headers = headersOf(upstream, new Headers());
  const parts = ours.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) {
    if (parts[i] === "vary") headers.append(parts[i], parts[i + 1]);
    else headers.set(parts[i], parts[i + 1]);
  }
  return new Response(body === undefined ? null : body, { status, headers });
}

// Reads the start of an upstream body: resolves to [reader, bytes, done]. `bytes` is the first
// chunk, or when `whole` is over 0 every chunk up to the end while they stay within `whole`
// bytes (then `done` is true and nothing is left to hand on); it is undefined when the body
// ended or failed before its first byte, or failed before its end while it was being read
// whole.
export async function openBody(body, whole) {
  const reader = body.getReader();
  let first;
  try {
    const r = await reader.read();
    if (r.done) return [reader, undefined, true];
    first = r.value;
  } catch {
    return [reader, undefined, false];
  }
  if (whole <= 0 || first.byteLength > whole) return [reader, first, false];
  const chunks = [first];
  let size = first.byteLength;
  while (size <= whole) {
    let r;
    try {
      r = await reader.read();
    } catch {
      return [reader, undefined, false];
    }
    if (r.done) return [reader, join(chunks, size), true];
    chunks.push(r.value);
    size += r.value.byteLength;
  }
  return [reader, join(chunks, size), false];
}

// Cancels an upstream body that will not be handed on (a failover after its first chunk).
export function cancelBody(reader) {
  reader.cancel().catch(() => {});
}

// Hands `start` and the rest of the body (its `reader`) to the client, a chunk at a time with
// the client's pace: nothing is queued but the chunk in hand, so a slow client holds the
// upstream back rather than the isolate's memory, and only the last TAIL_BYTES are kept (as
// references to the chunks they are in). Returns [readable, finished]: the client's body, and
// a promise of {tail, complete, clientGone} once the body is over.
//
// For an event stream (`interrupted` given, an SSE error event), when the upstream fails or
// ends without `data: [DONE]`, `interrupted` is written before the client's stream closes, so a
// cut never looks like a clean end. Another body that fails mid-way is aborted, so the client
// sees the failure rather than a short body. A client that goes away cancels the upstream body
// and aborts the call through `abort` (its AbortController).
export function handOn(reader, start, interrupted, abort) {
  const { readable, writable } = new Identity();
  const events = typeof interrupted === "string";
  return [readable, pump(reader, start, writable.getWriter(), events ? interrupted : null, abort)];
}

// Workers' native byte stream; elsewhere (the wasm tests under Node) the standard one.
const Identity = globalThis.IdentityTransformStream ?? TransformStream;

async function pump(reader, start, writer, interrupted, abort) {
  const tail = [];
  let kept = 0;
  let clientGone = false;
  let upstreamFailed = false;
  let chunk = start;
  for (;;) {
    tail.push(chunk);
    kept += chunk.byteLength;
    while (tail.length > 1 && kept - tail[0].byteLength >= TAIL_BYTES) kept -= tail.shift().byteLength;
    try {
      await writer.write(chunk);
    } catch {
      clientGone = true;
      break;
    }
    let r;
    try {
      r = await reader.read();
    } catch {
      upstreamFailed = true;
      break;
    }
    if (r.done) break;
    chunk = r.value;
  }
  const last = lastBytes(tail, kept);
  const complete = !clientGone && !upstreamFailed && (interrupted === null || endsWithDone(last));
  if (clientGone) reader.cancel().catch(() => {});
  if (clientGone || upstreamFailed) abort.abort();
  if (clientGone || (interrupted === null && upstreamFailed)) {
    writer.abort(new Error("the upstream answer was cut")).catch(() => {});
    return { tail: last, complete, clientGone };
  }
  try {
    if (!complete) await writer.write(new TextEncoder().encode(interrupted));
    await writer.close();
  } catch {
    clientGone = true;
  }
  return { tail: last, complete, clientGone };
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

// The last TAIL_BYTES of the chunks kept.
function lastBytes(tail, kept) {
  const all = join(tail, kept);
  return all.byteLength > TAIL_BYTES ? all.subarray(all.byteLength - TAIL_BYTES) : all;
}

function endsWithDone(bytes) {
  const text = new TextDecoder().decode(bytes.subarray(Math.max(0, bytes.length - 64))).trimEnd();
  return text.endsWith("data: [DONE]") || text.endsWith("data:[DONE]");
}

// Reads a body to its end while it stays within `cap` bytes: resolves to its bytes; to null
// when it is longer (the rest is then read and dropped up to `drainTo` bytes in all, so that a
// client still sending can read the answer on a connection in order); to undefined when it
// cannot be read. No body reads as empty.
export async function readCapped(body, cap, drainTo) {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
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
