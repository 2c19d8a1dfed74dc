// Drives Debian's Chromium (through playwright-core; no browser is downloaded) against the
// page that `mmsearch serve` serves at BASE_URL, as a user would: types a query, checks the
// grid against what the API answers, opens a full image, toggles to texts, searches by an
// uploaded and by a dropped image, and provokes errors. Fails on any request that leaves
// the server's origin. Saves a screenshot of the result grid (of the page as it was when a
// check failed, on failure), prints a JSON summary on stdout and exits 0; on a failed check
// it names the check on stderr and exits 1.
//   node tests/browser/search_page.mjs BASE_URL SCREENSHOT.png
import { chromium } from "playwright-core";
import { basename } from "node:path";

const CHROMIUM = "/usr/bin/chromium";
// A first Chromium start on a loaded machine can take seconds; every wait gets this long.
const TIMEOUT_MS = 30_000;
const QUERY = "a red circle";
const K = 5;
// Over the server's 64 KiB limit on a text query (ServeLimits::max_text_bytes).
const TOO_LONG_QUERY = "a".repeat(70_000);

const [baseUrl, screenshotPath] = process.argv.slice(2);
if (!baseUrl || !screenshotPath) {
  console.error("usage: node search_page.mjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}
const origin = new URL(baseUrl).origin;

class CheckFailed extends Error {}
function check(ok, message) {
  if (!ok) throw new CheckFailed(message);
}

// The API itself, asked directly, for what the page should show.
async function api(path, init = {}) {
  const response = await fetch(origin + path, init);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : Buffer.from(await response.arrayBuffer());
  return { status: response.status, body };
}
const apiTextSearch = (query, target) =>
  api("/v1/search/text", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k: K, target }),
  });
const apiImageSearch = (bytes) =>
  api(`/v1/search/image?k=${K}&target=images`, {
    method: "POST",
    headers: { "Content-Type": "image/jpeg" },
    body: bytes,
  });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // Root in a container has no user namespaces for the sandbox, and no GPU or large /dev/shm.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  timeout: TIMEOUT_MS,
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
context.setDefaultTimeout(TIMEOUT_MS);
const page = await context.newPage();

// No CDN: any request to another origin is recorded and refused.
const foreignRequests = [];
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (new URL(url).origin === origin) return route.continue();
  foreignRequests.push(url);
  return route.abort();
});
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(error.message));

// Runs `action` (which starts a search), waits for the search's answer and for the page to
// finish showing it (the grid's aria-busy goes back to false), then for the thumbnails.
async function searchAndWait(what, action, route) {
  const answered = page.waitForResponse(
    (r) => r.url().includes(route) && r.request().method() === "POST");
  await action();
  await answered.catch(() => check(false, `${what}: the page sent no POST ${route}`));
  await page.waitForSelector('#grid[aria-busy="false"]', { state: "attached" })
    .catch(() => check(false, `${what}: the page never finished showing the answer`));
  try {
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#grid .card img")].every((img) => img.naturalWidth > 0));
  } catch {
    const missing = await page.$$eval("#grid .card img", (imgs) =>
      imgs.filter((img) => img.naturalWidth === 0).map((img) => img.title + " " + img.alt));
    check(false, `${what}: thumbnails did not load: ${missing.join(", ")}`);
  }
}

// What the grid shows, card by card.
const gridCards = () =>
  page.$$eval("#grid .card", (cards) =>
    cards.map((card) => {
      const text = (selector) => card.querySelector(selector)?.textContent ?? null;
      const img = card.querySelector("img");
      return {
        id: Number(card.dataset.id),
        score: text(".score"),
        caption: text(".caption"),
        name: text(".name"),
        text: text(".text"),
        path: img ? img.title : null,
        thumbnail: img ? [img.naturalWidth, img.naturalHeight] : null,
      };
    }));

async function statusLine() {
  return page.$eval("#status", (s) => ({ text: s.textContent, error: s.classList.contains("error") }));
}

// The grid must show the API's answer: the same hits in the same order, each with its score
// (three decimals) and, for images, a loaded thumbnail and the caption (else the file name).
async function expectGridMatches(expected, what) {
  check(expected.status === 200, `${what}: the API answered ${expected.status}`);
  const results = expected.body.results;
  const cards = await gridCards();
  const status = await statusLine();
  check(!status.error, `${what}: the page shows an error: ${status.text}`);
  check(cards.length > 0 && cards.length <= K, `${what}: ${cards.length} cards for k = ${K}`);
  check(cards.length === results.length,
        `${what}: ${cards.length} cards but the API returned ${results.length} results`);
  results.forEach((r, i) => {
    const card = cards[i];
    const where = `${what}: card ${i + 1}`;
    check(card.id === r.id, `${where} is item ${card.id}, the API's hit is ${r.id}`);
    check(card.score !== null && Math.abs(Number(card.score) - r.score) <= 0.0005 + 1e-9,
          `${where} shows score ${card.score}, the API's is ${r.score}`);
    if (r.text !== undefined) {
      check(card.text === r.text, `${where} shows text ${JSON.stringify(card.text)}, not ${JSON.stringify(r.text)}`);
    } else {
      check(card.thumbnail !== null && card.thumbnail[0] > 0, `${where} has no loaded thumbnail`);
      check(card.path === r.path, `${where} is titled ${card.path}, not ${r.path}`);
      if (r.caption !== undefined) {
        check(card.caption === r.caption, `${where} shows caption ${JSON.stringify(card.caption)}, not ${JSON.stringify(r.caption)}`);
      } else {
        check(card.name === basename(r.path), `${where} shows ${JSON.stringify(card.name)}, not the file name`);
      }
    }
  });
  return cards;
}

// The error the page shows must be the server's own message for the same request.
async function expectErrorShown(expected, what) {
  check(expected.status >= 400, `${what}: the API accepted it (${expected.status})`);
  const status = await statusLine();
  check(status.error, `${what}: no error is shown; the status line reads ${JSON.stringify(status.text)}`);
  check(status.text.includes(expected.body.error.message),
        `${what}: the page shows ${JSON.stringify(status.text)}, not the server's ${JSON.stringify(expected.body.error.message)}`);
  return status.text;
}

const columns = () =>
  page.$eval("#grid", (g) => getComputedStyle(g).gridTemplateColumns.split(" ").length);

const summary = { query: QUERY, k: K, screenshot: screenshotPath };
const started = Date.now();
try {
  await page.goto(baseUrl, { waitUntil: "load" });
  check((await page.title()) === "mmsearch", `the page's title is ${JSON.stringify(await page.title())}`);

  // Typed as a user types it; Enter submits.
  await page.fill("#k", String(K));
  await page.locator("#query").pressSequentially(QUERY);
  await searchAndWait("text search", () => page.press("#query", "Enter"), "/v1/search/text");
  const images = await expectGridMatches(await apiTextSearch(QUERY, "images"), "text search");
  summary.images = images.map(({ id, score, caption, path, thumbnail }) => ({ id, score, caption, path, thumbnail }));
  await page.screenshot({ path: screenshotPath, fullPage: true });

  // Responsive: fewer columns on a phone-sized window than on a desktop one.
  const wide = await columns();
  await page.setViewportSize({ width: 400, height: 800 });
  const narrow = await columns();
  await page.setViewportSize({ width: 1280, height: 900 });
  check(narrow >= 1 && narrow < wide, `the grid has ${wide} columns at 1280 px and ${narrow} at 400 px`);
  summary.columns = { wide, narrow };

  // Click for the full image: the viewer shows the item at its own size, not the thumbnail.
  const first = images[0];
  const item = (await api(`/v1/items/${first.id}`)).body;
  await page.click(`#grid .card[data-id="${first.id}"] img`);
  await page.waitForSelector("#viewer", { state: "visible" });
  await page.waitForFunction(() => document.querySelector("#viewer img").naturalWidth > 0);
  const full = await page.$eval("#viewer img", (img) => [img.naturalWidth, img.naturalHeight]);
  // The page asks for size=1024: the longer side is the item's own, or 1024 when larger.
  check(Math.max(...full) === Math.min(1024, Math.max(item.width, item.height)),
        `the full image of item ${first.id} is ${full.join("x")}, the item is ${item.width}x${item.height}`);
  summary.full_image = full;
  await page.click("#viewer");
  await page.waitForSelector("#viewer", { state: "hidden" });

  // The toggle runs the last search again for texts.
  await searchAndWait("toggle to texts", () => page.check("input[name=target][value=texts]"), "/v1/search/text");
  const texts = await expectGridMatches(await apiTextSearch(QUERY, "texts"), "toggle to texts");
  summary.texts = texts.map(({ id, score, text }) => ({ id, score, text }));
  await searchAndWait("toggle back to images", () => page.check("input[name=target][value=images]"), "/v1/search/text");
  await expectGridMatches(await apiTextSearch(QUERY, "images"), "toggle back to images");

  // Search by image: an uploaded file, then one dropped on the page.
  const imageOf = async (id) => (await api(`/v1/items/${id}/image?size=1024`)).body;
  const uploaded = await imageOf(images[images.length - 1].id);
  await searchAndWait("image upload", () => page.setInputFiles("#image", {
    name: "upload.jpg", mimeType: "image/jpeg", buffer: uploaded }), "/v1/search/image");
  summary.upload_results = (await expectGridMatches(await apiImageSearch(uploaded), "image upload")).length;

  const dropped = await imageOf(images[0].id);
  const dataTransfer = await page.evaluateHandle((base64) => {
    const transfer = new DataTransfer();
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
    return transfer;
  }, dropped.toString("base64"));
  await searchAndWait("image drop", () => page.dispatchEvent("body", "drop", { dataTransfer }), "/v1/search/image");
  summary.drop_results = (await expectGridMatches(await apiImageSearch(dropped), "image drop")).length;
  const dropStatus = await statusLine();
  check(dropStatus.text.includes("dropped.jpg"), `after the drop the status reads ${JSON.stringify(dropStatus.text)}`);

  // Errors reach the user: an empty query (refused by the page itself), an over-long one
  // and a file that is not an image (refused by the server, whose message is shown).
  summary.errors = {};
  await page.fill("#query", "");
  await page.press("#query", "Enter");
  const empty = await statusLine();
  check(empty.error && empty.text.length > 0, `an empty query shows ${JSON.stringify(empty.text)}`);
  summary.errors.empty_query = empty.text;

  await page.fill("#query", TOO_LONG_QUERY);
  await searchAndWait("an over-long query", () => page.press("#query", "Enter"), "/v1/search/text");
  summary.errors.too_long_query =
    await expectErrorShown(await apiTextSearch(TOO_LONG_QUERY, "images"), "an over-long query");

  const notAnImage = Buffer.from("these bytes are not an image\n");
  await searchAndWait("a non-image upload", () => page.setInputFiles("#image", {
    name: "notes.jpg", mimeType: "image/jpeg", buffer: notAnImage }), "/v1/search/image");
  summary.errors.not_an_image = await expectErrorShown(await apiImageSearch(notAnImage), "a non-image upload");

  check(pageErrors.length === 0, `the page threw: ${pageErrors.join("; ")}`);
  check(foreignRequests.length === 0, `the page requested other origins: ${foreignRequests.join(", ")}`);
  summary.foreign_requests = foreignRequests;
  summary.took_ms = Date.now() - started;
  console.log(JSON.stringify(summary));
} catch (error) {
  // A screenshot of the page as it was when the check failed, in place of the grid's.
  await page.screenshot({ path: screenshotPath, fullPage: true }).catch(() => {});
  console.error(`search_page: ${error instanceof CheckFailed ? "check failed" : "error"}: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
