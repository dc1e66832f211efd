// Successful answers, handed from the upstream to the client in JavaScript: no chunk crosses
// into WebAssembly, so a long stream costs the router almost no CPU. Rust looks at the first
// chunk (before anything is sent) and at the last bytes (after the end); see src/edge/stream.rs.

// How many of the last bytes are kept for the usage and the end (whole chunks, at least this
// many bytes while the body has them; cut to this many at the end).
const TAIL_BYTES = 16384;

// Reads the first chunk of an upstream body: resolves to [reader, chunk], with no chunk when the
// body ended or failed before its first byte.
export function openBody(body) {
  const reader = body.getReader();
  return reader.read().then(
    (r) => [reader, r.done ? undefined : r.value],
    () => [reader, undefined],
  );
}

// Cancels an upstream body that will not be handed on (a failover after its first chunk).
export function cancelBody(reader) {
  reader.cancel().catch(() => {});
}

// Starts handing `first` and the rest of `reader` to the client. Returns [readable, finished]:
// the client's body, and a promise of {tail, complete, clientGone} once the body is over.
// For an event stream (`interrupted` given, an SSE error event): when the upstream fails or
// ends without `data: [DONE]`, `interrupted` is written before the client's stream closes, so
// a cut never looks like a clean end. Another body that fails mid-way is aborted, so the
// client sees the failure rather than a short body.
export function handOn(first, reader, interrupted) {
  const { readable, writable } = new TransformStream();
  return [readable, pump(first, reader, writable.getWriter(), interrupted)];
}

async function pump(first, reader, writer, interrupted) {
  const tail = [];
  let kept = 0;
  const keep = (chunk) => {
    tail.push(chunk);
    kept += chunk.byteLength;
    while (tail.length > 1 && kept - tail[0].byteLength >= TAIL_BYTES) kept -= tail.shift().byteLength;
  };
  let upstreamFailed = false;
  let clientGone = false;
  // A client that goes away stops the upstream at once, not at the next chunk.
  writer.closed.catch(() => {
    clientGone = true;
    reader.cancel().catch(() => {});
  });
  try {
    keep(first);
    await writer.write(first);
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch {
        upstreamFailed = true;
        break;
      }
      if (next.done) break;
      keep(next.value);
      await writer.write(next.value);
    }
  } catch {
    // Only a write fails here: the client went away.
    clientGone = true;
  }
  const end = joinTail(tail);
  const events = typeof interrupted === "string";
  // An event stream is complete once `[DONE]` came, whatever happened after it.
  const complete = !clientGone && (events ? endsWithDone(end) : !upstreamFailed);
  if (clientGone) {
    reader.cancel().catch(() => {});
    writer.abort().catch(() => {});
    return { tail: end, complete, clientGone };
  }
  if (!events && upstreamFailed) {
    writer.abort(new Error("the upstream answer was cut")).catch(() => {});
    return { tail: end, complete, clientGone };
  }
  if (!complete) {
    try {
      await writer.write(new TextEncoder().encode(interrupted));
    } catch {
      clientGone = true;
    }
  }
  try {
    await writer.close();
  } catch {
    clientGone = true;
  }
  return { tail: end, complete, clientGone };
}

function joinTail(chunks) {
  let length = 0;
  for (const c of chunks) length += c.byteLength;
  const all = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return all.length > TAIL_BYTES ? all.slice(all.length - TAIL_BYTES) : all;
}

function endsWithDone(bytes) {
  const text = new TextDecoder().decode(bytes.slice(Math.max(0, bytes.length - 64))).trimEnd();
  return text.endsWith("data: [DONE]") || text.endsWith("data:[DONE]");
}
