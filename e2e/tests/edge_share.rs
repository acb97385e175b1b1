//! Issue 21, the connector's edge: no one client takes what every client shares. Against the real binary
//! (one fresh process per test): a per-peer connection cap (one client address cannot hold every slot), a
//! per-caller and a per-connection share of the body permits (one API key, or one HTTP/2 connection with
//! many streams, cannot hold every permit), and a minimum body data rate (a trickled body is cut off long
//! before `--body-read-timeout`, a slow but steady one completes).
//!
//! A second client address is another loopback address (127.0.0.2): the client socket is bound to it
//! before connecting. `cargo test -p lumenore-e2e --test edge_share -- --nocapture --test-threads 1` prints
//! the figures quoted in docs/hardening.md. Loopback only; every loop is bounded.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    http_client,
    mcp::PROTOCOL_VERSION,
    raw::{Ending, keys_file, post_head, read_one_answer, read_to_close},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream, tcp::OwnedReadHalf},
};

const FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SECOND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A connection to the connector from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, connector: &Connector) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .unwrap_or_else(|error| panic!("cannot bind {source}: {error}"));
    socket
        .connect(SocketAddr::new(IpAddr::V4(FIRST), connector.port))
        .await
        .expect("connect to the connector")
}

/// `GET path` on a new connection from `source`: status and body.
async fn get_from(source: Ipv4Addr, connector: &Connector, path: &str) -> Option<(u16, String)> {
    let mut stream = connect_from(source, connector).await;
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_one_answer(&mut stream, Duration::from_secs(5)).await
}

/// The value of one line of `/metrics` (0 when absent), read from 127.0.0.2.
async fn metric(connector: &Connector, line: &str) -> u64 {
    let (_, text) = get_from(SECOND, connector, "/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

fn refused(reason: &str) -> String {
    format!("lumenore_connector_http_requests_refused_total{{reason=\"{reason}\"}} ")
}

fn closed(reason: &str) -> String {
    format!("lumenore_connector_http_connections_closed_total{{reason=\"{reason}\"}} ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_over_its_connection_cap_gets_503_while_another_peer_is_served() {
    // Cap 40: the per-peer cap is a quarter, 10.
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_MAX_CONNECTIONS", "40")
            .env("LUMENORE_HEADER_READ_TIMEOUT", "60s"),
    )
    .await;
    // Let the start-up probe's connection close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One client tries to take every slot with silent connections (not idle after an answer: nothing to
    // close for room).
    let started = Instant::now();
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..40 {
        let mut stream = connect_from(FIRST, &connector).await;
        match read_one_answer(&mut stream, Duration::from_millis(400)).await {
            Some((status, _)) => answers.push(status),
            None => held.push(stream),
        }
    }
    let took = started.elapsed();
    let second_started = Instant::now();
    let second = get_from(SECOND, &connector, "/healthz").await.map(|(s, _)| s);
    let second_took = second_started.elapsed();
    let over_peer_cap = metric(&connector, &closed("over_peer_cap")).await;
    println!(
        "BENCH one peer opening 40 silent connections (cap 40, per peer 10): {} held, {} answered {:?} in {took:?}; \
         second peer /healthz {second:?} in {second_took:?}; over_peer_cap {over_peer_cap}",
        held.len(),
        answers.len(),
        answers.first()
    );
    assert_eq!(held.len(), 10, "connections one peer holds");
    assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
    assert_eq!(second, Some(200), "the second peer was not served");
    assert!(second_took < Duration::from_secs(2), "{second_took:?}");
    assert_eq!(over_peer_cap, 30);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_its_cap_makes_room_with_its_own_longest_idle_connection() {
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_MAX_CONNECTIONS", "40")
            .env("LUMENORE_IDLE_TIMEOUT", "120s"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    let keep_alive = |source| {
        let connector = &connector;
        async move {
            let mut stream = connect_from(source, connector).await;
            stream.write_all(request).await.expect("request");
            let status = read_one_answer(&mut stream, Duration::from_secs(5))
                .await
                .map(|(s, _)| s);
            (stream, status)
        }
    };
    // Another peer's idle connection, older than all of the first peer's.
    let (mut other, status) = keep_alive(SECOND).await;
    assert_eq!(status, Some(200));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        let (stream, status) = keep_alive(FIRST).await;
        assert_eq!(status, Some(200));
        idle.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Five more from the first peer: each is served, its own oldest idle connection closed for it.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (stream, status) = keep_alive(FIRST).await;
        statuses.push(status);
        idle.push(stream);
    }
    println!("a peer at its cap of 10 with idle connections: 5 new ones {statuses:?}");
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    for (i, stream) in idle.iter_mut().take(5).enumerate() {
        let ending = read_to_close(stream, Duration::from_secs(2)).await;
        assert!(
            !matches!(ending, Ending::StillOpen),
            "idle connection {i} was not closed for room"
        );
    }
    // The other peer's connection, idle longest of all, was not touched.
    let ending = read_to_close(&mut other, Duration::from_millis(500)).await;
    assert!(
        matches!(ending, Ending::StillOpen),
        "another peer's connection was closed: {ending:?}"
    );
    assert_eq!(metric(&connector, &closed("evicted")).await, 5);
}

/// Starts `count` POSTs of `key` on their own connections, each sending 10 bytes of a declared 1,000 and
/// stalling; returns the connections and the status of those answered within `bound`.
async fn stalled_posts(
    connector: &Connector,
    count: usize,
    key: &str,
    bound: Duration,
) -> (Vec<TcpStream>, Vec<u16>) {
    let head = post_head(1000, &format!("authorization: Bearer {key}\r\n"));
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = connect_from(FIRST, connector).await;
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(br#"{"jsonrpc""#).await.expect("first bytes");
        streams.push(stream);
    }
    let mut held = Vec::new();
    let mut answers = Vec::new();
    let deadline = Instant::now() + bound;
    for mut stream in streams {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        match read_one_answer(&mut stream, left).await {
            Some((status, _)) => answers.push(status),
            None => held.push(stream),
        }
    }
    (held, answers)
}

async fn tools_list(http: &reqwest::Client, url: &str, key: &str) -> Option<u16> {
    http.post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .ok()
        .map(|response| response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_with_many_slow_bodies_gets_its_share_and_another_caller_is_served() {
    let (_dir, keys_file, keys) = keys_file("edge-share-keys", &["alice", "bob"]);
    // 16 body permits: one caller's share is a quarter, 4.
    let connector = Connector::start(
        ConnectorSpec::embedded()
            .env("LUMENORE_AUTH_MODE", "api-keys")
            .env("LUMENORE_API_KEYS_FILE", &keys_file)
            .env("LUMENORE_MAX_CONCURRENT_BODY_READS", "16"),
    )
    .await;
    // Alice starts as many slow bodies as there are permits.
    let started = Instant::now();
    let (held, answers) = stalled_posts(&connector, 16, &keys[0], Duration::from_secs(1)).await;
    let took = started.elapsed();
    let bob_started = Instant::now();
    let bob = tools_list(&http_client(Duration::from_secs(5)), &connector.mcp, &keys[1]).await;
    let bob_took = bob_started.elapsed();
    let caller_busy = metric(&connector, &refused("caller_busy")).await;
    println!(
        "BENCH one API key with 16 slow bodies (16 permits, share 4): {} held, {} answered {:?} in {took:?}; \
         another key's tools/list {bob:?} in {bob_took:?}; caller_busy {caller_busy}",
        held.len(),
        answers.len(),
        answers.first()
    );
    assert_eq!(held.len(), 4, "bodies one caller holds");
    assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
    assert_eq!(caller_busy, 12);
    assert_eq!(bob, Some(200), "another caller was not served");
    assert_eq!(metric(&connector, &refused("busy")).await, 0);
    drop(held);
}

/// A request body that sends a few bytes and never ends.
fn stalled_body() -> reqwest::Body {
    let stream =
        futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(br#"{"jsonrpc""#)) })
            .chain(futures::stream::pending());
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_connection_with_many_streams_holds_at_most_its_share() {
    // 64 permits, one caller (mode none: the client address) may hold 16, one connection 4.
    let connector =
        Connector::start(ConnectorSpec::embedded().env("LUMENORE_MAX_BODY_READS_PER_CONNECTION", "4")).await;
    let h2 = || {
        lumenore_e2e::install_crypto_provider();
        reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP/2 client")
    };
    let client = h2();
    // The connection first, so that every stream after it goes on it.
    let first = client
        .get(format!("{}/healthz", connector.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    let started = Instant::now();
    let streams: Vec<_> = (0..12)
        .map(|_| {
            let request = client
                .post(&connector.mcp)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", PROTOCOL_VERSION)
                .body(stalled_body());
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(1500), request.send())
                    .await
                    .ok()
                    .map(|answer| answer.map(|response| response.status().as_u16()).ok())
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut pending = 0;
    for stream in streams {
        match stream.await.expect("stream task") {
            Some(Some(status)) => answers.push(status),
            Some(None) => answers.push(0),
            None => pending += 1,
        }
    }
    let took = started.elapsed();
    // The same caller on another connection is still served.
    let other = tools_list(&h2(), &connector.mcp, "unused").await;
    let connection_busy = metric(&connector, &refused("connection_busy")).await;
    println!(
        "BENCH one HTTP/2 connection with 12 stalled streams (per connection 4): {pending} held, {} answered {:?} \
         in {took:?}; the same caller on another connection {other:?}; connection_busy {connection_busy}",
        answers.len(),
        answers.first()
    );
    assert_eq!(pending, 4, "bodies one connection holds: answers {answers:?}");
    assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
    assert_eq!(connection_busy, 8);
    assert_eq!(other, Some(200));
}

/// The status of the answer read from `reader` (once its head arrived).
async fn answer_status(mut reader: OwnedReadHalf) -> Option<u16> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&received)
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_below_the_minimum_rate_gets_408_long_before_the_body_timeout_and_a_slow_steady_one_completes()
{
    // Defaults: 1,024 bytes per second after 5 s; --body-read-timeout 30 s.
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    let port = connector.port;
    // 10 bytes per second (of a declared 2,000), until an answer comes or 25 s pass.
    let trickle = tokio::spawn(async move {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (reader, mut writer) = stream.into_split();
        writer
            .write_all(post_head(2000, "").as_bytes())
            .await
            .expect("head");
        let started = Instant::now();
        let sending = async {
            for _ in 0..250 {
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let status = tokio::select! {
            status = answer_status(reader) => status,
            () = sending => None,
            () = tokio::time::sleep(Duration::from_secs(25)) => None,
        };
        (status, started.elapsed())
    });
    // 16 KiB at about 2 KiB per second: 512 bytes every 250 ms, 8 s in all.
    let steady = tokio::spawn(async move {
        let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec();
        body.resize(16 * 1024, b' ');
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream
            .write_all(post_head(body.len() as u64, "").as_bytes())
            .await
            .expect("head");
        let started = Instant::now();
        for chunk in body.chunks(512) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if stream.write_all(chunk).await.is_err() {
                break;
            }
        }
        let answer = read_one_answer(&mut stream, Duration::from_secs(10)).await;
        (answer.map(|(s, _)| s), started.elapsed())
    });
    let (trickled, trickle_took) = trickle.await.expect("trickle");
    let (steady, steady_took) = steady.await.expect("steady");
    let too_slow = metric(&connector, &refused("body_too_slow")).await;
    println!(
        "BENCH body at 10 B/s: {trickled:?} after {trickle_took:?}; 16 KiB at 2 KiB/s: {steady:?} after \
         {steady_took:?}; body_too_slow {too_slow}"
    );
    assert_eq!(trickled, Some(408), "the trickled body");
    assert!(
        trickle_took < Duration::from_secs(10),
        "cut off after {trickle_took:?}, not about 5 s"
    );
    assert_eq!(steady, Some(200), "the slow, steady body");
    assert_eq!(too_slow, 1);
}
