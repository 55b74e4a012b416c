// Loads the gateway's dashboard in Debian's headless Chromium, as an operator would, and
// prints on one stdout line, as JSON, what the page shows: tests/dashboard.rs runs this script
// and makes the assertions, so a failure reads as a Rust test failure with the values in it.
//
// Environment:
//   DASHBOARD_URL         the page, `http://<admin address>/admin/ui`
//   DASHBOARD_TOKEN       the admin token to type into the page's token form, if it asks
//   DASHBOARD_SCREENSHOT  where to save a full-page PNG (also saved when a step fails)
//   DASHBOARD_GAP_MS      time between the two readings of the figures (default 4000)
//   CHROMIUM              the browser binary (default /usr/bin/chromium)
import { chromium } from "playwright-core";

const url = process.env.DASHBOARD_URL;
const token = process.env.DASHBOARD_TOKEN;
const screenshot = process.env.DASHBOARD_SCREENSHOT;
const gap = Number(process.env.DASHBOARD_GAP_MS || 4000);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!url || !screenshot) {
  console.error("set DASHBOARD_URL and DASHBOARD_SCREENSHOT");
  process.exit(2);
}

/** Waits until element `id` shows a number, and returns it. */
async function number(page, id) {
  await page.waitForFunction(
    (id) => /^\d+(\.\d+)?$/.test(document.getElementById(id).textContent),
    id,
    { timeout: 15000 },
  );
  return Number(await page.textContent("#" + id));
}

/** Each body row of table `id`, as the text of its cells. */
function rows(page, id) {
  return page.$$eval(`#${id} tbody tr`, (trs) =>
    trs.map((tr) => [...tr.cells].map((td) => td.textContent.trim())),
  );
}

// --no-sandbox: the tests run as root in a container, where Chromium's sandbox cannot start.
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"], timeout: 30000 });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
// Console errors include Chromium's content-security-policy violations: there must be none.
// The page's first request, before it has the token, is refused: that one is counted apart.
const errors = [];
let refusals = 0;
page.on("console", (message) => {
  if (message.type() !== "error") return;
  if (message.text().includes("status of 401")) refusals += 1;
  else errors.push(message.text());
});
page.on("pageerror", (error) => errors.push(String(error)));

let failed = false;
try {
  const response = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  const askedForToken = token
    ? await page.waitForSelector("#auth:not([hidden])", { timeout: 15000 }).then(() => true)
    : false;
  if (token) {
    await page.fill("#token", token);
    await page.click("#token-form button");
  }
  const first = await number(page, "requests-total");
  // A rate needs two answers; wait for it so the second reading is a later one.
  const firstRate = await number(page, "request-rate");
  await page.waitForTimeout(gap);
  const second = await number(page, "requests-total");
  const result = {
    status: response.status(),
    asked_for_token: askedForToken,
    refusals,
    state: await page.textContent("#state"),
    first,
    second,
    first_rate: firstRate,
    request_rate: await number(page, "request-rate"),
    error_rate: await number(page, "error-rate"),
    generation: await number(page, "generation"),
    uptime: await page.textContent("#uptime"),
    routes: await rows(page, "routes"),
    services: await rows(page, "services"),
    filters: await rows(page, "filters"),
    reloads: await rows(page, "reloads"),
    errors,
  };
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} catch (error) {
  failed = true;
  console.error(`the dashboard check failed: ${error}\nconsole errors: ${JSON.stringify(errors)}`);
  await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
