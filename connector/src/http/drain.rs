//! Graceful shutdown of `/mcp`: every request is counted from the moment it is accepted until its answer
//! was sent (a request still uploading its body counts), and once draining begins new requests get 503.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
};
use tokio::sync::Notify;

use super::{jsonrpc, tracked::hold_until_sent};

/// Requests in flight and the draining flag.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// From now on new requests are refused.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no accepted request is left, or `grace` passed; true when none is left.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Counts a request until the returned guard is dropped, unless draining began (then `None`).
    fn admit(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut guard = InFlight {
            drain: self.clone(),
            answered: true,
        };
        // Checked after counting, so `begin` followed by `in_flight() == 0` means none can slip in.
        if self.is_draining() {
            return None;
        }
        guard.answered = false;
        Some(guard)
    }
}

/// One accepted request; dropping it uncounts the request.
pub struct InFlight {
    drain: Arc<Drain>,
    /// False until an answer was produced: dropped before that, the client went away.
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            // Expected traffic (a client timing out or cancelling), not a fault: no warning, no error.
            tracing::debug!("client closed the connection before its answer was ready");
        }
        if self.drain.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drain.idle.notify_waiters();
        }
    }
}

/// Middleware: refuses new requests with 503 once draining began; counts the others until their answer
/// was sent (or the client left).
pub async fn track(State(drain): State<Arc<Drain>>, request: Request, next: Next) -> Response {
    let Some(guard) = drain.admit() else {
        return jsonrpc::retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            -32000,
            "the server is shutting down: retry on another replica",
            1,
        );
    };
    let mut guard = guard;
    let response = next.run(request).await;
    guard.answered = true;
    if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
        // The MCP SDK's own error logs are off (they may quote requests): say that it happened, no more.
        tracing::warn!(
            status = response.status().as_u16(),
            "an MCP request was answered with a server error"
        );
    }
    hold_until_sent(response, guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_until_dropped_and_refuses_after_begin() {
        let drain = Arc::new(Drain::default());
        let first = drain.admit().expect("admitted");
        assert_eq!(drain.in_flight(), 1);
        drain.begin();
        assert!(drain.admit().is_none());
        assert_eq!(drain.in_flight(), 1);
        assert!(!drain.wait_idle(Duration::from_millis(20)).await);
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.wait_idle(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.unwrap());
    }
}
