// Drives the Vigil web console in headless Chromium (playwright-core, the system's Chromium) as
// an analyst would, for tests/console.rs: sign in with the token, find the offense a replayed
// fixture produced at the top of the queue, open it (events, magnitude reasons, timeline), add a
// note, assign it, close it with a reason, search an event by text, push a few records and see
// them arrive in the live sources view (EPS), sign out. Every step waits on selectors or page
// state (never on time) and leaves a screenshot; a console error or CSP violation fails the run.
//
// Environment (all set by tests/console.rs):
//   VIGIL_URL             the console's base URL (http://127.0.0.1:PORT)
//   VIGIL_TOKEN           an API token with the analyst role or more
//   VIGIL_SCREENSHOTS     folder for the screenshots (created)
//   VIGIL_CHROMIUM        the browser (default /usr/bin/chromium)
//   VIGIL_EXPECT_INDEX    index value of the offense expected first in the queue
//   VIGIL_EXPECT_OFFENSES how many open offenses the queue shows at least
//   VIGIL_NOTE, VIGIL_ASSIGNEE, VIGIL_CLOSING_REASON   what the analyst writes
//   VIGIL_SEARCH_TEXT, VIGIL_SEARCH_FROM, VIGIL_SEARCH_TO   the event search (times: UTC,
//                         YYYY-MM-DDTHH:MM)
//   VIGIL_EXPECT_SOURCE   a source id the sources view lists
//
// Prints one JSON line on success: {"ok":true,"offense_id":...,"screenshots":[...]}; exits 1
// with the reason (and a failure screenshot) otherwise.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`drive.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const base = need("VIGIL_URL");
const token = need("VIGIL_TOKEN");
const shots = need("VIGIL_SCREENSHOTS");
const expectIndex = need("VIGIL_EXPECT_INDEX");
const expectOffenses = Number(need("VIGIL_EXPECT_OFFENSES"));
const note = need("VIGIL_NOTE");
const assignee = need("VIGIL_ASSIGNEE");
const reason = need("VIGIL_CLOSING_REASON");
const searchText = need("VIGIL_SEARCH_TEXT");
const searchFrom = need("VIGIL_SEARCH_FROM");
const searchTo = need("VIGIL_SEARCH_TO");
const expectSource = need("VIGIL_EXPECT_SOURCE");
const executablePath = process.env.VIGIL_CHROMIUM || "/usr/bin/chromium";

mkdirSync(shots, { recursive: true });
const taken = [];
const problems = []; // console errors, page errors, CSP violations
const started = Date.now();
const log = (msg) => console.error(`[console ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage"],
  timeout: 60_000,
});
log(`chromium ${browser.version()}`);
const context = await browser.newContext({ viewport: { width: 1440, height: 960 }, timezoneId: "UTC" });
const page = await context.newPage();
page.setDefaultTimeout(30_000);
page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

async function shot(name, target) {
  const path = join(shots, name + ".png");
  if (target) await target.screenshot({ path });
  else await page.screenshot({ path, fullPage: true });
  taken.push(path);
  log(`screenshot ${path}`);
}

/** Waits until fn() (run in the page with arg) is truthy; fails with `what`. */
async function until(what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: 30_000, polling: 100 });
  } catch (e) {
    throw new Error(`gave up waiting for: ${what} (${e.message.split("\n")[0]})`);
  }
}

const text = (sel) => page.locator(sel).innerText();

let offenseId = null;
try {
  // 1. The sign-in page.
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await page.locator("#login #token").waitFor();
  await shot("01-sign-in");

  // 2. Sign in; the queue lists the open offenses, highest magnitude first, ours on top.
  await page.fill("#token", token);
  await page.click("#sign-in");
  await page.locator("#nav").waitFor();
  await until(`${expectOffenses} offenses in the queue`,
    (n) => document.querySelectorAll("#offense-table tbody tr.offense").length >= n, expectOffenses);
  const mags = await page.$$eval("#offense-table tbody tr.offense", (rows) => rows.map((r) => Number(r.dataset.magnitude)));
  for (let i = 1; i < mags.length; i++) {
    if (mags[i] > mags[i - 1]) throw new Error(`queue not sorted by magnitude: ${mags.join(", ")}`);
  }
  const firstRow = page.locator("#offense-table tbody tr.offense").first();
  const firstText = await firstRow.innerText();
  if (!firstText.includes(expectIndex)) throw new Error(`first offense is not ${expectIndex}: ${firstText}`);
  log(`queue: magnitudes ${mags.join(", ")}; first: ${firstText.replace(/\s+/g, " ")}`);
  await shot("02-offense-queue");

  // 3. Open it: summary, magnitude reasons, rules, events, timeline.
  const row = page.locator("#offense-table tbody tr.offense", { hasText: expectIndex });
  offenseId = await row.getAttribute("data-id");
  await row.click();
  await page.locator("#detail").waitFor();
  await until("the offense's title", (ix) => document.querySelector("#detail-title").textContent.includes(ix), expectIndex);
  await until("its events", () => document.querySelectorAll("#detail-events tbody tr.event").length > 0);
  await until("its magnitude reasons", () => document.querySelectorAll("#reasons li").length > 0);
  await until("its rules", () => document.querySelectorAll("#rules li").length > 0);
  await until("its timeline", () =>
    document.querySelectorAll("#timeline .bar").length > 0 &&
    document.querySelectorAll("#timeline .tick").length > 0 &&
    document.querySelectorAll("#timeline-list li").length > 0);
  const events = await page.locator("#detail-events tbody tr.event").count();
  const reasons = await page.locator("#reasons li").allInnerTexts();
  log(`detail ${offenseId}: ${events} events; reasons: ${reasons.join(" | ")}`);
  if (!(await text("#detail-events tbody")).includes(expectIndex)) throw new Error("the events do not show the index value");
  await shot("03-offense-detail");
  await shot("04-timeline", page.locator("#timeline-section"));

  // 4. A note.
  await page.fill("#note-text", note);
  await page.click("#add-note");
  await page.locator("#notes li.note", { hasText: note }).waitFor();
  await shot("05-note-added");

  // 5. Assign.
  await page.fill("#assignee", assignee);
  await page.click("#assign");
  await until("the assignee shown", (a) => document.querySelector('#detail-summary dd[data-field="assignee"]')?.textContent === a, assignee);
  await shot("06-assigned");

  // 6. Close with a reason.
  await page.fill("#closing-reason", reason);
  await page.click("#close");
  await until("the offense closed", (r) =>
    document.querySelector('#detail-summary dd[data-field="status"]')?.textContent.startsWith("closed") &&
    document.querySelector('#detail-summary dd[data-field="closing-reason"]')?.textContent === r, reason);
  await page.locator("#reopen").waitFor();
  if (await page.locator("#close-form").isVisible()) throw new Error("the close form is still shown on a closed offense");
  await shot("07-closed");

  // 7. The queue: gone from the open ones, listed among the closed ones.
  await page.click("#back");
  await until("the open queue without it", (id) => {
    const rows = [...document.querySelectorAll("#offense-table tbody tr.offense")];
    return !document.querySelector("#offenses").hidden && rows.length > 0 && !rows.some((r) => r.dataset.id === id);
  }, offenseId);
  await page.selectOption("#offense-status", "closed");
  await until("the closed queue with it", (id) => {
    const rows = [...document.querySelectorAll("#offense-table tbody tr.offense")];
    return rows.length > 0 && rows.every((r) => r.textContent.includes("closed")) &&
      rows.some((r) => r.dataset.id === id);
  }, offenseId);
  await shot("08-closed-queue");

  // 8. Event search by text in the message.
  await page.click('nav button[data-view="events"]');
  await page.locator("#events").waitFor();
  await page.fill("#ev-q", searchText);
  await page.fill("#ev-from", searchFrom);
  await page.fill("#ev-to", searchTo);
  await page.click("#ev-search");
  // Done when the table answers this text (an earlier search's late answer is dropped).
  await until("the search's answer", (q) => {
    const t = document.querySelector("#event-table");
    return t.getAttribute("aria-busy") === "false" && t.dataset.q === q;
  }, searchText);
  await page.locator("#event-table tbody tr.event", { hasText: searchText }).first().waitFor();
  const hits = await page.locator("#event-table tbody tr.event").count();
  const summary = await text("#ev-summary");
  log(`event search "${searchText}": ${hits} rows; ${summary}`);
  const others = await page.locator("#event-table tbody tr.event", { hasNotText: searchText }).count();
  if (others > 0) throw new Error(`${others} events shown that do not contain "${searchText}"`);
  await page.locator("#event-table tbody tr.event").first().click();
  await page.locator("#event-table tbody tr.raw pre").first().waitFor();
  await shot("09-event-search");

  // 9. Sources with their EPS, refreshed live: records pushed now show up without a reload.
  await page.click('nav button[data-view="sources"]');
  await page.locator("#sources").waitFor();
  const source = page.locator("#source-table tbody tr.source", { hasText: expectSource });
  await source.waitFor();
  const records = async () =>
    Number(await source.locator(".n-events").innerText()) + Number(await source.locator(".n-dead").innerText());
  const before = await records();
  const now = new Date().toISOString();
  const lines = Array.from({ length: 20 }, (_, i) => `<14>1 ${now} console-test probe - - - live EPS probe ${i}`).join("\n");
  const pushed = await page.request.post(base + "/api/v1/ingest", {
    headers: { Authorization: "Bearer " + token, "Content-Type": "text/plain" },
    data: lines,
  });
  if (pushed.status() !== 202) throw new Error(`ingest answered ${pushed.status()}: ${await pushed.text()}`);
  await until("the pushed records in the live sources view", ([id, n]) => {
    const row = [...document.querySelectorAll("#source-table tbody tr.source")].find((r) => r.dataset.id === id);
    if (!row) return false;
    const got = Number(row.querySelector(".n-events").textContent) + Number(row.querySelector(".n-dead").textContent);
    return got >= n && Number(row.querySelector(".eps").textContent) > 0;
  }, [expectSource, before + 20]);
  const eps = await source.locator(".eps").innerText();
  if (!/^\d+\.\d\d$/.test(eps)) throw new Error(`EPS cell is not a rate: ${eps}`);
  log(`source ${expectSource}: ${before} then ${await records()} records, ${eps} EPS`);
  await shot("10-sources");

  // 10. Sign out: the data leaves the page.
  await page.click("#logout");
  await page.locator("#login").waitFor();
  await until("no data left in the page", () =>
    document.querySelectorAll("tbody tr").length === 0 && sessionStorage.getItem("vigil-token") === null);
  await shot("11-signed-out");

  if (problems.length) throw new Error("the page reported errors:\n  " + problems.join("\n  "));
  console.log(JSON.stringify({ ok: true, offense_id: offenseId, screenshots: taken, seconds: (Date.now() - started) / 1000 }));
  await browser.close();
} catch (e) {
  log(`FAILED: ${e.message}`);
  for (const p of problems) log(p);
  try {
    await shot("failure");
  } catch (_) { /* the page may be gone */ }
  await browser.close().catch(() => {});
  process.exit(1);
}
