//! The accept loop: HTTP/1.1 and HTTP/2 (hyper-util's auto builder), a cap on open connections (one more is
//! answered 503 and closed), and a watchdog per connection that closes it when the client stalls:
//!
//! - a new connection must complete its first request head within `header_read_timeout`;
//! - once bytes of a request head arrived, the head must complete within `header_read_timeout`;
//! - a kept-alive connection with no request may stay idle for `idle_timeout`.
//!
//! While a request is being served the watchdog waits (the body guard bounds body reads, the backend
//! timeouts bound the call). On shutdown the listener stops accepting, connections finish the request
//! they serve and close, and whatever is left when `grace` runs out is dropped.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, http::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tracked::hold_until_sent;
use crate::metrics::{Metrics, ReasonLabels};

/// Connection limits and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// What a connection is doing, shared by its I/O, its service and its watchdog.
struct Activity {
    origin: Instant,
    /// Requests being served (their answer not yet sent).
    requests: AtomicUsize,
    /// Milliseconds since `origin` + 1 when bytes of a new request head arrived; 0 when none did.
    head_started: AtomicU64,
    /// Milliseconds since `origin` + 1 when the last answer was sent; 0 before the first one.
    idle_since: AtomicU64,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            requests: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
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
        if self.requests.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0 {
            self.head_started.store(self.stamp(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// When the connection must be closed, and why; `None` while a request is being served.
    fn deadline(&self, settings: &ConnectionSettings) -> Option<(Instant, &'static str)> {
        if self.requests.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::Acquire);
        if head != 0 {
            return Some((self.instant(head) + settings.header_read_timeout, "header"));
        }
        match self.idle_since.load(Ordering::Acquire) {
            0 => Some((self.origin + settings.header_read_timeout, "silent")),
            idle => Some((self.instant(idle) + settings.idle_timeout, "idle")),
        }
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

/// Resolves when the connection must be closed; returns the reason (a metric label).
async fn watchdog(activity: Arc<Activity>, settings: ConnectionSettings) -> &'static str {
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

/// The TCP stream, telling the watchdog when request bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
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
            this.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
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
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Answer to a connection over the cap: written without waiting (a fresh socket's buffer takes it).
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
content-type: text/plain\r\ncontent-length: 38\r\n\r\ntoo many open connections: retry later\n";

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting. Returns the listener
/// (to serve another router on the same port) and a handle to close the connections.
pub async fn accept_until(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    metrics: Metrics,
    stop: CancellationToken,
) -> (TcpListener, Connections) {
    let graceful = GracefulShutdown::new();
    let kill = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The watchdog owns header and idle timeouts; hyper's own header timer would also run while idle.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100u32);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors or the like: wait a little rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics
                .connections_closed
                .get_or_create(&ReasonLabels { reason: "over_cap" })
                .inc();
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let service = {
            let router = router.clone();
            let activity = activity.clone();
            tower::service_fn(move |request: Request<Incoming>| {
                let guard = activity.request_started();
                let router = router.clone();
                async move {
                    let response = router.oneshot(request.map(Body::new)).await?;
                    Ok::<_, Infallible>(hold_until_sent(response, guard))
                }
            })
        };
        let connection = graceful.watch(
            builder
                .serve_connection(io, TowerToHyperService::new(service))
                .into_owned(),
        );
        let kill = kill.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            metrics.connections_open.inc();
            tokio::select! {
                _ = connection => {}
                reason = watchdog(activity, settings) => {
                    metrics.connections_closed.get_or_create(&ReasonLabels { reason }).inc();
                }
                () = kill.cancelled() => {}
            }
            metrics.connections_open.dec();
        });
    }
    (listener, Connections { graceful, kill })
}

/// The connections of a stopped listener.
pub struct Connections {
    graceful: GracefulShutdown,
    kill: CancellationToken,
}

impl Connections {
    /// Asks every connection to close after its current request (idle ones close at once), waits up to
    /// `grace` for them, and drops the rest.
    pub async fn close(self, grace: Duration) -> bool {
        let finished = tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_ok();
        self.kill.cancel();
        finished
    }
}
