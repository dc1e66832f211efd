// Successful answers, handed from the upstream to the client by the runtime itself: the body is
// piped natively (a native ReadableStream into an IdentityTransformStream), so no chunk runs any
// JavaScript or WebAssembly, and a long stream costs the router almost no CPU. Rust looks at the
// first chunk (before anything is sent) and at the last bytes (after the end); see
// src/edge/stream.rs.

// How many of the last bytes are reported for the usage and the end.
const TAIL_BYTES = 16384;

// Reads the first chunk of an upstream body: resolves to [body, reader, chunk], with no chunk
// when the body ended or failed before its first byte.
export function openBody(body) {
  const reader = body.getReader();
  return reader.read().then(
    (r) => [body, reader, r.done ? undefined : r.value],
    () => [body, reader, undefined],
  );
}

// Cancels an upstream body that will not be handed on (a failover after its first chunk).
export function cancelBody(reader) {
  reader.cancel().catch(() => {});
}

// Starts handing `first` and the rest of `body` to the client. Returns [readable, finished]: the
// client's body, and a promise of {tail, complete, clientGone} once the body is over.
//
// The runtime does the work: the body is piped natively into the client's stream (no chunk runs
// JavaScript or WebAssembly), and with `keepTail` a native copy of it (a tee) is read in full
// for its last bytes; without, `tail` is the first chunk. For an event stream (`interrupted`
// given, an SSE error event), the copy is kept in any case: when the upstream fails or ends
// without `data: [DONE]`, `interrupted` is written before the client's stream closes, so a cut
// never looks like a clean end. Another body that fails mid-way is aborted, so the client sees
// the failure rather than a short body. A client that goes away aborts the upstream call
// through `abort` (its AbortController).
export function handOn(body, reader, first, interrupted, keepTail, abort) {
  reader.releaseLock();
  const events = typeof interrupted === "string";
  let source = body;
  let copied = Promise.resolve(new Uint8Array(0));
  if (events || keepTail) {
    const [toClient, copy] = body.tee();
    source = toClient;
    copied = new Response(copy).arrayBuffer().then(
      (buffer) => new Uint8Array(buffer),
      () => null,
    );
  }
  const { readable, writable } = new Identity();
  return [readable, pipe(first, source, writable, copied, events ? interrupted : null, abort)];
}

// Workers' native byte stream; elsewhere (the wasm tests under Node) the standard one.
const Identity = globalThis.IdentityTransformStream ?? TransformStream;

async function pipe(first, source, writable, copied, interrupted, abort) {
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
  // Which side failed: a failing upstream fails its copy at once too; a client that left does
  // not, and the upstream call is then aborted rather than left to run to its end. Without a
  // copy, a failed pipe is taken as the upstream's.
  const rest = pipeFailed ? await Promise.race([copied, after(100, "pending")]) : await copied;
  if (rest === null || (pipeFailed && rest.byteLength === 0)) upstreamFailed = true;
  else if (pipeFailed) clientGone = true;
  const tail = rest instanceof Uint8Array ? joinTail(first, rest) : first;
  const complete = !clientGone && !upstreamFailed && (interrupted === null || endsWithDone(tail));
  const closing = writable.getWriter();
  if (clientGone || upstreamFailed) abort.abort();
  if (clientGone || (interrupted === null && upstreamFailed)) {
    closing.abort(new Error("the upstream answer was cut")).catch(() => {});
    return { tail, complete, clientGone };
  }
  try {
    if (!complete) await closing.write(new TextEncoder().encode(interrupted));
    await closing.close();
  } catch {
    clientGone = true;
  }
  return { tail, complete, clientGone };
}

function after(ms, value) {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}

// The last TAIL_BYTES of the body: its first chunk, then `rest` (the copy, taken after the first
// chunk was read, so without it).
function joinTail(first, rest) {
  if (rest.byteLength >= TAIL_BYTES) return rest.slice(rest.byteLength - TAIL_BYTES);
  const all = new Uint8Array(first.byteLength + rest.byteLength);
  all.set(first, 0);
  all.set(rest, first.byteLength);
  return all.byteLength > TAIL_BYTES ? all.slice(all.byteLength - TAIL_BYTES) : all;
}

function endsWithDone(bytes) {
  const text = new TextDecoder().decode(bytes.slice(Math.max(0, bytes.length - 64))).trimEnd();
  return text.endsWith("data: [DONE]") || text.endsWith("data:[DONE]");
}
