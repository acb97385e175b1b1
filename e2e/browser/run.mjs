// Drives headless Chromium (Debian `chromium`) through the MCP Apps view with real tool results.
//
// usage: node run.mjs CASES.json OUT_DIR
//   CASES.json: {"html": "<the view, as resources/read served it>", "cases": [{name, tool, arguments, result,
//                theme, width, interact}]}
//   OUT_DIR:    gets host.js (the bundled host page), one PNG per case, and results.json.
// Prints results.json's path. What the view showed is measured here and judged by e2e/tests/mcp_apps.rs.
import { createServer } from "node:http";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const [casesPath, outDir] = process.argv.slice(2);
if (!casesPath || !outDir) {
  console.error("usage: node run.mjs CASES.json OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const input = JSON.parse(readFileSync(casesPath, "utf8"));
const here = new URL(".", import.meta.url).pathname;
const bundle = join(resolve(outDir), "host.js");
execFileSync(process.execPath, [join(here, "build.mjs"), bundle], { stdio: "inherit" });

const hostHtml = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>MCP Apps test host</title></head>
<body style="margin:8px;font-family:sans-serif"><div id="frame-holder"></div><script src="/host.js"></script></body></html>`;
const server = createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(hostHtml);
  } else if (req.url === "/favicon.ico") {
    res.writeHead(204).end();
  } else if (req.url === "/host.js") {
    res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(bundle));
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const results = { origin, consoleErrors: [], pageErrors: [], viewRequests: [], hostRequests: [], cases: {} };
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 }, deviceScaleFactor: 1 });
  let currentCase = "-";
  page.on("console", (m) => {
    if (m.type() === "error") results.consoleErrors.push({ case: currentCase, text: m.text() });
  });
  page.on("pageerror", (e) => results.pageErrors.push({ case: currentCase, text: String(e) }));
  page.on("request", (r) => {
    const frame = r.frame();
    const fromView = frame && frame.parentFrame() !== null;
    (fromView ? results.viewRequests : results.hostRequests).push({ case: currentCase, url: r.url() });
  });
  await page.goto(origin + "/");
  await page.waitForFunction(() => typeof window.runCase === "function");

  for (const c of input.cases) {
    currentCase = c.name;
    const ran = await page.evaluate((c) => window.runCase(c), { ...c, html: input.html, width: c.width || 760 });
    const frame = await (await page.$("#view")).contentFrame();
    await frame.waitForFunction(() => !!document.querySelector("svg[data-kind], .msg, #table-panel"), null, { timeout: 10000 });
    // Let the size report reach the host and the iframe take its height.
    await page.waitForFunction(() => window.hostState.sizes.length > 0, null, { timeout: 10000 });
    await page.waitForTimeout(100);
    const seen = await frame.evaluate(measure);
    seen.initialized = ran.initialized;
    seen.appInfo = ran.appInfo;
    seen.sizes = await page.evaluate(() => window.hostState.sizes);
    seen.frameHeight = await page.evaluate(() => document.getElementById("view").getBoundingClientRect().height);
    await page.locator("#view").screenshot({ path: join(outDir, `${c.name}.png`) });

    if (c.interact) seen.interaction = await interact(page, frame, c);
    results.cases[c.name] = seen;
  }
} finally {
  await browser.close();
  server.close();
}
const out = join(outDir, "results.json");
writeFileSync(out, JSON.stringify(results, null, 2));
console.log(out);

// Runs inside the view: what a person would see.
function measure() {
  const q = (s) => document.querySelectorAll(s).length;
  const text = (s) => Array.from(document.querySelectorAll(s)).map((n) => n.textContent);
  const svg = document.querySelector("svg[data-kind]");
  return {
    kind: svg ? svg.getAttribute("data-kind") : null,
    svgLabel: svg ? svg.getAttribute("aria-label") : null,
    points: q("circle.point:not(.forecast-point)"),
    partialPoints: q("circle.point.partial"),
    forecastPoints: q("circle.forecast-point"),
    bands80: q("path.band.b80"),
    bands95: q("path.band.b95"),
    lines: q("path.line"),
    forecastLines: q("path.forecast"),
    fitLines: q("path.fit"),
    outliers: q(".outlier"),
    expected: q("line.expected"),
    changePoints: q(".change-point"),
    changeLines: q("line.change-line"),
    levels: q("line.level"),
    bars: q("rect.bar"),
    vitalBars: q("rect.bar.vital"),
    cumPoints: q("circle.cum-point"),
    cumLines: q("path.cum"),
    thresholds: q("line.threshold"),
    cuts: q("line.cut"),
    dots: q("circle.dot"),
    fitTitles: text("path.fit title"),
    xTitle: text(".x-title")[0] || null,
    yTitle: text(".y-title")[0] || null,
    y2Title: text(".y2-title")[0] || null,
    xTicks: text(".x-axis .tick"),
    title: text("h1")[0] || null,
    summary: text("main .bar-top p"),
    message: text(".msg")[0] || null,
    messageRole: (document.querySelector(".msg") || { getAttribute: () => null }).getAttribute("role"),
    note: text(".note")[0] || null,
    hasToggle: !!document.getElementById("toggle"),
    tableRows: q("#table-panel tbody tr"),
    focusable: q("svg [tabindex='0']"),
    renderError: document.documentElement.getAttribute("data-render-error"),
    theme: document.documentElement.getAttribute("data-theme"),
    background: getComputedStyle(document.body).backgroundColor,
  };
}

async function interact(page, frame, c) {
  const out = {};
  // Hover and keyboard focus on the first marker: the reason shows.
  const marker = frame.locator(".outlier, .change-point, rect.bar").first();
  if (await marker.count()) {
    await marker.hover();
    out.hoverTip = await frame.evaluate(() => { const t = document.getElementById("tip"); return t && !t.hidden ? t.textContent : null; });
    await frame.locator("body").hover({ position: { x: 2, y: 2 } });
    await marker.focus();
    out.focusTip = await frame.evaluate(() => { const t = document.getElementById("tip"); return t && !t.hidden ? t.textContent : null; });
    out.focusedLabel = await frame.evaluate(() => document.activeElement && document.activeElement.getAttribute("aria-label"));
  }
  // Keyboard only: Tab to the toggle, Enter shows the table.
  out.hasToggle = (await frame.locator("#toggle").count()) > 0;
  if (!out.hasToggle) return out;
  await frame.locator("body").click({ position: { x: 2, y: 2 } });
  let reached = false;
  for (let i = 0; i < 3 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await frame.evaluate(() => document.activeElement && document.activeElement.id === "toggle");
  }
  out.tabReachesToggle = reached;
  if (reached) await page.keyboard.press("Enter"); else await frame.click("#toggle");
  // The host resizes the frame after the view reports its new height; focus must survive that.
  await page.waitForTimeout(400);
  out.afterToggle = await frame.evaluate(() => ({
    svg: !!document.querySelector("svg[data-kind]"),
    rows: document.querySelectorAll("#table-panel tbody tr").length,
    pressed: document.getElementById("toggle").getAttribute("aria-pressed"),
    label: document.getElementById("toggle").textContent,
    focusKept: document.activeElement && document.activeElement.id === "toggle",
    headers: Array.from(document.querySelectorAll("#table-panel th")).map((th) => th.textContent),
  }));
  await page.locator("#view").screenshot({ path: join(outDir, `${c.name}-table.png`) });
  // Sort by the column the case names, twice (ascending, then descending).
  if (c.interact.sortColumn !== undefined) {
    const column = c.interact.sortColumn;
    const read = () => frame.evaluate((i) => ({
      sort: document.querySelectorAll("#table-panel th")[i].getAttribute("aria-sort"),
      values: Array.from(document.querySelectorAll("#table-panel tbody tr")).map((tr) => tr.children[i].textContent),
    }), column);
    await frame.locator("#table-panel th button").nth(column).click();
    out.sortedOnce = await read();
    await frame.locator("#table-panel th button").nth(column).click();
    out.sortedTwice = await read();
  }
  await frame.click("#toggle");
  out.backToChart = await frame.evaluate(() => !!document.querySelector("svg[data-kind]"));
  // The host switches to the other theme: the view follows.
  const before = await frame.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.evaluate((t) => window.setTheme(t), c.theme === "dark" ? "light" : "dark");
  await frame.waitForFunction((t) => document.documentElement.getAttribute("data-theme") === t, c.theme === "dark" ? "light" : "dark");
  out.themeSwitch = { before, after: await frame.evaluate(() => getComputedStyle(document.body).backgroundColor),
    theme: await frame.evaluate(() => document.documentElement.getAttribute("data-theme")) };
  return out;
}
