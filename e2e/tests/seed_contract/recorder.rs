//! A recording stand-in for the Lumenore backend: it answers in each recorded mode with the bodies the
//! original server passed on to its clients (so the answers are the recorded ones, not ours), and records
//! every request it gets.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, Response, StatusCode, Uri, header},
};
use serde_json::{Value, json};

use super::fixtures::Scenario;

pub const LOGIN_PATH: &str = "/api/secure/client/user-login";

/// One request as the recorder saw it, with the status it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
    /// For a login answered with a token: the token.
    pub issued_token: Option<String>,
}

/// The bodies the backend answers, taken from what the original server passed on.
pub struct Bodies {
    domain: Value,
    metadata: Value,
    analysis: HashMap<String, Value>,
    /// Raw NLQ answers: by NLQ format in mode `ok` (`ndjson`, `sse`, `text`, `json`), else by mode.
    nlq: HashMap<String, String>,
    login_refusal: Value,
}

fn text_of(scenario: &Scenario) -> String {
    scenario.content.as_str().unwrap_or_default().to_string()
}

impl Bodies {
    pub fn from_scenarios(scenarios: &[Scenario]) -> Self {
        let find = |label: &str| {
            scenarios
                .iter()
                .find(|s| s.label == label)
                .unwrap_or_else(|| panic!("no scenario {label}"))
        };
        let domain = json!({"data": serde_json::from_str::<Value>(&text_of(find("ok/get_dataset_metadata"))).unwrap()});
        let columns = &find("ok/get_metadata_info").content;
        let result_set: Value = serde_json::from_str(columns["data"].as_str().unwrap()).unwrap();
        let metadata = json!({"data": {"result": {"resultSet": result_set}}});
        let analysis = [
            "trend",
            "prediction",
            "outlier",
            "correlation",
            "change",
            "pareto",
        ]
        .into_iter()
        .map(|kind| {
            let text = text_of(find(&format!("ok/get_{kind}_data")));
            (kind.to_string(), serde_json::from_str::<Value>(&text).unwrap())
        })
        .collect();
        let mut nlq = HashMap::new();
        for (key, label) in [
            ("ndjson", "ok/nlq_to_data"),
            ("sse", "nlq_sse/nlq_to_data"),
            ("text", "nlq_text/nlq_to_data"),
            ("json", "nlq_json/nlq_to_data"),
            ("500", "500/nlq_to_data"),
            ("503", "503/nlq_to_data"),
            ("badjson", "badjson/nlq_to_data"),
            ("textjson", "textjson/nlq_to_data"),
            ("list", "list/nlq_to_data"),
            ("empty", "empty/nlq_to_data"),
            ("401", "401/nlq_to_data"),
        ] {
            nlq.insert(key.to_string(), text_of(find(label)));
        }
        // The original quoted the login refusal as a Python dict: {'status': 'error', 'message': '…'}.
        let refusal = text_of(find("login401/get_trend_data"));
        let start = refusal.find("{'").expect("refusal body");
        let end = refusal[start..].find('}').expect("end of refusal body") + start + 1;
        let login_refusal = serde_json::from_str(&refusal[start..end].replace('\'', "\"")).unwrap();
        Self {
            domain,
            metadata,
            analysis,
            nlq,
            login_refusal,
        }
    }
}

/// How the next answers are shaped.
#[derive(Clone, Debug)]
pub struct Mode {
    pub mode: String,
    pub nlq: String,
    /// `stream3.6s` or `stall` for the slow NLQ scenarios.
    pub slow: Option<String>,
}

struct Shared {
    bodies: Bodies,
    mode: Mutex<Mode>,
    /// Mode `401once`: the first data request of the scenario was refused already.
    refused_once: Mutex<bool>,
    tokens: Mutex<u64>,
    log: Mutex<Vec<Recorded>>,
}

pub struct Recorder {
    shared: Arc<Shared>,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start(bodies: Bodies, mode: Mode) -> Recorder {
        let shared = Arc::new(Shared {
            bodies,
            mode: Mutex::new(mode),
            refused_once: Mutex::new(false),
            tokens: Mutex::new(0),
            log: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new().fallback(answer).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Recorder { shared, url, task }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        *self.shared.refused_once.lock().unwrap() = false;
    }

    /// The requests recorded since the last call, and forgets them.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.shared.log.lock().unwrap())
    }

    pub fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }
}

fn full(status: u16, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let mode = shared.mode.lock().unwrap().clone();
    let header_value = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut record = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        authorization: header_value(header::AUTHORIZATION),
        accept: header_value(header::ACCEPT),
        content_type: header_value(header::CONTENT_TYPE),
        body: serde_json::from_slice(&body).ok(),
        status: 200,
        issued_token: None,
    };
    let response = if uri.path() == LOGIN_PATH {
        login(&shared, &mode, &mut record)
    } else {
        data(&shared, &mode, uri.path())
    };
    record.status = response.status().as_u16();
    shared.log.lock().unwrap().push(record);
    response
}

fn login(shared: &Shared, mode: &Mode, record: &mut Recorded) -> Response<Body> {
    match mode.mode.as_str() {
        "login401" => full(401, "application/json", shared.bodies.login_refusal.to_string()),
        "nocookie" => full(200, "application/json", r#"{"status": "ok"}"#.into()),
        _ => {
            let token = {
                let mut tokens = shared.tokens.lock().unwrap();
                *tokens += 1;
                format!("tok-{tokens}")
            };
            record.issued_token = Some(token.clone());
            let mut response = full(200, "application/json", r#"{"status": "ok"}"#.into());
            response.headers_mut().insert(
                header::SET_COOKIE,
                format!("access_token={token}; Path=/; HttpOnly").parse().unwrap(),
            );
            response
        }
    }
}

fn data(shared: &Shared, mode: &Mode, path: &str) -> Response<Body> {
    let bodies = &shared.bodies;
    let is_nlq = path.ends_with("/nlq-to-data");
    let ok_json = || -> Value {
        if path.ends_with("/get-domain") {
            bodies.domain.clone()
        } else if path.contains("/metadata/get/") {
            bodies.metadata.clone()
        } else {
            let kind = path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .trim_start_matches("get-")
                .trim_end_matches("-data");
            bodies.analysis.get(kind).cloned().unwrap_or(Value::Null)
        }
    };
    let nlq = |key: &str| bodies.nlq.get(key).cloned().unwrap_or_default();
    let refused = || full(401, "application/json", nlq("401"));
    match mode.mode.as_str() {
        "401" => refused(),
        "401once" if !std::mem::replace(&mut *shared.refused_once.lock().unwrap(), true) => refused(),
        "500" => full(500, "application/json", nlq("500")),
        "503" => full(503, "text/html", nlq("503")),
        "badjson" => full(200, "text/html", nlq("badjson")),
        "textjson" if is_nlq => full(200, "text/plain", nlq("textjson")),
        "textjson" => full(200, "text/plain", ok_json().to_string()),
        "list" => full(200, "application/json", nlq("list")),
        "empty" => full(200, "application/json", String::new()),
        _ if is_nlq => match mode.slow.as_deref() {
            Some(slow) => slow_stream(nlq("ndjson"), slow),
            None => {
                let content_type = match mode.nlq.as_str() {
                    "sse" => "text/event-stream",
                    "text" => "text/plain",
                    "json" => "application/json",
                    _ => "application/x-ndjson",
                };
                full(200, content_type, nlq(&mode.nlq))
            }
        },
        _ => full(200, "application/json", ok_json().to_string()),
    }
}

/// `stream3.6s`: a line every 1.2 s. `stall`: one line, 3 s of silence, then the rest.
fn slow_stream(lines: String, slow: &str) -> Response<Body> {
    let lines: Vec<String> = lines.lines().map(|line| format!("{line}\n")).collect();
    let pauses: Vec<Duration> = match slow {
        "stall" => (0..lines.len())
            .map(|i| {
                if i == 1 {
                    Duration::from_secs(3)
                } else {
                    Duration::ZERO
                }
            })
            .collect(),
        _ => vec![Duration::from_millis(1200); lines.len()],
    };
    let stream = futures::stream::unfold(0usize, move |i| {
        let lines = lines.clone();
        let pause = pauses.get(i).copied();
        async move {
            let line = lines.get(i)?.clone();
            tokio::time::sleep(pause.unwrap_or_default()).await;
            Some((Ok::<_, Infallible>(Bytes::from(line)), i + 1))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap()
}
