//! MCP Apps: the connector's chart view, rendered by headless Chromium inside a host page built on the
//! official host bridge (`@modelcontextprotocol/ext-apps` AppBridge, pinned in e2e/browser/package.json),
//! fed real tool results from the real connector binary: the embedded backend, the fake Lumenore backend,
//! and a backend answering with the shapes the real Lumenore server was recorded sending (seed contract).
//!
//! Each test gets the view with `resources/read` and the answers with `tools/call`, hands both to
//! `e2e/browser/run.mjs` (Playwright drives Debian's `chromium`), and checks what a person would see
//! against numbers read from the answers here: points, bands, markers, bars, axis titles, the table toggle,
//! sorting, the theme, no console errors and no request from the view. Screenshots of every case go to
//! `e2e/browser/artifacts/<test>/` (git-ignored; CI keeps them as artifacts).
//!
//! Needs Node (20+), `npm ci` in e2e/browser and /usr/bin/chromium (all from `.ci/install-tools.sh`);
//! without them the tests print SKIPPED, or fail under CI.

use std::{path::PathBuf, process::Stdio, time::Duration};

use axum::{
    Router,
    http::header,
    response::IntoResponse,
    routing::{get, post},
};
use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore},
    free_port, http_client, mcp, repo_root,
    tools::{self, require},
};
use serde_json::{Value, json};

const VIEW_URI: &str = "ui://lumenore/chart.html";
const VIEW_MIME: &str = "text/html;profile=mcp-app";
const CHARTED_TOOLS: [&str; 7] = [
    "nlq_to_data",
    "get_trend_data",
    "get_prediction_data",
    "get_outlier_data",
    "get_correlation_data",
    "get_change_data",
    "get_pareto_data",
];

// ---- the tools this test needs ----

struct Browser {
    node: PathBuf,
    dir: PathBuf,
}

fn browser() -> Option<Browser> {
    let dir = repo_root().join("e2e/browser");
    let node22 = tools::tools_dir().join("node22/node_modules/.bin/node");
    let node = if node22.is_file() {
        Some(node22)
    } else {
        tools::find("node")
    };
    let node = require("node", node)?;
    let installed = dir
        .join("node_modules/@modelcontextprotocol/ext-apps/package.json")
        .is_file()
        && dir.join("node_modules/playwright-core/package.json").is_file()
        && dir.join("node_modules/esbuild/package.json").is_file();
    require(
        "e2e/browser node modules (npm ci in e2e/browser)",
        installed.then(|| dir.join("node_modules")),
    )?;
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    require(
        "chromium (Debian package)",
        chromium.is_file().then_some(chromium),
    )?;
    Some(Browser { node, dir })
}

// ---- MCP over HTTP ----

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let http = http_client(Duration::from_secs(60));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, text) = mcp::post(&http, url, &body)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    assert_eq!(status, 200, "{method}: HTTP {status}: {text}");
    mcp::parse_answer(&text).unwrap_or_else(|| panic!("{method}: not JSON-RPC: {text}"))
}

/// The raw `result` of a tools/call, as a host would pass it to the view.
async fn call(url: &str, tool: &str, arguments: Value) -> Value {
    let answer = rpc(url, "tools/call", json!({"name": tool, "arguments": arguments})).await;
    let result = answer["result"].clone();
    assert!(result.is_object(), "{tool} {arguments}: {answer}");
    result
}

/// Checks the tool listing and the resource, and returns the view as `resources/read` serves it.
async fn view_from(url: &str) -> String {
    let listing = rpc(url, "tools/list", json!({})).await;
    let tools = listing["result"]["tools"].as_array().expect("tools").clone();
    assert_eq!(tools.len(), 9, "{listing}");
    for tool in &tools {
        let name = tool["name"].as_str().unwrap();
        if CHARTED_TOOLS.contains(&name) {
            assert_eq!(tool["_meta"]["ui"]["resourceUri"], VIEW_URI, "{name}: {tool}");
            assert_eq!(tool["_meta"]["ui/resourceUri"], VIEW_URI, "{name}: {tool}");
        } else {
            assert!(tool.get("_meta").is_none(), "{name} has no view: {tool}");
        }
    }
    let listed = rpc(url, "resources/list", json!({})).await;
    let resources = listed["result"]["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 1, "{listed}");
    assert_eq!(resources[0]["uri"], VIEW_URI);
    assert_eq!(resources[0]["mimeType"], VIEW_MIME);
    let read = rpc(url, "resources/read", json!({"uri": VIEW_URI})).await;
    let contents = &read["result"]["contents"][0];
    assert_eq!(contents["uri"], VIEW_URI, "{read}");
    assert_eq!(contents["mimeType"], VIEW_MIME, "{read}");
    let html = contents["text"].as_str().expect("the view's HTML").to_string();
    assert_eq!(resources[0]["size"], html.len(), "listed size is the served size");
    assert!(html.len() < 60_000, "the view is {} bytes", html.len());
    let missing = rpc(url, "resources/read", json!({"uri": "ui://lumenore/other.html"})).await;
    assert_eq!(missing["error"]["code"], -32002, "{missing}");
    html
}

// ---- one browser run ----

struct Case {
    name: &'static str,
    tool: &'static str,
    arguments: Value,
    result: Value,
    theme: &'static str,
    /// Column to sort by in the table view; `Some` also runs the hover, keyboard, toggle and theme steps.
    sort_column: Option<usize>,
}

impl Case {
    fn new(name: &'static str, tool: &'static str, arguments: Value, result: Value) -> Self {
        Self {
            name,
            tool,
            arguments,
            result,
            theme: "light",
            sort_column: None,
        }
    }

    fn dark(mut self) -> Self {
        self.theme = "dark";
        self
    }

    fn interact(mut self, sort_column: usize) -> Self {
        self.sort_column = Some(sort_column);
        self
    }

    fn data(&self) -> &Value {
        &self.result["structuredContent"]["data"]
    }
}

/// Renders every case in one browser session; returns results.json.
async fn render(browser: &Browser, test: &str, html: &str, cases: &[Case]) -> Value {
    let artifacts = browser.dir.join("artifacts").join(test);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let input = json!({
        "html": html,
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "tool": {"name": c.tool, "inputSchema": {"type": "object"}},
            "arguments": c.arguments,
            "result": c.result,
            "theme": c.theme,
            "interact": c.sort_column.map(|i| json!({"sortColumn": i})),
        })).collect::<Vec<_>>(),
    });
    let cases_file = artifacts.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec_pretty(&input).unwrap()).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(&browser.node)
            .arg(browser.dir.join("run.mjs"))
            .arg(&cases_file)
            .arg(&artifacts)
            .current_dir(&browser.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run finished within 240 s")
    .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "run.mjs failed ({}):\n{}\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("results.json")).unwrap()).unwrap();
    eprintln!("[e2e] screenshots in {}", artifacts.display());
    // Nothing went wrong in the page, and the view asked the network for nothing.
    assert_eq!(results["consoleErrors"], json!([]), "console errors");
    assert_eq!(results["pageErrors"], json!([]), "uncaught errors");
    assert_eq!(results["viewRequests"], json!([]), "the view made requests");
    let origin = results["origin"].as_str().unwrap();
    for request in results["hostRequests"].as_array().unwrap() {
        let url = request["url"].as_str().unwrap();
        assert!(
            url == format!("{origin}/") || url == format!("{origin}/host.js"),
            "unexpected request {url}"
        );
    }
    for case in cases {
        let seen = &results["cases"][case.name];
        assert!(seen.is_object(), "{}: not rendered: {results}", case.name);
        common_checks(case, seen);
        assert!(artifacts.join(format!("{}.png", case.name)).is_file());
    }
    results
}

/// What every case must show, whatever its kind.
fn common_checks(case: &Case, seen: &Value) {
    let name = case.name;
    assert_eq!(seen["initialized"], true, "{name}: ui/notifications/initialized");
    assert_eq!(seen["appInfo"]["name"], "lumenore-chart", "{name}");
    assert_eq!(seen["renderError"], Value::Null, "{name}");
    assert_eq!(seen["theme"], case.theme, "{name}: follows the host theme");
    let background = seen["background"].as_str().unwrap();
    let expected = if case.theme == "dark" {
        "rgb(13, 17, 23)"
    } else {
        "rgb(255, 255, 255)"
    };
    assert_eq!(background, expected, "{name}: background");
    // The view reported its size and the host gave the frame that height: never a blank or clipped frame.
    let sizes = seen["sizes"].as_array().unwrap();
    let last = sizes.last().unwrap_or_else(|| panic!("{name}: no size-changed"));
    let height = last["height"].as_f64().unwrap();
    assert!(height > 60.0, "{name}: height {height}");
    let frame = seen["frameHeight"].as_f64().unwrap();
    assert!(
        (frame - height).abs() <= 2.0,
        "{name}: frame {frame} vs reported {height}"
    );
    if let Some(column) = case.sort_column {
        interaction_checks(name, seen, column);
    }
}

fn interaction_checks(name: &str, seen: &Value, column: usize) {
    let done = &seen["interaction"];
    assert_eq!(
        done["tabReachesToggle"], true,
        "{name}: Tab reaches the table toggle"
    );
    let after = &done["afterToggle"];
    assert_eq!(after["svg"], false, "{name}: table replaces the chart");
    assert_eq!(after["pressed"], "true", "{name}");
    assert_eq!(after["focusKept"], true, "{name}: focus stays on the toggle");
    assert!(after["rows"].as_u64().unwrap() > 0, "{name}: {after}");
    // Sorting: ascending, then descending, by the values a person reads.
    let once = &done["sortedOnce"];
    let twice = &done["sortedTwice"];
    assert_eq!(once["sort"], "ascending", "{name}");
    assert_eq!(twice["sort"], "descending", "{name}");
    let values = |v: &Value| -> Vec<String> {
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let (up, down) = (values(once), values(twice));
    let numbers: Option<Vec<f64>> = up.iter().map(|s| s.replace(',', "").parse().ok()).collect();
    match numbers {
        Some(numbers) => assert!(
            numbers.windows(2).all(|w| w[0] <= w[1]),
            "{name}: column {column} not ascending: {up:?}"
        ),
        None => {
            let mut sorted = up.clone();
            sorted.sort();
            assert_eq!(up, sorted, "{name}: column {column} not ascending");
        }
    }
    let mut reversed = up.clone();
    reversed.reverse();
    assert_eq!(down, reversed, "{name}: descending is ascending reversed");
    assert_eq!(
        done["backToChart"], true,
        "{name}: the toggle brings the chart back"
    );
    let theme = &done["themeSwitch"];
    assert_ne!(
        theme["before"], theme["after"],
        "{name}: theme change repaints: {theme}"
    );
}

fn count(seen: &Value, key: &str) -> u64 {
    seen[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {seen}"))
}

fn len(value: &Value) -> u64 {
    value.as_array().map_or(0, |a| a.len() as u64)
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_draws_real_embedded_answers_in_headless_chromium() {
    let Some(browser) = browser() else {
        return;
    };
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    let url = connector.mcp.clone();
    let html = view_from(&url).await;
    let q = |text: &str, id: u64| json!({"userQuery": text, "schemaId": id});
    let mut cases = vec![
        Case::new(
            "nlq-bars",
            "nlq_to_data",
            q("Top 5 sales regions last month", 35403),
            Value::Null,
        )
        .interact(1),
        Case::new(
            "nlq-lines",
            "nlq_to_data",
            q("Monthly revenue by region in 2024", 35403),
            Value::Null,
        )
        .dark(),
        Case::new(
            "trend",
            "get_trend_data",
            q("What are the monthly sales trends for Q4 2024?", 35403),
            Value::Null,
        )
        .interact(1),
        Case::new(
            "prediction",
            "get_prediction_data",
            q("Forecast monthly revenue for the next 3 months", 35403),
            Value::Null,
        )
        .dark()
        .interact(1),
        Case::new(
            "outlier",
            "get_outlier_data",
            q("Find unusual daily revenue in 2025", 35403),
            Value::Null,
        )
        .dark()
        .interact(3),
        Case::new(
            "correlation",
            "get_correlation_data",
            q("What factors correlate with customer lifetime value?", 35404),
            Value::Null,
        )
        .interact(3),
        Case::new(
            "change",
            "get_change_data",
            q(
                "Have there been any significant changes in demand patterns recently?",
                35405,
            ),
            Value::Null,
        )
        .interact(0),
        Case::new(
            "pareto",
            "get_pareto_data",
            q("Which products contribute to 80% of our sales?", 35403),
            Value::Null,
        )
        .interact(1),
        // Bad input: an error result, and an empty table.
        Case::new(
            "error",
            "nlq_to_data",
            q("Total revenue by region", 1),
            Value::Null,
        ),
        Case::new(
            "empty",
            "nlq_to_data",
            q("Total revenue by region in 2019", 35403),
            Value::Null,
        ),
    ];
    for case in &mut cases {
        case.result = call(&url, case.tool, case.arguments.clone()).await;
    }
    // A result cut to the connector's row limit.
    let small = Connector::start(ConnectorSpec::embedded().env("LUMENORE_MAX_RESULT_ROWS", "5")).await;
    let truncated = call(&small.mcp, "nlq_to_data", q("Monthly revenue in 2024", 35403)).await;
    assert_eq!(truncated["structuredContent"]["truncated"], true, "{truncated}");
    cases.push(Case::new(
        "truncated",
        "nlq_to_data",
        q("Monthly revenue in 2024", 35403),
        truncated,
    ));

    let results = render(&browser, "embedded", &html, &cases).await;
    let seen = |name: &str| results["cases"][name].clone();
    let case = |name: &str| cases.iter().find(|c| c.name == name).unwrap();

    // nlq_to_data by region: one bar per row, named axes.
    let bars = seen("nlq-bars");
    assert_eq!(bars["kind"], "bars");
    assert_eq!(count(&bars, "bars"), len(&case("nlq-bars").data()["rows"]));
    assert_eq!(bars["xTitle"], "region");
    assert_eq!(bars["yTitle"], "total_revenue (USD)");
    assert_eq!(
        bars["xTicks"].as_array().unwrap()[0],
        case("nlq-bars").data()["rows"][0]["region"]
    );

    // nlq_to_data with a time grain and a dimension: one line per region, one point per row.
    let lines = seen("nlq-lines");
    let data = case("nlq-lines").data();
    assert_eq!(lines["kind"], "lines");
    assert_eq!(count(&lines, "points"), len(&data["rows"]));
    let regions: std::collections::BTreeSet<&str> = data["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(count(&lines, "lines"), regions.len() as u64);
    assert_eq!(lines["xTitle"], "month");

    // Trend: the series' points and one fitted line per series.
    let trend = seen("trend");
    let series = case("trend").data()["analysis"]["series"]
        .as_array()
        .unwrap()
        .clone();
    let points: u64 = series.iter().map(|s| len(&s["points"])).sum();
    assert_eq!(trend["kind"], "lines");
    assert_eq!(count(&trend, "points"), points);
    assert_eq!(count(&trend, "fitLines"), series.len() as u64);
    assert_eq!(trend["xTitle"], "month");
    assert_eq!(trend["yTitle"], series[0]["measure"]);

    // Prediction: history from the rows, the forecast points, an 80% and a 95% band per series.
    let prediction = seen("prediction");
    let data = case("prediction").data();
    let series = data["analysis"]["series"].as_array().unwrap();
    let forecast: u64 = series.iter().map(|s| len(&s["forecast"])).sum();
    assert!(forecast > 0, "{data}");
    assert_eq!(count(&prediction, "forecastPoints"), forecast);
    assert_eq!(count(&prediction, "bands80"), series.len() as u64);
    assert_eq!(count(&prediction, "bands95"), series.len() as u64);
    assert_eq!(count(&prediction, "points"), len(&data["rows"]));
    assert_eq!(prediction["xTitle"], "month");
    // The table view carries history and forecast rows.
    assert_eq!(
        prediction["interaction"]["afterToggle"]["rows"].as_u64().unwrap(),
        len(&data["rows"]) + forecast
    );

    // Outliers: one marker per flagged point, its reason on hover and on keyboard focus.
    let outlier = seen("outlier");
    let flagged = case("outlier").data()["analysis"]["flagged"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!flagged.is_empty());
    assert_eq!(count(&outlier, "outliers"), flagged.len() as u64);
    assert_eq!(count(&outlier, "expected"), flagged.len() as u64);
    assert_eq!(count(&outlier, "focusable"), flagged.len() as u64);
    let hover = outlier["interaction"]["hoverTip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let focus = outlier["interaction"]["focusTip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        flagged.iter().any(|f| hover.contains(f["why"].as_str().unwrap())),
        "hover shows a reason: {hover}"
    );
    assert_eq!(hover, focus, "focus shows what hover shows");

    // Correlation: the answer has the pairs' coefficients (not the observations): one bar per pair.
    let correlation = seen("correlation");
    let pairs = case("correlation").data()["analysis"]["pairs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(correlation["kind"], "coefficients");
    assert_eq!(count(&correlation, "bars"), pairs.len() as u64);
    assert!(
        correlation["interaction"]["hoverTip"]
            .as_str()
            .unwrap()
            .contains("Pearson")
    );

    // Change points: the series, a marker and a vertical line per change point, levels before and after.
    let change = seen("change");
    let data = case("change").data();
    let cps = data["analysis"]["change_points"].as_array().unwrap().clone();
    assert!(!cps.is_empty(), "{data}");
    assert_eq!(
        count(&change, "points"),
        len(&data["analysis"]["series"]["values"])
    );
    assert_eq!(count(&change, "changePoints"), cps.len() as u64);
    assert_eq!(count(&change, "changeLines"), cps.len() as u64);
    assert_eq!(count(&change, "levels"), 2 * cps.len() as u64);
    assert!(
        change["interaction"]["focusTip"]
            .as_str()
            .unwrap()
            .contains("level")
    );

    // Pareto: a bar per member, the vital few coloured, the cumulative line, the threshold and the cut.
    let pareto = seen("pareto");
    let data = case("pareto").data();
    assert_eq!(pareto["kind"], "pareto");
    assert_eq!(count(&pareto, "bars"), len(&data["rows"]).min(50));
    assert_eq!(
        count(&pareto, "vitalBars"),
        data["analysis"]["vital_few_count"].as_u64().unwrap()
    );
    assert_eq!(count(&pareto, "cumPoints"), len(&data["rows"]).min(50));
    assert_eq!(count(&pareto, "cumLines"), 1);
    assert_eq!(count(&pareto, "thresholds"), 1);
    assert_eq!(count(&pareto, "cuts"), 1);
    assert_eq!(pareto["y2Title"], "cumulative share");
    assert_eq!(pareto["xTitle"], "product");

    // Bad input: a clear message, never a blank frame.
    let error = seen("error");
    assert_eq!(error["kind"], Value::Null);
    assert_eq!(error["messageRole"], "alert");
    let message = case("error").result["structuredContent"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error["message"].as_str().unwrap().contains(&message), "{error}");
    let empty = seen("empty");
    assert_eq!(len(&case("empty").data()["rows"]), 0);
    assert!(empty["message"].as_str().unwrap().contains("no rows"), "{empty}");
    // The engine's notes say why (the time range is outside the data).
    let notes = case("empty").data()["notes"].as_array().unwrap().clone();
    assert!(!notes.is_empty());
    for note in notes {
        assert!(
            empty["message"]
                .as_str()
                .unwrap()
                .contains(note.as_str().unwrap()),
            "{empty}"
        );
    }
    let truncated = seen("truncated");
    assert!(truncated["note"].as_str().unwrap().contains("cut"), "{truncated}");
    assert_eq!(count(&truncated, "points"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_draws_lumenore_backend_answers_in_headless_chromium() {
    let Some(browser) = browser() else {
        return;
    };
    // The fake Lumenore backend of the e2e crate, with cookie login and a streamed nlq answer.
    let config = FakeConfig::default();
    let fake = FakeLumenore::start(config.clone()).await;
    let connector = Connector::start(
        ConnectorSpec::lumenore(&fake.url(), &config.client_id, &config.secret)
            .env("LUMENORE_READINESS_INTERVAL", "60s"),
    )
    .await;
    let html = view_from(&connector.mcp).await;
    let q = json!({"userQuery": "Show me total sales by region for Q4 2024", "schemaId": 35403});
    let mut cases = vec![
        Case::new("fake-nlq", "nlq_to_data", q.clone(), Value::Null).interact(1),
        Case::new("fake-trend", "get_trend_data", q.clone(), Value::Null).dark(),
        Case::new("fake-prediction", "get_prediction_data", q.clone(), Value::Null),
        Case::new("fake-pareto", "get_pareto_data", q.clone(), Value::Null),
    ];
    for case in &mut cases {
        case.result = call(&connector.mcp, case.tool, case.arguments.clone()).await;
    }
    let results = render(&browser, "fake-lumenore", &html, &cases).await;
    let seen = |name: &str| results["cases"][name].clone();
    // Streamed JSON lines (an array of documents with rows): merged into one table, one bar per region.
    let nlq = seen("fake-nlq");
    let parts = cases[0].data().as_array().unwrap().clone();
    let rows: u64 = parts.iter().map(|p| len(&p["rows"])).sum();
    assert_eq!(nlq["kind"], "bars");
    assert_eq!(count(&nlq, "bars"), rows);
    assert_eq!(nlq["xTitle"], "region");
    assert_eq!(nlq["yTitle"], "sales");
    // {analysis, series: [{period, value}]}: a time series; the trend also gets its fitted line.
    let points = len(&cases[1].data()["series"]);
    for name in ["fake-trend", "fake-prediction"] {
        let chart = seen(name);
        assert_eq!(chart["kind"], "lines", "{name}: {chart}");
        assert_eq!(count(&chart, "points"), points, "{name}");
        assert_eq!(chart["xTitle"], "period", "{name}");
    }
    assert_eq!(count(&seen("fake-trend"), "fitLines"), 1);
    // A Pareto answer without shares: bars and the cumulative line computed from the values.
    let pareto = seen("fake-pareto");
    assert_eq!(pareto["kind"], "pareto");
    assert_eq!(count(&pareto, "bars"), points);
    assert_eq!(count(&pareto, "cumPoints"), points);
    drop(fake);
}

/// A Lumenore backend answering with the bodies the original server was recorded receiving
/// (../shared/seed-contract/results_seed.jsonl, scenarios ok/*, list, 500, 503): `headers`/`resultSet`,
/// streamed `{"type": …}` documents, an envelope inside the answer, a bare list, an error status inside a
/// 200, an HTML page, and an empty object.
/// (ad_spend, revenue) observations of the recorded-shape correlation answer.
const OBSERVATIONS: [(f64, f64); 8] = [
    (1.0, 3.4),
    (2.0, 5.9),
    (3.0, 9.6),
    (4.0, 11.8),
    (5.0, 15.5),
    (6.0, 17.7),
    (7.0, 21.6),
    (8.0, 23.9),
];

/// Least-squares slope, computed here independently of the view.
fn ols_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    sxy / sxx
}

async fn seed_backend() -> (String, tokio::task::JoinHandle<()>) {
    let json_body = |body: Value| move || async move { axum::Json(body).into_response() };
    let analysis = |kind: &str| {
        json!({"status": "success", "data": {"kind": kind, "rows": [["North", 120.5], ["South", 99.0]],
            "columns": ["region", "sales"], "insight": format!("{kind} insight")}})
    };
    let nlq_lines = "{\"type\": \"status\", \"message\": \"Understanding your question\"}\n\
        {\"type\": \"sql\", \"sql\": \"SELECT region, SUM(sales) FROM t GROUP BY region ORDER BY 2 DESC LIMIT 5\"}\n\
        {\"type\": \"data\", \"columns\": [\"region\", \"sales\"], \"rows\": [[\"North\", 120.5], [\"South\", 99.0]]}\n";
    let app = Router::new()
        .route(
            "/api/askme-manager/get-domain",
            get(json_body(json!({"headers": ["domain_id", "domain_name", "domain_timestamp"], "resultSet": [
                {"domain_id": 35403, "domain_name": "Sales", "domain_timestamp": "2025-11-01T10:00:00Z"},
                {"domain_id": 35404, "domain_name": "Customers", "domain_timestamp": "2025-11-02T10:00:00Z"}]}))),
        )
        .route(
            "/api/ai-engine/mcp/nlq-to-data",
            post(move || async move { ([(header::CONTENT_TYPE, "application/x-ndjson")], nlq_lines).into_response() }),
        )
        .route("/api/ai-engine/mcp/get-trend-data", post(json_body(analysis("trend"))))
        .route("/api/ai-engine/mcp/get-pareto-data", post(json_body(analysis("pareto"))))
        .route(
            "/api/ai-engine/mcp/get-outlier-data",
            post(json_body(json!([{"region": "North", "sales": 120.5}]))),
        )
        .route(
            "/api/ai-engine/mcp/get-change-data",
            post(json_body(json!({"status": "error", "message": "Internal failure in ai-engine"}))),
        )
        .route(
            "/api/ai-engine/mcp/get-prediction-data",
            post(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html>Service Unavailable</html>").into_response() }),
        )
        // Observations for one dataset (columns/rows like the recorded analysis answers), nothing for others.
        .route(
            "/api/ai-engine/mcp/get-correlation-data",
            post(|axum::Json(request): axum::Json<Value>| async move {
                let body = if request["schemaId"] == 35404 {
                    json!({"status": "success", "data": {"kind": "correlation", "columns": ["ad_spend", "revenue"],
                        "rows": OBSERVATIONS.iter().map(|(x, y)| json!([x, y])).collect::<Vec<_>>(),
                        "insight": "revenue rises with ad_spend"}})
                } else {
                    json!({})
                };
                axum::Json(body).into_response()
            }),
        );
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://127.0.0.1:{port}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_handles_recorded_lumenore_shapes_and_bad_answers() {
    let Some(browser) = browser() else {
        return;
    };
    let (backend, server) = seed_backend().await;
    let connector = Connector::start(ConnectorSpec {
        env: vec![
            ("LUMENORE_BACKEND".into(), "lumenore".into()),
            ("SERVER_URL".into(), backend),
            ("LUMENORE_API_KEY".into(), "seed-token".into()),
            ("LUMENORE_READINESS_INTERVAL".into(), "60s".into()),
            ("LUMENORE_MAX_RETRIES".into(), "0".into()),
        ],
        args: Vec::new(),
    })
    .await;
    let html = view_from(&connector.mcp).await;
    let q = json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403});
    let mut cases = vec![
        Case::new("seed-domains", "get_dataset_metadata", json!({}), Value::Null),
        Case::new("seed-nlq", "nlq_to_data", q.clone(), Value::Null),
        Case::new("seed-trend", "get_trend_data", q.clone(), Value::Null).dark(),
        Case::new("seed-pareto", "get_pareto_data", q.clone(), Value::Null),
        Case::new("seed-list", "get_outlier_data", q.clone(), Value::Null),
        Case::new("seed-error-status", "get_change_data", q.clone(), Value::Null),
        Case::new("seed-html", "get_prediction_data", q.clone(), Value::Null),
        Case::new(
            "seed-empty-object",
            "get_correlation_data",
            q.clone(),
            Value::Null,
        ),
        Case::new(
            "seed-scatter",
            "get_correlation_data",
            json!({"userQuery": "Does revenue follow ad spend?", "schemaId": 35404}),
            Value::Null,
        )
        .dark(),
    ];
    for case in &mut cases {
        case.result = call(&connector.mcp, case.tool, case.arguments.clone()).await;
    }
    let results = render(&browser, "seed-shapes", &html, &cases).await;
    let seen = |name: &str| results["cases"][name].clone();
    // headers/resultSet: a table (no measure to chart: ids are not measures), sortable.
    let domains = seen("seed-domains");
    assert_eq!(domains["kind"], Value::Null, "{domains}");
    assert_eq!(count(&domains, "tableRows"), 2);
    // Streamed {"type": "data", columns, rows} documents, and an envelope inside the answer: bars.
    for name in ["seed-nlq", "seed-trend", "seed-pareto"] {
        let chart = seen(name);
        assert!(
            chart["kind"] == "bars" || chart["kind"] == "pareto",
            "{name}: {chart}"
        );
        assert_eq!(count(&chart, "bars"), 2, "{name}");
        assert_eq!(chart["xTitle"], "region", "{name}");
    }
    assert_eq!(seen("seed-trend")["summary"][0], "trend insight");
    // A bare list of records: one row, one bar.
    assert_eq!(count(&seen("seed-list"), "bars"), 1);
    // Errors reported in a 200 answer, and a non-JSON page: a message saying so.
    let status = seen("seed-error-status");
    assert_eq!(status["messageRole"], "alert", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("Internal failure in ai-engine")
    );
    let page = seen("seed-html");
    assert_eq!(page["messageRole"], "alert", "{page}");
    assert_eq!(cases[6].result["isError"], true);
    // An empty object: says there is nothing to draw.
    let empty = seen("seed-empty-object");
    assert!(empty["message"].as_str().unwrap().contains("no table"), "{empty}");
    // Observations: a scatter with one dot each and the least-squares line.
    let scatter = seen("seed-scatter");
    assert_eq!(scatter["kind"], "scatter", "{scatter}");
    assert_eq!(count(&scatter, "dots"), OBSERVATIONS.len() as u64);
    assert_eq!(count(&scatter, "fitLines"), 1);
    assert_eq!(scatter["xTitle"], "ad_spend");
    assert_eq!(scatter["yTitle"], "revenue");
    let title = scatter["fitTitles"][0].as_str().unwrap();
    let shown: f64 = title
        .rsplit(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    let slope = ols_slope(&OBSERVATIONS);
    assert!(
        (shown - slope).abs() < 0.006,
        "fitted slope {shown} vs {slope} ({title})"
    );
    server.abort();
    let _ = tools::under_ci();
}

/// Runs a third-party client with a time bound; returns (success, stdout, stderr).
async fn run_tool(program: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{} {args:?} did not finish within 120 s", program.display()))
    .expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_resource_through_python_sdk_inspector_and_conformance() {
    let python = require("python venv with mcp (.tools/venv)", tools::venv_python());
    let inspector = require("mcp-inspector", tools::find("mcp-inspector"));
    let conformance = require("conformance", tools::find("conformance"));
    if python.is_none() && inspector.is_none() && conformance.is_none() {
        return;
    }
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    let url = connector.mcp.as_str();

    // The official Python SDK, in both connection modes (2025 initialize, 2026-07-28 discover).
    if let Some(python) = python {
        let script = repo_root().join("e2e/python/sdk_apps_check.py");
        let (ok, stdout, stderr) = run_tool(
            &python,
            &[script.to_str().unwrap(), url, "--mode", "both"],
            &[("PYTHONDONTWRITEBYTECODE", "1")],
        )
        .await;
        println!("{stdout}");
        assert!(ok, "Python SDK MCP Apps check failed:\n{stdout}\n{stderr}");
        let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
        assert_eq!(last["result"], "OK", "{stdout}");
        // Per mode: capability, list, read, 7 charted + 2 uncharted tools, unknown URI.
        assert_eq!(last["checks"], 26, "{stdout}");
    }

    // The MCP Inspector CLI.
    if let Some(inspector) = inspector {
        let catalog =
            std::env::temp_dir().join(format!("lumenore-e2e-apps-inspector-{}.json", std::process::id()));
        let catalog = catalog.to_str().unwrap().to_string();
        let envs = [("MCP_CATALOG_PATH", catalog.as_str())];
        let (ok, stdout, stderr) = run_tool(
            &inspector,
            &["--cli", url, "--transport", "http", "--method", "resources/list"],
            &envs,
        )
        .await;
        assert!(ok, "inspector resources/list failed:\n{stdout}\n{stderr}");
        let listed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(listed["resources"][0]["uri"], VIEW_URI, "{listed}");
        assert_eq!(listed["resources"][0]["mimeType"], VIEW_MIME, "{listed}");
        let (ok, stdout, stderr) = run_tool(
            &inspector,
            &[
                "--cli",
                url,
                "--transport",
                "http",
                "--method",
                "resources/read",
                "--uri",
                VIEW_URI,
            ],
            &envs,
        )
        .await;
        assert!(ok, "inspector resources/read failed:\n{stdout}\n{stderr}");
        let read: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(read["contents"][0]["mimeType"], VIEW_MIME);
        let text = read["contents"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("<!doctype html>") && text.ends_with("</html>"));
        assert_eq!(
            text.len() as u64,
            listed["resources"][0]["size"].as_u64().unwrap()
        );
        let _ = std::fs::remove_file(&catalog);
    }

    // The conformance suite's resources scenario that applies to a real server (the others read, subscribe
    // to or template the suite's own test:// fixtures; see e2e/conformance-expected-failures.yml).
    if let Some(conformance) = conformance {
        let (ok, stdout, stderr) = run_tool(
            &conformance,
            &["server", "--url", url, "--scenario", "resources-list"],
            &[],
        )
        .await;
        assert!(
            ok && stdout.contains("Passed: 1/1"),
            "conformance resources-list:\n{stdout}\n{stderr}"
        );
    }
}
