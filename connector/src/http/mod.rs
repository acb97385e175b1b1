//! Everything HTTP, in the order a request meets it: the accept loop with its connection cap and header /
//! idle timeouts ([`listener`]), the correlation id ([`correlation`]), the Host check of the operational
//! routes ([`host`]), the drain counter ([`drain`]), then — after the caller was authenticated from the
//! headers (`auth::http`) — the body guard that reads and parses the body once ([`body`]). JSON-RPC error
//! answers and the strict parse live in [`jsonrpc`]. Until the backend is loaded the port serves [`starting`].

pub mod body;
pub mod correlation;
pub mod drain;
pub mod host;
pub mod jsonrpc;
pub mod listener;
pub mod refusals;
pub mod starting;
pub mod tracked;

use std::time::Duration;

/// The HTTP server's limits, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Time for a request head to arrive, from its first byte (or from the connection's opening).
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive once the head was read.
    pub body_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time an answer may wait for the peer to accept any of its bytes (then the connection is closed).
    pub send_timeout: Duration,
    /// HTTP/2 PING interval (zero: none); a PING unanswered within `send_timeout` closes the connection.
    pub http2_keep_alive_interval: Duration,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// MCP requests with a body being received or served at once; one more is answered 503.
    pub max_concurrent_body_reads: usize,
    /// Largest request body.
    pub max_request_bytes: usize,
}

impl HttpSettings {
    pub fn connections(&self) -> listener::ConnectionSettings {
        listener::ConnectionSettings {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            send_timeout: self.send_timeout,
            http2_keep_alive_interval: self.http2_keep_alive_interval,
            max_connections: self.max_connections,
        }
    }
}
