//! A stateful fake Lumenore server, for driving the real connector binary through backend faults.
//!
//! - `POST /api/secure/client/user-login` with `{"data": {"clientId", "secret"}}` answers the token as the
//!   `access_token` cookie (401 for other credentials). Tokens expire into 401 after N uses or T seconds;
//!   a configured static token never expires.
//! - `GET /api/askme-manager/get-domain`, `POST /api/askme-manager/metadata/get/{schemaId}`,
//!   `POST /api/ai-engine/mcp/get-<kind>-data`: JSON answers after an optional delay.
//! - `POST /api/ai-engine/mcp/nlq-to-data`: JSON lines streamed in chunks with a delay between chunks.
//! - Faults, queued and served to the next data requests (not the login): an HTTP status (e.g. 503), a
//!   connection closed mid-body, a connection closed before any header.
//! - A share of failures: every n-th data request answered with a fault (`fail_every`).
//! - Hostile modes: a login that hangs, a backend that refuses every token (401 to every data request),
//!   analysis answers of a given size (one JSON array), and an NLQ stream that never ends.
//! - `LUMENORE_API_KEY`: the static token is accepted as the whole `Authorization` value (no `Bearer `), as
//!   the real backend takes it from the original server.
//! - `stop()` closes the listener and every open connection at once (a crash, not a graceful stop);
//!   `start_again()` binds the same port again.
//! - Counters: requests, logins, 401s, faults served, calls completed and calls cancelled (the client went
//!   away before the answer was complete), in flight and peak in flight.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Request, Response, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::Service;

pub const LOGIN_PATH: &str = "/api/secure/client/user-login";
const REGIONS: [&str; 4] = ["North", "South", "East", "West"];

/// How the fake behaves. Change it while running with the setters of [`FakeLumenore`].
#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub client_id: String,
    pub secret: String,
    /// A key accepted forever as the whole `Authorization` value (for `LUMENORE_API_KEY`).
    pub static_token: Option<String>,
    /// A login token is refused (401) after this many authenticated requests.
    pub token_max_uses: Option<u64>,
    /// A login token is refused (401) this long after the login.
    pub token_ttl: Option<Duration>,
    /// Wait before answering any data request.
    pub delay: Duration,
    /// nlq-to-data: number of JSON lines streamed, and the pause before each.
    pub stream_chunks: usize,
    pub chunk_delay: Duration,
    /// The login waits this long before answering (a hanging login).
    pub login_delay: Duration,
    /// Every data request is answered 401, whatever the token (logins still succeed).
    pub refuse_all_tokens: bool,
    /// Analysis endpoints answer one JSON array of about this many bytes, in 64 KiB chunks.
    pub answer_bytes: Option<usize>,
    /// With `answer_bytes`: rows of 1,000 one-digit numbers instead of objects, the answer whose kept
    /// part costs the most memory per byte (the memory budget's worst case).
    pub dense_answer: bool,
    /// nlq-to-data streams JSON lines until the client goes away.
    pub endless_stream: bool,
    /// Every `n`-th data request (the `n`-th, `2n`-th, ...) is answered with this fault: a share
    /// `1/n` of the calls fails, as a regression on one answer shape would.
    pub fail_every: Option<(u64, Fault)>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            client_id: "e2e-client".into(),
            secret: "e2e-secret".into(),
            static_token: None,
            token_max_uses: None,
            token_ttl: None,
            delay: Duration::ZERO,
            stream_chunks: 3,
            chunk_delay: Duration::ZERO,
            login_delay: Duration::ZERO,
            refuse_all_tokens: false,
            answer_bytes: None,
            dense_answer: false,
            endless_stream: false,
            fail_every: None,
        }
    }
}

/// A fault served instead of the next data request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this HTTP status with a small JSON body.
    Status(u16),
    /// Send 200 and part of the body, then close the connection.
    ResetMidBody,
    /// Close the connection without sending any header.
    CloseBeforeHeaders,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every HTTP request, login included.
    pub requests: u64,
    pub logins: u64,
    pub logins_rejected: u64,
    /// 401 answers to data requests (unknown or expired token).
    pub unauthorized: u64,
    pub faults: u64,
    /// Data answers sent in full.
    pub completed: u64,
    /// Data requests whose client went away before the answer was complete.
    pub cancelled: u64,
    pub in_flight: i64,
    pub peak_in_flight: i64,
    /// Requests by endpoint (`get-domain`, `metadata`, `nlq-to-data`, `get-trend-data`, …).
    pub by_endpoint: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    logins: AtomicU64,
    logins_rejected: AtomicU64,
    unauthorized: AtomicU64,
    faults: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    in_flight: AtomicI64,
    peak_in_flight: AtomicI64,
    by_endpoint: Mutex<BTreeMap<String, u64>>,
}

struct Token {
    issued: Instant,
    uses: u64,
}

struct Shared {
    config: Mutex<FakeConfig>,
    tokens: Mutex<HashMap<String, Token>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Data requests seen, for `fail_every`.
    data_requests: AtomicU64,
    next_token: AtomicU64,
    counters: Counters,
    /// (path, `traceparent` header) of every request that carried one (trace propagation tests).
    traceparents: Mutex<Vec<(String, String)>>,
}

struct Running {
    stop: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
}

/// The fake server. Dropping it stops it.
pub struct FakeLumenore {
    shared: Arc<Shared>,
    pub port: u16,
    running: Mutex<Option<Running>>,
}

impl FakeLumenore {
    /// Starts on a free loopback port.
    pub async fn start(config: FakeConfig) -> FakeLumenore {
        let fake = Self::reserved(config);
        fake.start_again().await;
        fake
    }

    /// Picks a port but does not listen yet: a backend that is down. Call [`FakeLumenore::start_again`].
    pub fn reserved(config: FakeConfig) -> FakeLumenore {
        FakeLumenore {
            shared: Arc::new(Shared {
                config: Mutex::new(config),
                tokens: Mutex::new(HashMap::new()),
                faults: Mutex::new(VecDeque::new()),
                data_requests: AtomicU64::new(0),
                next_token: AtomicU64::new(1),
                traceparents: Mutex::new(Vec::new()),
                counters: Counters::default(),
            }),
            port: crate::free_port(),
            running: Mutex::new(None),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// (Re)starts listening on the same port. Panics if the port stays taken for 5 s.
    pub async fn start_again(&self) {
        if self.is_running() {
            return;
        }
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            let bound = tokio::net::TcpSocket::new_v4().and_then(|socket| {
                socket.set_reuseaddr(true)?;
                socket.bind(address)?;
                socket.listen(4096)
            });
            match bound {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("fake backend cannot listen on {address}: {error}"),
            }
        };
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(listener, self.shared.clone(), stop.clone()));
        *self.running.lock().unwrap() = Some(Running { stop, accept });
    }

    /// Stops at once: the listener and every open connection are closed (requests in flight see their
    /// connection reset).
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.accept.await;
        }
    }

    /// Stop, wait `down_for`, start again on the same port.
    pub async fn restart(&self, down_for: Duration) {
        self.stop().await;
        tokio::time::sleep(down_for).await;
        self.start_again().await;
    }

    /// (path, `traceparent` header) of every request received with one, in order.
    pub fn traceparents(&self) -> Vec<(String, String)> {
        self.shared.traceparents.lock().unwrap().clone()
    }

    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        Counts {
            requests: c.requests.load(Ordering::SeqCst),
            logins: c.logins.load(Ordering::SeqCst),
            logins_rejected: c.logins_rejected.load(Ordering::SeqCst),
            unauthorized: c.unauthorized.load(Ordering::SeqCst),
            faults: c.faults.load(Ordering::SeqCst),
            completed: c.completed.load(Ordering::SeqCst),
            cancelled: c.cancelled.load(Ordering::SeqCst),
            in_flight: c.in_flight.load(Ordering::SeqCst),
            peak_in_flight: c.peak_in_flight.load(Ordering::SeqCst),
            by_endpoint: c.by_endpoint.lock().unwrap().clone(),
        }
    }

    /// Changes the behaviour while running.
    pub fn configure(&self, change: impl FnOnce(&mut FakeConfig)) {
        change(&mut self.shared.config.lock().unwrap());
    }

    pub fn set_delay(&self, delay: Duration) {
        self.configure(|c| c.delay = delay);
    }

    /// Queues `count` copies of `fault` for the next data requests.
    pub fn push_faults(&self, fault: Fault, count: usize) {
        let mut faults = self.shared.faults.lock().unwrap();
        faults.extend(std::iter::repeat_n(fault, count));
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().unwrap().len()
    }

    /// Forgets every login token (the next data request with one gets 401).
    pub fn revoke_tokens(&self) {
        self.shared.tokens.lock().unwrap().clear();
    }

    /// Waits until `condition` holds for the counters, up to `timeout`.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts();
            if condition(&counts) || Instant::now() >= deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeLumenore {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(running) = running.take()
        {
            running.stop.cancel();
            running.accept.abort();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let router = router(shared.clone());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                let shared = shared.clone();
                async move {
                    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(tp) = request.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
                        let entry = (request.uri().path().to_string(), tp.to_string());
                        shared.traceparents.lock().unwrap().push(entry);
                    }
                    if request.uri().path() != LOGIN_PATH {
                        let n = shared.data_requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let every = shared.config.lock().unwrap().fail_every;
                        let fault = shared.faults.lock().unwrap().pop_front().or_else(|| {
                            every.and_then(|(k, fault)| (k > 0 && n.is_multiple_of(k)).then_some(fault))
                        });
                        if let Some(fault) = fault {
                            shared.counters.faults.fetch_add(1, Ordering::SeqCst);
                            count_endpoint(&shared, request.uri().path());
                            return serve_fault(fault);
                        }
                    }
                    let response = match router.call(request.map(Body::new)).await {
                        Ok(response) => response,
                        Err(infallible) => match infallible {},
                    };
                    Ok::<_, std::io::Error>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes the socket: a crash as the client sees it.
                () = stop.cancelled() => {}
            }
        });
    }
}

fn serve_fault(fault: Fault) -> Result<Response<Body>, std::io::Error> {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok((status, Json(json!({"error": "injected fault"}))).into_response())
        }
        Fault::ResetMidBody => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"part\": 0, \"rows\": [")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ];
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .expect("response"))
        }
        Fault::CloseBeforeHeaders => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected close before headers",
        )),
    }
}

fn count_endpoint(shared: &Shared, path: &str) {
    let key = if path.starts_with("/api/askme-manager/metadata/get/") {
        "metadata".to_string()
    } else {
        path.rsplit('/').next().unwrap_or(path).to_string()
    };
    *shared
        .counters
        .by_endpoint
        .lock()
        .unwrap()
        .entry(key)
        .or_default() += 1;
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(LOGIN_PATH, post(login))
        .route("/api/askme-manager/get-domain", get(get_domain))
        .route("/api/askme-manager/metadata/get/{schema_id}", post(metadata))
        .route("/api/ai-engine/mcp/nlq-to-data", post(nlq_to_data))
        .route("/api/ai-engine/mcp/{endpoint}", post(analysis))
        .with_state(shared)
}

async fn login(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    count_endpoint(&shared, LOGIN_PATH);
    let (client_id, secret, delay) = {
        let config = shared.config.lock().unwrap();
        (
            config.client_id.clone(),
            config.secret.clone(),
            config.login_delay,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let data = serde_json::from_slice::<Value>(&body).unwrap_or_default()["data"].clone();
    if data["clientId"] != client_id.as_str() || data["secret"] != secret.as_str() {
        shared.counters.logins_rejected.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid client credentials"})),
        )
            .into_response();
    }
    shared.counters.logins.fetch_add(1, Ordering::SeqCst);
    let token = format!("fake-token-{}", shared.next_token.fetch_add(1, Ordering::SeqCst));
    shared.tokens.lock().unwrap().insert(
        token.clone(),
        Token {
            issued: Instant::now(),
            uses: 0,
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::SET_COOKIE,
            format!("access_token={token}; Path=/; HttpOnly; SameSite=Lax"),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"status":"ok"}"#))
        .expect("response")
}

/// A 401 for an unknown or expired token.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response<Body> {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "token expired or invalid"})),
        )
            .into_response()
    }
}

/// Checks the bearer token; on success counts one use.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Unauthorized> {
    let unauthorized = || {
        shared.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        Unauthorized
    };
    let config = shared.config.lock().unwrap().clone();
    if config.refuse_all_tokens {
        return Err(unauthorized());
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if authorization.is_some() && authorization == config.static_token.as_deref() {
        return Ok(());
    }
    let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(unauthorized());
    };
    let mut tokens = shared.tokens.lock().unwrap();
    let Some(state) = tokens.get_mut(token) else {
        return Err(unauthorized());
    };
    let used_up = config.token_max_uses.is_some_and(|max| state.uses >= max);
    let too_old = config.token_ttl.is_some_and(|ttl| state.issued.elapsed() > ttl);
    if used_up || too_old {
        tokens.remove(token);
        return Err(unauthorized());
    }
    state.uses += 1;
    Ok(())
}

/// Counts a data call in flight; unless `finish` was called, dropping it counts a cancellation.
struct CallGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl CallGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        let now = shared.counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.counters.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
        self.shared.counters.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.shared.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.shared.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The common part of every data endpoint: count, authorize, wait the configured delay.
async fn begin(shared: &Arc<Shared>, headers: &HeaderMap, endpoint: &str) -> Result<CallGuard, Unauthorized> {
    count_endpoint(shared, endpoint);
    authorize(shared, headers)?;
    let guard = CallGuard::new(shared);
    let delay = shared.config.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(guard)
}

async fn answer(shared: Arc<Shared>, headers: HeaderMap, endpoint: &str, body: Value) -> Response<Body> {
    match begin(&shared, &headers, endpoint).await {
        Ok(guard) => {
            guard.finish();
            Json(body).into_response()
        }
        Err(unauthorized) => unauthorized.into_response(),
    }
}

async fn get_domain(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response<Body> {
    let body = json!({"data": [
        {"id": 35403, "name": "Sales", "description": "Orders with region, product and revenue"},
        {"id": 35404, "name": "Customers", "description": "Customer lifetime value and segments"},
        {"id": 35405, "name": "Inventory", "description": "Monthly demand by product category"}
    ]});
    answer(shared, headers, "/get-domain", body).await
}

async fn metadata(
    State(shared): State<Arc<Shared>>,
    Path(schema_id): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let body = json!({"schemaId": schema_id, "columns": [
        {"name": "region", "role": "dimension"},
        {"name": "order_date", "role": "time"},
        {"name": "revenue", "role": "measure", "unit": "USD"}
    ]});
    answer(shared, headers, "/api/askme-manager/metadata/get/x", body).await
}

async fn analysis(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let schema_id = serde_json::from_slice::<Value>(&body).unwrap_or_default()["schemaId"].clone();
    let (answer_bytes, dense) = {
        let config = shared.config.lock().unwrap();
        (config.answer_bytes, config.dense_answer)
    };
    if let Some(size) = answer_bytes {
        return match begin(&shared, &headers, &format!("/{endpoint}")).await {
            Ok(guard) => large_array(size, dense, guard),
            Err(unauthorized) => unauthorized.into_response(),
        };
    }
    let answer_body = json!({
        "analysis": endpoint.trim_start_matches("get-").trim_end_matches("-data"),
        "schemaId": schema_id,
        "series": [{"period": "2024-10", "value": 120.5}, {"period": "2024-11", "value": 131.0}],
    });
    answer(shared, headers, &format!("/{endpoint}"), answer_body).await
}

/// One JSON array of about `size` bytes (rows of a region and a number, or with `dense` rows of 1,000
/// one-digit numbers), sent in 64 KiB chunks made as they are sent.
fn large_array(size: usize, dense: bool, guard: CallGuard) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let row = move |i: usize| {
        if dense {
            let digit = (b'0' + (i % 10) as u8) as char;
            let mut row = String::with_capacity(2001);
            row.push('[');
            for n in 0..1000 {
                if n > 0 {
                    row.push(',');
                }
                row.push(digit);
            }
            row.push(']');
            return row;
        }
        format!(
            "{{\"region\": \"{}\", \"sales\": {}}}",
            REGIONS[i % REGIONS.len()],
            1000 + i
        )
    };
    let stream = futures::stream::unfold(
        (0usize, 0usize, Some(guard)),
        move |(sent, next_row, mut guard)| async move {
            if sent >= size {
                if let Some(guard) = guard.take() {
                    guard.finish();
                }
                return None;
            }
            let mut chunk = String::with_capacity(CHUNK + 64);
            let mut row_index = next_row;
            if sent == 0 {
                chunk.push('[');
            }
            while chunk.len() < CHUNK && sent + chunk.len() < size {
                if row_index > 0 {
                    chunk.push(',');
                }
                chunk.push_str(&row(row_index));
                row_index += 1;
            }
            let last = sent + chunk.len() >= size;
            if last {
                chunk.push(']');
            }
            let total = sent + chunk.len();
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), (total, row_index, guard)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}

async fn nlq_to_data(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response<Body> {
    let guard = match begin(&shared, &headers, "/nlq-to-data").await {
        Ok(guard) => guard,
        Err(unauthorized) => return unauthorized.into_response(),
    };
    let (chunks, chunk_delay, endless) = {
        let config = shared.config.lock().unwrap();
        (config.stream_chunks, config.chunk_delay, config.endless_stream)
    };
    let chunks = if endless { usize::MAX } else { chunks };
    let stream = futures::stream::unfold((0usize, Some(guard)), move |(i, mut guard)| async move {
        if i == chunks {
            if let Some(guard) = guard.take() {
                guard.finish();
            }
            return None;
        }
        if !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        // An endless stream sends its lines 64 at a time, so it reaches any byte cap in reasonable time.
        let lines = if endless { 64 } else { 1 };
        let text: String = (0..lines)
            .map(|j| {
                let part = i.saturating_mul(lines) + j;
                format!(
                    "{}\n",
                    json!({"part": part, "rows": [{"region": REGIONS[part % REGIONS.len()], "sales": 1000 + part}]})
                )
            })
            .collect();
        Some((Ok::<_, Infallible>(Bytes::from(text)), (i + 1, guard)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("response")
}
