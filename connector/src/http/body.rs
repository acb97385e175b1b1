//! The body guard of `/mcp`, after the caller was authenticated from the headers: refuses a declared length
//! over the limit before reading anything, reads at most `max_bytes` within `read_timeout` into one buffer
//! (sized from the declared length, or grown as bytes arrive: chunks are copied, not kept) while holding one
//! of a fixed number of permits, and checks the body strictly ([`jsonrpc::parse_message`], which builds
//! only the envelope; the MCP SDK builds the message). The permit is held until the call's answer was
//! sent, so the bodies, parsed messages and answers held at once are bounded by the number of permits.
//!
//! No one caller and no one connection may hold every permit: with the permit, a request takes one share of
//! its caller (the authenticated caller's id; with `--auth-mode none`, the peer address, see
//! [`super::listener::peer_address`]) and one of its connection (an HTTP/2 connection carries many streams), each
//! capped ([`share`]) and held exactly as long as the permit.
//!
//! A body must also keep coming: after [`MIN_RATE_GRACE`], one that has received fewer than `min_rate`
//! bytes per second since it began is answered 408 ([`MinRate`]); `read_timeout` stays the overall cap.
//!
//! Answers: 413 (declared or actual length over the limit), 408 (body not received in time, or arriving
//! slower than the minimum rate), 415 (not `application/json`), 503 with `Retry-After` (too many bodies
//! being read at once: in all, of this caller, or on this connection), 400 with a JSON-RPC error (not JSON,
//! or not a valid JSON-RPC message).

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::{
    HttpSettings,
    jsonrpc::{self, INVALID_REQUEST},
    listener::Peer,
    tracked::Shares,
};
use crate::metrics::{Metrics, ReasonLabels};

/// The first part of a body, during which the minimum rate is not checked.
pub const MIN_RATE_GRACE: Duration = Duration::from_secs(5);
/// Once past the grace, the rate is checked when the bytes received stop being enough, but at most this
/// often (a client sending at just the rate would otherwise wake the check for every few bytes).
const MIN_RATE_CHECK_STEP: Duration = Duration::from_millis(250);

/// The share of body permits one caller (or one connection) may hold: `configured`, or when 0 a quarter
/// of the permits and at least 2 (an assistant makes parallel calls: with the few permits a small pod
/// derives, a share of 1 would serialise them); never more than the permits.
pub fn share(max_readers: usize, configured: usize) -> usize {
    let max_readers = max_readers.max(1);
    let share = match configured {
        0 => (max_readers / 4).max(2),
        set => set,
    };
    share.min(max_readers)
}

/// Who a body permit is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CallerKey {
    /// An authenticated caller (API key id, token subject).
    Id(Arc<str>),
    /// Mode none: the peer address.
    Peer(IpAddr),
}

/// The authenticated caller a request's body permit is counted against (its API key id or token
/// subject), put in the request's extensions by caller authentication (the `auth` module, which runs first).
/// Absent (mode `none`): the peer address stands for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareOwner(pub Arc<str>);

fn caller_key(extensions: &http::Extensions) -> CallerKey {
    match (extensions.get::<ShareOwner>(), extensions.get::<Peer>()) {
        (Some(ShareOwner(id)), _) => CallerKey::Id(id.clone()),
        (None, Some(peer)) => CallerKey::Peer(peer.address),
        // Without the listener (tests, or another server): every anonymous request is one caller.
        (None, None) => CallerKey::Id(Arc::from("anonymous")),
    }
}

/// The slowest body accepted: after `grace`, at least `bytes_per_second` × the time since the body began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_second: u64,
    pub grace: Duration,
}

impl MinRate {
    /// `None` when the rate is 0 (off).
    pub fn new(bytes_per_second: u64) -> Option<MinRate> {
        (bytes_per_second > 0).then_some(MinRate {
            bytes_per_second,
            grace: MIN_RATE_GRACE,
        })
    }

    /// Whether a body that received `received` bytes in `elapsed` is too slow.
    pub fn too_slow(&self, received: usize, elapsed: Duration) -> bool {
        elapsed >= self.grace
            && (received as u128) * 1_000_000 < u128::from(self.bytes_per_second) * elapsed.as_micros()
    }

    /// When (since the body began) `received` bytes stop being enough.
    pub fn due(&self, received: usize) -> Duration {
        let micros = (received as u128) * 1_000_000 / u128::from(self.bytes_per_second);
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)).max(self.grace)
    }

    /// When to check next, at `elapsed`, having received `received` bytes (not too slow).
    fn next_check(&self, received: usize, elapsed: Duration) -> Duration {
        self.due(received).max(elapsed + MIN_RATE_CHECK_STEP)
    }
}

/// Limits on request bodies.
#[derive(Clone)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
    pub min_rate: Option<MinRate>,
    /// One permit per request whose body is being read or whose call is being served.
    pub readers: Arc<Semaphore>,
    /// Permits held per caller, and per connection.
    callers: Arc<Shares<CallerKey>>,
    connections: Arc<Shares<u64>>,
    pub metrics: Metrics,
}

impl BodyLimits {
    pub fn new(settings: &HttpSettings, metrics: Metrics) -> Self {
        let readers = settings.max_concurrent_body_reads.max(1);
        let per_caller = share(readers, settings.max_body_reads_per_caller);
        let per_connection = share(readers, settings.max_body_reads_per_connection);
        tracing::info!(
            max_concurrent_body_reads = readers,
            max_body_reads_per_caller = per_caller,
            max_body_reads_per_connection = per_connection,
            min_body_rate = settings.min_body_rate,
            "body read caps"
        );
        BodyLimits {
            max_bytes: settings.max_request_bytes,
            read_timeout: settings.body_read_timeout,
            min_rate: MinRate::new(settings.min_body_rate),
            readers: Arc::new(Semaphore::new(readers)),
            callers: Shares::new(per_caller),
            connections: Shares::new(per_connection),
            metrics,
        }
    }

    fn busy(&self, reason: &'static str, message: &str) -> Response {
        self.refuse(
            reason,
            jsonrpc::retry_later(StatusCode::SERVICE_UNAVAILABLE, -32000, message, 1),
        )
    }

    fn refuse(&self, reason: &'static str, response: Response) -> Response {
        self.metrics
            .requests_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        response
    }
}

/// The parsed JSON-RPC message of a request, left in its extensions for the layers after the guard.
#[derive(Clone, Debug)]
pub struct RpcMessage(pub Arc<Map<String, Value>>);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split_once(';').map_or(value, |(essence, _)| essence);
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

fn declared_length(request: &http::request::Parts) -> Option<u64> {
    request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Reads and parses the body of a POST; other methods pass untouched.
pub async fn guard(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if !is_json(&request) {
        return limits.refuse(
            "content_type",
            jsonrpc::error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
            ),
        );
    }
    let too_large = || {
        jsonrpc::error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            &format!("request body is larger than {} bytes", limits.max_bytes),
        )
    };
    let (parts, body) = request.into_parts();
    let declared = declared_length(&parts);
    if declared.is_some_and(|length| length > limits.max_bytes as u64) {
        return limits.refuse("too_large", too_large());
    }
    // The narrowest bound first: the connection's share, the caller's, then the permits of all.
    let connection = match parts.extensions.get::<Peer>() {
        Some(peer) => match limits.connections.try_take(peer.connection) {
            Some(share) => Some(share),
            None => {
                return limits.busy(
                    "connection_busy",
                    "too many requests of this connection are being received or served: retry shortly",
                );
            }
        },
        None => None,
    };
    let Some(caller) = limits.callers.try_take(caller_key(&parts.extensions)) else {
        return limits.busy(
            "caller_busy",
            "too many requests of this caller are being received or served: retry shortly",
        );
    };
    let Ok(permit) = limits.readers.clone().try_acquire_owned() else {
        return limits.busy(
            "busy",
            "too many requests are being received or served: retry shortly",
        );
    };
    let expected = declared.map_or(0, |length| length as usize);
    let read = tokio::time::timeout(
        limits.read_timeout,
        gather(body, expected, limits.max_bytes, limits.min_rate),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Gathered::TooLarge)) => return limits.refuse("too_large", too_large()),
        Ok(Err(Gathered::TooSlow(rate))) => {
            return limits.refuse(
                "body_too_slow",
                jsonrpc::error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    INVALID_REQUEST,
                    &format!(
                        "the request body arrived slower than {} bytes per second",
                        rate.bytes_per_second
                    ),
                ),
            );
        }
        // The client closed or broke the connection mid-body: nobody reads this answer.
        Ok(Err(Gathered::Broken)) => {
            return limits.refuse(
                "body_error",
                jsonrpc::error_response(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "the request body could not be read",
                ),
            );
        }
        Err(_) => {
            return limits.refuse(
                "body_timeout",
                jsonrpc::error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    INVALID_REQUEST,
                    &format!(
                        "the request body was not received within {}",
                        humantime::format_duration(limits.read_timeout)
                    ),
                ),
            );
        }
    };
    let message = match jsonrpc::parse_message(&bytes) {
        Ok(message) => message,
        Err(rejection) => return limits.refuse("invalid_json_rpc", rejection.into_response()),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(jsonrpc::RpcPeek::of(&message));
    request.extensions_mut().insert(RpcMessage(Arc::new(message)));
    let response = next.run(request).await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The content type was checked above, so the MCP SDK could not read the message as any MCP
        // request: that is an invalid request, not a media type problem.
        return jsonrpc::error_response(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Invalid Request: the message is not a valid MCP request",
        );
    }
    // The permit and the shares are held until the answer was sent (or dropped): an answer waiting for a
    // client that does not read it counts against the same caps as a body, until the send timeout closes
    // the connection.
    super::tracked::hold_until_sent(response, (permit, caller, connection))
}

/// Why a body could not be gathered.
enum Gathered {
    TooLarge,
    Broken,
    TooSlow(MinRate),
}

/// Reads a body into one buffer of at most `max` bytes: sized from the declared length up front, else grown
/// as bytes arrive. Each chunk is copied and dropped, so a body sent in many small chunks costs its length,
/// not a chunk header (and a read buffer kept alive) per chunk. With a minimum rate, a timer set to when
/// the bytes received stop being enough races the next frame; it is reset only when it fires.
async fn gather(
    mut body: Body,
    declared: usize,
    max: usize,
    rate: Option<MinRate>,
) -> Result<Bytes, Gathered> {
    use futures::FutureExt;
    let started = Instant::now();
    let mut buffer: Vec<u8> = Vec::with_capacity(declared.min(max));
    // The rate's timer is made only once the body makes the guard wait: most bodies arrive whole with
    // their head, and a timer made for every request cost about 2,100 of a call's 291,000 instructions.
    let mut check: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let frame = match (body.frame().now_or_never(), rate) {
            (Some(frame), _) => frame,
            (None, None) => body.frame().await,
            (None, Some(rate)) => {
                let check = check
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until((started + rate.grace).into())));
                tokio::select! {
                    biased;
                    frame = body.frame() => frame,
                    () = check.as_mut() => {
                        let elapsed = started.elapsed();
                        if rate.too_slow(buffer.len(), elapsed) {
                            return Err(Gathered::TooSlow(rate));
                        }
                        check.as_mut().reset((started + rate.next_check(buffer.len(), elapsed)).into());
                        continue;
                    }
                }
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|_| Gathered::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > max {
                return Err(Gathered::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use axum::{Router, middleware, routing::post};
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    #[test]
    fn a_share_is_a_quarter_of_the_permits_at_least_2_and_never_above_them() {
        assert_eq!(share(64, 0), 16);
        assert_eq!(share(32, 0), 8);
        assert_eq!(share(6, 0), 2, "at least 2");
        assert_eq!(share(3, 0), 2);
        assert_eq!(share(1, 0), 1, "never above the permits");
        assert_eq!(share(64, 5), 5);
        assert_eq!(share(64, 500), 64);
    }

    #[test]
    fn the_minimum_rate_counts_from_the_body_start_after_the_grace() {
        let rate = MinRate::new(1024).unwrap();
        assert_eq!(rate.grace, MIN_RATE_GRACE);
        assert!(MinRate::new(0).is_none(), "0 turns the rule off");
        // Within the grace nothing is too slow.
        assert!(!rate.too_slow(0, Duration::from_millis(4_999)));
        // After it: fewer than rate × elapsed bytes is too slow; as many is not.
        assert!(rate.too_slow(5 * 1024 - 1, Duration::from_secs(5)));
        assert!(!rate.too_slow(5 * 1024, Duration::from_secs(5)));
        assert!(rate.too_slow(10 * 1024 - 1, Duration::from_secs(10)));
        assert!(!rate.too_slow(20 * 1024, Duration::from_secs(10)));
        // Bytes received are enough until `due`: the grace, or received / rate.
        assert_eq!(rate.due(0), MIN_RATE_GRACE);
        assert_eq!(rate.due(20 * 1024), Duration::from_secs(20));
        assert!(!rate.too_slow(20 * 1024, rate.due(20 * 1024)));
        assert!(rate.too_slow(20 * 1024, rate.due(20 * 1024) + Duration::from_millis(1)));
        // The next check is never sooner than one step away.
        assert_eq!(
            rate.next_check(6 * 1024, Duration::from_secs(6)),
            Duration::from_secs(6) + MIN_RATE_CHECK_STEP
        );
    }

    /// A body that sends `chunk` every `every`, `count` times, then ends (or stalls when `stall`).
    fn trickle(chunk: &'static [u8], every: Duration, count: usize, stall: bool) -> Body {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..count {
                tokio::time::sleep(every).await;
                if sender.send(Ok(Bytes::from_static(chunk))).await.is_err() {
                    return;
                }
            }
            if stall {
                std::future::pending::<()>().await;
            }
        });
        Body::from_stream(tokio_stream_of(receiver))
    }

    fn tokio_stream_of(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }

    #[tokio::test]
    async fn a_body_below_the_minimum_rate_is_cut_off_after_the_grace_and_one_above_it_completes() {
        let rate = MinRate {
            bytes_per_second: 1000,
            grace: Duration::from_millis(300),
        };
        // 10 bytes every 50 ms (200 bytes/s), never ending: too slow once the grace is over.
        let started = Instant::now();
        let slow = gather(
            trickle(b"0123456789", Duration::from_millis(50), 1000, true),
            0,
            1 << 20,
            Some(rate),
        )
        .await;
        let took = started.elapsed();
        assert!(matches!(slow, Err(Gathered::TooSlow(_))), "not cut off");
        assert!(
            took >= rate.grace && took < Duration::from_millis(900),
            "{took:?}"
        );
        // 100 bytes every 50 ms (2,000 bytes/s) for 1 s: fast enough, read whole.
        let fast = gather(
            trickle(&[b' '; 100], Duration::from_millis(50), 20, false),
            0,
            1 << 20,
            Some(rate),
        )
        .await;
        assert_eq!(fast.ok().map(|bytes| bytes.len()), Some(2000));
        // Without a rate the slow body is only bounded by the caller's timeout.
        let off = tokio::time::timeout(
            Duration::from_millis(600),
            gather(
                trickle(b"0123456789", Duration::from_millis(50), 1000, true),
                0,
                1 << 20,
                None,
            ),
        )
        .await;
        assert!(off.is_err(), "a body was cut off with the rate off");
    }

    fn limits(per_caller: usize, per_connection: usize) -> BodyLimits {
        let mut settings = Config::defaults().http_settings();
        settings.max_concurrent_body_reads = 4;
        settings.max_body_reads_per_caller = per_caller;
        settings.max_body_reads_per_connection = per_connection;
        BodyLimits::new(&settings, Metrics::new())
    }

    fn post_as(caller: Option<&str>, peer: Option<Peer>) -> Request {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
            .unwrap();
        if let Some(id) = caller {
            request.extensions_mut().insert(ShareOwner(Arc::from(id)));
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        request
    }

    fn peer(address: [u8; 4], connection: u64) -> Peer {
        Peer {
            address: IpAddr::from(address),
            connection,
        }
    }

    /// Requests refused with `reason` so far.
    fn refused(limits: &BodyLimits, reason: &str) -> u64 {
        let line = format!("lumenore_connector_http_requests_refused_total{{reason=\"{reason}\"}} ");
        limits
            .metrics
            .encode()
            .lines()
            .find_map(|text| text.strip_prefix(&line).and_then(|count| count.parse().ok()))
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_guard_leaves_the_message_and_its_peek_for_the_layers_after_it() {
        let limits = limits(4, 4);
        let router = Router::new()
            .route(
                "/",
                post(|request: Request| async move {
                    assert!(request.extensions().get::<RpcMessage>().is_some());
                    let peek = request.extensions().get::<jsonrpc::RpcPeek>().copied();
                    format!("{:?}", peek.map(|peek| peek.method))
                }),
            )
            .layer(middleware::from_fn_with_state(limits, guard));
        let response = router.oneshot(post_as(Some("a"), None)).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Some(\"ping\")");
    }

    #[tokio::test]
    async fn one_caller_or_connection_holds_its_share_until_its_answer_is_sent() {
        let limits = limits(1, 2);
        let router = Router::new()
            .route("/", post(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(limits.clone(), guard));
        let send = |request| router.clone().oneshot(request);
        // Caller a's answer not yet sent: its share is held.
        let held = send(post_as(Some("a"), Some(peer([10, 0, 0, 1], 1))))
            .await
            .unwrap();
        assert_eq!(held.status(), StatusCode::OK);
        let refused_now = send(post_as(Some("a"), Some(peer([10, 0, 0, 2], 2))))
            .await
            .unwrap();
        assert_eq!(refused_now.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused_now.headers()[header::RETRY_AFTER], "1");
        assert_eq!(refused(&limits, "caller_busy"), 1);
        // Another caller is served, on the same connection too; caller a again once its answer is gone.
        let other = send(post_as(Some("b"), Some(peer([10, 0, 0, 1], 1))))
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK);
        drop((held, other));
        let again = send(post_as(Some("a"), None)).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        drop(again);
        assert_eq!((limits.callers.keys(), limits.connections.keys()), (0, 0));

        // Mode none: the caller is the peer address. 4 permits, 3 per caller, 2 per connection.
        let mut settings = Config::defaults().http_settings();
        settings.max_concurrent_body_reads = 4;
        settings.max_body_reads_per_caller = 3;
        settings.max_body_reads_per_connection = 2;
        let limits = BodyLimits::new(&settings, Metrics::new());
        let router = Router::new()
            .route("/", post(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(limits.clone(), guard));
        let send = |request| router.clone().oneshot(request);
        let mut held = Vec::new();
        for (address, connection, expected, reason) in [
            ([10, 0, 0, 1], 9, 200, None),
            ([10, 0, 0, 1], 9, 200, None),
            ([10, 0, 0, 1], 9, 503, Some("connection_busy")),
            ([10, 0, 0, 1], 10, 200, None),
            ([10, 0, 0, 1], 11, 503, Some("caller_busy")),
            ([10, 0, 0, 2], 12, 200, None),
            ([10, 0, 0, 3], 13, 503, Some("busy")),
        ] {
            let response = send(post_as(None, Some(peer(address, connection))))
                .await
                .unwrap();
            assert_eq!(
                response.status().as_u16(),
                expected,
                "{address:?} on {connection}"
            );
            if let Some(reason) = reason {
                assert_eq!(refused(&limits, reason), 1, "{reason}");
            }
            held.push(response);
        }
        assert_eq!(
            limits.callers.held(&CallerKey::Peer(IpAddr::from([10, 0, 0, 1]))),
            3
        );
        drop(held);
        assert_eq!((limits.callers.keys(), limits.connections.keys()), (0, 0));
    }
}
