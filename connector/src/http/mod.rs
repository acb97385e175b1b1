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

/// `/metrics` answers being made or sent at once. Each is the whole text (kilobytes, growing with the
/// series), held until the client took it: without a cap, HTTP/2 streams left at a zero window would each
/// hold one (100 streams per connection), which no memory budget could count. Prometheus scrapes one at a
/// time per server; an HA pair is two.
pub const MAX_SCRAPES: usize = 4;

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
    /// Connections open at once from one peer address (IPv6: one /64); 0: a quarter of `max_connections`,
    /// at least 8 ([`listener::peer_cap`]).
    pub max_connections_per_peer: usize,
    /// Body reads (as `max_concurrent_body_reads` counts them) of one caller, and of one connection; 0: a
    /// quarter of `max_concurrent_body_reads`, at least 2 ([`body::share`]).
    pub max_body_reads_per_caller: usize,
    pub max_body_reads_per_connection: usize,
    /// Slowest request body accepted after the first [`body::MIN_RATE_GRACE`], in bytes per second (0: off).
    pub min_body_rate: u64,
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
            max_connections_per_peer: self.max_connections_per_peer,
        }
    }
}
