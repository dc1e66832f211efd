// The runtime calls of the Batch API (src/edge/batch.rs): a call passed to the provider, and an
// upload streamed to it through the core's rewriter, chunk by chunk, never held whole.

import { Identity, headerLines, plainHeaders } from "./runtime.js";

// The answer's parts, as Rust reads them: [status, headerLines, body stream or null].
function parts(resp) {
  return [resp.status, headerLines(resp.headers), resp.body];
}

// One call to the provider: `method` on `url` with the headers in `lines` and `body` (bytes or
// undefined), aborted after `ms`. A redirect is not followed. Resolves to the answer's parts,
// or null when the call failed before its headers.
export async function relay(method, url, lines, body, ms) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    return parts(
      await fetch(url, { method, headers: plainHeaders(lines), body, redirect: "manual", signal: abort.signal }),
    );
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

// The size of the buffers an upload is read into and written out of.
const CHUNK = 64 * 1024;
// What is left of a refused upload is read and dropped up to this much, for this long.
const DRAIN_BYTES = 1 << 20;
const DRAIN_MS = 1000;

// A request body's source for nextChunk: a reader that reads into one buffer, reused for every
// chunk (a BYOB reader), so that a file of any size allocates no memory per chunk; a plain
// reader where the body is no byte stream.
export function sourceOf(body) {
  try {
    return { reader: body.getReader({ mode: "byob" }), buffer: new ArrayBuffer(CHUNK) };
  } catch {
    return { reader: body.getReader(), buffer: null };
  }
}

// The next chunk of `source` (valid until the next call), or undefined at the body's end.
// Rejects when the body fails (the client went away).
export async function nextChunk(source) {
  const r = source.buffer ? await source.reader.read(new Uint8Array(source.buffer)) : await source.reader.read();
  if (r.done) return undefined;
  if (source.buffer) source.buffer = r.value.buffer;
  return r.value;
}

// nextChunk, or "late" when the chunk has not come within `ms` (the body is then cancelled):
// the start of an upload, read before its provider is known, is held to the upload's time too.
export function nextChunkWithin(source, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => {
      source.reader.cancel().catch(() => {});
      resolve("late");
    }, ms);
  });
  return Promise.race([nextChunk(source), late]).finally(() => clearTimeout(timer));
}

// Reads what is left of a refused upload and drops it, up to `cap` bytes within `ms`, then
// cancels it: answering while the client is still sending could close the connection under it
// (it would see a broken pipe instead of the 400).
export async function drainSource(source, cap, ms) {
  const until = Date.now() + ms;
  let read = 0;
  try {
    while (read <= cap && Date.now() < until) {
      const chunk = await nextChunkWithin(source, Math.max(1, until - Date.now()));
      if (chunk === undefined || chunk === "late") return;
      read += chunk.byteLength;
    }
  } catch {
    // The client went away: nothing to drain.
  }
  source.reader.cancel().catch(() => {});
}

// Streams an upload to `url`: `first` (what the rewriter gave for the chunks read so far), then
// each further chunk of `source` rewritten by `step`, the core's rewriter: `step(chunk, out)`
// takes a chunk (undefined at the body's end, null to go on with what it holds), writes what is
// ready to send into `out` and says how many bytes (0: nothing more for now), or -1 when it
// refuses a line. Its output goes out from one buffer, reused once the runtime has taken it, and
// the provider reads the upload as it comes (a chunked body): the isolate holds a chunk and a
// line at a time, and allocates nothing per chunk. Resolves to the answer's parts; to null when
// the call failed before its headers; to "refused" when `step` refused a line (the upload is
// aborted, so the provider never completes a file); to "late" past `ms`.
export async function upload(url, lines, source, first, step, ms) {
  const abort = new AbortController();
  const { readable, writable } = new Identity();
  const writer = writable.getWriter();
  // Ends every part of the call: the upstream request, the stream it reads, and the client's
  // body (drained first when a line was refused, so that the client reads its 400).
  let refused = false;
  // Once stopped (late, or the provider's call failed), the client's cancelled body reads as
  // ended: it must not be taken for a complete upload whose end the rewriter then refuses.
  let stopped = false;
  const stop = (why) => {
    stopped = true;
    abort.abort();
    writer.abort(why).catch(() => {});
    if (!refused) source.reader.cancel().catch(() => {});
  };
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    stop(new Error("late"));
  }, ms);
  const out = new Uint8Array(CHUNK);
  const pump = (async () => {
    try {
      if (first.byteLength) await writer.write(first);
      for (;;) {
        const chunk = await nextChunk(source);
        if (stopped) throw new Error("stopped");
        for (let n = step(chunk, out); n !== 0; n = step(null, out)) {
          if (n < 0) {
            refused = true;
            throw new Error("refused");
          }
          await writer.write(out.subarray(0, n));
        }
        if (chunk === undefined) break;
      }
      await writer.close();
    } catch (e) {
      stop(e);
    }
  })();
  let resp = null;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers: plainHeaders(lines),
      body: readable,
      redirect: "manual",
      signal: abort.signal,
    });
  } catch {
    // Nobody reads the upload any more: the pump must not wait on it.
    stop(new Error("failed"));
  }
  await pump;
  clearTimeout(timer);
  if (refused) {
    resp?.body?.cancel().catch(() => {});
    await drainSource(source, DRAIN_BYTES, DRAIN_MS);
    return "refused";
  }
  if (late) return "late";
  return resp && parts(resp);
}
