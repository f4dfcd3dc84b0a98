// The operator console in a real browser (Debian's chromium, driven by playwright-core), as an
// operator would use it: messages posted to the api (valid, invalid, and ones the database
// refuses, one of them hostile), the dead letter found with its reason, the cause fixed, the
// message replayed from the page and seen stored on the trace page. A screenshot of every page
// goes to the screenshot folder. Run by tests/template/browser.rs:
//
//   node console.mjs <config.json>
//
// config: { api, console, chromium, screenshots, fix: [command, ...args] }
import { readFileSync, mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(config.screenshots, { recursive: true });

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function post(path, body) {
  const response = await fetch(`${config.api}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function until(what, probe, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function order(n, totalPrice, comment) {
  return {
    order_key: `ORD-B${String(n).padStart(6, "0")}`,
    customer_key: "CUST-0001",
    order_status: "O",
    total_price: totalPrice,
    order_date: "1996-01-02",
    order_priority: "5-LOW",
    clerk: "Clerk#000000951",
    ship_priority: 0,
    comment,
    line_items: [
      { line_number: 1, part_key: "P-1", supplier_key: "S-7", quantity: 17, extended_price: "21168.23", discount: "0.04", tax: "0.02", return_flag: "N", line_status: "O", ship_date: "1996-03-13", commit_date: "1996-02-12", receipt_date: "1996-03-22", ship_mode: "TRUCK" },
    ],
  };
}

// --- The messages -------------------------------------------------------------------------
const valid = await post("/ingest/message/order", order(1, "100.00", "fine"));
check(valid.status === 202, `a valid order is accepted: ${JSON.stringify(valid)}`);
const invalid = await post("/ingest/message/order", { order_key: "ORD-B2" });
check(invalid.status === 422, `an invalid order is refused at the door: ${JSON.stringify(invalid)}`);
// The database refuses orders above 1,000,000 (a CHECK constraint the test added).
const refused = await post("/ingest/message/order", order(3, "5000000.00", "too big for the database"));
check(refused.status === 202, `a valid order the database will refuse is accepted: ${JSON.stringify(refused)}`);
const hostileText = `<script>window.__pwned = 1</script>"><img src=x onerror="window.__pwned=2">${"x".repeat(1_000_000)}`;
const hostile = await post("/ingest/message/order", order(4, "6000000.00", hostileText));
check(hostile.status === 202, `the hostile order is accepted: status ${hostile.status}`);
const refusedId = refused.body.message_id;
const hostileId = hostile.body.message_id;

const browser = await chromium.launch({ executablePath: config.chromium, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
// CI runs this beside builds that take both cores: playwright's 30 s default is too short there.
page.setDefaultTimeout(180_000);
page.setDefaultNavigationTimeout(180_000);
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
// The validate box's refusal (422) is the one failed request the page makes on purpose.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().includes("status of 422")) problems.push(`console error: ${m.text()}`);
});
// The value of the overview card labelled `label`.
const card = (label) => page.evaluate((l) => {
  const c = [...document.querySelectorAll(".card")].find((e) => e.querySelector(".label").textContent === l);
  return c ? c.querySelector(".value").textContent : null;
}, label);
// Waits until the page shows `hash` (not the page before it).
const view = (hash) => page.waitForSelector(`main[data-view="${hash}"]`);
const shot = (name) => page.screenshot({ path: `${config.screenshots}/${name}.png`, fullPage: true });

// --- Overview: the dead letters show up in the counts ---------------------------------------
await page.goto(`${config.console}/console/#/overview`);
await view("#/overview");
await until("two dead letters, one order committed and the worker on the overview", async () => {
  await page.reload();
  await page.waitForSelector(".cards");
  return (await card("Dead letters kept")) === "2" && (await card("Committed")) === "1" &&
    (await card("Workers alive")) === "1";
}, 180);
await shot("1-overview");

// --- Dead letters: grouped, listed, the reason found ----------------------------------------
await page.click('nav a[data-page="dead-letters"]');
await view("#/dead-letters");
const groups = await page.textContent("main");
check(groups.includes("refused_by_database"), "the group of refused orders is listed");
await shot("2-dead-letters");
await page.selectOption('select[name="class"]', "refused_by_database");
await page.click('button:has-text("Filter")');
await view("#/dead-letters?class=refused_by_database");
await page.waitForSelector(`a:has-text("${refusedId}")`);
await page.click("#dry-run-all");
await page.waitForSelector("#dry-run-result");
check((await page.textContent("#dry-run-result")).includes("2 of 2 would pass"), "a dry run finds both pass validation (the database refused them)");

// The hostile one: shown as text, inert and bounded.
await page.goto(`${config.console}/console/#/dead-letters/${hostileId}`);
await view(`#/dead-letters/${hostileId}`);
const body = await page.textContent("#body");
check(body.includes("<script>window.__pwned = 1</script>") && body.includes("onerror"), "the hostile body is shown as text");
check(await page.evaluate(() => window.__pwned === undefined), "nothing in the body ran");
check((await page.locator("main img").count()) === 0 && (await page.locator("main script").count()) === 0, "no element came from the body");
const bodyBox = await page.locator("#body").boundingBox();
check(bodyBox.height <= 460, `the body is shown in a bounded box (${bodyBox.height}px)`);
check(body.length <= 64 * 1024, `at most 64 KiB of the body is shown (${body.length})`);
await shot("3-dead-letter-hostile");

await page.goto(`${config.console}/console/#/dead-letters/${refusedId}`);
await view(`#/dead-letters/${refusedId}`);
const reason = await page.textContent("#reason");
check(/check constraint|violates/i.test(reason), `the reason names the refusal: ${reason}`);
await shot("4-dead-letter");

// --- Fix the cause, replay from the page, see it stored -------------------------------------
execFileSync(config.fix[0], config.fix.slice(1), { stdio: "inherit" });
page.once("dialog", (d) => d.accept());
await page.click("#replay-one");
await page.waitForSelector("#replay-result");
check((await page.textContent("#replay-result")).includes("Replayed 1"), "the page replayed it");
await page.click('#replay-result a:has-text("trace")');
await view(`#/trace/${refusedId}`);
// The page refreshes itself while the message is dead-lettered or waiting.
await until("the replayed order stored", async () => {
  const outcome = page.locator("#outcome");
  return (await outcome.count()) > 0 && (await outcome.textContent()).includes("stored");
}, 180);
await page.waitForSelector("main table");
const trace = await page.textContent("main");
check(trace.includes("orders") && trace.includes("ORD-B000003") && trace.includes("order_line_items"), "the trace lists the rows it wrote");
await shot("5-trace");

// --- Schema with the validate box; the audit --------------------------------------------------
await page.click('nav a[data-page="schema"]');
await view("#/schema");
await page.waitForSelector("#validate");
await page.click("#validate");
await page.waitForSelector("#validate-result .notice");
check((await page.textContent("#validate-result")).includes("Valid"), "the example validates");
await page.fill("#validate-body", '{"order_key": 1}');
await page.click("#validate");
await page.waitForSelector("#validate-result .notice.bad");
check((await page.textContent("#validate-result")).includes("422"), "a bad body is refused with its errors");
await shot("6-schema");

await page.click('nav a[data-page="audit"]');
await view("#/audit");
await page.waitForSelector("main table");
const audit = await page.textContent("main");
check(audit.includes("replay") && audit.includes("dry_run") && audit.includes("local"), "the audit lists the replay and the dry run");
await shot("7-audit");

await page.goto(`${config.console}/console/#/overview`);
await view("#/overview");
await until("one dead letter left", async () => {
  await page.reload();
  await page.waitForSelector(".cards");
  return (await card("Dead letters kept")) === "1" && (await card("Committed")) === "2";
}, 180);
await shot("8-overview-after");

await browser.close();
check(problems.length === 0, `no script errors: ${problems.join("; ")}`);
console.log(`console browser test passed; screenshots in ${config.screenshots}`);
