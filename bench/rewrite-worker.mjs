// The overhead benchmark's floor for a router: a JavaScript Worker that does the least any
// router must do with a request, and nothing else. It reads the JSON body, parses it, renames
// the model, serializes it again and sends it upstream with its own key; a JSON answer is read
// whole and sent back as bytes, an event stream is handed on as it is. No routing, no quota, no
// checks, no log line. Between the pass-through Worker and it lies what reading and rewriting
// a body costs in workerd; between it and the router, the router's own decisions and glue.
export default {
  async fetch(request, env) {
    const body = JSON.parse(await request.text());
    body.model = "meta-llama/Llama-3.3-70B-Instruct-Turbo";
    const url = new URL(request.url);
    const answer = await fetch(env.UPSTREAM + url.pathname, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer floor-key" },
      body: JSON.stringify(body),
    });
    const type = answer.headers.get("content-type") ?? "";
    if (type.includes("event-stream")) return new Response(answer.body, answer);
    return new Response(await answer.arrayBuffer(), answer);
  },
};
