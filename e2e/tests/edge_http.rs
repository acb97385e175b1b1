//! Issue 21, the connector's edge: every connection and request bounded in time and memory, against the
//! real binary (one fresh process per test), judged by the kernel's figures of the process (VmHWM, open
//! descriptors) and by whether a legitimate client is still served within 2 s.
//!
//! HTTP/2 is spoken with a raw frame client written here ([`h2raw`]): a client that keeps its flow-control
//! window at zero, or that sends PINGs after its answer, is not something an HTTP library does.
//! `cargo test -p lumenore-e2e --test edge_http -- --nocapture --test-threads 1` prints the figures
//! (`LUMENORE_CONNECTOR_BIN=<release binary>` for those quoted in docs/hardening.md). Loopback only; every
//! loop is bounded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore},
    http_client,
    mcp::PROTOCOL_VERSION,
    raw::{
        Ending, api_keys, open_fds, post_head, raise_open_files_limit, read_one_answer, read_to_close,
        status_kib,
    },
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpStream};

const MIB: u64 = 1024;

/// A raw HTTP/2 client: the preface, SETTINGS, HEADERS with HPACK literals, and a frame reader that
/// acknowledges the server's SETTINGS (and, when asked, its PINGs) and reports GOAWAY and the close.
mod h2raw {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    pub const GOAWAY: u8 = 7;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Preface and SETTINGS (`INITIAL_WINDOW_SIZE` = `window`).
    pub fn preface(window: u32) -> Vec<u8> {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = vec![0, 4];
        settings.extend_from_slice(&window.to_be_bytes());
        out.extend(frame(4, 0, 0, &settings));
        out
    }

    /// HEADERS of `GET path` on `stream`, ending the stream.
    pub fn get(stream: u32, path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.push(0x04); // :path, literal without indexing
        block.push(path.len() as u8);
        block.extend_from_slice(path.as_bytes());
        block.push(0x01); // :authority, literal without indexing
        block.push(9);
        block.extend_from_slice(b"127.0.0.1");
        frame(1, 0x4 | 0x1, stream, &block)
    }

    /// A DATA frame on stream 0: a connection error (PROTOCOL_ERROR, RFC 9113 section 6.1).
    pub fn data_on_stream_zero() -> Vec<u8> {
        frame(0, 0, 0, b"x")
    }

    pub fn ping(payload: [u8; 8]) -> Vec<u8> {
        frame(6, 0, 0, &payload)
    }

    /// What the server did within the bound.
    #[derive(Debug, Default)]
    pub struct Seen {
        pub goaway: bool,
        pub closed: bool,
        pub data: bool,
        pub headers: bool,
    }

    /// Reads frames until the server closes, or `bound` passes (or, with `stop_at_headers`, until the
    /// answer's HEADERS came). Acknowledges SETTINGS and PINGs.
    pub async fn read(stream: &mut TcpStream, bound: Duration, stop_at_headers: bool) -> Seen {
        let mut seen = Seen::default();
        let deadline = tokio::time::Instant::now() + bound;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while buf.len() >= 9 {
                let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let payload: Vec<u8> = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match kind {
                    0 => seen.data = true,
                    1 => seen.headers = true,
                    4 if flags & 1 == 0 => {
                        let _ = stream.write_all(&frame(4, 1, 0, &[])).await;
                    }
                    6 if flags & 1 == 0 => {
                        let _ = stream.write_all(&frame(6, 1, 0, &payload)).await;
                    }
                    GOAWAY => seen.goaway = true,
                    _ => {}
                }
                if stop_at_headers && seen.headers {
                    return seen;
                }
            }
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Err(_) => return seen,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    seen.closed = true;
                    return seen;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

async fn connect(connector: &Connector) -> TcpStream {
    TcpStream::connect(("127.0.0.1", connector.port))
        .await
        .expect("connect to the connector")
}

/// A legitimate client: `GET /healthz` on a new connection; its status and how long it took.
async fn legitimate(connector: &Connector) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let status = http_client(Duration::from_secs(2))
        .get(format!("{}/healthz", connector.base))
        .send()
        .await
        .ok()
        .map(|response| response.status().as_u16());
    (status, started.elapsed())
}

/// The connector's peak resident size (VmHWM) in KiB, sampled every 50 ms until dropped.
struct PeakWatcher {
    peak: Arc<AtomicU64>,
    fds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    pid: u32,
}

impl PeakWatcher {
    fn start(pid: u32) -> PeakWatcher {
        let peak = Arc::new(AtomicU64::new(0));
        let fds = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (peak, fds) = (peak.clone(), fds.clone());
            async move {
                loop {
                    peak.fetch_max(status_kib(pid, "VmHWM:"), Ordering::Relaxed);
                    fds.fetch_max(open_fds(pid) as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        PeakWatcher { peak, fds, task, pid }
    }

    /// (peak VmHWM KiB, peak open descriptors)
    fn stop(self) -> (u64, u64) {
        self.task.abort();
        let peak = self
            .peak
            .load(Ordering::Relaxed)
            .max(status_kib(self.pid, "VmHWM:"));
        (peak, self.fds.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_zero_window_connections_are_closed_with_goaway_and_free_their_slots() {
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_MAX_CONNECTIONS", "8")
            .env("LUMENORE_HEADER_READ_TIMEOUT", "60s")
            .env("LUMENORE_SEND_TIMEOUT", "2s"),
    )
    .await;
    // Let the start-up probe's connection close, then take every slot with zero-window clients.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let mut stream = connect(&connector).await;
        let mut hello = h2raw::preface(0);
        hello.extend(h2raw::get(1, "/healthz"));
        stream.write_all(&hello).await.expect("preface");
        attackers.push(stream);
    }
    let started = Instant::now();
    let seen = futures::future::join_all(
        attackers
            .iter_mut()
            .map(|stream| h2raw::read(stream, Duration::from_secs(12), false)),
    )
    .await;
    let elapsed = started.elapsed();
    println!("8 zero-window HTTP/2 connections: {seen:?} after {elapsed:?}");
    let held = seen.iter().filter(|s| !s.closed).count();
    assert_eq!(held, 0, "zero-window connections still open after 12 s: {seen:?}");
    assert!(
        seen.iter().all(|s| s.goaway && !s.data),
        "closed without GOAWAY: {seen:?}"
    );
    let (status, took) = legitimate(&connector).await;
    assert_eq!(status, Some(200), "legitimate client after the attack ({took:?})");
    let metrics = connector.metrics().await;
    assert!(
        metrics.contains(r#"lumenore_connector_http_connections_closed_total{reason="send_stalled"} 8"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_http2_library_ends_on_an_error_are_counted() {
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    let mut stream = connect(&connector).await;
    let mut hello = h2raw::preface(65_535);
    hello.extend(h2raw::data_on_stream_zero());
    stream.write_all(&hello).await.expect("preface");
    let seen = h2raw::read(&mut stream, Duration::from_secs(5), false).await;
    assert!(seen.closed && seen.goaway, "{seen:?}");
    let metrics = connector.metrics().await;
    assert!(
        metrics.contains(r#"lumenore_connector_http_connections_closed_total{reason="protocol_error"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answers_held_at_a_zero_window_are_capped_in_all() {
    // A `/metrics` answer is the whole text: 100 zero-window streams per connection would each hold one.
    let connector = Connector::start(ConnectorSpec::embedded().env("LUMENORE_SEND_TIMEOUT", "3s")).await;
    let scrape = || async {
        http_client(Duration::from_secs(5))
            .get(format!("{}/metrics", connector.base))
            .send()
            .await
            .expect("metrics")
            .status()
            .as_u16()
    };
    assert_eq!(scrape().await, 200);
    let mut attacker = connect(&connector).await;
    let mut hello = h2raw::preface(0);
    for stream in 0..10u32 {
        hello.extend(h2raw::get(2 * stream + 1, "/metrics"));
    }
    attacker.write_all(&hello).await.expect("preface");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = scrape().await;
    // The send timeout closes the attacker's connection and gives its answers back.
    let seen = h2raw::read(&mut attacker, Duration::from_secs(8), false).await;
    let after = scrape().await;
    println!("10 zero-window /metrics streams: a scrape during {during}, after {after}; {seen:?}");
    assert_eq!(during, 503, "the held answers were not capped");
    assert!(seen.closed && seen.goaway, "{seen:?}");
    assert_eq!(after, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_frames_after_the_answer_keep_the_idle_timeout_and_the_close_sends_goaway() {
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_HEADER_READ_TIMEOUT", "2s")
            .env("LUMENORE_IDLE_TIMEOUT", "6s"),
    )
    .await;
    let mut stream = connect(&connector).await;
    let mut hello = h2raw::preface(65_535);
    hello.extend(h2raw::get(1, "/healthz"));
    stream.write_all(&hello).await.expect("preface");
    let answered = h2raw::read(&mut stream, Duration::from_secs(5), true).await;
    assert!(answered.headers, "no answer: {answered:?}");
    let started = Instant::now();
    // A PING every 500 ms for 4 s: past the header timeout, within the idle timeout.
    for i in 0..8u8 {
        stream.write_all(&h2raw::ping([i; 8])).await.expect("ping");
        let seen = h2raw::read(&mut stream, Duration::from_millis(500), false).await;
        assert!(
            !seen.closed && !seen.goaway,
            "closed {:?} after the answer: the header timeout ran on an idle HTTP/2 connection",
            started.elapsed()
        );
    }
    let seen = h2raw::read(&mut stream, Duration::from_secs(12), false).await;
    let elapsed = started.elapsed();
    println!("idle HTTP/2 connection: {seen:?} after {elapsed:?}");
    assert!(seen.closed && seen.goaway, "{seen:?} after {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(5), "closed early: {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_head_is_bounded_by_the_header_timeout_once() {
    let connector =
        Connector::start(ConnectorSpec::embedded().env("LUMENORE_HEADER_READ_TIMEOUT", "3s")).await;
    let mut stream = connect(&connector).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("first line");
    let ending = read_to_close(&mut stream, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    println!("first head started at 2.5 s: {ending:?} after {elapsed:?}");
    assert!(!matches!(ending, Ending::StillOpen), "still open");
    assert!(
        elapsed < Duration::from_millis(4500),
        "the first head had {elapsed:?}, not 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unterminated_large_heads_cost_a_small_read_buffer() {
    raise_open_files_limit();
    let connector =
        Connector::start(ConnectorSpec::embedded().env("LUMENORE_HEADER_READ_TIMEOUT", "20s")).await;
    let idle = status_kib(connector.pid, "VmRSS:");
    let watcher = PeakWatcher::start(connector.pid);
    let line = format!("x-filler: {}\r\n", "a".repeat(1000));
    let head: Arc<Vec<u8>> = Arc::new(
        std::iter::once("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n".to_string())
            .chain(std::iter::repeat_n(line, 380))
            .collect::<String>()
            .into_bytes(),
    );
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let head = head.clone();
            let port = connector.port;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&head)).await;
                Some(stream)
            })
        })
        .collect();
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.expect("task"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, took) = legitimate(&connector).await;
    let (peak, fds) = watcher.stop();
    let grown = peak.saturating_sub(idle);
    println!(
        "BENCH 300 unterminated 380 KiB heads: peak VmHWM {:.1} MiB (+{:.1} MiB over idle VmRSS), peak fds \
         {fds}; legitimate client {status:?} in {took:?}",
        peak as f64 / 1024.0,
        grown as f64 / 1024.0
    );
    assert_eq!(status, Some(200));
    assert!(grown < 48 * MIB, "+{grown} KiB for 300 heads (bound 48 MiB)");
    drop(streams);
}

/// `count` authenticated (mode none) POSTs at once, each with `body` sent by `send`; returns the statuses,
/// the growth of the peak resident size over idle (KiB) and the peak fds.
async fn concurrent_posts(
    connector: &Connector,
    count: usize,
    body: Arc<Vec<u8>>,
    chunked: bool,
) -> (Vec<Option<u16>>, u64, u64) {
    let idle = status_kib(connector.pid, "VmRSS:");
    let watcher = PeakWatcher::start(connector.pid);
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let body = body.clone();
            let port = connector.port;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                if chunked {
                    let head =
                        post_head(0, "transfer-encoding: chunked\r\n").replace("content-length: 0\r\n", "");
                    let mut wire = head.into_bytes();
                    for byte in body.iter() {
                        wire.extend_from_slice(b"1\r\n");
                        wire.push(*byte);
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"0\r\n\r\n");
                    stream.write_all(&wire).await.ok()?;
                } else {
                    stream
                        .write_all(post_head(body.len() as u64, "").as_bytes())
                        .await
                        .ok()?;
                    stream.write_all(&body).await.ok()?;
                }
                read_one_answer(&mut stream, Duration::from_secs(60))
                    .await
                    .map(|(status, _)| status)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    let (peak, fds) = watcher.stop();
    (statuses, peak.saturating_sub(idle), fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_one_byte_chunks_cost_their_length() {
    // 1 MB bodies: the largest request raised from its default (64,096 bytes) to 1 MiB, as an operator may.
    let connector =
        Connector::start(ConnectorSpec::embedded().env("LUMENORE_MAX_REQUEST_BYTES", "1048576")).await;
    let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec();
    body.resize(1_000_000, b' ');
    let (statuses, grown, fds) = concurrent_posts(&connector, 4, Arc::new(body), true).await;
    println!(
        "BENCH 4 bodies of 1 MB in 1-byte chunks: +{:.1} MiB peak, peak fds {fds}; {statuses:?}",
        grown as f64 / 1024.0
    );
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    assert!(
        grown < 40 * MIB,
        "+{grown} KiB for 4 chunked bodies (bound 40 MiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_json_is_refused_before_it_is_built() {
    // 1 MB bodies: the largest request raised from its default (64,096 bytes) to 1 MiB, as an operator may.
    let connector =
        Connector::start(ConnectorSpec::embedded().env("LUMENORE_MAX_REQUEST_BYTES", "1048576")).await;
    let items = vec!["0"; 500_000].join(",");
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_dataset_metadata","arguments":{{"a":[{items}]}}}}}}"#
    );
    assert!(body.len() < 1024 * 1024);
    let (statuses, grown, fds) = concurrent_posts(&connector, 8, Arc::new(body.into_bytes()), false).await;
    println!(
        "BENCH 8 bodies of a 500,000-item array: +{:.1} MiB peak, peak fds {fds}; {statuses:?}",
        grown as f64 / 1024.0
    );
    assert!(statuses.iter().all(|s| *s == Some(400)), "{statuses:?}");
    assert!(grown < 48 * MIB, "+{grown} KiB for 8 wide bodies (bound 48 MiB)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_permit_is_held_until_the_call_is_done() {
    let config = FakeConfig::default();
    let fake = FakeLumenore::start(config.clone()).await;
    let mut connector = Connector::start(
        ConnectorSpec::lumenore(&fake.url(), &config.client_id, &config.secret)
            .env("LUMENORE_MAX_CONCURRENT_BODY_READS", "1")
            .env("LUMENORE_READINESS_INTERVAL", "60s"),
    )
    .await;
    connector
        .wait_ready(Duration::from_secs(15))
        .await
        .expect("ready");
    fake.set_delay(Duration::from_secs(3));
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_trend_data",
        "arguments": {"userQuery": "Top 5 sales regions last month", "schemaId": 35403}}});
    let post = |body: Value| {
        let mcp = connector.mcp.clone();
        async move {
            http_client(Duration::from_secs(20))
                .post(mcp)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", PROTOCOL_VERSION)
                .json(&body)
                .send()
                .await
                .map(|response| response.status().as_u16())
                .ok()
        }
    };
    let slow = tokio::spawn(post(call.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = post(call).await;
    let first = slow.await.expect("first call");
    assert_eq!(first, Some(200));
    assert_eq!(
        second,
        Some(503),
        "a second body was read while the first call still held its parsed message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_the_503_is_delivered_after_reading_the_head() {
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_MAX_CONNECTIONS", "4")
            .env("LUMENORE_HEADER_READ_TIMEOUT", "60s"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Four silent connections hold every slot (none is idle after an answer, so none is closed for room).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&connector).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answers = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&connector).await;
        // A head and a body the server never reads: closing over them would reset the connection.
        let _ = stream.write_all(post_head(4096, "").as_bytes()).await;
        let _ = stream.write_all(&[b' '; 4096]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        answers.push(
            read_one_answer(&mut stream, Duration::from_secs(5))
                .await
                .map(|(s, _)| s),
        );
    }
    println!("over the cap: {answers:?}");
    assert!(answers.iter().all(|a| *a == Some(503)), "{answers:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_cap_the_longest_idle_connection_makes_room() {
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_MAX_CONNECTIONS", "20")
            .env("LUMENORE_IDLE_TIMEOUT", "120s"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&connector).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .expect("request");
        match read_one_answer(&mut stream, Duration::from_secs(5)).await {
            Some((200, _)) => idle.push(stream),
            _ => break,
        }
    }
    let mut served = Vec::new();
    for _ in 0..5 {
        served.push(legitimate(&connector).await);
    }
    println!(
        "{} idle keep-alive connections; new clients: {served:?}",
        idle.len()
    );
    assert!(
        served
            .iter()
            .all(|(status, took)| *status == Some(200) && *took < Duration::from_secs(2)),
        "{served:?}"
    );
    // The first (longest idle) connection was closed for room.
    let first = read_to_close(&mut idle[0], Duration::from_secs(2)).await;
    assert!(!matches!(first, Ending::StillOpen), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_are_counted_not_logged_line_by_line() {
    let (_dir, keys_file, _key) = api_keys();
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_AUTH_MODE", "api-keys")
            .env("LUMENORE_API_KEYS_FILE", &keys_file),
    )
    .await;
    let http = http_client(Duration::from_secs(5));
    let started = Instant::now();
    for id in 0..300 {
        let status = http
            .post(&connector.mcp)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .body(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#))
            .send()
            .await
            .expect("answer")
            .status();
        assert_eq!(status, 401);
    }
    let seconds = started.elapsed().as_secs() + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = connector.logs();
    let lines = logs
        .lines()
        .filter(|line| line.contains("unauthenticated"))
        .count() as u64;
    println!("300 unauthenticated requests in {seconds} s: {lines} log lines");
    assert!(lines <= seconds + 1, "{lines} lines for 300 refusals:\n{logs}");
    let metrics = connector.metrics().await;
    assert!(
        metrics.contains(r#"lumenore_connector_auth_failures_total{reason="missing_credential"} 300"#),
        "{metrics}"
    );
}
