//! The accept loop: HTTP/1.1 and HTTP/2 (hyper-util's auto builder), a cap on open connections, and a
//! watchdog per connection that closes it when the client stalls:
//!
//! - a new connection must complete its first request head within `header_read_timeout` of its opening
//!   (once: bytes that arrive late do not restart the clock);
//! - on HTTP/1, once bytes of a later request head arrived, the head must complete within
//!   `header_read_timeout`;
//! - a connection with no request in service may stay idle for `idle_timeout` after its last answer (on
//!   HTTP/2 too: PING or WINDOW_UPDATE frames of the client do not count as a request starting);
//! - an answer the peer does not accept: while an answer has bytes for the peer and none were taken for
//!   `send_timeout` (HTTP/2 flow-control window kept at zero, or a socket the peer does not read), the
//!   connection is closed (HTTP/2 with GOAWAY). HTTP/2 keep-alive pings go out every
//!   `http2_keep_alive_interval`, and a peer that does not answer one within `send_timeout` is dropped.
//!
//! While a request is being served and its answer is not ready the watchdog waits (the body guard bounds
//! body reads, the backend timeouts bound the call).
//!
//! Overload: over the cap, the connection is answered 503 (HTTP/2: GOAWAY) after its request head was
//! read, and closed without a reset; near the cap, the connection idle for the longest time since its last
//! answer is closed first, so a new client gets its slot. One peer (an IPv4 address, or an IPv6 /64: see
//! [`peer_address`]) may hold at most [`peer_cap`] connections: one more closes that peer's own
//! longest-idle connection to make room, or is answered 503 the same way (metric reason `over_peer_cap`),
//! so one client cannot take every slot. Each request carries its [`Peer`] (address and connection) in its
//! extensions, for the body guard's per-caller and per-connection shares. On shutdown the listener stops
//! accepting, connections finish the request they serve and close, and whatever is left when `grace` runs
//! out is dropped.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, Ipv6Addr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, http::Request};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tracked::{Share, Shares};
use crate::metrics::{Metrics, ReasonLabels};

/// HTTP/1 read buffer of a connection: a request head must fit (431 otherwise); body bytes pass through.
pub const HTTP1_MAX_BUF_BYTES: usize = 64 * 1024;
/// HTTP/2: streams open at once on one connection.
pub const HTTP2_MAX_STREAMS: u32 = 100;
/// HTTP/2: largest header list of a request (after HPACK decoding).
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// HTTP/2: answer bytes buffered per stream while the peer's window is closed.
pub const HTTP2_MAX_SEND_BUF_BYTES: usize = 64 * 1024;
/// HTTP/2: receive windows (request body bytes a peer may send before the server reads them).
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 512 * 1024;
/// Time a closing connection gets to flush its last frames (GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Connections over the cap being answered 503 at once; more are refused without reading their head.
const MAX_REFUSING: usize = 64;
/// Time to read the head of a connection over the cap, and to see it close after the answer.
const REFUSE_TIME: Duration = Duration::from_secs(1);

/// Connection limits and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Time an answer may wait for the peer to accept any of its bytes.
    pub send_timeout: Duration,
    /// HTTP/2 PING interval (zero: no pings); the peer answers within `send_timeout`.
    pub http2_keep_alive_interval: Duration,
    pub max_connections: usize,
    /// Connections of one peer; 0: automatic ([`peer_cap`]).
    pub max_connections_per_peer: usize,
}

/// Connections one peer may hold: `configured`, or when 0 a quarter of `max_connections` and at least 8;
/// never more than `max_connections`. Computed when the listener starts, from the cap it serves (which may
/// have been lowered at start to fit the open-files limit).
pub fn peer_cap(max_connections: usize, configured: usize) -> usize {
    let max_connections = max_connections.max(1);
    let cap = match configured {
        0 => (max_connections / 4).max(8),
        set => set,
    };
    cap.min(max_connections)
}

/// The address a peer's connections are counted under: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as its IPv4 address); an IPv6 address by its /64 network, since one host is usually given a
/// whole /64 (SLAAC, privacy addresses) and can pick any address in it.
pub fn peer_address(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Who sent a request, put into its extensions by the listener: the peer's address (as [`peer_address`]
/// counts it) and the connection it came on (unique per listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub address: IpAddr,
    pub connection: u64,
}

/// What a connection is doing, shared by its I/O, its service and its watchdog.
struct Activity {
    origin: Instant,
    /// Requests being served (their answer not yet sent).
    requests: AtomicUsize,
    /// HTTP/1 only: milliseconds since `origin` + 1 when bytes of a new request head arrived; 0 when none did.
    head_started: AtomicU64,
    /// Milliseconds since `origin` + 1 when the last answer was sent; 0 before the first one.
    idle_since: AtomicU64,
    /// The client spoke the HTTP/2 preface.
    http2: AtomicBool,
    /// Answers with bytes ready for the peer that the connection has not taken yet.
    answers_waiting: AtomicUsize,
    /// Stamp of the last progress of an answer (taken by the connection) while answers wait.
    send_progress: AtomicU64,
    /// Stamp since when socket writes return "would block" with nothing written; 0 when they do not.
    write_blocked: AtomicU64,
    /// HTTP/2: answer bytes handed to the connection, and DATA payload bytes it wrote to the socket. While
    /// the first is larger, answers wait in HTTP/2 send buffers for the peer's flow-control window.
    data_queued: AtomicU64,
    data_written: AtomicU64,
    /// Chosen to be closed to make room near the connection cap.
    evicted: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            requests: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            answers_waiting: AtomicUsize::new(0),
            send_progress: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            data_queued: AtomicU64::new(0),
            data_written: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn stamp(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn instant(&self, stamp: u64) -> Instant {
        self.origin + Duration::from_millis(stamp - 1)
    }

    fn bytes_read(&self) {
        if !self.http2.load(Ordering::Relaxed)
            && self.requests.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started.store(self.stamp(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn speaks_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Release);
        self.changed.notify_one();
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// An answer has bytes for the peer.
    fn answer_waits(&self) {
        if self.answers_waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.send_progress.store(self.stamp(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// The connection took an answer's bytes (or the answer went away).
    fn answer_taken(&self) {
        self.send_progress.store(self.stamp(), Ordering::Release);
        self.answers_waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// HTTP/2: an answer handed `bytes` to the connection.
    fn data_queued(&self, bytes: u64) {
        let queued = self.data_queued.fetch_add(bytes, Ordering::AcqRel);
        if queued == self.data_written.load(Ordering::Acquire) {
            // A backlog begins: the send clock starts now.
            self.send_progress.store(self.stamp(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// HTTP/2: the connection wrote `bytes` of DATA payload to the socket.
    fn data_written(&self, bytes: u64) {
        self.data_written.fetch_add(bytes, Ordering::AcqRel);
        self.send_progress.store(self.stamp(), Ordering::Release);
    }

    fn write_would_block(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked.store(self.stamp(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn write_progress(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Release);
        }
    }

    /// When the connection went idle after an answer, if it is idle now (a candidate for eviction).
    fn idle_at(&self) -> Option<Instant> {
        if self.evicted.load(Ordering::Relaxed)
            || self.requests.load(Ordering::Acquire) > 0
            || self.head_started.load(Ordering::Acquire) != 0
        {
            return None;
        }
        match self.idle_since.load(Ordering::Acquire) {
            0 => None,
            idle => Some(self.instant(idle)),
        }
    }

    /// When the connection must be closed, and why; `None` while a request is being served and no answer
    /// waits for the peer.
    fn deadline(&self, settings: &ConnectionSettings) -> Option<(Instant, &'static str)> {
        if self.evicted.load(Ordering::Acquire) {
            return Some((self.origin, "evicted"));
        }
        let mut stalled = None;
        let blocked = self.write_blocked.load(Ordering::Acquire);
        if blocked != 0 {
            stalled = Some(self.instant(blocked) + settings.send_timeout);
        }
        let backlog = self.data_queued.load(Ordering::Acquire) > self.data_written.load(Ordering::Acquire);
        if backlog || self.answers_waiting.load(Ordering::Acquire) > 0 {
            let progress = self.instant(self.send_progress.load(Ordering::Acquire).max(1));
            let due = progress + settings.send_timeout;
            stalled = Some(stalled.map_or(due, |other: Instant| other.min(due)));
        }
        let stalled = stalled.map(|due| (due, "send_stalled"));
        if self.requests.load(Ordering::Acquire) > 0 {
            return stalled;
        }
        let head = self.head_started.load(Ordering::Acquire);
        let waiting = match self.idle_since.load(Ordering::Acquire) {
            // The first request head: from the connection's opening, once.
            0 if head == 0 => (self.origin + settings.header_read_timeout, "silent"),
            0 => (self.origin + settings.header_read_timeout, "header"),
            _ if head != 0 => (self.instant(head) + settings.header_read_timeout, "header"),
            idle => (self.instant(idle) + settings.idle_timeout, "idle"),
        };
        Some(match stalled {
            Some(stalled) if stalled.0 < waiting.0 => stalled,
            _ => waiting,
        })
    }
}

/// One request in service on a connection; dropped with its response body.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.stamp(), Ordering::Release);
            activity.changed.notify_one();
        }
    }
}

/// A response body that tells the watchdog when it has bytes the connection has not taken (from the
/// moment the answer is ready, and after each frame until the next is asked for), and holds the request's
/// guard until it is sent or dropped.
struct Answer {
    inner: Body,
    waiting: bool,
    guard: RequestGuard,
}

impl Answer {
    fn new(inner: Body, guard: RequestGuard) -> Self {
        let waiting = !http_body::Body::is_end_stream(&inner);
        if waiting {
            guard.0.answer_waits();
        }
        Answer {
            inner,
            waiting,
            guard,
        }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.waiting {
            this.waiting = false;
            this.guard.0.answer_taken();
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let activity = &this.guard.0;
            if let Some(data) = frame.data_ref()
                && !data.is_empty()
                && activity.http2.load(Ordering::Relaxed)
            {
                activity.data_queued(data.len() as u64);
            }
            if !this.inner.is_end_stream() {
                this.waiting = true;
                activity.answer_waits();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.waiting {
            self.guard.0.answer_taken();
        }
    }
}

/// Resolves when the connection must be closed; returns the reason (a metric label).
async fn watchdog(activity: &Activity, settings: ConnectionSettings) -> &'static str {
    loop {
        match activity.deadline(&settings) {
            None => activity.changed.notified().await,
            Some((deadline, reason)) => {
                if Instant::now() >= deadline {
                    return reason;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = activity.changed.notified() => {}
                }
            }
        }
    }
}

/// The TCP stream, telling the watchdog when request bytes arrive and when writes block.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Bytes of the HTTP/2 preface ("PRI") matched so far; `u8::MAX` once decided.
    preface: u8,
    /// HTTP/2: where the server's output is in its frames (to count DATA payload bytes written).
    output: FrameCursor,
}

/// Follows the frames of the server's HTTP/2 output, byte by byte as written.
#[derive(Default)]
struct FrameCursor {
    header: [u8; 9],
    have: usize,
    /// Payload bytes left of the current frame.
    remaining: usize,
    data: bool,
}

impl FrameCursor {
    /// Follows `bytes` written; returns how many of them were DATA payload.
    fn written(&mut self, mut bytes: &[u8]) -> usize {
        let mut data = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(bytes.len());
                if self.data {
                    data += take;
                }
                self.remaining -= take;
                bytes = &bytes[take..];
                continue;
            }
            let take = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 9 {
                let [a, b, c, kind, ..] = self.header;
                self.remaining = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
                self.data = kind == 0;
                self.have = 0;
            }
        }
        data
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if this.preface != u8::MAX {
                for &byte in &buf.filled()[before..] {
                    if byte != b"PRI"[usize::from(this.preface)] {
                        this.preface = u8::MAX;
                        break;
                    }
                    this.preface += 1;
                    if this.preface == 3 {
                        this.preface = u8::MAX;
                        this.activity.speaks_http2();
                        break;
                    }
                }
            }
            this.activity.bytes_read();
        }
        result
    }
}

impl Watched {
    fn watch_write<'a>(
        &mut self,
        result: &Poll<std::io::Result<usize>>,
        bufs: impl Iterator<Item = &'a [u8]>,
    ) {
        match result {
            Poll::Pending => self.activity.write_would_block(),
            Poll::Ready(Ok(written)) if *written > 0 => {
                self.activity.write_progress();
                if self.activity.http2.load(Ordering::Relaxed) {
                    let mut left = *written;
                    let mut data = 0;
                    for buf in bufs {
                        let part = &buf[..left.min(buf.len())];
                        data += self.output.written(part);
                        left -= part.len();
                        if left == 0 {
                            break;
                        }
                    }
                    if data > 0 {
                        self.activity.data_written(data as u64);
                    }
                }
            }
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch_write(&result, std::iter::once(buf));
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch_write(&result, bufs.iter().map(|buf| &**buf));
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Answer to an HTTP/1 connection over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
content-type: text/plain\r\ncontent-length: 38\r\n\r\ntoo many open connections: retry later\n";

/// Answer to an HTTP/2 connection over the cap: an empty SETTINGS frame (the server preface), then GOAWAY
/// with last stream 0 and REFUSED_STREAM (no request was processed: the client may retry).
const BUSY_HTTP2: &[u8] = &[
    0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, empty
    0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 7, // REFUSED_STREAM
];

/// What every connection of one accept loop shares.
struct Shared {
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    settings: ConnectionSettings,
    metrics: Metrics,
    slots: Arc<Semaphore>,
    /// Connections held per peer address.
    peers: Arc<Shares<IpAddr>>,
    /// Connections over the cap being answered (or waiting for an evicted connection's slot).
    refusing: Arc<Semaphore>,
    /// Open connections: their peer address and activity.
    open: Mutex<HashMap<u64, (IpAddr, Arc<Activity>)>>,
    next_id: AtomicU64,
    graceful: CancellationToken,
    kill: CancellationToken,
}

impl Shared {
    /// Free slots under which the longest-idle connection is closed to make room.
    fn reserve(&self) -> usize {
        (self.settings.max_connections / 64).max(1)
    }

    /// Closes the connection idle for the longest time since its last answer (of the peer `of` when
    /// given, else of any peer); false when none is idle.
    fn evict_longest_idle(&self, of: Option<IpAddr>) -> bool {
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let victim = open
            .values()
            .filter(|(address, _)| of.is_none_or(|of| of == *address))
            .filter_map(|(_, activity)| activity.idle_at().map(|at| (at, activity)))
            .min_by_key(|(at, _)| *at);
        match victim {
            Some((_, activity)) => {
                activity.evicted.store(true, Ordering::Release);
                activity.changed.notify_one();
                true
            }
            None => false,
        }
    }

    fn closed(&self, reason: &'static str) {
        self.metrics
            .connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// After a connection was evicted to make room: the missing connection slot and peer share, as soon as
    /// they come back (the evicted connection closes within [`CLOSE_GRACE`]); `None` if they do not.
    async fn room_after_eviction(
        &self,
        address: IpAddr,
        slot: Option<OwnedSemaphorePermit>,
        share: Option<Share<IpAddr>>,
    ) -> Option<(OwnedSemaphorePermit, Share<IpAddr>)> {
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE + Duration::from_millis(500);
        let share = match share {
            Some(share) => share,
            None => loop {
                let released = self.peers.released();
                tokio::pin!(released);
                released.as_mut().enable();
                if let Some(share) = self.peers.try_take(address) {
                    break share;
                }
                tokio::time::timeout_at(deadline, released).await.ok()?;
            },
        };
        let slot = match slot {
            Some(slot) => slot,
            None => tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
                .await
                .ok()?
                .ok()?,
        };
        Some((slot, share))
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting. Returns the listener
/// (to serve another router on the same port) and a handle to close the connections.
pub async fn accept_until(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    metrics: Metrics,
    stop: CancellationToken,
) -> (TcpListener, Connections) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The watchdog owns header and idle timeouts; hyper's own header timer would also run while idle.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(HTTP1_MAX_BUF_BYTES);
    let keep_alive =
        (!settings.http2_keep_alive_interval.is_zero()).then_some(settings.http2_keep_alive_interval);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        .max_send_buf_size(HTTP2_MAX_SEND_BUF_BYTES)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .keep_alive_interval(keep_alive)
        .keep_alive_timeout(settings.send_timeout);
    let max_connections = settings.max_connections.max(1);
    let per_peer = peer_cap(max_connections, settings.max_connections_per_peer);
    tracing::info!(
        max_connections,
        max_connections_per_peer = per_peer,
        "connection caps (--max-connections, --max-connections-per-peer)"
    );
    let shared = Arc::new(Shared {
        router,
        builder,
        settings,
        metrics,
        slots: Arc::new(Semaphore::new(max_connections)),
        peers: Shares::new(per_peer),
        refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        graceful: CancellationToken::new(),
        kill: CancellationToken::new(),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors or the like: wait a little rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let address = peer_address(remote.ip());
        let slot = shared.slots.clone().try_acquire_owned().ok();
        let share = shared.peers.try_take(address);
        let (slot, share) = match (slot, share) {
            (Some(slot), Some(share)) => {
                // Near the cap, the longest-idle keep-alive connection makes room for new clients.
                if shared.slots.available_permits() < shared.reserve() {
                    shared.evict_longest_idle(None);
                }
                tokio::spawn(serve(shared.clone(), stream, address, slot, share));
                continue;
            }
            over => over,
        };
        // Over a cap. A peer at its own cap makes room with its own longest-idle connection (never
        // another peer's); under it, the longest-idle connection of anyone makes room at the global cap.
        let evicted = shared.evict_longest_idle(share.is_none().then_some(address));
        let reason = if slot.is_none() {
            "over_cap"
        } else {
            "over_peer_cap"
        };
        let Ok(refusing) = shared.refusing.clone().try_acquire_owned() else {
            // Too many refusals at once: the answer goes out without reading the head.
            shared.closed(reason);
            let _ = stream.try_write(BUSY);
            continue;
        };
        // What the connection holds waits for the rest only when room is being made; a refusal holds none.
        let held = evicted.then_some((slot, share));
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some((slot, share)) = held
                && let Some((slot, share)) = shared.room_after_eviction(address, slot, share).await
            {
                drop(refusing);
                return serve(shared, stream, address, slot, share).await;
            }
            shared.closed(reason);
            refuse(stream).await;
            drop(refusing);
        });
    }
    (listener, Connections { shared })
}

/// Serves one connection holding `slot` and its peer's `share` until it ends, a deadline passes, or the
/// listener closes.
async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    address: IpAddr,
    slot: OwnedSemaphorePermit,
    share: Share<IpAddr>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let peer = Peer {
        address,
        connection: id,
    };
    shared
        .open
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(id, (address, activity.clone()));
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
        preface: 0,
        output: FrameCursor::default(),
    });
    let service = {
        let router = shared.router.clone();
        let activity = activity.clone();
        tower::service_fn(move |mut request: Request<Incoming>| {
            let guard = activity.request_started();
            let router = router.clone();
            request.extensions_mut().insert(peer);
            async move {
                let response = router.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|inner| Body::new(Answer::new(inner, guard))))
            }
        })
    };
    let connection = shared
        .builder
        .serve_connection(io, TowerToHyperService::new(service))
        .into_owned();
    tokio::pin!(connection);
    shared.metrics.connections_open.inc();
    let closing = tokio::select! {
        served = connection.as_mut() => {
            // The HTTP library ended the connection on an error: malformed or abusive frames (a reset or
            // CONTINUATION flood, answered with GOAWAY), or a peer that broke off in the middle of a message.
            if served.is_err() {
                shared.closed("protocol_error");
            }
            None
        }
        reason = watchdog(&activity, shared.settings) => {
            shared.closed(reason);
            // HTTP/1 has nothing to say before closing; HTTP/2 sends GOAWAY first.
            activity.http2.load(Ordering::Relaxed).then_some(CLOSE_GRACE)
        }
        () = shared.graceful.cancelled() => Some(Duration::MAX),
        () = shared.kill.cancelled() => None,
    };
    if let Some(grace) = closing {
        // HTTP/2: GOAWAY; HTTP/1: no more requests. A connection that does not finish in time is dropped.
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection.as_mut() => {}
            () = tokio::time::sleep(grace.min(Duration::from_secs(3600))) => {}
            () = shared.kill.cancelled() => {}
        }
    }
    shared
        .open
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&id);
    shared.metrics.connections_open.dec();
    drop(slot);
    drop(share);
}

/// Answers a connection over the cap: reads its request head (or the HTTP/2 preface) so that closing does
/// not reset the connection under the answer, writes 503 (HTTP/2: GOAWAY), and closes.
async fn refuse(mut stream: TcpStream) {
    // A client that sends nothing at first is answered at once; one that started its head gets to finish.
    let mut first = [0u8; 1];
    let started = matches!(
        tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut first)).await,
        Ok(Ok(1))
    );
    let mut buf = [0u8; 4096];
    let mut tail = [0u8; 4];
    let mut read = 0usize;
    let mut http2 = false;
    let head = async {
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if read == 0 && buf[..n].starts_with(b"PRI") {
                http2 = true;
                return true;
            }
            read += n;
            for &byte in &buf[..n] {
                tail.rotate_left(1);
                tail[3] = byte;
            }
            if &tail == b"\r\n\r\n" || buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || read >= 16 * 1024 {
                return true;
            }
        }
    };
    if started && !matches!(tokio::time::timeout(REFUSE_TIME, head).await, Ok(true)) {
        let _ = stream.try_write(BUSY);
        return;
    }
    let answer = if http2 { BUSY_HTTP2 } else { BUSY };
    let closed = async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        // Whatever else the client sends is read and dropped until it closes its side.
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSE_TIME, closed).await;
}

/// The connections of a stopped listener.
pub struct Connections {
    shared: Arc<Shared>,
}

impl Connections {
    /// Asks every connection to close after its current request (idle ones close at once), waits up to
    /// `grace` for them, and drops the rest.
    pub async fn close(self, grace: Duration) -> bool {
        self.shared.graceful.cancel();
        let all = u32::try_from(self.shared.settings.max_connections.max(1)).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(grace, self.shared.slots.acquire_many(all))
            .await
            .is_ok_and(|acquired| acquired.is_ok());
        self.shared.kill.cancel();
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConnectionSettings {
        ConnectionSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(20),
            http2_keep_alive_interval: Duration::from_secs(30),
            max_connections: 16,
            max_connections_per_peer: 0,
        }
    }

    #[test]
    fn the_peer_cap_is_a_quarter_of_the_connection_cap_at_least_8_and_never_above_it() {
        assert_eq!(peer_cap(2048, 0), 512);
        assert_eq!(peer_cap(3952, 0), 988, "from the cap as lowered at start");
        assert_eq!(peer_cap(40, 0), 10);
        assert_eq!(peer_cap(20, 0), 8);
        assert_eq!(peer_cap(4, 0), 4, "never above the connection cap");
        assert_eq!(peer_cap(2048, 100), 100);
        assert_eq!(peer_cap(2048, 5000), 2048);
        assert_eq!(peer_cap(0, 0), 1);
    }

    #[test]
    fn peers_are_ipv4_addresses_and_ipv6_64_networks() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(peer_address(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(peer_address(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            peer_address(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            peer_address(ip("2001:db8:1:2::1")),
            peer_address(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            peer_address(ip("2001:db8:1:2::1")),
            peer_address(ip("2001:db8:1:3::1"))
        );
        assert_eq!(peer_address(ip("::1")), ip("::"));
    }

    #[test]
    fn the_frame_cursor_counts_data_payload_however_the_writes_are_cut() {
        let mut out = vec![0, 0, 4, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4]; // SETTINGS
        out.extend([0, 0, 5, 0, 1, 0, 0, 0, 1]); // DATA, 5 bytes
        out.extend(b"hello");
        out.extend([0, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // PING
        out.extend([0, 0, 2, 0, 1, 0, 0, 0, 3]); // DATA, 2 bytes
        out.extend(b"ok");
        for split in 1..out.len() {
            let mut cursor = FrameCursor::default();
            let (a, b) = out.split_at(split);
            assert_eq!(cursor.written(a) + cursor.written(b), 7, "cut at {split}");
        }
        let mut cursor = FrameCursor::default();
        let bytewise: usize = out
            .iter()
            .map(|byte| cursor.written(std::slice::from_ref(byte)))
            .sum();
        assert_eq!(bytewise, 7);
    }

    #[test]
    fn the_first_head_has_the_header_timeout_once_and_http2_frames_keep_the_idle_one() {
        let settings = settings();
        let activity = Arc::new(Activity::new());
        activity.head_started.store(5_000, Ordering::Release);
        let (due, reason) = activity.deadline(&settings).unwrap();
        assert_eq!(
            (due, reason),
            (activity.origin + settings.header_read_timeout, "header")
        );
        // HTTP/2 after its answer: frames of the client do not arm the header timeout.
        let activity = Arc::new(Activity::new());
        activity.speaks_http2();
        drop(activity.request_started());
        activity.bytes_read();
        assert_eq!(activity.deadline(&settings).unwrap().1, "idle");
        // HTTP/2 answer bytes queued and not written: the send timeout runs, requests or not.
        activity.http2.store(true, Ordering::Relaxed);
        activity.data_queued(2);
        assert_eq!(activity.deadline(&settings).unwrap().1, "send_stalled");
        activity.data_written(2);
        assert_eq!(activity.deadline(&settings).unwrap().1, "idle");
    }
}
