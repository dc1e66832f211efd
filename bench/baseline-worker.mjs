// The overhead benchmark's baseline: a trivial pass-through Worker, loaded in workerd the same
// way as the router. It sends the request as it came to the fake upstream and returns the
// answer untouched, so what it costs is what any Worker in front of an upstream costs (the
// runtime's HTTP in and out, one subrequest); the router's own cost is the difference.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    return fetch(new Request(env.UPSTREAM + url.pathname + url.search, request));
  },
};
