// The operator page (`GET /router`) in headless Chromium (Debian's package, driven by
// playwright-core): after real traffic through the router, a reader who types the admin key sees
// each organization's windows as bars with the numbers the status endpoint reports, the circuit
// breaker a failing provider opened, the leases the isolate holds, and the top users by spend;
// without the key, or with a wrong one, an error and no data. Screenshots of the page are saved
// to target/screenshots/operator.png (and of its top users on made-up usage,
// operator-top-users.png).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GATEWAY_HASH, GATEWAY_KEY, launchChromium, startFakeUpstream, startRouter } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SCREENSHOT = path.join(ROOT, "target/screenshots/operator.png");
/** The top users table, on usage the test makes up. */
const USAGE_SCREENSHOT = path.join(ROOT, "target/screenshots/operator-top-users.png");

const MODEL = "llama-3.1-8b-instant";
/** A second model, with a minute window small enough to fill (it is never leased). */
const SMALL_MODEL = "llama-3.3-70b-versatile";
const ADMIN_KEY = "sk-admin-operator-page-7311";
const ADMIN_HASH = createHash("sha256").update(ADMIN_KEY).digest("hex");
/** A second gateway key, so that the usage has two subjects. */
const OTHER_KEY = "sk-gateway-operator-other-2468";
const OTHER_HASH = createHash("sha256").update(OTHER_KEY).digest("hex");
const KEYS = { GROQ_ORG_A: "gsk-operator-org-a-1111", GROQ_ORG_B: "gsk-operator-org-b-2222", TOGETHER_KEY: "tg-operator-3333" };
/** Windows large enough to lease (1/16 of each is at least four requests), small enough to show. */
const LIMITS = { rpm: 200, rpd: 1_000, tpm: 6_000, tpd: 100_000 };
const SMALL_LIMITS = { rpm: 4, rpd: 1_000, tpm: 6_000, tpd: 100_000 };
/** Provider failures in a row that open a circuit; its cooldown outlasts the test. */
const FAILOVER = { breaker_failures: 2, breaker_cooldown_ms: 600_000 };
const WINDOWS = ["requests_per_minute", "tokens_per_minute", "requests_per_day", "tokens_per_day"];

const OK = JSON.stringify({
  id: "c",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let groq, together, router, browser;
/** Served requests by gateway key, and the failed ones (all made with GATEWAY_KEY). */
const served = { [GATEWAY_KEY]: 0, [OTHER_KEY]: 0 };
let failed = 0;

before(async () => {
  groq = await startFakeUpstream({ maxRequests: 1_000, lifetimeMs: 300_000 });
  groq.answer(() => ({ status: 200, headers: { "content-type": "application/json" }, body: OK }));
  together = await startFakeUpstream({ maxRequests: 100, lifetimeMs: 300_000 });
  together.answer(() => ({ status: 500, headers: { "content-type": "application/json" }, body: '{"error":{"message":"down"}}' }));
  const config = {
    failover: FAILOVER,
    providers: {
      groq: {
        base_url: groq.baseUrl,
        keys: [
          { id: "ka", secret: "GROQ_ORG_A", org: "org-a" },
          { id: "kb", secret: "GROQ_ORG_B", org: "org-b" },
        ],
        limits: { [MODEL]: LIMITS, [SMALL_MODEL]: SMALL_LIMITS },
      },
      together: { base_url: together.baseUrl, keys: [{ id: "t1", secret: "TOGETHER_KEY" }] },
    },
    routes: { fast: [`groq/${MODEL}`], small: [`groq/${SMALL_MODEL}`], broken: ["together/m-t"] },
  };
  router = await startRouter(
    { ROUTER_CONFIG: config, GATEWAY_KEY_HASHES: `${GATEWAY_HASH},${OTHER_HASH}`, ADMIN_KEY_HASHES: ADMIN_HASH, ...KEYS },
    { clock: true, secrets: [ADMIN_KEY, OTHER_KEY] },
  );
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await router?.dispose();
  await groq?.close();
  await together?.close();
});

async function chat(key, model = "fast") {
  const res = await router.fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, max_tokens: 20, messages: [{ role: "user", content: "hi" }] }),
  });
  await res.arrayBuffer();
  if (res.status === 200) served[key]++;
  else failed++;
  return res.status;
}

async function status() {
  const res = await router.fetch("/v1/router/status", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  assert.equal(res.status, 200);
  return res.json();
}

/** Polls `probe` until it returns a truthy value, at most `tries` times `ms` apart. */
async function eventually(label, probe, { tries = 100, ms = 100 } = {}) {
  for (let i = 0; i < tries; i++) {
    const result = await probe();
    if (result) return result;
    await sleep(ms);
  }
  assert.fail(`${label}: never happened`);
}

/** A new page on the router's operator page; what it showed joins the harness's leak check. */
async function openPage(t) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  t.after(async () => {
    router.seen.push(await page.content().catch(() => ""));
    await page.close();
  });
  const res = await page.goto(`${router.url}/router`);
  return { page, res };
}

/** Types the key into the page and submits it. */
async function signIn(page, key) {
  await page.fill("#key", key);
  await page.click("button[type=submit]");
}

/** Waits for the page's next successful read after `loads` (the count before). */
async function nextLoad(page, loads) {
  await page.waitForFunction((n) => Number(document.querySelector("#data")?.dataset.loads ?? 0) > n, loads, { timeout: 10_000 });
}

const loadsOf = (page) => page.evaluate(() => Number(document.querySelector("#data").dataset.loads ?? 0));

/** The bars as the page shows them: where each is, its numbers, and its fill's width. */
function barsOf(page) {
  return page.$$eval(".bar", (bars) =>
    bars.map((bar) => ({
      provider: bar.closest(".provider")?.dataset.provider,
      org: bar.closest(".org")?.dataset.org,
      model: bar.closest(".model")?.dataset.model,
      window: bar.closest(".window")?.dataset.window,
      used: Number(bar.dataset.used),
      limit: Number(bar.dataset.limit),
      level: bar.dataset.level,
      track: bar.getBoundingClientRect().width,
      fill: bar.querySelector(".fill").getBoundingClientRect().width,
      text: bar.closest(".window").querySelector(".used").textContent,
    })),
  );
}

/** Every window of every organization in a status answer, as the bars should show them. */
function windowsOf(s) {
  const out = [];
  for (const [provider, p] of Object.entries(s.providers)) {
    for (const [org, models] of Object.entries(p.organizations)) {
      for (const [model, books] of Object.entries(models)) {
        for (const window of WINDOWS) out.push({ provider, org, model, window, used: books[window].used, limit: books[window].limit });
      }
    }
  }
  return out;
}

const key = (w) => `${w.provider}/${w.org}/${w.model}/${w.window}`;

const rowsOf = (page, table) =>
  page.$$eval(`${table} tbody tr`, (rows) => rows.map((r) => ({ ...r.dataset, cells: [...r.cells].map((c) => c.textContent.trim()) })));

test("the page is one document with strict headers, and shows nothing without the admin key", async (t) => {
  const { page, res } = await openPage(t);
  assert.equal(res.status(), 200);
  const headers = res.headers();
  assert.equal(headers["content-type"], "text/html; charset=utf-8");
  assert.equal(headers["cache-control"], "no-store");
  assert.match(headers["content-security-policy"], /^default-src 'none';.*connect-src 'self'/);
  assert.equal(headers["x-frame-options"], "DENY");
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["referrer-policy"], "no-referrer");
  assert.match(await page.textContent("#state"), /Enter the admin key/);
  assert.equal(await page.isHidden("#data"), true);

  // An empty key, then a gateway key (which is not an admin key): an error each time, no data.
  await signIn(page, "");
  await page.waitForSelector("#state.error");
  assert.match(await page.textContent("#state"), /Enter an admin key first/);
  await signIn(page, GATEWAY_KEY);
  await page.waitForFunction(() => /refused/.test(document.querySelector("#state").textContent));
  assert.match(await page.textContent("#state.error"), /The admin key was refused: .*\(status 401\)/);
  assert.equal(await page.isHidden("#data"), true);
  assert.equal(await page.locator(".bar").count(), 0);
  assert.equal(await page.locator("#breakers tbody tr").count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused key is not kept");
  // Reloading the page asks again.
  await page.reload();
  assert.match(await page.textContent("#state"), /Enter the admin key/);
});

test("the page shows each organization's windows as bars, the open breaker and the isolate's leases", async (t) => {
  // A fresh minute on the router's clock, so that no minute window ends during the test.
  router.toNextMinute(500);
  // Together fails twice in a row: its circuit opens, and the third request is not sent.
  assert.equal(await chat(GATEWAY_KEY, "broken"), 502);
  assert.equal(await chat(GATEWAY_KEY, "broken"), 502);
  assert.equal(await chat(GATEWAY_KEY, "broken"), 503);
  assert.equal(together.calls.length, 2);
  // The small model's minute: 4 of 4 in one organization, 3 in the other (headroom alternates).
  for (let i = 0; i < 7; i++) assert.equal(await chat(OTHER_KEY, "small"), 200);

  // Steady traffic, so that the isolate leases from the banks; it runs while the page loads.
  let running = true;
  const traffic = (async () => {
    for (let i = 0; i < 80 && running; i++) {
      assert.equal(await chat(GATEWAY_KEY), 200);
      await sleep(25);
    }
  })();
  await eventually("the isolate holds a lease", async () => (await status()).providers.groq.isolate.leases.length > 0);

  const { page } = await openPage(t);
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector(".bar");
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, "the key is kept for the tab");
  assert.equal(await page.inputValue("#key"), "", "the key leaves the field once submitted");

  // The leases table, while the traffic runs.
  const leases = await eventually("the leases table shows a lease", async () => {
    await page.click("#refresh");
    const rows = await rowsOf(page, "#leases");
    return rows.some((r) => r.provider === "groq") ? rows : null;
  }, { tries: 30, ms: 300 });
  for (const row of leases.filter((r) => r.provider)) {
    assert.equal(row.model, MODEL);
    assert.ok(["org-a", "org-b"].includes(row.org), row.org);
    assert.match(row.cells[3], /^\d[\d,]*$/, "requests left");
    assert.match(row.cells[5], /^in \d+ s$/, "expires");
  }
  assert.match(await page.textContent("#leases caption"), /^isolate i-[0-9a-f]+$/);

  // The breakers table lists Together's open circuit.
  const breakers = await rowsOf(page, "#breakers");
  assert.deepEqual(breakers.map((r) => [r.provider, r.state]), [["together", "open"]]);
  assert.equal(breakers[0].cells[1], "open");
  assert.equal(breakers[0].cells[2], "2");
  assert.match(breakers[0].cells[3], /^\d\d:\d\d:\d\d \(in (9 min \d+ s|10 min 0 s)\)$/);
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // Once the traffic stops and the isolate has given its leases back, the books hold still:
  // every bar then shows what the status endpoint reports, and the day's bars what was served.
  // (The isolate drops a lease from its list when it queues the lease's return, which the next
  // background call carries; until the bank applies it, the bank still counts the unspent part.
  // On a loaded machine that call comes later, so the books settle a little after the leases
  // are gone from the status page.)
  running = false;
  await traffic;
  await eventually("the leases are given back", async () => (await status()).providers.groq.isolate.leases.length === 0, { tries: 100, ms: 200 });
  const servedAll = () => served[GATEWAY_KEY] + served[OTHER_KEY];
  const dayOf = (bars) => bars.filter((b) => b.window === "requests_per_day").reduce((n, b) => n + b.used, 0);
  let want, bars;
  const settled = eventually("the bars show the status endpoint's numbers, and the day's bars what was served", async () => {
    const loads = await loadsOf(page);
    await page.click("#refresh");
    await nextLoad(page, loads);
    bars = await barsOf(page);
    want = windowsOf(await status());
    const shown = Object.fromEntries(bars.map((b) => [key(b), [b.used, b.limit]]));
    const same = want.length > 0 && want.length === bars.length && want.every((w) => shown[key(w)]?.[0] === w.used && shown[key(w)]?.[1] === w.limit);
    return same && dayOf(bars) === servedAll();
  }, { tries: 40, ms: 250 });
  // Never settled: say by how much the day's bars are off, if they are.
  await settled.catch((err) => {
    if (bars) assert.equal(dayOf(bars), servedAll(), "each served request is on a day's bar");
    throw err;
  });
  // Both organizations served on both models, each with its four windows.
  assert.deepEqual([...new Set(bars.map((b) => b.org))].sort(), ["org-a", "org-b"]);
  assert.equal(bars.length, 16);
  for (const b of bars) {
    assert.equal(b.limit, (b.model === SMALL_MODEL ? SMALL_LIMITS : LIMITS)[{ requests_per_minute: "rpm", requests_per_day: "rpd", tokens_per_minute: "tpm", tokens_per_day: "tpd" }[b.window]]);
    assert.ok(b.track > 100, `${key(b)}: the bar has room (${b.track}px)`);
    const share = Math.min(1, b.used / b.limit);
    if (b.used > 0) {
      assert.ok(b.fill > 0, `${key(b)}: used ${b.used}, but the bar is empty`);
      assert.ok(Math.abs(b.fill - Math.max(3, share * b.track)) <= 1.5, `${key(b)}: ${b.fill}px for ${b.used}/${b.limit} of ${b.track}px`);
    } else {
      assert.equal(b.fill, 0, key(b));
    }
    assert.equal(b.level, share >= 0.85 ? "full" : share >= 0.6 ? "warn" : "ok", key(b));
    assert.ok(b.text.startsWith(`${b.used.toLocaleString("en-US")} / ${b.limit.toLocaleString("en-US")} (`), b.text);
  }
  assert.ok(bars.some((b) => b.used > 0));
  // The small model's minute windows: one full (red), one at three quarters (amber).
  const small = bars.filter((b) => b.model === SMALL_MODEL && b.window === "requests_per_minute");
  assert.deepEqual(small.map((b) => [b.used, b.level]).sort(), [[3, "warn"], [4, "full"]]);
  assert.equal(dayOf(bars), servedAll(), "each served request is on a day's bar");
  assert.match(await page.textContent("#summary"), /1 breaker open/);
});

test("when the usage is unavailable the page says so and shows the rest", async (t) => {
  const { page } = await openPage(t);
  await page.route("**/v1/router/usage", (route) => route.fulfill({ status: 503, contentType: "application/json", body: "{}" }));
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector(".bar");
  assert.equal(await page.textContent("#usage-state"), "usage unavailable (status 503)");
  assert.equal(await page.isHidden("#top-users"), true);
  assert.equal(await page.isVisible("#breakers"), true);
  assert.ok((await page.locator(".bar").count()) > 0);
});

test("the top users table sums the usage rows by subject and keeps the ten largest spends", async (t) => {
  // Twelve subjects over two days and two models; subject i spends i cents a row.
  const rows = [];
  for (let i = 1; i <= 12; i++) {
    for (const day of ["2026-12-02", "2026-12-03"]) {
      for (const model of [`groq/${MODEL}`, `groq/${SMALL_MODEL}`]) {
        rows.push({ day, subject: `user:u${i}`, model, requests: 250 * i, errors: i % 3, prompt_tokens: 1_000 * i, cached_tokens: 0, completion_tokens: 500, spend_usd: i / 100 });
      }
    }
  }
  const usage = { from: "2026-12-02", to: "2026-12-03", rows };
  const { page } = await openPage(t);
  await page.route("**/v1/router/usage", (route) => route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(usage) }));
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector("#top-users tbody tr[data-subject]");
  assert.equal(await page.isHidden("#usage-state"), true);
  assert.equal(await page.textContent("#top-users caption"), "from 2026-12-02 to 2026-12-03");
  const shown = await rowsOf(page, "#top-users");
  assert.deepEqual(shown.map((r) => r.subject), [12, 11, 10, 9, 8, 7, 6, 5, 4, 3].map((i) => `user:u${i}`));
  // Four rows each: requests, tokens (prompt and completion), errors and spend summed.
  assert.deepEqual(shown[0].cells, ["user:u12", "12,000", "50,000", "0", "$0.48"]);
  assert.deepEqual(shown[9].cells, ["user:u3", "3,000", "14,000", "0", "$0.12"]);
  assert.deepEqual(shown[6].cells, ["user:u6", "6,000", "26,000", "0", "$0.24"]);
  assert.deepEqual(shown[7].cells, ["user:u5", "5,000", "22,000", "8", "$0.20"]);
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.locator("#top-users").screenshot({ path: USAGE_SCREENSHOT });
});

test("the top users by spend are the subjects that made requests, with their request counts", async (t) => {
  const read = async () => {
    const res = await router.fetch("/v1/router/usage", { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(res.status, 200, "GET /v1/router/usage answers");
    return res.json();
  };
  /** The usage summed by subject: requests, errors. */
  const bySubject = (usage) => {
    const out = {};
    for (const r of usage.rows) {
      out[r.subject] ??= { requests: 0, errors: 0, spend: 0 };
      out[r.subject].requests += r.requests;
      out[r.subject].errors += r.errors;
      out[r.subject].spend += r.spend_usd;
    }
    return out;
  };
  const servedCounts = [served[GATEWAY_KEY], served[OTHER_KEY]].sort((a, b) => a - b);
  // The usage is recorded after each answer: wait until every served request is in it.
  const subjects = await eventually("the usage counts every served request", async () => {
    const s = bySubject(await read());
    // `requests` counts the answered requests; `errors` the failed ones, apart.
    const counts = Object.values(s).map((u) => u.requests).sort((a, b) => a - b);
    return JSON.stringify(counts) === JSON.stringify(servedCounts) ? s : null;
  });
  for (const subject of Object.keys(subjects)) assert.match(subject, /^key:[0-9a-f]{12}$/);

  const { page } = await openPage(t);
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector("#top-users tbody tr[data-subject]");
  const rows = await rowsOf(page, "#top-users");
  assert.deepEqual(rows.map((r) => r.subject).sort(), Object.keys(subjects).sort());
  for (const row of rows) {
    const u = subjects[row.subject];
    assert.equal(row.cells[0], row.subject);
    assert.equal(row.cells[1], u.requests.toLocaleString("en-US"), `${row.subject}: requests`);
    assert.equal(row.cells[3], u.errors.toLocaleString("en-US"), `${row.subject}: errors`);
  }
  // The largest spend first.
  const spends = rows.map((r) => subjects[r.subject].spend);
  assert.deepEqual(spends, [...spends].sort((a, b) => b - a));
  // The failed requests were all made with one key.
  assert.equal(Object.values(subjects).reduce((n, u) => n + u.errors, 0) <= failed, true);
});
